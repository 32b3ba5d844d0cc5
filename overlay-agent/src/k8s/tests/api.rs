//! The client against recorded-shape API answers.

use std::{
    net::Ipv4Addr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{
    fixture,
    server::{Recorded, Reply, TestServer},
    token_file,
};
use crate::k8s::{
    client::{KubeClient, KubeError, KubeSettings, network_available_patch, rfc3339},
    controller::seeds_from,
    types::{NodeList, WatchEvent},
};

const CONTINUE: &str =
    "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6NDgyMTMsInN0YXJ0Ijoid29ya2VyLTFcdTAwMDAifQ";

fn client(server: &TestServer, token: Option<std::path::PathBuf>) -> KubeClient {
    KubeClient::new(KubeSettings {
        api_server: server.url(),
        token_file: token,
        ca_file: None,
        timeout: Duration::from_secs(5),
    })
    .expect("a client for the loopback server")
}

fn list(name: &str) -> NodeList {
    serde_json::from_str(&fixture(name)).expect("the NodeList fixture decodes")
}

/// Pages 1 and 2 of the Node list, keyed on the continue token.
fn paged(req: &Recorded) -> Reply {
    match req.query().get("continue").map(String::as_str) {
        None => Reply::fixture(200, "nodes-page-1.json"),
        Some(CONTINUE) => Reply::fixture(200, "nodes-page-2.json"),
        Some(other) => Reply::json(400, format!("unexpected continue token {other}")),
    }
}

#[test]
fn list_follows_continue_tokens_and_sends_the_bearer_token() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = TestServer::start(paged);
    let nodes = client(&server, Some(token_file(dir.path(), "tok-1")))
        .list_nodes()
        .expect("listing Nodes");

    let names: Vec<_> = nodes.names().collect();
    assert_eq!(names, ["cp-1", "worker-1", "worker-2"]);
    assert_eq!(nodes.metadata.resource_version, "48213");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "two pages: {reqs:#?}");
    for r in &reqs {
        assert_eq!(r.method, "GET");
        assert_eq!(r.path(), "/api/v1/nodes");
        assert_eq!(r.query().get("limit").map(String::as_str), Some("500"));
        assert_eq!(r.header("authorization"), Some("Bearer tok-1"));
        assert_eq!(r.header("accept"), Some("application/json"));
    }
    assert!(!reqs[0].query().contains_key("continue"));
    assert_eq!(
        reqs[1].query().get("continue").map(String::as_str),
        Some(CONTINUE)
    );
}

#[test]
fn a_rotated_token_is_used_on_the_next_call() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = TestServer::start(|_| Reply::fixture(200, "nodes.json"));
    let client = client(&server, Some(token_file(dir.path(), "old-token")));
    client.list_nodes().expect("first list");
    token_file(dir.path(), "new-token");
    client.list_nodes().expect("second list");

    let auth: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(auth, ["Bearer old-token", "Bearer new-token"]);
}

#[test]
fn an_unreadable_token_file_names_the_file_and_sends_nothing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = TestServer::start(|_| Reply::fixture(200, "nodes.json"));
    let missing = dir.path().join("no-such-token");
    let err = client(&server, Some(missing.clone()))
        .list_nodes()
        .expect_err("no token file");

    assert!(matches!(err, KubeError::Token { .. }), "{err:?}");
    let text = crate::cni::error::chain(&err);
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(server.requests().is_empty());
}

#[test]
fn watch_sends_the_query_and_reports_every_event_in_order() {
    let server = TestServer::start(|_| Reply::fixture(200, "watch-nodes.jsonl"));
    let mut events = Vec::new();
    let last = client(&server, None)
        .watch_nodes("48213", 60, |e| events.push(e))
        .expect("watching Nodes");

    let seen: Vec<_> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(n) => format!("ADDED {}", n.metadata.name),
            WatchEvent::Modified(n) => format!("MODIFIED {}", n.metadata.name),
            WatchEvent::Deleted(n) => format!("DELETED {}", n.metadata.name),
            WatchEvent::Bookmark(n) => format!("BOOKMARK {}", n.metadata.resource_version),
            WatchEvent::Error(s) => format!("ERROR {}", s.code),
        })
        .collect();
    assert_eq!(
        seen,
        [
            "ADDED worker-3",
            "MODIFIED worker-1",
            "BOOKMARK 48310",
            "DELETED worker-2"
        ]
    );
    assert_eq!(last, "48321", "the DELETED event's version is the last");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path(), "/api/v1/nodes");
    let q = reqs[0].query();
    let get = |k: &str| q.get(k).map(String::as_str);
    assert_eq!(get("watch"), Some("1"));
    assert_eq!(get("resourceVersion"), Some("48213"));
    assert_eq!(get("timeoutSeconds"), Some("60"));
    assert_eq!(get("allowWatchBookmarks"), Some("true"));
    assert_eq!(reqs[0].header("authorization"), None, "no token file");
}

#[test]
fn an_expired_watch_is_its_own_error() {
    let server = TestServer::start(|_| Reply::fixture(200, "watch-expired.jsonl"));
    let mut events = 0;
    let err = client(&server, None)
        .watch_nodes("48102", 60, |_| events += 1)
        .expect_err("a 410 ERROR event");

    let KubeError::Expired { message, .. } = &err else {
        panic!("expected Expired, got {err:?}");
    };
    assert_eq!(message, "too old resource version: 48102 (48400)");
    assert_eq!(events, 0);
}

#[test]
fn an_expired_continue_token_answered_410_is_expired_too() {
    let server = TestServer::start(|_| {
        Reply::json(
            410,
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.","reason":"Expired","code":410}"#,
        )
    });
    let err = client(&server, None).list_nodes().expect_err("410");
    assert!(matches!(err, KubeError::Expired { .. }), "{err:?}");
}

#[test]
fn forbidden_carries_the_api_message_and_the_rbac_hint() {
    let server = TestServer::start(|_| Reply::fixture(403, "status-403.json"));
    let err = client(&server, None).list_nodes().expect_err("403");

    assert!(matches!(err, KubeError::Http { code: 403, .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(
            "403 Forbidden: nodes is forbidden: User \"system:serviceaccount:kube-system:overlay\" \
             cannot list resource \"nodes\""
        ),
        "{text}"
    );
    assert!(text.contains("ClusterRole"), "{text}");
    assert!(text.contains("nodes/status"), "{text}");
}

#[test]
fn unauthorized_points_at_the_token() {
    let server = TestServer::start(|_| Reply::fixture(401, "status-401.json"));
    let err = client(&server, None)
        .watch_nodes("1", 60, |_| {})
        .expect_err("401");

    let text = err.to_string();
    assert!(text.contains("401 Unauthorized: Unauthorized"), "{text}");
    assert!(text.contains("token"), "{text}");
}

#[test]
fn an_error_body_that_is_not_a_status_is_quoted() {
    let server = TestServer::start(|_| Reply::json(502, "upstream connect error"));
    let err = client(&server, None).list_nodes().expect_err("502");
    let text = err.to_string();
    assert!(
        text.contains("502 Bad Gateway: upstream connect error"),
        "{text}"
    );
}

#[test]
fn a_body_that_is_not_a_node_list_is_a_decode_error() {
    let server = TestServer::start(|_| Reply::json(200, "<html>captive portal</html>"));
    let err = client(&server, None).list_nodes().expect_err("not JSON");
    assert!(
        matches!(
            err,
            KubeError::Decode {
                what: "NodeList",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn no_server_is_a_transport_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let client = KubeClient::new(KubeSettings {
        api_server: format!("http://127.0.0.1:{port}/"),
        token_file: None,
        ca_file: None,
        timeout: Duration::from_secs(2),
    })
    .expect("a client");
    let err = client.list_nodes().expect_err("nothing listens");
    assert!(matches!(err, KubeError::Transport { .. }), "{err:?}");
    assert!(err.to_string().starts_with("list Nodes: "), "{err}");
}

#[test]
fn set_network_available_patches_the_status_subresource() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = TestServer::start(|_| Reply::fixture(200, "node-patched.json"));
    let before = SystemTime::now();
    client(&server, Some(token_file(dir.path(), "tok")))
        .set_network_available("worker-2")
        .expect("patching the Node status");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "PATCH");
    assert_eq!(r.target, "/api/v1/nodes/worker-2/status");
    assert_eq!(
        r.header("content-type"),
        Some("application/strategic-merge-patch+json")
    );
    assert_eq!(r.header("authorization"), Some("Bearer tok"));
    let body: serde_json::Value = serde_json::from_str(&r.body).expect("the patch is JSON");
    let conditions = body["status"]["conditions"]
        .as_array()
        .expect("a conditions array");
    assert_eq!(conditions.len(), 1, "only our condition: {body}");
    let c = &conditions[0];
    assert_eq!(c["type"], "NetworkUnavailable");
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], "OverlayIsUp");
    let stamp = c["lastTransitionTime"].as_str().expect("a transition time");
    assert_eq!(c["lastHeartbeatTime"], stamp);
    // Within a second of the call, in the API's form.
    let now = rfc3339(before);
    assert_eq!(stamp.len(), now.len(), "{stamp}");
    assert!(stamp.ends_with('Z'), "{stamp}");
    assert!(stamp >= now.as_str() && stamp <= rfc3339(SystemTime::now()).as_str());
}

#[test]
fn the_patch_body_is_the_documented_condition() {
    let at = UNIX_EPOCH + Duration::from_secs(1_710_411_771);
    let patch: serde_json::Value =
        serde_json::from_str(&network_available_patch(at)).expect("JSON");
    assert_eq!(
        patch,
        serde_json::json!({"status": {"conditions": [{
            "type": "NetworkUnavailable",
            "status": "False",
            "reason": "OverlayIsUp",
            "message": "overlay-agent has its datapath up",
            "lastTransitionTime": "2024-03-14T10:22:51Z",
            "lastHeartbeatTime": "2024-03-14T10:22:51Z",
        }]}})
    );
}

#[test]
fn rfc3339_matches_known_dates() {
    let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
    assert_eq!(at(0), "1970-01-01T00:00:00Z");
    assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(at(1_710_411_771), "2024-03-14T10:22:51Z");
    assert_eq!(at(4_107_628_799), "2100-03-01T23:59:59Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
        "1970-01-01T00:00:00Z"
    );
}

#[test]
fn node_names_are_kept_inside_their_path_segment() {
    let server = TestServer::start(|_| Reply::fixture(200, "node-patched.json"));
    client(&server, None)
        .set_network_available("../namespaces/x?y")
        .expect("patch");
    assert_eq!(
        server.requests()[0].target,
        "/api/v1/nodes/..%2Fnamespaces%2Fx%3Fy/status"
    );
}

#[test]
fn in_cluster_settings_come_from_the_service_env() {
    let env = |host: &'static str| {
        move |k: &str| match k {
            "KUBERNETES_SERVICE_HOST" => Some(host.to_owned()),
            "KUBERNETES_SERVICE_PORT" => Some("443".to_owned()),
            _ => None,
        }
    };
    let v4 = KubeSettings::from_env(env("10.96.0.1")).expect("in a cluster");
    assert_eq!(v4.api_server, "https://10.96.0.1:443");
    assert_eq!(
        v4.token_file.as_deref(),
        Some(std::path::Path::new(
            "/var/run/secrets/kubernetes.io/serviceaccount/token"
        ))
    );
    assert_eq!(
        v4.ca_file.as_deref(),
        Some(std::path::Path::new(
            "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
        ))
    );
    let v6 = KubeSettings::from_env(env("fd00:10:96::1")).expect("in a cluster");
    assert_eq!(v6.api_server, "https://[fd00:10:96::1]:443");
    assert_eq!(KubeSettings::from_env(|_| None), None);
    assert_eq!(KubeSettings::from_env(env("")), None);
}

#[test]
fn bad_settings_are_refused_up_front() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let settings = |api_server: &str, ca: Option<std::path::PathBuf>| KubeSettings {
        api_server: api_server.into(),
        token_file: None,
        ca_file: ca,
        timeout: Duration::from_secs(1),
    };
    let err = KubeClient::new(settings("10.96.0.1:443", None)).expect_err("no scheme");
    assert!(matches!(err, KubeError::BadServer(_)), "{err:?}");

    let missing = dir.path().join("ca.crt");
    let err = KubeClient::new(settings("https://127.0.0.1:1", Some(missing))).expect_err("no CA");
    assert!(matches!(err, KubeError::CaUnreadable { .. }), "{err:?}");
    // Plain http has no TLS: the CA file is not read, so its absence is
    // no error (the daemon passes the service-account path whatever the URL).
    KubeClient::new(settings(
        "http://127.0.0.1:1",
        Some(dir.path().join("ca.crt")),
    ))
    .expect("http ignores the CA file");

    let junk = dir.path().join("junk.crt");
    std::fs::write(&junk, "not a certificate\n").expect("writing");
    let err = KubeClient::new(settings("https://127.0.0.1:1", Some(junk))).expect_err("bad CA");
    assert!(matches!(err, KubeError::CaInvalid { .. }), "{err:?}");
    assert!(err.to_string().contains("junk.crt"), "{err}");
}

#[test]
fn the_fixtures_decode_and_give_ipv4_internal_ips() {
    let nodes = list("nodes.json");
    let ips: Vec<_> = nodes.items.iter().map(|n| n.internal_ipv4()).collect();
    // worker-1 lists its IPv6 InternalIP first.
    assert_eq!(
        ips,
        [
            Some(Ipv4Addr::new(192, 168, 56, 10)),
            Some(Ipv4Addr::new(192, 168, 56, 21)),
            Some(Ipv4Addr::new(192, 168, 56, 22)),
        ]
    );
    let w1 = &nodes.items[1];
    assert_eq!(
        w1.condition("NetworkUnavailable")
            .map(|c| c.status.as_str()),
        Some("False")
    );
    assert_eq!(w1.metadata.deletion_timestamp, None);
    let patched: crate::k8s::Node =
        serde_json::from_str(&fixture("node-patched.json")).expect("the patched Node decodes");
    assert_eq!(
        patched
            .condition("NetworkUnavailable")
            .map(|c| c.reason.as_str()),
        Some("OverlayIsUp")
    );
}

#[test]
fn odd_nodes_decode_without_failing() {
    let odd: NodeList = serde_json::from_str(
        r#"{"kind":"NodeList","metadata":{"resourceVersion":"7","continue":null},"items":[
            {"metadata":{"name":"v6-only","deletionTimestamp":"2024-03-14T10:22:51Z"},
             "status":{"addresses":[{"type":"InternalIP","address":"fd00::5"}],"conditions":null}},
            {"metadata":{"name":"no-status"}},
            {"metadata":{"name":"external","extra":{"x":1}},
             "status":{"addresses":[{"type":"ExternalIP","address":"203.0.113.9"}]}}]}"#,
    )
    .expect("odd Nodes decode");
    assert!(odd.items.iter().all(|n| n.internal_ipv4().is_none()));
    assert_eq!(
        odd.items[0].metadata.deletion_timestamp.as_deref(),
        Some("2024-03-14T10:22:51Z")
    );
    assert!(seeds_from(&odd, 6783).is_empty());
}

#[test]
fn seeds_are_the_sorted_unique_ipv4_internal_ips() {
    let mut nodes = list("nodes.json");
    // A duplicate address (a Node re-registered under a new name).
    let mut again = nodes.items[2].clone();
    again.metadata.name = "worker-2b".into();
    nodes.items.insert(0, again);
    assert_eq!(
        seeds_from(&nodes, 6783),
        [
            "192.168.56.10:6783",
            "192.168.56.21:6783",
            "192.168.56.22:6783"
        ]
    );
}
