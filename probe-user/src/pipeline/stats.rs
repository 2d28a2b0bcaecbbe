//! What a run saw, for the summary on stderr.
use std::collections::BTreeMap;

use crate::{
    capture::Counters,
    event::{Body, Event},
};

/// What the pipeline saw.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lines per event kind.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// The kernel counters at the end (zero for a replay).
    pub counters: Counters,
    /// Events the kernel side lost (the `loss` lines' counts).
    pub lost: u64,
    /// Failed connects the `connect_failed` lines stand for (identical ones fold into one line).
    pub failures: u64,
    /// Wall-clock length of the run.
    pub seconds: f64,
    /// Why it ended: `duration reached`, `SIGINT`, ..., [`super::END_OF_INPUT`].
    pub stopped_by: &'static str,
}

impl Stats {
    /// Counts one event.
    pub fn count(&mut self, ev: &Event) {
        *self.by_kind.entry(ev.kind()).or_default() += 1;
        match ev.body {
            Body::Loss { count, .. } => self.lost += count,
            Body::ConnectFailed { count, .. } => self.failures += count,
            _ => {}
        }
    }

    /// Human summary lines (for stderr).
    #[must_use]
    pub fn render(&self) -> String {
        use probe_common::{
            CNT_ACCEPT_FAILED, CNT_ACCEPT_OK, CNT_CONNECT_FAILED, CNT_CONNECT_INPROGRESS,
            CNT_CONNECT_OK, CNT_TCP_ESTABLISHED, CNT_TCP_FAILED,
        };
        let c = |i: u32| self.counters.counters.get(i as usize).copied().unwrap_or(0);
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!(
            "gwtrace: {:.1}s ({}), events: {}\n\
             gwtrace: failed connects reported: {} in {} connect_failed lines (identical failures fold into one line per {} ms)\n\
             gwtrace: kernel: connect ok {} in-progress {} failed {}, tcp established {} failed {}, accept ok {} failed {}\n\
             gwtrace: lost events: {} (ring buffer, map, reads, recursion misses)",
            self.seconds,
            self.stopped_by,
            if kinds.is_empty() {
                "none".to_owned()
            } else {
                kinds.join(", ")
            },
            self.failures,
            self.by_kind.get("connect_failed").copied().unwrap_or(0),
            probe_common::FOLD_WINDOW_NS / 1_000_000,
            c(CNT_CONNECT_OK),
            c(CNT_CONNECT_INPROGRESS),
            c(CNT_CONNECT_FAILED),
            c(CNT_TCP_ESTABLISHED),
            c(CNT_TCP_FAILED),
            c(CNT_ACCEPT_OK),
            c(CNT_ACCEPT_FAILED),
            self.lost,
        )
    }
}
