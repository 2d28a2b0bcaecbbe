//! Verdict output: human lines (colour on a terminal) or JSON lines, each verdict printed when it
//! is established and again when its count changes, then a summary table.
use std::{
    fmt::Write as _,
    io::{IsTerminal as _, Write as _},
};

use gwtrace::engine::{Verdict, render_human};

/// Prints verdicts as they appear and change.
pub struct VerdictPrinter {
    json: bool,
    color: bool,
    /// Last printed count per (cause, proxy, target).
    printed: std::collections::HashMap<(String, u32, String), u64>,
    last: Vec<Verdict>,
}

impl VerdictPrinter {
    pub fn new(json: bool) -> Self {
        Self {
            json,
            color: !json && std::io::stdout().is_terminal(),
            printed: std::collections::HashMap::default(),
            last: Vec::new(),
        }
    }

    /// Prints new verdicts and those whose count changed.
    pub fn update(&mut self, verdicts: &[Verdict]) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        for v in verdicts {
            let key = (v.cause.to_string(), v.proxy_pid, v.target.clone());
            if self.printed.get(&key) == Some(&v.count) {
                continue;
            }
            let first = !self.printed.contains_key(&key);
            self.printed.insert(key, v.count);
            if self.json {
                serde_json::to_writer(&mut out, v)?;
                writeln!(out)?;
            } else if first {
                writeln!(out, "{}", render_human(v, self.color))?;
            } else {
                writeln!(
                    out,
                    "  ... {} {} -> {}: now {} times ({:.1}/s)",
                    v.cause, v.proxy_comm, v.target, v.count, v.rate_per_s
                )?;
            }
        }
        out.flush()?;
        self.last = verdicts.to_vec();
        Ok(())
    }

    /// The closing summary: for JSON, every verdict still standing at the end, once more, with
    /// `"final": true` (a verdict the engine replaced, e.g. `socket-missing` that turned out to be a
    /// crash loop, is not among them); then the table (stderr for JSON runs, so stdout stays
    /// machine-readable).
    pub fn summary(&self) -> anyhow::Result<()> {
        if self.json {
            let mut out = std::io::stdout().lock();
            for v in &self.last {
                let mut value = serde_json::to_value(v)?;
                if let Some(obj) = value.as_object_mut() {
                    obj.insert("final".into(), serde_json::Value::Bool(true));
                }
                serde_json::to_writer(&mut out, &value)?;
                writeln!(out)?;
            }
            out.flush()?;
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
        if self.json {
            eprint!("{text}");
        } else {
            print!("{text}");
            std::io::stdout().flush()?;
        }
        Ok(())
    }
}
