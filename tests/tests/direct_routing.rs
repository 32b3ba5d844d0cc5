//! Direct routing between nodes on one link (`--tunnel`), end to end with
//! real agents: node 0 and node 1 share the underlay switch; in the labs
//! that have one, node 2 sits on a subnet of its own behind a router
//! namespace, so the others reach it through a gateway.
//!
//! - `auto`: on-link peers are routed directly (the routes map says so,
//!   the packets cross unencapsulated), the routed one through VXLAN;
//! - `direct`: the routed peer is refused with a message naming it, the
//!   on-link one routed directly, and pods get the whole uplink MTU;
//! - what arrives unencapsulated for a pod is taken only from a live
//!   peer's MAC with a source in that peer's blocks;
//! - 100 MiB each way, content verified, in each mode.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use overlay_common::{ROUTE_F_DIRECT, Stat};
use overlay_tests::{
    Underlay,
    cluster::{Cluster, CniPod},
    lab::{ROUTER_IP, UNDERLAY_MTU, UPLINK, node_block},
    privileged,
    traffic::{ContinuousPing, Payload, ipv4_udp, send_file, send_raw_ipv4},
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
/// Datagrams per spoofing attempt.
const TRIES: u64 = 5;

fn counter(status: &Value, stat: Stat) -> u64 {
    status["datapath"]["counters"][stat.name()]
        .as_u64()
        .unwrap_or(0)
}

/// Waits (bounded) until node `i` reports `want` for `peer` and, for a
/// direct peer, knows its MAC (whose packets it then accepts).
fn wait_carriage(c: &Cluster, i: usize, peer: Ipv4Addr, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = c.status(i);
        let entry = s["datapath"]["carriage"].as_array().and_then(|a| {
            a.iter()
                .find(|p| p["ip"].as_str() == Some(&peer.to_string()))
                .cloned()
        });
        if let Some(e) = &entry
            && e["carriage"].as_str() == Some(want)
            && (want != "direct" || e["mac"].is_string())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {i} does not report {peer} as {want} (with its MAC): {entry:?}\nlog:\n{}",
            c.log(i)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pings `to` from `from` until it answers (bounded): the first packets of
/// a flow may wait for ARP.
fn reaches(from: &CniPod, to: Ipv4Addr) -> bool {
    (0..10).any(|_| from.ns.ping(&to.to_string(), 1))
}

/// The flags of node `i`'s route for node `k`'s block, `None` without one.
fn route_flags(c: &Cluster, i: usize, k: usize) -> Option<u32> {
    c.lab
        .maps(i)
        .route_entries()
        .expect("routes")
        .get(&node_block(k))
        .map(|r| r.flags)
}

fn mtu_in_pod(p: &CniPod) -> u32 {
    p.ns.exec(&["cat", "/sys/class/net/eth0/mtu"])
        .trim()
        .parse()
        .expect("an MTU")
}

#[test]
fn auto_routes_on_link_peers_directly_and_encapsulates_towards_a_routed_one() {
    privileged!("auto_routes_on_link_peers_directly_and_encapsulates_towards_a_routed_one");
    let mut c = Cluster::tunnel(3, Underlay::Wire, Some(2), "auto");
    let (n1, n2) = (c.lab.nodes[1].ip, c.lab.nodes[2].ip);
    let p0 = c.add_pod(0);
    let p1 = c.add_pod(1);
    let p2 = c.add_pod(2);
    wait_carriage(&c, 0, n1, "direct");
    wait_carriage(&c, 1, c.lab.nodes[0].ip, "direct");
    wait_carriage(&c, 0, n2, "vxlan");
    assert_eq!(
        route_flags(&c, 0, 1),
        Some(ROUTE_F_DIRECT),
        "node 1's block"
    );
    assert_eq!(route_flags(&c, 0, 2), Some(0), "node 2's block (routed)");
    assert_eq!(
        route_flags(&c, 2, 0),
        Some(0),
        "node 0's block, from node 2"
    );
    assert_eq!(
        mtu_in_pod(&p0),
        UNDERLAY_MTU - 50,
        "auto keeps uplink - 50 for every pod"
    );

    // On-link: both ways unencapsulated, and no VXLAN at all on node 1.
    let (s0, s1) = (c.status(0), c.status(1));
    assert!(reaches(&p0, p1.ip), "pod on node 0 -> pod on node 1");
    assert!(reaches(&p1, p0.ip), "pod on node 1 -> pod on node 0");
    let (e0, e1) = (c.status(0), c.status(1));
    let d = |a: &Value, b: &Value, s| counter(b, s) - counter(a, s);
    assert!(
        d(&s0, &e0, Stat::FromPodDirect) > 0,
        "node 0 sent nothing direct"
    );
    assert!(
        d(&s1, &e1, Stat::FromUplinkDirect) > 0,
        "node 1 took nothing direct"
    );
    assert!(
        d(&s0, &e0, Stat::FromUplinkDirect) > 0,
        "node 0 took nothing direct"
    );
    assert_eq!(
        d(&s1, &e1, Stat::FromUplinkDecapsulated) + d(&s1, &e1, Stat::FromPodEncapsulated),
        0,
        "VXLAN crossed between the on-link nodes"
    );
    assert_eq!(
        d(&s0, &e0, Stat::FromPodEncapsulated),
        0,
        "node 0 encapsulated towards an on-link peer"
    );

    // Behind the router: VXLAN both ways.
    let (s0, s2) = (c.status(0), c.status(2));
    assert!(
        reaches(&p0, p2.ip),
        "pod on node 0 -> pod behind the router"
    );
    assert!(
        reaches(&p2, p0.ip),
        "pod behind the router -> pod on node 0"
    );
    let (e0, e2) = (c.status(0), c.status(2));
    assert!(
        d(&s0, &e0, Stat::FromPodEncapsulated) > 0,
        "node 0 -> 2 not encapsulated"
    );
    assert!(
        d(&s2, &e2, Stat::FromUplinkDecapsulated) > 0,
        "node 2 decapsulated nothing"
    );
    assert_eq!(
        d(&s2, &e2, Stat::FromUplinkDirect) + d(&s2, &e2, Stat::FromPodDirect),
        0,
        "something crossed the router unencapsulated"
    );
    for i in 0..3 {
        let drops: u64 = Stat::ALL
            .iter()
            .filter(|s| s.is_drop())
            .map(|s| counter(&c.status(i), *s))
            .sum();
        assert_eq!(
            drops,
            0,
            "node {i} dropped packets: {}",
            c.status(i)["datapath"]
        );
    }

    // Kept current: once node 0's route to node 1 goes through the router,
    // node 0 encapsulates towards it (within the agent's refresh), and goes
    // back to direct when the route is gone; traffic flows throughout.
    let router = c.lab.router.as_ref().expect("the router");
    for sysctl in [
        "net.ipv4.conf.all.send_redirects=0",
        "net.ipv4.conf.sw0.send_redirects=0",
    ] {
        router.exec(&["sysctl", "-qw", sysctl]);
    }
    let n0 = &c.lab.nodes[0].ns;
    let via_router = [
        "route",
        "add",
        &format!("{n1}/32"),
        "via",
        &ROUTER_IP.to_string(),
        "dev",
        UPLINK,
    ];
    n0.ip(&via_router);
    wait_carriage(&c, 0, n1, "vxlan");
    assert_eq!(
        route_flags(&c, 0, 1),
        Some(0),
        "node 1's block, via the router"
    );
    let s0 = c.status(0);
    assert!(
        reaches(&p0, p1.ip),
        "pod on node 0 -> node 1 through the router"
    );
    assert!(
        d(&s0, &c.status(0), Stat::FromPodEncapsulated) > 0,
        "node 0 did not encapsulate towards node 1 behind a gateway"
    );
    n0.ip(&["route", "del", &format!("{n1}/32")]);
    wait_carriage(&c, 0, n1, "direct");
    assert_eq!(
        route_flags(&c, 0, 1),
        Some(ROUTE_F_DIRECT),
        "node 1's block, on-link again"
    );
    assert!(reaches(&p0, p1.ip), "pod on node 0 -> node 1, direct again");

    let text = c.status_text(0);
    eprintln!("node 0's status:\n{text}");
    assert!(
        text.contains("tunnel mode auto") && text.contains("direct") && text.contains("vxlan"),
        "{text}"
    );
    let metrics = c.metrics(0);
    assert!(
        metrics.contains(&format!(
            "overlay_peer_carriage{{peer=\"{n1}\",carriage=\"direct\"}} 1"
        )) && metrics.contains(&format!(
            "overlay_peer_carriage{{peer=\"{n2}\",carriage=\"vxlan\"}} 1"
        )),
        "{metrics}"
    );
}

#[test]
fn direct_refuses_a_peer_that_is_not_on_link_and_names_it() {
    privileged!("direct_refuses_a_peer_that_is_not_on_link_and_names_it");
    let mut c = Cluster::tunnel(3, Underlay::Veth, Some(2), "direct");
    let (n1, n2) = (c.lab.nodes[1].ip, c.lab.nodes[2].ip);
    let p0 = c.add_pod(0);
    let p1 = c.add_pod(1);
    let p2 = c.add_pod(2);
    wait_carriage(&c, 0, n1, "direct");
    wait_carriage(&c, 0, n2, "refused");
    let log = c.log(0);
    let want = format!(
        "--tunnel direct: refusing to route peer {n2}, not on-link: its route goes via gateway \
         {ROUTER_IP}"
    );
    assert!(log.contains(&want), "no {want:?} in the log:\n{log}");
    let text = c.status_text(0);
    assert!(
        text.lines()
            .any(|l| l.contains(&n2.to_string()) && l.contains("REFUSED") && l.contains("gateway")),
        "the status does not show {n2} refused:\n{text}"
    );
    assert!(
        c.metrics(0).contains(&format!(
            "overlay_peer_carriage{{peer=\"{n2}\",carriage=\"refused\"}} 1"
        )),
        "metrics"
    );
    // Refused: no route to its block at all; the on-link one direct.
    assert_eq!(route_flags(&c, 0, 2), None, "node 2's block is routed");
    assert_eq!(route_flags(&c, 0, 1), Some(ROUTE_F_DIRECT));
    assert_eq!(
        mtu_in_pod(&p0),
        UNDERLAY_MTU,
        "direct gives pods the uplink MTU"
    );

    assert!(reaches(&p0, p1.ip), "on-link peer's pod");
    assert!(reaches(&p1, p0.ip), "on-link peer's pod, back");
    assert!(
        !p0.ns.ping(&p2.ip.to_string(), 2),
        "the refused peer's pod answered"
    );
    // A full-size (1500-byte) packet crosses whole, without fragments.
    assert!(
        p0.ns.try_exec(&[
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            &(UNDERLAY_MTU - 28).to_string(),
            &p1.ip.to_string()
        ]),
        "a 1500-byte packet did not cross"
    );
}

/// Packets sent on the wire to a pod on node 0: from a host on the switch
/// that is no node (its MAC is no peer's), and from node 1 (a peer's MAC)
/// with a source in another node's block or in node 0's own. None reaches
/// the pod; node 0 counts each under its reason.
#[test]
fn unencapsulated_packets_are_taken_only_from_a_peer_mac_with_that_peers_source() {
    privileged!("unencapsulated_packets_are_taken_only_from_a_peer_mac_with_that_peers_source");
    let mut c = Cluster::tunnel(3, Underlay::Veth, None, "auto");
    let target = c.add_pod(0);
    let friend = c.add_pod(1);
    wait_carriage(&c, 0, c.lab.nodes[1].ip, "direct");
    assert!(
        reaches(&friend, target.ip),
        "a peer's pod reaches the target"
    );
    let node0 = c.lab.nodes[0].ip.to_string();

    let rx = || target.ns.link_stat("eth0", "rx_packets");
    let blocked = |what: &str, stat: Stat, send: &dyn Fn()| {
        let (before, rx0) = (c.status(0), rx());
        for _ in 0..TRIES {
            send();
        }
        std::thread::sleep(Duration::from_millis(500));
        let after = c.status(0);
        assert_eq!(rx(), rx0, "{what}: the pod received packets");
        assert_eq!(
            counter(&after, stat) - counter(&before, stat),
            TRIES,
            "{what}: {} on node 0",
            stat.name()
        );
        eprintln!("{what}: nothing delivered, {} +{TRIES}", stat.name());
    };

    // A stranger on the switch, sending as node 1's pod.
    let evil = c.lab.underlay_host("evil", Ipv4Addr::new(172, 31, 0, 99));
    evil.ip(&["route", "add", "10.32.0.0/12", "via", &node0, "dev", "eth0"]);
    let as_friend = ipv4_udp(friend.ip, target.ip, 4000, 9999, b"not a peer");
    blocked("a stranger's MAC", Stat::DropDirectUnknownPeer, &|| {
        send_raw_ipv4(&evil, &as_friend)
    });

    // Node 1 (a peer's MAC), sending as a pod of node 2 and as one of node 0.
    let n1 = &c.lab.nodes[1].ns;
    n1.ip(&[
        "route",
        "add",
        &format!("{}/32", target.ip),
        "via",
        &node0,
        "dev",
        UPLINK,
    ]);
    for (what, src) in [
        (
            "a peer's MAC, another node's source",
            Ipv4Addr::new(10, 32, 3, 50),
        ),
        (
            "a peer's MAC, the target node's own source",
            Ipv4Addr::new(10, 32, 1, 77),
        ),
    ] {
        let pkt = ipv4_udp(src, target.ip, 4000, 9999, b"not yours");
        blocked(what, Stat::DropDirectSpoofedSource, &|| {
            send_raw_ipv4(n1, &pkt)
        });
    }
    // The peer's own pods still get through.
    assert!(reaches(&friend, target.ip), "after the attempts");
}

fn transfers_each_way(tunnel: &'static str, path: Stat) {
    let mut c = Cluster::tunnel(2, Underlay::Wire, None, tunnel);
    let a = c.add_pod(0);
    let b = c.add_pod(1);
    if tunnel != "vxlan" {
        wait_carriage(&c, 0, c.lab.nodes[1].ip, "direct");
        wait_carriage(&c, 1, c.lab.nodes[0].ip, "direct");
    }
    assert!(reaches(&a, b.ip), "{tunnel}: pods do not reach each other");
    let payload = Payload::random(100 * MIB);
    let before = c.status(0);
    for (from, to) in [(&a, &b), (&b, &a)] {
        let t = send_file(&from.ns, &to.ns, to.ip, &payload, Duration::from_secs(120));
        assert_eq!(
            t.received,
            100 * MIB,
            "{tunnel}: {} -> {}: bytes lost",
            from.ip,
            to.ip
        );
        assert_eq!(
            t.sha256, payload.sha256,
            "{tunnel}: {} -> {}: content changed",
            from.ip, to.ip
        );
        eprintln!(
            "{tunnel}: {} -> {}: 100 MiB in {:?}",
            from.ip, to.ip, t.elapsed
        );
    }
    let after = c.status(0);
    assert!(
        counter(&after, path) - counter(&before, path) > 1000,
        "{tunnel}: the transfer did not take the {} path",
        path.name()
    );
    let drops: u64 = Stat::ALL
        .iter()
        .filter(|s| s.is_drop())
        .map(|s| counter(&after, *s))
        .sum();
    assert_eq!(drops, 0, "{tunnel}: node 0 dropped packets");
}

#[test]
fn a_100_mib_transfer_each_way_arrives_intact_with_tunnel_vxlan() {
    privileged!("a_100_mib_transfer_each_way_arrives_intact_with_tunnel_vxlan");
    transfers_each_way("vxlan", Stat::FromPodEncapsulated);
}

#[test]
fn a_100_mib_transfer_each_way_arrives_intact_with_tunnel_direct() {
    privileged!("a_100_mib_transfer_each_way_arrives_intact_with_tunnel_direct");
    transfers_each_way("direct", Stat::FromPodDirect);
}

#[test]
fn a_100_mib_transfer_each_way_arrives_intact_with_tunnel_auto() {
    privileged!("a_100_mib_transfer_each_way_arrives_intact_with_tunnel_auto");
    transfers_each_way("auto", Stat::FromPodDirect);
}

/// The DaemonSet's setting (gossip, probes, `auto`) on one link: peers are
/// routed directly, and killing and restarting either agent never loses a
/// packet of a running flow (the new agent starts from the pinned routes
/// and peer MACs the old one left).
#[test]
fn gossip_agents_in_auto_route_directly_and_restarts_never_interrupt_a_direct_flow() {
    privileged!("gossip_agents_in_auto_route_directly_and_restarts_never_interrupt_a_direct_flow");
    let mut c = Cluster::gossip_unstarted(2);
    c.tunnel = "auto";
    for i in 0..2 {
        c.spawn_agent(i);
    }
    for i in 0..2 {
        c.wait_ready(i, Duration::from_secs(40));
    }
    let a = c.add_pod(0);
    let b = c.add_pod(1);
    wait_carriage(&c, 0, c.lab.nodes[1].ip, "direct");
    wait_carriage(&c, 1, c.lab.nodes[0].ip, "direct");
    assert!(reaches(&a, b.ip), "pods do not reach each other");
    let before = c.status(1);
    let ping = ContinuousPing::start(&a.ns, b.ip, 20, Duration::from_secs(30));
    for i in [0, 1] {
        c.kill_agent(i);
        std::thread::sleep(Duration::from_millis(500));
        c.spawn_agent(i);
        c.wait_ready(i, Duration::from_secs(40));
        std::thread::sleep(Duration::from_secs(1));
    }
    let (sent, received) = ping.finish();
    assert!(sent > 20, "the flow hardly ran: {sent} echoes");
    assert_eq!(
        received, sent,
        "echoes lost across agent restarts: {received} of {sent}"
    );
    let after = c.status(1);
    assert!(
        counter(&after, Stat::FromUplinkDirect) - counter(&before, Stat::FromUplinkDirect) >= sent,
        "the flow did not stay direct"
    );
    assert_eq!(
        counter(&after, Stat::FromUplinkDecapsulated)
            - counter(&before, Stat::FromUplinkDecapsulated),
        0,
        "the flow was encapsulated"
    );
}
