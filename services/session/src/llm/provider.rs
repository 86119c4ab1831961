//! Provider configuration ([`ProviderConfig`]) and the runtime [`Provider`] built from it: one
//! configured model endpoint (OpenAI, an OpenAI-compatible server, Anthropic, or the mock).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use cognition_config::Secret;
use serde::{Deserialize, Serialize};

use super::anthropic::Anthropic;
use super::mock::Mock;
use super::openai::OpenAi;
use super::{ChatRequest, ChatStream, LlmError, ModelClient, ModelId};

/// The kind of a provider: which wire format and defaults it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ProviderKind {
    /// `api.openai.com`, `Authorization: Bearer` key required.
    #[serde(rename = "openai")]
    OpenAi,
    /// `api.anthropic.com`, `x-api-key` required.
    #[serde(rename = "anthropic")]
    Anthropic,
    /// Any server speaking OpenAI chat completions (Ollama, vLLM, OpenRouter, LM Studio):
    /// base URL required, key optional.
    #[serde(rename = "openai_compatible")]
    OpenAiCompatible,
    /// A scripted in-process model for demos and tests (no network).
    #[default]
    #[serde(rename = "mock")]
    Mock,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::OpenAi,
        ProviderKind::Anthropic,
        ProviderKind::OpenAiCompatible,
        ProviderKind::Mock,
    ];

    /// The name used in configuration and in [`ModelId::provider`].
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenAiCompatible => "openai_compatible",
            ProviderKind::Mock => "mock",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown provider name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0:?} (expected openai, anthropic, openai_compatible or mock)")]
pub struct UnknownProviderKind(pub String);

impl FromStr for ProviderKind {
    type Err = UnknownProviderKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownProviderKind(s.to_owned()))
    }
}

/// Default number of retries of a provider on 429/5xx/transport errors.
pub const DEFAULT_MAX_RETRIES: u32 = 2;

/// One configured provider. Several make a [`super::ModelRouter`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    /// Unique id (a session's `provider_id` names it).
    pub id: String,
    pub kind: ProviderKind,
    /// The default model (a request's `model` overrides it).
    pub model: String,
    /// Overrides the kind's default base URL; required for `openai_compatible`. For the
    /// OpenAI formats it includes the version path (`https://api.openai.com/v1`,
    /// `http://localhost:11434/v1`); for Anthropic it does not (`https://api.anthropic.com`).
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
    /// Retries on 429, 5xx and transport errors before falling back.
    pub max_retries: u32,
    /// Lower first: the router tries enabled providers in ascending priority.
    pub priority: i32,
    pub enabled: bool,
    pub display_name: Option<String>,
}

impl ProviderConfig {
    /// An enabled provider with priority 0, [`DEFAULT_MAX_RETRIES`], no key and the kind's
    /// base URL.
    pub fn new(id: impl Into<String>, kind: ProviderKind, model: impl Into<String>) -> Self {
        ProviderConfig {
            id: id.into(),
            kind,
            model: model.into(),
            base_url: None,
            api_key: None,
            max_retries: DEFAULT_MAX_RETRIES,
            priority: 0,
            enabled: true,
            display_name: None,
        }
    }

    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = Some(base_url.into());
        self
    }

    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(Secret::new(key));
        self
    }

    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Problems that make this configuration unusable, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.id.trim().is_empty() {
            problems.push("a provider needs a non-empty id".to_owned());
        }
        if self.model.trim().is_empty() {
            problems.push(format!("provider {:?}: model is empty", self.id));
        }
        match (&self.base_url, self.kind) {
            (None, ProviderKind::OpenAiCompatible) => problems.push(format!(
                "provider {:?}: openai_compatible needs a base URL",
                self.id
            )),
            (Some(url), _) if !is_http_url(url) => problems.push(format!(
                "provider {:?}: base URL {url:?} must be an http(s) URL",
                self.id
            )),
            _ => {}
        }
        let key_missing = self.api_key.as_ref().is_none_or(Secret::is_empty);
        if key_missing && matches!(self.kind, ProviderKind::OpenAi | ProviderKind::Anthropic) {
            problems.push(format!(
                "provider {:?}: {} needs an API key",
                self.id, self.kind
            ));
        }
        problems
    }
}

/// Whether `url` is an absolute http(s) URL with a host.
pub fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// A provider configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid model provider configuration: {}", .0.join("; "))]
pub struct InvalidProvider(pub Vec<String>);

/// A failed attempt to start a model call: the error, and how long the provider asked us to
/// wait (`Retry-After`) before trying again.
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: LlmError,
    pub retry_after: Option<Duration>,
}

impl From<LlmError> for Failure {
    fn from(error: LlmError) -> Self {
        Failure {
            error,
            retry_after: None,
        }
    }
}

enum Backend {
    OpenAi(OpenAi),
    Anthropic(Anthropic),
    Mock(Mock),
}

/// A ready-to-call provider.
pub struct Provider {
    config: ProviderConfig,
    backend: Backend,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Builds a provider; `http` is shared by all providers of a router.
    pub fn new(config: ProviderConfig, http: reqwest::Client) -> Result<Provider, InvalidProvider> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(InvalidProvider(problems));
        }
        let backend = match config.kind {
            ProviderKind::OpenAi => Backend::OpenAi(OpenAi::new(&config, http)),
            ProviderKind::OpenAiCompatible => {
                Backend::OpenAi(super::openai_compatible::client(&config, http))
            }
            ProviderKind::Anthropic => Backend::Anthropic(Anthropic::new(&config, http)),
            ProviderKind::Mock => Backend::Mock(Mock::new(config.model.clone())),
        };
        Ok(Provider { config, backend })
    }

    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// Starts a call, keeping the provider's `Retry-After` on failure.
    pub async fn open(&self, request: &ChatRequest) -> Result<(ModelId, ChatStream), Failure> {
        match &self.backend {
            Backend::OpenAi(p) => p.open(request).await,
            Backend::Anthropic(p) => p.open(request).await,
            Backend::Mock(p) => Ok(p.open(request)),
        }
    }
}

#[async_trait::async_trait]
impl ModelClient for Provider {
    async fn stream(&self, request: ChatRequest) -> Result<(ModelId, ChatStream), LlmError> {
        self.open(&request).await.map_err(|f| f.error)
    }
}

/// Parses accumulated tool call arguments: empty text is `{}`; anything that is not a JSON
/// object is a protocol error naming the tool (the run then ends with that error rather than
/// calling the tool with arguments the model did not mean).
pub(crate) fn parse_arguments(
    provider: &str,
    tool: &str,
    raw: &str,
) -> Result<serde_json::Value, LlmError> {
    if raw.trim().is_empty() {
        return Ok(serde_json::Value::Object(serde_json::Map::new()));
    }
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => Err(LlmError::Protocol {
            provider: provider.to_owned(),
            message: format!("the arguments of tool call {tool:?} are not a JSON object"),
        }),
        Err(e) => Err(LlmError::Protocol {
            provider: provider.to_owned(),
            message: format!("the arguments of tool call {tool:?} are not valid JSON ({e})"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_names() {
        for kind in ProviderKind::ALL {
            assert_eq!(kind.as_str().parse::<ProviderKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
        }
        assert!("bedrock".parse::<ProviderKind>().is_err());
    }

    #[test]
    fn problems_of_configs() {
        let ok = ProviderConfig::new("a", ProviderKind::OpenAi, "gpt-4o").with_api_key("k");
        assert!(ok.problems().is_empty());
        let no_key = ProviderConfig::new("a", ProviderKind::Anthropic, "claude");
        assert!(no_key.problems()[0].contains("API key"));
        let compat = ProviderConfig::new("c", ProviderKind::OpenAiCompatible, "llama");
        assert!(compat.problems()[0].contains("base URL"));
        let compat = compat.with_base_url("ftp://x");
        assert!(compat.problems()[0].contains("http(s)"));
        let compat = compat.with_base_url("http://localhost:11434/v1");
        assert!(compat.problems().is_empty(), "key optional");
        assert!(
            ProviderConfig::new("m", ProviderKind::Mock, "mock")
                .problems()
                .is_empty()
        );
        assert!(
            !ProviderConfig::new("m", ProviderKind::Mock, "")
                .problems()
                .is_empty()
        );
    }

    #[test]
    fn arguments_parse_to_objects_or_fail_clearly() {
        assert_eq!(
            parse_arguments("p", "t", "").unwrap(),
            serde_json::json!({})
        );
        assert_eq!(
            parse_arguments("p", "t", r#"{"a":1}"#).unwrap(),
            serde_json::json!({"a": 1})
        );
        let e = parse_arguments("p", "ls", r#"{"a":"#).unwrap_err();
        assert!(matches!(e, LlmError::Protocol { .. }));
        assert!(e.to_string().contains("\"ls\""), "{e}");
        assert!(parse_arguments("p", "t", "[1]").is_err());
    }
}
