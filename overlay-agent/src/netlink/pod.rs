//! The pod end, configured through a socket inside the pod namespace:
//! up, `pod_ip/32`, a scope-link route to the gateway, the default route
//! through it, and a permanent neighbour entry for it.
//!
//! The gateway is a link-local address nobody owns; the permanent entry maps
//! it to the host end's MAC, so the pod never sends ARP for it and the host
//! needs neither an address on the veth nor proxy ARP.

use std::net::IpAddr;

use rtnetlink::{Handle, packet_route::neighbour::NeighbourState};

use super::{
    NetlinkError, PodLinkSpec,
    links::{self, fmt_mac},
    routes::Route,
};

/// Configures the pod end (index `ifindex`) of a fresh pair whose host end
/// has `host_mac`.
pub(super) async fn configure(
    pod: &Handle,
    spec: &PodLinkSpec<'_>,
    ifindex: u32,
    host_mac: [u8; 6],
    netns: &str,
) -> Result<(), NetlinkError> {
    let ifname = spec.pod_ifname;
    // Routes through a device that is down are refused (ENETDOWN).
    links::set_up(pod, ifindex, ifname, netns).await?;
    pod.address()
        .add(ifindex, IpAddr::V4(spec.pod_ip), 32)
        .execute()
        .await
        .map_err(|source| NetlinkError::AddAddress {
            addr: spec.pod_ip,
            ifname: ifname.to_owned(),
            netns: netns.to_owned(),
            source: source.into(),
        })?;
    gateway_route(spec, ifindex).add(pod, netns).await?;
    default_route(spec, ifindex).add(pod, netns).await?;
    pod.neighbours()
        .add(ifindex, IpAddr::V4(spec.gateway))
        .state(NeighbourState::Permanent)
        .link_layer_address(&host_mac)
        .execute()
        .await
        .map_err(|source| NetlinkError::AddNeighbour {
            ip: spec.gateway,
            lladdr: fmt_mac(&host_mac),
            ifname: ifname.to_owned(),
            netns: netns.to_owned(),
            source: source.into(),
        })
}

/// `gateway/32 dev pod_ifname scope link`.
pub(super) fn gateway_route<'a>(spec: &PodLinkSpec<'a>, ifindex: u32) -> Route<'a> {
    Route::Link {
        dst: spec.gateway,
        ifindex,
        ifname: spec.pod_ifname,
    }
}

/// `default via gateway dev pod_ifname`.
pub(super) fn default_route<'a>(spec: &PodLinkSpec<'a>, ifindex: u32) -> Route<'a> {
    Route::DefaultVia {
        gateway: spec.gateway,
        ifindex,
        ifname: spec.pod_ifname,
    }
}
