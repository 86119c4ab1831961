//! Domain → wire conversions (responses). Requests go the other way in `validate`.

use chrono::{DateTime, Utc};
use cognition_proto::common::v1::ErrorCode;
use cognition_proto::session::v1 as pb;

use crate::domain::{Message, Role, Session, SessionConfig, SessionStatus};
use crate::event::{EventKind, RunStatus, StoredEvent};

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    cognition_proto::timestamp(t.timestamp(), t.timestamp_subsec_nanos())
}

impl From<SessionStatus> for pb::SessionStatus {
    fn from(s: SessionStatus) -> Self {
        match s {
            SessionStatus::Active => pb::SessionStatus::Active,
            SessionStatus::Inactive => pb::SessionStatus::Inactive,
            SessionStatus::Error => pb::SessionStatus::Error,
            SessionStatus::WaitingForApproval => pb::SessionStatus::WaitingForApproval,
        }
    }
}

impl From<SessionConfig> for pb::SessionConfig {
    fn from(c: SessionConfig) -> Self {
        pb::SessionConfig {
            provider_id: c.provider_id,
            provider: c.provider,
            model: c.model,
            temperature: c.temperature,
            max_tokens: c.max_tokens,
            recursion_limit: c.recursion_limit,
        }
    }
}

impl From<Session> for pb::Session {
    fn from(s: Session) -> Self {
        pb::Session {
            id: s.id.to_string(),
            title: s.title.unwrap_or_default(),
            thread_id: s.thread_id,
            status: pb::SessionStatus::from(s.status) as i32,
            agent_name: s.agent_name,
            metadata: s.metadata.into_iter().collect(),
            config: Some(s.config.into()),
            scopes: s.scopes.into_iter().collect(),
            created_at: Some(timestamp(s.created_at)),
            updated_at: Some(timestamp(s.updated_at)),
            message_count: s.message_count,
        }
    }
}

impl From<Role> for pb::MessageRole {
    fn from(r: Role) -> Self {
        match r {
            Role::User => pb::MessageRole::User,
            Role::Assistant => pb::MessageRole::Assistant,
            Role::System => pb::MessageRole::System,
            Role::Tool => pb::MessageRole::Tool,
        }
    }
}

impl From<Message> for pb::Message {
    fn from(m: Message) -> Self {
        pb::Message {
            id: m.id.to_string(),
            session_id: m.session_id.to_string(),
            role: pb::MessageRole::from(m.role) as i32,
            content: m.content,
            tool_calls: m
                .tool_calls
                .into_iter()
                .map(|c| pb::ToolCall {
                    id: c.id,
                    name: c.name,
                    args_json: c.args.to_string(),
                })
                .collect(),
            tool_call_id: m.tool_call_id,
            token_count: m.token_count,
            model_used: m.model_used,
            parent_id: m.parent_id.map(|p| p.to_string()),
            created_at: Some(timestamp(m.created_at)),
        }
    }
}

impl From<RunStatus> for pb::RunStatus {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Thinking => pb::RunStatus::Thinking,
            RunStatus::Idle => pb::RunStatus::Idle,
            RunStatus::WaitingForApproval => pb::RunStatus::WaitingForApproval,
            RunStatus::Resuming => pb::RunStatus::Resuming,
            RunStatus::Cancelled => pb::RunStatus::Cancelled,
        }
    }
}

/// The proto enum value of a `cognition_errors::Code` string (`UNSPECIFIED` if unknown or
/// without a proto counterpart).
pub fn error_code(code: &str) -> ErrorCode {
    cognition_proto::error_code::from_name(code)
}

impl From<EventKind> for pb::event::Kind {
    fn from(kind: EventKind) -> Self {
        use pb::event::Kind;
        match kind {
            EventKind::Token { content } => Kind::Token(pb::TokenEvent { content }),
            EventKind::ToolCall { name, args, id } => Kind::ToolCall(pb::ToolCallEvent {
                id,
                name,
                args_json: args.to_string(),
            }),
            EventKind::ToolResult {
                tool_call_id,
                output,
                exit_code,
            } => Kind::ToolResult(pb::ToolResultEvent {
                tool_call_id,
                output,
                exit_code,
            }),
            EventKind::Planning { todos } => Kind::Planning(pb::PlanningEvent { todos }),
            EventKind::StepComplete {
                step_number,
                total_steps,
                description,
            } => Kind::StepComplete(pb::StepCompleteEvent {
                step_number,
                total_steps,
                description,
            }),
            EventKind::Delegation {
                from_agent,
                to_agent,
                task,
            } => Kind::Delegation(pb::DelegationEvent {
                from_agent,
                to_agent,
                task,
            }),
            EventKind::Status { status } => Kind::Status(pb::StatusEvent {
                status: pb::RunStatus::from(status) as i32,
            }),
            EventKind::Interrupt(i) => Kind::Interrupt(pb::InterruptEvent {
                tool_call_id: i.tool_call_id,
                tool_name: i.tool_name,
                args_json: i.args.to_string(),
                session_id: i.session_id,
                action_requests: i
                    .action_requests
                    .into_iter()
                    .map(|a| pb::ActionRequest {
                        name: a.name,
                        args_json: a.args.to_string(),
                        action_name: a.review_config.action_name,
                        allowed_decisions: a.review_config.allowed_decisions,
                    })
                    .collect(),
            }),
            EventKind::Usage {
                input_tokens,
                output_tokens,
                estimated_cost,
                provider,
                model,
            } => Kind::Usage(pb::UsageEvent {
                input_tokens,
                output_tokens,
                estimated_cost,
                provider,
                model,
            }),
            EventKind::Error { message, code } => Kind::Error(pb::ErrorEvent {
                message,
                code: error_code(&code) as i32,
            }),
            EventKind::Done { assistant_data } => Kind::Done(pb::DoneEvent {
                assistant_data: Some(assistant_data.into()),
            }),
        }
    }
}

impl From<&StoredEvent> for pb::Event {
    fn from(e: &StoredEvent) -> Self {
        pb::Event {
            seq: e.seq,
            session_id: e.session_id.to_string(),
            run_id: e.run_id.map(|r| r.to_string()).unwrap_or_default(),
            created_at: Some(timestamp(e.created_at)),
            kind: Some(e.kind.clone().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::domain::{NewMessage, NewSession, ToolCall};

    #[test]
    fn session_fields_survive() {
        let mut new = NewSession::new("readonly");
        new.title = Some("t".into());
        new.metadata.insert("k".into(), "v".into());
        new.scopes.insert("user".into(), "alice".into());
        new.config.temperature = Some(0.5);
        let s = new.into_session();
        let p = pb::Session::from(s.clone());
        assert_eq!(p.id, s.id.to_string());
        assert_eq!(p.title, "t");
        assert_eq!(p.status, pb::SessionStatus::Active as i32);
        assert_eq!(p.metadata.get("k").map(String::as_str), Some("v"));
        assert_eq!(p.scopes.get("user").map(String::as_str), Some("alice"));
        assert_eq!(p.config.unwrap().temperature, Some(0.5));
        let ts = p.created_at.unwrap();
        assert_eq!(ts.seconds, s.created_at.timestamp());
        assert_eq!(ts.nanos as u32, s.created_at.timestamp_subsec_nanos());
    }

    #[test]
    fn message_tool_calls_carry_json_args() {
        let mut new = NewMessage::text(Role::Assistant, "x");
        new.tool_calls.push(ToolCall {
            name: "ls".into(),
            args: json!({"a": 1}),
            id: "c".into(),
        });
        let p = pb::Message::from(new.into_message(Uuid::nil()));
        assert_eq!(p.role, pb::MessageRole::Assistant as i32);
        assert_eq!(p.tool_calls[0].args_json, r#"{"a":1}"#);
    }

    #[test]
    fn event_kinds_map_to_the_oneof() {
        let e = StoredEvent {
            session_id: Uuid::nil(),
            seq: 7,
            run_id: None,
            created_at: crate::domain::now(),
            kind: EventKind::Error {
                message: "stop".into(),
                code: "ABORTED".into(),
            },
        };
        let p = pb::Event::from(&e);
        assert_eq!(p.seq, 7);
        assert_eq!(p.run_id, "");
        match p.kind {
            Some(pb::event::Kind::Error(err)) => assert_eq!(err.code, ErrorCode::Aborted as i32),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(error_code("NOPE"), ErrorCode::Unspecified);
    }
}
