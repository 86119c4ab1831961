//! How a caller's scope travels on the wire.
//!
//! HTTP clients send `X-Cognition-Scope-<Key>: <value>` for every configured scope key; the
//! gateway forwards each as gRPC metadata `x-cognition-scope-<key>`. Both the gateway and the
//! session service parse scopes with [`Scope::from_headers`], so the rules (key names are
//! case-insensitive, values non-empty, ≤ 256 printable characters) are the same everywhere.

use std::collections::BTreeMap;

/// Prefix of the header / metadata key that carries one scope value.
pub const HEADER_PREFIX: &str = "x-cognition-scope-";

/// Longest accepted scope value.
pub const MAX_VALUE_LEN: usize = 256;

/// The caller's scope: configured key → value. Empty when scoping is disabled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Scope(pub BTreeMap<String, String>);

/// Why a scope could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeError {
    Missing { key: String },
    Invalid { key: String, reason: &'static str },
}

impl std::fmt::Display for ScopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScopeError::Missing { key } => {
                write!(f, "missing required scope header {}", header_name(key))
            }
            ScopeError::Invalid { key, reason } => {
                write!(f, "invalid scope header {}: {reason}", header_name(key))
            }
        }
    }
}

impl std::error::Error for ScopeError {}

/// `X-Cognition-Scope-User` for key `user` (display form; matching is case-insensitive).
pub fn header_name(key: &str) -> String {
    let mut out = String::from("X-Cognition-Scope-");
    let mut chars = key.chars();
    if let Some(c) = chars.next() {
        out.extend(c.to_uppercase());
        out.push_str(chars.as_str());
    }
    out
}

/// Lower-case metadata / header key for a scope key.
pub fn metadata_key(key: &str) -> String {
    format!("{HEADER_PREFIX}{}", key.to_ascii_lowercase())
}

fn check_value(key: &str, value: &str) -> Result<(), ScopeError> {
    let invalid = |reason| {
        Err(ScopeError::Invalid {
            key: key.to_owned(),
            reason,
        })
    };
    if value.trim().is_empty() {
        return invalid("value is empty");
    }
    if value.len() > MAX_VALUE_LEN {
        return invalid("value is longer than 256 bytes");
    }
    if value.chars().any(|c| c.is_control()) {
        return invalid("value contains control characters");
    }
    Ok(())
}

impl Scope {
    /// Reads every key of `keys` from HTTP headers (or gRPC metadata viewed as headers).
    /// Every key is required: scoping fails closed.
    pub fn from_headers(keys: &[String], headers: &http::HeaderMap) -> Result<Scope, ScopeError> {
        let mut map = BTreeMap::new();
        for key in keys {
            let Some(raw) = headers.get(metadata_key(key)) else {
                return Err(ScopeError::Missing { key: key.clone() });
            };
            let value = raw.to_str().map_err(|_| ScopeError::Invalid {
                key: key.clone(),
                reason: "value is not ASCII",
            })?;
            check_value(key, value)?;
            map.insert(key.to_ascii_lowercase(), value.to_owned());
        }
        Ok(Scope(map))
    }

    /// Reads the scope from gRPC request metadata.
    pub fn from_metadata(
        keys: &[String],
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Scope, ScopeError> {
        Self::from_headers(keys, &metadata.clone().into_headers())
    }

    /// Writes the scope into outgoing gRPC metadata.
    pub fn insert_into(&self, metadata: &mut tonic::metadata::MetadataMap) {
        for (k, v) in &self.0 {
            if let (Ok(key), Ok(value)) = (
                tonic::metadata::MetadataKey::from_bytes(metadata_key(k).as_bytes()),
                tonic::metadata::MetadataValue::try_from(v.as_str()),
            ) {
                metadata.insert(key, value);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a resource carrying `scopes` is visible to this caller: every key of the caller's
    /// scope must match. An empty caller scope (scoping disabled) sees everything.
    pub fn permits(&self, scopes: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, v)| scopes.get(k) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_case_insensitive_headers() {
        let mut h = http::HeaderMap::new();
        h.insert("X-Cognition-Scope-User", "alice".parse().unwrap());
        let s = Scope::from_headers(&keys(&["user"]), &h).unwrap();
        assert_eq!(s.0.get("user").map(String::as_str), Some("alice"));
    }

    #[test]
    fn fails_closed() {
        let h = http::HeaderMap::new();
        assert_eq!(
            Scope::from_headers(&keys(&["user"]), &h),
            Err(ScopeError::Missing { key: "user".into() })
        );
        let mut h = http::HeaderMap::new();
        h.insert("x-cognition-scope-user", " ".parse().unwrap());
        assert!(matches!(
            Scope::from_headers(&keys(&["user"]), &h),
            Err(ScopeError::Invalid { .. })
        ));
    }

    #[test]
    fn metadata_round_trip() {
        let mut s = Scope::default();
        s.0.insert("user".into(), "bob".into());
        s.0.insert("org".into(), "acme".into());
        let mut md = tonic::metadata::MetadataMap::new();
        s.insert_into(&mut md);
        assert_eq!(
            Scope::from_metadata(&keys(&["user", "org"]), &md).unwrap(),
            s
        );
    }

    #[test]
    fn permits_requires_every_caller_key() {
        let mut caller = Scope::default();
        caller.0.insert("user".into(), "alice".into());
        let mut res = BTreeMap::new();
        res.insert("user".to_string(), "alice".to_string());
        assert!(caller.permits(&res));
        res.insert("user".into(), "bob".into());
        assert!(!caller.permits(&res));
        assert!(Scope::default().permits(&res));
    }

    #[test]
    fn header_display_name() {
        assert_eq!(header_name("user"), "X-Cognition-Scope-User");
    }
}
