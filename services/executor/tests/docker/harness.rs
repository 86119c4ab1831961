//! Docker test harness: the gate (run whenever the engine answers; skip only without CI when it
//! does not), the image, the per-test executor and the leak guard. The `executor` test binary
//! uses it too, for the Docker variants of the shared behavioural suite.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use cognition_executor::{BackendKind, Config};

use crate::support::Server;

pub const IMAGE: &str = "cognition-sandbox:latest";

/// Whether Docker tests must run (`CI` or `COGNITION_TEST_DOCKER` set).
fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("COGNITION_TEST_DOCKER").is_some()
}

static IMAGE_READY: Mutex<bool> = Mutex::new(false);

/// Whether Docker tests can run here: the engine answers (the image is then built when missing or
/// stale). Without `CI` (and `COGNITION_TEST_DOCKER`) an engine that does not answer skips the
/// test, saying why; with it, the test fails.
pub async fn docker_usable(test: &str) -> Option<Docker> {
    let connected = match Docker::connect_with_local_defaults() {
        Ok(docker) => docker.negotiate_version().await,
        Err(e) => Err(e),
    };
    match connected {
        Ok(docker) => {
            tokio::task::spawn_blocking(ensure_image)
                .await
                .expect("building the image");
            Some(docker)
        }
        Err(e) if required() => {
            panic!("Docker is required when CI (or COGNITION_TEST_DOCKER) is set: {e}")
        }
        Err(e) => {
            eprintln!(
                "skipping docker test {test}: the Docker engine is not available ({e}) and CI is unset"
            );
            None
        }
    }
}

/// Builds the sandbox image with the offline script when it is missing (once per process).
fn ensure_image() {
    let mut ready = IMAGE_READY.lock().unwrap_or_else(|e| e.into_inner());
    if *ready {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compose/sandbox/build.sh");
    let status = std::process::Command::new("sh")
        .arg(&script)
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(status.success(), "{} failed: {status}", script.display());
    *ready = true;
}

/// One test's executor on the Docker backend, with its own sandbox root.
pub struct DockerTest {
    pub server: Server,
    pub docker: Docker,
    pub root: PathBuf,
    _guard: LeakGuard,
    dir: tempfile::TempDir,
    tune: fn(&mut Config),
}

/// Force-removes whatever a test's root still owns when the test ends (safety net for failed
/// tests; passing tests have already proved there is nothing left).
struct LeakGuard {
    root: PathBuf,
}

impl DockerTest {
    /// `None` (with a message) when Docker is unavailable and not required (see
    /// [`docker_usable`]); panics when it is required and unavailable.
    pub async fn start(name: &str) -> Option<Self> {
        Self::start_with(name, |_| {}).await
    }

    /// [`DockerTest::start`] with a configuration tweak (kept for restarts).
    pub async fn start_with(name: &str, tune: fn(&mut Config)) -> Option<Self> {
        let docker = docker_usable(name).await?;
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Self::executor(dir.path(), tune).await;
        // The executor creates the root in its own task; create it here too to resolve it now.
        std::fs::create_dir_all(&server.root).expect("sandbox root");
        let root = server.root.canonicalize().expect("sandbox root");
        let test = Self {
            server,
            docker,
            _guard: LeakGuard { root: root.clone() },
            root,
            dir,
            tune,
        };
        assert_eq!(test.containers().await, 0, "a fresh root has no containers");
        Some(test)
    }

    async fn executor(dir: &Path, tune: fn(&mut Config)) -> Server {
        Server::start_at(dir, |c| {
            c.sandbox_backend = BackendKind::Docker;
            c.sandbox_image = IMAGE.into();
            tune(c);
        })
        .await
    }

    /// A second executor on the same data directory (restart / re-adoption). The new one
    /// starts before the old one stops, as in a rolling restart.
    pub async fn restart(&mut self) {
        let old = std::mem::replace(
            &mut self.server,
            Self::executor(self.dir.path(), self.tune).await,
        );
        old.stop().await;
    }

    /// The data directory (the sandbox root is its `sandboxes` folder).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Another executor on the same data directory and configuration, running beside this one.
    pub async fn second_executor(&self) -> Server {
        Self::executor(self.dir.path(), self.tune).await
    }

    /// Containers managed by this test's executor (by labels, read from the engine).
    pub async fn containers(&self) -> usize {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                "cognition.io/managed=true".to_owned(),
                format!("executor.cognition.io/root={}", self.root.display()),
            ],
        )]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .expect("list containers")
            .len()
    }

    /// Deletes every sandbox through the API and checks no container is left.
    pub async fn finish(self) {
        let sandboxes = self
            .server
            .client
            .clone()
            .list_sandboxes(cognition_proto::executor::v1::ListSandboxesRequest::default())
            .await
            .expect("list")
            .into_inner()
            .sandboxes;
        for sb in sandboxes {
            self.server
                .client
                .clone()
                .delete_sandbox(cognition_proto::executor::v1::DeleteSandboxRequest {
                    sandbox_id: sb.id,
                })
                .await
                .expect("delete");
        }
        assert_eq!(self.containers().await, 0, "containers leaked");
        self.server.stop().await;
    }
}

impl DockerTest {
    /// Stops the executor gracefully (which removes its warm pool), then checks that no
    /// container of this root is left. Sandboxes must have been deleted before.
    pub async fn stop_and_check_empty(self) {
        let DockerTest {
            server,
            docker,
            root,
            _guard,
            dir,
            tune: _,
        } = self;
        server.stop().await;
        let probe = DockerTest {
            server: Server::start_at(dir.path(), |_| {}).await,
            docker,
            root,
            _guard,
            dir,
            tune: |_| {},
        };
        assert_eq!(probe.containers().await, 0, "containers leaked");
        probe.server.stop().await;
    }
}

impl Drop for LeakGuard {
    fn drop(&mut self) {
        let filter = format!("label=executor.cognition.io/root={}", self.root.display());
        if let Ok(out) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
}
