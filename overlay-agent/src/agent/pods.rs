//! ADD, DEL, CHECK and GC: wiring pods up and down.
//!
//! ADD runs its steps in this order and undoes the finished ones in reverse
//! if a later one fails: address (persisted first, so it can never be given
//! to two pods), veth pair and pod configuration, `from_pod` attachment,
//! endpoint map entry. DEL runs the reverse and releases the address last,
//! so an address is free only once nothing uses it. Every step of both is
//! idempotent: a DEL or ADD repeated after a crash at any point finishes
//! the job.

use std::{collections::BTreeSet, net::Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use overlay_common::{Endpoint, POD_GATEWAY, PROG_FROM_POD, PROG_TO_POD};
use tracing::{info, warn};

use super::{Agent, State};
use crate::{
    api::{CheckRequest, DelRequest, PodRequest},
    cni::{AddResult, Attachment, CniError, Interface, IpConfig, RouteEntry, code, error::chain},
    datapath,
    ipam::IpamError,
    netlink::{self, NetlinkError, PodLink, PodLinkSpec},
};

/// Prefix of every host-side pod veth.
pub const HOST_IF_PREFIX: &str = "ovl";

/// The host-side veth name of a pod interface: `ovl` and 11 hex digits of
/// a hash of container ID and interface name, so DEL finds it without any
/// state, even when the pod's namespace is gone.
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    // FNV-1a, 64 bits; 44 of them are kept.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{HOST_IF_PREFIX}{:011x}", h >> 20)
}

/// Whether `name` has the shape of [`host_ifname`]'s names, so GC never
/// touches an interface someone else named `ovl...`.
pub fn is_host_ifname(name: &str) -> bool {
    name.strip_prefix(HOST_IF_PREFIX).is_some_and(|h| {
        h.len() == 11
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn gateway() -> Ipv4Addr {
    Ipv4Addr::from(POD_GATEWAY)
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

fn io_error(what: &str, err: &dyn std::error::Error) -> CniError {
    CniError::new(code::IO_FAILURE, format!("{what}: {err}")).with_details(chain(err))
}

fn netlink_error(err: NetlinkError) -> CniError {
    match &err {
        NetlinkError::NetnsMissing { .. } => {
            CniError::new(code::UNKNOWN_CONTAINER, err.to_string()).with_details(chain(&err))
        }
        NetlinkError::PodIfnameTaken { .. } => {
            CniError::new(code::INTERFACE_EXISTS, err.to_string()).with_details(chain(&err))
        }
        _ => io_error("wiring the pod", &err),
    }
}

fn ipam_error(err: IpamError) -> CniError {
    match &err {
        IpamError::NoBlocks => CniError::new(code::TRY_AGAIN_LATER, err.to_string()),
        IpamError::Exhausted { .. } => CniError::new(code::NO_ADDRESS, err.to_string()),
        IpamError::InvalidId { .. } => CniError::env(err.to_string()),
        _ => io_error("allocating an address", &err),
    }
}

impl Agent {
    pub(super) fn add(&self, req: &PodRequest) -> Result<AddResult, CniError> {
        let mut state = self.lock();
        // Not ready (starting, or no settled block yet): the runtime is to
        // try again later, as the specification's code 11 says; the
        // conflist is not even written until then, so only a runtime that
        // calls without one gets here.
        self.readiness(&state)
            .map_err(|e| CniError::new(code::TRY_AGAIN_LATER, e.msg))?;
        let host_if = host_ifname(&req.container_id, &req.ifname);
        let pod = req.pod.as_ref().map(ToString::to_string);
        let existed = state.ipam.get(&req.container_id, &req.ifname).is_some();
        if existed {
            // The same ADD again (a retry after a timeout or a crash): undo
            // what the first one left, keep its address.
            self.unwire(&mut state, &host_if, None)?;
        }
        let alloc = state
            .ipam
            .allocate(&req.container_id, &req.ifname, pod.as_deref())
            .map_err(ipam_error)?;
        match self.wire(&mut state, req, &host_if, alloc.ip) {
            Ok(link) => {
                info!(
                    container_id = %req.container_id,
                    pod = pod.as_deref().unwrap_or("-"),
                    ip = %alloc.ip,
                    host_if = %host_if,
                    "pod added"
                );
                Ok(self.result(req, &host_if, alloc.ip, &link))
            }
            Err(e) => {
                // Nothing half-made: the address goes back too.
                if let Err(release) = state.ipam.release(&req.container_id, &req.ifname) {
                    warn!(error = %chain(&release), "releasing the address of a failed ADD");
                }
                Err(e)
            }
        }
    }

    /// Creates the veth pair, attaches `from_pod`, records the endpoint;
    /// undoes its own steps on failure.
    fn wire(
        &self,
        state: &mut State,
        req: &PodRequest,
        host_if: &str,
        ip: Ipv4Addr,
    ) -> Result<PodLink, CniError> {
        let spec = PodLinkSpec {
            host_ifname: host_if,
            pod_netns: &req.netns,
            pod_ifname: &req.ifname,
            pod_ip: ip,
            gateway: gateway(),
            mtu: self.pod_mtu,
        };
        let link = netlink::create_pod_link(&spec).map_err(netlink_error)?;
        let attached = state
            .datapath
            .attach_pod(host_if)
            .map_err(|e| io_error("attaching from_pod", &e))
            .and_then(|()| {
                let ep = Endpoint {
                    ifindex: link.host_ifindex,
                    pod_mac: link.pod_mac,
                    host_mac: link.host_mac,
                    flags: 0,
                };
                state
                    .maps
                    .upsert_endpoint(ip, &ep)
                    .map_err(|e| io_error("recording the endpoint", &e))
            });
        if let Err(e) = attached {
            let _ = self.unwire(state, host_if, Some(ip));
            return Err(e);
        }
        Ok(link)
    }

    /// Removes the endpoint entry (if `ip` is known), the attachment and
    /// the veth pair. Idempotent.
    fn unwire(
        &self,
        state: &mut State,
        host_if: &str,
        ip: Option<Ipv4Addr>,
    ) -> Result<(), CniError> {
        if let Some(ip) = ip {
            state
                .maps
                .remove_endpoint(ip)
                .map_err(|e| io_error("removing the endpoint", &e))?;
        }
        datapath::detach(&self.config.pin_dir, host_if)
            .map_err(|e| io_error("detaching from_pod", &e))?;
        netlink::delete_pod_link(host_if).map_err(|e| io_error("deleting the veth pair", &e))?;
        Ok(())
    }

    fn result(&self, req: &PodRequest, host_if: &str, ip: Ipv4Addr, link: &PodLink) -> AddResult {
        let gw = gateway().into();
        AddResult {
            interfaces: vec![
                Interface {
                    name: host_if.to_owned(),
                    mac: mac_string(link.host_mac),
                    sandbox: None,
                    mtu: Some(self.pod_mtu),
                },
                Interface {
                    name: req.ifname.clone(),
                    mac: mac_string(link.pod_mac),
                    sandbox: Some(req.netns.display().to_string()),
                    mtu: Some(self.pod_mtu),
                },
            ],
            ips: vec![IpConfig {
                address: IpNet::V4(Ipv4Net::from(ip)),
                gateway: Some(gw),
                interface: Some(1),
            }],
            routes: vec![RouteEntry {
                dst: "0.0.0.0/0".parse().expect("constant"),
                gw: Some(gw),
            }],
            dns: req.dns.clone(),
        }
    }

    pub(super) fn del(&self, req: &DelRequest) -> Result<(), CniError> {
        let mut state = self.lock();
        self.del_locked(&mut state, &req.container_id, &req.ifname)?;
        info!(
            container_id = %req.container_id,
            pod = req.pod.as_ref().map(ToString::to_string).as_deref().unwrap_or("-"),
            "pod deleted"
        );
        Ok(())
    }

    fn del_locked(
        &self,
        state: &mut State,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), CniError> {
        let host_if = host_ifname(container_id, ifname);
        let ip = state.ipam.get(container_id, ifname).map(|a| a.ip);
        self.unwire(state, &host_if, ip)?;
        state
            .ipam
            .release(container_id, ifname)
            .map_err(|e| io_error("releasing the address", &e))?;
        Ok(())
    }

    pub(super) fn check(&self, req: &CheckRequest) -> Result<(), CniError> {
        let state = self.lock();
        let failed = |what: String| CniError::new(code::CHECK_FAILED, what);
        let alloc = state
            .ipam
            .get(&req.container_id, &req.ifname)
            .ok_or_else(|| {
                CniError::new(
                    code::UNKNOWN_CONTAINER,
                    format!(
                        "no address is allocated to container {} interface {}: was it added?",
                        req.container_id, req.ifname
                    ),
                )
            })?;
        let ip = alloc.ip;
        let want = IpNet::V4(Ipv4Net::from(ip));
        if !req.prev_result.ips.iter().any(|c| c.address == want) {
            return Err(failed(format!(
                "prevResult does not list {want}, the address the agent allocated"
            )));
        }
        let host_if = host_ifname(&req.container_id, &req.ifname);
        let spec = PodLinkSpec {
            host_ifname: &host_if,
            pod_netns: &req.netns,
            pod_ifname: &req.ifname,
            pod_ip: ip,
            gateway: gateway(),
            mtu: self.pod_mtu,
        };
        let link = netlink::check_pod_link(&spec).map_err(|e| match e {
            NetlinkError::NetnsMissing { .. } => netlink_error(e),
            e => failed(format!(
                "the pod's interfaces are not as ADD made them: {e}"
            ))
            .with_details(chain(&e)),
        })?;
        let endpoint = state
            .maps
            .endpoint(ip)
            .map_err(|e| io_error("reading the endpoint", &e))?;
        match endpoint {
            Some(e) if e.ifindex == link.host_ifindex => {}
            Some(e) => {
                return Err(failed(format!(
                    "endpoint {ip} points at ifindex {}, not {host_if} ({})",
                    e.ifindex, link.host_ifindex
                )));
            }
            None => {
                return Err(failed(format!(
                    "no endpoint entry for {ip} in ovl_endpoints_v1"
                )));
            }
        }
        let attached = datapath::attachments(&self.config.pin_dir)
            .into_iter()
            .any(|(prog, iface)| prog == PROG_FROM_POD && iface == host_if);
        if !attached {
            return Err(failed(format!(
                "{PROG_FROM_POD} is not attached to {host_if}"
            )));
        }
        Ok(())
    }

    pub(super) fn gc(&self, valid: &[Attachment]) -> Result<(), CniError> {
        let mut state = self.lock();
        let keep: BTreeSet<(String, String)> = valid
            .iter()
            .map(|a| (a.container_id.clone(), a.ifname.clone()))
            .collect();
        let stale: Vec<(String, String)> = state
            .ipam
            .allocations()
            .map(|a| (a.container_id.clone(), a.ifname.clone()))
            .filter(|k| !keep.contains(k))
            .collect();
        for (cid, ifname) in &stale {
            self.del_locked(&mut state, cid, ifname)?;
            info!(container_id = %cid, ifname = %ifname, "garbage-collected");
        }
        // Leftovers with no allocation at all (none should exist, as
        // addresses are released last): veths, attachments, endpoints.
        let live_ifs: BTreeSet<String> = state
            .ipam
            .allocations()
            .map(|a| host_ifname(&a.container_id, &a.ifname))
            .collect();
        let live_ips: BTreeSet<Ipv4Addr> = state.ipam.allocations().map(|a| a.ip).collect();
        let stray_links = netlink::host_links_with_prefix(HOST_IF_PREFIX)
            .map_err(|e| io_error("listing pod veths", &e))?;
        let stray_pins = datapath::attachments(&self.config.pin_dir)
            .into_iter()
            .filter(|(prog, _)| prog == PROG_FROM_POD || prog == PROG_TO_POD)
            .map(|(_, iface)| iface);
        let strays: BTreeSet<String> = stray_links
            .into_iter()
            .chain(stray_pins)
            .filter(|i| is_host_ifname(i) && !live_ifs.contains(i))
            .collect();
        for iface in &strays {
            self.unwire(&mut state, iface, None)?;
            info!(host_if = %iface, "garbage-collected a stray interface");
        }
        let endpoints = state
            .maps
            .endpoints()
            .map_err(|e| io_error("reading the endpoints", &e))?;
        for e in endpoints.iter().filter(|e| !live_ips.contains(&e.ip)) {
            state
                .maps
                .remove_endpoint(e.ip)
                .map_err(|err| io_error("removing a stray endpoint", &err))?;
            info!(ip = %e.ip, "garbage-collected a stray endpoint");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_interface_names_are_stable_distinct_and_short() {
        let a = host_ifname("abc", "eth0");
        assert_eq!(a, host_ifname("abc", "eth0"));
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("ovl"));
        assert_ne!(a, host_ifname("abc", "eth1"));
        assert_ne!(a, host_ifname("abd", "eth0"));
        assert_ne!(host_ifname("ab", "ceth0"), host_ifname("abc", "eth0"));
        assert!(is_host_ifname(&a));
        for other in [
            "ovlp1",
            "ovl0123456789",
            "ovl0123456789ab",
            "ovlABCDEF01234",
            "eth0",
        ] {
            assert!(!is_host_ifname(other), "{other}");
        }
    }
}
