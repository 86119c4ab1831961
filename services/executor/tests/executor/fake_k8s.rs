//! A fake Kubernetes API for the Kubernetes backend's tests, served through kube's mock service
//! (`tower_test::mock::pair`): real HTTP requests as kube builds them (method, path, query,
//! JSON body), answered from an in-memory store of pods, sandbox claims, Sandboxes, templates
//! and CRDs, with the kubelet's and the agent-sandbox controller's part played too: a pod (or a
//! claimed Sandbox) "runs" as a real `cognition-sandbox-agent` process on its own loopback
//! address (`127.x.y.z`, one port for all, as pods share a port on different IPs), in its own
//! workspace folder, with the token from the pod's environment. Deleting the object kills the
//! agent and everything it started.
//!
//! Every request is recorded, so tests can check exactly what the backend asked for.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tempfile::TempDir;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Option<Value>,
}

/// What the fake cluster holds.
#[derive(Default)]
struct State {
    /// `(collection path, name) → object`.
    objects: BTreeMap<(String, String), Value>,
    crds: BTreeSet<String>,
    agents: HashMap<String, Child>,
    requests: Vec<Recorded>,
    next_rv: u64,
    /// The token the agent-sandbox template gives agents.
    template_token: String,
    /// Names whose pods never start (image pull failures).
    broken_image: Option<String>,
}

/// A fake cluster; clone the client with [`FakeCluster::client`].
pub struct FakeCluster {
    state: Arc<Mutex<State>>,
    root: TempDir,
    pub agent_port: u16,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub const POD_PATH: &str = "/api/v1/namespaces/{ns}/pods";
pub const CLAIMS: &str = "/apis/extensions.agents.x-k8s.io/v1alpha1/namespaces/{ns}/sandboxclaims";
pub const SANDBOXES: &str = "/apis/agents.x-k8s.io/v1alpha1/namespaces/{ns}/sandboxes";
pub const TEMPLATES: &str =
    "/apis/extensions.agents.x-k8s.io/v1alpha1/namespaces/{ns}/sandboxtemplates";
pub const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

impl FakeCluster {
    /// An empty cluster with the agent-sandbox CRDs installed and a `cognition-sandbox`
    /// template in `ns` (whose agents use `template_token`).
    pub fn new(ns: &str, template_token: &str) -> Self {
        let state = State {
            template_token: template_token.to_owned(),
            crds: [
                "sandboxes.agents.x-k8s.io",
                "sandboxclaims.extensions.agents.x-k8s.io",
                "sandboxtemplates.extensions.agents.x-k8s.io",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect(),
            ..State::default()
        };
        let cluster = Self {
            state: Arc::new(Mutex::new(state)),
            root: tempfile::tempdir().expect("tempdir"),
            agent_port: 20_000 + fastrand::u16(..10_000),
        };
        let template = json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
            "kind": "SandboxTemplate",
            "metadata": {"name": "cognition-sandbox", "namespace": ns},
            "spec": {"podTemplate": {"spec": {"containers": [{"name": "sandbox", "image": "cognition-sandbox:latest"}]}}}
        });
        lock(&cluster.state).objects.insert(
            (TEMPLATES.replace("{ns}", ns), "cognition-sandbox".into()),
            template,
        );
        cluster
    }

    /// Removes a CRD (to test the startup check).
    pub fn remove_crd(&self, name: &str) {
        lock(&self.state).crds.remove(name);
    }

    /// Pods of this image never start (`ImagePullBackOff`).
    pub fn break_image(&self, image: &str) {
        lock(&self.state).broken_image = Some(image.to_owned());
    }

    /// A kube client talking to this cluster (each call serves a new mock connection).
    pub fn client(&self) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let state = self.state.clone();
        let root = self.root.path().to_owned();
        let port = self.agent_port;
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.expect("request body");
                let body = (!bytes.is_empty()).then(|| {
                    serde_json::from_slice::<Value>(&bytes).expect("request bodies are JSON")
                });
                let recorded = Recorded {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    body,
                };
                let (status, reply) = serve(&state, &root, port, recorded).await;
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).expect("json")))
                    .expect("response");
                send.send_response(response);
            }
        });
        kube::Client::new(service, "default")
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.state).requests.clear();
    }

    /// The stored object at `collection` (a path with `{ns}` filled) named `name`.
    pub fn object(&self, collection: &str, name: &str) -> Option<Value> {
        lock(&self.state)
            .objects
            .get(&(collection.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Names of the stored objects of a collection.
    pub fn names(&self, collection: &str) -> Vec<String> {
        lock(&self.state)
            .objects
            .keys()
            .filter(|(c, _)| c == collection)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// Agents still running.
    pub fn running_agents(&self) -> usize {
        let mut state = lock(&self.state);
        state
            .agents
            .values_mut()
            .map(|c| matches!(c.try_wait(), Ok(None)))
            .filter(|running| *running)
            .count()
    }

    /// The workspace folder of the pod (or Sandbox) named `name`.
    pub fn workspace(&self, name: &str) -> PathBuf {
        self.root.path().join(name).join("workspace")
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        for (_, child) in state.agents.drain() {
            kill_tree(child);
        }
    }
}

fn not_found(kind: &str, name: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("{kind} \"{name}\" not found"), "reason": "NotFound", "code": 404}),
    )
}

/// Splits `/…/{collection}/{name}` into the collection path and the name.
fn split(path: &str) -> (String, Option<String>) {
    const COLLECTIONS: [&str; 5] = [
        "pods",
        "sandboxclaims",
        "sandboxes",
        "sandboxtemplates",
        "customresourcedefinitions",
    ];
    let parts: Vec<&str> = path.split('/').collect();
    match parts.last() {
        Some(last) if COLLECTIONS.contains(last) => (path.to_owned(), None),
        _ => {
            let name = parts.last().map(|s| (*s).to_owned());
            (parts[..parts.len() - 1].join("/"), name)
        }
    }
}

fn selector_matches(object: &Value, query: &str) -> bool {
    let selector = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("labelSelector="))
        .map(urlencoding_decode)
        .unwrap_or_default();
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').expect("equality selectors only");
        object["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn urlencoding_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("utf8");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("utf8")
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

async fn serve(
    state: &Arc<Mutex<State>>,
    root: &Path,
    port: u16,
    request: Recorded,
) -> (StatusCode, Value) {
    lock(state).requests.push(request.clone());
    let (collection, name) = split(&request.path);
    let kind = collection.rsplit('/').next().unwrap_or_default().to_owned();
    if collection == CRDS {
        let name = name.expect("CRDs are read by name");
        return if lock(state).crds.contains(&name) {
            (
                StatusCode::OK,
                json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                       "metadata": {"name": name},
                       "spec": {"group": name.split_once('.').map(|x| x.1).unwrap_or_default(),
                                "names": {"plural": name.split('.').next(), "kind": "X"},
                                "scope": "Namespaced", "versions": []}}),
            )
        } else {
            not_found("customresourcedefinitions", &name)
        };
    }
    match (request.method.as_str(), name) {
        ("GET", None) => {
            let s = lock(state);
            let items: Vec<Value> = s
                .objects
                .iter()
                .filter(|((c, _), o)| *c == collection && selector_matches(o, &request.query))
                .map(|(_, o)| o.clone())
                .collect();
            (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
            )
        }
        ("GET", Some(name)) => match lock(state).objects.get(&(collection.clone(), name.clone())) {
            Some(o) => (StatusCode::OK, o.clone()),
            None => not_found(&kind, &name),
        },
        ("POST", None) => {
            let mut object = request.body.expect("a create has a body");
            let name = object["metadata"]["name"]
                .as_str()
                .expect("named")
                .to_owned();
            if lock(state)
                .objects
                .contains_key(&(collection.clone(), name.clone()))
            {
                return (
                    StatusCode::CONFLICT,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists",
                           "message": format!("{kind} \"{name}\" already exists"), "code": 409}),
                );
            }
            {
                let mut s = lock(state);
                s.next_rv += 1;
                object["metadata"]["resourceVersion"] = json!(s.next_rv.to_string());
                object["metadata"]["uid"] = json!(format!("uid-{}", s.next_rv));
                object["metadata"]["creationTimestamp"] =
                    json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
            match kind.as_str() {
                "pods" => run_pod(state, root, port, &name, &mut object),
                "sandboxclaims" => run_claim(state, root, port, &collection, &name, &mut object),
                _ => {}
            }
            lock(state)
                .objects
                .insert((collection, name), object.clone());
            (StatusCode::CREATED, object)
        }
        ("PATCH", Some(name)) => {
            let mut s = lock(state);
            let Some(object) = s.objects.get_mut(&(collection.clone(), name.clone())) else {
                return not_found(&kind, &name);
            };
            merge(object, &request.body.expect("a patch has a body"));
            (StatusCode::OK, object.clone())
        }
        ("DELETE", Some(name)) => {
            let mut s = lock(state);
            let Some(object) = s.objects.remove(&(collection.clone(), name.clone())) else {
                return not_found(&kind, &name);
            };
            if kind == "sandboxclaims" {
                // The controller deletes the claim's Sandbox (and its pod) too.
                let sandboxes = collection.replace(
                    "extensions.agents.x-k8s.io/v1alpha1",
                    "agents.x-k8s.io/v1alpha1",
                );
                let sandboxes = sandboxes.replace("sandboxclaims", "sandboxes");
                s.objects.remove(&(sandboxes, name.clone()));
            }
            if let Some(child) = s.agents.remove(&name) {
                kill_tree(child);
            }
            (StatusCode::OK, object)
        }
        (method, name) => panic!("the fake API does not serve {method} {collection} {name:?}"),
    }
}

/// The kubelet: starts the pod's agent and reports the pod running (or an image pull failure).
fn run_pod(state: &Arc<Mutex<State>>, root: &Path, port: u16, name: &str, pod: &mut Value) {
    let container = &pod["spec"]["containers"][0];
    let image = container["image"].as_str().unwrap_or_default().to_owned();
    if lock(state).broken_image.as_deref() == Some(image.as_str()) {
        pod["status"] = json!({"phase": "Pending", "containerStatuses": [{
            "name": "sandbox", "image": image, "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff",
                                  "message": format!("Back-off pulling image \"{image}\"")}}}]});
        return;
    }
    let token = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "COGNITION_AGENT_TOKEN")
        .and_then(|e| e["value"].as_str())
        .expect("the pod passes the agent its token")
        .to_owned();
    let listen_port = container["ports"][0]["containerPort"]
        .as_u64()
        .expect("agent port");
    assert_eq!(
        listen_port,
        u64::from(port),
        "the pod's agent port is the configured one"
    );
    let ip = start_agent(state, root, port, name, &token);
    pod["status"] =
        json!({"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]});
}

/// The agent-sandbox controller: makes the claim's Sandbox, starts its agent, marks both ready.
fn run_claim(
    state: &Arc<Mutex<State>>,
    root: &Path,
    port: u16,
    claims: &str,
    name: &str,
    claim: &mut Value,
) {
    let template = claim["spec"]["sandboxTemplateRef"]["name"]
        .as_str()
        .expect("templateRef");
    let templates = claims.replace("sandboxclaims", "sandboxtemplates");
    if !lock(state)
        .objects
        .contains_key(&(templates, template.to_owned()))
    {
        claim["status"] = json!({"conditions": [{"type": "Ready", "status": "False",
            "reason": "TemplateNotFound", "message": format!("SandboxTemplate {template} not found"),
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        return;
    }
    let token = lock(state).template_token.clone();
    let ip = start_agent(state, root, port, name, &token);
    let sandboxes = claims
        .replace(
            "extensions.agents.x-k8s.io/v1alpha1",
            "agents.x-k8s.io/v1alpha1",
        )
        .replace("sandboxclaims", "sandboxes");
    let ready = json!([{"type": "Ready", "status": "True", "reason": "DependenciesReady",
                        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
    let sandbox = json!({
        "apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": name, "namespace": claim["metadata"]["namespace"].clone()},
        "spec": {"podTemplate": {"spec": {"containers": []}}},
        "status": {"conditions": ready.clone(), "podIPs": [ip.to_string()],
                   "serviceFQDN": format!("{name}.svc.cluster.local")}
    });
    lock(state)
        .objects
        .insert((sandboxes, name.to_owned()), sandbox);
    claim["status"] =
        json!({"conditions": ready, "sandbox": {"name": name, "podIPs": [ip.to_string()]}});
}

/// The agent binary of this workspace (built on first use when missing).
fn agent_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let bin = dir.join("cognition-sandbox-agent");
        if !bin.exists() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "cognition-sandbox-agent"])
                .status()
                .expect("cargo build");
            assert!(status.success(), "building cognition-sandbox-agent failed");
        }
        bin
    })
    .clone()
}

/// Starts an agent for `name` on a fresh loopback address; returns the address.
fn start_agent(
    state: &Arc<Mutex<State>>,
    root: &Path,
    port: u16,
    name: &str,
    token: &str,
) -> Ipv4Addr {
    let workspace = root.join(name).join("workspace");
    std::fs::create_dir_all(&workspace).expect("workspace");
    for _ in 0..20 {
        let ip = Ipv4Addr::new(
            127,
            fastrand::u8(1..255),
            fastrand::u8(..),
            fastrand::u8(1..255),
        );
        let mut child = Command::new(agent_binary())
            .args(["--listen", &format!("{ip}:{port}"), "--workdir"])
            .arg(&workspace)
            .env("COGNITION_AGENT_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the agent");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(
                &SocketAddrV4::new(ip, port).into(),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                lock(state).agents.insert(name.to_owned(), child);
                return ip;
            }
            if matches!(child.try_wait(), Ok(Some(_))) {
                break; // the address was taken: try another
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("no loopback address for the agent of {name}");
}

/// Kills `child` and every process it started (they run in process groups of their own, as
/// the agent makes one per process), like a pod's end kills its whole cgroup.
fn kill_tree(mut child: Child) {
    let root = child.id();
    let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let Some(after) = stat.rsplit_once(')') else {
                continue;
            };
            let ppid = after
                .1
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok());
            if let Some(ppid) = ppid {
                parents.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        if let Some(kids) = parents.get(&tree[i]) {
            tree.extend(kids);
        }
        i += 1;
    }
    for pid in tree.iter().skip(1) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
