//! The service binaries as separate processes on loopback, killed when dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free loopback port (bound then released; the tiny race is acceptable in tests).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// A child process killed (SIGKILL) on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    /// Starts binary `name` of this workspace with `args` and `env` (and a clean COGNITION_*
    /// environment, `COGNITION_LOG_LEVEL=warn` unless `env` sets it); its output goes to the
    /// test's.
    pub fn spawn(name: &str, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Proc> {
        Self::start(name, args, env, Stdio::inherit(), Stdio::inherit())
    }

    /// As [`Proc::spawn`], with stdout and stderr both appended to the file `log` (for tests
    /// that read the service's log lines).
    pub fn spawn_logging_to(
        name: &str,
        args: &[&str],
        env: &[(&str, String)],
        log: &Path,
    ) -> anyhow::Result<Proc> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        Self::start(name, args, env, file.try_clone()?.into(), file.into())
    }

    fn start(
        name: &str,
        args: &[&str],
        env: &[(&str, String)],
        stdout: Stdio,
        stderr: Stdio,
    ) -> anyhow::Result<Proc> {
        let path = cognition_harness::bin(name)?;
        let mut cmd = Command::new(path);
        cmd.args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("COGNITION_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("COGNITION_LOG_LEVEL", "warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        Ok(Proc {
            name: name.to_owned(),
            child: cmd.spawn()?,
        })
    }

    /// Sends SIGINT and waits (up to `timeout`) for the exit status.
    pub fn interrupt(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{} did not stop within {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_listening(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    cognition_harness::wait_until(timeout, || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await
    .map_err(|e| anyhow::anyhow!("nothing listening on {addr}: {e}"))
}

/// The repository root (for `proto/`).
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}
