//! The in-sandbox exec agent.
//!
//! A small static binary that runs as a sandbox container's main process (under `docker-init`)
//! and starts processes on the executor's behalf over a Unix socket on a mounted folder. It
//! exists because the Docker exec API costs 45–66 ms per process, cannot signal a process and
//! has no usable process group; the agent spawns in about a millisecond, signals process groups
//! and runs processes on a PTY. It does only what is below a single process — start, pipe,
//! signal, resize, reap; timeouts, output caps, replay and attach stay in the executor's engine,
//! so every backend behaves the same.
//!
//! - [`protocol`]: the frames on the socket (shared with the executor's client).
//! - [`pty`]: pseudo-terminals (shared with the executor's local backend).
//! - [`server`]: the agent itself (one thread: a current-thread Tokio runtime, so the sandbox's
//!   pids limit is left to the code it runs).

pub mod protocol;
pub mod pty;
pub mod server;
