//! New session → first tool output through `cognition up`: the time from `POST /sessions` to
//! the `tool_result` event of the session's first turn, in which the (fake) model calls
//! `execute` with `echo hi` — so it includes creating the session's sandbox, cold or claimed
//! from the Docker warm pool.
//!
//! Each sample, one after the other on one keep-alive connection: the fake LLM is given the
//! tool call for the turn's first model call (its default reply, a short text, answers the
//! second); the clock starts before `POST /sessions` and stops when the `tool_result` event is
//! parsed from the `POST /sessions/{id}/messages` stream, whose output must be `hi` with exit
//! code 0; the stream is then read to its end and the session deleted (`DELETE
//! /sessions/{id}`, which deletes its sandbox), untimed. With a warm pool, the next sample waits
//! until the pool is full again (every ready container running) and 300 ms more, so each sample
//! measures a claim on a quiet machine, and the sample checks that its container came from
//! the pool.
//!
//! On Docker the run's containers (those labelled with its sandbox root) are counted before the
//! first session (the warm pool full), after the sessions are deleted and after a graceful stop; any left after the
//! stop are removed and reported.

use std::time::{Duration, Instant};

use cognition_fake_llm::{FakeLlm, Reply};
use http_body_util::BodyExt as _;
use serde_json::json;

use super::docker::Containers;
use super::http::{Sender, build, connect};
use super::sse::{Flow, each_event};
use super::stack::{SESSION_BODY, Up};
use super::{Samples, ms};

/// The user message of every sample.
const MESSAGE: &[u8] = br#"{"content":"Run echo hi."}"#;
/// A sample whose turn takes longer than this fails the measure.
const TURN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for the warm pool to be full.
const POOL_FILL_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after the pool shows every container running (their agents answer shortly after).
const POOL_SETTLE: Duration = Duration::from_millis(300);
/// How long a graceful stop of the stack may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The sandbox backend behind `cognition up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    Local,
    /// Docker with `COGNITION_SANDBOX_WARM_POOL=<n>` (0 = every sandbox starts cold).
    Docker {
        warm_pool: u32,
    },
}

impl Setup {
    fn env(self) -> Vec<(&'static str, String)> {
        match self {
            Setup::Local => vec![("COGNITION_SANDBOX_BACKEND", "local".to_owned())],
            Setup::Docker { warm_pool } => {
                let mut env = vec![
                    ("COGNITION_SANDBOX_BACKEND", "docker".to_owned()),
                    ("COGNITION_SANDBOX_WARM_POOL", warm_pool.to_string()),
                ];
                env.extend(super::exec::forwarded());
                env
            }
        }
    }

    fn warm_pool(self) -> u32 {
        match self {
            Setup::Docker { warm_pool } => warm_pool,
            Setup::Local => 0,
        }
    }
}

/// Container counts of one Docker run.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContainerCounts {
    /// Once the stack is up (and the warm pool full), before the first session.
    pub before_sessions: usize,
    pub after_deletes: usize,
    /// Left after the graceful stop (removed by the benchmark).
    pub after_stop: usize,
}

/// What [`first_tool_output`] measured.
#[derive(Debug)]
pub struct FirstToolOutput {
    pub samples: Samples,
    /// Samples whose sandbox was a claimed warm container (Docker only).
    pub from_pool: usize,
    /// Time from the end of a warm sample (before its session is deleted) to the pool being
    /// seen full again (`docker ps` every 20 ms).
    pub refill: Samples,
    /// `None` on the local backend.
    pub containers: Option<ContainerCounts>,
}

/// Starts `cognition up` on `setup` with `llm` as its model, takes `sessions` samples, deletes
/// every session and stops the stack.
pub async fn first_tool_output(
    llm: &FakeLlm,
    setup: Setup,
    sessions: usize,
) -> anyhow::Result<FirstToolOutput> {
    llm.set_default(Reply::text("The command printed hi.").usage(40, 5));
    let up = Up::start_with(Some(&llm.openai_base_url()), &setup.env()).await?;
    let containers = match setup {
        Setup::Docker { .. } => Some(Containers::under(&up.data_dir().join("sandboxes"))?),
        Setup::Local => None,
    };
    let mut counts = ContainerCounts::default();
    let mut open = Vec::new();
    let measured = measure(
        &up,
        llm,
        setup,
        containers.as_ref(),
        sessions,
        &mut open,
        &mut counts,
    )
    .await;
    // Sessions a failure left behind.
    let mut cleanup_error = None;
    for id in open {
        if let Err(e) = delete_session(&up, &id).await {
            cleanup_error.get_or_insert(e);
        }
    }
    if let Some(c) = &containers {
        counts.after_deletes = c.ids().await?.len();
    }
    let stopped = up.stop(STOP_TIMEOUT);
    if let Some(c) = &containers {
        counts.after_stop = c.remove_all().await?;
    }
    let (samples, from_pool, refill) = measured?;
    stopped?;
    if let Some(e) = cleanup_error {
        return Err(e.context("deleting the sessions"));
    }
    Ok(FirstToolOutput {
        samples,
        from_pool,
        refill,
        containers: containers.map(|_| counts),
    })
}

/// The samples (after waiting for the warm pool to be full); `open` holds the sessions not
/// deleted yet, `counts` gets the containers before the first session.
async fn measure(
    up: &Up,
    llm: &FakeLlm,
    setup: Setup,
    containers: Option<&Containers>,
    sessions: usize,
    open: &mut Vec<String>,
    counts: &mut ContainerCounts,
) -> anyhow::Result<(Samples, usize, Samples)> {
    let pool = setup.warm_pool() as usize;
    if let Some(c) = containers {
        if pool > 0 {
            wait_for_full_pool(c, pool).await?;
        }
        counts.before_sessions = c.ids().await?.len();
    }
    let mut sender = connect(up.addr).await?;
    let (mut samples, mut refill, mut from_pool) = (Vec::new(), Vec::new(), 0);
    for i in 0..sessions {
        llm.push(Reply::tool_call("call_1", "execute", json!({"command": "echo hi"})).usage(30, 8));
        let (id, elapsed) = tokio::time::timeout(TURN_TIMEOUT, sample(&mut sender, up, open))
            .await
            .map_err(|_| anyhow::anyhow!("no tool output within {TURN_TIMEOUT:?}"))
            .and_then(|r| r)
            .map_err(|e| e.context(format!("session {}", i + 1)))?;
        samples.push(ms(elapsed));
        if let Some(c) = containers
            && c.claimed_from_pool(&id).await?
        {
            from_pool += 1;
        }
        let done = Instant::now();
        delete_session(up, &id).await?;
        open.retain(|o| *o != id);
        if let (Some(c), true) = (containers, pool > 0) {
            let full = wait_for_full_pool(c, pool).await?;
            refill.push(ms(full - done));
        }
    }
    Ok((Samples::new(samples), from_pool, Samples::new(refill)))
}

/// One session: created, its first turn run to the end; its id and the time from before the
/// create to the `tool_result` event.
async fn sample(
    sender: &mut Sender,
    up: &Up,
    open: &mut Vec<String>,
) -> anyhow::Result<(String, Duration)> {
    // The previous exchange may still be settling in the connection's task.
    sender.ready().await?;
    let t = Instant::now();
    let resp = sender
        .send_request(build(up.addr, "POST", "/sessions", Some(SESSION_BODY)))
        .await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status.is_success(),
        "POST /sessions: {status} {}",
        String::from_utf8_lossy(&body)
    );
    let created: serde_json::Value = serde_json::from_slice(&body)?;
    let id = created["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no id in {created}"))?
        .to_owned();
    open.push(id.clone());
    let path = format!("/sessions/{id}/messages");
    sender.ready().await?;
    let resp = sender
        .send_request(build(up.addr, "POST", &path, Some(MESSAGE)))
        .await?;
    let status = resp.status();
    if status != http::StatusCode::OK {
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::bail!("POST {path}: {status} {}", String::from_utf8_lossy(&body));
    }
    let mut tool_output = None;
    let mut done = false;
    each_event(resp.into_body(), |event, at| {
        match event.event.as_str() {
            "tool_result" if tool_output.is_none() => {
                let data: serde_json::Value = serde_json::from_str(&event.data)?;
                let output = data["output"].as_str().unwrap_or_default();
                anyhow::ensure!(
                    output.trim() == "hi" && data["exit_code"] == 0,
                    "unexpected tool result {data}"
                );
                tool_output = Some(at - t);
            }
            "error" => anyhow::bail!("the run failed: {}", event.data),
            "done" => done = true,
            _ => {}
        }
        // Read on to the end of the body, so that the connection can carry the next request.
        Ok(Flow::Continue)
    })
    .await?;
    anyhow::ensure!(done, "the event stream ended without done");
    let elapsed = tool_output.ok_or_else(|| anyhow::anyhow!("no tool_result event"))?;
    Ok((id, elapsed))
}

async fn delete_session(up: &Up, id: &str) -> anyhow::Result<()> {
    super::http::request(up.addr, "DELETE", &format!("/sessions/{id}"), None).await?;
    Ok(())
}

/// Waits until `pool` warm containers run, then [`POOL_SETTLE`]; when they were seen running.
async fn wait_for_full_pool(containers: &Containers, pool: usize) -> anyhow::Result<Instant> {
    let t = Instant::now();
    while containers.warm_ready().await? < pool {
        anyhow::ensure!(
            t.elapsed() < POOL_FILL_TIMEOUT,
            "the warm pool did not refill to {pool} within {POOL_FILL_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let full = Instant::now();
    tokio::time::sleep(POOL_SETTLE).await;
    Ok(full)
}
