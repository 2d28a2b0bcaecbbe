//! Build, setup, test, demo, lab and bench orchestration for gwtrace. No product logic here: the
//! lab scenarios live in tests/lab (the gwtrace-lab crate, shared with the test suite), the benchmarks in bench/.
mod bench;
mod dist;
mod setup;

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use gwtrace_lab as lab;

#[derive(Parser)]
#[command(name = "xtask", about = "gwtrace development tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install everything a fresh machine lacks (idempotent): toolchains, LLVM 22, bpf-linker,
    /// nginx, gunicorn, uvicorn, wrk, bpftrace, ...
    Setup,
    /// Set up, then run every check and test: fmt, clippy, unit, kernel capture, diagnosis lab.
    Test {
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
    },
    /// Set up, build, start a broken nginx + gunicorn stack and let gwtrace name the cause.
    Demo {
        /// Scenario to show (see `cargo xtask lab --list`).
        #[arg(long, default_value = "socket-permission")]
        scenario: String,
    },
    /// Run the scenario lab: every 502 cause on real nginx + gunicorn/uvicorn, scored against
    /// nginx's own error.log; writes lab-out/lab.json.
    Lab {
        /// Only scenarios whose name contains this.
        filter: Option<String>,
        /// List the scenarios.
        #[arg(long)]
        list: bool,
    },
    /// Overhead benchmarks against no tracing, bpftrace and strace (see bench/README.md).
    Bench {
        /// Rounds per configuration, interleaved round-robin (default 7; 3 with --quick).
        #[arg(long)]
        rounds: Option<usize>,
        /// Seconds of the failure storm per configuration (default 60; 10 with --quick).
        #[arg(long, value_name = "SECS")]
        storm_secs: Option<u64>,
        /// Development run: 3 rounds, 2 s workloads, 10 s storm.
        #[arg(long)]
        quick: bool,
        /// Only workloads whose name contains this (tcp-loop, unix-loop, nginx-tcp, nginx-unix,
        /// null-syscall, storm, host-size).
        filter: Option<String>,
    },
    /// Soak of the whole pipeline (see bench/README.md): nginx under steady traffic, `gwtrace
    /// serve` in its default mode (verdicts, metrics, rotating record), an incident a minute;
    /// agent RSS/CPU, loss, time to verdict, flapping; writes bench/results/soak-DATE.json.
    Soak {
        /// How long to run (one incident a minute, the first 20 s in).
        #[arg(long, value_name = "N", default_value_t = 600)]
        secs: u64,
    },
    /// Release artifacts: `dist/gwtrace-VERSION-ARCH-linux.tar.gz` and `dist/gwtrace_VERSION_ARCH.deb`
    /// (binary, systemd unit, man pages, completions), for machines without a Rust toolchain.
    Dist {
        /// Package this gwtrace binary instead of building the release one.
        #[arg(long, value_name = "FILE")]
        binary: Option<PathBuf>,
        /// Write the artifacts here (default: dist/ at the workspace root).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// A benchmark workload process (started by `cargo xtask bench`, so strace can attach to it).
    #[command(hide = true)]
    BenchWorker(bench::worker::WorkerArgs),
    /// Idle processes for the host-size workload (started by `cargo xtask bench`).
    #[command(hide = true)]
    BenchIdle {
        #[arg(long)]
        count: usize,
    },
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// Runs a command, failing with its name when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// Builds the release `gwtrace` binary and returns its path.
pub fn build_gwtrace() -> anyhow::Result<PathBuf> {
    run(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "probe-user",
        "--bin",
        "gwtrace",
    ]))?;
    Ok(root().join("target/release/gwtrace"))
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Test { no_lint } => {
            setup::setup()?;
            let cargo = |args: &[&str]| run(Command::new("cargo").current_dir(root()).args(args));
            if !no_lint {
                cargo(&["fmt", "--all", "--", "--check"])?;
                cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
            }
            // Unit tests, then root tests against the real kernel and real nginx/gunicorn: those
            // are `#[ignore = "needs root: ..."]` so a plain `cargo test` lists them as ignored;
            // here they run, and fail loudly without root. Tests that share kernel-wide state
            // (the lab's nginx, cgroups) serialise themselves.
            cargo(&[
                "test",
                "--no-fail-fast",
                "--",
                "--include-ignored",
                "--test-threads=2",
            ])?;
            println!("xtask: all tests passed");
            Ok(())
        }
        Cmd::Demo { scenario } => {
            setup::setup()?;
            let bin = build_gwtrace()?;
            lab::demo(&bin, &scenario)
        }
        Cmd::Lab { filter, list } => {
            if list {
                for s in lab::scenarios() {
                    println!(
                        "{:<28} expect {:<24} {}",
                        s.name,
                        s.expect.unwrap_or("(no verdict)"),
                        s.about
                    );
                }
                return Ok(());
            }
            setup::setup()?;
            let bin = build_gwtrace()?;
            let out = root().join("lab-out");
            let results = lab::run_all(&bin, filter.as_deref(), &out)?;
            if results.iter().any(|r| !r.ok) {
                bail!(
                    "lab: {} of {} scenarios failed",
                    results.iter().filter(|r| !r.ok).count(),
                    results.len()
                );
            }
            Ok(())
        }
        Cmd::Bench {
            rounds,
            storm_secs,
            quick,
            filter,
        } => {
            setup::setup()?;
            let bin = build_gwtrace()?;
            let opts = bench::Opts::new(quick, rounds, storm_secs, filter);
            bench::bench(&bin, &opts)
        }
        Cmd::Soak { secs } => {
            setup::setup()?;
            let bin = build_gwtrace()?;
            bench::soak::soak(&bin, bench::soak::Opts { secs })
        }
        Cmd::Dist { binary, out_dir } => dist::dist(&dist::Opts { binary, out_dir }),
        Cmd::BenchWorker(args) => bench::worker::run(&args),
        Cmd::BenchIdle { count } => bench::idle_pool(count),
    }
}
