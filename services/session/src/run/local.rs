//! The runs this replica is executing: a cancel token per run and why it was cancelled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Why a local run is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// AbortSession (here or on another replica), or `on_busy=interrupt`.
    Abort,
    /// This replica is shutting down.
    Shutdown,
    /// Another replica took the run over (our lease expired), or the session was deleted:
    /// stop without writing.
    LeaseLost,
}

/// The handle an executing run watches.
#[derive(Debug, Clone)]
pub struct RunHandle {
    pub token: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
}

impl RunHandle {
    /// Why the run was stopped (`None`: it was not).
    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct Entry {
    session_id: Uuid,
    handle: RunHandle,
    registered: Instant,
}

/// Local runs by id.
#[derive(Debug, Default)]
pub struct Registry {
    runs: Mutex<HashMap<Uuid, Entry>>,
}

impl Registry {
    pub fn register(&self, run_id: Uuid, session_id: Uuid) -> RunHandle {
        let handle = RunHandle {
            token: CancellationToken::new(),
            reason: Arc::default(),
        };
        self.lock().insert(
            run_id,
            Entry {
                session_id,
                handle: handle.clone(),
                registered: Instant::now(),
            },
        );
        handle
    }

    pub fn remove(&self, run_id: Uuid) {
        self.lock().remove(&run_id);
    }

    /// Stops a local run; `false` when it is not running here. The first reason sticks.
    pub fn stop(&self, run_id: Uuid, reason: StopReason) -> bool {
        let runs = self.lock();
        let Some(entry) = runs.get(&run_id) else {
            return false;
        };
        let mut current = entry
            .handle
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if current.is_none() {
            *current = Some(reason);
        }
        entry.handle.token.cancel();
        true
    }

    /// Stops every local run.
    pub fn stop_all(&self, reason: StopReason) {
        let ids: Vec<Uuid> = self.lock().keys().copied().collect();
        for id in ids {
            self.stop(id, reason);
        }
    }

    /// Ids of local runs registered before `before` (those a lease renewal started at
    /// `before` must have seen).
    pub fn ids_registered_before(&self, before: Instant) -> Vec<Uuid> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.registered < before)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Ids of every local run.
    pub fn ids(&self) -> Vec<Uuid> {
        self.lock().keys().copied().collect()
    }

    /// Whether `run_id` is executing here.
    pub fn contains(&self, run_id: Uuid) -> bool {
        self.lock().contains_key(&run_id)
    }

    /// The local run of `session_id`, if any.
    pub fn run_of_session(&self, session_id: Uuid) -> Option<Uuid> {
        self.lock()
            .iter()
            .find(|(_, e)| e.session_id == session_id)
            .map(|(id, _)| *id)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_stop_reason_sticks() {
        let registry = Registry::default();
        let (run, session) = (Uuid::new_v4(), Uuid::new_v4());
        let handle = registry.register(run, session);
        assert_eq!(registry.run_of_session(session), Some(run));
        assert!(registry.stop(run, StopReason::Abort));
        assert!(registry.stop(run, StopReason::Shutdown));
        assert!(handle.token.is_cancelled());
        assert_eq!(handle.stop_reason(), Some(StopReason::Abort));
        registry.remove(run);
        assert!(!registry.stop(run, StopReason::Abort));
        assert!(registry.is_empty());
    }
}
