//! Everything that crosses the kernel/user boundary, defined once.
//!
//! The eBPF programs (`overlay-ebpf`) and the agent (`overlay-agent`) both
//! depend on this crate, so a map layout, a map name or a drop reason can
//! only change in one place. Every map value is `#[repr(C)]`, has its padding
//! written out and its size checked at compile time; a layout change must
//! bump the `_v1` suffix of the map name.
#![no_std]

pub mod consts;
pub mod maps;
pub mod policy;
pub mod stats;

pub use consts::*;
pub use maps::*;
pub use policy::*;
pub use stats::*;

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_counter_has_a_unique_snake_case_name() {
        let names: HashSet<_> = Stat::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), Stat::ALL.len());
        for n in names {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
        }
    }

    #[test]
    fn drop_counters_are_exactly_the_drop_reasons() {
        for s in Stat::ALL {
            assert_eq!(s.is_drop(), s.name().starts_with("drop_"), "{s:?}");
        }
    }

    #[test]
    fn vtep_macs_are_locally_administered_unicast_and_carry_the_node_ip() {
        let m = vtep_mac([172, 31, 0, 2]);
        assert_eq!(m[0] & 0x01, 0, "multicast bit set");
        assert_eq!(m[0] & 0x02, 0x02, "not locally administered");
        assert_eq!(&m[2..], &[172, 31, 0, 2]);
    }

    #[test]
    fn the_overhead_is_the_bytes_in_front_of_the_inner_ip_header_minus_the_outer_ethernet() {
        assert_eq!(ENCAP_HEADERS_LEN - ETH_HLEN, VXLAN_OVERHEAD as usize);
        assert_eq!(ALL_MAPS.len(), 7);
        assert!(
            ALL_MAPS
                .iter()
                .chain(POLICY_MAPS.iter())
                .all(|m| m.starts_with("ovl_") && (m.ends_with("_v1") || m.ends_with("_v5")))
        );
        assert!(RETIRED_MAPS.iter().all(|r| !ALL_MAPS.contains(r)));
        assert!(POLICY_MAPS.iter().all(|m| !ALL_MAPS.contains(m)));
    }

    #[test]
    fn connection_tracking_timeouts_follow_the_protocol_state() {
        assert_eq!(ct_timeout_ns(IPPROTO_TCP, 0), CT_TCP_SYN_NS);
        assert_eq!(
            ct_timeout_ns(IPPROTO_TCP, CT_F_REPLIED),
            CT_TCP_ESTABLISHED_NS
        );
        assert_eq!(
            ct_timeout_ns(IPPROTO_TCP, CT_F_REPLIED | CT_F_CLOSING),
            CT_TCP_CLOSING_NS
        );
        assert_eq!(ct_timeout_ns(IPPROTO_UDP, 0), CT_DATAGRAM_NS);
        assert_eq!(ct_timeout_ns(IPPROTO_SCTP, CT_F_REPLIED), CT_DATAGRAM_NS);
        assert_eq!(ct_timeout_ns(IPPROTO_ICMP, 0), CT_OTHER_NS);
    }
}
