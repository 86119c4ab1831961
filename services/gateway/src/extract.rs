//! Request extractors whose rejections are always the JSON error body.
//!
//! axum's own extractors answer with plain-text bodies; these wrap them (or replace them) so a
//! client never sees anything but `{"error","code","details"}`: malformed JSON, unknown fields and
//! bad values → 422, wrong content type → 415, oversize body → 413, bad UUID in the path → 422,
//! bad query parameters → 422, missing or invalid scope headers → 403.

use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use bytes::Bytes;
use cognition_errors::Code;
use cognition_proto::scope::{Scope, ScopeError, header_name};
use http::request::Parts;
use http::{StatusCode, header};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::HttpError;
use crate::state::AppState;

/// A JSON request body. An empty body reads as `{}` (every request body of the API is an object).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

fn is_json_content_type(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub.as_bytes()[sub.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

/// Parses a JSON body into `T`, mapping every serde error to a 422.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        let prefix = match e.classify() {
            serde_json::error::Category::Data => "invalid request body",
            _ => "malformed JSON",
        };
        HttpError::validation(format!("{prefix}: {e}"))
            .with_detail("line", e.line())
            .with_detail("column", e.column())
    })
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = is_json_content_type(req.headers());
        let has_type = req.headers().contains_key(header::CONTENT_TYPE);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                HttpError::new(Code::PayloadTooLarge, "request body is too large")
            } else {
                HttpError::validation("could not read the request body")
            }
        })?;
        if !bytes.iter().all(u8::is_ascii_whitespace) && !json_type {
            let got = if has_type {
                "another content type"
            } else {
                "no content type"
            };
            return Err(HttpError::validation(format!(
                "expected a JSON body with Content-Type: application/json, got {got}"
            ))
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .with_detail("expected", "application/json"));
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// Query parameters parsed into `T` (use `#[serde(deny_unknown_fields)]` on `T`).
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

/// Parses the query of `uri` into `T`, mapping errors to a 422.
pub fn parse_query<T: DeserializeOwned>(uri: &http::Uri) -> Result<T, HttpError> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|rejection| {
            let text = rejection.body_text();
            let reason = text
                .strip_prefix("Failed to deserialize query string: ")
                .unwrap_or(&text);
            HttpError::validation(format!("invalid query parameters: {reason}"))
        })
}

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(&parts.uri).map(QueryParams)
    }
}

/// All query pairs, percent-decoded, in order (for routes with open-ended parameters such as
/// `metadata.<key>`).
#[derive(Debug)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_none_or(str::is_empty) {
            return Ok(QueryPairs(Vec::new()));
        }
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|q| QueryPairs(q.0))
            .map_err(|_| HttpError::validation("the query string is not valid"))
    }
}

fn uuid_param(params: &RawPathParams, name: &str, label: &str) -> Result<Uuid, HttpError> {
    let raw = params
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .unwrap_or("");
    Uuid::try_parse(raw).map_err(|_| {
        HttpError::validation(format!("{label} must be a UUID, got {raw:?}"))
            .with_detail("field", label)
    })
}

async fn raw_params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<RawPathParams, HttpError> {
    RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|_| HttpError::validation("the path contains invalid percent-encoding"))
}

/// The `{id}` path segment of `/sessions/{id}/…`, a UUID.
#[derive(Debug, Clone, Copy)]
pub struct SessionId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for SessionId {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = raw_params(parts, state).await?;
        uuid_param(&params, "id", "session_id").map(SessionId)
    }
}

/// The `{id}` and `{message_id}` segments of `/sessions/{id}/messages/{message_id}`.
#[derive(Debug, Clone, Copy)]
pub struct MessagePath {
    pub session_id: Uuid,
    pub message_id: Uuid,
}

impl<S: Send + Sync> FromRequestParts<S> for MessagePath {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = raw_params(parts, state).await?;
        Ok(MessagePath {
            session_id: uuid_param(&params, "id", "session_id")?,
            message_id: uuid_param(&params, "message_id", "message_id")?,
        })
    }
}

/// The caller's scope, read from `X-Cognition-Scope-<Key>` headers when scoping is enabled
/// (empty otherwise). Every scoped route takes it first, so a missing header is a 403 before any
/// other check.
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Scope);

/// Maps a scope problem to 403 PERMISSION_DENIED naming the header.
pub fn scope_error(e: &ScopeError) -> HttpError {
    let key = match e {
        ScopeError::Missing { key } | ScopeError::Invalid { key, .. } => key,
    };
    HttpError::new(Code::PermissionDenied, e.to_string()).with_detail("header", header_name(key))
}

/// Reads the caller's scope as the gateway is configured.
pub fn read_scope(state: &AppState, headers: &http::HeaderMap) -> Result<Scope, HttpError> {
    if !state.scoping_enabled() {
        return Ok(Scope::default());
    }
    Scope::from_headers(state.scope_keys(), headers).map_err(|e| scope_error(&e))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        read_scope(state, &parts.headers).map(Caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[allow(dead_code)]
        title: Option<String>,
    }

    #[test]
    fn json_content_types() {
        let mut h = http::HeaderMap::new();
        assert!(!is_json_content_type(&h));
        for (ct, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("json", false),
        ] {
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            assert_eq!(is_json_content_type(&h), ok, "{ct}");
        }
    }

    #[test]
    fn json_errors_are_422_with_a_reason() {
        let e = parse_json::<Body>(b"{\"title\":").unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            e.error.message.starts_with("malformed JSON"),
            "{}",
            e.error.message
        );
        let e = parse_json::<Body>(br#"{"titel":"x"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            e.error.message.contains("unknown field `titel`"),
            "{}",
            e.error.message
        );
        let e = parse_json::<Body>(br#"{"title":5}"#).unwrap_err();
        assert!(
            e.error.message.starts_with("invalid request body"),
            "{}",
            e.error.message
        );
        assert!(parse_json::<Body>(b"").is_ok());
        assert!(parse_json::<Body>(b"  \n").is_ok());
    }

    #[test]
    fn scope_errors_name_the_header() {
        let e = scope_error(&ScopeError::Missing { key: "user".into() });
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(e.code, "PERMISSION_DENIED");
        assert!(
            e.error.message.contains("X-Cognition-Scope-User"),
            "{}",
            e.error.message
        );
        assert_eq!(e.body_json()["details"]["header"], "X-Cognition-Scope-User");
    }

    #[test]
    fn bad_query_values_are_422() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Q {
            #[allow(dead_code)]
            limit: Option<u32>,
        }
        let uri = |s: &'static str| http::Uri::from_static(s);
        assert!(parse_query::<Q>(&uri("/x?limit=5")).is_ok());
        assert!(parse_query::<Q>(&uri("/x")).is_ok());
        let e = parse_query::<Q>(&uri("/x?limit=x")).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        let e = parse_query::<Q>(&uri("/x?limt=5")).unwrap_err();
        assert!(e.error.message.contains("limt"), "{}", e.error.message);
    }
}
