//! Shared state of the gateway: one lazily-connected HTTP/2 channel to the session service and the
//! settings handlers need. Cloning is cheap (one `Arc`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cognition_proto::scope::Scope;
use cognition_proto::session::v1::session_service_client::SessionServiceClient;
use cognition_telemetry::grpc::{InjectTraceContext, TracedChannel};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tonic_health::pb::health_client::HealthClient;

use crate::config::Config;

/// Largest gRPC message the gateway accepts from the session service (long message lists).
const MAX_DECODING_BYTES: usize = 64 * 1024 * 1024;

/// The gRPC service name whose health decides `/health` and `/ready`.
pub const SESSION_SERVICE_NAME: &str = "cognition.session.v1.SessionService";

/// Why the state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("COGNITION_SESSION_URL={url:?} is not a usable gRPC address: {source}")]
    SessionUrl {
        url: String,
        source: tonic::transport::Error,
    },
}

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    sessions: SessionServiceClient<TracedChannel>,
    health: HealthClient<TracedChannel>,
    scoping_enabled: bool,
    scope_keys: Vec<String>,
    upstream_timeout: Duration,
    health_timeout: Duration,
    keepalive: Duration,
    cors_origins: Vec<String>,
    max_body_bytes: usize,
    shutdown: CancellationToken,
    open_streams: AtomicUsize,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("scoping_enabled", &self.inner.scoping_enabled)
            .field("scope_keys", &self.inner.scope_keys)
            .field("open_streams", &self.open_streams())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Builds the state from `config`. The channel to the session service connects lazily (on the
    /// first call) and reconnects by itself, so this never waits for the session service.
    /// `shutdown` ends open SSE streams so that graceful shutdown can finish.
    pub fn new(config: &Config, shutdown: CancellationToken) -> Result<Self, StateError> {
        let endpoint = Endpoint::from_shared(config.session_url.clone())
            .map_err(|source| StateError::SessionUrl {
                url: config.session_url.clone(),
                source,
            })?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(3))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        let sessions = SessionServiceClient::with_interceptor(channel.clone(), InjectTraceContext)
            .max_decoding_message_size(MAX_DECODING_BYTES);
        let health = HealthClient::with_interceptor(channel, InjectTraceContext);
        Ok(Self {
            inner: Arc::new(Inner {
                sessions,
                health,
                scoping_enabled: config.scoping_enabled,
                scope_keys: config
                    .scope_keys
                    .iter()
                    .map(|k| k.to_ascii_lowercase())
                    .collect(),
                upstream_timeout: Duration::from_millis(config.upstream_timeout_ms),
                health_timeout: Duration::from_millis(config.health_timeout_ms),
                keepalive: Duration::from_millis(config.sse_keepalive_ms),
                cors_origins: config.cors_origins.clone(),
                max_body_bytes: config.max_body_bytes,
                shutdown,
                open_streams: AtomicUsize::new(0),
            }),
        })
    }

    /// A client of the session service (a cheap clone of the shared channel).
    pub fn sessions(&self) -> SessionServiceClient<TracedChannel> {
        self.inner.sessions.clone()
    }

    pub(crate) fn health_client(&self) -> HealthClient<TracedChannel> {
        self.inner.health.clone()
    }

    pub fn scoping_enabled(&self) -> bool {
        self.inner.scoping_enabled
    }

    pub fn scope_keys(&self) -> &[String] {
        &self.inner.scope_keys
    }

    pub fn cors_origins(&self) -> &[String] {
        &self.inner.cors_origins
    }

    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    pub(crate) fn health_timeout(&self) -> Duration {
        self.inner.health_timeout
    }

    pub(crate) fn keepalive(&self) -> Duration {
        self.inner.keepalive
    }

    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// A unary request carrying the caller's scope and the upstream deadline.
    pub(crate) fn unary<T>(&self, scope: &Scope, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        scope.insert_into(req.metadata_mut());
        req.set_timeout(self.inner.upstream_timeout);
        req
    }

    /// A streaming request carrying the caller's scope (no deadline: streams live long).
    pub(crate) fn streaming<T>(&self, scope: &Scope, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        scope.insert_into(req.metadata_mut());
        req
    }

    /// How long opening a stream may take before the gateway gives up.
    pub(crate) fn stream_open_timeout(&self) -> Duration {
        self.inner.upstream_timeout
    }

    /// Number of SSE streams this gateway is forwarding right now (`active_sessions` in `/health`).
    pub fn open_streams(&self) -> usize {
        self.inner.open_streams.load(Ordering::Relaxed)
    }

    /// Counts one open stream until the guard is dropped.
    pub(crate) fn stream_guard(&self) -> StreamGuard {
        self.inner.open_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard {
            state: self.clone(),
        }
    }
}

/// Keeps one SSE stream counted in [`AppState::open_streams`].
pub(crate) struct StreamGuard {
    state: AppState,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.state
            .inner
            .open_streams
            .fetch_sub(1, Ordering::Relaxed);
    }
}
