//! HTTP contract tests: the real gateway in front of the real session service (SQLite in a
//! tempdir), both in this process on `127.0.0.1:0`, driven with reqwest.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cognition_gateway::Config;
use cognition_session::domain::{NewMessage, Role, ToolCall};
use cognition_session::event::{EventKind, RunStatus};
use cognition_session::{EventLog, Store};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);

/// Polls `check` until it returns true, failing after `WAIT`.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Stack {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    events: EventLog,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

struct Options {
    scoping: bool,
    max_body_bytes: usize,
    cors_origins: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scoping: false,
            max_body_bytes: 64 * 1024,
            cors_origins: vec!["*".into()],
        }
    }
}

/// Starts the session service and the gateway. The session service runs through
/// `cognition_session::serve` with an event log this test keeps, to append events.
async fn start(options: Options) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let mut session_config = cognition_session::Config::embedded(dir.path().to_path_buf());
    session_config.scoping_enabled = options.scoping;
    let store = cognition_session::store::open(&session_config)
        .await
        .unwrap();
    let events = EventLog::new(store.clone());
    let shutdown = CancellationToken::new();
    let session_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let session_addr = session_listener.local_addr().unwrap();
    tokio::spawn({
        let (events, shutdown) = (events.clone(), shutdown.clone());
        async move {
            cognition_session::serve(&session_config, events, session_listener, shutdown).await
        }
    });
    let config = Config {
        session_url: format!("http://{session_addr}"),
        scoping_enabled: options.scoping,
        max_body_bytes: options.max_body_bytes,
        cors_origins: options.cors_origins,
        sse_keepalive_ms: 300,
        ..Config::default()
    };
    let stack = start_gateway(config, shutdown, events, store, dir).await;
    let ready = || async { stack.get("/ready").await.0 == StatusCode::OK };
    wait_until("the gateway to be ready", ready).await;
    stack
}

async fn start_gateway(
    config: Config,
    shutdown: CancellationToken,
    events: EventLog,
    store: Arc<dyn Store>,
    dir: tempfile::TempDir,
) -> Stack {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(cognition_gateway::run(config, listener, shutdown.clone()));
    Stack {
        base,
        http: reqwest::Client::new(),
        shutdown,
        events,
        store,
        _dir: dir,
    }
}

impl Stack {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let res = req.send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "non-JSON body ({status}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, body, headers)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, b, _) = self.send(self.http.get(self.url(path))).await;
        (s, b)
    }

    async fn json(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, b, _) = self
            .send(self.http.request(method, self.url(path)).json(&body))
            .await;
        (s, b)
    }

    async fn create(&self, body: Value) -> Value {
        let (status, session) = self.json(Method::POST, "/sessions", body).await;
        assert_eq!(status, StatusCode::CREATED, "{session}");
        session
    }
}

/// Asserts the contract's error body and returns its code.
fn error_code(body: &Value) -> &str {
    assert!(body["error"].is_string(), "no error message in {body}");
    assert!(body["details"].is_object(), "no details in {body}");
    body["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no code in {body}"))
}

#[tokio::test]
async fn session_lifecycle() {
    let stack = start(Options::default()).await;
    let (status, session, headers) = stack
        .send(
            stack
                .http
                .post(stack.url("/sessions"))
                .json(&json!({"title": "t", "metadata": {"repo": "a/b"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    Uuid::parse_str(&id).unwrap();
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(headers["location"], format!("/sessions/{id}").as_str());
    assert_eq!(session["title"], "t");
    assert_eq!(session["metadata"], json!({"repo": "a/b"}));
    assert_eq!(session["status"], "active");
    assert_eq!(session["agent_name"], "default");
    assert_eq!(session["message_count"], 0);
    for field in ["thread_id", "config", "scopes", "created_at", "updated_at"] {
        assert!(
            session.get(field).is_some(),
            "{field} missing from {session}"
        );
    }
    chrono::DateTime::parse_from_rfc3339(session["created_at"].as_str().unwrap()).unwrap();
    assert!(session["created_at"].as_str().unwrap().ends_with('Z'));

    let (status, got) = stack.get(&format!("/sessions/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, session);

    let (status, patched) = stack
        .json(
            Method::PATCH,
            &format!("/sessions/{id}"),
            json!({"title": "renamed", "metadata": {"repo": "a/b", "env": "dev"}, "config": {"temperature": 0.5, "max_tokens": 100}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["title"], "renamed");
    assert_eq!(patched["metadata"], json!({"env": "dev", "repo": "a/b"}));
    assert_eq!(patched["config"]["temperature"], 0.5);
    assert_eq!(patched["config"]["max_tokens"], 100);
    assert_eq!(patched["config"]["model"], Value::Null);

    let other = stack
        .create(json!({"title": "other", "metadata": {"repo": "c/d"}}))
        .await;

    let (status, list) = stack.get("/sessions?metadata.repo=a/b").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 1);
    assert_eq!(list["sessions"][0]["id"], id.as_str());
    assert_eq!(list["next_cursor"], Value::Null);
    let (_, list) = stack
        .get("/sessions?metadata.repo=a%2Fb&metadata.env=dev")
        .await;
    assert_eq!(list["total"], 1);
    let (status, list) = stack.get("/sessions?metadata.repo=x/y").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 0);
    assert_eq!(list["sessions"], json!([]));
    let (_, list) = stack.get("/sessions").await;
    assert_eq!(list["total"], 2);

    // Cursor paging walks every session once.
    let (_, page) = stack.get("/sessions?limit=1").await;
    assert_eq!(page["sessions"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let (status, page2) = stack
        .get(&format!("/sessions?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page2}");
    let mut seen = vec![
        page["sessions"][0]["id"].clone(),
        page2["sessions"][0]["id"].clone(),
    ];
    seen.sort_by_key(|v| v.to_string());
    let mut expected = vec![json!(id), other["id"].clone()];
    expected.sort_by_key(|v| v.to_string());
    assert_eq!(seen, expected);

    let (status, body, _) = stack
        .send(stack.http.delete(stack.url(&format!("/sessions/{id}"))))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    let (status, body) = stack.get(&format!("/sessions/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "SESSION_NOT_FOUND");
    let (status, body, _) = stack
        .send(stack.http.delete(stack.url(&format!("/sessions/{id}"))))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "SESSION_NOT_FOUND");
}

#[tokio::test]
async fn messages_are_listed_with_tool_calls() {
    let stack = start(Options::default()).await;
    let session = stack.create(json!({})).await;
    let id = session["id"].as_str().unwrap();
    let sid = Uuid::parse_str(id).unwrap();
    let (status, empty) = stack.get(&format!("/sessions/{id}/messages")).await;
    assert_eq!(status, StatusCode::OK, "{empty}");
    assert_eq!(
        empty,
        json!({"messages": [], "total": 0, "has_more": false})
    );

    let user = stack
        .store
        .append_message(sid, NewMessage::text(Role::User, "list files"))
        .await
        .unwrap();
    let mut assistant = NewMessage::text(Role::Assistant, "");
    assistant.tool_calls = vec![ToolCall {
        name: "bash".into(),
        args: json!({"command": "ls -la"}),
        id: "call-1".into(),
    }];
    assistant.model_used = Some("mock".into());
    assistant.parent_id = Some(user.id);
    let assistant = stack.store.append_message(sid, assistant).await.unwrap();

    let (status, page) = stack
        .get(&format!("/sessions/{id}/messages?limit=1&offset=0"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 2);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["messages"][0]["role"], "user");
    assert_eq!(page["messages"][0]["content"], "list files");
    let (_, page) = stack
        .get(&format!("/sessions/{id}/messages?offset=1"))
        .await;
    assert_eq!(page["has_more"], false);
    let m = &page["messages"][0];
    assert_eq!(m["role"], "assistant");
    assert_eq!(
        m["tool_calls"],
        json!([{"name": "bash", "args": {"command": "ls -la"}, "id": "call-1"}])
    );
    assert_eq!(m["model_used"], "mock");
    assert_eq!(m["parent_id"], user.id.to_string().as_str());

    let (status, one) = stack
        .get(&format!("/sessions/{id}/messages/{}", assistant.id))
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(&one, m);
    for key in [
        "id",
        "session_id",
        "role",
        "content",
        "tool_calls",
        "tool_call_id",
        "token_count",
        "model_used",
        "parent_id",
        "created_at",
    ] {
        assert!(one.get(key).is_some(), "{key} missing from {one}");
    }
    let (status, body) = stack
        .get(&format!("/sessions/{id}/messages/{}", Uuid::new_v4()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    error_code(&body);
    let (status, body) = stack
        .get(&format!("/sessions/{id}/messages?limit=abc"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&body), "VALIDATION_ERROR");
    let (status, body) = stack
        .get(&format!("/sessions/{}/messages", Uuid::new_v4()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "SESSION_NOT_FOUND");
}

#[tokio::test]
async fn scoping_isolates_callers() {
    let stack = start(Options {
        scoping: true,
        ..Options::default()
    })
    .await;
    let (status, body) = stack
        .json(Method::POST, "/sessions", json!({"title": "x"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_code(&body), "PERMISSION_DENIED");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("X-Cognition-Scope-User"),
        "{body}"
    );
    let (status, body) = stack.get("/sessions").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "PERMISSION_DENIED");
    let (status, _, _) = stack
        .send(
            stack
                .http
                .get(stack.url("/sessions"))
                .header("X-Cognition-Scope-User", "  "),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let as_user = |user: &'static str, req: reqwest::RequestBuilder| {
        req.header("X-Cognition-Scope-User", user)
    };
    let (status, alice_session, _) = stack
        .send(
            as_user("alice", stack.http.post(stack.url("/sessions")))
                .json(&json!({"title": "alice's"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{alice_session}");
    assert_eq!(alice_session["scopes"], json!({"user": "alice"}));
    let (status, bob_session, _) = stack
        .send(
            as_user("bob", stack.http.post(stack.url("/sessions")))
                .json(&json!({"title": "bob's"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let bob_path = format!("/sessions/{}", bob_session["id"].as_str().unwrap());

    let (status, body, _) = stack
        .send(as_user("alice", stack.http.get(stack.url(&bob_path))))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "SESSION_NOT_FOUND");
    let (status, _, _) = stack
        .send(
            as_user("alice", stack.http.patch(stack.url(&bob_path)))
                .json(&json!({"title": "mine"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = stack
        .send(as_user("alice", stack.http.delete(stack.url(&bob_path))))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = stack
        .send(as_user(
            "alice",
            stack.http.get(stack.url(&format!("{bob_path}/messages"))),
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, list, _) = stack
        .send(as_user("alice", stack.http.get(stack.url("/sessions"))))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 1);
    assert_eq!(list["sessions"][0]["id"], alice_session["id"]);

    // Bob's session is intact and his.
    let (status, body, _) = stack
        .send(as_user("bob", stack.http.get(stack.url(&bob_path))))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["title"], "bob's");

    // Health, readiness and docs need no scope.
    for path in ["/health", "/ready", "/openapi.json"] {
        assert_eq!(stack.get(path).await.0, StatusCode::OK, "{path}");
    }
    let res = stack.http.get(stack.url("/docs")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_body() {
    let stack = start(Options {
        max_body_bytes: 4096,
        ..Options::default()
    })
    .await;
    let session = stack.create(json!({"title": "ok"})).await;
    let path = format!("/sessions/{}", session["id"].as_str().unwrap());

    let raw = |method: Method, path: &str, body: &'static str| {
        stack
            .http
            .request(method, stack.url(path))
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            raw(Method::POST, "/sessions", "{\"title\": "),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "not an object",
            raw(Method::POST, "/sessions", "[1,2]"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "unknown field",
            raw(Method::POST, "/sessions", "{\"titel\": \"x\"}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "wrong type",
            raw(Method::POST, "/sessions", "{\"metadata\": {\"a\": 1}}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "unknown field on PATCH",
            raw(Method::PATCH, &path, "{\"config\": {\"temp\": 1}}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "temperature out of range",
            raw(Method::PATCH, &path, "{\"config\": {\"temperature\": 3}}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "wrong content type",
            stack
                .http
                .post(stack.url("/sessions"))
                .header("content-type", "text/plain")
                .body("{\"title\":\"x\"}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "VALIDATION_ERROR",
        ),
        (
            "oversize body",
            stack
                .http
                .post(stack.url("/sessions"))
                .json(&json!({"title": "x".repeat(5000)})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "bad UUID",
            stack.http.get(stack.url("/sessions/not-a-uuid")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "bad message UUID",
            stack.http.get(stack.url(&format!("{path}/messages/123"))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "title over 200 characters",
            stack
                .http
                .post(stack.url("/sessions"))
                .json(&json!({"title": "x".repeat(201)})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "unknown agent",
            stack
                .http
                .post(stack.url("/sessions"))
                .json(&json!({"agent_name": "no-such-agent"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "bad limit",
            stack.http.get(stack.url("/sessions?limit=0")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "unknown query parameter",
            stack.http.get(stack.url("/sessions?colour=red")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "unknown route",
            stack.http.get(stack.url("/nope")),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "unknown nested route",
            stack.http.get(stack.url(&format!("{path}/nope"))),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "method not allowed",
            stack.http.put(stack.url(&path)),
            StatusCode::METHOD_NOT_ALLOWED,
            "NOT_FOUND",
        ),
        (
            "empty message",
            stack
                .http
                .post(stack.url(&format!("{path}/messages")))
                .json(&json!({"content": ""})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "message without content",
            stack
                .http
                .post(stack.url(&format!("{path}/messages")))
                .json(&json!({})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "bad on_busy",
            stack
                .http
                .post(stack.url(&format!("{path}/messages?on_busy=later")))
                .json(&json!({"content": "hi"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "bad Last-Event-ID",
            stack
                .http
                .get(stack.url(&format!("{path}/events")))
                .header("last-event-id", "abc"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "bad decision",
            stack
                .http
                .post(stack.url(&format!("{path}/resume")))
                .json(&json!({"decision": "maybe", "tool_call_id": "c", "tool_name": "t"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
    ];
    for (what, req, status, code) in cases {
        let (got, body, headers) = stack.send(req).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(error_code(&body), code, "{what}: {body}");
        assert_eq!(headers["content-type"], "application/json", "{what}");
        assert!(headers.contains_key("x-request-id"), "{what}");
    }
    let (_, body, headers) = stack.send(stack.http.put(stack.url(&path))).await;
    assert!(headers.contains_key("allow"), "405 without Allow: {body}");
    // Nothing was half-written: only the first session exists, unchanged.
    let (_, list) = stack.get("/sessions").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["sessions"][0]["title"], "ok");
    assert_eq!(list["sessions"][0]["config"], Value::Null);
}

#[tokio::test]
async fn messages_stream_their_run_and_abort_and_resume_answer() {
    // SendMessage now starts a run (the default model is the mock provider) and the gateway
    // streams it; AbortSession answers success=false on an idle session; ResumeSession (human
    // approval, issue #4) is still UNIMPLEMENTED, which must become a clear JSON 501.
    let stack = start(Options::default()).await;
    let session = stack.create(json!({})).await;
    let path = format!("/sessions/{}", session["id"].as_str().unwrap());
    let mut sse = open_sse(
        &stack,
        stack
            .http
            .post(stack.url(&format!("{path}/messages")))
            .json(&json!({"content": "hello"})),
    )
    .await;
    assert_eq!(sse.frame().await, "retry: 3000");
    let mut names = Vec::new();
    let mut last_id = 0;
    loop {
        let (id, event, data) = sse.event().await;
        let id = id.expect("every event has an id");
        assert!(id > last_id, "ids increase");
        last_id = id;
        names.push(event.clone());
        if event == "done" {
            assert_eq!(data["assistant_data"]["role"], "assistant", "{data}");
            break;
        }
    }
    assert_eq!(
        names.first().map(String::as_str),
        Some("status"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "token"), "{names:?}");
    assert!(sse.ends().await, "the stream ends after done");
    let (status, body) = stack.get(&format!("{path}/messages")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 2, "{body}");

    let (status, body) = stack
        .json(Method::POST, &format!("{path}/abort"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], false, "{body}");
    let (status, body) = stack
        .json(
            Method::POST,
            &format!("{path}/resume"),
            json!({"decision": "approve", "tool_call_id": "c1", "tool_name": "bash"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body}");
    assert_eq!(error_code(&body), "NOT_IMPLEMENTED");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not available yet"),
        "{body}"
    );
    // An unknown session is still a 404 before anything else.
    let (status, body) = stack
        .json(
            Method::POST,
            &format!("/sessions/{}/messages", Uuid::new_v4()),
            json!({"content": "hello"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "SESSION_NOT_FOUND");
}

/// Reads an SSE response incrementally.
struct SseReader {
    res: reqwest::Response,
    buf: String,
}

impl SseReader {
    /// The next frame (without its blank-line terminator).
    async fn frame(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame = self.buf[..end].to_owned();
                self.buf.drain(..end + 2);
                return frame;
            }
            let chunk = tokio::time::timeout(WAIT, self.res.chunk())
                .await
                .expect("timed out waiting for an SSE frame")
                .unwrap()
                .expect("the stream ended");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next frame that is an event (skipping keepalive comments), as (id, event, data).
    async fn event(&mut self) -> (Option<u64>, String, Value) {
        loop {
            let frame = self.frame().await;
            if frame.starts_with(':') {
                continue;
            }
            return parse_event(&frame);
        }
    }

    /// Whether the stream ends (after any remaining frames).
    async fn ends(mut self) -> bool {
        loop {
            match tokio::time::timeout(WAIT, self.res.chunk()).await {
                Ok(Ok(None)) => return true,
                Ok(Ok(Some(_))) => continue,
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }
}

fn parse_event(frame: &str) -> (Option<u64>, String, Value) {
    let mut id = None;
    let mut event = String::new();
    let mut data = String::new();
    for line in frame.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.parse().unwrap());
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = v.to_owned();
        } else if let Some(v) = line.strip_prefix("data: ") {
            assert!(data.is_empty(), "data on several lines: {frame}");
            data = v.to_owned();
        } else {
            panic!("unexpected line {line:?} in {frame:?}");
        }
    }
    (
        id,
        event,
        serde_json::from_str(&data).unwrap_or_else(|_| panic!("bad data in {frame:?}")),
    )
}

async fn open_sse(stack: &Stack, req: reqwest::RequestBuilder) -> SseReader {
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let _ = stack;
    SseReader {
        res,
        buf: String::new(),
    }
}

#[tokio::test]
async fn events_replay_then_follow_live() {
    let stack = start(Options::default()).await;
    let session = stack.create(json!({})).await;
    let id = session["id"].as_str().unwrap().to_owned();
    let sid = Uuid::parse_str(&id).unwrap();
    let run = Some(Uuid::new_v4());
    let append = |kind: EventKind| {
        let events = stack.events.clone();
        async move { events.append(sid, run, kind).await.unwrap().seq }
    };
    append(EventKind::Status {
        status: RunStatus::Thinking,
    })
    .await;
    append(EventKind::Token {
        content: "Hel".into(),
    })
    .await;
    append(EventKind::ToolCall {
        name: "bash".into(),
        args: json!({"command": "ls\n-la"}),
        id: "c1".into(),
    })
    .await;

    let mut sse = open_sse(
        &stack,
        stack
            .http
            .get(stack.url(&format!("/sessions/{id}/events?after=0"))),
    )
    .await;
    assert_eq!(
        sse.frame().await,
        "retry: 3000",
        "the first frame is a retry hint"
    );
    assert_eq!(
        sse.event().await,
        (Some(1), "status".into(), json!({"status": "thinking"}))
    );
    assert_eq!(
        sse.event().await,
        (Some(2), "token".into(), json!({"content": "Hel"}))
    );
    assert_eq!(
        sse.event().await,
        (
            Some(3),
            "tool_call".into(),
            json!({"name": "bash", "args": {"command": "ls\n-la"}, "id": "c1"})
        )
    );
    // Silence: keepalive comments (every 300 ms in this test).
    assert_eq!(sse.frame().await, ": keepalive");
    // The stream is counted while it is open.
    let (_, health) = stack.get("/health").await;
    assert!(health["active_sessions"].as_u64().unwrap() >= 1, "{health}");
    // Live events arrive on the open stream.
    append(EventKind::Error {
        message: "stopped by user".into(),
        code: "ABORTED".into(),
    })
    .await;
    assert_eq!(
        sse.event().await,
        (
            Some(4),
            "error".into(),
            json!({"message": "stopped by user", "code": "ABORTED"})
        )
    );
    drop(sse);

    // Reconnecting with Last-Event-ID replays only what was missed.
    let mut sse = open_sse(
        &stack,
        stack
            .http
            .get(stack.url(&format!("/sessions/{id}/events?after=0")))
            .header("Last-Event-ID", "2"),
    )
    .await;
    assert_eq!(sse.frame().await, "retry: 3000");
    assert_eq!(sse.event().await.0, Some(3));
    assert_eq!(sse.event().await.0, Some(4));
    drop(sse);
    let mut sse = open_sse(
        &stack,
        stack
            .http
            .get(stack.url(&format!("/sessions/{id}/events?after=3"))),
    )
    .await;
    sse.frame().await;
    assert_eq!(sse.event().await.0, Some(4));
    drop(sse);

    // POST …/messages with Last-Event-ID joins the run instead of starting another, and ends
    // after the run's `done`.
    let assistant = stack
        .store
        .append_message(sid, NewMessage::text(Role::Assistant, "Hello"))
        .await
        .unwrap();
    append(EventKind::Done {
        assistant_data: assistant.clone(),
    })
    .await;
    let mut sse = open_sse(
        &stack,
        stack
            .http
            .post(stack.url(&format!("/sessions/{id}/messages")))
            .header("Last-Event-ID", "3")
            .json(&json!({"content": "hello"})),
    )
    .await;
    sse.frame().await;
    assert_eq!(sse.event().await.0, Some(4));
    let (seq, event, data) = sse.event().await;
    assert_eq!((seq, event.as_str()), (Some(5), "done"));
    assert_eq!(
        data["assistant_data"]["id"],
        assistant.id.to_string().as_str()
    );
    assert_eq!(data["assistant_data"]["role"], "assistant");
    assert_eq!(data["assistant_data"]["content"], "Hello");
    assert!(sse.ends().await, "the joined run's stream ends after done");

    // Unknown sessions are a JSON 404 before any stream starts.
    let (status, body) = stack
        .get(&format!("/sessions/{}/events", Uuid::new_v4()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "SESSION_NOT_FOUND");

    // Every stream is gone once their clients are: the gateway's counter goes back down, and
    // the gRPC streams were dropped (the session service has no watcher left).
    let counted = || async {
        let (_, health) = stack.get("/health").await;
        health["active_sessions"] == 0
    };
    wait_until("open streams to be released", counted).await;
    let unwatched = || async { stack.events.hub().watched_sessions() == 0 };
    wait_until("the session service to drop its watchers", unwatched).await;
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let stack = start(Options::default()).await;
    let session = stack.create(json!({})).await;
    let id = session["id"].as_str().unwrap();
    let mut sse = open_sse(
        &stack,
        stack.http.get(stack.url(&format!("/sessions/{id}/events"))),
    )
    .await;
    sse.frame().await;
    stack.shutdown.cancel();
    assert!(sse.ends().await, "the stream ends on shutdown");
}

#[tokio::test]
async fn health_ready_and_docs() {
    let stack = start(Options::default()).await;
    let (status, health) = stack.get("/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(health["circuit_breakers"], json!([]));
    assert!(health["active_sessions"].is_u64());
    chrono::DateTime::parse_from_rfc3339(health["timestamp"].as_str().unwrap()).unwrap();
    assert_eq!(
        stack.get("/ready").await,
        (StatusCode::OK, json!({"ready": true}))
    );

    let (status, spec) = stack.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1."));
    for path in [
        "/sessions",
        "/sessions/{id}",
        "/sessions/{id}/messages",
        "/sessions/{id}/events",
        "/health",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} not documented");
    }
    let res = stack.http.get(stack.url("/docs")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = res.text().await.unwrap();
    assert!(html.contains("/openapi.json"));
    assert!(
        !html.contains("https://"),
        "the docs page must not load anything from the network"
    );
}

#[tokio::test]
async fn health_and_ready_are_503_when_the_session_service_is_down() {
    // A port that was just free: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let session_config = cognition_session::Config::embedded(dir.path().to_path_buf());
    let store = cognition_session::store::open(&session_config)
        .await
        .unwrap();
    let config = Config {
        session_url: format!("http://{closed}"),
        ..Config::default()
    };
    let stack = start_gateway(
        config,
        CancellationToken::new(),
        EventLog::new(store.clone()),
        store,
        dir,
    )
    .await;
    let up = || async { reqwest::get(stack.url("/health")).await.is_ok() };
    wait_until("the gateway to listen", up).await;

    let (status, health) = stack.get("/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["components"]["session"], "unreachable");
    assert_eq!(health["degraded"], json!(["session"]));
    assert_eq!(error_code(&health), "UNAVAILABLE");
    let (status, ready) = stack.get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["ready"], false);
    // Calls that need the session service fail cleanly.
    let (status, body) = stack.get(&format!("/sessions/{}", Uuid::new_v4())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "UNAVAILABLE");
    // Docs do not.
    assert_eq!(stack.get("/openapi.json").await.0, StatusCode::OK);
}

#[tokio::test]
async fn cors() {
    let stack = start(Options::default()).await;
    let res = stack
        .http
        .request(Method::OPTIONS, stack.url("/sessions"))
        .header("Origin", "http://app.test")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type,x-cognition-scope-user",
        )
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let methods = res.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    for m in ["GET", "POST", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let res = stack
        .http
        .get(stack.url("/sessions"))
        .header("Origin", "http://app.test")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    drop(stack);

    let stack = start(Options {
        cors_origins: vec!["http://app.test".into()],
        ..Options::default()
    })
    .await;
    let preflight = |origin: &'static str| {
        stack
            .http
            .request(Method::OPTIONS, stack.url("/sessions"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .send()
    };
    let res = preflight("http://app.test").await.unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://app.test"
    );
    let res = preflight("http://evil.test").await.unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn request_ids_are_kept_and_internal_details_never_leak() {
    let stack = start(Options::default()).await;
    let (_, _, headers) = stack
        .send(
            stack
                .http
                .get(stack.url("/health"))
                .header("x-request-id", "req-123"),
        )
        .await;
    assert_eq!(headers["x-request-id"], "req-123");
    let (_, _, a) = stack.send(stack.http.get(stack.url("/health"))).await;
    let (_, _, b) = stack.send(stack.http.get(stack.url("/health"))).await;
    assert_ne!(a["x-request-id"], b["x-request-id"]);

    // A broken database behind the session service: the client gets a generic message and the
    // request id that names the log entry, nothing of the cause.
    stack.store.close().await;
    let (status, body, headers) = stack.send(stack.http.get(stack.url("/sessions"))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(error_code(&body), "INTERNAL_ERROR");
    assert_eq!(body["error"], "internal error");
    assert_eq!(
        body["details"]["request_id"],
        headers["x-request-id"].to_str().unwrap()
    );
    assert_eq!(body["details"].as_object().unwrap().len(), 1, "{body}");
}
