//! One real agent among a swarm of SWIM nodes (`overlay_tests::swarm`):
//! it joins a formed cluster, routes every member's block, and its memory
//! stays small. The bench runs the same at 5,000 nodes
//! (`overlay-bench --agent-peers`); CI runs 1,000.

use std::time::Duration;

use overlay_tests::{privileged, swarm};

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "a swarm of 999 SWIM nodes in the test process: run in release (cargo xtask test does)"
)]
fn an_agent_joining_a_thousand_node_cluster_routes_every_block_and_stays_small() {
    privileged!("an_agent_joining_a_thousand_node_cluster_routes_every_block_and_stays_small");
    let r = swarm::agent_among(1000, Duration::from_secs(10), Duration::from_secs(120));
    println!("{r}");
    assert_eq!(r.live, 1000, "members alive at the end:\n{r}");
    assert_eq!(r.false_deaths, 0, "members declared dead:\n{r}");
    assert!(r.routes >= 999, "routes at the end:\n{r}");
    // One push-pull exchange with the seed brings every record and every
    // member: routing a formed cluster does not wait for each member to
    // probe the newcomer (that took minutes before liveness was part of
    // the exchange).
    assert!(
        r.routed_all <= Duration::from_secs(15),
        "the agent took too long to route the cluster:\n{r}"
    );
    assert!(r.peak_rss_mb <= 100.0, "agent memory:\n{r}");
}
