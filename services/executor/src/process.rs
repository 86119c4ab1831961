//! Process-level types shared by the exec engine and the backends: what to spawn, the running
//! process a backend hands back, signals, exits and typed spawn failures.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::Error;

/// The command a backend starts, already validated by the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// Program and arguments; non-empty, no NUL bytes.
    pub argv: Vec<String>,
    /// Client variables, applied over the backend's minimal base environment.
    pub env: BTreeMap<String, String>,
    /// Working directory as the client gave it (relative to the workdir, or absolute inside it).
    pub cwd: String,
    /// Whether stdin is a pipe (else `/dev/null`). Always true with a PTY (the terminal).
    pub stdin_pipe: bool,
    /// Run on a new pseudo-terminal of this size: the process leads a new session with the
    /// terminal as its controlling terminal; its output arrives on `stdout` (the engine reports
    /// it as the `pty` stream) and `stderr` ends at once.
    pub pty: Option<PtySize>,
}

/// A terminal size in character cells (each within 1..=65535).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtySize {
    pub rows: u32,
    pub cols: u32,
}

impl PtySize {
    /// The size as the agent's protocol carries it, or `None` when out of range.
    pub fn to_window(self) -> Option<cognition_sandbox_agent::protocol::WindowSize> {
        let rows = u16::try_from(self.rows).ok().filter(|r| *r > 0)?;
        let cols = u16::try_from(self.cols).ok().filter(|c| *c > 0)?;
        Some(cognition_sandbox_agent::protocol::WindowSize { rows, cols })
    }
}

/// Boxed async reader / writer of a process's pipes.
pub type Reader = Pin<Box<dyn AsyncRead + Send>>;
pub type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// A running process, as a backend hands it to the engine.
pub struct SpawnedProcess {
    pub pid: u32,
    pub stdin: Option<Writer>,
    pub stdout: Reader,
    pub stderr: Reader,
    /// Resolves when the process has exited (and was reaped).
    pub exit: BoxFuture<'static, io::Result<ProcessExit>>,
    /// Sends signals to the process or its group; usable while `exit` is pending.
    pub signaller: Arc<dyn Signaller>,
}

impl fmt::Debug for SpawnedProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnedProcess")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// Delivers signals to a process started by a backend.
pub trait Signaller: Send + Sync {
    /// Signals the whole process group (`leader_only = false`) or only the leader. Signalling a
    /// process that is already gone is not an error.
    fn signal(&self, signal: Signal, leader_only: bool) -> io::Result<()>;

    /// Resizes the process's terminal; processes without a PTY refuse.
    fn resize(&self, _size: PtySize) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the process has no pty",
        ))
    }
}

/// The signals clients may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Int,
    Term,
    Kill,
    Hup,
    Quit,
    Usr1,
    Usr2,
}

impl Signal {
    pub fn to_nix(self) -> nix::sys::signal::Signal {
        use nix::sys::signal::Signal as S;
        match self {
            Signal::Int => S::SIGINT,
            Signal::Term => S::SIGTERM,
            Signal::Kill => S::SIGKILL,
            Signal::Hup => S::SIGHUP,
            Signal::Quit => S::SIGQUIT,
            Signal::Usr1 => S::SIGUSR1,
            Signal::Usr2 => S::SIGUSR2,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessExit {
    Code(i32),
    Signal(i32),
}

impl From<std::process::ExitStatus> for ProcessExit {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ProcessExit::Code(code),
            (None, Some(sig)) => ProcessExit::Signal(sig),
            (None, None) => ProcessExit::Code(-1),
        }
    }
}

/// Why a process could not be started (a result for the client, not a gRPC error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnFailure {
    NotFound,
    PermissionDenied,
    BadCwd,
    InvalidArgument,
    ResourceLimit,
    Other,
}

/// A failed spawn: the typed reason and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnFailed {
    pub reason: SpawnFailure,
    pub message: String,
}

impl SpawnFailed {
    pub fn new(reason: SpawnFailure, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// Classifies the error of a failed `spawn` call.
    pub fn from_io(program: &str, e: &io::Error) -> Self {
        let reason = match e.kind() {
            io::ErrorKind::NotFound => SpawnFailure::NotFound,
            io::ErrorKind::PermissionDenied => SpawnFailure::PermissionDenied,
            io::ErrorKind::InvalidInput => SpawnFailure::InvalidArgument,
            io::ErrorKind::OutOfMemory
            | io::ErrorKind::ArgumentListTooLong
            | io::ErrorKind::WouldBlock => SpawnFailure::ResourceLimit,
            _ => SpawnFailure::Other,
        };
        let message = match reason {
            SpawnFailure::NotFound => format!("{program}: command not found"),
            SpawnFailure::PermissionDenied => {
                format!("{program}: permission denied (not executable?)")
            }
            _ => format!("{program}: {e}"),
        };
        Self { reason, message }
    }
}

/// What `SandboxBackend::spawn` returns when it does not start a process.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The program could not be started: reported to the client as `spawn_failed`.
    #[error("{}", .0.message)]
    Failed(SpawnFailed),
    /// The sandbox itself is the problem (gone, not ready, backend down): a gRPC status.
    #[error(transparent)]
    Sandbox(#[from] Error),
}

impl From<SpawnFailed> for SpawnError {
    fn from(f: SpawnFailed) -> Self {
        SpawnError::Failed(f)
    }
}

/// Checks what every backend needs before it can start `spec` (NUL bytes, empty argv, env keys).
pub fn validate(spec: &ProcessSpec) -> Result<(), SpawnFailed> {
    let invalid = |m: String| Err(SpawnFailed::new(SpawnFailure::InvalidArgument, m));
    match spec.argv.first() {
        None => return invalid("empty command: argv has no program".into()),
        Some(p) if p.is_empty() => return invalid("empty program name".into()),
        _ => {}
    }
    if spec.argv.iter().any(|a| a.contains('\0')) {
        return invalid("an argument contains a NUL byte".into());
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return invalid(format!("invalid environment variable name {k:?}"));
        }
        if v.contains('\0') {
            return invalid(format!("environment variable {k} contains a NUL byte"));
        }
    }
    if let Some(size) = spec.pty
        && size.to_window().is_none()
    {
        return invalid(format!(
            "pty size {}x{} is out of range (rows and cols must be 1..=65535)",
            size.rows, size.cols
        ));
    }
    if spec.cwd.contains('\0') {
        return Err(SpawnFailed::new(
            SpawnFailure::BadCwd,
            "cwd contains a NUL byte",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str]) -> ProcessSpec {
        ProcessSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            cwd: String::new(),
            stdin_pipe: false,
            pty: None,
        }
    }

    #[test]
    fn validation() {
        assert!(validate(&spec(&["echo", "hi"])).is_ok());
        assert_eq!(
            validate(&spec(&[])).unwrap_err().reason,
            SpawnFailure::InvalidArgument
        );
        assert_eq!(
            validate(&spec(&[""])).unwrap_err().reason,
            SpawnFailure::InvalidArgument
        );
        assert_eq!(
            validate(&spec(&["echo", "a\0b"])).unwrap_err().reason,
            SpawnFailure::InvalidArgument
        );
        let mut p = spec(&["top"]);
        p.pty = Some(PtySize { rows: 0, cols: 80 });
        assert_eq!(
            validate(&p).unwrap_err().reason,
            SpawnFailure::InvalidArgument
        );
        p.pty = Some(PtySize {
            rows: 24,
            cols: 70_000,
        });
        assert!(validate(&p).is_err());
        p.pty = Some(PtySize { rows: 24, cols: 80 });
        assert!(validate(&p).is_ok());
        let mut s = spec(&["env"]);
        s.env.insert("A=B".into(), "x".into());
        assert_eq!(
            validate(&s).unwrap_err().reason,
            SpawnFailure::InvalidArgument
        );
    }

    #[test]
    fn io_errors_are_classified() {
        let nf = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(
            SpawnFailed::from_io("x", &nf).reason,
            SpawnFailure::NotFound
        );
        let pd = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(
            SpawnFailed::from_io("x", &pd).reason,
            SpawnFailure::PermissionDenied
        );
    }
}
