//! Typed access to the pinned maps.
//!
//! [`Maps::open`] works from the pins alone, so the agent, the CLI's
//! `status`, and tests all read and write the same kernel state without
//! loading any program.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::maps::{
    Array, HashMap, Map, MapData, MapError, PerCpuArray,
    lpm_trie::{Key, LpmTrie},
};
use ipnet::Ipv4Net;
use overlay_common::{
    Encryption, Endpoint, Ipv4Bytes, MAP_CONFIG, MAP_ENCRYPTION, MAP_ENDPOINTS, MAP_PEER_MACS,
    MAP_PEERS, MAP_ROUTES, MAP_STATS, MacKey, NodeConfig, PEER_F_ACTIVE, Peer, ROUTE_F_DIRECT,
    ROUTE_F_ENCRYPT, Route, Stat, mac_key,
};

/// A map operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    /// A pinned map could not be opened (not pinned, or not ours).
    #[error("opening pinned map {path} (is the datapath loaded?)")]
    Open {
        /// Pin path.
        path: PathBuf,
        /// The error.
        #[source]
        source: Box<MapError>,
    },
    /// Reading or writing an entry failed.
    #[error("{op} in map {map}")]
    Access {
        /// What was being done.
        op: &'static str,
        /// Map name.
        map: &'static str,
        /// The error.
        #[source]
        source: Box<MapError>,
    },
}

/// One pod on this node, as the datapath delivers to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointEntry {
    /// The pod's IPv4 address.
    pub ip: Ipv4Addr,
    /// How to reach it.
    pub endpoint: Endpoint,
}

/// What [`Maps::reconcile`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Routes inserted or re-pointed.
    pub routes_set: usize,
    /// Routes withdrawn.
    pub routes_removed: usize,
    /// Peers made active (routed).
    pub peers_added: usize,
    /// Peers withdrawn (inactive or removed).
    pub peers_removed: usize,
}

/// What [`Maps::sync_peer_macs`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MacSyncReport {
    /// MACs inserted or re-pointed.
    pub set: usize,
    /// MACs removed.
    pub removed: usize,
}

impl SyncReport {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Counter totals across CPUs, by [`Stat`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub BTreeMap<&'static str, u64>);

impl Counters {
    /// The total of one counter.
    pub fn get(&self, stat: Stat) -> u64 {
        self.0.get(stat.name()).copied().unwrap_or(0)
    }

    /// Sum of every drop counter.
    pub fn drops(&self) -> u64 {
        Stat::ALL
            .iter()
            .filter(|s| s.is_drop())
            .map(|s| self.get(*s))
            .sum()
    }

    /// `self - earlier`, counter by counter.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters(
            self.0
                .iter()
                .map(|(k, v)| (*k, v.saturating_sub(earlier.0.get(k).copied().unwrap_or(0))))
                .collect(),
        )
    }
}

/// The seven pinned maps of one node.
pub struct Maps {
    encryption: Array<MapData, Encryption>,
    config: Array<MapData, NodeConfig>,
    routes: LpmTrie<MapData, Ipv4Bytes, Route>,
    endpoints: HashMap<MapData, Ipv4Bytes, Endpoint>,
    peers: HashMap<MapData, Ipv4Bytes, Peer>,
    stats: PerCpuArray<MapData, u64>,
    peer_macs: HashMap<MapData, MacKey, Ipv4Bytes>,
}

pub(crate) fn open<T>(dir: &Path, name: &'static str) -> Result<T, MapsError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let path = dir.join(name);
    let err = |e: MapError| MapsError::Open {
        path: path.clone(),
        source: Box::new(e),
    };
    let data = MapData::from_pin(&path).map_err(err)?;
    let map = Map::from_map_data(data).map_err(err)?;
    T::try_from(map).map_err(err)
}

pub(crate) fn access(op: &'static str, map: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |e| MapsError::Access {
        op,
        map,
        source: Box::new(e),
    }
}

/// Removal is idempotent: a key that is already gone is success.
pub(crate) fn removed(
    r: Result<(), MapError>,
    op: &'static str,
    map: &'static str,
) -> Result<(), MapsError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r.map_err(access(op, map)),
    }
}

impl Maps {
    /// Opens the maps pinned under `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            config: open(pin_dir, MAP_CONFIG)?,
            routes: open(pin_dir, MAP_ROUTES)?,
            endpoints: open(pin_dir, MAP_ENDPOINTS)?,
            peers: open(pin_dir, MAP_PEERS)?,
            stats: open(pin_dir, MAP_STATS)?,
            peer_macs: open(pin_dir, MAP_PEER_MACS)?,
            encryption: open(pin_dir, MAP_ENCRYPTION)?,
        })
    }

    /// Writes whether pod traffic between nodes goes through the
    /// WireGuard device, and which.
    pub fn set_encryption(&mut self, e: &Encryption) -> Result<(), MapsError> {
        self.encryption
            .set(0, e, 0)
            .map_err(access("writing the encryption setting", MAP_ENCRYPTION))
    }

    /// Reads the encryption setting.
    pub fn encryption(&self) -> Result<Encryption, MapsError> {
        self.encryption
            .get(&0, 0)
            .map_err(access("reading the encryption setting", MAP_ENCRYPTION))
    }

    /// Writes this node's configuration.
    pub fn set_config(&mut self, cfg: &NodeConfig) -> Result<(), MapsError> {
        self.config
            .set(0, cfg, 0)
            .map_err(access("writing the node configuration", MAP_CONFIG))
    }

    /// Reads this node's configuration.
    pub fn config(&self) -> Result<NodeConfig, MapsError> {
        self.config
            .get(&0, 0)
            .map_err(access("reading the node configuration", MAP_CONFIG))
    }

    /// Routes `block` to the node at `node_ip` through VXLAN.
    pub fn upsert_route(&mut self, block: Ipv4Net, node_ip: Ipv4Addr) -> Result<(), MapsError> {
        self.upsert_route_flags(block, node_ip, 0)
    }

    /// Routes `block` to the node at `node_ip` with `ROUTE_F_*` `flags`.
    pub fn upsert_route_flags(
        &mut self,
        block: Ipv4Net,
        node_ip: Ipv4Addr,
        flags: u32,
    ) -> Result<(), MapsError> {
        let route = Route {
            node_ip: node_ip.octets(),
            flags,
        };
        self.routes
            .insert(&route_key(block), route, 0)
            .map_err(access("inserting a route", MAP_ROUTES))
    }

    /// Removes the route for exactly `block`. Idempotent.
    pub fn remove_route(&mut self, block: Ipv4Net) -> Result<(), MapsError> {
        removed(
            self.routes.remove(&route_key(block)),
            "removing a route",
            MAP_ROUTES,
        )
    }

    /// Every route: block → owning node.
    pub fn routes(&self) -> Result<BTreeMap<Ipv4Net, Ipv4Addr>, MapsError> {
        Ok(self
            .route_entries()?
            .into_iter()
            .map(|(net, r)| (net, Ipv4Addr::from(r.node_ip)))
            .collect())
    }

    /// Every route with its flags: block → [`Route`].
    pub fn route_entries(&self) -> Result<BTreeMap<Ipv4Net, Route>, MapsError> {
        let mut out = BTreeMap::new();
        for entry in self.routes.iter() {
            let (key, route) = entry.map_err(access("listing routes", MAP_ROUTES))?;
            let net = Ipv4Net::new(Ipv4Addr::from(key.data()), key.prefix_len() as u8)
                .expect("the kernel only stores prefix lengths we inserted (<= 32)");
            out.insert(net, route);
        }
        Ok(out)
    }

    /// The peer MAC map: MAC → node.
    pub fn peer_macs(&self) -> Result<BTreeMap<[u8; 6], Ipv4Addr>, MapsError> {
        let mut out = BTreeMap::new();
        for entry in self.peer_macs.iter() {
            let (key, ip) = entry.map_err(access("listing peer MACs", MAP_PEER_MACS))?;
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&key[..6]);
            out.insert(mac, Ipv4Addr::from(ip));
        }
        Ok(out)
    }

    /// Makes the peer MAC map hold exactly `want` (node → MAC), changing
    /// only the entries that differ.
    pub fn sync_peer_macs(
        &mut self,
        want: &BTreeMap<Ipv4Addr, [u8; 6]>,
    ) -> Result<MacSyncReport, MapsError> {
        let want: BTreeMap<[u8; 6], Ipv4Addr> = want.iter().map(|(ip, m)| (*m, *ip)).collect();
        let have = self.peer_macs()?;
        let mut report = MacSyncReport::default();
        for (mac, ip) in &want {
            if have.get(mac) != Some(ip) {
                self.peer_macs
                    .insert(mac_key(*mac), ip.octets(), 0)
                    .map_err(access("inserting a peer MAC", MAP_PEER_MACS))?;
                report.set += 1;
            }
        }
        for mac in have.keys().filter(|m| !want.contains_key(*m)) {
            removed(
                self.peer_macs.remove(&mac_key(*mac)),
                "removing a peer MAC",
                MAP_PEER_MACS,
            )?;
            report.removed += 1;
        }
        Ok(report)
    }

    /// Records a pod on this node.
    pub fn upsert_endpoint(&mut self, ip: Ipv4Addr, ep: &Endpoint) -> Result<(), MapsError> {
        self.endpoints
            .insert(ip.octets(), ep, 0)
            .map_err(access("inserting an endpoint", MAP_ENDPOINTS))
    }

    /// Forgets a pod. Idempotent.
    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), MapsError> {
        removed(
            self.endpoints.remove(&ip.octets()),
            "removing an endpoint",
            MAP_ENDPOINTS,
        )
    }

    /// The pod at `ip`, if this node has one.
    pub fn endpoint(&self, ip: Ipv4Addr) -> Result<Option<Endpoint>, MapsError> {
        match self.endpoints.get(&ip.octets(), 0) {
            Ok(ep) => Ok(Some(ep)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(access("reading an endpoint", MAP_ENDPOINTS)(e)),
        }
    }

    /// Every pod on this node.
    pub fn endpoints(&self) -> Result<Vec<EndpointEntry>, MapsError> {
        let mut out = Vec::new();
        for entry in self.endpoints.iter() {
            let (ip, endpoint) = entry.map_err(access("listing endpoints", MAP_ENDPOINTS))?;
            out.push(EndpointEntry {
                ip: Ipv4Addr::from(ip),
                endpoint,
            });
        }
        out.sort_by_key(|e| e.ip);
        Ok(out)
    }

    /// Accepts VXLAN from `ip` (a routed peer). Idempotent.
    pub fn upsert_peer(&mut self, ip: Ipv4Addr) -> Result<(), MapsError> {
        self.set_peer(ip, true)
    }

    /// Lists `ip` as a node of the cluster: `active`, its VXLAN is accepted
    /// and it is routed to; otherwise only its liveness probes are
    /// answered. Idempotent.
    pub fn set_peer(&mut self, ip: Ipv4Addr, active: bool) -> Result<(), MapsError> {
        let peer = Peer {
            flags: if active { PEER_F_ACTIVE } else { 0 },
        };
        self.peers
            .insert(ip.octets(), peer, 0)
            .map_err(access("inserting a peer", MAP_PEERS))
    }

    /// Forgets `ip` altogether. Idempotent.
    pub fn remove_peer(&mut self, ip: Ipv4Addr) -> Result<(), MapsError> {
        removed(
            self.peers.remove(&ip.octets()),
            "removing a peer",
            MAP_PEERS,
        )
    }

    /// Makes the routes and peers maps hold exactly `routes` and `peers`
    /// (node → active) by changing only the entries that differ:
    /// unaffected entries are never removed, so traffic to nodes whose
    /// blocks did not change never blips. The blocks of the nodes in
    /// `direct` carry [`ROUTE_F_DIRECT`], those of the nodes in `encrypt`
    /// (they publish a WireGuard key) [`ROUTE_F_ENCRYPT`].
    pub fn reconcile(
        &mut self,
        routes: &BTreeMap<Ipv4Net, Ipv4Addr>,
        direct: &BTreeSet<Ipv4Addr>,
        encrypt: &BTreeSet<Ipv4Addr>,
        peers: &BTreeMap<Ipv4Addr, bool>,
    ) -> Result<SyncReport, MapsError> {
        let mut report = SyncReport::default();
        let have = self.route_entries()?;
        for (block, node) in routes {
            let want = Route {
                node_ip: node.octets(),
                flags: if direct.contains(node) {
                    ROUTE_F_DIRECT
                } else {
                    0
                } | if encrypt.contains(node) {
                    ROUTE_F_ENCRYPT
                } else {
                    0
                },
            };
            if have.get(block) != Some(&want) {
                self.upsert_route_flags(*block, *node, want.flags)?;
                report.routes_set += 1;
            }
        }
        for block in have.keys().filter(|b| !routes.contains_key(b)) {
            self.remove_route(*block)?;
            report.routes_removed += 1;
        }
        let have = self.known_peers()?;
        for (peer, active) in peers {
            let before = have.get(peer).copied();
            if before == Some(*active) {
                continue;
            }
            self.set_peer(*peer, *active)?;
            match (before, *active) {
                (Some(true), false) => report.peers_removed += 1,
                (_, true) => report.peers_added += 1,
                (None, false) => {}
                (Some(false), false) => unreachable!("unchanged entries are skipped"),
            }
        }
        for (peer, active) in have.iter().filter(|(p, _)| !peers.contains_key(p)) {
            self.remove_peer(*peer)?;
            if *active {
                report.peers_removed += 1;
            }
        }
        Ok(report)
    }

    /// Every routed node: those whose VXLAN is accepted.
    pub fn peers(&self) -> Result<Vec<Ipv4Addr>, MapsError> {
        Ok(self
            .known_peers()?
            .into_iter()
            .filter_map(|(ip, active)| active.then_some(ip))
            .collect())
    }

    /// Every node in the peer map, and whether it is active (routed).
    pub fn known_peers(&self) -> Result<BTreeMap<Ipv4Addr, bool>, MapsError> {
        let mut out = BTreeMap::new();
        for entry in self.peers.iter() {
            let (key, peer) = entry.map_err(access("listing peers", MAP_PEERS))?;
            out.insert(Ipv4Addr::from(key), peer.flags & PEER_F_ACTIVE != 0);
        }
        Ok(out)
    }

    /// Every counter, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, MapsError> {
        let mut out = BTreeMap::new();
        for stat in Stat::ALL {
            let per_cpu = self
                .stats
                .get(&(stat as u32), 0)
                .map_err(access("reading counters", MAP_STATS))?;
            out.insert(stat.name(), per_cpu.iter().sum());
        }
        Ok(Counters(out))
    }
}

fn route_key(block: Ipv4Net) -> Key<Ipv4Bytes> {
    Key::new(u32::from(block.prefix_len()), block.network().octets())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_subtract_and_sum_drops() {
        let mut before = Counters::default();
        before.0.insert(Stat::DropWrongVni.name(), 2);
        before.0.insert(Stat::FromPodLocal.name(), 5);
        let mut after = before.clone();
        after.0.insert(Stat::DropWrongVni.name(), 5);
        after.0.insert(Stat::DropUnknownPeer.name(), 1);
        after.0.insert(Stat::FromPodLocal.name(), 9);
        let d = after.since(&before);
        assert_eq!(d.get(Stat::DropWrongVni), 3);
        assert_eq!(d.get(Stat::DropUnknownPeer), 1);
        assert_eq!(d.get(Stat::FromPodLocal), 4);
        assert_eq!(d.drops(), 4);
    }

    #[test]
    fn route_keys_are_prefix_length_then_network_bytes() {
        let k = route_key("10.32.7.0/24".parse().expect("cidr"));
        assert_eq!(k.prefix_len(), 24);
        assert_eq!(k.data(), [10, 32, 7, 0]);
        // A host address inside the block is normalised to the network.
        let k = route_key("10.32.7.9/24".parse().expect("cidr"));
        assert_eq!(k.data(), [10, 32, 7, 0]);
    }
}
