//! Test harness for Cognition's end-to-end and component tests.
//!
//! * [`TestStack`] starts gateway + session service + executor in this process on ephemeral
//!   loopback ports (through the same launcher as `cognition up`), with a temporary data folder.
//! * [`postgres`] hands out a fresh PostgreSQL database per test from the server named by
//!   `COGNITION_TEST_POSTGRES_URL` (started by `tests/run.sh`).
//! * [`wait_until`] polls a condition instead of sleeping.
//!
//! Only test code depends on this crate.

pub mod postgres;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cognition_cli::stack::{self, RunningStack, StackConfig};
use cognition_proto::executor::v1::executor_service_client::ExecutorServiceClient;
use cognition_proto::session::v1::session_service_client::SessionServiceClient;
use tokio_util::sync::CancellationToken;

/// Options for [`TestStack::start`].
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Scope keys to enforce; `None` leaves scoping off.
    pub scope_keys: Option<Vec<String>>,
    /// Use this PostgreSQL URL instead of SQLite.
    pub postgres_url: Option<String>,
    /// An OpenAI-compatible base URL (e.g. `FakeLlm::openai_base_url()`); `None` keeps the
    /// configured default (the `mock` provider).
    pub llm_base_url: Option<String>,
}

/// The whole stack, in this process.
pub struct TestStack {
    pub gateway: SocketAddr,
    pub session: SocketAddr,
    pub executor: SocketAddr,
    running: Option<RunningStack>,
    shutdown: CancellationToken,
    dir: tempfile::TempDir,
}

impl TestStack {
    pub async fn start(options: StackOptions) -> anyhow::Result<TestStack> {
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().join("data");
        let mut session = cognition_session::Config::embedded(data_dir.clone());
        let mut gateway = cognition_gateway::Config::default();
        if let Some(keys) = &options.scope_keys {
            session.scoping_enabled = true;
            session.scope_keys = keys.clone();
            gateway.scoping_enabled = true;
            gateway.scope_keys = keys.clone();
        }
        if let Some(url) = &options.postgres_url {
            session.persistence_backend = cognition_session::PersistenceBackend::Postgres;
            session.persistence_uri = Some(url.clone());
        }
        if let Some(url) = &options.llm_base_url {
            session.llm_provider = cognition_session::llm::ProviderKind::OpenAiCompatible;
            session.llm_model = Some("fake-model".into());
            session.llm_base_url = Some(url.clone());
            session.llm_max_retries = 0;
        }
        let executor = cognition_executor::Config::embedded(data_dir);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let shutdown = CancellationToken::new();
        let running = stack::start(
            StackConfig {
                gateway,
                session,
                executor,
            },
            listener,
            shutdown.clone(),
        )
        .await?;
        let stack = TestStack {
            gateway: running.gateway_addr,
            session: running.session_addr,
            executor: running.executor_addr,
            running: Some(running),
            shutdown,
            dir,
        };
        stack.wait_ready().await?;
        Ok(stack)
    }

    /// `http://127.0.0.1:<port>` of the gateway.
    pub fn url(&self) -> String {
        format!("http://{}", self.gateway)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub async fn session_client(
        &self,
    ) -> anyhow::Result<SessionServiceClient<tonic::transport::Channel>> {
        Ok(SessionServiceClient::connect(format!("http://{}", self.session)).await?)
    }

    pub async fn executor_client(
        &self,
    ) -> anyhow::Result<ExecutorServiceClient<tonic::transport::Channel>> {
        Ok(ExecutorServiceClient::connect(format!("http://{}", self.executor)).await?)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let addr = self.gateway;
        wait_until(Duration::from_secs(20), || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await
    }

    /// Stops every service and waits for them.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(running) = self.running.take() {
            running.stop().await?;
        }
        Ok(())
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `condition` every 10 ms until it holds, or fails after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The directory holding this workspace's built binaries (`target/<profile>`), found from the
/// running test executable (`target/<profile>/deps/<test>`).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let deps = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("test binary has no parent dir"))?;
    let dir = if deps.ends_with("deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    Ok(dir.to_path_buf())
}

/// Path of a workspace binary such as `cognition-session`; fails with a clear message when it
/// was not built (`tests/run.sh` builds every binary before testing).
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} not built; run `cargo build --workspace --bins` first (tests/run.sh does)",
        path.display()
    );
    Ok(path)
}
