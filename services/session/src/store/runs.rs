//! Agent runs as stored: a run is one turn of a session, `queued` or `running` while active,
//! then terminal. The running run is owned by one replica through a lease that its owner
//! renews; see `crate::run` for the life cycle.

use std::fmt;
use std::pin::Pin;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use futures::Stream;
use uuid::Uuid;

use crate::domain::UnknownVariant;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    /// Waiting for the session's running run to end (`on_busy=enqueue`).
    Queued,
    /// Owned by a replica, which runs the agent loop.
    Running,
    /// Ended with a final answer.
    Completed,
    /// Ended with an error (model unavailable, recursion limit, …).
    Failed,
    /// Aborted on request.
    Cancelled,
    /// Its replica stopped (crash or shutdown); closed by recovery.
    Interrupted,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Interrupted => "interrupted",
        }
    }

    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Running)
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunState {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => RunState::Queued,
            "running" => RunState::Running,
            "completed" => RunState::Completed,
            "failed" => RunState::Failed,
            "cancelled" => RunState::Cancelled,
            "interrupted" => RunState::Interrupted,
            other => {
                return Err(UnknownVariant {
                    kind: "run status",
                    value: other.to_owned(),
                });
            }
        })
    }
}

/// One stored run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: Uuid,
    pub session_id: Uuid,
    pub state: RunState,
    /// The user message as sent.
    pub content: String,
    /// Model override of this message.
    pub model: Option<String>,
    pub parent_id: Option<Uuid>,
    pub callback_url: Option<String>,
    /// The stored user message, once the run has started.
    pub user_message_id: Option<Uuid>,
    /// Replica that holds (or last held) the lease.
    pub owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What a caller provides to create a run.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub session_id: Uuid,
    pub content: String,
    pub model: Option<String>,
    pub parent_id: Option<Uuid>,
    pub callback_url: Option<String>,
}

impl NewRun {
    /// The full run in `state`, with a new id, created now.
    pub fn into_run(self, state: RunState) -> Run {
        Run {
            id: Uuid::now_v7(),
            session_id: self.session_id,
            state,
            content: self.content,
            model: self.model,
            parent_id: self.parent_id,
            callback_url: self.callback_url,
            user_message_id: None,
            owner: None,
            lease_expires_at: None,
            heartbeat_at: None,
            cancel_requested: false,
            error: None,
            created_at: crate::domain::now(),
            started_at: None,
            finished_at: None,
        }
    }
}

/// A lease: who owns a run and until when (renewed by heartbeats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub until: DateTime<Utc>,
}

/// The lease state of one running run, as seen by its owner's heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRenewal {
    pub run_id: Uuid,
    pub cancel_requested: bool,
}

/// Something another replica did that this one may care about (PostgreSQL LISTEN/NOTIFY).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// Events `first..=last` were appended to a session's log by another replica.
    Event {
        session_id: Uuid,
        first: u64,
        last: u64,
    },
    /// Someone asked to cancel a run.
    CancelRequested { run_id: Uuid },
    /// The notification connection was re-established: anything may have been missed.
    Resync,
}

/// Notifications from other replicas, for as long as the store is open.
pub type Notifications = Pin<Box<dyn Stream<Item = Notification> + Send>>;

/// PostgreSQL channel of event notifications (payload `<origin> <session_id> <first_seq>
/// <last_seq>`, or `<origin> <session_id> <seq>` for one event).
pub const EVENTS_CHANNEL: &str = "cognition_events";
/// PostgreSQL channel of cancel requests (payload `<run_id>`).
pub const RUNS_CHANNEL: &str = "cognition_runs";

/// Parses an [`EVENTS_CHANNEL`] payload; `None` when malformed or sent by `own_origin`.
pub fn parse_event_payload(payload: &str, own_origin: &str) -> Option<Notification> {
    let mut parts = payload.split(' ');
    let (origin, session, first) = (parts.next()?, parts.next()?, parts.next()?);
    let last = parts.next().unwrap_or(first);
    if origin == own_origin || parts.next().is_some() {
        return None;
    }
    let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some(Notification::Event {
        session_id: Uuid::parse_str(session).ok()?,
        first,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in [
            RunState::Queued,
            RunState::Running,
            RunState::Completed,
            RunState::Failed,
            RunState::Cancelled,
            RunState::Interrupted,
        ] {
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), s);
        }
        assert!("nope".parse::<RunState>().is_err());
        assert!(!RunState::Queued.is_terminal());
        assert!(RunState::Interrupted.is_terminal());
    }

    #[test]
    fn event_payloads_from_others_parse() {
        let id = Uuid::new_v4();
        assert_eq!(
            parse_event_payload(&format!("b {id} 7"), "a"),
            Some(Notification::Event {
                session_id: id,
                first: 7,
                last: 7
            })
        );
        assert_eq!(
            parse_event_payload(&format!("b {id} 3 9"), "a"),
            Some(Notification::Event {
                session_id: id,
                first: 3,
                last: 9
            })
        );
        assert_eq!(parse_event_payload(&format!("b {id} 9 3"), "a"), None);
        assert_eq!(parse_event_payload(&format!("a {id} 7"), "a"), None);
        assert_eq!(parse_event_payload("b x 7", "a"), None);
        assert_eq!(parse_event_payload(&format!("b {id}"), "a"), None);
    }
}
