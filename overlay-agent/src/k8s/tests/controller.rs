//! The controller end to end: a loopback API server, fake gossip members.

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use super::server::{Recorded, Reply, TestServer};
use crate::k8s::{
    client::{KubeClient, KubeSettings},
    controller::{Controller, ControllerConfig, Members},
};

/// Gossip as a table: the test flips liveness, `forget` records calls.
struct FakeMembers {
    me: String,
    peers: Mutex<Vec<(String, bool)>>,
    forgotten: Mutex<BTreeSet<String>>,
    forget_calls: Mutex<Vec<String>>,
}

impl FakeMembers {
    fn new(me: &str, peers: &[(&str, bool)]) -> Self {
        Self {
            me: me.into(),
            peers: Mutex::new(peers.iter().map(|&(n, a)| (n.to_owned(), a)).collect()),
            forgotten: Mutex::new(BTreeSet::new()),
            forget_calls: Mutex::new(Vec::new()),
        }
    }

    fn set_alive(&self, name: &str, alive: bool) {
        for p in lock(&self.peers).iter_mut() {
            if p.0 == name {
                p.1 = alive;
            }
        }
    }

    fn forget_calls(&self) -> Vec<String> {
        lock(&self.forget_calls).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait::async_trait]
impl Members for FakeMembers {
    fn me(&self) -> String {
        self.me.clone()
    }

    fn peers(&self) -> Vec<(String, bool)> {
        lock(&self.peers).clone()
    }

    fn forgotten(&self) -> BTreeSet<String> {
        lock(&self.forgotten).clone()
    }

    async fn forget(&self, name: &str) -> Result<(), String> {
        lock(&self.forget_calls).push(name.to_owned());
        if lock(&self.peers).iter().any(|(n, a)| n == name && *a) {
            return Err(format!("{name} is alive"));
        }
        lock(&self.forgotten).insert(name.to_owned());
        Ok(())
    }
}

/// Polls `cond` every 20 ms for 10 s at most.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fast() -> ControllerConfig {
    ControllerConfig {
        watch_timeout_secs: 1,
        tick: Duration::from_millis(50),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
    }
}

/// The API: the three-Node list, one watch with the recorded events, then
/// empty watches; patches answered with the patched Node.
fn api() -> TestServer {
    let watches = AtomicUsize::new(0);
    TestServer::start(move |req: &Recorded| {
        if req.method == "PATCH" {
            Reply::fixture(200, "node-patched.json")
        } else if req.is_watch() {
            if watches.fetch_add(1, Ordering::SeqCst) == 0 {
                Reply::fixture(200, "watch-nodes.jsonl")
            } else {
                Reply::json(200, "")
            }
        } else {
            Reply::fixture(200, "nodes.json")
        }
    })
}

fn client(server: &TestServer) -> Arc<KubeClient> {
    Arc::new(
        KubeClient::new(KubeSettings {
            api_server: server.url(),
            token_file: None,
            ca_file: None,
            timeout: Duration::from_secs(5),
        })
        .expect("a client"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_is_forgotten_once_when_dead_and_the_condition_set_once_when_ready() {
    let server = api();
    let members = Arc::new(FakeMembers::new(
        "cp-1",
        &[("worker-1", true), ("worker-2", true), ("worker-3", true)],
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let is_ready = ready.clone();
    let task = Controller::new(
        client(&server),
        members.clone(),
        Arc::new(move || is_ready.load(Ordering::SeqCst)),
    )
    .with_config(fast())
    .spawn(stop_rx);

    // The list, then the watch that carries DELETED worker-2.
    eventually("the list and the first watch", || {
        server.requests().iter().filter(|r| r.is_watch()).count() >= 2
    })
    .await;
    // Several ticks with worker-2 deleted but alive in gossip: no forget.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(members.forget_calls(), Vec::<String>::new());

    members.set_alive("worker-2", false);
    eventually("the forget call", || !members.forget_calls().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(members.forget_calls(), ["worker-2"], "exactly once");

    let patches = || {
        server
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH")
            .collect::<Vec<_>>()
    };
    assert!(patches().is_empty(), "not ready yet");
    ready.store(true, Ordering::SeqCst);
    eventually("the status patch", || !patches().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = patches();
    assert_eq!(sent.len(), 1, "exactly once: {sent:#?}");
    assert_eq!(sent[0].target, "/api/v1/nodes/cp-1/status");
    assert!(
        sent[0].body.contains("\"NetworkUnavailable\""),
        "{}",
        sent[0].body
    );

    stop_tx.send(true).expect("the controller listens");
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the controller stops promptly")
        .expect("the controller did not panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_does_not_forget_and_the_condition_is_retried_until_it_lands() {
    // worker-1 is not the leader (cp-1 is alive and a Node).
    let patches = Arc::new(AtomicUsize::new(0));
    let seen = patches.clone();
    let watches = AtomicUsize::new(0);
    let server = TestServer::start(move |req: &Recorded| {
        if req.method == "PATCH" {
            // The first two fail as an RBAC mistake would.
            if seen.fetch_add(1, Ordering::SeqCst) < 2 {
                Reply::fixture(403, "status-403.json")
            } else {
                Reply::fixture(200, "node-patched.json")
            }
        } else if req.is_watch() {
            if watches.fetch_add(1, Ordering::SeqCst) == 0 {
                Reply::fixture(200, "watch-nodes.jsonl")
            } else {
                Reply::json(200, "")
            }
        } else {
            Reply::fixture(200, "nodes.json")
        }
    });
    let members = Arc::new(FakeMembers::new(
        "worker-1",
        &[("cp-1", true), ("worker-2", false), ("worker-3", true)],
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = Controller::new(client(&server), members.clone(), Arc::new(|| true))
        .with_config(fast())
        .spawn(stop_rx);

    eventually("the patch to land after two refusals", || {
        patches.load(Ordering::SeqCst) >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(patches.load(Ordering::SeqCst), 3, "no patch after success");
    assert_eq!(members.forget_calls(), Vec::<String>::new(), "cp-1 leads");

    drop(stop_tx);
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("a dropped stop sender stops the controller")
        .expect("no panic");
}
