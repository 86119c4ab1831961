//! A reader of one exec: `started`, then output from its offsets (replay, then live), idle
//! notices, then exactly one terminal event.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::handle::Exec;
use super::output::{Chunk, LogCursor, LogItem};
use super::spec::{StreamKind, Terminal};

/// What a reader receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Started {
        pid: u32,
        attached: bool,
    },
    Output(Chunk),
    /// Bytes dropped by the output cap.
    Gap {
        stream: StreamKind,
        offset: u64,
        length: u64,
    },
    Idle {
        silent: Duration,
    },
    Finished(Terminal),
}

/// One attached reader. Dropping it without [`Subscription::detach`] before the terminal event
/// counts as a client disconnect (the exec's disconnect policy applies).
pub struct Subscription {
    exec: Arc<Exec>,
    rx: watch::Receiver<u64>,
    cursor: LogCursor,
    scratch: VecDeque<LogItem>,
    attached: bool,
    started_sent: bool,
    finished: bool,
    detached: bool,
    idle_seen: u64,
}

impl Subscription {
    pub(super) fn new(
        exec: Arc<Exec>,
        rx: watch::Receiver<u64>,
        cursor: LogCursor,
        attached: bool,
        idle_seen: u64,
    ) -> Self {
        Self {
            exec,
            rx,
            cursor,
            scratch: VecDeque::new(),
            attached,
            started_sent: false,
            finished: false,
            detached: false,
            idle_seen,
        }
    }

    pub fn exec(&self) -> &Arc<Exec> {
        &self.exec
    }

    /// Pushes the events available now (about `max` output chunks at most); returns true once
    /// the terminal event has been pushed (nothing follows it).
    pub fn poll(&mut self, out: &mut VecDeque<ExecEvent>, max: usize) -> bool {
        if self.finished {
            return true;
        }
        self.rx.borrow_and_update();
        let inner = self.exec.lock();
        if !self.started_sent {
            match (inner.pid, &inner.terminal) {
                (Some(pid), _) => {
                    out.push_back(ExecEvent::Started {
                        pid,
                        attached: self.attached,
                    });
                    self.started_sent = true;
                }
                (None, Some(terminal)) => {
                    out.push_back(ExecEvent::Finished(terminal.clone()));
                    self.finished = true;
                    return true;
                }
                (None, None) => return false,
            }
        }
        if inner.idle_notices > self.idle_seen {
            self.idle_seen = inner.idle_notices;
            out.push_back(ExecEvent::Idle {
                silent: inner.idle_silent,
            });
        }
        let drained = inner.log.read(&mut self.cursor, &mut self.scratch, max);
        out.extend(self.scratch.drain(..).map(|item| match item {
            LogItem::Output(chunk) => ExecEvent::Output(chunk),
            LogItem::Gap {
                stream,
                offset,
                length,
            } => ExecEvent::Gap {
                stream,
                offset,
                length,
            },
        }));
        if drained && let Some(terminal) = &inner.terminal {
            out.push_back(ExecEvent::Finished(terminal.clone()));
            self.finished = true;
        }
        self.finished
    }

    /// Waits until the exec changes (new output, state, notice).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Marks this reader as leaving on purpose: the process keeps running whatever the policy.
    pub fn detach(&mut self) {
        self.detached = true;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.exec.unsubscribe(self.detached, self.finished);
    }
}
