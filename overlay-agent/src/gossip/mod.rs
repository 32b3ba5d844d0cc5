//! Gossip: membership, cluster IPAM and the topology they produce.

pub mod auth;
pub mod claims;
pub mod view;
