//! The tenant's NetworkPolicies.
//!
//! * `deny-all-egress`: sandbox pods (`cognition.dev/role=sandbox`) send nothing, unless the
//!   spec opens egress: `allowedEgressCIDRs` allows exactly those CIDRs plus cluster DNS;
//!   otherwise `egressAllowed: true` allows everything.
//! * `allow-server-to-sandbox`: sandbox pods accept traffic only from the server pod, on the
//!   in-sandbox agent's port.
//! * `allow-ingress`: the server pod accepts external traffic on its HTTP port only.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{ROLE_LABEL, meta, server};
use crate::tenant::Tenant;

/// The port of the in-sandbox agent (`COGNITION_K8S_AGENT_PORT`'s default).
pub const AGENT_PORT: i32 = 7070;

/// Selects the pods of one role (`server` or `sandbox`).
pub fn role_selector(role: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(ROLE_LABEL.to_owned(), role.to_owned())])),
        ..LabelSelector::default()
    }
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

/// `deny-all-egress`.
pub fn deny_all_egress(tenant: &Tenant) -> NetworkPolicy {
    let network = &tenant.network;
    let egress = if !network.allowed_egress_cidrs.is_empty() {
        let to = network
            .allowed_egress_cidrs
            .iter()
            .map(|cidr| NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: cidr.clone(),
                    except: None,
                }),
                ..NetworkPolicyPeer::default()
            })
            .collect();
        vec![
            NetworkPolicyEgressRule {
                to: Some(to),
                ports: None,
            },
            cluster_dns(),
        ]
    } else if network.egress_allowed {
        vec![NetworkPolicyEgressRule::default()]
    } else {
        Vec::new()
    };
    NetworkPolicy {
        metadata: meta(tenant, "deny-all-egress"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(role_selector("sandbox")),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(egress),
            ingress: None,
        }),
    }
}

/// DNS (UDP and TCP 53) to the cluster's DNS pods in kube-system.
fn cluster_dns() -> NetworkPolicyEgressRule {
    let selector = |key: &str, value: &str| LabelSelector {
        match_labels: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        ..LabelSelector::default()
    };
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(selector("kubernetes.io/metadata.name", "kube-system")),
            pod_selector: Some(selector("k8s-app", "kube-dns")),
            ip_block: None,
        }]),
        ports: Some(vec![
            NetworkPolicyPort {
                protocol: Some("UDP".into()),
                ..tcp(53)
            },
            tcp(53),
        ]),
    }
}

/// `allow-server-to-sandbox`.
pub fn allow_server_to_sandbox(tenant: &Tenant) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(tenant, "allow-server-to-sandbox"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(role_selector("sandbox")),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(role_selector("server")),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![tcp(AGENT_PORT)]),
            }]),
            egress: None,
        }),
    }
}

/// `allow-ingress`.
pub fn allow_ingress(tenant: &Tenant) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(tenant, "allow-ingress"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(role_selector("server")),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: None,
                ports: Some(vec![tcp(server::HTTP_PORT)]),
            }]),
            egress: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::tests::acme;

    fn tenant_with(egress_allowed: bool, cidrs: &[&str]) -> Tenant {
        let mut resource = acme();
        resource.spec.network.egress_allowed = egress_allowed;
        resource.spec.network.allowed_egress_cidrs = cidrs.iter().map(|c| c.to_string()).collect();
        Tenant::from_resource(&resource).unwrap()
    }

    fn egress(policy: &NetworkPolicy) -> serde_json::Value {
        serde_json::to_value(policy).unwrap()["spec"]["egress"].clone()
    }

    #[test]
    fn sandboxes_send_nothing_by_default() {
        let policy = deny_all_egress(&tenant_with(false, &[]));
        let json = serde_json::to_value(&policy).unwrap();
        assert_eq!(
            json["spec"]["podSelector"]["matchLabels"],
            serde_json::json!({"cognition.dev/role": "sandbox"})
        );
        assert_eq!(json["spec"]["policyTypes"], serde_json::json!(["Egress"]));
        assert_eq!(egress(&policy), serde_json::json!([]));
    }

    #[test]
    fn egress_allowed_opens_everything() {
        let policy = deny_all_egress(&tenant_with(true, &[]));
        assert_eq!(egress(&policy), serde_json::json!([{}]));
    }

    #[test]
    fn cidrs_open_exactly_those_plus_dns() {
        for allowed in [false, true] {
            let policy = deny_all_egress(&tenant_with(allowed, &["10.0.0.0/8", "2001:db8::/32"]));
            let rules = egress(&policy);
            assert_eq!(
                rules[0],
                serde_json::json!({"to": [
                    {"ipBlock": {"cidr": "10.0.0.0/8"}},
                    {"ipBlock": {"cidr": "2001:db8::/32"}},
                ]})
            );
            assert_eq!(
                rules[1]["ports"][0],
                serde_json::json!({"port": 53, "protocol": "UDP"})
            );
            assert_eq!(rules.as_array().unwrap().len(), 2);
        }
    }
}
