//! What can go wrong while wiring a pod, one variant per operation.

use std::{io, net::Ipv4Addr, path::PathBuf};

/// A pod wiring operation that failed. Every variant names the operation
/// and the object; netlink failures keep the kernel's answer as the source,
/// boxed because an `rtnetlink::Error` can carry a whole netlink message.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// An interface name the kernel would refuse.
    #[error("interface name {ifname:?} is not 1 to 15 bytes without '/', ':', NUL or whitespace")]
    InvalidIfname {
        /// The name.
        ifname: String,
    },
    /// The pod network namespace file could not be opened.
    #[error("opening pod network namespace {path}")]
    NetnsMissing {
        /// The namespace path.
        path: PathBuf,
        /// Why it could not be opened.
        #[source]
        source: io::Error,
    },
    /// `setns` into the pod network namespace failed.
    #[error("entering pod network namespace {path}")]
    EnterNetns {
        /// The namespace path.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },
    /// Going back to the caller's namespace after opening the pod's socket
    /// failed.
    #[error("returning to the caller's network namespace from {path}")]
    LeaveNetns {
        /// The pod namespace path.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },
    /// The worker thread, its runtime or its netlink socket could not be set
    /// up.
    #[error("starting the netlink worker ({step}) for {netns}")]
    Worker {
        /// Which step failed.
        step: &'static str,
        /// The namespace the worker was for.
        netns: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The pod interface name is already in use inside the pod namespace.
    #[error("interface {ifname} already exists in pod network namespace {netns}")]
    PodIfnameTaken {
        /// The pod interface name.
        ifname: String,
        /// The pod namespace path.
        netns: PathBuf,
    },
    /// Looking an interface up by name failed (other than "no such device").
    #[error("looking up interface {ifname} in {netns}")]
    GetLink {
        /// The interface.
        ifname: String,
        /// The namespace.
        netns: String,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// An interface this call just created is no longer there.
    #[error("interface {ifname} in {netns} disappeared while it was being wired")]
    LinkGone {
        /// The interface.
        ifname: String,
        /// The namespace.
        netns: String,
    },
    /// An interface this call created reports no Ethernet address.
    #[error("interface {ifname} in {netns} has no MAC address")]
    NoMac {
        /// The interface.
        ifname: String,
        /// The namespace.
        netns: String,
    },
    /// Dumping a kernel table (links, addresses, routes, neighbours) failed.
    #[error("listing {what} in {netns}")]
    Dump {
        /// The table.
        what: &'static str,
        /// The namespace.
        netns: String,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// Creating the veth pair failed.
    #[error("creating veth {host_ifname} with peer {pod_ifname} in {netns}")]
    CreateVeth {
        /// Host end, in the caller's namespace.
        host_ifname: String,
        /// Pod end.
        pod_ifname: String,
        /// The pod namespace path.
        netns: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// Deleting an interface failed.
    #[error("deleting interface {ifname} in {netns}")]
    DeleteLink {
        /// The interface.
        ifname: String,
        /// The namespace.
        netns: String,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// Bringing an interface up failed.
    #[error("bringing up interface {ifname} in {netns}")]
    SetUp {
        /// The interface.
        ifname: String,
        /// The namespace.
        netns: String,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// Adding the pod address failed.
    #[error("adding address {addr}/32 to {ifname} in {netns}")]
    AddAddress {
        /// The address.
        addr: Ipv4Addr,
        /// The interface.
        ifname: String,
        /// The namespace.
        netns: String,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// Adding a route failed.
    #[error("adding route {route} in {netns}")]
    AddRoute {
        /// The route, as `ip route` would print it.
        route: String,
        /// The namespace.
        netns: String,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// Adding the permanent neighbour entry for the gateway failed.
    #[error("adding permanent neighbour {ip} lladdr {lladdr} on {ifname} in {netns}")]
    AddNeighbour {
        /// The neighbour's address.
        ip: Ipv4Addr,
        /// Its MAC address, `aa:bb:cc:dd:ee:ff`.
        lladdr: String,
        /// The interface.
        ifname: String,
        /// The namespace.
        netns: String,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// Creating the GRO tunnel device failed.
    #[error("creating the flow-based vxlan device {ifname} on UDP port {port} in {netns}")]
    CreateVxlan {
        /// The device.
        ifname: String,
        /// Its UDP port.
        port: u16,
        /// The namespace.
        netns: String,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// A sysctl of the GRO tunnel device could not be written.
    #[error("writing {path}")]
    Sysctl {
        /// The `/proc/sys` file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// [`check_pod_link`](super::check_pod_link) found something missing or
    /// different from what [`create_pod_link`](super::create_pod_link)
    /// makes.
    #[error("pod wiring check: {what}")]
    Check {
        /// Exactly what is missing or wrong, e.g.
        /// `address 10.32.1.5/32 on eth0 in /proc/1/ns/net is missing`.
        what: String,
    },
}

/// The errno of a netlink NACK, as a positive number.
pub(super) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().abs()),
        _ => None,
    }
}
