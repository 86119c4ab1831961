//! Fan-out: many `GET /sessions/{id}/events` streams, each on its own connection, follow one
//! turn; every one must carry every event of the turn, ending with `done`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt as _;

use super::http::{build, connect};
use super::sse::Trace;
use super::stack::create_session;
use super::turns::turn;

/// How long a watcher waits for the turn's `done`.
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections opened at the same time while the watchers connect.
const OPENING_AT_ONCE: usize = 64;

/// What the watchers saw.
#[derive(Debug)]
pub struct Fanout {
    pub watchers: usize,
    /// Events of the turn (as its own `POST …/messages` stream carried them).
    pub events_per_turn: usize,
    /// Watchers whose stream carried exactly the turn's events, in order, ending with `done`.
    pub complete: usize,
    /// Events of the turn received, summed over the watchers.
    pub delivered: u64,
    /// `watchers × events_per_turn`.
    pub expected: u64,
    /// Time to open every watcher (until each got its response headers).
    pub open: Duration,
    /// From sending the turn's `POST` until the last watcher saw `done`.
    pub last_done: Duration,
    /// From sending the turn's `POST` until its own stream saw `done`.
    pub turn: Duration,
    pub first_failure: Option<String>,
}

/// Opens `watchers` event streams on one fresh session of the gateway at `gateway`, then runs
/// one turn there.
pub async fn fanout(gateway: SocketAddr, watchers: usize) -> anyhow::Result<Fanout> {
    let session = create_session(gateway).await?;
    let path = format!("/sessions/{session}/events");
    let t = Instant::now();
    let opened: Vec<anyhow::Result<_>> = futures::stream::iter(0..watchers)
        .map(|_| {
            let path = path.clone();
            async move {
                let mut sender = connect(gateway).await?;
                let resp = sender
                    .send_request(build(gateway, "GET", &path, None))
                    .await?;
                anyhow::ensure!(resp.status() == http::StatusCode::OK, "{}", resp.status());
                Ok((sender, resp.into_body()))
            }
        })
        .buffer_unordered(OPENING_AT_ONCE)
        .collect()
        .await;
    let open = t.elapsed();
    let mut first_failure = None;
    let mut tasks = Vec::with_capacity(watchers);
    for o in opened {
        match o {
            Ok((sender, body)) => tasks.push(tokio::spawn(async move {
                let trace = tokio::time::timeout(WATCH_TIMEOUT, Trace::follow(body, false)).await;
                drop(sender);
                match trace {
                    Ok(r) => r,
                    Err(_) => Err(anyhow::anyhow!("no done within {WATCH_TIMEOUT:?}")),
                }
            })),
            Err(e) => {
                first_failure.get_or_insert_with(|| format!("opening a watcher: {e}"));
            }
        }
    }
    // Not needed for correctness (a late watcher replays from the log), but the point is the
    // live fan-out.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut sender = connect(gateway).await?;
    let t0 = Instant::now();
    let (timing, expected) = turn(&mut sender, gateway, &session).await?;
    let mut complete = 0;
    let mut delivered = 0u64;
    let mut last_done = Duration::ZERO;
    for task in tasks {
        match task.await? {
            Ok(trace) => {
                delivered += trace
                    .seqs
                    .iter()
                    .filter(|s| expected.seqs.contains(s))
                    .count() as u64;
                if trace.seqs == expected.seqs && trace.done.is_some() {
                    complete += 1;
                } else {
                    first_failure.get_or_insert_with(|| mismatch(&trace.seqs, &expected.seqs));
                }
                if let Some(done) = trace.done {
                    last_done = last_done.max(done.saturating_duration_since(t0));
                }
            }
            Err(e) => {
                first_failure.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(Fanout {
        watchers,
        events_per_turn: expected.seqs.len(),
        complete,
        delivered,
        expected: (watchers * expected.seqs.len()) as u64,
        open,
        last_done,
        turn: timing.total,
        first_failure,
    })
}

/// Where a watcher's sequence numbers first differ from the turn's.
fn mismatch(seen: &[u64], expected: &[u64]) -> String {
    let at = seen
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(seen.len().min(expected.len()));
    format!(
        "a watcher saw {} events, the turn had {}; first difference at #{at}: {:?} instead of {:?}",
        seen.len(),
        expected.len(),
        seen.get(at),
        expected.get(at)
    )
}
