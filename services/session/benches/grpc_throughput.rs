//! Throughput of the session service over gRPC on SQLite: `GetSession` and `CreateSession`
//! with 32 concurrent callers on one HTTP/2 channel (as the gateway calls it).
//!
//! Run: `cargo bench -p cognition-session --bench grpc_throughput` (prints req/s; budgets:
//! GET ≥ 5,000 req/s and create ≥ 1,500 req/s through the gateway on 2 cores, so the service
//! alone must be comfortably above). `COGNITION_BENCH_SECS` sets the duration per phase.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cognition_proto::session::v1 as pb;
use cognition_proto::session::v1::session_service_client::SessionServiceClient;
use cognition_session::Config;
use tokio_util::sync::CancellationToken;

const CONCURRENCY: usize = 32;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("COGNITION_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir()?;
    let config = Config::embedded(dir.path().to_path_buf());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(cognition_session::run(config, listener, shutdown.clone()));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let client = SessionServiceClient::new(channel);

    let mut ids = Vec::new();
    for _ in 0..200 {
        let s = client
            .clone()
            .create_session(pb::CreateSessionRequest::default())
            .await?;
        ids.push(s.into_inner().session.map(|s| s.id).unwrap_or_default());
    }
    let ids = Arc::new(ids);

    let (c, ids2) = (client.clone(), ids.clone());
    let get = phase(secs, move |i| {
        let mut client = c.clone();
        let ids = &ids2;
        let id = ids[i % ids.len()].clone();
        async move {
            client
                .get_session(pb::GetSessionRequest { session_id: id })
                .await
                .is_ok()
        }
    })
    .await;
    println!("GetSession:    {get:>8.0} req/s ({CONCURRENCY} concurrent)");

    let c = client.clone();
    let create = phase(secs, move |_| {
        let mut client = c.clone();
        async move {
            let req = pb::CreateSessionRequest {
                title: Some("bench".into()),
                ..Default::default()
            };
            client.create_session(req).await.is_ok()
        }
    })
    .await;
    println!("CreateSession: {create:>8.0} req/s ({CONCURRENCY} concurrent)");

    let c = client.clone();
    let list = phase(secs, move |_| {
        let mut client = c.clone();
        async move {
            let req = pb::ListSessionsRequest {
                limit: 20,
                ..Default::default()
            };
            client.list_sessions(req).await.is_ok()
        }
    })
    .await;
    println!("ListSessions:  {list:>8.0} req/s (limit 20, {CONCURRENCY} concurrent)");

    shutdown.cancel();
    server.await??;
    Ok(())
}

/// Runs `call` from `CONCURRENCY` tasks for `secs` seconds; returns successful calls per second.
async fn phase<F, Fut>(secs: u64, call: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let (call, stop, done, failed) = (call.clone(), stop.clone(), done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                if call(i).await {
                    done.fetch_add(1, Ordering::Relaxed)
                } else {
                    failed.fetch_add(1, Ordering::Relaxed)
                };
                i += CONCURRENCY;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        eprintln!("  {failed} calls failed");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
