//! Cleanup of a session's sandboxes on the executor when the session is deleted.
//!
//! The executor is the source of truth for sandboxes: they carry the label
//! `cognition.io/session=<id>`. Deleting a session lists the sandboxes with that label and
//! deletes each. The executor may be down: failures are logged and never fail the delete (the
//! executor reaps unrenewed sandboxes by TTL anyway).

use std::time::Duration;

use cognition_proto::executor::v1::executor_service_client::ExecutorServiceClient;
use cognition_proto::executor::v1::{DeleteSandboxRequest, ListSandboxesRequest};
use cognition_telemetry::grpc::{InjectTraceContext, TracedChannel};
use tonic::transport::Endpoint;
use uuid::Uuid;

/// Label that ties a sandbox to its session.
pub const SESSION_LABEL: &str = "cognition.io/session";

/// Bound on connecting to the executor.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one executor call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the whole cleanup of one session.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Deletes sandboxes of deleted sessions; does nothing without an executor.
#[derive(Debug, Clone)]
pub struct SandboxCleaner {
    client: Option<ExecutorServiceClient<TracedChannel>>,
}

/// The executor URL is not a valid gRPC endpoint.
#[derive(Debug, thiserror::Error)]
#[error("invalid executor URL {url:?}: {source}")]
pub struct InvalidExecutorUrl {
    pub url: String,
    #[source]
    pub source: tonic::transport::Error,
}

impl SandboxCleaner {
    /// A cleaner for the executor at `url` (`None`: no executor). Connects lazily, on first
    /// use; must be called inside a Tokio runtime.
    pub fn new(url: Option<&str>) -> Result<Self, InvalidExecutorUrl> {
        let Some(url) = url else {
            return Ok(Self { client: None });
        };
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|source| InvalidExecutorUrl {
                url: url.to_owned(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        let channel = endpoint.connect_lazy();
        Ok(Self {
            client: Some(ExecutorServiceClient::with_interceptor(
                channel,
                InjectTraceContext,
            )),
        })
    }

    /// Whether an executor is configured.
    pub fn is_enabled(&self) -> bool {
        self.client.is_some()
    }

    /// Deletes every sandbox labelled with `session_id`; returns how many were deleted.
    /// Errors are logged, never returned.
    pub async fn delete_for_session(&self, session_id: Uuid) -> usize {
        let Some(client) = &self.client else { return 0 };
        match tokio::time::timeout(CLEANUP_TIMEOUT, cleanup(client.clone(), session_id)).await {
            Ok(deleted) => deleted,
            Err(_) => {
                tracing::warn!(%session_id, "sandbox cleanup timed out; the executor's TTL reaps the rest");
                0
            }
        }
    }
}

async fn cleanup(mut client: ExecutorServiceClient<TracedChannel>, session_id: Uuid) -> usize {
    let selector = [(SESSION_LABEL.to_owned(), session_id.to_string())]
        .into_iter()
        .collect();
    let sandboxes = match client
        .list_sandboxes(ListSandboxesRequest {
            label_selector: selector,
        })
        .await
    {
        Ok(response) => response.into_inner().sandboxes,
        Err(status) => {
            tracing::warn!(%session_id, code = ?status.code(), error = %status.message(),
                "listing the session's sandboxes failed; the executor's TTL reaps them");
            return 0;
        }
    };
    let mut deleted = 0;
    for sandbox in sandboxes {
        let request = DeleteSandboxRequest {
            sandbox_id: sandbox.id.clone(),
        };
        match client.delete_sandbox(request).await {
            Ok(_) => deleted += 1,
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => tracing::warn!(%session_id, sandbox_id = %sandbox.id,
                code = ?status.code(), error = %status.message(), "deleting a sandbox failed"),
        }
    }
    tracing::debug!(%session_id, deleted, "deleted the session's sandboxes");
    deleted
}
