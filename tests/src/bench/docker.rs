//! The Docker containers of one executor, seen through the `docker` command line: how many a
//! sandbox root has, whether a sandbox's container came from the warm pool, and removing what
//! a run left behind.
//!
//! The executor labels every container it manages `cognition.io/managed=true` and
//! `executor.cognition.io/root=<sandbox root>` (the canonical path), so one run's containers are
//! told apart from any other executor's on the same engine.

use std::path::Path;

use tokio::process::Command;

/// Label on every container an executor manages.
const LABEL_MANAGED: &str = "cognition.io/managed";
/// Label with the (canonical) sandbox root of the executor that owns the container.
const LABEL_ROOT: &str = "executor.cognition.io/root";
/// Label of a container started for the warm pool (it keeps it once claimed).
const LABEL_WARM: &str = "executor.cognition.io/warm";
/// Name prefix of a warm container not claimed yet.
const WARM_NAME: &str = "cognition-.warm-";

/// The containers of the executor whose sandbox root is `root`.
#[derive(Debug, Clone)]
pub struct Containers {
    root_label: String,
}

impl Containers {
    /// The containers under the sandbox root `root` (which must exist: the executor creates it
    /// at start).
    pub fn under(root: &Path) -> anyhow::Result<Containers> {
        let root = std::fs::canonicalize(root)
            .map_err(|e| anyhow::anyhow!("sandbox root {}: {e}", root.display()))?;
        Ok(Containers {
            root_label: root.display().to_string(),
        })
    }

    /// Ids of every container (running or not) under the root.
    pub async fn ids(&self) -> anyhow::Result<Vec<String>> {
        self.ps(&[]).await
    }

    /// Running warm containers that no sandbox has claimed yet.
    pub async fn warm_ready(&self) -> anyhow::Result<usize> {
        let name = format!("name={WARM_NAME}");
        Ok(self
            .ps(&["--filter", "status=running", "--filter", &name])
            .await?
            .len())
    }

    /// Whether the container of sandbox `id` was a warm container (claimed from the pool).
    pub async fn claimed_from_pool(&self, sandbox_id: &str) -> anyhow::Result<bool> {
        let format = format!("{{{{index .Config.Labels \"{LABEL_WARM}\"}}}}");
        let name = format!("cognition-{sandbox_id}");
        let out = docker(&["inspect", "--format", &format, &name]).await?;
        Ok(!out.trim().is_empty())
    }

    /// Removes (forcefully) every container under the root; how many there were.
    pub async fn remove_all(&self) -> anyhow::Result<usize> {
        let ids = self.ids().await?;
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            docker(&args).await?;
        }
        Ok(ids.len())
    }

    async fn ps(&self, filters: &[&str]) -> anyhow::Result<Vec<String>> {
        let managed = format!("label={LABEL_MANAGED}=true");
        let root = format!("label={LABEL_ROOT}={}", self.root_label);
        let mut args = vec!["ps", "-a", "-q", "--no-trunc", "--filter", &managed];
        args.extend(["--filter", &root]);
        args.extend(filters);
        let out = docker(&args).await?;
        Ok(out.lines().map(str::to_owned).collect())
    }
}

/// Whether the Docker engine answers (`docker info`); the reason when it does not.
pub async fn available() -> Result<(), String> {
    docker(&["info", "--format", "{{.ServerVersion}}"])
        .await
        .map(drop)
        .map_err(|e| format!("{e:#}"))
}

/// Runs `docker args…`; its standard output, or an error with its standard error.
async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("running docker: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "docker {}: {}",
        args.first().copied().unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
