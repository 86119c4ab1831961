//! A fresh PostgreSQL database per test, dropped afterwards.
//!
//! The server comes from `COGNITION_TEST_POSTGRES_URL` (set by `tests/run.sh`). Without it, a
//! test that needs PostgreSQL fails under CI (`CI` set) and is skipped with a message otherwise.

use sqlx::Connection as _;

/// A database created for one test. Call [`TestDatabase::drop_db`] at the end (a `Drop` impl
/// cannot run async code reliably).
pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

/// Creates a fresh database, or returns `None` (skip) when no server is configured off CI.
pub async fn fresh_database() -> Option<TestDatabase> {
    let Ok(admin_url) = std::env::var("COGNITION_TEST_POSTGRES_URL") else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "COGNITION_TEST_POSTGRES_URL is not set under CI: PostgreSQL tests must run (use tests/run.sh)"
            );
        }
        eprintln!(
            "skipping: COGNITION_TEST_POSTGRES_URL is not set (tests/run.sh starts a server)"
        );
        return None;
    };
    let name = format!("cognition_e2e_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {admin_url}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(&admin_url);
    Some(TestDatabase {
        url: format!("{base}/{name}"),
        admin_url,
        name,
    })
}

impl TestDatabase {
    pub async fn drop_db(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
        }
    }
}
