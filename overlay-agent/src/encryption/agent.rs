//! The agent's side of `--encryption wireguard`: this node's key pair and
//! announce, the device process (started unless one already serves, and
//! left running when the agent stops, so that encrypted flows survive an
//! agent restart), and the device's configuration file, written from the
//! topology by diff.
//!
//! Files under the state directory: `wireguard.key` (0600),
//! `wireguard.json` (the configuration the device follows),
//! `wireguard-status.json` (what the device reports every second) and
//! `wireguard.log` (the device's log when the agent started it).

use std::{
    collections::BTreeSet,
    fs, io,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    DEVICE, OVERHEAD,
    announce::Announce,
    keys::{self, KeyError},
    service::{self, Status},
    userspace::{DeviceConfig, DeviceStats, PeerConfig},
};
use crate::topology::Node;

/// Seconds a WireGuard session lasts without a new handshake (REJECT_AFTER_TIME).
const SESSION_LIFETIME_S: f64 = 180.0;

/// How long a rotation waits for the device to report the new key before
/// publishing it.
const KEY_TAKEN: Duration = Duration::from_secs(3);

/// How long the agent waits for a device it started to create its
/// interface.
const DEVICE_START: Duration = Duration::from_secs(10);

/// Why encryption could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    /// The key pair.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A file under the state directory.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
    /// The device process could not be started.
    #[error("starting the WireGuard device process ({exe})")]
    Spawn {
        /// The program.
        exe: PathBuf,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
    /// The device did not bring its interface up in time.
    #[error("the WireGuard device did not create {DEVICE} within {DEVICE_START:?}: see {log}")]
    NoDevice {
        /// The device's log.
        log: PathBuf,
    },
}

/// Encryption as `status` and `/metrics` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// This node's public key (base64).
    pub public_key: String,
    /// The device's UDP port.
    pub port: u16,
    /// The device process, while it reports (`None`: no report, or its
    /// process is gone).
    pub device_pid: Option<u32>,
    /// The device's counters (drops by reason).
    pub stats: Option<DeviceStats>,
    /// Every node this one sends pod traffic to through WireGuard.
    pub peers: Vec<PeerReport>,
}

impl Report {
    /// Renders the report for humans.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nEncryption: WireGuard on UDP {}, public key {}, device {}",
            self.port,
            self.public_key,
            match self.device_pid {
                Some(pid) => format!("process {pid}"),
                None => "NOT RUNNING (pod traffic to other nodes is dropped)".to_owned(),
            }
        );
        if let Some(st) = &self.stats {
            let _ = writeln!(
                s,
                "  {} packets sent, {} received; dropped: {} no peer, {} malformed, {} rejected, \
                 {} spoofed source; {} held for a handshake (dropped beyond 256 a peer)",
                st.tx_packets,
                st.rx_packets,
                st.no_peer,
                st.malformed,
                st.rejected,
                st.spoofed_source,
                st.no_session
            );
        }
        for p in &self.peers {
            let _ = writeln!(
                s,
                "  {:<16} {:<13} last handshake {}, {} B sent, {} B received",
                p.node_ip.to_string(),
                if p.encrypted {
                    "encrypted"
                } else {
                    "NO SESSION"
                },
                p.last_handshake_s
                    .map(|h| format!("{h:.0} s ago"))
                    .unwrap_or_else(|| "never".into()),
                p.tx_bytes,
                p.rx_bytes
            );
        }
        s
    }
}

/// One peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerReport {
    /// Its node IP.
    pub node_ip: Ipv4Addr,
    /// Its public key (base64).
    pub public_key: String,
    /// Whether a WireGuard session is established (a handshake completed
    /// within the last 3 minutes, after which WireGuard rekeys).
    pub encrypted: bool,
    /// Seconds since the last completed handshake.
    pub last_handshake_s: Option<f64>,
    /// Plaintext bytes sent to it.
    pub tx_bytes: u64,
    /// Plaintext bytes received from it.
    pub rx_bytes: u64,
}

/// Where the files live.
#[derive(Clone, Debug)]
pub struct Files {
    /// The private key.
    pub key: PathBuf,
    /// The device configuration.
    pub config: PathBuf,
    /// The device status.
    pub status: PathBuf,
    /// The device's log (when the agent starts it).
    pub log: PathBuf,
}

impl Files {
    /// The files under `state_dir`.
    pub fn under(state_dir: &Path) -> Self {
        Self {
            key: state_dir.join("wireguard.key"),
            config: state_dir.join("wireguard.json"),
            status: state_dir.join("wireguard-status.json"),
            log: state_dir.join("wireguard.log"),
        }
    }
}

/// The agent's handle on encryption.
#[derive(Debug)]
pub struct Encryptor {
    files: Files,
    announce: Announce,
    port: u16,
    mtu: u32,
    /// The configuration last written (or found at start).
    written: Option<DeviceConfig>,
}

impl Encryptor {
    /// Loads or creates the key pair and reads the configuration an
    /// earlier agent left (kept as it is until the topology is known, so
    /// that a restart changes nothing of the running device).
    pub fn prepare(state_dir: &Path, port: u16, uplink_mtu: u32) -> Result<Self, EncryptionError> {
        let files = Files::under(state_dir);
        let pair = keys::load_or_create(&files.key)?;
        let written = service::read_config(&files.config).ok();
        Ok(Self {
            announce: Announce {
                public_key: pair.public_base64(),
                port,
            },
            port,
            mtu: uplink_mtu.saturating_sub(OVERHEAD),
            files,
            written,
        })
    }

    /// What this node publishes.
    pub fn announce(&self) -> &Announce {
        &self.announce
    }

    /// The files.
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// Makes sure a device process serves this node's configuration:
    /// keeps one that does (its status names a live process), starts one
    /// otherwise, and waits for its interface. Returns the interface's
    /// index.
    pub fn ensure_device(&mut self) -> Result<u32, EncryptionError> {
        if self.written.is_none() {
            // A first start: no peers until the topology is applied.
            self.write(self.desired(Vec::new()))?;
        }
        let running = service::read_status(&self.files.status).ok().filter(alive);
        match running {
            Some(s) => info!(
                pid = s.pid,
                "a WireGuard device already serves this node: keeping it"
            ),
            None => self.spawn()?,
        }
        let deadline = Instant::now() + DEVICE_START;
        loop {
            if let Ok(i) = crate::link::ifindex(DEVICE) {
                return Ok(i);
            }
            if Instant::now() >= deadline {
                return Err(EncryptionError::NoDevice {
                    log: self.files.log.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the device again if its process is gone (it crashed, or
    /// someone killed it): while it is away its interface drops every pod
    /// packet for other nodes. Returns whether it had to.
    pub fn revive(&mut self) -> Result<bool, EncryptionError> {
        if service::read_status(&self.files.status)
            .ok()
            .is_some_and(|s| alive(&s))
        {
            return Ok(false);
        }
        warn!("the WireGuard device is not running: starting it again");
        self.spawn()?;
        Ok(true)
    }

    fn spawn(&self) -> Result<(), EncryptionError> {
        let exe = std::env::current_exe().map_err(|source| EncryptionError::Spawn {
            exe: PathBuf::from("overlay-agent"),
            source,
        })?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.files.log)
            .map_err(|source| EncryptionError::Io {
                what: "opening",
                path: self.files.log.clone(),
                source,
            })?;
        let err = log.try_clone().map_err(|source| EncryptionError::Io {
            what: "opening",
            path: self.files.log.clone(),
            source,
        })?;
        use std::os::unix::process::CommandExt as _;
        let mut child = Command::new(&exe)
            .arg("wireguard")
            .arg("--config")
            .arg(&self.files.config)
            .arg("--status")
            .arg(&self.files.status)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            // Its own process group: a Ctrl-C meant for the agent does not
            // stop encryption.
            .process_group(0)
            .spawn()
            .map_err(|source| EncryptionError::Spawn {
                exe: exe.clone(),
                source,
            })?;
        info!(pid = child.id(), log = %self.files.log.display(), "started the WireGuard device");
        // Reaped when it exits (it outlives this agent otherwise).
        std::thread::Builder::new()
            .name("wireguard-wait".into())
            .spawn(move || match child.wait() {
                Ok(s) if s.success() => info!("the WireGuard device stopped"),
                Ok(s) => warn!(status = %s, "the WireGuard device exited"),
                Err(e) => warn!(error = %e, "waiting for the WireGuard device"),
            })
            .map_err(|source| EncryptionError::Spawn { exe, source })?;
        Ok(())
    }

    /// Takes a key the key file holds now if it differs from the one
    /// published (`overlay-agent rotate-key` wrote it, or [`Encryptor::rotate`]):
    /// the device is told to re-read it (the configuration is written
    /// again, which it notices), and the new announce is returned for
    /// gossip to publish. `None` when the key is unchanged.
    pub fn reload_key(&mut self) -> Result<Option<Announce>, EncryptionError> {
        let pair = keys::load_or_create(&self.files.key)?;
        let public_key = pair.public_base64();
        if public_key == self.announce.public_key {
            return Ok(None);
        }
        self.announce.public_key = public_key;
        let config = self
            .written
            .clone()
            .unwrap_or_else(|| self.desired(Vec::new()));
        self.write(config)?;
        info!(public_key = %self.announce.public_key, "WireGuard key rotated");
        Ok(Some(self.announce.clone()))
    }

    /// Makes a new key pair, replacing the key file, and takes it
    /// ([`Encryptor::reload_key`]).
    pub fn rotate(&mut self) -> Result<Announce, EncryptionError> {
        keys::store(&self.files.key, &keys::KeyPair::generate()).map_err(|source| {
            EncryptionError::Io {
                what: "writing",
                path: self.files.key.clone(),
                source,
            }
        })?;
        Ok(self.reload_key()?.unwrap_or_else(|| self.announce.clone()))
    }

    /// Brings the device's peers in line with `nodes` (the routed nodes
    /// other than this one): every one that announces a key gets a peer
    /// at its node IP with its blocks as allowed IPs. A key announced by
    /// two nodes (or equal to ours) is given to none of them: one of them
    /// is lying, and the device refuses a configuration with a key twice.
    /// Writes the file only when it changes; returns whether it did.
    pub fn sync<'a>(
        &mut self,
        nodes: impl Iterator<Item = &'a Node>,
    ) -> Result<bool, EncryptionError> {
        let mut peers: Vec<PeerConfig> = nodes
            .filter_map(|n| {
                let a = n.wireguard.as_ref()?;
                Some(PeerConfig {
                    public_key: a.public_key.clone(),
                    endpoint: SocketAddrV4::new(n.ip, a.port),
                    allowed_ips: n.blocks.clone(),
                })
            })
            .collect();
        let mut seen = BTreeSet::new();
        let mut twice = BTreeSet::new();
        seen.insert(self.announce.public_key.clone());
        twice.insert(self.announce.public_key.clone());
        for p in &peers {
            if !seen.insert(p.public_key.clone()) {
                twice.insert(p.public_key.clone());
            }
        }
        peers.retain(|p| {
            let keep = !twice.contains(&p.public_key);
            if !keep {
                warn!(peer = %p.endpoint.ip(), key = %p.public_key,
                    "WireGuard key announced by another node too (or ours): no session with either");
            }
            keep
        });
        peers.sort_by_key(|p| *p.endpoint.ip());
        let want = self.desired(peers);
        if self.written.as_ref() == Some(&want) {
            return Ok(false);
        }
        self.write(want)?;
        Ok(true)
    }

    /// Peers in the configuration last written: node IP → public key.
    pub fn peers(&self) -> Vec<(Ipv4Addr, String)> {
        self.written
            .iter()
            .flat_map(|c| c.peers.iter())
            .map(|p| (*p.endpoint.ip(), p.public_key.clone()))
            .collect()
    }

    /// The configured peers with what the device last reported of each.
    pub fn report(&self) -> Report {
        let status = service::read_status(&self.files.status).ok().filter(alive);
        let peers = self
            .peers()
            .into_iter()
            .map(|(node_ip, public_key)| {
                let p = status
                    .as_ref()
                    .and_then(|s| s.peers.iter().find(|p| p.public_key == public_key));
                let last = p.and_then(|p| p.last_handshake_s);
                PeerReport {
                    node_ip,
                    public_key,
                    encrypted: last.is_some_and(|s| s < SESSION_LIFETIME_S),
                    last_handshake_s: last,
                    tx_bytes: p.map_or(0, |p| p.tx_bytes),
                    rx_bytes: p.map_or(0, |p| p.rx_bytes),
                }
            })
            .collect();
        Report {
            public_key: self.announce.public_key.clone(),
            port: self.port,
            device_pid: status.as_ref().map(|s| s.pid),
            stats: status.map(|s| s.stats),
            peers,
        }
    }

    fn desired(&self, peers: Vec<PeerConfig>) -> DeviceConfig {
        DeviceConfig {
            device: DEVICE.to_owned(),
            listen_port: self.port,
            mtu: self.mtu,
            key_file: self.files.key.clone(),
            peers,
        }
    }

    fn write(&mut self, config: DeviceConfig) -> Result<(), EncryptionError> {
        service::write_json(&self.files.config, &config).map_err(|source| EncryptionError::Io {
            what: "writing",
            path: self.files.config.clone(),
            source,
        })?;
        info!(peers = config.peers.len(), "WireGuard peers written");
        self.written = Some(config);
        Ok(())
    }
}

/// Waits (at most 3 s, without any lock held) until the device whose
/// status file is `status` reports `announce`'s key: the device first,
/// then the peers, since a peer that learned the new key before the device
/// took it would handshake in vain and retry only after WireGuard's 5 s.
/// Returns at once when no device runs.
pub fn wait_until_device_has(status: &Path, announce: &Announce) {
    let deadline = Instant::now() + KEY_TAKEN;
    while service::read_status(status)
        .ok()
        .is_some_and(|s| alive(&s) && s.public_key != announce.public_key)
    {
        if Instant::now() >= deadline {
            warn!(
                "the WireGuard device did not report the new key within {KEY_TAKEN:?}: publishing it anyway"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the process a status names is alive and a WireGuard device.
fn alive(s: &Status) -> bool {
    is_device_process(s.pid)
}

/// Whether `pid` is a live `overlay-agent wireguard` process (a PID read
/// from a status file may have been reused since).
pub fn is_device_process(pid: u32) -> bool {
    pid != 0
        && fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.split(|b| *b == 0).any(|w| w == b"wireguard"))
}

/// Stops the device process a status file names (if it is alive) and
/// removes its interface: `--encryption off` and uninstall. Idempotent.
pub fn stop_device(status: &Path) -> Result<(), EncryptionError> {
    if let Ok(s) = service::read_status(status)
        && alive(&s)
    {
        // SAFETY: plain syscall.
        unsafe { libc::kill(s.pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{}", s.pid)).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        info!(pid = s.pid, "stopped the WireGuard device");
    }
    let _ = fs::remove_file(status);
    crate::netlink::delete_device(DEVICE)
        .map(|_| ())
        .map_err(|e| EncryptionError::Io {
            what: "deleting the interface",
            path: PathBuf::from(DEVICE),
            source: io::Error::other(crate::cni::error::chain(&e)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encryption::keys::KeyPair;

    fn node(ip: &str, block: &str, key: Option<&str>) -> Node {
        Node {
            ip: ip.parse().unwrap(),
            blocks: vec![block.parse().unwrap()],
            alive: true,
            wireguard: key.map(|k| Announce {
                public_key: k.to_owned(),
                port: 51820,
            }),
        }
    }

    #[test]
    fn peers_follow_the_topology_by_diff_and_a_key_announced_twice_gets_no_peer() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = Encryptor::prepare(dir.path(), 51820, 1500).unwrap();
        let key = std::fs::metadata(dir.path().join("wireguard.key")).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
        let (a, b) = (
            KeyPair::generate().public_base64(),
            KeyPair::generate().public_base64(),
        );
        let nodes = [
            node("10.0.0.3", "10.44.3.0/24", Some(&b)),
            node("10.0.0.2", "10.44.2.0/24", Some(&a)),
            node("10.0.0.4", "10.44.4.0/24", None),
        ];
        assert!(e.sync(nodes.iter()).unwrap());
        let c = service::read_config(&dir.path().join("wireguard.json")).unwrap();
        assert_eq!(c.mtu, 1440);
        assert_eq!(c.peers.len(), 2, "the node without a key is no peer");
        assert_eq!(c.peers[0].public_key, a);
        assert_eq!(c.peers[0].endpoint, "10.0.0.2:51820".parse().unwrap());
        assert_eq!(
            c.peers[0].allowed_ips,
            vec!["10.44.2.0/24".parse().unwrap()]
        );
        assert!(!e.sync(nodes.iter()).unwrap(), "unchanged: not written");

        // A node that copies another's key, and one that copies ours.
        let ours = e.announce().public_key.clone();
        let nodes = [
            node("10.0.0.2", "10.44.2.0/24", Some(&a)),
            node("10.0.0.3", "10.44.3.0/24", Some(&b)),
            node("10.0.0.5", "10.44.5.0/24", Some(&a)),
            node("10.0.0.6", "10.44.6.0/24", Some(&ours)),
        ];
        assert!(e.sync(nodes.iter()).unwrap());
        assert_eq!(
            e.peers(),
            vec![("10.0.0.3".parse().unwrap(), b.clone())],
            "the copied keys get no peer"
        );

        // A restarted agent takes the same key and the file as it was.
        let again = Encryptor::prepare(dir.path(), 51820, 1500).unwrap();
        assert_eq!(again.announce(), e.announce());
        assert_eq!(again.peers(), e.peers());
    }

    #[test]
    fn a_rotation_replaces_the_key_and_rewrites_the_configuration_a_reload_takes_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = Encryptor::prepare(dir.path(), 51820, 1500).unwrap();
        let config = dir.path().join("wireguard.json");
        assert!(e.sync(std::iter::empty()).unwrap() || config.exists());
        let before = e.announce().clone();
        assert_eq!(
            e.reload_key().unwrap(),
            None,
            "unchanged key: nothing to publish"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let written = std::fs::metadata(&config).unwrap().modified().unwrap();
        let after = e.rotate().unwrap();
        assert_ne!(after.public_key, before.public_key);
        assert_eq!(e.announce(), &after);
        use std::os::unix::fs::PermissionsExt as _;
        let key = std::fs::metadata(dir.path().join("wireguard.key")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
        assert!(
            std::fs::metadata(&config).unwrap().modified().unwrap() > written,
            "the device must be told to re-read the key"
        );
        // `overlay-agent rotate-key` writes the file; the agent takes it.
        let by_hand = KeyPair::generate();
        keys::store(&dir.path().join("wireguard.key"), &by_hand).unwrap();
        let taken = e.reload_key().unwrap().expect("a new key");
        assert_eq!(taken.public_key, by_hand.public_base64());
    }
}
