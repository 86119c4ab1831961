//! What can go wrong talking to the executors, and how a failed call is told apart: the
//! executor answering "no" (a refusal, the sandbox is fine) versus the replica being gone (a
//! transport failure: the replica is marked down and the sandbox it held is lost).

/// An infrastructure failure talking to the executors. Program failures (exit codes, refused
/// paths) are results, never this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutorError {
    #[error(
        "no executor is configured (COGNITION_EXECUTOR_URL and COGNITION_EXECUTOR_URLS are \
         unset), so this tool cannot run"
    )]
    NotConfigured,
    #[error("the executor refused: {0}")]
    Refused(String),
    #[error("the executor is unreachable: {0}")]
    Unreachable(String),
    #[error("the executor did not answer in time")]
    Timeout,
    /// The replica holding the session's sandbox stopped answering. The model reads this, so
    /// it says what happened and what comes next, and names no internal address.
    #[error(
        "the sandbox's executor became unreachable while running the command; the sandbox is \
         lost — the next command starts in a fresh sandbox"
    )]
    LostWhileRunning,
    #[error(
        "the sandbox's executor is unreachable; the sandbox is lost — the next tool call \
         starts in a fresh sandbox"
    )]
    Lost,
}

impl From<tonic::Status> for ExecutorError {
    fn from(status: tonic::Status) -> Self {
        match status.code() {
            _ if is_transport_failure(&status) => {
                ExecutorError::Unreachable(status.message().to_owned())
            }
            tonic::Code::DeadlineExceeded => ExecutorError::Timeout,
            _ => ExecutorError::Refused(status.message().to_owned()),
        }
    }
}

/// An executor URL is not a valid gRPC endpoint.
#[derive(Debug, thiserror::Error)]
#[error("invalid executor URL {url:?}: {source}")]
pub struct InvalidExecutorUrl {
    pub url: String,
    #[source]
    pub source: tonic::transport::Error,
}

/// Whether `status` says the replica is gone rather than that it answered with an error.
///
/// `UNAVAILABLE` always counts (refused connection, or an executor draining). Otherwise a
/// status that the client's own transport produced carries the transport error as its source
/// (a reset connection, a stream cut mid-way: `UNKNOWN`, `INTERNAL` or `CANCELLED` with a
/// hyper/h2/io source); a status the executor sent over the wire never has one.
pub fn is_transport_failure(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    match status.code() {
        tonic::Code::Unavailable => true,
        tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled => {
            status.source().is_some()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_sent_by_the_executor_are_refusals() {
        for code in [
            tonic::Code::Internal,
            tonic::Code::Unknown,
            tonic::Code::NotFound,
            tonic::Code::ResourceExhausted,
        ] {
            let status = tonic::Status::new(code, "no");
            assert!(!is_transport_failure(&status), "{code:?}");
            assert_eq!(
                ExecutorError::from(status),
                ExecutorError::Refused("no".into())
            );
        }
    }

    #[test]
    fn unavailable_and_transport_sourced_statuses_mean_the_replica_is_gone() {
        assert!(is_transport_failure(&tonic::Status::unavailable("down")));
        let mut cut = tonic::Status::unknown("error reading a body from connection");
        cut.set_source(std::sync::Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(is_transport_failure(&cut));
        assert!(matches!(
            ExecutorError::from(cut),
            ExecutorError::Unreachable(_)
        ));
    }

    #[test]
    fn loss_messages_say_what_comes_next() {
        let text = ExecutorError::LostWhileRunning.to_string();
        assert!(text.contains("became unreachable while running the command"));
        assert!(text.contains("the next command starts in a fresh sandbox"));
    }
}
