//! Everything the operator provisions for one tenant, built as typed k8s-openapi objects by
//! pure functions (one module per concern) and collected, in apply order, by [`desired`].
//!
//! Owner references cannot cross namespaces (the CognitionTenant lives in the operator's
//! namespace, its resources in `cognition-tenant-<name>`), so every object carries the labels
//! `cognition.dev/tenant=<name>` and `app.kubernetes.io/managed-by=cognition-operator`, and
//! deleting the tenant namespace removes them all.

pub mod ingress;
pub mod namespace;
pub mod network;
pub mod quota;
pub mod rbac;
pub mod secret;
pub mod server;
pub mod storage;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::ApiResource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::tenant::Tenant;

/// Label naming the tenant an object belongs to.
pub const TENANT_LABEL: &str = "cognition.dev/tenant";
/// Label naming the pod's part: `server` or `sandbox`.
pub const ROLE_LABEL: &str = "cognition.dev/role";
/// The standard "managed by" label.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The operator's name: the managed-by label value and the server-side apply field manager.
pub const MANAGER: &str = "cognition-operator";

/// The labels on every object of a tenant.
pub fn labels(tenant: &Tenant) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TENANT_LABEL.to_owned(), tenant.name.clone()),
        (MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
    ])
}

/// Metadata of a namespaced object in the tenant namespace.
pub fn meta(tenant: &Tenant, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(tenant.namespace.clone()),
        labels: Some(labels(tenant)),
        ..ObjectMeta::default()
    }
}

/// One object to apply, type-erased so a tenant's objects fit in one list.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub resource: ApiResource,
    /// `None` for cluster-scoped objects (the Namespace).
    pub namespace: Option<String>,
    pub name: String,
    /// The object as JSON, with `apiVersion` and `kind`.
    pub body: serde_json::Value,
}

impl Manifest {
    /// Erases a typed object.
    pub fn of<K>(object: &K) -> Manifest
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let meta = object.meta();
        Manifest {
            resource: ApiResource::erase::<K>(&()),
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            body: serde_json::to_value(object).expect("k8s-openapi objects serialize to JSON"),
        }
    }

    /// `Kind namespace/name`, for logs and errors.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.resource.kind, self.name),
            None => format!("{} {}", self.resource.kind, self.name),
        }
    }

    /// The object back as its typed form.
    pub fn typed<K: DeserializeOwned>(&self) -> Result<K, serde_json::Error> {
        serde_json::from_value(self.body.clone())
    }
}

/// Every object of a tenant, in apply order (namespace first, server after what it uses).
/// `api_key` is the LLM key read from the referenced Secret.
pub fn desired(tenant: &Tenant, config: &Config, api_key: &ByteString) -> Vec<Manifest> {
    let mut all = vec![
        Manifest::of(&namespace::namespace(tenant)),
        Manifest::of(&quota::resource_quota(tenant)),
        Manifest::of(&quota::limit_range(tenant)),
        Manifest::of(&network::deny_all_egress(tenant)),
        Manifest::of(&network::allow_server_to_sandbox(tenant)),
        Manifest::of(&network::allow_ingress(tenant)),
        Manifest::of(&rbac::service_account(tenant)),
        Manifest::of(&rbac::role(tenant)),
        Manifest::of(&rbac::role_binding(tenant)),
        Manifest::of(&secret::llm_secret(tenant, api_key)),
        Manifest::of(&storage::workspace(tenant, config)),
        Manifest::of(&server::deployment(tenant, config, api_key)),
        Manifest::of(&server::service(tenant)),
    ];
    if let Some(ingress) = ingress::ingress(tenant, config) {
        all.push(Manifest::of(&ingress));
    }
    all
}
