//! Connection tracking for NetworkPolicy: one LRU entry per flow, keyed by
//! its first packet's addresses, ports and protocol, shared by every
//! program of the node.
//!
//! A packet belongs to a tracked flow if its own tuple (same direction as
//! the first packet) or the reversed tuple (a reply) has an entry younger
//! than the timeout of its state ([`ct_timeout_ns`]). A TCP SYN without
//! ACK never matches: a new connection is always decided by the policy of
//! now, even if it reuses the ports of an old one. An ICMP error matches
//! if the packet it quotes belongs to a tracked flow (it is *related*).

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;
use overlay_common::{
    CT_F_CLOSING, CT_F_REPLIED, CtEntry, CtKey, IPPROTO_TCP, Stat, ct_timeout_ns,
};

use crate::{flow::Flow, maps::CONNTRACK};

/// Least age at which a tracked flow's time is rewritten.
const REFRESH_NS: u64 = 1_000_000_000;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn reversed(k: &CtKey) -> CtKey {
    CtKey {
        src: k.dst,
        dst: k.src,
        sport: k.dport,
        dport: k.sport,
        proto: k.proto,
        pad: [0; 3],
    }
}

#[inline(always)]
fn closing(f: &Flow) -> u32 {
    if f.proto == IPPROTO_TCP && f.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        CT_F_CLOSING
    } else {
        0
    }
}

/// Refreshes the entry of `key` if it is alive, adding `flags`.
#[inline(always)]
fn touch(key: &CtKey, t: u64, flags: u32) -> bool {
    let Some(e) = CONNTRACK.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: the pointer comes from a successful lookup; racing writers
    // only ever move the time forward and add flags.
    unsafe {
        let age = t.saturating_sub((*e).last_seen_ns);
        if age > ct_timeout_ns(key.proto, (*e).flags) {
            return false;
        }
        // Writing the entry on every packet would bounce its cache line
        // between CPUs: once a second is precise enough for timeouts of
        // ten seconds and more.
        if age > REFRESH_NS {
            (*e).last_seen_ns = t;
        }
        if (*e).flags & flags != flags {
            (*e).flags |= flags;
        }
    }
    true
}

/// Whether `f` belongs to (or, for an ICMP error, is related to) a tracked
/// flow; refreshes the flow if so.
#[inline(always)]
pub fn established(f: &Flow) -> bool {
    let t = now();
    if f.related {
        // The quoted packet went the other way from the error.
        return touch(&f.key, t, 0) || touch(&reversed(&f.key), t, 0);
    }
    if f.proto == IPPROTO_TCP && f.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        return false;
    }
    let c = closing(f);
    touch(&f.key, t, c) || touch(&reversed(&f.key), t, CT_F_REPLIED | c)
}

/// Starts tracking `f` (ICMP errors are never tracked themselves).
#[inline(always)]
pub fn track(f: &Flow) -> Result<(), Stat> {
    if f.related {
        return Ok(());
    }
    let entry = CtEntry {
        last_seen_ns: now(),
        flags: closing(f),
        pad: 0,
    };
    // An LRU map evicts the oldest entry when full, so an insert fails
    // only on a kernel out of memory: the packet goes on untracked (its
    // replies are then decided by policy like new flows).
    let _ = CONNTRACK.insert(&f.key, &entry, 0);
    Ok(())
}
