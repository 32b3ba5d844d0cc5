//! Egress masquerade: pod traffic to addresses outside the cluster range
//! leaves behind the node's address; traffic between pods never does.
//!
//! One nftables table (`ip overlay`) in the agent's network namespace,
//! replaced atomically in a single `nft -f` transaction, so applying it
//! again is a no-op and a changed range never leaves a gap. Pod-to-pod
//! traffic across nodes is encapsulated by `from_pod` before netfilter sees
//! it and same-node traffic is redirected; the rule also excludes the
//! cluster range as destination so nothing between pods is translated even
//! if it does reach the host stack.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use ipnet::Ipv4Net;

/// Name of our nftables table (family `ip`).
pub const TABLE: &str = "overlay";

/// Installing or removing the masquerade rules failed.
#[derive(Debug, thiserror::Error)]
pub enum MasqueradeError {
    /// `nft` could not be run.
    #[error("running nft (is the nftables package installed?)")]
    Spawn(#[source] std::io::Error),
    /// IPv4 forwarding could not be turned on.
    #[error("enabling IPv4 forwarding (/proc/sys/net/ipv4/ip_forward)")]
    Forwarding(#[source] std::io::Error),
    /// `nft` refused the ruleset.
    #[error("nft refused the {op} of table ip {TABLE}: {stderr}")]
    Refused {
        /// What was asked.
        op: &'static str,
        /// nft's message.
        stderr: String,
    },
}

/// The ruleset for `range`, as given to `nft -f`.
pub fn ruleset(range: Ipv4Net) -> String {
    // Declaring the table first makes `delete` succeed when it does not
    // exist yet; the whole file is one transaction.
    format!(
        "table ip {TABLE} {{}}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {range} ip daddr != {range} masquerade\n\
         \t}}\n\
         }}\n"
    )
}

/// Installs (or replaces) the masquerade rule for pods in `range`, and
/// turns on IPv4 forwarding, without which egress never leaves the node.
pub fn install(range: Ipv4Net) -> Result<(), MasqueradeError> {
    nft("installation", &ruleset(range))?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(MasqueradeError::Forwarding)
}

/// Removes the table. Idempotent.
pub fn remove() -> Result<(), MasqueradeError> {
    nft(
        "removal",
        &format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"),
    )
}

fn nft(op: &'static str, script: &str) -> Result<(), MasqueradeError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(MasqueradeError::Spawn)?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())
        .map_err(MasqueradeError::Spawn)?;
    let out = child.wait_with_output().map_err(MasqueradeError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(MasqueradeError::Refused {
            op,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_masquerades_only_traffic_leaving_the_cluster_range() {
        let r = ruleset("10.32.0.0/12".parse().unwrap());
        assert!(
            r.contains("ip saddr 10.32.0.0/12 ip daddr != 10.32.0.0/12 masquerade"),
            "{r}"
        );
        assert!(r.starts_with("table ip overlay {}\ndelete table ip overlay\n"));
    }
}
