//! The server's identity and rights: ServiceAccount `cognition-server`, Role `sandbox-manager`
//! (sandbox pods in the tenant namespace only) and RoleBinding `server-sandbox-manager`.
//! Sandbox pods get no service account token (the executor's pod mode sees to that).

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::meta;
use crate::tenant::Tenant;

/// The server's ServiceAccount.
pub const SERVICE_ACCOUNT: &str = "cognition-server";
/// The Role letting the server manage sandbox pods.
pub const ROLE: &str = "sandbox-manager";
/// The binding of [`ROLE`] to [`SERVICE_ACCOUNT`].
pub const ROLE_BINDING: &str = "server-sandbox-manager";

/// `cognition-server`.
pub fn service_account(tenant: &Tenant) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(tenant, SERVICE_ACCOUNT),
        ..ServiceAccount::default()
    }
}

/// `sandbox-manager`: pods create/delete/get/list/watch, pods/log get.
pub fn role(tenant: &Tenant) -> Role {
    let rule = |resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec![resource.to_owned()]),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    };
    Role {
        metadata: meta(tenant, ROLE),
        rules: Some(vec![
            rule("pods", &["create", "delete", "get", "list", "watch"]),
            rule("pods/log", &["get"]),
        ]),
    }
}

/// `server-sandbox-manager`.
pub fn role_binding(tenant: &Tenant) -> RoleBinding {
    RoleBinding {
        metadata: meta(tenant, ROLE_BINDING),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: SERVICE_ACCOUNT.into(),
            namespace: Some(tenant.namespace.clone()),
            ..Subject::default()
        }]),
    }
}
