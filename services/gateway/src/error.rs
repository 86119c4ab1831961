//! HTTP error responses: the `{"error", "code", "details"}` body of every non-2xx response.
//!
//! Errors are [`cognition_errors::ApiError`]s; the shared code table decides the HTTP status, and
//! an upstream gRPC status comes back through [`ApiError::from_status`], so the gateway and the
//! session service always agree. A few transport-level answers keep the HTTP status the protocol
//! requires (405, 415, 501) with the closest code of the table.
//!
//! Internal errors are logged once, with the request id, by [`crate::middleware::finish_errors`],
//! which also puts the request id into their `details`.

use axum::response::{IntoResponse, Response};
use cognition_errors::{ApiError, Code};
use http::{HeaderValue, StatusCode, header};

/// An error as the gateway answers it.
#[derive(Debug, Clone)]
pub struct HttpError {
    pub status: StatusCode,
    /// The code string of the body (normally `Code::as_str`).
    pub code: &'static str,
    pub error: ApiError,
}

/// Marks a response rendered from an [`HttpError`]; holds what the log needs.
#[derive(Debug, Clone)]
pub(crate) struct ErrorRendered {
    /// Whether the client saw a generic message (an internal error).
    pub internal: bool,
    /// The original message (for the log only when `internal`).
    pub message: String,
    pub code: &'static str,
}

impl HttpError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self::from(ApiError::new(code, message))
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(Code::ValidationError, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::InternalError, message)
    }

    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.error = self.error.with_detail(key, value);
        self
    }

    /// Overrides the HTTP status (for protocol answers such as 405 or 415).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Maps an error status from the session service.
    pub fn from_status(status: &tonic::Status) -> Self {
        Self::from(ApiError::from_status(status))
    }

    /// Whether clients get a generic message instead of `error.message`.
    pub fn is_internal(&self) -> bool {
        !self.error.code.is_client_safe()
    }

    /// The JSON body clients see.
    pub fn body_json(&self) -> serde_json::Value {
        let body = self.error.body();
        serde_json::json!({ "error": body.error, "code": self.code, "details": body.details })
    }
}

impl From<ApiError> for HttpError {
    fn from(error: ApiError) -> Self {
        Self {
            status: error.code.http_status(),
            code: error.code.as_str(),
            error,
        }
    }
}

impl From<tonic::Status> for HttpError {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(&status)
    }
}

/// A JSON error response with the given status and body.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut res = (status, bytes).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut res = json_response(self.status, &self.body_json());
        res.extensions_mut().insert(ErrorRendered {
            internal: self.is_internal(),
            message: self.error.message.clone(),
            code: self.code,
        });
        res
    }
}

/// Fallback for unknown routes.
pub(crate) async fn no_route(method: http::Method, uri: http::Uri) -> HttpError {
    HttpError::new(
        Code::NotFound,
        format!("no route for {method} {}", uri.path()),
    )
    .with_detail("path", uri.path())
}

/// Fallback for a known route with a method it does not serve.
pub(crate) async fn method_not_allowed(method: http::Method, uri: http::Uri) -> HttpError {
    HttpError::new(
        Code::NotFound,
        format!("method {method} is not allowed on {}", uri.path()),
    )
    .with_status(StatusCode::METHOD_NOT_ALLOWED)
    .with_detail("method", method.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cognition_errors::CODE_METADATA_KEY;

    #[test]
    fn upstream_code_metadata_wins() {
        let mut status = tonic::Status::not_found("session 1 not found");
        status
            .metadata_mut()
            .insert(CODE_METADATA_KEY, "SESSION_NOT_FOUND".parse().unwrap());
        let e = HttpError::from_status(&status);
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.body_json()["code"], "SESSION_NOT_FOUND");
        assert_eq!(e.body_json()["error"], "session 1 not found");
    }

    #[test]
    fn every_table_code_round_trips_from_the_session_service() {
        for code in [
            Code::NotFound,
            Code::SessionNotFound,
            Code::PermissionDenied,
            Code::ValidationError,
            Code::RateLimited,
            Code::Conflict,
            Code::Unauthenticated,
            Code::LlmUnavailable,
            Code::Unavailable,
            Code::PayloadTooLarge,
        ] {
            let status = ApiError::new(code, "m")
                .with_detail("field", "x")
                .into_status();
            let e = HttpError::from(status);
            assert_eq!(e.status, code.http_status(), "{code}");
            assert_eq!(e.code, code.as_str());
            assert_eq!(e.body_json()["details"]["field"], "x");
        }
    }

    #[test]
    fn bare_statuses_map_by_grpc_code() {
        assert_eq!(
            HttpError::from(tonic::Status::invalid_argument("bad")).status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            HttpError::from(tonic::Status::already_exists("dup")).status,
            StatusCode::CONFLICT
        );
        assert_eq!(
            HttpError::from(tonic::Status::deadline_exceeded("slow")).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let e = HttpError::from(tonic::Status::unavailable("tcp connect error 127.0.0.1:1"));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            !e.body_json()["error"]
                .as_str()
                .unwrap()
                .contains("127.0.0.1")
        );
    }

    #[test]
    fn unimplemented_is_501_with_a_clear_message() {
        let e = HttpError::from(tonic::Status::unimplemented(""));
        assert_eq!(e.status, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(e.body_json()["code"], "NOT_IMPLEMENTED");
        assert!(
            e.body_json()["error"]
                .as_str()
                .unwrap()
                .contains("not implemented")
        );
        let e = HttpError::from(tonic::Status::unimplemented(
            "agent runs are not available yet",
        ));
        assert_eq!(e.body_json()["error"], "agent runs are not available yet");
    }

    #[test]
    fn internal_errors_hide_their_message() {
        let e = HttpError::from(tonic::Status::internal(
            "sqlite: disk I/O error at /var/lib/x",
        ));
        assert!(e.is_internal());
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.body_json()["error"], "internal error");
        assert_eq!(e.body_json()["code"], "INTERNAL_ERROR");
    }
}
