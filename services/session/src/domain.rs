//! Domain types of the session service: sessions and messages, independent of the wire (proto)
//! and of the database. The JSON shapes (serde) are the REST contract's (`api-contract.md`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The current time, truncated to microseconds (the precision every backend stores).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A flat string map (session metadata, resource scopes).
pub type StringMap = BTreeMap<String, String>;

/// Lifecycle status of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Active,
    Inactive,
    Error,
    WaitingForApproval,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Inactive => "inactive",
            SessionStatus::Error => "error",
            SessionStatus::WaitingForApproval => "waiting_for_approval",
        }
    }
}

impl FromStr for SessionStatus {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "active" => SessionStatus::Active,
            "inactive" => SessionStatus::Inactive,
            "error" => SessionStatus::Error,
            "waiting_for_approval" => SessionStatus::WaitingForApproval,
            other => {
                return Err(UnknownVariant {
                    kind: "session status",
                    value: other.to_owned(),
                });
            }
        })
    }
}

/// A stored string that names no known variant (a corrupt row, or one from a newer version).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub value: String,
}

/// Per-session LLM settings (`PATCH /sessions/{id}` `config`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recursion_limit: Option<u32>,
}

/// A conversation with an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: Uuid,
    pub title: Option<String>,
    pub thread_id: String,
    pub status: SessionStatus,
    pub agent_name: String,
    pub metadata: StringMap,
    pub config: SessionConfig,
    pub scopes: StringMap,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub message_count: u64,
}

/// What a caller provides to create a session; the store fills in the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSession {
    pub title: Option<String>,
    pub agent_name: String,
    pub metadata: StringMap,
    pub config: SessionConfig,
    /// The creator's scope; only callers with a matching scope see the session.
    pub scopes: StringMap,
}

impl NewSession {
    /// A session for `agent_name` with no title, metadata, config or scope.
    pub fn new(agent_name: impl Into<String>) -> Self {
        Self {
            title: None,
            agent_name: agent_name.into(),
            metadata: StringMap::new(),
            config: SessionConfig::default(),
            scopes: StringMap::new(),
        }
    }

    /// The full session, with a new id and thread id, status active, created now.
    pub fn into_session(self) -> Session {
        let now = now();
        Session {
            id: Uuid::now_v7(),
            title: self.title,
            thread_id: Uuid::new_v4().to_string(),
            status: SessionStatus::Active,
            agent_name: self.agent_name,
            metadata: self.metadata,
            config: self.config,
            scopes: self.scopes,
            created_at: now,
            updated_at: now,
            message_count: 0,
        }
    }
}

/// A partial update; `None` leaves a field unchanged. `metadata` and `config` replace the
/// stored value as a whole when present.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionPatch {
    pub title: Option<String>,
    pub agent_name: Option<String>,
    pub status: Option<SessionStatus>,
    pub metadata: Option<StringMap>,
    pub config: Option<SessionConfig>,
}

impl SessionPatch {
    pub fn is_empty(&self) -> bool {
        self == &SessionPatch::default()
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
            Role::Tool => "tool",
        }
    }
}

impl FromStr for Role {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "system" => Role::System,
            "tool" => Role::Tool,
            other => {
                return Err(UnknownVariant {
                    kind: "message role",
                    value: other.to_owned(),
                });
            }
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tool call requested by the assistant: `{"name", "args", "id"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub name: String,
    /// The arguments, a JSON object.
    pub args: serde_json::Value,
    pub id: String,
}

/// One message of a session's conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: Uuid,
    pub session_id: Uuid,
    pub role: Role,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub tool_call_id: Option<String>,
    pub token_count: Option<u64>,
    pub model_used: Option<String>,
    pub parent_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// What a caller provides to append a message.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub role: Role,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub tool_call_id: Option<String>,
    pub token_count: Option<u64>,
    pub model_used: Option<String>,
    pub parent_id: Option<Uuid>,
}

impl NewMessage {
    /// A plain message with only a role and content.
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            token_count: None,
            model_used: None,
            parent_id: None,
        }
    }

    /// The full message for `session_id`, with a new id, created now.
    pub fn into_message(self, session_id: Uuid) -> Message {
        Message {
            id: Uuid::now_v7(),
            session_id,
            role: self.role,
            content: self.content,
            tool_calls: self.tool_calls,
            tool_call_id: self.tool_call_id,
            token_count: self.token_count,
            model_used: self.model_used,
            parent_id: self.parent_id,
            created_at: now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_their_string_form() {
        for s in [
            SessionStatus::Active,
            SessionStatus::Inactive,
            SessionStatus::Error,
            SessionStatus::WaitingForApproval,
        ] {
            assert_eq!(s.as_str().parse::<SessionStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for r in [Role::User, Role::Assistant, Role::System, Role::Tool] {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert!("bogus".parse::<Role>().is_err());
    }

    #[test]
    fn message_json_has_the_contract_shape() {
        let mut m = NewMessage::text(Role::Assistant, "hi").into_message(Uuid::nil());
        m.tool_calls.push(ToolCall {
            name: "ls".into(),
            args: serde_json::json!({"path": "."}),
            id: "c1".into(),
        });
        let v = serde_json::to_value(&m).unwrap();
        for key in [
            "id",
            "session_id",
            "role",
            "content",
            "tool_calls",
            "tool_call_id",
            "token_count",
            "model_used",
            "parent_id",
            "created_at",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert_eq!(v["tool_calls"][0]["args"]["path"], ".");
        let back: Message = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn timestamps_have_microsecond_precision() {
        assert_eq!(now().timestamp_subsec_nanos() % 1000, 0);
    }
}
