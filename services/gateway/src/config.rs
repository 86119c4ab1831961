//! Gateway configuration, read from `COGNITION_*` environment variables.

use serde::{Deserialize, Deserializer};

/// Settings of the gateway. Every field has a default, so an empty environment works.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `COGNITION_HOST`: address to bind (default `127.0.0.1`).
    pub host: String,
    /// `COGNITION_PORT`: HTTP port (default `8000`).
    pub port: u16,
    /// `COGNITION_SESSION_URL`: gRPC address of the session service (default `http://127.0.0.1:50051`).
    pub session_url: String,
    /// `COGNITION_SCOPING_ENABLED`: require `X-Cognition-Scope-<Key>` headers (default `false`).
    pub scoping_enabled: bool,
    /// `COGNITION_SCOPE_KEYS`: scope keys, `user,org` or `["user","org"]` (default `["user"]`).
    #[serde(deserialize_with = "list")]
    pub scope_keys: Vec<String>,
    /// `COGNITION_CORS_ORIGINS`: allowed origins, `*` for any (default `*`).
    #[serde(deserialize_with = "list")]
    pub cors_origins: Vec<String>,
    /// `COGNITION_MAX_BODY_BYTES`: largest accepted request body (default 1 MiB).
    pub max_body_bytes: usize,
    /// `COGNITION_UPSTREAM_TIMEOUT_MS`: deadline of unary calls to the session service (default 10 s).
    pub upstream_timeout_ms: u64,
    /// `COGNITION_HEALTH_TIMEOUT_MS`: deadline of the health check behind `/health` and `/ready`
    /// (default 1 s).
    pub health_timeout_ms: u64,
    /// `COGNITION_SSE_KEEPALIVE_MS`: longest silence on an SSE stream before a `: keepalive`
    /// comment (default 15 s).
    pub sse_keepalive_ms: u64,
    /// `COGNITION_METRICS_PORT`: Prometheus `/metrics` port on all interfaces; `0` (default) =
    /// no metrics. In one process (`cognition up`) the first service to start serves them all.
    pub metrics_port: u16,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8000,
            session_url: "http://127.0.0.1:50051".into(),
            scoping_enabled: false,
            scope_keys: vec!["user".into()],
            cors_origins: vec!["*".into()],
            max_body_bytes: 1024 * 1024,
            upstream_timeout_ms: 10_000,
            health_timeout_ms: 1_000,
            sse_keepalive_ms: 15_000,
            metrics_port: 0,
        }
    }
}

/// Accepts `a,b` and `["a","b"]` (from the environment) as well as a real sequence.
fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        List(Vec<String>),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::Text(s) => cognition_config::parse_list(&s),
        Raw::List(v) => v
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
    })
}

fn valid_scope_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl cognition_config::Validate for Config {
    fn validate(&self, problems: &mut Vec<String>) {
        if self.host.trim().is_empty() {
            problems.push("COGNITION_HOST must not be empty".into());
        }
        if !self.session_url.starts_with("http://") {
            problems.push(format!(
                "COGNITION_SESSION_URL={:?} must be an http:// URL (the internal hop is plaintext HTTP/2)",
                self.session_url
            ));
        } else if self.session_url.parse::<http::Uri>().is_err() {
            problems.push(format!(
                "COGNITION_SESSION_URL={:?} is not a valid URL",
                self.session_url
            ));
        }
        if self.scoping_enabled && self.scope_keys.is_empty() {
            problems.push("COGNITION_SCOPE_KEYS must name at least one key when COGNITION_SCOPING_ENABLED=true".into());
        }
        for key in &self.scope_keys {
            if !valid_scope_key(key) {
                problems.push(format!(
                    "COGNITION_SCOPE_KEYS: {key:?} is not a valid key (letters, digits, '-' and '_' only)"
                ));
            }
        }
        if self.cors_origins.is_empty() {
            problems.push("COGNITION_CORS_ORIGINS must not be empty (use * for any origin)".into());
        }
        for origin in &self.cors_origins {
            if origin != "*" && http::HeaderValue::from_str(origin).is_err() {
                problems.push(format!(
                    "COGNITION_CORS_ORIGINS: {origin:?} is not a valid origin"
                ));
            }
        }
        if self.cors_origins.len() > 1 && self.cors_origins.iter().any(|o| o == "*") {
            problems.push("COGNITION_CORS_ORIGINS: * cannot be combined with other origins".into());
        }
        if self.max_body_bytes == 0 {
            problems.push("COGNITION_MAX_BODY_BYTES must be greater than 0".into());
        }
        if self.upstream_timeout_ms == 0 {
            problems.push("COGNITION_UPSTREAM_TIMEOUT_MS must be greater than 0".into());
        }
        if self.health_timeout_ms == 0 {
            problems.push("COGNITION_HEALTH_TIMEOUT_MS must be greater than 0".into());
        }
        if self.sse_keepalive_ms == 0 {
            problems.push("COGNITION_SSE_KEEPALIVE_MS must be greater than 0".into());
        }
    }
}

impl Config {
    /// `host:port`, the address `main` binds.
    pub fn bind_address(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(list: &[(&str, &str)]) -> Result<Config, cognition_config::ConfigError> {
        cognition_config::load(list.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 8000);
        assert_eq!(c.session_url, "http://127.0.0.1:50051");
        assert!(!c.scoping_enabled);
        assert_eq!(c.scope_keys, vec!["user"]);
        assert_eq!(c.cors_origins, vec!["*"]);
        assert_eq!(c.max_body_bytes, 1024 * 1024);
        assert_eq!(c.bind_address(), "127.0.0.1:8000");
    }

    #[test]
    fn lists_in_both_forms() {
        let c = load(&[
            ("COGNITION_SCOPE_KEYS", "user,org"),
            ("COGNITION_SCOPING_ENABLED", "true"),
        ])
        .unwrap();
        assert_eq!(c.scope_keys, vec!["user", "org"]);
        assert!(c.scoping_enabled);
        let c = load(&[("COGNITION_SCOPE_KEYS", r#"["user", "org"]"#)]).unwrap();
        assert_eq!(c.scope_keys, vec!["user", "org"]);
        let c = load(&[("COGNITION_CORS_ORIGINS", "http://a.test, http://b.test")]).unwrap();
        assert_eq!(c.cors_origins, vec!["http://a.test", "http://b.test"]);
    }

    #[test]
    fn reports_every_problem() {
        let err = load(&[
            ("COGNITION_PORT", "http"),
            ("COGNITION_SESSION_URL", "localhost:50051"),
            ("COGNITION_MAX_BODY_BYTES", "0"),
            ("COGNITION_SCOPE_KEYS", "us er"),
        ])
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "COGNITION_PORT",
            "COGNITION_SESSION_URL",
            "COGNITION_MAX_BODY_BYTES",
            "COGNITION_SCOPE_KEYS",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }

    #[test]
    fn ipv6_bind_address() {
        let c = Config {
            host: "::1".into(),
            port: 9,
            ..Config::default()
        };
        assert_eq!(c.bind_address(), "[::1]:9");
    }
}
