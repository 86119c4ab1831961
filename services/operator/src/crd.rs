//! The `CognitionTenant` custom resource (`cognition.dev/v1`, namespaced): the tenant's spec as
//! users write it, the status the operator reports, and the CRD manifest generated from both.
//!
//! The schema only checks shapes (types, required fields); the rules that need a message a
//! person can act on (quantities, names, CIDRs) live in [`crate::tenant`] and are reported in
//! the `Ready` condition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The committed CRD manifest's path, relative to the workspace root.
pub const CRD_PATH: &str = "deploy/crds/cognitiontenant.yaml";

/// A tenant of the platform: one namespace with its own server, sandboxes, quotas and storage.
#[derive(CustomResource, Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "cognition.dev",
    version = "v1",
    kind = "CognitionTenant",
    namespaced,
    status = "CognitionTenantStatus",
    shortname = "ctenant",
    category = "cognition",
    doc = "A Cognition tenant; the cognition-operator provisions the namespace cognition-tenant-<name> for it.",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CognitionTenantSpec {
    /// Human-readable tenant name, e.g. "Acme Corp".
    pub display_name: String,
    /// Contact address of the tenant's administrator.
    pub admin_email: String,
    /// Resource limits for the whole tenant.
    pub quotas: Quotas,
    /// The model the tenant's server uses.
    pub llm: Llm,
    /// The image of the tenant's sandbox pods.
    #[serde(default)]
    pub sandbox: Sandbox,
    /// Outbound traffic of the sandbox pods.
    #[serde(default)]
    pub network: Network,
}

/// Resource limits for the entire tenant.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quotas {
    /// Concurrent sessions (one sandbox pod each).
    pub max_sessions: u32,
    /// CPU limit of one sandbox pod, a Kubernetes quantity ("2", "500m").
    pub max_cpu_per_sandbox: String,
    /// Memory limit of one sandbox pod, a Kubernetes quantity ("4Gi", "512Mi").
    pub max_memory_per_sandbox: String,
    /// Size of the tenant's workspace volume, in GiB.
    pub max_storage_gb: u32,
    /// Sandbox pods older than this are deleted; 0 means no limit.
    #[serde(default)]
    pub max_sandbox_duration_minutes: u32,
}

/// LLM configuration; the API key is only ever referenced, never inline.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Llm {
    /// Provider name as the server understands it (`COGNITION_LLM_PROVIDER`), e.g. "openai".
    pub provider: String,
    /// Model name (`COGNITION_LLM_MODEL`), e.g. "gpt-4o".
    pub model: String,
    /// The Secret (in the CognitionTenant's namespace) holding the API key.
    pub api_key_secret_ref: SecretKeyRef,
}

/// One key of a Secret in the CognitionTenant's own namespace.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key holding the API key.
    pub key: String,
}

/// The sandbox pods' image.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    /// The sandbox image (with the in-sandbox agent).
    #[serde(default = "default_sandbox_image")]
    pub image: String,
    /// Always, IfNotPresent or Never.
    #[serde(default = "default_pull_policy")]
    pub pull_policy: String,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self {
            image: default_sandbox_image(),
            pull_policy: default_pull_policy(),
        }
    }
}

fn default_sandbox_image() -> String {
    "ghcr.io/cognition-platform/cognition-sandbox:latest".into()
}

fn default_pull_policy() -> String {
    "IfNotPresent".into()
}

/// Outbound traffic of the sandbox pods (the server's own egress is not restricted).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// Allow all outbound traffic (ignored when `allowedEgressCIDRs` is not empty).
    #[serde(default)]
    pub egress_allowed: bool,
    /// Allow outbound traffic to exactly these CIDRs (plus cluster DNS).
    #[serde(default, rename = "allowedEgressCIDRs")]
    pub allowed_egress_cidrs: Vec<String>,
}

/// What the operator last observed and did.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CognitionTenantStatus {
    /// `Ready`: True once every tenant resource is applied; False with the reason otherwise.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The CRD manifest as YAML, exactly as committed in [`CRD_PATH`].
pub fn crd_yaml() -> String {
    let crd = CognitionTenant::crd();
    let yaml = serde_yaml::to_string(&crd).expect("a CRD always serializes to YAML");
    format!(
        "# Generated by `cognition-operator crd` from services/operator/src/crd.rs; do not edit.\n{yaml}"
    )
}
