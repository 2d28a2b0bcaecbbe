//! What every tracing command shares: which proxies to watch, and a live run of the library's
//! pipeline (signals caught, programs attached, the ready line, the run, the summary).

/// A line on stderr that never panics (eprintln! does when stderr is a closed pipe).
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use std::time::Duration;

use gwtrace::pipeline::{
    Pipeline, Stats, Stop,
    live::{Live, LiveOptions},
};

use super::{CaptureArgs, UsageError};

pub use gwtrace::catalog::default_proxy_names;

/// Resolves `--proxy` values and auto-detection into names and pids.
pub fn resolve_proxies(args: &[String]) -> Result<(Vec<String>, Vec<u32>), UsageError> {
    // Names, pids and parents only: one `stat` read per process.
    let procs = gwtrace::host::procfs::brief_processes();
    let mut names = default_proxy_names();
    let mut pids = Vec::new();
    for a in args {
        if let Ok(pid) = a.parse::<u32>() {
            let Some(p) = procs.iter().find(|p| p.pid == pid) else {
                return Err(UsageError::Usage(format!("--proxy {pid}: no such process")));
            };
            pids.push(pid);
            // Its workers are its children.
            pids.extend(procs.iter().filter(|c| c.ppid == p.pid).map(|c| c.pid));
        } else {
            if !procs.iter().any(|p| p.comm == *a) {
                return Err(UsageError::Usage(format!(
                    "--proxy {a}: no running process is named {a:?} (check `ps -e -o comm`)"
                )));
            }
            if !names.contains(a) {
                names.push(a.clone());
            }
        }
    }
    let found: Vec<_> = procs
        .iter()
        .filter(|p| names.contains(&p.comm) || pids.contains(&p.pid))
        .collect();
    if found.is_empty() {
        note!(
            "gwtrace: no reverse proxy running (looked for {}); tracing anyway, a proxy may start later",
            names.join(", ")
        );
    } else {
        let mut by_name = std::collections::BTreeMap::<&str, Vec<u32>>::new();
        for p in &found {
            by_name.entry(p.comm.as_str()).or_default().push(p.pid);
        }
        let list: Vec<String> = by_name
            .iter()
            .map(|(n, ps)| format!("{n} ({} processes: {ps:?})", ps.len()))
            .collect();
        note!("gwtrace: watching {}", list.join(", "));
    }
    Ok((names, pids))
}

/// Runs the pipeline on the live capture until `--duration` or a signal. The ready line
/// (`ready_msg`, on stderr) is printed once every program is attached, not before; the summary
/// after the sinks have finished.
pub fn run_live(
    capture: &CaptureArgs,
    proxy_names: Vec<String>,
    proxy_pids: Vec<u32>,
    ready_msg: &str,
    pipeline: &mut Pipeline<'_>,
) -> anyhow::Result<Stats> {
    // Catch the signals before attaching.
    let stop = Stop::new(capture.duration.map(Duration::from_secs_f64), true)?;
    let started = std::time::Instant::now();
    let mut source = Live::start(&LiveOptions {
        hooks: capture.hooks.into(),
        proxy_names,
        proxy_pids,
        calm_after: Duration::from_nanos(gwtrace::pipeline::escalation::QUIET_NS),
    })?;
    note!(
        "gwtrace: {ready_msg} (attached in {} ms)",
        started.elapsed().as_millis()
    );
    let stats = pipeline.run(&mut source, stop)?;
    note!("{}", stats.render());
    Ok(stats)
}
