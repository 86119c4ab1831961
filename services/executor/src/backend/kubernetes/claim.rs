//! Agent-sandbox mode: a `SandboxClaim` (`extensions.agents.x-k8s.io/v1alpha1`) made from the
//! configured `SandboxTemplate`; the agent-sandbox controller makes the `Sandbox`
//! (`agents.x-k8s.io/v1alpha1`) and its pod. The executor keeps the Sandbox's
//! `spec.shutdownTime` at the sandbox's expiry (the controller's safety net when the executor
//! never deletes the claim) and reaches the in-sandbox agent at the pod's IP.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use crate::sandbox::SandboxState;

pub const CLAIM_GROUP: &str = "extensions.agents.x-k8s.io";
pub const SANDBOX_GROUP: &str = "agents.x-k8s.io";
pub const VERSION: &str = "v1alpha1";

/// The CRDs the mode needs (checked at startup).
pub const REQUIRED_CRDS: [&str; 2] = [
    "sandboxes.agents.x-k8s.io",
    "sandboxclaims.extensions.agents.x-k8s.io",
];

/// How to install the CRDs (the startup error says it).
pub const INSTALL_HINT: &str = "install the agent-sandbox controller and its extensions first: \
     kubectl apply -f https://github.com/kubernetes-sigs/agent-sandbox/releases/download/v0.3.10/manifest.yaml \
     && kubectl apply -f https://github.com/kubernetes-sigs/agent-sandbox/releases/download/v0.3.10/extensions.yaml \
     (see docs/kubernetes.md)";

pub fn claim_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(CLAIM_GROUP, VERSION, "SandboxClaim"),
        "sandboxclaims",
    )
}

pub fn sandbox_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(SANDBOX_GROUP, VERSION, "Sandbox"),
        "sandboxes",
    )
}

/// The claim of a new sandbox. `labels` go on the claim and, through
/// `additionalPodMetadata`, on the pod (so network policies and `kubectl -l` see them).
pub fn build(
    name: &str,
    namespace: &str,
    template: &str,
    warm_pool: Option<&str>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
) -> DynamicObject {
    let mut spec = json!({
        "sandboxTemplateRef": { "name": template },
        "additionalPodMetadata": { "labels": labels },
    });
    if let Some(pool) = warm_pool {
        spec["warmpool"] = json!(pool);
    }
    let mut claim = DynamicObject::new(name, &claim_resource()).within(namespace);
    claim.metadata.labels = Some(labels);
    claim.metadata.annotations = Some(annotations);
    claim.data = json!({ "spec": spec });
    claim
}

/// The merge patch that moves a Sandbox's shutdown time.
pub fn shutdown_patch(at: DateTime<Utc>) -> Value {
    json!({ "spec": { "shutdownTime": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true) } })
}

/// Whether `conditions` hold `type = True`.
fn condition(object: &DynamicObject, kind: &str) -> Option<bool> {
    object.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .map(|c| c["status"] == "True")
}

/// The name of the Sandbox made for a claim, once the controller has made it.
pub fn sandbox_name(claim: &DynamicObject) -> Option<String> {
    claim.data["status"]["sandbox"]["name"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The first pod IP reported by a claim or a Sandbox.
pub fn pod_ip(object: &DynamicObject) -> Option<String> {
    let status = &object.data["status"];
    [&status["sandbox"]["podIPs"], &status["podIPs"]]
        .into_iter()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str)
        .find(|ip| !ip.is_empty())
        .map(str::to_owned)
}

/// Why a claim or Sandbox will never be ready (`Ready=False` with a terminal reason).
pub fn failure(object: &DynamicObject) -> Option<String> {
    let conditions = object.data["status"]["conditions"].as_array()?;
    conditions
        .iter()
        .find(|c| {
            c["type"] == "Ready"
                && c["status"] == "False"
                && matches!(
                    c["reason"].as_str(),
                    Some("TemplateNotFound" | "Failed" | "ReconcileError" | "Expired")
                )
        })
        .map(|c| {
            format!(
                "{}: {}",
                c["reason"].as_str().unwrap_or_default(),
                c["message"].as_str().unwrap_or_default()
            )
        })
}

/// The sandbox state of a claim.
pub fn state(claim: &DynamicObject) -> SandboxState {
    if failure(claim).is_some() {
        SandboxState::Failed
    } else if condition(claim, "Ready") == Some(true) || pod_ip(claim).is_some() {
        SandboxState::Ready
    } else {
        SandboxState::Pending
    }
}

/// Whether a Sandbox is ready to take connections.
pub fn sandbox_ready(sandbox: &DynamicObject) -> bool {
    condition(sandbox, "Ready") == Some(true) && pod_ip(sandbox).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_body() {
        let labels: BTreeMap<String, String> =
            [("cognition.io/session".to_string(), "s1".to_string())].into();
        let claim = build(
            "cog-s1-1",
            "cognition",
            "cognition-sandbox",
            Some("fast-pool"),
            labels,
            BTreeMap::new(),
        );
        let json = serde_json::to_value(&claim).unwrap();
        assert_eq!(json["apiVersion"], "extensions.agents.x-k8s.io/v1alpha1");
        assert_eq!(json["kind"], "SandboxClaim");
        assert_eq!(json["metadata"]["namespace"], "cognition");
        assert_eq!(
            json["spec"]["sandboxTemplateRef"]["name"],
            "cognition-sandbox"
        );
        assert_eq!(json["spec"]["warmpool"], "fast-pool");
        assert_eq!(
            json["spec"]["additionalPodMetadata"]["labels"]["cognition.io/session"],
            "s1"
        );
        let at = DateTime::parse_from_rfc3339("2026-11-23T20:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            shutdown_patch(at),
            json!({"spec": {"shutdownTime": "2026-11-23T20:00:00Z"}})
        );
    }

    #[test]
    fn claim_states() {
        let mut claim = build("c", "ns", "t", None, BTreeMap::new(), BTreeMap::new());
        assert_eq!(state(&claim), SandboxState::Pending);
        claim.data["status"] = json!({
            "conditions": [{"type": "Ready", "status": "True", "reason": "SandboxReady"}],
            "sandbox": {"name": "c", "podIPs": ["10.1.2.3"]}
        });
        assert_eq!(state(&claim), SandboxState::Ready);
        assert_eq!(sandbox_name(&claim).as_deref(), Some("c"));
        assert_eq!(pod_ip(&claim).as_deref(), Some("10.1.2.3"));
        claim.data["status"] = json!({
            "conditions": [{"type": "Ready", "status": "False", "reason": "TemplateNotFound",
                            "message": "template t not found"}]
        });
        assert_eq!(state(&claim), SandboxState::Failed);
        assert!(failure(&claim).unwrap().contains("template t not found"));
    }
}
