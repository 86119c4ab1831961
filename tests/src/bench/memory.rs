//! Resident memory of `cognition up`: per idle session (RSS before and after creating many
//! sessions) and its growth over many finished turns (after a warm-up, so that allocator pools,
//! connection buffers and caches are already there).

use std::time::Duration;

use super::http::{Until, load};
use super::stack::{SESSION_BODY, Up};
use super::turns::throughput;

/// Pause before reading RSS, so that the process has finished answering.
const SETTLE: Duration = Duration::from_millis(500);

/// Concurrent clients creating sessions or running turns.
pub const CLIENTS: usize = 16;

/// RSS before and after some work, KiB.
#[derive(Debug, Clone, Copy)]
pub struct Growth {
    pub before_kib: u64,
    pub after_kib: u64,
    /// How many sessions or turns the work created or ran successfully.
    pub done: usize,
    pub errors: u64,
}

impl Growth {
    /// RSS growth, KiB (negative when the process shrank).
    pub fn delta_kib(&self) -> i64 {
        self.after_kib as i64 - self.before_kib as i64
    }
}

/// RSS around creating `sessions` sessions (`POST /sessions`, [`CLIENTS`] connections), after
/// creating `warmup` ones.
pub async fn idle_sessions(up: &Up, warmup: usize, sessions: usize) -> anyhow::Result<Growth> {
    let w = load(
        up.addr,
        "POST",
        "/sessions",
        Some(SESSION_BODY),
        CLIENTS,
        Until::Count(warmup),
    )
    .await?;
    anyhow::ensure!(w.errors == 0, "{} errors creating sessions", w.errors);
    tokio::time::sleep(SETTLE).await;
    let before_kib = up.rss_kib()?;
    let r = load(
        up.addr,
        "POST",
        "/sessions",
        Some(SESSION_BODY),
        CLIENTS,
        Until::Count(sessions),
    )
    .await?;
    tokio::time::sleep(SETTLE).await;
    Ok(Growth {
        before_kib,
        after_kib: up.rss_kib()?,
        done: r.latencies.len(),
        errors: r.errors,
    })
}

/// RSS around `turns` turns ([`CLIENTS`] clients back to back, see [`throughput`]), after
/// `warmup` turns.
pub async fn turns(up: &Up, warmup: usize, turns: usize) -> anyhow::Result<Growth> {
    let w = throughput(up.addr, CLIENTS, Until::Count(warmup)).await?;
    anyhow::ensure!(
        w.errors == 0,
        "{} errors in warm-up turns: {:?}",
        w.errors,
        w.first_error
    );
    tokio::time::sleep(SETTLE).await;
    let before_kib = up.rss_kib()?;
    let r = throughput(up.addr, CLIENTS, Until::Count(turns)).await?;
    tokio::time::sleep(SETTLE).await;
    Ok(Growth {
        before_kib,
        after_kib: up.rss_kib()?,
        done: r.latency.len(),
        errors: r.errors,
    })
}
