//! One gossiping node: runs chitchat, publishes this node and its claims,
//! runs the claim rule every gossip interval, and turns the cluster view
//! into the [`Topology`] the agent applies to its maps.
//!
//! The same code runs in the agent (over authenticated UDP) and in the
//! simulations (over chitchat's in-memory transport, many nodes in one
//! process, on tokio's paused clock).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::Write as _,
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
    auth::{WireCounters, WireStats},
    claims::{ClaimConfig, Claimer, Event},
    status::{BlockState, BlockStatus, ConflictStatus, GossipStatus, PeerState, PeerStatus},
    view::{
        Claim, KEY_IP, KEY_STOPPING, KEY_VERSION, KEY_VXLAN_PORT, PREFIX_FORGET, Record, Seen,
        View, block_key,
    },
};
use crate::topology::{Node, Topology};

/// Default gossip port (as Weave's).
pub const DEFAULT_GOSSIP_PORT: u16 = 6783;

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
    /// chitchat could not start (typically: the port is taken).
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

/// A running gossip node.
pub struct Gossip {
    chitchat: ChitchatHandle,
    shared: Arc<Shared>,
    wire: Arc<WireCounters>,
    topology: watch::Receiver<Topology>,
    task: JoinHandle<()>,
    name: String,
    interval: Duration,
}

impl Gossip {
    /// Starts gossip: loads the persisted blocks, joins through the seeds
    /// and runs the claim rule every interval.
    pub async fn spawn(
        config: GossipConfig,
        transport: &dyn Transport,
        free: FreeAddresses,
        wire: Arc<WireCounters>,
    ) -> Result<Self, GossipError> {
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
        let claimer = Claimer::new(
            &config.node_name,
            config.generation,
            config.claims.clone(),
            settled,
        );
        let mut initial = vec![
            (KEY_IP.to_owned(), config.node_ip.to_string()),
            (KEY_VXLAN_PORT.to_owned(), config.vxlan_port.to_string()),
            (KEY_VERSION.to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
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
        let (topo_tx, topo_rx) = watch::channel(Topology::default());
        let shared = Arc::new(Shared {
            status: Mutex::new(GossipStatus::default()),
            rebuild: AtomicBool::new(true),
        });
        let name = config.node_name.clone();
        let interval = config.interval;
        let runner = Runner {
            chitchat: chitchat.chitchat(),
            claimer,
            config,
            free,
            shared: shared.clone(),
            topology: topo_tx,
            cache: HashMap::new(),
            view: View::default(),
            published: BTreeMap::new(),
            ticks: 0,
            persisted: None,
            liveness: HashMap::new(),
        };
        let span = info_span!("gossip", node = %name);
        let task = tokio::spawn(runner.run().instrument(span));
        Ok(Self {
            chitchat,
            shared,
            wire,
            topology: topo_rx,
            task,
            name,
            interval,
        })
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

    /// The chitchat handle (simulations use it to inspect and to partition).
    pub fn chitchat(&self) -> &ChitchatHandle {
        &self.chitchat
    }

    /// Forgets a node gone for good: its blocks return to the pool on every
    /// node as the record spreads. Refused for this node and for live
    /// nodes; forgetting a node twice is harmless.
    pub async fn forget(&self, name: &str) -> Result<Forgotten, ForgetError> {
        if name == self.name {
            return Err(ForgetError::SelfNode(name.to_owned()));
        }
        let cc = self.chitchat.chitchat();
        let mut cc = cc.lock().await;
        let live: HashSet<ChitchatId> = cc.live_nodes().cloned().collect();
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
            let r = Record::parse(state.key_values());
            blocks.extend(r.claims.into_keys());
        }
        let generation = generation.ok_or_else(|| ForgetError::Unknown(name.to_owned()))?;
        blocks.sort();
        blocks.dedup();
        cc.self_node_state()
            .set(format!("{PREFIX_FORGET}{name}"), generation);
        drop(cc);
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
        {
            let cc = self.chitchat.chitchat();
            let mut cc = cc.lock().await;
            cc.self_node_state().set(KEY_STOPPING, "true");
        }
        let wait = (self.interval * 3).min(Duration::from_millis(1500));
        tokio::time::sleep(wait).await;
    }

    /// Stops gossiping (peers will declare this node dead).
    pub async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
        let _ = self.chitchat.shutdown().await;
    }
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

/// The loop behind a [`Gossip`].
struct Runner {
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    claimer: Claimer,
    config: GossipConfig,
    free: FreeAddresses,
    shared: Arc<Shared>,
    topology: watch::Sender<Topology>,
    /// Parsed records by node instance, with the version they were parsed at.
    cache: HashMap<ChitchatId, (u64, Record)>,
    view: View,
    /// Claims as currently set in our own gossip state.
    published: BTreeMap<Ipv4Net, Claim>,
    ticks: u64,
    persisted: Option<BTreeMap<Ipv4Net, u64>>,
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
        let mut live_rx = self.chitchat.lock().await.live_nodes_watcher();
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let changed = live_rx.has_changed().unwrap_or(true);
            if changed {
                live_rx.mark_unchanged();
            }
            self.step(changed).await;
        }
    }

    async fn step(&mut self, membership_changed: bool) {
        self.ticks += 1;
        let now = Instant::now();
        let cc = self.chitchat.clone();
        let mut cc = cc.lock().await;
        let forced = self.shared.rebuild.swap(false, Ordering::Relaxed);
        let rebuilt = membership_changed || forced || self.ticks % FORCED_REBUILD_TICKS == 1;
        if rebuilt {
            self.rebuild(&cc);
        }
        let free = (self.free)(&self.claimer.usable());
        let events = self.claimer.tick(now, &self.view, free);
        for e in &events {
            log_event(e);
        }
        // Publish our claims by diff, and carry every forget record we know
        // so that it outlives the node that issued it.
        let want = self.claimer.published();
        let me = cc.self_node_state();
        for (b, c) in &want {
            if self.published.get(b) != Some(c) {
                me.set(block_key(*b), c.to_value());
            }
        }
        for b in self.published.keys() {
            if !want.contains_key(b) {
                me.delete(&block_key(*b));
            }
        }
        let mut republished = false;
        for (name, g) in &self.view.forgotten {
            let key = format!("{PREFIX_FORGET}{name}");
            if me.get(&key).and_then(|v| v.parse::<u64>().ok()) < Some(*g) {
                me.set(key, g);
                republished = true;
            }
        }
        drop(cc);
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

    fn rebuild(&mut self, cc: &chitchat::Chitchat) {
        let live: HashSet<&ChitchatId> = cc.live_nodes().collect();
        let states = cc.node_states();
        self.cache.retain(|id, _| states.contains_key(id));
        for (id, state) in states {
            let v = state.max_version();
            let fresh = self.cache.get(id).is_some_and(|(at, _)| *at == v);
            if !fresh {
                self.cache
                    .insert(id.clone(), (v, Record::parse(state.key_values())));
            }
        }
        self.view = View::build(self.cache.iter().map(|(id, (_, r))| Seen {
            name: &id.node_id,
            generation: id.generation_id,
            gossip_addr: id.gossip_advertise_addr,
            live: live.contains(id),
            record: r,
        }));
        self.log_membership();
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
            });
        }
        nodes.push(Node {
            ip: self.config.node_ip,
            blocks: self.claimer.usable(),
            alive: true,
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
    let io = |source| GossipError::StateFile {
        action: "writing",
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec_pretty(&BlocksFile {
        node: node.to_owned(),
        blocks: blocks.clone(),
    })
    .expect("plain data serialises");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&body).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
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
