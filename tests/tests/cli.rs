//! The `cognition` binary as a user runs it: `up` on the embedded default (health answers, Ctrl-C
//! stops it cleanly) and `db upgrade` / `db current` on SQLite and PostgreSQL.

use std::process::Command;
use std::time::Duration;

use cognition_e2e::procs::{Proc, free_addr, wait_listening};

fn cognition(args: &[&str], env: &[(&str, String)]) -> anyhow::Result<(bool, String)> {
    let mut cmd = Command::new(cognition_harness::bin("cognition")?);
    for (k, _) in std::env::vars() {
        if k.starts_with("COGNITION_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_and_stops_cleanly_on_ctrl_c() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let addr = free_addr()?;
    let mut up = Proc::spawn(
        "cognition",
        &["up"],
        &[
            (
                "COGNITION_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("COGNITION_PORT", addr.port().to_string()),
        ],
    )?;
    wait_listening(addr, Duration::from_secs(30)).await?;
    let health: serde_json::Value = reqwest::get(format!("http://{addr}/health"))
        .await?
        .json()
        .await?;
    assert_eq!(health["status"], "healthy", "{health}");
    let created = reqwest::Client::new()
        .post(format!("http://{addr}/sessions"))
        .json(&serde_json::json!({"title": "up"}))
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    assert!(
        dir.path().join("data/cognition.db").exists(),
        "SQLite file in COGNITION_DATA_DIR"
    );

    let status = up.interrupt(Duration::from_secs(15))?;
    assert!(
        status.success(),
        "cognition up must exit 0 on Ctrl-C, got {status}"
    );
    Ok(())
}

#[test]
fn db_upgrade_and_current_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let env = [("COGNITION_DATA_DIR", dir.path().display().to_string())];
    let (ok, before) = cognition(&["db", "current"], &env)?;
    assert!(ok, "{before}");
    let (ok, text) = cognition(&["db", "upgrade"], &env)?;
    assert!(ok, "{text}");
    let (ok, again) = cognition(&["db", "upgrade"], &env)?;
    assert!(ok, "second upgrade must be a no-op: {again}");
    let (ok, current) = cognition(&["db", "current"], &env)?;
    assert!(ok, "{current}");
    assert!(
        current.trim().parse::<i64>().is_ok(),
        "current prints a version number: {current:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_upgrade_and_current_on_postgres() -> anyhow::Result<()> {
    let Some(db) = cognition_harness::postgres::fresh_database().await else {
        return Ok(());
    };
    let env = [
        ("COGNITION_PERSISTENCE_BACKEND", "postgres".to_owned()),
        ("COGNITION_PERSISTENCE_URI", db.url.clone()),
    ];
    let env2 = env.clone();
    let (ok, text) =
        tokio::task::spawn_blocking(move || cognition(&["db", "upgrade"], &env2)).await??;
    assert!(ok, "{text}");
    let (ok, current) =
        tokio::task::spawn_blocking(move || cognition(&["db", "current"], &env)).await??;
    assert!(ok, "{current}");
    assert!(current.trim().parse::<i64>().is_ok(), "{current:?}");
    db.drop_db().await;
    Ok(())
}

#[test]
fn bad_configuration_reports_every_problem() -> anyhow::Result<()> {
    let (ok, text) = cognition(
        &["db", "current"],
        &[
            ("COGNITION_PERSISTENCE_BACKEND", "oracle".into()),
            ("COGNITION_SCOPING_ENABLED", "perhaps".into()),
        ],
    )?;
    assert!(!ok);
    assert!(text.contains("COGNITION_PERSISTENCE_BACKEND"), "{text}");
    assert!(text.contains("COGNITION_SCOPING_ENABLED"), "{text}");
    Ok(())
}
