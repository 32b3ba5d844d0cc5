//! Offloads between the TUN device and the WireGuard device's loop: the
//! `virtio_net_hdr` that precedes every packet on a TUN opened with
//! `IFF_VNET_HDR`, checksums the kernel left for us to finish, and the
//! segmentation of the TCP super-packets it hands us with TSO on.
//!
//! With TSO the kernel reads one 64 KB TCP packet into the device instead
//! of about 45 MTU-sized ones (one system call instead of 45); we cut it
//! to MTU-sized segments here, as a NIC would, and each segment is then
//! encrypted on its own (WireGuard packets never exceed the MTU).

/// Length of `struct virtio_net_hdr` (without `num_buffers`): what
/// precedes every packet read from or written to the TUN device.
pub const VNET_HDR_LEN: usize = 10;

/// `flags`: the checksum from `csum_start` to the end is to be computed
/// and stored at `csum_start + csum_offset`.
const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the packet's checksums are known good (what we write: every
/// packet was authenticated by WireGuard, and built by a sender that
/// computed them).
const F_DATA_VALID: u8 = 2;
/// `gso_type`: not a super-packet.
const GSO_NONE: u8 = 0;
/// `gso_type`: a TCP over IPv4 super-packet.
const GSO_TCPV4: u8 = 1;
/// `gso_type` bit: the sender set ECN's CWR; only the first segment keeps it.
const GSO_ECN: u8 = 0x80;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// TCP flags cleared in every segment but the last: FIN and PSH.
const TCP_FIN_PSH: u8 = 0x01 | 0x08;
/// TCP flag kept in the first segment only: CWR.
const TCP_CWR: u8 = 0x80;

/// The header the kernel wrote in front of a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    flags: u8,
    gso_type: u8,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header at the start of `buf` (little endian, as this
    /// machine's TUN writes it); `None` when `buf` is shorter.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let b = buf.get(..VNET_HDR_LEN)?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(Self {
            flags: b[0],
            gso_type: b[1],
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }
}

/// The header written in front of every packet handed to the kernel: no
/// segmentation, checksums valid.
pub const WRITE_HDR: [u8; VNET_HDR_LEN] = [F_DATA_VALID, GSO_NONE, 0, 0, 0, 0, 0, 0, 0, 0];

/// Why a packet from the TUN device cannot be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffloadError {
    /// Not a well-formed IPv4 packet of the kind its header says.
    Malformed,
    /// A segmentation this device does not do (it asks the kernel for
    /// TCP over IPv4 only).
    Unsupported,
}

/// Hands each packet `packet` stands for to `emit`: the packet itself
/// (its checksum finished when the kernel left it to us), or, for a TCP
/// super-packet, its segments of at most `gso_size` payload bytes each,
/// built in `scratch`.
pub fn for_each_packet(
    hdr: &VnetHdr,
    packet: &mut [u8],
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<(), OffloadError> {
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            if hdr.flags & F_NEEDS_CSUM != 0 {
                finish_checksum(packet)?;
            }
            emit(packet);
            Ok(())
        }
        GSO_TCPV4 => segment_tcp4(packet, usize::from(hdr.gso_size), scratch, emit),
        _ => Err(OffloadError::Unsupported),
    }
}

/// IPv4 header length of `packet`, checked against its length.
fn ip_header(packet: &[u8]) -> Result<usize, OffloadError> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return Err(OffloadError::Malformed);
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl {
        return Err(OffloadError::Malformed);
    }
    Ok(ihl)
}

/// Computes the TCP or UDP checksum of a whole IPv4 packet in place (the
/// kernel left it partial). Anything else is left as it is.
fn finish_checksum(packet: &mut [u8]) -> Result<(), OffloadError> {
    let ihl = ip_header(packet)?;
    let at = match packet[9] {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        _ => return Ok(()),
    };
    // A fragment holds no whole transport header to sum.
    if u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0 {
        return Ok(());
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if total > packet.len() || total < ihl + at + 2 {
        return Err(OffloadError::Malformed);
    }
    let proto = packet[9];
    let (head, l4) = packet[..total].split_at_mut(ihl);
    l4[at] = 0;
    l4[at + 1] = 0;
    let mut sum = pseudo_header(head, proto, l4.len());
    sum = add(sum, l4);
    let mut c = fold(sum);
    if proto == IPPROTO_UDP && c == 0 {
        c = 0xffff;
    }
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Cuts a TCP over IPv4 super-packet into segments of at most `mss`
/// payload bytes: each with the headers of the original, its own IPv4
/// length, identification and checksum, TCP sequence number and checksum,
/// FIN and PSH on the last segment only, CWR on the first only.
fn segment_tcp4(
    packet: &[u8],
    mss: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<(), OffloadError> {
    let ihl = ip_header(packet)?;
    if packet[9] != IPPROTO_TCP || mss == 0 {
        return Err(OffloadError::Malformed);
    }
    let tcp = packet.get(ihl..).ok_or(OffloadError::Malformed)?;
    if tcp.len() < 20 {
        return Err(OffloadError::Malformed);
    }
    let thl = usize::from(tcp[12] >> 4) * 4;
    let hdrs = ihl + thl;
    if thl < 20 || packet.len() < hdrs || scratch.len() < hdrs + mss {
        return Err(OffloadError::Malformed);
    }
    let payload = &packet[hdrs..];
    let id = u16::from_be_bytes([packet[4], packet[5]]);
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let flags = tcp[13];
    let count = payload.len().div_ceil(mss).max(1);
    for (k, chunk) in payload
        .chunks(mss)
        .chain(
            // A super-packet without payload (it should not happen) is sent
            // as it is.
            (payload.is_empty()).then_some(&payload[..0]),
        )
        .enumerate()
    {
        let len = hdrs + chunk.len();
        let seg = &mut scratch[..len];
        seg[..hdrs].copy_from_slice(&packet[..hdrs]);
        seg[hdrs..].copy_from_slice(chunk);
        // IPv4: length, identification, checksum.
        seg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        seg[4..6].copy_from_slice(&id.wrapping_add(k as u16).to_be_bytes());
        seg[10] = 0;
        seg[11] = 0;
        let ip_sum = fold(add(0, &seg[..ihl]));
        seg[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        // TCP: sequence number, flags, checksum.
        let t = ihl;
        let s = seq.wrapping_add((k * mss) as u32);
        seg[t + 4..t + 8].copy_from_slice(&s.to_be_bytes());
        let mut f = flags;
        if k + 1 < count {
            f &= !TCP_FIN_PSH;
        }
        if k > 0 {
            f &= !TCP_CWR;
        }
        seg[t + 13] = f;
        seg[t + 16] = 0;
        seg[t + 17] = 0;
        let (head, l4) = seg.split_at_mut(ihl);
        let sum = add(pseudo_header(head, IPPROTO_TCP, l4.len()), l4);
        l4[16..18].copy_from_slice(&fold(sum).to_be_bytes());
        emit(seg);
    }
    Ok(())
}

/// The IPv4 pseudo-header's sum (addresses, protocol, transport length).
fn pseudo_header(ip: &[u8], proto: u8, len: usize) -> u64 {
    let mut sum = add(0, &ip[12..20]);
    sum += u64::from(proto);
    sum += len as u64;
    sum
}

/// Adds `bytes` (big-endian 16-bit words, an odd last byte padded) to a
/// ones' complement sum kept in 64 bits.
fn add(mut sum: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes(c.try_into().expect("8 bytes"));
        sum = sum.wrapping_add(w >> 32).wrapping_add(w & 0xffff_ffff);
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a sum to 16 bits and complements it.
fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classic 16-bit ones' complement checksum, word by word.
    fn reference(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for w in bytes.chunks(2) {
            let hi = u32::from(w[0]) << 8;
            let lo = w.get(1).copied().map_or(0, u32::from);
            sum += hi | lo;
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn tcp_packet(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 20 + 32];
        p[0] = 0x45;
        let len = (52 + payload.len()) as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p[4..6].copy_from_slice(&0xfff0u16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = IPPROTO_TCP;
        p[12..16].copy_from_slice(&[10, 32, 1, 10]);
        p[16..20].copy_from_slice(&[10, 32, 2, 10]);
        let t = 20;
        p[t..t + 2].copy_from_slice(&5201u16.to_be_bytes());
        p[t + 2..t + 4].copy_from_slice(&40000u16.to_be_bytes());
        p[t + 4..t + 8].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        p[t + 12] = 8 << 4; // 32-byte header (timestamps)
        p[t + 13] = flags;
        p[t + 20] = 1;
        p[t + 21] = 1;
        p[t + 22] = 8;
        p[t + 23] = 10;
        p.extend_from_slice(payload);
        let c = reference(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn checks_out(seg: &[u8]) {
        assert_eq!(reference(&seg[..20]), 0, "IPv4 checksum");
        let l4 = &seg[20..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&seg[12..20]);
        pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(l4);
        assert_eq!(reference(&pseudo), 0, "TCP checksum");
    }

    #[test]
    fn a_super_packet_becomes_segments_that_checksum_and_add_up_to_it() {
        let payload: Vec<u8> = (0..10_001u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut p = tcp_packet(&payload, 0x18 | 0x01 | TCP_CWR); // PSH ACK FIN CWR
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            gso_size: 1388,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut scratch = vec![0u8; 65_536];
        let mut segs: Vec<Vec<u8>> = Vec::new();
        for_each_packet(&hdr, &mut p, &mut scratch, |s| segs.push(s.to_vec())).unwrap();
        assert_eq!(segs.len(), 10_001usize.div_ceil(1388));
        let mut joined = Vec::new();
        for (k, s) in segs.iter().enumerate() {
            checks_out(s);
            let len = usize::from(u16::from_be_bytes([s[2], s[3]]));
            assert_eq!(len, s.len());
            assert!(len <= 52 + 1388);
            assert_eq!(
                u16::from_be_bytes([s[4], s[5]]),
                0xfff0u16.wrapping_add(k as u16)
            );
            let seq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
            assert_eq!(seq, 0xffff_fff0u32.wrapping_add((k * 1388) as u32), "wraps");
            let last = k + 1 == segs.len();
            assert_eq!(s[33] & TCP_FIN_PSH != 0, last, "FIN/PSH on segment {k}");
            assert_eq!(s[33] & TCP_CWR != 0, k == 0, "CWR on segment {k}");
            assert_eq!(s[33] & 0x10, 0x10, "ACK everywhere");
            assert_eq!(&s[40..52], &p[40..52], "options copied");
            joined.extend_from_slice(&s[52..]);
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn a_partial_checksum_is_finished_and_other_packets_pass_as_they_are() {
        let payload = b"hello, odd length".to_vec();
        let mut p = tcp_packet(&payload, 0x18);
        p[36] = 0x12; // junk where the partial sum sits
        p[37] = 0x34;
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            ..VnetHdr::default()
        };
        let mut scratch = vec![0u8; 2048];
        let mut out = Vec::new();
        for_each_packet(&hdr, &mut p, &mut scratch, |s| out.push(s.to_vec())).unwrap();
        assert_eq!(out.len(), 1);
        checks_out(&out[0]);
        // No flag: untouched.
        let q = tcp_packet(&payload, 0x18);
        let mut q2 = q.clone();
        for_each_packet(&VnetHdr::default(), &mut q2, &mut scratch, |s| {
            assert_eq!(s, &q[..])
        })
        .unwrap();
        // A header from the kernel, parsed.
        let raw = [1u8, 1, 52, 0, 0x6c, 0x05, 20, 0, 16, 0];
        let h = VnetHdr::parse(&raw).unwrap();
        assert_eq!(
            (h.gso_type, h.gso_size, h.csum_start, h.csum_offset),
            (1, 1388, 20, 16)
        );
        assert_eq!(VnetHdr::parse(&raw[..9]), None);
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        let mut scratch = vec![0u8; 4096];
        let tso = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            gso_size: 1000,
            csum_start: 20,
            csum_offset: 16,
        };
        let good = tcp_packet(&[7u8; 3000], 0x10);
        for n in 0..good.len().min(80) {
            let mut p = good[..n].to_vec();
            let _ = for_each_packet(&tso, &mut p, &mut scratch, |_| {});
            let _ = for_each_packet(
                &VnetHdr {
                    flags: F_NEEDS_CSUM,
                    ..VnetHdr::default()
                },
                &mut p,
                &mut scratch,
                |_| {},
            );
        }
        let mut p = good.clone();
        assert_eq!(
            for_each_packet(
                &VnetHdr { gso_type: 4, ..tso },
                &mut p,
                &mut scratch,
                |_| {}
            ),
            Err(OffloadError::Unsupported)
        );
        let mut small = vec![0u8; 100];
        assert_eq!(
            for_each_packet(&tso, &mut p, &mut small, |_| {}),
            Err(OffloadError::Malformed),
            "a scratch buffer too small for a segment"
        );
        let _ = small.len();
    }
}
