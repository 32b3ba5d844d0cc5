//! Compilation, checked by asking the compiled entries what the datapath
//! asks them: a model of the programs' lookups (longest-prefix match on
//! the two tries) run on API objects written as the API serves them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use overlay_common::{
    CIDR_PREFIX_BASE, DIR_EGRESS, DIR_INGRESS, IDENTITY_NONE, IPPROTO_ICMP, IPPROTO_SCTP,
    IPPROTO_TCP, IPPROTO_UDP, POLICY_F_EGRESS, POLICY_F_INGRESS, PolicyKey,
};
use serde_json::{Value, json};

use super::{
    compile::{Compiled, Identities, Inputs, compile, port_blocks},
    types::{Namespace, NetworkPolicy, Pod},
};

/// Whether the first `bits` bits of `a` and `b` agree.
fn prefix_eq(a: &[u8], b: &[u8], bits: u32) -> bool {
    (0..bits as usize).all(|i| (a[i / 8] >> (7 - i % 8)) & 1 == (b[i / 8] >> (7 - i % 8)) & 1)
}

fn key_bytes(k: &PolicyKey) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&k.endpoint);
    v.push(k.direction);
    v.extend_from_slice(&k.pad);
    v.extend_from_slice(&k.remote);
    v.push(k.proto);
    v.extend_from_slice(&k.port);
    v.push(k.pad2);
    v
}

/// The datapath's decision for a new flow, as `policy.rs` makes it.
fn allows(c: &Compiled, ep: Ipv4Addr, dir: u8, remote: Ipv4Addr, proto: u8, port: u16) -> bool {
    let flag = if dir == DIR_INGRESS {
        POLICY_F_INGRESS
    } else {
        POLICY_F_EGRESS
    };
    match c.endpoints.get(&ep) {
        Some(f) if f & flag != 0 => {}
        _ => return true,
    }
    let port = if matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        port
    } else {
        0
    };
    let rule = |id: u32| {
        let want = key_bytes(&PolicyKey {
            endpoint: ep.octets(),
            direction: dir,
            pad: [0; 3],
            remote: id.to_be_bytes(),
            proto,
            port: port.to_be_bytes(),
            pad2: 0,
        });
        c.rules
            .iter()
            .any(|(len, k)| prefix_eq(&key_bytes(k), &want, *len))
    };
    if c.identities.get(&remote).is_some_and(|id| rule(*id)) {
        return true;
    }
    let best = c
        .cidrs
        .iter()
        .filter(|((len, k), _)| {
            k.endpoint == ep.octets()
                && k.direction == dir
                && prefix_eq(&k.addr, &remote.octets(), len - CIDR_PREFIX_BASE)
        })
        .max_by_key(|((len, _), _)| *len);
    matches!(best, Some((_, id)) if *id != IDENTITY_NONE && rule(*id))
}

struct World {
    pods: BTreeMap<String, Pod>,
    namespaces: BTreeMap<String, Namespace>,
    policies: BTreeMap<String, NetworkPolicy>,
    local: BTreeSet<Ipv4Addr>,
    ids: Identities,
}

impl World {
    /// Namespaces x, y, z (label ns=<name>) with pods a, b, c each
    /// (label pod=<name>), all local; pod addresses 10.0.<ns>.<pod>.
    /// Every pod serves a named port `serve-80-tcp` on 80 and
    /// `serve-81-udp` on 81.
    fn new() -> Self {
        let mut w = World {
            pods: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            policies: BTreeMap::new(),
            local: BTreeSet::new(),
            ids: Identities::default(),
        };
        for (i, ns) in ["x", "y", "z"].iter().enumerate() {
            w.namespaces.insert(
                (*ns).into(),
                serde_json::from_value(json!({
                    "metadata": {"name": ns, "labels": {"ns": ns, "kubernetes.io/metadata.name": ns}}
                }))
                .expect("namespace"),
            );
            for (j, p) in ["a", "b", "c"].iter().enumerate() {
                let ip = Ipv4Addr::new(10, 0, i as u8 + 1, j as u8 + 1);
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": p, "namespace": ns, "labels": {"pod": p}},
                    "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                        {"name": "serve-80-tcp", "containerPort": 80, "protocol": "TCP"},
                        {"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"},
                    ]}]},
                    "status": {"podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}], "phase": "Running"},
                }))
                .expect("pod");
                w.local.insert(ip);
                w.pods.insert(pod.key(), pod);
            }
        }
        w
    }

    fn ip(ns: &str, pod: &str) -> Ipv4Addr {
        let i = ["x", "y", "z"].iter().position(|n| *n == ns).expect("ns") as u8;
        let j = ["a", "b", "c"].iter().position(|p| *p == pod).expect("pod") as u8;
        Ipv4Addr::new(10, 0, i + 1, j + 1)
    }

    fn policy(&mut self, ns: &str, name: &str, spec: Value) {
        let p: NetworkPolicy = serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }))
        .expect("policy");
        self.policies.insert(p.key(), p);
    }

    fn compile(&mut self) -> Compiled {
        compile(
            &Inputs {
                pods: &self.pods,
                namespaces: &self.namespaces,
                policies: &self.policies,
                local: &self.local,
            },
            &mut self.ids,
        )
    }

    /// Whether `from` may open `proto`/`port` to `to` (egress of the one,
    /// ingress of the other).
    fn reach(c: &Compiled, from: Ipv4Addr, to: Ipv4Addr, proto: u8, port: u16) -> bool {
        allows(c, from, DIR_EGRESS, to, proto, port)
            && allows(c, to, DIR_INGRESS, from, proto, port)
    }

    /// Every ordered pair (pod names `ns/pod`) that can reach the other on
    /// `proto`/`port`.
    fn matrix(c: &Compiled, proto: u8, port: u16) -> BTreeSet<(String, String)> {
        let all: Vec<(String, Ipv4Addr)> = ["x", "y", "z"]
            .iter()
            .flat_map(|n| ["a", "b", "c"].map(|p| (format!("{n}/{p}"), Self::ip(n, p))))
            .collect();
        let mut out = BTreeSet::new();
        for (fname, f) in &all {
            for (tname, t) in &all {
                if f != t && Self::reach(c, *f, *t, proto, port) {
                    out.insert((fname.clone(), tname.clone()));
                }
            }
        }
        out
    }
}

fn all_pairs() -> BTreeSet<(String, String)> {
    let names: Vec<String> = ["x", "y", "z"]
        .iter()
        .flat_map(|n| ["a", "b", "c"].map(|p| format!("{n}/{p}")))
        .collect();
    let mut out = BTreeSet::new();
    for a in &names {
        for b in &names {
            if a != b {
                out.insert((a.clone(), b.clone()));
            }
        }
    }
    out
}

fn pairs(f: impl Fn(&str, &str) -> bool) -> BTreeSet<(String, String)> {
    all_pairs().into_iter().filter(|(a, b)| f(a, b)).collect()
}

#[test]
fn no_policy_isolates_nothing() {
    let mut w = World::new();
    let c = w.compile();
    assert!(c.endpoints.is_empty());
    assert!(c.rules.is_empty());
    assert_eq!(c.identities.len(), 9);
    assert_eq!(World::matrix(&c, IPPROTO_TCP, 80), all_pairs());
}

#[test]
fn default_deny_ingress_isolates_only_its_namespace() {
    let mut w = World::new();
    w.policy("x", "deny", json!({"podSelector": {}}));
    let c = w.compile();
    assert_eq!(
        World::matrix(&c, IPPROTO_TCP, 80),
        pairs(|_, to| !to.starts_with("x/"))
    );
    assert_eq!(c.selected["x/a"], vec!["x/deny".to_owned()]);
    assert!(!c.selected.contains_key("y/a"));
}

#[test]
fn default_deny_egress_blocks_what_leaves_the_namespace_pods() {
    let mut w = World::new();
    w.policy(
        "x",
        "deny-egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    let c = w.compile();
    assert_eq!(
        World::matrix(&c, IPPROTO_UDP, 81),
        pairs(|from, _| !from.starts_with("x/"))
    );
    // Egress to the outside too.
    assert!(!allows(
        &c,
        World::ip("x", "a"),
        DIR_EGRESS,
        Ipv4Addr::new(8, 8, 8, 8),
        IPPROTO_UDP,
        53
    ));
}

#[test]
fn namespace_selector_pod_selector_and_both_in_one_peer() {
    let mut w = World::new();
    w.policy(
        "x",
        "from-y",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"ns": "y"}}}
        ]}]}),
    );
    w.policy(
        "x",
        "from-b-anywhere",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{"from": [
            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}
        ]}]}),
    );
    w.policy(
        "x",
        "from-z-c",
        json!({"podSelector": {"matchLabels": {"pod": "c"}}, "ingress": [{"from": [
            {"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "In", "values": ["z"]}]},
             "podSelector": {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["a", "b"]}]}}
        ]}]}),
    );
    let c = w.compile();
    assert_eq!(
        World::matrix(&c, IPPROTO_TCP, 80),
        pairs(|from, to| match to {
            "x/a" => from.starts_with("y/"),
            "x/b" => from.ends_with("/b"),
            "x/c" => from == "z/c",
            _ => true,
        })
    );
}

#[test]
fn pod_selector_alone_means_the_policys_own_namespace() {
    let mut w = World::new();
    w.policy(
        "y",
        "from-a",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
    );
    let c = w.compile();
    assert_eq!(
        World::matrix(&c, IPPROTO_TCP, 80),
        pairs(|from, to| !to.starts_with("y/") || from == "y/a")
    );
}

#[test]
fn ip_block_with_except() {
    let mut w = World::new();
    // 10.0.2.0/24 is namespace y; except y/b (10.0.2.2/32).
    w.policy(
        "x",
        "cidr",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.0.2.0/24", "except": ["10.0.2.2/32"]}}
        ]}]}),
    );
    // A second, wider block on another port must not undo the except on 80.
    w.policy(
        "x",
        "cidr-81",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 81, "protocol": "UDP"}], "from": [
            {"ipBlock": {"cidr": "10.0.0.0/16"}}
        ]}]}),
    );
    let c = w.compile();
    assert_eq!(
        World::matrix(&c, IPPROTO_TCP, 80),
        pairs(|from, to| !to.starts_with("x/") || (from.starts_with("y/") && from != "y/b"))
    );
    assert_eq!(World::matrix(&c, IPPROTO_UDP, 81), all_pairs());
    assert!(!allows(
        &c,
        World::ip("x", "a"),
        DIR_INGRESS,
        Ipv4Addr::new(10, 0, 2, 2),
        IPPROTO_TCP,
        80
    ));
}

#[test]
fn named_ports_resolve_against_the_right_pod() {
    let mut w = World::new();
    w.policy(
        "x",
        "named-in",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "serve-80-tcp"}]}]}),
    );
    w.policy(
        "y",
        "named-out",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]}),
    );
    let c = w.compile();
    assert_eq!(
        World::matrix(&c, IPPROTO_TCP, 80),
        pairs(|from, _| !from.starts_with("y/"))
    );
    assert_eq!(
        World::matrix(&c, IPPROTO_TCP, 81),
        pairs(|from, to| !from.starts_with("y/") && !to.starts_with("x/"))
    );
    assert_eq!(
        World::matrix(&c, IPPROTO_UDP, 81),
        pairs(|_, to| !to.starts_with("x/"))
    );
    // A name of the wrong protocol matches nothing.
    assert!(!allows(
        &c,
        World::ip("x", "a"),
        DIR_INGRESS,
        World::ip("z", "a"),
        IPPROTO_UDP,
        80
    ));
}

#[test]
fn end_port_ranges_cover_exactly_the_range() {
    let mut w = World::new();
    w.policy(
        "x",
        "range",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 79, "endPort": 1025, "protocol": "TCP"}]}]}),
    );
    let c = w.compile();
    let a = World::ip("x", "a");
    let b = World::ip("y", "b");
    for port in [79, 80, 81, 500, 1024, 1025] {
        assert!(allows(&c, a, DIR_INGRESS, b, IPPROTO_TCP, port), "{port}");
    }
    for port in [1, 78, 1026, 65535] {
        assert!(!allows(&c, a, DIR_INGRESS, b, IPPROTO_TCP, port), "{port}");
    }
    assert!(!allows(&c, a, DIR_INGRESS, b, IPPROTO_UDP, 80));
    assert!(!allows(&c, a, DIR_INGRESS, b, IPPROTO_ICMP, 0));
}

#[test]
fn a_port_string_holding_a_number_is_that_number_and_bad_port_forms_are_reported() {
    let mut w = World::new();
    w.policy(
        "x",
        "string-port",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "80", "endPort": 81, "protocol": "TCP"}]}]}),
    );
    for (name, port) in [
        ("named-range", json!({"port": "http", "endPort": 90})),
        ("empty-name", json!({"port": ""})),
        ("end-only", json!({"endPort": 90})),
        ("backwards", json!({"port": 90, "endPort": 80})),
        ("zero", json!({"port": "0"})),
    ] {
        w.policy(
            "y",
            name,
            json!({"podSelector": {}, "ingress": [{"ports": [port]}]}),
        );
    }
    let c = w.compile();
    let a = World::ip("x", "a");
    let b = World::ip("z", "b");
    for port in [80, 81] {
        assert!(allows(&c, a, DIR_INGRESS, b, IPPROTO_TCP, port), "{port}");
    }
    assert!(!allows(&c, a, DIR_INGRESS, b, IPPROTO_TCP, 82));
    for (name, says) in [
        ("named-range", "endPort with the named port"),
        ("empty-name", "empty port name"),
        ("end-only", "endPort without port"),
        ("backwards", "endPort 80 is below port 90"),
        ("zero", "port 0 is outside"),
    ] {
        assert!(
            c.problems
                .iter()
                .any(|p| p.policy == format!("y/{name}") && p.message.contains(says)),
            "{name}: {:?}",
            c.problems
        );
    }
    assert_eq!(c.problems.len(), 5, "{:?}", c.problems);
}

#[test]
fn port_blocks_are_aligned_and_cover_the_range_once() {
    for (lo, hi) in [
        (0, 65535),
        (1, 65535),
        (79, 1025),
        (80, 80),
        (65535, 65535),
        (1000, 1999),
    ] {
        let blocks = port_blocks(lo, hi);
        assert!(blocks.len() <= 32, "{lo}-{hi}: {blocks:?}");
        let mut next = u32::from(lo);
        for (base, k) in blocks {
            assert_eq!(u32::from(base), next);
            assert_eq!(u32::from(base) % (1 << k), 0);
            next += 1 << k;
        }
        assert_eq!(next, u32::from(hi) + 1);
    }
}

#[test]
fn egress_to_one_port_only_and_sctp() {
    let mut w = World::new();
    w.policy(
        "z",
        "one-port",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"port": 80}, {"port": 9000, "protocol": "SCTP"}]}]}),
    );
    let c = w.compile();
    let za = World::ip("z", "a");
    let xb = World::ip("x", "b");
    assert!(allows(&c, za, DIR_EGRESS, xb, IPPROTO_TCP, 80));
    assert!(allows(&c, za, DIR_EGRESS, xb, IPPROTO_SCTP, 9000));
    assert!(!allows(&c, za, DIR_EGRESS, xb, IPPROTO_TCP, 81));
    assert!(!allows(&c, za, DIR_EGRESS, xb, IPPROTO_UDP, 80));
    assert!(!allows(&c, za, DIR_EGRESS, xb, IPPROTO_SCTP, 9001));
}

#[test]
fn two_policies_add_up() {
    let mut w = World::new();
    w.policy(
        "x",
        "from-y",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    w.policy(
        "x",
        "from-z-a",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"ns": "z"}}, "podSelector": {"matchLabels": {"pod": "a"}}}
        ]}]}),
    );
    let c = w.compile();
    assert_eq!(
        World::matrix(&c, IPPROTO_TCP, 80),
        pairs(|from, to| !to.starts_with("x/") || from.starts_with("y/") || from == "z/a")
    );
    let mut sel = c.selected["x/c"].clone();
    sel.sort();
    assert_eq!(sel, vec!["x/from-y".to_owned(), "x/from-z-a".to_owned()]);
}

#[test]
fn bad_rules_are_reported_and_left_out_the_rest_applies() {
    let mut w = World::new();
    w.policy(
        "x",
        "mixed",
        json!({"podSelector": {}, "ingress": [
            {"ports": [{"port": 80, "protocol": "ICMP"}]},
            {"from": [{"ipBlock": {"cidr": "10.0.300.0/24"}}]},
            {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}
        ]}),
    );
    w.policy(
        "z",
        "bad-selector",
        json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Near"}]}}),
    );
    let c = w.compile();
    assert_eq!(c.problems.len(), 3, "{:?}", c.problems);
    assert!(
        c.problems
            .iter()
            .any(|p| p.policy == "x/mixed" && p.message.contains("ICMP"))
    );
    assert!(
        c.problems
            .iter()
            .any(|p| p.message.contains("10.0.300.0/24"))
    );
    assert!(
        c.problems
            .iter()
            .any(|p| p.policy == "z/bad-selector" && p.message.contains("Near"))
    );
    // Fail closed: x is still isolated, only the good rule allows.
    assert_eq!(
        World::matrix(&c, IPPROTO_TCP, 80),
        pairs(|from, to| !to.starts_with("x/") || from.starts_with("y/"))
    );
}

#[test]
fn updates_keep_identities_and_touch_only_what_changed() {
    let mut w = World::new();
    w.policy("x", "deny", json!({"podSelector": {}}));
    let before = w.compile();
    w.policy(
        "x",
        "allow-y",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    let after = w.compile();
    assert_eq!(before.identities, after.identities);
    assert_eq!(before.endpoints, after.endpoints);
    assert!(after.rules.is_superset(&before.rules));
    // Deleting a policy opens its pods again.
    w.policies.clear();
    let open = w.compile();
    assert!(open.endpoints.is_empty() && open.rules.is_empty() && open.cidrs.is_empty());
    assert_eq!(open.identities, before.identities);
}

#[test]
fn a_restarted_agent_seeded_from_the_maps_compiles_the_same_entries() {
    let mut w = World::new();
    w.policy(
        "x",
        "mixed",
        json!({"podSelector": {}, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"port": 80}]},
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.3.0/24"]}}], "ports": [{"port": 81, "protocol": "UDP"}]}
        ]}),
    );
    // Identities handed out in another order first, as a long-running
    // agent would have them after pods came and went.
    w.ids = Identities::default();
    let late: Vec<String> = w
        .pods
        .keys()
        .filter(|k| k.starts_with("x/"))
        .cloned()
        .collect();
    let saved: BTreeMap<String, Pod> = late
        .iter()
        .map(|k| (k.clone(), w.pods.remove(k).expect("pod")))
        .collect();
    w.compile();
    w.pods.extend(saved);
    let before = w.compile();

    let mut fresh = Identities::default();
    fresh.seed(&before.identities, &w.pods);
    w.ids = fresh;
    let after = w.compile();
    assert_eq!(before.identities, after.identities);
    assert_eq!(before.rules, after.rules);
    assert_eq!(before.cidrs, after.cidrs);

    // Without the seed the numbers differ: what the seed is for.
    w.ids = Identities::default();
    let unseeded = w.compile();
    assert_ne!(before.identities, unseeded.identities);
}
