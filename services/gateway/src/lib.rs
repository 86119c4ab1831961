//! The Cognition gateway: the REST + SSE API of `api-contract.md`, translated into gRPC calls on the
//! session service (`cognition.session.v1.SessionService`).
//!
//! The gateway is stateless: every request becomes one call on a single shared, lazily-connected
//! HTTP/2 channel, with the caller's scope (`X-Cognition-Scope-<Key>` headers) forwarded as gRPC
//! metadata and every upstream error mapped through the shared code table
//! ([`cognition_errors`]). It owns the HTTP edge — routing, JSON shapes, SSE framing, validation of
//! the wire shape, CORS, body limits, request ids, OpenAPI — and nothing else: domain rules live in
//! the session service.
//!
//! Used by `main.rs`, by the all-in-one `cognition up`, and by tests, all through [`run`].

pub mod config;
pub mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod middleware;
pub mod routes;
pub mod sse;
pub mod state;
pub mod views;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::serve::ListenerExt;
use http::{HeaderName, HeaderValue, Method};
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use config::Config;
pub use error::HttpError;
pub use state::{AppState, StateError};

/// Why the gateway stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Metrics(#[from] cognition_metrics::Error),
}

/// The CORS layer for `origins` (`["*"]` means any origin).
fn cors(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(Any)
        .expose_headers([HeaderName::from_static(middleware::REQUEST_ID)])
        .max_age(Duration::from_secs(600))
}

/// The gateway's HTTP application: every route of [`routes::ROUTES`] plus the cross-cutting
/// layers (metrics, request id, tracing span, CORS, JSON error bodies, panic catcher, body
/// limit). The layers wrap each route, so the metrics middleware sees the matched route.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static(middleware::REQUEST_ID);
    let layers = ServiceBuilder::new()
        .layer(axum::middleware::from_fn(metrics::record))
        .layer(SetRequestIdLayer::new(
            request_id.clone(),
            middleware::MakeUuid,
        ))
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(middleware::make_span)
                .on_failure(()),
        )
        .layer(cors(state.cors_origins()))
        .layer(axum::middleware::from_fn(middleware::finish_errors))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(DefaultBodyLimit::max(state.max_body_bytes()));
    routes::routes()
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(layers)
        .with_state(state)
}

/// Serves the gateway on `listener` until `shutdown` is cancelled, then drains: open SSE streams
/// end (clients reconnect with `Last-Event-ID`) and in-flight requests finish. Prometheus metrics
/// are installed when `COGNITION_METRICS_PORT` is set (see [`metrics`]).
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if cognition_metrics::install("gateway", config.metrics_port)?.is_some() {
        metrics::describe();
    }
    let state = AppState::new(&config, shutdown.clone())?;
    let app = router(state);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, session_url = %config.session_url, "gateway listening");
    }
    let listener = listener.tap_io(|tcp| {
        // Small JSON answers on keep-alive connections must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(Error::Serve)?;
    tracing::info!("gateway stopped");
    Ok(())
}
