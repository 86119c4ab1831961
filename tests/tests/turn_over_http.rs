//! A whole agent turn over the gateway's REST/SSE API, with the stack in one process, a fake
//! OpenAI-compatible LLM over real HTTP and the local sandbox: the model calls `execute`
//! (`echo hi`), sees `hi`, answers; the SSE stream carries every step with increasing ids; the
//! conversation is persisted; a reconnect with `Last-Event-ID` replays exactly the missed events
//! without starting a second run. Also `cognition chat` against the same stack.

use std::time::Duration;

use cognition_fake_llm::{FakeLlm, Reply};
use cognition_harness::{StackOptions, TestStack};
use serde_json::{Value, json};

/// One SSE frame: (id, event, data).
type Frame = (u64, String, Value);

fn parse_sse(body: &str) -> Vec<Frame> {
    body.split("\n\n")
        .filter_map(|block| {
            let (mut id, mut event, mut data) = (None, None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).ok();
                }
            }
            Some((id?, event?, data?))
        })
        .collect()
}

async fn post_message(
    http: &reqwest::Client,
    base: &str,
    session: &str,
    content: &str,
) -> anyhow::Result<Vec<Frame>> {
    let resp = http
        .post(format!("{base}/sessions/{session}/messages"))
        .json(&json!({ "content": content }))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()?
            .starts_with("text/event-stream")
    );
    Ok(parse_sse(&resp.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_call_round_trip_over_rest_and_sse() -> anyhow::Result<()> {
    let llm = FakeLlm::start().await;
    llm.push(Reply::tool_call("call_1", "execute", json!({"command": "echo hi"})).usage(30, 8));
    llm.push(Reply::tokens(["The ", "command ", "printed ", "hi."]).usage(45, 4));
    let stack = TestStack::start(StackOptions {
        llm_base_url: Some(llm.openai_base_url()),
        ..Default::default()
    })
    .await?;
    let base = stack.url();
    let http = reqwest::Client::new();
    let session: Value = http
        .post(format!("{base}/sessions"))
        .json(&json!({}))
        .send()
        .await?
        .json()
        .await?;
    let id = session["id"].as_str().expect("id").to_owned();

    let frames = post_message(&http, &base, &id, "run echo hi").await?;
    let kinds: Vec<&str> = frames.iter().map(|(_, e, _)| e.as_str()).collect();
    assert_eq!(kinds.last(), Some(&"done"), "{kinds:?}");
    let ids: Vec<u64> = frames.iter().map(|(i, _, _)| *i).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "SSE ids must increase: {ids:?}"
    );

    let call = frames
        .iter()
        .find(|(_, e, _)| e == "tool_call")
        .expect("tool_call event");
    assert_eq!(
        call.2,
        json!({"name": "execute", "args": {"command": "echo hi"}, "id": "call_1"})
    );
    let result = frames
        .iter()
        .find(|(_, e, _)| e == "tool_result")
        .expect("tool_result event");
    assert_eq!(result.2["tool_call_id"], "call_1");
    assert_eq!(result.2["exit_code"], 0);
    assert!(
        result.2["output"]
            .as_str()
            .unwrap_or_default()
            .contains("hi"),
        "{}",
        result.2
    );
    let text: String = frames
        .iter()
        .filter(|(_, e, _)| e == "token")
        .map(|(_, _, d)| d["content"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(text, "The command printed hi.");
    let usage: Vec<&Value> = frames
        .iter()
        .filter(|(_, e, _)| e == "usage")
        .map(|(_, _, d)| d)
        .collect();
    // One `usage` per turn: the provider's real counts summed over both model calls.
    assert_eq!(usage.len(), 1, "{usage:?}");
    assert_eq!(usage[0]["input_tokens"], 75);
    assert_eq!(usage[0]["output_tokens"], 12);

    // The model's second request carried the tool result.
    assert_eq!(llm.request_count(), 2);
    let second = &llm.requests()[1].body;
    let tool_msg = second["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["role"] == "tool")
        .expect("tool message");
    assert_eq!(tool_msg["tool_call_id"], "call_1");
    assert!(
        tool_msg["content"]
            .as_str()
            .unwrap_or_default()
            .contains("hi")
    );

    // The conversation is persisted, and `done` carries the stored assistant message.
    let messages: Value = http
        .get(format!("{base}/sessions/{id}/messages"))
        .send()
        .await?
        .json()
        .await?;
    let roles: Vec<&str> = messages["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["user", "assistant", "tool", "assistant"],
        "{messages}"
    );
    let done = &frames.last().unwrap().2["assistant_data"];
    let last = messages["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(done["id"], last["id"]);
    assert_eq!(last["content"], "The command printed hi.");

    // Reconnect with Last-Event-ID: exactly the events after it, no second run.
    let cut = frames[2].0;
    let replay = http
        .get(format!("{base}/sessions/{id}/events"))
        .header("Last-Event-ID", cut.to_string())
        .send()
        .await?;
    let mut body = String::new();
    let mut stream = replay.bytes_stream();
    use futures::StreamExt as _;
    let expected: Vec<u64> = ids.iter().copied().filter(|i| *i > cut).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while parse_sse(&body).len() < expected.len() && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(chunk)) => body.push_str(&String::from_utf8_lossy(&chunk?)),
            _ => break,
        }
    }
    let replayed: Vec<u64> = parse_sse(&body).iter().map(|(i, _, _)| *i).collect();
    assert_eq!(replayed, expected);
    assert_eq!(
        llm.request_count(),
        2,
        "a reconnect must not start another run"
    );
    stack.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cognition_chat_renders_a_turn() -> anyhow::Result<()> {
    let llm = FakeLlm::start().await;
    llm.push(Reply::tokens(["Hello ", "from ", "the ", "fake."]).usage(10, 4));
    let stack = TestStack::start(StackOptions {
        llm_base_url: Some(llm.openai_base_url()),
        ..Default::default()
    })
    .await?;
    let url = stack.url();
    let output = tokio::task::spawn_blocking(move || -> anyhow::Result<std::process::Output> {
        Ok(
            std::process::Command::new(cognition_harness::bin("cognition")?)
                .args(["chat", "--url", &url, "say", "hello"])
                .output()?,
        )
    })
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Hello from the fake."), "{stdout}");
    assert!(stdout.contains("10 in / 4 out tokens"), "{stdout}");
    let request = &llm.requests()[0].body;
    let last_user = request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .unwrap();
    assert_eq!(last_user["content"], "say hello");
    stack.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_cognition_chat_aborts_the_turn() -> anyhow::Result<()> {
    use std::io::Read as _;
    let llm = FakeLlm::start().await;
    // The model streams one token, then hangs: only an abort can end this turn.
    llm.push(Reply::tokens(["thinking…"]).hang_after(1));
    let stack = TestStack::start(StackOptions {
        llm_base_url: Some(llm.openai_base_url()),
        ..Default::default()
    })
    .await?;
    let url = stack.url();
    let mut child = std::process::Command::new(cognition_harness::bin("cognition")?)
        .args(["chat", "--url", &url, "never", "finish"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.contains("thinking…") {
        let chunk = tokio::time::timeout_at(deadline, rx.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("chat exited: {seen}"))?;
        seen.push_str(&chunk);
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        seen.push_str(&chunk);
    }
    // Never wait on a chat that failed to stop: kill it after the deadline so the test fails
    // instead of hanging.
    let status = tokio::task::spawn_blocking(move || {
        while std::time::Instant::now() < deadline.into_std() {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill()?;
        child.wait()
    })
    .await??;
    assert!(
        status.success(),
        "chat must end normally after the aborted turn: {status}\n{seen}"
    );
    assert!(seen.contains("aborting the run"), "{seen}");
    assert!(seen.contains("error (ABORTED)"), "{seen}");
    stack.stop().await?;
    Ok(())
}
