//! `cargo xtask dist`: release artifacts for machines without a Rust toolchain. One tarball
//! (the binary, the systemd unit, man pages, shell completions, the README) and one Debian
//! package built with `dpkg-deb` that installs the same files where Debian keeps them, with the
//! unit installed but never enabled or started.
//!
//! Man pages and completions come from the binary itself (`gwtrace man`, `gwtrace completions`),
//! so they always describe the flags of the binary they ship with; so does the version.
use std::{
    fmt::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{root, run};

/// What to package and where to put it.
pub struct Opts {
    /// An already built `gwtrace` to package instead of building the release binary.
    pub binary: Option<PathBuf>,
    /// Where the artifacts go (default `dist/` at the workspace root).
    pub out_dir: Option<PathBuf>,
}

/// The shells whose completions ship, with the file name each one looks for and where the
/// Debian package puts it (bash-completion, zsh and fish vendor directories).
const COMPLETIONS: &[(&str, &str, &str)] = &[
    (
        "bash",
        "gwtrace.bash",
        "usr/share/bash-completion/completions/gwtrace",
    ),
    (
        "zsh",
        "_gwtrace",
        "usr/share/zsh/vendor-completions/_gwtrace",
    ),
    (
        "fish",
        "gwtrace.fish",
        "usr/share/fish/vendor_completions.d/gwtrace.fish",
    ),
];

/// Where the Debian package installs the unit (Debian 12 and Ubuntu keep packaged units here;
/// administrators override them in /etc/systemd/system).
pub const DEB_UNIT: &str = "lib/systemd/system/gwtrace.service";

/// The Rust architecture name and the Debian one for the machine building the artifacts.
fn arch() -> anyhow::Result<(&'static str, &'static str)> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(("x86_64", "amd64")),
        "aarch64" => Ok(("aarch64", "arm64")),
        other => bail!("no Debian architecture name known for {other}"),
    }
}

/// The version `gwtrace --version` prints (`gwtrace 0.1.0`), checked to be a valid Debian
/// upstream version.
fn version_of(output: &str) -> anyhow::Result<String> {
    let v = output
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("unexpected --version output {output:?}"))?;
    let valid = v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-'));
    if !valid {
        bail!("version {v:?} is not a valid Debian package version");
    }
    Ok(v.to_owned())
}

/// The package's control file.
fn control(version: &str, deb_arch: &str, depends: &str, installed_kib: u64) -> String {
    let name = std::env::var("DEBFULLNAME").unwrap_or_else(|_| "gwtrace developers".to_owned());
    let email = std::env::var("DEBEMAIL").unwrap_or_else(|_| "gwtrace@localhost".to_owned());
    let mut c = String::new();
    let _ = writeln!(c, "Package: gwtrace");
    let _ = writeln!(c, "Version: {version}");
    let _ = writeln!(c, "Architecture: {deb_arch}");
    let _ = writeln!(c, "Maintainer: {name} <{email}>");
    let _ = writeln!(c, "Installed-Size: {installed_kib}");
    if !depends.is_empty() {
        let _ = writeln!(c, "Depends: {depends}");
    }
    let _ = writeln!(c, "Section: admin");
    let _ = writeln!(c, "Priority: optional");
    c.push_str(
        "Description: why does my reverse proxy answer 502? (eBPF)\n \
         gwtrace asks the kernel why nginx and other reverse proxies answer 502 Bad\n \
         Gateway: eBPF programs on tracepoints record the proxy's failed upstream\n \
         connects (errno, target address or unix socket path) and the upstream workers'\n \
         deaths (signals, exit codes, OOM kills); a correlation engine names the root\n \
         cause with its evidence and the fix.\n \
         .\n \
         The package ships the gwtrace binary, a systemd unit for `gwtrace serve`\n \
         (installed disabled: systemctl enable --now gwtrace), man pages and bash, zsh\n \
         and fish completions. It needs a kernel with BTF (/sys/kernel/btf/vmlinux) and\n \
         tracefs.\n",
    );
    c
}

/// Maintainer scripts: reload systemd when it runs, so it sees the unit appear or go, and never
/// enable or start the unit: tracing every process on the host is the administrator's choice.
const POSTINST: &str = "#!/bin/sh
# gwtrace.service is installed disabled: enable it with `systemctl enable --now gwtrace`.
set -e
if [ \"$1\" = configure ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
exit 0
";

/// The binary goes away with the package: stop a daemon the administrator started.
const PRERM: &str = "#!/bin/sh
set -e
if [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop gwtrace.service >/dev/null 2>&1 || true
fi
exit 0
";

/// On purge, what `systemctl enable` made and what the daemon wrote (its `LogsDirectory=`).
const POSTRM: &str = "#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
if [ \"$1\" = purge ]; then
    rm -f /etc/systemd/system/multi-user.target.wants/gwtrace.service
    rm -rf /var/log/gwtrace
fi
exit 0
";

/// Writes `contents` to `path` with `mode`, creating the parents.
fn put(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Every regular file under `dir` (relative paths, sorted), and every directory set to 0755
/// on the way (whatever the umask made of them).
fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(base, &path, out)?;
            } else {
                out.push(path.strip_prefix(base)?.to_path_buf());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Runs a command and returns its stdout, failing with its stderr.
fn output(cmd: &mut Command) -> anyhow::Result<Vec<u8>> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// `gzip -9n` of a file's contents (Debian policy: man pages and larger docs compressed,
/// without a timestamp, so the package builds the same twice).
fn gzip(path: &Path) -> anyhow::Result<Vec<u8>> {
    output(Command::new("gzip").args(["-9n", "--stdout"]).arg(path))
}

/// The generated pages and completions, written by the binary into `dir`.
struct Generated {
    /// Man pages (`gwtrace.1`, `gwtrace-serve.1`, ...).
    man: Vec<PathBuf>,
    /// One script per shell of [`COMPLETIONS`], in that order.
    completions: Vec<PathBuf>,
}

fn generate(bin: &Path, dir: &Path) -> anyhow::Result<Generated> {
    let man_dir = dir.join("man1");
    run(Command::new(bin).arg("man").arg("--out-dir").arg(&man_dir))?;
    let man: Vec<PathBuf> = files_under(&man_dir)?
        .into_iter()
        .map(|p| man_dir.join(p))
        .collect();
    if !man.iter().any(|p| p.ends_with("gwtrace.1")) {
        bail!(
            "`gwtrace man` wrote no gwtrace.1 into {}",
            man_dir.display()
        );
    }
    let mut completions = Vec::new();
    for (shell, file, _) in COMPLETIONS {
        let script = output(Command::new(bin).args(["completions", shell]))?;
        if script.is_empty() {
            bail!("`gwtrace completions {shell}` printed nothing");
        }
        let path = dir.join("completions").join(file);
        put(&path, &script, 0o644)?;
        completions.push(path);
    }
    Ok(Generated { man, completions })
}

fn file_name(p: &Path) -> anyhow::Result<&str> {
    p.file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("no file name in {}", p.display()))
}

/// The tarball's tree: `gwtrace`, `gwtrace.service`, `man/man1/*.1`, `completions/*`,
/// `README.md`, under one top directory named like the tarball.
fn tar_tree(top: &Path, bin: &Path, generated: &Generated) -> anyhow::Result<()> {
    let repo = root();
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    put(&top.join("gwtrace"), &read(bin)?, 0o755)?;
    put(
        &top.join("gwtrace.service"),
        &read(&repo.join("packaging/gwtrace.service"))?,
        0o644,
    )?;
    put(
        &top.join("README.md"),
        &read(&repo.join("README.md"))?,
        0o644,
    )?;
    for page in &generated.man {
        put(
            &top.join("man/man1").join(file_name(page)?),
            &read(page)?,
            0o644,
        )?;
    }
    for script in &generated.completions {
        put(
            &top.join("completions").join(file_name(script)?),
            &read(script)?,
            0o644,
        )?;
    }
    files_under(top).map(|_| ())
}

const COPYRIGHT: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: gwtrace

Files: *
License: MIT or Apache-2.0
 On Debian systems the Apache License 2.0 is in /usr/share/common-licenses/Apache-2.0.
";

/// The package's tree (`DEBIAN/` included), ready for `dpkg-deb --build`.
fn deb_tree(
    tree: &Path,
    bin: &Path,
    generated: &Generated,
    version: &str,
    deb_arch: &str,
) -> anyhow::Result<()> {
    let repo = root();
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let installed_bin = tree.join("usr/bin/gwtrace");
    put(&installed_bin, &read(bin)?, 0o755)?;
    put(
        &tree.join(DEB_UNIT),
        &read(&repo.join("packaging/gwtrace.service"))?,
        0o644,
    )?;
    for page in &generated.man {
        let name = format!("{}.gz", file_name(page)?);
        put(
            &tree.join("usr/share/man/man1").join(name),
            &gzip(page)?,
            0o644,
        )?;
    }
    for ((_, _, dest), script) in COMPLETIONS.iter().zip(&generated.completions) {
        put(&tree.join(dest), &read(script)?, 0o644)?;
    }
    let doc = tree.join("usr/share/doc/gwtrace");
    put(&doc.join("copyright"), COPYRIGHT.as_bytes(), 0o644)?;
    put(
        &doc.join("README.md.gz"),
        &gzip(&repo.join("README.md"))?,
        0o644,
    )?;

    let files = files_under(tree)?;
    let mut installed_kib = 0;
    for f in &files {
        installed_kib += std::fs::metadata(tree.join(f))?.len().div_ceil(1024);
    }
    let depends = shlib_depends(&installed_bin, deb_arch, &tree.with_file_name("shlibdeps"))?;
    let debian = tree.join("DEBIAN");
    put(
        &debian.join("control"),
        control(version, deb_arch, &depends, installed_kib).as_bytes(),
        0o644,
    )?;
    let sums = output(Command::new("md5sum").current_dir(tree).args(&files))?;
    put(&debian.join("md5sums"), &sums, 0o644)?;
    put(&debian.join("postinst"), POSTINST.as_bytes(), 0o755)?;
    put(&debian.join("prerm"), PRERM.as_bytes(), 0o755)?;
    put(&debian.join("postrm"), POSTRM.as_bytes(), 0o755)?;
    // No conffiles: the unit lives under /lib (administrators override it with
    // `systemctl edit gwtrace` or a copy in /etc/systemd/system), nothing is installed in /etc.
    files_under(tree).map(|_| ())
}

/// `Depends:` for the shared libraries the binary links against, from `dpkg-shlibdeps` (which
/// wants a `debian/control` in its working directory: a two-stanza one in a scratch dir).
fn shlib_depends(bin: &Path, deb_arch: &str, scratch: &Path) -> anyhow::Result<String> {
    put(
        &scratch.join("debian/control"),
        format!("Source: gwtrace\n\nPackage: gwtrace\nArchitecture: {deb_arch}\n").as_bytes(),
        0o644,
    )?;
    let out = output(
        Command::new("dpkg-shlibdeps")
            .current_dir(scratch)
            .arg("-O")
            .arg(format!("-e{}", bin.display())),
    )
    .context("dpkg-shlibdeps (Debian's dpkg-dev; `cargo xtask setup` installs it)")?;
    let text = String::from_utf8_lossy(&out);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .unwrap_or("")
        .trim()
        .to_owned())
}

/// Builds (or takes) the binary, strips a copy and writes the tarball, the Debian package and their SHA-256
/// sums into the output directory.
pub fn dist(opts: &Opts) -> anyhow::Result<()> {
    let bin = match &opts.binary {
        Some(b) => b.clone(),
        None => crate::build_gwtrace()?,
    };
    let out_dir = opts.out_dir.clone().unwrap_or_else(|| root().join("dist"));
    let (arch, deb_arch) = arch()?;
    let stage = out_dir.join("stage");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage).with_context(|| format!("creating {}", stage.display()))?;
    // What ships is stripped like Debian's dh_strip does (symbols and debug info of the loader;
    // the embedded eBPF object is data and keeps its BTF).
    let bin_in = bin;
    let bin = stage.join("gwtrace");
    run(Command::new("strip")
        .args(["--strip-unneeded", "--remove-section=.comment", "-o"])
        .arg(&bin)
        .arg(&bin_in))?;
    let version = version_of(&String::from_utf8_lossy(&output(
        Command::new(&bin).arg("--version"),
    )?))?;
    let generated = generate(&bin, &stage.join("generated"))?;

    let top = format!("gwtrace-{version}-{arch}-linux");
    tar_tree(&stage.join("tar").join(&top), &bin, &generated)?;
    let tarball = out_dir.join(format!("{top}.tar.gz"));
    run(Command::new("tar")
        .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(stage.join("tar"))
        .arg(&top))?;

    let tree = stage.join("deb/gwtrace");
    deb_tree(&tree, &bin, &generated, &version, deb_arch)?;
    let deb = out_dir.join(format!("gwtrace_{version}_{deb_arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&tree)
        .arg(&deb))?;

    let sums = output(
        Command::new("sha256sum")
            .current_dir(&out_dir)
            .arg(file_name(&tarball)?)
            .arg(file_name(&deb)?),
    )?;
    put(&out_dir.join("SHA256SUMS"), &sums, 0o644)?;
    std::fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    println!("dist: {}", tarball.display());
    println!("dist: {}", deb.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comes_from_the_binary_and_must_suit_debian() {
        assert_eq!(version_of("gwtrace 0.1.0\n").unwrap(), "0.1.0");
        assert_eq!(version_of("gwtrace 1.2.3~rc1").unwrap(), "1.2.3~rc1");
        assert!(version_of("gwtrace").is_err());
        assert!(version_of("gwtrace v1.0").is_err());
        assert!(version_of("gwtrace 1.0_beta").is_err());
    }

    #[test]
    fn control_names_the_package_its_dependencies_and_size() {
        let c = control("0.1.0", "amd64", "libc6 (>= 2.34)", 9000);
        for want in [
            "Package: gwtrace\n",
            "Version: 0.1.0\n",
            "Architecture: amd64\n",
            "Installed-Size: 9000\n",
            "Depends: libc6 (>= 2.34)\n",
        ] {
            assert!(c.contains(want), "{want:?} missing from\n{c}");
        }
        // Continuation lines of the description start with a space; nothing else may follow a
        // field's line without one.
        let description = c.split("Description: ").nth(1).unwrap();
        assert!(
            description.lines().skip(1).all(|l| l.starts_with(' ')),
            "{c}"
        );
        assert!(!control("0.1.0", "amd64", "", 1).contains("Depends:"));
    }

    #[test]
    fn maintainer_scripts_never_enable_or_start_the_unit() {
        for script in [POSTINST, PRERM, POSTRM] {
            assert!(script.starts_with("#!/bin/sh\n"));
            let commands: Vec<&str> = script
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect();
            for verb in ["enable", "start", "restart", "reload-or-restart", "unmask"] {
                assert!(
                    !commands.iter().any(|l| l
                        .split_whitespace()
                        .skip_while(|w| *w != "systemctl")
                        .any(|w| w == verb)),
                    "systemctl {verb} in\n{script}"
                );
            }
            assert!(
                commands.iter().all(|l| !l.contains("deb-systemd-invoke")),
                "{script}"
            );
        }
        // And they do reload systemd when it runs.
        assert!(
            POSTINST.contains("[ -d /run/systemd/system ]") && POSTINST.contains("daemon-reload")
        );
    }
}
