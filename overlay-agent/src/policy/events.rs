//! "blocked by NetworkPolicy" log lines, from the drops the programs put
//! in `ovl_policy_events_v1`: one line per flow (local pod, other end,
//! protocol, port, direction) at most every [`PER_FLOW`], and at most
//! [`PER_SECOND`] lines a second in all; a line says how many drops of its
//! flow were left unsaid since the last one.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, RingBuf};
use overlay_common::{
    DIR_EGRESS, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, MAP_POLICY_EVENTS,
    PolicyEvent,
};
use tracing::info;

use crate::maps::MapsError;

/// Shortest time between two lines about one flow.
pub const PER_FLOW: Duration = Duration::from_secs(10);
/// Most lines a second.
pub const PER_SECOND: u32 = 20;
/// How often the ring buffer is read.
pub const POLL: Duration = Duration::from_millis(100);

/// Reads the pinned ring buffer.
pub struct Events {
    ring: RingBuf<MapData>,
    last: HashMap<PolicyEvent, (Instant, u64)>,
    second: (Instant, u32),
}

impl Events {
    /// Opens `ovl_policy_events_v1` under `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        let path = pin_dir.join(MAP_POLICY_EVENTS);
        let err = |e| MapsError::Open {
            path: path.clone(),
            source: Box::new(e),
        };
        let data = MapData::from_pin(&path).map_err(err)?;
        let map = Map::from_map_data(data).map_err(err)?;
        Ok(Self {
            ring: RingBuf::try_from(map).map_err(err)?,
            last: HashMap::new(),
            second: (Instant::now(), 0),
        })
    }

    /// Logs what the ring buffer holds now; `name` gives a pod's
    /// `namespace/name` by address.
    pub fn drain(&mut self, name: &dyn Fn(Ipv4Addr) -> Option<String>) {
        let now = Instant::now();
        if now.duration_since(self.second.0) >= Duration::from_secs(1) {
            self.second = (now, 0);
        }
        let mut events = Vec::new();
        while let Some(item) = self.ring.next() {
            if item.len() >= size_of::<PolicyEvent>() {
                // SAFETY: the programs write whole `PolicyEvent`s; the
                // read is unaligned-safe.
                events
                    .push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<PolicyEvent>()) });
            }
        }
        for e in events {
            let entry = self.last.entry(e).or_insert((now - PER_FLOW, 0));
            entry.1 += 1;
            if now.duration_since(entry.0) < PER_FLOW || self.second.1 >= PER_SECOND {
                continue;
            }
            let unsaid = entry.1 - 1;
            *entry = (now, 0);
            self.second.1 += 1;
            log(&e, unsaid, name);
        }
        self.last
            .retain(|_, (t, n)| *n > 0 || now.duration_since(*t) < PER_FLOW);
    }
}

fn log(e: &PolicyEvent, unsaid: u64, name: &dyn Fn(Ipv4Addr) -> Option<String>) {
    let local = Ipv4Addr::from(e.local);
    let remote = Ipv4Addr::from(e.remote);
    let who = |ip: Ipv4Addr| match name(ip) {
        Some(n) => format!("{n} ({ip})"),
        None => ip.to_string(),
    };
    let proto = match e.proto {
        IPPROTO_TCP => "TCP".to_owned(),
        IPPROTO_UDP => "UDP".to_owned(),
        IPPROTO_SCTP => "SCTP".to_owned(),
        IPPROTO_ICMP => "ICMP".to_owned(),
        p => format!("protocol {p}"),
    };
    let port = u16::from_be_bytes(e.port);
    let (direction, src, dst) = if e.direction == DIR_EGRESS {
        ("egress", who(local), who(remote))
    } else {
        ("ingress", who(remote), who(local))
    };
    info!(
        direction,
        src,
        dst,
        proto,
        port,
        unsaid_drops = unsaid,
        "blocked by NetworkPolicy: {proto} {src} -> {dst} port {port} ({direction} of {})",
        who(local)
    );
}
