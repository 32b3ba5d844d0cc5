//! The cluster topology: which node (by underlay IP) owns which pod address
//! blocks.
//!
//! This is the one seam between where the topology comes from and what
//! consumes it (node IPAM, the routes and peers maps). The agent reads it
//! from a [`tokio::sync::watch`] channel: today a static file feeds that
//! channel once ([`Topology::load`]); gossip will feed it as nodes come and
//! go, without the consumers changing.

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};

use ipnet::Ipv4Net;

/// One node and the blocks it owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Underlay IPv4 address (VXLAN endpoint).
    pub ip: Ipv4Addr,
    /// Pod address blocks the node hands addresses out of.
    pub blocks: Vec<Ipv4Net>,
    /// Whether the node's agent is heard from (gossip's failure detector
    /// holds it alive; always true in a static topology). A node whose
    /// agent is silent stays listed with its blocks: whether it is still
    /// routed is the datapath's liveness to decide ([`crate::liveness`]).
    pub alive: bool,
    /// Its WireGuard key and port, when it encrypts pod traffic (gossip
    /// only; never in a static topology).
    pub wireguard: Option<crate::encryption::announce::Announce>,
}

/// Every node of the cluster, this one included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// Nodes, sorted by address.
    pub nodes: Vec<Node>,
}

/// A topology file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("reading topology file {path}")]
    Read {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("topology line {line}: {msg}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// Two nodes claim overlapping blocks.
    #[error("blocks {a} (node {node_a}) and {b} (node {node_b}) overlap")]
    Overlap {
        /// First block.
        a: Ipv4Net,
        /// Its node.
        node_a: Ipv4Addr,
        /// Second block.
        b: Ipv4Net,
        /// Its node.
        node_b: Ipv4Addr,
    },
}

impl Topology {
    /// Reads a topology file: one node per line, `NODE_IP BLOCK [BLOCK...]`,
    /// `#` starts a comment. Example:
    ///
    /// ```text
    /// 172.31.0.1 10.32.1.0/24
    /// 172.31.0.2 10.32.2.0/24 10.32.12.0/24
    /// ```
    pub fn load(path: &Path) -> Result<Self, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses the text of a topology file (see [`Topology::load`]).
    pub fn parse(text: &str) -> Result<Self, TopologyError> {
        let mut nodes: BTreeMap<Ipv4Addr, Vec<Ipv4Net>> = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let syntax = |msg: String| TopologyError::Syntax { line: i + 1, msg };
            let mut words = line.split_whitespace();
            let ip_word = words.next().expect("line is not empty");
            let ip: Ipv4Addr = ip_word
                .parse()
                .map_err(|_| syntax(format!("{ip_word:?} is not a node IPv4 address")))?;
            let mut blocks = Vec::new();
            for w in words {
                let net: Ipv4Net = w
                    .parse()
                    .map_err(|_| syntax(format!("{w:?} is not a block like 10.32.1.0/24")))?;
                if net.trunc() != net {
                    return Err(syntax(format!(
                        "{w} has host bits set (did you mean {}?)",
                        net.trunc()
                    )));
                }
                blocks.push(net);
            }
            if nodes.insert(ip, blocks).is_some() {
                return Err(syntax(format!("node {ip} is listed twice")));
            }
        }
        let topo = Topology {
            nodes: nodes
                .into_iter()
                .map(|(ip, blocks)| Node {
                    ip,
                    blocks,
                    alive: true,
                    wireguard: None,
                })
                .collect(),
        };
        topo.check_overlaps()?;
        Ok(topo)
    }

    fn check_overlaps(&self) -> Result<(), TopologyError> {
        let all: Vec<(Ipv4Net, Ipv4Addr)> = self
            .nodes
            .iter()
            .flat_map(|n| n.blocks.iter().map(move |b| (*b, n.ip)))
            .collect();
        for (i, (a, node_a)) in all.iter().enumerate() {
            for (b, node_b) in &all[i + 1..] {
                if a.contains(b) || b.contains(a) {
                    return Err(TopologyError::Overlap {
                        a: *a,
                        node_a: *node_a,
                        b: *b,
                        node_b: *node_b,
                    });
                }
            }
        }
        Ok(())
    }

    /// The nodes whose agents are heard from.
    pub fn live_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.alive)
    }

    /// The blocks `node` owns (empty if it is not listed).
    pub fn blocks_of(&self, node: Ipv4Addr) -> Vec<Ipv4Net> {
        self.nodes
            .iter()
            .find(|n| n.ip == node)
            .map(|n| n.blocks.clone())
            .unwrap_or_default()
    }

    /// What `ovl_routes_v1` must hold: every block of every node for which
    /// `routed` holds, ours included (the datapath hands traffic for our
    /// own blocks to the host).
    pub fn routes(&self, routed: impl Fn(&Node) -> bool) -> BTreeMap<Ipv4Net, Ipv4Addr> {
        self.nodes
            .iter()
            .filter(|n| routed(n))
            .flat_map(|n| n.blocks.iter().map(move |b| (*b, n.ip)))
            .collect()
    }

    /// What `ovl_peers_v1` must hold: every node but `me`, and whether it
    /// is routed (`PEER_F_ACTIVE`: its VXLAN accepted) or only known (its
    /// liveness probes answered).
    pub fn peers(&self, me: Ipv4Addr, routed: impl Fn(&Node) -> bool) -> BTreeMap<Ipv4Addr, bool> {
        self.nodes
            .iter()
            .filter(|n| n.ip != me)
            .map(|n| (n.ip, routed(n)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topology_file_parses_into_routes_and_peers() {
        let t = Topology::parse(
            "# lab\n172.31.0.2 10.32.2.0/24 10.32.12.0/24\n\n172.31.0.1 10.32.1.0/24 # me\n",
        )
        .unwrap();
        let me: Ipv4Addr = "172.31.0.1".parse().unwrap();
        assert_eq!(t.blocks_of(me), vec!["10.32.1.0/24".parse().unwrap()]);
        assert_eq!(t.routes(|_| true).len(), 3);
        assert_eq!(t.routes(|n| n.ip == me).len(), 1);
        assert_eq!(
            t.peers(me, |_| true),
            BTreeMap::from([("172.31.0.2".parse::<Ipv4Addr>().unwrap(), true)])
        );
        assert!(
            t.nodes.iter().all(|n| n.alive),
            "a static topology is alive"
        );
        assert_eq!(t.nodes[0].ip, me, "sorted by address");
    }

    #[test]
    fn bad_topologies_name_the_line_and_the_problem() {
        for (text, needle) in [
            ("x 10.32.1.0/24", "line 1: \"x\" is not a node"),
            (
                "172.31.0.1 10.32.1.0",
                "line 1: \"10.32.1.0\" is not a block",
            ),
            (
                "\n172.31.0.1 10.32.1.1/24",
                "line 2: 10.32.1.1/24 has host bits",
            ),
            (
                "172.31.0.1 10.32.1.0/24\n172.31.0.1",
                "line 2: node 172.31.0.1 is listed twice",
            ),
            (
                "172.31.0.1 10.32.0.0/16\n172.31.0.2 10.32.5.0/24",
                "10.32.0.0/16 (node 172.31.0.1) and 10.32.5.0/24 (node 172.31.0.2) overlap",
            ),
        ] {
            let e = Topology::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
