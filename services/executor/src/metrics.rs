//! The executor's metric names and the helpers that record them; only [`crate::engine`] calls
//! them (sandboxes created and listed, execs started and finished there).
//!
//! * `cognition_sandboxes{state,backend}` (gauge): this executor's sandboxes by state, as the
//!   backend lists them; refreshed after every create and delete and on every reaper tick.
//! * `cognition_sandbox_create_seconds{backend}` (histogram): time of successful sandbox
//!   creations (an idempotent repeat of an existing sandbox included).
//! * `cognition_execs_total{backend,outcome}` (counter): finished execs. `outcome` is
//!   `spawn_failed`, or the exit reason of an exec that ran: `exited`, `timeout`, `idle_timeout`,
//!   `client_signal`, `client_disconnected`, `oom_killed`, `sandbox_terminated`.
//! * `cognition_exec_duration_seconds{backend}` (histogram): wall time of execs that ran.
//! * `cognition_execs_running` (gauge): execs whose process is running on this executor.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::exec::{ExitReason, Terminal};
use crate::sandbox::{ALL_STATES, Sandbox};

pub const SANDBOXES: &str = "cognition_sandboxes";
pub const SANDBOX_CREATE_SECONDS: &str = "cognition_sandbox_create_seconds";
pub const EXECS_TOTAL: &str = "cognition_execs_total";
pub const EXEC_DURATION_SECONDS: &str = "cognition_exec_duration_seconds";
pub const EXECS_RUNNING: &str = "cognition_execs_running";

/// Registers the help texts (after the exporter is installed).
pub fn describe() {
    metrics::describe_gauge!(SANDBOXES, "Sandboxes of this executor by state.");
    metrics::describe_histogram!(
        SANDBOX_CREATE_SECONDS,
        metrics::Unit::Seconds,
        "Time to create a sandbox (successful creations)."
    );
    metrics::describe_counter!(
        EXECS_TOTAL,
        "Finished execs by outcome (spawn_failed, or the exit reason)."
    );
    metrics::describe_histogram!(
        EXEC_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Wall time of execs whose process ran."
    );
    metrics::describe_gauge!(EXECS_RUNNING, "Execs whose process is running.");
}

/// Sets the sandbox gauge of every state from a full listing.
pub fn sandbox_counts(backend: &'static str, sandboxes: &[Sandbox]) {
    for state in ALL_STATES {
        let count = sandboxes.iter().filter(|s| s.state == state).count();
        gauge!(SANDBOXES, "state" => state.as_str(), "backend" => backend).set(count as f64);
    }
}

pub fn sandbox_created(backend: &'static str, took: Duration) {
    histogram!(SANDBOX_CREATE_SECONDS, "backend" => backend).record(took.as_secs_f64());
}

/// The `outcome` label of a terminal state.
pub fn outcome(terminal: &Terminal) -> &'static str {
    match terminal {
        Terminal::SpawnFailed(_) => "spawn_failed",
        Terminal::Exited(exited) => match exited.reason {
            ExitReason::Exited => "exited",
            ExitReason::Timeout => "timeout",
            ExitReason::IdleTimeout => "idle_timeout",
            ExitReason::ClientSignal => "client_signal",
            ExitReason::ClientDisconnected => "client_disconnected",
            ExitReason::OomKilled => "oom_killed",
            ExitReason::SandboxTerminated => "sandbox_terminated",
        },
    }
}

/// Counts a finished exec, and its wall time when it ran.
pub fn exec_finished(backend: &'static str, terminal: &Terminal) {
    counter!(EXECS_TOTAL, "backend" => backend, "outcome" => outcome(terminal)).increment(1);
    if let Terminal::Exited(exited) = terminal {
        histogram!(EXEC_DURATION_SECONDS, "backend" => backend)
            .record(exited.wall_time.as_secs_f64());
    }
}

/// One running process: counted in `cognition_execs_running` from creation until dropped.
#[derive(Debug)]
pub struct RunningExec(());

impl RunningExec {
    pub fn start() -> RunningExec {
        gauge!(EXECS_RUNNING).increment(1.0);
        RunningExec(())
    }
}

impl Drop for RunningExec {
    fn drop(&mut self) {
        gauge!(EXECS_RUNNING).decrement(1.0);
    }
}
