//! NetworkPolicy in the datapath: map names, keys, values and timeouts.
//!
//! The agent compiles the Kubernetes objects into these maps; the
//! programs only look things up:
//!
//! - [`MAP_IDENTITIES`]: every pod address of the cluster → a small label
//!   identity (pods with the same namespace and labels share one), so a
//!   rule needs one entry per identity, not one per remote pod;
//! - [`MAP_POLICY_ENDPOINTS`]: the local pods isolated for ingress and/or
//!   egress (a pod absent from it is not isolated at all);
//! - [`MAP_POLICY`]: LPM trie of allowed (local pod, direction, remote
//!   identity, protocol, port range);
//! - [`MAP_POLICY_CIDRS`]: LPM trie per (local pod, direction) of the
//!   `ipBlock` regions, each giving a CIDR identity used in [`MAP_POLICY`]
//!   like a pod identity (`except` regions give [`IDENTITY_NONE`]);
//! - [`MAP_CONNTRACK`]: LRU connection tracking, so replies of an allowed
//!   connection pass both ways;
//! - [`MAP_POLICY_DROPS`]: per-CPU drop counters per (local pod, direction).
//!
//! Byte order: addresses, identities in keys and ports in keys are in
//! network byte order (an LPM trie compares key bytes from the first), so
//! that port ranges can be prefixes.

use crate::Ipv4Bytes;

/// Name of the identity map (hash: pod IPv4 → [`Identity`]).
pub const MAP_IDENTITIES: &str = "ovl_identities_v1";
/// Name of the isolated-endpoint map (hash: local pod IPv4 → [`PolicyEndpoint`]).
pub const MAP_POLICY_ENDPOINTS: &str = "ovl_policy_eps_v1";
/// Name of the rule map (LPM trie: [`PolicyKey`] → [`PolicyRule`]).
pub const MAP_POLICY: &str = "ovl_policy_v1";
/// Name of the `ipBlock` map (LPM trie: [`CidrKey`] → [`Identity`]).
pub const MAP_POLICY_CIDRS: &str = "ovl_policy_cidrs_v1";
/// Name of the connection tracking map (LRU hash: [`CtKey`] → [`CtEntry`]).
pub const MAP_CONNTRACK: &str = "ovl_ct_v1";
/// Name of the per-endpoint drop counters (per-CPU hash: [`DropKey`] → `u64`).
pub const MAP_POLICY_DROPS: &str = "ovl_policy_drops_v1";
/// Name of the ring buffer of policy drops ([`PolicyEvent`] records) the
/// agent turns into rate-limited "blocked by NetworkPolicy" log lines.
pub const MAP_POLICY_EVENTS: &str = "ovl_policy_events_v1";

/// Every NetworkPolicy map, in a fixed order.
pub const POLICY_MAPS: [&str; 7] = [
    MAP_IDENTITIES,
    MAP_POLICY_ENDPOINTS,
    MAP_POLICY,
    MAP_POLICY_CIDRS,
    MAP_CONNTRACK,
    MAP_POLICY_DROPS,
    MAP_POLICY_EVENTS,
];

/// Bytes of [`MAP_POLICY_EVENTS`]: 4,096 events; when the agent falls
/// behind a flood, further events are lost (the counters still count).
pub const POLICY_EVENTS_BYTES: u32 = 4096 * 32;

/// Capacity of [`MAP_IDENTITIES`]: pods in the cluster.
pub const MAX_IDENTITY_ENTRIES: u32 = 262_144;
/// Capacity of [`MAP_POLICY_ENDPOINTS`] and [`MAP_POLICY_DROPS`] (twice:
/// two directions): isolated pods on one node.
pub const MAX_POLICY_ENDPOINTS: u32 = 4096;
/// Capacity of [`MAP_POLICY`]: (local pod, direction, remote identity,
/// port prefix) entries on one node.
pub const MAX_POLICY_RULES: u32 = 262_144;
/// Capacity of [`MAP_POLICY_CIDRS`]: `ipBlock` prefixes over the local pods.
pub const MAX_POLICY_CIDRS: u32 = 65_536;
/// Capacity of [`MAP_CONNTRACK`]: tracked connections on one node (the
/// least recently used is evicted when full).
pub const MAX_CONNTRACK: u32 = 262_144;

/// No identity: an address that is not a pod, or an `except` region.
pub const IDENTITY_NONE: u32 = 0;
/// Pod identities are `1..CIDR_IDENTITY_BASE`; CIDR identities (one per
/// distinct set of `ipBlock` rules of one local pod and direction) are
/// `CIDR_IDENTITY_BASE..`.
pub const CIDR_IDENTITY_BASE: u32 = 0x8000_0000;

/// Direction of a policy decision, as seen from the local pod.
pub const DIR_INGRESS: u8 = 0;
/// See [`DIR_INGRESS`].
pub const DIR_EGRESS: u8 = 1;

/// Bit in [`PolicyEndpoint::flags`]: the pod is isolated for ingress.
pub const POLICY_F_INGRESS: u32 = 1 << 0;
/// Bit in [`PolicyEndpoint::flags`]: the pod is isolated for egress.
pub const POLICY_F_EGRESS: u32 = 1 << 1;

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of SCTP.
pub const IPPROTO_SCTP: u8 = 132;

/// Bits of [`PolicyKey`] that are always compared: endpoint, direction,
/// padding and remote identity. A rule for every protocol and port uses
/// exactly this prefix length.
pub const POLICY_PREFIX_ANY: u32 = 96;
/// Prefix length of a rule for one protocol and every port.
pub const POLICY_PREFIX_PROTO: u32 = POLICY_PREFIX_ANY + 8;
/// Prefix length of a rule for one protocol and one port (a range of
/// `2^k` aligned ports is `POLICY_PREFIX_PORT - k`).
pub const POLICY_PREFIX_PORT: u32 = POLICY_PREFIX_PROTO + 16;
/// Bits of [`CidrKey`] before the address.
pub const CIDR_PREFIX_BASE: u32 = 64;

/// Value of [`MAP_IDENTITIES`] (and of [`MAP_POLICY_CIDRS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// The identity (host byte order); [`IDENTITY_NONE`] matches nothing.
    pub id: u32,
}
const _: () = assert!(size_of::<Identity>() == 4);

/// Value of [`MAP_POLICY_ENDPOINTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyEndpoint {
    /// `POLICY_F_*` bits.
    pub flags: u32,
}
const _: () = assert!(size_of::<PolicyEndpoint>() == 4);

/// Data of a [`MAP_POLICY`] LPM key (the trie prepends the prefix length).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// The local pod's IPv4 address (network byte order).
    pub endpoint: Ipv4Bytes,
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`].
    pub direction: u8,
    /// Always zero.
    pub pad: [u8; 3],
    /// Remote identity (network byte order).
    pub remote: [u8; 4],
    /// IP protocol.
    pub proto: u8,
    /// Destination port (network byte order).
    pub port: [u8; 2],
    /// Always zero; never part of a prefix.
    pub pad2: u8,
}
const _: () = assert!(size_of::<PolicyKey>() == 16);
const _: () = assert!(POLICY_PREFIX_PORT == 120);

/// Value of [`MAP_POLICY`]: the packet is allowed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyRule {
    /// Reserved; always zero.
    pub flags: u32,
}
const _: () = assert!(size_of::<PolicyRule>() == 4);

/// Data of a [`MAP_POLICY_CIDRS`] LPM key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CidrKey {
    /// The local pod's IPv4 address (network byte order).
    pub endpoint: Ipv4Bytes,
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`].
    pub direction: u8,
    /// Always zero.
    pub pad: [u8; 3],
    /// The remote address or prefix (network byte order).
    pub addr: Ipv4Bytes,
}
const _: () = assert!(size_of::<CidrKey>() == 12);

/// Key of [`MAP_CONNTRACK`]: a flow as its first packet had it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// Source address of the first packet (network byte order).
    pub src: Ipv4Bytes,
    /// Destination address of the first packet (network byte order).
    pub dst: Ipv4Bytes,
    /// Source port (network byte order); the echo identifier for ICMP echo.
    pub sport: [u8; 2],
    /// Destination port (network byte order); the echo identifier for ICMP echo.
    pub dport: [u8; 2],
    /// IP protocol.
    pub proto: u8,
    /// Always zero.
    pub pad: [u8; 3],
}
const _: () = assert!(size_of::<CtKey>() == 16);

/// Bit in [`CtEntry::flags`]: a packet went the other way (a reply).
pub const CT_F_REPLIED: u32 = 1 << 0;
/// Bit in [`CtEntry::flags`]: TCP FIN or RST seen: the connection is closing.
pub const CT_F_CLOSING: u32 = 1 << 1;

/// Value of [`MAP_CONNTRACK`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// `bpf_ktime_get_ns` of the last packet (host byte order).
    pub last_seen_ns: u64,
    /// `CT_F_*` bits.
    pub flags: u32,
    /// Always zero.
    pub pad: u32,
}
const _: () = assert!(size_of::<CtEntry>() == 16);

/// Key of [`MAP_POLICY_DROPS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropKey {
    /// The local pod's IPv4 address (network byte order).
    pub endpoint: Ipv4Bytes,
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`].
    pub direction: u8,
    /// Always zero.
    pub pad: [u8; 3],
}
const _: () = assert!(size_of::<DropKey>() == 8);

/// A record of [`MAP_POLICY_EVENTS`]: one dropped packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyEvent {
    /// The local pod (network byte order).
    pub local: Ipv4Bytes,
    /// The other end (network byte order).
    pub remote: Ipv4Bytes,
    /// Destination port (network byte order), zero without ports.
    pub port: [u8; 2],
    /// IP protocol.
    pub proto: u8,
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`].
    pub direction: u8,
}
const _: () = assert!(size_of::<PolicyEvent>() == 12);

const SEC: u64 = 1_000_000_000;
/// Idle time after which a TCP connection that saw a reply is forgotten.
pub const CT_TCP_ESTABLISHED_NS: u64 = 6 * 3600 * SEC;
/// Idle time after which a TCP connection with no reply yet is forgotten.
pub const CT_TCP_SYN_NS: u64 = 60 * SEC;
/// Idle time after which a TCP connection that saw FIN or RST is forgotten.
pub const CT_TCP_CLOSING_NS: u64 = 10 * SEC;
/// Idle time after which a UDP or SCTP flow is forgotten.
pub const CT_DATAGRAM_NS: u64 = 120 * SEC;
/// Idle time after which any other flow (ICMP echo) is forgotten.
pub const CT_OTHER_NS: u64 = 30 * SEC;

/// How long an entry of protocol `proto` with `flags` stays valid after
/// its last packet.
pub const fn ct_timeout_ns(proto: u8, flags: u32) -> u64 {
    match proto {
        IPPROTO_TCP => {
            if flags & CT_F_CLOSING != 0 {
                CT_TCP_CLOSING_NS
            } else if flags & CT_F_REPLIED != 0 {
                CT_TCP_ESTABLISHED_NS
            } else {
                CT_TCP_SYN_NS
            }
        }
        crate::IPPROTO_UDP | IPPROTO_SCTP => CT_DATAGRAM_NS,
        _ => CT_OTHER_NS,
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: each type is `#[repr(C)]`, `Copy`, made of integers and byte
    // arrays only, with every padding byte written out as a field.
    unsafe impl aya::Pod for super::Identity {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyEndpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CidrKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DropKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyEvent {}
}
