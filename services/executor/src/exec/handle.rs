//! [`Exec`]: the shared state of one exec, written by its supervisor and read by any number of
//! attached streams and unary calls.
//!
//! One short `std::sync::Mutex` guards the state; a `watch` version counter wakes readers after
//! every change (no polling), and a `Notify` wakes the supervisor for kill requests and reader
//! changes.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc, watch};

use super::output::{LogCursor, OutputLog};
use super::spec::{DisconnectPolicy, ExecSpec, ExitReason, StreamKind, Terminal};
use super::subscription::Subscription;
use crate::error::Error;
use crate::ids::{ExecId, SandboxId};
use crate::process::{Signal, Signaller, SpawnFailed, Writer};

/// Stdin chunks queued for the writer task before a client is back-pressured.
const STDIN_QUEUE: usize = 16;

/// Where an exec is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecState {
    /// Accepted; the process is being started.
    Starting,
    Running,
    Exited,
    SpawnFailed,
}

/// A point-in-time view for `GetExec` / `ListExecs`.
#[derive(Debug, Clone)]
pub struct ExecSnapshot {
    pub sandbox_id: SandboxId,
    pub exec_id: ExecId,
    pub state: ExecState,
    pub pid: Option<u32>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub started_at: DateTime<Utc>,
    pub terminal: Option<Terminal>,
}

pub(super) struct Inner {
    pub(super) pid: Option<u32>,
    pub(super) log: OutputLog,
    pub(super) terminal: Option<Terminal>,
    pub(super) idle_notices: u64,
    pub(super) idle_silent: Duration,
    signaller: Option<Arc<dyn Signaller>>,
    finished_at: Option<Instant>,
    readers: usize,
    abandoned: bool,
    kill_request: Option<ExitReason>,
    client_signalled: bool,
}

struct Stdin {
    tx: Option<mpsc::Sender<Bytes>>,
    next: u64,
    pipe: bool,
}

/// Why a stdin message was refused.
#[derive(Debug, thiserror::Error)]
pub enum StdinError {
    #[error("stdin is not a pipe (start the exec with stdin PIPE)")]
    NotAPipe,
    #[error("stdin is closed")]
    Closed,
    #[error("stdin chunk at offset {offset} leaves a hole: the next expected offset is {expected}")]
    Hole { offset: u64, expected: u64 },
}

/// One exec (one process) and everything known about it.
pub struct Exec {
    sandbox_id: SandboxId,
    id: ExecId,
    spec: ExecSpec,
    started_at: DateTime<Utc>,
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
    pub(super) wake: Notify,
    stdin: tokio::sync::Mutex<Stdin>,
}

impl std::fmt::Debug for Exec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exec")
            .field("sandbox_id", &self.sandbox_id)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Exec {
    /// A new exec in the `Starting` state; `head`/`tail` are the per-stream output budgets.
    pub fn new(
        sandbox_id: SandboxId,
        id: ExecId,
        spec: ExecSpec,
        head: u64,
        tail: u64,
    ) -> Arc<Self> {
        // A PTY's input is always writable: it is the terminal.
        let pipe = spec.stdin == super::spec::StdinMode::Pipe || spec.pty.is_some();
        Arc::new(Self {
            sandbox_id,
            id,
            spec,
            started_at: Utc::now(),
            inner: Mutex::new(Inner {
                pid: None,
                log: OutputLog::new(head, tail),
                terminal: None,
                idle_notices: 0,
                idle_silent: Duration::ZERO,
                signaller: None,
                finished_at: None,
                readers: 0,
                abandoned: false,
                kill_request: None,
                client_signalled: false,
            }),
            changed: watch::Sender::new(0),
            wake: Notify::new(),
            stdin: tokio::sync::Mutex::new(Stdin {
                tx: None,
                next: 0,
                pipe,
            }),
        })
    }

    pub fn id(&self) -> &ExecId {
        &self.id
    }

    pub fn sandbox_id(&self) -> &SandboxId {
        &self.sandbox_id
    }

    pub fn spec(&self) -> &ExecSpec {
        &self.spec
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(super) fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Records the started process; spawns the stdin writer when stdin is a pipe.
    pub(crate) async fn set_running(
        &self,
        pid: u32,
        signaller: Arc<dyn Signaller>,
        stdin: Option<Writer>,
    ) {
        if let Some(mut writer) = stdin {
            let (tx, mut rx) = mpsc::channel::<Bytes>(STDIN_QUEUE);
            self.stdin.lock().await.tx = Some(tx);
            tokio::spawn(async move {
                while let Some(data) = rx.recv().await {
                    if writer.write_all(&data).await.is_err() {
                        break; // the process closed stdin or exited
                    }
                }
                let _ = writer.shutdown().await;
            });
        }
        {
            let mut inner = self.lock();
            inner.pid = Some(pid);
            inner.signaller = Some(signaller);
        }
        self.bump();
    }

    /// Records a failed start (terminal).
    pub(crate) fn fail(&self, failure: SpawnFailed) {
        {
            let mut inner = self.lock();
            inner.log.close(StreamKind::Stdout);
            inner.log.close(StreamKind::Stderr);
            inner.terminal = Some(Terminal::SpawnFailed(failure));
            inner.finished_at = Some(Instant::now());
        }
        self.bump();
    }

    pub(super) fn append(&self, stream: StreamKind, data: Bytes) {
        self.lock().log.append(stream, data);
        self.bump();
    }

    pub(super) fn close_stream(&self, stream: StreamKind) {
        self.lock().log.close(stream);
        self.bump();
    }

    /// Records the terminal state; `make` receives the output totals and truncation flags.
    pub(super) fn finish(&self, make: impl FnOnce(&OutputLog) -> Terminal) {
        {
            let mut inner = self.lock();
            inner.log.close(StreamKind::Stdout);
            inner.log.close(StreamKind::Stderr);
            let terminal = make(&inner.log);
            inner.terminal = Some(terminal);
            inner.finished_at = Some(Instant::now());
            inner.signaller = None;
        }
        self.bump();
    }

    pub(super) fn publish_idle(&self, silent: Duration) {
        {
            let mut inner = self.lock();
            inner.idle_notices += 1;
            inner.idle_silent = silent;
        }
        self.bump();
    }

    /// Asks the supervisor to kill the process group (first reason wins).
    pub fn request_kill(&self, reason: ExitReason) {
        {
            let mut inner = self.lock();
            if inner.terminal.is_some() || inner.kill_request.is_some() {
                return;
            }
            inner.kill_request = Some(reason);
        }
        self.wake.notify_one();
    }

    pub(super) fn take_kill_request(&self) -> Option<ExitReason> {
        self.lock().kill_request.take()
    }

    /// Whether every stream left without detaching and the policy says kill.
    pub(super) fn is_abandoned(&self) -> bool {
        let inner = self.lock();
        self.spec.on_disconnect == DisconnectPolicy::Kill && inner.readers == 0 && inner.abandoned
    }

    pub(super) fn client_signalled(&self) -> bool {
        self.lock().client_signalled
    }

    /// Sends a client signal. A finished exec ignores signals.
    pub fn signal(&self, signal: Signal, leader_only: bool) -> Result<(), Error> {
        let signaller = {
            let mut inner = self.lock();
            let Some(s) = inner.signaller.clone() else {
                return Ok(()); // not started yet or already finished
            };
            inner.client_signalled = true;
            s
        };
        tracing::info!(sandbox_id = %self.sandbox_id, exec_id = %self.id, ?signal, leader_only, "client signal");
        signaller
            .signal(signal, leader_only)
            .map_err(|e| Error::Internal(format!("signalling exec {}: {e}", self.id)))
    }

    /// Resizes the exec's terminal. A finished exec ignores resizes; one without a PTY refuses.
    pub fn resize(&self, size: super::spec::PtySize) -> Result<(), Error> {
        if self.spec.pty.is_none() {
            return Err(Error::Invalid(format!(
                "exec {} has no pty: start it with a pty size to resize it",
                self.id
            )));
        }
        if size.to_window().is_none() {
            return Err(Error::Invalid(format!(
                "pty size {}x{} is out of range (rows and cols must be 1..=65535)",
                size.rows, size.cols
            )));
        }
        let Some(signaller) = self.lock().signaller.clone() else {
            return Ok(()); // not started yet or already finished
        };
        signaller
            .resize(size)
            .map_err(|e| Error::Internal(format!("resizing exec {}: {e}", self.id)))
    }

    /// A new reader starting after `offsets` bytes of stdout and stderr.
    pub fn subscribe(self: &Arc<Self>, offsets: [u64; 2], attached: bool) -> Subscription {
        let idle_seen = {
            let mut inner = self.lock();
            inner.readers += 1;
            inner.abandoned = false;
            inner.idle_notices
        };
        self.wake.notify_one();
        Subscription::new(
            self.clone(),
            self.watch(),
            LogCursor::new(offsets),
            attached,
            idle_seen,
        )
    }

    /// A reader left: `detached` when it asked to, `complete` when it saw the terminal message.
    pub(super) fn unsubscribe(&self, detached: bool, complete: bool) {
        {
            let mut inner = self.lock();
            inner.readers = inner.readers.saturating_sub(1);
            if !detached && !complete && inner.terminal.is_none() {
                inner.abandoned = true;
            }
        }
        self.wake.notify_one();
    }

    pub fn state(&self) -> ExecState {
        let inner = self.lock();
        match (&inner.terminal, inner.pid) {
            (Some(Terminal::SpawnFailed(_)), _) => ExecState::SpawnFailed,
            (Some(Terminal::Exited(_)), _) => ExecState::Exited,
            (None, Some(_)) => ExecState::Running,
            (None, None) => ExecState::Starting,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.lock().terminal.is_some()
    }

    /// When it finished, for retention; `None` while running.
    pub fn finished_at(&self) -> Option<Instant> {
        self.lock().finished_at
    }

    /// Output bytes held in memory for replay.
    pub fn retained_bytes(&self) -> u64 {
        self.lock().log.retained_bytes()
    }

    pub fn attached_readers(&self) -> usize {
        self.lock().readers
    }

    pub fn snapshot(&self) -> ExecSnapshot {
        let state = self.state();
        let inner = self.lock();
        ExecSnapshot {
            sandbox_id: self.sandbox_id.clone(),
            exec_id: self.id.clone(),
            state,
            pid: inner.pid,
            labels: self.spec.labels.clone(),
            started_at: self.started_at,
            terminal: inner.terminal.clone(),
        }
    }

    /// Waits until the exec is finished.
    pub async fn wait(&self) -> Terminal {
        let mut rx = self.watch();
        loop {
            rx.borrow_and_update();
            if let Some(t) = self.lock().terminal.clone() {
                return t;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Writes a stdin chunk at `offset`; bytes already written (a resend after a reconnect) are
    /// dropped. Waits while the process does not read (back-pressure).
    pub async fn write_stdin(&self, offset: u64, data: Bytes) -> Result<(), StdinError> {
        let mut stdin = self.stdin.lock().await;
        if !stdin.pipe {
            return Err(StdinError::NotAPipe);
        }
        let end = offset + data.len() as u64;
        if end <= stdin.next {
            return Ok(()); // duplicate
        }
        if offset > stdin.next {
            return Err(StdinError::Hole {
                offset,
                expected: stdin.next,
            });
        }
        let fresh = data.slice((stdin.next - offset) as usize..);
        let Some(tx) = stdin.tx.clone() else {
            return Err(StdinError::Closed);
        };
        stdin.next = end;
        // A send error means the process is gone; the bytes are moot.
        let _ = tx.send(fresh).await;
        Ok(())
    }

    /// Closes stdin (the process sees end of file once queued bytes are written).
    pub async fn close_stdin(&self) {
        self.stdin.lock().await.tx = None;
    }
}
