//! The test sandbox: a local-backend sandbox, a [`Launcher`] spawning through the backend (with
//! BusyBox alone on `PATH` for the BusyBox flavour), the `RemoteFiles` under test and the
//! backend's own `LocalFiles` to compare with.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cognition_executor::Error;
use cognition_executor::backend::SandboxBackend;
use cognition_executor::backend::local::LocalBackend;
use cognition_executor::files::SandboxFiles;
use cognition_executor::files::remote::{Launcher, RemoteFiles};
use cognition_executor::ids::SandboxId;
use cognition_executor::paths::Protected;
use cognition_executor::process::{ProcessSpec, SpawnError, SpawnedProcess};
use cognition_executor::sandbox::SandboxSpec;

/// Runs each named case (an `async fn(Env)`) once per flavour: `gnu::case` and `busybox::case`.
macro_rules! on_both_toolsets {
    ($($case:ident),* $(,)?) => {
        mod gnu {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(env) = $crate::harness::Env::start($crate::harness::Flavor::Gnu).await {
                        super::$case(env).await;
                    }
                }
            )*
        }
        mod busybox {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(env) = $crate::harness::Env::start($crate::harness::Flavor::BusyBox).await {
                        super::$case(env).await;
                    }
                }
            )*
        }
    };
}
pub(crate) use on_both_toolsets;

pub const PROTECTED: &str = ".cognition/";

/// The tools the scripts run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The host's `sh` and GNU coreutils, findutils and tar.
    Gnu,
    /// BusyBox applets only.
    BusyBox,
}

/// Spawns through the local backend, with `PATH` replaced when set.
pub struct Spawner {
    pub backend: Arc<LocalBackend>,
    pub id: SandboxId,
    pub path: Option<String>,
}

#[async_trait]
impl Launcher for Spawner {
    async fn spawn(&self, spec: &ProcessSpec) -> Result<SpawnedProcess, SpawnError> {
        let mut spec = spec.clone();
        if let Some(path) = &self.path {
            spec.env.insert("PATH".into(), path.clone());
        }
        self.backend.spawn(&self.id, &spec).await
    }
}

/// One sandbox with both implementations over its workspace.
pub struct Env {
    pub flavor: Flavor,
    pub backend: Arc<LocalBackend>,
    pub id: SandboxId,
    /// The workspace on the host (canonical), also the sandbox's `workdir`.
    pub ws: PathBuf,
    pub remote: RemoteFiles,
    pub local: Arc<dyn SandboxFiles>,
    /// `PATH` of the BusyBox flavour.
    pub path: Option<String>,
    /// Scratch space outside the workspace.
    pub outside: PathBuf,
    _dir: tempfile::TempDir,
}

/// A folder of BusyBox applet links, or `None` (with the reason) when BusyBox is missing.
fn busybox_bin(dir: &Path) -> Result<PathBuf, String> {
    let list = std::process::Command::new("busybox")
        .arg("--list")
        .output()
        .map_err(|e| format!("busybox is not installed ({e}); apt-get install busybox-static"))?;
    let bin = dir.join("busybox-bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let busybox = which("busybox").ok_or("busybox is not on PATH")?;
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        std::os::unix::fs::symlink(&busybox, bin.join(applet)).expect("applet link");
    }
    Ok(bin)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

impl Env {
    /// `None` when the flavour cannot run here (BusyBox missing and `CI` unset).
    pub async fn start(flavor: Flavor) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = match flavor {
            Flavor::Gnu => None,
            Flavor::BusyBox => match busybox_bin(dir.path()) {
                Ok(bin) => Some(bin.display().to_string()),
                Err(why) if std::env::var_os("CI").is_some() => {
                    panic!("BusyBox is required when CI is set: {why}")
                }
                Err(why) => {
                    eprintln!("skipping a BusyBox test: {why} (and CI is unset)");
                    return None;
                }
            },
        };
        let protected = vec![PROTECTED.to_owned()];
        let backend = Arc::new(
            LocalBackend::open(&dir.path().join("root"), Protected::new(&protected))
                .await
                .expect("local backend"),
        );
        let id = SandboxId::generate();
        let sandbox = backend
            .create(SandboxSpec {
                id: id.clone(),
                labels: BTreeMap::new(),
                template: String::new(),
                resources: Default::default(),
                ttl: Duration::from_secs(600),
            })
            .await
            .expect("create sandbox");
        let local = backend.files(&id).await.expect("local files");
        let launcher = Arc::new(Spawner {
            backend: backend.clone(),
            id: id.clone(),
            path: path.clone(),
        });
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).expect("outside dir");
        Some(Self {
            flavor,
            remote: RemoteFiles::new(launcher, protected),
            backend,
            id,
            ws: PathBuf::from(sandbox.workdir),
            local,
            path,
            outside,
            _dir: dir,
        })
    }

    /// Another `RemoteFiles` over the same sandbox, with `launcher`.
    pub fn remote_with(&self, launcher: Arc<dyn Launcher>) -> RemoteFiles {
        RemoteFiles::new(launcher, vec![PROTECTED.to_owned()])
    }

    /// A launcher like the one under test.
    pub fn spawner(&self) -> Spawner {
        Spawner {
            backend: self.backend.clone(),
            id: self.id.clone(),
            path: self.path.clone(),
        }
    }

    /// Writes a file on the host (parents created).
    pub fn put(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.ws.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    pub fn host(&self, rel: &str) -> PathBuf {
        self.ws.join(rel)
    }

    /// Names in a workspace folder, sorted.
    pub fn names(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.ws.join(rel))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Both implementations gave the same answer (errors compare by message).
#[track_caller]
pub fn same<T: PartialEq + Debug>(
    remote: Result<T, Error>,
    local: Result<T, Error>,
    what: &str,
) -> Option<T> {
    match (remote, local) {
        (Ok(r), Ok(l)) => {
            assert_eq!(r, l, "{what}: remote and local disagree");
            Some(r)
        }
        (Err(r), Err(l)) => {
            assert_eq!(r.to_string(), l.to_string(), "{what}: different errors");
            None
        }
        (r, l) => panic!("{what}: remote gave {r:?}, local gave {l:?}"),
    }
}

/// Waits until `cond` holds (at most 5 s).
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..100 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}
