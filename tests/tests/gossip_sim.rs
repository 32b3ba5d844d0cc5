//! Gossip simulations: real gossip nodes (the agent's own code) over
//! chitchat's in-memory transport on tokio's paused clock (see
//! `overlay_tests::gossip_sim`). No privileges needed, nothing touches a
//! network. Sizes are below the bench's (`overlay-bench --gossip-only`) to
//! keep CI within its budget; each test asserts a bound the protocol
//! implies and prints its figures (`-- --nocapture` shows them).

use std::time::Duration;

use overlay_tests::gossip_sim::{
    self, INTERVAL, PHI_THRESHOLD, PartitionOptions, SETTLE, Sim, SimConfig, run,
};

/// Nodes of the membership tests.
const NODES: usize = 100;
/// Nodes of the partition test: enough for sides of very different sizes
/// and for failure detection to show its tail (a side loses its quorum
/// only once most of the other side is declared dead).
const PARTITION_NODES: usize = 200;
/// Partition rounds: two-way, three-way with no majority, two-way.
const PARTITION_ROUNDS: usize = 3;
/// Seed of the partition test's random choices (printed in its report).
const SEED: u64 = 0x5eed;
/// Steady-traffic window after formation.
const WINDOW: Duration = Duration::from_secs(20);

/// Membership spreads epidemically: a node is known everywhere within
/// about log2(N) rounds and held alive after two of its heartbeats have
/// arrived. Twenty rounds is several times that at 100 nodes.
fn alive_bound() -> Duration {
    INTERVAL * 20
}

/// Alive everywhere, then one settle period (a node that loses a collision
/// on its first pick waits a second one), then a few rounds to spread the
/// settled claims.
fn routed_bound() -> Duration {
    alive_bound() + SETTLE * 2 + INTERVAL * 10
}

/// A formed cluster of `nodes` nodes (room for one more), its report
/// printed. Call inside [`run`]: the nodes live on that runtime.
async fn formed(nodes: usize) -> (Sim, gossip_sim::Formation) {
    let mut sim = Sim::new(SimConfig::for_nodes(nodes + 1));
    let f = gossip_sim::form(&mut sim, nodes, WINDOW).await;
    println!("{f}");
    (sim, f)
}

#[test]
fn a_hundred_nodes_started_together_from_three_seeds_converge_within_the_protocol_bound() {
    let f = run(async { formed(NODES).await.1 });
    let alive = f
        .all_alive
        .unwrap_or_else(|| panic!("membership never converged:\n{f}"));
    assert!(
        alive <= alive_bound(),
        "every node saw every node alive only after {alive:?} (bound {:?}):\n{f}",
        alive_bound()
    );
    let routed = f
        .all_routed
        .unwrap_or_else(|| panic!("topologies never converged:\n{f}"));
    assert!(
        routed <= routed_bound(),
        "every node routed every block only after {routed:?} (bound {:?}):\n{f}",
        routed_bound()
    );
    assert!(
        routed >= SETTLE,
        "blocks were routed before a claim could settle ({routed:?}):\n{f}"
    );
    assert!(
        f.problems.is_empty(),
        "duplicate owners after formation:\n{f}"
    );
    assert_eq!(f.blocks, NODES, "one block per node:\n{f}");
    let t = f.steady.unwrap_or_else(|| panic!("no steady window:\n{f}"));
    assert!(
        t.bytes_per_node_per_s > 0.0 && t.bytes_per_datagram <= gossip_sim::MTU as f64,
        "implausible traffic:\n{f}"
    );
}

#[test]
fn a_new_node_is_alive_everywhere_within_seconds_and_routed_after_one_settle_period() {
    let j = run(async {
        let (mut sim, f) = formed(NODES).await;
        assert!(f.all_routed.is_some(), "no cluster to join:\n{f}");
        gossip_sim::add_node(&mut sim, NODES).await
    });
    println!("{j}");
    let alive = j
        .alive_everywhere
        .unwrap_or_else(|| panic!("the new node never became alive everywhere:\n{j}"));
    assert!(
        alive <= alive_bound(),
        "alive everywhere only after {alive:?} (bound {:?}):\n{j}",
        alive_bound()
    );
    let routed = j
        .routed_everywhere
        .unwrap_or_else(|| panic!("the new node's block was never routed everywhere:\n{j}"));
    assert!(
        routed >= SETTLE,
        "routed before its claim could settle ({routed:?}):\n{j}"
    );
    assert!(
        routed <= routed_bound(),
        "routed everywhere only after {routed:?} (bound {:?}):\n{j}",
        routed_bound()
    );
}

#[test]
fn a_stopped_node_leaves_every_topology_before_a_claim_could_settle() {
    let d = run(async {
        let (mut sim, f) = formed(NODES).await;
        assert!(f.all_routed.is_some(), "no cluster to leave:\n{f}");
        gossip_sim::remove_node(&mut sim, NODES / 2).await
    });
    println!("{d}");
    let gone = d
        .dropped_everywhere
        .unwrap_or_else(|| panic!("the stopped node stayed in some topology:\n{d}"));
    // The claim rule's premise: a node cut off notices before its claim
    // settles. The phi window alone is phi x the mean heartbeat interval.
    assert!(
        gone < SETTLE,
        "failure detection ({gone:?}) is not below the settle period ({SETTLE:?}):\n{d}"
    );
    assert!(
        gone >= INTERVAL.mul_f64(PHI_THRESHOLD / 2.0),
        "declared dead implausibly fast ({gone:?}):\n{d}"
    );
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "partition rounds of 200 simulated nodes: run in release (cargo xtask test does)"
)]
fn partitions_never_give_a_block_two_owners_and_minority_sides_settle_nothing() {
    let o = PartitionOptions {
        progress: true,
        ..PartitionOptions::new(PARTITION_NODES, PARTITION_ROUNDS, SEED)
    };
    let p = run(gossip_sim::partitions(&o));
    println!("{p}");
    let violations = p.violations();
    assert!(
        violations.is_empty(),
        "{} violation(s):\n{}\n\n{p}",
        violations.len(),
        violations.join("\n")
    );
    assert_eq!(p.rounds.len(), PARTITION_ROUNDS, "rounds missing:\n{p}");
    assert!(
        p.rounds
            .iter()
            .any(|r| r.groups.len() == 3 && r.groups.iter().all(|g| !g.majority)),
        "no three-way split without a majority:\n{p}"
    );
    for r in &p.rounds {
        assert_eq!(
            r.settled_minority(),
            0,
            "round {}: a minority side settled blocks:\n{p}",
            r.round
        );
        assert!(
            r.converged.is_some(),
            "round {} did not converge:\n{p}",
            r.round
        );
    }
}
