//! The Kubernetes backend (`COGNITION_SANDBOX_BACKEND=kubernetes`): a sandbox is a pod, made
//! either by the agent-sandbox controller from a `SandboxClaim` ([`claim`], the default mode) or
//! by the executor itself ([`pod`], the multi-tenancy design). Either way the pod runs the
//! in-sandbox agent on TCP with a token, and every process and file operation goes through it
//! (file operations as commands: [`crate::files::remote`]); the executor never uses
//! `pods/exec`. The objects carry the record ([`record`], [`naming`]), so a restarted executor
//! finds its sandboxes with one list. [`startup`] checks the cluster before serving.

pub mod claim;
pub mod naming;
pub mod pod;
pub mod record;
pub mod startup;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use cognition_sandbox_agent::protocol::SpawnRequest;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::core::DynamicObject;
use serde_json::json;

use self::naming::ANNOTATION_EXPIRES;
use self::pod::PodSettings;
use super::SandboxBackend;
use super::agent_client::{self, Endpoint};
use crate::config::{Config, K8sMode};
use crate::error::Error;
use crate::files::SandboxFiles;
use crate::files::remote::{Launcher, RemoteFiles};
use crate::ids::SandboxId;
use crate::paths::WorkspacePath;
use crate::process::{ProcessSpec, SpawnError, SpawnFailed, SpawnFailure, SpawnedProcess};
use crate::sandbox::{Labels, Resources, Sandbox, SandboxSpec, SandboxState, expiry};

/// The environment every process starts from (the client's variables go over it).
const BASE_ENV: [(&str, &str); 3] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/home"),
    ("LANG", "C.UTF-8"),
];
/// How long a delete waits for the object to disappear.
const DELETE_WAIT: Duration = Duration::from_secs(30);
/// Longest pause between two polls of a starting sandbox.
const MAX_POLL: Duration = Duration::from_millis(500);

/// The backend's settings, from the executor's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: K8sMode,
    pub namespace: String,
    pub template: String,
    pub warm_pool: Option<String>,
    pub router_url: String,
    /// Lifetime given to a Sandbox's `spec.shutdownTime` (agent-sandbox mode).
    pub shutdown_ttl: Duration,
    /// Agent-sandbox mode: the token the template gives the agent.
    pub agent_token: Option<String>,
    pub pod: PodSettings,
    /// Pod mode: limits when the request names none.
    pub default_resources: Resources,
    /// Pod mode: the longest a sandbox lives, renewals or not.
    pub max_duration: Option<chrono::Duration>,
    pub ready_timeout: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        let (uid, gid) = config.sandbox_uid_gid().unwrap_or((1000, 1000));
        Self {
            mode: config.k8s_sandbox_mode,
            namespace: config.k8s_sandbox_namespace.clone(),
            template: config.k8s_sandbox_template.clone(),
            warm_pool: Some(config.k8s_sandbox_warm_pool.clone()).filter(|p| !p.is_empty()),
            router_url: config.k8s_sandbox_router_url.clone(),
            shutdown_ttl: Duration::from_secs(config.k8s_sandbox_ttl_seconds),
            agent_token: config
                .k8s_agent_token
                .as_ref()
                .map(|t| t.expose().to_owned()),
            pod: PodSettings {
                namespace: config.k8s_sandbox_namespace.clone(),
                image: config.sandbox_image.clone(),
                pull_policy: config.k8s_sandbox_pull_policy.clone(),
                uid: i64::from(uid),
                gid: i64::from(gid),
                agent_port: config.k8s_agent_port,
                workspace_pvc: Some(config.k8s_workspace_pvc.clone()).filter(|p| !p.is_empty()),
            },
            default_resources: Resources {
                memory_bytes: config.sandbox_memory_bytes,
                cpu_millis: config.sandbox_cpu_millis,
                pids: 0,
            },
            max_duration: (config.k8s_max_sandbox_duration_seconds > 0).then(|| {
                chrono::Duration::seconds(
                    i64::try_from(config.k8s_max_sandbox_duration_seconds)
                        .unwrap_or(i64::MAX / 1000),
                )
            }),
            ready_timeout: Duration::from_secs(config.k8s_ready_timeout_seconds),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A Kubernetes API failure as the executor's error (the message names what was being done).
fn api_error(context: impl std::fmt::Display, e: kube::Error) -> Error {
    match &e {
        kube::Error::Api(status) if status.code == 403 => Error::Unavailable(format!(
            "kubernetes: {context}: forbidden ({}); check the executor's RBAC (docs/kubernetes.md)",
            status.message
        )),
        _ => Error::Unavailable(format!("kubernetes: {context}: {e}")),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

pub struct KubernetesBackend {
    client: kube::Client,
    settings: Settings,
    protected: Vec<String>,
    /// Agents of sandboxes known to be ready.
    endpoints: Mutex<HashMap<SandboxId, Endpoint>>,
    /// One create at a time per id.
    create_locks: Mutex<HashMap<SandboxId, Arc<tokio::sync::Mutex<()>>>>,
}

impl KubernetesBackend {
    /// Connects with the in-cluster (or kubeconfig) credentials and checks the cluster.
    pub async fn connect(config: &Config) -> Result<Arc<Self>, Error> {
        let client = kube::Client::try_default().await.map_err(|e| {
            Error::Unavailable(format!(
                "kubernetes: no cluster credentials (in-cluster service account or kubeconfig): {e}"
            ))
        })?;
        let backend = Self::new(
            client,
            Settings::from_config(config),
            config.protected_paths.clone(),
        );
        startup::check(&backend.client, &backend.settings).await?;
        Ok(Arc::new(backend))
    }

    /// A backend over any client (tests pass kube's mock service); no startup check.
    pub fn new(client: kube::Client, settings: Settings, protected: Vec<String>) -> Self {
        Self {
            client,
            settings,
            protected,
            endpoints: Mutex::new(HashMap::new()),
            create_locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    fn claims(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.settings.namespace,
            &claim::claim_resource(),
        )
    }

    fn sandboxes(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.settings.namespace,
            &claim::sandbox_resource(),
        )
    }

    fn kind(&self) -> &'static str {
        match self.settings.mode {
            K8sMode::Pod => "pod",
            K8sMode::AgentSandbox => "sandbox claim",
        }
    }

    /// The record of `id` from its object (`None` when there is none, or it is another id's
    /// whose name hashes the same).
    fn record_of(
        &self,
        id: &SandboxId,
        meta: &kube::core::ObjectMeta,
        state: SandboxState,
    ) -> Option<Sandbox> {
        record::from_meta(meta, state, "kubernetes", self.settings.max_duration)
            .filter(|sb| &sb.id == id)
    }

    async fn fetch(&self, id: &SandboxId) -> Result<Option<Sandbox>, Error> {
        let name = naming::object_name(id);
        let context = || format!("reading {} {}/{name}", self.kind(), self.settings.namespace);
        Ok(match self.settings.mode {
            K8sMode::Pod => self
                .pods()
                .get_opt(&name)
                .await
                .map_err(|e| api_error(context(), e))?
                .and_then(|p| self.record_of(id, &p.metadata, pod::state(&p))),
            K8sMode::AgentSandbox => self
                .claims()
                .get_opt(&name)
                .await
                .map_err(|e| api_error(context(), e))?
                .and_then(|c| self.record_of(id, &c.metadata, claim::state(&c))),
        })
    }

    /// Waits (bounded by the ready timeout) until the sandbox's pod runs and its agent answers.
    async fn await_ready(&self, id: &SandboxId) -> Result<Endpoint, Error> {
        let deadline = tokio::time::Instant::now() + self.settings.ready_timeout;
        let mut delay = Duration::from_millis(20);
        let name = naming::object_name(id);
        loop {
            if let Some(endpoint) = self.locate(id, true).await? {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                return match agent_client::wait_ready(&endpoint, left.max(Duration::from_secs(1)))
                    .await
                {
                    Ok(version) => {
                        tracing::debug!(sandbox_id = %id, %version, "sandbox agent ready");
                        lock(&self.endpoints).insert(id.clone(), endpoint.clone());
                        Ok(endpoint)
                    }
                    Err(e) => Err(Error::Unavailable(format!(
                        "kubernetes: the agent of sandbox {id} ({} {}/{name}) did not answer: {e}",
                        self.kind(),
                        self.settings.namespace
                    ))),
                };
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "kubernetes: {} {}/{name} of sandbox {id} was not running after {}s \
                     (COGNITION_K8S_READY_TIMEOUT)",
                    self.kind(),
                    self.settings.namespace,
                    self.settings.ready_timeout.as_secs()
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_POLL);
        }
    }

    /// The agent of a sandbox whose pod has an address; `Ok(None)` while it starts. A sandbox
    /// that will never start is an error saying why. `starting` patches the Sandbox's
    /// shutdown time once it exists (agent-sandbox mode).
    async fn locate(&self, id: &SandboxId, starting: bool) -> Result<Option<Endpoint>, Error> {
        let name = naming::object_name(id);
        let ns = &self.settings.namespace;
        match self.settings.mode {
            K8sMode::Pod => {
                let Some(p) = self
                    .pods()
                    .get_opt(&name)
                    .await
                    .map_err(|e| api_error(format!("reading pod {ns}/{name}"), e))?
                else {
                    return Err(Error::SandboxNotFound(id.clone()));
                };
                if let Some(why) = pod::failure(&p) {
                    let image = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers.first())
                        .and_then(|c| c.image.clone())
                        .unwrap_or_default();
                    return Err(Error::Unavailable(format!(
                        "kubernetes: the pod {ns}/{name} of sandbox {id} cannot run (image {image}): {why}"
                    )));
                }
                if pod::state(&p) != SandboxState::Ready {
                    return Ok(None);
                }
                let (Some(addr), Some(token)) = (pod::address(&p), pod::token(&p)) else {
                    return Err(Error::Unavailable(format!(
                        "kubernetes: the pod {ns}/{name} has no agent port or token; it was not \
                         made by this executor"
                    )));
                };
                Ok(Some(Endpoint::Tcp {
                    addr,
                    token: token.into(),
                }))
            }
            K8sMode::AgentSandbox => {
                let Some(c) = self
                    .claims()
                    .get_opt(&name)
                    .await
                    .map_err(|e| api_error(format!("reading sandbox claim {ns}/{name}"), e))?
                else {
                    return Err(Error::SandboxNotFound(id.clone()));
                };
                if let Some(why) = claim::failure(&c) {
                    return Err(Error::Unavailable(format!(
                        "kubernetes: sandbox claim {ns}/{name} (template {}) failed: {why}",
                        c.data["spec"]["sandboxTemplateRef"]["name"]
                            .as_str()
                            .unwrap_or_default()
                    )));
                }
                let Some(sandbox_name) = claim::sandbox_name(&c) else {
                    return Ok(None);
                };
                let ip = match claim::pod_ip(&c) {
                    Some(ip) if !starting => Some(ip),
                    _ => {
                        let Some(sandbox) =
                            self.sandboxes().get_opt(&sandbox_name).await.map_err(|e| {
                                api_error(format!("reading sandbox {ns}/{sandbox_name}"), e)
                            })?
                        else {
                            return Ok(None);
                        };
                        if let Some(why) = claim::failure(&sandbox) {
                            return Err(Error::Unavailable(format!(
                                "kubernetes: sandbox {ns}/{sandbox_name} failed: {why}"
                            )));
                        }
                        if !claim::sandbox_ready(&sandbox) {
                            return Ok(None);
                        }
                        if starting {
                            let at = expiry(Utc::now(), self.settings.shutdown_ttl);
                            self.patch_shutdown(&sandbox_name, at).await?;
                        }
                        claim::pod_ip(&sandbox)
                    }
                };
                let Some(ip) = ip else { return Ok(None) };
                let token = self.settings.agent_token.clone().unwrap_or_default();
                let addr = if ip.contains(':') {
                    format!("[{ip}]:{}", self.settings.pod.agent_port)
                } else {
                    format!("{ip}:{}", self.settings.pod.agent_port)
                };
                Ok(Some(Endpoint::Tcp {
                    addr,
                    token: token.into(),
                }))
            }
        }
    }

    async fn patch_shutdown(&self, sandbox: &str, at: chrono::DateTime<Utc>) -> Result<(), Error> {
        self.sandboxes()
            .patch(
                sandbox,
                &PatchParams::default(),
                &Patch::Merge(claim::shutdown_patch(at)),
            )
            .await
            .map_err(|e| {
                api_error(
                    format!(
                        "setting spec.shutdownTime of sandbox {}/{sandbox}",
                        self.settings.namespace
                    ),
                    e,
                )
            })?;
        Ok(())
    }

    /// The agent of a ready sandbox (cached).
    async fn endpoint(&self, id: &SandboxId) -> Result<Endpoint, Error> {
        if let Some(e) = lock(&self.endpoints).get(id) {
            return Ok(e.clone());
        }
        let record = self.get(id).await?;
        if !record.state.accepts_execs() {
            return Err(Error::SandboxNotReady {
                id: id.clone(),
                state: record.state,
            });
        }
        match self.locate(id, false).await? {
            Some(endpoint) => {
                lock(&self.endpoints).insert(id.clone(), endpoint.clone());
                Ok(endpoint)
            }
            None => Err(Error::SandboxNotReady {
                id: id.clone(),
                state: SandboxState::Pending,
            }),
        }
    }

    async fn create_object(&self, spec: &SandboxSpec) -> Result<(), Error> {
        let name = naming::object_name(&spec.id);
        let now = Utc::now();
        let resources = self.effective(spec.resources);
        let labels = naming::object_labels(&name, &spec.labels);
        let annotations = record::annotations(spec, resources, now, expiry(now, spec.ttl));
        let ns = &self.settings.namespace;
        let result = match self.settings.mode {
            K8sMode::Pod => {
                let token = format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                );
                // Like Docker's, a pod-mode template names the image.
                let mut settings = self.settings.pod.clone();
                if !spec.template.is_empty() {
                    settings.image = spec.template.clone();
                }
                let body = pod::build(&settings, &name, labels, annotations, resources, &token);
                self.pods()
                    .create(&PostParams::default(), &body)
                    .await
                    .map(drop)
            }
            K8sMode::AgentSandbox => {
                let template = if spec.template.is_empty() {
                    &self.settings.template
                } else {
                    &spec.template
                };
                let body = claim::build(
                    &name,
                    ns,
                    template,
                    self.settings.warm_pool.as_deref(),
                    labels,
                    annotations,
                );
                self.claims()
                    .create(&PostParams::default(), &body)
                    .await
                    .map(drop)
            }
        };
        match result {
            Ok(()) => Ok(()),
            // A concurrent create (another executor replica) made it first: use it.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(api_error(
                format!("creating {} {ns}/{name}", self.kind()),
                e,
            )),
        }
    }

    fn effective(&self, requested: Resources) -> Resources {
        let d = self.settings.default_resources;
        Resources {
            memory_bytes: if requested.memory_bytes == 0 {
                d.memory_bytes
            } else {
                requested.memory_bytes
            },
            cpu_millis: if requested.cpu_millis == 0 {
                d.cpu_millis
            } else {
                requested.cpu_millis
            },
            pids: 0,
        }
    }

    async fn delete_object(&self, id: &SandboxId) -> Result<(), Error> {
        let name = naming::object_name(id);
        let ns = &self.settings.namespace;
        let result = match self.settings.mode {
            K8sMode::Pod => self
                .pods()
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await
                .map(drop),
            K8sMode::AgentSandbox => self
                .claims()
                .delete(
                    &name,
                    &DeleteParams {
                        propagation_policy: Some(PropagationPolicy::Background),
                        ..DeleteParams::default()
                    },
                )
                .await
                .map(drop),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api_error(
                format!("deleting {} {ns}/{name}", self.kind()),
                e,
            )),
        }
    }

    fn spawn_request(spec: &ProcessSpec) -> Result<SpawnRequest, SpawnError> {
        crate::process::validate(spec)?;
        let cwd = WorkspacePath::parse(&spec.cwd, Path::new(record::WORKDIR)).map_err(|e| {
            SpawnError::Failed(SpawnFailed::new(
                SpawnFailure::BadCwd,
                format!("bad cwd: {e}"),
            ))
        })?;
        let mut env: Vec<(String, String)> = BASE_ENV
            .iter()
            .filter(|(k, _)| !spec.env.contains_key(*k))
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(SpawnRequest {
            argv: spec.argv.clone(),
            env,
            // Relative: the agent resolves it against its workdir (the workspace mount).
            cwd: cwd.as_str().to_owned(),
            stdin_pipe: spec.stdin_pipe,
            pty: spec.pty.and_then(|p| p.to_window()),
        })
    }
}

/// Processes through one sandbox's agent (for [`RemoteFiles`]).
struct AgentLauncher {
    id: SandboxId,
    endpoint: Endpoint,
}

#[async_trait]
impl Launcher for AgentLauncher {
    async fn spawn(&self, spec: &ProcessSpec) -> Result<SpawnedProcess, SpawnError> {
        let request = KubernetesBackend::spawn_request(spec)?;
        agent_client::spawn(&self.endpoint, request)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(sandbox_id = %self.id, error = %e, "the sandbox agent is not answering");
                Err(Error::SandboxNotReady {
                    id: self.id.clone(),
                    state: SandboxState::Failed,
                }
                .into())
            })
    }
}

#[async_trait]
impl SandboxBackend for KubernetesBackend {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn create(&self, spec: SandboxSpec) -> Result<Sandbox, Error> {
        let guard = lock(&self.create_locks)
            .entry(spec.id.clone())
            .or_default()
            .clone();
        let _held = guard.lock().await;
        let existing = self.fetch(&spec.id).await?;
        if existing.is_none() {
            self.create_object(&spec).await?;
        }
        if let Err(e) = self.await_ready(&spec.id).await {
            if existing.is_none() {
                // Leave nothing half-made behind.
                if let Err(del) = self.delete_object(&spec.id).await {
                    tracing::warn!(sandbox_id = %spec.id, error = %del, "deleting a sandbox that did not start");
                }
            }
            return Err(e);
        }
        lock(&self.create_locks).remove(&spec.id);
        self.get(&spec.id).await
    }

    async fn get(&self, id: &SandboxId) -> Result<Sandbox, Error> {
        self.fetch(id)
            .await?
            .ok_or_else(|| Error::SandboxNotFound(id.clone()))
    }

    async fn list(&self, selector: &Labels) -> Result<Vec<Sandbox>, Error> {
        let params = ListParams::default().labels(&naming::list_selector(selector));
        let ns = &self.settings.namespace;
        let max = self.settings.max_duration;
        let record = |meta: &kube::core::ObjectMeta, state| {
            record::from_meta(meta, state, "kubernetes", max)
                .filter(|sb| crate::sandbox::matches_selector(&sb.labels, selector))
        };
        let mut out: Vec<Sandbox> = match self.settings.mode {
            K8sMode::Pod => self
                .pods()
                .list(&params)
                .await
                .map_err(|e| api_error(format!("listing sandbox pods in {ns}"), e))?
                .items
                .iter()
                .filter_map(|p| record(&p.metadata, pod::state(p)))
                .collect(),
            K8sMode::AgentSandbox => self
                .claims()
                .list(&params)
                .await
                .map_err(|e| api_error(format!("listing sandbox claims in {ns}"), e))?
                .items
                .iter()
                .filter_map(|c| record(&c.metadata, claim::state(c)))
                .collect(),
        };
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn renew(&self, id: &SandboxId, ttl: Duration) -> Result<Sandbox, Error> {
        let record = self.get(id).await?;
        if !record.state.accepts_execs() {
            return Err(Error::SandboxNotReady {
                id: id.clone(),
                state: record.state,
            });
        }
        let at = expiry(Utc::now(), ttl);
        let name = naming::object_name(id);
        let ns = &self.settings.namespace;
        let patch = Patch::Merge(json!({
            "metadata": { "annotations": { ANNOTATION_EXPIRES: at.to_rfc3339() } }
        }));
        let params = PatchParams::default();
        match self.settings.mode {
            K8sMode::Pod => self.pods().patch(&name, &params, &patch).await.map(drop),
            K8sMode::AgentSandbox => self.claims().patch(&name, &params, &patch).await.map(drop),
        }
        .map_err(|e| api_error(format!("renewing {} {ns}/{name}", self.kind()), e))?;
        if self.settings.mode == K8sMode::AgentSandbox {
            // The controller's own deadline follows, never earlier than the TTL setting.
            let shutdown = at.max(expiry(Utc::now(), self.settings.shutdown_ttl));
            if let Some(c) = self.claims().get_opt(&name).await.ok().flatten()
                && let Some(sandbox) = claim::sandbox_name(&c)
            {
                self.patch_shutdown(&sandbox, shutdown).await?;
            }
        }
        self.get(id).await
    }

    async fn delete(&self, id: &SandboxId) -> Result<(), Error> {
        self.get(id).await?;
        lock(&self.endpoints).remove(id);
        self.delete_object(id).await?;
        // Pods and claims go away asynchronously; wait (bounded) so a delete means gone.
        let deadline = tokio::time::Instant::now() + DELETE_WAIT;
        let mut delay = Duration::from_millis(20);
        while self.fetch(id).await?.is_some() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(sandbox_id = %id, "the sandbox's {} is still terminating", self.kind());
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_POLL);
        }
        Ok(())
    }

    async fn spawn(
        &self,
        id: &SandboxId,
        spec: &ProcessSpec,
    ) -> Result<SpawnedProcess, SpawnError> {
        let request = Self::spawn_request(spec)?;
        let endpoint = self.endpoint(id).await?;
        match agent_client::spawn(&endpoint, request).await {
            Ok(result) => result,
            Err(e) => {
                lock(&self.endpoints).remove(id);
                let record = self.get(id).await?;
                tracing::warn!(sandbox_id = %id, error = %e, "the sandbox agent is not answering");
                Err(Error::SandboxNotReady {
                    id: id.clone(),
                    state: if record.state.accepts_execs() {
                        SandboxState::Failed
                    } else {
                        record.state
                    },
                }
                .into())
            }
        }
    }

    async fn files(&self, id: &SandboxId) -> Result<Arc<dyn SandboxFiles>, Error> {
        let endpoint = self.endpoint(id).await?;
        Ok(Arc::new(
            RemoteFiles::new(
                Arc::new(AgentLauncher {
                    id: id.clone(),
                    endpoint,
                }),
                self.protected.clone(),
            )
            .with_workdir(record::WORKDIR),
        ))
    }
}
