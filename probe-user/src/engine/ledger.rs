//! The verdicts' lifecycle across a run: a stable id per verdict and its state from one call of
//! [`Engine::advance`] to the next.
//!
//! [`Engine::verdicts`] recomputes every verdict from the stored events, so a verdict can stop
//! being produced: during a restart the failures are `socket-missing` until the new listener is
//! seen, then the same failures fall inside the restart window and become `upstream-restarting`
//! (`connect::outage` asks the lifecycle causes first). The ledger remembers what it handed out
//! and makes that replacement explicit: the verdict that vanished is `superseded`, naming the id of
//! the one that took its (cause-less) proxy and target. A verdict whose symptom stopped while the
//! facts say its target works again is `resolved`.
//!
//! Pure: the facts come from the engine's state, the time from the caller.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::perm::{Walk, walk};
use super::state::Creds;
use super::target::{Target, covers, parse};
use super::text::{fmt_dur, fmt_ns};
use super::view::View;
use super::{Engine, Verdict};
use crate::catalog::Cause;
use crate::facts::PathComponent;

/// A symptom-free stretch this long (after the last failure) is needed before a verdict is
/// resolved.
pub const RESOLVE_QUIET_NS: u64 = 5_000_000_000;

/// Where a verdict is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictState {
    /// First emitted.
    Open,
    /// Its count or evidence changed since it was last emitted.
    Updated,
    /// Another verdict replaced it (`superseded_by`), or no verdict stands for its symptoms any
    /// more (no `superseded_by`). Final: the same cause, proxy and target later gets a new id.
    Superseded,
    /// Its symptom stopped and the facts read since say its target works again. Final as well:
    /// a new failure opens a new verdict.
    Resolved,
}

impl VerdictState {
    /// The verdict still stands: counted as active, printed in the table.
    #[must_use]
    pub fn is_active(self) -> bool {
        matches!(self, Self::Open | Self::Updated)
    }

    /// Its id in the JSON lines.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Updated => "updated",
            Self::Superseded => "superseded",
            Self::Resolved => "resolved",
        }
    }
}

/// A verdict's id and state across a run. Empty (no id, no state) from [`Engine::verdicts`] and
/// `gwtrace check`, which have no run to track.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Life {
    /// Stable across updates of the same (cause, proxy, target): `v1`, `v2`, ... in the order
    /// verdicts were first opened in this run.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<VerdictState>,
    /// For a superseded verdict: the id of the verdict that replaced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
}

/// The verdicts as of one [`Engine::advance`].
#[derive(Clone, Debug, Default)]
pub struct Advance {
    /// Every verdict the engine stands by now, each with its id and state (`open`, `updated` or
    /// `resolved`), sorted as [`Engine::verdicts`] sorts them.
    pub verdicts: Vec<Verdict>,
    /// The verdicts superseded since the previous call: their last form, with `superseded_by`.
    pub superseded: Vec<Verdict>,
}

type Key = (Cause, u32, String, String);

fn key(v: &Verdict) -> Key {
    (v.cause, v.proxy_pid, v.proxy_comm.clone(), v.target.clone())
}

/// What the ledger remembers of a verdict it handed out.
#[derive(Clone, Debug)]
struct Entry {
    id: String,
    state: VerdictState,
    count: u64,
    /// The evidence as the engine produced it (before the resolution line).
    evidence: Vec<String>,
    /// Why it was resolved, once it is.
    resolution: Option<String>,
    /// Its last form, for the superseded line.
    last: Verdict,
}

/// Ids and states of the verdicts handed out so far.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    next: u64,
    entries: BTreeMap<Key, Entry>,
}

impl Ledger {
    /// Assigns ids and states to the engine's verdicts now; `works_again` says (with the evidence
    /// line) whether a verdict's target works again.
    pub(crate) fn step(
        &mut self,
        mut current: Vec<Verdict>,
        now_ns: u64,
        works_again: impl Fn(&Verdict) -> Option<String>,
    ) -> Advance {
        let mut opened: Vec<usize> = Vec::new();
        for (i, v) in current.iter_mut().enumerate() {
            let k = key(v);
            // A resolved verdict whose symptom came back is a new episode.
            if self
                .entries
                .get(&k)
                .is_some_and(|e| e.state == VerdictState::Resolved && v.count != e.count)
            {
                self.entries.remove(&k);
            }
            let state = match self.entries.get_mut(&k) {
                None => {
                    self.next += 1;
                    self.entries.insert(
                        k.clone(),
                        Entry {
                            id: format!("v{}", self.next),
                            state: VerdictState::Open,
                            count: v.count,
                            evidence: v.evidence.clone(),
                            resolution: None,
                            last: v.clone(),
                        },
                    );
                    opened.push(i);
                    VerdictState::Open
                }
                // Resolved before: handed out as it was at its resolution, so the resolution is
                // emitted once (the sinks print a verdict whenever its form changes, and later
                // facts change what the engine says of the target).
                Some(e) if e.state == VerdictState::Resolved => {
                    e.last.clone_into(v);
                    continue;
                }
                Some(e) => {
                    if e.state != VerdictState::Resolved
                        && (e.count != v.count || e.evidence != v.evidence)
                    {
                        e.state = VerdictState::Updated;
                        e.count = v.count;
                        e.evidence.clone_from(&v.evidence);
                    }
                    e.state
                }
            };
            let Some(e) = self.entries.get_mut(&k) else {
                continue;
            };
            if state.is_active()
                && now_ns.saturating_sub(v.last_seen_ns) >= RESOLVE_QUIET_NS
                && let Some(why) = works_again(v)
            {
                e.state = VerdictState::Resolved;
                e.resolution = Some(why);
            }
            if let Some(why) = &e.resolution {
                v.evidence.push(why.clone());
            }
            v.life = Life {
                id: e.id.clone(),
                state: Some(e.state),
                superseded_by: None,
            };
            e.last = v.clone();
        }
        let present: Vec<Key> = current.iter().map(key).collect();
        let gone: Vec<Key> = self
            .entries
            .keys()
            .filter(|k| !present.contains(k))
            .cloned()
            .collect();
        let mut superseded = Vec::new();
        for k in gone {
            let Some(e) = self.entries.remove(&k) else {
                continue;
            };
            if e.state == VerdictState::Resolved {
                continue;
            }
            let mut v = e.last;
            v.life.state = Some(VerdictState::Superseded);
            v.life.superseded_by = successor(&v, &current, &opened).map(|s| s.life.id.clone());
            superseded.push(v);
        }
        Advance {
            verdicts: current,
            superseded,
        }
    }
}

/// The verdict that took a vanished one's symptoms: one about the same proxy and target (opened
/// now first), else one opened now for the same proxy and upstream process.
fn successor<'a>(old: &Verdict, current: &'a [Verdict], opened: &[usize]) -> Option<&'a Verdict> {
    let fresh = |i: usize| opened.contains(&i);
    let same = |v: &Verdict| v.proxy_pid == old.proxy_pid && v.life.state.is_some();
    let on_target: Vec<(usize, &Verdict)> = current
        .iter()
        .enumerate()
        .filter(|(_, v)| same(v) && v.target == old.target && v.cause != old.cause)
        .collect();
    on_target
        .iter()
        .find(|(i, _)| fresh(*i))
        .or_else(|| on_target.first())
        .map(|(_, v)| *v)
        .or_else(|| {
            current.iter().enumerate().find_map(|(i, v)| {
                (fresh(i)
                    && same(v)
                    && old.upstream_pid.is_some()
                    && v.upstream_pid == old.upstream_pid)
                    .then_some(v)
            })
        })
}

/// Causes a listener on the target ends: nothing listened there.
fn ended_by_listener(c: Cause) -> bool {
    matches!(
        c,
        Cause::SocketMissing
            | Cause::StaleSocket
            | Cause::UpstreamNotListening
            | Cause::WrongTarget
            | Cause::CrashOnBoot
            | Cause::UpstreamRestarting
    )
}

impl Engine {
    /// The verdicts now, each with its id and state, and the ones superseded since the last call.
    /// The states follow from the stored events and facts only (see [`VerdictState`]); the
    /// caller calls this once per tick.
    pub fn advance(&mut self, now_mono_ns: u64) -> Advance {
        let current = self.verdicts(now_mono_ns);
        let mut ledger = std::mem::take(&mut self.ledger);
        let out = ledger.step(current, now_mono_ns, |v| self.works_again(v));
        self.ledger = ledger;
        out
    }

    /// The facts read after a verdict's last symptom that say its target works again: a listener
    /// (not the proxy's own) serving the target, for the causes where nothing listened; for a
    /// permission denial, a path walk the failing worker's credentials now pass, ending at a
    /// socket someone listens on. None for the other causes (a listener proves nothing about a
    /// full backlog, a reset or a timeout) and for worker deaths.
    fn works_again(&self, v: &Verdict) -> Option<String> {
        let st = &self.state;
        let after = v.last_seen_ns;
        let fresh_listeners = st.listeners_ns.is_some_and(|t| t > after);
        let view = View::new(st, &self.cfg);
        // A chrooted proxy reaches a unix path under its chroot only.
        let seen = match (parse(&v.target), view.chroot(v.proxy_pid)) {
            (Target::UnixPath(p), Some(root)) => format!("unix:{root}{p}"),
            _ => v.target.clone(),
        };
        let listener = || {
            st.listeners_for(v.proxy_pid).find(|l| {
                covers(&l.target, &seen)
                    && l.pid
                        .is_none_or(|p| !view.is_proxy(p, l.comm.as_deref().unwrap_or("")))
            })
        };
        let quiet = fmt_dur(RESOLVE_QUIET_NS);
        if ended_by_listener(v.cause) {
            if !fresh_listeners || matches!(parse(&v.target), Target::Other) {
                return None;
            }
            let l = listener()?;
            let who = l
                .pid
                .map(|p| format!(" by pid {p} ({})", l.comm.as_deref().unwrap_or("?")))
                .unwrap_or_default();
            return Some(format!(
                "resolved: no failure for {quiet} since {}, and {} is listened on{who} again (seen at {})",
                fmt_ns(after),
                l.target,
                fmt_ns(st.listeners_ns.unwrap_or(after))
            ));
        }
        if v.cause != Cause::SocketPermission {
            return None;
        }
        let Target::UnixPath(path) = parse(&v.target) else {
            return None;
        };
        let (read_ns, info) = st.paths.get(path).filter(|(ns, _)| *ns > after)?;
        let creds = self.worker_creds(&v.target)?;
        let socket = info.components.last().is_some_and(PathComponent::is_socket);
        if !matches!(walk(info, &creds), Walk::Allowed) || !socket || listener().is_none() {
            return None;
        }
        Some(format!(
            "resolved: no failure for {quiet} since {}, and the path walk at {} lets uid {} gid {} reach {path}",
            fmt_ns(after),
            fmt_ns(*read_ns),
            creds.uid,
            creds.gid
        ))
    }

    /// The credentials of the worker whose connects to `target` failed last.
    fn worker_creds(&self, target: &str) -> Option<Creds> {
        let (k, g) = self
            .state
            .failures
            .iter()
            .filter(|(k, _)| k.target == target)
            .max_by_key(|(_, g)| g.last_ns)?;
        Some(
            self.state
                .procs
                .get(&k.pid)
                .and_then(|p| p.creds.clone())
                .unwrap_or_else(|| Creds {
                    uid: g.uid,
                    gid: g.gid,
                    groups: vec![g.gid],
                }),
        )
    }
}
