//! The measures of the benchmark program `cognition-bench` (`src/bin/cognition-bench.rs`), which
//! only sequences them and prints the table:
//! - [`http`]: raw hyper HTTP/1.1 keep-alive clients and a fixed-duration or fixed-count load;
//! - [`stack`]: `cognition up` as a separate process, its RSS, the file-descriptor limit;
//! - [`sse`]: reading the gateway's event streams with per-frame timing;
//! - [`turns`]: agent turns through gateway → session service → fake LLM, and the fake LLM's
//!   own time for the same reply;
//! - [`watchers`]: many `GET /sessions/{id}/events` streams following one turn;
//! - [`memory`]: RSS per idle session and RSS growth over many turns;
//! - [`exec`]: `Exec` against the executor binary (local or Docker): sandbox creation,
//!   `echo hi` round trip, stdout throughput;
//! - [`sandbox`]: new session → first tool output through `cognition up` (local, Docker cold,
//!   Docker warm pool);
//! - [`docker`]: one run's containers through the `docker` command line;
//! - [`options`]: the program's command line.

pub mod docker;
pub mod exec;
pub mod http;
pub mod memory;
pub mod options;
pub mod sandbox;
pub mod sse;
pub mod stack;
pub mod turns;
pub mod watchers;

use std::time::Duration;

/// Latency samples in milliseconds, sorted.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn new(mut ms: Vec<f64>) -> Samples {
        ms.sort_by(f64::total_cmp);
        Samples(ms)
    }

    /// The `p`-th percentile (nearest rank), NaN without samples.
    pub fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        self.0[i.min(self.0.len() - 1)]
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_over_sorted_samples() {
        let s = Samples::new((1..=100).rev().map(f64::from).collect());
        assert_eq!(s.pct(0.0), 1.0);
        assert_eq!(s.pct(50.0), 51.0);
        assert_eq!(s.pct(99.0), 99.0);
        assert_eq!(s.pct(100.0), 100.0);
        assert!(Samples::default().pct(50.0).is_nan());
    }
}
