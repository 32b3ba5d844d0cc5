//! Project tasks. `cargo xtask --help` lists them.
//!
//! xtask deliberately depends on nothing that builds eBPF: on a fresh machine
//! it must compile before `setup` has installed bpf-linker and rust-src.

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
    /// tests (root needed; under CI=true a skipped privileged test fails).
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run setup, then bring up the namespace lab (two nodes, two pods
    /// each, our overlay), show connectivity and counters, and tear it down
    /// on exit or Ctrl-C.
    Lab {
        /// Arguments for the lab (see `cargo xtask lab -- --help`).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run setup, then the side-by-side benchmark: underlay, plain routing,
    /// kernel VXLAN and our overlay in one run, printed as a table of medians
    /// and ratios.
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

/// Runs a binary of the tests crate (release build) with `args`.
fn run_harness_bin(bin: &str, args: &[String]) -> anyhow::Result<()> {
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

fn test(extra: &[String]) -> anyhow::Result<()> {
    // Host-side unit tests of the eBPF crate's pure code (header building).
    exec(cargo().args(["test", "-p", "overlay-ebpf", "--bins"]))?;
    // Everything else: unit tests, test_run tests, namespace tests. Two
    // threads: the namespace tests move real traffic and this machine has
    // two cores.
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--exclude", "overlay-ebpf", "--"])
        .args(["--test-threads", "2"])
        .args(extra);
    exec(&mut cmd)
}
