//! The userspace WireGuard device: a TUN interface and a UDP socket, with
//! boringtun's Noise core per peer in between.
//!
//! Packets the kernel routes into the TUN device are looked up by
//! destination in the peers' allowed IPs (longest prefix), encrypted for
//! that peer and sent to its endpoint; a destination no peer allows is
//! dropped (`no_peer`), never sent. Datagrams arriving on the socket are
//! matched to a peer (a handshake by the static key it carries, the rest
//! by our session index), decrypted, and written to the TUN device only
//! when the inner source lies in that peer's allowed IPs
//! (`spoofed_source` otherwise): a peer can only speak for its own pod
//! blocks. Nothing leaves in clear: until a session is up, boringtun holds
//! a few packets for it and sends only the handshake.
//!
//! One thread runs the device ([`Device::run`]); the desired state
//! ([`DeviceConfig`]) is applied by diff, so that a peer whose endpoint or
//! blocks change keeps its session.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs::File,
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use boringtun::{
    noise::{Packet, Tunn, TunnResult, handshake::parse_handshake_anon},
    x25519::PublicKey,
};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{
    keys::{self, KeyPair},
    offload::{self, Coalescer, VNET_HDR_LEN, VnetHdr},
};
use crate::link;

/// Largest packet read from the TUN device (after its `virtio_net_hdr`) or
/// the socket.
const BUF: usize = 65_535;
/// Largest UDP payload of one `sendmsg` (IPv4: 65,535 minus the IPv4 and
/// UDP headers).
const MAX_GSO_BYTES: usize = 65_507;
/// Most datagrams the kernel cuts one `sendmsg` into (`UDP_MAX_SEGMENTS`
/// on older kernels).
const MAX_GSO_SEGMENTS: usize = 64;
/// `setsockopt(SOL_UDP, ...)` and control message type: one send cut into
/// datagrams of the given size.
const UDP_SEGMENT: libc::c_int = 103;
/// `setsockopt(SOL_UDP, ...)` and control message type: datagrams of one
/// flow received together, with their size.
const UDP_GRO: libc::c_int = 104;
/// WireGuard's overhead on a data packet (type, index, counter, tag).
pub const OVERHEAD_DATA: usize = 32;
/// Receive buffer of the socket.
const SOCKET_BUFFER: usize = 8 << 20;
/// How often every peer's timers run (handshake retries, rekeys,
/// keepalives, session expiry).
const TIMER_TICK: Duration = Duration::from_millis(250);

/// What the device should be: written by the agent, read by the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// TUN interface name.
    pub device: String,
    /// UDP port the socket listens on (every node uses the same).
    pub listen_port: u16,
    /// MTU of the TUN device.
    pub mtu: u32,
    /// This node's private key file (see [`keys`]).
    pub key_file: PathBuf,
    /// The peers, by public key.
    pub peers: Vec<PeerConfig>,
}

/// One peer as gossip describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    /// Its public key (base64).
    pub public_key: String,
    /// Where its WireGuard socket listens.
    pub endpoint: SocketAddrV4,
    /// The addresses it may send from and that are sent to it (its pod
    /// blocks).
    pub allowed_ips: Vec<Ipv4Net>,
}

/// Why the device could not start or take a configuration.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Opening or configuring the TUN device failed.
    #[error("TUN device {device}: {what}")]
    Tun {
        /// The device.
        device: String,
        /// What failed.
        what: &'static str,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
    /// Setting the device's MTU or state failed.
    #[error("TUN device")]
    Link(#[from] link::LinkError),
    /// Binding the socket failed.
    #[error("binding the WireGuard socket to port {port}")]
    Bind {
        /// The port.
        port: u16,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
    /// The key file.
    #[error("WireGuard key")]
    Key(#[from] keys::KeyError),
    /// A peer's public key is not base64 of 32 bytes.
    #[error("peer {endpoint}: public key {key:?} is not 32 bytes in base64")]
    PeerKey {
        /// The peer's endpoint.
        endpoint: SocketAddrV4,
        /// The key as given.
        key: String,
    },
    /// Two peers have the same public key.
    #[error("two peers have the public key {key}")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// Two peers list the same network: which one it goes to is ambiguous.
    #[error("{net} is an allowed network of two peers ({a} and {b})")]
    SharedNetwork {
        /// The network.
        net: Ipv4Net,
        /// One peer's endpoint.
        a: SocketAddrV4,
        /// The other's.
        b: SocketAddrV4,
    },
}

/// The peers of `config` by decoded public key, or why the configuration
/// is not one a device can take.
fn validate(config: &DeviceConfig) -> Result<Vec<([u8; 32], PeerConfig)>, DeviceError> {
    let mut wanted = Vec::with_capacity(config.peers.len());
    let mut keys_seen = HashSet::new();
    let mut nets: HashMap<Ipv4Net, SocketAddrV4> = HashMap::new();
    for p in &config.peers {
        let key = keys::decode(&p.public_key).ok_or_else(|| DeviceError::PeerKey {
            endpoint: p.endpoint,
            key: p.public_key.clone(),
        })?;
        if !keys_seen.insert(key) {
            return Err(DeviceError::DuplicateKey {
                key: p.public_key.clone(),
            });
        }
        for net in &p.allowed_ips {
            if let Some(a) = nets.insert(net.trunc(), p.endpoint) {
                return Err(DeviceError::SharedNetwork {
                    net: *net,
                    a,
                    b: p.endpoint,
                });
            }
        }
        wanted.push((key, p.clone()));
    }
    Ok(wanted)
}

/// Counters of the device (monotonic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStats {
    /// Packets read from the TUN device and handed to a peer.
    pub tx_packets: u64,
    /// Decrypted packets written to the TUN device.
    pub rx_packets: u64,
    /// Dropped: no peer allows the destination.
    pub no_peer: u64,
    /// Dropped: not IPv4, or too short to be a packet.
    pub malformed: u64,
    /// Dropped: a datagram no peer of ours could have sent (unknown key
    /// or index), or one that failed to authenticate or decrypt.
    pub rejected: u64,
    /// Dropped: decrypted, but its source is outside the sender's
    /// allowed IPs.
    pub spoofed_source: u64,
    /// Packets for a peer without a session (none yet, or the handshake
    /// being renewed): boringtun holds up to 256 per peer and sends them
    /// once the handshake completes, and drops the rest. Never sent in
    /// clear.
    #[serde(default)]
    pub no_session: u64,
}

/// One peer's state, for `status` and `/metrics`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its public key (base64).
    pub public_key: String,
    /// Its endpoint.
    pub endpoint: SocketAddrV4,
    /// Seconds since the last completed handshake (`None`: no session).
    pub last_handshake_s: Option<f64>,
    /// Plaintext bytes sent to it.
    pub tx_bytes: u64,
    /// Plaintext bytes received from it.
    pub rx_bytes: u64,
}

struct Peer {
    config: PeerConfig,
    tunn: Tunn,
}

/// The loop's buffers.
struct Buffers {
    /// What is read: a TUN packet with its header, or merged datagrams.
    input: Vec<u8>,
    /// What boringtun writes: one datagram, or one decrypted packet
    /// behind room for the TUN header.
    out: Vec<u8>,
    /// One segment of a super-packet.
    scratch: Vec<u8>,
    /// Decrypted segments merged on their way to the TUN device.
    merge: Coalescer,
    /// Datagrams waiting to leave in one `sendmsg`.
    batch: Batch,
}

impl Buffers {
    fn new() -> Self {
        Self {
            input: vec![0u8; VNET_HDR_LEN + BUF],
            out: vec![0u8; BUF + OVERHEAD_DATA],
            scratch: vec![0u8; BUF],
            merge: Coalescer::default(),
            batch: Batch::default(),
        }
    }
}

/// Datagrams of one size to one endpoint, sent together with UDP GSO (the
/// kernel cuts them apart again; the last may be shorter).
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    size: usize,
    count: usize,
    to: Option<SocketAddrV4>,
}

impl Batch {
    /// Adds a datagram, sending what is held first when it does not fit.
    fn push(&mut self, udp: &UdpSocket, to: SocketAddrV4, d: &[u8]) {
        let fits = self.to == Some(to)
            && d.len() <= self.size
            && self.count < MAX_GSO_SEGMENTS
            && self.buf.len() + d.len() <= MAX_GSO_BYTES
            // Only the last datagram may be shorter.
            && self.buf.len() == self.size * self.count;
        if !fits {
            self.flush(udp);
            self.to = Some(to);
            self.size = d.len();
        }
        self.buf.extend_from_slice(d);
        self.count += 1;
    }

    /// Sends what is held.
    fn flush(&mut self, udp: &UdpSocket) {
        let Some(to) = self.to.take() else {
            return;
        };
        let sent = self.count > 1 && send_gso(udp, to, &self.buf, self.size).is_ok();
        if !sent {
            // One by one: a single datagram, or the kernel refused the
            // batch (e.g. datagrams larger than the path MTU, which it
            // only fragments one at a time).
            for d in self.buf.chunks(self.size.max(1)) {
                let _ = udp.send_to(d, to);
            }
        }
        self.buf.clear();
        self.count = 0;
    }
}

/// Sends `buf` as datagrams of `size` bytes (the last may be shorter) in
/// one system call.
fn send_gso(udp: &UdpSocket, to: SocketAddrV4, buf: &[u8], size: usize) -> io::Result<()> {
    let mut addr: libc::sockaddr_in = unsafe_zeroed_sockaddr();
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_port = to.port().to_be();
    addr.sin_addr.s_addr = u32::from_ne_bytes(to.ip().octets());
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // Room for one cmsg holding a u16, aligned.
    let mut control = [0u64; 4];
    let mut msg = message(&mut addr, &mut iov, &mut control);
    // SAFETY: CMSG_SPACE is a pure computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    // SAFETY: the control buffer is large enough for one cmsg of a u16.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size as u16);
    }
    // SAFETY: a valid socket and message.
    let n = unsafe { libc::sendmsg(udp.as_raw_fd(), &msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A `msghdr` over one address, one buffer and a control buffer (the
/// caller keeps all three alive while the kernel uses the message).
fn message(
    addr: &mut libc::sockaddr_in,
    iov: &mut libc::iovec,
    control: &mut [u64],
) -> libc::msghdr {
    // SAFETY: an all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = std::ptr::from_mut(addr).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = std::ptr::from_mut(iov);
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(control);
    msg
}

fn unsafe_zeroed_sockaddr() -> libc::sockaddr_in {
    // SAFETY: an all-zero sockaddr_in is valid.
    unsafe { std::mem::zeroed() }
}

/// Receives into `buf`: bytes, sender, and the size of each datagram when
/// GRO merged several (0: one datagram). `None` when nothing is waiting.
fn recv_gro(udp: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr, usize)> {
    let mut addr = unsafe_zeroed_sockaddr();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    let mut msg = message(&mut addr, &mut iov, &mut control);
    // SAFETY: a valid socket and message.
    let n = unsafe { libc::recvmsg(udp.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return None;
    }
    let mut seg = 0;
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                seg = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>()) as usize;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let from = SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
        u16::from_be(addr.sin_port),
    ));
    Some((n as usize, from, seg))
}

/// Longest-prefix match of IPv4 destinations to peer indices.
#[derive(Default)]
struct Lpm {
    /// By prefix length, longest first: network -> peer index.
    by_len: BTreeMap<std::cmp::Reverse<u8>, HashMap<u32, u32>>,
}

impl Lpm {
    fn insert(&mut self, net: Ipv4Net, peer: u32) {
        self.by_len
            .entry(std::cmp::Reverse(net.prefix_len()))
            .or_default()
            .insert(u32::from(net.network()), peer);
    }

    fn lookup(&self, ip: Ipv4Addr) -> Option<u32> {
        let ip = u32::from(ip);
        self.by_len.iter().find_map(|(len, nets)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(len.0)).unwrap_or(0);
            nets.get(&(ip & mask)).copied()
        })
    }
}

/// The device.
pub struct Device {
    config: DeviceConfig,
    tun: File,
    udp: UdpSocket,
    key: KeyPair,
    peers: HashMap<u32, Peer>,
    by_key: HashMap<[u8; 32], u32>,
    routes: Lpm,
    next_index: u32,
    stats: DeviceStats,
}

fn open_tun(name: &str) -> Result<File, DeviceError> {
    let err = |what, source| DeviceError::Tun {
        device: name.to_owned(),
        what,
        source,
    };
    let path = c"/dev/net/tun";
    // SAFETY: a NUL-terminated path; the returned descriptor is owned below.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(err("opening /dev/net/tun", io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = link::ifreq(name, "TUN")?;
    // With a `virtio_net_hdr` in front of every packet, which lets the
    // kernel hand us TCP super-packets (TSO) and leave checksums to us
    // (see [`offload`]).
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads the name and flags of a valid ifreq.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(err("TUNSETIFF", io::Error::last_os_error()));
    }
    let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO_ECN;
    // SAFETY: TUNSETOFFLOAD takes an integer argument.
    if unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            offloads as libc::c_ulong,
        )
    } < 0
    {
        return Err(err("TUNSETOFFLOAD", io::Error::last_os_error()));
    }
    // Persistent: the interface and the routes through it outlive this
    // process, so a restart of the device costs the gap until it runs
    // again and a handshake, not the routes.
    // SAFETY: TUNSETPERSIST takes an integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(err("TUNSETPERSIST", io::Error::last_os_error()));
    }
    Ok(File::from(fd))
}

impl Device {
    /// Creates the TUN device (or attaches to the one of that name), brings
    /// it up, binds the socket and applies `config`.
    pub fn new(config: DeviceConfig) -> Result<Self, DeviceError> {
        let key = keys::load_or_create(&config.key_file)?;
        let tun = open_tun(&config.device)?;
        // IPv4 only: no link-local address, no router solicitations read
        // back as malformed packets.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", config.device),
            "1",
        );
        link::set_mtu_up(&config.device, config.mtu)?;
        let port = config.listen_port;
        let udp = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|source| DeviceError::Bind { port, source })?;
        // Bursts of a bulk flow arrive faster than one thread decrypts
        // them; the default 208 KiB drops them (and TCP backs off).
        crate::gossip::swim::udp::enlarge_receive_buffer(&udp, SOCKET_BUFFER);
        // The datagrams of one flow arrive merged (GRO), read in one call.
        // Without it (an old kernel) they arrive one by one, which works.
        let on: libc::c_int = 1;
        // SAFETY: a valid socket, an int option of the right size.
        unsafe {
            libc::setsockopt(
                udp.as_raw_fd(),
                libc::SOL_UDP,
                UDP_GRO,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let mut device = Self {
            config: DeviceConfig {
                peers: Vec::new(),
                ..config.clone()
            },
            tun,
            udp,
            key,
            peers: HashMap::new(),
            by_key: HashMap::new(),
            routes: Lpm::default(),
            next_index: 1,
            stats: DeviceStats::default(),
        };
        device.apply(config)?;
        Ok(device)
    }

    /// This node's public key (base64).
    pub fn public_key(&self) -> String {
        self.key.public_base64()
    }

    /// Counters.
    pub fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// Every peer's state.
    pub fn peer_status(&self) -> Vec<PeerStatus> {
        let mut out: Vec<PeerStatus> = self
            .peers
            .values()
            .map(|p| {
                let (since, tx, rx, _, _) = p.tunn.stats();
                PeerStatus {
                    public_key: p.config.public_key.clone(),
                    endpoint: p.config.endpoint,
                    last_handshake_s: since.map(|d| d.as_secs_f64()),
                    tx_bytes: tx as u64,
                    rx_bytes: rx as u64,
                }
            })
            .collect();
        out.sort_by_key(|p| p.endpoint);
        out
    }

    /// Takes a new desired state (all of it, or nothing when it is not
    /// valid): peers added, changed (endpoint, allowed IPs; sessions kept)
    /// and removed; the private key re-read from the
    /// key file, and when it changed every session is dropped and
    /// renegotiated. The device name, port and MTU are fixed at start.
    pub fn apply(&mut self, config: DeviceConfig) -> Result<(), DeviceError> {
        let wanted = validate(&config)?;
        let key = keys::load_or_create(&config.key_file)?;
        if key.public.as_bytes() != self.key.public.as_bytes() {
            for p in self.peers.values_mut() {
                p.tunn
                    .set_static_private(key.secret.clone(), key.public, None);
            }
            self.key = key;
        }
        let keep: HashSet<[u8; 32]> = wanted.iter().map(|(k, _)| *k).collect();
        let gone: Vec<[u8; 32]> = self
            .by_key
            .keys()
            .filter(|k| !keep.contains(*k))
            .copied()
            .collect();
        for k in gone {
            if let Some(i) = self.by_key.remove(&k) {
                self.peers.remove(&i);
            }
        }
        let mut fresh = Vec::new();
        for (k, p) in wanted {
            match self.by_key.get(&k) {
                Some(i) => {
                    if let Some(peer) = self.peers.get_mut(i) {
                        peer.config = p;
                    }
                }
                None => {
                    let i = self.fresh_index();
                    let tunn = Tunn::new(
                        self.key.secret.clone(),
                        PublicKey::from(k),
                        None,
                        None,
                        i,
                        None,
                    );
                    self.by_key.insert(k, i);
                    self.peers.insert(i, Peer { config: p, tunn });
                    fresh.push(i);
                }
            }
        }
        let mut routes = Lpm::default();
        for (i, p) in &self.peers {
            for net in &p.config.allowed_ips {
                routes.insert(*net, *i);
            }
        }
        self.routes = routes;
        self.config = config;
        // A handshake with every new peer now rather than at its first
        // packet: after a restart of this device the peers still hold
        // sessions this one forgot, and would keep using them until their
        // own rekey timeout (15 s) if nothing told them.
        let mut buf = [0u8; 256];
        for i in fresh {
            if let Some(peer) = self.peers.get_mut(&i)
                && let TunnResult::WriteToNetwork(d) =
                    peer.tunn.format_handshake_initiation(&mut buf, false)
            {
                let _ = self.udp.send_to(d, peer.config.endpoint);
            }
        }
        Ok(())
    }

    /// A 24-bit session index no current peer uses.
    fn fresh_index(&mut self) -> u32 {
        loop {
            let i = self.next_index;
            self.next_index = (self.next_index + 1) & 0x00ff_ffff;
            if i != 0 && !self.peers.contains_key(&i) {
                return i;
            }
        }
    }

    /// Runs until `stop` is set; `tick` sees the device every timer tick
    /// and may return a new desired state.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        mut tick: impl FnMut(&Device) -> Option<DeviceConfig>,
    ) -> Result<(), DeviceError> {
        let mut bufs = Buffers::new();
        let mut last_tick = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [
                libc::pollfd {
                    fd: self.tun.as_fd().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.udp.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, TIMER_TICK.as_millis() as i32) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(DeviceError::Tun {
                        device: self.config.device.clone(),
                        what: "poll",
                        source: e,
                    });
                }
            }
            if fds[0].revents & libc::POLLIN != 0 {
                self.drain_tun(&mut bufs);
            }
            if fds[1].revents & libc::POLLIN != 0 {
                self.drain_udp(&mut bufs);
            }
            if last_tick.elapsed() >= TIMER_TICK {
                last_tick = Instant::now();
                self.tick(&mut bufs.out);
                if let Some(c) = tick(self)
                    && let Err(e) = self.apply(c)
                {
                    tracing::warn!(
                        error = %crate::cni::error::chain(&e),
                        "WireGuard configuration refused; keeping the previous one"
                    );
                }
            }
        }
        Ok(())
    }

    /// Encrypts what the kernel routed to the device (bounded per call):
    /// each read is one packet or a TCP super-packet, cut into segments
    /// ([`offload`]); the segments' datagrams leave in one `sendmsg`.
    fn drain_tun(&mut self, bufs: &mut Buffers) {
        let Buffers {
            input,
            out,
            scratch,
            batch,
            ..
        } = bufs;
        for _ in 0..1024 {
            let n = match self.tun.read(input) {
                Ok(n) => n,
                Err(_) => break,
            };
            let (Some(hdr), Some(packet)) =
                (VnetHdr::parse(&input[..n]), input.get_mut(VNET_HDR_LEN..n))
            else {
                self.stats.malformed += 1;
                continue;
            };
            if packet.len() < 20 || packet[0] >> 4 != 4 {
                self.stats.malformed += 1;
                continue;
            }
            let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
            let Some(peer) = self.routes.lookup(dst).and_then(|i| self.peers.get_mut(&i)) else {
                self.stats.no_peer += 1;
                continue;
            };
            let endpoint = peer.config.endpoint;
            let (udp, stats) = (&self.udp, &mut self.stats);
            let done = offload::for_each_packet(&hdr, packet, scratch, |seg| {
                stats.tx_packets += 1;
                match peer.tunn.encapsulate(seg, out) {
                    TunnResult::WriteToNetwork(d) => {
                        // Anything but a data message (type 4) means the
                        // packet was held for a session: a handshake goes
                        // out instead.
                        if d.first() != Some(&4) {
                            stats.no_session += 1;
                        }
                        batch.push(udp, endpoint, d);
                    }
                    _ => stats.no_session += 1,
                }
            });
            if done.is_err() {
                self.stats.malformed += 1;
            }
        }
        bufs.batch.flush(&self.udp);
    }

    /// Decrypts what arrived on the socket (bounded per call); one read
    /// may hold several datagrams of one sender, merged by GRO.
    fn drain_udp(&mut self, bufs: &mut Buffers) {
        for _ in 0..1024 {
            let Some((n, from, seg)) = recv_gro(&self.udp, &mut bufs.input) else {
                return;
            };
            let SocketAddr::V4(from) = from else {
                self.stats.rejected += 1;
                continue;
            };
            let seg = if seg == 0 { n } else { seg };
            let mut at = 0;
            while at < n {
                let end = (at + seg).min(n);
                let datagram = &bufs.input[at..end];
                at = end;
                let Some(i) = self.sender_of(datagram) else {
                    self.stats.rejected += 1;
                    continue;
                };
                self.receive_from(i, from, datagram, &mut bufs.out, &mut bufs.merge);
            }
            // What one read brought is written before the next read.
            let tun = &mut self.tun;
            bufs.merge.flush(&mut |b| {
                let _ = tun.write(b);
            });
        }
    }

    /// The peer a datagram claims to come from: by the static key inside a
    /// handshake initiation, by our index otherwise.
    fn sender_of(&self, datagram: &[u8]) -> Option<u32> {
        match Tunn::parse_incoming_packet(datagram).ok()? {
            Packet::HandshakeInit(p) => {
                let half = parse_handshake_anon(&self.key.secret, &self.key.public, &p).ok()?;
                self.by_key.get(&half.peer_static_public).copied()
            }
            Packet::HandshakeResponse(p) => Some(p.receiver_idx >> 8),
            Packet::PacketCookieReply(p) => Some(p.receiver_idx >> 8),
            Packet::PacketData(p) => Some(p.receiver_idx >> 8),
        }
        .filter(|i| self.peers.contains_key(i))
    }

    /// Decrypts one datagram from peer `i`; what it holds goes to
    /// `merge` on its way to the TUN device.
    fn receive_from(
        &mut self,
        i: u32,
        from: SocketAddrV4,
        datagram: &[u8],
        outbuf: &mut [u8],
        merge: &mut Coalescer,
    ) {
        let Some(peer) = self.peers.get_mut(&i) else {
            return;
        };
        let endpoint = peer.config.endpoint;
        let mut first = true;
        loop {
            let input: &[u8] = if first { datagram } else { &[] };
            let src = first.then_some(IpAddr::V4(*from.ip()));
            first = false;
            match peer.tunn.decapsulate(src, input, outbuf) {
                TunnResult::Done => return,
                TunnResult::Err(_) => {
                    self.stats.rejected += 1;
                    return;
                }
                // A handshake answer, a cookie, or a packet held for the
                // session that just came up: send, then ask again.
                TunnResult::WriteToNetwork(d) => {
                    let _ = self.udp.send_to(d, endpoint);
                }
                TunnResult::WriteToTunnelV4(packet, src) => {
                    if !peer.config.allowed_ips.iter().any(|n| n.contains(&src)) {
                        self.stats.spoofed_source += 1;
                        return;
                    }
                    if packet.is_empty() {
                        // A keepalive.
                        return;
                    }
                    self.stats.rx_packets += 1;
                    let tun = &mut self.tun;
                    merge.push(packet, &mut |b| {
                        let _ = tun.write(b);
                    });
                    return;
                }
                TunnResult::WriteToTunnelV6(..) => {
                    self.stats.malformed += 1;
                    return;
                }
            }
        }
    }

    /// Runs every peer's timers.
    fn tick(&mut self, outbuf: &mut [u8]) {
        for peer in self.peers.values_mut() {
            if let TunnResult::WriteToNetwork(d) = peer.tunn.update_timers(outbuf) {
                let _ = self.udp.send_to(d, peer.config.endpoint);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(key: u8, endpoint: &str, nets: &[&str]) -> PeerConfig {
        PeerConfig {
            public_key: keys::encode(&[key; 32]),
            endpoint: endpoint.parse().unwrap(),
            allowed_ips: nets.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn a_configuration_with_a_bad_key_a_key_twice_or_a_network_twice_is_refused() {
        let config = |peers| DeviceConfig {
            device: "ovl-wg".into(),
            listen_port: 51820,
            mtu: 1420,
            key_file: "/nonexistent".into(),
            peers,
        };
        let good = config(vec![
            peer(1, "192.0.2.1:51820", &["10.32.0.0/26"]),
            peer(2, "192.0.2.2:51820", &["10.32.0.64/26"]),
        ]);
        assert_eq!(validate(&good).unwrap().len(), 2);
        let mut bad_key = good.clone();
        bad_key.peers[1].public_key = "nope".into();
        let e = validate(&bad_key).unwrap_err().to_string();
        assert!(
            e.contains("192.0.2.2:51820") && e.contains("not 32 bytes"),
            "{e}"
        );
        let mut twice = good.clone();
        twice.peers[1].public_key = twice.peers[0].public_key.clone();
        let e = validate(&twice).unwrap_err().to_string();
        assert!(e.contains("two peers have the public key"), "{e}");
        let mut shared = good.clone();
        shared.peers[1]
            .allowed_ips
            .push("10.32.0.0/26".parse().unwrap());
        let e = validate(&shared).unwrap_err().to_string();
        assert!(
            e.contains("10.32.0.0/26 is an allowed network of two peers"),
            "{e}"
        );
    }

    #[test]
    fn longest_prefix_wins_and_outside_every_block_is_no_one() {
        let mut lpm = Lpm::default();
        lpm.insert("10.32.0.0/12".parse().unwrap(), 1);
        lpm.insert("10.32.1.0/26".parse().unwrap(), 2);
        lpm.insert("0.0.0.0/0".parse().unwrap(), 3);
        assert_eq!(lpm.lookup("10.32.1.5".parse().unwrap()), Some(2));
        assert_eq!(lpm.lookup("10.32.1.64".parse().unwrap()), Some(1));
        assert_eq!(lpm.lookup("192.0.2.1".parse().unwrap()), Some(3));
        let mut lpm = Lpm::default();
        lpm.insert("10.32.1.0/26".parse().unwrap(), 2);
        assert_eq!(lpm.lookup("10.32.1.64".parse().unwrap()), None);
    }
}
