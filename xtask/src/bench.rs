//! `cargo xtask bench`: what gwtrace costs the machine it watches, next to no tracing, a bpftrace
//! script gathering the same facts (bench/incident.bt) and strace (issue #6; see bench/README.md).
//!
//! Every workload runs with every configuration in each round, round-robin (the starting
//! configuration rotates per round), so slow drift of a shared, noisy box spreads over all
//! configurations; only ratios to the baseline measured in the same run are compared. Each tracer
//! is started fresh for each run, waited for until really attached, and stopped with SIGINT after.
mod hostsize;
pub use hostsize::idle_pool;
pub mod nginx;
mod report;
pub mod soak;
pub mod tracer;
pub mod worker;

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use self::{
    nginx::Nginx,
    tracer::{Config, Finished, ProcSample, Startup, Tracer},
    worker::Kind,
};

/// Options of a benchmark run.
#[derive(Clone, Debug)]
pub struct Opts {
    pub rounds: usize,
    /// Seconds of each worker workload (tcp-loop, unix-loop, null-syscall).
    pub run_secs: f64,
    /// Seconds of each wrk run.
    pub wrk_secs: u64,
    pub storm_secs: u64,
    pub storm_threads: usize,
    pub quick: bool,
    pub filter: Option<String>,
}

impl Opts {
    /// Defaults: 7 rounds, 3 s workloads, 5 s wrk runs, 60 s storm; `quick`: 3 rounds, 2 s runs,
    /// 10 s storm.
    pub fn new(
        quick: bool,
        rounds: Option<usize>,
        storm_secs: Option<u64>,
        filter: Option<String>,
    ) -> Self {
        Self {
            rounds: rounds.unwrap_or(if quick { 3 } else { 7 }).max(1),
            run_secs: if quick { 2.0 } else { 3.0 },
            wrk_secs: if quick { 2 } else { 5 },
            storm_secs: storm_secs.unwrap_or(if quick { 10 } else { 60 }).max(1),
            storm_threads: 2,
            quick,
            filter,
        }
    }

    /// Rounds of the host-size workload (each round: 3 sizes x 4 loads): 3, 1 with `quick`.
    const fn host_rounds(&self) -> usize {
        if self.quick { 1 } else { 3 }
    }

    /// Seconds of each host-size cell: 10, 5 with `quick`.
    const fn host_secs(&self) -> f64 {
        if self.quick { 5.0 } else { 10.0 }
    }

    /// A complete run (all workloads, ≥ 7 rounds, 60 s storm): the one `latest.md` shows.
    fn complete(&self) -> bool {
        !self.quick && self.filter.is_none() && self.rounds >= 7 && self.storm_secs >= 60
    }
}

/// The overhead workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    TcpLoop,
    UnixLoop,
    NginxTcp,
    NginxUnix,
    NullSyscall,
}

impl Workload {
    pub const ALL: [Self; 5] = [
        Self::TcpLoop,
        Self::UnixLoop,
        Self::NginxTcp,
        Self::NginxUnix,
        Self::NullSyscall,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::TcpLoop => "tcp-loop",
            Self::UnixLoop => "unix-loop",
            Self::NginxTcp => "nginx-tcp",
            Self::NginxUnix => "nginx-unix",
            Self::NullSyscall => "null-syscall",
        }
    }

    pub const fn about(self) -> &'static str {
        match self {
            Self::TcpLoop => "loopback TCP connect+accept+close loop, one process",
            Self::UnixLoop => "unix-socket connect+accept+close loop, one process",
            Self::NginxTcp => {
                "wrk -t2 -c32 --latency -> nginx (1 worker) -> upstream 127.0.0.1 (new connection per request)"
            }
            Self::NginxUnix => {
                "wrk -t2 -c32 --latency -> nginx (1 worker) -> upstream unix socket (new connection per request)"
            }
            Self::NullSyscall => "getppid() via syscall(2) in a tight loop",
        }
    }

    const fn worker(self) -> Option<Kind> {
        match self {
            Self::TcpLoop => Some(Kind::TcpLoop),
            Self::UnixLoop => Some(Kind::UnixLoop),
            Self::NullSyscall => Some(Kind::NullSyscall),
            Self::NginxTcp | Self::NginxUnix => None,
        }
    }
}

/// Name of the storm workload (for the filter and the report).
pub const STORM: &str = "storm";

/// What one run measured.
#[derive(Debug)]
pub struct Run {
    pub workload: &'static str,
    pub config: Config,
    pub round: usize,
    /// Position inside its round (0 = first).
    pub slot: usize,
    pub metrics: BTreeMap<&'static str, f64>,
    pub raw: Value,
    pub tracer: Option<TracerRun>,
    pub error: Option<String>,
    /// The box when the run started: load average, TCP sockets in use and in `TIME_WAIT`.
    pub context: Value,
}

/// What the tracer of one run did.
#[derive(Debug)]
pub struct TracerRun {
    pub startup: Startup,
    /// Sampled when it was ready (before the workload started).
    pub ready: ProcSample,
    /// Sampled right before it was stopped (if it was still running).
    pub end: Option<ProcSample>,
    /// Length of the measured window.
    pub window_s: f64,
    pub finished: Finished,
}

impl TracerRun {
    /// CPU the tracer used from ready to exit (the measured window and its shutdown).
    pub fn window_cpu_ms(&self) -> f64 {
        (self.finished.cpu_ms - self.ready.cpu_ms).max(0.0)
    }
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(20);

struct Ctx<'a> {
    bin: &'a Path,
    exe: PathBuf,
    opts: &'a Opts,
    nginx: Option<Nginx>,
}

/// Runs the benchmarks and writes bench/results/.
pub fn bench(bin: &Path, opts: &Opts) -> anyhow::Result<()> {
    for tool in ["wrk", "bpftrace", "strace", "nginx"] {
        if which(tool).is_none() {
            bail!("{tool} is not installed: run `cargo xtask setup`");
        }
    }
    if !tracer::script().exists() {
        bail!("{} is missing", tracer::script().display());
    }
    let selected = |name: &str| opts.filter.as_deref().is_none_or(|f| name.contains(f));
    let workloads: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| selected(w.name()))
        .collect();
    let storm = selected(STORM);
    let host_size = selected(hostsize::HOST_SIZE);
    if workloads.is_empty() && !storm && !host_size {
        bail!(
            "no workload matches {:?} (workloads: tcp-loop unix-loop nginx-tcp nginx-unix null-syscall storm host-size)",
            opts.filter
        );
    }
    let env = report::environment(bin);
    let started = Instant::now();
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let nginx = if host_size || workloads.iter().any(|w| w.worker().is_none()) {
        Some(Nginx::start(hostsize::TARGETS)?)
    } else {
        None
    };
    let mut ctx = Ctx {
        bin,
        exe,
        opts,
        nginx,
    };
    print_plan(opts, &workloads, storm, host_size);
    let mut runs = Vec::new();
    let configs = Config::OVERHEAD;
    for round in 0..opts.rounds {
        for w in &workloads {
            for slot in 0..configs.len() {
                let config = configs[(round + slot) % configs.len()];
                let run = run_overhead(&mut ctx, *w, config, round, slot);
                progress(&run, opts.rounds);
                runs.push(run);
            }
        }
    }
    if storm {
        for (slot, config) in Config::STORM.into_iter().enumerate() {
            let run = run_storm(&ctx, config, slot);
            progress(&run, 1);
            runs.push(run);
        }
    }
    if host_size {
        hostsize::run(&ctx, opts.host_rounds(), opts.host_secs(), &mut runs);
    }
    drop(ctx.nginx.take());
    let elapsed = started.elapsed();
    write_results(&env, opts, &runs, &workloads, storm, elapsed)?;
    let failed: Vec<&Run> = runs.iter().filter(|r| r.error.is_some()).collect();
    if !failed.is_empty() {
        for r in &failed {
            eprintln!(
                "bench: {} / {} round {}: {}",
                r.workload,
                r.config.name(),
                r.round + 1,
                r.error.as_deref().unwrap_or("")
            );
        }
        bail!("{} of {} runs failed (see above)", failed.len(), runs.len());
    }
    Ok(())
}

/// Prints the table, writes the JSON file and the markdown summary.
fn write_results(
    env: &report::Env,
    opts: &Opts,
    runs: &[Run],
    workloads: &[Workload],
    storm: bool,
    elapsed: Duration,
) -> anyhow::Result<()> {
    let rows = report::summarise(runs, workloads, storm);
    println!();
    print!("{}", report::table(&rows));
    let dir = crate::root().join("bench/results");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // A filtered run is named by its filter: it never replaces the record of a whole run.
    let part = opts
        .filter
        .as_deref()
        .map(|f| {
            format!(
                "-{}",
                f.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
            )
        })
        .unwrap_or_default();
    let stem = format!(
        "{}-{}{}{part}",
        env.date,
        env.host,
        if opts.complete() { "" } else { "-quick" }
    );
    let json_path = dir.join(format!("{stem}.json"));
    let doc = report::json(env, opts, runs, &rows, elapsed);
    write_atomic(&json_path, &serde_json::to_string_pretty(&doc)?)?;
    let md_name = if opts.complete() {
        "latest.md".to_owned()
    } else {
        format!("latest-quick{part}.md")
    };
    let md_path = dir.join(md_name);
    write_atomic(
        &md_path,
        &report::markdown(env, opts, &rows, runs, elapsed, &json_path),
    )?;
    println!(
        "\nbench: {} runs in {:.1} min; raw figures in {}, summary in {}",
        runs.len(),
        elapsed.as_secs_f64() / 60.0,
        json_path.display(),
        md_path.display()
    );
    Ok(())
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

fn print_plan(opts: &Opts, workloads: &[Workload], storm: bool, host_size: bool) {
    // Starting and stopping the tracers of one round of one workload: gwtrace ~1.5 s (x2),
    // bpftrace ~5 s (it compiles the script), strace and the workload process ~0.5 s.
    const SETUP_S: f64 = 9.0;
    let configs = f(Config::OVERHEAD.len() as u64);
    let per_round: f64 = workloads
        .iter()
        .map(|w| if w.worker().is_some() { opts.run_secs } else { f(opts.wrk_secs) } * configs + SETUP_S)
        .sum::<f64>();
    let storm_s = if storm {
        (f(opts.storm_secs) + 2.0) * f(Config::STORM.len() as u64)
    } else {
        0.0
    };
    // Each host-size cell: its window plus gwtrace's start (a full /proc read) and stop.
    let cells = hostsize::SIZES.len() * hostsize::LOADS.len() * opts.host_rounds();
    let host_s = if host_size {
        f(cells as u64) * (opts.host_secs() + 3.0)
    } else {
        0.0
    };
    let total = per_round * f(opts.rounds as u64) + storm_s + host_s;
    println!(
        "bench: {} workloads x {} configurations x {} rounds{}{}; about {:.0} min",
        workloads.len(),
        Config::OVERHEAD.len(),
        opts.rounds,
        if storm {
            format!(
                ", then a {} s failure storm x {}",
                opts.storm_secs,
                Config::STORM.len()
            )
        } else {
            String::new()
        },
        if host_size {
            format!(", then {cells} host-size cells of {} s", opts.host_secs())
        } else {
            String::new()
        },
        total / 60.0
    );
}

/// A count or a number of seconds as a float (benchmark figures are far below 2^52).
#[expect(
    clippy::cast_precision_loss,
    reason = "benchmark figures are far below 2^52"
)]
pub const fn f(n: u64) -> f64 {
    n as f64
}

fn progress(run: &Run, rounds: usize) {
    let main = run
        .metrics
        .iter()
        .map(|(k, v)| format!("{k} {}", report::num(*v)))
        .collect::<Vec<_>>()
        .join(", ");
    let attach = run
        .tracer
        .as_ref()
        .map(|t| {
            format!(
                " (attached in {:.0} ms, {:.0} ms CPU)",
                t.startup.attached_ms,
                t.window_cpu_ms()
            )
        })
        .unwrap_or_default();
    match &run.error {
        Some(e) => println!(
            "[{}/{rounds}] {:<12} {:<14} FAILED: {e}",
            run.round + 1,
            run.workload,
            run.config.name()
        ),
        None => println!(
            "[{}/{rounds}] {:<12} {:<14} {main}{attach}",
            run.round + 1,
            run.workload,
            run.config.name()
        ),
    }
}

/// What a measurement body returns: metrics and raw figures.
type Measured = (Vec<(&'static str, f64)>, Value);

/// Starts `config` against `targets`, runs `body` once it is ready, stops it.
fn traced(
    ctx: &Ctx,
    config: Config,
    targets: &[u32],
    max_secs: u64,
    body: impl FnOnce(Option<u32>) -> anyhow::Result<Measured>,
) -> anyhow::Result<(Measured, Option<TracerRun>)> {
    let mut tracer = Tracer::start(config, ctx.bin, targets, max_secs)?;
    let (startup, ready) = match tracer.as_mut() {
        Some(t) => {
            let s = t.wait_ready(READY_TIMEOUT)?;
            (Some(s), Some(t.sample()?))
        }
        None => (None, None),
    };
    let t0 = Instant::now();
    let measured = body(tracer.as_ref().map(|t| t.pid));
    let window_s = t0.elapsed().as_secs_f64();
    let end = tracer.as_ref().and_then(|t| t.sample().ok());
    let finished = tracer.as_mut().map(|t| t.stop(STOP_GRACE)).transpose()?;
    let measured = measured?;
    let run = match (startup, ready, finished) {
        (Some(startup), Some(ready), Some(finished)) => {
            if finished.killed {
                bail!(
                    "{} did not stop within {STOP_GRACE:?} of SIGINT",
                    config.name()
                );
            }
            Some(TracerRun {
                startup,
                ready,
                end,
                window_s,
                finished,
            })
        }
        _ => None,
    };
    Ok((measured, run))
}

fn run_overhead(ctx: &mut Ctx, w: Workload, config: Config, round: usize, slot: usize) -> Run {
    let context = box_context();
    let result = match w.worker() {
        Some(kind) => run_worker(ctx, kind, ctx.opts.run_secs, 1, config),
        None => run_nginx(ctx, w, config),
    };
    finish_run(w.name(), config, round, slot, context, result)
}

/// The box right now: load average, TCP sockets (`/proc/net/sockstat`). gwtrace's /proc scans
/// grow with the number of sockets, `TIME_WAIT` included, and the workloads leave many behind.
fn box_context() -> Value {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let tcp: BTreeMap<String, u64> = sockstat
        .lines()
        .find_map(|l| l.strip_prefix("TCP: "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.chunks(2)
                .filter_map(|p| Some((p.first()?.to_string(), p.get(1)?.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default();
    json!({"loadavg": loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" "), "tcp": tcp})
}

fn finish_run(
    workload: &'static str,
    config: Config,
    round: usize,
    slot: usize,
    context: Value,
    result: anyhow::Result<(Measured, Option<TracerRun>)>,
) -> Run {
    match result {
        Ok(((metrics, raw), tracer)) => Run {
            workload,
            config,
            round,
            slot,
            metrics: metrics.into_iter().collect(),
            raw,
            tracer,
            error: None,
            context,
        },
        Err(e) => Run {
            workload,
            config,
            round,
            slot,
            metrics: BTreeMap::new(),
            raw: Value::Null,
            tracer: None,
            error: Some(format!("{e:#}")),
            context,
        },
    }
}

/// A workload process (`xtask bench-worker`), killed if still running when dropped.
struct WorkerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl WorkerProc {
    fn spawn(exe: &Path, kind: Kind, secs: f64, threads: usize) -> anyhow::Result<Self> {
        let name = clap::ValueEnum::to_possible_value(&kind)
            .map(|v| v.get_name().to_owned())
            .context("worker kind")?;
        let mut child = Command::new(exe)
            .args([
                "bench-worker",
                &name,
                "--secs",
                &secs.to_string(),
                "--threads",
                &threads.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} bench-worker {name}", exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("worker stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            lines,
        })
    }

    fn line(&self, timeout: Duration) -> anyhow::Result<String> {
        self.lines
            .recv_timeout(timeout)
            .context("the workload process said nothing (did it fail? see above)")
    }

    fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("worker stdin")?;
        stdin
            .write_all(b"go\n")
            .context("telling the workload to go")?;
        stdin.flush()?;
        Ok(())
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            tracer::signal(self.child.id(), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// A worker workload: the process starts, the tracer attaches (strace: to it), the loop runs.
fn run_worker(
    ctx: &Ctx,
    kind: Kind,
    secs: f64,
    threads: usize,
    config: Config,
) -> anyhow::Result<(Measured, Option<TracerRun>)> {
    let mut proc = WorkerProc::spawn(&ctx.exe, kind, secs, threads)?;
    let ready = proc.line(Duration::from_secs(30))?;
    if ready != "ready" {
        bail!("workload process said {ready:?} instead of ready");
    }
    let pid = proc.child.id();
    let max = secs_bound(secs);
    traced(ctx, config, &[pid], max, |_| {
        proc.go()?;
        let line = proc.line(Duration::from_secs_f64(secs + 60.0))?;
        let raw: Value =
            serde_json::from_str(&line).with_context(|| format!("workload result {line:?}"))?;
        let status = proc.child.wait().context("waiting for the workload")?;
        if !status.success() {
            bail!("workload process failed ({status})");
        }
        let ops = raw["ops"].as_f64().context("ops")?;
        let secs = raw["secs"].as_f64().context("secs")?;
        if ops <= 0.0 || secs <= 0.0 {
            bail!("workload did nothing: {line}");
        }
        let metrics = match kind {
            Kind::NullSyscall => vec![("ns/op", secs * 1e9 / ops)],
            Kind::TcpLoop | Kind::UnixLoop => vec![("conn/s", ops / secs)],
            Kind::Storm => vec![("failed connects/s", ops / secs)],
        };
        Ok((metrics, raw))
    })
}

/// Upper bound for a tracer's own `--duration`, in case this process dies without stopping it.
fn secs_bound(secs: f64) -> u64 {
    // Saturating float-to-int conversion; the bound only needs to be generous.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "positive, small, saturating"
    )]
    let s = secs.ceil() as u64;
    s + 300
}

fn run_nginx(
    ctx: &Ctx,
    w: Workload,
    config: Config,
) -> anyhow::Result<(Measured, Option<TracerRun>)> {
    let nginx = ctx.nginx.as_ref().context("nginx is not running")?;
    let workers = nginx.worker_pids();
    if workers.is_empty() {
        bail!("nginx has no worker process");
    }
    let url = nginx.url(if w == Workload::NginxTcp {
        "/tcp"
    } else {
        "/unix"
    });
    let secs = ctx.opts.wrk_secs;
    #[expect(clippy::cast_precision_loss, reason = "seconds")]
    let max = secs_bound(secs as f64);
    traced(ctx, config, &workers, max, |_| {
        let r = nginx::wrk(&url, secs)?;
        if r.non_2xx > 0 || r.socket_errors > 0 {
            bail!(
                "wrk saw {} non-2xx responses and {} socket errors",
                r.non_2xx,
                r.socket_errors
            );
        }
        let metrics = vec![
            ("req/s", r.requests_per_sec),
            ("p50 ms", r.p50_ms),
            ("p99 ms", r.p99_ms),
        ];
        Ok((metrics, serde_json::to_value(&r)?))
    })
}

fn run_storm(ctx: &Ctx, config: Config, slot: usize) -> Run {
    #[expect(clippy::cast_precision_loss, reason = "seconds")]
    let secs = ctx.opts.storm_secs as f64;
    let context = box_context();
    let result = run_worker(ctx, Kind::Storm, secs, ctx.opts.storm_threads, config).and_then(
        |((mut metrics, raw), tracer)| {
            if let Some(t) = &tracer {
                let s = t.finished.summary.as_ref().context("no gwtrace summary")?;
                let attempted = raw["ops"].as_f64().context("ops")?;
                #[expect(clippy::cast_precision_loss, reason = "event counts")]
                let lines = s.events.get("connect_failed").copied().unwrap_or(0) as f64;
                // Failures delivered: what the lines stand for (identical ones fold in the kernel).
                #[expect(clippy::cast_precision_loss, reason = "event counts")]
                let delivered = s.failures.map_or(lines, |f| f as f64);
                #[expect(clippy::cast_precision_loss, reason = "event counts")]
                let lost = s
                    .lost
                    .context("no `lost events` line in gwtrace's summary")?
                    as f64;
                #[expect(clippy::cast_precision_loss, reason = "event counts")]
                let kernel = s.kernel.get("connect_failed").copied().unwrap_or(0) as f64;
                // VmHWM right before the stop (the process is gone after).
                #[expect(clippy::cast_precision_loss, reason = "KiB")]
                let hwm = t.end.map_or(t.finished.maxrss_kib, |e| e.hwm_kib) as f64;
                metrics.extend([
                    ("events delivered", delivered),
                    ("connect_failed lines", lines),
                    ("kernel counted failures", kernel),
                    ("delivered %", delivered / attempted * 100.0),
                    ("lost events", lost),
                    (
                        "cpu ms/100k",
                        t.window_cpu_ms() / (delivered.max(1.0) / 100_000.0),
                    ),
                    ("peak rss MiB", hwm / 1024.0),
                ]);
            }
            Ok(((metrics, raw), tracer))
        },
    );
    finish_run(STORM, config, 0, slot, context, result)
}

/// Today's date (UTC) as YYYY-MM-DD and the time as an RFC 3339 timestamp.
pub fn utc_now() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// Seconds since the epoch as (YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ).
fn utc(secs: u64) -> (String, String) {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let date = format!("{y:04}-{m:02}-{d:02}");
    let ts = format!(
        "{date}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    (date, ts)
}

/// `json!` of a run, every raw figure included.
fn run_json(r: &Run) -> Value {
    let tracer = r.tracer.as_ref().map(|t| {
        json!({
            "ready_line_ms": t.startup.ready_line_ms,
            "attached_ms": t.startup.attached_ms,
            "attach_fds": t.startup.attach_fds,
            "map_memlock_kib": t.startup.map_memlock_kib,
            "reported_attach_ms": t.startup.reported_ms,
            "cpu_ms_at_ready": t.ready.cpu_ms,
            "cpu_ms_total": t.finished.cpu_ms,
            "cpu_ms_window": t.window_cpu_ms(),
            "window_s": t.window_s,
            "vm_hwm_kib": t.end.map(|e| e.hwm_kib),
            "vm_rss_kib": t.end.map(|e| e.rss_kib),
            "maxrss_kib": t.finished.maxrss_kib,
            "exit": t.finished.status,
            "stop_ms": t.finished.stop_ms,
            "stdout_lines": t.finished.stdout_lines,
            "summary": t.finished.summary,
            "stderr": t.finished.stderr.iter().rev().take(20).rev().collect::<Vec<_>>(),
        })
    });
    json!({
        "workload": r.workload,
        "config": r.config.name(),
        "round": r.round + 1,
        "slot": r.slot,
        "metrics": r.metrics,
        "raw": r.raw,
        "tracer": tracer,
        "error": r.error,
        "context": r.context,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_dates() {
        assert_eq!(super::utc(0).1, "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400).0, "2000-02-29");
        assert_eq!(super::utc(1_795_000_000).1, "2026-11-18T11:06:40Z");
    }
}
