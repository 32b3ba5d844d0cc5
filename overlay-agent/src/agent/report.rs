//! What `GET /status` returns and `overlay-agent status` prints: the
//! gossip view (peers, blocks, quorum, wire counters), address usage and
//! the datapath (attachments, map sizes, every counter by name).

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::{
    gossip::status::GossipStatus, ipam::Usage, liveness::prober::ProbeReport, policy::PolicyReport,
    tunnel_mode::Carriage,
};

/// How pod traffic to one peer is carried (`--tunnel`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCarriageReport {
    /// The peer's node IP.
    pub ip: Ipv4Addr,
    /// Direct, VXLAN, or refused.
    pub carriage: Carriage,
    /// Why (`on-link`, `not on-link: its route goes via gateway ...`).
    pub why: String,
    /// Its MAC in the peer MAC map (whose direct packets are accepted),
    /// if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The datapath part of the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathReport {
    /// (program, interface) pairs attached.
    pub attachments: Vec<(String, String)>,
    /// Entries in the routes map.
    pub routes: usize,
    /// Peers allowed to send VXLAN.
    pub peers: Vec<Ipv4Addr>,
    /// Local pod endpoints.
    pub endpoints: usize,
    /// Every counter by name (packets), drops included.
    pub counters: BTreeMap<String, u64>,
    /// `--tunnel`: `auto`, `vxlan` or `direct`.
    #[serde(default)]
    pub tunnel: String,
    /// Per peer, how its pods' traffic is carried.
    #[serde(default)]
    pub carriage: Vec<PeerCarriageReport>,
}

/// A node's whole status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Whether the node can serve ADD (it has a settled block).
    pub ready: bool,
    /// Where the topology comes from: `gossip` or `static`.
    pub source: String,
    /// Gossip status (absent with a static topology).
    pub gossip: Option<GossipStatus>,
    /// Datapath liveness probes (absent when not probing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<ProbeReport>,
    /// NetworkPolicy (absent without the Kubernetes API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyReport>,
    /// Encryption (absent with `--encryption off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::encryption::agent::Report>,
    /// Address usage in this node's blocks.
    pub ipam: Usage,
    /// The datapath.
    pub datapath: DatapathReport,
}

impl NodeReport {
    /// Renders the report for humans.
    pub fn render(&self) -> String {
        let mut s = String::new();
        match &self.gossip {
            Some(g) => s.push_str(&g.render()),
            None => {
                let _ = writeln!(s, "Static topology (no gossip)");
            }
        }
        if let Some(p) = &self.probes {
            let _ = writeln!(
                s,
                "\nDatapath probes (UDP {}, every {} ms, timeout {} ms): {} sent, {} answered, \
                 {} rejected",
                p.port, p.interval_ms, p.timeout_ms, p.sent, p.answered, p.rejected
            );
            for peer in &p.peers {
                let _ = writeln!(
                    s,
                    "  {:<16} {:<8} last answer {} ago, rtt {}",
                    peer.ip.to_string(),
                    format!("{:?}", peer.state).to_lowercase(),
                    peer.last_answer_ms_ago
                        .map(|m| format!("{m} ms"))
                        .unwrap_or_else(|| "never".into()),
                    peer.rtt_us
                        .map(|u| format!("{u} µs"))
                        .unwrap_or_else(|| "-".into()),
                );
            }
        }
        let u = &self.ipam;
        let blocks: Vec<String> = u.blocks.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            s,
            "\nIPAM: {} of {} addresses in use in {}{}; ready: {}",
            u.used,
            u.capacity,
            if blocks.is_empty() {
                "no block".to_owned()
            } else {
                blocks.join(" ")
            },
            if u.outside_blocks > 0 {
                format!(" ({} held outside this node's blocks)", u.outside_blocks)
            } else {
                String::new()
            },
            if self.ready { "yes" } else { "NO" }
        );
        let d = &self.datapath;
        let _ = writeln!(
            s,
            "\nDatapath: {} routes, {} peers, {} local pods",
            d.routes,
            d.peers.len(),
            d.endpoints
        );
        for (prog, iface) in &d.attachments {
            let _ = writeln!(s, "  {prog:<12} on {iface}");
        }
        if !d.tunnel.is_empty() {
            let _ = writeln!(s, "  tunnel mode {}:", d.tunnel);
            for c in &d.carriage {
                let _ = writeln!(
                    s,
                    "    {:<16} {:<8} {}{}",
                    c.ip.to_string(),
                    if c.carriage == Carriage::Refused {
                        "REFUSED"
                    } else {
                        c.carriage.name()
                    },
                    c.why,
                    c.mac
                        .as_ref()
                        .map(|m| format!(", MAC {m}"))
                        .unwrap_or_default()
                );
            }
        }
        let _ = writeln!(s, "  counters:");
        for (name, v) in &d.counters {
            let _ = writeln!(s, "    {name:<26} {v}");
        }
        if let Some(e) = &self.encryption {
            s.push_str(&e.render());
        }
        if let Some(p) = &self.policy {
            s.push_str(&p.render());
        }
        s
    }
}
