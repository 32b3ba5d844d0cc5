//! What the deploy tests share: the manifests under `deploy/` as JSON, the
//! `OVERLAY_*` variables a subcommand of `overlay-agent` reads, the tools
//! `cargo xtask setup` installs (kubernetes-validate in a venv, skopeo,
//! umoci) and the image `cargo xtask image` builds.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;

use crate::cluster::bin_path;

/// The image's name as the manifests use it.
pub const IMAGE_REF: &str = "overlay-agent:0.1.0";

/// The name a CRI runtime (containerd's, for the kubelet) pulls or finds
/// for the image reference `image`, normalised as docker references are: no
/// registry means `docker.io`, a single-component name on `docker.io` is
/// under `library/`, and no tag or digest means `:latest`. The first
/// component is a registry when it has a `.` or a `:` or is `localhost`.
pub fn cri_image_name(image: &str) -> String {
    let (domain, rest) = match image.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => ("docker.io".to_owned(), image.to_owned()),
    };
    let rest = if domain == "docker.io" && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest
    };
    let last = rest.rsplit('/').next().unwrap_or_default();
    let tagged = last.contains(':') || rest.contains('@');
    format!("{domain}/{rest}{}", if tagged { "" } else { ":latest" })
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned()
}

/// `deploy/<name>`.
pub fn manifest_path(name: &str) -> PathBuf {
    workspace_root().join("deploy").join(name)
}

/// The archive `cargo xtask image` writes.
pub fn image_archive() -> PathBuf {
    workspace_root().join("target/image/overlay-agent-0.1.0.oci.tar")
}

/// Returns whether `test` may go on: when `missing` is `Some(reason)` it
/// prints why it skips and returns `false`, except under `CI=true`, where
/// a skip would hide a test that never ran, so it panics.
pub fn require(test: &str, missing: Option<String>) -> bool {
    let Some(reason) = missing else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {reason}, and CI=true forbids skipping");
    }
    eprintln!("SKIPPED {test}: {reason}");
    false
}

/// `kubernetes-validate` of the venv `cargo xtask setup` makes:
/// `OVERLAY_KUBE_VALIDATE` when set, else `target/venv/bin/`.
pub fn kubernetes_validate() -> PathBuf {
    std::env::var_os("OVERLAY_KUBE_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/venv/bin/kubernetes-validate"))
}

/// The venv's python (it has PyYAML, a dependency of kubernetes-validate).
pub fn venv_python() -> PathBuf {
    kubernetes_validate().with_file_name("python")
}

/// Why the venv cannot be used, if it cannot.
pub fn venv_missing() -> Option<String> {
    let tool = kubernetes_validate();
    (!tool.is_file() || !venv_python().is_file()).then(|| {
        format!(
            "{} is not installed (run `cargo xtask setup`)",
            tool.display()
        )
    })
}

/// Why `tool` cannot be run, if it cannot.
pub fn tool_missing(tool: &str) -> Option<String> {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!found).then(|| format!("{tool} is not installed (run `cargo xtask setup`)"))
}

/// Runs `cmd`, panicking with its stderr unless it succeeds; returns stdout.
pub fn output_ok(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The YAML documents of `path` as JSON (parsed by PyYAML in the venv).
pub fn yaml_documents(path: &Path) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
                  json.dump(docs, sys.stdout)\n";
    let out = output_ok(Command::new(venv_python()).args(["-c", script]).arg(path));
    let v: Value = serde_json::from_str(&out).expect("python printed JSON");
    v.as_array().expect("a list of documents").clone()
}

/// One container of a DaemonSet in a manifest.
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    /// `DaemonSet/<name>`.
    pub workload: String,
    /// The container's name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// Its `command` (none: the image's entrypoint).
    pub command: Option<Vec<String>>,
    /// Its `args`.
    pub args: Vec<String>,
    /// Its environment: name to literal value (`None` for `valueFrom`).
    pub env: BTreeMap<String, Option<String>>,
    /// Its `env` entries in order, with duplicates.
    pub env_names: Vec<String>,
}

impl ContainerSpec {
    /// The `overlay-agent` subcommand it runs (its first argument).
    pub fn subcommand(&self) -> &str {
        self.args.first().map_or("", String::as_str)
    }
}

/// Every container and init container of every DaemonSet in `docs`.
pub fn daemonset_containers(docs: &[Value]) -> Vec<ContainerSpec> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for doc in docs.iter().filter(|d| d["kind"] == "DaemonSet") {
        let workload = format!(
            "DaemonSet/{}",
            doc["metadata"]["name"].as_str().unwrap_or("")
        );
        let spec = &doc["spec"]["template"]["spec"];
        for list in ["initContainers", "containers"] {
            for c in spec[list].as_array().into_iter().flatten() {
                let entries = c["env"].as_array().cloned().unwrap_or_default();
                let env_names: Vec<String> = entries
                    .iter()
                    .filter_map(|e| e["name"].as_str().map(str::to_owned))
                    .collect();
                let env = entries
                    .iter()
                    .filter_map(|e| {
                        let name = e["name"].as_str()?.to_owned();
                        Some((name, e["value"].as_str().map(str::to_owned)))
                    })
                    .collect();
                out.push(ContainerSpec {
                    workload: workload.clone(),
                    name: c["name"].as_str().unwrap_or("").to_owned(),
                    image: c["image"].as_str().unwrap_or("").to_owned(),
                    command: c.get("command").map(strings),
                    args: strings(&c["args"]),
                    env,
                    env_names,
                });
            }
        }
    }
    out
}

/// `OVERLAY_*` names of the commented-out `env` entries of a manifest
/// (`# - name: OVERLAY_X`): knobs shown for the operator to uncomment.
pub fn commented_env(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start().strip_prefix('#')?.trim_start();
            let name = l.strip_prefix("- name:")?.trim();
            name.starts_with("OVERLAY_").then(|| name.to_owned())
        })
        .collect()
}

/// One option of `overlay-agent SUBCOMMAND --help` that reads a variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvOption {
    /// Its default, as `[default: ...]` shows it.
    pub default: Option<String>,
}

/// The variables `overlay-agent <subcommand> --help` lists (`[env: NAME=]`)
/// with each option's default.
pub fn help_env(subcommand: &str) -> BTreeMap<String, EnvOption> {
    let help = output_ok(Command::new(bin_path("overlay-agent")).args([subcommand, "--help"]));
    parse_help_env(&help)
}

/// [`help_env`] of a help text: clap prints each option as a header line
/// (`  -x, --flag <V>`, indented less than its description) followed by
/// its description, `[env: NAME=]` and `[default: V]`, on the same line in
/// the short format or on lines of their own in the long one.
pub fn parse_help_env(help: &str) -> BTreeMap<String, EnvOption> {
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        if line.trim_start().starts_with('-') && indent < 8 {
            blocks.push(String::new());
        }
        if let Some(b) = blocks.last_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    let between = |s: &str, start: &str, end: char| -> Option<String> {
        let i = s.find(start)? + start.len();
        let j = s[i..].find(end)? + i;
        Some(s[i..j].to_owned())
    };
    blocks
        .iter()
        .filter_map(|b| {
            // `[env: NAME=VALUE]`, or `[env: NAME]` when values are hidden.
            let start = b.find("[env: ")? + "[env: ".len();
            let name: String = b[start..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // clap quotes a default it would otherwise show blank: `""`.
            let default = between(b, "[default: ", ']').map(|d| {
                d.strip_prefix('"')
                    .and_then(|d| d.strip_suffix('"'))
                    .map_or(d.clone(), str::to_owned)
            });
            Some((name, EnvOption { default }))
        })
        .collect()
}

/// Whether the ELF file at `path` asks for a program interpreter (a
/// `PT_INTERP` program header): dynamically linked executables do, static
/// ones, static PIE included, do not. Panics if it is not a 64-bit
/// little-endian ELF file.
pub fn elf_has_interpreter(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(
        bytes.len() > 64 && &bytes[..4] == b"\x7fELF" && bytes[4] == 2 && bytes[5] == 1,
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let u64_at =
        |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes")) as usize;
    const PT_INTERP: u32 = 3;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let header = phoff + i * phentsize;
        header + 4 <= bytes.len() && u32_at(header) == PT_INTERP
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_in_both_formats_yields_names_and_defaults() {
        let long = "Options:\n      --node-ip <NODE_IP>\n          This node.\n          \n          \
                    [env: OVERLAY_NODE_IP=]\n\n      --port <P>\n          Port.\n          \n          \
                    [env: OVERLAY_PORT=]\n          [default: 6783]\n\n  -h, --help\n          Print help\n";
        let short = "Options:\n      --dir <D>  A dir [env: OVERLAY_DIR=] [default: /x]\n      \
                     --pw <P>  Secret [env: OVERLAY_PW]\n      \
                     --peers <P>  Seeds [env: OVERLAY_PEERS=] [default: \"\"]\n      \
                     --force    Force\n  -h, --help     Print help\n";
        let l = parse_help_env(long);
        assert_eq!(l["OVERLAY_NODE_IP"].default, None);
        assert_eq!(l["OVERLAY_PORT"].default.as_deref(), Some("6783"));
        assert_eq!(l.len(), 2);
        let s = parse_help_env(short);
        assert_eq!(s["OVERLAY_DIR"].default.as_deref(), Some("/x"));
        assert_eq!(
            s["OVERLAY_PW"].default, None,
            "hidden values still name the variable"
        );
        assert_eq!(
            s["OVERLAY_PEERS"].default.as_deref(),
            Some(""),
            "quoted empty"
        );
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn commented_entries_are_found() {
        let text =
            "  env:\n    # - name: OVERLAY_MTU\n    #   value: \"1450\"\n    - name: OVERLAY_X\n";
        assert_eq!(commented_env(text), vec!["OVERLAY_MTU"]);
    }

    #[test]
    fn image_references_normalise_as_the_cri_does() {
        for (short, full) in [
            (
                "overlay-agent:0.1.0",
                "docker.io/library/overlay-agent:0.1.0",
            ),
            ("overlay-agent", "docker.io/library/overlay-agent:latest"),
            ("team/agent:1", "docker.io/team/agent:1"),
            (
                "registry.example:5000/agent:1",
                "registry.example:5000/agent:1",
            ),
            ("localhost/agent", "localhost/agent:latest"),
            ("quay.io/x/y@sha256:abcd", "quay.io/x/y@sha256:abcd"),
        ] {
            assert_eq!(cri_image_name(short), full, "{short}");
        }
    }

    #[test]
    fn kubectl_commands_are_found_in_fences_comments_and_wrapped_inline_code() {
        let text = "Run\n```sh\nkubectl -n kube-system get pods -l app=x,b=c -o wide   # one\n\
                    ls\n```\nthen `kubectl -n kube-system logs\nds/agent` and\n\
                    # kubectl -n ns create secret generic pw --from-literal=a=b\n\
                    `kubectl apply -f deploy/x.yaml`.\n";
        let cmds = kubectl_commands(text);
        assert_eq!(cmds.len(), 4, "{cmds:#?}");
        assert_eq!(
            cmds[0].selector,
            vec![("app".into(), "x".into()), ("b".into(), "c".into())]
        );
        assert_eq!(
            cmds[0].text,
            "kubectl -n kube-system get pods -l app=x,b=c -o wide"
        );
        assert_eq!(cmds[1].secret.as_deref(), Some("pw"));
        assert_eq!(cmds[2].daemonsets, vec!["agent"]);
        assert_eq!(cmds[2].namespace.as_deref(), Some("kube-system"));
        assert_eq!(cmds[3].files, vec!["deploy/x.yaml"]);
    }

    #[test]
    fn a_selector_that_matches_no_pods_is_a_problem() {
        let sets = vec![DaemonSetInfo {
            name: "overlay-agent".into(),
            namespace: "kube-system".into(),
            pod_labels: [("app.kubernetes.io/name".to_owned(), "overlay".to_owned())].into(),
            secrets: vec!["overlay-password".into()],
        }];
        let bad = parse_kubectl("kubectl -n kube-system get pods -l app=overlay-agent");
        assert_eq!(kubectl_problems(&bad, &sets).len(), 1);
        let wrong_ns = parse_kubectl("kubectl logs ds/overlay-agent");
        assert_eq!(kubectl_problems(&wrong_ns, &sets).len(), 1);
        let good =
            parse_kubectl("kubectl -n kube-system get pods -l app.kubernetes.io/name=overlay");
        assert_eq!(kubectl_problems(&good, &sets), Vec::<String>::new());
        let secret = parse_kubectl("kubectl -n kube-system create secret generic overlay-password");
        assert_eq!(kubectl_problems(&secret, &sets), Vec::<String>::new());
    }

    #[test]
    fn dynamic_executables_have_an_interpreter() {
        assert!(elf_has_interpreter(Path::new("/bin/sh")));
    }
}

/// One `kubectl` command a document shows, with what it refers to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubectlCommand {
    /// The command as written.
    pub text: String,
    /// `-n`/`--namespace`, if given.
    pub namespace: Option<String>,
    /// `-l`/`--selector`, as `key=value` pairs.
    pub selector: Vec<(String, String)>,
    /// `ds/NAME` or `daemonset/NAME` (also `daemonsets/`).
    pub daemonsets: Vec<String>,
    /// `-f FILE`.
    pub files: Vec<String>,
    /// `create secret generic NAME`.
    pub secret: Option<String>,
}

/// Every `kubectl` command of `text`: lines of fenced code blocks and
/// comments (`# kubectl ...`, as in a manifest's header) that start with
/// `kubectl`, and inline code spans (which may wrap lines) that do. A
/// trailing `# comment` is not part of the command.
pub fn kubectl_commands(text: &str) -> Vec<KubectlCommand> {
    let mut found = Vec::new();
    let mut in_fence = false;
    let mut prose = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            prose.push('\n');
            continue;
        }
        let bare = line.trim_start().trim_start_matches('#').trim_start();
        if in_fence || line.trim_start().starts_with('#') {
            if let Some(cmd) = bare.strip_prefix("kubectl ") {
                let cmd = cmd.split(" # ").next().unwrap_or(cmd);
                found.push(format!("kubectl {}", cmd.trim()));
            }
            if in_fence {
                continue;
            }
        }
        prose.push_str(line);
        prose.push(' ');
    }
    // Inline spans: every other backtick delimits code.
    for (i, span) in prose.split('`').enumerate() {
        if i % 2 == 1 && span.starts_with("kubectl ") {
            found.push(span.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    found.into_iter().map(|t| parse_kubectl(&t)).collect()
}

/// What a `kubectl` command line refers to.
pub fn parse_kubectl(text: &str) -> KubectlCommand {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut cmd = KubectlCommand {
        text: text.to_owned(),
        ..KubectlCommand::default()
    };
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f, Some(v)),
            _ => (w, None),
        };
        let value = |i: &mut usize| -> String {
            match inline {
                Some(v) => v.to_owned(),
                None => {
                    *i += 1;
                    words.get(*i).copied().unwrap_or_default().to_owned()
                }
            }
        };
        match flag {
            "-n" | "--namespace" => cmd.namespace = Some(value(&mut i)),
            "-l" | "--selector" => {
                cmd.selector = value(&mut i)
                    .split(',')
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        Some((k.to_owned(), v.trim_start_matches('=').to_owned()))
                    })
                    .collect();
            }
            "-f" | "--filename" => cmd.files.push(value(&mut i)),
            _ => {
                if let Some((kind, name)) = w.split_once('/')
                    && matches!(kind, "ds" | "daemonset" | "daemonsets")
                {
                    cmd.daemonsets.push(name.to_owned());
                }
                if w == "generic" && i >= 2 && words[i - 1] == "secret" {
                    cmd.secret = words.get(i + 1).map(|s| (*s).to_owned());
                }
            }
        }
        i += 1;
    }
    cmd
}

/// A DaemonSet of a manifest: where it is and what its pods carry.
#[derive(Clone, Debug)]
pub struct DaemonSetInfo {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// The pod template's labels.
    pub pod_labels: BTreeMap<String, String>,
    /// `secretName` of its secret volumes.
    pub secrets: Vec<String>,
}

/// Every DaemonSet of `docs`.
pub fn daemonsets(docs: &[Value]) -> Vec<DaemonSetInfo> {
    docs.iter()
        .filter(|d| d["kind"] == "DaemonSet")
        .map(|d| {
            let str_of = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            let spec = &d["spec"]["template"];
            DaemonSetInfo {
                name: str_of(&d["metadata"]["name"]),
                namespace: str_of(&d["metadata"]["namespace"]),
                pod_labels: spec["metadata"]["labels"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), str_of(v))).collect())
                    .unwrap_or_default(),
                secrets: spec["spec"]["volumes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v["secret"]["secretName"].as_str().map(str::to_owned))
                    .collect(),
            }
        })
        .collect()
}

/// What is wrong with `cmd` against the manifests' DaemonSets (empty when
/// nothing is): a namespaced command without `-n` is taken to use
/// `default`, as kubectl does.
pub fn kubectl_problems(cmd: &KubectlCommand, sets: &[DaemonSetInfo]) -> Vec<String> {
    let ns = cmd.namespace.as_deref().unwrap_or("default");
    let in_ns: Vec<&DaemonSetInfo> = sets.iter().filter(|d| d.namespace == ns).collect();
    let mut problems = Vec::new();
    for name in &cmd.daemonsets {
        if !in_ns.iter().any(|d| &d.name == name) {
            problems.push(format!("no DaemonSet {name} in namespace {ns}"));
        }
    }
    if !cmd.selector.is_empty()
        && !in_ns.iter().any(|d| {
            cmd.selector
                .iter()
                .all(|(k, v)| d.pod_labels.get(k) == Some(v))
        })
    {
        problems.push(format!(
            "selector {:?} matches the pods of no DaemonSet in namespace {ns}",
            cmd.selector
        ));
    }
    if let Some(secret) = &cmd.secret
        && !in_ns.iter().any(|d| d.secrets.contains(secret))
    {
        problems.push(format!(
            "no DaemonSet in namespace {ns} mounts a Secret named {secret}"
        ));
    }
    problems
}
