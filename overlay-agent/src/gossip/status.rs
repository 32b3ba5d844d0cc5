//! What `overlay-agent status` and `GET /status` show of the gossip: this
//! node, every peer with its address, state and blocks, the claims, the
//! quorum and the wire counters. Serialisable, so the HTTP endpoint sends it
//! as JSON and the CLI renders the same value.

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{auth::WireStats, view::ClaimState};

/// State of one block as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockState {
    /// Claimed, not yet settled: no address is handed out of it.
    Pending,
    /// Owned: addresses are handed out of it.
    Settled,
    /// Settled here and elsewhere, and the other claim wins: no new address
    /// is handed out of it (a duplicate is possible for existing pods).
    Conflict,
}

impl From<ClaimState> for BlockState {
    fn from(s: ClaimState) -> Self {
        match s {
            ClaimState::Pending => Self::Pending,
            ClaimState::Settled => Self::Settled,
        }
    }
}

/// One block and its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockStatus {
    /// The block.
    pub block: Ipv4Net,
    /// Its state.
    pub state: BlockState,
}

/// Liveness of a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Its agent's heartbeats arrive.
    Alive,
    /// Its agent is silent (restart, crash, upgrade) but its datapath
    /// answers probes: still routed. Gossip alone never says this; the
    /// agent's report does, from the probes.
    AgentDown,
    /// Its agent is silent and its datapath does not answer (or is not
    /// probed): withdrawn from the maps, its blocks stay reserved until it
    /// returns or is forgotten.
    Dead,
}

/// One peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Node name.
    pub name: String,
    /// Underlay address.
    pub ip: Option<Ipv4Addr>,
    /// Gossip address.
    pub gossip_addr: String,
    /// Alive, agent down or dead.
    pub state: PeerState,
    /// Its agent announced a clean stop before going silent.
    #[serde(default)]
    pub stopping: bool,
    /// What probes say of its datapath (absent when not probed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath: Option<crate::liveness::DatapathState>,
    /// Whether this node routes to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routed: Option<bool>,
    /// Generation (start time, ms since the Unix epoch).
    pub generation: u64,
    /// Agent version.
    pub version: Option<String>,
    /// Blocks it claims, as published.
    pub blocks: Vec<BlockStatus>,
}

/// A block with more than one settled claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictStatus {
    /// The block.
    pub block: Ipv4Net,
    /// Every node holding it as settled.
    pub claimants: Vec<String>,
    /// The one the rule picks (routes point there).
    pub owner: String,
}

/// The gossip side of a node's status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GossipStatus {
    /// This node's name.
    pub name: String,
    /// This node's generation.
    pub generation: u64,
    /// This node's underlay address.
    pub node_ip: Option<Ipv4Addr>,
    /// Where it gossips.
    pub gossip_addr: String,
    /// Whether datagrams are authenticated.
    pub encrypted: bool,
    /// The membership protocol this node speaks.
    #[serde(default)]
    pub protocol: super::node::Protocol,
    /// Whether this node sees a majority of the members it knows alive (it
    /// may claim new blocks only then).
    pub quorum: bool,
    /// Members known (live and dead, this node included).
    pub known: usize,
    /// Members alive (this node included).
    pub live: usize,
    /// This node's blocks.
    pub blocks: Vec<BlockStatus>,
    /// Every other member.
    pub peers: Vec<PeerStatus>,
    /// The cluster range.
    pub range: Option<Ipv4Net>,
    /// Prefix length of one block.
    pub block_prefix: u8,
    /// Blocks in the range.
    pub blocks_total: u64,
    /// Blocks claimed by anyone.
    pub blocks_claimed: usize,
    /// Duplicate owners (should be empty).
    pub conflicts: Vec<ConflictStatus>,
    /// Forget records: name → forgotten generation.
    pub forgotten: BTreeMap<String, u64>,
    /// Gossip values from peers that did not parse.
    pub ignored_values: usize,
    /// Datagram counters.
    pub wire: WireStats,
}

impl GossipStatus {
    /// Renders the status for humans, in the spirit of `weave status`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let ip = self.node_ip.map(|i| i.to_string()).unwrap_or_default();
        let _ = writeln!(
            s,
            "Node {} ({ip}), gossip on {} ({}, {}), generation {}",
            self.name,
            self.gossip_addr,
            self.protocol,
            if self.encrypted {
                "authenticated"
            } else {
                "NOT AUTHENTICATED: no password"
            },
            self.generation
        );
        let _ = writeln!(
            s,
            "  members {} known, {} alive; quorum {}",
            self.known,
            self.live,
            if self.quorum {
                "yes"
            } else {
                "NO (no new block can be claimed)"
            }
        );
        if let Some(range) = self.range {
            let _ = writeln!(
                s,
                "  range {range}, /{} blocks: {} of {} claimed",
                self.block_prefix, self.blocks_claimed, self.blocks_total
            );
        }
        let _ = writeln!(s, "  blocks: {}", blocks(&self.blocks));
        let _ = writeln!(s, "\nPeers:");
        if self.peers.is_empty() {
            let _ = writeln!(s, "  (none)");
        }
        for p in &self.peers {
            let ip = p.ip.map(|i| i.to_string()).unwrap_or_else(|| "?".into());
            let state = match (p.state, p.stopping) {
                (PeerState::Alive, _) => "alive",
                (PeerState::AgentDown, true) => "agent stopped",
                (PeerState::AgentDown, false) => "agent down",
                (PeerState::Dead, _) => "DEAD",
            };
            let datapath = match (p.datapath, p.routed) {
                (None, _) => String::new(),
                (Some(d), Some(false)) => format!(" (datapath {d:?}, NOT routed)"),
                (Some(d), _) => format!(" (datapath {d:?})").to_lowercase(),
            };
            let _ = writeln!(
                s,
                "  {:<16} {:<15} {:<13} {:<21} {}{datapath}",
                p.name,
                ip,
                state,
                p.gossip_addr,
                blocks(&p.blocks)
            );
        }
        if !self.conflicts.is_empty() {
            let _ = writeln!(s, "\nCONFLICTS (a block settled on more than one node):");
            for c in &self.conflicts {
                let _ = writeln!(
                    s,
                    "  {} held by {}; routed to {}",
                    c.block,
                    c.claimants.join(", "),
                    c.owner
                );
            }
        }
        if !self.forgotten.is_empty() {
            let _ = writeln!(s, "\nForgotten nodes:");
            for (n, g) in &self.forgotten {
                let _ = writeln!(s, "  {n} (generations up to {g})");
            }
        }
        let w = &self.wire;
        let _ = writeln!(
            s,
            "\nGossip datagrams: in {} ({} B), out {} ({} B); dropped: auth {}, replay {}, malformed {}; send errors {}",
            w.datagrams_in,
            w.bytes_in,
            w.datagrams_out,
            w.bytes_out,
            w.auth_failed,
            w.replayed,
            w.malformed,
            w.send_errors
        );
        s
    }
}

fn blocks(list: &[BlockStatus]) -> String {
    if list.is_empty() {
        return "-".into();
    }
    list.iter()
        .map(|b| match b.state {
            BlockState::Settled => b.block.to_string(),
            BlockState::Pending => format!("{} (pending)", b.block),
            BlockState::Conflict => format!("{} (CONFLICT)", b.block),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
