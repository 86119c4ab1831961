//! The executor pool: one or more executor replicas behind this session service
//! (`COGNITION_EXECUTOR_URLS`, or `COGNITION_EXECUTOR_URL` as a pool of one).
//!
//! - **Channels**: one lazy gRPC channel per replica (connect timeout, HTTP/2 keepalive so a
//!   vanished host is noticed mid-stream, the `traceparent` interceptor).
//! - **Homes**: an in-memory map sandbox id (= session id) → the replica holding it. Every call
//!   on a sandbox goes to its home. On a miss (first tool call, or after this service
//!   restarted) the pool asks every live replica for its sandboxes (`ListSandboxes`): a replica
//!   that holds the sandbox becomes its home again ([`placement`]).
//! - **Placement**: a new sandbox goes to the least-loaded live replica, where load = the
//!   sandboxes the replica itself lists (not terminating, whoever created them, so several
//!   session-service replicas sharing the executors see the same numbers) plus the creations
//!   this pool has in flight there; ties are broken at random. A replica that cannot be
//!   reached at creation time is marked down and the next one is tried.
//! - **Failures**: a call that fails with a transport error (`UNAVAILABLE`, a cut stream) marks
//!   its replica down for a short back-off ([`health`]), and the sandbox it held is forgotten:
//!   the tool call reports the loss ([`ExecutorError::Lost`]) and the next call places a fresh
//!   sandbox on a live replica. Replicas that are down are skipped for placement and
//!   discovery unless no replica is up.
//! - **Scope**: every call made for a session carries the session's scope as
//!   `x-cognition-scope-<key>` metadata ([`scope`], [`ExecutorPool::client_for`]); the executor
//!   stamps it on the sandboxes it creates and refuses calls on sandboxes of another scope. The
//!   placement survey alone lists unscoped: a replica's load counts every tenant's sandboxes.

pub mod error;
pub mod health;
mod placement;
pub mod scope;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cognition_proto::executor::v1 as pb;
use cognition_proto::executor::v1::executor_service_client::ExecutorServiceClient;
use cognition_proto::scope::Scope;
use cognition_telemetry::grpc::{InjectTraceContext, TracedChannel};
use tonic::transport::{Channel, Endpoint};

pub use self::error::{ExecutorError, InvalidExecutorUrl, is_transport_failure};
use self::health::Health;
pub use self::scope::ScopedExecutorClient;

/// A client of one executor replica, without a scope (pool-wide calls).
pub type ExecutorClient = ExecutorServiceClient<TracedChannel>;

/// Bound on connecting to a replica.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keepalive pings, so a replica whose host vanished (no reset) is noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on `CreateSandbox` (a container may take a while to start).
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Sandbox homes remembered at most; beyond, the map starts over (discovery refills it).
const MAX_REMEMBERED: usize = 100_000;

/// One replica of the pool, by position in the configured list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplicaId(usize);

/// The executor replicas of this service; cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct ExecutorPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    replicas: Vec<Replica>,
    homes: Mutex<HashMap<String, ReplicaId>>,
}

#[derive(Debug)]
struct Replica {
    url: String,
    channel: Channel,
    client: ExecutorClient,
    health: Health,
    /// Sandbox creations this pool has in flight on the replica (counted as load).
    placing: AtomicUsize,
}

/// How one creation attempt on one replica went.
enum Attempt {
    Created(pb::Sandbox),
    /// The replica is gone (transport failure): try another.
    Gone(tonic::Status),
    /// The replica is full (`RESOURCE_EXHAUSTED`): try another.
    Full(tonic::Status),
    /// Any other failure: report it.
    Failed(ExecutorError),
}

/// One creation in flight, counted until dropped (also when the call is abandoned).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn start(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ExecutorPool {
    /// A pool over `urls` (empty: no executor). Connects lazily; call inside a Tokio runtime.
    pub fn new(urls: &[String]) -> Result<Self, InvalidExecutorUrl> {
        let replicas = urls
            .iter()
            .map(|url| {
                let endpoint = Endpoint::from_shared(url.clone())
                    .map_err(|source| InvalidExecutorUrl {
                        url: url.clone(),
                        source,
                    })?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                    .tcp_nodelay(true);
                let channel = endpoint.connect_lazy();
                Ok(Replica {
                    url: url.clone(),
                    client: ExecutorServiceClient::with_interceptor(
                        channel.clone(),
                        InjectTraceContext,
                    ),
                    channel,
                    health: Health::default(),
                    placing: AtomicUsize::new(0),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                replicas,
                homes: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// A pool without executors (the tools say so; nothing to clean up).
    pub fn none() -> Self {
        Self {
            inner: Arc::new(Inner {
                replicas: Vec::new(),
                homes: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether at least one executor is configured.
    pub fn is_configured(&self) -> bool {
        !self.inner.replicas.is_empty()
    }

    /// Every replica.
    pub fn replicas(&self) -> impl Iterator<Item = ReplicaId> + use<> {
        (0..self.inner.replicas.len()).map(ReplicaId)
    }

    /// The configured URL of `replica` (for logs; never shown to the model).
    pub fn url(&self, replica: ReplicaId) -> &str {
        &self.replica(replica).url
    }

    /// An unscoped client of `replica`, for calls not made for one session (the placement
    /// survey); the executor lets it see every tenant's sandboxes.
    pub fn client(&self, replica: ReplicaId) -> ExecutorClient {
        self.replica(replica).client.clone()
    }

    /// A client of `replica` acting for `scope`: every call carries it as metadata.
    pub fn client_for(&self, replica: ReplicaId, scope: &Scope) -> ScopedExecutorClient {
        scope::scoped_client(self.replica(replica).channel.clone(), scope)
    }

    /// The replica known to hold `sandbox_id`, if any.
    pub fn home(&self, sandbox_id: &str) -> Option<ReplicaId> {
        self.homes().get(sandbox_id).copied()
    }

    /// Forgets where `sandbox_id` lives (its sandbox was deleted).
    pub fn forget(&self, sandbox_id: &str) {
        self.homes().remove(sandbox_id);
    }

    /// Whether `replica` is inside its back-off after a transport failure.
    pub fn is_down(&self, replica: ReplicaId) -> bool {
        self.replica(replica).health.is_down()
    }

    /// Records that `replica` answered.
    pub fn record_success(&self, replica: ReplicaId) {
        self.replica(replica).health.succeeded();
    }

    /// Records a transport failure of `replica`: it is down for a back-off.
    pub fn record_failure(&self, replica: ReplicaId, status: &tonic::Status) {
        let backoff = self.replica(replica).health.failed();
        tracing::warn!(executor = %self.url(replica), code = ?status.code(),
            error = %status.message(), backoff_ms = backoff.as_millis() as u64,
            "executor replica unreachable; skipping it for new sandboxes during the back-off");
    }

    /// The replica holding `sandbox_id` failed a call with `status` (a transport failure):
    /// marks it down and forgets the sandbox, so the next call places a fresh one.
    pub fn lose(&self, sandbox_id: &str, replica: ReplicaId, status: &tonic::Status) {
        self.record_failure(replica, status);
        let mut homes = self.homes();
        if homes.get(sandbox_id) == Some(&replica) {
            homes.remove(sandbox_id);
            tracing::warn!(%sandbox_id, executor = %self.url(replica),
                "sandbox lost with its executor; the next tool call gets a fresh one");
        }
    }

    /// Creates the sandbox `request.sandbox_id` (non-empty: the idempotency key) on its home,
    /// or — without a known home — on the replica that already holds it, else on the
    /// least-loaded live replica (trying the next one when a replica is gone or full). The
    /// creation acts for `scope`, which the executor stamps on the sandbox's labels.
    ///
    /// A known home that is gone gives [`ExecutorError::Lost`] (and the home is forgotten).
    pub async fn ensure_sandbox(
        &self,
        request: pb::CreateSandboxRequest,
        scope: &Scope,
    ) -> Result<(ReplicaId, pb::Sandbox), ExecutorError> {
        if !self.is_configured() {
            return Err(ExecutorError::NotConfigured);
        }
        let id = request.sandbox_id.clone();
        if let Some(home) = self.home(&id) {
            return match self.create_on(home, request, scope).await {
                Attempt::Created(sandbox) => Ok((home, sandbox)),
                Attempt::Gone(status) => {
                    self.lose(&id, home, &status);
                    Err(ExecutorError::Lost)
                }
                Attempt::Full(status) => Err(status.into()),
                Attempt::Failed(error) => Err(error),
            };
        }
        let candidates = if self.inner.replicas.len() == 1 {
            vec![ReplicaId(0)]
        } else {
            placement::candidates(self, &id).await
        };
        let tried = candidates.len();
        for replica in candidates {
            match self.create_on(replica, request.clone(), scope).await {
                Attempt::Created(sandbox) => {
                    self.remember(&id, replica);
                    tracing::info!(sandbox_id = %id, executor = %self.url(replica),
                        "sandbox placed");
                    return Ok((replica, sandbox));
                }
                Attempt::Gone(status) => self.record_failure(replica, &status),
                Attempt::Full(status) => {
                    tracing::warn!(sandbox_id = %id, executor = %self.url(replica),
                        error = %status.message(), "executor replica full; trying the next");
                }
                Attempt::Failed(error) => return Err(error),
            }
        }
        Err(ExecutorError::Unreachable(format!(
            "no executor replica could create the sandbox ({tried} tried)"
        )))
    }

    async fn create_on(
        &self,
        replica: ReplicaId,
        request: pb::CreateSandboxRequest,
        scope: &Scope,
    ) -> Attempt {
        let state = self.replica(replica);
        let in_flight = InFlight::start(&state.placing);
        let mut client = self.client_for(replica, scope);
        let result = tokio::time::timeout(CREATE_TIMEOUT, client.create_sandbox(request)).await;
        drop(in_flight);
        match result {
            Err(_) => Attempt::Failed(ExecutorError::Timeout),
            Ok(Ok(response)) => {
                self.record_success(replica);
                match response.into_inner().sandbox {
                    Some(sandbox) => Attempt::Created(sandbox),
                    None => Attempt::Failed(ExecutorError::Refused(
                        "CreateSandbox returned no sandbox".into(),
                    )),
                }
            }
            Ok(Err(status)) if is_transport_failure(&status) => Attempt::Gone(status),
            Ok(Err(status)) if status.code() == tonic::Code::ResourceExhausted => {
                Attempt::Full(status)
            }
            Ok(Err(status)) => Attempt::Failed(status.into()),
        }
    }

    fn remember(&self, sandbox_id: &str, replica: ReplicaId) {
        let mut homes = self.homes();
        if homes.len() >= MAX_REMEMBERED && !homes.contains_key(sandbox_id) {
            homes.clear();
        }
        homes.insert(sandbox_id.to_owned(), replica);
    }

    /// Creations in flight on `replica`.
    fn placing(&self, replica: ReplicaId) -> usize {
        self.replica(replica).placing.load(Ordering::Relaxed)
    }

    fn replica(&self, replica: ReplicaId) -> &Replica {
        &self.inner.replicas[replica.0]
    }

    fn homes(&self) -> MutexGuard<'_, HashMap<String, ReplicaId>> {
        self.inner
            .homes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_urls_are_reported() {
        let err = ExecutorPool::new(&["http://a b".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("http://a b"), "{err}");
    }

    #[tokio::test]
    async fn homes_are_remembered_and_lost_only_with_their_replica() {
        let pool =
            ExecutorPool::new(&["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()]).unwrap();
        let [a, b]: [ReplicaId; 2] = pool.replicas().collect::<Vec<_>>().try_into().unwrap();
        pool.remember("s1", a);
        assert_eq!(pool.home("s1"), Some(a));
        // A failure on another replica leaves the home alone (but marks that one down).
        pool.lose("s1", b, &tonic::Status::unavailable("down"));
        assert_eq!(pool.home("s1"), Some(a));
        assert!(pool.is_down(b) && !pool.is_down(a));
        pool.lose("s1", a, &tonic::Status::unavailable("down"));
        assert_eq!(pool.home("s1"), None);
        assert!(pool.is_down(a));
    }

    #[tokio::test]
    async fn an_empty_pool_is_not_configured() {
        let pool = ExecutorPool::none();
        assert!(!pool.is_configured());
        let err = pool
            .ensure_sandbox(
                pb::CreateSandboxRequest {
                    sandbox_id: "s".into(),
                    ..Default::default()
                },
                &Scope::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err, ExecutorError::NotConfigured);
    }
}
