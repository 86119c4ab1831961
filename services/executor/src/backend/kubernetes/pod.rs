//! Pod mode: one pod per sandbox, as in the multi-tenancy design. Non-root, no service-account
//! token, every capability dropped, seccomp `RuntimeDefault`, a read-only root filesystem with
//! writable `/workspace`, `/tmp` and `/home`, resource limits (the tenant's quotas), and the
//! workspace PVC mounted with `subPath` = the sandbox's object name. The container's process is
//! the agent on TCP, authenticated by a token made for this pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, ResourceRequirements,
    SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::record::WORKDIR;
use crate::sandbox::{Resources, SandboxState};

/// The agent inside the sandbox image (`compose/sandbox/build.sh`).
pub const AGENT_PATH: &str = "/opt/cognition/bin/cognition-sandbox-agent";
/// The variable the agent reads its token from.
pub const TOKEN_VAR: &str = "COGNITION_AGENT_TOKEN";
/// Name of the sandbox container and of the agent's port.
pub const CONTAINER: &str = "sandbox";
pub const AGENT_PORT_NAME: &str = "agent";

/// What a sandbox pod is made of (from the executor's configuration).
#[derive(Debug, Clone)]
pub struct PodSettings {
    pub namespace: String,
    pub image: String,
    pub pull_policy: String,
    pub uid: i64,
    pub gid: i64,
    pub agent_port: u16,
    /// `None` = an `emptyDir` workspace.
    pub workspace_pvc: Option<String>,
}

/// The pod of a new sandbox.
pub fn build(
    settings: &PodSettings,
    name: &str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    resources: Resources,
    token: &str,
) -> Pod {
    let empty = |name: &str| Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let workspace = match &settings.workspace_pvc {
        Some(claim) => Volume {
            name: "workspace".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(false),
            }),
            ..Volume::default()
        },
        None => empty("workspace"),
    };
    let mount = |volume: &str, path: &str, sub_path: Option<String>| VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        sub_path,
        ..VolumeMount::default()
    };
    let limits: BTreeMap<String, Quantity> = [
        (
            "cpu".to_owned(),
            Quantity(format!("{}m", resources.cpu_millis)),
        ),
        (
            "memory".to_owned(),
            Quantity(resources.memory_bytes.to_string()),
        ),
    ]
    .into();
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(settings.uid),
                run_as_group: Some(settings.gid),
                fs_group: Some(settings.gid),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            containers: vec![Container {
                name: CONTAINER.into(),
                image: Some(settings.image.clone()),
                image_pull_policy: Some(settings.pull_policy.clone()),
                command: Some(vec![
                    AGENT_PATH.into(),
                    "--listen".into(),
                    format!("0.0.0.0:{}", settings.agent_port),
                    "--workdir".into(),
                    WORKDIR.into(),
                ]),
                env: Some(vec![EnvVar {
                    name: TOKEN_VAR.into(),
                    value: Some(token.to_owned()),
                    ..EnvVar::default()
                }]),
                ports: Some(vec![ContainerPort {
                    name: Some(AGENT_PORT_NAME.into()),
                    container_port: i32::from(settings.agent_port),
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                }]),
                resources: Some(ResourceRequirements {
                    limits: Some(limits.clone()),
                    requests: Some(limits),
                    ..ResourceRequirements::default()
                }),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    privileged: Some(false),
                    read_only_root_filesystem: Some(true),
                    run_as_non_root: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        ..Capabilities::default()
                    }),
                    ..SecurityContext::default()
                }),
                volume_mounts: Some(vec![
                    mount(
                        "workspace",
                        WORKDIR,
                        settings.workspace_pvc.as_ref().map(|_| name.to_owned()),
                    ),
                    mount("tmp", "/tmp", None),
                    mount("home", "/home", None),
                ]),
                working_dir: Some(WORKDIR.into()),
                ..Container::default()
            }],
            volumes: Some(vec![workspace, empty("tmp"), empty("home")]),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// Why a pod will never run (an image that cannot be pulled, a bad container config).
pub fn failure(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Failed" | "Succeeded")) {
        return Some(format!(
            "the pod is {}{}",
            status.phase.as_deref().unwrap_or_default(),
            status
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find(|w| {
            matches!(
                w.reason.as_deref(),
                Some(
                    "ErrImagePull"
                        | "ImagePullBackOff"
                        | "InvalidImageName"
                        | "CreateContainerConfigError"
                        | "CreateContainerError"
                )
            )
        })
        .map(|w| {
            format!(
                "{}{}",
                w.reason.as_deref().unwrap_or_default(),
                w.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )
        })
}

/// The sandbox state of a pod.
pub fn state(pod: &Pod) -> SandboxState {
    if failure(pod).is_some() {
        return SandboxState::Failed;
    }
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") if address(pod).is_some() => SandboxState::Ready,
        Some("Pending" | "Running") | None => SandboxState::Pending,
        _ => SandboxState::Failed,
    }
}

/// `ip:port` of the pod's agent, once it has an address.
pub fn address(pod: &Pod) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.as_deref()?;
    let port = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == CONTAINER)?
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(AGENT_PORT_NAME))?
        .container_port;
    Some(if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    })
}

/// The agent token the pod was made with.
pub fn token(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == CONTAINER)?
        .env
        .iter()
        .flatten()
        .find(|e| e.name == TOKEN_VAR)?
        .value
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodStatus,
    };

    fn settings(pvc: Option<&str>) -> PodSettings {
        PodSettings {
            namespace: "cognition-tenant-acme".into(),
            image: "cognition-sandbox:1".into(),
            pull_policy: "IfNotPresent".into(),
            uid: 1000,
            gid: 1000,
            agent_port: 7070,
            workspace_pvc: pvc.map(str::to_owned),
        }
    }

    fn resources() -> Resources {
        Resources {
            memory_bytes: 4 << 30,
            cpu_millis: 2000,
            pids: 0,
        }
    }

    #[test]
    fn pod_is_hardened_and_mounts_its_session_folder() {
        let pod = build(
            &settings(Some("tenant-workspace")),
            "cog-s1-abc",
            BTreeMap::new(),
            BTreeMap::new(),
            resources(),
            "tok",
        );
        let json = serde_json::to_value(&pod).unwrap();
        let spec = &json["spec"];
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let c = &spec["containers"][0];
        assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["resources"]["limits"]["cpu"], "2000m");
        assert_eq!(c["resources"]["limits"]["memory"], (4u64 << 30).to_string());
        assert_eq!(c["volumeMounts"][0]["mountPath"], "/workspace");
        assert_eq!(c["volumeMounts"][0]["subPath"], "cog-s1-abc");
        assert_eq!(
            spec["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "tenant-workspace"
        );
        assert_eq!(c["command"][2], "0.0.0.0:7070");
        assert_eq!(token(&pod).as_deref(), Some("tok"));
        // Without a PVC the workspace is an emptyDir and there is no subPath.
        let pod = build(
            &settings(None),
            "n",
            BTreeMap::new(),
            BTreeMap::new(),
            resources(),
            "t",
        );
        let json = serde_json::to_value(&pod).unwrap();
        assert!(json["spec"]["volumes"][0]["emptyDir"].is_object());
        assert!(
            json["spec"]["containers"][0]["volumeMounts"][0]
                .get("subPath")
                .is_none()
        );
    }

    #[test]
    fn states_and_address() {
        let mut pod = build(
            &settings(None),
            "n",
            BTreeMap::new(),
            BTreeMap::new(),
            resources(),
            "t",
        );
        assert_eq!(state(&pod), SandboxState::Pending);
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.0.0.7".into()),
            ..PodStatus::default()
        });
        assert_eq!(state(&pod), SandboxState::Ready);
        assert_eq!(address(&pod).as_deref(), Some("10.0.0.7:7070"));
        pod.status = Some(PodStatus {
            phase: Some("Pending".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: CONTAINER.into(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("ImagePullBackOff".into()),
                        message: Some("Back-off pulling image".into()),
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        });
        assert_eq!(state(&pod), SandboxState::Failed);
        assert!(failure(&pod).unwrap().contains("ImagePullBackOff"));
    }
}
