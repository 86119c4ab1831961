//! Agent turns against the fake LLM on loopback, over SQLite: the latency a turn adds on top
//! of the model's own time, time to first token, and turns per second under concurrency.
//!
//! Run: `cargo bench -p cognition-session --bench turns` (release). Budgets (issue #3, 2 cores):
//! a 50-token turn with zero LLM delay at p50 ≤ 5 ms above the fake LLM's own time at
//! concurrency 1; ≥ 200 turns/s at concurrency 16; time to first token added ≤ 2 ms p50 (this
//! bench measures the session service alone; the gateway adds its own share).
//! `COGNITION_BENCH_TURNS` sets the number of sequential turns (default 300).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cognition_fake_llm::{FakeLlm, Reply};
use cognition_proto::session::v1 as pb;
use cognition_proto::session::v1::session_service_client::SessionServiceClient;
use cognition_session::llm::{ModelClient, ModelRouter, ProviderConfig, ProviderKind};
use cognition_session::{Config, EventLog};
use tokio_util::sync::CancellationToken;

const TOKENS: usize = 50;
const CONCURRENCY: usize = 16;

fn reply() -> Reply {
    Reply::tokens((0..TOKENS).map(|i| format!("w{i} ")))
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

type Client = SessionServiceClient<tonic::transport::Channel>;

async fn new_session(client: &mut Client) -> anyhow::Result<String> {
    Ok(client
        .create_session(pb::CreateSessionRequest::default())
        .await?
        .into_inner()
        .session
        .map(|s| s.id)
        .unwrap_or_default())
}

/// One turn: (time to first token, time to done).
async fn turn(client: &mut Client, session_id: &str) -> anyhow::Result<(Duration, Duration)> {
    let started = Instant::now();
    let mut stream = client
        .send_message(pb::SendMessageRequest {
            session_id: session_id.to_owned(),
            content: "go".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut first = None;
    while let Some(item) = stream.message().await? {
        match item.event.and_then(|e| e.kind) {
            Some(pb::event::Kind::Token(_)) if first.is_none() => first = Some(started.elapsed()),
            Some(pb::event::Kind::Done(_)) => break,
            _ => {}
        }
    }
    Ok((first.unwrap_or_default(), started.elapsed()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let turns: usize = std::env::var("COGNITION_BENCH_TURNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let llm = FakeLlm::start().await;
    llm.set_default(reply());

    // The fake LLM's own time for the same streamed answer, read to the end over HTTP.
    let http = reqwest::Client::new();
    let body = serde_json::json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": "go"}]});
    let mut own_total = Vec::new();
    let mut own_first = Vec::new();
    for _ in 0..turns {
        let started = Instant::now();
        let mut res = http
            .post(format!("{}/chat/completions", llm.openai_base_url()))
            .json(&body)
            .send()
            .await?;
        let mut first = None;
        while let Some(_chunk) = res.chunk().await? {
            first.get_or_insert_with(|| started.elapsed());
        }
        own_first.push(first.unwrap_or_default());
        own_total.push(started.elapsed());
    }

    let dir = tempfile::tempdir()?;
    let config = Config::embedded(dir.path().to_path_buf());
    let store = cognition_session::store::open(&config).await?;
    let events = EventLog::new(store.clone());
    let model: Arc<dyn ModelClient> = Arc::new(ModelRouter::new(vec![
        ProviderConfig::new("fake", ProviderKind::OpenAiCompatible, "fake-model")
            .with_base_url(llm.openai_base_url()),
    ])?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            cognition_session::serve_with_model(&config, events, model, listener, shutdown).await
        }
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let client = SessionServiceClient::new(channel);

    // Sequential turns (a new session every 20 turns keeps the context small).
    let mut client1 = client.clone();
    let mut session = new_session(&mut client1).await?;
    let (mut firsts, mut totals) = (Vec::new(), Vec::new());
    for i in 0..turns {
        if i % 20 == 0 {
            session = new_session(&mut client1).await?;
        }
        let (first, total) = turn(&mut client1, &session).await?;
        firsts.push(first);
        totals.push(total);
    }
    let own_p50 = percentile(&mut own_total, 0.5);
    let own_first_p50 = percentile(&mut own_first, 0.5);
    let p50 = percentile(&mut totals, 0.5);
    let p99 = percentile(&mut totals, 0.99);
    let first_p50 = percentile(&mut firsts, 0.5);
    println!("fake LLM alone:        p50 {own_p50:?} (first byte {own_first_p50:?})");
    println!(
        "{TOKENS}-token turn, c=1:   p50 {p50:?}  p99 {p99:?}  → added p50 {:?}",
        p50.saturating_sub(own_p50)
    );
    println!(
        "time to first token:   p50 {first_p50:?} → added p50 {:?}",
        first_p50.saturating_sub(own_first_p50)
    );

    // Concurrency: CONCURRENCY callers, each in its own session, for a fixed number of turns.
    let per_caller = turns.max(CONCURRENCY) / CONCURRENCY * 4;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut session = new_session(&mut client).await?;
            for i in 0..per_caller {
                if i % 20 == 0 {
                    session = new_session(&mut client).await?;
                }
                turn(&mut client, &session).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let done = (per_caller * CONCURRENCY) as f64;
    println!(
        "c={CONCURRENCY}: {:.0} turns/s ({done} turns in {elapsed:?})",
        done / elapsed.as_secs_f64()
    );

    shutdown.cancel();
    server.await??;
    store.close().await;
    Ok(())
}
