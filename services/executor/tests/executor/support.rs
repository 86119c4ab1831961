//! Test support: a real executor on 127.0.0.1:0 with a tempdir sandbox root, a client, and
//! helpers to drive Exec streams (shared by the `executor` and `docker` test binaries).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cognition_executor::Config;
use cognition_proto::executor::v1 as pb;
use cognition_proto::executor::v1::executor_service_client::ExecutorServiceClient;
use pb::exec_request::Msg as Req;
use pb::exec_response::Msg as Resp;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub type Client = ExecutorServiceClient<Channel>;

/// A running executor.
pub struct Server {
    pub client: Client,
    pub addr: SocketAddr,
    pub root: PathBuf,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), cognition_executor::Error>>>,
    _tmp: Option<tempfile::TempDir>,
}

/// The configuration tests start from: fast grace periods, no keepalive noise.
pub fn test_config(root: &Path) -> Config {
    let mut config = Config::embedded(root);
    config.sandbox_root = Some(root.join("sandboxes"));
    config.disconnect_grace_ms = 300;
    config.drain_ms = 500;
    config.keepalive_ms = 60_000;
    config.reaper_interval_ms = 60_000;
    config
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut server = Self::start_at(tmp.path(), tune).await;
        server._tmp = Some(tmp);
        server
    }

    /// Starts on an existing data directory (for restart tests).
    pub async fn start_at(dir: &Path, tune: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config(dir);
        tune(&mut config);
        let root = config.sandbox_root_path();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let shutdown = CancellationToken::new();
        let addr = listener.local_addr().expect("addr");
        let handle = tokio::spawn(cognition_executor::run(config, listener, shutdown.clone()));
        Self::connect(addr, root, shutdown, handle).await
    }

    /// A client for the executor `handle` serves on `addr`.
    async fn connect(
        addr: SocketAddr,
        root: PathBuf,
        shutdown: CancellationToken,
        handle: JoinHandle<Result<(), cognition_executor::Error>>,
    ) -> Self {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let client = ExecutorServiceClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        Self {
            client,
            addr,
            root,
            shutdown,
            handle: Some(handle),
            _tmp: None,
        }
    }

    /// Starts on an engine made by `engine` from the test configuration (a backend the
    /// configuration alone cannot build, e.g. Kubernetes over a fake API).
    pub async fn start_with_engine(
        dir: &Path,
        tune: impl FnOnce(&mut Config),
        engine: impl FnOnce(Config) -> std::sync::Arc<cognition_executor::Engine>,
    ) -> Self {
        let mut config = test_config(dir);
        tune(&mut config);
        let root = config.sandbox_root_path();
        let engine = engine(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(cognition_executor::serve(
            engine,
            listener,
            shutdown.clone(),
        ));
        Self::connect(addr, root, shutdown, handle).await
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.expect("join").expect("run returned an error");
        }
    }

    pub async fn sandbox(&self) -> pb::Sandbox {
        self.sandbox_with(pb::CreateSandboxRequest::default()).await
    }

    pub async fn sandbox_with(&self, req: pb::CreateSandboxRequest) -> pb::Sandbox {
        self.client
            .clone()
            .create_sandbox(req)
            .await
            .expect("create sandbox")
            .into_inner()
            .sandbox
            .expect("sandbox")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn shell(sandbox: &str, exec_id: &str, script: &str) -> pb::ExecStart {
    pb::ExecStart {
        sandbox_id: sandbox.into(),
        exec_id: exec_id.into(),
        command: Some(pb::exec_start::Command::Shell(script.into())),
        ..Default::default()
    }
}

pub fn argv(sandbox: &str, exec_id: &str, args: &[&str]) -> pb::ExecStart {
    pb::ExecStart {
        sandbox_id: sandbox.into(),
        exec_id: exec_id.into(),
        command: Some(pb::exec_start::Command::Argv(pb::Argv {
            args: args.iter().map(|s| s.to_string()).collect(),
        })),
        ..Default::default()
    }
}

pub fn req(msg: Req) -> pb::ExecRequest {
    pb::ExecRequest { msg: Some(msg) }
}

/// An open Exec stream.
pub struct ExecStream {
    pub tx: mpsc::Sender<pb::ExecRequest>,
    pub rx: tonic::Streaming<pb::ExecResponse>,
}

impl ExecStream {
    pub async fn open(client: &Client, first: Req) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::channel(64);
        tx.send(req(first)).await.expect("send first message");
        let rx = client
            .clone()
            .exec(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self { tx, rx })
    }

    pub async fn start(client: &Client, start: pb::ExecStart) -> Self {
        Self::open(client, Req::Start(start)).await.expect("exec")
    }

    pub async fn send(&self, msg: Req) {
        self.tx.send(req(msg)).await.expect("send");
    }

    /// The next message, failing the test after 20 s.
    pub async fn next(&mut self) -> Option<Resp> {
        let item = tokio::time::timeout(Duration::from_secs(20), self.rx.message())
            .await
            .expect("timed out waiting for an Exec message")
            .expect("stream error");
        item.map(|r| r.msg.expect("empty response"))
    }

    /// Reads until the stream ends.
    pub async fn collect(self) -> Outcome {
        self.collect_from([0, 0, 0]).await
    }

    /// The error status the stream ends with (messages before it are skipped), failing the test
    /// when it ends cleanly or after 20 s.
    pub async fn error_status(mut self) -> tonic::Status {
        loop {
            match tokio::time::timeout(Duration::from_secs(20), self.rx.message())
                .await
                .expect("timed out waiting for the stream to fail")
            {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without an error status"),
                Err(status) => return status,
            }
        }
    }

    /// Reads until the stream ends, for a stream attached after `offsets` bytes of
    /// (stdout, stderr, pty).
    pub async fn collect_from(mut self, offsets: [u64; 3]) -> Outcome {
        let mut out = Outcome {
            base: offsets,
            ..Default::default()
        };
        while let Some(msg) = self.next().await {
            out.push(msg);
        }
        out
    }
}

/// Everything one stream received.
#[derive(Debug, Default)]
pub struct Outcome {
    pub started: Option<pb::ExecStarted>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Output of the `pty` stream (an exec started with a pty size).
    pub pty: Vec<u8>,
    pub outputs: Vec<pb::ExecOutput>,
    pub gaps: Vec<pb::OutputGap>,
    pub idles: usize,
    pub keepalives: usize,
    pub exited: Option<pb::ExecExited>,
    pub spawn_failed: Option<pb::SpawnFailed>,
    pub messages: Vec<Resp>,
    /// Offsets (stdout, stderr, pty) the stream started after.
    pub base: [u64; 3],
}

impl Outcome {
    pub fn push(&mut self, msg: Resp) {
        assert!(
            self.exited.is_none() && self.spawn_failed.is_none(),
            "message after the terminal message: {msg:?}"
        );
        match &msg {
            Resp::Started(s) => {
                assert!(self.started.is_none(), "two started messages");
                self.started = Some(s.clone());
            }
            Resp::Output(o) => {
                let gap = self.gap_bytes(o.stream);
                let (name, base, bytes) = match pb::OutputStream::try_from(o.stream) {
                    Ok(pb::OutputStream::Stdout) => ("stdout", self.base[0], &mut self.stdout),
                    Ok(pb::OutputStream::Stderr) => ("stderr", self.base[1], &mut self.stderr),
                    Ok(pb::OutputStream::Pty) => ("pty", self.base[2], &mut self.pty),
                    other => panic!("output on an unknown stream {other:?}: {o:?}"),
                };
                assert_eq!(o.offset, base + bytes.len() as u64 + gap, "{name} offset");
                bytes.extend_from_slice(&o.data);
                self.outputs.push(o.clone());
            }
            Resp::Gap(g) => self.gaps.push(*g),
            Resp::Idle(_) => self.idles += 1,
            Resp::Keepalive(_) => self.keepalives += 1,
            Resp::SpawnFailed(f) => self.spawn_failed = Some(f.clone()),
            Resp::Exited(e) => self.exited = Some(*e),
        }
        self.messages.push(msg);
    }

    fn gap_bytes(&self, stream: i32) -> u64 {
        self.gaps
            .iter()
            .filter(|g| g.stream == stream)
            .map(|g| g.length)
            .sum()
    }

    pub fn exited(&self) -> pb::ExecExited {
        self.exited
            .unwrap_or_else(|| panic!("no exited message: {:?}", self.messages))
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    pub fn pty_str(&self) -> String {
        String::from_utf8_lossy(&self.pty).into_owned()
    }
}

/// Runs a start to completion.
pub async fn run(client: &Client, start: pb::ExecStart) -> Outcome {
    ExecStream::start(client, start).await.collect().await
}

/// Polls `cond` until it holds, failing after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a process of this host exists and is not a zombie (local backend pids only: a Docker
/// sandbox's pids live in the container's namespace, see `Executor::alive`).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| stat_alive(&stat))
}

/// Whether a `/proc/<pid>/stat` line describes a process that is not a zombie.
pub fn stat_alive(stat: &str) -> bool {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_some_and(|state| state != 'Z')
}
