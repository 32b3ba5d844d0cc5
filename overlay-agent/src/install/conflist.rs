//! The node's network configuration, `10-overlay.conflist`: what it holds
//! and how it is written (atomically, only on change, a foreign file of the
//! same name kept as a backup).
//!
//! The agent writes it once it can serve ADD (see
//! `agent::cni_config`): a runtime reports the node NotReady while no
//! network configuration exists, so no pod is scheduled on a node whose
//! agent has no settled address block yet. It is never removed on an agent
//! stop or restart (existing pods and the pinned datapath stay); only
//! `uninstall` removes it.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use serde_json::{Value, json};
use tracing::{info, warn};

use super::{
    BACKUP_SUFFIX, CONF_EXTENSIONS, FileChange, InstallError, MANAGED_KEY, NETWORK_NAME, fs_err,
    write_atomic,
};
use crate::{
    cni::{PLUGIN_TYPE, Version},
    paths,
};

/// Whether libcni chains the `portmap` plugin after ours (hostPort support).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Portmap {
    /// When `portmap` is in the plugin directory (`install-cni` puts the
    /// image's there when the host has none); left out with a warning
    /// otherwise.
    Auto,
    /// Always (pods fail to start if `portmap` is missing).
    On,
    /// Never: hostPort does not work.
    Off,
}

/// What the conflist says, and where it goes.
#[derive(Clone, Debug)]
pub struct ConflistOptions {
    /// Directory of network configurations (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// Directory of plugin binaries (`/opt/cni/bin`), looked at for the
    /// chained plugins.
    pub bin_dir: PathBuf,
    /// The agent socket, as the plugin (on the host) sees it.
    pub socket: PathBuf,
    /// `cniVersion` of the conflist.
    pub cni_version: Version,
    /// Whether to chain `portmap`.
    pub portmap: Portmap,
}

/// What writing the conflist did.
#[derive(Clone, Debug)]
pub struct ConflistReport {
    /// The conflist.
    pub path: PathBuf,
    /// What happened to it.
    pub change: FileChange,
    /// Whether `portmap` is chained.
    pub portmap: bool,
    /// Other configurations that sort before ours, which a runtime would
    /// use instead.
    pub shadowing: Vec<PathBuf>,
}

/// The conflist for `opts`, given whether `portmap` is to be chained.
pub fn conflist(opts: &ConflistOptions, portmap: bool) -> String {
    let mut plugins = vec![json!({
        "type": PLUGIN_TYPE,
        "agentSocket": opts.socket,
    })];
    if portmap {
        plugins.push(json!({
            "type": "portmap",
            "capabilities": {"portMappings": true},
            "snat": true,
        }));
    }
    let v = json!({
        "cniVersion": opts.cni_version.as_str(),
        "name": NETWORK_NAME,
        MANAGED_KEY: true,
        "plugins": plugins,
    });
    let mut s = serde_json::to_string_pretty(&v).expect("JSON values always serialize");
    s.push('\n');
    s
}

/// Whether `content` is a conflist we wrote.
pub fn is_ours(content: &[u8]) -> bool {
    serde_json::from_slice::<Value>(content)
        .ok()
        .is_some_and(|v| v.get(MANAGED_KEY) == Some(&Value::Bool(true)))
}

/// Whether `portmap` is chained: `auto` chains it only when the binary is
/// in the plugin directory, and warns when it is not (hostPort then does
/// not work).
fn chain_portmap(opts: &ConflistOptions) -> bool {
    match opts.portmap {
        Portmap::On => true,
        Portmap::Off => false,
        Portmap::Auto => {
            let found = opts.bin_dir.join("portmap").is_file();
            if !found {
                warn!(
                    bin_dir = %opts.bin_dir.display(),
                    "portmap is not in {}: left out of the conflist, so hostPort does not work",
                    opts.bin_dir.display()
                );
            }
            found
        }
    }
}

/// Writes the conflist, atomically and only when its content changes.
/// Idempotent.
pub fn install_conflist(opts: &ConflistOptions) -> Result<ConflistReport, InstallError> {
    fs::create_dir_all(&opts.conf_dir).map_err(fs_err("creating", &opts.conf_dir))?;
    if !opts.bin_dir.join("loopback").is_file() {
        warn!(
            bin_dir = %opts.bin_dir.display(),
            "loopback is not in {}: container runtimes that set up the pod's loopback \
             interface with it (containerd) fail every pod",
            opts.bin_dir.display()
        );
    }
    let portmap = chain_portmap(opts);
    let content = conflist(opts, portmap);
    let path = opts.conf_dir.join(paths::CONFLIST_NAME);
    let change = match fs::read(&path) {
        Ok(old) if old == content.as_bytes() => FileChange::Unchanged,
        Ok(old) if is_ours(&old) => FileChange::Updated,
        Ok(_) => {
            let backup = free_backup_path(&path);
            warn!(
                file = %path.display(),
                backup = %backup.display(),
                "{} exists and was not written by overlay-agent: replacing it, the old one is \
                 kept as {}",
                path.display(),
                backup.display()
            );
            fs::rename(&path, &backup).map_err(fs_err("backing up", &path))?;
            FileChange::ReplacedForeign { backup }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => FileChange::Created,
        Err(e) => return Err(fs_err("reading", &path)(e)),
    };
    match change {
        FileChange::Unchanged => info!(path = %path.display(), "conflist unchanged"),
        _ => {
            write_atomic(&path, content.as_bytes(), 0o644)?;
            info!(path = %path.display(), change = ?change, portmap, "wrote the conflist");
        }
    }

    let shadowing = shadowing_configs(&opts.conf_dir, paths::CONFLIST_NAME)?;
    for other in &shadowing {
        warn!(
            file = %other.display(),
            "{} sorts before {}: the container runtime uses the first network \
             configuration in {}, so pods get that network instead of the overlay; remove it \
             if it is not wanted",
            other.display(),
            paths::CONFLIST_NAME,
            opts.conf_dir.display()
        );
    }
    Ok(ConflistReport {
        path,
        change,
        portmap,
        shadowing,
    })
}

/// `<file>.overlay-backup`, or `.overlay-backup.N` with the first free `N`
/// when an earlier backup is there (that one is the original: keep it).
fn free_backup_path(file: &Path) -> PathBuf {
    let base = backup_path(file);
    if !base.exists() {
        return base;
    }
    (1..)
        .map(|n| PathBuf::from(format!("{}.{n}", base.display())))
        .find(|p| !p.exists())
        .expect("some number is free")
}

pub(super) fn backup_path(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}{BACKUP_SUFFIX}", file.display()))
}

/// Network configurations in `dir` that a runtime would load before
/// `ours` (libcni sorts the file names and takes the first).
pub fn shadowing_configs(dir: &Path, ours: &str) -> Result<Vec<PathBuf>, InstallError> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(fs_err("listing", dir))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.as_str() < ours
                && Path::new(n)
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| CONF_EXTENSIONS.contains(&e))
        })
        .collect();
    names.sort();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}
