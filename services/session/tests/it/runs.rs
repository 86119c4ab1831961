//! Agent runs end to end, on SQLite and PostgreSQL: the fake LLM over real HTTP through the
//! real providers, a real executor, the session service over gRPC. See `runs_support`.

use std::sync::Arc;
use std::time::Duration;

use cognition_fake_llm::{FakeLlm, Reply};
use cognition_proto::common::v1::ErrorCode;
use cognition_proto::session::v1 as pb;
use cognition_session::PersistenceBackend;
use cognition_session::llm::{ModelRouter, ProviderConfig, ProviderKind};
use cognition_session::store::RunState;
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

use super::runs_support::*;

fn slow_tokens(n: usize) -> Reply {
    Reply::tokens((0..n).map(|i| format!("t{i} "))).token_delay(Duration::from_millis(50))
}

/// Event names with runs of `token` collapsed into one.
fn collapsed(events: &[pb::Event]) -> Vec<&'static str> {
    let mut out = names(events);
    out.dedup_by(|a, b| *a == "token" && *b == "token");
    out
}

fn openai_messages(request: &cognition_fake_llm::RecordedRequest) -> Vec<Value> {
    request.body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn run_state(env: &Env, run_id: &str) -> RunState {
    let store = env.store().await;
    let run = store
        .get_run(Uuid::parse_str(run_id).unwrap())
        .await
        .unwrap()
        .expect("run row");
    store.close().await;
    run.state
}

// ---------------------------------------------------------------------------------------------

async fn plain_answer(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let Some(env) = Env::new(backend, None).await else {
        return;
    };
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, None).await;
    llm.push(Reply::tokens(["Hel", "lo", " world"]).usage(12, 3));

    let events = collect(&mut send(&mut client, message(&id, "hi")).await).await;
    // Deltas that arrive together may share one `token` event; their text and order are kept.
    assert_eq!(
        collapsed(&events),
        ["status", "token", "usage", "status", "done"]
    );
    let run_ids: Vec<&str> = events.iter().map(|e| e.run_id.as_str()).collect();
    assert!(run_ids.iter().all(|r| *r == run_ids[0] && !r.is_empty()));
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(tokens(&events), "Hello world");
    assert_eq!(
        statuses(&events),
        [pb::RunStatus::Thinking, pb::RunStatus::Idle]
    );
    let Some(Kind::Usage(usage)) = &events[events.len() - 3].kind else {
        panic!()
    };
    assert_eq!((usage.input_tokens, usage.output_tokens), (12, 3));
    assert_eq!(usage.provider, "openai_compatible");
    assert_eq!(usage.model, "fake-model");

    let done = done_message(&events);
    let stored = messages(&mut client, &id).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].role, pb::MessageRole::User as i32);
    assert_eq!(stored[0].content, "hi");
    assert_eq!(stored[1], done, "done.assistant_data is the stored message");
    assert_eq!(done.content, "Hello world");
    assert_eq!(done.model_used.as_deref(), Some("fake-model"));

    let requests = llm.requests();
    assert_eq!(requests.len(), 1);
    let sent = openai_messages(&requests[0]);
    assert_eq!(sent[0]["role"], "system");
    assert_eq!(sent.last().unwrap()["content"], "hi");
    let tools: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    for name in [
        "execute",
        "ls",
        "read_file",
        "write_file",
        "edit_file",
        "glob",
        "grep",
        "write_todos",
    ] {
        assert!(tools.contains(&name), "{name} in {tools:?}");
    }
    assert_eq!(
        run_state(&env, &events[0].run_id).await,
        RunState::Completed
    );
    replica.stop().await;
}

async fn tool_call_round_trip(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let executor = Executor::start().await;
    let Some(env) = Env::new(backend, Some(&executor)).await else {
        return;
    };
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, None).await;
    llm.push(Reply::tool_call("call_1", "execute", json!({"command": "echo hi"})).usage(20, 7));
    llm.push(Reply::text("It printed hi.").usage(30, 4));

    let events = collect(&mut send(&mut client, message(&id, "run echo hi")).await).await;
    assert_eq!(
        collapsed(&events),
        [
            "status",
            "tool_call",
            "tool_result",
            "token",
            "usage",
            "status",
            "done"
        ]
    );
    let Some(Kind::ToolCall(call)) = &events[1].kind else {
        panic!()
    };
    assert_eq!(call.name, "execute");
    assert_eq!(call.id, "call_1");
    let args: Value = serde_json::from_str(&call.args_json).unwrap();
    assert_eq!(args, json!({"command": "echo hi"}));
    let result = &tool_results(&events)[0];
    assert_eq!(result.tool_call_id, "call_1");
    assert_eq!(result.exit_code, 0);
    assert_eq!(result.output.trim(), "hi");
    let Some(Kind::Usage(usage)) = &events[events.len() - 3].kind else {
        panic!()
    };
    assert_eq!((usage.input_tokens, usage.output_tokens), (50, 11));

    // The second model call saw the tool result.
    let requests = llm.requests();
    assert_eq!(requests.len(), 2);
    let sent = openai_messages(&requests[1]);
    let tool_message = sent
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("a tool message");
    assert_eq!(tool_message["tool_call_id"], "call_1");
    assert!(tool_message["content"].as_str().unwrap().contains("hi"));

    let stored = messages(&mut client, &id).await;
    let roles: Vec<i32> = stored.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            pb::MessageRole::User as i32,
            pb::MessageRole::Assistant as i32,
            pb::MessageRole::Tool as i32,
            pb::MessageRole::Assistant as i32
        ]
    );
    assert_eq!(stored[1].tool_calls[0].name, "execute");
    assert_eq!(stored[2].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(stored[3], done_message(&events));
    assert_eq!(stored[3].content, "It printed hi.");
    replica.stop().await;
}

async fn several_tools_in_one_turn(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let executor = Executor::start().await;
    let Some(env) = Env::new(backend, Some(&executor)).await else {
        return;
    };
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, None).await;
    llm.push(
        Reply::tool_call(
            "c0",
            "write_todos",
            json!({"todos": [{"content": "write", "status": "completed"},
                             {"content": "check", "status": "in_progress"}]}),
        )
        .with_tool_call(
            "c1",
            "write_file",
            json!({"file_path": "/notes/a.txt", "content": "alpha\nbeta\n"}),
        )
        .with_tool_call("c2", "read_file", json!({"file_path": "notes/a.txt"}))
        .with_tool_call("c3", "ls", json!({"path": "notes"}))
        .with_tool_call(
            "c4",
            "edit_file",
            json!({"file_path": "notes/a.txt", "old_string": "beta", "new_string": "gamma"}),
        )
        .with_tool_call(
            "c5",
            "grep",
            json!({"pattern": "gam+a", "output_mode": "content"}),
        )
        .with_tool_call("c6", "glob", json!({"pattern": "**/*.txt"})),
    );
    llm.push(Reply::text("Done."));

    let events = collect(&mut send(&mut client, message(&id, "do things")).await).await;
    let results = tool_results(&events);
    let by_id = |id: &str| {
        results
            .iter()
            .find(|r| r.tool_call_id == id)
            .expect(id)
            .clone()
    };
    assert!(results.iter().all(|r| r.exit_code == 0), "{results:#?}");
    assert_eq!(by_id("c2").output, "     1\talpha\n     2\tbeta\n");
    assert!(by_id("c3").output.contains("a.txt"), "{:?}", by_id("c3"));
    assert!(by_id("c5").output.contains("gamma"), "{:?}", by_id("c5"));
    assert!(by_id("c6").output.contains("a.txt"), "{:?}", by_id("c6"));
    assert!(events.iter().any(|e| matches!(&e.kind,
        Some(Kind::Planning(p)) if p.todos == ["write", "check"])));
    assert!(events.iter().any(|e| matches!(&e.kind,
        Some(Kind::StepComplete(s)) if s.description == "write" && s.step_number == 1 && s.total_steps == 2)));
    // Every call is announced with its arguments before its result.
    let calls: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::ToolCall(c)) => Some(c.id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(calls, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
    let sent = openai_messages(&llm.requests()[1]);
    assert_eq!(sent.iter().filter(|m| m["role"] == "tool").count(), 7);
    replica.stop().await;
}

async fn tool_failures_are_results(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let executor = Executor::start().await;
    let Some(env) = Env::new(backend, Some(&executor)).await else {
        return;
    };
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, None).await;
    llm.push(
        Reply::tool_call("c1", "execute", json!({"command": "echo oops >&2; exit 3"}))
            .with_tool_call(
                "c2",
                "read_file",
                json!({"file_path": "../../../etc/passwd"}),
            )
            .with_tool_call("c3", "read_file", json!({"path": "wrong argument name"}))
            .with_tool_call("c4", "no_such_tool", json!({})),
    );
    llm.push(Reply::text("I see the failures."));

    let events = collect(&mut send(&mut client, message(&id, "fail")).await).await;
    let results = tool_results(&events);
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].exit_code, 3);
    assert!(results[0].output.contains("oops"), "{:?}", results[0]);
    assert!(
        results[0].output.contains("exit code 3"),
        "{:?}",
        results[0]
    );
    for r in &results[1..] {
        assert_eq!(r.exit_code, 1, "{r:?}");
        assert!(r.output.starts_with("Error:"), "{r:?}");
    }
    assert!(results[2].output.contains("file_path"), "{:?}", results[2]);
    assert_eq!(done_message(&events).content, "I see the failures.");
    assert!(errors(&events).is_empty());
    let sent = openai_messages(&llm.requests()[1]);
    let tool_texts: Vec<&str> = sent
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(tool_texts.len(), 4);
    assert!(tool_texts[0].contains("exit code 3"));
    assert!(tool_texts[1].starts_with("Error:"));
    replica.stop().await;
}

async fn llm_errors_are_retried_then_reported(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let Some(env) = Env::new(backend, None).await else {
        return;
    };
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, None).await;

    // 500 then success: one answer, two requests.
    llm.push(Reply::error(500, "boom"));
    llm.push(Reply::text("recovered"));
    let events = collect(&mut send(&mut client, message(&id, "one")).await).await;
    assert!(errors(&events).is_empty(), "{events:#?}");
    assert_eq!(done_message(&events).content, "recovered");
    assert_eq!(llm.request_count(), 2);

    // Failing on every retry: LLM_UNAVAILABLE, then done.
    for _ in 0..3 {
        llm.push(Reply::error(503, "overloaded"));
    }
    let events = collect(&mut send(&mut client, message(&id, "two")).await).await;
    assert_eq!(llm.request_count(), 5);
    let errs = errors(&events);
    assert_eq!(errs.len(), 1, "{events:#?}");
    assert_eq!(errs[0].code, ErrorCode::LlmUnavailable as i32);
    assert_eq!(names(&events).last(), Some(&"done"));
    assert_eq!(run_state(&env, &events[0].run_id).await, RunState::Failed);
    // The user message is kept and the conversation stays usable.
    llm.push(Reply::text("fine again"));
    let events = collect(&mut send(&mut client, message(&id, "three")).await).await;
    assert_eq!(done_message(&events).content, "fine again");
    let sent = openai_messages(&llm.requests()[5]);
    let users: Vec<&str> = sent
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["one", "two", "three"]);
    replica.stop().await;
}

async fn falls_back_to_the_next_provider(backend: PersistenceBackend) {
    let broken = FakeLlm::start().await;
    let anthropic = FakeLlm::start().await;
    broken.set_default(Reply::error(503, "down"));
    anthropic.push(Reply::tokens(["from ", "anthropic"]).usage(9, 2));
    let router = ModelRouter::new(vec![
        ProviderConfig::new("primary", ProviderKind::OpenAiCompatible, "fake-model")
            .with_base_url(broken.openai_base_url())
            .with_max_retries(1),
        ProviderConfig::new("backup", ProviderKind::Anthropic, "claude-fake")
            .with_base_url(anthropic.anthropic_base_url())
            .with_api_key("k")
            .with_priority(1),
    ])
    .unwrap()
    .with_retry_policy(fast_retries());
    let Some(env) = Env::new(backend, None).await else {
        return;
    };
    let replica = Replica::start(&env.config, Arc::new(router)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, None).await;

    let events = collect(&mut send(&mut client, message(&id, "hi")).await).await;
    assert_eq!(tokens(&events), "from anthropic");
    let usage = events
        .iter()
        .find_map(|e| match &e.kind {
            Some(Kind::Usage(u)) => Some(u.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(usage.provider, "anthropic");
    assert_eq!((usage.input_tokens, usage.output_tokens), (9, 2));
    assert_eq!(broken.request_count(), 2);
    assert_eq!(anthropic.request_count(), 1);
    replica.stop().await;
}

async fn abort_mid_stream(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let Some(env) = Env::new(backend, None).await else {
        return;
    };
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, None).await;

    let idle = client
        .abort_session(pb::AbortSessionRequest {
            session_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!idle.success, "{idle:?}");

    llm.push(slow_tokens(200));
    let mut stream = send(&mut client, message(&id, "long answer")).await;
    let head = until(&mut stream, is_token).await;
    let answer = client
        .abort_session(pb::AbortSessionRequest {
            session_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.success, "{answer:?}");
    let rest = collect(&mut stream).await;
    let tail: Vec<&str> = names(&rest).into_iter().filter(|n| *n != "token").collect();
    // No `usage`: the provider never reported counts for the dropped stream.
    assert_eq!(tail, ["error", "status", "done"]);
    let errs = errors(&rest);
    assert_eq!(errs[0].code, ErrorCode::Aborted as i32);
    assert_eq!(statuses(&rest), [pb::RunStatus::Cancelled]);
    assert!(
        llm.wait_for_streams_closed(STEP).await,
        "the model stream is dropped"
    );
    let all: Vec<pb::Event> = head.into_iter().chain(rest).collect();
    let partial = tokens(&all);
    assert!(
        partial.starts_with("t0 ") && partial.len() < 200 * 4,
        "{partial}"
    );
    let done = done_message(&all);
    assert_eq!(
        done.content, partial,
        "the partial reply is the stored message"
    );
    assert_eq!(messages(&mut client, &id).await.last(), Some(&done));
    assert_eq!(run_state(&env, &all[0].run_id).await, RunState::Cancelled);
    replica.stop().await;
}

async fn abort_during_a_tool_call(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let executor = Executor::start().await;
    let Some(env) = Env::new(backend, Some(&executor)).await else {
        return;
    };
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, None).await;
    llm.push(
        Reply::tool_call("c1", "execute", json!({"command": "sleep 30"})).with_tool_call(
            "c2",
            "ls",
            json!({}),
        ),
    );
    let mut stream = send(&mut client, message(&id, "sleep")).await;
    until(&mut stream, |e| matches!(e.kind, Some(Kind::ToolCall(_)))).await;
    let answer = client
        .abort_session(pb::AbortSessionRequest {
            session_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.success);
    let rest = collect(&mut stream).await;
    let results = tool_results(&rest);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].tool_call_id, "c1");
    assert_eq!(results[0].exit_code, 130);
    assert!(results[0].output.contains("aborted"), "{:?}", results[0]);
    assert_eq!(errors(&rest)[0].code, ErrorCode::Aborted as i32);
    assert_eq!(statuses(&rest), [pb::RunStatus::Cancelled]);
    // Both calls have a result in the conversation, so the next turn is valid.
    let stored = messages(&mut client, &id).await;
    let tool_ids: Vec<&str> = stored
        .iter()
        .filter_map(|m| m.tool_call_id.as_deref())
        .collect();
    assert_eq!(tool_ids, ["c1", "c2"]);
    llm.push(Reply::text("ok"));
    let events = collect(&mut send(&mut client, message(&id, "next")).await).await;
    assert_eq!(done_message(&events).content, "ok");
    replica.stop().await;
}

async fn reconnect_mid_run(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let Some(env) = Env::new(backend, None).await else {
        return;
    };
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, None).await;
    llm.push(slow_tokens(30));

    let mut stream = send(&mut client, message(&id, "count")).await;
    let mut seen = until(&mut stream, |e| is_token(e) && e.seq >= 4).await;
    drop(stream); // the client goes away; the run goes on
    let last = seen.last().unwrap().seq;
    let mut again = watch(&mut client, &id, last, true).await;
    seen.extend(collect(&mut again).await);
    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "no gap, no repeat"
    );
    assert_eq!(
        tokens(&seen),
        (0..30).map(|i| format!("t{i} ")).collect::<String>()
    );
    assert_eq!(llm.request_count(), 1, "exactly one model call");
    assert_eq!(messages(&mut client, &id).await.len(), 2);
    replica.stop().await;
}

async fn two_watchers_see_the_same_run(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let Some(env) = Env::new(backend, None).await else {
        return;
    };
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, None).await;
    llm.push(slow_tokens(10));
    let mut watcher = watch(&mut client, &id, 0, true).await;
    let from_send = collect(&mut send(&mut client, message(&id, "hi")).await).await;
    let from_watch = collect(&mut watcher).await;
    assert_eq!(from_send, from_watch);
    replica.stop().await;
}

async fn busy_sessions_conflict_or_queue(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let Some(env) = Env::new(backend, None).await else {
        return;
    };
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, None).await;
    llm.push(slow_tokens(40));
    llm.push(Reply::text("second answer"));

    let mut first = send(&mut client, message(&id, "first")).await;
    let head = until(&mut first, is_token).await;
    let refused = client
        .send_message(message(&id, "rejected"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);
    assert_eq!(
        refused.metadata().get("x-cognition-error-code").unwrap(),
        "CONFLICT"
    );
    let mut queued = send(
        &mut client,
        pb::SendMessageRequest {
            on_busy: pb::OnBusy::Enqueue as i32,
            ..message(&id, "second")
        },
    )
    .await;
    let first_events: Vec<pb::Event> = head.into_iter().chain(collect(&mut first).await).collect();
    let second_events = collect(&mut queued).await;
    let first_done = first_events.last().unwrap().seq;
    assert!(
        second_events.iter().all(|e| e.seq > first_done),
        "runs in order"
    );
    assert_ne!(first_events[0].run_id, second_events[0].run_id);
    assert_eq!(done_message(&second_events).content, "second answer");
    let stored = messages(&mut client, &id).await;
    let texts: Vec<&str> = stored.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        texts,
        ["first", &tokens(&first_events), "second", "second answer"]
    );
    // The queued run's model call saw the first answer.
    let sent = openai_messages(&llm.requests()[1]);
    assert!(
        sent.iter()
            .any(|m| m["content"] == tokens(&first_events).as_str())
    );
    assert_eq!(llm.request_count(), 2, "the rejected message never ran");
    replica.stop().await;
}

async fn interrupt_aborts_the_active_run(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let Some(env) = Env::new(backend, None).await else {
        return;
    };
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, None).await;
    llm.push(slow_tokens(200));
    llm.push(Reply::text("new answer"));

    let mut first = send(&mut client, message(&id, "first")).await;
    until(&mut first, is_token).await;
    let mut second = send(
        &mut client,
        pb::SendMessageRequest {
            on_busy: pb::OnBusy::Interrupt as i32,
            ..message(&id, "second")
        },
    )
    .await;
    let first_events = collect(&mut first).await;
    assert_eq!(errors(&first_events)[0].code, ErrorCode::Aborted as i32);
    assert_eq!(
        statuses(&first_events).last(),
        Some(&pb::RunStatus::Cancelled)
    );
    let second_events = collect(&mut second).await;
    assert!(errors(&second_events).is_empty());
    assert_eq!(done_message(&second_events).content, "new answer");
    replica.stop().await;
}

async fn recursion_limit_ends_the_run(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let Some(env) = Env::new(backend, None).await else {
        return;
    };
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, None).await;
    client
        .update_session(pb::UpdateSessionRequest {
            session_id: id.clone(),
            config: Some(pb::SessionConfig {
                recursion_limit: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    llm.set_default(Reply::tool_call(
        "loop",
        "write_todos",
        json!({"todos": []}),
    ));
    let events = collect(&mut send(&mut client, message(&id, "loop forever")).await).await;
    assert_eq!(llm.request_count(), 2);
    let errs = errors(&events);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.contains("recursion limit of 2"), "{errs:?}");
    assert_eq!(run_state(&env, &events[0].run_id).await, RunState::Failed);
    replica.stop().await;
}

async fn readonly_agent_gets_no_write_tools(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let Some(env) = Env::new(backend, None).await else {
        return;
    };
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, Some("readonly")).await;
    llm.push(Reply::tool_call(
        "c1",
        "execute",
        json!({"command": "rm -rf /"}),
    ));
    llm.push(Reply::text("I cannot."));
    let events = collect(&mut send(&mut client, message(&id, "delete all")).await).await;
    let tools: Vec<String> = llm.requests()[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !tools
            .iter()
            .any(|t| t == "execute" || t == "write_file" || t == "edit_file"),
        "{tools:?}"
    );
    let result = &tool_results(&events)[0];
    assert_eq!(result.exit_code, 1);
    assert!(result.output.contains("no tool named"), "{result:?}");
    replica.stop().await;
}

async fn no_executor_is_a_clear_tool_result(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let Some(env) = Env::new(backend, None).await else {
        return;
    };
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, None).await;
    llm.push(Reply::tool_call("c1", "ls", json!({})));
    llm.push(Reply::text("no sandbox"));
    let events = collect(&mut send(&mut client, message(&id, "ls")).await).await;
    let result = &tool_results(&events)[0];
    assert_eq!(result.exit_code, 1);
    assert!(
        result.output.contains("no executor is configured"),
        "{result:?}"
    );
    replica.stop().await;
}

async fn killed_replica_is_recovered(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let Some(env) = Env::new(backend, None).await else {
        return;
    };
    let killable = Killable::start(&env.config, model_for(&llm));
    let mut client = killable.client().await;
    let id = create_session(&mut client, None).await;
    llm.push(slow_tokens(400));
    let mut stream = send(&mut client, message(&id, "never finishes")).await;
    let head = until(&mut stream, |e| is_token(e) && e.seq >= 4).await;
    let run_id = head[0].run_id.clone();
    killable.kill();
    drop(stream);

    // A second instance on the same database closes the run once the lease expires.
    let survivor = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = survivor.client().await;
    let mut watcher = watch(&mut client, &id, 0, true).await;
    let events = collect(&mut watcher).await;
    assert!(events.iter().all(|e| e.run_id == run_id));
    let errs = errors(&events);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].code, ErrorCode::StreamingError as i32);
    assert!(errs[0].message.contains("stopped"), "{errs:?}");
    let partial = tokens(&events);
    assert!(partial.starts_with("t0 t1 t2 "), "{partial}");
    let done = done_message(&events);
    assert_eq!(done.content, partial, "the partial reply is kept");
    let stored = messages(&mut client, &id).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].content, "never finishes");
    assert_eq!(stored[1], done);
    assert_eq!(run_state(&env, &run_id).await, RunState::Interrupted);
    // The session is usable again.
    llm.set_default(Reply::text("back"));
    let events = collect(&mut send(&mut client, message(&id, "again")).await).await;
    assert_eq!(done_message(&events).content, "back");
    survivor.stop().await;
}

async fn graceful_shutdown_closes_local_runs(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let Some(env) = Env::new(backend, None).await else {
        return;
    };
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, None).await;
    llm.push(slow_tokens(400));
    let mut stream = send(&mut client, message(&id, "long")).await;
    until(&mut stream, is_token).await;
    let stopping = tokio::spawn(replica.stop());
    let rest = collect(&mut stream).await;
    stopping.await.unwrap();
    assert_eq!(errors(&rest)[0].code, ErrorCode::StreamingError as i32);
    assert_eq!(
        run_state(&env, &rest[0].run_id).await,
        RunState::Interrupted
    );
}

async fn callbacks_are_signed_and_private_targets_refused(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let Some(mut env) = Env::new(backend, None).await else {
        return;
    };

    // Without the override, a loopback URL is refused when the message is sent.
    let strict = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = strict.client().await;
    let id = create_session(&mut client, None).await;
    let refused = client
        .send_message(pb::SendMessageRequest {
            callback_url: Some("http://127.0.0.1:9/hook".into()),
            ..message(&id, "hi")
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("COGNITION_CALLBACK_ALLOW_PRIVATE"),
        "{refused:?}"
    );
    assert!(
        messages(&mut client, &id).await.is_empty(),
        "nothing stored"
    );
    strict.stop().await;

    env.config.callback_allow_private = true;
    env.config.callback_secret = Some(cognition_config::Secret::new("s3cret"));
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let receiver = Receiver::start(1).await;
    llm.push(Reply::text("called back"));
    let events = collect(
        &mut send(
            &mut client,
            pb::SendMessageRequest {
                callback_url: Some(format!("http://{}/hook", receiver.addr)),
                ..message(&id, "hi")
            },
        )
        .await,
    )
    .await;
    let got = receiver.next().await;
    // The first attempt got a 503; the retry was accepted.
    assert_eq!(receiver.count(), 2);
    let body: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body["content"], "called back");
    assert_eq!(body["id"], done_message(&events).id);
    assert_eq!(got.header("x-cognition-run-status"), Some("completed"));
    assert_eq!(
        got.header("x-cognition-signature"),
        Some(cognition_session::callback::signature("s3cret", &got.body).as_str())
    );
    replica.stop().await;
}

async fn cross_replica_watch_and_abort(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let Some(env) = Env::new(backend, None).await else {
        return;
    };
    let a = Replica::start(&env.config, model_for(&llm)).await;
    let b = Replica::start(&env.config, model_for(&llm)).await;
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    let id = create_session(&mut on_a, None).await;
    llm.push(slow_tokens(400));

    let mut watcher = watch(&mut on_b, &id, 0, true).await;
    let mut stream = send(&mut on_a, message(&id, "shared")).await;
    // B sees A's run live (nothing on B polls: only the notifications feed it).
    let seen_on_b = until(&mut watcher, |e| is_token(e) && e.seq >= 3).await;
    assert!(seen_on_b.iter().all(|e| !is_done(e)));
    let answer = on_b
        .abort_session(pb::AbortSessionRequest {
            session_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.success, "{answer:?}");
    let on_a_events = collect(&mut stream).await;
    assert_eq!(errors(&on_a_events)[0].code, ErrorCode::Aborted as i32);
    let rest_on_b = collect(&mut watcher).await;
    assert_eq!(rest_on_b.last(), on_a_events.last());
    assert_eq!(
        run_state(&env, &on_a_events[0].run_id).await,
        RunState::Cancelled
    );
    a.stop().await;
    b.stop().await;
}

async fn deleting_a_session_stops_its_run(backend: PersistenceBackend) {
    let llm = FakeLlm::start().await;
    let Some(env) = Env::new(backend, None).await else {
        return;
    };
    let replica = Replica::start(&env.config, model_for(&llm)).await;
    let mut client = replica.client().await;
    let id = create_session(&mut client, None).await;
    llm.push(slow_tokens(400));
    let mut stream = send(&mut client, message(&id, "long")).await;
    until(&mut stream, is_token).await;
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: id.clone(),
        })
        .await
        .unwrap();
    // The stream ends (no done: the session and its log are gone) and the model call stops.
    while stream.next_event().await.is_some() {}
    assert!(llm.wait_for_streams_closed(STEP).await);
    replica.stop().await;
}

// ---------------------------------------------------------------------------------------------

/// A tiny HTTP receiver for callbacks: answers 503 to the first `fail_first` requests, then 200.
struct Receiver {
    addr: std::net::SocketAddr,
    rx: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Received>>,
    count: Arc<std::sync::atomic::AtomicUsize>,
}

struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, length) = loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break (None, 0);
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..at]).to_string();
                        let length = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        break (Some(at + 4), length);
                    }
                };
                let Some(head_end) = head_end else { continue };
                while buf.len() < head_end + length {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let headers = head
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let status = if n < fail_first {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let _ = conn
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
                if n >= fail_first {
                    let _ = tx.send(Received {
                        headers,
                        body: buf[head_end..].to_vec(),
                    });
                }
            }
        });
        Receiver {
            addr,
            rx: tokio::sync::Mutex::new(rx),
            count,
        }
    }

    async fn next(&self) -> Received {
        tokio::time::timeout(STEP, self.rx.lock().await.recv())
            .await
            .expect("a callback arrives")
            .expect("receiver alive")
    }

    fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(cognition_session::PersistenceBackend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(cognition_session::PersistenceBackend::Postgres).await;
                }
            )*
        }
    };
}

on_both_backends!(
    plain_answer,
    tool_call_round_trip,
    several_tools_in_one_turn,
    tool_failures_are_results,
    llm_errors_are_retried_then_reported,
    falls_back_to_the_next_provider,
    abort_mid_stream,
    abort_during_a_tool_call,
    reconnect_mid_run,
    two_watchers_see_the_same_run,
    busy_sessions_conflict_or_queue,
    interrupt_aborts_the_active_run,
    recursion_limit_ends_the_run,
    readonly_agent_gets_no_write_tools,
    no_executor_is_a_clear_tool_result,
    killed_replica_is_recovered,
    graceful_shutdown_closes_local_runs,
    callbacks_are_signed_and_private_targets_refused,
    deleting_a_session_stops_its_run,
);

/// Two replicas on one database watch and abort each other's runs: PostgreSQL only (SQLite is
/// the embedded, single-replica setup).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cross_replica_watch_and_abort() {
    cross_replica_watch_and_abort(PersistenceBackend::Postgres).await;
}
