//! Every scenario of the lab: how its stack is built, the fault injected once gwtrace is ready,
//! the requests that drive it, and what nginx and gwtrace must say.
use std::{
    os::unix::fs::PermissionsExt as _,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    http::{Response, http_get, http_post, read_answer, write_post_keepalive},
    stack::{ProxyKind, Stack, in_mount_namespace, wait_for, wait_unix_listed},
    support::free_port,
};

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
    pub(crate) build: fn(&mut Stack) -> anyhow::Result<()>,
    /// Fault injected after gwtrace is ready, before the requests.
    pub(crate) fault: Option<fn(&mut Stack) -> anyhow::Result<()>>,
    pub(crate) drive: fn(&Stack) -> Vec<Response>,
    /// More that gwtrace's stream must show: every JSON verdict line about this nginx, in
    /// order, and nginx's upstream; `Err` says what is missing.
    pub(crate) check: Option<Check>,
}

/// A scenario's extra check of gwtrace's verdict lines ([`Scenario::check`]).
pub(crate) type Check = fn(&[serde_json::Value], &str) -> Result<(), String>;

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
        free_port().unwrap_or(1)
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

/// One request that crashes the app, then steady requests (every 100 ms for 5 s) while its
/// supervisor loop starts it again.
fn crash_then_steady(s: &Stack) -> Vec<Response> {
    let mut out = vec![s.get("/crash", Duration::from_secs(10))];
    out.extend(sequential("/", 50, 100, Duration::from_secs(5))(s));
    out
}

/// One request that exhausts the app's memory cgroup, then steady requests while its
/// supervisor loop starts it again.
fn oom_then_steady(s: &Stack) -> Vec<Response> {
    let mut out = vec![s.get("/oom", Duration::from_secs(20))];
    out.extend(sequential("/", 50, 100, Duration::from_secs(5))(s));
    out
}

/// The oom-supervised verdict: the OOM kill, with the refused connects counted in it.
fn check_oom_supervised(lines: &[serde_json::Value], _upstream: &str) -> Result<(), String> {
    let v = final_of(lines, "worker-oom-killed")?;
    let count = v
        .get("count")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let summary = v.get("summary").and_then(|s| s.as_str()).unwrap_or("");
    if count < 2 || !summary.contains("failed while it was restarted") {
        return Err(format!(
            "the refused connects are not counted in the OOM kill (count {count}): {summary}"
        ));
    }
    Ok(())
}

/// Healthy requests while unrelated python processes of ours crash on the same host
/// (`kill -SEGV`, as a fault would end them): a plain script, and the worker of a gunicorn app
/// that no proxy fronts (an app server, so the old rule pinned its death on any proxy).
fn healthy_beside_a_crash(s: &Stack) -> Vec<Response> {
    use std::os::unix::process::CommandExt as _;
    let mut out = sequential("/", 5, 100, Duration::from_secs(5))(s);
    let bind = format!("127.0.0.1:{}", free_port().unwrap_or(1));
    let script = Command::new("/usr/bin/python3")
        .args(["-c", "import time; time.sleep(30)"])
        .spawn();
    let other = Command::new("gunicorn")
        .args(crate::stack::gunicorn_args(&bind))
        .arg("app:app")
        .current_dir(&s.dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    let segv = |pid: u32| {
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill(2) on a process this function started (or its forked worker).
            unsafe { libc::kill(pid, libc::SIGSEGV) };
        }
    };
    if let Ok(mut other) = other {
        let master = other.id();
        let worker = || {
            std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
                .ok()
                .and_then(|c| c.split_whitespace().next().and_then(|w| w.parse().ok()))
        };
        let _ = wait_for(
            "the other gunicorn's worker",
            Duration::from_secs(10),
            || worker().is_some() && std::net::TcpStream::connect(&bind).is_ok(),
        );
        if let Some(w) = worker() {
            segv(w);
        }
        std::thread::sleep(Duration::from_millis(500));
        if let Ok(pgid) = i32::try_from(master) {
            // SAFETY: kill(2) on the process group started just above.
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
        }
        let _ = other.wait();
    }
    if let Ok(mut child) = script {
        segv(child.id());
        let _ = child.wait();
    }
    out.extend(sequential("/", 10, 100, Duration::from_secs(5))(s));
    out
}

/// The crash-supervised verdict: the crash, with the refused connects counted in it.
fn check_crash_supervised(lines: &[serde_json::Value], _upstream: &str) -> Result<(), String> {
    let v = final_of(lines, "worker-crashed")?;
    let count = v
        .get("count")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let summary = v.get("summary").and_then(|s| s.as_str()).unwrap_or("");
    if count < 2 || !summary.contains("failed while it was restarted") {
        return Err(format!(
            "the refused connects are not counted in the crash (count {count}): {summary}"
        ));
    }
    if !evidence_has(v, "SIGSEGV") {
        return Err("the crash's signal is not in the evidence".into());
    }
    Ok(())
}

/// The uwsgi-harakiri verdict names uwsgi's own setting and its value.
fn check_harakiri(lines: &[serde_json::Value], _upstream: &str) -> Result<(), String> {
    let v = final_of(lines, "worker-timeout")?;
    if !evidence_has(v, "--harakiri 2") || !evidence_has(v, "SIGKILL") {
        return Err(format!(
            "the verdict does not name --harakiri 2 and the SIGKILL: {v}"
        ));
    }
    Ok(())
}

/// gunicorn at `s.upstream` with --timeout 2, its view sleeping 15 s.
fn timeout_build(s: &mut Stack) -> anyhow::Result<()> {
    let bind = s.upstream.clone();
    s.gunicorn(&bind, &["--timeout", "2"], &[("GWLAB_SLOW", "15")])?;
    s.wait_listening(&bind)
}

/// gunicorn at `s.upstream` in a 200 MiB memory cgroup, a request allocating 1 GiB.
fn oom_build(s: &mut Stack) -> anyhow::Result<()> {
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
}

/// Both sites, in turn: site A at `/` (the broken one), site B at `/b/`.
fn two_sites(s: &Stack) -> Vec<Response> {
    let mut out = Vec::new();
    for _ in 0..5 {
        out.push(s.get("/", Duration::from_secs(5)));
        out.push(s.get("/b/", Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(150));
    }
    out
}

/// Two free loopback ports one digit apart (8001 and 8002): without the proxy's
/// configuration, the second would be a near miss of the first.
fn neighbour_ports() -> anyhow::Result<(u16, u16)> {
    for _ in 0..100 {
        let a = free_port()?;
        let b = a - a % 10 + (a % 10 + 1) % 10;
        if std::net::TcpListener::bind(("127.0.0.1", b)).is_ok() {
            return Ok((a, b));
        }
    }
    anyhow::bail!("no two free neighbouring ports on 127.0.0.1")
}

/// Another site of the same nginx at `/b/`, in front of a healthy gunicorn on `bind`: its
/// target is never to be blamed or pointed at.
fn other_site(s: &mut Stack, bind: &str) -> anyhow::Result<()> {
    s.gunicorn(bind, &[], &[])?;
    s.wait_listening(bind)?;
    s.sites.push(("/b/".to_owned(), bind.to_owned()));
    s.innocent.push(bind.to_owned());
    Ok(())
}

/// The verdict carries the status the proxy itself answers: 503 for haproxy, 502 for Caddy.
fn check_status_503_or_502(lines: &[serde_json::Value], _upstream: &str) -> Result<(), String> {
    let v = lines
        .iter()
        .find(|v| v.get("final").is_some())
        .or_else(|| lines.last())
        .ok_or("no verdict")?;
    let comm = v.get("proxy_comm").and_then(|c| c.as_str()).unwrap_or("");
    let want = if comm == "haproxy" { 503 } else { 502 };
    match v.get("status").and_then(serde_json::Value::as_u64) {
        Some(s) if s == want => Ok(()),
        other => Err(format!(
            "{comm}'s verdict says status {other:?}, {comm} answers {want}"
        )),
    }
}

fn unix_sock(s: &mut Stack) -> String {
    format!("unix:{}", s.path("app.sock").display())
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

/// A restart whose supervisor waits `gap` seconds between the old app's stop and the new one.
fn restart_build(s: &mut Stack, gap: &str) -> anyhow::Result<()> {
    s.upstream = unix_sock(s);
    let g = format!(
        "gunicorn --bind {} --workers 1 --user gwapp --group gwapp app:app",
        s.upstream
    );
    // The supervisor (systemctl restart without ExecReload=): run the app, stop it when told
    // (SIGTERM: it removes its socket), wait, start a new one (a new process that execs
    // gunicorn) on the same socket.
    let script = format!(
        "{g} & pid=$!; while [ ! -e {t} ]; do sleep 0.05; done; kill -TERM $pid; wait $pid; \
         sleep {gap}; {g}",
        t = s.path("restart").display()
    );
    s.spawn(Command::new("sh").arg("-c").arg(script))?;
    let bind = s.upstream.clone();
    s.wait_listening(&bind)
}

/// nginx and gunicorn in a network namespace of their own, gunicorn on a fresh port there;
/// then `rule` (`reject with tcp reset`, `drop`) on that port in the namespace's input hook.
fn netns_app_behind_rule(s: &mut Stack, rule: &str) -> anyhow::Result<()> {
    s.make_netns()?;
    let port = free_port()?;
    s.upstream = format!("127.0.0.1:{port}");
    let mut g = s.in_net("gunicorn");
    g.args(crate::stack::gunicorn_args(&s.upstream))
        .arg("app:app");
    s.spawn(&mut g)?;
    let bind = s.upstream.clone();
    s.wait_listening(&bind)?;
    s.nft(&format!(
        "add table inet gwlab; add chain inet gwlab input {{ type filter hook input priority 0; }}; \
         add rule inet gwlab input tcp dport {port} {rule}"
    ))
}

/// The final verdict of `cause` among the lines.
fn final_of<'a>(
    lines: &'a [serde_json::Value],
    cause: &str,
) -> Result<&'a serde_json::Value, String> {
    lines
        .iter()
        .rev()
        .find(|v| v["cause"] == cause && v.get("final").is_some())
        .ok_or_else(|| format!("no final {cause} verdict"))
}

fn evidence_has(v: &serde_json::Value, needle: &str) -> bool {
    v["evidence"].as_array().is_some_and(|e| {
        e.iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains(needle)))
    })
}

/// The verdict names nginx's network namespace, which is not the host's.
fn names_netns(v: &serde_json::Value) -> Result<(), String> {
    if v.get("proxy_net_ns")
        .and_then(serde_json::Value::as_u64)
        .is_none()
    {
        return Err(format!("no proxy_net_ns in {v}"));
    }
    if !evidence_has(v, "runs in network namespace net:[") {
        return Err(format!(
            "no evidence naming nginx's network namespace in {v}"
        ));
    }
    Ok(())
}

/// Nothing listens in nginx's namespace: the host's listener on the same port is not named.
fn check_not_listening_in_netns(lines: &[serde_json::Value], upstream: &str) -> Result<(), String> {
    let v = final_of(lines, "upstream-not-listening")?;
    names_netns(v)?;
    if !evidence_has(
        v,
        &format!("no process listens on {upstream} in its network namespace"),
    ) {
        return Err(format!(
            "no 'nothing listens in its namespace' evidence in {v}"
        ));
    }
    if evidence_has(v, &format!("listens on {upstream} now")) {
        return Err(format!("the host's listener was taken for nginx's: {v}"));
    }
    Ok(())
}

/// The rule is named, and the listener it hides.
fn check_firewall_reject(lines: &[serde_json::Value], upstream: &str) -> Result<(), String> {
    let v = final_of(lines, "firewall-reject")?;
    names_netns(v)?;
    if !evidence_has(
        v,
        &format!("listens on {upstream}: the connection never reached it"),
    ) {
        return Err(format!("the listener behind the rule is not named: {v}"));
    }
    Ok(())
}

fn check_firewall_drop(lines: &[serde_json::Value], _upstream: &str) -> Result<(), String> {
    let v = final_of(lines, "connect-timeout")?;
    names_netns(v)?;
    if !evidence_has(v, "dropped by a netfilter rule") {
        return Err(format!("no 'dropped by a netfilter rule' evidence: {v}"));
    }
    Ok(())
}

/// The verdict printed during the outage is marked superseded by the restart's.
fn check_superseded(lines: &[serde_json::Value], _upstream: &str) -> Result<(), String> {
    let restarting: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["cause"] == "upstream-restarting")
        .filter_map(|v| v.get("id"))
        .collect();
    if restarting.is_empty() {
        return Err("no upstream-restarting verdict with an id".into());
    }
    let superseded = lines.iter().find(|v| {
        v["state"] == "superseded"
            && v["cause"] != "upstream-restarting"
            && v.get("superseded_by")
                .is_some_and(|by| restarting.contains(&by))
    });
    match superseded {
        Some(_) => Ok(()),
        None => Err(format!(
            "no earlier verdict marked superseded by the restart's ({} lines: {:?})",
            lines.len(),
            lines
                .iter()
                .map(|v| format!("{} {} {}", v["id"], v["cause"], v["state"]))
                .collect::<Vec<_>>()
        )),
    }
}

/// nginx in front of `keepalive.py` over TCP through an upstream block with `keepalive 8`:
/// the app closes idle connections after 1 s, its sweep 0.3 s late.
fn keepalive_build(s: &mut Stack) -> anyhow::Result<()> {
    let port = free_port()?;
    s.upstream = format!("127.0.0.1:{port}");
    s.upstream_keepalive = Some(8);
    let bind = s.upstream.clone();
    s.keepalive_app(&bind, "1", "0.3")?;
    s.wait_listening(&bind)
}

/// nginx in front of `keepalive.py` as [`keepalive_build`], the app closing an idle connection
/// after 1 s with no sweep lag: a FIN (nothing unread), the order where the close comes first.
fn keepalive_fin_build(s: &mut Stack) -> anyhow::Result<()> {
    let port = free_port()?;
    s.upstream = format!("127.0.0.1:{port}");
    s.upstream_keepalive = Some(8);
    let bind = s.upstream.clone();
    s.keepalive_app(&bind, "1", "0")?;
    s.wait_listening(&bind)
}

/// nginx's connections to `app_port` in `CLOSE_WAIT` (the app's FIN arrived and nginx has not
/// closed them yet), from the worker's own network namespace's table.
fn close_wait_to(worker: u32, app_port: u16) -> usize {
    let table = std::fs::read_to_string(format!("/proc/{worker}/net/tcp")).unwrap_or_default();
    let remote = format!(":{app_port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            c.len() > 3 && c[2].ends_with(&remote) && c[3] == "08"
        })
        .count()
}

/// Sends `sig` to nginx's worker.
fn signal_worker(worker: u32, sig: i32) {
    let Ok(pid) = i32::try_from(worker) else {
        return;
    };
    // SAFETY: kill(2) on a pid of this stack's nginx worker; no memory is shared.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// One round of the FIN-before-request order: a POST on a kept-alive client connection leaves
/// nginx an idle upstream connection; 0.6 s later nginx's worker is frozen (SIGSTOP) and the
/// next POST written on the client connection; the app's idle close (1 s) sends its FIN; once
/// it has arrived (nginx's socket in `CLOSE_WAIT`) the worker resumes (SIGCONT) with the client's
/// request ahead of the FIN in its event queue, so it sends the request on the closed
/// connection before it notices the close. In the wild that window is the microseconds
/// between the FIN's arrival and nginx's event loop; the freeze holds it open.
fn fin_round(port: u16, worker: u32, app_port: u16) -> Vec<Response> {
    let mut out = Vec::new();
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return out;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let first = write_post_keepalive(&mut c, "/orders")
        .ok()
        .and_then(|()| read_answer(&mut c));
    out.push(Response {
        status: first,
        at: Instant::now(),
    });
    std::thread::sleep(Duration::from_millis(600));
    signal_worker(worker, libc::SIGSTOP);
    let wrote = write_post_keepalive(&mut c, "/orders");
    let t0 = Instant::now();
    while close_wait_to(worker, app_port) == 0 && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(2));
    }
    signal_worker(worker, libc::SIGCONT);
    let second = wrote.ok().and_then(|()| read_answer(&mut c));
    out.push(Response {
        status: second,
        at: Instant::now(),
    });
    std::thread::sleep(Duration::from_millis(200));
    out
}

/// Three rounds of [`fin_round`].
fn fin_before_request(s: &Stack) -> Vec<Response> {
    let worker = s.nginx_pid.and_then(|m| {
        std::fs::read_to_string(format!("/proc/{m}/task/{m}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    });
    let app_port = s.upstream.rsplit(':').next().and_then(|p| p.parse().ok());
    let (Some(worker), Some(app_port)) = (worker, app_port) else {
        return Vec::new();
    };
    let port = s.port;
    s.on_net(|| {
        (0..3)
            .flat_map(|_| fin_round(port, worker, app_port))
            .collect()
    })
    .unwrap_or_default()
}

/// The FIN-first race's verdict: every broken connection was closed by the app with a FIN the
/// request crossed, held by nginx's worker, and the verdict names the measured idle timeout.
fn check_fin_race(lines: &[serde_json::Value], upstream: &str) -> Result<(), String> {
    let v = final_of(lines, "keepalive-race")?;
    let broken = v["broken_connections"]
        .as_array()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("no broken_connections in {v}"))?;
    for b in broken {
        held_by_nginx_worker(b, v)?;
        let before = b["close_after_send_ns"].as_i64().is_some_and(|d| d < 0);
        if b["target"] != upstream || b["peer_close"] != "fin_then_rst" || !before {
            return Err(format!(
                "broken connection is not the app's FIN before the request: {b}"
            ));
        }
    }
    if !evidence_has(
        v,
        "the app closed idle connections 1.0 s after its last answer",
    ) {
        return Err(format!("the idle timeout mismatch is not named: {v}"));
    }
    Ok(())
}

/// POSTs `gap_ms` apart (after each answer).
fn posts(n: usize, gap_ms: u64) -> impl Fn(&Stack) -> Vec<Response> {
    move |s| {
        (0..n)
            .map(|_| {
                let r = s.post("/orders", Duration::from_secs(5));
                std::thread::sleep(Duration::from_millis(gap_ms));
                r
            })
            .collect()
    }
}

/// 8 clients, 15 POSTs each, back to back.
fn concurrent_posts(s: &Stack) -> Vec<Response> {
    let port = s.port;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                (0..15)
                    .map(|_| Response {
                        status: http_post(port, "/orders", Duration::from_secs(5)),
                        at: Instant::now(),
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect()
}

/// The recycling's verdict lists broken connections closed by gunicorn workers that exited.
fn check_recycled(lines: &[serde_json::Value], upstream: &str) -> Result<(), String> {
    let v = lines
        .iter()
        .rev()
        .find(|v| v["cause"] == "upstream-closed-early")
        .ok_or("no upstream-closed-early line")?;
    let broken = v["broken_connections"]
        .as_array()
        .ok_or_else(|| format!("no broken_connections in {v}"))?;
    let named = broken
        .iter()
        .filter(|b| b["target"] == upstream && b["upstream_comm"] == "gunicorn")
        .count();
    if named == 0 || !v.to_string().contains("--max-requests is 20") {
        return Err(format!("the recycling gunicorn workers are not named: {v}"));
    }
    Ok(())
}

/// The keep-alive race's verdict lists its broken connections, each held by nginx's worker
/// (not the master the verdict names) to the upstream, closed by the app.
fn check_broken_connections(lines: &[serde_json::Value], upstream: &str) -> Result<(), String> {
    let v = lines
        .iter()
        .rev()
        .find(|v| v["cause"] == "keepalive-race")
        .ok_or("no keepalive-race line")?;
    let broken = v["broken_connections"]
        .as_array()
        .ok_or_else(|| format!("no broken_connections in {v}"))?;
    if broken.is_empty() || broken.len() as u64 != v["count"].as_u64().unwrap_or(0) {
        return Err(format!(
            "{} broken connections for count {}",
            broken.len(),
            v["count"]
        ));
    }
    for b in broken {
        held_by_nginx_worker(b, v)?;
        if b["target"] != upstream
            || b["upstream_pid"].as_u64().is_none()
            || b["peer_close"] != "rst"
        {
            return Err(format!(
                "broken connection does not name the app's close: {b}"
            ));
        }
    }
    Ok(())
}

/// A broken connection of verdict `v` was held by one of nginx's workers (not the master the
/// verdict names).
fn held_by_nginx_worker(b: &serde_json::Value, v: &serde_json::Value) -> Result<(), String> {
    let worker = b["proxy_pid"].as_u64().unwrap_or(0);
    let comm = std::fs::read_to_string(format!("/proc/{worker}/comm")).unwrap_or_default();
    if worker == 0 || b["proxy_pid"] == v["proxy_pid"] || comm.trim() != "nginx" {
        return Err(format!(
            "broken connection not held by an nginx worker: {b} (comm {comm:?})"
        ));
    }
    Ok(())
}

/// The final `cause` verdict of a worker's death over TCP lists the proxy connection the
/// dying worker held: nginx's worker, to the upstream, closed by the dead worker.
fn death_broke(lines: &[serde_json::Value], upstream: &str, cause: &str) -> Result<(), String> {
    let v = final_of(lines, cause)?;
    let broken = v["broken_connections"]
        .as_array()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("no broken_connections in {v}"))?;
    for b in broken {
        held_by_nginx_worker(b, v)?;
        if b["target"] != upstream || b["upstream_pid"] != v["upstream_pid"] {
            return Err(format!(
                "broken connection does not name the dead worker's close of {upstream}: {b}"
            ));
        }
    }
    Ok(())
}

/// [`check_harakiri`] over TCP, plus the broken connection.
fn check_harakiri_tcp(lines: &[serde_json::Value], upstream: &str) -> Result<(), String> {
    check_harakiri(lines, upstream)?;
    death_broke(lines, upstream, "worker-timeout")
}

/// gunicorn's timeout kill over TCP lists the broken connection.
fn check_timeout_tcp(lines: &[serde_json::Value], upstream: &str) -> Result<(), String> {
    death_broke(lines, upstream, "worker-timeout")
}

/// The OOM kill over TCP lists the broken connection.
fn check_oom_tcp(lines: &[serde_json::Value], upstream: &str) -> Result<(), String> {
    death_broke(lines, upstream, "worker-oom-killed")
}

/// The chrooted haproxy's verdict says where its path is: under its chroot.
fn check_chroot(lines: &[serde_json::Value], upstream: &str) -> Result<(), String> {
    check_status_503_or_502(lines, upstream)?;
    let v = final_of(lines, "socket-missing")?;
    let summary = v["summary"].as_str().unwrap_or("");
    if !summary.contains("does not exist in haproxy's chroot ")
        || !summary.contains("outside it")
        || !evidence_has(v, "runs chrooted in ")
    {
        return Err(format!(
            "the verdict does not name haproxy's chroot and the app outside it: {v}"
        ));
    }
    if evidence_has(v, "is listened on") {
        return Err(format!(
            "the app outside the chroot was taken for the target working again: {v}"
        ));
    }
    Ok(())
}

/// Every scenario, in the order.
#[expect(
    clippy::too_many_lines,
    reason = "one table of scenarios reads better than many functions"
)]
#[must_use]
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
            check: None,
        },
        Scenario {
            name: "tcp-refused",
            expect: Some("upstream-not-listening"),
            nginx_log: "(111: Connection refused)",
            status: 502,
            about: "gunicorn stopped, TCP upstream",
            secs: 5,
            build: |s| {
                s.upstream = format!("127.0.0.1:{}", free_port()?);
                Ok(())
            },
            fault: None,
            drive: five_gets,
            check: None,
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
            check: None,
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
            check: None,
        },
        Scenario {
            name: "two-sites-tcp",
            expect: Some("upstream-not-listening"),
            nginx_log: "(111: Connection refused)",
            status: 502,
            about: "two sites, two apps on neighbouring ports: site A's app is down, site B's answers",
            secs: 6,
            build: |s| {
                let (a, b) = neighbour_ports()?;
                s.upstream = format!("127.0.0.1:{a}");
                other_site(s, &format!("127.0.0.1:{b}"))
            },
            fault: None,
            drive: two_sites,
            check: None,
        },
        Scenario {
            name: "two-sites-unix",
            expect: Some("socket-missing"),
            nginx_log: "(2: No such file or directory)",
            status: 502,
            about: "two sites, two apps on app.sock in sibling directories: site A's is gone, site B's answers",
            secs: 6,
            build: |s| {
                std::fs::create_dir_all(s.path("site-a"))?;
                std::fs::create_dir_all(s.path("site-b"))?;
                s.upstream = format!("unix:{}", s.path("site-a/app.sock").display());
                let b = format!("unix:{}", s.path("site-b/app.sock").display());
                other_site(s, &b)
            },
            fault: None,
            drive: two_sites,
            check: None,
        },
        Scenario {
            name: "several-apps-mismatch",
            expect: Some("wrong-target"),
            nginx_log: "(2: No such file or directory)",
            status: 502,
            about: "three apps; site A's gunicorn binds another socket name in A's directory: a genuine mismatch",
            secs: 6,
            build: |s| {
                std::fs::create_dir_all(s.path("site-a"))?;
                s.upstream = format!("unix:{}", s.path("site-a/app.sock").display());
                let real = format!("unix:{}", s.path("site-a/gunicorn.sock").display());
                s.gunicorn(&real, &[], &[])?;
                s.wait_listening(&real)?;
                // An app no site uses, and site B's.
                let spare = format!("127.0.0.1:{}", free_port()?);
                s.gunicorn(&spare, &[], &[])?;
                s.wait_listening(&spare)?;
                s.innocent.push(spare);
                let (_, b) = neighbour_ports()?;
                other_site(s, &format!("127.0.0.1:{b}"))
            },
            fault: None,
            drive: two_sites,
            check: None,
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
            check: None,
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
            check: None,
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
            check: None,
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
                timeout_build(s)
            },
            fault: None,
            drive: slow_get,
            check: None,
        },
        Scenario {
            name: "worker-timeout-tcp",
            expect: Some("worker-timeout"),
            nginx_log: "upstream prematurely closed connection",
            status: 502,
            about: "gunicorn --timeout 2 over TCP: the verdict lists nginx's connection the killed worker held",
            secs: 8,
            build: |s| {
                s.upstream = format!("127.0.0.1:{}", free_port()?);
                timeout_build(s)
            },
            fault: None,
            drive: slow_get,
            check: Some(check_timeout_tcp),
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
                oom_build(s)
            },
            fault: None,
            drive: oom_get,
            check: None,
        },
        Scenario {
            name: "worker-oom-tcp",
            expect: Some("worker-oom-killed"),
            nginx_log: "upstream prematurely closed connection",
            status: 502,
            about: "the OOM kill over TCP: the verdict lists nginx's connection the killed worker held",
            secs: 8,
            build: |s| {
                s.upstream = format!("127.0.0.1:{}", free_port()?);
                oom_build(s)
            },
            fault: None,
            drive: oom_get,
            check: Some(check_oom_tcp),
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
            check: None,
        },
        Scenario {
            name: "uwsgi-harakiri",
            expect: Some("worker-timeout"),
            nginx_log: "upstream prematurely closed connection",
            status: 502,
            about: "a view sleeps past uwsgi --harakiri 2: its master sends SIGUSR2, then SIGKILL",
            secs: 9,
            build: |s| {
                s.upstream = unix_sock(s);
                let bind = s.upstream.clone();
                s.uwsgi(&bind, &["--harakiri", "2"], &[("GWLAB_SLOW", "15")])?;
                s.wait_listening(&bind)
            },
            fault: None,
            drive: slow_get,
            check: Some(check_harakiri),
        },
        Scenario {
            name: "uwsgi-harakiri-tcp",
            expect: Some("worker-timeout"),
            nginx_log: "upstream prematurely closed connection",
            status: 502,
            about: "uwsgi --harakiri 2 over TCP: its master SIGKILLs the busy worker",
            secs: 9,
            build: |s| {
                s.upstream = format!("127.0.0.1:{}", free_port()?);
                let bind = s.upstream.clone();
                s.uwsgi(&bind, &["--harakiri", "2"], &[("GWLAB_SLOW", "15")])?;
                s.wait_listening(&bind)
            },
            fault: None,
            drive: slow_get,
            check: Some(check_harakiri_tcp),
        },
        Scenario {
            name: "crash-supervised",
            expect: Some("worker-crashed"),
            nginx_log: "upstream prematurely closed connection",
            status: 502,
            about: "uvicorn segfaults; its supervisor loop restarts it; nginx refused meanwhile",
            secs: 8,
            build: |s| {
                s.upstream = unix_sock(s);
                let script = format!(
                    "while true; do /usr/bin/python3 -m uvicorn --uds {} --lifespan off asgi:app; sleep 1; done",
                    s.path("app.sock").display()
                );
                s.spawn(Command::new("sh").arg("-c").arg(script))?;
                let bind = s.upstream.clone();
                s.wait_listening(&bind)
            },
            fault: None,
            drive: crash_then_steady,
            check: Some(check_crash_supervised),
        },
        Scenario {
            name: "oom-supervised",
            expect: Some("worker-oom-killed"),
            nginx_log: "upstream prematurely closed connection",
            status: 502,
            about: "uvicorn allocates past its memory cgroup's limit; its supervisor loop restarts it",
            secs: 9,
            build: |s| {
                s.upstream = unix_sock(s);
                let cg = s.memcg(200)?;
                let script = format!(
                    "echo $$ > {}/cgroup.procs && while true; do /usr/bin/python3 -m uvicorn --uds {} --lifespan off \
                     asgi:app; sleep 1; done",
                    cg.display(),
                    s.path("app.sock").display()
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
            drive: oom_then_steady,
            check: Some(check_oom_supervised),
        },
        Scenario {
            name: "unrelated-crash",
            expect: None,
            nginx_log: "",
            status: 200,
            about: "a healthy nginx while unrelated python processes (a script, another gunicorn's worker) crash",
            secs: 5,
            build: |s| {
                s.upstream = unix_sock(s);
                let bind = s.upstream.clone();
                s.gunicorn(&bind, &[], &[])?;
                s.wait_listening(&bind)
            },
            fault: None,
            drive: healthy_beside_a_crash,
            check: None,
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
            check: None,
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
            check: None,
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
            check: None,
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
            check: None,
        },
        Scenario {
            name: "restart-window",
            expect: Some("upstream-restarting"),
            nginx_log: "connect() to unix:",
            status: 502,
            about: "non-graceful restart under steady traffic: gunicorn stopped, no socket for 1.5 s, a new one binds",
            secs: 10,
            build: |s| restart_build(s, "1.5"),
            fault: None,
            drive: restart_drive,
            check: None,
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
            check: None,
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
            check: None,
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
            check: None,
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
            check: None,
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
            check: None,
        },
        Scenario {
            name: "healthy-with-noise",
            expect: None,
            nginx_log: "",
            status: 200,
            about: "healthy traffic while unrelated processes fail connects",
            secs: 5,
            build: |s| {
                let port = free_port()?;
                s.upstream = format!("127.0.0.1:{port}");
                let bind = s.upstream.clone();
                s.gunicorn(&bind, &[], &[])?;
                s.wait_listening(&bind)
            },
            fault: None,
            drive: healthy_with_noise,
            check: None,
        },
        Scenario {
            name: "netns-not-listening",
            expect: Some("upstream-not-listening"),
            nginx_log: "(111: Connection refused)",
            status: 502,
            about: "nginx in its own network namespace, its app not listening there; the same port is listened on in the host's",
            secs: 5,
            build: |s| {
                s.upstream = format!("127.0.0.1:{}", free_port()?);
                // Another process on the host's loopback, same port: not nginx's upstream.
                let bind = s.upstream.clone();
                s.gunicorn(&bind, &[], &[])?;
                s.wait_listening(&bind)?;
                s.make_netns()?;
                Ok(())
            },
            fault: None,
            drive: five_gets,
            check: Some(check_not_listening_in_netns),
        },
        Scenario {
            name: "netns-firewall-reject",
            expect: Some("firewall-reject"),
            nginx_log: "(111: Connection refused)",
            status: 502,
            about: "nginx and gunicorn in a network namespace; an nftables reject rule there refuses nginx's connects",
            secs: 5,
            build: |s| netns_app_behind_rule(s, "reject with tcp reset"),
            fault: None,
            drive: five_gets,
            check: Some(check_firewall_reject),
        },
        Scenario {
            name: "netns-firewall-drop",
            expect: Some("connect-timeout"),
            nginx_log: "upstream timed out (110: Connection timed out) while connecting to upstream",
            status: 504,
            about: "nginx and gunicorn in a network namespace; an nftables drop rule there swallows nginx's SYNs",
            secs: 7,
            build: |s| {
                s.nginx_extra = "proxy_connect_timeout 1s;".into();
                netns_app_behind_rule(s, "drop")
            },
            fault: None,
            drive: |s| sequential("/", 4, 100, Duration::from_secs(5))(s),
            check: Some(check_firewall_drop),
        },
        Scenario {
            name: "caddy-socket-missing",
            expect: Some("socket-missing"),
            nginx_log: "connect: no such file or directory",
            status: 502,
            about: "Caddy (not nginx) in front of a gunicorn that is not running: its unix socket is gone",
            secs: 5,
            build: |s| {
                s.proxy = ProxyKind::Caddy;
                s.upstream = unix_sock(s);
                Ok(())
            },
            fault: None,
            drive: five_gets,
            check: Some(check_status_503_or_502),
        },
        Scenario {
            name: "haproxy-tcp-refused",
            expect: Some("upstream-not-listening"),
            nginx_log: " SC-- ",
            status: 503,
            about: "HAProxy (not nginx) in front of a TCP port nothing listens on: it answers 503",
            secs: 5,
            build: |s| {
                s.proxy = ProxyKind::Haproxy;
                s.upstream = format!("127.0.0.1:{}", free_port()?);
                Ok(())
            },
            fault: None,
            drive: five_gets,
            check: Some(check_status_503_or_502),
        },
        Scenario {
            name: "haproxy-chroot-socket-missing",
            expect: Some("socket-missing"),
            nginx_log: " SC-- ",
            status: 503,
            about: "HAProxy chrooted (chroot in global) in front of a gunicorn listening on the host's path: inside the chroot the socket does not exist",
            secs: 6,
            build: |s| {
                s.proxy = ProxyKind::Haproxy;
                let jail = s.path("jail");
                std::fs::create_dir_all(&jail)?;
                s.haproxy_chroot = Some(jail);
                s.upstream = unix_sock(s);
                let bind = s.upstream.clone();
                s.gunicorn(&bind, &[], &[])?;
                s.wait_listening(&bind)
            },
            fault: None,
            drive: five_gets,
            check: Some(check_chroot),
        },
        Scenario {
            name: "keepalive-race",
            expect: Some("keepalive-race"),
            nginx_log: "recv() failed (104: Connection reset by peer) while reading response header from upstream",
            status: 502,
            about: "nginx keeps upstream connections alive (keepalive 8, HTTP/1.1); the app closes idle ones after 1 s, its sweep 0.3 s late; POSTs 1.15 s apart land on connections being closed",
            secs: 8,
            build: keepalive_build,
            fault: None,
            drive: |s| posts(5, 1150)(s),
            check: Some(check_broken_connections),
        },
        Scenario {
            name: "keepalive-fin-race",
            expect: Some("keepalive-race"),
            nginx_log: "upstream prematurely closed connection while reading response header from upstream",
            status: 502,
            about: "the FIN-first order: the app (keep-alive 1 s) closes an idle upstream connection with a FIN after nginx took the next POST and before it noticed the close (its worker frozen over the FIN's arrival); nginx writes on the closed connection and reads EOF",
            secs: 9,
            build: keepalive_fin_build,
            fault: None,
            drive: fin_before_request,
            check: Some(check_fin_race),
        },
        Scenario {
            name: "keepalive-healthy",
            expect: None,
            nginx_log: "",
            status: 200,
            about: "the same keep-alive stack, POSTs inside the app's keep-alive and after its close: nginx sees each idle close in time",
            secs: 8,
            build: keepalive_build,
            fault: None,
            drive: |s| {
                let mut out = posts(4, 300)(s);
                out.extend(posts(3, 1600)(s));
                out
            },
            check: None,
        },
        Scenario {
            name: "worker-recycling",
            expect: Some("upstream-closed-early"),
            nginx_log: "recv() failed (104: Connection reset by peer) while reading response header from upstream",
            status: 502,
            about: "gunicorn gthread --max-requests 20 behind nginx upstream keepalive, 8 clients POSTing: each recycled worker closes connections nginx just wrote on",
            secs: 8,
            build: |s| {
                let port = free_port()?;
                s.upstream = format!("127.0.0.1:{port}");
                s.upstream_keepalive = Some(8);
                let bind = s.upstream.clone();
                s.gunicorn(
                    &bind,
                    &[
                        "-k",
                        "gthread",
                        "--threads",
                        "4",
                        "--keep-alive",
                        "5",
                        "--max-requests",
                        "20",
                    ],
                    &[],
                )?;
                s.wait_listening(&bind)
            },
            fault: None,
            drive: concurrent_posts,
            check: Some(check_recycled),
        },
        Scenario {
            name: "restart-superseded",
            expect: Some("upstream-restarting"),
            nginx_log: "connect() to unix:",
            status: 502,
            about: "a restart with 3 s of outage: the verdict of the outage is superseded by the restart's in the JSON stream",
            secs: 11,
            build: |s| restart_build(s, "3"),
            fault: None,
            drive: restart_drive,
            check: Some(check_superseded),
        },
    ]
}
