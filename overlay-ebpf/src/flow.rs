//! The five-tuple a policy decision and connection tracking look at.

use aya_ebpf::programs::TcContext;
use overlay_common::{CtKey, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, Stat};

use crate::packet::{self, Ipv4};

/// ICMP echo reply, destination unreachable, echo request, time exceeded,
/// parameter problem.
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETERPROB: u8 = 12;

/// A packet's flow.
pub struct Flow {
    /// For a packet of its own: its tuple. For an ICMP error: the tuple of
    /// the packet it quotes (`related`).
    pub key: CtKey,
    /// IP protocol of the packet itself.
    pub proto: u8,
    /// Destination port of the packet (network byte order), zero for
    /// protocols without ports and for later fragments.
    pub dport: [u8; 2],
    /// TCP flags (zero for anything else).
    pub tcp_flags: u8,
    /// An ICMP error about another flow.
    pub related: bool,
}

#[inline(always)]
fn has_ports(proto: u8) -> bool {
    proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP
}

/// Reads the flow of the IPv4 packet whose header `ip` starts at `l3`.
#[inline(always)]
pub fn parse(ctx: &TcContext, l3: usize, ip: &Ipv4) -> Result<Flow, Stat> {
    let mut f = Flow {
        key: CtKey {
            src: ip.src,
            dst: ip.dst,
            sport: [0; 2],
            dport: [0; 2],
            proto: ip.proto,
            pad: [0; 3],
        },
        proto: ip.proto,
        dport: [0; 2],
        tcp_flags: 0,
        related: false,
    };
    if ip.is_later_fragment() {
        return Ok(f);
    }
    let l4 = l3 + ip.ihl;
    if has_ports(ip.proto) {
        let p: [u8; 4] = ctx.load(l4).map_err(|_| Stat::DropTruncated)?;
        f.key.sport = [p[0], p[1]];
        f.key.dport = [p[2], p[3]];
        f.dport = f.key.dport;
        if ip.proto == IPPROTO_TCP {
            let flags: [u8; 1] = ctx.load(l4 + 13).map_err(|_| Stat::DropTruncated)?;
            f.tcp_flags = flags[0];
        }
    } else if ip.proto == IPPROTO_ICMP {
        let h: [u8; 8] = ctx.load(l4).map_err(|_| Stat::DropTruncated)?;
        match h[0] {
            ICMP_ECHO | ICMP_ECHO_REPLY => {
                // Request and reply carry the same identifier: the tuple
                // and its reverse then agree.
                f.key.sport = [h[4], h[5]];
                f.key.dport = [h[4], h[5]];
            }
            ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETERPROB => {
                // The quoted header (RFC 792: IP header + 64 bits).
                if let Ok(inner) = packet::ipv4(ctx, l4 + 8) {
                    f.key.src = inner.src;
                    f.key.dst = inner.dst;
                    f.key.proto = inner.proto;
                    f.related = true;
                    if has_ports(inner.proto) && !inner.is_later_fragment() {
                        if let Ok(p) = ctx.load::<[u8; 4]>(l4 + 8 + inner.ihl) {
                            f.key.sport = [p[0], p[1]];
                            f.key.dport = [p[2], p[3]];
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(f)
}
