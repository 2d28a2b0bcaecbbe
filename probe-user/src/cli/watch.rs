//! `gwtrace` (default command): find the proxies, trace, print verdicts as they are established.
use std::{io::Write as _, time::Duration};

use gwtrace::{
    catalog::PROXY_NAMES,
    engine::{Engine, EngineConfig},
    facts::FactSource as _,
    host::SystemFacts,
};

use super::{UsageError, WatchArgs, output::VerdictPrinter, session};

/// The proxy names auto-detection looks for.
pub fn default_proxy_names() -> Vec<String> {
    PROXY_NAMES.iter().map(|s| (*s).to_owned()).collect()
}

/// Resolves `--proxy` values and auto-detection into names and pids.
pub fn resolve_proxies(args: &[String]) -> Result<(Vec<String>, Vec<u32>), UsageError> {
    let mut facts = SystemFacts::new();
    let procs = facts.processes();
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
        eprintln!(
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
        eprintln!("gwtrace: watching {}", list.join(", "));
    }
    Ok((names, pids))
}

/// Runs the live diagnosis.
pub fn watch(a: &WatchArgs) -> anyhow::Result<std::process::ExitCode> {
    let (proxy_names, proxy_pids) = resolve_proxies(&a.proxy)?;
    let mut recorder = match &a.record {
        Some(p) => Some(session::open_output(p, a.force)?),
        None => None,
    };
    let mut engine = Engine::new(EngineConfig {
        proxy_names: proxy_names.clone(),
        proxy_pids: proxy_pids.clone(),
    });
    let opts = session::SessionOpts {
        duration: a.capture.duration.map(Duration::from_secs_f64),
        hooks: a.capture.hooks.into(),
        proxy_names,
        proxy_pids,
    };
    let printer = std::cell::RefCell::new(VerdictPrinter::new(a.json));
    let engine_cell = std::cell::RefCell::new(&mut engine);
    let stats = session::run(
        &opts,
        "tracing; verdicts appear as causes are established (Ctrl-C to stop)",
        |ev| {
            engine_cell.borrow_mut().feed(ev);
            if let Some(r) = recorder.as_mut() {
                serde_json::to_writer(&mut *r, ev)?;
                r.write_all(b"\n")?;
            }
            Ok(())
        },
        |now| {
            let verdicts = engine_cell.borrow().verdicts(now);
            printer.borrow_mut().update(&verdicts)?;
            Ok(())
        },
    )?;
    if let Some(mut r) = recorder {
        r.flush()?;
    }
    printer.borrow_mut().summary()?;
    eprintln!("{}", stats.render());
    Ok(std::process::ExitCode::SUCCESS)
}
