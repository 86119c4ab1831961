//! A fake Kubernetes API behind kube's mock service (`tower_test::mock::pair`): objects are kept
//! in a map keyed by their API path; server-side apply replaces the stored object, merge and
//! JSON patches edit it, GET and DELETE read and remove it. Every request is recorded with
//! whether it changed the stored state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// One request the operator made.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    /// The JSON body (`Null` when there was none).
    pub body: Value,
    /// Whether the request changed a stored object.
    pub changed: bool,
}

impl Call {
    /// `METHOD path?query`, for compact assertions; empty query parameters are dropped (kube
    /// writes `?&force=true&...`, which servers read as `?force=true&...`).
    pub fn line(&self) -> String {
        let query: Vec<&str> = self.query.split('&').filter(|p| !p.is_empty()).collect();
        if query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, query.join("&"))
        }
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    calls: Vec<Call>,
    /// Paths whose writes are rejected with this message (422 Invalid).
    rejected: BTreeMap<String, String>,
}

/// The fake API's state, shared with the task serving the mock.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    /// A client whose every request is served by a new fake API.
    pub fn start() -> (Client, FakeApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = FakeApi::default();
        let server = fake.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let response = server.serve(request).await;
                respond.send_response(response);
            }
        });
        (Client::new(service, "default"), fake)
    }

    /// Stores an object at `path`.
    pub fn put(&self, path: &str, object: Value) {
        self.lock().objects.insert(path.to_owned(), object);
    }

    /// Rejects every write to `path` with a 422 carrying `message`.
    pub fn reject(&self, path: &str, message: &str) {
        self.lock()
            .rejected
            .insert(path.to_owned(), message.to_owned());
    }

    /// Removes the object stored at `path`.
    pub fn remove(&self, path: &str) {
        self.lock().objects.remove(path);
    }

    /// The object stored at `path`.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.lock().objects.get(path).cloned()
    }

    /// The requests recorded since the last call, in order.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Answers one request from the stored state, recording it.
    pub async fn serve(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request bodies are JSON")
        };
        let mut state = self.lock();
        let rejection = state
            .rejected
            .get(&path)
            .filter(|_| method != "GET")
            .cloned();
        let (status, reply, changed) = match method.as_str() {
            _ if rejection.is_some() => (
                StatusCode::UNPROCESSABLE_ENTITY,
                status_body(422, "Invalid", rejection.as_deref().unwrap_or_default()),
                false,
            ),
            "GET" => match state.objects.get(&path) {
                Some(object) => (StatusCode::OK, object.clone(), false),
                None => not_found(&path),
            },
            "DELETE" => match state.objects.remove(&path) {
                Some(object) => (StatusCode::OK, object, true),
                None => not_found(&path),
            },
            "PATCH" if content_type == "application/apply-patch+yaml" => {
                let changed = state.objects.get(&path) != Some(&body);
                state.objects.insert(path.clone(), body.clone());
                (StatusCode::OK, body.clone(), changed)
            }
            "PATCH" => {
                let target = path.strip_suffix("/status").unwrap_or(&path).to_owned();
                match state.objects.get(&target).cloned() {
                    None => not_found(&path),
                    Some(before) => {
                        let after = match content_type.as_str() {
                            "application/merge-patch+json" => Ok(merge(before.clone(), &body)),
                            "application/json-patch+json" => json_patch(before.clone(), &body),
                            other => panic!("unexpected patch type {other}"),
                        };
                        match after {
                            Ok(after) => {
                                let changed = after != before;
                                state.objects.insert(target, after.clone());
                                (StatusCode::OK, after, changed)
                            }
                            Err(message) => (
                                StatusCode::UNPROCESSABLE_ENTITY,
                                status_body(422, "Invalid", &message),
                                false,
                            ),
                        }
                    }
                }
            }
            other => panic!("the operator should not {other} {path}"),
        };
        state.calls.push(Call {
            method,
            path,
            query,
            content_type,
            body,
            changed,
        });
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap()
    }
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": reason, "message": message, "code": code})
}

fn not_found(path: &str) -> (StatusCode, Value, bool) {
    (
        StatusCode::NOT_FOUND,
        status_body(404, "NotFound", &format!("{path} not found")),
        false,
    )
}

/// RFC 7386 JSON merge patch.
fn merge(mut target: Value, patch: &Value) -> Value {
    let Value::Object(fields) = patch else {
        return patch.clone();
    };
    if !target.is_object() {
        target = json!({});
    }
    let object = target.as_object_mut().unwrap();
    for (key, value) in fields {
        if value.is_null() {
            object.remove(key);
        } else {
            let current = object.remove(key).unwrap_or(Value::Null);
            object.insert(key.clone(), merge(current, value));
        }
    }
    target
}

/// The JSON patch operations the finalizer helper uses: test, add, remove.
fn json_patch(mut target: Value, ops: &Value) -> Result<Value, String> {
    for op in ops.as_array().expect("a JSON patch is a list") {
        let path = op["path"].as_str().unwrap();
        let (parent_path, last) = path.rsplit_once('/').unwrap();
        match op["op"].as_str().unwrap() {
            "test" => {
                let actual = target.pointer(path).cloned().unwrap_or(Value::Null);
                if actual != op["value"] {
                    return Err(format!(
                        "test of {path} failed: {actual} != {}",
                        op["value"]
                    ));
                }
            }
            "add" => {
                let parent = target.pointer_mut(parent_path).ok_or("no parent")?;
                match parent {
                    Value::Array(items) if last == "-" => items.push(op["value"].clone()),
                    Value::Object(fields) => {
                        fields.insert(last.to_owned(), op["value"].clone());
                    }
                    _ => return Err(format!("cannot add at {path}")),
                }
            }
            "remove" => {
                let parent = target.pointer_mut(parent_path).ok_or("no parent")?;
                match parent {
                    Value::Array(items) => {
                        let index: usize = last.parse().map_err(|_| "bad index")?;
                        if index >= items.len() {
                            return Err(format!("no {path}"));
                        }
                        items.remove(index);
                    }
                    Value::Object(fields) => {
                        fields.remove(last).ok_or(format!("no {path}"))?;
                    }
                    _ => return Err(format!("cannot remove {path}")),
                }
            }
            other => panic!("unexpected JSON patch op {other}"),
        }
    }
    Ok(target)
}
