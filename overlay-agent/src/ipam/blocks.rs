//! Address arithmetic over the node's blocks: which addresses are usable and
//! in which order they are tried.

use std::{net::Ipv4Addr, ops::RangeInclusive};

use ipnet::Ipv4Net;

/// Truncates each block to its network address and drops blocks that repeat
/// or lie inside another one (two CIDRs either nest or are disjoint, so this
/// removes every overlap), keeping the order of the rest.
pub(super) fn normalize(blocks: Vec<Ipv4Net>) -> Vec<Ipv4Net> {
    let blocks: Vec<Ipv4Net> = blocks.into_iter().map(|b| b.trunc()).collect();
    let mut kept: Vec<Ipv4Net> = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        let covered = blocks.iter().enumerate().any(|(j, other)| {
            other.contains(block) && (other.prefix_len() < block.prefix_len() || j < i)
        });
        if covered {
            tracing::warn!(%block, "ignoring a block that repeats or lies inside another");
        } else {
            kept.push(*block);
        }
    }
    kept
}

/// The addresses of `block` that may go to a pod, as integers: all but the
/// network and broadcast addresses, or all of a /31 or /32 (RFC 3021).
pub(super) fn usable(block: Ipv4Net) -> RangeInclusive<u32> {
    let first = u32::from(block.network());
    let last = u32::from(block.broadcast());
    if block.prefix_len() >= 31 {
        first..=last
    } else {
        first + 1..=last - 1
    }
}

/// How many addresses of `blocks` may go to pods.
pub(super) fn capacity(blocks: &[Ipv4Net]) -> u64 {
    blocks.iter().map(|b| range_len(&usable(*b))).sum()
}

/// Whether `ip` is a usable address of one of `blocks`.
pub(super) fn is_usable(blocks: &[Ipv4Net], ip: Ipv4Addr) -> bool {
    blocks.iter().any(|b| usable(*b).contains(&u32::from(ip)))
}

/// Every usable address of `blocks`, each once, starting just after
/// `cursor` and wrapping around so that `cursor` itself comes last. Blocks
/// are walked in order. Without a cursor, or with one outside the blocks,
/// the walk starts at the first block.
pub(super) fn candidates(
    blocks: &[Ipv4Net],
    cursor: Option<Ipv4Addr>,
) -> impl Iterator<Item = Ipv4Addr> + '_ {
    let at = cursor.and_then(|ip| {
        let ip = u32::from(ip);
        blocks
            .iter()
            .position(|b| usable(*b).contains(&ip))
            .map(|i| (i, ip))
    });
    // `after` is the rest of the cursor's block, `before` its head up to and
    // including the cursor; the other blocks go in between.
    let (i, after, before) = match at {
        Some((i, ip)) => {
            let range = usable(blocks[i]);
            let after = match ip.checked_add(1) {
                Some(next) => next..=*range.end(),
                None => empty(),
            };
            (i, after, *range.start()..=ip)
        }
        None => (
            0,
            blocks.first().map_or_else(empty, |b| usable(*b)),
            empty(),
        ),
    };
    let later = blocks.get(i + 1..).unwrap_or_default();
    let earlier = blocks.get(..i).unwrap_or_default();
    after
        .chain(later.iter().flat_map(|b| usable(*b)))
        .chain(earlier.iter().flat_map(|b| usable(*b)))
        .chain(before)
        .map(Ipv4Addr::from)
}

#[expect(
    clippy::reversed_empty_ranges,
    reason = "an empty range of the same type as the others"
)]
fn empty() -> RangeInclusive<u32> {
    1..=0
}

fn range_len(range: &RangeInclusive<u32>) -> u64 {
    if range.is_empty() {
        0
    } else {
        u64::from(*range.end()) - u64::from(*range.start()) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("test CIDR parses")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test address parses")
    }

    #[test]
    fn usable_skips_network_and_broadcast_except_in_31_and_32() {
        assert_eq!(capacity(&[net("10.0.0.0/24")]), 254);
        assert_eq!(capacity(&[net("10.0.0.0/30")]), 2);
        assert_eq!(capacity(&[net("10.0.0.0/31")]), 2);
        assert_eq!(capacity(&[net("10.0.0.7/32")]), 1);
        assert!(!is_usable(&[net("10.0.0.0/24")], ip("10.0.0.0")));
        assert!(!is_usable(&[net("10.0.0.0/24")], ip("10.0.0.255")));
        assert!(is_usable(&[net("10.0.0.0/31")], ip("10.0.0.1")));
        assert!(is_usable(
            &[net("255.255.255.255/32")],
            ip("255.255.255.255")
        ));
    }

    #[test]
    fn candidates_start_after_the_cursor_and_wrap_over_blocks() {
        let blocks = [net("10.0.0.0/30"), net("10.0.1.0/30"), net("10.0.2.0/30")];
        let walk: Vec<Ipv4Addr> = candidates(&blocks, Some(ip("10.0.1.1"))).collect();
        let want: Vec<Ipv4Addr> = [
            "10.0.1.2", "10.0.2.1", "10.0.2.2", "10.0.0.1", "10.0.0.2", "10.0.1.1",
        ]
        .map(ip)
        .to_vec();
        assert_eq!(walk, want);
    }

    #[test]
    fn candidates_without_a_cursor_in_the_blocks_start_at_the_first_block() {
        let blocks = [net("10.0.0.0/30"), net("10.0.1.0/30")];
        let want = [
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            ip("10.0.1.1"),
            ip("10.0.1.2"),
        ];
        for cursor in [None, Some(ip("192.168.0.1")), Some(ip("10.0.0.0"))] {
            let walk: Vec<Ipv4Addr> = candidates(&blocks, cursor).collect();
            assert_eq!(walk, want, "cursor {cursor:?}");
        }
        assert_eq!(candidates(&[], None).count(), 0);
    }

    #[test]
    fn candidates_handle_the_top_of_the_address_space() {
        let blocks = [net("255.255.255.254/31")];
        let walk: Vec<Ipv4Addr> = candidates(&blocks, Some(ip("255.255.255.255"))).collect();
        assert_eq!(walk, [ip("255.255.255.254"), ip("255.255.255.255")]);
    }

    #[test]
    fn normalize_drops_repeated_and_nested_blocks_and_keeps_order() {
        let got = normalize(vec![
            net("10.0.2.0/25"),
            net("10.0.1.9/24"),
            net("10.0.2.0/24"),
            net("10.0.1.0/24"),
        ]);
        assert_eq!(got, [net("10.0.1.0/24"), net("10.0.2.0/24")]);
    }
}
