//! The Kubernetes backend's own tests, on the fake API of [`crate::fake_k8s`]: the exact
//! requests of each mode (method, path, query, body), TTL patches, label selectors, startup
//! checks, a pod that cannot start, the maximum sandbox duration, re-adoption by a second
//! executor, and the agent's token. (The shared Exec/file/PTY suite runs on this backend too:
//! `exec::kubernetes::*`, `files::kubernetes::*`, `pty::kubernetes::*`.)

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cognition_executor::backend::agent_client::{self, AgentError, Endpoint};
use cognition_executor::backend::kubernetes::{KubernetesBackend, Settings, naming, startup};
use cognition_executor::config::K8sMode;
use cognition_executor::ids::SandboxId;
use cognition_executor::{BackendKind, Config, Engine};
use cognition_proto::executor::v1 as pb;
use serde_json::Value;

use crate::fake_k8s::{CLAIMS, FakeCluster, POD_PATH, Recorded, SANDBOXES};
use crate::support::*;

const NS: &str = "cognition";
const TOKEN: &str = "template-token-0123456789";

fn k8s_config(dir: &std::path::Path, cluster: &FakeCluster, mode: K8sMode) -> Config {
    let mut c = test_config(dir);
    c.sandbox_backend = BackendKind::Kubernetes;
    c.k8s_sandbox_mode = mode;
    c.k8s_sandbox_namespace = NS.into();
    c.k8s_agent_port = cluster.agent_port;
    c.k8s_agent_token = Some(cognition_config::Secret::new(TOKEN));
    c.k8s_ready_timeout_seconds = 20;
    c
}

async fn start(dir: &std::path::Path, cluster: &FakeCluster, config: Config) -> Server {
    let client = cluster.client();
    Server::start_with_engine(
        dir,
        |c| *c = config,
        move |config| {
            let backend = KubernetesBackend::new(
                client,
                Settings::from_config(&config),
                config.protected_paths.clone(),
            );
            Engine::with_backend(Arc::new(backend), config)
        },
    )
    .await
}

fn scoped_request(id: &str) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        sandbox_id: id.into(),
        labels: [
            ("cognition.io/session".to_string(), "sess-1".to_string()),
            ("cognition.io/user".into(), "alice".into()),
            ("cognition.io/email".into(), "alice@example.com".into()),
        ]
        .into(),
        ttl_seconds: 600,
        ..Default::default()
    }
}

fn with_method<'a>(requests: &'a [Recorded], method: &str) -> Vec<&'a Recorded> {
    requests.iter().filter(|r| r.method == method).collect()
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().expect("a time string"))
        .expect("rfc3339")
        .to_utc()
}

async fn echo(client: &Client, sandbox: &str) -> String {
    let out = run(
        client,
        argv(sandbox, "", &["sh", "-c", "echo hi from $(pwd)"]),
    )
    .await;
    assert_eq!(out.exited().exit_code, Some(0), "{out:?}");
    out.stdout_str()
}

#[tokio::test]
async fn pod_mode_requests_and_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(NS, TOKEN);
    let mut config = k8s_config(dir.path(), &cluster, K8sMode::Pod);
    config.k8s_workspace_pvc = "tenant-workspace".into();
    config.sandbox_image = "registry.example/cognition-sandbox:1".into();
    config.sandbox_cpu_millis = 1500;
    let server = start(dir.path(), &cluster, config).await;
    let pods = POD_PATH.replace("{ns}", NS);

    let sb = server.sandbox_with(scoped_request("Sess-1")).await;
    let name = naming::object_name(&SandboxId::parse("Sess-1").unwrap());
    assert_eq!(sb.backend, "kubernetes");
    assert_eq!(sb.workdir, "/workspace");
    let requests = cluster.requests();
    let posts = with_method(&requests, "POST");
    assert_eq!(posts.len(), 1, "{requests:#?}");
    assert_eq!(posts[0].path, pods);
    let pod = posts[0].body.as_ref().unwrap();
    assert_eq!(pod["metadata"]["name"], name.as_str());
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["cognition.dev/role"], "sandbox");
    assert_eq!(labels["cognition.io/session"], "sess-1");
    assert_eq!(labels["cognition.io/user"], "alice");
    assert!(
        labels.get("cognition.io/email").is_none(),
        "not a valid label value"
    );
    let notes = &pod["metadata"]["annotations"];
    assert_eq!(notes["cognition.io/sandbox-id"], "Sess-1");
    assert!(
        notes["cognition.io/labels"]
            .as_str()
            .unwrap()
            .contains("alice@example.com")
    );
    let spec = &pod["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &spec["containers"][0];
    assert_eq!(c["image"], "registry.example/cognition-sandbox:1");
    assert_eq!(
        c["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(c["resources"]["limits"]["cpu"], "1500m");
    assert_eq!(c["volumeMounts"][0]["subPath"], name.as_str());
    assert_eq!(
        spec["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "tenant-workspace"
    );
    let token = c["env"][0]["value"].as_str().unwrap();
    assert!(token.len() >= 32, "a per-pod token");
    // After the create, only reads until the pod ran.
    assert!(
        requests.iter().all(
            |r| r.method == "POST" || (r.method == "GET" && r.path == format!("{pods}/{name}"))
        )
    );

    assert!(echo(&server.client, &sb.id).await.starts_with("hi from"));

    // Lists narrow server-side by the valid labels of the selector.
    cluster.clear_requests();
    let listed = server
        .client
        .clone()
        .list_sandboxes(pb::ListSandboxesRequest {
            label_selector: [("cognition.io/user".to_string(), "alice".to_string())].into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sandboxes.len(), 1);
    let list = &cluster.requests()[0];
    assert_eq!(
        (list.method.as_str(), list.path.as_str()),
        ("GET", pods.as_str())
    );
    assert!(
        list.query.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dcognition-executor%2Ccognition.dev%2Frole%3Dsandbox%2Ccognition.io%2Fuser%3Dalice"),
        "{}", list.query
    );

    // Renew patches the expiry annotation.
    cluster.clear_requests();
    let renewed = server
        .client
        .clone()
        .renew_sandbox(pb::RenewSandboxRequest {
            sandbox_id: sb.id.clone(),
            ttl_seconds: 7200,
        })
        .await
        .unwrap()
        .into_inner()
        .sandbox
        .unwrap();
    let patches = cluster.requests();
    let patch = with_method(&patches, "PATCH")[0];
    assert_eq!(patch.path, format!("{pods}/{name}"));
    let at =
        time(&patch.body.as_ref().unwrap()["metadata"]["annotations"]["cognition.io/expires-at"]);
    assert!((at - Utc::now()).num_seconds() > 7100, "{at}");
    assert!(renewed.expires_at.unwrap().seconds > Utc::now().timestamp() + 7100);

    // Delete removes the pod (no grace) and the agent with it.
    cluster.clear_requests();
    server
        .client
        .clone()
        .delete_sandbox(pb::DeleteSandboxRequest {
            sandbox_id: sb.id.clone(),
        })
        .await
        .unwrap();
    let deletes = cluster.requests();
    let delete = with_method(&deletes, "DELETE")[0];
    assert_eq!(delete.path, format!("{pods}/{name}"));
    assert_eq!(delete.body.as_ref().unwrap()["gracePeriodSeconds"], 0);
    assert!(cluster.names(&pods).is_empty());
    assert_eq!(cluster.running_agents(), 0);
    let gone = server
        .client
        .clone()
        .get_sandbox(pb::GetSandboxRequest {
            sandbox_id: sb.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn agent_sandbox_mode_claims_ttl_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(NS, TOKEN);
    let mut config = k8s_config(dir.path(), &cluster, K8sMode::AgentSandbox);
    config.k8s_sandbox_warm_pool = "fast-pool".into();
    config.k8s_sandbox_ttl_seconds = 900;
    let server = start(dir.path(), &cluster, config).await;
    let claims = CLAIMS.replace("{ns}", NS);
    let sandboxes = SANDBOXES.replace("{ns}", NS);

    let sb = server.sandbox_with(scoped_request("s-2")).await;
    let name = naming::object_name(&SandboxId::parse("s-2").unwrap());
    let requests = cluster.requests();
    let post = with_method(&requests, "POST")[0];
    assert_eq!(post.path, claims);
    let body = post.body.as_ref().unwrap();
    assert_eq!(body["apiVersion"], "extensions.agents.x-k8s.io/v1alpha1");
    assert_eq!(body["kind"], "SandboxClaim");
    assert_eq!(
        body["spec"]["sandboxTemplateRef"]["name"],
        "cognition-sandbox"
    );
    assert_eq!(body["spec"]["warmpool"], "fast-pool");
    assert_eq!(body["metadata"]["labels"]["cognition.io/session"], "sess-1");
    assert_eq!(
        body["spec"]["additionalPodMetadata"]["labels"]["cognition.io/user"],
        "alice"
    );
    // The TTL: the Sandbox's spec.shutdownTime is patched to about now + 900 s.
    let patch = with_method(&requests, "PATCH")[0];
    assert_eq!(patch.path, format!("{sandboxes}/{name}"));
    let shutdown = time(&patch.body.as_ref().unwrap()["spec"]["shutdownTime"]);
    let left = (shutdown - Utc::now()).num_seconds();
    assert!((880..=900).contains(&left), "{left}");
    assert_eq!(
        time(&cluster.object(&sandboxes, &name).unwrap()["spec"]["shutdownTime"]),
        shutdown
    );

    // Commands reach the agent with the template's token.
    assert!(echo(&server.client, &sb.id).await.starts_with("hi from"));

    // Renewing moves both the record and the controller's deadline.
    cluster.clear_requests();
    server
        .client
        .clone()
        .renew_sandbox(pb::RenewSandboxRequest {
            sandbox_id: sb.id.clone(),
            ttl_seconds: 3600,
        })
        .await
        .unwrap();
    let requests = cluster.requests();
    let patches = with_method(&requests, "PATCH");
    assert_eq!(patches.len(), 2, "{requests:#?}");
    assert_eq!(patches[0].path, format!("{claims}/{name}"));
    assert_eq!(patches[1].path, format!("{sandboxes}/{name}"));
    let shutdown = time(&patches[1].body.as_ref().unwrap()["spec"]["shutdownTime"]);
    assert!((shutdown - Utc::now()).num_seconds() > 3500);

    // Deleting the claim (background propagation) removes the Sandbox and its pod.
    cluster.clear_requests();
    server
        .client
        .clone()
        .delete_sandbox(pb::DeleteSandboxRequest {
            sandbox_id: sb.id.clone(),
        })
        .await
        .unwrap();
    let requests = cluster.requests();
    let delete = with_method(&requests, "DELETE")[0];
    assert_eq!(delete.path, format!("{claims}/{name}"));
    assert_eq!(
        delete.body.as_ref().unwrap()["propagationPolicy"],
        "Background"
    );
    assert!(cluster.names(&claims).is_empty());
    assert!(cluster.names(&sandboxes).is_empty());
    assert_eq!(cluster.running_agents(), 0);
    server.stop().await;
}

#[tokio::test]
async fn startup_checks_crds_template_and_router() {
    let cluster = FakeCluster::new(NS, TOKEN);
    let dir = tempfile::tempdir().unwrap();
    let config = k8s_config(dir.path(), &cluster, K8sMode::AgentSandbox);
    let mut settings = Settings::from_config(&config);
    // Nothing listens on this port: the router check warns, the executor still starts.
    settings.router_url = "http://127.0.0.1:9".into();
    let warnings = startup::check(&cluster.client(), &settings).await.unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("sandbox-router at http://127.0.0.1:9"),
        "{warnings:?}"
    );
    let paths: Vec<String> = cluster
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        paths,
        [
            "GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions/sandboxes.agents.x-k8s.io",
            "GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions/sandboxclaims.extensions.agents.x-k8s.io",
            "GET /apis/extensions.agents.x-k8s.io/v1alpha1/namespaces/cognition/sandboxtemplates/cognition-sandbox",
        ]
    );

    // A missing template is fatal and says what to create.
    settings.template = "nope".into();
    let err = startup::check(&cluster.client(), &settings)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("SandboxTemplate cognition/nope not found"),
        "{err}"
    );

    // A missing CRD is fatal and names the install step.
    cluster.remove_crd("sandboxclaims.extensions.agents.x-k8s.io");
    let err = startup::check(&cluster.client(), &settings)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("sandboxclaims.extensions.agents.x-k8s.io is missing"),
        "{message}"
    );
    assert!(message.contains("kubectl apply -f"), "{message}");
    let status = err.into_status();
    assert_eq!(status.code(), tonic::Code::Unavailable);

    // Pod mode checks it may list pods in its namespace.
    cluster.clear_requests();
    let pod_settings = Settings::from_config(&k8s_config(dir.path(), &cluster, K8sMode::Pod));
    startup::check(&cluster.client(), &pod_settings)
        .await
        .unwrap();
    let r = &cluster.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("GET", "/api/v1/namespaces/cognition/pods")
    );
    assert!(r.query.contains("limit=1"), "{}", r.query);
}

#[tokio::test]
async fn a_pod_that_cannot_start_is_unavailable_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(NS, TOKEN);
    let mut config = k8s_config(dir.path(), &cluster, K8sMode::Pod);
    config.sandbox_image = "registry.example/missing:1".into();
    cluster.break_image("registry.example/missing:1");
    let server = start(dir.path(), &cluster, config).await;
    let err = server
        .client
        .clone()
        .create_sandbox(pb::CreateSandboxRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("ImagePullBackOff"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("registry.example/missing:1"),
        "{}",
        err.message()
    );
    assert!(
        cluster.names(&POD_PATH.replace("{ns}", NS)).is_empty(),
        "the pod was deleted"
    );
    server.stop().await;
}

#[tokio::test]
async fn pods_older_than_the_maximum_duration_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(NS, TOKEN);
    let mut config = k8s_config(dir.path(), &cluster, K8sMode::Pod);
    config.k8s_max_sandbox_duration_seconds = 1;
    config.reaper_interval_ms = 100;
    let server = start(dir.path(), &cluster, config).await;
    let sb = server
        .sandbox_with(pb::CreateSandboxRequest {
            ttl_seconds: 3600,
            ..Default::default()
        })
        .await;
    let expires = sb.expires_at.unwrap().seconds - sb.created_at.unwrap().seconds;
    assert!(expires <= 1, "the maximum duration caps the TTL: {expires}");
    let pods = POD_PATH.replace("{ns}", NS);
    wait_until(
        "the reaper deletes the pod",
        Duration::from_secs(10),
        || async { cluster.names(&pods).is_empty() },
    )
    .await;
    assert_eq!(cluster.running_agents(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_second_executor_adopts_the_sandboxes() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(NS, TOKEN);
    let config = k8s_config(dir.path(), &cluster, K8sMode::Pod);
    let first = start(dir.path(), &cluster, config.clone()).await;
    let sb = first.sandbox_with(scoped_request("adopt-me")).await;
    first.stop().await;
    let second = start(dir.path(), &cluster, config).await;
    let listed = second
        .client
        .clone()
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sandboxes;
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["adopt-me"]
    );
    assert_eq!(listed[0].labels["cognition.io/email"], "alice@example.com");
    assert!(echo(&second.client, &sb.id).await.starts_with("hi from"));
    second.stop().await;
}

#[tokio::test]
async fn the_agent_refuses_a_wrong_token() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(NS, TOKEN);
    let server = start(
        dir.path(),
        &cluster,
        k8s_config(dir.path(), &cluster, K8sMode::Pod),
    )
    .await;
    let sb = server.sandbox().await;
    let name = naming::object_name(&SandboxId::parse(&sb.id).unwrap());
    let pod = cluster
        .object(&POD_PATH.replace("{ns}", NS), &name)
        .unwrap();
    let addr = format!(
        "{}:{}",
        pod["status"]["podIP"].as_str().unwrap(),
        cluster.agent_port
    );
    let wrong = Endpoint::Tcp {
        addr: addr.clone(),
        token: "not-the-token-of-this-pod".into(),
    };
    match agent_client::ping(&wrong).await {
        Err(AgentError::Refused(reason)) => assert_eq!(reason, "wrong agent token"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let right = Endpoint::Tcp {
        addr,
        token: pod["spec"]["containers"][0]["env"][0]["value"]
            .as_str()
            .unwrap()
            .into(),
    };
    assert!(
        agent_client::ping(&right)
            .await
            .unwrap()
            .starts_with("cognition-sandbox-agent/")
    );
    server.stop().await;
}
