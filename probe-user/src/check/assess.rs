//! Checks an nginx configuration's upstream targets against facts collected from the host:
//! the engine predicts the connect each worker would make (same causes, same wording as when
//! it observes one fail), and the configuration is weighed for 502s to come (timeouts that let
//! the app kill a request nginx still waits for, socket directories that vanish at boot, tiny
//! listen backlogs).
//!
//! Pure: the facts come in a [`World`] (collected by [`super::live`], or fixtures in tests).
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::net::IpAddr;

use super::apps::{ListenQueue, UnitDirs, UserCreds, canonical_run};
use super::nginx::{Addr, DEFAULT_TIMEOUT_MS, Dest, Loc, NginxConfig, Pass};
use super::{Finding, ProxyReport, Severity, TargetStatus};
use crate::catalog::{AppSettings, Cause, app_server_in_cmdline, default_proxy_names};
use crate::engine::{Creds, Engine, EngineConfig, Probe, Reach, Verdict, covers};
use crate::event::Event;
use crate::facts::{FactsUpdate, Listener, NetNs, PathInfo, ProcInfo};

/// A listen backlog below this is flagged (the old `net.core.somaxconn` default).
pub const MIN_BACKLOG: u32 = 128;
/// Configuration lines quoted per finding (the rest are counted).
const MAX_USE_LINES: usize = 4;

/// The proxy being checked, as found.
#[derive(Clone, Debug, Default)]
pub struct Proxy {
    pub comm: String,
    /// The master's pid (0: no running proxy, a configuration file checked before deploy).
    pub master: u32,
    /// Its processes (master and workers).
    pub pids: Vec<u32>,
    /// A running worker, if any.
    pub worker: Option<u32>,
    /// The workers' credentials.
    pub creds: UserCreds,
    /// Who the workers run as and how gwtrace knows (for the report).
    pub worker_label: String,
    /// How the configuration was read.
    pub source: String,
    pub config: NginxConfig,
    /// Collected while reading it.
    pub notes: Vec<String>,
    /// Its network namespace when it is not gwtrace's own (its connects are judged there).
    pub net_ns: Option<u64>,
}

/// Facts about the host (collected by [`super::live`], or fixtures in tests).
#[derive(Clone, Debug, Default)]
pub struct World {
    /// Monotonic time of the check (the verdicts' time axis).
    pub now_ns: u64,
    pub processes: Vec<ProcInfo>,
    pub listeners: Vec<Listener>,
    /// Path walks of the unix socket targets.
    pub paths: Vec<PathInfo>,
    /// Host names of the configuration and their addresses (Err: why they did not resolve).
    pub resolved: HashMap<String, Result<Vec<IpAddr>, String>>,
    /// TCP targets that are not local: the errno of gwtrace's own connect (0: accepted).
    pub remote: HashMap<String, i32>,
    /// The same, connected from inside another network namespace (a proxy's), by its inode.
    pub remote_in: HashMap<u64, HashMap<String, i32>>,
    /// The network namespaces of proxy processes that do not live in gwtrace's own (their
    /// listeners are in [`World::listeners`] with that `net_ns`).
    pub net_ns: Vec<NetNs>,
    /// How long that connect waited.
    pub probe_timeout_ms: u64,
    /// Accept queues (`ss`), when visible.
    pub queues: Vec<ListenQueue>,
    /// App servers (by the pid of their root process) and their settings.
    pub apps: HashMap<u32, AppSettings>,
    /// The systemd unit of each app root (Err: why it is not known).
    pub units: HashMap<u32, Result<UnitDirs, String>>,
    /// Directories tmpfiles.d creates at boot (None: could not be read).
    pub tmpfiles: Option<Vec<String>>,
    /// CPUs, for `worker_processes auto`.
    pub ncpu: u32,
}

/// One configuration line leading to a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Use {
    /// Index of the `*_pass` in [`NginxConfig::passes`].
    pub pass: usize,
    /// `file:line directive` (and the upstream `server` line it goes through).
    pub line: String,
    pub loc: Loc,
    /// A `backup` server of an upstream block.
    pub backup: bool,
}

/// The targets of a configuration: each address with the lines that lead there, and the groups
/// of addresses each `*_pass` can use (nginx tries the next one when a connect fails).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    pub by_target: BTreeMap<String, Vec<Use>>,
    pub groups: Vec<(usize, Vec<String>)>,
    pub notes: Vec<String>,
}

/// Host names the configuration uses (not IP literals, not `localhost`): to be resolved.
#[must_use]
pub fn hosts(cfg: &NginxConfig) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |a: &Addr| {
        if let Addr::Host { host, .. } = a
            && host.parse::<IpAddr>().is_err()
            && host != "localhost"
            && !out.contains(host)
        {
            out.push(host.clone());
        }
    };
    for p in &cfg.passes {
        match &p.dest {
            Dest::Addr(a) => add(a),
            Dest::Upstream(i) => {
                for s in cfg.upstreams.get(*i).map_or(&[][..], |u| &u.servers) {
                    add(&s.addr);
                }
            }
            Dest::Variable(_) => {}
        }
    }
    out
}

/// The target strings (gwtrace's format) an address stands for.
fn addr_targets<S: BuildHasher>(
    a: &Addr,
    resolved: &HashMap<String, Result<Vec<IpAddr>, String>, S>,
) -> Result<(Vec<String>, String), String> {
    let fmt = |ip: IpAddr, port: u16| match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| format!("[{v6}]:{port}"), |v4| format!("{v4}:{port}")),
    };
    match a {
        Addr::Unix(p) => Ok((vec![format!("unix:{p}")], String::new())),
        Addr::Host { host, port } => {
            if let Ok(ip) = host.parse::<IpAddr>() {
                return Ok((vec![fmt(ip, *port)], String::new()));
            }
            if host == "localhost" {
                return Ok((
                    vec![format!("127.0.0.1:{port}"), format!("[::1]:{port}")],
                    " (localhost: 127.0.0.1 and ::1, nginx tries both)".to_owned(),
                ));
            }
            match resolved.get(host) {
                Some(Ok(ips)) if !ips.is_empty() => {
                    let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
                    Ok((
                        ips.iter().map(|ip| fmt(*ip, *port)).collect(),
                        format!(" ({host} resolves to {})", list.join(", ")),
                    ))
                }
                Some(Err(e)) => Err(format!("{host}: {e}")),
                _ => Err(format!("{host} did not resolve")),
            }
        }
    }
}

/// Every target of the configuration with the lines that lead there.
#[must_use]
pub fn targets<S: BuildHasher>(
    cfg: &NginxConfig,
    resolved: &HashMap<String, Result<Vec<IpAddr>, String>, S>,
) -> Targets {
    let mut t = Targets::default();
    for (i, p) in cfg.passes.iter().enumerate() {
        let head = format!("{} {}", p.loc, p.text);
        let mut group = Vec::new();
        let mut add = |t: &mut Targets, addr: &Addr, line: String, loc: &Loc, backup: bool| {
            match addr_targets(addr, resolved) {
                Ok((list, why)) => {
                    for target in list {
                        t.by_target.entry(target.clone()).or_default().push(Use {
                            pass: i,
                            line: format!("{line}{why}"),
                            loc: loc.clone(),
                            backup,
                        });
                        if !group.contains(&target) {
                            group.push(target);
                        }
                    }
                }
                Err(e) => t.notes.push(format!(
                    "{line}: cannot check {addr}: {e} (nginx refuses to start when a name in the configuration does not resolve)"
                )),
            }
        };
        match &p.dest {
            Dest::Addr(a) => add(&mut t, a, head, &p.loc, false),
            Dest::Upstream(u) => {
                let Some(up) = cfg.upstreams.get(*u) else {
                    continue;
                };
                let usable: Vec<_> = up.servers.iter().filter(|s| !s.down).collect();
                if usable.is_empty() {
                    t.notes.push(format!(
                        "{head}: every server of upstream {} is marked down",
                        up.name
                    ));
                }
                for s in usable {
                    let line = format!("{head} -> upstream {}: {} {}", up.name, s.loc, s.text);
                    add(&mut t, &s.addr, line, &s.loc, s.backup);
                }
            }
            Dest::Variable(v) => t.notes.push(format!(
                "{head}: the target is computed at request time ({v}): not checked"
            )),
        }
        if !group.is_empty() {
            t.groups.push((i, group));
        }
    }
    t
}

/// The root of an app server's process family (the gunicorn master above its workers).
#[must_use]
pub fn app_root(processes: &[ProcInfo], pid: u32) -> u32 {
    let by_pid: HashMap<u32, &ProcInfo> = processes.iter().map(|p| (p.pid, p)).collect();
    let is_app = |p: &ProcInfo| {
        app_server_in_cmdline(&p.cmdline).is_some() || app_server_in_cmdline(&p.comm).is_some()
    };
    let mut root = pid;
    for _ in 0..8 {
        let Some(parent) = by_pid
            .get(&root)
            .map(|p| p.ppid)
            .filter(|&pp| pp > 1)
            .and_then(|pp| by_pid.get(&pp))
        else {
            break;
        };
        if !is_app(parent) {
            break;
        }
        root = parent.pid;
    }
    root
}

/// The listener serving a target, if any.
#[must_use]
pub fn listener_for<'a>(listeners: &'a [Listener], target: &str) -> Option<&'a Listener> {
    listeners.iter().find(|l| covers(&l.target, target))
}

fn owner_label(l: &Listener) -> String {
    match (&l.comm, l.pid) {
        (Some(c), Some(p)) => format!("{c} pid {p} listens"),
        (None, Some(p)) => format!("pid {p} listens"),
        _ => "something listens (its owner is not visible: run as root)".to_owned(),
    }
}

fn creds_of(u: &UserCreds) -> Creds {
    Creds {
        uid: u.uid,
        gid: u.gid,
        groups: u.groups.clone(),
    }
}

fn engine_for(proxy: &Proxy, world: &World) -> Engine {
    let mut names = default_proxy_names();
    if !names.contains(&proxy.comm) {
        names.push(proxy.comm.clone());
    }
    let mut engine = Engine::new(EngineConfig {
        proxy_names: names,
        proxy_pids: proxy.pids.clone(),
    });
    engine.feed(&Event::facts(
        String::new(),
        world.now_ns,
        FactsUpdate {
            processes: world.processes.clone(),
            listeners: Some(world.listeners.clone()),
            paths: world.paths.clone(),
            proxies: proxy.pids.clone(),
            proc_net_ns: world.net_ns.clone(),
            ..FactsUpdate::default()
        },
    ));
    engine
}

/// A warning verdict (no symptom yet: count 0).
fn warning(proxy: &Proxy, world: &World, cause: Cause, target: &str) -> Verdict {
    Verdict {
        cause,
        status: 502,
        proxy_pid: proxy.master,
        proxy_comm: proxy.comm.clone(),
        target: target.to_owned(),
        count: 0,
        first_seen_ns: world.now_ns,
        last_seen_ns: world.now_ns,
        rate_per_s: 0.0,
        summary: String::new(),
        evidence: Vec::new(),
        fix: String::new(),
        proxy_origin: None,
        proxy_net_ns: None,
        upstream_pid: None,
        upstream_origin: None,
        broken_connections: Vec::new(),
        life: crate::engine::Life::default(),
        errno_from: None,
    }
}

/// The configuration lines of a finding: the first few, then how many more.
fn use_lines(uses: &[Use]) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for u in uses {
        if !lines.contains(&u.line) {
            lines.push(u.line.clone());
        }
    }
    if lines.len() > MAX_USE_LINES {
        let more = lines.len() - MAX_USE_LINES;
        lines.truncate(MAX_USE_LINES);
        lines.push(format!("... and {more} more configuration line(s)"));
    }
    lines
}

fn finding(severity: Severity, mut verdict: Verdict, uses: &[Use]) -> Finding {
    let lines = use_lines(uses);
    verdict.evidence.splice(0..0, lines.iter().cloned());
    Finding {
        severity,
        verdict,
        config: lines,
    }
}

/// gwtrace's own connects to remote targets, made from the proxy's network namespace.
fn remote_of<'a>(proxy: &Proxy, world: &'a World) -> &'a HashMap<String, i32> {
    proxy
        .net_ns
        .and_then(|n| world.remote_in.get(&n))
        .unwrap_or(&world.remote)
}

/// Checks every target of one proxy.
#[must_use]
pub fn evaluate(proxy: &Proxy, targets: &Targets, world: &World) -> ProxyReport {
    let engine = engine_for(proxy, world);
    let creds = creds_of(&proxy.creds);
    let mut report = ProxyReport {
        comm: proxy.comm.clone(),
        pid: proxy.master,
        source: proxy.source.clone(),
        worker: proxy.worker_label.clone(),
        notes: proxy.notes.clone(),
        ..ProxyReport::default()
    };
    report.notes.extend(proxy.config.notes.iter().cloned());
    report.notes.extend(targets.notes.iter().cloned());
    let reach: BTreeMap<&str, Reach> = targets
        .by_target
        .keys()
        .map(|t| {
            let r = engine.reach(
                proxy.worker.unwrap_or(proxy.master),
                t,
                &creds,
                remote_of(proxy, world).get(t).copied(),
            );
            (t.as_str(), r)
        })
        .collect();
    let ok = |t: &str| matches!(reach.get(t), Some(Reach::Ok(_)));
    let mut findings = Vec::new();
    for (target, uses) in &targets.by_target {
        let used_at = match uses.len() {
            1 => uses[0].loc.to_string(),
            n => format!("{} (+{} more)", uses[0].loc, n - 1),
        };
        let status = |state: &str, detail: String| TargetStatus {
            target: target.clone(),
            state: state.to_owned(),
            detail,
            used_at: used_at.clone(),
        };
        match &reach[target.as_str()] {
            Reach::Ok(l) => {
                let detail = match l {
                    Some(l) => owner_label(l),
                    None => "accepted gwtrace's connect".to_owned(),
                };
                report.targets.push(status("ok", detail));
                if let Some(l) = l {
                    findings.extend(timeout_mismatch(proxy, world, target, uses, l));
                    findings.extend(backlog_small(proxy, world, target, uses, l));
                }
            }
            Reach::Fails(_) => match failing(&engine, proxy, targets, world, &creds, target, &ok) {
                Some(f) => {
                    report
                        .targets
                        .push(status(f.verdict.cause.id(), f.verdict.summary.clone()));
                    findings.push(f);
                }
                None => report
                    .targets
                    .push(status("unchecked", "no verdict for this errno".into())),
            },
            Reach::Unknown(why) => {
                report.targets.push(status("unchecked", why.clone()));
                report.notes.push(format!("{target}: not checked: {why}"));
            }
        }
        if let Some(p) = target.strip_prefix("unix:") {
            let (f, note) = runtime_dir(proxy, world, target, p, uses);
            findings.extend(f);
            report.notes.extend(note);
        }
    }
    findings.sort_by(|a, b| {
        a.severity
            .cmp(&b.severity)
            .then(a.verdict.target.cmp(&b.verdict.target))
            .then(a.verdict.cause.cmp(&b.verdict.cause))
    });
    // The status this proxy answers for each cause (HAProxy and Apache: 503 for connects).
    if let Some(kind) = super::proxies::Kind::of(&proxy.comm, None) {
        for f in &mut findings {
            f.verdict.status = kind.status_for(f.verdict.cause);
        }
    }
    report.findings = findings;
    report
}

/// The finding for a target a worker's connect would fail on: the engine's verdict, failing
/// when some `*_pass` has no working alternative (or does not retry), else a warning.
fn failing(
    engine: &Engine,
    proxy: &Proxy,
    targets: &Targets,
    world: &World,
    creds: &Creds,
    target: &str,
    ok: &dyn Fn(&str) -> bool,
) -> Option<Finding> {
    let served_elsewhere: Vec<String> = targets
        .by_target
        .keys()
        .filter(|t| *t != target)
        .cloned()
        .collect();
    let probe = Probe {
        proxy_pid: proxy.master,
        proxy_comm: &proxy.comm,
        worker_pid: proxy.worker.unwrap_or(0),
        creds: creds.clone(),
        target,
        remote_errno: remote_of(proxy, world).get(target).copied(),
        timeout_ms: (remote_of(proxy, world).get(target) == Some(&110))
            .then_some(world.probe_timeout_ms),
        served_elsewhere,
    };
    let mut v = engine.predict(&probe, world.now_ns)?;
    let mut fallbacks: Vec<&str> = Vec::new();
    let hopeless = targets.groups.iter().any(|(pass, group)| {
        if !group.iter().any(|t| t == target) {
            return false;
        }
        let alive: Vec<&str> = group.iter().map(String::as_str).filter(|t| ok(t)).collect();
        let no_retry = proxy
            .config
            .passes
            .get(*pass)
            .is_some_and(|p| p.next_upstream_off);
        fallbacks.extend(&alive);
        alive.is_empty() || no_retry
    });
    let severity = if hopeless {
        Severity::Fail
    } else {
        fallbacks.sort_unstable();
        fallbacks.dedup();
        let kind =
            super::proxies::Kind::of(&proxy.comm, None).unwrap_or(super::proxies::Kind::Nginx);
        v.evidence.push(if kind == super::proxies::Kind::Nginx {
            format!(
                "nginx retries the next server on a connect error and {} answer(s): requests succeed, but each \
                 try here costs a failed connect (an error.log line) and marks {target} failed for fail_timeout",
                fallbacks.join(", ")
            )
        } else {
            format!(
                "{} and {} answer(s): requests succeed, but each try here costs a failed connect",
                kind.retry_phrase(),
                fallbacks.join(", ")
            )
        });
        Severity::Warn
    };
    let uses = targets.by_target.get(target).map_or(&[][..], Vec::as_slice);
    Some(finding(severity, v, uses))
}

/// The app server behind a listener: its root pid, process and settings.
fn app_of<'a>(
    world: &'a World,
    l: &Listener,
) -> Option<(u32, Option<&'a ProcInfo>, &'a AppSettings)> {
    let root = app_root(&world.processes, l.pid?);
    let settings = world.apps.get(&root)?;
    Some((
        root,
        world.processes.iter().find(|p| p.pid == root),
        settings,
    ))
}

fn secs_label(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The app kills a request before nginx stops waiting for it: a 502 where a 504 belonged.
fn timeout_mismatch(
    proxy: &Proxy,
    world: &World,
    target: &str,
    uses: &[Use],
    l: &Listener,
) -> Option<Finding> {
    let (root, proc_info, app) = app_of(world, l)?;
    let kill = app.kill_timeout.as_ref()?;
    let kill_ms = kill.value.saturating_mul(1000);
    // The passes that wait longer than the app lets a request run.
    let mut late: Vec<(&Use, &Pass)> = uses
        .iter()
        .filter_map(|u| Some((u, proxy.config.passes.get(u.pass)?)))
        .filter(|(_, p)| {
            p.module.read_timeout_directive().is_some() && p.read_timeout.value > kill_ms
        })
        .collect();
    if late.is_empty() {
        return None;
    }
    late.sort_by_key(|(_, p)| std::cmp::Reverse(p.read_timeout.value));
    let (_, longest) = late[0];
    let directive = longest.module.read_timeout_directive().unwrap_or_default();
    let mut v = warning(proxy, world, Cause::TimeoutMismatch, target);
    let server = app.server;
    let wait = secs_label(longest.read_timeout.value);
    v.summary = format!(
        "{server} kills a worker busy for {} s ({}), but nginx waits {wait} for the response \
         ({directive}): a request slower than {} s ends in a 502 (worker-timeout), not a 504",
        kill.value, kill.from, kill.value
    );
    if let Some(p) = proc_info {
        v.evidence
            .push(format!("{server} pid {root}: {}", p.cmdline));
    }
    let mut seen = Vec::new();
    for (u, p) in &late {
        let line = match &p.read_timeout.loc {
            Some(loc) => format!(
                "{directive} {} at {loc} applies to {}",
                secs_label(p.read_timeout.value),
                u.loc
            ),
            None => format!(
                "{directive} is not set for {} ({}): nginx's default {}",
                u.loc,
                if p.context.is_empty() {
                    "its server"
                } else {
                    &p.context
                },
                secs_label(DEFAULT_TIMEOUT_MS)
            ),
        };
        if !seen.contains(&line) {
            seen.push(line);
        }
    }
    v.evidence.extend(seen);
    let safe = kill.value.saturating_sub(5).max(kill.value / 2).max(1);
    let raise = match server {
        "uwsgi" => format!("--harakiri {}", longest.read_timeout.value / 1000 + 5),
        "php-fpm" => format!(
            "request_terminate_timeout = {} in the pool",
            longest.read_timeout.value / 1000 + 5
        ),
        _ => format!("--timeout {}", longest.read_timeout.value / 1000 + 5),
    };
    let place = longest.read_timeout.loc.as_ref().map_or_else(
        || {
            format!(
                "next to {} {}",
                longest.loc,
                longest.text.split_whitespace().next().unwrap_or("")
            )
        },
        |l| format!("at {l}"),
    );
    v.fix = format!(
        "let nginx give up first so a slow request gets a clean 504 and the worker survives: {directive} {safe}s; \
         ({place}), or raise the app's deadline above nginx's ({server} {raise})"
    );
    Some(finding(Severity::Warn, v, uses))
}

/// A listen backlog so small that a burst gets refused (EAGAIN on a unix socket: a 502).
fn backlog_small(
    proxy: &Proxy,
    world: &World,
    target: &str,
    uses: &[Use],
    l: &Listener,
) -> Option<Finding> {
    let q = world.queues.iter().find(|q| q.target == l.target)?;
    let filling = q.queued > 0 && q.queued.saturating_mul(2) >= q.backlog;
    if q.backlog >= MIN_BACKLOG && !filling {
        return None;
    }
    let mut v = warning(proxy, world, Cause::BacklogSmall, target);
    let app = app_of(world, l);
    let workers = app
        .and_then(|(_, _, s)| s.workers.as_ref())
        .map(|w| format!("{} worker(s) ({})", w.value, w.from));
    let who = l.comm.clone().unwrap_or_else(|| "the app".to_owned());
    v.summary = if filling {
        format!(
            "the accept queue of {} is {}/{} full right now: {who} does not keep up, new connects will be refused",
            l.target, q.queued, q.backlog
        )
    } else {
        format!(
            "the listen backlog of {} is only {}: a burst beyond the busy workers plus {} queued connects is refused",
            l.target, q.backlog, q.backlog
        )
    };
    v.evidence.push(format!(
        "ss: {} accept queue {} of {} (the backlog the app asked for, capped by net.core.somaxconn)",
        l.target, q.queued, q.backlog
    ));
    if let Some((_, _, s)) = app
        && let Some(b) = &s.backlog
    {
        v.evidence.push(format!(
            "{} asked for a backlog of {} ({})",
            s.server, b.value, b.from
        ));
    }
    if let Some(w) = workers {
        v.evidence.push(format!("{who} runs {w}"));
    }
    if let Some(conns) = proxy.config.worker_connections {
        let procs = match proxy.config.worker_processes.as_deref() {
            Some("auto") => world.ncpu.max(1),
            Some(n) => n.parse().unwrap_or(1),
            None => 1,
        };
        v.evidence.push(format!(
            "nginx may hold {} connections at once ({procs} worker process(es) x worker_connections {conns})",
            u64::from(procs) * u64::from(conns)
        ));
    }
    v.evidence.push(if target.starts_with("unix:") {
        "on a unix socket a full queue fails the connect at once with EAGAIN: nginx answers 502"
            .to_owned()
    } else {
        "on TCP a full queue drops SYNs: connects stall and time out (504) or get refused"
            .to_owned()
    });
    v.fix = "raise the backlog (gunicorn --backlog 2048, uwsgi --listen 1024, uvicorn --backlog; \
             net.core.somaxconn caps it) and add workers if the queue fills"
        .into();
    Some(finding(Severity::Warn, v, uses))
}

/// Is this socket directory emptied at boot (a tmpfs under /run, or /tmp)?
fn volatile_dir(dir: &str) -> bool {
    let dir = canonical_run(dir);
    (dir.starts_with("/run/") || dir.starts_with("/tmp/")) && dir.matches('/').count() >= 2
}

/// The app serving a target and its systemd unit, or the note saying why they are unknown.
fn unit_of_target<'a>(
    world: &'a World,
    target: &str,
    dir: &str,
) -> Result<(u32, &'a Listener, &'a UnitDirs), String> {
    let cannot = |why: String| format!("{dir}: could not check that it survives a reboot ({why})");
    let Some(l) = listener_for(&world.listeners, target) else {
        return Err(cannot(format!(
            "no process listens on {target} to name its unit"
        )));
    };
    let Some(pid) = l.pid else {
        return Err(cannot(format!(
            "the owner of {target} is not visible: run as root"
        )));
    };
    let root = app_root(&world.processes, pid);
    match world.units.get(&root) {
        Some(Ok(u)) => Ok((root, l, u)),
        Some(Err(why)) => Err(cannot(why.clone())),
        None => Err(cannot(format!("pid {root}'s systemd unit is unknown"))),
    }
}

/// A socket directory under /run or /tmp that nothing recreates at boot: after a reboot the
/// app cannot bind its socket (socket-missing).
fn runtime_dir(
    proxy: &Proxy,
    world: &World,
    target: &str,
    path: &str,
    uses: &[Use],
) -> (Option<Finding>, Option<String>) {
    let Some((dir, _)) = path.rsplit_once('/') else {
        return (None, None);
    };
    if !volatile_dir(dir) {
        return (None, None);
    }
    let dir = canonical_run(dir);
    // A missing directory is already a socket-missing verdict.
    let exists = world
        .paths
        .iter()
        .find(|p| p.path == path)
        .and_then(|p| p.components.iter().find(|c| canonical_run(&c.path) == dir))
        .is_some_and(|c| c.exists);
    if !exists {
        return (None, None);
    }
    if world.tmpfiles.as_ref().is_some_and(|t| t.contains(&dir)) {
        return (None, None);
    }
    let (root, l, unit) = match unit_of_target(world, target, &dir) {
        Ok(x) => x,
        Err(note) => return (None, Some(note)),
    };
    let created = unit
        .runtime_dirs
        .iter()
        .any(|rd| dir == *rd || dir.starts_with(&format!("{rd}/")))
        || unit.exec_start_pre.contains(&dir);
    if created {
        return (None, None);
    }
    let mut v = warning(proxy, world, Cause::RuntimeDirVolatile, target);
    let name = dir.rsplit('/').next().unwrap_or("app");
    let tmp = dir.starts_with("/tmp/");
    v.summary = format!(
        "{dir} is emptied at boot and nothing recreates it: after a reboot {} cannot bind {path} (socket-missing)",
        unit.unit
    );
    let mut line = format!(
        "{} runs pid {root} ({}); it has no RuntimeDirectory= for {dir}",
        unit.unit,
        l.comm.as_deref().unwrap_or("the app")
    );
    if world.tmpfiles.is_some() {
        line.push_str(", and no tmpfiles.d entry creates it");
    }
    v.evidence.push(line);
    if tmp {
        v.evidence.push(
            "/tmp is cleaned at boot and by systemd-tmpfiles-clean, and a unit with PrivateTmp= sees another /tmp"
                .to_owned(),
        );
    }
    let mut fix = if tmp {
        format!(
            "move the socket to /run/{name}/ and add RuntimeDirectory={name} to {}",
            unit.unit
        )
    } else {
        format!(
            "add RuntimeDirectory={} to {} (systemd creates it at each start)",
            dir.trim_start_matches("/run/"),
            unit.unit
        )
    };
    let _ = write!(
        fix,
        ", or a tmpfiles.d entry: d {dir} 0750 <app user> <group nginx is in> -"
    );
    v.fix = fix;
    (Some(finding(Severity::Warn, v, uses)), None)
}

/// The finding for a configuration `nginx -t` rejects.
#[must_use]
pub fn config_invalid(
    proxy: &Proxy,
    now_ns: u64,
    file: &str,
    message: &str,
    running: bool,
) -> Finding {
    let world = World {
        now_ns,
        ..World::default()
    };
    let mut v = warning(proxy, &world, Cause::ConfigInvalid, file);
    v.summary = if running {
        "nginx -t rejects the configuration on disk: the next reload fails (the running nginx keeps its old one)"
            .to_owned()
    } else {
        "nginx -t rejects the configuration: nginx would not start or reload with it".to_owned()
    };
    v.evidence.extend(
        message
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned),
    );
    v.evidence.truncate(8);
    v.fix = "fix the error nginx names (file:line above), then nginx -t".into();
    Finding {
        severity: if running {
            Severity::Warn
        } else {
            Severity::Fail
        },
        verdict: v,
        config: vec![file.to_owned()],
    }
}

#[cfg(test)]
mod tests;
