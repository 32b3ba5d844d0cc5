//! Map names, sizes, keys and values.
//!
//! IPv4 addresses are stored as `[u8; 4]` in network byte order: the bytes as
//! they appear on the wire, which `bpftool map dump` prints readably.

/// Directory under bpffs where the agent pins maps and links by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/overlay";

/// Name of the node configuration map (array of one [`NodeConfig`]).
pub const MAP_CONFIG: &str = "ovl_config_v1";
/// Name of the route map (LPM trie: pod block → [`Route`]).
pub const MAP_ROUTES: &str = "ovl_routes_v1";
/// Name of the local endpoint map (hash: pod IPv4 → [`Endpoint`]).
pub const MAP_ENDPOINTS: &str = "ovl_endpoints_v1";
/// Name of the peer map (hash: node IPv4 → [`Peer`]).
pub const MAP_PEERS: &str = "ovl_peers_v1";
/// Name of the counter map (per-CPU array of `u64`, indexed by [`crate::Stat`]).
/// `_v2`: four counters were added (the array grew from 17 to 21 slots);
/// `_v3`: three more for NetworkPolicy (24 slots); `_v4`: four more for
/// direct routing (28 slots); `_v5`: five more for encryption (33 slots).
pub const MAP_STATS: &str = "ovl_stats_v5";
/// Name of the peer MAC map (hash: [`MacKey`] → the peer's node IPv4):
/// which underlay MAC address belongs to which node, for the check on
/// directly routed pod packets ([`ROUTE_F_DIRECT`]).
pub const MAP_PEER_MACS: &str = "ovl_peer_macs_v1";

/// Names of maps an earlier release pinned and this one replaced (a layout
/// change bumps the suffix): the agent unpins them once its programs no
/// longer use them, and uninstall removes them.
pub const RETIRED_MAPS: [&str; 4] = [
    "ovl_stats_v1",
    "ovl_stats_v2",
    "ovl_stats_v3",
    "ovl_stats_v4",
];
/// Name of the encryption map (array of one [`Encryption`]): whether pod
/// traffic between nodes goes through the WireGuard device, and which.
pub const MAP_ENCRYPTION: &str = "ovl_encryption_v1";

/// Every map the programs use, in a fixed order.
pub const ALL_MAPS: [&str; 7] = [
    MAP_CONFIG,
    MAP_ROUTES,
    MAP_ENDPOINTS,
    MAP_PEERS,
    MAP_STATS,
    MAP_PEER_MACS,
    MAP_ENCRYPTION,
];

/// Name of the program attached at TC ingress of each pod's host-side veth.
pub const PROG_FROM_POD: &str = "from_pod";
/// Name of the program attached at TC ingress of the node's uplink.
pub const PROG_FROM_UPLINK: &str = "from_uplink";
/// Name of the program attached at TC egress of each pod's host-side veth
/// (what the host stack routes to the pod: NetworkPolicy ingress).
pub const PROG_TO_POD: &str = "to_pod";
/// Name of the program attached at TC ingress of the WireGuard device
/// (decrypted pod packets from other nodes).
pub const PROG_FROM_WIREGUARD: &str = "from_wireguard";

/// Capacity of [`MAP_ROUTES`]: pod blocks in the cluster.
pub const MAX_ROUTES: u32 = 16384;
/// Capacity of [`MAP_ENDPOINTS`]: pods on one node.
pub const MAX_ENDPOINTS: u32 = 4096;
/// Capacity of [`MAP_PEERS`]: nodes in the cluster.
pub const MAX_PEERS: u32 = 16384;
/// Capacity of [`MAP_PEER_MACS`]: one MAC per node of the cluster.
pub const MAX_PEER_MACS: u32 = MAX_PEERS;

/// An IPv4 address in network byte order.
pub type Ipv4Bytes = [u8; 4];

/// Bit in [`NodeConfig::flags`]: the configuration has been written. The
/// programs pass every packet untouched until it is set.
pub const CONFIG_F_READY: u32 = 1 << 0;

/// Value of [`MAP_CONFIG`] at index 0: who this node is on the underlay.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's underlay IPv4 address (network byte order).
    pub node_ip: Ipv4Bytes,
    /// Interface index of the uplink (host byte order).
    pub uplink_ifindex: u32,
    /// VXLAN UDP destination port (host byte order).
    pub vxlan_port: u16,
    /// UDP port on which `from_uplink` answers datapath liveness probes
    /// (host byte order); 0 turns the answering off. It was an always-zero
    /// padding field before probes existed, so a map written by an older
    /// agent reads as "probes off".
    pub probe_port: u16,
    /// VXLAN network identifier, 24 bits (host byte order).
    pub vni: u32,
    /// Pod MTU (host byte order).
    pub mtu: u32,
    /// `CONFIG_F_*` bits.
    pub flags: u32,
}
const _: () = assert!(size_of::<NodeConfig>() == 24);

/// Value of [`MAP_ROUTES`]: the node that owns a pod block.
///
/// The key is an LPM trie key: prefix length in bits (host byte order)
/// followed by the block's [`Ipv4Bytes`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// Underlay IPv4 address of the owning node (network byte order).
    pub node_ip: Ipv4Bytes,
    /// `ROUTE_F_*` bits (host byte order).
    pub flags: u32,
}
const _: () = assert!(size_of::<Route>() == 8);

/// Bit in [`Route::flags`]: the owning node shares a link with this one
/// and the tunnel mode allows direct routing, so pod packets to the block
/// leave unencapsulated, with the pods' own addresses, to the node's MAC
/// (`bpf_redirect_neigh` with the node IP as next hop, out of the uplink).
pub const ROUTE_F_DIRECT: u32 = 1 << 0;

/// Bit in [`Route::flags`]: the owning node publishes a WireGuard key, so
/// with encryption on ([`Encryption`]) pod packets to the block go to the
/// WireGuard device; without the bit they are dropped (fail closed).
pub const ROUTE_F_ENCRYPT: u32 = 1 << 1;

/// Bit in [`Encryption::flags`]: pod traffic between nodes is encrypted.
pub const ENCRYPTION_F_ON: u32 = 1 << 0;

/// Value of [`MAP_ENCRYPTION`] at index 0 (all zero: encryption off).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Encryption {
    /// `ENCRYPTION_F_*` bits.
    pub flags: u32,
    /// Interface index of the WireGuard device (host byte order).
    pub ifindex: u32,
}
const _: () = assert!(size_of::<Encryption>() == 8);

/// Key of [`MAP_PEER_MACS`]: a MAC address (the six bytes as on the wire)
/// followed by two zero bytes, so that the key is 8 bytes long and aligned.
pub type MacKey = [u8; 8];

/// The [`MacKey`] of `mac`.
pub const fn mac_key(mac: [u8; 6]) -> MacKey {
    [mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0]
}

/// Value of [`MAP_ENDPOINTS`]: how to deliver to a pod on this node.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// Interface index of the pod's host-side veth (host byte order);
    /// `bpf_redirect_peer` to it lands in the pod's netns.
    pub ifindex: u32,
    /// MAC address of the pod's interface.
    pub pod_mac: [u8; 6],
    /// MAC address of the host-side veth (the pod's gateway).
    pub host_mac: [u8; 6],
    /// Reserved for endpoint flags; always zero for now.
    pub flags: u32,
}
const _: () = assert!(size_of::<Endpoint>() == 20);

/// Bit in [`Peer::flags`]: the peer's datapath is alive: it is routed to
/// and may send us VXLAN. A peer in the map without this bit is a known
/// node whose routes are withdrawn: only its liveness probes are answered.
pub const PEER_F_ACTIVE: u32 = 1 << 0;

/// Value of [`MAP_PEERS`]: a node of the cluster (see [`PEER_F_ACTIVE`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// `PEER_F_*` bits.
    pub flags: u32,
}
const _: () = assert!(size_of::<Peer>() == 4);

#[cfg(feature = "user")]
mod user {
    // SAFETY: each type is `#[repr(C)]`, `Copy`, made of integers and byte
    // arrays only, with every padding byte written out as a field.
    unsafe impl aya::Pod for super::NodeConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Route {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Endpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Peer {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Encryption {}
}
