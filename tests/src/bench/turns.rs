//! Agent turns through gateway → session service → fake LLM, and the fake LLM's own time for
//! the same reply.
//!
//! A turn is `POST /sessions/{id}/messages` on a keep-alive connection, its event stream read
//! to `done` and on to the end of the body. Its time runs from sending the request to the
//! `token` event (time to first token) and to the `done` event (whole turn). The fake LLM's own
//! time is the same reply requested directly (`POST /v1/chat/completions`, streaming, on a
//! keep-alive connection, read to the end): from sending to the first content chunk, and to the
//! end of the body.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cognition_fake_llm::Reply;
use http_body_util::BodyExt as _;

use super::http::{Gate, Sender, Until, build, connect};
use super::sse::{Flow, Trace, each_event};
use super::stack::create_session;
use super::{Samples, ms};

/// Tokens of the benchmark's reply.
pub const REPLY_TOKENS: usize = 50;

/// Turns per session before a client moves to a fresh session. The whole conversation goes to
/// the model on each turn: with ever longer conversations the figures would depend on how long
/// the benchmark runs (and the fake LLM, which keeps every request, would grow quadratically).
pub const TURNS_PER_SESSION: usize = 20;

/// A turn that takes longer than this counts as an error.
pub const TURN_TIMEOUT: Duration = Duration::from_secs(30);

const MESSAGE: &[u8] = br#"{"content":"Say fifty words."}"#;

const LLM_REQUEST: &[u8] = br#"{"model":"fake","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say fifty words."}]}"#;

/// The reply the fake LLM gives every request: [`REPLY_TOKENS`] tokens, no delay.
pub fn reply() -> Reply {
    Reply::tokens((0..REPLY_TOKENS).map(|i| format!(" w{i}"))).usage(10, REPLY_TOKENS as u64)
}

/// Times of one turn or one direct LLM call, from sending the request.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub first_token: Duration,
    pub total: Duration,
}

/// One turn in `session` on `sender` (a connection to the gateway at `addr`).
pub async fn turn(
    sender: &mut Sender,
    addr: SocketAddr,
    session: &str,
) -> anyhow::Result<(Timing, Trace)> {
    let path = format!("/sessions/{session}/messages");
    let run = async {
        let t = Instant::now();
        let resp = sender
            .send_request(build(addr, "POST", &path, Some(MESSAGE)))
            .await?;
        let status = resp.status();
        if status != http::StatusCode::OK {
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::bail!("POST {path}: {status} {}", String::from_utf8_lossy(&body));
        }
        let trace = Trace::follow(resp.into_body(), true).await?;
        let done = trace
            .done
            .ok_or_else(|| anyhow::anyhow!("the event stream ended without done"))?;
        anyhow::ensure!(trace.after_done == 0, "events after done");
        let first = trace
            .first_token
            .ok_or_else(|| anyhow::anyhow!("no token event"))?;
        Ok((
            Timing {
                first_token: first - t,
                total: done - t,
            },
            trace,
        ))
    };
    tokio::time::timeout(TURN_TIMEOUT, run)
        .await
        .map_err(|_| anyhow::anyhow!("no done within {TURN_TIMEOUT:?}"))?
}

/// The reply requested directly from the fake LLM at `llm` on `sender`.
pub async fn llm_call(sender: &mut Sender, llm: SocketAddr) -> anyhow::Result<Timing> {
    let t = Instant::now();
    let resp = sender
        .send_request(build(
            llm,
            "POST",
            "/v1/chat/completions",
            Some(LLM_REQUEST),
        ))
        .await?;
    anyhow::ensure!(resp.status().is_success(), "fake LLM: {}", resp.status());
    let mut first = None;
    let mut tokens = 0;
    each_event(resp.into_body(), |event, at| {
        // The chunk of a text token; the role chunk carries `"content":""`.
        const KEY: &str = r#""delta":{"content":""#;
        if let Some(i) = event.data.find(KEY)
            && !event.data[i + KEY.len()..].starts_with('"')
        {
            tokens += 1;
            first.get_or_insert(at);
        }
        Ok(Flow::Continue)
    })
    .await?;
    let total = t.elapsed();
    anyhow::ensure!(
        tokens == REPLY_TOKENS,
        "fake LLM streamed {tokens} tokens, expected {REPLY_TOKENS}"
    );
    let first = first.ok_or_else(|| anyhow::anyhow!("fake LLM: no token"))?;
    Ok(Timing {
        first_token: first - t,
        total,
    })
}

/// Turn times at concurrency 1, each paired with a direct LLM call just before it.
#[derive(Debug)]
pub struct Latency {
    pub turn: Samples,
    pub turn_first_token: Samples,
    pub llm: Samples,
    pub llm_first_token: Samples,
    /// Events in the last turn's stream.
    pub events_per_turn: usize,
}

/// `warmup` + `turns` sequential turns (a fresh session every [`TURNS_PER_SESSION`]), each
/// preceded by a direct call to the fake LLM at `llm`, so that both see the same machine load.
pub async fn latency(
    gateway: SocketAddr,
    llm: SocketAddr,
    turns: usize,
    warmup: usize,
) -> anyhow::Result<Latency> {
    let mut gw = connect(gateway).await?;
    let mut direct = connect(llm).await?;
    let mut session = String::new();
    let (mut turn_ms, mut turn_ttft, mut llm_ms, mut llm_ttft) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut events_per_turn = 0;
    for i in 0..warmup + turns {
        if i % TURNS_PER_SESSION == 0 {
            session = create_session(gateway).await?;
        }
        let l = llm_call(&mut direct, llm).await?;
        let (t, trace) = turn(&mut gw, gateway, &session).await?;
        events_per_turn = trace.seqs.len();
        if i >= warmup {
            llm_ms.push(ms(l.total));
            llm_ttft.push(ms(l.first_token));
            turn_ms.push(ms(t.total));
            turn_ttft.push(ms(t.first_token));
        }
    }
    Ok(Latency {
        turn: Samples::new(turn_ms),
        turn_first_token: Samples::new(turn_ttft),
        llm: Samples::new(llm_ms),
        llm_first_token: Samples::new(llm_ttft),
        events_per_turn,
    })
}

/// What [`throughput`] measured.
#[derive(Debug)]
pub struct Throughput {
    /// Latencies of the turns that ended with `done`.
    pub latency: Samples,
    /// Non-200 answers, broken streams, streams without `done`, timeouts.
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl Throughput {
    /// Completed turns per second.
    pub fn turns_per_second(&self) -> f64 {
        self.latency.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// `clients` clients, each with its own session and connection, send turns back to back
/// (each the moment the previous one's stream ended), moving to a fresh session every
/// [`TURNS_PER_SESSION`] turns. The first sessions are created before the clock starts.
pub async fn throughput(
    gateway: SocketAddr,
    clients: usize,
    until: Until,
) -> anyhow::Result<Throughput> {
    let mut sessions = Vec::with_capacity(clients);
    for _ in 0..clients {
        sessions.push(create_session(gateway).await?);
    }
    let gate = Gate::new(until);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut session in sessions {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            let mut sender = connect(gateway).await?;
            let mut in_session = 0;
            while gate.next() {
                if in_session == TURNS_PER_SESSION {
                    session = create_session(gateway).await?;
                    in_session = 0;
                }
                in_session += 1;
                match turn(&mut sender, gateway, &session).await {
                    Ok((t, _)) => lat.push(ms(t.total)),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                        sender = connect(gateway).await?;
                    }
                }
            }
            anyhow::Ok((lat, errors, first_error))
        }));
    }
    gate.run().await;
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (lat, e, first) = t.await??;
        latencies.extend(lat);
        errors += e;
        first_error = first_error.or(first);
    }
    Ok(Throughput {
        latency: Samples::new(latencies),
        errors,
        first_error,
        elapsed: started.elapsed(),
    })
}
