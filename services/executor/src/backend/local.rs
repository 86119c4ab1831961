//! The local backend: each sandbox is a folder, processes are host processes.
//!
//! Layout: `<sandbox_root>/<id>/sandbox.json` (the record: labels, expiry, … — what lets an
//! executor restart re-adopt its sandboxes) and `<sandbox_root>/<id>/workspace` (the processes'
//! working directory and `HOME`). Deleting renames the folder to `.deleting-…` first, so a crash
//! half-way leaves nothing that looks like a live sandbox; leftovers are removed at start.
//!
//! Processes get a minimal environment (`PATH`, `HOME`, `LANG`, then the client's variables;
//! nothing of the executor's own environment but `PATH` leaks in) and their own process group.
//! This backend isolates nothing: use Docker or Kubernetes for untrusted code.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;

use async_trait::async_trait;
use chrono::Utc;
use cognition_sandbox_agent::pty;
use nix::errno::Errno;
use nix::unistd::Pid;

use super::SandboxBackend;
use crate::error::Error;
use crate::files::SandboxFiles;
use crate::files::local::LocalFiles;
use crate::ids::SandboxId;
use crate::paths::{Jail, Protected};
use crate::process::{
    ProcessExit, ProcessSpec, Signal, Signaller, SpawnError, SpawnFailed, SpawnFailure,
    SpawnedProcess, validate,
};
use crate::sandbox::{Labels, Sandbox, SandboxSpec, SandboxState, expiry, matches_selector};

const RECORD_FILE: &str = "sandbox.json";
const WORKSPACE_DIR: &str = "workspace";
const DELETING_PREFIX: &str = ".deleting-";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Sandboxes as folders under one root.
pub struct LocalBackend {
    root: PathBuf,
    protected: Protected,
    path_var: String,
    sandboxes: RwLock<HashMap<SandboxId, Arc<LocalSandbox>>>,
    create_lock: tokio::sync::Mutex<()>,
}

struct LocalSandbox {
    record: Mutex<Sandbox>,
    dir: PathBuf,
    jail: Arc<Jail>,
    files: Arc<LocalFiles>,
    /// Process groups started here that have not been reaped yet.
    groups: Arc<Mutex<HashSet<i32>>>,
}

impl LocalSandbox {
    fn snapshot(&self) -> Sandbox {
        lock(&self.record).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LocalBackend {
    /// Opens (creating it if needed) the sandbox root and re-adopts the sandboxes found there.
    pub async fn open(root: &Path, protected: Protected) -> Result<Self, Error> {
        tokio::fs::create_dir_all(root)
            .await
            .map_err(|e| Error::io(format!("creating the sandbox root {}", root.display()), e))?;
        let root = tokio::fs::canonicalize(root)
            .await
            .map_err(|e| Error::io(format!("resolving the sandbox root {}", root.display()), e))?;
        let backend = Self {
            root,
            protected,
            path_var: std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_owned()),
            sandboxes: RwLock::new(HashMap::new()),
            create_lock: tokio::sync::Mutex::new(()),
        };
        backend.adopt().await?;
        Ok(backend)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    async fn adopt(&self) -> Result<(), Error> {
        let root = self.root.clone();
        let found = tokio::task::spawn_blocking(move || scan(&root))
            .await
            .map_err(|e| Error::Internal(format!("scanning sandboxes: {e}")))??;
        for (mut record, dir) in found {
            let workspace = dir.join(WORKSPACE_DIR);
            let jail = match workspace
                .canonicalize()
                .and_then(|canonical| Jail::new(&canonical, &canonical, self.protected.clone()))
            {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!(sandbox_id = %record.id, error = %e, "skipping sandbox without a workspace");
                    continue;
                }
            };
            record.workdir = jail.host_root().display().to_string();
            record.backend = "local".into();
            if record.state != SandboxState::Ready {
                // A crash during create: the folder is complete, so it is usable.
                record.state = SandboxState::Pending;
                let id = record.id.clone();
                if record.state.transition(&id, SandboxState::Ready).is_err() {
                    continue;
                }
            }
            tracing::info!(sandbox_id = %record.id, expires_at = %record.expires_at, "re-adopted sandbox");
            let sandbox = Arc::new(LocalSandbox::new(record, dir, jail));
            let id = sandbox.snapshot().id;
            self.sandboxes
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(id, sandbox);
        }
        Ok(())
    }

    fn find(&self, id: &SandboxId) -> Result<Arc<LocalSandbox>, Error> {
        self.sandboxes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or_else(|| Error::SandboxNotFound(id.clone()))
    }

    fn base_env(&self, workspace: &Path) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("PATH".to_owned(), self.path_var.clone()),
            ("HOME".to_owned(), workspace.display().to_string()),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ])
    }
}

impl LocalSandbox {
    fn new(record: Sandbox, dir: PathBuf, jail: Jail) -> Self {
        let jail = Arc::new(jail);
        Self {
            record: Mutex::new(record),
            dir,
            files: Arc::new(LocalFiles::new(jail.clone())),
            jail,
            groups: Arc::new(Mutex::new(HashSet::new())),
        }
    }
}

/// Reads every `<root>/<id>/sandbox.json`; removes leftovers of interrupted deletes.
fn scan(root: &Path) -> Result<Vec<(Sandbox, PathBuf)>, Error> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(root).map_err(|e| Error::io(format!("listing {}", root.display()), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        if name.starts_with(DELETING_PREFIX) {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "removing the rest of a deleted sandbox");
            }
            continue;
        }
        if !dir.is_dir() {
            continue;
        }
        let record_path = dir.join(RECORD_FILE);
        let record: Sandbox = match std::fs::read(&record_path).map(|b| serde_json::from_slice(&b))
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(file = %record_path.display(), error = %e, "ignoring an unreadable sandbox record");
                continue;
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "ignoring a folder without a sandbox record");
                continue;
            }
        };
        if record.id.as_str() != name {
            tracing::warn!(dir = %dir.display(), id = %record.id, "ignoring a sandbox record whose id does not match its folder");
            continue;
        }
        out.push((record, dir));
    }
    Ok(out)
}

async fn save(dir: &Path, record: &Sandbox) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| Error::Internal(format!("encoding a sandbox record: {e}")))?;
    let tmp = dir.join(format!(".{RECORD_FILE}.tmp"));
    tokio::fs::write(&tmp, json)
        .await
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    tokio::fs::rename(&tmp, dir.join(RECORD_FILE))
        .await
        .map_err(|e| Error::io(format!("writing the record of sandbox {}", record.id), e))
}

/// Best effort: SIGKILL to every process whose working directory is inside `dir` (catches
/// processes that left their process group with `setsid`).
fn kill_processes_under(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id() as i32;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cwd) = std::fs::read_link(entry.path().join("cwd"))
            && cwd.starts_with(dir)
        {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[async_trait]
impl SandboxBackend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn create(&self, spec: SandboxSpec) -> Result<Sandbox, Error> {
        let _guard = self.create_lock.lock().await;
        if let Ok(existing) = self.find(&spec.id) {
            let record = existing.snapshot();
            return match record.state {
                SandboxState::Terminating | SandboxState::Terminated => {
                    Err(Error::SandboxNotReady {
                        id: record.id,
                        state: record.state,
                    })
                }
                _ => Ok(record),
            };
        }
        let dir = self.root.join(spec.id.as_str());
        let workspace = dir.join(WORKSPACE_DIR);
        let now = Utc::now();
        let mut record = Sandbox {
            id: spec.id.clone(),
            state: SandboxState::Pending,
            labels: spec.labels,
            backend: self.name().into(),
            template: spec.template,
            resources: spec.resources,
            created_at: now,
            expires_at: expiry(now, spec.ttl),
            workdir: String::new(),
        };
        tracing::info!(sandbox_id = %record.id, state = %record.state, "creating sandbox");
        let provisioned: Result<Jail, Error> = async {
            tokio::fs::create_dir_all(&workspace)
                .await
                .map_err(|e| Error::io(format!("creating {}", workspace.display()), e))?;
            let canonical = tokio::fs::canonicalize(&workspace)
                .await
                .map_err(|e| Error::io(format!("resolving {}", workspace.display()), e))?;
            let jail = Jail::new(&canonical, &canonical, self.protected.clone())
                .map_err(|e| Error::io("resolving the workspace", e))?;
            record.workdir = jail.host_root().display().to_string();
            let mut ready = record.clone();
            ready.state = SandboxState::Ready;
            save(&dir, &ready).await?;
            Ok(jail)
        }
        .await;
        let jail = match provisioned {
            Ok(jail) => jail,
            Err(e) => {
                let _ = record.state.transition(&spec.id, SandboxState::Failed);
                let _ = tokio::fs::remove_dir_all(&dir).await;
                return Err(e);
            }
        };
        record
            .state
            .transition(&spec.id, SandboxState::Ready)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let sandbox = Arc::new(LocalSandbox::new(record.clone(), dir, jail));
        self.sandboxes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(spec.id, sandbox);
        Ok(record)
    }

    async fn get(&self, id: &SandboxId) -> Result<Sandbox, Error> {
        Ok(self.find(id)?.snapshot())
    }

    async fn list(&self, selector: &Labels) -> Result<Vec<Sandbox>, Error> {
        let mut out: Vec<Sandbox> = self
            .sandboxes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|s| s.snapshot())
            .filter(|s| matches_selector(&s.labels, selector))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn renew(&self, id: &SandboxId, ttl: Duration) -> Result<Sandbox, Error> {
        let sandbox = self.find(id)?;
        let record = {
            let mut record = lock(&sandbox.record);
            if !record.state.accepts_execs() {
                return Err(Error::SandboxNotReady {
                    id: id.clone(),
                    state: record.state,
                });
            }
            record.expires_at = expiry(Utc::now(), ttl);
            record.clone()
        };
        save(&sandbox.dir, &record).await?;
        Ok(record)
    }

    async fn delete(&self, id: &SandboxId) -> Result<(), Error> {
        let sandbox = self.find(id)?;
        {
            let mut record = lock(&sandbox.record);
            if record.state == SandboxState::Terminating {
                return Ok(()); // another delete is at work
            }
            record
                .state
                .transition(id, SandboxState::Terminating)
                .map_err(|e| Error::Internal(e.to_string()))?;
        }
        let groups: Vec<i32> = lock(&sandbox.groups).iter().copied().collect();
        for pgid in groups {
            let _ =
                nix::sys::signal::killpg(Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
        }
        let dir = sandbox.dir.clone();
        let grave = self.root.join(format!(
            "{DELETING_PREFIX}{id}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let removed = tokio::task::spawn_blocking(move || {
            kill_processes_under(&dir);
            std::fs::rename(&dir, &grave)?;
            std::fs::remove_dir_all(&grave)
        })
        .await
        .map_err(|e| Error::Internal(format!("deleting sandbox {id}: {e}")))?;
        if let Err(e) = removed {
            let _ = lock(&sandbox.record)
                .state
                .transition(id, SandboxState::Failed);
            return Err(Error::io(format!("removing the folder of sandbox {id}"), e));
        }
        lock(&sandbox.record)
            .state
            .transition(id, SandboxState::Terminated)
            .map_err(|e| Error::Internal(e.to_string()))?;
        self.sandboxes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        Ok(())
    }

    async fn spawn(
        &self,
        id: &SandboxId,
        spec: &ProcessSpec,
    ) -> Result<SpawnedProcess, SpawnError> {
        let sandbox = self.find(id)?;
        {
            let record = lock(&sandbox.record);
            if !record.state.accepts_execs() {
                return Err(Error::SandboxNotReady {
                    id: id.clone(),
                    state: record.state,
                }
                .into());
            }
        }
        validate(spec)?;
        let bad_cwd = |m: String| SpawnError::Failed(SpawnFailed::new(SpawnFailure::BadCwd, m));
        let cwd = sandbox
            .jail
            .resolve_read(&spec.cwd)
            .map_err(|e| bad_cwd(format!("bad cwd: {e}")))?;
        match std::fs::metadata(&cwd.host) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(bad_cwd(format!("cwd {} is not a directory", cwd.path))),
            Err(_) => return Err(bad_cwd(format!("cwd {} does not exist", cwd.path))),
        }
        let program = &spec.argv[0];
        let mut env = self.base_env(sandbox.jail.host_root());
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        // Resolving the program here (with the sandbox's PATH) lets std use posix_spawn instead
        // of fork + exec, which halves the cost of a spawn.
        let resolved = resolve_program(
            program,
            env.get("PATH").map_or("", String::as_str),
            &cwd.host,
        )?;
        let mut std_cmd = std::process::Command::new(&resolved);
        std_cmd
            .arg0(program)
            .args(&spec.argv[1..])
            .env_clear()
            .envs(&env)
            .current_dir(&cwd.host);
        let (mut child, pipes) = match spec.pty {
            None => spawn_on_pipes(std_cmd, spec.stdin_pipe, program)?,
            Some(size) => spawn_on_pty(std_cmd, size, program)?,
        };
        let Some(pid) = child.id() else {
            return Err(SpawnError::Failed(SpawnFailed::new(
                SpawnFailure::Other,
                "process exited before it started",
            )));
        };
        let pgid = pid as i32;
        lock(&sandbox.groups).insert(pgid);
        let signaller = Arc::new(LocalSignaller {
            pid: pgid,
            reaped: AtomicBool::new(false),
            pty_master: pipes.pty_master,
        });
        let groups = sandbox.groups.clone();
        let reaped = signaller.clone();
        let exit = Box::pin(async move {
            let status = child.wait().await;
            reaped.reaped.store(true, Ordering::Release);
            lock(&groups).remove(&pgid);
            status.map(ProcessExit::from)
        });
        Ok(SpawnedProcess {
            pid,
            stdin: pipes.stdin,
            stdout: pipes.stdout,
            stderr: pipes.stderr,
            exit,
            signaller,
        })
    }

    async fn files(&self, id: &SandboxId) -> Result<Arc<dyn SandboxFiles>, Error> {
        Ok(self.find(id)?.files.clone() as Arc<dyn SandboxFiles>)
    }
}

/// Finds `program` like `execvp` would: as a path when it contains `/`, else in `path_var`
/// (relative entries are relative to `cwd`). A non-executable match is skipped but remembered.
fn resolve_program(program: &str, path_var: &str, cwd: &Path) -> Result<PathBuf, SpawnFailed> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| match std::fs::metadata(p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Some(true),
        Ok(_) => Some(false),
        Err(_) => None,
    };
    if program.contains('/') {
        // Let the spawn itself report what is wrong with an explicit path.
        return Ok(cwd.join(program));
    }
    let mut denied = false;
    for dir in path_var.split(':') {
        let candidate = if dir.is_empty() {
            cwd.join(program)
        } else {
            cwd.join(dir).join(program)
        };
        match executable(&candidate) {
            Some(true) => return Ok(candidate),
            Some(false) => denied = true,
            None => {}
        }
    }
    Err(if denied {
        SpawnFailed::new(
            SpawnFailure::PermissionDenied,
            format!("{program}: permission denied (not executable)"),
        )
    } else {
        SpawnFailed::new(
            SpawnFailure::NotFound,
            format!("{program}: command not found"),
        )
    })
}

/// The parent's ends of a started process.
struct Pipes {
    stdin: Option<crate::process::Writer>,
    stdout: crate::process::Reader,
    stderr: crate::process::Reader,
    pty_master: Option<OwnedFd>,
}

/// Starts `cmd` in its own process group with piped output (and stdin when asked).
fn spawn_on_pipes(
    mut cmd: std::process::Command,
    stdin_pipe: bool,
    program: &str,
) -> Result<(tokio::process::Child, Pipes), SpawnError> {
    cmd.stdin(if stdin_pipe {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(false);
    let mut child = cmd
        .spawn()
        .map_err(|e| SpawnError::Failed(SpawnFailed::from_io(program, &e)))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(SpawnError::Failed(SpawnFailed::new(
            SpawnFailure::Other,
            "missing output pipes",
        )));
    };
    let stdin = child
        .stdin
        .take()
        .map(|s| Box::pin(s) as crate::process::Writer);
    Ok((
        child,
        Pipes {
            stdin,
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            pty_master: None,
        },
    ))
}

/// Starts `cmd` on a new PTY as its controlling terminal (a new session: pid = process group).
fn spawn_on_pty(
    mut cmd: std::process::Command,
    size: crate::process::PtySize,
    program: &str,
) -> Result<(tokio::process::Child, Pipes), SpawnError> {
    let other = |what: &str, e: io::Error| {
        SpawnError::Failed(SpawnFailed::new(
            SpawnFailure::Other,
            format!("{what}: {e}"),
        ))
    };
    let window = size.to_window().ok_or_else(|| {
        SpawnError::Failed(SpawnFailed::new(
            SpawnFailure::InvalidArgument,
            "pty size out of range",
        ))
    })?;
    let pair = pty::open(window).map_err(|e| {
        SpawnError::Failed(SpawnFailed::new(
            SpawnFailure::ResourceLimit,
            format!("opening a pty: {e}"),
        ))
    })?;
    pty::attach(&mut cmd, &pair.slave).map_err(|e| other("pty", e))?;
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(false);
    let child = cmd
        .spawn()
        .map_err(|e| SpawnError::Failed(SpawnFailed::from_io(program, &e)))?;
    // Every copy of the slave but the child's must close, or the master never sees the end.
    drop(cmd);
    drop(pair.slave);
    let input = pty::AsyncPty::new(&pair.master).map_err(|e| other("pty", e))?;
    let output = pty::AsyncPty::new(&pair.master).map_err(|e| other("pty", e))?;
    Ok((
        child,
        Pipes {
            stdin: Some(Box::pin(input)),
            stdout: Box::pin(output),
            stderr: Box::pin(tokio::io::empty()),
            pty_master: Some(pair.master),
        },
    ))
}

/// Signals a local process group (whose id is the leader's pid) and resizes its terminal.
struct LocalSignaller {
    pid: i32,
    reaped: AtomicBool,
    pty_master: Option<OwnedFd>,
}

impl Signaller for LocalSignaller {
    fn signal(&self, signal: Signal, leader_only: bool) -> io::Result<()> {
        let sig = signal.to_nix();
        let result = if leader_only {
            if self.reaped.load(Ordering::Acquire) {
                return Ok(()); // the pid may belong to someone else by now
            }
            nix::sys::signal::kill(Pid::from_raw(self.pid), sig)
        } else {
            nix::sys::signal::killpg(Pid::from_raw(self.pid), sig)
        };
        match result {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    fn resize(&self, size: crate::process::PtySize) -> io::Result<()> {
        let (Some(master), Some(window)) = (&self.pty_master, size.to_window()) else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the process has no pty",
            ));
        };
        pty::resize(master, window)
    }
}
