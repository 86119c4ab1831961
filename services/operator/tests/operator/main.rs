//! Tests of the operator against a fake Kubernetes API served through kube's mock service:
//! whole reconciles (requests, bodies, idempotency, updates, deletion, invalid specs), the
//! controller loop, the built manifests against the Kubernetes schemas, and the committed CRD.

mod controller;
mod crd_file;
mod fake_api;
mod manifests;
mod reconcile;

use std::sync::Arc;

use cognition_operator::reconcile::{Context, reconcile};
use cognition_operator::{CognitionTenant, Config};
use fake_api::{Call, FakeApi};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

/// Where the sample tenant lives in the fake API.
pub const TENANT_PATH: &str =
    "/apis/cognition.dev/v1/namespaces/cognition-system/cognitiontenants/acme";
/// Where its LLM Secret lives.
pub const SOURCE_SECRET_PATH: &str = "/api/v1/namespaces/cognition-system/secrets/acme-llm-keys";
/// The query of every server-side apply.
pub const APPLY_QUERY: &str = "force=true&fieldManager=cognition-operator";

/// The seed's sample tenant, with the operator's finalizer already on it.
pub fn acme() -> Value {
    json!({
        "apiVersion": "cognition.dev/v1",
        "kind": "CognitionTenant",
        "metadata": {
            "name": "acme",
            "namespace": "cognition-system",
            "generation": 1,
            "uid": "7d6c3c2e-0000-4000-8000-000000000001",
            "finalizers": ["cognition.dev/tenant-cleanup"]
        },
        "spec": {
            "displayName": "Acme Corp",
            "adminEmail": "admin@acme.com",
            "quotas": {
                "maxSessions": 10,
                "maxCpuPerSandbox": "2",
                "maxMemoryPerSandbox": "4Gi",
                "maxStorageGb": 50,
                "maxSandboxDurationMinutes": 60
            },
            "llm": {
                "provider": "openai",
                "model": "gpt-4o",
                "apiKeySecretRef": {"name": "acme-llm-keys", "key": "OPENAI_API_KEY"}
            },
            "sandbox": {"image": "cognition-sandbox:latest", "pullPolicy": "IfNotPresent"},
            "network": {"egressAllowed": false, "allowedEgressCIDRs": []}
        }
    })
}

/// The Secret `acme-llm-keys` holding `key` under OPENAI_API_KEY (plus an unrelated key).
pub fn source_secret(key: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "acme-llm-keys", "namespace": "cognition-system"},
        "data": {"OPENAI_API_KEY": base64(key.as_bytes()), "OTHER": base64(b"unrelated")}
    })
}

/// A configuration using every option.
pub fn config() -> Config {
    Config {
        server_image: "registry.example/cognition:1.0".into(),
        domain: "cognition.example.com".into(),
        tls_secret: "wildcard-tls".into(),
        storage_class: "gp3".into(),
        watch_namespace: String::new(),
    }
}

/// A fake API holding `tenant` and the sample Secret.
pub fn fake_with(tenant: Value) -> (Arc<Context>, FakeApi) {
    let (client, fake) = FakeApi::start();
    fake.put(TENANT_PATH, tenant);
    fake.put(SOURCE_SECRET_PATH, source_secret("sk-test-1"));
    (Arc::new(Context::new(client, config())), fake)
}

/// Reconciles the tenant as currently stored in the fake API; returns the action and the calls.
pub async fn reconcile_stored(ctx: &Arc<Context>, fake: &FakeApi) -> (Action, Vec<Call>) {
    let tenant: CognitionTenant = serde_json::from_value(fake.get(TENANT_PATH).unwrap()).unwrap();
    let action = reconcile(Arc::new(tenant), ctx.clone())
        .await
        .expect("reconcile succeeds");
    (action, fake.take_calls())
}

/// Standard base64 (padding included), as Secret data is written.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_matches_the_standard_alphabet() {
    assert_eq!(base64(b"sk-test-1"), "c2stdGVzdC0x");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"a"), "YQ==");
}
