//! The warm pool (`COGNITION_SANDBOX_WARM_POOL=N`): N started containers, agent answering, that a
//! new sandbox claims instead of creating its own (~20 ms instead of ~200 ms).
//!
//! A warm container is `cognition-.warm-<hex>` with its folder `<sandbox_root>/.warm-<hex>` (a
//! name no sandbox id can take) and the label `executor.cognition.io/warm`; it has no sandbox id,
//! so `get`/`list` do not see it and the reaper leaves it alone. Labels are immutable, so a claim
//! is recorded beside the container instead: the claim writes `claim.json` (id, labels, creation
//! and expiry) into the warm folder, renames the folder to `<sandbox_root>/<id>` (the bind mounts
//! follow the folder) and renames the container to `cognition-<id>`. From then on the sandbox
//! reads like any other: its record comes from `claim.json` where other sandboxes use labels.
//! Only requests with the default image and resources can claim; others start cold.
//!
//! Every claim starts a refill in the background. At start the executor re-adopts the warm
//! containers of its previous run (dropping any that are not running or lost their folder); at a
//! graceful shutdown it removes them, so nothing is left behind.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RenameContainerOptionsBuilder,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    AGENT_DIR, AGENT_SOCKET, DockerBackend, LABEL_MANAGED, LABEL_SANDBOX, META_CREATED,
    META_EXPIRES, META_ROOT, WORKSPACE_DIR, docker_error, lock,
};
use crate::backend::SandboxBackend;
use crate::error::Error;
use crate::ids::SandboxId;
use crate::sandbox::{Labels, Resources, Sandbox, SandboxSpec, expiry};

/// Label on warm containers (value: the warm key).
pub(super) const META_WARM: &str = "executor.cognition.io/warm";
/// Prefix of warm keys (folder and container name); ids cannot start with `.`.
const WARM_PREFIX: &str = ".warm-";
const CLAIM_FILE: &str = "claim.json";

/// The pool's bookkeeping.
#[derive(Debug, Default)]
pub(super) struct Pool {
    /// Ready containers (key, whether it runs the agent), oldest first.
    ready: VecDeque<(String, bool)>,
    /// Containers being started.
    filling: usize,
    /// Set at shutdown: nothing new is started, late arrivals are removed.
    closed: bool,
}

/// What a claimed warm container is: the record its labels cannot carry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Claim {
    pub id: SandboxId,
    pub labels: Labels,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

fn container_name(key: &str) -> String {
    format!("cognition-{key}")
}

impl DockerBackend {
    fn warm_dir(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Ready warm containers (for tests and metrics).
    pub fn warm_ready(&self) -> usize {
        lock(&self.warm).ready.len()
    }

    /// The claim behind a container named `name`, when it is a claimed warm container.
    pub(super) async fn read_claim(&self, name: &str) -> Option<Claim> {
        let id = name.trim_start_matches('/').strip_prefix("cognition-")?;
        if id.starts_with(WARM_PREFIX) {
            return None; // not claimed yet
        }
        let id = SandboxId::parse(id).ok()?;
        let raw = tokio::fs::read(self.dir(&id).join(CLAIM_FILE)).await.ok()?;
        let claim: Claim = serde_json::from_slice(&raw).ok()?;
        (claim.id == id).then_some(claim)
    }

    /// Re-adopts the warm containers of an earlier run and starts filling the pool.
    pub(super) async fn adopt_warm(self: &Arc<Self>) -> Result<(), Error> {
        let filters = std::collections::HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{META_ROOT}={}", self.root_label()),
                META_WARM.to_owned(),
            ],
        )]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| docker_error("listing warm containers", e))?;
        for c in containers {
            let Some(name) = c.names.unwrap_or_default().into_iter().next() else {
                continue;
            };
            let Some(key) = name
                .trim_start_matches('/')
                .strip_prefix("cognition-")
                .filter(|k| k.starts_with(WARM_PREFIX))
                .map(str::to_owned)
            else {
                continue; // claimed: a sandbox like any other
            };
            let running = c.state.map(|s| s.to_string()).as_deref() == Some("running");
            let agent = c
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(super::META_AGENT));
            let socket_ok = !agent
                || super::agent_client::ping(&super::agent_client::Endpoint::unix(
                    self.warm_dir(&key).join(AGENT_DIR).join(AGENT_SOCKET),
                ))
                .await
                .is_ok();
            if running && socket_ok && self.warm_dir(&key).is_dir() {
                tracing::info!(%key, "re-adopted a warm container");
                lock(&self.warm).ready.push_back((key, agent));
            } else {
                tracing::info!(%key, "removing a stale warm container");
                self.discard_warm(&key).await;
            }
        }
        self.refill();
        Ok(())
    }

    /// Starts containers in the background until the pool is full again.
    pub(super) fn refill(self: &Arc<Self>) {
        let target = self.settings.warm_pool as usize;
        let missing = {
            let mut pool = lock(&self.warm);
            if pool.closed {
                return;
            }
            let missing = target.saturating_sub(pool.ready.len() + pool.filling);
            pool.filling += missing;
            missing
        };
        for _ in 0..missing {
            let me = Arc::downgrade(self);
            tokio::spawn(async move {
                let Some(backend) = me.upgrade() else { return };
                let started = backend.start_warm().await;
                let late = {
                    let mut pool = lock(&backend.warm);
                    pool.filling -= 1;
                    match started {
                        Ok(entry) if pool.closed => Some(entry.0),
                        Ok(entry) => {
                            pool.ready.push_back(entry);
                            None
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "starting a warm container failed");
                            None
                        }
                    }
                };
                if let Some(key) = late {
                    backend.discard_warm(&key).await;
                }
            });
        }
    }

    /// Starts one warm container and waits for its agent.
    async fn start_warm(&self) -> Result<(String, bool), Error> {
        let key = format!(
            "{WARM_PREFIX}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        let dir = self.warm_dir(&key);
        let result = async {
            let workspace = dir.join(WORKSPACE_DIR);
            self.make_workspace(&workspace).await?;
            let workspace = tokio::fs::canonicalize(&workspace)
                .await
                .map_err(|e| Error::io(format!("resolving {}", workspace.display()), e))?;
            let agent = self.image_agent(&self.settings.image).await?;
            let agent_dir = dir.join(AGENT_DIR);
            if agent.is_some() {
                self.make_workspace(&agent_dir).await?;
            }
            let placeholder = SandboxSpec {
                id: SandboxId::parse("warm").expect("a valid id"),
                labels: Labels::new(),
                template: String::new(),
                resources: Resources::default(),
                ttl: std::time::Duration::ZERO,
            };
            let mut body = self.container_body(
                &placeholder,
                self.effective(Resources::default()),
                &workspace,
                agent.as_deref().map(|a| (a, agent_dir.as_path())),
            );
            if let Some(labels) = body.labels.as_mut() {
                for key in [LABEL_SANDBOX, META_CREATED, META_EXPIRES] {
                    labels.remove(key);
                }
                labels.insert(META_WARM.into(), key.clone());
            }
            let name = container_name(&key);
            let options = CreateContainerOptionsBuilder::new().name(&name).build();
            self.docker
                .create_container(Some(options), body)
                .await
                .map_err(|e| docker_error("creating a warm container", e))?;
            self.docker
                .start_container(
                    &name,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .map_err(|e| docker_error("starting a warm container", e))?;
            if agent.is_some() {
                super::agent_client::wait_ready(
                    &super::agent_client::Endpoint::unix(agent_dir.join(AGENT_SOCKET)),
                    super::AGENT_READY_TIMEOUT,
                )
                .await
                .map_err(|e| Error::Internal(format!("warm container {key}: {e}")))?;
            }
            Ok(agent.is_some())
        }
        .await;
        match result {
            Ok(agent) => Ok((key, agent)),
            Err(e) => {
                self.discard_warm(&key).await;
                Err(e)
            }
        }
    }

    /// Removes a warm container and its folder.
    async fn discard_warm(&self, key: &str) {
        let options = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        let _ = self
            .docker
            .remove_container(&container_name(key), Some(options))
            .await;
        let dir = self.warm_dir(key);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }

    /// Whether a request may take a warm container: the default image and resources.
    fn can_claim(&self, spec: &SandboxSpec) -> bool {
        self.settings.warm_pool > 0
            && (spec.template.is_empty() || spec.template == self.settings.image)
            && self.effective(spec.resources) == self.effective(Resources::default())
    }

    /// Turns a warm container into sandbox `spec.id`; `None` when none is ready (or the claim
    /// failed, which is logged): the caller then starts one cold.
    pub(super) async fn claim_warm(self: &Arc<Self>, spec: &SandboxSpec) -> Option<Sandbox> {
        if !self.can_claim(spec) {
            return None;
        }
        let (key, agent) = lock(&self.warm).ready.pop_front()?;
        self.refill();
        let now = Utc::now();
        let claim = Claim {
            id: spec.id.clone(),
            labels: spec.labels.clone(),
            created_at: now,
            expires_at: expiry(now, spec.ttl),
        };
        let warm_dir = self.warm_dir(&key);
        let dir = self.dir(&spec.id);
        let claimed: Result<(), Error> = async {
            let file = warm_dir.join(CLAIM_FILE);
            let bytes = serde_json::to_vec(&claim)
                .map_err(|e| Error::Internal(format!("encoding a claim: {e}")))?;
            tokio::fs::write(&file, bytes)
                .await
                .map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
            if tokio::fs::symlink_metadata(&dir).await.is_ok() {
                return Err(Error::Internal(format!("{} already exists", dir.display())));
            }
            tokio::fs::rename(&warm_dir, &dir)
                .await
                .map_err(|e| Error::io(format!("claiming {}", warm_dir.display()), e))?;
            let options = RenameContainerOptionsBuilder::new()
                .name(&DockerBackend::container_name(&spec.id))
                .build();
            self.docker
                .rename_container(&container_name(&key), options)
                .await
                .map_err(|e| docker_error(format!("renaming warm container {key}"), e))
        }
        .await;
        if let Err(e) = claimed {
            tracing::warn!(sandbox_id = %spec.id, %key, error = %e, "claiming a warm container failed; starting cold");
            // Undo what can be undone; the container goes either way.
            if tokio::fs::symlink_metadata(&warm_dir).await.is_err()
                && tokio::fs::symlink_metadata(dir.join(CLAIM_FILE))
                    .await
                    .is_ok()
            {
                let _ = tokio::fs::rename(&dir, &warm_dir).await;
            }
            self.discard_warm(&key).await;
            return None;
        }
        if agent {
            lock(&self.with_agent).insert(spec.id.clone());
        }
        tracing::info!(sandbox_id = %spec.id, %key, "claimed a warm container");
        match self.get(&spec.id).await {
            Ok(sandbox) => Some(sandbox),
            Err(e) => {
                tracing::warn!(sandbox_id = %spec.id, error = %e, "a claimed warm container vanished");
                None
            }
        }
    }

    /// Removes every unclaimed warm container (graceful shutdown).
    pub(super) async fn drain_warm(&self) {
        let keys: Vec<String> = {
            let mut pool = lock(&self.warm);
            pool.closed = true;
            pool.ready.drain(..).map(|(key, _)| key).collect()
        };
        futures::future::join_all(keys.iter().map(|key| self.discard_warm(key))).await;
        if !keys.is_empty() {
            tracing::info!(removed = keys.len(), "removed the warm pool");
        }
    }
}
