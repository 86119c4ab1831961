//! The model's context, built from the persisted conversation (the one source of truth), and
//! the partial reply of an interrupted step, rebuilt from the event log.
//!
//! Providers reject a conversation where an assistant tool call has no result, or a result has
//! no call; a crash or an abort can leave either behind, so [`chat_messages`] repairs both.

use crate::domain::{Message, Role};
use crate::event::{EventKind, StoredEvent};
use crate::llm::ChatMessage;

/// Text given to the model for a tool call whose result was never recorded.
pub const MISSING_RESULT: &str = "Error: no result was recorded for this tool call (the turn \
was interrupted before it finished).";

/// The conversation as model messages: user and assistant messages, tool results right after
/// the assistant message that asked for them. System messages and empty assistant messages
/// are left out.
pub fn chat_messages(conversation: &[Message]) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(conversation.len());
    let mut open: Vec<String> = Vec::new();
    let close_open = |out: &mut Vec<ChatMessage>, open: &mut Vec<String>| {
        for id in open.drain(..) {
            out.push(ChatMessage::Tool {
                tool_call_id: id,
                content: MISSING_RESULT.to_owned(),
            });
        }
    };
    for m in conversation {
        match m.role {
            Role::User => {
                close_open(&mut out, &mut open);
                out.push(ChatMessage::User {
                    content: m.content.clone(),
                });
            }
            Role::Assistant => {
                if m.content.is_empty() && m.tool_calls.is_empty() {
                    continue;
                }
                close_open(&mut out, &mut open);
                open = m.tool_calls.iter().map(|c| c.id.clone()).collect();
                out.push(ChatMessage::Assistant {
                    content: m.content.clone(),
                    tool_calls: m.tool_calls.clone(),
                });
            }
            Role::Tool => {
                let Some(id) = &m.tool_call_id else { continue };
                let Some(at) = open.iter().position(|o| o == id) else {
                    continue;
                };
                open.remove(at);
                out.push(ChatMessage::Tool {
                    tool_call_id: id.clone(),
                    content: m.content.clone(),
                });
            }
            Role::System => {}
        }
    }
    close_open(&mut out, &mut open);
    out
}

/// The messages of one run: those after its user message (`None` when it is not found).
pub fn run_messages(conversation: &[Message], user_message_id: uuid::Uuid) -> Option<&[Message]> {
    let at = conversation.iter().position(|m| m.id == user_message_id)?;
    Some(&conversation[at + 1..])
}

/// Tool calls of `messages` that have no tool message.
pub fn open_tool_calls(messages: &[Message]) -> Vec<crate::domain::ToolCall> {
    let mut open = Vec::new();
    for m in messages {
        match m.role {
            Role::Assistant => open.extend(m.tool_calls.iter().cloned()),
            Role::Tool => {
                if let Some(id) = &m.tool_call_id {
                    open.retain(|c: &crate::domain::ToolCall| &c.id != id);
                }
            }
            _ => {}
        }
    }
    open
}

/// The text streamed in a run but not yet saved in an assistant message: the run's `token`
/// events concatenated, minus the saved assistant texts (each saved message's content is
/// exactly its step's tokens, in order). Empty when the two do not line up.
pub fn unsaved_text(run_events: &[StoredEvent], run_messages: &[Message]) -> String {
    let streamed: String = run_events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Token { content } => Some(content.as_str()),
            _ => None,
        })
        .collect();
    let saved: String = run_messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .map(|m| m.content.as_str())
        .collect();
    streamed
        .strip_prefix(saved.as_str())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::domain::{NewMessage, ToolCall};

    fn msg(role: Role, content: &str) -> Message {
        NewMessage::text(role, content).into_message(Uuid::nil())
    }

    fn call(id: &str) -> ToolCall {
        ToolCall {
            name: "ls".into(),
            args: json!({}),
            id: id.into(),
        }
    }

    fn tool(id: &str, content: &str) -> Message {
        let mut m = msg(Role::Tool, content);
        m.tool_call_id = Some(id.into());
        m
    }

    #[test]
    fn builds_the_conversation_and_repairs_tool_calls() {
        let mut asked = msg(Role::Assistant, "");
        asked.tool_calls = vec![call("a"), call("b")];
        let conversation = vec![
            msg(Role::System, "ignored"),
            msg(Role::User, "hi"),
            asked,
            tool("a", "A"),
            tool("zzz", "orphan"),
            msg(Role::Assistant, ""),
            msg(Role::User, "again"),
        ];
        let out = chat_messages(&conversation);
        assert_eq!(
            out,
            vec![
                ChatMessage::User {
                    content: "hi".into()
                },
                ChatMessage::Assistant {
                    content: "".into(),
                    tool_calls: vec![call("a"), call("b")]
                },
                ChatMessage::Tool {
                    tool_call_id: "a".into(),
                    content: "A".into()
                },
                ChatMessage::Tool {
                    tool_call_id: "b".into(),
                    content: MISSING_RESULT.into()
                },
                ChatMessage::User {
                    content: "again".into()
                },
            ]
        );
    }

    #[test]
    fn open_calls_and_unsaved_text() {
        let mut asked = msg(Role::Assistant, "Let me look. ");
        asked.tool_calls = vec![call("a"), call("b")];
        let messages = vec![asked, tool("a", "A")];
        assert_eq!(open_tool_calls(&messages), vec![call("b")]);
        let token = |seq, t: &str| StoredEvent {
            session_id: Uuid::nil(),
            seq,
            run_id: None,
            created_at: crate::domain::now(),
            kind: EventKind::Token { content: t.into() },
        };
        let events = vec![
            token(1, "Let me "),
            token(2, "look. "),
            token(3, "Found it"),
        ];
        assert_eq!(unsaved_text(&events, &messages), "Found it");
        assert_eq!(unsaved_text(&events[..2], &messages), "");
        assert_eq!(unsaved_text(&events, &[]), "Let me look. Found it");
    }
}
