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

use super::runs::{EVENTS_CHANNEL, RUNS_CHANNEL, parse_event_payload};
use super::{
    Error, Lease, LeaseRenewal, MessagePage, MigrationReport, NewRun, Notification, Notifications,
    Run, RunState, SessionPage, SessionQuery, Store, connect_error, report, to_i64, to_u64,
};
use crate::config::{PersistenceBackend, redact_uri};
use crate::domain::{
    Message, NewMessage, NewSession, Role, Session, SessionConfig, SessionPatch, StringMap,
    ToolCall,
};
use crate::event::{EventKind, StoredEvent};

/// The embedded PostgreSQL migrations (`migrations/postgres`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const SESSION_COLUMNS: &str = "id, title, thread_id, status, agent_name, metadata, config, scopes, \
     created_at, updated_at, message_count";
const MESSAGE_COLUMNS: &str = "m.id, m.session_id, m.role, m.content, m.tool_calls, m.tool_call_id, \
     m.token_count, m.model_used, m.parent_id, m.created_at";
const EVENT_COLUMNS: &str = "session_id, seq, run_id, type, data, created_at";
const RUN_COLUMNS: &str = "id, session_id, status, content, model, parent_id, callback_url, \
     user_message_id, owner, lease_expires_at, heartbeat_at, cancel_requested, error, created_at, \
     started_at, finished_at";

/// Pause before re-establishing a lost notification connection.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// How long a query waits for a free pool connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sessions, messages and events in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Tags this store's event notifications, so that its own listener skips them.
    origin: String,
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
        Ok(PostgresStore {
            pool,
            origin: Uuid::new_v4().simple().to_string(),
        })
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

fn run_from_row(row: &PgRow) -> Result<Run, Error> {
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
        lease_expires_at: row.try_get("lease_expires_at")?,
        heartbeat_at: row.try_get("heartbeat_at")?,
        cancel_requested: row.try_get("cancel_requested")?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
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
    conn: &mut PgConnection,
    session_id: Uuid,
    new: NewMessage,
) -> Result<Message, Error> {
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
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(Error::SessionNotFound(session_id));
    }
    Ok(m)
}

/// Appends an event inside a transaction (see [`Store::append_event`]), with its NOTIFY.
async fn append_event_in(
    conn: &mut PgConnection,
    origin: &str,
    session_id: Uuid,
    run_id: Option<Uuid>,
    kind: &EventKind,
) -> Result<StoredEvent, Error> {
    let created_at = crate::domain::now();
    let (event_type, data) = kind.to_parts();
    let seq: Option<i64> = sqlx::query_scalar(
        "WITH s AS ( \
             UPDATE sessions SET last_event_seq = last_event_seq + 1 \
             WHERE id = $1 RETURNING id, last_event_seq), \
         e AS ( \
             INSERT INTO events (session_id, seq, run_id, type, data, created_at) \
             SELECT s.id, s.last_event_seq, $2, $3, $4, $5 FROM s \
             RETURNING seq) \
         SELECT e.seq FROM e \
         WHERE pg_notify($6, $7 || ' ' || $1::text || ' ' || e.seq::text)::text IS NOT NULL",
    )
    .bind(session_id)
    .bind(run_id)
    .bind(event_type)
    .bind(Json(&data))
    .bind(created_at)
    .bind(EVENTS_CHANNEL)
    .bind(origin)
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

async fn insert_run(conn: &mut PgConnection, run: &Run) -> Result<(), Error> {
    sqlx::query(&format!(
        "INSERT INTO runs ({RUN_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
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
    .bind(run.lease_expires_at)
    .bind(run.heartbeat_at)
    .bind(run.cancel_requested)
    .bind(&run.error)
    .bind(run.created_at)
    .bind(run.started_at)
    .bind(run.finished_at)
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

/// Locks the session row for the rest of the transaction: run creation and start serialize
/// per session. `false` when the session does not exist.
async fn lock_session(conn: &mut PgConnection, session_id: Uuid) -> Result<bool, Error> {
    let found: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM sessions WHERE id = $1 FOR UPDATE")
            .bind(session_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(found.is_some())
}

/// The notifications of one `PgListener`, re-listening after connection losses.
fn listen(pool: PgPool, origin: String) -> Notifications {
    struct State {
        pool: PgPool,
        origin: String,
        listener: Option<sqlx::postgres::PgListener>,
    }
    let state = State {
        pool,
        origin,
        listener: None,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.pool.is_closed() {
                return None;
            }
            let listener = match st.listener.as_mut() {
                Some(listener) => listener,
                None => {
                    let mut listener = match sqlx::postgres::PgListener::connect_with(&st.pool)
                        .await
                    {
                        Ok(listener) => listener,
                        Err(e) => {
                            tracing::warn!(error = %e, "connecting the notification listener failed; retrying");
                            tokio::time::sleep(LISTEN_RETRY).await;
                            continue;
                        }
                    };
                    if let Err(e) = listener.listen_all([EVENTS_CHANNEL, RUNS_CHANNEL]).await {
                        tracing::warn!(error = %e, "LISTEN failed; retrying");
                        tokio::time::sleep(LISTEN_RETRY).await;
                        continue;
                    }
                    st.listener = Some(listener);
                    // Anything sent before LISTEN took effect was missed.
                    return Some((Notification::Resync, st));
                }
            };
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let parsed = match n.channel() {
                        EVENTS_CHANNEL => parse_event_payload(n.payload(), &st.origin),
                        RUNS_CHANNEL => Uuid::parse_str(n.payload())
                            .ok()
                            .map(|run_id| Notification::CancelRequested { run_id }),
                        _ => None,
                    };
                    if let Some(parsed) = parsed {
                        return Some((parsed, st));
                    }
                }
                // The connection was lost; the listener reconnects on the next call.
                Ok(None) => return Some((Notification::Resync, st)),
                Err(sqlx::Error::PoolClosed) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "notification listener failed; reconnecting");
                    st.listener = None;
                    tokio::time::sleep(LISTEN_RETRY).await;
                }
            }
        }
    }))
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
        let mut conn = self.pool.acquire().await?;
        append_message_in(&mut conn, session_id, new).await
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
        // The NOTIFY (delivered on commit) tells the other replicas' listeners; see
        // `crate::event_log` for the fan-out.
        let mut conn = self.pool.acquire().await?;
        append_event_in(&mut conn, &self.origin, session_id, run_id, kind).await
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
        let n = kinds.len() as i64;
        let created_at = crate::domain::now();
        let mut tx = self.pool.begin().await?;
        let last: Option<i64> = sqlx::query_scalar(
            "UPDATE sessions SET last_event_seq = last_event_seq + $2 WHERE id = $1 \
             RETURNING last_event_seq",
        )
        .bind(session_id)
        .bind(n)
        .fetch_optional(&mut *tx)
        .await?;
        let last = last.ok_or(Error::SessionNotFound(session_id))?;
        let base = last - n;
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO events (session_id, seq, run_id, type, data, created_at) ",
        );
        q.push_values(kinds.iter().enumerate(), |mut row, (i, kind)| {
            let (event_type, data) = kind.to_parts();
            row.push_bind(session_id)
                .push_bind(base + 1 + i as i64)
                .push_bind(run_id)
                .push_bind(event_type)
                .push_bind(Json(data))
                .push_bind(created_at);
        });
        q.build().execute(&mut *tx).await?;
        sqlx::query("SELECT pg_notify($1, $2)::text")
            .bind(EVENTS_CHANNEL)
            .bind(format!("{} {session_id} {} {last}", self.origin, base + 1))
            .execute(&mut *tx)
            .await?;
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

    async fn last_event_seq(&self, session_id: Uuid) -> Result<u64, Error> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT last_event_seq FROM sessions WHERE id = $1")
                .bind(session_id)
                .fetch_optional(&self.pool)
                .await?;
        to_u64(seq.unwrap_or(0), "seq")
    }

    async fn conversation(&self, session_id: Uuid) -> Result<Vec<Message>, Error> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages AS m WHERE m.session_id = $1 \
             ORDER BY m.position"
        );
        let rows = sqlx::query(&sql)
            .bind(session_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(message_from_row).collect()
    }

    async fn start_run(&self, new: NewRun, lease: &Lease) -> Result<(Run, Message), Error> {
        let mut tx = self.pool.begin().await?;
        if !lock_session(&mut tx, new.session_id).await? {
            return Err(Error::SessionNotFound(new.session_id));
        }
        let busy: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM runs WHERE session_id = $1 AND status IN ('queued', 'running') LIMIT 1",
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
        let mut tx = self.pool.begin().await?;
        if !lock_session(&mut tx, run.session_id).await? {
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
        // Most turns end with nothing queued: answer that without locking the session.
        // (A run queued after this check is started by its enqueuer.)
        let queued: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM runs WHERE session_id = $1 AND status = 'queued' LIMIT 1",
        )
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?;
        if queued.is_none() {
            return Ok(None);
        }
        let mut tx = self.pool.begin().await?;
        if !lock_session(&mut tx, session_id).await? {
            return Ok(None);
        }
        let running: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM runs WHERE session_id = $1 AND status = 'running' LIMIT 1",
        )
        .bind(session_id)
        .fetch_optional(&mut *tx)
        .await?;
        if running.is_some() {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE session_id = $1 AND status = 'queued' \
             ORDER BY created_at, id LIMIT 1"
        ))
        .bind(session_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut run = run_from_row(&row)?;
        let message = append_message_in(&mut tx, session_id, user_message(&run)).await?;
        let now = crate::domain::now();
        run.state = RunState::Running;
        run.user_message_id = Some(message.id);
        run.owner = Some(lease.owner.clone());
        run.lease_expires_at = Some(lease.until);
        run.heartbeat_at = Some(now);
        run.started_at = Some(now);
        sqlx::query(
            "UPDATE runs SET status = 'running', user_message_id = $2, owner = $3, \
             lease_expires_at = $4, heartbeat_at = $5, started_at = $5 \
             WHERE id = $1 AND status = 'queued'",
        )
        .bind(run.id)
        .bind(message.id)
        .bind(&lease.owner)
        .bind(lease.until)
        .bind(now)
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
             LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn get_run(&self, run_id: Uuid) -> Result<Option<Run>, Error> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn running_run(&self, session_id: Uuid) -> Result<Option<Run>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE session_id = $1 AND status = 'running'"
        ))
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn request_cancel(&self, session_id: Uuid) -> Result<Option<Run>, Error> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE runs SET cancel_requested = TRUE \
             WHERE session_id = $1 AND status = 'running' RETURNING {RUN_COLUMNS}"
        ))
        .bind(session_id)
        .fetch_optional(&mut *tx)
        .await?;
        let run = row.as_ref().map(run_from_row).transpose()?;
        if let Some(run) = &run {
            sqlx::query("SELECT pg_notify($1, $2)::text")
                .bind(RUNS_CHANNEL)
                .bind(run.id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(run)
    }

    async fn renew_leases(
        &self,
        lease: &Lease,
        run_ids: &[Uuid],
    ) -> Result<Vec<LeaseRenewal>, Error> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "UPDATE runs SET lease_expires_at = $1, heartbeat_at = $2 \
             WHERE owner = $3 AND status = 'running' AND id = ANY($4) \
             RETURNING id, cancel_requested",
        )
        .bind(lease.until)
        .bind(crate::domain::now())
        .bind(&lease.owner)
        .bind(run_ids)
        .fetch_all(&self.pool)
        .await?;
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
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Vec<Run>, Error> {
        let rows = sqlx::query(&format!(
            "UPDATE runs SET owner = $1, lease_expires_at = $2 \
             WHERE id IN (SELECT id FROM runs WHERE status = 'running' \
                          AND lease_expires_at < $3 LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING {RUN_COLUMNS}"
        ))
        .bind(&lease.owner)
        .bind(lease.until)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let session_id: Option<Uuid> = sqlx::query_scalar(
            "UPDATE runs SET status = $1, error = $2, finished_at = $3, lease_expires_at = NULL \
             WHERE id = $4 AND owner = $5 AND status = 'running' RETURNING session_id",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(crate::domain::now())
        .bind(run_id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(session_id) = session_id else {
            return Ok(None);
        };
        let event = append_event_in(&mut tx, &self.origin, session_id, Some(run_id), done).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    async fn notifications(&self) -> Result<Option<Notifications>, Error> {
        Ok(Some(listen(self.pool.clone(), self.origin.clone())))
    }

    async fn close(&self) {
        self.close_pools().await;
    }
}
