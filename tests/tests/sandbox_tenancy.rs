//! Tenancy from the gateway to the executor, with the stack in one process, scoping on (key
//! `user`), a fake OpenAI-compatible LLM over real HTTP and the local sandbox: alice's session
//! runs `execute`; the sandbox the executor holds carries `cognition.io/user=alice` next to
//! `cognition.io/session=<id>`, is listed for alice and for an unscoped operator but not for
//! bob, refuses bob's calls with PERMISSION_DENIED, and is deleted with alice's session (the
//! cleanup acts for her scope). And the defence in depth: when a sandbox of bob's already holds
//! the id of alice's session (a bug elsewhere), alice's tool call is refused instead of running
//! in it, and deleting her session leaves bob's sandbox alone.

use std::collections::HashMap;

use cognition_fake_llm::{FakeLlm, Reply};
use cognition_harness::{StackOptions, TestStack};
use cognition_proto::executor::v1 as pb;
use serde_json::{Value, json};

const SCOPE_HEADER: &str = "X-Cognition-Scope-User";

/// `message` as sent to the executor by a caller scoped to `user` (`None`: unscoped).
fn as_user<T>(user: Option<&str>, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if let Some(user) = user {
        request
            .metadata_mut()
            .insert("x-cognition-scope-user", user.parse()?);
    }
    Ok(request)
}

/// Sandboxes labelled with `session_id`, as `user` sees them.
async fn sandboxes_of(
    stack: &TestStack,
    user: Option<&str>,
    session_id: &str,
) -> anyhow::Result<Vec<pb::Sandbox>> {
    let request = pb::ListSandboxesRequest {
        label_selector: HashMap::from([("cognition.io/session".to_owned(), session_id.to_owned())]),
    };
    Ok(stack
        .executor_client()
        .await?
        .list_sandboxes(as_user(user, request)?)
        .await?
        .into_inner()
        .sandboxes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_sessions_sandbox_carries_its_scope_label() -> anyhow::Result<()> {
    let llm = FakeLlm::start().await;
    llm.push(Reply::tool_call(
        "call_1",
        "execute",
        json!({"command": "echo hi"}),
    ));
    llm.push(Reply::text("It printed hi."));
    let stack = TestStack::start(StackOptions {
        scope_keys: Some(vec!["user".into()]),
        llm_base_url: Some(llm.openai_base_url()),
        ..Default::default()
    })
    .await?;
    let base = stack.url();
    let http = reqwest::Client::new();

    let session: Value = http
        .post(format!("{base}/sessions"))
        .header(SCOPE_HEADER, "alice")
        .json(&json!({}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = session["id"].as_str().expect("session id").to_owned();
    let body = http
        .post(format!("{base}/sessions/{id}/messages"))
        .header(SCOPE_HEADER, "alice")
        .json(&json!({ "content": "run echo hi" }))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    assert!(
        body.contains("event: tool_result") && body.contains("\"exit_code\":0"),
        "the tool call ran: {body}"
    );

    // The executor's own record: the session's sandbox carries alice's scope label.
    let listed = sandboxes_of(&stack, None, &id).await?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let sandbox = &listed[0];
    assert_eq!(sandbox.id, id);
    assert_eq!(
        sandbox.labels.get("cognition.io/user").map(String::as_str),
        Some("alice"),
        "{:?}",
        sandbox.labels
    );
    assert_eq!(
        sandbox
            .labels
            .get("cognition.io/session")
            .map(String::as_str),
        Some(id.as_str())
    );

    // Alice's scope sees it; bob's neither sees nor reaches it.
    assert_eq!(sandboxes_of(&stack, Some("alice"), &id).await?.len(), 1);
    assert!(sandboxes_of(&stack, Some("bob"), &id).await?.is_empty());
    let status = stack
        .executor_client()
        .await?
        .read_file(as_user(
            Some("bob"),
            pb::ReadFileRequest {
                sandbox_id: id.clone(),
                path: ".".into(),
                offset: 0,
                limit: 0,
            },
        )?)
        .await
        .expect_err("bob reads alice's sandbox");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // Deleting the session (as alice) deletes its sandbox: the cleanup acts for her scope.
    http.delete(format!("{base}/sessions/{id}"))
        .header(SCOPE_HEADER, "alice")
        .send()
        .await?
        .error_for_status()?;
    assert!(sandboxes_of(&stack, None, &id).await?.is_empty());
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_never_runs_in_a_sandbox_of_another_scope() -> anyhow::Result<()> {
    let llm = FakeLlm::start().await;
    llm.push(Reply::tool_call(
        "call_1",
        "execute",
        json!({"command": "echo alice > mark.txt"}),
    ));
    llm.push(Reply::text("Done."));
    let stack = TestStack::start(StackOptions {
        scope_keys: Some(vec!["user".into()]),
        llm_base_url: Some(llm.openai_base_url()),
        ..Default::default()
    })
    .await?;
    let base = stack.url();
    let http = reqwest::Client::new();
    let session: Value = http
        .post(format!("{base}/sessions"))
        .header(SCOPE_HEADER, "alice")
        .json(&json!({}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = session["id"].as_str().expect("session id").to_owned();

    // Bob's sandbox squats on the id alice's session will ask for.
    stack
        .executor_client()
        .await?
        .create_sandbox(as_user(
            Some("bob"),
            pb::CreateSandboxRequest {
                sandbox_id: id.clone(),
                labels: HashMap::from([("cognition.io/session".to_owned(), id.clone())]),
                ..Default::default()
            },
        )?)
        .await?;

    let body = http
        .post(format!("{base}/sessions/{id}/messages"))
        .header(SCOPE_HEADER, "alice")
        .json(&json!({ "content": "mark the sandbox" }))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    assert!(
        body.contains("event: tool_result") && body.contains("belongs to another scope"),
        "the tool call is refused: {body}"
    );
    let listed = stack
        .executor_client()
        .await?
        .list_files(as_user(
            Some("bob"),
            pb::ListFilesRequest {
                sandbox_id: id.clone(),
                path: String::new(),
            },
        )?)
        .await?
        .into_inner()
        .files;
    assert!(
        listed.iter().all(|f| !f.path.ends_with("mark.txt")),
        "alice's command ran in bob's sandbox: {listed:?}"
    );

    http.delete(format!("{base}/sessions/{id}"))
        .header(SCOPE_HEADER, "alice")
        .send()
        .await?
        .error_for_status()?;
    let left = sandboxes_of(&stack, None, &id).await?;
    assert_eq!(left.len(), 1, "bob's sandbox survives: {left:?}");
    assert_eq!(
        left[0].labels.get("cognition.io/user").map(String::as_str),
        Some("bob")
    );
    stack.stop().await
}
