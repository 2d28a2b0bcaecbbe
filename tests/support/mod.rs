//! Helpers for the root capture tests: a capture session that waits for the event a provocation
//! must produce, children that are killed and reaped even when a test fails, and guards that remove
//! the network namespaces and memory cgroups the tests create.
use std::{
    fmt::Write as _,
    fs::File,
    io::{BufRead as _, BufReader, Read as _},
    net::{IpAddr, TcpListener},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::PathBuf,
    process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use gwtrace::{
    capture::{Capture, Hooks},
    event::{Body, Event},
};

/// Debian's interpreter: no pyenv shim in between, so the spawned pid is the python process.
pub const PYTHON: &str = "/usr/bin/python3";
/// How often the session drains the ring buffer while waiting.
pub const POLL: Duration = Duration::from_millis(20);
/// How long the session waits for an expected event by default.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// How long a provocation may run before it is killed and the test fails.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

/// A name part unique within this test process: `<test pid>-<counter>`.
pub fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running capture and every event drained from it so far.
pub struct Session {
    cap: Capture,
    seen: Vec<Event>,
}

impl Session {
    /// Starts a capture with every hook. Without root, prints why the test is skipped and returns
    /// `None` (every test of this file then passes vacuously).
    pub fn start(test: &str) -> Option<Self> {
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!(
                "SKIPPED {test}: the capture tests load eBPF programs and provoke real failures; \
                 they need root (run `sudo -E cargo test -p probe-user --test capture`)"
            );
            return None;
        }
        let cap =
            Capture::start(Hooks::Full).unwrap_or_else(|e| panic!("starting the capture: {e}"));
        Some(Self {
            cap,
            seen: Vec::new(),
        })
    }

    /// Moves every waiting event into `seen`.
    fn drain(&mut self) {
        let seen = &mut self.seen;
        self.cap.drain(|e| seen.push(e));
    }

    /// Runs a provocation that returns the pid whose event is expected (and anything else the
    /// test needs), then waits for an event matching `pred(pid, event)` ([`Session::expect`]).
    /// On timeout the panic shows what the provocation returned (a child's output) too.
    pub fn provoke<T: std::fmt::Debug>(
        &mut self,
        what: &str,
        provocation: impl FnOnce() -> (u32, T),
        pred: impl Fn(u32, &Event) -> bool,
    ) -> (u32, T, Event) {
        let (pid, out) = provocation();
        let ev = self.wait(TIMEOUT, what, &[pid], &format!("{out:?}"), |e| pred(pid, e));
        (pid, out, ev)
    }

    /// Drains every [`POLL`] until an event matching `pred` arrives, for up to [`TIMEOUT`].
    /// Panics listing the events seen from `pids` when none does.
    pub fn expect(&mut self, what: &str, pids: &[u32], pred: impl Fn(&Event) -> bool) -> Event {
        self.expect_within(TIMEOUT, what, pids, pred)
    }

    /// [`Session::expect`] with another timeout.
    pub fn expect_within(
        &mut self,
        timeout: Duration,
        what: &str,
        pids: &[u32],
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        self.wait(timeout, what, pids, "", pred)
    }

    fn wait(
        &mut self,
        timeout: Duration,
        what: &str,
        pids: &[u32],
        provoked: &str,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        let deadline = Instant::now() + timeout;
        loop {
            self.drain();
            if let Some(e) = self.seen.iter().find(|e| pred(e)) {
                return e.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no event for {what} within {timeout:?}; events seen involving pids {pids:?}:\n{}\n\
                 kernel counters: {:?}\nprovocation: {provoked}",
                self.describe(pids),
                self.cap.counters().counters,
            );
            std::thread::sleep(POLL);
        }
    }

    /// Keeps draining for `d`: lets late or duplicate events arrive before a negative assertion.
    pub fn settle(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            self.drain();
            std::thread::sleep(POLL);
        }
        self.drain();
    }

    /// Every event drained so far that involves `pid`: done by it, or aimed at it (signal target,
    /// OOM victim).
    pub fn involving(&self, pid: u32) -> Vec<&Event> {
        self.seen.iter().filter(|e| involves(e, pid)).collect()
    }

    /// One JSON line per event involving any of `pids`.
    pub fn describe(&self, pids: &[u32]) -> String {
        let mut out = String::new();
        for e in self
            .seen
            .iter()
            .filter(|e| pids.iter().any(|&p| involves(e, p)))
        {
            let _ = writeln!(out, "  {}", serde_json::to_string(e).unwrap_or_default());
        }
        if out.is_empty() {
            out.push_str("  (none)\n");
        }
        out
    }

    /// The capture's kernel counters, indexed by `probe_common::CNT_*`.
    pub fn counters(&self) -> Vec<u64> {
        self.cap.counters().counters
    }
}

fn involves(e: &Event, pid: u32) -> bool {
    e.pid == pid
        || match &e.body {
            Body::Signal { target_pid, .. } => *target_pid == pid,
            Body::OomKill { victim_pid, .. } => *victim_pid == pid,
            _ => false,
        }
}

/// What a finished child left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A child process of the test: killed (SIGKILL, by its own pid, only while not yet reaped) and
/// reaped when dropped, so a failing test leaves nothing running.
pub struct Proc {
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
    stderr: Option<ChildStderr>,
    reaped: bool,
}

impl Proc {
    /// Spawns `cmd` with stdin from /dev/null and stdout/stderr captured.
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let stdout = child.stdout.take().map(BufReader::new);
        let stderr = child.stderr.take();
        Self {
            child,
            stdout,
            stderr,
            reaped: false,
        }
    }

    /// Spawns `cmd` and waits for it to end ([`Proc::finish`]); returns its pid too.
    pub fn run(cmd: &mut Command) -> (u32, Finished) {
        let mut p = Self::spawn(cmd);
        let out = p.finish();
        (p.pid(), out)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the child writes on stdout (without the newline).
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        if let Some(r) = self.stdout.as_mut() {
            r.read_line(&mut line)
                .unwrap_or_else(|e| panic!("reading the child's stdout: {e}"));
        }
        line.trim_end().to_owned()
    }

    /// Sends `sig` to the child, which must not have been reaped yet (its pid is still ours).
    pub fn signal(&mut self, sig: i32) {
        assert!(!self.reaped, "signalling a reaped child");
        let pid = i32::try_from(self.pid()).expect("pid fits i32");
        // SAFETY: plain syscall on our own, unreaped child.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits for the child to end (killing it after [`CHILD_TIMEOUT`]) and collects its output.
    pub fn finish(&mut self) -> Finished {
        let deadline = Instant::now() + CHILD_TIMEOUT;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    self.signal(libc::SIGKILL);
                    let _ = self.child.wait();
                    self.reaped = true;
                    panic!(
                        "child {} still running after {CHILD_TIMEOUT:?}: killed",
                        self.pid()
                    );
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("waiting for child {}: {e}", self.pid()),
            }
        };
        self.reaped = true;
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut r) = self.stdout.take() {
            let _ = r.read_to_string(&mut stdout);
        }
        if let Some(mut r) = self.stderr.take() {
            let _ = r.read_to_string(&mut stderr);
        }
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `python3 -I -c script args...`.
pub fn python(script: &str, args: &[&str]) -> Command {
    let mut c = Command::new(PYTHON);
    c.arg("-I").arg("-c").arg(script).args(args);
    c
}

/// A TCP port nothing listens on: bound to `ip` then released (the kernel hands out ephemeral
/// ports round-robin, so it is not reused at once).
pub fn free_port(ip: IpAddr) -> std::io::Result<u16> {
    let l = TcpListener::bind((ip, 0))?;
    Ok(l.local_addr()?.port())
}

/// Runs a command to completion, panicking with its output unless it succeeds.
pub fn sh(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace of our own (`ip netns add gwt-...`), deleted when dropped.
pub struct Netns {
    pub name: String,
    handle: Option<File>,
}

impl Netns {
    /// Creates the namespace; only its `lo` exists, down.
    pub fn create() -> Self {
        let name = unique("gwt");
        sh(Command::new("ip").args(["netns", "add", &name]));
        let mut ns = Self { name, handle: None };
        let path = format!("/run/netns/{}", ns.name);
        ns.handle = Some(File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}")));
        ns
    }

    /// Brings the namespace's loopback up.
    pub fn lo_up(&self) {
        sh(Command::new("ip").args(["-n", &self.name, "link", "set", "lo", "up"]));
    }

    /// Makes `cmd` run inside the namespace (`setns` between fork and exec: same pid).
    pub fn enter_on_exec<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        let fd = self
            .handle
            .as_ref()
            .map(File::as_raw_fd)
            .expect("namespace handle");
        // SAFETY: the closure runs in the forked child before exec and only makes the
        // async-signal-safe setns syscall on an fd that stays open while `self` lives (the spawn
        // happens while the caller borrows `self`).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.handle = None;
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

/// A cgroup v1 memory cgroup of our own, removed when dropped (after its processes are gone).
pub struct MemCgroup {
    pub path: PathBuf,
}

impl MemCgroup {
    /// Where a memory cgroup can be made here, whatever the layout: the v1 memory controller's
    /// root (hybrid and legacy hosts), else the cgroup2 root when it hands the memory
    /// controller to its children (v2-only hosts). `None` when neither accounts memory.
    pub fn root() -> Option<(PathBuf, bool)> {
        let mounts = gwtrace::host::cgroup::Mounts::system();
        if let Some(v1) = &mounts.v1_memory {
            return Some((v1.clone(), false));
        }
        let v2 = mounts.v2.as_ref()?;
        std::fs::read_to_string(v2.join("cgroup.subtree_control"))
            .ok()?
            .split_whitespace()
            .any(|c| c == "memory")
            .then(|| (v2.clone(), true))
    }

    /// Creates `gwtest-...` with `limit` bytes of memory and no swap to absorb it, in the
    /// hierarchy [`MemCgroup::root`] finds.
    pub fn create(limit: u64) -> Self {
        let (root, v2) =
            Self::root().expect("no memory cgroup hierarchy (check MemCgroup::root first)");
        let path = root.join(unique("gwtest"));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        let cg = Self { path };
        let limit = limit.to_string();
        let (file, swap, swap_value) = if v2 {
            ("memory.max", "memory.swap.max", "0")
        } else {
            // Without swap accounting the memsw file does not exist.
            (
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                limit.as_str(),
            )
        };
        let file = cg.path.join(file);
        std::fs::write(&file, &limit).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        let _ = std::fs::write(cg.path.join(swap), swap_value);
        cg
    }

    fn procs(&self) -> String {
        std::fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default()
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        // The processes in it are our children, killed and reaped before this guard drops; a
        // dying task can linger a moment, and rmdir fails with EBUSY until it is gone.
        for _ in 0..200 {
            if self.procs().trim().is_empty() && std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "could not remove {} (still has: {:?})",
            self.path.display(),
            self.procs()
        );
    }
}
