//! The fake server's wire formats, checked with raw HTTP.

use std::time::Duration;

use cognition_fake_llm::{Api, FakeLlm, Reply};
use serde_json::{Value, json};

/// SSE events of a body: (event name, data).
fn parse_sse(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .filter(|block| !block.starts_with(':'))
        .map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            (event, data)
        })
        .collect()
}

async fn post(url: String, headers: &[(&str, &str)], body: Value) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(url).json(&body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.expect("request")
}

fn openai_body(stream: bool, include_usage: bool) -> Value {
    json!({
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
        "stream_options": {"include_usage": include_usage},
    })
}

fn anthropic_body() -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": true,
    })
}

const ANTHROPIC_HEADERS: &[(&str, &str)] =
    &[("x-api-key", "k"), ("anthropic-version", "2023-06-01")];

#[tokio::test]
async fn openai_text_stream_with_usage() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::text("Hello big world").usage(11, 3));
    let url = format!("{}/chat/completions", llm.openai_base_url());
    let response = post(
        url,
        &[("authorization", "Bearer sk-test")],
        openai_body(true, true),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = parse_sse(&response.text().await.unwrap());
    assert!(events.iter().all(|(name, _)| name.is_none()));
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-test");
        assert!(
            chunk.get("usage").is_some(),
            "usage: null on every chunk with include_usage"
        );
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(text, ["Hello", " big", " world"]);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 11);
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert_eq!(usage["usage"]["total_tokens"], 14);

    let recorded = llm.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].api, Api::OpenAi);
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert_eq!(recorded[0].header("Authorization"), Some("Bearer sk-test"));
    assert_eq!(recorded[0].body["messages"][0]["content"], "hi");
}

#[tokio::test]
async fn openai_usage_chunk_only_when_asked() {
    let llm = FakeLlm::start().await;
    let url = format!("{}/chat/completions", llm.openai_base_url());
    let body = post(url, &[], openai_body(true, false))
        .await
        .text()
        .await
        .unwrap();
    let events = parse_sse(&body);
    for (_, data) in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(data).unwrap();
        assert!(chunk.get("usage").is_none(), "{chunk}");
        assert_ne!(chunk["choices"], json!([]));
    }
    // the default reply
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, cognition_fake_llm::DEFAULT_REPLY_TEXT);
}

#[tokio::test]
async fn openai_tool_calls_stream_fragmented_arguments() {
    let llm = FakeLlm::start().await;
    llm.push(
        Reply::text("Looking.")
            .with_tool_call("call_a", "ls", json!({"path": "/tmp"}))
            .with_tool_call("call_b", "execute", json!({"command": "echo hi"})),
    );
    let url = format!("{}/chat/completions", llm.openai_base_url());
    let body = post(url, &[], openai_body(true, true))
        .await
        .text()
        .await
        .unwrap();
    let chunks: Vec<Value> = parse_sse(&body)
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut fragments = [0usize; 2];
    for chunk in &chunks {
        let Some(deltas) = chunk["choices"][0]["delta"]["tool_calls"].as_array() else {
            continue;
        };
        assert_eq!(deltas.len(), 1);
        let d = &deltas[0];
        let index = d["index"].as_u64().unwrap() as usize;
        if let Some(id) = d["id"].as_str() {
            assert_eq!(d["type"], "function");
            assert_eq!(index, calls.len());
            calls.push((
                id.to_owned(),
                d["function"]["name"].as_str().unwrap().to_owned(),
                String::new(),
            ));
        }
        let fragment = d["function"]["arguments"].as_str().unwrap();
        if !fragment.is_empty() {
            assert!(d.get("id").is_none(), "fragments carry only the index");
            fragments[index] += 1;
        }
        calls[index].2.push_str(fragment);
    }
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].0, "call_a");
    assert_eq!(calls[1].1, "execute");
    let args: Value = serde_json::from_str(&calls[1].2).unwrap();
    assert_eq!(args, json!({"command": "echo hi"}));
    assert!(fragments.iter().all(|&n| n > 1), "{fragments:?}");
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str())
        .unwrap();
    assert_eq!(finish, "tool_calls");
}

#[tokio::test]
async fn openai_tool_call_only_merges_role_into_first_chunk() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::tool_call("call_1", "ls", json!({})));
    let url = format!("{}/chat/completions", llm.openai_base_url());
    let body = post(url, &[], openai_body(true, false))
        .await
        .text()
        .await
        .unwrap();
    let first: Value = serde_json::from_str(&parse_sse(&body)[0].1).unwrap();
    let delta = &first["choices"][0]["delta"];
    assert_eq!(delta["role"], "assistant");
    assert_eq!(delta["content"], Value::Null);
    assert_eq!(delta["tool_calls"][0]["id"], "call_1");
}

#[tokio::test]
async fn anthropic_text_and_tool_use_events() {
    let llm = FakeLlm::start().await;
    llm.push(
        Reply::text("Let me check")
            .with_tool_call("toolu_1", "read_file", json!({"file_path": "/etc/hosts"}))
            .usage(25, 9),
    );
    let url = format!("{}/v1/messages", llm.anthropic_base_url());
    let response = post(url, ANTHROPIC_HEADERS, anthropic_body()).await;
    assert_eq!(response.status(), 200);
    let events = parse_sse(&response.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    let data: Vec<Value> = events
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    for (name, d) in names.iter().zip(&data) {
        assert_eq!(d["type"], *name, "the data's type repeats the event name");
    }
    assert_eq!(names[0], "message_start");
    assert_eq!(data[0]["message"]["usage"]["input_tokens"], 25);
    assert_eq!(data[0]["message"]["model"], "claude-test");
    assert_eq!(names[1], "ping");
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    let delta = &data[names.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 9);

    let starts: Vec<&Value> = data
        .iter()
        .filter(|d| d["type"] == "content_block_start")
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0]["content_block"]["type"], "text");
    assert_eq!(starts[1]["index"], 1);
    assert_eq!(starts[1]["content_block"]["type"], "tool_use");
    assert_eq!(starts[1]["content_block"]["id"], "toolu_1");
    assert_eq!(starts[1]["content_block"]["name"], "read_file");
    let text: String = data
        .iter()
        .filter(|d| d["delta"]["type"] == "text_delta")
        .map(|d| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Let me check");
    let json_parts: Vec<&str> = data
        .iter()
        .filter(|d| d["delta"]["type"] == "input_json_delta")
        .map(|d| {
            assert_eq!(d["index"], 1);
            d["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    assert!(json_parts.len() > 2);
    let args: Value = serde_json::from_str(&json_parts.concat()).unwrap();
    assert_eq!(args, json!({"file_path": "/etc/hosts"}));
    assert_eq!(
        data.iter()
            .filter(|d| d["type"] == "content_block_stop")
            .count(),
        2
    );
}

#[tokio::test]
async fn anthropic_checks_version_header_key_and_max_tokens_without_consuming_replies() {
    let llm = FakeLlm::start().await;
    llm.require_api_key("right");
    llm.push(Reply::text("scripted"));
    let url = format!("{}/v1/messages", llm.anthropic_base_url());

    let response = post(
        url.clone(),
        &[("x-api-key", "wrong"), ("anthropic-version", "2023-06-01")],
        anthropic_body(),
    )
    .await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");

    let response = post(url.clone(), &[("x-api-key", "right")], anthropic_body()).await;
    assert_eq!(response.status(), 400);

    let mut no_max = anthropic_body();
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let headers = [("x-api-key", "right"), ("anthropic-version", "2023-06-01")];
    let response = post(url.clone(), &headers, no_max).await;
    assert_eq!(response.status(), 400);
    assert_eq!(llm.pending_replies(), 1);

    let body = post(url, &headers, anthropic_body())
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains("scripted"), "{body}");
    assert_eq!(llm.request_count(), 4);
    assert_eq!(llm.pending_replies(), 0);
}

#[tokio::test]
async fn openai_requires_bearer_key_when_set() {
    let llm = FakeLlm::start().await;
    llm.require_api_key("sk-right");
    let url = format!("{}/chat/completions", llm.openai_base_url());
    let response = post(
        url.clone(),
        &[("authorization", "Bearer sk-wrong")],
        openai_body(true, true),
    )
    .await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let response = post(
        url,
        &[("authorization", "Bearer sk-right")],
        openai_body(true, true),
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn http_errors_in_each_format_with_headers() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::rate_limited(7));
    llm.push(Reply::error(529, "Overloaded"));
    llm.push(Reply::error_body(502, "<html>bad gateway</html>"));

    let url = format!("{}/chat/completions", llm.openai_base_url());
    let response = post(url.clone(), &[], openai_body(true, true)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Rate limit")
    );

    let response = post(
        format!("{}/v1/messages", llm.url()),
        ANTHROPIC_HEADERS,
        anthropic_body(),
    )
    .await;
    assert_eq!(response.status(), 529);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert_eq!(body["error"]["message"], "Overloaded");

    let response = post(url, &[], openai_body(true, true)).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.text().await.unwrap(), "<html>bad gateway</html>");
}

#[tokio::test]
async fn broken_stream_fails_the_body_after_some_tokens() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::text("one two three four").break_after(2));
    let url = format!("{}/chat/completions", llm.openai_base_url());
    let mut response = post(url, &[], openai_body(true, true)).await;
    assert_eq!(response.status(), 200);
    let mut received = String::new();
    let error = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) => panic!("the body ended cleanly: {received}"),
            Err(e) => break e,
        }
    };
    assert!(error.is_body() || error.is_decode(), "{error:?}");
    assert!(
        received.contains("\"one\"") && received.contains("\" two\""),
        "{received}"
    );
    assert!(
        !received.contains("three") && !received.contains("[DONE]"),
        "{received}"
    );
}

#[tokio::test]
async fn in_stream_error_events() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::text("a b c").error_after(1, "Overloaded"));
    llm.push(Reply::text("a b c").error_after(1, "server melted"));
    let body = post(
        format!("{}/v1/messages", llm.url()),
        ANTHROPIC_HEADERS,
        anthropic_body(),
    )
    .await
    .text()
    .await
    .unwrap();
    let events = parse_sse(&body);
    let (name, data) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"));
    let data: Value = serde_json::from_str(data).unwrap();
    assert_eq!(data["error"]["message"], "Overloaded");
    assert!(!body.contains("message_stop"));

    let url = format!("{}/chat/completions", llm.openai_base_url());
    let body = post(url, &[], openai_body(true, true))
        .await
        .text()
        .await
        .unwrap();
    let last: Value = serde_json::from_str(&parse_sse(&body).last().unwrap().1).unwrap();
    assert_eq!(last["error"]["message"], "server melted");
    assert!(!body.contains("[DONE]"));
}

#[tokio::test]
async fn hanging_stream_closes_when_the_client_leaves() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::hang());
    let url = format!("{}/chat/completions", llm.openai_base_url());
    let mut response = post(url, &[], openai_body(true, true)).await;
    let first = response.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
    let keepalive = response.chunk().await.unwrap().unwrap();
    assert_eq!(&keepalive[..], b": keepalive\n\n");
    assert_eq!(llm.open_streams(), 1);
    drop(response);
    assert!(llm.wait_for_streams_closed(Duration::from_secs(10)).await);
}

#[tokio::test]
async fn non_streaming_replies() {
    let llm = FakeLlm::start().await;
    llm.push(
        Reply::text("Hi there")
            .with_tool_call("c1", "ls", json!({"path": "/"}))
            .usage(3, 4),
    );
    llm.push(Reply::text("Hi there").usage(3, 4));
    let url = format!("{}/chat/completions", llm.openai_base_url());
    let body: Value = post(url, &[], openai_body(false, false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Hi there");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"path":"/"}"#
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["usage"]["total_tokens"], 7);

    let mut request = anthropic_body();
    request["stream"] = json!(false);
    let body: Value = post(
        format!("{}/v1/messages", llm.url()),
        ANTHROPIC_HEADERS,
        request,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        body["content"][0],
        json!({"type": "text", "text": "Hi there"})
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["output_tokens"], 4);
}

#[tokio::test]
async fn token_delay_and_waiting_for_requests() {
    let llm = FakeLlm::start().await;
    llm.push(
        Reply::text("slow words")
            .token_delay(Duration::from_millis(20))
            .truncated(),
    );
    let url = format!("{}/chat/completions", llm.openai_base_url());
    let request = tokio::spawn(async move {
        post(url, &[], openai_body(true, false))
            .await
            .text()
            .await
            .unwrap()
    });
    assert!(llm.wait_for_requests(1, Duration::from_secs(10)).await);
    let body = request.await.unwrap();
    assert!(body.contains("\"finish_reason\":\"length\""), "{body}");
    assert!(body.contains("slow") && body.contains(" words"));
    assert!(!llm.wait_for_requests(2, Duration::from_millis(20)).await);
}
