//! Simulations of the SWIM gossip layer (`overlay_tests::swim_sim`): real
//! `Swim` nodes, authenticated, on a virtual clock. Sizes stay below the
//! bench's 5,000 (`overlay-bench --swim-nodes`) to fit CI; the bounds are
//! protocol-time bounds of the targets.

use std::time::Duration;

use overlay_tests::swim_sim::{self, Plan};

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "1,000 simulated nodes: run in release (cargo xtask test does)"
)]
fn a_thousand_nodes_form_spread_records_and_detect_deaths_within_the_targets() {
    let r = swim_sim::run_all(Plan {
        nodes: 1000,
        window: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        lossy: Duration::from_secs(120),
        loss: 0.01,
        churn: Duration::from_secs(60),
        deaths: 20,
        seed: 1,
        stop: || false,
    });
    println!("{r}");
    let cold = r
        .cold_start
        .unwrap_or_else(|| panic!("cold start never converged:\n{r}"));
    assert!(cold <= Duration::from_secs(20), "cold start {cold:?}:\n{r}");
    let all = r
        .join
        .all
        .unwrap_or_else(|| panic!("a new record never spread:\n{r}"));
    assert!(all <= Duration::from_secs(5), "join {all:?}:\n{r}");
    // The new node itself routes to every other within the same bound:
    // it learns who is alive through the push-pull exchange, not only
    // from the members that happen to probe it.
    let joiner = r
        .join
        .joiner
        .unwrap_or_else(|| panic!("the new node never held every member alive:\n{r}"));
    assert!(joiner <= Duration::from_secs(5), "joiner {joiner:?}:\n{r}");
    // 20 deaths, one after another: each is a draw of how long it takes
    // until some node first probes the dead one (an exponential wait of
    // mean 0.5 s at any size: N nodes probe one of N - 1 members every
    // 0.5 s), then 0.5 s to suspect, 2.5 s to refute, and the spread. The
    // simulation is reproducible (fixed seed, fixed hashers): with seed 1
    // the slowest of the 20 took 4.2 s; the bench times more.
    let death = r
        .deaths
        .max()
        .unwrap_or_else(|| panic!("a death was never declared:\n{r}"));
    assert!(death <= Duration::from_secs(6), "death {death:?}:\n{r}");
    assert_eq!(
        r.idle.false_downs + r.lossy.false_downs,
        0,
        "false deaths:\n{r}"
    );
    // Every node, not the mean: the busiest is what the target bounds.
    assert!(r.idle.bandwidth.max <= 1000.0, "idle bandwidth:\n{r}");
    assert!(r.churn.bandwidth.max <= 30_000.0, "churn bandwidth:\n{r}");
    assert_eq!(r.rejected, 0, "datagrams rejected in a clean cluster:\n{r}");
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "200 simulated nodes with the claim rule: run in release (cargo xtask test does)"
)]
fn the_claim_rule_over_swim_keeps_one_owner_per_block_through_a_partition_and_heal() {
    // 30 % cut off; then one node alone, which learns of the others'
    // silence only by probing them one by one (100 probe periods to see a
    // majority down): its unanswered probes must stop it claiming first.
    for cut in [60, 1] {
        let r = swim_sim::claim_partition(200, cut, 7);
        println!("{r}");
        check_claim_partition(&r);
    }
}

fn check_claim_partition(r: &swim_sim::ClaimPartition) {
    assert!(
        r.formed,
        "formation did not give one settled block per node:\n{r}"
    );
    assert!(
        r.duplicates.is_empty(),
        "a block settled on two nodes:\n{r}"
    );
    assert_eq!(
        r.settled_minority, 0,
        "the minority side settled blocks:\n{r}"
    );
    assert!(
        r.settled_majority > 0,
        "the majority side settled nothing (the rule is stuck):\n{r}"
    );
    assert!(r.healed.is_some(), "the cluster never healed:\n{r}");
    assert!(
        r.views_agree,
        "views disagree on owners after the heal:\n{r}"
    );
}
