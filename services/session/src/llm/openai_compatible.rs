//! The `openai_compatible` provider: any server speaking OpenAI chat completions — Ollama,
//! vLLM, OpenRouter, LM Studio, llama.cpp's server. Same wire format as [`super::openai`]
//! (the same client, see [`OpenAi`]), with these differences:
//! - the base URL is required (it includes the version path, e.g. `…/v1`);
//! - the API key is optional (sent as `Authorization: Bearer` when set);
//! - the token limit is sent as `max_tokens` (which these servers know) rather than OpenAI's
//!   newer `max_completion_tokens`;
//! - usage is whatever the server reports in its `stream_options.include_usage` chunk (zero
//!   when it sends none), and the price table knows no price (cost 0).

use super::openai::OpenAi;
use super::provider::ProviderConfig;

/// Ollama's default base URL.
pub const OLLAMA_BASE_URL: &str = "http://localhost:11434/v1";
/// LM Studio's default base URL.
pub const LM_STUDIO_BASE_URL: &str = "http://localhost:1234/v1";
/// vLLM's default base URL.
pub const VLLM_BASE_URL: &str = "http://localhost:8000/v1";
/// OpenRouter's base URL.
pub const OPENROUTER_BASE_URL: &str = "https://openrouter.ai/api/v1";

/// A client for a checked `openai_compatible` configuration (see
/// [`ProviderConfig::problems`]: the base URL must be set).
pub fn client(config: &ProviderConfig, http: reqwest::Client) -> OpenAi {
    OpenAi::new(config, http)
}
