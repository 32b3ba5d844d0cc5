//! The probe payload: `magic (4) | version (1) | reserved (3) | nonce (8) |
//! send time in ns (8)`, big-endian. The answering eBPF program checks the
//! magic and the version and reflects the datagram with addresses and ports
//! swapped, payload untouched.

use overlay_common::{PROBE_LEN, PROBE_MAGIC, PROBE_VERSION};

/// A probe payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Unpredictable per probe: a reply counts only if it carries a nonce
    /// this agent sent to that peer.
    pub nonce: u64,
    /// When it was sent (ns on the prober's clock), for the round trip.
    pub sent_ns: u64,
}

impl Probe {
    /// The datagram payload.
    pub fn encode(&self) -> [u8; PROBE_LEN] {
        let mut b = [0u8; PROBE_LEN];
        b[..4].copy_from_slice(&PROBE_MAGIC);
        b[4] = PROBE_VERSION;
        b[8..16].copy_from_slice(&self.nonce.to_be_bytes());
        b[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
        b
    }

    /// Parses a payload; `None` unless it is exactly a probe of our version.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != PROBE_LEN || b[..4] != PROBE_MAGIC || b[4] != PROBE_VERSION {
            return None;
        }
        Some(Self {
            nonce: u64::from_be_bytes(b[8..16].try_into().ok()?),
            sent_ns: u64::from_be_bytes(b[16..24].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_round_trip_and_anything_else_is_refused() {
        let p = Probe {
            nonce: 0x0102_0304_0506_0708,
            sent_ns: 42,
        };
        let b = p.encode();
        assert_eq!(&b[..5], b"OVLP\x01");
        assert_eq!(Probe::decode(&b), Some(p));
        assert_eq!(Probe::decode(&b[..PROBE_LEN - 1]), None);
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(Probe::decode(&bad), None);
        let mut bad = b;
        bad[4] = 2;
        assert_eq!(Probe::decode(&bad), None);
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(Probe::decode(&long), None);
    }
}
