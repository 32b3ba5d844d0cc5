//! Traffic between namespaces: ping tables and content-verified bulk TCP.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::PathBuf,
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use crate::{Lab, Netns, netns::unique_tag, run_ok};

static PORT: AtomicU16 = AtomicU16::new(20000);

/// A file of `bytes` pseudo-random bytes and its SHA-256, removed on drop.
pub struct Payload {
    /// Where it is.
    pub path: PathBuf,
    /// Its digest.
    pub sha256: String,
}

impl Payload {
    /// Writes `bytes` random bytes to a fresh temporary file.
    pub fn random(bytes: u64) -> Self {
        let path = std::env::temp_dir().join(format!("ovl-payload-{}", unique_tag()));
        let p = path.display().to_string();
        run_ok(&["sh", "-c", &format!("head -c {bytes} /dev/urandom > {p}")]);
        let sha256 = sha256(&path);
        Self { path, sha256 }
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// SHA-256 of a file, hex.
pub fn sha256(path: &std::path::Path) -> String {
    let out = run_ok(&["sha256sum", &path.display().to_string()]);
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

/// Result of [`send_file`].
pub struct Transfer {
    /// Bytes that arrived.
    pub received: u64,
    /// SHA-256 of what arrived.
    pub sha256: String,
    /// Wall time of the transfer.
    pub elapsed: Duration,
}

/// Sends `payload` over TCP from `src` to `dst_ip` (a listener in `dst`),
/// and returns what arrived. Bounded by `timeout`.
pub fn send_file(
    src: &Netns,
    dst: &Netns,
    dst_ip: Ipv4Addr,
    payload: &Payload,
    timeout: Duration,
) -> Transfer {
    let port = PORT.fetch_add(1, Ordering::Relaxed).to_string();
    let out = std::env::temp_dir().join(format!("ovl-recv-{}", unique_tag()));
    let out_s = out.display().to_string();
    let mut server = dst.spawn(&[
        "socat",
        "-u",
        &format!("TCP-LISTEN:{port},bind={dst_ip},reuseaddr"),
        &format!("CREATE:{out_s}"),
    ]);
    // Wait until the listener is up (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dst.try_exec(&["sh", "-c", &format!("ss -ltn | grep -q ':{port} '")]) {
        assert!(
            Instant::now() < deadline,
            "listener on {dst_ip}:{port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    let secs = timeout.as_secs().max(1).to_string();
    let sent = src.try_exec(&[
        "timeout",
        &secs,
        "socat",
        "-u",
        &format!("OPEN:{}", payload.path.display()),
        &format!("TCP:{dst_ip}:{port},connect-timeout=5"),
    ]);
    let exited = server.wait_timeout(timeout);
    let elapsed = start.elapsed();
    let received = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let digest = if received > 0 {
        sha256(&out)
    } else {
        String::new()
    };
    let _ = std::fs::remove_file(&out);
    assert!(sent, "sender to {dst_ip}:{port} failed");
    assert_eq!(
        exited,
        Some(true),
        "receiver on {dst_ip}:{port} did not finish in {timeout:?}"
    );
    Transfer {
        received,
        sha256: digest,
        elapsed,
    }
}

/// All-pairs ping between the lab's pods, as a table (`ok`/`--`), and
/// whether every pair answered.
pub fn connectivity_table(lab: &Lab) -> (String, bool) {
    let pods: Vec<(Ipv4Addr, usize, &Netns)> = lab.pods().map(|p| (p.ip, p.node, &p.ns)).collect();
    connectivity_table_of(&pods)
}

/// [`connectivity_table`] over any pods: (address, node index, namespace).
pub fn connectivity_table_of(pods: &[(Ipv4Addr, usize, &Netns)]) -> (String, bool) {
    let mut s = String::new();
    let _ = write!(s, "{:>14}", "from \\ to");
    for (ip, _, _) in pods {
        let _ = write!(s, " {:>12}", ip.to_string());
    }
    s.push('\n');
    let mut all = true;
    for (a_ip, a_node, a_ns) in pods {
        let _ = write!(s, "{:>14}", format!("{a_ip} n{}", a_node + 1));
        for (b_ip, _, _) in pods {
            let cell = if a_ip == b_ip {
                "-"
            } else if a_ns.ping(&b_ip.to_string(), 2) {
                "ok"
            } else {
                all = false;
                "FAIL"
            };
            let _ = write!(s, " {cell:>12}");
        }
        s.push('\n');
    }
    (s, all)
}

/// Connects from `ns` to `addr:port` and returns what the server sent
/// (trimmed), or `None` if the connection failed or nothing came; bounded
/// to 5 s.
pub fn tcp_fetch(ns: &Netns, addr: &str, port: u16) -> Option<String> {
    let target = format!("TCP:{addr}:{port},connect-timeout=2");
    let out = ns
        .command(&["timeout", "5", "socat", "-u", &target, "-"])
        .output()
        .expect("socat");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// [`tcp_fetch`] until an answer comes (a server just started may not
/// listen yet), at most `tries` times 250 ms apart.
pub fn tcp_fetch_retry(ns: &Netns, addr: &str, port: u16, tries: u32) -> Option<String> {
    for _ in 0..tries {
        if let Some(reply) = tcp_fetch(ns, addr, port) {
            return Some(reply);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

/// A ping running in the background at a fixed rate, for counting losses
/// across an event.
pub struct ContinuousPing {
    process: crate::Process,
    output: PathBuf,
}

impl ContinuousPing {
    /// `per_second` echoes a second from `from` to `to`, for at most `limit`.
    pub fn start(from: &Netns, to: Ipv4Addr, per_second: u32, limit: Duration) -> Self {
        let output = std::env::temp_dir().join(format!("ovl-ping-{}", unique_tag()));
        let file = std::fs::File::create(&output).expect("ping output file");
        let interval = format!("{:.3}", 1.0 / f64::from(per_second.max(1)));
        let secs = limit.as_secs().max(1).to_string();
        let child = from
            .command(&[
                "ping",
                "-q",
                "-n",
                "-i",
                &interval,
                "-W",
                "1",
                "-w",
                &secs,
                &to.to_string(),
            ])
            .stdout(file)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ping");
        Self {
            process: crate::Process::from_child(child),
            output,
        }
    }

    /// Stops it; returns (transmitted, received).
    pub fn finish(mut self) -> (u64, u64) {
        self.process.signal(libc::SIGINT);
        self.process
            .wait_timeout(Duration::from_secs(5))
            .expect("ping exits on SIGINT");
        let text = std::fs::read_to_string(&self.output).unwrap_or_default();
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no summary in ping's output: {text:?}"));
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let number_before = |word: &str| -> u64 {
            let at = words
                .iter()
                .position(|w| *w == word)
                .unwrap_or_else(|| panic!("no {word:?} in {line:?}"));
            words[at - 1]
                .parse()
                .unwrap_or_else(|_| panic!("bad count before {word:?} in {line:?}"))
        };
        (number_before("packets"), number_before("received"))
    }
}

impl Drop for ContinuousPing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.output);
    }
}

/// An `iperf3` TCP flow in the background, paced at a fixed rate, whose
/// per-second throughput is read at the end.
pub struct PacedFlow {
    server: crate::Process,
    client: crate::Process,
    output: PathBuf,
}

impl PacedFlow {
    /// From `client` to `server_ip` (a pod in `server`), `rate` bits a
    /// second (iperf3's `-b`, e.g. `1G`), for `secs` seconds.
    pub fn start(
        server: &Netns,
        server_ip: Ipv4Addr,
        client: &Netns,
        rate: &str,
        secs: u32,
    ) -> Self {
        let port = PORT.fetch_add(1, Ordering::Relaxed).to_string();
        let server_proc = server.spawn(&["iperf3", "-s", "-1", "-p", &port]);
        let deadline = Instant::now() + Duration::from_secs(5);
        let filter = format!("sport = :{port}");
        while server.exec(&["ss", "-Hltn", &filter]).trim().is_empty() {
            assert!(Instant::now() < deadline, "iperf3 server never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = std::env::temp_dir().join(format!("ovl-iperf-{}.json", unique_tag()));
        let file = std::fs::File::create(&output).expect("iperf3 output file");
        let secs = secs.to_string();
        let child = client
            .command(&[
                "iperf3",
                "-c",
                &server_ip.to_string(),
                "-p",
                &port,
                "-t",
                &secs,
                "-b",
                rate,
                "-i",
                "1",
                "-J",
                "-C",
                "cubic",
            ])
            .stdout(file)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn iperf3 client");
        Self {
            server: server_proc,
            client: crate::Process::from_child(child),
            output,
        }
    }

    /// Waits for the flow to end (at most `timeout`); returns the Gbit/s of
    /// every one-second interval.
    pub fn finish(mut self, timeout: Duration) -> Vec<f64> {
        let done = self.client.wait_timeout(timeout);
        let text = std::fs::read_to_string(&self.output).unwrap_or_default();
        let _ = std::fs::remove_file(&self.output);
        assert!(done.is_some(), "iperf3 did not finish within {timeout:?}");
        drop(self.server);
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("iperf3 JSON ({e}): {text}"));
        if let Some(err) = v["error"].as_str() {
            panic!("iperf3 failed: {err}");
        }
        v["intervals"]
            .as_array()
            .unwrap_or_else(|| panic!("no intervals in {text}"))
            .iter()
            .map(|i| i["sum"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9)
            .collect()
    }
}

/// An IPv4/UDP packet, every address settable (checksums filled in).
pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0]);
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let csum = inet_checksum(&p);
    p[10..12].copy_from_slice(&csum.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    p.extend_from_slice(payload);
    p
}

fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `packet` (a whole IPv4 packet, source address included, as a pod
/// with `CAP_NET_RAW` can) from a raw socket inside `ns`.
pub fn send_raw_ipv4(ns: &Netns, packet: &[u8]) {
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let packet = packet.to_vec();
    overlay_agent::netns::run_in(&ns.path(), move || {
        // SAFETY: plain syscalls on a socket this closure owns and closes.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(dst.octets()),
                },
                sin_zero: [0; 8],
            };
            let n = libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            assert_eq!(n, packet.len() as isize, "raw sendto: {err}");
        }
    })
    .expect("entering the namespace");
}

/// `s` without its ANSI escape sequences (sockperf colours its report).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if it.peek() == Some(&'[') {
            it.next();
            for d in it.by_ref() {
                if ('@'..='~').contains(&d) {
                    break;
                }
            }
        }
    }
    out
}

/// Average and 99th percentile round trip in microseconds from sockperf's
/// `pp --full-rtt` report.
pub fn parse_sockperf(text: &str) -> Result<(f64, f64), String> {
    let text = strip_ansi(text);
    let leading_number = |s: &str| -> Option<f64> {
        let s = s.trim_start();
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        s[..end].parse().ok()
    };
    let mut avg = None;
    let mut p99 = None;
    for line in text.lines() {
        if avg.is_none() {
            avg = ["avg-rtt=", "avg-latency="]
                .iter()
                .find_map(|k| line.find(k).map(|i| &line[i + k.len()..]))
                .and_then(leading_number);
        }
        if line.contains("percentile 99.000") {
            p99 = line.rsplit('=').next().and_then(leading_number);
        }
    }
    match (avg, p99) {
        (Some(a), Some(p)) => Ok((a, p)),
        _ => Err(format!(
            "no avg-rtt/avg-latency or percentile 99.000 in sockperf output:\n{text}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_sockperf;

    #[test]
    fn parses_sockperf_output() {
        let out = "sockperf: [Valid Duration] RunTime=1.550 sec; SentMessages=108398\n\
                   sockperf: \x1b[2;35m====> avg-rtt=14.277 (std-dev=3.525)\x1b[0m\n\
                   sockperf: ---> percentile 99.900 =   43.434\n\
                   sockperf: ---> percentile 99.000 =   16.945\n\
                   sockperf: ---> percentile 90.000 =   14.701\n";
        assert_eq!(parse_sockperf(out).unwrap(), (14.277, 16.945));
        let half = "sockperf: ====> avg-latency=7.100 (std-dev=1.0)\n\
                    sockperf: ---> percentile 99.000 = 9.5\n";
        assert_eq!(parse_sockperf(half).unwrap(), (7.1, 9.5));
        assert!(parse_sockperf("nothing here").is_err());
    }
}
