//! The `GET /metrics` endpoint: a small axum server on a thread of its own, with its own
//! current-thread Tokio runtime, so that it outlives whichever service (and runtime) installed
//! it. It also runs the recorder's upkeep (draining histogram buffers) every few seconds.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

/// How often the recorder's upkeep runs.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The content type of the Prometheus text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where the endpoint listens.
pub(crate) enum Listen {
    /// Bind this address (with `SO_REUSEADDR`, like Tokio's own `bind`, so that a restarted
    /// process gets its port back while old scrape connections linger in `TIME_WAIT`).
    Bind(SocketAddr),
    /// An already bound listener.
    Listener(std::net::TcpListener),
}

/// Starts serving `/metrics` on a new thread; returns the bound address once it listens, or
/// why it could not.
pub(crate) fn spawn(listen: Listen, handle: PrometheusHandle) -> std::io::Result<SocketAddr> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (bound_tx, bound_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("cognition-metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match open(listen) {
                    Ok(listener) => listener,
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                        return;
                    }
                };
                let _ = bound_tx.send(listener.local_addr());
                serve(listener, handle).await;
            })
        })?;
    bound_rx
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("the metrics thread stopped")))
}

fn open(listen: Listen) -> std::io::Result<tokio::net::TcpListener> {
    match listen {
        Listen::Bind(addr) => {
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(1024)
        }
        Listen::Listener(listener) => {
            listener.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(listener)
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, handle: PrometheusHandle) {
    let addr = listener.local_addr().ok();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new().route("/metrics", get(move || render(handle.clone())));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(?addr, error = %e, "the metrics endpoint stopped");
    }
}

async fn render(handle: PrometheusHandle) -> Response {
    let mut res = handle.render().into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    res
}
