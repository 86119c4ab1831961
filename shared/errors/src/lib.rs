//! The one error-code table of Cognition.
//!
//! Every error a service returns carries a [`Code`]. The code decides the gRPC status (when a
//! service answers a gRPC call) and the HTTP status plus the `code` string of the JSON error body
//! (when the gateway answers an HTTP request). The gateway turns an upstream gRPC status back into
//! HTTP through this same table, using the `x-cognition-error-code` metadata that [`ApiError`]
//! attaches, so both surfaces always agree.
//!
//! Only the mapping lives here; services keep their own `thiserror` enums and convert into
//! [`ApiError`] at their edge.

use std::fmt;

use serde::Serialize;

/// gRPC metadata key that carries the [`Code`] of a failed call.
pub const CODE_METADATA_KEY: &str = "x-cognition-error-code";

/// Machine-readable error code shared by the gRPC and HTTP surfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    NotFound,
    SessionNotFound,
    PermissionDenied,
    ValidationError,
    RateLimited,
    Conflict,
    Unauthenticated,
    LlmUnavailable,
    ToolExecutionError,
    StreamingError,
    InternalError,
    Aborted,
    Unavailable,
    PayloadTooLarge,
    NotImplemented,
}

/// One row of the code table.
struct Row {
    code: Code,
    name: &'static str,
    grpc: tonic::Code,
    http: u16,
}

const TABLE: &[Row] = &[
    Row {
        code: Code::NotFound,
        name: "NOT_FOUND",
        grpc: tonic::Code::NotFound,
        http: 404,
    },
    Row {
        code: Code::SessionNotFound,
        name: "SESSION_NOT_FOUND",
        grpc: tonic::Code::NotFound,
        http: 404,
    },
    Row {
        code: Code::PermissionDenied,
        name: "PERMISSION_DENIED",
        grpc: tonic::Code::PermissionDenied,
        http: 403,
    },
    Row {
        code: Code::ValidationError,
        name: "VALIDATION_ERROR",
        grpc: tonic::Code::InvalidArgument,
        http: 422,
    },
    Row {
        code: Code::RateLimited,
        name: "RATE_LIMITED",
        grpc: tonic::Code::ResourceExhausted,
        http: 429,
    },
    Row {
        code: Code::Conflict,
        name: "CONFLICT",
        grpc: tonic::Code::AlreadyExists,
        http: 409,
    },
    Row {
        code: Code::Unauthenticated,
        name: "UNAUTHENTICATED",
        grpc: tonic::Code::Unauthenticated,
        http: 401,
    },
    Row {
        code: Code::LlmUnavailable,
        name: "LLM_UNAVAILABLE",
        grpc: tonic::Code::Unavailable,
        http: 503,
    },
    Row {
        code: Code::ToolExecutionError,
        name: "TOOL_EXECUTION_ERROR",
        grpc: tonic::Code::Internal,
        http: 500,
    },
    Row {
        code: Code::StreamingError,
        name: "STREAMING_ERROR",
        grpc: tonic::Code::Internal,
        http: 500,
    },
    Row {
        code: Code::InternalError,
        name: "INTERNAL_ERROR",
        grpc: tonic::Code::Internal,
        http: 500,
    },
    Row {
        code: Code::Aborted,
        name: "ABORTED",
        grpc: tonic::Code::Cancelled,
        http: 499,
    },
    Row {
        code: Code::Unavailable,
        name: "UNAVAILABLE",
        grpc: tonic::Code::Unavailable,
        http: 503,
    },
    Row {
        code: Code::PayloadTooLarge,
        name: "PAYLOAD_TOO_LARGE",
        grpc: tonic::Code::InvalidArgument,
        http: 413,
    },
    Row {
        code: Code::NotImplemented,
        name: "NOT_IMPLEMENTED",
        grpc: tonic::Code::Unimplemented,
        http: 501,
    },
];

impl Code {
    fn row(self) -> &'static Row {
        // The table holds every variant; `all_codes_have_a_row` checks it.
        TABLE.iter().find(|r| r.code == self).unwrap_or(&TABLE[10])
    }

    /// The string used in HTTP error bodies and gRPC metadata, e.g. `SESSION_NOT_FOUND`.
    pub fn as_str(self) -> &'static str {
        self.row().name
    }

    /// The gRPC status code for this error.
    pub fn grpc(self) -> tonic::Code {
        self.row().grpc
    }

    /// The HTTP status for this error.
    pub fn http_status(self) -> http::StatusCode {
        http::StatusCode::from_u16(self.row().http)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Parses the string form (`as_str`).
    pub fn parse(name: &str) -> Option<Code> {
        TABLE.iter().find(|r| r.name == name).map(|r| r.code)
    }

    /// The code to assume for a gRPC status that carries no Cognition code (e.g. from a proxy or
    /// the transport itself).
    pub fn from_grpc(code: tonic::Code) -> Code {
        match code {
            tonic::Code::NotFound => Code::NotFound,
            tonic::Code::PermissionDenied => Code::PermissionDenied,
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Code::ValidationError,
            tonic::Code::ResourceExhausted => Code::RateLimited,
            tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition | tonic::Code::Aborted => {
                Code::Conflict
            }
            tonic::Code::Unauthenticated => Code::Unauthenticated,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => Code::Unavailable,
            tonic::Code::Cancelled => Code::Aborted,
            tonic::Code::Unimplemented => Code::NotImplemented,
            _ => Code::InternalError,
        }
    }

    /// Whether the message may be shown to clients. Internal errors get a generic message.
    pub fn is_client_safe(self) -> bool {
        !matches!(
            self,
            Code::InternalError | Code::StreamingError | Code::ToolExecutionError
        )
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as clients see it: a code, a human message and optional details.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// JSON body of every non-2xx HTTP response: `{"error", "code", "details"}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
    pub code: &'static str,
    pub details: &'a serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: serde_json::Map::new(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(Code::ValidationError, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::InternalError, message)
    }

    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// The body clients see. Internal errors never leak their message.
    pub fn body(&self) -> ErrorBody<'_> {
        let error = if self.code.is_client_safe() {
            self.message.as_str()
        } else {
            "internal error"
        };
        ErrorBody {
            error,
            code: self.code.as_str(),
            details: &self.details,
        }
    }

    /// Converts into a gRPC status carrying the code (and details as JSON) in metadata.
    pub fn into_status(self) -> tonic::Status {
        let message = if self.code.is_client_safe() {
            self.message
        } else {
            "internal error".to_owned()
        };
        let mut status = tonic::Status::new(self.code.grpc(), message);
        if let Ok(v) = self.code.as_str().parse() {
            status.metadata_mut().insert(CODE_METADATA_KEY, v);
        }
        if !self.details.is_empty()
            && let Ok(json) = serde_json::to_string(&self.details)
            && let Ok(v) = json.parse()
        {
            status.metadata_mut().insert("x-cognition-error-details", v);
        }
        status
    }

    /// Recovers the error from a gRPC status, using the code metadata when present.
    pub fn from_status(status: &tonic::Status) -> Self {
        let code = status
            .metadata()
            .get(CODE_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(Code::parse)
            .unwrap_or_else(|| Code::from_grpc(status.code()));
        let details = status
            .metadata()
            .get("x-cognition-error-details")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        let message = if status.code() == tonic::Code::Unavailable && code == Code::Unavailable {
            "upstream service unavailable".to_owned()
        } else if status.message().is_empty() {
            format!(
                "{} (no message from upstream)",
                code.as_str().to_ascii_lowercase().replace('_', " ")
            )
        } else {
            status.message().to_owned()
        };
        Self {
            code,
            message,
            details,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.into_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Code] = &[
        Code::NotFound,
        Code::SessionNotFound,
        Code::PermissionDenied,
        Code::ValidationError,
        Code::RateLimited,
        Code::Conflict,
        Code::Unauthenticated,
        Code::LlmUnavailable,
        Code::ToolExecutionError,
        Code::StreamingError,
        Code::InternalError,
        Code::Aborted,
        Code::Unavailable,
        Code::PayloadTooLarge,
        Code::NotImplemented,
    ];

    #[test]
    fn all_codes_have_a_row() {
        for c in ALL {
            assert!(
                TABLE.iter().any(|r| r.code == *c),
                "{c:?} missing from TABLE"
            );
        }
        assert_eq!(TABLE.len(), ALL.len());
    }

    #[test]
    fn contract_statuses() {
        assert_eq!(Code::SessionNotFound.http_status(), 404);
        assert_eq!(Code::PermissionDenied.http_status(), 403);
        assert_eq!(Code::ValidationError.http_status(), 422);
        assert_eq!(Code::RateLimited.http_status(), 429);
        assert_eq!(Code::Conflict.http_status(), 409);
        assert_eq!(Code::Unauthenticated.http_status(), 401);
        assert_eq!(Code::LlmUnavailable.http_status(), 503);
        assert_eq!(Code::InternalError.http_status(), 500);
        assert_eq!(Code::NotImplemented.http_status(), 501);
    }

    #[test]
    fn round_trips_through_grpc_status() {
        for c in ALL {
            let e = ApiError::new(*c, "boom").with_detail("field", "title");
            let back = ApiError::from_status(&e.clone().into_status());
            assert_eq!(back.code, *c);
            assert_eq!(
                back.details.get("field").and_then(|v| v.as_str()),
                Some("title")
            );
            assert_eq!(Code::parse(c.as_str()), Some(*c));
        }
    }

    #[test]
    fn internal_messages_do_not_leak() {
        let e = ApiError::internal("db password=hunter2 rejected");
        assert_eq!(e.body().error, "internal error");
        assert_eq!(e.into_status().message(), "internal error");
    }

    #[test]
    fn bare_grpc_status_maps_by_code() {
        let s = tonic::Status::not_found("x");
        assert_eq!(ApiError::from_status(&s).code, Code::NotFound);
        let s = tonic::Status::unavailable("connection refused");
        let e = ApiError::from_status(&s);
        assert_eq!(e.code, Code::Unavailable);
        assert_eq!(e.message, "upstream service unavailable");
    }
}
