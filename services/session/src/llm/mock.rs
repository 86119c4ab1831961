//! The `mock` provider: a scripted in-process model for demos and tests, so the embedded
//! default can chat with no API key. No network; deterministic output.
//!
//! Behaviour, from the last message of the conversation:
//! - a user message `/tool <name> <json args>` → a call of that tool (arguments `{}` when
//!   omitted), so tool round trips can be demonstrated without a model;
//! - any other user message → the same text back, word by word;
//! - a tool result → `Tool result: <output>`, word by word;
//! - nothing → an empty answer.
//!
//! Usage is an estimate: input ≈ characters of the context / 4, output = pieces streamed.

use super::{ChatEvent, ChatMessage, ChatRequest, ChatStream, ModelId, StopReason, Usage};
use crate::domain::ToolCall;

/// The mock's default model name (shown as `model_used`).
pub const DEFAULT_MODEL: &str = "mock-echo";

/// The scripted model.
#[derive(Debug, Clone)]
pub struct Mock {
    model: String,
}

impl Mock {
    pub fn new(model: impl Into<String>) -> Mock {
        Mock {
            model: model.into(),
        }
    }

    /// The answer to `request`, as a stream that is ready at once.
    pub fn open(&self, request: &ChatRequest) -> (ModelId, ChatStream) {
        let id = ModelId {
            provider: "mock".to_owned(),
            model: request
                .model
                .clone()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| self.model.clone()),
        };
        let events = answer(request);
        let stream = futures::stream::iter(events.into_iter().map(Ok));
        (id, Box::pin(stream))
    }
}

#[async_trait::async_trait]
impl super::ModelClient for Mock {
    async fn stream(&self, request: ChatRequest) -> Result<(ModelId, ChatStream), super::LlmError> {
        Ok(self.open(&request))
    }
}

/// Every event of the answer to `request`.
pub fn answer(request: &ChatRequest) -> Vec<ChatEvent> {
    let input_tokens = estimate_tokens(request);
    let mut events = Vec::new();
    let mut stop_reason = StopReason::EndTurn;
    match request.messages.last() {
        Some(ChatMessage::User { content }) => match parse_tool_command(content) {
            Some(Ok((name, args))) => {
                events.push(ChatEvent::ToolCall(ToolCall {
                    name,
                    args,
                    id: format!("mock_call_{}", request.messages.len()),
                }));
                stop_reason = StopReason::ToolUse;
            }
            Some(Err(problem)) => events.extend(text(&problem)),
            None => events.extend(text(content)),
        },
        Some(ChatMessage::Tool { content, .. }) => {
            events.extend(text(&format!("Tool result: {content}")));
        }
        Some(ChatMessage::Assistant { .. }) | None => {}
    }
    let output_tokens = events.len() as u64;
    events.push(ChatEvent::Finished {
        usage: Usage {
            input_tokens,
            output_tokens,
        },
        stop_reason,
    });
    events
}

/// `/tool <name> [json]` → the call, or a problem to tell the user; other text → `None`.
fn parse_tool_command(content: &str) -> Option<Result<(String, serde_json::Value), String>> {
    let rest = content.trim().strip_prefix("/tool")?;
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = rest.trim();
    let (name, args) = match rest.split_once(char::is_whitespace) {
        Some((name, args)) => (name, args.trim()),
        None => (rest, ""),
    };
    if name.is_empty() {
        return Some(Err("Usage: /tool <name> {\"arg\": \"value\"}".to_owned()));
    }
    if args.is_empty() {
        return Some(Ok((name.to_owned(), serde_json::json!({}))));
    }
    Some(match serde_json::from_str::<serde_json::Value>(args) {
        Ok(value @ serde_json::Value::Object(_)) => Ok((name.to_owned(), value)),
        _ => Err(format!(
            "The arguments of /tool {name} must be a JSON object, e.g. /tool {name} {{\"path\": \".\"}}"
        )),
    })
}

/// Text deltas, one per word with its leading whitespace.
fn text(content: &str) -> Vec<ChatEvent> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for c in content.chars() {
        if c.is_whitespace() && in_word {
            pieces.push(std::mem::take(&mut current));
            in_word = false;
        }
        in_word |= !c.is_whitespace();
        current.push(c);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces.into_iter().map(ChatEvent::TextDelta).collect()
}

fn estimate_tokens(request: &ChatRequest) -> u64 {
    let chars: usize = request.system.as_deref().map_or(0, str::len)
        + request
            .messages
            .iter()
            .map(|m| match m {
                ChatMessage::User { content } | ChatMessage::Tool { content, .. } => content.len(),
                ChatMessage::Assistant {
                    content,
                    tool_calls,
                } => {
                    content.len()
                        + tool_calls
                            .iter()
                            .map(|c| c.name.len() + c.args.to_string().len())
                            .sum::<usize>()
                }
            })
            .sum::<usize>();
    chars.div_ceil(4) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn request(messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest {
            system: Some("be brief".into()),
            messages,
            tools: Vec::new(),
            model: None,
            temperature: None,
            max_tokens: None,
        }
    }

    fn user(text: &str) -> ChatMessage {
        ChatMessage::User {
            content: text.into(),
        }
    }

    #[tokio::test]
    async fn echoes_the_last_user_message_word_by_word() {
        let mock = Mock::new(DEFAULT_MODEL);
        let (id, stream) = mock.open(&request(vec![user("first"), user("hello  big world")]));
        assert_eq!(id.provider, "mock");
        assert_eq!(id.model, "mock-echo");
        let events: Vec<ChatEvent> = stream.map(Result::unwrap).collect().await;
        assert_eq!(
            events[..3],
            [
                ChatEvent::TextDelta("hello".into()),
                ChatEvent::TextDelta("  big".into()),
                ChatEvent::TextDelta(" world".into()),
            ]
        );
        assert_eq!(
            events[3],
            ChatEvent::Finished {
                usage: Usage {
                    input_tokens: 8,
                    output_tokens: 3
                },
                stop_reason: StopReason::EndTurn
            }
        );
        // deterministic
        let again = answer(&request(vec![user("first"), user("hello  big world")]));
        assert_eq!(again, events);
    }

    #[test]
    fn tool_commands_and_results() {
        let events = answer(&request(vec![user(
            r#"/tool execute {"command": "echo hi"}"#,
        )]));
        assert_eq!(
            events[0],
            ChatEvent::ToolCall(ToolCall {
                name: "execute".into(),
                args: serde_json::json!({"command": "echo hi"}),
                id: "mock_call_1".into()
            })
        );
        assert!(matches!(
            events[1],
            ChatEvent::Finished {
                stop_reason: StopReason::ToolUse,
                ..
            }
        ));
        let events = answer(&request(vec![user("/tool ls")]));
        assert!(matches!(&events[0], ChatEvent::ToolCall(c) if c.args == serde_json::json!({})));
        let events = answer(&request(vec![user("/tool ls [1]")]));
        assert!(matches!(&events[0], ChatEvent::TextDelta(t) if t == "The"));
        let events = answer(&request(vec![user("/toolbox")]));
        assert_eq!(events[0], ChatEvent::TextDelta("/toolbox".into()));
        let events = answer(&request(vec![
            user("/tool ls"),
            ChatMessage::Tool {
                tool_call_id: "mock_call_1".into(),
                content: "a.txt".into(),
            },
        ]));
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                ChatEvent::TextDelta(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "Tool result: a.txt");
    }
}
