//! `cargo xtask lab`: nodes in network namespaces, each running a real
//! `overlay-agent run` given only seed peers, so that the agents form the
//! cluster and share out the address blocks by gossip; pods created through
//! the real `overlay-cni` plugin exactly as a CNI runtime calls it; shown
//! working, and torn down (pods deleted through the plugin) on exit or
//! Ctrl-C.

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use overlay_common::Stat;
use overlay_tests::{
    Underlay,
    cluster::{Cluster, bin_path},
    traffic::connectivity_table_of,
};

/// Every node sees every other one alive, with a block, within this.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an agent may take to have a settled block (as `Cluster::gossip_on`).
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(40);

const USAGE: &str = "\
usage: cargo xtask lab [-- OPTIONS]

Brings up four nodes (network namespaces on an underlay switch) and starts
an overlay agent on each (`overlay-agent run` with every node as a seed
peer, a shared gossip password, and nothing else: no topology file, no
blocks assigned). The agents find each other and claim an address block
each by gossip; the lab prints each node's `overlay-agent status`, creates
two pods per node by running the overlay-cni plugin with CNI_COMMAND=ADD as
a runtime does, prints the all-pairs connectivity table and each node's
datapath counters, then waits until Ctrl-C (or the --hold time), deletes
the pods through the plugin (CNI_COMMAND=DEL), checks that nothing is left,
and removes everything it created.

options:
  --nodes N      nodes (default 4; more than 2 are joined by a switch)
  --pods N       pods per node (default 2)
  --hold SECS    keep the lab up this long, then tear down (default: until
                 Ctrl-C on a terminal, 0 otherwise)
  --underlay M   veth (default: whole GSO packets cross the underlay) or wire
                 (NIC-like: MTU-sized frames on the underlay, GRO on receive)
  --tunnel T     the agents' --tunnel: vxlan (default here: the lab's nodes
                 share one link, so auto, the agent's own default, would
                 route every peer directly and never show the VXLAN path),
                 auto or direct (pod traffic routed between nodes without
                 encapsulation; status shows each peer's carriage)
  -h, --help     this text
";

struct Args {
    nodes: usize,
    pods: usize,
    hold: Option<u64>,
    underlay: Underlay,
    tunnel: &'static str,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        nodes: 4,
        pods: 2,
        hold: None,
        underlay: Underlay::Veth,
        tunnel: "vxlan",
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> anyhow::Result<u64> {
            it.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} needs a whole number"))
        };
        match a.as_str() {
            "--nodes" => args.nodes = num("--nodes")? as usize,
            "--pods" => args.pods = num("--pods")? as usize,
            "--hold" => args.hold = Some(num("--hold")?),
            "--underlay" => {
                let m = it.next().context("--underlay needs a value")?;
                args.underlay = Underlay::parse(&m)
                    .with_context(|| format!("--underlay: {m:?} is not veth or wire"))?;
            }
            "--tunnel" => {
                let t = it.next().context("--tunnel needs a value")?;
                args.tunnel = ["vxlan", "auto", "direct"]
                    .into_iter()
                    .find(|m| *m == t)
                    .with_context(|| format!("--tunnel: {t:?} is not vxlan, auto or direct"))?;
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    if !(2..=16).contains(&args.nodes) || !(1..=16).contains(&args.pods) {
        bail!("--nodes must be 2..=16 and --pods 1..=16");
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("overlay-lab: {e:#}");
            std::process::exit(64);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("overlay-lab: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    if !overlay_tests::require_privileges("overlay-lab") {
        bail!("run as root");
    }
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the Ctrl-C handler")?;

    eprintln!(
        "lab: bringing up {} nodes on a {} underlay whose agents (--tunnel {}) form the cluster \
         by gossip from seeds, {} pods each through overlay-cni",
        args.nodes,
        args.underlay.name(),
        args.tunnel,
        args.pods
    );
    let started = Instant::now();
    let mut cluster = Cluster::gossip_unstarted_on(args.nodes, args.underlay);
    cluster.tunnel = args.tunnel;
    for i in 0..args.nodes {
        cluster.spawn_agent(i);
    }
    for i in 0..args.nodes {
        cluster.wait_ready(i, AGENT_READY_TIMEOUT);
    }
    let ready = started.elapsed();
    let converged = cluster.wait_converged(args.nodes, CONVERGE_TIMEOUT);
    eprintln!(
        "lab: every agent had a settled block after {ready:.1?}; every node saw every other \
         one alive with its block {converged:.1?} later"
    );
    for i in 0..args.nodes {
        println!(
            "\n=== node {} ({}): overlay-agent status ===",
            i + 1,
            cluster.lab.nodes[i].ip
        );
        print!("{}", cluster.status_text(i));
    }
    let mut pods = Vec::new();
    for i in 0..args.nodes {
        for _ in 0..args.pods {
            pods.push(cluster.add_pod(i));
        }
    }
    println!();
    for (i, node) in cluster.lab.nodes.iter().enumerate() {
        let status = cluster.status(i);
        let blocks: Vec<&str> = status["gossip"]["blocks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["state"] == "settled")
            .filter_map(|b| b["block"].as_str())
            .collect();
        println!(
            "node {}: netns {}, blocks {}, agent socket {}, log {}",
            node.ip,
            node.ns.name,
            blocks.join(" "),
            cluster.agents[i].socket.display(),
            cluster.agents[i].log.display()
        );
        for pod in pods.iter().filter(|p| p.node == i) {
            println!(
                "  pod {} netns {} container {} via {} (CNI ADD result: {})",
                pod.ip,
                pod.ns.name,
                pod.container_id,
                pod.result["interfaces"][0]["name"].as_str().unwrap_or("?"),
                pod.result
            );
        }
    }
    println!("\nConnectivity (ping, all pairs):");
    let table_pods: Vec<_> = pods.iter().map(|p| (p.ip, p.node, &p.ns)).collect();
    let (table, all) = connectivity_table_of(&table_pods);
    print!("{table}");
    for (i, node) in cluster.lab.nodes.iter().enumerate() {
        let c = cluster.lab.maps(i).counters().context("reading counters")?;
        let usage = cluster.allocated(i).len();
        println!(
            "\nnode {}: {usage} addresses allocated; encapsulated {}, decapsulated {}, sent \
             direct {}, received direct {}, local {}, passed {}, dropped {}",
            node.ip,
            c.get(Stat::FromPodEncapsulated),
            c.get(Stat::FromUplinkDecapsulated),
            c.get(Stat::FromPodDirect),
            c.get(Stat::FromUplinkDirect),
            c.get(Stat::FromPodLocal),
            c.get(Stat::FromPodPassed) + c.get(Stat::FromUplinkPassed),
            c.drops()
        );
    }
    println!("\nnode 0's Prometheus metrics (GET :6782/metrics), datapath and CNI lines:");
    for line in cluster.metrics(0).lines().filter(|l| {
        !l.starts_with('#')
            && (l.starts_with("overlay_datapath_")
                || l.starts_with("overlay_peers")
                || l.starts_with("overlay_peer_carriage")
                || l.starts_with("overlay_ipam_addresses")
                || l.starts_with("overlay_cni_operation_duration_seconds_count"))
    }) {
        println!("  {line}");
    }
    println!(
        "\nInspect: ip netns exec {} ping {}   |   ip netns exec {} {} status",
        pods[0].ns.name,
        pods.last().map(|p| p.ip.to_string()).unwrap_or_default(),
        cluster.lab.nodes[0].ns.name,
        bin_path("overlay-agent").display()
    );

    let hold = args.hold.map(Duration::from_secs).unwrap_or_else(|| {
        // SAFETY: isatty has no preconditions.
        if unsafe { libc::isatty(0) } == 1 {
            Duration::MAX
        } else {
            Duration::ZERO
        }
    });
    if hold > Duration::ZERO {
        if hold == Duration::MAX {
            eprintln!("\nlab: up; press Ctrl-C to tear down");
        } else {
            eprintln!("\nlab: up for {}s (Ctrl-C to stop early)", hold.as_secs());
        }
        let start = Instant::now();
        let _ = rx.recv_timeout(hold.saturating_sub(start.elapsed()));
    }
    eprintln!("lab: deleting the pods through overlay-cni and tearing down");
    for pod in &pods {
        cluster.del_pod(pod);
    }
    for i in 0..args.nodes {
        if !cluster.allocated(i).is_empty() || !cluster.host_veths(i).is_empty() {
            bail!("node {i} kept addresses or veths after every DEL");
        }
    }
    drop(pods);
    drop(cluster);
    if !all {
        bail!("some pods could not reach each other");
    }
    Ok(())
}
