//! The tenant's Namespace `cognition-tenant-<name>`: the isolation boundary that scopes its
//! pods, quotas, policies and RBAC, and whose deletion removes everything of the tenant.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::labels;
use crate::tenant::Tenant;

/// The Namespace, labelled with the tenant; Pod Security admission enforces `baseline` and
/// warns/audits `restricted` (the server pod meets `restricted`).
pub fn namespace(tenant: &Tenant) -> Namespace {
    let mut labels = labels(tenant);
    for (key, value) in [
        ("pod-security.kubernetes.io/enforce", "baseline"),
        ("pod-security.kubernetes.io/warn", "restricted"),
        ("pod-security.kubernetes.io/audit", "restricted"),
    ] {
        labels.insert(key.to_owned(), value.to_owned());
    }
    Namespace {
        metadata: ObjectMeta {
            name: Some(tenant.namespace.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}
