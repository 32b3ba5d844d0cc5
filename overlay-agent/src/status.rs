//! Human-readable view of one node's datapath state.

use std::{fmt::Write as _, net::Ipv4Addr, path::Path};

use overlay_common::Stat;

use crate::{
    datapath::attachments,
    maps::{Maps, MapsError},
};

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Renders configuration, attachments, routes, peers, endpoints and every
/// counter of the datapath pinned at `pin_dir`.
pub fn render(pin_dir: &Path) -> Result<String, MapsError> {
    let maps = Maps::open(pin_dir)?;
    let cfg = maps.config()?;
    let mut s = String::new();
    let _ = writeln!(s, "Datapath pinned at {}", pin_dir.display());
    let _ = writeln!(
        s,
        "  node {}  uplink ifindex {}  VXLAN port {}  VNI {}  pod MTU {}  {}",
        Ipv4Addr::from(cfg.node_ip),
        cfg.uplink_ifindex,
        cfg.vxlan_port,
        cfg.vni,
        cfg.mtu,
        if cfg.flags & overlay_common::CONFIG_F_READY != 0 {
            "ready"
        } else {
            "NOT CONFIGURED (all traffic passes untouched)"
        }
    );
    let _ = writeln!(s, "\nAttachments (TC ingress):");
    for (prog, iface) in attachments(pin_dir) {
        let _ = writeln!(s, "  {iface:<16} {prog}");
    }
    let _ = writeln!(s, "\nRoutes (block -> node, carriage):");
    for (block, r) in maps.route_entries()? {
        let _ = writeln!(
            s,
            "  {:<18} {:<16} {}",
            block.to_string(),
            Ipv4Addr::from(r.node_ip).to_string(),
            if r.flags & overlay_common::ROUTE_F_DIRECT != 0 {
                "direct"
            } else {
                "vxlan"
            }
        );
    }
    let _ = writeln!(s, "\nPeers allowed to send VXLAN:");
    for peer in maps.peers()? {
        let _ = writeln!(s, "  {peer}");
    }
    let _ = writeln!(s, "\nPeer MACs (whose direct packets are accepted):");
    for (m, node) in maps.peer_macs()? {
        let _ = writeln!(s, "  {}  {node}", mac(m));
    }
    let _ = writeln!(
        s,
        "\nLocal endpoints (pod -> ifindex, pod MAC, gateway MAC):"
    );
    for e in maps.endpoints()? {
        let _ = writeln!(
            s,
            "  {:<16} {:<6} {}  {}",
            e.ip.to_string(),
            e.endpoint.ifindex,
            mac(e.endpoint.pod_mac),
            mac(e.endpoint.host_mac)
        );
    }
    let counters = maps.counters()?;
    let _ = writeln!(s, "\nCounters (packets):");
    for stat in Stat::ALL {
        let _ = writeln!(s, "  {:<26} {}", stat.name(), counters.get(stat));
    }
    Ok(s)
}
