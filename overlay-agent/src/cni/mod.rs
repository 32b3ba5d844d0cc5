//! The CNI plugin protocol (specification 0.3.1, 0.4.0, 1.0.0, 1.1.0):
//! environment, network configuration, results, errors, and [`plugin::run`],
//! the whole of `overlay-cni` minus reading stdin and printing.

pub mod config;
pub mod env;
pub mod error;
pub mod plugin;
pub mod result;
pub mod version;

pub use config::{Attachment, NetConf, PLUGIN_TYPE};
pub use env::{Command, Invocation, PodRef};
pub use error::{CniError, code};
pub use result::{AddResult, Interface, IpConfig, RouteEntry};
pub use version::Version;
