//! Making sure bpffs is there before pinning into it, and (for the
//! DaemonSet's `mount-bpffs` init container) that it is a shared mount.

use std::path::{Path, PathBuf};

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

/// Why bpffs could not be made ready for the agent container.
#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    /// The mount namespace to act in could not be entered.
    #[error("entering the mount namespace {path} (needs CAP_SYS_ADMIN, and hostPID for /proc/1)")]
    EnterNamespace {
        /// The namespace file.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The namespace file could not be opened.
    #[error("opening the mount namespace {path}")]
    OpenNamespace {
        /// The namespace file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `/proc/self/mountinfo` could not be read.
    #[error("reading /proc/self/mountinfo")]
    MountInfo(#[source] std::io::Error),
    /// The mount point could not be created.
    #[error("creating the mount point {path}")]
    MountPoint {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// mount(2) of bpffs failed.
    #[error("mounting bpffs at {path} (needs CAP_SYS_ADMIN: a privileged container)")]
    Mount {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// Another file system is mounted where bpffs belongs.
    #[error("{path} is a {fstype} mount, not bpffs: unmount it first")]
    Occupied {
        /// Where.
        path: PathBuf,
        /// What is mounted there.
        fstype: String,
    },
    /// `mount --make-shared` failed.
    #[error("making the bpffs mount at {path} shared")]
    MakeShared {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The mount is still not what it should be after mounting.
    #[error("{path} is still not a shared bpffs mount after mounting (mountinfo: {line})")]
    NotShared {
        /// Where.
        path: PathBuf,
        /// Its mountinfo line, or `none`.
        line: String,
    },
}

/// What [`ensure_shared`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpffsSetup {
    /// The mount point.
    pub path: PathBuf,
    /// Whether bpffs was mounted (it was not there).
    pub mounted: bool,
    /// Whether the mount was made shared (it was private or a slave).
    pub made_shared: bool,
}

impl std::fmt::Display for BpffsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.path.display();
        match (self.mounted, self.made_shared) {
            (false, false) => write!(f, "bpffs at {p} is mounted and shared: nothing to do"),
            (true, true) => write!(f, "mounted bpffs at {p} and made it shared"),
            (true, false) => write!(f, "mounted bpffs at {p} (shared)"),
            (false, true) => write!(f, "bpffs at {p} was mounted but not shared: made it shared"),
        }
    }
}

/// One line of `/proc/self/mountinfo`, the fields we need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount point (octal escapes decoded).
    pub mount_point: PathBuf,
    /// File system type.
    pub fstype: String,
    /// Whether it is in a peer group (`shared:N`).
    pub shared: bool,
    /// The whole line.
    pub line: String,
}

/// Parses one mountinfo line (`proc(5)`): `ID PARENT MAJ:MIN ROOT
/// MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS`.
pub fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let mount_point = unescape_octal(fields.get(4)?);
    let shared = fields.iter().skip(6).any(|f| f.starts_with("shared:"));
    let fstype = after.split(' ').next()?.to_owned();
    Some(MountEntry {
        mount_point: PathBuf::from(mount_point),
        fstype,
        shared,
        line: line.to_owned(),
    })
}

/// mountinfo writes space, tab, newline and backslash as `\NNN` octal.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount on top at exactly `path` in this process's mount namespace
/// (the last of several stacked there), if any.
pub fn mount_at(path: &Path) -> Result<Option<MountEntry>, BpffsError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(BpffsError::MountInfo)?;
    Ok(text
        .lines()
        .rev()
        .filter_map(parse_mountinfo_line)
        .find(|e| e.mount_point == path))
}

/// Makes sure bpffs is mounted at `path` and the mount is shared, in the
/// mount namespace `mount_ns` (entered first; the caller must be
/// single-threaded) or this process's own. Idempotent.
///
/// Why shared: a container mount with Bidirectional propagation (the
/// agent's, so that its pins are the host's and outlive it) is refused by
/// the runtime unless the host path's mount is shared. systemd makes every
/// mount shared at boot; other init systems leave them private, and some
/// do not mount bpffs at all.
pub fn ensure_shared(path: &Path, mount_ns: Option<&Path>) -> Result<BpffsSetup, BpffsError> {
    if let Some(ns) = mount_ns {
        let file = std::fs::File::open(ns).map_err(|source| BpffsError::OpenNamespace {
            path: ns.to_owned(),
            source,
        })?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNS).map_err(|source| {
            BpffsError::EnterNamespace {
                path: ns.to_owned(),
                source,
            }
        })?;
    }
    let mut done = BpffsSetup {
        path: path.to_owned(),
        mounted: false,
        made_shared: false,
    };
    match mount_at(path)? {
        Some(e) if e.fstype == "bpf" => {}
        Some(e) => {
            return Err(BpffsError::Occupied {
                path: path.to_owned(),
                fstype: e.fstype,
            });
        }
        None => {
            std::fs::create_dir_all(path).map_err(|source| BpffsError::MountPoint {
                path: path.to_owned(),
                source,
            })?;
            mount(
                Some("bpf"),
                path,
                Some("bpf"),
                MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|source| BpffsError::Mount {
                path: path.to_owned(),
                source,
            })?;
            done.mounted = true;
        }
    }
    let entry = mount_at(path)?;
    if entry
        .as_ref()
        .is_some_and(|e| e.fstype == "bpf" && !e.shared)
    {
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .map_err(|source| BpffsError::MakeShared {
            path: path.to_owned(),
            source,
        })?;
        done.made_shared = true;
    }
    match mount_at(path)? {
        Some(e) if e.fstype == "bpf" && e.shared => Ok(done),
        other => Err(BpffsError::NotShared {
            path: path.to_owned(),
            line: other.map_or_else(|| "none".to_owned(), |e| e.line),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_the_mount_point_type_and_propagation() {
        let shared = "40 25 0:35 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:15 - bpf bpf \
                      rw,mode=700";
        let e = parse_mountinfo_line(shared).unwrap();
        assert_eq!(e.mount_point, PathBuf::from("/sys/fs/bpf"));
        assert_eq!(e.fstype, "bpf");
        assert!(e.shared);
        let private = "41 25 0:35 / /tmp/a\\040b rw,relatime - bpf bpf rw";
        let e = parse_mountinfo_line(private).unwrap();
        assert_eq!(e.mount_point, PathBuf::from("/tmp/a b"));
        assert!(!e.shared);
        let slave = "42 25 0:36 / /x rw master:3 - tmpfs tmpfs rw";
        let e = parse_mountinfo_line(slave).unwrap();
        assert!(!e.shared);
        assert_eq!(e.fstype, "tmpfs");
        assert_eq!(parse_mountinfo_line("garbage"), None);
    }
}
