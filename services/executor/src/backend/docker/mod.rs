//! The Docker backend: one hardened container per sandbox, processes through the in-sandbox
//! agent (or, for images without it, the Docker exec API).
//!
//! **Containers.** `cognition-<id>`, created from `COGNITION_SANDBOX_IMAGE` with every capability
//! dropped, `no-new-privileges`, a read-only root filesystem, tmpfs `/tmp` (noexec) and `/home`,
//! network mode `none` (or the configured network), memory (no swap), CPU and pids limits, a
//! non-root user, and `docker-init` as PID 1 (reaps orphans, so zombies do not eat the pids
//! limit) running the image's agent (or a `sleep` keep-alive when there is none). The workspace is the host folder `<sandbox_root>/<id>/workspace`
//! bind-mounted at `/workspace`: the executor and the engine share the host filesystem, so file
//! operations are [`LocalFiles`] with the same jail and protected paths as the local backend.
//!
//! **Labels are the record.** `cognition.io/sandbox=<id>`, `cognition.io/managed=true`, the
//! sandbox's own labels, and `executor.cognition.io/*` metadata (sandbox root, template,
//! resources, creation and first expiry). `get`/`list` read them from the engine, so an executor
//! that restarts re-adopts its sandboxes with no state of its own. Labels are immutable, so a
//! renewal writes `<sandbox_root>/<id>/expires_at`, which wins over the label. Only containers
//! whose root label is this backend's sandbox root are seen (two executors on one engine, or
//! tests running side by side, do not touch each other's sandboxes).
//!
//! **Processes.** An image labelled `cognition.io/agent=<path>` (the one
//! `compose/sandbox/build.sh` builds) runs that agent as the container's main process, listening
//! on `/run/cognition/agent.sock` — the host folder `<sandbox_root>/<id>/agent`, bind-mounted —
//! and the executor connects to the socket for every process ([`super::agent_client`]): about a
//! millisecond per process, real process-group signals and PTYs. `create` returns once the agent
//! answers. A sandbox whose agent is known skips the Docker API entirely on the exec path; an
//! agent that stops answering sends the next spawn back to `inspect` for the real state. Images
//! without the label (or `COGNITION_SANDBOX_AGENT=false`) use the Docker exec API instead
//! ([`exec_api`]): ~50 ms per process and no PTY.

mod exec_api;
mod warm;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use chrono::{DateTime, Utc};

use cognition_sandbox_agent::protocol::SpawnRequest;

use super::{SandboxBackend, agent_client};
use crate::config::Config;
use crate::error::Error;
use crate::files::SandboxFiles;
use crate::files::local::{LocalFiles, Owner};
use crate::ids::SandboxId;
use crate::paths::{Jail, Protected};
use crate::process::{
    ProcessSpec, SpawnError, SpawnFailed, SpawnFailure, SpawnedProcess, validate,
};
use crate::sandbox::{Labels, Resources, Sandbox, SandboxSpec, SandboxState, expiry};

/// Label with the sandbox id.
pub const LABEL_SANDBOX: &str = "cognition.io/sandbox";
/// Label on every container this backend manages (`true`).
pub const LABEL_MANAGED: &str = "cognition.io/managed";
/// Prefix of the backend's own metadata labels.
const META: &str = "executor.cognition.io/";
const META_ROOT: &str = "executor.cognition.io/root";
const META_TEMPLATE: &str = "executor.cognition.io/template";
const META_CREATED: &str = "executor.cognition.io/created-at";
const META_EXPIRES: &str = "executor.cognition.io/expires-at";
const META_MEMORY: &str = "executor.cognition.io/memory-bytes";
const META_CPU: &str = "executor.cognition.io/cpu-millis";
const META_PIDS: &str = "executor.cognition.io/pids";
/// The agent's path inside the container, when the sandbox runs one.
const META_AGENT: &str = "executor.cognition.io/agent";
/// Image label naming the agent binary inside the image.
pub const IMAGE_AGENT_LABEL: &str = "cognition.io/agent";
/// The agent's folder: `<sandbox_root>/<id>/agent` on the host, this path in the container.
const AGENT_DIR: &str = "agent";
const AGENT_MOUNT: &str = "/run/cognition";
const AGENT_SOCKET: &str = "agent.sock";
/// How long `create` waits for a new sandbox's agent to answer.
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The base environment of processes started through the agent (the client's variables win).
const AGENT_BASE_ENV: [(&str, &str); 3] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/home"),
    ("LANG", "C.UTF-8"),
];

/// Where the workspace is mounted in the container (the processes' working directory).
pub const WORKDIR: &str = "/workspace";
const WORKSPACE_DIR: &str = "workspace";
const EXPIRY_FILE: &str = "expires_at";
const DELETING_PREFIX: &str = ".deleting-";
/// Docker settings, from [`Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSettings {
    pub image: String,
    pub network: String,
    pub memory_bytes: u64,
    pub cpu_millis: u32,
    pub pids: u32,
    pub uid: u32,
    pub gid: u32,
    /// `unix:///…`, `tcp://…` or `http://…`; `None` = `DOCKER_HOST` or the local socket.
    pub host: Option<String>,
    /// Use the image's agent when it has one.
    pub use_agent: bool,
    /// Started, unclaimed containers kept ready for new sandboxes.
    pub warm_pool: u32,
}

impl DockerSettings {
    pub fn from_config(config: &Config) -> Self {
        let (uid, gid) = config.sandbox_uid_gid().unwrap_or((1000, 1000));
        Self {
            image: config.sandbox_image.clone(),
            network: config.sandbox_network.clone(),
            memory_bytes: config.sandbox_memory_bytes,
            cpu_millis: config.sandbox_cpu_millis,
            pids: config.sandbox_pids,
            uid,
            gid,
            host: config.docker_host.clone(),
            use_agent: config.sandbox_agent,
            warm_pool: config.sandbox_warm_pool,
        }
    }

    fn user(&self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }
}

/// Sandboxes as Docker containers.
pub struct DockerBackend {
    docker: Docker,
    root: PathBuf,
    settings: DockerSettings,
    protected: Protected,
    terminating: Mutex<HashSet<SandboxId>>,
    /// One create at a time per sandbox id (creates of different ids run in parallel).
    create_locks: Mutex<HashMap<SandboxId, Arc<tokio::sync::Mutex<()>>>>,
    /// Image → the agent path its label names (`None`: no agent), looked up once per image.
    image_agents: tokio::sync::Mutex<HashMap<String, Option<String>>>,
    /// Sandboxes known to run an agent: their spawns go straight to the socket.
    with_agent: Mutex<HashSet<SandboxId>>,
    /// The warm pool: started containers waiting for a sandbox to claim them.
    warm: Mutex<warm::Pool>,
    /// This backend, for the warm pool's background refills.
    me: std::sync::OnceLock<std::sync::Weak<DockerBackend>>,
}

/// A Docker error with what we were doing.
fn docker_error(context: impl std::fmt::Display, e: bollard::errors::Error) -> Error {
    Error::Internal(format!("docker: {context}: {e}"))
}

fn status_code(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Connects to the engine named by `host` (or the defaults) and negotiates the API version.
pub async fn connect(host: Option<&str>) -> Result<Docker, Error> {
    let client = match host {
        Some(h) if h.starts_with("unix://") => {
            Docker::connect_with_unix(h, 120, bollard::API_DEFAULT_VERSION)
        }
        Some(h) => Docker::connect_with_http(h, 120, bollard::API_DEFAULT_VERSION),
        None => Docker::connect_with_local_defaults(),
    }
    .map_err(|e| docker_error("connecting to the engine", e))?;
    client
        .negotiate_version()
        .await
        .map_err(|e| docker_error("negotiating the API version", e))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DockerBackend {
    /// Connects to Docker and opens the sandbox root (the workspaces live there, on the host
    /// the engine shares). Sandboxes already running under this root are adopted as they are.
    pub async fn connect(
        root: &Path,
        protected: Protected,
        settings: DockerSettings,
    ) -> Result<Arc<Self>, Error> {
        tokio::fs::create_dir_all(root)
            .await
            .map_err(|e| Error::io(format!("creating the sandbox root {}", root.display()), e))?;
        let root = tokio::fs::canonicalize(root)
            .await
            .map_err(|e| Error::io(format!("resolving the sandbox root {}", root.display()), e))?;
        let docker = connect(settings.host.as_deref()).await?;
        let backend = Self {
            docker,
            root,
            settings,
            protected,
            terminating: Mutex::new(HashSet::new()),
            create_locks: Mutex::new(HashMap::new()),
            image_agents: tokio::sync::Mutex::new(HashMap::new()),
            with_agent: Mutex::new(HashSet::new()),
            warm: Mutex::new(warm::Pool::default()),
            me: std::sync::OnceLock::new(),
        };
        let adopted = backend.list(&Labels::new()).await?;
        for sandbox in &adopted {
            tracing::info!(sandbox_id = %sandbox.id, state = %sandbox.state, expires_at = %sandbox.expires_at, "re-adopted docker sandbox");
        }
        let backend = Arc::new(backend);
        let _ = backend.me.set(Arc::downgrade(&backend));
        backend.adopt_warm().await?;
        Ok(backend)
    }

    /// The Docker client (for tests and tools).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The container name of a sandbox.
    pub fn container_name(id: &SandboxId) -> String {
        format!("cognition-{id}")
    }

    fn dir(&self, id: &SandboxId) -> PathBuf {
        self.root.join(id.as_str())
    }

    fn jail(&self, id: &SandboxId) -> Result<Jail, Error> {
        let workspace = self.dir(id).join(WORKSPACE_DIR);
        Jail::new(&workspace, Path::new(WORKDIR), self.protected.clone())
            .map_err(|e| Error::io(format!("resolving the workspace of sandbox {id}"), e))
    }

    fn root_label(&self) -> String {
        self.root.display().to_string()
    }

    /// The sandbox record from a container's labels and state; `None` when the container is not
    /// one of ours.
    /// `name` is the container's name: a claimed warm container's record is its claim file.
    async fn record(
        &self,
        labels: &HashMap<String, String>,
        status: Option<&str>,
        name: Option<&str>,
    ) -> Option<Sandbox> {
        if labels.get(LABEL_MANAGED).map(String::as_str) != Some("true")
            || labels.get(META_ROOT) != Some(&self.root_label())
        {
            return None;
        }
        let time = |key: &str| {
            labels
                .get(key)
                .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let number = |key: &str| labels.get(key).and_then(|v| v.parse::<u64>().ok());
        let (id, user_labels, created_at, first_expiry) = if labels.contains_key(warm::META_WARM) {
            let claim = self.read_claim(name?).await?;
            (claim.id, claim.labels, claim.created_at, claim.expires_at)
        } else {
            let id = SandboxId::parse(labels.get(LABEL_SANDBOX)?).ok()?;
            let user_labels: Labels = labels
                .iter()
                .filter(|(k, _)| {
                    k.as_str() != LABEL_SANDBOX
                        && k.as_str() != LABEL_MANAGED
                        && !k.starts_with(META)
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let created_at = time(META_CREATED).unwrap_or_else(Utc::now);
            (
                id,
                user_labels,
                created_at,
                time(META_EXPIRES).unwrap_or(created_at),
            )
        };
        let mut expires_at = first_expiry;
        if let Some(renewed) = self.renewed(&id).await {
            expires_at = expires_at.max(renewed);
        }
        let mut state = match status {
            Some("running") => SandboxState::Ready,
            Some("created" | "restarting" | "paused") => SandboxState::Pending,
            Some("removing") => SandboxState::Terminating,
            _ => SandboxState::Failed,
        };
        if lock(&self.terminating).contains(&id) {
            state = SandboxState::Terminating;
        }
        Some(Sandbox {
            id,
            state,
            labels: user_labels,
            backend: "docker".into(),
            template: labels.get(META_TEMPLATE).cloned().unwrap_or_default(),
            resources: Resources {
                memory_bytes: number(META_MEMORY).unwrap_or(0),
                cpu_millis: number(META_CPU).unwrap_or(0) as u32,
                pids: number(META_PIDS).unwrap_or(0) as u32,
            },
            created_at,
            expires_at,
            workdir: WORKDIR.into(),
        })
    }

    async fn renewed(&self, id: &SandboxId) -> Option<DateTime<Utc>> {
        let raw = tokio::fs::read_to_string(self.dir(id).join(EXPIRY_FILE))
            .await
            .ok()?;
        DateTime::parse_from_rfc3339(raw.trim())
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Labels of a new container.
    fn labels(&self, spec: &SandboxSpec, resources: Resources) -> HashMap<String, String> {
        let now = Utc::now();
        let mut labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL_SANDBOX.into(), spec.id.to_string());
        labels.insert(LABEL_MANAGED.into(), "true".into());
        labels.insert(META_ROOT.into(), self.root_label());
        labels.insert(META_TEMPLATE.into(), spec.template.clone());
        labels.insert(META_CREATED.into(), now.to_rfc3339());
        labels.insert(META_EXPIRES.into(), expiry(now, spec.ttl).to_rfc3339());
        labels.insert(META_MEMORY.into(), resources.memory_bytes.to_string());
        labels.insert(META_CPU.into(), resources.cpu_millis.to_string());
        labels.insert(META_PIDS.into(), resources.pids.to_string());
        labels
    }

    /// Requested resources with the defaults applied.
    fn effective(&self, requested: Resources) -> Resources {
        let or = |v: u64, d: u64| if v == 0 { d } else { v };
        Resources {
            memory_bytes: or(requested.memory_bytes, self.settings.memory_bytes),
            cpu_millis: or(
                u64::from(requested.cpu_millis),
                u64::from(self.settings.cpu_millis),
            ) as u32,
            pids: or(u64::from(requested.pids), u64::from(self.settings.pids)) as u32,
        }
    }

    fn image_of(&self, spec: &SandboxSpec) -> String {
        if spec.template.is_empty() {
            self.settings.image.clone()
        } else {
            spec.template.clone()
        }
    }

    /// The agent path the image's label names, when agents are enabled (cached per image).
    async fn image_agent(&self, image: &str) -> Result<Option<String>, Error> {
        if !self.settings.use_agent {
            return Ok(None);
        }
        let mut cache = self.image_agents.lock().await;
        if let Some(known) = cache.get(image) {
            return Ok(known.clone());
        }
        let agent = match self.docker.inspect_image(image).await {
            Ok(inspect) => inspect
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(IMAGE_AGENT_LABEL).cloned())
                .filter(|p| p.starts_with('/')),
            Err(e) if status_code(&e) == Some(404) => {
                return Err(Error::Unavailable(format!(
                    "sandbox image {image} not found on the Docker engine (build it with \
                     compose/sandbox/build.sh, or pull it)"
                )));
            }
            Err(e) => return Err(docker_error(format!("inspecting image {image}"), e)),
        };
        cache.insert(image.to_owned(), agent.clone());
        Ok(agent)
    }

    /// The host path of a sandbox's agent socket.
    fn agent_socket(&self, id: &SandboxId) -> PathBuf {
        self.dir(id).join(AGENT_DIR).join(AGENT_SOCKET)
    }

    fn container_body(
        &self,
        spec: &SandboxSpec,
        resources: Resources,
        workspace: &Path,
        agent: Option<(&str, &Path)>,
    ) -> ContainerCreateBody {
        let s = &self.settings;
        let image = self.image_of(spec);
        let tmpfs = HashMap::from([
            (
                "/tmp".to_owned(),
                "rw,noexec,nosuid,nodev,size=64m,mode=1777".to_owned(),
            ),
            (
                "/home".to_owned(),
                format!(
                    "rw,nosuid,nodev,size=64m,mode=0755,uid={},gid={}",
                    s.uid, s.gid
                ),
            ),
        ]);
        let memory = i64::try_from(resources.memory_bytes).unwrap_or(i64::MAX);
        let mut labels = self.labels(spec, resources);
        let mut binds = vec![format!("{}:{WORKDIR}:rw", workspace.display())];
        let cmd = match agent {
            Some((path, host_dir)) => {
                labels.insert(META_AGENT.into(), path.to_owned());
                binds.push(format!("{}:{AGENT_MOUNT}:rw", host_dir.display()));
                vec![
                    path.to_owned(),
                    "--socket".into(),
                    format!("{AGENT_MOUNT}/{AGENT_SOCKET}"),
                ]
            }
            None => vec!["sleep".into(), "2147483647".into()],
        };
        ContainerCreateBody {
            image: Some(image),
            cmd: Some(cmd),
            user: Some(s.user()),
            working_dir: Some(WORKDIR.into()),
            env: Some(vec!["HOME=/home".into(), "LANG=C.UTF-8".into()]),
            labels: Some(labels),
            host_config: Some(HostConfig {
                binds: Some(binds),
                network_mode: Some(s.network.clone()),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                readonly_rootfs: Some(true),
                privileged: Some(false),
                init: Some(true),
                ipc_mode: Some("private".into()),
                tmpfs: Some(tmpfs),
                memory: Some(memory),
                memory_swap: Some(memory),
                nano_cpus: Some(i64::from(resources.cpu_millis) * 1_000_000),
                pids_limit: Some(i64::from(resources.pids)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates the workspace folder, owned by the sandbox user (or world-writable when the
    /// executor may not chown).
    async fn make_workspace(&self, workspace: &Path) -> Result<(), Error> {
        tokio::fs::create_dir_all(workspace)
            .await
            .map_err(|e| Error::io(format!("creating {}", workspace.display()), e))?;
        let (uid, gid) = (self.settings.uid, self.settings.gid);
        let path = workspace.to_path_buf();
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::PermissionsExt;
            if std::os::unix::fs::chown(&path, Some(uid), Some(gid)).is_err() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
            }
            Ok::<(), io::Error>(())
        })
        .await
        .map_err(|e| Error::Internal(format!("preparing the workspace: {e}")))?
        .map_err(|e| Error::io(format!("preparing {}", workspace.display()), e))
    }

    /// The record and the raw labels of a sandbox's container.
    async fn inspect(&self, id: &SandboxId) -> Result<(Sandbox, HashMap<String, String>), Error> {
        let inspect = match self
            .docker
            .inspect_container(
                &Self::container_name(id),
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(i) => i,
            Err(e) if status_code(&e) == Some(404) => {
                return Err(Error::SandboxNotFound(id.clone()));
            }
            Err(e) => return Err(docker_error(format!("inspecting sandbox {id}"), e)),
        };
        let labels = inspect
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let status = inspect
            .state
            .as_ref()
            .and_then(|s| s.status)
            .map(|s| s.to_string());
        match self
            .record(&labels, status.as_deref(), inspect.name.as_deref())
            .await
        {
            Some(record) if &record.id == id => Ok((record, labels)),
            _ => Err(Error::SandboxNotFound(id.clone())),
        }
    }

    /// Waits for a new sandbox's agent to answer; a container that died instead is an error that
    /// says how it ended.
    async fn await_agent(&self, id: &SandboxId) -> Result<(), Error> {
        let socket = self.agent_socket(id);
        match agent_client::wait_ready(&agent_client::Endpoint::Unix(socket), AGENT_READY_TIMEOUT)
            .await
        {
            Ok(version) => {
                tracing::debug!(sandbox_id = %id, %version, "sandbox agent ready");
                lock(&self.with_agent).insert(id.clone());
                Ok(())
            }
            Err(e) => {
                let state = self
                    .docker
                    .inspect_container(
                        &Self::container_name(id),
                        None::<bollard::query_parameters::InspectContainerOptions>,
                    )
                    .await
                    .ok()
                    .and_then(|i| i.state)
                    .map(|s| {
                        format!(
                            "container {}, exit code {}",
                            s.status.map(|s| s.to_string()).unwrap_or_default(),
                            s.exit_code.unwrap_or_default()
                        )
                    })
                    .unwrap_or_else(|| "container gone".into());
                Err(Error::Internal(format!(
                    "docker: the agent of sandbox {id} did not answer within {}s ({state}): {e}",
                    AGENT_READY_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// Starts a process through the sandbox's agent. An agent that does not answer means the
    /// sandbox is gone or broken: the engine's view decides which error the client gets.
    async fn spawn_with_agent(
        &self,
        id: &SandboxId,
        spec: &ProcessSpec,
        cwd: String,
    ) -> Result<SpawnedProcess, SpawnError> {
        let mut env: Vec<(String, String)> = AGENT_BASE_ENV
            .iter()
            .filter(|(k, _)| !spec.env.contains_key(*k))
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let request = SpawnRequest {
            argv: spec.argv.clone(),
            env,
            cwd,
            stdin_pipe: spec.stdin_pipe,
            pty: spec.pty.and_then(|p| p.to_window()),
        };
        match agent_client::spawn(
            &agent_client::Endpoint::Unix(self.agent_socket(id)),
            request,
        )
        .await
        {
            Ok(result) => result,
            Err(e) => {
                lock(&self.with_agent).remove(id);
                let record = self.get(id).await?;
                if !record.state.accepts_execs() {
                    return Err(Error::SandboxNotReady {
                        id: id.clone(),
                        state: record.state,
                    }
                    .into());
                }
                Err(Error::SandboxNotReady {
                    id: id.clone(),
                    state: SandboxState::Failed,
                }
                .into())
                .inspect_err(|_: &SpawnError| {
                    tracing::warn!(sandbox_id = %id, error = %e, "the sandbox agent is not answering");
                })
            }
        }
    }

    /// Creates the sandbox (the caller holds the id's create lock): claims a warm container when
    /// it can, else starts one.
    async fn create_locked(&self, spec: SandboxSpec) -> Result<Sandbox, Error> {
        match self.get(&spec.id).await {
            Ok(existing) => {
                return match existing.state {
                    SandboxState::Terminating | SandboxState::Terminated | SandboxState::Failed => {
                        Err(Error::SandboxNotReady {
                            id: existing.id,
                            state: existing.state,
                        })
                    }
                    _ => Ok(existing),
                };
            }
            Err(Error::SandboxNotFound(_)) => {}
            Err(e) => return Err(e),
        }
        if let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade)
            && let Some(sandbox) = me.claim_warm(&spec).await
        {
            return Ok(sandbox);
        }
        let id = spec.id.clone();
        let name = Self::container_name(&id);
        let workspace = self.dir(&id).join(WORKSPACE_DIR);
        let resources = self.effective(spec.resources);
        let image = self.image_of(&spec);
        let agent = self.image_agent(&image).await?;
        tracing::info!(sandbox_id = %id, %image, agent = agent.is_some(), "creating docker sandbox");
        let created: Result<(), Error> = async {
            self.make_workspace(&workspace).await?;
            let workspace = tokio::fs::canonicalize(&workspace)
                .await
                .map_err(|e| Error::io(format!("resolving {}", workspace.display()), e))?;
            let agent_dir = self.dir(&id).join(AGENT_DIR);
            if agent.is_some() {
                // The agent (the sandbox user) creates its socket here.
                self.make_workspace(&agent_dir).await?;
            }
            let body = self.container_body(
                &spec,
                resources,
                &workspace,
                agent.as_deref().map(|a| (a, agent_dir.as_path())),
            );
            let options = CreateContainerOptionsBuilder::new().name(&name).build();
            self.docker
                .create_container(Some(options), body)
                .await
                .map_err(|e| {
                    let hint = if status_code(&e) == Some(404) {
                        " (is the sandbox image built? see compose/sandbox/build.sh)"
                    } else {
                        ""
                    };
                    docker_error(format!("creating the container of {id}{hint}"), e)
                })?;
            self.docker
                .start_container(
                    &name,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .map_err(|e| docker_error(format!("starting the container of {id}"), e))?;
            if agent.is_some() {
                self.await_agent(&id).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = created {
            let _ = self.remove_container(&id).await;
            let _ = self.remove_dir(&id).await;
            return Err(e);
        }
        self.get(&id).await
    }

    async fn remove_container(&self, id: &SandboxId) -> Result<(), Error> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self
            .docker
            .remove_container(&Self::container_name(id), Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(docker_error(format!("removing the container of {id}"), e)),
        }
    }

    async fn remove_dir(&self, id: &SandboxId) -> Result<(), Error> {
        let dir = self.dir(id);
        let grave = self.root.join(format!(
            "{DELETING_PREFIX}{id}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        tokio::task::spawn_blocking(move || {
            match std::fs::rename(&dir, &grave) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
            std::fs::remove_dir_all(&grave)
        })
        .await
        .map_err(|e| Error::Internal(format!("deleting sandbox {id}: {e}")))?
        .map_err(|e| Error::io(format!("removing the folder of sandbox {id}"), e))
    }
}

#[async_trait]
impl SandboxBackend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn create(&self, spec: SandboxSpec) -> Result<Sandbox, Error> {
        let id = spec.id.clone();
        let id_lock = lock(&self.create_locks)
            .entry(id.clone())
            .or_default()
            .clone();
        let result = {
            let _guard = id_lock.lock().await;
            self.create_locked(spec).await
        };
        let mut locks = lock(&self.create_locks);
        // Forget the lock unless another create of this id holds or awaits it.
        if Arc::strong_count(&id_lock) == 2 {
            locks.remove(&id);
        }
        result
    }
    async fn get(&self, id: &SandboxId) -> Result<Sandbox, Error> {
        self.inspect(id).await.map(|(record, _)| record)
    }

    async fn list(&self, selector: &Labels) -> Result<Vec<Sandbox>, Error> {
        // The selector is applied to the records, not by the engine: a claimed warm container's
        // labels live in its claim file.
        let label_filters = vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{META_ROOT}={}", self.root_label()),
        ];
        let filters = HashMap::from([("label".to_owned(), label_filters)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| docker_error("listing sandboxes", e))?;
        let mut out = Vec::with_capacity(containers.len());
        for c in containers {
            let labels = c.labels.unwrap_or_default();
            let status = c.state.map(|s| s.to_string());
            let name = c.names.as_ref().and_then(|n| n.first()).map(String::as_str);
            if let Some(record) = self.record(&labels, status.as_deref(), name).await
                && crate::sandbox::matches_selector(&record.labels, selector)
            {
                out.push(record);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn renew(&self, id: &SandboxId, ttl: Duration) -> Result<Sandbox, Error> {
        let mut record = self.get(id).await?;
        if !record.state.accepts_execs() {
            return Err(Error::SandboxNotReady {
                id: id.clone(),
                state: record.state,
            });
        }
        record.expires_at = expiry(Utc::now(), ttl);
        let file = self.dir(id).join(EXPIRY_FILE);
        let tmp = self.dir(id).join(format!(".{EXPIRY_FILE}.tmp"));
        tokio::fs::write(&tmp, record.expires_at.to_rfc3339())
            .await
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        tokio::fs::rename(&tmp, &file)
            .await
            .map_err(|e| Error::io(format!("renewing sandbox {id}"), e))?;
        Ok(record)
    }

    async fn delete(&self, id: &SandboxId) -> Result<(), Error> {
        self.get(id).await?;
        if !lock(&self.terminating).insert(id.clone()) {
            return Ok(()); // another delete is at work
        }
        lock(&self.with_agent).remove(id);
        let result = async {
            self.remove_container(id).await?;
            self.remove_dir(id).await
        }
        .await;
        lock(&self.terminating).remove(id);
        result
    }

    async fn spawn(
        &self,
        id: &SandboxId,
        spec: &ProcessSpec,
    ) -> Result<SpawnedProcess, SpawnError> {
        validate(spec)?;
        let known = lock(&self.with_agent).contains(id) && !lock(&self.terminating).contains(id);
        if !known {
            // Unknown here (first use after a restart, or no agent): ask the engine.
            let (record, labels) = self.inspect(id).await?;
            if !record.state.accepts_execs() {
                return Err(Error::SandboxNotReady {
                    id: id.clone(),
                    state: record.state,
                }
                .into());
            }
            if self.settings.use_agent && labels.contains_key(META_AGENT) {
                lock(&self.with_agent).insert(id.clone());
            }
        }
        let bad_cwd = |m: String| SpawnError::Failed(SpawnFailed::new(SpawnFailure::BadCwd, m));
        let jail = self.jail(id)?;
        let cwd = jail
            .resolve_read(&spec.cwd)
            .map_err(|e| bad_cwd(format!("bad cwd: {e}")))?;
        match tokio::fs::metadata(&cwd.host).await {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(bad_cwd(format!("cwd {} is not a directory", cwd.path))),
            Err(_) => return Err(bad_cwd(format!("cwd {} does not exist", cwd.path))),
        }
        let container_cwd = if cwd.real.is_root() {
            WORKDIR.to_owned()
        } else {
            format!("{WORKDIR}/{}", cwd.real.as_str())
        };
        if lock(&self.with_agent).contains(id) {
            return self.spawn_with_agent(id, spec, container_cwd).await;
        }
        let container = Self::container_name(id);
        exec_api::spawn(
            &self.docker,
            id,
            &container,
            &self.settings.user(),
            spec,
            container_cwd,
        )
        .await
    }

    async fn shutdown(&self) {
        self.drain_warm().await;
    }

    async fn files(&self, id: &SandboxId) -> Result<Arc<dyn SandboxFiles>, Error> {
        let record = self.get(id).await?;
        if !record.state.accepts_execs() {
            return Err(Error::SandboxNotReady {
                id: id.clone(),
                state: record.state,
            });
        }
        let jail = Arc::new(self.jail(id)?);
        let owner = Owner {
            uid: self.settings.uid,
            gid: self.settings.gid,
        };
        Ok(Arc::new(LocalFiles::new(jail).owned_by(owner)) as Arc<dyn SandboxFiles>)
    }
}
