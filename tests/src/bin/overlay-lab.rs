//! `cargo xtask lab`: a two-node overlay in network namespaces, brought up
//! with our datapath, shown working, and torn down on exit or Ctrl-C.

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use overlay_common::Stat;
use overlay_tests::{Lab, LabOptions, Mode, traffic::connectivity_table};

const USAGE: &str = "\
usage: cargo xtask lab [-- OPTIONS]

Brings up two nodes (network namespaces joined by an underlay veth), two
pods on each, and our eBPF overlay between them; prints the all-pairs
connectivity table and each node's datapath status; then waits until
Ctrl-C (or the --hold time) and removes everything it created.

options:
  --nodes N      nodes (default 2; more than 2 are joined by a switch)
  --pods N       pods per node (default 2)
  --hold SECS    keep the lab up this long, then tear down (default: until
                 Ctrl-C on a terminal, 0 otherwise)
  -h, --help     this text
";

struct Args {
    nodes: usize,
    pods: usize,
    hold: Option<u64>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        nodes: 2,
        pods: 2,
        hold: None,
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
        "lab: bringing up {} nodes x {} pods with the eBPF overlay",
        args.nodes, args.pods
    );
    let lab = Lab::new(&LabOptions::uniform(Mode::Overlay, args.nodes, args.pods));
    for node in &lab.nodes {
        println!(
            "node {} ({}): netns {}, block {}, pins {}",
            node.ip,
            node.mode_name(),
            node.ns.name,
            node.block,
            node.pin_dir.display()
        );
        for pod in &node.pods {
            println!("  pod {} netns {} via {}", pod.ip, pod.ns.name, pod.host_if);
        }
    }
    println!("\nConnectivity (ping, all pairs):");
    let (table, all) = connectivity_table(&lab);
    print!("{table}");
    for (i, node) in lab.nodes.iter().enumerate() {
        let c = lab.maps(i).counters().context("reading counters")?;
        println!(
            "\nnode {}: encapsulated {}, decapsulated {}, local {}, passed {}, dropped {}",
            node.ip,
            c.get(Stat::FromPodEncapsulated),
            c.get(Stat::FromUplinkDecapsulated),
            c.get(Stat::FromPodLocal),
            c.get(Stat::FromPodPassed) + c.get(Stat::FromUplinkPassed),
            c.drops()
        );
    }
    println!(
        "\nInspect: ip netns exec {} ping {}   |   bpftool map dump pinned {}/ovl_routes_v1",
        lab.pod(0, 0).ns.name,
        lab.pod(1, 0).ip,
        lab.nodes[0].pin_dir.display()
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
    eprintln!("lab: tearing down");
    drop(lab);
    if !all {
        bail!("some pods could not reach each other");
    }
    Ok(())
}
