//! What can go wrong in the node IPAM.

use std::{io, net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;

/// Failure of an IPAM operation.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Another [`Ipam`](super::Ipam), in this process or another, holds the
    /// store's lock.
    #[error("IPAM store {dir} is locked by another agent")]
    Locked {
        /// The store directory.
        dir: PathBuf,
    },
    /// The node owns no address block yet, so there is nothing to hand out.
    #[error("this node owns no address block yet")]
    NoBlocks,
    /// Every usable address of the node's blocks is allocated.
    #[error("all {capacity} addresses of blocks {} are in use", join(.blocks))]
    Exhausted {
        /// The blocks that were searched.
        blocks: Vec<Ipv4Net>,
        /// How many usable addresses they hold together.
        capacity: u64,
    },
    /// A container id or interface name that cannot identify an allocation.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidId {
        /// `"container id"` or `"interface name"`.
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A filesystem operation on the store failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done, e.g. `"linking allocation file"`.
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// An allocation file that the store itself cannot have written: a crash
    /// never leaves one (see the [module docs](super)), so it was edited by
    /// hand or the disk lost data. The agent stops rather than guess which
    /// pod owns the address.
    #[error("loading allocation file {path}")]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: CorruptError,
    },
}

/// What is wrong with a corrupt allocation file.
#[derive(Debug, thiserror::Error)]
pub enum CorruptError {
    /// The contents are not an allocation record.
    #[error("not an allocation record")]
    Parse(#[source] serde_json::Error),
    /// The file name and the recorded address disagree.
    #[error("the file records address {recorded}")]
    IpMismatch {
        /// The address inside the file.
        recorded: Ipv4Addr,
    },
    /// Two files claim the same container interface.
    #[error("{container_id} {ifname} also holds {other}")]
    DuplicateOwner {
        /// The container id both files name.
        container_id: String,
        /// The interface name both files name.
        ifname: String,
        /// The address of the file loaded first.
        other: Ipv4Addr,
    },
}

fn join(blocks: &[Ipv4Net]) -> String {
    let names: Vec<String> = blocks.iter().map(ToString::to_string).collect();
    names.join(", ")
}
