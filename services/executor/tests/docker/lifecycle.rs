//! Sandbox lifecycle on Docker: hardening read back from the engine, labels, list, delete,
//! re-adoption after an executor restart, the reaper. (Files shared between the API and the
//! container's processes are covered by the shared `files` suite of the `executor` binary.)

use std::collections::HashMap;

use bollard::query_parameters::InspectContainerOptions;
use cognition_proto::executor::v1 as pb;

use crate::harness::DockerTest;
use crate::support::*;

fn sandbox_id(tag: &str) -> String {
    format!("dt-{tag}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn create_applies_the_hardening() {
    let Some(t) = DockerTest::start("create_applies_the_hardening").await else {
        return;
    };
    let id = sandbox_id("hard");
    let sb = t
        .server
        .sandbox_with(pb::CreateSandboxRequest {
            sandbox_id: id.clone(),
            labels: HashMap::from([("cognition.io/session".into(), "s-1".into())]),
            ..Default::default()
        })
        .await;
    assert_eq!(sb.id, id);
    assert_eq!(sb.backend, "docker");
    assert_eq!(sb.workdir, "/workspace");
    assert_eq!(t.containers().await, 1);

    let inspect = t
        .docker
        .inspect_container(&format!("cognition-{id}"), None::<InspectContainerOptions>)
        .await
        .expect("the container exists");
    let state = inspect.state.expect("state");
    assert_eq!(state.running, Some(true));
    let config = inspect.config.expect("config");
    let cmd = config.cmd.clone().unwrap_or_default();
    let labels = config.labels.expect("labels");
    assert_eq!(labels.get("cognition.io/sandbox"), Some(&id));
    assert_eq!(
        labels.get("cognition.io/managed").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        labels.get("cognition.io/session").map(String::as_str),
        Some("s-1")
    );
    let user = config.user.expect("user");
    assert!(
        !user.is_empty() && !user.starts_with("0") && !user.starts_with("root"),
        "non-root user: {user}"
    );
    let host = inspect.host_config.expect("host config");
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert!(
        host.security_opt
            .unwrap_or_default()
            .iter()
            .any(|o| o.starts_with("no-new-privileges")),
        "no-new-privileges"
    );
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert_eq!(host.memory, Some(512 * 1024 * 1024));
    assert_eq!(host.memory_swap, Some(512 * 1024 * 1024), "no swap");
    assert_eq!(host.nano_cpus, Some(1_000_000_000));
    assert_eq!(host.pids_limit, Some(256));
    assert_eq!(host.privileged, Some(false));
    let tmpfs = host.tmpfs.expect("tmpfs");
    assert!(
        tmpfs.get("/tmp").is_some_and(|o| o.contains("noexec")),
        "{tmpfs:?}"
    );
    assert!(tmpfs.contains_key("/home"), "{tmpfs:?}");
    // The workspace, and the agent's socket folder (the image has the agent).
    let binds = host.binds.expect("binds");
    assert_eq!(binds.len(), 2, "{binds:?}");
    assert!(
        binds[0].ends_with(&format!("{id}/workspace:/workspace:rw")),
        "{binds:?}"
    );
    assert!(
        binds[1].ends_with(&format!("{id}/agent:/run/cognition:rw")),
        "{binds:?}"
    );
    assert_eq!(
        cmd.first().map(String::as_str),
        Some("/opt/cognition/bin/cognition-sandbox-agent"),
        "the agent is the container's main process (under docker-init)"
    );

    // Idempotent create.
    let again = t
        .server
        .sandbox_with(pb::CreateSandboxRequest {
            sandbox_id: id.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(again.id, id);
    assert_eq!(t.containers().await, 1);
    t.finish().await;
}

async fn list(client: &Client, selector: &[(&str, &str)]) -> Vec<String> {
    let label_selector = selector
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    client
        .clone()
        .list_sandboxes(pb::ListSandboxesRequest { label_selector })
        .await
        .expect("list")
        .into_inner()
        .sandboxes
        .into_iter()
        .map(|s| s.id)
        .collect()
}

#[tokio::test]
async fn list_by_labels_delete_and_readoption() {
    let Some(mut t) = DockerTest::start("list_by_labels_delete_and_readoption").await else {
        return;
    };
    let (a, b) = (sandbox_id("a"), sandbox_id("b"));
    for (id, session) in [(&a, "s-a"), (&b, "s-b")] {
        t.server
            .sandbox_with(pb::CreateSandboxRequest {
                sandbox_id: id.clone(),
                labels: HashMap::from([
                    ("cognition.io/session".into(), session.into()),
                    ("team".into(), "x".into()),
                ]),
                ..Default::default()
            })
            .await;
    }
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(list(&t.server.client, &[("team", "x")]).await, both);
    assert_eq!(
        list(&t.server.client, &[("cognition.io/session", "s-b")]).await,
        vec![b.clone()]
    );
    assert!(list(&t.server.client, &[("team", "y")]).await.is_empty());

    // Renew, then restart the executor: it re-adopts both sandboxes from the engine's labels.
    let renewed = t
        .server
        .client
        .clone()
        .renew_sandbox(pb::RenewSandboxRequest {
            sandbox_id: a.clone(),
            ttl_seconds: 7200,
        })
        .await
        .expect("renew")
        .into_inner()
        .sandbox
        .expect("sandbox");
    t.restart().await;
    assert_eq!(list(&t.server.client, &[("team", "x")]).await, both);
    let got = t
        .server
        .client
        .clone()
        .get_sandbox(pb::GetSandboxRequest {
            sandbox_id: a.clone(),
        })
        .await
        .expect("get after restart")
        .into_inner()
        .sandbox
        .expect("sandbox");
    assert_eq!(
        got.expires_at, renewed.expires_at,
        "the renewal survives a restart"
    );
    assert_eq!(
        got.labels.get("cognition.io/session").map(String::as_str),
        Some("s-a")
    );
    let o = run(&t.server.client, shell(&a, "after-restart", "echo adopted")).await;
    assert_eq!(o.stdout_str(), "adopted\n");

    // Delete removes the container and the workspace.
    t.server
        .client
        .clone()
        .delete_sandbox(pb::DeleteSandboxRequest {
            sandbox_id: a.clone(),
        })
        .await
        .expect("delete");
    assert_eq!(t.containers().await, 1);
    assert!(!t.root.join(&a).exists(), "workspace removed");
    let err = t
        .server
        .client
        .clone()
        .get_sandbox(pb::GetSandboxRequest { sandbox_id: a })
        .await
        .expect_err("deleted");
    assert_eq!(err.code(), tonic::Code::NotFound);
    t.finish().await;
}

#[tokio::test]
async fn the_reaper_deletes_expired_sandboxes() {
    let Some(t) = DockerTest::start_with("the_reaper_deletes_expired_sandboxes", |c| {
        c.reaper_interval_ms = 200;
    })
    .await
    else {
        return;
    };
    let short = t
        .server
        .sandbox_with(pb::CreateSandboxRequest {
            ttl_seconds: 1,
            ..Default::default()
        })
        .await;
    let long = t.server.sandbox().await;
    assert_eq!(t.containers().await, 2);
    wait_until(
        "the expired sandbox to be reaped",
        std::time::Duration::from_secs(20),
        || async { t.containers().await == 1 },
    )
    .await;
    assert!(!t.root.join(&short.id).exists(), "workspace removed");
    let o = run(&t.server.client, shell(&long.id, "x", "echo still-here")).await;
    assert_eq!(o.stdout_str(), "still-here\n");
    t.finish().await;
}

#[tokio::test]
async fn a_missing_image_is_a_clear_unavailable_error() {
    let Some(t) = DockerTest::start_with("missing_image", |c| {
        c.sandbox_image = "cognition-no-such-image:never".into();
    })
    .await
    else {
        return;
    };
    let err = t
        .server
        .client
        .clone()
        .create_sandbox(pb::CreateSandboxRequest::default())
        .await
        .expect_err("no image, no sandbox");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("cognition-no-such-image:never")
            && err.message().contains("compose/sandbox/build.sh"),
        "the message names the image and how to build it: {}",
        err.message()
    );
    assert_eq!(t.containers().await, 0);
    t.finish().await;
}
