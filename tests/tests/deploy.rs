//! The Kubernetes manifests under `deploy/` and the image they run: valid
//! for the API server (strict schemas of Kubernetes 1.29 and of the newest
//! release kubernetes-validate knows), every variable they set understood
//! by the command of its container and every knob of `overlay-agent run`
//! settable, and the image (`cargo xtask image`) holding static binaries
//! under the entrypoint the manifests rely on.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use overlay_tests::{
    cluster::bin_path,
    cni_clients::ScratchDir,
    deploy::{
        ContainerSpec, IMAGE_REF, commented_env, cri_image_name, daemonset_containers,
        elf_has_interpreter, help_env, image_archive, kubernetes_validate, manifest_path,
        output_ok, require, tool_missing, venv_missing, venv_python, yaml_documents,
    },
    netns::unique_tag,
    require_privileges,
};
use serde_json::Value;

const MANIFESTS: &[&str] = &["overlay.yaml", "overlay-uninstall.yaml"];

/// Knobs of `overlay-agent run` the manifest deliberately does not set,
/// and why.
const NOT_IN_MANIFEST: &[(&str, &str)] = &[
    (
        "OVERLAY_PASSWORD",
        "the password comes from the Secret as a file (OVERLAY_PASSWORD_FILE), which conflicts \
         with it; a literal value would put the secret into the manifest",
    ),
    (
        "OVERLAY_TOPOLOGY",
        "a static topology file is for tests and hand-assigned blocks, and conflicts with \
         OVERLAY_PEERS",
    ),
];

/// Knobs the manifest sets to something other than `run`'s default, and
/// why. (Empty: the manifest shows the defaults.)
const NOT_DEFAULT: &[(&str, &str)] = &[];

fn all_containers() -> Vec<ContainerSpec> {
    MANIFESTS
        .iter()
        .flat_map(|m| daemonset_containers(&yaml_documents(&manifest_path(m))))
        .collect()
}

fn agent_container() -> ContainerSpec {
    all_containers()
        .into_iter()
        .find(|c| c.subcommand() == "run")
        .expect("a container runs `overlay-agent run`")
}

fn validate(files: &[PathBuf], versions: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(kubernetes_validate());
    cmd.arg("--strict");
    for v in versions {
        cmd.args(["-k", v]);
    }
    cmd.args(files)
        .stdin(Stdio::null())
        .output()
        .expect("running kubernetes-validate")
}

/// The newest Kubernetes version whose schemas the installed
/// kubernetes-validate ships.
fn newest_schema_version() -> String {
    let script = "import kubernetes_validate.utils as u; print(u.latest_version())";
    let v = output_ok(Command::new(venv_python()).args(["-c", script]));
    let v = v.trim().to_owned();
    let minor: u32 = v
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("unexpected newest schema version {v:?}"));
    assert!(
        v.starts_with("1.") && minor > 29,
        "newest schema version {v:?} is not newer than 1.29"
    );
    v
}

#[test]
fn the_manifests_pass_strict_validation_for_kubernetes_1_29_and_the_newest_schemas() {
    let test = "the_manifests_pass_strict_validation_for_kubernetes_1_29_and_the_newest_schemas";
    if !require(test, venv_missing()) {
        return;
    }
    let newest = newest_schema_version();
    let files: Vec<PathBuf> = MANIFESTS.iter().map(|m| manifest_path(m)).collect();
    let out = validate(&files, &["1.29.0", &newest]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate --strict failed:\n{text}"
    );
    let major_minor = newest
        .rsplit_once('.')
        .map_or(newest.as_str(), |(mm, _)| mm);
    for resource in [
        "serviceaccount/overlay",
        "clusterrole/overlay",
        "clusterrolebinding/overlay",
        "daemonset/overlay-agent",
        "daemonset/overlay-uninstall",
    ] {
        for version in ["1.29", major_minor] {
            assert!(
                text.contains(&format!(
                    "passed for resource {resource} against version {version}"
                )),
                "{resource} was not validated against {version}:\n{text}"
            );
        }
    }
    assert!(!text.contains("WARN"), "warnings:\n{text}");
}

#[test]
fn strict_validation_rejects_an_unknown_field() {
    if !require("strict_validation_rejects_an_unknown_field", venv_missing()) {
        return;
    }
    let dir = ScratchDir::new("deploy", &unique_tag());
    let original = std::fs::read_to_string(manifest_path("overlay.yaml")).expect("manifest");
    let broken = original.replacen(
        "      hostNetwork: true\n",
        "      hostNetwork: true\n      hostNetwrok: true\n",
        1,
    );
    assert_ne!(broken, original, "the edit must apply");
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, broken).expect("writing the broken copy");
    let out = validate(&[path], &["1.29.0"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "an unknown field passed:\n{text}");
    assert!(
        text.contains("hostNetwrok"),
        "the error does not name the field:\n{text}"
    );
}

#[test]
fn every_variable_a_container_sets_is_one_its_command_reads() {
    if !require(
        "every_variable_a_container_sets_is_one_its_command_reads",
        venv_missing(),
    ) {
        return;
    }
    let containers = all_containers();
    assert!(containers.len() >= 3, "{containers:?}");
    for c in &containers {
        let what = format!("{} container {}", c.workload, c.name);
        assert_eq!(c.image, IMAGE_REF, "{what}");
        assert_eq!(c.command, None, "{what} must use the image's entrypoint");
        let reads = help_env(c.subcommand());
        assert!(
            !reads.is_empty(),
            "{what}: `{}` reads no variable",
            c.subcommand()
        );
        for name in &c.env_names {
            assert!(
                reads.contains_key(name),
                "{what} sets {name}, which `overlay-agent {}` does not read (it reads {:?})",
                c.subcommand(),
                reads.keys().collect::<Vec<_>>()
            );
        }
        let unique: BTreeSet<&String> = c.env_names.iter().collect();
        assert_eq!(
            unique.len(),
            c.env_names.len(),
            "{what} sets a variable twice"
        );
    }
    let text = std::fs::read_to_string(manifest_path("overlay.yaml")).expect("manifest");
    let run = help_env("run");
    for name in commented_env(&text) {
        assert!(
            run.contains_key(&name),
            "commented-out {name} is not a knob of run"
        );
    }
    let subcommands: BTreeSet<&str> = containers.iter().map(ContainerSpec::subcommand).collect();
    assert_eq!(
        subcommands,
        BTreeSet::from(["install-cni", "mount-bpffs", "run", "uninstall"])
    );
}

#[test]
fn every_knob_of_run_is_settable_in_the_manifest_with_its_default() {
    if !require(
        "every_knob_of_run_is_settable_in_the_manifest_with_its_default",
        venv_missing(),
    ) {
        return;
    }
    let agent = agent_container();
    let text = std::fs::read_to_string(manifest_path("overlay.yaml")).expect("manifest");
    let commented: BTreeSet<String> = commented_env(&text).into_iter().collect();
    let excluded: BTreeMap<&str, &str> = NOT_IN_MANIFEST.iter().copied().collect();
    let not_default: BTreeMap<&str, &str> = NOT_DEFAULT.iter().copied().collect();
    let run = help_env("run");
    for (name, why) in NOT_IN_MANIFEST.iter().chain(NOT_DEFAULT) {
        assert!(
            run.contains_key(*name),
            "{name} ({why}) is not a knob of run any more"
        );
    }
    for (name, opt) in run {
        if let Some(why) = excluded.get(name.as_str()) {
            assert!(
                !agent.env.contains_key(&name),
                "{name} is excluded ({why}) yet set"
            );
            continue;
        }
        if commented.contains(&name) {
            // Shown commented out: only knobs with no default, whose
            // absence means "derive it" and which no value can leave unset.
            assert_eq!(
                opt.default, None,
                "{name} has a default: set it in the manifest instead of a comment"
            );
            assert!(
                !agent.env.contains_key(&name),
                "{name} is set and commented"
            );
            continue;
        }
        let Some(value) = agent.env.get(&name) else {
            panic!(
                "`overlay-agent run` reads {name} but deploy/overlay.yaml neither sets it nor \
                 shows it commented out, nor excludes it with a reason in this test"
            );
        };
        match (value, &opt.default) {
            (Some(v), Some(d)) if !not_default.contains_key(name.as_str()) => assert_eq!(
                v, d,
                "{name} is {v:?} in the manifest but {d:?} by default; list it in NOT_DEFAULT \
                 with a reason if that is meant"
            ),
            _ => {}
        }
    }
    for name in ["OVERLAY_NODE_NAME", "OVERLAY_NODE_IP"] {
        assert_eq!(
            agent.env.get(name),
            Some(&None),
            "{name} comes from the downward API"
        );
    }
}

/// The agent container's environment with the downward API's values
/// filled in as kubelet would, and the node-local paths moved to `dir`.
fn agent_env_for_test(dir: &Path) -> Vec<(String, String)> {
    let agent = agent_container();
    agent
        .env
        .iter()
        .map(|(k, v)| {
            let v = match (k.as_str(), v) {
                ("OVERLAY_NODE_NAME", _) => "node-a".to_owned(),
                ("OVERLAY_NODE_IP", _) => "192.0.2.10".to_owned(),
                ("OVERLAY_PIN_DIR", _) => dir.join("pins").display().to_string(),
                ("OVERLAY_STATE_DIR", _) => dir.join("state").display().to_string(),
                ("OVERLAY_SOCKET", _) => dir.join("agent.sock").display().to_string(),
                ("OVERLAY_CNI_CONF_DIR", _) => dir.join("net.d").display().to_string(),
                ("OVERLAY_CNI_BIN_DIR", _) => dir.join("bin").display().to_string(),
                (_, Some(v)) => v.clone(),
                (_, None) => panic!("{k} has a valueFrom this test does not know"),
            };
            (k.clone(), v)
        })
        .collect()
}

#[test]
fn the_values_the_manifest_sets_parse_as_the_commands_read_them() {
    if !require(
        "the_values_the_manifest_sets_parse_as_the_commands_read_them",
        venv_missing(),
    ) {
        return;
    }
    let dir = ScratchDir::new("deploy", &unique_tag());
    // `run` with the manifest's environment and a log filter that does not
    // parse: clap accepting every variable and then the agent refusing the
    // filter (exit 1, before it touches anything) proves the values parse;
    // a bad value would be a usage error (exit 64).
    let out = Command::new(bin_path("overlay-agent"))
        .args(["run", "--log-level", "[bad"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(agent_env_for_test(dir.path()))
        .stdin(Stdio::null())
        .output()
        .expect("running overlay-agent run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "overlay-agent run with the manifest's environment: {stderr}"
    );
    assert!(stderr.contains("--log-level"), "{stderr}");

    // `install-cni` with the manifest's environment, into a scratch
    // directory: the plugin and, as this directory has none, the reference
    // plugins from the directory the manifest names (Debian's path, which
    // the image also uses); no conflist (the agent writes it when ready).
    let init = all_containers()
        .into_iter()
        .find(|c| c.subcommand() == "install-cni")
        .expect("an init container runs install-cni");
    let bin = dir.subdir("bin");
    let mut cmd = Command::new(bin_path("overlay-agent"));
    cmd.args(&init.args).env_clear();
    for (k, v) in &init.env {
        cmd.env(k, v.as_deref().expect("literal values only"));
    }
    output_ok(
        cmd.env("OVERLAY_CNI_BIN_DIR", &bin)
            .env("OVERLAY_CNI_PLUGIN", bin_path("overlay-cni")),
    );
    let mut installed: Vec<String> = std::fs::read_dir(&bin)
        .expect("bin dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    installed.sort();
    assert_eq!(installed, ["loopback", "overlay-cni", "portmap"]);
    assert!(
        !init.env.contains_key("OVERLAY_CNI_CONF_DIR"),
        "install-cni writes no conflist any more"
    );
    // The agent's conflist settings: its socket is where the plugin on the
    // host finds the agent.
    let agent = agent_container();
    assert_eq!(
        agent.env["OVERLAY_CNI_CONF_DIR"].as_deref(),
        Some("/etc/cni/net.d")
    );
    let conf = overlay_agent::install::conflist(
        &overlay_agent::install::ConflistOptions {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dir: "/opt/cni/bin".into(),
            socket: agent.env["OVERLAY_SOCKET"]
                .clone()
                .expect("literal socket")
                .into(),
            cni_version: agent.env["OVERLAY_CNI_VERSION"]
                .as_deref()
                .expect("literal version")
                .parse()
                .expect("a version the plugin speaks"),
            portmap: overlay_agent::install::Portmap::Auto,
        },
        true,
    );
    let conflist: Value = serde_json::from_str(&conf).expect("conflist is JSON");
    assert_eq!(
        conflist["plugins"][0]["agentSocket"],
        "/run/overlay/agent.sock"
    );
}

/// Skips (or under CI fails) unless the image and the tools to open it are
/// there.
fn require_image(test: &str) -> bool {
    let missing = tool_missing("skopeo")
        .or_else(|| tool_missing("umoci"))
        .or_else(|| {
            (!image_archive().is_file()).then(|| {
                format!(
                    "{} is not built (run `cargo xtask image`)",
                    image_archive().display()
                )
            })
        });
    require(test, missing)
}

#[test]
fn the_image_runs_what_the_manifests_expect() {
    let test = "the_image_runs_what_the_manifests_expect";
    if !require_image(test) || !require(test, venv_missing()) {
        return;
    }
    let archive = format!("oci-archive:{}", image_archive().display());
    let config: Value = serde_json::from_str(&output_ok(
        Command::new("skopeo").args(["inspect", "--config", &archive]),
    ))
    .expect("image config is JSON");
    let c = &config["config"];
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/overlay-agent"])
    );
    assert_eq!(c["Cmd"], serde_json::json!(["run"]));
    for label in ["title", "version", "licenses"] {
        assert!(
            c["Labels"][format!("org.opencontainers.image.{label}")].is_string(),
            "label {label} missing: {c}"
        );
    }
    assert_eq!(c["Labels"]["org.opencontainers.image.version"], "0.1.0");
    // The archive names the image as the manifests do.
    let index: Value = serde_json::from_str(&output_ok(
        Command::new("tar")
            .arg("-xOf")
            .arg(image_archive())
            .arg("index.json"),
    ))
    .expect("index.json");
    // ... as the kubelet resolves them (`ctr images import` keeps a full
    // name as it is).
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        cri_image_name(IMAGE_REF),
        "{index}"
    );
    // Every container leaves the entrypoint alone and runs a subcommand.
    for container in all_containers() {
        assert_eq!(container.image, IMAGE_REF);
        assert_eq!(container.command, None);
        assert!(!container.subcommand().is_empty(), "{container:?}");
    }
}

#[test]
fn the_image_holds_static_binaries_that_run_in_an_empty_root_nft_and_the_reference_plugins() {
    let test =
        "the_image_holds_static_binaries_that_run_in_an_empty_root_nft_and_the_reference_plugins";
    if !require_image(test) || !require_privileges(test) {
        return;
    }
    let dir = ScratchDir::new("image", &unique_tag());
    let layout = dir.path().join("layout");
    let bundle = dir.path().join("bundle");
    output_ok(
        Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("oci-archive:{}", image_archive().display()))
            .arg(format!("oci:{}:{IMAGE_REF}", layout.display())),
    );
    output_ok(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{IMAGE_REF}", layout.display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    for bin in ["overlay-agent", "overlay-cni"] {
        let path = rootfs.join("usr/local/bin").join(bin);
        assert!(path.is_file(), "{} is not in the image", path.display());
        assert!(
            !elf_has_interpreter(&path),
            "{bin} in the image is dynamically linked (PT_INTERP)"
        );
        // Alone in an otherwise empty root: no loader, no libraries.
        let empty = dir.path().join(format!("empty-{bin}"));
        std::fs::create_dir_all(&empty).expect("empty root");
        std::fs::copy(&path, empty.join(bin)).expect("copying the binary");
        let out = match bin {
            "overlay-agent" => output_ok(
                Command::new("chroot")
                    .arg(&empty)
                    .args(["/overlay-agent", "--version"])
                    .env_clear()
                    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            ),
            _ => output_ok(
                Command::new("chroot")
                    .arg(&empty)
                    .arg("/overlay-cni")
                    .env_clear()
                    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                    .env("CNI_COMMAND", "VERSION"),
            ),
        };
        match bin {
            "overlay-agent" => assert_eq!(out.trim(), "overlay-agent 0.1.0"),
            _ => assert!(out.contains("supportedVersions"), "{out}"),
        }
    }
    // The agent's masquerade runs `nft -f -`: the image's nft (with its
    // libraries) applies the agent's ruleset, in a namespace of its own.
    let ruleset = overlay_agent::masquerade::ruleset("10.32.0.0/12".parse().expect("range"));
    // No shell in the image: the host's runs nft inside the image's root,
    // in a network namespace of its own.
    let script = format!(
        "chroot {root} /usr/sbin/nft -f - <<'EOF'\n{ruleset}EOF\nchroot {root} /usr/sbin/nft list table ip overlay",
        root = rootfs.display()
    );
    let listed = output_ok(Command::new("unshare").args(["--net", "sh", "-c", &script]));
    assert!(
        listed.contains("masquerade") && listed.contains("10.32.0.0/12"),
        "{listed}"
    );
    // What install-cni copies to hosts that lack them: the reference
    // plugins, where the manifest's OVERLAY_CNI_REFERENCE_DIR says, running
    // inside the image's root (their libraries are there).
    let init = all_containers()
        .into_iter()
        .find(|c| c.subcommand() == "install-cni")
        .expect("an init container runs install-cni");
    let reference_dir = init.env["OVERLAY_CNI_REFERENCE_DIR"]
        .clone()
        .expect("literal reference dir");
    for plugin in overlay_agent::install::REFERENCE_PLUGINS {
        let inside = format!("{reference_dir}/{plugin}");
        assert!(
            rootfs.join(inside.trim_start_matches('/')).is_file(),
            "{inside} is not in the image"
        );
        let out = output_ok(
            Command::new("chroot")
                .arg(&rootfs)
                .arg(&inside)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("CNI_COMMAND", "VERSION"),
        );
        assert!(out.contains("supportedVersions"), "{plugin}: {out}");
    }
}

/// Loads the archive as the README says (`ctr -n k8s.io images import`)
/// into a containerd of the test's own and checks that the image is there
/// under the name the kubelet asks the CRI for when the manifest says
/// `image: overlay-agent:0.1.0`.
#[test]
fn the_image_archive_imports_into_containerd_under_the_name_the_kubelet_resolves() {
    let test = "the_image_archive_imports_into_containerd_under_the_name_the_kubelet_resolves";
    if !require_image(test) || !require_privileges(test) {
        return;
    }
    let ctrd = overlay_tests::cni_clients::Containerd::start(&unique_tag());
    let ctr = |args: &[&str]| {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(ctrd.address())
            .args(["--namespace", "k8s.io"])
            .args(args);
        output_ok(&mut cmd)
    };
    let readme = std::fs::read_to_string(manifest_path("../README.md")).expect("README");
    let import = "ctr -n k8s.io images import target/image/overlay-agent-0.1.0.oci.tar";
    assert!(
        readme.contains(import),
        "the README no longer says `{import}`"
    );
    ctr(&["images", "import", &image_archive().display().to_string()]);
    let names: BTreeSet<String> = ctr(&["images", "ls", "-q"])
        .lines()
        .map(str::to_owned)
        .collect();
    let images: BTreeSet<String> = all_containers().into_iter().map(|c| c.image).collect();
    for image in images {
        let wanted = cri_image_name(&image);
        assert!(
            names.contains(&wanted),
            "`image: {image}` resolves to {wanted}, but the import made only {names:?}"
        );
    }
    println!("imported as {names:?}");
}

/// Every `kubectl` command the README and the manifests' comments show
/// refers to what the manifests make: its `-n` namespace, `-l` selector
/// (matching the pods of a DaemonSet there), `ds/NAME`, Secret name and
/// `-f` file.
#[test]
fn every_kubectl_command_the_docs_show_matches_the_manifests() {
    if !require(
        "every_kubectl_command_the_docs_show_matches_the_manifests",
        venv_missing(),
    ) {
        return;
    }
    let root = overlay_tests::deploy::workspace_root();
    let sets: Vec<_> = MANIFESTS
        .iter()
        .flat_map(|m| overlay_tests::deploy::daemonsets(&yaml_documents(&manifest_path(m))))
        .collect();
    assert_eq!(sets.len(), 2, "{sets:?}");
    let mut docs = vec![("README.md".to_owned(), root.join("README.md"))];
    docs.extend(
        MANIFESTS
            .iter()
            .map(|m| (format!("deploy/{m}"), manifest_path(m))),
    );
    let mut checked = 0;
    let mut selectors = 0;
    let mut problems = Vec::new();
    for (name, path) in docs {
        let text = std::fs::read_to_string(&path).expect("document");
        for cmd in overlay_tests::deploy::kubectl_commands(&text) {
            checked += 1;
            selectors += usize::from(!cmd.selector.is_empty());
            for p in overlay_tests::deploy::kubectl_problems(&cmd, &sets) {
                problems.push(format!("{name}: `{}`: {p}", cmd.text));
            }
            for f in &cmd.files {
                if !root.join(f).is_file() {
                    problems.push(format!("{name}: `{}`: no file {f}", cmd.text));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The README's troubleshooting and removal sections, the manifests'
    // headers: a parser that found nothing would pass vacuously.
    assert!(
        checked >= 10 && selectors >= 2,
        "only {checked} commands ({selectors} with a selector) found"
    );
    println!("{checked} kubectl commands checked, {selectors} with a selector");
}
