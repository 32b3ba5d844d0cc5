//! libcni, the library containerd and CRI-O use, driving a conflist through
//! `tests/cni-driver`, a small Go program of ours built against Debian's
//! `golang-github-appc-cni-dev`.
//!
//! That package is libcni 1.1.2 (CNI spec up to 1.0.0): ADD, CHECK, DEL and
//! VERSION only. STATUS and GC arrived in libcni 1.2 (spec 1.1.0), so the
//! driver does not offer them.
//!
//! libcni behaviour worth knowing when testing a plugin with it:
//! - it runs the plugins of a list in order for ADD and CHECK and in reverse
//!   for DEL, each getting the previous one's result as `prevResult`, and
//!   injects the list's `name` and `cniVersion` into every plugin's conf;
//! - `runtimeConfig` only carries the capability arguments whose key the
//!   plugin's conf lists under `"capabilities"`;
//! - ADD writes the final result to `<cache>/results/<net>-<id>-<ifname>`;
//!   DEL passes it back as `prevResult` (spec >= 0.4.0) and removes it.
//!   CHECK passes the cached result as `prevResult` too, none when nothing
//!   is cached (the reference plugins then fail); `"disableCheck": true` in
//!   the list makes CHECK a no-op.
//! - the plugin inherits the driver's environment, with the `CNI_*`
//!   variables set by libcni (`CNI_PATH` is the plugin dir list).

use std::{
    fmt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::SystemTime,
};

use super::scratch::ScratchDir;

/// Bound on one driver call, in seconds (libcni's context timeout; the
/// process is also wrapped in coreutils `timeout` a little longer).
const DRIVER_TIMEOUT_SECS: u32 = 60;

/// Builds `tests/cni-driver` (once per process, and only when the source is
/// newer than the binary) into `<cargo target dir>/cni-driver/cni-driver`
/// and returns the binary's path. Panics, saying what to install, if `go` or
/// the libcni sources are missing.
pub fn build_driver() -> PathBuf {
    static DRIVER: OnceLock<PathBuf> = OnceLock::new();
    DRIVER.get_or_init(build).clone()
}

fn build() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("cni-driver");
    let gopath = Path::new("/usr/share/gocode");
    assert!(
        gopath
            .join("src/github.com/containernetworking/cni/libcni")
            .is_dir(),
        "libcni sources missing under {}: apt-get install golang-github-appc-cni-dev",
        gopath.display()
    );
    let out_dir = target_dir().join("cni-driver");
    std::fs::create_dir_all(&out_dir).expect("driver output dir");
    let bin = out_dir.join("cni-driver");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_src = std::fs::read_dir(&src)
        .expect("tests/cni-driver")
        .flatten()
        .filter_map(|e| mtime(&e.path()))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if mtime(&bin).is_some_and(|b| b >= newest_src) {
        return bin;
    }
    // Build beside and rename, so a concurrent test process never runs a
    // half-written binary.
    let tmp = out_dir.join(format!("cni-driver.{}", std::process::id()));
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `go` ({e}): apt-get install golang-go golang-github-appc-cni-dev")
        });
    assert!(
        out.status.success(),
        "building {} failed: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &bin).expect("installing cni-driver");
    bin
}

/// The cargo target directory holding the running test binary (the first
/// ancestor with cargo's `CACHEDIR.TAG`), else the temp dir.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|d| d.join("CACHEDIR.TAG").exists())
                .map(Path::to_owned)
        })
        .unwrap_or_else(std::env::temp_dir)
}

/// One conflist, a plugin path and client settings, driven through libcni.
/// The conflist file and libcni's cache live in `/tmp/ovl-libcni-<tag>`,
/// removed on drop.
pub struct LibCni {
    driver: PathBuf,
    plugin_dirs: Vec<PathBuf>,
    node: Option<String>,
    env: Vec<(String, String)>,
    cni_args: Vec<(String, String)>,
    capability_args: Option<serde_json::Value>,
    dir: ScratchDir,
}

/// A failed driver call: libcni's or the plugin's error.
#[derive(Debug, Clone)]
pub struct CniFailure {
    /// `add`, `check` or `del`.
    pub op: String,
    /// The driver's exit code (1: CNI failure, 2: usage); `None` if killed.
    pub code: Option<i32>,
    /// The error text (libcni wraps the plugin's, e.g. `plugin
    /// type="bridge" failed (add): ...`).
    pub message: String,
}

impl fmt::Display for CniFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cni-driver {} exited {:?}: {}",
            self.op,
            self.code,
            self.message.trim()
        )
    }
}

impl std::error::Error for CniFailure {}

impl LibCni {
    /// Drives `conflist` with plugins looked up in `plugin_dirs` (in order).
    /// Builds the driver if needed.
    pub fn new(tag: &str, conflist: &str, plugin_dirs: &[&Path]) -> Self {
        let dir = ScratchDir::new("libcni", tag);
        std::fs::write(dir.path().join("net.conflist"), conflist).expect("writing conflist");
        dir.subdir("cache");
        Self {
            driver: build_driver(),
            plugin_dirs: plugin_dirs.iter().map(|d| d.to_path_buf()).collect(),
            node: None,
            env: Vec::new(),
            cni_args: Vec::new(),
            capability_args: None,
            dir,
        }
    }

    /// Runs the driver, hence the plugins, in the network namespace
    /// `/run/netns/<node>`, as a runtime on that node would.
    pub fn in_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_owned());
        self
    }

    /// Adds `key=value` to the driver's (and so the plugins') environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Appends `key=value` to `CNI_ARGS`, in order.
    pub fn cni_arg(mut self, key: &str, value: &str) -> Self {
        self.cni_args.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The `CNI_ARGS` containerd's CRI plugin sends for a pod sandbox:
    /// `IgnoreUnknown=1;K8S_POD_NAMESPACE;K8S_POD_NAME;K8S_POD_INFRA_CONTAINER_ID;K8S_POD_UID`.
    pub fn k8s_pod(self, namespace: &str, name: &str, infra_container_id: &str, uid: &str) -> Self {
        self.cni_arg("IgnoreUnknown", "1")
            .cni_arg("K8S_POD_NAMESPACE", namespace)
            .cni_arg("K8S_POD_NAME", name)
            .cni_arg("K8S_POD_INFRA_CONTAINER_ID", infra_container_id)
            .cni_arg("K8S_POD_UID", uid)
    }

    /// Capability arguments (a JSON object such as `{"portMappings": [..]}`)
    /// libcni puts into `runtimeConfig` of plugins that declare them.
    pub fn capability_args(mut self, args: serde_json::Value) -> Self {
        self.capability_args = Some(args);
        self
    }

    /// The conflist file the driver reads.
    pub fn conflist_path(&self) -> PathBuf {
        self.dir.path().join("net.conflist")
    }

    /// libcni's cache directory (`results/` holds cached ADD results).
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// ADD: the list's final result.
    pub fn add(
        &self,
        container_id: &str,
        netns: &Path,
        ifname: &str,
    ) -> Result<serde_json::Value, CniFailure> {
        let out = self.call("add", &[container_id, &netns.to_string_lossy(), ifname])?;
        serde_json::from_str(&out).map_err(|e| CniFailure {
            op: "add".into(),
            code: Some(0),
            message: format!("result is not JSON ({e}): {out}"),
        })
    }

    /// CHECK.
    pub fn check(&self, container_id: &str, netns: &Path, ifname: &str) -> Result<(), CniFailure> {
        self.call("check", &[container_id, &netns.to_string_lossy(), ifname])
            .map(drop)
    }

    /// DEL. `netns` may be empty, as containerd sends once the netns is gone.
    pub fn del(&self, container_id: &str, netns: &Path, ifname: &str) -> Result<(), CniFailure> {
        self.call("del", &[container_id, &netns.to_string_lossy(), ifname])
            .map(drop)
    }

    /// `VERSION` of every plugin of the list: plugin type to the spec
    /// versions it supports.
    pub fn versions(&self) -> Result<serde_json::Value, CniFailure> {
        let out = self.call("version", &[])?;
        Ok(serde_json::from_str(&out).expect("version output is JSON"))
    }

    fn call(&self, op: &str, args: &[&str]) -> Result<String, CniFailure> {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "2", &(DRIVER_TIMEOUT_SECS + 5).to_string()]);
        if let Some(node) = &self.node {
            cmd.arg("nsenter").arg(format!("--net=/run/netns/{node}"));
        }
        let path = std::env::join_paths(&self.plugin_dirs).expect("plugin dirs");
        let cni_args: Vec<String> = self
            .cni_args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        cmd.arg(&self.driver)
            .arg(op)
            .arg(self.conflist_path())
            .args(args)
            .env("CNI_DRIVER_PATH", path)
            .env("CNI_DRIVER_CACHE_DIR", self.cache_dir())
            .env("CNI_DRIVER_TIMEOUT", DRIVER_TIMEOUT_SECS.to_string())
            .env("CNI_DRIVER_ARGS", cni_args.join(";"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        match &self.capability_args {
            Some(caps) => cmd.env("CAP_ARGS", caps.to_string()),
            None => cmd.env_remove("CAP_ARGS"),
        };
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running cni-driver {op}: {e}"));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(CniFailure {
                op: op.to_owned(),
                code: out.status.code(),
                message: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }
}
