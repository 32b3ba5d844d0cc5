//! Network namespace work on a dedicated OS thread.
//!
//! `setns(CLONE_NEWNET)` changes only the calling thread, so switching the
//! namespace of a thread that also runs other work (a tokio worker, a test
//! harness thread) would leak the namespace into that work. Here the closure
//! runs on a fresh thread that enters the namespace and then ends, so nothing
//! else ever runs inside it by accident.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

use nix::sched::{CloneFlags, setns};

/// Path of a named namespace created by `ip netns add NAME`.
pub fn named(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Failure to enter a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened.
    #[error("opening network namespace {path}")]
    Open {
        /// The namespace path.
        path: PathBuf,
        /// Why it could not be opened.
        #[source]
        source: io::Error,
    },
    /// `setns` refused the namespace.
    #[error("entering network namespace {path}")]
    Enter {
        /// The namespace path.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },
}

/// Runs `f` inside the network namespace at `path` on a thread of its own
/// and returns its result. Panics in `f` propagate to the caller.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_owned(),
        source,
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                path: path.to_owned(),
                source,
            })?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
