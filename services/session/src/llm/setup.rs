//! The default provider from the environment: `COGNITION_LLM_*` (in [`Config`]) plus the
//! provider-native key variables `OPENAI_API_KEY` and `ANTHROPIC_API_KEY`, which
//! `cognition_config::load` does not see (it reads `COGNITION_*` only).
//!
//! Key resolution: `COGNITION_LLM_API_KEY` wins; else `OPENAI_API_KEY` for `openai` and
//! `ANTHROPIC_API_KEY` for `anthropic`. `openai_compatible` only takes
//! `COGNITION_LLM_API_KEY` (so an OpenAI key is never sent to some other server), and `mock`
//! needs none.

use cognition_config::{ConfigError, Secret};

use super::provider::{ProviderConfig, ProviderKind};
use super::router::ModelRouter;
use crate::config::Config;

/// The default model of each provider kind when `COGNITION_LLM_MODEL` is unset
/// (`openai_compatible` has none: the model is required).
pub fn default_model(kind: ProviderKind) -> Option<&'static str> {
    match kind {
        ProviderKind::OpenAi => Some("gpt-4o"),
        ProviderKind::Anthropic => Some("claude-sonnet-4-5"),
        ProviderKind::OpenAiCompatible => None,
        ProviderKind::Mock => Some(super::mock::DEFAULT_MODEL),
    }
}

/// The variable holding the provider-native key of `kind`.
pub fn native_key_variable(kind: ProviderKind) -> Option<&'static str> {
    match kind {
        ProviderKind::OpenAi => Some("OPENAI_API_KEY"),
        ProviderKind::Anthropic => Some("ANTHROPIC_API_KEY"),
        ProviderKind::OpenAiCompatible | ProviderKind::Mock => None,
    }
}

/// The default provider configured by `config` and the key variables in `vars` (pass
/// `std::env::vars()`; tests pass a list). Its id is the kind's name (`openai`, …).
pub fn provider_from_env(
    config: &Config,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<ProviderConfig, ConfigError> {
    let kind = config.llm_provider;
    let native = native_key_variable(kind);
    let native_key = native.and_then(|name| {
        vars.into_iter()
            .find(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| Secret::new(v.trim()))
    });
    let api_key = config
        .llm_api_key
        .clone()
        .filter(|k| !k.is_empty())
        .or(native_key);
    let mut problems = Vec::new();
    let model = match config
        .llm_model
        .clone()
        .or_else(|| default_model(kind).map(str::to_owned))
    {
        Some(model) => model,
        None => {
            problems.push(format!(
                "COGNITION_LLM_MODEL is required when COGNITION_LLM_PROVIDER={kind}"
            ));
            String::new()
        }
    };
    if api_key.is_none()
        && let Some(native) = native
    {
        problems.push(format!(
            "COGNITION_LLM_PROVIDER={kind} needs an API key: set {native} or COGNITION_LLM_API_KEY"
        ));
    }
    if kind == ProviderKind::OpenAiCompatible && config.llm_base_url.is_none() {
        problems.push(
            "COGNITION_LLM_BASE_URL is required when COGNITION_LLM_PROVIDER=openai_compatible"
                .to_owned(),
        );
    }
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    Ok(ProviderConfig {
        id: kind.as_str().to_owned(),
        kind,
        model,
        base_url: config.llm_base_url.clone(),
        api_key,
        max_retries: config.llm_max_retries,
        priority: 0,
        enabled: true,
        display_name: Some(match kind {
            ProviderKind::Mock => "Mock (echo, no LLM)".to_owned(),
            _ => format!("{kind} (from environment)"),
        }),
    })
}

/// The router the service uses: the default provider from the environment (see
/// [`provider_from_env`]). Logs which provider and model it uses (never the key).
pub fn router_from_config(
    config: &Config,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<ModelRouter, ConfigError> {
    let provider = provider_from_env(config, vars)?;
    if provider.kind == ProviderKind::Mock {
        tracing::info!(
            model = %provider.model,
            "LLM provider: mock (answers echo the user; set COGNITION_LLM_PROVIDER for a real model)"
        );
    } else {
        tracing::info!(provider = %provider.kind, model = %provider.model, "LLM provider configured");
    }
    ModelRouter::new(vec![provider]).map_err(|e| ConfigError { problems: e.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(list: &[(&str, &str)]) -> Config {
        cognition_config::load(list.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn mock_by_default_without_any_key() {
        let p = provider_from_env(&config(&[]), vars(&[("OPENAI_API_KEY", "sk-x")])).unwrap();
        assert_eq!(p.kind, ProviderKind::Mock);
        assert_eq!(p.model, "mock-echo");
        assert_eq!(p.api_key, None);
        let router = router_from_config(&config(&[]), vars(&[])).unwrap();
        assert_eq!(
            router.select(None, None, None).unwrap().model_id().provider,
            "mock"
        );
    }

    #[test]
    fn native_keys_and_the_cognition_key() {
        let openai = config(&[("COGNITION_LLM_PROVIDER", "openai")]);
        let p = provider_from_env(
            &openai,
            vars(&[("OPENAI_API_KEY", "sk-o"), ("ANTHROPIC_API_KEY", "sk-a")]),
        )
        .unwrap();
        assert_eq!(p.api_key.unwrap().expose(), "sk-o");
        assert_eq!(p.model, "gpt-4o");
        assert_eq!(p.id, "openai");
        assert_eq!(p.max_retries, 2);

        let anthropic = config(&[
            ("COGNITION_LLM_PROVIDER", "anthropic"),
            ("COGNITION_LLM_MODEL", "claude-x"),
        ]);
        let p = provider_from_env(
            &anthropic,
            vars(&[("OPENAI_API_KEY", "sk-o"), ("ANTHROPIC_API_KEY", "sk-a")]),
        )
        .unwrap();
        assert_eq!(p.api_key.unwrap().expose(), "sk-a");
        assert_eq!(p.model, "claude-x");

        let explicit = config(&[
            ("COGNITION_LLM_PROVIDER", "anthropic"),
            ("COGNITION_LLM_API_KEY", "sk-c"),
            ("COGNITION_LLM_MAX_RETRIES", "0"),
        ]);
        let p = provider_from_env(&explicit, vars(&[("ANTHROPIC_API_KEY", "sk-a")])).unwrap();
        assert_eq!(p.api_key.unwrap().expose(), "sk-c");
        assert_eq!(p.max_retries, 0);
    }

    #[test]
    fn missing_keys_are_reported_naming_the_variables() {
        let err = provider_from_env(
            &config(&[("COGNITION_LLM_PROVIDER", "openai")]),
            vars(&[("ANTHROPIC_API_KEY", "sk-a")]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("OPENAI_API_KEY") && text.contains("COGNITION_LLM_API_KEY"),
            "{text}"
        );
        let err = router_from_config(
            &config(&[("COGNITION_LLM_PROVIDER", "anthropic")]),
            vars(&[("ANTHROPIC_API_KEY", " ")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("ANTHROPIC_API_KEY"), "{err}");
    }

    #[test]
    fn openai_compatible_takes_only_the_cognition_key() {
        let c = config(&[
            ("COGNITION_LLM_PROVIDER", "openai_compatible"),
            ("COGNITION_LLM_MODEL", "llama3.1"),
            ("COGNITION_LLM_BASE_URL", "http://localhost:11434/v1"),
        ]);
        let p = provider_from_env(&c, vars(&[("OPENAI_API_KEY", "sk-o")])).unwrap();
        assert_eq!(
            p.api_key, None,
            "an OpenAI key is not sent to another server"
        );
        assert_eq!(p.base_url.as_deref(), Some("http://localhost:11434/v1"));
        let router = router_from_config(&c, vars(&[])).unwrap();
        let id = router.select(None, None, None).unwrap().model_id();
        assert_eq!(
            (id.provider.as_str(), id.model.as_str()),
            ("openai_compatible", "llama3.1")
        );
    }
}
