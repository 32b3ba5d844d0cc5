//! The userspace WireGuard device (`overlay-agent wireguard`) between
//! namespaces: what crosses the underlay, who gets a session, what a peer
//! may send, and a key rotation under a transfer.

use std::time::Duration;

use overlay_tests::{
    privileged,
    traffic::{ContinuousPing, Payload, send_file},
    wireguard::{self, Capture, PORT, WgNode},
};

fn ping(from: &WgNode, to: &WgNode) -> bool {
    from.ns.ping(&to.pod.to_string(), 3)
}

#[test]
fn three_nodes_reach_each_other_and_the_wire_carries_only_wireguard() {
    privileged!("three_nodes_reach_each_other_and_the_wire_carries_only_wireguard");
    let (_hub, mut nodes) = wireguard::nodes(3);
    wireguard::mesh(&mut nodes);
    for a in &nodes {
        for b in &nodes {
            if a.pod != b.pod {
                assert!(ping(a, b), "{} -> {} did not answer", a.pod, b.pod);
            }
        }
    }
    // 100 MiB from node 0 to node 1, captured on node 0's underlay link.
    let payload = Payload::random(100 << 20);
    let cap = Capture::start(&nodes[0].ns, "eth0", 20_000);
    let t = send_file(
        &nodes[0].ns,
        &nodes[1].ns,
        nodes[1].pod,
        &payload,
        Duration::from_secs(120),
    );
    let (lines, raw) = cap.finish();
    assert_eq!(t.received, 100 << 20, "bytes that arrived");
    assert_eq!(t.sha256, payload.sha256, "content that arrived");
    assert!(lines.len() > 1000, "captured only {} packets", lines.len());
    let wg = format!(".{PORT}:");
    let wg_reply = format!(".{PORT} >");
    // Neighbour resolution (ARP) may come by; every IP packet must be
    // WireGuard.
    for l in lines.iter().filter(|l| !l.contains(" ARP, ")) {
        assert!(
            l.contains(" UDP") && (l.contains(&wg) || l.contains(&wg_reply)),
            "a packet on the underlay that is not WireGuard: {l}"
        );
        assert!(!l.contains("10.44."), "a pod address on the underlay: {l}");
    }
    // No stretch of the payload in the capture (the first 16 MiB of it
    // went by while capturing).
    wireguard::assert_payload_not_in(&raw, &payload, 16 << 20);
    // Both sides report the session and the bytes.
    let s = nodes[0].wait_status(Duration::from_secs(5), |s| {
        s.peers
            .iter()
            .any(|p| p.endpoint.ip() == &nodes[1].underlay && p.tx_bytes >= 100 << 20)
    });
    let p = s
        .peers
        .iter()
        .find(|p| p.endpoint.ip() == &nodes[1].underlay)
        .unwrap();
    assert!(p.last_handshake_s.is_some(), "{s:?}");
    assert_eq!(s.stats.rejected + s.stats.spoofed_source, 0, "{s:?}");
}

#[test]
fn an_unknown_key_gets_no_session_and_a_peer_cannot_send_from_outside_its_block() {
    privileged!("an_unknown_key_gets_no_session_and_a_peer_cannot_send_from_outside_its_block");
    let (_hub, mut nodes) = wireguard::nodes(3);
    // Nodes 0 and 1 know each other; node 2 knows node 0 (it has its
    // public key and endpoint, as anyone reading gossip could) but node 0
    // does not list node 2's key.
    let (p0, p1, p2) = (nodes[0].as_peer(), nodes[1].as_peer(), nodes[2].as_peer());
    nodes[0].configure(vec![p1.clone()]);
    nodes[1].configure(vec![p0.clone()]);
    // Node 2 claims node 1's block with its own key.
    nodes[2].configure(vec![p0.clone()]);
    let (b0, b1) = (nodes[0].block, nodes[1].block);
    nodes[0].start(&[b1]);
    nodes[1].start(&[b0]);
    nodes[2].start(&[b0]);
    assert!(
        ping(&nodes[1], &nodes[0]),
        "the configured pair does not talk"
    );
    assert!(!ping(&nodes[2], &nodes[0]), "an unknown key reached a pod");
    let s0 = nodes[0].wait_status(Duration::from_secs(5), |s| s.stats.rejected > 0);
    assert!(
        s0.peers.iter().all(|p| p.public_key != p2.public_key),
        "{s0:?}"
    );
    let s2 = nodes[2].status().unwrap();
    assert!(
        s2.peers.iter().all(|p| p.last_handshake_s.is_none()),
        "the unknown node got a session: {s2:?}"
    );
    // Node 1 sends from an address outside its block (its own session,
    // its own key): node 0 drops it after decrypting.
    nodes[1]
        .ns
        .ip(&["addr", "add", "10.44.99.1/32", "dev", "lo"]);
    assert!(
        !nodes[1].ns.try_exec(&[
            "ping",
            "-c",
            "2",
            "-W",
            "1",
            "-I",
            "10.44.99.1",
            &nodes[0].pod.to_string()
        ]),
        "a packet from outside the sender's block was delivered"
    );
    nodes[0].wait_status(Duration::from_secs(5), |s| s.stats.spoofed_source >= 2);
}

#[test]
fn a_key_rotated_during_a_transfer_loses_no_byte() {
    privileged!("a_key_rotated_during_a_transfer_loses_no_byte");
    let (_hub, mut nodes) = wireguard::nodes(2);
    wireguard::mesh(&mut nodes);
    assert!(ping(&nodes[0], &nodes[1]));
    let payload = Payload::random(100 << 20);
    let (n0, n1) = nodes.split_at_mut(1);
    let (a, b) = (&mut n0[0], &mut n1[0]);
    let before = a.key.public_base64();
    std::thread::scope(|scope| {
        let sender =
            scope.spawn(|| send_file(&a.ns, &b.ns, b.pod, &payload, Duration::from_secs(120)));
        // Rotate node 1's key once the transfer runs: node 1 takes the new
        // key with its configuration, node 0 learns the new public key as
        // it would from gossip.
        b.wait_status(Duration::from_secs(20), |s| {
            s.peers.iter().any(|p| p.rx_bytes > 10 << 20)
        });
        let old = b.key.public_base64();
        b.key = wireguard::new_key(&b.key_path());
        b.configure(vec![a.as_peer()]);
        a.configure(vec![b.as_peer()]);
        assert_ne!(old, b.key.public_base64());
        let t = sender.join().expect("sender");
        assert_eq!(t.received, 100 << 20, "bytes that arrived");
        assert_eq!(t.sha256, payload.sha256, "content that arrived");
    });
    assert_eq!(before, a.key.public_base64());
    let s = b.wait_status(Duration::from_secs(5), |s| {
        s.public_key == b.key.public_base64()
    });
    assert_eq!(s.peers.len(), 1);
    let sa = a.status().unwrap();
    assert_eq!(sa.peers.len(), 1, "the old key is still a peer: {sa:?}");
    assert_eq!(sa.peers[0].public_key, b.key.public_base64());
}

#[test]
fn a_killed_device_restarts_into_its_interface_and_routes_within_seconds() {
    privileged!("a_killed_device_restarts_into_its_interface_and_routes_within_seconds");
    let (_hub, mut nodes) = wireguard::nodes(2);
    wireguard::mesh(&mut nodes);
    assert!(ping(&nodes[1], &nodes[0]));
    // 20 echoes a second from node 1, which holds a session with node 0
    // that node 0's restarted device no longer knows.
    let flow = ContinuousPing::start(&nodes[1].ns, nodes[0].pod, 20, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    nodes[0]
        .device
        .take()
        .expect("running")
        .signal(libc::SIGKILL);
    let routes_kept = nodes[0].ns.ip(&["route", "show", "dev", wireguard::DEVICE]);
    assert!(
        routes_kept.contains(&nodes[1].block.to_string()),
        "the route through the device went with its process: {routes_kept:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let _ = std::fs::remove_file(nodes[0].status_path());
    nodes[0].start(&[]);
    std::thread::sleep(Duration::from_secs(8));
    let (sent, received) = flow.finish();
    let lost = sent - received;
    println!("restart: {sent} echoes sent at 20/s, {lost} lost (device down 1 s)");
    // 1 s down, the start, one handshake: not node 1's 15 s rekey timeout.
    assert!(lost <= 3 * 20, "{lost} of {sent} echoes lost");
    assert!(received > 0);
}
