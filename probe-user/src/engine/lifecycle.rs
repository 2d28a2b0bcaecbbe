//! Upstream lifecycle causes: an app that crashes while booting (`crash-on-boot`) and an app
//! that was restarted and came back (`upstream-restarting`). Both explain the same symptoms as
//! `socket-missing` / `stale-socket` / `upstream-not-listening` (nothing listens), so the
//! connect causes ask here first: one verdict for one outage, not two.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::report::Part;
use super::state::{ExecFailRecord, ExitRecord, Proc};
use super::target::{Target, covers, parse};
use super::text::{errno_label, fmt_dur, fmt_ns, secs};
use super::view::{ProxyId, View, app_server_of};
use crate::catalog::{Cause, SUPERVISORS, app_server_in_cmdline, app_server_name};

/// An exit this soon after the process began counts as a failed boot.
pub(crate) const BOOT_NS: u64 = 10_000_000_000;
/// Failed boots further apart than this are separate episodes.
pub(crate) const CRASH_WINDOW_NS: u64 = 300_000_000_000;
/// A restart is the same outage only if the new process began within this time of the exit.
pub(crate) const MAX_RESTART_GAP_NS: u64 = 600_000_000_000;
/// Slack for event ordering between the collector's facts and the kernel's events.
const SLACK_NS: u64 = 1_000_000_000;
/// A signal from another process this long before an exit explains the exit (not a crash).
const SIGNALED_NS: u64 = 60_000_000_000;
/// Signals that end a process on purpose (shutdown, reload, timeout kill).
const STOP_SIGNALS: [i32; 6] = [1, 2, 3, 6, 9, 15];
/// A failed exec this long before a process's exit is why it exited.
const EXEC_FAIL_NS: u64 = 10_000_000_000;
/// systemd's child before exec: `(myapp)`.
fn unit_child(comm: &str) -> bool {
    comm.len() > 2 && comm.starts_with('(') && comm.ends_with(')')
}

/// A failed exec that starts an app: of an app server's program, or by a supervisor's child.
pub(crate) fn app_exec_failure(f: &ExecFailRecord) -> bool {
    app_server_name(&f.filename).is_some()
        || unit_child(&f.comm)
        || SUPERVISORS.contains(&f.comm.as_str())
}

/// Successive failed boots of one app.
#[derive(Debug)]
pub(crate) struct CrashLoop<'a> {
    /// Family key (the app's command line).
    pub family: String,
    pub app: Option<&'static str>,
    pub comm: String,
    /// The qualifying exits of the latest episode, oldest first.
    pub exits: Vec<&'a ExitRecord>,
    /// Distinct instances (family roots) that died.
    pub instances: usize,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Where its command line says it binds.
    pub binds: Vec<String>,
    /// The command line named a bind (not just the server's default).
    pub binds_explicit: bool,
    /// Listener targets its family was seen owning.
    pub served: Vec<String>,
    /// Latest instance's pid.
    pub latest_pid: u32,
    /// The app could not even be executed: the latest failed exec, and how many exits followed
    /// one (a wrong virtualenv path in `ExecStart=`: systemd's 203/EXEC, a shell's 127).
    pub exec_fail: Option<&'a ExecFailRecord>,
    pub exec_fails: usize,
}

/// The meaning of an app server's exit code, where it has one.
pub(crate) fn exit_meaning(code: i32, app: Option<&str>) -> Option<&'static str> {
    let gunicorn = matches!(app, Some("gunicorn") | None);
    match code {
        3 if gunicorn => Some("worker failed to boot"),
        4 if gunicorn => Some("app failed to load"),
        126 => Some("command not executable"),
        127 => Some("command not found"),
        // systemd's own exit codes for a unit's process that failed before the app ran.
        200 => Some("systemd 200/CHDIR: WorkingDirectory= failed"),
        203 => Some("systemd 203/EXEC: the program could not be executed"),
        209 => Some("systemd 209/STDOUT: StandardOutput= failed"),
        217 => Some("systemd 217/USER: User= failed"),
        226 => Some("systemd 226/NAMESPACE: namespace setup (PrivateTmp=, ReadWritePaths=) failed"),
        _ => None,
    }
}

/// "exit code 3 (worker failed to boot)".
fn exit_label(code: i32, app: Option<&str>) -> String {
    match exit_meaning(code, app) {
        Some(m) => format!("exit code {code} ({m})"),
        None => format!("exit code {code}"),
    }
}

/// Normalises a bind argument (`127.0.0.1:8000`, `unix:/x`, `/x`, `:8000`, `tcp://h:p`,
/// `unix:///x`, `localhost:8000`) into the target format.
fn normalize_bind(raw: &str) -> Option<String> {
    let s = raw
        .split('?')
        .next()
        .unwrap_or(raw)
        .trim_matches(|c| c == '"' || c == '\'');
    if let Some(p) = s
        .strip_prefix("unix://")
        .or_else(|| s.strip_prefix("unix:"))
    {
        return Some(format!("unix:{p}"));
    }
    if s.starts_with('/') {
        return Some(format!("unix:{s}"));
    }
    let s = s
        .strip_prefix("tcp://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let (host, port) = s.rsplit_once(':')?;
    let host = match host {
        "" | "*" => "0.0.0.0",
        "localhost" => "127.0.0.1",
        h => h,
    };
    let t = format!("{host}:{port}");
    matches!(parse(&t), Target::Inet(..)).then_some(t)
}

/// Where a command line says the app binds (gunicorn, uvicorn, uwsgi, hypercorn, daphne,
/// puma, waitress flags), with each server's default when it names none, and whether the
/// command line named them (false: the server's default). A config file (`-c`) may bind
/// elsewhere, so no default is assumed then.
pub(crate) fn parse_binds(cmdline: &str) -> (Vec<String>, bool) {
    const BIND_FLAGS: [&str; 12] = [
        "--shared-socket",
        "--bind",
        "-b",
        "--listen",
        "--socket",
        "-s",
        "--http-socket",
        "--http",
        "--uwsgi-socket",
        "--fastcgi-socket",
        "--uds",
        "--unix-socket",
    ];
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let mut out: Vec<String> = Vec::new();
    let (mut host, mut port): (Option<String>, Option<String>) = (None, None);
    for (i, w) in words.iter().enumerate() {
        let (flag, val) = match w.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f, Some(v)),
            _ => (*w, words.get(i + 1).copied()),
        };
        if BIND_FLAGS.contains(&flag) || flag == "-u" {
            match val.and_then(normalize_bind) {
                Some(t) => out.push(t),
                // daphne -b HOST (no port)
                None => host = val.map(str::to_owned),
            }
        } else if flag == "--host" {
            host = val.map(str::to_owned);
        } else if flag == "--port" || flag == "-p" {
            port = val.map(str::to_owned);
        } else if let Some(rest) = w
            .strip_prefix("-b")
            .filter(|r| !r.is_empty() && !w.starts_with("--"))
            && let Some(t) = normalize_bind(rest)
        {
            out.push(t);
        }
    }
    let app = app_server_in_cmdline(cmdline);
    let config = words
        .iter()
        .any(|w| matches!(*w, "-c" | "--config") || w.starts_with("--config="));
    let defaults = !config && matches!(app, Some("gunicorn" | "uvicorn" | "hypercorn" | "daphne"));
    let explicit = !out.is_empty() || host.is_some() || port.is_some();
    if out.is_empty() && (explicit || defaults) {
        let h = host.unwrap_or_else(|| "127.0.0.1".into());
        let p = port.unwrap_or_else(|| "8000".into());
        if let Some(t) = normalize_bind(&format!("{h}:{p}")) {
            out.push(t);
        }
    }
    out.sort();
    out.dedup();
    (out, explicit)
}

/// Does a bind or served listener of the app cover the proxy's target?
fn serves(list: &[String], target: &str) -> bool {
    list.iter().any(|b| covers(b, target))
}

/// Did another process end this one on purpose (a stop or timeout signal before the exit)?
fn signaled(v: &View<'_>, e: &ExitRecord) -> bool {
    let since = e
        .proc
        .began_ns()
        .unwrap_or(0)
        .max(e.ns.saturating_sub(SIGNALED_NS));
    v.st.signals.iter().any(|s| {
        s.target_pid == e.proc.pid
            && s.sender_pid != e.proc.pid
            && s.effective()
            && STOP_SIGNALS.contains(&s.sig)
            && (since..=e.ns).contains(&s.ns)
    })
}

/// The latest failed exec of each pid (the ones that start apps), to explain the exits that
/// follow them.
pub(crate) type ExecFails<'a> = HashMap<u32, &'a ExecFailRecord>;

pub(crate) fn exec_fails<'a>(v: &View<'a>) -> ExecFails<'a> {
    let mut m: ExecFails<'a> = HashMap::new();
    for f in v.st.exec_failures.iter().filter(|f| app_exec_failure(f)) {
        m.insert(f.pid, f);
    }
    m
}

/// The failed exec that made this process exit: seen shortly before its exit, with no
/// successful exec after it.
fn exec_failure_of<'a>(fails: &ExecFails<'a>, e: &ExitRecord) -> Option<&'a ExecFailRecord> {
    let f = fails.get(&e.proc.pid)?;
    (f.ns <= e.ns && e.ns - f.ns <= EXEC_FAIL_NS && e.proc.exec_ns.is_none_or(|x| x < f.ns))
        .then_some(*f)
}

/// systemd's child of a unit that exited with one of systemd's setup codes without executing
/// anything: `(myapp)` exiting 200 (CHDIR), 217 (USER), 226 (NAMESPACE)...
fn unit_setup_failure(e: &ExitRecord) -> bool {
    unit_child(&e.proc.comm)
        && e.proc.exec_ns.is_none()
        && e.exit_code.is_some_and(|c| (200..=245).contains(&c))
}

/// A failed boot: an upstream-ish process exiting non-zero with code 3/4, or soon after it began,
/// or after failing to exec the app, and not because another process stopped it.
fn failed_boot(v: &View<'_>, fails: &ExecFails<'_>, e: &ExitRecord) -> bool {
    let Some(code) = e.exit_code.filter(|&c| c != 0) else {
        return false;
    };
    if exec_failure_of(fails, e).is_some() || unit_setup_failure(e) {
        return !signaled(v, e);
    }
    // Cheap tests first: hosts have many short-lived processes exiting non-zero.
    let early = e
        .proc
        .began_ns()
        .is_some_and(|b| b <= e.ns && e.ns - b <= BOOT_NS);
    if !(matches!(code, 3 | 4) || early) {
        return false;
    }
    let pid = e.proc.pid;
    if v.is_proxy(pid, &e.proc.comm) {
        return false;
    }
    if app_server_of(&e.proc).is_none() && !v.is_upstream_broad(pid) {
        return false;
    }
    !signaled(v, e)
}

/// Folds exits of processes known only by name (a forked worker that died before its facts
/// were read: no parent, no command line) into the family of the same name that failed around
/// the same time, so one boot failure is one loop, not a second anonymous one.
fn merge_anonymous<'a>(v: &View<'a>, by_family: &mut BTreeMap<String, Vec<&'a ExitRecord>>) {
    let anonymous: Vec<String> = by_family
        .iter()
        .filter(|(_, exits)| {
            exits.iter().all(|e| {
                e.proc.cmdline.is_empty()
                    && e.proc.exe.is_empty()
                    && v.family_root(e.proc.pid) == e.proc.pid
            })
        })
        .map(|(k, _)| k.clone())
        .collect();
    for key in anonymous {
        let Some(exits) = by_family.get(&key) else {
            continue;
        };
        let comm = exits
            .first()
            .map(|e| e.proc.comm.clone())
            .unwrap_or_default();
        let near = |other: &[&ExitRecord]| {
            other.iter().any(|o| {
                o.proc.comm == comm && exits.iter().any(|e| e.ns.abs_diff(o.ns) <= CRASH_WINDOW_NS)
            })
        };
        let Some(target) = by_family
            .iter()
            .find(|(k, other)| **k != key && near(other))
            .map(|(k, _)| k.clone())
        else {
            continue;
        };
        if let Some(moved) = by_family.remove(&key)
            && let Some(into) = by_family.get_mut(&target)
        {
            into.extend(moved);
        }
    }
}

/// Every app whose latest episode is a crash loop (two failed boots within the window, or one
/// with gunicorn's boot/load error codes).
pub(crate) fn crash_loops<'a>(v: &View<'a>) -> Vec<CrashLoop<'a>> {
    let fails = exec_fails(v);
    let mut by_family: BTreeMap<String, Vec<&'a ExitRecord>> = BTreeMap::new();
    for e in &v.st.exits {
        if failed_boot(v, &fails, e) {
            // A process that never ran the app is known by what it failed to run.
            let key = if let Some(f) = exec_failure_of(&fails, e) {
                format!("exec {}", f.filename)
            } else if unit_setup_failure(e) {
                format!("unit {}", e.proc.comm)
            } else {
                v.family_key(e.proc.pid, &e.proc)
            };
            by_family.entry(key).or_default().push(e);
        }
    }
    merge_anonymous(v, &mut by_family);
    let mut loops = Vec::new();
    for (family, mut exits) in by_family {
        exits.sort_by_key(|e| e.ns);
        // The latest episode: walk back while exits are close together.
        let mut start = exits.len() - 1;
        while start > 0 && exits[start].ns - exits[start - 1].ns <= CRASH_WINDOW_NS {
            start -= 1;
        }
        let episode: Vec<&ExitRecord> = exits.split_off(start);
        let boot_codes = episode.iter().any(|e| matches!(e.exit_code, Some(3 | 4)));
        let exec_fail = episode
            .iter()
            .filter_map(|e| exec_failure_of(&fails, e))
            .max_by_key(|f| f.ns);
        let exec_fails = episode
            .iter()
            .filter(|e| exec_failure_of(&fails, e).is_some())
            .count();
        if episode.len() < 2 && !boot_codes && exec_fail.is_none() {
            continue;
        }
        let roots: BTreeSet<u32> = episode.iter().map(|e| v.family_root(e.proc.pid)).collect();
        let mut binds: Vec<String> = Vec::new();
        let mut binds_explicit = false;
        let mut served: Vec<String> = Vec::new();
        for e in &episode {
            let root = v.family_root(e.proc.pid);
            let cmd = v
                .proc(root)
                .map_or(e.proc.cmdline.as_str(), |p| p.cmdline.as_str());
            for c in [cmd, e.proc.cmdline.as_str()] {
                let (b, explicit) = parse_binds(c);
                binds.extend(b);
                binds_explicit |= explicit;
            }
            served.extend(v.served_targets(e.proc.pid).into_iter().map(str::to_owned));
        }
        binds.sort();
        binds.dedup();
        served.sort();
        served.dedup();
        let (Some(first), Some(last)) = (episode.first(), episode.last()) else {
            continue;
        };
        let latest_pid = v.family_root(last.proc.pid);
        let comm = match exec_fail {
            // The program it could not run, not the shell or supervisor child that tried.
            Some(f) => f
                .filename
                .rsplit('/')
                .next()
                .unwrap_or(&f.filename)
                .to_owned(),
            None => v
                .proc(latest_pid)
                .map_or_else(|| last.proc.comm.clone(), |p| p.comm.clone()),
        };
        loops.push(CrashLoop {
            app: exec_fail
                .and_then(|f| app_server_name(&f.filename))
                .or_else(|| episode.iter().find_map(|e| app_server_of(&e.proc))),
            exec_fail,
            exec_fails,
            family,
            comm,
            instances: roots.len().max(1),
            first_ns: first.ns,
            last_ns: last.ns,
            exits: episode,
            binds,
            binds_explicit,
            served,
            latest_pid,
        });
    }
    loops
}

/// The crash loop that explains failed connects to `target` between `first_ns` and `last_ns`:
/// one that binds or served it, or the only crash loop around then when where it binds is not known.
pub(crate) fn loop_for<'l, 'a>(
    loops: &'l [CrashLoop<'a>],
    target: &str,
    first_ns: u64,
    last_ns: u64,
) -> Option<&'l CrashLoop<'a>> {
    let near = |l: &&CrashLoop<'_>| {
        last_ns.saturating_add(60_000_000_000) >= l.first_ns
            && first_ns <= l.last_ns.saturating_add(CRASH_WINDOW_NS)
    };
    let mut near_loops = loops.iter().filter(near);
    if let Some(l) = loops
        .iter()
        .filter(near)
        .find(|l| serves(&l.binds, target) || serves(&l.served, target))
    {
        return Some(l);
    }
    let only = near_loops.next()?;
    (near_loops.next().is_none() && !only.binds_explicit && only.served.is_empty()).then_some(only)
}

/// The evidence lines of a crash loop: its exits, its restart rate.
pub(crate) fn loop_evidence(l: &CrashLoop<'_>) -> Vec<String> {
    let mut ev = Vec::new();
    for e in l.exits.iter().rev().take(4).rev() {
        let code = e.exit_code.unwrap_or(0);
        let after = e
            .proc
            .began_ns()
            .filter(|&b| b <= e.ns)
            .map(|b| format!(", {} after it started", fmt_dur(e.ns - b)))
            .unwrap_or_default();
        ev.push(format!(
            "{} pid {}: {} at {}{after}",
            e.proc.comm,
            e.proc.pid,
            exit_label(code, l.app),
            fmt_ns(e.ns)
        ));
    }
    if l.exits.len() > 4 {
        ev.push(format!(
            "... {} failed exits in this episode",
            l.exits.len()
        ));
    }
    let span = l.last_ns - l.first_ns;
    if l.instances >= 2 && span > 0 {
        #[expect(clippy::cast_precision_loss, reason = "a handful of restarts")]
        let per_min = (l.instances - 1) as f64 / secs(span) * 60.0;
        ev.push(format!(
            "{} instances died in {} ({per_min:.1} restarts/min): a crash loop",
            l.instances,
            fmt_dur(span)
        ));
    }
    if !l.binds.is_empty() {
        ev.push(format!("its command line binds {}", l.binds.join(", ")));
    }
    ev
}

/// The first missing (or, for EACCES, last existing) component of a failed exec's program path,
/// from its walk in the facts: `/opt/app/venv does not exist`.
fn exec_path_line(v: &View<'_>, f: &ExecFailRecord) -> Option<String> {
    let (_, info) = v.st.paths.get(&f.filename)?;
    if let Some(c) = info.components.iter().find(|c| !c.exists) {
        let what = if c.path == f.filename {
            "the program"
        } else {
            "directory"
        };
        return Some(format!("{what} {} does not exist", c.path));
    }
    let last = info.components.last()?;
    Some(format!(
        "{} exists with mode {} {}:{}",
        last.path,
        super::text::mode_string(last.mode),
        last.uid,
        last.gid
    ))
}

/// The crash-on-boot part of an app whose program cannot even be executed.
fn exec_fail_part(
    v: &View<'_>,
    l: &CrashLoop<'_>,
    f: &ExecFailRecord,
    mut p: Part,
    target: &str,
) -> Part {
    let missing = exec_path_line(v, f);
    p.summary = format!(
        "{} cannot start: exec of {} fails with {}{}, so nothing serves {target}",
        l.comm,
        f.filename,
        errno_label(f.errno),
        missing
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    p.evidence.insert(
        0,
        format!(
            "exec of {} failed with {} by pid {} ({}) at {}, then it exited; {} start(s) failed this way{}",
            f.filename,
            errno_label(f.errno),
            f.pid,
            f.comm,
            fmt_ns(f.ns),
            l.exec_fails,
            missing
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
    );
    let fix_path = match f.errno {
        13 => format!(
            "make {} executable (chmod +x) by the unit's user, and its filesystem not noexec",
            f.filename
        ),
        _ => format!(
            "{} does not exist: recreate the virtualenv (python3 -m venv; pip install -r requirements.txt) or \
             point ExecStart= at the real one",
            f.filename
        ),
    };
    p.fix = format!(
        "fix the program path in the unit's ExecStart= (systemd logs it as status=203/EXEC): {fix_path}; then \
         systemctl daemon-reload && systemctl restart <unit>"
    );
    p
}

/// The part for failed connects explained by a crash loop.
pub(crate) fn crash_part(
    v: &View<'_>,
    l: &CrashLoop<'_>,
    proxy: ProxyId,
    target: &str,
    nothing_listens: &str,
) -> Part {
    let mut p = Part::new(Cause::CrashOnBoot, proxy, target);
    p.upstream_pid = l.exits.last().map(|e| e.proc.pid);
    let codes: BTreeSet<i32> = l.exits.iter().filter_map(|e| e.exit_code).collect();
    let codes: Vec<String> = codes.into_iter().map(|c| exit_label(c, l.app)).collect();
    p.summary = format!(
        "{} keeps dying right after it starts ({}), so nothing serves {target}",
        l.comm,
        codes.join(", ")
    );
    p.evidence = loop_evidence(l);
    p.evidence.push(nothing_listens.to_owned());
    p.fix = format!(
        "read {}'s startup error (journalctl -u <its unit> -n 100, or run it by hand): import errors, a missing \
         env var or SECRET_KEY, bad settings or module path; roll back the release if it began with a deploy",
        l.comm
    );
    p.crash_family = Some(l.family.clone());
    if let Some(f) = l.exec_fail {
        return exec_fail_part(v, l, f, p, target);
    }
    if l.exits.iter().any(|e| unit_setup_failure(e)) {
        let unit = l.comm.trim_matches(['(', ')']);
        p.summary = format!(
            "unit {unit}'s process dies before the app even runs: {}, so nothing serves {target}",
            codes.join(", ")
        );
        p.fix = format!(
            "fix the unit's setup that fails (journalctl -u {unit} -n 50): the WorkingDirectory= (200/CHDIR), \
             User= (217/USER), or paths for PrivateTmp=/ReadWritePaths= (226/NAMESPACE) must exist; then \
             systemctl daemon-reload && systemctl restart {unit}"
        );
    }
    p
}

/// A crash loop no proxy failure pointed at: reported alone when the app is an upstream.
pub(crate) fn standalone_part(v: &View<'_>, l: &CrashLoop<'_>) -> Option<Part> {
    if l.app.is_none() && !v.is_upstream(l.latest_pid) {
        return None;
    }
    // Every proxy's upstreams are known (complete, read since its last reload) and none is
    // where this app binds or listens: it is nobody's upstream, its crashes cost no 502.
    let known: Vec<&crate::facts::ProxyConfig> = v.st.proxy_configs.values().collect();
    let complete = !known.is_empty()
        && known
            .iter()
            .all(|c| !c.partial && !v.st.stale_configs.contains(&c.pid));
    let places: Vec<&String> = l.served.iter().chain(l.binds.iter()).collect();
    if complete
        && !places.is_empty()
        && !known.iter().any(|c| {
            c.targets
                .iter()
                .any(|t| places.iter().any(|p| covers(t, p) || covers(p, t)))
        })
    {
        return None;
    }
    let target = l
        .served
        .first()
        .or_else(|| l.binds.first())
        .cloned()
        .unwrap_or_else(|| format!("{} pid {}", l.comm, l.latest_pid));
    let mut p = crash_part(
        v,
        l,
        v.any_proxy(),
        &target,
        "no failed connect from a proxy seen yet",
    );
    p.count = l.exits.len() as u64;
    p.first_ns = l.first_ns;
    p.last_ns = l.last_ns;
    Some(p)
}

/// An app that went away and came back on the same target.
#[derive(Debug)]
pub(crate) struct Restart<'a> {
    /// The exit that began the outage.
    pub old: &'a ExitRecord,
    /// When the outage began: the stop signal the old process obeyed (a graceful shutdown
    /// closes the socket first), else its exit.
    pub down_ns: u64,
    pub new_pid: u32,
    pub new_comm: String,
    pub new_began_ns: Option<u64>,
    /// The listener that serves the target again, first seen then.
    pub listener: &'a str,
    pub back_ns: u64,
    /// Failed boots between the exit and the comeback.
    pub failed_boots: usize,
}

impl Restart<'_> {
    /// The failures inside `[lo, hi]` belong to the restart.
    pub(crate) fn window(&self) -> (u64, u64) {
        (
            self.down_ns.saturating_sub(SLACK_NS),
            self.back_ns.saturating_add(SLACK_NS),
        )
    }
}

/// When another process's stop signal to this one (obeyed: it exited within the minute) began
/// its shutdown.
fn stop_asked(v: &View<'_>, e: &ExitRecord) -> Option<u64> {
    v.st.signals
        .iter()
        .filter(|s| {
            s.target_pid == e.proc.pid
                && s.sender_pid != e.proc.pid
                && s.effective()
                && matches!(s.sig, 2 | 3 | 15)
                && s.ns <= e.ns
                && e.ns - s.ns <= SIGNALED_NS
        })
        .map(|s| s.ns)
        .min()
}

/// Is `target` served again by a new process after an old one serving it exited? `worker` is the
/// proxy process whose connects failed: a listener in another mount namespace than its own does
/// not serve it.
pub(crate) fn find_restart<'a>(v: &View<'a>, target: &str, worker: u32) -> Option<Restart<'a>> {
    let mut best: Option<Restart<'a>> = None;
    let fails = exec_fails(v);
    for l in v.st.listeners_for(worker) {
        let Some(pid) = l.pid else { continue };
        if !covers(&l.target, target) || v.is_proxy(pid, v.comm(pid)) {
            continue;
        }
        if v.proc(pid).is_some_and(|p| p.exited_ns.is_some()) {
            continue;
        }
        if parse(target).is_unix() && v.foreign_ns(pid, worker).is_some() {
            continue;
        }
        let Some(seen_ns) =
            v.st.owners
                .get(&l.target)
                .and_then(|os| os.iter().find(|o| o.pid == pid))
                .map(|o| o.first_ns)
        else {
            continue;
        };
        let root = v.family_root(pid);
        let began = v
            .proc(root)
            .and_then(Proc::began_ns)
            .or_else(|| v.proc(pid).and_then(Proc::began_ns));
        // It cannot listen before it began.
        let back_ns = seen_ns.max(began.unwrap_or(0));
        let new_start = began.unwrap_or(back_ns).min(back_ns);
        let fallback = v.proc(pid).cloned().unwrap_or_default();
        let family = v.family_key(pid, &fallback);
        // Processes that owned a listener on this target before.
        let prior: BTreeSet<u32> =
            v.st.owners
                .iter()
                .filter(|(t, _)| covers(t, target))
                .flat_map(|(t, os)| {
                    os.iter()
                        .filter(|o| v.st.reaches(worker, t, o.net_ns))
                        .map(|o| o.pid)
                })
                .filter(|&o| o != pid && o != root && v.family_root(o) != root)
                .collect();
        let candidates: Vec<&ExitRecord> =
            v.st.exits
                .iter()
                .filter(|e| {
                    e.ns <= new_start.saturating_add(SLACK_NS / 2)
                        && e.ns.saturating_add(MAX_RESTART_GAP_NS) >= new_start
                        && e.proc.pid != pid
                        && e.proc.pid != root
                })
                .collect();
        let old = candidates
            .iter()
            .filter(|e| prior.contains(&e.proc.pid))
            .max_by_key(|e| e.ns)
            .or_else(|| {
                candidates
                    .iter()
                    .filter(|e| v.family_key(e.proc.pid, &e.proc) == family)
                    .min_by_key(|e| e.ns)
            });
        let Some(&old) = old else { continue };
        let failed_boots =
            v.st.exits
                .iter()
                .filter(|e| e.ns > old.ns && e.ns <= back_ns && failed_boot(v, &fails, e))
                .count();
        let r = Restart {
            old,
            down_ns: stop_asked(v, old).unwrap_or(old.ns),
            new_pid: root,
            new_comm: v.comm(root).to_owned(),
            new_began_ns: began,
            listener: &l.target,
            back_ns,
            failed_boots,
        };
        if best.as_ref().is_none_or(|b| r.back_ns > b.back_ns) {
            best = Some(r);
        }
    }
    best
}

/// The part for failed connects during a restart.
pub(crate) fn restart_part(
    v: &View<'_>,
    r: &Restart<'_>,
    proxy: ProxyId,
    target: &str,
    (count, first_ns, last_ns): (u64, u64, u64),
) -> Part {
    let mut p = Part::new(Cause::UpstreamRestarting, proxy, target);
    p.upstream_pid = Some(r.new_pid);
    p.count = count;
    p.first_ns = first_ns;
    p.last_ns = last_ns;
    let gap = r.back_ns.saturating_sub(r.down_ns);
    p.summary = format!(
        "{} was restarted: nothing listened on {target} for about {} (old pid {} gone, new pid {} listening again)",
        if r.new_comm.is_empty() {
            "the upstream"
        } else {
            &r.new_comm
        },
        fmt_dur(gap),
        r.old.proc.pid,
        r.new_pid
    );
    if let Some(d) = v.death_line(r.old.proc.pid) {
        p.evidence.push(d);
    }
    let started = r
        .new_began_ns
        .map(|b| format!(" started at {}", fmt_ns(b)))
        .unwrap_or_default();
    let exe = v
        .proc(r.new_pid)
        .map(|q| q.exe.as_str())
        .filter(|e| !e.is_empty());
    let exe = exe.map(|e| format!(" ({e})")).unwrap_or_default();
    p.evidence.push(format!(
        "new {} pid {}{exe}{started}, listening on {} (seen at {})",
        r.new_comm,
        r.new_pid,
        r.listener,
        fmt_ns(r.back_ns)
    ));
    if r.failed_boots > 0 {
        p.evidence
            .push(format!("{} failed start(s) in between", r.failed_boots));
    }
    p.evidence.push(format!(
        "{count} failed connects from {} between {} and {}, inside the restart window ({} to {}, {})",
        if p.proxy.comm.is_empty() {
            "the proxy"
        } else {
            &p.proxy.comm
        },
        fmt_ns(first_ns),
        fmt_ns(last_ns),
        fmt_ns(r.down_ns),
        fmt_ns(r.back_ns),
        fmt_dur(gap)
    ));
    p.fix = "restart without closing the socket: reload gracefully (gunicorn: HUP reloads workers, USR2 upgrades \
             the binary; systemctl reload), or use systemd socket activation so the listening socket outlives \
             the process; deploy behind a health check"
        .into();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind_targets(cmdline: &str) -> Vec<String> {
        parse_binds(cmdline).0
    }

    #[test]
    fn binds_from_command_lines() {
        assert_eq!(
            bind_targets("gunicorn --bind unix:/run/g/app.sock app:app"),
            ["unix:/run/g/app.sock"]
        );
        assert_eq!(
            bind_targets("/venv/bin/python /venv/bin/gunicorn -b 0.0.0.0:8001 a:b"),
            ["0.0.0.0:8001"]
        );
        assert_eq!(
            bind_targets("gunicorn --bind=localhost:9000 a:b"),
            ["127.0.0.1:9000"]
        );
        assert_eq!(
            bind_targets("gunicorn -b127.0.0.1:7000 a:b"),
            ["127.0.0.1:7000"]
        );
        assert_eq!(bind_targets("gunicorn app:app"), ["127.0.0.1:8000"]);
        assert_eq!(
            bind_targets("uvicorn main:app --port 9001"),
            ["127.0.0.1:9001"]
        );
        assert_eq!(
            bind_targets("uvicorn main:app --uds /run/u.sock"),
            ["unix:/run/u.sock"]
        );
        assert_eq!(
            bind_targets("uwsgi --socket /run/uwsgi.sock --ini x"),
            ["unix:/run/uwsgi.sock"]
        );
        assert_eq!(bind_targets("uwsgi --http :8080"), ["0.0.0.0:8080"]);
        assert_eq!(
            bind_targets("uwsgi --shared-socket /run/u.sock --http-socket =0"),
            ["unix:/run/u.sock"]
        );
        assert_eq!(
            bind_targets("puma -b unix:///run/puma.sock"),
            ["unix:/run/puma.sock"]
        );
        assert_eq!(bind_targets("sleep 100"), Vec::<String>::new());
        assert_eq!(
            bind_targets("gunicorn -c /etc/gunicorn.conf.py app:app"),
            Vec::<String>::new()
        );
        assert!(
            !parse_binds("gunicorn app:app").1,
            "a default is not explicit"
        );
    }

    #[test]
    fn exit_codes_have_meanings() {
        assert_eq!(
            exit_meaning(3, Some("gunicorn")),
            Some("worker failed to boot")
        );
        assert_eq!(exit_meaning(4, None), Some("app failed to load"));
        assert_eq!(exit_meaning(3, Some("puma")), None);
        assert_eq!(exit_meaning(1, Some("gunicorn")), None);
    }
}
