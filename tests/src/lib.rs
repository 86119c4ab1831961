//! End-to-end helpers shared by the workspace-level tests in `tests/tests/` and the benchmark
//! program `cognition-bench`: spawning the service binaries as separate processes and driving
//! an `Exec` stream to completion; the benchmark's measures themselves live in [`bench`].
//! For observability: a turn with a tool call ([`tool_turn`]), a real Prometheus server
//! ([`prometheus`]) and the Grafana dashboards' checks ([`dashboards`]).

pub mod bench;
pub mod dashboards;
pub mod exec;
pub mod procs;
pub mod prometheus;
pub mod tool_turn;
