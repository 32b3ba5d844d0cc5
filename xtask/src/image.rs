//! `cargo xtask image`: the DaemonSet's container image as an OCI archive.
//!
//! No base image can be pulled here, so the image is built FROM SCRATCH with
//! Debian's `buildah`:
//!
//! - `overlay-agent` and `overlay-cni`, statically linked against glibc
//!   (`-C target-feature=+crt-static` for the x86_64 target only, so build
//!   scripts, proc macros and the eBPF sub-build are untouched; musl is not
//!   installable on this machine), at `/usr/local/bin/`;
//! - `nft` with the shared libraries and loader it needs, copied from this
//!   machine's Debian packages, because the agent installs its egress
//!   masquerade by running `nft -f -`;
//! - the reference CNI plugins `loopback` (containerd calls it for every
//!   pod) and `portmap` (our conflist chains it) from Debian's
//!   `containernetworking-plugins`, at [`REFERENCE_PLUGIN_DIR`], with their
//!   shared libraries, for `install-cni` to put on hosts that lack them.
//!
//! buildah runs with a private storage root under `target/image/`, so the
//! machine's container storage is never touched, and the working container
//! is removed by the commit. Output: [`ARCHIVE`], an `oci-archive` whose
//! image is named [`ARCHIVE_REF`]: the fully qualified name a CRI runtime
//! resolves the manifest's [`IMAGE_REF`] to, so that
//! `ctr -n k8s.io images import` makes the image the kubelet looks for.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{cargo, exec};

/// Image name and tag, as `deploy/overlay.yaml` refers to it.
pub const IMAGE_REF: &str = "overlay-agent:0.1.0";

/// The name the archive carries: [`IMAGE_REF`] normalised as the CRI (and
/// docker) normalise a short name (`docker.io`, `library/`). `ctr images
/// import` keeps a fully qualified name as it is; a short one would be
/// imported under a name the kubelet never asks for.
pub const ARCHIVE_REF: &str = "docker.io/library/overlay-agent:0.1.0";

/// Where the image holds the reference CNI plugins (Debian's own path).
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

/// The reference plugins shipped: what the runtime and our conflist need.
const REFERENCE_PLUGINS: &[&str] = &["loopback", "portmap"];

/// The archive, relative to the workspace root.
pub const ARCHIVE: &str = "target/image/overlay-agent-0.1.0.oci.tar";

/// The target triple of the static build.
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Binaries that go to `/usr/local/bin/`.
const BINARIES: &[&str] = &["overlay-agent", "overlay-cni"];

/// What the agent runs (egress masquerade), with its libraries.
const NFT: &str = "/usr/sbin/nft";

/// The image's `PATH` (a scratch image has none, and without one `nft` in
/// /usr/sbin would not be found).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_owned()
}

/// Builds the static binaries and the image; returns the archive's path.
pub fn build() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let work = root.join("target/image");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let started = std::time::Instant::now();
    let bins = build_static()?;
    eprintln!(
        "image: static binaries ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let rootfs = work.join("rootfs");
    stage_rootfs(&rootfs, &bins)?;

    let started = std::time::Instant::now();
    let archive = root.join(ARCHIVE);
    buildah_image(&work, &rootfs, &archive)?;
    eprintln!(
        "image: {ARCHIVE_REF} committed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("{}", archive.display());
    eprintln!(
        "image: load it on a node with\n  ctr -n k8s.io images import {a}\n\
         (it is named {ARCHIVE_REF}, the name the kubelet resolves `image: {IMAGE_REF}` to)\n\
         or push it to a registry with\n  skopeo copy oci-archive:{a} docker://REGISTRY/{IMAGE_REF}",
        a = archive.display()
    );
    Ok(archive)
}

/// `cargo build --release --target x86_64-unknown-linux-gnu` of the two
/// binaries with a static C runtime; returns their paths after checking
/// that they are statically linked.
fn build_static() -> anyhow::Result<Vec<PathBuf>> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--release",
        "--target",
        TARGET,
        "-p",
        "overlay-agent",
    ]);
    for b in BINARIES {
        cmd.args(["--bin", b]);
    }
    // RUSTFLAGS would take precedence over the per-target flags and drop
    // crt-static.
    cmd.env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        );
    exec(&mut cmd)?;
    let dir = target_dir()?.join(TARGET).join("release");
    let mut out = Vec::new();
    for b in BINARIES {
        let path = dir.join(b);
        let file = capture(Command::new("file").arg("-b").arg(&path))?;
        // `file` says "statically linked" or, for a static PIE,
        // "static-pie linked".
        if !(file.contains("statically linked") || file.contains("static-pie linked")) {
            bail!(
                "{} is not statically linked: {}",
                path.display(),
                file.trim()
            );
        }
        out.push(path);
    }
    Ok(out)
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`).
fn target_dir() -> anyhow::Result<PathBuf> {
    let meta = capture(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    let v: serde_json::Value = serde_json::from_str(&meta).context("cargo metadata is not JSON")?;
    v["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

/// Lays out the image's files under `rootfs` (removed and made anew).
fn stage_rootfs(rootfs: &Path, bins: &[PathBuf]) -> anyhow::Result<()> {
    if rootfs.exists() {
        std::fs::remove_dir_all(rootfs)
            .with_context(|| format!("removing {}", rootfs.display()))?;
    }
    for bin in bins {
        let name = bin.file_name().context("binary name")?;
        copy_into(rootfs, bin, &Path::new("/usr/local/bin").join(name))?;
    }
    let plugins: Vec<PathBuf> = REFERENCE_PLUGINS
        .iter()
        .map(|p| Path::new(REFERENCE_PLUGIN_DIR).join(p))
        .collect();
    for tool in std::iter::once(PathBuf::from(NFT)).chain(plugins) {
        if !tool.is_file() {
            bail!(
                "{} is missing (apt-get install containernetworking-plugins nftables, or run \
                 `cargo xtask setup`)",
                tool.display()
            );
        }
        copy_into(rootfs, &tool, &tool)?;
        // Debian builds the plugins against glibc: their loader and libc
        // come along, so they also run inside the image.
        for lib in shared_libraries(&tool)? {
            copy_into(rootfs, &lib, &lib)?;
        }
    }
    Ok(())
}

/// The shared libraries and the loader `ldd` lists for `bin`, by the paths
/// the loader looks them up under.
fn shared_libraries(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = capture(Command::new("ldd").arg(bin))?;
    let mut libs = Vec::new();
    for line in out.lines() {
        let line = line.trim();
        // `libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x...)` or the
        // loader alone: `/lib64/ld-linux-x86-64.so.2 (0x...)`.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        } else if line.contains("not found") {
            bail!("ldd {}: {line}", bin.display());
        }
    }
    if libs.is_empty() {
        bail!("ldd lists no libraries for {}:\n{out}", bin.display());
    }
    Ok(libs)
}

/// Copies `src` (symlinks followed) to `rootfs` + `dest`, keeping its mode.
fn copy_into(rootfs: &Path, src: &Path, dest: &Path) -> anyhow::Result<()> {
    let to = rootfs.join(dest.strip_prefix("/").unwrap_or(dest));
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::copy(src, &to)
        .with_context(|| format!("copying {} to {}", src.display(), to.display()))?;
    Ok(())
}

/// The buildah command with the private storage under `work`.
fn buildah(work: &Path) -> Command {
    let mut cmd = Command::new("buildah");
    cmd.arg("--root")
        .arg(work.join("storage"))
        .arg("--runroot")
        .arg(work.join("run"))
        .args(["--storage-driver", "vfs"]);
    cmd
}

/// FROM scratch + `rootfs`, configured and committed to `archive`.
fn buildah_image(work: &Path, rootfs: &Path, archive: &Path) -> anyhow::Result<()> {
    let name = "overlay-agent-image-build";
    // A working container left by an interrupted run.
    let _ = buildah(work)
        .args(["rm", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let id = capture(buildah(work).args(["from", "--name", name, "scratch"]))?;
    let id = id.trim().to_owned();
    let result = (|| {
        exec(
            buildah(work)
                .args(["copy", "--quiet", &id])
                .arg(format!("{}/", rootfs.display()))
                .arg("/"),
        )?;
        let mut config = buildah(work);
        config
            .arg("config")
            .args(["--entrypoint", r#"["/usr/local/bin/overlay-agent"]"#])
            .args(["--cmd", r#"["run"]"#])
            .args(["--env", &format!("PATH={PATH}")])
            .args(["--os", "linux", "--arch", "amd64"]);
        for (k, v) in labels() {
            config.args(["--label", &format!("org.opencontainers.image.{k}={v}")]);
        }
        exec(config.arg(&id))?;
        // Written beside the archive and renamed, so a reader never sees
        // half an archive.
        let tmp = archive.with_extension("tar.tmp");
        let _ = std::fs::remove_file(&tmp);
        exec(
            buildah(work)
                .args(["commit", "--quiet", "--rm", "--format", "oci"])
                .args(["--timestamp", &source_date_epoch()])
                .arg(&id)
                .arg(format!("oci-archive:{}:{ARCHIVE_REF}", tmp.display())),
        )?;
        std::fs::rename(&tmp, archive)
            .with_context(|| format!("renaming {} into place", tmp.display()))
    })();
    if result.is_err() {
        let _ = buildah(work)
            .args(["rm", &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    result
}

/// The image's `org.opencontainers.image.*` labels.
fn labels() -> Vec<(&'static str, String)> {
    let mut l = vec![
        ("title", "overlay-agent".to_owned()),
        (
            "description",
            "Weave-style Kubernetes pod network with an eBPF datapath: the node agent \
             (overlay-agent) and the CNI plugin (overlay-cni)"
                .to_owned(),
        ),
        (
            "version",
            IMAGE_REF.rsplit(':').next().unwrap_or_default().to_owned(),
        ),
        ("licenses", "Apache-2.0".to_owned()),
    ];
    if let Ok(rev) = capture(Command::new("git").args(["rev-parse", "HEAD"])) {
        l.push(("revision", rev.trim().to_owned()));
    }
    l
}

/// The image's creation time: `SOURCE_DATE_EPOCH`, else the time of the
/// last commit, so that the same sources give the same image.
fn source_date_epoch() -> String {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .or_else(|| capture(Command::new("git").args(["log", "-1", "--format=%ct"])).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| "0".to_owned())
}

/// Runs `cmd` and returns its stdout; fails with its stderr.
fn capture(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_name_carries_the_image_version() {
        let version = IMAGE_REF.rsplit(':').next().unwrap();
        assert!(ARCHIVE.ends_with(&format!("overlay-agent-{version}.oci.tar")));
        assert_eq!(version, env!("CARGO_PKG_VERSION"));
        assert_eq!(ARCHIVE_REF, format!("docker.io/library/{IMAGE_REF}"));
    }

    #[test]
    fn the_loader_and_every_library_of_a_dynamic_binary_are_found() {
        let Ok(libs) = shared_libraries(Path::new("/bin/ls")) else {
            return;
        };
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{libs:?}"
        );
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
    }
}
