//! The routes of the gateway and the table that lists them (checked against the OpenAPI document
//! and against the router itself by tests).

pub mod docs;
pub mod health;
pub mod messages;
pub mod sessions;
pub mod streams;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::error::HttpError;
use crate::state::AppState;

/// One served path (axum syntax, which is also OpenAPI's) and its methods.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub path: &'static str,
    pub methods: &'static [&'static str],
}

/// Every route the gateway serves. `HEAD` is served wherever `GET` is.
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        path: "/health",
        methods: &["GET"],
    },
    RouteSpec {
        path: "/ready",
        methods: &["GET"],
    },
    RouteSpec {
        path: "/openapi.json",
        methods: &["GET"],
    },
    RouteSpec {
        path: "/docs",
        methods: &["GET"],
    },
    RouteSpec {
        path: "/sessions",
        methods: &["GET", "POST"],
    },
    RouteSpec {
        path: "/sessions/{id}",
        methods: &["GET", "PATCH", "DELETE"],
    },
    RouteSpec {
        path: "/sessions/{id}/messages",
        methods: &["GET", "POST"],
    },
    RouteSpec {
        path: "/sessions/{id}/messages/{message_id}",
        methods: &["GET"],
    },
    RouteSpec {
        path: "/sessions/{id}/events",
        methods: &["GET"],
    },
    RouteSpec {
        path: "/sessions/{id}/abort",
        methods: &["POST"],
    },
    RouteSpec {
        path: "/sessions/{id}/resume",
        methods: &["POST"],
    },
];

/// The routes, without the cross-cutting layers (see [`crate::router`]).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/openapi.json", get(docs::openapi))
        .route("/docs", get(docs::docs))
        .route("/sessions", get(sessions::list).post(sessions::create))
        .route(
            "/sessions/{id}",
            get(sessions::get)
                .patch(sessions::update)
                .delete(sessions::delete),
        )
        .route(
            "/sessions/{id}/messages",
            get(messages::list).post(streams::send_message),
        )
        .route("/sessions/{id}/messages/{message_id}", get(messages::get))
        .route("/sessions/{id}/events", get(streams::watch_events))
        .route("/sessions/{id}/abort", post(streams::abort))
        .route("/sessions/{id}/resume", post(streams::resume))
}

/// A JSON response serialized straight from a view.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut res = (status, bytes).into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res
        }
        Err(e) => HttpError::internal(format!("serializing the response: {e}")).into_response(),
    }
}

/// The error for a response of the session service that lacks a required field.
pub(crate) fn missing(field: &'static str) -> HttpError {
    HttpError::internal(format!("the session service answered without `{field}`"))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use axum::body::Body;
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;

    fn spec() -> serde_json::Value {
        serde_json::from_str(docs::OPENAPI_JSON).expect("assets/openapi.json parses")
    }

    #[test]
    fn openapi_document_is_3_1_and_lists_exactly_the_served_routes() {
        let spec = spec();
        let version = spec["openapi"].as_str().unwrap();
        assert!(version.starts_with("3.1."), "openapi: {version}");
        assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"));
        let mut documented = BTreeMap::new();
        for (path, item) in spec["paths"].as_object().unwrap() {
            let methods: BTreeSet<String> = item
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| {
                    [
                        "get", "put", "post", "delete", "options", "head", "patch", "trace",
                    ]
                    .contains(&k.as_str())
                })
                .map(|k| k.to_ascii_uppercase())
                .collect();
            documented.insert(path.clone(), methods);
        }
        let served: BTreeMap<String, BTreeSet<String>> = ROUTES
            .iter()
            .map(|r| {
                (
                    r.path.to_owned(),
                    r.methods.iter().map(|m| m.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(documented, served);
    }

    #[test]
    fn openapi_references_resolve() {
        fn walk(v: &serde_json::Value, spec: &serde_json::Value, seen: &mut usize) {
            match v {
                serde_json::Value::Object(map) => {
                    if let Some(r) = map.get("$ref").and_then(|r| r.as_str()) {
                        let pointer = r.strip_prefix('#').expect("local refs only");
                        assert!(spec.pointer(pointer).is_some(), "dangling $ref {r}");
                        *seen += 1;
                    }
                    map.values().for_each(|x| walk(x, spec, seen));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|x| walk(x, spec, seen)),
                _ => {}
            }
        }
        let spec = spec();
        let mut seen = 0;
        walk(&spec, &spec, &mut seen);
        assert!(seen > 50, "only {seen} references");
        for name in [
            "Session",
            "SessionConfig",
            "Message",
            "Error",
            "SseFrame",
            "TokenData",
            "DoneData",
        ] {
            assert!(
                spec["components"]["schemas"][name].is_object(),
                "schema {name} missing"
            );
        }
    }

    fn unreachable_state() -> AppState {
        // Port 1 on loopback: connections are refused at once.
        let config = Config {
            session_url: "http://127.0.0.1:1".into(),
            ..Config::default()
        };
        AppState::new(&config, CancellationToken::new()).unwrap()
    }

    async fn call(app: &Router, method: &str, path: &str) -> (StatusCode, serde_json::Value) {
        let mut req = http::Request::builder().method(method).uri(path);
        let body = if matches!(method, "POST" | "PATCH" | "PUT") {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from("{}")
        } else {
            Body::empty()
        };
        let res = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    fn concrete(path: &str) -> String {
        path.replace("{id}", "0b0f7a52-3c3a-4d43-9d86-0d2f9d0c4b11")
            .replace("{message_id}", "5c9c1b0e-4f3b-4c1a-8f0e-6f2a3a9b7d20")
    }

    #[tokio::test]
    async fn the_router_serves_exactly_the_route_table() {
        let app = crate::router(unreachable_state());
        for route in ROUTES {
            let path = concrete(route.path);
            for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
                let (status, body) = call(&app, method, &path).await;
                if route.methods.contains(&method) {
                    let route_missing = status == StatusCode::NOT_FOUND
                        && body["error"]
                            .as_str()
                            .is_some_and(|e| e.starts_with("no route"));
                    assert!(
                        !route_missing && status != StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {path}: {status} {body}"
                    );
                } else {
                    assert_eq!(
                        status,
                        StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {path}: {body}"
                    );
                    assert!(
                        body["error"].is_string() && body["code"].is_string(),
                        "{method} {path}: {body}"
                    );
                }
            }
        }
        let (status, body) = call(&app, "GET", "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["code"], "NOT_FOUND");
    }

    #[tokio::test]
    async fn an_unreachable_session_service_is_a_503_error_body() {
        let app = crate::router(unreachable_state());
        let (status, body) = call(&app, "GET", &concrete("/sessions/{id}")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["code"], "UNAVAILABLE");
        assert!(body["details"].is_object());
        let (status, body) = call(&app, "GET", "/health").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["components"]["session"], "unreachable");
        let (status, body) = call(&app, "GET", "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["ready"], false);
    }
}
