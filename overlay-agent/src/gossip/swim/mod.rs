//! Gossip for 5,000 nodes: SWIM membership with suspicion (`foca`), node
//! records as custom broadcasts, and a push-pull anti-entropy exchange.
//!
//! This layer is sans-I/O: [`Swim`] takes datagrams and timer events and
//! leaves datagrams to send and timers to arm in its [`Outbox`]. The agent
//! puts a UDP socket and tokio timers around it ([`udp::SwimUdp`]); the
//! simulation (`overlay_tests::swim_sim`) puts thousands of them on one
//! virtual clock.
//!
//! # Wire
//!
//! Every datagram is sealed by [`super::auth::Sealer`] (HMAC, replay
//! window) and opened by [`super::auth::Opener`] before a byte of it is
//! parsed. Inside the seal:
//!
//! ```text
//! "OVS1" | cluster u64 | kind u8 | body
//! cluster: FNV-1a of the cluster name (a datagram of another cluster is
//!          dropped; with a password the key already differs)
//! kind 0: a foca packet (header, member updates, record broadcasts)
//! kind 1: a push-pull message (postcard `SyncMessage`)
//! ```
//!
//! A sealed datagram whose payload does not start with `OVS1` (the previous
//! release's chitchat envelope) is dropped and counted in
//! [`SwimStats::foreign`], with a warning naming the sender: an old and a
//! new agent do not understand each other and do not corrupt each other's
//! state. Likewise the previous release fails to decode ours.
//!
//! # Dissemination
//!
//! - Membership and failure detection: foca (probe, indirect probes,
//!   suspicion, refutation). Its messages carry a constant-size header and
//!   as many updates as fit one 1,400-byte packet, whatever the cluster
//!   size.
//! - Records: a node's [`NodeRecord`] goes out as a custom broadcast when
//!   it changes; foca piggybacks it on its messages a bounded number of
//!   times, and a newer `(generation, seq)` replaces an older one.
//!   Gossip rounds are sent only while there is something to spread, so
//!   an idle cluster only probes.
//! - Anti-entropy: a node sends a random live member a digest of its
//!   records ([`BUCKETS`] XORs of record fingerprints, 1 KB whatever the
//!   cluster size); both sides then send each other the records of the
//!   buckets that differ, in datagrams of at most [`SYNC_CHUNK`] bytes.
//!   At join the exchange is with a seed; then every
//!   [`SwimConfig::sync_burst_interval`] until [`SYNC_BURST_ROUNDS`]
//!   exchanges in a row bring nothing new (a cold start, a heal), then
//!   every [`SwimConfig::sync_interval`].
//! - Who is alive travels the same way: in the same datagram a node
//!   sends a digest of the members it holds active (itself included,
//!   XORs of identity hashes per bucket, 512 bytes), and the other side
//!   answers the buckets that differ with its active members and their
//!   incarnations, which foca applies by its own rules (a member held
//!   down stays down; a suspicion is lifted only by a newer incarnation).
//!   Without it a node learns a member only from a membership update
//!   still being spread or from a message of that member: a node that
//!   joins a settled cluster of 500 held 40 % of it not alive for
//!   minutes, and a cold start took 6 minutes until every node held
//!   every other alive, so its routes to them were missing.
//! - The other side answers with its own digests only when a bucket of
//!   either differs: an idle exchange is one datagram of about 1.6 KB.
//!   Answering every exchange made a node's bandwidth grow with how often
//!   it happened to be picked (the busiest of 5,000 sent 1.05 KB/s idle,
//!   the mean 0.63).

pub mod record;
pub mod udp;

use std::{
    borrow::Borrow,
    collections::{HashMap, HashSet, VecDeque, hash_map::DefaultHasher},
    hash::{BuildHasherDefault, Hash, Hasher},
    net::{SocketAddr, SocketAddrV4},
    num::{NonZeroU8, NonZeroU32, NonZeroUsize},
    sync::{Arc, Mutex},
    time::Duration,
};

use foca::{
    BroadcastHandler, Codec, Foca, Header, Identity, Member, Message, Notification, PostcardCodec,
    ProbeNumber, Runtime, State, Timer,
};
use serde::{Deserialize, Serialize};
use tracing::warn;

pub use self::record::{NodeRecord, RecordKey};
use super::{
    auth::{Key, Opener, Reject, Sealer},
    view::{Seen, View},
};

/// First bytes of every payload of this protocol, inside the seal.
pub const MAGIC: [u8; 4] = *b"OVS1";
const KIND_FOCA: u8 = 0;
const KIND_SYNC: u8 = 1;
/// Buckets of the push-pull digest.
pub const BUCKETS: usize = 128;
/// Largest push-pull datagram payload (records are split across several).
pub const SYNC_CHUNK: usize = 32 * 1024;
/// Records learned by push-pull between two exchanges above which the next
/// exchange comes after [`SwimConfig::sync_burst_interval`].
pub const SYNC_BURST_RECORDS: u64 = 1;
/// Fast exchanges that bring nothing new before a node slows down to
/// [`SwimConfig::sync_interval`] (also how many follow a join).
pub const SYNC_BURST_ROUNDS: u32 = 10;
/// Largest foca packet (fits a 1,500-byte MTU once sealed).
pub const MAX_PACKET: usize = 1400;
/// Completed probes whose answers tell whether this node is cut off.
pub const REACH_WINDOW: usize = 16;
/// Newest probes left out of that count: their answers may be on the way
/// (a direct and an indirect round take about one probe period).
const REACH_PENDING: usize = 2;

/// A member's identity in foca: where it gossips and which instance it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Id {
    /// Gossip address.
    pub addr: SocketAddrV4,
    /// The node's generation (start time in ms).
    pub generation: u64,
    /// Bumped when the node rejoins after being wrongly declared down.
    pub bump: u16,
}

impl Identity for Id {
    type Addr = SocketAddrV4;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            bump: self.bump.wrapping_add(1),
            ..*self
        })
    }

    fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, self.bump) > (adversary.generation, adversary.bump)
    }
}

/// How a [`Swim`] node runs.
#[derive(Clone, Debug)]
pub struct SwimConfig {
    /// This node's record (its `seq` is managed by [`Swim`]).
    pub record: NodeRecord,
    /// Seed peers.
    pub seeds: Vec<SocketAddrV4>,
    /// Cluster name: datagrams of another cluster are dropped.
    pub cluster: String,
    /// Authentication key (`None`: unauthenticated).
    pub key: Option<Key>,
    /// Expected cluster size (sizes retransmissions).
    pub cluster_size: u32,
    /// SWIM probe period.
    pub probe_period: Duration,
    /// Wait for a direct ack before probing indirectly.
    pub probe_rtt: Duration,
    /// How long a suspect has to refute before it is declared down.
    pub suspicion: Duration,
    /// Gossip round interval (a round is sent only with something to spread).
    pub gossip_interval: Duration,
    /// Push-pull period while exchanges find nothing new.
    pub sync_interval: Duration,
    /// Push-pull period while they do (a cold start): anti-entropy runs
    /// fast until the records stop changing.
    pub sync_burst_interval: Duration,
    /// Seed of this node's random choices.
    pub rng_seed: u64,
    /// Records shared by the nodes of one process (simulations): each node
    /// keeps a pointer to one copy of a record instead of its own copy.
    /// `None` in the agent.
    pub shared: Option<Arc<SharedRecords>>,
}

impl SwimConfig {
    /// The defaults for a cluster of about `cluster_size` nodes.
    pub fn new(record: NodeRecord, seeds: Vec<SocketAddrV4>, cluster_size: u32) -> Self {
        let rng_seed = record::fnv1a(record.name.as_bytes()) ^ record.generation;
        Self {
            record,
            seeds,
            cluster: "overlay".to_owned(),
            key: None,
            cluster_size,
            probe_period: Duration::from_millis(500),
            probe_rtt: Duration::from_millis(200),
            suspicion: Duration::from_millis(2500),
            gossip_interval: Duration::from_millis(100),
            sync_interval: Duration::from_secs(30),
            sync_burst_interval: Duration::from_secs(2),
            rng_seed,
            shared: None,
        }
    }
}

/// One copy of each record version for all the nodes of a process (see
/// [`SwimConfig::shared`]).
#[derive(Debug, Default)]
pub struct SharedRecords(Mutex<HashMap<RecordKey, Arc<NodeRecord>>>);

impl SharedRecords {
    fn intern(&self, r: NodeRecord) -> Arc<NodeRecord> {
        let key = RecordKey {
            name: r.name.clone(),
            generation: r.generation,
            seq: r.seq,
        };
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(key).or_insert_with(|| Arc::new(r)).clone()
    }

    /// Record versions held.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A record in a set keyed by its node's name.
#[derive(Clone, Debug)]
struct ByName(Arc<NodeRecord>);

impl PartialEq for ByName {
    fn eq(&self, o: &Self) -> bool {
        self.0.name == o.0.name
    }
}
impl Eq for ByName {}
impl Hash for ByName {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.name.as_str().hash(h);
    }
}
impl Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

/// A timer a [`Swim`] node asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwimTimer {
    /// One of foca's.
    Foca(Timer<Id>),
    /// A gossip round.
    Gossip,
    /// A push-pull exchange.
    Sync,
}

/// What a node wants done after a call.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Sealed datagrams and their destination.
    pub sends: Vec<(SocketAddrV4, Vec<u8>)>,
    /// Timers to fire after the given delay.
    pub timers: Vec<(Duration, SwimTimer)>,
}

/// Counters of one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwimStats {
    /// Datagrams that failed authentication or replay checks.
    pub rejected: u64,
    /// Authenticated datagrams of another protocol (the previous release).
    pub foreign: u64,
    /// Datagrams of a cluster of another name.
    pub other_cluster: u64,
    /// Authenticated datagrams of ours that did not decode.
    pub undecodable: u64,
    /// Records learned through push-pull.
    pub synced_records: u64,
    /// Members learned (or learned alive again) through push-pull.
    pub synced_members: u64,
    /// Records and members learned through push-pull since the last
    /// exchange started.
    pub synced_since: u64,
    /// Push-pull exchanges this node started.
    pub syncs: u64,
    /// Members this node declared (or learned to be) down.
    pub members_down: u64,
}

/// What became of one datagram handed to [`Swim::handle_datagram`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Authenticated and handled.
    Accepted,
    /// Refused before parsing: bad tag, replay, not sealed as expected.
    Rejected(Reject),
    /// Authenticated, but of another protocol (the previous release's).
    Foreign,
    /// Ours, but of a cluster of another name.
    OtherCluster,
    /// Authenticated, ours, but it did not decode.
    Undecodable,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum SwimError {
    /// foca refused the configuration.
    #[error("configuring SWIM membership")]
    Config(#[source] foca::Error),
    /// A record change could not be broadcast.
    #[error("broadcasting this node's record")]
    Broadcast(#[source] foca::Error),
}

/// The hasher of the store's sets: the same order in every process, so
/// that a simulation with a given seed takes the same course each run
/// (std's default hasher is keyed at random per process, and what a
/// push-pull answer carries, or which live member is picked, followed the
/// order of iteration). Keys come only from authenticated datagrams.
type Fixed = BuildHasherDefault<DefaultHasher>;

/// Records known to a node, and who is alive. Shared with the broadcast
/// handler that foca owns.
struct Store {
    me: String,
    records: HashSet<ByName, Fixed>,
    shared: Option<Arc<SharedRecords>>,
    buckets: Vec<u64>,
    /// Active members by address.
    live: HashMap<SocketAddrV4, Id, Fixed>,
    /// Per bucket of [`live_bucket`], the XOR of [`id_hash`] over `live`.
    live_buckets: Vec<u32>,
    /// Members seen going down.
    downs: u64,
    /// Bumped on every change of a record or of who is alive.
    changes: u64,
    /// This node's last probes: number, target, answered.
    probes: VecDeque<(ProbeNumber, SocketAddrV4, bool)>,
}

fn bucket_of(name: &str) -> usize {
    (record::fnv1a(name.as_bytes()) % BUCKETS as u64) as usize
}

/// Bucket of a member in the liveness digest: by gossip address, which is
/// what foca keys its members by.
fn live_bucket(addr: SocketAddrV4) -> usize {
    let mut b = [0u8; 6];
    b[..4].copy_from_slice(&addr.ip().octets());
    b[4..].copy_from_slice(&addr.port().to_le_bytes());
    (record::fnv1a(&b) % BUCKETS as u64) as usize
}

/// A member identity's contribution to its bucket of the liveness digest.
fn id_hash(id: &Id) -> u32 {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&id.addr.ip().octets());
    b[4..6].copy_from_slice(&id.addr.port().to_le_bytes());
    b[6..14].copy_from_slice(&id.generation.to_le_bytes());
    b[14..].copy_from_slice(&id.bump.to_le_bytes());
    let h = record::fnv1a(&b);
    (h ^ (h >> 32)) as u32
}

impl Store {
    /// An empty store of node `me`.
    fn new(me: String, shared: Option<Arc<SharedRecords>>) -> Self {
        Self {
            me,
            records: HashSet::default(),
            shared,
            buckets: vec![0; BUCKETS],
            live: HashMap::default(),
            live_buckets: vec![0; BUCKETS],
            downs: 0,
            changes: 0,
            probes: VecDeque::new(),
        }
    }

    /// Keeps `r` if it is newer than what is known; `own` for this node's.
    fn apply(&mut self, r: NodeRecord, own: bool) -> bool {
        if (r.name == self.me) != own {
            return false;
        }
        let b = bucket_of(&r.name);
        if let Some(old) = self.records.get(r.name.as_str()) {
            if !r.newer_than(&old.0) {
                return false;
            }
            self.buckets[b] ^= old.0.fingerprint();
        }
        self.buckets[b] ^= r.fingerprint();
        let r = match &self.shared {
            Some(c) => c.intern(r),
            None => Arc::new(r),
        };
        self.records.replace(ByName(r));
        self.changes += 1;
        true
    }

    /// A direct probe sent.
    fn probed(&mut self, number: ProbeNumber, target: SocketAddrV4) {
        self.probes.push_back((number, target, false));
        while self.probes.len() > REACH_WINDOW + REACH_PENDING {
            self.probes.pop_front();
        }
    }

    /// An answer (direct or forwarded) to the probe `number` of `target`.
    fn answered(&mut self, number: ProbeNumber, target: SocketAddrV4) {
        if let Some(p) = self
            .probes
            .iter_mut()
            .rev()
            .find(|(n, t, _)| *n == number && *t == target)
        {
            p.2 = true;
        }
    }

    /// Whether most completed probes in the window went unanswered. Not
    /// while no member is alive: nothing is probed then, the window is
    /// stale, and the member list alone says there is no quorum (or, once
    /// every other member is forgotten, that this node is the cluster).
    fn cut_off(&self) -> bool {
        if self.live.is_empty() {
            return false;
        }
        let completed = self.probes.len().saturating_sub(REACH_PENDING);
        if completed < REACH_WINDOW / 2 {
            return false;
        }
        let answered = self
            .probes
            .iter()
            .take(completed)
            .filter(|(_, _, a)| *a)
            .count();
        answered * 2 < completed
    }

    /// Sets who is alive at `addr` (`None`: nobody), keeping the
    /// liveness digest in step.
    fn set_live(&mut self, addr: SocketAddrV4, id: Option<Id>) {
        let b = live_bucket(addr);
        if let Some(old) = self.live.remove(&addr) {
            self.live_buckets[b] ^= id_hash(&old);
        }
        if let Some(id) = id {
            self.live_buckets[b] ^= id_hash(&id);
            self.live.insert(addr, id);
        }
        self.changes += 1;
    }

    fn is_live(&self, r: &NodeRecord) -> bool {
        r.name == self.me
            || self
                .live
                .get(&r.gossip_addr)
                .is_some_and(|id| id.generation == r.generation)
    }
}

fn lock(m: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// foca's hook for record broadcasts: keeps the newer ones and tells foca
/// to spread them on.
struct Handler(Arc<Mutex<Store>>);

impl BroadcastHandler<Id> for Handler {
    type Key = RecordKey;
    type Error = postcard::Error;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&Id>,
    ) -> Result<Option<RecordKey>, postcard::Error> {
        let r = NodeRecord::decode(data)?;
        let key = RecordKey {
            name: r.name.clone(),
            generation: r.generation,
            seq: r.seq,
        };
        // Our own record (`sender` None) is stored before it is added.
        Ok((sender.is_none() || lock(&self.0).apply(r, false)).then_some(key))
    }
}

/// Seeded SplitMix64: foca's and push-pull's random choices, reproducible
/// in a simulation.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl rand::TryRng for SplitMix {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok((self.next() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dst.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

/// The runtime over `$s`'s fields (a macro, so that foca stays borrowable).
macro_rules! io {
    ($s:ident) => {
        Io {
            sealer: &mut $s.sealer,
            cluster: $s.cluster,
            out: &mut $s.out,
            store: &$s.store,
            scratch: &mut $s.scratch,
        }
    };
}

/// foca's runtime for one call: seals what it sends, collects its timers,
/// tracks who is alive.
struct Io<'a> {
    sealer: &'a mut Sealer,
    cluster: u64,
    out: &'a mut Outbox,
    store: &'a Mutex<Store>,
    scratch: &'a mut Vec<u8>,
}

impl Io<'_> {
    fn send(&mut self, to: SocketAddrV4, kind: u8, body: &[u8]) {
        self.scratch.clear();
        self.scratch.extend_from_slice(&MAGIC);
        self.scratch.extend_from_slice(&self.cluster.to_le_bytes());
        self.scratch.push(kind);
        self.scratch.extend_from_slice(body);
        let mut datagram = Vec::new();
        self.sealer.seal(self.scratch, &mut datagram);
        self.out.sends.push((to, datagram));
    }
}

impl Runtime<Id> for Io<'_> {
    fn notify(&mut self, n: Notification<'_, Id>) {
        let mut s = lock(self.store);
        match n {
            Notification::MemberUp(id) => s.set_live(id.addr, Some(*id)),
            Notification::MemberDown(id) => {
                s.downs += 1;
                if s.live.get(&id.addr) == Some(id) {
                    s.set_live(id.addr, None);
                } else {
                    s.changes += 1;
                }
            }
            Notification::Rename(old, new) if s.live.get(&old.addr) == Some(old) => {
                s.set_live(new.addr, Some(*new));
            }
            _ => {}
        }
    }

    fn send_to(&mut self, to: Id, data: &[u8]) {
        if let Ok(Header {
            message: Message::Ping(n),
            ..
        }) = Codec::<Id>::decode_header(&mut PostcardCodec, data)
        {
            lock(self.store).probed(n, to.addr);
        }
        self.send(to.addr, KIND_FOCA, data);
    }

    fn submit_after(&mut self, event: Timer<Id>, after: Duration) {
        self.out.timers.push((after, SwimTimer::Foca(event)));
    }
}

/// A push-pull message (records owned when received, borrowed when sent).
/// Variants are only ever appended: a node of an earlier release drops
/// one it does not know as undecodable.
#[derive(Debug, Serialize, Deserialize)]
enum SyncMessage<R> {
    /// The sender's digest of records; `reply` if it answers one. Sent
    /// with [`SyncMessage::Live`] by builds before
    /// [`SyncMessage::Digests`]; still answered in kind.
    Digest { reply: bool, buckets: Vec<u64> },
    /// Records of the buckets that differ.
    Push { records: Vec<R> },
    /// The sender's digest of who is alive (itself included), sent with
    /// every [`SyncMessage::Digest`].
    Live { buckets: Vec<u32> },
    /// The active members (alive or suspect, with their incarnation) of
    /// the liveness buckets that differ.
    Members { members: Vec<Member<Id>> },
    /// Both digests in one datagram, each bucket in fixed width (little
    /// endian): `records` 8 bytes per bucket, `live` 4. Answered (with
    /// `reply` set) only when a bucket differs.
    Digests {
        reply: bool,
        records: Vec<u8>,
        live: Vec<u8>,
    },
}

/// `BUCKETS` integers of `N` bytes each from `bytes` (read by `from`), or
/// `None` when the length is not that.
fn unpack<const N: usize, T>(bytes: &[u8], from: fn([u8; N]) -> T) -> Option<Vec<T>> {
    if bytes.len() != BUCKETS * N {
        return None;
    }
    Some(
        bytes
            .chunks_exact(N)
            .map(|c| from(c.try_into().expect("chunks of N bytes")))
            .collect(),
    )
}

/// Members per [`SyncMessage::Members`] datagram (a member encodes in at
/// most about 30 bytes).
const MEMBERS_PER_CHUNK: usize = SYNC_CHUNK / 32;

/// One node of the SWIM layer (sans-I/O).
pub struct Swim {
    foca: Foca<Id, PostcardCodec, SplitMix, Handler>,
    store: Arc<Mutex<Store>>,
    sealer: Sealer,
    opener: Opener,
    /// FNV-1a of the cluster name, in every payload.
    cluster: u64,
    out: Outbox,
    scratch: Vec<u8>,
    me: NodeRecord,
    config: SwimConfig,
    rng: SplitMix,
    stats: SwimStats,
    /// Fast push-pull exchanges left (see [`SYNC_BURST_ROUNDS`]).
    burst_left: u32,
}

impl Swim {
    /// A node that has not joined yet; call [`Swim::start`].
    pub fn new(config: SwimConfig) -> Result<Self, SwimError> {
        let me = config.record.clone();
        let id = Id {
            addr: me.gossip_addr,
            generation: me.generation,
            bump: 0,
        };
        let mut fc = foca::Config::new_lan(
            NonZeroU32::new(config.cluster_size.max(1)).unwrap_or(NonZeroU32::MIN),
        );
        fc.probe_period = config.probe_period;
        fc.probe_rtt = config.probe_rtt;
        fc.suspect_to_down_after = config.suspicion;
        fc.max_packet_size = NonZeroUsize::new(MAX_PACKET).unwrap_or(NonZeroUsize::MIN);
        // Gossip rounds are ours: sent only while something is to spread.
        fc.periodic_gossip = None;
        // No periodic announce (foca's LAN default: one every 30 s, answered
        // with a feed of members filling a whole packet): who is alive
        // already travels with the push-pull exchange, which costs nothing
        // extra when both sides agree. With it the idle mean was 0.05 KB/s
        // higher, and a node picked more often than others paid for it.
        fc.periodic_announce = None;
        // After a partition heals, the sides hold each other down and only
        // an announce to a down member reconnects them: every 5 s rather
        // than foca's 65 s (two small datagrams, answered only by a member
        // that is in fact up).
        fc.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(5),
            num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
        });
        // Enough retransmissions that a record reaches every node of a
        // large cluster by broadcast alone with high probability.
        fc.max_transmissions = fc
            .max_transmissions
            .max(NonZeroU8::new(12).unwrap_or(NonZeroU8::MIN));
        let store = Arc::new(Mutex::new(Store::new(
            me.name.clone(),
            config.shared.clone(),
        )));
        lock(&store).apply(me.clone(), true);
        let mut foca = Foca::with_custom_broadcast(
            id,
            fc.clone(),
            SplitMix::new(config.rng_seed),
            PostcardCodec,
            Handler(store.clone()),
        );
        // Setting the same config again validates it now rather than later.
        foca.set_config(fc).map_err(SwimError::Config)?;
        let sealer = Sealer::new(
            config.key.clone(),
            record::fnv1a(me.name.as_bytes()),
            me.generation,
        );
        let opener = Opener::new(config.key.clone());
        Ok(Self {
            foca,
            store,
            sealer,
            opener,
            cluster: record::fnv1a(config.cluster.as_bytes()),
            out: Outbox::default(),
            scratch: Vec::new(),
            rng: SplitMix::new(config.rng_seed.rotate_left(17) ^ 0x5bd1_e995),
            me,
            config,
            stats: SwimStats::default(),
            burst_left: SYNC_BURST_ROUNDS,
        })
    }

    /// Joins: announces itself to the seeds, starts a push-pull with one of
    /// them, and arms the periodic timers.
    pub fn start(&mut self) -> Result<(), SwimError> {
        let seeds = self.announce_to_seeds();
        // Our record spreads as a broadcast from the first gossip round on.
        self.foca
            .add_broadcast(&self.me.encode())
            .map_err(SwimError::Broadcast)?;
        if !seeds.is_empty() {
            let s = seeds[(self.rng.next() % seeds.len() as u64) as usize];
            self.send_digests(s, false);
        }
        self.out
            .timers
            .push((self.config.gossip_interval, SwimTimer::Gossip));
        let first = jitter(&mut self.rng, self.config.sync_burst_interval);
        self.out.timers.push((first, SwimTimer::Sync));
        Ok(())
    }

    /// Announces this node to every seed but itself; returns those seeds.
    fn announce_to_seeds(&mut self) -> Vec<SocketAddrV4> {
        let seeds: Vec<SocketAddrV4> = self
            .config
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != self.me.gossip_addr)
            .collect();
        for s in &seeds {
            // The seed's generation is unknown: its answer carries its
            // real identity.
            let placeholder = Id {
                addr: *s,
                generation: 0,
                bump: 0,
            };
            let mut io = io!(self);
            // Refused only for this node's own address, filtered above.
            let _ = self.foca.announce(placeholder, &mut io);
        }
        seeds
    }

    /// Changes this node's record and broadcasts the new version.
    pub fn update(&mut self, f: impl FnOnce(&mut NodeRecord)) -> Result<(), SwimError> {
        let before = self.me.clone();
        f(&mut self.me);
        self.me.name = before.name.clone();
        self.me.generation = before.generation;
        if self.me == before {
            return Ok(());
        }
        self.me.seq = before.seq + 1;
        lock(&self.store).apply(self.me.clone(), true);
        self.foca
            .add_broadcast(&self.me.encode())
            .map_err(SwimError::Broadcast)?;
        Ok(())
    }

    /// Announces a clean stop: the record says `stopping`, spread in one
    /// gossip round, then foca tells the members it leaves.
    pub fn leave(&mut self) -> Result<(), SwimError> {
        self.update(|r| r.stopping = true)?;
        let mut io = io!(self);
        self.foca.gossip(&mut io).map_err(SwimError::Broadcast)?;
        self.foca
            .leave_cluster(&mut io)
            .map_err(SwimError::Broadcast)
    }

    /// Handles one datagram from `from`: authenticated before anything is
    /// parsed; anything else is counted and dropped.
    pub fn handle_datagram(&mut self, from: SocketAddrV4, datagram: &[u8]) -> Received {
        let payload = match self.opener.open(datagram) {
            Ok(p) => p,
            Err(reject) => {
                self.stats.rejected += 1;
                return Received::Rejected(reject);
            }
        };
        let Some(rest) = payload.strip_prefix(&MAGIC) else {
            self.stats.foreign += 1;
            if self.stats.foreign.is_power_of_two() {
                warn!(
                    %from, count = self.stats.foreign,
                    "authenticated gossip datagram of another protocol (an agent of the previous \
                     release?): dropped; the two releases do not exchange membership, finish the upgrade"
                );
            }
            return Received::Foreign;
        };
        let Some((cluster, rest)) = rest.split_first_chunk::<8>() else {
            self.stats.undecodable += 1;
            return Received::Undecodable;
        };
        if u64::from_le_bytes(*cluster) != self.cluster {
            self.stats.other_cluster += 1;
            if self.stats.other_cluster.is_power_of_two() {
                warn!(
                    %from, count = self.stats.other_cluster,
                    "gossip datagram of another cluster name: dropped (set the same \
                     --cluster-name, and a password, on every node of one cluster)"
                );
            }
            return Received::OtherCluster;
        }
        let ok = match rest.split_first() {
            Some((&KIND_FOCA, body)) => {
                match Codec::<Id>::decode_header(&mut PostcardCodec, body) {
                    Ok(Header {
                        src,
                        message: Message::Ack(n),
                        ..
                    }) => lock(&self.store).answered(n, src.addr),
                    Ok(Header {
                        message:
                            Message::ForwardedAck {
                                origin,
                                probe_number,
                            },
                        ..
                    }) => lock(&self.store).answered(probe_number, origin.addr),
                    _ => {}
                }
                let mut io = io!(self);
                self.foca.handle_data(body, &mut io).is_ok()
            }
            Some((&KIND_SYNC, body)) => match postcard::from_bytes::<SyncMessage<NodeRecord>>(body)
            {
                Ok(m) => self.handle_sync(from, m),
                Err(_) => false,
            },
            _ => false,
        };
        if ok {
            Received::Accepted
        } else {
            self.stats.undecodable += 1;
            Received::Undecodable
        }
    }

    /// Handles a timer this node asked for.
    pub fn handle_timer(&mut self, timer: SwimTimer) {
        match timer {
            SwimTimer::Foca(t) => {
                let mut io = io!(self);
                // An error here is a stale timer of a previous identity.
                let _ = self.foca.handle_timer(t, &mut io);
            }
            SwimTimer::Gossip => {
                if self.foca.updates_backlog() + self.foca.custom_broadcast_backlog() > 0 {
                    let mut io = io!(self);
                    let _ = self.foca.gossip(&mut io);
                }
                self.out
                    .timers
                    .push((self.config.gossip_interval, SwimTimer::Gossip));
            }
            SwimTimer::Sync => {
                let peers: Vec<SocketAddrV4> = lock(&self.store).live.keys().copied().collect();
                if peers.is_empty() {
                    // Alone: the seeds were not up when this node started
                    // (or every member went down). Knock again.
                    self.announce_to_seeds();
                } else {
                    let p = peers[(self.rng.next() % peers.len() as u64) as usize];
                    self.send_digests(p, false);
                }
                // New records from the last exchange: the cluster is forming
                // (or healing); keep exchanging often until SYNC_BURST_ROUNDS
                // exchanges in a row bring nothing new.
                if self.stats.synced_since >= SYNC_BURST_RECORDS {
                    self.burst_left = SYNC_BURST_ROUNDS;
                } else {
                    self.burst_left = self.burst_left.saturating_sub(1);
                }
                self.stats.synced_since = 0;
                let period = if self.burst_left > 0 {
                    self.config.sync_burst_interval
                } else {
                    self.config.sync_interval
                };
                let next = jitter(&mut self.rng, period);
                self.out.timers.push((next, SwimTimer::Sync));
            }
        }
    }

    /// What to send and arm since the last call.
    pub fn take_outbox(&mut self) -> Outbox {
        std::mem::take(&mut self.out)
    }

    /// Starts an exchange with `to`, or answers one (`reply`).
    fn send_digests(&mut self, to: SocketAddrV4, reply: bool) {
        if !reply {
            self.stats.syncs += 1;
        }
        let records = lock(&self.store)
            .buckets
            .iter()
            .flat_map(|b| b.to_le_bytes())
            .collect();
        let live = self
            .live_digest()
            .iter()
            .flat_map(|b| b.to_le_bytes())
            .collect();
        let m = SyncMessage::<NodeRecord>::Digests {
            reply,
            records,
            live,
        };
        let body = postcard::to_allocvec(&m).expect("plain data serialises");
        io!(self).send(to, KIND_SYNC, &body);
    }

    /// Answers an exchange started by a build before
    /// [`SyncMessage::Digests`], in its two messages.
    fn send_legacy_digests(&mut self, to: SocketAddrV4) {
        let reply = true;
        let buckets = lock(&self.store).buckets.clone();
        let body = postcard::to_allocvec(&SyncMessage::<NodeRecord>::Digest { reply, buckets })
            .expect("plain data serialises");
        io!(self).send(to, KIND_SYNC, &body);
        let live = SyncMessage::<NodeRecord>::Live {
            buckets: self.live_digest(),
        };
        let body = postcard::to_allocvec(&live).expect("plain data serialises");
        io!(self).send(to, KIND_SYNC, &body);
    }

    /// Who this node holds alive, itself included, per liveness bucket.
    fn live_digest(&self) -> Vec<u32> {
        let mut buckets = lock(&self.store).live_buckets.clone();
        let me = self.foca.identity();
        buckets[live_bucket(me.addr)] ^= id_hash(me);
        buckets
    }

    fn handle_sync(&mut self, from: SocketAddrV4, m: SyncMessage<NodeRecord>) -> bool {
        match m {
            SyncMessage::Digests {
                reply,
                records,
                live,
            } => {
                let (Some(records), Some(live)) = (
                    unpack(&records, u64::from_le_bytes),
                    unpack(&live, u32::from_le_bytes),
                ) else {
                    return false;
                };
                let records = self.records_differ(&records);
                let live = self.live_differ(&live);
                // In sync (the idle case): the exchange ends here, the
                // starter learns nothing from silence it would not learn
                // from an equal digest.
                if !reply && records.iter().chain(&live).any(|d| *d) {
                    self.send_digests(from, true);
                }
                self.push_buckets(from, &records);
                self.send_members(from, &live);
                true
            }
            SyncMessage::Digest { reply, buckets } => {
                if buckets.len() != BUCKETS {
                    return false;
                }
                if !reply {
                    self.send_legacy_digests(from);
                }
                let differ = self.records_differ(&buckets);
                self.push_buckets(from, &differ);
                true
            }
            SyncMessage::Push { records } => {
                let mut s = lock(&self.store);
                for r in records {
                    if s.apply(r, false) {
                        self.stats.synced_records += 1;
                        self.stats.synced_since += 1;
                    }
                }
                true
            }
            SyncMessage::Live { buckets } => {
                if buckets.len() != BUCKETS {
                    return false;
                }
                let differ = self.live_differ(&buckets);
                self.send_members(from, &differ);
                true
            }
            SyncMessage::Members { members } => {
                // Applied by foca's own rules: a member it holds down stays
                // down, a suspicion is only lifted by a newer incarnation,
                // an update about this node is refuted. Not re-broadcast:
                // the others learn it by their own exchanges.
                let before = self.foca.num_members();
                let mut io = io!(self);
                let active = members.into_iter().filter(|m| m.state() != State::Down);
                let ok = self.foca.apply_many(active, false, &mut io).is_ok();
                let learned = self.foca.num_members().saturating_sub(before) as u64;
                self.stats.synced_members += learned;
                self.stats.synced_since += learned;
                ok
            }
        }
    }

    /// Per bucket, whether another node's records digest (`BUCKETS` long)
    /// differs from ours.
    fn records_differ(&self, theirs: &[u64]) -> Vec<bool> {
        let s = lock(&self.store);
        s.buckets.iter().zip(theirs).map(|(a, b)| a != b).collect()
    }

    /// Per bucket, whether another node's liveness digest (`BUCKETS` long)
    /// differs from ours.
    fn live_differ(&self, theirs: &[u32]) -> Vec<bool> {
        let mine = self.live_digest();
        mine.iter().zip(theirs).map(|(a, b)| a != b).collect()
    }

    /// Sends `to` this node's records of the buckets marked in `differ`.
    fn push_buckets(&mut self, to: SocketAddrV4, differ: &[bool]) {
        if !differ.iter().any(|d| *d) {
            return;
        }
        let records: Vec<Arc<NodeRecord>> = lock(&self.store)
            .records
            .iter()
            .filter(|r| differ[bucket_of(&r.0.name)])
            .map(|r| r.0.clone())
            .collect();
        self.push_records(to, records);
    }

    /// Sends `to` the members this node holds active (itself included) of
    /// the liveness buckets marked in `differ`.
    fn send_members(&mut self, to: SocketAddrV4, differ: &[bool]) {
        if !differ.iter().any(|d| *d) {
            return;
        }
        let me = *self.foca.identity();
        let mut members: Vec<Member<Id>> = self
            .foca
            .iter_members()
            .filter(|m| differ[live_bucket(m.id().addr)])
            .cloned()
            .collect();
        if differ[live_bucket(me.addr)] {
            members.push(Member::alive(me));
        }
        for chunk in members.chunks(MEMBERS_PER_CHUNK) {
            let m = SyncMessage::<NodeRecord>::Members {
                members: chunk.to_vec(),
            };
            let body = postcard::to_allocvec(&m).expect("plain data serialises");
            io!(self).send(to, KIND_SYNC, &body);
        }
    }

    /// Sends `records` in datagrams of at most [`SYNC_CHUNK`] bytes.
    fn push_records(&mut self, to: SocketAddrV4, records: Vec<Arc<NodeRecord>>) {
        let mut chunk: Vec<&NodeRecord> = Vec::new();
        let mut size = 0;
        let flush = |this: &mut Self, chunk: &mut Vec<&NodeRecord>| {
            if chunk.is_empty() {
                return;
            }
            let m = SyncMessage::Push {
                records: std::mem::take(chunk),
            };
            let body = postcard::to_allocvec(&m).expect("plain data serialises");
            io!(this).send(to, KIND_SYNC, &body);
        };
        for r in &records {
            let len = r.encode().len();
            if size + len > SYNC_CHUNK {
                flush(self, &mut chunk);
                size = 0;
            }
            size += len;
            chunk.push(r);
        }
        flush(self, &mut chunk);
    }

    /// This node's record.
    pub fn record(&self) -> &NodeRecord {
        &self.me
    }

    /// This node's foca identity.
    pub fn id(&self) -> Id {
        *self.foca.identity()
    }

    /// Counters.
    pub fn stats(&self) -> SwimStats {
        SwimStats {
            members_down: lock(&self.store).downs,
            ..self.stats
        }
    }

    /// Grows on every change of a record or of who is alive: a reader
    /// that saw the same value has nothing to rebuild.
    pub fn changes(&self) -> u64 {
        lock(&self.store).changes
    }

    /// Number of records known (this node's included).
    pub fn known(&self) -> usize {
        lock(&self.store).records.len()
    }

    /// Number of live members (this node excluded).
    pub fn live_members(&self) -> usize {
        lock(&self.store).live.len()
    }

    /// The record of `name`, if known.
    pub fn record_of(&self, name: &str) -> Option<NodeRecord> {
        lock(&self.store)
            .records
            .get(name)
            .map(|r| NodeRecord::clone(&r.0))
    }

    /// Whether `name`'s known generation is alive (this node: always).
    pub fn is_live(&self, name: &str) -> bool {
        let s = lock(&self.store);
        s.records.get(name).is_some_and(|r| s.is_live(&r.0))
    }

    /// Whether foca holds the member at `addr` alive (any generation).
    pub fn is_addr_live(&self, addr: SocketAddrV4) -> bool {
        lock(&self.store).live.contains_key(&addr)
    }

    /// The library-agnostic view the claim rule and the topology read.
    pub fn view(&self) -> View {
        self.view_with(std::iter::empty())
    }

    /// [`Swim::view`] with the `extra` members this node has no record of
    /// (a name it has a record of is left to that record).
    pub fn view_with<'a>(&self, extra: impl IntoIterator<Item = Seen<'a>>) -> View {
        let s = lock(&self.store);
        let parsed: Vec<(&NodeRecord, bool, crate::gossip::view::Record)> = s
            .records
            .iter()
            .map(|r| (&*r.0, s.is_live(&r.0), r.0.to_view()))
            .collect();
        let mut seen: Vec<Seen<'_>> = parsed
            .iter()
            .map(|(r, live, v)| Seen {
                name: &r.name,
                generation: r.generation,
                gossip_addr: SocketAddr::V4(r.gossip_addr),
                live: *live,
                record: v,
            })
            .collect();
        for e in extra {
            if !s.records.contains(e.name) {
                seen.push(e);
            }
        }
        let mut view = View::build(seen);
        view.cut_off = s.cut_off();
        view
    }
}

/// `d` ± 10 %, so that periodic exchanges of a cluster started at once do
/// not stay in step.
fn jitter(rng: &mut SplitMix, d: Duration) -> Duration {
    let f = 0.9 + 0.2 * (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u8, key: Option<Key>) -> Swim {
        let addr = SocketAddrV4::new([10, 0, 0, i].into(), 6783);
        let record = NodeRecord {
            name: format!("n{i}"),
            generation: 1,
            seq: 0,
            gossip_addr: addr,
            ip: [10, 0, 0, i].into(),
            vxlan_port: 4789,
            version: "test".into(),
            stopping: false,
            claims: Vec::new(),
            forgets: Vec::new(),
        };
        let seeds = vec![SocketAddrV4::new([10, 0, 0, 1].into(), 6783)];
        let mut config = SwimConfig::new(record, seeds, 2);
        config.key = key;
        Swim::new(config).expect("valid config")
    }

    /// Two nodes on a virtual clock, delivering at once.
    struct Pair {
        nodes: [Swim; 2],
        timers: Vec<(Duration, usize, SwimTimer)>,
        now: Duration,
    }

    impl Pair {
        fn new(key: Option<Key>) -> Self {
            let mut nodes = [node(1, key.clone()), node(2, key)];
            nodes[0].start().unwrap();
            nodes[1].start().unwrap();
            Self {
                nodes,
                timers: Vec::new(),
                now: Duration::ZERO,
            }
        }

        /// Runs for `d`; returns every datagram sent, with its destination.
        fn run(&mut self, d: Duration) -> Vec<(SocketAddrV4, Vec<u8>)> {
            let end = self.now + d;
            let mut wire = Vec::new();
            loop {
                let mut moved = true;
                while moved {
                    moved = false;
                    for i in 0..2 {
                        let out = self.nodes[i].take_outbox();
                        let now = self.now;
                        self.timers
                            .extend(out.timers.into_iter().map(|(a, t)| (now + a, i, t)));
                        for (to, data) in out.sends {
                            moved = true;
                            let from = self.nodes[i].record().gossip_addr;
                            if let Some(j) =
                                (0..2).find(|j| self.nodes[*j].record().gossip_addr == to)
                            {
                                self.nodes[j].handle_datagram(from, &data);
                            }
                            wire.push((to, data));
                        }
                    }
                }
                self.timers.sort_by_key(|(at, _, _)| *at);
                if self.timers.is_empty() || self.timers[0].0 > end {
                    self.now = end;
                    return wire;
                }
                let (at, i, t) = self.timers.remove(0);
                self.now = at;
                self.nodes[i].handle_timer(t);
            }
        }
    }

    #[test]
    fn two_nodes_join_learn_records_and_a_clean_stop_is_announced() {
        let mut pair = Pair::new(Some(Key::derive(b"pw", "c")));
        pair.run(Duration::from_secs(3));
        let nodes = &mut pair.nodes;
        assert!(nodes[0].is_live("n2") && nodes[1].is_live("n1"));
        assert_eq!(
            nodes[1].record_of("n1").unwrap().ip,
            std::net::Ipv4Addr::new(10, 0, 0, 1)
        );
        nodes[0].update(|r| r.vxlan_port = 8472).unwrap();
        pair.run(Duration::from_secs(2));
        let nodes = &mut pair.nodes;
        assert_eq!(nodes[1].record_of("n1").unwrap().vxlan_port, 8472);
        nodes[0].leave().unwrap();
        pair.run(Duration::from_secs(1));
        let nodes = &mut pair.nodes;
        let seen = nodes[1].record_of("n1").unwrap();
        assert!(seen.stopping, "the clean stop did not spread: {seen:?}");
        assert!(!nodes[1].is_live("n1"), "a node that left is still live");
        let v = nodes[1].view();
        assert!(v.members["n1"].record.stopping && !v.members["n1"].live);
    }

    #[test]
    fn a_node_whose_probes_mostly_go_unanswered_is_cut_off_and_has_no_quorum() {
        let mut s = Store::new("n1".into(), None);
        let peer = |i: u8| SocketAddrV4::new([10, 0, 0, i].into(), 6783);
        s.live.insert(
            peer(2),
            Id {
                addr: peer(2),
                generation: 1,
                bump: 0,
            },
        );
        // Answered probes, directly or forwarded.
        for n in 0..REACH_WINDOW as u8 {
            s.probed(n, peer(n % 5 + 2));
            s.answered(n, peer(n % 5 + 2));
        }
        assert!(!s.cut_off());
        // An answer for another target or probe number counts for nothing.
        for n in 100..100 + REACH_WINDOW as u8 / 2 + REACH_PENDING as u8 {
            s.probed(n, peer(2));
            s.answered(n, peer(3));
            s.answered(n + 1, peer(2));
        }
        assert!(!s.cut_off(), "half the window failed: not yet");
        s.probed(200, peer(2));
        assert!(s.cut_off(), "most of the window failed");
        // Probes still in flight are not counted as failures.
        for n in 0..REACH_WINDOW as u8 {
            s.probed(n, peer(4));
            s.answered(n, peer(4));
        }
        for n in 50..50 + REACH_PENDING as u8 {
            s.probed(n, peer(4));
        }
        assert!(!s.cut_off());
        // With no member alive the stale window says nothing.
        for n in 60..60 + REACH_WINDOW as u8 + REACH_PENDING as u8 {
            s.probed(n, peer(4));
        }
        assert!(s.cut_off());
        s.live.clear();
        assert!(!s.cut_off());
        let mut view = View {
            cut_off: true,
            ..View::default()
        };
        let claimer = crate::gossip::claims::Claimer::new(
            "n1",
            1,
            crate::gossip::claims::ClaimConfig {
                range: "10.32.0.0/12".parse().unwrap(),
                block_prefix: 24,
                settle: Duration::from_secs(30),
                low_water: 1,
                must_join: false,
            },
            Default::default(),
        );
        assert!(!claimer.has_quorum(&view), "a cut-off node has a quorum");
        view.cut_off = false;
        assert!(claimer.has_quorum(&view), "a node alone in its own cluster");
    }

    #[test]
    fn without_a_password_a_datagram_of_another_cluster_name_is_dropped() {
        let mut pair = Pair::new(None);
        pair.run(Duration::from_secs(2));
        let from = SocketAddrV4::new([10, 0, 0, 9].into(), 6783);
        let n1 = &mut pair.nodes[0];
        let (before, known) = (n1.stats(), n1.known());
        let mut other = Sealer::new(None, 9, 1);
        let mut payload = MAGIC.to_vec();
        payload.extend_from_slice(&record::fnv1a(b"another-cluster").to_le_bytes());
        payload.push(KIND_SYNC);
        let mut datagram = Vec::new();
        other.seal(&payload, &mut datagram);
        assert_eq!(n1.handle_datagram(from, &datagram), Received::OtherCluster);
        // Too short to carry the cluster.
        let mut short = Vec::new();
        other.seal(&MAGIC, &mut short);
        assert_eq!(n1.handle_datagram(from, &short), Received::Undecodable);
        let after = n1.stats();
        assert_eq!(after.other_cluster, before.other_cluster + 1);
        assert_eq!(n1.known(), known);
        assert!(
            n1.take_outbox().sends.is_empty(),
            "answered another cluster"
        );
    }

    #[test]
    fn forged_replayed_and_foreign_datagrams_are_counted_and_change_nothing() {
        let key = Some(Key::derive(b"pw", "c"));
        let mut pair = Pair::new(key.clone());
        let wire = pair.run(Duration::from_secs(1));
        let nodes = &mut pair.nodes;
        let to_n1 = SocketAddrV4::new([10, 0, 0, 1].into(), 6783);
        let from = SocketAddrV4::new([10, 0, 0, 2].into(), 6783);
        let (_, captured) = wire.iter().find(|(to, _)| *to == to_n1).unwrap().clone();
        let before = (nodes[0].stats(), nodes[0].known());
        // Replayed capture.
        nodes[0].handle_datagram(from, &captured);
        // Forged: another password.
        let mut forger = Sealer::new(Some(Key::derive(b"wrong", "c")), 9, 1);
        let mut forged = Vec::new();
        let mut evil = MAGIC.to_vec();
        evil.push(KIND_SYNC);
        forger.seal(&evil, &mut forged);
        nodes[0].handle_datagram(from, &forged);
        // Flipped bit in a genuine datagram.
        let mut flipped = captured.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 1;
        nodes[0].handle_datagram(from, &flipped);
        // Garbage.
        nodes[0].handle_datagram(from, b"junk");
        // Authentic but of another protocol (the previous release's).
        let mut old = Sealer::new(key, 10, 1);
        let mut foreign = Vec::new();
        old.seal(b"\x00chitchat envelope", &mut foreign);
        nodes[0].handle_datagram(from, &foreign);
        let after = nodes[0].stats();
        assert_eq!(after.rejected, before.0.rejected + 4, "{after:?}");
        assert_eq!(after.foreign, before.0.foreign + 1, "{after:?}");
        assert_eq!(nodes[0].known(), before.1);
        assert!(
            nodes[0].take_outbox().sends.is_empty(),
            "answered a rejected datagram"
        );
    }

    #[test]
    fn pushed_members_are_learned_alive_but_never_revive_one_held_down() {
        let key = Some(Key::derive(b"pw", "c"));
        let mut n1 = node(1, key.clone());
        let id = |i: u8| Id {
            addr: SocketAddrV4::new([10, 0, 0, i].into(), 6783),
            generation: 1,
            bump: 0,
        };
        // n9 is known and was declared down.
        let mut io = io!(n1);
        n1.foca
            .apply_many([Member::down(id(9))].into_iter(), false, &mut io)
            .unwrap();
        let mut sealer = Sealer::new(key.clone(), 2, 1);
        let mut push = |members: Vec<Member<Id>>| {
            let mut payload = MAGIC.to_vec();
            payload.extend_from_slice(&record::fnv1a(b"overlay").to_le_bytes());
            payload.push(KIND_SYNC);
            payload.extend(
                postcard::to_allocvec(&SyncMessage::<NodeRecord>::Members { members }).unwrap(),
            );
            let mut datagram = Vec::new();
            sealer.seal(&payload, &mut datagram);
            datagram
        };
        let from = id(2).addr;
        let got = n1.handle_datagram(
            from,
            &push(vec![Member::alive(id(8)), Member::alive(id(9))]),
        );
        assert_eq!(got, Received::Accepted);
        assert!(
            n1.is_addr_live(id(8).addr),
            "a pushed member was not learned"
        );
        assert!(!n1.is_addr_live(id(9).addr), "a member held down came back");
        assert_eq!(n1.stats().synced_members, 1);
        // A suspicion of n8 at a newer incarnation stands: it is refuted
        // by n8 itself, not by a push.
        let suspect = push(vec![Member::new(id(8), 1, State::Suspect)]);
        assert_eq!(n1.handle_datagram(from, &suspect), Received::Accepted);
        let alive = push(vec![Member::alive(id(8))]);
        assert_eq!(n1.handle_datagram(from, &alive), Received::Accepted);
        let m8 = n1.foca.iter_members().find(|m| *m.id() == id(8)).unwrap();
        assert_eq!((m8.state(), m8.incarnation()), (State::Suspect, 1));
    }

    #[test]
    fn liveness_digests_of_two_nodes_that_agree_are_equal() {
        let mut pair = Pair::new(None);
        pair.run(Duration::from_secs(3));
        let [a, b] = &pair.nodes;
        assert_eq!(a.live_digest(), b.live_digest());
        assert_ne!(a.live_digest(), vec![0; BUCKETS]);
    }

    #[test]
    fn an_exchange_in_sync_is_one_datagram_and_a_difference_is_answered() {
        let mut pair = Pair::new(None);
        pair.run(Duration::from_secs(3));
        let [a, b] = &mut pair.nodes;
        let from = a.record().gossip_addr;
        let exchange = |a: &mut Swim, b: &mut Swim| {
            a.handle_timer(SwimTimer::Sync);
            let sends = a.take_outbox().sends;
            assert_eq!(sends.len(), 1, "one datagram starts an exchange");
            assert_eq!(b.handle_datagram(from, &sends[0].1), Received::Accepted);
            b.take_outbox().sends
        };
        assert!(exchange(a, b).is_empty(), "answered an exchange in sync");
        // b holds a member alive that a does not know: b answers with its
        // digests and that member, and a learns it.
        let n9 = Id {
            addr: SocketAddrV4::new([10, 0, 0, 9].into(), 6783),
            generation: 1,
            bump: 0,
        };
        let mut io = io!(b);
        b.foca
            .apply_many([Member::alive(n9)].into_iter(), false, &mut io)
            .unwrap();
        let answer = exchange(a, b);
        assert!(answer.len() >= 2, "digests and members: {}", answer.len());
        let to_a = b.record().gossip_addr;
        for (_, d) in &answer {
            assert_eq!(a.handle_datagram(to_a, d), Received::Accepted);
        }
        assert!(a.is_addr_live(n9.addr), "the differing member was not sent");
        assert!(a.stats().synced_members >= 1);
    }

    #[test]
    fn an_exchange_started_by_an_earlier_build_is_answered_in_its_format() {
        let mut n1 = node(1, None);
        n1.start().unwrap();
        let _ = n1.take_outbox();
        let mut payload = MAGIC.to_vec();
        payload.extend_from_slice(&record::fnv1a(b"overlay").to_le_bytes());
        payload.push(KIND_SYNC);
        let digest = SyncMessage::<NodeRecord>::Digest {
            reply: false,
            buckets: vec![0; BUCKETS],
        };
        payload.extend(postcard::to_allocvec(&digest).unwrap());
        let mut datagram = Vec::new();
        Sealer::new(None, 2, 1).seal(&payload, &mut datagram);
        let from = SocketAddrV4::new([10, 0, 0, 2].into(), 6783);
        assert_eq!(n1.handle_datagram(from, &datagram), Received::Accepted);
        let bodies: Vec<SyncMessage<NodeRecord>> = n1
            .take_outbox()
            .sends
            .iter()
            .map(|(_, d)| {
                let payload = Opener::new(None).open(d).unwrap();
                postcard::from_bytes(&payload[MAGIC.len() + 9..]).unwrap()
            })
            .collect();
        assert!(
            matches!(
                bodies.as_slice(),
                [
                    SyncMessage::Digest { reply: true, .. },
                    SyncMessage::Live { .. },
                    SyncMessage::Push { .. }
                ]
            ),
            "{bodies:?}"
        );
    }
}
