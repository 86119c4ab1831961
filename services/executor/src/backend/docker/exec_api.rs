//! Processes through the Docker exec API: the fallback for sandbox images without the agent.
//!
//! The Docker exec API cannot signal a running exec, and the pid that `inspect_exec` reports is a
//! host pid. So every exec runs a small `sh` wrapper that checks the program (typed spawn
//! failures), reports its in-container pid on the first stderr line (a line the backend strips)
//! and `exec`s the program: runc starts each exec in a new session, so that pid is also the
//! process group id. Signals are a second exec, `kill -<sig> -<pgid>`, as the sandbox user. Exit
//! codes come from `inspect_exec` once the output stream ends; Docker reports a signal death as
//! `128 + n`, which is read as signal `n` only when the backend sent `n`. Each process costs
//! 45–66 ms of Docker API calls; there is no PTY on this path.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{docker_error, status_code};
use crate::error::Error;
use crate::ids::SandboxId;
use crate::process::{
    ProcessExit, ProcessSpec, Signal, Signaller, SpawnError, SpawnFailed, SpawnFailure,
    SpawnedProcess,
};
use crate::sandbox::SandboxState;

/// Prefix of the wrapper's report line on stderr.
const MARKER: &str = "@@cognition-exec@@ ";
/// Bytes buffered per output pipe between the Docker stream and the engine.
const PIPE_BUFFER: usize = 256 * 1024;

/// The exec wrapper: `sh -c WRAPPER cognition-exec <argv…>`. Reports a missing or non-executable
/// program, else its pid (= process group, runc starts execs in a new session), then execs it.
const WRAPPER: &str = r#"p="$1"
case "$p" in
*/*)
  if [ ! -e "$p" ]; then echo "@@cognition-exec@@ notfound" >&2; exit 127; fi
  if [ -d "$p" ] || [ ! -x "$p" ]; then echo "@@cognition-exec@@ permission" >&2; exit 126; fi ;;
*)
  if ! command -v "$p" >/dev/null 2>&1; then echo "@@cognition-exec@@ notfound" >&2; exit 127; fi ;;
esac
echo "@@cognition-exec@@ pid $$" >&2
exec "$@""#;

/// Starts `spec` in `container` through the Docker exec API.
pub(super) async fn spawn(
    docker: &Docker,
    id: &SandboxId,
    container: &str,
    user: &str,
    spec: &ProcessSpec,
    container_cwd: String,
) -> Result<SpawnedProcess, SpawnError> {
    if spec.pty.is_some() {
        return Err(SpawnFailed::new(
            SpawnFailure::InvalidArgument,
            "a pty needs the sandbox agent: use an image labelled cognition.io/agent \
             (compose/sandbox/build.sh builds one)",
        )
        .into());
    }
    let mut cmd = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        WRAPPER.to_owned(),
        "cognition-exec".to_owned(),
    ];
    cmd.extend(spec.argv.iter().cloned());
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                attach_stdin: Some(spec.stdin_pipe),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                cmd: Some(cmd),
                user: Some(user.to_owned()),
                working_dir: Some(container_cwd),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| match status_code(&e) {
            Some(404) => Error::SandboxNotFound(id.clone()),
            Some(409) => Error::SandboxNotReady {
                id: id.clone(),
                state: SandboxState::Failed,
            },
            _ => docker_error(format!("creating an exec in {id}"), e),
        })?;
    let exec_id = created.id;
    let started = docker
        .start_exec(
            &exec_id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: Some(64 * 1024),
            }),
        )
        .await
        .map_err(|e| docker_error(format!("starting an exec in {id}"), e))?;
    let StartExecResults::Attached { mut output, input } = started else {
        return Err(Error::Internal("docker started the exec detached".into()).into());
    };

    // The wrapper's report: the first stderr line.
    let mut early_out: Vec<Bytes> = Vec::new();
    let mut err_buf = BytesMut::new();
    let header = loop {
        match output.next().await {
            Some(Ok(LogOutput::StdErr { message })) => {
                err_buf.extend_from_slice(&message);
                if let Some(pos) = err_buf.iter().position(|b| *b == b'\n') {
                    let line = err_buf.split_to(pos + 1);
                    break Some(String::from_utf8_lossy(&line[..pos]).into_owned());
                }
            }
            Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                early_out.push(message);
            }
            Some(Ok(LogOutput::StdIn { .. })) => {}
            Some(Err(e)) => {
                return Err(docker_error(format!("reading an exec in {id}"), e).into());
            }
            None => break None,
        }
    };
    let report = header.as_deref().and_then(|h| h.strip_prefix(MARKER));
    let pid = match report {
        Some("notfound") => {
            return Err(SpawnFailed::new(
                SpawnFailure::NotFound,
                format!("{}: command not found", spec.argv[0]),
            )
            .into());
        }
        Some("permission") => {
            return Err(SpawnFailed::new(
                SpawnFailure::PermissionDenied,
                format!("{}: permission denied (not executable?)", spec.argv[0]),
            )
            .into());
        }
        Some(r) => r
            .strip_prefix("pid ")
            .and_then(|p| p.trim().parse::<u32>().ok()),
        None => None,
    };
    let Some(pid) = pid else {
        let mut text = String::new();
        for chunk in &early_out {
            text.push_str(&String::from_utf8_lossy(chunk));
        }
        if let Some(h) = &header {
            text.push_str(h);
        }
        text.push_str(&String::from_utf8_lossy(&err_buf));
        return Err(SpawnFailed::new(
            SpawnFailure::Other,
            format!("the exec did not start: {}", text.trim()),
        )
        .into());
    };

    let (stdout_w, stdout_r) = tokio::io::duplex(PIPE_BUFFER);
    let (stderr_w, stderr_r) = tokio::io::duplex(PIPE_BUFFER);
    let finished = Arc::new(AtomicBool::new(false));
    let last_signal = Arc::new(AtomicI32::new(0));
    let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
    let docker_client = docker.clone();
    let pump_finished = finished.clone();
    let pump_signal = last_signal.clone();
    let pump_exec = exec_id.clone();
    let leftover = err_buf.freeze();
    tokio::spawn(async move {
        let mut out = Some(stdout_w);
        let mut err = Some(stderr_w);
        for chunk in early_out {
            write_or_close(&mut out, &chunk).await;
        }
        if !leftover.is_empty() {
            write_or_close(&mut err, &leftover).await;
        }
        while let Some(item) = output.next().await {
            match item {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    write_or_close(&mut out, &message).await;
                }
                Ok(LogOutput::StdErr { message }) => write_or_close(&mut err, &message).await,
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => {
                    tracing::debug!(exec = %pump_exec, error = %e, "docker exec stream ended with an error");
                    break;
                }
            }
        }
        drop(out);
        drop(err);
        let exit = exit_status(
            &docker_client,
            &pump_exec,
            pump_signal.load(Ordering::Acquire),
        )
        .await;
        pump_finished.store(true, Ordering::Release);
        let _ = exit_tx.send(exit);
    });
    let signaller = Arc::new(DockerSignaller {
        docker: docker.clone(),
        container: container.to_owned(),
        user: user.to_owned(),
        pid,
        finished,
        last_signal,
        runtime: tokio::runtime::Handle::current(),
    });
    let stdin = if spec.stdin_pipe {
        Some(input as crate::process::Writer)
    } else {
        None
    };
    Ok(SpawnedProcess {
        pid,
        stdin,
        stdout: Box::pin(stdout_r),
        stderr: Box::pin(stderr_r),
        exit: Box::pin(async move {
            exit_rx
                .await
                .map_err(|_| io::Error::other("the docker exec task ended without a status"))?
        }),
        signaller,
    })
}

/// Writes to a pipe; once the reader is gone, stops writing (and keeps draining the stream).
async fn write_or_close(pipe: &mut Option<tokio::io::DuplexStream>, bytes: &[u8]) {
    if let Some(w) = pipe
        && w.write_all(bytes).await.is_err()
    {
        *pipe = None;
    }
}

/// The exit status of a finished exec: polls `inspect_exec` until it stops running. A code of
/// `128 + n` after the backend sent signal `n` is that signal; a vanished container (deleted
/// sandbox) is a SIGKILL.
async fn exit_status(docker: &Docker, exec_id: &str, sent: i32) -> io::Result<ProcessExit> {
    let mut delay = Duration::from_millis(1);
    for _ in 0..200 {
        match docker.inspect_exec(exec_id).await {
            Ok(inspect) if inspect.running != Some(true) => {
                let code = inspect.exit_code.unwrap_or(-1) as i32;
                let sent_now = sent;
                return Ok(if sent_now > 0 && code == 128 + sent_now {
                    ProcessExit::Signal(sent_now)
                } else if code == 137 {
                    // SIGKILL from the kernel (OOM, pids) or the sandbox going away.
                    ProcessExit::Signal(9)
                } else {
                    ProcessExit::Code(code)
                });
            }
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => return Ok(ProcessExit::Signal(9)),
            Err(e) => return Err(io::Error::other(format!("docker: inspecting an exec: {e}"))),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
    Err(io::Error::other(
        "docker: the exec's output ended but it kept running",
    ))
}

/// Attempts to start the `kill` exec of a signal.
const KILL_ATTEMPTS: u32 = 10;

/// Runs `cmd` detached in `container` as `user`.
async fn run_detached(
    docker: &Docker,
    container: &str,
    user: &str,
    cmd: Vec<String>,
) -> Result<(), bollard::errors::Error> {
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(cmd),
                user: Some(user.to_owned()),
                attach_stdout: Some(false),
                attach_stderr: Some(false),
                ..Default::default()
            },
        )
        .await?;
    docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: true,
                ..Default::default()
            }),
        )
        .await
        .map(|_| ())
}

/// Signals an exec's process group by running `kill` in the container (the Docker exec API has
/// no signal call). Delivery is asynchronous: the call returns once the kill is on its way.
struct DockerSignaller {
    docker: Docker,
    container: String,
    user: String,
    pid: u32,
    finished: Arc<AtomicBool>,
    last_signal: Arc<AtomicI32>,
    runtime: tokio::runtime::Handle,
}

impl Signaller for DockerSignaller {
    fn signal(&self, signal: Signal, leader_only: bool) -> io::Result<()> {
        if self.finished.load(Ordering::Acquire) {
            return Ok(()); // the pid may belong to someone else by now
        }
        let number = signal.to_nix() as i32;
        self.last_signal.store(number, Ordering::Release);
        let target = if leader_only {
            self.pid.to_string()
        } else {
            format!("-{}", self.pid)
        };
        let cmd = vec!["kill".to_owned(), format!("-{number}"), target];
        let docker = self.docker.clone();
        let container = self.container.clone();
        let user = self.user.clone();
        let finished = self.finished.clone();
        self.runtime.spawn(async move {
            // A sandbox at its pids limit (a fork bomb) can refuse the kill exec: retry a while.
            let mut delay = Duration::from_millis(20);
            for attempt in 1..=KILL_ATTEMPTS {
                if finished.load(Ordering::Acquire) {
                    return;
                }
                match run_detached(&docker, &container, &user, cmd.clone()).await {
                    Ok(()) => return,
                    Err(e) if matches!(status_code(&e), Some(404 | 409)) => return, // gone
                    Err(e) => {
                        tracing::debug!(container = %container, attempt, error = %e, "signalling a docker exec");
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            tracing::warn!(container = %container, "could not deliver a signal to a docker exec");
        });
        Ok(())
    }
}
