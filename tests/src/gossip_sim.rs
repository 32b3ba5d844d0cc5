//! Gossip simulation: many real [`Gossip`] nodes in one process, joined by
//! chitchat's in-memory transport, on tokio's paused clock.
//!
//! Every node runs the agent's own gossip code (chitchat, the claim rule,
//! the topology it would hand its datapath); only the wire is simulated.
//! Time is virtual: it advances only when every task is idle, so the
//! figures are protocol time (gossip rounds, failure detection, settle
//! periods), not CPU time. The in-memory transport delivers at once (no
//! latency) and drops a datagram only when the receiver's queue (100
//! datagrams) is full, as a full UDP socket buffer would.
//!
//! [`Sim`] drives one cluster (spawn, kill, partition, heal, wait for a
//! condition, check ownership); [`form`], [`add_node`], [`remove_node`],
//! [`membership`] and [`partitions`] are the scenarios behind
//! `tests/tests/gossip_sim.rs` and the gossip part of `overlay-bench`, each
//! returning a report that both print.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fmt::{self, Write as _},
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chitchat::transport::ChannelTransport;
use ipnet::Ipv4Net;
use overlay_agent::{
    gossip::{
        DEFAULT_GOSSIP_PORT, Gossip, GossipConfig,
        auth::WireCounters,
        claims::ClaimConfig,
        status::{BlockState, GossipStatus},
    },
    topology::Topology,
};
use tokio::{sync::watch, time::Instant};

/// Gossip round interval of every simulated node.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Settle period of the claim rule: half the agent's default (30 s), to
/// keep simulations short. It must exceed the time a node cut off from the
/// majority takes to lose its quorum; the partition scenario measures that
/// time and warns when it is not below the settle period.
pub const SETTLE: Duration = Duration::from_secs(15);
/// Failure detector threshold (phi).
pub const PHI_THRESHOLD: f64 = 8.0;
/// Nodes `0..SEEDS` are every node's seeds.
pub const SEEDS: usize = 3;
/// Free addresses a node reports unless a scenario starves it.
pub const DEFAULT_FREE: u64 = 1000;
/// Largest message the transport carries: the UDP payload limit chitchat
/// sizes its messages for. (The agent's authenticated transport also
/// carries larger ones in fragments; the simulation does not.)
pub const MTU: usize = 65_507;
/// Upper bound of every wait in the scenarios (virtual time): generous, so
/// that a slow figure is measured rather than cut short; a wait that
/// reaches it is reported as not reached.
pub const WAIT_LIMIT: Duration = Duration::from_secs(300);
/// VXLAN port every simulated node publishes.
const VXLAN_PORT: u16 = 4789;
/// Cluster name of the simulated cluster.
const CLUSTER_ID: &str = "sim";

/// Name of node `i`.
pub fn node_name(i: usize) -> String {
    format!("n{i}")
}

/// Underlay address of node `i`, counted up from 172.16.0.1 (disjoint from
/// the pod ranges; nothing here touches a real network).
pub fn node_ip(i: usize) -> Ipv4Addr {
    let i = u32::try_from(i)
        .ok()
        .filter(|i| *i < 1 << 20)
        .unwrap_or_else(|| panic!("node index {i} is too large for 172.16.0.0/12"));
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 1)) + i)
}

/// Gossip address of node `i`.
pub fn gossip_addr(i: usize) -> SocketAddr {
    SocketAddr::new(node_ip(i).into(), DEFAULT_GOSSIP_PORT)
}

/// Runs `f` to completion on a fresh current-thread runtime whose clock is
/// paused: virtual time jumps ahead whenever every task waits on a timer.
pub fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("building a current-thread tokio runtime")
        .block_on(f)
}

/// How the simulated nodes are configured and how a [`Sim`] waits.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Gossip round interval.
    pub interval: Duration,
    /// Claim settle period.
    pub settle: Duration,
    /// Failure detector threshold.
    pub phi_threshold: f64,
    /// Nodes `0..seeds` are every node's seeds.
    pub seeds: usize,
    /// The cluster range blocks are cut from.
    pub range: Ipv4Net,
    /// Prefix length of one block.
    pub block_prefix: u8,
    /// How often [`Sim::wait_until`] evaluates its condition (virtual time):
    /// the resolution of every figure.
    pub poll: Duration,
    /// Asked at every poll; when it says so, waits give up (the bench's
    /// Ctrl-C).
    pub stop: fn() -> bool,
}

impl SimConfig {
    /// The defaults for a cluster of about `nodes` nodes: 1 s rounds,
    /// phi 8, 15 s settle, three seeds, /24 blocks of 10.32.0.0/12 (4096
    /// blocks) or, above 2048 nodes, of 10.0.0.0/8; polled every 250 ms.
    pub fn for_nodes(nodes: usize) -> Self {
        let range = if nodes <= 2048 {
            "10.32.0.0/12"
        } else {
            "10.0.0.0/8"
        };
        Self {
            interval: INTERVAL,
            settle: SETTLE,
            phi_threshold: PHI_THRESHOLD,
            seeds: SEEDS,
            range: range.parse().expect("a valid range"),
            block_prefix: 24,
            poll: Duration::from_millis(250),
            stop: never,
        }
    }
}

fn never() -> bool {
    false
}

/// Totals of the in-memory transport since it was created. Datagrams sent
/// over a cut link count too (they leave the sender; the cut drops them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireTotals {
    /// Bytes of serialised datagrams.
    pub bytes: u64,
    /// Datagrams.
    pub datagrams: u64,
}

/// Claims as the nodes themselves report them in their statuses.
#[derive(Clone, Debug, Default)]
pub struct Claims {
    /// Holders of each block in the settled state (addresses are handed out
    /// of it).
    pub settled: BTreeMap<Ipv4Net, BTreeSet<usize>>,
    /// Holders of each block in the pending state.
    pub pending: BTreeMap<Ipv4Net, BTreeSet<usize>>,
    /// Holders of each block settled but lost to a conflict.
    pub lost: BTreeMap<Ipv4Net, BTreeSet<usize>>,
    /// Conflicts the statuses report: block → every claimant named.
    pub reported: BTreeMap<Ipv4Net, BTreeSet<String>>,
    /// Nodes whose status says they have no quorum.
    pub no_quorum: BTreeSet<usize>,
}

impl Claims {
    /// What breaks "one owner per block": empty when every block is held
    /// settled by exactly one node and no status reports a conflict.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (b, holders) in &self.settled {
            if holders.len() > 1 {
                p.push(format!("{b} is settled on {}", names(holders)));
            }
        }
        for (b, holders) in &self.lost {
            p.push(format!(
                "{b} is lost to a conflict on {} (settled on {})",
                names(holders),
                self.settled.get(b).map_or("nobody".into(), names)
            ));
        }
        for (b, claimants) in &self.reported {
            let claimants: Vec<&str> = claimants.iter().map(String::as_str).collect();
            p.push(format!(
                "statuses report a conflict over {b} between {}",
                claimants.join(", ")
            ));
        }
        p
    }

    /// Number of blocks held settled.
    pub fn settled_blocks(&self) -> usize {
        self.settled.len()
    }
}

fn names(nodes: &BTreeSet<usize>) -> String {
    nodes
        .iter()
        .map(|i| node_name(*i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One running node.
struct SimNode {
    gossip: Gossip,
    topology: watch::Receiver<Topology>,
}

/// A simulated cluster: real gossip nodes over one in-memory transport.
/// Must be used inside [`run`] (a runtime with a paused clock).
pub struct Sim {
    config: SimConfig,
    transport: ChannelTransport,
    nodes: BTreeMap<usize, SimNode>,
    free: BTreeMap<usize, Arc<AtomicU64>>,
    cut: Vec<(SocketAddr, SocketAddr)>,
}

impl Sim {
    /// An empty cluster.
    pub fn new(config: SimConfig) -> Self {
        Self {
            config,
            transport: ChannelTransport::with_mtu(MTU),
            nodes: BTreeMap::new(),
            free: BTreeMap::new(),
            cut: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Starts node `i` (see [`node_name`], [`node_ip`], [`gossip_addr`]):
    /// generation 1, seeds `0..seeds`, and every node but node 0 must join
    /// before claiming. Its free addresses read a counter that starts at
    /// [`DEFAULT_FREE`] (see [`Sim::set_free`]).
    pub async fn spawn_node(&mut self, i: usize) {
        assert!(!self.nodes.contains_key(&i), "node {i} is already running");
        let c = &self.config;
        let free = self
            .free
            .entry(i)
            .or_insert_with(|| Arc::new(AtomicU64::new(DEFAULT_FREE)))
            .clone();
        let config = GossipConfig {
            node_name: node_name(i),
            generation: 1,
            node_ip: node_ip(i),
            vxlan_port: VXLAN_PORT,
            gossip_addr: gossip_addr(i),
            seeds: (0..c.seeds).map(|s| gossip_addr(s).to_string()).collect(),
            cluster_id: CLUSTER_ID.into(),
            interval: c.interval,
            phi_threshold: c.phi_threshold,
            claims: ClaimConfig {
                range: c.range,
                block_prefix: c.block_prefix,
                settle: c.settle,
                low_water: 1,
                must_join: i != 0,
            },
            state_file: None,
            authenticated: false,
            wireguard: None,
        };
        let gossip = Gossip::spawn(
            config,
            &self.transport,
            Arc::new(move |_: &[ipnet::Ipv4Net]| Some(free.load(Ordering::Relaxed))),
            Arc::new(WireCounters::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("starting simulated node {i}: {e}"));
        let topology = gossip.topology();
        self.nodes.insert(i, SimNode { gossip, topology });
    }

    /// Stops node `i` (its peers will declare it dead).
    pub async fn kill(&mut self, i: usize) {
        let node = self
            .nodes
            .remove(&i)
            .unwrap_or_else(|| panic!("node {i} is not running"));
        node.gossip.shutdown().await;
    }

    /// Sets the free addresses node `i` reports: below 1 (the low-water
    /// mark) it claims another block.
    pub fn set_free(&self, i: usize, free: u64) {
        self.free
            .get(&i)
            .unwrap_or_else(|| panic!("node {i} was never started"))
            .store(free, Ordering::Relaxed);
    }

    /// Cuts both directions of every link between nodes of different
    /// groups. A node in no group stays connected to every node. Cuts add
    /// up until [`Sim::heal`].
    pub async fn partition(&mut self, groups: &[Vec<usize>]) {
        for (g, first) in groups.iter().enumerate() {
            for second in &groups[g + 1..] {
                for &a in first {
                    for &b in second {
                        let (a, b) = (gossip_addr(a), gossip_addr(b));
                        self.transport.remove_link(a, b).await;
                        self.cut.push((a, b));
                    }
                }
            }
        }
    }

    /// Restores every link cut since the last heal.
    pub async fn heal(&mut self) {
        for (a, b) in std::mem::take(&mut self.cut) {
            self.transport.add_link(a, b).await;
        }
    }

    /// Running nodes, in order.
    pub fn live(&self) -> Vec<usize> {
        self.nodes.keys().copied().collect()
    }

    /// Number of running nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node runs.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The gossip of running node `i`.
    pub fn gossip(&self, i: usize) -> &Gossip {
        &self
            .nodes
            .get(&i)
            .unwrap_or_else(|| panic!("node {i} is not running"))
            .gossip
    }

    /// What the transport has carried so far.
    pub fn wire(&self) -> WireTotals {
        let s = self.transport.statistics();
        WireTotals {
            bytes: s.num_bytes_total,
            datagrams: s.num_messages_total,
        }
    }

    /// Lets virtual time pass.
    pub async fn run_for(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// Evaluates `done` now and then every [`SimConfig::poll`] of virtual
    /// time until it holds: how long that took, or `None` when `timeout`
    /// passed first (or [`SimConfig::stop`] said so).
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        self.wait_every(self.config.poll, timeout, done).await
    }

    /// [`Sim::wait_until`], polling every `every` (for costly conditions).
    pub async fn wait_every(
        &self,
        every: Duration,
        timeout: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if done(self) {
                return Some(start.elapsed());
            }
            if start.elapsed() >= timeout || (self.config.stop)() {
                return None;
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Whether every running node's failure detector holds every running
    /// node alive.
    pub fn all_alive(&self) -> bool {
        let want: HashSet<SocketAddr> = self.nodes.keys().map(|&i| gossip_addr(i)).collect();
        self.nodes
            .values()
            .all(|n| live_among(&n.gossip, &want) == Some(want.len()))
    }

    /// Whether every running node's failure detector holds node `j` alive.
    pub fn alive_everywhere(&self, j: usize) -> bool {
        let want = HashSet::from([gossip_addr(j)]);
        self.nodes
            .values()
            .all(|n| live_among(&n.gossip, &want) == Some(1))
    }

    /// Whether all running nodes' topologies are the same.
    pub fn agree(&self) -> bool {
        let mut topologies = self.nodes.values().map(|n| n.topology.borrow());
        let Some(first) = topologies.next() else {
            return true;
        };
        topologies.all(|t| *t == *first)
    }

    /// Whether every running node's topology lists every running node with
    /// at least one block, and all are the same: every datapath routes to
    /// every block.
    pub fn all_see_all_blocks(&self) -> bool {
        let Some(first) = self.nodes.values().next() else {
            return true;
        };
        let complete = {
            let t = first.topology.borrow();
            // Both sorted by address: node_ip grows with the index.
            t.live_nodes().count() == self.nodes.len()
                && t.live_nodes()
                    .zip(self.nodes.keys())
                    .all(|(n, &i)| n.ip == node_ip(i) && !n.blocks.is_empty())
        };
        complete && self.agree()
    }

    /// How many running nodes' topologies list node `j` alive (a silent
    /// member stays listed, `alive: false`, for the datapath probes).
    pub fn listing(&self, j: usize) -> usize {
        let ip = node_ip(j);
        self.nodes
            .values()
            .filter(|n| n.topology.borrow().live_nodes().any(|n| n.ip == ip))
            .count()
    }

    /// How many running nodes' topologies route to node `j`: list it with
    /// at least one block.
    pub fn routing(&self, j: usize) -> usize {
        let ip = node_ip(j);
        self.nodes
            .values()
            .filter(|n| {
                n.topology
                    .borrow()
                    .live_nodes()
                    .any(|n| n.ip == ip && !n.blocks.is_empty())
            })
            .count()
    }

    /// The topology of running node `i`.
    pub fn topology(&self, i: usize) -> Topology {
        self.nodes
            .get(&i)
            .unwrap_or_else(|| panic!("node {i} is not running"))
            .topology
            .borrow()
            .clone()
    }

    /// Every running node's status.
    pub fn statuses(&self) -> Vec<(usize, GossipStatus)> {
        self.nodes
            .iter()
            .map(|(&i, n)| (i, n.gossip.status()))
            .collect()
    }

    /// The claims every running node reports (one status snapshot each).
    pub fn claims(&self) -> Claims {
        let mut c = Claims::default();
        for (&i, n) in &self.nodes {
            let s = n.gossip.status();
            if !s.quorum {
                c.no_quorum.insert(i);
            }
            for b in &s.blocks {
                let by_state = match b.state {
                    BlockState::Settled => &mut c.settled,
                    BlockState::Pending => &mut c.pending,
                    BlockState::Conflict => &mut c.lost,
                };
                by_state.entry(b.block).or_default().insert(i);
            }
            for x in &s.conflicts {
                c.reported
                    .entry(x.block)
                    .or_default()
                    .extend(x.claimants.iter().cloned());
            }
        }
        c
    }

    /// Each block's holders in the settled state, from the statuses.
    pub fn owners(&self) -> BTreeMap<Ipv4Net, BTreeSet<usize>> {
        self.claims().settled
    }

    /// Whether every block is held settled by exactly one node and no
    /// status reports a conflict.
    pub fn no_conflicts(&self) -> bool {
        self.claims().problems().is_empty()
    }
}

/// How many of `addrs` the node's failure detector holds alive (itself
/// included). `None` if its state is locked, which cannot happen between
/// two awaits on the current-thread runtime (nothing holds that lock across
/// an await), but is treated as "not yet" rather than trusted.
fn live_among(g: &Gossip, addrs: &HashSet<SocketAddr>) -> Option<usize> {
    let cc = g.chitchat()?.chitchat();
    let cc = cc.try_lock().ok()?;
    Some(
        cc.live_nodes()
            .filter(|id| addrs.contains(&id.gossip_advertise_addr))
            .count(),
    )
}

/// A tiny deterministic generator (xorshift64*) for a scenario's random
/// choices, so a seed replays the same splits.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// Shuffles `v` (Fisher-Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.range(0, i));
        }
    }
}

/// Rounds of `interval` in `d`.
fn rounds(d: Duration, interval: Duration) -> f64 {
    d.as_secs_f64() / interval.as_secs_f64()
}

/// `12.25 s (12.2 rounds)`, or what was not reached.
fn secs_rounds(d: Option<Duration>, interval: Duration) -> String {
    match d {
        Some(d) => format!(
            "{:.2} s ({:.1} rounds)",
            d.as_secs_f64(),
            rounds(d, interval)
        ),
        None => format!("NOT REACHED within {} s", WAIT_LIMIT.as_secs()),
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "–".into(), |d| format!("{:.2}", d.as_secs_f64()))
}

/// Steady-state traffic over a window.
#[derive(Clone, Copy, Debug)]
pub struct Traffic {
    /// The window (virtual time).
    pub window: Duration,
    /// Bytes sent per node per second.
    pub bytes_per_node_per_s: f64,
    /// Datagrams sent per node per second.
    pub datagrams_per_node_per_s: f64,
    /// Average datagram size in bytes.
    pub bytes_per_datagram: f64,
}

impl Traffic {
    fn between(before: WireTotals, after: WireTotals, window: Duration, nodes: usize) -> Self {
        let bytes = (after.bytes - before.bytes) as f64;
        let datagrams = (after.datagrams - before.datagrams) as f64;
        let per = nodes as f64 * window.as_secs_f64();
        Self {
            window,
            bytes_per_node_per_s: bytes / per,
            datagrams_per_node_per_s: datagrams / per,
            bytes_per_datagram: if datagrams > 0.0 {
                bytes / datagrams
            } else {
                0.0
            },
        }
    }
}

/// Scenario 1: a cluster forms.
#[derive(Clone, Debug)]
pub struct Formation {
    /// Nodes started.
    pub nodes: usize,
    /// Seeds among them.
    pub seeds: usize,
    /// Gossip round interval.
    pub interval: Duration,
    /// Settle period (included in `all_routed`).
    pub settle: Duration,
    /// From the start until every node's failure detector holds every node
    /// alive.
    pub all_alive: Option<Duration>,
    /// From the start until every node's topology lists every node with its
    /// settled blocks, all the same (one settle period included).
    pub all_routed: Option<Duration>,
    /// Blocks settled at the end.
    pub blocks: usize,
    /// Ownership problems at the end (should be empty).
    pub problems: Vec<String>,
    /// Traffic over a steady window after convergence.
    pub steady: Option<Traffic>,
    /// Real time the scenario took.
    pub wall: Duration,
}

impl fmt::Display for Formation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "formation: {} nodes started at t=0 from {} seeds (interval {} s, settle {} s; \
             virtual protocol time, no network latency)",
            self.nodes,
            self.seeds,
            self.interval.as_secs_f64(),
            self.settle.as_secs_f64()
        )?;
        writeln!(
            f,
            "  everyone sees everyone alive:     {}",
            secs_rounds(self.all_alive, self.interval)
        )?;
        writeln!(
            f,
            "  everyone routes everyone's block: {} (includes the {} s settle period)",
            secs_rounds(self.all_routed, self.interval),
            self.settle.as_secs()
        )?;
        writeln!(f, "  blocks settled: {}", self.blocks)?;
        if let Some(t) = &self.steady {
            writeln!(
                f,
                "  steady traffic over {} s: {:.0} B/node/s, {:.1} datagrams/node/s, \
                 {:.0} B/datagram",
                t.window.as_secs(),
                t.bytes_per_node_per_s,
                t.datagrams_per_node_per_s,
                t.bytes_per_datagram
            )?;
        }
        for p in &self.problems {
            writeln!(f, "  PROBLEM: {p}")?;
        }
        writeln!(f, "  wall-clock: {:.1} s", self.wall.as_secs_f64())
    }
}

/// Scenario 2: a node joins a formed cluster.
#[derive(Clone, Debug)]
pub struct Join {
    /// The new node.
    pub node: usize,
    /// Nodes running with it.
    pub nodes: usize,
    /// Gossip round interval.
    pub interval: Duration,
    /// Settle period (included in `routed_everywhere`).
    pub settle: Duration,
    /// From its start until every node holds it alive.
    pub alive_everywhere: Option<Duration>,
    /// From its start until every node routes to its settled block.
    pub routed_everywhere: Option<Duration>,
    /// Real time the scenario took.
    pub wall: Duration,
}

impl Join {
    /// `routed_everywhere` minus the settle period: what gossip itself took.
    pub fn routed_minus_settle(&self) -> Option<Duration> {
        self.routed_everywhere
            .map(|d| d.saturating_sub(self.settle))
    }
}

impl fmt::Display for Join {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "new node {} joins {} nodes:",
            node_name(self.node),
            self.nodes - 1
        )?;
        writeln!(
            f,
            "  alive everywhere:  {}",
            secs_rounds(self.alive_everywhere, self.interval)
        )?;
        writeln!(
            f,
            "  routed everywhere: {} (minus the {} s settle period: {})",
            secs_rounds(self.routed_everywhere, self.interval),
            self.settle.as_secs(),
            secs_rounds(self.routed_minus_settle(), self.interval)
        )?;
        writeln!(f, "  wall-clock: {:.1} s", self.wall.as_secs_f64())
    }
}

/// Scenario 3: a node dies.
#[derive(Clone, Debug)]
pub struct Death {
    /// The node stopped.
    pub node: usize,
    /// Nodes left running.
    pub nodes: usize,
    /// Gossip round interval.
    pub interval: Duration,
    /// Settle period: failure detection must stay below it.
    pub settle: Duration,
    /// From the stop until a first node's topology dropped it.
    pub first_dropped: Option<Duration>,
    /// From the stop until no node's topology lists it.
    pub dropped_everywhere: Option<Duration>,
    /// Real time the scenario took.
    pub wall: Duration,
}

impl fmt::Display for Death {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "node {} stops; {} nodes left:",
            node_name(self.node),
            self.nodes
        )?;
        writeln!(
            f,
            "  dropped by a first node:  {}",
            secs_rounds(self.first_dropped, self.interval)
        )?;
        writeln!(
            f,
            "  dropped by every node:    {} (settle period {} s{})",
            secs_rounds(self.dropped_everywhere, self.interval),
            self.settle.as_secs(),
            match self.dropped_everywhere {
                Some(d) if d < self.settle =>
                    format!(": {:.2} s of margin", (self.settle - d).as_secs_f64()),
                Some(_) => ": NO margin, detection is slower than settling".into(),
                None => String::new(),
            }
        )?;
        writeln!(f, "  wall-clock: {:.1} s", self.wall.as_secs_f64())
    }
}

/// Scenario 1: starts nodes `0..nodes` at once and waits until every node
/// sees every other alive and routes to every other's settled block; then,
/// unless `window` is zero, measures the traffic of a steady window that
/// long.
pub async fn form(sim: &mut Sim, nodes: usize, window: Duration) -> Formation {
    let wall = std::time::Instant::now();
    let t0 = Instant::now();
    for i in 0..nodes {
        sim.spawn_node(i).await;
    }
    let all_alive = sim.wait_until(WAIT_LIMIT, Sim::all_alive).await;
    let all_routed = match all_alive {
        Some(_) => sim
            .wait_until(WAIT_LIMIT, Sim::all_see_all_blocks)
            .await
            .map(|_| t0.elapsed()),
        None => None,
    };
    let claims = sim.claims();
    let steady = if all_routed.is_some() && !window.is_zero() {
        let before = sim.wire();
        sim.run_for(window).await;
        Some(Traffic::between(before, sim.wire(), window, sim.len()))
    } else {
        None
    };
    Formation {
        nodes,
        seeds: sim.config.seeds.min(nodes),
        interval: sim.config.interval,
        settle: sim.config.settle,
        all_alive,
        all_routed,
        blocks: claims.settled_blocks(),
        problems: claims.problems(),
        steady,
        wall: wall.elapsed(),
    }
}

/// Scenario 2: starts node `i` in a formed cluster and waits until every
/// node holds it alive and routes to its settled block.
pub async fn add_node(sim: &mut Sim, i: usize) -> Join {
    let wall = std::time::Instant::now();
    let t0 = Instant::now();
    sim.spawn_node(i).await;
    let alive_everywhere = sim.wait_until(WAIT_LIMIT, |s| s.alive_everywhere(i)).await;
    let routed_everywhere = sim
        .wait_until(WAIT_LIMIT, |s| s.routing(i) == s.len())
        .await
        .map(|_| t0.elapsed());
    Join {
        node: i,
        nodes: sim.len(),
        interval: sim.config.interval,
        settle: sim.config.settle,
        alive_everywhere,
        routed_everywhere,
        wall: wall.elapsed(),
    }
}

/// Scenario 3: stops node `i` and waits until no node's topology lists it.
pub async fn remove_node(sim: &mut Sim, i: usize) -> Death {
    let wall = std::time::Instant::now();
    sim.kill(i).await;
    let t0 = Instant::now();
    let all = sim.len();
    let mut first_dropped = None;
    let dropped_everywhere = sim
        .wait_until(WAIT_LIMIT, |s| {
            let listing = s.listing(i);
            if listing < all && first_dropped.is_none() {
                first_dropped = Some(t0.elapsed());
            }
            listing == 0
        })
        .await;
    Death {
        node: i,
        nodes: all,
        interval: sim.config.interval,
        settle: sim.config.settle,
        first_dropped,
        dropped_everywhere,
        wall: wall.elapsed(),
    }
}

/// Scenarios 1 to 3 on one cluster.
#[derive(Clone, Debug)]
pub struct Membership {
    /// The cluster forming.
    pub formation: Formation,
    /// A node joining it (when it formed).
    pub join: Option<Join>,
    /// A node dying (when it formed).
    pub death: Option<Death>,
    /// Real time of all three.
    pub wall: Duration,
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.formation)?;
        if let Some(j) = &self.join {
            write!(f, "{j}")?;
        }
        if let Some(d) = &self.death {
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Scenarios 1 to 3 on one cluster of `nodes` nodes: formation (with a
/// `window` of steady traffic), then node `nodes` joins, then node
/// `nodes / 2` (not a seed) stops. With `progress`, each report goes to
/// stderr as it comes. Waits give up when `stop` says so.
pub async fn membership(
    nodes: usize,
    window: Duration,
    progress: bool,
    stop: fn() -> bool,
) -> Membership {
    let wall = std::time::Instant::now();
    let mut sim = Sim::new(SimConfig {
        stop,
        ..SimConfig::for_nodes(nodes + 1)
    });
    let say = |report: &dyn fmt::Display| {
        if progress {
            eprint!("{report}");
        }
    };
    let formation = form(&mut sim, nodes, window).await;
    say(&formation);
    let (mut join, mut death) = (None, None);
    if formation.all_alive.is_some() && !stop() {
        let j = add_node(&mut sim, nodes).await;
        say(&j);
        join = Some(j);
        if !stop() {
            let d = remove_node(&mut sim, nodes / 2).await;
            say(&d);
            death = Some(d);
        }
    }
    Membership {
        formation,
        join,
        death,
        wall: wall.elapsed(),
    }
}

/// What the partition scenario does.
#[derive(Clone, Debug)]
pub struct PartitionOptions {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Partition rounds; every third one, starting with the second, splits
    /// three ways with no majority.
    pub rounds: usize,
    /// Seed of the random choices (splits, starved nodes).
    pub seed: u64,
    /// Claim settle period of every node.
    pub settle: Duration,
    /// Share of every group made to claim a block during the partition, in
    /// percent (at least one node per group).
    pub starve_percent: usize,
    /// How long each partition is held.
    pub hold: Duration,
    /// A line per step on stderr.
    pub progress: bool,
    /// Asked at every poll: waits give up when it says so.
    pub stop: fn() -> bool,
}

impl PartitionOptions {
    /// `rounds` rounds on `nodes` nodes from `seed`: [`SETTLE`], 10 %
    /// starved per group, partitions held three settle periods, quiet.
    pub fn new(nodes: usize, rounds: usize, seed: u64) -> Self {
        Self {
            nodes,
            rounds,
            seed,
            settle: SETTLE,
            starve_percent: 10,
            hold: SETTLE * 3,
            progress: false,
            stop: never,
        }
    }
}

/// One side of a partition.
#[derive(Clone, Debug)]
pub struct Group {
    /// Nodes in it.
    pub size: usize,
    /// Whether it holds a strict majority of the cluster.
    pub majority: bool,
    /// Nodes made to claim a block (free addresses set to 0).
    pub starved: usize,
    /// Blocks its nodes settled during the partition.
    pub settled: usize,
    /// Pending claims of its nodes when the partition healed.
    pub pending_at_heal: usize,
}

/// One partition round.
#[derive(Clone, Debug)]
pub struct PartitionRound {
    /// Round number, from 1.
    pub round: usize,
    /// The sides.
    pub groups: Vec<Group>,
    /// How long the partition was held.
    pub hold: Duration,
    /// From the cut until a first node of a minority side reported no
    /// quorum.
    pub minority_quorum_lost_first: Option<Duration>,
    /// From the cut until every node of every minority side reported no
    /// quorum; must stay below the settle period (the claim rule's
    /// premise).
    pub minority_quorum_lost: Option<Duration>,
    /// From the heal until every node holds every node alive.
    pub rejoined: Option<Duration>,
    /// From the heal until one settled owner per block, no pending claim,
    /// no conflict and the same complete topology on every node.
    pub converged: Option<Duration>,
    /// Blocks that settled after the heal (claims made during the
    /// partition that survived it).
    pub settled_after_heal: usize,
    /// Blocks settled in the cluster after convergence.
    pub blocks: usize,
    /// Broken invariants (should be empty).
    pub violations: Vec<String>,
    /// Margins that were not kept, though no invariant broke.
    pub warnings: Vec<String>,
    /// Real time the round took.
    pub wall: Duration,
}

impl PartitionRound {
    /// Blocks settled during the partition on the majority side.
    pub fn settled_majority(&self) -> usize {
        self.groups
            .iter()
            .filter(|g| g.majority)
            .map(|g| g.settled)
            .sum()
    }

    /// Blocks settled during the partition on minority sides (the quorum
    /// rule says none).
    pub fn settled_minority(&self) -> usize {
        self.groups
            .iter()
            .filter(|g| !g.majority)
            .map(|g| g.settled)
            .sum()
    }

    /// `60+140` style sizes, the majority marked `*`.
    pub fn split(&self) -> String {
        self.groups
            .iter()
            .map(|g| format!("{}{}", g.size, if g.majority { "*" } else { "" }))
            .collect::<Vec<_>>()
            .join("+")
    }
}

impl fmt::Display for PartitionRound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "round {}: split {} (* = majority), held {} s",
            self.round,
            self.split(),
            self.hold.as_secs()
        )?;
        for (k, g) in self.groups.iter().enumerate() {
            writeln!(
                f,
                "  group {k}: {} nodes{}, {} starved: settled {} during the partition, \
                 {} pending at heal",
                g.size,
                if g.majority { " (majority)" } else { "" },
                g.starved,
                g.settled,
                g.pending_at_heal
            )?;
        }
        writeln!(
            f,
            "  minority sides lost quorum after {}–{} s (first–last node); after heal: all alive \
             after {} s, converged after {} s; {} blocks settled after heal; {} blocks in all",
            secs(self.minority_quorum_lost_first),
            secs(self.minority_quorum_lost),
            secs(self.rejoined),
            secs(self.converged),
            self.settled_after_heal,
            self.blocks
        )?;
        for v in &self.violations {
            writeln!(f, "  VIOLATION: {v}")?;
        }
        for w in &self.warnings {
            writeln!(f, "  WARNING: {w}")?;
        }
        writeln!(f, "  wall-clock: {:.1} s", self.wall.as_secs_f64())
    }
}

/// Scenario 4: partitions.
#[derive(Clone, Debug)]
pub struct Partitions {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Seed of the random choices.
    pub seed: u64,
    /// The cluster forming first.
    pub formation: Formation,
    /// Rounds run (they stop after the first with a violation).
    pub rounds: Vec<PartitionRound>,
    /// Real time of the whole scenario.
    pub wall: Duration,
}

impl Partitions {
    /// Every broken invariant, formation included.
    pub fn violations(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .formation
            .problems
            .iter()
            .map(|p| format!("formation: {p}"))
            .collect();
        if self.formation.all_routed.is_none() {
            v.push(format!(
                "formation: did not converge within {} s",
                WAIT_LIMIT.as_secs()
            ));
        }
        for r in &self.rounds {
            v.extend(
                r.violations
                    .iter()
                    .map(|x| format!("round {}: {x}", r.round)),
            );
        }
        v
    }
}

impl fmt::Display for Partitions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "partitions: {} nodes, {} rounds, seed {:#x}",
            self.nodes,
            self.rounds.len(),
            self.seed
        )?;
        write!(f, "{}", self.formation)?;
        for r in &self.rounds {
            write!(f, "{r}")?;
        }
        writeln!(f, "wall-clock in all: {:.1} s", self.wall.as_secs_f64())
    }
}

/// Splits `nodes` at random: two sides of 20–80 %, or (`three`) three
/// sides each below half.
fn split(rng: &mut Rng, nodes: &[usize], three: bool) -> Vec<Vec<usize>> {
    let n = nodes.len();
    assert!(n >= 10, "a partition needs at least 10 nodes, not {n}");
    let pct = |p: usize| n * p / 100;
    let sizes = if three {
        // a and b below half, and a + b above half so that c is too.
        let a = rng.range(pct(25), pct(45));
        let b = rng.range(pct(20).max(n / 2 + 1 - a), pct(45));
        vec![a, b, n - a - b]
    } else {
        let a = rng.range(pct(20), pct(80));
        vec![a, n - a]
    };
    let mut shuffled = nodes.to_vec();
    rng.shuffle(&mut shuffled);
    let mut rest = &shuffled[..];
    sizes
        .into_iter()
        .map(|s| {
            let (group, tail) = rest.split_at(s);
            rest = tail;
            let mut group = group.to_vec();
            group.sort_unstable();
            group
        })
        .collect()
}

/// Scenario 4: forms a cluster, then runs partition rounds. Each round
/// splits the nodes, starves a share of every side so it claims blocks,
/// holds the partition, heals it, restores the free addresses and waits
/// for convergence; then checks one owner per block, no conflict, the same
/// topology everywhere, and that no minority side settled anything.
pub async fn partitions(o: &PartitionOptions) -> Partitions {
    let wall = std::time::Instant::now();
    let mut sim = Sim::new(SimConfig {
        stop: o.stop,
        settle: o.settle,
        ..SimConfig::for_nodes(o.nodes)
    });
    let say = |msg: String| {
        if o.progress {
            eprintln!("[gossip] {msg}");
        }
    };
    let formation = form(&mut sim, o.nodes, Duration::ZERO).await;
    say(format!(
        "partitions: {} nodes formed in {} s",
        o.nodes,
        secs(formation.all_routed)
    ));
    let mut report = Partitions {
        nodes: o.nodes,
        seed: o.seed,
        formation,
        rounds: Vec::new(),
        wall: Duration::ZERO,
    };
    if report.formation.all_routed.is_none() || !report.formation.problems.is_empty() {
        report.wall = wall.elapsed();
        return report;
    }
    let mut rng = Rng::new(o.seed);
    for round in 1..=o.rounds {
        if (o.stop)() {
            break;
        }
        let r = partition_round(&mut sim, &mut rng, round, o).await;
        say(format!(
            "round {round}/{}: split {}, settled {} majority / {} minority, converged after {} s{}",
            o.rounds,
            r.split(),
            r.settled_majority(),
            r.settled_minority(),
            secs(r.converged),
            match (r.violations.len(), r.warnings.len()) {
                (0, 0) => String::new(),
                (0, w) => format!(", {w} WARNING(S)"),
                (v, _) => format!(", {v} VIOLATION(S)"),
            }
        ));
        let failed = !r.violations.is_empty();
        report.rounds.push(r);
        if failed {
            break;
        }
    }
    report.wall = wall.elapsed();
    report
}

async fn partition_round(
    sim: &mut Sim,
    rng: &mut Rng,
    round: usize,
    o: &PartitionOptions,
) -> PartitionRound {
    let wall = std::time::Instant::now();
    let live = sim.live();
    let groups = split(rng, &live, round % 3 == 2);
    let majority: Vec<bool> = groups.iter().map(|g| g.len() * 2 > live.len()).collect();
    let before = sim.claims();
    let mut violations = before
        .problems()
        .into_iter()
        .map(|p| format!("before the cut: {p}"))
        .collect::<Vec<_>>();

    sim.partition(&groups).await;
    let cut = Instant::now();
    let starved: Vec<Vec<usize>> = groups
        .iter()
        .map(|g| {
            let mut g = g.clone();
            rng.shuffle(&mut g);
            g.truncate((g.len() * o.starve_percent / 100).max(1));
            g
        })
        .collect();
    for &i in starved.iter().flatten() {
        sim.set_free(i, 0);
    }
    let minority: Vec<usize> = groups
        .iter()
        .zip(&majority)
        .filter(|(_, m)| !**m)
        .flat_map(|(g, _)| g.iter().copied())
        .collect();
    let mut first_lost = None;
    let minority_quorum_lost = sim
        .wait_until(o.hold, |s| {
            let c = s.claims();
            if first_lost.is_none() && minority.iter().any(|i| c.no_quorum.contains(i)) {
                first_lost = Some(cut.elapsed());
            }
            minority.iter().all(|i| c.no_quorum.contains(i))
        })
        .await;
    let held = cut.elapsed();
    if held < o.hold {
        sim.run_for(o.hold - held).await;
    }
    let at_heal = sim.claims();
    sim.heal().await;
    let healed = Instant::now();
    for &i in starved.iter().flatten() {
        sim.set_free(i, DEFAULT_FREE);
    }

    // Not itself a broken invariant (a starved minority node may lose its
    // own quorum earlier than the last one does), but the claim rule's
    // premise: past it, a minority claim can settle.
    let settle = sim.config.settle;
    let mut warnings = Vec::new();
    match minority_quorum_lost {
        Some(d) if d < settle => {}
        Some(d) => warnings.push(format!(
            "minority nodes kept their quorum up to {:.2} s after the cut, not less than the \
             {} s settle period: a claim made at the cut could settle there",
            d.as_secs_f64(),
            settle.as_secs()
        )),
        None => warnings.push(format!(
            "minority sides still had a quorum when the partition healed after {} s",
            o.hold.as_secs()
        )),
    }
    let lost_quorum: BTreeSet<usize> = groups
        .iter()
        .zip(&majority)
        .filter(|(_, m)| **m)
        .flat_map(|(g, _)| g.iter().filter(|i| at_heal.no_quorum.contains(i)))
        .copied()
        .collect();
    if !lost_quorum.is_empty() {
        violations.push(format!(
            "majority nodes without a quorum at heal: {}",
            names(&lost_quorum)
        ));
    }
    let report_groups: Vec<Group> = groups
        .iter()
        .zip(&majority)
        .zip(&starved)
        .map(|((g, &majority), starved)| {
            let members: BTreeSet<usize> = g.iter().copied().collect();
            let settled: Vec<Ipv4Net> = at_heal
                .settled
                .iter()
                .filter(|(b, holders)| {
                    !holders.is_disjoint(&members)
                        && before
                            .settled
                            .get(b)
                            .is_none_or(|old| old.is_disjoint(&members))
                })
                .map(|(b, _)| *b)
                .collect();
            let pending_at_heal = at_heal
                .pending
                .values()
                .map(|h| h.intersection(&members).count())
                .sum();
            if !majority && !settled.is_empty() {
                violations.push(format!(
                    "a minority side of {} nodes settled {} block(s) during the partition: {}",
                    g.len(),
                    settled.len(),
                    settled
                        .iter()
                        .map(|b| format!("{b} on {}", names(&at_heal.settled[b])))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
            if majority && settled.is_empty() {
                violations.push(format!(
                    "the majority side ({} nodes, {} starved) settled nothing in {} s",
                    g.len(),
                    starved.len(),
                    o.hold.as_secs()
                ));
            }
            Group {
                size: g.len(),
                majority,
                starved: starved.len(),
                settled: settled.len(),
                pending_at_heal,
            }
        })
        .collect();

    let rejoined = sim.wait_until(WAIT_LIMIT, Sim::all_alive).await;
    let converged = sim
        .wait_until(WAIT_LIMIT, |s| {
            s.all_see_all_blocks() && {
                let c = s.claims();
                c.pending.is_empty() && c.problems().is_empty()
            }
        })
        .await
        .map(|_| healed.elapsed());
    let after = sim.claims();
    violations.extend(after.problems());
    if converged.is_none() {
        violations.push(format!(
            "not converged {} s after the heal: {} pending claim(s), topologies {}",
            WAIT_LIMIT.as_secs(),
            after.pending.len(),
            if sim.agree() { "agree" } else { "DIFFER" }
        ));
    }
    let settled_after_heal = after
        .settled
        .keys()
        .filter(|b| !at_heal.settled.contains_key(b))
        .count();
    PartitionRound {
        round,
        groups: report_groups,
        hold: o.hold,
        minority_quorum_lost_first: first_lost,
        minority_quorum_lost,
        rejoined,
        converged,
        settled_after_heal,
        blocks: after.settled_blocks(),
        violations,
        warnings,
        wall: wall.elapsed(),
    }
}

/// The bench's markdown report of the gossip part.
pub fn report(membership: Option<&Membership>, partitions: Option<&Partitions>) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n## Gossip simulation\n\nReal gossip nodes (the agent's own code: chitchat, the claim \
         rule, the topology) in one process over chitchat's in-memory transport, on tokio's \
         paused clock: times are virtual protocol time (gossip rounds of {} s, phi {}, settle \
         {} s, {} seeds), not CPU time, and the transport has no latency. Wall-clock is the real \
         time the simulation took.\n",
        INTERVAL.as_secs(),
        PHI_THRESHOLD,
        SETTLE.as_secs(),
        SEEDS
    );
    if let Some(m) = membership {
        let f = &m.formation;
        o.push_str(
            "| scenario | nodes | virtual s | rounds | detail | wall-clock s |\n\
             |---|---:|---:|---:|---|---:|\n",
        );
        // The wall-clock of a scenario goes on its first row.
        let mut row = |name: &str,
                       nodes: usize,
                       d: Option<Duration>,
                       detail: String,
                       wall: Option<Duration>| {
            let _ = writeln!(
                o,
                "| {name} | {nodes} | {} | {} | {detail} | {} |",
                secs(d),
                d.map_or("–".into(), |d| format!("{:.1}", rounds(d, INTERVAL))),
                wall.map_or(String::new(), |w| format!("{:.1}", w.as_secs_f64()))
            );
        };
        row(
            "formation: everyone sees everyone alive",
            f.nodes,
            f.all_alive,
            format!("from {} seeds, all started at t=0", f.seeds),
            Some(f.wall),
        );
        row(
            "formation: everyone routes everyone's block",
            f.nodes,
            f.all_routed,
            format!(
                "includes the {} s settle; {} blocks",
                f.settle.as_secs(),
                f.blocks
            ),
            None,
        );
        if let Some(j) = &m.join {
            row(
                "new node: alive everywhere",
                j.nodes,
                j.alive_everywhere,
                String::new(),
                Some(j.wall),
            );
            row(
                "new node: routed everywhere",
                j.nodes,
                j.routed_everywhere,
                format!("minus settle: {} s", secs(j.routed_minus_settle())),
                None,
            );
        }
        if let Some(d) = &m.death {
            row(
                "death: dropped by the first node",
                d.nodes,
                d.first_dropped,
                format!("phi {}", PHI_THRESHOLD),
                Some(d.wall),
            );
            row(
                "death: dropped by every node",
                d.nodes,
                d.dropped_everywhere,
                format!("must stay below the {} s settle", d.settle.as_secs()),
                None,
            );
        }
        let _ = match &f.steady {
            Some(t) => writeln!(
                o,
                "\nSteady state, {} nodes, over {} s: {:.0} B sent per node per second ({:.1} \
                 datagrams/node/s, {:.0} B per datagram).",
                f.nodes,
                t.window.as_secs(),
                t.bytes_per_node_per_s,
                t.datagrams_per_node_per_s,
                t.bytes_per_datagram
            ),
            None => writeln!(o, "\nSteady state: not measured (no convergence)."),
        };
        for p in &f.problems {
            let _ = writeln!(o, "VIOLATION formation: {p}");
        }
        let _ = writeln!(
            o,
            "Wall-clock of the membership scenarios: {:.1} s.",
            m.wall.as_secs_f64()
        );
    }
    if let Some(p) = partitions {
        let _ = writeln!(
            o,
            "\n### Partitions: {} nodes, seed {:#x}\n\nFormed in {} s virtual ({:.1} s \
             wall-clock). Each round cuts the cluster, starves ~10 % of every side (free \
             addresses 0: it claims blocks), holds the cut, heals, and waits for one owner per \
             block and identical topologies. * = majority side.\n",
            p.nodes,
            p.seed,
            secs(p.formation.all_routed),
            p.formation.wall.as_secs_f64()
        );
        o.push_str(
            "| round | split | starved | held s | minority lost quorum s (first–last node) | \
             settled majority | settled minority | settled after heal | all alive after heal s \
             | converged after heal s | violations | wall-clock s |\n\
             |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &p.rounds {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {}–{} | {} | {} | {} | {} | {} | {} | {:.1} |",
                r.round,
                r.split(),
                r.groups.iter().map(|g| g.starved).sum::<usize>(),
                r.hold.as_secs(),
                secs(r.minority_quorum_lost_first),
                secs(r.minority_quorum_lost),
                r.settled_majority(),
                r.settled_minority(),
                r.settled_after_heal,
                secs(r.rejoined),
                secs(r.converged),
                r.violations.len(),
                r.wall.as_secs_f64()
            );
        }
        let v = p.violations();
        o.push('\n');
        if v.is_empty() {
            let _ = writeln!(
                o,
                "PASS: every block settled on exactly one node after every heal, no conflict, \
                 identical topologies, and no minority side settled a block."
            );
        }
        for x in &v {
            let _ = writeln!(o, "VIOLATION {x}");
        }
        for r in &p.rounds {
            for w in &r.warnings {
                let _ = writeln!(o, "WARNING round {}: {w}", r.round);
            }
        }
        let _ = writeln!(
            o,
            "Wall-clock of the partition scenario: {:.1} s.",
            p.wall.as_secs_f64()
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_every_node_once_and_three_way_splits_have_no_majority() {
        let nodes: Vec<usize> = (0..200).collect();
        let mut rng = Rng::new(7);
        for three in [false, true, false, true] {
            let groups = split(&mut rng, &nodes, three);
            let mut all: Vec<usize> = groups.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(all, nodes, "every node in exactly one group");
            if three {
                assert_eq!(groups.len(), 3);
                assert!(
                    groups.iter().all(|g| g.len() * 2 < nodes.len()),
                    "three-way split with a majority: {:?}",
                    groups.iter().map(Vec::len).collect::<Vec<_>>()
                );
            } else {
                assert_eq!(groups.len(), 2);
                assert!(
                    groups.iter().all(|g| (40..=160).contains(&g.len())),
                    "two-way sides outside 20-80 %"
                );
            }
        }
    }

    #[test]
    fn a_seed_replays_the_same_choices() {
        let (mut a, mut b) = (Rng::new(0), Rng::new(0));
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().any(|x| *x != xs[0]), "the generator moves");
    }

    #[test]
    fn node_addresses_are_unique_and_ordered_like_the_indices() {
        assert_eq!(node_ip(0), Ipv4Addr::new(172, 16, 0, 1));
        assert_eq!(node_ip(1000), Ipv4Addr::new(172, 16, 3, 233));
        assert!(node_ip(254) < node_ip(255));
        assert_eq!(gossip_addr(2).port(), DEFAULT_GOSSIP_PORT);
    }
}
