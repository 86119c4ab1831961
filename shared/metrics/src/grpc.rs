//! Standard gRPC server metrics for tonic servers:
//! `Server::builder().layer(GrpcMetricsLayer)`.
//!
//! * `grpc_server_started_total{grpc_service,grpc_method}`: calls received.
//! * `grpc_server_handled_total{grpc_service,grpc_method,grpc_code}`: calls completed, by
//!   status code (names as in `grpc-go`: `OK`, `Canceled`, `NotFound`, …).
//! * `grpc_server_handling_seconds{grpc_service,grpc_method}`: histogram of the time from
//!   receiving the call to its completion.
//!
//! **What "handled" means.** A call is handled when the server sends its final status: in the
//! response headers when the call fails before any message (a "trailers-only" response, as tonic
//! sends for an `Err` returned by a handler), otherwise in the trailers after the last message.
//! For a unary call that is the answer; for a streaming response it is the end of the stream, so
//! its handling time is the stream's whole life. When the response (or the stream) is dropped
//! before any status was sent — the client went away or cancelled — the call counts as handled
//! with `grpc_code="Canceled"`; a body that fails or ends without a status counts as `Unknown`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use metrics::{counter, histogram};

/// Calls received.
pub const STARTED: &str = "grpc_server_started_total";
/// Calls completed, by status code.
pub const HANDLED: &str = "grpc_server_handled_total";
/// Time from receiving a call to its completion, in seconds.
pub const HANDLING_SECONDS: &str = "grpc_server_handling_seconds";

/// Registers the help texts of the gRPC metrics (called by [`crate::install`]).
pub(crate) fn describe() {
    metrics::describe_counter!(STARTED, "gRPC calls started on the server.");
    metrics::describe_counter!(
        HANDLED,
        "gRPC calls completed on the server, by status code (streams: when the stream ended)."
    );
    metrics::describe_histogram!(
        HANDLING_SECONDS,
        metrics::Unit::Seconds,
        "Time from receiving a gRPC call to sending its final status (streams: the whole stream)."
    );
}

/// The name of a gRPC status code as `grpc-go` spells it (`Unknown` for codes out of range).
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

/// `/package.Service/Method` → (`package.Service`, `Method`); anything else → `unknown`.
fn split_path(path: &str) -> (String, String) {
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, method)) if !service.is_empty() && !method.is_empty() => {
            (service.to_owned(), method.to_owned())
        }
        _ => ("unknown".to_owned(), "unknown".to_owned()),
    }
}

/// The `grpc-status` of a header or trailer map, as a code name.
fn status_in(headers: &http::HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?;
    let code = value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(2);
    Some(code_name(code))
}

/// One call being measured; records `handled` exactly once (on drop: `Canceled`).
#[derive(Debug)]
struct Call {
    service: String,
    method: String,
    started: Instant,
    done: bool,
}

impl Call {
    fn start(path: &str) -> Call {
        let (service, method) = split_path(path);
        counter!(STARTED, "grpc_service" => service.clone(), "grpc_method" => method.clone())
            .increment(1);
        Call {
            service,
            method,
            started: Instant::now(),
            done: false,
        }
    }

    fn finish(&mut self, code: &'static str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        counter!(
            HANDLED,
            "grpc_service" => self.service.clone(),
            "grpc_method" => self.method.clone(),
            "grpc_code" => code,
        )
        .increment(1);
        histogram!(
            HANDLING_SECONDS,
            "grpc_service" => self.service.clone(),
            "grpc_method" => self.method.clone(),
        )
        .record(elapsed);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish("Canceled");
    }
}

/// Tower layer for tonic servers that records the `grpc_server_*` metrics (see the module doc).
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// The service made by [`GrpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeasuredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let mut call = Call::start(req.uri().path());
        let response = self.inner.call(req);
        Box::pin(async move {
            match response.await {
                Ok(res) => {
                    let pending = match status_in(res.headers()) {
                        Some(code) => {
                            call.finish(code);
                            None
                        }
                        None => Some(call),
                    };
                    Ok(res.map(|body| MeasuredBody {
                        inner: Box::pin(body),
                        call: pending,
                    }))
                }
                Err(e) => {
                    call.finish("Unknown");
                    Err(e)
                }
            }
        })
    }
}

/// A response body that records the call as handled when its trailers carry the status.
pub struct MeasuredBody<B> {
    inner: Pin<Box<B>>,
    /// `None` once the call is recorded.
    call: Option<Call>,
}

impl<B> std::fmt::Debug for MeasuredBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeasuredBody")
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

impl<B> MeasuredBody<B> {
    fn finish(&mut self, code: &'static str) {
        if let Some(mut call) = self.call.take() {
            call.finish(code);
        }
    }
}

impl<B: Body> Body for MeasuredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = ready!(self.inner.as_mut().poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in) {
                    self.finish(code);
                }
            }
            Some(Err(_)) | None => self.finish("Unknown"),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_codes() {
        assert_eq!(
            split_path("/cognition.executor.v1.ExecutorService/CreateSandbox"),
            (
                "cognition.executor.v1.ExecutorService".to_owned(),
                "CreateSandbox".to_owned()
            )
        );
        assert_eq!(split_path("/"), ("unknown".into(), "unknown".into()));
        assert_eq!(split_path("/svc/"), ("unknown".into(), "unknown".into()));
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(5), "NotFound");
        assert_eq!(code_name(99), "Unknown");
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_in(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(status_in(&headers), Some("Unavailable"));
        headers.insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(status_in(&headers), Some("Unknown"));
    }
}
