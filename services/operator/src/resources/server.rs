//! The tenant's server: Deployment `cognition-server` running the all-in-one `cognition up`
//! image with the Kubernetes sandbox backend in pod mode (sandbox pods in the tenant namespace),
//! and its ClusterIP Service `cognition-server` on port 8000.
//!
//! The pod template carries [`ROLLOUT_ANNOTATION`], a hash of the LLM spec and the API key, so
//! changing either rolls the server.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use super::secret::{LLM_SECRET, LLM_SECRET_KEY};
use super::storage::WORKSPACE_PVC;
use super::{ROLE_LABEL, labels, meta, rbac};
use crate::config::Config;
use crate::quantity::{Bytes, Cpu};
use crate::tenant::Tenant;

/// Name of the Deployment, its container's Service, and the Ingress backend.
pub const NAME: &str = "cognition-server";
/// The gateway's HTTP port (`/health`, `/ready`, the API).
pub const HTTP_PORT: i32 = 8000;
/// The server's CPU request and limit (its share of the tenant quota).
pub const CPU_MILLIS: u64 = 500;
/// The server's memory request and limit (its share of the tenant quota).
pub const MEMORY_BYTES: u64 = 1 << 30;
/// Pod-template annotation: hash of the LLM spec and key; a change rolls the Deployment.
pub const ROLLOUT_ANNOTATION: &str = "cognition.dev/llm-config-hash";
/// Where the server keeps its SQLite database (an emptyDir).
pub const DATA_DIR: &str = "/data";
/// The non-root user the server runs as.
pub const RUN_AS_USER: i64 = 1000;

/// The labels selecting the server pod (stable: a Deployment's selector is immutable).
pub fn selector_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), NAME.to_owned()),
        (ROLE_LABEL.to_owned(), "server".to_owned()),
    ])
}

/// Hex SHA-256 of the LLM spec and the API key.
pub fn llm_hash(tenant: &Tenant, api_key: &ByteString) -> String {
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(&tenant.llm).expect("the LLM spec serializes"));
    hasher.update([0]);
    hasher.update(&api_key.0);
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The server's environment (see the Kubernetes contract of the executor).
pub fn environment(tenant: &Tenant) -> Vec<EnvVar> {
    vec![
        env("COGNITION_HOST", "0.0.0.0"),
        env("COGNITION_DATA_DIR", DATA_DIR),
        env("COGNITION_SANDBOX_BACKEND", "kubernetes"),
        env("COGNITION_K8S_SANDBOX_MODE", "pod"),
        env("COGNITION_K8S_SANDBOX_NAMESPACE", tenant.namespace.clone()),
        env("COGNITION_SANDBOX_IMAGE", tenant.sandbox.image.clone()),
        env(
            "COGNITION_K8S_SANDBOX_PULL_POLICY",
            tenant.sandbox.pull_policy.clone(),
        ),
        env(
            "COGNITION_SANDBOX_CPU_MILLIS",
            tenant.sandbox_cpu_millis.to_string(),
        ),
        env(
            "COGNITION_SANDBOX_MEMORY_BYTES",
            tenant.sandbox_memory_bytes.to_string(),
        ),
        env("COGNITION_K8S_WORKSPACE_PVC", WORKSPACE_PVC),
        env(
            "COGNITION_K8S_MAX_SANDBOX_DURATION",
            tenant.max_sandbox_duration_secs.to_string(),
        ),
        env("COGNITION_LLM_PROVIDER", tenant.llm.provider.clone()),
        env("COGNITION_LLM_MODEL", tenant.llm.model.clone()),
        EnvVar {
            name: "COGNITION_LLM_API_KEY".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: LLM_SECRET.into(),
                    key: LLM_SECRET_KEY.into(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        },
    ]
}

fn http_probe(path: &str, initial_delay: i32, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        ..Probe::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    }
}

/// `cognition-server`: one replica of `<server image> up`, non-root with a read-only root
/// filesystem (emptyDirs for /data and /tmp).
pub fn deployment(tenant: &Tenant, config: &Config, api_key: &ByteString) -> Deployment {
    let mut pod_labels = labels(tenant);
    pod_labels.extend(selector_labels());
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity(Cpu(CPU_MILLIS).to_string())),
        (
            "memory".to_owned(),
            Quantity(Bytes(MEMORY_BYTES).to_string()),
        ),
    ]);
    let container = Container {
        name: "server".into(),
        image: Some(config.server_image.clone()),
        args: Some(vec!["up".into()]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: HTTP_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(environment(tenant)),
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..ResourceRequirements::default()
        }),
        liveness_probe: Some(http_probe("/health", 10, 30)),
        readiness_probe: Some(http_probe("/ready", 5, 10)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![mount("data", DATA_DIR), mount("tmp", "/tmp")]),
        ..Container::default()
    };
    let mut metadata = meta(tenant, NAME);
    metadata
        .labels
        .get_or_insert_default()
        .extend(selector_labels());
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector_labels()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        ROLLOUT_ANNOTATION.to_owned(),
                        llm_hash(tenant, api_key),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(rbac::SERVICE_ACCOUNT.into()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        run_as_group: Some(RUN_AS_USER),
                        fs_group: Some(RUN_AS_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![empty_dir("data"), empty_dir("tmp")]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// `cognition-server`: ClusterIP, port 8000 to the pod's `http` port.
pub fn service(tenant: &Tenant) -> Service {
    Service {
        metadata: meta(tenant, NAME),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: HTTP_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
