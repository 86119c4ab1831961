//! The agent's server: accepts connections on a Unix socket and runs one process per connection.
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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
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

/// Serves `listener` (a bound std listener) forever on a single-threaded runtime.
pub fn serve(listener: std::os::unix::net::UnixListener) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(listener)?;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream).await {
                            eprintln!("cognition-sandbox-agent: connection: {e}");
                        }
                    });
                }
                Err(e) => eprintln!("cognition-sandbox-agent: accept: {e}"),
            }
        }
    })
}

/// Encoded frames towards the executor.
type Frames = mpsc::Sender<Vec<u8>>;

async fn handle(stream: UnixStream) -> io::Result<()> {
    let (reader, writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let (frames, queue) = mpsc::channel::<Vec<u8>>(FRAME_QUEUE);
    let writer = tokio::spawn(write_frames(writer, queue));
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
            Some(Request::Spawn(request)) => {
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
async fn write_frames(
    mut writer: tokio::net::unix::OwnedWriteHalf,
    mut queue: mpsc::Receiver<Vec<u8>>,
) {
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

async fn run(
    request: SpawnRequest,
    mut reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    frames: Frames,
) {
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
        Request::Ping | Request::Spawn(_) => {}
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
