//! Two kinds of liveness, kept apart: a peer's **agent** (heard through
//! gossip) and a peer's **datapath** (its eBPF program answering our probes,
//! no agent involved). Gossip decides membership and who owns blocks; the
//! datapath decides whether routes to a peer stay. An agent restart, crash
//! or upgrade therefore never withdraws a node whose datapath still
//! forwards, while a node that is really gone (namespace deleted, uplink
//! cut, kernel stopped) stops answering and is withdrawn within the probe
//! timeout.
//!
//! - [`wire`]: the probe payload.
//! - [`prober`]: the task that probes every known peer and publishes each
//!   one's [`DatapathState`].

pub mod prober;
pub mod wire;

use serde::{Deserialize, Serialize};

use crate::topology::Node;

/// What the probes say of a peer's datapath.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatapathState {
    /// Never answered since this agent started: probes are off, the peer
    /// runs a release without them, or it is just starting. Gossip alone
    /// decides.
    #[default]
    Unknown,
    /// Answered within the probe timeout.
    Up,
    /// Answered before, silent for longer than the probe timeout.
    Down,
}

/// Whether `node` is routed, given what the probes say of its datapath: a
/// datapath that answers is routed even when its agent is silent, one that
/// stopped answering is withdrawn even when gossip still holds its agent
/// alive, and one never heard from is routed while its agent is.
pub fn routed(node: &Node, datapath: DatapathState) -> bool {
    match datapath {
        DatapathState::Up => true,
        DatapathState::Down => false,
        DatapathState::Unknown => node.alive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(alive: bool) -> Node {
        Node {
            ip: "172.31.0.2".parse().unwrap(),
            blocks: vec!["10.32.2.0/24".parse().unwrap()],
            alive,
            wireguard: None,
        }
    }

    #[test]
    fn the_datapath_decides_and_gossip_only_when_it_was_never_heard() {
        // Agent down, datapath answering: keep routing (an agent restart).
        assert!(routed(&node(false), DatapathState::Up));
        // Datapath gone: withdraw even if gossip has not noticed yet.
        assert!(!routed(&node(true), DatapathState::Down));
        assert!(!routed(&node(false), DatapathState::Down));
        // Never answered (probes off, or an older release): gossip decides.
        assert!(routed(&node(true), DatapathState::Unknown));
        assert!(!routed(&node(false), DatapathState::Unknown));
    }
}
