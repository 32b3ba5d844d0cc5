//! Wire and protocol constants.

/// Default UDP destination port of our VXLAN traffic (Weave's data port).
pub const DEFAULT_VXLAN_PORT: u16 = 6784;

/// Default UDP port of datapath liveness probes: `from_uplink` answers a
/// probe sent to this port by itself, with no agent involved.
pub const DEFAULT_PROBE_PORT: u16 = 6785;

/// First bytes of every probe payload.
pub const PROBE_MAGIC: [u8; 4] = *b"OVLP";
/// Version byte of the probe payload.
pub const PROBE_VERSION: u8 = 1;
/// Length of a probe payload: magic (4), version (1), reserved (3), nonce
/// (8), send time (8). The answering program only checks magic and version
/// and reflects the rest unchanged.
pub const PROBE_LEN: usize = 24;

/// Default VXLAN network identifier.
pub const DEFAULT_VNI: u32 = 1;

/// Largest VNI that fits the 24-bit VXLAN field.
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// Bytes VXLAN adds in front of a pod's frame on the underlay: outer IPv4
/// (20) + UDP (8) + VXLAN (8) + the inner Ethernet header (14). The pod MTU is
/// the uplink MTU minus this.
pub const VXLAN_OVERHEAD: u32 = 50;

/// Outer IPv4 TTL of encapsulated packets.
pub const OUTER_TTL: u8 = 64;

/// Lowest UDP source port of encapsulated packets. The source port carries the
/// inner flow's hash (ECMP entropy, RFC 7348 section 5); it is mapped into
/// `[VXLAN_SPORT_MIN, VXLAN_SPORT_MAX]`, the IANA dynamic range.
pub const VXLAN_SPORT_MIN: u16 = 49152;
/// Highest UDP source port of encapsulated packets.
pub const VXLAN_SPORT_MAX: u16 = 65535;

/// The `I` flag of the VXLAN header (RFC 7348): the VNI field is valid.
pub const VXLAN_FLAG_VNI: u8 = 0x08;

/// Link-local gateway every pod routes through; the host side of the pod's
/// veth answers for it.
pub const POD_GATEWAY: [u8; 4] = [169, 254, 1, 1];

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// IPv4 header length without options.
pub const IPV4_HLEN: usize = 20;
/// UDP header length.
pub const UDP_HLEN: usize = 8;
/// VXLAN header length.
pub const VXLAN_HLEN: usize = 8;
/// Offset of the inner Ethernet header in an encapsulated frame.
pub const INNER_ETH_OFFSET: usize = ETH_HLEN + IPV4_HLEN + UDP_HLEN + VXLAN_HLEN;
/// Everything in front of the inner IPv4 header of an encapsulated frame.
pub const ENCAP_HEADERS_LEN: usize = INNER_ETH_OFFSET + ETH_HLEN;

/// EtherType of IPv4, host byte order.
pub const ETH_P_IP: u16 = 0x0800;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

const _: () = assert!(INNER_ETH_OFFSET + ETH_HLEN - ETH_HLEN == VXLAN_OVERHEAD as usize);

/// The MAC address that stands for a node inside VXLAN frames: `0e:4f`
/// followed by the node's IPv4 address (a locally administered unicast
/// address). Encapsulated frames carry the destination node's VTEP MAC as
/// inner destination and the source node's as inner source, so a Linux
/// `vxlan` device given the VTEP MAC of its node accepts our frames.
pub const fn vtep_mac(node_ip: [u8; 4]) -> [u8; 6] {
    [0x0e, 0x4f, node_ip[0], node_ip[1], node_ip[2], node_ip[3]]
}
