//! The Anthropic messages wire format (`POST {base}/v1/messages`, `stream: true`).
//!
//! Request: headers `x-api-key` and `anthropic-version: 2023-06-01`; the system prompt is the
//! top-level `system` field; `max_tokens` is required; assistant tool calls are `tool_use`
//! content blocks (`{id, name, input}`), tool results are `tool_result` blocks
//! (`{tool_use_id, content}`) in a user message; consecutive messages of one role are merged
//! into one message with several blocks; tools are `{name, description, input_schema}`.
//! Response events: `message_start` (input tokens, cache tokens included), `content_block_start`
//! (`text` or `tool_use` with id and name), `content_block_delta` (`text_delta` → text,
//! `input_json_delta` → accumulated arguments), `content_block_stop` (a tool call is complete
//! here), `message_delta` (stop reason, output tokens), `message_stop` (the end), `ping`, and
//! `error` (e.g. `overloaded_error` mid-stream).

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use cognition_config::Secret;
use eventsource_stream::Event;
use serde::{Deserialize, Serialize};

use super::http;
use super::provider::{Failure, ProviderConfig, parse_arguments};
use super::sse::{self, Decoder};
use super::{
    ChatEvent, ChatMessage, ChatRequest, ChatStream, LlmError, ModelId, StopReason, Usage,
};
use crate::domain::ToolCall;

/// The Anthropic API's base URL (without `/v1`).
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The API version sent in `anthropic-version`.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` when the request sets none (Anthropic requires it); 4096 for the Claude 3
/// models whose output limit that is.
pub const DEFAULT_MAX_TOKENS: u32 = 8192;
const CLAUDE_3_MAX_TOKENS: u32 = 4096;

/// The `anthropic` provider.
pub struct Anthropic {
    id: String,
    endpoint: String,
    api_key: Option<Secret>,
    model: String,
    http: reqwest::Client,
}

impl Anthropic {
    /// From a checked configuration (see [`ProviderConfig::problems`]).
    pub fn new(config: &ProviderConfig, http: reqwest::Client) -> Anthropic {
        let base = config.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        Anthropic {
            id: config.id.clone(),
            endpoint: format!("{}/v1/messages", base.trim_end_matches('/')),
            api_key: config.api_key.clone().filter(|k| !k.is_empty()),
            model: config.model.clone(),
            http,
        }
    }

    /// Starts a streamed call; fails before the first event on HTTP and connection errors.
    pub async fn open(&self, request: &ChatRequest) -> Result<(ModelId, ChatStream), Failure> {
        let model = match request.model.as_deref() {
            Some(model) if !model.is_empty() => model,
            _ => &self.model,
        };
        let body = body(model, request);
        let mut builder = self
            .http
            .post(&self.endpoint)
            .header("anthropic-version", API_VERSION)
            .json(&body);
        if let Some(key) = &self.api_key {
            builder = builder.header("x-api-key", key.expose());
        }
        let response = http::send(&self.id, builder, self.api_key.as_ref()).await?;
        let id = ModelId {
            provider: "anthropic".to_owned(),
            model: model.to_owned(),
        };
        let decoder = EventDecoder::new(&self.id);
        Ok((
            id,
            sse::decode(&self.id, response, decoder, self.api_key.clone()),
        ))
    }
}

#[async_trait::async_trait]
impl super::ModelClient for Anthropic {
    async fn stream(&self, request: ChatRequest) -> Result<(ModelId, ChatStream), LlmError> {
        self.open(&request).await.map_err(|f| f.error)
    }
}

// ---- request ---------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub(crate) struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Cow<'a, serde_json::Value>,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
    },
}

#[derive(Debug, Serialize)]
struct Tool<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: &'a serde_json::Value,
}

fn max_tokens_for(model: &str) -> u32 {
    let claude_3 = ["claude-3-haiku", "claude-3-opus", "claude-3-sonnet"];
    if claude_3.iter().any(|p| model.starts_with(p)) {
        CLAUDE_3_MAX_TOKENS
    } else {
        DEFAULT_MAX_TOKENS
    }
}

/// The request body for `model`.
pub(crate) fn body<'a>(model: &'a str, request: &'a ChatRequest) -> Body<'a> {
    let mut messages: Vec<Message<'a>> = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        let (role, blocks) = match message {
            ChatMessage::User { content } => ("user", text_block(content)),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                let mut blocks = text_block(content);
                blocks.extend(tool_calls.iter().map(tool_use_block));
                ("assistant", blocks)
            }
            ChatMessage::Tool {
                tool_call_id,
                content,
            } => (
                "user",
                vec![Block::ToolResult {
                    tool_use_id: tool_call_id,
                    content,
                }],
            ),
        };
        if blocks.is_empty() {
            // Anthropic rejects empty messages and empty text blocks.
            continue;
        }
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => messages.push(Message {
                role,
                content: blocks,
            }),
        }
    }
    Body {
        model,
        max_tokens: request.max_tokens.unwrap_or_else(|| max_tokens_for(model)),
        system: request.system.as_deref().filter(|s| !s.is_empty()),
        messages,
        tools: request
            .tools
            .iter()
            .map(|t| Tool {
                name: &t.name,
                description: &t.description,
                input_schema: &t.parameters,
            })
            .collect(),
        stream: true,
        temperature: request.temperature,
    }
}

fn text_block(text: &str) -> Vec<Block<'_>> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![Block::Text { text }]
    }
}

fn tool_use_block(call: &ToolCall) -> Block<'_> {
    Block::ToolUse {
        id: &call.id,
        name: &call.name,
        // `input` must be an object.
        input: if call.args.is_object() {
            Cow::Borrowed(&call.args)
        } else {
            Cow::Owned(serde_json::Value::Object(serde_json::Map::new()))
        },
    }
}

// ---- response --------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: MessageStart,
    },
    ContentBlockStart {
        index: usize,
        content_block: ContentBlock,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageDelta,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: ErrorBody,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
struct MessageStart {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl WireUsage {
    /// All input tokens, cached ones included; `None` when the event reports none.
    fn input(&self) -> Option<u64> {
        let parts = [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        parts
            .iter()
            .any(Option::is_some)
            .then(|| parts.iter().flatten().sum())
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: serde_json::Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

struct PartialToolUse {
    id: String,
    name: String,
    /// `input` of `content_block_start` (used when no `input_json_delta` arrives).
    input: serde_json::Value,
    json: String,
}

/// Turns stream events into chat events.
pub(crate) struct EventDecoder {
    provider: String,
    tools: HashMap<usize, PartialToolUse>,
    usage: Usage,
    stop: Option<StopReason>,
}

impl EventDecoder {
    pub(crate) fn new(provider: &str) -> EventDecoder {
        EventDecoder {
            provider: provider.to_owned(),
            tools: HashMap::new(),
            usage: Usage::default(),
            stop: None,
        }
    }

    fn finish(&mut self, out: &mut VecDeque<ChatEvent>) {
        out.push_back(ChatEvent::Finished {
            usage: self.usage,
            stop_reason: self.stop.unwrap_or(StopReason::EndTurn),
        });
    }
}

fn stop_reason(reason: &str) -> StopReason {
    match reason {
        "end_turn" | "stop_sequence" => StopReason::EndTurn,
        "tool_use" => StopReason::ToolUse,
        "max_tokens" => StopReason::MaxTokens,
        _ => StopReason::Other,
    }
}

impl Decoder for EventDecoder {
    fn event(&mut self, event: &Event, out: &mut VecDeque<ChatEvent>) -> Result<bool, LlmError> {
        if event.data.trim().is_empty() {
            return Ok(false);
        }
        let parsed: StreamEvent = serde_json::from_str(&event.data)
            .map_err(|e| sse::invalid(&self.provider, &format!("a {:?} event", event.event), &e))?;
        match parsed {
            StreamEvent::MessageStart { message } => {
                if let Some(usage) = message.usage {
                    self.usage.input_tokens = usage.input().unwrap_or(0);
                    self.usage.output_tokens = usage.output_tokens.unwrap_or(0);
                }
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                ContentBlock::Text { text } if !text.is_empty() => {
                    out.push_back(ChatEvent::TextDelta(text));
                }
                ContentBlock::ToolUse { id, name, input } => {
                    self.tools.insert(
                        index,
                        PartialToolUse {
                            id,
                            name,
                            input,
                            json: String::new(),
                        },
                    );
                }
                ContentBlock::Text { .. } | ContentBlock::Other => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } if !text.is_empty() => {
                    out.push_back(ChatEvent::TextDelta(text));
                }
                BlockDelta::InputJsonDelta { partial_json } => match self.tools.get_mut(&index) {
                    Some(tool) => tool.json.push_str(&partial_json),
                    None => {
                        return Err(LlmError::Protocol {
                            provider: self.provider.clone(),
                            message: format!(
                                "input_json_delta for block {index}, which is not a tool_use block"
                            ),
                        });
                    }
                },
                BlockDelta::TextDelta { .. } | BlockDelta::Other => {}
            },
            StreamEvent::ContentBlockStop { index } => {
                if let Some(tool) = self.tools.remove(&index) {
                    let args = if tool.json.trim().is_empty() && tool.input.is_object() {
                        tool.input
                    } else {
                        parse_arguments(&self.provider, &tool.name, &tool.json)?
                    };
                    out.push_back(ChatEvent::ToolCall(ToolCall {
                        name: tool.name,
                        args,
                        id: tool.id,
                    }));
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason {
                    self.stop = Some(stop_reason(&reason));
                }
                if let Some(usage) = usage {
                    if let Some(output) = usage.output_tokens {
                        self.usage.output_tokens = output;
                    }
                    if let Some(input) = usage.input() {
                        self.usage.input_tokens = input;
                    }
                }
            }
            StreamEvent::MessageStop => {
                self.finish(out);
                return Ok(true);
            }
            StreamEvent::Error { error } => {
                return Err(LlmError::Transport {
                    provider: self.provider.clone(),
                    message: format!("error in the stream: {}: {}", error.kind, error.message),
                });
            }
            StreamEvent::Ping | StreamEvent::Unknown => {}
        }
        Ok(false)
    }

    fn end_of_body(&mut self, out: &mut VecDeque<ChatEvent>) -> Result<(), LlmError> {
        // A stop reason means the answer is complete even if `message_stop` was lost.
        if self.stop.is_some() && self.tools.is_empty() {
            self.finish(out);
            Ok(())
        } else {
            Err(sse::incomplete(&self.provider))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_3_gets_its_smaller_default_limit() {
        assert_eq!(max_tokens_for("claude-3-haiku-20240307"), 4096);
        assert_eq!(
            max_tokens_for("claude-3-5-haiku-latest"),
            DEFAULT_MAX_TOKENS
        );
        assert_eq!(max_tokens_for("claude-sonnet-4-5"), DEFAULT_MAX_TOKENS);
    }

    #[test]
    fn unknown_events_and_blocks_are_ignored() {
        let mut d = EventDecoder::new("p");
        let mut out = VecDeque::new();
        let ev = |data: &str| Event {
            event: "x".into(),
            data: data.into(),
            id: String::new(),
            retry: None,
        };
        for data in [
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}"#,
            r#"{"type":"future_event"}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}"#,
        ] {
            assert!(!d.event(&ev(data), &mut out).unwrap());
        }
        assert!(out.is_empty());
        d.end_of_body(&mut out).unwrap();
        assert!(matches!(
            out.pop_front(),
            Some(ChatEvent::Finished {
                usage: Usage {
                    output_tokens: 3,
                    ..
                },
                ..
            })
        ));
    }
}
