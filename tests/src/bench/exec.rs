//! The `Exec` budgets against the `cognition-executor` binary as its own process on loopback,
//! on the local or the Docker backend: sandbox creation, the `echo hi` round trip and one
//! exec's stdout throughput.
//!
//! The method is the one of `services/executor/examples/exec_bench.rs` (which measures the
//! same in-process, for the executor's developers): `echo hi` as argv, timed from sending the
//! start to the exit message with the output checked, after 50 unmeasured runs; throughput is a
//! `dd if=/dev/zero bs=65536` producer whose whole output is delivered (the output cap raised
//! above its size), bytes received over the time from sending the start to the exit message;
//! creation is `CreateSandbox` until it answers (the sandbox accepts execs then), each sandbox
//! deleted before the next.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cognition_proto::executor::v1 as pb;
use pb::executor_service_client::ExecutorServiceClient;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

use super::{Samples, ms};
use crate::procs::{Proc, free_addr, wait_listening};

/// Unmeasured `echo hi` runs before the measured ones.
pub const ECHO_WARMUP: usize = 50;

/// Variables of the bench's own environment handed on to the executors it starts (the test
/// processes get a clean `COGNITION_*` environment otherwise).
pub const FORWARDED_VARS: &[&str] = &["COGNITION_SANDBOX_IMAGE", "COGNITION_DOCKER_HOST"];

/// Which sandbox backend an executor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Local,
    /// Docker without a warm pool.
    Docker,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Docker => "Docker",
        }
    }

    /// The executor variables selecting this backend (plus the forwarded ones for Docker).
    pub fn env(self) -> Vec<(&'static str, String)> {
        match self {
            Backend::Local => vec![("COGNITION_SANDBOX_BACKEND", "local".to_owned())],
            Backend::Docker => {
                let mut env = vec![
                    ("COGNITION_SANDBOX_BACKEND", "docker".to_owned()),
                    ("COGNITION_SANDBOX_WARM_POOL", "0".to_owned()),
                ];
                env.extend(forwarded());
                env
            }
        }
    }
}

/// [`FORWARDED_VARS`] that are set here.
pub fn forwarded() -> Vec<(&'static str, String)> {
    FORWARDED_VARS
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v)))
        .collect()
}

/// A running `cognition-executor` with a client; killed (data removed) when dropped.
pub struct Executor {
    pub addr: SocketAddr,
    pub client: ExecutorServiceClient<Channel>,
    proc: Proc,
    dir: tempfile::TempDir,
}

impl Executor {
    /// Starts the executor on `backend` and connects to it.
    pub async fn start(backend: Backend) -> anyhow::Result<Executor> {
        let dir = tempfile::tempdir()?;
        let addr = free_addr()?;
        let mut env = vec![
            ("COGNITION_EXECUTOR_ADDR", addr.to_string()),
            ("COGNITION_DATA_DIR", dir.path().display().to_string()),
        ];
        env.extend(backend.env());
        let proc = Proc::spawn("cognition-executor", &[], &env)?;
        wait_listening(addr, Duration::from_secs(30)).await?;
        let client = ExecutorServiceClient::connect(format!("http://{addr}")).await?;
        Ok(Executor {
            addr,
            client,
            proc,
            dir,
        })
    }

    /// Where its sandboxes live (the default `<data dir>/sandboxes`).
    pub fn sandbox_root(&self) -> PathBuf {
        self.dir.path().join("sandboxes")
    }

    /// A sandbox with the default template and resources; its id.
    pub async fn create_sandbox(&mut self) -> anyhow::Result<String> {
        let sandbox = self
            .client
            .create_sandbox(pb::CreateSandboxRequest::default())
            .await
            .map_err(|s| anyhow::anyhow!("CreateSandbox: {}: {}", s.code(), s.message()))?
            .into_inner()
            .sandbox
            .ok_or_else(|| anyhow::anyhow!("CreateSandbox answered without a sandbox"))?;
        Ok(sandbox.id)
    }

    pub async fn delete_sandbox(&mut self, sandbox_id: &str) -> anyhow::Result<()> {
        self.client
            .delete_sandbox(pb::DeleteSandboxRequest {
                sandbox_id: sandbox_id.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Stops the executor gracefully (SIGINT) and waits up to `timeout`.
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<()> {
        let status = self.proc.interrupt(timeout)?;
        anyhow::ensure!(status.success(), "cognition-executor exited with {status}");
        Ok(())
    }
}

/// `n` sandboxes created one after the other (each deleted, untimed, before the next): the
/// time `CreateSandbox` takes.
pub async fn create_latency(executor: &mut Executor, n: usize) -> anyhow::Result<Samples> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let id = executor.create_sandbox().await?;
        samples.push(ms(t.elapsed()));
        executor.delete_sandbox(&id).await?;
    }
    Ok(Samples::new(samples))
}

/// `echo hi` through `Exec` in `sandbox_id`, [`ECHO_WARMUP`] + `n` times; the last `n` times.
pub async fn echo_latency(
    client: &mut ExecutorServiceClient<Channel>,
    sandbox_id: &str,
    n: usize,
) -> anyhow::Result<Samples> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..ECHO_WARMUP + n {
        let start = pb::ExecStart {
            sandbox_id: sandbox_id.to_owned(),
            exec_id: uuid::Uuid::new_v4().to_string(),
            command: Some(pb::exec_start::Command::Argv(pb::Argv {
                args: vec!["echo".into(), "hi".into()],
            })),
            ..Default::default()
        };
        let t = Instant::now();
        let r = crate::exec::run(client, start).await?;
        let elapsed = t.elapsed();
        anyhow::ensure!(
            r.stdout == b"hi\n" && r.exited.as_ref().and_then(|e| e.exit_code) == Some(0),
            "echo hi: stdout {:?}, exit {:?}, spawn failure {:?}",
            String::from_utf8_lossy(&r.stdout),
            r.exited,
            r.spawn_failed
        );
        if i >= ECHO_WARMUP {
            samples.push(ms(elapsed));
        }
    }
    Ok(Samples::new(samples))
}

/// What one throughput exec delivered.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Throughput {
    /// Decimal megabytes per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// `dd if=/dev/zero bs=65536 count=16·mib` in `sandbox_id`, every byte delivered to this
/// client (which only counts them).
pub async fn stdout_throughput(
    client: &mut ExecutorServiceClient<Channel>,
    sandbox_id: &str,
    mib: u64,
) -> anyhow::Result<Throughput> {
    let expected = mib * 1024 * 1024;
    // 64 KiB blocks: the producer must not be the bottleneck (busybox `head -c` in the sandbox
    // image manages ~220 MB/s on its own).
    let producer = format!("dd if=/dev/zero bs=65536 count={} 2>/dev/null", mib * 16);
    let start = pb::ExecStart {
        sandbox_id: sandbox_id.to_owned(),
        exec_id: uuid::Uuid::new_v4().to_string(),
        command: Some(pb::exec_start::Command::Shell(producer)),
        output: Some(pb::OutputPolicy {
            max_bytes_per_stream: expected + 1,
            head_bytes: 0,
        }),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let t = Instant::now();
    tx.send(pb::ExecRequest {
        msg: Some(pb::exec_request::Msg::Start(start)),
    })
    .await?;
    let mut stream = client
        .exec(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut bytes = 0u64;
    let mut exited = None;
    while let Some(msg) = stream.next().await {
        match msg?.msg {
            Some(pb::exec_response::Msg::Output(o)) => bytes += o.data.len() as u64,
            Some(pb::exec_response::Msg::Exited(e)) => {
                exited = Some(e);
                break;
            }
            Some(pb::exec_response::Msg::SpawnFailed(f)) => anyhow::bail!("dd: {f:?}"),
            _ => {}
        }
    }
    let elapsed = t.elapsed();
    drop(tx);
    let exited = exited.ok_or_else(|| anyhow::anyhow!("the exec stream ended without exit"))?;
    anyhow::ensure!(
        exited.exit_code == Some(0) && bytes == expected,
        "dd: exit {:?}, {bytes} of {expected} bytes delivered",
        exited.exit_code
    );
    Ok(Throughput { bytes, elapsed })
}
