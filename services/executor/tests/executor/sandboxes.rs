//! Sandbox lifecycle: idempotent create, labels, renew, delete, re-adoption, TTL reaper.

use std::path::Path;
use std::time::Duration;

use cognition_proto::executor::v1 as pb;
use pb::exec_response::Msg as Resp;

use crate::support::*;

fn labels(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn create_is_idempotent_and_lists_by_labels() {
    let s = Server::start().await;
    let mut client = s.client.clone();
    let req = pb::CreateSandboxRequest {
        sandbox_id: "sess-1".into(),
        labels: labels(&[
            ("cognition.io/session", "1"),
            ("cognition.io/user", "alice"),
        ]),
        ..Default::default()
    };
    let a = s.sandbox_with(req.clone()).await;
    let b = s.sandbox_with(req).await;
    assert_eq!(a, b, "same id → the existing sandbox");
    assert_eq!(a.state, pb::SandboxState::Ready as i32);
    assert_eq!(a.backend, "local");
    assert!(Path::new(&a.workdir).is_dir());
    assert!(Path::new(&a.workdir).starts_with(&s.root));
    let expires = a.expires_at.unwrap().seconds - a.created_at.unwrap().seconds;
    assert!((3599..=3601).contains(&expires), "default TTL: {expires}");

    let generated = s
        .sandbox_with(pb::CreateSandboxRequest {
            labels: labels(&[("cognition.io/user", "bob")]),
            ttl_seconds: 60,
            ..Default::default()
        })
        .await;
    assert!(generated.id.starts_with("sbx-"));

    let list = |sel: &[(&str, &str)]| {
        let mut c = client.clone();
        let sel = labels(sel);
        async move {
            let mut ids: Vec<String> = c
                .list_sandboxes(pb::ListSandboxesRequest {
                    label_selector: sel,
                })
                .await
                .unwrap()
                .into_inner()
                .sandboxes
                .into_iter()
                .map(|s| s.id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(
        list(&[("cognition.io/user", "alice")]).await,
        vec!["sess-1"]
    );
    assert_eq!(
        list(&[("cognition.io/user", "bob")]).await,
        vec![generated.id.clone()]
    );
    assert_eq!(list(&[]).await.len(), 2);
    assert!(list(&[("cognition.io/user", "carol")]).await.is_empty());

    let err = client
        .get_sandbox(pb::GetSandboxRequest {
            sandbox_id: "missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = client
        .create_sandbox(pb::CreateSandboxRequest {
            sandbox_id: "../evil".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let before = a.expires_at.unwrap().seconds;
    let renewed = client
        .renew_sandbox(pb::RenewSandboxRequest {
            sandbox_id: "sess-1".into(),
            ttl_seconds: 7200,
        })
        .await
        .unwrap()
        .into_inner()
        .sandbox
        .unwrap();
    assert!(renewed.expires_at.unwrap().seconds >= before + 3599);
    s.stop().await;
}

#[tokio::test]
async fn delete_kills_running_processes_and_removes_the_folder() {
    let s = Server::start().await;
    let mut client = s.client.clone();
    let sb = s.sandbox().await;
    let mut start = shell(&sb.id, "bg", "sleep 1000 & echo $!; sleep 1000");
    start.on_disconnect = pb::DisconnectPolicy::Detach as i32;
    let mut stream = ExecStream::start(&s.client, start).await;
    let Some(Resp::Started(started)) = stream.next().await else {
        panic!("started")
    };
    let mut got = Outcome::default();
    while !got.stdout.ends_with(b"\n") {
        got.push(stream.next().await.unwrap());
    }
    let child: u32 = got.stdout_str().trim().parse().unwrap();
    assert!(alive(started.pid) && alive(child));

    client
        .delete_sandbox(pb::DeleteSandboxRequest {
            sandbox_id: sb.id.clone(),
        })
        .await
        .unwrap();
    let o = stream.collect().await;
    assert_eq!(o.exited().reason, pb::ExitReason::SandboxTerminated as i32);
    assert!(!Path::new(&sb.workdir).exists());
    assert!(!s.root.join(&sb.id).exists());
    wait_until(
        "the processes to be gone",
        Duration::from_secs(10),
        || async move { !alive(started.pid) && !alive(child) },
    )
    .await;
    let err = client
        .get_sandbox(pb::GetSandboxRequest {
            sandbox_id: sb.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = ExecStream::open(
        &s.client,
        pb::exec_request::Msg::Start(argv(&sb.id, "x", &["true"])),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = client
        .delete_sandbox(pb::DeleteSandboxRequest {
            sandbox_id: sb.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    s.stop().await;
}

#[tokio::test]
async fn sandboxes_are_re_adopted_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_at(dir.path(), |_| {}).await;
    let sb = s
        .sandbox_with(pb::CreateSandboxRequest {
            sandbox_id: "keep".into(),
            labels: labels(&[("cognition.io/session", "s9")]),
            ttl_seconds: 600,
            ..Default::default()
        })
        .await;
    s.client
        .clone()
        .write_file(pb::WriteFileRequest {
            sandbox_id: "keep".into(),
            path: "notes.txt".into(),
            content: b"hi".to_vec(),
        })
        .await
        .unwrap();
    s.stop().await;

    let s = Server::start_at(dir.path(), |_| {}).await;
    let mut client = s.client.clone();
    let again = client
        .get_sandbox(pb::GetSandboxRequest {
            sandbox_id: "keep".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .sandbox
        .unwrap();
    assert_eq!(again.labels, sb.labels);
    assert_eq!(again.expires_at, sb.expires_at);
    assert_eq!(again.workdir, sb.workdir);
    assert_eq!(again.state, pb::SandboxState::Ready as i32);
    let listed = client
        .list_sandboxes(pb::ListSandboxesRequest {
            label_selector: labels(&[("cognition.io/session", "s9")]),
        })
        .await
        .unwrap()
        .into_inner()
        .sandboxes;
    assert_eq!(listed.len(), 1);
    let o = run(&s.client, shell("keep", "cat", "cat notes.txt")).await;
    assert_eq!(o.stdout_str(), "hi");
    s.stop().await;
}

#[tokio::test]
async fn ttl_reaper_deletes_sandboxes_that_are_not_renewed() {
    let s = Server::start_with(|c| c.reaper_interval_ms = 50).await;
    let mut client = s.client.clone();
    let short = s
        .sandbox_with(pb::CreateSandboxRequest {
            ttl_seconds: 1,
            ..Default::default()
        })
        .await;
    let renewed = s
        .sandbox_with(pb::CreateSandboxRequest {
            ttl_seconds: 1,
            ..Default::default()
        })
        .await;
    client
        .renew_sandbox(pb::RenewSandboxRequest {
            sandbox_id: renewed.id.clone(),
            ttl_seconds: 600,
        })
        .await
        .unwrap();
    let mut start = argv(&short.id, "long", &["sleep", "60"]);
    start.on_disconnect = pb::DisconnectPolicy::Detach as i32;
    let stream = ExecStream::start(&s.client, start).await;
    let id = short.id.clone();
    wait_until(
        "the expired sandbox to be reaped",
        Duration::from_secs(15),
        || {
            let mut c = client.clone();
            let id = id.clone();
            async move {
                c.get_sandbox(pb::GetSandboxRequest { sandbox_id: id })
                    .await
                    .is_err()
            }
        },
    )
    .await;
    assert!(!Path::new(&short.workdir).exists());
    assert_eq!(
        stream.collect().await.exited().reason,
        pb::ExitReason::SandboxTerminated as i32
    );
    client
        .get_sandbox(pb::GetSandboxRequest {
            sandbox_id: renewed.id.clone(),
        })
        .await
        .expect("renewed one stays");
    s.stop().await;
}

#[tokio::test]
async fn health_is_serving() {
    let s = Server::start().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "cognition.executor.v1.ExecutorService"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    s.stop().await;
}
