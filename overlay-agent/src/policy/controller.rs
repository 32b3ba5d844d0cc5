//! Keeps the policy maps in step with the API: Pods (all namespaces),
//! Namespaces and NetworkPolicies are listed and watched (relisted on 410,
//! with backoff on errors) by one thread each into a shared store; an
//! applier thread compiles the store with this node's endpoints and
//! updates the maps by diff whenever either changes.
//!
//! Nothing is written before all three collections were listed once: an
//! agent restarting keeps enforcing what its predecessor left. An API
//! event reaches the maps within the applier's wake-up (immediate) plus
//! one compile; the endpoints of the node are re-read every
//! [`ENDPOINT_POLL`], so a new pod is isolated at most that long after its
//! address shows in the API.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use super::{
    compile::{Compiled, Identities, Inputs, Problem, compile},
    maps::PolicyMaps,
    report::{IsolatedPod, PolicyReport},
    types::{Namespace, NetworkPolicy, Pod},
};
use crate::{
    cni::error::chain,
    k8s::{KubeClient, KubeError, ObjectEvent},
};

/// How often the applier re-reads this node's endpoints.
pub const ENDPOINT_POLL: Duration = Duration::from_millis(250);

/// Collection paths of the three kinds watched.
pub const PODS_PATH: &str = "/api/v1/pods";
/// See [`PODS_PATH`].
pub const NAMESPACES_PATH: &str = "/api/v1/namespaces";
/// See [`PODS_PATH`].
pub const POLICIES_PATH: &str = "/apis/networking.k8s.io/v1/networkpolicies";

/// `timeoutSeconds` of one watch.
const WATCH_TIMEOUT_SECS: u32 = 60;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The objects as the API has them now.
#[derive(Default)]
struct Store {
    pods: BTreeMap<String, Pod>,
    namespaces: BTreeMap<String, Namespace>,
    policies: BTreeMap<String, NetworkPolicy>,
    /// Pods, Namespaces, NetworkPolicies listed at least once.
    synced: [bool; 3],
    /// Bumped on every change.
    generation: u64,
}

struct Shared {
    store: Mutex<Store>,
    changed: Condvar,
    stop: AtomicBool,
    report: Mutex<PolicyReport>,
    maps: Mutex<PolicyMaps>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Waits `d` or until stopped; true if stopped.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut s = self.lock();
        while !self.stopped() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// A running policy controller; dropping it stops its threads (the watch
/// threads end at their next check, within one watch timeout).
pub struct PolicyController {
    shared: Arc<Shared>,
}

/// The local endpoints (pod addresses of this node).
pub type LocalEndpoints = Arc<dyn Fn() -> BTreeSet<Ipv4Addr> + Send + Sync>;

impl PolicyController {
    /// Starts the watch threads, the applier and (with `events`) the
    /// "blocked by" logger. `maps` are this node's policy maps, `local`
    /// reads its endpoints.
    pub fn spawn(
        client: Arc<KubeClient>,
        maps: PolicyMaps,
        events: Option<super::events::Events>,
        local: LocalEndpoints,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            report: Mutex::new(PolicyReport::default()),
            maps: Mutex::new(maps),
        });
        spawn_watch::<Pod>(
            &client,
            &shared,
            PODS_PATH,
            "Pods",
            0,
            |s| &mut s.pods,
            Pod::key,
        )?;
        spawn_watch::<Namespace>(
            &client,
            &shared,
            NAMESPACES_PATH,
            "Namespaces",
            1,
            |s| &mut s.namespaces,
            |n| n.metadata.name.clone(),
        )?;
        spawn_watch::<NetworkPolicy>(
            &client,
            &shared,
            POLICIES_PATH,
            "NetworkPolicies",
            2,
            |s| &mut s.policies,
            NetworkPolicy::key,
        )?;
        let applier = Applier {
            shared: shared.clone(),
            local,
            ids: Identities::default(),
            applied: None,
            seeded: false,
            problems: BTreeSet::new(),
        };
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("policy-apply".into())
            .spawn(move || span.in_scope(|| applier.run()))?;
        if let Some(mut events) = events {
            let shared = shared.clone();
            let span = tracing::Span::current();
            std::thread::Builder::new()
                .name("policy-log".into())
                .spawn(move || {
                    span.in_scope(|| {
                        while !shared.sleep(super::events::POLL) {
                            events.drain(&|ip| {
                                let s = shared.lock();
                                s.pods.values().find(|p| p.ipv4() == Some(ip)).map(Pod::key)
                            });
                        }
                    });
                })?;
        }
        Ok(Self { shared })
    }

    /// The report as of the last update, with the drop counters and
    /// tracked connections read now.
    pub fn report(&self) -> PolicyReport {
        let mut r = self
            .shared
            .report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let maps = self
            .shared
            .maps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let drops = maps.drops().unwrap_or_default();
        for p in &mut r.isolated {
            let d = drops.get(&p.ip).copied().unwrap_or_default();
            p.drops_ingress = d.ingress;
            p.drops_egress = d.egress;
        }
        r.tracked_connections = maps.tracked();
        r
    }
}

impl Drop for PolicyController {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        drop(self.shared.lock());
        self.shared.changed.notify_all();
    }
}

fn spawn_watch<T>(
    client: &Arc<KubeClient>,
    shared: &Arc<Shared>,
    path: &'static str,
    what: &'static str,
    index: usize,
    collection: fn(&mut Store) -> &mut BTreeMap<String, T>,
    key: fn(&T) -> String,
) -> std::io::Result<()>
where
    T: DeserializeOwned + Send + 'static,
{
    let client = client.clone();
    let shared = shared.clone();
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name(format!("watch-{}", what.to_lowercase()))
        .spawn(move || {
            span.in_scope(|| watch_loop(&client, &shared, path, what, index, collection, key));
        })?;
    Ok(())
}

/// List, then watch from the list's version; list again on 410 or error.
fn watch_loop<T: DeserializeOwned>(
    client: &KubeClient,
    shared: &Shared,
    path: &str,
    what: &'static str,
    index: usize,
    collection: fn(&mut Store) -> &mut BTreeMap<String, T>,
    key: fn(&T) -> String,
) {
    let mut backoff = BACKOFF_MIN;
    let mut last_error: Option<String> = None;
    let report = |e: &KubeError, last_error: &mut Option<String>| {
        let error = chain(e);
        if last_error.as_ref() != Some(&error) {
            warn!(error, "{what} list/watch failed; listing again");
            *last_error = Some(error);
        }
    };
    'relist: while !shared.stopped() {
        let list = match client.list_objects::<T>(path, what) {
            Ok(l) => l,
            Err(e) => {
                report(&e, &mut last_error);
                if shared.sleep(backoff) {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        if last_error.take().is_some() {
            info!("{what}: Kubernetes API reachable again");
        }
        debug!(count = list.items.len(), "listed {what}");
        {
            let mut s = shared.lock();
            *collection(&mut s) = list.items.into_iter().map(|o| (key(&o), o)).collect();
            s.synced[index] = true;
            s.generation += 1;
        }
        shared.changed.notify_all();
        let mut rv = list.resource_version;
        while !shared.stopped() {
            let started = Instant::now();
            let watched = client.watch_objects::<T>(path, what, &rv, WATCH_TIMEOUT_SECS, |event| {
                let mut s = shared.lock();
                let c = collection(&mut s);
                match event {
                    ObjectEvent::Added(o) | ObjectEvent::Modified(o) => {
                        c.insert(key(&o), o);
                    }
                    ObjectEvent::Deleted(o) => {
                        c.remove(&key(&o));
                    }
                    ObjectEvent::Bookmark => return,
                }
                s.generation += 1;
                drop(s);
                shared.changed.notify_all();
            });
            match watched {
                Ok(last) => {
                    backoff = BACKOFF_MIN;
                    if last == rv && started.elapsed() < BACKOFF_MIN && shared.sleep(BACKOFF_MIN) {
                        break 'relist;
                    }
                    rv = last;
                }
                Err(KubeError::Expired { message, .. }) => {
                    debug!(message, "{what} watch expired; listing again");
                    continue 'relist;
                }
                Err(e) => {
                    report(&e, &mut last_error);
                    if shared.sleep(backoff) {
                        break 'relist;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue 'relist;
                }
            }
        }
    }
    debug!("{what} watch thread stopped");
}

struct Applier {
    shared: Arc<Shared>,
    local: LocalEndpoints,
    ids: Identities,
    /// What the maps hold (`None`: not read yet).
    applied: Option<Compiled>,
    /// Identities taken over from the maps.
    seeded: bool,
    problems: BTreeSet<Problem>,
}

impl Applier {
    fn run(mut self) {
        let mut seen_generation = 0;
        let mut seen_local = BTreeSet::new();
        loop {
            {
                let s = self.shared.lock();
                let (s, _) = self
                    .shared
                    .changed
                    .wait_timeout_while(s, ENDPOINT_POLL, |s| {
                        s.generation == seen_generation && !self.shared.stopped()
                    })
                    .unwrap_or_else(PoisonError::into_inner);
                if self.shared.stopped() {
                    break;
                }
                if !s.synced.iter().all(|x| *x) {
                    continue;
                }
            }
            let local = (self.local)();
            let generation = self.shared.lock().generation;
            if generation == seen_generation && local == seen_local {
                continue;
            }
            // A failed update is retried at the next poll.
            if self.apply(&local) {
                seen_generation = generation;
                seen_local = local;
            }
        }
        debug!("policy applier stopped");
    }

    /// Compiles and updates the maps; false if the maps failed.
    fn apply(&mut self, local: &BTreeSet<Ipv4Addr>) -> bool {
        let started = Instant::now();
        let mut maps = self
            .shared
            .maps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.applied.is_none() {
            match maps.current() {
                Ok(c) => self.applied = Some(c),
                Err(e) => {
                    warn!(error = chain(&e), "reading the policy maps");
                    return false;
                }
            }
        }
        let (next, policies) = {
            let s = self.shared.lock();
            if !self.seeded {
                // Keep the numbers a predecessor wrote: a restart then
                // rewrites nothing.
                let current = self.applied.as_ref().map(|c| &c.identities);
                self.ids.seed(current.unwrap_or(&BTreeMap::new()), &s.pods);
                self.seeded = true;
            }
            let next = compile(
                &Inputs {
                    pods: &s.pods,
                    namespaces: &s.namespaces,
                    policies: &s.policies,
                    local,
                },
                &mut self.ids,
            );
            (next, s.policies.len())
        };
        let prev = self.applied.as_ref().expect("read above");
        let update = match maps.update(prev, &next) {
            Ok(u) => u,
            Err(e) => {
                // Some entries may be written: read the maps again next time.
                warn!(error = chain(&e), "updating the policy maps; will retry");
                self.applied = None;
                return false;
            }
        };
        drop(maps);
        let took = started.elapsed();
        let now: BTreeSet<Problem> = next.problems.iter().cloned().collect();
        for p in now.difference(&self.problems) {
            warn!(
                policy = p.policy,
                problem = p.message,
                "NetworkPolicy not fully applied"
            );
        }
        self.problems = now;
        if update.written + update.removed > 0 {
            info!(
                policies,
                isolated_pods = next.endpoints.len(),
                identities = next.identities.len(),
                rules = next.rules.len(),
                written = update.written,
                removed = update.removed,
                took_ms = took.as_millis() as u64,
                "NetworkPolicy applied"
            );
        }
        let report = PolicyReport {
            synced: true,
            policies,
            identities: next.identities.len(),
            rules: next.rules.len(),
            cidrs: next.cidrs.len(),
            tracked_connections: 0,
            last_written: update.written,
            last_removed: update.removed,
            last_update_ms: took.as_millis() as u64,
            isolated: isolated(&next),
            problems: next.problems.clone(),
        };
        *self
            .shared
            .report
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = report;
        self.applied = Some(next);
        true
    }
}

fn isolated(c: &Compiled) -> Vec<IsolatedPod> {
    c.endpoints
        .iter()
        .map(|(ip, flags)| {
            let pod = c.names.get(ip).cloned().unwrap_or_default();
            IsolatedPod {
                policies: c.selected.get(&pod).cloned().unwrap_or_default(),
                pod,
                ip: *ip,
                ingress: flags & overlay_common::POLICY_F_INGRESS != 0,
                egress: flags & overlay_common::POLICY_F_EGRESS != 0,
                drops_ingress: 0,
                drops_egress: 0,
            }
        })
        .collect()
}
