//! The agent's Kubernetes awareness, end to end: real agents in the
//! namespace lab, started with no `--peers`, against a fake API server on
//! the underlay (no real one can run here). They find each other from the
//! Nodes' InternalIPs, each sets its Node's `NetworkUnavailable=False`
//! once, a stopped agent whose Node still exists is left alone, a deleted
//! Node's blocks are reclaimed by exactly one agent, and the manifest's
//! ClusterRole grants exactly the (resource, verb) pairs they requested.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::mpsc,
    time::{Duration, Instant},
};

use overlay_agent::k8s::{KubeClient, KubeError, KubeSettings, WatchEvent};
use overlay_tests::{
    Netns,
    cluster::Cluster,
    deploy::{manifest_path, require, venv_missing, yaml_documents},
    fake_kube::{FakeKube, MAX_WATCH, Recorded},
    privileged,
};
use serde_json::Value;

const NODES: usize = 4;
/// Every wait on gossip (joins, failure detection, forgetting) ends by then.
const GOSSIP_TIMEOUT: Duration = Duration::from_secs(30);
/// The fake API server's address on the underlay (nodes are .1 to .4).
const API_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 250);
const API_PORT: u16 = 6443;
/// The agent's log line when it forgets a deleted Node
/// (`overlay-agent/src/k8s/controller.rs`).
const RECLAIM_LINE: &str = "Node deleted in Kubernetes: reclaiming its address blocks";
/// How long a stopped agent whose Node still exists is watched not being
/// forgotten (the controller checks every 2 s).
const NOT_FORGOTTEN_FOR: Duration = Duration::from_secs(5);
/// How long after the reclaim a second one is looked for.
const AFTER_RECLAIM: Duration = Duration::from_secs(4);

fn name(i: usize) -> String {
    format!("n{}", i + 1)
}

fn peers(status: &Value) -> Vec<Value> {
    status["gossip"]["peers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn peer(status: &Value, name: &str) -> Option<Value> {
    peers(status).into_iter().find(|p| p["name"] == name)
}

fn forgotten(status: &Value, name: &str) -> bool {
    status["gossip"]["forgotten"].get(name).is_some()
}

/// Every block of a `[{block, state}]` list.
fn blocks(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["block"].as_str().map(str::to_owned))
        .collect()
}

/// Every line of every agent's log that contains `text`, with the node.
fn log_lines(c: &Cluster, text: &str) -> Vec<(String, String)> {
    (0..c.agents.len())
        .flat_map(|i| {
            c.log(i)
                .lines()
                .filter(|l| l.contains(text))
                .map(|l| (name(i), l.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Successful status patches, by the node name in their path.
fn patches_by_node(server: &FakeKube) -> BTreeMap<String, Vec<Recorded>> {
    let mut out: BTreeMap<String, Vec<Recorded>> = BTreeMap::new();
    for r in server.requests() {
        if r.method == "PATCH" && r.status == 200 {
            let node = r
                .path()
                .strip_prefix("/api/v1/nodes/")
                .and_then(|p| p.strip_suffix("/status"))
                .unwrap_or("?")
                .to_owned();
            out.entry(node).or_default().push(r);
        }
    }
    out
}

fn describe(requests: &[Recorded]) -> String {
    requests
        .iter()
        .map(|r| format!("{} {} {} -> {}", r.peer, r.method, r.target, r.status))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that `r` is the patch that sets `NetworkUnavailable=False` on
/// Node `node`, sent with `token`.
fn assert_network_available_patch(r: &Recorded, node: &str, token: &str) {
    assert_eq!(r.method, "PATCH");
    assert_eq!(r.path(), format!("/api/v1/nodes/{node}/status"));
    assert_eq!(
        r.header("content-type"),
        Some("application/strategic-merge-patch+json"),
        "content type of {node}'s patch"
    );
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {token}").as_str()),
        "token of {node}'s patch"
    );
    let body = r.json();
    let conditions = body["status"]["conditions"]
        .as_array()
        .unwrap_or_else(|| panic!("{node}'s patch has no status.conditions: {}", r.body));
    assert_eq!(
        conditions.len(),
        1,
        "{node}'s patch touches one condition: {}",
        r.body
    );
    assert_eq!(conditions[0]["type"], "NetworkUnavailable", "{}", r.body);
    assert_eq!(conditions[0]["status"], "False", "{}", r.body);
}

/// Node `node`'s condition of type `kind`.
fn condition(node: &Value, kind: &str) -> Option<Value> {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .cloned()
}

/// A bare HTTP/1.1 GET with a bearer token; returns the whole answer.
fn raw_get(url: &str, path: &str, token: &str) -> String {
    use std::io::{Read as _, Write as _};
    let addr = url.strip_prefix("http://").expect("http URL");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    )
    .expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    answer
}

/// The `(resource, verb)` pairs the manifest's ClusterRole grants (a
/// resource of another group than the core one as `resource.group`).
fn cluster_role_grants() -> BTreeSet<(String, String)> {
    let docs = yaml_documents(&manifest_path("overlay.yaml"));
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole in deploy/overlay.yaml");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                // Named as `Recorded::rbac` names them.
                let resource = if group.is_empty() {
                    resource
                } else {
                    format!("{resource}.{group}")
                };
                for verb in strings(&rule["verbs"]) {
                    grants.insert((resource.clone(), verb));
                }
            }
        }
    }
    grants
}

/// The fake server against the agent's own client, on loopback (no
/// privileges): list, a watch that delivers an event while it is open and
/// ends at its timeout, the status patch, a refused token, and a stop that
/// ends an open watch at once.
#[test]
fn fake_api_server_speaks_what_the_agents_client_expects() {
    let dir = std::env::temp_dir().join(format!("ovl-fake-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret\n").expect("token file");
    let wrong_token_file = dir.join("wrong");
    std::fs::write(&wrong_token_file, "nope\n").expect("token file");
    let client = |token_file: &std::path::Path, url: &str| {
        KubeClient::new(KubeSettings {
            api_server: url.to_owned(),
            token_file: Some(token_file.to_owned()),
            ca_file: None,
            timeout: Duration::from_secs(5),
        })
        .expect("client")
    };

    let server = FakeKube::loopback("s3cret");
    server.add_node("a", Ipv4Addr::new(10, 0, 0, 1));
    server.add_node("b", Ipv4Addr::new(10, 0, 0, 2));
    let kube = client(&token_file, &server.url());
    // As a kubelet registers it: Ready, and no NetworkUnavailable at all.
    let fresh = server.node("a").expect("node a");
    assert_eq!(condition(&fresh, "NetworkUnavailable"), None, "{fresh}");
    assert_eq!(
        condition(&fresh, "Ready").map(|c| c["status"].clone()),
        Some(Value::from("True")),
        "{fresh}"
    );

    let list = kube.list_nodes().expect("list");
    assert_eq!(list.names().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(list.metadata.resource_version, "2");
    assert_eq!(
        list.items[1].internal_ipv4(),
        Some(Ipv4Addr::new(10, 0, 0, 2))
    );

    // A deletion while the watch is open arrives at once, not at its end.
    let watch_started = Instant::now();
    let deleted_at = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            assert!(server.delete_node("b"));
        });
        let mut deleted_at = None;
        let last = kube
            .watch_nodes(&list.metadata.resource_version, 2, |e| {
                if let WatchEvent::Deleted(n) = e {
                    assert_eq!(n.metadata.name, "b");
                    deleted_at = Some(watch_started.elapsed());
                }
            })
            .expect("watch");
        assert_eq!(last, "3");
        deleted_at.expect("no DELETED event")
    });
    let watch_took = watch_started.elapsed();
    assert!(
        deleted_at < Duration::from_millis(1500),
        "the DELETED event came {deleted_at:?} into the watch: not streamed"
    );
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(4)).contains(&watch_took),
        "a 2 s watch took {watch_took:?}"
    );
    assert_eq!(kube.list_nodes().expect("list").names().count(), 1);

    kube.set_network_available("a").expect("patch");
    let patched = server.node("a").expect("node a");
    let set = condition(&patched, "NetworkUnavailable").expect("the patched condition");
    assert_eq!(set["status"], "False", "{patched}");
    assert!(
        condition(&patched, "Ready").is_some(),
        "merged, not replaced"
    );
    let requests = server.requests();
    let patch = requests
        .iter()
        .find(|r| r.method == "PATCH")
        .expect("a PATCH");
    assert_network_available_patch(patch, "a", "s3cret");
    assert!(matches!(
        kube.set_network_available("b"),
        Err(KubeError::Http { code: 404, .. })
    ));

    // A get of one Node is refused, as our ClusterRole makes the real
    // server refuse it, and recorded as RBAC sees it.
    let answer = raw_get(&server.url(), "/api/v1/nodes/a", "s3cret");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let last = server.requests().last().cloned().expect("recorded");
    assert_eq!(last.status, 403);
    assert_eq!(last.rbac(), Some(("nodes".into(), "get".into())));
    let kinds: BTreeSet<(String, String)> = server
        .requests()
        .iter()
        .filter_map(Recorded::rbac)
        .collect();
    assert!(
        kinds.contains(&("nodes".into(), "list".into()))
            && kinds.contains(&("nodes".into(), "watch".into()))
            && kinds.contains(&("nodes/status".into(), "patch".into())),
        "{kinds:?}"
    );

    let refused = client(&wrong_token_file, &server.url()).list_nodes();
    assert!(
        matches!(refused, Err(KubeError::Http { code: 401, .. })),
        "{refused:?}"
    );
    assert_eq!(server.requests().last().map(|r| r.status), Some(401));

    // Dropping the server ends an open watch (its body ends) at once.
    let url = server.url();
    let (done_tx, done_rx) = mpsc::channel();
    let watcher = std::thread::spawn(move || {
        let kube = client(&token_file, &url);
        let _ = done_tx.send(kube.watch_nodes("100", 60, |_| {}));
    });
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    drop(server);
    let ended = done_rx
        .recv_timeout(MAX_WATCH + Duration::from_secs(2))
        .expect("the watch did not end after the server stopped");
    assert!(ended.is_ok(), "{ended:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(1),
        "stopping the server took {:?}",
        stopping.elapsed()
    );
    watcher.join().expect("watcher thread");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn agents_join_from_nodes_set_network_available_and_reclaim_a_deleted_node_once() {
    privileged!("agents_join_from_nodes_set_network_available_and_reclaim_a_deleted_node_once");
    // The manifest's ClusterRole is read with the venv's YAML parser.
    if !require(
        "agents_join_from_nodes_set_network_available_and_reclaim_a_deleted_node_once",
        venv_missing(),
    ) {
        return;
    }
    let started = Instant::now();
    // Declared before the cluster, so dropped after it.
    let mut api: Option<(Netns, FakeKube, String)> = None;
    let mut c = Cluster::kube(NODES, |lab, token| {
        let host = lab.underlay_host("kapi", API_IP);
        let server = FakeKube::start_in(
            &host.path(),
            SocketAddr::new(API_IP.into(), API_PORT),
            token,
        );
        for (i, node) in lab.nodes.iter().enumerate() {
            server.add_node(&name(i), node.ip);
        }
        let url = server.url();
        api = Some((host, server, token.to_owned()));
        url
    });
    let (_, server, token) = api.as_ref().expect("the fake API server");
    println!("agents ready {:?} after the start", started.elapsed());

    // 1. No --peers: the seeds came from the Nodes, and the cluster forms.
    let t = c.wait_converged(NODES, GOSSIP_TIMEOUT);
    println!("cluster of {NODES} converged {t:?} after the agents were ready");
    for i in 0..NODES {
        let log = c.log(i);
        assert!(
            log.contains("gossip seeds from the Kubernetes Nodes"),
            "{}: no seeds from the Nodes in its log:\n{log}",
            name(i)
        );
    }
    let requests = server.requests();
    for (i, node) in c.lab.nodes.iter().enumerate() {
        let from_node = |r: &&Recorded| r.peer.ip() == IpAddr::V4(node.ip);
        assert!(
            requests
                .iter()
                .filter(from_node)
                .any(|r| r.is_list() && r.query().get("limit").map(String::as_str) == Some("500")),
            "{} never listed the Nodes:\n{}",
            name(i),
            describe(&requests)
        );
    }

    // 2. NetworkUnavailable=False, once per node, with the token.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let patches = patches_by_node(server);
        if (0..NODES).all(|i| patches.contains_key(&name(i))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every node set NetworkUnavailable=False within 20 s; requests:\n{}",
            describe(&server.requests())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "every node patched its Node status {:?} after the start",
        started.elapsed()
    );
    for i in 0..NODES {
        let node = server.node(&name(i)).expect("the Node");
        let condition = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "NetworkUnavailable")
            .unwrap_or_else(|| panic!("{} has no NetworkUnavailable: {node}", name(i)));
        assert_eq!(condition["status"], "False", "{node}");
    }

    // 4. A stopped agent whose Node still exists is dead, not forgotten.
    let victim = 0;
    let victim_name = name(victim);
    let victim_blocks = blocks(&c.status(victim)["gossip"]["blocks"]);
    assert!(!victim_blocks.is_empty(), "{victim_name} owns no block");
    assert!(
        c.stop_agent(victim),
        "{victim_name}'s agent did not exit cleanly on SIGTERM"
    );
    let dead = c.wait_statuses(
        "the stopped agent seen down everywhere",
        GOSSIP_TIMEOUT,
        |_, s| peer(s, &victim_name).is_some_and(|p| p["state"] == "agent_down"),
    );
    println!("{victim_name} stopped, seen dead everywhere within {dead:?}");
    let hold = Instant::now();
    while hold.elapsed() < NOT_FORGOTTEN_FOR {
        for i in (0..NODES).filter(|i| c.is_running(*i)) {
            let s = c.status(i);
            assert!(
                peer(&s, &victim_name).is_some() && !forgotten(&s, &victim_name),
                "{} forgot {victim_name}, whose Node still exists: {}",
                name(i),
                s["gossip"]
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let early = log_lines(&c, RECLAIM_LINE);
    assert!(
        early.is_empty(),
        "a Node that still exists was reclaimed: {early:?}"
    );
    println!("{victim_name} dead but still a Node: not forgotten for {NOT_FORGOTTEN_FOR:?}");

    // 3. Deleting its Node reclaims its blocks, by exactly one agent.
    assert!(server.delete_node(&victim_name));
    let deleted = Instant::now();
    let t = c.wait_statuses(
        "the deleted Node forgotten everywhere",
        GOSSIP_TIMEOUT,
        |_, s| {
            peer(s, &victim_name).is_none()
                && forgotten(s, &victim_name)
                && peers(s)
                    .iter()
                    .flat_map(|p| blocks(&p["blocks"]))
                    .chain(blocks(&s["gossip"]["blocks"]))
                    .all(|b| !victim_blocks.contains(&b))
        },
    );
    println!("Node {victim_name} deleted: forgotten by every live node within {t:?}");
    std::thread::sleep(AFTER_RECLAIM.saturating_sub(deleted.elapsed()));
    let reclaims = log_lines(&c, RECLAIM_LINE);
    assert_eq!(
        reclaims.len(),
        1,
        "the deleted Node must be reclaimed exactly once cluster-wide: {reclaims:#?}"
    );
    let (by, line) = &reclaims[0];
    assert!(line.contains(&victim_name), "{line}");
    // The smallest live Node acts (`to_reclaim`): n1 is gone, so n2.
    assert_eq!(by, "n2", "reclaimed by {by}, not the smallest live Node");
    println!("reclaimed once, by {by}: {line}");
    for i in (0..NODES).filter(|i| c.is_running(*i)) {
        let s = c.status(i);
        assert!(
            forgotten(&s, &victim_name) && peer(&s, &victim_name).is_none(),
            "{}: {}",
            name(i),
            s["gossip"]
        );
    }

    // 2, to the end: no node patched its status twice, and every request
    // carried the token.
    let patches = patches_by_node(server);
    assert_eq!(
        patches.keys().cloned().collect::<BTreeSet<_>>(),
        (0..NODES).map(name).collect::<BTreeSet<_>>(),
        "patched Nodes"
    );
    for (node, list) in &patches {
        assert_eq!(
            list.len(),
            1,
            "{node} patched its Node status {} times:\n{}",
            list.len(),
            describe(list)
        );
        assert_network_available_patch(&list[0], node, token);
    }
    let requests = server.requests();
    let refused: Vec<Recorded> = requests
        .iter()
        .filter(|r| r.status != 200)
        .cloned()
        .collect();
    assert!(
        refused.is_empty(),
        "requests the fake API server refused:\n{}",
        describe(&refused)
    );
    // 5. Least privilege, exactly: the ClusterRole grants what the agents
    // asked for in this run (start-up list, watches, status patches,
    // reclaim), nothing more and nothing less.
    let used: BTreeSet<(String, String)> = requests.iter().filter_map(Recorded::rbac).collect();
    let granted = cluster_role_grants();
    assert_eq!(
        granted, used,
        "the ClusterRole (left) differs from what the agents requested (right)"
    );
    println!("RBAC: the ClusterRole grants exactly what the agents used: {used:?}");
    let watches = requests.iter().filter(|r| r.is_watch()).count();
    println!(
        "fake API server: {} requests ({} watches), resourceVersion {}; test took {:?}",
        requests.len(),
        watches,
        server.resource_version(),
        started.elapsed()
    );
}
