//! Header access through `bpf_skb_load_bytes`: works on non-linear skbs and
//! keeps the verifier out of pointer arithmetic.

use aya_ebpf::programs::TcContext;
use overlay_common::{ETH_HLEN, ETH_P_IP, IPV4_HLEN, Stat};

/// The fields of an IPv4 header the programs look at.
pub struct Ipv4 {
    /// Header length in bytes.
    pub ihl: usize,
    pub tos: u8,
    pub total_len: u16,
    /// Flags and fragment offset, host byte order.
    pub frag: u16,
    pub proto: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

impl Ipv4 {
    /// More-fragments flag or a non-zero offset.
    pub fn is_fragment(&self) -> bool {
        self.frag & 0x3fff != 0
    }
    /// Non-zero fragment offset: no L4 header in this packet.
    pub fn is_later_fragment(&self) -> bool {
        self.frag & 0x1fff != 0
    }
}

/// EtherType of the frame at `off`, or `None` when it is shorter than an
/// Ethernet header.
#[inline(always)]
pub fn ethertype(ctx: &TcContext, off: usize) -> Option<u16> {
    let b: [u8; 2] = ctx.load(off + 12).ok()?;
    Some(u16::from_be_bytes(b))
}

/// Whether the Ethernet frame at `off` carries IPv4.
#[inline(always)]
pub fn is_ipv4(ctx: &TcContext, off: usize) -> Result<bool, Stat> {
    match ethertype(ctx, off) {
        Some(t) => Ok(t == ETH_P_IP),
        None => Err(Stat::DropTruncated),
    }
}

/// Parses the IPv4 header at `off`.
#[inline(always)]
pub fn ipv4(ctx: &TcContext, off: usize) -> Result<Ipv4, Stat> {
    let h: [u8; IPV4_HLEN] = ctx.load(off).map_err(|_| Stat::DropTruncated)?;
    if h[0] >> 4 != 4 {
        return Err(Stat::DropMalformed);
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < IPV4_HLEN {
        return Err(Stat::DropMalformed);
    }
    Ok(Ipv4 {
        ihl,
        tos: h[1],
        total_len: u16::from_be_bytes([h[2], h[3]]),
        frag: u16::from_be_bytes([h[6], h[7]]),
        proto: h[9],
        src: [h[12], h[13], h[14], h[15]],
        dst: [h[16], h[17], h[18], h[19]],
    })
}

/// Offset of the first IPv4 header of a frame.
pub const L3: usize = ETH_HLEN;
