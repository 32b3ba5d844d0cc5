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

/// Whether this process runs in a mount namespace that its parent does not
/// share, as under `ip netns exec`, which gives each command a private /sys
/// that dies with it. Unknown (no /proc, parent gone or unreadable) counts
/// as shared.
fn in_private_mount_namespace() -> bool {
    let ppid = nix::unistd::getppid().as_raw();
    if ppid <= 1 {
        return false;
    }
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt"));
    match (ns("self"), ns(&ppid.to_string())) {
        (Ok(me), Ok(parent)) => me != parent,
        _ => false,
    }
}

/// Mounts bpffs at `mountpoint` unless it is mounted already.
///
/// Refuses to mount one in a mount namespace private to this process: pins
/// made there would vanish when it exits, silently detaching the datapath.
pub fn ensure_mounted(mountpoint: &Path) -> Result<(), DatapathError> {
    if is_bpffs(mountpoint) {
        return Ok(());
    }
    if in_private_mount_namespace() {
        return Err(DatapathError::PrivateBpffs {
            path: mountpoint.to_owned(),
        });
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
