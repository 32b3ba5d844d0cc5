//! Interfaces by name: look up, list, bring up, delete, and read the facts
//! the wiring cares about from a link message.

use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkUnspec,
    packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
};

use super::{NetlinkError, error::errno};

/// The interface called `ifname`, or `None` if there is none.
pub(super) async fn by_name(
    handle: &Handle,
    ifname: &str,
    netns: &str,
) -> Result<Option<LinkMessage>, NetlinkError> {
    let found = handle
        .link()
        .get()
        .match_name(ifname)
        .execute()
        .try_next()
        .await;
    match found {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(source) => Err(NetlinkError::GetLink {
            ifname: ifname.to_owned(),
            netns: netns.to_owned(),
            source: source.into(),
        }),
    }
}

/// Like [`by_name`], for an interface this call created and so expects.
pub(super) async fn expect_by_name(
    handle: &Handle,
    ifname: &str,
    netns: &str,
) -> Result<LinkMessage, NetlinkError> {
    by_name(handle, ifname, netns)
        .await?
        .ok_or_else(|| NetlinkError::LinkGone {
            ifname: ifname.to_owned(),
            netns: netns.to_owned(),
        })
}

/// Names of all interfaces.
pub(super) async fn names(handle: &Handle, netns: &str) -> Result<Vec<String>, NetlinkError> {
    let links: Vec<LinkMessage> =
        super::session::collect("interfaces", netns, handle.link().get().execute()).await?;
    Ok(links
        .iter()
        .filter_map(|l| name(l).map(str::to_owned))
        .collect())
}

/// Sets the interface administratively up.
pub(super) async fn set_up(
    handle: &Handle,
    index: u32,
    ifname: &str,
    netns: &str,
) -> Result<(), NetlinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|source| NetlinkError::SetUp {
            ifname: ifname.to_owned(),
            netns: netns.to_owned(),
            source: source.into(),
        })
}

/// Deletes the interface called `ifname`; `false` if there was none.
pub(super) async fn delete_by_name(
    handle: &Handle,
    ifname: &str,
    netns: &str,
) -> Result<bool, NetlinkError> {
    let Some(link) = by_name(handle, ifname, netns).await? else {
        return Ok(false);
    };
    match handle.link().del(link.header.index).execute().await {
        Ok(()) => Ok(true),
        // Gone between the lookup and the delete: someone else did it.
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(source) => Err(NetlinkError::DeleteLink {
            ifname: ifname.to_owned(),
            netns: netns.to_owned(),
            source: source.into(),
        }),
    }
}

/// The interface's name.
pub(super) fn name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// The interface's MAC address, if it has an Ethernet one.
pub(super) fn mac(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => bytes.as_slice().try_into().ok(),
        _ => None,
    })
}

/// [`mac`], for a veth this call created, which always has one.
pub(super) fn expect_mac(
    link: &LinkMessage,
    ifname: &str,
    netns: &str,
) -> Result<[u8; 6], NetlinkError> {
    mac(link).ok_or_else(|| NetlinkError::NoMac {
        ifname: ifname.to_owned(),
        netns: netns.to_owned(),
    })
}

/// The interface's MTU.
pub(super) fn mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

/// Whether the interface is administratively up.
pub(super) fn is_up(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Up)
}

/// Whether the interface is a veth.
pub(super) fn is_veth(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))),
        _ => false,
    })
}

/// `aa:bb:cc:dd:ee:ff`.
pub(super) fn fmt_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}
