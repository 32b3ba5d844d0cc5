//! End to end over network namespaces: two nodes joined by an underlay veth,
//! pods on each, our datapath loaded and filled through the agent library
//! (no gossip yet), real traffic.
//!
//! What the datapath guarantees is tested on both underlays
//! ([`Underlay::Wire`]: MTU-sized frames and GRO on receive, as a NIC;
//! [`Underlay::Veth`]: whole GSO packets): each such test is a function of
//! the underlay with one `#[test]` per mode, `NAME::wire` and `NAME::veth`.

use std::{path::PathBuf, time::Duration};

use overlay_agent::netlink::GRO_DEVICE;
use overlay_common::Stat;
use overlay_tests::{
    Lab, LabOptions, Mode, Netns, Underlay,
    lab::{UNDERLAY_MTU, UPLINK, node_block, node_ip},
    privileged, require_privileges,
    traffic::{Payload, connectivity_table, send_file},
};

const MIB: u64 = 1 << 20;

/// One `#[test]` per underlay for a test function of the underlay:
/// `NAME::wire` and `NAME::veth`, each gated by [`require_privileges`].
macro_rules! on_both_underlays {
    ($name:ident) => {
        mod $name {
            #[test]
            fn wire() {
                if super::require_privileges(concat!(stringify!($name), "::wire")) {
                    super::$name(super::Underlay::Wire);
                }
            }

            #[test]
            fn veth() {
                if super::require_privileges(concat!(stringify!($name), "::veth")) {
                    super::$name(super::Underlay::Veth);
                }
            }
        }
    };
}

fn overlay_lab(pods: usize, underlay: Underlay) -> Lab {
    Lab::new(&LabOptions::uniform(Mode::Overlay, 2, pods).on(underlay))
}

/// Two overlay nodes whose datapath the test installs itself.
fn lab_without_datapath(pods: usize, underlay: Underlay) -> Lab {
    Lab::new(
        &LabOptions {
            skip_datapath: true,
            ..LabOptions::uniform(Mode::Overlay, 2, pods)
        }
        .on(underlay),
    )
}

/// Interfaces of a node's namespace.
fn links(ns: &Netns) -> String {
    ns.exec(&["ip", "-o", "link", "show"])
}

on_both_underlays!(pods_ping_each_other_across_nodes_and_on_one_node);
fn pods_ping_each_other_across_nodes_and_on_one_node(underlay: Underlay) {
    let lab = overlay_lab(2, underlay);
    let (table, all) = connectivity_table(&lab);
    assert!(all, "some pods cannot reach each other:\n{table}");

    let n1 = lab.maps(0).counters().expect("counters");
    let n2 = lab.maps(1).counters().expect("counters");
    for (name, c) in [("node 1", &n1), ("node 2", &n2)] {
        assert!(
            c.get(Stat::FromPodEncapsulated) > 0,
            "{name} never encapsulated: {c:?}"
        );
        assert!(
            c.get(Stat::FromUplinkDecapsulated) > 0,
            "{name} never decapsulated: {c:?}"
        );
        assert!(
            c.get(Stat::FromPodLocal) > 0,
            "{name} never delivered locally: {c:?}"
        );
        assert_eq!(c.drops(), 0, "{name} dropped packets: {c:?}");
    }
}

fn assert_bulk_transfer(lab: &Lab, from: (usize, usize), to: (usize, usize), payload: &Payload) {
    let (src, dst) = (lab.pod(from.0, from.1), lab.pod(to.0, to.1));
    let t = send_file(&src.ns, &dst.ns, dst.ip, payload, Duration::from_secs(120));
    assert_eq!(
        t.received,
        std::fs::metadata(&payload.path).expect("payload").len(),
        "{} -> {}: bytes lost",
        src.ip,
        dst.ip
    );
    assert_eq!(
        t.sha256, payload.sha256,
        "{} -> {}: content changed",
        src.ip, dst.ip
    );
    eprintln!(
        "{} -> {}: {} MiB in {:?}",
        src.ip,
        dst.ip,
        t.received / MIB,
        t.elapsed
    );
}

/// Average size (bytes) of what `iface` in `ns` received while `work` ran.
fn avg_rx_packet(ns: &Netns, iface: &str, work: impl FnOnce()) -> u64 {
    let (b0, p0) = (
        ns.link_stat(iface, "rx_bytes"),
        ns.link_stat(iface, "rx_packets"),
    );
    work();
    let bytes = ns.link_stat(iface, "rx_bytes") - b0;
    let pkts = ns.link_stat(iface, "rx_packets") - p0;
    bytes / pkts.max(1)
}

/// Average size (bytes) of what `iface` in `ns` sent while `work` ran.
fn avg_tx_packet(ns: &Netns, iface: &str, work: impl FnOnce()) -> u64 {
    let (b0, p0) = (
        ns.link_stat(iface, "tx_bytes"),
        ns.link_stat(iface, "tx_packets"),
    );
    work();
    let bytes = ns.link_stat(iface, "tx_bytes") - b0;
    let pkts = ns.link_stat(iface, "tx_packets") - p0;
    bytes / pkts.max(1)
}

/// Merged (GRO) or whole (GSO) packets: at least this many pod MTUs on
/// average. Per-segment delivery gives about one MTU.
const LARGE_PACKETS_IN_MTUS: u64 = 4;

on_both_underlays!(bulk_tcp_crosses_the_overlay_intact_in_both_directions_in_large_packets);
fn bulk_tcp_crosses_the_overlay_intact_in_both_directions_in_large_packets(underlay: Underlay) {
    let lab = overlay_lab(2, underlay);
    let payload = Payload::random(100 * MIB);
    let node1 = &lab.nodes[0].ns;
    let dst = &lab.pod(1, 0).ns;
    let pod_mtu = u64::from(Lab::pod_mtu(Mode::Overlay));
    let mut on_underlay = 0;
    let in_pod = avg_rx_packet(dst, "eth0", || {
        on_underlay = avg_tx_packet(node1, UPLINK, || {
            assert_bulk_transfer(&lab, (0, 0), (1, 0), &payload);
        });
    });
    eprintln!(
        "{} underlay: average packet {on_underlay} B on node 1's {UPLINK}, {in_pod} B into the \
         receiving pod",
        underlay.name()
    );
    match underlay {
        // GSO survived encapsulation: the underlay carried packets far
        // larger than its MTU (segmentation would leave ~1.4 KB).
        Underlay::Veth => assert!(
            on_underlay > 2 * u64::from(UNDERLAY_MTU),
            "average underlay packet {on_underlay} B: GSO packets were segmented"
        ),
        // A wire carries MTU-sized frames, and GRO on the receiving node
        // merged them before our decapsulation.
        Underlay::Wire => assert!(
            on_underlay <= u64::from(UNDERLAY_MTU) + 14,
            "average underlay frame {on_underlay} B on a wire underlay: larger than the MTU"
        ),
    }
    assert!(
        in_pod >= LARGE_PACKETS_IN_MTUS * pod_mtu,
        "the receiving pod got {in_pod} B packets on average, under {LARGE_PACKETS_IN_MTUS} x \
         its MTU {pod_mtu}: {}",
        match underlay {
            Underlay::Wire => "GRO did not merge our VXLAN frames",
            Underlay::Veth => "GSO packets were segmented on the way",
        }
    );

    assert_bulk_transfer(&lab, (1, 0), (0, 0), &payload);
    assert_bulk_transfer(&lab, (0, 0), (0, 1), &payload);

    for i in 0..2 {
        let c = lab.maps(i).counters().expect("counters");
        assert_eq!(c.drops(), 0, "node {} dropped packets: {c:?}", i + 1);
        assert!(
            links(&lab.nodes[i].ns).contains(&format!(" {GRO_DEVICE}:")),
            "node {} has no {GRO_DEVICE}",
            i + 1
        );
    }
}

#[test]
fn on_a_wire_the_gro_device_is_what_makes_the_pod_receive_merged_packets() {
    privileged!("on_a_wire_the_gro_device_is_what_makes_the_pod_receive_merged_packets");
    let lab = overlay_lab(1, Underlay::Wire);
    let payload = Payload::random(16 * MIB);
    let dst = &lab.pod(1, 0).ns;
    let pod_mtu = u64::from(Lab::pod_mtu(Mode::Overlay));
    let merged = avg_rx_packet(dst, "eth0", || {
        assert_bulk_transfer(&lab, (0, 0), (1, 0), &payload);
    });
    // Without a tunnel socket on the port, GRO leaves our frames alone and
    // every segment is decapsulated and delivered on its own.
    lab.nodes[1].ns.ip(&["link", "del", GRO_DEVICE]);
    let single = avg_rx_packet(dst, "eth0", || {
        assert_bulk_transfer(&lab, (0, 0), (1, 0), &payload);
    });
    eprintln!("average packet into the pod: {merged} B with {GRO_DEVICE}, {single} B without");
    assert!(
        merged >= LARGE_PACKETS_IN_MTUS * pod_mtu,
        "with {GRO_DEVICE}: {merged} B"
    );
    assert!(
        single <= pod_mtu + 14,
        "without {GRO_DEVICE} the pod still got {single} B packets: something else merges them"
    );
    let c = lab.maps(1).counters().expect("counters");
    assert_eq!(c.drops(), 0, "{c:?}");
}

#[test]
fn the_underlay_carries_vxlan_between_node_addresses() {
    privileged!("the_underlay_carries_vxlan_between_node_addresses");
    let lab = overlay_lab(1, Underlay::Veth);
    let node1 = &lab.nodes[0].ns;
    let pcap = std::env::temp_dir().join(format!("ovl-{}.pcap", lab.tag));
    let pcap_s = pcap.display().to_string();
    let mut capture = node1.spawn(&[
        "tcpdump", "-i", UPLINK, "-nn", "-U", "-c", "4", "-w", &pcap_s, "udp", "port", "6784",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let (a, b) = (lab.pod(0, 0), lab.pod(1, 0));
    assert!(
        a.ns.ping(&b.ip.to_string(), 3),
        "ping across the overlay failed"
    );
    assert_eq!(
        capture.wait_timeout(Duration::from_secs(10)),
        Some(true),
        "tcpdump saw fewer than 4 VXLAN packets on the underlay"
    );
    let decoded = overlay_tests::run_ok(&["tcpdump", "-nn", "-r", &pcap_s, "-T", "vxlan"]);
    let _ = std::fs::remove_file(&pcap);
    let (n1, n2) = (node_ip(0), node_ip(1));
    assert!(
        decoded.contains(&format!("{n1}.")) && decoded.contains(&format!("{n2}.6784")),
        "outer headers are not node to node:\n{decoded}"
    );
    assert!(
        decoded.contains("VXLAN, flags [I]"),
        "not VXLAN:\n{decoded}"
    );
    assert!(decoded.contains("vni 1"), "wrong VNI:\n{decoded}");
    assert!(
        decoded.contains(&format!("{} > {}: ICMP echo request", a.ip, b.ip)),
        "inner packet is not the pod's ping:\n{decoded}"
    );
}

on_both_underlays!(a_linux_vxlan_device_interoperates_in_both_directions);
fn a_linux_vxlan_device_interoperates_in_both_directions(underlay: Underlay) {
    // Node 1 runs our datapath, node 2 a kernel vxlan device (same port
    // and VNI, MAC = its VTEP MAC): each must decapsulate the other.
    let lab = Lab::new(&LabOptions {
        modes: vec![Mode::Overlay, Mode::KernelVxlan],
        pods_per_node: 1,
        skip_datapath: false,
        pod_mtu: None,
        underlay,
        behind_router: None,
    });
    let (a, b) = (lab.pod(0, 0), lab.pod(1, 0));
    assert!(
        a.ns.ping(&b.ip.to_string(), 3),
        "ours -> kernel vxlan failed"
    );
    assert!(
        b.ns.ping(&a.ip.to_string(), 3),
        "kernel vxlan -> ours failed"
    );
    let payload = Payload::random(100 * MIB);
    assert_bulk_transfer(&lab, (0, 0), (1, 0), &payload);
    assert_bulk_transfer(&lab, (1, 0), (0, 0), &payload);

    let c = lab.maps(0).counters().expect("counters");
    assert!(c.get(Stat::FromPodEncapsulated) > 0, "{c:?}");
    assert!(c.get(Stat::FromUplinkDecapsulated) > 0, "{c:?}");
    assert_eq!(c.drops(), 0, "{c:?}");
    let rx = lab.nodes[1]
        .ns
        .link_stat(overlay_tests::lab::KERNEL_VXLAN_DEV, "rx_packets");
    assert!(rx > 0, "the kernel vxlan device decapsulated nothing");
}

on_both_underlays!(vxlan_from_a_node_that_is_not_a_peer_never_reaches_the_pod);
fn vxlan_from_a_node_that_is_not_a_peer_never_reaches_the_pod(underlay: Underlay) {
    // Three nodes on a switch: two run our datapath, the third is a rogue
    // kernel vxlan device that node 1 does not list as a peer.
    let lab = Lab::new(&LabOptions {
        modes: vec![Mode::Overlay, Mode::Overlay, Mode::KernelVxlan],
        pods_per_node: 1,
        skip_datapath: false,
        pod_mtu: None,
        underlay,
        behind_router: None,
    });
    let mut maps = lab.maps(0);
    maps.remove_peer(node_ip(2)).expect("remove peer");
    let victim = lab.pod(0, 0);
    let before = maps.counters().expect("counters");
    let rx_before = victim.ns.link_stat("eth0", "rx_packets");

    assert!(
        !lab.pod(2, 0).ns.ping(&victim.ip.to_string(), 3),
        "a non-peer reached the pod"
    );

    let delta = maps.counters().expect("counters").since(&before);
    assert!(delta.get(Stat::DropUnknownPeer) >= 3, "{delta:?}");
    assert_eq!(delta.get(Stat::FromUplinkDecapsulated), 0, "{delta:?}");
    assert_eq!(
        victim.ns.link_stat("eth0", "rx_packets"),
        rx_before,
        "the pod received packets from the rogue node"
    );
    // Legitimate peers are unaffected.
    assert!(lab.pod(1, 0).ns.ping(&victim.ip.to_string(), 2));
}

/// The `overlay-agent` binary next to this test's executable (cargo builds
/// the workspace's binaries before running its tests).
fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("overlay-agent");
    assert!(
        bin.is_file(),
        "{} not built; run the tests with `cargo xtask test` (cargo test --workspace)",
        bin.display()
    );
    bin
}

/// Runs the agent CLI in `ns`'s network namespace but the host's mount
/// namespace (as the DaemonSet does with a hostPath /sys/fs/bpf): `ip netns
/// exec` would give it a private /sys whose bpffs pins vanish on exit.
fn agent(ns: &Netns, pin: &std::path::Path, args: &[&str]) -> String {
    let bin = agent_binary().display().to_string();
    let pin = pin.display().to_string();
    let net = format!("--net={}", ns.path().display());
    let mut argv = vec![
        "nsenter",
        net.as_str(),
        bin.as_str(),
        "--pin-dir",
        pin.as_str(),
    ];
    argv.extend_from_slice(args);
    overlay_tests::run_ok(&argv)
}

on_both_underlays!(traffic_keeps_flowing_after_the_process_that_attached_everything_exits);
fn traffic_keeps_flowing_after_the_process_that_attached_everything_exits(underlay: Underlay) {
    let lab = lab_without_datapath(1, underlay);
    let install = |i: usize| {
        let node = &lab.nodes[i];
        let pod = &node.pods[0];
        let ip = node.ip.to_string();
        let installed = agent(
            &node.ns,
            &node.pin_dir,
            &["install", "--uplink", UPLINK, "--node-ip", &ip],
        );
        agent(&node.ns, &node.pin_dir, &["attach-pod", &pod.host_if]);
        for k in 0..2 {
            agent(
                &node.ns,
                &node.pin_dir,
                &[
                    "route-add",
                    &node_block(k).to_string(),
                    &node_ip(k).to_string(),
                ],
            );
        }
        agent(
            &node.ns,
            &node.pin_dir,
            &["peer-add", &node_ip(1 - i).to_string()],
        );
        let mac = pod
            .mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        agent(
            &node.ns,
            &node.pin_dir,
            &[
                "endpoint-add",
                &pod.ip.to_string(),
                "--iface",
                &pod.host_if,
                "--pod-mac",
                &mac,
            ],
        );
        installed
    };
    for i in 0..2 {
        let said = install(i);
        assert!(
            said.contains(&format!("GRO tunnel device {GRO_DEVICE}: created")),
            "{said}"
        );
    }
    // Every agent process has exited by now: only pins hold the datapath.
    let (a, b) = (lab.pod(0, 0), lab.pod(1, 0));
    assert!(
        a.ns.ping(&b.ip.to_string(), 3),
        "no traffic after the agent exited"
    );
    let payload = Payload::random(100 * MIB);
    assert_bulk_transfer(&lab, (0, 0), (1, 0), &payload);
    assert_bulk_transfer(&lab, (1, 0), (0, 0), &payload);
    for node in &lab.nodes {
        assert!(
            links(&node.ns).contains(&format!(" {GRO_DEVICE}:")),
            "install made no {GRO_DEVICE} in {}",
            node.ns.name
        );
    }

    // A restart re-uses the pins: same links, same maps, still forwarding.
    let links_before = overlay_agent::datapath::attachments(&lab.nodes[0].pin_dir);
    let said = install(0);
    assert!(
        said.contains(&format!("GRO tunnel device {GRO_DEVICE}: kept")),
        "{said}"
    );
    assert_eq!(
        overlay_agent::datapath::attachments(&lab.nodes[0].pin_dir),
        links_before,
        "re-installing changed the set of attachments"
    );
    let tcx = overlay_tests::sh(&format!(
        "ip netns exec {} bpftool -j link show | grep -o '\"type\":\"tcx\"' | wc -l",
        lab.nodes[0].ns.name
    ));
    let status = agent(&lab.nodes[0].ns, &lab.nodes[0].pin_dir, &["status"]);
    assert!(
        status.contains("from_uplink") && status.contains("10.32.2.0/24"),
        "{status}"
    );
    assert!(
        a.ns.ping(&b.ip.to_string(), 3),
        "no traffic after a restart"
    );
    eprintln!("tcx links system-wide after restart: {}", tcx.trim());

    // Uninstall leaves nothing pinned and stops forwarding.
    // Scratch directories: uninstall also removes the CNI files, state and
    // socket directory, which must not be the host's.
    let scratch = std::env::temp_dir().join(format!("ovl-uninstall-{}", std::process::id()));
    let sub = |d: &str| scratch.join(d).display().to_string();
    let (bin, conf, state, sock) = (
        sub("bin"),
        sub("net.d"),
        sub("state"),
        format!("{}/agent.sock", sub("run")),
    );
    agent(
        &lab.nodes[0].ns,
        &lab.nodes[0].pin_dir,
        &[
            "uninstall",
            "--cni-bin-dir",
            &bin,
            "--cni-conf-dir",
            &conf,
            "--state-dir",
            &state,
            "--socket",
            &sock,
        ],
    );
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(!lab.nodes[0].pin_dir.exists(), "pins left behind");
    assert!(
        !links(&lab.nodes[0].ns).contains(GRO_DEVICE),
        "{GRO_DEVICE} left behind:\n{}",
        links(&lab.nodes[0].ns)
    );
    assert!(
        !a.ns.ping(&b.ip.to_string(), 1),
        "still forwarding after uninstall"
    );
}

#[test]
fn installing_from_a_private_mount_namespace_is_refused_with_a_clear_error() {
    if !require_privileges(
        "installing_from_a_private_mount_namespace_is_refused_with_a_clear_error",
    ) {
        return;
    }
    let lab = lab_without_datapath(1, Underlay::Veth);
    let node = &lab.nodes[0];
    let bin = agent_binary().display().to_string();
    let pin = node.pin_dir.display().to_string();
    let ip = node.ip.to_string();
    // `ip netns exec` gives the command a private /sys: pins would vanish.
    let out = overlay_tests::run(&[
        "ip",
        "netns",
        "exec",
        &node.ns.name,
        &bin,
        "--pin-dir",
        &pin,
        "install",
        "--uplink",
        UPLINK,
        "--node-ip",
        &ip,
    ]);
    assert!(
        !out.status.success(),
        "install in a private mount namespace succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nsenter --net"), "unclear error: {err}");
    assert!(!node.pin_dir.exists(), "something was pinned");
}

#[test]
fn withdrawing_a_route_stops_traffic_to_that_block_and_removal_is_idempotent() {
    if !require_privileges(
        "withdrawing_a_route_stops_traffic_to_that_block_and_removal_is_idempotent",
    ) {
        return;
    }
    let lab = overlay_lab(1, Underlay::Veth);
    let (a, b) = (lab.pod(0, 0), lab.pod(1, 0));
    let mut maps = lab.maps(0);
    assert!(a.ns.ping(&b.ip.to_string(), 1));

    for _ in 0..2 {
        maps.remove_route(node_block(1)).expect("remove route");
        maps.remove_peer(node_ip(1)).expect("remove peer");
        maps.remove_endpoint("10.32.9.9".parse().expect("ip"))
            .expect("remove an endpoint that never existed");
    }
    assert!(!maps.routes().expect("routes").contains_key(&node_block(1)));
    assert!(
        !a.ns.ping(&b.ip.to_string(), 1),
        "traffic flowed without a route"
    );

    maps.upsert_route(node_block(1), node_ip(1)).expect("route");
    maps.upsert_peer(node_ip(1)).expect("peer");
    assert!(a.ns.ping(&b.ip.to_string(), 2), "traffic did not resume");
}

#[test]
fn attaching_again_after_an_interface_is_recreated_under_the_same_name_attaches_the_new_one() {
    if !require_privileges(
        "attaching_again_after_an_interface_is_recreated_under_the_same_name_attaches_the_new_one",
    ) {
        return;
    }
    let lab = lab_without_datapath(0, Underlay::Veth);
    let node = &lab.nodes[0];
    let peer = Netns::new(&lab.tag, "peer");
    let (pin, ip) = (node.pin_dir.as_path(), node.ip.to_string());
    agent(
        &node.ns,
        pin,
        &["install", "--uplink", UPLINK, "--node-ip", &ip],
    );
    let passed = || {
        overlay_agent::maps::Maps::open(pin)
            .expect("maps")
            .counters()
            .expect("counters")
            .get(Stat::FromPodPassed)
    };
    for round in 0..2 {
        // A fresh veth pair under the same name each round.
        Netns::veth_pair(&node.ns, "ovlx", &peer, "eth0");
        node.ns.ip(&["link", "set", "ovlx", "up"]);
        peer.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"]);
        peer.ip(&["link", "set", "eth0", "up"]);
        agent(&node.ns, pin, &["attach-pod", "ovlx"]);
        let before = passed();
        // ARP and pings leave the pod; our program sees and passes them.
        let _ = peer.ping("10.99.0.1", 1);
        assert!(
            passed() > before,
            "round {round}: from_pod is not attached to the new ovlx"
        );
        node.ns.ip(&["link", "del", "ovlx"]);
    }
    // One pin per program and interface: from_pod (ingress) and to_pod
    // (egress, NetworkPolicy), never a second of either.
    let progs: Vec<String> = overlay_agent::datapath::attachments(pin)
        .into_iter()
        .filter(|(_, i)| i == "ovlx")
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        progs,
        vec!["from_pod".to_owned(), "to_pod".to_owned()],
        "one pin per program and interface"
    );
}

on_both_underlays!(the_nodes_own_traffic_passes_untouched);
fn the_nodes_own_traffic_passes_untouched(underlay: Underlay) {
    let lab = overlay_lab(1, underlay);
    let (n1, n2) = (&lab.nodes[0], &lab.nodes[1]);
    let before = lab.maps(1).counters().expect("counters");
    assert!(
        n1.ns.ping(&n2.ip.to_string(), 2),
        "node to node ping failed"
    );
    let payload = Payload::random(16 * MIB);
    let t = send_file(&n1.ns, &n2.ns, n2.ip, &payload, Duration::from_secs(60));
    assert_eq!(t.sha256, payload.sha256, "node to node transfer changed");
    let delta = lab.maps(1).counters().expect("counters").since(&before);
    assert!(
        delta.get(Stat::FromUplinkPassed) > 100,
        "from_uplink did not see and pass the node's traffic: {delta:?}"
    );
    assert_eq!(delta.get(Stat::FromUplinkDecapsulated), 0, "{delta:?}");
    assert_eq!(delta.drops(), 0, "{delta:?}");
}

#[test]
fn the_gro_device_is_created_once_kept_a_wrong_one_replaced_and_a_taken_port_tolerated() {
    privileged!(
        "the_gro_device_is_created_once_kept_a_wrong_one_replaced_and_a_taken_port_tolerated"
    );
    use overlay_agent::netlink::{GroDevice, delete_gro_device, ensure_gro_device};
    use overlay_common::DEFAULT_VXLAN_PORT;

    let node = Netns::new(&overlay_tests::netns::unique_tag(), "gro");
    let in_node = |f: fn() -> GroDevice| {
        overlay_agent::netns::run_in(&node.path(), f).expect("enter the node namespace")
    };
    let ensure = || ensure_gro_device(DEFAULT_VXLAN_PORT).expect("ensure the GRO device");
    assert_eq!(in_node(ensure), GroDevice::Created);
    let first = node.ip(&["-o", "-d", "link", "show", GRO_DEVICE]);
    assert_eq!(in_node(ensure), GroDevice::Kept);
    assert_eq!(
        node.ip(&["-o", "-d", "link", "show", GRO_DEVICE]),
        first,
        "a second ensure changed the device"
    );
    let shown = |ns: &Netns| ns.ip(&["-o", "-d", "link", "show", GRO_DEVICE]);
    let d = shown(&node);
    assert!(
        d.contains("vxlan external")
            && d.contains(&format!("dstport {DEFAULT_VXLAN_PORT}"))
            && d.contains("state UNKNOWN"),
        "not an up flow-based vxlan device on our port: {d}"
    );
    assert_eq!(
        node.ip(&["-o", "addr", "show", "dev", GRO_DEVICE]).trim(),
        "",
        "the GRO device has addresses"
    );
    assert_eq!(
        node.ip(&["route", "show", "dev", GRO_DEVICE]).trim(),
        "",
        "the GRO device has routes"
    );
    let sysctl = |key: &str| {
        node.exec(&[
            "cat",
            &format!("/proc/sys/net/ipv4/conf/{GRO_DEVICE}/{key}"),
        ])
        .trim()
        .to_owned()
    };
    assert_eq!(sysctl("forwarding"), "0");
    assert_eq!(sysctl("rp_filter"), "1");

    // Someone else's device under our name, on another port with a VNI:
    // replaced by ours.
    node.ip(&["link", "del", GRO_DEVICE]);
    node.ip(&[
        "link", "add", GRO_DEVICE, "type", "vxlan", "id", "7", "dstport", "4789",
    ]);
    assert_eq!(in_node(ensure), GroDevice::Replaced);
    let d = shown(&node);
    assert!(
        d.contains("vxlan external") && d.contains(&format!("dstport {DEFAULT_VXLAN_PORT}")),
        "not replaced: {d}"
    );

    // Another vxlan device already holds the port: no device of ours, and
    // no failure (the datapath works without GRO).
    node.ip(&["link", "del", GRO_DEVICE]);
    node.ip(&[
        "link",
        "add",
        "vx-other",
        "type",
        "vxlan",
        "id",
        "9",
        "dstport",
        &DEFAULT_VXLAN_PORT.to_string(),
    ]);
    node.ip(&["link", "set", "vx-other", "up"]);
    assert_eq!(in_node(ensure), GroDevice::PortInUse);
    assert!(
        !node.ip(&["-o", "link", "show"]).contains(GRO_DEVICE),
        "a device that cannot come up was left behind"
    );
    node.ip(&["link", "del", "vx-other"]);
    assert_eq!(in_node(ensure), GroDevice::Created);

    let delete = || delete_gro_device().expect("delete the GRO device");
    let deleted = overlay_agent::netns::run_in(&node.path(), delete).expect("enter");
    assert!(deleted, "delete found no device");
    let again = overlay_agent::netns::run_in(&node.path(), delete).expect("enter");
    assert!(!again, "a second delete found a device");
    assert!(
        !node.ip(&["-o", "link", "show"]).contains(GRO_DEVICE),
        "the device is still there"
    );
}
