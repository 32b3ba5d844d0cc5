//! A lab whose nodes run real `overlay-agent run` daemons and whose pods are
//! created through the real `overlay-cni` binary, invoked exactly as a CNI
//! runtime invokes it (environment variables plus configuration on stdin).
//!
//! Each agent runs in its node's network namespace and the host's mount
//! namespace (as the DaemonSet does with hostPath mounts), with its own pin
//! directory, state directory and socket, so several "nodes" share this
//! machine. The plugin finds its node's agent through `agentSocket` in the
//! network configuration.

use std::{
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    lab::{Lab, LabOptions, Mode, UPLINK, Underlay},
    netns::{Netns, Process},
};

/// Finds one of the workspace's binaries next to the running executable (a
/// test in `target/<profile>/deps`, or a tool in `target/<profile>`).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir");
    for _ in 0..2 {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
        dir = dir.parent().expect("target dir");
    }
    panic!(
        "{name} is not built next to {}; run through `cargo xtask test` (which builds every \
         binary) or `cargo build --workspace --bins`",
        exe.display()
    );
}

/// What one plugin invocation printed and how it exited.
#[derive(Debug)]
pub struct CniOutput {
    /// Exit code.
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stdout as JSON (`Null` when empty or not JSON).
    pub json: Value,
}

impl CniOutput {
    /// Panics unless the call succeeded; returns the JSON.
    pub fn ok(self) -> Value {
        assert_eq!(self.code, 0, "overlay-cni failed: {}", self.stdout);
        self.json
    }

    /// Panics unless the call failed with CNI error `code`; returns the
    /// message.
    pub fn err(self, code: u64) -> String {
        assert_ne!(self.code, 0, "overlay-cni succeeded: {}", self.stdout);
        assert_eq!(
            self.json["code"].as_u64(),
            Some(code),
            "wrong error code: {}",
            self.stdout
        );
        self.json["msg"].as_str().unwrap_or_default().to_owned()
    }
}

/// One CNI invocation.
#[derive(Clone, Debug)]
pub struct CniCall<'a> {
    /// `CNI_COMMAND`.
    pub command: &'a str,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS` (empty string: set but empty; `None`: unset).
    pub netns: Option<&'a str>,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// Network configuration on stdin.
    pub config: &'a str,
}

/// Runs `overlay-cni` in node `node_ns`'s network namespace.
pub fn invoke(node_ns: &Netns, call: &CniCall<'_>) -> CniOutput {
    invoke_env(node_ns, call, &[])
}

/// [`invoke`] with extra environment (or overrides).
pub fn invoke_env(node_ns: &Netns, call: &CniCall<'_>, extra: &[(&str, &str)]) -> CniOutput {
    invoke_raw(&node_ns.name, call, extra)
}

/// [`invoke`] by the node namespace's name (usable from other threads
/// without the [`Netns`] guard).
pub fn invoke_in(node_ns_name: &str, call: &CniCall<'_>) -> CniOutput {
    invoke_raw(node_ns_name, call, &[])
}

fn invoke_raw(node_ns_name: &str, call: &CniCall<'_>, extra: &[(&str, &str)]) -> CniOutput {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!(
        "--net={}",
        crate::netns::path_of(node_ns_name).display()
    ))
    .arg(bin_path("overlay-cni"))
    .env_clear()
    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    .env("CNI_COMMAND", call.command)
    .env("CNI_CONTAINERID", call.container_id)
    .env("CNI_IFNAME", call.ifname)
    .env("CNI_PATH", "/opt/cni/bin:/usr/lib/cni")
    .env(
        "CNI_ARGS",
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=test;K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
            call.container_id, call.container_id
        ),
    );
    if let Some(ns) = call.netns {
        cmd.env("CNI_NETNS", ns);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn overlay-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(call.config.as_bytes())
        .expect("write config");
    let out = child.wait_with_output().expect("wait overlay-cni");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    CniOutput {
        code: out.status.code().unwrap_or(-1),
        stdout,
        json,
    }
}

/// A pod made through the plugin.
pub struct CniPod {
    /// Its namespace.
    pub ns: Netns,
    /// Container ID used.
    pub container_id: String,
    /// Node index.
    pub node: usize,
    /// Address from the ADD result.
    pub ip: Ipv4Addr,
    /// The ADD result.
    pub result: Value,
}

/// A running agent.
pub struct AgentProcess {
    /// Its socket.
    pub socket: PathBuf,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    /// Its CNI configuration directory (`--cni-conf-dir`): the agent writes
    /// its conflist here once ready.
    pub cni_conf_dir: PathBuf,
    /// Its CNI plugin directory (`--cni-bin-dir`; empty, so the conflist
    /// chains no portmap).
    pub cni_bin_dir: PathBuf,
    process: Option<Process>,
}

impl AgentProcess {
    /// The conflist the agent writes once ready.
    pub fn conflist_path(&self) -> PathBuf {
        self.cni_conf_dir.join(overlay_agent::paths::CONFLIST_NAME)
    }
}

/// Nodes with agents.
pub struct Cluster {
    /// The underlying namespaces (no pods of its own; datapath left to the
    /// agents).
    pub lab: Lab,
    /// One per node.
    pub agents: Vec<AgentProcess>,
    /// Working directory (topology, state, sockets, logs).
    pub dir: PathBuf,
    /// Where the agents get the topology from.
    pub source: Source,
    /// `--tunnel` of every agent started from now on. `vxlan` unless a
    /// test sets it: the lab's nodes share one link, so `auto` (the
    /// agent's default) would route every peer directly, and the tests
    /// written before direct routing existed check the VXLAN path (its
    /// counters, its anti-spoofing, interop); the tests of direct routing
    /// set `auto` or `direct` themselves.
    pub tunnel: &'static str,
    /// `--gossip-protocol` of every gossiping agent started from now on
    /// (`swim`, the agent's default, unless a test sets it).
    pub gossip_protocol: &'static str,
    /// More arguments for every agent started from now on (after the
    /// lab's own, so none of those may repeat here).
    pub extra_args: Vec<String>,
    pods_made: usize,
}

/// Where a cluster's agents get their topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A static topology file in the cluster directory.
    Static,
    /// Gossip: every agent has every node as a seed.
    Gossip {
        /// Passed as `--password-file` when set.
        password_file: Option<PathBuf>,
    },
    /// Gossip seeded from a Kubernetes API server (no `--peers`): the
    /// agents list the Nodes and gossip with their InternalIPs.
    Kube {
        /// `--kube-api`.
        api: String,
        /// `--kube-token-file`.
        token_file: PathBuf,
        /// `--kube-ca-file`: a path in the cluster directory where no file
        /// is, as the API is plain `http://` (and the host's own service
        /// account, if any, must not be used).
        ca_file: PathBuf,
        /// `--password-file`.
        password_file: PathBuf,
    },
}

/// Gossip interval of lab agents: short, so that the claim rule and the
/// topology follow gossip five times a second (and, with chitchat, failure
/// detection takes about two seconds).
pub const LAB_GOSSIP_INTERVAL: &str = "200ms";
/// Claim settle period of lab agents: the least the agent accepts without
/// a warning, SWIM's failure detection with its margin (5 s × 2; chitchat's
/// at [`LAB_GOSSIP_INTERVAL`] is phi 8 × 200 ms × 3 = 4.8 s).
pub const LAB_CLAIM_SETTLE: &str = "10s";

/// Cluster range of the lab.
pub const RANGE: &str = "10.32.0.0/12";

impl Cluster {
    /// `nodes` nodes, each with a running agent that is ready (STATUS
    /// succeeds), blocks from a static topology (node i owns
    /// `10.32.(i+1).0/24`).
    pub fn new(nodes: usize) -> Self {
        Self::with_blocks(nodes, |i| vec![crate::lab::node_block(i).to_string()])
    }

    /// Like [`Cluster::new`] with each node's blocks chosen by `blocks`.
    pub fn with_blocks(nodes: usize, blocks: impl Fn(usize) -> Vec<String>) -> Self {
        let mut c = Self::unstarted(nodes, |lab, dir| {
            let topology: String = (0..nodes)
                .map(|i| format!("{} {}\n", lab.nodes[i].ip, blocks(i).join(" ")))
                .collect();
            std::fs::write(dir.join("topology"), topology).expect("topology file");
            Source::Static
        });
        for i in 0..nodes {
            c.spawn_agent(i);
        }
        for i in 0..nodes {
            if !blocks(i).is_empty() {
                c.wait_ready(i, Duration::from_secs(20));
            }
        }
        c
    }

    /// Like [`Cluster::new`] (static topology, node i owns
    /// `10.32.(i+1).0/24`), with every agent run with `--tunnel tunnel`, on
    /// `underlay`, and node `behind_router` (if any) on a subnet of its
    /// own behind a router ([`LabOptions::behind_router`]).
    pub fn tunnel(
        nodes: usize,
        underlay: Underlay,
        behind_router: Option<usize>,
        tunnel: &'static str,
    ) -> Self {
        let mut c = Self::unstarted_with(nodes, underlay, behind_router, |lab, dir| {
            let topology: String = (0..nodes)
                .map(|i| format!("{} {}\n", lab.nodes[i].ip, crate::lab::node_block(i)))
                .collect();
            std::fs::write(dir.join("topology"), topology).expect("topology file");
            Source::Static
        });
        c.tunnel = tunnel;
        for i in 0..nodes {
            c.spawn_agent(i);
        }
        for i in 0..nodes {
            c.wait_ready(i, Duration::from_secs(20));
        }
        c
    }

    /// `nodes` nodes whose agents form the cluster by gossip alone (every
    /// node a seed, a password file shared), each ready once it has
    /// settled a block of its own.
    pub fn gossip(nodes: usize) -> Self {
        Self::gossip_on(nodes, Underlay::Veth)
    }

    /// [`Cluster::gossip`] on the given underlay.
    pub fn gossip_on(nodes: usize, underlay: Underlay) -> Self {
        let mut c = Self::gossip_unstarted_on(nodes, underlay);
        for i in 0..nodes {
            c.spawn_agent(i);
        }
        for i in 0..nodes {
            c.wait_ready(i, Duration::from_secs(40));
        }
        c
    }

    /// The namespaces and directories of a [`Cluster::gossip`] whose agents
    /// are not started yet (start them with [`Cluster::spawn_agent`]).
    pub fn gossip_unstarted(nodes: usize) -> Self {
        Self::gossip_unstarted_on(nodes, Underlay::Veth)
    }

    /// [`Cluster::gossip_unstarted`] on the given underlay.
    pub fn gossip_unstarted_on(nodes: usize, underlay: Underlay) -> Self {
        Self::unstarted_on(nodes, underlay, |lab, dir| {
            let password_file = dir.join("password");
            std::fs::write(&password_file, format!("lab-secret-{}\n", lab.tag)).expect("password");
            Source::Gossip {
                password_file: Some(password_file),
            }
        })
    }

    /// Like [`Cluster::gossip`], but the agents are given no `--peers`:
    /// they run with `--kubernetes on --kube-api URL --kube-token-file`
    /// and find each other from the Nodes the API lists. `api` gets the lab
    /// (to put a server on it) and the bearer token the agents send, and
    /// returns the API server's URL. Node `i`'s agent is named `n{i+1}`.
    pub fn kube(nodes: usize, api: impl FnOnce(&Lab, &str) -> String) -> Self {
        Self::kube_tunnel(nodes, "vxlan", api)
    }

    /// [`Cluster::kube`] with every agent run with `--tunnel tunnel` (the
    /// lab's nodes share one link, so `auto` routes them all directly).
    pub fn kube_tunnel(
        nodes: usize,
        tunnel: &'static str,
        api: impl FnOnce(&Lab, &str) -> String,
    ) -> Self {
        Self::kube_with(nodes, tunnel, &[], api)
    }

    /// [`Cluster::kube_tunnel`] with `extra` arguments for every agent
    /// (e.g. `--encryption wireguard`).
    pub fn kube_with(
        nodes: usize,
        tunnel: &'static str,
        extra: &[&str],
        api: impl FnOnce(&Lab, &str) -> String,
    ) -> Self {
        let mut c = Self::unstarted(nodes, |lab, dir| {
            let password_file = dir.join("password");
            std::fs::write(&password_file, format!("lab-secret-{}\n", lab.tag)).expect("password");
            let token = format!("lab-token-{}", lab.tag);
            let token_file = dir.join("token");
            std::fs::write(&token_file, format!("{token}\n")).expect("token file");
            Source::Kube {
                api: api(lab, &token),
                token_file,
                ca_file: dir.join("ca.crt"),
                password_file,
            }
        });
        c.tunnel = tunnel;
        c.extra_args = extra.iter().map(|a| (*a).to_owned()).collect();
        for i in 0..nodes {
            c.spawn_agent(i);
        }
        for i in 0..nodes {
            c.wait_ready(i, Duration::from_secs(40));
        }
        c
    }

    /// The namespaces, directory and agent slots of a cluster whose agents
    /// are not started yet; `source` writes what the agents read (topology
    /// or password) into the directory and says which kind they are.
    fn unstarted(nodes: usize, source: impl FnOnce(&Lab, &Path) -> Source) -> Self {
        Self::unstarted_on(nodes, Underlay::Veth, source)
    }

    fn unstarted_on(
        nodes: usize,
        underlay: Underlay,
        source: impl FnOnce(&Lab, &Path) -> Source,
    ) -> Self {
        Self::unstarted_with(nodes, underlay, None, source)
    }

    fn unstarted_with(
        nodes: usize,
        underlay: Underlay,
        behind_router: Option<usize>,
        source: impl FnOnce(&Lab, &Path) -> Source,
    ) -> Self {
        let lab = Lab::new(&LabOptions {
            modes: vec![Mode::Overlay; nodes],
            pods_per_node: 0,
            skip_datapath: true,
            pod_mtu: None,
            underlay,
            behind_router,
        });
        let dir = std::env::temp_dir().join(format!("ovl-{}", lab.tag));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let source = source(&lab, &dir);
        let agents = (0..nodes)
            .map(|i| AgentProcess {
                socket: dir.join(format!("n{}.sock", i + 1)),
                state_dir: dir.join(format!("n{}-state", i + 1)),
                log: dir.join(format!("n{}.log", i + 1)),
                cni_conf_dir: dir.join(format!("n{}-net.d", i + 1)),
                cni_bin_dir: dir.join(format!("n{}-cni-bin", i + 1)),
                process: None,
            })
            .collect();
        Cluster {
            lab,
            agents,
            dir,
            source,
            tunnel: "vxlan",
            gossip_protocol: "swim",
            extra_args: Vec::new(),
            pods_made: 0,
        }
    }

    /// Runs `overlay-agent ARGS` in node `i`'s network namespace (the
    /// client subcommands, e.g. `status`, `forget NODE`, reach that node's
    /// agent on its loopback status endpoint) and returns what it did.
    pub fn agent_cli(&self, i: usize, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.lab.nodes[i].ns.path().display()))
            .arg(bin_path("overlay-agent"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running overlay-agent {args:?} on node {i}: {e}"))
    }

    /// Node `i`'s status as `overlay-agent status` prints it for humans.
    pub fn status_text(&self, i: usize) -> String {
        let out = self.agent_cli(i, &["status"]);
        assert!(
            out.status.success(),
            "overlay-agent status on node {i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether node `i`'s agent was started and not stopped or killed since.
    pub fn is_running(&self, i: usize) -> bool {
        self.agents[i].process.is_some()
    }

    /// Node `i`'s status as the agent's status endpoint returns it
    /// (`overlay-agent status --json` run in the node's namespace).
    pub fn status(&self, i: usize) -> Value {
        let out = self.agent_cli(i, &["status", "--json"]);
        assert!(
            out.status.success(),
            "overlay-agent status on node {i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status of node {i} is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Polls every running agent's status until `pred` holds for all of
    /// them; returns how long it took, or panics with the last statuses
    /// after `timeout`.
    pub fn wait_statuses(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(usize, &Value) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let running: Vec<usize> = (0..self.agents.len())
                .filter(|i| self.agents[*i].process.is_some())
                .collect();
            let statuses: Vec<(usize, Value)> =
                running.iter().map(|i| (*i, self.status(*i))).collect();
            if statuses.iter().all(|(i, s)| pred(*i, s)) {
                return start.elapsed();
            }
            if start.elapsed() > timeout {
                panic!(
                    "{what}: not reached within {timeout:?}; statuses:\n{}",
                    statuses
                        .iter()
                        .map(|(i, s)| format!("node {i}: {s}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running agent sees `live` members alive, each
    /// peer with a settled block, and routes for all of them in its
    /// datapath.
    pub fn wait_converged(&self, live: usize, timeout: Duration) -> Duration {
        self.wait_statuses("gossip convergence", timeout, |_, s| {
            let g = &s["gossip"];
            let peers = g["peers"].as_array().cloned().unwrap_or_default();
            let alive: Vec<&Value> = peers.iter().filter(|p| p["state"] == "alive").collect();
            g["live"].as_u64() == Some(live as u64)
                && alive.len() + 1 == live
                && alive.iter().all(|p| {
                    p["blocks"]
                        .as_array()
                        .is_some_and(|b| b.iter().any(|b| b["state"] == "settled"))
                })
                && s["datapath"]["peers"].as_array().map(Vec::len) == Some(live - 1)
        })
    }

    /// Starts node `i`'s agent and waits until it is ready.
    pub fn start_agent(&mut self, i: usize) {
        self.spawn_agent(i);
        self.wait_ready(i, Duration::from_secs(20));
    }

    /// Starts node `i`'s agent without waiting for it.
    pub fn spawn_agent(&mut self, i: usize) {
        assert!(self.agents[i].process.is_none(), "agent {i} is running");
        let node = &self.lab.nodes[i];
        let a = &self.agents[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&a.log)
            .expect("agent log");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", node.ns.path().display()))
            .arg(bin_path("overlay-agent"))
            .args(["run", "--uplink", UPLINK, "--ipalloc-range", RANGE])
            .args(["--tunnel", self.tunnel])
            .arg("--node-ip")
            .arg(node.ip.to_string());
        match &self.source {
            Source::Static => {
                cmd.arg("--topology").arg(self.dir.join("topology"));
            }
            Source::Gossip { password_file } => {
                let peers: Vec<String> = self.lab.nodes.iter().map(|n| n.ip.to_string()).collect();
                cmd.arg("--node-name")
                    .arg(format!("n{}", i + 1))
                    .args(["--gossip-protocol", self.gossip_protocol])
                    .arg("--peers")
                    .arg(peers.join(","))
                    .args(["--gossip-interval", LAB_GOSSIP_INTERVAL])
                    .args(["--claim-settle", LAB_CLAIM_SETTLE]);
                if let Some(p) = password_file {
                    cmd.arg("--password-file").arg(p);
                }
            }
            Source::Kube {
                api,
                token_file,
                ca_file,
                password_file,
            } => {
                cmd.arg("--node-name")
                    .arg(format!("n{}", i + 1))
                    .args(["--kubernetes", "on", "--kube-api", api])
                    .args(["--gossip-protocol", self.gossip_protocol])
                    .arg("--kube-token-file")
                    .arg(token_file)
                    .arg("--kube-ca-file")
                    .arg(ca_file)
                    .args(["--gossip-interval", LAB_GOSSIP_INTERVAL])
                    .args(["--claim-settle", LAB_CLAIM_SETTLE])
                    .arg("--password-file")
                    .arg(password_file);
            }
        }
        let child = cmd
            .arg("--pin-dir")
            .arg(&node.pin_dir)
            .arg("--state-dir")
            .arg(&a.state_dir)
            .arg("--socket")
            .arg(&a.socket)
            // Never the host's /etc/cni/net.d.
            .arg("--cni-conf-dir")
            .arg(&a.cni_conf_dir)
            .arg("--cni-bin-dir")
            .arg(&a.cni_bin_dir)
            .args(&self.extra_args)
            .env_remove("OVERLAY_LOG_FORMAT")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn overlay-agent run");
        self.agents[i].process = Some(Process::from_child(child));
    }

    /// Polls STATUS until the agent answers ready; panics with its log if
    /// it does not within `timeout`.
    pub fn wait_ready(&mut self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = invoke(
                &self.lab.nodes[i].ns,
                &CniCall {
                    command: "STATUS",
                    container_id: "status",
                    netns: None,
                    ifname: "eth0",
                    config: &self.config(i, "1.1.0"),
                },
            );
            if out.code == 0 {
                return;
            }
            let exited = self.agents[i]
                .process
                .as_mut()
                // (A zero timeout would not look at all.)
                .and_then(|p| p.wait_timeout(Duration::from_millis(1)));
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "agent {i} not ready ({}), log:\n{}",
                    out.stdout,
                    std::fs::read_to_string(&self.agents[i].log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// PID of node `i`'s agent, if it runs.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.agents[i].process.as_ref().map(Process::pid)
    }

    /// Kills node `i`'s agent with SIGKILL and reaps it.
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut p) = self.agents[i].process.take() {
            p.signal(libc::SIGKILL);
            p.wait_timeout(Duration::from_secs(10));
        }
    }

    /// PID of the WireGuard device process node `i`'s agent started (from
    /// the status file the device writes), if it is alive.
    pub fn wireguard_device_pid(&self, i: usize) -> Option<u32> {
        let files = overlay_agent::encryption::agent::Files::under(&self.agents[i].state_dir);
        let s = overlay_agent::encryption::service::read_status(&files.status).ok()?;
        overlay_agent::encryption::agent::is_device_process(s.pid).then_some(s.pid)
    }

    /// SIGKILLs node `i`'s WireGuard device process, if one runs, and
    /// waits (bounded) until it is gone.
    pub fn kill_wireguard_device(&self, i: usize) {
        if let Some(pid) = self.wireguard_device_pid(i) {
            // SAFETY: plain syscall on a PID read from the device's status.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::path::Path::new(&format!("/proc/{pid}")).exists()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Node `i` dies as a whole (power loss): its agent is SIGKILLed and its
    /// namespace deleted at once.
    pub fn kill_node(&mut self, i: usize) {
        self.kill_agent(i);
        self.lab.delete_node_netns(i);
    }

    /// Node `i`, killed by [`Cluster::kill_node`], boots again: a fresh
    /// namespace on its old switch port, and its agent started with its old
    /// state and pin directories (not waited for).
    pub fn revive_node(&mut self, i: usize) {
        self.lab.recreate_node_netns(i);
        self.spawn_agent(i);
    }

    /// Stops node `i`'s agent with SIGTERM; returns whether it exited
    /// cleanly within 10 s.
    pub fn stop_agent(&mut self, i: usize) -> bool {
        match self.agents[i].process.take() {
            Some(mut p) => {
                p.signal(libc::SIGTERM);
                p.wait_timeout(Duration::from_secs(10)) == Some(true)
            }
            None => true,
        }
    }

    /// The network configuration (one plugin, as a runtime extracts it from
    /// the conflist) for node `i` in `version`.
    pub fn config(&self, i: usize, version: &str) -> String {
        serde_json::json!({
            "cniVersion": version,
            "name": "overlay",
            "type": "overlay-cni",
            "agentSocket": self.agents[i].socket,
        })
        .to_string()
    }

    /// A conflist for node `i` (for real CNI clients).
    pub fn conflist(&self, i: usize, version: &str, extra_plugins: &[Value]) -> String {
        let mut plugins = vec![serde_json::json!({
            "type": "overlay-cni",
            "agentSocket": self.agents[i].socket,
        })];
        plugins.extend_from_slice(extra_plugins);
        serde_json::json!({
            "cniVersion": version,
            "name": "overlay",
            "plugins": plugins,
        })
        .to_string()
    }

    /// A new, empty pod namespace (not yet wired).
    pub fn new_pod_ns(&mut self, i: usize) -> Netns {
        self.pods_made += 1;
        Netns::new(&self.lab.tag, &format!("n{}c{}", i + 1, self.pods_made))
    }

    /// Runs the plugin on node `i`.
    pub fn cni(&self, i: usize, call: &CniCall<'_>) -> CniOutput {
        invoke(&self.lab.nodes[i].ns, call)
    }

    /// Creates a pod on node `i` through the plugin (ADD, version 1.1.0).
    pub fn add_pod(&mut self, i: usize) -> CniPod {
        self.add_pod_with_env(i, &[])
    }

    /// [`Cluster::add_pod`] with extra environment for the plugin, e.g.
    /// `CNI_ARGS` naming the Kubernetes pod as kubelet passes it.
    pub fn add_pod_with_env(&mut self, i: usize, extra: &[(&str, &str)]) -> CniPod {
        let ns = self.new_pod_ns(i);
        let container_id = format!("{}-{}", self.lab.tag, ns.name.rsplit('-').next().unwrap());
        let path = ns.path().display().to_string();
        let config = self.config(i, "1.1.0");
        let result = invoke_env(
            &self.lab.nodes[i].ns,
            &CniCall {
                command: "ADD",
                container_id: &container_id,
                netns: Some(&path),
                ifname: "eth0",
                config: &config,
            },
            extra,
        )
        .ok();
        let ip = result_ip(&result);
        CniPod {
            ns,
            container_id,
            node: i,
            ip,
            result,
        }
    }

    /// Deletes a pod through the plugin (DEL, version 1.1.0).
    pub fn del_pod(&self, pod: &CniPod) {
        let path = pod.ns.path().display().to_string();
        self.cni(
            pod.node,
            &CniCall {
                command: "DEL",
                container_id: &pod.container_id,
                netns: Some(&path),
                ifname: "eth0",
                config: &self.config(pod.node, "1.1.0"),
            },
        )
        .ok();
    }

    /// Host-side pod veths (`ovl` + 11 hex digits; not the GRO tunnel
    /// device `ovl-gro`) on node `i`.
    pub fn host_veths(&self, i: usize) -> Vec<String> {
        self.lab.nodes[i]
            .ns
            .ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| overlay_agent::agent::is_host_ifname(n))
            .collect()
    }

    /// Addresses with an allocation file in node `i`'s store.
    pub fn allocated(&self, i: usize) -> Vec<Ipv4Addr> {
        let dir = self.agents[i].state_dir.join("ipam/allocations");
        let mut out: Vec<Ipv4Addr> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Endpoints in node `i`'s map.
    pub fn endpoints(&self, i: usize) -> Vec<Ipv4Addr> {
        self.lab
            .maps(i)
            .endpoints()
            .expect("endpoints")
            .into_iter()
            .map(|e| e.ip)
            .collect()
    }

    /// Node `i`'s Prometheus metrics (`GET :6782/metrics` on the node's
    /// loopback), as text.
    pub fn metrics(&self, i: usize) -> String {
        let addr: std::net::SocketAddr = "127.0.0.1:6782".parse().expect("constant");
        let (code, body) = overlay_agent::netns::run_in(&self.lab.nodes[i].ns.path(), || {
            overlay_agent::api::http::call(addr, "GET", "/metrics")
        })
        .expect("entering the node's namespace")
        .unwrap_or_else(|e| panic!("scraping node {i}'s metrics: {e}"));
        assert_eq!(code, 200, "GET /metrics on node {i}: {body}");
        body
    }

    /// The agent's log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.agents[i].log).unwrap_or_default()
    }

    /// Path of node `i`'s pin directory.
    pub fn pin_dir(&self, i: usize) -> &Path {
        &self.lab.nodes[i].pin_dir
    }
}

/// `config` with `prevResult` set to `prev` (for CHECK and DEL).
pub fn with_prev(config: &str, prev: &Value) -> String {
    let mut v: Value = serde_json::from_str(config).expect("the network configuration is JSON");
    v["prevResult"] = prev.clone();
    v.to_string()
}

/// The pod address in an ADD result.
pub fn result_ip(result: &Value) -> Ipv4Addr {
    let addr = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {result}"));
    addr.split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("bad address in {result}"))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.agents.len() {
            self.kill_agent(i);
        }
        // WireGuard devices the agents started (`--encryption wireguard`)
        // outlive them by design: stopped here, by the PID they report.
        for i in 0..self.agents.len() {
            self.kill_wireguard_device(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // The lab removes pins and namespaces.
    }
}
