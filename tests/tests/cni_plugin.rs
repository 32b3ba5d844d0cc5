//! The `overlay-cni` plugin and `overlay-agent run`, end to end: pods made
//! through the plugin binary exactly as a CNI runtime calls it (environment
//! plus configuration on stdin), on nodes running real agents.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};

use overlay_tests::{
    Netns,
    cluster::{Cluster, CniCall, invoke_in, result_ip, with_prev},
    privileged,
    traffic::tcp_fetch_retry,
};
use serde_json::{Value, json};

/// Nothing of a pod is left on node `i`: no host veth, no address, no
/// endpoint entry.
fn assert_clean(c: &Cluster, i: usize, what: &str) {
    assert_eq!(c.host_veths(i), Vec::<String>::new(), "{what}: veths left");
    assert_eq!(
        c.allocated(i),
        Vec::<Ipv4Addr>::new(),
        "{what}: addresses left"
    );
    assert_eq!(
        c.endpoints(i),
        Vec::<Ipv4Addr>::new(),
        "{what}: endpoints left"
    );
}

fn call<'a>(cmd: &'a str, cid: &'a str, netns: Option<&'a str>, config: &'a str) -> CniCall<'a> {
    CniCall {
        command: cmd,
        container_id: cid,
        netns,
        ifname: "eth0",
        config,
    }
}

/// The configuration `config` with a `prevResult` added.
#[test]
fn pods_added_through_the_plugin_reach_each_other_across_nodes_and_on_one_node() {
    privileged!("pods_added_through_the_plugin_reach_each_other_across_nodes_and_on_one_node");
    let mut c = Cluster::new(2);
    let a = c.add_pod(0);
    let b = c.add_pod(0);
    let d = c.add_pod(1);
    assert!(c.lab.nodes[0].block.contains(&a.ip), "{}", a.result);
    assert!(c.lab.nodes[1].block.contains(&d.ip), "{}", d.result);
    let ips: BTreeSet<Ipv4Addr> = [a.ip, b.ip, d.ip].into();
    assert_eq!(ips.len(), 3, "addresses are unique");
    for (from, to) in [(&a, &b), (&a, &d), (&d, &b), (&b, &a)] {
        assert!(
            from.ns.ping(&to.ip.to_string(), 2),
            "{} cannot reach {}; agent log:\n{}",
            from.ip,
            to.ip,
            c.log(from.node)
        );
    }
    // The node reaches its pods too (kubelet probes).
    assert!(c.lab.nodes[0].ns.ping(&a.ip.to_string(), 1));
    let addr = a.ns.ip(&["-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&format!("{}/32", a.ip)), "{addr}");
    let link = a.ns.ip(&["-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains("mtu 1450"), "uplink 1500 - 50: {link}");
    let route = a.ns.ip(&["route", "show", "default"]);
    assert!(route.contains("via 169.254.1.1 dev eth0"), "{route}");
    for p in [&a, &b, &d] {
        c.del_pod(p);
    }
    assert_clean(&c, 0, "after DEL");
    assert_clean(&c, 1, "after DEL");
}

#[test]
fn every_cni_version_gets_its_result_format_and_add_check_del_work() {
    privileged!("every_cni_version_gets_its_result_format_and_add_check_del_work");
    let mut c = Cluster::new(2);
    let out = c.cni(
        0,
        &CniCall {
            command: "VERSION",
            container_id: "",
            netns: None,
            ifname: "",
            config: r#"{"cniVersion":"0.4.0"}"#,
        },
    );
    let v = out.ok();
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );

    for version in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let ns = c.new_pod_ns(0);
        let path = ns.path().display().to_string();
        let cid = format!("ver-{}", version.replace('.', "-"));
        let config = c.config(0, version);
        let r = c.cni(0, &call("ADD", &cid, Some(&path), &config)).ok();
        assert_eq!(r["cniVersion"], version, "{r}");
        let ip = result_ip(&r);
        assert_eq!(r["ips"][0]["address"], format!("{ip}/32"));
        assert_eq!(r["ips"][0]["gateway"], "169.254.1.1");
        assert_eq!(r["ips"][0]["interface"], 1);
        assert_eq!(
            r["ips"][0].get("version").is_some(),
            version < "1.0.0",
            "{version}: IP entries carry \"version\" only before 1.0.0: {r}"
        );
        assert_eq!(r["interfaces"][1]["name"], "eth0");
        assert_eq!(r["interfaces"][1]["sandbox"], path);
        assert!(
            r["interfaces"][0]["name"]
                .as_str()
                .unwrap()
                .starts_with("ovl")
        );
        assert_eq!(
            r["routes"][0],
            json!({"dst": "0.0.0.0/0", "gw": "169.254.1.1"})
        );
        let mac = ns.ip(&["-o", "link", "show", "dev", "eth0"]);
        assert!(
            mac.contains(r["interfaces"][1]["mac"].as_str().unwrap()),
            "{mac} {r}"
        );

        let checked = with_prev(&config, &r);
        if version >= "0.4.0" {
            c.cni(0, &call("CHECK", &cid, Some(&path), &checked)).ok();
            // CHECK notices what is broken and names it.
            ns.ip(&["addr", "del", &format!("{ip}/32"), "dev", "eth0"]);
            let msg = c
                .cni(0, &call("CHECK", &cid, Some(&path), &checked))
                .err(102);
            assert!(msg.contains(&ip.to_string()), "{msg}");
        } else {
            let msg = c.cni(0, &call("CHECK", &cid, Some(&path), &checked)).err(1);
            assert!(msg.contains("0.4.0"), "{msg}");
        }
        c.cni(0, &call("DEL", &cid, Some(&path), &checked)).ok();
        assert_clean(&c, 0, version);
    }

    // STATUS and GC only exist from 1.1.0 on.
    c.cni(0, &call("STATUS", "x", None, &c.config(0, "1.1.0")))
        .ok();
    let msg = c
        .cni(0, &call("STATUS", "x", None, &c.config(0, "1.0.0")))
        .err(1);
    assert!(msg.contains("1.1.0"), "{msg}");
}

/// What is wrong, the call, environment overrides, the expected code, and
/// words its message must contain.
type BadCase<'a> = (
    &'a str,
    CniCall<'a>,
    &'a [(&'a str, &'a str)],
    u64,
    &'a [&'a str],
);

#[test]
fn bad_input_gets_a_clear_error_and_leaves_nothing_behind() {
    privileged!("bad_input_gets_a_clear_error_and_leaves_nothing_behind");
    // Node 0's block has two usable addresses, to exhaust it.
    let c = Cluster::with_blocks(2, |i| {
        vec![if i == 0 {
            "10.32.1.0/30".into()
        } else {
            "10.32.2.0/24".into()
        }]
    });
    let ns = Netns::new(&c.lab.tag, "bad");
    let path = ns.path().display().to_string();
    let good = c.config(0, "1.0.0");
    let ok_env = |cmd| call(cmd, "bad-1", Some(&path), &good);

    // (env override, config, code, words the message must contain)
    let no_agent = json!({"cniVersion": "1.0.0", "name": "overlay", "type": "overlay-cni",
        "agentSocket": c.dir.join("nobody.sock")})
    .to_string();
    let with_ipam = json!({"cniVersion": "1.0.0", "name": "overlay", "type": "overlay-cni",
        "ipam": {"type": "host-local"}})
    .to_string();
    let cases: Vec<BadCase<'_>> = vec![
        (
            "no CNI_COMMAND",
            ok_env("ADD"),
            &[("CNI_COMMAND", "")],
            4,
            &["CNI_COMMAND"],
        ),
        (
            "bad CNI_COMMAND",
            ok_env("ADD"),
            &[("CNI_COMMAND", "PUT")],
            4,
            &["PUT"],
        ),
        (
            "no CNI_CONTAINERID",
            ok_env("ADD"),
            &[("CNI_CONTAINERID", "")],
            4,
            &["CNI_CONTAINERID"],
        ),
        (
            "bad CNI_IFNAME",
            ok_env("ADD"),
            &[("CNI_IFNAME", "eth0/x")],
            4,
            &["CNI_IFNAME"],
        ),
        (
            "no CNI_NETNS",
            ok_env("ADD"),
            &[("CNI_NETNS", "")],
            4,
            &["CNI_NETNS"],
        ),
        (
            "bad CNI_ARGS",
            ok_env("ADD"),
            &[("CNI_ARGS", "nonsense")],
            4,
            &["CNI_ARGS"],
        ),
        (
            "missing netns",
            call("ADD", "bad-1", Some("/run/netns/does-not-exist"), &good),
            &[],
            3,
            &["/run/netns/does-not-exist"],
        ),
        (
            "malformed JSON",
            call("ADD", "bad-1", Some(&path), "{\"cniVersion\":"),
            &[],
            6,
            &["JSON"],
        ),
        (
            "unknown version",
            call(
                "ADD",
                "bad-1",
                Some(&path),
                r#"{"cniVersion":"0.9.9","name":"o","type":"overlay-cni"}"#,
            ),
            &[],
            1,
            &["0.9.9"],
        ),
        (
            "wrong type",
            call(
                "ADD",
                "bad-1",
                Some(&path),
                r#"{"cniVersion":"1.0.0","name":"o","type":"bridge"}"#,
            ),
            &[],
            7,
            &["bridge"],
        ),
        (
            "ipam section",
            call("ADD", "bad-1", Some(&path), &with_ipam),
            &[],
            2,
            &["ipam"],
        ),
        (
            "agent not running",
            call("ADD", "bad-1", Some(&path), &no_agent),
            &[],
            11,
            &["not running", "nobody.sock"],
        ),
    ];
    for (what, call, env, code, words) in &cases {
        let out = overlay_tests::cluster::invoke_env(&c.lab.nodes[0].ns, call, env);
        assert!(out.json["cniVersion"].is_string(), "{what}: {}", out.stdout);
        let msg = out.err(*code);
        for w in *words {
            assert!(
                msg.contains(w),
                "{what}: message {msg:?} does not name {w:?}"
            );
        }
        assert_clean(&c, 0, what);
        assert!(
            !ns.ip(&["-o", "link"]).contains("eth0"),
            "{what}: pod interface made"
        );
    }

    // The interface name is taken in the pod: code 100, the pod's own
    // interface untouched, nothing of ours left.
    // (No `dummy` driver in this kernel: a veth pair inside the pod.)
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ]);
    let msg = c.cni(0, &ok_env("ADD")).err(100);
    assert!(msg.contains("eth0"), "{msg}");
    assert_clean(&c, 0, "interface taken");
    let theirs = ns.ip(&["-o", "link", "show", "eth0"]);
    assert!(
        theirs.contains("other0"),
        "the pod's own eth0 was touched: {theirs}"
    );
    ns.ip(&["link", "del", "eth0"]);

    // An exhausted block: two pods fit in a /30, the third gets code 101.
    let p1 = Netns::new(&c.lab.tag, "full1");
    let p2 = Netns::new(&c.lab.tag, "full2");
    for (cid, p) in [("full-1", &p1), ("full-2", &p2)] {
        let path = p.path().display().to_string();
        c.cni(0, &call("ADD", cid, Some(&path), &good)).ok();
    }
    let msg = c.cni(0, &ok_env("ADD")).err(101);
    assert!(msg.contains("10.32.1.0/30"), "{msg}");
    assert_eq!(c.allocated(0).len(), 2);
    assert_eq!(c.host_veths(0).len(), 2);
    assert!(!ns.ip(&["-o", "link"]).contains("eth0"));
}

#[test]
fn del_is_idempotent_in_every_form() {
    privileged!("del_is_idempotent_in_every_form");
    let mut c = Cluster::new(2);
    let v11 = c.config(0, "1.1.0");
    let v031 = c.config(0, "0.3.1");

    // Twice, the second time with an empty CNI_NETNS and no prevResult
    // (what containerd does).
    let p = c.add_pod(0);
    let path = p.ns.path().display().to_string();
    let with = with_prev(&v11, &p.result);
    c.cni(0, &call("DEL", &p.container_id, Some(&path), &with))
        .ok();
    assert_clean(&c, 0, "first DEL");
    c.cni(0, &call("DEL", &p.container_id, Some(""), &v11)).ok();
    c.cni(0, &call("DEL", &p.container_id, None, &v031)).ok();

    // After the pod's namespace is gone.
    let p = c.add_pod(0);
    let (cid, path) = (p.container_id.clone(), p.ns.path().display().to_string());
    drop(p);
    c.cni(0, &call("DEL", &cid, Some(&path), &v11)).ok();
    assert_clean(&c, 0, "DEL after the netns is gone");

    // After an agent restart.
    let p = c.add_pod(0);
    c.kill_agent(0);
    c.start_agent(0);
    c.del_pod(&p);
    assert_clean(&c, 0, "DEL after agent restart");
    c.del_pod(&p);

    // For a container never seen.
    c.cni(0, &call("DEL", "never-added", Some(""), &v11)).ok();
}

#[test]
fn add_twice_for_the_same_container_keeps_one_address_and_no_leak() {
    privileged!("add_twice_for_the_same_container_keeps_one_address_and_no_leak");
    let mut c = Cluster::new(2);
    let p = c.add_pod(0);
    let other = c.add_pod(1);
    let path = p.ns.path().display().to_string();
    let again = c
        .cni(
            0,
            &call("ADD", &p.container_id, Some(&path), &c.config(0, "1.0.0")),
        )
        .ok();
    assert_eq!(result_ip(&again), p.ip, "same address");
    assert_eq!(c.host_veths(0).len(), 1);
    assert_eq!(c.allocated(0), vec![p.ip]);
    assert!(
        p.ns.ping(&other.ip.to_string(), 2),
        "re-added pod reaches the other node"
    );
    c.del_pod(&p);
    c.del_pod(&other);
    assert_clean(&c, 0, "after DEL");
}

#[test]
fn gc_removes_every_attachment_not_listed_as_valid() {
    privileged!("gc_removes_every_attachment_not_listed_as_valid");
    let mut c = Cluster::new(2);
    let keep = c.add_pod(0);
    let gone1 = c.add_pod(0);
    let gone2 = c.add_pod(0);
    let peer = c.add_pod(1);
    let mut gc: Value = serde_json::from_str(&c.config(0, "1.1.0")).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": keep.container_id, "ifname": "eth0"}]);
    let gc = gc.to_string();
    c.cni(0, &call("GC", "gc", None, &gc)).ok();
    assert_eq!(c.allocated(0), vec![keep.ip]);
    assert_eq!(c.host_veths(0).len(), 1);
    assert_eq!(c.endpoints(0), vec![keep.ip]);
    for g in [&gone1, &gone2] {
        assert!(
            !g.ns.ip(&["-o", "link"]).contains("eth0"),
            "collected pod keeps eth0"
        );
    }
    assert!(
        keep.ns.ping(&peer.ip.to_string(), 2),
        "the kept pod still works"
    );
    // GC without the list is refused rather than removing everything.
    let msg = c
        .cni(0, &call("GC", "gc", None, &c.config(0, "1.1.0")))
        .err(7);
    assert!(msg.contains("valid-attachments"), "{msg}");
    assert_eq!(c.allocated(0), vec![keep.ip]);
}

#[test]
fn fifty_parallel_adds_get_unique_addresses_and_all_are_reachable() {
    privileged!("fifty_parallel_adds_get_unique_addresses_and_all_are_reachable");
    let mut c = Cluster::new(2);
    let probe = c.add_pod(1);
    let namespaces: Vec<Netns> = (0..50).map(|_| c.new_pod_ns(0)).collect();
    let config = c.config(0, "1.0.0");
    let started = std::time::Instant::now();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = namespaces
            .iter()
            .enumerate()
            .map(|(k, ns)| {
                let (c, config) = (&c, &config);
                s.spawn(move || {
                    let path = ns.path().display().to_string();
                    let cid = format!("par-{k}");
                    c.cni(0, &call("ADD", &cid, Some(&path), config)).ok()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ADD thread"))
            .collect()
    });
    eprintln!("50 parallel ADDs took {:?}", started.elapsed());
    let ips: BTreeSet<Ipv4Addr> = results.iter().map(result_ip).collect();
    assert_eq!(ips.len(), 50, "every ADD got its own address");
    assert_eq!(c.allocated(0).len(), 50);
    assert_eq!(c.host_veths(0).len(), 50);
    let unreachable: Vec<_> = ips
        .iter()
        .filter(|ip| !probe.ns.ping(&ip.to_string(), 1))
        .collect();
    assert!(
        unreachable.is_empty(),
        "not reachable across nodes: {unreachable:?}"
    );
    std::thread::scope(|s| {
        for (k, ns) in namespaces.iter().enumerate() {
            let (c, config) = (&c, &config);
            s.spawn(move || {
                let path = ns.path().display().to_string();
                c.cni(0, &call("DEL", &format!("par-{k}"), Some(&path), config))
                    .ok();
            });
        }
    });
    assert_clean(&c, 0, "after 50 parallel DELs");
}

#[test]
fn agent_killed_during_a_burst_of_adds_restarts_without_duplicate_or_leaked_addresses() {
    privileged!(
        "agent_killed_during_a_burst_of_adds_restarts_without_duplicate_or_leaked_addresses"
    );
    let mut c = Cluster::new(2);
    let probe = c.add_pod(1);
    let namespaces: Vec<Netns> = (0..30).map(|_| c.new_pod_ns(0)).collect();
    let config = c.config(0, "1.0.0");
    let done: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let cluster = Mutex::new(c);
    std::thread::scope(|s| {
        for (k, ns) in namespaces.iter().enumerate() {
            let (cluster, config, done) = (&cluster, &config, done.clone());
            s.spawn(move || {
                let path = ns.path().display().to_string();
                let cid = format!("burst-{k}");
                // Each ADD runs as its own plugin process; the lock only
                // guards the harness, never an ADD.
                let node = cluster.lock().unwrap().lab.nodes[0].ns.name.clone();
                let out = invoke_in(&node, &call("ADD", &cid, Some(&path), config));
                if out.code == 0 {
                    done.lock().unwrap().push((cid, out.json));
                } else {
                    let code = out.json["code"].as_u64();
                    assert!(
                        matches!(code, Some(11) | Some(5) | Some(110)),
                        "an interrupted ADD fails with try-again or I/O, got {}",
                        out.stdout
                    );
                }
            });
        }
        // Kill once a third of the burst holds addresses: ADDs are then
        // in flight at every step.
        for _ in 0..500 {
            if cluster.lock().unwrap().allocated(0).len() >= 10 {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        cluster.lock().unwrap().kill_agent(0);
    });
    let mut c = cluster.into_inner().unwrap();
    let done = done.lock().unwrap().clone();
    assert!(
        !done.is_empty() && done.len() < namespaces.len(),
        "the kill did not land inside the burst ({} of {} succeeded)",
        done.len(),
        namespaces.len()
    );
    let orphans = c.allocated(0).len().saturating_sub(done.len());
    c.start_agent(0);
    let succeeded: BTreeSet<Ipv4Addr> = done.iter().map(|(_, r)| result_ip(r)).collect();
    assert_eq!(
        succeeded.len(),
        done.len(),
        "two successful ADDs share an address"
    );
    // The runtime garbage-collects what it does not know.
    let mut gc: Value = serde_json::from_str(&c.config(0, "1.1.0")).unwrap();
    gc["cni.dev/valid-attachments"] = done
        .iter()
        .map(|(cid, _)| json!({"containerID": cid, "ifname": "eth0"}))
        .collect();
    c.cni(0, &call("GC", "gc", None, &gc.to_string())).ok();
    let allocated: BTreeSet<Ipv4Addr> = c.allocated(0).into_iter().collect();
    assert_eq!(
        allocated, succeeded,
        "after GC exactly the successful ADDs hold addresses"
    );
    assert_eq!(c.host_veths(0).len(), done.len(), "no stray veth after GC");
    for ip in &succeeded {
        assert!(
            probe.ns.ping(&ip.to_string(), 1),
            "{ip} unreachable after restart"
        );
    }
    // New pods after the restart get fresh addresses.
    let fresh = c.add_pod(0);
    assert!(!succeeded.contains(&fresh.ip));
    eprintln!(
        "burst: {} of {} ADDs succeeded before the kill; {orphans} addresses held by \
         interrupted ADDs were collected by GC",
        done.len(),
        namespaces.len()
    );
}

#[test]
fn a_restarted_agent_keeps_every_allocation_and_pods_keep_talking_meanwhile() {
    privileged!("a_restarted_agent_keeps_every_allocation_and_pods_keep_talking_meanwhile");
    let mut c = Cluster::new(2);
    let a = c.add_pod(0);
    let b = c.add_pod(1);
    c.kill_agent(0);
    assert!(
        a.ns.ping(&b.ip.to_string(), 2),
        "traffic stops without the agent"
    );
    assert!(
        b.ns.ping(&a.ip.to_string(), 2),
        "traffic stops without the agent"
    );
    // ADD while the agent is down: try again later, nothing made.
    let ns = c.new_pod_ns(0);
    let path = ns.path().display().to_string();
    let msg = c
        .cni(
            0,
            &call("ADD", "while-down", Some(&path), &c.config(0, "1.0.0")),
        )
        .err(11);
    assert!(msg.contains("not running"), "{msg}");
    assert_eq!(c.allocated(0), vec![a.ip]);
    c.start_agent(0);
    assert_eq!(c.allocated(0), vec![a.ip]);
    let again = c.add_pod(0);
    assert_ne!(again.ip, a.ip);
    assert!(again.ns.ping(&a.ip.to_string(), 1) && a.ns.ping(&b.ip.to_string(), 1));
    // SIGTERM: clean exit, datapath left in place.
    assert!(
        c.stop_agent(0),
        "agent did not exit cleanly on SIGTERM:\n{}",
        c.log(0)
    );
    assert!(
        a.ns.ping(&b.ip.to_string(), 1),
        "SIGTERM tore the datapath down"
    );
}

#[test]
fn a_node_without_a_block_is_not_ready_and_says_why() {
    privileged!("a_node_without_a_block_is_not_ready_and_says_why");
    let c = Cluster::with_blocks(2, |i| {
        if i == 0 {
            vec![]
        } else {
            vec!["10.32.2.0/24".into()]
        }
    });
    let mut msg = String::new();
    for _ in 0..100 {
        let out = c.cni(0, &call("STATUS", "s", None, &c.config(0, "1.1.0")));
        if out.json["code"].as_u64() == Some(50) && out.stdout.contains("block") {
            msg = out.err(50);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(msg.contains("owns no address block"), "{msg}");
    let ns = Netns::new(&c.lab.tag, "nb");
    let path = ns.path().display().to_string();
    let msg = c
        .cni(0, &call("ADD", "nb", Some(&path), &c.config(0, "1.0.0")))
        .err(11);
    assert!(msg.contains("no address block"), "{msg}");
    assert_clean(&c, 0, "ADD without a block");
    // The ready node has written its conflist; the one without a block
    // has not, so no runtime would have called it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !c.agents[1].conflist_path().exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the ready node wrote no conflist:\n{}",
            c.log(1)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !c.agents[0].conflist_path().exists(),
        "a node without a block has a conflist:\n{}",
        c.log(0)
    );
}

#[test]
fn pod_egress_is_masqueraded_behind_the_node_and_pod_to_pod_traffic_is_not() {
    privileged!("pod_egress_is_masqueraded_behind_the_node_and_pod_to_pod_traffic_is_not");
    let mut c = Cluster::new(2);
    let a = c.add_pod(0);
    let b = c.add_pod(1);
    // An "outside" host that only knows the link to node 0: it has no
    // route to any pod, so a reply reaches the pod only if masqueraded.
    let outside = Netns::outside_host(
        &c.lab.nodes[0].ns,
        "ext0",
        "198.18.0.1/24",
        &c.lab.tag,
        "out",
        "198.18.0.2/24",
    );
    let nft = c.lab.nodes[0]
        .ns
        .exec(&["nft", "list", "table", "ip", "overlay"]);
    assert!(nft.contains("masquerade"), "{nft}");

    let echo_peer = [
        "socat",
        "TCP-LISTEN:8080,reuseaddr,fork",
        "SYSTEM:echo $SOCAT_PEERADDR",
    ];
    let _srv = outside.spawn(&echo_peer);
    let _srv2 = b.ns.spawn(&echo_peer);
    let seen = |from: &Netns, to: &str| -> String {
        tcp_fetch_retry(from, to, 8080, 20).unwrap_or_else(|| panic!("no answer from {to}"))
    };
    assert_eq!(
        seen(&a.ns, "198.18.0.2"),
        "198.18.0.1",
        "egress leaves as the node"
    );
    assert_eq!(
        seen(&a.ns, &b.ip.to_string()),
        a.ip.to_string(),
        "pod-to-pod is not NATed"
    );
}
