//! Sandboxes: the record every backend keeps, the create request, labels and selectors.

mod state;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use state::{ALL_STATES, InvalidTransition, SandboxState};

use crate::ids::SandboxId;

/// Sandbox labels, e.g. `cognition.io/session`.
pub type Labels = BTreeMap<String, String>;

/// Most labels on one sandbox or exec.
pub const MAX_LABELS: usize = 64;

/// Checks label keys and values (clear errors for clients).
pub fn validate_labels(labels: &Labels) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "at most {MAX_LABELS} labels are allowed, got {}",
            labels.len()
        ));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > 256 || k.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "label key {k:?} must be 1–256 characters without whitespace"
            ));
        }
        if v.len() > 1024 || v.chars().any(char::is_control) {
            return Err(format!(
                "label {k:?}: value must be at most 1024 characters without control characters"
            ));
        }
    }
    Ok(())
}

/// Whether `labels` has every entry of `selector`.
pub fn matches_selector(labels: &Labels, selector: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Requested resources; 0 means the backend's default (the local backend ignores them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub memory_bytes: u64,
    pub cpu_millis: u32,
    pub pids: u32,
}

/// A sandbox to create, with defaults already applied.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSpec {
    /// Client-chosen (idempotency key) or generated id.
    pub id: SandboxId,
    pub labels: Labels,
    pub template: String,
    pub resources: Resources,
    /// Lifetime without renewal.
    pub ttl: Duration,
}

/// A sandbox as a backend reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: SandboxId,
    pub state: SandboxState,
    pub labels: Labels,
    pub backend: String,
    pub template: String,
    pub resources: Resources,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Working directory of processes, as they see it.
    pub workdir: String,
}

impl Sandbox {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now
    }
}

/// `now + ttl`, saturating.
pub fn expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let labels: Labels = [("a".to_string(), "1".to_string()), ("b".into(), "2".into())].into();
        assert!(matches_selector(&labels, &Labels::new()));
        assert!(matches_selector(
            &labels,
            &[("a".to_string(), "1".to_string())].into()
        ));
        assert!(!matches_selector(
            &labels,
            &[("a".to_string(), "2".to_string())].into()
        ));
        assert!(!matches_selector(
            &labels,
            &[("c".to_string(), "1".to_string())].into()
        ));
    }

    #[test]
    fn label_validation() {
        assert!(
            validate_labels(&[("cognition.io/session".to_string(), "s1".to_string())].into())
                .is_ok()
        );
        assert!(validate_labels(&[(String::new(), "x".to_string())].into()).is_err());
        assert!(validate_labels(&[("k".to_string(), "a\nb".to_string())].into()).is_err());
    }
}
