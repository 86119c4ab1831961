//! One behavioural suite for every backend: [`Backend`], the per-test [`Executor`] on it, and
//! [`on_every_backend!`], which turns each listed test body into `local::<name>` and
//! `docker::<name>` tests (so a failure names its backend).
//!
//! What legitimately differs between backends is answered here, per backend, never by a weaker
//! assertion: where the workspace is on the host, `HOME`, `PATH`, and whose pid namespace a pid
//! belongs to (a Docker pid is the container's, so liveness is checked from inside the sandbox).

use std::ops::Deref;
use std::path::PathBuf;

use cognition_executor::Config;
use cognition_proto::executor::v1 as pb;
use tempfile::TempDir;

use crate::fake_k8s::FakeCluster;
use crate::harness::{DockerTest, docker_usable};
use crate::support::*;

/// Namespace of the Kubernetes variant's sandbox pods.
pub const K8S_NAMESPACE: &str = "cognition-test";

/// `PATH` of processes in a Docker sandbox (the agent's base environment).
const DOCKER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where sandboxes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Host processes under a tempdir sandbox root.
    Local,
    /// One container of `cognition-sandbox:latest` per sandbox, processes through its agent.
    Docker,
    /// One pod per sandbox (pod mode) on a fake Kubernetes API; processes through its agent.
    Kubernetes,
}

impl Backend {
    /// Whether the backend can run here. Docker is skipped (with a message) only when `CI` is
    /// unset and the engine does not answer.
    pub async fn usable(self, test: &str) -> bool {
        match self {
            Backend::Local | Backend::Kubernetes => true,
            Backend::Docker => docker_usable(test).await.is_some(),
        }
    }
}

/// Runs each listed `async fn(Backend)` as `local::<name>` and `docker::<name>` tokio tests.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        /// The shared tests on the local backend.
        mod local {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::backend::Backend::Local).await;
                }
            )*
        }

        /// The shared tests on the Kubernetes backend (pod mode, fake API).
        mod kubernetes {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::backend::Backend::Kubernetes).await;
                }
            )*
        }

        /// The shared tests on the Docker backend.
        mod docker {
            $(
                #[tokio::test]
                async fn $test() {
                    let backend = $crate::backend::Backend::Docker;
                    let name = concat!(module_path!(), "::", stringify!($test));
                    if backend.usable(name).await {
                        super::$test(backend).await;
                    }
                }
            )*
        }
    };
}
pub(crate) use on_every_backend;

/// One test's executor on one backend, with its own data directory. Derefs to the [`Server`].
pub struct Executor {
    backend: Backend,
    target: Target,
}

enum Target {
    Local {
        server: Server,
        dir: TempDir,
        tune: fn(&mut Config),
    },
    /// The Docker harness: unique sandbox root, image, leak check.
    Docker(DockerTest),
    Kubernetes {
        server: Server,
        dir: TempDir,
        cluster: FakeCluster,
        tune: fn(&mut Config),
    },
}

impl Executor {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// An executor with a configuration tweak (kept for restarts).
    pub async fn start_with(backend: Backend, tune: fn(&mut Config)) -> Self {
        let target = match backend {
            Backend::Local => {
                let dir = tempfile::tempdir().expect("tempdir");
                let server = Server::start_at(dir.path(), tune).await;
                Target::Local { server, dir, tune }
            }
            Backend::Docker => Target::Docker(
                DockerTest::start_with("the shared suite", tune)
                    .await
                    .expect("Docker is usable: the test checked before it started"),
            ),
            Backend::Kubernetes => {
                let dir = tempfile::tempdir().expect("tempdir");
                let cluster = FakeCluster::new(K8S_NAMESPACE, "unused-template-token");
                let server = kubernetes_server(dir.path(), &cluster, tune).await;
                Target::Kubernetes {
                    server,
                    dir,
                    cluster,
                    tune,
                }
            }
        };
        Self { backend, target }
    }

    /// Stops the executor. Docker: first deletes every sandbox through the API and checks that
    /// no container of this test's root is left.
    pub async fn stop(self) {
        match self.target {
            Target::Local { server, dir, .. } => {
                server.stop().await;
                drop(dir);
            }
            Target::Docker(t) => t.finish().await,
            Target::Kubernetes {
                server, cluster, ..
            } => {
                server.stop().await;
                let pods = crate::fake_k8s::POD_PATH.replace("{ns}", K8S_NAMESPACE);
                for name in cluster.names(&pods) {
                    eprintln!("note: sandbox pod {name} left by the test");
                }
                drop(cluster);
            }
        }
    }

    /// A second executor on the same data directory and configuration, beside this one (it
    /// re-adopts the sandboxes). Hand over to it with [`Executor::hand_over`].
    pub async fn second(&self) -> Server {
        match &self.target {
            Target::Local { dir, tune, .. } => Server::start_at(dir.path(), *tune).await,
            Target::Docker(t) => t.second_executor().await,
            Target::Kubernetes {
                dir, cluster, tune, ..
            } => kubernetes_server(dir.path(), cluster, *tune).await,
        }
    }

    /// Makes `next` this test's executor and shuts the current one down gracefully (its running
    /// processes are killed; its sandboxes stay for `next`).
    pub async fn hand_over(&mut self, next: Server) {
        let current = match &mut self.target {
            Target::Local { server, .. } => server,
            Target::Docker(t) => &mut t.server,
            Target::Kubernetes { server, .. } => server,
        };
        std::mem::replace(current, next).stop().await;
    }

    /// The workspace's folder on the host (for preparing files around the executor's back).
    pub fn workspace(&self, sb: &pb::Sandbox) -> PathBuf {
        match &self.target {
            Target::Local { .. } => PathBuf::from(&sb.workdir),
            Target::Docker(t) => t.root.join(&sb.id).join("workspace"),
            Target::Kubernetes { cluster, .. } => {
                let id = cognition_executor::ids::SandboxId::parse(&sb.id).expect("id");
                cluster
                    .workspace(&cognition_executor::backend::kubernetes::naming::object_name(&id))
            }
        }
    }

    /// The workspace's absolute path as processes see it: `Sandbox.workdir`, except on the fake
    /// Kubernetes cluster, whose "pods" are host processes in a host folder (a real pod mounts
    /// it at `/workspace`, which the file RPCs still use).
    pub fn process_workdir(&self, sb: &pb::Sandbox) -> String {
        match &self.target {
            Target::Kubernetes { .. } => self.workspace(sb).display().to_string(),
            _ => sb.workdir.clone(),
        }
    }

    /// `HOME` of processes in the sandbox: the workspace locally, `/home` (a tmpfs) in Docker.
    pub fn home(&self, sb: &pb::Sandbox) -> String {
        match self.backend {
            Backend::Local => sb.workdir.clone(),
            Backend::Docker | Backend::Kubernetes => "/home".to_owned(),
        }
    }

    /// `PATH` of processes in the sandbox: the executor's own locally (it runs in this test
    /// process), the image's standard one in Docker.
    pub fn path_var(&self) -> String {
        match self.backend {
            Backend::Local => std::env::var("PATH").expect("the test process has a PATH"),
            Backend::Docker | Backend::Kubernetes => DOCKER_PATH.to_owned(),
        }
    }

    /// Whether `pid` (as the executor reported it: a host pid locally, a container pid in
    /// Docker) is a live, non-zombie process, read from `/proc` inside the sandbox.
    pub async fn alive(&self, sandbox: &str, pid: u32) -> bool {
        let o = run(
            &self.client,
            argv(sandbox, "", &["cat", &format!("/proc/{pid}/stat")]),
        )
        .await;
        o.exited().exit_code == Some(0) && stat_alive(&o.stdout_str())
    }
}

impl Deref for Executor {
    type Target = Server;

    fn deref(&self) -> &Server {
        match &self.target {
            Target::Local { server, .. } => server,
            Target::Docker(t) => &t.server,
            Target::Kubernetes { server, .. } => server,
        }
    }
}

/// An executor on the Kubernetes backend in pod mode, over `cluster`.
pub async fn kubernetes_server(
    dir: &std::path::Path,
    cluster: &FakeCluster,
    tune: fn(&mut Config),
) -> Server {
    let client = cluster.client();
    let port = cluster.agent_port;
    Server::start_with_engine(
        dir,
        |c| {
            c.sandbox_backend = cognition_executor::BackendKind::Kubernetes;
            c.k8s_sandbox_mode = cognition_executor::config::K8sMode::Pod;
            c.k8s_sandbox_namespace = K8S_NAMESPACE.into();
            c.k8s_agent_port = port;
            c.k8s_ready_timeout_seconds = 20;
            tune(c);
        },
        move |config| {
            use cognition_executor::backend::kubernetes::{KubernetesBackend, Settings};
            let backend = KubernetesBackend::new(
                client,
                Settings::from_config(&config),
                config.protected_paths.clone(),
            );
            cognition_executor::Engine::with_backend(std::sync::Arc::new(backend), config)
        },
    )
    .await
}
