//! A swarm of SWIM nodes for one real agent to join: what the agent process
//! costs (memory, time to route everyone) at thousands of peers.
//!
//! The swarm's nodes are the agent's own gossip code ([`Swim`] driven by
//! [`SwimUdp`]), all in one process on two threads of their own, inside a
//! namespace the test created: one address, one UDP port per node. Each
//! publishes a record with a settled block of the cluster range and an
//! underlay address of its own from [`SWARM_UNDERLAY`], which the agent's
//! namespace routes to the swarm's, where nothing answers or forwards:
//! nothing leaves the namespaces of the test.
//!
//! The swarm forms around its node 0 (bound to the agent's gossip port, so
//! that the agent's seed list reaches it), which knows every node; then the
//! agent joins as a real node would join a formed cluster. The other swarm
//! nodes know little but node 0 and the agent: they probe every
//! [`SWARM_PROBE_PERIOD`] rather than every 500 ms and start no push-pull
//! exchange. They stand in for the rest of a cluster, whose own failure
//! detection is not what is measured, and one process cannot run thousands
//! of full-rate detectors in real time on this machine. This is harder on
//! the agent than a real cluster, not easier: each exchange it starts with
//! a swarm node finds every bucket different and sends it every record and
//! member.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ipnet::Ipv4Net;
use overlay_agent::gossip::{
    DEFAULT_GOSSIP_PORT,
    auth::{Key, WireCounters},
    swim::{NodeRecord, SharedRecords, Swim, SwimConfig, udp::SwimUdp},
    view::{Claim, ClaimState},
};

use crate::{Netns, rogue::CLUSTER_NAME, swim_sim::process_rss_mb};

/// Underlay addresses the swarm's records publish (node `k`: the
/// `k`-th address of this /16); routed into the swarm's namespace.
pub const SWARM_UNDERLAY: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(172, 30, 0, 0), 16) {
    Ok(n) => n,
    Err(_) => panic!("valid prefix"),
};
/// Gossip port of swarm node `k > 0` is this plus `k`.
const FIRST_PORT: u16 = 20_000;
/// Probe period of a swarm node but node 0.
pub const SWARM_PROBE_PERIOD: Duration = Duration::from_secs(120);
/// Push-pull period of a swarm node but node 0: never, in practice.
const SWARM_NO_SYNC: Duration = Duration::from_secs(24 * 3600);
/// Prefix length of the swarm's blocks (the agent must run with
/// `--block-size` this, so that thousands fit the lab's /12).
pub const SWARM_BLOCK_PREFIX: u8 = 26;

/// How a swarm is set up.
#[derive(Clone, Debug)]
pub struct SwarmConfig {
    /// Nodes of the swarm.
    pub nodes: usize,
    /// The swarm namespace's address (node 0 gossips on it at the default
    /// gossip port, node `k` at `FIRST_PORT + k`).
    pub ip: Ipv4Addr,
    /// Password of the cluster (`None`: unauthenticated).
    pub password: Option<String>,
    /// Cluster range: node `k` owns its `k + 1`-th block of
    /// [`SWARM_BLOCK_PREFIX`] (the first is left to the agent).
    pub range: Ipv4Net,
    /// Nodes started per second.
    pub join_rate: usize,
}

/// The underlay address swarm node `k` publishes.
pub fn underlay_ip(k: usize) -> Ipv4Addr {
    let base = u32::from(SWARM_UNDERLAY.addr());
    Ipv4Addr::from(base + 1 + u32::try_from(k).expect("swarm size fits u32"))
}

/// The block swarm node `k` owns.
pub fn block(range: Ipv4Net, k: usize) -> Ipv4Net {
    let size = 1u32 << (32 - SWARM_BLOCK_PREFIX);
    let addr = u32::from(range.addr()) + size * (u32::try_from(k).expect("fits u32") + 1);
    Ipv4Net::new(Ipv4Addr::from(addr), SWARM_BLOCK_PREFIX).expect("valid block")
}

/// What the swarm's node 0 knows, refreshed ten times a second.
#[derive(Debug, Default)]
struct SeedView {
    records: AtomicUsize,
    live: AtomicUsize,
}

/// A running swarm.
pub struct Swarm {
    stop: Arc<AtomicBool>,
    started: Arc<AtomicUsize>,
    seed: Arc<SeedView>,
    thread: Option<JoinHandle<()>>,
}

impl Swarm {
    /// Starts the swarm in `netns`, `join_rate` nodes a second; returns at
    /// once (see [`Swarm::started`]). Panics if a socket cannot be bound.
    pub fn start(netns: &Netns, config: SwarmConfig) -> Self {
        assert!(
            config.nodes < (1 << (32 - SWARM_UNDERLAY.prefix_len())) - 2,
            "swarm larger than its underlay range"
        );
        let path: PathBuf = netns.path();
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        let seed = Arc::new(SeedView::default());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let thread = {
            let (stop, started, seed) = (stop.clone(), started.clone(), seed.clone());
            std::thread::spawn(move || {
                overlay_agent::netns::run_in(&path, move || {
                    // Two workers: a node busy with a large exchange must not
                    // hold up the others' answers to the agent's probes
                    // (threads a worker starts inherit this namespace).
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .expect("tokio runtime for the swarm");
                    rt.block_on(run(config, stop, started, seed, ready_tx));
                })
                .expect("entering the swarm namespace");
            })
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("swarm did not start: {e}"),
            Err(e) => panic!("swarm did not report its start within 10 s: {e}"),
        }
        Self {
            stop,
            started,
            seed,
            thread: Some(thread),
        }
    }

    /// Nodes started so far.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::Relaxed)
    }

    /// Records known to node 0 (its own included) and members it holds
    /// alive (itself excluded).
    pub fn seed_knows(&self) -> (usize, usize) {
        (
            self.seed.records.load(Ordering::Relaxed),
            self.seed.live.load(Ordering::Relaxed),
        )
    }

    /// Stops every node and joins the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.halt();
    }
}

async fn run(
    config: SwarmConfig,
    stop: Arc<AtomicBool>,
    started: Arc<AtomicUsize>,
    seed_view: Arc<SeedView>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let key = config
        .password
        .as_ref()
        .map(|p| Key::derive(p.as_bytes(), CLUSTER_NAME));
    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    let shared = Arc::new(SharedRecords::default());
    let mut ready = Some(ready);
    let tick = Duration::from_secs(1) / u32::try_from(config.join_rate.max(1)).unwrap_or(1);
    let addr_of = |k: usize| {
        let port = if k == 0 {
            DEFAULT_GOSSIP_PORT
        } else {
            FIRST_PORT + u16::try_from(k).expect("swarm size fits the port range")
        };
        SocketAddrV4::new(config.ip, port)
    };
    // Node 0 last, seeded with every other: it announces itself to each and
    // so learns them all, while they learn only of it. (Had each joined
    // through node 0, each would have been sent every record and member
    // known so far: cubic work for the swarm in one process.)
    let mut others: Vec<SwimUdp> = Vec::with_capacity(config.nodes);
    let mut node0: Option<SwimUdp> = None;
    for k in (1..config.nodes).chain([0]) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let addr = addr_of(k);
        let socket = match tokio::net::UdpSocket::bind(addr).await {
            Ok(s) => s,
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(format!("binding {addr}: {e}")));
                }
                return;
            }
        };
        let record = NodeRecord {
            name: format!("swarm-{k}"),
            generation,
            seq: 0,
            gossip_addr: addr,
            ip: underlay_ip(k),
            vxlan_port: 4789,
            version: "swarm".into(),
            stopping: false,
            claims: vec![(
                block(config.range, k),
                Claim {
                    state: ClaimState::Settled,
                    origin: generation,
                },
            )],
            forgets: Vec::new(),
        };
        let seeds = if k == 0 {
            (1..config.nodes).map(addr_of).collect()
        } else {
            Vec::new()
        };
        let mut c = SwimConfig::new(record, seeds, config.nodes as u32 + 1);
        c.key = key.clone();
        c.cluster = CLUSTER_NAME.to_owned();
        c.shared = Some(shared.clone());
        if k > 0 {
            // Stand-ins: they answer probes and spread their record, probe
            // rarely, and never start a push-pull exchange (knowing only
            // themselves, each exchange they started would make the other
            // side send them everything).
            c.probe_period = SWARM_PROBE_PERIOD;
            c.gossip_interval = Duration::from_millis(500);
            c.sync_interval = SWARM_NO_SYNC;
            c.sync_burst_interval = SWARM_NO_SYNC;
        }
        let swim = Swim::new(c).expect("valid swarm config");
        let node = SwimUdp::spawn(swim, socket, Arc::new(WireCounters::default()))
            .expect("starting a swarm node");
        started.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = ready.take() {
            let _ = r.send(Ok(()));
        }
        if k == 0 {
            node0 = Some(node);
        } else {
            others.push(node);
            tokio::time::sleep(tick).await;
        }
    }
    if let Some(r) = ready.take() {
        let _ = r.send(Err("no node started".into()));
    }
    while !stop.load(Ordering::Relaxed) {
        if let Some(n) = &node0 {
            publish(n, &seed_view);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in others.iter().chain(&node0) {
        n.shutdown();
    }
}

fn publish(node: &SwimUdp, view: &SeedView) {
    let n = node.lock();
    view.records.store(n.known(), Ordering::Relaxed);
    view.live.store(n.live_members(), Ordering::Relaxed);
}

/// One agent among a swarm: what [`agent_among`] measured.
#[derive(Clone, Debug)]
pub struct AgentAmong {
    /// Cluster size (the agent and `peers - 1` swarm nodes).
    pub peers: usize,
    /// Until the swarm's node 0 knew and held alive every swarm node.
    pub swarm_formed: Duration,
    /// From the agent's start until its status showed every member alive,
    /// a route to every swarm block and every swarm node as a datapath
    /// peer.
    pub routed_all: Duration,
    /// The agent's resident memory over the steady window: the largest
    /// sample, MB.
    pub rss_mb: f64,
    /// The agent's peak resident memory since it started (`VmHWM`), MB.
    pub peak_rss_mb: f64,
    /// Routes in the agent's datapath at the end.
    pub routes: u64,
    /// Members the agent held alive at the end (itself included).
    pub live: u64,
    /// Swarm nodes the agent declared dead (none died). A stand-in that
    /// misses the agent's direct and indirect probes cannot refute: the
    /// suspicion reaches it only through the agent, as the stand-ins do
    /// not gossip among themselves.
    pub false_deaths: usize,
    /// Length of the steady window.
    pub steady: Duration,
}

impl std::fmt::Display for AgentAmong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "agent among {} nodes (one real agent, {} swarm nodes): swarm formed in {:.1} s; \
             the agent held every member alive and routed every block {:.1} s after its start \
             ({} alive, {} routes at the end, {} swarm nodes declared dead though none died); \
             RSS over {} s of steady state: max {:.1} MB, peak since start {:.1} MB (target \
             100 MB at 5,000)",
            self.peers,
            self.peers - 1,
            self.swarm_formed.as_secs_f64(),
            self.routed_all.as_secs_f64(),
            self.live,
            self.routes,
            self.false_deaths,
            self.steady.as_secs(),
            self.rss_mb,
            self.peak_rss_mb
        )
    }
}

/// Runs a real agent (node 0 of a two-node lab) in a cluster of `peers`
/// nodes whose other `peers - 1` are a [`Swarm`] in node 1's namespace,
/// waits until the agent routes them all, then samples its memory for
/// `steady`. Panics (with the agent's log) when a stage takes longer than
/// `timeout`.
pub fn agent_among(peers: usize, steady: Duration, timeout: Duration) -> AgentAmong {
    use std::time::Instant;

    use crate::cluster::{Cluster, RANGE, Source};

    assert!(
        peers >= 2,
        "a cluster of the agent and at least one swarm node"
    );
    let mut c = Cluster::gossip_unstarted(2);
    c.extra_args = vec!["--block-size".into(), SWARM_BLOCK_PREFIX.to_string()];
    let swarm_host = c.lab.nodes[1].ip;
    c.lab.nodes[0].ns.ip(&[
        "route",
        "add",
        &SWARM_UNDERLAY.to_string(),
        "via",
        &swarm_host.to_string(),
    ]);
    let password = match &c.source {
        Source::Gossip {
            password_file: Some(p),
        } => Some(
            std::fs::read_to_string(p)
                .expect("lab password file")
                .trim_end()
                .to_owned(),
        ),
        _ => None,
    };
    let t0 = Instant::now();
    let swarm = Swarm::start(
        &c.lab.nodes[1].ns,
        SwarmConfig {
            nodes: peers - 1,
            ip: swarm_host,
            password,
            range: RANGE.parse().expect("lab range"),
            join_rate: 500,
        },
    );
    let deadline = t0 + timeout;
    loop {
        let (records, live) = swarm.seed_knows();
        if records >= peers - 1 && live + 2 >= peers - 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the swarm did not form within {timeout:?}: {} started, node 0 knows {records} \
             records and holds {live} alive",
            swarm.started()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let swarm_formed = t0.elapsed();
    let t1 = Instant::now();
    c.spawn_agent(0);
    let deadline = t1 + timeout;
    let (mut live, mut routes);
    loop {
        // From the start on (its status answers before it is ready), once
        // a second: a status at thousands of peers is work for the agent.
        std::thread::sleep(Duration::from_secs(1));
        let out = c.agent_cli(0, &["status", "--json"]);
        let s: serde_json::Value = if out.status.success() {
            serde_json::from_slice(&out.stdout).unwrap_or_default()
        } else {
            serde_json::Value::Null
        };
        live = s["gossip"]["live"].as_u64().unwrap_or(0);
        routes = s["datapath"]["routes"].as_u64().unwrap_or(0);
        let datapath_peers = s["datapath"]["peers"].as_array().map_or(0, Vec::len);
        if live == peers as u64 && routes + 1 >= peers as u64 && datapath_peers + 1 == peers {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not route the swarm within {timeout:?}: {live} alive, {routes} \
             routes, {datapath_peers} datapath peers; gossip {}; UDP of the agent's \
             namespace: {}; of the swarm's: {}; {}",
            s["gossip"]["wire"],
            udp_counters(&c.lab.nodes[0].ns),
            udp_counters(&c.lab.nodes[1].ns),
            joins_summary(&c.log(0))
        );
    }
    let routed_all = t1.elapsed();
    c.wait_ready(0, timeout);
    let pid = c.agent_pid(0).expect("the agent runs");
    let end = Instant::now() + steady;
    let mut rss_mb: f64 = 0.0;
    while Instant::now() < end {
        rss_mb = rss_mb.max(process_rss_mb(&pid.to_string()).0);
        std::thread::sleep(Duration::from_millis(500));
    }
    let s = c.status(0);
    live = s["gossip"]["live"].as_u64().unwrap_or(0);
    routes = s["datapath"]["routes"].as_u64().unwrap_or(0);
    let peak_rss_mb = process_rss_mb(&pid.to_string()).1;
    let false_deaths = c.log(0).matches("declared dead").count();
    c.kill_agent(0);
    swarm.stop();
    AgentAmong {
        peers,
        swarm_formed,
        routed_all,
        rss_mb,
        peak_rss_mb,
        routes,
        live,
        false_deaths,
        steady,
    }
}

/// How many peers the agent's log says joined, per second of the log.
fn joins_summary(log: &str) -> String {
    let mut per_second: Vec<(String, usize)> = Vec::new();
    let mut dead = 0;
    let mut first_dead = String::new();
    for l in log.lines() {
        if l.contains("declared dead") {
            dead += 1;
            if first_dead.is_empty() {
                first_dead = l.get(11..19).unwrap_or("").to_owned();
            }
        }
        if !l.contains("peer joined") {
            continue;
        }
        let second = l.get(..19).unwrap_or("").to_owned();
        match per_second.last_mut() {
            Some((s, n)) if *s == second => *n += 1,
            _ => per_second.push((second, 1)),
        }
    }
    let joins: Vec<String> = per_second
        .iter()
        .map(|(s, n)| format!("{}: {n}", s.get(11..).unwrap_or(s)))
        .collect();
    format!(
        "{dead} declared dead (the first at {first_dead}); peers joined per second: {}",
        joins.join(", ")
    )
}

/// The UDP counters of a namespace that tell drops, on one line.
fn udp_counters(ns: &Netns) -> String {
    ns.exec(&[
        "nstat",
        "-az",
        "UdpInDatagrams",
        "UdpRcvbufErrors",
        "UdpInErrors",
        "UdpSndbufErrors",
    ])
    .lines()
    .filter(|l| l.starts_with("Udp"))
    .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
    .collect::<Vec<_>>()
    .join(", ")
}
