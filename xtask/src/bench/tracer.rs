//! The tracers under comparison: start one, wait until it is really attached, sample its CPU and
//! memory, stop it with SIGINT and read what it said. Only processes started here are signalled,
//! by their pid.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A tracing configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Config {
    /// No tracing.
    Baseline,
    /// The daemon in its default mode: `gwtrace --json` (the diagnosis engine), verdicts to
    /// /dev/null.
    Gwtrace,
    /// `gwtrace --json --hooks full`: every hook attached all the time (what the default mode
    /// costs while escalated, during an incident).
    GwtraceFull,
    /// `gwtrace --json --hooks sock`: no syscall tracepoints.
    GwtraceSock,
    /// `gwtrace record --output /dev/null --force`: every event serialised as JSON.
    GwtraceRecord,
    /// bench/incident.bt: what a user would type for the same facts.
    Bpftrace,
    /// `strace -f -e trace=connect -o /dev/null -p PID` on the workload.
    Strace,
}

impl Config {
    /// The configurations of the overhead workloads, in their base order.
    pub const OVERHEAD: [Self; 6] = [
        Self::Baseline,
        Self::Gwtrace,
        Self::GwtraceFull,
        Self::GwtraceSock,
        Self::Bpftrace,
        Self::Strace,
    ];
    /// The configurations of the failure storm.
    /// The storm's failures come from the bench worker, no proxy: the default mode rightly
    /// never looks at them, so the storm runs every hook (what an incident costs).
    pub const STORM: [Self; 3] = [Self::Baseline, Self::GwtraceFull, Self::GwtraceRecord];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Gwtrace => "gwtrace",
            Self::GwtraceFull => "gwtrace-full",
            Self::GwtraceSock => "gwtrace-sock",
            Self::GwtraceRecord => "gwtrace-record",
            Self::Bpftrace => "bpftrace",
            Self::Strace => "strace",
        }
    }

    /// The command line, as shown in reports.
    pub const fn about(self) -> &'static str {
        match self {
            Self::Baseline => "no tracing",
            Self::Gwtrace => "gwtrace --json > /dev/null",
            Self::GwtraceFull => "gwtrace --json --hooks full > /dev/null",
            Self::GwtraceSock => "gwtrace --json --hooks sock > /dev/null",
            Self::GwtraceRecord => "gwtrace record --hooks full --output /dev/null --force",
            Self::Bpftrace => "bpftrace bench/incident.bt > /dev/null",
            Self::Strace => "strace -f -e trace=connect -o /dev/null -p PID",
        }
    }

    pub const fn is_gwtrace(self) -> bool {
        matches!(
            self,
            Self::Gwtrace | Self::GwtraceFull | Self::GwtraceSock | Self::GwtraceRecord
        )
    }
}

/// Lines a tracer wrote on one stream, with when they arrived.
#[derive(Default)]
struct Lines {
    kept: Vec<(Instant, String)>,
    total: u64,
}

/// Lines kept per stream (the rest are only counted: bpftrace may print a lot).
const KEEP_LINES: usize = 2000;

fn reader(
    stream: impl Read + Send + 'static,
    into: Arc<Mutex<Lines>>,
    keep: usize,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let now = Instant::now();
                    let Ok(mut l) = into.lock() else { break };
                    l.total += 1;
                    if l.kept.len() < keep {
                        l.kept
                            .push((now, String::from_utf8_lossy(&buf).trim_end().to_owned()));
                    }
                }
            }
        }
    })
}

/// How long a tracer took to start.
#[derive(Clone, Copy, Debug, Default)]
pub struct Startup {
    /// Spawn to the ready line ("recording"/"tracing", "Attaching N probes", "attached").
    pub ready_line_ms: f64,
    /// Spawn to the last program attached: the moment its count of BPF links/perf events stopped
    /// growing (strace: its "attached" line).
    pub attached_ms: f64,
    /// BPF links + perf events it holds once attached.
    pub attach_fds: usize,
    /// What the tracer says itself (gwtrace's ready line: `(attached in N ms)`).
    pub reported_ms: Option<f64>,
    /// Locked memory of the BPF maps it holds (`memlock:` of each map fd's fdinfo), KiB.
    pub map_memlock_kib: u64,
}

/// CPU and memory of a process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// utime + stime, all threads.
    pub cpu_ms: f64,
    /// Peak resident set (`VmHWM`).
    pub hwm_kib: u64,
    /// Resident set now (`VmRSS`).
    pub rss_kib: u64,
}

/// Reads utime+stime and VmHWM/VmRSS of `pid`.
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .context("malformed /proc/PID/stat")
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 {
        u32::try_from(hz).unwrap_or(100)
    } else {
        100
    };
    let cpu_ticks = ticks(11)? + ticks(12)?;
    #[expect(
        clippy::cast_precision_loss,
        reason = "clock ticks of a benchmark run fit easily"
    )]
    let cpu_ms = cpu_ticks as f64 * 1000.0 / f64::from(hz);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        cpu_ms,
        hwm_kib: kib("VmHWM:"),
        rss_kib: kib("VmRSS:"),
    })
}

/// CPU time of every thread of `pid` (`/proc/PID/task/*/schedstat`, ns on CPU), in ms: finer than
/// the clock ticks of `/proc/PID/stat`, which matters at a few ms per second.
pub fn task_cpu_ms(pid: u32) -> anyhow::Result<f64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("reading /proc/{pid}/task"))?;
    let mut ns: u64 = 0;
    for e in dir.filter_map(Result::ok) {
        if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat"))
            && let Some(v) = s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        {
            ns += v;
        }
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "ns of a benchmark run fit easily"
    )]
    Ok(ns as f64 / 1e6)
}

/// Locked memory of the BPF maps `pid` holds, KiB (each map fd's fdinfo says `memlock:` bytes).
pub fn map_memlock_kib(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    let bytes: u64 = dir
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|info| info.contains("map_type:"))
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum();
    bytes / 1024
}

/// BPF links and perf events `pid` holds: one per attached tracepoint (plus bpftrace's per-CPU
/// output buffers).
fn attach_fds(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| {
            let t = t.to_string_lossy();
            t.starts_with("anon_inode:bpf_link") || t.starts_with("anon_inode:[perf_event]")
        })
        .count()
}

/// The counters gwtrace prints on stderr when it stops.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GwSummary {
    /// `events: connect_failed N, exec N, ...`
    pub events: BTreeMap<String, u64>,
    /// `kernel: connect ok N in-progress N failed N, tcp established N failed N, ...` as
    /// `connect_ok`, `connect_failed`, `tcp_failed`, ...
    pub kernel: BTreeMap<String, u64>,
    /// `lost events: N`
    pub lost: Option<u64>,
    /// `failed connects reported: N in M connect_failed lines`: failures the lines stand for.
    pub failures: Option<u64>,
    pub seconds: Option<f64>,
}

impl GwSummary {
    /// Parses gwtrace's stderr (unknown lines are ignored).
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut s = Self::default();
        for line in lines {
            let Some(l) = line.strip_prefix("gwtrace: ") else {
                continue;
            };
            if let Some(rest) = l.strip_prefix("lost events: ") {
                s.lost = rest.split_whitespace().next().and_then(|n| n.parse().ok());
            } else if let Some(rest) = l.strip_prefix("failed connects reported: ") {
                s.failures = rest.split_whitespace().next().and_then(|n| n.parse().ok());
            } else if let Some(rest) = l.strip_prefix("kernel: ") {
                for group in rest.split(", ") {
                    let mut words = group.split_whitespace();
                    let Some(prefix) = words.next() else { continue };
                    let words: Vec<&str> = words.collect();
                    for pair in words.chunks(2) {
                        if let [name, value] = pair
                            && let Ok(v) = value.parse()
                        {
                            s.kernel
                                .insert(format!("{prefix}_{}", name.replace('-', "_")), v);
                        }
                    }
                }
            } else if let Some((head, events)) = l.split_once(", events: ") {
                s.seconds = head.split('s').next().and_then(|v| v.parse().ok());
                for item in events.split(", ") {
                    if let Some((k, n)) = item.rsplit_once(' ')
                        && let Ok(n) = n.parse()
                    {
                        s.events.insert(k.to_owned(), n);
                    }
                }
            }
        }
        s
    }
}

/// What a stopped tracer left.
#[derive(Debug, Default)]
pub struct Finished {
    pub status: String,
    /// Had to be killed (did not stop on SIGINT in time).
    pub killed: bool,
    /// SIGINT to exit.
    pub stop_ms: f64,
    pub stderr: Vec<String>,
    pub stdout_lines: u64,
    pub summary: Option<GwSummary>,
    /// utime + stime over the whole life (wait4's rusage).
    pub cpu_ms: f64,
    /// Peak resident set over the whole life (`ru_maxrss`).
    pub maxrss_kib: u64,
}

/// A running tracer.
pub struct Tracer {
    pub config: Config,
    child: Child,
    pub pid: u32,
    spawned: Instant,
    targets: usize,
    stdout: Arc<Mutex<Lines>>,
    stderr: Arc<Mutex<Lines>>,
    readers: Vec<JoinHandle<()>>,
    /// Reaped by `stop` (wait4): the pid is no longer ours.
    reaped: bool,
}

/// How long a BPF tracer's attachment count must stay put to count as attached.
const SETTLE: Duration = Duration::from_millis(150);

impl Tracer {
    /// Starts `config` (None for the baseline). `targets` are the workload pids (strace attaches
    /// to them); `max_secs` bounds gwtrace's own run in case this process dies without stopping it.
    pub fn start(
        config: Config,
        bin: &Path,
        targets: &[u32],
        max_secs: u64,
    ) -> anyhow::Result<Option<Self>> {
        let max = format!("{max_secs}");
        let mut cmd = match config {
            Config::Baseline => return Ok(None),
            Config::Gwtrace | Config::GwtraceFull | Config::GwtraceSock => {
                let mut c = Command::new(bin);
                c.arg("--json");
                match config {
                    Config::GwtraceFull => {
                        c.args(["--hooks", "full"]);
                    }
                    Config::GwtraceSock => {
                        c.args(["--hooks", "sock"]);
                    }
                    _ => {}
                }
                c.args(["--duration", &max]).stdout(Stdio::null());
                c
            }
            Config::GwtraceRecord => {
                let mut c = Command::new(bin);
                c.args([
                    "record",
                    "--hooks",
                    "full",
                    "--output",
                    "/dev/null",
                    "--force",
                    "--duration",
                    &max,
                ])
                .stdout(Stdio::null());
                c
            }
            Config::Bpftrace => {
                let mut c = Command::new("bpftrace");
                // stdout is drained by a reader thread that keeps only the first lines: as cheap
                // as /dev/null for this script, and it shows "Attaching N probes...".
                c.arg(script()).stdout(Stdio::piped());
                c
            }
            Config::Strace => {
                if targets.is_empty() {
                    bail!("strace needs a pid to attach to");
                }
                let mut c = Command::new("strace");
                c.args(["-f", "-e", "trace=connect", "-o", "/dev/null"]);
                for t in targets {
                    c.arg("-p").arg(t.to_string());
                }
                c.stdout(Stdio::null());
                c
            }
        };
        Self::spawn(config, &mut cmd, targets.len(), KEEP_LINES).map(Some)
    }

    /// Spawns `cmd` as a tracer of kind `config` (stdin closed, stderr read and kept, stdout
    /// read too when `cmd` pipes it, up to `keep_stdout` lines with their arrival times).
    /// `targets` is the number of pids strace attaches to.
    pub fn spawn(
        config: Config,
        cmd: &mut Command,
        targets: usize,
        keep_stdout: usize,
    ) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::null()).stderr(Stdio::piped());
        let spawned = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        let stdout = Arc::new(Mutex::new(Lines::default()));
        let stderr = Arc::new(Mutex::new(Lines::default()));
        let mut readers = Vec::new();
        if let Some(s) = child.stdout.take() {
            readers.push(reader(s, Arc::clone(&stdout), keep_stdout));
        }
        if let Some(s) = child.stderr.take() {
            readers.push(reader(s, Arc::clone(&stderr), KEEP_LINES));
        }
        let pid = child.id();
        Ok(Self {
            config,
            child,
            pid,
            spawned,
            targets,
            stdout,
            stderr,
            readers,
            reaped: false,
        })
    }

    /// The stdout lines kept so far from the `from`-th on, with when each arrived.
    pub fn stdout_from(&self, from: usize) -> Vec<(Instant, String)> {
        self.stdout
            .lock()
            .map(|l| l.kept.iter().skip(from).cloned().collect())
            .unwrap_or_default()
    }

    fn first_line(&self, pick: impl Fn(&str) -> bool) -> Option<(Instant, String)> {
        let find =
            |l: &Arc<Mutex<Lines>>| l.lock().ok()?.kept.iter().find(|(_, s)| pick(s)).cloned();
        find(&self.stderr).or_else(|| find(&self.stdout))
    }

    fn count_lines(&self, pick: impl Fn(&str) -> bool) -> usize {
        self.stderr
            .lock()
            .map_or(0, |l| l.kept.iter().filter(|(_, s)| pick(s)).count())
    }

    fn stderr_tail(&self) -> String {
        self.stderr.lock().map_or_else(
            |_| String::new(),
            |l| {
                l.kept
                    .iter()
                    .rev()
                    .take(8)
                    .rev()
                    .map(|(_, s)| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" | ")
            },
        )
    }

    fn ms_since_spawn(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.spawned).as_secs_f64() * 1000.0
    }

    /// Waits until the tracer is attached: its ready line is out and (BPF tracers) its count of
    /// attached programs stopped growing.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Startup> {
        let mut fds = 0;
        let mut changed: Option<Instant> = None;
        loop {
            if let Some(st) = self.child.try_wait()? {
                self.reaped = true;
                // Let the readers catch the last words.
                std::thread::sleep(Duration::from_millis(50));
                bail!(
                    "{} exited before it was ready ({st}): {}",
                    self.config.name(),
                    self.stderr_tail()
                );
            }
            if self.config == Config::Strace {
                if self.count_lines(|l| l.contains(" attached")) >= self.targets {
                    let at = self
                        .first_line(|l| l.contains(" attached"))
                        .map_or_else(Instant::now, |(t, _)| t);
                    let ms = self.ms_since_spawn(at);
                    return Ok(Startup {
                        ready_line_ms: ms,
                        attached_ms: ms,
                        attach_fds: 0,
                        reported_ms: None,
                        map_memlock_kib: 0,
                    });
                }
            } else {
                let line = self.first_line(|l| match self.config {
                    Config::Bpftrace => l.starts_with("Attaching "),
                    _ => l.starts_with("gwtrace: recording") || l.starts_with("gwtrace: tracing"),
                });
                let n = attach_fds(self.pid);
                if n != fds {
                    fds = n;
                    changed = Some(Instant::now());
                }
                if let (Some((line_at, line)), Some(at)) = (line, changed)
                    && fds > 0
                    && at.elapsed() >= SETTLE
                {
                    return Ok(Startup {
                        ready_line_ms: self.ms_since_spawn(line_at),
                        attached_ms: self.ms_since_spawn(at),
                        attach_fds: fds,
                        reported_ms: reported_attach_ms(&line),
                        map_memlock_kib: map_memlock_kib(self.pid),
                    });
                }
            }
            if self.spawned.elapsed() > timeout {
                bail!(
                    "{} not ready after {:?} ({fds} programs attached): {}",
                    self.config.name(),
                    timeout,
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// CPU and memory so far.
    pub fn sample(&self) -> anyhow::Result<ProcSample> {
        sample(self.pid)
    }

    /// Stops the tracer with SIGINT (SIGKILL after `grace`), reaps it with its resource usage and
    /// collects its output.
    pub fn stop(&mut self, grace: Duration) -> anyhow::Result<Finished> {
        let t0 = Instant::now();
        let mut killed = false;
        let pid = i32::try_from(self.pid).context("pid")?;
        let mut sent = false;
        let (status, usage) = loop {
            let mut status = 0;
            // SAFETY: rusage is plain integers; all-zero is valid.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 on our own child, with valid out-pointers.
            let r = unsafe { libc::wait4(pid, &raw mut status, libc::WNOHANG, &raw mut usage) };
            if r == pid {
                self.reaped = true;
                break (status, usage);
            }
            if r < 0 {
                return Err(std::io::Error::last_os_error()).context("wait4 on the tracer");
            }
            if !sent {
                signal(self.pid, libc::SIGINT);
                sent = true;
            }
            if t0.elapsed() > grace && !killed {
                signal(self.pid, libc::SIGKILL);
                killed = true;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let stop_ms = t0.elapsed().as_secs_f64() * 1000.0;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let stderr: Vec<String> = self
            .stderr
            .lock()
            .map(|l| l.kept.iter().map(|(_, s)| s.clone()).collect())
            .unwrap_or_default();
        let stdout_lines = self.stdout.lock().map_or(0, |l| l.total);
        let summary = self
            .config
            .is_gwtrace()
            .then(|| GwSummary::parse(stderr.iter().map(String::as_str)));
        let status = if libc::WIFEXITED(status) {
            format!("exit {}", libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            format!("signal {}", libc::WTERMSIG(status))
        } else {
            format!("status {status}")
        };
        let tv_ms = |t: libc::timeval| {
            #[expect(clippy::cast_precision_loss, reason = "seconds of CPU fit easily")]
            let ms = t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
            ms
        };
        Ok(Finished {
            status,
            killed,
            stop_ms,
            stderr,
            stdout_lines,
            summary,
            cpu_ms: tv_ms(usage.ru_utime) + tv_ms(usage.ru_stime),
            maxrss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        })
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if !self.reaped && matches!(self.child.try_wait(), Ok(None)) {
            signal(self.pid, libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Sends `sig` to one process this benchmark started.
pub fn signal(pid: u32, sig: i32) {
    if let Ok(p) = i32::try_from(pid)
        && p > 0
    {
        // SAFETY: kill(2) on a pid we spawned and have not reaped yet; no memory involved.
        unsafe { libc::kill(p, sig) };
    }
}

/// `... (attached in 717 ms)` -> 717.
fn reported_attach_ms(line: &str) -> Option<f64> {
    let rest = &line[line.find("attached in ")? + "attached in ".len()..];
    rest.split_whitespace()
        .next()?
        .trim_end_matches("ms")
        .parse()
        .ok()
}

/// bench/incident.bt.
pub fn script() -> PathBuf {
    crate::root().join("bench/incident.bt")
}

#[cfg(test)]
mod tests {
    use super::GwSummary;

    #[test]
    fn reads_the_self_reported_attach_time() {
        let l = "gwtrace: tracing; verdicts appear as causes are established (Ctrl-C to stop) (attached in 717 ms)";
        assert_eq!(super::reported_attach_ms(l), Some(717.0));
        assert_eq!(
            super::reported_attach_ms("gwtrace: recording (Ctrl-C to stop)"),
            None
        );
    }

    #[test]
    fn parses_the_summary() {
        let s = GwSummary::parse([
            "gwtrace: tracing; verdicts appear",
            "gwtrace: 3.1s (duration reached), events: connect_failed 104, exec 67, facts 43, process_exit 101",
            "gwtrace: kernel: connect ok 0 in-progress 2 failed 104, tcp established 5 failed 1, accept ok 7 failed 0",
            "gwtrace: failed connects reported: 2500 in 104 connect_failed lines (identical failures fold into one line per 20 ms)",
            "gwtrace: lost events: 12 (ring buffer, map, reads, recursion misses)",
        ]);
        assert_eq!(s.failures, Some(2500));
        assert_eq!(s.events.get("connect_failed"), Some(&104));
        assert_eq!(s.events.get("process_exit"), Some(&101));
        assert_eq!(s.kernel.get("connect_failed"), Some(&104));
        assert_eq!(s.kernel.get("connect_in_progress"), Some(&2));
        assert_eq!(s.kernel.get("tcp_established"), Some(&5));
        assert_eq!(s.kernel.get("accept_ok"), Some(&7));
        assert_eq!(s.lost, Some(12));
        assert_eq!(s.seconds, Some(3.1));
    }
}
