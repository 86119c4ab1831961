//! Agent runs, decoupled from the RPC that started them.
//!
//! `SendMessage` hands a message to [`RunManager::submit`], which creates a run row (owned by
//! this replica through a lease, or queued behind the session's active run), stores the user
//! message in the same transaction, and starts the agent loop ([`agent`]) in a background task
//! tracked here. The RPC then only *watches* the run's events ([`RunManager::watch_run`]);
//! closing it does not stop the run.
//!
//! - **One writer per session**: the database allows one `running` run per session (partial
//!   unique index, plus a row lock on PostgreSQL), so two replicas cannot both start one. A
//!   busy session gets [`SubmitError::Busy`] (409), or the message is queued (`enqueue`: it
//!   starts after the earlier runs, in order, and its user message joins the conversation
//!   when it starts), or the active run is aborted first (`interrupt`).
//! - **Abort from any replica** ([`RunManager::abort`]): the run row is marked
//!   cancel-requested; the owner stops at once when it is this replica, otherwise on the
//!   PostgreSQL notification, or at the latest on its next heartbeat (which reads the flag).
//! - **Leases**: the owner renews its runs' leases every `run_heartbeat_ms`; a replica that
//!   dies stops renewing, and after `run_lease_ms` any replica's sweep ([`recovery`]) closes
//!   the run: `error` + `done`, the user message and the partial reply kept.
//! - **Shutdown**: local runs are stopped and closed as interrupted with their terminal
//!   events before the replica exits (watchers see the end at once, no lease wait); queued
//!   runs stay queued for the other replicas (or the next start).

pub mod agent;
pub mod context;
pub mod local;
pub mod profile;
pub mod recovery;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cognition_telemetry::TraceParent;
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::callback::{CallbackError, Callbacks};
use crate::domain::{Message, Session};
use crate::event::StoredEvent;
use crate::event_log::EventLog;
use crate::llm::ModelClient;
use crate::store::{self, Lease, NewRun, Notification, Run, Store};
use crate::tools::Toolbox;

use self::local::{Registry, StopReason};

/// Sessions looked at per sweep (expired leases, startable queued runs).
const SWEEP_BATCH: u32 = 64;
/// How long shutdown waits for local runs to write their terminal events.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Settings of the run machinery (from the service configuration).
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// This replica's name as lease owner.
    pub replica_id: String,
    pub lease: Duration,
    pub heartbeat: Duration,
    pub sweep: Duration,
    /// Model calls per turn when the session sets none.
    pub recursion_limit: u32,
}

impl RunSettings {
    pub fn from_config(config: &crate::Config) -> Self {
        Self {
            replica_id: config
                .replica_id
                .clone()
                .unwrap_or_else(|| format!("replica-{}", Uuid::new_v4().simple())),
            lease: Duration::from_millis(config.run_lease_ms),
            heartbeat: Duration::from_millis(config.run_heartbeat_ms),
            sweep: Duration::from_millis(config.run_sweep_ms),
            recursion_limit: config.recursion_limit,
        }
    }
}

/// What to do with a message for a session that has an active run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBusy {
    /// Refuse it (409 CONFLICT).
    #[default]
    Reject,
    /// Queue it behind the active run.
    Enqueue,
    /// Abort the active run, then run this one.
    Interrupt,
}

/// A user message to run.
#[derive(Debug, Clone, PartialEq)]
pub struct SendRequest {
    pub content: String,
    pub model: Option<String>,
    pub parent_id: Option<Uuid>,
    pub callback_url: Option<String>,
    pub on_busy: OnBusy,
}

/// An accepted message: its run, and where its events start in the session's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub run: Run,
    /// Every event of the run has a larger `seq`.
    pub after_seq: u64,
    /// The stored user message (`None` while the run is queued).
    pub user_message: Option<Message>,
}

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("session {0} already has an active run")]
    Busy(Uuid),
    #[error(transparent)]
    Callback(#[from] CallbackError),
    #[error("the session service is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(store::Error),
}

impl From<store::Error> for SubmitError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::Busy(id) => SubmitError::Busy(id),
            other => SubmitError::Store(other),
        }
    }
}

/// What an abort did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortOutcome {
    /// The run was asked to stop (it ends with `error{ABORTED}`, `status{cancelled}`, `done`).
    Requested { run_id: Uuid, local: bool },
    /// Nothing is running.
    Idle,
}

pub(crate) struct Inner {
    pub(crate) settings: RunSettings,
    pub(crate) events: EventLog,
    pub(crate) model: Arc<dyn ModelClient>,
    pub(crate) toolbox: Toolbox,
    pub(crate) callbacks: Callbacks,
    pub(crate) local: Registry,
    pub(crate) tasks: TaskTracker,
    /// Set on shutdown: nothing new starts here.
    pub(crate) stopping: CancellationToken,
    /// Stops the background tasks (heartbeats, sweeps, notifications).
    background: CancellationToken,
}

impl Inner {
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        self.events.store()
    }

    pub(crate) fn lease(&self) -> Lease {
        Lease {
            owner: self.settings.replica_id.clone(),
            until: crate::domain::now()
                + chrono::Duration::from_std(self.settings.lease)
                    .unwrap_or(chrono::Duration::seconds(10)),
        }
    }
}

/// Starts, tracks, aborts and recovers agent runs. Cheap to clone.
#[derive(Clone)]
pub struct RunManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RunManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunManager")
            .field("replica_id", &self.inner.settings.replica_id)
            .field("local_runs", &self.inner.local.len())
            .finish()
    }
}

impl RunManager {
    pub fn new(
        settings: RunSettings,
        events: EventLog,
        model: Arc<dyn ModelClient>,
        toolbox: Toolbox,
        callbacks: Callbacks,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                events,
                model,
                toolbox,
                callbacks,
                local: Registry::default(),
                tasks: TaskTracker::new(),
                stopping: CancellationToken::new(),
                background: CancellationToken::new(),
            }),
        }
    }

    pub fn replica_id(&self) -> &str {
        &self.inner.settings.replica_id
    }

    /// Number of runs executing on this replica.
    pub fn local_runs(&self) -> usize {
        self.inner.local.len()
    }

    /// Accepts a message for `session` (already checked to exist and be in scope): creates
    /// its run per `on_busy` and starts it when the session is free.
    pub async fn submit(
        &self,
        session: &Session,
        request: SendRequest,
    ) -> Result<Accepted, SubmitError> {
        if self.inner.stopping.is_cancelled() {
            return Err(SubmitError::ShuttingDown);
        }
        if let Some(url) = &request.callback_url {
            crate::callback::check_url(url, self.inner.callbacks.settings().allow_private)?;
        }
        let store = self.inner.store();
        let after_seq = store.last_event_seq(session.id).await?;
        let new = NewRun {
            session_id: session.id,
            content: request.content,
            model: request.model,
            parent_id: request.parent_id,
            callback_url: request.callback_url,
        };
        match store.start_run(new.clone(), &self.inner.lease()).await {
            Ok((run, message)) => {
                spawn(&self.inner, run.clone(), message.clone());
                return Ok(Accepted {
                    run,
                    after_seq,
                    user_message: Some(message),
                });
            }
            Err(store::Error::Busy(_)) if request.on_busy != OnBusy::Reject => {}
            Err(e) => return Err(e.into()),
        }
        if request.on_busy == OnBusy::Interrupt {
            self.abort(session.id).await?;
        }
        let run = store.enqueue_run(new).await?;
        tracing::debug!(session_id = %session.id, run_id = %run.id, "run queued");
        // The active run may have ended between the two statements.
        start_next(&self.inner, session.id).await;
        Ok(Accepted {
            run,
            after_seq,
            user_message: None,
        })
    }

    /// Asks the session's running run to stop, wherever it runs.
    pub async fn abort(&self, session_id: Uuid) -> Result<AbortOutcome, store::Error> {
        let Some(run) = self.inner.store().request_cancel(session_id).await? else {
            return Ok(AbortOutcome::Idle);
        };
        let local = self.inner.local.stop(run.id, StopReason::Abort);
        tracing::info!(%session_id, run_id = %run.id, local, "abort requested");
        Ok(AbortOutcome::Requested {
            run_id: run.id,
            local,
        })
    }

    /// The session was deleted: stop its run here at once, writing nothing (its rows are
    /// gone; a run on another replica stops at its next write).
    pub fn session_deleted(&self, session_id: Uuid) {
        if let Some(run_id) = self.inner.local.run_of_session(session_id) {
            self.inner.local.stop(run_id, StopReason::LeaseLost);
        }
    }

    /// The events of one run, from the log after `after_seq` then live, ending with its
    /// `done` (or when `shutdown` is cancelled or the session is deleted).
    pub fn watch_run(
        &self,
        session_id: Uuid,
        run_id: Uuid,
        after_seq: u64,
        shutdown: CancellationToken,
    ) -> impl Stream<Item = Result<Arc<StoredEvent>, store::Error>> + Send + 'static {
        let events = Box::pin(
            self.inner
                .events
                .watch(session_id, after_seq, false, shutdown),
        );
        futures::stream::unfold((events, false), move |(mut events, ended)| async move {
            if ended {
                return None;
            }
            loop {
                match events.next().await? {
                    Ok(event) if event.run_id == Some(run_id) => {
                        let done = event.kind.is_done();
                        return Some((Ok(event), (events, done)));
                    }
                    Ok(_) => {}
                    Err(e) => return Some((Err(e), (events, true))),
                }
            }
        })
    }

    /// Starts the background work of this replica: lease heartbeats, the recovery sweep
    /// (also once right away) and, with PostgreSQL, the notification listener. They stop on
    /// [`RunManager::shutdown`].
    pub fn start_background(&self) {
        let inner = &self.inner;
        let shutdown = inner.background.clone();
        inner
            .tasks
            .spawn(heartbeats(Arc::clone(inner), shutdown.clone()));
        inner
            .tasks
            .spawn(sweeps(Arc::clone(inner), shutdown.clone()));
        inner
            .tasks
            .spawn(notifications(Arc::clone(inner), shutdown));
    }

    /// Stops accepting messages, closes the local runs as interrupted (with their terminal
    /// events), and waits (bounded) for them and the background tasks.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.stopping.cancel();
        inner.local.stop_all(StopReason::Shutdown);
        inner.background.cancel();
        inner.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = inner.local.len(),
                "runs did not finish within the shutdown grace; their leases will expire"
            );
        }
    }
}

/// Starts executing `run` (already `running` under our lease) in a tracked task; when it
/// ends, starts the session's next queued run.
///
/// The task is detached from the caller, but its `turn` span stays in the caller's trace: it is
/// the child of the span current here (the `SendMessage` call for a run started at once). A
/// queued run started later by another run's end or by the sweep has no such span and starts
/// a trace of its own.
pub(crate) fn spawn(inner: &Arc<Inner>, run: Run, user_message: Message) {
    let handle = inner.local.register(run.id, run.session_id);
    let task_inner = Arc::clone(inner);
    let parent = TraceParent::current();
    inner.tasks.spawn(async move {
        let (run_id, session_id) = (run.id, run.session_id);
        agent::execute(&task_inner, run, user_message, handle, parent).await;
        task_inner.local.remove(run_id);
        start_next(&task_inner, session_id).await;
    });
}

/// Starts the session's oldest queued run if it can (none running, not shutting down).
pub(crate) async fn start_next(inner: &Arc<Inner>, session_id: Uuid) {
    if inner.stopping.is_cancelled() {
        return;
    }
    match inner
        .store()
        .start_next_run(session_id, &inner.lease())
        .await
    {
        Ok(Some((run, message))) => {
            tracing::debug!(%session_id, run_id = %run.id, "queued run started");
            spawn(inner, run, message);
        }
        Ok(None) | Err(store::Error::Busy(_)) => {}
        Err(e) => {
            tracing::warn!(%session_id, error = %e, "starting a queued run failed; the sweep retries")
        }
    }
}

async fn heartbeats(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(inner.settings.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let ids = inner.local.ids();
        if ids.is_empty() {
            continue;
        }
        match inner.store().renew_leases(&inner.lease(), &ids).await {
            Ok(renewed) => {
                for r in &renewed {
                    if r.cancel_requested {
                        inner.local.stop(r.run_id, StopReason::Abort);
                    }
                }
                for id in inner.local.ids_registered_before(started) {
                    if ids.contains(&id) && !renewed.iter().any(|r| r.run_id == id) {
                        tracing::warn!(run_id = %id, "lost the run's lease; stopping it here");
                        inner.local.stop(id, StopReason::LeaseLost);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "renewing run leases failed"),
        }
    }
}

async fn sweeps(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(inner.settings.sweep);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if inner.stopping.is_cancelled() {
            return;
        }
        sweep(&inner).await;
    }
}

/// Closes runs whose lease expired and starts queued runs nobody started.
pub(crate) async fn sweep(inner: &Arc<Inner>) {
    let store = inner.store();
    match store
        .take_over_expired_runs(&inner.lease(), crate::domain::now(), SWEEP_BATCH)
        .await
    {
        Ok(runs) => {
            for run in runs {
                if inner.local.contains(run.id) {
                    // Our own run whose heartbeat was late: the take-over renewed its lease.
                    continue;
                }
                tracing::warn!(run_id = %run.id, session_id = %run.session_id,
                    previous_owner = ?run.owner, "closing a run whose replica stopped");
                let inner = Arc::clone(inner);
                let session_id = run.session_id;
                inner.tasks.clone().spawn(async move {
                    recovery::close(&inner, run).await;
                    start_next(&inner, session_id).await;
                });
            }
        }
        Err(e) => tracing::warn!(error = %e, "looking for expired runs failed"),
    }
    match store.sessions_with_startable_runs(SWEEP_BATCH).await {
        Ok(sessions) => {
            for session_id in sessions {
                start_next(inner, session_id).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "looking for queued runs failed"),
    }
}

async fn notifications(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut stream = match inner.store().notifications().await {
        Ok(Some(stream)) => stream,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for notifications; cross-replica events \
                and aborts fall back to heartbeats");
            return;
        }
    };
    loop {
        let notification = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = stream.next() => n,
        };
        match notification {
            None => return,
            Some(Notification::Event {
                session_id,
                first,
                last,
            }) => {
                inner.events.on_remote_append(session_id, first, last).await;
            }
            Some(Notification::CancelRequested { run_id }) => {
                inner.local.stop(run_id, StopReason::Abort);
            }
            Some(Notification::Resync) => inner.events.resync().await,
        }
    }
}
