//! Kubernetes awareness: in a cluster the agent finds its gossip peers
//! from the Nodes' InternalIPs, reclaims the address blocks of a deleted
//! Node (one agent of the cluster does it, once), and sets the Node
//! condition `NetworkUnavailable=False` once its datapath is up.
//!
//! - [`client`]: a blocking client for the three calls (list and watch
//!   Nodes, patch a Node's status), with typed errors;
//! - [`types`]: the few fields of the API objects that are read;
//! - [`controller`]: the pure decisions ([`seeds_from`], [`to_reclaim`])
//!   and the [`Controller`] task that feeds and applies them.
//!
//! No API server can run where this is built, so the client is tested
//! against a loopback HTTP server replaying `testdata/*.json`. Those
//! fixtures are hand-written in the exact shape the Kubernetes v1.29 API
//! documents and returns (NodeList, watch event lines, Status bodies), not
//! captured from a live cluster.

pub mod client;
pub mod controller;
pub mod types;

#[cfg(test)]
mod tests;

pub use client::{KubeClient, KubeError, KubeSettings, ObjectEvent, ObjectList};
pub use controller::{Controller, ControllerConfig, Members, seeds_from, to_reclaim};
pub use types::{Node, NodeList, WatchEvent};
