//! Cluster IPAM, one node's side: which blocks this node claims, when a
//! claim settles, and what it gives up.
//!
//! The rule, applied on every tick against the current [`View`]:
//!
//! 1. A node that needs addresses (no usable block, or fewer free addresses
//!    than the low-water mark) and has no claim in flight publishes a
//!    `pending` claim on a block nobody claims, live or dead.
//! 2. A pending claim that loses to another claim on the same block under
//!    [`super::view::priority`] is withdrawn at once, and another block is
//!    tried.
//! 3. A pending claim that has been held for the settle period **while this
//!    node saw a quorum** (a strict majority of the members it knows, live
//!    and dead, are live) becomes `settled`; only then are addresses handed
//!    out of it. Losing the quorum restarts the period.
//!
//! Why this gives one owner per block: two nodes that can gossip see each
//! other's claims within a few rounds, far less than the settle period, and
//! the loser withdraws before settling. Two nodes that cannot gossip are in
//! different partitions, and at most one partition holds a majority, so at
//! most one of them can settle. The settle period must exceed the failure
//! detector's window plus the time a claim takes to spread, so that a node
//! cut off from the majority notices it has lost the quorum before a claim
//! made just before the cut (which the other side may not have seen) could
//! settle. A settled claim beats
//! any pending one, so healing never takes a block from the node using it.
//! Two settled claims on one block (possible only if membership itself was
//! wrong, e.g. a `forget` of a live node) are reported as a conflict: the
//! rule still names one owner, and the loser stops allocating from it.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use ipnet::Ipv4Net;
use tokio::time::Instant;

use super::view::{Claim, ClaimState, View, fnv1a, priority};

/// Knobs of the claim rule.
#[derive(Clone, Debug)]
pub struct ClaimConfig {
    /// The cluster range blocks are cut from.
    pub range: Ipv4Net,
    /// Prefix length of one block.
    pub block_prefix: u8,
    /// How long a claim is held, with a quorum, before it settles.
    pub settle: Duration,
    /// Claim another block when fewer addresses than this are free.
    pub low_water: u64,
    /// Seeds other than this node were configured: do not claim before
    /// having heard from another member (a node that cannot reach its seeds
    /// must not found a cluster of its own).
    pub must_join: bool,
}

/// Something worth a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A pending claim was published.
    Claimed(Ipv4Net),
    /// A claim settled: addresses may be handed out of it.
    Settled(Ipv4Net),
    /// A pending claim lost to `winner` and was withdrawn.
    Withdrew {
        /// The block.
        block: Ipv4Net,
        /// Who keeps it.
        winner: String,
    },
    /// A settled block of ours is also settled elsewhere and we lost it.
    ConflictLost {
        /// The block.
        block: Ipv4Net,
        /// Who keeps it.
        winner: String,
    },
    /// A block lost to a conflict is ours again (the other claim went away).
    ConflictCleared(Ipv4Net),
    /// A forget record covers blocks this node held: they are no longer its.
    Forgotten(Vec<Ipv4Net>),
    /// Addresses are needed but every block of the range is claimed.
    Exhausted,
    /// The quorum was lost: no claim can settle until it is back.
    QuorumLost {
        /// Live members.
        live: usize,
        /// Known members.
        known: usize,
    },
    /// The quorum is back.
    QuorumRegained,
}

/// One node's claims.
#[derive(Debug)]
pub struct Claimer {
    name: String,
    generation: u64,
    config: ClaimConfig,
    /// Pending claims and since when they have been held with a quorum.
    pending: BTreeMap<Ipv4Net, Instant>,
    /// Settled blocks and the generation that first claimed each.
    settled: BTreeMap<Ipv4Net, u64>,
    /// Settled blocks currently lost to a conflict.
    lost: BTreeSet<Ipv4Net>,
    attempts: u64,
    quorum: bool,
    exhausted: bool,
}

impl Claimer {
    /// A claimer for node `name` in `generation`, holding the blocks it
    /// settled before (from its state file).
    pub fn new(
        name: &str,
        generation: u64,
        config: ClaimConfig,
        settled: BTreeMap<Ipv4Net, u64>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            generation,
            config,
            pending: BTreeMap::new(),
            settled,
            lost: BTreeSet::new(),
            attempts: 0,
            quorum: false,
            exhausted: false,
        }
    }

    /// Whether this node sees a quorum in `view`: a strict majority of the
    /// members it knows alive, and its own probes mostly answered.
    pub fn has_quorum(&self, view: &View) -> bool {
        if view.cut_off {
            return false;
        }
        let known = view.members.len().max(1);
        let live = view.live_count().max(1);
        if self.config.must_join && known < 2 {
            return false;
        }
        live * 2 > known
    }

    /// Runs the rule once. `free` is the number of free addresses in the
    /// usable blocks (`None` when unknown).
    pub fn tick(&mut self, now: Instant, view: &View, free: Option<u64>) -> Vec<Event> {
        let mut events = Vec::new();
        // `free` was measured in the blocks usable before this tick: it says
        // nothing about a block that settles (or comes back) in this tick.
        let measured_in = self.usable();

        // Forget records that cover our own blocks.
        if let Some(g) = view.forgotten.get(&self.name) {
            let gone: Vec<Ipv4Net> = self
                .settled
                .iter()
                .filter(|(_, origin)| **origin <= *g)
                .map(|(b, _)| *b)
                .collect();
            if !gone.is_empty() {
                for b in &gone {
                    self.settled.remove(b);
                    self.lost.remove(b);
                }
                events.push(Event::Forgotten(gone));
            }
        }

        let quorum = self.has_quorum(view);
        if quorum != self.quorum {
            events.push(if quorum {
                Event::QuorumRegained
            } else {
                Event::QuorumLost {
                    live: view.live_count(),
                    known: view.members.len(),
                }
            });
            self.quorum = quorum;
        }

        // Pending claims: withdraw losers, settle the rest in time.
        let pending: Vec<(Ipv4Net, Instant)> = self.pending.iter().map(|(b, t)| (*b, *t)).collect();
        for (block, since) in pending {
            let mine = Claim {
                state: ClaimState::Pending,
                origin: self.generation,
            };
            if let Some(winner) = self.beaten_by(view, block, mine) {
                self.pending.remove(&block);
                events.push(Event::Withdrew { block, winner });
            } else if !quorum {
                self.pending.insert(block, now);
            } else if now.duration_since(since) >= self.config.settle {
                self.pending.remove(&block);
                self.settled.insert(block, self.generation);
                events.push(Event::Settled(block));
            }
        }

        // Settled blocks: a second settled claim is a conflict.
        for (block, origin) in self.settled.clone() {
            let mine = Claim {
                state: ClaimState::Settled,
                origin,
            };
            match self.beaten_by(view, block, mine) {
                Some(winner) => {
                    if self.lost.insert(block) {
                        events.push(Event::ConflictLost { block, winner });
                    }
                }
                None => {
                    if self.lost.remove(&block) {
                        events.push(Event::ConflictCleared(block));
                    }
                }
            }
        }

        // Claim another block when addresses run short.
        let usable = self.usable();
        let short = usable.is_empty()
            || (usable == measured_in && free.is_some_and(|f| f < self.config.low_water));
        if short && quorum && self.pending.is_empty() {
            match self.pick_free(view) {
                Some(block) => {
                    self.pending.insert(block, now);
                    self.exhausted = false;
                    events.push(Event::Claimed(block));
                }
                None => {
                    if !self.exhausted {
                        events.push(Event::Exhausted);
                    }
                    self.exhausted = true;
                }
            }
        }
        events
    }

    /// The claim that beats ours on `block`, if any.
    fn beaten_by(&self, view: &View, block: Ipv4Net, mine: Claim) -> Option<String> {
        let ours = priority(block, &self.name, mine);
        view.claims
            .get(&block)?
            .iter()
            .filter(|(n, _)| *n != self.name)
            .filter(|(n, c)| priority(block, n, *c) < ours)
            .min_by_key(|(n, c)| priority(block, n, *c))
            .map(|(n, _)| n.clone())
    }

    /// A block nobody claims, probing from a point derived from our name so
    /// that nodes starting together rarely pick the same one.
    fn pick_free(&mut self, view: &View) -> Option<Ipv4Net> {
        let bits = u32::from(self.config.block_prefix - self.config.range.prefix_len());
        let count: u64 = 1 << bits;
        let seed = fnv1a(
            self.name
                .as_bytes()
                .iter()
                .chain(&self.attempts.to_be_bytes()),
        );
        self.attempts += 1;
        let base = u32::from(self.config.range.network());
        let step = 1u64 << (32 - u32::from(self.config.block_prefix));
        (0..count)
            .map(|i| (seed.wrapping_add(i)) % count)
            .map(|i| {
                let addr = base as u64 + i * step;
                Ipv4Net::new((addr as u32).into(), self.config.block_prefix)
                    .expect("prefix validated")
            })
            .find(|b| {
                !view.is_claimed(*b)
                    && !self.pending.contains_key(b)
                    && !self.settled.contains_key(b)
            })
    }

    /// What this node publishes: every pending and settled claim.
    pub fn published(&self) -> BTreeMap<Ipv4Net, Claim> {
        let pending = self.pending.keys().map(|b| {
            (
                *b,
                Claim {
                    state: ClaimState::Pending,
                    origin: self.generation,
                },
            )
        });
        let settled = self.settled.iter().map(|(b, o)| {
            (
                *b,
                Claim {
                    state: ClaimState::Settled,
                    origin: *o,
                },
            )
        });
        pending.chain(settled).collect()
    }

    /// Blocks addresses may be handed out of: settled and not lost.
    pub fn usable(&self) -> Vec<Ipv4Net> {
        self.settled
            .keys()
            .filter(|b| !self.lost.contains(b))
            .copied()
            .collect()
    }

    /// Settled blocks with their origin generation (what is persisted).
    pub fn settled(&self) -> &BTreeMap<Ipv4Net, u64> {
        &self.settled
    }

    /// Pending claims.
    pub fn pending(&self) -> impl Iterator<Item = &Ipv4Net> {
        self.pending.keys()
    }

    /// Settled blocks lost to a conflict.
    pub fn lost(&self) -> &BTreeSet<Ipv4Net> {
        &self.lost
    }

    /// Whether the last tick saw a quorum.
    pub fn quorum(&self) -> bool {
        self.quorum
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::gossip::view::{Record, Seen};

    const SETTLE: Duration = Duration::from_secs(10);

    fn config() -> ClaimConfig {
        ClaimConfig {
            range: "10.32.0.0/12".parse().unwrap(),
            block_prefix: 24,
            settle: SETTLE,
            low_water: 8,
            must_join: false,
        }
    }

    /// A fake cluster: each node's published record and liveness.
    struct Fake {
        nodes: BTreeMap<String, (Record, bool)>,
    }

    impl Fake {
        fn new(names: &[&str]) -> Self {
            Self {
                nodes: names
                    .iter()
                    .map(|n| (n.to_string(), (Record::default(), true)))
                    .collect(),
            }
        }

        fn publish(&mut self, c: &Claimer) {
            let r = &mut self.nodes.get_mut(&c.name).unwrap().0;
            r.claims = c.published();
        }

        fn view(&self) -> View {
            View::build(self.nodes.iter().map(|(n, (r, live))| Seen {
                name: n,
                generation: 1,
                gossip_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
                live: *live,
                record: r,
            }))
        }
    }

    #[test]
    fn a_claim_settles_only_after_the_settle_period_with_a_quorum() {
        let mut fake = Fake::new(&["a", "b", "c"]);
        let mut a = Claimer::new("a", 1, config(), BTreeMap::new());
        let t0 = Instant::now();
        let ev = a.tick(t0, &fake.view(), None);
        let Some(Event::Claimed(block)) = ev.iter().find(|e| matches!(e, Event::Claimed(_))) else {
            panic!("no claim: {ev:?}")
        };
        let block = *block;
        fake.publish(&a);
        assert!(a.usable().is_empty(), "pending blocks are not usable");
        a.tick(t0 + SETTLE / 2, &fake.view(), None);
        assert!(a.usable().is_empty());
        // Quorum lost (b and c dead) just before settling: the clock restarts.
        fake.nodes.get_mut("b").unwrap().1 = false;
        fake.nodes.get_mut("c").unwrap().1 = false;
        let ev = a.tick(t0 + SETTLE - Duration::from_millis(1), &fake.view(), None);
        assert!(
            ev.contains(&Event::QuorumLost { live: 1, known: 3 }),
            "{ev:?}"
        );
        assert!(a.usable().is_empty());
        fake.nodes.get_mut("b").unwrap().1 = true;
        let back = t0 + SETTLE;
        a.tick(back, &fake.view(), None);
        assert!(a.usable().is_empty(), "the settle period restarted");
        let ev = a.tick(back + SETTLE, &fake.view(), None);
        assert!(ev.contains(&Event::Settled(block)), "{ev:?}");
        assert_eq!(a.usable(), vec![block]);
    }

    #[test]
    fn a_node_whose_first_block_settles_does_not_claim_a_second_one() {
        let mut fake = Fake::new(&["a", "b", "c"]);
        let mut a = Claimer::new("a", 1, config(), BTreeMap::new());
        let t0 = Instant::now();
        // No usable block yet: nothing is free in the (empty) usable set.
        a.tick(t0, &fake.view(), Some(0));
        fake.publish(&a);
        let ev = a.tick(t0 + SETTLE, &fake.view(), Some(0));
        assert!(ev.iter().any(|e| matches!(e, Event::Settled(_))), "{ev:?}");
        assert!(
            !ev.iter().any(|e| matches!(e, Event::Claimed(_))),
            "claimed again on a free count measured before the block settled: {ev:?}"
        );
        let ev = a.tick(t0 + SETTLE * 2, &fake.view(), Some(254));
        assert!(ev.is_empty(), "{ev:?}");
        assert_eq!(a.published().len(), 1);
    }

    #[test]
    fn of_two_pending_claims_on_one_block_the_lower_rank_keeps_it() {
        let mut fake = Fake::new(&["a", "b"]);
        let block: Ipv4Net = "10.32.7.0/24".parse().unwrap();
        let mut a = Claimer::new("a", 1, config(), BTreeMap::new());
        let mut b = Claimer::new("b", 1, config(), BTreeMap::new());
        let now = Instant::now();
        a.pending.insert(block, now);
        b.pending.insert(block, now);
        fake.publish(&a);
        fake.publish(&b);
        let view = fake.view();
        let ea = a.tick(now, &view, None);
        let eb = b.tick(now, &view, None);
        let winner = view.owner(block).unwrap().0.to_owned();
        let (w, l, el) = if winner == "a" {
            (&a, &b, &eb)
        } else {
            (&b, &a, &ea)
        };
        assert!(w.pending.contains_key(&block));
        assert!(!l.pending.contains_key(&block));
        assert!(el.contains(&Event::Withdrew {
            block,
            winner: winner.clone()
        }));
        // The loser has already moved to another block.
        assert_eq!(l.pending.len(), 1);
    }

    #[test]
    fn a_node_that_must_join_claims_nothing_alone() {
        let fake = Fake::new(&["a"]);
        let mut a = Claimer::new(
            "a",
            1,
            ClaimConfig {
                must_join: true,
                ..config()
            },
            BTreeMap::new(),
        );
        let ev = a.tick(Instant::now(), &fake.view(), None);
        assert!(a.published().is_empty(), "{ev:?}");
    }

    #[test]
    fn more_blocks_are_claimed_when_free_addresses_run_low() {
        let fake = Fake::new(&["a"]);
        let owned: Ipv4Net = "10.32.1.0/24".parse().unwrap();
        let mut a = Claimer::new("a", 1, config(), [(owned, 1)].into());
        let now = Instant::now();
        let ev = a.tick(now, &fake.view(), Some(100));
        assert_eq!(
            ev,
            vec![Event::QuorumRegained],
            "enough addresses: no claim"
        );
        let ev = a.tick(now, &fake.view(), Some(3));
        assert!(
            matches!(ev[..], [Event::Claimed(b)] if b != owned),
            "{ev:?}"
        );
    }

    #[test]
    fn a_full_range_is_reported_once_not_looped_on() {
        let mut fake = Fake::new(&["a", "b"]);
        let small = ClaimConfig {
            range: "10.32.0.0/23".parse().unwrap(),
            ..config()
        };
        let r = &mut fake.nodes.get_mut("b").unwrap().0;
        for blk in ["10.32.0.0/24", "10.32.1.0/24"] {
            r.claims.insert(
                blk.parse().unwrap(),
                Claim {
                    state: ClaimState::Settled,
                    origin: 1,
                },
            );
        }
        let mut a = Claimer::new("a", 1, small, BTreeMap::new());
        let now = Instant::now();
        assert_eq!(
            a.tick(now, &fake.view(), None),
            vec![Event::QuorumRegained, Event::Exhausted]
        );
        assert!(a.tick(now, &fake.view(), None).is_empty());
    }

    /// Many nodes, random gossip delays modelled as each node seeing a
    /// random subset of the others' latest records: once everyone sees
    /// everything, every block has exactly one settled owner.
    #[test]
    fn concurrent_claimers_end_with_one_owner_per_block() {
        let names: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut fake = Fake::new(&refs);
        // A small range so that collisions are frequent.
        let cfg = ClaimConfig {
            range: "10.32.0.0/18".parse().unwrap(),
            ..config()
        };
        let mut claimers: Vec<Claimer> = names
            .iter()
            .map(|n| Claimer::new(n, 1, cfg.clone(), BTreeMap::new()))
            .collect();
        let mut now = Instant::now();
        let mut rng = 0x1234_5678_u64;
        for _round in 0..60 {
            let view = fake.view();
            for c in &mut claimers {
                // Each node sees the state as of this round (claims made in
                // the same round are invisible to each other: concurrency).
                let free = if c.usable().is_empty() {
                    None
                } else {
                    Some(1000)
                };
                c.tick(now, &view, free);
            }
            for c in &claimers {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
                if rng >> 60 != 0 {
                    fake.publish(c);
                }
            }
            now += Duration::from_secs(1);
        }
        for c in &claimers {
            fake.publish(c);
        }
        let view = fake.view();
        assert!(view.conflicts().is_empty(), "{:?}", view.conflicts());
        let mut owners: BTreeMap<Ipv4Net, &str> = BTreeMap::new();
        for c in &claimers {
            assert!(!c.usable().is_empty(), "{} got no block", c.name);
            for b in c.usable() {
                if let Some(o) = owners.insert(b, &c.name) {
                    panic!("{b} used by {o} and {}", c.name);
                }
            }
        }
    }
}
