//! The executor's error type and its mapping onto the shared code table.
//!
//! Program failures inside an exec are results (`spawn_failed` / `exited`), never errors; this
//! type is for infrastructure problems and file operations. Everything leaves the service through
//! [`Error::into_status`], which goes through `cognition_errors::ApiError`.

use cognition_errors::{ApiError, Code};

use crate::files::FileError;
use crate::ids::{ExecId, SandboxId};
use crate::paths::PathError;
use crate::sandbox::SandboxState;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    /// The backend cannot serve the request as configured (a missing sandbox image, a backend
    /// that is down); the message is for the operator and the caller alike.
    #[error("{0}")]
    Unavailable(String),
    #[error("sandbox {0} not found")]
    SandboxNotFound(SandboxId),
    #[error("sandbox {id} is {state}, not ready")]
    SandboxNotReady { id: SandboxId, state: SandboxState },
    #[error("exec {exec_id} not found in sandbox {sandbox_id}")]
    ExecNotFound {
        sandbox_id: SandboxId,
        exec_id: ExecId,
    },
    #[error("exec {0} already exists with a different spec; choose another exec id")]
    ExecConflict(ExecId),
    /// The caller's scope does not cover the sandbox (see `grpc::tenancy`).
    #[error("{0}")]
    PermissionDenied(String),
    #[error("sandbox {sandbox_id} already runs {limit} execs (the per-sandbox limit)")]
    TooManyExecs { sandbox_id: SandboxId, limit: usize },
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("serving gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// The shared error (code, client message, details).
    pub fn to_api(&self) -> ApiError {
        let msg = self.to_string();
        match self {
            Error::Invalid(_) => ApiError::validation(msg),
            Error::Unavailable(_) => ApiError::new(Code::Unavailable, msg),
            Error::SandboxNotFound(id) => {
                ApiError::not_found(msg).with_detail("sandbox_id", id.as_str())
            }
            Error::SandboxNotReady { id, state } => ApiError::new(Code::Conflict, msg)
                .with_detail("sandbox_id", id.as_str())
                .with_detail("state", state.as_str()),
            Error::ExecNotFound { exec_id, .. } => {
                ApiError::not_found(msg).with_detail("exec_id", exec_id.as_str())
            }
            Error::ExecConflict(id) => {
                ApiError::new(Code::Conflict, msg).with_detail("exec_id", id.as_str())
            }
            Error::PermissionDenied(_) => ApiError::new(Code::PermissionDenied, msg),
            Error::TooManyExecs { limit, .. } => {
                ApiError::new(Code::RateLimited, msg).with_detail("limit", *limit as u64)
            }
            Error::Path(e) => e.to_api(),
            Error::File(e) => e.to_api(),
            Error::Io { .. } | Error::Transport(_) | Error::Internal(_) => ApiError::internal(msg),
        }
    }

    /// The gRPC status for this error (logged here when it is internal).
    pub fn into_status(self) -> tonic::Status {
        let api = self.to_api();
        if !api.code.is_client_safe() {
            tracing::error!(error = %self, "request failed");
        }
        // The code table has no FAILED_PRECONDITION row; keep its code (CONFLICT → 409 at the
        // gateway) but answer gRPC clients with the precise status.
        let precise = match &self {
            Error::SandboxNotReady { .. } => Some(tonic::Code::FailedPrecondition),
            _ => None,
        };
        let status = api.into_status();
        match precise {
            Some(code) => {
                tonic::Status::with_metadata(code, status.message(), status.metadata().clone())
            }
            None => status,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        e.into_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let id = SandboxId::parse("s1").unwrap();
        assert_eq!(
            Error::SandboxNotFound(id.clone()).into_status().code(),
            tonic::Code::NotFound
        );
        let s = Error::SandboxNotReady {
            id: id.clone(),
            state: SandboxState::Terminating,
        }
        .into_status();
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert_eq!(ApiError::from_status(&s).code, Code::Conflict);
        let s = Error::TooManyExecs {
            sandbox_id: id,
            limit: 2,
        }
        .into_status();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        let s = Error::PermissionDenied("sandbox s1 belongs to another scope".into()).into_status();
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert_eq!(s.message(), "sandbox s1 belongs to another scope");
        let s = Error::ExecConflict(ExecId::parse("e").unwrap()).into_status();
        assert_eq!(s.code(), tonic::Code::AlreadyExists);
        let s = Error::Internal("secret detail".into()).into_status();
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(!s.message().contains("secret"));
    }
}
