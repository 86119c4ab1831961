//! The LLM providers and the router against the fake LLM server over real HTTP: both wire
//! formats, tool calls, usage, retries, fallback, errors.

use std::time::{Duration, Instant};

use cognition_fake_llm::{FakeLlm, Reply};
use cognition_session::domain::ToolCall;
use cognition_session::llm::{
    ChatEvent, ChatMessage, ChatRequest, ChatStream, LlmError, ModelClient, ModelId, ModelRouter,
    ProviderConfig, ProviderKind, RetryPolicy, StopReason, ToolSpec, Usage, estimate_cost,
};
use futures::StreamExt;
use serde_json::{Value, json};

const FAST: RetryPolicy = RetryPolicy {
    base_delay: Duration::from_millis(1),
    max_delay: Duration::from_millis(5),
    max_retry_after: Duration::from_secs(5),
};

fn openai(llm: &FakeLlm) -> ProviderConfig {
    ProviderConfig::new("oa", ProviderKind::OpenAi, "gpt-4o")
        .with_base_url(llm.openai_base_url())
        .with_api_key("sk-test-openai")
}

fn anthropic(llm: &FakeLlm) -> ProviderConfig {
    ProviderConfig::new("an", ProviderKind::Anthropic, "claude-sonnet-4-5")
        .with_base_url(llm.anthropic_base_url())
        .with_api_key("sk-ant-test")
}

fn router(configs: Vec<ProviderConfig>) -> ModelRouter {
    ModelRouter::new(configs).unwrap().with_retry_policy(FAST)
}

fn user(text: &str) -> ChatMessage {
    ChatMessage::User {
        content: text.to_owned(),
    }
}

fn request(messages: Vec<ChatMessage>) -> ChatRequest {
    ChatRequest {
        system: None,
        messages,
        tools: Vec::new(),
        model: None,
        temperature: None,
        max_tokens: None,
    }
}

fn hi() -> ChatRequest {
    request(vec![user("hi")])
}

/// Every event of a stream, and the error that ended it, if any.
async fn collect(mut stream: ChatStream) -> (Vec<ChatEvent>, Option<LlmError>) {
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(e) => {
                assert!(stream.next().await.is_none(), "nothing after an error");
                return (events, Some(e));
            }
        }
    }
    (events, None)
}

async fn complete(client: &impl ModelClient, request: ChatRequest) -> (ModelId, Vec<ChatEvent>) {
    let (id, stream) = client.stream(request).await.expect("the call starts");
    let (events, error) = collect(stream).await;
    assert!(error.is_none(), "{error:?}");
    (id, events)
}

fn text_of(events: &[ChatEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ChatEvent::TextDelta(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

fn tool_calls(events: &[ChatEvent]) -> Vec<ToolCall> {
    events
        .iter()
        .filter_map(|e| match e {
            ChatEvent::ToolCall(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn finished(events: &[ChatEvent]) -> (Usage, StopReason) {
    match events.last() {
        Some(ChatEvent::Finished { usage, stop_reason }) => (*usage, *stop_reason),
        other => panic!("the last event is not Finished: {other:?}"),
    }
}

fn call(id: &str, name: &str, args: Value) -> ToolCall {
    ToolCall {
        name: name.to_owned(),
        args,
        id: id.to_owned(),
    }
}

/// A conversation with every kind of message, a system prompt, tools and overrides.
fn full_request() -> ChatRequest {
    ChatRequest {
        system: Some("You are terse.".to_owned()),
        messages: vec![
            user("list /tmp and say hi"),
            ChatMessage::Assistant {
                content: "Sure.".to_owned(),
                tool_calls: vec![
                    call("call_1", "ls", json!({"path": "/tmp"})),
                    call("call_2", "execute", json!({"command": "echo hi"})),
                ],
            },
            ChatMessage::Tool {
                tool_call_id: "call_1".to_owned(),
                content: "a.txt".to_owned(),
            },
            ChatMessage::Tool {
                tool_call_id: "call_2".to_owned(),
                content: "hi".to_owned(),
            },
            ChatMessage::Assistant {
                content: String::new(),
                tool_calls: vec![call("call_3", "ls", json!({}))],
            },
            ChatMessage::Tool {
                tool_call_id: "call_3".to_owned(),
                content: "b.txt".to_owned(),
            },
            ChatMessage::Assistant {
                content: "Done.".to_owned(),
                tool_calls: Vec::new(),
            },
            user("thanks"),
        ],
        tools: vec![ToolSpec {
            name: "ls".to_owned(),
            description: "List a directory".to_owned(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
        }],
        model: Some("override-model".to_owned()),
        temperature: Some(0.25),
        max_tokens: Some(321),
    }
}

// ---- OpenAI ----------------------------------------------------------------------------

#[tokio::test]
async fn openai_streams_text_in_order_with_real_usage_and_the_key() {
    let llm = FakeLlm::start().await;
    llm.require_api_key("sk-test-openai");
    llm.push(Reply::text("Hello big world").usage(11, 3));
    let router = router(vec![openai(&llm)]);
    let (id, events) = complete(&router, hi()).await;
    assert_eq!(
        id,
        ModelId {
            provider: "openai".into(),
            model: "gpt-4o".into()
        }
    );
    assert_eq!(text_of(&events), ["Hello", " big", " world"]);
    assert_eq!(events.len(), 4);
    let (usage, stop) = finished(&events);
    assert_eq!(
        usage,
        Usage {
            input_tokens: 11,
            output_tokens: 3
        }
    );
    assert_eq!(stop, StopReason::EndTurn);
    assert!(estimate_cost(&id, usage) > 0.0);

    let recorded = llm.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert_eq!(
        recorded[0].header("authorization"),
        Some("Bearer sk-test-openai")
    );
    let body = &recorded[0].body;
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["model"], "gpt-4o");
    assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
    assert!(body.get("tools").is_none() && body.get("system").is_none());
}

#[tokio::test]
async fn openai_fragmented_tool_call_arrives_complete() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::tool_call(
        "call_x",
        "write_file",
        json!({"file_path": "/tmp/ü.txt", "content": "line 1\nline \"2\""}),
    ));
    let (_, events) = complete(&router(vec![openai(&llm)]), hi()).await;
    assert_eq!(
        events[0],
        ChatEvent::ToolCall(call(
            "call_x",
            "write_file",
            json!({"file_path": "/tmp/ü.txt", "content": "line 1\nline \"2\""})
        ))
    );
    assert_eq!(events.len(), 2);
    assert_eq!(finished(&events).1, StopReason::ToolUse);
}

#[tokio::test]
async fn openai_text_and_two_tool_calls() {
    let llm = FakeLlm::start().await;
    llm.push(
        Reply::text("Let me look.")
            .with_tool_call("c1", "ls", json!({"path": "/"}))
            .with_tool_call("c2", "grep", json!({"pattern": "x", "path": "/src"}))
            .usage(40, 17),
    );
    let (_, events) = complete(&router(vec![openai(&llm)]), hi()).await;
    assert_eq!(text_of(&events).concat(), "Let me look.");
    assert_eq!(
        tool_calls(&events),
        [
            call("c1", "ls", json!({"path": "/"})),
            call("c2", "grep", json!({"pattern": "x", "path": "/src"}))
        ]
    );
    // text first, then the calls, then the end
    let first_call = events
        .iter()
        .position(|e| matches!(e, ChatEvent::ToolCall(_)))
        .unwrap();
    assert!(
        events[..first_call]
            .iter()
            .all(|e| matches!(e, ChatEvent::TextDelta(_)))
    );
    assert_eq!(
        finished(&events),
        (
            Usage {
                input_tokens: 40,
                output_tokens: 17
            },
            StopReason::ToolUse
        )
    );
}

#[tokio::test]
async fn openai_request_carries_system_tools_and_tool_results() {
    let llm = FakeLlm::start().await;
    complete(&router(vec![openai(&llm)]), full_request()).await;
    let body = &llm.requests()[0].body;
    assert_eq!(body["model"], "override-model");
    assert_eq!(body["temperature"], 0.25);
    assert_eq!(body["max_completion_tokens"], 321);
    assert!(body.get("max_tokens").is_none());
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {
            "name": "ls",
            "description": "List a directory",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        }}])
    );
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(
        messages[0],
        json!({"role": "system", "content": "You are terse."})
    );
    assert_eq!(
        messages[1],
        json!({"role": "user", "content": "list /tmp and say hi"})
    );
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(messages[2]["content"], "Sure.");
    let calls = messages[2]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "call_1");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "ls");
    let args = calls[0]["function"]["arguments"]
        .as_str()
        .expect("arguments are JSON text");
    assert_eq!(
        serde_json::from_str::<Value>(args).unwrap(),
        json!({"path": "/tmp"})
    );
    assert_eq!(
        messages[3],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "a.txt"})
    );
    assert_eq!(
        messages[4],
        json!({"role": "tool", "tool_call_id": "call_2", "content": "hi"})
    );
    assert_eq!(
        messages[5]["content"],
        Value::Null,
        "tool calls only: content null"
    );
    assert_eq!(messages[5]["tool_calls"][0]["function"]["arguments"], "{}");
    assert_eq!(
        messages[7],
        json!({"role": "assistant", "content": "Done."})
    );
    assert_eq!(messages[8], json!({"role": "user", "content": "thanks"}));
    assert_eq!(messages.len(), 9);
}

#[tokio::test]
async fn openai_compatible_sends_no_key_when_none_and_uses_max_tokens() {
    let llm = FakeLlm::start().await;
    let config = ProviderConfig::new("local", ProviderKind::OpenAiCompatible, "llama3.1")
        .with_base_url(format!("{}/", llm.openai_base_url()));
    let (id, events) = complete(&router(vec![config]), full_request()).await;
    assert_eq!(id.provider, "openai_compatible");
    assert_eq!(estimate_cost(&id, finished(&events).0), 0.0);
    let recorded = &llm.requests()[0];
    assert_eq!(recorded.header("authorization"), None);
    assert_eq!(recorded.body["max_tokens"], 321);
    assert!(recorded.body.get("max_completion_tokens").is_none());

    let keyed = ProviderConfig::new("or", ProviderKind::OpenAiCompatible, "m")
        .with_base_url(llm.openai_base_url())
        .with_api_key("sk-or");
    complete(&router(vec![keyed]), hi()).await;
    assert_eq!(
        llm.requests()[1].header("authorization"),
        Some("Bearer sk-or")
    );
}

#[tokio::test]
async fn openai_server_error_then_success_within_retries() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::error(500, "The server had an error"));
    llm.push(Reply::text("recovered"));
    let (_, events) = complete(&router(vec![openai(&llm)]), hi()).await;
    assert_eq!(text_of(&events), ["recovered"]);
    assert_eq!(llm.request_count(), 2);
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::rate_limited(1));
    llm.push(Reply::text("after the wait"));
    let started = Instant::now();
    let (_, events) = complete(&router(vec![openai(&llm)]), hi()).await;
    assert_eq!(text_of(&events).concat(), "after the wait");
    assert_eq!(llm.request_count(), 2);
    // The backoff alone would be a few milliseconds; the provider asked for a second.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn retries_exhausted_then_the_next_provider_by_priority() {
    let first = FakeLlm::start().await;
    let second = FakeLlm::start().await;
    first.set_default(Reply::error(503, "unavailable"));
    second.push(Reply::text("from anthropic").usage(5, 2));
    let router = router(vec![
        anthropic(&second).with_priority(2),
        openai(&first).with_priority(1).with_max_retries(2),
        ProviderConfig::new("off", ProviderKind::Mock, "m")
            .with_priority(0)
            .with_enabled(false),
    ]);
    let mut request = hi();
    request.model = Some("gpt-4.1".to_owned());
    let (id, events) = complete(&router, request).await;
    assert_eq!(first.request_count(), 3, "max_retries 2: three attempts");
    assert_eq!(second.request_count(), 1);
    assert_eq!(
        id,
        ModelId {
            provider: "anthropic".into(),
            model: "claude-sonnet-4-5".into()
        },
        "the override applies to the chosen provider only"
    );
    for r in first.requests() {
        assert_eq!(r.body["model"], "gpt-4.1");
    }
    assert_eq!(second.requests()[0].body["model"], "claude-sonnet-4-5");
    assert_eq!(text_of(&events).concat(), "from anthropic");
}

#[tokio::test]
async fn every_provider_failing_reports_them_all() {
    let first = FakeLlm::start().await;
    let second = FakeLlm::start().await;
    first.set_default(Reply::error(502, "bad gateway"));
    second.set_default(Reply::error(529, "Overloaded"));
    let router = router(vec![
        openai(&first).with_max_retries(0),
        anthropic(&second).with_priority(1).with_max_retries(1),
    ]);
    let error = router.stream(hi()).await.err().expect("fails");
    assert_eq!((first.request_count(), second.request_count()), (1, 2));
    let LlmError::Unavailable(message) = &error else {
        panic!("{error:?}")
    };
    assert!(
        message.contains("502") && message.contains("Overloaded"),
        "{message}"
    );

    // a single provider: its own error
    let only = self::router(vec![openai(&first).with_max_retries(1)]);
    let error = only.stream(hi()).await.err().expect("fails");
    assert!(
        matches!(&error, LlmError::Http { status: 502, message, .. } if message.contains("bad gateway")),
        "{error:?}"
    );
}

#[tokio::test]
async fn client_errors_are_neither_retried_nor_fallen_back_from() {
    let first = FakeLlm::start().await;
    let second = FakeLlm::start().await;
    first.push(Reply::error(400, "Invalid 'messages': empty"));
    let router = router(vec![openai(&first), anthropic(&second).with_priority(1)]);
    let error = router.stream(hi()).await.err().expect("fails");
    match &error {
        LlmError::Http {
            provider,
            status,
            message,
        } => {
            assert_eq!((provider.as_str(), *status), ("oa", 400));
            assert!(message.contains("Invalid 'messages'"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!error.is_retryable());
    assert_eq!((first.request_count(), second.request_count()), (1, 0));
}

#[tokio::test]
async fn a_wrong_key_is_reported_without_the_key() {
    let llm = FakeLlm::start().await;
    llm.require_api_key("the-right-key");
    llm.push(Reply::error_body(
        401,
        r#"{"error":{"message":"Incorrect API key provided: sk-test-openai.","type":"invalid_request_error","code":"invalid_api_key"}}"#,
    ));
    let error = router(vec![openai(&llm)])
        .stream(hi())
        .await
        .err()
        .expect("fails");
    let text = error.to_string();
    assert!(
        matches!(error, LlmError::Http { status: 401, .. }),
        "{text}"
    );
    assert!(!text.contains("sk-test-openai"), "{text}");
    assert_eq!(llm.request_count(), 1);
}

#[tokio::test]
async fn a_stream_broken_mid_way_is_an_error_in_the_stream_and_not_retried() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::text("one two three four").break_after(2));
    let (_, stream) = router(vec![openai(&llm)]).stream(hi()).await.unwrap();
    let (events, error) = collect(stream).await;
    assert_eq!(text_of(&events), ["one", " two"]);
    let error = error.expect("the stream ends with an error");
    assert!(matches!(error, LlmError::Transport { .. }), "{error:?}");
    assert_eq!(llm.request_count(), 1);
}

#[tokio::test]
async fn a_stream_broken_before_the_first_event_is_retried() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::text("lost").break_after(0));
    llm.push(Reply::text("second try"));
    let (_, events) = complete(&router(vec![openai(&llm)]), hi()).await;
    assert_eq!(text_of(&events), ["second", " try"]);
    assert_eq!(llm.request_count(), 2);
}

#[tokio::test]
async fn invalid_tool_arguments_are_a_protocol_error() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::text("ok").with_raw_tool_call("c1", "ls", r#"{"path": "/tmp"#));
    let (_, stream) = router(vec![openai(&llm)]).stream(hi()).await.unwrap();
    let (events, error) = collect(stream).await;
    assert_eq!(text_of(&events), ["ok"]);
    let error = error.expect("fails");
    assert!(matches!(error, LlmError::Protocol { .. }), "{error:?}");
    assert!(error.to_string().contains("\"ls\""), "{error}");
}

#[tokio::test]
async fn an_unreachable_provider_is_a_retryable_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let config = ProviderConfig::new("gone", ProviderKind::OpenAiCompatible, "m")
        .with_base_url(format!("http://127.0.0.1:{port}/v1"))
        .with_max_retries(1);
    let error = router(vec![config])
        .stream(hi())
        .await
        .err()
        .expect("fails");
    assert!(matches!(error, LlmError::Transport { .. }), "{error:?}");
    assert!(error.is_retryable());
    assert!(!error.to_string().contains("127.0.0.1"), "no URL: {error}");
}

#[tokio::test]
async fn dropping_a_stream_closes_the_connection() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::text("first").hang_after(1));
    let (_, mut stream) = router(vec![openai(&llm)]).stream(hi()).await.unwrap();
    assert_eq!(
        stream.next().await.unwrap().unwrap(),
        ChatEvent::TextDelta("first".into())
    );
    assert_eq!(llm.open_streams(), 1);
    drop(stream);
    assert!(llm.wait_for_streams_closed(Duration::from_secs(10)).await);
}

// ---- Anthropic -------------------------------------------------------------------------

#[tokio::test]
async fn anthropic_streams_text_with_real_usage_and_headers() {
    let llm = FakeLlm::start().await;
    llm.require_api_key("sk-ant-test");
    llm.push(Reply::text("Bonjour tout le monde").usage(25, 4));
    let (id, events) = complete(&router(vec![anthropic(&llm)]), hi()).await;
    assert_eq!(
        id,
        ModelId {
            provider: "anthropic".into(),
            model: "claude-sonnet-4-5".into()
        }
    );
    assert_eq!(text_of(&events), ["Bonjour", " tout", " le", " monde"]);
    assert_eq!(
        finished(&events),
        (
            Usage {
                input_tokens: 25,
                output_tokens: 4
            },
            StopReason::EndTurn
        )
    );
    assert!(estimate_cost(&id, finished(&events).0) > 0.0);
    let recorded = &llm.requests()[0];
    assert_eq!(recorded.path, "/v1/messages");
    assert_eq!(recorded.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(recorded.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(recorded.header("authorization"), None);
    assert_eq!(recorded.body["stream"], true);
    assert_eq!(recorded.body["max_tokens"], 8192);
}

#[tokio::test]
async fn anthropic_fragmented_tool_use_arrives_complete() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::tool_call(
        "toolu_1",
        "edit_file",
        json!({"file_path": "a.rs", "old_string": "fn a()", "new_string": "fn b()", "replace_all": false}),
    ));
    let (_, events) = complete(&router(vec![anthropic(&llm)]), hi()).await;
    assert_eq!(
        events[0],
        ChatEvent::ToolCall(call(
            "toolu_1",
            "edit_file",
            json!({"file_path": "a.rs", "old_string": "fn a()", "new_string": "fn b()", "replace_all": false})
        ))
    );
    assert_eq!(events.len(), 2);
    assert_eq!(finished(&events).1, StopReason::ToolUse);
}

#[tokio::test]
async fn anthropic_text_and_two_tool_uses() {
    let llm = FakeLlm::start().await;
    llm.push(
        Reply::text("Checking both.")
            .with_tool_call("toolu_a", "read_file", json!({"file_path": "/a"}))
            .with_tool_call("toolu_b", "glob", json!({"pattern": "**/*.rs"}))
            .usage(100, 33),
    );
    let (_, events) = complete(&router(vec![anthropic(&llm)]), hi()).await;
    assert_eq!(text_of(&events).concat(), "Checking both.");
    assert_eq!(
        tool_calls(&events),
        [
            call("toolu_a", "read_file", json!({"file_path": "/a"})),
            call("toolu_b", "glob", json!({"pattern": "**/*.rs"}))
        ]
    );
    assert_eq!(
        finished(&events),
        (
            Usage {
                input_tokens: 100,
                output_tokens: 33
            },
            StopReason::ToolUse
        )
    );
}

#[tokio::test]
async fn anthropic_request_carries_system_tools_and_tool_results() {
    let llm = FakeLlm::start().await;
    complete(&router(vec![anthropic(&llm)]), full_request()).await;
    let body = &llm.requests()[0].body;
    assert_eq!(body["model"], "override-model");
    assert_eq!(body["system"], "You are terse.");
    assert_eq!(body["max_tokens"], 321);
    assert_eq!(body["temperature"], 0.25);
    assert_eq!(
        body["tools"],
        json!([{
            "name": "ls",
            "description": "List a directory",
            "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        }])
    );
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "list /tmp and say hi"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Sure."},
                {"type": "tool_use", "id": "call_1", "name": "ls", "input": {"path": "/tmp"}},
                {"type": "tool_use", "id": "call_2", "name": "execute", "input": {"command": "echo hi"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "a.txt"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "hi"},
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_3", "name": "ls", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_3", "content": "b.txt"},
            ]},
            {"role": "assistant", "content": [{"type": "text", "text": "Done."}]},
            {"role": "user", "content": [{"type": "text", "text": "thanks"}]},
        ])
    );
}

#[tokio::test]
async fn anthropic_overloaded_then_success() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::error(529, "Overloaded"));
    llm.push(Reply::text("fine now"));
    let (_, events) = complete(&router(vec![anthropic(&llm)]), hi()).await;
    assert_eq!(text_of(&events).concat(), "fine now");
    assert_eq!(llm.request_count(), 2);
}

#[tokio::test]
async fn anthropic_error_event_mid_stream_ends_the_stream() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::text("partial answer here").error_after(2, "Overloaded"));
    let (_, stream) = router(vec![anthropic(&llm)]).stream(hi()).await.unwrap();
    let (events, error) = collect(stream).await;
    assert_eq!(text_of(&events), ["partial", " answer"]);
    let error = error.expect("fails");
    assert!(error.to_string().contains("Overloaded"), "{error}");
    assert_eq!(llm.request_count(), 1);
}

#[tokio::test]
async fn anthropic_stream_broken_mid_way() {
    let llm = FakeLlm::start().await;
    // "Checking" is one piece, then the tool's argument fragments: break inside them.
    llm.push(
        Reply::text("Checking")
            .with_tool_call("t", "ls", json!({"path": "/a/long/path"}))
            .break_after(2),
    );
    let (_, stream) = router(vec![anthropic(&llm)]).stream(hi()).await.unwrap();
    let (events, error) = collect(stream).await;
    assert_eq!(text_of(&events), ["Checking"]);
    assert!(
        tool_calls(&events).is_empty(),
        "a half-streamed call is never emitted"
    );
    assert!(
        matches!(error, Some(LlmError::Transport { .. })),
        "{error:?}"
    );
    assert_eq!(llm.request_count(), 1);
}

#[tokio::test]
async fn a_tool_call_broken_before_it_completes_is_retried() {
    let llm = FakeLlm::start().await;
    // No event reached the caller: the attempt failed as a whole and is retried.
    llm.push(Reply::tool_call("t", "ls", json!({"path": "/a/long/path"})).break_after(2));
    llm.push(Reply::tool_call("t2", "ls", json!({"path": "/b"})));
    let (_, events) = complete(&router(vec![anthropic(&llm)]), hi()).await;
    assert_eq!(
        tool_calls(&events),
        [call("t2", "ls", json!({"path": "/b"}))]
    );
    assert_eq!(llm.request_count(), 2);
}

// ---- mock ------------------------------------------------------------------------------

#[tokio::test]
async fn mock_provider_is_deterministic() {
    let router = router(vec![ProviderConfig::new(
        "mock",
        ProviderKind::Mock,
        "mock-echo",
    )]);
    let (id, first) = complete(&router, request(vec![user("echo  this please")])).await;
    let (_, second) = complete(&router, request(vec![user("echo  this please")])).await;
    assert_eq!(first, second);
    assert_eq!(id.provider, "mock");
    assert_eq!(text_of(&first).concat(), "echo  this please");
    assert_eq!(estimate_cost(&id, finished(&first).0), 0.0);
}
