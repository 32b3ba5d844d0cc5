//! Agents that find each other by gossip alone, end to end in namespaces:
//! forming the cluster, losing a node (crash, underlay cut) and getting it
//! back, shrugging off forged and replayed datagrams, and forgetting a node
//! gone for good.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use overlay_agent::gossip::{DEFAULT_GOSSIP_PORT, auth::KEYED_OVERHEAD};
use overlay_tests::{
    cluster::{Cluster, CniPod, LAB_CLAIM_SETTLE},
    lab::{UPLINK, node_ip},
    privileged,
    rogue::{self, RogueConfig, RogueNode},
    traffic::ContinuousPing,
};
use serde_json::Value;

const NODES: usize = 4;
/// Every wait on gossip (failure detection, joins) ends by then.
const GOSSIP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the maps are read while timing a withdrawal or a re-add.
const MAP_POLL: Duration = Duration::from_millis(50);

fn name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// Blocks of a `[{block, state}]` list in state `settled`.
fn settled(blocks: &Value) -> BTreeSet<String> {
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["state"] == "settled")
        .filter_map(|b| b["block"].as_str().map(str::to_owned))
        .collect()
}

/// Every block of a `[{block, state}]` list, whatever its state.
fn all_blocks(blocks: &Value) -> BTreeSet<String> {
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["block"].as_str().map(str::to_owned))
        .collect()
}

/// The node's own settled blocks.
fn own_settled(status: &Value) -> BTreeSet<String> {
    settled(&status["gossip"]["blocks"])
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

/// Asserts that every settled block has exactly one owner in the nodes'
/// own statuses, and that every node sees every other one's settled
/// blocks as that node does and no conflict.
fn assert_one_owner_per_block_and_agreement(statuses: &[(usize, Value)]) {
    let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, s) in statuses {
        let mine = own_settled(s);
        assert!(!mine.is_empty(), "node {i} owns no settled block: {s}");
        for b in mine {
            owners.entry(b).or_default().push(name(*i));
        }
        assert_eq!(
            s["gossip"]["conflicts"].as_array().map(Vec::len),
            Some(0),
            "node {i} reports conflicts: {}",
            s["gossip"]["conflicts"]
        );
    }
    for (block, who) in &owners {
        assert_eq!(who.len(), 1, "block {block} is settled on {who:?}");
    }
    for (i, s) in statuses {
        for (j, other) in statuses {
            if i == j {
                continue;
            }
            let seen = peer(s, &name(*j))
                .unwrap_or_else(|| panic!("node {i} does not list {}: {s}", name(*j)));
            assert_eq!(
                settled(&seen["blocks"]),
                own_settled(other),
                "node {i}'s view of {}'s blocks differs from {}'s own",
                name(*j),
                name(*j)
            );
        }
    }
}

/// Whether node `observer`'s maps steer anything to `ip` (as a VXLAN peer
/// or as the next hop of a route).
fn maps_have(c: &Cluster, observer: usize, ip: Ipv4Addr) -> bool {
    let maps = c.lab.maps(observer);
    let peers = maps.peers().expect("read peers map");
    let routes = maps.routes().expect("read routes map");
    peers.contains(&ip) || routes.values().any(|hop| *hop == ip)
}

/// Whether node `observer`'s maps route `block` to `ip` and accept VXLAN
/// from `ip`.
fn maps_route(c: &Cluster, observer: usize, block: &str, ip: Ipv4Addr) -> bool {
    let maps = c.lab.maps(observer);
    let block = block.parse().expect("block");
    maps.peers().expect("read peers map").contains(&ip)
        && maps.routes().expect("read routes map").get(&block) == Some(&ip)
}

/// Reads the maps every [`MAP_POLL`] until `pred` holds on every one of
/// `observers`; returns how long it took or panics after `timeout`.
fn wait_maps(
    c: &Cluster,
    observers: &[usize],
    what: &str,
    timeout: Duration,
    pred: impl Fn(usize) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let pending: Vec<usize> = observers.iter().copied().filter(|i| !pred(*i)).collect();
        if pending.is_empty() {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            let maps: Vec<String> = pending
                .iter()
                .map(|i| {
                    let m = c.lab.maps(*i);
                    format!(
                        "node {i}: peers {:?} routes {:?}",
                        m.peers().unwrap_or_default(),
                        m.routes().unwrap_or_default()
                    )
                })
                .collect();
            panic!(
                "{what}: not within {timeout:?} on nodes {pending:?}:\n{}",
                maps.join("\n")
            );
        }
        std::thread::sleep(MAP_POLL);
    }
}

/// Pings every other pod from every pod (one echo each).
fn assert_all_pairs_reach(pods: &[&CniPod]) {
    for p in pods {
        for q in pods {
            if p.ip != q.ip {
                assert!(
                    p.ns.ping(&q.ip.to_string(), 1),
                    "pod {} (node {}) cannot reach pod {} (node {})",
                    p.ip,
                    p.node,
                    q.ip,
                    q.node
                );
            }
        }
    }
}

#[test]
fn four_agents_form_a_cluster_from_seeds_and_pods_reach_each_other() {
    privileged!("four_agents_form_a_cluster_from_seeds_and_pods_reach_each_other");
    let mut c = Cluster::gossip(NODES);
    let t = c.wait_converged(NODES, GOSSIP_TIMEOUT);
    println!("converged {t:?} after every node was ready");
    let pods: Vec<_> = (0..NODES).map(|i| c.add_pod(i)).collect();
    assert_all_pairs_reach(&pods.iter().collect::<Vec<_>>());

    let statuses: Vec<(usize, Value)> = (0..NODES).map(|i| (i, c.status(i))).collect();
    assert_one_owner_per_block_and_agreement(&statuses);
    for (i, s) in &statuses {
        // The agents speak SWIM unless told otherwise.
        assert_eq!(s["gossip"]["protocol"], "swim", "node {i}");
        // One pod uses one address of 254: no node needs a second block.
        let blocks = &s["gossip"]["blocks"];
        assert_eq!(
            blocks.as_array().map(Vec::len),
            Some(1),
            "node {i} claims more than the one block it needs: {blocks}"
        );
    }

    let text = c.status_text(0);
    println!("{text}");
    assert!(text.contains("(swim, authenticated)"), "{text}");
    let peer_lines: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "Peers:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(peer_lines.len(), NODES - 1, "peer lines in:\n{text}");
    for (j, s) in statuses.iter().skip(1) {
        let line = peer_lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name(*j).as_str()))
            .unwrap_or_else(|| panic!("{} not listed in:\n{text}", name(*j)));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[1], node_ip(*j).to_string(), "address in {line:?}");
        assert_eq!(words[2], "alive", "state in {line:?}");
        for block in own_settled(s) {
            assert!(words.contains(&block.as_str()), "{block} not in {line:?}");
        }
    }
}

#[test]
fn killed_agent_keeps_its_nodes_routes_and_comes_back_with_its_block_and_pod() {
    privileged!("killed_agent_keeps_its_nodes_routes_and_comes_back_with_its_block_and_pod");
    let mut c = Cluster::gossip(NODES);
    c.wait_converged(NODES, GOSSIP_TIMEOUT);
    let pods: Vec<_> = (0..NODES).map(|i| c.add_pod(i)).collect();
    let victim = 3;
    let others = [0, 1, 2];
    let victim_ip = node_ip(victim);
    let blocks = own_settled(&c.status(victim));
    assert!(!blocks.is_empty(), "{} has no settled block", name(victim));

    // One ping between two nodes that stay up, one to the victim's pod.
    let ping = ContinuousPing::start(&pods[0].ns, pods[1].ip, 20, Duration::from_secs(90));
    let to_victim =
        ContinuousPing::start(&pods[0].ns, pods[victim].ip, 20, Duration::from_secs(90));
    // Some echoes before anything happens.
    std::thread::sleep(Duration::from_millis(500));

    let killed = Instant::now();
    c.kill_agent(victim);
    let seen = c.wait_statuses("the killed agent seen down", GOSSIP_TIMEOUT, |_, s| {
        peer(s, &name(victim)).is_some_and(|p| p["state"] == "agent_down")
    });
    println!(
        "SIGKILL: {}'s agent seen down everywhere after {seen:?}",
        name(victim)
    );
    // Its datapath still forwards, so nobody withdrew it.
    for i in others {
        assert!(
            blocks.iter().all(|b| maps_route(&c, i, b, victim_ip)),
            "node {i} withdrew {} whose datapath answers, {:?} after its agent died",
            name(victim),
            killed.elapsed()
        );
    }

    let restarted = Instant::now();
    c.spawn_agent(victim);
    c.wait_ready(victim, Duration::from_secs(20));
    println!("restart: agent ready after {:?}", restarted.elapsed());
    c.wait_converged(NODES, GOSSIP_TIMEOUT);
    for i in others {
        assert!(blocks.iter().all(|b| maps_route(&c, i, b, victim_ip)));
    }

    let s = c.status(victim);
    assert_eq!(
        own_settled(&s),
        blocks,
        "the restarted node must keep exactly its blocks: {}",
        s["gossip"]
    );
    assert!(
        c.allocated(victim).contains(&pods[victim].ip),
        "the restarted node lost its pod's allocation {}: {:?}",
        pods[victim].ip,
        c.allocated(victim)
    );
    assert!(
        c.endpoints(victim).contains(&pods[victim].ip),
        "the restarted node lost its pod's endpoint {}",
        pods[victim].ip
    );
    assert_all_pairs_reach(&pods.iter().collect::<Vec<_>>());

    for (what, p) in [("n1 -> n2", ping), ("n1 -> the victim n4", to_victim)] {
        let (sent, received) = p.finish();
        println!("continuous ping {what} through kill and restart: {received}/{sent}");
        assert!(sent >= 20, "the ping ran too briefly: {sent} echoes");
        assert_eq!(
            received, sent,
            "{what}: echoes lost while an agent was killed and restarted"
        );
    }
}

#[test]
fn node_cut_off_the_underlay_is_withdrawn_loses_quorum_and_rejoins_without_conflict() {
    privileged!("node_cut_off_the_underlay_is_withdrawn_loses_quorum_and_rejoins_without_conflict");
    let mut c = Cluster::gossip(NODES);
    c.wait_converged(NODES, GOSSIP_TIMEOUT);
    let cut = 3;
    let others = [0, 1, 2];
    let pods = [c.add_pod(0), c.add_pod(cut)];
    let before = c.status(cut)["gossip"]["blocks"].clone();

    let t = Instant::now();
    c.lab.set_switch_port(cut, false);
    wait_maps(&c, &others, "the cut node withdrawn", GOSSIP_TIMEOUT, |i| {
        !maps_have(&c, i, node_ip(cut))
    });
    let withdrawn = t.elapsed();
    println!(
        "cut: {} withdrawn from every other node's maps in {withdrawn:?}",
        name(cut)
    );
    wait_maps(
        &c,
        &[cut],
        "the cut node withdrawing the others",
        GOSSIP_TIMEOUT,
        |i| others.iter().all(|o| !maps_have(&c, i, node_ip(*o))),
    );
    println!(
        "cut: {} withdrew the others {:?} after the cut",
        name(cut),
        t.elapsed()
    );
    let deadline = Instant::now() + GOSSIP_TIMEOUT;
    while c.status(cut)["gossip"]["quorum"] != false {
        assert!(
            Instant::now() < deadline,
            "the cut node kept its quorum: {}",
            c.status(cut)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "cut: {} reports no quorum {:?} after the cut",
        name(cut),
        t.elapsed()
    );

    // Stay cut for longer than the claim settle period: any claim made now
    // would have settled by the end.
    let settle = overlay_agent::config::parse_duration(LAB_CLAIM_SETTLE).unwrap();
    let hold = Instant::now();
    while hold.elapsed() < settle + Duration::from_secs(1) {
        let s = c.status(cut);
        assert_eq!(
            s["gossip"]["quorum"], false,
            "quorum while cut: {}",
            s["gossip"]
        );
        assert_eq!(
            s["gossip"]["blocks"], before,
            "the cut node's blocks changed while it had no quorum"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let healed = Instant::now();
    c.lab.set_switch_port(cut, true);
    let back = wait_maps(
        &c,
        &[0, 1, 2, 3],
        "every node re-added everywhere",
        GOSSIP_TIMEOUT,
        |i| {
            (0..NODES)
                .filter(|j| *j != i)
                .all(|j| maps_have(&c, i, node_ip(j)))
        },
    );
    println!("heal: every node back in every other node's maps in {back:?}");
    c.wait_converged(NODES, GOSSIP_TIMEOUT);
    println!(
        "heal: statuses converged {:?} after the port came up",
        healed.elapsed()
    );
    let statuses: Vec<(usize, Value)> = (0..NODES).map(|i| (i, c.status(i))).collect();
    assert_one_owner_per_block_and_agreement(&statuses);
    assert_eq!(
        all_blocks(&statuses[cut].1["gossip"]["blocks"]),
        all_blocks(&before),
        "the cut node's blocks after the heal"
    );
    assert_all_pairs_reach(&[&pods[0], &pods[1]]);
}

/// A small deterministic generator for garbage (xorshift64*).
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Wire counters in a status.
fn wire(status: &Value, counter: &str) -> u64 {
    status["gossip"]["wire"][counter]
        .as_u64()
        .unwrap_or_else(|| panic!("no wire counter {counter}: {}", status["gossip"]["wire"]))
}

/// Waits until node `i`'s `counter` has grown by `expected` since
/// `baseline`, then a little longer; asserts it grew by exactly that.
fn assert_counter_grows_by(c: &Cluster, i: usize, baseline: &Value, counter: &str, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let delta = || wire(&c.status(i), counter) - wire(baseline, counter);
    while delta() < expected {
        assert!(
            Instant::now() < deadline,
            "node {i}: {counter} grew by {} of the {expected} expected",
            delta()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        delta(),
        expected,
        "node {i}: {counter} grew by more than what was sent"
    );
}

#[test]
fn forged_garbage_and_replayed_datagrams_are_dropped_counted_and_change_nothing() {
    privileged!("forged_garbage_and_replayed_datagrams_are_dropped_counted_and_change_nothing");
    let mut c = Cluster::gossip(NODES);
    c.wait_converged(NODES, GOSSIP_TIMEOUT);
    let target = 0;
    let pod_n2 = c.add_pod(1);
    let rogue_ip = Ipv4Addr::new(172, 31, 0, 200);
    let rogue_ns = c.lab.underlay_host("rogue", rogue_ip);
    let gossip_port = SocketAddr::new(node_ip(target).into(), DEFAULT_GOSSIP_PORT);
    for i in 0..NODES {
        let blocks = c.status(i)["gossip"]["blocks"].clone();
        assert!(
            blocks
                .as_array()
                .into_iter()
                .flatten()
                .all(|b| b["state"] == "settled"),
            "node {i} has a claim in flight before the attack (its maps would change anyway): \
             {blocks}"
        );
    }
    let routes = c.lab.maps(target).routes().expect("routes");
    let map_peers = c.lab.maps(target).peers().expect("peers");
    let n2_block = own_settled(&c.status(1))
        .into_iter()
        .next()
        .expect("n2 block");
    // A genuine datagram from n2 to n1, for truncations and replays.
    let genuine = rogue::capture_gossip_datagram(
        &c.lab.nodes[1].ns,
        UPLINK,
        node_ip(1),
        node_ip(target),
        Duration::from_secs(10),
    );
    assert!(
        genuine.len() > KEYED_OVERHEAD,
        "captured {} bytes: not a sealed datagram",
        genuine.len()
    );

    // (a) Garbage, and genuine datagrams truncated or altered.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    println!("garbage seed {seed:#x}");
    let mut g = Garbage(seed);
    let mut malformed = Vec::new();
    for _ in 0..20 {
        let len = 1 + (g.next() % 1400) as usize;
        let mut d = g.bytes(len);
        d[0] = b'X'; // never a magic ("OVL0"/"OVL1")
        malformed.push(d);
    }
    malformed.push(Vec::new());
    malformed.push(b"OVL".to_vec());
    // Shorter than a sealed datagram's header and tag.
    malformed.push([&b"OVL1"[..], &g.bytes(KEYED_OVERHEAD - 5)].concat());
    malformed.push(genuine[..10].to_vec());
    malformed.push(genuine[..KEYED_OVERHEAD - 1].to_vec());
    let mut flipped = genuine.clone();
    let bit = (g.next() % (8 * genuine.len() as u64 - 32)) as usize + 32; // past the magic
    flipped[bit / 8] ^= 1 << (bit % 8);
    // The tag no longer verifies.
    let mut auth_failed = vec![
        genuine[..genuine.len() - 1].to_vec(),
        genuine[..KEYED_OVERHEAD].to_vec(),
        flipped,
    ];
    for _ in 0..5 {
        let len = 44 + (g.next() % 600) as usize;
        auth_failed.push([&b"OVL1"[..], &g.bytes(len)].concat()); // tag does not verify
        auth_failed.push([&b"OVL0"[..], &g.bytes(len)].concat()); // unsealed
    }
    let base = c.status(target);
    rogue::send_datagrams(&rogue_ns, gossip_port, &malformed);
    rogue::send_datagrams(&rogue_ns, gossip_port, &auth_failed);
    assert_counter_grows_by(&c, target, &base, "malformed", malformed.len() as u64);
    assert_counter_grows_by(&c, target, &base, "auth_failed", auth_failed.len() as u64);
    println!(
        "garbage: {} malformed and {} failing authentication sent, counted exactly",
        malformed.len(),
        auth_failed.len()
    );

    // (b) and (c): a gossip node with the wrong password, then none, that
    // settles a block of its own and claims n2's block as settled since
    // generation 1 (which would win it, were the claim believed).
    for password in [Some("not-the-cluster-password"), None] {
        let base = c.status(target);
        let node = RogueNode::start(
            &rogue_ns,
            RogueConfig {
                name: "rogue".into(),
                ip: rogue_ip,
                seeds: vec![gossip_port.to_string()],
                password: password.map(str::to_owned),
                forged: vec![(format!("block:{n2_block}"), "settled 1".into())],
            },
        );
        let rogue_blocks = node.wait_settled(Duration::from_secs(5));
        // Ten gossip rounds of it.
        std::thread::sleep(Duration::from_secs(2));
        let sent = node.stop();
        assert!(
            sent.datagrams_out >= 5,
            "the rogue node hardly sent: {sent:?}"
        );
        assert_eq!(
            sent.accepted, 0,
            "nothing answered the rogue node: {sent:?}"
        );
        assert_counter_grows_by(&c, target, &base, "auth_failed", sent.datagrams_out);
        let after = c.status(target);
        assert_eq!(wire(&after, "malformed"), wire(&base, "malformed"));
        println!(
            "rogue gossip ({}): settled {rogue_blocks:?}, sent {} datagrams, all counted as auth_failed",
            if password.is_some() {
                "wrong password"
            } else {
                "no password"
            },
            sent.datagrams_out
        );
    }

    // (d) The genuine datagram, intact, sent again from the rogue host.
    let base = c.status(target);
    let replays = 3;
    rogue::send_datagrams(&rogue_ns, gossip_port, &vec![genuine.clone(); replays]);
    assert_counter_grows_by(&c, target, &base, "replayed", replays as u64);
    assert_eq!(
        wire(&c.status(target), "auth_failed"),
        wire(&base, "auth_failed")
    );
    println!(
        "replay: a captured {}-byte datagram n2 -> n1 sent {replays} times, counted as replayed",
        genuine.len()
    );

    let s = c.status(target);
    println!(
        "node n1 wire counters after the attack: {}",
        s["gossip"]["wire"]
    );
    assert_eq!(
        c.lab.maps(target).routes().expect("routes"),
        routes,
        "routes changed"
    );
    assert_eq!(
        c.lab.maps(target).peers().expect("peers"),
        map_peers,
        "peers changed"
    );
    for i in 0..NODES {
        let s = c.status(i);
        assert!(
            peer(&s, "rogue").is_none(),
            "node {i} lists the rogue: {}",
            s["gossip"]
        );
        assert!(
            !maps_have(&c, i, rogue_ip),
            "node {i}'s maps steer traffic to the rogue host"
        );
    }
    assert_one_owner_per_block_and_agreement(
        &(0..NODES).map(|i| (i, c.status(i))).collect::<Vec<_>>(),
    );

    let pod_n1 = c.add_pod(target);
    assert_all_pairs_reach(&[&pod_n1, &pod_n2]);
}

#[test]
fn forget_returns_a_dead_nodes_block_and_refuses_live_and_unknown_nodes() {
    privileged!("forget_returns_a_dead_nodes_block_and_refuses_live_and_unknown_nodes");
    let mut c = Cluster::gossip(NODES);
    c.wait_converged(NODES, GOSSIP_TIMEOUT);
    let gone = 3;
    let gone_name = name(gone);
    let block = own_settled(&c.status(gone));
    assert!(!block.is_empty(), "{gone_name} has a block");

    assert!(
        c.stop_agent(gone),
        "{gone_name}'s agent did not exit cleanly on SIGTERM"
    );
    // Its agent announced the stop; its datapath still answers probes.
    let dead = c.wait_statuses("the stopped agent seen down", GOSSIP_TIMEOUT, |_, s| {
        peer(s, &gone_name).is_some_and(|p| p["state"] == "agent_down" && p["stopping"] == true)
    });
    println!("SIGTERM: {gone_name}'s agent seen stopped everywhere within {dead:?}");

    let out = c.agent_cli(0, &["forget", &gone_name]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("overlay-agent forget {gone_name}: {}", stdout.trim());
    assert!(
        out.status.success(),
        "forget {gone_name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("forgot {gone_name}")), "{stdout}");
    for b in &block {
        assert!(
            stdout.contains(b.as_str()),
            "forget did not list {b}: {stdout}"
        );
    }

    let t = c.wait_statuses(
        "the forgotten node gone from every view",
        GOSSIP_TIMEOUT,
        |_, s| {
            let g = &s["gossip"];
            peer(s, &gone_name).is_none()
                && g["forgotten"].get(&gone_name).is_some()
                && peers(s)
                    .iter()
                    .flat_map(|p| all_blocks(&p["blocks"]))
                    .chain(all_blocks(&g["blocks"]))
                    .all(|b| !block.contains(&b))
                && g["blocks_claimed"].as_u64()
                    == Some(
                        (all_blocks(&g["blocks"]).len()
                            + peers(s)
                                .iter()
                                .map(|p| all_blocks(&p["blocks"]).len())
                                .sum::<usize>()) as u64,
                    )
        },
    );
    println!("forget: {gone_name} and its block gone from every live node's view in {t:?}");

    for (node, why) in [
        ("n2", "n2 is alive"),
        ("nosuch", "no node named \"nosuch\" is known"),
        ("n1", "n1 is this node"),
    ] {
        let out = c.agent_cli(0, &["forget", node]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "forget {node}: {stderr}");
        assert!(
            stderr.contains(why),
            "forget {node} should say {why:?}: {stderr}"
        );
        println!("forget {node} refused: {}", stderr.trim());
    }
}
