//! NetworkPolicy truth tables: servers in pods, probes of every ordered
//! pair on every protocol and port, in parallel with short timeouts, and
//! the comparison of the whole matrix with the expected one (in the
//! spirit of upstream's `test/e2e/network/netpol` and of cyclonus).

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// What a server answers.
const ANSWER: &[u8] = b"ok";
/// How long a probe waits for a connection or an answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(600);
/// Probes in flight at once.
const PARALLEL: usize = 48;

/// Source ports of the UDP probes, handed out in turn from
/// [`UDP_SOURCE_PORTS`], so that no probe of a test process reuses the
/// 5-tuple of an earlier one. With kernel-chosen ports, a probe now and
/// then drew the port of an earlier probe of the same cell whose
/// connection-tracking entry (UDP: 120 s) was still live, and so passed as
/// part of a connection admitted under the earlier case's policy, which is
/// what established flows are meant to do, but not what a probe of the
/// current policy must see.
static NEXT_UDP_SOURCE: AtomicU32 = AtomicU32::new(0);

/// The range the UDP probes' source ports cycle through: below the kernel's
/// ephemeral range (32768 and up) and above the servers' ports.
const UDP_SOURCE_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A UDP socket in the current namespace on a source port no earlier probe
/// of this process used (until the range wraps), skipping ports in use.
/// Panics rather than report a probe as blocked when it could not be sent.
fn fresh_udp_socket() -> UdpSocket {
    let span = u32::from(UDP_SOURCE_PORTS.end - UDP_SOURCE_PORTS.start);
    for _ in 0..64 {
        let n = NEXT_UDP_SOURCE.fetch_add(1, Ordering::Relaxed) % span;
        let port = UDP_SOURCE_PORTS.start + n as u16;
        if let Ok(s) = UdpSocket::bind(("0.0.0.0", port)) {
            return s;
        }
    }
    panic!("no free UDP source port for a probe in {UDP_SOURCE_PORTS:?} after 64 tries");
}

/// A transport protocol probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP: a connection and the server's answer.
    Tcp,
    /// UDP: a datagram and the server's answer.
    Udp,
}

/// TCP and UDP servers on `ports` in one pod, answering [`ANSWER`] until
/// dropped.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Starts them in the network namespace at `netns`.
    pub fn start(netns: &std::path::Path, ports: &[u16]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &port in ports {
            let (tcp, udp) = overlay_agent::netns::run_in(netns, || {
                let tcp = TcpListener::bind(("0.0.0.0", port)).expect("TCP listener");
                let udp = UdpSocket::bind(("0.0.0.0", port)).expect("UDP socket");
                (tcp, udp)
            })
            .expect("entering the pod");
            tcp.set_nonblocking(true).expect("non-blocking listener");
            udp.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("UDP timeout");
            let s = stop.clone();
            threads.push(std::thread::spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    match tcp.accept() {
                        Ok((mut c, _)) => {
                            let _ = c.set_nonblocking(false);
                            let _ = c.write_all(ANSWER);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
            let s = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !s.load(Ordering::SeqCst) {
                    if let Ok((_, from)) = udp.recv_from(&mut buf) {
                        let _ = udp.send_to(ANSWER, from);
                    }
                }
            }));
        }
        Self { stop, threads }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Whether a pod in `netns` reaches `to`:`port` over `proto` (an answer
/// comes back within [`PROBE_TIMEOUT`]).
pub fn probe(netns: &std::path::Path, to: Ipv4Addr, proto: Proto, port: u16) -> bool {
    overlay_agent::netns::run_in(netns, || {
        let addr = SocketAddr::new(to.into(), port);
        let mut buf = [0u8; 8];
        match proto {
            Proto::Tcp => {
                let Ok(mut c) = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) else {
                    return false;
                };
                let _ = c.set_read_timeout(Some(PROBE_TIMEOUT));
                matches!(c.read(&mut buf), Ok(n) if &buf[..n] == ANSWER)
            }
            Proto::Udp => {
                let s = fresh_udp_socket();
                let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
                if s.send_to(b"probe", addr).is_err() {
                    return false;
                }
                matches!(s.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == ANSWER)
            }
        }
    })
    .expect("entering the pod")
}

/// A pod of the table: its name (`ns/pod`), network namespace and address.
#[derive(Clone, Debug)]
pub struct Target {
    /// `namespace/name`.
    pub name: String,
    /// Its network namespace.
    pub netns: PathBuf,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// One cell: from, to, protocol, port.
pub type Cell = (String, String, Proto, u16);

/// Every cell of the table of `pods` and `ports`: each ordered pair of
/// distinct pods, each protocol, each port.
pub fn matrix_cells(pods: &[Target], ports: &[u16]) -> Vec<Cell> {
    work(pods, ports)
        .into_iter()
        .map(|(f, t, proto, port)| (f.name, t.name, proto, port))
        .collect()
}

fn work(pods: &[Target], ports: &[u16]) -> Vec<(Target, Target, Proto, u16)> {
    let mut work = Vec::new();
    for from in pods {
        for to in pods {
            if from.name == to.name {
                continue;
            }
            for proto in [Proto::Tcp, Proto::Udp] {
                for &port in ports {
                    work.push((from.clone(), to.clone(), proto, port));
                }
            }
        }
    }
    work
}

/// Probes every ordered pair of `pods` on every protocol and port, in
/// parallel; the reachable cells are `true`.
pub fn matrix(pods: &[Target], ports: &[u16]) -> BTreeMap<Cell, bool> {
    let work = work(pods, ports);
    let work = Arc::new(Mutex::new(work));
    let out = Arc::new(Mutex::new(BTreeMap::new()));
    let workers: Vec<JoinHandle<()>> = (0..PARALLEL)
        .map(|_| {
            let work = work.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                loop {
                    let Some((from, to, proto, port)) = work.lock().expect("work").pop() else {
                        return;
                    };
                    let ok = probe(&from.netns, to.ip, proto, port);
                    out.lock()
                        .expect("results")
                        .insert((from.name, to.name, proto, port), ok);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a probe worker panicked");
    }
    Arc::into_inner(out)
        .expect("workers done")
        .into_inner()
        .expect("results")
}

/// The cells where `got` differs from `want`, one line each.
pub fn differences(got: &BTreeMap<Cell, bool>, want: &BTreeMap<Cell, bool>) -> Vec<String> {
    want.iter()
        .filter(|(cell, w)| got.get(*cell) != Some(w))
        .map(|((from, to, proto, port), w)| {
            format!(
                "{from} -> {to} {proto:?}/{port}: want {}, got {}",
                if *w { "allowed" } else { "blocked" },
                match got.get(&(from.clone(), to.clone(), *proto, *port)) {
                    Some(true) => "allowed",
                    Some(false) => "blocked",
                    None => "not probed",
                }
            )
        })
        .collect()
}
