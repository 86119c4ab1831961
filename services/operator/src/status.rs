//! The CognitionTenant's status: one `Ready` condition and the observed generation, computed
//! from the outcome of a reconcile and written only when it differs from what is stored.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{CognitionTenant, CognitionTenantStatus};

/// The condition type the operator maintains.
pub const READY: &str = "Ready";

/// Why a tenant is or is not ready; the reason is the condition's machine-readable `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Readiness {
    pub fn ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ready: true,
            reason,
            message: message.into(),
        }
    }

    pub fn not_ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            reason,
            message: message.into(),
        }
    }
}

/// The status `tenant` should have. The `Ready` condition keeps its `lastTransitionTime` while
/// its status (True/False) does not change, so an unchanged outcome yields an equal status.
pub fn desired(
    tenant: &CognitionTenant,
    readiness: &Readiness,
    now: Time,
) -> CognitionTenantStatus {
    let status = if readiness.ready { "True" } else { "False" };
    let generation = tenant.metadata.generation;
    let previous = tenant
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
    let last_transition_time = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now,
    };
    let ready = Condition {
        type_: READY.into(),
        status: status.into(),
        reason: readiness.reason.into(),
        message: readiness.message.clone(),
        observed_generation: generation,
        last_transition_time,
    };
    let mut conditions: Vec<Condition> = tenant
        .status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .filter(|c| c.type_ != READY)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    conditions.insert(0, ready);
    CognitionTenantStatus {
        conditions,
        observed_generation: generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::tests::acme;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_flips() {
        let mut tenant = acme();
        tenant.metadata.generation = Some(3);
        let first = desired(&tenant, &Readiness::ready("Provisioned", "ok"), at(100));
        assert_eq!(first.observed_generation, Some(3));
        assert_eq!(first.conditions[0].last_transition_time, at(100));
        assert_eq!(first.conditions[0].observed_generation, Some(3));
        tenant.status = Some(first.clone());

        let same = desired(&tenant, &Readiness::ready("Provisioned", "ok"), at(200));
        assert_eq!(
            same, first,
            "an unchanged outcome must give an equal status"
        );

        let failed = desired(
            &tenant,
            &Readiness::not_ready("ApplyFailed", "boom"),
            at(300),
        );
        assert_eq!(failed.conditions[0].status, "False");
        assert_eq!(failed.conditions[0].reason, "ApplyFailed");
        assert_eq!(failed.conditions[0].last_transition_time, at(300));
        assert_eq!(failed.conditions.len(), 1);
    }
}
