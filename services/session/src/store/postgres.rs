//! [`Store`] on PostgreSQL (the distributed setup).
//!
//! Scope and metadata predicates are JSONB containment (`@>`, GIN-indexed). Event `seq` and
//! message positions come from counters on the session row, bumped and used in one statement,
//! so concurrent appends from any replica serialize on the row lock and commit in order.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use cognition_proto::scope::Scope;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, Postgres, QueryBuilder, Row};
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

/// The embedded PostgreSQL migrations (`migrations/postgres`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const SESSION_COLUMNS: &str = "id, title, thread_id, status, agent_name, metadata, config, scopes, \
     created_at, updated_at, message_count";
const MESSAGE_COLUMNS: &str = "m.id, m.session_id, m.role, m.content, m.tool_calls, m.tool_call_id, \
     m.token_count, m.model_used, m.parent_id, m.created_at";
const EVENT_COLUMNS: &str = "session_id, seq, run_id, type, data, created_at";

/// How long a query waits for a free pool connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sessions, messages and events in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

fn options(url: &str) -> Result<PgConnectOptions, Error> {
    PgConnectOptions::from_str(url).map_err(|source| Error::InvalidUri {
        uri: redact_uri(url),
        source,
    })
}

impl PostgresStore {
    /// Connects a pool of up to `max_connections` to `url` (`postgres://` or `postgresql://`).
    /// Does not migrate: see [`PostgresStore::migrate`].
    pub async fn connect(url: &str, max_connections: u32) -> Result<PostgresStore, Error> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options(url)?)
            .await
            .map_err(connect_error(url))?;
        Ok(PostgresStore { pool })
    }

    /// Applies pending migrations (idempotent; replicas starting together serialize on sqlx's
    /// advisory lock).
    pub async fn migrate(&self) -> Result<MigrationReport, Error> {
        let before = applied_versions(&mut *self.pool.acquire().await?).await?;
        MIGRATOR.run(&self.pool).await?;
        let after = applied_versions(&mut *self.pool.acquire().await?).await?;
        Ok(report(
            PersistenceBackend::Postgres,
            &MIGRATOR,
            &before,
            &after,
        ))
    }

    pub(crate) async fn close_pools(&self) {
        self.pool.close().await;
    }
}

async fn applied_versions(conn: &mut PgConnection) -> Result<Vec<i64>, Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut *conn)
            .await?,
    )
}

/// The schema version of the database at `url`, without changing anything.
pub async fn current_version(url: &str) -> Result<Option<i64>, Error> {
    let mut conn = PgConnection::connect_with(&options(url)?)
        .await
        .map_err(connect_error(url))?;
    let versions = applied_versions(&mut conn).await;
    let _ = conn.close().await;
    Ok(versions?.into_iter().max())
}

fn session_from_row(row: &PgRow) -> Result<Session, Error> {
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
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        message_count: to_u64(row.try_get("message_count")?, "message_count")?,
    })
}

fn message_from_row(row: &PgRow) -> Result<Message, Error> {
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
        created_at: row.try_get("created_at")?,
    })
}

fn event_from_row(row: &PgRow) -> Result<StoredEvent, Error> {
    let event_type: &str = row.try_get("type")?;
    let data: Json<serde_json::Value> = row.try_get("data")?;
    Ok(StoredEvent {
        session_id: row.try_get("session_id")?,
        seq: to_u64(row.try_get("seq")?, "seq")?,
        run_id: row.try_get("run_id")?,
        created_at: row.try_get("created_at")?,
        kind: EventKind::from_parts(event_type, data.0).map_err(Error::decode)?,
    })
}

/// Appends ` AND <column> @> scope` (nothing for an empty scope, which sees everything).
fn push_scope(q: &mut QueryBuilder<'_, Postgres>, column: &str, scope: &Scope) {
    if !scope.is_empty() {
        q.push(format_args!(" AND {column} @> "));
        q.push_bind(Json(scope.0.clone()));
    }
}

fn push_metadata(q: &mut QueryBuilder<'_, Postgres>, metadata: &StringMap) {
    if !metadata.is_empty() {
        q.push(" AND metadata @> ");
        q.push_bind(Json(metadata.clone()));
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> PersistenceBackend {
        PersistenceBackend::Postgres
    }

    async fn create_session(&self, new: NewSession) -> Result<Session, Error> {
        let s = new.into_session();
        sqlx::query(
            "INSERT INTO sessions (id, title, thread_id, status, agent_name, metadata, config, \
             scopes, created_at, updated_at, message_count) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0)",
        )
        .bind(s.id)
        .bind(&s.title)
        .bind(&s.thread_id)
        .bind(s.status.as_str())
        .bind(&s.agent_name)
        .bind(Json(&s.metadata))
        .bind(Json(&s.config))
        .bind(Json(&s.scopes))
        .bind(s.created_at)
        .bind(s.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(s)
    }

    async fn get_session(&self, scope: &Scope, id: Uuid) -> Result<Option<Session>, Error> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = "
        ));
        q.push_bind(id);
        push_scope(&mut q, "scopes", scope);
        let row = q.build().fetch_optional(&self.pool).await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn list_sessions(
        &self,
        scope: &Scope,
        query: &SessionQuery,
    ) -> Result<SessionPage, Error> {
        let limit = query.limit.max(1);
        let mut count = QueryBuilder::new("SELECT COUNT(*) FROM sessions WHERE TRUE");
        push_scope(&mut count, "scopes", scope);
        push_metadata(&mut count, &query.metadata);

        let mut page =
            QueryBuilder::new(format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE TRUE"));
        push_scope(&mut page, "scopes", scope);
        push_metadata(&mut page, &query.metadata);
        if let Some(cursor) = &query.cursor {
            page.push(" AND (created_at, id) < (");
            page.push_bind(cursor.created_at);
            page.push(", ");
            page.push_bind(cursor.id);
            page.push(")");
        }
        page.push(" ORDER BY created_at DESC, id DESC LIMIT ");
        page.push_bind(i64::from(limit) + 1);

        let (total, rows) = tokio::try_join!(
            count.build_query_scalar::<i64>().fetch_one(&self.pool),
            page.build().fetch_all(&self.pool),
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
        q.push_bind(crate::domain::now());
        q.push(" WHERE id = ");
        q.push_bind(id);
        push_scope(&mut q, "scopes", scope);
        q.push(format_args!(" RETURNING {SESSION_COLUMNS}"));
        let row = q.build().fetch_optional(&self.pool).await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn delete_session(&self, scope: &Scope, id: Uuid) -> Result<bool, Error> {
        let mut q = QueryBuilder::new("DELETE FROM sessions WHERE id = ");
        q.push_bind(id);
        push_scope(&mut q, "scopes", scope);
        Ok(q.build().execute(&self.pool).await?.rows_affected() > 0)
    }

    async fn append_message(&self, session_id: Uuid, new: NewMessage) -> Result<Message, Error> {
        let m = new.into_message(session_id);
        let inserted = sqlx::query(
            "WITH s AS ( \
                 UPDATE sessions SET message_count = message_count + 1, updated_at = $11 \
                 WHERE id = $2 RETURNING id, message_count) \
             INSERT INTO messages (id, session_id, position, role, content, tool_calls, \
                 tool_call_id, token_count, model_used, parent_id, created_at) \
             SELECT $1, s.id, s.message_count, $3, $4, $5, $6, $7, $8, $9, $10 FROM s",
        )
        .bind(m.id)
        .bind(session_id)
        .bind(m.role.as_str())
        .bind(&m.content)
        .bind(Json(&m.tool_calls))
        .bind(&m.tool_call_id)
        .bind(m.token_count.map(to_i64))
        .bind(&m.model_used)
        .bind(m.parent_id)
        .bind(m.created_at)
        .bind(m.created_at)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(Error::SessionNotFound(session_id));
        }
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
        push_scope(&mut count, "scopes", scope);
        let page_sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages AS m WHERE m.session_id = $1 \
             ORDER BY m.position LIMIT $2 OFFSET $3"
        );
        let page = sqlx::query(&page_sql)
            .bind(session_id)
            .bind(i64::from(limit))
            .bind(to_i64(offset));
        let (total, rows) = tokio::try_join!(
            count.build_query_scalar::<i64>().fetch_optional(&self.pool),
            page.fetch_all(&self.pool),
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
        push_scope(&mut q, "s.scopes", scope);
        let row = q.build().fetch_optional(&self.pool).await?;
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
        let seq: Option<i64> = sqlx::query_scalar(
            "WITH s AS ( \
                 UPDATE sessions SET last_event_seq = last_event_seq + 1 \
                 WHERE id = $1 RETURNING id, last_event_seq) \
             INSERT INTO events (session_id, seq, run_id, type, data, created_at) \
             SELECT s.id, s.last_event_seq, $2, $3, $4, $5 FROM s \
             RETURNING seq",
        )
        .bind(session_id)
        .bind(run_id)
        .bind(event_type)
        .bind(Json(&data))
        .bind(created_at)
        .fetch_optional(&self.pool)
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE session_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(session_id)
            .bind(to_i64(after_seq))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn close(&self) {
        self.close_pools().await;
    }
}
