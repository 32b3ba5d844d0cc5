//! `from_pod`: attached at TC **ingress of each pod's host-side veth**, so it
//! sees every frame a pod sends.
//!
//! - destination is a pod on this node → rewrite MACs, `bpf_redirect_peer`
//!   straight into that pod's netns;
//! - destination is in another node's block → VXLAN-encapsulate and send out
//!   of the underlay device towards that node, or, when the route says the
//!   node is on-link and direct routing is on (`ROUTE_F_DIRECT`), send the
//!   frame unencapsulated to that node's MAC ([`crate::direct`]);
//! - with encryption on (`--encryption wireguard`), every packet for
//!   another node's pod goes to the WireGuard device instead, whatever the
//!   tunnel mode, when that node publishes a key (`ROUTE_F_ENCRYPT`), and
//!   is dropped otherwise (`drop_not_encrypted`: fail closed, never in
//!   clear);
//! - anything else (ARP, IPv6, the node itself, the outside world) →
//!   `OK`, untouched, for the host stack (masquerade, etc.).
//!
//! NetworkPolicy: the sender's egress is decided here for every packet,
//! and the receiver's ingress too when it is a pod on this node
//! ([`crate::policy`]).
//!
//! Before any of that, a pod may only send as itself: an IPv4 packet whose
//! source is not the address of the endpoint attached to this interface is
//! dropped (`drop_pod_spoofed_source`), and so is UDP a pod aims at the
//! VXLAN or probe port of anything outside the pod network
//! (`drop_pod_to_tunnel`): masqueraded to the node's address, it would
//! reach another node as if a peer had sent it.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_ADJ_ROOM_ENCAP_L2_SHIFT, BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO, BPF_FIB_LKUP_RET_FWD_DISABLED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_OUTPUT,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_fib_lookup,
    },
    helpers::generated::{
        bpf_fib_lookup as fib_lookup, bpf_get_hash_recalc, bpf_redirect, bpf_redirect_neigh,
        bpf_redirect_peer,
    },
    macros::classifier,
    programs::TcContext,
};
use overlay_common::{
    ETH_HLEN, Endpoint, IPPROTO_UDP, NodeConfig, ROUTE_F_DIRECT, ROUTE_F_ENCRYPT, Stat,
    VXLAN_OVERHEAD,
};

use crate::{
    direct,
    maps::{ENDPOINTS, config, encryption, route},
    packet::{self, L3},
    policy::{self, Check},
    verdict::{OK, Verdict, finish, redirected},
    vxlan,
};

const AF_INET: u8 = 2;

/// `adjust_room` flags for VXLAN: IPv4 + UDP outer headers, an Ethernet
/// inner frame, gso_size kept (the pod MTU already leaves room for the 50
/// bytes).
///
/// The L2 length is the inner Ethernet header only (14), so the skb's inner
/// MAC header lands on the inner Ethernet header exactly as the kernel's own
/// vxlan device sets it. The selftest `progs/test_tc_tunnel.c` passes
/// VXLAN + Ethernet (22) instead; on Linux 6.18 that made
/// `validate_xmit_skb` on the uplink drop the GSO packets of every TCP flow
/// (seen in the `skb:kfree_skb` tracepoint), while 14 keeps ~56 KB GSO
/// packets intact across a veth underlay.
const ENCAP_FLAGS: u64 = (BPF_F_ADJ_ROOM_FIXED_GSO
    | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
    | BPF_F_ADJ_ROOM_ENCAP_L4_UDP
    | BPF_F_ADJ_ROOM_ENCAP_L2_ETH) as u64
    | ((ETH_HLEN as u64) << BPF_ADJ_ROOM_ENCAP_L2_SHIFT);

/// Entry point: one counter per packet, one exit for drops.
#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    finish(try_from_pod(&ctx))
}

#[inline(always)]
fn try_from_pod(ctx: &TcContext) -> Verdict {
    let Some(cfg) = config() else {
        return Ok((OK, Stat::NotConfigured));
    };
    if !packet::is_ipv4(ctx, 0)? {
        return Ok((OK, Stat::FromPodPassed));
    }
    let ip = packet::ipv4(ctx, L3)?;

    // A pod sends only from its own address, through its own interface.
    match ENDPOINTS.get_ptr(ip.src) {
        // SAFETY: the pointer comes from a successful lookup.
        Some(me) if unsafe { (*me).ifindex } == ingress_ifindex(ctx) => {}
        _ => return Err(Stat::DropPodSpoofedSource),
    }

    if let Some(ep) = ENDPOINTS.get_ptr(ip.dst) {
        // SAFETY: the pointer comes from a successful lookup; copy out at once.
        let ep = unsafe { *ep };
        // Both ends are here: the sender's egress and the receiver's
        // ingress are decided together.
        policy::decide(
            ctx,
            L3,
            &ip,
            &Check {
                egress: Some(ip.src),
                ingress: Some(ip.dst),
                ingress_exempt: false,
            },
        )?;
        return deliver_local(ctx, &ep).map(|a| (a, Stat::FromPodLocal));
    }
    // Leaving this node (another node's pod, the node, the outside world):
    // egress is decided here, ingress where it arrives.
    policy::decide(
        ctx,
        L3,
        &ip,
        &Check {
            egress: Some(ip.src),
            ingress: None,
            ingress_exempt: false,
        },
    )?;

    let Some(r) = route(ip.dst) else {
        return to_host(ctx, cfg, &ip);
    };
    let peer = r.node_ip;
    if peer == cfg.node_ip {
        // Our own block but no such pod: let the host stack answer.
        return to_host(ctx, cfg, &ip);
    }
    if let Some(wg) = encryption() {
        // No key published, or the device not there yet (ifindex 0).
        if r.flags & ROUTE_F_ENCRYPT == 0 || wg == 0 {
            return Err(Stat::DropNotEncrypted);
        }
        // An L3 device: the kernel strips the Ethernet header on the way
        // in; the device encrypts and sends from the node's socket.
        // SAFETY: plain helper call.
        return redirected(unsafe { bpf_redirect(wg, 0) }).map(|a| (a, Stat::FromPodEncrypted));
    }
    if r.flags & ROUTE_F_DIRECT != 0 {
        return direct::send(cfg, peer);
    }
    encapsulate(ctx, cfg, peer, ip.tos).map(|a| (a, Stat::FromPodEncapsulated))
}

/// The interface the packet came in on: the pod's host-side veth.
#[inline(always)]
fn ingress_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: reading a field of the context the kernel handed us.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// Traffic for the host stack (the node, other nodes, the outside world),
/// except UDP to the tunnel's ports: the stack would masquerade it to the
/// node's address, and the receiving node would take it for a peer's
/// VXLAN or probe. Later fragments carry no port; the receiving
/// `from_uplink` drops fragmented VXLAN anyway.
#[inline(always)]
fn to_host(ctx: &TcContext, cfg: &NodeConfig, ip: &packet::Ipv4) -> Verdict {
    if ip.proto == IPPROTO_UDP && !ip.is_later_fragment() {
        let ports: [u8; 4] = ctx.load(L3 + ip.ihl).map_err(|_| Stat::DropTruncated)?;
        let dport = u16::from_be_bytes([ports[2], ports[3]]);
        if dport == cfg.vxlan_port || (cfg.probe_port != 0 && dport == cfg.probe_port) {
            return Err(Stat::DropPodToTunnel);
        }
    }
    Ok((OK, Stat::FromPodPassed))
}

/// Hands the frame to a pod on this node: MACs as if the gateway routed it,
/// then straight into the pod's netns (skips the host stack and the veth's
/// backlog queue).
#[inline(always)]
pub fn deliver_local(ctx: &TcContext, ep: &Endpoint) -> Result<i32, Stat> {
    let mut macs = [0u8; 12];
    macs[0..6].copy_from_slice(&ep.pod_mac);
    macs[6..12].copy_from_slice(&ep.host_mac);
    ctx.store(0, &macs, 0)
        .map_err(|_| Stat::DropRedirectFailed)?;
    // SAFETY: plain helper call.
    redirected(unsafe { bpf_redirect_peer(ep.ifindex, 0) })
}

/// Where and how to send an encapsulated packet on the underlay.
struct NextHop {
    ifindex: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
    /// The neighbour is not resolved yet: let `bpf_redirect_neigh` resolve it.
    resolve: bool,
}

#[inline(always)]
fn next_hop(ctx: &TcContext, cfg: &NodeConfig, peer: [u8; 4]) -> Result<NextHop, Stat> {
    // SAFETY: all-zero is a valid `bpf_fib_lookup`.
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = overlay_common::IPPROTO_UDP;
    p.ifindex = cfg.uplink_ifindex;
    p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(cfg.node_ip);
    p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(peer);
    // SAFETY: `p` lives on our stack for the duration of the call.
    let rc = unsafe {
        fib_lookup(
            ctx.skb.skb as *mut c_void,
            &mut p,
            size_of::<bpf_fib_lookup>() as i32,
            BPF_FIB_LOOKUP_OUTPUT,
        )
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => Ok(NextHop {
            ifindex: p.ifindex,
            smac: p.smac,
            dmac: p.dmac,
            resolve: false,
        }),
        BPF_FIB_LKUP_RET_NO_NEIGH => Ok(NextHop {
            ifindex: p.ifindex,
            smac: p.smac,
            dmac: p.dmac,
            resolve: true,
        }),
        // Forwarding off on the uplink: the kernel's own route + neighbour
        // lookup in `bpf_redirect_neigh` still works.
        BPF_FIB_LKUP_RET_FWD_DISABLED => Ok(NextHop {
            ifindex: cfg.uplink_ifindex,
            smac: [0; 6],
            dmac: [0; 6],
            resolve: true,
        }),
        _ => Err(Stat::DropNoRouteToPeer),
    }
}

#[inline(always)]
fn encapsulate(ctx: &TcContext, cfg: &NodeConfig, peer: [u8; 4], tos: u8) -> Result<i32, Stat> {
    let hop = next_hop(ctx, cfg, peer)?;
    let inner_ip_len = (ctx.len() as usize).saturating_sub(ETH_HLEN) as u16;
    // SAFETY: plain helper call on our own skb.
    let hash = unsafe { bpf_get_hash_recalc(ctx.skb.skb) };
    let hdr = vxlan::headers(&vxlan::Encap {
        dmac: hop.dmac,
        smac: hop.smac,
        src_ip: cfg.node_ip,
        dst_ip: peer,
        tos,
        inner_ip_len,
        sport: vxlan::source_port(hash),
        dport: cfg.vxlan_port,
        vni: cfg.vni,
    });

    ctx.adjust_room(VXLAN_OVERHEAD as i32, BPF_ADJ_ROOM_MAC, ENCAP_FLAGS)
        .map_err(|_| Stat::DropEncapFailed)?;
    ctx.store(0, &hdr, 0).map_err(|_| Stat::DropEncapFailed)?;

    // SAFETY: plain helper calls.
    let rc = if hop.resolve {
        unsafe { bpf_redirect_neigh(hop.ifindex, core::ptr::null_mut(), 0, 0) }
    } else {
        unsafe { bpf_redirect(hop.ifindex, 0) }
    };
    redirected(rc)
}
