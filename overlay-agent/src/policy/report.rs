//! What `status` and `/metrics` show of NetworkPolicy on one node.

use std::{fmt::Write as _, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::compile::Problem;

/// A local pod isolated by at least one policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolatedPod {
    /// `namespace/name`.
    pub pod: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Isolated for ingress.
    pub ingress: bool,
    /// Isolated for egress.
    pub egress: bool,
    /// The policies selecting it (`namespace/name`).
    pub policies: Vec<String>,
    /// Packets dropped on the way in.
    pub drops_ingress: u64,
    /// Packets dropped on the way out.
    pub drops_egress: u64,
}

/// The policy part of a node's report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReport {
    /// Pods, Namespaces and NetworkPolicies all listed at least once
    /// (before that the maps are left as they were).
    pub synced: bool,
    /// NetworkPolicies in the cluster.
    pub policies: usize,
    /// Pod addresses with an identity.
    pub identities: usize,
    /// Entries of `ovl_policy_v1`.
    pub rules: usize,
    /// Entries of `ovl_policy_cidrs_v1`.
    pub cidrs: usize,
    /// Entries of `ovl_ct_v1`.
    pub tracked_connections: usize,
    /// Map entries written and removed by the last update.
    pub last_written: usize,
    /// See `last_written`.
    pub last_removed: usize,
    /// Milliseconds the last compile and update took.
    pub last_update_ms: u64,
    /// Local pods isolated by policy.
    pub isolated: Vec<IsolatedPod>,
    /// Policies (or rules of them) that could not be applied.
    pub problems: Vec<Problem>,
}

impl PolicyReport {
    /// Renders the report for humans.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nNetworkPolicy: {}{} policies, {} pod identities, {} rules, {} ipBlock regions, \
             {} tracked connections; last update {} written, {} removed in {} ms",
            if self.synced { "" } else { "NOT SYNCED YET, " },
            self.policies,
            self.identities,
            self.rules,
            self.cidrs,
            self.tracked_connections,
            self.last_written,
            self.last_removed,
            self.last_update_ms
        );
        for p in &self.isolated {
            let dirs = match (p.ingress, p.egress) {
                (true, true) => "ingress+egress",
                (true, false) => "ingress",
                (false, true) => "egress",
                (false, false) => "-",
            };
            let _ = writeln!(
                s,
                "  {:<32} {:<16} isolated {:<15} dropped in {} out {}; selected by {}",
                p.pod,
                p.ip.to_string(),
                dirs,
                p.drops_ingress,
                p.drops_egress,
                p.policies.join(", ")
            );
        }
        for p in &self.problems {
            let _ = writeln!(s, "  PROBLEM {}: {}", p.policy, p.message);
        }
        s
    }
}
