//! The capture loop shared by `gwtrace` and `gwtrace record`: attach, drain on a short timer,
//! enrich events with /proc facts, stop on a deadline or SIGINT/SIGTERM/SIGHUP, detach, summarise.
use std::{
    collections::BTreeMap,
    fs::OpenOptions,
    io::{BufWriter, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
    time::Duration,
};

use anyhow::Context as _;
use gwtrace::{
    capture::{Capture, Counters, Hooks},
    enrich::Enricher,
    event::{Body, Event, monotonic_ns},
    host::{SystemFacts, cgroup::Resolver},
};
use tokio::signal::unix::{SignalKind, signal};

use super::{RecordArgs, UsageError};

/// How often the ring buffer is drained while events flow: the programs never wake us, so this
/// bounds delivery latency.
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// How often once nothing has come for [`IDLE_AFTER`] drains: a quiet host costs a quarter of
/// the wake-ups, and the first event of a burst still leaves within 40 ms (target: 50).
const DRAIN_IDLE: Duration = Duration::from_millis(40);
const IDLE_AFTER: u32 = 50;
/// How often facts, loss counters and verdicts are refreshed.
const TICK_EVERY: Duration = Duration::from_secs(1);

/// One timer for draining and the once-a-second tick; its period stretches while the host is
/// quiet (the wake-ups are most of an idle agent's CPU).
struct Pace {
    empty_drains: u32,
    next_tick: tokio::time::Instant,
}

impl Pace {
    fn new() -> Self {
        Self {
            empty_drains: 0,
            next_tick: tokio::time::Instant::now(),
        }
    }

    /// How long to sleep before the next drain.
    fn pause(&self) -> Duration {
        if self.empty_drains >= IDLE_AFTER {
            DRAIN_IDLE
        } else {
            DRAIN_EVERY
        }
    }

    /// Records a drain of `n` events; whether the once-a-second tick is due.
    fn drained(&mut self, n: usize) -> bool {
        self.empty_drains = if n == 0 {
            self.empty_drains.saturating_add(1)
        } else {
            0
        };
        let now = tokio::time::Instant::now();
        if now < self.next_tick {
            return false;
        }
        self.next_tick = (self.next_tick + TICK_EVERY).max(now);
        true
    }
}

/// What the loop saw, for the summary.
#[derive(Default)]
pub struct Stats {
    pub by_kind: BTreeMap<&'static str, u64>,
    pub counters: Counters,
    pub lost: u64,
    /// Failed connects the `connect_failed` lines stand for (identical ones fold into one line).
    pub failures: u64,
    pub seconds: f64,
    pub stopped_by: &'static str,
}

impl Stats {
    /// Human summary lines (stderr).
    pub fn render(&self) -> String {
        use probe_common::{
            CNT_ACCEPT_FAILED, CNT_ACCEPT_OK, CNT_CONNECT_FAILED, CNT_CONNECT_INPROGRESS,
            CNT_CONNECT_OK, CNT_TCP_ESTABLISHED, CNT_TCP_FAILED,
        };
        let c = |i: u32| self.counters.counters.get(i as usize).copied().unwrap_or(0);
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!(
            "gwtrace: {:.1}s ({}), events: {}\n\
             gwtrace: failed connects reported: {} in {} connect_failed lines (identical failures fold into one line per {} ms)\n\
             gwtrace: kernel: connect ok {} in-progress {} failed {}, tcp established {} failed {}, accept ok {} failed {}\n\
             gwtrace: lost events: {} (ring buffer, map, reads, recursion misses)",
            self.seconds,
            self.stopped_by,
            if kinds.is_empty() {
                "none".to_owned()
            } else {
                kinds.join(", ")
            },
            self.failures,
            self.by_kind.get("connect_failed").copied().unwrap_or(0),
            probe_common::FOLD_WINDOW_NS / 1_000_000,
            c(CNT_CONNECT_OK),
            c(CNT_CONNECT_INPROGRESS),
            c(CNT_CONNECT_FAILED),
            c(CNT_TCP_ESTABLISHED),
            c(CNT_TCP_FAILED),
            c(CNT_ACCEPT_OK),
            c(CNT_ACCEPT_FAILED),
            self.lost,
        )
    }
}

/// Options of one capture session.
pub struct SessionOpts {
    pub duration: Option<Duration>,
    pub hooks: Hooks,
    pub proxy_names: Vec<String>,
    pub proxy_pids: Vec<u32>,
}

/// Runs the capture. `on_event` sees every line in order (facts lines before the events they
/// explain); `on_tick(now_mono_ns)` runs every second and once more at the end. The ready line
/// (`ready_msg`, on stderr) is printed once every program is attached, not before.
pub fn run(
    opts: &SessionOpts,
    ready_msg: &str,
    on_event: impl FnMut(&Event) -> anyhow::Result<()>,
    on_tick: impl FnMut(u64) -> anyhow::Result<()>,
) -> anyhow::Result<Stats> {
    run_with_counters(opts, ready_msg, on_event, on_tick, None)
}

/// Sees the kernel counters every tick (before `on_tick`) and once at the end.
pub type OnCounters<'a> = &'a mut dyn FnMut(&Counters) -> anyhow::Result<()>;

/// [`run`], with `on_counters` (the kernel counters read every tick, for `gwtrace serve`).
pub fn run_with_counters(
    opts: &SessionOpts,
    ready_msg: &str,
    mut on_event: impl FnMut(&Event) -> anyhow::Result<()>,
    mut on_tick: impl FnMut(u64) -> anyhow::Result<()>,
    mut on_counters: Option<OnCounters<'_>>,
) -> anyhow::Result<Stats> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .enable_io()
        .build()
        .context("starting the event loop")?;
    // Catch SIGINT/SIGTERM/SIGHUP before attaching: a signal that lands between attach and the
    // loop must still end the run cleanly (detach, flush, summary), never kill the process.
    let (mut sigint, mut sigterm, mut sighup) = {
        let _guard = rt.enter();
        (
            signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
            signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            signal(SignalKind::hangup()).context("installing SIGHUP handler")?,
        )
    };
    let started = std::time::Instant::now();
    let mut capture = Capture::start(opts.hooks)?;
    eprintln!(
        "gwtrace: {ready_msg} (attached in {} ms)",
        started.elapsed().as_millis()
    );
    let mut enricher = Enricher::new(SystemFacts::new(), opts.proxy_names.clone());
    let mut origins = Resolver::system();
    let mut stats = Stats::default();
    let clock = capture.clock();
    let mut emit = |ev: &Event, stats: &mut Stats| -> anyhow::Result<()> {
        *stats.by_kind.entry(ev.kind()).or_default() += 1;
        match ev.body {
            Body::Loss { count, .. } => stats.lost += count,
            Body::ConnectFailed { count, .. } => stats.failures += count,
            _ => {}
        }
        on_event(ev)
    };
    let now = monotonic_ns();
    let snapshot = enricher.snapshot(&opts.proxy_pids);
    origins.learn(&snapshot.processes);
    emit(&facts_event(&clock, now, snapshot), &mut stats)?;

    stats.stopped_by = rt.block_on(async {
        let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
        let mut pace = Pace::new();
        let sleep_until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep_until_deadline);
        let stopped_by = loop {
            tokio::select! {
                () = tokio::time::sleep(pace.pause()) => {
                    let n = drain_once(&mut capture, &mut enricher, &mut origins, &clock, &mut stats, &mut emit)?;
                    if !pace.drained(n) {
                        continue;
                    }
                    let now = monotonic_ns();
                    if let Some(up) = enricher.periodic() {
                        origins.learn(&up.processes);
                        emit(&facts_event(&clock, now, up), &mut stats)?;
                    }
                    for ev in capture.loss_events(now) {
                        emit(&ev, &mut stats)?;
                    }
                    if let Some(f) = on_counters.as_mut() {
                        f(&capture.counters())?;
                    }
                    on_tick(now)?;
                }
                () = &mut sleep_until_deadline => break "duration reached",
                _ = sigint.recv() => break "SIGINT",
                _ = sigterm.recv() => break "SIGTERM",
                _ = sighup.recv() => break "SIGHUP",
            }
        };
        anyhow::Ok(stopped_by)
    })?;
    // Final drain: nothing the kernel delivered or counted is left behind.
    let mut batch = Vec::new();
    capture.flush(|ev| batch.push(ev));
    emit_batch(
        batch,
        &mut enricher,
        &mut origins,
        &clock,
        &mut stats,
        &mut emit,
    )?;
    let now = monotonic_ns();
    for ev in capture.loss_events(now) {
        emit(&ev, &mut stats)?;
    }
    stats.counters = capture.counters();
    stats.seconds = started.elapsed().as_secs_f64();
    drop(capture); // detaches every program, frees every map
    if let Some(f) = on_counters.as_mut() {
        f(&stats.counters)?;
    }
    on_tick(now)?;
    Ok(stats)
}

fn drain_once(
    capture: &mut Capture,
    enricher: &mut Enricher<SystemFacts>,
    origins: &mut Resolver,
    clock: &gwtrace::event::Clock,
    stats: &mut Stats,
    emit: &mut impl FnMut(&Event, &mut Stats) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let mut batch = Vec::new();
    capture.drain(|ev| batch.push(ev));
    let n = batch.len();
    emit_batch(batch, enricher, origins, clock, stats, emit)?;
    Ok(n)
}

/// Enriches, attributes and emits drained events in order.
fn emit_batch(
    batch: Vec<Event>,
    enricher: &mut Enricher<SystemFacts>,
    origins: &mut Resolver,
    clock: &gwtrace::event::Clock,
    stats: &mut Stats,
    emit: &mut impl FnMut(&Event, &mut Stats) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for mut ev in batch {
        let up = enricher.before(&ev);
        // The processes the enricher just read carry their cgroup: attribution reuses them
        // rather than reading /proc/PID/cgroup a second time.
        if let Some(up) = &up {
            origins.learn(&up.processes);
        }
        // An exiting process is attributed now: its pid may be reused once it is gone.
        ev.origin = origins.resolve(ev.pid, ev.cgroup_id, ev.mono_ns);
        if matches!(ev.body, Body::ProcessExit { .. }) {
            origins.forget(ev.pid);
        }
        if let Some(up) = up {
            if let Body::Exec { cmdline, .. } = &mut ev.body {
                *cmdline = up
                    .processes
                    .iter()
                    .find(|p| p.pid == ev.pid)
                    .map(|p| p.cmdline.clone());
            }
            emit(&facts_event(clock, ev.mono_ns, up), stats)?;
        }
        emit(&ev, stats)?;
    }
    Ok(())
}

fn facts_event(
    clock: &gwtrace::event::Clock,
    mono_ns: u64,
    up: gwtrace::facts::FactsUpdate,
) -> Event {
    Event::facts(clock.rfc3339(mono_ns), mono_ns, up)
}

/// Opens an output file safely: created 0600, never through a symlink, never over an existing
/// file unless `force`.
pub fn open_output(path: &Path, force: bool) -> anyhow::Result<Box<dyn Write>> {
    if path == Path::new("-") {
        return Ok(Box::new(BufWriter::new(std::io::stdout())));
    }
    let mut o = OpenOptions::new();
    o.write(true).mode(0o600).custom_flags(libc::O_NOFOLLOW);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    let f = o.open(path).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AlreadyExists => " (it exists: pass --force to overwrite)",
            std::io::ErrorKind::PermissionDenied => " (permission denied: pick a writable path)",
            _ if e.raw_os_error() == Some(libc::ELOOP) => {
                " (it is a symlink: gwtrace never follows one)"
            }
            _ => "",
        };
        UsageError::Usage(format!("cannot create {}: {e}{hint}", path.display()))
    })?;
    Ok(Box::new(BufWriter::new(f)))
}

/// `gwtrace record`.
pub fn record(a: &RecordArgs) -> anyhow::Result<std::process::ExitCode> {
    let out = std::cell::RefCell::new(open_output(
        a.output.as_deref().unwrap_or(Path::new("-")),
        a.force,
    )?);
    let opts = SessionOpts {
        duration: a.capture.duration.map(Duration::from_secs_f64),
        hooks: a.capture.hooks.into(),
        proxy_names: super::watch::default_proxy_names(),
        proxy_pids: Vec::new(),
    };
    let mut write_err = None;
    let stats = run(
        &opts,
        "recording (Ctrl-C to stop)",
        |ev| {
            let mut out = out.borrow_mut();
            serde_json::to_writer(&mut *out, ev)?;
            out.write_all(b"\n")?;
            Ok(())
        },
        |_| {
            if let Err(e) = out.borrow_mut().flush() {
                write_err = Some(e);
            }
            Ok(())
        },
    )?;
    out.borrow_mut().flush().context("flushing the output")?;
    if let Some(e) = write_err {
        return Err(e).context("writing the output");
    }
    eprintln!("{}", stats.render());
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_slows_down_when_quiet_and_ticks_once_a_second() {
        let mut p = Pace::new();
        assert_eq!(p.pause(), DRAIN_EVERY);
        // The first drain runs the tick; the next ones within the second do not.
        assert!(p.drained(0));
        assert!(!p.drained(0));
        for _ in 0..IDLE_AFTER {
            let _ = p.drained(0);
        }
        assert_eq!(p.pause(), DRAIN_IDLE);
        // One event: back to the short period at once.
        let _ = p.drained(3);
        assert_eq!(p.pause(), DRAIN_EVERY);
    }
}
