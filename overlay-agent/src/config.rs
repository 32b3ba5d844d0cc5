//! The daemon's configuration: flags with `OVERLAY_*` environment
//! fallbacks, parsed by clap in the binary and usable as a plain struct in
//! tests.

use std::{net::Ipv4Addr, path::PathBuf};

use clap::Args;
use ipnet::Ipv4Net;
use overlay_common::{DEFAULT_VNI, DEFAULT_VXLAN_PORT};

use crate::paths;

/// Default cluster range, as in Weave Net.
pub const DEFAULT_IPALLOC_RANGE: &str = "10.32.0.0/12";

/// Configuration of `overlay-agent run`.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// This node's underlay IPv4 address (VXLAN source, and the only
    /// destination `from_uplink` accepts).
    #[arg(long, env = "OVERLAY_NODE_IP")]
    pub node_ip: Ipv4Addr,
    /// The node's underlay interface (VXLAN arrives and leaves here).
    #[arg(long, env = "OVERLAY_UPLINK")]
    pub uplink: String,
    /// Static topology file: one line per node, `NODE_IP BLOCK [BLOCK...]`
    /// (this node included). Gives this node its address blocks and every
    /// other node's.
    #[arg(long, env = "OVERLAY_TOPOLOGY")]
    pub topology: PathBuf,
    /// The cluster's pod address range: pod traffic to anything outside it
    /// is masqueraded behind the node's address.
    #[arg(long, env = "OVERLAY_IPALLOC_RANGE", default_value = DEFAULT_IPALLOC_RANGE)]
    pub ipalloc_range: Ipv4Net,
    /// UDP destination port of VXLAN traffic (every node must agree).
    #[arg(long, env = "OVERLAY_VXLAN_PORT", default_value_t = DEFAULT_VXLAN_PORT)]
    pub vxlan_port: u16,
    /// VXLAN network identifier, 0 to 16777215 (every node must agree).
    #[arg(long, env = "OVERLAY_VNI", default_value_t = DEFAULT_VNI)]
    pub vni: u32,
    /// Pod MTU; defaults to the uplink's MTU minus the 50 bytes of VXLAN.
    #[arg(long, env = "OVERLAY_MTU")]
    pub mtu: Option<u32>,
    /// bpffs directory for the pinned maps and links (the binary's global
    /// `--pin-dir` / `OVERLAY_PIN_DIR`).
    #[arg(skip = PathBuf::from(paths::PIN_DIR))]
    pub pin_dir: PathBuf,
    /// Directory for persistent state (pod address allocations).
    #[arg(long, env = "OVERLAY_STATE_DIR", default_value = paths::STATE_DIR)]
    pub state_dir: PathBuf,
    /// Unix socket `overlay-cni` talks to.
    #[arg(long, env = "OVERLAY_SOCKET", default_value = paths::AGENT_SOCKET)]
    pub socket: PathBuf,
    /// Do not install the egress masquerade rule (nftables table
    /// `ip overlay`).
    #[arg(long, env = "OVERLAY_NO_MASQUERADE")]
    pub no_masquerade: bool,
}
