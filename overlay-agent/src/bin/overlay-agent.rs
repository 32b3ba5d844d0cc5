//! `overlay-agent`: administers the overlay's eBPF datapath on this node.
//!
//! A thin shell over the `overlay_agent` library: parse, call, print.
//! Errors print their whole cause chain and exit 1; bad arguments exit 64
//! (EX_USAGE) through clap.

use std::{net::Ipv4Addr, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use ipnet::Ipv4Net;
use overlay_agent::{
    datapath, install, link,
    maps::Maps,
    netlink::{GRO_DEVICE, GroDevice},
    paths,
};
use overlay_common::{
    CONFIG_F_READY, DEFAULT_VNI, DEFAULT_VXLAN_PORT, Endpoint, MAX_VNI, NodeConfig, VXLAN_OVERHEAD,
};

/// Administer the overlay's eBPF datapath (TC programs and pinned maps) on
/// this node.
///
/// Everything lives under one bpffs directory (--pin-dir): the maps
/// ovl_config_v1, ovl_routes_v1, ovl_endpoints_v1, ovl_peers_v1,
/// ovl_stats_v5, ovl_peer_macs_v1, ovl_encryption_v1 and one pinned TC link per attached
/// interface under links/.
/// Pinned state outlives this process: traffic keeps flowing after it exits,
/// and running a command again re-uses what is pinned instead of
/// duplicating it.
#[derive(Parser, Debug)]
#[command(name = "overlay-agent", version, about, long_about)]
struct Cli {
    /// bpffs directory holding the pinned maps and links.
    #[arg(long, env = "OVERLAY_PIN_DIR", default_value = paths::PIN_DIR, global = true)]
    pin_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the node agent (the DaemonSet's main process): install the
    /// datapath, follow the topology into the maps, and serve overlay-cni on
    /// the agent socket until SIGTERM. Stopping it leaves the datapath in
    /// place: pods keep their connectivity, and a new agent picks up every
    /// pod and address where this one left off.
    Run {
        #[command(flatten)]
        config: Box<overlay_agent::config::AgentConfig>,
        /// Log format: `text` (one line per event) or `json`.
        #[arg(long, env = "OVERLAY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        /// Log filter, e.g. `info` or `overlay_agent=debug`.
        #[arg(long, env = "OVERLAY_LOG_LEVEL", default_value = "info")]
        log_level: String,
    },
    /// Load the programs, create (or re-open) the pinned maps, write this
    /// node's configuration, attach `from_uplink` to the uplink and create
    /// the GRO tunnel device (`ovl-gro`) on the VXLAN port.
    Install {
        /// The node's underlay interface (VXLAN arrives and leaves here).
        #[arg(long, env = "OVERLAY_UPLINK")]
        uplink: String,
        /// This node's underlay IPv4 address (VXLAN source, and the
        /// destination that `from_uplink` accepts).
        #[arg(long, env = "OVERLAY_NODE_IP")]
        node_ip: Ipv4Addr,
        /// UDP destination port of VXLAN traffic.
        #[arg(long, env = "OVERLAY_VXLAN_PORT", default_value_t = DEFAULT_VXLAN_PORT)]
        vxlan_port: u16,
        /// VXLAN network identifier (0 to 16777215); every node must agree.
        #[arg(long, env = "OVERLAY_VNI", default_value_t = DEFAULT_VNI)]
        vni: u32,
        /// Pod MTU; defaults to the uplink's MTU minus the 50 bytes of VXLAN.
        #[arg(long, env = "OVERLAY_MTU")]
        mtu: Option<u32>,
    },
    /// Attach `from_pod` at TC ingress of a pod's host-side veth.
    AttachPod {
        /// Host-side veth name.
        iface: String,
    },
    /// Detach our program from an interface (no-op if none is attached).
    Detach {
        /// Interface name.
        iface: String,
    },
    /// Add or replace the route of a pod block to the node that owns it.
    RouteAdd {
        /// The block, e.g. 10.32.1.0/24.
        block: Ipv4Net,
        /// Underlay address of the owning node.
        node_ip: Ipv4Addr,
    },
    /// Remove a block's route (no-op if absent).
    RouteDel {
        /// The block.
        block: Ipv4Net,
    },
    /// Allow a node to send us VXLAN.
    PeerAdd {
        /// The node's underlay address.
        node_ip: Ipv4Addr,
    },
    /// Stop accepting VXLAN from a node (no-op if absent).
    PeerDel {
        /// The node's underlay address.
        node_ip: Ipv4Addr,
    },
    /// Record a local pod so traffic is delivered straight into it.
    EndpointAdd {
        /// The pod's IPv4 address.
        ip: Ipv4Addr,
        /// Host-side veth name of the pod.
        #[arg(long)]
        iface: String,
        /// MAC address of the pod's interface (aa:bb:cc:dd:ee:ff).
        #[arg(long, value_parser = parse_mac)]
        pod_mac: [u8; 6],
    },
    /// Forget a local pod (no-op if absent).
    EndpointDel {
        /// The pod's IPv4 address.
        ip: Ipv4Addr,
    },
    /// Show this node's status, like `weave status`: the node, each peer
    /// with its address, state and blocks, the quorum, address usage and
    /// the datapath counters (asks the running agent on --status-addr; when
    /// none runs, shows what is pinned).
    Status {
        /// The agent's status endpoint.
        #[arg(long, env = "OVERLAY_STATUS_ADDR", default_value = paths::STATUS_ADDR)]
        status_addr: std::net::SocketAddr,
        /// Print the JSON the endpoint returns instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Forget a node that is gone for good: its address blocks return to
    /// the pool, cluster-wide. Refused while the node is alive. Only do
    /// this once the node's pods are gone too: their addresses will be
    /// handed out again.
    Forget {
        /// The node's name (as `status` lists it).
        node: String,
        /// The agent's status endpoint.
        #[arg(long, env = "OVERLAY_STATUS_ADDR", default_value = paths::STATUS_ADDR)]
        status_addr: std::net::SocketAddr,
    },
    /// Install the CNI plugins on this node (the DaemonSet's init
    /// container): copy `overlay-cni` into the plugin directory (atomically,
    /// only when its content changed), and the reference plugins `loopback`
    /// and `portmap` when the host has none (never replacing one that is
    /// there). The conflist is not written here: the agent writes it once it
    /// can serve pods, so the node stays NotReady until then.
    InstallCni {
        /// Directory of CNI plugin binaries.
        #[arg(long, env = "OVERLAY_CNI_BIN_DIR", default_value = paths::CNI_BIN_DIR)]
        cni_bin_dir: PathBuf,
        /// The `overlay-cni` binary to install; defaults to the one next to
        /// this executable.
        #[arg(long, env = "OVERLAY_CNI_PLUGIN")]
        plugin: Option<PathBuf>,
        /// Directory of the reference plugins to install where the host
        /// lacks them (the image ships Debian's there).
        #[arg(long, env = "OVERLAY_CNI_REFERENCE_DIR", default_value = install::DEFAULT_REFERENCE_DIR)]
        reference_dir: PathBuf,
    },
    /// Make sure bpffs is mounted at --path and is a shared mount (the
    /// DaemonSet's first init container), so that the agent container's
    /// Bidirectional mount of it is allowed and its pins are the host's.
    /// Mounts bpffs when none is there and makes the mount shared when it is
    /// private; does nothing when both hold. With --mount-ns, acts in that
    /// mount namespace (the host's: /proc/1/ns/mnt with hostPID).
    MountBpffs {
        /// Where bpffs belongs.
        #[arg(long, env = "OVERLAY_BPFFS", default_value = paths::BPFFS)]
        path: PathBuf,
        /// Enter this mount namespace first (e.g. /proc/1/ns/mnt); default:
        /// this process's own.
        #[arg(long, env = "OVERLAY_MOUNT_NS")]
        mount_ns: Option<PathBuf>,
    },
    /// Run the userspace WireGuard device: a TUN interface whose packets
    /// are encrypted for the peers of the configuration file (JSON, written
    /// by the agent, re-read when it changes; the private key file it names
    /// is created 0600 on first start). Its own process, so that encrypted
    /// traffic keeps flowing while the agent restarts. Writes its state
    /// (public key, drops by reason, per peer last handshake and bytes) to
    /// --status every second. Stops on SIGTERM or SIGINT.
    Wireguard {
        /// The device's configuration.
        #[arg(long, env = "OVERLAY_WG_CONFIG", default_value = paths::WG_CONFIG)]
        config: PathBuf,
        /// Where to write the device's state.
        #[arg(long, env = "OVERLAY_WG_STATUS", default_value = paths::WG_STATUS)]
        status: PathBuf,
    },
    /// Give this node a new WireGuard key pair (`--encryption wireguard`):
    /// the private key file under the state directory is replaced (0600)
    /// and the new public key printed. The running agent takes it within
    /// 2 s: its device re-reads the key, gossip publishes the new public
    /// key, and each peer's device follows within a gossip round and a
    /// handshake.
    RotateKey {
        /// Directory of the agent's persistent state.
        #[arg(long, env = "OVERLAY_STATE_DIR", default_value = paths::STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Remove the overlay from this node for good: the conflist (if ours;
    /// a replaced one is restored) and the plugin, every pinned link (which
    /// detaches the programs) and map, the pods' host veths, the nftables
    /// table `ip overlay`, the state directory and the socket. Idempotent.
    /// Refused while an agent answers on the socket. Not for restarts or
    /// upgrades: those must keep the datapath so pods keep their traffic.
    Uninstall {
        #[command(flatten)]
        cni: CniDirs,
        /// Directory of the agent's persistent state.
        #[arg(long, env = "OVERLAY_STATE_DIR", default_value = paths::STATE_DIR)]
        state_dir: PathBuf,
        /// The agent socket (also how a running agent is detected).
        #[arg(long, env = "OVERLAY_SOCKET", default_value = paths::AGENT_SOCKET)]
        socket: PathBuf,
        /// Uninstall even while an agent answers on the socket.
        #[arg(long)]
        force: bool,
        /// After uninstalling, wait for SIGTERM or SIGINT instead of
        /// exiting (for a DaemonSet, whose pods must keep running).
        #[arg(long)]
        then_wait: bool,
    },
}

/// Where the container runtime finds CNI plugins and configurations.
#[derive(clap::Args, Debug)]
struct CniDirs {
    /// Directory of CNI plugin binaries.
    #[arg(long, env = "OVERLAY_CNI_BIN_DIR", default_value = paths::CNI_BIN_DIR)]
    cni_bin_dir: PathBuf,
    /// Directory of CNI network configurations.
    #[arg(long, env = "OVERLAY_CNI_CONF_DIR", default_value = paths::CNI_CONF_DIR)]
    cni_conf_dir: PathBuf,
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || format!("{s:?} is not a MAC address like 02:00:00:00:00:01");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let pin = cli.pin_dir.as_path();
    match cli.command {
        Command::Run {
            mut config,
            log_format,
            log_level,
        } => {
            config.pin_dir = pin.to_owned();
            run_daemon(*config, &log_format, &log_level)?;
        }
        Command::Install {
            uplink,
            node_ip,
            vxlan_port,
            vni,
            mtu,
        } => {
            if vni > MAX_VNI {
                bail!("--vni {vni} does not fit VXLAN's 24 bits (max {MAX_VNI})");
            }
            let uplink_ifindex = link::ifindex(&uplink)?;
            let mtu = match mtu {
                Some(m) => m,
                None => {
                    let m = link::mtu(&uplink)?;
                    m.checked_sub(VXLAN_OVERHEAD)
                        .with_context(|| format!("uplink MTU {m} is smaller than the overhead"))?
                }
            };
            let mut dp = datapath::Datapath::load(pin)?;
            let mut maps = Maps::open(pin)?;
            maps.set_config(&NodeConfig {
                node_ip: node_ip.octets(),
                uplink_ifindex,
                vxlan_port,
                probe_port: 0,
                vni,
                mtu,
                flags: CONFIG_F_READY,
            })?;
            dp.attach_uplink(&uplink)?;
            let gro = overlay_agent::netlink::ensure_gro_device(vxlan_port)?;
            println!(
                "GRO tunnel device {}: {}",
                GRO_DEVICE,
                match gro {
                    GroDevice::Created => "created",
                    GroDevice::Kept => "kept",
                    GroDevice::Replaced => "replaced (it had another configuration)",
                    GroDevice::PortInUse => "not created: another socket holds the port",
                }
            );
            println!(
                "datapath installed at {}: node {node_ip}, uplink {uplink}, port {vxlan_port}, VNI {vni}, pod MTU {mtu}",
                pin.display()
            );
        }
        Command::AttachPod { iface } => {
            let mut dp = datapath::Datapath::load(pin)?;
            dp.attach_pod(&iface)?;
            println!("from_pod attached to {iface}");
        }
        Command::Detach { iface } => {
            datapath::detach(pin, &iface)?;
            println!("detached from {iface}");
        }
        Command::RouteAdd { block, node_ip } => Maps::open(pin)?.upsert_route(block, node_ip)?,
        Command::RouteDel { block } => Maps::open(pin)?.remove_route(block)?,
        Command::PeerAdd { node_ip } => Maps::open(pin)?.upsert_peer(node_ip)?,
        Command::PeerDel { node_ip } => Maps::open(pin)?.remove_peer(node_ip)?,
        Command::EndpointAdd { ip, iface, pod_mac } => {
            let ep = Endpoint {
                ifindex: link::ifindex(&iface)?,
                host_mac: link::mac(&iface)?,
                pod_mac,
                flags: 0,
            };
            Maps::open(pin)?.upsert_endpoint(ip, &ep)?;
        }
        Command::EndpointDel { ip } => Maps::open(pin)?.remove_endpoint(ip)?,
        Command::Wireguard { config, status } => {
            init_cli_logging();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let device = {
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name("wireguard".into())
                    .spawn(move || {
                        overlay_agent::encryption::service::serve(&config, &status, &stop)
                    })
                    .context("starting the WireGuard thread")?
            };
            // The device stops on a signal, or on its own with an error.
            let waiter = std::thread::spawn(wait_for_signal);
            while !device.is_finished() && !waiter.is_finished() {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            match device.join() {
                Ok(r) => r?,
                Err(_) => bail!("the WireGuard thread panicked"),
            }
        }
        Command::RotateKey { state_dir } => {
            let files = overlay_agent::encryption::agent::Files::under(&state_dir);
            let pair = overlay_agent::encryption::keys::KeyPair::generate();
            overlay_agent::encryption::keys::store(&files.key, &pair)
                .with_context(|| format!("writing {}", files.key.display()))?;
            println!(
                "new WireGuard key in {}: public key {} (the running agent publishes it within 2 s)",
                files.key.display(),
                pair.public_base64()
            );
        }
        Command::Status { status_addr, json } => status(pin, status_addr, json)?,
        Command::Forget { node, status_addr } => forget(&node, status_addr)?,
        Command::InstallCni {
            cni_bin_dir,
            plugin,
            reference_dir,
        } => {
            init_cli_logging();
            let plugin = match plugin {
                Some(p) => p,
                None => std::env::current_exe()
                    .context("finding this executable, to find overlay-cni next to it")?
                    .with_file_name(overlay_agent::cni::PLUGIN_TYPE),
            };
            install::install_cni(&install::CniInstall {
                bin_dir: cni_bin_dir,
                plugin,
                reference_dir,
            })?;
        }
        Command::MountBpffs { path, mount_ns } => {
            let done = datapath::bpffs::ensure_shared(&path, mount_ns.as_deref())?;
            println!("{done}");
        }
        Command::Uninstall {
            cni,
            state_dir,
            socket,
            force,
            then_wait,
        } => {
            init_cli_logging();
            let removed = install::uninstall(&install::Uninstall {
                pin_dir: pin.to_owned(),
                bin_dir: cni.cni_bin_dir,
                conf_dir: cni.cni_conf_dir,
                state_dir,
                socket,
                force,
            })?;
            if removed.is_empty() {
                println!("nothing to remove: the overlay is not installed on this node");
            }
            for line in removed {
                println!("{line}");
            }
            if then_wait {
                println!("uninstalled; waiting for SIGTERM");
                wait_for_signal()?;
            }
        }
    }
    Ok(())
}

fn status(pin: &std::path::Path, addr: std::net::SocketAddr, json: bool) -> anyhow::Result<()> {
    use overlay_agent::api::http::{ClientError, call};
    match call(addr, "GET", "/status") {
        Ok((200, body)) => {
            if json {
                print!("{body}");
            } else {
                let report: overlay_agent::agent::report::NodeReport =
                    serde_json::from_str(&body).context("the agent's /status is not a report")?;
                print!("{}", report.render());
            }
            Ok(())
        }
        Ok((code, body)) => bail!("the agent answered {code}: {}", body.trim()),
        Err(e @ ClientError::NotRunning(_)) => {
            eprintln!("overlay-agent: {e}; showing the pinned datapath only\n");
            print!("{}", overlay_agent::status::render(pin)?);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn forget(node: &str, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let (code, body) = overlay_agent::api::http::call(addr, "POST", &format!("/forget/{node}"))?;
    if code != 200 {
        bail!("{}", body.trim());
    }
    let f: overlay_agent::gossip::Forgotten =
        serde_json::from_str(&body).context("the agent's answer to forget is not JSON")?;
    let blocks: Vec<String> = f.blocks.iter().map(ToString::to_string).collect();
    println!(
        "forgot {} (generations up to {}); blocks back in the pool: {}",
        f.name,
        f.generation,
        if blocks.is_empty() {
            "none".to_owned()
        } else {
            blocks.join(" ")
        }
    );
    Ok(())
}

/// Logs of the one-shot commands (`install-cni`, `uninstall`): text on
/// stderr, `info` and up.
fn init_cli_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// Blocks until SIGTERM or SIGINT (as PID 1 of a container, the default
/// actions do not apply, so the signals need handlers).
fn wait_for_signal() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    })
}

fn run_daemon(
    config: overlay_agent::config::AgentConfig,
    log_format: &str,
    log_level: &str,
) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(log_level)
        .with_context(|| format!("--log-level {log_level:?} is not a valid filter"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log_format == "json" {
        builder.json().init();
    } else {
        builder.with_ansi(false).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if let Err(e) = runtime.block_on(overlay_agent::agent::run(config)) {
        // As a log event (JSON under --log-format json), with its causes.
        tracing::error!(error = %overlay_agent::cni::error::chain(&e), "overlay-agent stopped");
        return Err(Logged.into());
    }
    Ok(())
}

/// An error already reported through the log.
#[derive(Debug, thiserror::Error)]
#[error("see the log above")]
struct Logged;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(64),
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Logged>() => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("overlay-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;
    use overlay_agent::cni::Version;

    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn macs_parse_and_bad_ones_say_what_is_wrong() {
        assert_eq!(parse_mac("02:aB:00:00:00:ff"), Ok([2, 0xab, 0, 0, 0, 0xff]));
        for bad in [
            "02:ab:00:00:00",
            "02:ab:00:00:00:zz",
            "",
            "02-ab-00-00-00-ff",
        ] {
            let e = parse_mac(bad).expect_err(bad);
            assert!(e.contains("is not a MAC address"), "{e}");
        }
    }

    #[test]
    fn install_cni_and_uninstall_take_the_node_paths_with_the_run_defaults() {
        let cli = Cli::try_parse_from(["overlay-agent", "install-cni"]).unwrap();
        let Command::InstallCni {
            cni_bin_dir,
            plugin,
            reference_dir,
        } = cli.command
        else {
            panic!("not install-cni: {cli:?}");
        };
        assert_eq!(cni_bin_dir, PathBuf::from("/opt/cni/bin"));
        assert_eq!(plugin, None);
        assert_eq!(reference_dir, PathBuf::from("/usr/lib/cni"));
        let cli = Cli::try_parse_from(["overlay-agent", "uninstall", "--then-wait"]).unwrap();
        let Command::Uninstall {
            state_dir,
            force,
            then_wait,
            ..
        } = cli.command
        else {
            panic!("not uninstall: {cli:?}");
        };
        assert_eq!(state_dir, PathBuf::from(paths::STATE_DIR));
        assert!(!force && then_wait);
        let cli = Cli::try_parse_from(["overlay-agent", "run", "--node-ip", "192.0.2.1"]).unwrap();
        let Command::Run { config, .. } = cli.command else {
            panic!("not run: {cli:?}");
        };
        assert_eq!(config.cni_conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(config.cni_bin_dir, PathBuf::from("/opt/cni/bin"));
        assert_eq!(config.cni_version, Version::V1_0_0);
        assert_eq!(config.portmap, install::Portmap::Auto);
        let e = Cli::try_parse_from([
            "overlay-agent",
            "run",
            "--node-ip",
            "192.0.2.1",
            "--cni-version",
            "9.9.9",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("9.9.9") && e.contains("1.1.0"), "{e}");
    }

    #[test]
    fn bad_addresses_and_blocks_are_usage_errors() {
        for argv in [
            &["overlay-agent", "route-add", "10.32.1.0/33", "172.31.0.1"][..],
            &["overlay-agent", "peer-add", "not-an-ip"][..],
            &["overlay-agent", "install", "--node-ip", "1.2.3.4"][..],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?} was accepted");
        }
    }
}
