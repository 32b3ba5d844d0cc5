use std::{collections::BTreeMap, time::Duration};

use super::*;
use crate::{
    agent::report::{DatapathReport, PeerCarriageReport},
    api::{Handler, Reply, Request},
    cni::{CniError, PodRef, code},
    gossip::{
        auth::WireStats,
        status::{GossipStatus, PeerStatus},
    },
    ipam::Usage,
    liveness::prober::ProbeReport,
    tunnel_mode::Carriage,
};

fn peer(name: &str, state: PeerState) -> PeerStatus {
    PeerStatus {
        name: name.into(),
        ip: None,
        gossip_addr: "192.0.2.1:6783".into(),
        state,
        stopping: false,
        datapath: None,
        routed: None,
        generation: 1,
        version: None,
        blocks: Vec::new(),
    }
}

fn report() -> NodeReport {
    let counters = BTreeMap::from([
        ("from_pod_encapsulated".to_owned(), 42),
        ("from_uplink_decapsulated".to_owned(), 40),
        ("drop_unknown_peer".to_owned(), 5),
        ("drop_truncated".to_owned(), 0),
    ]);
    NodeReport {
        ready: true,
        source: "gossip".into(),
        gossip: Some(GossipStatus {
            peers: vec![
                peer("a", PeerState::Alive),
                peer("b", PeerState::Alive),
                peer("c", PeerState::Dead),
                PeerStatus {
                    routed: Some(true),
                    ..peer("d", PeerState::AgentDown)
                },
            ],
            quorum: true,
            blocks_total: 4096,
            blocks_claimed: 3,
            wire: WireStats {
                bytes_in: 1000,
                bytes_out: 2000,
                datagrams_in: 10,
                datagrams_out: 20,
                auth_failed: 7,
                replayed: 1,
                malformed: 2,
                ..WireStats::default()
            },
            ..GossipStatus::default()
        }),
        policy: None,
        encryption: Some(crate::encryption::agent::Report {
            public_key: "k".into(),
            port: 51820,
            device_pid: Some(7),
            stats: Some(crate::encryption::userspace::DeviceStats {
                no_peer: 4,
                ..Default::default()
            }),
            peers: vec![
                crate::encryption::agent::PeerReport {
                    node_ip: "192.0.2.2".parse().unwrap(),
                    public_key: "a".into(),
                    encrypted: true,
                    last_handshake_s: Some(12.5),
                    tx_bytes: 1000,
                    rx_bytes: 2000,
                },
                crate::encryption::agent::PeerReport {
                    node_ip: "192.0.2.3".parse().unwrap(),
                    public_key: "b".into(),
                    encrypted: false,
                    last_handshake_s: None,
                    tx_bytes: 0,
                    rx_bytes: 0,
                },
            ],
        }),
        probes: Some(ProbeReport {
            sent: 50,
            answered: 48,
            rejected: 3,
            ..ProbeReport::default()
        }),
        ipam: Usage {
            blocks: vec!["10.32.1.0/24".parse().unwrap()],
            capacity: 254,
            used: 12,
            outside_blocks: 0,
        },
        datapath: DatapathReport {
            attachments: vec![("from_uplink".into(), "eth0".into())],
            routes: 2,
            peers: Vec::new(),
            endpoints: 12,
            counters,
            tunnel: "auto".into(),
            carriage: vec![
                PeerCarriageReport {
                    ip: "192.0.2.2".parse().unwrap(),
                    carriage: Carriage::Direct,
                    why: "on-link".into(),
                    mac: Some("02:00:00:00:00:02".into()),
                },
                PeerCarriageReport {
                    ip: "192.0.2.3".parse().unwrap(),
                    carriage: Carriage::Refused,
                    why: "not on-link: its route goes via gateway 192.0.2.1".into(),
                    mac: None,
                },
            ],
        },
    }
}

/// The value of the sample line `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_report_becomes_labelled_series() {
    let m = Metrics::new();
    let text = m.render(report());
    let want = [
        ("overlay_ready", 1.0),
        (r#"overlay_wireguard_peer_encrypted{peer="192.0.2.2"}"#, 1.0),
        (r#"overlay_wireguard_peer_encrypted{peer="192.0.2.3"}"#, 0.0),
        (
            r#"overlay_wireguard_peer_last_handshake_seconds{peer="192.0.2.2"}"#,
            12.0,
        ),
        (
            r#"overlay_wireguard_peer_bytes_total{peer="192.0.2.2",direction="rx"}"#,
            2000.0,
        ),
        ("overlay_wireguard_device_up", 1.0),
        (r#"overlay_wireguard_drops_total{reason="no_peer"}"#, 4.0),
        (
            r#"overlay_datapath_packets_total{event="from_pod_encapsulated"}"#,
            42.0,
        ),
        (
            r#"overlay_datapath_drops_total{reason="unknown_peer"}"#,
            5.0,
        ),
        (r#"overlay_datapath_drops_total{reason="truncated"}"#, 0.0),
        (r#"overlay_peers{state="alive"}"#, 2.0),
        (r#"overlay_peers{state="dead"}"#, 1.0),
        (r#"overlay_peers{state="agent_down"}"#, 1.0),
        ("overlay_peers_routed", 1.0),
        (r#"overlay_probes_total{result="sent"}"#, 50.0),
        (r#"overlay_probes_total{result="answered"}"#, 48.0),
        (r#"overlay_probes_total{result="rejected"}"#, 3.0),
        ("overlay_ipam_blocks", 1.0),
        (r#"overlay_ipam_addresses{state="in_use"}"#, 12.0),
        (r#"overlay_ipam_addresses{state="free"}"#, 242.0),
        ("overlay_ipam_cluster_blocks_claimed", 3.0),
        (r#"overlay_gossip_protocol{protocol="swim"}"#, 1.0),
        (r#"overlay_gossip_bytes_total{direction="in"}"#, 1000.0),
        (r#"overlay_gossip_bytes_total{direction="out"}"#, 2000.0),
        (
            r#"overlay_gossip_dropped_datagrams_total{reason="replayed"}"#,
            1.0,
        ),
        ("overlay_gossip_auth_failures_total", 7.0),
        (
            r#"overlay_peer_carriage{peer="192.0.2.2",carriage="direct"}"#,
            1.0,
        ),
        (
            r#"overlay_peer_carriage{peer="192.0.2.3",carriage="refused"}"#,
            1.0,
        ),
    ];
    for (series, v) in want {
        assert_eq!(sample(&text, series), Some(v), "{series} in\n{text}");
    }
    assert!(
        text.contains("# TYPE overlay_datapath_drops counter"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    // The report is not kept: a scrape without gossip has no peer series.
    let mut r = report();
    r.gossip = None;
    let text = m.render(r);
    assert_eq!(sample(&text, r#"overlay_peers{state="alive"}"#), None);
    assert_eq!(sample(&text, "overlay_ipam_blocks"), Some(1.0));
}

struct Fake;

impl Handler for Fake {
    fn handle(&self, request: Request) -> Reply {
        match request {
            Request::Status => Reply::Ok(None),
            _ => Reply::Err(CniError::new(code::INTERNAL, "no")),
        }
    }
}

#[test]
fn cni_operations_are_counted_by_command_and_result_with_latency() {
    let m = Arc::new(Metrics::new());
    let h = Instrumented::new(Arc::new(Fake), m.clone());
    for _ in 0..3 {
        assert_eq!(h.handle(Request::Status), Reply::Ok(None));
    }
    let del = Request::Del(crate::api::DelRequest {
        container_id: "c1".into(),
        netns: None,
        ifname: "eth0".into(),
        pod: Some(PodRef {
            namespace: "default".into(),
            name: "web-0".into(),
        }),
    });
    assert!(matches!(h.handle(del), Reply::Err(_)));
    m.observe_cni("ADD", true, Duration::from_millis(3));
    let text = m.render(report());
    let count = |labels: &str| {
        sample(
            &text,
            &format!("overlay_cni_operation_duration_seconds_count{{{labels}}}"),
        )
    };
    assert_eq!(count(r#"command="STATUS",result="success""#), Some(3.0));
    assert_eq!(count(r#"command="DEL",result="error""#), Some(1.0));
    assert_eq!(count(r#"command="ADD",result="success""#), Some(1.0));
    // 3 ms lands in the 5 ms bucket, not in the 2.5 ms one.
    let bucket = |le: &str| {
        sample(
            &text,
            &format!(
                r#"overlay_cni_operation_duration_seconds_bucket{{le="{le}",command="ADD",result="success"}}"#
            ),
        )
    };
    assert_eq!(bucket("0.0025"), Some(0.0), "{text}");
    assert_eq!(bucket("0.005"), Some(1.0), "{text}");
}
