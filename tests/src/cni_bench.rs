//! CNI ADD/DEL latency: our `overlay-cni` (backed by a running
//! `overlay-agent`) against the reference `bridge` + `host-local` plugins of
//! containernetworking-plugins, on the same machine, interleaved round by
//! round.
//!
//! Each side has a node namespace of the same kind (a [`Lab`] node with its
//! uplink): ours is a one-node [`Cluster`], the reference a one-node plain
//! lab. A round creates a fresh pod namespace (untimed), runs ADD and then
//! DEL, each timed from the spawn of the plugin to its exit, and removes the
//! namespace again. Both plugins are started the same way: directly (no
//! `nsenter`, which would add an exec to both sides) from a thread inside
//! the node's namespace, with the same environment a runtime passes.

use std::{
    fmt::Write as _,
    fs::File,
    io::{self, Read as _, Write as _},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use ipnet::Ipv4Net;
use serde_json::Value;

use crate::{
    cluster::{Cluster, bin_path},
    lab::{Lab, LabOptions, Mode, node_block},
    netns::Netns,
};

/// Where Debian's containernetworking-plugins installs the reference
/// plugins (and `CNI_PATH` for both sides).
pub const REFERENCE_DIR: &str = "/usr/lib/cni";
/// Pod range of the reference network (disjoint from the lab's).
pub const REFERENCE_SUBNET: &str = "10.99.0.0/16";
/// The reference network's bridge in its node namespace.
const REFERENCE_BRIDGE: &str = "cni0";
/// Network name of the reference configuration (host-local keeps its
/// allocations in `<dataDir>/<name>`).
const REFERENCE_NETWORK: &str = "ref";
/// The version both configurations ask for: the newest the reference
/// (containernetworking-plugins 1.1) speaks.
const CNI_VERSION: &str = "1.0.0";
/// A single plugin call that takes longer than this is killed and fails the
/// bench.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// Rounds are cut into this many consecutive blocks; how far the blocks'
/// medians drift apart tells whether the machine was steady enough.
const BLOCKS: usize = 5;
/// Block medians of either side spread wider than this (relative to the
/// median) make the verdict UNRELIABLE, as in the datapath bench.
pub const MAX_SPREAD: f64 = 0.20;

/// Which plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `overlay-cni` with its agent.
    Ours,
    /// `bridge` + `host-local` from [`REFERENCE_DIR`].
    Reference,
}

impl Side {
    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Side::Ours => "ours: overlay-cni + agent",
            Side::Reference => "reference: bridge + host-local",
        }
    }

    /// Short tag for pod namespace names.
    fn tag(self) -> &'static str {
        match self {
            Side::Ours => "o",
            Side::Reference => "r",
        }
    }
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Measured rounds per side.
    pub rounds: u32,
    /// Unrecorded rounds per side first (the reference creates its bridge
    /// and iptables chains on its first ADD).
    pub warmup: u32,
    /// The whole run stops (INCOMPLETE) after this long.
    pub time_limit: Duration,
}

impl Options {
    /// `rounds` measured rounds, 5 warm-up rounds, and a time limit of one
    /// minute plus one second per round (a round of both sides normally
    /// takes about 0.2 s).
    pub fn with_rounds(rounds: u32) -> Self {
        Self {
            rounds,
            warmup: 5,
            time_limit: Duration::from_secs(60 + u64::from(rounds)),
        }
    }
}

/// One round of one side.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Round {
    /// ADD, spawn to exit.
    pub add: Duration,
    /// DEL, spawn to exit.
    pub del: Duration,
}

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Every round ran and nothing leaked.
    Complete,
    /// `stop` said so (Ctrl-C); no leak check.
    Interrupted,
    /// [`Options::time_limit`] passed; leak check done.
    TimeLimit,
}

/// Recorded rounds of both sides.
#[derive(Clone, Debug)]
pub struct Results {
    /// Our rounds, in order.
    pub ours: Vec<Round>,
    /// The reference's rounds, in order.
    pub reference: Vec<Round>,
    /// Warm-up rounds run per side.
    pub warmup: u32,
    /// How it ended.
    pub end: End,
}

/// What is missing to run the CNI part (empty when it can run).
pub fn missing_prerequisites() -> Vec<String> {
    let mut missing: Vec<String> = ["bridge", "host-local"]
        .iter()
        .map(|p| Path::new(REFERENCE_DIR).join(p))
        .filter(|p| !p.is_file())
        .map(|p| format!("{} (Debian: containernetworking-plugins)", p.display()))
        .collect();
    // The bridge plugin's ipMasq runs iptables; our agent runs nft.
    for tool in ["iptables", "nft"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
        if !found {
            missing.push(format!("{tool} on PATH"));
        }
    }
    missing
}

/// Runs the interleaved rounds. Panics with a message when a call fails, an
/// ADD result has no address in the side's range, or (after a run that was
/// not interrupted) a veth, allocation or masquerade chain was left behind.
/// Everything it created is gone when it returns or unwinds.
pub fn run(opts: &Options, stop: &dyn Fn() -> bool) -> Results {
    let deadline = Instant::now() + opts.time_limit;
    let ours = Bed::ours();
    let reference = Bed::reference();
    let mut results = Results {
        ours: Vec::new(),
        reference: Vec::new(),
        warmup: opts.warmup,
        end: End::Complete,
    };
    let total = opts.warmup + opts.rounds;
    for n in 0..total {
        if stop() {
            results.end = End::Interrupted;
            break;
        }
        if Instant::now() >= deadline {
            results.end = End::TimeLimit;
            break;
        }
        // Alternate which side goes first so neither always follows the
        // other's teardown.
        let order = if n % 2 == 0 {
            [&ours, &reference]
        } else {
            [&reference, &ours]
        };
        for bed in order {
            let Some(round) = bed.round(n, stop) else {
                results.end = End::Interrupted;
                break;
            };
            if n >= opts.warmup {
                match bed.side {
                    Side::Ours => results.ours.push(round),
                    Side::Reference => results.reference.push(round),
                }
            }
        }
        if results.end == End::Interrupted {
            break;
        }
        let done = (n + 1).saturating_sub(opts.warmup);
        if done > 0 && (done % 50 == 0 || done == opts.rounds) {
            eprintln!("    cni           {done} of {} rounds", opts.rounds);
        }
    }
    if results.end != End::Interrupted {
        ours.assert_nothing_leaked();
        reference.assert_nothing_leaked();
    }
    results
}

/// One side's node, plugin and configuration.
struct Bed {
    side: Side,
    plugin: PathBuf,
    config: String,
    /// Range every ADD result must fall in.
    range: Ipv4Net,
    /// Where the plugin's stderr goes (shown when a call fails).
    stderr: PathBuf,
    node: Node,
}

enum Node {
    Ours(Box<Cluster>),
    Reference {
        lab: Box<Lab>,
        /// host-local's `dataDir`, removed on drop.
        data_dir: PathBuf,
    },
}

impl Bed {
    fn ours() -> Self {
        let cluster = Cluster::new(1);
        let config = cluster.config(0, CNI_VERSION);
        let stderr = cluster.dir.join("cni-bench.stderr");
        Bed {
            side: Side::Ours,
            plugin: bin_path("overlay-cni"),
            config,
            range: node_block(0),
            stderr,
            node: Node::Ours(Box::new(cluster)),
        }
    }

    fn reference() -> Self {
        let lab = Lab::new(&LabOptions {
            modes: vec![Mode::PlainRouting],
            pods_per_node: 0,
            skip_datapath: true,
            pod_mtu: None,
            underlay: crate::lab::Underlay::Veth,
            behind_router: None,
        });
        let data_dir = std::env::temp_dir().join(format!("ovl-{}-ref-ipam", lab.tag));
        std::fs::create_dir_all(&data_dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", data_dir.display()));
        let config = serde_json::json!({
            "cniVersion": CNI_VERSION,
            "name": REFERENCE_NETWORK,
            "type": "bridge",
            "bridge": REFERENCE_BRIDGE,
            "isGateway": true,
            "ipMasq": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": REFERENCE_SUBNET }]],
                "dataDir": data_dir,
            },
        })
        .to_string();
        Bed {
            side: Side::Reference,
            plugin: Path::new(REFERENCE_DIR).join("bridge"),
            config,
            range: REFERENCE_SUBNET.parse().expect("valid subnet"),
            stderr: data_dir.join("cni-bench.stderr"),
            node: Node::Reference {
                lab: Box::new(lab),
                data_dir,
            },
        }
    }

    fn node_ns(&self) -> &Netns {
        match &self.node {
            Node::Ours(c) => &c.lab.nodes[0].ns,
            Node::Reference { lab, .. } => &lab.nodes[0].ns,
        }
    }

    fn tag(&self) -> &str {
        match &self.node {
            Node::Ours(c) => &c.lab.tag,
            Node::Reference { lab, .. } => &lab.tag,
        }
    }

    /// ADD then DEL on a fresh pod namespace; `None` when `stop` was raised
    /// and a call failed (the interrupt reaches the plugin too).
    fn round(&self, n: u32, stop: &dyn Fn() -> bool) -> Option<Round> {
        let pod = Netns::new(self.tag(), &format!("{}{n}", self.side.tag()));
        let container_id = format!("bench-{}-{}{n}", self.tag(), self.side.tag());
        let add = self.call("ADD", &container_id, &pod);
        if add.code != 0 && stop() {
            return None;
        }
        self.assert_ok("ADD", n, &add);
        let json: Value = serde_json::from_str(&add.stdout).unwrap_or(Value::Null);
        let ip: Option<Ipv4Addr> = json["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok());
        match ip {
            Some(ip) if self.range.contains(&ip) => {}
            _ => panic!(
                "{}: ADD in round {n} returned no address in {}: {}",
                self.side.label(),
                self.range,
                add.stdout
            ),
        }
        let del = self.call("DEL", &container_id, &pod);
        if del.code != 0 && stop() {
            return None;
        }
        self.assert_ok("DEL", n, &del);
        drop(pod);
        Some(Round {
            add: add.elapsed,
            del: del.elapsed,
        })
    }

    fn assert_ok(&self, command: &str, n: u32, out: &Timed) {
        assert!(
            out.code == 0,
            "{}: {command} in round {n} failed (exit {}): {}\nstderr: {}",
            self.side.label(),
            out.code,
            out.stdout,
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        );
    }

    /// Runs the plugin once, as a runtime does, from a thread inside the
    /// node's namespace.
    fn call(&self, command: &str, container_id: &str, pod: &Netns) -> Timed {
        let stderr = File::create(&self.stderr)
            .unwrap_or_else(|e| panic!("creating {}: {e}", self.stderr.display()));
        let mut cmd = Command::new(&self.plugin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", pod.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", REFERENCE_DIR)
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={container_id};\
                     K8S_POD_INFRA_CONTAINER_ID={container_id}"
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let node = self.node_ns();
        overlay_agent::netns::run_in(&node.path(), || timed(cmd, self.config.as_bytes()))
            .unwrap_or_else(|e| panic!("entering {}: {e}", node.name))
            .unwrap_or_else(|e| {
                panic!(
                    "running {} {command} in {}: {e}",
                    self.plugin.display(),
                    node.name
                )
            })
    }

    fn assert_nothing_leaked(&self) {
        let node = self.node_ns();
        match &self.node {
            Node::Ours(c) => {
                let (veths, allocated, endpoints) =
                    (c.host_veths(0), c.allocated(0), c.endpoints(0));
                assert!(
                    veths.is_empty() && allocated.is_empty() && endpoints.is_empty(),
                    "{}: after every DEL, {} still has pod veths {veths:?}, allocations \
                     {allocated:?} and endpoints {endpoints:?}",
                    self.side.label(),
                    node.name
                );
            }
            Node::Reference { data_dir, .. } => {
                let veths = node.ip(&["-o", "link", "show", "master", REFERENCE_BRIDGE]);
                let allocated: Vec<String> = std::fs::read_dir(data_dir.join(REFERENCE_NETWORK))
                    .map(|d| {
                        d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                            .filter(|f| f.parse::<Ipv4Addr>().is_ok())
                            .collect()
                    })
                    .unwrap_or_default();
                let chains: Vec<String> = node
                    .exec(&["iptables", "-t", "nat", "-S"])
                    .lines()
                    .filter(|l| l.contains("CNI-"))
                    .map(str::to_owned)
                    .collect();
                assert!(
                    veths.trim().is_empty() && allocated.is_empty() && chains.is_empty(),
                    "{}: after every DEL, {} still has ports on {REFERENCE_BRIDGE}: {:?}, \
                     host-local allocations {allocated:?} and masquerade rules {chains:?}",
                    self.side.label(),
                    node.name,
                    veths.trim()
                );
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Node::Reference { data_dir, .. } = self {
            let _ = std::fs::remove_dir_all(data_dir);
        }
        // The cluster stops its agent; the labs remove their namespaces (and
        // with them the reference's bridge and iptables rules).
    }
}

/// One call: its duration, exit code and stdout.
struct Timed {
    elapsed: Duration,
    code: i32,
    stdout: String,
}

/// Spawns `cmd`, feeds it `stdin`, and measures until it exits. A watchdog
/// kills it after [`CALL_LIMIT`]; the exit is observed with `WNOWAIT`, so
/// the child stays unreaped (its PID cannot be reused) until the watchdog
/// has finished.
fn timed(mut cmd: Command, stdin: &[u8]) -> io::Result<Timed> {
    let (pid_tx, pid_rx) = mpsc::channel::<u32>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    thread::scope(move |s| {
        // Started before the clock, so its creation is not timed.
        let watchdog = s.spawn(move || {
            let Ok(pid) = pid_rx.recv() else {
                return false;
            };
            if done_rx.recv_timeout(CALL_LIMIT) == Err(RecvTimeoutError::Timeout) {
                // SAFETY: plain syscall on a child that is not reaped yet.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                return true;
            }
            false
        });
        let start = Instant::now();
        let mut child = cmd.spawn()?;
        let _ = pid_tx.send(child.id());
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin may exit without reading all of it; its exit code
            // says what happened.
            let _ = pipe.write_all(stdin);
        }
        let mut stdout = Vec::new();
        if let Some(mut pipe) = child.stdout.take() {
            pipe.read_to_end(&mut stdout)?;
        }
        wait_exited(child.id())?;
        let elapsed = start.elapsed();
        let _ = done_tx.send(());
        let killed = watchdog.join().expect("watchdog thread");
        let status = child.wait()?;
        if killed {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("killed after {} s", CALL_LIMIT.as_secs()),
            ));
        }
        Ok(Timed {
            elapsed,
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
        })
    })
}

/// Blocks until child `pid` has exited, leaving it to be reaped.
fn wait_exited(pid: u32) -> io::Result<()> {
    loop {
        // SAFETY: `siginfo_t` is plain data that `waitid` fills in; with
        // `WNOWAIT` the child stays reapable by `Child::wait`.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Median and 99th percentile (nearest rank) in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    /// Median.
    pub median: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Latency {
    /// Of `values` (milliseconds); `None` when empty.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Self {
            median: median_sorted(&v),
            p99: v[(v.len() * 99).div_ceil(100) - 1],
        })
    }
}

fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One side's numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// ADD.
    pub add: Latency,
    /// DEL.
    pub del: Latency,
    /// ADD + DEL of the same round.
    pub both: Latency,
    /// (max − min) / median of the ADD + DEL medians of [`BLOCKS`]
    /// consecutive blocks of rounds.
    pub block_spread: f64,
}

impl Summary {
    /// Of `rounds`; `None` when empty.
    pub fn of(rounds: &[Round]) -> Option<Self> {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let add: Vec<f64> = rounds.iter().map(|r| ms(r.add)).collect();
        let del: Vec<f64> = rounds.iter().map(|r| ms(r.del)).collect();
        let both: Vec<f64> = rounds.iter().map(|r| ms(r.add + r.del)).collect();
        let overall = Latency::of(&both)?;
        let mut block_medians: Vec<f64> = both
            .chunks(both.len().div_ceil(BLOCKS))
            .filter_map(|b| Latency::of(b).map(|l| l.median))
            .collect();
        block_medians.sort_by(f64::total_cmp);
        let (lo, hi) = (block_medians[0], block_medians[block_medians.len() - 1]);
        Some(Self {
            add: Latency::of(&add)?,
            del: Latency::of(&del)?,
            both: overall,
            block_spread: if overall.median > 0.0 {
                (hi - lo) / overall.median
            } else {
                f64::NAN
            },
        })
    }
}

/// The markdown section and verdict for `cargo xtask bench`.
pub fn report(r: &Results) -> String {
    let mut o = String::new();
    let n = r.ours.len().min(r.reference.len());
    let _ = writeln!(
        o,
        "\n## CNI ADD/DEL latency{}\n\n{n} interleaved rounds per plugin after {} warm-up \
         rounds, cniVersion {CNI_VERSION}. Each call is timed from the spawn of the plugin to \
         its exit, started directly inside its node namespace with a runtime's environment, on \
         a fresh pod namespace (whose creation is not timed). The reference is {REFERENCE_DIR}/\
         bridge (bridge {REFERENCE_BRIDGE}, isGateway, ipMasq) with host-local IPAM \
         ({REFERENCE_SUBNET}); ours is overlay-cni asking its node's running overlay-agent. Both \
         masquerade egress, but bridge's ipMasq adds and removes iptables rules on every ADD \
         and DEL, while our agent installs its one nftables masquerade rule at start, not per \
         pod.\n",
        match r.end {
            End::Complete => "",
            End::Interrupted => " (INCOMPLETE: interrupted)",
            End::TimeLimit => " (INCOMPLETE: time limit reached)",
        },
        r.warmup,
    );
    let (Some(ours), Some(reference)) = (Summary::of(&r.ours), Summary::of(&r.reference)) else {
        o.push_str("MISS CNI ADD+DEL median <= 1.0 x reference: not measured\n");
        return o;
    };
    o.push_str(
        "| plugin | ADD median ms | ADD p99 ms | DEL median ms | DEL p99 ms | ADD+DEL median ms \
         | ADD+DEL p99 ms | ADD+DEL block spread |\n",
    );
    o.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (side, s) in [(Side::Ours, &ours), (Side::Reference, &reference)] {
        let _ = writeln!(
            o,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} % |",
            side.label(),
            s.add.median,
            s.add.p99,
            s.del.median,
            s.del.p99,
            s.both.median,
            s.both.p99,
            100.0 * s.block_spread
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let _ = writeln!(
        o,
        "| ratio ours / reference | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | |",
        ratio(ours.add.median, reference.add.median),
        ratio(ours.add.p99, reference.add.p99),
        ratio(ours.del.median, reference.del.median),
        ratio(ours.del.p99, reference.del.p99),
        ratio(ours.both.median, reference.both.median),
        ratio(ours.both.p99, reference.both.p99),
    );
    let _ = writeln!(
        o,
        "\nBlock spread: (max − min) / median of the ADD+DEL medians of {BLOCKS} consecutive \
         blocks of rounds.\n"
    );
    let name = "CNI ADD+DEL median <= 1.0 x reference";
    let v = ratio(ours.both.median, reference.both.median);
    let detail = format!(
        "{:.2} vs {:.2} ms; p99 ratio {:.3}",
        ours.both.median,
        reference.both.median,
        ratio(ours.both.p99, reference.both.p99)
    );
    let wide = [ours.block_spread, reference.block_spread]
        .iter()
        .any(|s| s.is_nan() || *s > MAX_SPREAD);
    let _ = if wide {
        writeln!(
            o,
            "UNRELIABLE {name}: {v:.3} ({detail}; a side's block medians varied by more than \
             {:.0} %: rerun with more --cni-rounds on a quieter machine)",
            MAX_SPREAD * 100.0
        )
    } else {
        writeln!(
            o,
            "{} {name}: {v:.3} ({detail})",
            if v <= 1.0 { "PASS" } else { "MISS" }
        )
    };
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rounds(ms: &[(u64, u64)]) -> Vec<Round> {
        ms.iter()
            .map(|&(a, d)| Round {
                add: Duration::from_millis(a),
                del: Duration::from_millis(d),
            })
            .collect()
    }

    #[test]
    fn latency_is_median_and_nearest_rank_p99() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(
            Latency::of(&v),
            Some(Latency {
                median: 100.5,
                p99: 198.0
            })
        );
        assert_eq!(
            Latency::of(&[3.0]),
            Some(Latency {
                median: 3.0,
                p99: 3.0
            })
        );
        assert_eq!(Latency::of(&[]), None);
    }

    #[test]
    fn summary_adds_add_and_del_per_round_and_measures_block_drift() {
        let steady = Summary::of(&rounds(&[(10, 5); 10])).unwrap();
        assert_eq!(steady.both.median, 15.0);
        assert_eq!(steady.block_spread, 0.0);
        let mut drifting = vec![(10, 5); 5];
        drifting.extend([(20, 10); 5]);
        let s = Summary::of(&rounds(&drifting)).unwrap();
        assert_eq!(
            (s.add.median, s.del.median, s.both.median),
            (15.0, 7.5, 22.5)
        );
        assert!((s.block_spread - 15.0 / 22.5).abs() < 1e-9);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn report_gives_a_verdict_on_the_add_del_median() {
        let results = |ours: &[(u64, u64)], reference: &[(u64, u64)]| Results {
            ours: rounds(ours),
            reference: rounds(reference),
            warmup: 1,
            end: End::Complete,
        };
        let faster = report(&results(&[(10, 5); 10], &[(40, 20); 10]));
        assert!(faster.contains("PASS CNI ADD+DEL median <= 1.0 x reference: 0.250"));
        let slower = report(&results(&[(40, 20); 10], &[(10, 5); 10]));
        assert!(slower.contains("MISS CNI ADD+DEL median"));
        let mut noisy = vec![(10, 5); 5];
        noisy.extend([(30, 5); 5]);
        assert!(report(&results(&noisy, &[(40, 20); 10])).contains("UNRELIABLE"));
        assert!(report(&results(&[], &[])).contains("not measured"));
    }
}
