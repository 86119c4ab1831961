//! Appending, publishing and watching a session's events.
//!
//! Every event is appended to the durable log first (the store assigns its `seq`), then
//! published in-process on a per-session broadcast channel ([`EventHub`]). A watcher
//! ([`EventLog::watch`]) subscribes *before* it reads the log, replays the log after its
//! position, then follows live events, de-duplicating by `seq`. A gap in the live sequence (two
//! appenders publishing out of order, or a slow watcher that lagged behind the bounded channel)
//! is filled from the log, so a watcher neither misses nor repeats an event.
//!
//! The agent loop appends with [`EventLog::append`]; the gRPC `WatchEvents` and `SendMessage`
//! streams read with [`EventLog::watch`].
//!
//! Across replicas (PostgreSQL): every append also sends a `NOTIFY` (session id and seq only,
//! never the event itself; see `store::postgres`). Each replica's notification task calls
//! [`EventLog::on_remote_append`], which reads the announced events from the log once per
//! replica and publishes them to that replica's watchers, so a watcher on replica B follows a
//! run owned by replica A live. After a lost notification connection,
//! [`EventLog::resync`] makes every local watcher re-read the log. With SQLite (embedded, a
//! single replica) the in-process hub is the whole fan-out.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use futures::Stream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::event::{EventKind, StoredEvent};
use crate::store::{self, Store};

/// Live events buffered per session before a slow watcher lags (and then catches up from the
/// log).
pub const LIVE_CAPACITY: usize = 1024;

/// Events read from the log per query while replaying.
pub const REPLAY_PAGE: u32 = 256;

type Channels = Mutex<HashMap<Uuid, broadcast::Sender<Arc<StoredEvent>>>>;

/// Per-session broadcast channels of live events. A channel exists while someone watches.
#[derive(Debug, Default)]
pub struct EventHub {
    channels: Arc<Channels>,
}

impl EventHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts receiving the live events of `session_id`.
    pub fn subscribe(&self, session_id: Uuid) -> Subscription {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = channels
            .entry(session_id)
            .or_insert_with(|| broadcast::channel(LIVE_CAPACITY).0)
            .subscribe();
        Subscription {
            rx: Some(rx),
            session_id,
            channels: Arc::clone(&self.channels),
        }
    }

    /// Delivers `event` to the current watchers of its session (none: nothing happens).
    pub fn publish(&self, event: Arc<StoredEvent>) {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = channels.get(&event.session_id) {
            // An error only means that every receiver is gone; their guards remove the entry.
            let _ = tx.send(event);
        }
    }

    /// Ends every watch of `session_id` (the session was deleted).
    pub fn close(&self, session_id: Uuid) {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels.remove(&session_id);
    }

    /// Whether `session_id` has watchers here.
    pub fn has_watchers(&self, session_id: Uuid) -> bool {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&session_id)
    }

    /// The sessions that currently have watchers.
    pub fn watched_session_ids(&self) -> Vec<Uuid> {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    /// Number of sessions that currently have watchers.
    pub fn watched_sessions(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A live subscription; dropping the last one of a session removes its channel.
#[derive(Debug)]
pub struct Subscription {
    rx: Option<broadcast::Receiver<Arc<StoredEvent>>>,
    session_id: Uuid,
    channels: Arc<Channels>,
}

impl Subscription {
    async fn recv(&mut self) -> Result<Arc<StoredEvent>, broadcast::error::RecvError> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        drop(self.rx.take());
        if channels
            .get(&self.session_id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            channels.remove(&self.session_id);
        }
    }
}

/// The durable event log plus its live channels: the one way to append and to watch events.
#[derive(Clone)]
pub struct EventLog {
    store: Arc<dyn Store>,
    hub: Arc<EventHub>,
    /// Per watched session, the highest seq published from another replica's notification.
    remote: Arc<Mutex<HashMap<Uuid, u64>>>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

impl EventLog {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            hub: Arc::new(EventHub::new()),
            remote: Arc::default(),
        }
    }

    /// Appends several events at once (see [`Store::append_events`]), then publishes them.
    pub async fn append_batch(
        &self,
        session_id: Uuid,
        run_id: Option<Uuid>,
        kinds: &[EventKind],
    ) -> Result<Vec<Arc<StoredEvent>>, store::Error> {
        let mut out = Vec::with_capacity(kinds.len());
        for chunk in kinds.chunks(store::MAX_EVENT_BATCH) {
            let appended = self.store.append_events(session_id, run_id, chunk).await?;
            crate::metrics::events_appended(appended.len());
            for event in appended {
                let event = Arc::new(event);
                self.hub.publish(Arc::clone(&event));
                out.push(event);
            }
        }
        Ok(out)
    }

    /// Another replica appended events `first..=seq` to `session_id`: when someone watches
    /// that session here, read the events not yet published from the log and publish them.
    /// Coalesces: a burst of notifications costs one read per batch, not one per event.
    pub async fn on_remote_append(&self, session_id: Uuid, first: u64, seq: u64) {
        if !self.hub.has_watchers(session_id) {
            self.remote
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&session_id);
            return;
        }
        let after = {
            let remote = self.remote.lock().unwrap_or_else(PoisonError::into_inner);
            match remote.get(&session_id) {
                Some(&published) if published >= seq => return,
                // Watchers fill older gaps from the log themselves.
                Some(&published) => published.max(seq.saturating_sub(REPLAY_PAGE.into())),
                None => first
                    .saturating_sub(1)
                    .max(seq.saturating_sub(REPLAY_PAGE.into())),
            }
        };
        match self
            .store
            .events_after(session_id, after, REPLAY_PAGE)
            .await
        {
            Ok(events) => {
                let mut highest = after;
                for event in events {
                    highest = highest.max(event.seq);
                    self.hub.publish(Arc::new(event));
                }
                let mut remote = self.remote.lock().unwrap_or_else(PoisonError::into_inner);
                let entry = remote.entry(session_id).or_insert(0);
                *entry = (*entry).max(highest);
            }
            Err(e) => {
                tracing::warn!(%session_id, error = %e, "reading remotely appended events failed")
            }
        }
    }

    /// Notifications may have been lost: nudge every watched session's watchers to re-read
    /// the log (they see a gap and catch up).
    pub async fn resync(&self) {
        for session_id in self.hub.watched_session_ids() {
            let last = match self.store.last_event_seq(session_id).await {
                Ok(last) if last > 0 => last,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(%session_id, error = %e, "resync: reading the log failed");
                    continue;
                }
            };
            self.remote
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&session_id);
            self.on_remote_append(session_id, last, last).await;
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn hub(&self) -> &EventHub {
        &self.hub
    }

    /// Appends an event to the session's log, then publishes it to live watchers. Returns the
    /// stored event with its `seq`. Fails with [`store::Error::SessionNotFound`] for an unknown
    /// session.
    pub async fn append(
        &self,
        session_id: Uuid,
        run_id: Option<Uuid>,
        kind: EventKind,
    ) -> Result<Arc<StoredEvent>, store::Error> {
        let event = Arc::new(self.store.append_event(session_id, run_id, &kind).await?);
        crate::metrics::events_appended(1);
        self.hub.publish(Arc::clone(&event));
        Ok(event)
    }

    /// Ends a run (see [`Store::finish_run`]) with its `done` event, then publishes the event.
    /// `None` when the run was not running under `owner` (nothing appended).
    pub async fn finish_run(
        &self,
        run_id: Uuid,
        owner: &str,
        state: store::RunState,
        error: Option<&str>,
        done: EventKind,
    ) -> Result<Option<Arc<StoredEvent>>, store::Error> {
        let event = self
            .store
            .finish_run(run_id, owner, state, error, &done)
            .await?
            .map(Arc::new);
        if let Some(event) = &event {
            crate::metrics::events_appended(1);
            self.hub.publish(Arc::clone(event));
        }
        Ok(event)
    }

    /// The session's events after `after_seq`: first from the log, then live, in `seq` order,
    /// each exactly once. With `until_done` the stream ends after the first `done` event it
    /// yields. It also ends when `shutdown` is cancelled, when the session is deleted, or after
    /// yielding a store error. The caller checks that the session exists and is in scope.
    pub fn watch(
        &self,
        session_id: Uuid,
        after_seq: u64,
        until_done: bool,
        shutdown: CancellationToken,
    ) -> impl Stream<Item = Result<Arc<StoredEvent>, store::Error>> + Send + 'static {
        let watch = Watch {
            store: Arc::clone(&self.store),
            // Subscribe before the first read of the log: nothing published after the read can
            // be missed.
            live: self.hub.subscribe(session_id),
            session_id,
            last: after_seq,
            pending: VecDeque::new(),
            caught_up: false,
            until_done,
            finished: false,
            shutdown,
        };
        futures::stream::unfold(watch, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        })
    }
}

struct Watch {
    store: Arc<dyn Store>,
    live: Subscription,
    session_id: Uuid,
    /// Highest `seq` yielded (or the starting point).
    last: u64,
    pending: VecDeque<Arc<StoredEvent>>,
    /// Whether the log has been read up to the live channel.
    caught_up: bool,
    until_done: bool,
    finished: bool,
    shutdown: CancellationToken,
}

impl Watch {
    async fn next(&mut self) -> Option<Result<Arc<StoredEvent>, store::Error>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                if event.seq <= self.last {
                    continue;
                }
                self.last = event.seq;
                if self.until_done && event.kind.is_done() {
                    self.finished = true;
                }
                return Some(Ok(event));
            }
            if !self.caught_up {
                let page = tokio::select! {
                    _ = self.shutdown.cancelled() => return None,
                    page = self.store.events_after(self.session_id, self.last, REPLAY_PAGE) => page,
                };
                match page {
                    Ok(events) => {
                        self.caught_up = events.len() < REPLAY_PAGE as usize;
                        self.pending.extend(events.into_iter().map(Arc::new));
                        continue;
                    }
                    Err(e) => {
                        self.finished = true;
                        return Some(Err(e));
                    }
                }
            }
            let received = tokio::select! {
                // Events already published go out before a shutdown ends the stream (a run
                // closed by shutdown publishes its last events just before).
                biased;
                received = self.live.recv() => received,
                _ = self.shutdown.cancelled() => return None,
            };
            match received {
                Ok(event) if event.seq <= self.last => {}
                Ok(event) if event.seq == self.last + 1 => self.pending.push_back(event),
                // A gap (out-of-order publish) or a lag: the log has everything up to here.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.caught_up = false,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::now;

    fn event(session_id: Uuid, seq: u64) -> Arc<StoredEvent> {
        Arc::new(StoredEvent {
            session_id,
            seq,
            run_id: None,
            created_at: now(),
            kind: EventKind::Token {
                content: seq.to_string(),
            },
        })
    }

    #[tokio::test]
    async fn publishes_to_subscribers_of_the_session_only() {
        let hub = EventHub::new();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut sub_a = hub.subscribe(a);
        let mut sub_b = hub.subscribe(b);
        hub.publish(event(a, 1));
        assert_eq!(sub_a.recv().await.unwrap().seq, 1);
        assert!(sub_b.rx.as_mut().unwrap().try_recv().is_err());
    }

    #[tokio::test]
    async fn channels_disappear_with_their_last_subscriber() {
        let hub = EventHub::new();
        let id = Uuid::new_v4();
        let first = hub.subscribe(id);
        let second = hub.subscribe(id);
        assert_eq!(hub.watched_sessions(), 1);
        drop(first);
        assert_eq!(hub.watched_sessions(), 1);
        drop(second);
        assert_eq!(hub.watched_sessions(), 0);
        hub.publish(event(id, 1));
        assert_eq!(hub.watched_sessions(), 0);
    }

    #[tokio::test]
    async fn close_ends_subscriptions() {
        let hub = EventHub::new();
        let id = Uuid::new_v4();
        let mut sub = hub.subscribe(id);
        hub.close(id);
        assert!(matches!(
            sub.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
    }
}
