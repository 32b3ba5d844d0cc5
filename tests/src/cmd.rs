//! Running helper commands (iproute2, ping, iperf3) with clear failures.

use std::process::{Command, Output};

/// Runs `argv`, returning its output whatever the exit status.
pub fn run(argv: &[&str]) -> Output {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"))
}

/// Runs `argv` and panics with its stderr unless it succeeds; returns stdout.
pub fn run_ok(argv: &[&str]) -> String {
    let out = run(argv);
    assert!(
        out.status.success(),
        "{argv:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell snippet and panics unless it succeeds; returns stdout.
pub fn sh(script: &str) -> String {
    run_ok(&["sh", "-c", script])
}
