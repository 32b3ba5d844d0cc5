//! The fields of `v1` Pods and Namespaces and `networking.k8s.io/v1`
//! NetworkPolicies that policy compilation reads, in the API's JSON shape.
//!
//! Like [`crate::k8s::types`], every struct is `#[serde(default)]`,
//! ignores unknown fields and reads `null` as absent. Values that can be
//! wrong (a protocol, a CIDR, a selector operator) are kept as the API sent
//! them and checked by the compiler, so that one bad policy is reported
//! instead of failing the whole list.

use std::{collections::BTreeMap, net::Ipv4Addr};

use serde::Deserialize;

use crate::k8s::types::nullable;

/// `metadata` of a namespaced or cluster object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Meta {
    /// Name.
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    /// Namespace (empty for a Namespace).
    #[serde(deserialize_with = "nullable")]
    pub namespace: String,
    /// Labels.
    #[serde(deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// Version of the object.
    #[serde(deserialize_with = "nullable")]
    pub resource_version: String,
}

/// A `v1` Namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Namespace {
    /// Name and labels (`kubernetes.io/metadata.name` included, as the API
    /// sets it).
    pub metadata: Meta,
}

/// One `containers[].ports[]` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerPort {
    /// The port's name (an IANA_SVC_NAME), empty if unnamed.
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    /// The port number.
    pub container_port: u16,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(deserialize_with = "nullable")]
    pub protocol: String,
}

/// One container of a pod spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Container {
    /// Its ports.
    #[serde(deserialize_with = "nullable")]
    pub ports: Vec<ContainerPort>,
}

/// `spec` of a Pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpec {
    /// The Node it is scheduled on.
    #[serde(deserialize_with = "nullable")]
    pub node_name: String,
    /// Host-network pods have the node's address: they are not endpoints.
    pub host_network: bool,
    /// Containers (their named ports).
    #[serde(deserialize_with = "nullable")]
    pub containers: Vec<Container>,
    /// Init containers (sidecars may serve named ports too).
    #[serde(deserialize_with = "nullable")]
    pub init_containers: Vec<Container>,
}

/// One `status.podIPs` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PodIp {
    /// The address.
    #[serde(deserialize_with = "nullable")]
    pub ip: String,
}

/// `status` of a Pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodStatus {
    /// The primary address.
    #[serde(rename = "podIP", deserialize_with = "nullable")]
    pub pod_ip: String,
    /// Every address.
    #[serde(rename = "podIPs", deserialize_with = "nullable")]
    pub pod_ips: Vec<PodIp>,
    /// `Pending`, `Running`, `Succeeded`, `Failed`.
    #[serde(deserialize_with = "nullable")]
    pub phase: String,
}

/// A `v1` Pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Pod {
    /// Name, namespace, labels.
    pub metadata: Meta,
    /// Node, host network, named ports.
    pub spec: PodSpec,
    /// Addresses.
    pub status: PodStatus,
}

impl Pod {
    /// The pod's IPv4 address, if it has one and is a pod-network pod that
    /// still holds it (finished pods release theirs).
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        if self.spec.host_network || matches!(self.status.phase.as_str(), "Succeeded" | "Failed") {
            return None;
        }
        std::iter::once(self.status.pod_ip.as_str())
            .chain(self.status.pod_ips.iter().map(|p| p.ip.as_str()))
            .find_map(|s| s.parse().ok())
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }

    /// Every named port of the pod's containers.
    pub fn named_ports(&self) -> impl Iterator<Item = &ContainerPort> {
        self.spec
            .containers
            .iter()
            .chain(&self.spec.init_containers)
            .flat_map(|c| &c.ports)
            .filter(|p| !p.name.is_empty())
    }
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Requirement {
    /// The label key.
    #[serde(deserialize_with = "nullable")]
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
    #[serde(deserialize_with = "nullable")]
    pub operator: String,
    /// Values for `In` and `NotIn`.
    #[serde(deserialize_with = "nullable")]
    pub values: Vec<String>,
}

/// A `metav1.LabelSelector`: all of its terms must hold; empty selects
/// everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LabelSelector {
    /// Exact labels.
    #[serde(deserialize_with = "nullable")]
    pub match_labels: BTreeMap<String, String>,
    /// Expressions.
    #[serde(deserialize_with = "nullable")]
    pub match_expressions: Vec<Requirement>,
}

/// An `ipBlock`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct IpBlock {
    /// The CIDR.
    #[serde(deserialize_with = "nullable")]
    pub cidr: String,
    /// CIDRs inside it that are not matched.
    #[serde(deserialize_with = "nullable")]
    pub except: Vec<String>,
}

/// A `NetworkPolicyPeer`: `ipBlock` alone, or pod and/or namespace selectors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Peer {
    /// Pods (in the policy's namespace unless `namespace_selector` is set).
    pub pod_selector: Option<LabelSelector>,
    /// Namespaces.
    pub namespace_selector: Option<LabelSelector>,
    /// Addresses.
    pub ip_block: Option<IpBlock>,
}

/// A port: a number or a name, as the API's `IntOrString`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number.
    Int(i64),
    /// A name (or a number written as a string).
    String(String),
}

/// A `NetworkPolicyPort`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PolicyPort {
    /// `TCP` (default), `UDP` or `SCTP`.
    pub protocol: Option<String>,
    /// Number or name; absent: every port of the protocol.
    pub port: Option<IntOrString>,
    /// Last port of a range starting at the numeric `port`.
    pub end_port: Option<i64>,
}

/// An ingress or egress rule (`from`/`to` are the same type).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Rule {
    /// Ports; empty: every port and protocol.
    #[serde(deserialize_with = "nullable")]
    pub ports: Vec<PolicyPort>,
    /// Ingress peers; empty: everyone.
    #[serde(deserialize_with = "nullable")]
    pub from: Vec<Peer>,
    /// Egress peers; empty: everyone.
    #[serde(deserialize_with = "nullable")]
    pub to: Vec<Peer>,
}

/// `spec` of a NetworkPolicy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PolicySpec {
    /// The pods of the policy's namespace it applies to.
    pub pod_selector: LabelSelector,
    /// Ingress rules (allow lists).
    #[serde(deserialize_with = "nullable")]
    pub ingress: Vec<Rule>,
    /// Egress rules (allow lists).
    #[serde(deserialize_with = "nullable")]
    pub egress: Vec<Rule>,
    /// `Ingress` and/or `Egress`; absent: Ingress, plus Egress if there
    /// are egress rules.
    pub policy_types: Option<Vec<String>>,
}

/// A `networking.k8s.io/v1` NetworkPolicy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NetworkPolicy {
    /// Name and namespace.
    pub metadata: Meta,
    /// The policy.
    pub spec: PolicySpec,
}

impl NetworkPolicy {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }

    /// Whether it isolates for (ingress, egress), per `policyTypes` and
    /// its defaults.
    pub fn types(&self) -> (bool, bool) {
        match &self.spec.policy_types {
            Some(t) => (
                t.iter().any(|t| t == "Ingress"),
                t.iter().any(|t| t == "Egress"),
            ),
            None => (true, !self.spec.egress.is_empty()),
        }
    }
}
