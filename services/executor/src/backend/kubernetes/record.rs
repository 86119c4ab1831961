//! The sandbox record kept on a Kubernetes object's metadata (annotations are the source of
//! truth; see [`super::naming`]), and the state read from the object's status.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::naming::{
    ANNOTATION_CREATED, ANNOTATION_EXPIRES, ANNOTATION_ID, ANNOTATION_LABELS, ANNOTATION_RESOURCES,
    ANNOTATION_TEMPLATE, LABEL_MANAGED_BY, MANAGED_BY,
};
use crate::ids::SandboxId;
use crate::sandbox::{Labels, Resources, Sandbox, SandboxSpec, SandboxState};

/// Where processes of a Kubernetes sandbox start (the workspace volume's mount point).
pub const WORKDIR: &str = "/workspace";

/// The annotations that carry a new sandbox's record.
pub fn annotations(
    spec: &SandboxSpec,
    resources: Resources,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> BTreeMap<String, String> {
    [
        (ANNOTATION_ID, spec.id.to_string()),
        (
            ANNOTATION_LABELS,
            serde_json::to_string(&spec.labels).expect("labels serialize"),
        ),
        (ANNOTATION_TEMPLATE, spec.template.clone()),
        (
            ANNOTATION_RESOURCES,
            serde_json::to_string(&resources).expect("resources serialize"),
        ),
        (ANNOTATION_CREATED, created_at.to_rfc3339()),
        (ANNOTATION_EXPIRES, expires_at.to_rfc3339()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The record of one of our objects (`None` for objects the executor did not make).
pub fn from_meta(
    meta: &ObjectMeta,
    state: SandboxState,
    backend: &str,
    max_duration: Option<chrono::Duration>,
) -> Option<Sandbox> {
    let labels = meta.labels.as_ref()?;
    if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY) {
        return None;
    }
    let notes = meta.annotations.as_ref()?;
    let id = SandboxId::parse(notes.get(ANNOTATION_ID)?).ok()?;
    let time = |key: &str| {
        notes
            .get(key)
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let created_at = time(ANNOTATION_CREATED)
        .or_else(|| {
            let t = meta.creation_timestamp.as_ref()?;
            DateTime::<Utc>::from_timestamp(t.0.as_second(), 0)
        })
        .unwrap_or_else(Utc::now);
    let mut expires_at = time(ANNOTATION_EXPIRES).unwrap_or(created_at);
    if let Some(max) = max_duration {
        expires_at = expires_at.min(created_at + max);
    }
    let state = if meta.deletion_timestamp.is_some() {
        SandboxState::Terminating
    } else {
        state
    };
    Some(Sandbox {
        id,
        state,
        labels: notes
            .get(ANNOTATION_LABELS)
            .and_then(|v| serde_json::from_str::<Labels>(v).ok())
            .unwrap_or_default(),
        backend: backend.to_owned(),
        template: notes.get(ANNOTATION_TEMPLATE).cloned().unwrap_or_default(),
        resources: notes
            .get(ANNOTATION_RESOURCES)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default(),
        created_at,
        expires_at,
        workdir: WORKDIR.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kubernetes::naming::object_labels;

    #[test]
    fn round_trip() {
        let spec = SandboxSpec {
            id: SandboxId::parse("Sess_1").unwrap(),
            labels: [("cognition.io/user".to_string(), "a@b.c".to_string())].into(),
            template: "default".into(),
            resources: Resources::default(),
            ttl: std::time::Duration::from_secs(60),
        };
        let now = Utc::now();
        let resources = Resources {
            memory_bytes: 1 << 29,
            cpu_millis: 500,
            pids: 0,
        };
        let meta = ObjectMeta {
            labels: Some(object_labels("cog-x", &spec.labels)),
            annotations: Some(annotations(
                &spec,
                resources,
                now,
                now + chrono::Duration::hours(2),
            )),
            ..ObjectMeta::default()
        };
        let sb = from_meta(&meta, SandboxState::Ready, "kubernetes", None).unwrap();
        assert_eq!(sb.id, spec.id);
        assert_eq!(sb.labels, spec.labels);
        assert_eq!(sb.resources, resources);
        assert_eq!(sb.workdir, WORKDIR);
        assert_eq!(
            sb.expires_at.timestamp(),
            (now + chrono::Duration::hours(2)).timestamp()
        );
        // A maximum duration caps the expiry whatever the renewals.
        let capped = from_meta(
            &meta,
            SandboxState::Ready,
            "kubernetes",
            Some(chrono::Duration::hours(1)),
        )
        .unwrap();
        assert_eq!(
            capped.expires_at.timestamp(),
            (now + chrono::Duration::hours(1)).timestamp()
        );
        // Objects of others are not sandboxes.
        let foreign = ObjectMeta {
            labels: Some([("app".to_string(), "x".to_string())].into()),
            ..meta.clone()
        };
        assert!(from_meta(&foreign, SandboxState::Ready, "kubernetes", None).is_none());
    }
}
