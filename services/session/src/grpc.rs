//! The `cognition.session.v1.SessionService` gRPC handlers.
//!
//! Each handler reads the caller's scope, validates and converts the request (`validate`),
//! delegates to the store or the event log, and maps errors through `cognition_errors`.
//! Sessions outside the caller's scope are `SESSION_NOT_FOUND`, exactly like unknown ones.

pub mod convert;
pub mod validate;

use std::pin::Pin;
use std::sync::Arc;

use cognition_errors::{ApiError, Code};
use cognition_proto::scope::Scope;
use cognition_proto::session::v1 as pb;
use cognition_proto::session::v1::session_service_server::SessionService;
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::NewSession;
use crate::event_log::EventLog;
use crate::run::{AbortOutcome, OnBusy, RunManager, SendRequest, SubmitError};
use crate::sandboxes::SandboxCleaner;
use crate::store::{self, SessionQuery, Store};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Message of `ResumeSession`, which arrives with human approval of tool calls.
pub const RESUME_UNAVAILABLE: &str =
    "resuming a run paused for approval is not available yet (issue #4)";

/// How the caller's scope is determined.
#[derive(Debug, Clone)]
pub enum ScopePolicy {
    /// Scoping off: every caller sees every session.
    Disabled,
    /// Every call must carry these scope keys as metadata.
    Required(Vec<String>),
}

impl ScopePolicy {
    pub fn from_config(config: &crate::Config) -> Self {
        if config.scoping_enabled {
            ScopePolicy::Required(config.scope_keys.clone())
        } else {
            ScopePolicy::Disabled
        }
    }

    /// The caller's scope, or `PERMISSION_DENIED` when a required key is missing or invalid.
    pub fn scope_of(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Scope, Status> {
        match self {
            ScopePolicy::Disabled => Ok(Scope::default()),
            ScopePolicy::Required(keys) => Scope::from_metadata(keys, metadata)
                .map_err(|e| ApiError::new(Code::PermissionDenied, e.to_string()).into_status()),
        }
    }
}

/// The SessionService implementation.
#[derive(Debug, Clone)]
pub struct SessionApi {
    events: EventLog,
    sandboxes: SandboxCleaner,
    runs: RunManager,
    scopes: ScopePolicy,
    shutdown: CancellationToken,
}

impl SessionApi {
    /// `shutdown` ends open event streams, so that a graceful shutdown does not wait on them.
    pub fn new(
        events: EventLog,
        sandboxes: SandboxCleaner,
        runs: RunManager,
        scopes: ScopePolicy,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            events,
            sandboxes,
            runs,
            scopes,
            shutdown,
        }
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.events.store()
    }

    /// The visible session `id`, or `SESSION_NOT_FOUND`.
    async fn visible_session(
        &self,
        scope: &Scope,
        id: Uuid,
    ) -> Result<crate::domain::Session, Status> {
        self.store()
            .get_session(scope, id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found(id))
    }
}

/// `SESSION_NOT_FOUND` for `id` (also for sessions of another scope).
fn not_found(id: Uuid) -> Status {
    ApiError::new(Code::SessionNotFound, format!("session {id} not found"))
        .with_detail("session_id", id.to_string())
        .into_status()
}

/// Maps a store failure; internal ones are logged here, once, and reach clients generically.
fn store_error(e: store::Error) -> Status {
    match e {
        store::Error::SessionNotFound(id) => not_found(id),
        other => {
            tracing::error!(error = %other, "session store failed");
            ApiError::internal(other.to_string()).into_status()
        }
    }
}

fn invalid(e: ApiError) -> Status {
    e.into_status()
}

/// Maps a refused message.
fn submit_error(e: SubmitError) -> Status {
    match e {
        SubmitError::Busy(id) => ApiError::new(
            Code::Conflict,
            format!(
                "session {id} is busy with another run; wait for it to finish, or send with \
                 on_busy=enqueue (queue this message) or on_busy=interrupt (abort the run)"
            ),
        )
        .with_detail("session_id", id.to_string())
        .into_status(),
        SubmitError::Callback(e) => ApiError::validation(e.to_string())
            .with_detail("field", "callback_url")
            .into_status(),
        SubmitError::ShuttingDown => {
            ApiError::new(Code::Unavailable, "the session service is shutting down").into_status()
        }
        SubmitError::Store(e) => store_error(e),
    }
}

fn on_busy(raw: i32) -> Result<OnBusy, Status> {
    match pb::OnBusy::try_from(raw) {
        Ok(pb::OnBusy::Unspecified | pb::OnBusy::Reject) => Ok(OnBusy::Reject),
        Ok(pb::OnBusy::Enqueue) => Ok(OnBusy::Enqueue),
        Ok(pb::OnBusy::Interrupt) => Ok(OnBusy::Interrupt),
        Err(_) => Err(invalid(
            ApiError::validation(format!("on_busy {raw} is not a known policy"))
                .with_detail("field", "on_busy"),
        )),
    }
}

#[tonic::async_trait]
impl SessionService for SessionApi {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let scope = self.scopes.scope_of(request.metadata())?;
        let mut new = NewSession::try_from(request.into_inner()).map_err(invalid)?;
        new.scopes = scope.0;
        let session = self
            .store()
            .create_session(new)
            .await
            .map_err(store_error)?;
        tracing::debug!(session_id = %session.id, "session created");
        Ok(Response::new(pb::CreateSessionResponse {
            session: Some(session.into()),
        }))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        let scope = self.scopes.scope_of(request.metadata())?;
        let id = validate::uuid("session_id", &request.get_ref().session_id).map_err(invalid)?;
        let session = self.visible_session(&scope, id).await?;
        Ok(Response::new(pb::GetSessionResponse {
            session: Some(session.into()),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let scope = self.scopes.scope_of(request.metadata())?;
        let req = request.into_inner();
        let query = SessionQuery {
            metadata: validate::metadata("metadata_filter", req.metadata_filter)
                .map_err(invalid)?,
            limit: validate::limit(req.limit, validate::DEFAULT_SESSION_LIMIT).map_err(invalid)?,
            cursor: validate::cursor(&req.cursor).map_err(invalid)?,
        };
        let page = self
            .store()
            .list_sessions(&scope, &query)
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: page.sessions.into_iter().map(Into::into).collect(),
            total: page.total,
            next_cursor: page.next_cursor.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn update_session(
        &self,
        request: Request<pb::UpdateSessionRequest>,
    ) -> Result<Response<pb::UpdateSessionResponse>, Status> {
        let scope = self.scopes.scope_of(request.metadata())?;
        let (id, patch) = validate::update(request.into_inner()).map_err(invalid)?;
        let session = self
            .store()
            .update_session(&scope, id, &patch)
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found(id))?;
        Ok(Response::new(pb::UpdateSessionResponse {
            session: Some(session.into()),
        }))
    }

    async fn delete_session(
        &self,
        request: Request<pb::DeleteSessionRequest>,
    ) -> Result<Response<pb::DeleteSessionResponse>, Status> {
        let scope = self.scopes.scope_of(request.metadata())?;
        let id = validate::uuid("session_id", &request.get_ref().session_id).map_err(invalid)?;
        if !self
            .store()
            .delete_session(&scope, id)
            .await
            .map_err(store_error)?
        {
            return Err(not_found(id));
        }
        self.runs.session_deleted(id);
        self.events.hub().close(id);
        self.sandboxes.delete_for_session(id, &scope).await;
        tracing::debug!(session_id = %id, "session deleted");
        Ok(Response::new(pb::DeleteSessionResponse {}))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let scope = self.scopes.scope_of(request.metadata())?;
        let req = request.into_inner();
        let id = validate::uuid("session_id", &req.session_id).map_err(invalid)?;
        let limit = validate::limit(req.limit, validate::DEFAULT_MESSAGE_LIMIT).map_err(invalid)?;
        let page = self
            .store()
            .list_messages(&scope, id, limit, u64::from(req.offset))
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found(id))?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages: page.messages.into_iter().map(Into::into).collect(),
            total: page.total,
            has_more: page.has_more,
        }))
    }

    async fn get_message(
        &self,
        request: Request<pb::GetMessageRequest>,
    ) -> Result<Response<pb::GetMessageResponse>, Status> {
        let scope = self.scopes.scope_of(request.metadata())?;
        let req = request.get_ref();
        let session_id = validate::uuid("session_id", &req.session_id).map_err(invalid)?;
        let message_id = validate::uuid("message_id", &req.message_id).map_err(invalid)?;
        match self
            .store()
            .get_message(&scope, session_id, message_id)
            .await
            .map_err(store_error)?
        {
            Some(message) => Ok(Response::new(pb::GetMessageResponse {
                message: Some(message.into()),
            })),
            None => {
                // Distinguish an unknown session from an unknown message in it.
                self.visible_session(&scope, session_id).await?;
                Err(
                    ApiError::not_found(format!("message {message_id} not found"))
                        .with_detail("message_id", message_id.to_string())
                        .into_status(),
                )
            }
        }
    }

    type SendMessageStream = BoxStream<pb::SendMessageResponse>;

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<Self::SendMessageStream>, Status> {
        let scope = self.scopes.scope_of(request.metadata())?;
        let req = request.into_inner();
        let id = validate::uuid("session_id", &req.session_id).map_err(invalid)?;
        if req.content.is_empty() {
            return Err(invalid(
                ApiError::validation("content must not be empty").with_detail("field", "content"),
            ));
        }
        let parent_id = req
            .parent_id
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(|p| validate::uuid("parent_id", p))
            .transpose()
            .map_err(invalid)?;
        let on_busy = on_busy(req.on_busy)?;
        let session = self.visible_session(&scope, id).await?;
        let accepted = self
            .runs
            .submit(
                &session,
                SendRequest {
                    content: req.content,
                    model: req.model.filter(|m| !m.trim().is_empty()),
                    parent_id,
                    callback_url: req.callback_url.filter(|u| !u.is_empty()),
                    on_busy,
                },
            )
            .await
            .map_err(submit_error)?;
        tracing::debug!(session_id = %id, run_id = %accepted.run.id, "message accepted");
        let stream = self
            .runs
            .watch_run(
                id,
                accepted.run.id,
                accepted.after_seq,
                self.shutdown.clone(),
            )
            .map(|item| match item {
                Ok(event) => Ok(pb::SendMessageResponse {
                    event: Some(event.as_ref().into()),
                }),
                Err(e) => Err(store_error(e)),
            });
        Ok(Response::new(Box::pin(stream)))
    }

    type WatchEventsStream = BoxStream<pb::WatchEventsResponse>;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let scope = self.scopes.scope_of(request.metadata())?;
        let req = request.into_inner();
        let id = validate::uuid("session_id", &req.session_id).map_err(invalid)?;
        self.visible_session(&scope, id).await?;
        let stream = self
            .events
            .watch(id, req.after_seq, req.until_done, self.shutdown.clone())
            .map(|item| match item {
                Ok(event) => Ok(pb::WatchEventsResponse {
                    event: Some(event.as_ref().into()),
                }),
                Err(e) => Err(store_error(e)),
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn abort_session(
        &self,
        request: Request<pb::AbortSessionRequest>,
    ) -> Result<Response<pb::AbortSessionResponse>, Status> {
        let scope = self.scopes.scope_of(request.metadata())?;
        let id = validate::uuid("session_id", &request.get_ref().session_id).map_err(invalid)?;
        self.visible_session(&scope, id).await?;
        let outcome = self.runs.abort(id).await.map_err(store_error)?;
        Ok(Response::new(match outcome {
            AbortOutcome::Requested { run_id, .. } => pb::AbortSessionResponse {
                success: true,
                message: format!(
                    "run {run_id} is being aborted; its stream ends with error ABORTED, status \
                     cancelled and done"
                ),
            },
            AbortOutcome::Idle => pb::AbortSessionResponse {
                success: false,
                message: format!("session {id} has no active run to abort"),
            },
        }))
    }

    type ResumeSessionStream = BoxStream<pb::ResumeSessionResponse>;

    async fn resume_session(
        &self,
        request: Request<pb::ResumeSessionRequest>,
    ) -> Result<Response<Self::ResumeSessionStream>, Status> {
        self.scopes.scope_of(request.metadata())?;
        Err(ApiError::new(Code::NotImplemented, RESUME_UNAVAILABLE).into_status())
    }
}
