//! The sandbox lifecycle as an explicit state machine.
//!
//! ```text
//!   Pending ──► Ready ──► Terminating ──► Terminated
//!      │          │            │
//!      └──────────┴──► Failed ◄┘      Failed ──► Terminating (delete a failed sandbox)
//! ```
//!
//! Every transition goes through [`SandboxState::transition`], which refuses the others and logs
//! the ones it allows.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::SandboxId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Pending,
    Ready,
    Terminating,
    Terminated,
    Failed,
}

pub const ALL_STATES: [SandboxState; 5] = [
    SandboxState::Pending,
    SandboxState::Ready,
    SandboxState::Terminating,
    SandboxState::Terminated,
    SandboxState::Failed,
];

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sandbox {id}: transition {from} → {to} is not allowed")]
pub struct InvalidTransition {
    pub id: SandboxId,
    pub from: SandboxState,
    pub to: SandboxState,
}

impl SandboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Pending => "pending",
            SandboxState::Ready => "ready",
            SandboxState::Terminating => "terminating",
            SandboxState::Terminated => "terminated",
            SandboxState::Failed => "failed",
        }
    }

    /// Whether `self → to` is a legal transition.
    pub fn can_become(self, to: SandboxState) -> bool {
        use SandboxState::*;
        matches!(
            (self, to),
            (Pending, Ready)
                | (Pending, Failed)
                | (Pending, Terminating)
                | (Ready, Terminating)
                | (Ready, Failed)
                | (Terminating, Terminated)
                | (Terminating, Failed)
                | (Failed, Terminating)
        )
    }

    /// Moves `self` to `to` if allowed, logging the transition.
    pub fn transition(
        &mut self,
        id: &SandboxId,
        to: SandboxState,
    ) -> Result<(), InvalidTransition> {
        if !self.can_become(to) {
            tracing::warn!(sandbox_id = %id, from = %self, to = %to, "refused sandbox state transition");
            return Err(InvalidTransition {
                id: id.clone(),
                from: *self,
                to,
            });
        }
        tracing::info!(sandbox_id = %id, from = %self, to = %to, "sandbox state");
        *self = to;
        Ok(())
    }

    /// Whether processes may be started.
    pub fn accepts_execs(self) -> bool {
        self == SandboxState::Ready
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::SandboxState::*;
    use super::*;

    #[test]
    fn allowed_and_forbidden_transitions() {
        let id = SandboxId::parse("s").unwrap();
        let allowed = [
            (Pending, Ready),
            (Pending, Failed),
            (Pending, Terminating),
            (Ready, Terminating),
            (Ready, Failed),
            (Terminating, Terminated),
            (Terminating, Failed),
            (Failed, Terminating),
        ];
        for from in ALL_STATES {
            for to in ALL_STATES {
                let mut s = from;
                let result = s.transition(&id, to);
                if allowed.contains(&(from, to)) {
                    assert!(result.is_ok(), "{from} → {to} should be allowed");
                    assert_eq!(s, to);
                } else {
                    assert_eq!(
                        result,
                        Err(InvalidTransition {
                            id: id.clone(),
                            from,
                            to
                        })
                    );
                    assert_eq!(s, from, "a refused transition must not change the state");
                }
            }
        }
    }

    #[test]
    fn terminated_is_final() {
        assert!(ALL_STATES.iter().all(|to| !Terminated.can_become(*to)));
    }

    #[test]
    fn full_lifecycle() {
        let id = SandboxId::parse("s").unwrap();
        let mut s = Pending;
        for to in [Ready, Terminating, Terminated] {
            s.transition(&id, to).unwrap();
        }
        assert!(!s.accepts_execs());
        assert!(Ready.accepts_execs());
    }
}
