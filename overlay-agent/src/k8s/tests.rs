//! Tests of the Kubernetes module: the client against a loopback server
//! replaying `testdata/`, the reclaim decision, and the controller.

mod api;
mod controller;
mod decision;
mod server;
mod tls;

use std::path::{Path, PathBuf};

/// The text of `testdata/NAME`.
fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/k8s/testdata")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()))
}

/// A token file in `dir` holding `token` (with the trailing newline
/// kubelet does not write but people do).
fn token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{token}\n")).expect("writing the token file");
    path
}
