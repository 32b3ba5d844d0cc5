//! Per peer, how pod traffic crosses to it: VXLAN, direct (unencapsulated,
//! to the peer's MAC), or not at all (`--tunnel direct` and the peer is not
//! on-link). Pure logic over what the kernel said of the route to the peer
//! ([`crate::netlink::survey`]); the agent applies it to the routes map.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{config::TunnelMode, netlink::PeerRoute};

/// How often the agent asks the kernel again about the routes to its peers
/// and the uplink's neighbours ([`crate::agent::Agent::refresh_tunnels`]):
/// a route that changes under the agent changes the carriage within this,
/// and a peer's MAC resolved since the last look reaches the peer MAC map.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// How pod traffic to one peer is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Carriage {
    /// Unencapsulated, to the peer's MAC (`ROUTE_F_DIRECT`).
    Direct,
    /// VXLAN.
    Vxlan,
    /// Not routed: `--tunnel direct` and the peer is not on-link.
    Refused,
}

impl Carriage {
    /// `direct`, `vxlan` or `refused`, as status and metrics spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Vxlan => "vxlan",
            Self::Refused => "refused",
        }
    }
}

/// The decision for one peer and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCarriage {
    /// How its traffic is carried.
    pub carriage: Carriage,
    /// Why, for humans: `on-link`, `via gateway 192.0.2.1`, ...
    pub why: String,
}

/// Whether a peer is on-link: the route to its node IP has no gateway and
/// leaves through the uplink (where `from_pod` sends direct packets). `Err`
/// says why not.
pub fn on_link(route: &Result<PeerRoute, String>, uplink: u32) -> Result<(), String> {
    match route {
        Err(e) => Err(e.clone()),
        Ok(PeerRoute {
            gateway: Some(g), ..
        }) => Err(format!("its route goes via gateway {g}")),
        Ok(PeerRoute { oif: Some(o), .. }) if *o != uplink => Err(format!(
            "its route leaves through interface index {o}, not the uplink (index {uplink})"
        )),
        Ok(_) => Ok(()),
    }
}

/// The decision for one peer under `mode`.
pub fn decide(mode: TunnelMode, route: &Result<PeerRoute, String>, uplink: u32) -> PeerCarriage {
    let link = on_link(route, uplink);
    let (carriage, why) = match (mode, link) {
        (TunnelMode::Vxlan, _) => (Carriage::Vxlan, "--tunnel vxlan".to_owned()),
        (_, Ok(())) => (Carriage::Direct, "on-link".to_owned()),
        (TunnelMode::Auto, Err(why)) => (Carriage::Vxlan, format!("not on-link: {why}")),
        (TunnelMode::Direct, Err(why)) => (Carriage::Refused, format!("not on-link: {why}")),
    };
    PeerCarriage { carriage, why }
}

/// The peer MAC map to write: each peer's MAC as the neighbour table has
/// it now, else the one it had before (an entry the kernel aged out does
/// not make a live peer's packets drop until it is resolved again), for
/// peers of the topology only.
pub fn peer_macs(
    peers: &[Ipv4Addr],
    neighbours: &BTreeMap<Ipv4Addr, [u8; 6]>,
    before: &BTreeMap<Ipv4Addr, [u8; 6]>,
) -> BTreeMap<Ipv4Addr, [u8; 6]> {
    let mut out: BTreeMap<Ipv4Addr, [u8; 6]> = peers
        .iter()
        .filter_map(|p| {
            neighbours
                .get(p)
                .or_else(|| before.get(p))
                .map(|m| (*p, *m))
        })
        .collect();
    // Two peers behind one MAC (a proxy-ARP box, a misconfiguration) could
    // each send as the other: neither gets direct packets accepted.
    let mut seen: BTreeMap<[u8; 6], usize> = BTreeMap::new();
    for m in out.values() {
        *seen.entry(*m).or_default() += 1;
    }
    out.retain(|_, m| seen.get(m) == Some(&1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPLINK: u32 = 7;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    fn link() -> Result<PeerRoute, String> {
        Ok(PeerRoute {
            gateway: None,
            oif: Some(UPLINK),
        })
    }

    fn via(g: &str) -> Result<PeerRoute, String> {
        Ok(PeerRoute {
            gateway: Some(ip(g)),
            oif: Some(UPLINK),
        })
    }

    #[test]
    fn each_mode_carries_on_link_and_routed_peers_as_documented() {
        for (mode, on, off) in [
            (TunnelMode::Auto, Carriage::Direct, Carriage::Vxlan),
            (TunnelMode::Vxlan, Carriage::Vxlan, Carriage::Vxlan),
            (TunnelMode::Direct, Carriage::Direct, Carriage::Refused),
        ] {
            assert_eq!(
                decide(mode, &link(), UPLINK).carriage,
                on,
                "{mode:?} on-link"
            );
            assert_eq!(
                decide(mode, &via("172.31.0.254"), UPLINK).carriage,
                off,
                "{mode:?} via a gateway"
            );
            assert_eq!(
                decide(mode, &Err("no route: unreachable".into()), UPLINK).carriage,
                off,
                "{mode:?} without a route"
            );
        }
    }

    #[test]
    fn a_refused_peer_says_which_gateway_or_interface_is_in_the_way() {
        let d = decide(TunnelMode::Direct, &via("172.31.0.254"), UPLINK);
        assert_eq!(
            d.why,
            "not on-link: its route goes via gateway 172.31.0.254"
        );
        let other = Ok(PeerRoute {
            gateway: None,
            oif: Some(3),
        });
        let d = decide(TunnelMode::Direct, &other, UPLINK);
        assert_eq!(d.carriage, Carriage::Refused);
        assert!(d.why.contains("interface index 3"), "{}", d.why);
    }

    #[test]
    fn peer_macs_follow_the_neighbour_table_keep_aged_out_ones_and_skip_shared_ones() {
        let (a, b, c, stranger) = (
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            ip("10.0.0.3"),
            ip("10.0.0.9"),
        );
        let neigh = BTreeMap::from([(a, [1; 6]), (stranger, [9; 6])]);
        let before = BTreeMap::from([(a, [7; 6]), (b, [2; 6])]);
        let got = peer_macs(&[a, b, c], &neigh, &before);
        assert_eq!(
            got,
            BTreeMap::from([(a, [1; 6]), (b, [2; 6])]),
            "a: the table wins over the old MAC; b: kept; c: unknown; the stranger is no peer"
        );
        let shared = BTreeMap::from([(a, [5; 6]), (b, [5; 6]), (c, [3; 6])]);
        assert_eq!(
            peer_macs(&[a, b, c], &shared, &BTreeMap::new()),
            BTreeMap::from([(c, [3; 6])])
        );
    }
}
