//! `GET /health` and `GET /ready`, from the session service's `grpc.health.v1` check.
//!
//! `active_sessions` is the number of SSE streams this gateway replica is forwarding right now: it
//! costs nothing, cannot fail, and does not reveal other tenants' session counts (a scoped
//! deployment must not answer "how many sessions exist" to an unauthenticated probe).

use axum::extract::State;
use axum::response::Response;
use chrono::{SecondsFormat, Utc};
use http::StatusCode;
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use super::json;
use crate::state::{AppState, SESSION_SERVICE_NAME};

/// What the session service's health check said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Serving,
    NotServing,
    Unreachable,
    Timeout,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Serving => "serving",
            Component::NotServing => "not_serving",
            Component::Unreachable => "unreachable",
            Component::Timeout => "timeout",
        }
    }
}

/// Asks the session service for its health, within the health timeout.
pub async fn check_session(state: &AppState) -> Component {
    let mut client = state.health_client();
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: SESSION_SERVICE_NAME.to_owned(),
    });
    req.set_timeout(state.health_timeout());
    match tokio::time::timeout(state.health_timeout(), client.check(req)).await {
        Ok(Ok(res)) if res.get_ref().status == ServingStatus::Serving as i32 => Component::Serving,
        Ok(Ok(_)) => Component::NotServing,
        Ok(Err(status)) if status.code() == tonic::Code::NotFound => Component::NotServing,
        Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => Component::Timeout,
        Ok(Err(status)) => {
            tracing::debug!(error = %status, "session service health check failed");
            Component::Unreachable
        }
        Err(_) => Component::Timeout,
    }
}

/// `GET /health` → 200 healthy, or 503 degraded with the failing component.
pub async fn health(State(state): State<AppState>) -> Response {
    let session = check_session(&state).await;
    let timestamp = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut body = json!({
        "status": "healthy",
        "version": env!("CARGO_PKG_VERSION"),
        "active_sessions": state.open_streams(),
        "circuit_breakers": [],
        "timestamp": timestamp,
        "components": {"session": session.as_str()},
    });
    if session == Component::Serving {
        return json(StatusCode::OK, &body);
    }
    body["status"] = "degraded".into();
    body["degraded"] = json!(["session"]);
    body["error"] = format!("session service is {}", session.as_str().replace('_', " ")).into();
    body["code"] = "UNAVAILABLE".into();
    body["details"] = json!({"components": {"session": session.as_str()}});
    json(StatusCode::SERVICE_UNAVAILABLE, &body)
}

/// `GET /ready` → `{"ready": true}` once the session service answers SERVING, else 503.
pub async fn ready(State(state): State<AppState>) -> Response {
    let session = check_session(&state).await;
    if session == Component::Serving {
        return json(StatusCode::OK, &json!({"ready": true}));
    }
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({
            "ready": false,
            "error": format!("session service is {}", session.as_str().replace('_', " ")),
            "code": "UNAVAILABLE",
            "details": {"components": {"session": session.as_str()}},
        }),
    )
}
