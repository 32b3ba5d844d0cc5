//! Making sure bpffs is there before pinning into it.

use std::path::Path;

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use super::DatapathError;

/// Whether `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Mounts bpffs at `mountpoint` unless it is mounted already.
pub fn ensure_mounted(mountpoint: &Path) -> Result<(), DatapathError> {
    if is_bpffs(mountpoint) {
        return Ok(());
    }
    mount(
        Some("bpf"),
        mountpoint,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|source| DatapathError::MountBpffs {
        path: mountpoint.to_owned(),
        source,
    })
}
