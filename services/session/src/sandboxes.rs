//! Cleanup of a session's sandboxes on the executors when the session is deleted.
//!
//! The executors are the source of truth for sandboxes: they carry the label
//! `cognition.io/session=<id>`. Deleting a session asks every replica of the pool (up or
//! marked down alike, in parallel) for the sandboxes with that label and deletes each — a
//! session may have left a sandbox on a replica it later lost. Replicas may be down: failures
//! are logged and never fail the delete (executors reap unrenewed sandboxes by TTL anyway).
//! The calls act for the deleting caller's scope (see `executor_pool::scope`), so the executor
//! lists and deletes only sandboxes of that scope.

use std::time::Duration;

use cognition_proto::executor::v1::{DeleteSandboxRequest, ListSandboxesRequest};
use cognition_proto::scope::Scope;
use uuid::Uuid;

pub use crate::executor_pool::InvalidExecutorUrl;
use crate::executor_pool::{ExecutorPool, ReplicaId};

/// Label that ties a sandbox to its session.
pub const SESSION_LABEL: &str = "cognition.io/session";

/// Bound on one executor call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the whole cleanup of one session.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Deletes sandboxes of deleted sessions; does nothing without an executor.
#[derive(Debug, Clone)]
pub struct SandboxCleaner {
    pool: ExecutorPool,
}

impl SandboxCleaner {
    /// A cleaner for the replicas of `pool`.
    pub fn new(pool: ExecutorPool) -> Self {
        Self { pool }
    }

    /// Whether an executor is configured.
    pub fn is_enabled(&self) -> bool {
        self.pool.is_configured()
    }

    /// Deletes every sandbox labelled with `session_id` on every replica, acting for `scope`
    /// (the scope the session was deleted in); returns how many were deleted. Errors are
    /// logged, never returned.
    pub async fn delete_for_session(&self, session_id: Uuid, scope: &Scope) -> usize {
        if !self.is_enabled() {
            return 0;
        }
        self.pool.forget(&session_id.to_string());
        let everywhere = futures::future::join_all(
            self.pool
                .replicas()
                .map(|replica| cleanup(&self.pool, replica, session_id, scope)),
        );
        match tokio::time::timeout(CLEANUP_TIMEOUT, everywhere).await {
            Ok(deleted) => {
                let deleted = deleted.into_iter().sum();
                tracing::debug!(%session_id, deleted, "deleted the session's sandboxes");
                deleted
            }
            Err(_) => {
                tracing::warn!(%session_id, "sandbox cleanup timed out; the executors' TTL reaps the rest");
                0
            }
        }
    }
}

async fn cleanup(
    pool: &ExecutorPool,
    replica: ReplicaId,
    session_id: Uuid,
    scope: &Scope,
) -> usize {
    let executor = pool.url(replica);
    let mut client = pool.client_for(replica, scope);
    let selector = [(SESSION_LABEL.to_owned(), session_id.to_string())]
        .into_iter()
        .collect();
    let listed = tokio::time::timeout(
        CALL_TIMEOUT,
        client.list_sandboxes(ListSandboxesRequest {
            label_selector: selector,
        }),
    )
    .await;
    let sandboxes = match listed {
        Ok(Ok(response)) => response.into_inner().sandboxes,
        Ok(Err(status)) => {
            tracing::warn!(%session_id, %executor, code = ?status.code(), error = %status.message(),
                "listing the session's sandboxes failed; the executor's TTL reaps them");
            return 0;
        }
        Err(_) => {
            tracing::warn!(%session_id, %executor,
                "listing the session's sandboxes timed out; the executor's TTL reaps them");
            return 0;
        }
    };
    let mut deleted = 0;
    for sandbox in sandboxes {
        let request = DeleteSandboxRequest {
            sandbox_id: sandbox.id.clone(),
        };
        match tokio::time::timeout(CALL_TIMEOUT, client.delete_sandbox(request)).await {
            Ok(Ok(_)) => deleted += 1,
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => {}
            Ok(Err(status)) => tracing::warn!(%session_id, %executor, sandbox_id = %sandbox.id,
                code = ?status.code(), error = %status.message(), "deleting a sandbox failed"),
            Err(_) => tracing::warn!(%session_id, %executor, sandbox_id = %sandbox.id,
                "deleting a sandbox timed out"),
        }
    }
    deleted
}
