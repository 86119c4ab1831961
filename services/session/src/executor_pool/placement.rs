//! Where a sandbox without a known home goes: a survey of the live replicas (one
//! `ListSandboxes` each, in parallel, bounded) finds the replica that already holds it
//! (discovery, e.g. after this service restarted) and each replica's load; the candidates are
//! that holder first, then the others from least to most loaded, ties in random order.

use std::time::Duration;

use cognition_proto::executor::v1 as pb;
use prost_types::Timestamp;

use super::{ExecutorPool, ReplicaId, is_transport_failure};

/// Bound on one replica's answer to the survey.
const SURVEY_TIMEOUT: Duration = Duration::from_secs(5);

/// What one replica told the survey.
struct Report {
    replica: ReplicaId,
    /// Sandboxes it holds that are not on their way out, plus creations in flight from here.
    load: usize,
    /// When it created `sandbox_id`, if it holds it.
    holds_since: Option<Timestamp>,
}

/// The replicas to try for `sandbox_id`, best first. Replicas that are down (or fail the
/// survey with a transport error, which marks them down) are left out, unless no replica is
/// up: then every replica is tried as a last resort.
pub(super) async fn candidates(pool: &ExecutorPool, sandbox_id: &str) -> Vec<ReplicaId> {
    let live: Vec<ReplicaId> = pool.replicas().filter(|r| !pool.is_down(*r)).collect();
    let asked = if live.is_empty() {
        pool.replicas().collect()
    } else {
        live
    };
    let reports = futures::future::join_all(
        asked
            .iter()
            .map(|replica| survey(pool, *replica, sandbox_id)),
    )
    .await;
    let mut reports: Vec<Report> = reports.into_iter().flatten().collect();
    if reports.is_empty() {
        return shuffled(pool.replicas().collect());
    }
    // Newest holder first (an older copy may have come back with a restarted replica), then
    // the least loaded; the random key breaks ties.
    let mut keyed: Vec<(Report, u64)> = reports.drain(..).map(|r| (r, fastrand::u64(..))).collect();
    keyed.sort_by(|(a, ka), (b, kb)| {
        let newest = |r: &Report| r.holds_since.map(|t| (t.seconds, t.nanos));
        newest(b)
            .cmp(&newest(a))
            .then(a.load.cmp(&b.load))
            .then(ka.cmp(kb))
    });
    if let Some((first, _)) = keyed.first() {
        tracing::debug!(%sandbox_id, executor = %pool.url(first.replica), load = first.load,
            rediscovered = first.holds_since.is_some(), "placement survey");
    }
    keyed.into_iter().map(|(r, _)| r.replica).collect()
}

/// Asks `replica` for its sandboxes. `None` when it is gone (marked down) or timed out; a
/// replica that answers with an error stays a candidate with an unknown (maximal) load.
///
/// The survey is unscoped on purpose: the load is every tenant's sandboxes. It reads only
/// counts and whether `sandbox_id` exists; the creation that follows acts for the session's
/// scope, so the executor refuses a holder of another scope.
async fn survey(pool: &ExecutorPool, replica: ReplicaId, sandbox_id: &str) -> Option<Report> {
    let mut client = pool.client(replica);
    let listed = tokio::time::timeout(
        SURVEY_TIMEOUT,
        client.list_sandboxes(pb::ListSandboxesRequest::default()),
    )
    .await;
    let sandboxes = match listed {
        Err(_) => {
            pool.record_failure(
                replica,
                &tonic::Status::deadline_exceeded("ListSandboxes timed out"),
            );
            return None;
        }
        Ok(Err(status)) if is_transport_failure(&status) => {
            pool.record_failure(replica, &status);
            return None;
        }
        Ok(Err(status)) => {
            tracing::warn!(executor = %pool.url(replica), code = ?status.code(),
                error = %status.message(), "executor replica could not list its sandboxes");
            return Some(Report {
                replica,
                load: usize::MAX,
                holds_since: None,
            });
        }
        Ok(Ok(response)) => response.into_inner().sandboxes,
    };
    pool.record_success(replica);
    let live: Vec<&pb::Sandbox> = sandboxes.iter().filter(|s| counts_as_load(s)).collect();
    let holds_since = live
        .iter()
        .find(|s| s.id == sandbox_id)
        .map(|s| s.created_at.unwrap_or_default());
    Some(Report {
        replica,
        load: live.len() + pool.placing(replica),
        holds_since,
    })
}

/// Sandboxes on their way out neither count as load nor get rediscovered.
fn counts_as_load(sandbox: &pb::Sandbox) -> bool {
    !matches!(
        sandbox.state(),
        pb::SandboxState::Terminating | pb::SandboxState::Terminated | pb::SandboxState::Failed
    )
}

fn shuffled(mut replicas: Vec<ReplicaId>) -> Vec<ReplicaId> {
    fastrand::shuffle(&mut replicas);
    replicas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminating_sandboxes_are_not_load() {
        let with = |state: pb::SandboxState| pb::Sandbox {
            state: state as i32,
            ..Default::default()
        };
        assert!(counts_as_load(&with(pb::SandboxState::Ready)));
        assert!(counts_as_load(&with(pb::SandboxState::Pending)));
        assert!(!counts_as_load(&with(pb::SandboxState::Terminating)));
        assert!(!counts_as_load(&with(pb::SandboxState::Failed)));
    }
}
