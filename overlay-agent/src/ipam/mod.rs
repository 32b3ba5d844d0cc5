//! Node IPAM: pod addresses from this node's blocks, persisted crash-safely.
//!
//! An [`Ipam`] hands out addresses of the node's IPv4 blocks to pod
//! interfaces, named by (container id, interface name) as in CNI. The block
//! set can be replaced at runtime ([`Ipam::set_blocks`]); allocations outside
//! the new blocks are kept until released.
//!
//! # Store
//!
//! ```text
//! DIR/lock                  flock'ed by the one Ipam that owns the store
//! DIR/cursor                last allocated address (best-effort)
//! DIR/allocations/<ip>      JSON of the Allocation holding <ip>
//! DIR/**/.tmp-<pid>-<n>     a file being written
//! ```
//!
//! # Why a kill at any instant is harmless
//!
//! - An allocation file comes into being only by `link(temp, final)` of a
//!   temporary file that was written in full and fsynced first, so a final
//!   file is either absent or complete; `link` is atomic and fails with
//!   EEXIST rather than replace, so two owners can never share a name, and
//!   the name is the address. The directory is fsynced before
//!   [`Ipam::allocate`] returns, so an address a caller was given survives
//!   a power cut as well as a kill.
//! - A release is one `unlink` (atomic), fsynced before returning.
//! - A kill between steps leaves at worst a `.tmp-*` file, which the next
//!   open deletes, or an allocation the caller never heard of: the runtime
//!   retries the ADD (same container id and interface, so the same address
//!   comes back) or sends a DEL that releases it. Either way an address is
//!   leaked at worst, never handed out twice.
//! - Only the lock holder writes, so the in-memory index is the store's
//!   content; the kernel drops the lock when its holder dies.
//! - The cursor is replaced by rename of a fsynced temporary file; an old or
//!   missing cursor only changes where the next search starts.

mod blocks;
mod error;
mod id;
mod store;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    path::Path,
};

use ipnet::Ipv4Net;

pub use self::error::{CorruptError, IpamError};
use self::store::Store;

/// One pod interface's address.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Allocation {
    /// The allocated address.
    pub ip: Ipv4Addr,
    /// The CNI container id of the pod sandbox.
    pub container_id: String,
    /// The interface name inside the pod (CNI `IfName`, e.g. `eth0`).
    pub ifname: String,
    /// The pod as `namespace/name`, when the runtime told us.
    #[serde(default)]
    pub pod: Option<String>,
}

/// How full the node's blocks are.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// The current blocks.
    pub blocks: Vec<Ipv4Net>,
    /// Usable addresses in them.
    pub capacity: u64,
    /// Allocated addresses in them.
    pub used: u64,
    /// Allocated addresses outside them (left from a former block set).
    pub outside_blocks: u64,
}

/// The node's address allocator and its persistent store.
///
/// Every method takes effect on disk before it returns. Share one between
/// threads behind a `Mutex`; a second `Ipam` on the same directory is
/// refused with [`IpamError::Locked`].
pub struct Ipam {
    store: Store,
    blocks: Vec<Ipv4Net>,
    by_ip: BTreeMap<Ipv4Addr, Allocation>,
    /// Container id → interface name → address.
    by_owner: HashMap<String, HashMap<String, Ipv4Addr>>,
    /// The last allocated address; the next search starts after it.
    cursor: Option<Ipv4Addr>,
}

impl Ipam {
    /// Opens the store in `dir` (created if missing) and takes its lock for
    /// the lifetime of the returned value, loads every allocation and
    /// deletes temporary files left by a killed writer. Allocations outside
    /// `blocks` are kept.
    pub fn open(dir: &Path, blocks: Vec<Ipv4Net>) -> Result<Self, IpamError> {
        let loaded = Store::open(dir)?;
        let mut ipam = Ipam {
            store: loaded.store,
            blocks: blocks::normalize(blocks),
            by_ip: BTreeMap::new(),
            by_owner: HashMap::new(),
            cursor: loaded.cursor,
        };
        for allocation in loaded.allocations {
            if let Some(other) = ipam.lookup(&allocation.container_id, &allocation.ifname) {
                return Err(IpamError::Corrupt {
                    path: ipam.store.path_of(allocation.ip),
                    source: CorruptError::DuplicateOwner {
                        container_id: allocation.container_id,
                        ifname: allocation.ifname,
                        other,
                    },
                });
            }
            ipam.insert(allocation);
        }
        tracing::info!(
            dir = %dir.display(),
            allocations = ipam.by_ip.len(),
            cursor = ?ipam.cursor,
            "opened IPAM store"
        );
        Ok(ipam)
    }

    /// Replaces the node's blocks. Existing allocations stay, also those
    /// outside the new blocks; new ones come from the new blocks only.
    /// Logged only when they change (the topology is re-applied every
    /// few seconds).
    pub fn set_blocks(&mut self, blocks: Vec<Ipv4Net>) {
        let blocks = blocks::normalize(blocks);
        if blocks != self.blocks {
            self.blocks = blocks;
            tracing::info!(blocks = ?self.blocks, "IPAM blocks replaced");
        }
    }

    /// The current blocks, truncated to their network address, without
    /// repeats or nested blocks.
    pub fn blocks(&self) -> &[Ipv4Net] {
        &self.blocks
    }

    /// Allocates an address to interface `ifname` of container
    /// `container_id`, or returns the one it already has (CNI ADD may be
    /// retried). Addresses are tried round-robin starting after the last one
    /// allocated, so a just-released address is reused last.
    pub fn allocate(
        &mut self,
        container_id: &str,
        ifname: &str,
        pod: Option<&str>,
    ) -> Result<Allocation, IpamError> {
        id::check_container_id(container_id)?;
        id::check_ifname(ifname)?;
        if let Some(ip) = self.lookup(container_id, ifname) {
            return Ok(self.by_ip[&ip].clone());
        }
        if self.blocks.is_empty() {
            return Err(IpamError::NoBlocks);
        }
        let mut created = None;
        for ip in blocks::candidates(&self.blocks, self.cursor) {
            if self.by_ip.contains_key(&ip) {
                continue;
            }
            let allocation = Allocation {
                ip,
                container_id: container_id.to_owned(),
                ifname: ifname.to_owned(),
                pod: pod.map(str::to_owned),
            };
            if self.store.create(&allocation)? {
                created = Some(allocation);
                break;
            }
            // Only we write while holding the lock, so this means a file was
            // put there by hand; leave it alone.
            tracing::warn!(%ip, "skipping an address whose file is not in the index");
        }
        if let Some(allocation) = created {
            let ip = allocation.ip;
            self.cursor = Some(ip);
            if let Err(error) = self.store.save_cursor(ip) {
                tracing::warn!(error = ?error, "could not save the IPAM cursor");
            }
            self.insert(allocation.clone());
            tracing::debug!(%ip, container_id, ifname, "allocated");
            return Ok(allocation);
        }
        Err(IpamError::Exhausted {
            blocks: self.blocks.clone(),
            capacity: blocks::capacity(&self.blocks),
        })
    }

    /// Releases the address of interface `ifname` of container
    /// `container_id` and returns its allocation, or `None` if it had none
    /// (CNI DEL may be repeated).
    pub fn release(
        &mut self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<Allocation>, IpamError> {
        id::check_container_id(container_id)?;
        id::check_ifname(ifname)?;
        let Some(ip) = self.lookup(container_id, ifname) else {
            return Ok(None);
        };
        self.store.unlink(ip)?;
        let allocation = self.remove(ip);
        self.store.sync()?;
        tracing::debug!(%ip, container_id, ifname, "released");
        Ok(allocation)
    }

    /// The allocation of interface `ifname` of container `container_id`.
    pub fn get(&self, container_id: &str, ifname: &str) -> Option<&Allocation> {
        self.lookup(container_id, ifname)
            .and_then(|ip| self.by_ip.get(&ip))
    }

    /// The allocation holding `ip`.
    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<&Allocation> {
        self.by_ip.get(&ip)
    }

    /// Every allocation, by address.
    pub fn allocations(&self) -> impl Iterator<Item = &Allocation> {
        self.by_ip.values()
    }

    /// Free addresses in `candidate` blocks (which need not be the current
    /// ones): what the cluster IPAM asks before claiming more.
    pub fn free_in(&self, candidate: &[Ipv4Net]) -> u64 {
        let candidate = blocks::normalize(candidate.to_vec());
        let used = self
            .by_ip
            .keys()
            .filter(|ip| blocks::is_usable(&candidate, **ip))
            .count() as u64;
        blocks::capacity(&candidate).saturating_sub(used)
    }

    /// How full the current blocks are.
    pub fn usage(&self) -> Usage {
        let used = self
            .by_ip
            .keys()
            .filter(|ip| blocks::is_usable(&self.blocks, **ip))
            .count() as u64;
        Usage {
            blocks: self.blocks.clone(),
            capacity: blocks::capacity(&self.blocks),
            used,
            outside_blocks: self.by_ip.len() as u64 - used,
        }
    }

    fn lookup(&self, container_id: &str, ifname: &str) -> Option<Ipv4Addr> {
        self.by_owner.get(container_id)?.get(ifname).copied()
    }

    fn insert(&mut self, allocation: Allocation) {
        self.by_owner
            .entry(allocation.container_id.clone())
            .or_default()
            .insert(allocation.ifname.clone(), allocation.ip);
        self.by_ip.insert(allocation.ip, allocation);
    }

    fn remove(&mut self, ip: Ipv4Addr) -> Option<Allocation> {
        let allocation = self.by_ip.remove(&ip)?;
        if let Some(interfaces) = self.by_owner.get_mut(&allocation.container_id) {
            interfaces.remove(&allocation.ifname);
            if interfaces.is_empty() {
                self.by_owner.remove(&allocation.container_id);
            }
        }
        Some(allocation)
    }
}
