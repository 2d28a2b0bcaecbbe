pub fn bench(_bin: &std::path::Path, _rounds: usize, _filter: Option<&str>) -> anyhow::Result<()> { anyhow::bail!("not yet") }
