//! Causes of a proxy's failed connects, by errno and target kind: the socket is missing, stale,
//! denied, full; nothing listens; the proxy points at the wrong place; the network refuses.
//! A failure group whose outage an upstream restart or crash loop explains is handed to
//! [`super::lifecycle`] instead.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::deaths;
use super::lifecycle::{
    CrashLoop, app_exec_failure, crash_part, find_restart, loop_for, restart_part,
};
use super::perm::{Walk, comp_label, creds_label, denial_fix, denial_line, file_owner, walk};
use super::report::Part;
use super::state::{Creds, Proc};
use super::target::{Target, covers, parse, same_host};
use super::text::{errno_label, fmt_ns, mode_string};
use super::view::{ProxyId, ProxyKey, View, app_server_of};
use crate::catalog::Cause;
use crate::facts::IdNames;
use crate::facts::{Listener, PathInfo};

const ENOENT: i32 = 2;
const EPERM: i32 = 1;
const EAGAIN: i32 = 11;
const EACCES: i32 = 13;
const ENOTDIR: i32 = 20;
const EPROTOTYPE: i32 = 91;
const EADDRNOTAVAIL: i32 = 99;
const ENETDOWN: i32 = 100;
const ENETUNREACH: i32 = 101;
const ECONNRESET: i32 = 104;
const ETIMEDOUT: i32 = 110;
const ECONNREFUSED: i32 = 111;
const EHOSTUNREACH: i32 = 113;

/// The failed connects of one proxy (all its workers) to one target with one errno.
#[derive(Clone, Debug)]
pub(crate) struct Agg {
    pub proxy: ProxyId,
    pub target: String,
    pub errno: i32,
    pub abandoned: bool,
    pub source: String,
    pub count: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Latest failure times (bounded), sorted.
    pub recent: Vec<u64>,
    /// The worker that failed last, with its credentials from the event.
    pub worker: u32,
    pub worker_comm: String,
    pub uid: u32,
    pub gid: u32,
    /// The name of `uid` on the worker's system (facts `names`), when known.
    pub user: Option<String>,
    /// Workers that failed.
    pub workers: BTreeSet<u32>,
    /// Set when the failure is predicted by `gwtrace check` rather than observed.
    pub check: Option<CheckCtx>,
}

/// What `gwtrace check` knows about a connect it predicts (no kernel event behind it).
#[derive(Clone, Debug, Default)]
pub(crate) struct CheckCtx {
    /// The worker's credentials (from the running worker, or the config's `user`).
    pub creds: Creds,
    /// How long gwtrace's own probe connect waited (TCP to a remote address), in ms.
    pub probe_timeout_ms: Option<u64>,
    /// Listeners serving other targets of the same proxy: not candidates for `wrong-target`.
    pub served_elsewhere: Vec<String>,
}

impl Agg {
    /// How many of the failures fell in `[lo, hi]`, and the first and last of them.
    fn split(&self, lo: u64, hi: u64) -> (u64, u64, u64) {
        let inside: Vec<u64> = self
            .recent
            .iter()
            .copied()
            .filter(|t| (lo..=hi).contains(t))
            .collect();
        let mut n = inside.len() as u64;
        // Failures older than the kept timestamps lie between first_ns and the oldest kept one.
        let dropped = self.count.saturating_sub(self.recent.len() as u64);
        let oldest_kept = self.recent.first().copied().unwrap_or(self.first_ns);
        if dropped > 0 && lo <= self.first_ns && hi >= oldest_kept {
            n += dropped;
        }
        let first = if n > inside.len() as u64 {
            self.first_ns
        } else {
            inside.first().copied().unwrap_or(0)
        };
        (n, first, inside.last().copied().unwrap_or(0))
    }

    /// The part's counters for the whole group.
    fn fill(&self, p: &mut Part) {
        p.count = self.count;
        p.first_ns = self.first_ns;
        p.last_ns = self.last_ns;
    }
}

/// Groups the stored failures of proxies by (proxy master, target, errno, abandoned).
pub(crate) fn aggregate(v: &View<'_>) -> Vec<Agg> {
    let mut out: BTreeMap<(ProxyKey, String, i32, bool), Agg> = BTreeMap::new();
    for (k, g) in &v.st.failures {
        if !v.symptom(k.pid, &g.comm, &k.target) {
            continue;
        }
        let proxy = v.proxy_id(k.pid, &g.comm);
        let key = (proxy.key.clone(), k.target.clone(), k.errno, k.abandoned);
        let a = out.entry(key).or_insert_with(|| Agg {
            proxy,
            target: k.target.clone(),
            errno: k.errno,
            abandoned: k.abandoned,
            source: g.source.clone(),
            count: 0,
            first_ns: g.first_ns,
            last_ns: 0,
            recent: Vec::new(),
            worker: k.pid,
            worker_comm: g.comm.clone(),
            uid: g.uid,
            gid: g.gid,
            user: None,
            workers: BTreeSet::new(),
            check: None,
        });
        a.count += g.count;
        a.first_ns = a.first_ns.min(g.first_ns);
        if g.last_ns >= a.last_ns {
            a.last_ns = g.last_ns;
            a.worker = k.pid;
            a.worker_comm.clone_from(&g.comm);
            a.uid = g.uid;
            a.gid = g.gid;
            a.source.clone_from(&g.source);
        }
        a.recent.extend(g.recent.iter().copied());
        a.workers.insert(k.pid);
    }
    let view = v;
    let mut v: Vec<Agg> = out.into_values().collect();
    for a in &mut v {
        a.user = names(view, a)
            .and_then(|n| n.user(a.uid))
            .map(str::to_owned);
        a.recent.sort_unstable();
        // A proxy known only by name shows its lowest worker pid: stable across calls (the
        // printer keys on it) and independent of hash order.
        if let (ProxyKey::Name(_), Some(&low)) = (&a.proxy.key, a.workers.first()) {
            a.proxy.pid = low;
        }
    }
    v
}

/// The verdict parts for one failure group.
pub(crate) fn classify(v: &View<'_>, loops: &[CrashLoop<'_>], a: &Agg) -> Vec<Part> {
    let t = parse(&a.target);
    let unix = t.is_unix();
    if a.abandoned || a.errno == ETIMEDOUT {
        return vec![timeout(v, a)];
    }
    if a.errno == ECONNREFUSED
        && matches!(t, Target::Inet(..))
        && let Some(d) = netfilter_drops(v, a)
    {
        return vec![firewall_reject(v, a, &d)];
    }
    match (a.errno, t) {
        (ENOENT | ENOTDIR, Target::UnixPath(_) | Target::UnixAbstract(_))
        | (ECONNREFUSED, Target::UnixAbstract(_) | Target::Inet(..)) => {
            outage(v, loops, a, nothing_there)
        }
        (ECONNREFUSED, Target::UnixPath(_)) => outage(v, loops, a, stale_socket),
        (EACCES | EPERM, _) if unix => vec![socket_permission(v, a)],
        (EACCES | EPERM, _) => vec![tcp_denied(a)],
        (EAGAIN, _) if unix => vec![backlog_full(v, a)],
        (EAGAIN | EADDRNOTAVAIL, _) => vec![port_exhaustion(a)],
        (ENETUNREACH | EHOSTUNREACH | ENETDOWN, _) => vec![unreachable(a)],
        (ECONNRESET, _) => vec![reset(a)],
        (EPROTOTYPE, _) if unix => vec![wrong_type(a)],
        _ => Vec::new(),
    }
}

/// A part with the group's proxy, target and counters.
fn part(cause: Cause, a: &Agg) -> Part {
    let mut p = Part::new(cause, a.proxy.clone(), &a.target);
    a.fill(&mut p);
    p.evidence.push(symptom_line(a));
    p
}

/// `nginx pid 1235 (uid 33): connect() to unix:/run/app.sock failed with ENOENT (2) 17× [syscall] ...`.
fn symptom_line(a: &Agg) -> String {
    if let Some(c) = &a.check {
        return format!(
            "checked now: a connect() by {} ({}) to {} would fail with {}",
            worker_label(a),
            creds_label(&c.creds, None),
            a.target,
            errno_label(a.errno)
        );
    }
    let others = a.workers.len().saturating_sub(1);
    let others = if others > 0 {
        format!(" (and {others} other worker(s))")
    } else {
        String::new()
    };
    format!(
        "{} pid {}{others} ({}): connect() to {} failed with {} {}× [{}] from {} to {}",
        a.worker_comm,
        a.worker,
        a.user.clone().unwrap_or_else(|| format!("uid {}", a.uid)),
        a.target,
        errno_label(a.errno),
        a.count,
        a.source,
        fmt_ns(a.first_ns),
        fmt_ns(a.last_ns)
    )
}

type Base = fn(&View<'_>, &Agg) -> Part;

/// "Nothing serves the target" failures: a restart that came back explains the ones in its
/// window; a crash loop explains them all; else the base cause (`wrong-target` first).
fn outage(v: &View<'_>, loops: &[CrashLoop<'_>], a: &Agg, base: Base) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = a.clone();
    // A crash loop binds and loses the socket over and over: each short-lived listener is not a
    // restart that came back.
    let crash_loop = loop_for(loops, &a.target, a.first_ns, a.last_ns).is_some();
    if !crash_loop && let Some(r) = find_restart(v, &a.target, a.worker) {
        let (lo, hi) = r.window();
        let (n, first, last) = a.split(lo, hi);
        if n > 0 {
            let mut during = a.clone();
            (during.count, during.first_ns, during.last_ns) = (n, first, last);
            // A crashed, OOM-killed or master-killed app that its supervisor restarted: the
            // refusals are that death's consequence, counted in its verdict.
            let p = deaths::consequence(
                v,
                &r,
                a.proxy.clone(),
                &a.target,
                symptom_line(&during),
                (n, first, last),
            )
            .unwrap_or_else(|| {
                let mut p = restart_part(v, &r, a.proxy.clone(), &a.target, (n, first, last));
                p.evidence.insert(0, symptom_line(&during));
                p
            });
            parts.push(p);
            rest.count -= n.min(rest.count);
            rest.recent.retain(|t| !(lo..=hi).contains(t));
            if rest.count == 0 {
                return parts;
            }
            rest.first_ns = rest.recent.first().copied().unwrap_or(a.first_ns);
            rest.last_ns = rest.recent.last().copied().unwrap_or(a.last_ns);
        }
    }
    if let Some(l) = loop_for(loops, &rest.target, rest.first_ns, rest.last_ns)
        && !listener_outside_loop(v, rest.worker, &rest.target, l)
    {
        let mut p = crash_part(
            v,
            l,
            rest.proxy.clone(),
            &rest.target,
            &nothing_listens_line(v, rest.worker, &rest.target),
        );
        rest.fill(&mut p);
        p.evidence.insert(0, symptom_line(&rest));
        if l.exec_fail.is_none() {
            p.evidence.extend(exec_failures_line(v, &rest));
        }
        parts.push(p);
        return parts;
    }
    // A refused unix path has a file there: stale, not misdirected.
    let misdirect =
        !(rest.errno == ECONNREFUSED && matches!(parse(&rest.target), Target::UnixPath(_)));
    let mut p = misdirect
        .then(|| wrong_target(v, &rest))
        .flatten()
        .unwrap_or_else(|| base(v, &rest));
    p.evidence.extend(exec_failures_line(v, &rest));
    parts.push(p);
    parts
}

/// Failed execs of an app server around the failures: the service cannot even start
/// (a wrong path or virtualenv in `ExecStart=`).
fn exec_failures_line(v: &View<'_>, a: &Agg) -> Option<String> {
    let lo = a.first_ns.saturating_sub(300_000_000_000);
    let hi = a.last_ns.saturating_add(60_000_000_000);
    let fails: Vec<_> =
        v.st.exec_failures
            .iter()
            .filter(|f| (lo..=hi).contains(&f.ns) && app_exec_failure(f))
            .collect();
    let last = fails.last()?;
    Some(format!(
        "exec of {} failed with {} {}× (pid {} {}), the last at {}: the app cannot even start (wrong path or \
         virtualenv in ExecStart?)",
        last.filename,
        errno_label(last.errno),
        fails.len(),
        last.pid,
        last.comm,
        fmt_ns(last.ns)
    ))
}

/// Does a live process listen on (a listener covering) the target now?
fn live_listener(v: &View<'_>, worker: u32, target: &str) -> bool {
    covering(v, worker, target).next().is_some()
}

/// A live listener on the target that is not the crash loop's own: an instance of the loop
/// binds the socket for the fraction of a second it lives, and a listener snapshot can catch it.
fn listener_outside_loop(v: &View<'_>, worker: u32, target: &str, l: &CrashLoop<'_>) -> bool {
    covering(v, worker, target).any(|li| {
        li.pid.is_none_or(|pid| {
            let fallback = Proc {
                pid,
                ..Proc::default()
            };
            v.family_key(pid, &fallback) != l.family
        })
    })
}

/// Current listeners covering the target whose owner is not known dead, that the failing
/// `worker` reaches (in its network namespace).
fn covering<'a>(
    v: &'a View<'_>,
    worker: u32,
    target: &'a str,
) -> impl Iterator<Item = &'a Listener> + 'a {
    v.st.listeners_for(worker).filter(move |l| {
        covers(&l.target, target)
            && l.pid
                .is_none_or(|p| v.proc(p).is_none_or(|q| q.exited_ns.is_none()))
    })
}

fn nothing_listens_line(v: &View<'_>, worker: u32, target: &str) -> String {
    let net =
        v.st.net_ns_of(worker)
            .map(|n| format!(" in its network namespace net:[{n}]"))
            .unwrap_or_default();
    match v.st.listeners_ns {
        Some(ns) => format!(
            "no process listens on {target}{net} (listener snapshot at {}, {} socket(s))",
            fmt_ns(ns),
            v.st.listeners_for(worker).count()
        ),
        None => format!("no listener facts received: cannot tell who listens on {target}"),
    }
}

/// "gunicorn pid 42" for a listener's owner.
fn owner_label(v: &View<'_>, l: &Listener) -> String {
    let comm = l.comm.clone().filter(|c| !c.is_empty()).or_else(|| {
        l.pid
            .map(|p| v.comm(p).to_owned())
            .filter(|c| !c.is_empty())
    });
    match (comm, l.pid) {
        (Some(c), Some(p)) => format!("{c} pid {p}"),
        (None, Some(p)) => format!("pid {p}"),
        (Some(c), None) => c,
        (None, None) => "a process".to_owned(),
    }
}

/// The proxy pointing at a target nothing serves while an upstream listens nearby: on another
/// unix path, or (same host) another port.
fn wrong_target(v: &View<'_>, a: &Agg) -> Option<Part> {
    let want = parse(&a.target);
    if let Target::UnixPath(p) = want
        && v.st
            .paths
            .get(p)
            .is_some_and(|(_, info)| info.components.last().is_some_and(|c| c.exists))
    {
        // Something is there: a stale or foreign file, not a wrong path.
        return None;
    }
    if live_listener(v, a.worker, &a.target) {
        // A live process listens on the very target (its file deleted, or bound in another
        // mount namespace): the proxy points at the right place.
        return None;
    }
    let (l, why) = meant_listener(v, a, want)?;
    let mut p = part(Cause::WrongTarget, a);
    let who = owner_label(v, l);
    let proxy = if a.proxy.comm.is_empty() {
        "the proxy"
    } else {
        a.proxy.comm.as_str()
    };
    p.summary = format!(
        "{proxy} connects to {} but the app listens on {}",
        a.target, l.target
    );
    p.evidence.push(format!(
        "{who} listens on {}, {proxy} connects to {}",
        l.target, a.target
    ));
    p.evidence
        .push(nothing_listens_line(v, a.worker, &a.target));
    p.evidence
        .push(format!("why it is the app meant for {}: {why}", a.target));
    if let Some(pid) = l.pid
        && let Some(cmd) = v
            .proc(pid)
            .map(|q| q.cmdline.as_str())
            .filter(|c| !c.is_empty())
    {
        p.evidence.push(format!("its command line: {cmd}"));
    }
    let pass = match parse(&l.target) {
        Target::UnixPath(path) => format!("http://unix:{path}:"),
        _ => format!("http://{}", l.target),
    };
    p.fix = format!(
        "make them agree: proxy_pass {pass} (or the upstream block's server line), or bind the app to {}; \
         then nginx -t && systemctl reload nginx",
        a.target
    );
    Some(p)
}

/// The listener that is the app meant for the target, with the positive evidence for it (its
/// former owner, the former owner's unit, a near miss of path or port); never one that serves
/// another upstream of a proxy on the host.
fn meant_listener<'a>(v: &View<'a>, a: &Agg, want: Target<'_>) -> Option<(&'a Listener, String)> {
    // The target's former owners the failing worker could reach (its network namespace).
    let former: Vec<u32> =
        v.st.owners
            .iter()
            .filter(|(tg, _)| covers(tg, &a.target))
            .flat_map(|(tg, os)| {
                os.iter()
                    .filter(|o| v.st.reaches(a.worker, tg, o.net_ns))
                    .map(|o| o.pid)
            })
            .collect();
    let prior: BTreeSet<u32> = former.iter().map(|&p| v.family_root(p)).collect();
    // The units they ran in (an app restarted on another socket): a service, not a login
    // session's scope (every app started by hand shares one).
    let prior_units: BTreeSet<String> = former
        .iter()
        .filter_map(|&p| v.origin(p)?.unit)
        .filter(|u| u.ends_with(".service"))
        .collect();
    let elsewhere = served_elsewhere(v, a);
    let mut best: Option<(i32, &Listener, String)> = None;
    for l in v.st.listeners_for(a.worker) {
        let Some(pid) = l.pid else { continue };
        if covers(&l.target, &a.target) || v.is_proxy(pid, v.comm(pid)) {
            continue;
        }
        if elsewhere.iter().any(|t| covers(&l.target, t)) {
            // It serves another upstream of this proxy (or of another proxy on the host): another
            // site's app, never a candidate for this one.
            continue;
        }
        if v.proc(pid).is_some_and(|q| q.exited_ns.is_some()) {
            continue;
        }
        if matches!(want, Target::Inet(..)) && v.st.net_ns_of(pid) != v.st.net_ns_of(a.worker) {
            // A TCP target is in the proxy's own network namespace: an app living in another
            // one is not the app it meant, whatever socket it binds.
            continue;
        }
        let lt = parse(&l.target);
        let app = v.app_lineage(pid).is_some()
            || l.comm
                .as_deref()
                .and_then(crate::catalog::app_server_name)
                .is_some();
        let was_here = prior.contains(&v.family_root(pid));
        if !app && !was_here {
            continue;
        }
        let near = match want {
            Target::Inet(..) => lt.is_unix() || same_host(&l.target, &a.target),
            _ => lt.is_unix() || matches!(lt, Target::Inet(..)),
        };
        if !near {
            continue;
        }
        // Positive evidence that this listener is the app meant for the target: its former
        // owner, the same unit as the former owner, or a near miss of the path or port.
        let unit = v
            .origin(pid)
            .and_then(|o| o.unit)
            .filter(|u| prior_units.contains(u));
        let miss = near_miss(&l.target, &a.target);
        let why = if was_here {
            format!("{} served {} before", owner_label(v, l), a.target)
        } else if let Some(u) = &unit {
            format!(
                "{} runs in {u}, the unit that served {} before",
                owner_label(v, l),
                a.target
            )
        } else if let Some(m) = &miss {
            format!("a near miss: {m}")
        } else {
            continue;
        };
        let mut score = i32::from(was_here) * 8 + i32::from(unit.is_some()) * 4;
        score += i32::from(miss.is_some()) * 2 + i32::from(app);
        score += i32::from(lt.is_unix() == want.is_unix());
        if best
            .as_ref()
            .is_none_or(|(s, b, _)| score > *s || (score == *s && l.target < b.target))
        {
            best = Some((score, l, why));
        }
    }
    best.map(|(_, l, why)| (l, why))
}

/// The targets this proxy (or another proxy on the host) is known to use besides this one:
/// from `gwtrace check`, else from the proxies' configurations.
fn served_elsewhere(v: &View<'_>, a: &Agg) -> Vec<String> {
    if let Some(c) = &a.check {
        return c.served_elsewhere.clone();
    }
    v.st.proxy_configs
        .values()
        .flat_map(|c| c.targets.iter())
        .filter(|t| !covers(t, &a.target) && !covers(&a.target, t))
        .cloned()
        .collect()
}

/// How a listener nearly matches a target, if it does: the same socket file name in another
/// directory, another socket in the same directory, the same port on another address, a port
/// one digit off.
fn near_miss(listener: &str, target: &str) -> Option<String> {
    match (parse(listener), parse(target)) {
        (Target::UnixPath(x), Target::UnixPath(y)) => {
            let (dx, fx) = x.rsplit_once('/').unwrap_or(("", x));
            let (dy, fy) = y.rsplit_once('/').unwrap_or(("", y));
            if fx == fy {
                Some(format!(
                    "the same socket name {fx} in {dx}/ instead of {dy}/"
                ))
            } else if dx == dy {
                Some(format!("{fx} instead of {fy}, in the same directory {dy}/"))
            } else {
                None
            }
        }
        (Target::Inet(_, p), Target::Inet(_, q)) if p == q => {
            Some(format!("the same port {p} on another address"))
        }
        (Target::Inet(_, p), Target::Inet(_, q)) if one_digit_off(p, q) => {
            Some(format!("port {p} instead of {q}"))
        }
        _ => None,
    }
}

/// Ports of as many digits that differ in one digit (8001 for 8000, 8080 for 8000) or by two
/// swapped neighbours (8800 for 8080).
fn one_digit_off(port: u16, wanted: u16) -> bool {
    let (have, want) = (
        port.to_string().into_bytes(),
        wanted.to_string().into_bytes(),
    );
    if have.len() != want.len() || have == want {
        return false;
    }
    let diff: Vec<usize> = (0..have.len()).filter(|&i| have[i] != want[i]).collect();
    match diff.as_slice() {
        [_] => true,
        &[i, j] => j == i + 1 && have[i] == want[j] && have[j] == want[i],
        _ => false,
    }
}

/// The walk of the target's path, if the facts have it.
fn path_info<'a>(v: &View<'a>, target: &str) -> Option<&'a PathInfo> {
    let Target::UnixPath(p) = parse(target) else {
        return None;
    };
    v.st.paths.get(p).map(|(_, info)| info)
}

/// The latest death of a process that served the target, if seen.
fn last_owner_death(v: &View<'_>, worker: u32, target: &str) -> Option<String> {
    let mut owners: Vec<(u64, u32)> =
        v.st.owners
            .iter()
            .filter(|(t, _)| covers(t, target))
            .flat_map(|(t, os)| {
                os.iter()
                    .filter(|o| v.st.reaches(worker, t, o.net_ns))
                    .map(|o| (o.last_ns, o.pid))
            })
            .collect();
    owners.sort_unstable();
    let dead = owners
        .iter()
        .rev()
        .find_map(|&(_, pid)| v.exit_of(pid).map(|_| pid))?;
    v.death_line(dead)
        .map(|d| format!("its last listener: {d}"))
}

/// Unix ENOENT/ENOTDIR, abstract or TCP refusals: nothing is there to connect to.
fn nothing_there(v: &View<'_>, a: &Agg) -> Part {
    match parse(&a.target) {
        Target::Inet(..) => not_listening(v, a),
        _ => socket_missing(v, a),
    }
}

fn socket_missing(v: &View<'_>, a: &Agg) -> Part {
    let mut p = part(Cause::SocketMissing, a);
    let mut missing_dir: Option<String> = None;
    match (parse(&a.target), path_info(v, &a.target)) {
        (Target::UnixAbstract(name), _) => {
            p.evidence.push(format!(
                "abstract socket @{name}: no process has bound that name"
            ));
        }
        (_, Some(info)) => match info.components.iter().position(|c| !c.exists) {
            // The walk stops at the first missing component: a directory when it is not the
            // socket path itself.
            Some(i) if info.components[i].path != info.path => {
                let dir = &info.components[i].path;
                let why = if under_run(dir) {
                    " (/run is a tmpfs: directories made by hand are gone after a reboot)"
                } else {
                    ""
                };
                p.evidence
                    .push(format!("directory {dir} itself does not exist{why}"));
                missing_dir = Some(dir.clone());
            }
            Some(i) => {
                if let Some(parent) = i.checked_sub(1).and_then(|j| info.components.get(j)) {
                    p.evidence.push(format!(
                        "{} exists, but there is no {} in it",
                        comp_label(parent, names(v, a)),
                        info.path
                    ));
                } else {
                    p.evidence.push(format!("{} does not exist", info.path));
                }
            }
            None => p.evidence.push(format!(
                "{} exists now (it was created after the failures, or the proxy runs in another mount namespace)",
                info.path
            )),
        },
        (_, None) => p
            .evidence
            .push("no path facts for the socket path".to_owned()),
    }
    if let (Target::UnixPath(path), Some(root)) = (parse(&a.target), v.chroot(a.worker)) {
        return chroot_part(v, a, p, (root, path));
    }
    if let Some(f) = foreign_listener(v, a) {
        return mount_ns_part(v, a, p, &f);
    }
    let alive = covering(v, a.worker, &a.target)
        .next()
        .map(|l| owner_label(v, l));
    if let Some(owner) = &alive {
        p.evidence.push(format!(
            "{owner} still listens on {}: the file was deleted (a tmp cleaner?) or the proxy sees another mount \
             namespace (PrivateTmp=)",
            a.target
        ));
    } else {
        p.evidence
            .push(nothing_listens_line(v, a.worker, &a.target));
    }
    p.evidence.extend(last_owner_death(v, a.worker, &a.target));
    p.evidence.extend(app_servers_line(v));
    p.summary = match (&missing_dir, &alive) {
        (Some(d), _) => format!(
            "{} does not exist: its directory {d} itself is missing",
            a.target
        ),
        (None, Some(owner)) => format!(
            "{} is gone from the proxy's view while {owner} still listens on it",
            a.target
        ),
        (None, None) if matches!(parse(&a.target), Target::UnixAbstract(_)) => {
            format!("nothing has bound {}: the app is not running", a.target)
        }
        (None, None) => format!(
            "{} does not exist: the app is not running or binds elsewhere",
            a.target
        ),
    };
    p.fix = match missing_dir {
        None if alive.is_some() => "restart the app so it creates the socket again, and keep sockets out of /tmp \
                                    (tmp cleaners, PrivateTmp=): use /run/<app>/ with RuntimeDirectory="
            .into(),
        Some(d) => match runtime_dir(&a.target) {
            Some(name) => format!(
                "have systemd create {d} at every start: RuntimeDirectory={name} in the [Service] section of the \
                 app's unit (owned by its User=; or a tmpfiles.d entry), then systemctl daemon-reload && systemctl \
                 restart <unit> so the app creates the socket"
            ),
            None => format!(
                "create {d} and have it created at every boot (a tmpfiles.d entry), then start the app so it \
                 creates the socket"
            ),
        },
        None => "start the app server (systemctl start <unit>; check it stays up) so it creates the socket, or \
                 point proxy_pass at the socket it really creates"
            .to_owned(),
    };
    p
}

/// Is this path in a runtime directory (`/run`, `/var/run`, or any `.../run/...`)?
fn under_run(path: &str) -> bool {
    path.contains("/run/") || path.ends_with("/run")
}

/// The `RuntimeDirectory=` that creates a unix socket's directory: its path below the last
/// `run/` (`/run/myapp/app.sock` → `myapp`), if it is below one.
fn runtime_dir(target: &str) -> Option<String> {
    let Target::UnixPath(path) = parse(target) else {
        return None;
    };
    let dir = path.rsplit_once('/')?.0;
    let (_, below) = dir.rsplit_once("/run/")?;
    (!below.is_empty()).then(|| below.to_owned())
}

/// A process listening on the target's path in another mount namespace than the proxy's.
struct Foreign<'a> {
    listener: &'a Listener,
    owner_ns: u64,
    proxy_ns: u64,
}

/// The live listener on the target bound in another mount namespace than the failing worker's
/// (a container, a `PrivateTmp=`): the socket file exists, only not where the proxy looks.
fn foreign_listener<'a>(v: &View<'a>, a: &Agg) -> Option<Foreign<'a>> {
    if !matches!(parse(&a.target), Target::UnixPath(_)) {
        return None;
    }
    let worker = std::iter::once(a.worker)
        .chain(a.workers.iter().copied())
        .find(|&w| v.mnt_ns(w).is_some())?;
    v.st.listeners.iter().find_map(|l| {
        let pid = l.pid?;
        if !covers(&l.target, &a.target) || v.proc(pid).is_some_and(|q| q.exited_ns.is_some()) {
            return None;
        }
        let (owner_ns, proxy_ns) = v.foreign_ns(pid, worker)?;
        Some(Foreign {
            listener: l,
            owner_ns,
            proxy_ns,
        })
    })
}

/// `gunicorn pid 42 listens on unix:/x/app.sock in another mount namespace (mnt:[4026532301])`.
fn foreign_line(v: &View<'_>, a: &Agg, f: &Foreign<'_>) -> String {
    format!(
        "{} listens on {} in another mount namespace (mnt:[{}]) than {}'s (mnt:[{}]): the socket file exists \
         only in its own view",
        owner_label(v, f.listener),
        f.listener.target,
        f.owner_ns,
        proxy_name(a),
        f.proxy_ns
    )
}

fn proxy_name(a: &Agg) -> &str {
    if a.proxy.comm.is_empty() {
        &a.worker_comm
    } else {
        &a.proxy.comm
    }
}

/// `socket-missing` because the proxy and the app see different filesystems.
fn mount_ns_part(v: &View<'_>, a: &Agg, mut p: Part, f: &Foreign<'_>) -> Part {
    let proxy = proxy_name(a);
    let owner = owner_label(v, f.listener);
    // The walk was made in the proxy's namespace: say so.
    if let Some(walk) = p.evidence.get_mut(1) {
        *walk = format!("in {proxy}'s mount namespace: {walk}");
    }
    p.evidence.push(foreign_line(v, a, f));
    if let Some(cmd) = f
        .listener
        .pid
        .and_then(|pid| v.proc(pid))
        .map(|q| q.cmdline.as_str())
        .filter(|c| !c.is_empty())
    {
        p.evidence.push(format!("its command line: {cmd}"));
    }
    p.summary = format!(
        "{owner} listens on {} in another mount namespace (mnt:[{}]); {proxy}'s namespace (mnt:[{}]) has no such \
         file: PrivateTmp= or separate container volumes?",
        a.target, f.owner_ns, f.proxy_ns
    );
    p.fix = format!(
        "make {proxy} and the app see the same directory: mount one host directory into both at the same path \
         (docker/podman -v /run/app:/run/app on both containers), or for systemd units keep the socket out of a \
         private /tmp (PrivateTmp=, ProtectSystem=): bind in /run/<app>/ (RuntimeDirectory=) or join the \
         namespaces (JoinsNamespaceOf=)"
    );
    p
}

/// `socket-missing` of a chrooted proxy (haproxy's `chroot`): the path it connects to is
/// `ROOT/PATH` on the host, and the walk was made there; an app listening on the host's `PATH`
/// is outside the chroot, out of the proxy's reach.
fn chroot_part(v: &View<'_>, a: &Agg, mut p: Part, (root, path): (&str, &str)) -> Part {
    let proxy = proxy_name(a);
    if let Some(walk) = p.evidence.get_mut(1) {
        *walk = format!("in {proxy}'s chroot {root}: {walk}");
    }
    p.evidence.push(format!(
        "{proxy} pid {} runs chrooted in {root} (its configuration's chroot): it resolves {path} as {root}{path} \
         on the host",
        a.worker
    ));
    let outside =
        v.st.listeners
            .iter()
            .find(|l| covers(&l.target, &a.target) && l.net_ns.is_none())
            .map(|l| owner_label(v, l));
    if let Some(owner) = &outside {
        p.evidence.push(format!(
            "{owner} listens on the host's {path}, outside the chroot: {proxy} cannot reach it"
        ));
    }
    p.evidence.extend(app_servers_line(v));
    p.summary = match &outside {
        Some(owner) => format!(
            "{} does not exist in {proxy}'s chroot {root}: {owner} listens on the host's {path}, outside it",
            a.target
        ),
        None => format!(
            "{} does not exist in {proxy}'s chroot {root} ({root}{path} on the host): the app is not \
             running or binds outside the chroot",
            a.target
        ),
    };
    p.fix = format!(
        "have the app bind its socket inside the chroot: {root}{path} on the host (the server line keeps {path}); \
         or bind-mount the socket's directory into the chroot; or remove chroot from {proxy}'s global section"
    );
    p
}

/// "app servers running: gunicorn pid 10", or a line saying none is known.
fn app_servers_line(v: &View<'_>) -> Option<String> {
    v.app_servers.get_or_init(|| scan_app_servers(v)).clone()
}

fn scan_app_servers(v: &View<'_>) -> Option<String> {
    let mut apps: Vec<String> =
        v.st.procs
            .values()
            .filter(|q| q.exited_ns.is_none() && app_server_of(q).is_some())
            .filter(|q| {
                q.ppid
                    .is_none_or(|pp| v.proc(pp).is_none_or(|pq| app_server_of(pq).is_none()))
            })
            .map(|q| format!("{} pid {}", q.comm, q.pid))
            .collect();
    apps.sort();
    apps.truncate(4);
    if apps.is_empty() {
        v.st.listeners_ns.map(|_| {
            "no app server process (gunicorn, uvicorn, uwsgi, php-fpm...) is running".to_owned()
        })
    } else {
        Some(format!("app servers running: {}", apps.join(", ")))
    }
}

/// Netfilter drops of the group's SYNs: by one of its workers, to its target, while it failed.
struct Drops {
    count: u64,
    first_ns: u64,
    last_ns: u64,
}

/// How far a drop may lie from the failures it explains: the SYN is dropped inside `connect()`,
/// the failure is reported at once (refused) or after the SYN retries (timeout, ~2 min).
const DROP_SLACK_NS: u64 = 1_000_000_000;
const DROP_TIMEOUT_SLACK_NS: u64 = 180_000_000_000;

fn netfilter_drops(v: &View<'_>, a: &Agg) -> Option<Drops> {
    let lo = a.first_ns.saturating_sub(if a.errno == ECONNREFUSED {
        DROP_SLACK_NS
    } else {
        DROP_TIMEOUT_SLACK_NS
    });
    let hi = a.last_ns.saturating_add(DROP_SLACK_NS);
    let mut out: Option<Drops> = None;
    for d in
        v.st.netfilter_drops.iter().filter(|d| {
            a.workers.contains(&d.pid) && d.target == a.target && (lo..=hi).contains(&d.ns)
        })
    {
        let o = out.get_or_insert(Drops {
            count: 0,
            first_ns: d.ns,
            last_ns: d.ns,
        });
        o.count += d.count;
        o.first_ns = o.first_ns.min(d.ns);
        o.last_ns = o.last_ns.max(d.ns);
    }
    out
}

/// "the kernel freed 3 SYN(s) of nginx to 127.0.0.1:8000 with drop reason `NETFILTER_DROP` ...".
fn drops_line(a: &Agg, d: &Drops) -> String {
    format!(
        "the kernel freed {} SYN(s) of {} to {} with drop reason NETFILTER_DROP (skb:kfree_skb) from {} to {}: \
         a netfilter rule",
        d.count,
        a.worker_comm,
        a.target,
        fmt_ns(d.first_ns),
        fmt_ns(d.last_ns)
    )
}

/// The commands that show the rules, in the proxy's network namespace.
fn ruleset_cmd(a: &Agg) -> String {
    if a.worker == 0 {
        "nft list ruleset (or iptables -S), in the proxy's network namespace".to_owned()
    } else {
        format!(
            "nsenter -t {pid} -n nft list ruleset (or nsenter -t {pid} -n iptables -S): the rules of {}'s network \
             namespace",
            a.worker_comm,
            pid = a.worker
        )
    }
}

/// ECONNREFUSED with the SYN dropped by netfilter: a `reject` rule answered, not a missing
/// listener.
fn firewall_reject(v: &View<'_>, a: &Agg, drops: &Drops) -> Part {
    let mut p = part(Cause::FirewallReject, a);
    p.evidence.push(drops_line(a, drops));
    let listener = covering(v, a.worker, &a.target).next();
    match listener {
        Some(l) => p.evidence.push(format!(
            "{} listens on {}: the connection never reached it",
            owner_label(v, l),
            l.target
        )),
        None => p.evidence.push(format!(
            "no listener on {} in the listener facts (it may listen in another network namespace): the refusal \
             came from the rule, not from a missing listener",
            a.target
        )),
    }
    p.summary = match listener {
        Some(l) => format!(
            "a netfilter rule rejects connects to {} while {} listens there",
            a.target,
            owner_label(v, l)
        ),
        None => format!("a netfilter rule rejects connects to {}", a.target),
    };
    p.fix = format!(
        "find the rule that rejects tcp dport {} ({}: look for `reject` / `REJECT`) and allow the proxy's \
         connects to it; do not restart the app, it is not the problem",
        port_of(&a.target),
        ruleset_cmd(a)
    );
    p
}

/// The port of an inet target (`127.0.0.1:8000` -> `8000`).
fn port_of(target: &str) -> String {
    match parse(target) {
        Target::Inet(_, port) => port.to_string(),
        _ => target.to_owned(),
    }
}

fn not_listening(v: &View<'_>, a: &Agg) -> Part {
    let mut p = part(Cause::UpstreamNotListening, a);
    let local =
        v.st.listeners_for(a.worker)
            .any(|l| same_host(&l.target, &a.target));
    if let Some(l) = covering(v, a.worker, &a.target).next() {
        p.evidence.push(format!(
            "{} listens on {} now (since the failures?): refused connects predate it, or the proxy runs in \
             another network namespace",
            owner_label(v, l),
            l.target
        ));
    } else if local || matches!(parse(&a.target), Target::Inet(ip, _) if ip.is_loopback()) {
        p.evidence
            .push(nothing_listens_line(v, a.worker, &a.target));
    } else {
        p.evidence.push(format!(
            "{} is not a local address: its host answered with a reset (nothing listens there, or a firewall \
             rejects)",
            a.target
        ));
    }
    p.evidence.extend(last_owner_death(v, a.worker, &a.target));
    p.evidence.extend(app_servers_line(v));
    p.summary = format!("nothing listens on {}: the connection is refused", a.target);
    p.fix = format!(
        "start the app server on {} (e.g. gunicorn --bind {}) and keep it supervised (systemd Restart=on-failure), \
         or point proxy_pass at where it really listens",
        a.target, a.target
    );
    p
}

/// Unix ECONNREFUSED on a path: the file is there, nobody listens.
fn stale_socket(v: &View<'_>, a: &Agg) -> Part {
    let mut p = part(Cause::StaleSocket, a);
    if let Some(c) = path_info(v, &a.target)
        .and_then(|i| i.components.last())
        .filter(|c| c.exists)
    {
        let kind = if c.is_socket() {
            "socket file"
        } else {
            "file (not a socket!)"
        };
        p.evidence.push(format!(
            "{} is a {kind} but no process listens on it",
            comp_label(c, names(v, a))
        ));
    }
    p.evidence
        .push(nothing_listens_line(v, a.worker, &a.target));
    if let Some(f) = foreign_listener(v, a) {
        p.evidence.push(foreign_line(v, a, &f));
    }
    match last_owner_death(v, a.worker, &a.target) {
        Some(d) => p.evidence.push(d),
        None if a.check.is_some() => {}
        None => p
            .evidence
            .push("the death of its last owner was not seen (before gwtrace started?)".to_owned()),
    }
    p.evidence.extend(app_servers_line(v));
    p.summary = format!(
        "{} is a leftover socket file: the app that bound it is gone",
        a.target
    );
    p.fix = "restart the app server (it re-binds the socket); if it refuses because the file exists, remove the \
             stale file first; run it under a supervisor (systemd Restart=always) so a kill -9 or crash is \
             followed by a restart"
        .into();
    p
}

/// "nginx worker pid 1235", or "nginx's worker" when `gwtrace check` has no running worker.
fn worker_label(a: &Agg) -> String {
    if a.worker == 0 {
        format!("{}'s worker", a.worker_comm)
    } else {
        format!("{} worker pid {}", a.worker_comm, a.worker)
    }
}

/// The worker's credentials: what `gwtrace check` was given, its facts (with supplementary
/// groups), else the event's uid/gid.
fn worker_creds(v: &View<'_>, a: &Agg) -> Creds {
    if let Some(c) = &a.check {
        return c.creds.clone();
    }
    v.proc(a.worker)
        .and_then(|q| q.creds.clone())
        .unwrap_or(Creds {
            uid: a.uid,
            gid: a.gid,
            groups: vec![a.gid],
        })
}

/// The user and group names of the failing worker's system (facts `names`), when collected.
fn names<'a>(v: &View<'a>, a: &Agg) -> Option<&'a IdNames> {
    v.proc(a.worker).and_then(|p| p.names.as_ref())
}

fn socket_permission(v: &View<'_>, a: &Agg) -> Part {
    let mut p = part(Cause::SocketPermission, a);
    let creds = worker_creds(v, a);
    let names = names(v, a);
    let who = worker_label(a);
    if let Target::UnixAbstract(name) = parse(&a.target) {
        p.summary = format!("{who} may not connect to {}: permission denied", a.target);
        p.evidence.push(format!(
            "@{name} is an abstract socket: it has no file permissions, so an LSM (SELinux, AppArmor) or a \
             seccomp/BPF policy denied the connect"
        ));
        p.fix = "check the LSM logs (ausearch -m avc, journalctl -k | grep apparmor) and allow the proxy to \
                 connect"
            .into();
        return p;
    }
    let proxy = if a.proxy.comm.is_empty() {
        a.worker_comm.clone()
    } else {
        a.proxy.comm.clone()
    };
    p.summary = format!("{who} may not connect to {}: permission denied", a.target);
    match path_info(v, &a.target).map(|info| (info, walk(info, &creds))) {
        Some((
            _,
            Walk::Denied {
                comp,
                need,
                class,
                last,
            },
        )) => {
            p.evidence
                .push(denial_line(comp, need, class, &who, &creds, names));
            p.summary = format!(
                "{} ({} {}) denies {who} ({})",
                comp.path,
                mode_string(comp.mode),
                file_owner(comp, names),
                creds_label(&creds, names)
            );
            p.fix = denial_fix(comp, need, class, last, &creds, &proxy, names);
        }
        Some((info, Walk::Allowed)) => {
            for c in &info.components {
                p.evidence
                    .push(format!("path walk: {}", comp_label(c, names)));
            }
            p.evidence.push(format!(
                "the walk now grants {who} ({}): the mode changed since, or an LSM (SELinux, AppArmor) denied it",
                creds_label(&creds, names)
            ));
            p.fix = "check the LSM logs (ausearch -m avc, journalctl -k | grep apparmor) and allow the proxy to \
                     connect to the socket"
        .into();
        }
        Some((_, Walk::Missing(c))) => {
            p.evidence.push(format!(
                "{} is missing now (the walk cannot be checked)",
                c.path
            ));
            p.fix = "recreate the socket with a mode the proxy's user can write (gunicorn --umask 007 and a shared \
                     group)"
        .into();
        }
        None => {
            p.evidence.push(format!(
                "no path facts for {}: cannot name the denying component",
                a.target
            ));
            p.fix = format!(
                "run namei -l {} and give {proxy}'s user search on every directory and write on the socket (a \
                 shared group plus gunicorn --umask 007)",
                a.target.trim_start_matches("unix:")
            );
        }
    }
    p
}

fn tcp_denied(a: &Agg) -> Part {
    let mut p = part(Cause::SocketPermission, a);
    p.summary = format!(
        "the connect to {} is denied locally ({})",
        a.target,
        errno_label(a.errno)
    );
    p.evidence.push(
        "a TCP connect fails with EACCES/EPERM only by local policy: a firewall rule (iptables/nft OUTPUT), a \
         cgroup BPF program or SELinux"
            .to_owned(),
    );
    p.fix = "check the OUTPUT firewall rules and SELinux (setsebool -P httpd_can_network_connect 1 for nginx/httpd)"
        .into();
    p
}

fn backlog_full(v: &View<'_>, a: &Agg) -> Part {
    let mut p = part(Cause::BacklogFull, a);
    p.evidence.push(format!(
        "{} means the listen queue of {} is full (the proxy's sockets are non-blocking)",
        errno_label(a.errno),
        a.target
    ));
    if let Some(l) = covering(v, a.worker, &a.target).next() {
        let backlog = l
            .backlog
            .map(|b| format!(" (backlog {b})"))
            .unwrap_or_default();
        let mut line = format!("{} listens on {}{backlog}", owner_label(v, l), l.target);
        if let Some(pid) = l.pid {
            let root = v.family_root(pid);
            let workers =
                v.st.procs
                    .values()
                    .filter(|q| q.exited_ns.is_none() && q.ppid == Some(root))
                    .count();
            if workers > 0 {
                let _ = write!(line, " with {workers} live worker(s)");
            }
        }
        p.evidence.push(line);
    }
    p.evidence.extend(overflow_line(v, a));
    p.summary = format!(
        "the accept queue of {} is full: its workers are too few or too slow",
        a.target
    );
    p.fix = "add workers (gunicorn --workers / --threads), raise the listen backlog (gunicorn --backlog, \
             net.core.somaxconn), make the slow requests faster or move them off the request path"
        .into();
    p
}

/// Rising `ListenOverflows` during the failures, from consecutive netstat samples.
fn overflow_line(v: &View<'_>, a: &Agg) -> Option<String> {
    let samples: Vec<_> = v.st.netstat.iter().collect();
    let mut rise = 0u64;
    let mut span: Option<(u64, u64)> = None;
    for w in samples.windows(2) {
        let (x, y) = (w[0], w[1]);
        let delta = y
            .stats
            .listen_overflows
            .saturating_sub(x.stats.listen_overflows);
        // The interval overlaps the failures (plus one sampling period after them).
        if delta > 0 && y.ns >= a.first_ns && x.ns <= a.last_ns.saturating_add(30_000_000_000) {
            rise += delta;
            span = Some((span.map_or(x.ns, |s| s.0), y.ns));
        }
    }
    let (from, to) = span?;
    Some(format!(
        "TcpExt ListenOverflows rose by {rise} between {} and {}: connects were dropped at a full accept queue",
        fmt_ns(from),
        fmt_ns(to)
    ))
}

/// Connect timeouts: a 504, unless a full local accept queue explains them (backlog-full).
fn timeout(v: &View<'_>, a: &Agg) -> Part {
    if live_listener(v, a.worker, &a.target)
        && let Some(line) = overflow_line(v, a)
    {
        let mut p = backlog_full(v, a);
        p.status = 504;
        p.evidence.retain(|l| !l.contains("non-blocking"));
        p.evidence.insert(1, line);
        p.evidence.dedup();
        p.summary = format!(
            "the accept queue of {} overflows: SYNs are dropped and connects time out (a 504 class)",
            a.target
        );
        return p;
    }
    let mut p = part(Cause::ConnectTimeout, a);
    p.summary = format!(
        "connecting to {} timed out: a 504 (gateway timeout) class, not a 502",
        a.target
    );
    if let Some(d) = netfilter_drops(v, a) {
        p.evidence.push(format!(
            "dropped by a netfilter rule: {}",
            drops_line(a, &d)
        ));
        p.summary = format!(
            "connecting to {} timed out: a netfilter rule drops its SYNs (a 504 class, not a 502)",
            a.target
        );
        p.fix = format!(
            "find the rule that drops tcp dport {} ({}: look for `drop` / `DROP`) and allow the proxy's connects",
            port_of(&a.target),
            ruleset_cmd(a)
        );
        return p;
    }
    if let Some(ms) = a.check.as_ref().and_then(|c| c.probe_timeout_ms) {
        p.evidence.push(format!(
            "gwtrace check's own connect to {} got no answer within {ms} ms",
            a.target
        ));
    } else if a.abandoned {
        p.evidence.push(format!(
            "{} closed the socket while the SYN was unanswered: its own connect timeout (proxy_connect_timeout)",
            a.worker_comm
        ));
    } else {
        p.evidence
            .push("the kernel gave up after its SYN retries (net.ipv4.tcp_syn_retries)".to_owned());
    }
    if let Some(l) = covering(v, a.worker, &a.target).next() {
        p.evidence.push(format!(
            "{} listens on {}: SYNs to it are lost (full accept queue, firewall DROP)",
            owner_label(v, l),
            l.target
        ));
    } else {
        p.evidence.push(format!(
            "no local listener covers {}: the host is down or a firewall drops SYNs",
            a.target
        ));
    }
    p.fix = "make the upstream reachable: check the host is up, the route, and firewalls (a DROP rule gives \
             timeouts, a REJECT refusals); raise proxy_connect_timeout only if the upstream is just slow to accept"
        .into();
    p
}

fn port_exhaustion(a: &Agg) -> Part {
    let mut p = part(Cause::PortExhaustion, a);
    p.summary = format!(
        "no free local port to connect to {}: ephemeral ports are exhausted",
        a.target
    );
    p.evidence.push(format!(
        "{} on connect: every (source port, {}) pair is in use, mostly by TIME_WAIT connections",
        errno_label(a.errno),
        a.target
    ));
    p.fix = "reuse upstream connections (nginx: keepalive 32 in the upstream block, proxy_http_version 1.1, \
             proxy_set_header Connection \"\"), widen net.ipv4.ip_local_port_range, enable net.ipv4.tcp_tw_reuse"
        .into();
    p
}

fn unreachable(a: &Agg) -> Part {
    let mut p = part(Cause::NetworkUnreachable, a);
    let host = a
        .target
        .rsplit_once(':')
        .map_or(a.target.as_str(), |(h, _)| h.trim_matches(['[', ']']));
    p.summary = format!("no route to {}", a.target);
    p.evidence.push(format!(
        "{}: the kernel has no usable route to {host}",
        errno_label(a.errno)
    ));
    p.fix = format!(
        "check the route and interface (ip route get {host}; ip link), the upstream's address in the proxy config, \
         and firewalls answering with ICMP unreachable"
    );
    p
}

fn reset(a: &Agg) -> Part {
    let mut p = part(Cause::UpstreamReset, a);
    p.summary = format!("{} reset the connection during the handshake", a.target);
    p.evidence.push(format!(
        "{} on connect: the peer answered with RST",
        errno_label(a.errno)
    ));
    p.fix = "check the upstream's logs for crashes or connection limits, and firewalls or load balancers sending \
             RSTs"
        .into();
    p
}

fn wrong_type(a: &Agg) -> Part {
    let mut p = part(Cause::WrongTarget, a);
    p.summary = format!(
        "{} is not a stream socket: the proxy points at the wrong socket",
        a.target
    );
    p.evidence.push(format!(
        "{}: the socket's type does not match a stream connect",
        errno_label(a.errno)
    ));
    p.fix = "point proxy_pass at the app's stream (HTTP) socket".into();
    p
}
