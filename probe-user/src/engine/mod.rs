//! The correlation engine: events (and the facts that travel with them) in, verdicts out.
//!
//! Pure: no I/O, no clock. Time is the events' `mono_ns`; `verdicts(now)` takes the caller's now.
//! The live command, `gwtrace explain` and the tests all drive the same code.
use serde::{Deserialize, Serialize};

/// One established root cause of the proxy's 502s (or 504s), deduplicated by (cause, proxy, target).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Stable cause id: `socket-missing`, `stale-socket`, `upstream-not-listening`, `wrong-target`,
    /// `socket-permission`, `backlog-full`, `crash-on-boot`, `worker-timeout`, `worker-oom-killed`,
    /// `worker-crashed`, `upstream-reset`, `port-exhaustion`, `network-unreachable`,
    /// `connect-timeout`, `upstream-restarting`.
    pub cause: String,
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
}
