//! `POST/GET /sessions`, `GET/PATCH/DELETE /sessions/{id}`.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use cognition_proto::common::v1::StringMap;
use cognition_proto::session::v1 as pb;
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;

use super::{json, missing};
use crate::error::HttpError;
use crate::extract::{Caller, JsonBody, QueryPairs, SessionId};
use crate::state::AppState;
use crate::views::{SessionListView, SessionView};

/// Largest page of `GET /sessions`.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// Body of `POST /sessions`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionBody {
    pub title: Option<String>,
    pub agent_name: Option<String>,
    pub metadata: Option<HashMap<String, String>>,
}

/// Body of `PATCH /sessions/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSessionBody {
    pub title: Option<String>,
    pub agent_name: Option<String>,
    pub metadata: Option<HashMap<String, String>>,
    pub config: Option<SessionConfigBody>,
}

/// `SessionConfig` as clients send it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfigBody {
    pub provider_id: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub recursion_limit: Option<u32>,
}

impl From<SessionConfigBody> for pb::SessionConfig {
    fn from(c: SessionConfigBody) -> Self {
        pb::SessionConfig {
            provider_id: c.provider_id,
            provider: c.provider,
            model: c.model,
            temperature: c.temperature,
            max_tokens: c.max_tokens,
            recursion_limit: c.recursion_limit,
        }
    }
}

/// Query of `GET /sessions`: `metadata.<key>=<value>` (all must match), `limit`, `cursor`.
#[derive(Debug, Default, PartialEq)]
pub struct ListQuery {
    pub metadata: HashMap<String, String>,
    pub limit: u32,
    pub cursor: String,
}

impl ListQuery {
    /// Parses the decoded query pairs; unknown parameters are refused so typos do not widen a
    /// filter silently.
    pub fn parse(pairs: Vec<(String, String)>) -> Result<Self, HttpError> {
        let mut q = ListQuery::default();
        for (key, value) in pairs {
            if let Some(meta_key) = key.strip_prefix("metadata.") {
                if meta_key.is_empty() {
                    return Err(HttpError::validation(
                        "metadata filter needs a key: metadata.<key>=<value>",
                    )
                    .with_detail("parameter", key));
                }
                if q.metadata.insert(meta_key.to_owned(), value).is_some() {
                    return Err(HttpError::validation(format!(
                        "query parameter {key} is given more than once"
                    ))
                    .with_detail("parameter", key));
                }
            } else if key == "limit" {
                q.limit = match value.parse::<u32>() {
                    Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
                    _ => {
                        return Err(HttpError::validation(format!(
                            "limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {value:?}"
                        ))
                        .with_detail("parameter", "limit"));
                    }
                };
            } else if key == "cursor" {
                q.cursor = value;
            } else {
                return Err(HttpError::validation(format!(
                    "unknown query parameter {key:?} (expected metadata.<key>, limit, cursor)"
                ))
                .with_detail("parameter", key));
            }
        }
        Ok(q)
    }
}

/// `POST /sessions` → 201 session.
pub async fn create(
    State(state): State<AppState>,
    Caller(scope): Caller,
    JsonBody(body): JsonBody<CreateSessionBody>,
) -> Result<Response, HttpError> {
    let req = state.unary(
        &scope,
        pb::CreateSessionRequest {
            title: body.title,
            agent_name: body.agent_name,
            metadata: body.metadata.unwrap_or_default(),
        },
    );
    let session = state
        .sessions()
        .create_session(req)
        .await?
        .into_inner()
        .session
        .ok_or_else(|| missing("session"))?;
    let mut res = json(StatusCode::CREATED, &SessionView(&session));
    if let Ok(location) = HeaderValue::from_str(&format!("/sessions/{}", session.id)) {
        res.headers_mut().insert(header::LOCATION, location);
    }
    Ok(res)
}

/// `GET /sessions` → `{"sessions","total","next_cursor"}`.
pub async fn list(
    State(state): State<AppState>,
    Caller(scope): Caller,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, HttpError> {
    let q = ListQuery::parse(pairs)?;
    let req = state.unary(
        &scope,
        pb::ListSessionsRequest {
            metadata_filter: q.metadata,
            limit: q.limit,
            cursor: q.cursor,
        },
    );
    let res = state.sessions().list_sessions(req).await?.into_inner();
    Ok(json(StatusCode::OK, &SessionListView(&res)))
}

/// `GET /sessions/{id}` → session | 404.
pub async fn get(
    State(state): State<AppState>,
    Caller(scope): Caller,
    SessionId(id): SessionId,
) -> Result<Response, HttpError> {
    let req = state.unary(
        &scope,
        pb::GetSessionRequest {
            session_id: id.to_string(),
        },
    );
    let session = state
        .sessions()
        .get_session(req)
        .await?
        .into_inner()
        .session
        .ok_or_else(|| missing("session"))?;
    Ok(json(StatusCode::OK, &SessionView(&session)))
}

/// `PATCH /sessions/{id}` → session.
pub async fn update(
    State(state): State<AppState>,
    Caller(scope): Caller,
    SessionId(id): SessionId,
    JsonBody(body): JsonBody<UpdateSessionBody>,
) -> Result<Response, HttpError> {
    let req = state.unary(
        &scope,
        pb::UpdateSessionRequest {
            session_id: id.to_string(),
            title: body.title,
            agent_name: body.agent_name,
            metadata: body.metadata.map(|entries| StringMap { entries }),
            config: body.config.map(pb::SessionConfig::from),
        },
    );
    let session = state
        .sessions()
        .update_session(req)
        .await?
        .into_inner()
        .session
        .ok_or_else(|| missing("session"))?;
    Ok(json(StatusCode::OK, &SessionView(&session)))
}

/// `DELETE /sessions/{id}` → 204.
pub async fn delete(
    State(state): State<AppState>,
    Caller(scope): Caller,
    SessionId(id): SessionId,
) -> Result<Response, HttpError> {
    let req = state.unary(
        &scope,
        pb::DeleteSessionRequest {
            session_id: id.to_string(),
        },
    );
    state.sessions().delete_session(req).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn list_query_reads_metadata_filters() {
        let q = ListQuery::parse(pairs(&[
            ("metadata.repo", "a/b"),
            ("metadata.env", "prod"),
            ("limit", "10"),
            ("cursor", "c1"),
        ]))
        .unwrap();
        assert_eq!(q.metadata.get("repo").map(String::as_str), Some("a/b"));
        assert_eq!(q.metadata.get("env").map(String::as_str), Some("prod"));
        assert_eq!(q.limit, 10);
        assert_eq!(q.cursor, "c1");
        assert_eq!(ListQuery::parse(vec![]).unwrap(), ListQuery::default());
        // A key may itself contain dots.
        let q = ListQuery::parse(pairs(&[("metadata.a.b", "c")])).unwrap();
        assert_eq!(q.metadata.get("a.b").map(String::as_str), Some("c"));
    }

    #[test]
    fn list_query_refuses_bad_parameters() {
        for bad in [
            &[("limit", "0")][..],
            &[("limit", "1001")],
            &[("limit", "ten")],
            &[("limit", "-1")],
            &[("metadata.", "x")],
            &[("metadata.repo", "a"), ("metadata.repo", "b")],
            &[("metdata.repo", "a")],
        ] {
            let e = ListQuery::parse(pairs(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
            assert_eq!(e.code, "VALIDATION_ERROR");
        }
    }
}
