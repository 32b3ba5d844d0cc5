//! `check_pod_link`: everything `create_pod_link` made, read back.

use std::net::{IpAddr, Ipv4Addr};

use rtnetlink::{
    Handle,
    packet_route::{
        AddressFamily,
        address::{AddressAttribute, AddressMessage},
        link::{LinkAttribute, LinkMessage},
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    },
};

use super::{
    NetlinkError, PodLink, PodLinkSpec, host, links, pod,
    session::{self, CALLER_NETNS, PodNetns},
};

/// Verifies that the wiring [`create_pod_link`](super::create_pod_link)
/// makes for `spec` is all there: the host veth (up, MTU, peer is the pod
/// interface) and its `/32` route to the pod; the pod interface (up, MTU),
/// its `/32` address, the route to the gateway, the default route and the
/// permanent neighbour entry for the gateway with the host end's MAC.
///
/// The first thing missing or different is a [`NetlinkError::Check`]
/// naming it.
pub fn check_pod_link(spec: &PodLinkSpec<'_>) -> Result<PodLink, NetlinkError> {
    spec.validate()?;
    let netns = &PodNetns::open(spec.pod_netns)?;
    session::with_pod(netns, |host, pod| async move {
        check(&host, &pod, spec, &netns.label()).await
    })
}

async fn check(
    host: &Handle,
    pod: &Handle,
    spec: &PodLinkSpec<'_>,
    netns: &str,
) -> Result<PodLink, NetlinkError> {
    let host_link = present_link(host, spec.host_ifname, CALLER_NETNS).await?;
    ensure(links::is_veth(&host_link), || {
        format!(
            "host interface {} in {CALLER_NETNS} is not a veth",
            spec.host_ifname
        )
    })?;
    check_up_and_mtu(&host_link, spec.host_ifname, CALLER_NETNS, spec.mtu)?;
    let pod_link = present_link(pod, spec.pod_ifname, netns).await?;
    check_up_and_mtu(&pod_link, spec.pod_ifname, netns, spec.mtu)?;
    let link = PodLink {
        host_ifindex: host_link.header.index,
        host_mac: links::expect_mac(&host_link, spec.host_ifname, CALLER_NETNS)?,
        pod_ifindex: pod_link.header.index,
        pod_mac: links::expect_mac(&pod_link, spec.pod_ifname, netns)?,
    };
    // A veth reports its peer's index as IFLA_LINK, even across namespaces.
    let peer = host_link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Link(i) => Some(*i),
        _ => None,
    });
    ensure(peer == Some(link.pod_ifindex), || {
        format!(
            "peer of {} in {CALLER_NETNS} is ifindex {peer:?}, not {} ({} in {netns})",
            spec.host_ifname, link.pod_ifindex, spec.pod_ifname
        )
    })?;

    let host_routes = super::routes::dump(host, CALLER_NETNS).await?;
    let route = host::pod_route(spec, link.host_ifindex);
    ensure(route.is_in(&host_routes), || {
        format!("route {route} in {CALLER_NETNS} is missing")
    })?;

    let addresses = addresses(pod, link.pod_ifindex, netns).await?;
    ensure(has_address(&addresses, spec.pod_ip), || {
        format!(
            "address {}/32 on {} in {netns} is missing",
            spec.pod_ip, spec.pod_ifname
        )
    })?;
    let pod_routes = super::routes::dump(pod, netns).await?;
    for route in [
        pod::gateway_route(spec, link.pod_ifindex),
        pod::default_route(spec, link.pod_ifindex),
    ] {
        ensure(route.is_in(&pod_routes), || {
            format!("route {route} in {netns} is missing")
        })?;
    }
    let neighbours = neighbours(pod, netns).await?;
    ensure(
        has_permanent_neighbour(&neighbours, link.pod_ifindex, spec.gateway, link.host_mac),
        || {
            format!(
                "permanent neighbour {} lladdr {} on {} in {netns} is missing",
                spec.gateway,
                links::fmt_mac(&link.host_mac),
                spec.pod_ifname
            )
        },
    )?;
    Ok(link)
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), NetlinkError> {
    if ok {
        Ok(())
    } else {
        Err(NetlinkError::Check { what: what() })
    }
}

async fn present_link(
    handle: &Handle,
    ifname: &str,
    netns: &str,
) -> Result<LinkMessage, NetlinkError> {
    links::by_name(handle, ifname, netns)
        .await?
        .ok_or_else(|| NetlinkError::Check {
            what: format!("interface {ifname} in {netns} is missing"),
        })
}

fn check_up_and_mtu(
    link: &LinkMessage,
    ifname: &str,
    netns: &str,
    want: u32,
) -> Result<(), NetlinkError> {
    ensure(links::is_up(link), || {
        format!("interface {ifname} in {netns} is down")
    })?;
    let mtu = links::mtu(link);
    ensure(mtu == Some(want), || {
        format!("MTU of {ifname} in {netns} is {mtu:?}, want {want}")
    })
}

async fn addresses(
    handle: &Handle,
    ifindex: u32,
    netns: &str,
) -> Result<Vec<AddressMessage>, NetlinkError> {
    let dump = handle
        .address()
        .get()
        .set_link_index_filter(ifindex)
        .execute();
    session::collect("addresses", netns, dump).await
}

fn has_address(addresses: &[AddressMessage], ip: Ipv4Addr) -> bool {
    addresses.iter().any(|a| {
        a.header.prefix_len == 32
            && a.attributes.iter().any(
                |attr| matches!(attr, AddressAttribute::Local(local) if *local == IpAddr::V4(ip)),
            )
    })
}

async fn neighbours(handle: &Handle, netns: &str) -> Result<Vec<NeighbourMessage>, NetlinkError> {
    let dump = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute();
    session::collect("neighbours", netns, dump).await
}

fn has_permanent_neighbour(
    neighbours: &[NeighbourMessage],
    ifindex: u32,
    ip: Ipv4Addr,
    mac: [u8; 6],
) -> bool {
    neighbours.iter().any(|n| {
        n.header.ifindex == ifindex
            && n.header.state == NeighbourState::Permanent
            && n.attributes.iter().any(
                |a| matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) if *d == ip),
            )
            && n.attributes.iter().any(
                |a| matches!(a, NeighbourAttribute::LinkLayerAddress(l) if l.as_slice() == mac),
            )
    })
}
