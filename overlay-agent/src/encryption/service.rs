//! `overlay-agent wireguard`: the userspace device as a process of its own,
//! so that pod traffic keeps flowing while the agent restarts.
//!
//! The agent writes the desired state as JSON ([`DeviceConfig`]) to a file
//! (whole, then renamed into place); the device re-reads it when its
//! modification time changes, within a timer tick, and writes its state
//! ([`Status`]) to another file every second for `status` and `/metrics`.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::atomic::AtomicBool,
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::userspace::{Device, DeviceConfig, DeviceError, DeviceStats, PeerStatus};

/// What the device reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The device process.
    #[serde(default)]
    pub pid: u32,
    /// This node's public key (base64).
    pub public_key: String,
    /// The device's counters.
    pub stats: DeviceStats,
    /// Every peer.
    pub peers: Vec<PeerStatus>,
}

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration file could not be read.
    #[error("reading the WireGuard configuration {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
    /// The configuration file is not a valid configuration.
    #[error("the WireGuard configuration {path} is not valid")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
    /// The device.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// Reads a configuration file.
pub fn read_config(path: &Path) -> Result<DeviceConfig, ServiceError> {
    let text = fs::read_to_string(path).map_err(|source| ServiceError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ServiceError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Writes `value` as JSON to `path`, whole, then renamed into place.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    fs::write(&tmp, body)?;
    fs::rename(&tmp, path)
}

/// Reads a status file the service wrote.
pub fn read_status(path: &Path) -> io::Result<Status> {
    let text = fs::read_to_string(path)?;
    serde_json::from_str(&text).map_err(io::Error::other)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Runs the device of the configuration at `config` until `stop` is set,
/// writing its state to `status` every second.
pub fn serve(config: &Path, status: &Path, stop: &AtomicBool) -> Result<(), ServiceError> {
    let mut seen = mtime(config);
    let mut device = Device::new(read_config(config)?)?;
    tracing::info!(
        public_key = %device.public_key(),
        config = %config.display(),
        "WireGuard device up"
    );
    let write_status = |device: &Device| {
        let s = Status {
            pid: std::process::id(),
            public_key: device.public_key(),
            stats: device.stats(),
            peers: device.peer_status(),
        };
        if let Err(e) = write_json(status, &s) {
            tracing::warn!(error = %e, path = %status.display(), "writing the WireGuard status");
        }
    };
    write_status(&device);
    let mut written = Instant::now();
    device.run(stop, |d| {
        if written.elapsed() >= Duration::from_secs(1) {
            written = Instant::now();
            write_status(d);
        }
        let now = mtime(config);
        if now == seen {
            return None;
        }
        seen = now;
        match read_config(config) {
            Ok(c) => {
                // Report at the next tick, after it is applied (the agent
                // waits for a rotated key to show here).
                written = Instant::now()
                    .checked_sub(Duration::from_secs(1))
                    .unwrap_or(written);
                Some(c)
            }
            Err(e) => {
                tracing::warn!(
                    error = %crate::cni::error::chain(&e),
                    "WireGuard configuration not taken; keeping the previous one"
                );
                None
            }
        }
    })?;
    write_status(&device);
    Ok(())
}
