//! Upstream workers dying mid-request: killed by their master for a timeout
//! (`worker-timeout`), by the OOM killer (`worker-oom-killed`), or by a fault
//! (`worker-crashed`). The proxy then reads a closed or reset connection ("upstream prematurely
//! closed connection"), which no failed connect shows: these verdicts stand on the death itself
//! when the victim is an upstream.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::report::Part;
use super::state::{ExitRecord, OomRecord, SignalRecord};
use super::target::covers;
use super::text::{fmt_dur, fmt_ns, mib_bytes, mib_kb, signal_label};
use super::view::{ProxyId, ProxyKey, View};
use crate::catalog::{AppCommand, Cause};

const SIGABRT: i32 = 6;
const SIGKILL: i32 = 9;
/// Signals of a fault (the kernel's, with `si_code > 0`) or a crash when they end a process.
const CRASH_SIGNALS: [i32; 5] = [4, 7, 8, 11, 31];
/// A SIGKILL this soon after the SIGABRT is the same timeout kill (gunicorn escalates).
const ESCALATE_NS: u64 = 30_000_000_000;
/// Evidence lines listing individual deaths.
const MAX_LISTED: usize = 4;

/// Which proxy and target a dead upstream worker's verdict names: the target its family
/// serves (the proxy that failed to connect there, else any known proxy), or the process.
fn who(v: &View<'_>, pid: u32, comm: &str) -> (ProxyId, String) {
    let root = v.family_root(pid);
    let served = v.served_targets(pid);
    if let Some(t) = served.first() {
        let proxy =
            v.st.failures
                .iter()
                .filter(|(k, g)| covers(t, &k.target) && v.symptom(k.pid, &g.comm, &k.target))
                .max_by_key(|(_, g)| g.last_ns)
                .map(|(k, g)| v.proxy_id(k.pid, &g.comm));
        return (proxy.unwrap_or_else(|| v.any_proxy()), (*t).to_owned());
    }
    let name = match v.comm(root) {
        "" => comm,
        c => c,
    };
    (v.any_proxy(), format!("{name} pid {root}"))
}

/// Accumulates incidents into one part per (proxy, target).
struct Parts {
    cause: Cause,
    by: BTreeMap<(ProxyKey, String), Part>,
    listed: BTreeMap<(ProxyKey, String), usize>,
}

impl Parts {
    fn new(cause: Cause) -> Self {
        Self {
            cause,
            by: BTreeMap::new(),
            listed: BTreeMap::new(),
        }
    }

    /// Counts one incident and lists its evidence (the first few per part).
    fn add(
        &mut self,
        (proxy, target): (ProxyId, String),
        ns: u64,
        lines: Vec<String>,
    ) -> &mut Part {
        let key = (proxy.key.clone(), target.clone());
        let p = self.by.entry(key.clone()).or_insert_with(|| {
            let mut p = Part::new(self.cause, proxy, &target);
            p.first_ns = ns;
            p
        });
        p.count += 1;
        p.first_ns = p.first_ns.min(ns);
        p.last_ns = p.last_ns.max(ns);
        let listed = self.listed.entry(key).or_default();
        if *listed < MAX_LISTED {
            p.evidence.extend(lines);
        }
        *listed += 1;
        p
    }

    fn finish(self, out: &mut Vec<Part>, f: impl Fn(&mut Part)) {
        for (key, mut p) in self.by {
            let n = self.listed.get(&key).copied().unwrap_or(0);
            if n > MAX_LISTED {
                p.evidence.push(format!("... {} more", n - MAX_LISTED));
            }
            f(&mut p);
            out.push(p);
        }
    }
}

/// The victims of the three kinds, so one death is one verdict.
#[derive(Default)]
pub(crate) struct Victims {
    timed_out: BTreeSet<u32>,
    oom: BTreeSet<u32>,
}

/// Every worker-death part.
pub(crate) fn parts(v: &View<'_>, out: &mut Vec<Part>) {
    let mut victims = Victims::default();
    timeouts(v, &mut victims, out);
    ooms(v, &mut victims, out);
    crashes(v, &victims, out);
}

/// A master's SIGABRT to a worker (gunicorn's WORKER TIMEOUT), maybe followed by SIGKILL.
fn timeouts(v: &View<'_>, victims: &mut Victims, out: &mut Vec<Part>) {
    let mut incidents: BTreeMap<u32, (&SignalRecord, Option<&SignalRecord>)> = BTreeMap::new();
    for s in &v.st.signals {
        if s.sig != SIGABRT || !s.effective() || s.sender_pid == s.target_pid || s.sender_pid == 0 {
            continue;
        }
        let parent = v.proc(s.target_pid).and_then(|p| p.ppid) == Some(s.sender_pid);
        let sender_ok = parent || v.is_upstream_broad(s.sender_pid);
        if sender_ok && v.is_upstream(s.target_pid) {
            incidents.entry(s.target_pid).or_insert((s, None));
        }
    }
    for s in &v.st.signals {
        if s.sig == SIGKILL
            && let Some((abrt, kill)) = incidents.get_mut(&s.target_pid)
            && kill.is_none()
            && s.ns >= abrt.ns
            && s.ns - abrt.ns <= ESCALATE_NS
        {
            *kill = Some(s);
        }
    }
    let mut parts = Parts::new(Cause::WorkerTimeout);
    let mut masters: BTreeMap<(ProxyKey, String), u32> = BTreeMap::new();
    for (&victim, &(abrt, kill)) in &incidents {
        victims.timed_out.insert(victim);
        let mut line = format!(
            "{} pid {} sent SIGABRT to worker {} pid {victim} at {} (gunicorn's WORKER TIMEOUT)",
            abrt.sender_comm,
            abrt.sender_pid,
            abrt.target_comm,
            fmt_ns(abrt.ns)
        );
        if let Some(k) = kill {
            let _ = write!(line, ", then SIGKILL {} later", fmt_dur(k.ns - abrt.ns));
        }
        if let Some(e) = v.exit_of(victim).filter(|e| e.ns >= abrt.ns) {
            let _ = write!(line, "; it {}", exit_words(e));
        }
        let id = who(v, victim, &abrt.target_comm);
        masters.insert((id.0.key.clone(), id.1.clone()), abrt.sender_pid);
        parts.add(id, abrt.ns, vec![line]).upstream_pid = Some(victim);
    }
    parts.finish(out, |p| {
        let master = masters.get(&(p.proxy.key.clone(), p.target.clone())).copied().unwrap_or(0);
        let timeout = v.proc(master).and_then(|m| timeout_flag(&m.cmdline));
        let t = timeout.unwrap_or("30 (the default)");
        p.evidence.push(format!("--timeout is {t} s; nginx's proxy_read_timeout defaults to 60 s, so nginx sees the \
                                 connection close first and answers 502 (\"upstream prematurely closed connection\")"));
        p.summary = format!(
            "the app server's master killed {} worker(s) that ran past its --timeout ({t} s)",
            p.count
        );
        p.fix = "make the slow view faster or move the work to a background job; or raise gunicorn --timeout above \
                 the slowest legitimate request (or use async/threaded workers) and keep proxy_read_timeout at \
                 least as long"
        .into();
    });
}

/// `--timeout N` / `-t N` / `--timeout=N` from a gunicorn command line (the last one, as
/// gunicorn takes it: the catalog's parser, the same `gwtrace check` reads).
fn timeout_flag(cmdline: &str) -> Option<&str> {
    AppCommand::parse(cmdline)?.gunicorn_timeout()
}

/// "exited with code 1", "died of SIGSEGV (11), core dumped".
fn exit_words(e: &ExitRecord) -> String {
    let core = if e.core_dumped { ", core dumped" } else { "" };
    match e.signal {
        Some(s) => format!("died of {}{core} at {}", signal_label(s), fmt_ns(e.ns)),
        None => format!(
            "exited with code {}{core} at {}",
            e.exit_code.unwrap_or(0),
            fmt_ns(e.ns)
        ),
    }
}

/// OOM kills of upstream processes, with their memory cgroup's limit.
fn ooms(v: &View<'_>, victims: &mut Victims, out: &mut Vec<Part>) {
    let mut parts = Parts::new(Cause::WorkerOomKilled);
    let mut limits: BTreeMap<(ProxyKey, String), String> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for o in &v.st.ooms {
        if !v.is_upstream(o.victim_pid) || !seen.insert(o.victim_pid) {
            continue;
        }
        victims.oom.insert(o.victim_pid);
        let (cg, lines) = oom_lines(v, o);
        let id = who(v, o.victim_pid, &o.victim_comm);
        limits.insert((id.0.key.clone(), id.1.clone()), cg);
        parts.add(id, o.ns, lines).upstream_pid = Some(o.victim_pid);
    }
    parts.finish(out, |p| {
        let cg = limits.get(&(p.proxy.key.clone(), p.target.clone())).cloned().unwrap_or_default();
        p.summary = format!("the OOM killer killed {} upstream worker(s) ({cg})", p.count);
        p.fix = "raise the memory limit (MemoryMax= in the unit, docker --memory) if the app needs it, or find the \
                 leak; recycle workers with gunicorn --max-requests N --max-requests-jitter M; use fewer workers"
        .into();
    });
}

/// The memory cgroup summary and the evidence lines of one OOM kill.
fn oom_lines(v: &View<'_>, o: &OomRecord) -> (String, Vec<String>) {
    let mut lines = vec![format!(
        "OOM killer chose {} pid {} at {}: anon-rss {}, file-rss {}, shmem-rss {}, total-vm {}",
        o.victim_comm,
        o.victim_pid,
        fmt_ns(o.ns),
        mib_kb(o.anon_rss_kb),
        mib_kb(o.file_rss_kb),
        mib_kb(o.shmem_rss_kb),
        mib_kb(o.total_vm_kb)
    )];
    if o.trigger_pid != 0 && o.trigger_pid != o.victim_pid {
        lines.push(format!(
            "the allocation of {} pid {} triggered it",
            o.trigger_comm, o.trigger_pid
        ));
    }
    let cg = match v.st.memcgs.get(&o.victim_pid) {
        Some((_, m)) => match m.limit_bytes {
            Some(l) => format!("memory cgroup {} limited to {}", m.cgroup, mib_bytes(l)),
            None => format!(
                "memory cgroup {} has no limit: the whole system ran out",
                m.cgroup
            ),
        },
        None => match v
            .proc(o.victim_pid)
            .map(|p| p.cgroup.as_str())
            .filter(|c| !c.is_empty())
        {
            Some(c) => format!("cgroup {c}, limit unknown"),
            None => "memory cgroup unknown".to_owned(),
        },
    };
    lines.push(cg.clone());
    (cg, lines)
}

/// Faults of upstream processes: a crash signal ending them, a core dump, or the kernel's
/// fault signal.
fn crashes(v: &View<'_>, victims: &Victims, out: &mut Vec<Part>) {
    let excluded = |pid: u32| victims.timed_out.contains(&pid) || victims.oom.contains(&pid);
    let mut found: BTreeMap<u32, (u64, String, String)> = BTreeMap::new();
    for e in &v.st.exits {
        let pid = e.proc.pid;
        let crash_sig = e.signal.is_some_and(|s| CRASH_SIGNALS.contains(&s));
        let core = e.core_dumped && e.signal != Some(SIGKILL);
        if !(crash_sig || core) || excluded(pid) || stopped_by_other(v, e) || !v.is_upstream(pid) {
            continue;
        }
        found.insert(
            pid,
            (
                e.ns,
                e.proc.comm.clone(),
                format!("{} pid {pid} {}", e.proc.comm, exit_words(e)),
            ),
        );
    }
    for s in &v.st.signals {
        if !CRASH_SIGNALS.contains(&s.sig) || s.code <= 0 || excluded(s.target_pid) {
            continue;
        }
        if !v.is_upstream(s.target_pid) {
            continue;
        }
        let line = format!(
            "the kernel sent {} to {} pid {} at {} (fault, si_code {})",
            signal_label(s.sig),
            s.target_comm,
            s.target_pid,
            fmt_ns(s.ns),
            s.code
        );
        found
            .entry(s.target_pid)
            .and_modify(|f| f.2 = format!("{}; {line}", f.2))
            .or_insert((s.ns, s.target_comm.clone(), line));
    }
    let mut parts = Parts::new(Cause::WorkerCrashed);
    for (pid, (ns, comm, line)) in found {
        parts.add(who(v, pid, &comm), ns, vec![line]).upstream_pid = Some(pid);
    }
    parts.finish(out, |p| {
        p.summary = format!("{} upstream worker(s) crashed (a fault in the app or a native extension)", p.count);
        p.fix = "find the crash: enable faulthandler (PYTHONFAULTHANDLER=1) or read the core (coredumpctl gdb); \
                 update or rebuild the C extension involved; check for bad memory (dmesg)"
        .into();
    });
}

/// Was an exit caused by another process's stop signal (SIGQUIT/SIGABRT/SIGTERM... from the
/// master), which is not a crash even if it dumped core?
fn stopped_by_other(v: &View<'_>, e: &ExitRecord) -> bool {
    v.st.signals.iter().any(|s| {
        s.target_pid == e.proc.pid
            && s.sender_pid != e.proc.pid
            && s.code <= 0
            && s.effective()
            && matches!(s.sig, 1 | 2 | 3 | 6 | 9 | 15)
            && s.ns <= e.ns
            && e.ns - s.ns <= 60_000_000_000
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_from_command_line() {
        assert_eq!(timeout_flag("gunicorn --timeout 5 app:app"), Some("5"));
        assert_eq!(timeout_flag("gunicorn -t 7 app:app"), Some("7"));
        assert_eq!(timeout_flag("gunicorn --timeout=9 app:app"), Some("9"));
        assert_eq!(timeout_flag("gunicorn app:app"), None);
        // The last occurrence wins, as in gunicorn (and in `gwtrace check`).
        assert_eq!(
            timeout_flag("/venv/bin/python /venv/bin/gunicorn -t 5 --timeout 120 app:app"),
            Some("120")
        );
    }
}
