//! The gateway's HTTP metrics, recorded by one middleware around every route:
//!
//! * `cognition_requests_total{method,route,status}` (counter): answered requests.
//! * `cognition_request_duration_seconds{method,route}` (histogram): time until the response
//!   headers are ready (for an SSE stream: until it starts, not its whole life).
//!
//! `route` is the matched route template (`/sessions/{id}`), never the raw path, and
//! `unmatched` for paths no route serves; `method` is one of the standard methods or `other`,
//! so no client can grow the label sets.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::Method;
use metrics::{counter, histogram};

pub const REQUESTS_TOTAL: &str = "cognition_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "cognition_request_duration_seconds";

/// Registers the help texts (after the exporter is installed).
pub fn describe() {
    metrics::describe_counter!(REQUESTS_TOTAL, "HTTP requests answered by the gateway.");
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time until the gateway's response headers were ready (SSE: until the stream started)."
    );
}

/// Middleware (`axum::middleware::from_fn`) counting and timing every request.
pub async fn record(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    counter!(REQUESTS_TOTAL, "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    histogram!(REQUEST_DURATION_SECONDS, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    res
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
