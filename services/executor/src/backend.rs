//! The sandbox backend trait: where sandboxes live and how processes start in them.
//!
//! A backend owns sandbox records (it is their source of truth: the local backend keeps
//! `sandbox.json` next to the workspace; the Docker backend keeps labels on the container, the
//! Kubernetes backend annotations on the pod or claim), drives each sandbox through the [`SandboxState`](crate::sandbox::SandboxState)
//! machine, starts processes, and offers file operations. Everything above a single process —
//! exec ids, timeouts, output caps, replay, attach, disconnect policy — is the engine's
//! ([`crate::exec`]) and works the same for every backend.

pub mod agent_client;
pub mod docker;
pub mod kubernetes;
pub mod local;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Error;
use crate::files::SandboxFiles;
use crate::ids::SandboxId;
use crate::process::{ProcessSpec, SpawnError, SpawnedProcess};
use crate::sandbox::{Labels, Sandbox, SandboxSpec};

/// A place where sandboxes run: local processes, Docker containers, Kubernetes pods.
#[async_trait]
pub trait SandboxBackend: Send + Sync + 'static {
    /// Short name reported in `Sandbox.backend` (`local`, `docker`, …).
    fn name(&self) -> &'static str;

    /// Creates the sandbox and returns it `Ready`. Idempotent: when a sandbox with the same id
    /// exists, returns it unchanged.
    async fn create(&self, spec: SandboxSpec) -> Result<Sandbox, Error>;

    /// The sandbox, or [`Error::SandboxNotFound`].
    async fn get(&self, id: &SandboxId) -> Result<Sandbox, Error>;

    /// Sandboxes whose labels contain every entry of `selector`, ordered by id.
    async fn list(&self, selector: &Labels) -> Result<Vec<Sandbox>, Error>;

    /// Pushes the expiry to `now + ttl`.
    async fn renew(&self, id: &SandboxId, ttl: Duration) -> Result<Sandbox, Error>;

    /// Kills every process left in the sandbox and releases it (`Terminating` → `Terminated`);
    /// the sandbox is gone afterwards.
    async fn delete(&self, id: &SandboxId) -> Result<(), Error>;

    /// Starts a process in its own process group. Program problems are
    /// [`SpawnError::Failed`]; sandbox problems are [`SpawnError::Sandbox`].
    async fn spawn(&self, id: &SandboxId, spec: &ProcessSpec)
    -> Result<SpawnedProcess, SpawnError>;

    /// File operations inside the sandbox's workspace.
    async fn files(&self, id: &SandboxId) -> Result<Arc<dyn SandboxFiles>, Error>;

    /// Releases what the backend keeps for itself at a graceful shutdown (a warm pool); the
    /// sandboxes stay, to be re-adopted.
    async fn shutdown(&self) {}
}
