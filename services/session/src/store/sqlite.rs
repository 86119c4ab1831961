//! [`Store`] on a SQLite file (the embedded default).
//!
//! WAL journal, `synchronous=NORMAL`, a busy timeout and foreign keys on every connection. Two
//! pools: one writer connection (SQLite allows one writer at a time; queueing in the pool is
//! cheaper than the busy handler's sleeps) and a pool of readers that run concurrently with each
//! other and with the writer. Ids are UUID blobs, times are microseconds since the epoch.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cognition_proto::scope::Scope;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::{Connection, QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::{
    Error, Lease, LeaseRenewal, MessagePage, MigrationReport, NewRun, Notifications, Run, RunState,
    SessionPage, SessionQuery, Store, connect_error, report, to_i64, to_u64,
};
use crate::config::{PersistenceBackend, redact_uri};
use crate::domain::{
    Message, NewMessage, NewSession, Role, Session, SessionConfig, SessionPatch, StringMap,
    ToolCall,
};
use crate::event::{EventKind, StoredEvent};

/// The embedded SQLite migrations (`migrations/sqlite`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const SESSION_COLUMNS: &str = "id, title, thread_id, status, agent_name, metadata, config, scopes, \
     created_at, updated_at, message_count";
const MESSAGE_COLUMNS: &str = "m.id, m.session_id, m.role, m.content, m.tool_calls, m.tool_call_id, \
     m.token_count, m.model_used, m.parent_id, m.created_at";
const EVENT_COLUMNS: &str = "session_id, seq, run_id, type, data, created_at";
const RUN_COLUMNS: &str = "id, session_id, status, content, model, parent_id, callback_url, \
     user_message_id, owner, lease_expires_at, heartbeat_at, cancel_requested, error, created_at, \
     started_at, finished_at";

/// Write transactions that read first take the write lock up front: a deferred transaction
/// that reads, then writes, fails at once ("database is locked") when another connection (a
/// second service instance on the same file) wrote in between.
const IMMEDIATE: &str = "BEGIN IMMEDIATE";

/// How long a connection waits for SQLite's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Sessions, messages and events in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

/// Whether the options name an in-memory database (sqlx names those `file:…`), which has no
/// file and no directory.
fn in_memory(options: &SqliteConnectOptions) -> bool {
    options
        .get_filename()
        .to_string_lossy()
        .starts_with("file:")
}

fn options(url: &str) -> Result<SqliteConnectOptions, Error> {
    SqliteConnectOptions::from_str(url).map_err(|source| Error::InvalidUri {
        uri: redact_uri(url),
        source,
    })
}

impl SqliteStore {
    /// Opens (creating when missing, with its directory) the database at `url`, with up to
    /// `readers` concurrent reader connections. Does not migrate: see [`SqliteStore::migrate`].
    pub async fn connect(url: &str, readers: u32) -> Result<SqliteStore, Error> {
        let options = options(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
            && !in_memory(&options)
        {
            std::fs::create_dir_all(dir).map_err(|source| Error::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        // The writer connects first: it creates the file and switches it to WAL.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await
            .map_err(connect_error(url))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(readers.max(1))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(connect_error(url))?;
        Ok(SqliteStore { writer, reader })
    }

    /// Applies pending migrations (idempotent).
    pub async fn migrate(&self) -> Result<MigrationReport, Error> {
        let before = applied_versions(&mut *self.writer.acquire().await?).await?;
        MIGRATOR.run(&self.writer).await?;
        let after = applied_versions(&mut *self.writer.acquire().await?).await?;
        Ok(report(
            PersistenceBackend::Sqlite,
            &MIGRATOR,
            &before,
            &after,
        ))
    }

    pub(crate) async fn close_pools(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

async fn applied_versions(conn: &mut sqlx::SqliteConnection) -> Result<Vec<i64>, Error> {
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut *conn)
            .await?,
    )
}

/// The schema version of the database at `url`, without creating or changing anything.
pub async fn current_version(url: &str) -> Result<Option<i64>, Error> {
    let options = options(url)?.create_if_missing(false).read_only(true);
    if !in_memory(&options) && !options.get_filename().exists() {
        return Ok(None);
    }
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .map_err(connect_error(url))?;
    let versions = applied_versions(&mut conn).await;
    let _ = conn.close().await;
    Ok(versions?.into_iter().max())
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>, Error> {
    let value: i64 = row.try_get(column)?;
    DateTime::from_timestamp_micros(value)
        .ok_or_else(|| Error::decode(format_args!("{column} out of range: {value}")))
}

fn session_from_row(row: &SqliteRow) -> Result<Session, Error> {
    Ok(Session {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        thread_id: row.try_get("thread_id")?,
        status: row
            .try_get::<&str, _>("status")?
            .parse()
            .map_err(Error::decode)?,
        agent_name: row.try_get("agent_name")?,
        metadata: row.try_get::<Json<StringMap>, _>("metadata")?.0,
        config: row.try_get::<Json<SessionConfig>, _>("config")?.0,
        scopes: row.try_get::<Json<StringMap>, _>("scopes")?.0,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        message_count: to_u64(row.try_get("message_count")?, "message_count")?,
    })
}

fn message_from_row(row: &SqliteRow) -> Result<Message, Error> {
    Ok(Message {
        id: row.try_get("id")?,
        session_id: row.try_get("session_id")?,
        role: row
            .try_get::<&str, _>("role")?
            .parse()
            .map_err(Error::decode)?,
        content: row.try_get("content")?,
        tool_calls: row.try_get::<Json<Vec<ToolCall>>, _>("tool_calls")?.0,
        tool_call_id: row.try_get("tool_call_id")?,
        token_count: row
            .try_get::<Option<i64>, _>("token_count")?
            .map(|n| to_u64(n, "token_count"))
            .transpose()?,
        model_used: row.try_get("model_used")?,
        parent_id: row.try_get("parent_id")?,
        created_at: time(row, "created_at")?,
    })
}

fn event_from_row(row: &SqliteRow) -> Result<StoredEvent, Error> {
    let event_type: &str = row.try_get("type")?;
    let data: Json<serde_json::Value> = row.try_get("data")?;
    Ok(StoredEvent {
        session_id: row.try_get("session_id")?,
        seq: to_u64(row.try_get("seq")?, "seq")?,
        run_id: row.try_get("run_id")?,
        created_at: time(row, "created_at")?,
        kind: EventKind::from_parts(event_type, data.0).map_err(Error::decode)?,
    })
}

/// Appends ` AND <column> matches scope` predicates (one per scope key).
fn push_scope(q: &mut QueryBuilder<'_, Sqlite>, column: &str, scope: &Scope) -> Result<(), Error> {
    for (key, value) in &scope.0 {
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::InvalidScopeKey(key.clone()));
        }
        q.push(format_args!(" AND json_extract({column}, "));
        q.push_bind(format!("$.\"{key}\""));
        q.push(") = ");
        q.push_bind(value.clone());
    }
    Ok(())
}

/// Appends ` AND metadata has key = value` predicates (any key is safe: it is a bound value).
fn push_metadata(q: &mut QueryBuilder<'_, Sqlite>, metadata: &StringMap) {
    for (key, value) in metadata {
        q.push(" AND EXISTS (SELECT 1 FROM json_each(sessions.metadata) AS kv WHERE kv.key = ");
        q.push_bind(key.clone());
        q.push(" AND kv.type = 'text' AND kv.value = ");
        q.push_bind(value.clone());
        q.push(")");
    }
}

fn optional_time(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>, Error> {
    match row.try_get::<Option<i64>, _>(column)? {
        None => Ok(None),
        Some(value) => DateTime::from_timestamp_micros(value)
            .map(Some)
            .ok_or_else(|| Error::decode(format_args!("{column} out of range: {value}"))),
    }
}

fn run_from_row(row: &SqliteRow) -> Result<Run, Error> {
    Ok(Run {
        id: row.try_get("id")?,
        session_id: row.try_get("session_id")?,
        state: row
            .try_get::<&str, _>("status")?
            .parse()
            .map_err(Error::decode)?,
        content: row.try_get("content")?,
        model: row.try_get("model")?,
        parent_id: row.try_get("parent_id")?,
        callback_url: row.try_get("callback_url")?,
        user_message_id: row.try_get("user_message_id")?,
        owner: row.try_get("owner")?,
        lease_expires_at: optional_time(row, "lease_expires_at")?,
        heartbeat_at: optional_time(row, "heartbeat_at")?,
        cancel_requested: row.try_get("cancel_requested")?,
        error: row.try_get("error")?,
        created_at: time(row, "created_at")?,
        started_at: optional_time(row, "started_at")?,
        finished_at: optional_time(row, "finished_at")?,
    })
}

/// The user message that starts `run`.
fn user_message(run: &Run) -> NewMessage {
    NewMessage {
        parent_id: run.parent_id,
        ..NewMessage::text(Role::User, run.content.clone())
    }
}

/// Appends a message inside a transaction (see [`Store::append_message`]).
async fn append_message_in(
    conn: &mut sqlx::SqliteConnection,
    session_id: Uuid,
    new: NewMessage,
) -> Result<Message, Error> {
    let m = new.into_message(session_id);
    let position: Option<i64> = sqlx::query_scalar(
        "UPDATE sessions SET message_count = message_count + 1, updated_at = ?1 \
         WHERE id = ?2 RETURNING message_count",
    )
    .bind(micros(m.created_at))
    .bind(session_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(position) = position else {
        return Err(Error::SessionNotFound(session_id));
    };
    sqlx::query(
        "INSERT INTO messages (id, session_id, position, role, content, tool_calls, \
         tool_call_id, token_count, model_used, parent_id, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .bind(m.id)
    .bind(session_id)
    .bind(position)
    .bind(m.role.as_str())
    .bind(&m.content)
    .bind(Json(&m.tool_calls))
    .bind(&m.tool_call_id)
    .bind(m.token_count.map(to_i64))
    .bind(&m.model_used)
    .bind(m.parent_id)
    .bind(micros(m.created_at))
    .execute(&mut *conn)
    .await?;
    Ok(m)
}

/// Appends an event inside a transaction (see [`Store::append_event`]).
async fn append_event_in(
    conn: &mut sqlx::SqliteConnection,
    session_id: Uuid,
    run_id: Option<Uuid>,
    kind: &EventKind,
) -> Result<StoredEvent, Error> {
    let created_at = crate::domain::now();
    let (event_type, data) = kind.to_parts();
    let seq: Option<i64> = sqlx::query_scalar(
        "INSERT INTO events (session_id, seq, run_id, type, data, created_at) \
         SELECT s.id, COALESCE((SELECT MAX(e.seq) FROM events AS e WHERE e.session_id = ?1), 0) + 1, \
                ?2, ?3, ?4, ?5 \
         FROM sessions AS s WHERE s.id = ?1 \
         RETURNING seq",
    )
    .bind(session_id)
    .bind(run_id)
    .bind(event_type)
    .bind(Json(&data))
    .bind(micros(created_at))
    .fetch_optional(&mut *conn)
    .await?;
    let seq = seq.ok_or(Error::SessionNotFound(session_id))?;
    Ok(StoredEvent {
        session_id,
        seq: to_u64(seq, "seq")?,
        run_id,
        created_at,
        kind: kind.clone(),
    })
}

async fn insert_run(conn: &mut sqlx::SqliteConnection, run: &Run) -> Result<(), Error> {
    sqlx::query(&format!(
        "INSERT INTO runs ({RUN_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
    ))
    .bind(run.id)
    .bind(run.session_id)
    .bind(run.state.as_str())
    .bind(&run.content)
    .bind(&run.model)
    .bind(run.parent_id)
    .bind(&run.callback_url)
    .bind(run.user_message_id)
    .bind(&run.owner)
    .bind(run.lease_expires_at.map(micros))
    .bind(run.heartbeat_at.map(micros))
    .bind(run.cancel_requested)
    .bind(&run.error)
    .bind(micros(run.created_at))
    .bind(run.started_at.map(micros))
    .bind(run.finished_at.map(micros))
    .execute(&mut *conn)
    .await
    .map_err(|e| busy_or(e, run.session_id))?;
    Ok(())
}

/// A unique violation on `runs` means another run is running: [`Error::Busy`].
fn busy_or(e: sqlx::Error, session_id: Uuid) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => Error::Busy(session_id),
        _ => Error::Database(e),
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> PersistenceBackend {
        PersistenceBackend::Sqlite
    }

    async fn create_session(&self, new: NewSession) -> Result<Session, Error> {
        let s = new.into_session();
        sqlx::query(
            "INSERT INTO sessions (id, title, thread_id, status, agent_name, metadata, config, \
             scopes, created_at, updated_at, message_count) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0)",
        )
        .bind(s.id)
        .bind(&s.title)
        .bind(&s.thread_id)
        .bind(s.status.as_str())
        .bind(&s.agent_name)
        .bind(Json(&s.metadata))
        .bind(Json(&s.config))
        .bind(Json(&s.scopes))
        .bind(micros(s.created_at))
        .bind(micros(s.updated_at))
        .execute(&self.writer)
        .await?;
        Ok(s)
    }

    async fn get_session(&self, scope: &Scope, id: Uuid) -> Result<Option<Session>, Error> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = "
        ));
        q.push_bind(id);
        push_scope(&mut q, "scopes", scope)?;
        let row = q.build().fetch_optional(&self.reader).await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn list_sessions(
        &self,
        scope: &Scope,
        query: &SessionQuery,
    ) -> Result<SessionPage, Error> {
        let limit = query.limit.max(1);
        let mut count = QueryBuilder::new("SELECT COUNT(*) FROM sessions WHERE 1 = 1");
        push_scope(&mut count, "scopes", scope)?;
        push_metadata(&mut count, &query.metadata);

        let mut page = QueryBuilder::new(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE 1 = 1"
        ));
        push_scope(&mut page, "scopes", scope)?;
        push_metadata(&mut page, &query.metadata);
        if let Some(cursor) = &query.cursor {
            page.push(" AND (created_at, id) < (");
            page.push_bind(cursor.micros());
            page.push(", ");
            page.push_bind(cursor.id);
            page.push(")");
        }
        page.push(" ORDER BY created_at DESC, id DESC LIMIT ");
        page.push_bind(i64::from(limit) + 1);

        let (total, rows) = tokio::try_join!(
            count.build_query_scalar::<i64>().fetch_one(&self.reader),
            page.build().fetch_all(&self.reader),
        )?;
        let sessions = rows
            .iter()
            .map(session_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SessionPage::from_overfetch(
            sessions,
            limit,
            to_u64(total, "count")?,
        ))
    }

    async fn update_session(
        &self,
        scope: &Scope,
        id: Uuid,
        patch: &SessionPatch,
    ) -> Result<Option<Session>, Error> {
        if patch.is_empty() {
            return self.get_session(scope, id).await;
        }
        let mut q = QueryBuilder::new("UPDATE sessions SET title = COALESCE(");
        q.push_bind(patch.title.clone());
        q.push(", title), agent_name = COALESCE(");
        q.push_bind(patch.agent_name.clone());
        q.push(", agent_name), status = COALESCE(");
        q.push_bind(patch.status.map(|s| s.as_str()));
        q.push(", status), metadata = COALESCE(");
        q.push_bind(patch.metadata.as_ref().map(Json));
        q.push(", metadata), config = COALESCE(");
        q.push_bind(patch.config.as_ref().map(Json));
        q.push(", config), updated_at = ");
        q.push_bind(micros(crate::domain::now()));
        q.push(" WHERE id = ");
        q.push_bind(id);
        push_scope(&mut q, "scopes", scope)?;
        q.push(format_args!(" RETURNING {SESSION_COLUMNS}"));
        let row = q.build().fetch_optional(&self.writer).await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn delete_session(&self, scope: &Scope, id: Uuid) -> Result<bool, Error> {
        let mut q = QueryBuilder::new("DELETE FROM sessions WHERE id = ");
        q.push_bind(id);
        push_scope(&mut q, "scopes", scope)?;
        Ok(q.build().execute(&self.writer).await?.rows_affected() > 0)
    }

    async fn append_message(&self, session_id: Uuid, new: NewMessage) -> Result<Message, Error> {
        let mut tx = self.writer.begin().await?;
        let m = append_message_in(&mut tx, session_id, new).await?;
        tx.commit().await?;
        Ok(m)
    }

    async fn list_messages(
        &self,
        scope: &Scope,
        session_id: Uuid,
        limit: u32,
        offset: u64,
    ) -> Result<Option<MessagePage>, Error> {
        let mut count = QueryBuilder::new("SELECT message_count FROM sessions WHERE id = ");
        count.push_bind(session_id);
        push_scope(&mut count, "scopes", scope)?;
        let page_sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages AS m WHERE m.session_id = ?1 \
             ORDER BY m.position LIMIT ?2 OFFSET ?3"
        );
        let page = sqlx::query(&page_sql)
            .bind(session_id)
            .bind(i64::from(limit))
            .bind(to_i64(offset));
        let (total, rows) = tokio::try_join!(
            count
                .build_query_scalar::<i64>()
                .fetch_optional(&self.reader),
            page.fetch_all(&self.reader),
        )?;
        let Some(total) = total else { return Ok(None) };
        let total = to_u64(total, "message_count")?;
        let messages = rows
            .iter()
            .map(message_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let has_more = offset.saturating_add(messages.len() as u64) < total;
        Ok(Some(MessagePage {
            messages,
            total,
            has_more,
        }))
    }

    async fn get_message(
        &self,
        scope: &Scope,
        session_id: Uuid,
        message_id: Uuid,
    ) -> Result<Option<Message>, Error> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages AS m JOIN sessions AS s ON s.id = m.session_id \
             WHERE m.id = "
        ));
        q.push_bind(message_id);
        q.push(" AND m.session_id = ");
        q.push_bind(session_id);
        push_scope(&mut q, "s.scopes", scope)?;
        let row = q.build().fetch_optional(&self.reader).await?;
        row.as_ref().map(message_from_row).transpose()
    }

    async fn append_event(
        &self,
        session_id: Uuid,
        run_id: Option<Uuid>,
        kind: &EventKind,
    ) -> Result<StoredEvent, Error> {
        let created_at = crate::domain::now();
        let (event_type, data) = kind.to_parts();
        // One statement on the single writer connection: the MAX + 1 cannot race.
        let seq: Option<i64> = sqlx::query_scalar(
            "INSERT INTO events (session_id, seq, run_id, type, data, created_at) \
             SELECT s.id, COALESCE((SELECT MAX(e.seq) FROM events AS e WHERE e.session_id = ?1), 0) + 1, \
                    ?2, ?3, ?4, ?5 \
             FROM sessions AS s WHERE s.id = ?1 \
             RETURNING seq",
        )
        .bind(session_id)
        .bind(run_id)
        .bind(event_type)
        .bind(Json(&data))
        .bind(micros(created_at))
        .fetch_optional(&self.writer)
        .await?;
        let seq = seq.ok_or(Error::SessionNotFound(session_id))?;
        Ok(StoredEvent {
            session_id,
            seq: to_u64(seq, "seq")?,
            run_id,
            created_at,
            kind: kind.clone(),
        })
    }

    async fn append_events(
        &self,
        session_id: Uuid,
        run_id: Option<Uuid>,
        kinds: &[EventKind],
    ) -> Result<Vec<StoredEvent>, Error> {
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let created_at = crate::domain::now();
        let mut tx = self.writer.begin_with(IMMEDIATE).await?;
        let base: Option<i64> = sqlx::query_scalar(
            "SELECT COALESCE((SELECT MAX(e.seq) FROM events AS e WHERE e.session_id = ?1), 0) \
             FROM sessions WHERE id = ?1",
        )
        .bind(session_id)
        .fetch_optional(&mut *tx)
        .await?;
        let base = base.ok_or(Error::SessionNotFound(session_id))?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (session_id, seq, run_id, type, data, created_at) ",
        );
        q.push_values(kinds.iter().enumerate(), |mut row, (i, kind)| {
            let (event_type, data) = kind.to_parts();
            row.push_bind(session_id)
                .push_bind(base + 1 + i as i64)
                .push_bind(run_id)
                .push_bind(event_type)
                .push_bind(Json(data))
                .push_bind(micros(created_at));
        });
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
        kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                Ok(StoredEvent {
                    session_id,
                    seq: to_u64(base + 1 + i as i64, "seq")?,
                    run_id,
                    created_at,
                    kind: kind.clone(),
                })
            })
            .collect()
    }

    async fn events_after(
        &self,
        session_id: Uuid,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, Error> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE session_id = ?1 AND seq > ?2 \
             ORDER BY seq LIMIT ?3"
        );
        let rows = sqlx::query(&sql)
            .bind(session_id)
            .bind(to_i64(after_seq))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn last_event_seq(&self, session_id: Uuid) -> Result<u64, Error> {
        let seq: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events WHERE session_id = ?1")
                .bind(session_id)
                .fetch_one(&self.reader)
                .await?;
        to_u64(seq, "seq")
    }

    async fn conversation(&self, session_id: Uuid) -> Result<Vec<Message>, Error> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages AS m WHERE m.session_id = ?1 \
             ORDER BY m.position"
        );
        let rows = sqlx::query(&sql)
            .bind(session_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(message_from_row).collect()
    }

    async fn start_run(&self, new: NewRun, lease: &Lease) -> Result<(Run, Message), Error> {
        let mut tx = self.writer.begin_with(IMMEDIATE).await?;
        let busy: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM runs WHERE session_id = ?1 AND status IN ('queued', 'running') LIMIT 1",
        )
        .bind(new.session_id)
        .fetch_optional(&mut *tx)
        .await?;
        if busy.is_some() {
            return Err(Error::Busy(new.session_id));
        }
        let mut run = new.into_run(RunState::Running);
        let message = append_message_in(&mut tx, run.session_id, user_message(&run)).await?;
        run.user_message_id = Some(message.id);
        run.owner = Some(lease.owner.clone());
        run.lease_expires_at = Some(lease.until);
        run.heartbeat_at = Some(run.created_at);
        run.started_at = Some(run.created_at);
        insert_run(&mut tx, &run).await?;
        tx.commit().await?;
        Ok((run, message))
    }

    async fn enqueue_run(&self, new: NewRun) -> Result<Run, Error> {
        let run = new.into_run(RunState::Queued);
        let mut tx = self.writer.begin_with(IMMEDIATE).await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM sessions WHERE id = ?1")
            .bind(run.session_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(Error::SessionNotFound(run.session_id));
        }
        insert_run(&mut tx, &run).await?;
        tx.commit().await?;
        Ok(run)
    }

    async fn start_next_run(
        &self,
        session_id: Uuid,
        lease: &Lease,
    ) -> Result<Option<(Run, Message)>, Error> {
        // Most turns end with nothing queued: answer that from a reader, without the write
        // lock. (A run queued after this check is started by its enqueuer.)
        let queued: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM runs WHERE session_id = ?1 AND status = 'queued' LIMIT 1",
        )
        .bind(session_id)
        .fetch_optional(&self.reader)
        .await?;
        if queued.is_none() {
            return Ok(None);
        }
        let mut tx = self.writer.begin_with(IMMEDIATE).await?;
        let running: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM runs WHERE session_id = ?1 AND status = 'running' LIMIT 1",
        )
        .bind(session_id)
        .fetch_optional(&mut *tx)
        .await?;
        if running.is_some() {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE session_id = ?1 AND status = 'queued' \
             ORDER BY created_at, id LIMIT 1"
        ))
        .bind(session_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut run = run_from_row(&row)?;
        let message = match append_message_in(&mut tx, session_id, user_message(&run)).await {
            Ok(message) => message,
            Err(Error::SessionNotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let now = crate::domain::now();
        run.state = RunState::Running;
        run.user_message_id = Some(message.id);
        run.owner = Some(lease.owner.clone());
        run.lease_expires_at = Some(lease.until);
        run.heartbeat_at = Some(now);
        run.started_at = Some(now);
        sqlx::query(
            "UPDATE runs SET status = 'running', user_message_id = ?2, owner = ?3, \
             lease_expires_at = ?4, heartbeat_at = ?5, started_at = ?5 \
             WHERE id = ?1 AND status = 'queued'",
        )
        .bind(run.id)
        .bind(message.id)
        .bind(&lease.owner)
        .bind(micros(lease.until))
        .bind(micros(now))
        .execute(&mut *tx)
        .await
        .map_err(|e| busy_or(e, session_id))?;
        tx.commit().await?;
        Ok(Some((run, message)))
    }

    async fn sessions_with_startable_runs(&self, limit: u32) -> Result<Vec<Uuid>, Error> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT q.session_id FROM runs AS q WHERE q.status = 'queued' \
             AND NOT EXISTS (SELECT 1 FROM runs AS r \
                             WHERE r.session_id = q.session_id AND r.status = 'running') \
             LIMIT ?1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?)
    }

    async fn get_run(&self, run_id: Uuid) -> Result<Option<Run>, Error> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn running_run(&self, session_id: Uuid) -> Result<Option<Run>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE session_id = ?1 AND status = 'running'"
        ))
        .bind(session_id)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn request_cancel(&self, session_id: Uuid) -> Result<Option<Run>, Error> {
        let row = sqlx::query(&format!(
            "UPDATE runs SET cancel_requested = 1 WHERE session_id = ?1 AND status = 'running' \
             RETURNING {RUN_COLUMNS}"
        ))
        .bind(session_id)
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn renew_leases(
        &self,
        lease: &Lease,
        run_ids: &[Uuid],
    ) -> Result<Vec<LeaseRenewal>, Error> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::new("UPDATE runs SET lease_expires_at = ");
        q.push_bind(micros(lease.until));
        q.push(", heartbeat_at = ");
        q.push_bind(micros(crate::domain::now()));
        q.push(" WHERE owner = ");
        q.push_bind(lease.owner.clone());
        q.push(" AND status = 'running' AND id IN (");
        let mut ids = q.separated(", ");
        for id in run_ids {
            ids.push_bind(*id);
        }
        q.push(") RETURNING id, cancel_requested");
        let rows = q.build().fetch_all(&self.writer).await?;
        rows.iter()
            .map(|row| {
                Ok(LeaseRenewal {
                    run_id: row.try_get("id")?,
                    cancel_requested: row.try_get("cancel_requested")?,
                })
            })
            .collect()
    }

    async fn take_over_expired_runs(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Run>, Error> {
        let rows = sqlx::query(&format!(
            "UPDATE runs SET owner = ?1, lease_expires_at = ?2 \
             WHERE id IN (SELECT id FROM runs WHERE status = 'running' \
                          AND lease_expires_at < ?3 LIMIT ?4) \
             RETURNING {RUN_COLUMNS}"
        ))
        .bind(&lease.owner)
        .bind(micros(lease.until))
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn finish_run(
        &self,
        run_id: Uuid,
        owner: &str,
        state: RunState,
        error: Option<&str>,
        done: &EventKind,
    ) -> Result<Option<StoredEvent>, Error> {
        let mut tx = self.writer.begin_with(IMMEDIATE).await?;
        let session_id: Option<Uuid> = sqlx::query_scalar(
            "UPDATE runs SET status = ?1, error = ?2, finished_at = ?3, lease_expires_at = NULL \
             WHERE id = ?4 AND owner = ?5 AND status = 'running' RETURNING session_id",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(micros(crate::domain::now()))
        .bind(run_id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(session_id) = session_id else {
            return Ok(None);
        };
        let event = append_event_in(&mut tx, session_id, Some(run_id), done).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn notifications(&self) -> Result<Option<Notifications>, Error> {
        Ok(None)
    }

    async fn close(&self) {
        self.close_pools().await;
    }
}
