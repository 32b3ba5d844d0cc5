//! A mixed cluster during a rolling upgrade: an agent of the current
//! release (chitchat over the authenticated UDP transport) and two nodes of
//! the SWIM layer, same password, over real UDP sockets on loopback.
//!
//! What must happen: the two releases refuse each other's datagrams after
//! authenticating them (counted, nothing parsed into state), neither learns
//! a record from the other, and the new nodes still form between
//! themselves.

use std::{
    net::{SocketAddr, SocketAddrV4, UdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use overlay_agent::gossip::{
    Gossip, GossipConfig,
    auth::{Key, SecureUdpTransport, WireCounters},
    claims::ClaimConfig,
    swim::{NodeRecord, Swim, SwimConfig, SwimTimer},
};

const PASSWORD: &[u8] = b"rolling-upgrade";
const CLUSTER: &str = "mixed";

fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("binding an ephemeral loopback port");
    s.local_addr().expect("local address").port()
}

/// A SWIM node on a real loopback socket, driven by a plain loop.
struct Driven {
    swim: Swim,
    socket: UdpSocket,
    timers: Vec<(Instant, SwimTimer)>,
}

impl Driven {
    fn new(name: &str, port: u16, seeds: Vec<SocketAddrV4>) -> Self {
        let addr = SocketAddrV4::new([127, 0, 0, 1].into(), port);
        let socket = UdpSocket::bind(addr).expect("binding the SWIM node's socket");
        socket.set_nonblocking(true).expect("non-blocking socket");
        let record = NodeRecord {
            name: name.into(),
            generation: 1,
            seq: 0,
            gossip_addr: addr,
            ip: [127, 0, 0, 1].into(),
            vxlan_port: 4789,
            version: "next".into(),
            stopping: false,
            claims: Vec::new(),
            forgets: Vec::new(),
        };
        let mut config = SwimConfig::new(record, seeds, 3);
        config.key = Some(Key::derive(PASSWORD, CLUSTER));
        let mut swim = Swim::new(config).expect("valid SWIM configuration");
        swim.start().expect("joining");
        let mut d = Self {
            swim,
            socket,
            timers: Vec::new(),
        };
        d.flush();
        d
    }

    fn flush(&mut self) {
        let out = self.swim.take_outbox();
        let now = Instant::now();
        self.timers
            .extend(out.timers.into_iter().map(|(after, t)| (now + after, t)));
        for (to, data) in out.sends {
            // Loopback only; a full buffer loses a datagram as UDP would.
            let _ = self.socket.send_to(&data, to);
        }
    }

    fn poll(&mut self) {
        let mut buf = vec![0u8; 65_536];
        while let Ok((len, from)) = self.socket.recv_from(&mut buf) {
            if let SocketAddr::V4(from) = from {
                self.swim.handle_datagram(from, &buf[..len]);
                self.flush();
            }
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.timers.drain(..).partition(|(at, _)| *at <= now);
        self.timers = later;
        for (_, t) in due {
            self.swim.handle_timer(t);
            self.flush();
        }
    }
}

#[test]
fn an_agent_of_the_previous_release_and_swim_nodes_refuse_each_other_cleanly() {
    let (old_port, a_port, b_port) = (free_port(), free_port(), free_port());
    let old_addr: SocketAddr = ([127, 0, 0, 1], old_port).into();
    let a_addr = SocketAddrV4::new([127, 0, 0, 1].into(), a_port);
    let b_addr = SocketAddrV4::new([127, 0, 0, 1].into(), b_port);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let wire = Arc::new(WireCounters::default());
    let old = rt.block_on(async {
        let transport =
            SecureUdpTransport::new(Some(Key::derive(PASSWORD, CLUSTER)), 77, 1, wire.clone());
        let config = GossipConfig {
            node_name: "old".into(),
            generation: 1,
            node_ip: [127, 0, 0, 1].into(),
            vxlan_port: 4789,
            gossip_addr: old_addr,
            seeds: vec![a_addr.to_string(), b_addr.to_string()],
            cluster_id: CLUSTER.into(),
            interval: Duration::from_millis(200),
            phi_threshold: 8.0,
            claims: ClaimConfig {
                range: "10.32.0.0/12".parse().expect("range"),
                block_prefix: 24,
                settle: Duration::from_secs(30),
                low_water: 1,
                must_join: true,
            },
            state_file: None,
            authenticated: true,
            wireguard: None,
        };
        Gossip::spawn(
            config,
            &transport,
            Arc::new(|_: &[ipnet::Ipv4Net]| Some(100)),
            wire.clone(),
        )
        .await
        .expect("spawning the previous release's gossip")
    });
    let old_v4 = SocketAddrV4::new([127, 0, 0, 1].into(), old_port);
    let mut a = Driven::new("new-a", a_port, vec![old_v4]);
    let mut b = Driven::new("new-b", b_port, vec![old_v4, a_addr]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        a.poll();
        b.poll();
        std::thread::sleep(Duration::from_millis(5));
    }
    let old_status = old.status();
    rt.block_on(old.shutdown());

    for (me, other) in [(&a, "new-b"), (&b, "new-a")] {
        let s = me.swim.stats();
        assert!(
            s.foreign > 0,
            "{}: the old agent's datagrams were not seen and refused: {s:?}",
            me.swim.record().name
        );
        assert_eq!(
            s.rejected, 0,
            "authentication failed between releases: {s:?}"
        );
        assert!(
            me.swim.record_of("old").is_none(),
            "a record crossed releases"
        );
        assert!(
            me.swim.record_of(other).is_some(),
            "the new nodes did not form"
        );
        assert!(
            me.swim.is_live(other),
            "the new nodes do not hold each other alive"
        );
    }
    assert!(
        old_status.wire.malformed > 0 && old_status.wire.auth_failed == 0,
        "the old agent did not refuse the new datagrams as undecodable: {:?}",
        old_status.wire
    );
    assert!(
        old_status.peers.is_empty(),
        "the old agent learned a member from the new ones: {:?}",
        old_status.peers
    );
}
