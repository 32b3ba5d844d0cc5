//! Every filesystem path the agent touches, in one place.

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Default directory for our pinned maps and links (see
/// [`overlay_common::DEFAULT_PIN_DIR`]).
pub const PIN_DIR: &str = overlay_common::DEFAULT_PIN_DIR;

/// Sub-directory of the pin directory holding one pinned TC link per
/// attachment, named `<program>@<interface>`.
pub const LINKS_SUBDIR: &str = "links";

/// The agent's unix socket, where `overlay-cni` asks it to wire pods.
pub const AGENT_SOCKET: &str = "/run/overlay/agent.sock";

/// The agent's persistent state (pod address allocations).
pub const STATE_DIR: &str = "/var/lib/overlay";

/// Status HTTP endpoint (`/status`, `/healthz`, `/forget/NODE`): loopback
/// only, it is not authenticated.
pub const STATUS_ADDR: &str = "127.0.0.1:6784";

/// File under the state directory listing the blocks this node owns.
pub const BLOCKS_FILE: &str = "blocks.json";

/// The WireGuard device's desired state, written by the agent and read by
/// `overlay-agent wireguard`.
pub const WG_CONFIG: &str = "/var/lib/overlay/wireguard.json";

/// The WireGuard device's state, written every second by `overlay-agent
/// wireguard`.
pub const WG_STATUS: &str = "/run/overlay/wireguard-status.json";

/// Where the container runtime looks for plugin binaries.
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";

/// Where the container runtime looks for network configurations.
pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";

/// Our conflist's file name: runtimes take the first configuration in
/// lexical order, so the `10-` prefix puts it ahead of most defaults.
pub const CONFLIST_NAME: &str = "10-overlay.conflist";

/// Prometheus metrics endpoint (every address: Prometheus scrapes it from
/// another host).
pub const METRICS_ADDR: &str = "0.0.0.0:6782";

/// The service-account token a pod gets.
pub const KUBE_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The cluster CA a pod gets.
pub const KUBE_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
