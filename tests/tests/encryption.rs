//! `--encryption wireguard` end to end with real agents: keys through the
//! gossip, the device the agent starts, `from_pod` handing remote pod
//! traffic to it and `from_wireguard` delivering what it decrypts.
//!
//! - three nodes: every pair of pods talks, a 100 MiB transfer arrives
//!   intact, and the underlay carries none of it in clear (no pod
//!   address, no VXLAN, no stretch of the payload), whatever `--tunnel`
//!   would do; per peer status and metrics;
//! - two nodes on the `veth` underlay (whole GSO packets from the pods):
//!   100 MiB each way, intact;
//! - an agent restart (SIGKILL) keeps encrypted flows going: the device is
//!   a process of its own;
//! - a node that publishes a key without the cluster password (its gossip
//!   is refused) and then tries to open a session from the underlay never
//!   gets one, and no encrypting node lists it;
//! - turned on node by node in a running cluster: the pairs still in
//!   clear keep talking, a pair with one side encrypted gets nothing
//!   (dropped and counted on both sides: fail closed), nothing of a pod
//!   leaves an encrypting node in clear, and once both sides encrypt
//!   they talk again.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use overlay_agent::encryption::{
    keys::{self, KeyPair},
    service,
    userspace::{DeviceConfig, PeerConfig},
};
use overlay_common::Stat;
use overlay_tests::{
    Underlay,
    cluster::{Cluster, CniPod, bin_path},
    lab::UPLINK,
    privileged,
    rogue::{RogueConfig, RogueNode},
    traffic::{ContinuousPing, Payload, send_file},
    wireguard::{Capture, assert_payload_not_in},
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const WG_PORT: u16 = overlay_agent::encryption::DEFAULT_PORT;

fn counter(status: &Value, stat: Stat) -> u64 {
    status["datapath"]["counters"][stat.name()]
        .as_u64()
        .unwrap_or(0)
}

/// Packets dropped, all reasons, between two statuses of one node.
fn drops(before: &Value, after: &Value) -> u64 {
    Stat::ALL
        .iter()
        .filter(|s| s.is_drop())
        .map(|s| counter(after, *s) - counter(before, *s))
        .sum()
}

/// Pings `to` from `from` until it answers (bounded): the first packets
/// wait for the WireGuard handshake.
fn reaches(from: &CniPod, to: Ipv4Addr) -> bool {
    (0..10).any(|_| from.ns.ping(&to.to_string(), 1))
}

/// Waits (bounded) until node `i` has a WireGuard session with each of
/// `peers`.
fn wait_sessions(c: &Cluster, i: usize, peers: &[Ipv4Addr]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = c.status(i);
        let ok = peers.iter().all(|ip| {
            s["encryption"]["peers"].as_array().is_some_and(|a| {
                a.iter().any(|p| {
                    p["node_ip"].as_str() == Some(&ip.to_string())
                        && p["encrypted"].as_bool() == Some(true)
                })
            })
        });
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {i} has no session with every one of {peers:?}: {}\nlog:\n{}",
            s["encryption"],
            c.log(i)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until node `i` lists `n` WireGuard peers (their keys
/// came through gossip).
fn wait_peers(c: &Cluster, i: usize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = c.status(i);
        if s["encryption"]["peers"].as_array().map(Vec::len) == Some(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {i} does not list {n} WireGuard peers: {}",
            s["encryption"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a capture shows that must never cross between encrypting nodes:
/// a pod address (the lab's pods are in 10.32.0.0/12) or VXLAN.
fn clear_pod_traffic(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| {
            let pod = l
                .split([' ', ',', ':'])
                .filter_map(|w| {
                    // "10.32.1.10.5201" or "10.32.1.10"
                    let parts: Vec<&str> = w.split('.').collect();
                    (parts.len() >= 4).then(|| parts[..4].join("."))
                })
                .filter_map(|a| a.parse::<Ipv4Addr>().ok())
                .any(|a| a.octets()[0] == 10 && (32..48).contains(&a.octets()[1]));
            pod || l.contains(".4789:") || l.contains(".4789 >")
        })
        .collect()
}

fn encrypted_cluster(nodes: usize) -> Cluster {
    encrypted_cluster_on(nodes, Underlay::Wire)
}

fn encrypted_cluster_on(nodes: usize, underlay: Underlay) -> Cluster {
    let mut c = Cluster::gossip_unstarted_on(nodes, underlay);
    // `auto` would route the lab's on-link nodes directly: encryption
    // takes precedence over any tunnel mode.
    c.tunnel = "auto";
    c.extra_args = vec!["--encryption".into(), "wireguard".into()];
    for i in 0..nodes {
        c.spawn_agent(i);
    }
    for i in 0..nodes {
        c.wait_ready(i, Duration::from_secs(40));
    }
    c
}

#[test]
fn three_encrypting_nodes_talk_and_the_underlay_carries_nothing_of_a_pod_in_clear() {
    privileged!("three_encrypting_nodes_talk_and_the_underlay_carries_nothing_of_a_pod_in_clear");
    let mut c = encrypted_cluster(3);
    let pods: Vec<CniPod> = (0..3).map(|i| c.add_pod(i)).collect();
    for i in 0..3 {
        wait_peers(&c, i, 2);
    }
    let mtu: u32 = pods[0]
        .ns
        .exec(&["cat", "/sys/class/net/eth0/mtu"])
        .trim()
        .parse()
        .expect("an MTU");
    assert_eq!(mtu, 1440, "pods get the uplink MTU minus WireGuard's 60");

    let cap = Capture::start(&c.lab.nodes[0].ns, UPLINK, 40_000);
    let before: Vec<Value> = (0..3).map(|i| c.status(i)).collect();
    for a in &pods {
        for b in &pods {
            if a.ip != b.ip {
                assert!(reaches(a, b.ip), "{} -> {} did not answer", a.ip, b.ip);
            }
        }
    }
    let payload = Payload::random(100 * MIB);
    let t = send_file(
        &pods[0].ns,
        &pods[1].ns,
        pods[1].ip,
        &payload,
        Duration::from_secs(180),
    );
    let (lines, raw) = cap.finish();
    assert_eq!(t.received, 100 * MIB, "bytes that arrived");
    assert_eq!(t.sha256, payload.sha256, "content that arrived");

    // The underlay: WireGuard, and nothing of a pod in clear.
    let wg = lines
        .iter()
        .filter(|l| l.contains(&format!(".{WG_PORT}:")) || l.contains(&format!(".{WG_PORT} >")))
        .count();
    assert!(
        wg > 1000,
        "only {wg} WireGuard packets among {}",
        lines.len()
    );
    let clear = clear_pod_traffic(&lines);
    assert!(
        clear.is_empty(),
        "pod traffic crossed the underlay in clear: {:?}",
        &clear[..clear.len().min(5)]
    );
    assert_payload_not_in(&raw, &payload, 20 << 20);

    // The datapath counted it as encrypted, never encapsulated or direct.
    let after: Vec<Value> = (0..3).map(|i| c.status(i)).collect();
    for (i, (a, b)) in after.iter().zip(&before).enumerate() {
        let d = |s: Stat| counter(a, s) - counter(b, s);
        assert!(d(Stat::FromPodEncrypted) > 0, "node {i} encrypted nothing");
        assert!(
            d(Stat::FromWireguardDelivered) > 0,
            "node {i} delivered nothing decrypted"
        );
        for s in [
            Stat::FromPodEncapsulated,
            Stat::FromPodDirect,
            Stat::FromUplinkDecapsulated,
            Stat::FromUplinkDirect,
        ] {
            assert_eq!(d(s), 0, "node {i}: {}", s.name());
        }
        assert_eq!(drops(b, a), 0, "node {i} dropped: {}", a["datapath"]);
    }

    // Status and metrics per peer.
    let peers: Vec<Ipv4Addr> = (1..3).map(|i| c.lab.nodes[i].ip).collect();
    wait_sessions(&c, 0, &peers);
    let s = c.status(0);
    let p1 = s["encryption"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_ip"].as_str() == Some(&peers[0].to_string()))
        .cloned()
        .unwrap();
    assert!(p1["tx_bytes"].as_u64().unwrap() >= 100 * MIB, "{p1}");
    assert!(p1["last_handshake_s"].as_f64().is_some(), "{p1}");
    let text = c.status_text(0);
    assert!(text.contains("Encryption: WireGuard"), "{text}");
    let metrics = c.metrics(0);
    for want in [
        format!(
            "overlay_wireguard_peer_encrypted{{peer=\"{}\"}} 1",
            peers[0]
        ),
        "overlay_wireguard_device_up 1".to_owned(),
        format!(
            "overlay_wireguard_peer_bytes_total{{peer=\"{}\",direction=\"tx\"}}",
            peers[0]
        ),
    ] {
        assert!(
            metrics.contains(&want),
            "no {want} in the metrics:\n{metrics}"
        );
    }

    // An agent restart: the device is a process of its own and keeps the
    // flows going.
    let device = c.wireguard_device_pid(0).expect("a device process");
    let ping = ContinuousPing::start(&pods[0].ns, pods[1].ip, 20, Duration::from_secs(12));
    std::thread::sleep(Duration::from_secs(2));
    c.kill_agent(0);
    std::thread::sleep(Duration::from_secs(2));
    c.start_agent(0);
    std::thread::sleep(Duration::from_secs(2));
    let (sent, received) = ping.finish();
    let lost = sent - received;
    assert_eq!(
        c.wireguard_device_pid(0),
        Some(device),
        "the restarted agent replaced the device"
    );
    eprintln!("agent restart under encryption: {lost} of {sent} echoes lost");
    assert!(sent > 40, "only {sent} echoes sent");
    // Measured 0 in most runs; one run of six lost some (cause not found,
    // see the notes): at most 100 ms of echoes.
    assert!(lost <= 2, "{lost} echoes lost across the agent restart");

    // Key rotation in the middle of a transfer: node 0 takes a new key,
    // gossip carries it, its peers follow; the transfer arrives intact.
    let old_key = c.status(0)["encryption"]["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let payload = Payload::random(200 * MIB);
    let state_dir = c.agents[0].state_dir.display().to_string();
    let (t, rotated_at, lost) = std::thread::scope(|s| {
        let start = Instant::now();
        let transfer = s.spawn(|| {
            send_file(
                &pods[1].ns,
                &pods[0].ns,
                pods[0].ip,
                &payload,
                Duration::from_secs(180),
            )
        });
        let ping = ContinuousPing::start(&pods[2].ns, pods[0].ip, 50, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(500));
        let out = c.agent_cli(0, &["rotate-key", "--state-dir", &state_dir]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Every peer lists the new key, with a session.
        let deadline = Instant::now() + Duration::from_secs(20);
        let new_key = loop {
            let k = c.status(0)["encryption"]["public_key"]
                .as_str()
                .unwrap()
                .to_owned();
            let followed = (1..3).all(|i| {
                c.status(i)["encryption"]["peers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["public_key"] == k.as_str() && p["encrypted"] == true)
            });
            if k != old_key && followed {
                break k;
            }
            assert!(
                Instant::now() < deadline,
                "the peers did not follow the new key"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let rotated_at = start.elapsed();
        assert_ne!(new_key, old_key);
        std::thread::sleep(Duration::from_secs(1));
        let (sent, received) = ping.finish();
        (
            transfer.join().expect("transfer"),
            rotated_at,
            sent - received,
        )
    });
    eprintln!(
        "key rotation: peers followed {rotated_at:?} into a {:?} transfer; {lost} echoes (of 50/s) lost",
        t.elapsed
    );
    // A flow may stall for at most one handshake (WireGuard retries one
    // every 5 s): 250 echoes at 50/s.
    assert!(lost < 250, "{lost} echoes lost across the key rotation");
    assert_eq!(t.received, 200 * MIB, "bytes that arrived");
    assert_eq!(t.sha256, payload.sha256, "content that arrived");

    // The device dies under the agent: the agent starts it again (it
    // looks every 2 s), and the pods talk again.
    let old = c.wireguard_device_pid(0).expect("a device process");
    let ping = ContinuousPing::start(&pods[1].ns, pods[0].ip, 20, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let killed = Instant::now();
    c.kill_wireguard_device(0);
    let deadline = killed + Duration::from_secs(15);
    while c.wireguard_device_pid(0).is_none_or(|p| p == old) {
        assert!(
            Instant::now() < deadline,
            "the agent did not start the device again:\n{}",
            c.log(0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let revived = killed.elapsed();
    wait_sessions(&c, 0, &[c.lab.nodes[1].ip]);
    assert!(
        reaches(&pods[1], pods[0].ip),
        "no traffic after the device came back"
    );
    let (sent, received) = ping.finish();
    eprintln!(
        "device killed: started again after {revived:?}; {} of {sent} echoes (20/s) lost",
        sent - received
    );
}

/// Restarts node `i`'s agent (SIGTERM, then started again) with
/// `--encryption wireguard`.
fn turn_on(c: &mut Cluster, i: usize) {
    assert!(c.stop_agent(i), "agent {i} did not stop cleanly");
    c.extra_args = vec!["--encryption".into(), "wireguard".into()];
    c.spawn_agent(i);
    c.extra_args.clear();
    c.wait_ready(i, Duration::from_secs(40));
}

/// Every pair of `pods` reaches each other, both ways.
fn all_pairs_talk(pods: &[&CniPod]) {
    for (i, a) in pods.iter().enumerate() {
        for b in &pods[i + 1..] {
            assert!(
                reaches(a, b.ip) && reaches(b, a.ip),
                "{} <-> {}",
                a.ip,
                b.ip
            );
        }
    }
}

/// Whether one of three pings from `from` to `to` answers.
fn answers(from: &CniPod, to: Ipv4Addr) -> bool {
    from.ns.ping(&to.to_string(), 3)
}

#[test]
fn turned_on_node_by_node_the_clear_pairs_keep_talking_and_an_encrypting_node_leaks_nothing() {
    privileged!(
        "turned_on_node_by_node_the_clear_pairs_keep_talking_and_an_encrypting_node_leaks_nothing"
    );
    let mut c = Cluster::gossip_unstarted_on(3, Underlay::Wire);
    c.tunnel = "auto";
    for i in 0..3 {
        c.spawn_agent(i);
    }
    for i in 0..3 {
        c.wait_ready(i, Duration::from_secs(40));
    }
    let pods: Vec<CniPod> = (0..3).map(|i| c.add_pod(i)).collect();
    let (p0, p1, p2) = (&pods[0], &pods[1], &pods[2]);
    let ips: Vec<Ipv4Addr> = c.lab.nodes.iter().map(|n| n.ip).collect();
    all_pairs_talk(&[p0, p1, p2]);

    // Node 0 first: the pair in clear (1, 2) does not notice.
    let clear_pair = ContinuousPing::start(&p1.ns, p2.ip, 20, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    turn_on(&mut c, 0);
    // Everything node 0 sends from here on is captured on its link.
    let cap = Capture::start(&c.lab.nodes[0].ns, UPLINK, 20_000);
    wait_peers(&c, 0, 0);
    let s0 = c.status(0);
    assert!(!answers(p0, p1.ip), "node 0 sent to a node without a key");
    assert!(!answers(p2, p0.ip), "node 0 took pod traffic in clear");
    let e0 = c.status(0);
    assert!(
        counter(&e0, Stat::DropNotEncrypted) > counter(&s0, Stat::DropNotEncrypted),
        "node 0 did not count what it refused to send: {}",
        e0["datapath"]
    );
    assert!(
        counter(&e0, Stat::DropUnencrypted) > counter(&s0, Stat::DropUnencrypted),
        "node 0 did not count what it refused to take: {}",
        e0["datapath"]
    );
    let (sent, received) = clear_pair.finish();
    assert!(sent > 40, "only {sent} echoes");
    assert_eq!(
        sent - received,
        0,
        "the pair in clear lost echoes while node 0 turned encryption on"
    );

    // Node 1: nodes 0 and 1 talk again, encrypted; node 2 (in clear) is
    // cut off from both.
    turn_on(&mut c, 1);
    wait_sessions(&c, 0, &[ips[1]]);
    assert!(
        reaches(p0, p1.ip) && reaches(p1, p0.ip),
        "nodes 0 and 1 both encrypt, yet their pods do not talk"
    );
    assert!(!answers(p1, p2.ip), "node 1 sent to node 2 in clear");

    // Node 2: all three encrypt; the encrypted pair (0, 1) does not notice.
    let encrypted_pair = ContinuousPing::start(&p0.ns, p1.ip, 20, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    turn_on(&mut c, 2);
    for i in 0..3 {
        let others: Vec<Ipv4Addr> = ips.iter().copied().filter(|ip| *ip != ips[i]).collect();
        wait_sessions(&c, i, &others);
    }
    all_pairs_talk(&[p0, p1, p2]);
    let (sent, received) = encrypted_pair.finish();
    assert!(sent > 40, "only {sent} echoes");
    assert_eq!(
        sent - received,
        0,
        "the encrypted pair lost echoes while node 2 turned encryption on"
    );
    // These pods were wired before encryption, with the VXLAN MTU (1450):
    // their full-size packets no longer fit one WireGuard datagram on the
    // underlay, and still arrive (the device's datagrams are fragmented).
    let mtu: u32 = p0
        .ns
        .exec(&["cat", "/sys/class/net/eth0/mtu"])
        .trim()
        .parse()
        .expect("an MTU");
    assert_eq!(mtu, 1450);
    let payload = Payload::random(20 * MIB);
    let t = send_file(&p0.ns, &p2.ns, p2.ip, &payload, Duration::from_secs(120));
    assert_eq!(t.received, 20 * MIB, "bytes that arrived at MTU 1450");
    assert_eq!(t.sha256, payload.sha256, "content that arrived at MTU 1450");

    // Nothing of node 0's pod left node 0 in clear at any point.
    let (lines, _) = cap.finish();
    let from_p0 = |l: &&String| {
        l.contains(&format!("IP {} >", p0.ip))
            || l.contains(&format!("IP {}.", p0.ip))
            || (l.contains(&format!("IP {}.", ips[0])) && l.contains(".4789:"))
    };
    let leaked: Vec<&String> = lines.iter().filter(from_p0).collect();
    assert!(
        leaked.is_empty(),
        "node 0's pod traffic left in clear: {:?}",
        &leaked[..leaked.len().min(5)]
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("IP {}.{WG_PORT} >", ips[0]))),
        "node 0 sent no WireGuard at all"
    );
}

#[test]
fn a_key_published_without_the_password_never_gets_a_session() {
    privileged!("a_key_published_without_the_password_never_gets_a_session");
    // Three nodes: the lab's underlay switch, where the attacker plugs in,
    // comes with three.
    let mut c = encrypted_cluster(3);
    let pods: Vec<CniPod> = (0..2).map(|i| c.add_pod(i)).collect();
    wait_peers(&c, 0, 2);
    assert!(reaches(&pods[1], pods[0].ip), "the two nodes do not talk");
    let n0 = c.status(0);
    let n0_key = n0["encryption"]["public_key"].as_str().unwrap().to_owned();
    let n0_block = n0["gossip"]["blocks"][0]["block"]
        .as_str()
        .unwrap()
        .to_owned();
    let n1_block = c.status(1)["gossip"]["blocks"][0]["block"]
        .as_str()
        .unwrap()
        .to_owned();

    // An attacker on the underlay with a key of its own: it gossips (with
    // the wrong password) a record that announces its key and claims
    // node 1's block, ...
    let rogue_ip = Ipv4Addr::new(172, 31, 0, 200);
    let rogue_ns = c.lab.underlay_host("rogue", rogue_ip);
    let rogue_dir = c.dir.join("rogue");
    std::fs::create_dir_all(&rogue_dir).unwrap();
    let rogue_key = KeyPair::generate();
    keys::store(&rogue_dir.join("key"), &rogue_key).unwrap();
    let base = c.status(0);
    let gossip = RogueNode::start(
        &rogue_ns,
        RogueConfig {
            name: "rogue".into(),
            ip: rogue_ip,
            seeds: vec![format!("{}:{}", c.lab.nodes[0].ip, 6783)],
            password: Some("not-the-cluster-password".into()),
            forged: vec![
                (
                    "version".into(),
                    format!("0.1.0 wireguard={}:{WG_PORT}", rogue_key.public_base64()),
                ),
                (format!("block:{n1_block}"), "settled 1".into()),
            ],
        },
    );
    // ... and runs a WireGuard device that knows node 0's public key and
    // endpoint (anyone can read them off the wire), sending from an
    // address of node 1's block.
    let config = DeviceConfig {
        device: "ovl-wg".into(),
        listen_port: WG_PORT,
        mtu: 1420,
        key_file: rogue_dir.join("key"),
        peers: vec![PeerConfig {
            public_key: n0_key,
            endpoint: format!("{}:{WG_PORT}", c.lab.nodes[0].ip).parse().unwrap(),
            allowed_ips: vec![n0_block.parse().unwrap()],
        }],
    };
    service::write_json(&rogue_dir.join("config.json"), &config).unwrap();
    let status_path = rogue_dir.join("status.json");
    let mut device = rogue_ns.spawn(&[
        &bin_path("overlay-agent").display().to_string(),
        "wireguard",
        "--config",
        &rogue_dir.join("config.json").display().to_string(),
        "--status",
        &status_path.display().to_string(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while service::read_status(&status_path).is_err() {
        assert!(Instant::now() < deadline, "the rogue device did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let spoofed = pods[1].ip.to_string();
    rogue_ns.ip(&["addr", "add", &format!("{spoofed}/32"), "dev", "lo"]);
    rogue_ns.ip(&["route", "add", &n0_block, "dev", "ovl-wg", "src", &spoofed]);
    assert!(
        !rogue_ns.try_exec(&[
            "ping",
            "-c",
            "3",
            "-i",
            "0.5",
            "-W",
            "1",
            &pods[0].ip.to_string()
        ]),
        "the rogue reached a pod"
    );
    std::thread::sleep(Duration::from_secs(2));
    let rogue = service::read_status(&status_path).unwrap();
    let sent = gossip.stop();
    device.signal(libc::SIGTERM);
    let _ = device.wait_timeout(Duration::from_secs(5));

    assert!(
        rogue.peers.iter().all(|p| p.last_handshake_s.is_none()),
        "the rogue got a session: {rogue:?}"
    );
    let after = c.status(0);
    let wire = |s: &Value| s["gossip"]["wire"]["auth_failed"].as_u64().unwrap_or(0);
    assert!(
        sent.datagrams_out >= 5,
        "the rogue hardly gossiped: {sent:?}"
    );
    assert!(
        wire(&after) >= wire(&base) + sent.datagrams_out,
        "the rogue's gossip was not all refused: {sent:?}, {}",
        after["gossip"]["wire"]
    );
    let rejected = |s: &Value| s["encryption"]["stats"]["rejected"].as_u64().unwrap_or(0);
    assert!(
        rejected(&after) > rejected(&base),
        "node 0's device did not count the rogue's handshakes: {}",
        after["encryption"]
    );
    for i in 0..3 {
        let e = &c.status(i)["encryption"];
        assert!(
            !e.to_string().contains(&rogue_key.public_base64()),
            "node {i} lists the rogue's key: {e}"
        );
    }
    // The two real nodes still talk.
    assert!(
        reaches(&pods[0], pods[1].ip),
        "the attack cut the nodes off"
    );
}

#[test]
fn two_encrypting_nodes_on_a_veth_underlay_carry_100_mib_each_way() {
    privileged!("two_encrypting_nodes_on_a_veth_underlay_carry_100_mib_each_way");
    let mut c = encrypted_cluster_on(2, Underlay::Veth);
    let pods: Vec<CniPod> = (0..2).map(|i| c.add_pod(i)).collect();
    for i in 0..2 {
        wait_peers(&c, i, 1);
    }
    let before: Vec<Value> = (0..2).map(|i| c.status(i)).collect();
    let payload = Payload::random(100 * MIB);
    for (from, to) in [(0, 1), (1, 0)] {
        assert!(reaches(&pods[from], pods[to].ip), "{from} -> {to}");
        let t = send_file(
            &pods[from].ns,
            &pods[to].ns,
            pods[to].ip,
            &payload,
            Duration::from_secs(180),
        );
        assert_eq!(t.received, 100 * MIB, "bytes that arrived, {from} -> {to}");
        assert_eq!(
            t.sha256, payload.sha256,
            "content that arrived, {from} -> {to}"
        );
        eprintln!(
            "encrypted, veth underlay, {from} -> {to}: 100 MiB in {:?}",
            t.elapsed
        );
    }
    for (i, b) in before.iter().enumerate() {
        let a = c.status(i);
        let d = |s: Stat| counter(&a, s) - counter(b, s);
        assert!(d(Stat::FromPodEncrypted) > 0, "node {i} encrypted nothing");
        assert_eq!(
            d(Stat::FromPodEncapsulated) + d(Stat::FromPodDirect),
            0,
            "node {i}"
        );
        assert_eq!(drops(b, &a), 0, "node {i} dropped: {}", a["datapath"]);
    }
}
