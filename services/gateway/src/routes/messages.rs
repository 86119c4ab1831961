//! `GET /sessions/{id}/messages` and `GET /sessions/{id}/messages/{message_id}`.

use axum::extract::State;
use axum::response::Response;
use cognition_proto::session::v1 as pb;
use http::StatusCode;
use serde::Deserialize;

use super::{json, missing};
use crate::error::HttpError;
use crate::extract::{Caller, MessagePath, QueryParams, SessionId};
use crate::state::AppState;
use crate::views::{MessageListView, MessageView};

/// Default page size of `GET /sessions/{id}/messages`.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size.
pub const MAX_LIMIT: u32 = 1000;

/// Query of `GET /sessions/{id}/messages`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListMessagesQuery {
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

impl ListMessagesQuery {
    fn limit(&self) -> Result<u32, HttpError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(HttpError::validation(format!(
                "limit must be from 1 to {MAX_LIMIT}, got {n}"
            ))
            .with_detail("parameter", "limit")),
        }
    }
}

/// `GET /sessions/{id}/messages?limit=50&offset=0` → `{"messages","total","has_more"}`.
pub async fn list(
    State(state): State<AppState>,
    Caller(scope): Caller,
    SessionId(id): SessionId,
    QueryParams(q): QueryParams<ListMessagesQuery>,
) -> Result<Response, HttpError> {
    let req = state.unary(
        &scope,
        pb::ListMessagesRequest {
            session_id: id.to_string(),
            limit: q.limit()?,
            offset: q.offset.unwrap_or(0),
        },
    );
    let res = state.sessions().list_messages(req).await?.into_inner();
    Ok(json(StatusCode::OK, &MessageListView(&res)))
}

/// `GET /sessions/{id}/messages/{message_id}` → message | 404.
pub async fn get(
    State(state): State<AppState>,
    Caller(scope): Caller,
    path: MessagePath,
) -> Result<Response, HttpError> {
    let req = state.unary(
        &scope,
        pb::GetMessageRequest {
            session_id: path.session_id.to_string(),
            message_id: path.message_id.to_string(),
        },
    );
    let message = state
        .sessions()
        .get_message(req)
        .await?
        .into_inner()
        .message
        .ok_or_else(|| missing("message"))?;
    Ok(json(StatusCode::OK, &MessageView(&message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_and_bounds() {
        assert_eq!(ListMessagesQuery::default().limit().unwrap(), 50);
        assert_eq!(
            ListMessagesQuery {
                limit: Some(1000),
                offset: None
            }
            .limit()
            .unwrap(),
            1000
        );
        assert!(
            ListMessagesQuery {
                limit: Some(0),
                offset: None
            }
            .limit()
            .is_err()
        );
        assert!(
            ListMessagesQuery {
                limit: Some(1001),
                offset: None
            }
            .limit()
            .is_err()
        );
    }
}
