//! Helpers every end-to-end test shares: who runs the tests (root or not), where the built
//! `gwtrace` binary is, free ports, unique names, children that are killed and reaped even when a
//! test fails, and guards that remove the network namespaces and memory cgroups tests create.
//!
//! Tests that need root are `#[ignore = "needs root: run by cargo xtask test"]`: a plain
//! `cargo test` lists them as ignored with that reason, `cargo xtask test` runs them with
//! `--include-ignored`, and each calls [`require_root`] first, so one run without root fails
//! loudly instead of passing without testing anything.
//!
//! Every helper here fails the calling test by panicking, with what went wrong.
#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers: a panic is how they fail the test, said once above"
)]
use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read as _},
    net::{IpAddr, Ipv4Addr, TcpListener},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::PathBuf,
    process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// Debian's interpreter: no pyenv shim in between, so the spawned pid is the python process.
pub const PYTHON: &str = "/usr/bin/python3";
/// How long a provocation may run before it is killed and the test fails.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

/// The path of the `gwtrace` binary cargo built for this test target (`CARGO_BIN_EXE_gwtrace`,
/// read where the macro is used: only probe-user's integration tests have it).
#[macro_export]
macro_rules! gwtrace_bin {
    () => {
        ::std::path::PathBuf::from(env!("CARGO_BIN_EXE_gwtrace"))
    };
}

/// Whether this process runs as root (effective uid 0).
#[must_use]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails the calling test unless it runs as root: tests marked `#[ignore = "needs root: ..."]`
/// call this first, so `--include-ignored` without root fails loudly rather than passing.
///
/// # Panics
/// When not root.
pub fn require_root(what: &str) {
    assert!(
        is_root(),
        "{what} needs root (it loads eBPF programs or drives real nginx, cgroups and network \
         namespaces): run it with `cargo xtask test`, or as root with `--include-ignored`"
    );
}

/// A name part unique within this test process: `<tag>-<test pid>-<counter>`.
pub fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A TCP port nothing listens on, on `ip`: bound then released (the kernel hands out ephemeral
/// ports round-robin, so it is not reused at once).
pub fn free_port_on(ip: IpAddr) -> std::io::Result<u16> {
    let l = TcpListener::bind((ip, 0))?;
    Ok(l.local_addr()?.port())
}

/// A TCP port nothing listens on, on 127.0.0.1 ([`free_port_on`]).
pub fn free_port() -> std::io::Result<u16> {
    free_port_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
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

    #[must_use]
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
#[must_use]
pub fn python(script: &str, args: &[&str]) -> Command {
    let mut c = Command::new(PYTHON);
    c.arg("-I").arg("-c").arg(script).args(args);
    c
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

/// A network namespace of our own (`ip netns add gwt-...`), deleted when dropped (declare it
/// before a lab stack so the stack's processes are killed first).
pub struct Netns {
    pub name: String,
    handle: Option<File>,
}

impl Netns {
    /// Creates the namespace; only its `lo` exists, down.
    #[must_use]
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

    /// `ip netns exec NS program`: the program execs in place (same pid, same process group).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
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

/// A memory cgroup of our own (v1 or v2), removed when dropped (after its processes are gone).
pub struct MemCgroup {
    pub path: PathBuf,
}

impl MemCgroup {
    /// Creates `gwtest-...` under `root` with `limit` bytes of memory and no swap to absorb it;
    /// `v2` says whether `root` is a cgroup2 hierarchy (`memory.max`) or the v1 memory
    /// controller (`memory.limit_in_bytes`). The caller finds the root (the lab crate does not
    /// read the host's cgroup layout itself: gwtrace's host module does).
    #[must_use]
    pub fn create(root: &std::path::Path, v2: bool, limit: u64) -> Self {
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
