//! `overlay-bench`: the side-by-side benchmark behind `cargo xtask bench`.
//!
//! Four scenarios, interleaved inside every repetition so slow drift spreads
//! evenly over them, each on a freshly built [`Lab`] that is torn down again
//! before the next one:
//!
//! - (a) `underlay`: node to node over `ul0`, the limit of this machine;
//! - (b) `plain`: pod to pod, plain routes, no encapsulation (pod MTU 1500);
//! - (c) `kernel-vxlan`: pod to pod through a Linux vxlan device (Flannel);
//! - (d) `overlay`: pod to pod through our eBPF datapath.
//!
//! Client and server (and so all softirq work) are pinned to CPU 0, so
//! throughput reflects the CPU cost per byte of each path. Results are the
//! medians over the repetitions and their ratios; absolute numbers drift
//! between invocations, ratios within one invocation much less.
//!
//! Then the CNI part ([`overlay_tests::cni_bench`]): ADD and DEL latency of
//! our plugin against the reference `bridge` + `host-local`, interleaved.
//!
//! Then the gossip part ([`overlay_tests::gossip_sim`]): a cluster of real
//! gossip nodes in one process on a virtual clock (formation, a new node, a
//! death, then partition rounds), in protocol time and wall-clock time.

use std::{
    fmt::Write as _,
    io::Read,
    panic::AssertUnwindSafe,
    path::Path,
    process::{ExitCode, ExitStatus, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use overlay_common::Stat;
use overlay_tests::{
    Lab, LabOptions, Mode, Netns, Process, cni_bench,
    gossip_sim::{self, Membership, PartitionOptions, Partitions},
    lab::{KERNEL_VXLAN_DEV, UPLINK},
    swim_sim,
};
use serde_json::Value;

const USAGE: &str = "\
overlay-bench: compare our eBPF VXLAN datapath with the underlay, plain routing
and the kernel's VXLAN device, side by side, in network namespaces.

Usage: overlay-bench [OPTIONS]      (usually: cargo xtask bench -- [OPTIONS])

Options:
  --reps N            repetitions of the five scenarios, interleaved [default: 3]
  --duration S        seconds of each iperf3 TCP run (1 and 4 streams) [default: 10]
  --lat-duration S    seconds of the sockperf TCP request/response run [default: 5]
  --raw               also print every repetition's numbers
  --cni-rounds N      rounds of CNI ADD+DEL per plugin, interleaved [default: 200]
  --cni-only          only the CNI part
  --skip-cni          leave the CNI part out
  --gossip-only       only the gossip simulation (needs no root)
  --skip-gossip       leave the gossip simulation out
  --gossip-nodes N    nodes of the formation/new-node/death run, 0 for none
                      [default: 1000]
  --gossip-partition-nodes N
                      nodes of the partition run [default: 200]
  --gossip-rounds N   partition rounds, 0 for none [default: 5]
  --gossip-seed N     seed of the partition run's random choices [default: 24301]
  --swim-nodes N      nodes of the SWIM gossip layer's simulation, 0 for none
                      [default: 2000]
  --swim-steady S     seconds of its idle and of its 1 % loss windows
                      [default: 600]
  -h, --help          print this help

Scenarios (a fresh topology each, torn down afterwards):
  (a) underlay      node 1 -> node 2 over the underlay veth ul0
  (b) plain         pod -> pod, plain routes, no encapsulation, pod MTU 1500
  (b') plain-1450   the same with pod MTU 1450: the MTU's share of the cost
  (c) kernel-vxlan  pod -> pod through a Linux vxlan device, pod MTU 1450
  (d) overlay       pod -> pod through our eBPF datapath, pod MTU 1450

Measured per scenario: iperf3 TCP (cubic) 1 stream and 4 streams, sockperf TCP
ping-pong with 64 B messages (full round trip, avg and p99), and the average
size of the packets node 1 sends on ul0 (GSO check). Client and server are
pinned to CPU 0. The table reports medians over the repetitions and ratios.

CNI part (after the scenarios): ADD and DEL latency, median and p99, of our
overlay-cni (with a running overlay-agent) against the reference bridge +
host-local from /usr/lib/cni (ipMasq on), each in a node namespace of its own,
one fresh pod namespace per round, plugin runs timed from spawn to exit, the
two plugins alternating round by round after 5 warm-up rounds each.

Gossip part (last): real gossip nodes (the agent's code) in one process over
chitchat's in-memory transport on tokio's paused clock, so times are protocol
time (1 s rounds, phi 8, 15 s settle), printed with the wall-clock each
scenario took. A cluster of --gossip-nodes forms from 3 seeds (time until
everyone sees everyone alive and routes everyone's block, steady bytes per node
per second), a node joins, a node dies. Then --gossip-rounds partitions of a
--gossip-partition-nodes cluster: random two-way splits (20-80 %) and every
third round a three-way split with no majority, ~10 % of every side made to
claim blocks, each cut held 45 s, healed, and checked: one owner per block, no
conflict, identical topologies, nothing settled on a minority side.
First of the gossip part, the SWIM layer (overlay_agent::gossip::swim, not yet
the agent's) at --swim-nodes: cold start within 30 s, a join, a death, 10
minutes idle, 10 minutes at 1 % loss, 2 minutes of churn (10 joins and 10
deaths a minute), on a discrete-event virtual clock. Its cost grows faster
than the square of the node count (foca finds a member by a linear scan, and
one process runs every node): 1000 nodes take about 20 s of CPU and 340 MB,
5000 nodes did not finish a cold start within 12 minutes of CPU here (about
4.7 GB), hence the default of 2000 (about 90 s of CPU and 1 GB).

Needs root, iperf3, sockperf, taskset, ss and ping; for the CNI part
containernetworking-plugins, iptables, nft and the overlay-agent and
overlay-cni binaries built next to this one. Takes about
reps x 5 x (duration x 2 + lat-duration + 12) seconds, plus about
cni-rounds x 0.25 seconds for the CNI part, plus about 20 minutes for the
gossip part at its default sizes (one core; the 1000-node run dominates, needs
about 14 GB of memory, and grows with the square of the node count).
Exit status: 0 when measured (whatever the PASS/MISS lines say), 1 when a
scenario or the CNI part failed or the gossip simulation broke an invariant
(VIOLATION lines), 64 on a bad command line, 130 when interrupted.
";

/// Set by Ctrl-C (SIGINT), SIGTERM or SIGHUP; checked between steps.
static STOP: AtomicBool = AtomicBool::new(false);

const IPERF_PORT: &str = "5201";
const SOCKPERF_PORT: &str = "11111";
/// Every client may overrun its nominal duration by this much before it is
/// killed.
const CLIENT_SLACK: Duration = Duration::from_secs(30);
/// Average underlay packet size (bytes) below which GSO is taken to be lost:
/// a bit under three full-MTU frames.
const GSO_MIN_AVG_PACKET: f64 = 4000.0;
/// Minimum datapath counter movement that proves traffic took our path.
const MIN_DATAPATH_PACKETS: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Underlay,
    Plain,
    Plain1450,
    KernelVxlan,
    Overlay,
}

impl Scenario {
    const ALL: [Scenario; N_SCENARIOS] = [
        Scenario::Underlay,
        Scenario::Plain,
        Scenario::Plain1450,
        Scenario::KernelVxlan,
        Scenario::Overlay,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Underlay => "underlay",
            Scenario::Plain => "plain",
            Scenario::Plain1450 => "plain-1450",
            Scenario::KernelVxlan => "kernel-vxlan",
            Scenario::Overlay => "overlay",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Scenario::Underlay => "(a) underlay",
            Scenario::Plain => "(b) plain",
            Scenario::Plain1450 => "(b') plain, MTU 1450",
            Scenario::KernelVxlan => "(c) kernel-vxlan",
            Scenario::Overlay => "(d) overlay",
        }
    }

    fn mode(self) -> Mode {
        match self {
            Scenario::Underlay | Scenario::Plain | Scenario::Plain1450 => Mode::PlainRouting,
            Scenario::KernelVxlan => Mode::KernelVxlan,
            Scenario::Overlay => Mode::Overlay,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Pod MTU when it differs from the mode's default: (b') separates the
    /// cost of the smaller MTU from the cost of encapsulation.
    fn pod_mtu(self) -> Option<u32> {
        (self == Scenario::Plain1450).then_some(1450)
    }
}

const N_SCENARIOS: usize = 5;

/// Which parts run, in this order: `--cni-only` and `--gossip-only` run
/// one part, `--skip-cni` and `--skip-gossip` leave one out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Parts {
    /// The datapath scenarios.
    datapath: bool,
    /// The CNI part.
    cni: bool,
    /// The gossip simulation.
    gossip: bool,
}

impl Parts {
    const ALL: Parts = Parts {
        datapath: true,
        cni: true,
        gossip: true,
    };
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Opts {
    reps: u32,
    duration: u32,
    lat_duration: u32,
    raw: bool,
    parts: Parts,
    cni_rounds: u32,
    gossip_nodes: u32,
    gossip_partition_nodes: u32,
    gossip_rounds: u32,
    gossip_seed: u32,
    swim_nodes: u32,
    swim_steady: u32,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            reps: 3,
            duration: 10,
            lat_duration: 5,
            raw: false,
            parts: Parts::ALL,
            cni_rounds: 200,
            gossip_nodes: 1000,
            gossip_partition_nodes: 200,
            gossip_rounds: 5,
            gossip_seed: 0x5eed,
            swim_nodes: 2000,
            swim_steady: 600,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Cli {
    Help,
    Run(Opts),
}

fn parse_args(args: &[String]) -> Result<Cli, String> {
    fn number(flag: &str, value: Option<String>, min: u32, max: u32) -> Result<u32, String> {
        let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
        let n: u32 = value
            .parse()
            .map_err(|_| format!("{flag}: {value:?} is not a whole number"))?;
        if !(min..=max).contains(&n) {
            return Err(format!("{flag}: {n} is out of range {min}..={max}"));
        }
        Ok(n)
    }
    let mut opts = Opts::default();
    let mut only: Option<&str> = None;
    let (mut skip_cni, mut skip_gossip) = (false, false);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next().cloned());
        match flag {
            "-h" | "--help" => return Ok(Cli::Help),
            "--reps" => opts.reps = number(flag, value(), 1, 100)?,
            "--duration" => opts.duration = number(flag, value(), 1, 3600)?,
            "--lat-duration" => opts.lat_duration = number(flag, value(), 1, 3600)?,
            "--raw" if inline.is_none() => opts.raw = true,
            "--raw" => return Err("--raw takes no value".into()),
            "--cni-rounds" => opts.cni_rounds = number(flag, value(), 10, 10_000)?,
            "--gossip-nodes" => {
                opts.gossip_nodes = number(flag, value(), 0, 5000)?;
                if (1..10).contains(&opts.gossip_nodes) {
                    return Err(format!("{flag}: 0 (none) or at least 10"));
                }
            }
            "--gossip-partition-nodes" => {
                opts.gossip_partition_nodes = number(flag, value(), 10, 5000)?;
            }
            "--gossip-rounds" => opts.gossip_rounds = number(flag, value(), 0, 100)?,
            "--gossip-seed" => opts.gossip_seed = number(flag, value(), 0, u32::MAX)?,
            "--swim-nodes" => opts.swim_nodes = number(flag, value(), 0, 10_000)?,
            "--swim-steady" => opts.swim_steady = number(flag, value(), 10, 3600)?,
            "--cni-only" | "--skip-cni" | "--gossip-only" | "--skip-gossip" if inline.is_some() => {
                return Err(format!("{flag} takes no value"));
            }
            "--cni-only" | "--gossip-only" => {
                if let Some(other) = only.filter(|o| *o != flag) {
                    return Err(format!("{other} and {flag} exclude each other"));
                }
                only = Some(flag);
            }
            "--skip-cni" => skip_cni = true,
            "--skip-gossip" => skip_gossip = true,
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    opts.parts = match only {
        Some("--cni-only") if skip_cni => {
            return Err("--cni-only and --skip-cni exclude each other".into());
        }
        Some("--gossip-only") if skip_gossip => {
            return Err("--gossip-only and --skip-gossip exclude each other".into());
        }
        Some(flag) => Parts {
            datapath: false,
            cni: flag == "--cni-only",
            gossip: flag == "--gossip-only",
        },
        None => Parts {
            datapath: true,
            cni: !skip_cni,
            gossip: !skip_gossip,
        },
    };
    Ok(Cli::Run(opts))
}

/// The bench was interrupted (Ctrl-C, SIGTERM, SIGHUP).
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

fn check_stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        Err(Interrupted.into())
    } else {
        Ok(())
    }
}

extern "C" fn on_terminate(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() -> Result<()> {
    ctrlc::set_handler(|| {
        if !STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\noverlay-bench: interrupted; stopping and tearing down");
        }
    })
    .context("installing the Ctrl-C handler")?;
    for sig in [libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; `sigaction` is given a fully initialised struct.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_terminate as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        ensure!(rc == 0, "installing a handler for signal {sig}");
    }
    Ok(())
}

/// What a bounded client run produced.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    fn both(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `args` inside `ns`, killing it (by PID) when it overruns `limit` or
/// the bench is interrupted. `ip netns exec` and `taskset` exec in place, so
/// the PID is the client's own.
fn run_in(ns: &Netns, args: &[&str], limit: Duration) -> Result<Output> {
    let mut child = ns
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {args:?} in {}", ns.name))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for a client")? {
            break Some(status);
        }
        if STOP.load(Ordering::SeqCst) || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    check_stop()?;
    let Some(status) = status else {
        bail!(
            "{args:?} in {} did not finish within {} s; killed it",
            ns.name,
            limit.as_secs()
        );
    };
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Starts the iperf3 and sockperf servers in `dst` (pinned to CPU 0) and
/// waits until both listen.
fn start_servers(dst: &Netns, ip: &str) -> Result<Vec<Process>> {
    let mut servers = vec![
        dst.spawn(&["taskset", "-c", "0", "iperf3", "-s", "-p", IPERF_PORT]),
        dst.spawn(&[
            "taskset",
            "-c",
            "0",
            "sockperf",
            "sr",
            "--tcp",
            "-i",
            ip,
            "-p",
            SOCKPERF_PORT,
        ]),
    ];
    let wanted = [IPERF_PORT, SOCKPERF_PORT].map(|p| format!(":{p}"));
    for _ in 0..100 {
        check_stop()?;
        for (server, name) in servers.iter_mut().zip(["iperf3", "sockperf"]) {
            if let Some(ok) = server.wait_timeout(Duration::from_millis(1)) {
                bail!(
                    "the {name} server in {} exited at once ({}); is the port taken?",
                    dst.name,
                    if ok { "status 0" } else { "failed" }
                );
            }
        }
        let listening = run_in(dst, &["ss", "-Hltn"], Duration::from_secs(5))?.stdout;
        let ready = wanted.iter().all(|port| {
            listening.lines().any(|l| {
                l.split_whitespace()
                    .nth(3)
                    .is_some_and(|local| local.ends_with(port.as_str()))
            })
        });
        if ready {
            return Ok(servers);
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "the iperf3/sockperf servers in {} do not listen after 7 s",
        dst.name
    )
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Iperf {
    gbps: f64,
    received_bytes: f64,
    retransmits: u64,
    mss: Option<u64>,
    /// iperf3's own CPU use of sender and receiver, % of one CPU (shows
    /// which side was the bottleneck).
    sender_cpu: Option<f64>,
    receiver_cpu: Option<f64>,
}

impl Iperf {
    fn cpu_split(&self) -> String {
        format!(
            "{}/{} %",
            fmt_num(self.sender_cpu, 0),
            fmt_num(self.receiver_cpu, 0)
        )
    }
}

fn parse_iperf(json: &str) -> Result<Iperf> {
    let v: Value = serde_json::from_str(json).context("iperf3 -J output is not JSON")?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    let f = |p: &str| v.pointer(p).and_then(Value::as_f64);
    let bps = f("/end/sum_received/bits_per_second")
        .context("iperf3 JSON has no .end.sum_received.bits_per_second")?;
    Ok(Iperf {
        gbps: bps / 1e9,
        received_bytes: f("/end/sum_received/bytes").unwrap_or(0.0),
        retransmits: v
            .pointer("/end/sum_sent/retransmits")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        mss: v.pointer("/start/tcp_mss_default").and_then(Value::as_u64),
        sender_cpu: f("/end/cpu_utilization_percent/host_total"),
        receiver_cpu: f("/end/cpu_utilization_percent/remote_total"),
    })
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if it.peek() == Some(&'[') {
            it.next();
            for d in it.by_ref() {
                if ('@'..='~').contains(&d) {
                    break;
                }
            }
        }
    }
    out
}

/// Average and 99th percentile round trip in microseconds from sockperf's
/// `pp --full-rtt` report.
fn parse_sockperf(text: &str) -> Result<(f64, f64)> {
    let text = strip_ansi(text);
    let leading_number = |s: &str| -> Option<f64> {
        let s = s.trim_start();
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        s[..end].parse().ok()
    };
    let mut avg = None;
    let mut p99 = None;
    for line in text.lines() {
        if avg.is_none() {
            avg = ["avg-rtt=", "avg-latency="]
                .iter()
                .find_map(|k| line.find(k).map(|i| &line[i + k.len()..]))
                .and_then(leading_number);
        }
        if line.contains("percentile 99.000") {
            p99 = line.rsplit('=').next().and_then(leading_number);
        }
    }
    match (avg, p99) {
        (Some(a), Some(p)) => Ok((a, p)),
        _ => bail!("no avg-rtt/avg-latency or percentile 99.000 in sockperf output:\n{text}"),
    }
}

/// CPU time of cpu0 and cpu1 from `/proc/stat`: (busy, total) jiffies.
fn cpu_snapshot() -> Vec<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    ["cpu0 ", "cpu1 "]
        .iter()
        .map(|cpu| {
            let f: Vec<u64> = stat
                .lines()
                .find(|l| l.starts_with(cpu))
                .map(|l| {
                    l.split_whitespace()
                        .skip(1)
                        .take(8)
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            if f.len() < 8 {
                return (0, 0);
            }
            // user nice system idle iowait irq softirq steal
            (f[0] + f[1] + f[2] + f[5] + f[6], f.iter().sum())
        })
        .collect()
}

fn cpu_busy(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let total = a.1.saturating_sub(b.1);
            if total == 0 {
                f64::NAN
            } else {
                100.0 * a.0.saturating_sub(b.0) as f64 / total as f64
            }
        })
        .collect()
}

/// One scenario, one repetition.
#[derive(Clone, Debug, Default)]
struct Sample {
    one: Iperf,
    four: Iperf,
    rr_avg_us: f64,
    rr_p99_us: f64,
    /// Node 1's `ul0` counters over the single-stream run.
    ul_tx_packets: u64,
    ul_tx_bytes: u64,
    /// Overlay only: `from_pod_encapsulated` on node 1 over the single-stream run.
    encapsulated: Option<u64>,
    /// Overlay only: sum of both nodes' drop counters over the single-stream run.
    drops: Option<u64>,
    /// Busy % of cpu0 and cpu1 over the single-stream run.
    cpu_busy: Vec<f64>,
}

impl Sample {
    fn ul_avg_packet(&self) -> f64 {
        if self.ul_tx_packets == 0 {
            f64::NAN
        } else {
            self.ul_tx_bytes as f64 / self.ul_tx_packets as f64
        }
    }
}

fn iperf_args<'a>(dst: &'a str, secs: &'a str, streams: &'a str, omit: bool) -> Vec<&'a str> {
    let mut a = vec![
        "taskset", "-c", "0", "iperf3", "-c", dst, "-p", IPERF_PORT, "-t", secs, "-P", streams,
        "-C", "cubic", "-J",
    ];
    if omit {
        a.extend(["-O", "1"]);
    }
    a
}

fn iperf(src: &Netns, dst: &str, secs: u32, streams: u32, omit: bool) -> Result<Iperf> {
    let (s, p) = (secs.to_string(), streams.to_string());
    let limit = Duration::from_secs(u64::from(secs) + 1) + CLIENT_SLACK;
    let out = run_in(src, &iperf_args(dst, &s, &p, omit), limit)?;
    let parsed = parse_iperf(&out.stdout);
    ensure!(
        out.status.success() && parsed.is_ok(),
        "iperf3 -c {dst} -P {streams} in {} failed ({}): {}{}",
        src.name,
        out.status,
        parsed.err().map(|e| format!("{e:#}; ")).unwrap_or_default(),
        out.stderr.trim()
    );
    parsed
}

fn ul0_counters(node: &Netns) -> (u64, u64) {
    (
        node.link_stat(UPLINK, "tx_packets"),
        node.link_stat(UPLINK, "tx_bytes"),
    )
}

fn run_scenario(sc: Scenario, opts: &Opts) -> Result<Sample> {
    let step = |what: &str| eprintln!("    {:<13} {what}", sc.name());
    let mut lab_opts = LabOptions::uniform(sc.mode(), 2, 1);
    lab_opts.pod_mtu = sc.pod_mtu();
    let lab = Lab::new(&lab_opts);
    check_stop()?;
    let (src, dst, dst_ip) = match sc {
        Scenario::Underlay => (&lab.nodes[0].ns, &lab.nodes[1].ns, lab.nodes[1].ip),
        _ => (&lab.pod(0, 0).ns, &lab.pod(1, 0).ns, lab.pod(1, 0).ip),
    };
    let node1 = &lab.nodes[0].ns;
    let dst_ip = dst_ip.to_string();
    // Declared after `lab`, so dropped (killed) before it on every path.
    let servers = start_servers(dst, &dst_ip)?;
    ensure!(
        src.ping(&dst_ip, 3),
        "{}: no connectivity from {} to {dst_ip} (ping failed)",
        sc.name(),
        src.name
    );
    check_stop()?;
    iperf(src, &dst_ip, 2, 1, false).context("warm-up")?;

    let mut s = Sample::default();

    // Single stream, with the underlay counters and (overlay) datapath counters.
    let datapath_before = if sc == Scenario::Overlay {
        Some((lab.maps(0).counters()?, lab.maps(1).counters()?))
    } else {
        None
    };
    let vxlan_before =
        (sc == Scenario::KernelVxlan).then(|| node1.link_stat(KERNEL_VXLAN_DEV, "tx_packets"));
    let ul_before = ul0_counters(node1);
    let cpu_before = cpu_snapshot();
    s.one = iperf(src, &dst_ip, opts.duration, 1, true)?;
    s.cpu_busy = cpu_busy(&cpu_before, &cpu_snapshot());
    let ul_after = ul0_counters(node1);
    s.ul_tx_packets = ul_after.0.saturating_sub(ul_before.0);
    s.ul_tx_bytes = ul_after.1.saturating_sub(ul_before.1);
    ensure!(
        s.ul_tx_bytes as f64 >= 0.9 * s.one.received_bytes,
        "{}: only {} bytes left node 1 on {UPLINK} while iperf3 moved {:.0}; the traffic did not \
         cross the underlay",
        sc.name(),
        s.ul_tx_bytes,
        s.one.received_bytes
    );
    if let Some(before) = vxlan_before {
        let sent = node1
            .link_stat(KERNEL_VXLAN_DEV, "tx_packets")
            .saturating_sub(before);
        ensure!(
            sent >= MIN_DATAPATH_PACKETS,
            "kernel-vxlan: {KERNEL_VXLAN_DEV} on node 1 sent only {sent} packets during the \
             single-stream run; the traffic did not take the vxlan device"
        );
    }
    if let Some((b0, b1)) = datapath_before {
        let d0 = lab.maps(0).counters()?.since(&b0);
        let d1 = lab.maps(1).counters()?.since(&b1);
        let enc = d0.get(Stat::FromPodEncapsulated);
        let dec = d1.get(Stat::FromUplinkDecapsulated);
        s.encapsulated = Some(enc);
        s.drops = Some(d0.drops() + d1.drops());
        ensure!(
            enc >= MIN_DATAPATH_PACKETS && dec >= MIN_DATAPATH_PACKETS,
            "overlay: the traffic did NOT take our datapath: during the single-stream run node 1 \
             counted {enc} from_pod_encapsulated and node 2 {dec} from_uplink_decapsulated \
             (expected >= {MIN_DATAPATH_PACKETS} each); node 1 counters: {:?}; node 2: {:?}",
            d0.0,
            d1.0
        );
    }
    step(&format!(
        "1 stream : {:6.2} Gbit/s, {} retransmits, MSS {}, CPU snd/rcv {}, {UPLINK} {} pkts avg \
         {:.0} B{}",
        s.one.gbps,
        s.one.retransmits,
        s.one.mss.map_or("?".into(), |m| m.to_string()),
        s.one.cpu_split(),
        s.ul_tx_packets,
        s.ul_avg_packet(),
        match (s.encapsulated, s.drops) {
            (Some(e), Some(d)) => format!(", {e} encapsulated, {d} dropped"),
            _ => String::new(),
        }
    ));
    check_stop()?;

    s.four = iperf(src, &dst_ip, opts.duration, 4, true)?;
    step(&format!(
        "4 streams: {:6.2} Gbit/s, {} retransmits",
        s.four.gbps, s.four.retransmits
    ));
    check_stop()?;

    let secs = opts.lat_duration.to_string();
    let rr = run_in(
        src,
        &[
            "taskset",
            "-c",
            "0",
            "sockperf",
            "pp",
            "--tcp",
            "-i",
            &dst_ip,
            "-p",
            SOCKPERF_PORT,
            "-m",
            "64",
            "-t",
            &secs,
            "--full-rtt",
        ],
        Duration::from_secs(opts.lat_duration.into()) + CLIENT_SLACK,
    )?;
    let parsed = parse_sockperf(&rr.both());
    ensure!(
        rr.status.success() && parsed.is_ok(),
        "sockperf pp to {dst_ip} failed ({}): {}",
        rr.status,
        parsed
            .as_ref()
            .err()
            .map_or_else(|| rr.both(), |e| format!("{e:#}"))
    );
    (s.rr_avg_us, s.rr_p99_us) = parsed?;
    step(&format!(
        "TCP RR 64 B: avg {:.1} us, p99 {:.1} us",
        s.rr_avg_us, s.rr_p99_us
    ));

    drop(servers);
    drop(lab);
    Ok(s)
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Spread {
    min: f64,
    med: f64,
    max: f64,
}

fn spread(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        min: v[0],
        med,
        max: v[n - 1],
    })
}

fn fmt_num(x: Option<f64>, decimals: usize) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{x:.decimals$}"),
        _ => "–".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt_spread(s: Option<Spread>, decimals: usize) -> String {
    match s {
        Some(s) => {
            let pct = if s.med > 0.0 {
                format!(" ({:.1} %)", 100.0 * (s.max - s.min) / s.med)
            } else {
                String::new()
            };
            format!("{:.decimals$} – {:.decimals$}{pct}", s.min, s.max)
        }
        None => "–".into(),
    }
}

/// Medians of one scenario.
struct Summary {
    one: Option<Spread>,
    four: Option<Spread>,
    avg: Option<Spread>,
    p99: Option<Spread>,
    pkt: Option<Spread>,
    retr1: Option<Spread>,
    retr4: Option<Spread>,
}

impl Summary {
    fn of(samples: &[Sample]) -> Self {
        Self {
            one: spread(samples.iter().map(|s| s.one.gbps)),
            four: spread(samples.iter().map(|s| s.four.gbps)),
            avg: spread(samples.iter().map(|s| s.rr_avg_us)),
            p99: spread(samples.iter().map(|s| s.rr_p99_us)),
            pkt: spread(samples.iter().map(Sample::ul_avg_packet)),
            retr1: spread(samples.iter().map(|s| s.one.retransmits as f64)),
            retr4: spread(samples.iter().map(|s| s.four.retransmits as f64)),
        }
    }
}

fn med(s: Option<Spread>) -> Option<f64> {
    s.map(|s| s.med)
}

fn report(results: &[Vec<Sample>; N_SCENARIOS], opts: &Opts, complete: bool) -> String {
    let sums: Vec<Summary> = results.iter().map(|r| Summary::of(r)).collect();
    let (a, c) = (
        &sums[Scenario::Underlay.index()],
        &sums[Scenario::KernelVxlan.index()],
    );
    let reps_done = results.iter().map(Vec::len).max().unwrap_or(0);
    let mut o = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(
        o,
        "## overlay-bench{}\n\nMedians of {reps_done} interleaved repetition(s); iperf3 TCP cubic {} s \
         (1 s omitted), sockperf TCP ping-pong 64 B {} s (full RTT); client and server pinned to \
         CPU 0; kernel {}; a fresh topology per scenario and repetition.\n",
        if complete { "" } else { " (INCOMPLETE)" },
        opts.duration,
        opts.lat_duration,
        kernel.trim()
    );
    o.push_str(
        "| scenario | Gbit/s 1 stream | Gbit/s 4 streams | RR avg µs | RR p99 µs | \
         tput vs underlay (1 / 4 streams) | tput vs kernel-vxlan (1 / 4 streams) | \
         latency vs underlay (avg / p99) | underlay avg pkt B (1 stream) |\n",
    );
    o.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (sc, s) in Scenario::ALL.iter().zip(&sums) {
        let pair =
            |x: Option<f64>, y: Option<f64>| format!("{} / {}", fmt_num(x, 2), fmt_num(y, 2));
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            sc.label(),
            fmt_num(med(s.one), 2),
            fmt_num(med(s.four), 2),
            fmt_num(med(s.avg), 1),
            fmt_num(med(s.p99), 1),
            pair(
                ratio(med(s.one), med(a.one)),
                ratio(med(s.four), med(a.four))
            ),
            pair(
                ratio(med(s.one), med(c.one)),
                ratio(med(s.four), med(c.four))
            ),
            pair(ratio(med(s.avg), med(a.avg)), ratio(med(s.p99), med(a.p99))),
            fmt_num(med(s.pkt), 0),
        );
    }
    o.push_str(
        "\nSpread over the repetitions: min – max ((max − min) / median); ratios above are \
         ratios of medians.\n\n",
    );
    o.push_str(
        "| scenario | Gbit/s 1 stream | Gbit/s 4 streams | RR avg µs | RR p99 µs | \
         underlay avg pkt B | retransmits 1 / 4 streams (median) |\n",
    );
    o.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for (sc, s) in Scenario::ALL.iter().zip(&sums) {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} / {} |",
            sc.label(),
            fmt_spread(s.one, 2),
            fmt_spread(s.four, 2),
            fmt_spread(s.avg, 1),
            fmt_spread(s.p99, 1),
            fmt_spread(s.pkt, 0),
            fmt_num(med(s.retr1), 0),
            fmt_num(med(s.retr4), 0),
        );
    }

    let d = &sums[Scenario::Overlay.index()];
    o.push('\n');
    // A verdict is only as good as its inputs: single-stream iperf3 on one
    // CPU here sometimes falls into a half-speed mode for a whole run, and a
    // median of few repetitions can land on it. Inputs spread wider than
    // this make the verdict UNRELIABLE instead of PASS or MISS.
    const MAX_SPREAD: f64 = 0.20;
    let wide = |s: Option<Spread>| s.is_some_and(|s| (s.max - s.min) / s.med > MAX_SPREAD);
    let mut target =
        |name: &str, inputs: [Option<Spread>; 2], pass: fn(f64) -> bool, detail: String| {
            let value = ratio(med(inputs[0]), med(inputs[1]));
            let _ = match value {
                Some(v) if inputs.iter().any(|s| wide(*s)) => writeln!(
                    o,
                    "UNRELIABLE {name}: {v:.3} ({detail}; an input varied by more than {:.0} % \
                 across repetitions: rerun with more --reps)",
                    MAX_SPREAD * 100.0
                ),
                Some(v) => writeln!(
                    o,
                    "{} {name}: {v:.3} ({detail})",
                    if pass(v) { "PASS" } else { "MISS" }
                ),
                None => writeln!(o, "MISS {name}: not measured"),
            };
        };
    target(
        "overlay 1-stream throughput >= 0.85 x underlay",
        [d.one, a.one],
        |r| r >= 0.85,
        format!(
            "{} vs {} Gbit/s; 4 streams: {}",
            fmt_num(med(d.one), 2),
            fmt_num(med(a.one), 2),
            fmt_num(ratio(med(d.four), med(a.four)), 3)
        ),
    );
    target(
        "overlay throughput >= 1.5 x kernel-vxlan (1 stream)",
        [d.one, c.one],
        |r| r >= 1.5,
        format!(
            "{} vs {} Gbit/s; 4 streams: {}",
            fmt_num(med(d.one), 2),
            fmt_num(med(c.one), 2),
            fmt_num(ratio(med(d.four), med(c.four)), 3)
        ),
    );
    target(
        "overlay avg latency <= 1.2 x underlay",
        [d.avg, a.avg],
        |r| r <= 1.2,
        format!(
            "{} vs {} µs avg; p99 ratio {}",
            fmt_num(med(d.avg), 1),
            fmt_num(med(a.avg), 1),
            fmt_num(ratio(med(d.p99), med(a.p99)), 3)
        ),
    );
    // What the encapsulation itself costs: ours against plain routing at the
    // same pod MTU (b').
    let b1450 = &sums[Scenario::Plain1450.index()];
    let _ = writeln!(
        o,
        "INFO overlay vs plain routing at the same MTU (b'): throughput {} (1 stream) / {} (4 streams), latency {} (avg)",
        fmt_num(ratio(med(d.one), med(b1450.one)), 3),
        fmt_num(ratio(med(d.four), med(b1450.four)), 3),
        fmt_num(ratio(med(d.avg), med(b1450.avg)), 3),
    );

    // GSO: MTU-sized packets on the underlay mean every segment was
    // encapsulated (and paid for) on its own.
    let pkt = |s: &Summary| med(s.pkt).filter(|b| b.is_finite());
    let _ = match pkt(d) {
        Some(b) => writeln!(
            o,
            "GSO check: average packet node 1 sent on {UPLINK} during the 1-stream run: overlay \
             {b:.0} B, kernel-vxlan {} B -> {}",
            fmt_num(pkt(c), 0),
            if b >= GSO_MIN_AVG_PACKET {
                "GSO survives our encapsulation"
            } else {
                "GSO does NOT survive our encapsulation (MTU-sized packets on the underlay)"
            }
        ),
        None => writeln!(o, "GSO check: overlay not measured"),
    };

    for (sc, s) in Scenario::ALL.iter().zip(&sums) {
        let (Some(gbps), Some(retr)) = (med(s.one), med(s.retr1)) else {
            continue;
        };
        let floor = med(a.one).map_or(1.0, |u| 0.1 * u);
        if gbps < floor || retr > 100.0 {
            let _ = writeln!(
                o,
                "WARNING: {} moved only {gbps:.2} Gbit/s in one stream with {retr:.0} \
                 retransmits (medians): that path is losing packets, not just slow.",
                sc.label()
            );
        }
    }
    let other_load = spread(
        results
            .iter()
            .flatten()
            .filter_map(|s| s.cpu_busy.get(1).copied()),
    );
    if let Some(l) = other_load.filter(|l| l.max > 10.0) {
        let _ = writeln!(
            o,
            "NOTE: CPU 1 (which this bench leaves idle) was up to {:.0} % busy (median {:.0} %) \
             during the 1-stream runs: other load on the machine, expect noisier numbers.",
            l.max, l.med
        );
    }

    if opts.raw {
        o.push_str(
            "\n### Raw, per repetition (single-stream run for the underlay counters, \
             datapath counters and CPU)\n\n",
        );
        o.push_str(
            "| rep | scenario | Gbit/s 1 | retr 1 | Gbit/s 4 | retr 4 | RR avg µs | RR p99 µs | \
             MSS | iperf3 CPU % snd/rcv 1 | ul0 tx pkts | ul0 avg pkt B | encapsulated | drops | \
             CPU0 / CPU1 busy % |\n",
        );
        o.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for rep in 0..reps_done {
            for (sc, samples) in Scenario::ALL.iter().zip(results) {
                let Some(s) = samples.get(rep) else { continue };
                let opt = |x: Option<u64>| x.map_or("–".into(), |v| v.to_string());
                let _ = writeln!(
                    o,
                    "| {} | {} | {:.2} | {} | {:.2} | {} | {:.1} | {:.1} | {} | {} | {} | {:.0} | {} | {} | {} |",
                    rep + 1,
                    sc.name(),
                    s.one.gbps,
                    s.one.retransmits,
                    s.four.gbps,
                    s.four.retransmits,
                    s.rr_avg_us,
                    s.rr_p99_us,
                    opt(s.one.mss),
                    s.one.cpu_split(),
                    s.ul_tx_packets,
                    s.ul_avg_packet(),
                    opt(s.encapsulated),
                    opt(s.drops),
                    s.cpu_busy
                        .iter()
                        .map(|b| fmt_num(Some(*b), 0))
                        .collect::<Vec<_>>()
                        .join(" / "),
                );
            }
        }
    }
    o
}

/// Steady-traffic window measured after the gossip formation.
const GOSSIP_WINDOW: Duration = Duration::from_secs(20);

/// Waits of the gossip simulation give up when this says so (Ctrl-C).
fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// What the gossip part produced, kept as it comes.
#[derive(Default)]
struct GossipResults {
    membership: Option<Membership>,
    partitions: Option<Partitions>,
}

impl GossipResults {
    fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(m) = &self.membership {
            v.extend(m.formation.problems.iter().cloned());
        }
        if let Some(p) = &self.partitions {
            v.extend(p.violations());
        }
        v
    }
}

/// Wall-clock seconds of the membership scenarios per million nodes²
/// (1000 nodes: 1066 s on this machine, release build, chitchat 0.11).
const GOSSIP_SECONDS_PER_MILLION_NODES_SQUARED: f64 = 1070.0;
/// Wall-clock seconds of one partition round per million nodes² (200
/// nodes: about 23 s a round).
const PARTITION_SECONDS_PER_ROUND_PER_MILLION: f64 = 600.0;

/// Rough wall-clock minutes of the gossip part on this two-core machine:
/// the simulation is single-threaded and its cost per virtual second grows
/// with the square of the node count (every node gossips digests of every
/// node).
fn gossip_minutes(opts: &Opts) -> u32 {
    if !opts.parts.gossip {
        return 0;
    }
    let squared = |n: u32| f64::from(n) * f64::from(n);
    let membership = GOSSIP_SECONDS_PER_MILLION_NODES_SQUARED * squared(opts.gossip_nodes) / 1e6;
    // The cluster forms first: about one round's worth.
    let rounds = match opts.gossip_rounds {
        0 => 0,
        r => r + 1,
    };
    let partitions = PARTITION_SECONDS_PER_ROUND_PER_MILLION
        * squared(opts.gossip_partition_nodes)
        * f64::from(rounds)
        / 1e6;
    ((membership + partitions) / 60.0).ceil() as u32
}

/// The gossip part: formation, a new node and a death at --gossip-nodes,
/// then the partition rounds; each result lands in `out` as it comes.
fn run_gossip(opts: &Opts, out: &mut GossipResults) {
    if opts.swim_nodes >= 10 {
        let n = opts.swim_nodes as usize;
        eprintln!("[gossip] SWIM layer, {n} nodes");
        let mut plan = swim_sim::Plan::targets(n, u64::from(opts.gossip_seed));
        plan.idle = Duration::from_secs(opts.swim_steady.into());
        plan.stop = stopped;
        plan.lossy = plan.idle;
        println!("{}", swim_sim::run_all(plan));
    }
    if stopped() {
        return;
    }
    let n = opts.gossip_nodes as usize;
    if n > 0 {
        eprintln!("[gossip] {n} nodes: formation, a new node, a death");
        let m = gossip_sim::run(gossip_sim::membership(n, GOSSIP_WINDOW, true, stopped));
        eprintln!(
            "[gossip] membership done, {:.0} s wall-clock",
            m.wall.as_secs_f64()
        );
        out.membership = Some(m);
    }
    if stopped() || opts.gossip_rounds == 0 {
        return;
    }
    let mut o = PartitionOptions::new(
        opts.gossip_partition_nodes as usize,
        opts.gossip_rounds as usize,
        u64::from(opts.gossip_seed),
    );
    o.progress = true;
    o.stop = stopped;
    eprintln!(
        "[gossip] partitions: {} nodes, {} rounds, seed {}",
        o.nodes, o.rounds, o.seed
    );
    out.partitions = Some(gossip_sim::run(gossip_sim::partitions(&o)));
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| Path::new(&dir).join(tool).is_file())
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(Cli::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Cli::Run(opts)) => opts,
        Err(msg) => {
            let options = USAGE.find("Usage:").map_or(USAGE, |i| &USAGE[i..]);
            let options = options
                .find("\nScenarios")
                .map_or(options, |i| &options[..i]);
            eprintln!("overlay-bench: error: {msg}\n\n{options}\nSee --help for more.");
            return ExitCode::from(64);
        }
    };
    let privileged = opts.parts.datapath || opts.parts.cni;
    // SAFETY: geteuid has no preconditions.
    if privileged && unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "overlay-bench: error: needs root (network namespaces and BPF); run it as root, \
             e.g. `sudo -E cargo xtask bench` (the gossip part alone, --gossip-only, needs no \
             root)"
        );
        return ExitCode::FAILURE;
    }
    let tools: &[&str] = if opts.parts.datapath {
        &["ip", "iperf3", "sockperf", "taskset", "ss", "ping"]
    } else if opts.parts.cni {
        &["ip"]
    } else {
        &[]
    };
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        eprintln!(
            "overlay-bench: error: missing tools on PATH: {} (Debian: apt-get install iperf3 \
             sockperf iproute2 iputils-ping util-linux)",
            missing.join(", ")
        );
        return ExitCode::FAILURE;
    }
    let missing_cni = if opts.parts.cni {
        cni_bench::missing_prerequisites()
    } else {
        Vec::new()
    };
    if !missing_cni.is_empty() {
        eprintln!(
            "overlay-bench: error: the CNI part needs {} (or pass --skip-cni)",
            missing_cni.join(", ")
        );
        return ExitCode::FAILURE;
    }
    if let Err(e) = install_signal_handlers() {
        eprintln!("overlay-bench: error: {e:#}");
        return ExitCode::FAILURE;
    }

    let reps = if opts.parts.datapath { opts.reps } else { 0 };
    let cni_rounds = if opts.parts.cni { opts.cni_rounds } else { 0 };
    let per_scenario = 2 * (opts.duration + 1) + opts.lat_duration + 10;
    let mut plan = Vec::new();
    if reps > 0 {
        plan.push(format!("{reps} repetition(s) x {N_SCENARIOS} scenarios"));
    }
    if cni_rounds > 0 {
        plan.push(format!("{cni_rounds} CNI rounds"));
    }
    if opts.parts.gossip {
        plan.push(format!(
            "the gossip simulation ({} nodes, then {} partition rounds of {} nodes)",
            opts.gossip_nodes, opts.gossip_rounds, opts.gossip_partition_nodes
        ));
    }
    eprintln!(
        "overlay-bench: {}, about {} min; Ctrl-C stops and tears down",
        plan.join(", then "),
        (reps * N_SCENARIOS as u32 * per_scenario + cni_rounds / 4).div_ceil(60)
            + gossip_minutes(&opts)
    );
    let mut results: [Vec<Sample>; N_SCENARIOS] = Default::default();
    let mut failure = None;
    'reps: for rep in 1..=reps {
        for sc in Scenario::ALL {
            if STOP.load(Ordering::SeqCst) {
                break 'reps;
            }
            eprintln!("[rep {rep}/{reps}] {}", sc.label());
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run_scenario(sc, &opts)))
                .unwrap_or_else(|p| Err(anyhow::anyhow!("panicked: {}", panic_message(&*p))));
            // By now the scenario's servers are killed and its lab torn down.
            match outcome {
                Ok(s) => results[sc.index()].push(s),
                Err(e) => {
                    if !STOP.load(Ordering::SeqCst) && !e.is::<Interrupted>() {
                        failure = Some(format!("{} (rep {rep}): {e:#}", sc.name()));
                    }
                    break 'reps;
                }
            }
        }
    }
    let complete = failure.is_none() && !STOP.load(Ordering::SeqCst);
    let mut cni = None;
    if cni_rounds > 0 && complete {
        eprintln!("[cni] overlay-cni vs bridge + host-local, {cni_rounds} rounds each");
        let cni_opts = cni_bench::Options::with_rounds(cni_rounds);
        let stop = || STOP.load(Ordering::SeqCst);
        // The CNI part panics with a message on a failed call or a leak; by
        // the time the panic is caught its agent and namespaces are gone.
        match std::panic::catch_unwind(|| cni_bench::run(&cni_opts, &stop)) {
            Ok(r) => cni = Some(r),
            Err(p) if !stop() => failure = Some(format!("cni: panicked: {}", panic_message(&*p))),
            Err(_) => {}
        }
    }
    let mut gossip = GossipResults::default();
    if opts.parts.gossip && failure.is_none() && !stopped() {
        // A panic (a bug in the simulation itself) keeps what finished.
        if let Err(p) =
            std::panic::catch_unwind(AssertUnwindSafe(|| run_gossip(&opts, &mut gossip)))
            && !stopped()
        {
            failure = Some(format!("gossip: panicked: {}", panic_message(&*p)));
        }
    }
    let interrupted = STOP.load(Ordering::SeqCst);
    if results.iter().any(|r| !r.is_empty()) {
        print!("{}", report(&results, &opts, complete));
    }
    if let Some(r) = &cni {
        print!("{}", cni_bench::report(r));
    }
    if gossip.membership.is_some() || gossip.partitions.is_some() {
        print!(
            "{}",
            gossip_sim::report(gossip.membership.as_ref(), gossip.partitions.as_ref())
        );
        let violations = gossip.violations();
        if !violations.is_empty() && failure.is_none() {
            failure = Some(format!(
                "gossip: {} broken invariant(s), see the VIOLATION lines",
                violations.len()
            ));
        }
    }
    if let Some(f) = failure {
        eprintln!("overlay-bench: FAILED: {f}");
        return ExitCode::FAILURE;
    }
    if interrupted {
        eprintln!("overlay-bench: interrupted; everything it created is torn down");
        return ExitCode::from(130);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_flags() {
        assert_eq!(parse_args(&[]), Ok(Cli::Run(Opts::default())));
        assert_eq!(
            parse_args(&args(&[
                "--reps",
                "1",
                "--duration=3",
                "--lat-duration",
                "2",
                "--raw"
            ])),
            Ok(Cli::Run(Opts {
                reps: 1,
                duration: 3,
                lat_duration: 2,
                raw: true,
                ..Opts::default()
            }))
        );
        assert_eq!(parse_args(&args(&["--reps", "2", "-h"])), Ok(Cli::Help));
        assert!(parse_args(&args(&["--reps"])).is_err());
        assert!(parse_args(&args(&["--reps", "0"])).is_err());
        assert!(parse_args(&args(&["--reps", "x"])).is_err());
        assert!(parse_args(&args(&["--raw=1"])).is_err());
        assert!(parse_args(&args(&["--bogus"])).is_err());
    }

    #[test]
    fn parses_cni_flags() {
        assert_eq!(
            parse_args(&args(&["--cni-only", "--cni-rounds=50"])),
            Ok(Cli::Run(Opts {
                parts: Parts {
                    datapath: false,
                    cni: true,
                    gossip: false
                },
                cni_rounds: 50,
                ..Opts::default()
            }))
        );
        assert_eq!(
            parse_args(&args(&["--skip-cni", "--skip-cni"])),
            Ok(Cli::Run(Opts {
                parts: Parts {
                    cni: false,
                    ..Parts::ALL
                },
                ..Opts::default()
            }))
        );
        assert!(parse_args(&args(&["--cni-only", "--skip-cni"])).is_err());
        assert!(parse_args(&args(&["--cni-only=1"])).is_err());
        assert!(parse_args(&args(&["--cni-rounds", "9"])).is_err());
    }

    #[test]
    fn parses_gossip_flags() {
        assert_eq!(
            parse_args(&args(&[
                "--gossip-only",
                "--gossip-nodes=300",
                "--gossip-partition-nodes",
                "250",
                "--gossip-rounds",
                "0",
                "--gossip-seed",
                "7"
            ])),
            Ok(Cli::Run(Opts {
                parts: Parts {
                    datapath: false,
                    cni: false,
                    gossip: true
                },
                gossip_nodes: 300,
                gossip_partition_nodes: 250,
                gossip_rounds: 0,
                gossip_seed: 7,
                ..Opts::default()
            }))
        );
        assert_eq!(
            parse_args(&args(&["--skip-gossip", "--skip-cni"])),
            Ok(Cli::Run(Opts {
                parts: Parts {
                    datapath: true,
                    cni: false,
                    gossip: false
                },
                ..Opts::default()
            }))
        );
        assert!(parse_args(&args(&["--gossip-only", "--cni-only"])).is_err());
        assert!(parse_args(&args(&["--gossip-only", "--skip-gossip"])).is_err());
        assert!(parse_args(&args(&["--skip-gossip=1"])).is_err());
        assert!(parse_args(&args(&["--gossip-nodes", "9"])).is_err());
        assert!(parse_args(&args(&["--gossip-nodes", "0"])).is_ok());
    }

    #[test]
    fn parses_sockperf_output() {
        let out = "sockperf: [Valid Duration] RunTime=1.550 sec; SentMessages=108398\n\
                   sockperf: \x1b[2;35m====> avg-rtt=14.277 (std-dev=3.525)\x1b[0m\n\
                   sockperf: ---> percentile 99.900 =   43.434\n\
                   sockperf: ---> percentile 99.000 =   16.945\n\
                   sockperf: ---> percentile 90.000 =   14.701\n";
        assert_eq!(parse_sockperf(out).unwrap(), (14.277, 16.945));
        let half = "sockperf: ====> avg-latency=7.100 (std-dev=1.0)\n\
                    sockperf: ---> percentile 99.000 = 9.5\n";
        assert_eq!(parse_sockperf(half).unwrap(), (7.1, 9.5));
        assert!(parse_sockperf("nothing here").is_err());
    }

    #[test]
    fn parses_iperf_json() {
        let j = r#"{"start":{"tcp_mss_default":1448},"end":{"sum_sent":{"retransmits":3},
                    "sum_received":{"bits_per_second":2.5e10,"bytes":3.1e10}}}"#;
        let r = parse_iperf(j).unwrap();
        assert_eq!((r.gbps, r.retransmits, r.mss), (25.0, 3, Some(1448)));
        assert!(parse_iperf(r#"{"error":"unable to connect"}"#).is_err());
        assert!(parse_iperf("not json").is_err());
    }

    #[test]
    fn medians() {
        let s = spread([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.med, s.max), (1.0, 2.0, 3.0));
        assert_eq!(spread([1.0, 4.0]).unwrap().med, 2.5);
        assert!(spread([f64::NAN]).is_none());
    }
}
