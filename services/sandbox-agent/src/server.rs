//! The agent's server: accepts connections (a Unix socket under Docker, TCP with a token in a
//! Kubernetes pod) and runs one process per connection.
//!
//! On TCP the first frame of every connection must be [`Request::Auth`] with the agent's token
//! (compared in constant time); anything else gets [`Reply::Refused`] and the connection closes.
//! The executor sends `Auth` and `Spawn` together, so the check costs no round trip.
//!
//! One thread for everything (a current-thread Tokio runtime): the sandbox's pids limit counts
//! threads, so an agent that spent threads per process would eat the budget of the code it runs
//! (50 concurrent processes would cost 200+ pids with a thread per pipe). Per process there is a
//! task per output stream, a waiter, a stdin writer, and the connection's control loop (stdin,
//! signals, resizes). Frames to the executor go through one writer task, so they never
//! interleave. The connection closes once the process has exited and every output stream has
//! ended; if the executor closes it first, the process group is killed.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::process::{Pid, Signal};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;

use crate::protocol::{
    Exit, FailureKind, Reply, Request, SpawnFailure, SpawnRequest, Stream, VERSION,
};
use crate::pty::{self, AsyncPty};

/// Bytes read from an output pipe at once (one frame at most).
const READ_CHUNK: usize = 64 * 1024;
/// Frames queued towards the executor (backpressure on the output readers beyond it).
const FRAME_QUEUE: usize = 16;
/// Stdin chunks queued towards the process.
const STDIN_QUEUE: usize = 64;

/// Where the agent listens (bound std listeners, made non-blocking here).
pub enum Listener {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
}

/// How connections are served.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Required as the first frame of every connection ([`Request::Auth`]); `None` = no check
    /// (the Unix socket, whose folder guards access).
    pub token: Option<Vec<u8>>,
    /// Base of relative working directories (`None` = the agent's own).
    pub workdir: Option<PathBuf>,
}

/// Serves `listener` forever on a single-threaded runtime.
pub fn serve(listener: Listener, options: Options) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let options = Arc::new(options);
    runtime.block_on(async move {
        match listener {
            Listener::Unix(listener) => {
                listener.set_nonblocking(true)?;
                let listener = UnixListener::from_std(listener)?;
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            let (r, w) = stream.into_split();
                            connection(r, w, options.clone());
                        }
                        Err(e) => eprintln!("cognition-sandbox-agent: accept: {e}"),
                    }
                }
            }
            Listener::Tcp(listener) => {
                listener.set_nonblocking(true)?;
                let listener = TcpListener::from_std(listener)?;
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let (r, w) = stream.into_split();
                            connection(r, w, options.clone());
                        }
                        Err(e) => eprintln!("cognition-sandbox-agent: accept: {e}"),
                    }
                }
            }
        }
    })
}

/// Boxed connection halves (Unix or TCP).
type ConnReader = BufReader<Box<dyn AsyncRead + Send + Unpin>>;
type ConnWriter = Box<dyn AsyncWrite + Send + Unpin>;

fn connection(
    reader: impl AsyncRead + Send + Unpin + 'static,
    writer: impl AsyncWrite + Send + Unpin + 'static,
    options: Arc<Options>,
) {
    tokio::spawn(async move {
        let reader: ConnReader = BufReader::new(Box::new(reader));
        if let Err(e) = handle(reader, Box::new(writer), &options).await {
            eprintln!("cognition-sandbox-agent: connection: {e}");
        }
    });
}

/// Encoded frames towards the executor.
type Frames = mpsc::Sender<Vec<u8>>;

async fn handle(mut reader: ConnReader, writer: ConnWriter, options: &Options) -> io::Result<()> {
    let (frames, queue) = mpsc::channel::<Vec<u8>>(FRAME_QUEUE);
    let writer = tokio::spawn(write_frames(writer, queue));
    if let Some(token) = &options.token {
        let refusal = match Request::read_async(&mut reader).await? {
            Some(Request::Auth(given)) if token_matches(&given, token) => None,
            Some(Request::Auth(_)) => Some("wrong agent token"),
            None => return Ok(()),
            Some(_) => Some("the first frame must authenticate with the agent token"),
        };
        if let Some(reason) = refusal {
            let _ = frames
                .send(Reply::Refused(reason.to_owned()).encode())
                .await;
            drop(frames);
            let _ = writer.await;
            return Ok(());
        }
    }
    loop {
        match Request::read_async(&mut reader).await? {
            None => break,
            Some(Request::Ping) => {
                let pong = Reply::Pong {
                    version: VERSION.to_owned(),
                };
                if frames.send(pong.encode()).await.is_err() {
                    break;
                }
            }
            Some(Request::Spawn(mut request)) => {
                request.cwd = resolve_cwd(options.workdir.as_deref(), &request.cwd);
                if let Some(refusal) = escapes(options.workdir.as_deref(), &request.cwd) {
                    let _ = frames.send(Reply::SpawnFailed(refusal).encode()).await;
                    break;
                }
                run(request, reader, frames).await;
                break;
            }
            Some(other) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("expected spawn or ping, got {other:?}"),
                ));
            }
        }
    }
    // `frames` is gone (moved or dropped): the writer drains its queue and closes.
    let _ = writer.await;
    Ok(())
}

/// Writes frames until every sender is gone, then closes our side of the connection.
async fn write_frames(mut writer: ConnWriter, mut queue: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = queue.recv().await {
        if writer.write_all(&frame).await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// A started process and the ends the agent keeps.
struct Started {
    child: tokio::process::Child,
    /// Where stdin frames go (a pipe, or the terminal).
    stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Output sources with the stream each feeds.
    outputs: Vec<(Stream, Box<dyn AsyncRead + Send + Unpin>)>,
    /// The PTY master, for resizes.
    master: Option<Arc<OwnedFd>>,
}

async fn run(request: SpawnRequest, mut reader: ConnReader, frames: Frames) {
    let started = match start(&request) {
        Ok(s) => s,
        Err(failure) => {
            let _ = frames.send(Reply::SpawnFailed(failure).encode()).await;
            return;
        }
    };
    let Started {
        mut child,
        stdin,
        outputs,
        master,
    } = started;
    let Some(pid) = child.id() else {
        let _ = frames
            .send(Reply::SpawnFailed(failure(FailureKind::Other, "the process vanished")).encode())
            .await;
        return;
    };
    let group = Pid::from_raw(pid as i32).expect("a child pid is positive");
    if frames.send(Reply::Started { pid }.encode()).await.is_err() {
        let _ = rustix::process::kill_process_group(group, Signal::KILL);
        return;
    }

    // Every part (each output stream and the exit) holds a frame sender; when all are done the
    // `done` channel closes and the control loop ends.
    let (done_tx, mut done) = mpsc::channel::<()>(1);
    let reaped = Arc::new(AtomicBool::new(false));
    for (stream, source) in outputs {
        let (frames, done_tx) = (frames.clone(), done_tx.clone());
        tokio::spawn(async move {
            pump(stream, source, &frames).await;
            let _ = frames.send(Reply::Eof(stream).encode()).await;
            drop(done_tx);
        });
    }
    {
        let (frames, done_tx, reaped) = (frames.clone(), done_tx.clone(), reaped.clone());
        tokio::spawn(async move {
            let exit = match child.wait().await {
                Ok(status) => match (status.code(), status.signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(sig)) => Exit::Signal(sig),
                    (None, None) => Exit::Code(-1),
                },
                Err(_) => Exit::Code(-1),
            };
            reaped.store(true, Ordering::Release);
            let _ = frames.send(Reply::Exited(exit).encode()).await;
            drop(done_tx);
        });
    }
    drop(done_tx);
    drop(frames);

    let mut stdin_tx = stdin.map(spawn_stdin_writer);
    let finished = loop {
        tokio::select! {
            _ = done.recv() => break true,
            request = Request::read_async(&mut reader) => match request {
                Ok(Some(request)) => control(request, &mut stdin_tx, group, &reaped, master.as_deref()).await,
                // The executor closed the connection (or it broke).
                Ok(None) | Err(_) => break false,
            },
        }
    };
    drop(stdin_tx);
    if !finished {
        // The executor went away while the process (or something it started) still runs.
        let _ = rustix::process::kill_process_group(group, Signal::KILL);
    }
}

/// Constant-time token comparison (the length is not secret).
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A relative working directory is taken from `workdir` (the pod's workspace); an absolute one
/// is used as given.
fn resolve_cwd(workdir: Option<&Path>, cwd: &str) -> String {
    match workdir {
        Some(base) if !cwd.starts_with('/') => base.join(cwd).to_string_lossy().into_owned(),
        _ => cwd.to_owned(),
    }
}

/// With a workdir, a working directory whose real path (symlinks resolved) leaves it is
/// refused, as the executor's own path jail refuses it on the other backends. A missing
/// directory is left to the spawn, which reports it.
fn escapes(workdir: Option<&Path>, cwd: &str) -> Option<SpawnFailure> {
    let root = std::fs::canonicalize(workdir?).ok()?;
    let real = std::fs::canonicalize(cwd).ok()?;
    (!real.starts_with(&root)).then(|| {
        failure(
            FailureKind::BadCwd,
            format!("cwd {cwd} leaves the workspace (through a symlink)"),
        )
    })
}

/// Applies one control frame of a running process.
async fn control(
    request: Request,
    stdin_tx: &mut Option<mpsc::Sender<Vec<u8>>>,
    group: Pid,
    reaped: &AtomicBool,
    master: Option<&OwnedFd>,
) {
    match request {
        Request::Stdin(data) => {
            if let Some(tx) = stdin_tx
                && tx.send(data).await.is_err()
            {
                *stdin_tx = None; // the process closed its stdin
            }
        }
        Request::StdinClose => *stdin_tx = None,
        Request::Signal {
            signal,
            leader_only,
        } => {
            let Some(sig) = Signal::from_named_raw(signal) else {
                return;
            };
            let result = if leader_only {
                if reaped.load(Ordering::Acquire) {
                    return; // the pid may belong to someone else by now
                }
                rustix::process::kill_process(group, sig)
            } else {
                rustix::process::kill_process_group(group, sig)
            };
            if let Err(e) = result
                && e != rustix::io::Errno::SRCH
            {
                eprintln!("cognition-sandbox-agent: signal {signal}: {e}");
            }
        }
        Request::Resize(size) => {
            if let Some(master) = master {
                let _ = pty::resize(master, size);
            }
        }
        Request::Ping | Request::Spawn(_) | Request::Auth(_) => {}
    }
}

/// Copies `source` to the executor as `stream` frames until end of file. Each read lands right
/// after room for the frame header, so a frame is built with no copy.
async fn pump(stream: Stream, mut source: Box<dyn AsyncRead + Send + Unpin>, frames: &Frames) {
    let prefix = Reply::output_prefix_len();
    loop {
        let mut buf = vec![0u8; prefix + READ_CHUNK];
        match source.read(&mut buf[prefix..]).await {
            Ok(0) => return,
            Ok(n) => {
                Reply::fill_output_prefix(stream, &mut buf[..prefix], n);
                buf.truncate(prefix + n);
                if frames.send(buf).await.is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EIO on a PTY master: every slave fd is closed.
            Err(_) => return,
        }
    }
}

/// A task that writes stdin chunks to the process, in order; dropping the sender closes it.
fn spawn_stdin_writer(mut sink: Box<dyn AsyncWrite + Send + Unpin>) -> mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STDIN_QUEUE);
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if sink.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = sink.shutdown().await;
    });
    tx
}

fn failure(kind: FailureKind, message: impl Into<String>) -> SpawnFailure {
    SpawnFailure {
        kind,
        message: message.into(),
    }
}

/// Starts the process: checks the request, then spawns on pipes or a PTY.
fn start(request: &SpawnRequest) -> Result<Started, SpawnFailure> {
    let Some(program) = request.argv.first().filter(|p| !p.is_empty()) else {
        return Err(failure(FailureKind::InvalidArgument, "empty command"));
    };
    match std::fs::metadata(&request.cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(failure(
                FailureKind::BadCwd,
                format!("cwd {} is not a directory", request.cwd),
            ));
        }
        Err(_) => {
            return Err(failure(
                FailureKind::BadCwd,
                format!("cwd {} does not exist", request.cwd),
            ));
        }
    }
    let mut command = std::process::Command::new(program);
    command
        .args(&request.argv[1..])
        .env_clear()
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&request.cwd);
    let spawn_error = |e: io::Error| classify(program, &e);
    match request.pty {
        None => {
            command
                .stdin(if request.stdin_pipe {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            let mut command = tokio::process::Command::from(command);
            command.kill_on_drop(false);
            let mut child = command.spawn().map_err(spawn_error)?;
            let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
                return Err(failure(FailureKind::Other, "missing output pipes"));
            };
            let stdin = child
                .stdin
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncWrite + Send + Unpin>);
            Ok(Started {
                child,
                stdin,
                outputs: vec![
                    (Stream::Stdout, Box::new(stdout)),
                    (Stream::Stderr, Box::new(stderr)),
                ],
                master: None,
            })
        }
        Some(size) => {
            let pty_error = |e: io::Error| failure(FailureKind::Other, format!("pty: {e}"));
            let pair = pty::open(size)
                .map_err(|e| failure(FailureKind::ResourceLimit, format!("opening a pty: {e}")))?;
            pty::attach(&mut command, &pair.slave).map_err(pty_error)?;
            let mut command = tokio::process::Command::from(command);
            command.kill_on_drop(false);
            let child = command.spawn().map_err(spawn_error)?;
            drop(command); // closes the parent's copies of the slave
            drop(pair.slave);
            let master = Arc::new(pair.master);
            let input = AsyncPty::new(&master).map_err(pty_error)?;
            let output = AsyncPty::new(&master).map_err(pty_error)?;
            Ok(Started {
                child,
                stdin: Some(Box::new(input)),
                outputs: vec![(Stream::Pty, Box::new(output))],
                master: Some(master),
            })
        }
    }
}

/// Classifies the error of a failed spawn.
fn classify(program: &str, e: &io::Error) -> SpawnFailure {
    match e.kind() {
        io::ErrorKind::NotFound => failure(
            FailureKind::NotFound,
            format!("{program}: command not found"),
        ),
        io::ErrorKind::PermissionDenied => failure(
            FailureKind::PermissionDenied,
            format!("{program}: permission denied (not executable?)"),
        ),
        io::ErrorKind::InvalidInput => {
            failure(FailureKind::InvalidArgument, format!("{program}: {e}"))
        }
        io::ErrorKind::OutOfMemory
        | io::ErrorKind::ArgumentListTooLong
        | io::ErrorKind::WouldBlock => {
            failure(FailureKind::ResourceLimit, format!("{program}: {e}"))
        }
        _ => failure(FailureKind::Other, format!("{program}: {e}")),
    }
}
