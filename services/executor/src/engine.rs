//! The executor's core: sandboxes from a [`SandboxBackend`], the exec registry of each sandbox,
//! file operations with the protected-path rule, the TTL reaper and shutdown. It is also the one
//! place that records the executor's metrics ([`crate::metrics`]).
//!
//! The gRPC layer converts wire types and calls this; `cognition up` and tests can call it too.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backend::SandboxBackend;
use crate::backend::docker::{DockerBackend, DockerSettings};
use crate::backend::kubernetes::KubernetesBackend;
use crate::backend::local::LocalBackend;
use crate::config::{BackendKind, Config};
use crate::error::Error;
use crate::exec::{Begin, Exec, ExecRegistry, ExitReason, Settings, StartExec};
use crate::files::SandboxFiles;
use crate::ids::{ExecId, SandboxId};
use crate::metrics;
use crate::paths::{PathError, Protected, WorkspacePath};
use crate::process::SpawnError;
use crate::sandbox::{Labels, Sandbox, SandboxSpec};

/// How long [`Engine::delete_sandbox`] and [`Engine::shutdown`] wait for killed execs to finish.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Sandboxes, execs and files over one backend.
pub struct Engine {
    backend: Arc<dyn SandboxBackend>,
    config: Config,
    protected: Protected,
    registries: Mutex<HashMap<SandboxId, Arc<ExecRegistry>>>,
    /// Wakes the reaper loop to refresh the sandbox gauge after a create or delete.
    sandboxes_changed: Notify,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.backend.name())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds the backend named by the configuration (re-adopting existing sandboxes).
    pub async fn open(config: Config) -> Result<Arc<Self>, Error> {
        let protected = Protected::new(&config.protected_paths);
        let backend: Arc<dyn SandboxBackend> = match config.sandbox_backend {
            BackendKind::Local => {
                Arc::new(LocalBackend::open(&config.sandbox_root_path(), protected).await?)
            }
            BackendKind::Docker => {
                DockerBackend::connect(
                    &config.sandbox_root_path(),
                    protected,
                    DockerSettings::from_config(&config),
                )
                .await?
            }
            BackendKind::Kubernetes => KubernetesBackend::connect(&config).await?,
        };
        Ok(Self::with_backend(backend, config))
    }

    /// An engine over any backend.
    pub fn with_backend(backend: Arc<dyn SandboxBackend>, config: Config) -> Arc<Self> {
        Arc::new(Self {
            protected: Protected::new(&config.protected_paths),
            backend,
            config,
            registries: Mutex::new(HashMap::new()),
            sandboxes_changed: Notify::new(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn backend(&self) -> &Arc<dyn SandboxBackend> {
        &self.backend
    }

    fn registry(&self, id: &SandboxId) -> Arc<ExecRegistry> {
        self.registries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.clone())
            .or_insert_with(|| Arc::new(ExecRegistry::new(id.clone())))
            .clone()
    }

    fn existing_registry(&self, id: &SandboxId) -> Option<Arc<ExecRegistry>> {
        self.registries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    // ---- sandboxes ------------------------------------------------------------------------

    /// The TTL to use for a request (`None` = the default).
    pub fn ttl(&self, requested: Option<Duration>) -> Result<Duration, Error> {
        let ttl = requested.unwrap_or_else(|| self.config.sandbox_ttl());
        if ttl.as_secs() > crate::config::MAX_TTL_SECONDS {
            return Err(Error::Invalid(format!(
                "ttl_seconds must be at most {} (30 days)",
                crate::config::MAX_TTL_SECONDS
            )));
        }
        Ok(ttl)
    }

    pub async fn create_sandbox(&self, spec: SandboxSpec) -> Result<Sandbox, Error> {
        let started = Instant::now();
        let sandbox = self.backend.create(spec).await?;
        metrics::sandbox_created(self.backend.name(), started.elapsed());
        self.sandboxes_changed.notify_one();
        Ok(sandbox)
    }

    pub async fn get_sandbox(&self, id: &SandboxId) -> Result<Sandbox, Error> {
        self.backend.get(id).await
    }

    pub async fn list_sandboxes(&self, selector: &Labels) -> Result<Vec<Sandbox>, Error> {
        self.backend.list(selector).await
    }

    pub async fn renew_sandbox(
        &self,
        id: &SandboxId,
        ttl: Option<Duration>,
    ) -> Result<Sandbox, Error> {
        let ttl = self.ttl(ttl)?;
        self.backend.renew(id, ttl).await
    }

    /// Kills every process in the sandbox (reason `SANDBOX_TERMINATED`), then removes it.
    pub async fn delete_sandbox(&self, id: &SandboxId) -> Result<(), Error> {
        self.backend.get(id).await?;
        let execs = match self.existing_registry(id) {
            Some(registry) => registry.close_and_kill(ExitReason::SandboxTerminated),
            None => Vec::new(),
        };
        let result = self.backend.delete(id).await;
        wait_all(&execs, KILL_WAIT).await;
        self.registries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        self.sandboxes_changed.notify_one();
        if result.is_ok() {
            tracing::info!(sandbox_id = %id, killed = execs.iter().filter(|e| !e.is_finished()).count(), "sandbox deleted");
        }
        result
    }

    // ---- execs ----------------------------------------------------------------------------

    /// Starts an exec, or finds the one already started with the same id and spec. Returns the
    /// exec and whether it already existed (the caller then attaches). Program failures are in
    /// the exec's terminal state, not errors. `access` vets the caller on the sandbox record
    /// fetched here anyway (the tenancy check of `grpc::tenancy`).
    pub async fn start_exec(
        &self,
        req: StartExec,
        access: impl Fn(&Sandbox) -> Result<(), Error> + Send,
    ) -> Result<(Arc<Exec>, bool), Error> {
        let sandbox = self.backend.get(&req.sandbox_id).await?;
        access(&sandbox)?;
        if !sandbox.state.accepts_execs() {
            return Err(Error::SandboxNotReady {
                id: sandbox.id,
                state: sandbox.state,
            });
        }
        let registry = self.registry(&req.sandbox_id);
        let exec_id = req.exec_id.unwrap_or_else(ExecId::generate);
        let budgets = req.spec.output.budgets(self.config.max_output_bytes);
        let exec = match registry.begin(
            exec_id.clone(),
            req.spec,
            self.config.max_concurrent_execs,
            budgets,
        )? {
            Begin::Existing(exec) => return Ok((exec, true)),
            Begin::New(exec) => exec,
        };
        let process_spec = match exec.spec().process_spec() {
            Ok(spec) => spec,
            Err(failure) => {
                exec.fail(failure);
                self.record_spawn_failure(&exec);
                return Ok((exec, false));
            }
        };
        match self.backend.spawn(&req.sandbox_id, &process_spec).await {
            Ok(mut process) => {
                tracing::debug!(sandbox_id = %req.sandbox_id, exec_id = %exec_id, pid = process.pid, "exec started");
                exec.set_running(process.pid, process.signaller.clone(), process.stdin.take())
                    .await;
                let settings = Settings {
                    kill_grace: self.config.kill_grace(),
                    drain: self.config.drain(),
                    disconnect_grace: self.config.disconnect_grace(),
                };
                let span = tracing::info_span!(
                    "exec",
                    sandbox_id = %req.sandbox_id,
                    exec_id = %exec_id,
                    exit_code = tracing::field::Empty,
                    signal = tracing::field::Empty,
                    outcome = tracing::field::Empty,
                );
                let supervisor =
                    crate::exec::supervisor::supervise(exec.clone(), process, settings);
                let (backend, finished, running) = (
                    self.backend.name(),
                    exec.clone(),
                    metrics::RunningExec::start(),
                );
                tokio::spawn(
                    async move {
                        supervisor.await;
                        if let Some(terminal) = finished.snapshot().terminal {
                            metrics::exec_finished(backend, &terminal);
                            record_exit(&tracing::Span::current(), &terminal);
                        }
                        drop(running);
                    }
                    .instrument(span),
                );
            }
            Err(SpawnError::Failed(failure)) => {
                tracing::debug!(sandbox_id = %req.sandbox_id, exec_id = %exec_id, ?failure, "spawn failed");
                exec.fail(failure);
                self.record_spawn_failure(&exec);
            }
            Err(SpawnError::Sandbox(e)) => {
                registry.remove(&exec_id);
                return Err(e);
            }
        }
        Ok((exec, false))
    }

    fn record_spawn_failure(&self, exec: &Exec) {
        if let Some(terminal) = exec.snapshot().terminal {
            metrics::exec_finished(self.backend.name(), &terminal);
        }
    }

    /// The exec, or NOT_FOUND (for the sandbox or the exec).
    pub async fn exec(&self, sandbox_id: &SandboxId, exec_id: &ExecId) -> Result<Arc<Exec>, Error> {
        let not_found = || Error::ExecNotFound {
            sandbox_id: sandbox_id.clone(),
            exec_id: exec_id.clone(),
        };
        match self.existing_registry(sandbox_id) {
            Some(registry) => registry.get(exec_id).ok_or_else(not_found),
            None => {
                self.backend.get(sandbox_id).await?;
                Err(not_found())
            }
        }
    }

    pub async fn list_execs(
        &self,
        sandbox_id: &SandboxId,
        include_finished: bool,
    ) -> Result<Vec<Arc<Exec>>, Error> {
        match self.existing_registry(sandbox_id) {
            Some(registry) => Ok(registry.list(include_finished)),
            None => {
                self.backend.get(sandbox_id).await?;
                Ok(Vec::new())
            }
        }
    }

    // ---- files ----------------------------------------------------------------------------

    /// File operations of a sandbox. `write_path`, when given, is checked against the
    /// protected paths here too (for every backend) before the backend sees it. `access` as for
    /// [`Engine::start_exec`].
    pub async fn files(
        &self,
        id: &SandboxId,
        write_path: Option<&str>,
        access: impl Fn(&Sandbox) -> Result<(), Error> + Send,
    ) -> Result<Arc<dyn SandboxFiles>, Error> {
        let sandbox = self.backend.get(id).await?;
        access(&sandbox)?;
        if !sandbox.state.accepts_execs() {
            return Err(Error::SandboxNotReady {
                id: sandbox.id,
                state: sandbox.state,
            });
        }
        if let Some(raw) = write_path {
            let path = WorkspacePath::parse(raw, Path::new(&sandbox.workdir))?;
            if let Some(rule) = self.protected.rule_for(&path) {
                return Err(PathError::Protected {
                    path: path.to_string(),
                    rule: rule.to_owned(),
                }
                .into());
            }
        }
        self.backend.files(id).await
    }

    // ---- housekeeping ---------------------------------------------------------------------

    /// Deletes expired sandboxes and forgets old finished execs.
    pub async fn reap_once(&self) {
        let now = Utc::now();
        match self.backend.list(&Labels::new()).await {
            Ok(sandboxes) => {
                metrics::sandbox_counts(self.backend.name(), &sandboxes);
                for sandbox in sandboxes
                    .into_iter()
                    .filter(|s| s.state.accepts_execs() && s.is_expired(now))
                {
                    tracing::info!(sandbox_id = %sandbox.id, expires_at = %sandbox.expires_at, "sandbox expired; deleting");
                    if let Err(e) = self.delete_sandbox(&sandbox.id).await {
                        tracing::warn!(sandbox_id = %sandbox.id, error = %e, "deleting an expired sandbox");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing sandboxes for the reaper"),
        }
        let registries: Vec<Arc<ExecRegistry>> = self
            .registries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for registry in registries {
            registry.prune(self.config.exec_retention());
        }
    }

    /// Sets the sandbox gauge from a fresh listing, when metrics are exported (a listing can
    /// cost a Docker API call).
    pub async fn refresh_sandbox_gauge(&self) {
        if !cognition_metrics::is_installed() {
            return;
        }
        match self.backend.list(&Labels::new()).await {
            Ok(sandboxes) => metrics::sandbox_counts(self.backend.name(), &sandboxes),
            Err(e) => tracing::debug!(error = %e, "listing sandboxes for the sandbox gauge"),
        }
    }

    /// Runs [`Engine::reap_once`] every `reaper_interval` until `shutdown`, and refreshes the
    /// sandbox gauge at start and after every create or delete (coalesced).
    pub async fn run_reaper(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.reaper_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        self.refresh_sandbox_gauge().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.reap_once().await,
                _ = self.sandboxes_changed.notified() => self.refresh_sandbox_gauge().await,
            }
        }
    }

    /// Kills every running process (their sandboxes stay on disk for re-adoption) and waits a
    /// bounded time for them to finish.
    pub async fn shutdown(&self) {
        let registries: Vec<Arc<ExecRegistry>> = self
            .registries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut execs = Vec::new();
        for registry in registries {
            execs.extend(registry.close_and_kill(ExitReason::SandboxTerminated));
        }
        let running = execs.iter().filter(|e| !e.is_finished()).count();
        if running > 0 {
            tracing::info!(running, "killing running execs at shutdown");
        }
        wait_all(&execs, KILL_WAIT).await;
        self.backend.shutdown().await;
    }
}

async fn wait_all(execs: &[Arc<Exec>], limit: Duration) {
    let all = futures::future::join_all(execs.iter().map(|e| e.wait()));
    if tokio::time::timeout(limit, all).await.is_err() {
        tracing::warn!("some execs did not finish in time after being killed");
    }
}

/// Puts how an exec ended on its `exec` span: `outcome` (as in the metrics), and `exit_code` or
/// `signal` when the status was collected.
fn record_exit(span: &tracing::Span, terminal: &crate::exec::Terminal) {
    span.record("outcome", metrics::outcome(terminal));
    if let crate::exec::Terminal::Exited(exited) = terminal {
        match exited.exit {
            Some(crate::process::ProcessExit::Code(code)) => {
                span.record("exit_code", code);
            }
            Some(crate::process::ProcessExit::Signal(signal)) => {
                span.record("signal", signal);
            }
            None => {}
        }
    }
}
