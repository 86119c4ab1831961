//! `cognition up` as a separate process on loopback (SQLite in a temporary directory,
//! optionally pointed at an OpenAI-compatible LLM), its resident memory, sessions on it, and
//! the file-descriptor limit the benchmark (and the stack, which inherits it) needs.

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use super::http::request;
use crate::procs::{Proc, free_addr, wait_listening};

/// The body of the sessions the benchmark creates.
pub const SESSION_BODY: &[u8] = br#"{"title":"bench","metadata":{"repo":"a/b"}}"#;

/// A running `cognition up`, killed (and its data removed) when dropped.
pub struct Up {
    pub addr: SocketAddr,
    pub proc: Proc,
    _dir: tempfile::TempDir,
}

impl Up {
    /// Starts `cognition up` and waits until the gateway accepts connections. With
    /// `llm_base_url`, the session service uses it as its OpenAI-compatible provider (model
    /// `fake`, no retries).
    pub async fn start(llm_base_url: Option<&str>) -> anyhow::Result<Up> {
        Up::start_with(llm_base_url, &[]).await
    }

    /// [`Up::start`] with more variables (`COGNITION_SANDBOX_BACKEND`, …) for the process.
    pub async fn start_with(
        llm_base_url: Option<&str>,
        extra_env: &[(&str, String)],
    ) -> anyhow::Result<Up> {
        let dir = tempfile::tempdir()?;
        let addr = free_addr()?;
        let mut env = vec![
            ("COGNITION_DATA_DIR", dir.path().display().to_string()),
            ("COGNITION_PORT", addr.port().to_string()),
        ];
        if let Some(url) = llm_base_url {
            env.extend([
                ("COGNITION_LLM_PROVIDER", "openai_compatible".to_owned()),
                ("COGNITION_LLM_MODEL", "fake".to_owned()),
                ("COGNITION_LLM_BASE_URL", url.to_owned()),
                ("COGNITION_LLM_MAX_RETRIES", "0".to_owned()),
            ]);
        }
        env.extend(extra_env.iter().cloned());
        let proc = Proc::spawn("cognition", &["up"], &env)?;
        wait_listening(addr, Duration::from_secs(30)).await?;
        Ok(Up {
            addr,
            proc,
            _dir: dir,
        })
    }

    /// The data directory (`COGNITION_DATA_DIR`) of this stack.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Stops the stack gracefully (SIGINT, as Ctrl-C: the executor removes its warm
    /// containers) and waits up to `timeout` for the process to exit.
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<()> {
        let status = self.proc.interrupt(timeout)?;
        anyhow::ensure!(status.success(), "`cognition up` exited with {status}");
        Ok(())
    }

    /// Resident memory of the process, KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.proc.child.id())
    }

    /// Creates a session; its id.
    pub async fn create_session(&self) -> anyhow::Result<String> {
        create_session(self.addr).await
    }
}

/// `VmRSS` of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

/// `POST /sessions` on the gateway at `addr`; the new session's id.
pub async fn create_session(addr: SocketAddr) -> anyhow::Result<String> {
    let created = request(addr, "POST", "/sessions", Some(SESSION_BODY)).await?;
    let v: serde_json::Value = serde_json::from_slice(&created)?;
    Ok(v["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no id in {v}"))?
        .to_owned())
}

/// Raises the soft limit on open files of this process (and so of the processes it starts) to
/// `want`, or to the hard limit when that is lower. Returns the new soft limit.
pub fn raise_fd_limit(want: u64) -> anyhow::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let target = want.min(hard);
    if soft < target {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
        return Ok(target);
    }
    Ok(soft)
}
