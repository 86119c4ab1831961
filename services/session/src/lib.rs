//! The Cognition session service: durable sessions, messages and the per-session event log,
//! served over gRPC (`cognition.session.v1.SessionService`) from SQLite (embedded default) or
//! PostgreSQL.
//!
//! Used by the `cognition-session` binary, by `cognition up` (all services in one process) and
//! by tests, all through [`run`]. Layout: domain types ([`domain`], [`event`]), the storage
//! trait and its backends ([`store`]), the event log with live fan-out ([`event_log`]), agent
//! runs ([`run`]: leases, the agent loop, abort, recovery) with the model interface ([`llm`]),
//! the built-in tools ([`tools`]) and callbacks ([`callback`]), the gRPC adapter ([`grpc`]),
//! the executor replicas ([`executor_pool`]) and sandbox cleanup on them ([`sandboxes`]). HTTP
//! stays in the gateway.

pub mod agents;
pub mod callback;
pub mod config;
pub mod domain;
pub mod event;
pub mod event_log;
pub mod executor_pool;
pub mod grpc;
pub mod llm;
pub mod metrics;
pub mod run;
pub mod sandboxes;
pub mod store;
pub mod tools;

use std::sync::Arc;
use std::time::Duration;

use cognition_metrics::grpc::GrpcMetricsLayer;
use cognition_proto::session::v1::session_service_server::SessionServiceServer;
use cognition_telemetry::grpc::ServerTraceLayer;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

pub use crate::config::{Config, PersistenceBackend};
pub use crate::event_log::EventLog;
pub use crate::store::{AppliedMigration, MigrationReport, Store};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("session store: {0}")]
    Store(#[from] store::Error),
    #[error(transparent)]
    Executor(#[from] executor_pool::InvalidExecutorUrl),
    #[error("language model configuration: {0}")]
    Llm(#[from] cognition_config::ConfigError),
    #[error("building gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Metrics(#[from] cognition_metrics::Error),
}

/// Applies pending migrations of the configured database (idempotent); `cognition db upgrade`.
pub async fn migrate(config: &Config) -> Result<MigrationReport, Error> {
    Ok(store::migrate(config).await?)
}

/// The schema version of the configured database (`None`: never migrated), changing nothing;
/// `cognition db current`.
pub async fn current_version(config: &Config) -> Result<Option<i64>, Error> {
    Ok(store::current_version(config).await?)
}

/// HTTP/2 keepalive pings on idle connections (long-lived event streams behind proxies).
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Opens the store (migrating it), then serves the session service on `listener` until
/// `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let model: Arc<dyn llm::ModelClient> =
        Arc::new(llm::router_from_config(&config, std::env::vars())?);
    let store = store::open(&config).await?;
    tracing::info!(backend = ?store.backend(), "session store ready");
    let events = EventLog::new(store.clone());
    let served = serve_with_model(&config, events, model, listener, shutdown).await;
    store.close().await;
    served
}

/// Serves the session service on `listener` with an already opened store (wrapped in
/// `events`, which the caller may keep to append events), and the model configured by
/// `config` (`COGNITION_LLM_*` plus the provider key variables of the process environment).
/// Returns after `shutdown` is cancelled and open calls have finished; event streams end on
/// shutdown.
pub async fn serve(
    config: &Config,
    events: EventLog,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let model: Arc<dyn llm::ModelClient> =
        Arc::new(llm::router_from_config(config, std::env::vars())?);
    serve_with_model(config, events, model, listener, shutdown).await
}

/// The run machinery of one replica, from `config`, with its tools on the executors of
/// `executors`.
pub fn run_manager(
    config: &Config,
    events: EventLog,
    model: Arc<dyn llm::ModelClient>,
    executors: executor_pool::ExecutorPool,
) -> run::RunManager {
    let toolbox = tools::Toolbox::new(
        tools::Executor::new(executors),
        tools::ToolSettings {
            max_output_chars: config.tool_output_max_chars,
            default_timeout: Duration::from_secs(config.tool_timeout_secs),
            ..tools::ToolSettings::default()
        },
    );
    let callbacks = callback::Callbacks::new(callback::CallbackSettings {
        secret: config
            .callback_secret
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| s.expose().to_owned()),
        allow_private: config.callback_allow_private,
        max_attempts: config.callback_max_attempts,
        backoff: Duration::from_millis(config.callback_backoff_ms),
    });
    run::RunManager::new(
        run::RunSettings::from_config(config),
        events,
        model,
        toolbox,
        callbacks,
    )
}

/// [`serve`] with an explicit model client (tests and embedders choose the providers).
///
/// Prometheus metrics are installed when `COGNITION_METRICS_PORT` is set (see [`metrics`]).
///
/// On shutdown: health turns NOT_SERVING, the runs executing here are closed as interrupted
/// with their terminal events (bounded wait), then the event streams end and the server stops.
pub async fn serve_with_model(
    config: &Config,
    events: EventLog,
    model: Arc<dyn llm::ModelClient>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if cognition_metrics::install("session", config.metrics_port)?.is_some() {
        metrics::describe();
    }
    let executors = executor_pool::ExecutorPool::new(&config.executor_urls())?;
    let sandboxes = sandboxes::SandboxCleaner::new(executors.clone());
    let runs = run_manager(config, events.clone(), model, executors);
    runs.start_background();
    tracing::info!(replica_id = runs.replica_id(), "run manager started");
    // Event streams end after the runs wrote their last events, not at the shutdown signal.
    let streams = CancellationToken::new();
    let api = grpc::SessionApi::new(
        events,
        sandboxes,
        runs.clone(),
        grpc::ScopePolicy::from_config(config),
        streams.clone(),
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<SessionServiceServer<grpc::SessionApi>>()
        .await;
    health.set_service_status("", ServingStatus::Serving).await;
    let reflection = cognition_proto::reflection_service("cognition.session.v1.SessionService")?;

    // `serve_with_incoming` ignores the builder's TCP_NODELAY; set it on each connection.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    if let Ok(addr) = incoming.get_ref().as_ref().local_addr() {
        tracing::info!(%addr, "session service listening");
    }
    let signal = async move {
        shutdown.cancelled().await;
        health
            .set_not_serving::<SessionServiceServer<grpc::SessionApi>>()
            .await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        tracing::info!("session service shutting down");
        runs.shutdown().await;
        streams.cancel();
    };
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .layer(ServerTraceLayer)
        .layer(GrpcMetricsLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(SessionServiceServer::new(api))
        .serve_with_incoming_shutdown(incoming, signal)
        .await?;
    Ok(())
}
