//! The pinned maps shared by every program (names and layouts come from
//! `overlay-common`).

use aya_ebpf::{
    btf_maps::{
        Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, lpm_trie::Key,
    },
    macros::btf_map,
};
use overlay_common::{
    CidrKey, CtEntry, CtKey, DropKey, ENCRYPTION_F_ON, Encryption, Endpoint, Identity, Ipv4Bytes,
    MAX_CONNTRACK, MAX_ENDPOINTS, MAX_IDENTITY_ENTRIES, MAX_PEER_MACS, MAX_PEERS, MAX_POLICY_CIDRS,
    MAX_POLICY_ENDPOINTS, MAX_POLICY_RULES, MAX_ROUTES, MacKey, NodeConfig, POLICY_EVENTS_BYTES,
    Peer, PolicyEndpoint, PolicyEvent, PolicyKey, PolicyRule, Route, STATS_LEN, Stat,
};

#[btf_map(name = "ovl_config_v1")]
pub static CONFIG: Array<NodeConfig, 1> = Array::new();

#[btf_map(name = "ovl_routes_v1")]
pub static ROUTES: LpmTrie<Ipv4Bytes, Route, { MAX_ROUTES as usize }> = LpmTrie::new();

#[btf_map(name = "ovl_endpoints_v1")]
pub static ENDPOINTS: HashMap<Ipv4Bytes, Endpoint, { MAX_ENDPOINTS as usize }> = HashMap::new();

#[btf_map(name = "ovl_peers_v1")]
pub static PEERS: HashMap<Ipv4Bytes, Peer, { MAX_PEERS as usize }> = HashMap::new();

#[btf_map(name = "ovl_stats_v5")]
pub static STATS: PerCpuArray<u64, { STATS_LEN as usize }> = PerCpuArray::new();

#[btf_map(name = "ovl_peer_macs_v1")]
pub static PEER_MACS: HashMap<MacKey, Ipv4Bytes, { MAX_PEER_MACS as usize }> = HashMap::new();

#[btf_map(name = "ovl_encryption_v1")]
pub static ENCRYPTION: Array<Encryption, 1> = Array::new();

#[btf_map(name = "ovl_identities_v1")]
pub static IDENTITIES: HashMap<Ipv4Bytes, Identity, { MAX_IDENTITY_ENTRIES as usize }> =
    HashMap::new();

#[btf_map(name = "ovl_policy_eps_v1")]
pub static POLICY_EPS: HashMap<Ipv4Bytes, PolicyEndpoint, { MAX_POLICY_ENDPOINTS as usize }> =
    HashMap::new();

#[btf_map(name = "ovl_policy_v1")]
pub static POLICY: LpmTrie<PolicyKey, PolicyRule, { MAX_POLICY_RULES as usize }> = LpmTrie::new();

#[btf_map(name = "ovl_policy_cidrs_v1")]
pub static POLICY_CIDRS: LpmTrie<CidrKey, Identity, { MAX_POLICY_CIDRS as usize }> = LpmTrie::new();

#[btf_map(name = "ovl_ct_v1")]
pub static CONNTRACK: LruHashMap<CtKey, CtEntry, { MAX_CONNTRACK as usize }> = LruHashMap::new();

#[btf_map(name = "ovl_policy_events_v1")]
pub static POLICY_EVENTS: RingBuf<PolicyEvent, { POLICY_EVENTS_BYTES as usize }> = RingBuf::new();

#[btf_map(name = "ovl_policy_drops_v1")]
pub static POLICY_DROPS: PerCpuHashMap<DropKey, u64, { 2 * MAX_POLICY_ENDPOINTS as usize }> =
    PerCpuHashMap::new();

/// This node's configuration, once the agent has written it.
#[inline(always)]
pub fn config() -> Option<&'static NodeConfig> {
    CONFIG
        .get(0)
        .filter(|c| c.flags & overlay_common::CONFIG_F_READY != 0)
}

/// The WireGuard device's interface index when pod traffic between nodes
/// is encrypted (`--encryption wireguard`), `None` when it is not.
#[inline(always)]
pub fn encryption() -> Option<u32> {
    ENCRYPTION
        .get(0)
        .filter(|e| e.flags & ENCRYPTION_F_ON != 0)
        .map(|e| e.ifindex)
}

/// The node owning the block that contains `ip`.
#[inline(always)]
pub fn route(ip: Ipv4Bytes) -> Option<&'static Route> {
    ROUTES.get(&Key::new(32, ip))
}

/// Bumps one counter.
#[inline(always)]
pub fn count(stat: Stat) {
    if let Some(slot) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *slot += 1 };
    }
}
