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
    Error, MessagePage, MigrationReport, SessionPage, SessionQuery, Store, connect_error, report,
    to_i64, to_u64,
};
use crate::config::{PersistenceBackend, redact_uri};
use crate::domain::{
    Message, NewMessage, NewSession, Session, SessionConfig, SessionPatch, StringMap, ToolCall,
};
use crate::event::{EventKind, StoredEvent};
use crate::store::Cursor;

/// The embedded SQLite migrations (`migrations/sqlite`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const SESSION_COLUMNS: &str = "id, title, thread_id, status, agent_name, metadata, config, scopes, \
     created_at, updated_at, message_count";
const MESSAGE_COLUMNS: &str = "m.id, m.session_id, m.role, m.content, m.tool_calls, m.tool_call_id, \
     m.token_count, m.model_used, m.parent_id, m.created_at";
const EVENT_COLUMNS: &str = "session_id, seq, run_id, type, data, created_at";

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
        let mut sessions = rows
            .iter()
            .map(session_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if sessions.len() > limit as usize {
            sessions.truncate(limit as usize);
            sessions.last().map(Cursor::after)
        } else {
            None
        };
        Ok(SessionPage {
            sessions,
            total: to_u64(total, "count")?,
            next_cursor,
        })
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
        let m = new.into_message(session_id);
        let mut tx = self.writer.begin().await?;
        let position: Option<i64> = sqlx::query_scalar(
            "UPDATE sessions SET message_count = message_count + 1, updated_at = ?1 \
             WHERE id = ?2 RETURNING message_count",
        )
        .bind(micros(m.created_at))
        .bind(session_id)
        .fetch_optional(&mut *tx)
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
        .execute(&mut *tx)
        .await?;
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

    async fn close(&self) {
        self.close_pools().await;
    }
}
