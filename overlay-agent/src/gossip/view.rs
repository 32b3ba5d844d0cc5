//! What one node knows of the cluster, read out of the gossip state: every
//! member with its address, liveness and block claims, and who owns each
//! block under the deterministic rule.
//!
//! Keys a node publishes in its own gossip state (values are plain text):
//!
//! | key | value |
//! | --- | --- |
//! | `ip` | underlay IPv4 address |
//! | `vxlan_port` | UDP port its datapath listens on |
//! | `version` | agent version, with the node's WireGuard key and port when it encrypts ([`crate::encryption::announce`]) |
//! | `block:<cidr>` | `pending <gen>` or `settled <gen>`: a claim, and the generation that first made it |
//! | `forget:<name>` | generation: `name`, up to that generation, is gone for good |
//! | `stopping` | `true`: the agent is stopping cleanly (SIGTERM); its silence is expected and its datapath stays |
//!
//! A value that does not parse is ignored (and counted in
//! [`View::ignored_values`]): every datagram that reaches this code has
//! passed authentication, so a bad value means a buggy peer, not an
//! attacker, and one bad key must not hide the rest of that node's state.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::encryption::announce::Announce;

/// Key of the underlay address.
pub const KEY_IP: &str = "ip";
/// Key of the VXLAN port.
pub const KEY_VXLAN_PORT: &str = "vxlan_port";
/// Key of the agent version.
pub const KEY_VERSION: &str = "version";
/// Key set by an agent that stops cleanly.
pub const KEY_STOPPING: &str = "stopping";
/// Prefix of a block claim key.
pub const PREFIX_BLOCK: &str = "block:";
/// Prefix of a forget record key.
pub const PREFIX_FORGET: &str = "forget:";

/// How far a claim has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClaimState {
    /// Published, not yet settled: the claimant hands out no address from it.
    Pending,
    /// Held through the settle period with a quorum: the claimant allocates
    /// from it.
    Settled,
}

/// One node's claim on one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Pending or settled.
    pub state: ClaimState,
    /// The claimant's generation when the claim was first made (a restart
    /// re-publishes its settled blocks with their original generation, so a
    /// `forget` covers them).
    pub origin: u64,
}

impl Claim {
    /// The gossip value of this claim.
    pub fn to_value(self) -> String {
        let state = match self.state {
            ClaimState::Pending => "pending",
            ClaimState::Settled => "settled",
        };
        format!("{state} {}", self.origin)
    }

    /// Parses a gossip value written by [`Claim::to_value`].
    pub fn parse(value: &str) -> Option<Self> {
        let (state, origin) = value.split_once(' ')?;
        let state = match state {
            "pending" => ClaimState::Pending,
            "settled" => ClaimState::Settled,
            _ => return None,
        };
        Some(Self {
            state,
            origin: origin.parse().ok()?,
        })
    }
}

/// The gossip key of a block claim.
pub fn block_key(block: Ipv4Net) -> String {
    format!("{PREFIX_BLOCK}{block}")
}

/// One node as published in its gossip state (one generation of it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Underlay address; `None` until published or if malformed.
    pub ip: Option<Ipv4Addr>,
    /// VXLAN port.
    pub vxlan_port: Option<u16>,
    /// Agent version.
    pub version: Option<String>,
    /// Its WireGuard key and port, when it encrypts pod traffic.
    #[serde(default)]
    pub wireguard: Option<Announce>,
    /// The agent announced a clean stop.
    pub stopping: bool,
    /// Block claims.
    pub claims: BTreeMap<Ipv4Net, Claim>,
    /// Forget records this node carries.
    pub forgets: BTreeMap<String, u64>,
    /// Values that did not parse.
    #[serde(skip)]
    pub ignored: usize,
}

impl Record {
    /// Takes a published version string: the version, and the WireGuard
    /// announce it may carry.
    pub fn set_version(&mut self, published: &str) {
        let (version, wireguard) = crate::encryption::announce::split(published);
        self.version = Some(version);
        self.wireguard = wireguard;
    }

    /// Reads a node's key-value pairs (deleted keys excluded).
    pub fn parse<'a>(key_values: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let mut r = Record::default();
        for (k, v) in key_values {
            let ok = match k {
                KEY_IP => v.parse().map(|ip| r.ip = Some(ip)).is_ok(),
                KEY_VXLAN_PORT => v.parse().map(|p| r.vxlan_port = Some(p)).is_ok(),
                KEY_VERSION => {
                    r.set_version(v);
                    true
                }
                KEY_STOPPING => v.parse().map(|b| r.stopping = b).is_ok(),
                _ => {
                    if let Some(block) = k.strip_prefix(PREFIX_BLOCK) {
                        match (block.parse::<Ipv4Net>(), Claim::parse(v)) {
                            (Ok(b), Some(c)) if b.trunc() == b => {
                                r.claims.insert(b, c);
                                true
                            }
                            _ => false,
                        }
                    } else if let Some(name) = k.strip_prefix(PREFIX_FORGET) {
                        v.parse()
                            .map(|g| r.forgets.insert(name.to_owned(), g))
                            .is_ok()
                    } else {
                        // Unknown keys are a newer agent's: not an error.
                        true
                    }
                }
            };
            if !ok {
                r.ignored += 1;
            }
        }
        r
    }
}

/// A node as this node sees it: its newest generation, not forgotten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Node name (unique in the cluster).
    pub name: String,
    /// Newest generation seen (start time in ms).
    pub generation: u64,
    /// Whether the failure detector holds it alive.
    pub live: bool,
    /// Its gossip address.
    pub gossip_addr: std::net::SocketAddr,
    /// What it published, claims voided by a forget removed.
    pub record: Record,
}

/// Every member, and who owns which block.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Members by name.
    pub members: BTreeMap<String, Member>,
    /// Every claim on each block: (member name, claim).
    pub claims: BTreeMap<Ipv4Net, Vec<(String, Claim)>>,
    /// Forget records: name → highest forgotten generation.
    pub forgotten: BTreeMap<String, u64>,
    /// Values ignored because they did not parse.
    pub ignored_values: usize,
    /// This node's own probes mostly go unanswered: it is cut off from
    /// most of the cluster, whatever the members' states say yet (a node
    /// alone learns of a member's death only by probing that member, one
    /// member per probe period). No quorum then.
    pub cut_off: bool,
}

/// One generation of one node, as input to [`View::build`].
pub struct Seen<'a> {
    /// Node name.
    pub name: &'a str,
    /// Its generation.
    pub generation: u64,
    /// Its gossip address.
    pub gossip_addr: std::net::SocketAddr,
    /// Whether it is live.
    pub live: bool,
    /// Its parsed record.
    pub record: &'a Record,
}

impl View {
    /// Builds the view: the newest generation of each name wins; forget
    /// records void whole generations and the claims they made.
    pub fn build<'a>(seen: impl IntoIterator<Item = Seen<'a>>) -> Self {
        let seen: Vec<Seen<'a>> = seen.into_iter().collect();
        let mut forgotten: BTreeMap<String, u64> = BTreeMap::new();
        for s in &seen {
            for (name, g) in &s.record.forgets {
                let e = forgotten.entry(name.clone()).or_default();
                *e = (*e).max(*g);
            }
        }
        let mut members: BTreeMap<String, Member> = BTreeMap::new();
        let mut ignored_values = 0;
        for s in seen {
            ignored_values += s.record.ignored;
            if forgotten.get(s.name).is_some_and(|g| s.generation <= *g) {
                continue;
            }
            if members
                .get(s.name)
                .is_some_and(|m| m.generation >= s.generation)
            {
                continue;
            }
            let mut record = s.record.clone();
            if let Some(g) = forgotten.get(s.name) {
                record.claims.retain(|_, c| c.origin > *g);
            }
            members.insert(
                s.name.to_owned(),
                Member {
                    name: s.name.to_owned(),
                    generation: s.generation,
                    live: s.live,
                    gossip_addr: s.gossip_addr,
                    record,
                },
            );
        }
        let mut claims: BTreeMap<Ipv4Net, Vec<(String, Claim)>> = BTreeMap::new();
        for m in members.values() {
            for (b, c) in &m.record.claims {
                claims.entry(*b).or_default().push((m.name.clone(), *c));
            }
        }
        Self {
            members,
            claims,
            forgotten,
            ignored_values,
            cut_off: false,
        }
    }

    /// The claim that owns `block`, by the deterministic rule: a settled
    /// claim beats a pending one; among equals the lowest
    /// [`rank`]`(block, name)` wins. Every node applies the same rule to the
    /// same gossip state, so once gossip has converged they all agree.
    pub fn owner(&self, block: Ipv4Net) -> Option<(&str, Claim)> {
        self.claims
            .get(&block)?
            .iter()
            .min_by_key(|(name, c)| priority(block, name, *c))
            .map(|(n, c)| (n.as_str(), *c))
    }

    /// Blocks that more than one member holds as settled: duplicates, which
    /// the quorum rule should make impossible; reported, never hidden.
    pub fn conflicts(&self) -> BTreeMap<Ipv4Net, Vec<String>> {
        self.claims
            .iter()
            .filter_map(|(b, cs)| {
                let settled: Vec<String> = cs
                    .iter()
                    .filter(|(_, c)| c.state == ClaimState::Settled)
                    .map(|(n, _)| n.clone())
                    .collect();
                (settled.len() > 1).then_some((*b, settled))
            })
            .collect()
    }

    /// Whether anyone (live or dead) claims `block`.
    pub fn is_claimed(&self, block: Ipv4Net) -> bool {
        self.claims.contains_key(&block)
    }

    /// Members the failure detector holds alive (this node included).
    pub fn live_count(&self) -> usize {
        self.members.values().filter(|m| m.live).count()
    }

    /// Blocks each live member owns with a settled claim, with its address:
    /// what the routes and peers maps must hold.
    pub fn settled_owners(&self) -> BTreeMap<String, BTreeSet<Ipv4Net>> {
        let mut out: BTreeMap<String, BTreeSet<Ipv4Net>> = BTreeMap::new();
        for b in self.claims.keys() {
            if let Some((name, c)) = self.owner(*b)
                && c.state == ClaimState::Settled
            {
                out.entry(name.to_owned()).or_default().insert(*b);
            }
        }
        out
    }
}

/// Orders claims on `block`: the smallest wins. Settled before pending,
/// then by [`rank`], then by name (so that even a rank collision has one
/// answer).
pub fn priority(
    block: Ipv4Net,
    name: &str,
    claim: Claim,
) -> (std::cmp::Reverse<ClaimState>, u64, &str) {
    (std::cmp::Reverse(claim.state), rank(block, name), name)
}

/// Deterministic tie-break rank of a claimant for a block: FNV-1a over the
/// block and the name. It spreads wins evenly (no name always wins) and is
/// the same on every node and every version of the agent.
pub fn rank(block: Ipv4Net, name: &str) -> u64 {
    fnv1a(
        block
            .addr()
            .octets()
            .iter()
            .chain(&[block.prefix_len()])
            .chain(name.as_bytes()),
    )
}

/// FNV-1a, 64 bits.
pub fn fnv1a<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kv: &[(&str, &str)]) -> Record {
        Record::parse(kv.iter().map(|(k, v)| (*k, *v)))
    }

    fn addr(i: u8) -> std::net::SocketAddr {
        ([172, 31, 0, i], 6783).into()
    }

    fn b(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    /// Generation `generation` of `name`, gossiping from 172.31.0.`at`.
    fn seen<'a>(
        name: &'a str,
        generation: u64,
        at: u8,
        live: bool,
        record: &'a Record,
    ) -> Seen<'a> {
        Seen {
            name,
            generation,
            gossip_addr: addr(at),
            live,
            record,
        }
    }

    #[test]
    fn records_parse_and_bad_values_are_ignored_not_fatal() {
        let r = rec(&[
            ("ip", "172.31.0.1"),
            ("vxlan_port", "4789"),
            ("block:10.32.1.0/24", "settled 7"),
            ("block:10.32.2.0/24", "pending 9"),
            ("block:10.32.3.1/24", "settled 7"),
            ("block:nonsense", "settled 7"),
            ("block:10.32.4.0/24", "owned"),
            ("forget:node9", "12"),
            ("some_future_key", "x"),
        ]);
        assert_eq!(r.ip, Some("172.31.0.1".parse().unwrap()));
        assert_eq!(r.vxlan_port, Some(4789));
        assert_eq!(r.claims.len(), 2);
        assert_eq!(r.claims[&b("10.32.2.0/24")].state, ClaimState::Pending);
        assert_eq!(r.forgets["node9"], 12);
        assert_eq!(r.ignored, 3);
    }

    #[test]
    fn a_settled_claim_beats_a_pending_one_whatever_the_rank() {
        let blk = b("10.32.1.0/24");
        let (low, high) = if rank(blk, "a") < rank(blk, "b") {
            ("a", "b")
        } else {
            ("b", "a")
        };
        let ra = rec(&[("block:10.32.1.0/24", "pending 1")]);
        let rb = rec(&[("block:10.32.1.0/24", "settled 1")]);
        let v = View::build([seen(low, 1, 1, true, &ra), seen(high, 1, 2, true, &rb)]);
        assert_eq!(v.owner(blk).unwrap().0, high);
        assert!(v.conflicts().is_empty());
    }

    #[test]
    fn the_newest_generation_of_a_name_is_the_member() {
        let old = rec(&[("block:10.32.1.0/24", "pending 1")]);
        let new = rec(&[("block:10.32.2.0/24", "settled 2")]);
        let v = View::build([seen("n", 2, 1, true, &new), seen("n", 1, 1, false, &old)]);
        assert_eq!(v.members.len(), 1);
        assert!(v.members["n"].live);
        assert!(!v.is_claimed(b("10.32.1.0/24")));
        assert!(v.is_claimed(b("10.32.2.0/24")));
    }

    #[test]
    fn a_forget_voids_the_generation_and_the_claims_it_made() {
        let gone = rec(&[("block:10.32.1.0/24", "settled 5")]);
        let back = rec(&[
            ("block:10.32.1.0/24", "settled 5"),
            ("block:10.32.9.0/24", "pending 8"),
        ]);
        let forgetter = rec(&[("forget:n", "5")]);
        let seen_gone = seen("n", 5, 1, false, &gone);
        let f = seen("f", 1, 2, true, &forgetter);
        let v = View::build([seen_gone, f]);
        assert!(!v.members.contains_key("n"));
        assert!(!v.is_claimed(b("10.32.1.0/24")), "its block is free again");
        // The node comes back (generation 8) still publishing the old block:
        // that claim stays void, its new one counts.
        let f = seen("f", 1, 2, true, &forgetter);
        let v = View::build([seen("n", 8, 1, true, &back), f]);
        assert!(!v.is_claimed(b("10.32.1.0/24")));
        assert!(v.is_claimed(b("10.32.9.0/24")));
    }

    #[test]
    fn two_settled_claims_are_reported_as_a_conflict_and_one_still_wins() {
        let r = rec(&[("block:10.32.1.0/24", "settled 1")]);
        let v = View::build((0..3).map(|i| Seen {
            name: ["x", "y", "z"][i],
            generation: 1,
            gossip_addr: addr(i as u8),
            live: true,
            record: &r,
        }));
        let c = v.conflicts();
        assert_eq!(c[&b("10.32.1.0/24")].len(), 3);
        let winner = v.owner(b("10.32.1.0/24")).unwrap().0.to_owned();
        let expect = ["x", "y", "z"]
            .into_iter()
            .min_by_key(|n| rank(b("10.32.1.0/24"), n))
            .unwrap();
        assert_eq!(winner, expect);
    }
}
