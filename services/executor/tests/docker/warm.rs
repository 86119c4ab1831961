//! The warm pool against the real engine: claims, labels, refills, re-adoption, and nothing left
//! after a graceful shutdown.

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::ListContainersOptionsBuilder;
use cognition_proto::executor::v1 as pb;

use crate::harness::DockerTest;
use crate::support::*;

const WARM_LABEL: &str = "executor.cognition.io/warm";

/// Names of this test's containers carrying the warm label (claimed or not).
async fn warm_containers(t: &DockerTest) -> Vec<String> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![
            format!("executor.cognition.io/root={}", t.root.display()),
            WARM_LABEL.to_owned(),
        ],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let mut names: Vec<String> = t
        .docker
        .list_containers(Some(options))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.names.and_then(|n| n.into_iter().next()))
        .map(|n| n.trim_start_matches('/').to_owned())
        .collect();
    names.sort();
    names
}

/// Unclaimed warm containers (their name is `cognition-.warm-<hex>`).
async fn unclaimed(t: &DockerTest) -> Vec<String> {
    warm_containers(t)
        .await
        .into_iter()
        .filter(|n| n.starts_with("cognition-.warm-"))
        .collect()
}

async fn wait_for_pool(t: &DockerTest, size: usize) {
    let limit = Duration::from_secs(60);
    let start = std::time::Instant::now();
    loop {
        let names = unclaimed(t).await;
        let n = names.len();
        // Ready = the container runs and its agent listens (the pool adds it right after the
        // agent first answers, a few milliseconds later).
        let listening = names.iter().all(|name| {
            let key = name.trim_start_matches("cognition-");
            t.root.join(key).join("agent/agent.sock").exists()
        });
        if n == size && listening {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        }
        assert!(
            start.elapsed() < limit,
            "the warm pool has {n} containers, expected {size}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_new_sandbox_claims_a_warm_container_and_the_pool_refills() {
    let Some(t) = DockerTest::start_with("warm_pool", |c| c.sandbox_warm_pool = 2).await else {
        return;
    };
    wait_for_pool(&t, 2).await;
    let pool_before = unclaimed(&t).await;

    // A claim: the sandbox is one of the warm containers, renamed, with its labels.
    let sb = t
        .server
        .sandbox_with(pb::CreateSandboxRequest {
            sandbox_id: "claimed-1".into(),
            labels: HashMap::from([
                ("cognition.io/session".to_owned(), "s-warm".to_owned()),
                ("cognition.io/user".to_owned(), "alice".to_owned()),
            ]),
            ..Default::default()
        })
        .await;
    assert_eq!(sb.id, "claimed-1");
    assert_eq!(sb.state, pb::SandboxState::Ready as i32);
    assert_eq!(
        sb.labels.get("cognition.io/user").map(String::as_str),
        Some("alice")
    );
    let warm_now = warm_containers(&t).await;
    assert!(
        warm_now.contains(&"cognition-claimed-1".to_owned()),
        "the sandbox is a (renamed) warm container: {warm_now:?}"
    );
    let still_warm = unclaimed(&t).await;
    assert_eq!(
        pool_before
            .iter()
            .filter(|n| !still_warm.contains(n))
            .count(),
        1,
        "exactly one of the ready containers was taken: before {pool_before:?}, now {still_warm:?}"
    );

    // It works like any sandbox: exec (through the agent), files, list by label, renew.
    let o = run(
        &t.server.client,
        shell(&sb.id, "hello", "echo hi; pwd; id -u"),
    )
    .await;
    assert_eq!(o.exited().exit_code, Some(0), "{o:?}");
    assert_eq!(o.stdout_str(), "hi\n/workspace\n1000\n");
    let mut client = t.server.client.clone();
    client
        .write_file(pb::WriteFileRequest {
            sandbox_id: sb.id.clone(),
            path: "notes.txt".into(),
            content: "warm\n".into(),
        })
        .await
        .expect("write");
    let o = run(&t.server.client, shell(&sb.id, "cat", "cat notes.txt")).await;
    assert_eq!(o.stdout_str(), "warm\n");
    let listed = client
        .list_sandboxes(pb::ListSandboxesRequest {
            label_selector: HashMap::from([(
                "cognition.io/session".to_owned(),
                "s-warm".to_owned(),
            )]),
        })
        .await
        .expect("list")
        .into_inner()
        .sandboxes;
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["claimed-1"]
    );
    let none = client
        .list_sandboxes(pb::ListSandboxesRequest {
            label_selector: HashMap::from([(
                "cognition.io/session".to_owned(),
                "other".to_owned(),
            )]),
        })
        .await
        .expect("list")
        .into_inner()
        .sandboxes;
    assert!(none.is_empty(), "{none:?}");
    client
        .renew_sandbox(pb::RenewSandboxRequest {
            sandbox_id: sb.id.clone(),
            ttl_seconds: 3600,
        })
        .await
        .expect("renew");

    // The pool refills in the background.
    wait_for_pool(&t, 2).await;

    // A request with non-default resources starts cold (the pool stays as it is).
    let cold = t
        .server
        .sandbox_with(pb::CreateSandboxRequest {
            sandbox_id: "cold-1".into(),
            resources: Some(pb::Resources {
                memory_bytes: 256 * 1024 * 1024,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert_eq!(cold.id, "cold-1");
    assert!(
        !warm_containers(&t)
            .await
            .contains(&"cognition-cold-1".to_owned())
    );
    assert_eq!(unclaimed(&t).await.len(), 2);

    // Another executor on the root re-adopts the claimed sandbox (its record is the claim) and
    // the ready containers, instead of starting new ones.
    let pool = unclaimed(&t).await;
    let second = t.second_executor().await;
    let again = second
        .client
        .clone()
        .get_sandbox(pb::GetSandboxRequest {
            sandbox_id: "claimed-1".into(),
        })
        .await
        .expect("the claimed sandbox is re-adopted")
        .into_inner()
        .sandbox
        .expect("sandbox");
    assert_eq!(
        again.labels.get("cognition.io/session").map(String::as_str),
        Some("s-warm")
    );
    let o = run(&second.client, shell("claimed-1", "after", "cat notes.txt")).await;
    assert_eq!(o.stdout_str(), "warm\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        unclaimed(&t).await,
        pool,
        "the ready containers were re-adopted, not replaced"
    );
    // Its graceful stop removes the pool it adopted; the first executor refills on its next
    // claim (it keeps its own sandbox records, which live in the engine).
    second.stop().await;
    assert!(
        unclaimed(&t).await.is_empty(),
        "a graceful stop removes the ready pool"
    );

    // Deleting the claimed sandbox removes its container; a graceful stop removes the pool.
    client_of(&t)
        .delete_sandbox(pb::DeleteSandboxRequest {
            sandbox_id: "claimed-1".into(),
        })
        .await
        .expect("delete");
    assert!(
        !warm_containers(&t)
            .await
            .contains(&"cognition-claimed-1".to_owned())
    );
    client_of(&t)
        .delete_sandbox(pb::DeleteSandboxRequest {
            sandbox_id: "cold-1".into(),
        })
        .await
        .expect("delete");
    t.stop_and_check_empty().await;
}

fn client_of(t: &DockerTest) -> Client {
    t.server.client.clone()
}
