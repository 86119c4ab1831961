//! Soak benchmark of issue #5: many live sandboxes on one executor and many concurrent execs in
//! one sandbox, "with no errors and no leaks". It prints figures and times nothing as pass or
//! fail, but any failed operation or anything left behind makes it exit non-zero.
//!
//! ```sh
//! cargo build --release -p cognition-executor --example sandbox_soak
//! target/release/examples/sandbox_soak [sandboxes=200] [concurrency=16] [execs=50]
//! COGNITION_SANDBOX_BACKEND=local target/release/examples/sandbox_soak
//! ```
//!
//! The executor runs in-process (`cognition_executor::run`, `Config::embedded` on a fresh
//! temporary folder, so a fresh sandbox root) and is reached over loopback gRPC through one
//! channel, as the session service reaches it. Backend: `COGNITION_SANDBOX_BACKEND=docker|local`
//! (default docker, image of `compose/sandbox/build.sh`; `COGNITION_SANDBOX_AGENT=false` uses
//! the Docker exec API instead of the in-sandbox agent).
//!
//! * **Phase 1**: creates the sandboxes, at most `concurrency` at a time; checks that
//!   `ListSandboxes` shows them all; then, all of them live, runs `echo hi` in each one (same
//!   bound) and checks the output. Prints latencies, the process RSS (the executor is this
//!   process) and container counts.
//! * **Phase 2**: `execs` concurrent execs in one sandbox (all others still live), each printing
//!   2000 numbered lines; every output is checked byte for byte, offsets included.
//! * **Phase 3**: deletes every sandbox (same bound), then checks that no container carries this
//!   root's label, no folder is left under the root, `ListSandboxes` is empty and no child
//!   process survives. The last line reads `errors=<n> leaks=<n>`.
//!
//! **Cleanup.** Whatever happens, every sandbox whose creation was requested is deleted: a
//! failing phase ends the phases early; Ctrl-C (or SIGTERM) stops starting new work and lets
//! in-flight calls finish (a second Ctrl-C abandons them). After the leak check, a safety net
//! force-removes whatever the deletes left (already counted as leaks).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bollard::Docker;
use cognition_executor::config::BackendKind;
use cognition_proto::executor::v1 as pb;
use cognition_proto::executor::v1::executor_service_client::ExecutorServiceClient;
use futures::StreamExt;
use pb::exec_response::Msg;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use figures::{ms, summary};

/// Lines printed by each exec of phase 2.
const LINES: usize = 2000;
/// Longest wait for one operation; a longer one is an error (not a figure).
const OP_TIMEOUT: Duration = Duration::from_secs(180);
/// How long calls cut by a second Ctrl-C get to finish in the engine before the deletes.
const ABANDON_SETTLE: Duration = Duration::from_secs(3);
/// How long child processes may take to be reaped after the deletes.
const CHILD_GRACE: Duration = Duration::from_secs(5);
const USAGE: &str = "usage: sandbox_soak [sandboxes (default 200)] [concurrency (default 16)] \
                     [execs (default 50)]; backend: COGNITION_SANDBOX_BACKEND=docker|local \
                     (default docker)";

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Options::from_env_and_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("sandbox_soak: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match soak(options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sandbox_soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// What to run, from the environment and the arguments.
struct Options {
    backend: BackendKind,
    use_agent: bool,
    sandboxes: usize,
    /// Bound on concurrent creates, `echo hi` execs and deletes.
    concurrency: usize,
    /// Concurrent execs in one sandbox (phase 2).
    execs: usize,
}

impl Options {
    fn from_env_and_args() -> anyhow::Result<Self> {
        let backend = match std::env::var("COGNITION_SANDBOX_BACKEND").as_deref() {
            Err(_) | Ok("") | Ok("docker") => BackendKind::Docker,
            Ok("local") => BackendKind::Local,
            Ok(other) => bail!("COGNITION_SANDBOX_BACKEND={other:?}: expected docker or local"),
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.iter().any(|a| a == "-h" || a == "--help") {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if args.len() > 3 {
            bail!("expected at most 3 arguments, got {}", args.len());
        }
        let number = |index: usize, name: &str, default: usize| match args.get(index) {
            None => Ok(default),
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => bail!("{name} must be a positive whole number, got {raw:?}"),
            },
        };
        Ok(Self {
            backend,
            use_agent: std::env::var("COGNITION_SANDBOX_AGENT").as_deref() != Ok("false"),
            sandboxes: number(0, "sandboxes", 200)?,
            concurrency: number(1, "concurrency", 16)?,
            execs: number(2, "execs", 50)?,
        })
    }
}

/// The whole run; `Ok(true)` when there was no error and no leak.
async fn soak(options: Options) -> anyhow::Result<bool> {
    let total = Instant::now();
    let dir = tempfile::tempdir().context("creating the data folder")?;
    let mut config = cognition_executor::Config::embedded(dir.path());
    config.sandbox_backend = options.backend;
    config.sandbox_agent = options.use_agent;
    // Phase 2 measures concurrency, not the per-sandbox cap.
    config.max_concurrent_execs = config.max_concurrent_execs.max(options.execs);
    let root = config.sandbox_root_path();
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let root = std::fs::canonicalize(&root).context("resolving the sandbox root")?;
    let docker = match options.backend {
        BackendKind::Docker => Some(
            cognition_executor::backend::docker::connect(None)
                .await
                .context("connecting to Docker")?,
        ),
        _ => None,
    };
    println!(
        "sandbox_soak: backend {} (agent: {}), {} sandboxes, concurrency {}, {} concurrent execs \
         in one sandbox, per-sandbox exec cap {}",
        options.backend.as_str(),
        options.use_agent && options.backend == BackendKind::Docker,
        options.sandboxes,
        options.concurrency,
        options.execs,
        config.max_concurrent_execs,
    );
    println!("sandbox root {}", root.display());
    if let Some(docker) = &docker {
        println!(
            "before: {} containers under the root, {} on the host",
            host::containers(docker, Some(&root)).await?.len(),
            host::containers(docker, None).await?.len()
        );
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let mut server = tokio::spawn(cognition_executor::run(config, listener, shutdown.clone()));
    let client = tokio::select! {
        client = connect(addr) => client?,
        ended = &mut server => bail!("the executor stopped while starting: {:?}", ended?),
    };
    println!("executor up: {}", host::memory());

    let stop = CancellationToken::new();
    let abandon = CancellationToken::new();
    watch_signals(stop.clone(), abandon.clone());
    let soak = Soak {
        client,
        options,
        run_id: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
        requested: Mutex::new(BTreeSet::new()),
        created: Mutex::new(BTreeSet::new()),
        errors: Errors::default(),
        stop: stop.clone(),
    };

    tokio::select! {
        result = soak.phases(docker.as_ref(), &root) => {
            match result {
                Err(_) if stop.is_cancelled() => {} // counted once below
                Err(e) => soak.errors.record(format!("phases ended early: {e:#}")),
                Ok(()) => {}
            }
        }
        _ = abandon.cancelled() => {
            // An abandoned create may still be finishing in the engine: let it land, so the
            // deletes (and the safety net) see its container.
            println!("phases abandoned; waiting {ABANDON_SETTLE:?} for cut calls to settle");
            tokio::time::sleep(ABANDON_SETTLE).await;
        }
    }
    if stop.is_cancelled() {
        soak.errors.record("interrupted (Ctrl-C / SIGTERM)");
    }

    // Phase 3, also the cleanup path: it runs whatever happened above.
    println!("\n== phase 3: delete everything");
    let started = Instant::now();
    let deletes = soak.delete_all().await;
    println!(
        "delete {} sandboxes: {} (wall {})",
        deletes.len(),
        summary(&deletes),
        ms(started.elapsed())
    );
    let leftovers = Leftovers::find(&soak, docker.as_ref(), &root).await;
    println!("after delete: {}", host::memory());
    leftovers.print();
    if let Some(docker) = &docker
        && let Ok(on_host) = host::containers(docker, None).await
    {
        println!("after: {} containers on the host", on_host.len());
    }
    safety_net(docker.as_ref(), &root).await;

    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(60), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => soak.errors.record(format!("executor ended with: {e}")),
        Ok(Err(e)) => soak.errors.record(format!("executor task: {e}")),
        Err(_) => soak.errors.record("executor did not stop within 60 s"),
    }

    let errors = soak.errors.count();
    let leaks = leftovers.count();
    println!(
        "\nsandbox_soak: errors={errors} leaks={leaks} (backend {}, {} sandboxes, total run time {:.1} s)",
        soak.options.backend.as_str(),
        soak.options.sandboxes,
        total.elapsed().as_secs_f64()
    );
    Ok(errors == 0 && leaks == 0)
}

/// Connects the client and waits until the executor answers.
async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<ExecutorServiceClient<Channel>> {
    let mut client = ExecutorServiceClient::connect(format!("http://{addr}"))
        .await
        .context("connecting to the executor")?;
    client
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .context("the executor does not answer")?;
    Ok(client)
}

/// First Ctrl-C / SIGTERM: `stop` (no new work); second: `abandon` (drop in-flight calls). The
/// cleanup runs in both cases.
fn watch_signals(stop: CancellationToken, abandon: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        for count in 1.. {
            let terminated = async {
                match term.as_mut() {
                    Some(term) => {
                        term.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                result = tokio::signal::ctrl_c() => if result.is_err() { return },
                _ = terminated => {}
            }
            match count {
                1 => {
                    eprintln!(
                        "\ninterrupted: no new work; in-flight calls finish, then everything \
                         created is deleted (again to stop waiting for in-flight calls)"
                    );
                    stop.cancel();
                }
                2 => {
                    eprintln!("\nabandoning in-flight calls; cleaning up");
                    abandon.cancel();
                }
                _ => eprintln!("\ncleaning up: deleting what this run created"),
            }
        }
    });
}

/// Error counter; the first messages are printed.
#[derive(Default)]
struct Errors {
    count: AtomicUsize,
}

impl Errors {
    const SHOWN: usize = 20;

    fn record(&self, what: impl Display) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= Self::SHOWN {
            eprintln!("error: {what}");
        } else if n == Self::SHOWN + 1 {
            eprintln!("(more errors: only counted)");
        }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A finished exec.
struct Finished {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exited: pb::ExecExited,
}

impl Finished {
    /// `None` when the exec printed exactly `expected`, nothing on stderr, and exited 0.
    fn problem(&self, expected: &[u8]) -> Option<String> {
        if self.exited.exit_code != Some(0) {
            return Some(format!("exited {:?}", self.exited));
        }
        if !self.stderr.is_empty() {
            return Some(format!(
                "stderr {:?}",
                String::from_utf8_lossy(&self.stderr)
            ));
        }
        if self.stdout != expected {
            return Some(format!(
                "stdout has {} bytes, expected {} ({})",
                self.stdout.len(),
                expected.len(),
                self.stdout
                    .iter()
                    .zip(expected)
                    .position(|(a, b)| a != b)
                    .map_or("a prefix of the expected output".into(), |at| format!(
                        "first difference at byte {at}"
                    ))
            ));
        }
        None
    }
}

/// The run's state: the client and what it created.
struct Soak {
    client: ExecutorServiceClient<Channel>,
    options: Options,
    run_id: String,
    /// Ids whose creation was requested and not yet deleted (what the cleanup deletes).
    requested: Mutex<BTreeSet<String>>,
    /// Ids whose creation succeeded.
    created: Mutex<BTreeSet<String>>,
    errors: Errors,
    stop: CancellationToken,
}

impl Soak {
    /// Phases 1 and 2.
    async fn phases(&self, docker: Option<&Docker>, root: &Path) -> anyhow::Result<()> {
        println!("\n== phase 1: {} live sandboxes", self.options.sandboxes);
        let started = Instant::now();
        let creates = self.create_all().await;
        let wall = started.elapsed();
        println!(
            "create: {} (wall {}, {:.1} sandboxes/s)",
            summary(&creates),
            ms(wall),
            creates.len() as f64 / wall.as_secs_f64()
        );
        let ids: Vec<String> = lock(&self.created).iter().cloned().collect();
        let listed = self
            .client
            .clone()
            .list_sandboxes(pb::ListSandboxesRequest {
                label_selector: HashMap::from([("soak".to_owned(), self.run_id.clone())]),
            })
            .await
            .context("listing the sandboxes")?
            .into_inner()
            .sandboxes;
        let ready = listed
            .iter()
            .filter(|s| s.state() == pb::SandboxState::Ready)
            .count();
        println!(
            "live: {} created, {} listed, {ready} ready",
            ids.len(),
            listed.len()
        );
        if ready != ids.len() || listed.len() != ids.len() {
            self.errors.record(format!(
                "{} sandboxes created but {} listed ({ready} ready)",
                ids.len(),
                listed.len()
            ));
        }
        println!("all live: {}", host::memory());
        if let Some(docker) = docker {
            println!(
                "all live: {} containers under the root, {} on the host; {}",
                host::containers(docker, Some(root)).await?.len(),
                host::containers(docker, None).await?.len(),
                host::mem_available()
            );
        }
        self.stopped()?;

        let started = Instant::now();
        let echoes = self.echo_all(&ids).await;
        println!(
            "echo hi in each live sandbox: {} (wall {})",
            summary(&echoes),
            ms(started.elapsed())
        );
        println!("after echo: {}", host::memory());
        self.stopped()?;

        let Some(target) = ids.first() else {
            bail!("no sandbox was created");
        };
        println!(
            "\n== phase 2: {} concurrent execs in {target}",
            self.options.execs
        );
        let errors_before = self.errors.count();
        let started = Instant::now();
        let (execs, bytes) = self.burst(target).await;
        let wall = started.elapsed();
        println!(
            "{} execs of {LINES} lines: wall {}, per exec {}, {} bytes checked, {} errors",
            self.options.execs,
            ms(wall),
            summary(&execs),
            bytes,
            self.errors.count() - errors_before
        );
        println!("after burst: {}", host::memory());
        Ok(())
    }

    fn stopped(&self) -> anyhow::Result<()> {
        if self.stop.is_cancelled() {
            bail!("stopped");
        }
        Ok(())
    }

    /// Creates the sandboxes (bounded); the latencies of the successful creates.
    async fn create_all(&self) -> Vec<Duration> {
        let ids = (0..self.options.sandboxes).map(|i| format!("soak-{}-{i:04}", self.run_id));
        futures::stream::iter(ids)
            .map(|id| self.create(id))
            .buffer_unordered(self.options.concurrency)
            .filter_map(|d| async move { d })
            .collect()
            .await
    }

    async fn create(&self, id: String) -> Option<Duration> {
        if self.stop.is_cancelled() {
            return None;
        }
        // Recorded before the call: a create cut short may still have made the sandbox.
        lock(&self.requested).insert(id.clone());
        let request = pb::CreateSandboxRequest {
            sandbox_id: id.clone(),
            labels: HashMap::from([("soak".to_owned(), self.run_id.clone())]),
            ..Default::default()
        };
        let started = Instant::now();
        let result =
            tokio::time::timeout(OP_TIMEOUT, self.client.clone().create_sandbox(request)).await;
        let elapsed = started.elapsed();
        match result {
            Ok(Ok(response)) => match response.into_inner().sandbox {
                Some(s) if s.id == id && s.state() == pb::SandboxState::Ready => {
                    lock(&self.created).insert(id);
                    Some(elapsed)
                }
                other => {
                    self.errors
                        .record(format!("create {id}: unexpected answer {other:?}"));
                    None
                }
            },
            Ok(Err(status)) => {
                self.errors.record(format!(
                    "create {id}: {:?}: {}",
                    status.code(),
                    status.message()
                ));
                None
            }
            Err(_) => {
                self.errors
                    .record(format!("create {id}: no answer within {OP_TIMEOUT:?}"));
                None
            }
        }
    }

    /// `echo hi` in every sandbox (bounded); the latencies of the good ones.
    async fn echo_all(&self, ids: &[String]) -> Vec<Duration> {
        futures::stream::iter(ids)
            .map(|id| async move {
                if self.stop.is_cancelled() {
                    return None;
                }
                let argv = pb::exec_start::Command::Argv(pb::Argv {
                    args: vec!["echo".into(), "hi".into()],
                });
                let started = Instant::now();
                let result = self.exec(id, format!("echo-{id}"), argv).await;
                let elapsed = started.elapsed();
                match result.map(|f| f.problem(b"hi\n")) {
                    Ok(None) => Some(elapsed),
                    Ok(Some(problem)) | Err(problem) => {
                        self.errors.record(format!("echo hi in {id}: {problem}"));
                        None
                    }
                }
            })
            .buffer_unordered(self.options.concurrency)
            .filter_map(|d| async move { d })
            .collect()
            .await
    }

    /// Phase 2: all execs at once in `sandbox`; the latencies of the good ones and the bytes
    /// they delivered.
    async fn burst(&self, sandbox: &str) -> (Vec<Duration>, usize) {
        let expected: Vec<u8> = (0..LINES)
            .map(|i| format!("line {i}\n"))
            .collect::<String>()
            .into_bytes();
        let script = format!("i=0; while [ $i -lt {LINES} ]; do echo line $i; i=$((i+1)); done");
        let runs = (0..self.options.execs).map(|k| {
            let command = pb::exec_start::Command::Shell(script.clone());
            let expected = &expected;
            async move {
                let started = Instant::now();
                let result = self.exec(sandbox, format!("burst-{k}"), command).await;
                let elapsed = started.elapsed();
                match result.map(|f| f.problem(expected)) {
                    Ok(None) => Some(elapsed),
                    Ok(Some(problem)) | Err(problem) => {
                        self.errors.record(format!("exec burst-{k}: {problem}"));
                        None
                    }
                }
            }
        });
        let good: Vec<Duration> = futures::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect();
        let bytes = good.len() * expected.len();
        (good, bytes)
    }

    /// Runs one exec (stdin unused) to its end; checks offsets and that nothing was dropped.
    async fn exec(
        &self,
        sandbox: &str,
        exec_id: String,
        command: pb::exec_start::Command,
    ) -> Result<Finished, String> {
        let request = pb::ExecRequest {
            msg: Some(pb::exec_request::Msg::Start(pb::ExecStart {
                sandbox_id: sandbox.to_owned(),
                exec_id,
                command: Some(command),
                ..Default::default()
            })),
        };
        let mut client = self.client.clone();
        let run = async {
            let mut stream = client
                .exec(tokio_stream::iter([request]))
                .await
                .map_err(|s| format!("Exec: {:?}: {}", s.code(), s.message()))?
                .into_inner();
            let (mut stdout, mut stderr, mut exited) = (Vec::new(), Vec::new(), None);
            while let Some(message) = stream
                .message()
                .await
                .map_err(|s| format!("Exec stream: {:?}: {}", s.code(), s.message()))?
            {
                match message.msg {
                    Some(Msg::Output(o)) => {
                        let buffer = match o.stream() {
                            pb::OutputStream::Stdout => &mut stdout,
                            pb::OutputStream::Stderr => &mut stderr,
                            other => return Err(format!("output on stream {other:?}")),
                        };
                        if o.offset != buffer.len() as u64 {
                            return Err(format!(
                                "{:?} chunk at offset {} after {} bytes",
                                o.stream(),
                                o.offset,
                                buffer.len()
                            ));
                        }
                        buffer.extend_from_slice(&o.data);
                    }
                    Some(Msg::Gap(gap)) => return Err(format!("output gap {gap:?}")),
                    Some(Msg::SpawnFailed(f)) => {
                        return Err(format!("spawn failed: {:?}: {}", f.reason(), f.message));
                    }
                    Some(Msg::Exited(e)) => exited = Some(e),
                    _ => {}
                }
            }
            let exited = exited.ok_or("the stream ended without an exit")?;
            Ok(Finished {
                stdout,
                stderr,
                exited,
            })
        };
        tokio::time::timeout(OP_TIMEOUT, run)
            .await
            .map_err(|_| format!("no exit within {OP_TIMEOUT:?}"))?
    }

    /// Phase 3 and the cleanup path: deletes every requested sandbox (bounded, never stopped);
    /// the latencies of the deletes of created sandboxes.
    async fn delete_all(&self) -> Vec<Duration> {
        let ids: Vec<String> = lock(&self.requested).iter().cloned().collect();
        futures::stream::iter(ids)
            .map(|id| self.delete(id))
            .buffer_unordered(self.options.concurrency)
            .filter_map(|d| async move { d })
            .collect()
            .await
    }

    async fn delete(&self, id: String) -> Option<Duration> {
        let was_created = lock(&self.created).contains(&id);
        let request = pb::DeleteSandboxRequest {
            sandbox_id: id.clone(),
        };
        let started = Instant::now();
        let result =
            tokio::time::timeout(OP_TIMEOUT, self.client.clone().delete_sandbox(request)).await;
        let elapsed = started.elapsed();
        match result {
            Ok(Ok(_)) => {
                lock(&self.requested).remove(&id);
                was_created.then_some(elapsed)
            }
            // A create that failed made nothing.
            Ok(Err(status)) if status.code() == tonic::Code::NotFound && !was_created => {
                lock(&self.requested).remove(&id);
                None
            }
            Ok(Err(status)) => {
                self.errors.record(format!(
                    "delete {id}: {:?}: {}",
                    status.code(),
                    status.message()
                ));
                None
            }
            Err(_) => {
                self.errors
                    .record(format!("delete {id}: no answer within {OP_TIMEOUT:?}"));
                None
            }
        }
    }
}

/// What the deletes left behind.
struct Leftovers {
    /// Containers labelled with this root (`None`: not the Docker backend).
    containers: Option<Vec<String>>,
    /// Entries under the sandbox root.
    folders: Vec<String>,
    /// Sandboxes the executor still lists.
    listed: Vec<String>,
    /// Live child processes of this process (the executor's processes on the local backend).
    children: Vec<String>,
    /// A check that could not run.
    failed_checks: Vec<String>,
}

impl Leftovers {
    async fn find(soak: &Soak, docker: Option<&Docker>, root: &Path) -> Self {
        let mut failed_checks = Vec::new();
        let containers =
            match docker {
                Some(docker) => Some(host::containers(docker, Some(root)).await.unwrap_or_else(
                    |e| {
                        failed_checks.push(format!("counting containers: {e:#}"));
                        Vec::new()
                    },
                )),
                None => None,
            };
        let folders = host::entries(root).unwrap_or_else(|e| {
            failed_checks.push(format!("reading {}: {e}", root.display()));
            Vec::new()
        });
        let listed = match soak
            .client
            .clone()
            .list_sandboxes(pb::ListSandboxesRequest::default())
            .await
        {
            Ok(response) => response
                .into_inner()
                .sandboxes
                .into_iter()
                .map(|s| s.id)
                .collect(),
            Err(status) => {
                failed_checks.push(format!("ListSandboxes: {status}"));
                Vec::new()
            }
        };
        // Killed processes may take a moment to be reaped.
        let deadline = Instant::now() + CHILD_GRACE;
        let children = loop {
            let children = host::children();
            if children.is_empty() || Instant::now() >= deadline {
                break children;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Self {
            containers,
            folders,
            listed,
            children,
            failed_checks,
        }
    }

    fn count(&self) -> usize {
        self.containers.as_ref().map_or(0, Vec::len)
            + self.folders.len()
            + self.listed.len()
            + self.children.len()
            + self.failed_checks.len()
    }

    fn print(&self) {
        println!(
            "leftovers: {} containers under the root, {} folders under the root, {} sandboxes \
             listed, {} child processes{}",
            self.containers
                .as_ref()
                .map_or("n/a".to_owned(), |c| c.len().to_string()),
            self.folders.len(),
            self.listed.len(),
            self.children.len(),
            if self.failed_checks.is_empty() {
                String::new()
            } else {
                format!(", {} checks failed", self.failed_checks.len())
            }
        );
        let none = Vec::new();
        let all = [
            ("container", self.containers.as_ref().unwrap_or(&none)),
            ("folder", &self.folders),
            ("listed", &self.listed),
            ("child", &self.children),
            ("check failed", &self.failed_checks),
        ];
        for (kind, items) in all {
            for item in items.iter().take(10) {
                println!("  leak: {kind} {item}");
            }
        }
    }
}

/// Force-removes what the executor's deletes left under `root` (after they were counted), so a
/// failed run does not leave containers behind.
async fn safety_net(docker: Option<&Docker>, root: &Path) {
    if let Some(docker) = docker {
        let names = host::containers(docker, Some(root))
            .await
            .unwrap_or_default();
        for name in &names {
            let options = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                .force(true)
                .v(true)
                .build();
            match docker.remove_container(name, Some(options)).await {
                Ok(()) => println!("safety net: removed container {name}"),
                Err(e) => eprintln!("safety net: removing container {name}: {e}"),
            }
        }
    }
    for entry in host::entries(root).unwrap_or_default() {
        let path: PathBuf = root.join(&entry);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => println!("safety net: removed {}", path.display()),
            Err(e) => eprintln!("safety net: removing {}: {e}", path.display()),
        }
    }
}

/// Latency figures.
mod figures {
    use std::time::Duration;

    /// `n=… p50 … p90 … p99 … max …` (nearest rank).
    pub fn summary(samples: &[Duration]) -> String {
        if samples.is_empty() {
            return "n=0".into();
        }
        let mut sorted = samples.to_vec();
        sorted.sort();
        let rank = |p: f64| {
            let index = (sorted.len() as f64 * p).ceil() as usize;
            sorted[index.saturating_sub(1).min(sorted.len() - 1)]
        };
        format!(
            "n={} p50 {} p90 {} p99 {} max {}",
            sorted.len(),
            ms(rank(0.50)),
            ms(rank(0.90)),
            ms(rank(0.99)),
            ms(sorted[sorted.len() - 1])
        )
    }

    pub fn ms(d: Duration) -> String {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

/// Readings of this process and the host: memory, containers, folders, children.
mod host {
    use std::collections::HashMap;
    use std::path::Path;

    use bollard::Docker;
    use bollard::query_parameters::ListContainersOptionsBuilder;

    /// The executor's root label (see `backend/docker/mod.rs`).
    const ROOT_LABEL: &str = "executor.cognition.io/root";

    /// Names of the containers labelled with `root`, or of every container on the host.
    pub async fn containers(docker: &Docker, root: Option<&Path>) -> anyhow::Result<Vec<String>> {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        if let Some(root) = root {
            filters.insert(
                "label".into(),
                vec![format!("{ROOT_LABEL}={}", root.display())],
            );
        }
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        Ok(docker
            .list_containers(Some(options))
            .await?
            .into_iter()
            .map(|c| {
                c.names
                    .and_then(|n| n.into_iter().next())
                    .or(c.id)
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned()
            })
            .collect())
    }

    /// Names in a folder (hidden ones included).
    pub fn entries(dir: &Path) -> std::io::Result<Vec<String>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    /// A `kB` field of `/proc/self/status`, in MiB.
    fn status_mib(field: &str) -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    /// RSS, peak RSS, threads and open descriptors of this process (the executor's).
    pub fn memory() -> String {
        let threads = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Threads:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            })
            .unwrap_or_else(|| "?".into());
        let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
        format!(
            "executor RSS {:.1} MiB (peak {:.1} MiB), {threads} threads, {fds} fds",
            status_mib("VmRSS:").unwrap_or(f64::NAN),
            status_mib("VmHWM:").unwrap_or(f64::NAN),
        )
    }

    /// The host's available memory.
    pub fn mem_available() -> String {
        let mib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        });
        match mib {
            Some(kb) => format!("host MemAvailable {:.0} MiB", kb / 1024.0),
            None => "host MemAvailable failed_checks".into(),
        }
    }

    /// Child processes of this process, zombies included (`pid command`).
    pub fn children() -> Vec<String> {
        let me = std::process::id().to_string();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| {
                let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                let (comm, rest) = stat.rsplit_once(')')?;
                let mut fields = rest.split_whitespace();
                let _state = fields.next()?;
                (fields.next()? == me).then(|| {
                    let name = comm.split_once('(').map_or("?", |(_, n)| n);
                    format!("{pid} {name}")
                })
            })
            .collect()
    }
}
