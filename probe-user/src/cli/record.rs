//! `gwtrace record`: every captured event as JSON lines, no engine.
use std::{path::Path, process::ExitCode};

use gwtrace::pipeline::{Pipeline, sinks::RecordSink};

use super::{RecordArgs, UsageError, session};

pub fn record(a: &RecordArgs) -> anyhow::Result<ExitCode> {
    let mut out = RecordSink::create(a.output.as_deref().unwrap_or(Path::new("-")), a.force)
        .map_err(|e| UsageError::Usage(e.to_string()))?;
    let mut pipeline = Pipeline::new(None, vec![&mut out]);
    session::run_live(
        &a.capture,
        session::default_proxy_names(),
        Vec::new(),
        "recording (Ctrl-C to stop)",
        &mut pipeline,
    )?;
    Ok(ExitCode::SUCCESS)
}
