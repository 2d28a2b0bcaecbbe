//! `gwtrace explain FILE`: replays a record file through the engine, streaming (constant memory),
//! with a clear error naming the line of anything it cannot read.
use std::io::{BufRead as _, Read as _};

use anyhow::Context as _;
use gwtrace::{
    engine::{Engine, EngineConfig},
    event::{Event, SCHEMA_VERSION},
};

use super::{ExplainArgs, UsageError, output::VerdictPrinter, watch::default_proxy_names};

/// Longest line accepted (a facts line of a busy host is well under this).
const MAX_LINE: usize = 16 << 20;

pub fn explain(a: &ExplainArgs) -> anyhow::Result<std::process::ExitCode> {
    let file = std::fs::File::open(&a.file)
        .map_err(|e| UsageError::Usage(format!("cannot open {}: {e}", a.file.display())))?;
    let mut reader = std::io::BufReader::new(file);
    let mut names = default_proxy_names();
    names.extend(a.proxy.iter().cloned());
    let mut engine = Engine::new(EngineConfig {
        proxy_names: names,
        proxy_pids: Vec::new(),
    });
    let mut line = Vec::new();
    let mut n = 0u64;
    let mut last_ns = 0;
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .with_context(|| format!("{}: read error", a.file.display()))?;
        if read == 0 {
            break;
        }
        n += 1;
        if line.len() > MAX_LINE {
            return Err(UsageError::Usage(format!(
                "{}:{n}: line longer than {MAX_LINE} bytes: not a gwtrace record file",
                a.file.display()
            ))
            .into());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            UsageError::Usage(format!(
                "{}:{n}: not a JSON line ({e}); truncated or corrupted record file?",
                a.file.display()
            ))
        })?;
        let version = v.get("v").and_then(serde_json::Value::as_u64).unwrap_or(0);
        if version > u64::from(SCHEMA_VERSION) {
            return Err(UsageError::Usage(format!(
                "{}:{n}: schema version {version} is newer than this gwtrace understands ({SCHEMA_VERSION}): upgrade gwtrace",
                a.file.display()
            ))
            .into());
        }
        let ev: Event = serde_json::from_value(v).map_err(|e| {
            UsageError::Usage(format!(
                "{}:{n}: not a gwtrace event ({e})",
                a.file.display()
            ))
        })?;
        last_ns = last_ns.max(ev.mono_ns);
        engine.feed(&ev);
    }
    if n == 0 {
        return Err(UsageError::Usage(format!(
            "{}: empty file: nothing to explain",
            a.file.display()
        ))
        .into());
    }
    let mut printer = VerdictPrinter::new(a.json);
    printer.update(&engine.verdicts(last_ns))?;
    if !a.json {
        printer.summary()?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}
