//! `cognition-executor`: sandboxes, the processes in them and the file operations the agent's
//! tools need, served as `cognition.executor.v1.ExecutorService` (gRPC).
//!
//! Used by the `cognition-executor` binary, by `cognition up` (all services in one process) and by
//! tests, all through [`run`]. The session service talks to it over gRPC only.
//!
//! Layout: domain core first ([`sandbox`], [`process`], [`paths`], [`files`], [`exec`]), the
//! [`backend::SandboxBackend`] trait with its [`backend::local`] and [`backend::docker`]
//! implementations, the [`engine`] that ties them together, then the [`grpc`] adapter and the
//! runtime wiring ([`run`]). [`metrics`] names the Prometheus metrics, recorded by the engine and
//! served when `COGNITION_METRICS_PORT` is set.
//! Wire types stay in [`grpc`]; nothing here knows about HTTP or the session service.

pub mod backend;
pub mod config;
pub mod engine;
pub mod error;
pub mod exec;
pub mod files;
pub mod grpc;
pub mod ids;
pub mod metrics;
pub mod paths;
pub mod process;
pub mod sandbox;

use std::sync::Arc;

use cognition_metrics::grpc::GrpcMetricsLayer;
use cognition_proto::executor::v1::executor_service_server::ExecutorServiceServer;
use cognition_telemetry::grpc::ServerTraceLayer;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

pub use config::{BackendKind, Config};
pub use engine::Engine;
pub use error::Error;
pub use grpc::GrpcService;

/// Largest gRPC message accepted or sent (WriteFile content, big outputs).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Opens the configured backend (re-adopting sandboxes found on disk) and serves gRPC on
/// `listener` until `shutdown` is cancelled; then kills the running processes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let engine = Engine::open(config).await?;
    serve(engine, listener, shutdown).await
}

/// Serves an already opened engine (see [`run`]), with Prometheus metrics on
/// `COGNITION_METRICS_PORT` when set.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listener address", e))?;
    if cognition_metrics::install("executor", engine.config().metrics_port)
        .map_err(|e| Error::Internal(e.to_string()))?
        .is_some()
    {
        metrics::describe();
    }
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<ExecutorServiceServer<GrpcService>>()
        .await;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let reflection =
        cognition_proto::reflection_service("cognition.executor.v1.ExecutorService")
            .map_err(|e| Error::Internal(format!("building the reflection service: {e}")))?;
    let service = ExecutorServiceServer::new(GrpcService::new(engine.clone(), shutdown.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let reaper = tokio::spawn(engine.clone().run_reaper(shutdown.clone()));
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|s| {
            // Small messages (an `echo` round trip) must not wait for Nagle.
            let _ = s.set_nodelay(true);
        })
    });
    tracing::info!(%addr, backend = engine.backend().name(), "executor listening");
    let stop = shutdown.clone();
    let served = tonic::transport::Server::builder()
        .layer(ServerTraceLayer)
        .layer(GrpcMetricsLayer)
        .add_service(health)
        .add_service(reflection)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move {
            stop.cancelled().await;
            reporter
                .set_not_serving::<ExecutorServiceServer<GrpcService>>()
                .await;
            reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
        })
        .await;
    let _ = reaper.await;
    engine.shutdown().await;
    tracing::info!(%addr, "executor stopped");
    served.map_err(Error::Transport)
}
