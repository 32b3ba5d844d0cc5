//! Project tasks. `cargo xtask --help` lists them.
//!
//! xtask deliberately depends on nothing that builds eBPF: on a fresh machine
//! it must compile before `setup` has installed bpf-linker and rust-src.

mod image;
mod setup;

use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

/// Tasks for building, testing, running and measuring the overlay.
#[derive(Parser)]
#[command(name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what this machine lacks (Debian packages, nightly rust-src,
    /// bpf-linker for LLVM 22). Idempotent and quick when all is present.
    Setup,
    /// Build the eBPF object (what overlay-agent's build.rs does) and print
    /// its path.
    BuildEbpf,
    /// Run setup, then every test: unit, BPF test_run, privileged namespace
    /// tests (root needed; under CI=true a skipped privileged test fails),
    /// and the deploy tests (manifests and the image, which this builds
    /// first as `image` does).
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run setup, then build the container image: static binaries and an
    /// OCI archive made FROM SCRATCH with buildah
    /// (target/image/overlay-agent-0.1.0.oci.tar).
    Image,
    /// Run setup, then bring up the namespace lab: four nodes whose
    /// `overlay-agent run` daemons, given only seed peers, form the cluster
    /// by gossip; two pods each created through the `overlay-cni` plugin as a
    /// CNI runtime calls it; show each node's status, connectivity and
    /// counters, and tear it down on exit or Ctrl-C.
    Lab {
        /// Arguments for the lab (see `cargo xtask lab -- --help`).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run setup, then the benchmarks: underlay, plain routing, kernel
    /// VXLAN and our overlay side by side in one run (medians and ratios),
    /// CNI ADD/DEL latency against the reference plugins, and the gossip
    /// simulations (1000-node convergence, partitions and heals).
    Bench {
        /// Arguments for the benchmark (see `cargo xtask bench -- --help`).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn exec(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a binary of the tests crate (release build) with `args`, after
/// building every binary of the workspace in release: the harness finds
/// `overlay-agent` and `overlay-cni` next to itself.
fn run_harness_bin(bin: &str, args: &[String]) -> anyhow::Result<()> {
    exec(cargo().args(["build", "--release", "--quiet", "--workspace", "--bins"]))?;
    exec(
        cargo()
            .args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "overlay-tests",
                "--bin",
                bin,
                "--",
            ])
            .args(args),
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::BuildEbpf => setup::run().and_then(|()| setup::build_ebpf().map(|_| ())),
        Task::Test { args } => setup::run().and_then(|()| test(&args)),
        Task::Image => setup::run().and_then(|()| image::build().map(|_| ())),
        Task::Lab { args } => setup::run().and_then(|()| run_harness_bin("overlay-lab", &args)),
        Task::Bench { args } => setup::run().and_then(|()| run_harness_bin("overlay-bench", &args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Counts of `cargo test`'s `test result:` lines.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    /// Adds one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result:") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cmd`, echoing its stdout and tallying its test results.
fn exec_tallied(cmd: &mut Command, tally: &mut Tally) -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader};
    eprintln!("xtask: running {cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        tally.add(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    let mut tally = Tally::default();
    // Host-side unit tests of the eBPF crate's pure code (header building).
    let host = exec_tallied(
        cargo().args(["test", "-p", "overlay-ebpf", "--bins"]),
        &mut tally,
    );
    // Everything else: unit tests, test_run tests, namespace tests. Two
    // threads: the namespace tests move real traffic and this machine has
    // two cores.
    // The CLI tests run the real `overlay-agent` binary, which `cargo test`
    // does not build for another package's tests; the deploy tests inspect
    // the image and validate the manifests with kubernetes-validate.
    let rest = host
        .and_then(|()| exec(cargo().args(["build", "--workspace", "--bins"])))
        .and_then(|()| image::build().map(|_| ()))
        .and_then(|()| {
            exec_tallied(
                cargo()
                    .args(["test", "--workspace", "--exclude", "overlay-ebpf", "--"])
                    .args(["--test-threads", "2"])
                    .args(extra)
                    .env("OVERLAY_KUBE_VALIDATE", setup::kubernetes_validate()),
                &mut tally,
            )
        })
        // The simulations (SWIM at 1,000 nodes, the chitchat partition
        // rounds at 200) take a minute or two optimised and far too long
        // unoptimised (the partition rounds took 12 minutes in debug), so
        // the debug run above skips them (ignored, with that reason) and
        // they run here in release, with the rest of their files. So does
        // the real agent among a swarm of 1,000 SWIM nodes run in the test
        // process (its release binaries built first: the test runs the
        // ones next to it).
        .and_then(|()| exec(cargo().args(["build", "--release", "-p", "overlay-agent", "--bins"])))
        .and_then(|()| {
            exec_tallied(
                cargo()
                    .args([
                        "test",
                        "--release",
                        "-p",
                        "overlay-tests",
                        "--test",
                        "swim_sim",
                        "--test",
                        "gossip_sim",
                        "--test",
                        "gossip_scale",
                    ])
                    .args(["--", "--include-ignored", "--test-threads", "1"])
                    .args(extra),
                &mut tally,
            )
        });
    // One closing line over every test binary.
    println!(
        "tests: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    rest
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn test_result_lines_are_summed() {
        let mut t = Tally::default();
        t.add("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        t.add("test result: FAILED. 5 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        t.add("running 3 tests");
        assert_eq!((t.passed, t.failed, t.ignored), (8, 2, 1));
    }
}
