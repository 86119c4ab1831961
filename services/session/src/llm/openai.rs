//! The OpenAI chat completions wire format (`POST {base}/chat/completions`, `stream: true`),
//! used by the `openai` and `openai_compatible` providers.
//!
//! Request: the system prompt is the first message (`role: system`), assistant tool calls are
//! `tool_calls[{id, type: function, function: {name, arguments: "<JSON text>"}}]`, tool results
//! are `role: tool` messages with `tool_call_id`; tools are `{type: function, function: {name,
//! description, parameters}}`; `stream_options.include_usage` asks for the usage chunk.
//! Response: `data: {chat.completion.chunk}` events; text in `choices[0].delta.content`; tool
//! calls in `choices[0].delta.tool_calls[]` fragments keyed by `index` (the first fragment has
//! `id` and `function.name`, later ones `function.arguments` pieces), accumulated here and
//! emitted as complete [`ChatEvent::ToolCall`]s when `finish_reason` arrives; the usage chunk
//! (`choices: []`, `usage`) comes last, then `data: [DONE]`.

use std::collections::VecDeque;

use cognition_config::Secret;
use eventsource_stream::Event;
use serde::{Deserialize, Serialize};

use super::http;
use super::provider::{Failure, ProviderConfig, ProviderKind, parse_arguments};
use super::sse::{self, Decoder};
use super::{ChatEvent, ChatMessage, ChatRequest, ChatStream, ModelId, StopReason, Usage};
use crate::domain::ToolCall;

/// The OpenAI API's base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// A provider speaking OpenAI chat completions (`openai` or `openai_compatible`).
pub struct OpenAi {
    id: String,
    kind: ProviderKind,
    endpoint: String,
    api_key: Option<Secret>,
    model: String,
    http: reqwest::Client,
}

impl OpenAi {
    /// From a checked configuration (see [`ProviderConfig::problems`]).
    pub fn new(config: &ProviderConfig, http: reqwest::Client) -> OpenAi {
        let base = config.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        OpenAi {
            id: config.id.clone(),
            kind: config.kind,
            endpoint: format!("{}/chat/completions", base.trim_end_matches('/')),
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
        let body = body(self.kind, model, request);
        let mut builder = self.http.post(&self.endpoint).json(&body);
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        let response = http::send(&self.id, builder, self.api_key.as_ref()).await?;
        let id = ModelId {
            provider: self.kind.as_str().to_owned(),
            model: model.to_owned(),
        };
        let decoder = ChunkDecoder::new(&self.id);
        Ok((
            id,
            sse::decode(&self.id, response, decoder, self.api_key.clone()),
        ))
    }
}

#[async_trait::async_trait]
impl super::ModelClient for OpenAi {
    async fn stream(&self, request: ChatRequest) -> Result<(ModelId, ChatStream), super::LlmError> {
        self.open(&request).await.map_err(|f| f.error)
    }
}

// ---- request ---------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub(crate) struct Body<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    /// `openai_compatible` servers (Ollama, vLLM, LM Studio) know `max_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    /// OpenAI deprecated `max_tokens` (reasoning models reject it).
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
}

#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Debug, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum Message<'a> {
    System {
        content: &'a str,
    },
    User {
        content: &'a str,
    },
    Assistant {
        /// `null` when the turn is only tool calls.
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<WireToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a str,
    },
}

#[derive(Debug, Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Debug, Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    /// The arguments as JSON text.
    arguments: String,
}

#[derive(Debug, Serialize)]
struct Tool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionSpec<'a>,
}

#[derive(Debug, Serialize)]
struct FunctionSpec<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a serde_json::Value,
}

/// The request body for `model`.
pub(crate) fn body<'a>(kind: ProviderKind, model: &'a str, request: &'a ChatRequest) -> Body<'a> {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = request.system.as_deref().filter(|s| !s.is_empty()) {
        messages.push(Message::System { content: system });
    }
    for message in &request.messages {
        messages.push(match message {
            ChatMessage::User { content } => Message::User { content },
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => Message::Assistant {
                content: (!content.is_empty() || tool_calls.is_empty()).then_some(content.as_str()),
                tool_calls: tool_calls.iter().map(wire_tool_call).collect(),
            },
            ChatMessage::Tool {
                tool_call_id,
                content,
            } => Message::Tool {
                tool_call_id,
                content,
            },
        });
    }
    let (max_tokens, max_completion_tokens) = match kind {
        ProviderKind::OpenAi => (None, request.max_tokens),
        _ => (request.max_tokens, None),
    };
    Body {
        model,
        messages,
        tools: request
            .tools
            .iter()
            .map(|t| Tool {
                kind: "function",
                function: FunctionSpec {
                    name: &t.name,
                    description: &t.description,
                    parameters: &t.parameters,
                },
            })
            .collect(),
        stream: true,
        stream_options: StreamOptions {
            include_usage: true,
        },
        temperature: request.temperature,
        max_tokens,
        max_completion_tokens,
    }
}

fn wire_tool_call(call: &ToolCall) -> WireToolCall<'_> {
    WireToolCall {
        id: &call.id,
        kind: "function",
        function: WireFunction {
            name: &call.name,
            arguments: if call.args.is_null() {
                "{}".to_owned()
            } else {
                call.args.to_string()
            },
        },
    }
}

// ---- response --------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Debug, Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Debug, Default)]
struct PartialCall {
    index: usize,
    id: String,
    name: String,
    arguments: String,
}

/// Accumulates chunks into chat events.
pub(crate) struct ChunkDecoder {
    provider: String,
    calls: Vec<PartialCall>,
    stop: Option<StopReason>,
    usage: Usage,
}

impl ChunkDecoder {
    pub(crate) fn new(provider: &str) -> ChunkDecoder {
        ChunkDecoder {
            provider: provider.to_owned(),
            calls: Vec::new(),
            stop: None,
            usage: Usage::default(),
        }
    }

    fn tool_delta(&mut self, delta: ToolCallDelta) {
        let slot = match delta.index {
            Some(index) => match self.calls.iter().position(|c| c.index == index) {
                Some(i) => i,
                None => {
                    self.calls.push(PartialCall {
                        index,
                        ..PartialCall::default()
                    });
                    self.calls.len() - 1
                }
            },
            // Servers that omit `index`: a delta with an id starts a call, others continue
            // the last one.
            None if delta.id.is_some() || self.calls.is_empty() => {
                self.calls.push(PartialCall {
                    index: self.calls.len(),
                    ..PartialCall::default()
                });
                self.calls.len() - 1
            }
            None => self.calls.len() - 1,
        };
        let call = &mut self.calls[slot];
        if let Some(id) = delta.id.filter(|id| !id.is_empty()) {
            call.id = id;
        }
        if let Some(function) = delta.function {
            if let Some(name) = function.name.filter(|n| !n.is_empty()) {
                call.name = name;
            }
            if let Some(arguments) = function.arguments {
                call.arguments.push_str(&arguments);
            }
        }
    }

    /// Emits the accumulated tool calls, in index order.
    fn flush_calls(&mut self, out: &mut VecDeque<ChatEvent>) -> Result<(), super::LlmError> {
        let mut calls = std::mem::take(&mut self.calls);
        calls.sort_by_key(|c| c.index);
        for call in calls {
            if call.name.is_empty() {
                return Err(super::LlmError::Protocol {
                    provider: self.provider.clone(),
                    message: format!("tool call #{} has no function name", call.index),
                });
            }
            let args = parse_arguments(&self.provider, &call.name, &call.arguments)?;
            let id = if call.id.is_empty() {
                format!("call_{}", call.index)
            } else {
                call.id
            };
            out.push_back(ChatEvent::ToolCall(ToolCall {
                name: call.name,
                args,
                id,
            }));
            self.stop.get_or_insert(StopReason::ToolUse);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut VecDeque<ChatEvent>) -> Result<(), super::LlmError> {
        self.flush_calls(out)?;
        out.push_back(ChatEvent::Finished {
            usage: self.usage,
            stop_reason: self.stop.unwrap_or(StopReason::EndTurn),
        });
        Ok(())
    }
}

fn stop_reason(reason: &str, has_calls: bool) -> StopReason {
    match reason {
        "tool_calls" | "function_call" => StopReason::ToolUse,
        // Some servers say `stop` after tool calls.
        _ if has_calls => StopReason::ToolUse,
        "stop" => StopReason::EndTurn,
        "length" => StopReason::MaxTokens,
        _ => StopReason::Other,
    }
}

impl Decoder for ChunkDecoder {
    fn event(
        &mut self,
        event: &Event,
        out: &mut VecDeque<ChatEvent>,
    ) -> Result<bool, super::LlmError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(false);
        }
        if data == "[DONE]" {
            self.finish(out)?;
            return Ok(true);
        }
        let chunk: Chunk =
            serde_json::from_str(data).map_err(|e| sse::invalid(&self.provider, "a chunk", &e))?;
        if let Some(error) = chunk.error {
            let message = error
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string());
            return Err(super::LlmError::Transport {
                provider: self.provider.clone(),
                message: format!("error in the stream: {message}"),
            });
        }
        if let Some(usage) = chunk.usage {
            self.usage = Usage {
                input_tokens: usage.prompt_tokens,
                output_tokens: usage.completion_tokens,
            };
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    out.push_back(ChatEvent::TextDelta(text));
                }
                for call in delta.tool_calls.into_iter().flatten() {
                    self.tool_delta(call);
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.stop = Some(stop_reason(&reason, !self.calls.is_empty()));
                self.flush_calls(out)?;
            }
        }
        Ok(false)
    }

    fn end_of_body(&mut self, out: &mut VecDeque<ChatEvent>) -> Result<(), super::LlmError> {
        // Some servers close without `[DONE]`; a finish reason means the answer is complete.
        if self.stop.is_some() {
            self.finish(out)
        } else {
            Err(sse::incomplete(&self.provider))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> Event {
        Event {
            event: "message".to_owned(),
            data: data.to_owned(),
            id: String::new(),
            retry: None,
        }
    }

    fn run(chunks: &[&str]) -> Result<Vec<ChatEvent>, super::super::LlmError> {
        let mut decoder = ChunkDecoder::new("p");
        let mut out = VecDeque::new();
        for c in chunks {
            if decoder.event(&event(c), &mut out)? {
                return Ok(out.into());
            }
        }
        decoder.end_of_body(&mut out)?;
        Ok(out.into())
    }

    #[test]
    fn servers_without_index_or_done_still_work() {
        let events = run(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"a","function":{"name":"ls","arguments":"{\"pa"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"th\":1}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
        ])
        .unwrap();
        assert_eq!(
            events,
            [
                ChatEvent::ToolCall(ToolCall {
                    name: "ls".into(),
                    args: serde_json::json!({"path": 1}),
                    id: "a".into()
                }),
                ChatEvent::Finished {
                    usage: Usage::default(),
                    stop_reason: StopReason::ToolUse
                }
            ]
        );
    }

    #[test]
    fn end_without_finish_is_an_error() {
        let e = run(&[r#"{"choices":[{"delta":{"content":"hi"}}]}"#]).unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(run(&["not json"]).is_err());
        let e = run(&[r#"{"error":{"message":"overloaded"}}"#]).unwrap_err();
        assert!(e.to_string().contains("overloaded"), "{e}");
    }

    #[test]
    fn tool_call_without_name_is_a_protocol_error() {
        let e = run(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
        ])
        .unwrap_err();
        assert!(matches!(e, super::super::LlmError::Protocol { .. }), "{e}");
    }
}
