//! The node agent: owns this node's datapath, its address allocations and
//! its pods, and answers `overlay-cni` (see [`crate::api`]).
//!
//! One [`Agent`] per node. Every operation takes the agent's lock for its
//! whole duration: ADDs are a few milliseconds each, and serialising them
//! makes every multi-step change (address, veth, program, map entry)
//! all-or-nothing with respect to the others.

pub mod cni_config;
mod daemon;
mod pods;
pub mod report;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{Mutex, MutexGuard, TryLockError},
};

pub use daemon::{DaemonError, run};
use overlay_common::{
    CONFIG_F_READY, ENCRYPTION_F_ON, Encryption, MAX_VNI, NodeConfig, VXLAN_OVERHEAD,
};
pub use pods::{HOST_IF_PREFIX, is_host_ifname};
use tracing::{debug, error, info, warn};

use crate::{
    api::{Handler, Reply, Request},
    cni::{CniError, code},
    config::{AgentConfig, EncryptionMode, TunnelMode},
    datapath::{Datapath, DatapathError},
    encryption::{
        self,
        agent::{EncryptionError, Encryptor, Files},
        announce::Announce,
    },
    ipam::{Ipam, IpamError},
    link::{self, LinkError},
    liveness::{self, DatapathState},
    maps::{Maps, MapsError, SyncReport},
    masquerade::{self, MasqueradeError},
    topology::Topology,
    tunnel_mode::{self, Carriage, PeerCarriage},
};

/// Why the agent could not start or apply a topology.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The uplink could not be inspected.
    #[error("inspecting the uplink")]
    Uplink(#[source] LinkError),
    /// Loading or attaching the datapath failed.
    #[error("setting up the datapath")]
    Datapath(#[source] DatapathError),
    /// A pinned map could not be used.
    #[error("using the pinned maps")]
    Maps(#[source] MapsError),
    /// The address store could not be opened.
    #[error("opening the address store")]
    Ipam(#[source] IpamError),
    /// The GRO tunnel device could not be set up.
    #[error("setting up the GRO tunnel device")]
    GroDevice(#[source] crate::netlink::NetlinkError),
    /// Egress masquerade could not be installed.
    #[error("installing egress masquerade")]
    Masquerade(#[source] MasqueradeError),
    /// `--encryption wireguard` could not be set up (or, off, undone).
    #[error("setting up encryption")]
    Encryption(#[source] EncryptionError),
}

/// Everything behind the agent's lock.
struct State {
    datapath: Datapath,
    maps: Maps,
    ipam: Ipam,
    /// Whether a topology has been applied (STATUS reports not ready until
    /// then).
    topology_applied: bool,
    /// Peers routed by the last applied topology.
    routed: BTreeSet<Ipv4Addr>,
    /// How each peer's traffic is carried (`--tunnel`), as last decided.
    carriage: BTreeMap<Ipv4Addr, PeerCarriage>,
    /// The peer MACs last written to the peer MAC map.
    macs: BTreeMap<Ipv4Addr, [u8; 6]>,
    /// The last topology and datapath states applied, re-applied by
    /// [`Agent::refresh_tunnels`].
    last: Option<(Topology, BTreeMap<Ipv4Addr, DatapathState>)>,
    /// Bumped by every [`Agent::apply_topology`]: a refresh that finds it
    /// moved while it asked the kernel gives way to the newer topology.
    generation: u64,
    /// `--encryption wireguard`: the key, the device and its peers.
    encryptor: Option<Encryptor>,
}

/// The node agent.
pub struct Agent {
    config: AgentConfig,
    pod_mtu: u32,
    uplink_ifindex: u32,
    state: Mutex<State>,
}

impl Agent {
    /// Loads (or re-opens) the pinned datapath, writes the node's
    /// configuration, attaches `from_uplink`, opens the address store and
    /// installs egress masquerade. Pods wired by an earlier agent keep
    /// working throughout: pins are re-used, never replaced.
    pub fn start(config: AgentConfig) -> Result<Self, AgentError> {
        if config.vni > MAX_VNI {
            return Err(AgentError::Config(format!(
                "VNI {} does not fit VXLAN's 24 bits (max {MAX_VNI})",
                config.vni
            )));
        }
        let uplink = match &config.uplink {
            Some(u) => u.clone(),
            None => link::holding(config.node_ip)
                .map_err(|e| {
                    AgentError::Config(format!(
                        "finding the interface that holds {}: {e}",
                        config.node_ip
                    ))
                })?
                .ok_or_else(|| {
                    AgentError::Config(format!(
                        "no interface holds the node address {}: set --uplink (OVERLAY_UPLINK) \
                         or correct --node-ip (OVERLAY_NODE_IP)",
                        config.node_ip
                    ))
                })?,
        };
        let uplink_ifindex = link::ifindex(&uplink).map_err(AgentError::Uplink)?;
        let encrypted = config.encryption == EncryptionMode::Wireguard;
        let pod_mtu = match config.mtu {
            Some(m) => m,
            // Every pod packet to another node crosses in WireGuard.
            None if encrypted => {
                let m = link::mtu(&uplink).map_err(AgentError::Uplink)?;
                m.checked_sub(encryption::OVERHEAD).ok_or_else(|| {
                    AgentError::Config(format!(
                        "uplink {uplink} MTU {m} is smaller than WireGuard's {} bytes",
                        encryption::OVERHEAD
                    ))
                })?
            }
            // Never encapsulated: the pods get the whole uplink MTU.
            None if config.tunnel == TunnelMode::Direct => {
                link::mtu(&uplink).map_err(AgentError::Uplink)?
            }
            // `auto` too: one pod MTU for every peer, and the encapsulated
            // ones need the 50 bytes.
            None => {
                let m = link::mtu(&uplink).map_err(AgentError::Uplink)?;
                m.checked_sub(VXLAN_OVERHEAD).ok_or_else(|| {
                    AgentError::Config(format!(
                        "uplink {uplink} MTU {m} is smaller than VXLAN's {VXLAN_OVERHEAD} bytes"
                    ))
                })?
            }
        };
        if !(576..=65_535).contains(&pod_mtu) {
            return Err(AgentError::Config(format!(
                "pod MTU {pod_mtu} is outside 576..=65535"
            )));
        }
        let mut datapath = Datapath::load(&config.pin_dir).map_err(AgentError::Datapath)?;
        let mut maps = Maps::open(&config.pin_dir).map_err(AgentError::Maps)?;
        maps.set_config(&NodeConfig {
            node_ip: config.node_ip.octets(),
            uplink_ifindex,
            vxlan_port: config.vxlan_port,
            probe_port: config.probe_port,
            vni: config.vni,
            mtu: pod_mtu,
            flags: CONFIG_F_READY,
        })
        .map_err(AgentError::Maps)?;
        datapath
            .attach_uplink(&uplink)
            .map_err(AgentError::Datapath)?;
        // Pods wired by an earlier agent get this release's `from_pod` (the
        // program inside each pinned link is swapped atomically: no packet
        // is lost, and an upgrade brings its checks to existing pods too).
        let mut reattached = 0;
        for (prog, iface) in crate::datapath::attachments(&config.pin_dir) {
            if prog != overlay_common::PROG_FROM_POD {
                continue;
            }
            match datapath.attach_pod(&iface) {
                Ok(()) => reattached += 1,
                // A pod deleted while no agent ran: GC removes its pin.
                Err(e) => warn!(iface, error = %crate::cni::error::chain(&e),
                    "re-attaching from_pod to an existing pod failed"),
            }
        }
        // Maps of an earlier layout are no longer used by any program now.
        for retired in overlay_common::RETIRED_MAPS {
            let pin = config.pin_dir.join(retired);
            if std::fs::remove_file(&pin).is_ok() {
                info!(
                    map = retired,
                    "removed the pin of a map an earlier release used"
                );
            }
        }
        let encryptor = if encrypted {
            Some(start_encryption(
                &config,
                &uplink,
                &mut datapath,
                &mut maps,
            )?)
        } else {
            stop_encryption(&config, &mut maps)?;
            None
        };
        // After `from_uplink` is attached: from then on it decides every
        // packet to our port, the device only lends GRO its tunnel socket.
        crate::netlink::ensure_gro_device(config.vxlan_port).map_err(AgentError::GroDevice)?;
        let ipam =
            Ipam::open(&config.state_dir.join("ipam"), Vec::new()).map_err(AgentError::Ipam)?;
        if !config.no_masquerade {
            masquerade::install(config.ipalloc_range).map_err(AgentError::Masquerade)?;
        }
        info!(
            node_ip = %config.node_ip,
            uplink = %uplink,
            pod_mtu,
            tunnel = config.tunnel.name(),
            vxlan_port = config.vxlan_port,
            vni = config.vni,
            pin_dir = %config.pin_dir.display(),
            allocations = ipam.allocations().count(),
            pods_reattached = reattached,
            "datapath ready"
        );
        // The peer MACs an earlier agent wrote: kept for peers whose
        // neighbour entry the kernel has aged out since (see
        // `tunnel_mode::peer_macs`), so a restart never drops a direct flow.
        let macs = maps
            .peer_macs()
            .map(|m| m.into_iter().map(|(mac, ip)| (ip, mac)).collect())
            .unwrap_or_default();
        Ok(Self {
            config,
            pod_mtu,
            uplink_ifindex,
            state: Mutex::new(State {
                datapath,
                maps,
                ipam,
                topology_applied: false,
                routed: BTreeSet::new(),
                carriage: BTreeMap::new(),
                macs,
                last: None,
                generation: 0,
                encryptor,
            }),
        })
    }

    /// What gossip publishes of this node's WireGuard device
    /// (`--encryption wireguard`).
    pub fn announce(&self) -> Option<Announce> {
        self.lock().encryptor.as_ref().map(|e| e.announce().clone())
    }

    /// Starts the WireGuard device again if its process is gone
    /// (`--encryption wireguard`).
    pub fn revive_encryption(&self) -> Result<bool, AgentError> {
        match self.lock().encryptor.as_mut() {
            Some(e) => e.revive().map_err(AgentError::Encryption),
            None => Ok(false),
        }
    }

    /// Takes a new WireGuard key: a fresh one when `rotate`, else the one
    /// the key file holds if it changed (`overlay-agent rotate-key`).
    /// Returns the announce gossip must publish, `None` when nothing
    /// changed (or encryption is off).
    pub fn rotate_key(&self, rotate: bool) -> Result<Option<Announce>, AgentError> {
        let mut state = self.lock();
        let Some(e) = state.encryptor.as_mut() else {
            return Ok(None);
        };
        if rotate {
            e.rotate().map(Some)
        } else {
            e.reload_key()
        }
        .map_err(AgentError::Encryption)
    }

    /// Takes this node's blocks from `topology` for address allocation and
    /// brings the routes and peers maps in line with it, by diff: a node is
    /// routed per [`liveness::routed`], given what `datapaths` says of its
    /// datapath (missing: never heard), and every other node stays in the
    /// peers map, inactive, so that its probes are answered.
    pub fn apply_topology(
        &self,
        topology: &Topology,
        datapaths: &BTreeMap<Ipv4Addr, DatapathState>,
    ) -> Result<SyncReport, AgentError> {
        self.apply(topology, datapaths, None)
    }

    /// Re-decides, per peer, VXLAN or direct (`--tunnel`) from what the
    /// kernel says now of the route to it, refreshes the peer MAC map from
    /// the uplink's neighbour table, and re-applies the last topology if
    /// that changed anything. The daemon calls it every few seconds: a
    /// route that changes under the agent changes the carriage.
    pub fn refresh_tunnels(&self) -> Result<(), AgentError> {
        let (last, generation) = {
            let state = self.lock();
            (state.last.clone(), state.generation)
        };
        if let Some((topology, datapaths)) = last {
            self.apply(&topology, &datapaths, Some(generation))?;
        }
        Ok(())
    }

    /// Applies `topology`; `refresh` is the generation a refresh read it
    /// at (`None`: a new topology).
    fn apply(
        &self,
        topology: &Topology,
        datapaths: &BTreeMap<Ipv4Addr, DatapathState>,
        refresh: Option<u64>,
    ) -> Result<SyncReport, AgentError> {
        let me = self.config.node_ip;
        let others: Vec<Ipv4Addr> = topology
            .nodes
            .iter()
            .map(|n| n.ip)
            .filter(|ip| *ip != me)
            .collect();
        // Ask the kernel before taking the lock: routes to every peer, and
        // ARP started for the peers that may be routed directly.
        let solicit: Vec<Ipv4Addr> = if self.config.tunnel == TunnelMode::Vxlan {
            Vec::new()
        } else {
            others.clone()
        };
        let survey = crate::netlink::survey(self.uplink_ifindex, &others, &solicit);
        let mut state = self.lock();
        match refresh {
            Some(g) if g != state.generation => return Ok(SyncReport::default()),
            Some(_) => {}
            None => state.generation += 1,
        }
        let refresh = refresh.is_some();
        let carriage: BTreeMap<Ipv4Addr, PeerCarriage> = match &survey {
            Ok(sv) => others
                .iter()
                .map(|p| {
                    let route = sv
                        .routes
                        .get(p)
                        .cloned()
                        .unwrap_or_else(|| Err("not looked up".to_owned()));
                    (
                        *p,
                        tunnel_mode::decide(self.config.tunnel, &route, self.uplink_ifindex),
                    )
                })
                .collect(),
            Err(e) => {
                warn!(error = %crate::cni::error::chain(e),
                    "asking the kernel for the routes to the peers: keeping the last decisions");
                others
                    .iter()
                    .map(|p| {
                        let d = state.carriage.get(p).cloned().unwrap_or_else(|| {
                            tunnel_mode::decide(
                                self.config.tunnel,
                                &Err("the kernel could not be asked".to_owned()),
                                self.uplink_ifindex,
                            )
                        });
                        (*p, d)
                    })
                    .collect()
            }
        };
        let refused = |ip: Ipv4Addr| {
            carriage
                .get(&ip)
                .is_some_and(|c| c.carriage == Carriage::Refused)
        };
        let routed = |n: &crate::topology::Node| {
            n.ip == me
                || (!refused(n.ip)
                    && liveness::routed(n, datapaths.get(&n.ip).copied().unwrap_or_default()))
        };
        // With encryption on, the nodes that publish a key get their pod
        // traffic through WireGuard; the others none (fail closed).
        let encrypt: BTreeSet<Ipv4Addr> = if state.encryptor.is_some() {
            topology
                .nodes
                .iter()
                .filter(|n| n.ip != me && n.wireguard.is_some())
                .map(|n| n.ip)
                .collect()
        } else {
            BTreeSet::new()
        };
        let direct: BTreeSet<Ipv4Addr> = carriage
            .iter()
            .filter(|(_, c)| c.carriage == Carriage::Direct)
            .map(|(ip, _)| *ip)
            .collect();
        let blocks = topology.blocks_of(me);
        if blocks.is_empty() && !refresh {
            warn!(node_ip = %me, "the topology gives this node no address block: ADD will fail");
        }
        if !refresh {
            for b in &blocks {
                if !self.config.ipalloc_range.contains(b) {
                    warn!(block = %b, range = %self.config.ipalloc_range,
                        "block lies outside the cluster range: its pods' traffic will be masqueraded");
                }
            }
        }
        state.ipam.set_blocks(blocks);
        let report = state
            .maps
            .reconcile(
                &topology.routes(routed),
                &direct,
                &encrypt,
                &topology.peers(me, routed),
            )
            .map_err(AgentError::Maps)?;
        for (ip, c) in &carriage {
            if state.carriage.get(ip) == Some(c) {
                continue;
            }
            match c.carriage {
                Carriage::Refused => error!(peer = %ip, reason = %c.why,
                    "--tunnel direct: refusing to route peer {ip}, {}: its pods are unreachable \
                     from here (--tunnel auto would encapsulate towards it)", c.why),
                Carriage::Direct => info!(peer = %ip, "peer is on-link: routed directly"),
                Carriage::Vxlan => info!(peer = %ip, reason = %c.why, "peer routed through VXLAN"),
            }
        }
        if let Some(e) = state.encryptor.as_mut() {
            let peers = topology.nodes.iter().filter(|n| n.ip != me && routed(n));
            if let Err(err) = e.sync(peers) {
                error!(error = %crate::cni::error::chain(&err), "configuring the WireGuard peers");
            }
        }
        state.carriage = carriage.clone();
        if let Ok(sv) = &survey {
            let macs = tunnel_mode::peer_macs(&others, &sv.neighbours, &state.macs);
            match state.maps.sync_peer_macs(&macs) {
                Ok(r) if r.set + r.removed > 0 => {
                    debug!(set = r.set, removed = r.removed, "peer MAC map updated");
                }
                Ok(_) => {}
                Err(e) => warn!(error = %crate::cni::error::chain(&e), "updating the peer MAC map"),
            }
            state.macs = macs;
        }
        state.topology_applied = true;
        let now: BTreeSet<Ipv4Addr> = topology
            .nodes
            .iter()
            .filter(|n| n.ip != me && routed(n))
            .map(|n| n.ip)
            .collect();
        for n in topology.nodes.iter().filter(|n| n.ip != me) {
            let dp = datapaths.get(&n.ip).copied().unwrap_or_default();
            match (state.routed.contains(&n.ip), now.contains(&n.ip)) {
                (true, false) => warn!(peer = %n.ip, agent_alive = n.alive, datapath = ?dp,
                    "peer withdrawn: no routes to its blocks, its VXLAN refused"),
                (false, true) if state.topology_applied => info!(peer = %n.ip,
                    agent_alive = n.alive, datapath = ?dp, "peer routed"),
                (true, true) if !n.alive && !refresh => debug!(peer = %n.ip,
                    "peer's agent is down, its datapath answers: routes kept"),
                _ => {}
            }
        }
        state.routed = now;
        state.last = Some((topology.clone(), datapaths.clone()));
        if !refresh || !report.is_empty() {
            info!(
                nodes = topology.nodes.len(),
                routes_set = report.routes_set,
                routes_removed = report.routes_removed,
                peers_added = report.peers_added,
                peers_removed = report.peers_removed,
                direct = direct.len(),
                "topology applied"
            );
        }
        Ok(report)
    }

    /// Free addresses in `blocks` (this node's usable blocks as gossip
    /// sees them, which may be ahead of the ones applied). Never waits for
    /// a running operation: `None` (unknown) while one holds the lock.
    pub fn free_addresses(&self, blocks: &[ipnet::Ipv4Net]) -> Option<u64> {
        let state = match self.state.try_lock() {
            Ok(s) => s,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(state.ipam.free_in(blocks))
    }

    /// Readiness, address usage and the datapath summary (the gossip part
    /// of the report is filled in by the daemon).
    pub fn report(&self) -> report::NodeReport {
        let state = self.lock();
        let ready = self.readiness(&state).is_ok();
        let mut datapath = report::DatapathReport {
            attachments: crate::datapath::attachments(&self.config.pin_dir),
            ..Default::default()
        };
        if let Ok(r) = state.maps.routes() {
            datapath.routes = r.len();
        }
        if let Ok(p) = state.maps.peers() {
            datapath.peers = p;
        }
        if let Ok(e) = state.maps.endpoints() {
            datapath.endpoints = e.len();
        }
        if let Ok(c) = state.maps.counters() {
            datapath.counters = c.0.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        }
        datapath.tunnel = self.config.tunnel.name().to_owned();
        datapath.carriage = state
            .carriage
            .iter()
            .map(|(ip, c)| report::PeerCarriageReport {
                ip: *ip,
                carriage: c.carriage,
                why: c.why.clone(),
                mac: state.macs.get(ip).map(|m| crate::link::format_mac(*m)),
            })
            .collect();
        report::NodeReport {
            ready,
            source: if self.config.topology.is_some() {
                "static"
            } else {
                "gossip"
            }
            .to_owned(),
            gossip: None,
            probes: None,
            policy: None,
            encryption: state.encryptor.as_ref().map(|e| e.report()),
            ipam: state.ipam.usage(),
            datapath,
        }
    }

    /// The addresses of this node's pods (its endpoints map); empty if the
    /// map cannot be read.
    pub fn endpoint_ips(&self) -> BTreeSet<Ipv4Addr> {
        match self.lock().maps.endpoints() {
            Ok(e) => e.into_iter().map(|e| e.ip).collect(),
            Err(e) => {
                warn!(error = %crate::cni::error::chain(&e), "reading the endpoints");
                BTreeSet::new()
            }
        }
    }

    /// The state directory (address store, keys, the WireGuard device's
    /// files).
    pub fn state_dir(&self) -> &std::path::Path {
        &self.config.state_dir
    }

    /// The pin directory of the datapath.
    pub fn pin_dir(&self) -> &std::path::Path {
        &self.config.pin_dir
    }

    /// Whether ADD can be served: a topology is applied and gives this node
    /// a block.
    pub fn is_ready(&self) -> bool {
        self.status().is_ok()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as consistent as
        // the steps that ran (each is idempotent and undone by DEL or GC).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn status(&self) -> Result<(), CniError> {
        self.readiness(&self.lock())
    }

    /// Why ADD cannot be served yet, if it cannot (STATUS, `/healthz` and
    /// the report's `ready` all ask this).
    fn readiness(&self, state: &State) -> Result<(), CniError> {
        if !state.topology_applied {
            return Err(CniError::new(
                code::PLUGIN_NOT_AVAILABLE,
                "the overlay agent is starting: no topology applied yet",
            ));
        }
        if state.ipam.blocks().is_empty() {
            return Err(CniError::new(
                code::PLUGIN_NOT_AVAILABLE,
                format!("node {} owns no address block yet", self.config.node_ip),
            ));
        }
        Ok(())
    }
}

impl Handler for Agent {
    fn handle(&self, request: Request) -> Reply {
        let result = match request {
            Request::Add(req) => self.add(&req).map(Some),
            Request::Del(req) => self.del(&req).map(|()| None),
            Request::Check(req) => self.check(&req).map(|()| None),
            Request::Gc { valid } => self.gc(&valid).map(|()| None),
            Request::Status => self.status().map(|()| None),
        };
        result.into()
    }
}

/// `--encryption wireguard`: the key pair, the device (kept if one serves,
/// started otherwise) and `from_wireguard` on its interface. Pod traffic
/// to other nodes is dropped (fail closed) until the device is there.
fn start_encryption(
    config: &AgentConfig,
    uplink: &str,
    datapath: &mut Datapath,
    maps: &mut Maps,
) -> Result<Encryptor, AgentError> {
    let uplink_mtu = link::mtu(uplink).map_err(AgentError::Uplink)?;
    let mut e = Encryptor::prepare(&config.state_dir, config.wireguard_port, uplink_mtu)
        .map_err(AgentError::Encryption)?;
    let before = maps.encryption().map_err(AgentError::Maps)?;
    if before.flags & ENCRYPTION_F_ON == 0 {
        maps.set_encryption(&Encryption {
            flags: ENCRYPTION_F_ON,
            ifindex: 0,
        })
        .map_err(AgentError::Maps)?;
    }
    let ifindex = e.ensure_device().map_err(AgentError::Encryption)?;
    datapath
        .attach_wireguard(encryption::DEVICE)
        .map_err(AgentError::Datapath)?;
    maps.set_encryption(&Encryption {
        flags: ENCRYPTION_F_ON,
        ifindex,
    })
    .map_err(AgentError::Maps)?;
    info!(device = encryption::DEVICE, ifindex, port = config.wireguard_port,
        public_key = %e.announce().public_key, "pod traffic between nodes is encrypted (WireGuard)");
    Ok(e)
}

/// `--encryption off`: pod traffic in clear again; a device an earlier
/// agent started with encryption on is stopped and its interface removed.
fn stop_encryption(config: &AgentConfig, maps: &mut Maps) -> Result<(), AgentError> {
    let was_on = maps
        .encryption()
        .is_ok_and(|e| e.flags & ENCRYPTION_F_ON != 0);
    maps.set_encryption(&Encryption::default())
        .map_err(AgentError::Maps)?;
    if was_on || link::ifindex(encryption::DEVICE).is_ok() {
        info!("encryption off: stopping the WireGuard device");
        crate::datapath::detach(&config.pin_dir, encryption::DEVICE)
            .map_err(AgentError::Datapath)?;
        encryption::agent::stop_device(&Files::under(&config.state_dir).status)
            .map_err(AgentError::Encryption)?;
    }
    Ok(())
}
