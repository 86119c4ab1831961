//! Every built object is a valid Kubernetes object: it deserializes back as its k8s-openapi type
//! without losing a field, and (when `kubernetes-validate` is installed) passes the Kubernetes
//! 1.33 schemas in strict mode.

use std::io::Write as _;
use std::process::Command;

use cognition_operator::crd::crd_yaml;
use cognition_operator::resources::{Manifest, desired};
use cognition_operator::tenant::Tenant;
use cognition_operator::{CognitionTenant, Config};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::{acme, config};

/// The sample tenant with egress CIDRs (the policy with the most fields).
fn representative() -> Vec<Manifest> {
    let mut resource = acme();
    resource["spec"]["network"] = json!({"allowedEgressCIDRs": ["10.0.0.0/8", "2001:db8::/32"]});
    let resource: CognitionTenant = serde_json::from_value(resource).unwrap();
    let tenant = Tenant::from_resource(&resource).unwrap();
    desired(&tenant, &config(), &ByteString(b"sk-test-1".to_vec()))
}

fn round_trip<K: DeserializeOwned + Serialize>(manifest: &Manifest) {
    let typed: K = manifest
        .typed()
        .unwrap_or_else(|e| panic!("{} does not deserialize: {e}", manifest.describe()));
    assert_eq!(
        serde_json::to_value(&typed).unwrap(),
        manifest.body,
        "{} changed in a round trip",
        manifest.describe()
    );
}

#[test]
fn every_object_round_trips_as_its_type() {
    let configs = [config(), Config::default()];
    let mut kinds = Vec::new();
    for config in &configs {
        let resource: CognitionTenant = serde_json::from_value(acme()).unwrap();
        let tenant = Tenant::from_resource(&resource).unwrap();
        for manifest in desired(&tenant, config, &ByteString(b"k".to_vec()))
            .iter()
            .chain(&representative())
        {
            match manifest.resource.kind.as_str() {
                "Namespace" => round_trip::<Namespace>(manifest),
                "ResourceQuota" => round_trip::<ResourceQuota>(manifest),
                "LimitRange" => round_trip::<LimitRange>(manifest),
                "NetworkPolicy" => round_trip::<NetworkPolicy>(manifest),
                "ServiceAccount" => round_trip::<ServiceAccount>(manifest),
                "Role" => round_trip::<Role>(manifest),
                "RoleBinding" => round_trip::<RoleBinding>(manifest),
                "Secret" => round_trip::<Secret>(manifest),
                "PersistentVolumeClaim" => round_trip::<PersistentVolumeClaim>(manifest),
                "Deployment" => round_trip::<Deployment>(manifest),
                "Service" => round_trip::<Service>(manifest),
                "Ingress" => round_trip::<Ingress>(manifest),
                other => panic!("untested kind {other}"),
            }
            kinds.push(manifest.resource.kind.clone());
        }
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds.len(), 12, "{kinds:?}");
}

#[test]
fn without_a_domain_there_is_no_ingress_and_the_default_storage_class() {
    let resource: CognitionTenant = serde_json::from_value(acme()).unwrap();
    let tenant = Tenant::from_resource(&resource).unwrap();
    let manifests = desired(&tenant, &Config::default(), &ByteString(b"k".to_vec()));
    assert!(manifests.iter().all(|m| m.resource.kind != "Ingress"));
    let pvc = manifests
        .iter()
        .find(|m| m.resource.kind == "PersistentVolumeClaim")
        .unwrap();
    assert!(pvc.body["spec"].get("storageClassName").is_none());
}

#[test]
fn objects_pass_the_kubernetes_schemas() {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    for manifest in representative() {
        writeln!(
            file,
            "---\n{}",
            serde_yaml::to_string(&manifest.body).unwrap()
        )
        .unwrap();
    }
    write!(file, "---\n{}", crd_yaml()).unwrap();
    file.flush().unwrap();

    let output = match Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.33.0"])
        .arg(file.path())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "kubernetes-validate is not installed; tests/scripts/deps.sh installs it \
                 (pip install kubernetes-validate)"
            );
            eprintln!(
                "skipped: kubernetes-validate is not installed (pip install kubernetes-validate)"
            );
            return;
        }
        Err(e) => panic!("running kubernetes-validate: {e}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kubernetes-validate rejected the manifests:\n{stdout}\n{stderr}"
    );
    // 14 tenant objects + the CRD, each reported as valid.
    let report = format!("{stdout}{stderr}");
    assert_eq!(
        report.matches(" passed for resource ").count(),
        15,
        "{report}"
    );
}
