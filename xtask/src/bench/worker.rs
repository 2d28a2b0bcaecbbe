//! The workload processes (`xtask bench-worker KIND`): a separate process per run so that strace
//! can attach to exactly the workload, and so that every configuration measures the same code.
//!
//! Protocol: the worker sets up (listeners, sockets), prints `ready` on stdout, waits for a line on
//! stdin (the tracer is attached meanwhile), runs for `--secs`, prints one JSON line
//! (`{"ops":N,"secs":S,"errors":E}`) and exits.
use std::{
    io::{BufRead as _, Write as _},
    net::{TcpListener, TcpStream},
    os::unix::net::{UnixListener, UnixStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

/// What the worker does in a loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Loopback TCP connect + accept + close (server side closes first: no client `TIME_WAIT`).
    TcpLoop,
    /// Unix-socket connect + accept + close.
    UnixLoop,
    /// `getppid` via `syscall(2)`: a process that never connects.
    NullSyscall,
    /// Non-blocking unix connects to a missing path (ENOENT), from `--threads` threads.
    Storm,
}

/// Arguments of `xtask bench-worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[arg(value_enum)]
    pub kind: Kind,
    /// How long to run once told to go.
    #[arg(long)]
    pub secs: f64,
    /// Threads (storm only).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// What one thread did.
#[derive(Default, Clone, Copy)]
struct Count {
    ops: u64,
    errors: u64,
}

/// Runs the worker.
pub fn run(args: &WorkerArgs) -> anyhow::Result<()> {
    let secs = Duration::try_from_secs_f64(args.secs).context("--secs")?;
    let mut stdout = std::io::stdout().lock();
    let setup = Setup::new(args.kind)?;
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("waiting for the go line")?;
    if line.trim() != "go" {
        bail!("expected `go` on stdin, got {line:?}");
    }
    let t0 = Instant::now();
    let count = match args.kind {
        Kind::TcpLoop => tcp_loop(&setup, secs)?,
        Kind::UnixLoop => unix_loop(&setup, secs)?,
        Kind::NullSyscall => null_syscall(secs),
        Kind::Storm => storm(&setup, secs, args.threads.max(1))?,
    };
    let elapsed = t0.elapsed().as_secs_f64();
    writeln!(
        stdout,
        "{}",
        serde_json::json!({"ops": count.ops, "secs": elapsed, "errors": count.errors})
    )?;
    stdout.flush()?;
    Ok(())
}

/// What a workload needs before it starts: a listener or a target path.
struct Setup {
    tcp: Option<TcpListener>,
    unix: Option<(UnixListener, PathBuf)>,
    /// A unix path that does not exist (storm).
    missing: PathBuf,
    dir: PathBuf,
}

impl Setup {
    fn new(kind: Kind) -> anyhow::Result<Self> {
        let dir = PathBuf::from(format!("/tmp/gwbench-worker-{}", std::process::id()));
        let mut s = Self {
            tcp: None,
            unix: None,
            missing: dir.join("missing/upstream.sock"),
            dir,
        };
        match kind {
            Kind::TcpLoop => {
                s.tcp =
                    Some(TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?);
            }
            Kind::UnixLoop => {
                std::fs::create_dir_all(&s.dir)
                    .with_context(|| format!("creating {}", s.dir.display()))?;
                let path = s.dir.join("loop.sock");
                let l = UnixListener::bind(&path)
                    .with_context(|| format!("binding {}", path.display()))?;
                s.unix = Some((l, path));
            }
            Kind::NullSyscall | Kind::Storm => {}
        }
        Ok(s)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `step` until `secs` passed, checking the clock every `batch` steps.
fn timed(
    secs: Duration,
    batch: u32,
    mut step: impl FnMut(&mut Count) -> anyhow::Result<()>,
) -> anyhow::Result<Count> {
    let t0 = Instant::now();
    let mut c = Count::default();
    while t0.elapsed() < secs {
        for _ in 0..batch {
            step(&mut c)?;
        }
    }
    Ok(c)
}

fn tcp_loop(s: &Setup, secs: Duration) -> anyhow::Result<Count> {
    let listener = s.tcp.as_ref().context("no listener")?;
    let addr = listener.local_addr()?;
    timed(secs, 16, |c| {
        let client = TcpStream::connect(addr).context("connect")?;
        let (server, _) = listener.accept().context("accept")?;
        drop(server);
        drop(client);
        c.ops += 1;
        Ok(())
    })
}

fn unix_loop(s: &Setup, secs: Duration) -> anyhow::Result<Count> {
    let (listener, path) = s.unix.as_ref().context("no listener")?;
    timed(secs, 16, |c| {
        let client = UnixStream::connect(path).context("connect")?;
        let (server, _) = listener.accept().context("accept")?;
        drop(server);
        drop(client);
        c.ops += 1;
        Ok(())
    })
}

fn null_syscall(secs: Duration) -> Count {
    let t0 = Instant::now();
    let mut c = Count::default();
    while t0.elapsed() < secs {
        for _ in 0..4096 {
            // SAFETY: getppid takes no arguments and cannot fail.
            let r = unsafe { libc::syscall(libc::SYS_getppid) };
            std::hint::black_box(r);
        }
        c.ops += 4096;
    }
    c
}

/// A `sockaddr_un` for `path`, and its length.
fn sockaddr_un(path: &std::path::Path) -> anyhow::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt as _;
    // SAFETY: sockaddr_un is plain integers; all-zero is valid.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX)?;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= sa.sun_path.len() {
        bail!("{} is too long for a unix socket path", path.display());
    }
    for (d, s) in sa.sun_path.iter_mut().zip(bytes) {
        *d = libc::c_char::from_ne_bytes([*s]);
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    Ok((sa, libc::socklen_t::try_from(len)?))
}

fn storm(s: &Setup, secs: Duration, threads: usize) -> anyhow::Result<Count> {
    let (sa, len) = sockaddr_un(&s.missing)?;
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || -> anyhow::Result<Count> {
                    // SAFETY: plain socket(2) call.
                    let fd = unsafe {
                        libc::socket(
                            libc::AF_UNIX,
                            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                            0,
                        )
                    };
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error()).context("socket(AF_UNIX)");
                    }
                    let r = timed(secs, 256, |c| {
                        // SAFETY: `sa` is a valid sockaddr_un of `len` bytes; `fd` is our socket.
                        let r = unsafe { libc::connect(fd, (&raw const sa).cast(), len) };
                        c.ops += 1;
                        if r == 0
                            || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
                        {
                            c.errors += 1;
                        }
                        Ok(())
                    });
                    // SAFETY: closing the socket this thread opened.
                    unsafe { libc::close(fd) };
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("storm thread panicked"))?
            })
            .collect::<Vec<_>>()
    });
    let mut total = Count::default();
    for r in results {
        let c = r?;
        total.ops += c.ops;
        total.errors += c.errors;
    }
    Ok(total)
}
