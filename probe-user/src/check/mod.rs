//! `gwtrace check`: find the 502 before traffic does, from the proxy's own configuration,
//! without eBPF.
//!
//! - [`nginx`] reads `nginx -T` output (pure): every upstream target with its file and line, the
//!   worker user, the read/connect timeouts in effect where each target is used.
//! - [`apps`] reads app servers' settings, users, listen queues, boot-time directories (pure).
//! - [`assess`] checks each target the way a proxy worker would see it now, with the engine's
//!   own causes and wording (the engine predicts the failed connect it would otherwise observe),
//!   and adds warnings for configurations that make 502s likely (pure, over collected facts).
//! - [`haproxy`], [`caddy`], [`apache`] read the other proxies' files into the same shape
//!   (pure); [`proxies`] recognises which proxy a process is and reads its files.
//! - [`live`] collects all of that from the running system: /proc, `nginx -T`, `ss`, `systemctl`.
use serde::Serialize;

use crate::engine::Verdict;

pub mod apache;
pub mod apps;
pub mod assess;
pub mod caddy;
pub mod haproxy;
pub mod live;
pub mod nginx;
pub mod proxies;

pub use live::{CheckError, Options, run};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Requests through this target fail now (a 502 as soon as traffic comes).
    Fail,
    /// Requests succeed now, but this makes 502s (or 504s) likely: a timeout mismatch, a
    /// directory that vanishes on reboot, a failing server nginx retries past.
    Warn,
}

/// One verdict of `gwtrace check`, with where in the configuration it comes from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// `file:line directive` of every configuration line that leads to the target.
    pub config: Vec<String>,
}

/// How one upstream target looks now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TargetStatus {
    pub target: String,
    /// `ok`, a cause id, or `unchecked`.
    pub state: String,
    /// Who listens there (`gunicorn pid 42`), or why it could not be checked.
    pub detail: String,
    /// `file:line` of the first configuration line that uses it (and how many more).
    pub used_at: String,
}

/// The check of one proxy.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProxyReport {
    pub comm: String,
    /// The master's pid (0: a configuration file checked with no proxy running it).
    pub pid: u32,
    /// How the configuration was read (`nginx -T -c /etc/nginx/nginx.conf`).
    pub source: String,
    /// Who the workers run as, and how gwtrace knows.
    pub worker: String,
    pub targets: Vec<TargetStatus>,
    pub findings: Vec<Finding>,
    /// What could not be checked, and why.
    pub notes: Vec<String>,
}

/// Everything `gwtrace check` found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub proxies: Vec<ProxyReport>,
    /// Host-wide notes: proxies found but not parsed, facts not visible without root.
    pub notes: Vec<String>,
    /// Wall time of the check.
    pub elapsed_ms: u64,
}

impl Report {
    /// Findings of every proxy.
    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.proxies.iter().flat_map(|p| p.findings.iter())
    }

    /// True when a target fails now (or, with `strict`, when anything was flagged).
    #[must_use]
    pub fn has_problems(&self, strict: bool) -> bool {
        self.findings()
            .any(|f| strict || f.severity == Severity::Fail)
    }
}
