//! `gwtrace` (default command): find the proxies, trace, print verdicts as they are established:
//! a live view on a terminal, the plain append-only log otherwise.
use std::{io::IsTerminal as _, process::ExitCode};

use gwtrace::{
    engine::{Engine, EngineConfig},
    event::Clock,
    pipeline::{
        Pipeline, Sink,
        sinks::{RecordSink, TerminalSink, VerdictSink, WallClock, terminal, verdicts::ColorMode},
    },
};

use super::{UsageError, WatchArgs, session};

/// Runs the live diagnosis.
pub fn watch(a: &WatchArgs, color: ColorMode) -> anyhow::Result<ExitCode> {
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
    let color = !a.json && color.for_stream(&stdout);
    // Wall-clock times: the offset to the events' monotonic clock, measured once now.
    let printer = VerdictSink::new(stdout, std::io::stderr(), a.json, color)
        .with_wall_clock(WallClock::live(Clock::now()));
    let live = terminal::wanted(a.json);
    let mut plain = None;
    let mut view = None;
    let shown: &mut dyn Sink = if live {
        let relay = std::io::stderr().is_terminal();
        view.insert(TerminalSink::new(
            printer,
            proxy_names.clone(),
            color,
            relay,
        ))
    } else {
        plain.insert(printer)
    };
    let mut sinks: Vec<&mut dyn Sink> = vec![shown];
    if let Some(r) = recorder.as_mut() {
        sinks.push(r);
    }
    let ready = if live {
        "tracing; the current verdicts stay below, in full when gwtrace ends (Ctrl-C to stop)"
    } else {
        "tracing; verdicts appear as causes are established (Ctrl-C to stop)"
    };
    session::run_live(
        &a.capture,
        proxy_names,
        proxy_pids,
        ready,
        &mut Pipeline::new(Some(engine), sinks),
    )?;
    Ok(ExitCode::SUCCESS)
}
