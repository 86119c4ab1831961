//! What a client asks to run (the domain form of `ExecStart`) and how it ended.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ids::{ExecId, SandboxId};
use crate::process::{ProcessExit, ProcessSpec, SpawnFailed, SpawnFailure};

/// The shell used for `shell` commands.
pub const SHELL: &str = "/bin/sh";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Argv(Vec<String>),
    /// Run by `/bin/sh -c`.
    Shell(String),
    /// Neither was given (reported as `spawn_failed INVALID_ARGUMENT`).
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StdinMode {
    #[default]
    Null,
    Pipe,
}

pub use crate::process::PtySize;

/// Limits enforced by the executor; `None` means none (or the default, for `kill_grace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub timeout: Option<Duration>,
    pub kill_grace: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub idle_notice: Option<Duration>,
}

/// Output cap per stream; `None` means the executor's default (head: half).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutputPolicy {
    pub max_bytes_per_stream: Option<u64>,
    pub head_bytes: Option<u64>,
}

impl OutputPolicy {
    /// `(head, tail)` byte budgets per stream, given the executor's default cap.
    pub fn budgets(&self, default_max: u64) -> (u64, u64) {
        let max = self.max_bytes_per_stream.unwrap_or(default_max);
        let head = match self.head_bytes {
            Some(h) => h.min(max),
            None => max / 2,
        };
        (head, max - head)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DisconnectPolicy {
    /// Kill the process group after a grace period without a re-attach.
    #[default]
    Kill,
    /// Keep running.
    Detach,
}

/// The part of a start request that must match for a repeated start to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    pub command: Command,
    pub env: BTreeMap<String, String>,
    pub cwd: String,
    pub stdin: StdinMode,
    pub pty: Option<PtySize>,
    pub limits: Limits,
    pub output: OutputPolicy,
    pub on_disconnect: DisconnectPolicy,
    pub labels: BTreeMap<String, String>,
}

impl ExecSpec {
    /// A plain command with every option at its default (handy for tests and callers).
    pub fn new(command: Command) -> Self {
        Self {
            command,
            env: BTreeMap::new(),
            cwd: String::new(),
            stdin: StdinMode::Null,
            pty: None,
            limits: Limits::default(),
            output: OutputPolicy::default(),
            on_disconnect: DisconnectPolicy::Kill,
            labels: BTreeMap::new(),
        }
    }

    /// What the backend should start, or why nothing can be started.
    pub fn process_spec(&self) -> Result<ProcessSpec, SpawnFailed> {
        let argv = match &self.command {
            Command::Argv(a) => a.clone(),
            Command::Shell(s) => vec![SHELL.to_owned(), "-c".to_owned(), s.clone()],
            Command::Missing => {
                return Err(SpawnFailed::new(
                    SpawnFailure::InvalidArgument,
                    "no command: set argv or shell",
                ));
            }
        };
        let spec = ProcessSpec {
            argv,
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            stdin_pipe: self.stdin == StdinMode::Pipe || self.pty.is_some(),
            pty: self.pty,
        };
        crate::process::validate(&spec)?;
        Ok(spec)
    }
}

/// A start request: which sandbox, which exec id (generated when absent), what to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartExec {
    pub sandbox_id: SandboxId,
    pub exec_id: Option<ExecId>,
    pub spec: ExecSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

impl StreamKind {
    pub const ALL: [StreamKind; 2] = [StreamKind::Stdout, StreamKind::Stderr];

    pub fn index(self) -> usize {
        match self {
            StreamKind::Stdout => 0,
            StreamKind::Stderr => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    Exited,
    Timeout,
    IdleTimeout,
    ClientSignal,
    ClientDisconnected,
    OomKilled,
    SandboxTerminated,
}

/// How an exec that ran ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exited {
    /// `None` when the exit status could not be collected.
    pub exit: Option<ProcessExit>,
    pub reason: ExitReason,
    pub wall_time: Duration,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// The one terminal outcome of an exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminal {
    SpawnFailed(SpawnFailed),
    Exited(Exited),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets() {
        let p = OutputPolicy::default();
        assert_eq!(p.budgets(100), (50, 50));
        let p = OutputPolicy {
            max_bytes_per_stream: Some(100),
            head_bytes: Some(40),
        };
        assert_eq!(p.budgets(8), (40, 60));
        let p = OutputPolicy {
            max_bytes_per_stream: Some(10),
            head_bytes: Some(40),
        };
        assert_eq!(p.budgets(8), (10, 0));
    }

    #[test]
    fn process_specs() {
        let s = ExecSpec::new(Command::Shell("echo hi".into()));
        assert_eq!(
            s.process_spec().unwrap().argv,
            vec!["/bin/sh", "-c", "echo hi"]
        );
        let mut s = ExecSpec::new(Command::Argv(vec!["top".into()]));
        s.pty = Some(PtySize { rows: 24, cols: 80 });
        let p = s.process_spec().unwrap();
        assert_eq!(p.pty, Some(PtySize { rows: 24, cols: 80 }));
        assert!(p.stdin_pipe, "a pty's stdin is the terminal");
        s.pty = Some(PtySize { rows: 0, cols: 80 });
        assert_eq!(
            s.process_spec().unwrap_err().reason,
            SpawnFailure::InvalidArgument
        );
        assert_eq!(
            ExecSpec::new(Command::Missing)
                .process_spec()
                .unwrap_err()
                .reason,
            SpawnFailure::InvalidArgument
        );
        assert_eq!(
            ExecSpec::new(Command::Argv(vec![]))
                .process_spec()
                .unwrap_err()
                .reason,
            SpawnFailure::InvalidArgument
        );
    }
}
