//! The veth pair itself: host end in the caller's namespace, peer created
//! directly inside the pod namespace under its final name.
//!
//! The peer carries `IFLA_NET_NS_FD` in its own `ifinfomsg` inside
//! `VETH_INFO_PEER`, as `ip link add ... type veth peer name eth0 netns X`
//! does, so the pod interface never exists under a temporary name or in the
//! wrong namespace, and there is no rename step to fail halfway.

use std::os::fd::AsRawFd as _;

use rtnetlink::{
    Handle, LinkMessageBuilder, LinkUnspec, LinkVeth,
    packet_route::link::{InfoData, InfoKind, InfoVeth},
};

use super::{NetlinkError, PodLinkSpec, session::PodNetns};

/// Creates the pair, both ends with `spec.mtu`, both still down.
pub(super) async fn create(
    host: &Handle,
    spec: &PodLinkSpec<'_>,
    pod_netns: &PodNetns<'_>,
) -> Result<(), NetlinkError> {
    let peer = LinkUnspec::new_with_name(spec.pod_ifname)
        .mtu(spec.mtu)
        .setns_by_fd(pod_netns.file.as_raw_fd())
        .build();
    let pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(spec.host_ifname)
        .mtu(spec.mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    host.link()
        .add(pair)
        .execute()
        .await
        .map_err(|source| NetlinkError::CreateVeth {
            host_ifname: spec.host_ifname.to_owned(),
            pod_ifname: spec.pod_ifname.to_owned(),
            netns: pod_netns.path.to_owned(),
            source: source.into(),
        })
}
