//! Loading, pinning and attaching the eBPF datapath.
//!
//! Everything the kernel needs to keep forwarding lives under one pin
//! directory (default `/sys/fs/bpf/overlay`): the maps by their names and one
//! TC link per attachment under `links/`. Because links and maps are pinned,
//! traffic keeps flowing after the process that attached them exits, and a
//! new agent re-uses them: [`Datapath::load`] re-opens pinned maps instead of
//! creating new ones, and attaching where a link is already pinned swaps the
//! program inside that link atomically instead of adding a second one.

pub mod bpffs;

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType,
        links::{FdLink, LinkError, PinnedLink},
        tc::TcAttachOptions,
    },
};
pub use bpffs::{ensure_mounted as ensure_bpffs, is_bpffs};
use overlay_common::{
    ALL_MAPS, POLICY_MAPS, PROG_FROM_POD, PROG_FROM_UPLINK, PROG_FROM_WIREGUARD, PROG_TO_POD,
};

/// Every program, in load order.
const PROGRAMS: [&str; 4] = [
    PROG_FROM_POD,
    PROG_FROM_UPLINK,
    PROG_TO_POD,
    PROG_FROM_WIREGUARD,
];

use crate::paths::LINKS_SUBDIR;

/// The compiled eBPF object (built from `overlay-ebpf` by `build.rs`).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/overlay"));

/// What failed while setting up or tearing down the datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// bpffs was not mounted and mounting it failed.
    #[error("mounting bpffs at {path}")]
    MountBpffs {
        /// Mount point.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },
    /// No bpffs here, and mounting one would only last as long as this
    /// process's private mount namespace.
    #[error(
        "no bpffs at {path} in this process's mount namespace, which is not the host's \
         (under `ip netns exec`?): pins made here would vanish on exit; mount the host's \
         bpffs there, or enter only the network namespace (`nsenter --net=...`)"
    )]
    PrivateBpffs {
        /// Mount point.
        path: PathBuf,
    },
    /// The pin directory is not on a bpffs.
    #[error("{path} is not on a bpffs (mount one with `mount -t bpf bpf /sys/fs/bpf`)")]
    NotBpffs {
        /// The pin directory.
        path: PathBuf,
    },
    /// A directory or pin could not be created or removed.
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
    /// The object could not be loaded (verifier, map creation, BTF).
    #[error("loading the eBPF object")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program is missing from the object or has the wrong type.
    #[error("program {0} is missing from the eBPF object or is not a TC classifier")]
    MissingProgram(&'static str),
    /// The kernel refused a program.
    #[error("loading program {prog} into the kernel")]
    LoadProgram {
        /// Program name.
        prog: &'static str,
        /// The error.
        #[source]
        source: Box<ProgramError>,
    },
    /// Attaching a program to an interface failed.
    #[error("attaching {prog} to TC of {iface}")]
    Attach {
        /// Program name.
        prog: &'static str,
        /// Interface name.
        iface: String,
        /// The error.
        #[source]
        source: Box<ProgramError>,
    },
    /// A link could not be pinned or re-opened.
    #[error("pinned link {path}")]
    Link {
        /// Pin path.
        path: PathBuf,
        /// The error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The loaded programs and the pin directory they share their maps through.
pub struct Datapath {
    pin_dir: PathBuf,
    ebpf: Ebpf,
}

impl Datapath {
    /// Loads [`EBPF_OBJECT`]: re-opens the maps pinned in `pin_dir` or
    /// creates and pins them, then loads both programs into the kernel.
    /// Mounts bpffs at the pin directory's parent if nothing is mounted there.
    pub fn load(pin_dir: &Path) -> Result<Self, DatapathError> {
        Self::load_object(pin_dir, EBPF_OBJECT)
    }

    fn load_object(pin_dir: &Path, object: &[u8]) -> Result<Self, DatapathError> {
        prepare_pin_dir(pin_dir)?;
        let paths: Vec<(&str, PathBuf)> = ALL_MAPS
            .iter()
            .chain(POLICY_MAPS.iter())
            .map(|m| (*m, pin_dir.join(m)))
            .collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(object)
            .map_err(|e| DatapathError::Load(Box::new(e)))?;
        for prog in PROGRAMS {
            classifier(&mut ebpf, prog)?
                .load()
                .map_err(|e| DatapathError::LoadProgram {
                    prog,
                    source: Box::new(e),
                })?;
        }
        Ok(Self {
            pin_dir: pin_dir.to_owned(),
            ebpf,
        })
    }

    /// One of the loaded programs (`overlay_common::PROG_*`), e.g. to run it
    /// on a crafted packet with `test_run`.
    pub fn program(&mut self, prog: &'static str) -> Result<&mut SchedClassifier, DatapathError> {
        classifier(&mut self.ebpf, prog)
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Attaches `from_uplink` at TC ingress of the node's underlay device.
    pub fn attach_uplink(&mut self, iface: &str) -> Result<(), DatapathError> {
        self.attach(PROG_FROM_UPLINK, iface)
    }

    /// Attaches `from_wireguard` at TC ingress of the WireGuard device.
    pub fn attach_wireguard(&mut self, iface: &str) -> Result<(), DatapathError> {
        self.attach(PROG_FROM_WIREGUARD, iface)
    }

    /// Attaches `from_pod` at TC ingress and `to_pod` at TC egress of a
    /// pod's host-side veth.
    pub fn attach_pod(&mut self, iface: &str) -> Result<(), DatapathError> {
        self.attach(PROG_FROM_POD, iface)?;
        self.attach(PROG_TO_POD, iface)
    }

    /// Attaches `prog` at TC ingress (egress for `to_pod`) of `iface`
    /// through a pinned TCX link. Idempotent: where a live link is pinned
    /// already its program is replaced atomically; a stale pin (its
    /// interface gone) is replaced.
    fn attach(&mut self, prog: &'static str, iface: &str) -> Result<(), DatapathError> {
        let direction = if prog == PROG_TO_POD {
            TcAttachType::Egress
        } else {
            TcAttachType::Ingress
        };
        let pin = link_pin_path(&self.pin_dir, prog, iface);
        let program = classifier(&mut self.ebpf, prog)?;

        match PinnedLink::from_pin(&pin) {
            Ok(pinned) => {
                let link = FdLink::from(pinned)
                    .try_into()
                    .map_err(|e: LinkError| link_error(&pin, e))?;
                match program.attach_to_link(link) {
                    Ok(_) => return Ok(()),
                    // The interface this link was attached to is gone (or
                    // the pin is not a TC link): drop the pin, attach anew.
                    Err(_) => remove_file(&pin)?,
                }
            }
            Err(LinkError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(link_error(&pin, e)),
        }

        let id = program
            .attach_with_options(
                iface,
                direction,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|e| DatapathError::Attach {
                prog,
                iface: iface.to_owned(),
                source: Box::new(e),
            })?;
        let link = program.take_link(id).map_err(|e| link_error(&pin, e))?;
        let fd_link: FdLink = link
            .try_into()
            .map_err(|e: LinkError| link_error(&pin, e))?;
        fd_link.pin(&pin).map_err(|e| link_error(&pin, e))?;
        Ok(())
    }
}

/// Detaches whatever program is attached to `iface` through a link pinned in
/// `pin_dir`. Idempotent: nothing pinned is not an error.
pub fn detach(pin_dir: &Path, iface: &str) -> Result<(), DatapathError> {
    for prog in PROGRAMS {
        let pin = link_pin_path(pin_dir, prog, iface);
        match fs::remove_file(&pin) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(DatapathError::Fs {
                    op: "removing",
                    path: pin,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Removes every link and map pinned under `pin_dir`, and the directory.
/// Links detach once their last pin and descriptor are gone; maps are freed
/// once no program uses them. Idempotent.
pub fn uninstall(pin_dir: &Path) -> Result<(), DatapathError> {
    match fs::remove_dir_all(pin_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DatapathError::Fs {
            op: "removing",
            path: pin_dir.to_owned(),
            source,
        }),
    }
}

/// Names of the interfaces with a pinned link under `pin_dir`, with the
/// program attached to each.
pub fn attachments(pin_dir: &Path) -> Vec<(String, String)> {
    let Ok(dir) = fs::read_dir(pin_dir.join(LINKS_SUBDIR)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = dir
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let (prog, iface) = name.split_once('@')?;
            Some((prog.to_owned(), iface.to_owned()))
        })
        .collect();
    out.sort();
    out
}

fn link_pin_path(pin_dir: &Path, prog: &str, iface: &str) -> PathBuf {
    pin_dir.join(LINKS_SUBDIR).join(format!("{prog}@{iface}"))
}

fn prepare_pin_dir(pin_dir: &Path) -> Result<(), DatapathError> {
    let mountpoint = Path::new(crate::paths::BPFFS);
    if pin_dir.starts_with(mountpoint) {
        bpffs::ensure_mounted(mountpoint)?;
    }
    let links = pin_dir.join(LINKS_SUBDIR);
    fs::create_dir_all(&links).map_err(|source| DatapathError::Fs {
        op: "creating",
        path: links,
        source,
    })?;
    if !is_bpffs(pin_dir) {
        return Err(DatapathError::NotBpffs {
            path: pin_dir.to_owned(),
        });
    }
    Ok(())
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    prog: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    ebpf.program_mut(prog)
        .and_then(|p| p.try_into().ok())
        .ok_or(DatapathError::MissingProgram(prog))
}

fn remove_file(path: &Path) -> Result<(), DatapathError> {
    fs::remove_file(path).map_err(|source| DatapathError::Fs {
        op: "removing",
        path: path.to_owned(),
        source,
    })
}

fn link_error(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> DatapathError {
    DatapathError::Link {
        path: path.to_owned(),
        source: Box::new(e),
    }
}
