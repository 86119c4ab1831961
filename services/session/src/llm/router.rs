//! [`ModelRouter`]: picks the provider of a call, retries it with backoff and falls back to the
//! next enabled provider by priority.
//!
//! - **Selection** ([`ModelRouter::select`]): a session's `provider_id`, else its `provider`
//!   kind (+ `model`), else the first enabled provider by priority. The result is a [`Route`]:
//!   the chosen provider first, then every other enabled provider by priority.
//! - **Retries**: an attempt fails *before the first event* on HTTP 429/5xx and transport
//!   errors (including a stream that breaks or reports an error before producing anything);
//!   it is retried up to the provider's `max_retries` times with exponential backoff and
//!   jitter, or after the provider's `Retry-After` (capped). Other errors (400, 401, protocol)
//!   are returned at once: no retry, no fallback.
//! - **Fallback**: when a provider's retries are exhausted, the next provider of the route is
//!   tried with its own model (a request's `model` override applies to the chosen provider
//!   only).
//! - Errors after the first event are never retried: they arrive in the stream.
//!
//! The provider list lives in a [`ProviderSet`], replaceable at run time
//! ([`ModelRouter::replace_providers`]) so a registry can feed it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;

use super::http;
use super::provider::{Failure, InvalidProvider, Provider, ProviderConfig, ProviderKind};
use super::{ChatRequest, ChatStream, LlmError, ModelClient, ModelId};
use crate::domain::SessionConfig;

/// How long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait before the first retry; doubled for each further retry.
    pub base_delay: Duration,
    /// The longest computed wait.
    pub max_delay: Duration,
    /// The longest wait a provider's `Retry-After` can impose.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based): `Retry-After` when the provider sent
    /// one (capped at `max_retry_after`), else `base_delay * 2^retry` capped at `max_delay`
    /// with jitter (a random value in its upper half).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_retry_after);
        }
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.min(20)))
            .min(self.max_delay);
        let half = exp / 2;
        let jitter_nanos = fastrand::u64(0..=half.as_nanos().min(u64::MAX as u128) as u64);
        half + Duration::from_nanos(jitter_nanos)
    }
}

/// The configured providers, enabled ones ordered by priority (ascending; ties keep the
/// configuration order).
#[derive(Debug)]
pub struct ProviderSet {
    providers: Vec<Arc<Provider>>,
}

impl ProviderSet {
    /// Builds every provider, reporting every problem at once (duplicate ids included).
    pub fn new(
        configs: Vec<ProviderConfig>,
        http: &reqwest::Client,
    ) -> Result<ProviderSet, InvalidProvider> {
        let mut problems = Vec::new();
        let mut providers = Vec::new();
        for (i, config) in configs.iter().enumerate() {
            if configs[..i].iter().any(|c| c.id == config.id) {
                problems.push(format!("provider id {:?} is used twice", config.id));
            }
        }
        for config in configs {
            match Provider::new(config, http.clone()) {
                Ok(p) => providers.push(Arc::new(p)),
                Err(InvalidProvider(mut p)) => problems.append(&mut p),
            }
        }
        if !problems.is_empty() {
            return Err(InvalidProvider(problems));
        }
        providers.sort_by_key(|p| p.config().priority);
        Ok(ProviderSet { providers })
    }

    /// Every provider by priority, disabled ones included.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers.iter()
    }

    /// Enabled providers by priority.
    pub fn enabled(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers.iter().filter(|p| p.config().enabled)
    }
}

/// Routes model calls to providers (see the module doc). Implements [`ModelClient`]: a call
/// goes to the first enabled provider by priority; use [`ModelRouter::select`] or
/// [`ModelRouter::for_session`] to honour a session's choice.
pub struct ModelRouter {
    providers: RwLock<Arc<ProviderSet>>,
    policy: RetryPolicy,
    http: reqwest::Client,
}

impl std::fmt::Debug for ModelRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRouter")
            .field("providers", &self.provider_configs())
            .field("policy", &self.policy)
            .finish()
    }
}

impl ModelRouter {
    /// A router over `configs` with the default [`RetryPolicy`].
    pub fn new(configs: Vec<ProviderConfig>) -> Result<ModelRouter, InvalidProvider> {
        let http = http::client();
        let set = ProviderSet::new(configs, &http)?;
        Ok(ModelRouter {
            providers: RwLock::new(Arc::new(set)),
            policy: RetryPolicy::default(),
            http,
        })
    }

    /// Replaces the retry policy (tests use short delays).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> ModelRouter {
        self.policy = policy;
        self
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Replaces the providers (calls in flight keep the old ones).
    pub fn replace_providers(&self, configs: Vec<ProviderConfig>) -> Result<(), InvalidProvider> {
        let set = Arc::new(ProviderSet::new(configs, &self.http)?);
        *self.providers.write().unwrap_or_else(|e| e.into_inner()) = set;
        Ok(())
    }

    /// The current providers.
    pub fn provider_set(&self) -> Arc<ProviderSet> {
        self.providers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The configurations of all providers by priority (keys included: do not log them
    /// other than through `Debug`, which redacts them).
    pub fn provider_configs(&self) -> Vec<ProviderConfig> {
        self.provider_set()
            .all()
            .map(|p| p.config().clone())
            .collect()
    }

    /// The route of a call: the provider with id `provider_id` if given; else the first
    /// enabled provider of kind `provider` if given; else the first enabled provider. `model`
    /// overrides the chosen provider's model. The other enabled providers follow by priority
    /// as fallbacks.
    ///
    /// Fails with [`LlmError::Unavailable`] when the named provider does not exist or is
    /// disabled, when no enabled provider has the named kind, or when none is enabled.
    pub fn select(
        &self,
        provider_id: Option<&str>,
        provider: Option<&str>,
        model: Option<&str>,
    ) -> Result<Route, LlmError> {
        let set = self.provider_set();
        let chosen = if let Some(id) = provider_id {
            let found = set.all().find(|p| p.config().id == id).ok_or_else(|| {
                LlmError::Unavailable(format!("no model provider with id {id:?}"))
            })?;
            if !found.config().enabled {
                return Err(LlmError::Unavailable(format!(
                    "model provider {id:?} is disabled"
                )));
            }
            found.clone()
        } else if let Some(kind) = provider {
            let kind: ProviderKind =
                kind.parse()
                    .map_err(|e: super::provider::UnknownProviderKind| {
                        LlmError::Unavailable(e.to_string())
                    })?;
            set.enabled()
                .find(|p| p.config().kind == kind)
                .ok_or_else(|| {
                    LlmError::Unavailable(format!("no enabled {kind} model provider is configured"))
                })?
                .clone()
        } else {
            set.enabled()
                .next()
                .ok_or_else(|| LlmError::Unavailable("no model provider is enabled".to_owned()))?
                .clone()
        };
        let mut chain = vec![chosen.clone()];
        chain.extend(set.enabled().filter(|p| !Arc::ptr_eq(p, &chosen)).cloned());
        Ok(Route {
            chain,
            model: model.filter(|m| !m.is_empty()).map(str::to_owned),
            policy: self.policy,
        })
    }

    /// [`ModelRouter::select`] with a session's `provider_id`, `provider` and `model`.
    pub fn for_session(&self, config: &SessionConfig) -> Result<Route, LlmError> {
        self.select(
            config.provider_id.as_deref(),
            config.provider.as_deref(),
            config.model.as_deref(),
        )
    }
}

#[async_trait::async_trait]
impl ModelClient for ModelRouter {
    async fn stream(&self, request: ChatRequest) -> Result<(ModelId, ChatStream), LlmError> {
        self.select(None, None, None)?.stream(request).await
    }
}

/// The providers of one call: the chosen one first, then the fallbacks.
#[derive(Debug, Clone)]
pub struct Route {
    chain: Vec<Arc<Provider>>,
    model: Option<String>,
    policy: RetryPolicy,
}

impl Route {
    /// The provider and model a call will try first.
    pub fn model_id(&self) -> ModelId {
        let first = self.chain[0].config();
        ModelId {
            provider: first.kind.as_str().to_owned(),
            model: self.model.clone().unwrap_or_else(|| first.model.clone()),
        }
    }

    /// The ids of the providers in the order they are tried.
    pub fn provider_ids(&self) -> Vec<String> {
        self.chain.iter().map(|p| p.config().id.clone()).collect()
    }
}

#[async_trait::async_trait]
impl ModelClient for Route {
    async fn stream(&self, request: ChatRequest) -> Result<(ModelId, ChatStream), LlmError> {
        let mut failures: Vec<LlmError> = Vec::new();
        for (position, provider) in self.chain.iter().enumerate() {
            let mut request = request.clone();
            if position == 0 {
                request.model = request
                    .model
                    .filter(|m| !m.is_empty())
                    .or_else(|| self.model.clone());
            } else {
                request.model = None;
            }
            let config = provider.config();
            let mut retry = 0;
            loop {
                let failure = match attempt(provider, &request).await {
                    Ok(started) => return Ok(started),
                    Err(failure) => failure,
                };
                if !failure.error.is_retryable() {
                    tracing::warn!(provider = %config.id, error = %failure.error, "model call failed");
                    return Err(failure.error);
                }
                if retry >= config.max_retries {
                    tracing::warn!(
                        provider = %config.id,
                        attempts = retry + 1,
                        error = %failure.error,
                        "model call failed; retries exhausted"
                    );
                    failures.push(failure.error);
                    break;
                }
                let delay = self.policy.delay(retry, failure.retry_after);
                tracing::info!(
                    provider = %config.id,
                    retry = retry + 1,
                    delay_ms = delay.as_millis() as u64,
                    error = %failure.error,
                    "model call failed; retrying"
                );
                tokio::time::sleep(delay).await;
                retry += 1;
            }
        }
        Err(match failures.len() {
            0 => LlmError::Unavailable("no model provider is enabled".to_owned()),
            1 => failures.remove(0),
            _ => LlmError::Unavailable(format!(
                "every provider failed: {}",
                failures
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        })
    }
}

/// One attempt: starts the call and waits for its first event, so that a stream failing
/// before producing anything counts as a failed attempt.
async fn attempt(
    provider: &Provider,
    request: &ChatRequest,
) -> Result<(ModelId, ChatStream), Failure> {
    let (id, mut stream) = provider.open(request).await?;
    match stream.next().await {
        Some(Ok(first)) => {
            let stream: ChatStream =
                Box::pin(futures::stream::once(async move { Ok(first) }).chain(stream));
            Ok((id, stream))
        }
        Some(Err(error)) => Err(Failure::from(error)),
        None => Err(Failure::from(LlmError::Protocol {
            provider: provider.config().id.clone(),
            message: "the answer ended without any event".to_owned(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mock(id: &str, priority: i32) -> ProviderConfig {
        ProviderConfig::new(id, ProviderKind::Mock, format!("{id}-model")).with_priority(priority)
    }

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after_capped() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(5),
        };
        for _ in 0..100 {
            let d0 = p.delay(0, None);
            assert!(
                d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100),
                "{d0:?}"
            );
            let d2 = p.delay(2, None);
            assert!(
                d2 >= Duration::from_millis(200) && d2 <= Duration::from_millis(400),
                "{d2:?}"
            );
            let d9 = p.delay(60, None);
            assert!(
                d9 >= Duration::from_millis(500) && d9 <= Duration::from_millis(1000),
                "{d9:?}"
            );
        }
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(600))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn selection_follows_session_choice_then_priority() {
        let router = ModelRouter::new(vec![
            mock("b", 2),
            mock("a", 1),
            mock("off", 0).with_enabled(false),
            ProviderConfig::new("o", ProviderKind::OpenAi, "gpt-4o")
                .with_api_key("k")
                .with_priority(3),
        ])
        .unwrap();
        let route = router.select(None, None, None).unwrap();
        assert_eq!(route.provider_ids(), ["a", "b", "o"]);
        assert_eq!(route.model_id().model, "a-model");
        let route = router.select(Some("b"), None, Some("other")).unwrap();
        assert_eq!(route.provider_ids(), ["b", "a", "o"]);
        assert_eq!(route.model_id().model, "other");
        let route = router
            .select(None, Some("openai"), Some("gpt-4.1"))
            .unwrap();
        assert_eq!(route.provider_ids(), ["o", "a", "b"]);
        assert_eq!(
            route.model_id(),
            ModelId {
                provider: "openai".into(),
                model: "gpt-4.1".into()
            }
        );
        assert!(matches!(
            router.select(Some("off"), None, None),
            Err(LlmError::Unavailable(_))
        ));
        assert!(matches!(
            router.select(Some("zz"), None, None),
            Err(LlmError::Unavailable(_))
        ));
        assert!(matches!(
            router.select(None, Some("anthropic"), None),
            Err(LlmError::Unavailable(_))
        ));
        assert!(matches!(
            router.select(None, Some("bogus"), None),
            Err(LlmError::Unavailable(_))
        ));

        let session = SessionConfig {
            provider: Some("mock".into()),
            model: Some("m2".into()),
            ..SessionConfig::default()
        };
        let route = router.for_session(&session).unwrap();
        assert_eq!(route.provider_ids()[0], "a");
        assert_eq!(route.model_id().model, "m2");
    }

    #[test]
    fn invalid_sets_report_every_problem() {
        let err = ModelRouter::new(vec![
            mock("a", 0),
            mock("a", 1),
            ProviderConfig::new("c", ProviderKind::OpenAiCompatible, "llama"),
        ])
        .unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        let router = ModelRouter::new(vec![]).unwrap();
        assert!(matches!(
            router.select(None, None, None),
            Err(LlmError::Unavailable(_))
        ));
        router.replace_providers(vec![mock("x", 0)]).unwrap();
        assert_eq!(
            router.select(None, None, None).unwrap().provider_ids(),
            ["x"]
        );
    }

    #[tokio::test]
    async fn router_streams_from_the_first_provider() {
        let router = ModelRouter::new(vec![mock("a", 0)]).unwrap();
        let request = ChatRequest {
            system: None,
            messages: vec![super::super::ChatMessage::User {
                content: "ping".into(),
            }],
            tools: Vec::new(),
            model: Some("override".into()),
            temperature: None,
            max_tokens: None,
        };
        let (id, stream) = router.stream(request).await.unwrap();
        assert_eq!(id.model, "override");
        let events: Vec<_> = stream.collect().await;
        assert!(
            matches!(&events[0], Ok(super::super::ChatEvent::TextDelta(t)) if t == "ping"),
            "{events:?}"
        );
        assert_eq!(events.len(), 2);
    }
}
