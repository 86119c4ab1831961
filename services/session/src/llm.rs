//! Talking to language models: the interface the agent loop uses, and (in submodules) the
//! providers behind it.
//!
//! The agent loop only sees [`ModelClient`]: it sends a [`ChatRequest`] (system prompt,
//! conversation, tool specs) and reads a stream of [`ChatEvent`]s (text deltas, complete tool
//! calls, real token usage, the end). Providers translate this to and from their wire formats
//! (OpenAI chat completions, Anthropic messages, …). [`ModelRouter`] picks the provider of a
//! session, retries with backoff and falls back to the next enabled provider by priority.
//!
//! Secrets (API keys) live here and in the providers only; they never reach a sandbox or a log.

pub mod anthropic;
mod http;
pub mod mock;
pub mod openai;
pub mod openai_compatible;
pub mod pricing;
pub mod provider;
pub mod router;
pub mod setup;
mod sse;

use std::pin::Pin;

use futures::Stream;

use crate::domain::ToolCall;

pub use self::pricing::estimate_cost;
pub use self::provider::{
    DEFAULT_MAX_RETRIES, InvalidProvider, Provider, ProviderConfig, ProviderKind, is_http_url,
};
pub use self::router::{ModelRouter, ProviderSet, RetryPolicy, Route};
pub use self::setup::{default_model, provider_from_env, router_from_config};

/// One message of the model's context, built from the persisted conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatMessage {
    User {
        content: String,
    },
    /// An assistant turn: text and/or tool calls.
    Assistant {
        content: String,
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call.
    Tool {
        tool_call_id: String,
        content: String,
    },
}

/// A tool the model may call: a name, a description and a JSON Schema of its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema (`{"type":"object","properties":{…},"required":[…]}`).
    pub parameters: serde_json::Value,
}

/// One call to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub system: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
    /// Overrides of the provider's defaults (from the session config).
    pub model: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
}

/// Real token counts reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// What a streaming model call produces, in order. A stream ends after exactly one
/// [`ChatEvent::Finished`] (or an error).
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// A piece of assistant text, as it arrives.
    TextDelta(String),
    /// A complete tool call (arguments fully accumulated and parsed as a JSON object).
    ToolCall(ToolCall),
    /// The end of the model's answer.
    Finished {
        usage: Usage,
        stop_reason: StopReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    ToolUse,
    MaxTokens,
    Other,
}

/// Why a model call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    /// No enabled provider could be used (none configured, or all failed).
    #[error("no language model available: {0}")]
    Unavailable(String),
    /// The provider answered with an HTTP error (after retries where retryable).
    #[error("{provider} answered HTTP {status}: {message}")]
    Http {
        provider: String,
        status: u16,
        message: String,
    },
    /// The connection failed or the stream broke.
    #[error("{provider}: {message}")]
    Transport { provider: String, message: String },
    /// The provider sent something we could not understand.
    #[error("{provider} sent an invalid response: {message}")]
    Protocol { provider: String, message: String },
}

impl LlmError {
    /// Whether retrying (or falling back) may help: 429, 5xx, transport failures.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Http { status, .. } => *status == 429 || *status >= 500,
            LlmError::Transport { .. } => true,
            LlmError::Unavailable(_) | LlmError::Protocol { .. } => false,
        }
    }
}

/// A stream of [`ChatEvent`]s.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatEvent, LlmError>> + Send>>;

/// Identifies the provider and model that answered (for `usage` events and `model_used`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelId {
    /// Provider type, e.g. `openai`, `anthropic`, `openai_compatible`, `mock`.
    pub provider: String,
    pub model: String,
}

/// A streaming chat model. Implemented by every provider and by [`ModelRouter`].
#[async_trait::async_trait]
pub trait ModelClient: Send + Sync {
    /// Starts a call. Errors before the first event (HTTP status, connection) are returned
    /// here so callers can retry or fall back; errors mid-stream arrive in the stream.
    async fn stream(&self, request: ChatRequest) -> Result<(ModelId, ChatStream), LlmError>;
}
