//! The overlay agent as a library: everything the `overlay-agent` binary,
//! the tests and `xtask` need is reachable from here.
//!
//! - [`datapath`]: load the eBPF object, pin maps and TC links, attach and
//!   detach, uninstall;
//! - [`encryption`]: WireGuard between nodes (keys, the userspace device);
//! - [`link`]: interface index, MTU and MAC of the caller's namespace;
//! - [`liveness`]: peers' datapaths probed, apart from their agents;
//! - [`maps`]: typed access to the pinned maps;
//! - [`netns`]: run work inside another network namespace on its own thread;
//! - [`paths`]: every filesystem path the agent uses;
//! - [`policy`]: NetworkPolicy compiled into the policy maps;
//! - [`status`]: the human-readable view of a node's datapath;
//! - [`tunnel_mode`]: per peer, VXLAN or direct routing (`--tunnel`).

pub mod agent;
pub mod api;
pub mod cni;
pub mod config;
pub mod datapath;
pub mod encryption;
pub mod gossip;
pub mod install;
pub mod ipam;
pub mod k8s;
pub mod link;
pub mod liveness;
pub mod maps;
pub mod masquerade;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod paths;
pub mod policy;
pub mod status;
pub mod topology;
pub mod tunnel_mode;
