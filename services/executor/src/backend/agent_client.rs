//! The executor's side of the in-sandbox agent (`cognition-sandbox-agent`): one connection per
//! process, turned into the [`SpawnedProcess`] the exec engine supervises. The agent listens on
//! a Unix socket (Docker: a mounted folder) or on TCP (a Kubernetes pod), where the first frame
//! of each connection is the agent's token, sent together with the request.
//!
//! Three tasks per process: a writer that owns the socket's write half (stdin, signals and
//! resizes are queued to it, so signalling never waits on a slow stdin), a reader that demuxes
//! output frames into two in-memory pipes and resolves the exit, and a stdin pump when stdin is a
//! pipe. Dropping the process (the engine is done with it) closes the connection; the agent then
//! kills whatever is left of the process group.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cognition_sandbox_agent::protocol::{Exit, FailureKind, Reply, Request, SpawnRequest, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, SimplexStream, WriteHalf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::process::{
    ProcessExit, PtySize, Signal, Signaller, SpawnError, SpawnFailed, SpawnFailure, SpawnedProcess,
};

/// Bytes buffered per output pipe between the socket and the engine.
const PIPE_BUFFER: usize = 256 * 1024;
/// Frames queued towards the agent (stdin chunks, signals, resizes).
const CONTROL_QUEUE: usize = 64;
/// Read buffer on the agent's socket (output frames are up to 64 KiB).
const SOCKET_BUFFER: usize = 256 * 1024;
/// Bytes of stdin per frame.
const STDIN_CHUNK: usize = 64 * 1024;

/// Why the agent could not be used (a sandbox problem, not a program problem).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("connecting to the sandbox agent: {0}")]
    Connect(#[source] io::Error),
    #[error("talking to the sandbox agent: {0}")]
    Protocol(#[source] io::Error),
    #[error("the sandbox agent answered {0}")]
    Unexpected(String),
    #[error("the sandbox agent refused the connection: {0}")]
    Refused(String),
}

/// Where an agent listens.
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket (access guarded by its folder).
    Unix(PathBuf),
    /// `host:port` on TCP; every connection starts with the token.
    Tcp { addr: String, token: Arc<str> },
}

impl Endpoint {
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Endpoint::Unix(path.into())
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp { addr, .. } => write!(f, "tcp:{addr} (token redacted)"),
        }
    }
}

type ConnReader = tokio::io::BufReader<Pin<Box<dyn AsyncRead + Send>>>;
type ConnWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// Opens a connection; on TCP the token frame is queued first (sent with the next write).
async fn connect(endpoint: &Endpoint) -> Result<(ConnReader, ConnWriter, Vec<u8>), AgentError> {
    let (reader, writer, preamble): (Pin<Box<dyn AsyncRead + Send>>, ConnWriter, Vec<u8>) =
        match endpoint {
            Endpoint::Unix(path) => {
                let (r, w) = UnixStream::connect(path)
                    .await
                    .map_err(AgentError::Connect)?
                    .into_split();
                (Box::pin(r), Box::pin(w), Vec::new())
            }
            Endpoint::Tcp { addr, token } => {
                let stream = TcpStream::connect(addr.as_str())
                    .await
                    .map_err(AgentError::Connect)?;
                let _ = stream.set_nodelay(true);
                let (r, w) = stream.into_split();
                let auth = Request::Auth(token.as_bytes().to_vec()).encode();
                (Box::pin(r), Box::pin(w), auth)
            }
        };
    Ok((
        tokio::io::BufReader::with_capacity(SOCKET_BUFFER, reader),
        writer,
        preamble,
    ))
}

async fn read_reply(reader: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<Reply>> {
    Reply::read_async(reader).await
}

/// Asks the agent at `endpoint` for its version (a readiness check).
pub async fn ping(endpoint: &Endpoint) -> Result<String, AgentError> {
    let (mut reader, mut writer, mut frames) = connect(endpoint).await?;
    frames.extend_from_slice(&Request::Ping.encode());
    writer
        .write_all(&frames)
        .await
        .map_err(AgentError::Protocol)?;
    match read_reply(&mut reader)
        .await
        .map_err(AgentError::Protocol)?
    {
        Some(Reply::Pong { version }) => Ok(version),
        Some(Reply::Refused(reason)) => Err(AgentError::Refused(reason)),
        other => Err(AgentError::Unexpected(format!("{other:?} to a ping"))),
    }
}

/// Waits until the agent at `endpoint` answers, for at most `within`. A refusal (wrong token)
/// ends the wait at once.
pub async fn wait_ready(endpoint: &Endpoint, within: Duration) -> Result<String, AgentError> {
    let deadline = tokio::time::Instant::now() + within;
    let mut delay = Duration::from_millis(1);
    loop {
        match ping(endpoint).await {
            Ok(version) => return Ok(version),
            Err(e @ AgentError::Refused(_)) => return Err(e),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(25));
            }
        }
    }
}

fn failure(f: cognition_sandbox_agent::protocol::SpawnFailure) -> SpawnFailed {
    let reason = match f.kind {
        FailureKind::NotFound => SpawnFailure::NotFound,
        FailureKind::PermissionDenied => SpawnFailure::PermissionDenied,
        FailureKind::BadCwd => SpawnFailure::BadCwd,
        FailureKind::InvalidArgument => SpawnFailure::InvalidArgument,
        FailureKind::ResourceLimit => SpawnFailure::ResourceLimit,
        FailureKind::Other => SpawnFailure::Other,
    };
    SpawnFailed::new(reason, f.message)
}

/// Starts `request` through the agent at `endpoint`. `Err(Ok(AgentError))` means the agent could
/// not be reached or misbehaved (the caller decides what that says about the sandbox).
pub async fn spawn(
    endpoint: &Endpoint,
    request: SpawnRequest,
) -> Result<Result<SpawnedProcess, SpawnError>, AgentError> {
    let stdin_pipe = request.stdin_pipe || request.pty.is_some();
    let pty = request.pty.is_some();
    let (mut reader, mut writer, mut frames) = connect(endpoint).await?;
    frames.extend_from_slice(&Request::Spawn(request).encode());
    writer
        .write_all(&frames)
        .await
        .map_err(AgentError::Protocol)?;
    let pid = match read_reply(&mut reader)
        .await
        .map_err(AgentError::Protocol)?
    {
        Some(Reply::Started { pid }) => pid,
        Some(Reply::SpawnFailed(f)) => return Ok(Err(SpawnError::Failed(failure(f)))),
        Some(Reply::Refused(reason)) => return Err(AgentError::Refused(reason)),
        other => return Err(AgentError::Unexpected(format!("{other:?} to a spawn"))),
    };

    // The writer task: everything towards the agent goes through one queue.
    let (control, mut queue) = mpsc::channel::<Request>(CONTROL_QUEUE);
    tokio::spawn(async move {
        while let Some(request) = queue.recv().await {
            if writer.write_all(&request.encode()).await.is_err() {
                return;
            }
        }
        // Every sender is gone: the engine is done with the process. Closing our half tells
        // the agent to kill what is left of the group.
        let _ = writer.shutdown().await;
    });

    // The reader task: output into in-memory pipes, then the exit.
    let (stdout_r, stdout_w) = tokio::io::simplex(PIPE_BUFFER);
    let (stderr_r, stderr_w) = tokio::io::simplex(PIPE_BUFFER);
    let (exit_tx, exit_rx) = oneshot::channel::<io::Result<ProcessExit>>();
    let stderr_w = (!pty).then_some(stderr_w);
    tokio::spawn(pump_replies(reader, stdout_w, stderr_w, exit_tx));

    let stdin = if stdin_pipe {
        let (stdin_r, stdin_w) = tokio::io::simplex(STDIN_CHUNK);
        tokio::spawn(pump_stdin(stdin_r, control.clone()));
        Some(Box::pin(stdin_w) as crate::process::Writer)
    } else {
        None
    };
    let stderr: crate::process::Reader = if pty {
        Box::pin(tokio::io::empty())
    } else {
        Box::pin(stderr_r)
    };
    Ok(Ok(SpawnedProcess {
        pid,
        stdin,
        stdout: Box::pin(stdout_r),
        stderr,
        exit: Box::pin(async move {
            exit_rx.await.unwrap_or_else(|_| {
                Err(io::Error::other(
                    "the sandbox agent's connection ended without an exit status",
                ))
            })
        }),
        signaller: Arc::new(AgentSignaller { control, pty }),
    }))
}

/// Demultiplexes the agent's frames until it closes the connection.
async fn pump_replies(
    mut reader: ConnReader,
    stdout: WriteHalf<SimplexStream>,
    stderr: Option<WriteHalf<SimplexStream>>,
    exit_tx: oneshot::Sender<io::Result<ProcessExit>>,
) {
    let mut out = Some(stdout);
    let mut err = stderr;
    let mut exit_tx = Some(exit_tx);
    loop {
        let reply = match read_reply(&mut reader).await {
            Ok(Some(reply)) => reply,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "sandbox agent connection failed");
                break;
            }
        };
        match reply {
            Reply::Output { stream, data } => {
                let pipe = match stream {
                    Stream::Stdout | Stream::Pty => &mut out,
                    Stream::Stderr => &mut err,
                };
                if let Some(w) = pipe
                    && w.write_all(&data).await.is_err()
                {
                    *pipe = None; // the engine stopped reading; keep draining for the exit
                }
            }
            Reply::Eof(Stream::Stdout | Stream::Pty) => close(&mut out).await,
            Reply::Eof(Stream::Stderr) => close(&mut err).await,
            Reply::Exited(exit) => {
                if let Some(tx) = exit_tx.take() {
                    let _ = tx.send(Ok(match exit {
                        Exit::Code(c) => ProcessExit::Code(c),
                        Exit::Signal(s) => ProcessExit::Signal(s),
                    }));
                }
            }
            other => tracing::debug!(reply = ?other, "unexpected sandbox agent frame"),
        }
    }
    close(&mut out).await;
    close(&mut err).await;
    if let Some(tx) = exit_tx {
        let _ = tx.send(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the sandbox agent went away before the process exited (the sandbox died?)",
        )));
    }
}

/// Ends a pipe: the engine's reader sees end of file. (The halves of a simplex share one
/// buffer, so dropping the writer alone would not tell the reader.)
async fn close(pipe: &mut Option<WriteHalf<SimplexStream>>) {
    if let Some(mut w) = pipe.take() {
        let _ = w.shutdown().await;
    }
}

/// Forwards what the engine writes to stdin as frames; end of input becomes `StdinClose`.
async fn pump_stdin(mut stdin: tokio::io::ReadHalf<SimplexStream>, control: mpsc::Sender<Request>) {
    let mut buf = vec![0u8; STDIN_CHUNK];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if control
                    .send(Request::Stdin(buf[..n].to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    let _ = control.send(Request::StdinClose).await;
}

/// Signals and resizes go to the writer task's queue.
struct AgentSignaller {
    control: mpsc::Sender<Request>,
    pty: bool,
}

impl AgentSignaller {
    fn enqueue(&self, request: Request) {
        match self.control.try_send(request) {
            Ok(()) => {}
            // The queue is full of stdin: deliver behind it rather than drop the signal.
            Err(mpsc::error::TrySendError::Full(request)) => {
                let control = self.control.clone();
                tokio::spawn(async move {
                    let _ = control.send(request).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {} // the process is gone
        }
    }
}

impl Signaller for AgentSignaller {
    fn signal(&self, signal: Signal, leader_only: bool) -> io::Result<()> {
        self.enqueue(Request::Signal {
            signal: signal.to_nix() as i32,
            leader_only,
        });
        Ok(())
    }

    fn resize(&self, size: PtySize) -> io::Result<()> {
        let Some(window) = size.to_window().filter(|_| self.pty) else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the process has no pty",
            ));
        };
        self.enqueue(Request::Resize(window));
        Ok(())
    }
}
