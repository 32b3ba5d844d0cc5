//! Shared harness for the privileged tests, `cargo xtask lab` and
//! `cargo xtask bench`: network namespaces as nodes and pods, joined by veth
//! pairs, with the overlay datapath loaded through the agent library.
//!
//! Everything created here is uniquely named (pid + counter) and removed on
//! drop; processes started here are killed by PID on drop. Traffic only ever
//! flows between namespaces created here.

pub mod cluster;
pub mod cmd;
pub mod cni_bench;
pub mod cni_clients;
pub mod deploy;
pub mod fake_kube;
pub mod gossip_sim;
pub mod lab;
pub mod lab_encryption;
pub mod netns;
pub mod netpol;
pub mod policy_bench;
pub mod privileged;
pub mod rogue;
pub mod swarm;
pub mod swim_sim;
pub mod traffic;
pub mod wireguard;
pub mod xdp_pass;

pub use cmd::{run, run_ok, sh};
pub use lab::{Lab, LabOptions, Mode, Pod, Underlay};
pub use netns::{Netns, Process};
pub use privileged::require_privileges;
