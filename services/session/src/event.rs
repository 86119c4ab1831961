//! Events of a session's event log.
//!
//! An event is stored as a type string plus JSON data whose shape is exactly the SSE `data` of
//! `api-contract.md` (`token` → `{"content"}`, `done` → `{"assistant_data": <message>}`, …), so
//! the gateway and any future reader of the log agree on one format. [`EventKind::to_parts`]
//! and [`EventKind::from_parts`] convert between the two.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::Message;

/// What happened, with its SSE data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum EventKind {
    Token {
        content: String,
    },
    ToolCall {
        name: String,
        /// Full arguments, a JSON object.
        args: serde_json::Value,
        id: String,
    },
    ToolResult {
        tool_call_id: String,
        output: String,
        exit_code: i32,
    },
    Planning {
        todos: Vec<String>,
    },
    StepComplete {
        step_number: u32,
        total_steps: u32,
        description: String,
    },
    Delegation {
        from_agent: String,
        to_agent: String,
        task: String,
    },
    Status {
        status: RunStatus,
    },
    Interrupt(Interrupt),
    Usage {
        input_tokens: u64,
        output_tokens: u64,
        estimated_cost: f64,
        provider: String,
        model: String,
    },
    Error {
        message: String,
        /// A `cognition_errors::Code` string, e.g. `ABORTED`.
        code: String,
    },
    /// Always the last event of a run.
    Done {
        assistant_data: Message,
    },
}

/// Run status reported by `status` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Thinking,
    Idle,
    WaitingForApproval,
    Resuming,
    Cancelled,
}

/// A run paused for human approval of a tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interrupt {
    pub tool_call_id: String,
    pub tool_name: String,
    pub args: serde_json::Value,
    pub session_id: String,
    pub action_requests: Vec<ActionRequest>,
}

/// One action awaiting review in an `interrupt` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    pub name: String,
    pub args: serde_json::Value,
    pub review_config: ReviewConfig,
}

/// How an action may be reviewed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewConfig {
    pub action_name: String,
    pub allowed_decisions: Vec<String>,
}

/// Stored data that does not decode as the event type it claims to be.
#[derive(Debug, thiserror::Error)]
#[error("event of type {event_type:?} does not decode: {source}")]
pub struct DecodeError {
    pub event_type: String,
    #[source]
    pub source: serde_json::Error,
}

impl EventKind {
    /// The SSE event name (`token`, `tool_call`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Token { .. } => "token",
            EventKind::ToolCall { .. } => "tool_call",
            EventKind::ToolResult { .. } => "tool_result",
            EventKind::Planning { .. } => "planning",
            EventKind::StepComplete { .. } => "step_complete",
            EventKind::Delegation { .. } => "delegation",
            EventKind::Status { .. } => "status",
            EventKind::Interrupt(_) => "interrupt",
            EventKind::Usage { .. } => "usage",
            EventKind::Error { .. } => "error",
            EventKind::Done { .. } => "done",
        }
    }

    /// Whether this event ends a run.
    pub fn is_done(&self) -> bool {
        matches!(self, EventKind::Done { .. })
    }

    /// The SSE event name and data.
    pub fn to_parts(&self) -> (&'static str, serde_json::Value) {
        let data = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut map)) => map.remove("data"),
            _ => None,
        };
        // Every variant is a struct of strings, numbers and JSON values: serialization into a
        // `Value` cannot fail, and the adjacently tagged form always has `data`.
        (self.type_name(), data.unwrap_or(serde_json::Value::Null))
    }

    /// Rebuilds an event from its stored type name and data.
    pub fn from_parts(event_type: &str, data: serde_json::Value) -> Result<EventKind, DecodeError> {
        serde_json::from_value(serde_json::json!({ "type": event_type, "data": data })).map_err(
            |source| DecodeError {
                event_type: event_type.to_owned(),
                source,
            },
        )
    }
}

/// One entry of a session's event log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub session_id: Uuid,
    /// Per-session sequence number (1, 2, …), the SSE `id`.
    pub seq: u64,
    pub run_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub kind: EventKind,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::{NewMessage, Role};

    fn samples() -> Vec<EventKind> {
        vec![
            EventKind::Token {
                content: "he".into(),
            },
            EventKind::ToolCall {
                name: "ls".into(),
                args: json!({"path": "."}),
                id: "c1".into(),
            },
            EventKind::ToolResult {
                tool_call_id: "c1".into(),
                output: "a\n".into(),
                exit_code: 0,
            },
            EventKind::Planning {
                todos: vec!["a".into(), "b".into()],
            },
            EventKind::StepComplete {
                step_number: 1,
                total_steps: 2,
                description: "x".into(),
            },
            EventKind::Delegation {
                from_agent: "a".into(),
                to_agent: "b".into(),
                task: "t".into(),
            },
            EventKind::Status {
                status: RunStatus::WaitingForApproval,
            },
            EventKind::Interrupt(Interrupt {
                tool_call_id: "c1".into(),
                tool_name: "execute".into(),
                args: json!({"command": "rm -rf /"}),
                session_id: "s".into(),
                action_requests: vec![ActionRequest {
                    name: "execute".into(),
                    args: json!({}),
                    review_config: ReviewConfig {
                        action_name: "execute".into(),
                        allowed_decisions: vec!["approve".into(), "reject".into()],
                    },
                }],
            }),
            EventKind::Usage {
                input_tokens: 10,
                output_tokens: 5,
                estimated_cost: 0.25,
                provider: "openai".into(),
                model: "gpt".into(),
            },
            EventKind::Error {
                message: "stopped".into(),
                code: "ABORTED".into(),
            },
            EventKind::Done {
                assistant_data: NewMessage::text(Role::Assistant, "done").into_message(Uuid::nil()),
            },
        ]
    }

    #[test]
    fn every_kind_round_trips_through_its_parts() {
        for kind in samples() {
            let (name, data) = kind.to_parts();
            assert_eq!(name, kind.type_name());
            assert!(data.is_object(), "{name}: {data}");
            assert_eq!(EventKind::from_parts(name, data).unwrap(), kind);
        }
    }

    #[test]
    fn data_has_the_sse_shape() {
        let (_, data) = EventKind::Token {
            content: "x".into(),
        }
        .to_parts();
        assert_eq!(data, json!({"content": "x"}));
        let (_, data) = EventKind::Status {
            status: RunStatus::Cancelled,
        }
        .to_parts();
        assert_eq!(data, json!({"status": "cancelled"}));
        let (_, data) = EventKind::ToolCall {
            name: "ls".into(),
            args: json!({"p": 1}),
            id: "c".into(),
        }
        .to_parts();
        assert_eq!(data, json!({"name": "ls", "args": {"p": 1}, "id": "c"}));
    }

    #[test]
    fn unknown_or_malformed_events_are_errors() {
        assert!(EventKind::from_parts("nope", json!({})).is_err());
        assert!(EventKind::from_parts("token", json!({"content": 3})).is_err());
    }
}
