//! `from_uplink`: attached at TC **ingress of the node's uplink** (the
//! underlay NIC), so it sees every frame the node receives.
//!
//! VXLAN for us (UDP to our port and our node IP) from a known peer with our
//! VNI is decapsulated and delivered straight into the destination pod with
//! `bpf_redirect_peer`. VXLAN for us that fails a check is dropped with its
//! reason counted. Everything else, the node's own traffic above all, is
//! `TC_ACT_OK`, untouched.
//!
//! A peer's liveness probe (UDP to our node IP and probe port) is answered
//! here by reflecting it ([`crate::probe`]).
//!
//! IPv4 from a cluster block to a cluster block, not addressed to the node,
//! is a directly routed pod packet: delivered when it comes from a live
//! peer's MAC with a source in that peer's blocks and is for a pod here,
//! dropped otherwise ([`crate::direct::accept`]).
//!
//! With encryption on, pod traffic from other nodes arrives through the
//! WireGuard device ([`crate::from_wireguard`]) only: VXLAN and directly
//! routed pod packets that pass every check above are dropped instead of
//! delivered (`drop_unencrypted`).

use aya_ebpf::{
    bindings::{BPF_F_ADJ_ROOM_FIXED_GSO, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    macros::classifier,
    programs::TcContext,
};
use overlay_common::{
    ETH_HLEN, INNER_ETH_OFFSET, IPPROTO_UDP, IPV4_HLEN, PEER_F_ACTIVE, Stat, UDP_HLEN,
    VXLAN_FLAG_VNI, VXLAN_OVERHEAD,
};

use crate::{
    direct,
    from_pod::deliver_local,
    maps::{ENDPOINTS, PEERS, config, encryption, route},
    packet::{self, L3},
    policy::{self, Check},
    probe,
    verdict::{OK, Verdict, finish},
};

/// Entry point: one counter per packet, one exit for drops.
#[classifier]
pub fn from_uplink(ctx: TcContext) -> i32 {
    finish(try_from_uplink(&ctx))
}

#[inline(always)]
fn try_from_uplink(ctx: &TcContext) -> Verdict {
    const PASS: Verdict = Ok((OK, Stat::FromUplinkPassed));

    let Some(cfg) = config() else {
        return Ok((OK, Stat::NotConfigured));
    };
    // Cheap tests first: this runs for every packet the node receives.
    match packet::ethertype(ctx, 0) {
        Some(overlay_common::ETH_P_IP) => {}
        _ => return PASS,
    }
    let Ok(outer) = packet::ipv4(ctx, L3) else {
        return PASS; // not a parseable IPv4 header: the stack's business
    };
    if outer.dst != cfg.node_ip {
        return direct::accept(ctx, &outer).unwrap_or(PASS);
    }
    if outer.proto != IPPROTO_UDP || outer.is_later_fragment() {
        return PASS;
    }
    let Ok(udp) = ctx.load::<[u8; UDP_HLEN]>(L3 + outer.ihl) else {
        return PASS;
    };
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    if cfg.probe_port != 0 && dport == cfg.probe_port {
        return probe::answer(ctx, &outer, &udp, cfg.probe_port);
    }
    if dport != cfg.vxlan_port {
        return PASS;
    }

    // From here on the packet claims to be our VXLAN: it is delivered or
    // dropped with a reason, never handed to the stack.
    if outer.ihl != IPV4_HLEN {
        return Err(Stat::DropMalformed);
    }
    if outer.is_fragment() {
        return Err(Stat::DropFragmented);
    }
    match PEERS.get_ptr(outer.src) {
        // SAFETY: the pointer comes from a successful lookup.
        Some(p) if unsafe { (*p).flags } & PEER_F_ACTIVE != 0 => {}
        _ => return Err(Stat::DropUnknownPeer),
    }
    let vx: [u8; 8] = ctx
        .load(L3 + IPV4_HLEN + UDP_HLEN)
        .map_err(|_| Stat::DropTruncated)?;
    if vx[0] & VXLAN_FLAG_VNI == 0 {
        return Err(Stat::DropMalformed);
    }
    let vni = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
    if vni != cfg.vni {
        return Err(Stat::DropWrongVni);
    }
    match packet::ethertype(ctx, INNER_ETH_OFFSET) {
        Some(overlay_common::ETH_P_IP) => {}
        Some(_) => return Err(Stat::DropMalformed),
        None => return Err(Stat::DropTruncated),
    }
    let inner = packet::ipv4(ctx, INNER_ETH_OFFSET + ETH_HLEN)?;
    if usize::from(inner.total_len) + INNER_ETH_OFFSET + ETH_HLEN > ctx.len() as usize {
        return Err(Stat::DropTruncated);
    }

    // Anti-spoofing: the inner source must sit in a block of the sender.
    match route(inner.src) {
        Some(r) if r.node_ip == outer.src => {}
        _ => return Err(Stat::DropSpoofedSource),
    }
    let Some(ep) = ENDPOINTS.get_ptr(inner.dst) else {
        return Err(Stat::DropNoEndpoint);
    };
    // SAFETY: the pointer comes from a successful lookup; copy out at once.
    let ep = unsafe { *ep };
    // The receiving pod's NetworkPolicy ingress (its egress was decided on
    // the sending node).
    policy::decide(
        ctx,
        INNER_ETH_OFFSET + ETH_HLEN,
        &inner,
        &Check {
            egress: None,
            ingress: Some(inner.dst),
            ingress_exempt: false,
        },
    )?;
    if encryption().is_some() {
        return Err(Stat::DropUnencrypted);
    }

    ctx.adjust_room(
        -(VXLAN_OVERHEAD as i32),
        BPF_ADJ_ROOM_MAC,
        BPF_F_ADJ_ROOM_FIXED_GSO as u64,
    )
    .map_err(|_| Stat::DropDecapFailed)?;
    deliver_local(ctx, &ep).map(|a| (a, Stat::FromUplinkDecapsulated))
}
