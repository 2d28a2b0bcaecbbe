//! The scenario lab: every 502 cause from the seeds built for real (nginx in front of gunicorn or
//! uvicorn, with a real fault), driven with a bounded HTTP client, and scored against nginx's own
//! error.log and status codes. Shared by `cargo xtask lab` / `cargo xtask demo` and the test suite
//! (`tests/diagnose.rs`), so there is one implementation of each scenario.
//!
//! Everything a scenario starts runs in its own process group and is killed by that group's id on
//! drop, including on failure; temp dirs and cgroups are removed.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use std::fmt::Write as _;

use anyhow::{Context as _, bail};

/// The apps, embedded so a scenario can write them where its app user can read them.
const WSGI_APP: &str = include_str!("apps/app.py");
const ASGI_APP: &str = include_str!("apps/asgi.py");
/// A systemd stand-in (fork, `(unit)` name, chdir, exec; exit 200/203 like systemd's child).
const SUPERVISE: &str = include_str!("apps/supervise.py");

/// One scenario of the lab.
pub struct Scenario {
    pub name: &'static str,
    /// The cause gwtrace must name (and no other); `None` = no verdict at all.
    pub expect: Option<&'static str>,
    /// What nginx must write to its error.log (ground truth), or "" for nothing.
    pub nginx_log: &'static str,
    /// The status nginx must answer with at least once.
    pub status: u16,
    pub about: &'static str,
    /// How long gwtrace traces.
    pub secs: u64,
    build: fn(&mut Stack) -> anyhow::Result<()>,
    /// Fault injected after gwtrace is ready, before the requests.
    fault: Option<fn(&mut Stack) -> anyhow::Result<()>>,
    drive: fn(&Stack) -> Vec<Response>,
}

/// One HTTP answer (or none) and when it came.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: Option<u16>,
    pub at: Instant,
}

/// What a scenario run produced.
#[derive(Debug)]
pub struct LabResult {
    pub name: String,
    pub expect: Option<String>,
    pub nginx_line: String,
    pub statuses: Vec<Option<u16>>,
    /// Causes gwtrace named (deduplicated, in order of appearance).
    pub causes: Vec<String>,
    /// Verdict JSON objects (last version of each).
    pub verdicts: Vec<serde_json::Value>,
    pub secs_to_verdict: Option<f64>,
    pub ok: bool,
    pub why: String,
}

/// A running stack: a temp dir, the processes started in it, the nginx in front.
pub struct Stack {
    pub name: String,
    pub dir: PathBuf,
    /// nginx's listen port.
    pub port: u16,
    /// `proxy_pass` target, as gwtrace prints it: `unix:/path` or `127.0.0.1:PORT`.
    pub upstream: String,
    /// Extra nginx `location` directives.
    pub nginx_extra: String,
    /// Run nginx in its own mount namespace with an empty tmpfs over this directory (systemd
    /// `PrivateTmp=`, a container without the app's volume).
    pub nginx_private_dir: Option<PathBuf>,
    children: Vec<Child>,
    pub nginx_pid: Option<u32>,
    cgroup: Option<PathBuf>,
    netns: Vec<String>,
    /// Programs started inside a cgroup: (program name, cgroup directory).
    placements: Vec<(String, PathBuf)>,
    /// cgroup directories this stack created, removed deepest first.
    made_cgroups: Vec<PathBuf>,
    /// Where gwtrace keeps the raw events of the run (`--record`), if anywhere.
    pub record: Option<PathBuf>,
}

/// gunicorn's flags as the lab runs it: one worker, as the unprivileged app user.
pub fn gunicorn_args(bind: &str) -> [&str; 8] {
    [
        "--bind",
        bind,
        "--workers",
        "1",
        "--user",
        "gwapp",
        "--group",
        "gwapp",
    ]
}

/// A TCP port nothing listens on right now (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(18_080, |a| a.port())
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out waiting for {what}")
}

impl Stack {
    /// A fresh stack directory (world-traversable, as /run dirs are).
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let dir = PathBuf::from(format!("/tmp/gwlab-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tmp")).context("creating the lab dir")?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o777))?;
        std::fs::write(dir.join("app.py"), WSGI_APP)?;
        std::fs::write(dir.join("asgi.py"), ASGI_APP)?;
        std::fs::write(dir.join("supervise.py"), SUPERVISE)?;
        Ok(Self {
            name: name.to_owned(),
            dir,
            port: free_port(),
            upstream: String::new(),
            nginx_extra: String::new(),
            nginx_private_dir: None,
            children: Vec::new(),
            nginx_pid: None,
            cgroup: None,
            netns: Vec::new(),
            placements: Vec::new(),
            made_cgroups: Vec::new(),
            record: None,
        })
    }

    /// Path inside the stack dir.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    /// Creates a cgroup (path relative to the cgroup v2 root, else systemd's v1 hierarchy) that
    /// the stack removes when it ends.
    pub fn make_cgroup(&mut self, rel: &str) -> anyhow::Result<PathBuf> {
        let mounts = std::fs::read_to_string("/proc/self/mounts")?;
        let root = mounts
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
            })
            .or_else(|| {
                mounts.lines().find_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.get(2) == Some(&"cgroup")
                        && f.get(3).is_some_and(|o| o.contains("name=systemd")))
                    .then(|| PathBuf::from(f[1]))
                })
            })
            .context("no cgroup2 mount and no systemd cgroup v1 hierarchy")?;
        let mut dir = root;
        for comp in rel.split('/').filter(|c| !c.is_empty()) {
            dir.push(comp);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .with_context(|| format!("creating cgroup {}", dir.display()))?;
                self.made_cgroups.push(dir.clone());
            }
        }
        Ok(dir)
    }

    /// Starts every later `program` inside cgroup `dir` (the shell moves itself, then execs it:
    /// the pid and its children are in the cgroup from the first instruction).
    pub fn place(&mut self, program: &str, dir: PathBuf) {
        self.placements.push((program.to_owned(), dir));
    }

    /// Starts a command in its own process group (so the whole tree can be ended by pgid).
    pub fn spawn(&mut self, cmd: &mut Command) -> anyhow::Result<u32> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        if let Some((_, dir)) = self.placements.iter().find(|(p, _)| *p == program) {
            let mut w = Command::new("sh");
            w.arg("-c")
                .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
                .arg(dir)
                .arg(&program)
                .args(cmd.get_args());
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => w.env(k, v),
                    None => w.env_remove(k),
                };
            }
            return self.spawn_direct(&mut w);
        }
        self.spawn_direct(cmd)
    }

    fn spawn_direct(&mut self, cmd: &mut Command) -> anyhow::Result<u32> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("app.log"))?;
        let child = cmd
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// gunicorn serving app.py (or `module`), bound to `bind`, with extra flags.
    pub fn gunicorn(
        &mut self,
        bind: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<u32> {
        let mut cmd = Command::new("gunicorn");
        cmd.args(gunicorn_args(bind))
            .args(extra)
            .envs(env.iter().copied());
        if !extra.iter().any(|a| a.contains(':')) {
            cmd.arg("app:app");
        }
        self.spawn(&mut cmd)
    }

    /// Waits until a unix socket path or TCP port accepts connections.
    pub fn wait_listening(&self, target: &str) -> anyhow::Result<()> {
        wait_for(
            &format!("{target} to listen (see {}/app.log)", self.dir.display()),
            Duration::from_secs(15),
            || {
                target.strip_prefix("unix:").map_or_else(
                    || TcpStream::connect(target).is_ok(),
                    |p| std::os::unix::net::UnixStream::connect(p).is_ok(),
                )
            },
        )
    }

    /// Writes nginx.conf and starts nginx (master root, workers www-data) in front of `upstream`.
    pub fn start_nginx(&mut self) -> anyhow::Result<()> {
        let d = self.dir.display();
        let pass = self.upstream.strip_prefix("unix:").map_or_else(
            || format!("http://{}", self.upstream),
            |p| format!("http://unix:{p}:"),
        );
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser www-data;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log error;\nevents {{ worker_connections 512; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
               fastcgi_temp_path {d}/tmp/fcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass {pass};\n      {extra}\n    }}\n  }}\n}}\n",
            port = self.port,
            extra = self.nginx_extra,
        );
        std::fs::write(self.path("nginx.conf"), conf)?;
        let conf_path = self.path("nginx.conf");
        let mut cmd = if let Some(private) = &self.nginx_private_dir {
            // unshare execs (no fork), then sh execs nginx: the pid stays nginx's master.
            let mut c = in_mount_namespace(private);
            c.arg(format!(
                "exec nginx -c {} -e {}",
                conf_path.display(),
                self.path("error.log").display()
            ));
            c
        } else {
            let mut c = Command::new("nginx");
            c.arg("-c")
                .arg(&conf_path)
                .arg("-e")
                .arg(self.path("error.log"));
            c
        };
        let pid = self.spawn(&mut cmd)?;
        self.nginx_pid = Some(pid);
        let port = self.port;
        wait_for("nginx to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
    }

    /// Sends a signal to every process of the groups this stack started.
    pub fn kill_all(&mut self, sig: i32) {
        for c in &self.children {
            let pgid = i32::try_from(c.id()).unwrap_or(0);
            if pgid > 0 {
                // SAFETY: kill(2) on a process group this stack created; no memory involved.
                unsafe { libc::kill(-pgid, sig) };
            }
        }
    }

    /// Sends a signal to the process group started as `pid` (one of ours).
    pub fn kill_group(&self, pid: u32, sig: i32) {
        if self.children.iter().any(|c| c.id() == pid) {
            // SAFETY: as above.
            unsafe { libc::kill(-i32::try_from(pid).unwrap_or(0), sig) };
        }
    }

    /// A memory cgroup (v1) with a limit, for the OOM scenario.
    pub fn memcg(&mut self, limit_mb: u64) -> anyhow::Result<PathBuf> {
        let cg = PathBuf::from(format!(
            "/sys/fs/cgroup/memory/gwlab-{}-{}",
            self.name,
            std::process::id()
        ));
        std::fs::create_dir_all(&cg)
            .context("creating a memory cgroup (cgroup v1 memory controller)")?;
        std::fs::write(
            cg.join("memory.limit_in_bytes"),
            format!("{}", limit_mb << 20),
        )?;
        let _ = std::fs::write(
            cg.join("memory.memsw.limit_in_bytes"),
            format!("{}", limit_mb << 20),
        );
        self.cgroup = Some(cg.clone());
        Ok(cg)
    }

    /// nginx's error.log lines about upstreams.
    pub fn nginx_errors(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("error.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("upstream") || l.contains("connect()"))
            .map(str::to_owned)
            .collect()
    }

    /// One GET through nginx.
    pub fn get(&self, path: &str, timeout: Duration) -> Response {
        Response {
            status: http_get(self.port, path, timeout),
            at: Instant::now(),
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.kill_all(libc::SIGKILL);
        for c in &mut self.children {
            let _ = c.wait();
        }
        if let Some(cg) = &self.cgroup {
            for _ in 0..50 {
                if std::fs::remove_dir(cg).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for cg in self.made_cgroups.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(cg).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A bounded HTTP/1.0 GET; the status code, or None when the connection failed or timed out.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Option<u16> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: lab\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let head = String::from_utf8_lossy(&buf[..got]);
    head.split_whitespace().nth(1)?.parse().ok()
}

fn sequential(
    path: &'static str,
    n: usize,
    gap_ms: u64,
    timeout: Duration,
) -> impl Fn(&Stack) -> Vec<Response> {
    move |s| {
        (0..n)
            .map(|_| {
                let r = s.get(path, timeout);
                std::thread::sleep(Duration::from_millis(gap_ms));
                r
            })
            .collect()
    }
}

fn five_gets(s: &Stack) -> Vec<Response> {
    sequential("/", 5, 200, Duration::from_secs(5))(s)
}

fn slow_get(s: &Stack) -> Vec<Response> {
    vec![s.get("/slow", Duration::from_secs(20))]
}

fn oom_get(s: &Stack) -> Vec<Response> {
    vec![s.get("/oom", Duration::from_secs(20))]
}

fn crash_get(s: &Stack) -> Vec<Response> {
    vec![s.get("/crash", Duration::from_secs(10))]
}

fn burst(s: &Stack) -> Vec<Response> {
    let port = s.port;
    let out = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..24)
        .map(|_| {
            let out = Arc::clone(&out);
            std::thread::spawn(move || {
                let r = Response {
                    status: http_get(port, "/slow", Duration::from_secs(20)),
                    at: Instant::now(),
                };
                if let Ok(mut o) = out.lock() {
                    o.push(r);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Arc::try_unwrap(out)
        .map(|m| m.into_inner().unwrap_or_default())
        .unwrap_or_default()
}

fn healthy_with_noise(s: &Stack) -> Vec<Response> {
    // Unrelated processes failing connects (not proxies): must not become a verdict.
    let noise = format!(
        "import socket,time\nfor i in range(20):\n  \
         s=socket.socket(socket.AF_UNIX)\n  \n  try: s.connect('{}/nope.sock')\n  except OSError: pass\n  \
         t=socket.socket()\n  \n  try: t.connect(('127.0.0.1',{}))\n  except OSError: pass\n  time.sleep(0.05)\n",
        s.dir.display(),
        free_port()
    );
    let mut child = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(noise)
        .spawn()
        .ok();
    let r = sequential("/", 20, 50, Duration::from_secs(5))(s);
    if let Some(c) = child.as_mut() {
        let _ = c.wait();
    }
    r
}

fn unix_sock(s: &mut Stack) -> String {
    format!("unix:{}", s.path("app.sock").display())
}

/// `unshare -m --propagation private sh -c 'mount -t tmpfs tmpfs DIR && chmod 755 DIR && ...'`:
/// the command appended as the last argument runs in a new mount namespace where `dir` is an
/// empty tmpfs of its own (what Docker volumes or systemd `PrivateTmp=` do), invisible outside.
fn in_mount_namespace(dir: &Path) -> Command {
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c"]);
    let prefix = format!(
        "mount -t tmpfs tmpfs {d} && chmod 755 {d} && ",
        d = dir.display()
    );
    // `sh -c PREFIX` + the caller's command: joined by a wrapper that takes the rest as $1.
    c.arg(format!("{prefix}eval \"$1\"")).arg("sh");
    c
}

/// Waits until /proc/net/unix lists a listening socket bound to `path` (in any mount namespace:
/// the path may not exist in ours).
fn wait_unix_listed(path: &Path) -> anyhow::Result<()> {
    let want = path.display().to_string();
    wait_for(
        &format!("a listener on {want} in /proc/net/unix"),
        Duration::from_secs(15),
        || {
            std::fs::read_to_string("/proc/net/unix").is_ok_and(|t| {
                t.lines().skip(1).any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.len() >= 8
                        && u32::from_str_radix(cols[3], 16).is_ok_and(|f| f & 0x10000 != 0)
                        && cols[7..].join(" ") == want
                })
            })
        },
    )
}

/// Steady requests (one every 100 ms for 7 s); after 1.5 s the app is told to restart
/// (the `restart` file its supervisor script waits for).
fn restart_drive(s: &Stack) -> Vec<Response> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut triggered = false;
    while t0.elapsed() < Duration::from_secs(7) {
        if !triggered && t0.elapsed() >= Duration::from_millis(1500) {
            let _ = std::fs::write(s.path("restart"), b"now\n");
            triggered = true;
        }
        out.push(s.get("/", Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(100));
    }
    out
}

/// Every scenario, in the issue's order.
#[expect(
    clippy::too_many_lines,
    reason = "one table of scenarios reads better than many functions"
)]
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "socket-missing",
            expect: Some("socket-missing"),
            nginx_log: "(2: No such file or directory)",
            status: 502,
            about: "gunicorn stopped, unix socket gone",
            secs: 5,
            build: |s| {
                s.upstream = unix_sock(s);
                Ok(())
            },
            fault: None,
            drive: five_gets,
        },
        Scenario {
            name: "tcp-refused",
            expect: Some("upstream-not-listening"),
            nginx_log: "(111: Connection refused)",
            status: 502,
            about: "gunicorn stopped, TCP upstream",
            secs: 5,
            build: |s| {
                s.upstream = format!("127.0.0.1:{}", free_port());
                Ok(())
            },
            fault: None,
            drive: five_gets,
        },
        Scenario {
            name: "stale-socket",
            expect: Some("stale-socket"),
            nginx_log: "(111: Connection refused)",
            status: 502,
            about: "gunicorn killed -9, socket file left behind",
            secs: 6,
            build: |s| {
                s.upstream = unix_sock(s);
                let bind = s.upstream.clone();
                s.gunicorn(&bind, &[], &[])?;
                s.wait_listening(&bind)
            },
            fault: Some(|s| {
                if let Some(pid) = s.app_pid() {
                    s.kill_group(pid, libc::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(300));
                Ok(())
            }),
            drive: five_gets,
        },
        Scenario {
            name: "wrong-target",
            expect: Some("wrong-target"),
            nginx_log: "(2: No such file or directory)",
            status: 502,
            about: "gunicorn binds another path than nginx's proxy_pass",
            secs: 5,
            build: |s| {
                s.upstream = unix_sock(s);
                std::fs::create_dir_all(s.path("gunicorn"))?;
                let real = format!("unix:{}", s.path("gunicorn/app.sock").display());
                s.gunicorn(&real, &[], &[])?;
                s.wait_listening(&real)
            },
            fault: None,
            drive: five_gets,
        },
        Scenario {
            name: "socket-permission",
            expect: Some("socket-permission"),
            nginx_log: "(13: Permission denied)",
            status: 502,
            about: "socket owned by the app user, mode 0660, nginx worker not in the group",
            secs: 5,
            build: |s| {
                std::fs::create_dir_all(s.path("run"))?;
                s.upstream = format!("unix:{}", s.path("run/app.sock").display());
                let bind = s.upstream.clone();
                // umask 0o117: the socket is srw-rw---- gwapp:gwapp.
                s.gunicorn(&bind, &["--umask", "0o117"], &[])?;
                let path = s.path("run/app.sock");
                wait_for("the app socket", Duration::from_secs(15), || path.exists())?;
                std::thread::sleep(Duration::from_millis(500));
                Ok(())
            },
            fault: None,
            drive: five_gets,
        },
        Scenario {
            name: "crash-on-boot",
            expect: Some("crash-on-boot"),
            nginx_log: "connect() to unix:",
            status: 502,
            about: "SECRET_KEY missing: gunicorn exits 3, restarted by a supervisor loop",
            secs: 6,
            build: |s| {
                s.upstream = unix_sock(s);
                let script = format!(
                    "while true; do GWLAB_REQUIRE_SECRET=1 gunicorn --bind {} --workers 1 --user gwapp --group gwapp app:app; sleep 0.5; done",
                    s.upstream
                );
                s.spawn(Command::new("sh").arg("-c").arg(script))?;
                Ok(())
            },
            fault: None,
            drive: |s| sequential("/", 8, 400, Duration::from_secs(5))(s),
        },
        Scenario {
            name: "bad-release",
            expect: Some("crash-on-boot"),
            nginx_log: "connect() to unix:",
            status: 502,
            about: "import error at app load: gunicorn exits 4, restarted by a supervisor loop",
            secs: 6,
            build: |s| {
                s.upstream = unix_sock(s);
                let script = format!(
                    "while true; do gunicorn --bind {} --workers 1 --user gwapp --group gwapp release_42:app; sleep 0.5; done",
                    s.upstream
                );
                s.spawn(Command::new("sh").arg("-c").arg(script))?;
                Ok(())
            },
            fault: None,
            drive: |s| sequential("/", 8, 400, Duration::from_secs(5))(s),
        },
        Scenario {
            name: "worker-timeout",
            expect: Some("worker-timeout"),
            nginx_log: "upstream prematurely closed connection",
            status: 502,
            about: "a view sleeps past gunicorn --timeout: WORKER TIMEOUT, SIGABRT",
            secs: 8,
            build: |s| {
                s.upstream = unix_sock(s);
                let bind = s.upstream.clone();
                s.gunicorn(&bind, &["--timeout", "2"], &[("GWLAB_SLOW", "15")])?;
                s.wait_listening(&bind)
            },
            fault: None,
            drive: slow_get,
        },
        Scenario {
            name: "worker-oom",
            expect: Some("worker-oom-killed"),
            nginx_log: "upstream prematurely closed connection",
            status: 502,
            about: "a request allocates past the worker's memory cgroup limit",
            secs: 8,
            build: |s| {
                s.upstream = unix_sock(s);
                let cg = s.memcg(200)?;
                let script = format!(
                    "echo $$ > {}/cgroup.procs && exec gunicorn --bind {} --workers 1 --user gwapp --group gwapp app:app",
                    cg.display(),
                    s.upstream
                );
                s.spawn(
                    Command::new("sh")
                        .arg("-c")
                        .arg(script)
                        .env("GWLAB_OOM_MB", "1024"),
                )?;
                let bind = s.upstream.clone();
                s.wait_listening(&bind)
            },
            fault: None,
            drive: oom_get,
        },
        Scenario {
            name: "worker-crash",
            expect: Some("worker-crashed"),
            nginx_log: "upstream prematurely closed connection",
            status: 502,
            about: "a request segfaults the worker",
            secs: 6,
            build: |s| {
                s.upstream = unix_sock(s);
                let bind = s.upstream.clone();
                s.gunicorn(&bind, &[], &[])?;
                s.wait_listening(&bind)
            },
            fault: None,
            drive: crash_get,
        },
        Scenario {
            name: "backlog-full",
            expect: Some("backlog-full"),
            nginx_log: "(11: Resource temporarily unavailable)",
            status: 502,
            about: "one slow sync worker, --backlog 1, a burst",
            secs: 8,
            build: |s| {
                s.upstream = unix_sock(s);
                let bind = s.upstream.clone();
                s.gunicorn(
                    &bind,
                    &["--backlog", "1", "--timeout", "60"],
                    &[("GWLAB_SLOW", "2")],
                )?;
                s.wait_listening(&bind)
            },
            fault: None,
            drive: burst,
        },
        Scenario {
            name: "uvicorn-socket-missing",
            expect: Some("socket-missing"),
            nginx_log: "(2: No such file or directory)",
            status: 502,
            about: "uvicorn stopped, its unix socket removed",
            secs: 5,
            build: |s| {
                s.upstream = unix_sock(s);
                let path = s.path("app.sock");
                let pid = s.spawn(
                    Command::new("/usr/bin/python3")
                        .args(["-m", "uvicorn", "--uds"])
                        .arg(&path)
                        .args(["--lifespan", "off", "asgi:app"]),
                )?;
                let bind = s.upstream.clone();
                s.wait_listening(&bind)?;
                s.kill_group(pid, libc::SIGTERM);
                std::thread::sleep(Duration::from_millis(800));
                let _ = std::fs::remove_file(&path);
                Ok(())
            },
            fault: None,
            drive: five_gets,
        },
        Scenario {
            name: "uvicorn-worker-timeout",
            expect: Some("worker-timeout"),
            nginx_log: "upstream prematurely closed connection",
            status: 502,
            about: "gunicorn with uvicorn workers: a blocking async view passes --timeout",
            secs: 9,
            build: |s| {
                s.upstream = unix_sock(s);
                let bind = s.upstream.clone();
                s.gunicorn(
                    &bind,
                    &[
                        "--timeout",
                        "2",
                        "-k",
                        "uvicorn.workers.UvicornWorker",
                        "asgi:app",
                    ],
                    &[("GWLAB_SLOW", "15")],
                )?;
                s.wait_listening(&bind)
            },
            fault: None,
            drive: slow_get,
        },
        Scenario {
            name: "read-timeout-504",
            expect: None,
            nginx_log: "upstream timed out (110: Connection timed out) while reading response header",
            status: 504,
            about: "proxy_read_timeout shorter than a slow view: a 504, not a 502 cause",
            secs: 6,
            build: |s| {
                s.upstream = unix_sock(s);
                s.nginx_extra = "proxy_read_timeout 1s;".into();
                let bind = s.upstream.clone();
                s.gunicorn(&bind, &["--timeout", "30"], &[("GWLAB_SLOW", "3")])?;
                s.wait_listening(&bind)
            },
            fault: None,
            drive: slow_get,
        },
        Scenario {
            name: "restart-window",
            expect: Some("upstream-restarting"),
            nginx_log: "connect() to unix:",
            status: 502,
            about: "non-graceful restart under steady traffic: gunicorn stopped, no socket for 1.5 s, a new one binds",
            secs: 10,
            build: |s| {
                s.upstream = unix_sock(s);
                let g = format!(
                    "gunicorn --bind {} --workers 1 --user gwapp --group gwapp app:app",
                    s.upstream
                );
                // The supervisor (systemctl restart without ExecReload=): run the app, stop it
                // when told (SIGTERM: it removes its socket), wait 1.5 s, start a new one (a new
                // process that execs gunicorn) on the same socket.
                let script = format!(
                    "{g} & pid=$!; while [ ! -e {t} ]; do sleep 0.05; done; kill -TERM $pid; wait $pid; \
                     sleep 1.5; {g}",
                    t = s.path("restart").display()
                );
                s.spawn(Command::new("sh").arg("-c").arg(script))?;
                let bind = s.upstream.clone();
                s.wait_listening(&bind)
            },
            fault: None,
            drive: restart_drive,
        },
        Scenario {
            name: "failed-execstart",
            expect: Some("crash-on-boot"),
            nginx_log: "(2: No such file or directory)",
            status: 502,
            about: "ExecStart names a virtualenv that does not exist: exec fails (ENOENT, exit 127, systemd 203/EXEC), restarted in a loop",
            secs: 6,
            build: |s| {
                s.upstream = unix_sock(s);
                let script = format!(
                    "while true; do {}/venv/bin/gunicorn --bind {} --workers 1 app:app; sleep 0.5; done",
                    s.dir.display(),
                    s.upstream
                );
                s.spawn(Command::new("sh").arg("-c").arg(script))?;
                Ok(())
            },
            fault: None,
            drive: |s| sequential("/", 8, 400, Duration::from_secs(5))(s),
        },
        Scenario {
            name: "failed-workdir",
            expect: Some("crash-on-boot"),
            nginx_log: "(2: No such file or directory)",
            status: 502,
            about: "WorkingDirectory= does not exist: systemd's child exits 200/CHDIR before exec, restarted",
            secs: 6,
            build: |s| {
                s.upstream = unix_sock(s);
                let workdir = s.path("releases/current");
                s.spawn(
                    Command::new("/usr/bin/python3")
                        .arg(s.path("supervise.py"))
                        .arg("myapp")
                        .arg(workdir)
                        .args(["/usr/bin/gunicorn", "--bind", &s.upstream, "app:app"]),
                )?;
                Ok(())
            },
            fault: None,
            drive: |s| sequential("/", 8, 400, Duration::from_secs(5))(s),
        },
        Scenario {
            name: "runtime-dir-missing",
            expect: Some("socket-missing"),
            nginx_log: "(2: No such file or directory)",
            status: 502,
            about: "after a reboot: the socket's directory under run/ is gone (no RuntimeDirectory=)",
            secs: 5,
            build: |s| {
                // <dir>/run stands for /run (a fresh tmpfs after boot): myapp/ is not there.
                std::fs::create_dir_all(s.path("run"))?;
                s.upstream = format!("unix:{}", s.path("run/myapp/app.sock").display());
                Ok(())
            },
            fault: None,
            drive: five_gets,
        },
        Scenario {
            name: "app-mount-namespace",
            expect: Some("socket-missing"),
            nginx_log: "(2: No such file or directory)",
            status: 502,
            about: "gunicorn binds its socket in its own mount namespace (a container volume): nginx cannot see it",
            secs: 5,
            build: |s| {
                let dir = s.path("sock");
                std::fs::create_dir_all(&dir)?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
                s.upstream = format!("unix:{}", s.path("sock/app.sock").display());
                let mut cmd = in_mount_namespace(&dir);
                cmd.arg(format!(
                    "exec gunicorn --bind {} --workers 1 --user gwapp --group gwapp app:app",
                    s.upstream
                ));
                s.spawn(&mut cmd)?;
                wait_unix_listed(&s.path("sock/app.sock"))
            },
            fault: None,
            drive: five_gets,
        },
        Scenario {
            name: "proxy-private-tmp",
            expect: Some("socket-missing"),
            nginx_log: "(2: No such file or directory)",
            status: 502,
            about: "nginx runs in its own mount namespace (PrivateTmp=): the app's socket directory is empty there",
            secs: 5,
            build: |s| {
                let dir = s.path("sock");
                std::fs::create_dir_all(&dir)?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
                s.upstream = format!("unix:{}", s.path("sock/app.sock").display());
                let bind = s.upstream.clone();
                s.gunicorn(&bind, &[], &[])?;
                s.wait_listening(&bind)?;
                s.nginx_private_dir = Some(dir);
                Ok(())
            },
            fault: None,
            drive: five_gets,
        },
        Scenario {
            name: "healthy-with-noise",
            expect: None,
            nginx_log: "",
            status: 200,
            about: "healthy traffic while unrelated processes fail connects",
            secs: 5,
            build: |s| {
                let port = free_port();
                s.upstream = format!("127.0.0.1:{port}");
                let bind = s.upstream.clone();
                s.gunicorn(&bind, &[], &[])?;
                s.wait_listening(&bind)
            },
            fault: None,
            drive: healthy_with_noise,
        },
    ]
}

impl Stack {
    /// The first non-nginx process this stack started.
    fn app_pid(&self) -> Option<u32> {
        self.children
            .iter()
            .map(Child::id)
            .find(|&p| Some(p) != self.nginx_pid)
    }
}

/// gwtrace's stdout lines, timestamped as they arrive.
pub type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

pub fn start_gwtrace(
    bin: &Path,
    stack: &Stack,
    secs: u64,
    json: bool,
) -> anyhow::Result<(Child, Lines)> {
    let mut cmd = Command::new(bin);
    cmd.args(["--duration", &secs.to_string()]);
    if json {
        cmd.arg("--json");
    }
    if let Some(pid) = stack.nginx_pid {
        cmd.args(["--proxy", &pid.to_string()]);
    }
    // GWLAB_RECORD=DIR keeps each run's raw events (DIR/<scenario>.jsonl) for `gwtrace explain`.
    if let Some(file) = &stack.record {
        cmd.arg("--record").arg(file).arg("--force");
    } else if let Some(dir) = std::env::var_os("GWLAB_RECORD") {
        let file = Path::new(&dir).join(format!("{}.jsonl", stack.name));
        cmd.arg("--record").arg(file).arg("--force");
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting gwtrace")?;
    let lines: Lines = Arc::default();
    let out = child.stdout.take().context("gwtrace stdout")?;
    let l2 = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(mut l) = l2.lock() {
                l.push((Instant::now(), line));
            }
        }
    });
    let err = child.stderr.take().context("gwtrace stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let log = stack.path("gwtrace.stderr");
    std::thread::spawn(move || {
        let mut f = std::fs::File::create(log).ok();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("tracing") {
                let _ = tx.send(());
            }
            if let Some(f) = f.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            eprintln!("    [gwtrace] {line}");
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .context("gwtrace did not become ready")?;
    Ok((child, lines))
}

/// gwtrace's JSON verdict lines about the stack's nginx (`proxy`, its master): the causes named
/// (in order of appearance), the last version of each (cause, target), and when the expected
/// cause first appeared; of a run that ended well, only its final answer. Verdicts about other
/// proxies on the host (another test's nginx) are not the scenario's.
fn read_verdicts(
    lines: &[(Instant, String)],
    expect: Option<&str>,
    ended_well: bool,
    proxy: Option<u32>,
) -> (Vec<String>, Vec<serde_json::Value>, Option<Instant>) {
    let mut causes: Vec<String> = Vec::new();
    let mut verdicts: Vec<serde_json::Value> = Vec::new();
    let mut first_verdict_at = None;
    for (at, line) in lines {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let about = v.get("proxy_pid").and_then(serde_json::Value::as_u64);
        if let (Some(ours), Some(pid)) = (proxy, about)
            && pid != 0
            && pid != u64::from(ours)
        {
            eprintln!("    [lab] not about this stack's nginx (pid {ours}), ignored: {line}");
            continue;
        }
        let Some(cause) = v.get("cause").and_then(|c| c.as_str()).map(str::to_owned) else {
            continue;
        };
        if Some(cause.as_str()) == expect && first_verdict_at.is_none() {
            first_verdict_at = Some(*at);
        }
        if !causes.contains(&cause) {
            causes.push(cause.clone());
        }
        verdicts.retain(|o| o.get("cause") != v.get("cause") || o.get("target") != v.get("target"));
        verdicts.push(v);
    }
    // gwtrace repeats the verdicts still standing at the end with "final": true: those are its
    // answer (a cause it replaced while evidence accumulated is not).
    let finals: Vec<serde_json::Value> = verdicts
        .iter()
        .filter(|v| v.get("final").is_some())
        .cloned()
        .collect();
    if !finals.is_empty() || ended_well {
        causes.retain(|c| {
            finals
                .iter()
                .any(|v| v.get("cause").and_then(|x| x.as_str()) == Some(c.as_str()))
        });
        verdicts = finals;
    }
    (causes, verdicts, first_verdict_at)
}

/// Runs one scenario end to end and scores it.
pub fn run_one(bin: &Path, sc: &Scenario) -> anyhow::Result<LabResult> {
    let mut stack = Stack::new(sc.name)?;
    (sc.build)(&mut stack).with_context(|| format!("building scenario {}", sc.name))?;
    stack.start_nginx()?;
    let (mut gw, lines) = start_gwtrace(bin, &stack, sc.secs, true)?;
    if let Some(f) = sc.fault {
        f(&mut stack)?;
    }
    let responses = (sc.drive)(&stack);
    let status = gw.wait().context("waiting for gwtrace")?;
    std::thread::sleep(Duration::from_millis(100));
    let nginx = stack.nginx_errors();
    let lines = lines.lock().map(|l| l.clone()).unwrap_or_default();
    let (causes, verdicts, first_verdict_at) =
        read_verdicts(&lines, sc.expect, status.success(), stack.nginx_pid);
    let first_bad = responses
        .iter()
        .find(|r| r.status.is_some_and(|s| s >= 500))
        .map(|r| r.at);
    let secs_to_verdict = match (first_bad, first_verdict_at) {
        (Some(b), Some(v)) => Some(v.saturating_duration_since(b).as_secs_f64()),
        _ => None,
    };
    let statuses: Vec<Option<u16>> = responses.iter().map(|r| r.status).collect();
    let mut why = Vec::new();
    if !status.success() {
        why.push(format!("gwtrace exited {status}"));
    }
    if !statuses.contains(&Some(sc.status)) {
        why.push(format!(
            "nginx never answered {} (got {statuses:?})",
            sc.status
        ));
    }
    let nginx_line = if sc.nginx_log.is_empty() {
        if !nginx.is_empty() {
            why.push(format!("nginx logged upstream errors: {:?}", nginx.first()));
        }
        String::new()
    } else if let Some(l) = nginx.iter().find(|l| l.contains(sc.nginx_log)) {
        l.clone()
    } else {
        why.push(format!(
            "nginx's error.log lacks {:?} (has {:?})",
            sc.nginx_log,
            nginx.first()
        ));
        String::new()
    };
    match sc.expect {
        Some(cause) => {
            if !causes.iter().any(|c| c == cause) {
                why.push(format!("expected verdict {cause}, got {causes:?}"));
            }
            if let Some(other) = causes.iter().find(|c| *c != cause) {
                why.push(format!("false verdict {other}"));
            }
            let connect_cause = !matches!(
                cause,
                "worker-timeout" | "worker-oom-killed" | "worker-crashed" | "crash-on-boot"
            );
            if connect_cause
                && let Some(v) = verdicts
                    .iter()
                    .find(|v| v.get("cause").and_then(|c| c.as_str()) == Some(cause))
                && v.get("target").and_then(|t| t.as_str()) != Some(stack.upstream.as_str())
            {
                why.push(format!(
                    "verdict target {:?} is not nginx's upstream {}",
                    v.get("target"),
                    stack.upstream
                ));
            }
        }
        None => {
            if !causes.is_empty() {
                why.push(format!("expected no verdict, got {causes:?}"));
            }
        }
    }
    Ok(LabResult {
        name: sc.name.to_owned(),
        expect: sc.expect.map(str::to_owned),
        nginx_line,
        statuses,
        causes,
        verdicts,
        secs_to_verdict,
        ok: why.is_empty(),
        why: why.join("; "),
    })
}

/// Runs the matrix (optionally filtered), prints the table and writes `out/lab.json`.
pub fn run_all(bin: &Path, filter: Option<&str>, out: &Path) -> anyhow::Result<Vec<LabResult>> {
    let mut results = Vec::new();
    for sc in scenarios()
        .iter()
        .filter(|s| filter.is_none_or(|f| s.name.contains(f)))
    {
        eprintln!("lab: {} — {}", sc.name, sc.about);
        let r = run_one(bin, sc).unwrap_or_else(|e| LabResult {
            name: sc.name.to_owned(),
            expect: sc.expect.map(str::to_owned),
            nginx_line: String::new(),
            statuses: Vec::new(),
            causes: Vec::new(),
            verdicts: Vec::new(),
            secs_to_verdict: None,
            ok: false,
            why: format!("{e:#}"),
        });
        eprintln!(
            "lab: {} {}",
            sc.name,
            if r.ok {
                "OK".to_owned()
            } else {
                format!("FAIL: {}", r.why)
            }
        );
        results.push(r);
    }
    println!("{}", table(&results));
    std::fs::create_dir_all(out)?;
    let json: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "scenario": r.name, "expected": r.expect, "nginx_error": r.nginx_line,
                "statuses": r.statuses, "gwtrace_causes": r.causes, "verdicts": r.verdicts,
                "secs_to_verdict": r.secs_to_verdict, "ok": r.ok, "why": r.why,
            })
        })
        .collect();
    std::fs::write(out.join("lab.json"), serde_json::to_string_pretty(&json)?)?;
    Ok(results)
}

/// The lab table: scenario, nginx's error, expected cause, gwtrace's causes, seconds, OK.
pub fn table(results: &[LabResult]) -> String {
    let mut t = format!(
        "{:<24} {:<44} {:<20} {:<28} {:>6}  {}\n",
        "SCENARIO", "NGINX ERROR.LOG", "EXPECTED", "GWTRACE", "SECS", "OK"
    );
    for r in results {
        let nginx = r
            .nginx_line
            .split("] ")
            .last()
            .unwrap_or("")
            .chars()
            .take(44)
            .collect::<String>();
        let _ = writeln!(
            t,
            "{:<24} {:<44} {:<20} {:<28} {:>6}  {}",
            r.name,
            nginx,
            r.expect.as_deref().unwrap_or("(none)"),
            if r.causes.is_empty() {
                "(none)".to_owned()
            } else {
                r.causes.join(",")
            },
            r.secs_to_verdict
                .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}")),
            if r.ok { "OK" } else { "FAIL" }
        );
    }
    t
}

/// `cargo xtask demo`: one broken stack, nginx's 502 next to gwtrace's explanation.
pub fn demo(bin: &Path, name: &str) -> anyhow::Result<()> {
    let all = scenarios();
    let sc = all
        .iter()
        .find(|s| s.name == name)
        .with_context(|| format!("no scenario {name} (cargo xtask lab --list)"))?;
    println!("demo: {} — {}", sc.name, sc.about);
    let mut stack = Stack::new(sc.name)?;
    (sc.build)(&mut stack)?;
    stack.start_nginx()?;
    println!(
        "demo: nginx on 127.0.0.1:{} proxies to {}",
        stack.port, stack.upstream
    );
    let (mut gw, lines) = start_gwtrace(bin, &stack, sc.secs, false)?;
    if let Some(f) = sc.fault {
        f(&mut stack)?;
    }
    let responses = (sc.drive)(&stack);
    gw.wait()?;
    println!("\n=== what the client saw ===");
    for r in &responses {
        println!(
            "GET -> {}",
            r.status
                .map_or_else(|| "no answer".to_owned(), |s| s.to_string())
        );
    }
    println!("\n=== nginx error.log ===");
    for l in stack.nginx_errors().iter().take(3) {
        println!("{l}");
    }
    println!("\n=== gwtrace ===");
    for (_, l) in lines.lock().map(|l| l.clone()).unwrap_or_default() {
        println!("{l}");
    }
    Ok(())
}
