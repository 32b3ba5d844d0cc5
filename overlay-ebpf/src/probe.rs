//! Datapath liveness probes, answered by `from_uplink` (TC **ingress of
//! the node's uplink**) with no agent involved, like BFD's echo mode.
//!
//! A peer's agent sends UDP from an ephemeral port to our node address and
//! probe port, carrying a [`PROBE_LEN`]-byte payload (magic, version,
//! nonce, time). We send it straight back out of the uplink with the
//! Ethernet, IPv4 and UDP source and destination swapped and the payload
//! untouched: the reply reaches the prober's socket, which accepts it only
//! if the nonce is one it sent to that peer. Swapping addresses and ports
//! leaves every checksum valid, whatever the skb's checksum state.
//!
//! Only nodes of the cluster (entries of the peer map, routed or not) are
//! answered, so the probe port is no reflector for strangers; a request
//! whose source port is the probe port itself is refused, so two nodes can
//! never bounce one datagram between them.

use aya_ebpf::{helpers::generated::bpf_redirect, programs::TcContext};
use overlay_common::{IPV4_HLEN, PROBE_LEN, PROBE_MAGIC, PROBE_VERSION, Stat, UDP_HLEN};

use crate::{
    maps::PEERS,
    packet::{Ipv4, L3},
    verdict::{Verdict, redirected},
};

/// Answers the probe in `ctx` (already known to be UDP to our node address
/// and probe port, with UDP header `udp`), or drops it with its reason.
#[inline(always)]
pub fn answer(ctx: &TcContext, outer: &Ipv4, udp: &[u8; UDP_HLEN], probe_port: u16) -> Verdict {
    if outer.ihl != IPV4_HLEN {
        return Err(Stat::DropMalformed);
    }
    if outer.is_fragment() {
        return Err(Stat::DropFragmented);
    }
    if u16::from_be_bytes([udp[0], udp[1]]) == probe_port {
        return Err(Stat::DropMalformed);
    }
    if PEERS.get_ptr(outer.src).is_none() {
        return Err(Stat::DropProbeUnknownPeer);
    }
    let body: [u8; PROBE_LEN] = ctx
        .load(L3 + IPV4_HLEN + UDP_HLEN)
        .map_err(|_| Stat::DropTruncated)?;
    if body[0] != PROBE_MAGIC[0]
        || body[1] != PROBE_MAGIC[1]
        || body[2] != PROBE_MAGIC[2]
        || body[3] != PROBE_MAGIC[3]
        || body[4] != PROBE_VERSION
    {
        return Err(Stat::DropMalformed);
    }

    let eth: [u8; 12] = ctx.load(0).map_err(|_| Stat::DropTruncated)?;
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&eth[6..]);
    macs[6..].copy_from_slice(&eth[..6]);
    let mut addrs = [0u8; 8];
    addrs[..4].copy_from_slice(&outer.dst);
    addrs[4..].copy_from_slice(&outer.src);
    let ports = [udp[2], udp[3], udp[0], udp[1]];
    ctx.store(0, &macs, 0)
        .map_err(|_| Stat::DropRedirectFailed)?;
    ctx.store(L3 + 12, &addrs, 0)
        .map_err(|_| Stat::DropRedirectFailed)?;
    ctx.store(L3 + IPV4_HLEN, &ports, 0)
        .map_err(|_| Stat::DropRedirectFailed)?;

    // SAFETY: reading a field of our context, then a plain helper call:
    // out of the interface the probe came in on.
    let rc = unsafe { bpf_redirect((*ctx.skb.skb).ifindex, 0) };
    redirected(rc).map(|a| (a, Stat::ProbeAnswered))
}
