//! One script run in the sandbox: start it through the [`Launcher`], read its answer, learn how it
//! ended. A process that is dropped before it ended is killed.
//!
//! Everything that goes wrong below the script (the launcher refuses, the connection to the
//! sandbox breaks, the process is killed) is an error of the sandbox, never a file error.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::future::BoxFuture;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader, ReadBuf};
use tokio::task::JoinHandle;

use super::Launcher;
use super::script::{Code, PROLOGUE};
use crate::error::Error;
use crate::process::{ProcessExit, ProcessSpec, Reader, Signal, Signaller, SpawnError, Writer};

/// Bytes of a script's stderr kept for error messages.
const MAX_STDERR: u64 = 16 * 1024;

/// How a script ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub code: Code,
    /// What the script said on stderr (at most [`MAX_STDERR`] bytes), trimmed.
    pub stderr: String,
}

/// A running script.
pub struct Command {
    op: &'static str,
    stdin: Option<Writer>,
    stdout: BufReader<Reader>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    exit: Option<BoxFuture<'static, io::Result<ProcessExit>>>,
    signaller: Arc<dyn Signaller>,
}

/// The error for a sandbox that stopped answering in the middle of `op` (or, for
/// `InvalidData`, answered what the scripts never print).
pub fn lost(op: &str, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::InvalidData {
        return Error::Internal(format!("file operation {op}: {e}"));
    }
    Error::Unavailable(format!(
        "the sandbox stopped answering during a file operation ({op}): {e}"
    ))
}

impl Command {
    /// Starts `sh -c PROLOGUE+body sh args...` in the workspace; `op` names the operation in
    /// errors.
    pub async fn start(
        launcher: &dyn Launcher,
        op: &'static str,
        body: &str,
        args: Vec<String>,
        stdin: bool,
    ) -> Result<Self, Error> {
        let mut argv = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            format!("{PROLOGUE}{body}"),
            "sh".to_owned(),
        ];
        argv.extend(args);
        let spec = ProcessSpec {
            argv,
            env: Default::default(),
            cwd: String::new(),
            stdin_pipe: stdin,
            pty: None,
        };
        let process = launcher.spawn(&spec).await.map_err(|e| match e {
            SpawnError::Sandbox(e) => e,
            SpawnError::Failed(f) => Error::Unavailable(format!(
                "the sandbox cannot run the shell that file operations need ({op}): {}",
                f.message
            )),
        })?;
        let mut stderr = process.stderr;
        let stderr = tokio::spawn(async move {
            let mut kept = Vec::new();
            let _ = (&mut stderr).take(MAX_STDERR).read_to_end(&mut kept).await;
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            kept
        });
        Ok(Self {
            op,
            stdin: process.stdin,
            stdout: BufReader::with_capacity(64 * 1024, process.stdout),
            stderr: Some(stderr),
            exit: Some(process.exit),
            signaller: process.signaller,
        })
    }

    /// The script's stdin (once; `None` without a stdin pipe).
    pub fn take_stdin(&mut self) -> Option<Writer> {
        self.stdin.take()
    }

    pub fn stdout(&mut self) -> &mut BufReader<Reader> {
        &mut self.stdout
    }

    /// Reads the `+` a script prints once its checks passed: `false` when stdout ended first
    /// (the script failed; [`Command::finish`] says why).
    pub async fn marker(&mut self) -> Result<bool, Error> {
        let mut byte = [0u8; 1];
        match self.stdout.read(&mut byte).await {
            Ok(0) => Ok(false),
            Ok(_) if byte[0] == b'+' => Ok(true),
            Ok(_) => Err(Error::Internal(format!(
                "file operation {}: the sandbox answered {:?} instead of '+'",
                self.op, byte[0] as char
            ))),
            Err(e) => Err(lost(self.op, e)),
        }
    }

    /// Reads stdout up to `delimiter` (not included), at most `max` bytes.
    pub async fn read_until(&mut self, delimiter: u8, max: u64) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        (&mut self.stdout)
            .take(max)
            .read_until(delimiter, &mut out)
            .await
            .map_err(|e| lost(self.op, e))?;
        if out.last() == Some(&delimiter) {
            out.pop();
        }
        Ok(out)
    }

    /// Reads the rest of stdout, at most `max` bytes (more is an error).
    pub async fn read_to_end(&mut self, max: u64) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        (&mut self.stdout)
            .take(max + 1)
            .read_to_end(&mut out)
            .await
            .map_err(|e| lost(self.op, e))?;
        if out.len() as u64 > max {
            return Err(Error::Internal(format!(
                "file operation {}: the sandbox sent more than the {max} bytes expected",
                self.op
            )));
        }
        Ok(out)
    }

    /// Closes stdin, drains stdout and waits for the script to end.
    pub async fn finish(mut self) -> Result<Outcome, Error> {
        self.stdin = None;
        tokio::io::copy(&mut self.stdout, &mut tokio::io::sink())
            .await
            .map_err(|e| lost(self.op, e))?;
        let exit = self.exit.take().expect("a command finishes once");
        let exit = exit.await.map_err(|e| lost(self.op, e))?;
        let stderr = match self.stderr.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(outcome(exit, &stderr))
    }

    /// Stops the script (it is killed when dropped before it ended).
    pub fn abandon(self) {}
}

fn outcome(exit: ProcessExit, stderr: &[u8]) -> Outcome {
    let code = match exit {
        ProcessExit::Code(n) => Code::from_exit(n),
        ProcessExit::Signal(s) => Code::Other(128 + s),
    };
    Outcome {
        code,
        stderr: String::from_utf8_lossy(stderr).trim().to_owned(),
    }
}

impl Drop for Command {
    fn drop(&mut self) {
        if self.exit.is_some() {
            let _ = self.signaller.signal(Signal::Kill, false);
        }
    }
}

/// A script's stdout as a stream that fails, at its end, when the script did not succeed (a
/// download cut short must not look complete).
pub struct Streamed {
    cmd: Command,
    name: String,
    exit: Option<ProcessExit>,
    done: bool,
}

impl Streamed {
    /// `name` is the file being streamed, for errors.
    pub fn new(cmd: Command, name: String) -> Self {
        Self {
            cmd,
            name,
            exit: None,
            done: false,
        }
    }
}

impl AsyncRead for Streamed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Ok(()));
        }
        if this.exit.is_none() {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.cmd.stdout).poll_read(cx, buf))?;
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            let Some(exit) = this.cmd.exit.as_mut() else {
                this.done = true;
                return Poll::Ready(Ok(()));
            };
            let exit = ready!(exit.as_mut().poll(cx));
            this.cmd.exit = None;
            this.exit = Some(exit?);
        }
        let exit = this.exit.expect("set above");
        if exit == ProcessExit::Code(0) {
            this.done = true;
            return Poll::Ready(Ok(()));
        }
        let stderr = match this.cmd.stderr.as_mut() {
            Some(task) => ready!(Pin::new(task).poll(cx)).unwrap_or_default(),
            None => Vec::new(),
        };
        this.cmd.stderr = None;
        this.done = true;
        let o = outcome(exit, &stderr);
        Poll::Ready(Err(io::Error::other(format!(
            "reading {} in the sandbox failed ({:?}): {}",
            this.name, o.code, o.stderr
        ))))
    }
}
