//! `cargo xtask soak`: the whole pipeline for minutes on end (issue #18's soak). A real nginx in
//! front of three healthy upstreams (gunicorn on a unix socket, and the switchable app
//! `bench/soak_app.py` on a unix socket and on a TCP port) under steady, bounded traffic; `gwtrace
//! serve` in its default mode with JSON verdicts, Prometheus metrics (scraped every 10 s) and a
//! rotating record file. Every minute one site breaks for a while through a real mechanism, in
//! turn: its socket file removed (socket-missing), its TCP listener closed (upstream-not-listening),
//! its socket's directory closed to nginx's user (socket-permission); then it is repaired.
//!
//! Ground truth is nginx: the 502s the client gets and the lines of its error.log. Measured: the
//! agent's RSS, CPU and locked BPF memory every 10 s, loss (the summary, the metrics, the `loss`
//! lines of the record files), per incident the time from its first 502 to the first verdict line
//! naming its cause and target, verdicts no incident explains, flapping, `hooks` lines (escalations
//! and calms, when gwtrace writes them), and the rotated record files replayed by `gwtrace explain`.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use gwtrace_lab::{Stack, http_get, support::free_port};
use serde_json::{Value, json};

use super::{
    READY_TIMEOUT, STOP_GRACE, report,
    tracer::{self, Config, Tracer},
};

/// The switchable upstream.
const SOAK_APP: &str = include_str!("../../../bench/soak_app.py");

/// Requests a second the client sends (round-robin over the sites, a new connection each).
const RATE: u32 = 150;
/// When the first incident starts, after gwtrace is attached.
const FIRST_AT: Duration = Duration::from_secs(20);
/// One incident a minute.
const EVERY: Duration = Duration::from_secs(60);
/// How long a site stays broken.
const LASTS: Duration = Duration::from_secs(12);
/// Verdict lines up to this long after the repair still belong to the incident.
const GRACE: Duration = Duration::from_secs(5);
/// Time after the repair during which the broken site's answers may still fail.
const SETTLE: Duration = Duration::from_secs(1);
/// Agent samples and metrics scrapes.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Targets (issue #18, and the bench's RSS target).
const LATENCY_TARGET_S: f64 = 2.0;
const RSS_TARGET_MIB: f64 = 48.0;
/// Record file rotation, as the brief runs the daemon.
const ROTATE_MB: u32 = 1;
const ROTATE_KEEP: u32 = 3;

/// Options of `cargo xtask soak`.
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    pub secs: u64,
}

impl Opts {
    /// The full soak (600 s): the one whose figures the README shows.
    const fn complete(self) -> bool {
        self.secs >= 600
    }
}

/// The kinds of incident, injected in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `soak_app`'s unix socket file removed (it stops listening): ENOENT.
    SocketMissing,
    /// `soak_app`'s TCP listener closed: ECONNREFUSED.
    TcpRefused,
    /// The directory of gunicorn's socket made 0700 (root): nginx's workers get EACCES.
    SocketPermission,
}

impl Kind {
    const ALL: [Self; 3] = [
        Self::SocketMissing,
        Self::TcpRefused,
        Self::SocketPermission,
    ];

    const fn name(self) -> &'static str {
        match self {
            Self::SocketMissing => "socket-removed",
            Self::TcpRefused => "tcp-listener-closed",
            Self::SocketPermission => "socket-dir-closed",
        }
    }

    /// The cause gwtrace must name.
    const fn cause(self) -> &'static str {
        match self {
            Self::SocketMissing => "socket-missing",
            Self::TcpRefused => "upstream-not-listening",
            Self::SocketPermission => "socket-permission",
        }
    }

    /// What nginx's error.log says about each failure.
    const fn nginx_log(self) -> &'static str {
        match self {
            Self::SocketMissing => "(2: No such file or directory)",
            Self::TcpRefused => "(111: Connection refused)",
            Self::SocketPermission => "(13: Permission denied)",
        }
    }

    /// The site it breaks (an index into [`Sites::all`]).
    const fn site(self) -> usize {
        match self {
            Self::SocketPermission => 0,
            Self::SocketMissing => 1,
            Self::TcpRefused => 2,
        }
    }
}

/// nginx's sites: (location, upstream target as gwtrace prints it).
struct Sites {
    all: [(String, String); 3],
    /// `soak_app`'s control files (the app does not listen while one exists): unix, TCP.
    unix_down: PathBuf,
    tcp_down: PathBuf,
    /// The directory of gunicorn's socket.
    perm_dir: PathBuf,
}

/// A free loopback port with no listener on the host whose number differs from it in one digit
/// (gwtrace calls such a listener a near miss of a target nothing listens on: `wrong-target`).
fn lonely_port() -> anyhow::Result<u16> {
    let listening = listening_ports();
    for _ in 0..200 {
        let p = free_port().context("picking a free port")?;
        let near = listening.iter().any(|&l| {
            let (a, b) = (p.to_string(), l.to_string());
            a.len() == b.len() && a.chars().zip(b.chars()).filter(|(x, y)| x != y).count() == 1
        });
        if !near {
            return Ok(p);
        }
    }
    bail!("no free port without a listening neighbour on this host")
}

/// TCP ports something listens on (`/proc/net/tcp`, `tcp6`).
fn listening_ports() -> BTreeSet<u16> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    // st 0A = LISTEN
                    if f.get(3) != Some(&"0A") {
                        return None;
                    }
                    let port = f.get(1)?.rsplit_once(':')?.1;
                    u16::from_str_radix(port, 16).ok()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Builds the stack: gunicorn at `/`, `soak_app` on a unix socket at `/u/` and on TCP at `/t/`.
fn build(stack: &mut Stack) -> anyhow::Result<Sites> {
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m))
            .with_context(|| format!("chmod {m:o} {}", p.display()))
    };
    let perm_dir = stack.path("perm");
    let sock_dir = stack.path("sock");
    for d in [&perm_dir, &sock_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        mode(d, 0o755)?;
    }
    let app = stack.path("soak_app.py");
    std::fs::write(&app, SOAK_APP).context("writing soak_app.py")?;
    // Distinct socket names: other labs on the host listen on `app.sock`, a near miss otherwise.
    let gunicorn = format!("unix:{}", perm_dir.join("soak-gunicorn.sock").display());
    let unix = format!("unix:{}", sock_dir.join("soak-app.sock").display());
    let tcp = format!("127.0.0.1:{}", lonely_port()?);
    let sites = Sites {
        all: [
            ("/".to_owned(), gunicorn.clone()),
            ("/u/".to_owned(), unix.clone()),
            ("/t/".to_owned(), tcp.clone()),
        ],
        unix_down: stack.path("unix.down"),
        tcp_down: stack.path("tcp.down"),
        perm_dir,
    };
    stack.gunicorn(&gunicorn, &[], &[])?;
    for (bind, control) in [(&unix, &sites.unix_down), (&tcp, &sites.tcp_down)] {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(&app).arg(bind).arg(control);
        stack.spawn(&mut cmd)?;
    }
    for t in [&gunicorn, &unix, &tcp] {
        stack.wait_listening(t)?;
    }
    stack.upstream = gunicorn;
    stack.sites.push(sites.all[1].clone());
    stack.sites.push(sites.all[2].clone());
    stack.start_nginx()?;
    Ok(sites)
}

/// Is `target` accepting connections now?
fn listening(target: &str) -> bool {
    target.strip_prefix("unix:").map_or_else(
        || TcpStream::connect(target).is_ok(),
        |p| std::os::unix::net::UnixStream::connect(p).is_ok(),
    )
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while !f() {
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Breaks the incident's site.
fn inject(kind: Kind, sites: &Sites) -> anyhow::Result<()> {
    let target = &sites.all[kind.site()].1;
    match kind {
        Kind::SocketMissing | Kind::TcpRefused => {
            let control = if kind == Kind::SocketMissing {
                &sites.unix_down
            } else {
                &sites.tcp_down
            };
            std::fs::write(control, b"down\n").context("writing the control file")?;
            wait_until(&format!("{target} to stop listening"), || {
                !listening(target)
            })
        }
        Kind::SocketPermission => {
            std::fs::set_permissions(&sites.perm_dir, std::fs::Permissions::from_mode(0o700))
                .context("chmod 700 the socket's directory")
        }
    }
}

/// Repairs the incident's site and waits until it listens (for nginx's user) again.
fn repair(kind: Kind, sites: &Sites) -> anyhow::Result<()> {
    let target = &sites.all[kind.site()].1;
    match kind {
        Kind::SocketMissing => std::fs::remove_file(&sites.unix_down)?,
        Kind::TcpRefused => std::fs::remove_file(&sites.tcp_down)?,
        Kind::SocketPermission => {
            std::fs::set_permissions(&sites.perm_dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    wait_until(&format!("{target} to listen again"), || listening(target))
}

/// One answer the client got.
#[derive(Clone, Copy, Debug)]
struct Answer {
    at: Instant,
    site: usize,
    status: Option<u16>,
}

/// The bounded client: `RATE` requests a second, round-robin over the sites, each checked.
fn client(port: u16, paths: &[String], stop: &AtomicBool) -> Vec<Answer> {
    let every = Duration::from_secs_f64(1.0 / f64::from(RATE));
    let mut out = Vec::new();
    let mut next = Instant::now();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let site = n % paths.len();
        let status = http_get(port, &paths[site], Duration::from_secs(2));
        out.push(Answer {
            at: Instant::now(),
            site,
            status,
        });
        n += 1;
        next += every;
        match next.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            // Behind (a slow answer): do not burst to catch up.
            None => next = Instant::now(),
        }
    }
    out
}

/// One sample of the agent.
#[derive(Clone, Debug, serde::Serialize)]
struct Sample {
    t_s: f64,
    rss_kib: u64,
    hwm_kib: u64,
    cpu_ms: f64,
    bpf_memlock_kib: u64,
    /// bpftrace processes on the host (other tracers' programs make classic tracepoints skip
    /// runs: `tracepoint_recursion` losses).
    bpftrace_procs: usize,
    /// One scrape of /metrics: `None` when it failed.
    metrics: Option<Scrape>,
}

/// What one scrape of gwtrace's /metrics said (sums over labels).
#[derive(Clone, Debug, Default, serde::Serialize)]
struct Scrape {
    lost_events: f64,
    connect_failures: f64,
    verdicts_active: f64,
    events: f64,
}

fn scrape(addr: &str) -> anyhow::Result<Scrape> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text).context("reading /metrics")?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1) != Some("200") {
        bail!(
            "/metrics answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(parse_metrics(body))
}

/// Sums the series of the metrics the soak watches.
fn parse_metrics(body: &str) -> Scrape {
    let mut m = Scrape::default();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        match name {
            "gwtrace_lost_events_total" => m.lost_events += v,
            "gwtrace_connect_failures_total" => m.connect_failures += v,
            "gwtrace_verdicts_active" => m.verdicts_active += v,
            "gwtrace_events_total" => m.events += v,
            _ => {}
        }
    }
    m
}

/// Processes on the host whose `comm` is `name`.
fn procs_named(name: &str) -> usize {
    super::hostsize::process_dirs()
        .iter()
        .filter(|p| std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim_end() == name))
        .count()
}

/// `reason N, reason N`, or `none`.
fn by_reason(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn sample(pid: u32, t0: Instant, metrics: &str) -> anyhow::Result<Sample> {
    let p = tracer::sample(pid)?;
    Ok(Sample {
        t_s: t0.elapsed().as_secs_f64(),
        rss_kib: p.rss_kib,
        hwm_kib: p.hwm_kib,
        cpu_ms: tracer::task_cpu_ms(pid)?,
        bpf_memlock_kib: tracer::map_memlock_kib(pid),
        bpftrace_procs: procs_named("bpftrace"),
        metrics: scrape(metrics).ok(),
    })
}

/// An incident as injected.
#[derive(Debug)]
struct Incident {
    kind: Kind,
    started: Instant,
    repaired: Instant,
    /// nginx's upstream error lines before it started and after it settled.
    log_before: usize,
    log_after: usize,
}

/// A verdict line gwtrace printed.
struct VerdictLine {
    at: Instant,
    id: String,
    state: String,
    cause: String,
    target: String,
    summary: String,
}

/// The verdict lines about `proxy` (the soak's nginx master), the closing (`final`) lines about
/// it, and the lines about other proxies on the host (other labs' nginx: not the soak's to judge).
fn verdict_lines(lines: &[(Instant, String)], proxy: u32) -> (Vec<VerdictLine>, usize, usize) {
    let mut out = Vec::new();
    let (mut finals, mut others) = (0, 0);
    for (at, l) in lines {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        if v.get("proxy_pid").and_then(Value::as_u64) != Some(u64::from(proxy)) {
            others += 1;
            continue;
        }
        if v.get("final").and_then(Value::as_bool) == Some(true) {
            finals += 1;
            continue;
        }
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        out.push(VerdictLine {
            at: *at,
            id: s("id"),
            state: s("state"),
            cause: s("cause"),
            target: s("target"),
            summary: s("summary"),
        });
    }
    (out, finals, others)
}

/// A record file after the run.
#[derive(Debug, serde::Serialize)]
struct RecordFile {
    path: String,
    bytes: u64,
    lines: u64,
    /// `gwtrace explain --json` on it: exit status and verdict lines.
    explain_ok: bool,
    explain_verdicts: u64,
    explain_error: Option<String>,
}

fn record_file(bin: &Path, path: &Path) -> anyhow::Result<RecordFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let out = Command::new(bin)
        .args(["explain", "--json", "--color", "never"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("running gwtrace explain")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(RecordFile {
        path: path.display().to_string(),
        bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
        lines: text.lines().count() as u64,
        explain_ok: out.status.success(),
        explain_verdicts: stdout.lines().filter(|l| l.starts_with('{')).count() as u64,
        explain_error: (!out.status.success()).then(|| {
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
                .to_owned()
        }),
    })
}

/// The record file and its rotations (`FILE`, `FILE.1` .. `FILE.N`).
fn record_paths(base: &Path) -> Vec<PathBuf> {
    (0..=ROTATE_KEEP)
        .map(|k| {
            if k == 0 {
                base.to_path_buf()
            } else {
                PathBuf::from(format!("{}.{k}", base.display()))
            }
        })
        .filter(|p| p.exists())
        .collect()
}

/// What the record files said over the run, read at every sample (files rotate away after
/// `ROTATE_KEEP` more): the `loss` and `hooks` lines (each counted once, whatever file it is in
/// by then) and the files seen (by inode: one more than the rotations).
#[derive(Debug, Default)]
struct RecordWatch {
    inodes: BTreeSet<u64>,
    loss: BTreeSet<String>,
    hooks: BTreeSet<String>,
}

impl RecordWatch {
    fn scan(&mut self, base: &Path) {
        for p in record_paths(base) {
            let Ok(meta) = std::fs::metadata(&p) else {
                continue;
            };
            self.inodes
                .insert(std::os::unix::fs::MetadataExt::ino(&meta));
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            for l in text.lines() {
                // Cheap filter first; the kind is checked on the parsed line.
                if !(l.contains("\"loss\"") || l.contains("\"hooks\"")) {
                    continue;
                }
                match serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| v.get("kind").and_then(Value::as_str).map(str::to_owned))
                    .as_deref()
                {
                    Some("loss") => {
                        self.loss.insert(l.to_owned());
                    }
                    Some("hooks") => {
                        self.hooks.insert(l.to_owned());
                    }
                    _ => {}
                }
            }
        }
    }

    /// Events lost, as the `loss` lines count them, by reason (`ringbuf_full`,
    /// `tracepoint_recursion`, ...).
    fn losses(&self) -> BTreeMap<String, u64> {
        let mut by = BTreeMap::new();
        for v in self
            .loss
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        {
            let reason = v.get("reason").and_then(Value::as_str).unwrap_or("?");
            *by.entry(reason.to_owned()).or_insert(0) +=
                v.get("count").and_then(Value::as_u64).unwrap_or(1);
        }
        by
    }

    /// `hooks` lines by their `state` (`escalated`, `calm`), and the escalations' attach times (µs).
    fn hooks(&self) -> (BTreeMap<String, u64>, Vec<u64>) {
        let mut by_state = BTreeMap::new();
        let mut latency = Vec::new();
        for v in self
            .hooks
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        {
            let state = v
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned();
            if state == "escalated"
                && let Some(us) = v.get("latency_us").and_then(Value::as_u64)
            {
                latency.push(us);
            }
            *by_state.entry(state).or_insert(0) += 1;
        }
        latency.sort_unstable();
        (by_state, latency)
    }
}

/// Runs the soak and writes bench/results/soak-DATE.json and its markdown summary.
pub fn soak(bin: &Path, opts: Opts) -> anyhow::Result<()> {
    for tool in ["nginx", "gunicorn", "python3"] {
        if super::which(tool).is_none() {
            bail!("{tool} is not installed: run `cargo xtask setup`");
        }
    }
    let secs = opts.secs;
    if secs < 60 {
        bail!("--secs {secs} is too short: give at least 60 (one incident needs a minute)");
    }
    let env = report::environment(bin);
    let mut stack = Stack::new("soak")?;
    let sites = build(&mut stack)?;
    let nginx = stack.nginx_pid.context("nginx did not start")?;
    let metrics = format!("127.0.0.1:{}", lonely_port()?);
    // Outside the stack's directory, so the files outlive the run for a replay.
    let record_dir = PathBuf::from(format!("/tmp/gwsoak-{}", std::process::id()));
    std::fs::create_dir_all(&record_dir)
        .with_context(|| format!("creating {}", record_dir.display()))?;
    let record = record_dir.join("events.jsonl");
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--json", "--color", "never", "--force"])
        .args(["--proxy", &nginx.to_string(), "--metrics", &metrics])
        .arg("--record")
        .arg(&record)
        .args(["--rotate-mb", &ROTATE_MB.to_string()])
        .args(["--rotate-keep", &ROTATE_KEEP.to_string()])
        .args(["--duration", &(secs + 300).to_string()])
        .stdout(Stdio::piped());
    println!(
        "soak: {secs} s; nginx {nginx} in front of {}; gwtrace serve (default hooks), metrics on {metrics}, record {}",
        sites
            .all
            .iter()
            .map(|(p, t)| format!("{p} -> {t}"))
            .collect::<Vec<_>>()
            .join(", "),
        record.display()
    );
    let mut agent = Tracer::spawn(Config::Gwtrace, &mut cmd, 0, 1_000_000)?;
    let startup = agent.wait_ready(READY_TIMEOUT)?;
    println!(
        "soak: gwtrace attached in {:.0} ms ({} programs, {} KiB of BPF maps); {RATE} req/s, an incident every {} s",
        startup.attached_ms,
        startup.attach_fds,
        startup.map_memlock_kib,
        EVERY.as_secs()
    );
    let context_start = super::box_context();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = Arc::clone(&stop);
        let paths: Vec<String> = sites.all.iter().map(|(p, _)| p.clone()).collect();
        let port = stack.port;
        std::thread::spawn(move || client(port, &paths, &stop))
    };
    let mut watch = RecordWatch::default();
    let result = drive(
        &stack, &sites, agent.pid, t0, secs, &metrics, &record, &mut watch,
    );
    stop.store(true, Ordering::Relaxed);
    let answers = traffic
        .join()
        .map_err(|_| anyhow::anyhow!("the client thread panicked"))?;
    let (incidents, samples) = result?;
    let window_s = t0.elapsed().as_secs_f64();
    let context = json!({"start": context_start, "end": super::box_context()});
    let finished = agent.stop(STOP_GRACE)?;
    let lines = agent.stdout_from(0);
    let errors = stack.nginx_errors();
    watch.scan(&record);
    let files = record_paths(&record)
        .iter()
        .map(|p| record_file(bin, p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let a = Analysis::new(
        nginx, &sites, &incidents, &answers, &lines, &errors, &samples, &files, &watch, &finished,
    );
    drop(stack);
    let run = RunFacts {
        env: &env,
        secs,
        complete: opts.complete(),
        // Paths as the repository names them: the results file is committed.
        command: format!("{cmd:?}").replace(&format!("{}/", crate::root().display()), ""),
        sites: &sites,
        startup: &startup,
        window_s,
        context,
        finished: &finished,
        samples: &samples,
        files: &files,
    };
    write_results(&run, &a)?;
    if !a.missed.is_empty() {
        bail!(
            "soak: {} target(s) missed: {}",
            a.missed.len(),
            a.missed.join("; ")
        );
    }
    Ok(())
}

/// What the run was, for the results file.
struct RunFacts<'a> {
    env: &'a report::Env,
    secs: u64,
    /// The full soak (`soak-DATE.json`); shorter runs write `soak-DATE-short.json`.
    complete: bool,
    command: String,
    sites: &'a Sites,
    startup: &'a tracer::Startup,
    window_s: f64,
    /// The box at the start and the end: load average, TCP sockets.
    context: Value,
    finished: &'a tracer::Finished,
    samples: &'a [Sample],
    files: &'a [RecordFile],
}

/// Writes bench/results/soak-DATE.json (every raw figure) and soak-DATE.md, and prints the latter.
fn write_results(run: &RunFacts<'_>, a: &Analysis) -> anyhow::Result<()> {
    let (date, _) = super::utc_now();
    let stem = if run.complete {
        format!("soak-{date}")
    } else {
        format!("soak-{date}-short")
    };
    let dir = crate::root().join("bench/results");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let json_path = dir.join(format!("{stem}.json"));
    let md_path = dir.join(format!("{stem}.md"));
    let doc = json!({
        "schema": 1,
        "date": run.env.timestamp,
        "host": run.env.host,
        "kernel": run.env.kernel,
        "cpu_model": run.env.cpu_model,
        "cpus": run.env.cpus,
        "commit": run.env.commit,
        "gwtrace": run.env.bin,
        "options": {"secs": run.secs, "rate": RATE, "first_at_s": FIRST_AT.as_secs(),
            "every_s": EVERY.as_secs(), "lasts_s": LASTS.as_secs(),
            "rotate_mb": ROTATE_MB, "rotate_keep": ROTATE_KEEP},
        "command": run.command,
        "sites": run.sites.all.iter().map(|(p, t)| json!({"location": p, "target": t})).collect::<Vec<_>>(),
        "startup": {"attached_ms": run.startup.attached_ms, "attach_fds": run.startup.attach_fds,
            "map_memlock_kib": run.startup.map_memlock_kib},
        "window_s": run.window_s,
        "context": run.context,
        "agent": {"exit": run.finished.status, "cpu_ms_total": run.finished.cpu_ms,
            "maxrss_kib": run.finished.maxrss_kib, "summary": run.finished.summary,
            "stderr": run.finished.stderr.iter().rev().take(30).rev().collect::<Vec<_>>()},
        "samples": run.samples,
        "record_files": run.files,
        "analysis": a.json(),
    });
    super::write_atomic(&json_path, &serde_json::to_string_pretty(&doc)?)?;
    let md = a.markdown(run.env, run.secs, &json_path);
    super::write_atomic(&md_path, &md)?;
    print!("\n{md}");
    println!(
        "soak: raw figures in {}, summary in {}",
        json_path.display(),
        md_path.display()
    );
    Ok(())
}

/// The main loop: incidents on schedule, samples every 10 s, until `secs` have passed.
#[expect(
    clippy::too_many_arguments,
    reason = "the stack, the agent and what is watched"
)]
fn drive(
    stack: &Stack,
    sites: &Sites,
    pid: u32,
    t0: Instant,
    secs: u64,
    metrics: &str,
    record: &Path,
    watch: &mut RecordWatch,
) -> anyhow::Result<(Vec<Incident>, Vec<Sample>)> {
    let end = t0 + Duration::from_secs(secs);
    let mut incidents = Vec::new();
    let mut samples = vec![sample(pid, t0, metrics)?];
    let mut next_sample = t0 + SAMPLE_EVERY;
    let mut next_incident = t0 + FIRST_AT;
    let mut open: Option<(Kind, Instant, usize)> = None;
    loop {
        let now = Instant::now();
        if now >= end && open.is_none() {
            break;
        }
        if let Some((kind, started, log_before)) = open
            && now >= started + LASTS
        {
            repair(kind, sites)?;
            let repaired = Instant::now();
            std::thread::sleep(SETTLE);
            incidents.push(Incident {
                kind,
                started,
                repaired,
                log_before,
                log_after: stack.nginx_errors().len(),
            });
            println!(
                "soak: t={:>4.0}s {} repaired",
                t0.elapsed().as_secs_f64(),
                kind.name()
            );
            open = None;
        }
        // An incident starts only if it and its grace period end before the run does.
        if open.is_none() && now >= next_incident && now + LASTS + GRACE + SETTLE < end {
            let kind = Kind::ALL[incidents.len() % Kind::ALL.len()];
            let log_before = stack.nginx_errors().len();
            let started = Instant::now();
            inject(kind, sites)?;
            println!(
                "soak: t={:>4.0}s {} ({} at {})",
                t0.elapsed().as_secs_f64(),
                kind.name(),
                kind.cause(),
                sites.all[kind.site()].1
            );
            open = Some((kind, started, log_before));
            next_incident += EVERY;
        }
        if now >= next_sample {
            let s = sample(pid, t0, metrics)?;
            println!(
                "soak: t={:>4.0}s agent rss {} KiB, cpu {:.0} ms, bpf maps {} KiB, lost {}",
                s.t_s,
                s.rss_kib,
                s.cpu_ms,
                s.bpf_memlock_kib,
                s.metrics.as_ref().map_or_else(
                    || "(scrape failed)".to_owned(),
                    |m| m.lost_events.to_string()
                )
            );
            samples.push(s);
            watch.scan(record);
            next_sample += SAMPLE_EVERY;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    samples.push(sample(pid, t0, metrics)?);
    Ok((incidents, samples))
}

/// What one incident showed.
#[derive(Debug, serde::Serialize)]
struct IncidentResult {
    kind: &'static str,
    cause: &'static str,
    target: String,
    start_s: f64,
    lasted_s: f64,
    /// Answers of the broken site from its start to its repair (+1 s): 502s and others.
    bad_gateway: u64,
    other_failures: u64,
    /// nginx's error.log lines meanwhile, and how many say the expected errno about the target.
    nginx_log_lines: usize,
    nginx_log_matching: usize,
    /// First 502 to the first verdict line naming the cause and target.
    verdict_after_first_502_s: Option<f64>,
    /// Distinct verdict ids naming it.
    verdict_ids: Vec<String>,
    /// Its verdict resolved or superseded before the repair (disappeared mid-incident).
    flaps: usize,
    /// Repair to its `resolved` line, if one came.
    resolved_after_repair_s: Option<f64>,
}

struct Analysis {
    incidents: Vec<IncidentResult>,
    unexpected_answers: Vec<String>,
    healthy_answers: u64,
    total_answers: u64,
    unmatched_verdicts: Vec<String>,
    /// Every verdict line about the soak's nginx (time from the first incident's start).
    verdict_log: Vec<Value>,
    healthy_log_lines: usize,
    final_lines: usize,
    other_proxy_lines: usize,
    rss_first_kib: u64,
    rss_last_kib: u64,
    rss_max_kib: u64,
    /// Least-squares slope of RSS over the second half of the run, KiB per minute: near 0 when
    /// it has levelled off.
    rss_slope_kib_per_min: f64,
    cpu_ms_per_s: f64,
    cpu_ms_per_s_max: f64,
    memlock_kib: (u64, u64),
    lost_summary: Option<u64>,
    lost_metrics: Option<f64>,
    scrapes: (usize, usize),
    /// `loss` lines in the record files, and the losses they count.
    loss_lines: u64,
    losses: BTreeMap<String, u64>,
    /// `hooks` lines by state, and the escalations' attach times (µs, sorted).
    hooks: BTreeMap<String, u64>,
    escalation_us: Vec<u64>,
    /// Most bpftrace processes seen on the host at one sample.
    bpftrace_max: usize,
    files: usize,
    rotated: usize,
    unreadable: Vec<String>,
    missed: Vec<String>,
}

/// RSS slope (KiB/min, least squares) over the samples of the second half of the run.
fn second_half_slope(samples: &[Sample]) -> f64 {
    let end = samples.last().map_or(0.0, |s| s.t_s);
    #[expect(clippy::cast_precision_loss, reason = "KiB")]
    let pts: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t_s >= end / 2.0)
        .map(|s| (s.t_s / 60.0, s.rss_kib as f64))
        .collect();
    #[expect(clippy::cast_precision_loss, reason = "a few samples")]
    let n = pts.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}

fn secs_between(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64()
}

impl Analysis {
    #[expect(
        clippy::too_many_arguments,
        clippy::too_many_lines,
        reason = "one pass over everything the run produced"
    )]
    fn new(
        proxy: u32,
        sites: &Sites,
        incidents: &[Incident],
        answers: &[Answer],
        lines: &[(Instant, String)],
        errors: &[String],
        samples: &[Sample],
        files: &[RecordFile],
        watch: &RecordWatch,
        finished: &tracer::Finished,
    ) -> Self {
        let (verdicts, final_lines, other_proxy_lines) = verdict_lines(lines, proxy);
        let in_incident = |a: &Answer| {
            incidents.iter().position(|i| {
                i.kind.site() == a.site && a.at >= i.started && a.at <= i.repaired + SETTLE
            })
        };
        let mut unexpected_answers = Vec::new();
        let mut healthy_answers = 0;
        for a in answers {
            if in_incident(a).is_some() {
                continue;
            }
            healthy_answers += 1;
            if a.status != Some(200) && unexpected_answers.len() < 20 {
                unexpected_answers.push(format!(
                    "{} answered {}",
                    sites.all[a.site].0,
                    a.status
                        .map_or_else(|| "nothing".to_owned(), |s| s.to_string())
                ));
            }
        }
        let unexpected_total = answers
            .iter()
            .filter(|a| in_incident(a).is_none() && a.status != Some(200))
            .count();
        // Which incident a verdict line belongs to: its cause and target, inside its window.
        let belongs = |v: &VerdictLine| {
            incidents.iter().position(|i| {
                v.cause == i.kind.cause()
                    && v.target == sites.all[i.kind.site()].1
                    && v.at >= i.started
                    && v.at <= i.repaired + SETTLE + GRACE
            })
        };
        let mut results = Vec::new();
        let mut attributed_log = 0;
        for (n, i) in incidents.iter().enumerate() {
            let target = &sites.all[i.kind.site()].1;
            let mine: Vec<&Answer> = answers
                .iter()
                .filter(|a| in_incident(a) == Some(n))
                .collect();
            let first_502 = mine.iter().find(|a| a.status == Some(502)).map(|a| a.at);
            let bad_gateway = mine.iter().filter(|a| a.status == Some(502)).count() as u64;
            let other_failures = mine
                .iter()
                .filter(|a| a.status != Some(502) && a.status != Some(200))
                .count() as u64;
            let log = errors
                .get(i.log_before..i.log_after.min(errors.len()))
                .unwrap_or_default();
            attributed_log += log.len();
            let path = target.strip_prefix("unix:").unwrap_or(target);
            let nginx_log_matching = log
                .iter()
                .filter(|l| l.contains(i.kind.nginx_log()) && l.contains(path))
                .count();
            let vs: Vec<&VerdictLine> = verdicts.iter().filter(|v| belongs(v) == Some(n)).collect();
            let ids: BTreeSet<String> = vs.iter().map(|v| v.id.clone()).collect();
            let flaps = vs
                .iter()
                .filter(|v| (v.state == "resolved" || v.state == "superseded") && v.at < i.repaired)
                .count();
            let resolved = verdicts
                .iter()
                .find(|v| {
                    ids.contains(&v.id)
                        && v.state == "resolved"
                        && v.at >= i.repaired
                        && incidents.get(n + 1).is_none_or(|next| v.at < next.started)
                })
                .map(|v| secs_between(i.repaired, v.at));
            results.push(IncidentResult {
                kind: i.kind.name(),
                cause: i.kind.cause(),
                target: target.clone(),
                start_s: secs_between(incidents[0].started, i.started),
                lasted_s: secs_between(i.started, i.repaired),
                bad_gateway,
                other_failures,
                nginx_log_lines: log.len(),
                nginx_log_matching,
                verdict_after_first_502_s: first_502
                    .and_then(|f| vs.first().map(|v| v.at.saturating_duration_since(f)))
                    .map(|d| d.as_secs_f64()),
                verdict_ids: ids.into_iter().collect(),
                flaps,
                resolved_after_repair_s: resolved,
            });
        }
        // Verdicts no incident explains: every id whose opening line belongs to none.
        let t0 = incidents.first().map(|i| i.started);
        let verdict_log = verdicts
            .iter()
            .map(|v| {
                json!({"t_s": t0.map(|t| if v.at >= t { secs_between(t, v.at) } else { -secs_between(v.at, t) }),
                    "id": v.id, "state": v.state, "cause": v.cause, "target": v.target, "summary": v.summary})
            })
            .collect();
        let unmatched_verdicts: Vec<String> = verdicts
            .iter()
            .filter(|v| v.state == "open" && belongs(v).is_none())
            .map(|v| format!("{} {} -> {}: {}", v.id, v.cause, v.target, v.summary))
            .collect();
        let rss: Vec<u64> = samples.iter().map(|s| s.rss_kib).collect();
        let cpu_rates: Vec<f64> = samples
            .windows(2)
            .map(|w| (w[1].cpu_ms - w[0].cpu_ms) / (w[1].t_s - w[0].t_s).max(1e-3))
            .collect();
        let (first, last) = (samples.first(), samples.last());
        let cpu_ms_per_s = match (first, last) {
            (Some(a), Some(b)) => (b.cpu_ms - a.cpu_ms) / (b.t_s - a.t_s).max(1e-3),
            _ => 0.0,
        };
        let scrapes_ok = samples.iter().filter(|s| s.metrics.is_some()).count();
        let lost_metrics = samples
            .iter()
            .rev()
            .find_map(|s| s.metrics.as_ref())
            .map(|m| m.lost_events);
        let (hooks, escalation_us) = watch.hooks();
        let mut a = Self {
            incidents: results,
            unexpected_answers,
            healthy_answers,
            total_answers: answers.len() as u64,
            unmatched_verdicts,
            verdict_log,
            healthy_log_lines: errors.len().saturating_sub(attributed_log),
            final_lines,
            other_proxy_lines,
            rss_first_kib: rss.first().copied().unwrap_or(0),
            rss_last_kib: rss.last().copied().unwrap_or(0),
            rss_max_kib: rss.iter().copied().max().unwrap_or(0),
            rss_slope_kib_per_min: second_half_slope(samples),
            cpu_ms_per_s,
            cpu_ms_per_s_max: cpu_rates.iter().copied().fold(0.0, f64::max),
            memlock_kib: (
                first.map_or(0, |s| s.bpf_memlock_kib),
                last.map_or(0, |s| s.bpf_memlock_kib),
            ),
            lost_summary: finished.summary.as_ref().and_then(|s| s.lost),
            lost_metrics,
            scrapes: (scrapes_ok, samples.len()),
            loss_lines: watch.loss.len() as u64,
            losses: watch.losses(),
            hooks,
            escalation_us,
            bpftrace_max: samples.iter().map(|s| s.bpftrace_procs).max().unwrap_or(0),
            files: files.len(),
            rotated: watch.inodes.len().saturating_sub(1),
            unreadable: files
                .iter()
                .filter(|f| !f.explain_ok)
                .map(|f| {
                    format!(
                        "{}: {}",
                        f.path,
                        f.explain_error.as_deref().unwrap_or_default()
                    )
                })
                .collect(),
            missed: Vec::new(),
        };
        a.judge(unexpected_total);
        a
    }

    /// Every target; what is missed, one clear line each.
    fn judge(&mut self, unexpected_total: usize) {
        let mut missed = Vec::new();
        if self.incidents.is_empty() {
            missed.push("no incident was injected (--secs too short?)".to_owned());
        }
        for (n, i) in self.incidents.iter().enumerate() {
            let which = format!("incident {} ({}, {})", n + 1, i.kind, i.cause);
            if i.bad_gateway == 0 {
                missed.push(format!(
                    "{which}: nginx answered no 502 (the fault did not bite)"
                ));
            }
            if i.nginx_log_matching == 0 {
                missed.push(format!(
                    "{which}: nginx's error.log has no {} line about {}",
                    i.cause, i.target
                ));
            }
            match i.verdict_after_first_502_s {
                None => missed.push(format!("{which}: no verdict named it")),
                Some(s) if s > LATENCY_TARGET_S => missed.push(format!(
                    "{which}: named {s:.2} s after the first 502 (target <= {LATENCY_TARGET_S} s)"
                )),
                Some(_) => {}
            }
            if i.verdict_ids.len() > 1 {
                missed.push(format!(
                    "{which}: {} verdicts ({}) instead of one",
                    i.verdict_ids.len(),
                    i.verdict_ids.join(", ")
                ));
            }
            if i.flaps > 0 {
                missed.push(format!(
                    "{which}: its verdict disappeared {} time(s) mid-incident",
                    i.flaps
                ));
            }
        }
        if !self.unmatched_verdicts.is_empty() {
            missed.push(format!(
                "{} verdict(s) match no incident: {}",
                self.unmatched_verdicts.len(),
                self.unmatched_verdicts.join(", ")
            ));
        }
        if unexpected_total > 0 {
            missed.push(format!(
                "{unexpected_total} answers outside the incidents were not 200 (e.g. {})",
                self.unexpected_answers.join(", ")
            ));
        }
        if self.healthy_log_lines > 0 {
            missed.push(format!(
                "nginx's error.log has {} upstream error lines outside the incidents",
                self.healthy_log_lines
            ));
        }
        let lost = self.lost_summary.unwrap_or(0) + self.losses.values().sum::<u64>();
        if self.lost_summary.is_none() {
            missed.push("gwtrace's summary has no `lost events` line".to_owned());
        }
        if lost > 0 || self.lost_metrics.unwrap_or(0.0) > 0.0 {
            missed.push(format!(
                "events lost: summary {}, loss lines {} ({}), gwtrace_lost_events_total {} (target 0)",
                self.lost_summary.unwrap_or(0),
                self.loss_lines,
                by_reason(&self.losses),
                self.lost_metrics.unwrap_or(0.0)
            ));
        }
        if self.lost_metrics.is_none() {
            missed.push("no scrape of /metrics succeeded".to_owned());
        }
        #[expect(clippy::cast_precision_loss, reason = "KiB")]
        let max_mib = self.rss_max_kib as f64 / 1024.0;
        if max_mib > RSS_TARGET_MIB {
            missed.push(format!(
                "agent RSS reached {max_mib:.1} MiB (target <= {RSS_TARGET_MIB} MiB)"
            ));
        }
        if !self.unreadable.is_empty() {
            missed.push(format!(
                "record files gwtrace explain cannot read: {}",
                self.unreadable.join(", ")
            ));
        }
        if self.files == 0 {
            missed.push("no record file was written".to_owned());
        }
        self.missed = missed;
    }

    fn json(&self) -> Value {
        json!({
            "incidents": self.incidents,
            "answers": self.total_answers,
            "healthy_answers": self.healthy_answers,
            "unexpected_answers": self.unexpected_answers,
            "unmatched_verdicts": self.unmatched_verdicts,
            "verdicts": self.verdict_log,
            "nginx_log_lines_outside_incidents": self.healthy_log_lines,
            "final_verdict_lines": self.final_lines,
            "other_proxies_verdict_lines": self.other_proxy_lines,
            "rss_kib": {"first": self.rss_first_kib, "last": self.rss_last_kib, "max": self.rss_max_kib,
                "second_half_slope_per_min": self.rss_slope_kib_per_min},
            "cpu_ms_per_s": {"mean": self.cpu_ms_per_s, "max_10s": self.cpu_ms_per_s_max},
            "bpf_memlock_kib": {"first": self.memlock_kib.0, "last": self.memlock_kib.1},
            "lost": {"summary": self.lost_summary, "metrics": self.lost_metrics,
                "loss_lines": self.loss_lines, "loss_by_reason": self.losses},
            "scrapes": {"ok": self.scrapes.0, "total": self.scrapes.1},
            "hooks_lines": self.hooks,
            "escalation_attach_us": self.escalation_us,
            "record_files": self.files,
            "record_files_rotated": self.rotated,
            "missed": self.missed,
        })
    }

    /// One row per incident.
    fn incident_table(&self, md: &mut String) {
        let _ = writeln!(
            *md,
            "| incident | at | cause named | 502s | nginx log lines (matching) | first 502 -> verdict | verdicts | flaps | resolved after repair |"
        );
        let _ = writeln!(*md, "|---|--:|---|--:|--:|--:|--:|--:|--:|");
        for i in &self.incidents {
            let _ = writeln!(
                *md,
                "| {} | {:.0} s | `{}` {} | {} | {} ({}) | {} | {} | {} | {} |",
                i.kind,
                i.start_s,
                i.cause,
                i.target,
                i.bad_gateway,
                i.nginx_log_lines,
                i.nginx_log_matching,
                i.verdict_after_first_502_s
                    .map_or_else(|| "none".to_owned(), |s| format!("{s:.2} s")),
                i.verdict_ids.len(),
                i.flaps,
                i.resolved_after_repair_s
                    .map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s")),
            );
        }
    }

    /// The `hooks` lines by state, with the escalations' attach times.
    fn hooks_text(&self) -> String {
        if self.hooks.is_empty() {
            "none (this gwtrace writes none)".to_owned()
        } else {
            let by_state = self
                .hooks
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            match (
                self.escalation_us.get(self.escalation_us.len() / 2),
                self.escalation_us.last(),
            ) {
                (Some(p50), Some(max)) => {
                    format!("{by_state}; escalation attach p50 {p50} µs, max {max} µs")
                }
                _ => by_state,
            }
        }
    }

    fn markdown(&self, env: &report::Env, secs: u64, json_path: &Path) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "<!-- written by `cargo xtask soak`; do not edit -->");
        let _ = writeln!(
            md,
            "**Soak** of {secs} s, {} on `{}`: kernel {}, {} x {}; gwtrace {}. Raw figures: `{}`.\n",
            env.timestamp,
            env.host,
            env.kernel,
            env.cpus,
            env.cpu_model,
            env.commit,
            json_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        self.incident_table(&mut md);
        #[expect(clippy::cast_precision_loss, reason = "KiB")]
        let mib = |k: u64| k as f64 / 1024.0;
        let _ = writeln!(md);
        let _ = writeln!(
            md,
            "- traffic: {} answers at {RATE} req/s, {} outside incidents, {} of those not 200",
            self.total_answers,
            self.healthy_answers,
            self.unexpected_answers.len()
        );
        let _ = writeln!(
            md,
            "- verdicts about the soak's nginx matching no incident: {}; nginx upstream errors outside incidents: {}; \
             verdict lines about other proxies on the host (not judged): {}",
            self.unmatched_verdicts.len(),
            self.healthy_log_lines,
            self.other_proxy_lines
        );
        let _ = writeln!(
            md,
            "- agent RSS: first {:.1} MiB, last {:.1} MiB, max {:.1} MiB (target <= {RSS_TARGET_MIB} MiB), second half {:+.0} KiB/min; CPU {} ms/s (worst 10 s: {}); locked BPF maps {} -> {} KiB",
            mib(self.rss_first_kib),
            mib(self.rss_last_kib),
            mib(self.rss_max_kib),
            self.rss_slope_kib_per_min,
            report::num(self.cpu_ms_per_s),
            report::num(self.cpu_ms_per_s_max),
            self.memlock_kib.0,
            self.memlock_kib.1
        );
        let _ = writeln!(
            md,
            "- loss: summary {}, gwtrace_lost_events_total {}, loss lines {} ({}) (target 0); scrapes {} of {} ok; \
             bpftrace processes on the host at the samples: up to {}",
            self.lost_summary
                .map_or_else(|| "?".to_owned(), |v| v.to_string()),
            self.lost_metrics
                .map_or_else(|| "?".to_owned(), |v| v.to_string()),
            self.loss_lines,
            by_reason(&self.losses),
            self.scrapes.0,
            self.scrapes.1,
            self.bpftrace_max
        );
        let _ = writeln!(
            md,
            "- hooks lines (escalations/calms): {}",
            self.hooks_text()
        );
        let _ = writeln!(
            md,
            "- record files: {} ({} rotated), {} unreadable by `gwtrace explain`",
            self.files,
            self.rotated,
            self.unreadable.len()
        );
        let _ = writeln!(md);
        if self.missed.is_empty() {
            let _ = writeln!(md, "Every target met.");
        } else {
            let _ = writeln!(md, "Targets missed:\n");
            for m in &self.missed {
                let _ = writeln!(md, "- {m}");
            }
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Analysis, Answer, Incident, Kind, RecordWatch, Sample, Sites};

    fn sites() -> Sites {
        Sites {
            all: [
                ("/".to_owned(), "unix:/s/perm/g.sock".to_owned()),
                ("/u/".to_owned(), "unix:/s/sock/a.sock".to_owned()),
                ("/t/".to_owned(), "127.0.0.1:4000".to_owned()),
            ],
            unix_down: "/s/unix.down".into(),
            tcp_down: "/s/tcp.down".into(),
            perm_dir: "/s/perm".into(),
        }
    }

    fn verdict(proxy: u32, id: &str, state: &str, cause: &str, target: &str) -> String {
        serde_json::json!({"proxy_pid": proxy, "id": id, "state": state, "cause": cause,
            "target": target, "summary": "s"})
        .to_string()
    }

    fn analyse(lines: &[(Instant, String)], t: Instant) -> Analysis {
        let ms = |n: u64| t + Duration::from_millis(n);
        let incidents = [Incident {
            kind: Kind::SocketMissing,
            started: ms(0),
            repaired: ms(12_000),
            log_before: 0,
            log_after: 1,
        }];
        let answers = [
            Answer {
                at: ms(50),
                site: 0,
                status: Some(200),
            },
            Answer {
                at: ms(100),
                site: 1,
                status: Some(502),
            },
            Answer {
                at: ms(30_000),
                site: 1,
                status: Some(200),
            },
        ];
        let errors =
            ["connect() to unix:/s/sock/a.sock failed (2: No such file or directory)".to_owned()];
        let sample = |t_s: f64| Sample {
            t_s,
            rss_kib: 1000,
            hwm_kib: 1000,
            cpu_ms: t_s,
            bpf_memlock_kib: 8,
            bpftrace_procs: 0,
            metrics: Some(super::Scrape::default()),
        };
        let finished = super::tracer::Finished {
            summary: Some(super::tracer::GwSummary {
                lost: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        };
        Analysis::new(
            7,
            &sites(),
            &incidents,
            &answers,
            lines,
            &errors,
            &[sample(0.0), sample(40.0)],
            &[],
            &RecordWatch::default(),
            &finished,
        )
    }

    #[test]
    fn times_the_verdict_from_the_first_502_and_flags_what_no_incident_explains() {
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let sock = "unix:/s/sock/a.sock";
        let lines = vec![
            (ms(600), verdict(7, "v1", "open", "socket-missing", sock)),
            (
                ms(1600),
                verdict(7, "v1", "updated", "socket-missing", sock),
            ),
            // Another proxy's verdict: not the soak's to judge.
            (
                ms(2000),
                verdict(9, "v2", "open", "socket-missing", "unix:/x"),
            ),
            // Blamed in a healthy minute.
            (
                ms(40_000),
                verdict(7, "v3", "open", "upstream-not-listening", "127.0.0.1:4000"),
            ),
        ];
        let a = analyse(&lines, t);
        let i = &a.incidents[0];
        let lat = i.verdict_after_first_502_s.expect("named");
        assert!((lat - 0.5).abs() < 1e-6, "{lat}");
        assert_eq!(i.verdict_ids, ["v1"]);
        assert_eq!((i.flaps, i.nginx_log_matching), (0, 1));
        assert_eq!(a.other_proxy_lines, 1);
        assert_eq!(a.unmatched_verdicts.len(), 1);
        // The only misses: that verdict, and no record file (none in this test).
        assert_eq!(a.missed.len(), 2, "{:?}", a.missed);
        assert!(a.missed[0].contains("1 verdict(s) match no incident: v3"));
        assert_eq!(a.missed[1], "no record file was written");
    }

    #[test]
    fn a_verdict_resolved_and_reopened_mid_incident_is_a_flap() {
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let sock = "unix:/s/sock/a.sock";
        let lines = vec![
            (ms(2600), verdict(7, "v1", "open", "socket-missing", sock)),
            (
                ms(6000),
                verdict(7, "v1", "resolved", "socket-missing", sock),
            ),
            (ms(8000), verdict(7, "v2", "open", "socket-missing", sock)),
        ];
        let a = analyse(&lines, t);
        let i = &a.incidents[0];
        assert_eq!(i.verdict_ids, ["v1", "v2"]);
        assert_eq!(i.flaps, 1);
        assert!(
            a.missed
                .iter()
                .any(|m| m.contains("2.50 s after the first 502")),
            "{:?}",
            a.missed
        );
        assert!(a.missed.iter().any(|m| m.contains("instead of one")));
        assert!(a.missed.iter().any(|m| m.contains("disappeared 1 time")));
    }

    #[test]
    fn sums_the_watched_metrics() {
        let m = super::parse_metrics(
            "# HELP gwtrace_lost_events_total x\n\
             gwtrace_lost_events_total{reason=\"ringbuf_full\"} 0\n\
             gwtrace_lost_events_total{reason=\"map_full\"} 2\n\
             gwtrace_verdicts_active{cause=\"socket-missing\"} 1\n\
             gwtrace_connect_failures_total{proxy=\"nginx\",target=\"unix:/a b\",errno=\"ENOENT\"} 40\n",
        );
        assert!((m.lost_events - 2.0).abs() < f64::EPSILON);
        assert!((m.verdicts_active - 1.0).abs() < f64::EPSILON);
        assert!((m.connect_failures - 40.0).abs() < f64::EPSILON);
    }
}
