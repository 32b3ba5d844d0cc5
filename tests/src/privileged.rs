//! Gate for tests that need root (namespaces, BPF).

/// Returns `true` when the test may run. Without root it prints why it
/// skips and returns `false`, except under `CI=true`, where a skip would hide
/// a test that never ran, so it panics instead.
pub fn require_privileges(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    let reason = "needs root (network namespaces and BPF)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {reason}, and CI=true forbids skipping");
    }
    eprintln!("SKIPPED {test}: {reason}");
    false
}

/// Returns from the calling test when it may not run (see
/// [`require_privileges`]): `privileged!("test_name");` as its first line.
#[macro_export]
macro_rules! privileged {
    ($name:literal) => {
        if !$crate::require_privileges($name) {
            return;
        }
    };
}
