//! Prometheus metrics on `:6782/metrics`.
//!
//! Two kinds of numbers:
//! - measured as they happen: CNI operations by command and result, with
//!   latency histograms ([`Metrics::observe_cni`]);
//! - read when scraped from the node's report: datapath counters from
//!   `ovl_stats_v5` (drops with a `reason` label), peers by state, IPAM
//!   blocks and addresses, gossip bytes and datagrams, authentication
//!   failures ([`Metrics::render`]). Nothing is cached between scrapes, so
//!   a scrape shows the kernel's counters as they are.

mod cni;

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{
        MetricType, counter::ConstCounter, family::Family, gauge::ConstGauge, histogram::Histogram,
    },
    registry::Registry,
};

pub use self::cni::Instrumented;
use crate::{agent::report::NodeReport, gossip::status::PeerState};

/// Latency buckets of CNI operations, in seconds: 100 µs to 10 s (an ADD
/// takes a few ms; a slow one waits on netlink or on the address store).
pub const CNI_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Labels of a CNI operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CniLabels {
    /// `ADD`, `DEL`, `CHECK`, `GC` or `STATUS`.
    pub command: &'static str,
    /// `success` or `error`.
    pub result: &'static str,
}

/// The agent's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    cni: Family<CniLabels, Histogram>,
    current: Arc<Mutex<Option<NodeReport>>>,
    /// One scrape at a time: the report is handed to the collector through
    /// `current`.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `overlay` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("overlay");
        let cni = Family::<CniLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(CNI_BUCKETS.iter().copied())
        });
        registry.register(
            "cni_operation_duration_seconds",
            "Time the agent took to handle a CNI operation, by command and result",
            cni.clone(),
        );
        let current = Arc::new(Mutex::new(None));
        registry.register_collector(Box::new(ReportCollector {
            current: current.clone(),
        }));
        Self {
            registry,
            cni,
            current,
            scrape: Mutex::new(()),
        }
    }

    /// Records one CNI operation.
    pub fn observe_cni(&self, command: &'static str, ok: bool, took: Duration) {
        let result = if ok { "success" } else { "error" };
        self.cni
            .get_or_create(&CniLabels { command, result })
            .observe(took.as_secs_f64());
    }

    /// The OpenMetrics text of every metric, the report-derived ones read
    /// from `report`.
    pub fn render(&self, report: NodeReport) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
        let mut out = String::new();
        let encoded = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(e) = encoded {
            let _ = writeln!(out, "# encoding failed: {e}");
        }
        out
    }
}

/// Encodes the report handed over by [`Metrics::render`].
#[derive(Debug)]
struct ReportCollector {
    current: Arc<Mutex<Option<NodeReport>>>,
}

fn counter<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(L, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in values {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(L, i64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in values {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn plain_gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

fn plain_counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

fn sat(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for ReportCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let guard = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = guard.as_ref() else {
            return Ok(());
        };
        plain_gauge(
            &mut enc,
            "ready",
            "1 when the node can serve CNI ADD (it has a settled address block)",
            i64::from(r.ready),
        )?;

        // Datapath: ovl_stats_v5, summed over CPUs.
        let mut packets = Vec::new();
        let mut drops = Vec::new();
        for (name, v) in &r.datapath.counters {
            match name.strip_prefix("drop_") {
                Some(reason) => drops.push((vec![("reason", reason.to_owned())], *v)),
                None => packets.push((vec![("event", name.clone())], *v)),
            }
        }
        counter(
            &mut enc,
            "datapath_packets",
            "Packets the eBPF programs handled, by event (ovl_stats_v5)",
            &packets,
        )?;
        counter(
            &mut enc,
            "datapath_drops",
            "Packets the eBPF programs dropped, by reason (ovl_stats_v5)",
            &drops,
        )?;
        plain_gauge(
            &mut enc,
            "datapath_routes",
            "Entries in the routes map (pod blocks of other nodes)",
            sat(r.datapath.routes as u64),
        )?;
        plain_gauge(
            &mut enc,
            "datapath_endpoints",
            "Local pod endpoints in the endpoints map",
            sat(r.datapath.endpoints as u64),
        )?;
        let carriage: Vec<_> = r
            .datapath
            .carriage
            .iter()
            .map(|c| {
                (
                    vec![
                        ("peer", c.ip.to_string()),
                        ("carriage", c.carriage.name().to_owned()),
                    ],
                    1,
                )
            })
            .collect();
        gauge(
            &mut enc,
            "peer_carriage",
            "1 per peer, labelled with how its pods' traffic is carried (--tunnel): direct, \
             vxlan, or refused (--tunnel direct and the peer is not on-link)",
            &carriage,
        )?;
        plain_gauge(
            &mut enc,
            "datapath_attachments",
            "TC programs attached on this node",
            sat(r.datapath.attachments.len() as u64),
        )?;

        // IPAM.
        let u = &r.ipam;
        plain_gauge(
            &mut enc,
            "ipam_blocks",
            "Address blocks this node owns",
            sat(u.blocks.len() as u64),
        )?;
        gauge(
            &mut enc,
            "ipam_addresses",
            "Pod addresses in this node's blocks, by state",
            &[
                (vec![("state", "in_use")], sat(u.used)),
                (
                    vec![("state", "free")],
                    sat(u.capacity.saturating_sub(u.used)),
                ),
                (vec![("state", "outside_blocks")], sat(u.outside_blocks)),
            ],
        )?;

        // Gossip.
        if let Some(g) = &r.gossip {
            let count = |state| g.peers.iter().filter(|p| p.state == state).count() as u64;
            gauge(
                &mut enc,
                "peers",
                "Other nodes known through gossip, by state (agent_down: agent silent, \
                 datapath answering probes, still routed)",
                &[
                    (vec![("state", "alive")], sat(count(PeerState::Alive))),
                    (
                        vec![("state", "agent_down")],
                        sat(count(PeerState::AgentDown)),
                    ),
                    (vec![("state", "dead")], sat(count(PeerState::Dead))),
                ],
            )?;
            let routed = g.peers.iter().filter(|p| p.routed == Some(true)).count() as u64;
            plain_gauge(
                &mut enc,
                "peers_routed",
                "Other nodes this node routes pod traffic to",
                sat(routed),
            )?;
            plain_gauge(
                &mut enc,
                "gossip_quorum",
                "1 when this node sees a majority of the known nodes (it may claim blocks)",
                i64::from(g.quorum),
            )?;
            let protocol = g.protocol.to_string();
            gauge(
                &mut enc,
                "gossip_protocol",
                "1 for the membership protocol this node speaks (a rolling upgrade is \
                 over when every node shows swim)",
                &[(vec![("protocol", protocol.as_str())], 1)],
            )?;
            plain_gauge(
                &mut enc,
                "ipam_cluster_blocks_claimed",
                "Blocks of the cluster range claimed by any node",
                sat(g.blocks_claimed as u64),
            )?;
            plain_gauge(
                &mut enc,
                "ipam_cluster_blocks",
                "Blocks the cluster range is cut into",
                sat(g.blocks_total),
            )?;
            let w = &g.wire;
            counter(
                &mut enc,
                "gossip_bytes",
                "Gossip bytes on the wire, by direction",
                &[
                    (vec![("direction", "in")], w.bytes_in),
                    (vec![("direction", "out")], w.bytes_out),
                ],
            )?;
            counter(
                &mut enc,
                "gossip_datagrams",
                "Gossip datagrams on the wire, by direction",
                &[
                    (vec![("direction", "in")], w.datagrams_in),
                    (vec![("direction", "out")], w.datagrams_out),
                ],
            )?;
            counter(
                &mut enc,
                "gossip_dropped_datagrams",
                "Gossip datagrams dropped unread, by reason",
                &[
                    (vec![("reason", "auth_failed")], w.auth_failed),
                    (vec![("reason", "replayed")], w.replayed),
                    (vec![("reason", "malformed")], w.malformed),
                ],
            )?;
            plain_counter(
                &mut enc,
                "gossip_auth_failures",
                "Gossip datagrams that failed authentication (wrong or no password)",
                w.auth_failed,
            )?;
            plain_counter(
                &mut enc,
                "gossip_send_errors",
                "Gossip datagrams that could not be sent",
                w.send_errors,
            )?;
        }

        // NetworkPolicy.
        if let Some(p) = &r.policy {
            let mut drops = Vec::new();
            for pod in &p.isolated {
                for (direction, v) in [("ingress", pod.drops_ingress), ("egress", pod.drops_egress)]
                {
                    drops.push((
                        vec![("pod", pod.pod.clone()), ("direction", direction.into())],
                        v,
                    ));
                }
            }
            counter(
                &mut enc,
                "policy_drops",
                "Packets NetworkPolicy dropped, by local pod and direction (ovl_policy_drops_v1)",
                &drops,
            )?;
            plain_gauge(
                &mut enc,
                "policy_isolated_pods",
                "Local pods isolated by NetworkPolicy",
                sat(p.isolated.len() as u64),
            )?;
            plain_gauge(
                &mut enc,
                "policy_problems",
                "NetworkPolicies (or rules of them) that could not be applied",
                sat(p.problems.len() as u64),
            )?;
            gauge(
                &mut enc,
                "policy_map_entries",
                "Entries of the NetworkPolicy maps, by map",
                &[
                    (
                        vec![("map", overlay_common::MAP_IDENTITIES)],
                        sat(p.identities as u64),
                    ),
                    (
                        vec![("map", overlay_common::MAP_POLICY)],
                        sat(p.rules as u64),
                    ),
                    (
                        vec![("map", overlay_common::MAP_POLICY_CIDRS)],
                        sat(p.cidrs as u64),
                    ),
                    (
                        vec![("map", overlay_common::MAP_CONNTRACK)],
                        sat(p.tracked_connections as u64),
                    ),
                ],
            )?;
        }

        // Datapath liveness probes.
        if let Some(p) = &r.probes {
            counter(
                &mut enc,
                "probes",
                "Datapath liveness probes: sent, answered, and replies rejected (unknown \
                 nonce or sender: a forgery or a very late answer)",
                &[
                    (vec![("result", "sent")], p.sent),
                    (vec![("result", "answered")], p.answered),
                    (vec![("result", "rejected")], p.rejected),
                ],
            )?;
        }

        // Encryption, per peer.
        if let Some(e) = &r.encryption {
            let peer = |p: &crate::encryption::agent::PeerReport| p.node_ip.to_string();
            gauge(
                &mut enc,
                "wireguard_peer_encrypted",
                "1 per WireGuard peer with an established session, 0 without one (its pod \
                 traffic is dropped meanwhile)",
                &e.peers
                    .iter()
                    .map(|p| (vec![("peer", peer(p))], i64::from(p.encrypted)))
                    .collect::<Vec<_>>(),
            )?;
            gauge(
                &mut enc,
                "wireguard_peer_last_handshake_seconds",
                "Seconds since the last completed WireGuard handshake with the peer",
                &e.peers
                    .iter()
                    .filter_map(|p| Some((vec![("peer", peer(p))], p.last_handshake_s? as i64)))
                    .collect::<Vec<_>>(),
            )?;
            let mut bytes = Vec::new();
            for p in &e.peers {
                bytes.push((
                    vec![("peer", peer(p)), ("direction", "tx".to_owned())],
                    p.tx_bytes,
                ));
                bytes.push((
                    vec![("peer", peer(p)), ("direction", "rx".to_owned())],
                    p.rx_bytes,
                ));
            }
            counter(
                &mut enc,
                "wireguard_peer_bytes",
                "Plaintext bytes sent to (tx) and received from (rx) each WireGuard peer",
                &bytes,
            )?;
            plain_gauge(
                &mut enc,
                "wireguard_device_up",
                "1 while the WireGuard device process reports",
                i64::from(e.device_pid.is_some()),
            )?;
            if let Some(st) = &e.stats {
                counter(
                    &mut enc,
                    "wireguard_drops",
                    "Packets the WireGuard device dropped, by reason (no_session: held for a \
                     handshake, up to 256 per peer, and dropped beyond)",
                    &[
                        (vec![("reason", "no_peer")], st.no_peer),
                        (vec![("reason", "malformed")], st.malformed),
                        (vec![("reason", "rejected")], st.rejected),
                        (vec![("reason", "spoofed_source")], st.spoofed_source),
                        (vec![("reason", "no_session")], st.no_session),
                    ],
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
