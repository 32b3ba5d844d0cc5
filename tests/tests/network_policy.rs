//! NetworkPolicy end to end: three real agents against the fake API
//! server, three namespaces (x, y, z; label `ns`) with three pods each (a,
//! b, c; label `pod`; the a pods on node 1, the b pods on node 2, the c
//! pods on node 3, so pairs are both local and across nodes), each
//! serving TCP and UDP on ports 80 and 81; once with VXLAN between the
//! nodes, once routed directly (`--tunnel auto` on one link).
//! For every case the policies reach the agents as API objects, and after
//! [`APPLY_WITHIN`] every ordered pair is probed on every protocol and port
//! and the whole matrix compared with the expected one. SCTP (no sockets
//! on this kernel) is checked with crafted packets and the counters.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use overlay_common::Stat;
use overlay_tests::{
    Netns,
    cluster::{Cluster, CniPod},
    fake_kube::{FakeKube, NAMESPACES, NETWORK_POLICIES, PODS},
    netpol::{self, Cell, Proto, Servers, Target},
    privileged,
};
use serde_json::{Value, json};

const API_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 250);
const API_PORT: u16 = 6443;
const NAMESPACES_: [&str; 3] = ["x", "y", "z"];
const PODS_: [&str; 3] = ["a", "b", "c"];
const PORTS: [u16; 2] = [80, 81];
/// Changes apply to new connections within this long of the API event.
const APPLY_WITHIN: Duration = Duration::from_secs(1);

/// Node of pod `p`: a on node 0, b on node 1, c on node 2.
fn node_of(p: &str) -> usize {
    PODS_.iter().position(|x| *x == p).expect("a pod name")
}

struct Table {
    /// Declared first: pods and servers go before the cluster.
    servers: Vec<Servers>,
    pods: Vec<(String, CniPod)>,
    c: Cluster,
    api: FakeKube,
    _host: Netns,
}

impl Table {
    /// The cluster with its agents run with `--tunnel tunnel`, once every
    /// agent carries its peers as `tunnel` says (`auto`: `direct`, the lab's
    /// nodes share one link).
    fn new(tunnel: &'static str, extra: &[&str]) -> Self {
        let mut api = None;
        let c = Cluster::kube_with(3, tunnel, extra, |lab, token| {
            let host = lab.underlay_host("kapi", API_IP);
            let server = FakeKube::start_in(
                &host.path(),
                SocketAddr::new(API_IP.into(), API_PORT),
                token,
            );
            for (i, node) in lab.nodes.iter().enumerate() {
                server.add_node(&format!("n{}", i + 1), node.ip);
            }
            let url = server.url();
            api = Some((host, server));
            url
        });
        let (host, api) = api.expect("the fake API server");
        c.wait_converged(3, Duration::from_secs(30));
        let carriage = if tunnel == "vxlan" { "vxlan" } else { "direct" };
        for i in 0..3 {
            let deadline = Instant::now() + Duration::from_secs(10);
            let want: Vec<String> = (0..3)
                .filter(|&j| j != i)
                .map(|j| {
                    format!(
                        "overlay_peer_carriage{{peer=\"{}\",carriage=\"{carriage}\"}} 1",
                        c.lab.nodes[j].ip
                    )
                })
                .collect();
            loop {
                let m = c.metrics(i);
                if want.iter().all(|w| m.lines().any(|l| l == w)) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {i} does not carry its peers {carriage} (--tunnel {tunnel}):\n{m}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            // Encrypting: every peer listed with a session.
            if extra.contains(&"wireguard") {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let m = c.metrics(i);
                    let sessions = m
                        .lines()
                        .filter(|l| {
                            l.starts_with("overlay_wireguard_peer_encrypted{") && l.ends_with(" 1")
                        })
                        .count();
                    if sessions == 2 {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "node {i} has no WireGuard session with every peer:\n{m}"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        let mut t = Table {
            servers: Vec::new(),
            pods: Vec::new(),
            c,
            api,
            _host: host,
        };
        for ns in NAMESPACES_ {
            t.api.apply(
                NAMESPACES,
                json!({"metadata": {"name": ns, "labels": {"ns": ns}}}),
            );
            for p in PODS_ {
                t.add_pod(ns, p);
            }
        }
        t
    }

    fn add_pod(&mut self, ns: &str, name: &str) {
        let node = node_of(name);
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};\
             K8S_POD_INFRA_CONTAINER_ID={ns}-{name}"
        );
        let pod = self.c.add_pod_with_env(node, &[("CNI_ARGS", &args)]);
        let ports: Vec<Value> = PORTS
            .iter()
            .flat_map(|p| {
                [("TCP", "tcp"), ("UDP", "udp")].map(|(proto, lower)| {
                    json!({"name": format!("serve-{p}-{lower}"), "containerPort": p, "protocol": proto})
                })
            })
            .collect();
        self.api.apply(
            PODS,
            json!({
                "metadata": {"name": name, "namespace": ns, "labels": {"pod": name}},
                "spec": {"nodeName": format!("n{}", node + 1),
                         "containers": [{"name": "cont-80-81", "image": "agnhost", "ports": ports}]},
                "status": {"phase": "Running", "podIP": pod.ip.to_string(),
                           "podIPs": [{"ip": pod.ip.to_string()}]},
            }),
        );
        self.servers.push(Servers::start(&pod.ns.path(), &PORTS));
        self.pods.push((format!("{ns}/{name}"), pod));
    }

    fn pod(&self, name: &str) -> &CniPod {
        &self
            .pods
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
            .1
    }

    fn targets(&self) -> Vec<Target> {
        self.pods
            .iter()
            .map(|(name, p)| Target {
                name: name.clone(),
                netns: p.ns.path(),
                ip: p.ip,
            })
            .collect()
    }

    fn policy(&self, ns: &str, name: &str, spec: Value) {
        self.api.apply(
            NETWORK_POLICIES,
            json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}),
        );
    }

    fn delete_policy(&self, ns: &str, name: &str) {
        assert!(
            self.api.delete(NETWORK_POLICIES, ns, name),
            "no policy {ns}/{name}"
        );
    }

    /// Waits [`APPLY_WITHIN`], probes everything and compares with
    /// `allowed(from, to, proto, port)`.
    fn check(&self, case: &str, allowed: impl Fn(&str, &str, Proto, u16) -> bool) {
        std::thread::sleep(APPLY_WITHIN);
        let started = Instant::now();
        let targets = self.targets();
        let want: BTreeMap<Cell, bool> = netpol::matrix_cells(&targets, &PORTS)
            .into_iter()
            .map(|c| {
                let ok = allowed(&c.0, &c.1, c.2, c.3);
                (c, ok)
            })
            .collect();
        let got = netpol::matrix(&targets, &PORTS);
        let diff = netpol::differences(&got, &want);
        let allowed_n = want.values().filter(|v| **v).count();
        println!(
            "case {case}: {} cells ({allowed_n} allowed), probed in {:?}, {} wrong",
            want.len(),
            started.elapsed(),
            diff.len()
        );
        if !diff.is_empty() {
            // Say whether it is late or wrong.
            std::thread::sleep(Duration::from_secs(3));
            let later = netpol::differences(&netpol::matrix(&targets, &PORTS), &want);
            panic!(
                "case {case}: {} of {} cells wrong {APPLY_WITHIN:?} after the change:\n{}\n\
                 {} still wrong 3 s later; status of node 1:\n{}",
                diff.len(),
                want.len(),
                diff.join("\n"),
                later.len(),
                self.c.status_text(0)
            );
        }
    }
}

fn ns_of(pod: &str) -> &str {
    pod.split('/').next().unwrap_or_default()
}

#[test]
fn network_policy_truth_tables() {
    privileged!("network_policy_truth_tables");
    truth_tables("vxlan");
}

/// The same tables with the agents in `--tunnel auto`: the lab's nodes
/// share one link, so every pair across nodes is routed directly (no
/// encapsulation) and ingress is decided on the direct receive path.
#[test]
fn network_policy_truth_tables_routed_directly() {
    privileged!("network_policy_truth_tables_routed_directly");
    truth_tables("auto");
}

/// The same tables with the agents encrypting (`--encryption wireguard`):
/// every pair across nodes goes through WireGuard and ingress is decided
/// by `from_wireguard` on the receiving node.
#[test]
fn network_policy_truth_tables_encrypted() {
    privileged!("network_policy_truth_tables_encrypted");
    truth_tables_with("auto", &["--encryption", "wireguard"]);
}

fn truth_tables(tunnel: &'static str) {
    truth_tables_with(tunnel, &[]);
}

fn truth_tables_with(tunnel: &'static str, extra: &[&str]) {
    let started = Instant::now();
    let t = Table::new(tunnel, extra);
    println!("cluster and 9 pods ready in {:?}", started.elapsed());

    t.check("no policy", |_, _, _, _| true);

    t.policy("x", "deny-ingress", json!({"podSelector": {}}));
    t.check("default-deny ingress in x", |_, to, _, _| ns_of(to) != "x");
    // The node's own address (kubelet probes) still reaches x's pods.
    let xa = t.pod("x/a").ip;
    let node_ns = t.c.lab.nodes[node_of("a")].ns.path();
    assert!(
        netpol::probe(&node_ns, xa, Proto::Tcp, 80),
        "node -> x/a under default deny"
    );
    // status says which policies select a local pod; drops are counted.
    let text = t.c.status_text(0);
    assert!(
        text.lines()
            .any(|l| l.contains("x/a") && l.contains("x/deny-ingress")),
        "status does not show x/deny-ingress selecting x/a:\n{text}"
    );
    let metrics = t.c.metrics(0);
    assert!(
        metrics.lines().any(|l| l
            .starts_with("overlay_policy_drops_total{pod=\"x/a\",direction=\"ingress\"}")
            && !l.ends_with(" 0")),
        "no ingress drops of x/a in /metrics:\n{metrics}"
    );
    // Rate-limited "blocked by" lines (at most one per flow every 10 s,
    // at most 20 a second), naming both pods.
    let log = t.c.log(0);
    let blocked: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("blocked by NetworkPolicy") && l.contains("ingress of x/a"))
        .collect();
    assert!(
        !blocked.is_empty(),
        "no \"blocked by\" line for x/a in node 1's log"
    );
    let mut flows = std::collections::BTreeSet::new();
    for l in &blocked {
        let src = t
            .pods
            .iter()
            .map(|(name, _)| name.as_str())
            .find(|name| *name != "x/a" && l.contains(&format!("src=\"{name} (")))
            .unwrap_or_else(|| panic!("no source pod named in: {l}"));
        assert!(l.contains("dst=\"x/a ("), "{l}");
        let proto = if l.contains("proto=\"TCP\"") {
            "TCP"
        } else {
            "UDP"
        };
        let port = if l.contains("port=80 ") { 80 } else { 81 };
        assert!(
            flows.insert((src, proto, port)),
            "two lines for {src} -> x/a {proto}/{port} within 10 s:\n{}",
            blocked.join("\n")
        );
    }
    println!("for example: {}", blocked[0]);
    t.delete_policy("x", "deny-ingress");

    t.policy(
        "x",
        "deny-egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    t.check("default-deny egress in x", |from, _, _, _| {
        ns_of(from) != "x"
    });
    t.delete_policy("x", "deny-egress");

    t.policy(
        "x",
        "from-y",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    t.check("allow from namespace y", |from, to, _, _| {
        ns_of(to) != "x" || ns_of(from) == "y"
    });
    t.delete_policy("x", "from-y");

    t.policy(
        "x",
        "from-b-anywhere",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}
        ]}]}),
    );
    t.check("allow from pod=b in any namespace", |from, to, _, _| {
        ns_of(to) != "x" || from.ends_with("/b")
    });
    t.delete_policy("x", "from-b-anywhere");

    t.policy(
        "x",
        "from-z-a",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"ns": "z"}}, "podSelector": {"matchLabels": {"pod": "a"}}}
        ]}]}),
    );
    t.check("namespace and pod selector together", |from, to, _, _| {
        to != "x/a" || from == "z/a"
    });
    t.delete_policy("x", "from-z-a");

    let zc = t.pod("z/c").ip;
    t.policy(
        "x",
        "cidr",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.32.0.0/12", "except": [format!("{zc}/32")]}}
        ]}]}),
    );
    t.check("ipBlock with except", |from, to, _, _| {
        ns_of(to) != "x" || from != "z/c"
    });
    t.delete_policy("x", "cidr");

    t.policy(
        "x",
        "named",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
    );
    t.check("named port", |_, to, proto, port| {
        ns_of(to) != "x" || (proto == Proto::Tcp && port == 81)
    });
    t.delete_policy("x", "named");

    t.policy(
        "x",
        "range",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 81, "protocol": "UDP"}]}]}),
    );
    t.check("endPort range", |_, to, proto, _| {
        ns_of(to) != "x" || proto == Proto::Udp
    });
    t.delete_policy("x", "range");

    t.policy(
        "y",
        "egress-81",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 81}]}]}),
    );
    t.check("egress to one port only", |from, _, proto, port| {
        ns_of(from) != "y" || (proto == Proto::Tcp && port == 81)
    });
    t.delete_policy("y", "egress-81");

    t.policy(
        "x",
        "from-y",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    t.policy(
        "x",
        "from-z-a",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"ns": "z"}}, "podSelector": {"matchLabels": {"pod": "a"}}}
        ]}]}),
    );
    t.check("two policies add up", |from, to, _, _| {
        ns_of(to) != "x" || ns_of(from) == "y" || from == "z/a"
    });
    t.delete_policy("x", "from-y");
    t.delete_policy("x", "from-z-a");

    t.policy("z", "update-me", json!({"podSelector": {}}));
    t.check("deny (before the update)", |_, to, _, _| ns_of(to) != "z");
    t.policy(
        "z",
        "update-me",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    );
    t.check("then allow from z by update", |from, to, _, _| {
        ns_of(to) != "z" || ns_of(from) == "z"
    });

    // A malformed policy next to it: reported, the good one still applies.
    t.policy(
        "y",
        "broken",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}),
    );
    t.check(
        "a malformed policy isolates and allows nothing",
        |from, to, _, _| (ns_of(to) != "z" || ns_of(from) == "z") && ns_of(to) != "y",
    );
    let status = t.c.status(1);
    let problems = status["policy"]["problems"].to_string();
    assert!(
        problems.contains("y/broken") && problems.contains("ICMP"),
        "status does not report y/broken: {problems}"
    );
    t.delete_policy("y", "broken");
    t.delete_policy("z", "update-me");
    t.check("every policy deleted", |_, _, _, _| true);

    println!("truth tables done in {:?}", started.elapsed());
}

/// SCTP rules with crafted packets (no SCTP sockets on this kernel): an
/// allowed port crosses the policy, another port is dropped and counted.
#[test]
fn network_policy_sctp_with_crafted_packets() {
    privileged!("network_policy_sctp_with_crafted_packets");
    let t = Table::new("vxlan", &[]);
    t.policy(
        "x",
        "sctp-9000",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 9000, "protocol": "SCTP"}]}]}),
    );
    std::thread::sleep(APPLY_WITHIN);
    // y/b is on node 2, x/a on node 1: across the tunnel.
    let from = t.pod("y/b");
    let to = t.pod("x/a");
    let counters = |i: usize| t.c.lab.maps(i).counters().expect("counters");
    let drops = || {
        overlay_agent::policy::PolicyMaps::open(t.c.pin_dir(0))
            .expect("policy maps")
            .drops()
            .expect("drops")
            .get(&to.ip)
            .copied()
            .unwrap_or_default()
    };
    for (port, allowed) in [(9000, true), (9001, false), (9000, true), (9002, false)] {
        let before = counters(0);
        let drops_before = drops();
        overlay_tests::traffic::send_raw_ipv4(&from.ns, &sctp_init(from.ip, to.ip, 5000, port));
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let d = counters(0).since(&before);
            let moved = if allowed {
                d.get(Stat::FromUplinkDecapsulated) >= 1 && d.get(Stat::DropPolicyIngress) == 0
            } else {
                d.get(Stat::DropPolicyIngress) == 1
            };
            if moved {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "SCTP to port {port}: want {}, counters moved {:?}",
                if allowed { "delivered" } else { "dropped" },
                d.0.iter().filter(|(_, v)| **v != 0).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let dropped = drops().ingress - drops_before.ingress;
        assert_eq!(
            dropped,
            u64::from(!allowed),
            "x/a ingress drops for SCTP {port}"
        );
    }
}

/// An IPv4 SCTP INIT (checksum left zero: only the policy looks at it).
fn sctp_init(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&[0; 8]);
    s.extend_from_slice(&[1, 0, 0, 20]);
    s.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1]);
    let total = (20 + s.len()) as u16;
    let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 132, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let mut sum: u32 = p
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p.extend_from_slice(&s);
    p
}
