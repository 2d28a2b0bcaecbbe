//! Upstream workers dying mid-request: killed by their master for a timeout
//! (`worker-timeout`), by the OOM killer (`worker-oom-killed`), or by a fault
//! (`worker-crashed`). The proxy then reads a closed or reset connection ("upstream prematurely
//! closed connection"), which no failed connect shows: these verdicts stand on the death itself
//! when the dead process was an upstream of a proxy (its family held a listener the proxy's
//! configuration names, or that the proxy failed to connect to), never on another process's
//! death on the same host. A death's consequences stay with it: the connects refused while a
//! supervisor restarted the dead app ([`consequence`]) are counted in the death's verdict, and
//! the proxy connections the dying worker held (their ends ran in its task:
//! [`Deaths::broke`]) are listed in it as its broken connections.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::lifecycle::{Restart, parse_binds};
use super::report::Part;
use super::state::{ConnEndRecord, ExitRecord, OomRecord, SignalRecord};
use super::target::covers;
use super::text::{fmt_dur, fmt_ns, mib_bytes, mib_kb, signal_label};
use super::view::{ProxyId, ProxyKey, View};
use crate::catalog::{AppCommand, Cause, KillSetting, app_server_name, system_socket};
use crate::event::signal_name;

const SIGABRT: i32 = 6;
const SIGKILL: i32 = 9;
const SIGUSR2: i32 = 12;
const SIGTERM: i32 = 15;
/// Signals of a fault (the kernel's, with `si_code > 0`) or a crash when they end a process.
const CRASH_SIGNALS: [i32; 5] = [4, 7, 8, 11, 31];
/// What a master sends a busy worker it kills: gunicorn SIGABRT (then SIGKILL), uwsgi's
/// harakiri SIGKILL (SIGUSR2, a status dump, a second before in older releases), php-fpm's `request_terminate_timeout` SIGTERM,
/// others SIGKILL or SIGTERM then SIGKILL.
const KILL_SEQUENCE: [i32; 4] = [SIGABRT, SIGKILL, SIGUSR2, SIGTERM];
/// Of those, the ones that end the worker.
const LETHAL: [i32; 3] = [SIGABRT, SIGKILL, SIGTERM];
/// Signals to a master that stop or reload it: the worker kills that follow are its shutdown.
const MASTER_STOP: [i32; 4] = [1, 2, 3, 15];
/// The later signals of one kill this soon after its first (gunicorn, php-fpm escalate).
const ESCALATE_NS: u64 = 30_000_000_000;
/// A master signalled (stop, reload) this long before a worker kill: the kill is its shutdown.
const MASTER_STOP_NS: u64 = 60_000_000_000;
/// A master exiting this soon after a worker kill was shutting down (or failed to boot).
const MASTER_EXIT_NS: u64 = 10_000_000_000;
/// The same signal to several workers this close together is one loop over them all.
const MASS_NS: u64 = 100_000_000;
/// Evidence lines listing individual deaths.
const MAX_LISTED: usize = 4;

/// The proxy target a process's family served, when it was an upstream of a proxy: a listener
/// it (or its family) held, or a bind its command line names, that a proxy's configuration
/// names or that a proxy failed to connect to. A configuration that could not name all its
/// upstreams (`$variables`) lets an app server's own listener count too. None: its death is
/// no 502 cause (another process on the host).
fn proxied_target(v: &View<'_>, pid: u32) -> Option<String> {
    if v.is_proxy(pid, v.comm(pid)) {
        return None;
    }
    let root = v.family_root(pid);
    let mut held: Vec<String> = v
        .served_targets(pid)
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut cmdlines: Vec<&str> = v.lineage(pid).iter().map(|p| p.cmdline.as_str()).collect();
    cmdlines.extend(v.proc(root).map(|p| p.cmdline.as_str()));
    if let Some(e) = v.exit_of(pid) {
        cmdlines.push(e.proc.cmdline.as_str());
    }
    for c in cmdlines {
        held.extend(parse_binds(c).0);
    }
    let configs = || v.st.proxy_configs.values();
    for h in &held {
        let configured = configs()
            .flat_map(|c| c.targets.iter())
            .find(|t| covers(h, t) || covers(t, h));
        if let Some(t) = configured {
            return Some(t.clone());
        }
        let mut failed: Vec<&str> = v
            .proxy_targets
            .iter()
            .copied()
            .filter(|t| covers(h, t))
            .collect();
        failed.sort_unstable();
        if let Some(t) = failed.first() {
            return Some((*t).to_owned());
        }
    }
    let partial = configs().any(|c| c.partial);
    (partial && v.app_lineage(pid).is_some())
        .then(|| held.into_iter().find(|h| system_socket(h).is_none()))
        .flatten()
}

/// Was this process an upstream of a proxy ([`proxied_target`])? The one rule for worker
/// deaths, shared with the metrics' count of upstream deaths.
pub(crate) fn upstream_of_a_proxy(v: &View<'_>, pid: u32) -> bool {
    proxied_target(v, pid).is_some()
}

/// Which proxy and target a dead upstream's verdict names: the target its family served for a
/// proxy ([`proxied_target`]) and the proxy that failed to connect there, else the proxy whose
/// configuration names it, else any known proxy. None when it was no proxy's upstream.
fn who(v: &View<'_>, pid: u32) -> Option<(ProxyId, String)> {
    let t = proxied_target(v, pid)?;
    let failed =
        v.st.failures
            .iter()
            .filter(|(k, g)| covers(&t, &k.target) && v.symptom(k.pid, &g.comm, &k.target))
            .max_by_key(|(_, g)| g.last_ns)
            .map(|(k, g)| v.proxy_id(k.pid, &g.comm));
    let configured = || {
        let mut masters: Vec<u32> =
            v.st.proxy_configs
                .values()
                .filter(|c| c.targets.iter().any(|x| covers(x, &t) || covers(&t, x)))
                .map(|c| c.pid)
                .collect();
        masters.sort_unstable();
        masters.first().map(|&m| v.proxy_id(m, v.comm(m)))
    };
    let proxy = failed.or_else(configured).unwrap_or_else(|| v.any_proxy());
    Some((proxy, t))
}

/// The parts of a restart's outage that belong to a death, by the dead pid.
type Consequences = BTreeMap<u32, Vec<Part>>;

/// Accumulates incidents into one part per (proxy, target).
struct Parts {
    cause: Cause,
    by: BTreeMap<(ProxyKey, String), Part>,
    listed: BTreeMap<(ProxyKey, String), usize>,
    victims: BTreeMap<(ProxyKey, String), Vec<u32>>,
}

impl Parts {
    fn new(cause: Cause) -> Self {
        Self {
            cause,
            by: BTreeMap::new(),
            listed: BTreeMap::new(),
            victims: BTreeMap::new(),
        }
    }

    /// Counts one incident (the death of `victim`) and lists its evidence (the first few per
    /// part).
    fn add(
        &mut self,
        (proxy, target): (ProxyId, String),
        victim: u32,
        ns: u64,
        lines: Vec<String>,
    ) -> &mut Part {
        let key = (proxy.key.clone(), target.clone());
        self.victims.entry(key.clone()).or_default().push(victim);
        let p = self.by.entry(key.clone()).or_insert_with(|| {
            let mut p = Part::new(self.cause, proxy, &target);
            p.first_ns = ns;
            p
        });
        p.count += 1;
        p.first_ns = p.first_ns.min(ns);
        p.last_ns = p.last_ns.max(ns);
        p.upstream_pid = Some(victim);
        let listed = self.listed.entry(key).or_default();
        if *listed < MAX_LISTED {
            p.evidence.extend(lines);
        }
        *listed += 1;
        p
    }

    /// The parts, worded by `f`, each with the consequences of its deaths counted in.
    fn finish(self, out: &mut Vec<Part>, conseq: &mut Consequences, f: impl Fn(&mut Part)) {
        for (key, mut p) in self.by {
            let n = self.listed.get(&key).copied().unwrap_or(0);
            if n > MAX_LISTED {
                p.evidence.push(format!("... {} more", n - MAX_LISTED));
            }
            f(&mut p);
            let (mut refused, mut broken) = (0, 0);
            for victim in self.victims.get(&key).into_iter().flatten() {
                for c in conseq.remove(victim).unwrap_or_default() {
                    if c.broken.is_empty() {
                        // Refused connects while it was restarted: more 502s of this death.
                        refused += c.count;
                        p.count += c.count;
                    } else {
                        // The connections it held: the same 502s as the death itself.
                        broken += c.count;
                        let room = super::MAX_BROKEN.saturating_sub(p.broken.len());
                        p.broken.extend(c.broken.into_iter().take(room));
                    }
                    p.first_ns = p.first_ns.min(c.first_ns);
                    p.last_ns = p.last_ns.max(c.last_ns);
                    for l in c.evidence {
                        if !p.evidence.contains(&l) {
                            p.evidence.push(l);
                        }
                    }
                }
            }
            if broken > 0 {
                let _ = write!(
                    p.summary,
                    "; {} connection(s) of {} to it broke (listed in broken_connections)",
                    broken, p.proxy.comm
                );
            }
            if refused > 0 {
                let _ = write!(
                    p.summary,
                    "; then {refused} connect(s) failed while it was restarted (counted here: they are this \
                     death's consequence)"
                );
            }
            out.push(p);
        }
    }
}

/// One master's kill of one worker: the signals it sent, in order.
struct Kill<'a> {
    master: u32,
    signals: Vec<&'a SignalRecord>,
}

/// The app servers' deaths, classified once: the master kills, OOM kills and crashes of
/// processes (not yet filtered on being a proxy's upstream).
pub(crate) struct Deaths<'a> {
    kills: BTreeMap<u32, Kill<'a>>,
    ooms: BTreeMap<u32, &'a OomRecord>,
    crashes: BTreeMap<u32, (u64, String, String)>,
}

impl<'a> Deaths<'a> {
    pub(crate) fn of(v: &View<'a>) -> Self {
        let kills = kills(v);
        let mut ooms = BTreeMap::new();
        for o in &v.st.ooms {
            if !kills.contains_key(&o.victim_pid) {
                ooms.entry(o.victim_pid).or_insert(o);
            }
        }
        let crashes = crashes(v, &kills, &ooms);
        Self {
            kills,
            ooms,
            crashes,
        }
    }

    /// The cause of this process's death, when it is one of these (and it served a proxy).
    fn cause_of(&self, v: &View<'_>, pid: u32) -> Option<Cause> {
        let cause = if self.kills.contains_key(&pid) {
            Cause::WorkerTimeout
        } else if self.ooms.contains_key(&pid) {
            Cause::WorkerOomKilled
        } else if self.crashes.contains_key(&pid) {
            Cause::WorkerCrashed
        } else {
            return None;
        };
        who(v, pid).map(|_| cause)
    }

    /// When this process's death began (the master's first signal, the OOM kill, the fault)
    /// and ended (its exit; a kill's escalation window when the exit was not seen).
    fn window(&self, v: &View<'_>, pid: u32) -> Option<(u64, u64)> {
        let start = self
            .kills
            .get(&pid)
            .and_then(|k| k.signals.first().map(|s| s.ns))
            .or_else(|| self.ooms.get(&pid).map(|o| o.ns))
            .or_else(|| self.crashes.get(&pid).map(|c| c.0))?;
        let end = v
            .exit_of(pid)
            .map(|e| e.ns)
            .filter(|&e| e >= start)
            .unwrap_or(start.saturating_add(ESCALATE_NS));
        Some((start, end))
    }

    /// The death (its cause and the dead pid) that broke this proxy connection: its other end
    /// was closed in the task of a worker that died of it, by the worker's exit (`PF_EXITING`)
    /// or while it was dying (gunicorn's worker closes its sockets in its SIGABRT handler
    /// before it exits). None: no death explains it (a connection verdict's, then).
    pub(crate) fn broke(&self, v: &View<'_>, rec: &ConnEndRecord) -> Option<(Cause, u32)> {
        let i = &rec.info;
        let peer = i.peer_pid.filter(|&p| p != rec.pid)?;
        let cause = self.cause_of(v, peer)?;
        let (start, end) = self.window(v, peer)?;
        let close = i.close_ns.unwrap_or(rec.ns);
        (i.peer_exiting || (start..=end).contains(&close)).then_some((cause, peer))
    }
}

/// Every worker-death part; the consequence parts the connect causes left in `out` (refused
/// connects while a dead app was restarted) are folded into their death's part.
pub(crate) fn parts(v: &View<'_>, out: &mut Vec<Part>) {
    let (conseq, keep): (Vec<Part>, Vec<Part>) = std::mem::take(out)
        .into_iter()
        .partition(|p| p.consequence_of.is_some());
    *out = keep;
    let mut by_pid: Consequences = BTreeMap::new();
    for c in conseq {
        if let Some(pid) = c.consequence_of {
            by_pid.entry(pid).or_default().push(c);
        }
    }
    let d = Deaths::of(v);
    timeouts(v, &d, out, &mut by_pid);
    ooms(v, &d, out, &mut by_pid);
    crash_parts(v, &d, out, &mut by_pid);
    // A consequence whose death is not reported here (it cannot happen: the same
    // classification chose it) still stands on its own.
    for (_, cs) in by_pid {
        for mut c in cs {
            c.consequence_of = None;
            out.push(c);
        }
    }
}

/// The refused connects of a restart whose old instance died (crashed, OOM-killed, killed by
/// its app server's master) rather than being stopped on request: a part of that death's
/// cause, folded into its verdict by [`parts`]. None when the old instance was stopped on
/// purpose (`upstream-restarting` then), or served no proxy.
pub(crate) fn consequence(
    v: &View<'_>,
    r: &Restart<'_>,
    proxy: ProxyId,
    target: &str,
    symptom: String,
    (count, first_ns, last_ns): (u64, u64, u64),
) -> Option<Part> {
    let pid = r.old.proc.pid;
    let cause = Deaths::of(v).cause_of(v, pid)?;
    let mut p = Part::new(cause, proxy, target);
    p.count = count;
    p.first_ns = first_ns;
    p.last_ns = last_ns;
    p.upstream_pid = Some(pid);
    p.consequence_of = Some(pid);
    let death = v
        .death_line(pid)
        .unwrap_or_else(|| format!("{} pid {pid} died", r.old.proc.comm));
    p.summary = format!("{death}; connects to {target} failed while it was restarted");
    p.evidence.push(symptom);
    p.evidence.push(format!(
        "then nothing served {target} for {} until new {} pid {} listened on {} at {} (restarted by its \
         supervisor): the {count} failed connect(s) in between are this death's consequence, not a deliberate \
         restart",
        fmt_dur(r.back_ns.saturating_sub(r.old.ns)),
        r.new_comm,
        r.new_pid,
        r.listener,
        fmt_ns(r.back_ns)
    ));
    p.fix = "see the death's verdict".into();
    Some(p)
}

/// Does this signal come from the victim's app server master (its parent, itself an app
/// server process; when the victim's parent is unknown, a process of the same app server)?
fn from_master(v: &View<'_>, s: &SignalRecord) -> bool {
    if s.sender_pid == 0 || s.sender_pid == s.target_pid || !s.effective() {
        return false;
    }
    let server = app_server_name(&s.sender_comm).or_else(|| v.app_lineage(s.sender_pid));
    if server.is_none() || v.is_proxy(s.sender_pid, &s.sender_comm) {
        return false;
    }
    match v.proc(s.target_pid).and_then(|p| p.ppid) {
        Some(pp) => pp == s.sender_pid,
        None => server == app_server_name(&s.target_comm).or_else(|| v.app_lineage(s.target_pid)),
    }
}

/// Was the master stopping or reloading around `ns` (a stop or reload signal from another
/// process shortly before, or its own exit soon after: a shutdown or a failed boot; not a
/// master killed by a signal, which did not end its workers first)?
fn master_stopping(v: &View<'_>, master: u32, ns: u64) -> bool {
    let signalled = v.st.signals.iter().any(|s| {
        s.target_pid == master
            && s.sender_pid != master
            && s.effective()
            && MASTER_STOP.contains(&s.sig)
            && s.ns.saturating_add(MASTER_STOP_NS) >= ns
            && s.ns <= ns.saturating_add(1_000_000_000)
    });
    signalled
        || v.exit_of(master).is_some_and(|e| {
            e.signal.is_none()
                && e.ns.saturating_add(1_000_000_000) >= ns
                && e.ns <= ns.saturating_add(MASTER_EXIT_NS)
        })
}

/// Did the master send `sig` to all its workers (two or more) at once: a reload or shutdown
/// loop over them, not one worker's timeout? gunicorn's SIGABRT is its timeout kill alone.
fn mass(v: &View<'_>, master: u32, sig: i32, ns: u64) -> bool {
    if sig == SIGABRT {
        return false;
    }
    let targets: BTreeSet<u32> =
        v.st.signals
            .iter()
            .filter(|s| s.sender_pid == master && s.sig == sig && s.ns.abs_diff(ns) <= MASS_NS)
            .map(|s| s.target_pid)
            .collect();
    let alive =
        v.st.procs
            .values()
            .filter(|p| p.ppid == Some(master) && p.exited_ns.is_none_or(|x| x >= ns))
            .count();
    targets.len() >= 2 && targets.len() >= alive
}

/// The master kills of single busy workers, by victim: a master's SIGABRT, SIGKILL or SIGTERM
/// (after a SIGUSR2 or not, escalated or not) to one of its workers, unless the master was
/// stopping or reloading, killed all its workers at once, or the worker exited cleanly.
fn kills<'a>(v: &View<'a>) -> BTreeMap<u32, Kill<'a>> {
    let mut all: BTreeMap<u32, Kill<'a>> = BTreeMap::new();
    for s in &v.st.signals {
        if !KILL_SEQUENCE.contains(&s.sig) || !from_master(v, s) {
            continue;
        }
        let k = all.entry(s.target_pid).or_insert_with(|| Kill {
            master: s.sender_pid,
            signals: Vec::new(),
        });
        let first = k.signals.first().map_or(s.ns, |f| f.ns);
        if k.master == s.sender_pid && s.ns.saturating_sub(first) <= ESCALATE_NS {
            k.signals.push(s);
        }
    }
    all.retain(|&victim, k| {
        let Some(lethal) = k.signals.iter().find(|s| LETHAL.contains(&s.sig)) else {
            return false;
        };
        let t0 = k.signals.first().map_or(lethal.ns, |f| f.ns);
        let killed = k.signals.iter().any(|s| s.sig == SIGKILL);
        let clean = v
            .exit_of(victim)
            .filter(|e| e.ns >= t0)
            .is_some_and(|e| e.signal.is_none() && e.exit_code == Some(0));
        !(master_stopping(v, k.master, t0)
            || mass(v, k.master, lethal.sig, lethal.ns)
            || clean && !killed)
    });
    all
}

/// The master's signals in words: "SIGUSR2 ..., then SIGKILL 1.0 s later".
fn kill_line(v: &View<'_>, victim: u32, k: &Kill<'_>, setting: &KillSetting) -> String {
    let Some(first) = k.signals.first() else {
        return String::new();
    };
    let mut line = format!(
        "{} pid {} sent {} to worker {} pid {victim} at {}",
        first.sender_comm,
        first.sender_pid,
        signal_name(first.sig),
        first.target_comm,
        fmt_ns(first.ns)
    );
    let mut last = first.sig;
    for s in k.signals.iter().skip(1) {
        if s.sig != last {
            let _ = write!(
                line,
                ", then {} {} later",
                signal_name(s.sig),
                fmt_dur(s.ns - first.ns)
            );
            last = s.sig;
        }
    }
    let habit = match setting.server {
        "gunicorn" => " (gunicorn's WORKER TIMEOUT)",
        "uwsgi" => " (uwsgi's HARAKIRI)",
        "php-fpm" => " (php-fpm's request_terminate_timeout)",
        _ => "",
    };
    line.push_str(habit);
    if let Some(e) = v.exit_of(victim).filter(|e| e.ns >= first.ns) {
        let _ = write!(line, "; it {}", exit_words(e));
    }
    line
}

/// The master's kill setting, from its command line (the victim's when the master's is not
/// known).
fn setting_of(v: &View<'_>, master: u32, victim: u32) -> KillSetting {
    let cmd = |pid: u32| {
        v.proc(pid)
            .map(|p| p.cmdline.as_str())
            .filter(|c| !c.is_empty())
            .or_else(|| v.exit_of(pid).map(|e| e.proc.cmdline.as_str()))
    };
    let parsed = [master, victim]
        .into_iter()
        .find_map(|p| cmd(p).and_then(AppCommand::parse));
    parsed.map_or_else(
        || KillSetting {
            server: app_server_name(v.comm(master)).unwrap_or(""),
            name: "",
            value: None,
            how: "",
        },
        |c| c.kill_setting(),
    )
}

/// The summary, setting line and fix of a timeout kill, in the app server's own terms.
fn timeout_words(s: &KillSetting, count: u64) -> (String, String, String) {
    let value = s.value.as_ref();
    let secs = value.map_or_else(String::new, |v| format!(" ({} s)", v.value));
    match s.server {
        "gunicorn" => {
            let t = value.map_or_else(|| "30 (the default)".to_owned(), |v| v.value.to_string());
            let from = value.map_or_else(String::new, |v| format!(" ({})", v.from));
            (
                format!(
                    "the app server's master killed {count} worker(s) that ran past its --timeout ({t} s)"
                ),
                format!(
                    "--timeout is {t} s{from}; nginx's proxy_read_timeout defaults to 60 s, so nginx sees the \
                     connection close first and answers 502 (\"upstream prematurely closed connection\")"
                ),
                "make the slow view faster or move the work to a background job; or raise gunicorn --timeout \
                 above the slowest legitimate request (or use async/threaded workers) and keep \
                 proxy_read_timeout at least as long"
                    .into(),
            )
        }
        "uwsgi" => (
            format!("uwsgi's master killed {count} worker(s) busy past its --harakiri{secs}"),
            value.map_or_else(
                || "uwsgi's harakiri is set in its ini file or environment (not on its command line); uwsgi \
                    sends SIGKILL (\"HARAKIRI ON WORKER\" in its log)"
                    .to_owned(),
                |v| {
                    format!(
                        "uwsgi {} (harakiri {} s): its master SIGKILLs a worker busy longer \
                         (\"HARAKIRI ON WORKER\" in its log); nginx reads the connection's close and answers 502",
                        v.from, v.value
                    )
                },
            ),
            "make the slow view faster or move the work to a background task (uwsgi spooler, a queue); or \
             raise --harakiri (harakiri = N in the ini) above the slowest legitimate request, keeping nginx's \
             proxy_read_timeout / uwsgi_read_timeout at least as long"
                .into(),
        ),
        "php-fpm" => (
            format!("php-fpm's master killed {count} child(ren) busy past its request_terminate_timeout{secs}"),
            "php-fpm's request_terminate_timeout (in its pool configuration, e.g. pool.d/www.conf): its master \
             sends SIGTERM to a child whose script runs longer (\"execution timed out ... terminating\" in its \
             log), then SIGKILL if it lingers"
                .into(),
            "make the slow script faster or move the work to a queue; or raise request_terminate_timeout in \
             the pool above the slowest legitimate script (and max_execution_time to match), keeping \
             fastcgi_read_timeout at least as long"
                .into(),
        ),
        server => {
            let who = if server.is_empty() {
                "the app server"
            } else {
                server
            };
            (
                format!("{who}'s master killed {count} busy worker(s)"),
                format!(
                    "{who} has no request timeout gwtrace knows of: the signals above came from its master \
                     (uvicorn never kills a busy worker itself)"
                ),
                format!(
                    "find the {who} setting that kills slow workers and raise it above the slowest \
                     legitimate request, or make the slow request faster"
                ),
            )
        }
    }
}

/// A master's kill of a busy worker (gunicorn WORKER TIMEOUT, uwsgi HARAKIRI, php-fpm
/// `request_terminate_timeout`, or any app server's master killing one worker).
fn timeouts(v: &View<'_>, d: &Deaths<'_>, out: &mut Vec<Part>, conseq: &mut Consequences) {
    let mut parts = Parts::new(Cause::WorkerTimeout);
    let mut settings: BTreeMap<(ProxyKey, String), KillSetting> = BTreeMap::new();
    for (&victim, k) in &d.kills {
        let Some(id) = who(v, victim) else { continue };
        let Some(first) = k.signals.first() else {
            continue;
        };
        let setting = setting_of(v, k.master, victim);
        let line = kill_line(v, victim, k, &setting);
        settings.insert((id.0.key.clone(), id.1.clone()), setting);
        parts.add(id, victim, first.ns, vec![line]);
    }
    parts.finish(out, conseq, |p| {
        let none = KillSetting {
            server: "",
            name: "",
            value: None,
            how: "",
        };
        let s = settings
            .get(&(p.proxy.key.clone(), p.target.clone()))
            .unwrap_or(&none);
        let (summary, line, fix) = timeout_words(s, p.count);
        p.summary = summary;
        p.evidence.push(line);
        p.fix = fix;
    });
}

/// `--timeout N` / `-t N` / `--timeout=N` from a gunicorn command line (the last one, as
/// gunicorn takes it: the catalog's parser, the same `gwtrace check` reads).
#[cfg(test)]
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
fn ooms(v: &View<'_>, d: &Deaths<'_>, out: &mut Vec<Part>, conseq: &mut Consequences) {
    let mut parts = Parts::new(Cause::WorkerOomKilled);
    let mut limits: BTreeMap<(ProxyKey, String), String> = BTreeMap::new();
    for (&victim, o) in &d.ooms {
        let Some(id) = who(v, victim) else { continue };
        let (cg, lines) = oom_lines(v, o);
        limits.insert((id.0.key.clone(), id.1.clone()), cg);
        parts.add(id, victim, o.ns, lines);
    }
    parts.finish(out, conseq, |p| {
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

/// Faults of processes: a crash signal ending them, a core dump, or the kernel's fault signal
/// (not those a master killed or the OOM killer chose), by pid: (when, comm, evidence).
fn crashes(
    v: &View<'_>,
    kills: &BTreeMap<u32, Kill<'_>>,
    ooms: &BTreeMap<u32, &OomRecord>,
) -> BTreeMap<u32, (u64, String, String)> {
    let excluded = |pid: u32| kills.contains_key(&pid) || ooms.contains_key(&pid);
    let mut found: BTreeMap<u32, (u64, String, String)> = BTreeMap::new();
    for e in &v.st.exits {
        let pid = e.proc.pid;
        let crash_sig = e.signal.is_some_and(|s| CRASH_SIGNALS.contains(&s));
        let core = e.core_dumped && e.signal != Some(SIGKILL);
        if !(crash_sig || core) || excluded(pid) || stopped_by_other(v, e) {
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
    found
}

/// Crashes of upstream processes.
fn crash_parts(v: &View<'_>, d: &Deaths<'_>, out: &mut Vec<Part>, conseq: &mut Consequences) {
    let mut parts = Parts::new(Cause::WorkerCrashed);
    for (&pid, (ns, _, line)) in &d.crashes {
        if let Some(id) = who(v, pid) {
            parts.add(id, pid, *ns, vec![line.clone()]);
        }
    }
    parts.finish(out, conseq, |p| {
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
