//! What the agent does with the Kubernetes API: gossip seeds from the
//! Nodes' InternalIPs, reclaim of a deleted Node's blocks (by one agent of
//! the cluster), and the `NetworkUnavailable=False` condition.
//!
//! The decisions are pure functions ([`seeds_from`], [`to_reclaim`]); the
//! [`Controller`] only feeds them and acts.

use std::{
    collections::{BTreeMap, BTreeSet},
    iter,
    net::SocketAddrV4,
    sync::{
        Arc, Mutex, PoisonError,
        mpsc::{self, RecvTimeoutError},
    },
    time::{Duration, Instant},
};

use tokio::{sync::watch, task::JoinHandle};
use tracing::{Instrument as _, debug, info, info_span, warn};

use super::{
    client::{KubeClient, KubeError},
    types::{NodeList, WatchEvent},
};
use crate::cni::error::chain;

/// `IP:PORT` gossip seeds: every Node's IPv4 InternalIP with
/// `gossip_port`, sorted and deduplicated. Nodes without one are skipped.
/// This node's own address is among them when it is a Node.
pub fn seeds_from(list: &NodeList, gossip_port: u16) -> Vec<String> {
    list.items
        .iter()
        .filter_map(|n| n.internal_ipv4())
        .map(|ip| SocketAddrV4::new(ip, gossip_port))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|a| a.to_string())
        .collect()
}

/// The gossip membership as the controller needs it, a trait so that
/// tests need no network.
#[async_trait::async_trait]
pub trait Members: Send + Sync {
    /// This node's name, in gossip and as a Kubernetes Node.
    fn me(&self) -> String;
    /// Every gossip node known but this one, with whether the failure
    /// detector sees it alive.
    fn peers(&self) -> Vec<(String, bool)>;
    /// Names already forgotten cluster-wide (at their current generation:
    /// a node that came back after being forgotten must not be listed).
    fn forgotten(&self) -> BTreeSet<String>;
    /// Forgets `name` cluster-wide, returning its blocks to the pool. Fails
    /// (and must do nothing) if the node is alive.
    async fn forget(&self, name: &str) -> Result<(), String>;
}

/// The dead gossip nodes this agent must forget now, sorted. Empty unless
/// this agent is the leader.
///
/// - `k8s_nodes`: the Nodes the API has now (a complete list with the
///   watch events since applied); `deleted`: names with a DELETED event
///   since that list. A node is gone from Kubernetes if it is in `deleted`
///   or not in `k8s_nodes`.
/// - A node is forgotten only if it is gone from Kubernetes, gossip sees it
///   dead (`peers`), and it is not in `forgotten`. Gossip nodes that were
///   never seen as peers are ignored, whatever the API says.
/// - Leader: the smallest name among this node and its alive peers that
///   are still Nodes. Every agent computes the same leader from the same
///   inputs, so exactly one acts; when the leader dies the next one takes
///   over, and `forgotten` keeps it from repeating work.
/// - Nothing is done while `me` is not a listed Node: the list is not of
///   this cluster, not complete yet, or this node's gossip name is not its
///   Node name. Either way, absence from it proves nothing.
pub fn to_reclaim(
    me: &str,
    k8s_nodes: &BTreeSet<String>,
    deleted: &BTreeSet<String>,
    peers: &[(String, bool)],
    forgotten: &BTreeSet<String>,
) -> Vec<String> {
    let is_node = |n: &str| k8s_nodes.contains(n) && !deleted.contains(n);
    if !is_node(me) {
        return Vec::new();
    }
    let leader = peers
        .iter()
        .filter(|(name, alive)| *alive && is_node(name))
        .map(|(name, _)| name.as_str())
        .chain(iter::once(me))
        .min();
    if leader != Some(me) {
        return Vec::new();
    }
    peers
        .iter()
        .filter(|(name, alive)| !alive && name != me && !is_node(name) && !forgotten.contains(name))
        .map(|(name, _)| name.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Timings of the [`Controller`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// `timeoutSeconds` of one watch; the watch thread notices a stop at
    /// the latest this long (plus the client's timeout) after it.
    pub watch_timeout_secs: u32,
    /// Period of the reclaim check and of the readiness poll.
    pub tick: Duration,
    /// First wait after a failed call, doubled on each further failure.
    pub backoff_min: Duration,
    /// Longest wait between retries.
    pub backoff_max: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            watch_timeout_secs: 60,
            tick: Duration::from_secs(2),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Keeps the agent in step with the Kubernetes API: lists and watches
/// Nodes, reclaims the blocks of deleted ones, and sets
/// `NetworkUnavailable=False` once the datapath is ready.
pub struct Controller {
    client: Arc<KubeClient>,
    members: Arc<dyn Members>,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
    config: ControllerConfig,
}

impl Controller {
    /// A controller with the default [`ControllerConfig`]. `ready` says
    /// whether the datapath is up (polled every tick until it is).
    pub fn new(
        client: Arc<KubeClient>,
        members: Arc<dyn Members>,
        ready: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Self {
        Self {
            client,
            members,
            ready,
            config: ControllerConfig::default(),
        }
    }

    /// Replaces the timings.
    #[must_use]
    pub fn with_config(mut self, config: ControllerConfig) -> Self {
        self.config = config;
        self
    }

    /// Runs [`Controller::run`] as a task in the span `k8s`.
    pub fn spawn(self, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(self.run(stop).instrument(info_span!("k8s")))
    }

    /// Runs until `stop` turns true (or its sender is dropped).
    ///
    /// List and watch run on their own OS thread, which blocks in a watch
    /// for up to `watch_timeout_secs`. On stop it is detached, not joined:
    /// it holds only the client and the Node view, and ends by itself at
    /// its next check (the end of the current watch or backoff wait).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let view = Arc::new(Mutex::new(ApiView::default()));
        // Dropping the sender (at the end of this function, or when the
        // task is aborted) is the watch thread's stop signal.
        let (_thread_stop, thread_stop_rx) = mpsc::channel::<()>();
        let watcher = Watcher {
            client: self.client.clone(),
            view: view.clone(),
            config: self.config.clone(),
            stop: thread_stop_rx,
        };
        let span = tracing::Span::current();
        if let Err(e) = std::thread::Builder::new()
            .name("k8s-watch".into())
            .spawn(move || span.in_scope(|| watcher.run()))
        {
            warn!(
                error = chain(&e),
                "cannot start the Node watch thread: deleted Nodes will not be reclaimed"
            );
        }

        let mut state = State::new(&self.config);
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                _ = tick.tick() => {}
            }
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                () = self.step(&view, &mut state) => {}
            }
        }
        debug!("stopped");
    }

    /// One tick: the reclaim check, then the Node condition.
    async fn step(&self, view: &Mutex<ApiView>, state: &mut State) {
        self.reclaim(view, state).await;
        self.condition(state).await;
    }

    async fn reclaim(&self, view: &Mutex<ApiView>, state: &mut State) {
        let (nodes, deleted) = {
            let view = view.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(nodes) = &view.nodes else {
                return;
            };
            (nodes.clone(), view.deleted.clone())
        };
        let me = self.members.me();
        if !nodes.contains(&me) {
            if !state.warned_not_a_node {
                warn!(
                    node = me,
                    nodes = nodes.len(),
                    "this node's name is not among the listed Nodes: deleted Nodes are not \
                     reclaimed until it is (is the agent's node name the Node's name?)"
                );
                state.warned_not_a_node = true;
            }
            return;
        }
        state.warned_not_a_node = false;
        let peers = self.members.peers();
        let forgotten = self.members.forgotten();
        // A name forgotten by this agent stays done while it stays dead;
        // if it comes back, a later deletion is a new one.
        state
            .forgot
            .retain(|n| peers.iter().any(|(p, alive)| p == n && !alive));
        for node in to_reclaim(&me, &nodes, &deleted, &peers, &forgotten) {
            if state.forgot.contains(&node) {
                continue;
            }
            if !state.forget_errors.contains_key(&node) {
                info!(
                    node,
                    "Node deleted in Kubernetes: reclaiming its address blocks"
                );
            }
            match self.members.forget(&node).await {
                Ok(()) => {
                    state.forget_errors.remove(&node);
                    state.forgot.insert(node);
                }
                Err(error) => {
                    if state.forget_errors.get(&node) != Some(&error) {
                        warn!(node, error, "cannot forget the deleted Node; will retry");
                    }
                    state.forget_errors.insert(node, error);
                }
            }
        }
        state
            .forget_errors
            .retain(|n, _| peers.iter().any(|(p, _)| p == n));
    }

    async fn condition(&self, state: &mut State) {
        if state.condition_set || Instant::now() < state.condition_next || !(self.ready)() {
            return;
        }
        let node = self.members.me();
        let client = self.client.clone();
        let name = node.clone();
        let patched =
            tokio::task::spawn_blocking(move || client.set_network_available(&name)).await;
        match patched {
            Ok(Ok(())) => {
                info!(node, "Node condition NetworkUnavailable=False set");
                state.condition_set = true;
                return;
            }
            Ok(Err(e)) => state.condition_errors.log(&e),
            Err(e) => warn!(error = chain(&e), "the Node status patch did not finish"),
        }
        state.condition_next = Instant::now() + state.condition_backoff.next();
    }
}

/// The async side's memory between ticks.
struct State {
    /// Forgotten by this agent, still dead.
    forgot: BTreeSet<String>,
    /// The last error of forgetting each node, to log a change once.
    forget_errors: BTreeMap<String, String>,
    /// Warned that this node is not a listed Node.
    warned_not_a_node: bool,
    condition_set: bool,
    condition_next: Instant,
    condition_backoff: Backoff,
    condition_errors: ErrorLog,
}

impl State {
    fn new(config: &ControllerConfig) -> Self {
        Self {
            forgot: BTreeSet::new(),
            forget_errors: BTreeMap::new(),
            warned_not_a_node: false,
            condition_set: false,
            condition_next: Instant::now(),
            condition_backoff: Backoff::new(config),
            condition_errors: ErrorLog::new(
                "cannot set the Node condition NetworkUnavailable=False",
            ),
        }
    }
}

/// Returns once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped: the daemon is going away.
    let _ = stop.wait_for(|s| *s).await;
}

/// The Nodes as the API has them now.
#[derive(Debug, Default)]
struct ApiView {
    /// `None` until a complete list succeeded.
    nodes: Option<BTreeSet<String>>,
    /// DELETED since the last list (and not added back).
    deleted: BTreeSet<String>,
}

impl ApiView {
    fn relisted(&mut self, list: &NodeList) {
        self.nodes = Some(list.names().map(str::to_owned).collect());
        // The list is the truth now: a deleted Node is absent from it.
        self.deleted.clear();
    }

    fn apply(&mut self, event: &WatchEvent) {
        let nodes = self.nodes.get_or_insert_default();
        match event {
            WatchEvent::Added(n) | WatchEvent::Modified(n) => {
                let name = &n.metadata.name;
                self.deleted.remove(name);
                nodes.insert(name.clone());
            }
            WatchEvent::Deleted(n) => {
                let name = &n.metadata.name;
                debug!(node = %name, "Node deleted");
                nodes.remove(name);
                self.deleted.insert(name.clone());
            }
            WatchEvent::Bookmark(_) | WatchEvent::Error(_) => {}
        }
    }
}

/// The list+watch loop of the watch thread.
struct Watcher {
    client: Arc<KubeClient>,
    view: Arc<Mutex<ApiView>>,
    config: ControllerConfig,
    /// Disconnected when the controller stops.
    stop: mpsc::Receiver<()>,
}

impl Watcher {
    fn run(self) {
        let mut backoff = Backoff::new(&self.config);
        let mut errors = ErrorLog::new("Kubernetes Node list/watch failed; listing again");
        let mut expired_in_a_row = 0_u32;
        'relist: loop {
            if self.stopped() {
                break;
            }
            let mut rv = match self.client.list_nodes() {
                Ok(list) => {
                    debug!(
                        nodes = list.items.len(),
                        resource_version = list.metadata.resource_version,
                        "listed Nodes"
                    );
                    self.lock().relisted(&list);
                    errors.recovered();
                    list.metadata.resource_version
                }
                Err(e) => {
                    errors.log(&e);
                    if self.sleep(backoff.next()) {
                        break;
                    }
                    continue;
                }
            };
            loop {
                if self.stopped() {
                    break 'relist;
                }
                let started = Instant::now();
                let watched =
                    self.client
                        .watch_nodes(&rv, self.config.watch_timeout_secs, |event| {
                            self.lock().apply(&event);
                        });
                match watched {
                    Ok(last) => {
                        backoff.reset();
                        expired_in_a_row = 0;
                        // A server that ends watches at once must not make
                        // this a busy loop.
                        if last == rv
                            && started.elapsed() < self.config.backoff_min
                            && self.sleep(self.config.backoff_min)
                        {
                            break 'relist;
                        }
                        rv = last;
                    }
                    Err(KubeError::Expired { message, .. }) => {
                        debug!(message, "watch expired; listing again");
                        expired_in_a_row += 1;
                        // Once is normal (compaction); again at once is not.
                        if expired_in_a_row > 1 && self.sleep(backoff.next()) {
                            break 'relist;
                        }
                        continue 'relist;
                    }
                    Err(e) => {
                        errors.log(&e);
                        if self.sleep(backoff.next()) {
                            break 'relist;
                        }
                        continue 'relist;
                    }
                }
            }
        }
        debug!("Node watch thread stopped");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ApiView> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopped(&self) -> bool {
        !matches!(self.stop.try_recv(), Err(mpsc::TryRecvError::Empty))
    }

    /// Waits `d`; true if the controller stopped meanwhile.
    fn sleep(&self, d: Duration) -> bool {
        !matches!(self.stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
    }
}

/// Doubling waits between `backoff_min` and `backoff_max`.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(config: &ControllerConfig) -> Self {
        Self {
            min: config.backoff_min,
            max: config.backoff_max.max(config.backoff_min),
            next: config.backoff_min,
        }
    }

    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(self.max);
        d
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Logs an error when it differs from the previous one (a failure that
/// repeats every backoff is logged once, at debug after that), and the
/// recovery once.
#[derive(Debug)]
struct ErrorLog {
    what: &'static str,
    last: Option<String>,
}

impl ErrorLog {
    fn new(what: &'static str) -> Self {
        Self { what, last: None }
    }

    fn log(&mut self, e: &KubeError) {
        let error = chain(e);
        if self.last.as_ref() == Some(&error) {
            debug!(error, "{}", self.what);
        } else {
            warn!(error, "{}", self.what);
            self.last = Some(error);
        }
    }

    fn recovered(&mut self) {
        if self.last.take().is_some() {
            info!("Kubernetes API reachable again");
        }
    }
}
