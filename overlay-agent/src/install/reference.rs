//! The reference CNI plugins a node needs besides ours: `loopback`, which
//! containerd runs for every pod, and `portmap`, which our conflist
//! chains. The image ships Debian's (see `xtask/src/image.rs`);
//! `install-cni` copies one into the host's plugin directory only when the
//! host has none, and never replaces one that is there (the host's may be
//! newer, or someone else's on purpose).

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::{InstallError, fs_err, write_atomic};

/// The reference plugins `install-cni` makes sure of.
pub const REFERENCE_PLUGINS: &[&str] = &["loopback", "portmap"];

/// Where the image keeps them (Debian's own path for them).
pub const DEFAULT_REFERENCE_DIR: &str = "/usr/lib/cni";

/// What to do about one reference plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReferenceAction {
    /// The host has it: leave it alone.
    Present,
    /// The host lacks it and we ship it: copy it from here.
    Install {
        /// The shipped binary.
        from: PathBuf,
    },
    /// Neither the host nor we have it.
    Unavailable,
}

/// Decides what to do about plugin `name`, given the host's plugin
/// directory and the directory of the ones we ship.
pub fn reference_action(name: &str, bin_dir: &Path, shipped_dir: &Path) -> ReferenceAction {
    // A dangling symlink or a directory counts as absent for the runtime,
    // but it is not ours to replace either: only a free name is written.
    if bin_dir.join(name).symlink_metadata().is_ok() {
        return ReferenceAction::Present;
    }
    let from = shipped_dir.join(name);
    if from.is_file() {
        ReferenceAction::Install { from }
    } else {
        ReferenceAction::Unavailable
    }
}

/// Applies [`reference_action`] to every plugin of [`REFERENCE_PLUGINS`];
/// returns what was decided for each.
pub fn install_reference_plugins(
    bin_dir: &Path,
    shipped_dir: &Path,
) -> Result<Vec<(&'static str, ReferenceAction)>, InstallError> {
    let mut done = Vec::new();
    for name in REFERENCE_PLUGINS {
        let action = reference_action(name, bin_dir, shipped_dir);
        let to = bin_dir.join(name);
        match &action {
            ReferenceAction::Present => {
                info!(path = %to.display(), "{name} is on the host already: left as it is");
            }
            ReferenceAction::Install { from } => {
                let content = std::fs::read(from).map_err(fs_err("reading", from))?;
                write_atomic(&to, &content, 0o755)?;
                info!(path = %to.display(), from = %from.display(), "installed {name}");
            }
            ReferenceAction::Unavailable => warn!(
                bin_dir = %bin_dir.display(),
                shipped = %shipped_dir.display(),
                "{name} is neither in {} nor shipped in {}: pods need it (loopback: \
                 containerd; portmap: hostPort, left out of the conflist)",
                bin_dir.display(),
                shipped_dir.display()
            ),
        }
        done.push((*name, action));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn a_plugin_is_installed_only_where_the_host_has_none() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (bin, shipped) = (tmp.path().join("bin"), tmp.path().join("shipped"));
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&shipped).unwrap();
        fs::write(shipped.join("loopback"), b"ours").unwrap();

        assert_eq!(
            reference_action("loopback", &bin, &shipped),
            ReferenceAction::Install {
                from: shipped.join("loopback")
            }
        );
        assert_eq!(
            reference_action("portmap", &bin, &shipped),
            ReferenceAction::Unavailable
        );
        fs::write(bin.join("portmap"), b"host's").unwrap();
        assert_eq!(
            reference_action("portmap", &bin, &shipped),
            ReferenceAction::Present
        );
        // A symlink, even a dangling one, is the host's business.
        std::os::unix::fs::symlink("/nonexistent", bin.join("loopback")).unwrap();
        assert_eq!(
            reference_action("loopback", &bin, &shipped),
            ReferenceAction::Present
        );
    }

    #[test]
    fn installing_copies_what_is_missing_and_never_overwrites() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (bin, shipped) = (tmp.path().join("bin"), tmp.path().join("shipped"));
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&shipped).unwrap();
        fs::write(shipped.join("loopback"), b"shipped loopback").unwrap();
        fs::write(shipped.join("portmap"), b"shipped portmap").unwrap();
        fs::write(bin.join("portmap"), b"newer portmap of the host").unwrap();

        let done = install_reference_plugins(&bin, &shipped).unwrap();
        assert_eq!(done[0].0, "loopback");
        assert!(matches!(done[0].1, ReferenceAction::Install { .. }));
        assert_eq!(done[1], ("portmap", ReferenceAction::Present));
        assert_eq!(fs::read(bin.join("loopback")).unwrap(), b"shipped loopback");
        assert_eq!(
            fs::read(bin.join("portmap")).unwrap(),
            b"newer portmap of the host"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(bin.join("loopback"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        // A second run finds both and changes nothing.
        let again = install_reference_plugins(&bin, &shipped).unwrap();
        assert!(
            again.iter().all(|(_, a)| *a == ReferenceAction::Present),
            "{again:?}"
        );
    }
}
