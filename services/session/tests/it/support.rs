//! Test databases: a SQLite file in a temp dir, or a fresh PostgreSQL database per test.
//!
//! PostgreSQL tests need `COGNITION_TEST_POSTGRES_URL` (e.g. the URL printed by
//! `tests/scripts/pg.sh start`). Without it they are skipped with a message, except under CI
//! (`CI` set), where they fail: PostgreSQL coverage must not silently disappear there.

use std::str::FromStr;
use std::sync::Arc;

use cognition_session::store::{self, Store};
use cognition_session::{Config, PersistenceBackend};
use sqlx::Connection;
use uuid::Uuid;

pub const POSTGRES_URL_VAR: &str = "COGNITION_TEST_POSTGRES_URL";

/// Keeps a test database alive; removes it when dropped (also when the test panics).
#[allow(dead_code)] // the values are held for their `Drop`
pub enum Guard {
    Sqlite(tempfile::TempDir),
    Postgres(PgDatabase),
}

/// A PostgreSQL database created for one test.
pub struct PgDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside any async context we could borrow; use a private runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// A blank database of either backend: its config and its guard.
pub struct Blank {
    pub config: Config,
    pub guard: Guard,
}

impl Blank {
    pub fn sqlite() -> Blank {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::embedded(dir.path().join("data"));
        config.db_max_connections = 4;
        Blank {
            config,
            guard: Guard::Sqlite(dir),
        }
    }

    /// `None` (after saying why) when no PostgreSQL server is configured outside CI.
    pub async fn postgres() -> Option<Blank> {
        let admin_url = match std::env::var(POSTGRES_URL_VAR) {
            Ok(url) if !url.is_empty() => url,
            _ if std::env::var_os("CI").is_some() => {
                panic!("{POSTGRES_URL_VAR} is not set: PostgreSQL tests must run in CI")
            }
            _ => {
                eprintln!(
                    "skipping PostgreSQL test: {POSTGRES_URL_VAR} is not set \
                     (start a server with tests/scripts/pg.sh start)"
                );
                return None;
            }
        };
        let name = format!("cognition_test_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {POSTGRES_URL_VAR}: {e}"));
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create db");
        conn.close().await.expect("close admin connection");
        let config = Config {
            persistence_backend: PersistenceBackend::Postgres,
            persistence_uri: Some(with_database(&admin_url, &name)),
            db_max_connections: 4,
            ..Config::default()
        };
        Some(Blank {
            config,
            guard: Guard::Postgres(PgDatabase { admin_url, name }),
        })
    }

    pub async fn of(backend: PersistenceBackend) -> Option<Blank> {
        match backend {
            PersistenceBackend::Sqlite => Some(Blank::sqlite()),
            PersistenceBackend::Postgres => Blank::postgres().await,
        }
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// An opened (migrated) store on a blank database.
pub struct Db {
    pub store: Arc<dyn Store>,
    pub config: Config,
    _guard: Guard,
}

impl Db {
    pub async fn open(blank: Blank) -> Db {
        let store = store::open(&blank.config).await.expect("open store");
        Db {
            store,
            config: blank.config,
            _guard: blank.guard,
        }
    }

    pub async fn sqlite() -> Db {
        Db::open(Blank::sqlite()).await
    }

    pub async fn postgres() -> Option<Db> {
        Some(Db::open(Blank::postgres().await?).await)
    }

    /// A second, blank database of the same backend.
    pub async fn blank_sibling(&self) -> Blank {
        Blank::of(self.config.persistence_backend)
            .await
            .expect("same backend as this test")
    }

    /// Rows of `table` (`messages` or `events`) for `session_id`, read behind the store's back.
    pub async fn count_rows(&self, table: &str, session_id: Uuid) -> i64 {
        let url = self.config.database_url().expect("url");
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE session_id = $1");
        match self.config.persistence_backend {
            PersistenceBackend::Sqlite => {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url).expect("url");
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .expect("connect");
                sqlx::query_scalar(&sql)
                    .bind(session_id)
                    .fetch_one(&mut conn)
                    .await
                    .expect("count")
            }
            PersistenceBackend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
                sqlx::query_scalar(&sql)
                    .bind(session_id)
                    .fetch_one(&mut conn)
                    .await
                    .expect("count")
            }
        }
    }
}

#[test]
fn replaces_the_database_name() {
    assert_eq!(
        with_database("postgres://u@h:1/postgres", "x"),
        "postgres://u@h:1/x"
    );
    assert_eq!(
        with_database("postgresql://u:p@h/db?sslmode=disable", "x"),
        "postgresql://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}
