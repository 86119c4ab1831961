//! The three services as separate OS processes on loopback, configured only by environment
//! variables: a session created through the gateway gets a sandbox on the executor, `echo hi`
//! runs in it through `Exec`, and deleting the session through the gateway deletes the sandbox.

use std::collections::HashMap;
use std::time::Duration;

use cognition_e2e::exec;
use cognition_e2e::procs::{Proc, free_addr, wait_listening};
use cognition_proto::executor::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_hi_through_exec_in_a_sessions_sandbox() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().display().to_string();
    let (executor, session, gateway) = (free_addr()?, free_addr()?, free_addr()?);

    let _executor = Proc::spawn(
        "cognition-executor",
        &[],
        &[
            ("COGNITION_EXECUTOR_ADDR", executor.to_string()),
            ("COGNITION_DATA_DIR", data.clone()),
        ],
    )?;
    let _session = Proc::spawn(
        "cognition-session",
        &[],
        &[
            ("COGNITION_SESSION_ADDR", session.to_string()),
            ("COGNITION_DATA_DIR", data.clone()),
            ("COGNITION_EXECUTOR_URL", format!("http://{executor}")),
        ],
    )?;
    let _gateway = Proc::spawn(
        "cognition-gateway",
        &[],
        &[
            ("COGNITION_HOST", "127.0.0.1".into()),
            ("COGNITION_PORT", gateway.port().to_string()),
            ("COGNITION_SESSION_URL", format!("http://{session}")),
        ],
    )?;
    for addr in [executor, session, gateway] {
        wait_listening(addr, Duration::from_secs(30)).await?;
    }

    let http = reqwest::Client::new();
    let base = format!("http://{gateway}");
    cognition_harness::wait_until(Duration::from_secs(10), || {
        let http = http.clone();
        let url = format!("{base}/ready");
        async move {
            http.get(url)
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        }
    })
    .await?;

    let created: serde_json::Value = http
        .post(format!("{base}/sessions"))
        .json(&serde_json::json!({"title": "e2e"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let session_id = created["id"].as_str().expect("session id").to_owned();

    let mut executor_client =
        pb::executor_service_client::ExecutorServiceClient::connect(format!("http://{executor}"))
            .await?;
    let sandbox = executor_client
        .create_sandbox(pb::CreateSandboxRequest {
            labels: HashMap::from([("cognition.io/session".to_owned(), session_id.clone())]),
            ..Default::default()
        })
        .await?
        .into_inner()
        .sandbox
        .expect("sandbox");

    let result = exec::run_shell(&mut executor_client, &sandbox.id, "echo hi").await?;
    assert_eq!(String::from_utf8_lossy(&result.stdout), "hi\n");
    let exited = result.exited.expect("exited");
    assert_eq!(exited.exit_code, Some(0));
    assert_eq!(exited.reason(), pb::ExitReason::Exited);
    assert!(result.started.map(|s| s.pid > 0).unwrap_or(false));

    let status = http
        .delete(format!("{base}/sessions/{session_id}"))
        .send()
        .await?
        .status();
    assert_eq!(status, 204);
    let left = executor_client
        .list_sandboxes(pb::ListSandboxesRequest {
            label_selector: HashMap::from([(
                "cognition.io/session".to_owned(),
                session_id.clone(),
            )]),
        })
        .await?
        .into_inner()
        .sandboxes;
    assert!(
        left.is_empty(),
        "deleting the session must delete its sandbox: {left:?}"
    );
    Ok(())
}
