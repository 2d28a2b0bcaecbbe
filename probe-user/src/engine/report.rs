//! Pieces of verdicts as the causes produce them, and their merge into deduplicated, sorted
//! [`Verdict`]s: one per (cause, proxy master, target).
use std::collections::BTreeMap;

use super::text::rate;
use super::view::{ProxyId, ProxyKey};
use super::{BrokenConn, MAX_BROKEN, Verdict};
use crate::catalog::{Cause, in_proxy_terms};

/// Evidence lines kept per verdict: enough to prove, short enough to read.
pub(crate) const MAX_EVIDENCE: usize = 12;
/// A verdict whose last symptom is this recent sorts before older ones.
const ACTIVE_NS: u64 = 60_000_000_000;

/// One cause's finding over one group of symptoms.
#[derive(Clone, Debug)]
pub(crate) struct Part {
    pub cause: Cause,
    pub status: u16,
    pub proxy: ProxyId,
    pub target: String,
    pub count: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub summary: String,
    pub evidence: Vec<String>,
    pub fix: String,
    /// The crash loop (family key) this part explained, so it is not reported again alone.
    pub crash_family: Option<String>,
    /// The upstream process behind it (the dead worker, the crashing app), when one is known.
    pub upstream_pid: Option<u32>,
    /// The broken connections behind it (connection verdicts).
    pub broken: Vec<BrokenConn>,
    /// Failed connects that are the consequence of this pid's death (refused while a
    /// supervisor restarted it): folded into that death's part, never a verdict of their own.
    pub consequence_of: Option<u32>,
    /// Connect verdicts: how many of `count` were inferred from attempts plus a check rather
    /// than reported with their errno by the kernel (None: not a connect verdict).
    pub inferred: Option<u64>,
}

impl Part {
    /// A part with no evidence yet.
    pub(crate) fn new(cause: Cause, proxy: ProxyId, target: &str) -> Self {
        Self {
            cause,
            status: cause.status(),
            proxy,
            target: target.to_owned(),
            count: 0,
            first_ns: 0,
            last_ns: 0,
            summary: String::new(),
            evidence: Vec::new(),
            fix: String::new(),
            crash_family: None,
            upstream_pid: None,
            broken: Vec::new(),
            consequence_of: None,
            inferred: None,
        }
    }
}

/// Merges parts with the same (cause, proxy, target) and sorts: verdicts active in the last
/// minute before `now` first, then the most frequent, then the most recent.
pub(crate) fn merge(
    parts: Vec<Part>,
    now_ns: u64,
    lost: u64,
    loss_reasons: &[String],
) -> Vec<Verdict> {
    let mut merged: BTreeMap<(Cause, ProxyKey, String), (Part, u64)> = BTreeMap::new();
    for p in parts {
        if p.count == 0 {
            continue;
        }
        let key = (p.cause, p.proxy.key.clone(), p.target.clone());
        match merged.get_mut(&key) {
            None => {
                let c = p.count;
                merged.insert(key, (p, c));
            }
            Some((m, biggest)) => {
                m.first_ns = m.first_ns.min(p.first_ns);
                m.last_ns = m.last_ns.max(p.last_ns);
                m.count += p.count;
                m.inferred = match (m.inferred, p.inferred) {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                };
                m.upstream_pid = m.upstream_pid.or(p.upstream_pid);
                let room = MAX_BROKEN.saturating_sub(m.broken.len());
                m.broken.extend(p.broken.iter().take(room).cloned());
                if p.count > *biggest {
                    // The largest group's wording leads; its evidence goes first.
                    *biggest = p.count;
                    m.summary = p.summary;
                    m.fix = p.fix;
                    m.status = p.status;
                    m.proxy = p.proxy;
                    let old = std::mem::replace(&mut m.evidence, p.evidence);
                    extend_unique(&mut m.evidence, old);
                } else {
                    extend_unique(&mut m.evidence, p.evidence);
                }
            }
        }
    }
    let mut out: Vec<Verdict> = merged
        .into_values()
        .map(|(p, _)| {
            let mut evidence = p.evidence;
            evidence.truncate(MAX_EVIDENCE);
            if lost > 0 {
                evidence.push(format!(
                    "note: {lost} events were lost ({}): counts may be low",
                    loss_reasons.join(", ")
                ));
            }
            // Each proxy's own status and configuration terms (HAProxy answers 503 where
            // nginx answers 502, its upstreams are server lines, not proxy_pass).
            let status = if p.status == p.cause.status() {
                p.cause.status_of(&p.proxy.comm)
            } else {
                p.status
            };
            Verdict {
                cause: p.cause,
                status,
                proxy_pid: p.proxy.pid,
                target: p.target,
                count: p.count,
                first_seen_ns: p.first_ns,
                last_seen_ns: p.last_ns,
                rate_per_s: rate(p.count, p.first_ns, p.last_ns),
                summary: in_proxy_terms(&p.summary, &p.proxy.comm),
                evidence,
                fix: in_proxy_terms(&p.fix, &p.proxy.comm),
                proxy_comm: p.proxy.comm,
                proxy_origin: None,
                proxy_net_ns: None,
                upstream_pid: p.upstream_pid,
                upstream_origin: None,
                broken_connections: {
                    let mut b = p.broken;
                    b.truncate(MAX_BROKEN);
                    b
                },
                errno_from: p
                    .inferred
                    .map(|i| super::ErrnoFrom::of(i.min(p.count), p.count)),
                life: super::Life::default(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        let active = |v: &Verdict| now_ns.saturating_sub(v.last_seen_ns) <= ACTIVE_NS;
        active(b)
            .cmp(&active(a))
            .then(b.count.cmp(&a.count))
            .then(b.last_seen_ns.cmp(&a.last_seen_ns))
            .then(a.cause.cmp(&b.cause))
            .then(a.target.cmp(&b.target))
    });
    out
}

/// Appends the lines not already present.
fn extend_unique(into: &mut Vec<String>, lines: Vec<String>) {
    for l in lines {
        if !into.contains(&l) {
            into.push(l);
        }
    }
}
