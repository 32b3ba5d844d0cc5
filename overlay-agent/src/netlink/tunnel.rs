//! The GRO tunnel device: a flow-based (`external`, collect_md) Linux
//! `vxlan` device bound to our VXLAN port, up, with no addresses and no
//! routes, that carries no traffic of its own.
//!
//! Why it exists: the kernel's UDP GRO merges the segments of one inner
//! flow into one large packet only for a port with a UDP *tunnel* socket
//! (`udp4_gro_receive` calls the socket's `gro_receive`, here
//! `vxlan_gro_receive`). A vxlan device opens such a socket on its port when
//! it comes up. GRO runs in the uplink's receive path before TC ingress, so
//! `from_uplink` still sees, checks and decapsulates every VXLAN packet for
//! us, only merged: on a NIC that hands the stack MTU-sized frames, the pod
//! receives large packets as it does behind the kernel's own vxlan device.
//! Calico's eBPF mode keeps `vxlan.calico` for the same reason.
//!
//! The device must never deliver anything itself: `from_uplink` decides
//! every packet to our port, but while it is not attached (install order,
//! uninstall) the kernel would decapsulate into this device. So IPv4
//! forwarding is off and strict reverse-path filtering on for it (no route
//! points through it, so every source fails the check), and IPv6 is
//! disabled on it (no link-local address either).

use std::{fs, io, path::PathBuf};

use rtnetlink::{
    Handle, LinkUnspec, LinkVxlan,
    packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage},
};
use tracing::{info, warn};

use super::{
    NetlinkError,
    error::errno,
    links,
    session::{self, CALLER_NETNS},
};

/// Name of the GRO tunnel device. It does not match the `ovl` + 11 hex
/// digits of the pods' host veths, so pod garbage collection leaves it alone.
pub const GRO_DEVICE: &str = "ovl-gro";

/// What [`ensure_gro_device`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroDevice {
    /// There was none; it was created.
    Created,
    /// One with the right configuration was there and is kept.
    Kept,
    /// One with another configuration (kind, port, not flow-based) was
    /// there; it was deleted and created anew.
    Replaced,
    /// Another socket holds the port (e.g. another vxlan device on it, whose
    /// own tunnel socket then gives our frames GRO, or a plain UDP socket,
    /// which gives them none): no device, with a warning. The datapath
    /// works either way; only the merging depends on it.
    PortInUse,
}

/// Makes sure the caller's namespace has [`GRO_DEVICE`]: a flow-based vxlan
/// device on UDP `port`, up. Idempotent: a device with the right
/// configuration is kept (and brought up if it was down), one with a wrong
/// configuration is replaced with a warning. When another socket holds the
/// port the device cannot come up: it is removed again and
/// [`GroDevice::PortInUse`] returned, with a warning.
pub fn ensure_gro_device(port: u16) -> Result<GroDevice, NetlinkError> {
    let change = session::on_host(|host| async move {
        match links::by_name(&host, GRO_DEVICE, CALLER_NETNS).await? {
            Some(link) if is_gro_device(&link, port) => Ok(GroDevice::Kept),
            Some(link) => {
                warn!(
                    device = GRO_DEVICE,
                    port,
                    found = %describe(&link),
                    "{GRO_DEVICE} exists with another configuration: replacing it"
                );
                links::delete_by_name(&host, GRO_DEVICE, CALLER_NETNS).await?;
                create(&host, port).await?;
                Ok(GroDevice::Replaced)
            }
            None => {
                create(&host, port).await?;
                Ok(GroDevice::Created)
            }
        }
    })?;
    // Before it comes up, so it never has an IPv6 address or accepts a
    // packet with the defaults.
    harden()?;
    let up = session::on_host(|host| async move {
        let link = links::expect_by_name(&host, GRO_DEVICE, CALLER_NETNS).await?;
        if links::is_up(&link) {
            return Ok(true);
        }
        let set = host
            .link()
            .set(LinkUnspec::new_with_index(link.header.index).up().build())
            .execute()
            .await;
        match set {
            Ok(()) => Ok(true),
            // The vxlan driver opens its socket when the device comes up.
            Err(e) if errno(&e) == Some(libc::EADDRINUSE) => {
                links::delete_by_name(&host, GRO_DEVICE, CALLER_NETNS).await?;
                Ok(false)
            }
            Err(source) => Err(NetlinkError::SetUp {
                ifname: GRO_DEVICE.to_owned(),
                netns: CALLER_NETNS.to_owned(),
                source: source.into(),
            }),
        }
    })?;
    if !up {
        warn!(
            device = GRO_DEVICE,
            port,
            "UDP port {port} is taken by another socket (another vxlan device?): no \
             {GRO_DEVICE}; our VXLAN frames get GRO only if that socket is a tunnel socket"
        );
        return Ok(GroDevice::PortInUse);
    }
    if change != GroDevice::Kept {
        info!(
            device = GRO_DEVICE,
            port, "flow-based vxlan device up: tunnel GRO for our VXLAN port"
        );
    }
    Ok(change)
}

/// Deletes [`GRO_DEVICE`] from the caller's namespace; `false` when there
/// was none.
pub fn delete_gro_device() -> Result<bool, NetlinkError> {
    session::on_host(
        |host| async move { links::delete_by_name(&host, GRO_DEVICE, CALLER_NETNS).await },
    )
}

/// Deletes the interface `name` from the caller's namespace (the
/// WireGuard device's persistent TUN); `false` when there was none.
pub fn delete_device(name: &'static str) -> Result<bool, NetlinkError> {
    session::on_host(
        move |host| async move { links::delete_by_name(&host, name, CALLER_NETNS).await },
    )
}

/// Whether `link` is a flow-based vxlan device on `port`.
pub fn is_gro_device(link: &LinkMessage, port: u16) -> bool {
    let Some(data) = vxlan_data(link) else {
        return false;
    };
    let flow_based = data
        .iter()
        .any(|d| matches!(d, InfoVxlan::CollectMetadata(true)));
    let on_port = data
        .iter()
        .any(|d| matches!(d, InfoVxlan::Port(p) if *p == port));
    flow_based && on_port
}

fn vxlan_data(link: &LinkMessage) -> Option<&[InfoVxlan]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(d)) => Some(d.as_slice()),
            _ => None,
        }),
        _ => None,
    })
}

/// `kind K, port P, flow-based yes/no`, for the replacement warning.
fn describe(link: &LinkMessage) -> String {
    let kind = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Kind(k) => Some(k.to_string()),
                _ => None,
            }),
            _ => None,
        })
        .unwrap_or_else(|| "unknown".into());
    let data = vxlan_data(link).unwrap_or_default();
    let port = data.iter().find_map(|d| match d {
        InfoVxlan::Port(p) => Some(p.to_string()),
        _ => None,
    });
    let flow_based = data
        .iter()
        .any(|d| matches!(d, InfoVxlan::CollectMetadata(true)));
    format!(
        "kind {kind}, port {}, flow-based {}",
        port.as_deref().unwrap_or("none"),
        if flow_based { "yes" } else { "no" }
    )
}

/// `ip link add ovl-gro type vxlan dstport PORT external nolearning`,
/// left down.
async fn create(host: &Handle, port: u16) -> Result<(), NetlinkError> {
    let msg = rtnetlink::LinkMessageBuilder::<LinkVxlan>::new(GRO_DEVICE)
        .port(port)
        .collect_metadata(true)
        .learning(false)
        .build();
    host.link()
        .add(msg)
        .execute()
        .await
        .map_err(|source| NetlinkError::CreateVxlan {
            ifname: GRO_DEVICE.to_owned(),
            port,
            netns: CALLER_NETNS.to_owned(),
            source: source.into(),
        })
}

/// The device's sysctls: no IPv6, no IPv4 forwarding from it, strict
/// reverse-path filtering. `/proc/sys/net` shows the namespace of the
/// calling thread.
fn harden() -> Result<(), NetlinkError> {
    let write = |path: String, value: &str, optional: bool| {
        let path = PathBuf::from(path);
        match fs::write(&path, value) {
            Ok(()) => Ok(()),
            // No IPv6 in this kernel or namespace: nothing to disable.
            Err(e) if optional && e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NetlinkError::Sysctl { path, source }),
        }
    };
    write(
        format!("/proc/sys/net/ipv6/conf/{GRO_DEVICE}/disable_ipv6"),
        "1",
        true,
    )?;
    write(
        format!("/proc/sys/net/ipv4/conf/{GRO_DEVICE}/forwarding"),
        "0",
        false,
    )?;
    write(
        format!("/proc/sys/net/ipv4/conf/{GRO_DEVICE}/rp_filter"),
        "1",
        false,
    )
}
