//! The two TC programs run through `BPF_PROG_TEST_RUN` on hand-crafted
//! frames: verdicts, exact output bytes and counters.
//!
//! Each test gets a network namespace of its own with an uplink `ul0`
//! (fixed MAC, 172.31.0.1/24, forwarding on, a permanent neighbour
//! 172.31.0.2) so that `bpf_fib_lookup` answers deterministically, and a
//! datapath loaded with its own pin directory. Programs run on a thread
//! inside that namespace, so their FIB lookups see it.
//!
//! Expected bytes are built here from scratch (own header builders and own
//! checksum), independently of the code under test. No packet is ever sent:
//! the kernel runs the program on a private copy of the buffer.

use std::{
    error::Error,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use overlay_agent::{
    datapath::Datapath,
    maps::{Counters, Maps},
};
use overlay_common::{
    CONFIG_F_READY, ENCRYPTION_F_ON, Encryption, Endpoint, NodeConfig, PROG_FROM_POD,
    PROG_FROM_UPLINK, PROG_FROM_WIREGUARD, ROUTE_F_DIRECT, ROUTE_F_ENCRYPT, Stat,
};
use overlay_tests::{Netns, netns::unique_tag, require_privileges};

// ---------------------------------------------------------------------------
// The node under test and its surroundings.
// ---------------------------------------------------------------------------

/// This node's underlay address (on `ul0`).
const NODE: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 1);
/// The other node: a peer, owner of 10.32.2.0/24, permanent neighbour on `ul0`.
const PEER: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 2);
/// An underlay address that is not in the peer map.
const STRANGER: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 9);
/// MAC of `ul0`.
const UL0_MAC: [u8; 6] = [0x02, 0xaa, 0x00, 0x00, 0x00, 0x01];
/// MAC of the neighbour entry for [`PEER`].
const PEER_MAC: [u8; 6] = [0x02, 0xbb, 0x00, 0x00, 0x00, 0x02];

/// The local pod (an endpoint in the map).
const LOCAL_POD: Ipv4Addr = Ipv4Addr::new(10, 32, 1, 10);
/// Another address in our block that is not an endpoint.
const LOCAL_NO_POD: Ipv4Addr = Ipv4Addr::new(10, 32, 1, 77);
/// A pod in the peer's block.
const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(10, 32, 2, 10);
/// A second local pod (an endpoint on its own interface, `pod1`).
const NEIGHBOUR_POD: Ipv4Addr = Ipv4Addr::new(10, 32, 1, 11);
/// MAC of the local pod's interface.
const POD_MAC: [u8; 6] = [0x02, 0x50, 0x0a, 0x20, 0x01, 0x0a];
/// MAC of the local pod's host-side veth.
const HOST_MAC: [u8; 6] = [0x02, 0x48, 0x0a, 0x20, 0x01, 0x0a];
/// MACs a sending pod's frame carries before the program touches it.
const SENDER_MAC: [u8; 6] = [0x02, 0x50, 0x0a, 0x20, 0x01, 0x0b];
const SENDER_GW_MAC: [u8; 6] = [0x02, 0x48, 0x0a, 0x20, 0x01, 0x0b];

/// VTEP MAC of 172.31.0.1 and 172.31.0.2: `0e:4f` + the node address.
const NODE_VTEP_MAC: [u8; 6] = [0x0e, 0x4f, 172, 31, 0, 1];
const PEER_VTEP_MAC: [u8; 6] = [0x0e, 0x4f, 172, 31, 0, 2];

const VXLAN_PORT: u16 = 6784;
const PROBE_PORT: u16 = 6785;
const VNI: u32 = 1;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// Outer Ethernet + IPv4 + UDP + VXLAN + inner Ethernet.
const ENCAP_LEN: usize = 14 + 20 + 8 + 8 + 14;

// ---------------------------------------------------------------------------
// Packet building, independent of the datapath's own code.
// ---------------------------------------------------------------------------

/// RFC 1071 Internet checksum over `data` (odd length padded with zero).
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Checksum of an L4 segment with the IPv4 pseudo-header.
fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut buf = Vec::with_capacity(12 + segment.len());
    buf.extend_from_slice(&src.octets());
    buf.extend_from_slice(&dst.octets());
    buf.push(0);
    buf.push(proto);
    buf.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    buf.extend_from_slice(segment);
    inet_checksum(&buf)
}

/// An Ethernet frame.
fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 header, every field settable.
#[derive(Clone, Debug)]
struct Ipv4 {
    tos: u8,
    id: u16,
    /// Flags and fragment offset (DF = 0x4000, MF = 0x2000).
    frag: u16,
    ttl: u8,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    /// Option bytes, a multiple of 4.
    options: Vec<u8>,
}

impl Ipv4 {
    fn new(proto: u8, src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Self {
            tos: 0,
            id: 0x1c46,
            frag: 0x4000,
            ttl: 64,
            proto,
            src,
            dst,
            options: Vec::new(),
        }
    }

    /// The packet: header (valid checksum) followed by `payload`.
    fn packet(&self, payload: &[u8]) -> Vec<u8> {
        assert!(self.options.len().is_multiple_of(4) && self.options.len() <= 40);
        let hlen = 20 + self.options.len();
        let total = (hlen + payload.len()) as u16;
        let mut p = Vec::with_capacity(hlen + payload.len());
        p.push(0x40 | (hlen / 4) as u8);
        p.push(self.tos);
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(&self.frag.to_be_bytes());
        p.push(self.ttl);
        p.push(self.proto);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.src.octets());
        p.extend_from_slice(&self.dst.octets());
        p.extend_from_slice(&self.options);
        let csum = inet_checksum(&p[..hlen]);
        p[10..12].copy_from_slice(&csum.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }
}

/// A UDP datagram with a valid checksum.
fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(8 + payload.len());
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(payload);
    let csum = match l4_checksum(src, dst, PROTO_UDP, &s) {
        0 => 0xffff,
        c => c,
    };
    s[6..8].copy_from_slice(&csum.to_be_bytes());
    s
}

/// A TCP SYN (no options) with a valid checksum.
fn tcp_syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut s = Vec::with_capacity(20);
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // sequence number
    s.extend_from_slice(&0u32.to_be_bytes()); // acknowledgement number
    s.push(5 << 4); // data offset
    s.push(0x02); // SYN
    s.extend_from_slice(&64240u16.to_be_bytes()); // window
    s.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    let csum = l4_checksum(src, dst, PROTO_TCP, &s);
    s[16..18].copy_from_slice(&csum.to_be_bytes());
    s
}

/// An ICMP echo request with a valid checksum.
fn icmp_echo(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut s = vec![8, 0, 0, 0];
    s.extend_from_slice(&id.to_be_bytes());
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(payload);
    let csum = inet_checksum(&s);
    s[2..4].copy_from_slice(&csum.to_be_bytes());
    s
}

/// An ARP request (Ethernet/IPv4) as an Ethernet payload.
fn arp_request(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01];
    a.extend_from_slice(&sender_mac);
    a.extend_from_slice(&sender_ip.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target_ip.octets());
    a
}

/// A small IPv6/UDP packet (fd00::1 → fd00::2) as an Ethernet payload.
fn ipv6_udp() -> Vec<u8> {
    let payload = b"six";
    let udp_len = (8 + payload.len()) as u16;
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.push(PROTO_UDP);
    p.push(64);
    let mut src = [0u8; 16];
    src[0] = 0xfd;
    src[15] = 1;
    let mut dst = src;
    dst[15] = 2;
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&5000u16.to_be_bytes());
    p.extend_from_slice(&VXLAN_PORT.to_be_bytes());
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// A UDP/IPv4 packet between two pods.
fn pod_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    Ipv4::new(PROTO_UDP, src, dst).packet(&udp(src, dst, sport, dport, payload))
}

/// What a pod sends to its gateway: `ip` in an Ethernet frame.
fn from_pod_frame(ip: &[u8]) -> Vec<u8> {
    ethernet(SENDER_GW_MAC, SENDER_MAC, ETH_P_IP, ip)
}

/// A VXLAN frame as it arrives on `ul0`, every field settable.
#[derive(Clone, Debug)]
struct Vxlan {
    outer: Ipv4,
    sport: u16,
    dport: u16,
    flags: u8,
    vni: u32,
    inner_dmac: [u8; 6],
    inner_smac: [u8; 6],
    inner_ethertype: u16,
    /// The inner L3 packet (or whatever the inner frame carries).
    inner: Vec<u8>,
}

impl Vxlan {
    /// From [`PEER`] to us, VNI 1, inner packet `inner` (IPv4).
    fn new(inner: Vec<u8>) -> Self {
        let mut outer = Ipv4::new(PROTO_UDP, PEER, NODE);
        outer.id = 0;
        Self {
            outer,
            sport: 51234,
            dport: VXLAN_PORT,
            flags: 0x08,
            vni: VNI,
            inner_dmac: NODE_VTEP_MAC,
            inner_smac: PEER_VTEP_MAC,
            inner_ethertype: ETH_P_IP,
            inner,
        }
    }

    fn frame(&self) -> Vec<u8> {
        let inner = ethernet(
            self.inner_dmac,
            self.inner_smac,
            self.inner_ethertype,
            &self.inner,
        );
        let vni = self.vni.to_be_bytes();
        let mut vx = vec![self.flags, 0, 0, 0, vni[1], vni[2], vni[3], 0];
        vx.extend_from_slice(&inner);
        let mut u = Vec::with_capacity(8 + vx.len());
        u.extend_from_slice(&self.sport.to_be_bytes());
        u.extend_from_slice(&self.dport.to_be_bytes());
        u.extend_from_slice(&((8 + vx.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(&vx);
        ethernet(UL0_MAC, PEER_MAC, ETH_P_IP, &self.outer.packet(&u))
    }
}

/// A typical inner packet of a VXLAN frame: remote pod → local pod.
fn remote_to_local() -> Vec<u8> {
    pod_udp(REMOTE_POD, LOCAL_POD, 33333, 8080, b"hello from node 2")
}

// ---------------------------------------------------------------------------
// Assertion helpers.
// ---------------------------------------------------------------------------

fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .enumerate()
        .map(|(i, row)| {
            let bytes: Vec<String> = row.iter().map(|x| format!("{x:02x}")).collect();
            format!("  {:04x}: {}", i * 16, bytes.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: bytes differ (got {} bytes, want {}), first difference at offset {first}\n\
         got:\n{}\nwant:\n{}",
        got.len(),
        want.len(),
        hex(got),
        hex(want)
    );
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn ip_at(b: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[off], b[off + 1], b[off + 2], b[off + 3])
}

fn error_chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn verdict_name(v: u32) -> &'static str {
    match v {
        TC_ACT_OK => "TC_ACT_OK",
        TC_ACT_SHOT => "TC_ACT_SHOT",
        TC_ACT_REDIRECT => "TC_ACT_REDIRECT",
        _ => "unexpected TC action",
    }
}

/// One program run: what it returned, the frame it left and which counters moved.
struct Run {
    verdict: u32,
    out: Vec<u8>,
    delta: Counters,
}

impl Run {
    /// Asserts the verdict and that `stat` went up by exactly one while no
    /// other counter moved.
    fn expect(&self, what: &str, verdict: u32, stat: Stat) {
        assert_eq!(
            self.verdict,
            verdict,
            "{what}: verdict {} ({}), want {verdict} ({}); counters moved: {:?}",
            self.verdict,
            verdict_name(self.verdict),
            verdict_name(verdict),
            self.moved()
        );
        assert_eq!(
            self.moved(),
            vec![(stat.name(), 1)],
            "{what}: want exactly {} +1 and no other counter moving",
            stat.name()
        );
    }

    fn moved(&self) -> Vec<(&'static str, u64)> {
        Stat::ALL
            .iter()
            .map(|s| (s.name(), self.delta.get(*s)))
            .filter(|(_, n)| *n != 0)
            .collect()
    }

    /// The program let the frame through, byte for byte.
    fn expect_passed(&self, what: &str, input: &[u8], stat: Stat) {
        self.expect(what, TC_ACT_OK, stat);
        assert_bytes(&format!("{what}: passed frame"), &self.out, input);
    }

    /// The program dropped the frame (without rewriting it first).
    fn expect_dropped(&self, what: &str, input: &[u8], stat: Stat) {
        self.expect(what, TC_ACT_SHOT, stat);
        assert_bytes(&format!("{what}: dropped frame"), &self.out, input);
    }
}

// ---------------------------------------------------------------------------
// The fixture: a namespace with an uplink, a loaded datapath, filled maps.
// ---------------------------------------------------------------------------

/// Removes the pin directory, even when the test panics.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = overlay_agent::datapath::uninstall(&self.0) {
            eprintln!("removing {}: {}", self.0.display(), error_chain(&e));
        }
    }
}

/// Fields drop in order: programs and maps, then the pins, then the netns.
struct Fixture {
    dp: Datapath,
    maps: Maps,
    /// Ifindex of `ul0` in the namespace.
    ul0: u32,
    /// Ifindex of the local pod's host-side veth (`pod0`).
    pod_ifindex: u32,
    /// Ifindex of the neighbour pod's host-side veth (`pod1`).
    neighbour_ifindex: u32,
    _pin: PinDir,
    ns: Netns,
}

impl Fixture {
    /// The standard node: configured and ready, see the constants above.
    fn new() -> Self {
        let mut fx = Self::bare();
        let cfg = fx.ready_config();
        fx.set_config(&cfg);
        fx.route("10.32.1.0/24", NODE);
        fx.route("10.32.2.0/24", PEER);
        fx.maps.upsert_peer(PEER).expect("insert peer");
        let ep = Endpoint {
            ifindex: fx.pod_ifindex,
            pod_mac: POD_MAC,
            host_mac: HOST_MAC,
            flags: 0,
        };
        fx.maps
            .upsert_endpoint(LOCAL_POD, &ep)
            .expect("insert endpoint");
        let neighbour = Endpoint {
            ifindex: fx.neighbour_ifindex,
            pod_mac: SENDER_MAC,
            host_mac: SENDER_GW_MAC,
            flags: 0,
        };
        fx.maps
            .upsert_endpoint(NEIGHBOUR_POD, &neighbour)
            .expect("insert endpoint");
        fx
    }

    /// Namespace, links and loaded datapath; maps left empty.
    fn bare() -> Self {
        let tag = unique_tag();
        let ns = Netns::new(&tag, "tr");
        ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        ns.ip(&[
            "link",
            "add",
            "ul0",
            "address",
            "02:aa:00:00:00:01",
            "type",
            "veth",
            "peer",
            "name",
            "ulp",
        ]);
        ns.ip(&[
            "link", "add", "pod0", "type", "veth", "peer", "name", "pod0p",
        ]);
        ns.ip(&[
            "link", "add", "pod1", "type", "veth", "peer", "name", "pod1p",
        ]);
        ns.exec(&["sysctl", "-qw", "net.ipv4.conf.ul0.forwarding=1"]);
        ns.ip(&["addr", "add", "172.31.0.1/24", "dev", "ul0"]);
        for l in ["ul0", "ulp", "pod0", "pod0p", "pod1", "pod1p"] {
            ns.ip(&["link", "set", l, "up"]);
        }
        ns.ip(&[
            "neigh",
            "add",
            "172.31.0.2",
            "lladdr",
            "02:bb:00:00:00:02",
            "dev",
            "ul0",
            "nud",
            "permanent",
        ]);
        let ul0 = ns.ifindex("ul0");
        let pod_ifindex = ns.ifindex("pod0");
        let neighbour_ifindex = ns.ifindex("pod1");

        let pin = PinDir(PathBuf::from(format!("/sys/fs/bpf/ovltr-{tag}")));
        let dp = Datapath::load(&pin.0)
            .unwrap_or_else(|e| panic!("loading the datapath: {}", error_chain(&e)));
        let maps = Maps::open(&pin.0)
            .unwrap_or_else(|e| panic!("opening the pinned maps: {}", error_chain(&e)));
        Self {
            dp,
            maps,
            ul0,
            pod_ifindex,
            neighbour_ifindex,
            _pin: pin,
            ns,
        }
    }

    fn ready_config(&self) -> NodeConfig {
        NodeConfig {
            node_ip: NODE.octets(),
            uplink_ifindex: self.ul0,
            vxlan_port: VXLAN_PORT,
            probe_port: PROBE_PORT,
            vni: VNI,
            mtu: 1450,
            flags: CONFIG_F_READY,
        }
    }

    fn set_config(&mut self, cfg: &NodeConfig) {
        self.maps
            .set_config(cfg)
            .unwrap_or_else(|e| panic!("writing the config: {}", error_chain(&e)));
    }

    fn route(&mut self, block: &str, node: Ipv4Addr) {
        self.maps
            .upsert_route(block.parse().expect("block"), node)
            .unwrap_or_else(|e| panic!("inserting route {block}: {}", error_chain(&e)));
    }

    fn counters(&self) -> Counters {
        self.maps
            .counters()
            .unwrap_or_else(|e| panic!("reading counters: {}", error_chain(&e)))
    }

    /// Runs `prog` once on `frame` inside the fixture's namespace, as if
    /// it came in on `ifindex` (0: the kernel's default, loopback).
    fn run(&mut self, prog: &'static str, frame: &[u8], ifindex: u32) -> Run {
        let before = self.counters();
        let path = self.ns.path();
        let program: &SchedClassifier = self
            .dp
            .program(prog)
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        let (verdict, out) = run_program(&path, prog, program, frame, ifindex);
        let delta = self.counters().since(&before);
        Run {
            verdict,
            out,
            delta,
        }
    }

    /// `from_pod` on a frame sent by the pod whose address is the frame's
    /// IPv4 source (on `pod0` when that is no local pod).
    fn run_from_pod(&mut self, frame: &[u8]) -> Run {
        let src = (frame.len() >= 34 && frame[12..14] == ETH_P_IP.to_be_bytes())
            .then(|| Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]));
        let ifindex = match src {
            Some(ip) if ip == NEIGHBOUR_POD => self.neighbour_ifindex,
            _ => self.pod_ifindex,
        };
        self.run(PROG_FROM_POD, frame, ifindex)
    }

    /// `from_pod` on a frame that came in on `ifindex`.
    fn run_from_pod_on(&mut self, ifindex: u32, frame: &[u8]) -> Run {
        self.run(PROG_FROM_POD, frame, ifindex)
    }

    fn run_from_uplink(&mut self, frame: &[u8]) -> Run {
        let ul0 = self.ul0;
        self.run(PROG_FROM_UPLINK, frame, ul0)
    }
}

/// `BPF_PROG_TEST_RUN` of `program` on `frame`, from a thread inside `netns`.
fn run_program(
    netns: &Path,
    name: &str,
    program: &SchedClassifier,
    frame: &[u8],
    ifindex: u32,
) -> (u32, Vec<u8>) {
    const OUT_CAP: usize = 2048;
    // The start of a `struct __sk_buff`: BPF_PROG_TEST_RUN takes the
    // device from its `ifindex` field (offset 40) when it is above 1.
    let mut skb = [0u8; 44];
    skb[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    overlay_agent::netns::run_in(netns, || {
        let mut out = vec![0u8; OUT_CAP];
        let res = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: (ifindex > 1).then_some(&skb[..]),
                ..TestRunOptions::default()
            })
            .unwrap_or_else(|e| {
                panic!(
                    "BPF_PROG_TEST_RUN of {name} on a {}-byte frame: {}",
                    frame.len(),
                    error_chain(&e)
                )
            });
        let size = res.data_size_out as usize;
        assert!(size <= OUT_CAP, "{name}: output of {size} bytes");
        out.truncate(size);
        (res.return_value, out)
    })
    .unwrap_or_else(|e| panic!("{}", error_chain(&e)))
}

/// What an encapsulated frame must carry.
struct Tunnel {
    /// The node the frame goes to.
    dst_node: Ipv4Addr,
    port: u16,
    vni: u32,
    /// Outer destination and source MAC, when the FIB lookup resolved them.
    outer_macs: Option<([u8; 6], [u8; 6])>,
}

/// To [`PEER`] with the standard configuration.
const TO_PEER: Tunnel = Tunnel {
    dst_node: PEER,
    port: VXLAN_PORT,
    vni: VNI,
    outer_macs: Some((PEER_MAC, UL0_MAC)),
};

/// Checks an encapsulated frame field by field: `input` is what the pod
/// sent. Returns the UDP source port.
fn check_encapsulated(what: &str, input: &[u8], out: &[u8], t: &Tunnel) -> u16 {
    let Tunnel {
        dst_node,
        port,
        vni,
        outer_macs,
    } = *t;
    let inner_ip = &input[14..];
    let inner_len = be16(inner_ip, 2) as usize;
    assert_eq!(inner_len, inner_ip.len(), "{what}: test frame has padding");
    assert_eq!(
        out.len(),
        input.len() + 50,
        "{what}: encapsulated length\n{}",
        hex(out)
    );

    // Outer Ethernet.
    if let Some((dmac, smac)) = outer_macs {
        assert_eq!(out[0..6], dmac, "{what}: outer destination MAC");
        assert_eq!(out[6..12], smac, "{what}: outer source MAC (ul0)");
    }
    assert_eq!(be16(out, 12), ETH_P_IP, "{what}: outer EtherType");

    // Outer IPv4.
    let ip = &out[14..34];
    assert_eq!(ip[0], 0x45, "{what}: outer version/IHL");
    assert_eq!(ip[1], inner_ip[1], "{what}: outer TOS copied from inner");
    assert_eq!(
        be16(ip, 2) as usize,
        inner_len + 20 + 8 + 8 + 14,
        "{what}: outer total length"
    );
    assert_eq!(be16(ip, 4), 0, "{what}: outer IP ID");
    assert_eq!(be16(ip, 6), 0x4000, "{what}: outer flags/offset (DF only)");
    assert_eq!(ip[8], 64, "{what}: outer TTL");
    assert_eq!(ip[9], PROTO_UDP, "{what}: outer protocol");
    assert_eq!(
        inet_checksum(ip),
        0,
        "{what}: outer header checksum {:#06x} does not verify",
        be16(ip, 10)
    );
    assert_eq!(ip_at(ip, 12), NODE, "{what}: outer source");
    assert_eq!(ip_at(ip, 16), dst_node, "{what}: outer destination");

    // UDP.
    let u = &out[34..42];
    let sport = be16(u, 0);
    assert!(
        (49152..=65535).contains(&sport),
        "{what}: UDP source port {sport} outside 49152..=65535"
    );
    assert_eq!(be16(u, 2), port, "{what}: UDP destination port");
    assert_eq!(
        be16(u, 4) as usize,
        inner_len + 8 + 8 + 14,
        "{what}: UDP length"
    );
    assert_eq!(be16(u, 6), 0, "{what}: UDP checksum");

    // VXLAN.
    let vx = &out[42..50];
    assert_eq!(vx[0], 0x08, "{what}: VXLAN flags");
    assert_eq!(vx[1..4], [0, 0, 0], "{what}: VXLAN reserved bytes");
    let v = vni.to_be_bytes();
    assert_eq!(vx[4..7], v[1..4], "{what}: VNI");
    assert_eq!(vx[7], 0, "{what}: VXLAN last reserved byte");

    // Inner Ethernet: node to node VTEP MACs.
    let d = dst_node.octets();
    assert_eq!(
        out[50..56],
        [0x0e, 0x4f, d[0], d[1], d[2], d[3]],
        "{what}: inner destination MAC (VTEP MAC of the destination node)"
    );
    assert_eq!(
        out[56..62],
        NODE_VTEP_MAC,
        "{what}: inner source MAC (our VTEP MAC)"
    );
    assert_eq!(be16(out, 62), ETH_P_IP, "{what}: inner EtherType");

    assert_bytes(
        &format!("{what}: inner IPv4 packet"),
        &out[ENCAP_LEN..],
        inner_ip,
    );
    sport
}

// ---------------------------------------------------------------------------
// from_pod
// ---------------------------------------------------------------------------

#[test]
fn from_pod_encapsulates_packets_to_a_remote_block() {
    if !require_privileges("from_pod_encapsulates_packets_to_a_remote_block") {
        return;
    }
    let mut fx = Fixture::new();

    let mut udp_ip = Ipv4::new(PROTO_UDP, LOCAL_POD, REMOTE_POD);
    udp_ip.tos = 0xba; // DSCP EF + ECT(0)
    let udp_pkt = udp_ip.packet(&udp(LOCAL_POD, REMOTE_POD, 40000, 8080, b"hello overlay"));
    let tcp_pkt = Ipv4::new(PROTO_TCP, LOCAL_POD, REMOTE_POD)
        .packet(&tcp_syn(LOCAL_POD, REMOTE_POD, 41000, 443));
    let mut icmp_ip = Ipv4::new(PROTO_ICMP, LOCAL_POD, REMOTE_POD);
    icmp_ip.tos = 0x10;
    icmp_ip.frag = 0;
    let icmp_pkt = icmp_ip.packet(&icmp_echo(7, 1, &[0xa5; 56]));

    for (what, ip) in [
        ("UDP to 10.32.2.10", udp_pkt),
        ("TCP SYN to 10.32.2.10", tcp_pkt),
        ("ICMP echo to 10.32.2.10", icmp_pkt),
    ] {
        let input = from_pod_frame(&ip);
        let r = fx.run_from_pod(&input);
        r.expect(what, TC_ACT_REDIRECT, Stat::FromPodEncapsulated);
        check_encapsulated(what, &input, &r.out, &TO_PEER);
    }
}

#[test]
fn from_pod_uses_one_source_port_per_flow() {
    if !require_privileges("from_pod_uses_one_source_port_per_flow") {
        return;
    }
    let mut fx = Fixture::new();

    let first = from_pod_frame(&pod_udp(LOCAL_POD, REMOTE_POD, 40000, 8080, b"first"));
    // Same 5-tuple, other IP ID and payload.
    let mut ip = Ipv4::new(PROTO_UDP, LOCAL_POD, REMOTE_POD);
    ip.id = 0x7777;
    let second = from_pod_frame(&ip.packet(&udp(
        LOCAL_POD,
        REMOTE_POD,
        40000,
        8080,
        b"second, and longer",
    )));

    let mut ports = Vec::new();
    for (what, input) in [("first packet", &first), ("second packet", &second)] {
        let r = fx.run_from_pod(input);
        r.expect(what, TC_ACT_REDIRECT, Stat::FromPodEncapsulated);
        ports.push(check_encapsulated(what, input, &r.out, &TO_PEER));
    }
    assert_eq!(
        ports[0], ports[1],
        "two packets of one flow got different UDP source ports"
    );
    // Running the very same frame again gives the same port as well.
    let r = fx.run_from_pod(&first);
    r.expect(
        "first packet again",
        TC_ACT_REDIRECT,
        Stat::FromPodEncapsulated,
    );
    assert_eq!(be16(&r.out, 34), ports[0], "same frame, other source port");

    // Different flows spread out: eight source ports of eight flows are not
    // all equal (all equal by chance: about 2^-98).
    let mut spread = Vec::new();
    for sport in 40001..40009 {
        let input = from_pod_frame(&pod_udp(LOCAL_POD, REMOTE_POD, sport, 8080, b"flow"));
        let r = fx.run_from_pod(&input);
        let what = format!("flow from port {sport}");
        r.expect(&what, TC_ACT_REDIRECT, Stat::FromPodEncapsulated);
        spread.push(check_encapsulated(&what, &input, &r.out, &TO_PEER));
    }
    spread.sort_unstable();
    spread.dedup();
    assert!(
        spread.len() > 1,
        "eight flows all got UDP source port {}",
        spread[0]
    );
}

#[test]
fn from_pod_encapsulates_when_the_next_hop_is_left_to_the_kernel() {
    if !require_privileges("from_pod_encapsulates_when_the_next_hop_is_left_to_the_kernel") {
        return;
    }
    let mut fx = Fixture::new();

    // 172.31.0.5 is on ul0's subnet but has no neighbour entry yet: the FIB
    // lookup says NO_NEIGH and bpf_redirect_neigh resolves it later.
    let unresolved = Ipv4Addr::new(172, 31, 0, 5);
    fx.route("10.32.5.0/24", unresolved);
    let input = from_pod_frame(&pod_udp(
        LOCAL_POD,
        Ipv4Addr::new(10, 32, 5, 10),
        40000,
        8080,
        b"who has 172.31.0.5?",
    ));
    let r = fx.run_from_pod(&input);
    let what = "to 10.32.5.10 via unresolved 172.31.0.5";
    r.expect(what, TC_ACT_REDIRECT, Stat::FromPodEncapsulated);
    let tunnel = Tunnel {
        dst_node: unresolved,
        outer_macs: None,
        ..TO_PEER
    };
    check_encapsulated(what, &input, &r.out, &tunnel);

    // Forwarding off on the uplink: FWD_DISABLED, the kernel routes it.
    fx.ns
        .exec(&["sysctl", "-qw", "net.ipv4.conf.ul0.forwarding=0"]);
    let input = from_pod_frame(&pod_udp(LOCAL_POD, REMOTE_POD, 40000, 8080, b"fwd off"));
    let r = fx.run_from_pod(&input);
    let what = "to 10.32.2.10, forwarding off on ul0";
    r.expect(what, TC_ACT_REDIRECT, Stat::FromPodEncapsulated);
    let tunnel = Tunnel {
        outer_macs: None,
        ..TO_PEER
    };
    check_encapsulated(what, &input, &r.out, &tunnel);
}

#[test]
fn from_pod_encapsulates_with_the_configured_port_and_vni() {
    if !require_privileges("from_pod_encapsulates_with_the_configured_port_and_vni") {
        return;
    }
    let mut fx = Fixture::new();
    let mut cfg = fx.ready_config();
    cfg.vxlan_port = 4789;
    cfg.vni = 0x00ab_cdef;
    fx.set_config(&cfg);

    let input = from_pod_frame(&pod_udp(LOCAL_POD, REMOTE_POD, 40000, 8080, b"vni"));
    let r = fx.run_from_pod(&input);
    r.expect(
        "port 4789, VNI 0xabcdef",
        TC_ACT_REDIRECT,
        Stat::FromPodEncapsulated,
    );
    let tunnel = Tunnel {
        port: 4789,
        vni: 0x00ab_cdef,
        ..TO_PEER
    };
    check_encapsulated("port 4789, VNI 0xabcdef", &input, &r.out, &tunnel);
    assert_eq!(r.out[46..50], [0xab, 0xcd, 0xef, 0x00], "VNI bytes");
}

#[test]
fn from_pod_delivers_to_a_local_pod() {
    if !require_privileges("from_pod_delivers_to_a_local_pod") {
        return;
    }
    let mut fx = Fixture::new();
    let ip = pod_udp(NEIGHBOUR_POD, LOCAL_POD, 5353, 9000, b"neighbourly");
    let input = from_pod_frame(&ip);

    let r = fx.run_from_pod(&input);
    r.expect(
        "10.32.1.11 -> 10.32.1.10",
        TC_ACT_REDIRECT,
        Stat::FromPodLocal,
    );
    let want = ethernet(POD_MAC, HOST_MAC, ETH_P_IP, &ip);
    assert_bytes("locally delivered frame", &r.out, &want);
}

#[test]
fn from_pod_passes_what_is_not_overlay_traffic() {
    if !require_privileges("from_pod_passes_what_is_not_overlay_traffic") {
        return;
    }
    let mut fx = Fixture::new();
    let cases = [
        (
            "ARP request for the gateway",
            ethernet(
                [0xff; 6],
                SENDER_MAC,
                ETH_P_ARP,
                &arp_request(SENDER_MAC, LOCAL_POD, Ipv4Addr::new(169, 254, 1, 1)),
            ),
        ),
        (
            "IPv6 frame",
            ethernet(SENDER_GW_MAC, SENDER_MAC, ETH_P_IPV6, &ipv6_udp()),
        ),
        (
            "UDP to 8.8.8.8 (outside every block)",
            from_pod_frame(&pod_udp(
                LOCAL_POD,
                Ipv4Addr::new(8, 8, 8, 8),
                40000,
                53,
                b"dns?",
            )),
        ),
        (
            "ICMP to the node itself",
            from_pod_frame(
                &Ipv4::new(PROTO_ICMP, LOCAL_POD, NODE).packet(&icmp_echo(1, 1, b"ping")),
            ),
        ),
        (
            "UDP to 10.32.1.77 (our block, no such pod)",
            from_pod_frame(&pod_udp(LOCAL_POD, LOCAL_NO_POD, 40000, 8080, b"anyone?")),
        ),
    ];
    for (what, input) in &cases {
        fx.run_from_pod(input)
            .expect_passed(what, input, Stat::FromPodPassed);
    }
}

// A truncated IPv4 header cannot be tested from here: since the fix for
// syzbot 619b9ef527f510a57cfc, BPF_PROG_TEST_RUN itself refuses an IPv4
// EtherType frame with fewer than 20 bytes after the Ethernet header.

#[test]
fn from_pod_drops_malformed_ipv4_headers() {
    if !require_privileges("from_pod_drops_malformed_ipv4_headers") {
        return;
    }
    let mut fx = Fixture::new();
    for (what, first_byte) in [
        ("IPv4 EtherType, version 6 header", 0x65),
        ("IPv4 header with IHL 4", 0x44),
    ] {
        let mut ip = pod_udp(LOCAL_POD, REMOTE_POD, 40000, 8080, b"malformed");
        ip[0] = first_byte;
        let input = from_pod_frame(&ip);
        fx.run_from_pod(&input)
            .expect_dropped(what, &input, Stat::DropMalformed);
    }
}

#[test]
fn from_pod_drops_when_there_is_no_route_to_the_peer() {
    if !require_privileges("from_pod_drops_when_there_is_no_route_to_the_peer") {
        return;
    }
    let mut fx = Fixture::new();
    // 192.0.2.1 owns 10.32.3.0/24, but the namespace has no route to it.
    fx.route("10.32.3.0/24", Ipv4Addr::new(192, 0, 2, 1));
    let input = from_pod_frame(&pod_udp(
        LOCAL_POD,
        Ipv4Addr::new(10, 32, 3, 10),
        40000,
        8080,
        b"unreachable",
    ));
    fx.run_from_pod(&input).expect_dropped(
        "to 10.32.3.10 via 192.0.2.1",
        &input,
        Stat::DropNoRouteToPeer,
    );
}

// ---------------------------------------------------------------------------
// from_uplink: delivery
// ---------------------------------------------------------------------------

#[test]
fn from_uplink_decapsulates_to_a_local_pod() {
    if !require_privileges("from_uplink_decapsulates_to_a_local_pod") {
        return;
    }
    let mut fx = Fixture::new();
    let inner = remote_to_local();
    let input = Vxlan::new(inner.clone()).frame();

    let r = fx.run_from_uplink(&input);
    r.expect(
        "VXLAN 10.32.2.10 -> 10.32.1.10",
        TC_ACT_REDIRECT,
        Stat::FromUplinkDecapsulated,
    );
    let want = ethernet(POD_MAC, HOST_MAC, ETH_P_IP, &inner);
    assert_bytes("decapsulated frame", &r.out, &want);

    // Inner TCP and ICMP come out just as intact.
    let tcp = Ipv4::new(PROTO_TCP, REMOTE_POD, LOCAL_POD)
        .packet(&tcp_syn(REMOTE_POD, LOCAL_POD, 50505, 80));
    let icmp = Ipv4::new(PROTO_ICMP, REMOTE_POD, LOCAL_POD).packet(&icmp_echo(3, 9, &[0x5a; 100]));
    for (what, inner) in [("inner TCP SYN", tcp), ("inner ICMP echo", icmp)] {
        let r = fx.run_from_uplink(&Vxlan::new(inner.clone()).frame());
        r.expect(what, TC_ACT_REDIRECT, Stat::FromUplinkDecapsulated);
        assert_bytes(what, &r.out, &ethernet(POD_MAC, HOST_MAC, ETH_P_IP, &inner));
    }
}

#[test]
fn from_uplink_decapsulates_with_the_configured_port_and_vni() {
    if !require_privileges("from_uplink_decapsulates_with_the_configured_port_and_vni") {
        return;
    }
    let mut fx = Fixture::new();
    let mut cfg = fx.ready_config();
    cfg.vxlan_port = 4789;
    cfg.vni = 0x00ab_cdef;
    fx.set_config(&cfg);

    let inner = remote_to_local();
    let mut vx = Vxlan::new(inner.clone());
    vx.dport = 4789;
    vx.vni = 0x00ab_cdef;
    let r = fx.run_from_uplink(&vx.frame());
    r.expect(
        "port 4789, VNI 0xabcdef",
        TC_ACT_REDIRECT,
        Stat::FromUplinkDecapsulated,
    );
    assert_bytes(
        "decapsulated frame",
        &r.out,
        &ethernet(POD_MAC, HOST_MAC, ETH_P_IP, &inner),
    );

    // The default port is now just another UDP port.
    let mut old_port = Vxlan::new(inner);
    old_port.vni = 0x00ab_cdef;
    let input = old_port.frame();
    fx.run_from_uplink(&input).expect_passed(
        "VXLAN to 6784 while configured for 4789",
        &input,
        Stat::FromUplinkPassed,
    );
}

#[test]
fn from_pod_output_decapsulates_on_the_destination_node() {
    if !require_privileges("from_pod_output_decapsulates_on_the_destination_node") {
        return;
    }
    let mut fx = Fixture::new();
    let inner = pod_udp(LOCAL_POD, REMOTE_POD, 40000, 8080, b"round trip");
    let input = from_pod_frame(&inner);
    let enc = fx.run_from_pod(&input);
    enc.expect(
        "encapsulate on node 1",
        TC_ACT_REDIRECT,
        Stat::FromPodEncapsulated,
    );

    // The same maps now describe node 2 (172.31.0.2), with 10.32.2.10 as its
    // pod; from_uplink does no FIB lookup, so the namespace does not matter.
    let remote_pod_mac = [0x02, 0x50, 10, 32, 2, 10];
    let remote_host_mac = [0x02, 0x48, 10, 32, 2, 10];
    let mut cfg = fx.ready_config();
    cfg.node_ip = PEER.octets();
    fx.set_config(&cfg);
    fx.maps.upsert_peer(NODE).expect("insert peer");
    let ep = Endpoint {
        ifindex: fx.pod_ifindex,
        pod_mac: remote_pod_mac,
        host_mac: remote_host_mac,
        flags: 0,
    };
    fx.maps
        .upsert_endpoint(REMOTE_POD, &ep)
        .expect("insert endpoint");

    let dec = fx.run_from_uplink(&enc.out);
    dec.expect(
        "decapsulate on node 2",
        TC_ACT_REDIRECT,
        Stat::FromUplinkDecapsulated,
    );
    assert_bytes(
        "round trip",
        &dec.out,
        &ethernet(remote_pod_mac, remote_host_mac, ETH_P_IP, &inner),
    );
}

// ---------------------------------------------------------------------------
// from_uplink: drops, one reason each
// ---------------------------------------------------------------------------

/// Runs `from_uplink` on `frame` in a fresh fixture and expects a drop counted as `stat`.
fn expect_uplink_drop(name: &str, what: &str, stat: Stat, frame: &[u8]) {
    if !require_privileges(name) {
        return;
    }
    let mut fx = Fixture::new();
    fx.run_from_uplink(frame).expect_dropped(what, frame, stat);
}

#[test]
fn from_uplink_drops_vxlan_from_an_unknown_peer() {
    let mut vx = Vxlan::new(remote_to_local());
    vx.outer.src = STRANGER;
    expect_uplink_drop(
        "from_uplink_drops_vxlan_from_an_unknown_peer",
        "outer source 172.31.0.9",
        Stat::DropUnknownPeer,
        &vx.frame(),
    );
}

#[test]
fn from_uplink_drops_a_wrong_vni() {
    let mut vx = Vxlan::new(remote_to_local());
    vx.vni = 2;
    expect_uplink_drop(
        "from_uplink_drops_a_wrong_vni",
        "VNI 2",
        Stat::DropWrongVni,
        &vx.frame(),
    );
}

#[test]
fn from_uplink_drops_vxlan_without_the_i_flag() {
    let mut vx = Vxlan::new(remote_to_local());
    vx.flags = 0x00;
    expect_uplink_drop(
        "from_uplink_drops_vxlan_without_the_i_flag",
        "VXLAN flags 0x00",
        Stat::DropMalformed,
        &vx.frame(),
    );
}

#[test]
fn from_uplink_drops_an_outer_header_with_options() {
    let mut vx = Vxlan::new(remote_to_local());
    vx.outer.options = vec![1, 1, 1, 1]; // four NOPs: IHL 6
    let frame = vx.frame();
    assert_eq!(frame[14], 0x46);
    assert_eq!(be16(&frame, 14 + 24 + 2), VXLAN_PORT);
    expect_uplink_drop(
        "from_uplink_drops_an_outer_header_with_options",
        "outer IHL 6, UDP to 6784",
        Stat::DropMalformed,
        &frame,
    );
}

#[test]
fn from_uplink_drops_truncated_vxlan() {
    if !require_privileges("from_uplink_drops_truncated_vxlan") {
        return;
    }
    let mut fx = Fixture::new();
    let full = Vxlan::new(remote_to_local()).frame();
    for (what, len) in [
        ("ends right after the UDP header", 14 + 20 + 8),
        ("ends inside the VXLAN header", 14 + 20 + 8 + 4),
        ("ends inside the inner Ethernet header", 14 + 20 + 8 + 8 + 6),
        ("ends inside the inner IPv4 header", ENCAP_LEN + 10),
        ("inner IPv4 total length beyond the frame", full.len() - 5),
    ] {
        let frame = &full[..len];
        fx.run_from_uplink(frame)
            .expect_dropped(what, frame, Stat::DropTruncated);
    }
}

#[test]
fn from_uplink_drops_fragmented_vxlan() {
    let mut vx = Vxlan::new(remote_to_local());
    vx.outer.frag = 0x2000; // MF, offset 0: the first fragment
    expect_uplink_drop(
        "from_uplink_drops_fragmented_vxlan",
        "outer MF set, offset 0",
        Stat::DropFragmented,
        &vx.frame(),
    );
}

#[test]
fn from_uplink_drops_vxlan_for_an_address_that_is_not_a_local_pod() {
    let vx = Vxlan::new(pod_udp(REMOTE_POD, LOCAL_NO_POD, 33333, 8080, b"?"));
    expect_uplink_drop(
        "from_uplink_drops_vxlan_for_an_address_that_is_not_a_local_pod",
        "inner destination 10.32.1.77",
        Stat::DropNoEndpoint,
        &vx.frame(),
    );
}

#[test]
fn from_uplink_drops_a_spoofed_inner_source() {
    if !require_privileges("from_uplink_drops_a_spoofed_inner_source") {
        return;
    }
    let mut fx = Fixture::new();
    for (what, src) in [
        (
            "inner source 10.32.1.99 (our block) sent by 172.31.0.2",
            Ipv4Addr::new(10, 32, 1, 99),
        ),
        (
            "inner source 8.8.8.8 (no block) sent by 172.31.0.2",
            Ipv4Addr::new(8, 8, 8, 8),
        ),
    ] {
        let frame = Vxlan::new(pod_udp(src, LOCAL_POD, 33333, 8080, b"spoof")).frame();
        fx.run_from_uplink(&frame)
            .expect_dropped(what, &frame, Stat::DropSpoofedSource);
    }
}

#[test]
fn from_uplink_drops_an_inner_frame_that_is_not_ipv4() {
    if !require_privileges("from_uplink_drops_an_inner_frame_that_is_not_ipv4") {
        return;
    }
    let mut fx = Fixture::new();

    let mut arp = Vxlan::new(arp_request(PEER_VTEP_MAC, REMOTE_POD, LOCAL_POD));
    arp.inner_dmac = [0xff; 6];
    arp.inner_ethertype = ETH_P_ARP;
    let frame = arp.frame();
    fx.run_from_uplink(&frame)
        .expect_dropped("inner ARP", &frame, Stat::DropMalformed);

    let mut v6 = Vxlan::new(ipv6_udp());
    v6.inner_ethertype = ETH_P_IPV6;
    let frame = v6.frame();
    fx.run_from_uplink(&frame)
        .expect_dropped("inner IPv6", &frame, Stat::DropMalformed);

    let mut bad = remote_to_local();
    bad[0] = 0x65;
    let frame = Vxlan::new(bad).frame();
    fx.run_from_uplink(&frame).expect_dropped(
        "inner IPv4 EtherType, version 6 header",
        &frame,
        Stat::DropMalformed,
    );
}

// ---------------------------------------------------------------------------
// from_uplink: everything else passes untouched
// ---------------------------------------------------------------------------

#[test]
fn from_uplink_passes_what_is_not_vxlan_for_us() {
    if !require_privileges("from_uplink_passes_what_is_not_vxlan_for_us") {
        return;
    }
    let mut fx = Fixture::new();

    let mut not_us = Vxlan::new(remote_to_local());
    not_us.outer.dst = Ipv4Addr::new(172, 31, 0, 3);

    let cases = [
        (
            "ARP request for the node",
            ethernet(
                [0xff; 6],
                PEER_MAC,
                ETH_P_ARP,
                &arp_request(PEER_MAC, PEER, NODE),
            ),
        ),
        (
            "IPv6 frame",
            ethernet(UL0_MAC, PEER_MAC, ETH_P_IPV6, &ipv6_udp()),
        ),
        (
            "UDP to the node on port 53",
            ethernet(
                UL0_MAC,
                PEER_MAC,
                ETH_P_IP,
                &Ipv4::new(PROTO_UDP, PEER, NODE).packet(&udp(PEER, NODE, 40000, 53, b"dns")),
            ),
        ),
        (
            "VXLAN to port 6784 of another address (172.31.0.3)",
            not_us.frame(),
        ),
        (
            "TCP SYN to the node (port 6784)",
            ethernet(
                UL0_MAC,
                PEER_MAC,
                ETH_P_IP,
                &Ipv4::new(PROTO_TCP, PEER, NODE).packet(&tcp_syn(PEER, NODE, 40000, VXLAN_PORT)),
            ),
        ),
        (
            "unparseable IPv4 header (IHL 4) that would be VXLAN for us",
            {
                let mut f = Vxlan::new(remote_to_local()).frame();
                f[14] = 0x44;
                f
            },
        ),
        (
            "ICMP echo to the node",
            ethernet(
                UL0_MAC,
                PEER_MAC,
                ETH_P_IP,
                &Ipv4::new(PROTO_ICMP, PEER, NODE).packet(&icmp_echo(1, 2, b"ping")),
            ),
        ),
    ];
    for (what, input) in &cases {
        fx.run_from_uplink(input)
            .expect_passed(what, input, Stat::FromUplinkPassed);
    }
}

// ---------------------------------------------------------------------------
// Not configured yet
// ---------------------------------------------------------------------------

#[test]
fn unconfigured_programs_pass_everything() {
    if !require_privileges("unconfigured_programs_pass_everything") {
        return;
    }
    let mut fx = Fixture::new();
    let mut cfg = fx.ready_config();
    cfg.flags = 0;
    fx.set_config(&cfg);

    let to_remote = from_pod_frame(&pod_udp(LOCAL_POD, REMOTE_POD, 40000, 8080, b"early"));
    fx.run_from_pod(&to_remote).expect_passed(
        "from_pod, remote block, config flags 0",
        &to_remote,
        Stat::NotConfigured,
    );
    let to_local = from_pod_frame(&pod_udp(
        Ipv4Addr::new(10, 32, 1, 11),
        LOCAL_POD,
        40000,
        8080,
        b"early",
    ));
    fx.run_from_pod(&to_local).expect_passed(
        "from_pod, local pod, config flags 0",
        &to_local,
        Stat::NotConfigured,
    );
    let vxlan = Vxlan::new(remote_to_local()).frame();
    fx.run_from_uplink(&vxlan).expect_passed(
        "from_uplink, VXLAN, config flags 0",
        &vxlan,
        Stat::NotConfigured,
    );
}

#[test]
fn programs_pass_everything_before_any_config_is_written() {
    if !require_privileges("programs_pass_everything_before_any_config_is_written") {
        return;
    }
    // Fresh maps: the config slot is all zeroes.
    let mut fx = Fixture::bare();
    let to_remote = from_pod_frame(&pod_udp(LOCAL_POD, REMOTE_POD, 40000, 8080, b"early"));
    fx.run_from_pod(&to_remote).expect_passed(
        "from_pod, empty maps",
        &to_remote,
        Stat::NotConfigured,
    );
    let vxlan = Vxlan::new(remote_to_local()).frame();
    fx.run_from_uplink(&vxlan).expect_passed(
        "from_uplink, empty maps",
        &vxlan,
        Stat::NotConfigured,
    );
}

// ---------------------------------------------------------------------------
// A pod sends only as itself, and never into the tunnel
// ---------------------------------------------------------------------------

#[test]
fn from_pod_drops_packets_whose_source_is_not_the_pods_own_address() {
    if !require_privileges("from_pod_drops_packets_whose_source_is_not_the_pods_own_address") {
        return;
    }
    let mut fx = Fixture::new();
    let pod0 = fx.pod_ifindex;
    let cases = [
        ("the neighbour pod's address", NEIGHBOUR_POD, REMOTE_POD),
        (
            "the neighbour pod's address, to a local pod",
            NEIGHBOUR_POD,
            LOCAL_POD,
        ),
        ("a remote pod's address", REMOTE_POD, LOCAL_POD),
        ("a free address of our block", LOCAL_NO_POD, REMOTE_POD),
        ("the node's address", NODE, REMOTE_POD),
        (
            "an outside address",
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(8, 8, 8, 8),
        ),
        ("the unspecified address", Ipv4Addr::UNSPECIFIED, REMOTE_POD),
    ];
    for (what, src, dst) in cases {
        let input = from_pod_frame(&pod_udp(src, dst, 40000, 8080, b"not me"));
        fx.run_from_pod_on(pod0, &input).expect_dropped(
            &format!("pod0 sending from {what} ({src})"),
            &input,
            Stat::DropPodSpoofedSource,
        );
    }
    // Its own address, but from the other pod's interface.
    let input = from_pod_frame(&pod_udp(LOCAL_POD, REMOTE_POD, 40000, 8080, b"not here"));
    fx.run_from_pod_on(fx.neighbour_ifindex, &input)
        .expect_dropped(
            "10.32.1.10 sent on pod1",
            &input,
            Stat::DropPodSpoofedSource,
        );
    // The pod's own address on its own interface goes on as before.
    fx.run_from_pod_on(pod0, &input).expect(
        "10.32.1.10 sent on pod0",
        TC_ACT_REDIRECT,
        Stat::FromPodEncapsulated,
    );
}

#[test]
fn from_pod_drops_pod_udp_to_the_tunnel_ports_of_nodes_and_the_outside() {
    if !require_privileges("from_pod_drops_pod_udp_to_the_tunnel_ports_of_nodes_and_the_outside") {
        return;
    }
    let mut fx = Fixture::new();
    let vx = Vxlan::new(remote_to_local()).frame();
    for (what, dst, dport) in [
        ("another node's VXLAN port", PEER, VXLAN_PORT),
        ("this node's VXLAN port", NODE, VXLAN_PORT),
        ("another node's probe port", PEER, PROBE_PORT),
        ("a non-peer's VXLAN port", STRANGER, VXLAN_PORT),
        (
            "an outside VXLAN port",
            Ipv4Addr::new(198, 51, 100, 7),
            VXLAN_PORT,
        ),
        ("our block, no such pod", LOCAL_NO_POD, VXLAN_PORT),
    ] {
        // A VXLAN frame with a crafted inner packet, as an attacker sends it.
        let input = from_pod_frame(&pod_udp(LOCAL_POD, dst, 40000, dport, &vx[14 + 20 + 8..]));
        fx.run_from_pod(&input).expect_dropped(
            &format!("UDP to {what} ({dst}:{dport})"),
            &input,
            Stat::DropPodToTunnel,
        );
    }
    // Other ports of nodes are ordinary traffic for the host stack.
    for (dst, dport) in [(PEER, 6783), (NODE, 53), (PEER, VXLAN_PORT + 100)] {
        let input = from_pod_frame(&pod_udp(LOCAL_POD, dst, 40000, dport, b"hello"));
        fx.run_from_pod(&input).expect_passed(
            &format!("UDP to {dst}:{dport}"),
            &input,
            Stat::FromPodPassed,
        );
    }
    // TCP to a node's VXLAN port number is not tunnel traffic.
    let tcp = from_pod_frame(
        &Ipv4::new(PROTO_TCP, LOCAL_POD, PEER).packet(&tcp_syn(LOCAL_POD, PEER, 40000, VXLAN_PORT)),
    );
    fx.run_from_pod(&tcp)
        .expect_passed("TCP to the peer's port 6784", &tcp, Stat::FromPodPassed);
    // Pods may use the port number among themselves: pod to pod is carried.
    let to_pod = from_pod_frame(&pod_udp(LOCAL_POD, REMOTE_POD, 40000, VXLAN_PORT, b"app"));
    fx.run_from_pod(&to_pod).expect(
        "UDP to a remote pod's port 6784",
        TC_ACT_REDIRECT,
        Stat::FromPodEncapsulated,
    );
    let local = from_pod_frame(&pod_udp(
        NEIGHBOUR_POD,
        LOCAL_POD,
        40000,
        PROBE_PORT,
        b"app",
    ));
    fx.run_from_pod(&local).expect(
        "UDP to a local pod's port 6785",
        TC_ACT_REDIRECT,
        Stat::FromPodLocal,
    );
}

// ---------------------------------------------------------------------------
// Datapath liveness probes, answered by from_uplink
// ---------------------------------------------------------------------------

/// A probe payload: magic, version, reserved, nonce, time.
fn probe_payload(nonce: u64) -> Vec<u8> {
    let mut p = b"OVLP\x01\0\0\0".to_vec();
    p.extend_from_slice(&nonce.to_be_bytes());
    p.extend_from_slice(&123_456_789u64.to_be_bytes());
    p
}

/// A probe as it arrives on `ul0` from `src` (through `src_mac`).
fn probe_frame(src: Ipv4Addr, src_mac: [u8; 6], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    ethernet(
        UL0_MAC,
        src_mac,
        ETH_P_IP,
        &Ipv4::new(PROTO_UDP, src, NODE).packet(&udp(src, NODE, sport, dport, payload)),
    )
}

#[test]
fn from_uplink_answers_a_peers_probe_by_reflecting_it() {
    if !require_privileges("from_uplink_answers_a_peers_probe_by_reflecting_it") {
        return;
    }
    let mut fx = Fixture::new();
    let payload = probe_payload(0x0123_4567_89ab_cdef);
    let input = probe_frame(PEER, PEER_MAC, 43210, PROBE_PORT, &payload);
    let r = fx.run_from_uplink(&input);
    r.expect("probe from the peer", TC_ACT_REDIRECT, Stat::ProbeAnswered);
    // Addresses and ports swapped, payload untouched, checksums valid.
    let want = ethernet(
        PEER_MAC,
        UL0_MAC,
        ETH_P_IP,
        &Ipv4::new(PROTO_UDP, NODE, PEER).packet(&udp(NODE, PEER, PROBE_PORT, 43210, &payload)),
    );
    assert_bytes("the answer", &r.out, &want);

    // A known node whose routes are withdrawn (inactive) is answered too,
    // so both sides see each other again after a cut; its VXLAN is not
    // accepted.
    fx.maps.set_peer(PEER, false).expect("deactivate peer");
    fx.run_from_uplink(&input).expect(
        "probe from an inactive peer",
        TC_ACT_REDIRECT,
        Stat::ProbeAnswered,
    );
    let vx = Vxlan::new(remote_to_local()).frame();
    fx.run_from_uplink(&vx).expect_dropped(
        "VXLAN from an inactive peer",
        &vx,
        Stat::DropUnknownPeer,
    );

    // The answer itself, back at the prober's node, is ordinary UDP for
    // the prober's socket.
    let reply = probe_frame(PEER, PEER_MAC, PROBE_PORT, 43210, &payload);
    fx.run_from_uplink(&reply)
        .expect_passed("a probe's answer", &reply, Stat::FromUplinkPassed);
}

#[test]
fn from_uplink_drops_forged_and_malformed_probes() {
    if !require_privileges("from_uplink_drops_forged_and_malformed_probes") {
        return;
    }
    let mut fx = Fixture::new();
    let good = probe_payload(7);
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    let mut bad_version = good.clone();
    bad_version[4] = 9;
    let cases: [(&str, Vec<u8>, Stat); 5] = [
        (
            "from a non-peer",
            probe_frame(STRANGER, [2, 0xcc, 0, 0, 0, 9], 43210, PROBE_PORT, &good),
            Stat::DropProbeUnknownPeer,
        ),
        (
            "from the probe port itself (would bounce forever)",
            probe_frame(PEER, PEER_MAC, PROBE_PORT, PROBE_PORT, &good),
            Stat::DropMalformed,
        ),
        (
            "with a wrong magic",
            probe_frame(PEER, PEER_MAC, 43210, PROBE_PORT, &bad_magic),
            Stat::DropMalformed,
        ),
        (
            "with an unknown version",
            probe_frame(PEER, PEER_MAC, 43210, PROBE_PORT, &bad_version),
            Stat::DropMalformed,
        ),
        (
            "shorter than a probe",
            probe_frame(PEER, PEER_MAC, 43210, PROBE_PORT, &good[..10]),
            Stat::DropTruncated,
        ),
    ];
    for (what, input, stat) in &cases {
        fx.run_from_uplink(input)
            .expect_dropped(&format!("probe {what}"), input, *stat);
    }
    // With probes off (port 0) the port is nobody's: passed to the stack.
    let mut cfg = fx.ready_config();
    cfg.probe_port = 0;
    fx.set_config(&cfg);
    let input = probe_frame(PEER, PEER_MAC, 43210, PROBE_PORT, &good);
    fx.run_from_uplink(&input).expect_passed(
        "a probe with probing off",
        &input,
        Stat::FromUplinkPassed,
    );
}

// ---------------------------------------------------------------------------
// NetworkPolicy: verdicts and connection tracking.
//
// The pods as the API would list them: LOCAL_POD is x/server (named port
// `http` = TCP 80), NEIGHBOUR_POD is x/client, REMOTE_POD is y/client on
// the peer. Policies are compiled by the agent's own compiler and written
// by its diff update, as the agent does.
// ---------------------------------------------------------------------------

const PROTO_SCTP: u8 = 132;

/// TCP flags.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// A TCP segment (no options, no payload) with `flags` and a valid checksum.
fn tcp_segment(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut s = tcp_syn(src, dst, sport, dport);
    s[13] = flags;
    s[16..18].copy_from_slice(&[0, 0]);
    let csum = l4_checksum(src, dst, PROTO_TCP, &s);
    s[16..18].copy_from_slice(&csum.to_be_bytes());
    s
}

fn tcp_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    Ipv4::new(PROTO_TCP, src, dst).packet(&tcp_segment(src, dst, sport, dport, flags))
}

/// An SCTP packet with one INIT chunk. The checksum (CRC32c) is left zero:
/// the programs never look at it.
fn sctp_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&[0; 8]); // verification tag 0 (INIT), checksum
    s.extend_from_slice(&[1, 0, 0, 20]); // INIT, flags, length 20
    s.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1]);
    Ipv4::new(PROTO_SCTP, src, dst).packet(&s)
}

/// An ICMP destination-unreachable (port unreachable) from `src` to `dst`
/// quoting `quoted` (an IPv4 packet; its header and first 8 bytes).
fn icmp_unreachable(src: Ipv4Addr, dst: Ipv4Addr, quoted: &[u8]) -> Vec<u8> {
    let mut s = vec![3, 3, 0, 0, 0, 0, 0, 0];
    s.extend_from_slice(&quoted[..28]);
    let csum = inet_checksum(&s);
    s[2..4].copy_from_slice(&csum.to_be_bytes());
    Ipv4::new(PROTO_ICMP, src, dst).packet(&s)
}

/// What the host stack hands `to_pod` for the local pod.
fn to_pod_frame(ip: &[u8]) -> Vec<u8> {
    ethernet(POD_MAC, HOST_MAC, ETH_P_IP, ip)
}

struct PolicyFixture {
    fx: Fixture,
    maps: overlay_agent::policy::PolicyMaps,
    applied: overlay_agent::policy::Compiled,
    ids: overlay_agent::policy::Identities,
    pods: std::collections::BTreeMap<String, overlay_agent::policy::types::Pod>,
    namespaces: std::collections::BTreeMap<String, overlay_agent::policy::types::Namespace>,
}

impl PolicyFixture {
    fn new() -> Self {
        let fx = Fixture::new();
        let maps = overlay_agent::policy::PolicyMaps::open(fx._pin.0.as_path())
            .unwrap_or_else(|e| panic!("opening the policy maps: {}", error_chain(&e)));
        let pod = |ns: &str, name: &str, app: &str, ip: Ipv4Addr| {
            serde_json::from_value::<overlay_agent::policy::types::Pod>(serde_json::json!({
                "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "ports": [
                    {"name": "http", "containerPort": 80, "protocol": "TCP"}
                ]}]},
                "status": {"podIP": ip.to_string(), "phase": "Running"},
            }))
            .expect("pod JSON")
        };
        let pods = [
            pod("x", "server", "server", LOCAL_POD),
            pod("x", "client", "client", NEIGHBOUR_POD),
            pod("y", "client", "client", REMOTE_POD),
        ]
        .into_iter()
        .map(|p| (p.key(), p))
        .collect();
        let namespaces = ["x", "y"]
            .into_iter()
            .map(|n| {
                let ns = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": n, "labels": {"team": n}}
                }))
                .expect("namespace JSON");
                (n.to_owned(), ns)
            })
            .collect();
        Self {
            fx,
            maps,
            applied: Default::default(),
            ids: Default::default(),
            pods,
            namespaces,
        }
    }

    /// Makes `policies` (specs in namespace `x`, by name) the cluster's.
    fn set(&mut self, policies: &[(&str, serde_json::Value)]) {
        let policies = policies
            .iter()
            .map(|(name, spec)| {
                let p: overlay_agent::policy::types::NetworkPolicy =
                    serde_json::from_value(serde_json::json!({
                        "metadata": {"name": name, "namespace": "x"},
                        "spec": spec,
                    }))
                    .expect("policy JSON");
                (p.key(), p)
            })
            .collect();
        let local = [LOCAL_POD, NEIGHBOUR_POD].into_iter().collect();
        let next = overlay_agent::policy::compile(
            &overlay_agent::policy::Inputs {
                pods: &self.pods,
                namespaces: &self.namespaces,
                policies: &policies,
                local: &local,
            },
            &mut self.ids,
        );
        assert!(next.problems.is_empty(), "{:?}", next.problems);
        self.maps
            .update(&self.applied, &next)
            .unwrap_or_else(|e| panic!("updating the policy maps: {}", error_chain(&e)));
        self.applied = next;
    }

    fn drops(&self, pod: Ipv4Addr) -> overlay_agent::policy::Drops {
        self.maps
            .drops()
            .unwrap_or_else(|e| panic!("reading policy drops: {}", error_chain(&e)))
            .get(&pod)
            .copied()
            .unwrap_or_default()
    }

    fn run_to_pod(&mut self, ip: &[u8]) -> Run {
        let ifindex = self.fx.pod_ifindex;
        self.fx
            .run(overlay_common::PROG_TO_POD, &to_pod_frame(ip), ifindex)
    }
}

#[test]
fn policy_ingress_allows_only_what_a_rule_allows_on_every_path_and_counts_drops_per_pod() {
    overlay_tests::privileged!(
        "policy_ingress_allows_only_what_a_rule_allows_on_every_path_and_counts_drops_per_pod"
    );
    let mut p = PolicyFixture::new();
    p.set(&[(
        "server",
        serde_json::json!({
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                         "ports": [{"port": "http"}]}],
        }),
    )]);

    // Same node: x/client may open TCP 80, nothing else.
    let ok = from_pod_frame(&tcp_packet(NEIGHBOUR_POD, LOCAL_POD, 40000, 80, SYN));
    p.fx.run_from_pod(&ok).expect(
        "x/client -> x/server TCP 80",
        TC_ACT_REDIRECT,
        Stat::FromPodLocal,
    );
    let other_port = from_pod_frame(&tcp_packet(NEIGHBOUR_POD, LOCAL_POD, 40001, 81, SYN));
    p.fx.run_from_pod(&other_port).expect_dropped(
        "x/client -> x/server TCP 81",
        &other_port,
        Stat::DropPolicyIngress,
    );
    let udp = from_pod_frame(&pod_udp(NEIGHBOUR_POD, LOCAL_POD, 40002, 80, b"u"));
    p.fx.run_from_pod(&udp).expect_dropped(
        "x/client -> x/server UDP 80",
        &udp,
        Stat::DropPolicyIngress,
    );
    // The server itself is not isolated for egress; the client not at all.
    let out = from_pod_frame(&tcp_packet(LOCAL_POD, NEIGHBOUR_POD, 40003, 22, SYN));
    p.fx.run_from_pod(&out).expect(
        "x/server -> x/client TCP 22",
        TC_ACT_REDIRECT,
        Stat::FromPodLocal,
    );

    // From another node: y/client is in another namespace.
    let remote = Vxlan::new(tcp_packet(REMOTE_POD, LOCAL_POD, 40004, 80, SYN)).frame();
    p.fx.run_from_uplink(&remote).expect_dropped(
        "y/client -> x/server over VXLAN",
        &remote,
        Stat::DropPolicyIngress,
    );

    // From the host stack: the node's own address (kubelet probes) passes,
    // another address does not.
    let probe = tcp_packet(NODE, LOCAL_POD, 40005, 8080, SYN);
    p.run_to_pod(&probe)
        .expect("node -> x/server (probe)", TC_ACT_OK, Stat::ToPodPassed);
    let outside = tcp_packet(STRANGER, LOCAL_POD, 40006, 80, SYN);
    let r = p.run_to_pod(&outside);
    r.expect("outside -> x/server", TC_ACT_SHOT, Stat::DropPolicyIngress);

    let d = p.drops(LOCAL_POD);
    assert_eq!((d.ingress, d.egress), (4, 0), "drops of x/server: {d:?}");
    assert_eq!(p.drops(NEIGHBOUR_POD), Default::default());

    // Deleting the policy opens the pod again.
    p.set(&[]);
    let again = from_pod_frame(&tcp_packet(NEIGHBOUR_POD, LOCAL_POD, 40007, 81, SYN));
    p.fx.run_from_pod(&again)
        .expect("no policy: TCP 81", TC_ACT_REDIRECT, Stat::FromPodLocal);
}

#[test]
fn policy_egress_is_decided_on_the_sending_node_with_ip_blocks_and_except() {
    overlay_tests::privileged!(
        "policy_egress_is_decided_on_the_sending_node_with_ip_blocks_and_except"
    );
    let mut p = PolicyFixture::new();
    p.set(&[(
        "dns-only",
        serde_json::json!({
            "podSelector": {"matchLabels": {"app": "server"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.96.0.0/24", "except": ["10.96.0.11/32"]}}],
                        "ports": [{"port": 53, "protocol": "UDP"}]}],
        }),
    )]);
    let dns = from_pod_frame(&pod_udp(
        LOCAL_POD,
        Ipv4Addr::new(10, 96, 0, 10),
        5000,
        53,
        b"q",
    ));
    p.fx.run_from_pod(&dns).expect_passed(
        "x/server -> 10.96.0.10 UDP 53",
        &dns,
        Stat::FromPodPassed,
    );
    let excepted = from_pod_frame(&pod_udp(
        LOCAL_POD,
        Ipv4Addr::new(10, 96, 0, 11),
        5000,
        53,
        b"q",
    ));
    p.fx.run_from_pod(&excepted).expect_dropped(
        "x/server -> 10.96.0.11 (except) UDP 53",
        &excepted,
        Stat::DropPolicyEgress,
    );
    let tcp = from_pod_frame(&tcp_packet(
        LOCAL_POD,
        Ipv4Addr::new(10, 96, 0, 10),
        5001,
        53,
        SYN,
    ));
    p.fx.run_from_pod(&tcp).expect_dropped(
        "x/server -> 10.96.0.10 TCP 53",
        &tcp,
        Stat::DropPolicyEgress,
    );
    let remote = from_pod_frame(&tcp_packet(LOCAL_POD, REMOTE_POD, 5002, 80, SYN));
    p.fx.run_from_pod(&remote).expect_dropped(
        "x/server -> y/client (other node)",
        &remote,
        Stat::DropPolicyEgress,
    );
    let ping = from_pod_frame(
        &Ipv4::new(PROTO_ICMP, LOCAL_POD, NEIGHBOUR_POD).packet(&icmp_echo(7, 1, b"p")),
    );
    p.fx.run_from_pod(&ping).expect_dropped(
        "x/server -> x/client ICMP",
        &ping,
        Stat::DropPolicyEgress,
    );
    let d = p.drops(LOCAL_POD);
    assert_eq!((d.ingress, d.egress), (0, 4), "drops of x/server: {d:?}");
}

#[test]
fn conntrack_lets_replies_of_allowed_connections_in_and_related_icmp_errors() {
    overlay_tests::privileged!(
        "conntrack_lets_replies_of_allowed_connections_in_and_related_icmp_errors"
    );
    let mut p = PolicyFixture::new();
    // Isolated both ways; may open TCP 80 and UDP 53 to y only.
    p.set(&[(
        "out-to-y",
        serde_json::json!({
            "podSelector": {"matchLabels": {"app": "server"}},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "y"}}}],
                        "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}],
        }),
    )]);

    // A connection out: SYN allowed by egress, the SYN-ACK back in by
    // connection tracking although nothing allows ingress.
    let syn = from_pod_frame(&tcp_packet(LOCAL_POD, REMOTE_POD, 41000, 80, SYN));
    let r = p.fx.run_from_pod(&syn);
    r.expect("SYN out", TC_ACT_REDIRECT, Stat::FromPodEncapsulated);
    let synack = Vxlan::new(tcp_packet(REMOTE_POD, LOCAL_POD, 80, 41000, SYN | ACK)).frame();
    p.fx.run_from_uplink(&synack).expect(
        "SYN-ACK in",
        TC_ACT_REDIRECT,
        Stat::FromUplinkDecapsulated,
    );
    let ack = from_pod_frame(&tcp_packet(LOCAL_POD, REMOTE_POD, 41000, 80, ACK));
    p.fx.run_from_pod(&ack)
        .expect("ACK out", TC_ACT_REDIRECT, Stat::FromPodEncapsulated);
    let data_in = Vxlan::new(tcp_packet(REMOTE_POD, LOCAL_POD, 80, 41000, ACK)).frame();
    p.fx.run_from_uplink(&data_in)
        .expect("data in", TC_ACT_REDIRECT, Stat::FromUplinkDecapsulated);

    // The same peer opening a connection of its own: dropped. A SYN is
    // always a new connection, even on the tuple of a tracked one.
    let new_in = Vxlan::new(tcp_packet(REMOTE_POD, LOCAL_POD, 41001, 80, SYN)).frame();
    p.fx.run_from_uplink(&new_in).expect_dropped(
        "new connection in",
        &new_in,
        Stat::DropPolicyIngress,
    );
    let reused = Vxlan::new(tcp_packet(REMOTE_POD, LOCAL_POD, 80, 41000, SYN)).frame();
    p.fx.run_from_uplink(&reused).expect_dropped(
        "a SYN on the reversed tuple of a tracked connection",
        &reused,
        Stat::DropPolicyIngress,
    );
    // An ACK that matches no connection is no reply either.
    let stray = Vxlan::new(tcp_packet(REMOTE_POD, LOCAL_POD, 80, 41999, ACK)).frame();
    p.fx.run_from_uplink(&stray)
        .expect_dropped("untracked ACK", &stray, Stat::DropPolicyIngress);

    // UDP out, and the ICMP error about it back in; an error quoting a
    // flow that was never allowed stays out.
    let query = pod_udp(LOCAL_POD, REMOTE_POD, 42000, 53, b"query");
    p.fx.run_from_pod(&from_pod_frame(&query)).expect(
        "UDP out",
        TC_ACT_REDIRECT,
        Stat::FromPodEncapsulated,
    );
    let related = Vxlan::new(icmp_unreachable(REMOTE_POD, LOCAL_POD, &query)).frame();
    p.fx.run_from_uplink(&related).expect(
        "related ICMP error in",
        TC_ACT_REDIRECT,
        Stat::FromUplinkDecapsulated,
    );
    let unrelated_query = pod_udp(LOCAL_POD, REMOTE_POD, 42001, 54, b"never sent");
    let unrelated = Vxlan::new(icmp_unreachable(REMOTE_POD, LOCAL_POD, &unrelated_query)).frame();
    p.fx.run_from_uplink(&unrelated).expect_dropped(
        "unrelated ICMP error in",
        &unrelated,
        Stat::DropPolicyIngress,
    );

    // RST ends the connection soon, but its last packets still pass.
    let rst = from_pod_frame(&tcp_packet(LOCAL_POD, REMOTE_POD, 41000, 80, RST | ACK));
    p.fx.run_from_pod(&rst)
        .expect("RST out", TC_ACT_REDIRECT, Stat::FromPodEncapsulated);
    let fin_in = Vxlan::new(tcp_packet(REMOTE_POD, LOCAL_POD, 80, 41000, FIN | ACK)).frame();
    p.fx.run_from_uplink(&fin_in).expect(
        "late FIN in",
        TC_ACT_REDIRECT,
        Stat::FromUplinkDecapsulated,
    );
    assert_eq!(p.drops(LOCAL_POD).ingress, 4);
}

#[test]
fn established_connections_outlive_a_policy_change_and_new_ones_follow_it() {
    overlay_tests::privileged!(
        "established_connections_outlive_a_policy_change_and_new_ones_follow_it"
    );
    let mut p = PolicyFixture::new();
    let allow = serde_json::json!({
        "podSelector": {"matchLabels": {"app": "server"}},
        "ingress": [{"from": [{"podSelector": {}}]}],
    });
    p.set(&[("allow", allow)]);
    let syn = from_pod_frame(&tcp_packet(NEIGHBOUR_POD, LOCAL_POD, 43000, 80, SYN));
    p.fx.run_from_pod(&syn)
        .expect("SYN under allow", TC_ACT_REDIRECT, Stat::FromPodLocal);

    // Deny all ingress now.
    p.set(&[("deny", serde_json::json!({"podSelector": {}}))]);
    let data = from_pod_frame(&tcp_packet(NEIGHBOUR_POD, LOCAL_POD, 43000, 80, ACK));
    p.fx.run_from_pod(&data).expect(
        "the established connection goes on",
        TC_ACT_REDIRECT,
        Stat::FromPodLocal,
    );
    let reply = from_pod_frame(&tcp_packet(LOCAL_POD, NEIGHBOUR_POD, 80, 43000, ACK));
    p.fx.run_from_pod(&reply)
        .expect("its replies too", TC_ACT_REDIRECT, Stat::FromPodLocal);
    let new = from_pod_frame(&tcp_packet(NEIGHBOUR_POD, LOCAL_POD, 43001, 80, SYN));
    p.fx.run_from_pod(&new)
        .expect_dropped("a new connection", &new, Stat::DropPolicyIngress);
    let again = from_pod_frame(&tcp_packet(NEIGHBOUR_POD, LOCAL_POD, 43000, 80, SYN));
    p.fx.run_from_pod(&again).expect_dropped(
        "a new connection on the old tuple",
        &again,
        Stat::DropPolicyIngress,
    );
}

#[test]
fn sctp_rules_match_sctp_ports_only() {
    overlay_tests::privileged!("sctp_rules_match_sctp_ports_only");
    let mut p = PolicyFixture::new();
    p.set(&[(
        "sctp",
        serde_json::json!({
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [{"ports": [{"port": 9000, "endPort": 9001, "protocol": "SCTP"}]}],
        }),
    )]);
    for port in [9000, 9001] {
        let ok = from_pod_frame(&sctp_packet(NEIGHBOUR_POD, LOCAL_POD, 5000, port));
        p.fx.run_from_pod(&ok)
            .expect(&format!("SCTP {port}"), TC_ACT_REDIRECT, Stat::FromPodLocal);
    }
    let remote = Vxlan::new(sctp_packet(REMOTE_POD, LOCAL_POD, 5000, 9000)).frame();
    p.fx.run_from_uplink(&remote).expect(
        "SCTP 9000 from another node",
        TC_ACT_REDIRECT,
        Stat::FromUplinkDecapsulated,
    );
    for (what, frame) in [
        (
            "SCTP 9002",
            from_pod_frame(&sctp_packet(NEIGHBOUR_POD, LOCAL_POD, 5000, 9002)),
        ),
        (
            "TCP 9000",
            from_pod_frame(&tcp_packet(NEIGHBOUR_POD, LOCAL_POD, 5000, 9000, SYN)),
        ),
        (
            "UDP 9000",
            from_pod_frame(&pod_udp(NEIGHBOUR_POD, LOCAL_POD, 5000, 9000, b"u")),
        ),
    ] {
        p.fx.run_from_pod(&frame)
            .expect_dropped(what, &frame, Stat::DropPolicyIngress);
    }
}

// ---------------------------------------------------------------------------
// Direct routing (`ROUTE_F_DIRECT`, `ovl_peer_macs_v1`).
// ---------------------------------------------------------------------------

/// A MAC that is no peer's.
const STRANGER_MAC: [u8; 6] = [0x02, 0xcc, 0x00, 0x00, 0x00, 0x09];

/// The fixture with the peer's MAC known and the peer's block direct.
fn direct_fixture() -> Fixture {
    let mut fx = Fixture::new();
    fx.maps
        .upsert_route_flags("10.32.2.0/24".parse().expect("block"), PEER, ROUTE_F_DIRECT)
        .expect("direct route");
    fx.maps
        .sync_peer_macs(&[(PEER, PEER_MAC)].into_iter().collect())
        .expect("peer MAC");
    fx
}

/// A directly routed frame on the wire: `smac` to our uplink, the pod
/// packet `ip` as it left the sending pod.
fn direct_frame(smac: [u8; 6], ip: &[u8]) -> Vec<u8> {
    ethernet(UL0_MAC, smac, ETH_P_IP, ip)
}

#[test]
fn from_pod_sends_to_a_direct_block_unencapsulated() {
    if !require_privileges("from_pod_sends_to_a_direct_block_unencapsulated") {
        return;
    }
    let mut fx = direct_fixture();
    let ip = pod_udp(LOCAL_POD, REMOTE_POD, 40000, 53, b"direct");
    let input = from_pod_frame(&ip);
    let r = fx.run_from_pod(&input);
    r.expect(
        "10.32.1.10 -> 10.32.2.10 (direct block)",
        TC_ACT_REDIRECT,
        Stat::FromPodDirect,
    );
    // `bpf_redirect_neigh` fills in the MACs when the packet leaves; the
    // program itself changes no byte: no outer headers, the pod's own
    // addresses.
    assert_bytes("direct frame", &r.out, &input);
}

#[test]
fn from_uplink_delivers_a_direct_packet_from_a_peer_mac_with_that_peers_source() {
    if !require_privileges(
        "from_uplink_delivers_a_direct_packet_from_a_peer_mac_with_that_peers_source",
    ) {
        return;
    }
    let mut fx = direct_fixture();
    let ip = remote_to_local();
    let r = fx.run_from_uplink(&direct_frame(PEER_MAC, &ip));
    r.expect(
        "10.32.2.10 -> 10.32.1.10 from the peer's MAC",
        TC_ACT_REDIRECT,
        Stat::FromUplinkDirect,
    );
    assert_bytes(
        "delivered frame",
        &r.out,
        &ethernet(POD_MAC, HOST_MAC, ETH_P_IP, &ip),
    );
}

#[test]
fn from_uplink_drops_direct_packets_from_strangers_dead_peers_and_wrong_sources() {
    if !require_privileges(
        "from_uplink_drops_direct_packets_from_strangers_dead_peers_and_wrong_sources",
    ) {
        return;
    }
    let mut fx = direct_fixture();
    // A third node's block, to be claimed by the wrong sender.
    fx.route("10.32.3.0/24", STRANGER);
    let from_peer = remote_to_local();
    let from_third = pod_udp(Ipv4Addr::new(10, 32, 3, 5), LOCAL_POD, 1, 2, b"x");
    let from_here = pod_udp(LOCAL_NO_POD, LOCAL_POD, 1, 2, b"x");
    for (what, smac, ip, stat) in [
        (
            "a stranger's MAC",
            STRANGER_MAC,
            &from_peer,
            Stat::DropDirectUnknownPeer,
        ),
        (
            "the peer's MAC, another node's source",
            PEER_MAC,
            &from_third,
            Stat::DropDirectSpoofedSource,
        ),
        (
            "the peer's MAC, a source of this node's block",
            PEER_MAC,
            &from_here,
            Stat::DropDirectSpoofedSource,
        ),
    ] {
        let input = direct_frame(smac, ip);
        fx.run_from_uplink(&input)
            .expect_dropped(what, &input, stat);
    }
    // From the peer, as itself, but for an address here that is no pod:
    // not handed to the stack, which would route it on.
    let no_pod = direct_frame(PEER_MAC, &pod_udp(REMOTE_POD, LOCAL_NO_POD, 1, 2, b"x"));
    fx.run_from_uplink(&no_pod).expect_dropped(
        "the peer's pod to an address here that is no pod",
        &no_pod,
        Stat::DropNoEndpoint,
    );
    // A peer that is known but withdrawn (not active) sends nothing direct.
    fx.maps.set_peer(PEER, false).expect("withdraw the peer");
    let input = direct_frame(PEER_MAC, &from_peer);
    fx.run_from_uplink(&input).expect_dropped(
        "a withdrawn peer's MAC",
        &input,
        Stat::DropDirectUnknownPeer,
    );
}

#[test]
fn from_uplink_passes_unencapsulated_traffic_that_is_not_pod_to_pod() {
    if !require_privileges("from_uplink_passes_unencapsulated_traffic_that_is_not_pod_to_pod") {
        return;
    }
    let mut fx = direct_fixture();
    for (what, ip) in [
        (
            "outside source to a local pod",
            pod_udp(Ipv4Addr::new(192, 0, 2, 7), LOCAL_POD, 1, 2, b"x"),
        ),
        (
            "a peer's pod to an address outside the cluster",
            pod_udp(REMOTE_POD, Ipv4Addr::new(192, 0, 2, 8), 1, 2, b"x"),
        ),
    ] {
        let input = direct_frame(STRANGER_MAC, &ip);
        fx.run_from_uplink(&input)
            .expect_passed(what, &input, Stat::FromUplinkPassed);
    }
}

#[test]
fn policy_ingress_applies_to_directly_routed_packets_as_to_decapsulated_ones() {
    overlay_tests::privileged!(
        "policy_ingress_applies_to_directly_routed_packets_as_to_decapsulated_ones"
    );
    let mut p = PolicyFixture::new();
    p.fx.maps
        .sync_peer_macs(&[(PEER, PEER_MAC)].into_iter().collect())
        .expect("peer MAC");
    // Clients of every namespace may open TCP 80 (`http`) of x/server.
    p.set(&[(
        "server",
        serde_json::json!({
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [{"from": [{"namespaceSelector": {},
                                   "podSelector": {"matchLabels": {"app": "client"}}}],
                         "ports": [{"port": "http"}]}],
        }),
    )]);
    let allowed = direct_frame(PEER_MAC, &tcp_packet(REMOTE_POD, LOCAL_POD, 40100, 80, SYN));
    let r = p.fx.run_from_uplink(&allowed);
    r.expect(
        "y/client -> x/server TCP 80, direct",
        TC_ACT_REDIRECT,
        Stat::FromUplinkDirect,
    );
    let refused = direct_frame(PEER_MAC, &tcp_packet(REMOTE_POD, LOCAL_POD, 40101, 81, SYN));
    p.fx.run_from_uplink(&refused).expect_dropped(
        "y/client -> x/server TCP 81, direct",
        &refused,
        Stat::DropPolicyIngress,
    );
    let d = p.drops(LOCAL_POD);
    assert_eq!((d.ingress, d.egress), (1, 0), "drops of x/server: {d:?}");
}

// ---------------------------------------------------------------------------
// Encryption (`ovl_encryption_v1`, `ROUTE_F_ENCRYPT`, `from_wireguard`).
// ---------------------------------------------------------------------------

/// The fixture with encryption on (the WireGuard device at `ifindex`) and
/// the peer's block flagged as encrypted when `peer_has_key`.
fn encryption_fixture(ifindex: u32, peer_has_key: bool) -> Fixture {
    let mut fx = Fixture::new();
    fx.maps
        .set_encryption(&Encryption {
            flags: ENCRYPTION_F_ON,
            ifindex,
        })
        .expect("encryption on");
    if peer_has_key {
        fx.maps
            .upsert_route_flags(
                "10.32.2.0/24".parse().expect("block"),
                PEER,
                ROUTE_F_ENCRYPT,
            )
            .expect("encrypted route");
    }
    fx
}

#[test]
fn from_pod_hands_remote_pod_traffic_to_the_wireguard_device_and_never_sends_it_in_clear() {
    if !require_privileges(
        "from_pod_hands_remote_pod_traffic_to_the_wireguard_device_and_never_sends_it_in_clear",
    ) {
        return;
    }
    let ip = pod_udp(LOCAL_POD, REMOTE_POD, 40000, 53, b"secret");
    let input = from_pod_frame(&ip);
    // The peer publishes a key: to the device, untouched (the kernel
    // strips the Ethernet header on the way into the L3 device).
    let mut fx = encryption_fixture(0, true);
    let wg = fx.ul0;
    fx.maps
        .set_encryption(&Encryption {
            flags: ENCRYPTION_F_ON,
            ifindex: wg,
        })
        .expect("device");
    let r = fx.run_from_pod(&input);
    r.expect(
        "to a peer with a key",
        TC_ACT_REDIRECT,
        Stat::FromPodEncrypted,
    );
    assert_bytes("frame handed to the device", &r.out, &input);
    // A local pod is still delivered directly.
    let local = from_pod_frame(&pod_udp(NEIGHBOUR_POD, LOCAL_POD, 40000, 53, b"x"));
    fx.run_from_pod(&local)
        .expect("to a local pod", TC_ACT_REDIRECT, Stat::FromPodLocal);
    // The peer publishes no key: dropped, even with direct routing on.
    let mut fx = encryption_fixture(wg, false);
    fx.run_from_pod(&input).expect_dropped(
        "to a peer without a key",
        &input,
        Stat::DropNotEncrypted,
    );
    fx.maps
        .upsert_route_flags("10.32.2.0/24".parse().expect("block"), PEER, ROUTE_F_DIRECT)
        .expect("direct route");
    fx.run_from_pod(&input).expect_dropped(
        "to a direct peer without a key",
        &input,
        Stat::DropNotEncrypted,
    );
    // The device not there yet (ifindex 0): dropped, not sent in clear.
    let mut fx = encryption_fixture(0, true);
    fx.run_from_pod(&input).expect_dropped(
        "before the device exists",
        &input,
        Stat::DropNotEncrypted,
    );
}

#[test]
fn from_uplink_refuses_pod_traffic_in_clear_while_encrypting() {
    if !require_privileges("from_uplink_refuses_pod_traffic_in_clear_while_encrypting") {
        return;
    }
    let mut fx = encryption_fixture(1, true);
    let vx = Vxlan::new(remote_to_local()).frame();
    fx.run_from_uplink(&vx)
        .expect_dropped("VXLAN from a peer", &vx, Stat::DropUnencrypted);
    fx.maps
        .sync_peer_macs(&[(PEER, PEER_MAC)].into_iter().collect())
        .expect("peer MAC");
    let direct = direct_frame(PEER_MAC, &remote_to_local());
    fx.run_from_uplink(&direct).expect_dropped(
        "a directly routed packet from a peer",
        &direct,
        Stat::DropUnencrypted,
    );
    // Its liveness probes and the node's own traffic are not pod traffic.
    let node = ethernet(
        UL0_MAC,
        PEER_MAC,
        ETH_P_IP,
        &Ipv4::new(PROTO_UDP, PEER, NODE).packet(&udp(PEER, NODE, 40000, 22, b"ssh")),
    );
    fx.run_from_uplink(&node)
        .expect_passed("node traffic", &node, Stat::FromUplinkPassed);
}

#[test]
fn from_wireguard_delivers_into_the_pod_what_another_node_sent_and_drops_the_rest() {
    if !require_privileges(
        "from_wireguard_delivers_into_the_pod_what_another_node_sent_and_drops_the_rest",
    ) {
        return;
    }
    let mut fx = encryption_fixture(1, true);
    // The device writes bare IPv4 packets (an L3 interface).
    let ip = remote_to_local();
    let r = fx.run(PROG_FROM_WIREGUARD, &ip, 0);
    r.expect(
        "10.32.2.10 -> 10.32.1.10",
        TC_ACT_REDIRECT,
        Stat::FromWireguardDelivered,
    );
    assert_bytes(
        "delivered frame",
        &r.out,
        &ethernet(POD_MAC, HOST_MAC, ETH_P_IP, &ip),
    );
    for (what, src, dst, stat) in [
        (
            "source in this node's own block",
            LOCAL_NO_POD,
            LOCAL_POD,
            Stat::DropWireguardSpoofedSource,
        ),
        (
            "source in no block",
            Ipv4Addr::new(192, 0, 2, 7),
            LOCAL_POD,
            Stat::DropWireguardSpoofedSource,
        ),
        (
            "destination not a pod here",
            REMOTE_POD,
            LOCAL_NO_POD,
            Stat::DropNoEndpoint,
        ),
    ] {
        let p = pod_udp(src, dst, 33333, 8080, b"decrypted");
        fx.run(PROG_FROM_WIREGUARD, &p, 0)
            .expect_dropped(what, &p, stat);
    }
}
