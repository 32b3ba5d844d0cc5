//! A node's record as the SWIM layer carries it: everything the view needs
//! of one node (address, VXLAN port, version, claims, forget records, clean
//! stop), versioned by the node's generation and a sequence number that the
//! node bumps on every change. A newer `(generation, seq)` replaces an older
//! one wherever it arrives, so records can travel by any path (broadcast,
//! push-pull) in any order.

use std::net::{Ipv4Addr, SocketAddrV4};

use foca::Invalidates;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::gossip::view::{Claim, Record};

/// One node's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node name (unique in the cluster).
    pub name: String,
    /// Generation: grows across restarts (start time in ms).
    pub generation: u64,
    /// Grows by one on every change of this record within a generation.
    pub seq: u64,
    /// Where the node gossips.
    pub gossip_addr: SocketAddrV4,
    /// Underlay address.
    pub ip: Ipv4Addr,
    /// VXLAN port.
    pub vxlan_port: u16,
    /// Agent version, with the node's WireGuard announce when it encrypts
    /// ([`crate::encryption::announce`]).
    pub version: String,
    /// The agent announced a clean stop.
    pub stopping: bool,
    /// Block claims.
    pub claims: Vec<(Ipv4Net, Claim)>,
    /// Forget records this node carries: name → highest forgotten generation.
    pub forgets: Vec<(String, u64)>,
}

impl NodeRecord {
    /// Whether this record supersedes `other` (same node, newer version).
    pub fn newer_than(&self, other: &NodeRecord) -> bool {
        (self.generation, self.seq) > (other.generation, other.seq)
    }

    /// The record as the library-agnostic view reads it.
    pub fn to_view(&self) -> Record {
        let mut r = Record {
            ip: Some(self.ip),
            vxlan_port: Some(self.vxlan_port),
            stopping: self.stopping,
            ..Record::default()
        };
        r.set_version(&self.version);
        for (b, c) in &self.claims {
            if b.trunc() == *b {
                r.claims.insert(*b, *c);
            } else {
                r.ignored += 1;
            }
        }
        for (n, g) in &self.forgets {
            r.forgets.insert(n.clone(), *g);
        }
        r
    }

    /// Fingerprint of `(name, generation, seq)`: what the push-pull digest
    /// compares.
    pub fn fingerprint(&self) -> u64 {
        let mut h = fnv1a(self.name.as_bytes());
        for x in [self.generation, self.seq] {
            h = mix(h ^ x);
        }
        h
    }

    /// Encodes the record (postcard).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("plain data serialises")
    }

    /// Decodes a record written by [`NodeRecord::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// FNV-1a over `bytes`, finished with a mixer (stable across builds and
/// machines, unlike `std`'s hasher: peers compare these values).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What foca keeps of a record broadcast while it disseminates it: a newer
/// version of the same node's record replaces an older one in its backlog.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RecordKey {
    /// Node name.
    pub name: String,
    /// Its generation.
    pub generation: u64,
    /// Its sequence number.
    pub seq: u64,
}

impl Invalidates for RecordKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.name == other.name && (self.generation, self.seq) >= (other.generation, other.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::view::ClaimState;

    fn record(seq: u64) -> NodeRecord {
        NodeRecord {
            name: "n1".into(),
            generation: 7,
            seq,
            gossip_addr: "172.16.0.2:6783".parse().unwrap(),
            ip: "172.16.0.2".parse().unwrap(),
            vxlan_port: 4789,
            version: "0.1.0".into(),
            stopping: false,
            claims: vec![(
                "10.32.1.0/24".parse().unwrap(),
                Claim {
                    state: ClaimState::Settled,
                    origin: 7,
                },
            )],
            forgets: vec![("old".into(), 3)],
        }
    }

    #[test]
    fn a_record_round_trips_and_reads_as_the_view_record() {
        let r = record(2);
        let bytes = r.encode();
        assert!(bytes.len() < 64, "{} bytes", bytes.len());
        assert_eq!(NodeRecord::decode(&bytes).unwrap(), r);
        let v = r.to_view();
        assert_eq!(v.ip, Some(r.ip));
        assert_eq!(v.claims.len(), 1);
        assert_eq!(v.forgets.get("old"), Some(&3));
    }

    #[test]
    fn newer_versions_win_and_invalidate_older_broadcasts() {
        let (a, b) = (record(1), record(2));
        assert!(b.newer_than(&a) && !a.newer_than(&b) && !a.newer_than(&a));
        assert_ne!(a.fingerprint(), b.fingerprint());
        let key = |r: &NodeRecord| RecordKey {
            name: r.name.clone(),
            generation: r.generation,
            seq: r.seq,
        };
        assert!(key(&b).invalidates(&key(&a)));
        assert!(!key(&a).invalidates(&key(&b)));
        let mut other = key(&a);
        other.name = "n2".into();
        assert!(!key(&b).invalidates(&other));
    }

    #[test]
    fn a_truncated_record_is_an_error_not_a_panic() {
        let bytes = record(1).encode();
        for n in 0..bytes.len() {
            assert!(NodeRecord::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
    }
}
