//! `--encryption wireguard` in a [`Lab`], without the agent: what the
//! agent's `start_encryption` and topology sync do, done by hand on the
//! overlay nodes [`Lab::new`] installed. Each node gets a key, a device
//! configuration listing every other node as a peer (its underlay address,
//! its block), its own `overlay-agent wireguard` process, `from_wireguard`
//! on the device's interface, the encryption switch on in its maps and
//! `ROUTE_F_ENCRYPT` on every other node's block; `from_pod` then hands
//! pod traffic for other nodes to the device and `from_wireguard` delivers
//! what the peer's device decrypted.

use std::{
    fs::{self, File},
    net::SocketAddrV4,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use overlay_agent::{
    datapath::Datapath,
    encryption::{
        DEFAULT_PORT, DEVICE, OVERHEAD,
        keys::{self, KeyPair},
        service,
        userspace::{DeviceConfig, PeerConfig},
    },
};
use overlay_common::{ENCRYPTION_F_ON, Encryption, ROUTE_F_ENCRYPT};

use crate::{Lab, Mode, Process, cluster::bin_path, lab::UNDERLAY_MTU};

/// Pod MTU when pod traffic between nodes crosses in WireGuard: what the
/// agent gives pods with `--encryption wireguard` (uplink MTU - 60).
pub const ENCRYPTED_POD_MTU: u32 = UNDERLAY_MTU - OVERHEAD;

/// How long a device process may take to create its interface.
const DEVICE_START: Duration = Duration::from_secs(10);

/// The devices of an encrypted lab: dropping it stops them (by PID) and
/// removes their keys, configurations and logs. Drop it before the lab.
pub struct WireguardDevices {
    /// One device process per overlay node, in node order.
    pub processes: Vec<Process>,
    /// Keys, configurations, status files and logs, one folder per node.
    pub dir: PathBuf,
}

impl WireguardDevices {
    /// The PIDs of the device processes (their own: `ip netns exec` and
    /// `taskset` exec in place).
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(Process::pid).collect()
    }
}

impl Drop for WireguardDevices {
    fn drop(&mut self) {
        // The processes first (Process kills by PID), then their files.
        self.processes.clear();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    /// Turns encryption on between every pair of overlay nodes (see the
    /// module comment), each device process pinned to `cpu` when given,
    /// and returns the devices. Call right after [`Lab::new`], with the
    /// pods made at [`ENCRYPTED_POD_MTU`] ([`crate::LabOptions::pod_mtu`]).
    pub fn encrypt_with_wireguard(&self, cpu: Option<usize>) -> WireguardDevices {
        let dir = std::env::temp_dir().join(format!("ovl-wg-{}", self.tag));
        let nodes: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].mode == Mode::Overlay)
            .collect();
        let keys: Vec<KeyPair> = nodes.iter().map(|_| KeyPair::generate()).collect();
        let mut devices = WireguardDevices {
            processes: Vec::new(),
            dir: dir.clone(),
        };
        for (n, &i) in nodes.iter().enumerate() {
            let node = &self.nodes[i];
            let node_dir = dir.join(format!("n{}", i + 1));
            let key_file = node_dir.join("wireguard.key");
            keys::store(&key_file, &keys[n]).expect("writing the WireGuard key (0600)");
            let peers = nodes
                .iter()
                .zip(&keys)
                .filter(|(k, _)| **k != i)
                .map(|(&k, key)| PeerConfig {
                    public_key: key.public_base64(),
                    endpoint: SocketAddrV4::new(self.nodes[k].ip, DEFAULT_PORT),
                    allowed_ips: vec![self.nodes[k].block],
                })
                .collect();
            let config = DeviceConfig {
                device: DEVICE.into(),
                listen_port: DEFAULT_PORT,
                mtu: ENCRYPTED_POD_MTU,
                key_file,
                peers,
            };
            let (config_file, status_file, log_file) = (
                node_dir.join("wireguard.json"),
                node_dir.join("wireguard-status.json"),
                node_dir.join("wireguard.log"),
            );
            service::write_json(&config_file, &config)
                .expect("writing the WireGuard configuration");
            let bin = bin_path("overlay-agent").display().to_string();
            let cpu = cpu.map(|c| c.to_string());
            let mut args: Vec<&str> = Vec::new();
            if let Some(c) = &cpu {
                args.extend(["taskset", "-c", c]);
            }
            let (config_arg, status_arg) = (
                config_file.display().to_string(),
                status_file.display().to_string(),
            );
            args.extend([
                bin.as_str(),
                "wireguard",
                "--config",
                &config_arg,
                "--status",
                &status_arg,
            ]);
            let log = File::create(&log_file).expect("creating the device's log");
            let child = node
                .ns
                .command(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {args:?} in {}: {e}", node.ns.name));
            devices.processes.push(Process::from_child(child));
            let device = devices.processes.last_mut().expect("just pushed");
            let deadline = Instant::now() + DEVICE_START;
            while !node.ns.try_exec(&["ip", "link", "show", "dev", DEVICE]) {
                let exited = device.wait_timeout(Duration::from_millis(50)).is_some();
                assert!(
                    !exited && Instant::now() < deadline,
                    "{}: the WireGuard device {} created no {DEVICE} within {DEVICE_START:?}; \
                     its log:\n{}",
                    node.ns.name,
                    if exited {
                        "exited and"
                    } else {
                        "still runs but"
                    },
                    fs::read_to_string(&log_file).unwrap_or_default()
                );
            }
            let ifindex = node.ns.ifindex(DEVICE);
            overlay_agent::netns::run_in(&node.ns.path(), || {
                Datapath::load(&node.pin_dir)
                    .expect("load datapath")
                    .attach_wireguard(DEVICE)
                    .expect("attach from_wireguard");
            })
            .expect("enter node netns");
            let mut maps = self.maps(i);
            let mut cfg = self.node_config(i);
            cfg.mtu = ENCRYPTED_POD_MTU;
            maps.set_config(&cfg).expect("config");
            for &k in nodes.iter().filter(|&&k| k != i) {
                let other = &self.nodes[k];
                maps.upsert_route_flags(other.block, other.ip, ROUTE_F_ENCRYPT)
                    .expect("encrypted route");
            }
            maps.set_encryption(&Encryption {
                flags: ENCRYPTION_F_ON,
                ifindex,
            })
            .expect("encryption on");
        }
        devices
    }
}
