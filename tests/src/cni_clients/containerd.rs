//! A private containerd and `ctr run --rm --cni` containers whose network a
//! CNI plugin sets up inside a node network namespace of the lab.
//!
//! What containerd 1.6.20 (Debian 12) and its `ctr` really do, observed here:
//!
//! - `ctr run --cni` loads the *first* file (sorted) of `/etc/cni/net.d`
//!   (`.conf`, `.conflist`, `.json`) before it creates the task, and runs
//!   the plugins itself, in its own process: so they inherit ctr's network
//!   namespace, mount namespace and environment. Hence ctr runs under
//!   `nsenter --net=/run/netns/<node>`, in a private mount namespace where
//!   `/etc`, `/opt` and `/var/lib` are overlays (the host's files stay
//!   untouched) with our conf dir bind-mounted on `/etc/cni/net.d` and our
//!   plugin dir on `/opt/cni/bin`. No ctr flag or variable moves these dirs.
//! - Debian patches the plugin path: `CNI_PATH=/opt/cni/bin:/usr/lib/cni`,
//!   so a plugin missing from our dir is still found in `/usr/lib/cni`.
//! - `CNI_CONTAINERID` is `<ctr namespace>-<container name>`, `CNI_IFNAME`
//!   is `eth0`, `CNI_ARGS` is empty (no `K8S_POD_*`, no `IgnoreUnknown`).
//! - ADD gets `CNI_NETNS=/proc/<task pid>/ns/net` and runs after the task is
//!   created but before it starts, so the task is `RUNNING` only once ADD
//!   succeeded. A failed ADD makes ctr exit 1 with libcni's error
//!   (`ctr: plugin type="bridge" failed (add): ...`); with `--rm` it still
//!   calls DEL, then leaves the created, never started container behind
//!   ([`Containerd::try_run`] removes it).
//! - ctr only logs a failed DEL (`level=error msg="network review"
//!   error="plugin type=... failed (delete): ..."`) and still exits with the
//!   task's status, so check [`CtrExit::stderr`].
//! - With `--rm`, ctr calls DEL once after the task exits, with
//!   `CNI_NETNS=""` (the process, hence the netns, is gone) and the
//!   prevResult from libcni's cache (`/var/lib/cni/results/<net>-<id>-eth0`,
//!   removed after DEL). ctr exits with the task's status (137 after
//!   SIGKILL). `--rm` and `-d` are mutually exclusive; with `-d --cni` ctr
//!   calls ADD only and nothing ever calls DEL (host-local leaks the IP).
//! - The task is PID 1 of its namespace, so SIGTERM does not stop
//!   `sleep`; stopping uses SIGKILL.
//! - Without an image there is no default `PATH` (`exec: "sleep":
//!   executable file not found`), so runs pass `--env PATH=/bin`.
//! - The runc shim always puts its socket in `/run/containerd/s/` (a
//!   hash of our grpc address; removed when the shim exits); runc state and
//!   IO fifos are moved into our directory with `--runc-root` and
//!   `--fifo-dir`. runc leaves an empty cgroup `<ns>` under every hierarchy
//!   (`/sys/fs/cgroup/<controller>/<ns>` on this cgroup v1 host), removed on
//!   drop.
//! - containerd needs no CRI plugin for `ctr`; it is disabled, which also
//!   avoids the `restrict_oom_score_adj` failure (root here lacks
//!   CAP_SYS_RESOURCE).

use std::{
    cell::Cell,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use super::scratch::{ScratchDir, describe, kill_and_reap, wait_timeout};

/// How long containerd may take to answer after start.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `ctr run` may take until the task runs (CNI ADD included).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long ctr may take to exit (CNI DEL included) after the task died.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on every short `ctr` command, passed to coreutils `timeout`.
const CTR_TIMEOUT_SECS: &str = "20";

/// A containerd daemon of our own: root, state, sockets and a busybox
/// rootfs in `/tmp/ovl-ctrd-<tag>`, its objects in the ctr namespace
/// `ovl-<tag>`. On drop its tasks are killed, its containers removed, the
/// daemon killed by PID, leftover shims of this daemon killed by PID and its
/// cgroups and directory removed.
pub struct Containerd {
    child: Child,
    namespace: String,
    execs: Cell<u32>,
    // Last: removed after everything above is torn down.
    dir: ScratchDir,
}

/// What to run with `ctr run --rm --cni`.
#[derive(Debug, Clone)]
pub struct CtrRun {
    /// The node network namespace (under `/run/netns`) ctr, hence the CNI
    /// plugins, run in.
    pub node: String,
    /// The container's name; `CNI_CONTAINERID` is `<namespace>-<name>`.
    pub name: String,
    /// The conflist ctr loads, seen as `/etc/cni/net.d/10-<name>.conflist`.
    pub conflist: String,
    /// The directory seen as `/opt/cni/bin`.
    pub plugin_dir: PathBuf,
    /// Extra environment for ctr, which the plugins inherit.
    pub env: Vec<(String, String)>,
    /// The container's command; `sleep 300` by default. Busybox applets
    /// are on `PATH`.
    pub command: Vec<String>,
}

impl CtrRun {
    /// A run of `sleep 300` named `name` in `node` with `conflist` and the
    /// plugins of `plugin_dir`.
    pub fn new(node: &str, name: &str, conflist: &str, plugin_dir: &Path) -> Self {
        Self {
            node: node.to_owned(),
            name: name.to_owned(),
            conflist: conflist.to_owned(),
            plugin_dir: plugin_dir.to_owned(),
            env: Vec::new(),
            command: vec!["sleep".into(), "300".into()],
        }
    }

    /// Adds `key=value` to ctr's (and so the plugins') environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Replaces the container's command.
    pub fn command(mut self, argv: &[&str]) -> Self {
        self.command = argv.iter().map(|s| (*s).to_owned()).collect();
        self
    }
}

/// A container run by `ctr run --rm --cni`, ctr still waiting on it.
/// Dropping it kills the task (so ctr's DEL still runs), waits a bounded
/// time for ctr, then kills ctr by PID and removes what is left.
pub struct RunningContainer<'a> {
    ctrd: &'a Containerd,
    name: String,
    pid: u32,
    ctr: Option<Child>,
    run_dir: PathBuf,
}

/// How a `ctr run` ended.
#[derive(Debug)]
pub struct CtrExit {
    /// ctr's exit code; `None` when the harness had to kill ctr.
    pub code: Option<i32>,
    /// ctr's stdout (the container's output).
    pub stdout: String,
    /// ctr's stderr (a failed ADD or DEL shows here).
    pub stderr: String,
    /// Whether the container is gone from containerd afterwards.
    pub container_removed: bool,
}

impl Containerd {
    /// Starts `containerd --config <generated>` and waits until
    /// `ctr version` answers. Panics with containerd's log if it does not.
    pub fn start(tag: &str) -> Self {
        let dir = ScratchDir::new("ctrd", tag);
        build_rootfs(&dir.subdir("rootfs"));
        let root = dir.path();
        let config = root.join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}/root"
state = "{root}/state"
# ctr needs no CRI; with it, root without CAP_SYS_RESOURCE would also need
# restrict_oom_score_adj = true.
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{root}/c.sock"
[ttrpc]
  address = "{root}/t.sock"
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"#,
                root = root.display()
            ),
        )
        .expect("writing containerd config");
        let log = File::create(root.join("containerd.log")).expect("containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting containerd (apt-get install containerd): {e}"));
        let mut ctrd = Self {
            child,
            namespace: format!("ovl-{tag}"),
            execs: Cell::new(0),
            dir,
        };
        ctrd.wait_until_serving();
        ctrd
    }

    fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("containerd exited ({status}):\n{}", self.log());
            }
            if self.ctr(&["version"]).status.success() {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "containerd did not answer within {START_TIMEOUT:?}:\n{}",
            self.log()
        );
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The grpc socket, for `ctr --address`.
    pub fn address(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    /// The ctr namespace our containers live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The shared busybox rootfs (`/bin/busybox` and a symlink per applet).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// PID of the containerd daemon.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ctr --address .. --namespace .. ARGS`, bounded by `timeout`;
    /// returns its output whatever the status.
    pub fn ctr(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "2", CTR_TIMEOUT_SECS, "ctr", "--address"])
            .arg(self.address())
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(Stdio::null());
        cmd.output()
            .unwrap_or_else(|e| panic!("running ctr {args:?}: {e}"))
    }

    /// `(name, pid, status)` of every task of our namespace.
    pub fn tasks(&self) -> Vec<(String, u32, String)> {
        let out = self.ctr(&["task", "ls"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((
                    f.next()?.to_owned(),
                    f.next()?.parse().ok()?,
                    f.next()?.to_owned(),
                ))
            })
            .collect()
    }

    /// Names of every container of our namespace.
    pub fn containers(&self) -> Vec<String> {
        let out = self.ctr(&["container", "ls", "-q"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Runs `spec` and waits until its task is running; panics with ctr's
    /// output if ctr fails (e.g. the plugin's ADD failed).
    pub fn run(&self, spec: &CtrRun) -> RunningContainer<'_> {
        self.try_run(spec)
            .unwrap_or_else(|exit| panic!("ctr run {} failed: {exit:?}", spec.name))
    }

    /// Runs `spec` with `ctr run --rm --cni` in the background and waits
    /// until its task is running. If ctr exits first (a failed ADD, say),
    /// returns how it ended.
    pub fn try_run(&self, spec: &CtrRun) -> Result<RunningContainer<'_>, CtrExit> {
        let run_dir = self.dir.path().join("runs").join(&spec.name);
        for sub in [
            "net.d",
            "fifo",
            "runc",
            "upper/etc",
            "upper/opt",
            "upper/var-lib",
            "work/etc",
            "work/opt",
            "work/var-lib",
        ] {
            std::fs::create_dir_all(run_dir.join(sub)).expect("run dir");
        }
        std::fs::write(
            run_dir.join(format!("net.d/10-{}.conflist", spec.name)),
            &spec.conflist,
        )
        .expect("writing conflist");

        // Overlays keep the host's /etc, /opt and /var/lib visible to ctr
        // while our conf and plugin dirs appear at ctr's fixed paths and
        // libcni's cache lands in upper/var-lib; all of it vanishes with
        // ctr's private mount namespace. `unshare`, `sh` and `nsenter` exec
        // in place, so the child's PID is ctr's.
        let script = r#"set -e
d="$1"; conf="$2"; bin="$3"; node="$4"; shift 4
for m in etc:/etc opt:/opt var-lib:/var/lib; do
  n=${m%%:*}; p=${m#*:}
  mount -t overlay overlay -o "lowerdir=$p,upperdir=$d/upper/$n,workdir=$d/work/$n" "$p"
done
mkdir -p /etc/cni/net.d /opt/cni/bin
mount --bind "$conf" /etc/cni/net.d
mount --bind "$bin" /opt/cni/bin
exec nsenter --net="/run/netns/$node" "$@"
"#;
        let ctr_out = File::create(run_dir.join("ctr.stdout")).expect("ctr stdout");
        let ctr_err = File::create(run_dir.join("ctr.stderr")).expect("ctr stderr");
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "ctr-run",
        ])
        .arg(&run_dir)
        .arg(run_dir.join("net.d"))
        .arg(&spec.plugin_dir)
        .arg(&spec.node)
        .arg("ctr")
        .arg("--address")
        .arg(self.address())
        .args(["--namespace", &self.namespace, "run", "--rm", "--cni"])
        .arg("--fifo-dir")
        .arg(run_dir.join("fifo"))
        .arg("--runc-root")
        .arg(run_dir.join("runc"))
        .args(["--env", "PATH=/bin:/sbin:/usr/bin:/usr/sbin", "--rootfs"])
        .arg(self.rootfs())
        .arg(&spec.name)
        .args(&spec.command)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(ctr_out)
        .stderr(ctr_err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning ctr run {}: {e}", spec.name));
        let mut running = RunningContainer {
            ctrd: self,
            name: spec.name.clone(),
            pid: 0,
            ctr: Some(child),
            run_dir,
        };

        let deadline = Instant::now() + RUN_TIMEOUT;
        for _ in 0..600 {
            let ctr = running.ctr.as_mut().expect("ctr child");
            if let Ok(Some(_)) = ctr.try_wait() {
                return Err(running.finish(Duration::ZERO));
            }
            let task = self.tasks().into_iter().find(|t| t.0 == spec.name);
            if let Some((_, pid, status)) = task
                && status == "RUNNING"
            {
                running.pid = pid;
                return Ok(running);
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut exit = running.finish(Duration::ZERO);
        exit.stderr.push_str(&format!(
            "\n(harness: task not running within {RUN_TIMEOUT:?})"
        ));
        Err(exit)
    }

    fn next_exec_id(&self) -> String {
        let n = self.execs.get();
        self.execs.set(n + 1);
        format!("exec-{n}")
    }

    fn kill_leftover_shims(&self) {
        let address = self.address();
        let address = address.to_string_lossy();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in procs.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            // Only shims started for this daemon: their -address is our socket.
            if cmdline.contains("containerd-shim") && cmdline.contains(&*address) {
                // SAFETY: kill has no memory preconditions; pid is a shim of ours.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    fn remove_cgroups(&self) {
        // cgroup v1: one hierarchy per controller; v2: the root itself.
        let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            roots.extend(entries.flatten().map(|e| e.path()));
        }
        for root in roots {
            let ns = root.join(&self.namespace);
            if let Ok(children) = std::fs::read_dir(&ns) {
                for child in children.flatten() {
                    if child.path().is_dir() {
                        let _ = std::fs::remove_dir(child.path());
                    }
                }
                let _ = std::fs::remove_dir(&ns);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for (name, _, _) in self.tasks() {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", &name]);
            let _ = self.ctr(&["task", "delete", "--force", &name]);
        }
        for name in self.containers() {
            let _ = self.ctr(&["container", "delete", &name]);
        }
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill has no memory preconditions; pid is our child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if wait_timeout(&mut self.child, Duration::from_secs(5)).is_none() {
            kill_and_reap(&mut self.child);
        }
        self.kill_leftover_shims();
        self.remove_cgroups();
    }
}

impl RunningContainer<'_> {
    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `CNI_CONTAINERID` as ctr passes it: `<namespace>-<name>`.
    pub fn cni_container_id(&self) -> String {
        format!("{}-{}", self.ctrd.namespace, self.name)
    }

    /// The task's PID (PID 1 of the container).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The container's network namespace, as ctr passed it in `CNI_NETNS`.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid))
    }

    /// libcni's result cache as ctr wrote it (its `/var/lib/cni`).
    pub fn cni_cache_dir(&self) -> PathBuf {
        self.run_dir.join("upper/var-lib/cni")
    }

    /// Runs `argv` in the container (`ctr task exec`), bounded in time.
    pub fn exec(&self, argv: &[&str]) -> Output {
        let id = self.ctrd.next_exec_id();
        let fifo = self.run_dir.join("fifo");
        let fifo = fifo.to_string_lossy();
        let mut args = vec![
            "task",
            "exec",
            "--fifo-dir",
            &fifo,
            "--exec-id",
            &id,
            &self.name,
        ];
        args.extend_from_slice(argv);
        self.ctrd.ctr(&args)
    }

    /// Runs `argv` in the container; panics unless it succeeds. Returns
    /// stdout.
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        assert!(
            out.status.success(),
            "{argv:?} in {}: {}",
            self.name,
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The first IPv4 address (without prefix) on `ifname`.
    pub fn ipv4(&self, ifname: &str) -> std::net::Ipv4Addr {
        let out = self.exec_ok(&["ip", "-4", "addr", "show", "dev", ifname]);
        out.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no IPv4 address on {ifname} in {}: {out}", self.name))
    }

    /// Kills the task with SIGKILL and waits (bounded) for ctr to exit,
    /// which with `--rm` calls the plugins' DEL and removes the container.
    pub fn stop(mut self) -> CtrExit {
        let _ = self
            .ctrd
            .ctr(&["task", "kill", "-s", "SIGKILL", &self.name]);
        self.finish(STOP_TIMEOUT)
    }

    /// Waits up to `timeout` for ctr, kills it by PID if it is still there,
    /// removes what ctr left and reports.
    fn finish(&mut self, timeout: Duration) -> CtrExit {
        let mut ctr = self.ctr.take().expect("ctr not yet finished");
        let code = match wait_timeout(&mut ctr, timeout) {
            Some(status) => status.code(),
            None => {
                kill_and_reap(&mut ctr);
                None
            }
        };
        let read = |f: &str| std::fs::read_to_string(self.run_dir.join(f)).unwrap_or_default();
        let container_removed = !self.ctrd.containers().contains(&self.name);
        if !container_removed {
            let _ = self.ctrd.ctr(&["task", "delete", "--force", &self.name]);
            let _ = self.ctrd.ctr(&["container", "delete", &self.name]);
        }
        CtrExit {
            code,
            stdout: read("ctr.stdout"),
            stderr: read("ctr.stderr"),
            container_removed,
        }
    }
}

impl Drop for RunningContainer<'_> {
    fn drop(&mut self) {
        if self.ctr.is_some() {
            let _ = self
                .ctrd
                .ctr(&["task", "kill", "-s", "SIGKILL", &self.name]);
            let _ = self.finish(Duration::from_secs(10));
        }
    }
}

/// A rootfs of busybox-static: `bin/busybox` and a relative symlink per
/// applet, plus the mount points runc expects.
fn build_rootfs(dir: &Path) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox missing: apt-get install busybox-static"
    );
    for sub in ["bin", "sbin", "proc", "sys", "dev", "etc", "tmp", "run"] {
        std::fs::create_dir_all(dir.join(sub)).expect("rootfs dir");
    }
    std::fs::copy(busybox, dir.join("bin/busybox")).expect("copying busybox");
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
        }
    }
}
