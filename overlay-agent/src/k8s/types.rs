//! The few fields of the Kubernetes `v1` objects the agent reads.
//!
//! Every struct is `#[serde(default)]` and ignores unknown fields, so a
//! field the API adds, omits or nulls never fails a decode: only the shape
//! of what is read matters (`metadata.name`, `status.addresses`, …).

use std::net::Ipv4Addr;

use serde::{Deserialize, Deserializer};

/// Decodes `null` as the default, as the API writes e.g.
/// `"creationTimestamp": null` and `"conditions": null`.
pub(crate) fn nullable<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// `metadata` of a Node (`ObjectMeta`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// The Node's name, which is also the gossip name of its agent.
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    /// Opaque version of the object; a watch resumes from the last one seen.
    #[serde(deserialize_with = "nullable")]
    pub resource_version: String,
    /// Set (RFC 3339) once deletion was requested; the Node still exists
    /// until its DELETED event.
    pub deletion_timestamp: Option<String>,
}

/// One entry of `status.addresses`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP`, `Hostname`, `InternalDNS` or `ExternalDNS`.
    #[serde(rename = "type", deserialize_with = "nullable")]
    pub kind: String,
    /// The address, in the form its type implies.
    #[serde(deserialize_with = "nullable")]
    pub address: String,
}

/// One entry of `status.conditions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NodeCondition {
    /// `Ready`, `NetworkUnavailable`, `MemoryPressure`, …
    #[serde(rename = "type", deserialize_with = "nullable")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    /// Machine-readable reason of the last transition.
    #[serde(deserialize_with = "nullable")]
    pub reason: String,
    /// Human-readable detail.
    #[serde(deserialize_with = "nullable")]
    pub message: String,
    /// RFC 3339 time the status last changed.
    #[serde(deserialize_with = "nullable")]
    pub last_transition_time: String,
    /// RFC 3339 time the condition was last written.
    #[serde(deserialize_with = "nullable")]
    pub last_heartbeat_time: String,
}

/// `status` of a Node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NodeStatus {
    /// The Node's addresses as the kubelet or cloud provider reported them.
    #[serde(deserialize_with = "nullable")]
    pub addresses: Vec<NodeAddress>,
    /// The Node's conditions.
    #[serde(deserialize_with = "nullable")]
    pub conditions: Vec<NodeCondition>,
}

/// A `v1` Node, reduced to what the agent reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Node {
    /// Name, version, deletion mark.
    pub metadata: ObjectMeta,
    /// Addresses and conditions.
    pub status: NodeStatus,
}

impl Node {
    /// The Node's first IPv4 `InternalIP`, the address its agent gossips on.
    /// `None` if it has none (IPv6-only, or not reported yet).
    pub fn internal_ipv4(&self) -> Option<Ipv4Addr> {
        self.status
            .addresses
            .iter()
            .filter(|a| a.kind == "InternalIP")
            .find_map(|a| a.address.parse().ok())
    }

    /// The condition of type `kind`, if the Node has it.
    pub fn condition(&self, kind: &str) -> Option<&NodeCondition> {
        self.status.conditions.iter().find(|c| c.kind == kind)
    }
}

/// `metadata` of a list (`ListMeta`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ListMeta {
    /// The version the list was read at; a watch started from it misses
    /// nothing.
    #[serde(deserialize_with = "nullable")]
    pub resource_version: String,
    /// Token for the next page, empty on the last page.
    #[serde(rename = "continue", deserialize_with = "nullable")]
    pub continue_token: String,
}

/// A `v1` NodeList.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NodeList {
    /// The list's version and continue token.
    pub metadata: ListMeta,
    /// The Nodes.
    #[serde(deserialize_with = "nullable")]
    pub items: Vec<Node>,
}

impl NodeList {
    /// The names of the listed Nodes.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.items.iter().map(|n| n.metadata.name.as_str())
    }
}

/// A `meta/v1` Status: the body of an error response, and the object of a
/// watch ERROR event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Status {
    /// `Success` or `Failure`.
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    /// What went wrong, for a person.
    #[serde(deserialize_with = "nullable")]
    pub message: String,
    /// Machine-readable reason: `Forbidden`, `Expired`, `NotFound`, …
    #[serde(deserialize_with = "nullable")]
    pub reason: String,
    /// The HTTP status code it stands for (410 for an expired watch).
    #[serde(deserialize_with = "nullable")]
    pub code: u16,
}

/// One event of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A Node appeared (or existed when the watch started from an old
    /// version).
    Added(Node),
    /// A Node changed.
    Modified(Node),
    /// A Node was deleted; the object is its last state.
    Deleted(Node),
    /// Only `metadata.resourceVersion` is meaningful: the stream reached
    /// that version with nothing to report.
    Bookmark(Node),
    /// The watch failed; the stream ends after it.
    Error(Status),
}

impl WatchEvent {
    /// The Node the event carries, `None` for [`WatchEvent::Error`].
    pub fn node(&self) -> Option<&Node> {
        match self {
            Self::Added(n) | Self::Modified(n) | Self::Deleted(n) | Self::Bookmark(n) => Some(n),
            Self::Error(_) => None,
        }
    }
}

/// A watch event as on the wire, before its object is typed.
#[derive(Deserialize)]
pub(crate) struct RawWatchEvent {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) object: serde_json::Value,
}

impl RawWatchEvent {
    /// The typed event; `Ok(None)` for an event type this version does not
    /// know (skipped rather than fatal).
    pub(crate) fn into_event(self) -> Result<Option<WatchEvent>, serde_json::Error> {
        let node = |v| serde_json::from_value::<Node>(v);
        Ok(Some(match self.kind.as_str() {
            "ADDED" => WatchEvent::Added(node(self.object)?),
            "MODIFIED" => WatchEvent::Modified(node(self.object)?),
            "DELETED" => WatchEvent::Deleted(node(self.object)?),
            "BOOKMARK" => WatchEvent::Bookmark(node(self.object)?),
            "ERROR" => WatchEvent::Error(serde_json::from_value(self.object)?),
            _ => return Ok(None),
        }))
    }
}
