//! Simulation of the SWIM gossip layer ([`overlay_agent::gossip::swim`]):
//! thousands of real [`Swim`] nodes (the agent's code, authentication
//! included) in one process, driven by a discrete-event loop on a virtual
//! clock, over a simulated network with latency, loss and partitions.
//!
//! The nodes share one copy of each record version
//! ([`overlay_agent::gossip::swim::SharedRecords`]) so that 5,000 nodes
//! fit in memory; everything else (membership, digests, replay windows) is
//! each node's own.
//!
//! Time is virtual: the loop jumps from one event (a datagram delivered, a
//! timer firing) to the next, so figures are protocol time. Bandwidth counts
//! every sealed datagram a node sends plus 28 bytes of IPv4 and UDP headers.
//!
//! The scenarios behind `tests/tests/swim_sim.rs` and the bench's SWIM part:
//! [`cold_start`], [`steady`], [`join`], [`death`], [`churn`]; each returns
//! figures that [`Report`] prints. `SWIM_TRACE=1` prints the cold start's
//! progress every 2 s (virtual) on stderr.

use std::{
    cmp::Ordering,
    collections::{BTreeMap, BinaryHeap, HashMap},
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    sync::Arc,
    time::Duration,
};

use overlay_agent::gossip::{
    DEFAULT_GOSSIP_PORT,
    auth::Key,
    claims::{ClaimConfig, Claimer},
    swim::{NodeRecord, SharedRecords, Swim, SwimConfig, SwimTimer},
    view::{Claim, ClaimState},
};

use crate::gossip_sim::{Rng, node_ip, node_name};

/// IPv4 + UDP header bytes counted per datagram.
pub const IP_UDP_HEADERS: u64 = 28;
/// Nodes `0..SEEDS` are every node's seeds.
pub const SEEDS: usize = 3;
/// Upper bound of every wait (virtual time).
pub const WAIT_LIMIT: Duration = Duration::from_secs(300);
/// Resolution of the figures: conditions are checked this often.
pub const POLL: Duration = Duration::from_millis(100);

/// The simulated network.
#[derive(Clone, Copy, Debug)]
pub struct Net {
    /// One-way latency, uniform in `min..=max`.
    pub latency_min: Duration,
    /// See `latency_min`.
    pub latency_max: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
}

impl Default for Net {
    /// A LAN: 0.2 to 2 ms one way, no loss.
    fn default() -> Self {
        Self {
            latency_min: Duration::from_micros(200),
            latency_max: Duration::from_millis(2),
            loss: 0.0,
        }
    }
}

enum What {
    Deliver {
        to: usize,
        from: SocketAddrV4,
        data: Vec<u8>,
    },
    Timer {
        node: usize,
        life: u64,
        timer: SwimTimer,
    },
}

struct Event {
    at: Duration,
    seq: u64,
    what: What,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    // Reversed: the heap pops the earliest event first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Gossip address of node `i`.
pub fn addr(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(node_ip(i), DEFAULT_GOSSIP_PORT)
}

/// The block node `i` owns in the simulation (10.32.0.0/12 cut in /24s).
fn block(i: usize) -> ipnet::Ipv4Net {
    let base = u32::from(Ipv4Addr::new(10, 32, 0, 0)) + ((i as u32 % 4096) << 8);
    ipnet::Ipv4Net::new(Ipv4Addr::from(base), 24).expect("/24 is valid")
}

/// One cluster on a virtual clock.
pub struct SwimSim {
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Event>,
    nodes: Vec<Option<Swim>>,
    /// Incremented when a node is killed or restarted: its old timers and
    /// in-flight datagrams are dropped.
    life: Vec<u64>,
    by_addr: HashMap<SocketAddrV4, usize>,
    /// Partition group per node (`None`: one network).
    groups: Option<Vec<u32>>,
    /// Bytes and datagrams each node sent.
    sent: Vec<(u64, u64)>,
    net: Net,
    rng: Rng,
    key: Option<Key>,
    cluster_size: u32,
    shared: Arc<SharedRecords>,
    /// Asked every few thousand events; when it says so, the loop stops
    /// delivering (the bench's Ctrl-C) and every wait ends unreached.
    pub stop: fn() -> bool,
}

impl SwimSim {
    /// A cluster of up to `capacity` nodes, authenticated with a key.
    pub fn new(capacity: usize, net: Net, seed: u64) -> Self {
        Self {
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: (0..capacity).map(|_| None).collect(),
            life: vec![0; capacity],
            by_addr: (0..capacity).map(|i| (addr(i), i)).collect(),
            groups: None,
            sent: vec![(0, 0); capacity],
            net,
            rng: Rng::new(seed),
            key: Some(Key::derive(b"simulation", "sim")),
            cluster_size: u32::try_from(capacity).unwrap_or(u32::MAX),
            shared: Arc::default(),
            stop: || false,
        }
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Changes the network (e.g. adds loss).
    pub fn set_net(&mut self, net: Net) {
        self.net = net;
    }

    /// The record node `i` publishes at `generation`.
    pub fn record(i: usize, generation: u64) -> NodeRecord {
        NodeRecord {
            name: node_name(i),
            generation,
            seq: 0,
            gossip_addr: addr(i),
            ip: node_ip(i),
            vxlan_port: 4789,
            version: env!("CARGO_PKG_VERSION").into(),
            stopping: false,
            claims: vec![(
                block(i),
                Claim {
                    state: ClaimState::Settled,
                    origin: generation,
                },
            )],
            forgets: Vec::new(),
        }
    }

    /// Starts node `i` (a new generation if it ran before).
    pub fn spawn(&mut self, i: usize) {
        self.spawn_with(i, |_| {});
    }

    /// Starts node `i` with its record changed by `f` first.
    pub fn spawn_with(&mut self, i: usize, f: impl FnOnce(&mut NodeRecord)) {
        self.life[i] += 1;
        let generation = 1_000 * self.life[i] + self.now.as_millis() as u64;
        let seeds = (0..SEEDS.min(self.nodes.len())).map(addr).collect();
        let mut record = Self::record(i, generation);
        f(&mut record);
        let mut config = SwimConfig::new(record, seeds, self.cluster_size);
        config.key = self.key.clone();
        config.shared = Some(self.shared.clone());
        config.rng_seed ^= self.rng.next_u64();
        let mut node = Swim::new(config).expect("a valid SWIM configuration");
        node.start().expect("joining through the seeds");
        self.nodes[i] = Some(node);
        self.flush(i);
    }

    /// Kills node `i` at once (no goodbye).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i] = None;
        self.life[i] += 1;
    }

    /// Stops node `i` cleanly (announces it, then goes silent).
    pub fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].as_mut() {
            n.leave().expect("leaving");
            self.flush(i);
        }
        self.kill(i);
    }

    /// Cuts the network into `groups` (nodes not listed are in group 0).
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        let mut g = vec![0; self.nodes.len()];
        for (k, members) in groups.iter().enumerate() {
            for i in members {
                g[*i] = k as u32;
            }
        }
        self.groups = Some(g);
    }

    /// Heals every partition.
    pub fn heal(&mut self) {
        self.groups = None;
    }

    /// Node `i`, if running.
    pub fn node(&self, i: usize) -> Option<&Swim> {
        self.nodes.get(i).and_then(Option::as_ref)
    }

    /// Indices of the running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// Total bytes sent by every node so far (headers included).
    pub fn bytes_sent(&self) -> Vec<u64> {
        self.sent.iter().map(|s| s.0).collect()
    }

    fn push(&mut self, at: Duration, what: What) {
        self.seq += 1;
        self.queue.push(Event {
            at,
            seq: self.seq,
            what,
        });
    }

    fn chance(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn flush(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        let out = node.take_outbox();
        let from = addr(i);
        for (after, timer) in out.timers {
            let life = self.life[i];
            self.push(
                self.now + after,
                What::Timer {
                    node: i,
                    life,
                    timer,
                },
            );
        }
        for (to, data) in out.sends {
            self.sent[i].0 += data.len() as u64 + IP_UDP_HEADERS;
            self.sent[i].1 += 1;
            let Some(&j) = self.by_addr.get(&to) else {
                continue;
            };
            if self.groups.as_ref().is_some_and(|g| g[i] != g[j]) {
                continue;
            }
            if self.net.loss > 0.0 && self.chance() < self.net.loss {
                continue;
            }
            let span = self.net.latency_max.saturating_sub(self.net.latency_min);
            let latency = self.net.latency_min + span.mul_f64(self.chance());
            self.push(self.now + latency, What::Deliver { to: j, from, data });
        }
    }

    /// Runs every event up to `until` (virtual time).
    pub fn run_until(&mut self, until: Duration) {
        let mut events: u64 = 0;
        while self.queue.peek().is_some_and(|e| e.at <= until) {
            events += 1;
            if events.is_multiple_of(4096) && (self.stop)() {
                self.queue.clear();
                break;
            }
            let Some(e) = self.queue.pop() else { break };
            self.now = e.at;
            match e.what {
                What::Deliver { to, from, data } => {
                    if let Some(n) = self.nodes[to].as_mut() {
                        n.handle_datagram(from, &data);
                        self.flush(to);
                    }
                }
                What::Timer { node, life, timer } => {
                    if self.life[node] != life {
                        continue;
                    }
                    if let Some(n) = self.nodes[node].as_mut() {
                        n.handle_timer(timer);
                        self.flush(node);
                    }
                }
            }
        }
        self.now = until;
    }

    /// Runs for `d`.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Runs until `cond` holds (checked every [`POLL`]), at most `limit`;
    /// returns the time it took, `None` if it never held.
    pub fn wait(
        &mut self,
        limit: Duration,
        mut cond: impl FnMut(&Self) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        loop {
            if cond(self) {
                return Some(self.now - start);
            }
            if self.now - start >= limit {
                return None;
            }
            self.run_for(POLL);
        }
    }

    /// Running nodes that know node `j`'s current record.
    pub fn knowing(&self, j: usize) -> usize {
        let Some(want) = self.node(j).map(|n| n.record().clone()) else {
            return 0;
        };
        self.nodes
            .iter()
            .flatten()
            .filter(|n| {
                n.record_of(&want.name)
                    .is_some_and(|r| (r.generation, r.seq) >= (want.generation, want.seq))
            })
            .count()
    }

    /// Running nodes (other than `j`) that still hold node `j`'s address live.
    pub fn holding_live(&self, j: usize) -> usize {
        let a = addr(j);
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != j && n.as_ref().is_some_and(|n| n.is_addr_live(a)))
            .count()
    }

    /// Whether every running node knows `count` records.
    pub fn all_know(&self, count: usize) -> bool {
        self.nodes.iter().flatten().all(|n| n.known() >= count)
    }

    /// Whether every running node holds every other running node live.
    pub fn all_live(&self) -> bool {
        let running = self.nodes.iter().flatten().count();
        self.nodes
            .iter()
            .flatten()
            .all(|n| n.live_members() + 1 >= running)
    }

    /// Members declared down, summed over the running nodes.
    pub fn downs(&self) -> u64 {
        self.nodes
            .iter()
            .flatten()
            .map(|n| n.stats().members_down)
            .sum()
    }

    /// Datagrams rejected (authentication, foreign, undecodable), summed.
    pub fn rejected(&self) -> u64 {
        self.nodes
            .iter()
            .flatten()
            .map(|n| {
                let s = n.stats();
                s.rejected + s.foreign + s.undecodable
            })
            .sum()
    }
}

/// Bytes per second per node over a window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bandwidth {
    /// Mean over the nodes.
    pub mean: f64,
    /// The busiest node.
    pub max: f64,
    /// 99th percentile over the nodes.
    pub p99: f64,
}

fn bandwidth(before: &[u64], after: &[u64], nodes: &[usize], d: Duration) -> Bandwidth {
    let mut rates: Vec<f64> = nodes
        .iter()
        .map(|i| (after[*i] - before[*i]) as f64 / d.as_secs_f64())
        .collect();
    if rates.is_empty() {
        return Bandwidth::default();
    }
    rates.sort_by(f64::total_cmp);
    let p99 = rates[(rates.len() * 99 / 100).min(rates.len() - 1)];
    Bandwidth {
        mean: rates.iter().sum::<f64>() / rates.len() as f64,
        max: rates[rates.len() - 1],
        p99,
    }
}

/// Cold start: `nodes` started at random times within `window` (the seeds
/// first); time from the first start until every node knows every record
/// and holds every node alive (what its routes need: the view routes only
/// to live members).
pub fn cold_start(sim: &mut SwimSim, nodes: usize, window: Duration) -> Option<Duration> {
    let mut starts: Vec<(Duration, usize)> = (0..nodes)
        .map(|i| {
            let at = if i < SEEDS {
                Duration::ZERO
            } else {
                window.mul_f64((sim.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
            };
            (at, i)
        })
        .collect();
    starts.sort();
    let t0 = sim.now();
    for (at, i) in starts {
        sim.run_until(t0 + at);
        sim.spawn(i);
    }
    let mut last = Duration::ZERO;
    sim.wait(WAIT_LIMIT, |s| {
        if std::env::var_os("SWIM_TRACE").is_some() && s.now() >= last + Duration::from_secs(2) {
            last = s.now();
            let k: Vec<usize> = s.nodes.iter().flatten().map(|n| n.known()).collect();
            let full = k.iter().filter(|x| **x >= nodes).count();
            let min = k.iter().min().copied().unwrap_or(0);
            let syncs: u64 = s
                .nodes
                .iter()
                .flatten()
                .map(|n| n.stats().synced_records)
                .sum();
            eprintln!(
                "t={:?} min known {min} full {full}/{} synced {syncs}",
                s.now() - t0,
                k.len()
            );
        }
        s.all_know(nodes) && s.all_live()
    })
    .map(|_| sim.now() - t0)
}

/// A steady window: bandwidth and members declared down during it.
#[derive(Clone, Copy, Debug)]
pub struct Steady {
    /// Length of the window.
    pub window: Duration,
    /// Datagram loss during it.
    pub loss: f64,
    /// Bytes per second per node.
    pub bandwidth: Bandwidth,
    /// Members declared down (none died: all false).
    pub false_downs: u64,
}

/// Runs `window` with nothing happening, at `loss`.
pub fn steady(sim: &mut SwimSim, window: Duration, loss: f64) -> Steady {
    let net = sim.net;
    sim.set_net(Net { loss, ..net });
    let nodes = sim.running();
    let (b0, d0) = (sim.bytes_sent(), sim.downs());
    sim.run_for(window);
    let bw = bandwidth(&b0, &sim.bytes_sent(), &nodes, window);
    let false_downs = sim.downs() - d0;
    sim.set_net(net);
    Steady {
        window,
        loss,
        bandwidth: bw,
        false_downs,
    }
}

/// A new node's record spreading.
#[derive(Clone, Copy, Debug)]
pub struct Join {
    /// Until 99.9 % of the running nodes know it.
    pub most: Option<Duration>,
    /// Until all do.
    pub all: Option<Duration>,
    /// Until the new node knows every record and holds every running node
    /// alive (its routes to all of them).
    pub joiner: Option<Duration>,
}

/// Starts node `i` and times its record reaching the others.
pub fn join(sim: &mut SwimSim, i: usize) -> Join {
    sim.spawn(i);
    let t0 = sim.now();
    let (mut most, mut all, mut joiner) = (None, None, None);
    sim.wait(WAIT_LIMIT, |s| {
        let n = s.running().len();
        let k = s.knowing(i);
        if most.is_none() && k as f64 >= 0.999 * n as f64 {
            most = Some(s.now() - t0);
        }
        if all.is_none() && k == n {
            all = Some(s.now() - t0);
        }
        if joiner.is_none()
            && s.node(i)
                .is_some_and(|me| me.known() >= n && me.live_members() + 1 >= n)
        {
            joiner = Some(s.now() - t0);
        }
        all.is_some() && joiner.is_some()
    });
    Join { most, all, joiner }
}

/// Kills node `i` and times its death being declared everywhere.
pub fn death(sim: &mut SwimSim, i: usize) -> Option<Duration> {
    sim.kill(i);
    sim.wait(WAIT_LIMIT, |s| s.holding_live(i) == 0)
}

/// Deaths one after another: `count` running nodes (never a seed, picked
/// at random) killed each once the previous one is declared dead
/// everywhere and 5 s have passed; the time of each. One death is one
/// draw of a random wait (until some node first probes the dead one), so
/// a bound on death detection is only as good as the number of draws.
pub fn deaths(sim: &mut SwimSim, count: usize) -> Deaths {
    let mut victims: Vec<usize> = sim.running().into_iter().filter(|i| *i >= SEEDS).collect();
    sim.rng.shuffle(&mut victims);
    let times = victims
        .into_iter()
        .take(count)
        .map(|v| {
            let d = death(sim, v);
            sim.run_for(Duration::from_secs(5));
            d
        })
        .collect();
    Deaths { times }
}

/// Times of deaths declared everywhere (see [`deaths`]).
#[derive(Clone, Debug, Default)]
pub struct Deaths {
    /// Per death, in order; `None` if it was never declared.
    pub times: Vec<Option<Duration>>,
}

impl Deaths {
    /// The slowest, `None` if any was never declared (or none measured).
    pub fn max(&self) -> Option<Duration> {
        let times: Option<Vec<Duration>> = self.times.iter().copied().collect();
        times?.into_iter().max()
    }

    /// The median of the declared ones.
    pub fn median(&self) -> Option<Duration> {
        let mut t: Vec<Duration> = self.times.iter().flatten().copied().collect();
        t.sort();
        t.get(t.len() / 2).copied()
    }
}

/// Churn: joins and deaths at the given rates per minute for `window`.
#[derive(Clone, Copy, Debug)]
pub struct Churn {
    /// Length of the window.
    pub window: Duration,
    /// Joins during it.
    pub joins: usize,
    /// Deaths during it.
    pub deaths: usize,
    /// Bytes per second per node (nodes running throughout).
    pub bandwidth: Bandwidth,
}

/// Kills running nodes (never a seed) and starts spare ones (indices from
/// `spare`), `per_minute` of each, evenly spread over `window`.
pub fn churn(sim: &mut SwimSim, window: Duration, per_minute: usize, spare: usize) -> Churn {
    let events = (per_minute as f64 * window.as_secs_f64() / 60.0).round() as usize;
    let step = window / u32::try_from(events.max(1)).unwrap_or(1);
    let steady: Vec<usize> = sim.running();
    let b0 = sim.bytes_sent();
    let t0 = sim.now();
    let mut victims: Vec<usize> = steady.iter().copied().filter(|i| *i >= SEEDS).collect();
    sim.rng.shuffle(&mut victims);
    let victims: Vec<usize> = victims.into_iter().take(events).collect();
    for (k, victim) in victims.iter().enumerate() {
        sim.run_until(t0 + step * u32::try_from(k).unwrap_or(0));
        sim.kill(*victim);
        sim.spawn(spare + k);
    }
    sim.run_until(t0 + window);
    let survivors: Vec<usize> = steady
        .into_iter()
        .filter(|i| !victims.contains(i))
        .collect();
    Churn {
        window,
        joins: victims.len(),
        deaths: victims.len(),
        bandwidth: bandwidth(&b0, &sim.bytes_sent(), &survivors, window),
    }
}

/// CPU seconds (user + system) of this process so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Current and peak resident memory of this process, in MB.
pub fn rss_mb() -> (f64, f64) {
    process_rss_mb("self")
}

/// Current and peak resident memory (`VmRSS`, `VmHWM`) of process `pid`
/// (a number, or `self`), in MB; zeros if it cannot be read.
pub fn process_rss_mb(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Every figure of one run at one size.
#[derive(Clone, Debug)]
pub struct Report {
    /// Nodes.
    pub nodes: usize,
    /// Start window of the cold start.
    pub window: Duration,
    /// Cold start: all know all records, from the first start.
    pub cold_start: Option<Duration>,
    /// A new node's record.
    pub join: Join,
    /// Deaths declared everywhere.
    pub deaths: Deaths,
    /// Idle steady state.
    pub idle: Steady,
    /// Steady state with loss.
    pub lossy: Steady,
    /// Churn.
    pub churn: Churn,
    /// Process memory after the run (current, peak), MB.
    pub rss_mb: (f64, f64),
    /// CPU seconds of the run.
    pub cpu_s: f64,
    /// Wall-clock seconds of the run.
    pub wall_s: f64,
    /// Datagrams rejected over the run (should be 0).
    pub rejected: u64,
}

/// Options of [`run_all`].
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Nodes of the cluster.
    pub nodes: usize,
    /// Cold-start window.
    pub window: Duration,
    /// Idle window.
    pub idle: Duration,
    /// Lossy window and its loss.
    pub lossy: Duration,
    /// Loss of the lossy window.
    pub loss: f64,
    /// Churn window (10 joins and 10 deaths per minute).
    pub churn: Duration,
    /// Deaths timed one by one (see [`deaths`]).
    pub deaths: usize,
    /// Seed.
    pub seed: u64,
    /// Stops the run early when it says so (the bench's Ctrl-C).
    pub stop: fn() -> bool,
}

impl Plan {
    /// The targets at `nodes`: a 30 s start window, 10 minutes of
    /// idle steady state, 10 minutes at 1 % loss, 2 minutes of churn.
    pub fn targets(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            window: Duration::from_secs(30),
            idle: Duration::from_secs(600),
            lossy: Duration::from_secs(600),
            loss: 0.01,
            churn: Duration::from_secs(120),
            deaths: 20,
            seed,
            stop: || false,
        }
    }
}

/// Cold start, a join, a death, idle, lossy steady state, churn; in that
/// order on one cluster.
pub fn run_all(p: Plan) -> Report {
    let (cpu0, wall0) = (cpu_seconds(), std::time::Instant::now());
    let churn_events = (10.0 * p.churn.as_secs_f64() / 60.0).ceil() as usize;
    // The cluster must stay well above its deaths.
    assert!(
        p.deaths * 4 <= p.nodes,
        "{} deaths of {} nodes",
        p.deaths,
        p.nodes
    );
    let mut sim = SwimSim::new(p.nodes + 1 + churn_events, Net::default(), p.seed);
    sim.stop = p.stop;
    let cold = cold_start(&mut sim, p.nodes, p.window);
    // Let the start-up broadcasts and the fast push-pull exchanges that
    // follow a join (SYNC_BURST_ROUNDS x 2 s) end before measuring the
    // steady state.
    sim.run_for(Duration::from_secs(30));
    let idle = steady(&mut sim, p.idle, 0.0);
    let j = join(&mut sim, p.nodes);
    let d = deaths(&mut sim, p.deaths);
    sim.run_for(Duration::from_secs(5));
    let lossy = steady(&mut sim, p.lossy, p.loss);
    let churn = churn(&mut sim, p.churn, 10, p.nodes + 1);
    Report {
        nodes: p.nodes,
        window: p.window,
        cold_start: cold,
        join: j,
        deaths: d,
        idle,
        lossy,
        churn,
        rss_mb: rss_mb(),
        cpu_s: cpu_seconds() - cpu0,
        wall_s: wall0.elapsed().as_secs_f64(),
        rejected: sim.rejected(),
    }
}

fn s(d: Option<Duration>) -> String {
    d.map_or_else(
        || format!("NOT REACHED within {} s", WAIT_LIMIT.as_secs()),
        |d| format!("{:.1} s", d.as_secs_f64()),
    )
}

fn kb(b: Bandwidth) -> String {
    format!(
        "mean {:.2} KB/s, p99 {:.2}, max {:.2}",
        b.mean / 1000.0,
        b.p99 / 1000.0,
        b.max / 1000.0
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "SWIM gossip, {} nodes (virtual time; bandwidth incl. IP/UDP headers)",
            self.nodes
        )?;
        writeln!(
            f,
            "  cold start (started within {} s): every node knows every record and holds every node alive after {} (target 5000: 60 s, 1000: 20 s)",
            self.window.as_secs(),
            s(self.cold_start)
        )?;
        writeln!(
            f,
            "  new node's record: 99.9 % after {}, all after {} (target 3 s / 5 s); the new node knows and holds every node alive after {}",
            s(self.join.most),
            s(self.join.all),
            s(self.join.joiner)
        )?;
        writeln!(
            f,
            "  {} deaths declared everywhere after: median {}, max {} (target 6 s)",
            self.deaths.times.len(),
            s(self.deaths.median()),
            s(self.deaths.max())
        )?;
        let mut each = self.deaths.times.clone();
        each.sort_by_key(|t| t.unwrap_or(Duration::MAX));
        let each: Vec<String> = each.into_iter().map(s).collect();
        writeln!(f, "    each (sorted): {}", each.join(", "))?;
        writeln!(
            f,
            "  idle {} s: {} (target 1 KB/s); false deaths {}",
            self.idle.window.as_secs(),
            kb(self.idle.bandwidth),
            self.idle.false_downs
        )?;
        writeln!(
            f,
            "  {:.1} % loss {} s: {}; false deaths {} (target 0)",
            self.lossy.loss * 100.0,
            self.lossy.window.as_secs(),
            kb(self.lossy.bandwidth),
            self.lossy.false_downs
        )?;
        writeln!(
            f,
            "  churn {} joins + {} deaths in {} s: {} (target 30 KB/s)",
            self.churn.joins,
            self.churn.deaths,
            self.churn.window.as_secs(),
            kb(self.churn.bandwidth)
        )?;
        writeln!(
            f,
            "  run: {:.0} s CPU, {:.0} s wall, RSS {:.0} MB (peak {:.0} MB, {:.2} MB per simulated node), {} datagrams rejected",
            self.cpu_s,
            self.wall_s,
            self.rss_mb.0,
            self.rss_mb.1,
            self.rss_mb.1 / self.nodes as f64,
            self.rejected
        )
    }
}

/// The claim rule over the SWIM layer: every node runs the agent's
/// [`Claimer`] on the view its [`Swim`] node builds, once a second, and
/// publishes its claims in its record, as the agent would.
pub struct Claims {
    claimers: Vec<Option<Claimer>>,
    /// Nodes told they have no free address (they claim block after block).
    pub starved: Vec<bool>,
    base: tokio::time::Instant,
}

/// Settle period of the claim scenarios (half the agent's default).
pub const SETTLE: Duration = Duration::from_secs(15);

impl Claims {
    /// No claimer yet for a cluster of `capacity` nodes.
    pub fn new(capacity: usize) -> Self {
        Self {
            claimers: (0..capacity).map(|_| None).collect(),
            starved: vec![false; capacity],
            base: tokio::time::Instant::now(),
        }
    }

    /// Starts node `i` with no claim, and its claimer.
    pub fn spawn(&mut self, sim: &mut SwimSim, i: usize) {
        sim.spawn_with(i, |r| r.claims.clear());
        let Some(node) = sim.node(i) else { return };
        let r = node.record();
        let config = ClaimConfig {
            range: "10.32.0.0/12".parse().expect("cluster range"),
            block_prefix: 24,
            settle: SETTLE,
            low_water: 1,
            must_join: true,
        };
        self.claimers[i] = Some(Claimer::new(&r.name, r.generation, config, BTreeMap::new()));
    }

    /// Runs `d`, ticking every claimer once a second.
    pub fn run_for(&mut self, sim: &mut SwimSim, d: Duration) {
        let end = sim.now() + d;
        while sim.now() < end {
            sim.run_for(Duration::from_secs(1).min(end - sim.now()));
            for i in 0..self.claimers.len() {
                let (Some(claimer), Some(node)) =
                    (self.claimers[i].as_mut(), sim.nodes[i].as_mut())
                else {
                    continue;
                };
                let view = node.view();
                let free = Some(if self.starved[i] { 0 } else { 1000 });
                claimer.tick(self.base + sim.now, &view, free);
                let claims: Vec<_> = claimer.published().into_iter().collect();
                let forgets: Vec<_> = view.forgotten.into_iter().collect();
                node.update(|r| {
                    r.claims = claims;
                    r.forgets = forgets;
                })
                .expect("publishing claims");
                sim.flush(i);
            }
        }
    }

    /// Blocks each running node holds settled (by its own claimer).
    pub fn settled(&self, sim: &SwimSim) -> BTreeMap<usize, Vec<ipnet::Ipv4Net>> {
        sim.running()
            .into_iter()
            .filter_map(|i| {
                let c = self.claimers[i].as_ref()?;
                Some((i, c.settled().keys().copied().collect()))
            })
            .collect()
    }

    /// Blocks settled on more than one node: must stay empty.
    pub fn duplicates(&self, sim: &SwimSim) -> Vec<ipnet::Ipv4Net> {
        let mut seen: BTreeMap<ipnet::Ipv4Net, usize> = BTreeMap::new();
        for blocks in self.settled(sim).values() {
            for b in blocks {
                *seen.entry(*b).or_default() += 1;
            }
        }
        seen.into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(b, _)| b)
            .collect()
    }

    /// Whether every running node's view names the same settled owners.
    pub fn views_agree(sim: &SwimSim) -> bool {
        let mut owners = sim
            .nodes
            .iter()
            .flatten()
            .map(|n| n.view().settled_owners());
        let Some(first) = owners.next() else {
            return true;
        };
        owners.all(|o| o == first)
    }
}

/// What the partition scenario over the claim rule found.
#[derive(Clone, Debug)]
pub struct ClaimPartition {
    /// Nodes.
    pub nodes: usize,
    /// Nodes on the minority side.
    pub minority: usize,
    /// Blocks settled on more than one node, at any check: must be empty.
    pub duplicates: Vec<ipnet::Ipv4Net>,
    /// Blocks settled by minority nodes during the cut: must be 0.
    pub settled_minority: usize,
    /// Blocks settled by majority nodes during the cut.
    pub settled_majority: usize,
    /// After the heal: every node holds every other alive again.
    pub healed: Option<Duration>,
    /// After the heal: every view names the same owners.
    pub views_agree: bool,
    /// Each node settled exactly one block at formation.
    pub formed: bool,
}

/// Forms `nodes` with the claim rule (one block each), cuts off `cut`
/// random nodes with a tenth of each side (at least one node) starved for
/// addresses for 60 s, heals, and checks one owner per block.
pub fn claim_partition(nodes: usize, cut: usize, seed: u64) -> ClaimPartition {
    let mut sim = SwimSim::new(nodes, Net::default(), seed);
    let mut claims = Claims::new(nodes);
    for i in 0..nodes {
        claims.spawn(&mut sim, i);
        sim.run_for(Duration::from_millis(10));
    }
    claims.run_for(&mut sim, SETTLE * 3);
    let at_formation = claims.settled(&sim);
    let formed = at_formation.len() == nodes && at_formation.values().all(|b| b.len() == 1);
    let mut duplicates = claims.duplicates(&sim);

    let mut order: Vec<usize> = (0..nodes).collect();
    sim.rng.shuffle(&mut order);
    let minority: Vec<usize> = order[..cut].to_vec();
    let majority: Vec<usize> = order[cut..].to_vec();
    for side in [&minority, &majority] {
        for i in side.iter().take(side.len().div_ceil(10)) {
            claims.starved[*i] = true;
        }
    }
    sim.partition(&[majority.clone(), minority.clone()]);
    claims.run_for(&mut sim, SETTLE * 4);
    let during = claims.settled(&sim);
    let grew = |side: &[usize]| {
        side.iter()
            .map(|i| during[i].len().saturating_sub(at_formation[i].len()))
            .sum::<usize>()
    };
    let settled_minority = grew(&minority);
    let settled_majority = grew(&majority);
    duplicates.extend(claims.duplicates(&sim));

    claims.starved.iter_mut().for_each(|s| *s = false);
    sim.heal();
    let t0 = sim.now();
    let mut healed = None;
    let limit = sim.now() + WAIT_LIMIT;
    while sim.now() < limit {
        claims.run_for(&mut sim, Duration::from_secs(1));
        if sim.all_live() {
            healed = Some(sim.now() - t0);
            break;
        }
    }
    claims.run_for(&mut sim, SETTLE * 2);
    duplicates.extend(claims.duplicates(&sim));
    duplicates.sort();
    duplicates.dedup();
    ClaimPartition {
        nodes,
        minority: minority.len(),
        duplicates,
        settled_minority,
        settled_majority,
        healed,
        views_agree: Claims::views_agree(&sim),
        formed,
    }
}

impl fmt::Display for ClaimPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "claim rule over SWIM, {} nodes, {} cut off for 60 s",
            self.nodes, self.minority
        )?;
        writeln!(
            f,
            "  formation: one settled block per node: {}",
            self.formed
        )?;
        writeln!(
            f,
            "  during the cut: {} blocks settled on the majority side, {} on the minority side (must be 0)",
            self.settled_majority, self.settled_minority
        )?;
        writeln!(f, "  heal: everyone alive again after {}", s(self.healed))?;
        writeln!(
            f,
            "  blocks settled twice: {:?} (must be none); views agree: {}",
            self.duplicates, self.views_agree
        )
    }
}
