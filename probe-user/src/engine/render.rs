//! The human form of a verdict: one headline an operator can act on, the evidence, the fix.
use std::fmt::Write as _;

use super::Verdict;
use super::text::{fmt_ns, secs};

const BOLD_RED: &str = "\x1b[1;31m";
const BOLD_YELLOW: &str = "\x1b[1;33m";
const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[32m";
const RESET: &str = "\x1b[0m";

/// Renders a verdict as lines of text:
///
/// ```text
/// 502 socket-permission proxy nginx[1234] -> unix:/run/app/app.sock: <summary> (17×, 3.4/s, first t=…s, last t=…s)
///   evidence: ...
///   fix: ...
/// ```
///
/// `color` adds ANSI colours (status and cause in red, yellow for 504s; the fix in green).
#[must_use]
pub fn render_human(v: &Verdict, color: bool) -> String {
    let (head, dim, fix, reset) = if color {
        (
            if v.status == 504 {
                BOLD_YELLOW
            } else {
                BOLD_RED
            },
            DIM,
            GREEN,
            RESET,
        )
    } else {
        ("", "", "", "")
    };
    let proxy = match (v.proxy_comm.as_str(), v.proxy_pid) {
        ("", 0) => "?".to_owned(),
        ("", pid) => format!("[{pid}]"),
        (comm, 0) => comm.to_owned(),
        (comm, pid) => format!("{comm}[{pid}]"),
    };
    let span = if v.count == 0 {
        // `gwtrace check`: found before any traffic failed.
        ", found by gwtrace check".to_owned()
    } else if v.count > 1 {
        format!(
            ", {:.1}/s over {:.1} s, first {}, last {}",
            v.rate_per_s,
            secs(v.last_seen_ns.saturating_sub(v.first_seen_ns)),
            fmt_ns(v.first_seen_ns),
            fmt_ns(v.last_seen_ns)
        )
    } else {
        format!(", at {}", fmt_ns(v.last_seen_ns))
    };
    let count = if v.count == 0 {
        "not seen yet".to_owned()
    } else {
        format!("{}×", v.count)
    };
    let mut out = format!(
        "{head}{} {}{reset} proxy {proxy} -> {}: {} ({count}{span})",
        v.status, v.cause, v.target, v.summary
    );
    let mut runs = Vec::new();
    if let Some(o) = v.proxy_origin.as_ref().filter(|o| !o.is_root()) {
        runs.push(format!("proxy in {}", o.label()));
    }
    if let Some(o) = v.upstream_origin.as_ref().filter(|o| !o.is_root()) {
        let pid = v
            .upstream_pid
            .map(|p| format!(" pid {p}"))
            .unwrap_or_default();
        runs.push(format!("upstream{pid} in {}", o.label()));
    }
    if !runs.is_empty() {
        let _ = write!(out, "\n  {dim}where:{reset} {}", runs.join("; "));
    }
    for e in &v.evidence {
        let _ = write!(out, "\n  {dim}evidence:{reset} {e}");
    }
    if !v.fix.is_empty() {
        let _ = write!(out, "\n  {fix}fix:{reset} {}", v.fix);
    }
    out
}
