//! The parts of a run test, all real: the fake LLM server over HTTP (through the real
//! providers), an in-process executor (`cognition_executor::run`), the session service on
//! `127.0.0.1:0` over SQLite or PostgreSQL, and the generated gRPC client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cognition_fake_llm::FakeLlm;
use cognition_proto::session::v1 as pb;
use cognition_proto::session::v1::session_service_client::SessionServiceClient;
use cognition_session::llm::{ModelClient, ModelRouter, ProviderConfig, ProviderKind, RetryPolicy};
use cognition_session::store::{self, Store};
use cognition_session::{Config, EventLog, PersistenceBackend};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::support::{Blank, Guard};

/// Bound on waiting for one stream item or condition.
pub const STEP: Duration = Duration::from_secs(20);

pub type Client = SessionServiceClient<Channel>;

/// Short retry delays: tests should not wait half a second per retry.
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_millis(50),
    }
}

/// A router with one OpenAI-compatible provider pointing at `llm`.
pub fn model_for(llm: &FakeLlm) -> Arc<dyn ModelClient> {
    let provider = ProviderConfig::new("fake", ProviderKind::OpenAiCompatible, "fake-model")
        .with_base_url(llm.openai_base_url())
        .with_max_retries(2);
    Arc::new(
        ModelRouter::new(vec![provider])
            .expect("provider")
            .with_retry_policy(fast_retries()),
    )
}

/// A running executor on a temp dir.
pub struct Executor {
    pub url: String,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), cognition_executor::Error>>>,
    _dir: tempfile::TempDir,
}

impl Executor {
    pub async fn start() -> Executor {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = cognition_executor::Config::embedded(dir.path());
        config.sandbox_root = Some(dir.path().join("sandboxes"));
        config.disconnect_grace_ms = 200;
        config.drain_ms = 300;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(cognition_executor::run(config, listener, shutdown.clone()));
        Executor {
            url: format!("http://{addr}"),
            shutdown,
            task: Some(task),
            _dir: dir,
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A database for one test plus the settings every replica on it shares.
pub struct Env {
    pub config: Config,
    _guard: Guard,
}

impl Env {
    /// `None` when the backend is PostgreSQL and no server is configured (outside CI).
    pub async fn new(backend: PersistenceBackend, executor: Option<&Executor>) -> Option<Env> {
        let Blank { mut config, guard } = Blank::of(backend).await?;
        config.executor_url = executor.map(|e| e.url.clone());
        config.run_lease_ms = 1_500;
        config.run_heartbeat_ms = 250;
        config.run_sweep_ms = 250;
        config.callback_backoff_ms = 20;
        Some(Env {
            config,
            _guard: guard,
        })
    }

    /// A store of its own on the test database (to look behind the service's back).
    pub async fn store(&self) -> Arc<dyn Store> {
        store::open(&self.config).await.expect("open store")
    }
}

/// One session-service replica serving on 127.0.0.1:0 in the test's runtime.
pub struct Replica {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), cognition_session::Error>>>,
}

impl Replica {
    pub async fn start(config: &Config, model: Arc<dyn ModelClient>) -> Replica {
        let store = store::open(config).await.expect("open store");
        let events = EventLog::new(store.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let config = config.clone();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                let served =
                    cognition_session::serve_with_model(&config, events, model, listener, shutdown)
                        .await;
                store.close().await;
                served
            }
        });
        Replica {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    pub async fn client(&self) -> Client {
        connect(self.addr).await
    }

    /// Graceful shutdown; waits for the server to stop.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(STEP, task)
                .await
                .expect("replica stops")
                .expect("join")
                .expect("serve");
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A replica in a runtime of its own, which can be killed like a crashed process: its tasks
/// are dropped mid-flight and nothing is written on the way out.
pub struct Killable {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Killable {
    pub fn start(config: &Config, model: Arc<dyn ModelClient>) -> Killable {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let config = config.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let store = store::open(&config).await.expect("open store");
            let events = EventLog::new(store);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr"))
                .expect("send addr");
            let _ = cognition_session::serve_with_model(
                &config,
                events,
                model,
                listener,
                CancellationToken::new(),
            )
            .await;
        });
        let addr = rx.recv_timeout(STEP).expect("killable replica started");
        Killable {
            addr,
            runtime: Some(runtime),
        }
    }

    pub async fn client(&self) -> Client {
        connect(self.addr).await
    }

    /// Kills the replica: every task is dropped where it stands.
    pub fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

pub async fn connect(addr: SocketAddr) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    SessionServiceClient::new(channel)
}

pub async fn create_session(client: &mut Client, agent: Option<&str>) -> String {
    client
        .create_session(pb::CreateSessionRequest {
            agent_name: agent.map(str::to_owned),
            ..Default::default()
        })
        .await
        .expect("create session")
        .into_inner()
        .session
        .expect("session")
        .id
}

pub fn message(session_id: &str, content: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        session_id: session_id.to_owned(),
        content: content.to_owned(),
        ..Default::default()
    }
}

pub async fn send(
    client: &mut Client,
    request: pb::SendMessageRequest,
) -> tonic::Streaming<pb::SendMessageResponse> {
    client
        .send_message(request)
        .await
        .expect("send message")
        .into_inner()
}

/// Anything that streams events.
pub trait EventStream {
    fn next_event(&mut self) -> impl std::future::Future<Output = Option<pb::Event>> + Send;
}

impl EventStream for tonic::Streaming<pb::SendMessageResponse> {
    async fn next_event(&mut self) -> Option<pb::Event> {
        match tokio::time::timeout(STEP, self.message()).await {
            Ok(Ok(Some(m))) => m.event,
            Ok(Ok(None)) => None,
            Ok(Err(status)) => panic!("stream failed: {status:?}"),
            Err(_) => panic!("no event within {STEP:?}"),
        }
    }
}

impl EventStream for tonic::Streaming<pb::WatchEventsResponse> {
    async fn next_event(&mut self) -> Option<pb::Event> {
        match tokio::time::timeout(STEP, self.message()).await {
            Ok(Ok(Some(m))) => m.event,
            Ok(Ok(None)) => None,
            Ok(Err(status)) => panic!("stream failed: {status:?}"),
            Err(_) => panic!("no event within {STEP:?}"),
        }
    }
}

/// Every event until the stream ends (which must be right after `done`).
pub async fn collect(stream: &mut impl EventStream) -> Vec<pb::Event> {
    let mut events = Vec::new();
    while let Some(event) = stream.next_event().await {
        events.push(event);
    }
    assert!(
        events.last().is_some_and(is_done),
        "stream must end with done: {events:#?}"
    );
    events
}

/// Events until (and including) the first one matching `stop`.
pub async fn until(
    stream: &mut impl EventStream,
    stop: impl Fn(&pb::Event) -> bool,
) -> Vec<pb::Event> {
    let mut events = Vec::new();
    loop {
        let event = stream
            .next_event()
            .await
            .unwrap_or_else(|| panic!("stream ended early: {events:#?}"));
        let matched = stop(&event);
        events.push(event);
        if matched {
            return events;
        }
    }
}

pub async fn watch(
    client: &mut Client,
    session_id: &str,
    after_seq: u64,
    until_done: bool,
) -> tonic::Streaming<pb::WatchEventsResponse> {
    client
        .watch_events(pb::WatchEventsRequest {
            session_id: session_id.to_owned(),
            after_seq,
            until_done,
        })
        .await
        .expect("watch")
        .into_inner()
}

pub use pb::event::Kind;

pub fn is_done(e: &pb::Event) -> bool {
    matches!(e.kind, Some(Kind::Done(_)))
}

pub fn is_token(e: &pb::Event) -> bool {
    matches!(e.kind, Some(Kind::Token(_)))
}

pub fn tokens(events: &[pb::Event]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Token(t)) => Some(t.content.as_str()),
            _ => None,
        })
        .collect()
}

pub fn done_message(events: &[pb::Event]) -> pb::Message {
    events
        .iter()
        .find_map(|e| match &e.kind {
            Some(Kind::Done(d)) => d.assistant_data.clone(),
            _ => None,
        })
        .expect("a done event with assistant_data")
}

pub fn errors(events: &[pb::Event]) -> Vec<pb::ErrorEvent> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Error(err)) => Some(err.clone()),
            _ => None,
        })
        .collect()
}

pub fn statuses(events: &[pb::Event]) -> Vec<pb::RunStatus> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Status(s)) => pb::RunStatus::try_from(s.status).ok(),
            _ => None,
        })
        .collect()
}

pub fn tool_results(events: &[pb::Event]) -> Vec<pb::ToolResultEvent> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::ToolResult(r)) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// The event names in order (`token`, `tool_call`, …).
pub fn names(events: &[pb::Event]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match &e.kind {
            Some(Kind::Token(_)) => "token",
            Some(Kind::ToolCall(_)) => "tool_call",
            Some(Kind::ToolResult(_)) => "tool_result",
            Some(Kind::Planning(_)) => "planning",
            Some(Kind::StepComplete(_)) => "step_complete",
            Some(Kind::Delegation(_)) => "delegation",
            Some(Kind::Status(_)) => "status",
            Some(Kind::Interrupt(_)) => "interrupt",
            Some(Kind::Usage(_)) => "usage",
            Some(Kind::Error(_)) => "error",
            Some(Kind::Done(_)) => "done",
            None => "none",
        })
        .collect()
}

pub async fn messages(client: &mut Client, session_id: &str) -> Vec<pb::Message> {
    client
        .list_messages(pb::ListMessagesRequest {
            session_id: session_id.to_owned(),
            limit: 1000,
            offset: 0,
        })
        .await
        .expect("list messages")
        .into_inner()
        .messages
}
