//! The host-size workload (issue #20): gwtrace's own CPU while a real nginx fails connects, on a
//! host with 100, 1,000 and 5,000 extra idle processes, at 0, 1 and 100 failures a second (and 100
//! a second spread over 50 distinct targets). The agent's cost must not grow with the host: the
//! process table is kept from exec/exit events and listener owners are searched for the failing
//! targets only, so a bigger host should cost about the same.
//!
//! The idle processes are forked by `xtask bench-idle` (each holds a few file descriptors, as
//! real processes do, so a scan of every fd would show); they are killed by pid when the cell
//! ends. The failures are real: nginx proxies `/fail/K` to a unix socket that does not exist
//! and answers 502, which the driver checks.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::json;

use super::{
    Ctx, Run, box_context, finish_run,
    nginx::Nginx,
    traced,
    tracer::{Config, signal, task_cpu_ms},
};

/// Name of the workload (for the filter and the report).
pub const HOST_SIZE: &str = "host-size";

/// Extra idle processes per size.
pub const SIZES: [usize; 3] = [100, 1000, 5000];

/// Distinct failing targets nginx is configured with.
pub const TARGETS: usize = 50;

/// One cell's failure load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    /// Failed requests per second.
    pub rate: u32,
    /// Distinct targets they go to.
    pub targets: usize,
}

/// The loads measured at every size.
pub const LOADS: [Load; 4] = [
    Load {
        rate: 0,
        targets: 1,
    },
    Load {
        rate: 1,
        targets: 1,
    },
    Load {
        rate: 100,
        targets: 1,
    },
    Load {
        rate: 100,
        targets: TARGETS,
    },
];

impl Load {
    /// `0 fail/s`, `100 fail/s, 50 targets`.
    pub fn label(self) -> String {
        if self.targets > 1 {
            format!("{} fail/s, {} targets", self.rate, self.targets)
        } else {
            format!("{} fail/s", self.rate)
        }
    }
}

/// `xtask bench-idle --count N`: forks N idle children, prints `ready`, and kills them (by pid)
/// when stdin closes. Each child holds a few descriptors and sleeps in `pause()`.
pub fn idle_pool(count: usize) -> anyhow::Result<()> {
    let mut children = Vec::with_capacity(count);
    for _ in 0..count {
        // SAFETY: this process is single-threaded here (the hidden subcommand starts no threads),
        // so the child may run any code; it only calls async-signal-safe functions.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            for &c in &children {
                signal(c, libc::SIGKILL);
            }
            bail!(
                "fork failed after {} children: {}",
                children.len(),
                std::io::Error::last_os_error()
            );
        }
        if pid == 0 {
            idle_child();
        }
        children.push(pid.cast_unsigned());
    }
    println!("ready");
    std::io::stdout().flush()?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    for &c in &children {
        signal(c, libc::SIGKILL);
    }
    for _ in &children {
        // SAFETY: wait(2) with a null status pointer only reaps a child.
        unsafe { libc::wait(std::ptr::null_mut()) };
    }
    Ok(())
}

/// The body of an idle child: a few open descriptors, then sleep until killed (or until the
/// pool's process dies: `PR_SET_PDEATHSIG`).
fn idle_child() -> ! {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    for _ in 0..6 {
        // SAFETY: a NUL-terminated literal path; the descriptor is kept on purpose.
        unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
    }
    loop {
        // SAFETY: pause(2) has no arguments.
        unsafe { libc::pause() };
    }
}

/// A running pool of idle processes, killed when dropped.
struct Pool {
    child: Child,
}

impl Pool {
    fn start(exe: &Path, count: usize) -> anyhow::Result<Self> {
        let mut child = Command::new(exe)
            .args(["bench-idle", "--count", &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting xtask bench-idle")?;
        let stdout = child.stdout.take().context("pool stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the pool's ready line")?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the idle pool said {line:?} instead of ready");
        }
        Ok(Self { child })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing stdin tells the pool to kill its children by pid and exit.
        drop(self.child.stdin.take());
        let t0 = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(self.child.id(), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// The `/proc/PID` directories of the processes on the host now.
pub fn process_dirs() -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/proc").map_or_else(
        |_| Vec::new(),
        |d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
                .map(|e| e.path())
                .collect()
        },
    )
}

/// Processes on the host now.
fn process_count() -> usize {
    process_dirs().len()
}

/// Sends `rate` requests a second for `secs` to `/fail/K` (K round-robin over `targets`), each on
/// a new connection, and counts the 502s.
fn drive(nginx: &Nginx, load: Load, secs: f64) -> anyhow::Result<(u64, u64)> {
    let window = Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    if load.rate == 0 {
        std::thread::sleep(window);
        return Ok((0, 0));
    }
    let every = Duration::from_secs_f64(1.0 / f64::from(load.rate));
    let (mut sent, mut bad_gateway) = (0u64, 0u64);
    let mut next = t0;
    while t0.elapsed() < window {
        let k = usize::try_from(sent).unwrap_or(0) % load.targets;
        let mut s = TcpStream::connect(("127.0.0.1", nginx.port)).context("connecting to nginx")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /fail/{k} HTTP/1.0\r\nHost: bench\r\n\r\n")?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).context("reading nginx's answer")?;
        sent += 1;
        if &head[9..12] == b"502" {
            bad_gateway += 1;
        }
        next += every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok((sent, bad_gateway))
}

/// Every cell once per round, sizes in a rotating order.
pub fn run(ctx: &Ctx, rounds: usize, secs: f64, out: &mut Vec<Run>) {
    for round in 0..rounds {
        for i in 0..SIZES.len() {
            let size = SIZES[(round + i) % SIZES.len()];
            let pool = match Pool::start(&ctx.exe, size) {
                Ok(p) => p,
                Err(e) => {
                    out.push(finish_run(
                        HOST_SIZE,
                        Config::Gwtrace,
                        round,
                        i,
                        box_context(),
                        Err(e),
                    ));
                    continue;
                }
            };
            for (slot, load) in LOADS.into_iter().enumerate() {
                let context = box_context();
                let result = cell(ctx, size, load, secs);
                let run = finish_run(HOST_SIZE, Config::Gwtrace, round, slot, context, result);
                super::progress(&run, rounds);
                out.push(run);
            }
            drop(pool);
        }
    }
}

fn cell(
    ctx: &Ctx,
    size: usize,
    load: Load,
    secs: f64,
) -> anyhow::Result<(super::Measured, Option<super::TracerRun>)> {
    let nginx = ctx.nginx.as_ref().context("nginx is not running")?;
    let procs = process_count();
    let max = super::secs_bound(secs);
    traced(ctx, Config::Gwtrace, &nginx.worker_pids(), max, |agent| {
        let pid = agent.context("gwtrace did not start")?;
        let c0 = task_cpu_ms(pid)?;
        let t0 = Instant::now();
        let (sent, bad_gateway) = drive(nginx, load, secs)?;
        let window = t0.elapsed().as_secs_f64();
        let c1 = task_cpu_ms(pid)?;
        let cpu = (c1 - c0, window);
        if sent != bad_gateway {
            bail!("nginx answered {bad_gateway} of {sent} requests with 502 (all should be)");
        }
        #[expect(clippy::cast_precision_loss, reason = "small counts")]
        let metrics = vec![
            ("procs", size as f64),
            ("rate", f64::from(load.rate)),
            ("targets", load.targets as f64),
            ("host processes", procs as f64),
            ("agent cpu ms/s", cpu.0 / cpu.1.max(1e-3)),
            ("requests", sent as f64),
        ];
        let raw = json!({"procs": size, "rate": load.rate, "targets": load.targets,
            "host_processes": procs, "agent_cpu_ms": cpu.0, "window_s": cpu.1,
            "requests": sent, "bad_gateway": bad_gateway});
        Ok((metrics, raw))
    })
}
