//! The supervisor: one task per running process that reads its pipes, reaps it and enforces
//! the limits (timeout, idle timeout and notice, disconnect grace, kill escalation).
//!
//! A single `select!` loop drives everything, so an exec costs one task (plus a stdin writer when
//! stdin is a pipe) and no polling: the loop sleeps until output, exit, a wake-up (kill request,
//! reader change) or the nearest deadline.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::handle::Exec;
use super::spec::{ExitReason, Exited, StreamKind, Terminal};
use crate::process::{ProcessExit, Signal, SpawnedProcess};

/// Bytes read from a pipe at once.
const READ_CHUNK: usize = 64 * 1024;

/// Executor-wide settings the supervisor needs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Default grace between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// How long to wait for the pipes to close after the process exited.
    pub drain: Duration,
    /// How long an abandoned exec (KILL policy) waits for a re-attach.
    pub disconnect_grace: Duration,
}

/// Supervises `process` until it has exited and its output is drained, then records the
/// terminal state on `exec`.
pub async fn supervise(exec: Arc<Exec>, process: SpawnedProcess, settings: Settings) {
    let SpawnedProcess {
        pid,
        stdin: _,
        mut stdout,
        mut stderr,
        exit,
        signaller,
    } = process;
    let limits = exec.spec().limits;
    let kill_grace = limits.kill_grace.unwrap_or(settings.kill_grace);
    let started = Instant::now();
    let timeout_at = limits.timeout.map(|t| started + t);

    let mut out_buf = vec![0u8; READ_CHUNK];
    let mut err_buf = vec![0u8; READ_CHUNK];
    let (mut out_open, mut err_open) = (true, true);
    let mut exit = exit;
    let mut status: Option<io::Result<ProcessExit>> = None;
    let mut wall_time = Duration::ZERO;
    let mut kill_reason: Option<ExitReason> = None;
    let mut escalate_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;
    let mut orphan_at: Option<Instant> = None;
    let mut last_output = started;
    let mut idle_noticed = false;

    let sleep = tokio::time::sleep_until(started);
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;

    let kill = |reason: ExitReason,
                kill_reason: &mut Option<ExitReason>,
                escalate_at: &mut Option<Instant>| {
        if kill_reason.is_some() {
            return;
        }
        *kill_reason = Some(reason);
        tracing::info!(exec_id = %exec.id(), pid, ?reason, "killing process group");
        let immediate = reason == ExitReason::SandboxTerminated || kill_grace.is_zero();
        let sig = if immediate {
            Signal::Kill
        } else {
            Signal::Term
        };
        if let Err(e) = signaller.signal(sig, false) {
            tracing::warn!(exec_id = %exec.id(), pid, error = %e, "signalling process group");
        }
        *escalate_at = (!immediate).then(|| Instant::now() + kill_grace);
    };

    loop {
        if status.is_some() && !out_open && !err_open {
            break;
        }
        let now = Instant::now();
        if drain_until.is_some_and(|d| now >= d) {
            tracing::debug!(exec_id = %exec.id(), pid, "output pipes still open after exit; not waiting longer");
            break;
        }
        if status.is_none() {
            if timeout_at.is_some_and(|t| now >= t) {
                kill(ExitReason::Timeout, &mut kill_reason, &mut escalate_at);
            }
            if limits.idle_timeout.is_some_and(|i| now >= last_output + i) {
                kill(ExitReason::IdleTimeout, &mut kill_reason, &mut escalate_at);
            }
            if orphan_at.is_some_and(|o| now >= o) {
                kill(
                    ExitReason::ClientDisconnected,
                    &mut kill_reason,
                    &mut escalate_at,
                );
            }
            if let Some(n) = limits.idle_notice
                && !idle_noticed
                && now >= last_output + n
            {
                idle_noticed = true;
                exec.publish_idle(now - last_output);
            }
        }
        if escalate_at.is_some_and(|e| now >= e) {
            escalate_at = None;
            let _ = signaller.signal(Signal::Kill, false);
        }

        let mut next: Option<Instant> = None;
        let mut consider = |d: Option<Instant>| {
            if let Some(d) = d {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        };
        if status.is_none() {
            if kill_reason.is_none() {
                consider(timeout_at);
                consider(limits.idle_timeout.map(|i| last_output + i));
                consider(orphan_at);
            }
            if !idle_noticed {
                consider(limits.idle_notice.map(|n| last_output + n));
            }
        }
        consider(escalate_at);
        consider(drain_until);
        if next != armed {
            if let Some(n) = next {
                sleep.as_mut().reset(n);
            }
            armed = next;
        }

        tokio::select! {
            biased;
            r = stdout.read(&mut out_buf), if out_open => match r {
                Ok(n) if n > 0 => {
                    exec.append(StreamKind::Stdout, Bytes::copy_from_slice(&out_buf[..n]));
                    last_output = Instant::now();
                    idle_noticed = false;
                }
                _ => {
                    out_open = false;
                    exec.close_stream(StreamKind::Stdout);
                }
            },
            r = stderr.read(&mut err_buf), if err_open => match r {
                Ok(n) if n > 0 => {
                    exec.append(StreamKind::Stderr, Bytes::copy_from_slice(&err_buf[..n]));
                    last_output = Instant::now();
                    idle_noticed = false;
                }
                _ => {
                    err_open = false;
                    exec.close_stream(StreamKind::Stderr);
                }
            },
            st = &mut exit, if status.is_none() => {
                wall_time = started.elapsed();
                status = Some(st);
                drain_until = Some(Instant::now() + settings.drain);
                if kill_reason.is_some() {
                    // Stragglers of a killed group must not hold the pipes open.
                    escalate_at = None;
                    let _ = signaller.signal(Signal::Kill, false);
                }
            },
            _ = exec.wake.notified() => {
                if let Some(reason) = exec.take_kill_request() && status.is_none() {
                    kill(reason, &mut kill_reason, &mut escalate_at);
                }
                if exec.is_abandoned() {
                    if orphan_at.is_none() {
                        tracing::info!(exec_id = %exec.id(), pid, grace = ?settings.disconnect_grace, "client disconnected; waiting for a re-attach");
                        orphan_at = Some(Instant::now() + settings.disconnect_grace);
                    }
                } else {
                    orphan_at = None;
                }
            },
            _ = &mut sleep, if armed.is_some() => {
                armed = None;
            },
        }
    }

    let exit = match status {
        Some(Ok(exit)) => Some(exit),
        Some(Err(e)) => {
            tracing::warn!(exec_id = %exec.id(), pid, error = %e, "collecting the exit status");
            None
        }
        None => None,
    };
    let reason = match (kill_reason, exit) {
        (Some(reason), _) => reason,
        (None, Some(ProcessExit::Signal(_))) if exec.client_signalled() => ExitReason::ClientSignal,
        _ => ExitReason::Exited,
    };
    tracing::debug!(exec_id = %exec.id(), pid, ?exit, ?reason, "exec finished");
    // The stdin writer must not hold the pipe until the exec is forgotten.
    exec.close_stdin().await;
    exec.finish(|log| {
        Terminal::Exited(Exited {
            exit,
            reason,
            wall_time,
            stdout_bytes: log.total(StreamKind::Stdout),
            stderr_bytes: log.total(StreamKind::Stderr),
            stdout_truncated: log.truncated(StreamKind::Stdout),
            stderr_truncated: log.truncated(StreamKind::Stderr),
        })
    });
}
