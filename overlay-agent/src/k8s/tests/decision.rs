//! The reclaim decision, as every agent of a cluster computes it.

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::k8s::controller::to_reclaim;

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

/// A cluster as gossip sees it: every node with its liveness.
struct Cluster {
    gossip: Vec<(&'static str, bool)>,
    k8s: BTreeSet<String>,
    deleted: BTreeSet<String>,
    forgotten: BTreeSet<String>,
}

impl Cluster {
    fn new(gossip: &[(&'static str, bool)], k8s: &[&str]) -> Self {
        Self {
            gossip: gossip.to_vec(),
            k8s: set(k8s),
            deleted: BTreeSet::new(),
            forgotten: BTreeSet::new(),
        }
    }

    /// What the agent `me` decides: its peers are everyone else.
    fn decide(&self, me: &str) -> Vec<String> {
        let peers: Vec<_> = self
            .gossip
            .iter()
            .filter(|(n, _)| *n != me)
            .map(|&(n, alive)| (n.to_owned(), alive))
            .collect();
        to_reclaim(me, &self.k8s, &self.deleted, &peers, &self.forgotten)
    }

    /// Every alive agent's decision, keyed by agent.
    fn decisions(&self) -> Vec<(&'static str, Vec<String>)> {
        self.gossip
            .iter()
            .filter(|(_, alive)| *alive)
            .map(|&(me, _)| (me, self.decide(me)))
            .filter(|(_, d)| !d.is_empty())
            .collect()
    }
}

#[test]
fn exactly_one_agent_forgets_a_deleted_dead_node() {
    let c = Cluster::new(
        &[("a", true), ("b", true), ("c", true), ("d", false)],
        &["a", "b", "c"],
    );
    assert_eq!(c.decisions(), [("a", vec!["d".to_owned()])]);
}

#[test]
fn a_deleted_event_counts_even_if_the_list_still_has_the_node() {
    let mut c = Cluster::new(&[("a", true), ("b", true), ("d", false)], &["a", "b", "d"]);
    assert!(c.decisions().is_empty(), "listed: nobody acts");
    c.deleted = set(&["d"]);
    assert_eq!(c.decisions(), [("a", vec!["d".to_owned()])]);
}

#[test]
fn an_alive_node_is_never_forgotten() {
    let mut c = Cluster::new(&[("a", true), ("b", true), ("d", true)], &["a", "b"]);
    c.deleted = set(&["d"]);
    assert!(c.decisions().is_empty(), "{:?}", c.decisions());
}

#[test]
fn a_listed_node_is_never_forgotten() {
    let c = Cluster::new(&[("a", true), ("b", true), ("d", false)], &["a", "b", "d"]);
    assert!(c.decisions().is_empty(), "{:?}", c.decisions());
}

#[test]
fn an_already_forgotten_node_is_skipped() {
    let mut c = Cluster::new(&[("a", true), ("b", true), ("d", false)], &["a", "b"]);
    c.forgotten = set(&["d"]);
    assert!(c.decisions().is_empty(), "{:?}", c.decisions());
}

#[test]
fn the_next_agent_takes_over_when_the_leader_dies() {
    // a is still a Node but dead: b is the smallest alive Node.
    let c = Cluster::new(
        &[("a", false), ("b", true), ("c", true), ("d", false)],
        &["a", "b", "c"],
    );
    assert_eq!(c.decisions(), [("b", vec!["d".to_owned()])]);

    // a was deleted too: b reclaims both, once.
    let c = Cluster::new(
        &[("a", false), ("b", true), ("c", true), ("d", false)],
        &["b", "c"],
    );
    assert_eq!(c.decisions(), [("b", vec!["a".to_owned(), "d".to_owned()])]);
}

#[test]
fn an_alive_peer_that_is_no_longer_a_node_is_not_the_leader() {
    // a is being drained: deleted from Kubernetes, agent still up.
    let c = Cluster::new(&[("a", true), ("b", true), ("d", false)], &["b"]);
    assert_eq!(c.decisions(), [("b", vec!["d".to_owned()])]);
}

#[test]
fn a_node_gossip_never_saw_is_ignored() {
    let c = Cluster::new(&[("a", true), ("b", true)], &["a", "b"]);
    let peers = vec![("b".to_owned(), true)];
    // "ghost" is neither listed nor a gossip peer.
    assert!(to_reclaim("a", &c.k8s, &set(&["ghost"]), &peers, &BTreeSet::new()).is_empty());
    assert!(c.decisions().is_empty());
}

#[test]
fn nothing_is_done_while_this_node_is_not_listed() {
    let peers = vec![("b".to_owned(), true), ("d".to_owned(), false)];
    let none = BTreeSet::new();
    // No list yet (empty), or a list of another cluster.
    assert!(to_reclaim("a", &none, &none, &peers, &none).is_empty());
    assert!(to_reclaim("a", &set(&["x", "y"]), &none, &peers, &none).is_empty());
}

#[test]
fn this_node_is_never_its_own_victim() {
    let peers = vec![("a".to_owned(), false), ("d".to_owned(), false)];
    let out = to_reclaim(
        "a",
        &set(&["a"]),
        &BTreeSet::new(),
        &peers,
        &BTreeSet::new(),
    );
    assert_eq!(out, ["d"]);
}

proptest! {
    /// Whatever the cluster state, at most one alive agent acts, it only
    /// names dead, unlisted, unforgotten nodes, and one does act when there
    /// is work and an alive Node to do it.
    #[test]
    fn at_most_one_agent_acts_and_only_on_dead_unlisted_nodes(
        nodes in proptest::collection::vec((any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()), 1..8)
    ) {
        const NAMES: [&str; 8] = ["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"];
        let mut c = Cluster::new(&[], &[]);
        for (i, &(alive, listed, deleted, forgotten)) in nodes.iter().enumerate() {
            let name = NAMES[i];
            c.gossip.push((name, alive));
            if listed { c.k8s.insert(name.to_owned()); }
            if deleted { c.deleted.insert(name.to_owned()); }
            if forgotten { c.forgotten.insert(name.to_owned()); }
        }
        let decisions = c.decisions();
        prop_assert!(decisions.len() <= 1, "{decisions:?}");
        let gone = |n: &str| !c.k8s.contains(n) || c.deleted.contains(n);
        let work = c.gossip.iter().any(|&(n, alive)| !alive && gone(n) && !c.forgotten.contains(n));
        let leader = c.gossip.iter().any(|&(n, alive)| alive && !gone(n));
        if work && leader {
            prop_assert_eq!(decisions.len(), 1, "someone must act");
        }
        for (_, victims) in &decisions {
            for v in victims {
                let (_, alive) = c.gossip.iter().find(|(n, _)| n == v).expect("a gossip node");
                prop_assert!(!alive);
                prop_assert!(!c.k8s.contains(v) || c.deleted.contains(v));
                prop_assert!(!c.forgotten.contains(v));
            }
        }
    }
}
