//! Nodes joined by the userspace WireGuard device (`overlay-agent
//! wireguard`), without the rest of the agent: each a namespace on a shared
//! underlay link, with a "pod" address on its loopback and a route to
//! the other nodes' pod blocks through the device.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    time::{Duration, Instant},
};

use ipnet::Ipv4Net;
use overlay_agent::encryption::{
    keys::{self, KeyPair},
    service::{self, Status},
    userspace::{DeviceConfig, PeerConfig},
};

use crate::{Netns, Process, cluster::bin_path, netns::unique_tag, run_ok};

/// The device's name in every node.
pub const DEVICE: &str = "ovl-wg";
/// Its UDP port.
pub const PORT: u16 = 51820;
/// Its MTU (underlay 1500 minus IPv4, UDP and WireGuard's 32 bytes).
pub const MTU: u32 = 1440;

/// One node.
pub struct WgNode {
    /// Its namespace.
    pub ns: Netns,
    /// Underlay address (on `eth0`).
    pub underlay: Ipv4Addr,
    /// Its pod block.
    pub block: Ipv4Net,
    /// Its "pod" address (first of the block, on `lo`: this kernel has no
    /// dummy interfaces).
    pub pod: Ipv4Addr,
    /// Its key pair (the file under `dir`).
    pub key: KeyPair,
    /// Configuration, status and key files.
    pub dir: PathBuf,
    /// The device process, once started.
    pub device: Option<Process>,
}

impl WgNode {
    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("wireguard.json")
    }

    /// The status file.
    pub fn status_path(&self) -> PathBuf {
        self.dir.join("status.json")
    }

    /// The key file.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("wireguard.key")
    }

    /// This node as a peer of the others.
    pub fn as_peer(&self) -> PeerConfig {
        PeerConfig {
            public_key: self.key.public_base64(),
            endpoint: SocketAddrV4::new(self.underlay, PORT),
            allowed_ips: vec![self.block],
        }
    }

    /// Writes the device configuration with `peers`.
    pub fn configure(&self, peers: Vec<PeerConfig>) {
        let c = DeviceConfig {
            device: DEVICE.into(),
            listen_port: PORT,
            mtu: MTU,
            key_file: self.key_path(),
            peers,
        };
        service::write_json(&self.config_path(), &c).expect("writing the WireGuard configuration");
    }

    /// Starts `overlay-agent wireguard`, waits for its device and routes
    /// the other blocks (`routes`) through it.
    pub fn start(&mut self, routes: &[Ipv4Net]) {
        let bin = bin_path("overlay-agent");
        let (config, status) = (self.config_path(), self.status_path());
        self.device = Some(self.ns.spawn(&[
            &bin.display().to_string(),
            "wireguard",
            "--config",
            &config.display().to_string(),
            "--status",
            &status.display().to_string(),
        ]));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.status().is_none() {
            assert!(
                Instant::now() < deadline,
                "{}: the WireGuard device did not come up",
                self.ns.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let pod = self.pod.to_string();
        for r in routes {
            self.ns.ip(&[
                "route",
                "replace",
                &r.to_string(),
                "dev",
                DEVICE,
                "src",
                &pod,
            ]);
        }
    }

    /// The device's last status, if it wrote one.
    pub fn status(&self) -> Option<Status> {
        service::read_status(&self.status_path()).ok()
    }

    /// Waits (bounded) until `pred` holds of the status.
    pub fn wait_status(&self, timeout: Duration, pred: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.status().filter(|s| pred(s)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{}: status never as expected: {:?}",
                self.ns.name,
                self.status()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Writes a new key pair to the key file `path` and returns it (a device
/// takes it with its next configuration).
pub fn new_key(path: &std::path::Path) -> KeyPair {
    let key = KeyPair::generate();
    keys::store(path, &key).expect("writing the key");
    key
}

impl Drop for WgNode {
    fn drop(&mut self) {
        // The device first (by PID), then its files.
        self.device.take();
        let _ = std::fs::remove_dir_all(&self.dir);
        // The last node's drop removes the directory they shared (empty
        // by then; before, this fails and leaves it).
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// `n` nodes on one underlay bridge: node `i` is `192.168.90.(i+1)` and owns
/// `10.44.(i+1).0/24`, its pod at `.1`. Devices not started.
pub fn nodes(n: usize) -> (Netns, Vec<WgNode>) {
    let tag = unique_tag();
    let hub = Netns::new(&tag, "wghub");
    hub.ip(&["link", "add", "br0", "type", "bridge"]);
    hub.ip(&["link", "set", "br0", "up"]);
    let dir = std::env::temp_dir().join(format!("ovl-wg-{tag}"));
    let mut out = Vec::new();
    for i in 0..n {
        let ns = Netns::new(&tag, &format!("wg{i}"));
        let port = format!("p{i}");
        Netns::veth_pair(&ns, "eth0", &hub, &port);
        hub.ip(&["link", "set", &port, "master", "br0", "up"]);
        let underlay = Ipv4Addr::new(192, 168, 90, i as u8 + 1);
        ns.ip(&["addr", "add", &format!("{underlay}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        let block: Ipv4Net = format!("10.44.{}.0/24", i + 1).parse().expect("block");
        let pod = Ipv4Addr::new(10, 44, i as u8 + 1, 1);
        ns.ip(&["addr", "add", &format!("{pod}/32"), "dev", "lo"]);
        let node_dir = dir.join(format!("n{i}"));
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let key = KeyPair::generate();
        keys::store(&node_dir.join("wireguard.key"), &key).expect("writing the key");
        out.push(WgNode {
            ns,
            underlay,
            block,
            pod,
            key,
            dir: node_dir,
            device: None,
        });
    }
    (hub, out)
}

/// Configures every node with every other as a peer and starts them all.
pub fn mesh(nodes: &mut [WgNode]) {
    let peers: Vec<PeerConfig> = nodes.iter().map(WgNode::as_peer).collect();
    let blocks: Vec<Ipv4Net> = nodes.iter().map(|n| n.block).collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        let others: Vec<PeerConfig> = peers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| p.clone())
            .collect();
        n.configure(others);
        let routes: Vec<Ipv4Net> = blocks.iter().filter(|b| **b != n.block).copied().collect();
        n.start(&routes);
    }
}

/// Captures on `ns`'s `iface` into a pcap file until dropped (stopped by
/// PID), at most `count` packets.
pub struct Capture {
    /// The pcap file.
    pub file: PathBuf,
    process: Process,
}

impl Capture {
    /// Starts `tcpdump` and waits until it listens.
    pub fn start(ns: &Netns, iface: &str, count: u32) -> Self {
        let file = std::env::temp_dir().join(format!("ovl-cap-{}.pcap", unique_tag()));
        let f = file.display().to_string();
        let process = ns.spawn(&[
            "tcpdump",
            "-i",
            iface,
            "-n",
            "-U",
            "-s",
            "0",
            "-c",
            &count.to_string(),
            "-w",
            &f,
        ]);
        // tcpdump creates the file once it listens.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !file.exists() {
            assert!(Instant::now() < deadline, "tcpdump did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        Self { file, process }
    }

    /// Stops the capture and returns its packets as `tcpdump -r` prints
    /// them, and the raw file's bytes.
    pub fn finish(self) -> (Vec<String>, Vec<u8>) {
        self.process.signal(libc::SIGINT);
        let mut p = self.process;
        let _ = p.wait_timeout(Duration::from_secs(5));
        let f = self.file.display().to_string();
        let text = run_ok(&["tcpdump", "-r", &f, "-n", "-nn"]);
        let raw = std::fs::read(&self.file).unwrap_or_default();
        let _ = std::fs::remove_file(&self.file);
        (text.lines().map(str::to_owned).collect(), raw)
    }
}

/// Asserts that no stretch of the first `window` bytes of `payload` is in
/// `raw` (a capture): 64 samples of 48 bytes, spread over the window.
pub fn assert_payload_not_in(raw: &[u8], payload: &crate::traffic::Payload, window: usize) {
    let data = std::fs::read(&payload.path).expect("payload");
    let window = window.min(data.len());
    let samples: Vec<&[u8]> = (0..64)
        .map(|k| {
            let at = (k * window / 64 + 100).min(data.len() - 48);
            &data[at..at + 48]
        })
        .collect();
    let heads: std::collections::HashSet<u64> = samples
        .iter()
        .map(|s| u64::from_le_bytes(s[..8].try_into().expect("8 bytes")))
        .collect();
    for at in 0..raw.len().saturating_sub(48) {
        let head = u64::from_le_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
        if heads.contains(&head) {
            assert!(
                !samples.contains(&&raw[at..at + 48]),
                "payload bytes crossed the underlay in clear"
            );
        }
    }
}
