//! Prometheus metrics for every Cognition process.
//!
//! * [`install`] installs the process-wide recorder once and serves `GET /metrics` (Prometheus
//!   text format) on `0.0.0.0:<COGNITION_METRICS_PORT>`; port `0` (the default) disables
//!   metrics, and recording then costs next to nothing (the `metrics` facade has no recorder).
//! * [`grpc::GrpcMetricsLayer`] (tower layer for tonic servers) records the standard
//!   `grpc_server_*` metrics.
//! * [`exposition`] parses and checks the text format (used by tests and by scrapers of our own).
//!
//! **One recorder, one endpoint per process.** The `metrics` recorder is global, so when several
//! services run in one process (`cognition up` runs gateway, session service and executor
//! together) the first [`install`] binds the endpoint and every later one is a no-op that returns
//! the same [`Exporter`]: one `/metrics` serves the metrics of every service in the process. Metric
//! names are distinct per service (`grpc_server_*` carry a `grpc_service` label), so nothing
//! collides. The endpoint runs on its own thread with its own Tokio runtime and lives as long as
//! the process, independent of the runtime and shutdown of the service that installed it.
//!
//! Metric names are not here (except the gRPC ones): each service keeps its own in a `metrics`
//! module.

mod endpoint;
pub mod exposition;
pub mod grpc;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use endpoint::Listen;
use std::sync::{Mutex, PoisonError};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The variable every service reads its metrics port from (`0` or unset: disabled).
pub const PORT_VARIABLE: &str = "COGNITION_METRICS_PORT";

/// Histogram buckets of every `*_seconds` metric, in seconds: millisecond resolution for RPCs
/// and HTTP requests, up to five minutes for model calls and long execs.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// The installed recorder and the address of its `/metrics` endpoint.
#[derive(Debug, Clone)]
pub struct Exporter {
    addr: SocketAddr,
    handle: PrometheusHandle,
}

impl Exporter {
    /// Where `/metrics` is served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current exposition text (what `GET /metrics` answers).
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Why metrics could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the metrics endpoint on {addr} ({PORT_VARIABLE}={port}): {source}", port = addr.port())]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the metrics endpoint on {addr}: {source}")]
    Start {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("building the metrics recorder: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
    #[error("another metrics recorder is already installed in this process")]
    RecorderTaken,
}

static INSTALLED: Mutex<Option<Exporter>> = Mutex::new(None);

/// Installs the global recorder and serves `/metrics` on `0.0.0.0:port`, for `service` (used in
/// logs). `port == 0`: metrics are disabled and `Ok(None)` is returned.
///
/// Safe to call from every service of a process: once installed, later calls bind nothing and
/// return the existing exporter (a different `port` is then ignored, with a log line).
pub fn install(service: &str, port: u16) -> Result<Option<Exporter>, Error> {
    if port == 0 {
        return Ok(None);
    }
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(existing) = installed.as_ref() {
        return Ok(Some(reuse(existing, service, port)));
    }
    let exporter = start(service, Listen::Bind(addr))?;
    *installed = Some(exporter.clone());
    Ok(Some(exporter))
}

/// [`install`] on an already bound listener (tests bind `127.0.0.1:0`). When an exporter is
/// already installed, `listener` is dropped and the existing exporter returned.
pub fn install_on(service: &str, listener: TcpListener) -> Result<Exporter, Error> {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(existing) = installed.as_ref() {
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        return Ok(reuse(existing, service, port));
    }
    let exporter = start(service, Listen::Listener(listener))?;
    *installed = Some(exporter.clone());
    Ok(exporter)
}

/// The installed exporter, if any.
pub fn installed() -> Option<Exporter> {
    INSTALLED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Whether a recorder is installed, so that callers can skip work that only feeds metrics.
pub fn is_installed() -> bool {
    INSTALLED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_some()
}

fn reuse(existing: &Exporter, service: &str, port: u16) -> Exporter {
    if port != existing.addr.port() {
        tracing::info!(
            service,
            requested_port = port,
            addr = %existing.addr,
            "metrics are already served by this process; one endpoint serves every service"
        );
    }
    existing.clone()
}

/// Binds and serves the endpoint, then installs the recorder behind it.
fn start(service: &str, listen: Listen) -> Result<Exporter, Error> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(DURATION_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    let addr = match listen {
        Listen::Bind(addr) => endpoint::spawn(listen, handle.clone())
            .map_err(|source| Error::Bind { addr, source })?,
        Listen::Listener(ref listener) => {
            let requested = listener
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
            endpoint::spawn(listen, handle.clone()).map_err(|source| Error::Start {
                addr: requested,
                source,
            })?
        }
    };
    metrics::set_global_recorder(recorder).map_err(|_| Error::RecorderTaken)?;
    grpc::describe();
    tracing::info!(service, %addr, "serving Prometheus metrics on /metrics");
    Ok(Exporter { addr, handle })
}
