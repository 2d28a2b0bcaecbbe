//! `gwtrace` (default command): find the proxies, trace, print verdicts as they are established.
use std::process::ExitCode;

use gwtrace::{
    engine::{Engine, EngineConfig},
    event::Clock,
    pipeline::{
        Pipeline, Sink,
        sinks::{RecordSink, VerdictSink, WallClock, verdicts::use_color},
    },
};

use super::{UsageError, WatchArgs, session};

/// Runs the live diagnosis.
pub fn watch(a: &WatchArgs) -> anyhow::Result<ExitCode> {
    let (proxy_names, proxy_pids) = session::resolve_proxies(&a.proxy)?;
    let mut recorder = match &a.record {
        Some(p) => {
            Some(RecordSink::create(p, a.force).map_err(|e| UsageError::Usage(e.to_string()))?)
        }
        None => None,
    };
    let engine = Engine::new(EngineConfig {
        proxy_names: proxy_names.clone(),
        proxy_pids: proxy_pids.clone(),
    });
    let stdout = std::io::stdout();
    let color = !a.json && use_color(&stdout);
    // Wall-clock times: the offset to the events' monotonic clock, measured once now.
    let mut printer = VerdictSink::new(stdout, std::io::stderr(), a.json, color)
        .with_wall_clock(WallClock::live(Clock::now()));
    let mut sinks: Vec<&mut dyn Sink> = vec![&mut printer];
    if let Some(r) = recorder.as_mut() {
        sinks.push(r);
    }
    session::run_live(
        &a.capture,
        proxy_names,
        proxy_pids,
        "tracing; verdicts appear as causes are established (Ctrl-C to stop)",
        &mut Pipeline::new(Some(engine), sinks),
    )?;
    Ok(ExitCode::SUCCESS)
}
