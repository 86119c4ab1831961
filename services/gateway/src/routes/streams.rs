//! Runs: `POST /sessions/{id}/messages` (SSE), `GET /sessions/{id}/events` (SSE),
//! `POST /sessions/{id}/abort`, `POST /sessions/{id}/resume` (SSE or JSON).
//!
//! Errors before a stream starts (the gRPC call itself fails) are ordinary JSON error responses;
//! after that, see [`crate::sse`].

use std::future::Future;

use axum::extract::State;
use axum::response::Response;
use cognition_errors::Code;
use cognition_proto::scope::Scope;
use cognition_proto::session::v1 as pb;
use futures::StreamExt;
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::json;
use crate::error::HttpError;
use crate::extract::{Caller, JsonBody, QueryParams, SessionId};
use crate::sse::{self, CarriesEvent};
use crate::state::AppState;

/// Body of `POST /sessions/{id}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessageBody {
    pub content: String,
    pub model: Option<String>,
    pub parent_id: Option<String>,
    pub callback_url: Option<String>,
}

/// `?on_busy=` of `POST /sessions/{id}/messages`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnBusy {
    Reject,
    Enqueue,
    Interrupt,
}

/// Query of `POST /sessions/{id}/messages`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessageQuery {
    pub on_busy: Option<OnBusy>,
}

/// Query of `GET /sessions/{id}/events`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    pub after: Option<u64>,
}

/// `decision` of a resume.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Edit,
    Reject,
}

/// Body of `POST /sessions/{id}/resume`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    pub decision: Decision,
    pub tool_call_id: String,
    pub tool_name: String,
    /// Edited arguments (a JSON object), for `edit`.
    pub args: Option<serde_json::Map<String, serde_json::Value>>,
    /// Reason given to the model, for `reject`.
    pub message: Option<String>,
}

impl SendMessageBody {
    fn into_proto(
        self,
        session_id: String,
        on_busy: Option<OnBusy>,
    ) -> Result<pb::SendMessageRequest, HttpError> {
        if let Some(parent) = &self.parent_id
            && uuid::Uuid::try_parse(parent).is_err()
        {
            return Err(
                HttpError::validation(format!("parent_id must be a UUID, got {parent:?}"))
                    .with_detail("field", "parent_id"),
            );
        }
        if let Some(url) = &self.callback_url
            && !is_http_url(url)
        {
            return Err(HttpError::validation(
                "callback_url must be an absolute http:// or https:// URL",
            )
            .with_detail("field", "callback_url"));
        }
        let on_busy = match on_busy {
            None => pb::OnBusy::Unspecified,
            Some(OnBusy::Reject) => pb::OnBusy::Reject,
            Some(OnBusy::Enqueue) => pb::OnBusy::Enqueue,
            Some(OnBusy::Interrupt) => pb::OnBusy::Interrupt,
        };
        Ok(pb::SendMessageRequest {
            session_id,
            content: self.content,
            model: self.model,
            parent_id: self.parent_id,
            callback_url: self.callback_url,
            on_busy: on_busy as i32,
        })
    }
}

fn is_http_url(url: &str) -> bool {
    url.parse::<http::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
    })
}

/// `Last-Event-ID`, when the client sent one.
pub fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, HttpError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<u64>().map(Some).map_err(|_| {
        HttpError::validation(format!(
            "Last-Event-ID must be an event sequence number, got {text:?}"
        ))
        .with_detail("header", "Last-Event-ID")
    })
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',').any(|part| {
                part.split(';')
                    .next()
                    .is_some_and(|m| m.trim() == "text/event-stream")
            })
        })
}

/// Opens an upstream stream within the upstream deadline.
async fn open<T>(
    state: &AppState,
    call: impl Future<Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>>,
) -> Result<tonic::Streaming<T>, HttpError> {
    match tokio::time::timeout(state.stream_open_timeout(), call).await {
        Ok(result) => Ok(result?.into_inner()),
        Err(_) => Err(HttpError::new(
            Code::Unavailable,
            "the session service did not answer in time",
        )),
    }
}

/// Opens `WatchEvents` for the session after `after_seq`.
async fn watch(
    state: &AppState,
    scope: &Scope,
    session_id: String,
    after_seq: u64,
    until_done: bool,
) -> Result<tonic::Streaming<pb::WatchEventsResponse>, HttpError> {
    let req = state.streaming(
        scope,
        pb::WatchEventsRequest {
            session_id,
            after_seq,
            until_done,
        },
    );
    let mut client = state.sessions();
    open(state, client.watch_events(req)).await
}

/// `POST /sessions/{id}/messages` → SSE of the run. With `Last-Event-ID`, replays the run's
/// events after that id and continues live instead of starting a second run.
pub async fn send_message(
    State(state): State<AppState>,
    Caller(scope): Caller,
    SessionId(id): SessionId,
    QueryParams(q): QueryParams<SendMessageQuery>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SendMessageBody>,
) -> Result<Response, HttpError> {
    let resume_after = last_event_id(&headers)?;
    let message = body.into_proto(id.to_string(), q.on_busy)?;
    if let Some(after) = resume_after {
        let upstream = watch(&state, &scope, id.to_string(), after, true).await?;
        return Ok(sse::response(&state, upstream));
    }
    let req = state.streaming(&scope, message);
    let mut client = state.sessions();
    let upstream = open(&state, client.send_message(req)).await?;
    Ok(sse::response(&state, upstream))
}

/// `GET /sessions/{id}/events?after=<seq>` (or `Last-Event-ID`) → SSE: replay, then live.
pub async fn watch_events(
    State(state): State<AppState>,
    Caller(scope): Caller,
    SessionId(id): SessionId,
    QueryParams(q): QueryParams<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    // A reconnecting EventSource repeats the original URL; its Last-Event-ID is the newer position.
    let after = last_event_id(&headers)?.or(q.after).unwrap_or(0);
    let upstream = watch(&state, &scope, id.to_string(), after, false).await?;
    Ok(sse::response(&state, upstream))
}

/// `POST /sessions/{id}/abort` → `{"success","message"}`.
pub async fn abort(
    State(state): State<AppState>,
    Caller(scope): Caller,
    SessionId(id): SessionId,
) -> Result<Response, HttpError> {
    #[derive(Serialize)]
    struct Aborted<'a> {
        success: bool,
        message: &'a str,
    }
    let req = state.unary(
        &scope,
        pb::AbortSessionRequest {
            session_id: id.to_string(),
        },
    );
    let res = state.sessions().abort_session(req).await?.into_inner();
    Ok(json(
        StatusCode::OK,
        &Aborted {
            success: res.success,
            message: &res.message,
        },
    ))
}

/// `POST /sessions/{id}/resume` → SSE of the continuation with `Accept: text/event-stream`,
/// otherwise `{"events": [{"id","event","data"}…], "assistant_data": message|null}` once it ends.
pub async fn resume(
    State(state): State<AppState>,
    Caller(scope): Caller,
    SessionId(id): SessionId,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ResumeBody>,
) -> Result<Response, HttpError> {
    let args_json = match &body.args {
        Some(args) => Some(
            serde_json::to_string(args)
                .map_err(|e| HttpError::internal(format!("re-serializing args: {e}")))?,
        ),
        None => None,
    };
    let decision = match body.decision {
        Decision::Approve => pb::Decision::Approve,
        Decision::Edit => pb::Decision::Edit,
        Decision::Reject => pb::Decision::Reject,
    };
    let req = state.streaming(
        &scope,
        pb::ResumeSessionRequest {
            session_id: id.to_string(),
            decision: decision as i32,
            tool_call_id: body.tool_call_id,
            tool_name: body.tool_name,
            args_json,
            message: body.message,
        },
    );
    let mut client = state.sessions();
    let upstream = open(&state, client.resume_session(req)).await?;
    if wants_event_stream(&headers) {
        return Ok(sse::response(&state, upstream));
    }
    collect(upstream).await
}

/// Collects a whole stream into one JSON answer.
async fn collect<T: CarriesEvent>(
    mut upstream: tonic::Streaming<T>,
) -> Result<Response, HttpError> {
    let mut events = Vec::new();
    let mut assistant_data = serde_json::Value::Null;
    while let Some(item) = upstream.next().await {
        match item {
            Ok(message) => {
                let Some(event) = message.into_event() else {
                    continue;
                };
                if let Some(value) = sse::collected(&event) {
                    if value["event"] == "done" {
                        assistant_data = value["data"]["assistant_data"].clone();
                    }
                    events.push(value);
                }
            }
            // Nothing happened yet: answer with the error itself.
            Err(status) if events.is_empty() => return Err(HttpError::from_status(&status)),
            Err(status) => {
                let error = HttpError::from_status(&status);
                events.push(serde_json::json!({
                    "id": null,
                    "event": "error",
                    "data": {"message": error.error.body().error, "code": error.code},
                }));
                break;
            }
        }
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "events": events, "assistant_data": assistant_data }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(content: &str) -> SendMessageBody {
        SendMessageBody {
            content: content.into(),
            model: None,
            parent_id: None,
            callback_url: None,
        }
    }

    #[test]
    fn send_message_rules() {
        let p = body("hi")
            .into_proto("s".into(), Some(OnBusy::Enqueue))
            .unwrap();
        assert_eq!(p.on_busy, pb::OnBusy::Enqueue as i32);
        assert_eq!(
            body("hi").into_proto("s".into(), None).unwrap().on_busy,
            pb::OnBusy::Unspecified as i32
        );
        let mut b = body("hi");
        b.parent_id = Some("nope".into());
        assert!(b.into_proto("s".into(), None).is_err());
        let mut b = body("hi");
        b.callback_url = Some("ftp://x".into());
        assert!(b.into_proto("s".into(), None).is_err());
        let mut b = body("hi");
        b.callback_url = Some("https://hooks.example.com/done".into());
        assert!(b.into_proto("s".into(), None).is_ok());
    }

    #[test]
    fn last_event_id_header() {
        let mut h = HeaderMap::new();
        assert_eq!(last_event_id(&h).unwrap(), None);
        h.insert("last-event-id", "17".parse().unwrap());
        assert_eq!(last_event_id(&h).unwrap(), Some(17));
        h.insert("last-event-id", "x".parse().unwrap());
        assert_eq!(
            last_event_id(&h).unwrap_err().status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!wants_event_stream(&h));
        h.insert(header::ACCEPT, "application/json".parse().unwrap());
        assert!(!wants_event_stream(&h));
        h.insert(
            header::ACCEPT,
            "application/json, text/event-stream;q=0.9".parse().unwrap(),
        );
        assert!(wants_event_stream(&h));
    }
}
