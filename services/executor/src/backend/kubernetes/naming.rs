//! Kubernetes names and labels for sandboxes.
//!
//! A sandbox id (`[A-Za-z0-9._-]`, up to 128 characters) is not always a valid object name, and
//! a sandbox's labels (keys up to 256, values up to 1024 characters) are not always valid
//! Kubernetes labels. So: the object name is derived from the id (lowercased, cut, plus a hash
//! of the exact id); the exact id and every label live in annotations (the source of truth);
//! labels that are valid Kubernetes labels are also set as labels, for `kubectl -l` and for
//! server-side selection.

use std::collections::BTreeMap;

use crate::ids::SandboxId;
use crate::sandbox::Labels;

/// Label on every object the executor makes.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "cognition-executor";
/// The role label of the multi-tenancy design (network policies select on it).
pub const LABEL_ROLE: &str = "cognition.dev/role";
pub const ROLE_SANDBOX: &str = "sandbox";
/// The object name, as a label (always valid).
pub const LABEL_SANDBOX: &str = "cognition.io/sandbox";
/// The exact sandbox id.
pub const ANNOTATION_ID: &str = "cognition.io/sandbox-id";
/// Every label of the sandbox, as JSON.
pub const ANNOTATION_LABELS: &str = "cognition.io/labels";
pub const ANNOTATION_TEMPLATE: &str = "cognition.io/template";
pub const ANNOTATION_RESOURCES: &str = "cognition.io/resources";
pub const ANNOTATION_CREATED: &str = "cognition.io/created-at";
pub const ANNOTATION_EXPIRES: &str = "cognition.io/expires-at";

/// Longest object name produced (a label value must fit too).
const MAX_NAME: usize = 63;

/// The object name of a sandbox: `cog-<readable part>-<hash>`, a valid DNS label and label
/// value, unique per exact id (ids differing only in case get different hashes).
pub fn object_name(id: &SandboxId) -> String {
    let hash = format!("{:012x}", fnv1a(id.as_str().as_bytes()) & 0xffff_ffff_ffff);
    let readable: String = id
        .as_str()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    let room = MAX_NAME - "cog-".len() - 1 - hash.len();
    let readable = readable.trim_matches('-');
    let readable: String = readable.chars().take(room).collect();
    let readable = readable.trim_end_matches('-');
    if readable.is_empty() {
        format!("cog-{hash}")
    } else {
        format!("cog-{readable}-{hash}")
    }
}

/// 64-bit FNV-1a: stable across versions and platforms (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A label name or value part: `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63.
fn is_label_part(s: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    s.len() <= 63
        && s.bytes()
            .all(|b| alnum(b) || b == b'-' || b == b'_' || b == b'.')
        && s.bytes().next().is_some_and(alnum)
        && s.bytes().last().is_some_and(alnum)
}

/// Whether `key = value` is a valid Kubernetes label.
pub fn is_valid_label(key: &str, value: &str) -> bool {
    let name_ok = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_part(name),
        None => is_label_part(key),
    };
    name_ok && (value.is_empty() || is_label_part(value))
}

/// The labels of a sandbox object: ours, plus the sandbox's labels that are valid Kubernetes
/// labels (ours win on a clash).
pub fn object_labels(name: &str, labels: &Labels) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = labels
        .iter()
        .filter(|(k, v)| is_valid_label(k, v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    out.insert(LABEL_ROLE.into(), ROLE_SANDBOX.into());
    out.insert(LABEL_SANDBOX.into(), name.into());
    out
}

/// The label selector for a list: our objects, narrowed server-side by the entries of
/// `selector` that are valid labels (the rest is filtered by the caller).
pub fn list_selector(selector: &Labels) -> String {
    let mut parts = vec![
        format!("{LABEL_MANAGED_BY}={MANAGED_BY}"),
        format!("{LABEL_ROLE}={ROLE_SANDBOX}"),
    ];
    parts.extend(
        selector
            .iter()
            .filter(|(k, v)| is_valid_label(k, v) && !v.is_empty())
            .map(|(k, v)| format!("{k}={v}")),
    );
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SandboxId {
        SandboxId::parse(s).unwrap()
    }

    #[test]
    fn object_names_are_valid_and_unique() {
        let long = "A".repeat(128);
        for raw in ["sess-1", "Sess_1.x", "---", "_", &long, "abc", "ABC"] {
            let name = object_name(&id(raw));
            assert!(is_dns_label(&name), "{raw} -> {name}");
            assert!(is_valid_label(LABEL_SANDBOX, &name), "{name}");
        }
        assert_ne!(object_name(&id("abc")), object_name(&id("ABC")));
        assert_eq!(object_name(&id("sess-1")), object_name(&id("sess-1")));
        assert!(object_name(&id("sess-1")).starts_with("cog-sess-1-"));
    }

    #[test]
    fn labels() {
        assert!(is_valid_label("cognition.io/session", "s-1"));
        assert!(is_valid_label("cognition.io/user", ""));
        assert!(!is_valid_label("cognition.io/user", "alice@example.com"));
        assert!(!is_valid_label("Bad Prefix/x", "v"));
        assert!(!is_valid_label("cognition.io/user", &"x".repeat(64)));
        let labels: Labels = [
            ("cognition.io/session".to_string(), "s1".to_string()),
            ("cognition.io/user".into(), "alice@example.com".into()),
            (LABEL_ROLE.into(), "server".into()),
        ]
        .into();
        let out = object_labels("cog-x", &labels);
        assert_eq!(out["cognition.io/session"], "s1");
        assert!(!out.contains_key("cognition.io/user"));
        assert_eq!(out[LABEL_ROLE], ROLE_SANDBOX);
        assert_eq!(
            list_selector(&labels),
            "app.kubernetes.io/managed-by=cognition-executor,cognition.dev/role=sandbox,\
             cognition.dev/role=server,cognition.io/session=s1"
        );
    }
}
