//! What the kernel says of the underlay towards the peers, for direct
//! routing: the route to each peer's node IP (`ip route get`: through a
//! gateway or not, out of which interface) and the uplink's neighbour table
//! (which MAC answers for which peer). Not a pod's wiring: the node's own
//! view, in the caller's namespace.

use std::{collections::BTreeMap, net::Ipv4Addr};

use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle,
    packet_route::{
        AddressFamily,
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourState},
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
    },
};

use super::{
    NetlinkError,
    session::{CALLER_NETNS, on_host},
};

/// The kernel's route to one peer's node IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerRoute {
    /// The next hop when it is a gateway (`via`); `None` when the peer is
    /// reached on the link itself.
    pub gateway: Option<Ipv4Addr>,
    /// The output interface.
    pub oif: Option<u32>,
}

/// What [`survey`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Survey {
    /// Per peer: its route, or why there is none.
    pub routes: BTreeMap<Ipv4Addr, Result<PeerRoute, String>>,
    /// Neighbours on the uplink that have a MAC (any state but incomplete
    /// or failed), by IPv4 address.
    pub neighbours: BTreeMap<Ipv4Addr, [u8; 6]>,
}

/// Looks up the route to each of `peers`, asks the kernel to resolve the
/// MAC of each of `solicit` that has no usable neighbour entry on `uplink`
/// (a neighbour update with `NTF_USE`, which sends the ARP request as a
/// packet to the peer would), and lists the uplink's neighbours.
pub fn survey(
    uplink: u32,
    peers: &[Ipv4Addr],
    solicit: &[Ipv4Addr],
) -> Result<Survey, NetlinkError> {
    on_host(|h| async move {
        let mut out = Survey::default();
        for p in peers {
            out.routes.insert(*p, route_to(&h, *p).await);
        }
        out.neighbours = neighbours(&h, uplink).await?;
        let missing: Vec<Ipv4Addr> = solicit
            .iter()
            .filter(|p| !out.neighbours.contains_key(p))
            .copied()
            .collect();
        if missing.is_empty() {
            return Ok(out);
        }
        for p in &missing {
            // Best effort: a failure shows as the MAC staying unknown.
            let _ = resolve(&h, uplink, *p).await;
        }
        // An ARP round trip on one link takes well under this; what is
        // still missing is looked at again at the next survey. (A plain
        // sleep: this is the worker's own thread, and its runtime has no
        // timer.)
        std::thread::sleep(std::time::Duration::from_millis(100));
        out.neighbours = neighbours(&h, uplink).await?;
        Ok(out)
    })
}

async fn route_to(h: &Handle, peer: Ipv4Addr) -> Result<PeerRoute, String> {
    // A bare RTM_GETROUTE with only the destination, as `ip route get`
    // sends it (a strict-checking kernel refuses table, protocol, scope or
    // type in the header of a get).
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = 32;
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(peer)));
    let mut answers = h.route().get(msg).execute();
    let route = match answers.try_next().await {
        Ok(Some(r)) => r,
        Ok(None) => return Err("the kernel returned no route".to_owned()),
        Err(e) => return Err(format!("no route: {e}")),
    };
    if route.header.kind != RouteType::Unicast {
        return Err(format!("the route is of type {:?}", route.header.kind));
    }
    let mut out = PeerRoute {
        gateway: None,
        oif: None,
    };
    for a in &route.attributes {
        match a {
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => out.gateway = Some(*g),
            RouteAttribute::Oif(i) => out.oif = Some(*i),
            _ => {}
        }
    }
    Ok(out)
}

async fn neighbours(h: &Handle, uplink: u32) -> Result<BTreeMap<Ipv4Addr, [u8; 6]>, NetlinkError> {
    let dump = |source: rtnetlink::Error| NetlinkError::Dump {
        what: "neighbours",
        netns: CALLER_NETNS.to_owned(),
        source: Box::new(source),
    };
    let mut out = BTreeMap::new();
    let mut all = h
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute();
    while let Some(n) = all.try_next().await.map_err(dump)? {
        if n.header.ifindex != uplink
            || matches!(
                n.header.state,
                NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
            )
        {
            continue;
        }
        let mut ip = None;
        let mut mac = None;
        for a in &n.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(i)) => {
                    ip = Some(Ipv4Addr::from(i.octets()))
                }
                NeighbourAttribute::LinkLayerAddress(m) => {
                    mac = <[u8; 6]>::try_from(m.as_slice()).ok();
                }
                _ => {}
            }
        }
        if let (Some(ip), Some(mac)) = (ip, mac) {
            out.insert(ip, mac);
        }
    }
    Ok(out)
}

/// `NTF_USE` on a (possibly new) neighbour entry: the kernel treats it as
/// if a packet were queued to it, which starts resolution (an ARP request)
/// for an entry that has no MAC yet and re-confirms a stale one. The state
/// in the message is ignored with `NTF_USE`; `NUD_NONE` keeps it from
/// reading as a request for a permanent entry.
async fn resolve(h: &Handle, uplink: u32, peer: Ipv4Addr) -> Result<(), rtnetlink::Error> {
    h.neighbours()
        .add(uplink, peer.into())
        .state(NeighbourState::None)
        .flags(NeighbourFlags::Use)
        .replace()
        .execute()
        .await
}
