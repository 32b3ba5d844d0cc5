//! A fake Kubernetes API server for the agents of a lab: just the calls
//! the agent makes (list, watch and status patch of Nodes; list and watch
//! of Pods, Namespaces and NetworkPolicies in all namespaces), over plain
//! HTTP/1.1, with a bearer token checked on every request. A Node is what
//! a kubelet registers: its own conditions (`Ready`, the pressures) and no
//! `NetworkUnavailable` (only cloud route controllers set that). A `get`
//! of a single Node, which the agent's ClusterRole does not allow, is
//! answered 403 as the real server would, so a test that checks every
//! answer was 200 notices it.
//!
//! It keeps a set of Nodes (name → InternalIP), the objects of the other
//! collections as JSON, one resourceVersion counter and the log of watch
//! events (each tagged with its collection, as one etcd revision serves
//! every resource), and records every request it answers.
//! Every connection gets one request and a `Connection: close` answer; a
//! watch answer has no Content-Length, so its body ends when the server
//! closes the stream (after `min(timeoutSeconds, 5 s)`), as the API server
//! does. One thread accepts (non-blocking, polled, so that it sees the stop
//! flag), one thread serves each connection; [`Drop`] stops and joins them.

use std::{
    collections::{BTreeMap, VecDeque},
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// Longest a watch stays open, whatever `timeoutSeconds` asks for, so that
/// agents come back often and a stop never waits long.
pub const MAX_WATCH: Duration = Duration::from_secs(5);

/// Bound on reading a request and on writing an answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the accept loop looks for a connection or the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// One request as the server saw it, with the status it answered.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Who sent it.
    pub peer: SocketAddr,
    /// `GET`, `PATCH`, …
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// The HTTP status answered.
    pub status: u16,
}

impl Recorded {
    /// The first header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// Query parameters, percent-decoded.
    pub fn query(&self) -> BTreeMap<String, String> {
        let Some((_, q)) = self.target.split_once('?') else {
            return BTreeMap::new();
        };
        q.split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    /// Whether it is a watch (`?watch=1` or `?watch=true`).
    pub fn is_watch(&self) -> bool {
        matches!(
            self.query().get("watch").map(String::as_str),
            Some("1" | "true")
        )
    }

    /// Whether it is a list of Nodes (a GET of the collection, no watch).
    pub fn is_list(&self) -> bool {
        self.method == "GET" && self.path() == NODES_PATH && !self.is_watch()
    }

    /// What RBAC authorizes this request as: `(resource, verb)` of the core
    /// API group, as the API server derives them from the method and path
    /// (`nodes` or a subresource such as `nodes/status`; `get`, `list`,
    /// `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`).
    /// Resources of another API group than the core one are named
    /// `resource.group` (`networkpolicies.networking.k8s.io`). `None` for
    /// a path outside `/api/v1` and `/apis/GROUP/VERSION`.
    pub fn rbac(&self) -> Option<(String, String)> {
        let path = self.path();
        let (group, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
            ("", rest)
        } else {
            let mut it = path.strip_prefix("/apis/")?.splitn(3, '/');
            let group = it.next()?;
            let _version = it.next()?;
            (group, it.next()?)
        };
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        let (resource, named) = match parts.as_slice() {
            [kind] => ((*kind).to_owned(), false),
            [kind, _name] => ((*kind).to_owned(), true),
            [kind, _name, sub] => (format!("{kind}/{sub}"), true),
            _ => return None,
        };
        let resource = if group.is_empty() {
            resource
        } else {
            format!("{resource}.{group}")
        };
        let verb = match (self.method.as_str(), named) {
            ("GET", _) if self.is_watch() => "watch",
            ("GET", false) => "list",
            ("GET", true) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", false) => "deletecollection",
            ("DELETE", true) => "delete",
            _ => return None,
        };
        Some((resource, verb.to_owned()))
    }

    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

const NODES_PATH: &str = "/api/v1/nodes";
/// Collection of every Pod.
pub const PODS: &str = "/api/v1/pods";
/// Collection of every Namespace.
pub const NAMESPACES: &str = "/api/v1/namespaces";
/// Collection of every NetworkPolicy.
pub const NETWORK_POLICIES: &str = "/apis/networking.k8s.io/v1/networkpolicies";

/// `(kind, apiVersion)` of the objects of a collection other than Nodes.
fn kind_of(collection: &str) -> Option<(&'static str, &'static str)> {
    match collection {
        PODS => Some(("Pod", "v1")),
        NAMESPACES => Some(("Namespace", "v1")),
        NETWORK_POLICIES => Some(("NetworkPolicy", "networking.k8s.io/v1")),
        _ => None,
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Node as the fake server keeps it.
#[derive(Clone, Debug)]
struct FakeNode {
    ip: Ipv4Addr,
    uid: String,
    resource_version: u64,
    /// `status.conditions`, merged by `type` on every patch.
    conditions: Vec<Value>,
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, FakeNode>,
    /// Collection → `namespace/name` → object.
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    /// The last resourceVersion handed out.
    rv: u64,
    /// `(resourceVersion, collection, type, object)`, oldest first.
    events: Vec<(u64, &'static str, &'static str, Value)>,
    requests: Vec<Recorded>,
}

struct Shared {
    token: String,
    state: Mutex<State>,
    /// Notified on every new event and on stop.
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// The server. Dropping it stops it and joins every thread.
pub struct FakeKube {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeKube {
    /// Serves `listener` (bound wherever the caller wants: a socket keeps
    /// the network namespace it was made in), accepting `Bearer <token>`.
    pub fn start(listener: TcpListener, token: &str) -> Self {
        let addr = listener.local_addr().expect("the listener's address");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let accept = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("fake-kube".into())
                .spawn(move || accept_loop(&listener, &shared))
                .expect("starting the fake API server")
        };
        Self {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// On a loopback port of the test's own namespace.
    pub fn loopback(token: &str) -> Self {
        Self::start(
            TcpListener::bind("127.0.0.1:0").expect("binding a loopback port"),
            token,
        )
    }

    /// Listening on `addr` in the network namespace at `netns` (e.g. a
    /// [`crate::Lab::underlay_host`]).
    pub fn start_in(netns: &Path, addr: SocketAddr, token: &str) -> Self {
        let listener = overlay_agent::netns::run_in(netns, || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("entering {} to listen: {e}", netns.display()))
            .unwrap_or_else(|e| panic!("binding {addr} in {}: {e}", netns.display()));
        Self::start(listener, token)
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds (or replaces) Node `name` with InternalIP `ip`: an ADDED event.
    pub fn add_node(&self, name: &str, ip: Ipv4Addr) {
        let mut s = self.shared.lock();
        s.rv += 1;
        let node = FakeNode {
            ip,
            uid: format!("00000000-0000-4000-8000-{:012x}", s.rv),
            resource_version: s.rv,
            conditions: kubelet_conditions(),
        };
        let object = node_json(name, &node);
        s.nodes.insert(name.to_owned(), node);
        let rv = s.rv;
        s.events.push((rv, NODES_PATH, "ADDED", object));
        drop(s);
        self.shared.changed.notify_all();
    }

    /// Creates or replaces an object of `collection` ([`PODS`],
    /// [`NAMESPACES`], [`NETWORK_POLICIES`]) as `kubectl apply` would: the
    /// server sets kind, apiVersion, uid, resourceVersion and
    /// creationTimestamp, and an ADDED or MODIFIED event carries it.
    /// Returns its resourceVersion.
    pub fn apply(&self, collection: &'static str, mut object: Value) -> u64 {
        let (kind, api_version) =
            kind_of(collection).unwrap_or_else(|| panic!("no collection {collection}"));
        let mut s = self.shared.lock();
        s.rv += 1;
        let rv = s.rv;
        let key = object_key(&object);
        let existing = s.objects.get(collection).and_then(|c| c.get(&key)).cloned();
        object["kind"] = json!(kind);
        object["apiVersion"] = json!(api_version);
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        match &existing {
            Some(old) => {
                meta["uid"] = old["metadata"]["uid"].clone();
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            }
            None => {
                meta["uid"] = json!(format!("00000000-0000-4000-8000-{rv:012x}"));
                meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
        }
        if collection == NAMESPACES {
            // The API server sets this label on every Namespace (1.21+).
            let name = meta["name"].clone();
            meta["labels"]["kubernetes.io/metadata.name"] = name;
        }
        let kind = if existing.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.objects
            .entry(collection)
            .or_default()
            .insert(key, object.clone());
        s.events.push((rv, collection, kind, object));
        drop(s);
        self.shared.changed.notify_all();
        rv
    }

    /// Deletes an object of `collection` (`namespace` empty for a
    /// Namespace): a DELETED event carries its last state. Returns whether
    /// it existed.
    pub fn delete(&self, collection: &'static str, namespace: &str, name: &str) -> bool {
        let mut s = self.shared.lock();
        let key = format!("{namespace}/{name}");
        let Some(mut object) = s.objects.get_mut(collection).and_then(|c| c.remove(&key)) else {
            return false;
        };
        s.rv += 1;
        let rv = s.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        s.events.push((rv, collection, "DELETED", object));
        drop(s);
        self.shared.changed.notify_all();
        true
    }

    /// Removes Node `name`: it leaves the list and a DELETED event carries
    /// its last state. Returns whether it existed.
    pub fn delete_node(&self, name: &str) -> bool {
        let mut s = self.shared.lock();
        let Some(mut node) = s.nodes.remove(name) else {
            return false;
        };
        s.rv += 1;
        node.resource_version = s.rv;
        let rv = s.rv;
        s.events
            .push((rv, NODES_PATH, "DELETED", node_json(name, &node)));
        drop(s);
        self.shared.changed.notify_all();
        true
    }

    /// Node `name` as the API would return it now.
    pub fn node(&self, name: &str) -> Option<Value> {
        let s = self.shared.lock();
        s.nodes.get(name).map(|n| node_json(name, n))
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// The last resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Take the lock so that no watch is between its check of the flag
        // and its wait: the notification then reaches every waiter.
        drop(self.shared.lock());
        self.shared.changed.notify_all();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Accepts until stopped, a thread per connection; joins them all at the
/// end (each ends within [`MAX_WATCH`] or [`IO_TIMEOUT`]s).
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut conns: VecDeque<JoinHandle<()>> = VecDeque::new();
    while !shared.stopped() {
        match listener.accept() {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                match std::thread::Builder::new()
                    .name("fake-kube-conn".into())
                    .spawn(move || serve(stream, peer, &shared))
                {
                    Ok(t) => conns.push_back(t),
                    Err(e) => eprintln!("fake API server: no thread for {peer}: {e}"),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("fake API server: accept failed: {e}");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
        // Reap finished connections.
        conns.retain(|t| !t.is_finished());
    }
    for t in conns {
        let _ = t.join();
    }
}

/// A request as read off the wire.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

fn serve(stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    // Accepted sockets do not inherit O_NONBLOCK on Linux; make sure.
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(IO_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(IO_TIMEOUT)).is_err()
    {
        return;
    }
    let Some(req) = read_request(&stream) else {
        return;
    };
    let mut rec = Recorded {
        peer,
        method: req.method,
        target: req.target,
        headers: req.headers,
        body: req.body,
        status: 0,
    };
    let expected = format!("Bearer {}", shared.token);
    let (status, answer) = if rec.header("authorization") != Some(expected.as_str()) {
        (401, status_body(401, "Unauthorized", "Unauthorized"))
    } else if rec.method == "GET"
        && (rec.path() == NODES_PATH || kind_of(rec.path()).is_some())
        && rec.is_watch()
    {
        let collection = collection_of(rec.path());
        rec.status = 200;
        let rv = rec
            .query()
            .get("resourceVersion")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let timeout = rec
            .query()
            .get("timeoutSeconds")
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(MAX_WATCH, |s| Duration::from_secs(s).min(MAX_WATCH));
        shared.lock().requests.push(rec);
        watch(&stream, shared, collection, rv, timeout);
        return;
    } else if rec.method == "GET" && rec.path() == NODES_PATH {
        (200, list(shared))
    } else if rec.method == "GET"
        && let Some((kind, api_version)) = kind_of(rec.path())
    {
        (
            200,
            list_objects(shared, collection_of(rec.path()), kind, api_version),
        )
    } else if let Some(name) = rec.path().strip_prefix("/api/v1/nodes/")
        && rec.method == "GET"
        && !name.contains('/')
    {
        (
            403,
            status_body(
                403,
                "Forbidden",
                &format!(
                    "nodes \"{}\" is forbidden: the agent's ClusterRole grants no get on \
                     nodes (the fake API server answers as the real one would)",
                    percent_decode(name)
                ),
            ),
        )
    } else if let Some(name) = rec
        .path()
        .strip_prefix("/api/v1/nodes/")
        .and_then(|p| p.strip_suffix("/status"))
        && rec.method == "PATCH"
    {
        patch(shared, &percent_decode(name), &rec)
    } else {
        (
            404,
            status_body(404, "NotFound", "the fake API server has no such route"),
        )
    };
    rec.status = status;
    shared.lock().requests.push(rec);
    let body = answer.to_string();
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    let mut w = &stream;
    // The client may be gone; that is its business.
    let _ = w
        .write_all(head.as_bytes())
        .and_then(|()| w.write_all(body.as_bytes()))
        .and_then(|()| w.flush());
    let _ = stream.shutdown(Shutdown::Write);
}

/// Streams the events newer than `rv`, then new ones as they come, until
/// `timeout` or stop; then closes (which ends the body).
fn watch(
    stream: &TcpStream,
    shared: &Shared,
    collection: &'static str,
    mut rv: u64,
    timeout: Duration,
) {
    let mut w = stream;
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
    if w.write_all(head.as_bytes())
        .and_then(|()| w.flush())
        .is_err()
    {
        return;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let mut s = shared.lock();
        loop {
            let pending = s
                .events
                .iter()
                .any(|(v, c, _, _)| *v > rv && *c == collection);
            let now = Instant::now();
            if pending || shared.stopped() || now >= deadline {
                break;
            }
            s = shared
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let lines: String = s
            .events
            .iter()
            .filter(|(v, c, _, _)| *v > rv && *c == collection)
            .map(|(_, _, kind, object)| format!("{}\n", json!({"type": kind, "object": object})))
            .collect();
        rv = s.rv;
        drop(s);
        if !lines.is_empty()
            && w.write_all(lines.as_bytes())
                .and_then(|()| w.flush())
                .is_err()
        {
            return;
        }
        if shared.stopped() || Instant::now() >= deadline {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

/// `namespace/name` of an object.
fn object_key(object: &Value) -> String {
    format!(
        "{}/{}",
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"]
            .as_str()
            .expect("an object has metadata.name")
    )
}

/// The collection constant for a path known to be one.
fn collection_of(path: &str) -> &'static str {
    [NODES_PATH, PODS, NAMESPACES, NETWORK_POLICIES]
        .into_iter()
        .find(|c| *c == path)
        .expect("a known collection")
}

fn list_objects(shared: &Shared, collection: &str, kind: &str, api_version: &str) -> Value {
    let s = shared.lock();
    let items: Vec<Value> = s
        .objects
        .get(collection)
        .map(|c| c.values().cloned().collect())
        .unwrap_or_default();
    json!({
        "kind": format!("{kind}List"),
        "apiVersion": api_version,
        "metadata": {"resourceVersion": s.rv.to_string()},
        "items": items,
    })
}

fn list(shared: &Shared) -> Value {
    let s = shared.lock();
    json!({
        "kind": "NodeList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": s.rv.to_string()},
        "items": s.nodes.iter().map(|(n, node)| node_json(n, node)).collect::<Vec<_>>(),
    })
}

/// A strategic merge patch of `status.conditions` (merged on `type`), as
/// the API server applies it: a new resourceVersion and a MODIFIED event.
fn patch(shared: &Shared, name: &str, rec: &Recorded) -> (u16, Value) {
    if rec.header("content-type") != Some("application/strategic-merge-patch+json") {
        return (
            415,
            status_body(415, "UnsupportedMediaType", "not a strategic merge patch"),
        );
    }
    let Ok(patch) = serde_json::from_str::<Value>(&rec.body) else {
        return (400, status_body(400, "BadRequest", "the patch is not JSON"));
    };
    let mut s = shared.lock();
    let rv = s.rv + 1;
    let Some(node) = s.nodes.get_mut(name) else {
        return (
            404,
            status_body(404, "NotFound", &format!("nodes \"{name}\" not found")),
        );
    };
    for c in patch["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        match node.conditions.iter_mut().find(|o| o["type"] == c["type"]) {
            Some(old) => {
                if let (Some(old), Some(new)) = (old.as_object_mut(), c.as_object()) {
                    old.extend(new.clone());
                }
            }
            None => node.conditions.push(c.clone()),
        }
    }
    node.resource_version = rv;
    let object = node_json(name, node);
    s.rv = rv;
    s.events.push((rv, NODES_PATH, "MODIFIED", object.clone()));
    drop(s);
    shared.changed.notify_all();
    (200, object)
}

fn node_json(name: &str, node: &FakeNode) -> Value {
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": node.uid,
            "resourceVersion": node.resource_version.to_string(),
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
        },
        "spec": {},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node.ip.to_string()},
                {"type": "Hostname", "address": name},
            ],
            "conditions": node.conditions,
        },
    })
}

/// The conditions a kubelet reports when it registers its Node: the
/// pressures and `Ready`, and no `NetworkUnavailable`.
fn kubelet_conditions() -> Vec<Value> {
    let condition = |kind: &str, status: &str, reason: &str| {
        json!({
            "type": kind,
            "status": status,
            "reason": reason,
            "lastHeartbeatTime": "2024-01-01T00:00:00Z",
            "lastTransitionTime": "2024-01-01T00:00:00Z",
        })
    };
    vec![
        condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        condition("PIDPressure", "False", "KubeletHasSufficientPID"),
        condition("Ready", "True", "KubeletReady"),
    ]
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        415 => "Unsupported Media Type",
        _ => "Unknown",
    }
}

/// Reads one request: headers, then a Content-Length or chunked body.
fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        if headers.len() > 100 {
            return None;
        }
    }
    let get = |n: &str| headers.iter().find(|(h, _)| h == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = get("content-length") {
        let len: usize = len.parse().ok()?;
        if len > MAX_BODY {
            return None;
        }
        body.resize(len, 0);
        reader.read_exact(&mut body).ok()?;
    } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            line.clear();
            reader.read_line(&mut line).ok()?;
            let size = usize::from_str_radix(line.trim(), 16).ok()?;
            if body.len() + size > MAX_BODY {
                return None;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Some(Request {
        method,
        target,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}
