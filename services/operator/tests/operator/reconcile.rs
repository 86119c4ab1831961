//! Whole reconciles of the sample tenant against the fake API.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_api::Call;
use crate::{
    APPLY_QUERY, SOURCE_SECRET_PATH, TENANT_PATH, acme, base64, fake_with, reconcile_stored,
    source_secret,
};

const NS: &str = "/api/v1/namespaces/cognition-tenant-acme";
const NETPOL: &str = "/apis/networking.k8s.io/v1/namespaces/cognition-tenant-acme";
const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/cognition-tenant-acme";
const APPS: &str = "/apis/apps/v1/namespaces/cognition-tenant-acme";

/// The paths of one full apply, in order.
fn apply_paths() -> Vec<String> {
    vec![
        NS.to_owned(),
        format!("{NS}/resourcequotas/tenant-quota"),
        format!("{NS}/limitranges/tenant-limits"),
        format!("{NETPOL}/networkpolicies/deny-all-egress"),
        format!("{NETPOL}/networkpolicies/allow-server-to-sandbox"),
        format!("{NETPOL}/networkpolicies/allow-ingress"),
        format!("{NS}/serviceaccounts/cognition-server"),
        format!("{RBAC}/roles/sandbox-manager"),
        format!("{RBAC}/rolebindings/server-sandbox-manager"),
        format!("{NS}/secrets/llm-credentials"),
        format!("{NS}/persistentvolumeclaims/tenant-workspace"),
        format!("{APPS}/deployments/cognition-server"),
        format!("{NS}/services/cognition-server"),
        format!("{NETPOL}/ingresses/tenant-ingress"),
    ]
}

fn body<'a>(calls: &'a [Call], path: &str) -> &'a Value {
    &calls
        .iter()
        .find(|c| c.path == path)
        .unwrap_or_else(|| panic!("no request to {path}"))
        .body
}

fn env_of(deployment: &Value) -> Vec<(String, Value)> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let value = e
                .get("value")
                .cloned()
                .unwrap_or_else(|| e["valueFrom"].clone());
            (e["name"].as_str().unwrap().to_owned(), value)
        })
        .collect()
}

fn rollout_hash(deployment: &Value) -> String {
    deployment["spec"]["template"]["metadata"]["annotations"]["cognition.dev/llm-config-hash"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn changed_paths(calls: &[Call]) -> Vec<&str> {
    calls
        .iter()
        .filter(|c| c.changed)
        .map(|c| c.path.as_str())
        .collect()
}

#[tokio::test]
async fn one_reconcile_makes_exactly_these_requests() {
    let (ctx, fake) = fake_with(acme());
    let (action, calls) = reconcile_stored(&ctx, &fake).await;
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(300))
    );

    let mut expected = vec![format!("GET {SOURCE_SECRET_PATH}")];
    expected.extend(
        apply_paths()
            .iter()
            .map(|p| format!("PATCH {p}?{APPLY_QUERY}")),
    );
    expected.push(format!(
        "PATCH {TENANT_PATH}/status?fieldManager=cognition-operator"
    ));
    let lines: Vec<String> = calls.iter().map(Call::line).collect();
    assert_eq!(lines, expected);
    for call in &calls[1..15] {
        assert_eq!(
            call.content_type, "application/apply-patch+yaml",
            "{}",
            call.path
        );
        let labels = &call.body["metadata"]["labels"];
        assert_eq!(labels["cognition.dev/tenant"], "acme", "{}", call.path);
        assert_eq!(
            labels["app.kubernetes.io/managed-by"], "cognition-operator",
            "{}",
            call.path
        );
        assert!(call.changed, "{} was new", call.path);
    }

    let namespace = body(&calls, NS);
    assert_eq!(namespace["kind"], "Namespace");
    assert_eq!(namespace["metadata"]["name"], "cognition-tenant-acme");

    // 10 sessions × (2 CPU, 4Gi) + the server's 500m and 1Gi.
    let quota = body(&calls, &format!("{NS}/resourcequotas/tenant-quota"));
    assert_eq!(
        quota["spec"]["hard"],
        json!({
            "pods": "12",
            "requests.cpu": "20500m", "limits.cpu": "20500m",
            "requests.memory": "41Gi", "limits.memory": "41Gi",
            "persistentvolumeclaims": "2",
            "requests.storage": "50Gi"
        })
    );
    let limits = body(&calls, &format!("{NS}/limitranges/tenant-limits"));
    assert_eq!(
        limits["spec"]["limits"][0],
        json!({
            "type": "Container",
            "default": {"cpu": "2", "memory": "4Gi"},
            "defaultRequest": {"cpu": "2", "memory": "4Gi"},
            "max": {"cpu": "2", "memory": "4Gi"}
        })
    );

    let sandbox = json!({"matchLabels": {"cognition.dev/role": "sandbox"}});
    let server = json!({"matchLabels": {"cognition.dev/role": "server"}});
    let deny = body(&calls, &format!("{NETPOL}/networkpolicies/deny-all-egress"));
    assert_eq!(
        deny["spec"],
        json!({"podSelector": sandbox, "policyTypes": ["Egress"], "egress": []})
    );
    let to_sandbox = body(
        &calls,
        &format!("{NETPOL}/networkpolicies/allow-server-to-sandbox"),
    );
    assert_eq!(
        to_sandbox["spec"],
        json!({"podSelector": sandbox, "policyTypes": ["Ingress"],
               "ingress": [{"from": [{"podSelector": server}], "ports": [{"port": 7070, "protocol": "TCP"}]}]})
    );
    let ingress_policy = body(&calls, &format!("{NETPOL}/networkpolicies/allow-ingress"));
    assert_eq!(
        ingress_policy["spec"],
        json!({"podSelector": server, "policyTypes": ["Ingress"],
               "ingress": [{"ports": [{"port": 8000, "protocol": "TCP"}]}]})
    );

    let role = body(&calls, &format!("{RBAC}/roles/sandbox-manager"));
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete", "get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}
        ])
    );
    let binding = body(
        &calls,
        &format!("{RBAC}/rolebindings/server-sandbox-manager"),
    );
    assert_eq!(binding["roleRef"]["name"], "sandbox-manager");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "cognition-server", "namespace": "cognition-tenant-acme"}])
    );

    let secret = body(&calls, &format!("{NS}/secrets/llm-credentials"));
    assert_eq!(
        secret["data"],
        json!({"api-key": base64(b"sk-test-1")}),
        "only the referenced key is copied"
    );
    assert_eq!(secret["metadata"]["namespace"], "cognition-tenant-acme");

    let pvc = body(
        &calls,
        &format!("{NS}/persistentvolumeclaims/tenant-workspace"),
    );
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "50Gi");
    assert_eq!(pvc["spec"]["storageClassName"], "gp3");

    let deployment = body(&calls, &format!("{APPS}/deployments/cognition-server"));
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["cognition.dev/role"], "server");
    assert_eq!(pod["spec"]["serviceAccountName"], "cognition-server");
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/cognition:1.0");
    assert_eq!(container["args"], json!(["up"]));
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(container["ports"][0]["containerPort"], 8000);
    assert_eq!(
        env_of(deployment),
        [
            ("COGNITION_HOST", json!("0.0.0.0")),
            ("COGNITION_DATA_DIR", json!("/data")),
            ("COGNITION_SANDBOX_BACKEND", json!("kubernetes")),
            ("COGNITION_K8S_SANDBOX_MODE", json!("pod")),
            ("COGNITION_K8S_SANDBOX_NAMESPACE", json!("cognition-tenant-acme")),
            ("COGNITION_SANDBOX_IMAGE", json!("cognition-sandbox:latest")),
            ("COGNITION_K8S_SANDBOX_PULL_POLICY", json!("IfNotPresent")),
            ("COGNITION_SANDBOX_CPU_MILLIS", json!("2000")),
            ("COGNITION_SANDBOX_MEMORY_BYTES", json!("4294967296")),
            ("COGNITION_K8S_WORKSPACE_PVC", json!("tenant-workspace")),
            ("COGNITION_K8S_MAX_SANDBOX_DURATION", json!("3600")),
            ("COGNITION_LLM_PROVIDER", json!("openai")),
            ("COGNITION_LLM_MODEL", json!("gpt-4o")),
            (
                "COGNITION_LLM_API_KEY",
                json!({"secretKeyRef": {"name": "llm-credentials", "key": "api-key", "optional": false}})
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v))
    );
    assert_eq!(rollout_hash(deployment).len(), 64);
    let volume_mounts = &container["volumeMounts"];
    assert_eq!(
        volume_mounts,
        &json!([{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}])
    );

    let service = body(&calls, &format!("{NS}/services/cognition-server"));
    assert_eq!(service["spec"]["ports"][0]["port"], 8000);
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    let ingress = body(&calls, &format!("{NETPOL}/ingresses/tenant-ingress"));
    assert_eq!(
        ingress["spec"]["rules"][0]["host"],
        "acme.cognition.example.com"
    );
    assert_eq!(
        ingress["spec"]["tls"],
        json!([{"hosts": ["acme.cognition.example.com"], "secretName": "wildcard-tls"}])
    );
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"],
        json!({"service": {"name": "cognition-server", "port": {"number": 8000}}})
    );

    let status = calls.last().unwrap();
    assert_eq!(status.content_type, "application/merge-patch+json");
    let condition = &status.body["status"]["conditions"][0];
    assert_eq!(condition["type"], "Ready");
    assert_eq!(condition["status"], "True");
    assert_eq!(condition["reason"], "Provisioned");
    assert_eq!(
        condition["message"],
        "14 resources applied in namespace cognition-tenant-acme"
    );
    assert_eq!(condition["observedGeneration"], 1);
    assert!(condition["lastTransitionTime"].is_string());
    assert_eq!(status.body["status"]["observedGeneration"], 1);
}

#[tokio::test]
async fn a_second_reconcile_changes_nothing_and_writes_no_status() {
    let (ctx, fake) = fake_with(acme());
    let (_, first) = reconcile_stored(&ctx, &fake).await;
    assert_eq!(changed_paths(&first).len(), 15, "14 objects and the status");

    let (action, second) = reconcile_stored(&ctx, &fake).await;
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(300))
    );
    assert_eq!(
        second.len(),
        15,
        "the Secret read and 14 applies: {second:#?}"
    );
    assert!(
        second.iter().all(|c| !c.path.ends_with("/status")),
        "status written again"
    );
    assert_eq!(changed_paths(&second), Vec::<&str>::new());
}

#[tokio::test]
async fn a_new_tenant_first_gets_the_finalizer() {
    let mut tenant = acme();
    tenant["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("finalizers");
    let (ctx, fake) = fake_with(tenant);
    let (action, calls) = reconcile_stored(&ctx, &fake).await;
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let lines: Vec<String> = calls.iter().map(Call::line).collect();
    assert_eq!(lines, [format!("PATCH {TENANT_PATH}")]);
    assert_eq!(calls[0].content_type, "application/json-patch+json");
    assert_eq!(
        calls[0].body,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["cognition.dev/tenant-cleanup"]}
        ])
    );
    assert_eq!(
        fake.get(TENANT_PATH).unwrap()["metadata"]["finalizers"],
        json!(["cognition.dev/tenant-cleanup"])
    );
    // The next reconcile (triggered by that change) provisions.
    let (_, calls) = reconcile_stored(&ctx, &fake).await;
    assert_eq!(calls.len(), 16);
}

#[tokio::test]
async fn deletion_deletes_the_namespace_then_removes_the_finalizer() {
    let (ctx, fake) = fake_with(acme());
    reconcile_stored(&ctx, &fake).await;
    let mut tenant = fake.get(TENANT_PATH).unwrap();
    tenant["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
    tenant["metadata"]["finalizers"] =
        json!(["other.example/keep", "cognition.dev/tenant-cleanup"]);
    fake.put(TENANT_PATH, tenant);

    let (action, calls) = reconcile_stored(&ctx, &fake).await;
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let lines: Vec<String> = calls.iter().map(Call::line).collect();
    assert_eq!(
        lines,
        [format!("DELETE {NS}"), format!("PATCH {TENANT_PATH}")]
    );
    assert!(calls[0].changed, "the namespace existed");
    assert_eq!(
        calls[1].body,
        json!([
            {"op": "test", "path": "/metadata/finalizers/1", "value": "cognition.dev/tenant-cleanup"},
            {"op": "remove", "path": "/metadata/finalizers/1"}
        ])
    );
    assert_eq!(fake.get(NS), None);
    assert_eq!(
        fake.get(TENANT_PATH).unwrap()["metadata"]["finalizers"],
        json!(["other.example/keep"])
    );
}

#[tokio::test]
async fn deletion_tolerates_an_already_deleted_namespace() {
    let mut tenant = acme();
    tenant["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
    let (ctx, fake) = fake_with(tenant);
    let (_, calls) = reconcile_stored(&ctx, &fake).await;
    let lines: Vec<String> = calls.iter().map(Call::line).collect();
    assert_eq!(
        lines,
        [format!("DELETE {NS}"), format!("PATCH {TENANT_PATH}")]
    );
    assert_eq!(
        fake.get(TENANT_PATH).unwrap()["metadata"]["finalizers"],
        json!([])
    );
}

#[tokio::test]
async fn an_llm_change_rolls_the_server() {
    let (ctx, fake) = fake_with(acme());
    let (_, first) = reconcile_stored(&ctx, &fake).await;
    let deployment_path = format!("{APPS}/deployments/cognition-server");
    let hash_before = rollout_hash(body(&first, &deployment_path));

    let mut tenant = fake.get(TENANT_PATH).unwrap();
    tenant["spec"]["llm"]["model"] = json!("gpt-4.1");
    tenant["metadata"]["generation"] = json!(2);
    fake.put(TENANT_PATH, tenant);
    let (_, calls) = reconcile_stored(&ctx, &fake).await;
    let deployment = body(&calls, &deployment_path);
    assert_ne!(rollout_hash(deployment), hash_before);
    assert!(env_of(deployment).contains(&("COGNITION_LLM_MODEL".to_owned(), json!("gpt-4.1"))));
    assert_eq!(
        changed_paths(&calls),
        [deployment_path.as_str(), &format!("{TENANT_PATH}/status")]
    );
    let status = &calls.last().unwrap().body["status"];
    assert_eq!(status["observedGeneration"], 2);

    // A rotated key (same spec) rolls the server too, and updates the copy.
    let hash_model = rollout_hash(deployment);
    fake.put(SOURCE_SECRET_PATH, source_secret("sk-test-2"));
    let (_, calls) = reconcile_stored(&ctx, &fake).await;
    assert_ne!(rollout_hash(body(&calls, &deployment_path)), hash_model);
    let secret_path = format!("{NS}/secrets/llm-credentials");
    assert_eq!(
        body(&calls, &secret_path)["data"]["api-key"],
        base64(b"sk-test-2")
    );
    assert_eq!(
        changed_paths(&calls),
        [secret_path.as_str(), &deployment_path]
    );
}

#[tokio::test]
async fn a_quota_change_updates_the_resource_quota() {
    let (ctx, fake) = fake_with(acme());
    reconcile_stored(&ctx, &fake).await;
    let mut tenant = fake.get(TENANT_PATH).unwrap();
    tenant["spec"]["quotas"]["maxSessions"] = json!(20);
    tenant["metadata"]["generation"] = json!(2);
    fake.put(TENANT_PATH, tenant);

    let (_, calls) = reconcile_stored(&ctx, &fake).await;
    let quota_path = format!("{NS}/resourcequotas/tenant-quota");
    assert_eq!(
        changed_paths(&calls),
        [quota_path.as_str(), &format!("{TENANT_PATH}/status")]
    );
    let hard = &body(&calls, &quota_path)["spec"]["hard"];
    assert_eq!(hard["pods"], "22");
    assert_eq!(hard["limits.cpu"], "40500m");
    assert_eq!(hard["limits.memory"], "81Gi");
    assert_eq!(fake.get(&quota_path).unwrap()["spec"]["hard"]["pods"], "22");
}

#[tokio::test]
async fn an_invalid_spec_is_reported_and_creates_nothing() {
    let mut tenant = acme();
    tenant["spec"]["quotas"]["maxMemoryPerSandbox"] = json!("4GB");
    tenant["spec"]["network"]["allowedEgressCIDRs"] = json!(["10.0.0.0/8", "10.1.2.3/8"]);
    tenant["spec"]["llm"]["apiKeySecretRef"]["name"] = json!("");
    let (ctx, fake) = fake_with(tenant);

    let (action, calls) = reconcile_stored(&ctx, &fake).await;
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let lines: Vec<String> = calls.iter().map(Call::line).collect();
    assert_eq!(
        lines,
        [format!(
            "PATCH {TENANT_PATH}/status?fieldManager=cognition-operator"
        )]
    );
    let condition = &calls[0].body["status"]["conditions"][0];
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "InvalidSpec");
    assert_eq!(
        condition["message"],
        "invalid spec: spec.quotas.maxMemoryPerSandbox: \"4GB\" is not a Kubernetes quantity \
         (expected e.g. 4Gi or 512Mi); spec.llm.apiKeySecretRef.name: must not be empty; \
         spec.network.allowedEgressCIDRs[1]: \"10.1.2.3/8\" has host bits set; did you mean \
         10.0.0.0/8?"
    );

    let (_, again) = reconcile_stored(&ctx, &fake).await;
    assert!(
        again.is_empty(),
        "an unchanged invalid spec makes no requests: {again:#?}"
    );
}

#[tokio::test]
async fn a_missing_secret_or_key_is_reported_and_retried() {
    let (ctx, fake) = fake_with(acme());
    let mut secret = source_secret("x");
    secret["data"]
        .as_object_mut()
        .unwrap()
        .remove("OPENAI_API_KEY");
    fake.put(SOURCE_SECRET_PATH, secret);
    let (action, calls) = reconcile_stored(&ctx, &fake).await;
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(30))
    );
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let condition = &calls[1].body["status"]["conditions"][0];
    assert_eq!(condition["reason"], "SecretKeyMissing");
    assert_eq!(
        condition["message"],
        "Secret cognition-system/acme-llm-keys has no (or an empty) key \"OPENAI_API_KEY\" \
         (spec.llm.apiKeySecretRef.key)"
    );

    fake.remove(SOURCE_SECRET_PATH);
    let (_, gone) = reconcile_stored(&ctx, &fake).await;
    let path = SOURCE_SECRET_PATH;
    assert_eq!(gone[0].line(), format!("GET {path}"));
    let condition = &gone[1].body["status"]["conditions"][0];
    assert_eq!(condition["reason"], "SecretNotFound");
    assert_eq!(
        condition["message"],
        "Secret cognition-system/acme-llm-keys (spec.llm.apiKeySecretRef) not found; create it \
         with the key \"OPENAI_API_KEY\""
    );
    assert_eq!(
        gone.len(),
        2,
        "nothing applied without the Secret: {gone:#?}"
    );
}

#[tokio::test]
async fn a_failed_apply_stops_the_reconcile_and_is_reported() {
    let (ctx, fake) = fake_with(acme());
    let deployment_path = format!("{APPS}/deployments/cognition-server");
    fake.reject(&deployment_path, "spec.selector: field is immutable");
    let tenant: cognition_operator::CognitionTenant =
        serde_json::from_value(fake.get(TENANT_PATH).unwrap()).unwrap();
    let error = cognition_operator::reconcile::reconcile(std::sync::Arc::new(tenant), ctx.clone())
        .await
        .expect_err("the apply failed");
    let text = error.to_string();
    assert!(
        text.contains("applying Deployment cognition-tenant-acme/cognition-server"),
        "{text}"
    );
    let calls = fake.take_calls();
    let lines: Vec<String> = calls.iter().map(Call::line).collect();
    assert_eq!(lines[12], format!("PATCH {deployment_path}?{APPLY_QUERY}"));
    assert_eq!(
        lines[13],
        format!("PATCH {TENANT_PATH}/status?fieldManager=cognition-operator"),
        "nothing is applied after the failure"
    );
    assert_eq!(lines.len(), 14);
    let condition = &calls[13].body["status"]["conditions"][0];
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "ApplyFailed");
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.starts_with("applying Deployment cognition-tenant-acme/cognition-server: ")
            && message.contains("spec.selector: field is immutable"),
        "{message}"
    );
}
