//! Direct routing between nodes on one link: pod packets cross the
//! underlay unencapsulated, with the pods' own addresses.
//!
//! - [`send`] (from `from_pod`, for a block whose route carries
//!   `ROUTE_F_DIRECT`): `bpf_redirect_neigh` out of the uplink with the
//!   owning node's IP as next hop, so the frame goes to that node's MAC.
//! - [`accept`] (from `from_uplink`, for IPv4 not addressed to the node):
//!   a packet from an address in a cluster block to an address in one must
//!   come from a live peer's MAC and from a block of that very peer, and
//!   be for a pod here; then NetworkPolicy ingress decides and it goes
//!   straight into the pod (`bpf_redirect_peer`). Anything else from a
//!   cluster block to a cluster block is dropped with its reason, never
//!   handed to the stack (which would route it on).

use aya_ebpf::{
    bindings::{bpf_redir_neigh, bpf_redir_neigh__bindgen_ty_1},
    helpers::generated::bpf_redirect_neigh,
    programs::TcContext,
};
use overlay_common::{NodeConfig, PEER_F_ACTIVE, Stat, mac_key};

use crate::{
    from_pod::deliver_local,
    maps::{ENDPOINTS, PEER_MACS, PEERS, encryption, route},
    packet::{Ipv4, L3},
    policy::{self, Check},
    verdict::{Verdict, redirected},
};

const AF_INET: u32 = 2;

/// Sends the pod's frame as it is to `peer` (an on-link node): the kernel
/// fills in the uplink's MAC and the peer's, resolving the peer's with ARP
/// if need be.
#[inline(always)]
pub fn send(cfg: &NodeConfig, peer: [u8; 4]) -> Verdict {
    let mut nh = bpf_redir_neigh {
        nh_family: AF_INET,
        __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 {
            ipv4_nh: u32::from_ne_bytes(peer),
        },
    };
    // SAFETY: `nh` lives on our stack for the duration of the call.
    let rc = unsafe {
        bpf_redirect_neigh(
            cfg.uplink_ifindex,
            &mut nh,
            size_of::<bpf_redir_neigh>() as i32,
            0,
        )
    };
    redirected(rc).map(|a| (a, Stat::FromPodDirect))
}

/// Decides an IPv4 packet that arrived on the uplink for an address other
/// than the node's (see the module comment); `None` when it is not a
/// directly routed pod packet (the caller passes it on untouched, as
/// before direct routing existed).
#[inline(always)]
pub fn accept(ctx: &TcContext, ip: &Ipv4) -> Option<Verdict> {
    // Sources outside every cluster block, and destinations outside them,
    // keep today's behaviour.
    let owner = route(ip.src)?.node_ip;
    route(ip.dst)?;
    Some(check_and_deliver(ctx, ip, owner))
}

#[inline(always)]
fn check_and_deliver(ctx: &TcContext, ip: &Ipv4, owner: [u8; 4]) -> Verdict {
    let smac: [u8; 6] = ctx.load(6).map_err(|_| Stat::DropTruncated)?;
    // The MAC must be a peer's, and that peer alive.
    let Some(sender) = PEER_MACS.get_ptr(&mac_key(smac)) else {
        return Err(Stat::DropDirectUnknownPeer);
    };
    // SAFETY: the pointer comes from a successful lookup; copy out at once.
    let sender = unsafe { *sender };
    match PEERS.get_ptr(sender) {
        // SAFETY: the pointer comes from a successful lookup.
        Some(p) if unsafe { (*p).flags } & PEER_F_ACTIVE != 0 => {}
        _ => return Err(Stat::DropDirectUnknownPeer),
    }
    // And the source address one of that peer's.
    if owner != sender {
        return Err(Stat::DropDirectSpoofedSource);
    }
    // Pod to pod, from whom it claims: it must be for a pod here (the
    // stack would route it on, and nothing routes pod traffic through a
    // node that does not own the destination).
    let Some(ep) = ENDPOINTS.get_ptr(ip.dst) else {
        return Err(Stat::DropNoEndpoint);
    };
    // SAFETY: the pointer comes from a successful lookup; copy out at once.
    let ep = unsafe { *ep };
    if usize::from(ip.total_len) + L3 > ctx.len() as usize {
        return Err(Stat::DropTruncated);
    }
    // The receiving pod's NetworkPolicy ingress (its egress was decided on
    // the sending node), as for decapsulated packets.
    policy::decide(
        ctx,
        L3,
        ip,
        &Check {
            egress: None,
            ingress: Some(ip.dst),
            ingress_exempt: false,
        },
    )?;
    if encryption().is_some() {
        return Err(Stat::DropUnencrypted);
    }
    deliver_local(ctx, &ep).map(|a| (a, Stat::FromUplinkDirect))
}
