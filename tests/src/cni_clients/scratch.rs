//! Uniquely named scratch directories removed on drop.

use std::{
    path::{Path, PathBuf},
    process::{Child, Output},
    time::{Duration, Instant},
};

/// A directory `/tmp/ovl-<role>-<tag>`, removed with its contents on drop.
///
/// Short on purpose: containerd's unix sockets live inside, and a socket
/// path may not exceed 107 bytes.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `/tmp/ovl-<role>-<tag>`, emptied first if a crashed run left it.
    pub fn new(role: &str, tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("ovl-{role}-{tag}"));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path/name`, created as a directory.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        dir
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Waits for `child` until `timeout`; `None` if it is still running.
pub(crate) fn wait_timeout(
    child: &mut Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills `child` by PID unless it already exited, and reaps it.
pub(crate) fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// stdout and stderr of `out` as one readable string.
pub(crate) fn describe(out: &Output) -> String {
    format!(
        "{}: stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}
