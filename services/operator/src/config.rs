//! The operator's configuration, from `COGNITION_OPERATOR_*` environment variables (loaded with
//! [`cognition_config::load`], so every problem is reported at once).

use serde::Deserialize;

use crate::names;

/// The server image used when `COGNITION_OPERATOR_SERVER_IMAGE` is unset.
pub const DEFAULT_SERVER_IMAGE: &str = "ghcr.io/cognition-platform/cognition:latest";

/// Operator settings shared by every tenant.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `COGNITION_OPERATOR_SERVER_IMAGE`: the all-in-one `cognition` image each tenant's server
    /// runs (its entrypoint is the `cognition` binary; the operator passes `up`).
    #[serde(rename = "operator_server_image")]
    pub server_image: String,
    /// `COGNITION_OPERATOR_DOMAIN`: tenants are served at `<tenant>.<domain>`. Empty: no
    /// Ingress is created.
    #[serde(rename = "operator_domain")]
    pub domain: String,
    /// `COGNITION_OPERATOR_TLS_SECRET`: TLS Secret named by each tenant Ingress (it must exist
    /// in the tenant namespace, or the ingress controller must have a default certificate).
    /// Empty: plain HTTP.
    #[serde(rename = "operator_tls_secret")]
    pub tls_secret: String,
    /// `COGNITION_OPERATOR_STORAGE_CLASS`: StorageClass of the workspace PVC. Empty: the
    /// cluster's default class.
    #[serde(rename = "operator_storage_class")]
    pub storage_class: String,
    /// `COGNITION_OPERATOR_WATCH_NAMESPACE`: only CognitionTenants of this namespace are
    /// reconciled. Empty: every namespace.
    #[serde(rename = "operator_watch_namespace")]
    pub watch_namespace: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_image: DEFAULT_SERVER_IMAGE.into(),
            domain: String::new(),
            tls_secret: String::new(),
            storage_class: String::new(),
            watch_namespace: String::new(),
        }
    }
}

impl cognition_config::Validate for Config {
    fn validate(&self, problems: &mut Vec<String>) {
        if self.server_image.trim().is_empty() {
            problems.push("COGNITION_OPERATOR_SERVER_IMAGE must not be empty".into());
        }
        let mut check = |var: &str, value: &str, rule: fn(&str) -> Result<(), String>| {
            if !value.is_empty()
                && let Err(reason) = rule(value)
            {
                problems.push(format!("COGNITION_OPERATOR_{var}: {reason}"));
            }
        };
        check("DOMAIN", &self.domain, names::dns_subdomain);
        check("TLS_SECRET", &self.tls_secret, names::dns_subdomain);
        check("STORAGE_CLASS", &self.storage_class, names::dns_subdomain);
        check("WATCH_NAMESPACE", &self.watch_namespace, names::dns_label);
        if !self.tls_secret.is_empty() && self.domain.is_empty() {
            problems.push(
                "COGNITION_OPERATOR_TLS_SECRET is set but COGNITION_OPERATOR_DOMAIN is empty \
                 (no Ingress would use it); set the domain or unset the secret"
                    .into(),
            );
        }
    }
}

impl Config {
    /// Loads the configuration from `COGNITION_OPERATOR_*` in `vars`.
    pub fn load(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, cognition_config::ConfigError> {
        cognition_config::load(vars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(list: &[(&str, &str)]) -> Result<Config, cognition_config::ConfigError> {
        Config::load(list.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_need_no_configuration() {
        assert_eq!(load(&[]).unwrap(), Config::default());
    }

    #[test]
    fn variables_are_read() {
        let config = load(&[
            (
                "COGNITION_OPERATOR_SERVER_IMAGE",
                "registry.example/cognition:1.2",
            ),
            ("COGNITION_OPERATOR_DOMAIN", "cognition.example.com"),
            ("COGNITION_OPERATOR_TLS_SECRET", "wildcard-tls"),
            ("COGNITION_OPERATOR_STORAGE_CLASS", "gp3"),
            ("COGNITION_OPERATOR_WATCH_NAMESPACE", "cognition-system"),
            ("UNRELATED", "x"),
        ])
        .unwrap();
        assert_eq!(config.server_image, "registry.example/cognition:1.2");
        assert_eq!(config.domain, "cognition.example.com");
        assert_eq!(config.tls_secret, "wildcard-tls");
        assert_eq!(config.storage_class, "gp3");
        assert_eq!(config.watch_namespace, "cognition-system");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = load(&[
            ("COGNITION_OPERATOR_SERVER_IMAGE", " "),
            ("COGNITION_OPERATOR_DOMAIN", "Bad_Domain"),
            ("COGNITION_OPERATOR_WATCH_NAMESPACE", "a.b"),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 3, "{text}");
        assert!(text.contains("COGNITION_OPERATOR_SERVER_IMAGE must not be empty"));
        assert!(text.contains("COGNITION_OPERATOR_DOMAIN: \"Bad_Domain\""));
        assert!(text.contains("COGNITION_OPERATOR_WATCH_NAMESPACE: \"a.b\""));
    }

    #[test]
    fn a_tls_secret_needs_a_domain() {
        let err = load(&[("COGNITION_OPERATOR_TLS_SECRET", "wildcard-tls")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("COGNITION_OPERATOR_DOMAIN is empty")
        );
    }
}
