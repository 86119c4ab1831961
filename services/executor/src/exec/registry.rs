//! The execs of one sandbox, keyed by their client-chosen id.
//!
//! A repeated start with the same id and spec returns the existing exec (the caller attaches);
//! with another spec it is refused. Finished execs stay for a retention period so that late
//! attach / Get / Wait calls still find them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::handle::Exec;
use super::spec::{ExecSpec, ExitReason};
use crate::error::Error;
use crate::ids::{ExecId, SandboxId};

/// Finished execs kept per sandbox at most, however recent.
pub const MAX_FINISHED_PER_SANDBOX: usize = 1024;
/// Output of finished execs kept in memory per sandbox at most.
pub const MAX_RETAINED_BYTES_PER_SANDBOX: u64 = 256 * 1024 * 1024;

/// The outcome of [`ExecRegistry::begin`].
#[derive(Debug)]
pub enum Begin {
    /// A new exec: the caller must start its process.
    New(Arc<Exec>),
    /// The same exec id and spec already exist: attach to it.
    Existing(Arc<Exec>),
}

#[derive(Debug)]
pub struct ExecRegistry {
    sandbox_id: SandboxId,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    execs: HashMap<ExecId, Arc<Exec>>,
    closed: bool,
}

impl ExecRegistry {
    pub fn new(sandbox_id: SandboxId) -> Self {
        Self {
            sandbox_id,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new exec, or finds the existing one with the same id.
    pub fn begin(
        &self,
        id: ExecId,
        spec: ExecSpec,
        max_running: usize,
        budgets: (u64, u64),
    ) -> Result<Begin, Error> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(Error::SandboxNotReady {
                id: self.sandbox_id.clone(),
                state: crate::sandbox::SandboxState::Terminating,
            });
        }
        if let Some(existing) = inner.execs.get(&id) {
            if existing.spec() == &spec {
                return Ok(Begin::Existing(existing.clone()));
            }
            return Err(Error::ExecConflict(id));
        }
        let running = inner.execs.values().filter(|e| !e.is_finished()).count();
        if running >= max_running {
            return Err(Error::TooManyExecs {
                sandbox_id: self.sandbox_id.clone(),
                limit: max_running,
            });
        }
        let exec = Exec::new(
            self.sandbox_id.clone(),
            id.clone(),
            spec,
            budgets.0,
            budgets.1,
        );
        inner.execs.insert(id, exec.clone());
        Ok(Begin::New(exec))
    }

    /// Forgets an exec whose process could not be started for infrastructure reasons.
    pub fn remove(&self, id: &ExecId) {
        self.lock().execs.remove(id);
    }

    pub fn get(&self, id: &ExecId) -> Option<Arc<Exec>> {
        self.lock().execs.get(id).cloned()
    }

    /// Execs ordered by start time.
    pub fn list(&self, include_finished: bool) -> Vec<Arc<Exec>> {
        let mut execs: Vec<Arc<Exec>> = self
            .lock()
            .execs
            .values()
            .filter(|e| include_finished || !e.is_finished())
            .cloned()
            .collect();
        execs.sort_by_key(|e| (e.snapshot().started_at, e.id().clone()));
        execs
    }

    /// Refuses new execs from now on and asks every running one to die; returns them all.
    pub fn close_and_kill(&self, reason: ExitReason) -> Vec<Arc<Exec>> {
        let execs: Vec<Arc<Exec>> = {
            let mut inner = self.lock();
            inner.closed = true;
            inner.execs.values().cloned().collect()
        };
        for exec in &execs {
            exec.request_kill(reason);
        }
        execs
    }

    /// Drops finished execs that nobody is attached to when they are older than `retention`,
    /// or beyond the newest [`MAX_FINISHED_PER_SANDBOX`], or beyond
    /// [`MAX_RETAINED_BYTES_PER_SANDBOX`] of output (newest kept first).
    pub fn prune(&self, retention: Duration) {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut finished: Vec<(Instant, ExecId, u64)> = inner
            .execs
            .values()
            .filter(|e| e.attached_readers() == 0)
            .filter_map(|e| {
                e.finished_at()
                    .map(|at| (at, e.id().clone(), e.retained_bytes()))
            })
            .collect();
        finished.sort_by_key(|f| std::cmp::Reverse(f.0));
        let mut bytes = 0u64;
        for (count, (at, id, size)) in finished.into_iter().enumerate() {
            bytes += size;
            if now.duration_since(at) >= retention
                || count >= MAX_FINISHED_PER_SANDBOX
                || bytes > MAX_RETAINED_BYTES_PER_SANDBOX
            {
                inner.execs.remove(&id);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lock().execs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::spec::Command;
    use crate::process::{SpawnFailed, SpawnFailure};

    fn spec(cmd: &str) -> ExecSpec {
        ExecSpec::new(Command::Shell(cmd.into()))
    }

    fn id(s: &str) -> ExecId {
        ExecId::parse(s).unwrap()
    }

    #[test]
    fn idempotent_start_conflicts_and_cap() {
        let r = ExecRegistry::new(SandboxId::parse("s").unwrap());
        let Ok(Begin::New(first)) = r.begin(id("a"), spec("true"), 1, (10, 10)) else {
            panic!("new")
        };
        let Ok(Begin::Existing(again)) = r.begin(id("a"), spec("true"), 1, (10, 10)) else {
            panic!("existing")
        };
        assert!(Arc::ptr_eq(&first, &again));
        assert!(matches!(
            r.begin(id("a"), spec("false"), 1, (10, 10)),
            Err(Error::ExecConflict(_))
        ));
        assert!(matches!(
            r.begin(id("b"), spec("true"), 1, (10, 10)),
            Err(Error::TooManyExecs { limit: 1, .. })
        ));
        first.fail(SpawnFailed::new(SpawnFailure::Other, "x"));
        assert!(matches!(
            r.begin(id("b"), spec("true"), 1, (10, 10)),
            Ok(Begin::New(_))
        ));
        assert_eq!(r.list(true).len(), 2);
        assert_eq!(r.list(false).len(), 1);
        r.close_and_kill(ExitReason::SandboxTerminated);
        assert!(matches!(
            r.begin(id("c"), spec("true"), 9, (10, 10)),
            Err(Error::SandboxNotReady { .. })
        ));
    }

    #[test]
    fn prune_keeps_running_and_attached_execs() {
        let r = ExecRegistry::new(SandboxId::parse("s").unwrap());
        let Ok(Begin::New(done)) = r.begin(id("done"), spec("true"), 9, (10, 10)) else {
            panic!()
        };
        let Ok(Begin::New(watched)) = r.begin(id("watched"), spec("true"), 9, (10, 10)) else {
            panic!()
        };
        let Ok(Begin::New(_running)) = r.begin(id("running"), spec("true"), 9, (10, 10)) else {
            panic!()
        };
        done.fail(SpawnFailed::new(SpawnFailure::Other, "x"));
        watched.fail(SpawnFailed::new(SpawnFailure::Other, "x"));
        let sub = watched.subscribe([0, 0], true);
        r.prune(Duration::from_secs(3600));
        assert_eq!(r.list(true).len(), 3, "recent execs stay");
        r.prune(Duration::ZERO);
        let mut left: Vec<String> = r.list(true).iter().map(|e| e.id().to_string()).collect();
        left.sort();
        assert_eq!(left, vec!["running", "watched"]);
        drop(sub);
        r.prune(Duration::ZERO);
        assert_eq!(r.list(true).len(), 1);
    }
}
