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
