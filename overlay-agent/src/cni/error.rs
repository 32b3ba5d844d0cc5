//! The CNI error object (`{"cniVersion", "code", "msg", "details"}`) and
//! its codes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Error codes. 1–99 are the specification's; 100 and up are ours and are
/// listed in the README.
pub mod code {
    /// The requested cniVersion is not supported, or the operation does not
    /// exist in it.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A field of the network configuration is not supported.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// The container is unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// A required environment variable is missing or malformed.
    pub const INVALID_ENV: u32 = 4;
    /// An I/O failure (socket, netlink, filesystem).
    pub const IO_FAILURE: u32 = 5;
    /// The input could not be decoded (malformed JSON).
    pub const DECODING_FAILURE: u32 = 6;
    /// The network configuration is invalid.
    pub const INVALID_CONFIG: u32 = 7;
    /// Transient: the runtime should try again later (agent not running or
    /// not ready).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD now.
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// Ours: the interface name asked for already exists in the pod.
    pub const INTERFACE_EXISTS: u32 = 100;
    /// Ours: every address of the node's blocks is in use (a node that owns
    /// no block yet answers [`TRY_AGAIN_LATER`]).
    pub const NO_ADDRESS: u32 = 101;
    /// Ours: CHECK found the pod's network different from what ADD made.
    pub const CHECK_FAILED: u32 = 102;
    /// Ours: the agent failed in a way none of the codes above names.
    pub const INTERNAL: u32 = 110;
}

/// A CNI error as printed on stdout. `cni_version` is filled in when it is
/// printed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    /// One of [`code`].
    pub code: u32,
    /// What went wrong, naming the input at fault.
    pub msg: String,
    /// The cause chain, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with a code and message.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds the cause chain of `err` as details.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// A missing or malformed environment variable.
    pub fn env(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENV, msg)
    }

    /// An invalid network configuration.
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }

    /// The JSON printed on stdout for this error.
    pub fn to_json(&self, version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = self.details.clone().into();
        }
        v
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// The whole cause chain of an error on one line, for `details`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
