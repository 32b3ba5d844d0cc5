//! The daemon's configuration: flags with `OVERLAY_*` environment
//! fallbacks, parsed by clap in the binary and usable as a plain struct in
//! tests.

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use clap::Args;
use ipnet::Ipv4Net;
use overlay_common::{DEFAULT_VNI, DEFAULT_VXLAN_PORT};

use crate::{cni::Version, install::Portmap, paths};

/// Default cluster range, as in Weave Net.
pub const DEFAULT_IPALLOC_RANGE: &str = "10.32.0.0/12";

/// Configuration of `overlay-agent run`.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// This node's underlay IPv4 address (VXLAN source, and the only
    /// destination `from_uplink` accepts).
    #[arg(long, env = "OVERLAY_NODE_IP")]
    pub node_ip: Ipv4Addr,
    /// The node's underlay interface (VXLAN arrives and leaves here).
    /// Defaults to the interface that holds --node-ip.
    #[arg(long, env = "OVERLAY_UPLINK")]
    pub uplink: Option<String>,
    /// This node's name in the cluster (unique; letters, digits, `.`, `_`,
    /// `-`). Defaults to the host name.
    #[arg(long, env = "OVERLAY_NODE_NAME")]
    pub node_name: Option<String>,
    /// Seed peers to join through, comma-separated `IP[:PORT]` (port
    /// defaults to --gossip-port). Any one live seed is enough; listing
    /// this node too is fine. Without seeds the node starts a cluster of
    /// its own; an empty value means no seeds.
    // `::std::vec::Vec` makes clap take the whole value as one (the derive
    // only splits a plain `Vec`), so that `parse_peers` sees the empty
    // string the manifest sets and returns no peers instead of one empty
    // peer.
    #[arg(long, env = "OVERLAY_PEERS", default_value = "", value_parser = parse_peers)]
    pub peers: ::std::vec::Vec<String>,
    /// Membership protocol. `swim` (the default) is built for thousands of
    /// nodes (simulated at 2,000): SWIM failure detection (a dead agent is
    /// known everywhere in about 5 s), node records spread as broadcasts
    /// and exchanged push-pull. `chitchat` is the previous release's
    /// protocol. The two drop each other's datagrams (counted as
    /// malformed), yet a rolling update from `chitchat` to `swim` keeps
    /// every route and block: an agent remembers its peers across its
    /// restart, and the cluster is whole again once the last node runs
    /// `swim`. Every node must agree in the end.
    #[arg(
        long,
        env = "OVERLAY_GOSSIP_PROTOCOL",
        default_value = "swim",
        value_enum
    )]
    pub gossip_protocol: crate::gossip::Protocol,
    /// UDP port for gossip (every node must agree).
    #[arg(long, env = "OVERLAY_GOSSIP_PORT", default_value_t = crate::gossip::DEFAULT_GOSSIP_PORT)]
    pub gossip_port: u16,
    /// Shared secret: every gossip datagram carries an HMAC keyed from it,
    /// and datagrams that fail it are dropped. Prefer --password-file (a
    /// command line is visible to every user of the host).
    #[arg(
        long,
        env = "OVERLAY_PASSWORD",
        hide_env_values = true,
        conflicts_with = "password_file"
    )]
    pub password: Option<String>,
    /// File holding the shared secret (trailing newline ignored), e.g. a
    /// mounted Kubernetes Secret. A file that does not exist means no
    /// password (with a warning): the DaemonSet's Secret is optional.
    #[arg(long, env = "OVERLAY_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Cluster name: agents only gossip with agents of the same name (and
    /// it salts the key derived from the password).
    #[arg(long, env = "OVERLAY_CLUSTER_NAME", default_value = "overlay")]
    pub cluster_name: String,
    /// Prefix length of the blocks the range is cut into (/24: 254 pods
    /// per block; a node claims another block when one fills up).
    #[arg(long, env = "OVERLAY_BLOCK_SIZE", default_value_t = 24, value_parser = clap::value_parser!(u8).range(1..=30))]
    pub block_size: u8,
    /// How often the claim rule runs and the topology is refreshed (e.g.
    /// `1s`, `200ms`); with `--gossip-protocol chitchat`, also chitchat's
    /// round interval (its failure detection takes roughly 10-20 rounds).
    #[arg(long, env = "OVERLAY_GOSSIP_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub gossip_interval: Duration,
    /// How long a block claim is held, with a quorum, before addresses are
    /// handed out of it. Must exceed the failure-detection time plus the
    /// few rounds a claim takes to spread, so that a node cut off from the
    /// majority notices before its claim settles.
    #[arg(long, env = "OVERLAY_CLAIM_SETTLE", default_value = "30s", value_parser = parse_duration)]
    pub claim_settle: Duration,
    /// Failure detector threshold (phi) of `--gossip-protocol chitchat`:
    /// higher declares nodes dead later but more surely. SWIM's detector
    /// has fixed timings (probe every 0.5 s, 2.5 s to refute a suspicion).
    #[arg(long, env = "OVERLAY_PHI_THRESHOLD", default_value_t = 8.0)]
    pub phi_threshold: f64,
    /// Status HTTP endpoint (`GET /status`, `GET /healthz`,
    /// `POST /forget/NODE`). Keep it on loopback: it is not authenticated.
    #[arg(long, env = "OVERLAY_STATUS_ADDR", default_value = crate::paths::STATUS_ADDR)]
    pub status_addr: std::net::SocketAddr,
    /// Prometheus metrics endpoint (`GET /metrics`). Use `off` to disable.
    #[arg(long, env = "OVERLAY_METRICS_ADDR", default_value = crate::paths::METRICS_ADDR, value_parser = parse_optional_addr)]
    pub metrics_addr: OptionalAddr,
    /// Use the Kubernetes API: discover seed peers from the Nodes'
    /// InternalIP, reclaim the blocks of deleted Nodes, and set this Node's
    /// NetworkUnavailable condition to False once the datapath is up.
    /// `auto` uses it when running in a pod (KUBERNETES_SERVICE_HOST set)
    /// or when --kube-api is given.
    #[arg(long, env = "OVERLAY_KUBERNETES", default_value = "auto", value_enum)]
    pub kubernetes: KubeMode,
    /// Kubernetes API server URL; defaults to the in-cluster one
    /// (https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT).
    #[arg(long, env = "OVERLAY_KUBE_API")]
    pub kube_api: Option<String>,
    /// Bearer token file for the API (re-read on every call, as projected
    /// service-account tokens rotate).
    #[arg(long, env = "OVERLAY_KUBE_TOKEN_FILE", default_value = paths::KUBE_TOKEN_FILE)]
    pub kube_token_file: PathBuf,
    /// CA bundle that signs the API server's certificate.
    #[arg(long, env = "OVERLAY_KUBE_CA_FILE", default_value = paths::KUBE_CA_FILE)]
    pub kube_ca_file: PathBuf,
    /// Static topology file instead of gossip (testing, or clusters whose
    /// blocks are assigned by hand): one line per node,
    /// `NODE_IP BLOCK [BLOCK...]`, this node included.
    #[arg(long, env = "OVERLAY_TOPOLOGY", conflicts_with = "peers")]
    pub topology: Option<PathBuf>,
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
    /// UDP port of datapath liveness probes (every node must agree; 0 turns
    /// probing off, and peers are then routed while gossip sees them
    /// alive). Each node's eBPF program answers probes on this port by
    /// itself, so a peer whose agent is down (restart, crash, upgrade)
    /// stays routed while its datapath answers; pods cannot send to it.
    #[arg(long, env = "OVERLAY_PROBE_PORT", default_value_t = overlay_common::DEFAULT_PROBE_PORT)]
    pub probe_port: u16,
    /// How often each peer's datapath is probed. With many peers the
    /// interval stretches so that at most 1000 probes a second leave the
    /// node.
    #[arg(long, env = "OVERLAY_PROBE_INTERVAL", default_value = "200ms", value_parser = parse_duration)]
    pub probe_interval: Duration,
    /// A peer whose datapath answered before and has not answered for this
    /// long is withdrawn (its routes removed), whatever gossip says; it is
    /// restored at its next answer.
    #[arg(long, env = "OVERLAY_PROBE_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub probe_timeout: Duration,
    /// How pod traffic crosses to other nodes: `vxlan` always
    /// encapsulates; `direct` never does (every peer must be on-link, i.e.
    /// the route to its node IP has no gateway; a peer that is not is
    /// refused, not routed, and named in the log and the status); `auto`
    /// routes on-link peers directly and encapsulates towards the others.
    /// On-link is asked of the kernel per peer and re-checked on every
    /// topology change and every few seconds. `auto` keeps every pod at
    /// the uplink MTU minus 50 (direct peers do not get the 50 bytes);
    /// pick `direct` when every node shares one L2 segment, `vxlan` when
    /// the underlay drops packets with pod addresses.
    #[arg(long, env = "OVERLAY_TUNNEL", default_value = "auto", value_enum)]
    pub tunnel: TunnelMode,
    /// Encryption of pod traffic between nodes. `wireguard`: every pod
    /// packet for another node goes through this node's WireGuard device
    /// (userspace, `overlay-agent wireguard`, which the agent starts unless
    /// one already serves), whatever `--tunnel` says; the key pair is made
    /// on first start under the state directory and the public key
    /// published through gossip. Fail closed: a peer without a key (or
    /// without a session yet) gets no pod traffic from here, and pod
    /// traffic that arrives in clear is dropped. Pods wired from then on
    /// get an MTU 60 bytes under the uplink's (WireGuard's overhead).
    #[arg(long, env = "OVERLAY_ENCRYPTION", default_value = "off", value_enum)]
    pub encryption: EncryptionMode,
    /// UDP port of the WireGuard device on every node (`--encryption
    /// wireguard`).
    #[arg(long, env = "OVERLAY_WIREGUARD_PORT", default_value_t = crate::encryption::DEFAULT_PORT)]
    pub wireguard_port: u16,
    /// Make a new WireGuard key pair this often (e.g. `24h`) and publish
    /// it; peers follow within a gossip round and a handshake. Off by
    /// default; `overlay-agent rotate-key` rotates by hand.
    #[arg(long, env = "OVERLAY_WIREGUARD_KEY_ROTATION", value_parser = parse_duration)]
    pub wireguard_key_rotation: Option<Duration>,
    /// Pod MTU; defaults to the uplink's MTU minus the 50 bytes of VXLAN
    /// (`--tunnel vxlan` or `auto`), or the uplink's MTU (`--tunnel
    /// direct`), or minus WireGuard's 60 (`--encryption wireguard`).
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
    /// Directory of CNI network configurations: the agent writes
    /// `10-overlay.conflist` there once it can serve pods (a settled
    /// address block), and never removes it (`uninstall` does).
    #[arg(long, env = "OVERLAY_CNI_CONF_DIR", default_value = paths::CNI_CONF_DIR)]
    pub cni_conf_dir: PathBuf,
    /// Directory of CNI plugin binaries, where the conflist's chained
    /// plugins are looked for.
    #[arg(long, env = "OVERLAY_CNI_BIN_DIR", default_value = paths::CNI_BIN_DIR)]
    pub cni_bin_dir: PathBuf,
    /// `cniVersion` of the conflist; 1.0.0 suits every runtime with libcni
    /// 1.1 or later.
    #[arg(long, env = "OVERLAY_CNI_VERSION", default_value_t = crate::install::DEFAULT_CNI_VERSION,
          value_parser = parse_cni_version)]
    pub cni_version: Version,
    /// Chain the reference `portmap` plugin (hostPort) in the conflist:
    /// `auto` when it is in the plugin directory (left out with a warning
    /// otherwise).
    #[arg(long, env = "OVERLAY_CNI_PORTMAP", default_value = "auto", value_enum)]
    pub portmap: Portmap,
}

/// A `cniVersion` the plugin implements.
pub fn parse_cni_version(s: &str) -> Result<Version, String> {
    s.parse().map_err(|e: crate::cni::CniError| e.msg)
}

/// Comma-separated seed peers, trimmed; empty entries (an empty value, a
/// trailing comma) are no peers.
pub fn parse_peers(s: &str) -> Result<Vec<String>, String> {
    Ok(s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect())
}

/// How pod packets cross the underlay to other nodes (`--tunnel`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TunnelMode {
    /// VXLAN to peers that are not on-link, direct to the others.
    #[default]
    Auto,
    /// Always VXLAN.
    Vxlan,
    /// Never VXLAN: peers that are not on-link are refused.
    Direct,
}

impl TunnelMode {
    /// `auto`, `vxlan` or `direct`, as the flag spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Vxlan => "vxlan",
            Self::Direct => "direct",
        }
    }
}

/// Whether pod traffic between nodes is encrypted (`--encryption`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EncryptionMode {
    /// In clear (VXLAN or directly routed, per `--tunnel`).
    #[default]
    Off,
    /// Through a userspace WireGuard device.
    Wireguard,
}

/// Whether to use the Kubernetes API.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KubeMode {
    /// When in a pod, or when --kube-api is set.
    Auto,
    /// Always; fail at start when the API is not configured.
    On,
    /// Never.
    Off,
}

/// A listening address that can be turned off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<std::net::SocketAddr>);

/// `off` (or empty) for none, else a socket address.
pub fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    match s.trim() {
        "" | "off" | "none" => Ok(OptionalAddr(None)),
        a => a
            .parse()
            .map(|a| OptionalAddr(Some(a)))
            .map_err(|e| format!("{a:?} is not IP:PORT (or `off`): {e}")),
    }
}

/// Parses `250ms`, `2s`, `1m` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a duration like 500ms, 2s or 1m");
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(format!("{s:?}: must be more than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        c: AgentConfig,
    }

    fn peers_of(args: &[&str]) -> Vec<String> {
        let argv = ["x", "--node-ip", "192.0.2.1"].iter().chain(args);
        <Wrapper as clap::Parser>::try_parse_from(argv)
            .expect("parses")
            .c
            .peers
    }

    #[test]
    fn an_empty_peer_list_is_no_peers_and_is_logged_as_such() {
        // The manifest sets OVERLAY_PEERS to "": the same value as a flag.
        assert_eq!(peers_of(&["--peers", ""]), Vec::<String>::new());
        assert_eq!(peers_of(&[]), Vec::<String>::new(), "unset");
        assert_eq!(peers_of(&["--peers", " , ,"]), Vec::<String>::new());
        // The start-up line logs the field with `?`.
        assert_eq!(format!("{:?}", peers_of(&["--peers", ""])), "[]");
        assert_eq!(
            peers_of(&["--peers", "192.0.2.2, 192.0.2.3:7000,"]),
            vec!["192.0.2.2", "192.0.2.3:7000"]
        );
    }

    #[test]
    fn durations_parse_and_bad_ones_say_so() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", "ms", "1h", "-1s", "0s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
