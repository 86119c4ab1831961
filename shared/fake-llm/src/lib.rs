//! A scripted fake LLM HTTP server for tests and benchmarks.
//!
//! [`FakeLlm::start`] serves real HTTP on `127.0.0.1:0` and speaks both streaming wire formats
//! exactly as the real APIs stream them:
//! - OpenAI chat completions: `POST /v1/chat/completions` (and `GET /v1/models`);
//! - Anthropic messages: `POST /v1/messages`.
//!
//! Replies are scripted with [`FakeLlm::push`]: each request consumes the next [`Reply`] (text
//! tokens, tool calls with fragmented arguments, HTTP errors, broken or hanging streams, token
//! delays, usage numbers); when the queue is empty the default reply (a short text answer) is
//! used. Every request is recorded ([`FakeLlm::requests`]) for assertions on headers and body.
//! The server checks what the real APIs check before answering (a required key when one is set
//! with [`FakeLlm::require_api_key`], Anthropic's `anthropic-version` header and `max_tokens`):
//! such rejected requests are recorded but consume no reply.
//!
//! ```no_run
//! # async fn demo() {
//! use cognition_fake_llm::{FakeLlm, Reply};
//! use serde_json::json;
//!
//! let llm = FakeLlm::start().await;
//! llm.push(Reply::error(500, "boom"));
//! llm.push(Reply::tool_call("call_1", "execute", json!({"command": "echo hi"})).usage(20, 7));
//! llm.push(Reply::text("It printed hi."));
//! // point a client at llm.openai_base_url() (…/v1) or llm.anthropic_base_url()
//! assert_eq!(llm.request_count(), 0);
//! # }
//! ```
//!
//! Test-only: nothing here belongs in a production binary.

mod anthropic;
mod frames;
mod openai;
mod reply;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub use crate::reply::{DEFAULT_INPUT_TOKENS, Reply, ToolCall, Usage};

/// The text of the default reply, used when no scripted reply is queued.
pub const DEFAULT_REPLY_TEXT: &str = "Hello from the fake LLM.";

/// Which wire format a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Anthropic,
    Other,
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub api: Api,
    /// Header names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` when the body was empty or not JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    queue: VecDeque<Reply>,
    default: Reply,
    requests: Vec<RecordedRequest>,
    required_key: Option<String>,
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Mutex<Shared>>,
    open: Arc<AtomicUsize>,
}

impl AppState {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panicking test thread must not hide every later assertion behind a poison error.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake LLM server; stops when dropped.
pub struct FakeLlm {
    addr: SocketAddr,
    state: AppState,
    task: tokio::task::JoinHandle<()>,
}

impl FakeLlm {
    /// Starts a server on `127.0.0.1:0`. Panics when no port can be bound (test helper).
    pub async fn start() -> FakeLlm {
        match FakeLlm::try_start().await {
            Ok(llm) => llm,
            Err(e) => panic!("fake LLM: cannot bind 127.0.0.1:0: {e}"),
        }
    }

    /// Starts a server on `127.0.0.1:0`.
    pub async fn try_start() -> std::io::Result<FakeLlm> {
        FakeLlm::try_start_on(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts a server on `addr` (the `cognition-fake-llm` binary listens on `0.0.0.0:<port>`
    /// inside a container; tests use [`FakeLlm::start`]).
    pub async fn try_start_on(addr: SocketAddr) -> std::io::Result<FakeLlm> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = AppState {
            shared: Arc::new(Mutex::new(Shared {
                queue: VecDeque::new(),
                default: Reply::text(DEFAULT_REPLY_TEXT),
                requests: Vec::new(),
                required_key: None,
            })),
            open: Arc::new(AtomicUsize::new(0)),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/messages", post(messages))
            .route("/v1/models", get(models))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(state.clone());
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeLlm { addr, state, task })
    }

    /// `http://127.0.0.1:<port>` (no path).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL an OpenAI client expects: `http://127.0.0.1:<port>/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// The base URL an Anthropic client expects: `http://127.0.0.1:<port>`.
    pub fn anthropic_base_url(&self) -> String {
        self.url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues a reply; each model request consumes one, in order.
    pub fn push(&self, reply: Reply) {
        self.state.lock().queue.push_back(reply);
    }

    /// Queues several replies.
    pub fn push_all(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().queue.extend(replies);
    }

    /// Replaces the reply used when the queue is empty (default: [`DEFAULT_REPLY_TEXT`]).
    pub fn set_default(&self, reply: Reply) {
        self.state.lock().default = reply;
    }

    /// Requires this key (`Authorization: Bearer` for OpenAI, `x-api-key` for Anthropic);
    /// other requests get the provider's 401 and consume no reply.
    pub fn require_api_key(&self, key: &str) {
        self.state.lock().required_key = Some(key.to_owned());
    }

    /// Scripted replies not consumed yet.
    pub fn pending_replies(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().requests.clone()
    }

    /// The number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.state.lock().requests.len()
    }

    /// Response streams currently open (a stream closes when it ends or, at its next write,
    /// when the client has gone away).
    pub fn open_streams(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// Waits until at least `count` requests arrived; false on timeout.
    pub async fn wait_for_requests(&self, count: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.request_count() >= count)
            .await
    }

    /// Waits until no response stream is open; false on timeout.
    pub async fn wait_for_streams_closed(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.open_streams() == 0).await
    }

    async fn wait_until(&self, timeout: Duration, condition: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if condition() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(state: &AppState, path: &str, api: Api, headers: &HeaderMap, body: &Value) -> usize {
    let mut shared = state.lock();
    shared.requests.push(RecordedRequest {
        method: "POST".to_owned(),
        path: path.to_owned(),
        api,
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone(),
    });
    shared.requests.len()
}

/// Records the request, runs the provider's checks, then takes the next reply.
fn accept(
    state: &AppState,
    path: &str,
    api: Api,
    headers: &HeaderMap,
    raw: &Bytes,
    check: impl FnOnce(Option<&str>, &Value) -> Result<(), (u16, Value)>,
    invalid_json: impl FnOnce(&str) -> Value,
) -> Result<(usize, Reply, Value), (u16, Value)> {
    let body: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
    let number = record(state, path, api, headers, &body);
    if body.is_null() {
        return Err((400, invalid_json("the body is not valid JSON")));
    }
    let required = state.lock().required_key.clone();
    check(required.as_deref(), &body)?;
    let reply = {
        let mut shared = state.lock();
        match shared.queue.pop_front() {
            Some(reply) => reply,
            None => shared.default.clone(),
        }
    };
    Ok((number, reply, body))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let accepted = accept(
        &state,
        "/v1/chat/completions",
        Api::OpenAi,
        &headers,
        &raw,
        |key, body| openai::check(header_str(&headers, "authorization"), key, body),
        |m| openai::error_json(400, m, None),
    );
    let (number, reply, body) = match accepted {
        Ok(v) => v,
        Err((status, error)) => return json_response(status, &error, &[]),
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if let reply::Body::Error {
        status,
        message,
        raw_body,
    } = &reply.body
    {
        return error_response(
            *status,
            message,
            raw_body.as_deref(),
            &reply.headers,
            |s, m| openai::error_json(s, m, None),
        );
    }
    let call = openai::Call::new(number, &body, unix_now());
    if is_streaming(&body) {
        let (frames, tail) = openai::stream(&reply, &call);
        sse_response(&state, frames, tail, &reply)
    } else {
        json_response(200, &openai::complete(&reply, &call), &reply.headers)
    }
}

async fn messages(State(state): State<AppState>, headers: HeaderMap, raw: Bytes) -> Response {
    let accepted = accept(
        &state,
        "/v1/messages",
        Api::Anthropic,
        &headers,
        &raw,
        |key, body| {
            anthropic::check(
                header_str(&headers, "x-api-key"),
                header_str(&headers, "anthropic-version"),
                key,
                body,
            )
        },
        |m| anthropic::error_json(400, m),
    );
    let (number, reply, body) = match accepted {
        Ok(v) => v,
        Err((status, error)) => return json_response(status, &error, &[]),
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if let reply::Body::Error {
        status,
        message,
        raw_body,
    } = &reply.body
    {
        return error_response(
            *status,
            message,
            raw_body.as_deref(),
            &reply.headers,
            anthropic::error_json,
        );
    }
    let call = anthropic::Call::new(number, &body);
    if is_streaming(&body) {
        let (frames, tail) = anthropic::stream(&reply, &call);
        sse_response(&state, frames, tail, &reply)
    } else {
        json_response(200, &anthropic::complete(&reply, &call), &reply.headers)
    }
}

async fn models() -> Response {
    json_response(
        200,
        &json!({"object": "list", "data": [
            {"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake-llm"}
        ]}),
        &[],
    )
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "fake LLM: unknown path").into_response()
}

fn is_streaming(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn error_response(
    status: u16,
    message: &str,
    raw_body: Option<&str>,
    headers: &[(String, String)],
    error_json: impl FnOnce(u16, &str) -> Value,
) -> Response {
    match raw_body {
        Some(raw) => with_headers(
            Response::builder()
                .status(status)
                .body(Body::from(raw.to_owned())),
            headers,
        ),
        None => json_response(status, &error_json(status, message), headers),
    }
}

fn json_response(status: u16, body: &Value, headers: &[(String, String)]) -> Response {
    with_headers(
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        headers,
    )
}

fn sse_response(
    state: &AppState,
    frames: Vec<frames::Frame>,
    tail: frames::Tail,
    reply: &Reply,
) -> Response {
    let open = frames::OpenGuard::new(state.open.clone());
    let body = Body::from_stream(frames::play(frames, tail, reply.token_delay, open));
    with_headers(
        Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(body),
        &reply.headers,
    )
}

fn with_headers(
    response: Result<Response, axum::http::Error>,
    headers: &[(String, String)],
) -> Response {
    let mut response = match response {
        Ok(r) => r,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
