//! A hostile pod (with the `CAP_NET_RAW` every container has by default)
//! tries to send as someone else or to inject into the tunnel, on a real
//! three-node gossip cluster: nothing reaches the target pod, and the
//! sending node counts each attempt under its drop reason. Ordinary pod
//! traffic, to pods and to the nodes' other ports, is untouched.

use std::{net::SocketAddr, time::Duration};

use overlay_common::{DEFAULT_PROBE_PORT, DEFAULT_VXLAN_PORT, vtep_mac};
use overlay_tests::{
    cluster::{Cluster, CniPod},
    lab::{Underlay, node_ip},
    privileged, rogue,
    traffic::{ipv4_udp, send_raw_ipv4},
};
use serde_json::Value;

const NODES: usize = 3;
const GOSSIP_TIMEOUT: Duration = Duration::from_secs(30);
/// The port the target pod is sent to.
const TARGET_PORT: u16 = 9999;
/// Datagrams per attack.
const TRIES: u64 = 5;

fn counter(status: &Value, name: &str) -> u64 {
    status["datapath"]["counters"][name].as_u64().unwrap_or(0)
}

/// Packets the target pod's interface has received so far.
fn rx(pod: &CniPod) -> u64 {
    pod.ns.link_stat("eth0", "rx_packets")
}

/// Runs `attack`, then asserts that the target pod received nothing and
/// that node 0 counted exactly `TRIES` more drops of `reason`.
fn assert_blocked(c: &Cluster, target: &CniPod, what: &str, reason: &str, attack: impl Fn()) {
    let before = c.status(0);
    let rx_before = rx(target);
    attack();
    std::thread::sleep(Duration::from_millis(500));
    let after = c.status(0);
    assert_eq!(
        rx(target),
        rx_before,
        "{what}: the target pod received packets"
    );
    assert_eq!(
        counter(&after, reason) - counter(&before, reason),
        TRIES,
        "{what}: {reason} on the sending node"
    );
    println!("{what}: target saw nothing; {reason} +{TRIES}");
}

#[test]
fn a_pod_cannot_send_as_another_pod_nor_inject_into_the_tunnel_on_a_veth_underlay() {
    privileged!("a_pod_cannot_send_as_another_pod_nor_inject_into_the_tunnel_on_a_veth_underlay");
    attacks(Underlay::Veth);
}

#[test]
fn a_pod_cannot_send_as_another_pod_nor_inject_into_the_tunnel_on_a_wire() {
    privileged!("a_pod_cannot_send_as_another_pod_nor_inject_into_the_tunnel_on_a_wire");
    attacks(Underlay::Wire);
}

fn attacks(underlay: Underlay) {
    let mut c = Cluster::gossip_on(NODES, underlay);
    c.wait_converged(NODES, GOSSIP_TIMEOUT);
    let attacker = c.add_pod(0);
    let neighbour = c.add_pod(0);
    let target = c.add_pod(1);
    let elsewhere = c.add_pod(2);
    assert!(
        attacker.ns.ping(&target.ip.to_string(), 2),
        "no baseline path"
    );

    // The same datagram with the attacker's own address arrives: the
    // target's counter can move, so the checks below can fail.
    let own = ipv4_udp(attacker.ip, target.ip, 4000, TARGET_PORT, b"hello");
    let rx0 = rx(&target);
    for _ in 0..TRIES {
        send_raw_ipv4(&attacker.ns, &own);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx(&target) - rx0, TRIES, "own-address datagrams arrive");

    // 1. The neighbour's address (same node); 2. another node's pod address.
    for (what, src) in [
        ("raw UDP from the neighbour pod's address", neighbour.ip),
        ("raw UDP from another node's pod address", elsewhere.ip),
    ] {
        let forged = ipv4_udp(src, target.ip, 4000, TARGET_PORT, b"not me");
        assert_blocked(&c, &target, what, "drop_pod_spoofed_source", || {
            for _ in 0..TRIES {
                send_raw_ipv4(&attacker.ns, &forged);
            }
        });
    }

    // 3. Plain UDP to the target node's VXLAN port, carrying a VXLAN header
    //    and a crafted inner frame from the attacker's own address to the
    //    target (masqueraded, it would come from a valid peer).
    let inner = ipv4_udp(attacker.ip, target.ip, 4000, TARGET_PORT, b"tunnelled");
    let mut vxlan = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    vxlan.extend_from_slice(&vtep_mac(node_ip(1).octets()));
    vxlan.extend_from_slice(&vtep_mac(node_ip(0).octets()));
    vxlan.extend_from_slice(&0x0800u16.to_be_bytes());
    vxlan.extend_from_slice(&inner);
    let to = SocketAddr::new(node_ip(1).into(), DEFAULT_VXLAN_PORT);
    assert_blocked(
        &c,
        &target,
        "UDP with a VXLAN payload to the target node's VXLAN port",
        "drop_pod_to_tunnel",
        || rogue::send_datagrams(&attacker.ns, to, &vec![vxlan.clone(); TRIES as usize]),
    );

    // 4. A forged probe to another node's probe port.
    let probe = {
        let mut p = b"OVLP\x01\0\0\0".to_vec();
        p.extend_from_slice(&[7; 16]);
        p
    };
    let to = SocketAddr::new(node_ip(1).into(), DEFAULT_PROBE_PORT);
    assert_blocked(
        &c,
        &target,
        "a probe from a pod to another node's probe port",
        "drop_pod_to_tunnel",
        || rogue::send_datagrams(&attacker.ns, to, &vec![probe.clone(); TRIES as usize]),
    );

    // Ordinary traffic is untouched: pod to pod (same node and across), and
    // a pod to another node's other UDP port (its gossip port, which counts
    // the stray datagram as unauthenticated).
    assert!(attacker.ns.ping(&neighbour.ip.to_string(), 2));
    assert!(attacker.ns.ping(&target.ip.to_string(), 2));
    assert!(
        attacker.ns.ping(&node_ip(1).to_string(), 2),
        "pod to a node"
    );
    let wire = |s: &Value| {
        let w = &s["gossip"]["wire"];
        w["auth_failed"].as_u64().unwrap_or(0) + w["malformed"].as_u64().unwrap_or(0)
    };
    let before = wire(&c.status(1));
    let gossip = SocketAddr::new(
        node_ip(1).into(),
        overlay_agent::gossip::DEFAULT_GOSSIP_PORT,
    );
    rogue::send_datagrams(&attacker.ns, gossip, &[b"not gossip".to_vec()]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        wire(&c.status(1)) - before,
        1,
        "a pod's datagram to another node's gossip port arrives"
    );
    let s = c.status(0);
    println!(
        "node 1 counters: drop_pod_spoofed_source {}, drop_pod_to_tunnel {}",
        counter(&s, "drop_pod_spoofed_source"),
        counter(&s, "drop_pod_to_tunnel")
    );
}
