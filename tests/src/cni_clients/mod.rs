//! Drive a CNI plugin through real clients instead of by hand: `ctr run
//! --cni` against a private containerd ([`containerd`]) and libcni, the
//! library containerd and CRI-O link, through a small Go driver of ours
//! ([`libcni`]). Both run the plugin inside a node network namespace of the
//! lab, so what the plugin does lands where a node's would.
//!
//! [`recorder`] wraps a plugin directory so every call (environment, stdin,
//! stdout, exit code) is kept for assertions about what a client really sent.
//!
//! Nothing here touches the machine's `/etc/cni/net.d`, `/opt/cni/bin` or
//! `/var/lib/cni`: `ctr` sees ours through overlay and bind mounts in a
//! private mount namespace, and the libcni driver is told its directories.

pub mod containerd;
pub mod libcni;
pub mod recorder;
mod scratch;

pub use containerd::{Containerd, CtrExit, CtrRun, RunningContainer};
pub use libcni::{CniFailure, LibCni, build_driver};
pub use recorder::{PluginCall, PluginRecorder};
pub use scratch::ScratchDir;
