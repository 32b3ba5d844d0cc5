//! Kubernetes NetworkPolicy (`networking.k8s.io/v1`), enforced by the
//! eBPF programs (see `overlay-ebpf/src/policy.rs`).
//!
//! - [`types`]: the fields of Pods, Namespaces and NetworkPolicies read;
//! - [`selector`]: label selectors;
//! - [`compile`]: the pure compilation of those objects into the entries
//!   of one node's policy maps, with the problems found;
//! - [`maps`]: the pinned maps, updated by diff;
//! - [`controller`]: list/watch of the three kinds and the applier;
//! - [`events`]: rate-limited "blocked by NetworkPolicy" log lines;
//! - [`report`]: what `status` and `/metrics` show.

pub mod compile;
pub mod controller;
pub mod events;
pub mod maps;
pub mod report;
pub mod selector;
pub mod types;

#[cfg(test)]
mod tests;

pub use compile::{Compiled, Identities, Inputs, Problem, compile};
pub use controller::PolicyController;
pub use maps::{Drops, PolicyMaps, UpdateReport};
pub use report::{IsolatedPod, PolicyReport};
