//! The Docker backend: one hardened container per sandbox, processes via the Docker exec API.
//!
//! **Containers.** `cognition-<id>`, created from `COGNITION_SANDBOX_IMAGE` with every capability
//! dropped, `no-new-privileges`, a read-only root filesystem, tmpfs `/tmp` (noexec) and `/home`,
//! network mode `none` (or the configured network), memory (no swap), CPU and pids limits, a
//! non-root user, `docker-init` as PID 1 (reaps orphans, so zombies do not eat the pids limit)
//! and a `sleep` keep-alive. The workspace is the host folder `<sandbox_root>/<id>/workspace`
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
//! **Processes.** The Docker exec API cannot signal a running exec, and the pid that
//! `inspect_exec` reports is a host pid. So every exec runs a small `sh` wrapper that checks the
//! program (typed spawn failures), reports its in-container pid on the first stderr line (a line
//! the backend strips) and `exec`s the program: runc starts each exec in a new session, so that
//! pid is also the process group id. Signals are a second exec, `kill -<sig> -<pgid>`, as the
//! sandbox user. Exit codes come from `inspect_exec` once the output stream ends; Docker reports a
//! signal death as `128 + n`, which is read as signal `n` only when the backend sent `n`.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::SandboxBackend;
use crate::config::Config;
use crate::error::Error;
use crate::files::SandboxFiles;
use crate::files::local::LocalFiles;
use crate::ids::SandboxId;
use crate::paths::{Jail, Protected};
use crate::process::{
    ProcessExit, ProcessSpec, Signal, Signaller, SpawnError, SpawnFailed, SpawnFailure,
    SpawnedProcess, validate,
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

/// Where the workspace is mounted in the container (the processes' working directory).
pub const WORKDIR: &str = "/workspace";
const WORKSPACE_DIR: &str = "workspace";
const EXPIRY_FILE: &str = "expires_at";
const DELETING_PREFIX: &str = ".deleting-";
/// Prefix of the wrapper's report line on stderr.
const MARKER: &str = "@@cognition-exec@@ ";
/// Bytes buffered per output pipe between the Docker stream and the engine.
const PIPE_BUFFER: usize = 256 * 1024;

/// The exec wrapper: `sh -c WRAPPER cognition-exec <argv…>`. Reports a missing or non-executable
/// program, else its pid (= process group, runc starts execs in a new session), then execs it.
const WRAPPER: &str = r#"p="$1"
case "$p" in
*/*)
  if [ ! -e "$p" ]; then echo "@@cognition-exec@@ notfound" >&2; exit 127; fi
  if [ -d "$p" ] || [ ! -x "$p" ]; then echo "@@cognition-exec@@ permission" >&2; exit 126; fi ;;
*)
  if ! command -v "$p" >/dev/null 2>&1; then echo "@@cognition-exec@@ notfound" >&2; exit 127; fi ;;
esac
echo "@@cognition-exec@@ pid $$" >&2
exec "$@""#;

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
    create_lock: tokio::sync::Mutex<()>,
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
    ) -> Result<Self, Error> {
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
            create_lock: tokio::sync::Mutex::new(()),
        };
        let adopted = backend.list(&Labels::new()).await?;
        for sandbox in &adopted {
            tracing::info!(sandbox_id = %sandbox.id, state = %sandbox.state, expires_at = %sandbox.expires_at, "re-adopted docker sandbox");
        }
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
    async fn record(
        &self,
        labels: &HashMap<String, String>,
        status: Option<&str>,
    ) -> Option<Sandbox> {
        if labels.get(LABEL_MANAGED).map(String::as_str) != Some("true")
            || labels.get(META_ROOT) != Some(&self.root_label())
        {
            return None;
        }
        let id = SandboxId::parse(labels.get(LABEL_SANDBOX)?).ok()?;
        let time = |key: &str| {
            labels
                .get(key)
                .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let number = |key: &str| labels.get(key).and_then(|v| v.parse::<u64>().ok());
        let created_at = time(META_CREATED).unwrap_or_else(Utc::now);
        let mut expires_at = time(META_EXPIRES).unwrap_or(created_at);
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
        let user_labels: Labels = labels
            .iter()
            .filter(|(k, _)| {
                k.as_str() != LABEL_SANDBOX && k.as_str() != LABEL_MANAGED && !k.starts_with(META)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
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

    fn container_body(
        &self,
        spec: &SandboxSpec,
        resources: Resources,
        workspace: &Path,
    ) -> ContainerCreateBody {
        let s = &self.settings;
        let image = if spec.template.is_empty() {
            s.image.clone()
        } else {
            spec.template.clone()
        };
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
        ContainerCreateBody {
            image: Some(image),
            cmd: Some(vec!["sleep".into(), "2147483647".into()]),
            user: Some(s.user()),
            working_dir: Some(WORKDIR.into()),
            env: Some(vec!["HOME=/home".into(), "LANG=C.UTF-8".into()]),
            labels: Some(self.labels(spec, resources)),
            host_config: Some(HostConfig {
                binds: Some(vec![format!("{}:{WORKDIR}:rw", workspace.display())]),
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
        let _guard = self.create_lock.lock().await;
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
        let id = spec.id.clone();
        let name = Self::container_name(&id);
        let workspace = self.dir(&id).join(WORKSPACE_DIR);
        let resources = self.effective(spec.resources);
        tracing::info!(sandbox_id = %id, image = %self.settings.image, "creating docker sandbox");
        let created: Result<(), Error> = async {
            self.make_workspace(&workspace).await?;
            let workspace = tokio::fs::canonicalize(&workspace)
                .await
                .map_err(|e| Error::io(format!("resolving {}", workspace.display()), e))?;
            let body = self.container_body(&spec, resources, &workspace);
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
                .map_err(|e| docker_error(format!("starting the container of {id}"), e))
        }
        .await;
        if let Err(e) = created {
            let _ = self.remove_container(&id).await;
            let _ = self.remove_dir(&id).await;
            return Err(e);
        }
        self.get(&id).await
    }

    async fn get(&self, id: &SandboxId) -> Result<Sandbox, Error> {
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
        match self.record(&labels, status.as_deref()).await {
            Some(record) if &record.id == id => Ok(record),
            _ => Err(Error::SandboxNotFound(id.clone())),
        }
    }

    async fn list(&self, selector: &Labels) -> Result<Vec<Sandbox>, Error> {
        let mut label_filters = vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{META_ROOT}={}", self.root_label()),
        ];
        label_filters.extend(selector.iter().map(|(k, v)| format!("{k}={v}")));
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
            if let Some(record) = self.record(&labels, status.as_deref()).await
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
        let record = self.get(id).await?;
        if !record.state.accepts_execs() {
            return Err(Error::SandboxNotReady {
                id: id.clone(),
                state: record.state,
            }
            .into());
        }
        validate(spec)?;
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
        let mut cmd = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            WRAPPER.to_owned(),
            "cognition-exec".to_owned(),
        ];
        cmd.extend(spec.argv.iter().cloned());
        let container = Self::container_name(id);
        let user = self.settings.user();
        let created = self
            .docker
            .create_exec(
                &container,
                CreateExecOptions {
                    attach_stdin: Some(spec.stdin_pipe),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(false),
                    env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                    cmd: Some(cmd),
                    user: Some(user.clone()),
                    working_dir: Some(container_cwd),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| match status_code(&e) {
                Some(404) => Error::SandboxNotFound(id.clone()),
                Some(409) => Error::SandboxNotReady {
                    id: id.clone(),
                    state: SandboxState::Failed,
                },
                _ => docker_error(format!("creating an exec in {id}"), e),
            })?;
        let exec_id = created.id;
        let started = self
            .docker
            .start_exec(
                &exec_id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: Some(64 * 1024),
                }),
            )
            .await
            .map_err(|e| docker_error(format!("starting an exec in {id}"), e))?;
        let StartExecResults::Attached { mut output, input } = started else {
            return Err(Error::Internal("docker started the exec detached".into()).into());
        };

        // The wrapper's report: the first stderr line.
        let mut early_out: Vec<Bytes> = Vec::new();
        let mut err_buf = BytesMut::new();
        let header = loop {
            match output.next().await {
                Some(Ok(LogOutput::StdErr { message })) => {
                    err_buf.extend_from_slice(&message);
                    if let Some(pos) = err_buf.iter().position(|b| *b == b'\n') {
                        let line = err_buf.split_to(pos + 1);
                        break Some(String::from_utf8_lossy(&line[..pos]).into_owned());
                    }
                }
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    early_out.push(message);
                }
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(e)) => {
                    return Err(docker_error(format!("reading an exec in {id}"), e).into());
                }
                None => break None,
            }
        };
        let report = header.as_deref().and_then(|h| h.strip_prefix(MARKER));
        let pid = match report {
            Some("notfound") => {
                return Err(SpawnFailed::new(
                    SpawnFailure::NotFound,
                    format!("{}: command not found", spec.argv[0]),
                )
                .into());
            }
            Some("permission") => {
                return Err(SpawnFailed::new(
                    SpawnFailure::PermissionDenied,
                    format!("{}: permission denied (not executable?)", spec.argv[0]),
                )
                .into());
            }
            Some(r) => r
                .strip_prefix("pid ")
                .and_then(|p| p.trim().parse::<u32>().ok()),
            None => None,
        };
        let Some(pid) = pid else {
            let mut text = String::new();
            for chunk in &early_out {
                text.push_str(&String::from_utf8_lossy(chunk));
            }
            if let Some(h) = &header {
                text.push_str(h);
            }
            text.push_str(&String::from_utf8_lossy(&err_buf));
            return Err(SpawnFailed::new(
                SpawnFailure::Other,
                format!("the exec did not start: {}", text.trim()),
            )
            .into());
        };

        let (stdout_w, stdout_r) = tokio::io::duplex(PIPE_BUFFER);
        let (stderr_w, stderr_r) = tokio::io::duplex(PIPE_BUFFER);
        let finished = Arc::new(AtomicBool::new(false));
        let last_signal = Arc::new(AtomicI32::new(0));
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
        let docker = self.docker.clone();
        let pump_finished = finished.clone();
        let pump_signal = last_signal.clone();
        let pump_exec = exec_id.clone();
        let leftover = err_buf.freeze();
        tokio::spawn(async move {
            let mut out = Some(stdout_w);
            let mut err = Some(stderr_w);
            for chunk in early_out {
                write_or_close(&mut out, &chunk).await;
            }
            if !leftover.is_empty() {
                write_or_close(&mut err, &leftover).await;
            }
            while let Some(item) = output.next().await {
                match item {
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                        write_or_close(&mut out, &message).await;
                    }
                    Ok(LogOutput::StdErr { message }) => write_or_close(&mut err, &message).await,
                    Ok(LogOutput::StdIn { .. }) => {}
                    Err(e) => {
                        tracing::debug!(exec = %pump_exec, error = %e, "docker exec stream ended with an error");
                        break;
                    }
                }
            }
            drop(out);
            drop(err);
            let exit = exit_status(&docker, &pump_exec, pump_signal.load(Ordering::Acquire)).await;
            pump_finished.store(true, Ordering::Release);
            let _ = exit_tx.send(exit);
        });
        let signaller = Arc::new(DockerSignaller {
            docker: self.docker.clone(),
            container,
            user,
            pid,
            finished,
            last_signal,
            runtime: tokio::runtime::Handle::current(),
        });
        let stdin = if spec.stdin_pipe {
            Some(input as crate::process::Writer)
        } else {
            None
        };
        Ok(SpawnedProcess {
            pid,
            stdin,
            stdout: Box::pin(stdout_r),
            stderr: Box::pin(stderr_r),
            exit: Box::pin(async move {
                exit_rx
                    .await
                    .map_err(|_| io::Error::other("the docker exec task ended without a status"))?
            }),
            signaller,
        })
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
        Ok(Arc::new(LocalFiles::new(jail)) as Arc<dyn SandboxFiles>)
    }
}

/// Writes to a pipe; once the reader is gone, stops writing (and keeps draining the stream).
async fn write_or_close(pipe: &mut Option<tokio::io::DuplexStream>, bytes: &[u8]) {
    if let Some(w) = pipe
        && w.write_all(bytes).await.is_err()
    {
        *pipe = None;
    }
}

/// The exit status of a finished exec: polls `inspect_exec` until it stops running. A code of
/// `128 + n` after the backend sent signal `n` is that signal; a vanished container (deleted
/// sandbox) is a SIGKILL.
async fn exit_status(docker: &Docker, exec_id: &str, sent: i32) -> io::Result<ProcessExit> {
    let mut delay = Duration::from_millis(1);
    for _ in 0..200 {
        match docker.inspect_exec(exec_id).await {
            Ok(inspect) if inspect.running != Some(true) => {
                let code = inspect.exit_code.unwrap_or(-1) as i32;
                let sent_now = sent;
                return Ok(if sent_now > 0 && code == 128 + sent_now {
                    ProcessExit::Signal(sent_now)
                } else if code == 137 {
                    // SIGKILL from the kernel (OOM, pids) or the sandbox going away.
                    ProcessExit::Signal(9)
                } else {
                    ProcessExit::Code(code)
                });
            }
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => return Ok(ProcessExit::Signal(9)),
            Err(e) => return Err(io::Error::other(format!("docker: inspecting an exec: {e}"))),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
    Err(io::Error::other(
        "docker: the exec's output ended but it kept running",
    ))
}

/// Attempts to start the `kill` exec of a signal.
const KILL_ATTEMPTS: u32 = 10;

/// Runs `cmd` detached in `container` as `user`.
async fn run_detached(
    docker: &Docker,
    container: &str,
    user: &str,
    cmd: Vec<String>,
) -> Result<(), bollard::errors::Error> {
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(cmd),
                user: Some(user.to_owned()),
                attach_stdout: Some(false),
                attach_stderr: Some(false),
                ..Default::default()
            },
        )
        .await?;
    docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: true,
                ..Default::default()
            }),
        )
        .await
        .map(|_| ())
}

/// Signals an exec's process group by running `kill` in the container (the Docker exec API has
/// no signal call). Delivery is asynchronous: the call returns once the kill is on its way.
struct DockerSignaller {
    docker: Docker,
    container: String,
    user: String,
    pid: u32,
    finished: Arc<AtomicBool>,
    last_signal: Arc<AtomicI32>,
    runtime: tokio::runtime::Handle,
}

impl Signaller for DockerSignaller {
    fn signal(&self, signal: Signal, leader_only: bool) -> io::Result<()> {
        if self.finished.load(Ordering::Acquire) {
            return Ok(()); // the pid may belong to someone else by now
        }
        let number = signal.to_nix() as i32;
        self.last_signal.store(number, Ordering::Release);
        let target = if leader_only {
            self.pid.to_string()
        } else {
            format!("-{}", self.pid)
        };
        let cmd = vec!["kill".to_owned(), format!("-{number}"), target];
        let docker = self.docker.clone();
        let container = self.container.clone();
        let user = self.user.clone();
        let finished = self.finished.clone();
        self.runtime.spawn(async move {
            // A sandbox at its pids limit (a fork bomb) can refuse the kill exec: retry a while.
            let mut delay = Duration::from_millis(20);
            for attempt in 1..=KILL_ATTEMPTS {
                if finished.load(Ordering::Acquire) {
                    return;
                }
                match run_detached(&docker, &container, &user, cmd.clone()).await {
                    Ok(()) => return,
                    Err(e) if matches!(status_code(&e), Some(404 | 409)) => return, // gone
                    Err(e) => {
                        tracing::debug!(container = %container, attempt, error = %e, "signalling a docker exec");
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            tracing::warn!(container = %container, "could not deliver a signal to a docker exec");
        });
        Ok(())
    }
}
