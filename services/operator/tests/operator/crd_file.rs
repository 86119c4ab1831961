//! The committed CRD manifest is exactly what the Rust type generates.

use cognition_operator::crd::{CRD_PATH, crd_yaml};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

fn committed() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(CRD_PATH);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}; {}", path.display(), HOW_TO_REGENERATE))
}

const HOW_TO_REGENERATE: &str = "regenerate it from the workspace root with \
    `cargo run -q -p cognition-operator -- crd > deploy/crds/cognitiontenant.yaml`";

#[test]
fn the_committed_crd_matches_the_type() {
    let generated = crd_yaml();
    assert!(
        committed() == generated,
        "{CRD_PATH} differs from what services/operator/src/crd.rs generates; {HOW_TO_REGENERATE}"
    );
}

#[test]
fn the_crd_is_namespaced_v1_with_a_status_subresource() {
    let crd: CustomResourceDefinition = serde_yaml::from_str(&committed()).unwrap();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("cognitiontenants.cognition.dev")
    );
    assert_eq!(crd.spec.group, "cognition.dev");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "CognitionTenant");
    let version = &crd.spec.versions[0];
    assert_eq!(
        (version.name.as_str(), version.served, version.storage),
        ("v1", true, true)
    );
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let schema = serde_json::to_value(&version.schema).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(
        spec["required"],
        serde_json::json!(["adminEmail", "displayName", "llm", "quotas"])
    );
    assert!(spec["properties"]["network"]["properties"]["allowedEgressCIDRs"].is_object());
}
