//! The pinned NetworkPolicy maps: written by diff, read for status.

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};

use aya::maps::{
    HashMap, MapData, PerCpuHashMap,
    lpm_trie::{Key, LpmTrie},
};
use overlay_common::{
    CidrKey, CtEntry, CtKey, DIR_EGRESS, DropKey, Identity, Ipv4Bytes, MAP_CONNTRACK,
    MAP_IDENTITIES, MAP_POLICY, MAP_POLICY_CIDRS, MAP_POLICY_DROPS, MAP_POLICY_ENDPOINTS,
    PolicyEndpoint, PolicyKey, PolicyRule,
};
use serde::{Deserialize, Serialize};

use super::compile::Compiled;
use crate::maps::{MapsError, access, open, removed};

/// What one update changed, entry by entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateReport {
    /// Entries inserted or rewritten, over the four maps.
    pub written: usize,
    /// Entries removed, over the four maps.
    pub removed: usize,
}

/// Policy drops of one local pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    /// Packets dropped on the way in.
    pub ingress: u64,
    /// Packets dropped on the way out.
    pub egress: u64,
}

/// The six pinned policy maps of one node.
pub struct PolicyMaps {
    identities: HashMap<MapData, Ipv4Bytes, Identity>,
    endpoints: HashMap<MapData, Ipv4Bytes, PolicyEndpoint>,
    rules: LpmTrie<MapData, PolicyKey, PolicyRule>,
    cidrs: LpmTrie<MapData, CidrKey, Identity>,
    conntrack: HashMap<MapData, CtKey, CtEntry>,
    drops: PerCpuHashMap<MapData, DropKey, u64>,
}

impl PolicyMaps {
    /// Opens the maps pinned under `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            identities: open(pin_dir, MAP_IDENTITIES)?,
            endpoints: open(pin_dir, MAP_POLICY_ENDPOINTS)?,
            rules: open(pin_dir, MAP_POLICY)?,
            cidrs: open(pin_dir, MAP_POLICY_CIDRS)?,
            conntrack: open(pin_dir, MAP_CONNTRACK)?,
            drops: open(pin_dir, MAP_POLICY_DROPS)?,
        })
    }

    /// What the maps hold now (an agent starting after another reads what
    /// its predecessor left, and moves on from there by diff).
    pub fn current(&self) -> Result<Compiled, MapsError> {
        let mut c = Compiled::default();
        for e in self.identities.iter() {
            let (k, v) = e.map_err(access("listing identities", MAP_IDENTITIES))?;
            c.identities.insert(Ipv4Addr::from(k), v.id);
        }
        for e in self.endpoints.iter() {
            let (k, v) = e.map_err(access("listing isolated pods", MAP_POLICY_ENDPOINTS))?;
            c.endpoints.insert(Ipv4Addr::from(k), v.flags);
        }
        for e in self.rules.iter() {
            let (k, _) = e.map_err(access("listing rules", MAP_POLICY))?;
            c.rules.insert((k.prefix_len(), k.data()));
        }
        for e in self.cidrs.iter() {
            let (k, v) = e.map_err(access("listing ipBlocks", MAP_POLICY_CIDRS))?;
            c.cidrs.insert((k.prefix_len(), k.data()), v.id);
        }
        Ok(c)
    }

    /// Moves the maps from `prev` (what they hold) to `next`, touching
    /// only entries that differ. Additions go first (rules before the
    /// identities and regions that point at them) and removals last, and a
    /// pod's isolation is written after its rules, so a packet allowed
    /// before and after is never dropped in between.
    pub fn update(&mut self, prev: &Compiled, next: &Compiled) -> Result<UpdateReport, MapsError> {
        let mut r = UpdateReport::default();
        // Rules first: an identity number is never reused, so rules for a
        // new one allow nothing until an address maps to it.
        for (len, key) in next.rules.difference(&prev.rules) {
            self.rules
                .insert(&Key::new(*len, *key), PolicyRule::default(), 0)
                .map_err(access("writing a rule", MAP_POLICY))?;
            r.written += 1;
        }
        for (ip, id) in &next.identities {
            if prev.identities.get(ip) != Some(id) {
                self.identities
                    .insert(ip.octets(), Identity { id: *id }, 0)
                    .map_err(access("writing an identity", MAP_IDENTITIES))?;
                r.written += 1;
            }
        }
        for ((len, key), id) in &next.cidrs {
            if prev.cidrs.get(&(*len, *key)) != Some(id) {
                self.cidrs
                    .insert(&Key::new(*len, *key), Identity { id: *id }, 0)
                    .map_err(access("writing an ipBlock", MAP_POLICY_CIDRS))?;
                r.written += 1;
            }
        }
        for (ip, flags) in &next.endpoints {
            if prev.endpoints.get(ip) != Some(flags) {
                self.endpoints
                    .insert(ip.octets(), PolicyEndpoint { flags: *flags }, 0)
                    .map_err(access("writing an isolated pod", MAP_POLICY_ENDPOINTS))?;
                r.written += 1;
            }
        }
        for ip in prev
            .endpoints
            .keys()
            .filter(|ip| !next.endpoints.contains_key(ip))
        {
            removed(
                self.endpoints.remove(&ip.octets()),
                "removing an isolated pod",
                MAP_POLICY_ENDPOINTS,
            )?;
            for direction in [overlay_common::DIR_INGRESS, DIR_EGRESS] {
                removed(
                    self.drops.remove(&DropKey {
                        endpoint: ip.octets(),
                        direction,
                        pad: [0; 3],
                    }),
                    "removing drop counters",
                    MAP_POLICY_DROPS,
                )?;
            }
            r.removed += 1;
        }
        for (len, key) in prev.cidrs.keys().filter(|k| !next.cidrs.contains_key(k)) {
            removed(
                self.cidrs.remove(&Key::new(*len, *key)),
                "removing an ipBlock",
                MAP_POLICY_CIDRS,
            )?;
            r.removed += 1;
        }
        for (len, key) in prev.rules.difference(&next.rules) {
            removed(
                self.rules.remove(&Key::new(*len, *key)),
                "removing a rule",
                MAP_POLICY,
            )?;
            r.removed += 1;
        }
        for ip in prev
            .identities
            .keys()
            .filter(|ip| !next.identities.contains_key(ip))
        {
            removed(
                self.identities.remove(&ip.octets()),
                "removing an identity",
                MAP_IDENTITIES,
            )?;
            r.removed += 1;
        }
        Ok(r)
    }

    /// Policy drops per local pod, summed over CPUs.
    pub fn drops(&self) -> Result<BTreeMap<Ipv4Addr, Drops>, MapsError> {
        let mut out: BTreeMap<Ipv4Addr, Drops> = BTreeMap::new();
        for e in self.drops.iter() {
            let (k, per_cpu) = e.map_err(access("reading drop counters", MAP_POLICY_DROPS))?;
            let n: u64 = per_cpu.iter().sum();
            let d = out.entry(Ipv4Addr::from(k.endpoint)).or_default();
            if k.direction == DIR_EGRESS {
                d.egress += n;
            } else {
                d.ingress += n;
            }
        }
        Ok(out)
    }

    /// Tracked connections (entries, expired ones included until evicted).
    pub fn tracked(&self) -> usize {
        self.conntrack.keys().filter(Result::is_ok).count()
    }
}
