//! Encryption of pod traffic between nodes (`--encryption wireguard`).
//!
//! - [`keys`]: this node's WireGuard key pair under the state directory;
//! - [`userspace`]: the userspace WireGuard device (a TUN interface,
//!   boringtun's Noise core, our peer table and anti-spoofing check);
//! - [`service`]: that device as a process of its own
//!   (`overlay-agent wireguard`), configured through a file.
//!
//! The device sits behind its [`userspace::DeviceConfig`]: the desired
//! state (key file, port, peers with endpoints and allowed IPs) is all a
//! kernel `wireguard` device would need too, so that one can be added
//! beside it where a kernel has the module and a test can run it.

pub mod keys;
pub mod service;
pub mod userspace;
