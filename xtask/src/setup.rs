//! `cargo xtask setup`: installs what a fresh machine lacks, idempotently, saying what it does.
use std::process::Command;

use anyhow::Context as _;

use crate::{root, run};

/// Debian packages the build, the tests, the lab and the benchmarks need.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "nginx-light",
    "gunicorn",
    "python3-uvicorn",
    // uwsgi for the lab's harakiri scenario: Debian's core binary and its python3 plugin
    // (`uwsgi --plugin python3`), no compiler needed.
    "uwsgi-core",
    "uwsgi-plugin-python3",
    "wrk",
    "bpftrace",
    "bpftool",
    "strace",
    "iproute2",
    // Firewall rules in the lab's network namespaces (firewall-reject, netfilter drops).
    "nftables",
    // util-linux's script(1) gives tests/cli.rs a pseudo-terminal (colour under --color auto).
    "util-linux",
    // tests/terminal.rs runs gwtrace's live view in a real terminal (tmux capture-pane).
    "tmux",
    "procps",
    "curl",
    // Scrapes `gwtrace serve` in the metrics test (and promtool lints the exposition).
    "prometheus",
    // The tested collector example (docs/collectors.md) tails the event file with it.
    "rsyslog",
    "time",
    // The packaging tests: `systemd-analyze verify` of the unit, PyYAML for the DaemonSet;
    // `cargo xtask dist` (dpkg-deb, dpkg-shlibdeps, strip) and the package test (man for the
    // unit's Documentation=); python3-venv holds kubernetes-validate.
    "systemd",
    "python3-yaml",
    "dpkg-dev",
    "binutils",
    "man-db",
    "python3-venv",
];
/// `kubernetes-validate` (from `PyPI`), pinned: it bundles the Kubernetes API schemas the `DaemonSet` test
/// validates against offline. A venv of its own (Debian's python refuses system-wide pip).
pub const KUBERNETES_VALIDATE: &str = "1.37.0";
/// Where setup installs it (the test looks here, then on PATH).
pub const KUBERNETES_VALIDATE_VENV: &str = "/usr/local/lib/gwtrace-dev/kubernetes-validate";
/// bpf-linker, pinned: 0.13 against Debian's LLVM 22 (its default wants LLVM 23).
const BPF_LINKER_VERSION: &str = "0.13.0";

fn have_package(p: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", p])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn step(msg: &str) {
    println!("setup: {msg}");
}

/// Runs every setup step.
pub fn setup() -> anyhow::Result<()> {
    // Toolchains: RUSTUP_AUTO_INSTALL=0 on these machines, so install what the files pin.
    for dir in [root(), root().join("probe-ebpf")] {
        let out = Command::new("rustup")
            .arg("toolchain")
            .arg("install")
            .current_dir(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => {
                step(&format!("rust toolchain for {} present", dir.display()));
            }
            Ok(o) => anyhow::bail!(
                "rustup toolchain install in {} failed: {}",
                dir.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => anyhow::bail!("rustup not found ({e}): install rustup first"),
        }
    }
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !have_package(p))
        .collect();
    if missing.is_empty() {
        step("Debian packages present");
    } else {
        step(&format!("installing {}", missing.join(" ")));
        // Packages like nginx start a service on install: a host-wide nginx would be one more
        // proxy for gwtrace to watch and would hold port 80. policy-rc.d keeps them stopped.
        let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
        let had_policy = policy.exists();
        if !had_policy {
            std::fs::write(policy, "#!/bin/sh\nexit 101\n")
                .context("writing /usr/sbin/policy-rc.d")?;
            run(Command::new("chmod").args(["755", "/usr/sbin/policy-rc.d"]))?;
        }
        let result = run(Command::new("apt-get").args(["update", "-qq"])).and_then(|()| {
            run(Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing))
        });
        if !had_policy {
            let _ = std::fs::remove_file(policy);
        }
        result?;
    }
    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION));
    if linker_ok {
        step(&format!("bpf-linker {BPF_LINKER_VERSION} present"));
    } else {
        step(&format!(
            "building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes)"
        ));
        run(Command::new("cargo")
            .current_dir(root())
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"]))?;
    }
    kubernetes_validate()?;
    // The lab runs the app as its own user, like a real deployment.
    if Command::new("id")
        .arg("gwapp")
        .output()
        .is_ok_and(|o| !o.status.success())
    {
        step("creating system user gwapp (the lab's app user)");
        run(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "gwapp",
        ]))?;
    }
    step("done");
    Ok(())
}

/// kubernetes-validate in its venv, linked into /usr/local/bin.
fn kubernetes_validate() -> anyhow::Result<()> {
    let venv = std::path::Path::new(KUBERNETES_VALIDATE_VENV);
    let tool = venv.join("bin/kubernetes-validate");
    let present = Command::new(&tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(KUBERNETES_VALIDATE));
    if present {
        step(&format!(
            "kubernetes-validate {KUBERNETES_VALIDATE} present"
        ));
        return Ok(());
    }
    step(&format!(
        "installing kubernetes-validate {KUBERNETES_VALIDATE} into {KUBERNETES_VALIDATE_VENV}"
    ));
    run(Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(venv))?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("kubernetes-validate=={KUBERNETES_VALIDATE}")))?;
    let link = std::path::Path::new("/usr/local/bin/kubernetes-validate");
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&tool, link).context("linking /usr/local/bin/kubernetes-validate")
}
