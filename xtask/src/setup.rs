//! `cargo xtask setup`: install what a fresh machine of this kind lacks.
//! Every step checks first and only installs what is missing, saying so.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{cargo, exec};

/// Debian packages the build, the tests, the lab and the bench use.
const APT_PACKAGES: &[&str] = &[
    // bpf-linker links against LLVM 22.
    "llvm-22-dev",
    "libpolly-22-dev",
    // Inspecting pinned maps, programs and links.
    "bpftool",
    // ip, tc, bridge: namespaces, veths, VXLAN devices.
    "iproute2",
    // Traffic in tests and the bench.
    "iputils-ping",
    "iperf3",
    "sockperf",
    "socat",
    "tcpdump",
    "ethtool",
    "procps",
    "util-linux",
    // Real CNI clients in tests (tests/src/cni_clients): containerd's ctr
    // with runc and a busybox rootfs; the reference plugins (bridge,
    // host-local, loopback, portmap) and the iptables portmap uses.
    "containerd",
    "runc",
    "busybox-static",
    "containernetworking-plugins",
    "iptables",
    // The agent's egress masquerade (nftables table `ip overlay`).
    "nftables",
    // libcni sources and the Go toolchain that builds tests/cni-driver.
    "golang-go",
    "golang-github-appc-cni-dev",
    // The container image (`cargo xtask image`): built FROM SCRATCH by
    // buildah; inspected and unpacked by the deploy tests with skopeo and
    // umoci.
    "buildah",
    "skopeo",
    "umoci",
    // The venv of kubernetes-validate, which checks deploy/*.yaml.
    "python3-venv",
];

/// kubernetes-validate from PyPI: OpenAPI schemas of every Kubernetes
/// release from 1.25 on, with strict mode (unknown fields are errors).
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// The venv holding kubernetes-validate, relative to the workspace root;
/// the deploy tests look for `bin/kubernetes-validate` in it (or in
/// `OVERLAY_KUBE_VALIDATE`, which `cargo xtask test` sets).
pub const VENV: &str = "target/venv";

const BPF_LINKER_VERSION: &str = "0.13";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

fn quiet_ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn dpkg_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f", "${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn apt() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("setup: Debian packages present");
        return Ok(());
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    exec(Command::new("apt-get").args(["update", "-qq"]))?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .context("rustup cannot list the nightly toolchain's components; is `nightly` installed?")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: nightly rust-src present");
        return Ok(());
    }
    eprintln!("setup: installing rust-src for the nightly toolchain");
    exec(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let version = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if version.contains(&format!("bpf-linker {BPF_LINKER_VERSION}")) {
        eprintln!("setup: {} present", version.trim());
        return Ok(());
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    exec(
        cargo()
            .args(["install", "bpf-linker", "--version"])
            .arg(format!("^{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
}

/// The `kubernetes-validate` of the venv.
pub fn kubernetes_validate() -> PathBuf {
    crate::image::workspace_root()
        .join(VENV)
        .join("bin/kubernetes-validate")
}

fn venv() -> anyhow::Result<()> {
    let tool = kubernetes_validate();
    let version = output(Command::new(&tool).arg("--version")).unwrap_or_default();
    if version.trim() == KUBERNETES_VALIDATE_VERSION {
        eprintln!("setup: kubernetes-validate {KUBERNETES_VALIDATE_VERSION} present");
        return Ok(());
    }
    let venv = crate::image::workspace_root().join(VENV);
    eprintln!(
        "setup: installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION} into {}",
        venv.display()
    );
    // Debian's python (python3-venv above) is always there; --clear makes a
    // venv whose interpreter went away usable again.
    exec(
        Command::new("/usr/bin/python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )?;
    exec(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!(
                "kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
            )),
    )
}

/// Installs whatever is missing.
pub fn run() -> anyhow::Result<()> {
    apt()?;
    venv()?;
    rust_src()?;
    bpf_linker()?;
    if !quiet_ok(Command::new("bpf-linker").arg("--version")) {
        bail!("bpf-linker is installed but does not run; is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

/// Builds overlay-agent (whose build.rs builds the eBPF object with
/// aya-build) and returns the object's path.
pub fn build_ebpf() -> anyhow::Result<PathBuf> {
    let out = cargo()
        .args(["build", "-p", "overlay-agent", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        bail!("cargo build -p overlay-agent failed");
    }
    // The build script's OUT_DIR holds the object as `overlay`.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let out_dir = stdout
        .lines()
        .filter(|l| {
            l.contains("\"reason\":\"build-script-executed\"") && l.contains("overlay-agent")
        })
        .find_map(|l| {
            let start = l.find("\"out_dir\":\"")? + "\"out_dir\":\"".len();
            let end = l[start..].find('"')? + start;
            Some(PathBuf::from(&l[start..end]))
        })
        .context("cargo did not report overlay-agent's build script OUT_DIR")?;
    let object = out_dir.join("overlay");
    if !object.is_file() {
        bail!("{} was not built", object.display());
    }
    println!("{}", object.display());
    Ok(object)
}
