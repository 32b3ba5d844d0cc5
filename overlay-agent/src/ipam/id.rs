//! Checks on the identifiers that name an allocation.

use super::IpamError;

/// Longest container id we accept. Runtimes use 64 hex digits; the margin is
/// for runtimes with longer ids, the bound keeps one record small.
pub(super) const MAX_CONTAINER_ID_LEN: usize = 256;

/// `IFNAMSIZ` (16) minus the terminating NUL.
pub(super) const MAX_IFNAME_LEN: usize = 15;

/// Rejects a container id that is empty, too long, or holds `/`, NUL or
/// another control character.
pub(super) fn check_container_id(id: &str) -> Result<(), IpamError> {
    let reason = if id.is_empty() {
        Some("empty")
    } else if id.len() > MAX_CONTAINER_ID_LEN {
        Some("longer than 256 bytes")
    } else if id.contains('/') {
        Some("contains '/'")
    } else if id.chars().any(char::is_control) {
        Some("contains NUL or another control character")
    } else {
        None
    };
    invalid("container id", id, reason)
}

/// Rejects an interface name the kernel would refuse (`dev_valid_name` in
/// `net/core/dev.c`): empty, over 15 bytes, `.` or `..`, or holding `/`,
/// `:`, whitespace, NUL or another control character.
pub(super) fn check_ifname(name: &str) -> Result<(), IpamError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_IFNAME_LEN {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are not interface names")
    } else if name.contains(['/', ':']) {
        Some("contains '/' or ':'")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains whitespace, NUL or another control character")
    } else {
        None
    };
    invalid("interface name", name, reason)
}

fn invalid(what: &'static str, value: &str, reason: Option<&'static str>) -> Result<(), IpamError> {
    match reason {
        None => Ok(()),
        Some(reason) => Err(IpamError::InvalidId {
            what,
            value: value.to_owned(),
            reason,
        }),
    }
}
