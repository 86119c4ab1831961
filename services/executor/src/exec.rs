//! The exec engine: processes in sandboxes, independent of the backend that starts them.
//!
//! * [`spec`]: what a client asks to run and how it ended (domain types).
//! * [`output`]: the bounded per-exec output log (head + tail, gaps, replay by offset).
//! * [`handle`]: [`Exec`], the shared state of one exec.
//! * [`subscription`]: one reader of an exec (live and replayed events).
//! * [`supervisor`]: the task that reads pipes, reaps and enforces limits.
//! * [`registry`]: the execs of one sandbox, keyed by client-chosen id (idempotent start).

pub mod handle;
pub mod output;
pub mod registry;
pub mod spec;
pub mod subscription;
pub mod supervisor;

pub use handle::{Exec, ExecSnapshot, ExecState, StdinError};
pub use output::Chunk;
pub use registry::{Begin, ExecRegistry};
pub use spec::{
    Command, DisconnectPolicy, ExecSpec, ExitReason, Exited, Limits, OutputPolicy, PtySize,
    StartExec, StdinMode, StreamKind, Terminal,
};
pub use subscription::{ExecEvent, Subscription};
pub use supervisor::Settings;
