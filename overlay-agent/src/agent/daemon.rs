//! `overlay-agent run`: start the agent, find the cluster (gossip, or a
//! static topology file), follow the topology into the maps, serve the CNI
//! socket and the status endpoint, stop on SIGTERM/SIGINT without touching
//! the datapath.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
    time::Instant,
};
use tracing::{Instrument as _, error, info, info_span, warn};

use super::{Agent, AgentError};
use crate::{
    agent::report::NodeReport,
    api::{
        http::{self, Handler, Request, Response},
        server,
    },
    config::{AgentConfig, KubeMode},
    gossip::{
        ForgetError, Gossip, GossipConfig, GossipError, Protocol,
        auth::{Key, SecureUdpTransport, WireCounters},
        claims::ClaimConfig,
        status::PeerState,
        view::fnv1a,
    },
    k8s::{Controller, KubeClient, KubeError, KubeSettings, Members, seeds_from},
    liveness::{
        DatapathState,
        prober::{Prober, ProberConfig, ProberError},
    },
    metrics::{Instrumented, Metrics},
    paths,
    policy::{PolicyController, PolicyMaps, events::Events},
    topology::{Topology, TopologyError},
};

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The agent could not start.
    #[error("starting the agent")]
    Start(#[source] AgentError),
    /// The static topology file is unusable.
    #[error("loading the static topology")]
    Topology(#[source] TopologyError),
    /// The password file could not be read.
    #[error("reading the password file {path}")]
    PasswordFile {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The password is empty.
    #[error("the gossip password is empty (unset it to run without authentication)")]
    EmptyPassword,
    /// No node name was given and the host name cannot be read.
    #[error("no --node-name and the host name cannot be read")]
    NodeName(#[source] io::Error),
    /// Gossip could not start.
    #[error("starting gossip")]
    Gossip(#[source] GossipError),
    /// A socket could not be bound.
    #[error("listening on {what}")]
    Listen {
        /// The socket.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `--kubernetes on` without an API server to talk to.
    #[error(
        "--kubernetes=on but no API server is known: set --kube-api (OVERLAY_KUBE_API) or run \
         in a pod (KUBERNETES_SERVICE_HOST)"
    )]
    NoKubeApi,
    /// The Kubernetes client could not be set up.
    #[error("setting up the Kubernetes API client")]
    Kube(#[source] KubeError),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers")]
    Signals(#[source] io::Error),
    /// The datapath prober could not start.
    #[error("starting the datapath prober")]
    Prober(#[source] ProberError),
    /// The NetworkPolicy maps could not be opened.
    #[error("opening the NetworkPolicy maps")]
    PolicyMaps(#[source] crate::maps::MapsError),
    /// The NetworkPolicy threads could not start.
    #[error("starting the NetworkPolicy controller")]
    Policy(#[source] io::Error),
    /// A blocking task panicked.
    #[error("agent task failed")]
    Join(#[source] tokio::task::JoinError),
}

/// Runs the agent until SIGTERM or SIGINT.
///
/// The topology comes from gossip (or, with `--topology`, from a static
/// file) and every new value is applied by diff. In gossip mode the first
/// one is applied only after a warm-up of a few gossip rounds, so that an
/// agent restarting on a busy node does not withdraw the routes its
/// predecessor left before it has heard from the cluster. On shutdown the
/// sockets are closed and the pinned datapath is left in place, so pods
/// keep their connectivity while no agent runs.
pub async fn run(config: AgentConfig) -> Result<(), DaemonError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;

    let static_topology = match &config.topology {
        Some(path) => Some(Topology::load(path).map_err(DaemonError::Topology)?),
        None => None,
    };
    log_startup(&config);
    let socket = config.socket.clone();
    let status_addr = config.status_addr;
    let metrics = Arc::new(Metrics::new());
    let agent_config = config.clone();
    let agent = tokio::task::spawn_blocking(move || Agent::start(agent_config))
        .await
        .map_err(DaemonError::Join)?
        .map_err(DaemonError::Start)?;
    let agent = Arc::new(agent);
    let kube = match (&config.topology, kube_settings(&config)?) {
        (None, Some(settings)) => {
            info!(api = %settings.api_server, "using the Kubernetes API: peers from Nodes, deleted Nodes reclaimed, NetworkUnavailable set");
            Some(Arc::new(
                KubeClient::new(settings).map_err(DaemonError::Kube)?,
            ))
        }
        (Some(_), Some(_)) => {
            info!("static topology: the Kubernetes API is not used");
            None
        }
        (_, None) => None,
    };

    let (mut topology, gossip, mut first_apply) = match static_topology {
        Some(t) => {
            apply(&agent, t.clone(), BTreeMap::new()).await?;
            // The static source closes its channel after the one value.
            let (_, rx) = watch::channel(t);
            (rx, None, None)
        }
        None => {
            let mut config = config.clone();
            if let Some(client) = &kube {
                let Some(found) = discover_seeds(client, config.gossip_port, &mut sigterm).await
                else {
                    info!("SIGTERM while looking for peers: stopping");
                    return Ok(());
                };
                config.peers.extend(found);
            }
            let g = start_gossip(&config, agent.clone()).await?;
            let warmup = (config.gossip_interval * 5).max(Duration::from_secs(1));
            (
                g.topology(),
                Some(Arc::new(g)),
                Some(Instant::now() + warmup),
            )
        }
    };

    // The peers' datapaths are probed from the start, so that by the end of
    // the warm-up a restarted agent knows which silent agents' nodes still
    // forward, and keeps routing to them.
    let prober = match (&gossip, config.probe_port) {
        (Some(g), port) if port != 0 => Some(Arc::new(
            Prober::spawn(
                ProberConfig {
                    node_ip: config.node_ip,
                    probe_port: port,
                    interval: config.probe_interval,
                    timeout: config.probe_timeout,
                },
                g.topology(),
            )
            .await
            .map_err(DaemonError::Prober)?,
        )),
        _ => None,
    };
    let mut datapaths = prober.as_ref().map(|p| p.states());

    // NetworkPolicy needs every Pod, Namespace and NetworkPolicy: only
    // with the Kubernetes API.
    let policy = match &kube {
        Some(client) => {
            let maps = PolicyMaps::open(agent.pin_dir()).map_err(DaemonError::PolicyMaps)?;
            let events = Events::open(agent.pin_dir()).map_err(DaemonError::PolicyMaps)?;
            let a = agent.clone();
            let controller = {
                let _span = info_span!("policy").entered();
                PolicyController::spawn(
                    client.clone(),
                    maps,
                    Some(events),
                    Arc::new(move || a.endpoint_ips()),
                )
                .map_err(DaemonError::Policy)?
            };
            info!("enforcing NetworkPolicy: watching Pods, Namespaces and NetworkPolicies");
            Some(Arc::new(controller))
        }
        None => None,
    };

    let listener = server::bind(&socket).map_err(|source| DaemonError::Listen {
        what: socket.display().to_string(),
        source,
    })?;
    let http_listener = tokio::net::TcpListener::bind(status_addr)
        .await
        .map_err(|source| DaemonError::Listen {
            what: format!("status endpoint {status_addr}"),
            source,
        })?;
    let metrics_listener = match config.metrics_addr.0 {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Listen {
                    what: format!("metrics endpoint {addr}"),
                    source,
                })?,
        ),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let cni_handler: Arc<dyn crate::api::Handler> =
        Arc::new(Instrumented::new(agent.clone(), metrics.clone()));
    let serving = tokio::spawn(
        server::serve(listener, cni_handler, stop_rx.clone()).instrument(info_span!("socket")),
    );
    let serving_http = tokio::spawn(
        http::serve(
            http_listener,
            status_handler(
                agent.clone(),
                gossip.clone(),
                prober.clone(),
                policy.clone(),
            ),
            stop_rx.clone(),
        )
        .instrument(info_span!("status")),
    );
    let serving_metrics = metrics_listener.map(|l| {
        tokio::spawn(
            http::serve(
                l,
                metrics_handler(
                    agent.clone(),
                    gossip.clone(),
                    prober.clone(),
                    policy.clone(),
                    metrics.clone(),
                ),
                stop_rx.clone(),
            )
            .instrument(info_span!("metrics")),
        )
    });
    let controller = match (&kube, &gossip) {
        (Some(client), Some(g)) => {
            let a = agent.clone();
            Some(
                Controller::new(
                    client.clone(),
                    Arc::new(GossipMembers {
                        name: g.name().to_owned(),
                        gossip: g.clone(),
                    }),
                    Arc::new(move || a.is_ready()),
                )
                .spawn(stop_rx.clone()),
            )
        }
        _ => None,
    };
    let _conflist = super::cni_config::spawn(agent.clone(), &config, stop_rx.clone());
    info!(
        socket = %socket.display(), status = %status_addr,
        metrics = %config.metrics_addr.0.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        "serving overlay-cni, the status endpoint and metrics"
    );

    // `--wireguard-key-rotation`: the first rotation one period from now.
    let mut rotation = config.wireguard_key_rotation.map(|p| {
        let mut t = tokio::time::interval_at(Instant::now() + p, p);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut source_open = true;
    let mut tunnels = tokio::time::interval(crate::tunnel_mode::REFRESH_INTERVAL);
    tunnels.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let warmup_over = async {
            match first_apply {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let datapaths_changed = async {
            match datapaths.as_mut() {
                Some(d) => d.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = warmup_over => {
                first_apply = None;
                let t = topology.borrow_and_update().clone();
                apply(&agent, t, current(&mut datapaths)).await?;
            }
            changed = topology.changed(), if source_open && first_apply.is_none() => {
                if changed.is_err() {
                    source_open = false;
                    continue;
                }
                let t = topology.borrow_and_update().clone();
                apply(&agent, t, current(&mut datapaths)).await?;
            }
            open = datapaths_changed, if first_apply.is_none() => {
                if !open {
                    datapaths = None;
                    continue;
                }
                let t = topology.borrow().clone();
                apply(&agent, t, current(&mut datapaths)).await?;
            }
            _ = async { rotation.as_mut().expect("guarded").tick().await }, if rotation.is_some() => {
                rotate_key(&agent, gossip.as_deref(), true).await?;
            }
            _ = tunnels.tick(), if first_apply.is_none() => {
                // A key `overlay-agent rotate-key` wrote is taken here, and
                // a WireGuard device that died is started again.
                rotate_key(&agent, gossip.as_deref(), false).await?;
                let a = agent.clone();
                let revived = tokio::task::spawn_blocking(move || a.revive_encryption())
                    .await
                    .map_err(DaemonError::Join)?;
                if let Err(e) = revived {
                    error!(error = %crate::cni::error::chain(&e), "starting the WireGuard device again");
                }
                let a = agent.clone();
                let refreshed = tokio::task::spawn_blocking(move || a.refresh_tunnels())
                    .await
                    .map_err(DaemonError::Join)?;
                if let Err(e) = refreshed {
                    error!(error = %crate::cni::error::chain(&e), "refreshing the tunnel decisions");
                }
            }
            _ = sigterm.recv() => { info!("SIGTERM: stopping, datapath stays in place"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping, datapath stays in place"); break; }
        }
    }
    // Say so before going silent: the peers then expect the silence.
    if let Some(g) = &gossip {
        g.leave().await;
    }
    let _ = stop_tx.send(true);
    let _ = serving.await;
    let _ = serving_http.await;
    if let Some(m) = serving_metrics {
        let _ = m.await;
    }
    if let Some(c) = controller {
        let _ = c.await;
    }
    if let Some(p) = prober.and_then(Arc::into_inner) {
        p.shutdown().await;
    }
    if let Some(g) = gossip.and_then(Arc::into_inner) {
        g.shutdown().await;
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Takes a new WireGuard key ([`Agent::rotate_key`]) and publishes it.
async fn rotate_key(
    agent: &Arc<Agent>,
    gossip: Option<&Gossip>,
    rotate: bool,
) -> Result<(), DaemonError> {
    let a = agent.clone();
    let taken = tokio::task::spawn_blocking(move || {
        let taken = a.rotate_key(rotate);
        // The device takes the key before gossip spreads it (outside the
        // agent's lock: CNI requests go on meanwhile).
        if let Ok(Some(announce)) = &taken {
            let status = crate::encryption::agent::Files::under(a.state_dir()).status;
            crate::encryption::agent::wait_until_device_has(&status, announce);
        }
        taken
    })
    .await
    .map_err(DaemonError::Join)?;
    match (taken, gossip) {
        (Ok(Some(announce)), Some(g)) => g.set_wireguard(Some(&announce)).await,
        (Ok(_), _) => {}
        (Err(e), _) => error!(error = %crate::cni::error::chain(&e), "rotating the WireGuard key"),
    }
    Ok(())
}

/// The datapath states as of now (none known without a prober).
fn current(
    datapaths: &mut Option<watch::Receiver<BTreeMap<Ipv4Addr, DatapathState>>>,
) -> BTreeMap<Ipv4Addr, DatapathState> {
    datapaths
        .as_mut()
        .map(|d| d.borrow_and_update().clone())
        .unwrap_or_default()
}

async fn apply(
    agent: &Arc<Agent>,
    topology: Topology,
    datapaths: BTreeMap<Ipv4Addr, DatapathState>,
) -> Result<(), DaemonError> {
    let agent = agent.clone();
    let applied = tokio::task::spawn_blocking(move || agent.apply_topology(&topology, &datapaths))
        .await
        .map_err(DaemonError::Join)?;
    if let Err(e) = applied {
        // Keep serving: pods already wired keep working, and the next
        // topology may apply.
        error!(error = %crate::cni::error::chain(&e), "applying the topology");
    }
    Ok(())
}

/// The API server to use, per `--kubernetes`: `None` when off (or `auto`
/// outside a pod with no `--kube-api`).
fn kube_settings(config: &AgentConfig) -> Result<Option<KubeSettings>, DaemonError> {
    if config.kubernetes == KubeMode::Off {
        return Ok(None);
    }
    let api = config
        .kube_api
        .clone()
        .or_else(|| KubeSettings::in_cluster().map(|s| s.api_server));
    match (api, config.kubernetes) {
        (Some(api_server), _) => Ok(Some(KubeSettings {
            api_server,
            token_file: Some(config.kube_token_file.clone()),
            ca_file: Some(config.kube_ca_file.clone()),
            timeout: KubeSettings::DEFAULT_TIMEOUT,
        })),
        (None, KubeMode::On) => Err(DaemonError::NoKubeApi),
        (None, _) => Ok(None),
    }
}

/// Gossip seeds from the Nodes' InternalIPs. An agent that cannot list
/// the Nodes does not start a cluster of its own (it would claim blocks
/// others may own): it keeps trying, with backoff, until it can or until
/// SIGTERM (`None`).
async fn discover_seeds(
    client: &Arc<KubeClient>,
    gossip_port: u16,
    sigterm: &mut tokio::signal::unix::Signal,
) -> Option<Vec<String>> {
    let mut backoff = Duration::from_secs(1);
    loop {
        let c = client.clone();
        match tokio::task::spawn_blocking(move || c.list_nodes()).await {
            Ok(Ok(list)) => {
                let seeds = seeds_from(&list, gossip_port);
                info!(
                    nodes = list.items.len(),
                    ?seeds,
                    "gossip seeds from the Kubernetes Nodes"
                );
                return Some(seeds);
            }
            Ok(Err(e)) => error!(
                error = %crate::cni::error::chain(&e), retry_in = ?backoff,
                "listing Nodes for gossip seeds failed"
            ),
            Err(e) => error!(error = %e, "listing Nodes for gossip seeds failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = sigterm.recv() => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// What the Kubernetes controller sees of gossip.
struct GossipMembers {
    /// This node's name (fixed for the agent's life).
    name: String,
    gossip: Arc<Gossip>,
}

#[async_trait::async_trait]
impl Members for GossipMembers {
    fn me(&self) -> String {
        self.name.clone()
    }

    fn peers(&self) -> Vec<(String, bool)> {
        self.gossip
            .status()
            .peers
            .into_iter()
            .map(|p| (p.name, p.state == PeerState::Alive))
            .collect()
    }

    /// Names forgotten at their newest generation: a node that came back
    /// (a newer generation) and was deleted again is not "already done".
    fn forgotten(&self) -> BTreeSet<String> {
        let s = self.gossip.status();
        s.forgotten
            .into_iter()
            .filter(|(name, g)| !s.peers.iter().any(|p| &p.name == name && p.generation > *g))
            .map(|(name, _)| name)
            .collect()
    }

    async fn forget(&self, name: &str) -> Result<(), String> {
        self.gossip
            .forget(name)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// One line with everything an operator needs to know about how this
/// agent was started.
fn log_startup(config: &AgentConfig) {
    info!(
        version = env!("CARGO_PKG_VERSION"),
        node_name = config.node_name.as_deref().unwrap_or("(host name)"),
        node_ip = %config.node_ip,
        uplink = config.uplink.as_deref().unwrap_or("(interface holding node_ip)"),
        mode = if config.topology.is_some() { "static topology" } else { "gossip" },
        peers = ?config.peers,
        kubernetes = ?config.kubernetes,
        ipalloc_range = %config.ipalloc_range,
        block_size = config.block_size,
        vxlan_port = config.vxlan_port,
        vni = config.vni,
        mtu = config.mtu.map(|m| m.to_string()).unwrap_or_else(|| "auto".into()),
        gossip_port = config.gossip_port,
        authenticated = config.password.is_some() || config.password_file.is_some(),
        masquerade = !config.no_masquerade,
        probe_port = config.probe_port,
        tunnel = config.tunnel.name(),
        probe_interval = ?config.probe_interval,
        probe_timeout = ?config.probe_timeout,
        pin_dir = %config.pin_dir.display(),
        state_dir = %config.state_dir.display(),
        "overlay-agent starting"
    );
}

/// Reads the password from the flag or the file; `None` when neither is
/// set.
fn password(config: &AgentConfig) -> Result<Option<String>, DaemonError> {
    let pw = match (&config.password, &config.password_file) {
        (Some(p), _) => p.clone(),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(pw) => pw.trim_end_matches(['\n', '\r']).to_owned(),
            // The DaemonSet mounts an optional Secret: no Secret, no file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                warn!(
                    path = %path.display(),
                    "the password file does not exist (no `overlay-password` Secret?): \
                     running without a password"
                );
                return Ok(None);
            }
            Err(source) => {
                return Err(DaemonError::PasswordFile {
                    path: path.clone(),
                    source,
                });
            }
        },
        (None, None) => return Ok(None),
    };
    if pw.is_empty() {
        return Err(DaemonError::EmptyPassword);
    }
    Ok(Some(pw))
}

fn node_name(config: &AgentConfig) -> Result<String, DaemonError> {
    if let Some(n) = &config.node_name {
        return Ok(n.clone());
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .map_err(DaemonError::NodeName)
}

/// `IP` or `IP:PORT` seeds as `IP:PORT`; host names are passed through, to
/// be resolved by chitchat or, for SWIM, by [`resolve_seeds`] at start.
fn seeds(config: &AgentConfig) -> Vec<String> {
    config
        .peers
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| match p.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, config.gossip_port).to_string(),
            Err(_) if p.contains(':') => p.to_owned(),
            Err(_) => format!("{p}:{}", config.gossip_port),
        })
        .collect()
}

async fn start_gossip(config: &AgentConfig, agent: Arc<Agent>) -> Result<Gossip, DaemonError> {
    let name = node_name(config)?;
    let key = password(config)?.map(|pw| Key::derive(pw.as_bytes(), &config.cluster_name));
    if key.is_none() {
        warn!(
            "gossip is NOT authenticated: anyone who can reach UDP port {} can join the cluster \
             and steer pod traffic; set OVERLAY_PASSWORD or --password-file on every node",
            config.gossip_port
        );
    }
    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let gossip_addr = SocketAddr::new(config.node_ip.into(), config.gossip_port);
    let seeds = seeds(config);
    let must_join = seeds.iter().any(|s| *s != gossip_addr.to_string());
    let usable = (1u64 << (32 - u32::from(config.block_size))).saturating_sub(2);
    let wire = Arc::new(WireCounters::default());
    let gc = GossipConfig {
        node_name: name.clone(),
        generation,
        node_ip: config.node_ip,
        vxlan_port: config.vxlan_port,
        gossip_addr,
        seeds: seeds.clone(),
        cluster_id: config.cluster_name.clone(),
        interval: config.gossip_interval,
        phi_threshold: config.phi_threshold,
        claims: ClaimConfig {
            range: config.ipalloc_range,
            block_prefix: config.block_size,
            settle: config.claim_settle,
            low_water: (usable / 8).max(1),
            must_join,
        },
        state_file: Some(config.state_dir.join(paths::BLOCKS_FILE)),
        authenticated: key.is_some(),
        wireguard: agent.announce(),
    };
    info!(
        node = name, %gossip_addr, ?seeds, cluster = config.cluster_name,
        protocol = %config.gossip_protocol,
        range = %config.ipalloc_range, block_size = config.block_size,
        interval = ?config.gossip_interval, settle = ?config.claim_settle,
        authenticated = key.is_some(),
        "starting gossip"
    );
    // chitchat's detection takes about phi rounds after the last
    // heartbeat, more on large clusters (three times that, for margin).
    // SWIM's timings are fixed: a death is known everywhere in under 5 s
    // (probe, indirect probes, 2.5 s of suspicion, spread), and a node cut
    // off sees most of its probes fail within about 5 s (twice that). The
    // settle period must also cover a claim's spread.
    let (detection, times) = match config.gossip_protocol {
        Protocol::Chitchat => (config.gossip_interval.mul_f64(config.phi_threshold), 3),
        Protocol::Swim => (Duration::from_secs(5), 2),
    };
    if config.claim_settle < detection * times {
        warn!(
            settle = ?config.claim_settle, ?detection, times,
            "--claim-settle is shorter than the failure-detection time with its margin: a node \
             cut off from the majority might settle a claim the other side also settles \
             (duplicate addresses)"
        );
    }
    let free = Arc::new(move |blocks: &[ipnet::Ipv4Net]| agent.free_addresses(blocks));
    match config.gossip_protocol {
        Protocol::Chitchat => {
            let transport = SecureUdpTransport::new(
                key.clone(),
                fnv1a(name.as_bytes()),
                generation,
                wire.clone(),
            );
            Gossip::spawn(gc, &transport, free, wire).await
        }
        Protocol::Swim => {
            let socket = tokio::net::UdpSocket::bind(gossip_addr)
                .await
                .map_err(|e| {
                    DaemonError::Gossip(GossipError::Spawn {
                        addr: gossip_addr,
                        source: e.into(),
                    })
                })?;
            let seeds = resolve_seeds(&seeds).await;
            Gossip::spawn_swim(gc, socket, seeds, key, free, wire)
        }
    }
    .map_err(DaemonError::Gossip)
}

/// The seeds' IPv4 socket addresses; a seed that does not resolve (or
/// only to IPv6) is left out with a warning.
async fn resolve_seeds(seeds: &[String]) -> Vec<SocketAddrV4> {
    let mut out = Vec::new();
    for seed in seeds {
        match tokio::net::lookup_host(seed.as_str()).await {
            Ok(addrs) => {
                let before = out.len();
                out.extend(addrs.filter_map(|a| match a {
                    SocketAddr::V4(a) => Some(a),
                    SocketAddr::V6(_) => None,
                }));
                if out.len() == before {
                    warn!(seed, "gossip seed has no IPv4 address: left out");
                }
            }
            Err(e) => warn!(seed, error = %e, "gossip seed does not resolve: left out"),
        }
    }
    out.sort();
    out.dedup();
    out
}

fn status_handler(
    agent: Arc<Agent>,
    gossip: Option<Arc<Gossip>>,
    prober: Option<Arc<Prober>>,
    policy: Option<Arc<PolicyController>>,
) -> Handler {
    Arc::new(move |req: Request| {
        let agent = agent.clone();
        let gossip = gossip.clone();
        let prober = prober.clone();
        let policy = policy.clone();
        Box::pin(async move { route(req, agent, gossip, prober, policy).await })
    })
}

/// The node's whole report: the agent's part (maps read on a blocking
/// thread), gossip's, and the probes', with each peer's state combining
/// its agent's and its datapath's liveness.
async fn full_report(
    agent: &Arc<Agent>,
    gossip: Option<&Arc<Gossip>>,
    prober: Option<&Arc<Prober>>,
    policy: Option<&Arc<PolicyController>>,
) -> Result<NodeReport, tokio::task::JoinError> {
    let a = agent.clone();
    let p = policy.cloned();
    let mut report = tokio::task::spawn_blocking(move || {
        let mut r = a.report();
        r.policy = p.map(|p| p.report());
        r
    })
    .await?;
    report.gossip = gossip.map(|g| g.status());
    report.probes = prober.map(|p| p.report());
    let routed = &report.datapath.peers;
    if let Some(g) = report.gossip.as_mut() {
        for peer in &mut g.peers {
            let Some(ip) = peer.ip else { continue };
            peer.routed = Some(routed.contains(&ip));
            peer.datapath = report
                .probes
                .as_ref()
                .and_then(|p| p.peers.iter().find(|pp| pp.ip == ip))
                .map(|pp| pp.state);
            if peer.state == PeerState::Dead && peer.datapath == Some(DatapathState::Up) {
                peer.state = PeerState::AgentDown;
            }
        }
    }
    Ok(report)
}

fn metrics_handler(
    agent: Arc<Agent>,
    gossip: Option<Arc<Gossip>>,
    prober: Option<Arc<Prober>>,
    policy: Option<Arc<PolicyController>>,
    metrics: Arc<Metrics>,
) -> Handler {
    Arc::new(move |req: Request| {
        let agent = agent.clone();
        let gossip = gossip.clone();
        let prober = prober.clone();
        let policy = policy.clone();
        let metrics = metrics.clone();
        Box::pin(async move {
            match (req.method.as_str(), req.path.as_str()) {
                ("GET", "/metrics") => {
                    match full_report(&agent, gossip.as_ref(), prober.as_ref(), policy.as_ref())
                        .await
                    {
                        Ok(report) => Response {
                            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ..Response::text(200, metrics.render(report))
                        },
                        Err(e) => Response::text(500, format!("metrics failed: {e}\n")),
                    }
                }
                (_, "/metrics") => Response::text(405, "use GET\n"),
                _ => Response::text(404, "try GET /metrics\n"),
            }
        })
    })
}

async fn route(
    req: Request,
    agent: Arc<Agent>,
    gossip: Option<Arc<Gossip>>,
    prober: Option<Arc<Prober>>,
    policy: Option<Arc<PolicyController>>,
) -> Response {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/status") => {
            match full_report(&agent, gossip.as_ref(), prober.as_ref(), policy.as_ref()).await {
                Ok(report) => Response::json(200, &report),
                Err(e) => Response::text(500, format!("status failed: {e}\n")),
            }
        }
        ("GET", "/healthz") => {
            let a = agent.clone();
            match tokio::task::spawn_blocking(move || a.is_ready()).await {
                Ok(true) => Response::text(200, "ok\n"),
                _ => Response::text(503, "not ready: no settled address block yet\n"),
            }
        }
        ("POST", path) if path.starts_with("/forget/") => {
            let name = &path["/forget/".len()..];
            let Some(g) = gossip else {
                return Response::text(
                    400,
                    "this agent runs a static topology: nothing to forget\n",
                );
            };
            match g.forget(name).await {
                Ok(f) => Response::json(200, &f),
                Err(e @ ForgetError::SelfNode(_)) => Response::text(400, format!("{e}\n")),
                Err(e @ ForgetError::Unknown(_)) => Response::text(404, format!("{e}\n")),
                Err(e @ ForgetError::Alive(_)) => Response::text(409, format!("{e}\n")),
            }
        }
        (_, "/status" | "/healthz") => Response::text(405, "use GET\n"),
        _ => Response::text(404, "try GET /status, GET /healthz or POST /forget/NODE\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_get_the_gossip_port_unless_they_carry_one() {
        #[derive(clap::Parser)]
        struct W {
            #[command(flatten)]
            c: AgentConfig,
        }
        let mut c =
            <W as clap::Parser>::parse_from(["x", "--node-ip", "1.2.3.4", "--uplink", "u"]).c;
        c.peers = vec![
            "172.31.0.1".into(),
            " 172.31.0.2:7000".into(),
            "".into(),
            "node3".into(),
        ];
        assert_eq!(
            seeds(&c),
            vec!["172.31.0.1:6783", "172.31.0.2:7000", "node3:6783"]
        );
    }
}
