//! A small blocking client for the three Kubernetes API calls the agent
//! makes: list Nodes, watch Nodes, patch a Node's status.
//!
//! Blocking on purpose: the daemon calls it from a dedicated thread (the
//! watch) or `spawn_blocking` (the patch), and a blocking client is far
//! lighter than an async one for three calls.

use std::{
    fmt::Write as _,
    io::{self, BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, de::DeserializeOwned};
use ureq::{
    Agent, Body, RequestBuilder,
    http::{Response, StatusCode},
    tls::{Certificate, PemItem, RootCerts, TlsConfig},
};

use super::types::{ListMeta, NodeList, RawWatchEvent, Status, WatchEvent};
use crate::paths;

/// Nodes asked for per page of a list.
pub const LIST_PAGE_SIZE: u32 = 500;

/// Pages after which a list that keeps handing out continue tokens is
/// given up (5 million Nodes: a broken server, not a big cluster).
const MAX_PAGES: usize = 10_000;

/// Longest watch event line accepted. A Node with its image list is tens
/// of KiB; this only stops a broken stream from eating memory.
const MAX_EVENT_BYTES: u64 = 16 << 20;

/// Longest error body read to find the API's `Status` in it.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// Where and how to reach the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeSettings {
    /// Base URL, e.g. `https://10.96.0.1:443` (or `http://127.0.0.1:PORT`
    /// in tests).
    pub api_server: String,
    /// Bearer token file, re-read on every request because projected
    /// service-account tokens rotate. `None` sends no `Authorization`.
    pub token_file: Option<PathBuf>,
    /// PEM bundle whose certificates are the only roots trusted for
    /// `https` (not read for `http`). `None` trusts the Mozilla roots
    /// (webpki-roots).
    pub ca_file: Option<PathBuf>,
    /// Bound on connecting, and on a whole list page or patch. A watch
    /// gets its own `timeoutSeconds` on top.
    pub timeout: Duration,
}

impl KubeSettings {
    /// Default bound on one request.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// The settings of a pod's service account, `None` outside a cluster
    /// (no `KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT`).
    pub fn in_cluster() -> Option<Self> {
        Self::from_env(|name| std::env::var(name).ok())
    }

    /// [`KubeSettings::in_cluster`] with the environment read through
    /// `var`, so that it can be tested.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let host = var("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty())?;
        let port = var("KUBERNETES_SERVICE_PORT").filter(|p| !p.is_empty())?;
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        Some(Self {
            api_server: format!("https://{host}:{port}"),
            token_file: Some(PathBuf::from(paths::KUBE_TOKEN_FILE)),
            ca_file: Some(PathBuf::from(paths::KUBE_CA_FILE)),
            timeout: Self::DEFAULT_TIMEOUT,
        })
    }
}

/// What went wrong talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The configured server is not an `http(s)://` URL.
    #[error("API server address {0:?} is not an http:// or https:// URL")]
    BadServer(String),
    /// The token file could not be read.
    #[error("cannot read the service-account token {}", path.display())]
    Token {
        /// The token file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The CA bundle could not be read.
    #[error("cannot read the API server's CA bundle {}", path.display())]
    CaUnreadable {
        /// The CA file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The CA bundle holds no usable certificate.
    #[error("the API server's CA bundle {} holds no valid PEM certificate", path.display())]
    CaInvalid {
        /// The CA file.
        path: PathBuf,
        /// The PEM parser's complaint, if it had one.
        #[source]
        source: Option<ureq::Error>,
    },
    /// No HTTP answer: connection refused, TLS handshake, timeout, …
    #[error("{op}: no answer from the API server")]
    Transport {
        /// The call, e.g. `list Nodes`.
        op: String,
        /// Why.
        #[source]
        source: ureq::Error,
    },
    /// The answer broke off while it was read.
    #[error("{op}: reading the API server's answer failed")]
    Read {
        /// The call.
        op: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The API server refused the call.
    #[error("{op}: the API server answered {}{hint}", status_line(*code, message))]
    Http {
        /// The call.
        op: String,
        /// The HTTP status.
        code: u16,
        /// The API's `Status.message`, or the start of the body.
        message: String,
        /// What an operator can do about it, with a leading space.
        hint: &'static str,
    },
    /// The answer was not the JSON expected.
    #[error("{op}: cannot decode the API server's {what}")]
    Decode {
        /// The call.
        op: String,
        /// What was being decoded, e.g. `NodeList`.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A list's continue tokens never ended.
    #[error("{op}: still handed a continue token after {pages} pages")]
    Paging {
        /// The call.
        op: String,
        /// Pages read.
        pages: usize,
    },
    /// 410 Gone: the resource version (or continue token) is too old. The
    /// caller lists again and watches from the new list's version.
    #[error("{op}: 410 Gone, the version is too old ({message}); list again")]
    Expired {
        /// The call.
        op: String,
        /// The API's message, e.g. `too old resource version: 1 (48400)`.
        message: String,
    },
}

/// `403 Forbidden: message`, leaving out what is unknown.
fn status_line(code: u16, message: &str) -> String {
    let mut line = code.to_string();
    if let Some(reason) = StatusCode::from_u16(code)
        .ok()
        .and_then(|c| c.canonical_reason())
    {
        line.push(' ');
        line.push_str(reason);
    }
    if !message.is_empty() {
        line.push_str(": ");
        line.push_str(message);
    }
    line
}

/// The API server's answer to a 401 or 403, in words an operator can act on.
fn hint(code: u16) -> &'static str {
    match code {
        401 => {
            " (the bearer token was refused: check that the token file is the \
             service account's current token for this cluster)"
        }
        403 => {
            " (bind the agent's ServiceAccount to a ClusterRole that allows \
             list and watch on nodes, pods, namespaces and networkpolicies, and patch on \
             nodes/status)"
        }
        _ => "",
    }
}

/// A complete list of a collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectList<T> {
    /// The version the list was read at; watch from it.
    pub resource_version: String,
    /// The objects.
    pub items: Vec<T>,
}

/// One event of a watch of a collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectEvent<T> {
    /// An object appeared.
    Added(T),
    /// An object changed.
    Modified(T),
    /// An object was deleted (its last state).
    Deleted(T),
    /// Nothing to report; the version moved on.
    Bookmark,
}

/// A list page as on the wire; `null` items are skipped.
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct RawList<T> {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Option<T>>,
}

/// A blocking client for Node list, watch and status patch, and list and
/// watch of any collection.
#[derive(Debug)]
pub struct KubeClient {
    agent: Agent,
    base: String,
    token_file: Option<PathBuf>,
    timeout: Duration,
}

impl KubeClient {
    /// A client for `settings`. Reads the CA bundle now (it does not
    /// rotate); the token is read on every request.
    pub fn new(settings: KubeSettings) -> Result<Self, KubeError> {
        let base = settings.api_server.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(KubeError::BadServer(settings.api_server));
        }
        let mut tls = TlsConfig::builder();
        // Plain http (a local proxy, a test server) has no CA to read.
        if let Some(ca) = settings
            .ca_file
            .as_ref()
            .filter(|_| base.starts_with("https://"))
        {
            tls = tls.root_certs(RootCerts::new_with_certs(&load_ca(ca)?));
        }
        let config = Agent::config_builder()
            // Read the API's Status from error bodies instead of a bare code.
            .http_status_as_error(false)
            // The API server is the cluster's service address: a node's
            // HTTPS_PROXY (set for image pulls) must not capture it.
            .proxy(None)
            .tls_config(tls.build())
            .timeout_connect(Some(settings.timeout))
            .user_agent(concat!("overlay-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self {
            agent: config.new_agent(),
            base,
            token_file: settings.token_file,
            timeout: settings.timeout,
        })
    }

    /// All Nodes, read in pages of [`LIST_PAGE_SIZE`]. The result's
    /// `metadata.resourceVersion` is where a watch should start.
    pub fn list_nodes(&self) -> Result<NodeList, KubeError> {
        let list = self.list_pages("/api/v1/nodes", "Nodes", "NodeList")?;
        Ok(NodeList {
            metadata: ListMeta {
                resource_version: list.resource_version,
                continue_token: String::new(),
            },
            items: list.items,
        })
    }

    /// Watches Nodes from `resource_version` until the server ends the
    /// stream (after `timeout_secs`), calling `on_event` for each event
    /// but ERROR. Returns the last resource version seen, to watch on from.
    ///
    /// An ERROR event or answer with code 410 is [`KubeError::Expired`]:
    /// list again. Any other ERROR event is [`KubeError::Http`].
    pub fn watch_nodes(
        &self,
        resource_version: &str,
        timeout_secs: u32,
        mut on_event: impl FnMut(WatchEvent),
    ) -> Result<String, KubeError> {
        let op = "watch Nodes";
        let mut last = resource_version.to_owned();
        self.watch_stream("/api/v1/nodes", op, resource_version, timeout_secs, |raw| {
            let kind = raw.kind.clone();
            let Some(event) = raw
                .into_event()
                .map_err(|source| decode(op, "watch event object", source))?
            else {
                tracing::debug!(kind, "skipping a watch event of unknown type");
                return Ok(());
            };
            if let WatchEvent::Error(status) = event {
                return Err(status_error(op, status.code, status.message));
            }
            if let Some(node) = event.node()
                && !node.metadata.resource_version.is_empty()
            {
                last.clone_from(&node.metadata.resource_version);
            }
            on_event(event);
            Ok(())
        })?;
        Ok(last)
    }

    /// Every object of the collection at `path` (e.g. `/api/v1/pods`),
    /// read in pages of [`LIST_PAGE_SIZE`]. `what` names the objects in
    /// errors (`Pods`).
    pub fn list_objects<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &'static str,
    ) -> Result<ObjectList<T>, KubeError> {
        self.list_pages(path, what, what)
    }

    /// The pages of the collection at `path`, joined; `what` names the
    /// objects in the operation (`list Nodes`), `body` the body a decode
    /// error names (`NodeList`).
    fn list_pages<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &'static str,
        body: &'static str,
    ) -> Result<ObjectList<T>, KubeError> {
        let op = format!("list {what}");
        let mut all = ObjectList {
            resource_version: String::new(),
            items: Vec::new(),
        };
        let mut token = String::new();
        for _ in 0..MAX_PAGES {
            let mut req = self
                .agent
                .get(format!("{}{path}", self.base))
                .query("limit", LIST_PAGE_SIZE.to_string());
            if !token.is_empty() {
                req = req.query("continue", &token);
            }
            let resp = self.prepare(req, self.timeout)?.call();
            let resp = answer(&op, resp)?;
            let page: RawList<T> = serde_json::from_reader(BufReader::new(resp.into_reader()))
                .map_err(|source| decode(&op, body, source))?;
            all.items.extend(page.items.into_iter().flatten());
            all.resource_version = page.metadata.resource_version;
            if page.metadata.continue_token.is_empty() {
                return Ok(all);
            }
            token = page.metadata.continue_token;
        }
        Err(KubeError::Paging {
            op,
            pages: MAX_PAGES,
        })
    }

    /// Watches the collection at `path` from `resource_version` until the
    /// server ends the stream, as [`KubeClient::watch_nodes`] does, calling
    /// `on_event` for each ADDED, MODIFIED, DELETED and BOOKMARK. Returns
    /// the last resource version seen.
    pub fn watch_objects<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &'static str,
        resource_version: &str,
        timeout_secs: u32,
        mut on_event: impl FnMut(ObjectEvent<T>),
    ) -> Result<String, KubeError> {
        let op = format!("watch {what}");
        let mut last = resource_version.to_owned();
        self.watch_stream(path, &op, resource_version, timeout_secs, |raw| {
            let version = raw.object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let object = |v| serde_json::from_value::<T>(v).map_err(|e| decode(&op, what, e));
            let event = match raw.kind.as_str() {
                "ADDED" => ObjectEvent::Added(object(raw.object)?),
                "MODIFIED" => ObjectEvent::Modified(object(raw.object)?),
                "DELETED" => ObjectEvent::Deleted(object(raw.object)?),
                "BOOKMARK" => ObjectEvent::Bookmark,
                "ERROR" => {
                    let status: Status = serde_json::from_value(raw.object)
                        .map_err(|source| decode(&op, "watch error", source))?;
                    return Err(status_error(&op, status.code, status.message));
                }
                kind => {
                    tracing::debug!(kind, "skipping a watch event of unknown type");
                    return Ok(());
                }
            };
            if !version.is_empty() {
                last = version;
            }
            on_event(event);
            Ok(())
        })?;
        Ok(last)
    }

    /// Opens a watch of the collection at `path` from `resource_version`
    /// and hands each event of the stream, as read off the wire, to
    /// `each`, until the server ends the stream (after `timeout_secs`) or
    /// `each` fails. An event longer than [`MAX_EVENT_BYTES`] is an error.
    fn watch_stream(
        &self,
        path: &str,
        op: &str,
        resource_version: &str,
        timeout_secs: u32,
        mut each: impl FnMut(RawWatchEvent) -> Result<(), KubeError>,
    ) -> Result<(), KubeError> {
        let req = self
            .agent
            .get(format!("{}{path}", self.base))
            .query("watch", "1")
            .query("resourceVersion", resource_version)
            .query("timeoutSeconds", timeout_secs.to_string())
            .query("allowWatchBookmarks", "true");
        // The server closes the stream after timeout_secs; allow for that
        // plus one ordinary request's worth of slack.
        let limit = Duration::from_secs(timeout_secs.into()) + self.timeout;
        let body = answer(op, self.prepare(req, limit)?.call())?;
        let mut reader = BufReader::new(body.into_reader());
        let mut line = String::new();
        loop {
            line.clear();
            let n = (&mut reader)
                .take(MAX_EVENT_BYTES)
                .read_line(&mut line)
                .map_err(|source| read(op, source))?;
            if n == 0 {
                return Ok(());
            }
            if !line.ends_with('\n') && n as u64 == MAX_EVENT_BYTES {
                return Err(read(
                    op,
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a watch event is longer than {MAX_EVENT_BYTES} bytes"),
                    ),
                ));
            }
            if line.trim().is_empty() {
                continue;
            }
            let raw: RawWatchEvent =
                serde_json::from_str(&line).map_err(|source| decode(op, "watch event", source))?;
            each(raw)?;
        }
    }

    /// Sets the Node condition `NetworkUnavailable=False` on Node `node`,
    /// as Calico and Weave do once their datapath is up (the node
    /// lifecycle controller keeps the `network-unavailable` taint until
    /// then on clouds that set the condition).
    pub fn set_network_available(&self, node: &str) -> Result<(), KubeError> {
        let op = format!("patch Node {node} status");
        let req = self
            .agent
            .patch(format!(
                "{}/api/v1/nodes/{}/status",
                self.base,
                path_segment(node)
            ))
            .content_type("application/strategic-merge-patch+json");
        let body = network_available_patch(SystemTime::now());
        let resp = self.prepare(req, self.timeout)?.send(body);
        let mut body = answer(&op, resp)?;
        // Drain it so the connection can be reused.
        body.with_config()
            .limit(MAX_EVENT_BYTES)
            .read_to_vec()
            .map_err(|source| read(&op, io::Error::other(source)))?;
        Ok(())
    }

    /// Adds the bearer token, read now, and a bound on the whole call.
    fn prepare<B>(
        &self,
        req: RequestBuilder<B>,
        limit: Duration,
    ) -> Result<RequestBuilder<B>, KubeError> {
        let req = req
            .header("Accept", "application/json")
            .config()
            .timeout_global(Some(limit))
            .build();
        let Some(path) = &self.token_file else {
            return Ok(req);
        };
        let token = std::fs::read_to_string(path).map_err(|source| KubeError::Token {
            path: path.clone(),
            source,
        })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(KubeError::Token {
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, "the file is empty"),
            });
        }
        Ok(req.header("Authorization", format!("Bearer {token}")))
    }
}

/// The body of a 2xx answer, or the error the answer stands for.
fn answer(op: &str, resp: Result<Response<Body>, ureq::Error>) -> Result<Body, KubeError> {
    let resp = resp.map_err(|source| KubeError::Transport {
        op: op.into(),
        source,
    })?;
    let code = resp.status().as_u16();
    let mut body = resp.into_body();
    if (200..300).contains(&code) {
        return Ok(body);
    }
    // Best effort: the code alone still says what happened.
    let text = body
        .with_config()
        .limit(MAX_ERROR_BODY)
        .lossy_utf8(true)
        .read_to_string()
        .unwrap_or_default();
    let message = match serde_json::from_str::<Status>(&text) {
        Ok(status) if !status.message.is_empty() => status.message,
        _ => text.trim().chars().take(300).collect(),
    };
    Err(status_error(op, code, message))
}

fn status_error(op: &str, code: u16, message: String) -> KubeError {
    if code == 410 {
        KubeError::Expired {
            op: op.into(),
            message,
        }
    } else {
        KubeError::Http {
            op: op.into(),
            code,
            message,
            hint: hint(code),
        }
    }
}

fn decode(op: &str, what: &'static str, source: serde_json::Error) -> KubeError {
    KubeError::Decode {
        op: op.into(),
        what,
        source,
    }
}

fn read(op: &str, source: io::Error) -> KubeError {
    KubeError::Read {
        op: op.into(),
        source,
    }
}

/// Every certificate of the PEM bundle at `path`.
fn load_ca(path: &Path) -> Result<Vec<Certificate<'static>>, KubeError> {
    let pem = std::fs::read(path).map_err(|source| KubeError::CaUnreadable {
        path: path.to_owned(),
        source,
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(source) => {
                return Err(KubeError::CaInvalid {
                    path: path.to_owned(),
                    source: Some(source),
                });
            }
        }
    }
    if certs.is_empty() {
        return Err(KubeError::CaInvalid {
            path: path.to_owned(),
            source: None,
        });
    }
    Ok(certs)
}

/// `name` percent-encoded for one path segment. Node names are DNS
/// subdomains and come out unchanged; anything else cannot escape the
/// segment.
fn path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The strategic merge patch that sets `NetworkUnavailable=False`
/// (conditions merge on `type`, so the other conditions stay).
pub(crate) fn network_available_patch(now: SystemTime) -> String {
    let now = rfc3339(now);
    serde_json::json!({
        "status": {
            "conditions": [{
                "type": "NetworkUnavailable",
                "status": "False",
                "reason": "OverlayIsUp",
                "message": "overlay-agent has its datapath up",
                "lastTransitionTime": now,
                "lastHeartbeatTime": now,
            }]
        }
    })
    .to_string()
}

/// `t` as RFC 3339 UTC with whole seconds, e.g. `2024-03-11T09:14:22Z`
/// (the form `metav1.Time` writes). Times before 1970 print as the epoch.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month, day of the `days`-th day after 1970-01-01 (proleptic
/// Gregorian), by Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1..=12, 1..=31).
    let small = |v: i64| u32::try_from(v).unwrap_or(0);
    (year, small(month), small(day))
}
