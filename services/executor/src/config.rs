//! Executor configuration, read from `COGNITION_*` variables by `cognition_config`.
//!
//! Every field has a default, so the embedded platform (`cognition up`) needs no configuration:
//! [`Config::embedded`] puts everything under one data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Which sandbox backend runs the processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Plain host processes under `<sandbox_root>/<id>/workspace`.
    #[default]
    Local,
    /// Docker containers, one per sandbox (see [`crate::backend::docker`]).
    Docker,
    /// Kubernetes: agent-sandbox claims or plain pods (see [`crate::backend::kubernetes`]).
    Kubernetes,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Docker => "docker",
            BackendKind::Kubernetes => "kubernetes",
        }
    }
}

/// How the Kubernetes backend makes sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum K8sMode {
    /// A `SandboxClaim` from a `SandboxTemplate`, run by the agent-sandbox controller.
    #[default]
    AgentSandbox,
    /// A pod per sandbox, made by the executor (the multi-tenancy design).
    Pod,
}

impl K8sMode {
    pub fn as_str(self) -> &'static str {
        match self {
            K8sMode::AgentSandbox => "agent-sandbox",
            K8sMode::Pod => "pod",
        }
    }
}

/// Executor settings. Field docs name the variable each one is read from.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `COGNITION_EXECUTOR_ADDR`: where the gRPC server listens (main only; tests pass a listener).
    #[serde(rename = "executor_addr")]
    pub addr: SocketAddr,
    /// `COGNITION_SANDBOX_BACKEND`: `local` | `docker` | `kubernetes`.
    pub sandbox_backend: BackendKind,
    /// `COGNITION_DATA_DIR`: the platform's data directory.
    pub data_dir: PathBuf,
    /// `COGNITION_SANDBOX_ROOT`: where local sandboxes live; `<data_dir>/sandboxes` when unset.
    /// Use [`Config::sandbox_root_path`] for the effective value.
    pub sandbox_root: Option<PathBuf>,
    /// `COGNITION_PROTECTED_PATHS`: workspace-relative prefixes that file writes may not touch.
    #[serde(deserialize_with = "list")]
    pub protected_paths: Vec<String>,
    /// `COGNITION_SANDBOX_TTL`: default sandbox lifetime without renewal, in seconds.
    #[serde(rename = "sandbox_ttl")]
    pub sandbox_ttl_seconds: u64,
    /// `COGNITION_EXECUTOR_MAX_OUTPUT_BYTES`: default bytes kept per output stream of one exec.
    #[serde(rename = "executor_max_output_bytes")]
    pub max_output_bytes: u64,
    /// `COGNITION_EXECUTOR_KILL_GRACE_MS`: default grace between SIGTERM and SIGKILL.
    #[serde(rename = "executor_kill_grace_ms")]
    pub kill_grace_ms: u64,
    /// `COGNITION_EXECUTOR_KEEPALIVE_MS`: a keepalive goes out after this much silence on a stream.
    #[serde(rename = "executor_keepalive_ms")]
    pub keepalive_ms: u64,
    /// `COGNITION_EXECUTOR_MAX_CONCURRENT_EXECS`: running execs allowed per sandbox.
    #[serde(rename = "executor_max_concurrent_execs")]
    pub max_concurrent_execs: usize,
    /// `COGNITION_EXECUTOR_DISCONNECT_GRACE_MS`: how long an exec with the KILL disconnect policy
    /// waits for a re-attach before its process group is killed.
    #[serde(rename = "executor_disconnect_grace_ms")]
    pub disconnect_grace_ms: u64,
    /// `COGNITION_EXECUTOR_EXEC_RETENTION_SECS`: how long finished execs stay attachable.
    #[serde(rename = "executor_exec_retention_secs")]
    pub exec_retention_secs: u64,
    /// `COGNITION_EXECUTOR_DRAIN_MS`: after the process exits, how long to wait for its output
    /// pipes to close (a background grandchild may keep them open).
    #[serde(rename = "executor_drain_ms")]
    pub drain_ms: u64,
    /// `COGNITION_EXECUTOR_REAPER_INTERVAL_MS`: how often expired sandboxes and old execs are
    /// cleaned up.
    #[serde(rename = "executor_reaper_interval_ms")]
    pub reaper_interval_ms: u64,
    /// `COGNITION_SANDBOX_IMAGE`: image of Docker sandboxes (`compose/sandbox/build.sh`).
    pub sandbox_image: String,
    /// `COGNITION_SANDBOX_NETWORK`: Docker network of sandboxes; `none` (default) = no network.
    pub sandbox_network: String,
    /// `COGNITION_SANDBOX_MEMORY_BYTES`: default memory limit of a Docker sandbox (no swap).
    pub sandbox_memory_bytes: u64,
    /// `COGNITION_SANDBOX_CPU_MILLIS`: default CPU limit of a Docker sandbox (1000 = one CPU).
    pub sandbox_cpu_millis: u32,
    /// `COGNITION_SANDBOX_PIDS`: default process limit of a Docker sandbox.
    pub sandbox_pids: u32,
    /// `COGNITION_SANDBOX_USER`: `uid:gid` processes of a Docker sandbox run as (never root).
    pub sandbox_user: String,
    /// `COGNITION_DOCKER_HOST`: Docker engine address (`unix:///path` or `tcp://host:port`,
    /// plain HTTP); unset = `DOCKER_HOST`, else `/var/run/docker.sock`.
    pub docker_host: Option<String>,
    /// `COGNITION_SANDBOX_AGENT`: run processes through the in-sandbox agent when the image has
    /// one (label `cognition.io/agent`; default `true`). `false` uses the Docker exec API (slower:
    /// ~50 ms per process, no PTY).
    pub sandbox_agent: bool,
    /// `COGNITION_SANDBOX_WARM_POOL`: started sandboxes kept ready for new ones to claim (Docker;
    /// default 0). Only requests with the default image and resources claim one.
    pub sandbox_warm_pool: u32,
    /// `COGNITION_METRICS_PORT`: Prometheus `/metrics` port on all interfaces; `0` (default) =
    /// no metrics. In one process (`cognition up`) the first service to start serves them all.
    pub metrics_port: u16,
    /// `COGNITION_K8S_SANDBOX_MODE`: `agent-sandbox` (default) or `pod`.
    pub k8s_sandbox_mode: K8sMode,
    /// `COGNITION_K8S_SANDBOX_NAMESPACE`: namespace of sandbox claims or pods.
    pub k8s_sandbox_namespace: String,
    /// `COGNITION_K8S_SANDBOX_TEMPLATE`: the `SandboxTemplate` claims are made from.
    pub k8s_sandbox_template: String,
    /// `COGNITION_K8S_SANDBOX_ROUTER_URL`: the sandbox-router (checked at startup; a warning).
    pub k8s_sandbox_router_url: String,
    /// `COGNITION_K8S_SANDBOX_TTL`: seconds; the Sandbox's `spec.shutdownTime` is kept at
    /// now + this (the controller's safety net when the executor never deletes it).
    #[serde(rename = "k8s_sandbox_ttl")]
    pub k8s_sandbox_ttl_seconds: u64,
    /// `COGNITION_K8S_SANDBOX_WARM_POOL`: `SandboxWarmPool` claims take sandboxes from (empty =
    /// the controller's default choice).
    pub k8s_sandbox_warm_pool: String,
    /// `COGNITION_K8S_AGENT_PORT`: TCP port of the agent in sandbox pods.
    pub k8s_agent_port: u16,
    /// `COGNITION_K8S_AGENT_TOKEN`: agent-sandbox mode: the token the SandboxTemplate gives the
    /// agent (`COGNITION_AGENT_TOKEN`, from the same Secret). Pod mode makes one per pod.
    pub k8s_agent_token: Option<cognition_config::Secret>,
    /// `COGNITION_K8S_SANDBOX_PULL_POLICY`: pod mode: image pull policy.
    pub k8s_sandbox_pull_policy: String,
    /// `COGNITION_K8S_WORKSPACE_PVC`: pod mode: PVC mounted at `/workspace` with
    /// `subPath` = sandbox id; empty = an `emptyDir`.
    pub k8s_workspace_pvc: String,
    /// `COGNITION_K8S_MAX_SANDBOX_DURATION`: pod mode: seconds after which a sandbox pod is
    /// deleted whatever its renewals; 0 = no limit.
    #[serde(rename = "k8s_max_sandbox_duration")]
    pub k8s_max_sandbox_duration_seconds: u64,
    /// `COGNITION_K8S_READY_TIMEOUT`: seconds to wait for a new sandbox pod and its agent.
    #[serde(rename = "k8s_ready_timeout")]
    pub k8s_ready_timeout_seconds: u64,
}

/// Longest sandbox TTL accepted (30 days).
pub const MAX_TTL_SECONDS: u64 = 30 * 24 * 3600;

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 50052)),
            sandbox_backend: BackendKind::Local,
            data_dir: PathBuf::from("./.cognition"),
            sandbox_root: None,
            protected_paths: vec![".cognition/".to_owned()],
            sandbox_ttl_seconds: 3600,
            max_output_bytes: 8 * 1024 * 1024,
            kill_grace_ms: 2000,
            keepalive_ms: 15_000,
            max_concurrent_execs: 64,
            disconnect_grace_ms: 5000,
            exec_retention_secs: 300,
            drain_ms: 1000,
            reaper_interval_ms: 10_000,
            sandbox_image: "cognition-sandbox:latest".to_owned(),
            sandbox_network: "none".to_owned(),
            sandbox_memory_bytes: 512 * 1024 * 1024,
            sandbox_cpu_millis: 1000,
            sandbox_pids: 256,
            sandbox_user: "1000:1000".to_owned(),
            docker_host: None,
            sandbox_agent: true,
            sandbox_warm_pool: 0,
            metrics_port: 0,
            k8s_sandbox_mode: K8sMode::AgentSandbox,
            k8s_sandbox_namespace: "default".to_owned(),
            k8s_sandbox_template: "cognition-sandbox".to_owned(),
            k8s_sandbox_router_url: "http://sandbox-router-svc.default.svc.cluster.local:8080"
                .to_owned(),
            k8s_sandbox_ttl_seconds: 3600,
            k8s_sandbox_warm_pool: String::new(),
            k8s_agent_port: 7070,
            k8s_agent_token: None,
            k8s_sandbox_pull_policy: "IfNotPresent".to_owned(),
            k8s_workspace_pvc: String::new(),
            k8s_max_sandbox_duration_seconds: 0,
            k8s_ready_timeout_seconds: 120,
        }
    }
}

impl Config {
    /// The embedded default with everything under `data_dir`.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            ..Self::default()
        }
    }

    /// The effective sandbox root: `sandbox_root`, else `<data_dir>/sandboxes`.
    pub fn sandbox_root_path(&self) -> PathBuf {
        match &self.sandbox_root {
            Some(p) => p.clone(),
            None => Path::new(&self.data_dir).join("sandboxes"),
        }
    }

    pub fn sandbox_ttl(&self) -> Duration {
        Duration::from_secs(self.sandbox_ttl_seconds)
    }
    pub fn kill_grace(&self) -> Duration {
        Duration::from_millis(self.kill_grace_ms)
    }
    pub fn keepalive(&self) -> Duration {
        Duration::from_millis(self.keepalive_ms)
    }
    pub fn disconnect_grace(&self) -> Duration {
        Duration::from_millis(self.disconnect_grace_ms)
    }
    pub fn exec_retention(&self) -> Duration {
        Duration::from_secs(self.exec_retention_secs)
    }
    pub fn drain(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }
    pub fn reaper_interval(&self) -> Duration {
        Duration::from_millis(self.reaper_interval_ms)
    }
}

impl cognition_config::Validate for Config {
    fn validate(&self, problems: &mut Vec<String>) {
        if self.sandbox_backend == BackendKind::Kubernetes {
            self.validate_kubernetes(problems);
        }
        if self.sandbox_backend == BackendKind::Docker {
            self.validate_docker(problems);
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("COGNITION_DATA_DIR must not be empty".into());
        }
        if self
            .sandbox_root
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            problems.push("COGNITION_SANDBOX_ROOT must not be empty when set".into());
        }
        if self.sandbox_ttl_seconds == 0 || self.sandbox_ttl_seconds > MAX_TTL_SECONDS {
            problems.push(format!(
                "COGNITION_SANDBOX_TTL={} must be between 1 and {MAX_TTL_SECONDS} seconds",
                self.sandbox_ttl_seconds
            ));
        }
        if self
            .protected_paths
            .iter()
            .any(|p| crate::paths::normalize_protected(p).is_none())
        {
            problems.push(format!(
                "COGNITION_PROTECTED_PATHS={:?}: every entry must be a relative path inside the workspace",
                self.protected_paths
            ));
        }
        let positive: [(&str, u64); 6] = [
            ("COGNITION_EXECUTOR_MAX_OUTPUT_BYTES", self.max_output_bytes),
            ("COGNITION_EXECUTOR_KEEPALIVE_MS", self.keepalive_ms),
            (
                "COGNITION_EXECUTOR_MAX_CONCURRENT_EXECS",
                self.max_concurrent_execs as u64,
            ),
            (
                "COGNITION_EXECUTOR_EXEC_RETENTION_SECS",
                self.exec_retention_secs,
            ),
            (
                "COGNITION_EXECUTOR_REAPER_INTERVAL_MS",
                self.reaper_interval_ms,
            ),
            ("COGNITION_EXECUTOR_DRAIN_MS", self.drain_ms),
        ];
        for (name, value) in positive {
            if value == 0 {
                problems.push(format!("{name} must be greater than 0"));
            }
        }
    }
}

impl Config {
    fn validate_docker(&self, problems: &mut Vec<String>) {
        if self.sandbox_image.trim().is_empty() {
            problems.push("COGNITION_SANDBOX_IMAGE must not be empty".into());
        }
        if self.sandbox_network.trim().is_empty() {
            problems
                .push("COGNITION_SANDBOX_NETWORK must not be empty (`none` = no network)".into());
        }
        if self.sandbox_memory_bytes < 16 * 1024 * 1024 {
            problems.push(format!(
                "COGNITION_SANDBOX_MEMORY_BYTES={} must be at least 16 MiB",
                self.sandbox_memory_bytes
            ));
        }
        if self.sandbox_cpu_millis == 0 {
            problems.push("COGNITION_SANDBOX_CPU_MILLIS must be greater than 0".into());
        }
        if self.sandbox_pids < 8 {
            problems.push(format!(
                "COGNITION_SANDBOX_PIDS={} must be at least 8",
                self.sandbox_pids
            ));
        }
        if !valid_user(&self.sandbox_user) {
            problems.push(format!(
                "COGNITION_SANDBOX_USER={:?} must be a non-root `uid:gid` (numbers, uid > 0)",
                self.sandbox_user
            ));
        }
        if let Some(host) = &self.docker_host
            && !(host.starts_with("unix://")
                || host.starts_with("tcp://")
                || host.starts_with("http://"))
        {
            problems.push(format!(
                "COGNITION_DOCKER_HOST={host:?} must start with unix://, tcp:// or http://"
            ));
        }
    }

    fn validate_kubernetes(&self, problems: &mut Vec<String>) {
        if !crate::backend::kubernetes::naming::is_dns_label(&self.k8s_sandbox_namespace) {
            problems.push(format!(
                "COGNITION_K8S_SANDBOX_NAMESPACE={:?} must be a Kubernetes namespace name",
                self.k8s_sandbox_namespace
            ));
        }
        if self.k8s_agent_port == 0 {
            problems.push("COGNITION_K8S_AGENT_PORT must be greater than 0".into());
        }
        if self.k8s_sandbox_ttl_seconds == 0 {
            problems.push("COGNITION_K8S_SANDBOX_TTL must be greater than 0".into());
        }
        if self.k8s_ready_timeout_seconds == 0 {
            problems.push("COGNITION_K8S_READY_TIMEOUT must be greater than 0".into());
        }
        match self.k8s_sandbox_mode {
            K8sMode::AgentSandbox => {
                if self.k8s_sandbox_template.trim().is_empty() {
                    problems.push("COGNITION_K8S_SANDBOX_TEMPLATE must not be empty".into());
                }
                let token_len = self
                    .k8s_agent_token
                    .as_ref()
                    .map_or(0, |t| t.expose().len());
                if token_len < 16 {
                    problems.push(
                        "COGNITION_K8S_AGENT_TOKEN must be set (at least 16 characters) with \
                         COGNITION_K8S_SANDBOX_MODE=agent-sandbox: the SandboxTemplate passes the \
                         same Secret to the agent as COGNITION_AGENT_TOKEN"
                            .into(),
                    );
                }
                if !(self.k8s_sandbox_router_url.starts_with("http://")
                    || self.k8s_sandbox_router_url.starts_with("https://"))
                {
                    problems.push(format!(
                        "COGNITION_K8S_SANDBOX_ROUTER_URL={:?} must be an http(s) URL",
                        self.k8s_sandbox_router_url
                    ));
                }
            }
            K8sMode::Pod => {
                if self.sandbox_image.trim().is_empty() {
                    problems.push("COGNITION_SANDBOX_IMAGE must not be empty".into());
                }
                if !matches!(
                    self.k8s_sandbox_pull_policy.as_str(),
                    "Always" | "IfNotPresent" | "Never"
                ) {
                    problems.push(format!(
                        "COGNITION_K8S_SANDBOX_PULL_POLICY={:?} must be Always, IfNotPresent or Never",
                        self.k8s_sandbox_pull_policy
                    ));
                }
                if !self.k8s_workspace_pvc.is_empty()
                    && !crate::backend::kubernetes::naming::is_dns_subdomain(
                        &self.k8s_workspace_pvc,
                    )
                {
                    problems.push(format!(
                        "COGNITION_K8S_WORKSPACE_PVC={:?} must be a PVC name",
                        self.k8s_workspace_pvc
                    ));
                }
                if self.sandbox_memory_bytes < 16 * 1024 * 1024 {
                    problems.push(format!(
                        "COGNITION_SANDBOX_MEMORY_BYTES={} must be at least 16 MiB",
                        self.sandbox_memory_bytes
                    ));
                }
                if self.sandbox_cpu_millis == 0 {
                    problems.push("COGNITION_SANDBOX_CPU_MILLIS must be greater than 0".into());
                }
                if self.sandbox_uid_gid().is_none_or(|(uid, _)| uid == 0) {
                    problems.push(format!(
                        "COGNITION_SANDBOX_USER={:?} must be a non-root `uid:gid`",
                        self.sandbox_user
                    ));
                }
            }
        }
    }

    /// The sandbox user as numbers (`uid`, `gid`); `None` when invalid (validation reports it).
    pub fn sandbox_uid_gid(&self) -> Option<(u32, u32)> {
        let (uid, gid) = self.sandbox_user.split_once(':')?;
        Some((uid.parse().ok()?, gid.parse().ok()?))
    }
}

fn valid_user(raw: &str) -> bool {
    matches!(
        raw.split_once(':')
            .map(|(u, g)| (u.parse::<u32>(), g.parse::<u32>())),
        Some((Ok(uid), Ok(_))) if uid > 0
    )
}

fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let raw = String::deserialize(d)?;
    Ok(cognition_config::parse_list(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_without_variables() {
        let c: Config = cognition_config::load(vars(&[])).unwrap();
        assert_eq!(c.addr, "127.0.0.1:50052".parse().unwrap());
        assert_eq!(c.sandbox_backend, BackendKind::Local);
        assert_eq!(c.protected_paths, vec![".cognition/"]);
        assert_eq!(
            c.sandbox_root_path(),
            PathBuf::from("./.cognition/sandboxes")
        );
        assert_eq!(c.sandbox_ttl_seconds, 3600);
    }

    #[test]
    fn reads_variables() {
        let c: Config = cognition_config::load(vars(&[
            ("COGNITION_EXECUTOR_ADDR", "0.0.0.0:6000"),
            ("COGNITION_DATA_DIR", "/data"),
            ("COGNITION_PROTECTED_PATHS", r#"[".cognition/", "secrets"]"#),
            ("COGNITION_SANDBOX_TTL", "60"),
            ("COGNITION_EXECUTOR_KEEPALIVE_MS", "50"),
            ("COGNITION_METRICS_PORT", "9464"),
        ]))
        .unwrap();
        assert_eq!(c.metrics_port, 9464);
        assert_eq!(c.addr.port(), 6000);
        assert_eq!(c.sandbox_root_path(), PathBuf::from("/data/sandboxes"));
        assert_eq!(c.protected_paths, vec![".cognition/", "secrets"]);
        assert_eq!(c.sandbox_ttl_seconds, 60);
        assert_eq!(c.keepalive_ms, 50);
        let c: Config =
            cognition_config::load(vars(&[("COGNITION_SANDBOX_ROOT", "/srv/sb")])).unwrap();
        assert_eq!(c.sandbox_root_path(), PathBuf::from("/srv/sb"));
    }

    #[test]
    fn kubernetes_settings() {
        let err =
            cognition_config::load::<Config>(vars(&[("COGNITION_SANDBOX_BACKEND", "kubernetes")]))
                .unwrap_err();
        assert!(
            err.to_string()
                .contains("COGNITION_K8S_AGENT_TOKEN must be set"),
            "{err}"
        );
        let c: Config = cognition_config::load(vars(&[
            ("COGNITION_SANDBOX_BACKEND", "kubernetes"),
            ("COGNITION_K8S_AGENT_TOKEN", "0123456789abcdef"),
        ]))
        .unwrap();
        assert_eq!(c.k8s_sandbox_mode, K8sMode::AgentSandbox);
        assert_eq!(c.k8s_sandbox_namespace, "default");
        assert_eq!(c.k8s_sandbox_template, "cognition-sandbox");
        assert_eq!(c.k8s_sandbox_ttl_seconds, 3600);
        assert_eq!(c.k8s_agent_port, 7070);
        assert!(
            !format!("{c:?}").contains("0123456789abcdef"),
            "the token is redacted"
        );
        let c: Config = cognition_config::load(vars(&[
            ("COGNITION_SANDBOX_BACKEND", "kubernetes"),
            ("COGNITION_K8S_SANDBOX_MODE", "pod"),
            ("COGNITION_K8S_SANDBOX_NAMESPACE", "cognition-tenant-acme"),
            ("COGNITION_K8S_WORKSPACE_PVC", "tenant-workspace"),
            ("COGNITION_K8S_MAX_SANDBOX_DURATION", "3600"),
        ]))
        .unwrap();
        assert_eq!(c.k8s_sandbox_mode, K8sMode::Pod);
        assert_eq!(c.k8s_workspace_pvc, "tenant-workspace");
        assert_eq!(c.k8s_max_sandbox_duration_seconds, 3600);
        let err = cognition_config::load::<Config>(vars(&[
            ("COGNITION_SANDBOX_BACKEND", "kubernetes"),
            ("COGNITION_K8S_SANDBOX_MODE", "pod"),
            ("COGNITION_K8S_SANDBOX_NAMESPACE", "Not_A_Namespace"),
            ("COGNITION_K8S_SANDBOX_PULL_POLICY", "Sometimes"),
            ("COGNITION_K8S_AGENT_PORT", "0"),
        ]))
        .unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
    }

    #[test]
    fn docker_settings() {
        let c: Config =
            cognition_config::load(vars(&[("COGNITION_SANDBOX_BACKEND", "docker")])).unwrap();
        assert_eq!(c.sandbox_backend, BackendKind::Docker);
        assert_eq!(c.sandbox_image, "cognition-sandbox:latest");
        assert_eq!(c.sandbox_network, "none");
        assert_eq!(c.sandbox_memory_bytes, 512 * 1024 * 1024);
        assert_eq!(c.sandbox_cpu_millis, 1000);
        assert_eq!(c.sandbox_pids, 256);
        assert_eq!(c.sandbox_uid_gid(), Some((1000, 1000)));
        assert_eq!(c.docker_host, None);
        let c: Config = cognition_config::load(vars(&[
            ("COGNITION_SANDBOX_BACKEND", "docker"),
            ("COGNITION_SANDBOX_IMAGE", "img:1"),
            ("COGNITION_SANDBOX_NETWORK", "restricted"),
            ("COGNITION_SANDBOX_PIDS", "64"),
            ("COGNITION_DOCKER_HOST", "unix:///run/docker.sock"),
        ]))
        .unwrap();
        assert_eq!(c.sandbox_image, "img:1");
        assert_eq!(c.sandbox_network, "restricted");
        assert_eq!(c.sandbox_pids, 64);
        assert_eq!(c.docker_host.as_deref(), Some("unix:///run/docker.sock"));
        let err = cognition_config::load::<Config>(vars(&[
            ("COGNITION_SANDBOX_BACKEND", "docker"),
            ("COGNITION_SANDBOX_USER", "0:0"),
            ("COGNITION_SANDBOX_PIDS", "1"),
            ("COGNITION_SANDBOX_IMAGE", " "),
            ("COGNITION_DOCKER_HOST", "ssh://x"),
        ]))
        .unwrap_err();
        assert_eq!(err.problems.len(), 4, "{err}");
    }

    #[test]
    fn reports_every_problem() {
        let err = cognition_config::load::<Config>(vars(&[
            ("COGNITION_SANDBOX_BACKEND", "podman"),
            ("COGNITION_SANDBOX_TTL", "0"),
            ("COGNITION_PROTECTED_PATHS", "../outside"),
            ("COGNITION_EXECUTOR_KEEPALIVE_MS", "0"),
        ]))
        .unwrap_err();
        assert_eq!(err.problems.len(), 4, "{err}");
    }

    #[test]
    fn embedded_puts_everything_under_the_data_dir() {
        let c = Config::embedded("/tmp/x");
        assert_eq!(c.sandbox_root_path(), PathBuf::from("/tmp/x/sandboxes"));
    }
}
