//! The `Exec` bidirectional stream: an outbound half that turns a [`Subscription`] into wire
//! messages (plus keepalives), and an inbound task for stdin, signals and detach.
//!
//! The outbound half is polled directly by tonic (no channel, no extra task), so output reaches
//! the socket with one wake-up. When the client goes away, tonic drops the outbound half; the
//! subscription's drop then applies the disconnect policy.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cognition_proto::executor::v1 as pb;
use futures::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::{Status, Streaming};

use super::convert;
use crate::exec::{Exec, ExecEvent, PtySize, Subscription};

/// Output chunks taken from the log per lock.
const BATCH: usize = 64;

pub type ExecResponseStream = Pin<Box<dyn Stream<Item = Result<pb::ExecResponse, Status>> + Send>>;

/// What the inbound task tells the outbound half.
#[derive(Debug)]
enum Control {
    /// The client detached: end the stream, keep the process.
    Detach,
    /// A client message was invalid: end the stream with this status.
    Fail(Status),
}

struct Outbound {
    sub: Subscription,
    pending: VecDeque<ExecEvent>,
    control: mpsc::Receiver<Control>,
    control_open: bool,
    keepalive: Duration,
    last_sent: Instant,
    shutdown: CancellationToken,
    finished: bool,
    ended: bool,
    _inbound: DropGuard,
}

impl Outbound {
    async fn next(&mut self) -> Option<Result<pb::ExecResponse, Status>> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(ev) = self.pending.pop_front() {
                self.last_sent = Instant::now();
                return Some(Ok(convert::event(ev, self.sub.exec())));
            }
            if self.finished {
                self.ended = true;
                return None;
            }
            self.finished = self.sub.poll(&mut self.pending, BATCH);
            if !self.pending.is_empty() {
                continue;
            }
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    self.ended = true;
                    return Some(Err(Status::unavailable("the executor is shutting down; attach again")));
                }
                c = self.control.recv(), if self.control_open => match c {
                    Some(Control::Detach) => {
                        self.sub.detach();
                        self.ended = true;
                        return None;
                    }
                    Some(Control::Fail(status)) => {
                        self.ended = true;
                        return Some(Err(status));
                    }
                    None => self.control_open = false,
                },
                _ = self.sub.changed() => {}
                _ = tokio::time::sleep_until(self.last_sent + self.keepalive) => {
                    self.last_sent = Instant::now();
                    return Some(Ok(convert::keepalive()));
                }
            }
        }
    }
}

/// Builds the response stream for a subscription and starts the inbound task.
pub fn open(
    sub: Subscription,
    inbound: Streaming<pb::ExecRequest>,
    keepalive: Duration,
    shutdown: CancellationToken,
) -> ExecResponseStream {
    let (tx, rx) = mpsc::channel(4);
    let done = CancellationToken::new();
    tokio::spawn(inbound_loop(inbound, sub.exec().clone(), tx, done.clone()));
    let outbound = Outbound {
        sub,
        pending: VecDeque::new(),
        control: rx,
        control_open: true,
        keepalive,
        last_sent: Instant::now(),
        shutdown,
        finished: false,
        ended: false,
        _inbound: done.drop_guard(),
    };
    Box::pin(futures::stream::unfold(outbound, |mut out| async move {
        let item = out.next().await?;
        Some((item, out))
    }))
}

async fn inbound_loop(
    mut inbound: Streaming<pb::ExecRequest>,
    exec: Arc<Exec>,
    control: mpsc::Sender<Control>,
    done: CancellationToken,
) {
    use pb::exec_request::Msg;
    loop {
        let message = tokio::select! {
            _ = done.cancelled() => return,
            m = inbound.message() => m,
        };
        let request = match message {
            Ok(Some(r)) => r,
            // Half-close (the client sends nothing more) or the client went away: the outbound
            // half notices the latter on its own.
            Ok(None) | Err(_) => return,
        };
        let failure = match request.msg {
            Some(Msg::Stdin(chunk)) => exec
                .write_stdin(chunk.offset, Bytes::from(chunk.data))
                .await
                .err()
                .map(|e| Status::invalid_argument(e.to_string())),
            Some(Msg::StdinClose(_)) => {
                exec.close_stdin().await;
                None
            }
            Some(Msg::Signal(s)) => match convert::signal(s.signal) {
                Ok(sig) => exec
                    .signal(sig, s.leader_only)
                    .err()
                    .map(|e| e.into_status()),
                Err(e) => Some(e.into_status()),
            },
            Some(Msg::Resize(r)) => {
                let size = r.size.unwrap_or_default();
                exec.resize(PtySize {
                    rows: size.rows,
                    cols: size.cols,
                })
                .err()
                .map(|e| e.into_status())
            }
            Some(Msg::Detach(_)) => {
                let _ = control.send(Control::Detach).await;
                return;
            }
            Some(Msg::Start(_) | Msg::Attach(_)) => Some(Status::invalid_argument(
                "start and attach are only valid as the first message of a stream",
            )),
            None => Some(Status::invalid_argument("empty Exec message")),
        };
        if let Some(status) = failure {
            let _ = control.send(Control::Fail(status)).await;
            return;
        }
    }
}
