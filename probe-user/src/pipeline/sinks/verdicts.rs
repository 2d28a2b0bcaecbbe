//! The verdict printer: human lines (coloured on a terminal) or JSON lines, each verdict printed
//! when it is established and again when its count changes, then a summary table.
use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{IsTerminal, Write},
};

use anstyle::{AnsiColor, Effects, Style};

use super::super::{Sink, SinkError, Stats, Tick};
use super::wall::WallClock;
use crate::{
    engine::{Role, Verdict, VerdictState, render_spans},
    event::Event,
};

const WHAT: &str = "the verdicts";

/// When human output is coloured (`--color`); JSON never is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorMode {
    /// On a terminal, unless `NO_COLOR` is set ([`use_color`]).
    #[default]
    Auto,
    /// Always (a pager that understands colour: `gwtrace --color always | less -R`).
    Always,
    /// Never.
    Never,
}

impl ColorMode {
    /// Whether human output to `stream` is coloured under this mode.
    #[must_use]
    pub fn for_stream(self, stream: &impl IsTerminal) -> bool {
        match self {
            Self::Auto => use_color(stream),
            Self::Always => true,
            Self::Never => false,
        }
    }
}

/// Whether human output to `stream` is coloured: only on a terminal, and never when `NO_COLOR`
/// is set to anything but the empty string (<https://no-color.org>).
#[must_use]
pub fn use_color(stream: &impl IsTerminal) -> bool {
    no_color_unset(std::env::var_os("NO_COLOR").as_deref()) && stream.is_terminal()
}

fn no_color_unset(v: Option<&std::ffi::OsStr>) -> bool {
    v.is_none_or(std::ffi::OsStr::is_empty)
}

/// The style of each role: status and cause bold red (bold yellow for 504s), labels dim, the
/// fix green.
#[must_use]
pub fn style(role: Role) -> Style {
    match role {
        Role::Text => Style::new(),
        Role::Failure => Style::new()
            .effects(Effects::BOLD)
            .fg_color(Some(AnsiColor::Red.into())),
        Role::Timeout => Style::new()
            .effects(Effects::BOLD)
            .fg_color(Some(AnsiColor::Yellow.into())),
        Role::Label => Style::new().effects(Effects::DIMMED),
        Role::Fix => Style::new().fg_color(Some(AnsiColor::Green.into())),
    }
}

/// A verdict in its human form, styled when `color`.
#[must_use]
pub fn render(v: &Verdict, color: bool) -> String {
    let mut out = String::new();
    for s in render_spans(v) {
        let st = style(s.role);
        if color && st != Style::new() {
            let _ = write!(out, "{st}{}{st:#}", s.text);
        } else {
            out.push_str(&s.text);
        }
    }
    out
}

/// What a printed verdict looked like.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Printed {
    count: u64,
    state: Option<VerdictState>,
    evidence: Vec<String>,
}

/// The verdict's id, or for one from outside a tracked run its (cause, proxy, target).
fn printed_key(v: &Verdict) -> String {
    if v.life.id.is_empty() {
        format!("{} {} {}", v.cause, v.proxy_pid, v.target)
    } else {
        v.life.id.clone()
    }
}

/// Prints verdicts as they appear and change: to `out` (stdout); the JSON run's closing table
/// goes to `err` (stderr), so `out` stays machine-readable.
pub struct VerdictSink<W, E> {
    out: W,
    err: E,
    json: bool,
    color: bool,
    summary: bool,
    /// What was last printed per verdict: its id, or (cause, proxy, target) for untracked ones.
    printed: HashMap<String, Printed>,
    last: Vec<Verdict>,
    /// Wall-clock times for the human lines and JSON's `first_seen`/`last_seen`: given (live),
    /// or learnt from the first event that carries both clocks (replay).
    wall: Option<WallClock>,
    /// Now on the events' axis, as of the last tick (for ages).
    now_ns: u64,
}

impl<W: Write, E: Write> VerdictSink<W, E> {
    /// JSON lines (`json`) or human lines, coloured when `color` (see [`use_color`]).
    pub fn new(out: W, err: E, json: bool, color: bool) -> Self {
        Self {
            out,
            err,
            json,
            color: color && !json,
            summary: true,
            printed: HashMap::new(),
            last: Vec::new(),
            wall: None,
            now_ns: 0,
        }
    }

    /// Prints times on `wall`'s clock (else the first event's).
    #[must_use]
    pub fn with_wall_clock(mut self, wall: WallClock) -> Self {
        self.wall = Some(wall);
        self
    }

    /// A verdict in its human form, times on the wall clock when known.
    fn human(&self, v: &Verdict) -> String {
        let text = render(v, self.color);
        match &self.wall {
            Some(w) => w.humanize(&text, self.now_ns),
            None => text,
        }
    }

    /// A verdict as JSON, with RFC 3339 `first_seen`/`last_seen` when the wall clock is known.
    fn json_value(&self, v: &Verdict) -> Result<serde_json::Value, SinkError> {
        let mut value = serde_json::to_value(v).map_err(SinkError::json(WHAT))?;
        if let (Some(w), Some(obj)) = (&self.wall, value.as_object_mut()) {
            for (key, ns) in [
                ("first_seen", v.first_seen_ns),
                ("last_seen", v.last_seen_ns),
            ] {
                if let Some(t) = w.rfc3339(ns) {
                    obj.insert(key.into(), serde_json::Value::String(t));
                }
            }
        }
        Ok(value)
    }

    /// Whether the run ends with the summary (default: yes).
    #[must_use]
    pub fn with_summary(mut self, summary: bool) -> Self {
        self.summary = summary;
        self
    }

    /// The output (the terminal view draws on it).
    pub fn out_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Sets now on the events' axis (for ages), as a tick does.
    pub fn at(&mut self, now_ns: u64) {
        self.now_ns = now_ns;
    }

    /// The outputs back.
    pub fn into_inner(self) -> (W, E) {
        (self.out, self.err)
    }

    /// Prints new verdicts, those whose state, count or evidence changed (JSON; the human lines
    /// follow only the count and the `resolved` transition), and, once each, those superseded
    /// since (one short line on a terminal).
    pub fn update(
        &mut self,
        verdicts: &[Verdict],
        superseded: &[Verdict],
    ) -> Result<(), SinkError> {
        let io = SinkError::io;
        for v in superseded {
            let key = printed_key(v);
            if self.printed.remove(&key).is_none() {
                // Never printed: nothing to take back.
                continue;
            }
            if self.json {
                self.json_line(v)?;
            } else {
                let by = v
                    .life
                    .superseded_by
                    .as_deref()
                    .and_then(|id| verdicts.iter().find(|n| n.life.id == id));
                let by = by.map_or_else(
                    || "no verdict stands for these failures any more".to_owned(),
                    |n| format!("superseded by {} ({} -> {})", n.cause, v.life.id, n.life.id),
                );
                writeln!(
                    self.out,
                    "  ~ {} {} -> {}: {by}",
                    v.cause, v.proxy_comm, v.target
                )
                .map_err(io(WHAT))?;
            }
        }
        for v in verdicts {
            let key = printed_key(v);
            let now = Printed {
                count: v.count,
                state: v.life.state,
                evidence: v.evidence.clone(),
            };
            let before = self.printed.insert(key, now.clone());
            if before.as_ref() == Some(&now) {
                continue;
            }
            let resolved = v.life.state == Some(VerdictState::Resolved);
            if self.json {
                self.json_line(v)?;
            } else if before.is_none() {
                let text = self.human(v);
                writeln!(self.out, "{text}").map_err(io(WHAT))?;
            } else if resolved {
                if before.as_ref().is_some_and(|b| b.state == now.state) {
                    continue;
                }
                let why = v
                    .evidence
                    .iter()
                    .rev()
                    .find_map(|e| e.strip_prefix("resolved: "))
                    .unwrap_or("the target works again");
                writeln!(
                    self.out,
                    "  + {} {} -> {}: resolved: {why}",
                    v.cause, v.proxy_comm, v.target
                )
                .map_err(io(WHAT))?;
            } else if before.as_ref().is_some_and(|b| b.count != now.count) {
                writeln!(
                    self.out,
                    "  ... {} {} -> {}: now {} times ({:.1}/s)",
                    v.cause, v.proxy_comm, v.target, v.count, v.rate_per_s
                )
                .map_err(io(WHAT))?;
            }
        }
        self.out.flush().map_err(io(WHAT))?;
        self.last = verdicts.to_vec();
        Ok(())
    }

    fn json_line(&mut self, v: &Verdict) -> Result<(), SinkError> {
        let value = self.json_value(v)?;
        serde_json::to_writer(&mut self.out, &value).map_err(SinkError::json(WHAT))?;
        writeln!(self.out).map_err(SinkError::io(WHAT))
    }

    /// The closing summary: for JSON, every verdict still standing at the end, once more, with
    /// `"final": true` and its state (`open`, `updated` or `resolved`; a verdict the engine
    /// replaced, e.g. `socket-missing` that turned out to be a crash loop, was printed as
    /// `superseded` and is not among them); then the table (on `err` for JSON runs).
    pub fn summary(&mut self) -> Result<(), SinkError> {
        let io = SinkError::io;
        if self.json {
            for v in &self.last {
                let mut value = self.json_value(v)?;
                if let Some(obj) = value.as_object_mut() {
                    obj.insert("final".into(), serde_json::Value::Bool(true));
                }
                serde_json::to_writer(&mut self.out, &value).map_err(SinkError::json(WHAT))?;
                writeln!(self.out).map_err(io(WHAT))?;
            }
            self.out.flush().map_err(io(WHAT))?;
        }
        let mut text = String::new();
        if self.last.is_empty() {
            text.push_str("gwtrace: no 502 cause established in this run\n");
        } else {
            let _ = writeln!(
                text,
                "{:<24} {:>6} {:>8}  {:<18} TARGET",
                "CAUSE", "STATUS", "COUNT", "PROXY"
            );
            for v in &self.last {
                let resolved = if v.life.state == Some(VerdictState::Resolved) {
                    " (resolved)"
                } else {
                    ""
                };
                let _ = writeln!(
                    text,
                    "{:<24} {:>6} {:>8}  {:<18} {}{resolved}",
                    v.cause,
                    v.status,
                    v.count,
                    format!("{}[{}]", v.proxy_comm, v.proxy_pid),
                    v.target
                );
            }
        }
        let w: &mut dyn Write = if self.json {
            &mut self.err
        } else {
            &mut self.out
        };
        w.write_all(text.as_bytes()).map_err(io(WHAT))?;
        w.flush().map_err(io(WHAT))
    }
}

impl<W: Write, E: Write> Sink for VerdictSink<W, E> {
    fn event(&mut self, ev: &Event) -> Result<(), SinkError> {
        if self.wall.is_none() {
            self.wall = WallClock::from_event(ev);
        }
        Ok(())
    }

    fn tick(&mut self, tick: &Tick<'_>) -> Result<(), SinkError> {
        self.now_ns = tick.now_ns;
        self.update(tick.verdicts, tick.superseded)
    }

    fn finish(&mut self, _stats: &Stats) -> Result<(), SinkError> {
        if self.summary {
            self.summary()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_is_honoured_unless_empty() {
        assert!(no_color_unset(None));
        assert!(no_color_unset(Some(std::ffi::OsStr::new(""))));
        assert!(!no_color_unset(Some(std::ffi::OsStr::new("1"))));
    }

    #[test]
    fn a_file_is_never_coloured() {
        let f = tempfile::tempfile().unwrap();
        assert!(!use_color(&f));
        assert!(!ColorMode::Auto.for_stream(&f));
        assert!(!ColorMode::Never.for_stream(&f));
        assert!(ColorMode::Always.for_stream(&f));
    }
}
