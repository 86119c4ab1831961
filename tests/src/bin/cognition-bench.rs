//! `cognition-bench`: measures the budgets on this machine and prints one table.
//!
//! Run with `cargo build --release --workspace --bins && target/release/cognition-bench` (or
//! `tests/bench.sh`). It starts the release binaries itself, on loopback; the measures live in
//! `cognition_e2e::bench`:
//! * `GET /sessions/{id}` and `POST /sessions` through gateway → session service → SQLite
//!   (`cognition up`), 32 concurrent keep-alive connections, `BENCH_SECONDS` each;
//! * idle RSS of `cognition up`;
//! * agent turns through `cognition up` against a fake LLM (OpenAI-compatible, in this process,
//!   50-token reply, no delay): latency and time to first token at concurrency 1, each turn
//!   paired with a direct call to the fake LLM so that the stack's overhead can be told apart;
//!   turns/s with 16 clients back to back for `BENCH_SECONDS` (a fresh session every 20
//!   turns); 1,000 `GET …/events` watchers following one turn;
//! * RSS per idle session (10,000 sessions) and RSS growth over 1,000 turns, on a fresh stack;
//! * time from process start to the first healthy answer, per service binary;
//! * `echo hi` round trip through `Exec` on the local backend.
//!
//! The load generator (and the fake LLM) run on the same machine, so figures are conservative.

use std::time::{Duration, Instant};

use cognition_e2e::bench::http::{Until, load, request};
use cognition_e2e::bench::stack::{SESSION_BODY, Up, create_session, raise_fd_limit};
use cognition_e2e::bench::{Samples, memory, turns, watchers};
use cognition_e2e::procs::{Proc, free_addr, wait_listening};
use cognition_fake_llm::FakeLlm;

/// Connections of the REST load.
const CONCURRENCY: usize = 32;
/// Clients (each with its own connection and session at a time) of the turn throughput load.
const TURN_CLIENTS: usize = 16;
/// Measured turns (after [`LATENCY_WARMUP`]) at concurrency 1.
const LATENCY_TURNS: usize = 500;
const LATENCY_WARMUP: usize = 50;
/// Event streams following one turn.
const WATCHERS: usize = 1000;
const IDLE_SESSIONS: usize = 10_000;
const GROWTH_WARMUP_TURNS: usize = 100;
const GROWTH_TURNS: usize = 1000;
/// Soft limit on open files asked for (the watchers need one socket each here and in the
/// gateway; `cognition up` inherits the limit).
const NOFILE: u64 = 65_536;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let duration = Duration::from_secs(seconds);
    let nofile = raise_fd_limit(NOFILE)?;
    if nofile < (2 * WATCHERS + 512) as u64 {
        eprintln!("bench: only {nofile} open files allowed; the watcher measure may fail");
    }
    let mut rows = Vec::new();

    progress("REST load");
    let up = Up::start(None).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    rows.push(row(
        "`cognition up` idle RSS",
        format!("{:.1} MB", up.rss_kib()? as f64 / 1024.0),
        "≤ 60 MB",
    ));
    let id = create_session(up.addr).await?;
    let path = format!("/sessions/{id}");
    let get = load(
        up.addr,
        "GET",
        &path,
        None,
        CONCURRENCY,
        Until::Elapsed(duration),
    )
    .await?;
    rows.push(row(
        "GET /sessions/{id}, 32 clients",
        format!(
            "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            get.rps(),
            get.latencies.pct(50.0),
            get.latencies.pct(99.0),
            get.errors
        ),
        "≥ 5,000 req/s, p99 ≤ 20 ms",
    ));
    let post = load(
        up.addr,
        "POST",
        "/sessions",
        Some(SESSION_BODY),
        CONCURRENCY,
        Until::Elapsed(duration),
    )
    .await?;
    rows.push(row(
        "POST /sessions, 32 clients",
        format!(
            "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            post.rps(),
            post.latencies.pct(50.0),
            post.latencies.pct(99.0),
            post.errors
        ),
        "≥ 1,500 req/s, 0 errors",
    ));
    drop(up);

    let llm = FakeLlm::start().await;
    llm.set_default(turns::reply());
    let llm_url = llm.openai_base_url();
    let up = Up::start(Some(&llm_url)).await?;
    progress("turns at concurrency 1");
    // On the runtime's worker thread, like the fake LLM and the connections (not on `main`'s).
    let latency = tokio::spawn(turns::latency(
        up.addr,
        llm.addr(),
        LATENCY_TURNS,
        LATENCY_WARMUP,
    ));
    match latency.await? {
        Ok(l) => {
            rows.push(row(
                "50-token turn, concurrency 1, fake LLM without delay",
                format!(
                    "p50 {:.2} ms, p99 {:.2} ms; fake LLM alone p50 {:.2} ms → overhead p50 {:.2} ms ({} turns; the last one {} events)",
                    l.turn.pct(50.0),
                    l.turn.pct(99.0),
                    l.llm.pct(50.0),
                    l.turn.pct(50.0) - l.llm.pct(50.0),
                    l.turn.len(),
                    l.events_per_turn,
                ),
                "p50 ≤ 5 ms above the fake LLM's own time",
            ));
            rows.push(row(
                "time to first token added by gateway + session",
                format!(
                    "p50 {:.2} ms (first token p50 {:.2} ms, p99 {:.2} ms; fake LLM alone p50 {:.2} ms)",
                    l.turn_first_token.pct(50.0) - l.llm_first_token.pct(50.0),
                    l.turn_first_token.pct(50.0),
                    l.turn_first_token.pct(99.0),
                    l.llm_first_token.pct(50.0),
                ),
                "≤ 2 ms p50",
            ));
        }
        Err(e) => rows.push(row("50-token turn, concurrency 1", failed(e), "")),
    }
    progress("turns at concurrency 16");
    let what = "turns/s, 16 clients back to back, 50-token replies";
    match turns::throughput(up.addr, TURN_CLIENTS, Until::Elapsed(duration)).await {
        Ok(t) => rows.push(row(
            what,
            format!(
                "{:.0} turns/s, p50 {:.2} ms, p99 {:.2} ms, {} errors{}",
                t.turns_per_second(),
                t.latency.pct(50.0),
                t.latency.pct(99.0),
                t.errors,
                t.first_error
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default(),
            ),
            "≥ 200 turns/s",
        )),
        Err(e) => rows.push(row(what, failed(e), "≥ 200 turns/s")),
    }
    progress("1,000 watchers");
    let what = "1,000 SSE watchers on one session, one 50-token turn";
    match watchers::fanout(up.addr, WATCHERS).await {
        Ok(f) => rows.push(row(
            what,
            format!(
                "{}/{} events delivered, {}/{} watchers complete, last done {:.1} ms after the POST (its own stream {:.1} ms), opened in {:.0} ms{}",
                f.delivered,
                f.expected,
                f.complete,
                f.watchers,
                f.last_done.as_secs_f64() * 1000.0,
                f.turn.as_secs_f64() * 1000.0,
                f.open.as_secs_f64() * 1000.0,
                f.first_failure
                    .map(|e| format!(" (first failure: {e})"))
                    .unwrap_or_default(),
            ),
            "all delivered",
        )),
        Err(e) => rows.push(row(what, failed(e), "all delivered")),
    }
    drop(up);

    progress("memory");
    let up = Up::start(Some(&llm_url)).await?;
    let what = "session memory per idle session (10,000 sessions)";
    match memory::idle_sessions(&up, 200, IDLE_SESSIONS).await {
        Ok(g) => rows.push(row(
            what,
            format!(
                "{:.2} KB/session ({:.1} → {:.1} MB, {} created, {} errors)",
                g.delta_kib() as f64 / g.done.max(1) as f64,
                g.before_kib as f64 / 1024.0,
                g.after_kib as f64 / 1024.0,
                g.done,
                g.errors,
            ),
            "≤ 20 KB/session",
        )),
        Err(e) => rows.push(row(what, failed(e), "≤ 20 KB/session")),
    }
    let what = "RSS growth over 1,000 turns (after 100 warm-up turns)";
    match memory::turns(&up, GROWTH_WARMUP_TURNS, GROWTH_TURNS).await {
        Ok(g) => rows.push(row(
            what,
            format!(
                "{:.1} MB ({:.1} → {:.1} MB, {} turns, {} errors)",
                g.delta_kib() as f64 / 1024.0,
                g.before_kib as f64 / 1024.0,
                g.after_kib as f64 / 1024.0,
                g.done,
                g.errors,
            ),
            "≤ 30 MB",
        )),
        Err(e) => rows.push(row(what, failed(e), "≤ 30 MB")),
    }
    drop(up);

    progress("start → healthy, exec");
    for (name, ms) in health_after_start().await? {
        rows.push(row(
            &format!("{name}: start → healthy"),
            format!("{ms:.0} ms"),
            "≤ 200 ms",
        ));
    }
    let (p50, p99) = exec_latency(2000).await?;
    rows.push(row(
        "`echo hi` through Exec, local",
        format!("p50 {p50:.2} ms, p99 {p99:.2} ms"),
        "≤ 2 ms / ≤ 10 ms",
    ));

    // Only now: freeing what the fake LLM recorded must not land inside a measure.
    drop(llm);

    println!("\n| measure | result | budget |\n|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

fn progress(phase: &str) {
    eprintln!("bench: {phase}…");
}

fn failed(e: anyhow::Error) -> String {
    format!("FAILED: {e:#}")
}

fn row(what: &str, result: String, budget: &str) -> String {
    format!("| {what} | {result} | {budget} |")
}

/// Starts each service binary and measures the time until its health check first answers.
async fn health_after_start() -> anyhow::Result<Vec<(&'static str, f64)>> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().display().to_string();
    let mut out = Vec::new();
    for (bin, addr_var) in [
        ("cognition-executor", "COGNITION_EXECUTOR_ADDR"),
        ("cognition-session", "COGNITION_SESSION_ADDR"),
    ] {
        let addr = free_addr()?;
        let t = Instant::now();
        let _p = Proc::spawn(
            bin,
            &[],
            &[
                (addr_var, addr.to_string()),
                ("COGNITION_DATA_DIR", data.clone()),
            ],
        )?;
        loop {
            if grpc_healthy(addr).await {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "{bin} never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        out.push((bin, t.elapsed().as_secs_f64() * 1000.0));
    }
    let addr = free_addr()?;
    let session = free_addr()?;
    let _s = Proc::spawn(
        "cognition-session",
        &[],
        &[
            ("COGNITION_SESSION_ADDR", session.to_string()),
            ("COGNITION_DATA_DIR", data.clone()),
        ],
    )?;
    wait_listening(session, Duration::from_secs(30)).await?;
    let t = Instant::now();
    let _g = Proc::spawn(
        "cognition-gateway",
        &[],
        &[
            ("COGNITION_PORT", addr.port().to_string()),
            ("COGNITION_SESSION_URL", format!("http://{session}")),
        ],
    )?;
    loop {
        if request(addr, "GET", "/health", None).await.is_ok() {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(30),
            "gateway never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    out.push(("cognition-gateway", t.elapsed().as_secs_f64() * 1000.0));
    Ok(out)
}

async fn grpc_healthy(addr: std::net::SocketAddr) -> bool {
    let Ok(channel) =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).map(|e| e.connect_lazy())
    else {
        return false;
    };
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    matches!(
        client.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await,
        Ok(r) if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    )
}

async fn exec_latency(n: usize) -> anyhow::Result<(f64, f64)> {
    use cognition_proto::executor::v1 as pb;
    let dir = tempfile::tempdir()?;
    let addr = free_addr()?;
    let _p = Proc::spawn(
        "cognition-executor",
        &[],
        &[
            ("COGNITION_EXECUTOR_ADDR", addr.to_string()),
            ("COGNITION_DATA_DIR", dir.path().display().to_string()),
        ],
    )?;
    wait_listening(addr, Duration::from_secs(30)).await?;
    let mut client =
        pb::executor_service_client::ExecutorServiceClient::connect(format!("http://{addr}"))
            .await?;
    let sandbox = client
        .create_sandbox(pb::CreateSandboxRequest::default())
        .await?
        .into_inner()
        .sandbox
        .ok_or_else(|| anyhow::anyhow!("no sandbox"))?;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + 50 {
        let start = pb::ExecStart {
            sandbox_id: sandbox.id.clone(),
            exec_id: uuid::Uuid::new_v4().to_string(),
            command: Some(pb::exec_start::Command::Argv(pb::Argv {
                args: vec!["echo".into(), "hi".into()],
            })),
            ..Default::default()
        };
        let t = Instant::now();
        let r = cognition_e2e::exec::run(&mut client, start).await?;
        let elapsed = t.elapsed();
        anyhow::ensure!(r.stdout == b"hi\n", "unexpected output {:?}", r.stdout);
        if i >= 50 {
            lat.push(elapsed.as_secs_f64() * 1000.0);
        }
    }
    let lat = Samples::new(lat);
    Ok((lat.pct(50.0), lat.pct(99.0)))
}
