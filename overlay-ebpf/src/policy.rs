//! NetworkPolicy decisions, called by the programs at each place a packet
//! enters or leaves a local pod:
//!
//! - `from_pod` decides egress of the sending pod, and ingress of the
//!   receiving pod when it is on this node too;
//! - `from_uplink` decides ingress before delivering a decapsulated packet;
//! - `to_pod` decides ingress of what the host stack routes to a pod.
//!
//! A pod missing from `ovl_policy_eps_v1` is isolated in neither direction
//! and costs one hash lookup. For an isolated pod: a packet of a tracked
//! connection passes; otherwise the rule trie is asked with the remote
//! pod's label identity and with the `ipBlock` identity of the remote
//! address; an allowed packet starts a tracked connection.

use aya_ebpf::{btf_maps::lpm_trie::Key, programs::TcContext};
use overlay_common::{
    CIDR_PREFIX_BASE, CidrKey, DIR_EGRESS, DIR_INGRESS, DropKey, IDENTITY_NONE, IPPROTO_SCTP,
    IPPROTO_TCP, IPPROTO_UDP, Ipv4Bytes, POLICY_F_EGRESS, POLICY_F_INGRESS, POLICY_PREFIX_PORT,
    PolicyEvent, PolicyKey, Stat,
};

use crate::{
    conntrack,
    flow::{self, Flow},
    maps::{IDENTITIES, POLICY, POLICY_CIDRS, POLICY_DROPS, POLICY_EPS, POLICY_EVENTS},
    packet::Ipv4,
};

/// `BPF_NOEXIST`: insert only if the key is new.
const BPF_NOEXIST: u64 = 1;

/// The local pods a packet leaves (egress) and enters (ingress).
pub struct Check {
    /// The sending pod, if it is on this node.
    pub egress: Option<Ipv4Bytes>,
    /// The receiving pod, if it is on this node.
    pub ingress: Option<Ipv4Bytes>,
    /// Ingress allowed whatever the policy (the node's own address: the
    /// kubelet's probes), still tracked so the replies pass egress.
    pub ingress_exempt: bool,
}

/// The `POLICY_F_*` bits of a local pod (0: not isolated).
#[inline(always)]
fn isolation(ep: Option<Ipv4Bytes>) -> Option<u32> {
    let ep = ep?;
    let pe = POLICY_EPS.get_ptr(ep)?;
    // SAFETY: the pointer comes from a successful lookup.
    Some(unsafe { (*pe).flags })
}

/// Decides the IPv4 packet whose header `ip` starts at `l3`: `Ok` to let
/// it go on, or the drop reason (also counted per pod and direction).
#[inline(always)]
pub fn decide(ctx: &TcContext, l3: usize, ip: &Ipv4, check: &Check) -> Result<(), Stat> {
    let eg = isolation(check.egress);
    let ing = isolation(check.ingress);
    if eg.is_none() && ing.is_none() {
        return Ok(());
    }
    let f = flow::parse(ctx, l3, ip)?;
    if conntrack::established(&f) {
        return Ok(());
    }
    if let (Some(flags), Some(ep)) = (eg, check.egress)
        && flags & POLICY_F_EGRESS != 0
        && !allowed(ep, DIR_EGRESS, ip.dst, &f)
    {
        dropped(ep, DIR_EGRESS, ip.dst, &f);
        return Err(Stat::DropPolicyEgress);
    }
    if let (Some(flags), Some(ep)) = (ing, check.ingress)
        && flags & POLICY_F_INGRESS != 0
        && !check.ingress_exempt
        && !allowed(ep, DIR_INGRESS, ip.src, &f)
    {
        dropped(ep, DIR_INGRESS, ip.src, &f);
        return Err(Stat::DropPolicyIngress);
    }
    conntrack::track(&f)
}

/// Whether a rule of `ep` in `direction` allows `f` with `remote`.
#[inline(always)]
fn allowed(ep: Ipv4Bytes, direction: u8, remote: Ipv4Bytes, f: &Flow) -> bool {
    // Ports only mean something for these; a rule with ports never
    // matches anything else (ICMP needs a rule without ports).
    let port = if f.proto == IPPROTO_TCP || f.proto == IPPROTO_UDP || f.proto == IPPROTO_SCTP {
        f.dport
    } else {
        [0; 2]
    };
    if let Some(id) = IDENTITIES.get_ptr(remote) {
        // SAFETY: the pointer comes from a successful lookup.
        let id = unsafe { (*id).id };
        if rule(ep, direction, id, f.proto, port) {
            return true;
        }
    }
    let key = Key::new(
        CIDR_PREFIX_BASE + 32,
        CidrKey {
            endpoint: ep,
            direction,
            pad: [0; 3],
            addr: remote,
        },
    );
    match POLICY_CIDRS.get(&key) {
        Some(c) if c.id != IDENTITY_NONE => rule(ep, direction, c.id, f.proto, port),
        _ => false,
    }
}

#[inline(always)]
fn rule(ep: Ipv4Bytes, direction: u8, remote: u32, proto: u8, port: [u8; 2]) -> bool {
    let key = Key::new(
        POLICY_PREFIX_PORT,
        PolicyKey {
            endpoint: ep,
            direction,
            pad: [0; 3],
            remote: remote.to_be_bytes(),
            proto,
            port,
            pad2: 0,
        },
    );
    POLICY.get(&key).is_some()
}

/// Counts a drop for `ep` in `direction` and tells the agent about it
/// (a full ring buffer loses the event, never the packet's verdict).
#[inline(always)]
fn dropped(ep: Ipv4Bytes, direction: u8, remote: Ipv4Bytes, f: &Flow) {
    let _ = POLICY_EVENTS.output(
        &PolicyEvent {
            local: ep,
            remote,
            port: f.dport,
            proto: f.proto,
            direction,
        },
        0,
    );
    let key = DropKey {
        endpoint: ep,
        direction,
        pad: [0; 3],
    };
    match POLICY_DROPS.get_ptr_mut(&key) {
        // SAFETY: per-CPU value, only this CPU writes it while we run.
        Some(n) => unsafe { *n += 1 },
        None => {
            let _ = POLICY_DROPS.insert(&key, &1, BPF_NOEXIST);
        }
    }
}
