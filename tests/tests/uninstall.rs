//! A node's whole life with the overlay, as the DaemonSets live it, in a
//! network namespace: `install-cni` (the init container) into scratch CNI
//! directories (the plugin, and the reference plugins the directory
//! lacks), `run`, which writes the conflist once ready, pods added by
//! libcni from that conflist with the installed plugins, the agent stopped
//! and restarted (the pinned datapath and the conflist stay meanwhile),
//! then `uninstall`: refused while the agent runs, afterwards leaving
//! nothing of the overlay, and a no-op the second time.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use overlay_tests::{
    Netns, Process,
    cluster::{CniCall, RANGE, bin_path, invoke_in, result_ip},
    cni_clients::{LibCni, ScratchDir},
    lab::{Lab, LabOptions, Mode, UPLINK},
    require_privileges,
};
use serde_json::{Value, json};

/// One node's directories, as the DaemonSet's hostPath volumes would be.
struct NodeDirs {
    _scratch: ScratchDir,
    bin: PathBuf,
    conf: PathBuf,
    state: PathBuf,
    socket: PathBuf,
    topology: PathBuf,
    log: PathBuf,
}

impl NodeDirs {
    fn new(lab: &Lab) -> Self {
        let scratch = ScratchDir::new("uninst", &lab.tag);
        let root = scratch.path().to_owned();
        let topology = root.join("topology");
        let node = &lab.nodes[0];
        std::fs::write(&topology, format!("{} {}\n", node.ip, node.block)).expect("topology");
        Self {
            bin: scratch.subdir("opt/cni/bin"),
            conf: scratch.subdir("etc/cni/net.d"),
            state: root.join("var/lib/overlay"),
            socket: root.join("run/overlay/agent.sock"),
            topology,
            log: root.join("agent.log"),
            _scratch: scratch,
        }
    }

    fn conflist(&self) -> PathBuf {
        self.conf.join("10-overlay.conflist")
    }
}

/// `overlay-agent ARGS` in the node's network namespace (and the host's
/// mount namespace, as the DaemonSet's bpffs mount is the host's).
fn agent_cli(node: &Netns, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net={}", node.path().display()))
        .arg(bin_path("overlay-agent"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running overlay-agent {args:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn install_cni(node: &Netns, d: &NodeDirs) -> Output {
    // No --plugin: the default is the overlay-cni next to overlay-agent,
    // as in the image; the reference plugins come from Debian's directory,
    // where the image has them too.
    let out = agent_cli(
        node,
        &["install-cni", "--cni-bin-dir", &d.bin.display().to_string()],
    );
    assert!(out.status.success(), "install-cni failed: {}", text(&out));
    out
}

fn uninstall(node: &Netns, d: &NodeDirs, pin_dir: &Path) -> Output {
    agent_cli(
        node,
        &[
            "uninstall",
            "--pin-dir",
            &pin_dir.display().to_string(),
            "--cni-bin-dir",
            &d.bin.display().to_string(),
            "--cni-conf-dir",
            &d.conf.display().to_string(),
            "--state-dir",
            &d.state.display().to_string(),
            "--socket",
            &d.socket.display().to_string(),
        ],
    )
}

/// Starts `overlay-agent run` for the node (with `extra` arguments) and
/// waits until STATUS through the plugin succeeds.
fn start_agent(lab: &Lab, d: &NodeDirs, extra: &[&str]) -> Process {
    let node = &lab.nodes[0];
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&d.log)
        .expect("agent log");
    let child = Command::new("nsenter")
        .arg(format!("--net={}", node.ns.path().display()))
        .arg(bin_path("overlay-agent"))
        .args(["run", "--uplink", UPLINK, "--ipalloc-range", RANGE])
        .args(["--kubernetes", "off"])
        .arg("--node-ip")
        .arg(node.ip.to_string())
        .arg("--topology")
        .arg(&d.topology)
        .arg("--pin-dir")
        .arg(&node.pin_dir)
        .arg("--state-dir")
        .arg(&d.state)
        .arg("--socket")
        .arg(&d.socket)
        .arg("--cni-conf-dir")
        .arg(&d.conf)
        .arg("--cni-bin-dir")
        .arg(&d.bin)
        .args(extra)
        .env_remove("OVERLAY_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn overlay-agent run");
    let mut agent = Process::from_child(child);
    let config = json!({
        "cniVersion": "1.1.0",
        "name": "overlay",
        "type": "overlay-cni",
        "agentSocket": d.socket,
    })
    .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = invoke_in(
            &node.ns.name,
            &CniCall {
                command: "STATUS",
                container_id: "status",
                netns: None,
                ifname: "eth0",
                config: &config,
            },
        );
        // Ready, and (shortly after) the conflist is there.
        if out.code == 0 && d.conflist().exists() && is_ours(&d.conflist()) {
            return agent;
        }
        if agent.wait_timeout(Duration::ZERO).is_some() || Instant::now() > deadline {
            panic!(
                "agent not ready ({}), log:\n{}",
                out.stdout,
                std::fs::read_to_string(&d.log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_ours(conflist: &Path) -> bool {
    std::fs::read(conflist).is_ok_and(|c| overlay_agent::install::is_ours(&c))
}

fn stop_agent(mut agent: Process, d: &NodeDirs) {
    agent.signal(libc::SIGTERM);
    assert_eq!(
        agent.wait_timeout(Duration::from_secs(10)),
        Some(true),
        "the agent did not exit cleanly on SIGTERM; log:\n{}",
        std::fs::read_to_string(&d.log).unwrap_or_default()
    );
}

/// Files under `dir`, recursively, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(
                files_under(&e.path())
                    .into_iter()
                    .map(|f| format!("{name}/{f}")),
            );
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}

/// SIGKILLs a WireGuard device process on drop, if it still runs.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if overlay_agent::encryption::agent::is_device_process(self.0) {
            // SAFETY: plain syscall on a PID this test read from the
            // device's status.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}

/// Interface names in the node's namespace.
fn link_names(node: &Netns) -> Vec<String> {
    node.ip(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// Host-side pod veths (`ovl` + 11 hex digits) in the node's namespace.
fn pod_veths(node: &Netns) -> Vec<String> {
    link_names(node)
        .into_iter()
        .filter(|n| overlay_agent::agent::is_host_ifname(n))
        .collect()
}

/// Whether the node has the GRO tunnel device.
fn has_gro_device(node: &Netns) -> bool {
    link_names(node)
        .iter()
        .any(|n| n == overlay_agent::netlink::GRO_DEVICE)
}

fn nft_table_exists(node: &Netns) -> bool {
    node.try_exec(&["nft", "list", "table", "ip", "overlay"])
}

#[test]
fn uninstall_leaves_the_node_as_before_and_is_refused_while_the_agent_runs() {
    let test = "uninstall_leaves_the_node_as_before_and_is_refused_while_the_agent_runs";
    if !require_privileges(test) {
        return;
    }
    let lab = Lab::new(&LabOptions {
        modes: vec![Mode::Overlay],
        pods_per_node: 0,
        skip_datapath: true,
        pod_mtu: None,
        underlay: overlay_tests::lab::Underlay::Veth,
        behind_router: None,
    });
    let node = &lab.nodes[0];
    let d = NodeDirs::new(&lab);

    // A conflist of another network under our name, and one that sorts
    // first: the first is replaced (and kept), the second warned about.
    let foreign = r#"{"cniVersion":"1.0.0","name":"old","plugins":[{"type":"bridge"}]}"#;
    std::fs::write(d.conflist(), foreign).expect("foreign conflist");
    std::fs::write(d.conf.join("05-other.conf"), "{}").expect("shadowing conf");

    let out = install_cni(&node.ns, &d);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("installed loopback") && log.contains("installed portmap"),
        "the reference plugins were not installed: {log}"
    );
    assert_eq!(
        std::fs::read(d.bin.join("overlay-cni")).expect("installed plugin"),
        std::fs::read(bin_path("overlay-cni")).expect("built plugin")
    );
    assert_eq!(
        std::fs::read_to_string(d.conflist()).expect("the foreign conflist"),
        foreign,
        "install-cni must not touch the conflist"
    );
    let again = install_cni(&node.ns, &d);
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(
        log.contains("plugin binary unchanged")
            && log.contains("loopback is on the host already")
            && log.contains("portmap is on the host already"),
        "a second install-cni rewrote something: {log}"
    );

    let agent = start_agent(&lab, &d, &[]);
    // The ready agent replaced the foreign conflist (kept) and warned
    // about the one that sorts first.
    let agent_log = std::fs::read_to_string(&d.log).expect("agent log");
    assert!(
        agent_log.contains("WARN") && agent_log.contains("10-overlay.conflist.overlay-backup"),
        "no warning about the replaced conflist: {agent_log}"
    );
    assert!(
        agent_log.contains("05-other.conf"),
        "no warning about 05-other.conf: {agent_log}"
    );
    let conflist: Value =
        serde_json::from_slice(&std::fs::read(d.conflist()).expect("conflist")).expect("JSON");
    assert_eq!(conflist["x-overlay-managed"], true, "{conflist}");
    assert_eq!(conflist["plugins"][0]["type"], "overlay-cni");
    assert_eq!(
        conflist["plugins"][0]["agentSocket"],
        d.socket.display().to_string()
    );
    assert_eq!(
        conflist["plugins"][1]["type"], "portmap",
        "portmap was installed, so it is chained: {conflist}"
    );
    // Two pods, through libcni with what install-cni put on the node.
    let conflist_text = std::fs::read_to_string(d.conflist()).expect("conflist");
    let cni = LibCni::new(&lab.tag, &conflist_text, &[d.bin.as_path()]).in_node(&node.ns.name);
    let pods: Vec<(Netns, std::net::Ipv4Addr)> = (1..=2)
        .map(|i| {
            let ns = Netns::new(&lab.tag, &format!("p{i}"));
            let id = format!("{}-p{i}", lab.tag);
            let result = cni
                .add(&id, &ns.path(), "eth0")
                .unwrap_or_else(|e| panic!("ADD of pod {i}: {e}"));
            (ns, result_ip(&result))
        })
        .collect();
    let ping_all = |what: &str| {
        assert!(
            pods[0].0.ping(&pods[1].1.to_string(), 2),
            "{what}: pod 1 cannot reach pod 2"
        );
        assert!(
            node.ns.ping(&pods[0].1.to_string(), 1),
            "{what}: the node cannot reach pod 1"
        );
    };
    ping_all("with the agent running");
    assert_eq!(pod_veths(&node.ns).len(), 2);
    assert!(
        has_gro_device(&node.ns),
        "the agent made no GRO tunnel device"
    );
    assert!(
        nft_table_exists(&node.ns),
        "the agent made no masquerade table"
    );

    // SIGTERM, as on a rolling update: the pinned datapath stays, and with
    // it the pods' traffic.
    stop_agent(agent, &d);
    assert_eq!(
        std::fs::read_to_string(d.conflist()).expect("the conflist after SIGTERM"),
        conflist_text,
        "a stopped agent must leave the conflist for the pods that are there"
    );
    let pins = files_under(&node.pin_dir);
    assert!(
        pins.iter().any(|p| p == "ovl_routes_v1")
            && pins.iter().any(|p| p.starts_with("links/from_uplink@"))
            && pins
                .iter()
                .filter(|p| p.starts_with("links/from_pod@"))
                .count()
                == 2,
        "pins after SIGTERM: {pins:?}"
    );
    assert!(
        has_gro_device(&node.ns),
        "SIGTERM removed the GRO tunnel device"
    );
    ping_all("with the agent stopped");

    // A new agent takes over, with encryption on (it starts the WireGuard
    // device, which outlives it); uninstall is refused while it runs and
    // changes nothing.
    let agent = start_agent(&lab, &d, &["--encryption", "wireguard"]);
    ping_all("after the restart");
    let device_pid = overlay_agent::encryption::service::read_status(
        &overlay_agent::encryption::agent::Files::under(&d.state).status,
    )
    .expect("the WireGuard device reports")
    .pid;
    // Should an assertion fail before uninstall stops it, the device the
    // agent started is stopped here (by its PID).
    let _device = KillOnDrop(device_pid);
    assert!(
        link_names(&node.ns).iter().any(|l| l == "ovl-wg"),
        "no WireGuard device"
    );
    // The same pins, and from_wireguard's link.
    let pins: Vec<String> = {
        let mut p = pins;
        p.push("links/from_wireguard@ovl-wg".to_owned());
        p.sort();
        p
    };
    let refused = uninstall(&node.ns, &d, &node.pin_dir);
    assert!(
        !refused.status.success(),
        "uninstall with a running agent: {}",
        text(&refused)
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("agent is running"),
        "{}",
        text(&refused)
    );
    assert!(d.conflist().exists() && d.bin.join("overlay-cni").exists());
    assert_eq!(files_under(&node.pin_dir), pins);
    ping_all("after the refused uninstall");
    stop_agent(agent, &d);

    let out = uninstall(&node.ns, &d, &node.pin_dir);
    assert!(out.status.success(), "uninstall failed: {}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    for line in [
        format!("removed {}", d.bin.join("overlay-cni").display()),
        format!("detached from_uplink from {UPLINK}"),
        format!("removed {}", node.pin_dir.display()),
        "deleted nftables table ip overlay".to_owned(),
        "deleted the GRO tunnel device ovl-gro".to_owned(),
        "stopped the WireGuard device and deleted ovl-wg".to_owned(),
        format!("removed {}", d.state.display()),
        format!("restored {}", d.conflist().display()),
    ] {
        assert!(
            said.contains(&line),
            "uninstall did not report {line:?}:\n{said}"
        );
    }
    assert_eq!(said.matches("deleted pod veth ovl").count(), 2, "{said}");

    assert!(
        !node.pin_dir.exists(),
        "pins left: {:?}",
        files_under(&node.pin_dir)
    );
    assert_eq!(pod_veths(&node.ns), Vec::<String>::new(), "pod veths left");
    assert!(!has_gro_device(&node.ns), "GRO tunnel device left");
    assert!(
        !link_names(&node.ns).iter().any(|l| l == "ovl-wg"),
        "WireGuard device left"
    );
    assert!(
        !Path::new(&format!("/proc/{device_pid}")).exists(),
        "the WireGuard device process {device_pid} still runs"
    );
    assert!(!nft_table_exists(&node.ns), "table ip overlay left");
    assert!(!d.bin.join("overlay-cni").exists(), "plugin binary left");
    assert_eq!(
        std::fs::read_to_string(d.conflist()).expect("the replaced conflist is back"),
        foreign
    );
    assert!(!d.conf.join("10-overlay.conflist.overlay-backup").exists());
    assert!(
        d.conf.join("05-other.conf").exists(),
        "someone else's file was removed"
    );
    assert!(!d.state.exists(), "state dir left");
    assert!(
        !d.socket.exists() && !d.socket.parent().expect("dir").exists(),
        "socket dir left"
    );
    assert!(
        !pods[0].0.ping(&pods[1].1.to_string(), 1),
        "pods still connected"
    );

    let second = uninstall(&node.ns, &d, &node.pin_dir);
    assert!(
        second.status.success(),
        "second uninstall: {}",
        text(&second)
    );
    assert_eq!(
        String::from_utf8_lossy(&second.stdout).trim(),
        "nothing to remove: the overlay is not installed on this node",
        "{}",
        text(&second)
    );
    assert_eq!(
        std::fs::read_to_string(d.conflist()).expect("conflist"),
        foreign
    );

    // The cleanup DaemonSet's way: uninstall, then wait for SIGTERM.
    let mut waiting = Command::new("nsenter")
        .arg(format!("--net={}", node.ns.path().display()))
        .arg(bin_path("overlay-agent"))
        .args(["uninstall", "--then-wait", "--pin-dir"])
        .arg(&node.pin_dir)
        .arg("--cni-bin-dir")
        .arg(&d.bin)
        .arg("--cni-conf-dir")
        .arg(&d.conf)
        .arg("--state-dir")
        .arg(&d.state)
        .arg("--socket")
        .arg(&d.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn uninstall --then-wait");
    let stdout = waiting.stdout.take().expect("stdout");
    let mut waiting = Process::from_child(waiting);
    let said: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .take_while(|l| !l.contains("waiting for SIGTERM"))
        .collect();
    assert_eq!(
        waiting.wait_timeout(Duration::from_millis(300)),
        None,
        "it did not wait: {said:?}"
    );
    waiting.signal(libc::SIGTERM);
    assert_eq!(
        waiting.wait_timeout(Duration::from_secs(5)),
        Some(true),
        "uninstall --then-wait did not exit cleanly on SIGTERM"
    );
}
