//! `cognition-bench`: measures the foundation budgets on this machine and prints a table.
//!
//! Run with `cargo build --release --workspace && target/release/cognition-bench` (or
//! `tests/bench.sh`). It starts the release binaries itself:
//! * `GET /sessions/{id}` and `POST /sessions` through gateway → session service → SQLite
//!   (`cognition up`), 32 concurrent keep-alive connections, fixed duration;
//! * time from process start to the first healthy answer, per service binary;
//! * idle RSS of `cognition up`;
//! * `echo hi` round trip through `Exec` on the local backend.
//!
//! The load generator runs on the same machine, so figures are conservative.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cognition_e2e::procs::{Proc, free_addr, wait_listening};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

const CONCURRENCY: usize = 32;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut rows = Vec::new();

    let dir = tempfile::tempdir()?;
    let addr = free_addr()?;
    let up = Proc::spawn(
        "cognition",
        &["up"],
        &[
            ("COGNITION_DATA_DIR", dir.path().display().to_string()),
            ("COGNITION_PORT", addr.port().to_string()),
        ],
    )?;
    wait_listening(addr, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_kib(up.child.id())?;
    rows.push(row(
        "`cognition up` idle RSS",
        format!("{:.1} MB", rss as f64 / 1024.0),
        "≤ 60 MB",
    ));

    let body = br#"{"title":"bench","metadata":{"repo":"a/b"}}"#;
    let created = request(addr, "POST", "/sessions", Some(body)).await?;
    let v: serde_json::Value = serde_json::from_slice(&created)?;
    let id = v["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no id in {v}"))?
        .to_owned();

    let path = format!("/sessions/{id}");
    let get = load(addr, "GET", &path, None, Duration::from_secs(seconds)).await?;
    rows.push(row(
        "GET /sessions/{id}, 32 clients",
        format!(
            "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            get.rps(),
            get.pct(50.0),
            get.pct(99.0),
            get.errors
        ),
        "≥ 5,000 req/s, p99 ≤ 20 ms",
    ));
    let post = load(
        addr,
        "POST",
        "/sessions",
        Some(body),
        Duration::from_secs(seconds),
    )
    .await?;
    rows.push(row(
        "POST /sessions, 32 clients",
        format!(
            "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            post.rps(),
            post.pct(50.0),
            post.pct(99.0),
            post.errors
        ),
        "≥ 1,500 req/s, 0 errors",
    ));
    drop(up);

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

    println!("\n| measure | result | budget |\n|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

fn row(what: &str, result: String, budget: &str) -> String {
    format!("| {what} | {result} | {budget} |")
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn build(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&'static [u8]>,
) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    req.body(Full::new(Bytes::from_static(body.unwrap_or(b""))))
        .expect("valid request")
}

async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&'static [u8]>,
) -> anyhow::Result<Bytes> {
    let mut s = connect(addr).await?;
    let resp = s.send_request(build(addr, method, path, body)).await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "{method} {path}: {}",
        resp.status()
    );
    Ok(resp.into_body().collect().await?.to_bytes())
}

struct LoadResult {
    latencies_us: Vec<u64>,
    errors: u64,
    elapsed: Duration,
}

impl LoadResult {
    fn rps(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

async fn load(
    addr: std::net::SocketAddr,
    method: &'static str,
    path: &str,
    body: Option<&'static [u8]>,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..CONCURRENCY {
        let stop = stop.clone();
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut sender = connect(addr).await?;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = match sender.send_request(build(addr, method, &path, body)).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        ok && resp.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                };
                if ok {
                    lat.push(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                    sender = connect(addr).await?;
                }
            }
            anyhow::Ok((lat, errors))
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut result = LoadResult {
        latencies_us: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (lat, errors) = t.await??;
        result.latencies_us.extend(lat);
        result.errors += errors;
    }
    result.elapsed = started.elapsed();
    result.latencies_us.sort_unstable();
    Ok(result)
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
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok((lat[lat.len() / 2], lat[(lat.len() * 99) / 100]))
}
