//! The VXLAN wire format (RFC 7348) as we write it: pure byte building, no
//! helpers, so the same code is easy to read next to the test vectors.

#![cfg_attr(
    not(target_arch = "bpf"),
    expect(dead_code, reason = "only the eBPF build calls these")
)]

use overlay_common::{
    ENCAP_HEADERS_LEN, ETH_HLEN, ETH_P_IP, INNER_ETH_OFFSET, IPPROTO_UDP, IPV4_HLEN, OUTER_TTL,
    UDP_HLEN, VXLAN_FLAG_VNI, VXLAN_HLEN, VXLAN_SPORT_MAX, VXLAN_SPORT_MIN, vtep_mac,
};

/// Everything that varies between two encapsulated packets.
pub struct Encap {
    /// Next-hop MAC on the underlay.
    pub dmac: [u8; 6],
    /// Our uplink's MAC.
    pub smac: [u8; 6],
    /// This node's underlay address.
    pub src_ip: [u8; 4],
    /// The destination node's underlay address.
    pub dst_ip: [u8; 4],
    /// TOS of the inner packet, copied outward (DSCP and ECN, RFC 6040 normal mode).
    pub tos: u8,
    /// Length of the inner IPv4 packet (its total length field).
    pub inner_ip_len: u16,
    /// Outer UDP source port.
    pub sport: u16,
    /// Outer UDP destination port.
    pub dport: u16,
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
}

/// Maps a flow hash into the VXLAN source port range, so that every packet
/// of a flow takes the same underlay path and different flows spread out.
#[inline(always)]
pub fn source_port(hash: u32) -> u16 {
    let span = (VXLAN_SPORT_MAX - VXLAN_SPORT_MIN) as u64 + 1;
    VXLAN_SPORT_MIN + ((hash as u64 * span) >> 32) as u16
}

/// RFC 1071 checksum of an IPv4 header without options.
#[inline(always)]
pub fn ipv4_checksum(hdr: &[u8; IPV4_HLEN]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < IPV4_HLEN {
        sum += u32::from(u16::from_be_bytes([hdr[i], hdr[i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The 64 bytes that precede the inner IPv4 header once encapsulated:
/// outer Ethernet, outer IPv4, UDP, VXLAN and the inner Ethernet header.
#[inline(always)]
pub fn headers(e: &Encap) -> [u8; ENCAP_HEADERS_LEN] {
    let mut h = [0u8; ENCAP_HEADERS_LEN];
    let udp_len = (UDP_HLEN + VXLAN_HLEN + ETH_HLEN) as u16 + e.inner_ip_len;
    let ip_len = IPV4_HLEN as u16 + udp_len;

    // Outer Ethernet.
    h[0..6].copy_from_slice(&e.dmac);
    h[6..12].copy_from_slice(&e.smac);
    h[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());

    // Outer IPv4: no options, DF set (the pod MTU leaves room for the
    // overhead, so the outer packet never needs fragmenting), ID 0 as the
    // kernel does for DF packets it will not fragment.
    let mut ip = [0u8; IPV4_HLEN];
    ip[0] = 0x45;
    ip[1] = e.tos;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = OUTER_TTL;
    ip[9] = IPPROTO_UDP;
    ip[12..16].copy_from_slice(&e.src_ip);
    ip[16..20].copy_from_slice(&e.dst_ip);
    let csum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    h[ETH_HLEN..ETH_HLEN + IPV4_HLEN].copy_from_slice(&ip);

    // UDP, checksum 0 (allowed for IPv4, RFC 7348 section 5).
    let udp = ETH_HLEN + IPV4_HLEN;
    h[udp..udp + 2].copy_from_slice(&e.sport.to_be_bytes());
    h[udp + 2..udp + 4].copy_from_slice(&e.dport.to_be_bytes());
    h[udp + 4..udp + 6].copy_from_slice(&udp_len.to_be_bytes());

    // VXLAN: I flag, 24-bit VNI.
    let vx = udp + UDP_HLEN;
    h[vx] = VXLAN_FLAG_VNI;
    let vni = (e.vni << 8).to_be_bytes();
    h[vx + 4..vx + 8].copy_from_slice(&vni);

    // Inner Ethernet: node to node VTEP MACs.
    h[INNER_ETH_OFFSET..INNER_ETH_OFFSET + 6].copy_from_slice(&vtep_mac(e.dst_ip));
    h[INNER_ETH_OFFSET + 6..INNER_ETH_OFFSET + 12].copy_from_slice(&vtep_mac(e.src_ip));
    h[INNER_ETH_OFFSET + 12..INNER_ETH_OFFSET + 14].copy_from_slice(&ETH_P_IP.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_header() {
        // Example header from RFC 1071 discussions: 45 00 00 73 00 00 40 00
        // 40 11 [b8 61] c0 a8 00 01 c0 a8 00 c7.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00,
            0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(ipv4_checksum(&h), 0);
    }

    #[test]
    fn source_ports_stay_in_range() {
        for h in [0, 1, u32::MAX / 2, u32::MAX] {
            let p = source_port(h);
            assert!((VXLAN_SPORT_MIN..=VXLAN_SPORT_MAX).contains(&p));
        }
        assert_eq!(source_port(0), VXLAN_SPORT_MIN);
        assert_eq!(source_port(u32::MAX), VXLAN_SPORT_MAX);
    }
}
