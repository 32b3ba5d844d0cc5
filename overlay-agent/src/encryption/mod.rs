//! Encryption of pod traffic between nodes (`--encryption wireguard`).
//!
//! - [`keys`]: this node's WireGuard key pair under the state directory;
//! - [`announce`]: its public key and port as gossip publishes them;
//! - [`userspace`]: the userspace WireGuard device (a TUN interface,
//!   boringtun's Noise core, our peer table and anti-spoofing check);
//! - [`service`]: that device as a process of its own
//!   (`overlay-agent wireguard`), configured through a file;
//! - [`agent`]: the agent's side: the key, the device process, the
//!   configuration file written from the topology by diff.
//!
//! The device sits behind its [`userspace::DeviceConfig`]: the desired
//! state (key file, port, peers with endpoints and allowed IPs) is all a
//! kernel `wireguard` device would need too, so that one can be added
//! beside it where a kernel has the module and a test can run it.

pub mod agent;
pub mod announce;
pub mod keys;
pub mod offload;
pub mod service;
pub mod userspace;

/// Default UDP port of the WireGuard device (WireGuard's customary one).
pub const DEFAULT_PORT: u16 = 51820;
/// Name of the WireGuard device.
pub const DEVICE: &str = "ovl-wg";
/// What WireGuard adds to an IPv4 packet: outer IPv4 (20) and UDP (8)
/// headers, its data header (16) and tag (16).
pub const OVERHEAD: u32 = 60;
