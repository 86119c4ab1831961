//! Wire ↔ domain conversions. Bad wire input becomes [`Error::Invalid`] (`INVALID_ARGUMENT`);
//! problems with the *program* (empty argv, NUL bytes, `pty`) are left to the engine, which
//! reports them as `spawn_failed`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cognition_proto::executor::v1 as pb;

use crate::error::Error;
use crate::exec::{
    Command, DisconnectPolicy, Exec, ExecEvent, ExecSnapshot, ExecSpec, ExecState, ExitReason,
    Limits, OutputPolicy, PtySize, StartExec, StdinMode, StreamKind, Terminal,
};
use crate::files::FileEntry;
use crate::ids::{ExecId, SandboxId};
use crate::process::{ProcessExit, Signal, SpawnFailed, SpawnFailure};
use crate::sandbox::{Labels, Resources, Sandbox, SandboxSpec, SandboxState, validate_labels};

pub fn sandbox_id(raw: &str) -> Result<SandboxId, Error> {
    if raw.is_empty() {
        return Err(Error::Invalid("sandbox_id is required".into()));
    }
    SandboxId::parse(raw).map_err(Error::Invalid)
}

pub fn exec_id(raw: &str) -> Result<ExecId, Error> {
    if raw.is_empty() {
        return Err(Error::Invalid("exec_id is required".into()));
    }
    ExecId::parse(raw).map_err(Error::Invalid)
}

pub fn labels(map: std::collections::HashMap<String, String>) -> Result<Labels, Error> {
    let labels: Labels = map.into_iter().collect();
    validate_labels(&labels).map_err(Error::Invalid)?;
    Ok(labels)
}

fn ttl(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    cognition_proto::timestamp(t.timestamp(), t.timestamp_subsec_nanos())
}

/// `CreateSandboxRequest` → spec, with the id generated when empty and the TTL resolved.
pub fn create_sandbox(
    req: pb::CreateSandboxRequest,
    resolve_ttl: impl FnOnce(Option<Duration>) -> Result<Duration, Error>,
) -> Result<SandboxSpec, Error> {
    let id = if req.sandbox_id.is_empty() {
        SandboxId::generate()
    } else {
        sandbox_id(&req.sandbox_id)?
    };
    let resources = req
        .resources
        .map_or_else(Resources::default, |r| Resources {
            memory_bytes: r.memory_bytes,
            cpu_millis: r.cpu_millis,
            pids: r.pids,
        });
    Ok(SandboxSpec {
        id,
        labels: labels(req.labels)?,
        template: req.template,
        resources,
        ttl: resolve_ttl(ttl(req.ttl_seconds))?,
    })
}

pub fn renew_ttl(seconds: u64) -> Option<Duration> {
    ttl(seconds)
}

fn state(s: SandboxState) -> pb::SandboxState {
    match s {
        SandboxState::Pending => pb::SandboxState::Pending,
        SandboxState::Ready => pb::SandboxState::Ready,
        SandboxState::Terminating => pb::SandboxState::Terminating,
        SandboxState::Terminated => pb::SandboxState::Terminated,
        SandboxState::Failed => pb::SandboxState::Failed,
    }
}

pub fn sandbox(s: Sandbox) -> pb::Sandbox {
    pb::Sandbox {
        id: s.id.to_string(),
        state: state(s.state) as i32,
        labels: s.labels.into_iter().collect(),
        backend: s.backend,
        template: s.template,
        resources: Some(pb::Resources {
            memory_bytes: s.resources.memory_bytes,
            cpu_millis: s.resources.cpu_millis,
            pids: s.resources.pids,
        }),
        created_at: Some(timestamp(s.created_at)),
        expires_at: Some(timestamp(s.expires_at)),
        workdir: s.workdir,
    }
}

fn millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// `ExecStart` → domain request.
pub fn start_exec(start: pb::ExecStart) -> Result<StartExec, Error> {
    let sandbox_id = sandbox_id(&start.sandbox_id)?;
    let exec_id = if start.exec_id.is_empty() {
        None
    } else {
        Some(exec_id(&start.exec_id)?)
    };
    let command = match start.command {
        Some(pb::exec_start::Command::Argv(a)) => Command::Argv(a.args),
        Some(pb::exec_start::Command::Shell(s)) => Command::Shell(s),
        None => Command::Missing,
    };
    let stdin = match pb::StdinMode::try_from(start.stdin) {
        Ok(pb::StdinMode::Unspecified | pb::StdinMode::Null) => StdinMode::Null,
        Ok(pb::StdinMode::Pipe) => StdinMode::Pipe,
        Err(_) => {
            return Err(Error::Invalid(format!(
                "unknown stdin mode {}",
                start.stdin
            )));
        }
    };
    let on_disconnect = match pb::DisconnectPolicy::try_from(start.on_disconnect) {
        Ok(pb::DisconnectPolicy::Unspecified | pb::DisconnectPolicy::Kill) => {
            DisconnectPolicy::Kill
        }
        Ok(pb::DisconnectPolicy::Detach) => DisconnectPolicy::Detach,
        Err(_) => {
            return Err(Error::Invalid(format!(
                "unknown disconnect policy {}",
                start.on_disconnect
            )));
        }
    };
    let limits = start.limits.map_or_else(Limits::default, |l| Limits {
        timeout: millis(l.timeout_ms),
        kill_grace: millis(l.kill_grace_ms),
        idle_timeout: millis(l.idle_timeout_ms),
        idle_notice: millis(l.idle_notice_ms),
    });
    let output = start
        .output
        .map_or_else(OutputPolicy::default, |o| OutputPolicy {
            max_bytes_per_stream: (o.max_bytes_per_stream > 0).then_some(o.max_bytes_per_stream),
            head_bytes: (o.head_bytes > 0).then_some(o.head_bytes),
        });
    let env: BTreeMap<String, String> = start.env.into_iter().collect();
    Ok(StartExec {
        sandbox_id,
        exec_id,
        spec: ExecSpec {
            command,
            env,
            cwd: start.cwd,
            stdin,
            pty: start.pty.map(|p| PtySize {
                rows: p.rows,
                cols: p.cols,
            }),
            limits,
            output,
            on_disconnect,
            labels: labels(start.labels)?,
        },
    })
}

pub fn signal(raw: i32) -> Result<Signal, Error> {
    Ok(match pb::Signal::try_from(raw) {
        Ok(pb::Signal::Int) => Signal::Int,
        Ok(pb::Signal::Term) => Signal::Term,
        Ok(pb::Signal::Kill) => Signal::Kill,
        Ok(pb::Signal::Hup) => Signal::Hup,
        Ok(pb::Signal::Quit) => Signal::Quit,
        Ok(pb::Signal::Usr1) => Signal::Usr1,
        Ok(pb::Signal::Usr2) => Signal::Usr2,
        Ok(pb::Signal::Unspecified) | Err(_) => {
            return Err(Error::Invalid(format!("unknown signal {raw}")));
        }
    })
}

/// The wire stream of an engine stream: a PTY exec's output is the engine's stdout, reported as
/// the `pty` stream.
fn stream(s: StreamKind, pty: bool) -> i32 {
    match s {
        StreamKind::Stdout if pty => pb::OutputStream::Pty as i32,
        StreamKind::Stdout => pb::OutputStream::Stdout as i32,
        StreamKind::Stderr => pb::OutputStream::Stderr as i32,
    }
}

/// Attach offsets as the engine's `[stdout, stderr]`: a PTY exec resumes from `pty_offset`.
pub fn attach_offsets(a: &pb::ExecAttach, pty: bool) -> [u64; 2] {
    if pty {
        [a.pty_offset, 0]
    } else {
        [a.stdout_offset, a.stderr_offset]
    }
}

fn spawn_failure(f: &SpawnFailed) -> pb::SpawnFailed {
    let reason = match f.reason {
        SpawnFailure::NotFound => pb::SpawnFailure::NotFound,
        SpawnFailure::PermissionDenied => pb::SpawnFailure::PermissionDenied,
        SpawnFailure::BadCwd => pb::SpawnFailure::BadCwd,
        SpawnFailure::InvalidArgument => pb::SpawnFailure::InvalidArgument,
        SpawnFailure::ResourceLimit => pb::SpawnFailure::ResourceLimit,
        SpawnFailure::Other => pb::SpawnFailure::Other,
    };
    pb::SpawnFailed {
        reason: reason as i32,
        message: f.message.clone(),
    }
}

fn exit_reason(r: ExitReason) -> pb::ExitReason {
    match r {
        ExitReason::Exited => pb::ExitReason::Exited,
        ExitReason::Timeout => pb::ExitReason::Timeout,
        ExitReason::IdleTimeout => pb::ExitReason::IdleTimeout,
        ExitReason::ClientSignal => pb::ExitReason::ClientSignal,
        ExitReason::ClientDisconnected => pb::ExitReason::ClientDisconnected,
        ExitReason::OomKilled => pb::ExitReason::OomKilled,
        ExitReason::SandboxTerminated => pb::ExitReason::SandboxTerminated,
    }
}

fn exited(e: &crate::exec::Exited) -> pb::ExecExited {
    let (exit_code, signal) = match e.exit {
        Some(ProcessExit::Code(c)) => (Some(c), None),
        Some(ProcessExit::Signal(s)) => (None, Some(s)),
        None => (None, None),
    };
    pb::ExecExited {
        exit_code,
        signal,
        reason: exit_reason(e.reason) as i32,
        wall_time_ms: e.wall_time.as_millis() as u64,
        stdout_bytes: e.stdout_bytes,
        stderr_bytes: e.stderr_bytes,
        stdout_truncated: e.stdout_truncated,
        stderr_truncated: e.stderr_truncated,
    }
}

/// One reader event as the wire message.
pub fn event(ev: ExecEvent, exec: &Exec) -> pb::ExecResponse {
    use pb::exec_response::Msg;
    let exec_id = exec.id();
    let pty = exec.spec().pty.is_some();
    let msg = match ev {
        ExecEvent::Started { pid, attached } => Msg::Started(pb::ExecStarted {
            exec_id: exec_id.to_string(),
            pid,
            attached,
        }),
        ExecEvent::Output(c) => Msg::Output(pb::ExecOutput {
            stream: stream(c.stream, pty),
            data: c.data.to_vec(),
            offset: c.offset,
            seq: c.seq,
        }),
        ExecEvent::Gap {
            stream: s,
            offset,
            length,
        } => Msg::Gap(pb::OutputGap {
            stream: stream(s, pty),
            offset,
            length,
            reason: pb::GapReason::Truncated as i32,
        }),
        ExecEvent::Idle { silent } => Msg::Idle(pb::IdleNotice {
            silent_ms: silent.as_millis() as u64,
        }),
        ExecEvent::Finished(Terminal::SpawnFailed(f)) => Msg::SpawnFailed(spawn_failure(&f)),
        ExecEvent::Finished(Terminal::Exited(e)) => Msg::Exited(exited(&e)),
    };
    pb::ExecResponse { msg: Some(msg) }
}

pub fn keepalive() -> pb::ExecResponse {
    pb::ExecResponse {
        msg: Some(pb::exec_response::Msg::Keepalive(pb::Keepalive {})),
    }
}

pub fn exec_info(s: ExecSnapshot) -> pb::ExecInfo {
    let state = match s.state {
        ExecState::Starting | ExecState::Running => pb::ExecState::Running,
        ExecState::Exited => pb::ExecState::Exited,
        ExecState::SpawnFailed => pb::ExecState::SpawnFailed,
    };
    let (exited_msg, spawn_failed) = match &s.terminal {
        Some(Terminal::Exited(e)) => (Some(exited(e)), None),
        Some(Terminal::SpawnFailed(f)) => (None, Some(spawn_failure(f))),
        None => (None, None),
    };
    pb::ExecInfo {
        sandbox_id: s.sandbox_id.to_string(),
        exec_id: s.exec_id.to_string(),
        state: state as i32,
        pid: s.pid.unwrap_or(0),
        labels: s.labels.into_iter().collect(),
        started_at: Some(timestamp(s.started_at)),
        exited: exited_msg,
        spawn_failed,
    }
}

pub fn file_info(e: FileEntry) -> pb::FileInfo {
    pb::FileInfo {
        path: e.path,
        is_dir: e.is_dir,
        size: e.size,
        modified_at: e.modified.map(timestamp),
    }
}
