//! The correlation engine: events (and the facts that travel with them) in, verdicts out.
//!
//! Pure: no I/O, no clock. Time is the events' `mono_ns`; `verdicts(now)` takes the caller's now.
//! The live command, `gwtrace explain` and the tests all drive the same code.
//!
//! Events are stored raw (bounded) in [`state`] and classified only when verdicts are asked
//! for: the facts that explain a failure (a path walk, the process table) are collected in
//! reaction to it, so they arrive after it. The causes live in [`connect`] (failed connects),
//! [`lifecycle`] (crash loops, restarts) and [`deaths`] (workers killed mid-request).
use serde::{Deserialize, Serialize};

use crate::catalog::Cause;
use crate::event::Event;
use crate::origin::Origin;

mod connect;
mod conns;
mod deaths;
mod ledger;
mod lifecycle;
mod perm;
mod predict;
pub use predict::{PathReach, unix_path_reach};
mod render;
mod report;
mod state;
mod target;
mod text;
mod view;

#[cfg(test)]
mod tests;

pub use ledger::{Advance, Life, VerdictState};
pub use render::{Role, Span, render_human, render_spans};

pub(crate) use predict::{Probe, Reach};
pub(crate) use state::Creds;
pub(crate) use target::{Target, covers, parse as parse_target};
pub(crate) use text::fmt_dur as human_duration;

/// Which processes are the proxy: failed connects of any other process are never verdicts
/// (hosts fail unix connects all the time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Process names (comm) of proxies.
    pub proxy_names: Vec<String>,
    /// Pids the user named as proxies (their children count too).
    pub proxy_pids: Vec<u32>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            proxy_names: crate::catalog::default_proxy_names(),
            proxy_pids: Vec::new(),
        }
    }
}

/// The correlation engine: feed it events in time order, ask it for verdicts.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    state: state::State,
    ledger: ledger::Ledger,
}

impl Engine {
    /// An engine with no memory yet.
    #[must_use]
    pub fn new(cfg: EngineConfig) -> Self {
        Self {
            cfg,
            state: state::State::default(),
            ledger: ledger::Ledger::default(),
        }
    }

    /// Takes one event: facts are merged, other events update the process table and the
    /// bounded event logs. Never fails: malformed or irrelevant events are simply remembered
    /// or ignored.
    pub fn feed(&mut self, ev: &Event) {
        self.state.feed(ev, &self.cfg);
    }

    /// The current verdicts, deduplicated by (cause, proxy, target), those active in the last
    /// minute before `now_mono_ns` first, then the most frequent.
    #[must_use]
    pub fn verdicts(&self, now_mono_ns: u64) -> Vec<Verdict> {
        let v = view::View::new(&self.state, &self.cfg);
        let loops = lifecycle::crash_loops(&v);
        let mut parts = Vec::new();
        for a in connect::aggregate(&v) {
            parts.extend(connect::classify(&v, &loops, &a));
        }
        // Connection parts first: those a worker's death broke fold into the death's verdict.
        conns::parts(&v, &mut parts);
        deaths::parts(&v, &mut parts);
        for l in &loops {
            if !parts
                .iter()
                .any(|p| p.crash_family.as_deref() == Some(l.family.as_str()))
                && let Some(p) = lifecycle::standalone_part(&v, l)
            {
                parts.push(p);
            }
        }
        let mut out = report::merge(
            parts,
            now_mono_ns,
            self.state.lost,
            &self.state.loss_reasons,
        );
        for verdict in &mut out {
            verdict.proxy_origin = v.proxy_origin(verdict.proxy_pid);
            verdict.proxy_net_ns = self.state.net_ns_of(verdict.proxy_pid);
            if let Some(n) = verdict.proxy_net_ns {
                verdict.evidence.push(format!(
                    "{} pid {} runs in network namespace net:[{n}], not the host's: its listeners and \
                     loopback are that namespace's, and so are the ones named here",
                    verdict.proxy_comm, verdict.proxy_pid
                ));
            }
            verdict.upstream_pid = verdict
                .upstream_pid
                .or_else(|| v.last_owner(&verdict.target));
            verdict.upstream_origin = verdict.upstream_pid.and_then(|p| v.origin(p));
        }
        out
    }

    /// For each pid, whether the engine counts that process as a proxy's upstream, by the rule
    /// its worker-death verdicts use (its family held a listener, or its command line binds a
    /// target, that a proxy's configuration names or that a proxy failed to connect to; never a
    /// proxy): `gwtrace serve` counts upstream worker deaths with it, so another app server's
    /// deaths on the host are not counted.
    #[must_use]
    pub fn upstreams(&self, pids: &[u32]) -> Vec<bool> {
        let v = view::View::new(&self.state, &self.cfg);
        pids.iter()
            .map(|&pid| deaths::upstream_of_a_proxy(&v, pid))
            .collect()
    }
}

/// Broken connections listed per verdict.
pub const MAX_BROKEN: usize = 32;

/// One proxy -> upstream connection that ended before the answer to the proxy's request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenConn {
    /// The proxy worker that held it.
    pub proxy_pid: u32,
    /// Where it went (`127.0.0.1:8000`).
    pub target: String,
    /// The upstream process that closed the other end, when its close ran in that process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_comm: Option<String>,
    /// When the proxy read the end (monotonic ns, like the verdict's `*_seen_ns`).
    pub at_ns: u64,
    /// What the proxy read: `eof` or `reset`.
    pub outcome: String,
    /// How the upstream ended it: `fin`, `rst`, `fin_then_rst`, `unknown`.
    pub peer_close: String,
    /// How long the connection sat idle before the proxy's last request (absent: first one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ns: Option<u64>,
    /// The upstream's close minus the proxy's last request (negative: the close came first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_after_send_ns: Option<i64>,
    /// 1: the connection's first request; 2: a later one (a reused keep-alive connection).
    pub requests: u32,
}

/// One established root cause of the proxy's 502s (or 504s), deduplicated by (cause, proxy, target).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The cause; serialized as its stable id (`socket-missing`, ...: [`Cause::id`]).
    pub cause: Cause,
    /// The HTTP status class the proxy answers with for this cause (502, or 504 for timeouts).
    pub status: u16,
    /// The proxy process whose connects fail (a worker), and its name.
    pub proxy_pid: u32,
    pub proxy_comm: String,
    /// The upstream target (`unix:/run/app.sock`, `127.0.0.1:8000`), or the upstream process for
    /// worker deaths (`gunicorn pid 1234`).
    pub target: String,
    /// Number of symptom events behind the verdict (failed connects, worker deaths).
    pub count: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Events per second over the verdict's lifetime.
    pub rate_per_s: f64,
    /// One-line explanation.
    pub summary: String,
    /// The kernel events and procfs facts that prove it.
    pub evidence: Vec<String>,
    /// The fix, in one or two lines.
    pub fix: String,
    /// Where the proxy worker runs: cgroup, systemd unit, container, pod (when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_origin: Option<Origin>,
    /// The proxy worker's network namespace (the inode of `/proc/PID/ns/net`) when it is not
    /// the host's: the listeners named are that namespace's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_net_ns: Option<u64>,
    /// The upstream process behind the verdict: the dead worker, the crashing app, the last
    /// owner of the target's listener (when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_pid: Option<u32>,
    /// Where that upstream process runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_origin: Option<Origin>,
    /// The proxy's connections that broke before their answer, one entry each (the first
    /// [`MAX_BROKEN`]), for collectors that count 502s per cause (connection verdicts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broken_connections: Vec<BrokenConn>,
    /// Its id and state across a run (empty from [`Engine::verdicts`]; [`Engine::advance`] fills
    /// it in).
    #[serde(flatten, default)]
    pub life: Life,
    /// Connect verdicts under `--hooks auto`: whether the errno is the kernel's (`kernel`),
    /// inferred from connect attempts plus a check of the target before the syscall hooks were
    /// attached (`check`), or first inferred and then confirmed by the kernel (`check+kernel`).
    /// Absent for other verdicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_from: Option<ErrnoFrom>,
}

/// Where a connect verdict's errno comes from ([`Verdict::errno_from`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ErrnoFrom {
    /// The syscall or socket hooks reported every failure with its errno.
    #[serde(rename = "kernel")]
    Kernel,
    /// Only inferred: connect attempts whose target failed gwtrace's check.
    #[serde(rename = "check")]
    Check,
    /// Inferred first, then the escalated hooks reported failures with their errno.
    #[serde(rename = "check+kernel")]
    CheckThenKernel,
}

impl ErrnoFrom {
    /// From the failures inferred out of all of them.
    #[must_use]
    pub fn of(inferred: u64, count: u64) -> Self {
        match inferred {
            0 => Self::Kernel,
            i if i >= count => Self::Check,
            _ => Self::CheckThenKernel,
        }
    }
}
