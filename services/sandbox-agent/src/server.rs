//! The agent's server: accepts connections on a Unix socket and runs one process per connection.
//!
//! Plain threads, no async runtime: a connection costs a control thread (reads the executor's
//! frames: stdin, signals, resizes), one thread per output stream and a waiter, all blocked in
//! system calls. Frames to the executor are written whole under one lock, so threads never
//! interleave partial frames. The connection closes once the process has exited and every output
//! stream has ended; if the executor closes it first, the process group is killed.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use rustix::process::{Pid, Signal};

use crate::protocol::{
    Exit, FailureKind, Reply, Request, SpawnFailure, SpawnRequest, Stream, VERSION,
};
use crate::pty;

/// Bytes read from an output pipe at once (one frame at most).
const READ_CHUNK: usize = 64 * 1024;

/// Accepts connections forever, one thread each.
pub fn serve(listener: UnixListener) -> io::Result<()> {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                thread::Builder::new()
                    .name("connection".into())
                    .spawn(move || {
                        if let Err(e) = handle(stream) {
                            eprintln!("cognition-sandbox-agent: connection: {e}");
                        }
                    })?;
            }
            Err(e) => eprintln!("cognition-sandbox-agent: accept: {e}"),
        }
    }
    Ok(())
}

/// Frames to the executor, written whole under one lock.
#[derive(Clone)]
struct Sender(Arc<Mutex<UnixStream>>);

impl Sender {
    fn send(&self, reply: &Reply) -> io::Result<()> {
        let mut stream = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        reply.write(&mut *stream)
    }

    /// Writes an already-encoded frame.
    fn send_raw(&self, frame: &[u8]) -> io::Result<()> {
        let mut stream = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        stream.write_all(frame)
    }

    fn close(&self) {
        let stream = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
}

fn handle(stream: UnixStream) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let sender = Sender(Arc::new(Mutex::new(stream)));
    loop {
        match Request::read(&mut reader)? {
            None => return Ok(()),
            Some(Request::Ping) => sender.send(&Reply::Pong {
                version: VERSION.to_owned(),
            })?,
            Some(Request::Spawn(request)) => return run(request, reader, sender),
            Some(other) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("expected spawn or ping, got {other:?}"),
                ));
            }
        }
    }
}

/// A started process and the ends the agent keeps.
struct Started {
    child: Child,
    /// Where stdin frames go (a pipe, or the PTY master).
    stdin: Option<File>,
    /// Output sources with the stream each feeds.
    outputs: Vec<(Stream, File)>,
    /// The PTY master, for resizes.
    master: Option<OwnedFd>,
}

fn run(request: SpawnRequest, mut reader: BufReader<UnixStream>, sender: Sender) -> io::Result<()> {
    let started = match start(&request) {
        Ok(s) => s,
        Err(failure) => {
            sender.send(&Reply::SpawnFailed(failure))?;
            sender.close();
            return Ok(());
        }
    };
    let Started {
        mut child,
        stdin,
        outputs,
        master,
    } = started;
    let pid = child.id();
    let group = Pid::from_raw(pid as i32).expect("a child pid is positive");
    sender.send(&Reply::Started { pid })?;

    // The connection closes when every part (each output stream and the exit) is done.
    let parts = Arc::new(AtomicUsize::new(outputs.len() + 1));
    let finished = Arc::new(AtomicBool::new(false));
    let reaped = Arc::new(AtomicBool::new(false));
    let part_done = {
        let (parts, finished, sender) = (parts.clone(), finished.clone(), sender.clone());
        move || {
            if parts.fetch_sub(1, Ordering::AcqRel) == 1 {
                finished.store(true, Ordering::Release);
                sender.close();
            }
        }
    };

    for (stream, source) in outputs {
        let (sender, done) = (sender.clone(), part_done.clone());
        thread::Builder::new()
            .name("output".into())
            .spawn(move || {
                pump(stream, source, &sender);
                let _ = sender.send(&Reply::Eof(stream));
                done();
            })?;
    }
    {
        let (sender, done, reaped) = (sender.clone(), part_done.clone(), reaped.clone());
        thread::Builder::new()
            .name("waiter".into())
            .spawn(move || {
                let exit = match child.wait() {
                    Ok(status) => match (status.code(), status.signal()) {
                        (Some(code), _) => Exit::Code(code),
                        (None, Some(sig)) => Exit::Signal(sig),
                        (None, None) => Exit::Code(-1),
                    },
                    Err(_) => Exit::Code(-1),
                };
                reaped.store(true, Ordering::Release);
                let _ = sender.send(&Reply::Exited(exit));
                done();
            })?;
    }

    let stdin_tx = stdin.map(spawn_stdin_writer).transpose()?;
    let mut stdin_tx = stdin_tx;
    // Until the executor closes its side (or the connection fails).
    while let Ok(Some(request)) = Request::read(&mut reader) {
        match request {
            Request::Stdin(data) => {
                if let Some(tx) = &stdin_tx {
                    let _ = tx.send(data);
                }
            }
            Request::StdinClose => stdin_tx = None,
            Request::Signal {
                signal,
                leader_only,
            } => {
                let Some(sig) = Signal::from_named_raw(signal) else {
                    continue;
                };
                let result = if leader_only {
                    if reaped.load(Ordering::Acquire) {
                        Ok(())
                    } else {
                        rustix::process::kill_process(group, sig)
                    }
                } else {
                    rustix::process::kill_process_group(group, sig)
                };
                if let Err(e) = result
                    && e != rustix::io::Errno::SRCH
                {
                    eprintln!("cognition-sandbox-agent: signal {signal} to {pid}: {e}");
                }
            }
            Request::Resize(size) => {
                if let Some(master) = &master {
                    let _ = pty::resize(master, size);
                }
            }
            Request::Ping | Request::Spawn(_) => {}
        }
    }
    drop(stdin_tx);
    if !finished.load(Ordering::Acquire) {
        // The executor went away while the process (or something it started) still runs.
        let _ = rustix::process::kill_process_group(group, Signal::KILL);
    }
    Ok(())
}

/// Copies `source` to the executor as `stream` frames until end of file. Each read lands right
/// after room for the frame header, so a frame goes out with no copy.
fn pump(stream: Stream, mut source: File, sender: &Sender) {
    let prefix = Reply::output_prefix_len();
    let mut buf = vec![0u8; prefix + READ_CHUNK];
    loop {
        match source.read(&mut buf[prefix..]) {
            Ok(0) => return,
            Ok(n) => {
                Reply::fill_output_prefix(stream, &mut buf[..prefix], n);
                if sender.send_raw(&buf[..prefix + n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EIO on a PTY master: every slave fd is closed.
            Err(_) => return,
        }
    }
}

/// A thread that writes stdin frames to the process, in order; dropping the sender closes it.
fn spawn_stdin_writer(mut sink: File) -> io::Result<mpsc::Sender<Vec<u8>>> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    thread::Builder::new().name("stdin".into()).spawn(move || {
        for chunk in rx {
            if sink.write_all(&chunk).is_err() {
                return;
            }
        }
    })?;
    Ok(tx)
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
    let mut command = Command::new(program);
    command
        .args(&request.argv[1..])
        .env_clear()
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .current_dir(Path::new(&request.cwd));
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
                .stderr(Stdio::piped())
                .process_group(0);
            let mut child = command.spawn().map_err(spawn_error)?;
            let stdin = child.stdin.take().map(|s| File::from(OwnedFd::from(s)));
            let stdout = child.stdout.take().map(|s| File::from(OwnedFd::from(s)));
            let stderr = child.stderr.take().map(|s| File::from(OwnedFd::from(s)));
            let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
                return Err(failure(FailureKind::Other, "missing output pipes"));
            };
            Ok(Started {
                child,
                stdin,
                outputs: vec![(Stream::Stdout, stdout), (Stream::Stderr, stderr)],
                master: None,
            })
        }
        Some(size) => {
            let pair = pty::open(size)
                .map_err(|e| failure(FailureKind::ResourceLimit, format!("opening a pty: {e}")))?;
            pty::attach(&mut command, &pair.slave)
                .map_err(|e| failure(FailureKind::Other, format!("pty: {e}")))?;
            let child = command.spawn().map_err(spawn_error)?;
            drop(command); // closes the parent's copies of the slave
            drop(pair.slave);
            let clone = |fd: &OwnedFd| {
                fd.try_clone()
                    .map(File::from)
                    .map_err(|e| failure(FailureKind::Other, format!("pty: {e}")))
            };
            let input = clone(&pair.master)?;
            let output = clone(&pair.master)?;
            Ok(Started {
                child,
                stdin: Some(input),
                outputs: vec![(Stream::Pty, output)],
                master: Some(pair.master),
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
