//! Two kinds of liveness, end to end with real agents in namespaces: an
//! agent that restarts (SIGKILL, SIGTERM, a rolling restart of all) never
//! interrupts a flow, because its peers keep routing to its datapath while
//! that answers their probes; a node that is really gone (its namespace
//! deleted, or cut off the underlay) is withdrawn everywhere within 2 s
//! and restored when back; forged probes change nothing and are counted.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use overlay_common::DEFAULT_PROBE_PORT;
use overlay_tests::{
    cluster::{Cluster, CniPod},
    lab::node_ip,
    privileged, rogue,
    traffic::{ContinuousPing, PacedFlow},
};
use serde_json::Value;

const NODES: usize = 3;
const GOSSIP_TIMEOUT: Duration = Duration::from_secs(30);
/// The withdrawal bound the product promises for a node that is gone.
const WITHDRAWAL_BOUND: Duration = Duration::from_secs(2);
const MAP_POLL: Duration = Duration::from_millis(50);

fn name(i: usize) -> String {
    format!("n{}", i + 1)
}

fn peer(status: &Value, name: &str) -> Option<Value> {
    status["gossip"]["peers"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

/// Whether node `observer` routes to node `target` (an active peer with
/// at least one route through it).
fn routes_to(c: &Cluster, observer: usize, target: usize) -> bool {
    let maps = c.lab.maps(observer);
    let ip = node_ip(target);
    maps.peers().expect("peers map").contains(&ip)
        && maps
            .routes()
            .expect("routes map")
            .values()
            .any(|n| *n == ip)
}

/// Polls until `pred` holds for every observer; the time it took.
fn wait_until(what: &str, timeout: Duration, pred: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !pred() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(MAP_POLL);
    }
    start.elapsed()
}

/// Restarts node `i`'s agent: SIGKILL or SIGTERM, `down` of silence, start
/// again and wait until it serves ADD.
fn restart(c: &mut Cluster, i: usize, sigterm: bool, down: Duration) -> Duration {
    let t = Instant::now();
    if sigterm {
        assert!(c.stop_agent(i), "{}'s agent did not stop cleanly", name(i));
    } else {
        c.kill_agent(i);
    }
    std::thread::sleep(down);
    c.start_agent(i);
    t.elapsed()
}

/// Asserts that no one-second interval fell below half the median.
fn assert_never_below_half_the_median(what: &str, gbps: &[f64]) {
    assert!(gbps.len() >= 10, "{what}: only {} intervals", gbps.len());
    let mut sorted = gbps.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let shown: Vec<String> = gbps.iter().map(|g| format!("{g:.2}")).collect();
    println!("{what}: Gbit/s per second: {}", shown.join(" "));
    for (s, g) in gbps.iter().enumerate() {
        assert!(
            *g >= median / 2.0,
            "{what}: second {s} carried {g:.3} Gbit/s, under half the median {median:.3}: {}",
            shown.join(" ")
        );
    }
}

/// A paced flow and a 50/s ping from a pod on node 0 to a pod on node 1,
/// while `events` runs; asserts the flow never dipped and no echo was lost.
fn flow_survives(c: &mut Cluster, what: &str, secs: u32, events: impl FnOnce(&mut Cluster)) {
    let a: CniPod = c.add_pod(0);
    let b: CniPod = c.add_pod(1);
    assert!(a.ns.ping(&b.ip.to_string(), 2), "no baseline path");
    let flow = PacedFlow::start(&b.ns, b.ip, &a.ns, "1G", secs);
    let ping = ContinuousPing::start(&a.ns, b.ip, 50, Duration::from_secs(u64::from(secs) + 30));
    std::thread::sleep(Duration::from_secs(2));
    events(c);
    let gbps = flow.finish(Duration::from_secs(u64::from(secs) + 60));
    let (sent, received) = ping.finish();
    println!("{what}: ping at 50/s: {received}/{sent}");
    assert_never_below_half_the_median(what, &gbps);
    assert!(sent >= 100, "{what}: the ping ran too briefly ({sent})");
    assert_eq!(received, sent, "{what}: echoes lost");
    c.del_pod(&a);
    c.del_pod(&b);
}

#[test]
fn agent_restarts_never_interrupt_a_flow() {
    privileged!("agent_restarts_never_interrupt_a_flow");
    let mut c = Cluster::gossip(NODES);
    c.wait_converged(NODES, GOSSIP_TIMEOUT);

    flow_survives(
        &mut c,
        "SIGKILL and restart of the sender's, then the receiver's agent",
        20,
        |c| {
            for i in [0, 1] {
                let t = restart(c, i, false, Duration::from_secs(3));
                println!("{}'s agent killed and back, serving, after {t:?}", name(i));
                std::thread::sleep(Duration::from_secs(1));
            }
        },
    );

    // While an agent is down its peers show it so, and keep routing to it.
    c.kill_agent(1);
    let seen = wait_until("n2 shown as agent down everywhere", GOSSIP_TIMEOUT, || {
        [0, 2].iter().all(|i| {
            peer(&c.status(*i), "n2")
                .is_some_and(|p| p["state"] == "agent_down" && p["routed"] == true)
        })
    });
    println!(
        "n2's agent SIGKILLed: shown as agent_down and still routed everywhere after {seen:?}"
    );
    assert!(routes_to(&c, 0, 1) && routes_to(&c, 2, 1));
    let m = c.metrics(0);
    assert!(
        m.lines()
            .any(|l| l == r#"overlay_peers{state="agent_down"} 1"#),
        "metrics: {m}"
    );
    c.start_agent(1);
    c.wait_converged(NODES, GOSSIP_TIMEOUT);

    flow_survives(&mut c, "SIGTERM and start of the sender's agent", 14, |c| {
        let t = restart(c, 0, true, Duration::from_secs(3));
        println!("n1's agent stopped and back, serving, after {t:?}");
    });

    flow_survives(
        &mut c,
        "rolling restart of every agent, one by one",
        30,
        |c| {
            for i in 0..NODES {
                let t = restart(c, i, true, Duration::from_secs(1));
                println!("rolling: {}'s agent back after {t:?}", name(i));
            }
        },
    );

    // A clean stop was announced: its peers logged it as such, not as a
    // failure.
    let log = c.log(2);
    assert!(
        log.contains("stopped cleanly"),
        "n3 never saw a clean stop announced:\n{log}"
    );
}

#[test]
fn a_node_that_is_gone_is_withdrawn_everywhere_within_2s_and_restored_when_back() {
    privileged!("a_node_that_is_gone_is_withdrawn_everywhere_within_2s_and_restored_when_back");
    let mut c = Cluster::gossip(NODES);
    c.wait_converged(NODES, GOSSIP_TIMEOUT);
    let victim = 2;
    let others = [0, 1];
    let blocks_before = c.status(victim)["gossip"]["blocks"].clone();

    // Power loss: the agent dies with its namespace (and so its datapath).
    let t = Instant::now();
    c.kill_node(victim);
    let withdrawn = wait_until("the dead node withdrawn everywhere", GOSSIP_TIMEOUT, || {
        others.iter().all(|o| !routes_to(&c, *o, victim))
    });
    println!("node death: n3 withdrawn from every other node's maps in {withdrawn:?}");
    assert!(
        withdrawn <= WITHDRAWAL_BOUND,
        "withdrawal took {withdrawn:?}"
    );
    assert!(t.elapsed() >= withdrawn);

    let t = Instant::now();
    c.revive_node(victim);
    c.wait_ready(victim, Duration::from_secs(20));
    let back = wait_until("the revived node routed everywhere", GOSSIP_TIMEOUT, || {
        others.iter().all(|o| routes_to(&c, *o, victim))
    });
    println!(
        "node back: routed everywhere {:?} after its namespace came back ({back:?} after ready)",
        t.elapsed()
    );
    c.wait_converged(NODES, GOSSIP_TIMEOUT);
    let s = c.status(victim);
    assert_eq!(
        s["gossip"]["blocks"], blocks_before,
        "the node came back with other blocks"
    );
    for i in 0..NODES {
        let s = c.status(i);
        assert!(
            s["gossip"]["conflicts"]
                .as_array()
                .is_none_or(|a| a.is_empty()),
            "node {i} sees duplicate owners: {}",
            s["gossip"]
        );
    }
    let a = c.add_pod(0);
    let b = c.add_pod(victim);
    assert!(
        a.ns.ping(&b.ip.to_string(), 3),
        "pods reach the revived node"
    );

    // Underlay cut: withdrawn within the bound too, and back when healed.
    let t = Instant::now();
    c.lab.set_switch_port(victim, false);
    let withdrawn = wait_until("the cut node withdrawn everywhere", GOSSIP_TIMEOUT, || {
        others.iter().all(|o| !routes_to(&c, *o, victim))
    });
    println!("underlay cut: n3 withdrawn everywhere in {withdrawn:?}");
    assert!(
        withdrawn <= WITHDRAWAL_BOUND,
        "withdrawal took {withdrawn:?}"
    );
    assert!(t.elapsed() >= withdrawn);
    c.lab.set_switch_port(victim, true);
    let back = wait_until("the healed node routed everywhere", GOSSIP_TIMEOUT, || {
        (0..NODES).all(|o| (0..NODES).filter(|t| *t != o).all(|t| routes_to(&c, o, t)))
    });
    println!("heal: every node routes every other again in {back:?}");
    assert!(
        a.ns.ping(&b.ip.to_string(), 3),
        "pods reach each other after the heal"
    );
}

#[test]
fn forged_probes_change_nothing_and_are_counted() {
    privileged!("forged_probes_change_nothing_and_are_counted");
    let c = Cluster::gossip(NODES);
    c.wait_converged(NODES, GOSSIP_TIMEOUT);
    let counter = |s: &Value, n: &str| s["datapath"]["counters"][n].as_u64().unwrap_or(0);
    let probe = {
        let mut p = b"OVLP\x01\0\0\0".to_vec();
        p.extend_from_slice(&[9; 16]);
        p
    };

    // A host on the underlay that is not a node sends probes to n1.
    let stranger = c
        .lab
        .underlay_host("stranger", "172.31.0.200".parse().unwrap());
    let before = c.status(0);
    rogue::send_datagrams(
        &stranger,
        SocketAddr::new(node_ip(0).into(), DEFAULT_PROBE_PORT),
        &vec![probe.clone(); 5],
    );
    std::thread::sleep(Duration::from_millis(300));
    let after = c.status(0);
    assert_eq!(
        counter(&after, "drop_probe_unknown_peer") - counter(&before, "drop_probe_unknown_peer"),
        5,
        "probes from a non-peer are dropped and counted"
    );

    // Forged answers sent to n1's prober from the stranger (it would need
    // the nonces of probes it never saw) are rejected and counted.
    let prober_port = c.status(0)["probes"]["port"].as_u64().unwrap_or(0);
    assert_eq!(prober_port, u64::from(DEFAULT_PROBE_PORT));
    let rejected_before = c.status(0)["probes"]["rejected"].as_u64().unwrap_or(0);
    // The prober's own port is ephemeral: flood the range it can use.
    let ss = c.lab.nodes[0]
        .ns
        .exec(&["ss", "-Huan", "src", &node_ip(0).to_string()]);
    let ports: Vec<u16> = ss
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()
        })
        .filter(|p| *p != overlay_agent::gossip::DEFAULT_GOSSIP_PORT)
        .collect();
    assert!(!ports.is_empty(), "no prober socket in: {ss}");
    for p in &ports {
        rogue::send_datagrams(
            &stranger,
            SocketAddr::new(node_ip(0).into(), *p),
            &vec![probe.clone(); 3],
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let rejected = c.status(0)["probes"]["rejected"].as_u64().unwrap_or(0) - rejected_before;
    assert!(
        rejected >= 3,
        "forged answers counted as rejected: {rejected}"
    );
    println!(
        "forged: 5 probes dropped by n1's datapath, {rejected} forged answers rejected by its prober"
    );

    // Everything still routed, nothing changed.
    for o in 0..NODES {
        for t in (0..NODES).filter(|t| *t != o) {
            assert!(routes_to(&c, o, t), "node {o} no longer routes to {t}");
        }
    }
}

/// Each node's own settled blocks, by node name.
fn own_blocks(c: &Cluster) -> Vec<(String, Value)> {
    (0..NODES)
        .map(|i| (name(i), c.status(i)["gossip"]["blocks"].clone()))
        .collect()
}

#[test]
fn a_rolling_upgrade_from_chitchat_to_swim_interrupts_no_flow_and_moves_no_block() {
    privileged!("a_rolling_upgrade_from_chitchat_to_swim_interrupts_no_flow_and_moves_no_block");
    // The previous release's agents spoke chitchat (the same code and wire
    // as `--gossip-protocol chitchat`).
    let mut c = Cluster::gossip_unstarted(NODES);
    c.gossip_protocol = "chitchat";
    for i in 0..NODES {
        c.spawn_agent(i);
    }
    for i in 0..NODES {
        c.wait_ready(i, Duration::from_secs(40));
    }
    c.wait_converged(NODES, GOSSIP_TIMEOUT);
    let before = own_blocks(&c);
    for i in 0..NODES {
        assert_eq!(c.status(i)["gossip"]["protocol"], "chitchat");
    }

    // The DaemonSet's rolling update: one agent after the other stops
    // (SIGTERM) and comes back speaking SWIM, while the flow runs.
    flow_survives(&mut c, "rolling upgrade chitchat -> swim", 40, |c| {
        c.gossip_protocol = "swim";
        for i in 0..NODES {
            let t = restart(c, i, true, Duration::from_secs(1));
            println!("upgrade: {} speaks SWIM, serving, after {t:?}", name(i));
            if i == 0 {
                // Alone on its protocol, n1 still knows its peers (it
                // remembered them), routes to their datapaths, and
                // claims nothing: it has no quorum.
                let s = wait_until("n1 routes its old-protocol peers", GOSSIP_TIMEOUT, || {
                    let s = c.status(0);
                    s["gossip"]["quorum"] == false
                        && [1, 2].iter().all(|j| {
                            peer(&s, &name(*j))
                                .is_some_and(|p| p["state"] == "agent_down" && p["routed"] == true)
                        })
                });
                println!("upgrade: n1 alone on SWIM routes n2 and n3 after {s:?}");
            }
            std::thread::sleep(Duration::from_secs(3));
        }
    });

    c.wait_converged(NODES, GOSSIP_TIMEOUT);
    for i in 0..NODES {
        let s = c.status(i);
        assert_eq!(s["gossip"]["protocol"], "swim", "node {i}");
        assert_eq!(
            s["gossip"]["conflicts"].as_array().map(Vec::len),
            Some(0),
            "node {i}: {}",
            s["gossip"]
        );
    }
    assert_eq!(own_blocks(&c), before, "a block moved during the upgrade");
    // The two protocols dropped each other's datagrams and said why.
    let log = c.log(0);
    assert!(
        log.contains("of another protocol"),
        "n1 never logged the previous release's datagrams:\n{log}"
    );
    // Pods still come and go on every node.
    let pods: Vec<CniPod> = (0..NODES).map(|i| c.add_pod(i)).collect();
    for a in &pods {
        for b in &pods {
            assert!(a.ns.ping(&b.ip.to_string(), 2), "{} -> {}", a.ip, b.ip);
        }
    }
}
