//! Tenancy: the caller's scope against the sandbox's labels.
//!
//! A caller presents its scope as gRPC metadata `x-cognition-scope-<key>: <value>` (the session
//! service sends the scope of the session it works for). A sandbox belongs to the tenant named
//! by its labels `cognition.io/<key>=<value>`. Every RPC that names a sandbox requires, for each
//! key the caller presents, the label `cognition.io/<key>` with the same value; otherwise it
//! fails with `PERMISSION_DENIED` (a message naming the key, never the other tenant's value).
//! `CreateSandbox` stamps the caller's scope into the new sandbox's labels and `ListSandboxes`
//! narrows its selector to it.
//!
//! A caller without scope metadata (an operator tool, or a deployment without scoping) is not
//! restricted. The executor is an internal service on a private network and trusts its callers
//! to be who they say; the check is defence in depth, so that a bug in one tenant's session
//! path (a wrong sandbox id, a stale cache) cannot reach another tenant's sandbox.

use cognition_proto::scope::{HEADER_PREFIX, Scope};
use tonic::metadata::{KeyRef, MetadataMap};

use crate::error::Error;
use crate::sandbox::{Labels, Sandbox, validate_labels};

/// Prefix of a sandbox's scope labels: `cognition.io/<key>`.
pub const LABEL_PREFIX: &str = "cognition.io/";

/// Scope keys that would collide with labels a backend sets itself.
const RESERVED_KEYS: &[&str] = &["sandbox", "managed"];

/// The scope a caller presents, as the labels a sandbox must carry for it. Empty: unscoped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenant {
    labels: Labels,
}

impl Tenant {
    /// Reads every `x-cognition-scope-<key>` entry of `metadata`. Keys are ASCII letters,
    /// digits, `_` and `-`; values follow the shared scope rules (non-empty, ≤ 256 printable
    /// characters); a key may appear once. Anything else is `PERMISSION_DENIED`, like a bad
    /// scope header at the gateway and the session service.
    pub fn from_metadata(metadata: &MetadataMap) -> Result<Tenant, Error> {
        let mut keys = Vec::new();
        for key in metadata.keys() {
            let (name, binary) = match key {
                KeyRef::Ascii(k) => (k.as_str(), false),
                KeyRef::Binary(k) => (k.as_str(), true),
            };
            let Some(scope_key) = name.strip_prefix(HEADER_PREFIX) else {
                continue;
            };
            if binary {
                return Err(denied(format!(
                    "scope metadata {name} must be ASCII, not binary"
                )));
            }
            check_key(scope_key)?;
            if metadata.get_all(name).iter().count() > 1 {
                return Err(denied(format!("scope metadata {name} is repeated")));
            }
            keys.push(scope_key.to_owned());
        }
        if keys.is_empty() {
            return Ok(Tenant::default());
        }
        let scope = Scope::from_metadata(&keys, metadata).map_err(|e| denied(e.to_string()))?;
        Ok(Tenant {
            labels: scope
                .0
                .into_iter()
                .map(|(k, v)| (format!("{LABEL_PREFIX}{k}"), v))
                .collect(),
        })
    }

    /// Whether the caller presented no scope (it may use every sandbox).
    pub fn is_unscoped(&self) -> bool {
        self.labels.is_empty()
    }

    /// `PERMISSION_DENIED` unless `sandbox` carries every scope label of the caller.
    pub fn check(&self, sandbox: &Sandbox) -> Result<(), Error> {
        match self
            .labels
            .iter()
            .find(|(k, v)| sandbox.labels.get(*k) != Some(*v))
        {
            None => Ok(()),
            Some((label, _)) => Err(denied(format!(
                "sandbox {} belongs to another scope: its label {label} does not match the \
                 caller's {}",
                sandbox.id,
                metadata_key(label)
            ))),
        }
    }

    /// Adds the caller's scope labels to the labels of a sandbox being created.
    /// `PERMISSION_DENIED` when the request sets one of them to another value.
    pub fn stamp(&self, labels: &mut Labels) -> Result<(), Error> {
        for (label, value) in &self.labels {
            match labels.get(label) {
                Some(requested) if requested != value => {
                    return Err(denied(format!(
                        "label {label} of the request conflicts with the caller's {}",
                        metadata_key(label)
                    )));
                }
                Some(_) => {}
                None => {
                    labels.insert(label.clone(), value.clone());
                }
            }
        }
        validate_labels(labels).map_err(Error::Invalid)
    }

    /// `selector` narrowed to the caller's scope; `None` when it asks for another value of a
    /// scope label (no sandbox the caller may see can match).
    pub fn narrow(&self, mut selector: Labels) -> Option<Labels> {
        for (label, value) in &self.labels {
            match selector.get(label) {
                Some(asked) if asked != value => return None,
                Some(_) => {}
                None => {
                    selector.insert(label.clone(), value.clone());
                }
            }
        }
        Some(selector)
    }
}

fn denied(message: String) -> Error {
    Error::PermissionDenied(message)
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(denied(format!(
            "scope metadata {HEADER_PREFIX}{key}: the key may only contain ASCII letters, digits, \
             '_' and '-'"
        )));
    }
    if RESERVED_KEYS.contains(&key) {
        return Err(denied(format!(
            "scope metadata {HEADER_PREFIX}{key}: {LABEL_PREFIX}{key} is a reserved label"
        )));
    }
    Ok(())
}

/// `x-cognition-scope-user` for the label `cognition.io/user`.
fn metadata_key(label: &str) -> String {
    format!(
        "{HEADER_PREFIX}{}",
        label.strip_prefix(LABEL_PREFIX).unwrap_or(label)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SandboxId;
    use crate::sandbox::{Resources, SandboxState};

    fn metadata(pairs: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut md = MetadataMap::new();
        for (k, v) in pairs {
            md.append(*k, v.parse().unwrap());
        }
        md
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sandbox(pairs: &[(&str, &str)]) -> Sandbox {
        Sandbox {
            id: SandboxId::parse("s1").unwrap(),
            state: SandboxState::Ready,
            labels: labels(pairs),
            backend: "local".into(),
            template: String::new(),
            resources: Resources::default(),
            created_at: chrono::Utc::now(),
            expires_at: chrono::Utc::now(),
            workdir: "/w".into(),
        }
    }

    #[test]
    fn reads_only_scope_metadata() {
        let t = Tenant::from_metadata(&metadata(&[
            ("x-cognition-scope-user", "alice"),
            ("x-cognition-scope-org", "acme"),
            ("traceparent", "00-x"),
        ]))
        .unwrap();
        assert_eq!(
            t.labels,
            labels(&[("cognition.io/user", "alice"), ("cognition.io/org", "acme")])
        );
        assert!(
            Tenant::from_metadata(&metadata(&[("traceparent", "x")]))
                .unwrap()
                .is_unscoped()
        );
    }

    #[test]
    fn bad_scope_metadata_is_refused() {
        for md in [
            metadata(&[
                ("x-cognition-scope-user", "a"),
                ("x-cognition-scope-user", "b"),
            ]),
            metadata(&[("x-cognition-scope-user", " ")]),
            metadata(&[("x-cognition-scope-", "a")]),
            metadata(&[("x-cognition-scope-us.er", "a")]),
            metadata(&[("x-cognition-scope-managed", "a")]),
        ] {
            let err = Tenant::from_metadata(&md).unwrap_err();
            assert!(matches!(err, Error::PermissionDenied(_)), "{err}");
        }
    }

    #[test]
    fn check_requires_every_scope_label_and_hides_the_other_value() {
        let alice = Tenant::from_metadata(&metadata(&[("x-cognition-scope-user", "alice")]))
            .expect("scope");
        assert!(
            alice
                .check(&sandbox(&[("cognition.io/user", "alice")]))
                .is_ok()
        );
        let err = alice
            .check(&sandbox(&[("cognition.io/user", "bob-secret")]))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("cognition.io/user") && !text.contains("bob-secret"),
            "{text}"
        );
        assert!(alice.check(&sandbox(&[])).is_err(), "missing label");
        assert!(Tenant::default().check(&sandbox(&[])).is_ok(), "unscoped");
    }

    #[test]
    fn stamp_and_narrow() {
        let alice = Tenant::from_metadata(&metadata(&[("x-cognition-scope-user", "alice")]))
            .expect("scope");
        let mut l = labels(&[("cognition.io/session", "s")]);
        alice.stamp(&mut l).unwrap();
        assert_eq!(
            l.get("cognition.io/user").map(String::as_str),
            Some("alice")
        );
        let mut conflicting = labels(&[("cognition.io/user", "bob")]);
        assert!(matches!(
            alice.stamp(&mut conflicting),
            Err(Error::PermissionDenied(_))
        ));
        assert_eq!(
            alice.narrow(Labels::new()),
            Some(labels(&[("cognition.io/user", "alice")]))
        );
        assert_eq!(alice.narrow(labels(&[("cognition.io/user", "bob")])), None);
    }
}
