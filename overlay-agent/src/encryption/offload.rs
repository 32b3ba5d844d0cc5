//! Offloads between the TUN device and the WireGuard device's loop: the
//! `virtio_net_hdr` that precedes every packet on a TUN opened with
//! `IFF_VNET_HDR`, checksums the kernel left for us to finish, and the
//! segmentation of the TCP super-packets it hands us with TSO on.
//!
//! With TSO the kernel reads one 64 KB TCP packet into the device instead
//! of about 45 MTU-sized ones (one system call instead of 45); we cut it
//! to MTU-sized segments here, as a NIC would, and each segment is then
//! encrypted on its own (WireGuard packets never exceed the MTU).
//!
//! The other way, [`Coalescer`] does what GRO does in a NIC driver: the
//! consecutive segments of one TCP flow that one read from the socket
//! decrypts are written to the TUN device as one super-packet, so the
//! kernel (and the receiving pod's TCP) handles one packet, not 45.

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

/// Merges consecutive segments of one TCP over IPv4 flow into one
/// super-packet, as GRO does: same addresses, ports, TTL, TOS, IPv4
/// flags, acknowledgement, TCP header (options included) and flags (ACK,
/// with PSH allowed on the last), each segment starting where the last
/// ended, all of the first one's size but the last, which may be shorter.
/// Anything else is passed on as it is, after what is held.
pub struct Coalescer {
    /// The packet being built, behind room for the `virtio_net_hdr`.
    buf: Vec<u8>,
    /// Bytes held (header room included); 0: nothing held.
    len: usize,
    /// Segments merged.
    count: usize,
    /// Payload size of the first segment (the merged packet's MSS).
    mss: usize,
    /// IPv4 + TCP header length of the held packet.
    hdrs: usize,
    /// Sequence number the next segment must carry.
    next_seq: u32,
    /// The held packet can take no more (a short or PSH segment came).
    closed: bool,
}

/// Most segments merged into one packet.
const MAX_MERGED: usize = 64;
/// Largest merged IPv4 packet.
const MAX_MERGED_LEN: usize = 65_535;
/// TCP flags a mergeable segment may carry: ACK, and PSH.
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

impl Default for Coalescer {
    fn default() -> Self {
        Self {
            buf: vec![0u8; VNET_HDR_LEN + MAX_MERGED_LEN],
            len: 0,
            count: 0,
            mss: 0,
            hdrs: 0,
            next_seq: 0,
            closed: false,
        }
    }
}

impl Coalescer {
    /// Takes one decrypted packet; `write` receives whatever must be
    /// written to the TUN device now (its `virtio_net_hdr` in front).
    pub fn push(&mut self, packet: &[u8], write: &mut impl FnMut(&[u8])) {
        match mergeable(packet) {
            Some((hdrs, seq)) => {
                if self.len > 0 && self.fits(packet, hdrs, seq) {
                    self.append(packet, hdrs);
                    return;
                }
                self.flush(write);
                self.start(packet, hdrs, seq);
            }
            None => {
                self.flush(write);
                let mut out = Vec::with_capacity(VNET_HDR_LEN + packet.len());
                out.extend_from_slice(&WRITE_HDR);
                out.extend_from_slice(packet);
                write(&out);
            }
        }
    }

    /// Writes what is held.
    pub fn flush(&mut self, write: &mut impl FnMut(&[u8])) {
        if self.len == 0 {
            return;
        }
        let total = self.len - VNET_HDR_LEN;
        let p = &mut self.buf[VNET_HDR_LEN..self.len];
        if self.count == 1 {
            self.buf[..VNET_HDR_LEN].copy_from_slice(&WRITE_HDR);
        } else {
            // IPv4 length and checksum of the merged packet.
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[10] = 0;
            p[11] = 0;
            let c = fold(add(0, &p[..20]));
            p[10..12].copy_from_slice(&c.to_be_bytes());
            // The TCP checksum is left to the kernel as for a packet it
            // would send: the pseudo-header's sum in the field, and
            // `NEEDS_CSUM` from the TCP header on. (The payload was
            // authenticated by WireGuard; the kernel does not recompute a
            // checksum for local delivery.)
            let seed = !fold(pseudo_header(&p[..20], IPPROTO_TCP, total - 20));
            p[36..38].copy_from_slice(&seed.to_be_bytes());
            let mut h = [0u8; VNET_HDR_LEN];
            h[0] = F_NEEDS_CSUM;
            h[1] = GSO_TCPV4;
            h[2..4].copy_from_slice(&(self.hdrs as u16).to_le_bytes());
            h[4..6].copy_from_slice(&(self.mss as u16).to_le_bytes());
            h[6..8].copy_from_slice(&20u16.to_le_bytes());
            h[8..10].copy_from_slice(&16u16.to_le_bytes());
            self.buf[..VNET_HDR_LEN].copy_from_slice(&h);
        }
        write(&self.buf[..self.len]);
        self.len = 0;
        self.count = 0;
        self.closed = false;
    }

    fn start(&mut self, packet: &[u8], hdrs: usize, seq: u32) {
        let payload = packet.len() - hdrs;
        self.buf[VNET_HDR_LEN..VNET_HDR_LEN + packet.len()].copy_from_slice(packet);
        self.len = VNET_HDR_LEN + packet.len();
        self.count = 1;
        self.mss = payload;
        self.hdrs = hdrs;
        self.next_seq = seq.wrapping_add(payload as u32);
        self.closed = packet[33] & TCP_PSH != 0;
    }

    fn fits(&self, packet: &[u8], hdrs: usize, seq: u32) -> bool {
        let held = &self.buf[VNET_HDR_LEN..VNET_HDR_LEN + self.hdrs];
        let payload = packet.len() - hdrs;
        !self.closed
            && self.count < MAX_MERGED
            && hdrs == self.hdrs
            && seq == self.next_seq
            && payload <= self.mss
            && self.len - VNET_HDR_LEN + payload <= MAX_MERGED_LEN
            // IPv4: version/IHL, TOS; flags (DF); TTL, protocol;
            // addresses. (Length, identification and checksum differ.)
            && held[..2] == packet[..2]
            && held[6..7] == packet[6..7]
            && held[8..10] == packet[8..10]
            && held[12..20] == packet[12..20]
            // TCP: ports; acknowledgement; flags but PSH; window; the
            // options (timestamps included, as GRO requires).
            && held[20..24] == packet[20..24]
            && held[28..32] == packet[28..32]
            && held[33] & !TCP_PSH == packet[33] & !TCP_PSH
            && held[34..36] == packet[34..36]
            && held[40..hdrs] == packet[40..hdrs]
    }

    fn append(&mut self, packet: &[u8], hdrs: usize) {
        let payload = &packet[hdrs..];
        self.buf[self.len..self.len + payload.len()].copy_from_slice(payload);
        self.len += payload.len();
        self.count += 1;
        self.next_seq = self.next_seq.wrapping_add(payload.len() as u32);
        let flags = packet[33];
        if payload.len() < self.mss || flags & TCP_PSH != 0 {
            // PSH goes on the merged packet; nothing may follow.
            self.buf[VNET_HDR_LEN + 33] |= flags & TCP_PSH;
            self.closed = true;
        }
    }
}

/// Header length and sequence number of a segment [`Coalescer`] may
/// merge: IPv4 without options, not a fragment, TCP with ACK (and maybe
/// PSH) only, some payload, lengths consistent.
fn mergeable(p: &[u8]) -> Option<(usize, u32)> {
    if p.len() < 40 || p[0] != 0x45 || p[9] != IPPROTO_TCP {
        return None;
    }
    if usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len() {
        return None;
    }
    if u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
        return None;
    }
    let thl = usize::from(p[32] >> 4) * 4;
    let hdrs = 20 + thl;
    if thl < 20 || p.len() <= hdrs || p[33] & !TCP_PSH != TCP_ACK {
        return None;
    }
    Some((hdrs, u32::from_be_bytes([p[24], p[25], p[26], p[27]])))
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
    fn consecutive_segments_merge_into_a_packet_the_kernel_can_cut_back() {
        let payload: Vec<u8> = (0..9_000u32).map(|i| (i * 13 + 1) as u8).collect();
        let original = tcp_packet(&payload, 0x18);
        let tso = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            gso_size: 1388,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut scratch = vec![0u8; 65_536];
        let mut segs: Vec<Vec<u8>> = Vec::new();
        let mut p = original.clone();
        for_each_packet(&tso, &mut p, &mut scratch, |s| segs.push(s.to_vec())).unwrap();
        // The same identification everywhere is fine for merging; an
        // unrelated packet in between flushes.
        let mut c = Coalescer::default();
        let mut written: Vec<Vec<u8>> = Vec::new();
        let mut write = |b: &[u8]| written.push(b.to_vec());
        for s in &segs[..3] {
            c.push(s, &mut write);
        }
        let mut other = tcp_packet(b"x", 0x10);
        other[20] = 9; // another flow
        c.push(&other, &mut write);
        for s in &segs[3..] {
            c.push(s, &mut write);
        }
        c.flush(&mut write);
        assert_eq!(written.len(), 3, "merged, the other packet, merged");
        // The merged packets carry a TSO header; cut again, they give the
        // segments back (checksums included).
        let mut again: Vec<Vec<u8>> = Vec::new();
        for w in [&written[0], &written[2]] {
            let h = VnetHdr::parse(w).unwrap();
            assert_eq!((h.gso_type, h.gso_size), (GSO_TCPV4, 1388));
            let mut body = w[VNET_HDR_LEN..].to_vec();
            assert_eq!(
                usize::from(u16::from_be_bytes([body[2], body[3]])),
                body.len()
            );
            assert_eq!(
                reference(&body[..20]),
                0,
                "IPv4 checksum of the merged packet"
            );
            for_each_packet(&h, &mut body, &mut scratch, |s| again.push(s.to_vec())).unwrap();
        }
        assert_eq!(again.len(), segs.len());
        for (a, b) in again.iter().zip(&segs) {
            // Identification aside (each merged packet restarts it).
            assert_eq!(a[20..], b[20..]);
        }
        assert_eq!(written[1][..VNET_HDR_LEN], WRITE_HDR);
        assert_eq!(written[1][VNET_HDR_LEN..], other[..]);

        // Out of order, a gap, or a SYN: not merged.
        let mut written = Vec::new();
        let mut write = |b: &[u8]| written.push(b.to_vec());
        let mut c = Coalescer::default();
        c.push(&segs[1], &mut write);
        c.push(&segs[0], &mut write);
        c.push(&segs[2], &mut write);
        let mut syn = segs[3].clone();
        syn[33] |= 0x02;
        c.push(&syn, &mut write);
        c.flush(&mut write);
        assert_eq!(written.len(), 4);
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
