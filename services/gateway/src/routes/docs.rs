//! `GET /openapi.json` (hand-written OpenAPI 3.1, `assets/openapi.json`) and `GET /docs` (a
//! self-contained page, `assets/docs.html`, that renders it without any external resource).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

/// The OpenAPI 3.1 document of every route the gateway serves.
pub const OPENAPI_JSON: &str = include_str!("../../assets/openapi.json");

/// The documentation page.
pub const DOCS_HTML: &str = include_str!("../../assets/docs.html");

fn with_type(body: &'static str, content_type: &'static str) -> Response {
    let mut res = body.into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    with_type(OPENAPI_JSON, "application/json")
}

/// `GET /docs`.
pub async fn docs() -> Response {
    with_type(DOCS_HTML, "text/html; charset=utf-8")
}
