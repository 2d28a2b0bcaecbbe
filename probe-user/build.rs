//! Builds the eBPF programs (`probe-ebpf`) with the pinned nightly and embeds the object.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let pkg = packages
        .into_iter()
        .find(|p| p.name.as_str() == "probe-ebpf")
        .ok_or_else(|| anyhow!("probe-ebpf package not found"))?;
    let root = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", pkg.manifest_path))?;
    // One pin, in probe-ebpf/rust-toolchain.toml: read it rather than repeat it here.
    let toolchain_file = root.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={toolchain_file}");
    let text =
        std::fs::read_to_string(&toolchain_file).context("read probe-ebpf/rust-toolchain.toml")?;
    let channel = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .find_map(|rest| rest.split('"').nth(1))
        .ok_or_else(|| anyhow!("no channel in {toolchain_file}"))?
        .to_owned();
    let package = aya_build::Package {
        name: pkg.name.as_str(),
        root_dir: root.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&channel))
}
