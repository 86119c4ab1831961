//! JSON shapes of the HTTP API, built from the session service's protobuf messages.
//!
//! Views borrow from the protobuf values and serialize straight into the response body.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use cognition_proto::session::v1 as pb;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

/// RFC 3339 UTC (`2025-01-02T03:04:05.123456Z`); the Unix epoch when the timestamp is missing.
pub fn rfc3339(ts: Option<&prost_types::Timestamp>) -> String {
    let (secs, nanos) = ts.map_or((0, 0), |t| (t.seconds, u32::try_from(t.nanos).unwrap_or(0)));
    DateTime::<Utc>::from_timestamp(secs, nanos)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Lower-case name of a session status (`active|inactive|error|waiting_for_approval`).
pub fn session_status(value: i32) -> &'static str {
    match pb::SessionStatus::try_from(value) {
        Ok(pb::SessionStatus::Inactive) => "inactive",
        Ok(pb::SessionStatus::Error) => "error",
        Ok(pb::SessionStatus::WaitingForApproval) => "waiting_for_approval",
        // Unspecified (or a status newer than this gateway) reads as the default state.
        Ok(pb::SessionStatus::Active | pb::SessionStatus::Unspecified) | Err(_) => "active",
    }
}

/// Lower-case name of a message role.
pub fn message_role(value: i32) -> &'static str {
    match pb::MessageRole::try_from(value) {
        Ok(pb::MessageRole::Assistant) => "assistant",
        Ok(pb::MessageRole::System) => "system",
        Ok(pb::MessageRole::Tool) => "tool",
        Ok(pb::MessageRole::User | pb::MessageRole::Unspecified) | Err(_) => "user",
    }
}

/// Tool-call arguments as JSON: the object the session service stored, `{}` when empty, and the
/// raw text as a JSON string when it is not valid JSON (so nothing is lost).
pub struct Args<'a>(pub &'a str);

impl Serialize for Args<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.0.trim();
        if text.is_empty() {
            return s.serialize_map(Some(0))?.end();
        }
        // Re-serialized (not passed through raw) so the output is always one compact line, as
        // SSE `data:` lines require.
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) => value.serialize(s),
            Err(_) => s.serialize_str(self.0),
        }
    }
}

/// `{name, args, id}`.
#[derive(Serialize)]
pub struct ToolCallView<'a> {
    pub name: &'a str,
    pub args: Args<'a>,
    pub id: &'a str,
}

/// A message object of the API.
pub struct MessageView<'a>(pub &'a pb::Message);

impl Serialize for MessageView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut map = s.serialize_map(Some(10))?;
        map.serialize_entry("id", &m.id)?;
        map.serialize_entry("session_id", &m.session_id)?;
        map.serialize_entry("role", message_role(m.role))?;
        map.serialize_entry("content", &m.content)?;
        let calls: Vec<ToolCallView<'_>> = m
            .tool_calls
            .iter()
            .map(|c| ToolCallView {
                name: &c.name,
                args: Args(&c.args_json),
                id: &c.id,
            })
            .collect();
        map.serialize_entry("tool_calls", &calls)?;
        map.serialize_entry("tool_call_id", &m.tool_call_id)?;
        map.serialize_entry("token_count", &m.token_count)?;
        map.serialize_entry("model_used", &m.model_used)?;
        map.serialize_entry("parent_id", &m.parent_id)?;
        map.serialize_entry("created_at", &rfc3339(m.created_at.as_ref()))?;
        map.end()
    }
}

/// A SessionConfig object (every field `null` when unset).
#[derive(Serialize)]
pub struct ConfigView<'a> {
    pub provider_id: &'a Option<String>,
    pub provider: &'a Option<String>,
    pub model: &'a Option<String>,
    pub temperature: &'a Option<f64>,
    pub max_tokens: &'a Option<u32>,
    pub recursion_limit: &'a Option<u32>,
}

impl<'a> From<&'a pb::SessionConfig> for ConfigView<'a> {
    fn from(c: &'a pb::SessionConfig) -> Self {
        Self {
            provider_id: &c.provider_id,
            provider: &c.provider,
            model: &c.model,
            temperature: &c.temperature,
            max_tokens: &c.max_tokens,
            recursion_limit: &c.recursion_limit,
        }
    }
}

/// A session object of the API.
pub struct SessionView<'a>(pub &'a pb::Session);

impl Serialize for SessionView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        let mut map = s.serialize_map(Some(12))?;
        map.serialize_entry("id", &v.id)?;
        map.serialize_entry("title", &v.title)?;
        map.serialize_entry("thread_id", &v.thread_id)?;
        map.serialize_entry("status", session_status(v.status))?;
        map.serialize_entry("agent_name", &v.agent_name)?;
        map.serialize_entry("metadata", &Sorted(&v.metadata))?;
        // `null` when unset: absent, or present with no field set (nothing overridden).
        let config = v
            .config
            .as_ref()
            .filter(|c| **c != pb::SessionConfig::default());
        map.serialize_entry("config", &config.map(ConfigView::from))?;
        map.serialize_entry("scopes", &Sorted(&v.scopes))?;
        map.serialize_entry("created_at", &rfc3339(v.created_at.as_ref()))?;
        map.serialize_entry("updated_at", &rfc3339(v.updated_at.as_ref()))?;
        map.serialize_entry("message_count", &v.message_count)?;
        map.end()
    }
}

/// A string map serialized with sorted keys (stable output for clients and tests).
struct Sorted<'a>(&'a HashMap<String, String>);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(&String, &String)> = self.0.iter().collect();
        entries.sort_unstable();
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (k, v) in entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `{"sessions": […], "total": n, "next_cursor": str|null}`.
pub struct SessionListView<'a>(pub &'a pb::ListSessionsResponse);

impl Serialize for SessionListView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut map = s.serialize_map(Some(3))?;
        let sessions: Vec<SessionView<'_>> = r.sessions.iter().map(SessionView).collect();
        map.serialize_entry("sessions", &sessions)?;
        map.serialize_entry("total", &r.total)?;
        let cursor = (!r.next_cursor.is_empty()).then_some(r.next_cursor.as_str());
        map.serialize_entry("next_cursor", &cursor)?;
        map.end()
    }
}

/// `{"messages": […], "total": n, "has_more": bool}`.
pub struct MessageListView<'a>(pub &'a pb::ListMessagesResponse);

impl Serialize for MessageListView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut map = s.serialize_map(Some(3))?;
        let messages: Vec<MessageView<'_>> = r.messages.iter().map(MessageView).collect();
        map.serialize_entry("messages", &messages)?;
        map.serialize_entry("total", &r.total)?;
        map.serialize_entry("has_more", &r.has_more)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos })
    }

    #[test]
    fn session_json_has_every_field() {
        let mut s = pb::Session {
            id: "6f1c1a43-9f38-4a5f-9d0a-3b8b9a4e2f10".into(),
            title: "t".into(),
            thread_id: "th".into(),
            status: pb::SessionStatus::WaitingForApproval as i32,
            agent_name: "default".into(),
            created_at: ts(1_700_000_000, 123_456_000),
            updated_at: ts(1_700_000_001, 0),
            message_count: 3,
            ..Default::default()
        };
        s.metadata.insert("repo".into(), "a/b".into());
        s.scopes.insert("user".into(), "alice".into());
        let v = serde_json::to_value(SessionView(&s)).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "6f1c1a43-9f38-4a5f-9d0a-3b8b9a4e2f10",
                "title": "t",
                "thread_id": "th",
                "status": "waiting_for_approval",
                "agent_name": "default",
                "metadata": {"repo": "a/b"},
                "config": null,
                "scopes": {"user": "alice"},
                "created_at": "2023-11-14T22:13:20.123456Z",
                "updated_at": "2023-11-14T22:13:21.000000Z",
                "message_count": 3
            })
        );
        s.config = Some(pb::SessionConfig::default());
        assert_eq!(
            serde_json::to_value(SessionView(&s)).unwrap()["config"],
            serde_json::Value::Null
        );
        s.config = Some(pb::SessionConfig {
            model: Some("gpt".into()),
            temperature: Some(0.5),
            ..Default::default()
        });
        let v = serde_json::to_value(SessionView(&s)).unwrap();
        assert_eq!(
            v["config"],
            json!({"provider_id": null, "provider": null, "model": "gpt", "temperature": 0.5,
                   "max_tokens": null, "recursion_limit": null})
        );
    }

    #[test]
    fn statuses_and_roles() {
        assert_eq!(session_status(pb::SessionStatus::Active as i32), "active");
        assert_eq!(
            session_status(pb::SessionStatus::Inactive as i32),
            "inactive"
        );
        assert_eq!(session_status(pb::SessionStatus::Error as i32), "error");
        assert_eq!(session_status(99), "active");
        assert_eq!(message_role(pb::MessageRole::Tool as i32), "tool");
        assert_eq!(message_role(pb::MessageRole::System as i32), "system");
        assert_eq!(message_role(pb::MessageRole::Assistant as i32), "assistant");
    }

    #[test]
    fn message_json_parses_tool_call_args() {
        let m = pb::Message {
            id: "m1".into(),
            session_id: "s1".into(),
            role: pb::MessageRole::Assistant as i32,
            content: "hi".into(),
            tool_calls: vec![
                pb::ToolCall {
                    id: "c1".into(),
                    name: "bash".into(),
                    args_json: r#"{"cmd":"ls -la"}"#.into(),
                },
                pb::ToolCall {
                    id: "c2".into(),
                    name: "noop".into(),
                    args_json: String::new(),
                },
                pb::ToolCall {
                    id: "c3".into(),
                    name: "odd".into(),
                    args_json: "not json".into(),
                },
            ],
            token_count: Some(7),
            created_at: ts(0, 0),
            ..Default::default()
        };
        let v = serde_json::to_value(MessageView(&m)).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "m1", "session_id": "s1", "role": "assistant", "content": "hi",
                "tool_calls": [
                    {"name": "bash", "args": {"cmd": "ls -la"}, "id": "c1"},
                    {"name": "noop", "args": {}, "id": "c2"},
                    {"name": "odd", "args": "not json", "id": "c3"}
                ],
                "tool_call_id": null, "token_count": 7, "model_used": null, "parent_id": null,
                "created_at": "1970-01-01T00:00:00.000000Z"
            })
        );
    }

    #[test]
    fn lists() {
        let r = pb::ListSessionsResponse {
            sessions: vec![],
            total: 4,
            next_cursor: String::new(),
        };
        assert_eq!(
            serde_json::to_value(SessionListView(&r)).unwrap(),
            json!({"sessions": [], "total": 4, "next_cursor": null})
        );
        let r = pb::ListSessionsResponse {
            sessions: vec![],
            total: 4,
            next_cursor: "abc".into(),
        };
        assert_eq!(
            serde_json::to_value(SessionListView(&r)).unwrap()["next_cursor"],
            "abc"
        );
        let r = pb::ListMessagesResponse {
            messages: vec![],
            total: 2,
            has_more: true,
        };
        assert_eq!(
            serde_json::to_value(MessageListView(&r)).unwrap(),
            json!({"messages": [], "total": 2, "has_more": true})
        );
    }
}
