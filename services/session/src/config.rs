//! Configuration of the session service, read from `COGNITION_*` environment variables.
//!
//! Load it with `cognition_config::load::<Config>(vars)` (or `from_env`); every field has a
//! default, so the embedded setup needs no variable at all.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use cognition_config::Secret;
use serde::{Deserialize, Deserializer};

use crate::llm::ProviderKind;

/// Default number of database connections (PostgreSQL pool, SQLite reader pool).
pub const DEFAULT_DB_MAX_CONNECTIONS: u32 = 8;

/// Which database holds the session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PersistenceBackend {
    /// A SQLite file under the data dir (embedded default).
    #[default]
    Sqlite,
    /// A PostgreSQL server (`COGNITION_PERSISTENCE_URI` required).
    Postgres,
}

/// Settings of the session service.
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `COGNITION_SESSION_ADDR`: where the gRPC server listens (used by `main` only).
    #[serde(rename = "session_addr")]
    pub addr: SocketAddr,
    /// `COGNITION_DATA_DIR`: directory for the SQLite file (created when missing).
    pub data_dir: PathBuf,
    /// `COGNITION_PERSISTENCE_BACKEND`: `sqlite` (default) or `postgres`.
    pub persistence_backend: PersistenceBackend,
    /// `COGNITION_PERSISTENCE_URI`: database URL. SQLite defaults to
    /// `sqlite://<data_dir>/cognition.db?mode=rwc`; PostgreSQL requires it.
    pub persistence_uri: Option<String>,
    /// `COGNITION_EXECUTOR_URL`: the executor's gRPC URL (a pool of one); unset, with
    /// `COGNITION_EXECUTOR_URLS` unset too, means no executor (the sandbox tools then say so).
    pub executor_url: Option<String>,
    /// `COGNITION_EXECUTOR_URLS`: several executor replicas, comma-separated (or `["a","b"]`),
    /// behind one pool (see [`crate::executor_pool`]). Setting both variables is an error.
    #[serde(deserialize_with = "deserialize_list")]
    pub executor_urls: Vec<String>,
    /// `COGNITION_SCOPING_ENABLED`: require the caller's scope on every call.
    pub scoping_enabled: bool,
    /// `COGNITION_SCOPE_KEYS`: scope keys, `user,org` or `["user","org"]` (default `user`).
    #[serde(deserialize_with = "deserialize_list")]
    pub scope_keys: Vec<String>,
    /// `COGNITION_DB_MAX_CONNECTIONS`: PostgreSQL pool size, and SQLite reader pool size.
    pub db_max_connections: u32,
    /// `COGNITION_LLM_PROVIDER`: the default model provider, `openai`, `anthropic`,
    /// `openai_compatible` or `mock` (default: `mock`, a scripted echo model that needs no
    /// key; see [`crate::llm::router_from_config`]).
    pub llm_provider: ProviderKind,
    /// `COGNITION_LLM_MODEL`: the default model (default per provider: see
    /// [`crate::llm::default_model`]; required for `openai_compatible`).
    pub llm_model: Option<String>,
    /// `COGNITION_LLM_BASE_URL`: the provider's base URL (required for `openai_compatible`,
    /// e.g. `http://localhost:11434/v1`; optional for `openai` and `anthropic`).
    pub llm_base_url: Option<String>,
    /// `COGNITION_LLM_MAX_RETRIES`: retries on 429/5xx/connection errors (default 2).
    pub llm_max_retries: u32,
    /// `COGNITION_LLM_API_KEY`: the provider's key; wins over `OPENAI_API_KEY` /
    /// `ANTHROPIC_API_KEY`.
    pub llm_api_key: Option<Secret>,
    // --- agent runs (see `crate::run`) ---
    /// `COGNITION_REPLICA_ID`: this replica's name as the owner of run leases (default: a
    /// random id per start, so a restarted replica never mistakes old runs for its own).
    pub replica_id: Option<String>,
    /// `COGNITION_RUN_LEASE_MS`: how long a run's lease lasts without a heartbeat; after that
    /// another replica closes the run as interrupted.
    pub run_lease_ms: u64,
    /// `COGNITION_RUN_HEARTBEAT_MS`: how often the owner renews its runs' leases (and polls
    /// for cancel requests from other replicas).
    pub run_heartbeat_ms: u64,
    /// `COGNITION_RUN_SWEEP_MS`: how often every replica looks for expired leases and for
    /// queued runs that nobody started.
    pub run_sweep_ms: u64,
    /// `COGNITION_RECURSION_LIMIT`: model calls per turn when the session config sets none.
    pub recursion_limit: u32,
    /// `COGNITION_TOOL_OUTPUT_MAX_CHARS`: longest tool output the model sees (then truncated
    /// with a note).
    pub tool_output_max_chars: usize,
    /// `COGNITION_TOOL_TIMEOUT_SECS`: `execute` timeout when the model gives none.
    pub tool_timeout_secs: u64,
    /// `COGNITION_CALLBACK_SECRET`: HMAC-SHA256 key of callback signatures (unset: unsigned).
    pub callback_secret: Option<Secret>,
    /// `COGNITION_CALLBACK_ALLOW_PRIVATE`: allow callbacks to loopback/private addresses.
    pub callback_allow_private: bool,
    /// `COGNITION_CALLBACK_MAX_ATTEMPTS`: delivery attempts per callback.
    pub callback_max_attempts: u32,
    /// `COGNITION_CALLBACK_BACKOFF_MS`: delay before the second attempt (doubles after).
    pub callback_backoff_ms: u64,
    /// `COGNITION_METRICS_PORT`: Prometheus `/metrics` port on all interfaces; `0` (default) =
    /// no metrics. In one process (`cognition up`) the first service to start serves them all.
    pub metrics_port: u16,
}

fn deserialize_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let raw = String::deserialize(d)?;
    Ok(cognition_config::parse_list(&raw))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 50051)),
            data_dir: PathBuf::from("./.cognition"),
            persistence_backend: PersistenceBackend::Sqlite,
            persistence_uri: None,
            executor_url: None,
            executor_urls: Vec::new(),
            scoping_enabled: false,
            scope_keys: vec!["user".to_owned()],
            db_max_connections: DEFAULT_DB_MAX_CONNECTIONS,
            llm_provider: ProviderKind::Mock,
            llm_model: None,
            llm_base_url: None,
            llm_max_retries: crate::llm::DEFAULT_MAX_RETRIES,
            llm_api_key: None,
            replica_id: None,
            run_lease_ms: 10_000,
            run_heartbeat_ms: 2_000,
            run_sweep_ms: 2_000,
            recursion_limit: 25,
            tool_output_max_chars: 30_000,
            tool_timeout_secs: 120,
            callback_secret: None,
            callback_allow_private: false,
            callback_max_attempts: 3,
            callback_backoff_ms: 500,
            metrics_port: 0,
        }
    }
}

impl Config {
    /// The embedded setup: SQLite under `data_dir`, no executor, no scoping.
    pub fn embedded(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            ..Config::default()
        }
    }

    /// The database URL actually used: `persistence_uri`, or the SQLite default under
    /// `data_dir`. `None` only for PostgreSQL without a URI (a validation problem).
    pub fn database_url(&self) -> Option<String> {
        match (&self.persistence_uri, self.persistence_backend) {
            (Some(uri), _) => Some(uri.clone()),
            (None, PersistenceBackend::Sqlite) => {
                let path = self.data_dir.join("cognition.db").display().to_string();
                // sqlx percent-decodes the path; escape what would end it or change it.
                let path = path
                    .replace('%', "%25")
                    .replace('?', "%3F")
                    .replace('#', "%23");
                Some(format!("sqlite://{path}?mode=rwc"))
            }
            (None, PersistenceBackend::Postgres) => None,
        }
    }
}

impl cognition_config::Validate for Config {
    fn validate(&self, problems: &mut Vec<String>) {
        match (self.persistence_backend, self.persistence_uri.as_deref()) {
            (PersistenceBackend::Postgres, None) => problems.push(
                "COGNITION_PERSISTENCE_URI is required when COGNITION_PERSISTENCE_BACKEND=postgres"
                    .to_owned(),
            ),
            (PersistenceBackend::Postgres, Some(uri))
                if !(uri.starts_with("postgres://") || uri.starts_with("postgresql://")) =>
            {
                problems.push(format!(
                    "COGNITION_PERSISTENCE_URI={:?} must start with postgres:// or postgresql:// \
                     when COGNITION_PERSISTENCE_BACKEND=postgres",
                    redact_uri(uri)
                ));
            }
            (PersistenceBackend::Sqlite, Some(uri)) if !uri.starts_with("sqlite:") => {
                problems.push(format!(
                    "COGNITION_PERSISTENCE_URI={:?} must start with sqlite: when \
                     COGNITION_PERSISTENCE_BACKEND=sqlite",
                    redact_uri(uri)
                ));
            }
            _ => {}
        }
        self.validate_executors(problems);
        if self.scope_keys.is_empty() && self.scoping_enabled {
            problems.push(
                "COGNITION_SCOPE_KEYS must name at least one key when COGNITION_SCOPING_ENABLED=true"
                    .to_owned(),
            );
        }
        for key in &self.scope_keys {
            if !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                problems.push(format!(
                    "COGNITION_SCOPE_KEYS: {key:?} may only contain ASCII letters, digits, '_' and '-'"
                ));
            }
        }
        if self.db_max_connections == 0 {
            problems.push("COGNITION_DB_MAX_CONNECTIONS must be at least 1".to_owned());
        }
        self.validate_runs(problems);
        self.validate_llm(problems);
    }
}

impl Config {
    /// The executor replicas to use: `COGNITION_EXECUTOR_URLS`, else `COGNITION_EXECUTOR_URL`
    /// as a pool of one, else none.
    pub fn executor_urls(&self) -> Vec<String> {
        if self.executor_urls.is_empty() {
            self.executor_url.iter().cloned().collect()
        } else {
            self.executor_urls.clone()
        }
    }

    fn validate_executors(&self, problems: &mut Vec<String>) {
        if self.executor_url.is_some() && !self.executor_urls.is_empty() {
            problems.push(
                "set either COGNITION_EXECUTOR_URL (one executor) or COGNITION_EXECUTOR_URLS \
                 (several), not both"
                    .to_owned(),
            );
        }
        if let Some(url) = &self.executor_url
            && let Some(problem) = executor_url_problem(url)
        {
            problems.push(format!("COGNITION_EXECUTOR_URL={url:?} {problem}"));
        }
        for (i, url) in self.executor_urls.iter().enumerate() {
            if let Some(problem) = executor_url_problem(url) {
                problems.push(format!("COGNITION_EXECUTOR_URLS: {url:?} {problem}"));
            } else if self.executor_urls[..i].contains(url) {
                problems.push(format!("COGNITION_EXECUTOR_URLS: {url:?} is listed twice"));
            }
        }
    }

    fn validate_runs(&self, problems: &mut Vec<String>) {
        if self.run_heartbeat_ms == 0 || self.run_heartbeat_ms >= self.run_lease_ms {
            problems.push(format!(
                "COGNITION_RUN_HEARTBEAT_MS ({}) must be at least 1 and below \
                 COGNITION_RUN_LEASE_MS ({})",
                self.run_heartbeat_ms, self.run_lease_ms
            ));
        }
        if self.run_sweep_ms == 0 {
            problems.push("COGNITION_RUN_SWEEP_MS must be at least 1".to_owned());
        }
        if self.recursion_limit == 0 {
            problems.push("COGNITION_RECURSION_LIMIT must be at least 1".to_owned());
        }
        if self.tool_output_max_chars < 100 {
            problems.push("COGNITION_TOOL_OUTPUT_MAX_CHARS must be at least 100".to_owned());
        }
        if self.tool_timeout_secs == 0 {
            problems.push("COGNITION_TOOL_TIMEOUT_SECS must be at least 1".to_owned());
        }
        if self.callback_max_attempts == 0 {
            problems.push("COGNITION_CALLBACK_MAX_ATTEMPTS must be at least 1".to_owned());
        }
        if let Some(id) = &self.replica_id
            && (id.is_empty() || id.len() > 200)
        {
            problems.push("COGNITION_REPLICA_ID must have 1 to 200 characters".to_owned());
        }
    }
}

/// The most retries `COGNITION_LLM_MAX_RETRIES` accepts.
pub const MAX_LLM_RETRIES: u32 = 10;

impl Config {
    fn validate_llm(&self, problems: &mut Vec<String>) {
        if let Some(url) = &self.llm_base_url
            && !crate::llm::is_http_url(url)
        {
            problems.push(format!(
                "COGNITION_LLM_BASE_URL={:?} must be an http(s) URL",
                redact_uri(url)
            ));
        }
        if self.llm_provider == ProviderKind::OpenAiCompatible {
            if self.llm_base_url.is_none() {
                problems.push(
                    "COGNITION_LLM_BASE_URL is required when COGNITION_LLM_PROVIDER=openai_compatible \
                     (e.g. http://localhost:11434/v1 for Ollama)"
                        .to_owned(),
                );
            }
            if self
                .llm_model
                .as_deref()
                .is_none_or(|m| m.trim().is_empty())
            {
                problems.push(
                    "COGNITION_LLM_MODEL is required when COGNITION_LLM_PROVIDER=openai_compatible"
                        .to_owned(),
                );
            }
        }
        if self
            .llm_model
            .as_deref()
            .is_some_and(|m| m.trim().is_empty())
        {
            problems.push("COGNITION_LLM_MODEL must not be empty".to_owned());
        }
        if self.llm_max_retries > MAX_LLM_RETRIES {
            problems.push(format!(
                "COGNITION_LLM_MAX_RETRIES must be at most {MAX_LLM_RETRIES}"
            ));
        }
    }
}

/// Why `url` cannot be an executor's gRPC endpoint, if it cannot.
fn executor_url_problem(url: &str) -> Option<&'static str> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Some("must be an http(s) URL");
    }
    match tonic::transport::Endpoint::from_shared(url.to_owned()) {
        Ok(endpoint) if endpoint.uri().host().is_some_and(|h| !h.is_empty()) => None,
        _ => Some("is not a valid URL (expected e.g. http://127.0.0.1:50052)"),
    }
}

/// Hides the password of a database URL (`postgres://user:***@host/db`).
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => uri.to_owned(),
        },
        None => uri.to_owned(),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .field("persistence_backend", &self.persistence_backend)
            .field(
                "persistence_uri",
                &self.persistence_uri.as_deref().map(redact_uri),
            )
            .field("executor_url", &self.executor_url)
            .field("executor_urls", &self.executor_urls)
            .field("scoping_enabled", &self.scoping_enabled)
            .field("scope_keys", &self.scope_keys)
            .field("db_max_connections", &self.db_max_connections)
            .field("llm_provider", &self.llm_provider)
            .field("llm_model", &self.llm_model)
            .field(
                "llm_base_url",
                &self.llm_base_url.as_deref().map(redact_uri),
            )
            .field("llm_max_retries", &self.llm_max_retries)
            .field("llm_api_key", &self.llm_api_key)
            .field("replica_id", &self.replica_id)
            .field("run_lease_ms", &self.run_lease_ms)
            .field("run_heartbeat_ms", &self.run_heartbeat_ms)
            .field("run_sweep_ms", &self.run_sweep_ms)
            .field("recursion_limit", &self.recursion_limit)
            .field("tool_output_max_chars", &self.tool_output_max_chars)
            .field("tool_timeout_secs", &self.tool_timeout_secs)
            .field("callback_secret", &self.callback_secret)
            .field("callback_allow_private", &self.callback_allow_private)
            .field("callback_max_attempts", &self.callback_max_attempts)
            .field("callback_backoff_ms", &self.callback_backoff_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(list: &[(&str, &str)]) -> Result<Config, cognition_config::ConfigError> {
        cognition_config::load(list.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_without_variables() {
        let c = load(&[]).unwrap();
        assert_eq!(c.addr, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(c.persistence_backend, PersistenceBackend::Sqlite);
        assert_eq!(c.scope_keys, vec!["user"]);
        assert!(!c.scoping_enabled);
        assert_eq!(c.executor_url, None);
        assert_eq!(
            c.database_url().unwrap(),
            "sqlite://./.cognition/cognition.db?mode=rwc"
        );
    }

    #[test]
    fn reads_every_variable() {
        let c = load(&[
            ("COGNITION_SESSION_ADDR", "0.0.0.0:6000"),
            ("COGNITION_DATA_DIR", "/var/lib/cognition"),
            ("COGNITION_PERSISTENCE_BACKEND", "postgres"),
            (
                "COGNITION_PERSISTENCE_URI",
                "postgresql://u:pw@db:5432/cognition",
            ),
            ("COGNITION_EXECUTOR_URL", "http://127.0.0.1:50052"),
            ("COGNITION_SCOPING_ENABLED", "true"),
            ("COGNITION_SCOPE_KEYS", r#"["user","org"]"#),
            ("COGNITION_DB_MAX_CONNECTIONS", "20"),
        ])
        .unwrap();
        assert_eq!(c.addr.port(), 6000);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/cognition"));
        assert_eq!(c.persistence_backend, PersistenceBackend::Postgres);
        assert_eq!(c.executor_url.as_deref(), Some("http://127.0.0.1:50052"));
        assert!(c.scoping_enabled);
        assert_eq!(c.scope_keys, vec!["user", "org"]);
        assert_eq!(c.db_max_connections, 20);
        let debug = format!("{c:?}");
        assert!(!debug.contains("pw"), "{debug}");
    }

    #[test]
    fn run_settings_are_read_and_checked() {
        let c = load(&[
            ("COGNITION_RUN_LEASE_MS", "3000"),
            ("COGNITION_RUN_HEARTBEAT_MS", "500"),
            ("COGNITION_CALLBACK_SECRET", "s3cret"),
            ("COGNITION_CALLBACK_ALLOW_PRIVATE", "true"),
            ("COGNITION_RECURSION_LIMIT", "7"),
        ])
        .unwrap();
        assert_eq!((c.run_lease_ms, c.run_heartbeat_ms), (3000, 500));
        assert_eq!(c.recursion_limit, 7);
        assert!(c.callback_allow_private);
        assert!(!format!("{c:?}").contains("s3cret"));
        let err = load(&[
            ("COGNITION_RUN_LEASE_MS", "1000"),
            ("COGNITION_RUN_HEARTBEAT_MS", "1000"),
            ("COGNITION_RECURSION_LIMIT", "0"),
        ])
        .unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
    }

    #[test]
    fn one_executor_url_is_a_pool_of_one_and_a_list_is_a_pool() {
        assert!(load(&[]).unwrap().executor_urls().is_empty());
        let one = load(&[("COGNITION_EXECUTOR_URL", "http://127.0.0.1:50052")]).unwrap();
        assert_eq!(one.executor_urls(), vec!["http://127.0.0.1:50052"]);
        let many = load(&[(
            "COGNITION_EXECUTOR_URLS",
            "http://10.0.0.1:50052, http://10.0.0.2:50052",
        )])
        .unwrap();
        assert_eq!(many.executor_url, None);
        assert_eq!(
            many.executor_urls(),
            vec!["http://10.0.0.1:50052", "http://10.0.0.2:50052"]
        );
    }

    #[test]
    fn executor_url_problems_are_reported_together() {
        let err = load(&[
            ("COGNITION_EXECUTOR_URL", "http://127.0.0.1:50052"),
            (
                "COGNITION_EXECUTOR_URLS",
                "http://a:1,localhost:50052,http://a:1,http://",
            ),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 4, "{text}");
        assert!(text.contains("not both"), "{text}");
        assert!(
            text.contains("\"localhost:50052\" must be an http(s) URL"),
            "{text}"
        );
        assert!(text.contains("\"http://a:1\" is listed twice"), "{text}");
        assert!(text.contains("\"http://\" is not a valid URL"), "{text}");
    }

    #[test]
    fn comma_separated_scope_keys() {
        let c = load(&[("COGNITION_SCOPE_KEYS", "user, org")]).unwrap();
        assert_eq!(c.scope_keys, vec!["user", "org"]);
    }

    #[test]
    fn sqlite_default_uri_follows_data_dir() {
        let c = load(&[("COGNITION_DATA_DIR", "/tmp/x")]).unwrap();
        assert_eq!(
            c.database_url().unwrap(),
            "sqlite:///tmp/x/cognition.db?mode=rwc"
        );
    }

    #[test]
    fn sqlite_default_uri_escapes_odd_paths() {
        let c = Config::embedded(PathBuf::from("/tmp/a?b#c%d"));
        let url = c.database_url().unwrap();
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        assert_eq!(
            options.get_filename(),
            std::path::Path::new("/tmp/a?b#c%d/cognition.db")
        );
    }

    #[test]
    fn postgres_requires_a_uri_and_every_problem_is_reported() {
        let err = load(&[
            ("COGNITION_PERSISTENCE_BACKEND", "postgres"),
            ("COGNITION_DB_MAX_CONNECTIONS", "0"),
            ("COGNITION_EXECUTOR_URL", "localhost:50052"),
        ])
        .unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        let text = err.to_string();
        assert!(text.contains("COGNITION_PERSISTENCE_URI"), "{text}");
        assert!(text.contains("COGNITION_EXECUTOR_URL"), "{text}");
    }

    #[test]
    fn postgres_accepts_both_schemes_and_rejects_others() {
        for uri in ["postgres://h/db", "postgresql://h/db"] {
            load(&[
                ("COGNITION_PERSISTENCE_BACKEND", "postgres"),
                ("COGNITION_PERSISTENCE_URI", uri),
            ])
            .unwrap();
        }
        let err = load(&[
            ("COGNITION_PERSISTENCE_BACKEND", "postgres"),
            ("COGNITION_PERSISTENCE_URI", "mysql://u:secret@h/db"),
        ])
        .unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn unknown_backend_is_reported() {
        let err = load(&[("COGNITION_PERSISTENCE_BACKEND", "oracle")]).unwrap_err();
        assert!(
            err.to_string().contains("COGNITION_PERSISTENCE_BACKEND"),
            "{err}"
        );
    }

    #[test]
    fn llm_defaults_to_the_mock_provider() {
        let c = load(&[]).unwrap();
        assert_eq!(c.llm_provider, ProviderKind::Mock);
        assert_eq!(c.llm_max_retries, 2);
        assert_eq!(c.llm_model, None);
        assert_eq!(c.llm_api_key, None);
    }

    #[test]
    fn reads_llm_variables_and_hides_the_key() {
        let c = load(&[
            ("COGNITION_LLM_PROVIDER", "openai_compatible"),
            ("COGNITION_LLM_MODEL", "llama3.1"),
            ("COGNITION_LLM_BASE_URL", "http://localhost:11434/v1"),
            ("COGNITION_LLM_MAX_RETRIES", "4"),
            ("COGNITION_LLM_API_KEY", "sk-very-secret"),
        ])
        .unwrap();
        assert_eq!(c.llm_provider, ProviderKind::OpenAiCompatible);
        assert_eq!(c.llm_model.as_deref(), Some("llama3.1"));
        assert_eq!(c.llm_base_url.as_deref(), Some("http://localhost:11434/v1"));
        assert_eq!(c.llm_max_retries, 4);
        assert_eq!(
            c.llm_api_key.as_ref().map(|k| k.expose()),
            Some("sk-very-secret")
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("sk-very-secret"), "{debug}");
        for kind in ["openai", "anthropic", "mock"] {
            let c = load(&[("COGNITION_LLM_PROVIDER", kind)]).unwrap();
            assert_eq!(c.llm_provider.as_str(), kind);
        }
    }

    #[test]
    fn llm_rules_are_reported_together() {
        let err = load(&[
            ("COGNITION_LLM_PROVIDER", "openai_compatible"),
            ("COGNITION_LLM_MAX_RETRIES", "11"),
        ])
        .unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("COGNITION_LLM_BASE_URL is required"),
            "{text}"
        );
        assert!(text.contains("COGNITION_LLM_MODEL is required"), "{text}");
        let err = load(&[
            ("COGNITION_LLM_PROVIDER", "gemini"),
            ("COGNITION_LLM_BASE_URL", "localhost:11434"),
        ])
        .unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        let text = err.to_string();
        assert!(text.contains("COGNITION_LLM_PROVIDER"), "{text}");
        assert!(text.contains("must be an http(s) URL"), "{text}");
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_uri("postgres://u:pw@h:1/db?x=1"),
            "postgres://u:***@h:1/db?x=1"
        );
        assert_eq!(redact_uri("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_uri("sqlite://./x.db"), "sqlite://./x.db");
    }
}
