//! Server-sent events: the session service's `Event` stream as the contract's SSE wire format.
//!
//! ```text
//! id: <seq>
//! event: <type>
//! data: <json on one line>
//!
//! ```
//!
//! The first frame is a `retry:` hint; a `: keepalive` comment follows every interval of silence.
//! An upstream error in the middle of a stream becomes an `error` event and ends the stream.
//! Dropping the response (client gone) drops the gRPC stream; the run itself continues in the
//! session service. Gateway shutdown ends every stream so that the drain can finish.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cognition_errors::Code;
use cognition_proto::session::v1 as pb;
use cognition_proto::session::v1::event::Kind;
use futures::{Stream, StreamExt};
use http::HeaderValue;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::error::HttpError;
use crate::state::AppState;
use crate::views::{Args, MessageView};

/// The reconnection delay suggested to clients in the first frame.
pub const RETRY: Duration = Duration::from_secs(3);

/// The SSE `event:` name of an event kind.
pub fn event_type(kind: &Kind) -> &'static str {
    match kind {
        Kind::Token(_) => "token",
        Kind::ToolCall(_) => "tool_call",
        Kind::ToolResult(_) => "tool_result",
        Kind::Planning(_) => "planning",
        Kind::StepComplete(_) => "step_complete",
        Kind::Delegation(_) => "delegation",
        Kind::Status(_) => "status",
        Kind::Interrupt(_) => "interrupt",
        Kind::Usage(_) => "usage",
        Kind::Error(_) => "error",
        Kind::Done(_) => "done",
    }
}

/// Lower-case name of a run status (`thinking|idle|waiting_for_approval|resuming|cancelled`).
pub fn run_status(value: i32) -> &'static str {
    match pb::RunStatus::try_from(value) {
        Ok(pb::RunStatus::Thinking) => "thinking",
        Ok(pb::RunStatus::Idle) => "idle",
        Ok(pb::RunStatus::WaitingForApproval) => "waiting_for_approval",
        Ok(pb::RunStatus::Resuming) => "resuming",
        Ok(pb::RunStatus::Cancelled) => "cancelled",
        Ok(pb::RunStatus::Unspecified) | Err(_) => "unspecified",
    }
}

/// The code string (from the shared table) of an error event's code.
pub fn error_code(value: i32) -> &'static str {
    cognition_proto::error_code::name(value)
        .and_then(Code::parse)
        .unwrap_or(Code::InternalError)
        .as_str()
}

/// The `data:` JSON of an event, per the contract's table.
pub struct EventData<'a>(pub &'a Kind);

impl Serialize for EventData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        match self.0 {
            Kind::Token(e) => map.serialize_entry("content", &e.content)?,
            Kind::ToolCall(e) => {
                map.serialize_entry("name", &e.name)?;
                map.serialize_entry("args", &Args(&e.args_json))?;
                map.serialize_entry("id", &e.id)?;
            }
            Kind::ToolResult(e) => {
                map.serialize_entry("tool_call_id", &e.tool_call_id)?;
                map.serialize_entry("output", &e.output)?;
                map.serialize_entry("exit_code", &e.exit_code)?;
            }
            Kind::Planning(e) => map.serialize_entry("todos", &e.todos)?,
            Kind::StepComplete(e) => {
                map.serialize_entry("step_number", &e.step_number)?;
                map.serialize_entry("total_steps", &e.total_steps)?;
                map.serialize_entry("description", &e.description)?;
            }
            Kind::Delegation(e) => {
                map.serialize_entry("from_agent", &e.from_agent)?;
                map.serialize_entry("to_agent", &e.to_agent)?;
                map.serialize_entry("task", &e.task)?;
            }
            Kind::Status(e) => map.serialize_entry("status", run_status(e.status))?,
            Kind::Interrupt(e) => {
                map.serialize_entry("tool_call_id", &e.tool_call_id)?;
                map.serialize_entry("tool_name", &e.tool_name)?;
                map.serialize_entry("args", &Args(&e.args_json))?;
                map.serialize_entry("session_id", &e.session_id)?;
                let requests: Vec<ActionRequestView<'_>> =
                    e.action_requests.iter().map(ActionRequestView).collect();
                map.serialize_entry("action_requests", &requests)?;
            }
            Kind::Usage(e) => {
                map.serialize_entry("input_tokens", &e.input_tokens)?;
                map.serialize_entry("output_tokens", &e.output_tokens)?;
                map.serialize_entry("estimated_cost", &e.estimated_cost)?;
                map.serialize_entry("provider", &e.provider)?;
                map.serialize_entry("model", &e.model)?;
            }
            Kind::Error(e) => {
                map.serialize_entry("message", &e.message)?;
                map.serialize_entry("code", error_code(e.code))?;
            }
            Kind::Done(e) => map.serialize_entry(
                "assistant_data",
                &e.assistant_data.as_ref().map(MessageView),
            )?,
        }
        map.end()
    }
}

/// `{name, args, review_config: {action_name, allowed_decisions}}`.
struct ActionRequestView<'a>(&'a pb::ActionRequest);

impl Serialize for ActionRequestView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct ReviewConfig<'a> {
            action_name: &'a str,
            allowed_decisions: &'a [String],
        }
        let a = self.0;
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("name", &a.name)?;
        map.serialize_entry("args", &Args(&a.args_json))?;
        map.serialize_entry(
            "review_config",
            &ReviewConfig {
                action_name: &a.action_name,
                allowed_decisions: &a.allowed_decisions,
            },
        )?;
        map.end()
    }
}

/// One SSE frame for an event; `None` for an event without a kind (nothing to show).
pub fn frame(event: &pb::Event) -> Option<SseEvent> {
    let kind = event.kind.as_ref()?;
    let frame = SseEvent::default()
        .id(event.seq.to_string())
        .event(event_type(kind));
    match frame.json_data(EventData(kind)) {
        Ok(frame) => Some(frame),
        Err(e) => {
            tracing::error!(seq = event.seq, error = %e, "could not serialize an event");
            None
        }
    }
}

/// The `error` frame that ends a stream broken by an upstream status.
pub fn error_frame(status: &tonic::Status) -> SseEvent {
    let error = HttpError::from_status(status);
    if error.is_internal() {
        tracing::error!(grpc.code = ?status.code(), error = %status.message(), "session stream failed");
    } else {
        tracing::debug!(grpc.code = ?status.code(), error = %status.message(), "session stream ended with an error");
    }
    #[derive(Serialize)]
    struct ErrorData<'a> {
        message: &'a str,
        code: &'a str,
    }
    let data = ErrorData {
        message: error.error.body().error,
        code: error.code,
    };
    let frame = SseEvent::default().event("error");
    match serde_json::to_string(&data) {
        Ok(json) => frame.data(json),
        Err(_) => frame.data(r#"{"message":"internal error","code":"INTERNAL_ERROR"}"#),
    }
}

/// The three streaming responses of the session service each carry one event.
pub trait CarriesEvent {
    fn into_event(self) -> Option<pb::Event>;
}

impl CarriesEvent for pb::SendMessageResponse {
    fn into_event(self) -> Option<pb::Event> {
        self.event
    }
}

impl CarriesEvent for pb::WatchEventsResponse {
    fn into_event(self) -> Option<pb::Event> {
        self.event
    }
}

impl CarriesEvent for pb::ResumeSessionResponse {
    fn into_event(self) -> Option<pb::Event> {
        self.event
    }
}

/// The SSE frames of an upstream stream: events, then one `error` frame if the stream breaks.
pub fn frames<T, S>(upstream: S) -> impl Stream<Item = SseEvent> + Send + 'static
where
    T: CarriesEvent + Send + 'static,
    S: Stream<Item = Result<T, tonic::Status>> + Send + Unpin + 'static,
{
    futures::stream::unfold(Some(upstream), |upstream| async move {
        let mut upstream = upstream?;
        loop {
            match upstream.next().await {
                Some(Ok(message)) => {
                    if let Some(frame) = message.into_event().as_ref().and_then(frame) {
                        return Some((frame, Some(upstream)));
                    }
                }
                Some(Err(status)) => return Some((error_frame(&status), None)),
                None => return None,
            }
        }
    })
}

/// An SSE response forwarding `upstream`, ended early by the gateway's shutdown.
pub fn response<T, S>(state: &AppState, upstream: S) -> Response
where
    T: CarriesEvent + Send + 'static,
    S: Stream<Item = Result<T, tonic::Status>> + Send + Unpin + 'static,
{
    let guard = state.stream_guard();
    let hint = futures::stream::once(async { SseEvent::default().retry(RETRY) });
    let stream = hint
        .chain(frames(upstream))
        .take_until(state.shutdown().clone().cancelled_owned())
        .map(move |frame| {
            let _counted = &guard;
            Ok::<_, Infallible>(frame)
        });
    let mut res = Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(state.keepalive())
                .text("keepalive"),
        )
        .into_response();
    res.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

/// One collected event, for clients that asked for JSON instead of SSE.
pub fn collected(event: &pb::Event) -> Option<serde_json::Value> {
    let kind = event.kind.as_ref()?;
    let data = serde_json::to_value(EventData(kind)).ok()?;
    Some(serde_json::json!({ "id": event.seq, "event": event_type(kind), "data": data }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cognition_proto::common::v1::ErrorCode;
    use serde_json::json;

    fn data(kind: Kind) -> serde_json::Value {
        serde_json::to_value(EventData(&kind)).unwrap()
    }

    #[test]
    fn every_event_kind_has_the_contract_shape() {
        assert_eq!(
            data(Kind::Token(pb::TokenEvent {
                content: "he".into()
            })),
            json!({"content": "he"})
        );
        assert_eq!(
            data(Kind::ToolCall(pb::ToolCallEvent {
                id: "c1".into(),
                name: "bash".into(),
                args_json: r#"{"command": "ls\n-la"}"#.into()
            })),
            json!({"name": "bash", "args": {"command": "ls\n-la"}, "id": "c1"})
        );
        assert_eq!(
            data(Kind::ToolResult(pb::ToolResultEvent {
                tool_call_id: "c1".into(),
                output: "ok".into(),
                exit_code: 2
            })),
            json!({"tool_call_id": "c1", "output": "ok", "exit_code": 2})
        );
        assert_eq!(
            data(Kind::Planning(pb::PlanningEvent {
                todos: vec!["a".into(), "b".into()]
            })),
            json!({"todos": ["a", "b"]})
        );
        assert_eq!(
            data(Kind::StepComplete(pb::StepCompleteEvent {
                step_number: 1,
                total_steps: 3,
                description: "d".into()
            })),
            json!({"step_number": 1, "total_steps": 3, "description": "d"})
        );
        assert_eq!(
            data(Kind::Delegation(pb::DelegationEvent {
                from_agent: "a".into(),
                to_agent: "b".into(),
                task: "t".into()
            })),
            json!({"from_agent": "a", "to_agent": "b", "task": "t"})
        );
        for (status, name) in [
            (pb::RunStatus::Thinking, "thinking"),
            (pb::RunStatus::Idle, "idle"),
            (pb::RunStatus::WaitingForApproval, "waiting_for_approval"),
            (pb::RunStatus::Resuming, "resuming"),
            (pb::RunStatus::Cancelled, "cancelled"),
        ] {
            assert_eq!(
                data(Kind::Status(pb::StatusEvent {
                    status: status as i32
                })),
                json!({"status": name})
            );
        }
        assert_eq!(
            data(Kind::Interrupt(pb::InterruptEvent {
                tool_call_id: "c1".into(),
                tool_name: "write".into(),
                args_json: r#"{"path":"a"}"#.into(),
                session_id: "s".into(),
                action_requests: vec![pb::ActionRequest {
                    name: "write".into(),
                    args_json: r#"{"path":"a"}"#.into(),
                    action_name: "write".into(),
                    allowed_decisions: vec!["approve".into(), "reject".into()],
                }],
            })),
            json!({
                "tool_call_id": "c1", "tool_name": "write", "args": {"path": "a"}, "session_id": "s",
                "action_requests": [{"name": "write", "args": {"path": "a"},
                    "review_config": {"action_name": "write", "allowed_decisions": ["approve", "reject"]}}]
            })
        );
        assert_eq!(
            data(Kind::Usage(pb::UsageEvent {
                input_tokens: 10,
                output_tokens: 5,
                estimated_cost: 0.25,
                provider: "openai".into(),
                model: "m".into()
            })),
            json!({"input_tokens": 10, "output_tokens": 5, "estimated_cost": 0.25, "provider": "openai", "model": "m"})
        );
        assert_eq!(
            data(Kind::Error(pb::ErrorEvent {
                message: "stopped".into(),
                code: ErrorCode::Aborted as i32
            })),
            json!({"message": "stopped", "code": "ABORTED"})
        );
        assert_eq!(
            data(Kind::Done(pb::DoneEvent {
                assistant_data: None
            })),
            json!({"assistant_data": null})
        );
        let done = data(Kind::Done(pb::DoneEvent {
            assistant_data: Some(pb::Message {
                id: "m".into(),
                role: pb::MessageRole::Assistant as i32,
                content: "hi".into(),
                ..Default::default()
            }),
        }));
        assert_eq!(done["assistant_data"]["role"], "assistant");
        assert_eq!(done["assistant_data"]["content"], "hi");
    }

    #[test]
    fn error_codes_use_the_shared_table() {
        assert_eq!(
            error_code(ErrorCode::SessionNotFound as i32),
            "SESSION_NOT_FOUND"
        );
        assert_eq!(
            error_code(ErrorCode::LlmUnavailable as i32),
            "LLM_UNAVAILABLE"
        );
        assert_eq!(error_code(ErrorCode::Unspecified as i32), "INTERNAL_ERROR");
        assert_eq!(error_code(1234), "INTERNAL_ERROR");
    }

    fn wire(frame: SseEvent) -> String {
        // Render through the real SSE body to check the exact bytes.
        let body = Sse::new(futures::stream::iter([Ok::<_, Infallible>(frame)]))
            .into_response()
            .into_body();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(axum::body::to_bytes(body, usize::MAX)).unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn wire_format_is_id_event_data_on_single_lines() {
        let event = pb::Event {
            seq: 42,
            session_id: "s".into(),
            kind: Some(Kind::ToolCall(pb::ToolCallEvent {
                id: "c".into(),
                name: "bash".into(),
                args_json: "{\n  \"command\": \"echo hi\"\n}".into(),
            })),
            ..Default::default()
        };
        assert_eq!(
            wire(frame(&event).unwrap()),
            "id: 42\nevent: tool_call\ndata: {\"name\":\"bash\",\"args\":{\"command\":\"echo hi\"},\"id\":\"c\"}\n\n"
        );
        let no_kind = pb::Event {
            seq: 1,
            ..Default::default()
        };
        assert!(frame(&no_kind).is_none());
    }

    #[test]
    fn upstream_errors_become_error_frames() {
        let text = wire(error_frame(&tonic::Status::internal(
            "db exploded at /secret/path",
        )));
        assert_eq!(
            text,
            "event: error\ndata: {\"message\":\"internal error\",\"code\":\"INTERNAL_ERROR\"}\n\n"
        );
        let mut status = tonic::Status::not_found("session x not found");
        status.metadata_mut().insert(
            cognition_errors::CODE_METADATA_KEY,
            "SESSION_NOT_FOUND".parse().unwrap(),
        );
        let text = wire(error_frame(&status));
        assert!(text.contains("\"code\":\"SESSION_NOT_FOUND\""), "{text}");
    }

    #[test]
    fn frames_stop_after_an_upstream_error() {
        let ev = |seq| {
            Ok(pb::WatchEventsResponse {
                event: Some(pb::Event {
                    seq,
                    kind: Some(Kind::Token(pb::TokenEvent {
                        content: "x".into(),
                    })),
                    ..Default::default()
                }),
            })
        };
        let upstream = futures::stream::iter(vec![
            ev(1),
            Ok(pb::WatchEventsResponse { event: None }),
            ev(2),
            Err(tonic::Status::unavailable("gone")),
            ev(3),
        ]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let out: Vec<SseEvent> = rt.block_on(frames(upstream).collect());
        let text: Vec<String> = out.into_iter().map(wire).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[0].starts_with("id: 1\nevent: token\n"));
        assert!(text[1].starts_with("id: 2\nevent: token\n"));
        assert!(
            text[2].starts_with("event: error\n") && text[2].contains("UNAVAILABLE"),
            "{}",
            text[2]
        );
    }
}
