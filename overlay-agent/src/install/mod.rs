//! Putting the CNI plugin on a node and taking the whole overlay off it
//! again:
//!
//! - `overlay-agent install-cni` (the DaemonSet's init container) copies
//!   `overlay-cni` and, where the host has none, the reference plugins
//!   ([`reference`]) into the plugin directory;
//! - the agent writes the conflist ([`conflist`]) once it can serve ADD;
//! - `overlay-agent uninstall` removes it all.
//!
//! Every file is written atomically (a temporary file in the same
//! directory, fsync, rename, fsync of the directory), so a runtime reading
//! the directory never sees half a file, and only when its content
//! changes, so an init container that runs on every pod restart and an
//! agent that restarts leave the node alone.
//!
//! The conflist carries [`MANAGED_KEY`]` = true`, a top-level key that
//! libcni ignores (it reads `name`, `cniVersion`, `disableCheck` and
//! `plugins`, and hands plugins only their own entry), and that tells us the
//! file is ours: a foreign file of the same name is replaced only with a
//! warning and a backup, and uninstall removes the file only when it is ours.
//!
//! Uninstall leaves the node as before the agent ran, and is meant for good:
//! never on an agent restart or rolling update, which must keep the pinned
//! datapath so pods keep their traffic.

pub mod conflist;
pub mod reference;

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

pub use conflist::{
    ConflistOptions, ConflistReport, Portmap, conflist, install_conflist, is_ours,
    shadowing_configs,
};
pub use reference::{
    DEFAULT_REFERENCE_DIR, REFERENCE_PLUGINS, ReferenceAction, install_reference_plugins,
    reference_action,
};
use tracing::{info, warn};

use self::conflist::backup_path;
use crate::{
    agent::{HOST_IF_PREFIX, is_host_ifname},
    cni::{PLUGIN_TYPE, Version},
    datapath::{self, DatapathError},
    masquerade::{self, MasqueradeError},
    netlink::{self, NetlinkError},
    paths,
};

/// Network name in the conflist.
pub const NETWORK_NAME: &str = "overlay";

/// Top-level conflist key marking the file as written by us.
pub const MANAGED_KEY: &str = "x-overlay-managed";

/// Suffix of the copy of a foreign conflist we replaced; uninstall puts it
/// back. libcni only loads `.conf`, `.conflist` and `.json`, so the copy is
/// inert.
pub const BACKUP_SUFFIX: &str = ".overlay-backup";

/// The CNI specification version the conflist asks for: 1.0.0 is the
/// newest that libcni 1.1 (containerd 1.6 and 1.7) accepts; the plugin also
/// speaks the others of [`Version::ALL`].
pub const DEFAULT_CNI_VERSION: Version = Version::V1_0_0;

/// File extensions libcni loads from the configuration directory.
const CONF_EXTENSIONS: &[&str] = &["conf", "conflist", "json"];

/// What failed while installing or uninstalling.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file or directory operation failed.
    #[error("{op} {path}")]
    Fs {
        /// What was being done.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The plugin binary to install is not there.
    #[error(
        "the plugin binary {path} does not exist (pass --plugin or OVERLAY_CNI_PLUGIN, or put \
         overlay-cni next to overlay-agent)"
    )]
    PluginMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// An agent answers on the socket, so uninstalling would pull the
    /// datapath from under it.
    #[error(
        "an overlay agent is running (it answers on {socket}): stop it first (delete the \
         overlay DaemonSet, or stop the service), or pass --force"
    )]
    AgentRunning {
        /// The socket it answers on.
        socket: PathBuf,
    },
    /// A directory uninstall would remove whole is one that holds more
    /// than ours (`/`, a top-level directory, the bpffs root).
    #[error("refusing to remove {path}: {why}; pass our own directory")]
    NotOurs {
        /// The directory.
        path: PathBuf,
        /// Why it is refused.
        why: &'static str,
    },
    /// Removing the pinned datapath failed.
    #[error("removing the pinned datapath")]
    Datapath(#[source] DatapathError),
    /// Listing or deleting pod veths failed.
    #[error("deleting the pods' host veths")]
    Netlink(#[source] NetlinkError),
    /// The WireGuard device could not be stopped or deleted.
    #[error("removing the WireGuard device")]
    Encryption(#[source] crate::encryption::agent::EncryptionError),
    /// Removing the masquerade table failed.
    #[error("removing the nftables table ip {}", masquerade::TABLE)]
    Masquerade(#[source] MasqueradeError),
}

fn fs_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> InstallError + 'a {
    move |source| InstallError::Fs {
        op,
        path: path.to_owned(),
        source,
    }
}

/// What `install-cni` installs, and where.
#[derive(Clone, Debug)]
pub struct CniInstall {
    /// Directory of plugin binaries (`/opt/cni/bin`).
    pub bin_dir: PathBuf,
    /// The `overlay-cni` binary to copy.
    pub plugin: PathBuf,
    /// Where the reference plugins we ship are (`/usr/lib/cni` in the
    /// image).
    pub reference_dir: PathBuf,
}

/// What happened to one installed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileChange {
    /// It was already there with this content: nothing written.
    Unchanged,
    /// It did not exist.
    Created,
    /// Ours, with other content: rewritten.
    Updated,
    /// Someone else's: moved to the backup path, ours written.
    ReplacedForeign {
        /// Where the previous file is now.
        backup: PathBuf,
    },
}

/// What `install-cni` did.
#[derive(Clone, Debug)]
pub struct InstallReport {
    /// The installed plugin binary.
    pub plugin_path: PathBuf,
    /// What happened to it.
    pub plugin: FileChange,
    /// What was decided for each reference plugin.
    pub reference: Vec<(&'static str, ReferenceAction)>,
}

/// Installs the plugin binary, and the reference plugins the host lacks.
/// Idempotent. The conflist is the agent's to write, once it is ready
/// ([`install_conflist`]).
pub fn install_cni(opts: &CniInstall) -> Result<InstallReport, InstallError> {
    let plugin = fs::read(&opts.plugin).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            InstallError::PluginMissing {
                path: opts.plugin.clone(),
            }
        } else {
            InstallError::Fs {
                op: "reading the plugin binary",
                path: opts.plugin.clone(),
                source,
            }
        }
    })?;
    fs::create_dir_all(&opts.bin_dir).map_err(fs_err("creating", &opts.bin_dir))?;

    let plugin_path = opts.bin_dir.join(PLUGIN_TYPE);
    let plugin_change = match fs::read(&plugin_path) {
        Ok(old) if old == plugin => FileChange::Unchanged,
        Ok(_) => FileChange::Updated,
        Err(e) if e.kind() == io::ErrorKind::NotFound => FileChange::Created,
        Err(e) => return Err(fs_err("reading", &plugin_path)(e)),
    };
    match plugin_change {
        FileChange::Unchanged => info!(path = %plugin_path.display(), "plugin binary unchanged"),
        _ => {
            write_atomic(&plugin_path, &plugin, 0o755)?;
            info!(path = %plugin_path.display(), from = %opts.plugin.display(),
                change = ?plugin_change, "installed the plugin binary");
        }
    }
    let reference = install_reference_plugins(&opts.bin_dir, &opts.reference_dir)?;
    Ok(InstallReport {
        plugin_path,
        plugin: plugin_change,
        reference,
    })
}

/// Writes `content` to `path` atomically: a temporary file in the same
/// directory, fsync, rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<(), InstallError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(fs_err("creating", &tmp))?;
        f.write_all(content).map_err(fs_err("writing", &tmp))?;
        // The umask may have narrowed `mode`.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(fs_err("setting the mode of", &tmp))?;
        f.sync_all().map_err(fs_err("syncing", &tmp))?;
        fs::rename(&tmp, path).map_err(fs_err("renaming into place", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fs_err("syncing", dir))
}

/// What `uninstall` removes, and where.
#[derive(Clone, Debug)]
pub struct Uninstall {
    /// bpffs directory of the pinned maps and links.
    pub pin_dir: PathBuf,
    /// Directory of plugin binaries.
    pub bin_dir: PathBuf,
    /// Directory of network configurations.
    pub conf_dir: PathBuf,
    /// The agent's state directory.
    pub state_dir: PathBuf,
    /// The agent socket.
    pub socket: PathBuf,
    /// Uninstall even when an agent answers on the socket.
    pub force: bool,
}

/// Whether an agent answers on `socket`: something accepts connections
/// there (a stale socket file of a dead agent refuses them).
pub fn agent_running(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// Removes everything the overlay put on this node, in the caller's
/// network namespace: first the conflist (so the runtime stops calling the
/// plugin) and the plugin, then the datapath (the GRO tunnel device, pinned
/// links, which detaches the programs, and maps), the pods' host veths and the masquerade table,
/// last the state directory and the socket. Returns one line per thing
/// removed; empty when there was nothing left (a second run). Refuses while
/// an agent runs, unless `force`.
pub fn uninstall(opts: &Uninstall) -> Result<Vec<String>, InstallError> {
    if !opts.force && agent_running(&opts.socket) {
        return Err(InstallError::AgentRunning {
            socket: opts.socket.clone(),
        });
    }
    for dir in [&opts.pin_dir, &opts.state_dir] {
        check_removable(dir)?;
    }
    let mut done = remove_cni_files(opts)?;
    done.extend(remove_datapath(opts)?);
    done.extend(remove_agent_files(opts)?);
    Ok(done)
}

/// Refuses to remove whole a directory that cannot be only ours: a
/// relative path, `/` or a top-level directory, or the bpffs mount itself
/// (which holds every program's pins).
fn check_removable(dir: &Path) -> Result<(), InstallError> {
    let refuse = |why| {
        Err(InstallError::NotOurs {
            path: dir.to_owned(),
            why,
        })
    };
    if !dir.is_absolute() {
        return refuse("not an absolute path");
    }
    let depth = dir
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count();
    if depth < 2
        || dir
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return refuse("it is / or a top-level directory");
    }
    if dir == Path::new(crate::paths::BPFFS) {
        return refuse("it is the bpffs mount, which holds every program's pins");
    }
    Ok(())
}

/// The conflist when it is ours (putting back the one we replaced) and the
/// plugin binary.
fn remove_cni_files(opts: &Uninstall) -> Result<Vec<String>, InstallError> {
    let mut done = Vec::new();
    let conflist_path = opts.conf_dir.join(paths::CONFLIST_NAME);
    match fs::read(&conflist_path) {
        Ok(content) if is_ours(&content) => {
            remove_file(&conflist_path)?;
            done.push(format!("removed {}", conflist_path.display()));
        }
        Ok(_) => warn!(
            file = %conflist_path.display(),
            "{} was not written by overlay-agent: kept",
            conflist_path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fs_err("reading", &conflist_path)(e)),
    }
    let backup = backup_path(&conflist_path);
    if backup.exists() && !conflist_path.exists() {
        fs::rename(&backup, &conflist_path).map_err(fs_err("restoring", &backup))?;
        done.push(format!(
            "restored {} from {}",
            conflist_path.display(),
            backup.display()
        ));
    }
    let plugin = opts.bin_dir.join(PLUGIN_TYPE);
    if remove_file(&plugin)? {
        done.push(format!("removed {}", plugin.display()));
    }
    Ok(done)
}

/// The GRO tunnel device, the WireGuard device (its process and
/// interface), the pinned links (detaching the programs) and maps, the
/// pods' host veths and the masquerade table of the caller's network
/// namespace.
fn remove_datapath(opts: &Uninstall) -> Result<Vec<String>, InstallError> {
    let mut done = Vec::new();
    let wg = crate::encryption::agent::Files::under(&opts.state_dir);
    if wg.status.exists() || crate::link::ifindex(crate::encryption::DEVICE).is_ok() {
        crate::encryption::agent::stop_device(&wg.status).map_err(InstallError::Encryption)?;
        done.push(format!(
            "stopped the WireGuard device and deleted {}",
            crate::encryption::DEVICE
        ));
    }
    // First, so the kernel never decapsulates our port itself once
    // `from_uplink` is gone.
    if netlink::delete_gro_device().map_err(InstallError::Netlink)? {
        done.push(format!(
            "deleted the GRO tunnel device {}",
            netlink::GRO_DEVICE
        ));
    }
    if opts.pin_dir.exists() {
        for (prog, iface) in datapath::attachments(&opts.pin_dir) {
            done.push(format!("detached {prog} from {iface}"));
        }
        let pins = count_files(&opts.pin_dir);
        datapath::uninstall(&opts.pin_dir).map_err(InstallError::Datapath)?;
        done.push(format!(
            "removed {} ({pins} pinned maps and links)",
            opts.pin_dir.display()
        ));
    }
    let veths = netlink::host_links_with_prefix(HOST_IF_PREFIX).map_err(InstallError::Netlink)?;
    for veth in veths.iter().filter(|n| is_host_ifname(n)) {
        if netlink::delete_pod_link(veth).map_err(InstallError::Netlink)? {
            done.push(format!("deleted pod veth {veth}"));
        }
    }
    match nft_table_exists() {
        Some(true) => {
            masquerade::remove().map_err(InstallError::Masquerade)?;
            done.push(format!("deleted nftables table ip {}", masquerade::TABLE));
        }
        Some(false) => {}
        None => warn!(
            "nft cannot be run: not checking for the nftables table ip {} (an agent without nft \
             cannot have made it either)",
            masquerade::TABLE
        ),
    }
    Ok(done)
}

/// The state directory, the socket, and the socket's directory when
/// nothing else is in it (a mount point, e.g. a hostPath volume, stays).
fn remove_agent_files(opts: &Uninstall) -> Result<Vec<String>, InstallError> {
    let mut done = Vec::new();
    if opts.state_dir.exists() {
        fs::remove_dir_all(&opts.state_dir).map_err(fs_err("removing", &opts.state_dir))?;
        done.push(format!("removed {}", opts.state_dir.display()));
    }
    if remove_file(&opts.socket)? {
        done.push(format!("removed {}", opts.socket.display()));
    }
    if let Some(dir) = opts.socket.parent()
        && fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
        && fs::remove_dir(dir).is_ok()
    {
        done.push(format!("removed {}", dir.display()));
    }
    Ok(done)
}

/// Removes a file; `false` when it was not there.
fn remove_file(path: &Path) -> Result<bool, InstallError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(fs_err("removing", path)(e)),
    }
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    count_files(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

/// Whether our nftables table exists in this network namespace; `None`
/// when `nft` cannot be run.
fn nft_table_exists() -> Option<bool> {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "ip", masquerade::TABLE])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    Some(out.status.success())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// A node's CNI directories, a plugin to install and agent files, all
    /// under one temporary directory.
    struct Node {
        tmp: tempfile::TempDir,
        opts: CniInstall,
        conf: ConflistOptions,
    }

    impl Node {
        fn new() -> Self {
            let tmp = tempfile::tempdir().expect("temp dir");
            let plugin = tmp.path().join("image/overlay-cni");
            fs::create_dir_all(plugin.parent().unwrap()).unwrap();
            fs::write(&plugin, b"\x7fELF plugin v1").unwrap();
            let opts = CniInstall {
                bin_dir: tmp.path().join("opt/cni/bin"),
                plugin,
                // Nothing shipped: the reference plugins have their own
                // tests.
                reference_dir: tmp.path().join("image/usr/lib/cni"),
            };
            let conf = ConflistOptions {
                conf_dir: tmp.path().join("etc/cni/net.d"),
                bin_dir: opts.bin_dir.clone(),
                socket: tmp.path().join("run/overlay/agent.sock"),
                cni_version: DEFAULT_CNI_VERSION,
                portmap: Portmap::Auto,
            };
            Self { tmp, opts, conf }
        }

        /// What install-cni and then the ready agent write.
        fn install(&self) -> (InstallReport, ConflistReport) {
            let r = install_cni(&self.opts).unwrap();
            (r, install_conflist(&self.conf).unwrap())
        }

        fn conflist(&self) -> PathBuf {
            self.conf.conf_dir.join(paths::CONFLIST_NAME)
        }

        fn plugin(&self) -> PathBuf {
            self.opts.bin_dir.join(PLUGIN_TYPE)
        }

        fn uninstall(&self) -> Uninstall {
            Uninstall {
                pin_dir: self.tmp.path().join("bpf/overlay"),
                bin_dir: self.opts.bin_dir.clone(),
                conf_dir: self.conf.conf_dir.clone(),
                state_dir: self.tmp.path().join("var/lib/overlay"),
                socket: self.conf.socket.clone(),
                force: false,
            }
        }

        /// The filesystem steps of [`uninstall`] (the datapath steps act
        /// on this machine's network namespace and are tested end to end).
        fn uninstall_files(&self) -> Vec<String> {
            let u = self.uninstall();
            let mut done = remove_cni_files(&u).unwrap();
            done.extend(remove_agent_files(&u).unwrap());
            done
        }
    }

    fn mtime(p: &Path) -> std::time::SystemTime {
        fs::metadata(p).unwrap().modified().unwrap()
    }

    #[test]
    fn install_creates_both_files_and_the_plugin_parses_what_libcni_hands_it() {
        let n = Node::new();
        let (r, c) = n.install();
        assert_eq!(
            (&r.plugin, &c.change),
            (&FileChange::Created, &FileChange::Created)
        );
        assert!(c.shadowing.is_empty());
        assert_eq!(fs::read(n.plugin()).unwrap(), b"\x7fELF plugin v1");
        let mode = fs::metadata(n.plugin()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let text = fs::read_to_string(n.conflist()).unwrap();
        assert!(is_ours(text.as_bytes()), "{text}");
        // libcni gives each plugin its own entry plus the list's name and
        // cniVersion; the marker stays behind, but the plugin would accept
        // it too.
        let list: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(list["plugins"].as_array().unwrap().len(), 1, "{text}");
        let mut entry = list["plugins"][0].clone();
        entry["name"] = list["name"].clone();
        entry["cniVersion"] = list["cniVersion"].clone();
        let conf = crate::cni::config::parse(entry.to_string().as_bytes()).unwrap();
        assert_eq!(conf.agent_socket.as_deref(), Some(n.conf.socket.as_path()));
        entry[MANAGED_KEY] = Value::Bool(true);
        crate::cni::config::parse(entry.to_string().as_bytes()).unwrap();
        // No temporary file is left behind.
        for dir in [&n.opts.bin_dir, &n.conf.conf_dir] {
            let names: Vec<_> = fs::read_dir(dir).unwrap().flatten().collect();
            assert_eq!(names.len(), 1, "{names:?}");
        }
    }

    #[test]
    fn a_second_install_writes_nothing_and_changed_content_is_rewritten() {
        let n = Node::new();
        n.install();
        let (t_bin, t_conf) = (mtime(&n.plugin()), mtime(&n.conflist()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (r, c) = n.install();
        assert_eq!(
            (r.plugin, c.change),
            (FileChange::Unchanged, FileChange::Unchanged)
        );
        assert_eq!((mtime(&n.plugin()), mtime(&n.conflist())), (t_bin, t_conf));

        fs::write(&n.opts.plugin, b"\x7fELF plugin v2").unwrap();
        let mut conf = n.conf.clone();
        conf.socket = PathBuf::from("/run/other/agent.sock");
        let r = install_cni(&n.opts).unwrap();
        let c = install_conflist(&conf).unwrap();
        assert_eq!(
            (r.plugin, c.change),
            (FileChange::Updated, FileChange::Updated)
        );
        assert_eq!(fs::read(n.plugin()).unwrap(), b"\x7fELF plugin v2");
        let text = fs::read_to_string(n.conflist()).unwrap();
        assert!(text.contains("/run/other/agent.sock"), "{text}");
        assert!(
            !backup_path(&n.conflist()).exists(),
            "our own file is not backed up"
        );
    }

    #[test]
    fn a_foreign_conflist_is_backed_up_and_uninstall_puts_it_back() {
        let n = Node::new();
        fs::create_dir_all(&n.conf.conf_dir).unwrap();
        let foreign = r#"{"cniVersion":"1.0.0","name":"weave","plugins":[{"type":"weave-net"}]}"#;
        fs::write(n.conflist(), foreign).unwrap();
        let backup = backup_path(&n.conflist());
        let (_, c) = n.install();
        assert_eq!(
            c.change,
            FileChange::ReplacedForeign {
                backup: backup.clone()
            }
        );
        assert_eq!(fs::read_to_string(&backup).unwrap(), foreign);
        assert!(is_ours(&fs::read(n.conflist()).unwrap()));
        assert_eq!(
            install_conflist(&n.conf).unwrap().change,
            FileChange::Unchanged
        );

        let done = n.uninstall_files();
        assert_eq!(
            fs::read_to_string(n.conflist()).unwrap(),
            foreign,
            "{done:?}"
        );
        assert!(!backup.exists());
        assert!(!n.plugin().exists());
        assert!(done.iter().any(|l| l.starts_with("restored")), "{done:?}");
        assert_eq!(n.uninstall_files(), Vec::<String>::new(), "second run");
        assert_eq!(fs::read_to_string(n.conflist()).unwrap(), foreign, "kept");
    }

    #[test]
    fn a_second_foreign_file_does_not_overwrite_the_first_backup() {
        let n = Node::new();
        fs::create_dir_all(&n.conf.conf_dir).unwrap();
        fs::write(n.conflist(), "original").unwrap();
        n.install();
        fs::write(n.conflist(), "second").unwrap();
        let (_, c) = n.install();
        let second = PathBuf::from(format!("{}.1", backup_path(&n.conflist()).display()));
        assert_eq!(
            c.change,
            FileChange::ReplacedForeign {
                backup: second.clone()
            }
        );
        assert_eq!(
            fs::read_to_string(backup_path(&n.conflist())).unwrap(),
            "original"
        );
        assert_eq!(fs::read_to_string(second).unwrap(), "second");
    }

    #[test]
    fn uninstall_removes_our_files_state_and_socket_and_then_has_nothing_to_do() {
        let n = Node::new();
        n.install();
        let u = n.uninstall();
        fs::create_dir_all(u.state_dir.join("ipam/allocations")).unwrap();
        fs::write(u.state_dir.join("blocks.json"), "[]").unwrap();
        fs::create_dir_all(u.socket.parent().unwrap()).unwrap();
        // A socket file left by an agent that was killed.
        drop(std::os::unix::net::UnixListener::bind(&u.socket).unwrap());
        let done = n.uninstall_files();
        for gone in [
            n.conflist(),
            n.plugin(),
            u.state_dir.clone(),
            u.socket.clone(),
        ] {
            assert!(!gone.exists(), "{} left; did {done:?}", gone.display());
            assert!(
                done.iter()
                    .any(|l| l.ends_with(&*gone.display().to_string())),
                "{} not reported: {done:?}",
                gone.display()
            );
        }
        assert!(
            !u.socket.parent().unwrap().exists(),
            "empty socket dir left"
        );
        assert!(
            n.conf.conf_dir.is_dir() && n.opts.bin_dir.is_dir(),
            "shared dirs stay"
        );
        assert_eq!(n.uninstall_files(), Vec::<String>::new());
    }

    #[test]
    fn uninstall_keeps_a_conflist_that_is_not_ours_and_a_busy_socket_dir() {
        let n = Node::new();
        fs::create_dir_all(&n.conf.conf_dir).unwrap();
        fs::write(n.conflist(), r#"{"name":"other"}"#).unwrap();
        let u = n.uninstall();
        fs::create_dir_all(u.socket.parent().unwrap()).unwrap();
        fs::write(u.socket.parent().unwrap().join("other"), "").unwrap();
        assert_eq!(n.uninstall_files(), Vec::<String>::new());
        assert!(n.conflist().exists());
        assert!(u.socket.parent().unwrap().exists());
    }

    #[test]
    fn uninstall_is_refused_while_an_agent_answers_unless_forced() {
        let n = Node::new();
        let u = n.uninstall();
        fs::create_dir_all(u.socket.parent().unwrap()).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&u.socket).unwrap();
        let e = uninstall(&u).unwrap_err();
        assert!(matches!(e, InstallError::AgentRunning { .. }), "{e:?}");
        assert!(
            e.to_string().contains(&*u.socket.display().to_string()),
            "{e}"
        );
        drop(listener);
        assert!(u.socket.exists(), "the file stays behind, as after a crash");
        assert!(!agent_running(&u.socket), "a stale socket is no agent");
    }

    #[test]
    fn uninstall_refuses_directories_that_hold_more_than_ours() {
        for (pin, state) in [
            ("/sys/fs/bpf", "/var/lib/overlay"),
            ("/sys/fs/bpf/overlay", "/"),
            ("/sys/fs/bpf/overlay", "/var"),
            ("/sys/fs/bpf/overlay", "var/lib/overlay"),
            ("/sys/fs/bpf/overlay", "/var/lib/.."),
        ] {
            let u = Uninstall {
                pin_dir: pin.into(),
                bin_dir: "/nonexistent/bin".into(),
                conf_dir: "/nonexistent/conf".into(),
                state_dir: state.into(),
                socket: "/nonexistent/agent.sock".into(),
                force: true,
            };
            let e = uninstall(&u).expect_err(&format!("{pin} {state}"));
            assert!(matches!(e, InstallError::NotOurs { .. }), "{e:?}");
        }
        check_removable(Path::new("/var/lib/overlay")).unwrap();
        check_removable(Path::new("/sys/fs/bpf/overlay")).unwrap();
    }

    #[test]
    fn configurations_sorting_before_ours_are_reported_and_kept() {
        let n = Node::new();
        let dir = &n.conf.conf_dir;
        fs::create_dir_all(dir).unwrap();
        for name in [
            "05-cilium.conf",
            "00-x.json",
            "99-late.conflist",
            "01-notes.txt",
        ] {
            fs::write(dir.join(name), "{}").unwrap();
        }
        let (_, c) = n.install();
        assert_eq!(
            c.shadowing,
            vec![dir.join("00-x.json"), dir.join("05-cilium.conf")]
        );
        assert!(dir.join("05-cilium.conf").exists());
    }

    #[test]
    fn portmap_is_chained_when_asked_or_when_present_and_left_out_otherwise() {
        let mut n = Node::new();
        let plugins = |n: &Node| -> Vec<Value> {
            let v: Value = serde_json::from_slice(&fs::read(n.conflist()).unwrap()).unwrap();
            v["plugins"].as_array().unwrap().clone()
        };
        let (_, c) = n.install();
        assert_eq!(plugins(&n).len(), 1, "auto, no portmap binary");
        assert!(!c.portmap);
        // install-cni puts the shipped one there when the host has none.
        fs::create_dir_all(&n.opts.reference_dir).unwrap();
        fs::write(n.opts.reference_dir.join("portmap"), b"x").unwrap();
        let (r, c) = n.install();
        assert!(
            r.reference
                .iter()
                .any(|(p, a)| *p == "portmap" && matches!(a, ReferenceAction::Install { .. })),
            "{:?}",
            r.reference
        );
        assert!(c.portmap);
        assert_eq!(plugins(&n)[1]["type"], "portmap", "auto, portmap present");
        n.conf.portmap = Portmap::Off;
        n.install();
        assert_eq!(plugins(&n).len(), 1, "off");
    }

    #[test]
    fn errors_name_the_path_and_the_cause() {
        let mut n = Node::new();
        n.opts.plugin = PathBuf::from("/nonexistent/overlay-cni");
        let e = install_cni(&n.opts).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/overlay-cni"), "{e}");

        // A file where the configuration directory should be.
        let mut n = Node::new();
        n.conf.conf_dir = n.opts.plugin.join("net.d");
        let e = install_conflist(&n.conf).unwrap_err();
        let chain = crate::cni::error::chain(&e);
        assert!(
            chain.contains(&*n.conf.conf_dir.display().to_string()),
            "{chain}"
        );
        assert!(chain.contains("Not a directory"), "{chain}");
    }
}
