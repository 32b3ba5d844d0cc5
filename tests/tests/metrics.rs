//! Operability: the Prometheus endpoint in the lab (scraped from a running
//! gossip cluster, its numbers move with what happens on the node: pods
//! added, pod traffic across nodes, spoofed VXLAN, forged gossip, failed
//! CNI calls), the agent's log (pods of CNI operations, text or JSON, a
//! fatal error with its cause) and `bpftool` dumps of every map.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use overlay_agent::gossip::{
    DEFAULT_GOSSIP_PORT,
    auth::{Key, Sealer},
};
use overlay_common::{DEFAULT_VNI, DEFAULT_VXLAN_PORT};
use overlay_tests::{
    cluster::{Cluster, CniCall, invoke_env, with_prev},
    lab::node_ip,
    require_privileges,
    rogue::send_datagrams,
};

/// The value of the sample `series` (metric name and labels, exactly as
/// exposed), or `None` when there is no such line.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no {series} in the scrape:\n{text}"))
}

/// A VXLAN datagram (header + inner Ethernet/IPv4) as a rogue host would
/// send it to a node's VXLAN port.
fn vxlan_datagram() -> Vec<u8> {
    let mut d = vec![0x08, 0, 0, 0];
    d.extend_from_slice(&DEFAULT_VNI.to_be_bytes()[1..]);
    d.push(0);
    d.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]);
    d.extend_from_slice(&[
        0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 32, 9, 9, 10, 32, 0, 2,
    ]);
    d
}

#[test]
fn metrics_move_with_pods_traffic_drops_and_forged_gossip() {
    if !require_privileges("metrics_move_with_pods_traffic_drops_and_forged_gossip") {
        return;
    }
    let mut c = Cluster::gossip(3);
    c.wait_converged(3, Duration::from_secs(30));
    let before = c.metrics(0);
    println!("first scrape of node 0:\n{before}");
    assert_eq!(value(&before, "overlay_ready"), 1.0);
    assert_eq!(value(&before, r#"overlay_peers{state="alive"}"#), 2.0);
    assert_eq!(value(&before, r#"overlay_peers{state="dead"}"#), 0.0);
    assert!(value(&before, "overlay_ipam_blocks") >= 1.0);
    assert_eq!(value(&before, "overlay_gossip_quorum"), 1.0);

    // A pod on node 0, added as kubelet would (with CNI_ARGS), and one on
    // node 1.
    let a = c.add_pod_with_env(
        0,
        &[(
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=x",
        )],
    );
    let (ns, a_ip) = (&a.ns, a.ip);
    let path = ns.path().display().to_string();
    let config = c.config(0, "1.1.0");
    let b = c.add_pod(1);

    // Pod traffic across nodes: every ping is encapsulated on node 0 and
    // every reply decapsulated there.
    let pings = 20;
    assert!(
        ns.ping(&b.ip.to_string(), pings),
        "{a_ip} cannot reach {}",
        b.ip
    );

    // Spoofed VXLAN from a host on the underlay that is not a peer, and
    // forged gossip from the same host.
    let rogue_ip = Ipv4Addr::new(172, 31, 0, 200);
    let rogue = c.lab.underlay_host("rogue", rogue_ip);
    let vxlan = SocketAddr::from((node_ip(0), DEFAULT_VXLAN_PORT));
    send_datagrams(&rogue, vxlan, &vec![vxlan_datagram(); 5]);
    let gossip = SocketAddr::from((node_ip(0), DEFAULT_GOSSIP_PORT));
    // Sealed with a key from the wrong password: each fails authentication.
    let mut sealer = Sealer::new(Some(Key::derive(b"wrong password", "overlay")), 77, 1);
    let forged: Vec<Vec<u8>> = (0..4)
        .map(|_| {
            let mut d = Vec::new();
            sealer.seal(b"forged gossip", &mut d);
            d
        })
        .collect();
    send_datagrams(&rogue, gossip, &forged);
    send_datagrams(&rogue, gossip, &[b"not a gossip datagram".to_vec()]);

    // A CNI call that fails: DEL without a container id never reaches the
    // agent, so use a CHECK of a container the agent does not know.
    let failed = invoke_env(
        &c.lab.nodes[0].ns,
        &CniCall {
            command: "CHECK",
            container_id: "no-such-container",
            netns: Some(&path),
            ifname: "eth0",
            config: &with_prev(&config, &a.result),
        },
        &[],
    );
    assert_ne!(failed.code, 0, "CHECK of an unknown container passed");

    std::thread::sleep(Duration::from_millis(300));
    let after = c.metrics(0);
    println!("second scrape of node 0:\n{after}");
    let delta = |series: &str| value(&after, series) - sample(&before, series).unwrap_or(0.0);

    let encap = delta(r#"overlay_datapath_packets_total{event="from_pod_encapsulated"}"#);
    let decap = delta(r#"overlay_datapath_packets_total{event="from_uplink_decapsulated"}"#);
    assert!(encap >= f64::from(pings), "encapsulated moved by {encap}");
    assert!(decap >= f64::from(pings), "decapsulated moved by {decap}");
    let unknown = delta(r#"overlay_datapath_drops_total{reason="unknown_peer"}"#);
    assert!(unknown >= 5.0, "unknown_peer drops moved by {unknown}");
    assert_eq!(
        delta(r#"overlay_ipam_addresses{state="in_use"}"#),
        1.0,
        "one pod added on node 0"
    );
    assert_eq!(value(&after, "overlay_datapath_endpoints"), 1.0);
    let auth = delta("overlay_gossip_auth_failures_total");
    assert!(auth >= 4.0, "auth failures moved by {auth}");
    let malformed = delta(r#"overlay_gossip_dropped_datagrams_total{reason="malformed"}"#);
    assert!(malformed >= 1.0, "malformed moved by {malformed}");
    assert!(delta(r#"overlay_gossip_bytes_total{direction="in"}"#) > 0.0);
    assert!(delta(r#"overlay_gossip_bytes_total{direction="out"}"#) > 0.0);
    let adds = r#"overlay_cni_operation_duration_seconds_count{command="ADD",result="success"}"#;
    assert_eq!(delta(adds), 1.0);
    let checks = r#"overlay_cni_operation_duration_seconds_count{command="CHECK",result="error"}"#;
    assert_eq!(delta(checks), 1.0);

    // The log names the pod of the CNI operation and the failure's cause.
    let log = c.log(0);
    assert!(
        log.lines()
            .any(|l| l.contains("pod added") && l.contains("shop/web-0")),
        "no 'pod added' line naming shop/web-0 in:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("CNI operation failed") && l.contains("CHECK")),
        "no failed CHECK line in:\n{log}"
    );
    assert!(log.contains("overlay-agent starting"), "{log}");
    assert!(log.contains("peer joined"), "{log}");
    drop(rogue);
}

/// What the README's troubleshooting section promises: `bpftool map dump
/// pinned` prints every map with named fields (BTF), not raw bytes only.
#[test]
fn bpftool_dumps_every_pinned_map_with_named_fields() {
    if !require_privileges("bpftool_dumps_every_pinned_map_with_named_fields") {
        return;
    }
    let mut c = Cluster::gossip(2);
    c.wait_converged(2, Duration::from_secs(30));
    let pod = c.add_pod(0);
    let want: [(&str, &[&str]); 7] = [
        (
            "ovl_config_v1",
            &["node_ip", "uplink_ifindex", "vxlan_port", "vni", "mtu"],
        ),
        ("ovl_routes_v1", &["prefix_len", "node_ip"]),
        ("ovl_endpoints_v1", &["ifindex", "pod_mac", "host_mac"]),
        ("ovl_peers_v1", &["flags"]),
        ("ovl_stats_v5", &["cpu", "values"]),
        ("ovl_peer_macs_v1", &["key", "value"]),
        ("ovl_encryption_v1", &["flags", "ifindex"]),
    ];
    assert_eq!(
        want.map(|(m, _)| m),
        overlay_common::ALL_MAPS,
        "a map was added: say here which fields its dump must name"
    );
    for (map, fields) in want {
        let path = c.pin_dir(0).join(map);
        let out = std::process::Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(&path)
            .output()
            .expect("running bpftool (cargo xtask setup installs it)");
        assert!(
            out.status.success(),
            "bpftool map dump pinned {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let entries: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).expect("bpftool -j prints JSON");
        assert!(!entries.is_empty(), "{map} is empty");
        let formatted = entries[0]
            .get("formatted")
            .unwrap_or_else(|| panic!("{map}: no BTF-formatted entry: {}", entries[0]))
            .to_string();
        for f in fields {
            assert!(
                formatted.contains(&format!("\"{f}\"")),
                "{map}: no field {f} in {formatted}"
            );
        }
    }
    // The endpoint of the pod reads back as its address, in network order.
    let out = std::process::Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(c.pin_dir(0).join("ovl_endpoints_v1"))
        .output()
        .expect("bpftool");
    let text = String::from_utf8_lossy(&out.stdout).replace([' ', '\n'], "");
    let octets = pod.ip.octets().map(|o| o.to_string()).join(",");
    assert!(text.contains(&format!("\"key\":[{octets}]")), "{text}");
}

/// `--log-format json` makes every line one JSON event, the start-up
/// summary and a fatal error (with its cause) included; text is one line
/// per event. The node address is on no interface, so the agent stops
/// before touching anything.
#[test]
fn logs_are_one_event_per_line_in_text_or_json_and_a_fatal_error_names_its_cause() {
    let state = std::env::temp_dir().join(format!("ovl-logs-{}", std::process::id()));
    let run = |format: &str| {
        let out = std::process::Command::new(overlay_tests::cluster::bin_path("overlay-agent"))
            .args(["run", "--node-ip", "192.0.2.213", "--kubernetes", "off"])
            .args(["--log-format", format, "--metrics-addr", "off"])
            .arg("--state-dir")
            .arg(&state)
            .env_clear()
            // As the manifest sets it: no seed peers.
            .env("OVERLAY_PEERS", "")
            .output()
            .expect("running overlay-agent");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cause = "no interface holds the node address 192.0.2.213";

    let json = run("json");
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let start = events
        .iter()
        .find(|e| e["fields"]["message"] == "overlay-agent starting")
        .unwrap_or_else(|| panic!("no start-up summary in:\n{json}"));
    assert_eq!(start["fields"]["node_ip"], "192.0.2.213", "{start}");
    assert_eq!(start["fields"]["ipalloc_range"], "10.32.0.0/12", "{start}");
    assert_eq!(
        start["fields"]["peers"], "[]",
        "an empty OVERLAY_PEERS: {start}"
    );
    let fatal = events.last().expect("at least one event");
    assert_eq!(fatal["level"], "ERROR", "{fatal}");
    assert!(
        fatal["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains(cause)),
        "{fatal}"
    );

    let text = run("text");
    assert!(text.lines().all(|l| !l.starts_with('{')), "{text}");
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.contains("INFO") && first.contains("overlay-agent starting"),
        "{text}"
    );
    let last = text.lines().last().unwrap_or_default();
    assert!(last.contains("ERROR") && last.contains(cause), "{text}");
    assert!(
        !state.exists(),
        "the agent created {} before failing",
        state.display()
    );
}
