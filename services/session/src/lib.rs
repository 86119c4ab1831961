//! The Cognition session service: durable sessions, messages and the per-session event log,
//! served over gRPC (`cognition.session.v1.SessionService`) from SQLite (embedded default) or
//! PostgreSQL.
//!
//! Used by the `cognition-session` binary, by `cognition up` (all services in one process) and
//! by tests, all through [`run`]. Layout: domain types ([`domain`], [`event`]), the storage
//! trait and its backends ([`store`]), the event log with live fan-out ([`event_log`]), the gRPC
//! adapter ([`grpc`]) and sandbox cleanup on the executor ([`sandboxes`]). Agent runs (LLM
//! calls, tools) arrive with issue #3; HTTP stays in the gateway.

pub mod agents;
pub mod config;
pub mod domain;
pub mod event;
pub mod event_log;
pub mod grpc;
pub mod sandboxes;
pub mod store;

use std::time::Duration;

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
    Executor(#[from] sandboxes::InvalidExecutorUrl),
    #[error("building gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
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
    let store = store::open(&config).await?;
    tracing::info!(backend = ?store.backend(), "session store ready");
    let events = EventLog::new(store.clone());
    let served = serve(&config, events, listener, shutdown).await;
    store.close().await;
    served
}

/// Serves the session service on `listener` with an already opened store (wrapped in
/// `events`, which the caller may keep to append events). Returns after `shutdown` is
/// cancelled and open calls have finished; event streams end on shutdown.
pub async fn serve(
    config: &Config,
    events: EventLog,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let sandboxes = sandboxes::SandboxCleaner::new(config.executor_url.as_deref())?;
    let api = grpc::SessionApi::new(
        events,
        sandboxes,
        grpc::ScopePolicy::from_config(config),
        shutdown.clone(),
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<SessionServiceServer<grpc::SessionApi>>()
        .await;
    health.set_service_status("", ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cognition_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;

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
    };
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .layer(ServerTraceLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(SessionServiceServer::new(api))
        .serve_with_incoming_shutdown(incoming, signal)
        .await?;
    Ok(())
}
