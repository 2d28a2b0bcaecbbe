//! End-to-end tests of `gwtrace check` (root): real nginx configurations in front of each broken
//! target of the scenario lab (socket missing, TCP refused, wrong target, socket permission,
//! stale socket) and healthy ones, checked with `gwtrace check --config` as a user runs it, and
//! one check of a running nginx by pid.
//!
//! Each test runs its app and the check in a private network namespace (the listener tables
//! of /proc/net are per namespace): app servers other people run on this host are not
//! "the app nginx meant to reach" for these checks.
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use gwtrace_lab::{
    self as lab, gwtrace_bin,
    support::{Netns, free_port, require_root},
};
use serde_json::Value;

/// One stack at a time: gentle with a shared machine, and stack names stay unique.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    require_root("the check tests (gunicorn as gwapp, network namespaces)");
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A network namespace with loopback up, deleted on drop (declare it before the stack so the
/// stack's processes are killed first).
fn netns() -> Netns {
    let ns = Netns::create();
    ns.lo_up();
    ns
}

/// Writes an nginx configuration like the lab's (master root, workers www-data) proxying to
/// `pass` (a `proxy_pass` argument), with extra `location` directives; returns its path and the
/// line of the `proxy_pass`.
fn write_conf(stack: &lab::Stack, pass: &str, extra: &str) -> (PathBuf, u32) {
    let d = stack.dir.display();
    let conf = format!(
        "user www-data;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log error;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
           fastcgi_temp_path {d}/tmp/fcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      {extra}\n      proxy_pass {pass};\n    }}\n  }}\n}}\n",
        port = stack.port,
    );
    let line = conf
        .lines()
        .position(|l| l.contains("proxy_pass"))
        .map_or(0, |i| u32::try_from(i + 1).unwrap_or(0));
    let path = stack.path("nginx.conf");
    std::fs::write(&path, conf).expect("writing nginx.conf");
    (path, line)
}

/// `http://unix:/path:` for a unix target, `http://host:port` else.
fn pass_of(target: &str) -> String {
    target.strip_prefix("unix:").map_or_else(
        || format!("http://{target}"),
        |p| format!("http://unix:{p}:"),
    )
}

/// gunicorn as the lab starts it (user gwapp), inside `ns`; returns its master pid.
fn gunicorn(stack: &mut lab::Stack, ns: &Netns, bind: &str, extra: &[&str]) -> u32 {
    let mut cmd = ns.command("gunicorn");
    cmd.args(lab::gunicorn_args(bind))
        .args(extra)
        .arg("app:app");
    let pid = stack.spawn(&mut cmd).expect("starting gunicorn");
    wait_listening(pid, bind);
    pid
}

/// Waits until gunicorn's network namespace lists a listener on `bind` (we are outside it).
fn wait_listening(pid: u32, bind: &str) {
    let t0 = Instant::now();
    let listed = || {
        if let Some(path) = bind.strip_prefix("unix:") {
            return std::fs::read_to_string(format!("/proc/{pid}/net/unix")).is_ok_and(|t| {
                gwtrace::host::procfs::parse_proc_net_unix(&t)
                    .iter()
                    .any(|(l, _)| l == &format!("unix:{path}"))
            });
        }
        std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).is_ok_and(|t| {
            gwtrace::host::procfs::parse_proc_net_tcp(&t)
                .iter()
                .any(|(l, _)| l == bind)
        })
    };
    while t0.elapsed() < Duration::from_secs(20) {
        if listed() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gunicorn pid {pid} never listened on {bind}");
}

/// What one `gwtrace check` run said.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    findings: Vec<Value>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn causes(&self) -> Vec<&str> {
        self.findings
            .iter()
            .filter_map(|f| f["cause"].as_str())
            .collect()
    }

    fn one(&self, cause: &str) -> &Value {
        let found: Vec<&Value> = self
            .findings
            .iter()
            .filter(|f| f["cause"] == cause)
            .collect();
        assert_eq!(found.len(), 1, "one {cause} expected: {self:#?}");
        found[0]
    }
}

fn run_check(mut cmd: Command) -> Run {
    let t0 = Instant::now();
    let out = cmd.output().expect("running gwtrace check");
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let findings = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    Run {
        code: out.status.code(),
        findings,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took,
    }
}

/// `gwtrace check --json --config CONF` inside `ns`, plus extra flags.
fn check_config(ns: &Netns, conf: &Path, extra: &[&str]) -> Run {
    let mut cmd = ns.command(gwtrace_bin!());
    cmd.args(["check", "--json", "--config"])
        .arg(conf)
        .args(extra);
    run_check(cmd)
}

/// The checks every failing target must pass: exit 1, one failing finding of `cause` on
/// `target`, its config line first, the engine's "would fail" line, a fix, no count.
fn assert_fails(r: &Run, cause: &str, target: &str, conf: &Path, line: u32) -> Value {
    assert_eq!(r.code, Some(1), "{r:#?}");
    let f = r.one(cause).clone();
    assert_eq!(f["severity"], "fail", "{f:#}");
    assert_eq!(f["target"], target, "{f:#}");
    assert_eq!(f["count"], 0, "{f:#}");
    assert_eq!(f["proxy_comm"], "nginx");
    let first = f["evidence"][0].as_str().unwrap_or_default();
    let want = format!("{}:{line} proxy_pass ", conf.display());
    assert!(
        first.starts_with(&want),
        "first evidence {first:?} should be {want}..."
    );
    assert_eq!(f["config"][0].as_str(), Some(first));
    assert!(
        f["evidence"].as_array().is_some_and(|e| e
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("would fail with")))),
        "{f:#}"
    );
    assert!(!f["fix"].as_str().unwrap_or_default().is_empty(), "{f:#}");
    f
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn check_socket_missing() {
    let _s = serial();
    let ns = netns();
    let stack = lab::Stack::new("check-missing").expect("stack");
    let target = format!("unix:{}", stack.path("app.sock").display());
    let (conf, line) = write_conf(&stack, &pass_of(&target), "");
    let r = check_config(&ns, &conf, &[]);
    let f = assert_fails(&r, "socket-missing", &target, &conf, line);
    assert!(f["evidence"].to_string().contains("ENOENT (2)"), "{f:#}");
    assert_eq!(r.causes(), ["socket-missing"]);
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn check_tcp_refused() {
    let _s = serial();
    let ns = netns();
    let stack = lab::Stack::new("check-refused").expect("stack");
    let target = format!("127.0.0.1:{}", free_port().expect("a free port"));
    let (conf, line) = write_conf(&stack, &pass_of(&target), "");
    let r = check_config(&ns, &conf, &[]);
    let f = assert_fails(&r, "upstream-not-listening", &target, &conf, line);
    assert!(
        f["evidence"].to_string().contains("ECONNREFUSED (111)"),
        "{f:#}"
    );
    assert_eq!(r.causes(), ["upstream-not-listening"]);
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn check_wrong_target() {
    let _s = serial();
    let ns = netns();
    let mut stack = lab::Stack::new("check-wrong").expect("stack");
    std::fs::create_dir_all(stack.path("gunicorn")).expect("dir");
    let real = format!("unix:{}", stack.path("gunicorn/app.sock").display());
    let pid = gunicorn(&mut stack, &ns, &real, &["--timeout", "90"]);
    let target = format!("unix:{}", stack.path("app.sock").display());
    let (conf, line) = write_conf(&stack, &pass_of(&target), "");
    let r = check_config(&ns, &conf, &[]);
    let f = assert_fails(&r, "wrong-target", &target, &conf, line);
    let summary = f["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains(&format!("the app listens on {real}")),
        "{f:#}"
    );
    assert!(
        f["evidence"]
            .to_string()
            .contains(&format!("gunicorn pid {pid} listens on {real}")),
        "{f:#}"
    );
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn check_socket_permission() {
    let _s = serial();
    let ns = netns();
    let mut stack = lab::Stack::new("check-perm").expect("stack");
    std::fs::create_dir_all(stack.path("run")).expect("dir");
    let target = format!("unix:{}", stack.path("run/app.sock").display());
    // umask 0o117: srw-rw---- gwapp:gwapp; www-data is not in group gwapp.
    gunicorn(
        &mut stack,
        &ns,
        &target,
        &["--umask", "0o117", "--timeout", "90"],
    );
    let (conf, line) = write_conf(&stack, &pass_of(&target), "");
    let r = check_config(&ns, &conf, &[]);
    let f = assert_fails(&r, "socket-permission", &target, &conf, line);
    let ev = f["evidence"].to_string();
    assert!(ev.contains("EACCES (13)"), "{f:#}");
    assert!(
        ev.contains("srw-rw---- "),
        "the socket's mode is named: {f:#}"
    );
    assert!(
        ev.contains("(uid 33, gid 33, groups 33)"),
        "checked as www-data: {f:#}"
    );
    assert!(
        f["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("usermod -aG"),
        "{f:#}"
    );
    assert_eq!(r.causes(), ["socket-permission"]);
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn check_stale_socket() {
    let _s = serial();
    let ns = netns();
    let mut stack = lab::Stack::new("check-stale").expect("stack");
    let target = format!("unix:{}", stack.path("app.sock").display());
    let pid = gunicorn(&mut stack, &ns, &target, &["--timeout", "90"]);
    stack.kill_group(pid, libc::SIGKILL);
    let sock = stack.path("app.sock");
    let t0 = Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
        && t0.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sock.exists(), "kill -9 leaves the socket file behind");
    let (conf, line) = write_conf(&stack, &pass_of(&target), "");
    let r = check_config(&ns, &conf, &[]);
    let f = assert_fails(&r, "stale-socket", &target, &conf, line);
    assert!(
        f["evidence"]
            .to_string()
            .contains("is a socket file but no process listens on it"),
        "{f:#}"
    );
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn check_healthy_is_silent_and_fast() {
    let _s = serial();
    let ns = netns();
    let mut stack = lab::Stack::new("check-healthy").expect("stack");
    let target = format!("127.0.0.1:{}", free_port().expect("a free port"));
    // gunicorn's deadline above nginx's default proxy_read_timeout (60 s): nothing to flag.
    gunicorn(&mut stack, &ns, &target, &["--timeout", "75"]);
    let (conf, _) = write_conf(&stack, &pass_of(&target), "");
    let r = check_config(&ns, &conf, &[]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert!(r.findings.is_empty(), "{r:#?}");
    assert!(r.stdout.trim().is_empty(), "{r:#?}");
    assert!(r.stderr.contains("all healthy"), "{r:#?}");
    eprintln!("gwtrace check took {} ms", r.took.as_millis());
    assert!(
        r.took < Duration::from_secs(3),
        "a check should take well under a second (debug build, busy host: 3 s allowed), took {:?}",
        r.took
    );
    // The human report: one ok line naming the listener.
    let mut cmd = ns.command(gwtrace_bin!());
    cmd.args(["check", "--config"]).arg(&conf);
    let h = run_check(cmd);
    assert_eq!(h.code, Some(0), "{h:#?}");
    let ok = h
        .stdout
        .lines()
        .find(|l| l.contains(&target))
        .unwrap_or_default();
    assert!(
        ok.trim_start().starts_with("ok") && ok.contains("gunicorn pid"),
        "{}",
        h.stdout
    );
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn check_timeout_mismatch_warns() {
    let _s = serial();
    let ns = netns();
    let mut stack = lab::Stack::new("check-timeouts").expect("stack");
    let target = format!("unix:{}", stack.path("app.sock").display());
    // gunicorn's default --timeout 30 under nginx's default proxy_read_timeout 60s.
    gunicorn(&mut stack, &ns, &target, &[]);
    let (conf, _) = write_conf(&stack, &pass_of(&target), "");
    let r = check_config(&ns, &conf, &[]);
    assert_eq!(r.code, Some(0), "warnings alone exit 0: {r:#?}");
    let f = r.one("timeout-mismatch");
    assert_eq!(f["severity"], "warn");
    let summary = f["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("gunicorn kills a worker busy for 30 s"),
        "{f:#}"
    );
    assert!(summary.contains("nginx waits 60s"), "{f:#}");
    assert!(
        f["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("proxy_read_timeout 25s"),
        "{f:#}"
    );
    // Whether the socket's /tmp directory survives a reboot: flagged, or said not checkable
    // (the test's gunicorn is no systemd service), never silently skipped.
    assert!(
        r.stderr
            .contains("could not check that it survives a reboot")
            || r.causes().contains(&"runtime-dir-volatile"),
        "{r:#?}"
    );
    assert_eq!(check_config(&ns, &conf, &["--strict"]).code, Some(1));
    // nginx giving up first is the fix.
    let (conf, _) = write_conf(&stack, &pass_of(&target), "proxy_read_timeout 25s;");
    let r = check_config(&ns, &conf, &[]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert!(!r.causes().contains(&"timeout-mismatch"), "{r:#?}");
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn check_running_nginx_by_pid() {
    let _s = serial();
    let mut stack = lab::Stack::new("check-running").expect("stack");
    std::fs::create_dir_all(stack.path("run")).expect("dir");
    let target = format!("unix:{}", stack.path("run/app.sock").display());
    stack
        .gunicorn(&target, &["--umask", "0o117", "--timeout", "90"], &[])
        .expect("gunicorn");
    stack.wait_listening(&target).ok();
    let sock = stack.path("run/app.sock");
    let t0 = Instant::now();
    while !sock.exists() && t0.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stack.upstream.clone_from(&target);
    stack.start_nginx().expect("nginx");
    let master = stack.nginx_pid.expect("nginx pid");
    let mut cmd = Command::new(gwtrace_bin!());
    cmd.args(["check", "--json", "--proxy", &master.to_string()]);
    let r = run_check(cmd);
    assert_eq!(r.code, Some(1), "{r:#?}");
    let f = r.one("socket-permission");
    assert_eq!(
        f["proxy_pid"], master,
        "the verdict names the master: {f:#}"
    );
    let ev = f["evidence"].to_string();
    assert!(
        ev.contains(&format!("{}:", stack.path("nginx.conf").display())),
        "{f:#}"
    );
    assert!(
        ev.contains("a connect() by nginx worker pid"),
        "the running worker: {f:#}"
    );
    // Only the nginx named by --proxy was checked.
    assert!(
        r.findings.iter().all(|f| f["proxy_pid"] == master),
        "{r:#?}"
    );
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn check_invalid_config_and_usage_errors() {
    let _s = serial();
    let ns = netns();
    let stack = lab::Stack::new("check-invalid").expect("stack");
    let (conf, _) = write_conf(&stack, "http://127.0.0.1:1", "prox_read_timeout 5s;");
    let r = check_config(&ns, &conf, &[]);
    assert_eq!(r.code, Some(1), "{r:#?}");
    let f = r.one("config-invalid");
    assert_eq!(f["severity"], "fail");
    assert!(
        f["evidence"].to_string().contains("prox_read_timeout"),
        "{f:#}"
    );
    let missing = check_config(&ns, Path::new("/nonexistent/nginx.conf"), &[]);
    assert_eq!(missing.code, Some(2), "{missing:#?}");
    let mut cmd = Command::new(gwtrace_bin!());
    cmd.args(["check", "--proxy", "4294967295"]);
    assert_eq!(run_check(cmd).code, Some(2));
}

/// One GET from inside `ns` (a thread that enters it): the status code, or None.
fn get_in(ns: &lab::support::Netns, port: u16, path: &str) -> Option<u16> {
    let handle = std::fs::File::open(format!("/run/netns/{}", ns.name)).expect("netns handle");
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns(2) on this scoped thread only, with a namespace fd `handle` keeps
            // open for the call.
            let rc = unsafe {
                libc::setns(std::os::fd::AsRawFd::as_raw_fd(&handle), libc::CLONE_NEWNET)
            };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            lab::http_get(port, path, Duration::from_secs(5))
        })
        .join()
        .expect("the GET thread")
    })
}

/// Waits until the proxy started as `pid` answers on `port` inside `ns`.
fn wait_answering(stack: &lab::Stack, ns: &lab::support::Netns, port: u16) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if get_in(ns, port, "/").is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "the proxy never answered on port {port}: {}",
        std::fs::read_to_string(stack.path("app.log")).unwrap_or_default()
    );
}

/// A proxy other than nginx, in front of a unix socket nobody created (`/sock/`) and a TCP
/// port nothing listens on (everything else).
struct OtherProxy {
    pid: u32,
    conf: PathBuf,
    sock: String,
    tcp: String,
}

/// Starts `program args` (inside `ns`) with the configuration `conf_text` written to `conf_name`
/// (`{SOCK}`, `{TCP}`, `{PORT}`, `{DIR}` replaced).
fn start_other(
    stack: &mut lab::Stack,
    ns: &lab::support::Netns,
    conf_name: &str,
    conf_text: &str,
    program: &str,
    args: &[&str],
    env: &[(&str, String)],
) -> OtherProxy {
    let sock = stack.path("app.sock").display().to_string();
    let tcp = format!("127.0.0.1:{}", free_port().expect("a free port"));
    let conf = stack.path(conf_name);
    let text = conf_text
        .replace("{SOCK}", &sock)
        .replace("{TCP}", &tcp)
        .replace("{PORT}", &stack.port.to_string())
        .replace("{DIR}", &stack.dir.display().to_string());
    std::fs::write(&conf, text).expect("writing the configuration");
    let mut cmd = ns.command(program);
    let conf_s = conf.display().to_string();
    cmd.args(args.iter().map(|a| a.replace("{CONF}", &conf_s)));
    cmd.envs(env.iter().map(|(k, v)| (*k, v.clone())));
    let pid = stack.spawn(&mut cmd).expect("starting the proxy");
    wait_answering(stack, ns, stack.port);
    OtherProxy {
        pid,
        conf,
        sock: format!("unix:{sock}"),
        tcp,
    }
}

/// The line of `conf` that contains `needle`.
fn line_with(conf: &Path, needle: &str) -> usize {
    std::fs::read_to_string(conf)
        .expect("the configuration")
        .lines()
        .position(|l| l.contains(needle))
        .map_or(0, |i| i + 1)
}

/// `gwtrace check --proxy PID` inside `ns`: the missing socket and the refused port, each with
/// the proxy's own status and its configuration line.
fn assert_other_check(ns: &lab::support::Netns, p: &OtherProxy, comm: &str, status: u16) {
    let mut cmd = ns.command(gwtrace_bin!());
    cmd.args(["check", "--json", "--proxy", &p.pid.to_string()]);
    let r = run_check(cmd);
    assert_eq!(r.code, Some(1), "{r:#?}");
    let mut causes = r.causes();
    causes.sort_unstable();
    assert_eq!(
        causes,
        ["socket-missing", "upstream-not-listening"],
        "{r:#?}"
    );
    let sock_path = p.sock.trim_start_matches("unix:");
    let tcp_port = p.tcp.rsplit(':').next().unwrap_or_default();
    for (cause, target, errno, needle) in [
        ("socket-missing", &p.sock, "ENOENT (2)", sock_path),
        (
            "upstream-not-listening",
            &p.tcp,
            "ECONNREFUSED (111)",
            tcp_port,
        ),
    ] {
        let f = r.one(cause);
        assert_eq!(f["target"], target.as_str(), "{f:#}");
        assert_eq!(f["severity"], "fail", "{f:#}");
        assert_eq!(f["status"], status, "{f:#}");
        assert_eq!(f["proxy_comm"], comm, "{f:#}");
        assert_eq!(f["proxy_pid"], p.pid, "{f:#}");
        let first = f["evidence"][0].as_str().unwrap_or_default();
        let want = format!("{}:{}", p.conf.display(), line_with(&p.conf, needle));
        assert!(
            first.contains(&want),
            "the configuration line {want} first: {f:#}"
        );
        assert!(f["evidence"].to_string().contains(errno), "{f:#}");
        let fix = f["fix"].as_str().unwrap_or_default();
        assert!(!fix.is_empty() && !fix.contains("proxy_pass"), "{f:#}");
    }
}

fn app_log(stack: &lab::Stack) -> String {
    std::fs::read_to_string(stack.path("app.log")).unwrap_or_default()
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn check_haproxy_missing_socket_and_refused_port() {
    let _s = serial();
    let ns = netns();
    let mut stack = lab::Stack::new("check-haproxy").expect("stack");
    let p = start_other(
        &mut stack,
        &ns,
        "haproxy.cfg",
        "global\n\tlog stdout format raw local0\n\
         defaults\n\tmode http\n\tlog global\n\toption httplog\n\tretries 0\n\
         \ttimeout connect 2s\n\ttimeout client 5s\n\ttimeout server 5s\n\
         frontend www\n\tbind 127.0.0.1:{PORT}\n\tuse_backend sock if { path_beg /sock/ }\n\
         \tdefault_backend tcp\n\
         backend sock\n\tserver app unix@{SOCK}\n\
         backend tcp\n\tserver app {TCP}\n",
        "haproxy",
        &["-W", "-db", "-f", "{CONF}"],
        &[],
    );
    // HAProxy's own answer and log: 503, the server connection failed (SC).
    assert_eq!(get_in(&ns, stack.port, "/sock/x"), Some(503));
    assert_eq!(get_in(&ns, stack.port, "/tcp/x"), Some(503));
    std::thread::sleep(Duration::from_millis(200));
    let log = app_log(&stack);
    for backend in ["sock/app", "tcp/app"] {
        assert!(
            log.lines()
                .any(|l| l.contains(backend) && l.contains(" 503 ") && l.contains(" SC")),
            "haproxy's log of {backend}: {log}"
        );
    }
    assert_other_check(&ns, &p, "haproxy", 503);
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn check_caddy_missing_socket_and_refused_port() {
    let _s = serial();
    let ns = netns();
    let mut stack = lab::Stack::new("check-caddy").expect("stack");
    let home = stack.path("caddy").display().to_string();
    let p = start_other(
        &mut stack,
        &ns,
        "Caddyfile",
        "{\n\tadmin off\n\tauto_https off\n\tstorage file_system {DIR}/caddy\n}\n\n\
         http://:{PORT} {\n\
         \thandle /sock/* {\n\t\treverse_proxy unix/{SOCK}\n\t}\n\
         \thandle {\n\t\treverse_proxy {TCP}\n\t}\n}\n",
        "caddy",
        &["run", "--config", "{CONF}", "--adapter", "caddyfile"],
        &[
            ("HOME", home.clone()),
            ("XDG_DATA_HOME", home.clone()),
            ("XDG_CONFIG_HOME", home),
        ],
    );
    // Caddy's own answer and JSON log: 502, the dial error.
    assert_eq!(get_in(&ns, stack.port, "/sock/x"), Some(502));
    assert_eq!(get_in(&ns, stack.port, "/tcp/x"), Some(502));
    std::thread::sleep(Duration::from_millis(200));
    let log = app_log(&stack);
    let sock = p.sock.trim_start_matches("unix:");
    for want in [
        format!("dial unix {sock}: connect: no such file or directory"),
        format!("dial tcp {}: connect: connection refused", p.tcp),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(&want) && l.contains("\"status\":502")),
            "caddy's log: {want}: {log}"
        );
    }
    assert_other_check(&ns, &p, "caddy", 502);
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn check_apache_missing_socket_and_refused_port() {
    let _s = serial();
    let ns = netns();
    let mut stack = lab::Stack::new("check-apache").expect("stack");
    let m = "/usr/lib/apache2/modules";
    let conf = format!(
        "ServerRoot /etc/apache2\nServerName localhost\nPidFile {{DIR}}/apache.pid\n\
         DefaultRuntimeDir {{DIR}}\nMutex file:{{DIR}} default\nErrorLog {{DIR}}/apache-error.log\n\
         LogLevel warn\n\
         LoadModule mpm_event_module {m}/mod_mpm_event.so\n\
         LoadModule authz_core_module {m}/mod_authz_core.so\n\
         LoadModule proxy_module {m}/mod_proxy.so\n\
         LoadModule proxy_http_module {m}/mod_proxy_http.so\n\
         User www-data\nGroup www-data\nListen 127.0.0.1:{{PORT}}\n\
         ProxyPass /sock/ unix:{{SOCK}}|http://localhost/\n\
         ProxyPass /tcp/ http://{{TCP}}/\n"
    );
    let p = start_other(
        &mut stack,
        &ns,
        "apache.conf",
        &conf,
        "apache2",
        &["-f", "{CONF}", "-DFOREGROUND"],
        &[],
    );
    // Apache's own answer and error log: 503, mod_proxy's connect failures.
    assert_eq!(get_in(&ns, stack.port, "/sock/x"), Some(503));
    assert_eq!(get_in(&ns, stack.port, "/tcp/x"), Some(503));
    std::thread::sleep(Duration::from_millis(200));
    let log = std::fs::read_to_string(stack.path("apache-error.log")).unwrap_or_default();
    let sock = p.sock.trim_start_matches("unix:");
    for want in [
        format!(
            "(2)No such file or directory: AH02454: http: attempt to connect to Unix domain socket {sock}"
        ),
        format!(
            "(111)Connection refused: AH00957: http: attempt to connect to {}",
            p.tcp
        ),
    ] {
        assert!(log.contains(&want), "apache's error log: {want}: {log}");
    }
    assert_other_check(&ns, &p, "apache2", 503);
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn check_judges_a_proxy_in_a_netns_from_its_own_view() {
    let _s = serial();
    let mut stack = lab::Stack::new("check-netns").expect("stack");
    // The app listens on the host's loopback only; nginx lives in a namespace of its own.
    let target = format!("127.0.0.1:{}", free_port().expect("a free port"));
    stack.gunicorn(&target, &[], &[]).expect("gunicorn");
    stack.wait_listening(&target).expect("gunicorn listening");
    stack.upstream.clone_from(&target);
    let ns = stack.make_netns().expect("netns");
    stack.start_nginx().expect("nginx");
    let master = stack.nginx_pid.expect("nginx pid");
    // nginx's own view: refused, 502.
    assert_eq!(stack.get("/", Duration::from_secs(5)).status, Some(502));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        stack
            .nginx_errors()
            .iter()
            .any(|l| l.contains("(111: Connection refused)") && l.contains(&target)),
        "{:?}",
        stack.nginx_errors()
    );
    // gwtrace check from the host's namespace judges it from nginx's.
    let mut cmd = Command::new(gwtrace_bin!());
    cmd.args(["check", "--json", "--proxy", &master.to_string()]);
    let r = run_check(cmd);
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert_eq!(r.causes(), ["upstream-not-listening"], "{r:#?}");
    let f = r.one("upstream-not-listening");
    assert_eq!(f["target"], target.as_str());
    assert_eq!(f["status"], 502);
    let ev = f["evidence"].to_string();
    assert!(ev.contains("ECONNREFUSED (111)"), "{f:#}");
    let inode = gwtrace::host::netns::net_ns_of(&master.to_string()).expect("nginx's netns");
    assert!(
        ev.contains(&format!("net:[{inode}]")),
        "the evidence names nginx's namespace ({ns}): {f:#}"
    );
}

/// haproxy chrooted (`chroot` in `global`) resolves its unix server paths inside the chroot:
/// `server app unix@/run/gwlab-chroot-N/app.sock` is `JAIL/run/gwlab-chroot-N/app.sock` on the
/// host. With the app listening there, haproxy answers 200 and `gwtrace check` finds nothing
/// wrong (the host's own /run has no such socket: read outside the chroot it would be
/// `socket-missing`); with the app gone, haproxy answers 503 and check says `socket-missing`.
#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn check_haproxy_resolves_unix_servers_under_its_chroot() {
    use std::os::unix::fs::PermissionsExt as _;
    let _s = serial();
    let ns = netns();
    let mut stack = lab::Stack::new("check-haproxy-chroot").expect("stack");
    let jail = stack.path("jail");
    let inner = format!("/run/gwlab-chroot-{}", std::process::id());
    let host_dir = jail.join(inner.trim_start_matches('/'));
    std::fs::create_dir_all(&host_dir).expect("the chroot");
    std::fs::set_permissions(&host_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    assert!(
        !Path::new(&inner).exists(),
        "{inner} exists on the host: the test needs it absent"
    );
    let inner_sock = format!("{inner}/app.sock");
    let host_sock = format!("unix:{}/app.sock", host_dir.display());
    // The app in haproxy's network namespace (unix sockets are listed per namespace).
    let mut cmd = ns.command("setpriv");
    cmd.args([
        "--reuid",
        "gwapp",
        "--regid",
        "gwapp",
        "--init-groups",
        "/usr/bin/python3",
    ])
    .arg(stack.path("keepalive.py"))
    .args(["--bind", &host_sock, "--keep-alive", "5"]);
    let app = stack
        .spawn(&mut cmd)
        .expect("the app on the chroot's socket");
    let t0 = Instant::now();
    while std::os::unix::net::UnixStream::connect(host_dir.join("app.sock")).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the app never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let conf = format!(
        "global\n\tchroot {}\n\tlog stdout format raw local0\n\
         defaults\n\tmode http\n\tlog global\n\toption httplog\n\tretries 0\n\
         \ttimeout connect 2s\n\ttimeout client 5s\n\ttimeout server 5s\n\
         frontend www\n\tbind 127.0.0.1:{{PORT}}\n\tdefault_backend app\n\
         backend app\n\tserver app unix@{inner_sock}\n",
        jail.display()
    );
    let p = start_other(
        &mut stack,
        &ns,
        "haproxy.cfg",
        &conf,
        "haproxy",
        &["-W", "-db", "-f", "{CONF}"],
        &[],
    );
    assert_eq!(
        get_in(&ns, stack.port, "/"),
        Some(200),
        "{}",
        app_log(&stack)
    );
    let check = || {
        let mut cmd = ns.command(gwtrace_bin!());
        cmd.args(["check", "--json", "--proxy", &p.pid.to_string()]);
        run_check(cmd)
    };
    let r = check();
    assert!(
        !r.causes().contains(&"socket-missing") && r.code == Some(0),
        "the socket exists in haproxy's chroot: {r:#?}"
    );
    // The app gone, its socket removed: haproxy's own answer and log (503, SC), and check.
    stack.kill_group(app, libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(200));
    let _ = std::fs::remove_file(host_dir.join("app.sock"));
    assert_eq!(get_in(&ns, stack.port, "/"), Some(503));
    std::thread::sleep(Duration::from_millis(200));
    let log = app_log(&stack);
    assert!(
        log.lines()
            .any(|l| l.contains("app/app") && l.contains(" 503 ") && l.contains(" SC")),
        "haproxy's log: {log}"
    );
    let r = check();
    let f = r.one("socket-missing");
    assert_eq!(f["target"], format!("unix:{inner_sock}"), "{f:#}");
    assert_eq!(r.code, Some(1), "{r:#?}");
}
