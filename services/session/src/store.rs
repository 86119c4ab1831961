//! Durable state: sessions, messages and the per-session event log.
//!
//! [`Store`] is the domain's storage trait, used as `Arc<dyn Store>`; [`sqlite::SqliteStore`]
//! (embedded default) and [`postgres::PostgresStore`] implement it and pass the same
//! behavioural test suite. Scope enforcement lives in the queries: a session whose scopes do
//! not match the caller's [`Scope`] is invisible (`None`, not counted, not updated, not
//! deleted). Migrations are embedded in the binary and run when a store opens.

pub mod cursor;
pub mod postgres;
pub mod runs;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use cognition_proto::scope::Scope;
use uuid::Uuid;

pub use self::cursor::{Cursor, CursorError};
pub use self::runs::{Lease, LeaseRenewal, NewRun, Notification, Notifications, Run, RunState};
use crate::config::{Config, PersistenceBackend, redact_uri};
use crate::domain::{Message, NewMessage, NewSession, Session, SessionPatch, StringMap};
use crate::event::{EventKind, StoredEvent};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no database URL: COGNITION_PERSISTENCE_URI is required for PostgreSQL")]
    MissingUri,
    #[error("invalid database URL {uri}: {source}")]
    InvalidUri { uri: String, source: sqlx::Error },
    #[error("creating data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("connecting to {uri}: {source}")]
    Connect { uri: String, source: sqlx::Error },
    #[error("running migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored row does not decode: {0}")]
    Decode(String),
    #[error("session {0} does not exist")]
    SessionNotFound(Uuid),
    #[error("scope key {0:?} cannot be used in a query")]
    InvalidScopeKey(String),
    /// The session already has an active (queued or running) run.
    #[error("session {0} already has an active run")]
    Busy(Uuid),
}

impl Error {
    pub(crate) fn decode(what: impl std::fmt::Display) -> Self {
        Error::Decode(what.to_string())
    }
}

/// A page request for [`Store::list_sessions`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionQuery {
    /// Every entry must equal the session's metadata entry.
    pub metadata: StringMap,
    /// Page size (≥ 1).
    pub limit: u32,
    /// Continue after this position (from a previous page's `next_cursor`).
    pub cursor: Option<Cursor>,
}

/// One page of sessions, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPage {
    pub sessions: Vec<Session>,
    /// Sessions matching the scope and filter, over all pages.
    pub total: u64,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

impl SessionPage {
    /// A page from rows fetched with `LIMIT limit + 1`: the extra row, when present, only says
    /// that another page exists, and the cursor points after the last row kept.
    pub(crate) fn from_overfetch(mut sessions: Vec<Session>, limit: u32, total: u64) -> Self {
        let next_cursor = if sessions.len() > limit as usize {
            sessions.truncate(limit as usize);
            sessions.last().map(Cursor::after)
        } else {
            None
        };
        SessionPage {
            sessions,
            total,
            next_cursor,
        }
    }
}

/// One page of a session's messages, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    pub total: u64,
    pub has_more: bool,
}

/// Storage of sessions, messages and events.
///
/// Methods taking a [`Scope`] only see sessions that scope [permits](Scope::permits); an empty
/// scope (scoping disabled, or an internal caller) sees everything. Appends are internal (the
/// agent loop) and take no scope.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is.
    fn backend(&self) -> PersistenceBackend;

    async fn create_session(&self, new: NewSession) -> Result<Session, Error>;
    async fn get_session(&self, scope: &Scope, id: Uuid) -> Result<Option<Session>, Error>;
    async fn list_sessions(
        &self,
        scope: &Scope,
        query: &SessionQuery,
    ) -> Result<SessionPage, Error>;
    /// Applies `patch`; `None` when the session is unknown or out of scope.
    async fn update_session(
        &self,
        scope: &Scope,
        id: Uuid,
        patch: &SessionPatch,
    ) -> Result<Option<Session>, Error>;
    /// Deletes the session with its messages and events; `false` when unknown or out of scope.
    async fn delete_session(&self, scope: &Scope, id: Uuid) -> Result<bool, Error>;

    /// Appends a message at the end of the conversation and bumps `message_count`.
    /// [`Error::SessionNotFound`] when the session does not exist.
    async fn append_message(&self, session_id: Uuid, new: NewMessage) -> Result<Message, Error>;
    /// A page of messages, oldest first; `None` when the session is unknown or out of scope.
    async fn list_messages(
        &self,
        scope: &Scope,
        session_id: Uuid,
        limit: u32,
        offset: u64,
    ) -> Result<Option<MessagePage>, Error>;
    async fn get_message(
        &self,
        scope: &Scope,
        session_id: Uuid,
        message_id: Uuid,
    ) -> Result<Option<Message>, Error>;

    /// Appends an event; the store assigns the next per-session `seq` atomically, so concurrent
    /// appends get distinct, increasing numbers, and a `seq` is visible only once every lower
    /// one is. [`Error::SessionNotFound`] when the session does not exist.
    async fn append_event(
        &self,
        session_id: Uuid,
        run_id: Option<Uuid>,
        kind: &EventKind,
    ) -> Result<StoredEvent, Error>;
    /// Appends several events of one session at once, in order, with consecutive `seq`s
    /// (one transaction: the agent loop's group commit of events that queued up while the
    /// previous write was in flight). At most [`MAX_EVENT_BATCH`] events.
    async fn append_events(
        &self,
        session_id: Uuid,
        run_id: Option<Uuid>,
        kinds: &[EventKind],
    ) -> Result<Vec<StoredEvent>, Error>;
    /// Events with `seq > after_seq`, in order, at most `limit`.
    async fn events_after(
        &self,
        session_id: Uuid,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, Error>;

    /// The highest event `seq` of the session (0: none yet).
    async fn last_event_seq(&self, session_id: Uuid) -> Result<u64, Error>;
    /// The whole conversation of a session, oldest first (internal: no scope).
    async fn conversation(&self, session_id: Uuid) -> Result<Vec<Message>, Error>;

    // Runs (see `crate::run`). At most one run per session is `running`, enforced by the
    // database; `queued` runs start in creation order.

    /// Creates a run and starts it at once, owned by `lease.owner`, appending its user message
    /// in the same transaction. [`Error::Busy`] when the session has a queued or running run;
    /// [`Error::SessionNotFound`] when the session does not exist.
    async fn start_run(&self, new: NewRun, lease: &Lease) -> Result<(Run, Message), Error>;
    /// Creates a queued run, to start after the session's earlier runs.
    async fn enqueue_run(&self, new: NewRun) -> Result<Run, Error>;
    /// Starts the session's oldest queued run when none is running (appending its user
    /// message); `None` when there is nothing to start or another run is running.
    async fn start_next_run(
        &self,
        session_id: Uuid,
        lease: &Lease,
    ) -> Result<Option<(Run, Message)>, Error>;
    /// Sessions that have queued runs but no running one (at most `limit`).
    async fn sessions_with_startable_runs(&self, limit: u32) -> Result<Vec<Uuid>, Error>;
    async fn get_run(&self, run_id: Uuid) -> Result<Option<Run>, Error>;
    /// The session's running run, if any.
    async fn running_run(&self, session_id: Uuid) -> Result<Option<Run>, Error>;
    /// Marks the session's running run cancel-requested and tells the other replicas; returns
    /// it (`None`: no running run).
    async fn request_cancel(&self, session_id: Uuid) -> Result<Option<Run>, Error>;
    /// Extends the leases of those of `run_ids` that are running and held by `lease.owner`;
    /// returns them (a run missing from the answer is no longer this owner's).
    async fn renew_leases(
        &self,
        lease: &Lease,
        run_ids: &[Uuid],
    ) -> Result<Vec<LeaseRenewal>, Error>;
    /// Takes over (sets the lease of) up to `limit` running runs whose lease expired before
    /// `now`; the caller then closes them.
    async fn take_over_expired_runs(
        &self,
        lease: &Lease,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Vec<Run>, Error>;
    /// Ends a running run held by `owner` in the terminal `state` and appends its last event
    /// (`done`) in the same transaction, so a run is never terminal without its `done` nor
    /// `done` without being terminal. `None` (nothing changed) when the run is not running or
    /// someone else holds it.
    async fn finish_run(
        &self,
        run_id: Uuid,
        owner: &str,
        state: RunState,
        error: Option<&str>,
        done: &EventKind,
    ) -> Result<Option<StoredEvent>, Error>;
    /// Notifications from other replicas (PostgreSQL LISTEN/NOTIFY); `None` for a backend
    /// that serves a single replica (SQLite), where in-process fan-out is complete.
    async fn notifications(&self) -> Result<Option<Notifications>, Error>;

    /// Closes the connection pools (waits for in-flight queries).
    async fn close(&self);
}

/// Most events [`Store::append_events`] takes at once (bind-parameter limits).
pub const MAX_EVENT_BATCH: usize = 256;

/// A migration that [`migrate`] applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub description: String,
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub backend: PersistenceBackend,
    /// Migrations applied by this call, oldest first (empty when already up to date).
    pub applied: Vec<AppliedMigration>,
    /// The schema version after the call.
    pub current_version: Option<i64>,
}

/// Opens the configured store and brings its schema up to date.
pub async fn open(config: &Config) -> Result<Arc<dyn Store>, Error> {
    let url = config.database_url().ok_or(Error::MissingUri)?;
    Ok(match config.persistence_backend {
        PersistenceBackend::Sqlite => {
            let store = sqlite::SqliteStore::connect(&url, config.db_max_connections).await?;
            store.migrate().await?;
            Arc::new(store)
        }
        PersistenceBackend::Postgres => {
            let store = postgres::PostgresStore::connect(&url, config.db_max_connections).await?;
            store.migrate().await?;
            Arc::new(store)
        }
    })
}

/// Applies pending migrations of the configured database (idempotent). Used at start and by
/// `cognition db upgrade`.
pub async fn migrate(config: &Config) -> Result<MigrationReport, Error> {
    let url = config.database_url().ok_or(Error::MissingUri)?;
    match config.persistence_backend {
        PersistenceBackend::Sqlite => {
            let store = sqlite::SqliteStore::connect(&url, 1).await?;
            let report = store.migrate().await;
            store.close_pools().await;
            report
        }
        PersistenceBackend::Postgres => {
            let store = postgres::PostgresStore::connect(&url, 1).await?;
            let report = store.migrate().await;
            store.close_pools().await;
            report
        }
    }
}

/// The schema version of the configured database (`None`: never migrated). Changes nothing.
/// Used by `cognition db current`.
pub async fn current_version(config: &Config) -> Result<Option<i64>, Error> {
    let url = config.database_url().ok_or(Error::MissingUri)?;
    match config.persistence_backend {
        PersistenceBackend::Sqlite => sqlite::current_version(&url).await,
        PersistenceBackend::Postgres => postgres::current_version(&url).await,
    }
}

/// Builds a [`MigrationReport`] from the versions applied before and after running.
fn report(
    backend: PersistenceBackend,
    migrator: &sqlx::migrate::Migrator,
    before: &[i64],
    after: &[i64],
) -> MigrationReport {
    let applied = migrator
        .iter()
        .filter(|m| after.contains(&m.version) && !before.contains(&m.version))
        .map(|m| AppliedMigration {
            version: m.version,
            description: m.description.to_string(),
        })
        .collect();
    MigrationReport {
        backend,
        applied,
        current_version: after.iter().copied().max(),
    }
}

fn connect_error(uri: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |source| Error::Connect {
        uri: redact_uri(uri),
        source,
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::decode(format_args!("negative {what}: {value}")))
}
