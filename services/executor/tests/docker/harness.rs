//! Docker test harness: the gate (run under CI, skip otherwise), the image, the per-test
//! executor and the leak guard.

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
    /// `None` (with a message) when Docker tests are not required; panics when they are and
    /// Docker is not usable.
    pub async fn start(name: &str) -> Option<Self> {
        Self::start_with(name, |_| {}).await
    }

    /// [`DockerTest::start`] with a configuration tweak (kept for restarts).
    pub async fn start_with(name: &str, tune: fn(&mut Config)) -> Option<Self> {
        if !required() {
            eprintln!(
                "skipping docker test {name}: set CI=1 (or COGNITION_TEST_DOCKER=1) to run it against the Docker engine"
            );
            return None;
        }
        let docker = Docker::connect_with_local_defaults()
            .expect("connecting to Docker")
            .negotiate_version()
            .await
            .expect("Docker is required when CI is set: the engine did not answer");
        tokio::task::spawn_blocking(ensure_image)
            .await
            .expect("building the image");
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
