//! Per-replica back-off: a replica that failed a call with a transport error is "down" for a
//! short while (1 s, doubling with each further failure up to 30 s) and skipped when placing
//! new sandboxes; its first success clears the mark.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Back-off after the first failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The health mark of one replica.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    down_until: Option<Instant>,
}

impl Health {
    /// Records a transport failure; returns the back-off now in force.
    pub fn failed(&self) -> Duration {
        let mut state = self.lock();
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        let backoff = backoff_after(state.consecutive_failures);
        state.down_until = Some(Instant::now() + backoff);
        backoff
    }

    /// Records a successful call: the replica is up again.
    pub fn succeeded(&self) {
        let mut state = self.lock();
        state.consecutive_failures = 0;
        state.down_until = None;
    }

    /// Whether the replica is inside its back-off.
    pub fn is_down(&self) -> bool {
        self.lock()
            .down_until
            .is_some_and(|until| Instant::now() < until)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The back-off after `failures` consecutive failures (≥ 1).
fn backoff_after(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff_after(1), Duration::from_secs(1));
        assert_eq!(backoff_after(2), Duration::from_secs(2));
        assert_eq!(backoff_after(5), Duration::from_secs(16));
        assert_eq!(backoff_after(6), MAX_BACKOFF);
        assert_eq!(backoff_after(u32::MAX), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn a_failure_marks_down_and_a_success_clears_it() {
        let health = Health::default();
        assert!(!health.is_down());
        assert_eq!(health.failed(), FIRST_BACKOFF);
        assert!(health.is_down());
        assert_eq!(health.failed(), FIRST_BACKOFF * 2);
        health.succeeded();
        assert!(!health.is_down());
        assert_eq!(health.failed(), FIRST_BACKOFF);
    }
}
