//! Datapath counters: one slot per verdict and one per drop reason.

/// Index into [`crate::MAP_STATS`]. Every packet a program sees bumps
/// exactly one of these.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stat {
    /// `from_pod`: not ours (ARP, IPv6, host or outside traffic); passed on.
    FromPodPassed = 0,
    /// `from_pod`: delivered to a pod on this node.
    FromPodLocal = 1,
    /// `from_pod`: encapsulated and sent to another node.
    FromPodEncapsulated = 2,
    /// `from_uplink`: not VXLAN for us; passed on untouched.
    FromUplinkPassed = 3,
    /// `from_uplink`: decapsulated and delivered to a pod.
    FromUplinkDecapsulated = 4,
    /// Dropped: the packet ended before the headers it claims to carry.
    DropTruncated = 5,
    /// Dropped: a header is invalid (IP options or bad version on the outer
    /// header, VXLAN `I` flag missing, inner header not IPv4).
    DropMalformed = 6,
    /// Dropped: VXLAN from a node that is not in the peer map.
    DropUnknownPeer = 7,
    /// Dropped: VXLAN with a VNI other than ours.
    DropWrongVni = 8,
    /// Dropped: decapsulated packet for an address that is not a pod here.
    DropNoEndpoint = 9,
    /// Dropped: inner source address not in a block of the sending node.
    DropSpoofedSource = 10,
    /// Dropped: outer packet fragmented (our encapsulation never fragments).
    DropFragmented = 11,
    /// Dropped: no underlay route or neighbour to the destination node.
    DropNoRouteToPeer = 12,
    /// Dropped: growing the packet for the outer headers failed.
    DropEncapFailed = 13,
    /// Dropped: shrinking the packet to the inner frame failed.
    DropDecapFailed = 14,
    /// Dropped: a redirect helper refused the packet.
    DropRedirectFailed = 15,
    /// Passed: the node configuration is not written yet.
    NotConfigured = 16,
    /// Dropped: a pod sent an IPv4 packet whose source is not its own
    /// address (the endpoint attached to the interface it came from).
    DropPodSpoofedSource = 17,
    /// Dropped: a pod sent UDP to the VXLAN or probe port of something
    /// outside the pod network (a node, above all): only nodes may speak
    /// the tunnel.
    DropPodToTunnel = 18,
    /// Dropped: a liveness probe from an address that is not a node of the
    /// cluster.
    DropProbeUnknownPeer = 19,
    /// `from_uplink`: a peer's liveness probe, answered by reflecting it.
    ProbeAnswered = 20,
    /// Dropped: NetworkPolicy isolates the sending pod for egress and no
    /// rule allows this packet (counted per pod in `ovl_policy_drops_v1` too).
    DropPolicyEgress = 21,
    /// Dropped: NetworkPolicy isolates the receiving pod for ingress and no
    /// rule allows this packet (counted per pod in `ovl_policy_drops_v1` too).
    DropPolicyIngress = 22,
    /// `to_pod`: the host stack delivered to a pod (node, host-network pods,
    /// the outside world) and policy allowed it.
    ToPodPassed = 23,
    /// `from_pod`: sent unencapsulated to an on-link node
    /// ([`crate::ROUTE_F_DIRECT`]).
    FromPodDirect = 24,
    /// `from_uplink`: a directly routed packet from a peer, delivered to a
    /// pod.
    FromUplinkDirect = 25,
    /// Dropped: an unencapsulated packet from a cluster block to a pod here
    /// whose Ethernet source is not the MAC of a live peer.
    DropDirectUnknownPeer = 26,
    /// Dropped: an unencapsulated packet to a pod here from a peer's MAC
    /// whose IPv4 source is not in one of that peer's blocks.
    DropDirectSpoofedSource = 27,
    /// `from_pod`: handed to the WireGuard device for a peer that
    /// publishes a key (`--encryption wireguard`, [`crate::ROUTE_F_ENCRYPT`]).
    FromPodEncrypted = 28,
    /// Dropped (fail closed): encryption is on and the destination's node
    /// publishes no WireGuard key, so its pod traffic would leave in clear.
    DropNotEncrypted = 29,
    /// Dropped: encryption is on and a pod packet from another node came
    /// in clear (VXLAN or directly routed) instead of through WireGuard.
    DropUnencrypted = 30,
    /// `from_wireguard`: a decrypted packet delivered to a pod.
    FromWireguardDelivered = 31,
    /// Dropped: a decrypted packet whose source is not in another node's
    /// block (the device's allowed IPs check each peer's own blocks).
    DropWireguardSpoofedSource = 32,
}

/// Number of slots in [`crate::MAP_STATS`].
pub const STATS_LEN: u32 = 33;

impl Stat {
    /// Every counter, in index order.
    pub const ALL: [Stat; STATS_LEN as usize] = [
        Stat::FromPodPassed,
        Stat::FromPodLocal,
        Stat::FromPodEncapsulated,
        Stat::FromUplinkPassed,
        Stat::FromUplinkDecapsulated,
        Stat::DropTruncated,
        Stat::DropMalformed,
        Stat::DropUnknownPeer,
        Stat::DropWrongVni,
        Stat::DropNoEndpoint,
        Stat::DropSpoofedSource,
        Stat::DropFragmented,
        Stat::DropNoRouteToPeer,
        Stat::DropEncapFailed,
        Stat::DropDecapFailed,
        Stat::DropRedirectFailed,
        Stat::NotConfigured,
        Stat::DropPodSpoofedSource,
        Stat::DropPodToTunnel,
        Stat::DropProbeUnknownPeer,
        Stat::ProbeAnswered,
        Stat::DropPolicyEgress,
        Stat::DropPolicyIngress,
        Stat::ToPodPassed,
        Stat::FromPodDirect,
        Stat::FromUplinkDirect,
        Stat::DropDirectUnknownPeer,
        Stat::DropDirectSpoofedSource,
        Stat::FromPodEncrypted,
        Stat::DropNotEncrypted,
        Stat::DropUnencrypted,
        Stat::FromWireguardDelivered,
        Stat::DropWireguardSpoofedSource,
    ];

    /// Stable snake-case name, used in `status` output and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::FromPodPassed => "from_pod_passed",
            Stat::FromPodLocal => "from_pod_local",
            Stat::FromPodEncapsulated => "from_pod_encapsulated",
            Stat::FromUplinkPassed => "from_uplink_passed",
            Stat::FromUplinkDecapsulated => "from_uplink_decapsulated",
            Stat::DropTruncated => "drop_truncated",
            Stat::DropMalformed => "drop_malformed",
            Stat::DropUnknownPeer => "drop_unknown_peer",
            Stat::DropWrongVni => "drop_wrong_vni",
            Stat::DropNoEndpoint => "drop_no_endpoint",
            Stat::DropSpoofedSource => "drop_spoofed_source",
            Stat::DropFragmented => "drop_fragmented",
            Stat::DropNoRouteToPeer => "drop_no_route_to_peer",
            Stat::DropEncapFailed => "drop_encap_failed",
            Stat::DropDecapFailed => "drop_decap_failed",
            Stat::DropRedirectFailed => "drop_redirect_failed",
            Stat::NotConfigured => "not_configured",
            Stat::DropPodSpoofedSource => "drop_pod_spoofed_source",
            Stat::DropPodToTunnel => "drop_pod_to_tunnel",
            Stat::DropProbeUnknownPeer => "drop_probe_unknown_peer",
            Stat::ProbeAnswered => "probe_answered",
            Stat::DropPolicyEgress => "drop_policy_egress",
            Stat::DropPolicyIngress => "drop_policy_ingress",
            Stat::ToPodPassed => "to_pod_passed",
            Stat::FromPodDirect => "from_pod_direct",
            Stat::FromUplinkDirect => "from_uplink_direct",
            Stat::DropDirectUnknownPeer => "drop_direct_unknown_peer",
            Stat::DropDirectSpoofedSource => "drop_direct_spoofed_source",
            Stat::FromPodEncrypted => "from_pod_encrypted",
            Stat::DropNotEncrypted => "drop_not_encrypted",
            Stat::DropUnencrypted => "drop_unencrypted",
            Stat::FromWireguardDelivered => "from_wireguard_delivered",
            Stat::DropWireguardSpoofedSource => "drop_wireguard_spoofed_source",
        }
    }

    /// Whether this counter counts dropped packets.
    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Stat::DropTruncated
                | Stat::DropMalformed
                | Stat::DropUnknownPeer
                | Stat::DropWrongVni
                | Stat::DropNoEndpoint
                | Stat::DropSpoofedSource
                | Stat::DropFragmented
                | Stat::DropNoRouteToPeer
                | Stat::DropEncapFailed
                | Stat::DropDecapFailed
                | Stat::DropRedirectFailed
                | Stat::DropPodSpoofedSource
                | Stat::DropPodToTunnel
                | Stat::DropProbeUnknownPeer
                | Stat::DropPolicyEgress
                | Stat::DropPolicyIngress
                | Stat::DropDirectUnknownPeer
                | Stat::DropDirectSpoofedSource
                | Stat::DropNotEncrypted
                | Stat::DropUnencrypted
                | Stat::DropWireguardSpoofedSource
        )
    }
}

const _: () = {
    let mut i = 0;
    while i < Stat::ALL.len() {
        assert!(Stat::ALL[i] as usize == i);
        i += 1;
    }
};
