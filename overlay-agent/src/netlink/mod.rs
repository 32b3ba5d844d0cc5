//! Pod wiring over rtnetlink: veth pairs, addresses, routes, neighbours.
//!
//! Every call is synchronous and may come from any thread, a tokio worker
//! included: the netlink work runs on a dedicated OS thread with its own
//! current-thread runtime (`session.rs`). "The caller's netns" is the network
//! namespace of the calling *thread*, so a caller inside
//! [`crate::netns::run_in`] wires pods of that namespace.
//!
//! What a wired pod looks like (`ip` notation, gateway 169.254.1.1):
//!
//! ```text
//! pod netns:    eth0  mtu M up, 10.32.1.5/32
//!               169.254.1.1 dev eth0 scope link
//!               default via 169.254.1.1 dev eth0
//!               neigh 169.254.1.1 lladdr <host veth MAC> PERMANENT
//! caller netns: <host_ifname> (veth) mtu M up
//!               10.32.1.5 dev <host_ifname> scope link
//! ```
//!
//! Files by job: `create.rs` (order and rollback), `veth.rs` (the pair),
//! `pod.rs` and `host.rs` (each end's configuration; `host.rs` also deletes
//! and lists), `check.rs` (read everything back), `routes.rs` and
//! `links.rs` (shared helpers), `session.rs` (thread, runtime, sockets),
//! `tunnel.rs` (the node's GRO tunnel device, not a pod's), `underlay.rs`
//! (routes and neighbours towards the peers, for direct routing),
//! `error.rs`.

mod check;
mod create;
mod error;
mod host;
mod links;
mod pod;
mod routes;
mod session;
mod tunnel;
mod underlay;
mod veth;

use std::{net::Ipv4Addr, path::Path};

pub use self::{
    check::check_pod_link,
    create::create_pod_link,
    error::NetlinkError,
    host::{delete_pod_link, host_links_with_prefix},
    tunnel::{GRO_DEVICE, GroDevice, delete_device, delete_gro_device, ensure_gro_device},
    underlay::{PeerRoute, Survey, survey},
};

/// What to wire for one pod interface.
#[derive(Clone, Copy, Debug)]
pub struct PodLinkSpec<'a> {
    /// Host-side veth name (at most 15 bytes), in the caller's namespace.
    pub host_ifname: &'a str,
    /// The pod's network namespace, e.g. `/proc/123/ns/net` or
    /// `/run/netns/x`.
    pub pod_netns: &'a Path,
    /// The pod-side interface name (`CNI_IFNAME`, e.g. `eth0`).
    pub pod_ifname: &'a str,
    /// The pod's address, configured as `pod_ip/32`.
    pub pod_ip: Ipv4Addr,
    /// The link-local gateway the pod routes through,
    /// [`overlay_common::POD_GATEWAY`].
    pub gateway: Ipv4Addr,
    /// MTU of both ends.
    pub mtu: u32,
}

impl PodLinkSpec<'_> {
    fn validate(&self) -> Result<(), NetlinkError> {
        check_ifname(self.host_ifname)?;
        check_ifname(self.pod_ifname)
    }
}

/// A wired pod interface: both ends' indexes and MAC addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodLink {
    /// Interface index of the host end, in the caller's namespace.
    pub host_ifindex: u32,
    /// MAC address of the host end (what the pod's gateway neighbour
    /// entry points to).
    pub host_mac: [u8; 6],
    /// Interface index of the pod end, in the pod namespace.
    pub pod_ifindex: u32,
    /// MAC address of the pod end.
    pub pod_mac: [u8; 6],
}

/// Refuses names the kernel would (`dev_valid_name`): empty, longer than
/// `IFNAMSIZ - 1`, `.`/`..`, or containing `/`, `:`, NUL or whitespace.
fn check_ifname(ifname: &str) -> Result<(), NetlinkError> {
    let valid = !ifname.is_empty()
        && ifname.len() < libc::IFNAMSIZ
        && ifname != "."
        && ifname != ".."
        && !ifname
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if valid {
        Ok(())
    } else {
        Err(NetlinkError::InvalidIfname {
            ifname: ifname.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_the_kernel_refuses_are_refused_up_front() {
        for ok in ["eth0", "ovl1234567890ab", "a"] {
            assert!(check_ifname(ok).is_ok(), "{ok:?} must be accepted");
        }
        for bad in ["", "ovl1234567890abc", "a/b", "a:b", "a b", ".", ".."] {
            assert!(
                matches!(check_ifname(bad), Err(NetlinkError::InvalidIfname { .. })),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn calls_work_from_inside_an_async_runtime() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime");
        let names = runtime
            .block_on(async { host_links_with_prefix("lo") })
            .expect("listing interfaces");
        assert!(names.iter().any(|n| n == "lo"), "{names:?}");
    }

    #[test]
    fn a_missing_pod_netns_is_reported_before_any_netlink_work() {
        let spec = PodLinkSpec {
            host_ifname: "ovltest0",
            pod_netns: Path::new("/nonexistent/ns/net"),
            pod_ifname: "eth0",
            pod_ip: Ipv4Addr::new(10, 32, 1, 5),
            gateway: Ipv4Addr::new(169, 254, 1, 1),
            mtu: 1450,
        };
        let e = create_pod_link(&spec).expect_err("netns does not exist");
        assert!(
            matches!(&e, NetlinkError::NetnsMissing { path, .. } if path == spec.pod_netns),
            "{e:?}"
        );
        let e = check_pod_link(&spec).expect_err("netns does not exist");
        assert!(matches!(e, NetlinkError::NetnsMissing { .. }), "{e:?}");
    }
}
