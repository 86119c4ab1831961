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
//! * executor and sandboxes: `echo hi` round trip through `Exec`, one exec's stdout throughput
//!   and sandbox creation on the local and the Docker backend (the `cognition-executor`
//!   binary), and new session → first tool output through `cognition up` on the local backend,
//!   on Docker cold and on Docker with a warm pool.
//!
//! `cognition-bench [--only GROUP[,GROUP…]] [--no-docker]`: the groups are `rest`, `turns`,
//! `memory`, `startup` and `sandbox` (all by default); `--no-docker` leaves out the Docker rows
//! (which need the `docker` command, a running engine and the image of
//! `compose/sandbox/build.sh`).
//!
//! The load generator (and the fake LLM) run on the same machine, so figures are conservative.

use std::time::{Duration, Instant};

use cognition_e2e::bench::exec::{Backend, Executor};
use cognition_e2e::bench::http::{Until, load, request};
use cognition_e2e::bench::options::{Group, Options, USAGE};
use cognition_e2e::bench::sandbox::{FirstToolOutput, Setup};
use cognition_e2e::bench::stack::{SESSION_BODY, Up, create_session, raise_fd_limit};
use cognition_e2e::bench::{docker, exec, memory, sandbox, turns, watchers};
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
/// Measured `echo hi` execs per backend.
const ECHO_EXECS: usize = 2000;
/// Output of the throughput exec, MiB.
const THROUGHPUT_MIB: u64 = 1024;
/// Sandboxes created one after the other per backend.
const SANDBOX_CREATES: usize = 10;
/// Sessions per "new session → first tool output" setup.
const FIRST_OUTPUT_SESSIONS: usize = 20;
/// `COGNITION_SANDBOX_WARM_POOL` of the warm setup.
const WARM_POOL: u32 = 4;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return Ok(());
        }
        Err(e) => {
            eprintln!("cognition-bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let duration = Duration::from_secs(seconds);
    let nofile = raise_fd_limit(NOFILE)?;
    if options.runs(Group::Turns) && nofile < (2 * WATCHERS + 512) as u64 {
        eprintln!("bench: only {nofile} open files allowed; the watcher measure may fail");
    }
    let mut rows = Vec::new();
    if options.runs(Group::Rest) {
        rest(&mut rows, duration).await?;
    }
    if options.runs(Group::Turns) || options.runs(Group::Memory) {
        let llm = FakeLlm::start().await;
        llm.set_default(turns::reply());
        let llm_url = llm.openai_base_url();
        if options.runs(Group::Turns) {
            turn_rows(&mut rows, &llm, &llm_url, duration).await?;
        }
        if options.runs(Group::Memory) {
            memory_rows(&mut rows, &llm_url).await?;
        }
        // Only now: freeing what the fake LLM recorded must not land inside a measure.
        drop(llm);
    }
    if options.runs(Group::Startup) {
        progress("start → healthy");
        for (name, ms) in health_after_start().await? {
            rows.push(row(
                &format!("{name}: start → healthy"),
                format!("{ms:.0} ms"),
                "≤ 200 ms",
            ));
        }
    }
    if options.runs(Group::Sandbox) {
        sandbox_rows(&mut rows, options.docker).await;
    }

    println!("\n| measure | result | budget |\n|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

/// Idle RSS, `GET /sessions/{id}` and `POST /sessions` under load.
async fn rest(rows: &mut Vec<String>, duration: Duration) -> anyhow::Result<()> {
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
    Ok(())
}

/// Turns at concurrency 1 and 16, and 1,000 watchers on one turn.
async fn turn_rows(
    rows: &mut Vec<String>,
    llm: &FakeLlm,
    llm_url: &str,
    duration: Duration,
) -> anyhow::Result<()> {
    let up = Up::start(Some(llm_url)).await?;
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
    Ok(())
}

/// RSS per idle session and RSS growth over turns, on a fresh stack.
async fn memory_rows(rows: &mut Vec<String>, llm_url: &str) -> anyhow::Result<()> {
    progress("memory");
    let up = Up::start(Some(llm_url)).await?;
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

/// The executor and sandbox rows: `Exec` on each backend, then new session → first tool output
/// through `cognition up`. A failed measure becomes a FAILED row; the others still run.
async fn sandbox_rows(rows: &mut Vec<String>, with_docker: bool) {
    let docker_ok = if with_docker {
        docker::available().await
    } else {
        Err("left out (--no-docker)".to_owned())
    };
    let mut backends = vec![Backend::Local];
    match &docker_ok {
        Ok(()) => backends.push(Backend::Docker),
        Err(why) if with_docker => rows.push(row(
            "Docker rows",
            format!("FAILED: Docker is not reachable ({why}); pass --no-docker to leave them out"),
            "",
        )),
        Err(_) => {}
    }
    for backend in backends {
        progress(&format!("Exec, {}", backend.name()));
        if let Err(e) = exec_rows(rows, backend).await {
            rows.push(row(&format!("Exec, {}", backend.name()), failed(e), ""));
        }
    }

    let llm = FakeLlm::start().await;
    let mut setups = vec![(
        Setup::Local,
        "new session → first tool output, local (reference)",
        "",
    )];
    if docker_ok.is_ok() {
        setups.push((
            Setup::Docker { warm_pool: 0 },
            "new session → first tool output, Docker cold (warm pool 0)",
            "p50 ≤ 400 ms",
        ));
        setups.push((
            Setup::Docker {
                warm_pool: WARM_POOL,
            },
            "new session → first tool output, Docker warm pool (4)",
            "p50 ≤ 100 ms",
        ));
    }
    for (setup, what, budget) in setups {
        progress(what);
        let result = sandbox::first_tool_output(&llm, setup, FIRST_OUTPUT_SESSIONS).await;
        rows.push(row(
            what,
            match result {
                Ok(f) => first_output_result(setup, &f),
                Err(e) => failed(e),
            },
            budget,
        ));
    }
}

fn first_output_result(setup: Setup, f: &FirstToolOutput) -> String {
    let mut out = format!(
        "p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms ({} sessions",
        f.samples.pct(50.0),
        f.samples.pct(90.0),
        f.samples.pct(100.0),
        f.samples.len(),
    );
    if let Setup::Docker { warm_pool } = setup {
        out += &format!("; {}/{} from the pool", f.from_pool, f.samples.len());
        if warm_pool > 0 {
            out += &format!(
                "; each sample after the pool was full again + 300 ms, refill seen p50 {:.0} ms after a sample",
                f.refill.pct(50.0)
            );
        }
    }
    out += ")";
    if let Some(c) = f.containers {
        out += &format!(
            "; containers: {} before the sessions, {} after deleting them, {} after stop",
            c.before_sessions, c.after_deletes, c.after_stop
        );
        if c.after_stop > 0 {
            out += " — LEAK (removed by the bench)";
        }
    }
    out
}

/// `echo hi`, stdout throughput and sandbox creation on `backend`.
async fn exec_rows(rows: &mut Vec<String>, backend: Backend) -> anyhow::Result<()> {
    let mut executor = Executor::start(backend).await?;
    let containers = match backend {
        Backend::Docker => Some(docker::Containers::under(&executor.sandbox_root())?),
        Backend::Local => None,
    };
    let measured = async {
        let creates = exec::create_latency(&mut executor, SANDBOX_CREATES).await?;
        let sandbox = executor.create_sandbox().await?;
        let echo = exec::echo_latency(&mut executor.client, &sandbox, ECHO_EXECS).await?;
        let throughput =
            exec::stdout_throughput(&mut executor.client, &sandbox, THROUGHPUT_MIB).await?;
        executor.delete_sandbox(&sandbox).await?;
        anyhow::Ok((creates, echo, throughput))
    }
    .await;
    let stopped = executor.stop(Duration::from_secs(30));
    let leaked = match &containers {
        Some(c) => c.remove_all().await?,
        None => 0,
    };
    let (creates, echo, throughput) = measured?;
    stopped?;
    anyhow::ensure!(
        leaked == 0,
        "{leaked} containers left after the executor stopped"
    );
    let name = backend.name();
    let (echo_what, echo_budget) = match backend {
        Backend::Local => (
            "`echo hi` through Exec, local".to_owned(),
            "≤ 2 ms / ≤ 10 ms",
        ),
        Backend::Docker => (
            "`echo hi` through Exec, running Docker sandbox".to_owned(),
            "≤ 5 ms / ≤ 25 ms",
        ),
    };
    rows.push(row(
        &echo_what,
        format!(
            "p50 {:.2} ms, p99 {:.2} ms ({} execs after {} warm-up)",
            echo.pct(50.0),
            echo.pct(99.0),
            echo.len(),
            exec::ECHO_WARMUP
        ),
        echo_budget,
    ));
    rows.push(row(
        &format!("one exec's stdout throughput, {name}"),
        format!(
            "{:.0} MB/s ({} MiB of `dd if=/dev/zero bs=65536` delivered in {:.2} s)",
            throughput.mb_per_s(),
            THROUGHPUT_MIB,
            throughput.elapsed.as_secs_f64()
        ),
        "≥ 400 MB/s",
    ));
    let (create_what, create_budget) = match backend {
        Backend::Local => ("sandbox create, local (reference)", ""),
        Backend::Docker => (
            "sandbox create, Docker cold (ready to exec)",
            "— (anchor: create + start 170–340 ms)",
        ),
    };
    rows.push(row(
        create_what,
        format!(
            "p50 {:.1} ms, max {:.1} ms ({} creates)",
            creates.pct(50.0),
            creates.pct(100.0),
            creates.len()
        ),
        create_budget,
    ));
    Ok(())
}
