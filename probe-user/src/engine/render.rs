//! The human form of a verdict: one headline an operator can act on, the evidence, the fix.
//!
//! Rendering is plain text cut into [`Span`]s, each tagged with what it is ([`Role`]); the engine
//! emits no terminal codes. A sink that prints to a terminal styles the roles (the human verdict
//! sink, `gwtrace check`); everything else joins the spans ([`render_human`]).
use super::Verdict;
use super::text::{fmt_ns, secs};

/// What a piece of a rendered verdict is, so an output can style it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Ordinary text.
    Text,
    /// The status and cause of a 502-class verdict (`502 socket-permission`).
    Failure,
    /// The status and cause of a 504-class verdict (`504 connect-timeout`).
    Timeout,
    /// A line label: `where:`, `evidence:`.
    Label,
    /// The `fix:` label.
    Fix,
}

/// A piece of rendered text and its role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub role: Role,
    pub text: String,
}

/// Accumulates spans, merging neighbours of the same role.
#[derive(Default)]
struct Spans(Vec<Span>);

impl Spans {
    fn push(&mut self, role: Role, text: impl Into<String>) {
        let text = text.into();
        match self.0.last_mut() {
            Some(last) if last.role == role => last.text.push_str(&text),
            _ => self.0.push(Span { role, text }),
        }
    }
}

/// Renders a verdict as lines of text, cut into styled spans:
///
/// ```text
/// 502 socket-permission proxy nginx[1234] -> unix:/run/app/app.sock: <summary> (17×, 3.4/s, first t=…s, last t=…s)
///   evidence: ...
///   fix: ...
/// ```
///
/// The status and cause are [`Role::Failure`] ([`Role::Timeout`] for 504s), the `where:` and
/// `evidence:` labels [`Role::Label`], the `fix:` label [`Role::Fix`].
#[must_use]
pub fn render_spans(v: &Verdict) -> Vec<Span> {
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
    let mut out = Spans::default();
    let head = if v.status == 504 {
        Role::Timeout
    } else {
        Role::Failure
    };
    out.push(head, format!("{} {}", v.status, v.cause));
    out.push(
        Role::Text,
        format!(
            " proxy {proxy} -> {}: {} ({count}{span})",
            v.target, v.summary
        ),
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
        out.push(Role::Text, "\n  ");
        out.push(Role::Label, "where:");
        out.push(Role::Text, format!(" {}", runs.join("; ")));
    }
    for e in &v.evidence {
        out.push(Role::Text, "\n  ");
        out.push(Role::Label, "evidence:");
        out.push(Role::Text, format!(" {e}"));
    }
    if !v.fix.is_empty() {
        out.push(Role::Text, "\n  ");
        out.push(Role::Fix, "fix:");
        out.push(Role::Text, format!(" {}", v.fix));
    }
    out.0
}

/// [`render_spans`] as plain text (no terminal codes).
#[must_use]
pub fn render_human(v: &Verdict) -> String {
    render_spans(v).into_iter().map(|s| s.text).collect()
}
