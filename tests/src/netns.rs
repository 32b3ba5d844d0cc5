//! Network namespaces and the processes started in them, cleaned up on drop.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::cmd::{run, run_ok};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short tag for this process: `<pid>x<counter>`.
pub fn unique_tag() -> String {
    format!(
        "{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    /// Its name under `/run/netns`.
    pub name: String,
}

impl Netns {
    /// Creates `ovl-<tag>-<role>` with loopback up and IPv6 off.
    pub fn new(tag: &str, role: &str) -> Self {
        let name = format!("ovl-{tag}-{role}");
        run_ok(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        ns
    }

    /// Path for `setns`.
    pub fn path(&self) -> PathBuf {
        path_of(&self.name)
    }

    /// `ip -n <ns> ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut argv = vec!["ip", "-n", &self.name];
        argv.extend_from_slice(args);
        run_ok(&argv)
    }

    /// Runs a command inside the namespace; it must succeed.
    pub fn exec(&self, args: &[&str]) -> String {
        run_ok(&self.argv(args))
    }

    /// Runs a command inside the namespace, returning whether it succeeded.
    pub fn try_exec(&self, args: &[&str]) -> bool {
        run(&self.argv(args)).status.success()
    }

    fn argv<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut argv = vec!["ip", "netns", "exec", &self.name];
        argv.extend_from_slice(args);
        argv
    }

    /// `ip netns exec <ns> ARGS` with stdin closed, for callers that need
    /// their own stdout/stderr handling. `ip netns exec` execs in place, so
    /// the child's PID is the command's own.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Creates a veth pair: `a_if` in `a`, its peer `b_if` in `b`.
    pub fn veth_pair(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
        run_ok(&[
            "ip", "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if,
            "netns", &b.name,
        ]);
    }

    /// A host outside the cluster: a new namespace (`tag`, `role` as in
    /// [`Netns::new`]) joined to `node` by a veth, `node_if` with `node_addr` on the node and `eth0` with
    /// `addr` in the new namespace (both CIDRs). It knows only that link,
    /// so it has no route to any pod.
    pub fn outside_host(
        node: &Netns,
        node_if: &str,
        node_addr: &str,
        tag: &str,
        role: &str,
        addr: &str,
    ) -> Netns {
        let host = Netns::new(tag, role);
        Netns::veth_pair(node, node_if, &host, "eth0");
        node.ip(&["addr", "add", node_addr, "dev", node_if]);
        node.ip(&["link", "set", node_if, "up"]);
        host.ip(&["addr", "add", addr, "dev", "eth0"]);
        host.ip(&["link", "set", "eth0", "up"]);
        host
    }

    /// Starts a long-running command inside the namespace.
    pub fn spawn(&self, args: &[&str]) -> Process {
        let child = self
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {args:?} in {}: {e}", self.name));
        Process { child }
    }

    /// Interface index of `iface` in this namespace.
    pub fn ifindex(&self, iface: &str) -> u32 {
        let out = self.ip(&["-o", "link", "show", "dev", iface]);
        out.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ifindex in {out:?}"))
    }

    /// Pings `dst` `count` times (200 ms apart, 1 s timeout each); true if
    /// every reply came back.
    pub fn ping(&self, dst: &str, count: u32) -> bool {
        let count = count.to_string();
        self.try_exec(&["ping", "-q", "-c", &count, "-i", "0.2", "-W", "1", dst])
    }

    /// The statistics counter `name` (e.g. `tx_packets`) of `iface`.
    pub fn link_stat(&self, iface: &str, name: &str) -> u64 {
        let path = format!("/sys/class/net/{iface}/statistics/{name}");
        self.exec(&["cat", &path]).trim().parse().expect("counter")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// Path of the named namespace `name` (`/run/netns/NAME`).
pub fn path_of(name: &str) -> PathBuf {
    overlay_agent::netns::named(name)
}

/// A child process, killed (by PID) and reaped on drop.
pub struct Process {
    child: Child,
}

impl Process {
    /// Takes ownership of a spawned child.
    pub fn from_child(child: Child) -> Self {
        Self { child }
    }

    /// Sends `sig` to it.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain syscall on a PID we own and have not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until it exits or `timeout` passes; returns whether it exited
    /// successfully.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<bool> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
