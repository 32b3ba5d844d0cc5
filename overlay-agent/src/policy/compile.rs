//! From Pods, Namespaces and NetworkPolicies to the entries of the policy
//! maps of one node ([`Compiled`]).
//!
//! - Every pod address of the cluster gets the label identity of its
//!   (namespace, labels); pods that share them share it, so a rule costs
//!   one entry per remote identity, not per remote pod.
//! - Each local pod selected by a policy of a type is isolated for it;
//!   every rule of those policies adds (local pod, direction, remote
//!   identity, protocol, port prefix) entries. A port range (`endPort`) is
//!   cut into aligned power-of-two blocks, at most 30 prefixes.
//! - `ipBlock`s of one local pod and direction are cut into the regions of
//!   their prefixes and `except`s: the longest prefix of an address gives
//!   the set of ports allowed there, as a CIDR identity shared by every
//!   region (and pod) with the same set.
//! - A rule with an error (an unknown protocol, a bad CIDR or selector, a
//!   bad port range) is left out and reported; the policy still isolates
//!   the pods it selects, and its other rules apply. A policy whose own
//!   pod selector is broken selects nothing and is reported.
//!
//! Cost, for P policies, R rules each, I identities, L local pods: the
//! compile is O(P·R·I) selector matches plus O(entries); entries of
//! `ovl_policy_v1` are about Σ over local pods of (rules × matched remote
//! identities × port prefixes); `ovl_identities_v1` has one entry per pod
//! of the cluster.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;
use overlay_common::{
    CIDR_IDENTITY_BASE, CIDR_PREFIX_BASE, CidrKey, DIR_EGRESS, DIR_INGRESS, IDENTITY_NONE,
    IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, POLICY_F_EGRESS, POLICY_F_INGRESS, POLICY_PREFIX_ANY,
    POLICY_PREFIX_PORT, POLICY_PREFIX_PROTO, PolicyKey,
};
use serde::{Deserialize, Serialize};

use super::{
    selector::Selector,
    types::{IntOrString, Namespace, NetworkPolicy, Peer, Pod, PolicyPort, Rule},
};

/// The label every Namespace carries with its own name (Kubernetes ≥ 1.21);
/// also assumed for a Namespace not listed yet.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A policy problem, as reported in the log and the status.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Problem {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// What is wrong and what was left out.
    pub message: String,
}

/// One entry of `ovl_policy_v1`: prefix length and key data.
pub type RuleEntry = (u32, PolicyKey);
/// One entry of `ovl_policy_cidrs_v1`: prefix length and key data.
pub type CidrEntry = (u32, CidrKey);

/// Everything the maps of one node should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    /// `ovl_identities_v1`: every pod address of the cluster.
    pub identities: BTreeMap<Ipv4Addr, u32>,
    /// `ovl_policy_eps_v1`: isolated local pods and their `POLICY_F_*`.
    pub endpoints: BTreeMap<Ipv4Addr, u32>,
    /// `ovl_policy_v1`.
    pub rules: BTreeSet<RuleEntry>,
    /// `ovl_policy_cidrs_v1`, with the CIDR identity of each region.
    pub cidrs: BTreeMap<CidrEntry, u32>,
    /// For each isolated local pod (`namespace/name`): the policies
    /// selecting it.
    pub selected: BTreeMap<String, Vec<String>>,
    /// The `namespace/name` of each isolated local pod.
    pub names: BTreeMap<Ipv4Addr, String>,
    /// What could not be applied.
    pub problems: Vec<Problem>,
}

/// A port match of a rule, before named ports are resolved.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PortSpec {
    /// Every protocol and port (a rule without `ports`).
    Any,
    /// Every port of a protocol.
    Proto(u8),
    /// `lo..=hi` of a protocol.
    Range(u8, u16, u16),
    /// A named port of a protocol.
    Named(u8, String),
}

/// A resolved port match: what one or more trie prefixes cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum PortMatch {
    Any,
    Proto(u8),
    Range(u8, u16, u16),
}

/// An `ipBlock` of a local pod and direction: CIDR, excepts, ports.
type Block = (Ipv4Net, Vec<Ipv4Net>, BTreeSet<PortMatch>);

/// The peers of a rule.
#[derive(Clone, Debug, Default)]
struct Peers {
    /// No `from`/`to`: everyone.
    all: bool,
    /// Pod identities selected.
    identities: BTreeSet<u32>,
    /// `ipBlock`s: (cidr, excepts).
    blocks: Vec<(Ipv4Net, Vec<Ipv4Net>)>,
}

/// A rule, checked and with its peers resolved to identities.
#[derive(Clone, Debug)]
struct CheckedRule {
    ports: Vec<PortSpec>,
    peers: Peers,
}

/// A policy, checked.
struct CheckedPolicy {
    key: String,
    namespace: String,
    selector: Selector,
    ingress: Option<Vec<CheckedRule>>,
    egress: Option<Vec<CheckedRule>>,
}

/// Label identities that stay the same across compiles while in use, so
/// that an update rewrites only what changed; a number is never handed out
/// twice, so a map entry left from before can never stand for another
/// label set.
#[derive(Clone, Debug, Default)]
pub struct Identities {
    by_labels: BTreeMap<(String, BTreeMap<String, String>), u32>,
    next_pod: u32,
}

impl Identities {
    /// Takes over the identities an earlier agent left in the identity
    /// map (`current`: address → identity), for the pods that still have
    /// those addresses, so that a restart rewrites nothing. A label set
    /// found with two numbers keeps the first; numbers continue above the
    /// largest seen.
    pub fn seed(&mut self, current: &BTreeMap<Ipv4Addr, u32>, pods: &BTreeMap<String, Pod>) {
        let mut taken: BTreeSet<u32> = self.by_labels.values().copied().collect();
        for pod in pods.values() {
            let Some(id) = pod.ipv4().and_then(|ip| current.get(&ip)).copied() else {
                continue;
            };
            if id == IDENTITY_NONE || id >= CIDR_IDENTITY_BASE || taken.contains(&id) {
                continue;
            }
            let key = (pod.metadata.namespace.clone(), pod.metadata.labels.clone());
            if let std::collections::btree_map::Entry::Vacant(e) = self.by_labels.entry(key) {
                e.insert(id);
                taken.insert(id);
            }
        }
        let max = current
            .values()
            .copied()
            .filter(|id| *id < CIDR_IDENTITY_BASE)
            .max()
            .unwrap_or(0);
        self.next_pod = self.next_pod.max(max);
    }

    fn pod(&mut self, namespace: &str, labels: &BTreeMap<String, String>) -> u32 {
        let key = (namespace.to_owned(), labels.clone());
        if let Some(id) = self.by_labels.get(&key) {
            return *id;
        }
        self.next_pod += 1;
        let id = self.next_pod;
        self.by_labels.insert(key, id);
        id
    }

    /// Forgets label sets no longer in use.
    fn retain(&mut self, pods: &BTreeSet<u32>) {
        self.by_labels.retain(|_, id| pods.contains(id));
    }
}

/// CIDR identities: a function of the set of ports allowed, so the same
/// after a restart. Sets whose hashes collide get the next free numbers,
/// in the (sorted) order they are met.
#[derive(Default)]
struct CidrIds {
    by_ports: BTreeMap<BTreeSet<PortMatch>, u32>,
    used: BTreeSet<u32>,
}

impl CidrIds {
    fn get(&mut self, set: &BTreeSet<PortMatch>) -> u32 {
        if let Some(id) = self.by_ports.get(set) {
            return *id;
        }
        // FNV-1a over the set's debug form: stable across runs.
        let mut h: u32 = 0x811c_9dc5;
        for b in format!("{set:?}").bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        let mut id = CIDR_IDENTITY_BASE | (h & 0x7fff_ffff);
        while id == CIDR_IDENTITY_BASE || self.used.contains(&id) {
            id = CIDR_IDENTITY_BASE | (id.wrapping_add(1) & 0x7fff_ffff);
        }
        self.by_ports.insert(set.clone(), id);
        self.used.insert(id);
        id
    }
}

/// What the compiler reads.
pub struct Inputs<'a> {
    /// Every Pod of the cluster.
    pub pods: &'a BTreeMap<String, Pod>,
    /// Every Namespace, by name.
    pub namespaces: &'a BTreeMap<String, Namespace>,
    /// Every NetworkPolicy, by `namespace/name`.
    pub policies: &'a BTreeMap<String, NetworkPolicy>,
    /// The addresses of this node's pods (its endpoints).
    pub local: &'a BTreeSet<Ipv4Addr>,
}

/// Compiles `inputs`, keeping identities in `ids` stable.
pub fn compile(inputs: &Inputs<'_>, ids: &mut Identities) -> Compiled {
    let mut out = Compiled::default();
    let ns_labels = |ns: &str| -> BTreeMap<String, String> {
        match inputs.namespaces.get(ns) {
            Some(n) => {
                let mut l = n.metadata.labels.clone();
                l.entry(NAMESPACE_NAME_LABEL.into())
                    .or_insert_with(|| ns.to_owned());
                l
            }
            None => BTreeMap::from([(NAMESPACE_NAME_LABEL.to_owned(), ns.to_owned())]),
        }
    };

    // Identities of every pod; the pods of each identity (named ports).
    struct IdentityInfo<'p> {
        namespace: String,
        labels: BTreeMap<String, String>,
        pods: Vec<&'p Pod>,
    }
    let mut by_id: BTreeMap<u32, IdentityInfo<'_>> = BTreeMap::new();
    let mut local_pods: Vec<(Ipv4Addr, &Pod)> = Vec::new();
    for pod in inputs.pods.values() {
        let Some(ip) = pod.ipv4() else { continue };
        let id = ids.pod(&pod.metadata.namespace, &pod.metadata.labels);
        out.identities.insert(ip, id);
        by_id
            .entry(id)
            .or_insert_with(|| IdentityInfo {
                namespace: pod.metadata.namespace.clone(),
                labels: pod.metadata.labels.clone(),
                pods: Vec::new(),
            })
            .pods
            .push(pod);
        if inputs.local.contains(&ip) {
            local_pods.push((ip, pod));
        }
    }
    let ns_label_cache: BTreeMap<&str, BTreeMap<String, String>> = by_id
        .values()
        .map(|i| (i.namespace.as_str(), ns_labels(&i.namespace)))
        .collect();
    let ident_list: Vec<(u32, &str, &BTreeMap<String, String>)> = by_id
        .iter()
        .map(|(id, i)| (*id, i.namespace.as_str(), &i.labels))
        .collect();

    // Check every policy and resolve its peers.
    let mut checked = Vec::new();
    for policy in inputs.policies.values() {
        let key = policy.key();
        let selector = match Selector::new(&policy.spec.pod_selector) {
            Ok(s) => s,
            Err(e) => {
                out.problems.push(Problem {
                    policy: key,
                    message: format!("podSelector: {e}; the policy selects no pod"),
                });
                continue;
            }
        };
        let (ing, eg) = policy.types();
        let mut rules = |rules: &[Rule], egress: bool| -> Vec<CheckedRule> {
            rules
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let dir = if egress { "egress" } else { "ingress" };
                    let peers = if egress { &r.to } else { &r.from };
                    let checked = check_rule(
                        &r.ports,
                        peers,
                        &policy.metadata.namespace,
                        &ident_list,
                        &ns_label_cache,
                    );
                    match checked {
                        Ok(c) => Some(c),
                        Err(e) => {
                            out.problems.push(Problem {
                                policy: key.clone(),
                                message: format!("{dir} rule {i}: {e}; this rule is left out"),
                            });
                            None
                        }
                    }
                })
                .collect()
        };
        let ingress = ing.then(|| rules(&policy.spec.ingress, false));
        let egress = eg.then(|| rules(&policy.spec.egress, true));
        checked.push(CheckedPolicy {
            key,
            namespace: policy.metadata.namespace.clone(),
            selector,
            ingress,
            egress,
        });
    }

    // Per local pod: isolation, rules, ipBlock regions.
    let mut cidr_ids = CidrIds::default();
    for (ip, pod) in &local_pods {
        let ep = ip.octets();
        let mut flags = 0;
        let mut blocks: [Vec<Block>; 2] = [Vec::new(), Vec::new()];
        let mut selecting = Vec::new();
        for p in &checked {
            if p.namespace != pod.metadata.namespace || !p.selector.matches(&pod.metadata.labels) {
                continue;
            }
            selecting.push(p.key.clone());
            for (dir, rules) in [(DIR_INGRESS, &p.ingress), (DIR_EGRESS, &p.egress)] {
                let Some(rules) = rules else { continue };
                flags |= if dir == DIR_INGRESS {
                    POLICY_F_INGRESS
                } else {
                    POLICY_F_EGRESS
                };
                for r in rules {
                    // Named ports: of this pod for ingress, of the remote
                    // pods for egress.
                    let own = resolve(&r.ports, &[pod]);
                    if r.peers.all {
                        blocks[usize::from(dir)].push((
                            Ipv4Net::default(),
                            Vec::new(),
                            if dir == DIR_INGRESS {
                                own.clone()
                            } else {
                                resolve(&r.ports, &[])
                            },
                        ));
                    }
                    // Everyone, with named egress ports: every pod
                    // identity, each with its own pods' port numbers.
                    let remotes: Vec<u32> =
                        if r.peers.all && dir == DIR_EGRESS && has_named(&r.ports) {
                            by_id.keys().copied().collect()
                        } else {
                            r.peers.identities.iter().copied().collect()
                        };
                    for id in remotes {
                        let ports = if dir == DIR_INGRESS {
                            own.clone()
                        } else {
                            resolve(&r.ports, &by_id[&id].pods)
                        };
                        for m in &ports {
                            add_rule(&mut out.rules, ep, dir, id, *m);
                        }
                    }
                    for (net, except) in &r.peers.blocks {
                        blocks[usize::from(dir)].push((
                            *net,
                            except.clone(),
                            if dir == DIR_INGRESS {
                                own.clone()
                            } else {
                                resolve(&r.ports, &[])
                            },
                        ));
                    }
                }
            }
        }
        if flags == 0 {
            continue;
        }
        out.endpoints.insert(*ip, flags);
        out.selected.insert(pod.key(), selecting);
        out.names.insert(*ip, pod.key());
        for dir in [DIR_INGRESS, DIR_EGRESS] {
            for (prefix, ports) in regions(&blocks[usize::from(dir)]) {
                let id = if ports.is_empty() {
                    IDENTITY_NONE
                } else {
                    let id = cidr_ids.get(&ports);
                    for m in &ports {
                        add_rule(&mut out.rules, ep, dir, id, *m);
                    }
                    id
                };
                out.cidrs.insert(
                    (
                        CIDR_PREFIX_BASE + u32::from(prefix.prefix_len()),
                        CidrKey {
                            endpoint: ep,
                            direction: dir,
                            pad: [0; 3],
                            addr: prefix.network().octets(),
                        },
                    ),
                    id,
                );
            }
        }
    }
    let used_pods: BTreeSet<u32> = by_id.keys().copied().collect();
    ids.retain(&used_pods);
    out.problems.sort();
    out
}

fn has_named(ports: &[PortSpec]) -> bool {
    ports.iter().any(|p| matches!(p, PortSpec::Named(..)))
}

/// The port matches of `ports`, named ports looked up in `pods`' container
/// ports (same name and protocol); a name no pod has matches nothing.
fn resolve(ports: &[PortSpec], pods: &[&Pod]) -> BTreeSet<PortMatch> {
    let mut out = BTreeSet::new();
    for p in ports {
        match p {
            PortSpec::Any => {
                out.insert(PortMatch::Any);
            }
            PortSpec::Proto(proto) => {
                out.insert(PortMatch::Proto(*proto));
            }
            PortSpec::Range(proto, lo, hi) => {
                out.insert(PortMatch::Range(*proto, *lo, *hi));
            }
            PortSpec::Named(proto, name) => {
                for pod in pods {
                    for cp in pod.named_ports() {
                        if cp.name == *name
                            && protocol(&cp.protocol) == Some(*proto)
                            && cp.container_port != 0
                        {
                            out.insert(PortMatch::Range(
                                *proto,
                                cp.container_port,
                                cp.container_port,
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// The trie entries of one port match for (ep, dir, remote).
fn add_rule(rules: &mut BTreeSet<RuleEntry>, ep: [u8; 4], dir: u8, remote: u32, m: PortMatch) {
    let key = |proto: u8, port: u16| PolicyKey {
        endpoint: ep,
        direction: dir,
        pad: [0; 3],
        remote: remote.to_be_bytes(),
        proto,
        port: port.to_be_bytes(),
        pad2: 0,
    };
    match m {
        PortMatch::Any => {
            rules.insert((POLICY_PREFIX_ANY, key(0, 0)));
        }
        PortMatch::Proto(p) => {
            rules.insert((POLICY_PREFIX_PROTO, key(p, 0)));
        }
        PortMatch::Range(p, lo, hi) => {
            for (base, bits) in port_blocks(lo, hi) {
                rules.insert((POLICY_PREFIX_PORT - bits, key(p, base)));
            }
        }
    }
}

/// `lo..=hi` as aligned blocks `(base, k)` of `2^k` ports each, fewest
/// first-to-last.
pub fn port_blocks(lo: u16, hi: u16) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        let mut k = if lo == 0 {
            16
        } else {
            lo.trailing_zeros().min(16)
        };
        while k > 0 && lo + (1 << k) - 1 > hi {
            k -= 1;
        }
        out.push((lo as u16, k));
        lo += 1 << k;
    }
    out
}

/// The IP protocol of a `protocol` field (empty: TCP).
fn protocol(s: &str) -> Option<u8> {
    match s {
        "" | "TCP" => Some(IPPROTO_TCP),
        "UDP" => Some(IPPROTO_UDP),
        "SCTP" => Some(IPPROTO_SCTP),
        _ => None,
    }
}

/// Checks one rule; peers are matched against `identities` (id,
/// namespace, labels, namespace labels by namespace).
fn check_rule(
    ports: &[PolicyPort],
    peers: &[Peer],
    policy_ns: &str,
    identities: &[(u32, &str, &BTreeMap<String, String>)],
    ns_labels: &BTreeMap<&str, BTreeMap<String, String>>,
) -> Result<CheckedRule, String> {
    let mut specs = Vec::new();
    if ports.is_empty() {
        specs.push(PortSpec::Any);
    }
    for p in ports {
        let name = p.protocol.as_deref().unwrap_or("TCP");
        let proto = protocol(name)
            .ok_or_else(|| format!("unsupported protocol {name:?} (TCP, UDP, SCTP)"))?;
        let number = |v: i64| -> Result<u16, String> {
            u16::try_from(v)
                .ok()
                .filter(|n| *n != 0)
                .ok_or_else(|| format!("port {v} is outside 1..65535"))
        };
        // A port given as a number, or as a string holding one, is a
        // number; any other string names a container port.
        let (numeric, named) = match &p.port {
            Some(IntOrString::Int(n)) => (Some(*n), None),
            Some(IntOrString::String(s)) => match s.parse::<i64>() {
                Ok(n) => (Some(n), None),
                Err(_) => (None, Some(s.as_str())),
            },
            None => (None, None),
        };
        specs.push(match (numeric, named, p.end_port) {
            (Some(n), _, end) => {
                let lo = number(n)?;
                let hi = match end {
                    Some(e) => number(e)?,
                    None => lo,
                };
                if hi < lo {
                    return Err(format!("endPort {hi} is below port {lo}"));
                }
                PortSpec::Range(proto, lo, hi)
            }
            (None, Some(s), Some(_)) => return Err(format!("endPort with the named port {s:?}")),
            (None, Some(""), None) => return Err("empty port name".into()),
            (None, Some(s), None) => PortSpec::Named(proto, s.to_owned()),
            (None, None, None) => PortSpec::Proto(proto),
            (None, None, Some(_)) => return Err("endPort without port".into()),
        });
    }

    let mut out = Peers {
        all: peers.is_empty(),
        ..Default::default()
    };
    for peer in peers {
        if let Some(b) = &peer.ip_block {
            if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
                return Err("a peer with ipBlock and a selector".into());
            }
            if b.cidr.contains(':') {
                // IPv6: this network is IPv4 only; nothing to match.
                continue;
            }
            let net: Ipv4Net = b
                .cidr
                .parse()
                .map_err(|_| format!("ipBlock cidr {:?} is not an IPv4 CIDR", b.cidr))?;
            let mut except = Vec::new();
            for e in &b.except {
                if e.contains(':') {
                    continue;
                }
                let x: Ipv4Net = e
                    .parse()
                    .map_err(|_| format!("ipBlock except {e:?} is not an IPv4 CIDR"))?;
                if !net.contains(&x) {
                    return Err(format!("ipBlock except {e} is not inside {}", b.cidr));
                }
                except.push(x.trunc());
            }
            out.blocks.push((net.trunc(), except));
            continue;
        }
        let pods = match &peer.pod_selector {
            Some(s) => Selector::new(s).map_err(|e| format!("podSelector: {e}"))?,
            None => Selector::everything(),
        };
        let namespaces = match &peer.namespace_selector {
            Some(s) => Some(Selector::new(s).map_err(|e| format!("namespaceSelector: {e}"))?),
            None if peer.pod_selector.is_none() => {
                return Err("an empty peer (no podSelector, namespaceSelector or ipBlock)".into());
            }
            None => None,
        };
        for (id, ns, labels) in identities {
            let ns_ok = match &namespaces {
                Some(sel) => ns_labels.get(ns).is_some_and(|l| sel.matches(l)),
                None => *ns == policy_ns,
            };
            if ns_ok && pods.matches(labels) {
                out.identities.insert(*id);
            }
        }
    }
    Ok(CheckedRule {
        ports: specs,
        peers: out,
    })
}

/// The regions of a set of `ipBlock` rules: for every prefix among their
/// CIDRs and excepts, the ports allowed to an address whose longest
/// matching prefix it is (the rules whose CIDR holds it and none of whose
/// excepts does).
fn regions(blocks: &[Block]) -> BTreeMap<Ipv4Net, BTreeSet<PortMatch>> {
    let prefixes: BTreeSet<Ipv4Net> = blocks
        .iter()
        .flat_map(|(net, except, _)| std::iter::once(*net).chain(except.iter().copied()))
        .collect();
    prefixes
        .into_iter()
        .map(|p| {
            let ports = blocks
                .iter()
                .filter(|(net, except, _)| {
                    net.contains(&p) && !except.iter().any(|e| e.contains(&p))
                })
                .flat_map(|(_, _, ports)| ports.iter().copied())
                .collect();
            (p, ports)
        })
        .collect()
}
