//! One gossiping node: runs the membership protocol (SWIM by default,
//! chitchat for clusters still on the previous release), publishes this
//! node and its claims, runs the claim rule every gossip interval, and
//! turns the cluster view into the [`Topology`] the agent applies to its
//! maps.
//!
//! The same code runs in the agent (over authenticated UDP) and in the
//! chitchat simulations (over chitchat's in-memory transport, many nodes in
//! one process, on tokio's paused clock). The claim rule, the view and
//! everything below them do not know which protocol carried the records.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, spawn_chitchat,
    transport::Transport,
};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tracing::{Instrument as _, error, info, info_span, warn};

use super::{
    auth::{Key, WireCounters, WireStats},
    claims::{ClaimConfig, Claimer, Event},
    remembered::{self, MEMBERS_FILE, Memory, Remembered},
    status::{BlockState, BlockStatus, ConflictStatus, GossipStatus, PeerState, PeerStatus},
    swim::{NodeRecord, Swim, SwimConfig, udp::SwimUdp},
    view::{
        Claim, KEY_IP, KEY_STOPPING, KEY_VERSION, KEY_VXLAN_PORT, PREFIX_FORGET, Record, Seen,
        View, block_key,
    },
};
use crate::{
    encryption::announce::Announce,
    topology::{Node, Topology},
};

/// Default gossip port (as Weave's).
pub const DEFAULT_GOSSIP_PORT: u16 = 6783;

/// Cluster size SWIM sizes its retransmissions for (the most Kubernetes
/// supports): a record reaches every node of a smaller cluster sooner.
pub const SWIM_CLUSTER_SIZE: u32 = 5_000;

/// Which membership protocol a node speaks (`--gossip-protocol`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// SWIM with suspicion (foca), record broadcasts and push-pull
    /// anti-entropy: constant-size messages, for clusters of thousands of
    /// nodes.
    #[default]
    Swim,
    /// chitchat, as the previous release: every message carries a digest
    /// of every node, so it stops working between about 800 and 1,450
    /// nodes. Only for a cluster whose other agents still run it.
    Chitchat,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Swim => "swim",
            Self::Chitchat => "chitchat",
        })
    }
}

/// How a node gossips.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Unique node name.
    pub node_name: String,
    /// Generation: must grow across restarts (start time in ms).
    pub generation: u64,
    /// Underlay address published to peers.
    pub node_ip: Ipv4Addr,
    /// VXLAN port published to peers.
    pub vxlan_port: u16,
    /// Address to bind and advertise.
    pub gossip_addr: SocketAddr,
    /// Seed peers (`ip:port`).
    pub seeds: Vec<String>,
    /// Cluster name: nodes with another one are refused.
    pub cluster_id: String,
    /// Gossip round interval.
    pub interval: Duration,
    /// Failure detector threshold (phi).
    pub phi_threshold: f64,
    /// The claim rule's knobs.
    pub claims: ClaimConfig,
    /// Where settled blocks persist (`None`: not persisted, simulations).
    pub state_file: Option<PathBuf>,
    /// Whether datagrams are authenticated (reported in the status).
    pub authenticated: bool,
    /// This node's WireGuard key and port, when it encrypts pod traffic.
    pub wireguard: Option<Announce>,
}

impl GossipConfig {
    /// The version string this node publishes (with its WireGuard
    /// announce, if any).
    pub fn published_version(&self) -> String {
        Announce::version_string(env!("CARGO_PKG_VERSION"), self.wireguard.as_ref())
    }
}

/// Free addresses in the given blocks (this node's usable ones), `None`
/// if unknown.
pub type FreeAddresses = Arc<dyn Fn(&[Ipv4Net]) -> Option<u64> + Send + Sync>;

/// Why gossip could not start.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// The block size does not fit the range.
    #[error("block size /{block_prefix} does not fit range {range} (need {}..=30)", range.prefix_len() + 1)]
    BlockSize {
        /// Range.
        range: Ipv4Net,
        /// Block prefix length.
        block_prefix: u8,
    },
    /// The node name is empty or has characters gossip keys cannot carry.
    #[error("node name {0:?} must be 1-253 characters of [A-Za-z0-9._-]")]
    NodeName(String),
    /// The blocks file could not be read or written.
    #[error("{action} {path}")]
    StateFile {
        /// Reading or writing.
        action: &'static str,
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The blocks file is not ours or is damaged.
    #[error(
        "{path} is damaged; it lists the blocks this node owns: restore it, or remove it only if this node holds no pods"
    )]
    StateCorrupt {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The protocol could not start (typically: the port is taken).
    #[error("starting gossip on {addr}")]
    Spawn {
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Why a `forget` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForgetError {
    /// A node cannot forget itself.
    #[error("{0} is this node; run forget on another node")]
    SelfNode(String),
    /// No such node was ever seen.
    #[error("no node named {0:?} is known to this node")]
    Unknown(String),
    /// The node is alive: forgetting it would create duplicate owners.
    #[error("{0} is alive; stop it (and wait until `status` shows it dead) before forgetting it")]
    Alive(String),
}

/// What a forget did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forgotten {
    /// The node.
    pub name: String,
    /// Highest generation forgotten.
    pub generation: u64,
    /// Blocks returned to the pool.
    pub blocks: Vec<Ipv4Net>,
}

/// The persisted blocks of a node.
#[derive(Serialize, Deserialize)]
struct BlocksFile {
    node: String,
    blocks: BTreeMap<Ipv4Net, u64>,
}

struct Shared {
    status: Mutex<GossipStatus>,
    rebuild: AtomicBool,
}

/// What carries a node's gossip.
enum Carrier {
    Chitchat(ChitchatHandle),
    Swim(Arc<SwimUdp>),
}

/// A running gossip node.
pub struct Gossip {
    carrier: Carrier,
    shared: Arc<Shared>,
    wire: Arc<WireCounters>,
    topology: watch::Receiver<Topology>,
    task: JoinHandle<()>,
    name: String,
    interval: Duration,
}

impl Gossip {
    /// Starts gossip over chitchat: loads the persisted blocks, joins
    /// through the seeds and runs the claim rule every interval.
    pub async fn spawn(
        config: GossipConfig,
        transport: &dyn Transport,
        free: FreeAddresses,
        wire: Arc<WireCounters>,
    ) -> Result<Self, GossipError> {
        let claimer = claimer(&config)?;
        let mut initial = vec![
            (KEY_IP.to_owned(), config.node_ip.to_string()),
            (KEY_VXLAN_PORT.to_owned(), config.vxlan_port.to_string()),
            (KEY_VERSION.to_owned(), config.published_version()),
        ];
        initial.extend(
            claimer
                .published()
                .into_iter()
                .map(|(b, c)| (block_key(b), c.to_value())),
        );
        let id = ChitchatId::new(
            config.node_name.as_str(),
            config.generation,
            config.gossip_addr,
        );
        let cc = ChitchatConfig {
            chitchat_id: id,
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.interval,
            listen_addr: config.gossip_addr,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                initial_interval: config.interval,
                // chitchat's default keeps 1000 heartbeat intervals per peer
                // (8 KB each: 8 MB per agent at 1000 peers); 100 samples
                // estimate the mean as well for a detector this coarse.
                sampling_window_size: 100,
                // A dead node's state (and so its block claims) is kept until
                // it is forgotten: dropping it would free blocks whose pods
                // may still exist.
                dead_node_grace_period: Duration::from_secs(10 * 365 * 24 * 3600),
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let chitchat =
            spawn_chitchat(cc, initial, transport)
                .await
                .map_err(|e| GossipError::Spawn {
                    addr: config.gossip_addr,
                    source: e.into(),
                })?;
        let membership = Membership::Chitchat {
            cc: chitchat.chitchat(),
            live_rx: None,
            cache: HashMap::new(),
        };
        Ok(Self::run(
            Carrier::Chitchat(chitchat),
            membership,
            claimer,
            config,
            free,
            wire,
        ))
    }

    /// Starts gossip over SWIM on `socket` (bound to the gossip address),
    /// with datagrams sealed with `key`: loads the persisted blocks, joins
    /// through the seeds (IPv4 addresses) and runs the claim rule every
    /// interval.
    pub fn spawn_swim(
        config: GossipConfig,
        socket: tokio::net::UdpSocket,
        seeds: Vec<std::net::SocketAddrV4>,
        key: Option<Key>,
        free: FreeAddresses,
        wire: Arc<WireCounters>,
    ) -> Result<Self, GossipError> {
        let claimer = claimer(&config)?;
        let spawn_error = |e: super::swim::SwimError| GossipError::Spawn {
            addr: config.gossip_addr,
            source: e.into(),
        };
        let SocketAddr::V4(gossip_addr) = config.gossip_addr else {
            return Err(GossipError::Spawn {
                addr: config.gossip_addr,
                source: "SWIM gossips over IPv4 only".into(),
            });
        };
        let record = NodeRecord {
            name: config.node_name.clone(),
            generation: config.generation,
            seq: 0,
            gossip_addr,
            ip: config.node_ip,
            vxlan_port: config.vxlan_port,
            version: config.published_version(),
            stopping: false,
            claims: claimer.published().into_iter().collect(),
            forgets: Vec::new(),
        };
        let mut sc = SwimConfig::new(record, seeds, SWIM_CLUSTER_SIZE);
        sc.key = key;
        sc.cluster = config.cluster_id.clone();
        let swim = Swim::new(sc).map_err(spawn_error)?;
        let swim = Arc::new(SwimUdp::spawn(swim, socket, wire.clone()).map_err(spawn_error)?);
        let membership = Membership::Swim {
            swim: swim.clone(),
            seen: None,
        };
        Ok(Self::run(
            Carrier::Swim(swim),
            membership,
            claimer,
            config,
            free,
            wire,
        ))
    }

    fn run(
        carrier: Carrier,
        membership: Membership,
        claimer: Claimer,
        config: GossipConfig,
        free: FreeAddresses,
        wire: Arc<WireCounters>,
    ) -> Self {
        let (topo_tx, topo_rx) = watch::channel(Topology::default());
        let shared = Arc::new(Shared {
            status: Mutex::new(GossipStatus::default()),
            rebuild: AtomicBool::new(true),
        });
        let name = config.node_name.clone();
        let interval = config.interval;
        let memory = Memory::new(
            members_file(&config)
                .map(|p| remembered::load(&p, &name))
                .unwrap_or_default(),
        );
        if !memory.is_empty() {
            info!(
                members = memory.len(),
                "remembering the members known before this start until gossip brings them"
            );
        }
        let runner = Runner {
            membership,
            claimer,
            config,
            free,
            shared: shared.clone(),
            topology: topo_tx,
            view: View::default(),
            published: BTreeMap::new(),
            ticks: 0,
            persisted: None,
            memory,
            remembered: None,
            liveness: HashMap::new(),
        };
        let span = info_span!("gossip", node = %name);
        let task = tokio::spawn(runner.run().instrument(span));
        Self {
            carrier,
            shared,
            wire,
            topology: topo_rx,
            task,
            name,
            interval,
        }
    }

    /// The topology this node derives (live nodes and their settled
    /// blocks), updated as gossip changes it.
    pub fn topology(&self) -> watch::Receiver<Topology> {
        self.topology.clone()
    }

    /// A snapshot of the status, with the wire counters as of now.
    pub fn status(&self) -> GossipStatus {
        GossipStatus {
            wire: self.wire.snapshot(),
            ..lock(&self.shared.status).clone()
        }
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The chitchat handle when the node speaks chitchat (simulations use
    /// it to inspect and to partition).
    pub fn chitchat(&self) -> Option<&ChitchatHandle> {
        match &self.carrier {
            Carrier::Chitchat(c) => Some(c),
            Carrier::Swim(_) => None,
        }
    }

    /// Forgets a node gone for good: its blocks return to the pool on every
    /// node as the record spreads. Refused for this node and for live
    /// nodes; forgetting a node twice is harmless.
    pub async fn forget(&self, name: &str) -> Result<Forgotten, ForgetError> {
        if name == self.name {
            return Err(ForgetError::SelfNode(name.to_owned()));
        }
        let found = match &self.carrier {
            Carrier::Chitchat(handle) => forget_chitchat(handle, name).await,
            Carrier::Swim(swim) => {
                let s = swim.lock();
                match s.record_of(name) {
                    None => Err(ForgetError::Unknown(name.to_owned())),
                    Some(_) if s.is_live(name) => Err(ForgetError::Alive(name.to_owned())),
                    Some(r) => Ok((r.generation, r.claims.iter().map(|(b, _)| *b).collect())),
                }
            }
        };
        // A member this node only remembers (gossip has no record of it)
        // is in the status, never alive.
        let (generation, mut blocks) = match found {
            Err(ForgetError::Unknown(_)) => lock(&self.shared.status)
                .peers
                .iter()
                .find(|p| p.name == name)
                .map(|p| (p.generation, p.blocks.iter().map(|b| b.block).collect()))
                .ok_or_else(|| ForgetError::Unknown(name.to_owned()))?,
            other => other?,
        };
        blocks.sort();
        blocks.dedup();
        match &self.carrier {
            Carrier::Chitchat(handle) => {
                let cc = handle.chitchat();
                let mut cc = cc.lock().await;
                set_forget(cc.self_node_state(), name, generation);
            }
            Carrier::Swim(swim) => {
                let set = swim.lock().update(|me| {
                    merge_forget(&mut me.forgets, name, generation);
                });
                if let Err(e) = set {
                    error!(error = %crate::cni::error::chain(&e), "publishing a forget record");
                }
            }
        }
        self.shared.rebuild.store(true, Ordering::Relaxed);
        warn!(node = name, generation, blocks = ?blocks, "forgot node: its blocks return to the pool");
        Ok(Forgotten {
            name: name.to_owned(),
            generation,
            blocks,
        })
    }

    /// Tells the peers this agent is stopping cleanly (a rolling update, a
    /// SIGTERM): they see its silence as expected, not as a failure, and
    /// keep routing to its datapath. Waits a few gossip rounds (at most
    /// 1.5 s) for the word to spread.
    pub async fn leave(&self) {
        match &self.carrier {
            Carrier::Chitchat(handle) => {
                let cc = handle.chitchat();
                let mut cc = cc.lock().await;
                cc.self_node_state().set(KEY_STOPPING, "true");
            }
            Carrier::Swim(swim) => {
                if let Err(e) = swim.lock().leave() {
                    error!(error = %crate::cni::error::chain(&e), "announcing the clean stop");
                }
                swim.flush();
            }
        }
        let wait = (self.interval * 3).min(Duration::from_millis(1500));
        tokio::time::sleep(wait).await;
    }

    /// Publishes a new WireGuard announce (a rotated key): the version
    /// string changes, and with it this node's record.
    pub async fn set_wireguard(&self, announce: Option<&Announce>) {
        let version = Announce::version_string(env!("CARGO_PKG_VERSION"), announce);
        match &self.carrier {
            Carrier::Chitchat(handle) => {
                let cc = handle.chitchat();
                let mut cc = cc.lock().await;
                cc.self_node_state().set(KEY_VERSION, version);
            }
            Carrier::Swim(swim) => {
                if let Err(e) = swim.lock().update(|r| r.version = version) {
                    error!(error = %crate::cni::error::chain(&e), "publishing the new WireGuard key");
                }
                swim.flush();
            }
        }
    }

    /// Stops gossiping (peers will declare this node dead).
    pub async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
        match self.carrier {
            Carrier::Chitchat(c) => {
                let _ = c.shutdown().await;
            }
            Carrier::Swim(s) => s.shutdown(),
        }
    }
}

/// Raises `name`'s forget record in a SWIM record to `generation`;
/// whether it was lower (or missing).
fn merge_forget(forgets: &mut Vec<(String, u64)>, name: &str, generation: u64) -> bool {
    match forgets.iter_mut().find(|(n, _)| n == name) {
        Some((_, g)) if *g >= generation => return false,
        Some((_, g)) => *g = generation,
        None => forgets.push((name.to_owned(), generation)),
    }
    forgets.sort();
    true
}

/// [`merge_forget`] for this node's chitchat state.
fn set_forget(me: &mut chitchat::NodeState, name: &str, generation: u64) -> bool {
    let key = format!("{PREFIX_FORGET}{name}");
    if me.get(&key).and_then(|v| v.parse::<u64>().ok()) >= Some(generation) {
        return false;
    }
    me.set(key, generation);
    true
}

/// The members file, beside the blocks file.
fn members_file(config: &GossipConfig) -> Option<PathBuf> {
    let blocks = config.state_file.as_ref()?;
    Some(blocks.with_file_name(MEMBERS_FILE))
}

/// Checks the persisted blocks and the config, and builds the claim rule.
fn claimer(config: &GossipConfig) -> Result<Claimer, GossipError> {
    let c = &config.claims;
    if c.block_prefix <= c.range.prefix_len() || c.block_prefix > 30 {
        return Err(GossipError::BlockSize {
            range: c.range,
            block_prefix: c.block_prefix,
        });
    }
    if !valid_name(&config.node_name) {
        return Err(GossipError::NodeName(config.node_name.clone()));
    }
    let settled = match &config.state_file {
        Some(p) => load_blocks(p, &config.node_name)?,
        None => BTreeMap::new(),
    };
    if !settled.is_empty() {
        info!(blocks = ?settled.keys().collect::<Vec<_>>(), "re-publishing the blocks this node owned");
    }
    Ok(Claimer::new(
        &config.node_name,
        config.generation,
        config.claims.clone(),
        settled,
    ))
}

/// chitchat's side of [`Gossip::forget`]: the highest generation of `name`
/// and its blocks.
async fn forget_chitchat(
    handle: &ChitchatHandle,
    name: &str,
) -> Result<(u64, Vec<Ipv4Net>), ForgetError> {
    let cc = handle.chitchat();
    let cc = cc.lock().await;
    let live: HashSet<&ChitchatId> = cc.live_nodes().collect();
    let mut generation = None;
    let mut blocks = Vec::new();
    for (id, state) in cc.node_states() {
        if &*id.node_id != name {
            continue;
        }
        if live.contains(id) {
            return Err(ForgetError::Alive(name.to_owned()));
        }
        generation = generation.max(Some(id.generation_id));
        blocks.extend(Record::parse(state.key_values()).claims.into_keys());
    }
    let generation = generation.ok_or_else(|| ForgetError::Unknown(name.to_owned()))?;
    Ok((generation, blocks))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Where the runner reads the cluster and publishes this node.
enum Membership {
    Chitchat {
        cc: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
        live_rx: Option<watch::Receiver<BTreeMap<ChitchatId, chitchat::NodeState>>>,
        /// Parsed records by node instance, with the version they were
        /// parsed at.
        cache: HashMap<ChitchatId, (u64, Record)>,
    },
    Swim {
        swim: Arc<SwimUdp>,
        /// [`Swim::changes`] at the last rebuild.
        seen: Option<u64>,
    },
}

impl Membership {
    /// Whether who is alive (or, for SWIM, any record) changed since the
    /// last call.
    async fn changed(&mut self) -> bool {
        match self {
            Self::Chitchat { cc, live_rx, .. } => {
                let rx = match live_rx {
                    Some(rx) => rx,
                    None => live_rx.insert(cc.lock().await.live_nodes_watcher()),
                };
                let changed = rx.has_changed().unwrap_or(true);
                if changed {
                    rx.mark_unchanged();
                }
                changed
            }
            Self::Swim { swim, seen } => {
                let now = swim.lock().changes();
                seen.replace(now) != Some(now)
            }
        }
    }

    /// The view of every node as of now, with the remembered members
    /// gossip has no record of.
    async fn view(&mut self, memory: &Memory) -> View {
        match self {
            Self::Chitchat { cc, cache, .. } => {
                let cc = cc.lock().await;
                let live: HashSet<&ChitchatId> = cc.live_nodes().collect();
                let states = cc.node_states();
                cache.retain(|id, _| states.contains_key(id));
                for (id, state) in states {
                    let v = state.max_version();
                    let fresh = cache.get(id).is_some_and(|(at, _)| *at == v);
                    if !fresh {
                        cache.insert(id.clone(), (v, Record::parse(state.key_values())));
                    }
                }
                let known: HashSet<&str> = cache.keys().map(|id| &*id.node_id).collect();
                let gossip = cache.iter().map(|(id, (_, r))| Seen {
                    name: &id.node_id,
                    generation: id.generation_id,
                    gossip_addr: id.gossip_advertise_addr,
                    live: live.contains(id),
                    record: r,
                });
                View::build(gossip.chain(memory.seen(|n| known.contains(n))))
            }
            Self::Swim { swim, .. } => {
                // `view_with` leaves out the names SWIM has records of.
                swim.lock().view_with(memory.seen(|_| false))
            }
        }
    }

    /// Publishes this node's claims (`want`, `before` as last published)
    /// and carries every forget record it knows, so that a forget outlives
    /// the node that issued it. Returns whether a forget record was added.
    async fn publish(
        &mut self,
        before: &BTreeMap<Ipv4Net, Claim>,
        want: &BTreeMap<Ipv4Net, Claim>,
        forgotten: &BTreeMap<String, u64>,
    ) -> bool {
        let mut republished = false;
        match self {
            Self::Chitchat { cc, .. } => {
                let mut cc = cc.lock().await;
                let me = cc.self_node_state();
                for (b, c) in want {
                    if before.get(b) != Some(c) {
                        me.set(block_key(*b), c.to_value());
                    }
                }
                for b in before.keys() {
                    if !want.contains_key(b) {
                        me.delete(&block_key(*b));
                    }
                }
                for (name, g) in forgotten {
                    republished |= set_forget(me, name, *g);
                }
            }
            Self::Swim { swim, .. } => {
                let set = swim.lock().update(|me| {
                    me.claims = want.iter().map(|(b, c)| (*b, *c)).collect();
                    for (name, g) in forgotten {
                        republished |= merge_forget(&mut me.forgets, name, *g);
                    }
                });
                if let Err(e) = set {
                    // Retried next tick: `update` compares with the record.
                    error!(error = %crate::cni::error::chain(&e), "publishing this node's record");
                }
            }
        }
        republished
    }
}

/// The loop behind a [`Gossip`].
struct Runner {
    membership: Membership,
    claimer: Claimer,
    config: GossipConfig,
    free: FreeAddresses,
    shared: Arc<Shared>,
    topology: watch::Sender<Topology>,
    view: View,
    /// Claims as currently set in our own gossip state.
    published: BTreeMap<Ipv4Net, Claim>,
    ticks: u64,
    persisted: Option<BTreeMap<Ipv4Net, u64>>,
    /// Members known before this start, added to the view (not alive)
    /// until gossip brings them.
    memory: Memory,
    /// What was last written to the members file.
    remembered: Option<Vec<Remembered>>,
    /// Each peer's liveness at the last rebuild, to log joins and leaves.
    liveness: HashMap<String, Liveness>,
}

/// What the membership log remembers of a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Liveness {
    /// Known (e.g. from the persisted state) but never seen alive.
    NeverAlive,
    Alive,
    /// Was alive, then declared dead.
    Dead,
}

/// Rebuild the view at least this often even if nothing seems to change.
const FORCED_REBUILD_TICKS: u64 = 10;

impl Runner {
    async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.step().await;
        }
    }

    async fn step(&mut self) {
        self.ticks += 1;
        let now = Instant::now();
        let membership_changed = self.membership.changed().await;
        let forced = self.shared.rebuild.swap(false, Ordering::Relaxed);
        let rebuilt = membership_changed || forced || self.ticks % FORCED_REBUILD_TICKS == 1;
        if rebuilt {
            self.view = self.membership.view(&self.memory).await;
            self.log_membership();
            self.remember();
        }
        let free = (self.free)(&self.claimer.usable());
        let events = self.claimer.tick(now, &self.view, free);
        for e in &events {
            log_event(e);
        }
        // Publish our claims by diff, and carry every forget record we know
        // so that it outlives the node that issued it.
        let want = self.claimer.published();
        let republished = self
            .membership
            .publish(&self.published, &want, &self.view.forgotten)
            .await;
        if republished {
            self.shared.rebuild.store(true, Ordering::Relaxed);
        }
        self.published = want;
        self.persist();
        // Topology and status derive from the view and the claims only: when
        // neither moved, there is nothing new to publish.
        if rebuilt || !events.is_empty() {
            self.publish_topology();
            self.publish_status();
        }
    }

    /// One line per peer that joined, came back, died or was forgotten
    /// since the last rebuild.
    fn log_membership(&mut self) {
        let me = &self.config.node_name;
        let mut next = HashMap::new();
        for m in self.view.members.values().filter(|m| &m.name != me) {
            let ip = m.record.ip.map(|ip| ip.to_string()).unwrap_or_default();
            let before = self.liveness.get(&m.name).copied();
            let now = match (before, m.live) {
                (None | Some(Liveness::NeverAlive), true) => {
                    info!(peer = %m.name, %ip, gossip_addr = %m.gossip_addr, "peer joined");
                    Liveness::Alive
                }
                (Some(Liveness::Dead), true) => {
                    info!(peer = %m.name, %ip, "peer's agent is back");
                    Liveness::Alive
                }
                (Some(Liveness::Alive), false) if m.record.stopping => {
                    info!(
                        peer = %m.name, %ip,
                        "peer's agent stopped cleanly: its routes stay while its datapath \
                         answers probes, its blocks stay reserved"
                    );
                    Liveness::Dead
                }
                (Some(Liveness::Alive), false) => {
                    warn!(
                        peer = %m.name, %ip,
                        "peer's agent declared dead by gossip: its routes stay while its \
                         datapath answers probes, its blocks stay reserved"
                    );
                    Liveness::Dead
                }
                (Some(l), true) => l,
                (Some(l), false) => l,
                (None, false) => Liveness::NeverAlive,
            };
            next.insert(m.name.clone(), now);
        }
        for name in self.liveness.keys().filter(|n| !next.contains_key(*n)) {
            info!(peer = %name, "peer left the membership (forgotten)");
        }
        self.liveness = next;
    }

    /// Writes the view's members to the members file when they changed
    /// (liveness aside), at most every [`FORCED_REBUILD_TICKS`] ticks.
    fn remember(&mut self) {
        if self.remembered.is_some() && self.ticks % FORCED_REBUILD_TICKS != 1 {
            return;
        }
        let Some(path) = members_file(&self.config) else {
            return;
        };
        let me = &self.config.node_name;
        let now: Vec<Remembered> = self
            .view
            .members
            .values()
            .filter(|m| &m.name != me)
            .map(Remembered::of)
            .collect();
        if self.remembered.as_ref() == Some(&now) {
            return;
        }
        match remembered::save(&path, me, &now) {
            Ok(()) => self.remembered = Some(now),
            Err(e) => warn!(path = %path.display(), error = %e, "saving the members known"),
        }
    }

    fn persist(&mut self) {
        let Some(path) = &self.config.state_file else {
            return;
        };
        let settled = self.claimer.settled();
        if self.persisted.as_ref() == Some(settled) {
            return;
        }
        match save_blocks(path, &self.config.node_name, settled) {
            Ok(()) => self.persisted = Some(settled.clone()),
            // Retried next tick; the claim stays published meanwhile.
            Err(e) => error!(error = %crate::cni::error::chain(&e), "saving owned blocks"),
        }
    }

    fn publish_topology(&self) {
        let owners = self.view.settled_owners();
        let mut nodes: Vec<Node> = Vec::new();
        // Silent members stay listed (`alive: false`) with their blocks:
        // whether they stay routed is their datapath's liveness to decide.
        for m in self.view.members.values() {
            if m.name == self.config.node_name {
                continue;
            }
            let Some(ip) = m.record.ip else { continue };
            if ip == self.config.node_ip {
                continue;
            }
            let blocks = owners
                .get(&m.name)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            nodes.push(Node {
                ip,
                blocks,
                alive: m.live,
                wireguard: m.record.wireguard.clone(),
            });
        }
        nodes.push(Node {
            ip: self.config.node_ip,
            blocks: self.claimer.usable(),
            alive: true,
            wireguard: self.config.wireguard.clone(),
        });
        // One entry per address, the live one if an old incarnation under
        // another name is still listed.
        nodes.sort_by_key(|n| (n.ip, !n.alive));
        nodes.dedup_by_key(|n| n.ip);
        let topo = Topology { nodes };
        self.topology.send_if_modified(|t| {
            if *t == topo {
                false
            } else {
                *t = topo;
                true
            }
        });
    }

    fn publish_status(&self) {
        let v = &self.view;
        let c = &self.config;
        let mine: Vec<BlockStatus> = self
            .claimer
            .published()
            .into_iter()
            .map(|(block, claim)| BlockStatus {
                block,
                state: if self.claimer.lost().contains(&block) {
                    BlockState::Conflict
                } else {
                    claim.state.into()
                },
            })
            .collect();
        let peers = v
            .members
            .values()
            .filter(|m| m.name != c.node_name)
            .map(|m| PeerStatus {
                name: m.name.clone(),
                ip: m.record.ip,
                gossip_addr: m.gossip_addr.to_string(),
                state: if m.live {
                    PeerState::Alive
                } else {
                    PeerState::Dead
                },
                stopping: m.record.stopping,
                datapath: None,
                routed: None,
                generation: m.generation,
                version: m.record.version.clone(),
                blocks: m
                    .record
                    .claims
                    .iter()
                    .map(|(b, cl)| BlockStatus {
                        block: *b,
                        state: cl.state.into(),
                    })
                    .collect(),
            })
            .collect();
        let conflicts = v
            .conflicts()
            .into_iter()
            .map(|(block, claimants)| ConflictStatus {
                block,
                owner: v
                    .owner(block)
                    .map(|(n, _)| n.to_owned())
                    .unwrap_or_default(),
                claimants,
            })
            .collect();
        let bits = u32::from(c.claims.block_prefix - c.claims.range.prefix_len());
        let status = GossipStatus {
            name: c.node_name.clone(),
            generation: c.generation,
            node_ip: Some(c.node_ip),
            gossip_addr: c.gossip_addr.to_string(),
            encrypted: c.authenticated,
            protocol: match self.membership {
                Membership::Chitchat { .. } => Protocol::Chitchat,
                Membership::Swim { .. } => Protocol::Swim,
            },
            quorum: self.claimer.quorum(),
            known: v.members.len(),
            live: v.live_count(),
            blocks: mine,
            peers,
            range: Some(c.claims.range),
            block_prefix: c.claims.block_prefix,
            blocks_total: 1u64 << bits,
            blocks_claimed: v.claims.len(),
            conflicts,
            forgotten: v.forgotten.clone(),
            ignored_values: v.ignored_values,
            // Filled in by `Gossip::status` when asked for.
            wire: WireStats::default(),
        };
        *lock(&self.shared.status) = status;
    }
}

fn log_event(e: &Event) {
    match e {
        Event::Claimed(b) => info!(block = %b, "claiming block (pending until settled)"),
        Event::Settled(b) => info!(block = %b, "block settled: handing out addresses from it"),
        Event::Withdrew { block, winner } => {
            info!(block = %block, winner, "claim lost to an earlier-ranked one: withdrawn")
        }
        Event::ConflictLost { block, winner } => error!(
            block = %block, winner,
            "DUPLICATE OWNER: this block is settled on another node too and that claim wins; no new addresses from it here, existing pods in it may clash"
        ),
        Event::ConflictCleared(b) => {
            info!(block = %b, "conflict over block cleared: it is ours again")
        }
        Event::Forgotten(bs) => error!(
            blocks = ?bs,
            "this node was forgotten by the cluster: its blocks went back to the pool; pods still using them may clash"
        ),
        Event::Exhausted => error!("every block of the cluster range is claimed: no new addresses"),
        Event::QuorumLost { live, known } => warn!(
            live,
            known,
            "quorum lost: no new block can be claimed until a majority of the known nodes is reachable"
        ),
        Event::QuorumRegained => info!("quorum: new blocks can be claimed"),
    }
}

fn load_blocks(path: &Path, node: &str) -> Result<BTreeMap<Ipv4Net, u64>, GossipError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(GossipError::StateFile {
                action: "reading",
                path: path.to_owned(),
                source,
            });
        }
    };
    let file: BlocksFile =
        serde_json::from_str(&text).map_err(|source| GossipError::StateCorrupt {
            path: path.to_owned(),
            source,
        })?;
    if file.node != node {
        warn!(
            file_node = file.node, node,
            path = %path.display(),
            "the blocks file belongs to another node name: ignored (that name keeps its blocks until forgotten)"
        );
        return Ok(BTreeMap::new());
    }
    Ok(file.blocks)
}

/// Writes the blocks file atomically: temp file, fsync, rename, fsync dir.
fn save_blocks(
    path: &Path,
    node: &str,
    blocks: &BTreeMap<Ipv4Net, u64>,
) -> Result<(), GossipError> {
    let body = serde_json::to_vec_pretty(&BlocksFile {
        node: node.to_owned(),
        blocks: blocks.clone(),
    })
    .expect("plain data serialises");
    remembered::write_atomically(path, &body).map_err(|source| GossipError::StateFile {
        action: "writing",
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_persist_atomically_and_a_damaged_file_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blocks.json");
        assert!(load_blocks(&p, "n1").unwrap().is_empty());
        let blocks: BTreeMap<Ipv4Net, u64> = [("10.32.1.0/24".parse().unwrap(), 7)].into();
        save_blocks(&p, "n1", &blocks).unwrap();
        assert_eq!(load_blocks(&p, "n1").unwrap(), blocks);
        assert!(load_blocks(&p, "other").unwrap().is_empty());
        std::fs::write(&p, "{\"node\":").unwrap();
        let e = load_blocks(&p, "n1").unwrap_err().to_string();
        assert!(e.contains("is damaged") && e.contains("no pods"), "{e}");
    }

    #[test]
    fn node_names_are_checked() {
        assert!(valid_name("node-1.example"));
        for bad in ["", "a b", "a:b", "é"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
