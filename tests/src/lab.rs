//! A cluster in network namespaces: nodes joined by an underlay, pods wired
//! to their node by veth pairs, and one of several ways of carrying pod
//! traffic between nodes (ours, the kernel's VXLAN device, plain routes).
//! Our datapath with `--encryption wireguard` on top is
//! [`Lab::encrypt_with_wireguard`] (`crate::lab_encryption`).

use std::{net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;
use overlay_agent::{datapath::Datapath, maps::Maps};
use overlay_common::{
    CONFIG_F_READY, DEFAULT_VNI, DEFAULT_VXLAN_PORT, Endpoint, NodeConfig, POD_GATEWAY,
    VXLAN_OVERHEAD, vtep_mac,
};

use crate::netns::{Netns, unique_tag};

/// Name of every node's underlay interface.
pub const UPLINK: &str = "ul0";
/// Underlay MTU.
pub const UNDERLAY_MTU: u32 = 1500;
/// Name of the kernel VXLAN device in [`Mode::KernelVxlan`].
pub const KERNEL_VXLAN_DEV: &str = "vxlan0";

/// How a node carries pod traffic to other nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Our eBPF datapath (TC programs, pinned maps).
    Overlay,
    /// A Linux `vxlan` device with static FDB and neighbour entries, pods
    /// routed through it (Flannel's VXLAN backend). Port and VNI as ours,
    /// device MAC = the node's VTEP MAC, so it interoperates with `Overlay`.
    KernelVxlan,
    /// Plain routes to the other nodes' blocks via their underlay address,
    /// no encapsulation, full MTU.
    PlainRouting,
}

/// How the underlay between the nodes carries frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Underlay {
    /// Plain veth pairs: TSO/GSO on, GRO off, so whole GSO packets (tens
    /// of KB) cross the underlay, which no physical wire does.
    Veth,
    /// Veth pairs made NIC-like on both ends of every underlay link
    /// (`ethtool -K tso off gso off gro on`): the sender's stack cuts every
    /// packet to the MTU before it crosses, the receiver's GRO merges them
    /// again, as a physical NIC and its driver do.
    Wire,
}

impl Underlay {
    /// Both, for tests and the bench that run in each.
    pub const ALL: [Underlay; 2] = [Underlay::Wire, Underlay::Veth];

    /// `wire` or `veth`, as the `--underlay` flags spell it.
    pub fn name(self) -> &'static str {
        match self {
            Underlay::Veth => "veth",
            Underlay::Wire => "wire",
        }
    }

    /// The mode called `name` ([`Underlay::name`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|u| u.name() == name)
    }
}

/// What to build.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// One entry per node.
    pub modes: Vec<Mode>,
    /// Pods on each node.
    pub pods_per_node: usize,
    /// Leave the `from_pod`/`from_uplink` attachments and map entries to the
    /// caller (for tests that install the datapath another way).
    pub skip_datapath: bool,
    /// Pod MTU instead of the mode's default ([`Lab::pod_mtu`]).
    pub pod_mtu: Option<u32>,
    /// How the underlay carries frames.
    pub underlay: Underlay,
    /// This node sits on a subnet of its own ([`ROUTED_SUBNET`]) behind a
    /// router namespace on the underlay switch: the others reach it
    /// through a gateway, so it is not on-link for them (nor they for it).
    /// Needs the switch, so at least three nodes.
    pub behind_router: Option<usize>,
}

impl LabOptions {
    /// `nodes` nodes all in `mode`, `pods` pods each.
    pub fn uniform(mode: Mode, nodes: usize, pods: usize) -> Self {
        Self {
            modes: vec![mode; nodes],
            pods_per_node: pods,
            skip_datapath: false,
            pod_mtu: None,
            underlay: Underlay::Veth,
            behind_router: None,
        }
    }

    /// The same on another underlay.
    pub fn on(self, underlay: Underlay) -> Self {
        Self { underlay, ..self }
    }
}

/// A pod: its own netns with `eth0`, wired to its node.
pub struct Pod {
    /// The pod's namespace.
    pub ns: Netns,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Host-side veth name in the node's namespace.
    pub host_if: String,
    /// MAC of the pod's `eth0`.
    pub mac: [u8; 6],
    /// MAC of the host-side veth.
    pub host_mac: [u8; 6],
    /// Index of its node in [`Lab::nodes`].
    pub node: usize,
}

/// A node: a namespace with the uplink, its block and its pods.
pub struct Node {
    /// The node's namespace.
    pub ns: Netns,
    /// Underlay address.
    pub ip: Ipv4Addr,
    /// The node's pod block.
    pub block: Ipv4Net,
    /// How it carries pod traffic.
    pub mode: Mode,
    /// Pin directory of its datapath (used in [`Mode::Overlay`]).
    pub pin_dir: PathBuf,
    /// Its pods.
    pub pods: Vec<Pod>,
}

impl Node {
    /// Short name of the node's mode.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Overlay => "eBPF overlay",
            Mode::KernelVxlan => "kernel vxlan",
            Mode::PlainRouting => "plain routing",
        }
    }
}

/// The whole topology; dropping it removes every namespace and pin.
pub struct Lab {
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The underlay switch when there are more than two nodes.
    pub switch: Option<Netns>,
    /// The router in front of [`LabOptions::behind_router`]'s node.
    pub router: Option<Netns>,
    /// Unique tag of this lab's names.
    pub tag: String,
    /// How the underlay carries frames.
    pub underlay: Underlay,
}

/// Address of node `i` (0-based) on the underlay.
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 31, 0, 1 + i as u8)
}

/// The subnet of a node behind the router ([`LabOptions::behind_router`]);
/// the node is `.1 + i`, the router `.254`.
pub const ROUTED_SUBNET: [u8; 3] = [172, 31, 1];
/// The router's address on the nodes' subnet (their gateway to
/// [`ROUTED_SUBNET`]).
pub const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 254);

/// Address of node `i` when it sits behind the router.
pub fn routed_node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        ROUTED_SUBNET[0],
        ROUTED_SUBNET[1],
        ROUTED_SUBNET[2],
        1 + i as u8,
    )
}

/// Pod block of node `i`.
pub fn node_block(i: usize) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 32, 1 + i as u8, 0), 24).expect("valid /24")
}

/// Address of pod `j` on node `i`.
pub fn pod_ip(i: usize, j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 32, 1 + i as u8, 10 + j as u8)
}

/// Makes one end of an underlay veth behave like a NIC: no segmentation
/// offload (the stack cuts packets to the MTU before they cross), GRO on
/// receive (which also gives the veth a NAPI context, where GRO runs).
pub fn make_wire(ns: &Netns, dev: &str) {
    ns.exec(&[
        "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "on",
    ]);
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Lab {
    /// Builds the topology and, for [`Mode::Overlay`] nodes, loads and fills
    /// the datapath through the agent library.
    pub fn new(opts: &LabOptions) -> Self {
        let tag = unique_tag();
        let mut lab = Lab {
            nodes: Vec::new(),
            switch: None,
            router: None,
            tag: tag.clone(),
            underlay: opts.underlay,
        };
        for (i, mode) in opts.modes.iter().enumerate() {
            let ns = Netns::new(&tag, &format!("n{}", i + 1));
            ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            lab.nodes.push(Node {
                ns,
                ip: if opts.behind_router == Some(i) {
                    routed_node_ip(i)
                } else {
                    node_ip(i)
                },
                block: node_block(i),
                mode: *mode,
                pin_dir: PathBuf::from(format!("/sys/fs/bpf/ovl-{tag}-n{}", i + 1)),
                pods: Vec::new(),
            });
        }
        lab.wire_underlay(opts.behind_router);
        for i in 0..lab.nodes.len() {
            for j in 0..opts.pods_per_node {
                lab.add_pod(i, j, opts.pod_mtu);
            }
        }
        for i in 0..lab.nodes.len() {
            match lab.nodes[i].mode {
                Mode::Overlay if !opts.skip_datapath => lab.install_overlay(i),
                Mode::Overlay => {}
                Mode::KernelVxlan => lab.install_kernel_vxlan(i),
                Mode::PlainRouting => lab.install_plain_routes(i),
            }
        }
        lab
    }

    fn wire_underlay(&mut self, behind_router: Option<usize>) {
        let n = self.nodes.len();
        assert!(
            behind_router.is_none() || n > 2,
            "a node behind a router needs the switch: three nodes or more"
        );
        if n == 2 {
            Netns::veth_pair(&self.nodes[0].ns, UPLINK, &self.nodes[1].ns, UPLINK);
        } else {
            let sw = Netns::new(&self.tag, "sw");
            sw.ip(&["link", "add", "br0", "type", "bridge"]);
            sw.ip(&["link", "set", "br0", "up"]);
            for (i, node) in self.nodes.iter().enumerate() {
                if behind_router == Some(i) {
                    continue;
                }
                let port = format!("p{}", i + 1);
                Netns::veth_pair(&node.ns, UPLINK, &sw, &port);
                sw.ip(&["link", "set", &port, "master", "br0"]);
                sw.ip(&["link", "set", &port, "up"]);
            }
            self.switch = Some(sw);
        }
        if let Some(r) = behind_router {
            self.wire_router(r);
        }
        for node in &self.nodes {
            node.ns
                .ip(&["addr", "add", &format!("{}/24", node.ip), "dev", UPLINK]);
            node.ns.ip(&["link", "set", UPLINK, "up"]);
        }
        if let Some(r) = behind_router {
            let subnet = format!(
                "{}.{}.{}.0/24",
                ROUTED_SUBNET[0], ROUTED_SUBNET[1], ROUTED_SUBNET[2]
            );
            let router_there = routed_node_ip(253).to_string();
            for (i, node) in self.nodes.iter().enumerate() {
                if i == r {
                    node.ns.ip(&[
                        "route",
                        "add",
                        "default",
                        "via",
                        &router_there,
                        "dev",
                        UPLINK,
                    ]);
                } else {
                    node.ns.ip(&[
                        "route",
                        "add",
                        &subnet,
                        "via",
                        &ROUTER_IP.to_string(),
                        "dev",
                        UPLINK,
                    ]);
                }
            }
        }
        if self.underlay == Underlay::Wire {
            for node in &self.nodes {
                make_wire(&node.ns, UPLINK);
            }
            if let Some(sw) = &self.switch {
                for i in 0..n {
                    if behind_router != Some(i) {
                        make_wire(sw, &format!("p{}", i + 1));
                    }
                }
            }
            if let (Some(sw), Some(rt)) = (&self.switch, &self.router) {
                make_wire(sw, "prt");
                make_wire(rt, "sw0");
                make_wire(rt, "dn0");
            }
        }
    }

    /// A router namespace with one leg on the switch ([`ROUTER_IP`]) and
    /// one to node `r`'s uplink (`.254` of [`ROUTED_SUBNET`]).
    fn wire_router(&mut self, r: usize) {
        let sw = self.switch.as_ref().expect("the switch");
        let rt = Netns::new(&self.tag, "rt");
        rt.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        Netns::veth_pair(&rt, "sw0", sw, "prt");
        sw.ip(&["link", "set", "prt", "master", "br0"]);
        sw.ip(&["link", "set", "prt", "up"]);
        Netns::veth_pair(&rt, "dn0", &self.nodes[r].ns, UPLINK);
        rt.ip(&["addr", "add", &format!("{ROUTER_IP}/24"), "dev", "sw0"]);
        rt.ip(&[
            "addr",
            "add",
            &format!("{}/24", routed_node_ip(253)),
            "dev",
            "dn0",
        ]);
        rt.ip(&["link", "set", "sw0", "up"]);
        rt.ip(&["link", "set", "dn0", "up"]);
        self.router = Some(rt);
    }

    /// Pod MTU for a node's mode.
    pub fn pod_mtu(mode: Mode) -> u32 {
        match mode {
            Mode::PlainRouting => UNDERLAY_MTU,
            Mode::Overlay | Mode::KernelVxlan => UNDERLAY_MTU - VXLAN_OVERHEAD,
        }
    }

    fn add_pod(&mut self, i: usize, j: usize, mtu: Option<u32>) {
        let node = &self.nodes[i];
        let ip = pod_ip(i, j);
        let o = ip.octets();
        let mac = [0x02, 0x50, o[0], o[1], o[2], o[3]];
        let host_mac = [0x02, 0x48, o[0], o[1], o[2], o[3]];
        let host_if = format!("ovlp{}", j + 1);
        let ns = Netns::new(&self.tag, &format!("n{}p{}", i + 1, j + 1));
        let mtu = mtu.unwrap_or(Self::pod_mtu(node.mode)).to_string();
        crate::run_ok(&[
            "ip",
            "link",
            "add",
            &host_if,
            "netns",
            &node.ns.name,
            "address",
            &mac_str(host_mac),
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns.name,
            "address",
            &mac_str(mac),
            "mtu",
            &mtu,
        ]);
        let gw = Ipv4Addr::from(POD_GATEWAY).to_string();
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", &gw, "dev", "eth0", "scope", "link"]);
        ns.ip(&["route", "add", "default", "via", &gw, "dev", "eth0"]);
        ns.ip(&[
            "neigh",
            "add",
            &gw,
            "lladdr",
            &mac_str(host_mac),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
        node.ns.ip(&["link", "set", &host_if, "up"]);
        node.ns
            .ip(&["route", "add", &format!("{ip}/32"), "dev", &host_if]);
        self.nodes[i].pods.push(Pod {
            ns,
            ip,
            host_if,
            mac,
            host_mac,
            node: i,
        });
    }

    /// This node's datapath configuration.
    pub fn node_config(&self, i: usize) -> NodeConfig {
        let node = &self.nodes[i];
        NodeConfig {
            node_ip: node.ip.octets(),
            uplink_ifindex: node.ns.ifindex(UPLINK),
            vxlan_port: DEFAULT_VXLAN_PORT,
            probe_port: 0,
            vni: DEFAULT_VNI,
            mtu: Self::pod_mtu(node.mode),
            flags: CONFIG_F_READY,
        }
    }

    /// Loads the datapath of node `i`, attaches it, creates the GRO tunnel
    /// device and fills its maps: config, every node's block, every other
    /// node as peer, local pods.
    pub fn install_overlay(&self, i: usize) {
        let node = &self.nodes[i];
        let pods: Vec<&str> = node.pods.iter().map(|p| p.host_if.as_str()).collect();
        overlay_agent::netns::run_in(&node.ns.path(), || {
            let mut dp = Datapath::load(&node.pin_dir).expect("load datapath");
            dp.attach_uplink(UPLINK).expect("attach from_uplink");
            for p in &pods {
                dp.attach_pod(p).expect("attach from_pod");
            }
            overlay_agent::netlink::ensure_gro_device(DEFAULT_VXLAN_PORT)
                .expect("GRO tunnel device");
        })
        .expect("enter node netns");
        self.fill_maps(i);
    }

    /// Writes node `i`'s maps (used after installing the datapath).
    pub fn fill_maps(&self, i: usize) {
        let node = &self.nodes[i];
        let mut maps = Maps::open(&node.pin_dir).expect("open pinned maps");
        maps.set_config(&self.node_config(i)).expect("config");
        for (k, other) in self.nodes.iter().enumerate() {
            maps.upsert_route(other.block, other.ip).expect("route");
            if k != i {
                maps.upsert_peer(other.ip).expect("peer");
            }
        }
        for pod in &node.pods {
            let ep = Endpoint {
                ifindex: node.ns.ifindex(&pod.host_if),
                pod_mac: pod.mac,
                host_mac: pod.host_mac,
                flags: 0,
            };
            maps.upsert_endpoint(pod.ip, &ep).expect("endpoint");
        }
    }

    /// Switches every overlay node to direct routing towards every other
    /// (what an agent with `--tunnel direct` writes when all peers are
    /// on-link): each other node's block gets `ROUTE_F_DIRECT`, and each
    /// other node's uplink MAC goes into the peer MAC map. The pods keep the
    /// MTU they were made with (give them [`UNDERLAY_MTU`] through
    /// [`LabOptions::pod_mtu`]).
    pub fn route_directly(&self) {
        let macs: Vec<[u8; 6]> = self
            .nodes
            .iter()
            .map(|n| {
                let text =
                    n.ns.exec(&["cat", &format!("/sys/class/net/{UPLINK}/address")]);
                let mut mac = [0u8; 6];
                for (b, h) in mac.iter_mut().zip(text.trim().split(':')) {
                    *b = u8::from_str_radix(h, 16).expect("a MAC address");
                }
                mac
            })
            .collect();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.mode != Mode::Overlay {
                continue;
            }
            let mut maps = self.maps(i);
            let mut peers = std::collections::BTreeMap::new();
            for (k, other) in self.nodes.iter().enumerate() {
                if k != i {
                    maps.upsert_route_flags(other.block, other.ip, overlay_common::ROUTE_F_DIRECT)
                        .expect("direct route");
                    peers.insert(other.ip, macs[k]);
                }
            }
            maps.sync_peer_macs(&peers).expect("peer MACs");
        }
    }

    /// The maps of node `i`.
    pub fn maps(&self, i: usize) -> Maps {
        Maps::open(&self.nodes[i].pin_dir).expect("open pinned maps")
    }

    fn install_kernel_vxlan(&self, i: usize) {
        let node = &self.nodes[i];
        let ns = &node.ns;
        let port = DEFAULT_VXLAN_PORT.to_string();
        let vni = DEFAULT_VNI.to_string();
        let mtu = (UNDERLAY_MTU - VXLAN_OVERHEAD).to_string();
        ns.ip(&[
            "link",
            "add",
            KERNEL_VXLAN_DEV,
            "type",
            "vxlan",
            "id",
            &vni,
            "local",
            &node.ip.to_string(),
            "dev",
            UPLINK,
            "dstport",
            &port,
            "nolearning",
        ]);
        ns.ip(&[
            "link",
            "set",
            KERNEL_VXLAN_DEV,
            "address",
            &mac_str(vtep_mac(node.ip.octets())),
            "mtu",
            &mtu,
            "up",
        ]);
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/32", node.block.network()),
            "dev",
            KERNEL_VXLAN_DEV,
        ]);
        for (k, other) in self.nodes.iter().enumerate() {
            if k == i {
                continue;
            }
            let gw = other.block.network().to_string();
            let mac = mac_str(vtep_mac(other.ip.octets()));
            ns.ip(&[
                "route",
                "add",
                &other.block.to_string(),
                "via",
                &gw,
                "dev",
                KERNEL_VXLAN_DEV,
                "onlink",
            ]);
            ns.ip(&[
                "neigh",
                "add",
                &gw,
                "lladdr",
                &mac,
                "dev",
                KERNEL_VXLAN_DEV,
                "nud",
                "permanent",
            ]);
            ns.exec(&[
                "bridge",
                "fdb",
                "append",
                &mac,
                "dev",
                KERNEL_VXLAN_DEV,
                "dst",
                &other.ip.to_string(),
            ]);
        }
    }

    fn install_plain_routes(&self, i: usize) {
        for (k, other) in self.nodes.iter().enumerate() {
            if k != i {
                self.nodes[i].ns.ip(&[
                    "route",
                    "add",
                    &other.block.to_string(),
                    "via",
                    &other.ip.to_string(),
                    "dev",
                    UPLINK,
                ]);
            }
        }
    }

    /// Takes node `i`'s port on the underlay switch down (`up == false`) or
    /// back up: the node is cut off from every other node while its own
    /// links, agent and datapath stay as they are.
    pub fn set_switch_port(&self, i: usize, up: bool) {
        let sw = self
            .switch
            .as_ref()
            .expect("a switch (labs of more than two nodes have one)");
        let port = format!("p{}", i + 1);
        sw.ip(&["link", "set", &port, if up { "up" } else { "down" }]);
    }

    /// A host on the underlay switch that is not a node (e.g. an attacker
    /// who can reach the nodes' gossip port): a new namespace named after
    /// `role` with `eth0` at `addr`/24 on the underlay subnet, its switch
    /// port `h<role>`. Dropping the namespace removes the veth pair and so
    /// the port.
    pub fn underlay_host(&self, role: &str, addr: Ipv4Addr) -> Netns {
        let sw = self
            .switch
            .as_ref()
            .expect("a switch (labs of more than two nodes have one)");
        let port: String = format!("h{role}").chars().take(15).collect();
        let host = Netns::new(&self.tag, role);
        Netns::veth_pair(&host, "eth0", sw, &port);
        sw.ip(&["link", "set", &port, "master", "br0"]);
        sw.ip(&["link", "set", &port, "up"]);
        host.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        host.ip(&["link", "set", "eth0", "up"]);
        host
    }

    /// Every pod, node by node.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.nodes.iter().flat_map(|n| n.pods.iter())
    }

    /// Pod `j` of node `i`.
    pub fn pod(&self, i: usize, j: usize) -> &Pod {
        &self.nodes[i].pods[j]
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for node in &self.nodes {
            let _ = overlay_agent::datapath::uninstall(&node.pin_dir);
        }
        // Namespaces go with their `Netns` guards.
    }
}

impl Lab {
    /// Node `i` dies at once, as a host that loses power: its namespace is
    /// deleted, and with it its uplink and the datapath attached there (the
    /// caller stops any process that would keep the namespace alive, such
    /// as its agent, first). Its pins on the host's bpffs stay.
    pub fn delete_node_netns(&self, i: usize) {
        crate::run_ok(&["ip", "netns", "del", &self.nodes[i].ns.name]);
    }

    /// Brings a node deleted by [`Lab::delete_node_netns`] back: a fresh
    /// namespace of the same name, its uplink on its old switch port with
    /// its old address (its pods and datapath are for its agent to
    /// restore).
    pub fn recreate_node_netns(&self, i: usize) {
        let node = &self.nodes[i];
        let sw = self
            .switch
            .as_ref()
            .expect("a switch (labs of more than two nodes have one)");
        crate::run_ok(&["ip", "netns", "add", &node.ns.name]);
        node.ns.ip(&["link", "set", "lo", "up"]);
        node.ns
            .exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        node.ns
            .exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        node.ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let port = format!("p{}", i + 1);
        Netns::veth_pair(&node.ns, UPLINK, sw, &port);
        sw.ip(&["link", "set", &port, "master", "br0"]);
        sw.ip(&["link", "set", &port, "up"]);
        if self.underlay == Underlay::Wire {
            make_wire(&node.ns, UPLINK);
            make_wire(sw, &port);
        }
        node.ns
            .ip(&["addr", "add", &format!("{}/24", node.ip), "dev", UPLINK]);
        node.ns.ip(&["link", "set", UPLINK, "up"]);
    }
}
