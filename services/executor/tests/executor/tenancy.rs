//! Tenancy: callers present their scope as `x-cognition-scope-<key>` metadata; a sandbox created
//! by tenant A (user=alice) is closed to tenant B (user=bob) on every RPC that names it, open to
//! A and to an unscoped caller, and invisible in B's listings. Create stamps the scope label and
//! refuses a request label that contradicts it. Local backend (the check is the gRPC layer's,
//! on the labels every backend reports).

use std::collections::HashMap;

use cognition_proto::executor::v1 as pb;
use pb::exec_request::Msg as Req;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::*;

const ALICE: &str = "alice";
const BOB: &str = "bob";

/// `message` as sent by a caller scoped to `user` (`None`: no scope metadata).
fn as_user<T>(user: Option<&str>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(user) = user {
        request.metadata_mut().insert(
            "x-cognition-scope-user",
            user.parse().expect("metadata value"),
        );
    }
    request
}

/// Asserts PERMISSION_DENIED whose message names neither tenant's value.
#[track_caller]
fn assert_denied<T>(what: &str, result: Result<T, tonic::Status>) {
    let Err(status) = result else {
        panic!("{what}: succeeded, expected PERMISSION_DENIED");
    };
    assert_eq!(
        status.code(),
        tonic::Code::PermissionDenied,
        "{what}: {status:?}"
    );
    assert!(
        !status.message().contains(ALICE) && !status.message().contains(BOB),
        "{what}: the message leaks a scope value: {}",
        status.message()
    );
}

/// Opens an Exec stream as `user` with `first` as its first message.
async fn open_exec(
    client: &Client,
    user: Option<&str>,
    first: Req,
) -> Result<ExecStream, tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    tx.send(req(first)).await.expect("send the first message");
    let rx = client
        .clone()
        .exec(as_user(user, ReceiverStream::new(rx)))
        .await?
        .into_inner();
    Ok(ExecStream { tx, rx })
}

async fn create(
    client: &Client,
    user: Option<&str>,
    id: &str,
    labels: &[(&str, &str)],
) -> Result<pb::Sandbox, tonic::Status> {
    let request = pb::CreateSandboxRequest {
        sandbox_id: id.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    Ok(client
        .clone()
        .create_sandbox(as_user(user, request))
        .await?
        .into_inner()
        .sandbox
        .expect("sandbox"))
}

async fn list(client: &Client, user: Option<&str>, selector: &[(&str, &str)]) -> Vec<String> {
    let request = pb::ListSandboxesRequest {
        label_selector: selector
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    };
    let mut ids: Vec<String> = client
        .clone()
        .list_sandboxes(as_user(user, request))
        .await
        .expect("list sandboxes")
        .into_inner()
        .sandboxes
        .into_iter()
        .map(|s| s.id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn create_stamps_the_callers_scope_and_refuses_a_conflicting_label() {
    let s = Server::start().await;
    let c = &s.client;
    let sandbox = create(c, Some(ALICE), "t-stamp", &[("cognition.io/session", "t")])
        .await
        .expect("create as alice");
    assert_eq!(
        sandbox.labels.get("cognition.io/user").map(String::as_str),
        Some(ALICE)
    );
    assert_eq!(
        sandbox
            .labels
            .get("cognition.io/session")
            .map(String::as_str),
        Some("t")
    );
    // The same label as the scope is fine; another value is refused and creates nothing.
    create(c, Some(ALICE), "t-same", &[("cognition.io/user", ALICE)])
        .await
        .expect("a label equal to the scope");
    assert_denied(
        "a label contradicting the scope",
        create(c, Some(ALICE), "t-conflict", &[("cognition.io/user", BOB)]).await,
    );
    assert!(!list(c, None, &[]).await.contains(&"t-conflict".to_owned()));
    // Unscoped callers create what they ask for, unstamped.
    let unscoped = create(c, None, "t-plain", &[])
        .await
        .expect("unscoped create");
    assert!(unscoped.labels.is_empty(), "{:?}", unscoped.labels);
    // Bad scope metadata is refused, not ignored.
    let mut request = tonic::Request::new(pb::CreateSandboxRequest::default());
    request
        .metadata_mut()
        .append("x-cognition-scope-user", ALICE.parse().unwrap());
    request
        .metadata_mut()
        .append("x-cognition-scope-user", BOB.parse().unwrap());
    assert_denied(
        "a repeated scope key",
        c.clone().create_sandbox(request).await,
    );
}

#[tokio::test]
async fn another_tenant_is_denied_on_every_rpc_naming_the_sandbox() {
    let s = Server::start().await;
    let c = &s.client;
    let id = "t-first";
    create(c, Some(ALICE), id, &[("cognition.io/session", id)])
        .await
        .expect("create as alice");
    let (alice, bob) = (Some(ALICE), Some(BOB));

    // Alice works in her sandbox: a file and a finished exec.
    c.clone()
        .write_file(as_user(
            alice,
            pb::WriteFileRequest {
                sandbox_id: id.into(),
                path: "notes.txt".into(),
                content: b"alice's notes\n".to_vec(),
            },
        ))
        .await
        .expect("alice writes");
    let out = open_exec(c, alice, Req::Start(argv(id, "e1", &["cat", "notes.txt"])))
        .await
        .expect("alice execs")
        .collect()
        .await;
    assert_eq!(out.stdout_str(), "alice's notes\n");
    assert_eq!(out.exited().exit_code, Some(0));

    // Bob: sandbox RPCs.
    let get = |user| {
        as_user(
            user,
            pb::GetSandboxRequest {
                sandbox_id: id.into(),
            },
        )
    };
    assert_denied("bob gets", c.clone().get_sandbox(get(bob)).await);
    assert_denied(
        "bob renews",
        c.clone()
            .renew_sandbox(as_user(
                bob,
                pb::RenewSandboxRequest {
                    sandbox_id: id.into(),
                    ttl_seconds: 60,
                },
            ))
            .await,
    );
    assert_denied(
        "bob deletes",
        c.clone()
            .delete_sandbox(as_user(
                bob,
                pb::DeleteSandboxRequest {
                    sandbox_id: id.into(),
                },
            ))
            .await,
    );
    assert_denied("bob re-creates the id", create(c, bob, id, &[]).await);

    // Bob: execs.
    assert_denied(
        "bob starts an exec",
        open_exec(c, bob, Req::Start(argv(id, "e2", &["true"]))).await,
    );
    assert_denied(
        "bob starts alice's exec id",
        open_exec(c, bob, Req::Start(argv(id, "e1", &["cat", "notes.txt"]))).await,
    );
    assert_denied(
        "bob attaches",
        open_exec(
            c,
            bob,
            Req::Attach(pb::ExecAttach {
                sandbox_id: id.into(),
                exec_id: "e1".into(),
                ..Default::default()
            }),
        )
        .await,
    );
    let (sid, eid) = (id.to_owned(), "e1".to_owned());
    assert_denied(
        "bob gets an exec",
        c.clone()
            .get_exec(as_user(
                bob,
                pb::GetExecRequest {
                    sandbox_id: sid.clone(),
                    exec_id: eid.clone(),
                },
            ))
            .await,
    );
    assert_denied(
        "bob lists execs",
        c.clone()
            .list_execs(as_user(
                bob,
                pb::ListExecsRequest {
                    sandbox_id: sid.clone(),
                    include_finished: true,
                },
            ))
            .await,
    );
    assert_denied(
        "bob waits",
        c.clone()
            .wait_exec(as_user(
                bob,
                pb::WaitExecRequest {
                    sandbox_id: sid.clone(),
                    exec_id: eid.clone(),
                },
            ))
            .await,
    );
    assert_denied(
        "bob signals",
        c.clone()
            .signal_exec(as_user(
                bob,
                pb::SignalExecRequest {
                    sandbox_id: sid.clone(),
                    exec_id: eid.clone(),
                    signal: pb::Signal::Kill as i32,
                    leader_only: false,
                },
            ))
            .await,
    );

    // Bob: every file RPC.
    let read = |user| {
        as_user(
            user,
            pb::ReadFileRequest {
                sandbox_id: id.into(),
                path: "notes.txt".into(),
                offset: 0,
                limit: 0,
            },
        )
    };
    assert_denied("bob reads", c.clone().read_file(read(bob)).await);
    assert_denied(
        "bob writes",
        c.clone()
            .write_file(as_user(
                bob,
                pb::WriteFileRequest {
                    sandbox_id: id.into(),
                    path: "notes.txt".into(),
                    content: b"bob was here".to_vec(),
                },
            ))
            .await,
    );
    assert_denied(
        "bob edits",
        c.clone()
            .edit_file(as_user(
                bob,
                pb::EditFileRequest {
                    sandbox_id: id.into(),
                    path: "notes.txt".into(),
                    old_string: "alice".into(),
                    new_string: "bob".into(),
                    replace_all: true,
                },
            ))
            .await,
    );
    assert_denied(
        "bob lists files",
        c.clone()
            .list_files(as_user(
                bob,
                pb::ListFilesRequest {
                    sandbox_id: id.into(),
                    path: String::new(),
                },
            ))
            .await,
    );
    assert_denied(
        "bob globs",
        c.clone()
            .glob(as_user(
                bob,
                pb::GlobRequest {
                    sandbox_id: id.into(),
                    pattern: "*".into(),
                    path: String::new(),
                },
            ))
            .await,
    );
    assert_denied(
        "bob greps",
        c.clone()
            .grep(as_user(
                bob,
                pb::GrepRequest {
                    sandbox_id: id.into(),
                    pattern: "notes".into(),
                    path: String::new(),
                    include: String::new(),
                },
            ))
            .await,
    );
    let upload = pb::UploadFileRequest {
        sandbox_id: id.into(),
        path: "bob.txt".into(),
        data: b"x".to_vec(),
    };
    assert_denied(
        "bob uploads",
        c.clone()
            .upload_file(as_user(bob, tokio_stream::iter([upload])))
            .await,
    );
    assert_denied(
        "bob downloads",
        c.clone()
            .download_file(as_user(
                bob,
                pb::DownloadFileRequest {
                    sandbox_id: id.into(),
                    path: "notes.txt".into(),
                },
            ))
            .await,
    );

    // Nothing of Bob's reached the sandbox; Alice and an unscoped caller still get in.
    for user in [alice, None] {
        let content = c
            .clone()
            .read_file(read(user))
            .await
            .expect("read")
            .into_inner()
            .content;
        assert_eq!(content, "alice's notes\n", "as {user:?}");
        c.clone().get_sandbox(get(user)).await.expect("get");
        let exec = c
            .clone()
            .get_exec(as_user(
                user,
                pb::GetExecRequest {
                    sandbox_id: sid.clone(),
                    exec_id: eid.clone(),
                },
            ))
            .await
            .expect("get exec")
            .into_inner()
            .exec
            .expect("exec");
        assert_eq!(exec.exec_id, "e1");
    }
    let attached = open_exec(
        c,
        alice,
        Req::Attach(pb::ExecAttach {
            sandbox_id: id.into(),
            exec_id: "e1".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("alice attaches")
    .collect()
    .await;
    assert_eq!(attached.stdout_str(), "alice's notes\n");

    // Listings: Bob sees nothing of Alice's, whatever he asks for.
    assert_eq!(list(c, bob, &[]).await, Vec::<String>::new());
    assert_eq!(
        list(c, bob, &[("cognition.io/session", id)]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        list(c, bob, &[("cognition.io/user", ALICE)]).await,
        Vec::<String>::new()
    );
    assert_eq!(list(c, alice, &[]).await, vec![id.to_owned()]);
    assert_eq!(list(c, None, &[]).await, vec![id.to_owned()]);

    // Alice deletes her sandbox.
    c.clone()
        .delete_sandbox(as_user(
            alice,
            pb::DeleteSandboxRequest {
                sandbox_id: id.into(),
            },
        ))
        .await
        .expect("alice deletes");
    assert_eq!(list(c, None, &[]).await, Vec::<String>::new());
}

#[tokio::test]
async fn scoped_callers_cannot_reach_unscoped_sandboxes() {
    let s = Server::start().await;
    let c = &s.client;
    create(c, None, "t-ops", &[])
        .await
        .expect("unscoped create");
    assert_denied(
        "alice gets an unlabelled sandbox",
        c.clone()
            .get_sandbox(as_user(
                Some(ALICE),
                pb::GetSandboxRequest {
                    sandbox_id: "t-ops".into(),
                },
            ))
            .await,
    );
    assert_denied(
        "alice execs in an unlabelled sandbox",
        open_exec(c, Some(ALICE), Req::Start(argv("t-ops", "e", &["true"]))).await,
    );
    assert_eq!(list(c, Some(ALICE), &[]).await, Vec::<String>::new());
    // A sandbox that does not exist is NOT_FOUND for a scoped caller too.
    let status = c
        .clone()
        .get_sandbox(as_user(
            Some(ALICE),
            pb::GetSandboxRequest {
                sandbox_id: "t-none".into(),
            },
        ))
        .await
        .expect_err("missing sandbox");
    assert_eq!(status.code(), tonic::Code::NotFound);
}
