//! The agent's I/O around a [`Swim`] node: one UDP socket and tokio timers.
//!
//! [`Swim`] is sans-I/O; this task feeds it every datagram the socket
//! receives and every timer it armed, sends what it leaves in its outbox,
//! and counts the wire in [`WireCounters`] as the chitchat transport does.
//! The node sits behind a plain mutex held only for synchronous calls, so
//! the gossip runner can read the view and update the record between two
//! datagrams.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    net::{SocketAddr, SocketAddrV4},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{net::UdpSocket, sync::Notify, task::JoinHandle, time::Instant};
use tracing::{Instrument as _, debug, info_span, warn};

use super::{Received, Swim, SwimTimer};
use crate::gossip::auth::WireCounters;

/// Larger than any UDP payload, so `recv_from` never truncates.
const RECV_BUFFER_LEN: usize = 65_536;
/// Kernel receive buffer asked for the gossip socket. A push-pull answer
/// to a node that knows little (a joining node) is the whole record set
/// and member list: about 1 MB in 32 KB datagrams back to back at 5,000
/// nodes, which the usual 208 KB default drops mostly (each datagram
/// arrives as about 23 fragments and is charged about twice its size).
pub const SOCKET_RECV_BUFFER: usize = 8 << 20;

/// A [`Swim`] node running over a UDP socket.
pub struct SwimUdp {
    swim: Arc<Mutex<Swim>>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl SwimUdp {
    /// Starts `swim` (joins through its seeds) on `socket`.
    pub fn spawn(
        mut swim: Swim,
        socket: UdpSocket,
        wire: Arc<WireCounters>,
    ) -> Result<Self, super::SwimError> {
        let got = enlarge_receive_buffer(&socket, SOCKET_RECV_BUFFER);
        if got < SOCKET_RECV_BUFFER {
            warn!(
                got_kib = got / 1024,
                wanted_kib = SOCKET_RECV_BUFFER / 1024,
                "gossip socket receive buffer smaller than asked (no CAP_NET_ADMIN, and \
                 net.core.rmem_max lower): in clusters of thousands of nodes a joining \
                 node's first exchange may be partly dropped and take a few more rounds"
            );
        }
        swim.start()?;
        let name = swim.record().name.clone();
        let swim = Arc::new(Mutex::new(swim));
        let wake = Arc::new(Notify::new());
        let driver = Driver {
            swim: swim.clone(),
            wake: wake.clone(),
            socket,
            wire,
            timers: BinaryHeap::new(),
            armed: HashMap::new(),
            next_timer: 0,
        };
        let task = tokio::spawn(driver.run().instrument(info_span!("swim", node = %name)));
        Ok(Self { swim, wake, task })
    }

    /// The node, for a synchronous call. Call [`SwimUdp::flush`] after a
    /// call that may have something to send (a leave).
    pub fn lock(&self) -> MutexGuard<'_, Swim> {
        self.swim.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Has the socket task send what the node left to send now rather than
    /// at its next event.
    pub fn flush(&self) {
        self.wake.notify_one();
    }

    /// Stops the socket task (also done when dropped).
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

/// Asks for a receive buffer of `bytes` on `socket` (past
/// `net.core.rmem_max` with `SO_RCVBUFFORCE` where privileged, else up to
/// it); returns what the kernel granted (it reports twice the usable size,
/// halved here).
pub fn enlarge_receive_buffer(socket: &impl std::os::fd::AsRawFd, bytes: usize) -> usize {
    let fd = socket.as_raw_fd();
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let set = |opt: libc::c_int| {
        // SAFETY: a valid socket descriptor, an int option of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&raw const want).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    if !set(libc::SO_RCVBUFFORCE) {
        set(libc::SO_RCVBUF);
    }
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as above, with room for the int the kernel writes.
    let ok = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw mut got).cast(),
            &mut len,
        ) == 0
    };
    if ok {
        usize::try_from(got).unwrap_or(0) / 2
    } else {
        0
    }
}

impl Drop for SwimUdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Driver {
    swim: Arc<Mutex<Swim>>,
    wake: Arc<Notify>,
    socket: UdpSocket,
    wire: Arc<WireCounters>,
    /// Due times of armed timers (earliest first), by arming order.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    armed: HashMap<u64, SwimTimer>,
    next_timer: u64,
}

impl Driver {
    fn swim(&self) -> MutexGuard<'_, Swim> {
        self.swim.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(mut self) {
        let mut buf = vec![0; RECV_BUFFER_LEN];
        loop {
            self.flush().await;
            let due = self
                .timers
                .peek()
                .map(|Reverse((at, _))| *at)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((len, SocketAddr::V4(from))) => {
                        self.wire.received(len);
                        let got = self.swim().handle_datagram(from, &buf[..len]);
                        match got {
                            Received::Accepted => self.wire.accepted(),
                            Received::Rejected(reject) => {
                                debug!(%from, ?reject, "gossip datagram refused");
                                self.wire.count_reject(reject);
                            }
                            Received::Foreign | Received::OtherCluster | Received::Undecodable => {
                                self.wire.malformed()
                            }
                        }
                    }
                    Ok((len, from)) => {
                        self.wire.received(len);
                        self.wire.malformed();
                        debug!(%from, "gossip datagram from an IPv6 address: ignored");
                    }
                    // An ICMP error reported on the socket, or a transient
                    // failure: nothing to do with a datagram of ours.
                    Err(e) => {
                        debug!(error = %e, "gossip socket");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = tokio::time::sleep_until(due) => self.fire_due(),
                _ = self.wake.notified() => {}
            }
        }
    }

    fn fire_due(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(t) = self.armed.remove(&id) {
                due.push(t);
            }
        }
        let mut swim = self.swim.lock().unwrap_or_else(|p| p.into_inner());
        for t in due {
            swim.handle_timer(t);
        }
    }

    /// Arms the timers and sends the datagrams the node asked for.
    async fn flush(&mut self) {
        let out = self.swim().take_outbox();
        let now = Instant::now();
        for (after, t) in out.timers {
            self.next_timer += 1;
            self.timers.push(Reverse((now + after, self.next_timer)));
            self.armed.insert(self.next_timer, t);
        }
        for (to, datagram) in out.sends {
            self.send(to, &datagram).await;
        }
    }

    async fn send(&self, to: SocketAddrV4, datagram: &[u8]) {
        match self.socket.send_to(datagram, to).await {
            Ok(len) => self.wire.sent(len),
            Err(e) => {
                self.wire.send_failed();
                // Unreachable peers are the failure detector's business.
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    warn!(%to, error = %e, "gossip datagram not sent");
                } else {
                    debug!(%to, error = %e, "gossip datagram not sent");
                }
            }
        }
    }
}
