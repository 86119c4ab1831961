//! End-to-end helpers shared by the workspace-level tests in `tests/tests/` and the benchmark
//! program `cognition-bench`: spawning the service binaries as separate processes and driving
//! an `Exec` stream to completion; the benchmark's measures themselves live in [`bench`].

pub mod bench;
pub mod exec;
pub mod procs;
