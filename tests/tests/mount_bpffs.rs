//! `overlay-agent mount-bpffs` (the DaemonSet's first init container) in
//! mount namespaces of the test's own, where both kinds of host it is for
//! can be built without touching this machine's mounts: bpffs not mounted
//! at all, and bpffs mounted but private (a non-systemd host). Afterwards
//! bpffs is mounted there and the mount is shared, as
//! `/proc/self/mountinfo` shows; a second run changes nothing; and with
//! `--mount-ns` it acts in the namespace named (as the DaemonSet does with
//! the host's, `/proc/1/ns/mnt`), not in its own.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use overlay_agent::datapath::bpffs::{MountEntry, parse_mountinfo_line};
use overlay_tests::{
    Process, cluster::bin_path, cni_clients::ScratchDir, deploy::output_ok, netns::unique_tag,
    privileged,
};

/// The top mount at exactly `path` in a mountinfo text.
fn mount_at(mountinfo: &str, path: &Path) -> Option<MountEntry> {
    mountinfo
        .lines()
        .rev()
        .filter_map(parse_mountinfo_line)
        .find(|e| e.mount_point == path)
}

/// The sections of a script's output, split at `== NAME` lines.
fn sections(out: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("== ") {
            v.push((name.to_owned(), String::new()));
        } else if let Some((_, text)) = v.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    v
}

#[test]
fn mount_bpffs_mounts_when_absent_shares_a_private_mount_and_is_idempotent() {
    privileged!("mount_bpffs_mounts_when_absent_shares_a_private_mount_and_is_idempotent");
    let scratch = ScratchDir::new("bpffs", &unique_tag());
    let d = scratch.path().to_owned();
    // In a private mount namespace: a tmpfs over the scratch directory, an
    // empty directory (no bpffs) and a bpffs made private, then the
    // command on each, twice, then the namespace's mountinfo.
    let script = r#"set -e
d="$1"; bin="$2"
mount -t tmpfs tmpfs "$d"
mkdir "$d/absent" "$d/private"
mount -t bpf bpf "$d/private"
mount --make-private "$d/private"
echo "== before"; cat /proc/self/mountinfo
for case in absent private; do
  echo "== $case 1"; "$bin" mount-bpffs --path "$d/$case"
  echo "== $case 2"; "$bin" mount-bpffs --path "$d/$case"
done
echo "== after"; cat /proc/self/mountinfo
"#;
    let out = output_ok(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&d)
            .arg(bin_path("overlay-agent")),
    );
    let s: std::collections::BTreeMap<String, String> = sections(&out).into_iter().collect();
    let (absent, private) = (d.join("absent"), d.join("private"));

    let before = &s["before"];
    assert_eq!(mount_at(before, &absent), None, "{before}");
    let p = mount_at(before, &private).expect("the private bpffs");
    assert!(p.fstype == "bpf" && !p.shared, "{}", p.line);

    assert_eq!(
        s["absent 1"].trim(),
        format!("mounted bpffs at {} and made it shared", absent.display())
    );
    assert_eq!(
        s["private 1"].trim(),
        format!(
            "bpffs at {} was mounted but not shared: made it shared",
            private.display()
        )
    );
    for case in [&absent, &private] {
        let name = case.file_name().unwrap().to_string_lossy();
        assert_eq!(
            s[&format!("{name} 2")].trim(),
            format!(
                "bpffs at {} is mounted and shared: nothing to do",
                case.display()
            ),
            "second run on {name}"
        );
        let after = mount_at(&s["after"], case).expect("mounted after");
        assert_eq!(after.fstype, "bpf", "{}", after.line);
        assert!(after.shared, "not shared: {}", after.line);
        // Once: the second run mounted nothing over the first.
        let stacked = s["after"]
            .lines()
            .filter_map(parse_mountinfo_line)
            .filter(|e| &e.mount_point == case)
            .count();
        assert_eq!(stacked, 1, "{name}: {stacked} mounts stacked");
    }
    println!(
        "absent: {}\nprivate: {}",
        s["absent 1"].trim(),
        s["private 1"].trim()
    );
}

#[test]
fn mount_bpffs_acts_in_the_mount_namespace_it_is_given() {
    privileged!("mount_bpffs_acts_in_the_mount_namespace_it_is_given");
    let scratch = ScratchDir::new("bpffs-ns", &unique_tag());
    let d: PathBuf = scratch.path().to_owned();
    let target = d.join("bpf");
    // The "host": a mount namespace of its own, kept alive by a sleeping
    // shell, with the mount point only on its private tmpfs.
    let script = r#"set -e
mount -t tmpfs tmpfs "$1"
mkdir "$1/bpf"
echo ready
exec sleep 120
"#;
    let mut child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&d)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the holder");
    let stdout = child.stdout.take().expect("stdout");
    let mut holder = Process::from_child(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("holder output");
    assert_eq!(line.trim(), "ready", "the holder did not get ready");
    let ns = format!("/proc/{}/ns/mnt", holder.pid());

    let out = output_ok(
        Command::new(bin_path("overlay-agent"))
            .args(["mount-bpffs", "--mount-ns", &ns, "--path"])
            .arg(&target),
    );
    assert_eq!(
        out.trim(),
        format!("mounted bpffs at {} and made it shared", target.display())
    );
    let theirs = std::fs::read_to_string(format!("/proc/{}/mountinfo", holder.pid()))
        .expect("the holder's mountinfo");
    let m = mount_at(&theirs, &target).expect("bpffs in the given namespace");
    assert!(m.fstype == "bpf" && m.shared, "{}", m.line);
    let ours = std::fs::read_to_string("/proc/self/mountinfo").expect("our mountinfo");
    assert_eq!(
        mount_at(&ours, &target),
        None,
        "mounted in the caller's namespace instead"
    );

    // A namespace that cannot be entered is an error naming it.
    let out = Command::new(bin_path("overlay-agent"))
        .args(["mount-bpffs", "--mount-ns", "/nonexistent/ns", "--path"])
        .arg(&target)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/ns"), "{err}");

    holder.signal(libc::SIGKILL);
    holder.wait_timeout(Duration::from_secs(5));
}
