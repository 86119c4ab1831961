//! The session service's executor pool with real processes: two `cognition-executor`
//! processes (local backend, each with its own data dir), a `cognition-session` process over
//! SQLite with `COGNITION_EXECUTOR_URLS` naming both, and the fake LLM over real HTTP scripting
//! the tool calls; the test drives turns over the session service's gRPC API and asks the
//! executors directly where each session's sandbox lives.
//!
//! Checked: new sandboxes spread over both replicas (least-loaded); every call of a session
//! goes to the replica holding its sandbox; a restarted session service finds that replica
//! again (even when placement would pick the other one); `kill -9` of the replica running a
//! session's `sleep 30` ends the tool call with the "sandbox is lost" result and the run
//! finishes at once, and the session's next command runs in a fresh sandbox on the survivor.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use cognition_e2e::procs::{Proc, free_addr, wait_listening};
use cognition_fake_llm::{FakeLlm, Reply};
use cognition_proto::executor::v1 as exec_pb;
use cognition_proto::executor::v1::executor_service_client::ExecutorServiceClient;
use cognition_proto::session::v1 as pb;
use cognition_proto::session::v1::session_service_client::SessionServiceClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

/// Bound on one event, one start-up, one poll.
const STEP: Duration = Duration::from_secs(30);

/// What the model reads when the executor dies under a running command.
const LOST_WHILE_RUNNING: &str = "the sandbox's executor became unreachable while running the \
                                  command; the sandbox is lost — the next command starts in a \
                                  fresh sandbox";

/// One executor replica as its own process.
struct Replica {
    proc: Proc,
    url: String,
}

impl Replica {
    async fn start(data_dir: &Path) -> anyhow::Result<Replica> {
        std::fs::create_dir_all(data_dir)?;
        let addr = free_addr()?;
        let proc = Proc::spawn(
            "cognition-executor",
            &[],
            &[
                ("COGNITION_EXECUTOR_ADDR", addr.to_string()),
                ("COGNITION_DATA_DIR", data_dir.display().to_string()),
            ],
        )?;
        wait_listening(addr, STEP).await?;
        Ok(Replica {
            proc,
            url: format!("http://{addr}"),
        })
    }

    async fn client(&self) -> anyhow::Result<ExecutorServiceClient<Channel>> {
        Ok(ExecutorServiceClient::connect(self.url.clone()).await?)
    }

    /// Ids of the sandboxes labelled with `session_id` on this replica.
    async fn sandboxes_of(&self, session_id: &str) -> anyhow::Result<Vec<String>> {
        let listed = self
            .client()
            .await?
            .list_sandboxes(exec_pb::ListSandboxesRequest {
                label_selector: HashMap::from([(
                    "cognition.io/session".to_owned(),
                    session_id.to_owned(),
                )]),
            })
            .await?
            .into_inner();
        Ok(listed.sandboxes.into_iter().map(|s| s.id).collect())
    }

    /// Whether a command is running in `sandbox_id` here.
    async fn runs_a_command(&self, sandbox_id: &str) -> bool {
        let Ok(mut client) = self.client().await else {
            return false;
        };
        client
            .list_execs(exec_pb::ListExecsRequest {
                sandbox_id: sandbox_id.to_owned(),
                include_finished: false,
            })
            .await
            .map(|r| {
                r.into_inner()
                    .execs
                    .iter()
                    .any(|e| e.state() == exec_pb::ExecState::Running)
            })
            .unwrap_or(false)
    }
}

/// The session service as its own process, on the executors of `urls`.
async fn start_session(
    data_dir: &Path,
    urls: &[&str],
    llm: &FakeLlm,
) -> anyhow::Result<(Proc, SessionServiceClient<Channel>)> {
    let addr: SocketAddr = free_addr()?;
    let proc = Proc::spawn(
        "cognition-session",
        &[],
        &[
            ("COGNITION_SESSION_ADDR", addr.to_string()),
            ("COGNITION_DATA_DIR", data_dir.display().to_string()),
            ("COGNITION_EXECUTOR_URLS", urls.join(",")),
            ("COGNITION_LLM_PROVIDER", "openai_compatible".into()),
            ("COGNITION_LLM_MODEL", "fake-model".into()),
            ("COGNITION_LLM_BASE_URL", llm.openai_base_url()),
            ("COGNITION_LLM_MAX_RETRIES", "0".into()),
        ],
    )?;
    wait_listening(addr, STEP).await?;
    let client = SessionServiceClient::connect(format!("http://{addr}")).await?;
    Ok((proc, client))
}

async fn create_session(client: &mut SessionServiceClient<Channel>) -> anyhow::Result<String> {
    let created = client
        .create_session(pb::CreateSessionRequest::default())
        .await?
        .into_inner();
    Ok(created.session.expect("session").id)
}

/// Sends `content` and returns the run's events up to `done` (each bounded by [`STEP`]).
/// `on_event` sees each event as it arrives.
async fn turn(
    client: &mut SessionServiceClient<Channel>,
    session_id: &str,
    content: &str,
    mut on_event: impl AsyncFnMut(&pb::Event) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<pb::Event>> {
    let mut stream = client
        .send_message(pb::SendMessageRequest {
            session_id: session_id.to_owned(),
            content: content.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut events = Vec::new();
    loop {
        let next = tokio::time::timeout(STEP, stream.message())
            .await
            .map_err(|_| anyhow::anyhow!("no event within {STEP:?}: {events:#?}"))??;
        let Some(event) = next.and_then(|m| m.event) else {
            anyhow::bail!("stream ended before done: {events:#?}");
        };
        on_event(&event).await?;
        let done = matches!(event.kind, Some(pb::event::Kind::Done(_)));
        events.push(event);
        if done {
            return Ok(events);
        }
    }
}

/// A turn in which the model makes one tool call, then answers "ok"; returns the tool result.
async fn tool_turn(
    client: &mut SessionServiceClient<Channel>,
    llm: &FakeLlm,
    session_id: &str,
    tool: &str,
    args: Value,
) -> anyhow::Result<pb::ToolResultEvent> {
    llm.push(Reply::tool_call("call_1", tool, args));
    llm.push(Reply::text("ok"));
    let events = turn(client, session_id, "go", async |_| Ok(())).await?;
    tool_result(&events)
}

fn tool_result(events: &[pb::Event]) -> anyhow::Result<pb::ToolResultEvent> {
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, Some(pb::event::Kind::Error(_)))),
        "the run must not fail: {events:#?}"
    );
    events
        .iter()
        .find_map(|e| match &e.kind {
            Some(pb::event::Kind::ToolResult(r)) => Some(r.clone()),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("no tool_result: {events:#?}"))
}

/// Creates `count` sandboxes on `replica` that belong to no session (load from elsewhere).
async fn add_ballast(replica: &Replica, count: usize) -> anyhow::Result<()> {
    let mut client = replica.client().await?;
    for _ in 0..count {
        client
            .create_sandbox(exec_pb::CreateSandboxRequest {
                labels: HashMap::from([("test".to_owned(), "ballast".to_owned())]),
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

/// Which replicas hold a sandbox of `session_id` (by index), each checked to hold one only.
async fn holders(replicas: &[&Replica], session_id: &str) -> anyhow::Result<Vec<usize>> {
    let mut holding = Vec::new();
    for (i, replica) in replicas.iter().enumerate() {
        let ids = replica.sandboxes_of(session_id).await?;
        assert!(
            ids.len() <= 1,
            "one sandbox per session and replica: {ids:?}"
        );
        if !ids.is_empty() {
            holding.push(i);
        }
    }
    Ok(holding)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_spread_stay_put_and_are_found_again_after_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let llm = FakeLlm::start().await;
    let a = Replica::start(&dir.path().join("executor-a")).await?;
    let b = Replica::start(&dir.path().join("executor-b")).await?;
    let replicas = [&a, &b];
    let session_dir = dir.path().join("session");
    let (session_proc, mut client) = start_session(&session_dir, &[&a.url, &b.url], &llm).await?;

    // Two foreign sandboxes make replica a the busier one: the next two sessions go to b,
    // then the loads are equal and the last two sessions go one to each.
    add_ballast(&a, 2).await?;
    let mut sessions = Vec::new();
    let mut home = HashMap::new();
    for _ in 0..4 {
        let id = create_session(&mut client).await?;
        let wrote = tool_turn(
            &mut client,
            &llm,
            &id,
            "write_file",
            json!({"file_path": "marker.txt", "content": id}),
        )
        .await?;
        assert_eq!(wrote.exit_code, 0, "{}", wrote.output);
        let holding = holders(&replicas, &id).await?;
        assert_eq!(holding.len(), 1, "{id} must have exactly one sandbox");
        home.insert(id.clone(), holding[0]);
        sessions.push(id);
    }
    let placed: Vec<usize> = sessions.iter().map(|id| home[id]).collect();
    assert_eq!(
        placed[..2],
        [1, 1],
        "new sandboxes go to the least-loaded replica: {placed:?}"
    );
    assert_ne!(
        placed[2], placed[3],
        "equal loads, then least-loaded: {placed:?}"
    );

    // Every later call of a session (new turns, other tools) goes to its sandbox's replica.
    let first = sessions[0].clone();
    let read = tool_turn(
        &mut client,
        &llm,
        &first,
        "execute",
        json!({"command": "cat marker.txt"}),
    )
    .await?;
    assert_eq!((read.exit_code, read.output.trim()), (0, first.as_str()));
    let listed = tool_turn(&mut client, &llm, &first, "ls", json!({})).await?;
    assert!(listed.output.contains("marker.txt"), "{}", listed.output);
    assert_eq!(holders(&replicas, &first).await?, vec![home[&first]]);

    // Make the first session's replica the busier one by far, then restart the session
    // service: only discovery (not placement) can bring the session back to its files.
    add_ballast(replicas[home[&first]], 4).await?;
    drop(session_proc); // SIGKILL: no goodbye, the pool's memory is gone.
    let (_session_proc, mut client) = start_session(&session_dir, &[&a.url, &b.url], &llm).await?;
    let again = tool_turn(
        &mut client,
        &llm,
        &first,
        "execute",
        json!({"command": "cat marker.txt"}),
    )
    .await?;
    assert_eq!(
        (again.exit_code, again.output.trim()),
        (0, first.as_str()),
        "after a restart the session's sandbox is found on its replica"
    );
    assert_eq!(holders(&replicas, &first).await?, vec![home[&first]]);

    // Deleting a session removes its sandbox wherever it is.
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: first.clone(),
        })
        .await?;
    assert!(holders(&replicas, &first).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_executor_ends_the_running_command_and_the_next_one_runs_elsewhere()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let llm = FakeLlm::start().await;
    let mut a = Replica::start(&dir.path().join("executor-a")).await?;
    let mut b = Replica::start(&dir.path().join("executor-b")).await?;
    let (_session, mut client) =
        start_session(&dir.path().join("session"), &[&a.url, &b.url], &llm).await?;
    let id = create_session(&mut client).await?;

    // The model runs `sleep 30`; once it runs, the replica holding the sandbox is killed.
    llm.push(Reply::tool_call(
        "call_1",
        "execute",
        json!({"command": "sleep 30"}),
    ));
    llm.push(Reply::text("noted"));
    let mut killed: Option<(usize, Instant)> = None;
    let events = turn(&mut client, &id, "sleep", async |event| {
        if !matches!(event.kind, Some(pb::event::Kind::ToolCall(_))) {
            return Ok(());
        }
        let deadline = Instant::now() + STEP;
        let running_on = loop {
            let mut running_on = None;
            for (i, replica) in [&a, &b].into_iter().enumerate() {
                if replica.runs_a_command(&id).await {
                    running_on = Some(i);
                }
            }
            if let Some(i) = running_on {
                break i;
            }
            anyhow::ensure!(Instant::now() < deadline, "sleep 30 never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let victim = if running_on == 0 { &mut a } else { &mut b };
        victim.proc.child.kill()?; // SIGKILL
        victim.proc.child.wait()?;
        killed = Some((running_on, Instant::now()));
        Ok(())
    })
    .await?;
    let (dead, killed_at) = killed.expect("a replica was killed");
    let ended_after = killed_at.elapsed();
    let result = tool_result(&events)?;
    assert_ne!(result.exit_code, 0, "{}", result.output);
    assert!(
        result.output.contains(LOST_WHILE_RUNNING),
        "{}",
        result.output
    );
    assert!(
        ended_after < Duration::from_secs(10),
        "the run must end soon after the executor died, not after the sleep: {ended_after:?}"
    );
    // The model read the loss and answered: the run completed normally.
    let final_text = match &events.last().and_then(|e| e.kind.clone()) {
        Some(pb::event::Kind::Done(done)) => done.assistant_data.clone().map(|m| m.content),
        _ => None,
    };
    assert_eq!(final_text.as_deref(), Some("noted"));
    let tool_message = llm.requests()[1].body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["role"] == "tool")
        .map(|m| m["content"].to_string())
        .unwrap_or_default();
    assert!(
        tool_message.contains("the sandbox is lost"),
        "{tool_message}"
    );

    // The next command gets a fresh sandbox on the survivor.
    let survivor = if dead == 0 { &b } else { &a };
    let fresh = tool_turn(
        &mut client,
        &llm,
        &id,
        "execute",
        json!({"command": "echo fresh"}),
    )
    .await?;
    assert_eq!(fresh.exit_code, 0, "{}", fresh.output);
    assert_eq!(fresh.output.trim(), "fresh");
    assert_eq!(survivor.sandboxes_of(&id).await?, vec![id.clone()]);

    // A new session, too, is placed on the survivor.
    let other = create_session(&mut client).await?;
    let ran = tool_turn(
        &mut client,
        &llm,
        &other,
        "execute",
        json!({"command": "echo new"}),
    )
    .await?;
    assert_eq!(ran.output.trim(), "new");
    assert_eq!(survivor.sandboxes_of(&other).await?, vec![other.clone()]);
    Ok(())
}
