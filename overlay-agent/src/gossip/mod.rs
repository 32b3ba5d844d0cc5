//! Gossip: how nodes find each other, agree on who owns which address
//! block, and learn the topology the datapath needs, with no central
//! server.
//!
//! - [`auth`]: the wire: every datagram authenticated (HMAC from the
//!   cluster password), replays and garbage dropped and counted before
//!   the protocol parses anything;
//! - [`view`]: what a node publishes and what it knows of the others;
//! - [`claims`]: the cluster IPAM rule (claim, settle with a quorum,
//!   deterministic winner);
//! - [`swim`]: the membership layer for 5,000 nodes (SWIM via foca, record
//!   broadcasts, push-pull anti-entropy), sans-I/O (the simulation drives
//!   it on a virtual clock, [`swim::udp`] on the agent's socket);
//! - [`node`]: the running node that ties the protocol (SWIM, or chitchat
//!   for a cluster still on the previous release), the rule and the
//!   [`crate::topology::Topology`] seam together;
//! - [`remembered`]: the members a node knew, kept across its restarts;
//! - [`status`]: what `overlay-agent status` shows of all this.

pub mod auth;
pub mod claims;
pub mod fragment;
pub mod node;
pub mod remembered;
pub mod status;
pub mod swim;
pub mod view;

pub use node::{
    DEFAULT_GOSSIP_PORT, ForgetError, Forgotten, FreeAddresses, Gossip, GossipConfig, GossipError,
    Protocol,
};
