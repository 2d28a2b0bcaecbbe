//! A running stack: a temp dir with the apps, the processes started in it (each in its own
//! process group, killed by that group's id on drop), the cgroups it made, the nginx in front.
use std::{
    fmt::Write as _,
    net::TcpStream,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    http::{Response, http_get, http_post},
    support::free_port,
};

/// The apps, embedded so a scenario can write them where its app user can read them.
const WSGI_APP: &str = include_str!("../apps/app.py");
const ASGI_APP: &str = include_str!("../apps/asgi.py");
/// A systemd stand-in (fork, `(unit)` name, chdir, exec; exit 200/203 like systemd's child).
const SUPERVISE: &str = include_str!("../apps/supervise.py");
/// An HTTP/1.1 app whose keep-alive sweep loses the race with the proxy's reuse.
const KEEPALIVE_APP: &str = include_str!("../apps/keepalive.py");

/// The proxy a stack puts in front of its app.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyKind {
    #[default]
    Nginx,
    /// Caddy (`caddy run`, a Caddyfile): 502 on a failed dial, errors in its JSON log.
    Caddy,
    /// haproxy (`haproxy -W -db`, master and worker): 503 when no server is available, one
    /// log line per request on stdout (`log stdout`).
    Haproxy,
}

/// A running stack: a temp dir, the processes started in it, the nginx in front.
pub struct Stack {
    /// Which proxy [`Stack::start_proxy`] starts (nginx unless a scenario says otherwise).
    pub proxy: ProxyKind,
    pub name: String,
    pub dir: PathBuf,
    /// nginx's listen port.
    pub port: u16,
    /// `proxy_pass` target, as gwtrace prints it: `unix:/path` or `127.0.0.1:PORT`.
    pub upstream: String,
    /// Extra nginx `location` directives.
    pub nginx_extra: String,
    /// Reach the upstream through an `upstream` block keeping this many idle connections
    /// (`keepalive N`, HTTP/1.1, no `Connection: close`), instead of a direct `proxy_pass`.
    pub upstream_keepalive: Option<u32>,
    /// Other sites of the same nginx: (`location` prefix, its upstream as gwtrace prints it).
    pub sites: Vec<(String, String)>,
    /// Targets of other apps that no verdict may blame or point at (another site's app).
    pub innocent: Vec<String>,
    /// Run nginx in its own mount namespace with an empty tmpfs over this directory (systemd
    /// `PrivateTmp=`, a container without the app's volume).
    pub nginx_private_dir: Option<PathBuf>,
    /// haproxy's `chroot` directory (its workers resolve unix server paths under it).
    pub haproxy_chroot: Option<PathBuf>,
    /// The network namespace (`ip netns` name) nginx and its app run in, when the scenario
    /// made one ([`Stack::make_netns`]): a container's or a pod's own loopback.
    pub net: Option<String>,
    children: Vec<Child>,
    /// The proxy's master pid (nginx's, or Caddy's or haproxy's when the stack runs one).
    pub nginx_pid: Option<u32>,
    cgroup: Option<PathBuf>,
    netns: Vec<String>,
    /// Programs started inside a cgroup: (program name, cgroup directory).
    placements: Vec<(String, PathBuf)>,
    /// cgroup directories this stack created, removed deepest first.
    made_cgroups: Vec<PathBuf>,
    /// Where gwtrace keeps the raw events of the run (`--record`), if anywhere.
    pub record: Option<PathBuf>,
    /// gwtrace's `--hooks` for this stack (else `GWLAB_HOOKS`, else gwtrace's default).
    pub hooks: Option<&'static str>,
}

/// gunicorn's flags as the lab runs it: one worker, as the unprivileged app user.
#[must_use]
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

pub(crate) fn wait_for(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
) -> anyhow::Result<()> {
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
        std::fs::write(dir.join("keepalive.py"), KEEPALIVE_APP)?;
        Ok(Self {
            proxy: ProxyKind::Nginx,
            name: name.to_owned(),
            dir,
            port: free_port().context("a free port for nginx")?,
            upstream: String::new(),
            nginx_extra: String::new(),
            upstream_keepalive: None,
            sites: Vec::new(),
            innocent: Vec::new(),
            nginx_private_dir: None,
            haproxy_chroot: None,
            net: None,
            children: Vec::new(),
            nginx_pid: None,
            cgroup: None,
            netns: Vec::new(),
            placements: Vec::new(),
            made_cgroups: Vec::new(),
            record: None,
            hooks: None,
        })
    }

    /// Path inside the stack dir.
    #[must_use]
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
        self.spawn_logged(cmd, "app.log")
    }

    /// [`Stack::spawn`] with stdout and stderr appended to `log` in the stack dir.
    fn spawn_logged(&mut self, cmd: &mut Command, log: &str) -> anyhow::Result<u32> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(log))?;
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

    /// uwsgi (Debian's, with its python3 plugin) serving app.py over HTTP on `bind`
    /// (`unix:/path` or `127.0.0.1:PORT`): a master and one worker, as the unprivileged app
    /// user, with extra flags (`--harakiri 2`).
    pub fn uwsgi(
        &mut self,
        bind: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<u32> {
        let socket = bind.strip_prefix("unix:").unwrap_or(bind);
        let mut cmd = Command::new("uwsgi");
        // A shared socket is bound before uwsgi drops its privileges (a plain --http-socket
        // on a unix path is bound as the app user, in a directory it cannot write).
        cmd.args(["--plugin", "python3", "--master", "--processes", "1"])
            .args(["--shared-socket", socket, "--http-socket", "=0"])
            .arg("--chmod-socket=666")
            .args(["--uid", "gwapp", "--gid", "gwapp", "--die-on-term"])
            .args(["--wsgi-file", "app.py", "--callable", "app", "--need-app"])
            .args(extra)
            .envs(env.iter().copied());
        self.spawn(&mut cmd)
    }

    /// A network namespace for this stack's nginx and app (`ip netns add`, its `lo` up),
    /// deleted when the stack ends; [`Stack::start_nginx`], [`Stack::in_net`], [`Stack::get`]
    /// and [`Stack::wait_listening`] then work inside it.
    pub fn make_netns(&mut self) -> anyhow::Result<String> {
        let name = format!("gwlab-{}-{}", self.name, std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        self.netns.push(name.clone());
        run(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]))?;
        self.net = Some(name.clone());
        Ok(name)
    }

    /// `program` run inside the stack's network namespace when it has one (`ip netns exec`
    /// execs in place: same pid, same process group), else as is.
    #[must_use]
    pub fn in_net(&self, program: &str) -> Command {
        match &self.net {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        }
    }

    /// Runs `f` on a thread inside the stack's network namespace (or here, without one).
    pub fn on_net<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let Some(ns) = &self.net else {
            return Ok(f());
        };
        let handle = std::fs::File::open(format!("/run/netns/{ns}"))
            .with_context(|| format!("opening network namespace {ns}"))?;
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns(2) on this thread only (the scoped thread ends after `f`), with
                // a namespace fd that `handle` keeps open for the call.
                let rc = unsafe {
                    libc::setns(std::os::fd::AsRawFd::as_raw_fd(&handle), libc::CLONE_NEWNET)
                };
                if rc != 0 {
                    bail!("setns into {ns}: {}", std::io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the thread in {ns} panicked"))?
        })
    }

    /// Adds nftables rules in the stack's network namespace (`nft -f -` of `ruleset`).
    pub fn nft(&self, ruleset: &str) -> anyhow::Result<()> {
        let ns = self
            .net
            .as_deref()
            .context("nft rules only in the stack's own netns")?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "nft", ruleset]);
        run(&mut c)
    }

    /// Waits until a unix socket path or TCP port accepts connections (a TCP port in the
    /// stack's network namespace when it has one).
    pub fn wait_listening(&self, target: &str) -> anyhow::Result<()> {
        wait_for(
            &format!("{target} to listen (see {}/app.log)", self.dir.display()),
            Duration::from_secs(15),
            || {
                target.strip_prefix("unix:").map_or_else(
                    || {
                        self.on_net(|| TcpStream::connect(target).is_ok())
                            .unwrap_or(false)
                    },
                    |p| std::os::unix::net::UnixStream::connect(p).is_ok(),
                )
            },
        )
    }

    /// Starts the stack's proxy ([`Stack::proxy`]) in front of `upstream`.
    pub fn start_proxy(&mut self) -> anyhow::Result<()> {
        match self.proxy {
            ProxyKind::Nginx => self.start_nginx(),
            ProxyKind::Caddy => self.start_caddy(),
            ProxyKind::Haproxy => self.start_haproxy(),
        }
    }

    fn wait_proxy(&self, what: &str) -> anyhow::Result<()> {
        let port = self.port;
        wait_for(what, Duration::from_secs(15), || {
            self.on_net(|| TcpStream::connect(("127.0.0.1", port)).is_ok())
                .unwrap_or(false)
        })
    }

    /// Writes a Caddyfile (admin API off, no automatic HTTPS, storage and JSON log in the
    /// stack dir) and starts `caddy run` on it, in front of `upstream`.
    pub fn start_caddy(&mut self) -> anyhow::Result<()> {
        let d = self.dir.display().to_string();
        let to = self
            .upstream
            .strip_prefix("unix:")
            .map_or_else(|| self.upstream.clone(), |p| format!("unix/{p}"));
        let conf = format!(
            "{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {d}/caddy\n\
             \tlog {{\n\t\toutput file {d}/caddy.log\n\t\tformat json\n\t}}\n}}\n\n\
             http://:{port} {{\n\treverse_proxy {to}\n}}\n",
            port = self.port
        );
        let path = self.path("Caddyfile");
        std::fs::write(&path, conf)?;
        let mut cmd = self.in_net("caddy");
        cmd.args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&path)
            .envs([
                ("HOME", format!("{d}/caddy")),
                ("XDG_DATA_HOME", format!("{d}/caddy")),
                ("XDG_CONFIG_HOME", format!("{d}/caddy")),
            ]);
        let pid = self.spawn(&mut cmd)?;
        self.nginx_pid = Some(pid);
        self.wait_proxy("caddy to listen")
    }

    /// Writes haproxy.cfg (one backend, one server: `upstream`; `log stdout`) and starts
    /// `haproxy -W -db` on it (a master and its worker), its log in haproxy.log.
    pub fn start_haproxy(&mut self) -> anyhow::Result<()> {
        let server = self
            .upstream
            .strip_prefix("unix:")
            .map_or_else(|| self.upstream.clone(), |p| format!("unix@{p}"));
        let chroot = self
            .haproxy_chroot
            .as_ref()
            .map_or_else(String::new, |d| format!("\tchroot {}\n", d.display()));
        let conf = format!(
            "global\n{chroot}\tlog stdout format raw local0\n\
             defaults\n\tmode http\n\tlog global\n\toption httplog\n\tretries 0\n\
             \ttimeout connect 2s\n\ttimeout client 10s\n\ttimeout server 10s\n\
             frontend www\n\tbind 127.0.0.1:{port}\n\tdefault_backend app\n\
             backend app\n\tserver app {server}\n",
            port = self.port
        );
        let path = self.path("haproxy.cfg");
        std::fs::write(&path, conf)?;
        let mut cmd = self.in_net("haproxy");
        cmd.args(["-W", "-db", "-f"]).arg(&path);
        let pid = self.spawn_logged(&mut cmd, "haproxy.log")?;
        self.nginx_pid = Some(pid);
        self.wait_proxy("haproxy to listen")
    }

    /// Writes nginx.conf and starts nginx (master root, workers www-data) in front of `upstream`.
    pub fn start_nginx(&mut self) -> anyhow::Result<()> {
        self.write_nginx_conf()?;
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
            let mut c = self.in_net("nginx");
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
            self.on_net(|| TcpStream::connect(("127.0.0.1", port)).is_ok())
                .unwrap_or(false)
        })
    }

    /// Writes nginx.conf again from the stack's current `upstream` and `sites`, then
    /// [`Stack::reload_nginx`]: a site added by a reload.
    pub fn reconfigure_nginx(&self) -> anyhow::Result<()> {
        self.write_nginx_conf()?;
        self.reload_nginx()
    }

    /// nginx.conf for `upstream` at `/` and each of `sites`.
    fn write_nginx_conf(&self) -> anyhow::Result<()> {
        let d = self.dir.display();
        let pass_of = |t: &str| {
            t.strip_prefix("unix:")
                .map_or_else(|| format!("http://{t}"), |p| format!("http://unix:{p}:"))
        };
        let mut pass = pass_of(&self.upstream);
        let mut upstreams = String::new();
        let mut extra = self.nginx_extra.clone();
        if let Some(n) = self.upstream_keepalive {
            let server = self.upstream.clone();
            let _ = writeln!(
                upstreams,
                "  upstream gwlab_app {{\n    server {server};\n    keepalive {n};\n  }}"
            );
            "http://gwlab_app".clone_into(&mut pass);
            extra.push_str(
                "\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";",
            );
        }
        let mut sites = String::new();
        for (prefix, t) in &self.sites {
            let _ = writeln!(
                sites,
                "    location {prefix} {{\n      proxy_pass {};\n    }}",
                pass_of(t)
            );
        }
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser www-data;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log error;\nevents {{ worker_connections 512; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
               fastcgi_temp_path {d}/tmp/fcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
             {upstreams}  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass {pass};\n      {extra}\n    }}\n{sites}  }}\n}}\n",
            port = self.port,
        );
        std::fs::write(self.path("nginx.conf"), conf)?;
        Ok(())
    }

    /// `nginx -s reload` on this stack's configuration (the master re-reads it, starts new
    /// workers, ends the old ones), waiting until the new workers have replaced the old ones.
    pub fn reload_nginx(&self) -> anyhow::Result<()> {
        let master = self.nginx_pid.context("nginx is not running")?;
        let workers = || {
            std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
                .unwrap_or_default()
        };
        let before = workers();
        let st = Command::new("nginx")
            .arg("-c")
            .arg(self.path("nginx.conf"))
            .args(["-s", "reload"])
            .status()
            .context("nginx -s reload")?;
        if !st.success() {
            bail!("nginx -s reload: {st}");
        }
        wait_for("nginx's new workers", Duration::from_secs(10), || {
            let now = workers();
            !now.trim().is_empty()
                && now
                    .split_whitespace()
                    .all(|w| !before.split_whitespace().any(|b| b == w))
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

    /// The proxy's own log lines about upstream failures (ground truth): nginx's error.log
    /// lines about upstreams, Caddy's JSON error entries, haproxy's request lines answered 5xx.
    pub fn nginx_errors(&self) -> Vec<String> {
        let (file, keep): (&str, fn(&str) -> bool) = match self.proxy {
            ProxyKind::Nginx => ("error.log", |l| {
                l.contains("upstream") || l.contains("connect()")
            }),
            ProxyKind::Caddy => ("caddy.log", |l| l.contains("\"level\":\"error\"")),
            ProxyKind::Haproxy => ("haproxy.log", |l| {
                [" 502 ", " 503 ", " 504 "].iter().any(|s| l.contains(s))
            }),
        };
        std::fs::read_to_string(self.path(file))
            .unwrap_or_default()
            .lines()
            .filter(|l| keep(l))
            .map(str::to_owned)
            .collect()
    }

    /// One POST through nginx (from inside the stack's network namespace when it has one).
    #[must_use]
    pub fn post(&self, path: &str, timeout: Duration) -> Response {
        let port = self.port;
        Response {
            status: self
                .on_net(|| http_post(port, path, timeout))
                .ok()
                .flatten(),
            at: Instant::now(),
        }
    }

    /// `keepalive.py` bound to `bind` (`127.0.0.1:PORT`), as the app user, closing idle
    /// connections after `keep_alive` seconds with its sweep `lag` seconds late.
    pub fn keepalive_app(
        &mut self,
        bind: &str,
        keep_alive: &str,
        lag: &str,
    ) -> anyhow::Result<u32> {
        let script = self.path("keepalive.py");
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid",
            "gwapp",
            "--regid",
            "gwapp",
            "--init-groups",
            "/usr/bin/python3",
        ])
        .arg(script)
        .args([
            "--bind",
            bind,
            "--keep-alive",
            keep_alive,
            "--sweep-lag",
            lag,
        ]);
        self.spawn(&mut cmd)
    }

    /// One GET through nginx (from inside the stack's network namespace when it has one).
    #[must_use]
    pub fn get(&self, path: &str, timeout: Duration) -> Response {
        let port = self.port;
        Response {
            status: self.on_net(|| http_get(port, path, timeout)).ok().flatten(),
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

/// Runs a command to completion; its stderr in the error unless it succeeds.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `unshare -m --propagation private sh -c 'mount -t tmpfs tmpfs DIR && chmod 755 DIR && ...'`:
/// the command appended as the last argument runs in a new mount namespace where `dir` is an
/// empty tmpfs of its own (what Docker volumes or systemd `PrivateTmp=` do), invisible outside.
pub(crate) fn in_mount_namespace(dir: &Path) -> Command {
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
pub(crate) fn wait_unix_listed(path: &Path) -> anyhow::Result<()> {
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

impl Stack {
    /// The first non-nginx process this stack started.
    pub(crate) fn app_pid(&self) -> Option<u32> {
        self.children
            .iter()
            .map(Child::id)
            .find(|&p| Some(p) != self.nginx_pid)
    }
}
