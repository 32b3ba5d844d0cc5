//! `from_wireguard`: attached at TC **ingress of the WireGuard device**
//! (`--encryption wireguard`), so it sees every pod packet another node
//! sent through WireGuard, decrypted. The device is an L3 interface: the
//! packet starts with its IPv4 header.
//!
//! The device has already checked that the source lies in the sending
//! peer's allowed IPs (its blocks, as gossip gives them); here the source
//! must lie in a block routed to another node, the destination must be a
//! pod on this node and its NetworkPolicy ingress must allow it. Then an
//! Ethernet header is pushed in front (the pod's interface is L2) and the
//! packet is handed straight into the pod's netns (`bpf_redirect_peer`).
//! Anything else is dropped and counted, never handed to the stack.

use aya_ebpf::{
    helpers::generated::{bpf_redirect_peer, bpf_skb_change_head},
    macros::classifier,
    programs::TcContext,
};
use overlay_common::{ETH_HLEN, ETH_P_IP, Stat};

use crate::{
    maps::{ENDPOINTS, config, route},
    packet,
    policy::{self, Check},
    verdict::{OK, Verdict, finish, redirected},
};

/// Entry point: one counter per packet, one exit for drops.
#[classifier]
pub fn from_wireguard(ctx: TcContext) -> i32 {
    finish(try_from_wireguard(&ctx))
}

#[inline(always)]
fn try_from_wireguard(ctx: &TcContext) -> Verdict {
    let Some(cfg) = config() else {
        return Ok((OK, Stat::NotConfigured));
    };
    let ip = packet::ipv4(ctx, 0)?;
    match route(ip.src) {
        Some(r) if r.node_ip != cfg.node_ip => {}
        _ => return Err(Stat::DropWireguardSpoofedSource),
    }
    let Some(ep) = ENDPOINTS.get_ptr(ip.dst) else {
        return Err(Stat::DropNoEndpoint);
    };
    // SAFETY: the pointer comes from a successful lookup; copy out at once.
    let ep = unsafe { *ep };
    if usize::from(ip.total_len) > ctx.len() as usize {
        return Err(Stat::DropTruncated);
    }
    // The receiving pod's NetworkPolicy ingress (its egress was decided on
    // the sending node).
    policy::decide(
        ctx,
        0,
        &ip,
        &Check {
            egress: None,
            ingress: Some(ip.dst),
            ingress_exempt: false,
        },
    )?;
    // SAFETY: plain helper call on our own skb.
    if unsafe { bpf_skb_change_head(ctx.skb.skb, ETH_HLEN as u32, 0) } != 0 {
        return Err(Stat::DropRedirectFailed);
    }
    let mut eth = [0u8; ETH_HLEN];
    eth[0..6].copy_from_slice(&ep.pod_mac);
    eth[6..12].copy_from_slice(&ep.host_mac);
    eth[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
    ctx.store(0, &eth, 0)
        .map_err(|_| Stat::DropRedirectFailed)?;
    // SAFETY: plain helper call.
    redirected(unsafe { bpf_redirect_peer(ep.ifindex, 0) })
        .map(|a| (a, Stat::FromWireguardDelivered))
}
