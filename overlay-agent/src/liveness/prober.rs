//! The prober: one UDP socket on this node's address, a probe to every
//! known peer's probe port each interval, and each peer's
//! [`DatapathState`] published on a `watch` channel as replies come and go.
//!
//! Cost: one 66-byte frame each way per peer per interval. The interval
//! stretches so that at most [`MAX_PROBES_PER_SEC`] probes leave the node
//! (200 peers at the 200 ms default; 1 s at 1,000 peers), and the timeout
//! stretches with it to at least three intervals.
//!
//! Forgery: a reply counts only if it comes from the probed peer's address
//! and probe port and carries one of the last nonces sent to that peer.
//! Nonces are HMAC-SHA256 of (peer, sequence) under a key drawn from the
//! kernel at start, so nobody who cannot see our probes can answer them;
//! anything else that reaches the socket is counted as rejected.

use std::{
    collections::{BTreeMap, VecDeque},
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{Arc, Mutex},
    time::Duration,
};

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::{net::UdpSocket, sync::watch, task::JoinHandle, time::Instant};
use tracing::{Instrument as _, debug, info, info_span, warn};

use super::{DatapathState, wire::Probe};
use crate::topology::Topology;

/// Ceiling on probes sent per second, whatever the cluster size.
pub const MAX_PROBES_PER_SEC: u32 = 1000;
/// Nonces remembered per peer: a reply to any of the last this many probes
/// counts (replies may be late or reordered).
const OUTSTANDING: usize = 16;

/// What the prober needs.
#[derive(Clone, Debug)]
pub struct ProberConfig {
    /// This node's underlay address (the probes' source).
    pub node_ip: Ipv4Addr,
    /// The peers' probe port.
    pub probe_port: u16,
    /// Time between two probes of one peer (before stretching).
    pub interval: Duration,
    /// Silence after which an answering datapath is declared down (before
    /// stretching).
    pub timeout: Duration,
}

impl ProberConfig {
    /// The interval and timeout in force with `peers` peers.
    pub fn effective(&self, peers: usize) -> (Duration, Duration) {
        let floor = Duration::from_secs(1) * peers as u32 / MAX_PROBES_PER_SEC;
        let interval = self.interval.max(floor);
        (interval, self.timeout.max(interval * 3))
    }
}

/// One peer as the prober sees it (part of `GET /status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerProbe {
    /// The peer's underlay address.
    pub ip: Ipv4Addr,
    /// What its datapath's answers say.
    pub state: DatapathState,
    /// Milliseconds since its last answer.
    pub last_answer_ms_ago: Option<u64>,
    /// Round trip of its last answer, µs.
    pub rtt_us: Option<u64>,
    /// Probes sent to it.
    pub sent: u64,
    /// Answers received from it.
    pub answered: u64,
}

/// The prober's counters and every peer (part of `GET /status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Probe port.
    pub port: u16,
    /// Interval in force, ms.
    pub interval_ms: u64,
    /// Timeout in force, ms.
    pub timeout_ms: u64,
    /// Probes sent.
    pub sent: u64,
    /// Answers accepted.
    pub answered: u64,
    /// Datagrams refused: not a probe, not from the probed peer's probe
    /// port, or carrying a nonce we did not send it (a forgery or a very
    /// late answer).
    pub rejected: u64,
    /// Every peer probed.
    pub peers: Vec<PeerProbe>,
}

/// Why the prober could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProberError {
    /// The socket could not be bound.
    #[error("binding the probe socket on {addr}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No key could be drawn from the kernel.
    #[error("reading a random key from /dev/urandom")]
    Random(#[source] io::Error),
}

/// A running prober.
pub struct Prober {
    states: watch::Receiver<BTreeMap<Ipv4Addr, DatapathState>>,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl Prober {
    /// Binds the socket and starts probing every node of `targets` but
    /// this one (alive or not: a silent agent's datapath is exactly what
    /// the probes are for).
    pub async fn spawn(
        config: ProberConfig,
        targets: watch::Receiver<Topology>,
    ) -> Result<Self, ProberError> {
        let addr = SocketAddr::V4(SocketAddrV4::new(config.node_ip, 0));
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| ProberError::Bind { addr, source })?;
        let mut key = [0u8; 32];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").map_err(ProberError::Random)?,
            &mut key,
        )
        .map_err(ProberError::Random)?;
        let (tx, states) = watch::channel(BTreeMap::new());
        let shared = Arc::new(Mutex::new(Shared {
            report: ProbeReport {
                port: config.probe_port,
                ..ProbeReport::default()
            },
        }));
        let (interval, timeout) = config.effective(0);
        info!(
            port = config.probe_port, ?interval, ?timeout,
            local = %socket.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            "probing the peers' datapaths"
        );
        let runner = Runner {
            socket,
            key,
            seq: 0,
            epoch: Instant::now(),
            tracks: BTreeMap::new(),
            config,
            targets,
            states: tx,
            shared: shared.clone(),
            sent: 0,
            answered: 0,
            rejected: 0,
        };
        let task = tokio::spawn(runner.run().instrument(info_span!("probes")));
        Ok(Self {
            states,
            shared,
            task,
        })
    }

    /// Each peer's datapath state, updated as it changes.
    pub fn states(&self) -> watch::Receiver<BTreeMap<Ipv4Addr, DatapathState>> {
        self.states.clone()
    }

    /// Counters and peers as of the last change.
    pub fn report(&self) -> ProbeReport {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .report
            .clone()
    }

    /// Stops probing.
    pub async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

struct Shared {
    report: ProbeReport,
}

/// What the prober keeps per peer.
struct Track {
    /// Nonces of the last probes, with when each left.
    outstanding: VecDeque<(u64, Instant)>,
    last_answer: Option<Instant>,
    rtt: Option<Duration>,
    sent: u64,
    answered: u64,
}

impl Track {
    fn new() -> Self {
        Self {
            outstanding: VecDeque::with_capacity(OUTSTANDING),
            last_answer: None,
            rtt: None,
            sent: 0,
            answered: 0,
        }
    }

    fn state(&self, now: Instant, timeout: Duration) -> DatapathState {
        match self.last_answer {
            Some(at) if now.duration_since(at) <= timeout => DatapathState::Up,
            Some(_) => DatapathState::Down,
            None => DatapathState::Unknown,
        }
    }
}

struct Runner {
    socket: UdpSocket,
    key: [u8; 32],
    seq: u64,
    epoch: Instant,
    tracks: BTreeMap<Ipv4Addr, Track>,
    config: ProberConfig,
    targets: watch::Receiver<Topology>,
    states: watch::Sender<BTreeMap<Ipv4Addr, DatapathState>>,
    shared: Arc<Mutex<Shared>>,
    sent: u64,
    answered: u64,
    rejected: u64,
}

impl Runner {
    async fn run(mut self) {
        self.retarget();
        let mut next = Instant::now();
        let mut buf = [0u8; 64];
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {
                    self.round().await;
                    let (interval, _) = self.config.effective(self.tracks.len());
                    next += interval;
                    let now = Instant::now();
                    if next < now {
                        next = now + interval;
                    }
                    self.publish();
                }
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        self.answer(&buf[..n], from);
                        self.publish();
                    }
                    Err(e) => {
                        // ICMP errors surface here on Linux (a peer's port
                        // unreachable); nothing to do but go on.
                        debug!(error = %e, "probe socket");
                    }
                },
                changed = self.targets.changed() => {
                    if changed.is_err() {
                        // The topology's source is gone: keep the last
                        // targets.
                        std::future::pending::<()>().await;
                    }
                    self.retarget();
                    self.publish();
                }
            }
        }
    }

    /// Follows the topology: every node but this one is probed.
    fn retarget(&mut self) {
        let me = self.config.node_ip;
        let want: Vec<Ipv4Addr> = self
            .targets
            .borrow_and_update()
            .nodes
            .iter()
            .map(|n| n.ip)
            .filter(|ip| *ip != me)
            .collect();
        self.tracks.retain(|ip, _| want.contains(ip));
        for ip in want {
            self.tracks.entry(ip).or_insert_with(Track::new);
        }
    }

    fn nonce(&mut self, ip: Ipv4Addr) -> u64 {
        self.seq += 1;
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(&ip.octets());
        mac.update(&self.seq.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        u64::from_be_bytes(tag[..8].try_into().expect("8 of 32 bytes"))
    }

    async fn round(&mut self) {
        let ips: Vec<Ipv4Addr> = self.tracks.keys().copied().collect();
        for ip in ips {
            let nonce = self.nonce(ip);
            let now = Instant::now();
            let probe = Probe {
                nonce,
                sent_ns: now.duration_since(self.epoch).as_nanos() as u64,
            };
            let to = SocketAddr::V4(SocketAddrV4::new(ip, self.config.probe_port));
            if let Err(e) = self.socket.send_to(&probe.encode(), to).await {
                debug!(peer = %ip, error = %e, "sending a probe");
                continue;
            }
            self.sent += 1;
            let t = self.tracks.get_mut(&ip).expect("listed above");
            t.sent += 1;
            if t.outstanding.len() == OUTSTANDING {
                t.outstanding.pop_front();
            }
            t.outstanding.push_back((nonce, now));
        }
    }

    fn answer(&mut self, payload: &[u8], from: SocketAddr) {
        let (SocketAddr::V4(from), Some(probe)) = (from, Probe::decode(payload)) else {
            self.rejected += 1;
            return;
        };
        let track = match self.tracks.get_mut(from.ip()) {
            Some(t) if from.port() == self.config.probe_port => t,
            _ => {
                self.rejected += 1;
                return;
            }
        };
        let Some(pos) = track
            .outstanding
            .iter()
            .position(|(n, _)| *n == probe.nonce)
        else {
            self.rejected += 1;
            return;
        };
        let (_, sent_at) = track.outstanding.remove(pos).expect("found above");
        let now = Instant::now();
        track.rtt = Some(now.duration_since(sent_at));
        track.last_answer = Some(now);
        track.answered += 1;
        self.answered += 1;
    }

    /// Publishes the report and every peer's state (waking the daemon only
    /// on a change), logging each change of state.
    fn publish(&mut self) {
        let now = Instant::now();
        let (interval, timeout) = self.config.effective(self.tracks.len());
        let states: BTreeMap<Ipv4Addr, DatapathState> = self
            .tracks
            .iter()
            .map(|(ip, t)| (*ip, t.state(now, timeout)))
            .collect();
        let before = self.states.borrow().clone();
        for (ip, s) in &states {
            let was = before.get(ip).copied().unwrap_or_default();
            match (was, *s) {
                (a, b) if a == b => {}
                (_, DatapathState::Up) => info!(peer = %ip, "peer's datapath answers probes"),
                (_, DatapathState::Down) => warn!(
                    peer = %ip, ?timeout,
                    "peer's datapath stopped answering probes: its routes are withdrawn"
                ),
                _ => {}
            }
        }
        let report = ProbeReport {
            port: self.config.probe_port,
            interval_ms: interval.as_millis() as u64,
            timeout_ms: timeout.as_millis() as u64,
            sent: self.sent,
            answered: self.answered,
            rejected: self.rejected,
            peers: self
                .tracks
                .iter()
                .map(|(ip, t)| PeerProbe {
                    ip: *ip,
                    state: states.get(ip).copied().unwrap_or_default(),
                    last_answer_ms_ago: t
                        .last_answer
                        .map(|a| now.duration_since(a).as_millis() as u64),
                    rtt_us: t.rtt.map(|r| r.as_micros() as u64),
                    sent: t.sent,
                    answered: t.answered,
                })
                .collect(),
        };
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).report = report;
        // The report first: whoever wakes on a change of state reads a
        // report that already holds it.
        self.states.send_if_modified(|s| {
            if *s == states {
                false
            } else {
                *s = states.clone();
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Node;

    /// A peer on loopback whose "datapath" echoes probes back from the
    /// probe port, as the eBPF program does, while `echo` is set.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_make_a_peer_up_silence_makes_it_down_and_forgeries_are_rejected() {
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = peer.local_addr().unwrap().port();
        let topo = Topology {
            nodes: vec![Node {
                ip: Ipv4Addr::LOCALHOST,
                blocks: Vec::new(),
                alive: true,
                wireguard: None,
            }],
        };
        let (_tx, rx) = watch::channel(topo);
        let prober = Prober::spawn(
            ProberConfig {
                node_ip: Ipv4Addr::new(127, 0, 0, 2),
                probe_port: port,
                interval: Duration::from_millis(20),
                timeout: Duration::from_millis(150),
            },
            rx,
        )
        .await
        .unwrap();
        let mut states = prober.states();
        let state = |s: &watch::Receiver<BTreeMap<Ipv4Addr, DatapathState>>| {
            s.borrow().get(&Ipv4Addr::LOCALHOST).copied()
        };
        let wait_for = |want: DatapathState| {
            let mut states = states.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(5), async {
                    while state(&states) != Some(want) {
                        states.changed().await.unwrap();
                    }
                })
                .await
                .unwrap_or_else(|_| panic!("the peer never became {want:?}"));
            }
        };

        // A forger on another port, and the peer itself with a nonce it
        // made up: both rejected, the peer stays unknown.
        let mut buf = [0u8; 64];
        let (n, prober_addr) = peer.recv_from(&mut buf).await.unwrap();
        let sent = Probe::decode(&buf[..n]).expect("a probe");
        let forger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        forger.send_to(&sent.encode(), prober_addr).await.unwrap();
        let made_up = Probe {
            nonce: sent.nonce ^ 1,
            ..sent
        };
        peer.send_to(&made_up.encode(), prober_addr).await.unwrap();
        peer.send_to(b"garbage", prober_addr).await.unwrap();
        // Bounded wait for the prober to have read all three (a loaded
        // machine can delay it well past any fixed sleep).
        let deadline = Instant::now() + Duration::from_secs(5);
        while prober.report().rejected < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(state(&states), Some(DatapathState::Unknown));
        assert_eq!(prober.report().rejected, 3);
        assert_eq!(prober.report().answered, 0);

        // Echo for a while: up. The echo notes when it sent its last
        // answer: "down" may only come a timeout after that one.
        let last_echo = std::sync::Arc::new(std::sync::Mutex::new(Instant::now()));
        let echo = tokio::spawn({
            let last_echo = last_echo.clone();
            async move {
                let mut buf = [0u8; 64];
                loop {
                    let (n, from) = peer.recv_from(&mut buf).await.unwrap();
                    *last_echo.lock().unwrap() = Instant::now();
                    peer.send_to(&buf[..n], from).await.unwrap();
                }
            }
        });
        wait_for(DatapathState::Up).await;
        assert!(prober.report().answered > 0);
        let p = &prober.report().peers[0];
        assert_eq!(p.state, DatapathState::Up);
        assert!(p.rtt_us.is_some());

        // Stop echoing: down, but only once the timeout (150 ms) has
        // passed since the last answer left the peer.
        echo.abort();
        let _ = echo.await;
        wait_for(DatapathState::Down).await;
        let since = last_echo.lock().unwrap().elapsed();
        assert!(
            since >= Duration::from_millis(140),
            "down {since:?} after the last answer"
        );
        states.borrow_and_update();
        prober.shutdown().await;
    }

    #[test]
    fn the_interval_stretches_to_cap_the_rate_and_the_timeout_follows() {
        let c = ProberConfig {
            node_ip: Ipv4Addr::LOCALHOST,
            probe_port: 6785,
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            c.effective(3),
            (Duration::from_millis(200), Duration::from_secs(1))
        );
        assert_eq!(
            c.effective(200),
            (Duration::from_millis(200), Duration::from_secs(1))
        );
        assert_eq!(
            c.effective(1000),
            (Duration::from_secs(1), Duration::from_secs(3))
        );
        let (i, _) = c.effective(5000);
        assert_eq!(
            i,
            Duration::from_secs(5),
            "5000 peers: 1000 probes a second"
        );
    }

    #[test]
    fn a_peer_is_up_while_it_answers_down_once_silent_and_unknown_before() {
        let mut t = Track::new();
        let t0 = Instant::now();
        let timeout = Duration::from_secs(1);
        assert_eq!(t.state(t0, timeout), DatapathState::Unknown);
        t.last_answer = Some(t0);
        assert_eq!(
            t.state(t0 + Duration::from_millis(900), timeout),
            DatapathState::Up
        );
        assert_eq!(
            t.state(t0 + Duration::from_millis(1100), timeout),
            DatapathState::Down
        );
    }
}
