//! The live source: the kernel capture (decode and fold happen there), enriched with `/proc`
//! facts and attributed to cgroups, units and containers before anything else sees the events.
//!
//! With `--hooks auto` it also runs the escalation ([`super::escalation`]): the connect
//! attempts the cgroup programs report and the events of the cheap hooks go to the policy; a
//! proxy's unix target is checked here (its path walked in the proxy's mount namespace with the
//! proxy's credentials, its listener and accept queue read with `sock_diag`); the capture
//! attaches or detaches the syscall hooks as the policy decides, and each transition is a
//! `hooks` event. A failed check before the escalation is reported as the `connect_failed` it
//! implies (source `attempt`); once escalated, the kernel reports each failure with its errno.
use super::{
    Source, SourceError,
    escalation::{Attempt, CheckFailed, Decision, Policy},
};
use crate::{
    capture::{Capture, Counters, Hooks},
    catalog::{ProcNames, ProxyRule},
    check::live::proxy_upstreams,
    engine::{PathReach, unix_path_reach},
    enrich::{Enricher, configs::ConfigWatcher},
    event::{Body, Clock, Event, monotonic_ns},
    facts::FactSource as _,
    facts::{FactsUpdate, ProcInfo},
    host::SystemFacts,
    host::cgroup::Resolver,
};

/// What to capture and whom to enrich for.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub hooks: Hooks,
    /// Proxy process names (the enricher reads their facts).
    pub proxy_names: Vec<String>,
    /// Proxy pids named on the command line.
    pub proxy_pids: Vec<u32>,
    /// `--hooks auto`: how long without an anomaly before the syscall hooks are detached
    /// ([`super::escalation::QUIET_NS`] by default).
    pub calm_after: std::time::Duration,
}

/// Longest wait at start for the running proxies' configurations.
const FIRST_CONFIGS: std::time::Duration = std::time::Duration::from_secs(2);

/// A running capture with its enricher and origin resolver.
pub struct Live {
    /// None once finished: dropping the capture detaches every program, frees every map.
    capture: Option<Capture>,
    clock: Clock,
    enricher: Enricher<SystemFacts>,
    origins: Resolver,
    /// Reads the proxies' configurations (their upstreams) off the event path.
    configs: Option<ConfigWatcher>,
    /// The first snapshot of the host, handed over with the first drain.
    pending: Vec<Event>,
    raw: Vec<Event>,
    /// `--hooks auto`: when to attach the syscall hooks, and the checks it asks for.
    policy: Policy,
    checker: SystemFacts,
    /// Proxy names and pids (the escalation checks and the watched processes).
    proxy_names: Vec<String>,
    proxy_pids: Vec<u32>,
    /// The proxies' unix upstreams from their configurations (master pid -> targets): checked
    /// once a tick when the unix connect attempts are not seen (kernel before 6.7).
    configured: std::collections::BTreeMap<u32, Vec<String>>,
    /// The proxies and app servers of the enricher's table, shared with the config watcher.
    notable: std::sync::Arc<std::sync::Mutex<Vec<ProcInfo>>>,
}

impl Live {
    /// Attaches every program and takes the first snapshot of the host's facts.
    pub fn start(opts: &LiveOptions) -> Result<Self, crate::capture::CaptureError> {
        let mut capture = Capture::start(opts.hooks)?;
        // Names first: a proxy that starts from now on is watched at its exec.
        capture.watch_names(&opts.proxy_names);
        let clock = capture.clock();
        let mut enricher = Enricher::new(SystemFacts::new(), opts.proxy_names.clone());
        let mut origins = Resolver::system();
        let now = monotonic_ns();
        let snapshot = enricher.snapshot(&opts.proxy_pids);
        origins.learn(&snapshot.processes);
        watch_proxies(
            &mut capture,
            &opts.proxy_names,
            &opts.proxy_pids,
            &snapshot.processes,
            &enricher,
        );
        // The watcher's rounds take the proxies from the enricher's process table (kept from
        // the kernel's events): no walk of /proc, whatever the size of the host.
        let notable = std::sync::Arc::new(std::sync::Mutex::new(enricher.table().notable()));
        let shared = std::sync::Arc::clone(&notable);
        let list = move || shared.lock().map(|l| l.clone()).unwrap_or_default();
        let configs = ConfigWatcher::spawn(opts.proxy_names.clone(), list, proxy_upstreams);
        let mut pending = vec![facts_event(&clock, now, snapshot)];
        // The running proxies' upstreams before the first verdict (bounded: `nginx -T`).
        let proxy_configs = configs
            .as_ref()
            .map(|w| w.first_round(FIRST_CONFIGS))
            .unwrap_or_default();
        if !proxy_configs.is_empty() {
            let up = FactsUpdate {
                proxy_configs,
                ..FactsUpdate::default()
            };
            pending.push(facts_event(&clock, monotonic_ns(), up));
        }
        Ok(Self {
            capture: Some(capture),
            clock,
            enricher,
            origins,
            configs,
            pending,
            raw: Vec::new(),
            policy: Policy::with_quiet(
                u64::try_from(opts.calm_after.as_nanos()).unwrap_or(u64::MAX),
            ),
            checker: SystemFacts::new(),
            proxy_names: opts.proxy_names.clone(),
            proxy_pids: opts.proxy_pids.clone(),
            configured: std::collections::BTreeMap::new(),
            notable,
        })
    }

    /// Remembers the proxies' unix upstreams from the `facts` lines handed on.
    fn note_configs(&mut self, events: &[Event]) {
        for ev in events {
            if let Body::Facts(f) = &ev.body {
                for c in &f.proxy_configs {
                    self.configured
                        .insert(c.pid, configured_unix_targets(&c.targets));
                }
            }
        }
    }

    /// `--hooks auto` without the unix connect program: the configured unix upstreams are
    /// checked once a tick (as the proxy's master sees them: its mount namespace and
    /// credentials), a failure is a trigger (no inferred failure: no connect was seen).
    fn check_configured(&mut self, now_ns: u64) {
        let Some(capture) = self.capture.as_ref() else {
            return;
        };
        if capture.hooks() != Hooks::Auto || capture.sees_unix_attempts() {
            return;
        }
        for (&pid, targets) in &self.configured {
            let Some(p) = self.checker.process(pid) else {
                continue;
            };
            for target in targets {
                let a = Attempt {
                    mono_ns: now_ns,
                    pid,
                    tid: pid,
                    uid: p.uid,
                    gid: p.gid,
                    cgroup_id: 0,
                    comm: p.comm.clone(),
                    target: target.clone(),
                    count: 0,
                };
                if let Some(f) = check_target(&mut self.checker, &a) {
                    self.policy.configured_target_failed(now_ns, target, &f);
                }
            }
        }
    }

    /// Whether the syscall hooks are attached now (always with `--hooks full`).
    #[must_use]
    pub fn escalated(&self) -> bool {
        self.capture.as_ref().is_some_and(Capture::escalated)
    }

    /// [`Capture::syscall_program_ids`] of the running capture.
    #[must_use]
    pub fn syscall_program_ids(&self) -> Vec<u32> {
        self.capture
            .as_ref()
            .map(Capture::syscall_program_ids)
            .unwrap_or_default()
    }

    /// Whether a process is a proxy's: by the names the session watches, else by the capture's
    /// own rule (a `--proxy PID` of another name, a proxy's child: the processes the kernel
    /// watches). Only asked about the events and attempts that can trigger.
    fn is_proxy(capture: &Capture, names: &[String], pid: u32, comm: &str) -> bool {
        names.iter().any(|n| n == comm) || capture.is_watched(pid)
    }

    /// `--hooks auto`: the policy sees the events just handed on (from `from` in `out`) and
    /// the attempts drained; a failed check before the escalation becomes an inferred failure;
    /// then the capture follows the policy's decision.
    fn escalation(&mut self, from: usize, out: &mut Vec<Event>, now_ns: u64) {
        let Some(capture) = self.capture.as_mut() else {
            return;
        };
        if capture.hooks() != Hooks::Auto {
            return;
        }
        for ev in &out[from..] {
            let proxy = matches!(
                ev.body,
                Body::ConnectFailed { .. } | Body::NetfilterDrop { .. } | Body::ConnEnd(_)
            ) && Self::is_proxy(capture, &self.proxy_names, ev.pid, &ev.comm);
            let upstream = self.enricher.relevant(ev);
            self.policy.event(ev, proxy, upstream);
        }
        let attempts = capture.take_attempts();
        let escalated = capture.escalated();
        for a in attempts {
            let proxy = Self::is_proxy(capture, &self.proxy_names, a.pid, &a.comm);
            let checker = &mut self.checker;
            let failed = self.policy.attempt(&a, proxy, |a| check_target(checker, a));
            if let Some(f) = failed
                && !escalated
            {
                // Not seen by the kernel (its syscall hooks were detached): the attempt plus
                // the check. Enriched like a kernel event (facts of the path, the listeners).
                self.raw.push(inferred_failure(&self.clock, &a, &f));
            }
        }
        if !self.raw.is_empty() {
            self.enrich(out);
        }
        self.decide(now_ns, out);
    }

    /// Applies the policy's decision to the capture, with one `hooks` event per transition.
    fn decide(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        let Some(capture) = self.capture.as_mut() else {
            return;
        };
        let (state, reason, took) = match self.policy.decide(now_ns) {
            None => return,
            Some(Decision::Escalate { reason }) => match capture.escalate() {
                Ok(took) => ("escalated", reason, took.unwrap_or_default()),
                Err(e) => {
                    log::warn!("attaching the syscall hooks failed ({e}): staying calm");
                    self.policy.escalation_failed();
                    return;
                }
            },
            Some(Decision::Calm) => (
                "calm",
                format!(
                    "no anomaly for {} s",
                    self.policy.quiet_ns() / 1_000_000_000
                ),
                capture.calm().unwrap_or_default(),
            ),
        };
        log::info!("hooks {state} in {} us: {reason}", took.as_micros());
        let body = Body::Hooks {
            state: state.to_owned(),
            reason,
            latency_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        };
        let mut ev = Event::of_task(
            self.clock.rfc3339(now_ns),
            now_ns,
            std::process::id(),
            "gwtrace",
            body,
        );
        ev.tid = 0;
        out.push(ev);
    }

    /// Enriches, attributes and hands on the drained events, in order.
    fn enrich(&mut self, out: &mut Vec<Event>) {
        let mut table_changed = false;
        for mut ev in self.raw.drain(..) {
            if let Some(w) = &self.configs {
                w.observe(&ev);
            }
            let up = self.enricher.before(&ev);
            // The processes the enricher just read carry their cgroup: attribution reuses them
            // rather than reading /proc/PID/cgroup a second time.
            if let Some(up) = &up {
                self.origins.learn(&up.processes);
                table_changed = true;
                if let Some(c) = self.capture.as_mut() {
                    watch_proxies(
                        c,
                        &self.proxy_names,
                        &self.proxy_pids,
                        &up.processes,
                        &self.enricher,
                    );
                }
            }
            // An exiting process is attributed now: its pid may be reused once it is gone.
            ev.origin = self.origins.resolve(ev.pid, ev.cgroup_id, ev.mono_ns);
            if matches!(
                ev.body,
                Body::ConnectFailed { .. } | Body::AcceptFailed { .. } | Body::NetfilterDrop { .. }
            ) {
                ev.net_ns = self.enricher.net_ns_of(ev.pid);
            }
            if matches!(ev.body, Body::ProcessExit { .. }) {
                self.origins.forget(ev.pid);
            }
            if let Some(up) = up {
                if let Body::Exec { cmdline, .. } = &mut ev.body {
                    *cmdline = up
                        .processes
                        .iter()
                        .find(|p| p.pid == ev.pid)
                        .map(|p| p.cmdline.clone());
                }
                out.push(facts_event(&self.clock, ev.mono_ns, up));
            }
            out.push(ev);
        }
        if table_changed {
            self.share_notable();
        }
    }
}

impl Live {
    /// Hands the config watcher the table's proxies and app servers (after the table changed).
    fn share_notable(&self) {
        if let Ok(mut l) = self.notable.lock() {
            *l = self.enricher.table().notable();
        }
    }

    /// Watches the proxies among processes the enricher just read.
    fn watch(&mut self, procs: &[ProcInfo]) {
        if let Some(c) = self.capture.as_mut() {
            watch_proxies(
                c,
                &self.proxy_names,
                &self.proxy_pids,
                procs,
                &self.enricher,
            );
        }
    }

    /// The configurations read since the last call, as one `facts` line.
    fn configs_read(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        let Some(w) = &self.configs else { return };
        let proxy_configs = w.ready();
        if !proxy_configs.is_empty() {
            let up = FactsUpdate {
                proxy_configs,
                ..FactsUpdate::default()
            };
            out.push(facts_event(&self.clock, now_ns, up));
        }
    }
}

impl Source for Live {
    fn drain(&mut self, out: &mut Vec<Event>) -> Result<Option<usize>, SourceError> {
        let start = out.len();
        out.append(&mut self.pending);
        let Some(capture) = self.capture.as_mut() else {
            return Ok(None);
        };
        let raw = &mut self.raw;
        let n = capture.drain(|ev| raw.push(ev));
        let from = out.len();
        self.enrich(out);
        let now = monotonic_ns();
        self.escalation(from, out, now);
        self.configs_read(now, out);
        self.note_configs(&out[start..]);
        Ok(Some(n))
    }

    fn tick(&mut self, now_ns: u64, out: &mut Vec<Event>) -> Result<(), SourceError> {
        if let Some(up) = self.enricher.periodic() {
            self.origins.learn(&up.processes);
            self.watch(&up.processes);
            out.push(facts_event(&self.clock, now_ns, up));
        }
        // Once a tick too: exits and the reconciliation change the table without a facts line.
        self.share_notable();
        if let Some(c) = self.capture.as_mut() {
            out.extend(c.loss_events(now_ns));
        }
        self.check_configured(now_ns);
        // The quiet period ends on a tick too, when nothing else drains.
        self.decide(now_ns, out);
        Ok(())
    }

    fn counters(&mut self) -> Option<Counters> {
        self.capture.as_ref().map(Capture::counters)
    }

    fn finish(
        &mut self,
        now_ns: u64,
        out: &mut Vec<Event>,
    ) -> Result<Option<Counters>, SourceError> {
        out.append(&mut self.pending);
        let Some(mut capture) = self.capture.take() else {
            return Ok(None);
        };
        // Final drain: nothing the kernel delivered or counted is left behind.
        let raw = &mut self.raw;
        capture.flush(|ev| raw.push(ev));
        self.enrich(out);
        out.extend(capture.loss_events(now_ns));
        let counters = capture.counters();
        drop(capture); // detaches every program, frees every map
        Ok(Some(counters))
    }

    fn now_ns(&self) -> u64 {
        monotonic_ns()
    }
}

/// Watches every process of `procs` that the engine's rule calls a proxy (named or listed, or
/// a child of one, its parent looked up in the enricher's table), so that the kernel sees its
/// connects; processes that exec or fork later are watched by the kernel itself.
fn watch_proxies(
    capture: &mut Capture,
    names: &[String],
    pids: &[u32],
    procs: &[ProcInfo],
    enricher: &Enricher<SystemFacts>,
) {
    let listed = |pid: u32| pids.contains(&pid);
    let rule = ProxyRule {
        names,
        listed: &listed,
    };
    let argv0 = |p: &ProcInfo| p.cmdline.split_whitespace().next().unwrap_or("").to_owned();
    // By pid: the first snapshot holds every process of the host (no quadratic parent search).
    let by_pid: std::collections::HashMap<u32, &ProcInfo> =
        procs.iter().map(|p| (p.pid, p)).collect();
    for p in procs {
        let me = [p.comm.as_str(), &argv0(p)];
        let parent = by_pid
            .get(&p.ppid)
            .copied()
            .or_else(|| enricher.table().get(p.ppid));
        let parent_names = parent.map(|q| [q.comm.clone(), argv0(q)]);
        let parent_refs = parent_names
            .as_ref()
            .map(|n| [n[0].as_str(), n[1].as_str()]);
        let is_proxy = rule.is_proxy(
            ProcNames {
                pid: p.pid,
                names: &me,
            },
            parent_refs
                .as_ref()
                .map(|names| ProcNames { pid: p.ppid, names }),
        );
        if is_proxy {
            capture.watch(p.pid);
        }
    }
    for &pid in pids {
        capture.watch(pid);
    }
}

fn facts_event(clock: &Clock, mono_ns: u64, up: FactsUpdate) -> Event {
    Event::facts(clock.rfc3339(mono_ns), mono_ns, up)
}

/// What a connect by the attempt's process would meet now. Unix: its path walked in the
/// process's mount namespace with its credentials, then the listener and its accept queue
/// (`sock_diag`, gwtrace's network namespace: a path is reached through the filesystem from
/// any namespace, but a listener bound in another one is not listed here, so "nobody listens"
/// is only claimed when the attempt's process shares gwtrace's network namespace). TCP: its
/// route ([`check_route`]). `None`: it would succeed, or the facts cannot tell.
fn check_target(facts: &mut SystemFacts, a: &Attempt) -> Option<CheckFailed> {
    let Some(path) = a.target.strip_prefix("unix:") else {
        return check_route(facts, a);
    };
    if !path.starts_with('/') {
        return None; // abstract names have no path to check
    }
    let info = facts.path_of(a.pid, path);
    let groups = facts.process(a.pid).map(|p| p.groups).unwrap_or_default();
    let fail = |errno: i32, what: &str| {
        Some(CheckFailed {
            errno,
            what: what.to_owned(),
        })
    };
    match unix_path_reach(&info, a.uid, a.gid, &groups) {
        PathReach::Fails(2) => fail(2, "no such file"),
        PathReach::Fails(20) => fail(20, "a component of the path is not a directory"),
        PathReach::Fails(13) => fail(13, "not writable for the process's credentials"),
        PathReach::Fails(e) => fail(e, "the path walk fails"),
        PathReach::NotSocket => fail(111, "not a socket"),
        PathReach::Socket => {
            let listeners = crate::host::sockdiag::unix_listeners().ok()?;
            match listeners.iter().find(|l| l.target == a.target) {
                Some(l) if l.queue > l.backlog => fail(
                    11,
                    &format!(
                        "accept queue full ({} waiting, backlog {})",
                        l.queue, l.backlog
                    ),
                ),
                None if facts.net_ns(a.pid) == facts.net_ns(std::process::id()) => {
                    fail(111, "a socket file nobody listens on")
                }
                // Served, or bound in a namespace sock_diag does not show from here.
                Some(_) | None => None,
            }
        }
    }
}

/// The unix path upstreams among a configuration's targets (the host's own sockets excluded).
fn configured_unix_targets(targets: &[String]) -> Vec<String> {
    targets
        .iter()
        .filter(|t| t.starts_with("unix:/") && crate::catalog::system_socket(t).is_none())
        .cloned()
        .collect()
}

/// Whether a TCP target has a route from the attempt's process: a UDP socket connected to it
/// does the same route lookup as a TCP connect and sends nothing. Catches what fails before the
/// handshake with no socket event (ENETUNREACH, EHOSTUNREACH from an `unreachable` route).
/// Only for a process in gwtrace's own network namespace (`None` otherwise).
fn check_route(facts: &mut SystemFacts, a: &Attempt) -> Option<CheckFailed> {
    let addr: std::net::SocketAddr = a.target.parse().ok()?;
    if facts.net_ns(a.pid) != facts.net_ns(std::process::id()) {
        return None;
    }
    let local: std::net::SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let udp = std::net::UdpSocket::bind(local).ok()?;
    let errno = udp.connect(addr).err()?.raw_os_error()?;
    Some(CheckFailed {
        errno,
        what: format!("no route ({})", std::io::Error::from_raw_os_error(errno)),
    })
}

/// The `connect_failed` a failed check implies (source `attempt`): the attempt's process and
/// target, the errno the check found, as many failures as the attempts it stands for.
fn inferred_failure(clock: &Clock, a: &Attempt, f: &CheckFailed) -> Event {
    let body = Body::ConnectFailed {
        target: a.target.clone(),
        errno: f.errno,
        errno_name: crate::event::errno_name(f.errno).to_owned(),
        source: "attempt".to_owned(),
        count: a.count,
    };
    let mut ev = Event::of_task(clock.rfc3339(a.mono_ns), a.mono_ns, a.pid, &a.comm, body);
    ev.tid = a.tid;
    ev.uid = a.uid;
    ev.gid = a.gid;
    ev.cgroup_id = a.cgroup_id;
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_unix_targets_are_the_path_upstreams() {
        let t = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            configured_unix_targets(&t(&[
                "127.0.0.1:8000",
                "unix:/run/app.sock",
                "unix:@abstract",
                "unix:/var/run/nscd/socket",
            ])),
            t(&["unix:/run/app.sock"])
        );
    }
}
