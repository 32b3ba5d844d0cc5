//! What an attacker on the underlay can throw at a node's gossip port: a
//! gossip node of its own (the agent's library, with the wrong password or
//! none) publishing claims that would steer pod traffic if they were
//! believed, raw datagrams (garbage, truncations), and genuine datagrams
//! captured off the wire and sent again.
//!
//! Everything runs in a namespace the test created; the gossip node runs on
//! a thread of its own and is stopped (and joined) by [`RogueNode::stop`] or
//! on drop.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ipnet::Ipv4Net;
use overlay_agent::gossip::{
    DEFAULT_GOSSIP_PORT, Gossip, GossipConfig,
    auth::{Key, SecureUdpTransport, WireCounters, WireStats},
    claims::ClaimConfig,
    status::{BlockState, GossipStatus},
    view::fnv1a,
};

use crate::{Netns, cluster::RANGE};

/// Cluster name the lab's agents run with (the agent's default): the key
/// is derived from the password and this name.
pub const CLUSTER_NAME: &str = "overlay";

/// How a rogue gossip node is set up.
#[derive(Clone, Debug)]
pub struct RogueConfig {
    /// Node name it gossips under.
    pub name: String,
    /// Underlay address it publishes and gossips from (must be on `netns`).
    pub ip: Ipv4Addr,
    /// Seeds it joins through (`ip:port`).
    pub seeds: Vec<String>,
    /// Password (`None`: unsealed datagrams).
    pub password: Option<String>,
    /// Extra keys published in its own gossip state, e.g. a forged
    /// `block:<cidr>` = `settled 1` claim on another node's block.
    pub forged: Vec<(String, String)>,
}

/// A gossip node run by the test in a namespace of its own.
pub struct RogueNode {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    status: Arc<Mutex<GossipStatus>>,
    wire: Arc<WireCounters>,
}

/// Gossip round interval of a rogue node (as the lab agents').
const ROGUE_INTERVAL: Duration = Duration::from_millis(200);

impl RogueNode {
    /// Starts the node in `netns`: it claims a block of the lab's range
    /// and settles it at once (it believes itself alone, and so has a
    /// quorum), and publishes `config.forged`. Panics if it cannot start.
    pub fn start(netns: &Netns, config: RogueConfig) -> Self {
        let path: PathBuf = netns.path();
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(GossipStatus::default()));
        let wire = Arc::new(WireCounters::default());
        let (started_tx, started_rx) = mpsc::channel::<Result<(), String>>();
        let thread = {
            let (stop, status, wire) = (stop.clone(), status.clone(), wire.clone());
            std::thread::spawn(move || {
                let ran = overlay_agent::netns::run_in(&path, move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("tokio runtime for the rogue node");
                    rt.block_on(run(config, stop, status, wire, started_tx));
                });
                ran.expect("entering the rogue namespace");
            })
        };
        let node = Self {
            stop,
            thread: Some(thread),
            status,
            wire,
        };
        match started_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => node,
            Ok(Err(e)) => panic!("rogue gossip node did not start: {e}"),
            Err(e) => panic!("rogue gossip node did not report its start within 10 s: {e}"),
        }
    }

    /// Its latest status.
    pub fn status(&self) -> GossipStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until it has settled a block of its own; returns its settled
    /// blocks, or panics after `timeout`.
    pub fn wait_settled(&self, timeout: Duration) -> Vec<Ipv4Net> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            let settled: Vec<Ipv4Net> = s
                .blocks
                .iter()
                .filter(|b| b.state == BlockState::Settled)
                .map(|b| b.block)
                .collect();
            if !settled.is_empty() {
                return settled;
            }
            assert!(
                Instant::now() < deadline,
                "rogue node settled no block within {timeout:?}: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its wire counters so far.
    pub fn wire(&self) -> WireStats {
        self.wire.snapshot()
    }

    /// Stops it, waits for its thread, and returns its final wire counters
    /// (after this nothing more is sent).
    pub fn stop(mut self) -> WireStats {
        self.halt();
        self.wire.snapshot()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take()
            && let Err(panic) = t.join()
            && !std::thread::panicking()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for RogueNode {
    fn drop(&mut self) {
        self.halt();
    }
}

async fn run(
    config: RogueConfig,
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<GossipStatus>>,
    wire: Arc<WireCounters>,
    started: mpsc::Sender<Result<(), String>>,
) {
    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let key = config
        .password
        .as_ref()
        .map(|pw| Key::derive(pw.as_bytes(), CLUSTER_NAME));
    let transport = SecureUdpTransport::new(
        key.clone(),
        fnv1a(config.name.as_bytes()),
        generation,
        wire.clone(),
    );
    let gc = GossipConfig {
        node_name: config.name.clone(),
        generation,
        node_ip: config.ip,
        vxlan_port: overlay_common::DEFAULT_VXLAN_PORT,
        gossip_addr: SocketAddr::new(config.ip.into(), DEFAULT_GOSSIP_PORT),
        seeds: config.seeds.clone(),
        cluster_id: CLUSTER_NAME.to_owned(),
        interval: ROGUE_INTERVAL,
        phi_threshold: 8.0,
        claims: ClaimConfig {
            range: RANGE.parse().expect("lab range"),
            block_prefix: 24,
            // Settle at the next round: the attacker wants a settled claim
            // on the wire as soon as possible.
            settle: Duration::ZERO,
            low_water: 1,
            must_join: false,
        },
        state_file: None,
        authenticated: key.is_some(),
        wireguard: None,
    };
    let free: overlay_agent::gossip::FreeAddresses = Arc::new(|_: &[Ipv4Net]| None);
    let gossip = match Gossip::spawn(gc, &transport, free, wire).await {
        Ok(g) => g,
        Err(e) => {
            let _ = started.send(Err(overlay_agent::cni::error::chain(&e)));
            return;
        }
    };
    {
        let cc = gossip
            .chitchat()
            .expect("the rogue speaks chitchat")
            .chitchat();
        let mut cc = cc.lock().await;
        for (k, v) in &config.forged {
            cc.self_node_state().set(k, v);
        }
    }
    let _ = started.send(Ok(()));
    while !stop.load(Ordering::Relaxed) {
        *status.lock().unwrap_or_else(|p| p.into_inner()) = gossip.status();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gossip.shutdown().await;
}

/// Sends each of `datagrams` from `netns` (from an ephemeral port) to `to`,
/// a few milliseconds apart so that none is lost to a full socket buffer.
pub fn send_datagrams(netns: &Netns, to: SocketAddr, datagrams: &[Vec<u8>]) {
    overlay_agent::netns::run_in(&netns.path(), || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind a UDP socket");
        for d in datagrams {
            socket
                .send_to(d, to)
                .unwrap_or_else(|e| panic!("sending {} bytes to {to}: {e}", d.len()));
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .expect("entering the sender's namespace");
}

/// Captures one unfragmented UDP datagram from `src` to `dst` (gossip
/// port) on `iface` in `netns` with tcpdump, within `timeout`; returns its
/// UDP payload.
pub fn capture_gossip_datagram(
    netns: &Netns,
    iface: &str,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    timeout: Duration,
) -> Vec<u8> {
    let file =
        std::env::temp_dir().join(format!("ovl-capture-{}.pcap", crate::netns::unique_tag()));
    let filter = format!(
        "udp and src host {src} and dst host {dst} and dst port {DEFAULT_GOSSIP_PORT} \
         and ip[6:2] & 0x3fff = 0"
    );
    let secs = timeout.as_secs().max(1).to_string();
    let out = netns
        .command(&[
            "timeout",
            &secs,
            "tcpdump",
            "-i",
            iface,
            "-n",
            "--immediate-mode",
            "-c",
            "1",
            "-w",
            &file.display().to_string(),
            &filter,
        ])
        .output()
        .expect("run tcpdump");
    let pcap = std::fs::read(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "tcpdump captured no gossip datagram {src} -> {dst} within {timeout:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    first_udp_payload(&pcap).unwrap_or_else(|| {
        panic!(
            "no UDP datagram in the capture ({} bytes of pcap)",
            pcap.len()
        )
    })
}

/// The UDP payload of the first packet of a classic pcap file of Ethernet
/// frames.
fn first_udp_payload(pcap: &[u8]) -> Option<Vec<u8>> {
    const GLOBAL_HEADER: usize = 24;
    const RECORD_HEADER: usize = 16;
    const ETHERNET: usize = 14;
    let magic = u32::from_le_bytes(pcap.get(..4)?.try_into().ok()?);
    if magic != 0xa1b2_c3d4 && magic != 0xa1b2_3c4d {
        return None;
    }
    let link_type = u32::from_le_bytes(pcap.get(20..24)?.try_into().ok()?);
    if link_type != 1 {
        return None;
    }
    let rec = pcap.get(GLOBAL_HEADER..)?;
    let incl = u32::from_le_bytes(rec.get(8..12)?.try_into().ok()?) as usize;
    let frame = rec.get(RECORD_HEADER..RECORD_HEADER + incl)?;
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(ETHERNET..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if *ip.get(9)? != 17 {
        return None;
    }
    let udp = ip.get(ihl..)?;
    let udp_len = usize::from(u16::from_be_bytes(udp.get(4..6)?.try_into().ok()?));
    Some(udp.get(8..udp_len)?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_payload_is_read_out_of_a_pcap_record() {
        let payload = b"OVL1 gossip";
        let mut udp = vec![0x1a, 0x7f, 0x1a, 0x7f];
        udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(payload);
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        ip.extend_from_slice(&[172, 31, 0, 2, 172, 31, 0, 1]);
        ip.extend_from_slice(&udp);
        let mut frame = vec![0; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&ip);
        let mut pcap = 0xa1b2_c3d4_u32.to_le_bytes().to_vec();
        pcap.extend_from_slice(&[2, 0, 4, 0]);
        pcap.extend_from_slice(&[0; 12]);
        pcap.extend_from_slice(&1_u32.to_le_bytes());
        pcap.extend_from_slice(&[0; 8]);
        pcap.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        pcap.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        pcap.extend_from_slice(&frame);
        assert_eq!(first_udp_payload(&pcap).as_deref(), Some(&payload[..]));
        assert_eq!(first_udp_payload(&pcap[..30]), None, "truncated capture");
    }
}
