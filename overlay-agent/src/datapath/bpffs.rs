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

/// Whether this process shares PID 1's mount namespace. Under `ip netns
/// exec` it does not: that command gives each process a private /sys.
fn in_init_mount_namespace() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (
        std::fs::metadata("/proc/self/ns/mnt"),
        std::fs::metadata("/proc/1/ns/mnt"),
    ) {
        (Ok(me), Ok(init)) => me.ino() == init.ino() && me.dev() == init.dev(),
        // Cannot tell (no /proc, or no permission): assume the common case.
        _ => true,
    }
}

/// Mounts bpffs at `mountpoint` unless it is mounted already.
///
/// Refuses when this process has a mount namespace of its own: a bpffs
/// mounted there, and every pin in it, would vanish when the process exits,
/// silently detaching the datapath.
pub fn ensure_mounted(mountpoint: &Path) -> Result<(), DatapathError> {
    if is_bpffs(mountpoint) {
        return Ok(());
    }
    if !in_init_mount_namespace() {
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
