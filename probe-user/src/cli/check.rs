//! `gwtrace check`: reads the proxies' configuration, checks every upstream target now the way
//! a worker would connect, prints the verdicts (same lines as `gwtrace`) and the warnings.
//! No eBPF, no root needed (it says what it could not see without).
use std::{fmt::Write as _, io::Write as _, path::PathBuf, process::ExitCode};

use gwtrace::check::{self, Report, Severity};
use gwtrace::pipeline::sinks::verdicts::{self, ColorMode};

use super::{EXIT_FAILURE, UsageError};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// One finding per line as JSON: the verdict's fields plus `severity` (fail|warn) and
    /// `config` (the configuration lines that lead to the target).
    #[arg(long)]
    json: bool,
    /// Proxy to check, by process name or pid (repeatable; default: every running nginx).
    #[arg(long, value_name = "NAME|PID")]
    proxy: Vec<String>,
    /// Check this nginx configuration file (`nginx -T -c FILE`) instead of the running nginx:
    /// before a deploy, in CI.
    #[arg(long, value_name = "FILE", conflicts_with = "proxy")]
    config: Option<PathBuf>,
    /// Exit 1 on warnings too (timeout mismatch, volatile socket directory, small backlog).
    #[arg(long)]
    strict: bool,
}

/// Runs the check; exit 0 when every target is healthy, 1 when one fails (or, with
/// `--strict`, anything is flagged).
pub fn check(a: &CheckArgs, color: ColorMode) -> anyhow::Result<ExitCode> {
    let report = check::run(&check::Options {
        proxies: a.proxy.clone(),
        config: a.config.clone(),
    })
    .map_err(|e| UsageError::Usage(e.to_string()))?;
    let color = !a.json && color.for_stream(&std::io::stdout());
    let mut out = std::io::stdout().lock();
    if a.json {
        for f in report.findings() {
            serde_json::to_writer(&mut out, f)?;
            writeln!(out)?;
        }
    } else {
        write!(out, "{}", human(&report, color))?;
    }
    out.flush()?;
    let mut err = std::io::stderr().lock();
    for n in report
        .notes
        .iter()
        .chain(report.proxies.iter().flat_map(|p| p.notes.iter()))
    {
        writeln!(err, "gwtrace check: could not check: {n}")?;
    }
    if a.json {
        writeln!(err, "{}", summary(&report))?;
    }
    Ok(if report.has_problems(a.strict) {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

/// `gwtrace check: 3 targets: 1 failing, 1 warning (42 ms)`.
fn summary(r: &Report) -> String {
    let targets: usize = r.proxies.iter().map(|p| p.targets.len()).sum();
    let fails = r
        .findings()
        .filter(|f| f.severity == Severity::Fail)
        .count();
    let warns = r
        .findings()
        .filter(|f| f.severity == Severity::Warn)
        .count();
    let verdict = if fails == 0 && warns == 0 {
        "all healthy".to_owned()
    } else {
        format!("{fails} failing, {warns} warning(s)")
    };
    format!(
        "gwtrace check: {targets} upstream target(s) of {} proxy(ies): {verdict} ({} ms)",
        r.proxies.len(),
        r.elapsed_ms
    )
}

/// The human report: per proxy, where its configuration came from, who its workers are, one
/// line per target; then the verdicts; then the summary.
fn human(r: &Report, color: bool) -> String {
    let mut s = String::new();
    for p in &r.proxies {
        let who = if p.pid == 0 {
            p.comm.clone()
        } else {
            format!("{}[{}]", p.comm, p.pid)
        };
        let _ = writeln!(s, "gwtrace check: {who}: {}", p.source);
        let _ = writeln!(s, "  workers: {}", p.worker);
        let width = p.targets.iter().map(|t| t.target.len()).max().unwrap_or(0);
        for t in &p.targets {
            let sev = p
                .findings
                .iter()
                .filter(|f| f.verdict.target == t.target && f.verdict.cause == t.state)
                .map(|f| f.severity)
                .min();
            let state = match (t.state.as_str(), sev) {
                ("ok", _) => "ok  ".to_owned(),
                ("unchecked", _) => "??  ".to_owned(),
                (c, Some(Severity::Warn)) => format!("WARN {c}"),
                (c, _) => format!("FAIL {c}"),
            };
            let detail = if t.state == "ok" || t.state == "unchecked" {
                format!(" ({})", t.detail)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "  {state:<28} {:<width$}  used at {}{detail}",
                t.target, t.used_at
            );
        }
    }
    for f in r.findings() {
        s.push('\n');
        if f.severity == Severity::Warn {
            s.push_str("warning: ");
        }
        s.push_str(&verdicts::render(&f.verdict, color));
        s.push('\n');
    }
    s.push('\n');
    s.push_str(&summary(r));
    s.push('\n');
    s
}
