//! The verdict printer: human lines (coloured on a terminal) or JSON lines, each verdict printed
//! when it is established and again when its count changes, then a summary table.
use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{IsTerminal, Write},
};

use anstyle::{AnsiColor, Effects, Style};

use super::super::{Sink, SinkError, Stats, Tick};
use crate::{
    engine::{Role, Verdict, render_spans},
    event::Event,
};

const WHAT: &str = "the verdicts";

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

/// Prints verdicts as they appear and change: to `out` (stdout); the JSON run's closing table
/// goes to `err` (stderr), so `out` stays machine-readable.
pub struct VerdictSink<W, E> {
    out: W,
    err: E,
    json: bool,
    color: bool,
    summary: bool,
    /// Last printed count per (cause, proxy, target).
    printed: HashMap<(String, u32, String), u64>,
    last: Vec<Verdict>,
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
        }
    }

    /// Whether the run ends with the summary (default: yes).
    #[must_use]
    pub fn with_summary(mut self, summary: bool) -> Self {
        self.summary = summary;
        self
    }

    /// The outputs back.
    pub fn into_inner(self) -> (W, E) {
        (self.out, self.err)
    }

    /// Prints new verdicts and those whose count changed.
    pub fn update(&mut self, verdicts: &[Verdict]) -> Result<(), SinkError> {
        let io = SinkError::io;
        for v in verdicts {
            let key = (v.cause.to_string(), v.proxy_pid, v.target.clone());
            if self.printed.get(&key) == Some(&v.count) {
                continue;
            }
            let first = !self.printed.contains_key(&key);
            self.printed.insert(key, v.count);
            if self.json {
                serde_json::to_writer(&mut self.out, v).map_err(SinkError::json(WHAT))?;
                writeln!(self.out).map_err(io(WHAT))?;
            } else if first {
                writeln!(self.out, "{}", render(v, self.color)).map_err(io(WHAT))?;
            } else {
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

    /// The closing summary: for JSON, every verdict still standing at the end, once more, with
    /// `"final": true` (a verdict the engine replaced, e.g. `socket-missing` that turned out to be a
    /// crash loop, is not among them); then the table (on `err` for JSON runs).
    pub fn summary(&mut self) -> Result<(), SinkError> {
        let io = SinkError::io;
        if self.json {
            for v in &self.last {
                let mut value = serde_json::to_value(v).map_err(SinkError::json(WHAT))?;
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
                let _ = writeln!(
                    text,
                    "{:<24} {:>6} {:>8}  {:<18} {}",
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
    fn event(&mut self, _ev: &Event) -> Result<(), SinkError> {
        Ok(())
    }

    fn tick(&mut self, tick: &Tick<'_>) -> Result<(), SinkError> {
        self.update(tick.verdicts)
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
    }
}
