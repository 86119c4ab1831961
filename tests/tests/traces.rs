//! One trace per turn across the three services, exported by OTLP.
//!
//! The test runs a small OTLP/gRPC receiver (the collector's `TraceService` over loopback) and
//! starts the gateway, the session service and the executor as separate processes exporting to
//! it: the session service and the executor with a short batch delay (`OTEL_BSP_SCHEDULE_DELAY`),
//! the gateway with a very long one, so that its spans arrive only because stopping it
//! (SIGINT, graceful shutdown) flushes them. A fake OpenAI-compatible model asks
//! for one `execute` tool call, then answers. After one turn through the gateway (SSE), the
//! received spans must form one tree:
//!
//! ```text
//! gateway   http.request  POST /sessions/{id}/messages        (root)
//! session   └ grpc.server  …/SendMessage
//!             └ turn                                            (detached task, child-of)
//!               ├ llm.call  ×2  (provider, model, tokens; traceparent sent to the model)
//!               └ tool.call  execute
//! executor        └ grpc.server  …/Exec
//!                   └ exec  (sandbox_id, exec_id, exit_code 0)
//! ```
//!
//! It also checks that each process reports its own `service.name`, that the model's HTTP
//! request carried `traceparent` from an `llm.call` span, that an incoming `traceparent` is the
//! gateway span's parent, and that the session process writes a JSON log line with the turn's
//! `trace_id` and the `span_id` of one of its spans.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cognition_e2e::procs::{Proc, free_addr, wait_listening};
use cognition_fake_llm::{FakeLlm, Reply};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::json;

/// How long spans may take to arrive (batches leave every 100 ms, or at shutdown).
const SPANS_WAIT: Duration = Duration::from_secs(30);

/// One received span, with the `service.name` of the process that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    /// Empty for a root span.
    parent_id: String,
    attributes: HashMap<String, String>,
}

impl Received {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The OTLP receiver: keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| attributes(&r.attributes).remove("service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(Received {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_id: hex(&span.parent_span_id),
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
        self.spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Attributes as text (strings as they are, numbers and booleans formatted).
fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref()?)?)))
        .collect()
}

fn text(value: &AnyValue) -> Option<String> {
    Some(match value.value.as_ref()? {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        _ => return None,
    })
}

/// Starts the receiver on a loopback port; returns it and its endpoint URL.
async fn start_receiver() -> anyhow::Result<(Receiver, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let receiver = Receiver::default();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Ok((receiver, endpoint))
}

/// Follows parent links from `span` (within the received spans) and tells whether `ancestor`
/// is on the way.
fn descends_from(spans: &[Received], span: &Received, ancestor: &Received) -> bool {
    let by_id: HashMap<&str, &Received> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut current = span;
    for _ in 0..64 {
        if current.parent_id == ancestor.span_id {
            return true;
        }
        match by_id.get(current.parent_id.as_str()) {
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

fn one<'a>(spans: &'a [Received], what: &str, pick: impl Fn(&Received) -> bool) -> &'a Received {
    let found: Vec<&Received> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(found.len(), 1, "expected one {what}, got {found:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_turn_is_one_trace_across_gateway_session_and_executor() -> anyhow::Result<()> {
    let (receiver, otlp) = start_receiver().await?;
    let llm = FakeLlm::start().await;
    llm.push(Reply::tool_call("call_1", "execute", json!({"command": "echo hi"})).usage(30, 8));
    llm.push(Reply::tokens(["It ", "printed ", "hi."]).usage(45, 4));

    let dir = tempfile::tempdir()?;
    let data = dir.path().display().to_string();
    let session_log = dir.path().join("session.log");
    let (executor, session, gateway) = (free_addr()?, free_addr()?, free_addr()?);
    // Batches leave every 100 ms, except the gateway's: it exports only when it stops, which
    // shows that a graceful shutdown flushes the spans.
    let otel = |batch_delay_ms: u64, extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("COGNITION_OTEL_ENABLED", "true".to_owned()),
            ("COGNITION_OTEL_ENDPOINT", otlp.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", batch_delay_ms.to_string()),
        ];
        env.extend_from_slice(extra);
        env
    };
    let _executor = Proc::spawn(
        "cognition-executor",
        &[],
        &otel(
            100,
            &[
                ("COGNITION_EXECUTOR_ADDR", executor.to_string()),
                ("COGNITION_DATA_DIR", data.clone()),
            ],
        ),
    )?;
    let _session = Proc::spawn_logging_to(
        "cognition-session",
        &[],
        &otel(
            100,
            &[
                ("COGNITION_SESSION_ADDR", session.to_string()),
                ("COGNITION_DATA_DIR", data.clone()),
                ("COGNITION_EXECUTOR_URL", format!("http://{executor}")),
                ("COGNITION_LLM_PROVIDER", "openai_compatible".into()),
                ("COGNITION_LLM_MODEL", "fake-model".into()),
                ("COGNITION_LLM_BASE_URL", llm.openai_base_url()),
                ("COGNITION_LLM_MAX_RETRIES", "0".into()),
                ("COGNITION_LOG_FORMAT", "json".into()),
                ("COGNITION_LOG_LEVEL", "info,cognition_session=debug".into()),
            ],
        ),
        &session_log,
    )?;
    let mut gateway_proc = Proc::spawn(
        "cognition-gateway",
        &[],
        &otel(
            600_000,
            &[
                ("COGNITION_HOST", "127.0.0.1".into()),
                ("COGNITION_PORT", gateway.port().to_string()),
                ("COGNITION_SESSION_URL", format!("http://{session}")),
            ],
        ),
    )?;
    for addr in [executor, session, gateway] {
        wait_listening(addr, Duration::from_secs(30)).await?;
    }
    let base = format!("http://{gateway}");
    let http = reqwest::Client::new();
    cognition_harness::wait_until(Duration::from_secs(30), || {
        let request = http.get(format!("{base}/ready"));
        async move {
            request
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        }
    })
    .await?;

    // A caller's trace context is the parent of the gateway's span.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let created: serde_json::Value = http
        .post(format!("{base}/sessions"))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .json(&json!({"title": "traces"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = created["id"].as_str().expect("session id").to_owned();

    let turn = http
        .post(format!("{base}/sessions/{id}/messages"))
        .json(&json!({"content": "run echo hi"}))
        .send()
        .await?;
    assert_eq!(turn.status(), 200);
    let stream = turn.text().await?;
    assert!(stream.contains("event: done"), "{stream}");
    assert!(stream.contains("\"exit_code\":0"), "{stream}");

    // Wait (bounded) until the session's and the executor's spans have arrived: the turn's
    // ends after `done`, the exec's when the process exits. None of the gateway's yet.
    let has = |spans: &[Received], service: &str, name: &str| {
        spans.iter().any(|s| s.service == service && s.name == name)
    };
    wait_for_spans(&receiver, "the session's and the executor's", |spans| {
        spans.iter().filter(|s| s.name == "llm.call").count() >= 2
            && has(spans, "cognition-session", "turn")
            && has(spans, "cognition-session", "tool.call")
            && has(spans, "cognition-executor", "exec")
    })
    .await;
    assert!(
        !receiver
            .spans()
            .iter()
            .any(|s| s.service == "cognition-gateway"),
        "the gateway exported before its batch delay or its shutdown"
    );
    // Stopping the gateway exports its spans.
    let status = gateway_proc.interrupt(Duration::from_secs(15))?;
    assert!(status.success(), "the gateway stopped with {status}");
    let turn_path = format!("/sessions/{id}/messages");
    let spans = wait_for_spans(&receiver, "the gateway's", |spans| {
        spans
            .iter()
            .any(|s| s.name == "http.request" && s.attr("http.path") == Some(&turn_path))
    })
    .await;

    // Each process reports its own service name.
    let services: std::collections::BTreeSet<&str> =
        spans.iter().map(|s| s.service.as_str()).collect();
    for service in [
        "cognition-gateway",
        "cognition-session",
        "cognition-executor",
    ] {
        assert!(
            services.contains(service),
            "no spans from {service}: {services:?}"
        );
    }

    // The incoming traceparent was honoured.
    let create = one(&spans, "POST /sessions span", |s| {
        s.name == "http.request" && s.attr("http.path") == Some("/sessions")
    });
    assert_eq!(create.service, "cognition-gateway");
    assert_eq!(create.trace_id, caller_trace);
    assert_eq!(create.parent_id, caller_span);

    // The gateway's request span is the root of the turn's trace.
    let root = one(&spans, "turn request span", |s| {
        s.name == "http.request"
            && s.attr("http.path") == Some(&turn_path)
            && s.attr("http.method") == Some("POST")
    });
    assert_eq!(root.service, "cognition-gateway");
    assert!(root.parent_id.is_empty(), "root has a parent: {root:?}");
    let trace = root.trace_id.clone();
    let in_trace: Vec<Received> = spans
        .iter()
        .filter(|s| s.trace_id == trace)
        .cloned()
        .collect();
    let by_id: HashMap<&str, &Received> =
        in_trace.iter().map(|s| (s.span_id.as_str(), s)).collect();

    // Session: its spans hang off the gateway's; the turn is the SendMessage call's child.
    let send = one(&in_trace, "SendMessage server span", |s| {
        s.service == "cognition-session"
            && s.name == "grpc.server"
            && s.attr("rpc.method")
                .is_some_and(|m| m.ends_with("/SendMessage"))
    });
    let turn = one(&spans, "turn span", |s| {
        s.name == "turn" && s.attr("session_id") == Some(id.as_str())
    });
    assert_eq!(turn.trace_id, trace, "the turn is in the request's trace");
    assert_eq!(turn.service, "cognition-session");
    assert_eq!(
        turn.parent_id, send.span_id,
        "the turn is SendMessage's child"
    );
    for span in in_trace.iter().filter(|s| s.service == "cognition-session") {
        let parent = by_id
            .get(span.parent_id.as_str())
            .unwrap_or_else(|| panic!("session span without a parent in the trace: {span:?}"));
        assert!(
            ["cognition-gateway", "cognition-session"].contains(&parent.service.as_str()),
            "{span:?} has parent {parent:?}"
        );
        assert!(
            descends_from(&in_trace, span, root),
            "session span not under the gateway's: {span:?}"
        );
    }

    // The model calls and the tool call are inside the turn.
    let llm_calls: Vec<&Received> = spans.iter().filter(|s| s.name == "llm.call").collect();
    assert_eq!(llm_calls.len(), 2, "{llm_calls:#?}");
    for call in &llm_calls {
        assert_eq!(call.trace_id, trace);
        assert!(descends_from(&in_trace, call, turn), "{call:?}");
        assert_eq!(call.attr("provider"), Some("openai_compatible"), "{call:?}");
        assert_eq!(call.attr("model"), Some("fake-model"), "{call:?}");
    }
    let tokens: Vec<(Option<&str>, Option<&str>)> = llm_calls
        .iter()
        .map(|c| (c.attr("input_tokens"), c.attr("output_tokens")))
        .collect();
    assert!(tokens.contains(&(Some("30"), Some("8"))), "{tokens:?}");
    assert!(tokens.contains(&(Some("45"), Some("4"))), "{tokens:?}");
    let tool = one(&spans, "tool.call span", |s| s.name == "tool.call");
    assert_eq!(tool.trace_id, trace);
    assert!(descends_from(&in_trace, tool, turn), "{tool:?}");
    assert_eq!(tool.attr("tool"), Some("execute"));
    assert_eq!(tool.attr("exit_code"), Some("0"));

    // The model's HTTP requests carried the trace, from an `llm.call` span.
    let requests = llm.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        let traceparent = request.header("traceparent").expect("traceparent sent");
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!(parts[1], trace, "{traceparent}");
        assert!(
            llm_calls.iter().any(|c| c.span_id == parts[2]),
            "the model request's parent is no llm.call span: {traceparent}"
        );
    }

    // Executor: the Exec call's server span is a child of a session span (under the tool
    // call), and the process's `exec` span is under it.
    let exec_call = one(&spans, "Exec server span", |s| {
        s.service == "cognition-executor"
            && s.name == "grpc.server"
            && s.attr("rpc.method").is_some_and(|m| m.ends_with("/Exec"))
    });
    assert_eq!(exec_call.trace_id, trace);
    let caller = by_id
        .get(exec_call.parent_id.as_str())
        .expect("the Exec span's parent is in the trace");
    assert_eq!(caller.service, "cognition-session", "{caller:?}");
    assert!(descends_from(&in_trace, exec_call, tool), "{exec_call:?}");
    let exec = one(&spans, "exec span", |s| s.name == "exec");
    assert_eq!(exec.service, "cognition-executor");
    assert_eq!(exec.trace_id, trace);
    assert!(descends_from(&in_trace, exec, exec_call), "{exec:?}");
    assert!(exec.attr("sandbox_id").is_some_and(|v| !v.is_empty()));
    assert!(exec.attr("exec_id").is_some_and(|v| !v.is_empty()));
    assert_eq!(exec.attr("exit_code"), Some("0"), "{exec:?}");

    // The session's JSON log lines carry the trace: one names the turn's trace and one of the
    // session's spans in it.
    let session_spans: Vec<&str> = in_trace
        .iter()
        .filter(|s| s.service == "cognition-session")
        .map(|s| s.span_id.as_str())
        .collect();
    let line = traced_log_line(&session_log, &trace)?;
    let span_id = line["span_id"].as_str().unwrap_or_default();
    assert!(
        session_spans.contains(&span_id),
        "span_id {span_id} of {line} is no session span of the trace"
    );
    Ok(())
}

/// Waits (bounded) until `done` holds for the received spans, then a moment more for the rest of
/// their batch (the Exec server span closes with its stream); returns every span received.
async fn wait_for_spans(
    receiver: &Receiver,
    what: &str,
    done: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + SPANS_WAIT;
    loop {
        let spans = receiver.spans();
        if done(&spans) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return receiver.spans();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} spans did not arrive within {SPANS_WAIT:?}; received: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first JSON line of `log` whose top-level `trace_id` is `trace` (every line must be JSON).
fn traced_log_line(log: &Path, trace: &str) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(log)?;
    let mut found = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("not a JSON log line ({e}): {line}"))?;
        if found.is_none() && value["trace_id"] == trace {
            found = Some(value);
        }
    }
    found.ok_or_else(|| anyhow::anyhow!("no log line of the session has trace_id {trace}:\n{text}"))
}
