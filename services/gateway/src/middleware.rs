//! Cross-cutting layers: request ids, one span per request (parented to the caller's
//! `traceparent`), and the last word on error responses.

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cognition_errors::Code;
use http::{HeaderValue, StatusCode, header};
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::error::{ErrorRendered, HttpError, json_response};

/// The request id header, set on every request (unless the client sent one) and every response.
pub const REQUEST_ID: &str = "x-request-id";

/// Makes a random UUID request id.
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeUuid;

impl MakeRequestId for MakeUuid {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<RequestId> {
        let mut buf = uuid::Uuid::encode_buffer();
        let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
        HeaderValue::from_str(text).ok().map(RequestId::new)
    }
}

/// The span of one request. Its parent is the caller's trace context, when it sent one, and the
/// gRPC client interceptor forwards it to the session service.
pub fn make_span(req: &http::Request<Body>) -> tracing::Span {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        http.method = %req.method(),
        http.path = %req.uri().path(),
        request_id = %request_id,
    );
    if req.headers().contains_key("traceparent") {
        cognition_telemetry::grpc::set_parent_from_headers(&span, req.headers());
    }
    span
}

/// Ensures every error response carries the JSON error body, and handles internal errors: logged
/// once here with the request id, which is also added to their `details`.
pub async fn finish_errors(req: Request, next: Next) -> Response {
    let request_id = req.headers().get(REQUEST_ID).cloned();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let request_id = request_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let path = uri.path();
    if let Some(rendered) = res.extensions().get::<ErrorRendered>() {
        if !rendered.internal {
            tracing::debug!(%status, code = rendered.code, error = %rendered.message, "request refused");
            return res;
        }
        tracing::error!(
            %status,
            %method,
            %path,
            request_id,
            code = rendered.code,
            error = %rendered.message,
            "internal error"
        );
        let body = serde_json::json!({
            "error": "internal error",
            "code": rendered.code,
            "details": {"request_id": request_id},
        });
        return with_headers_of(json_response(status, &body), res);
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    // A response built by a layer or by axum itself (never by a handler): replace its body.
    let error = match status {
        StatusCode::NOT_FOUND => {
            HttpError::new(Code::NotFound, format!("no route for {method} {path}"))
        }
        StatusCode::METHOD_NOT_ALLOWED => HttpError::new(
            Code::NotFound,
            format!("method {method} is not allowed on {path}"),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            HttpError::new(Code::PayloadTooLarge, "request body is too large")
        }
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => {
            HttpError::validation("invalid request")
        }
        s if s.is_server_error() => {
            tracing::error!(%status, %method, %path, request_id, "internal error without details");
            HttpError::internal("internal error").with_detail("request_id", request_id)
        }
        _ => HttpError::validation(
            status
                .canonical_reason()
                .unwrap_or("invalid request")
                .to_ascii_lowercase(),
        ),
    }
    .with_status(status);
    with_headers_of(error.into_response(), res)
}

/// `fresh` with the status of `old` and the headers of `old` that are not about the body.
fn with_headers_of(mut fresh: Response, old: Response) -> Response {
    let (parts, _) = old.into_parts();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && name != header::TRANSFER_ENCODING
        {
            fresh.headers_mut().append(name.clone(), value.clone());
        }
    }
    *fresh.status_mut() = parts.status;
    fresh
}

/// Turns a panic in a handler into a plain 500 (rendered as the error body by [`finish_errors`]).
pub fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    res
}
