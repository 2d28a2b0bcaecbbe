//! `gwtrace serve` end to end (root): a real nginx in front of a stopped upstream fails its
//! connects, `gwtrace serve` counts them, a real Prometheus (Debian's `prometheus`, installed by
//! `cargo xtask setup`) scrapes it every second, and the series is queried through Prometheus'
//! HTTP API; `promtool check metrics` lints the exposition. Also: a taken port is one line and
//! exit code 2.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use gwtrace_lab::{
    self as lab, gwtrace_bin,
    support::{free_port, require_root},
};

/// A child this test started, ended by its pid when the test ends (pass or fail).
struct Started {
    name: &'static str,
    child: Child,
}

impl Started {
    fn spawn(name: &'static str, cmd: &mut Command) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        Self { name, child }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    /// SIGTERM, then waits up to `timeout` for the exit status; SIGKILL after that.
    fn stop(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on the pid of our own child, not yet reaped.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM: killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Percent-encodes a query parameter value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A bounded HTTP/1.0 GET on loopback: (status, body), or None when nothing answered.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Runs an instant query; the values of the result vector (empty while there is none).
fn query(prom_port: u16, promql: &str) -> Vec<f64> {
    let Some((200, body)) = get(
        prom_port,
        &format!("/api/v1/query?query={}", urlencode(promql)),
    ) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `f` returns Some, polling; panics with `what` and `context()` on timeout.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Starts `gwtrace serve` and waits for its ready line; stderr lines keep arriving on the
/// returned channel.
fn start_gwtrace(metrics_port: u16, dir: &Path) -> (Started, mpsc::Receiver<String>) {
    let mut g = Started::spawn(
        "gwtrace serve",
        Command::new(gwtrace_bin!())
            .args(["serve", "--metrics", &format!("127.0.0.1:{metrics_port}")])
            .arg("--record")
            .arg(dir.join("events.jsonl"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stderr = g.child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let ready = line.contains("tracing;") && line.contains("/metrics");
                seen.push(line);
                if ready {
                    break;
                }
            }
            Err(e @ (mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected)) => {
                panic!("gwtrace serve never said it was tracing ({e}): {seen:#?}")
            }
        }
    }
    (g, rx)
}

/// Starts Prometheus in `prom_dir`, scraping gwtrace on `metrics_port` every second; it and its port.
fn start_prometheus(prom_dir: &Path, metrics_port: u16) -> (Started, u16) {
    let prom_port = free_port().expect("a free port");
    std::fs::create_dir_all(prom_dir.join("data")).expect("prometheus dir");
    let config = prom_dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: gwtrace\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .expect("prometheus.yml");
    let prom_log = prom_dir.join("prometheus.log");
    let log = std::fs::File::create(&prom_log).expect("prometheus log");
    let prom = Started::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log),
    );
    (prom, prom_port)
}

/// `promtool check metrics` on what gwtrace serves: no errors, no lint complaints.
fn promtool_lint(metrics_port: u16) {
    let (status, text) = get(metrics_port, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    lint.stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feeding promtool");
    let out = lint.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\n--- exposition ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fails with what to do when a tool the test drives is missing.
fn require_tools(tools: &[&str]) {
    for tool in tools {
        assert!(
            Command::new("which")
                .arg(tool)
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "{tool} is not installed: run `cargo xtask setup`"
        );
    }
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn prometheus_scrapes_nginx_failed_connects() {
    require_root("the metrics test");
    require_tools(&["prometheus", "promtool", "nginx"]);
    let mut stack = lab::Stack::new("metrics").expect("stack");
    stack.upstream = format!("127.0.0.1:{}", free_port().expect("a free port"));
    stack.start_nginx().expect("nginx");
    let metrics_port = free_port().expect("a free port");
    let (mut g, gw_stderr) = start_gwtrace(metrics_port, &stack.dir);

    // nginx answers 502: its connects to the stopped upstream are refused.
    let statuses: Vec<_> = (0..3)
        .map(|_| stack.get("/", Duration::from_secs(5)).status)
        .collect();
    assert!(
        statuses.iter().all(|s| *s == Some(502)),
        "nginx answered {statuses:?}"
    );

    // Prometheus, scraping gwtrace every second.
    let prom_dir = stack.path("prometheus");
    let (mut prom, prom_port) = start_prometheus(&prom_dir, metrics_port);
    let prom_log = prom_dir.join("prometheus.log");
    let prom_context = || {
        format!(
            "prometheus log (tail):\n{}\ngwtrace /metrics:\n{}",
            std::fs::read_to_string(&prom_log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n"),
            get(metrics_port, "/metrics").map_or_else(|| "(no answer)".into(), |(_, b)| b)
        )
    };

    // The failed-connect series, with nginx's target and errno, scraped and queryable.
    let series = format!(
        "gwtrace_connect_failures_total{{job=\"gwtrace\",proxy=\"nginx\",target=\"{}\",errno=\"ECONNREFUSED\"}}",
        stack.upstream
    );
    let value = wait_for(
        &format!("Prometheus to return {series} > 0"),
        Duration::from_secs(45),
        || {
            query(prom_port, &series)
                .first()
                .copied()
                .filter(|v| *v > 0.0)
        },
        prom_context,
    );
    assert!(value >= 3.0, "{series} = {value}, nginx failed 3 connects");
    let up = query(prom_port, "up{job=\"gwtrace\"}");
    assert_eq!(up, [1.0], "the scrape itself is healthy");
    let build = query(prom_port, "gwtrace_build_info");
    assert_eq!(build, [1.0], "build info series");
    // The engine's verdict for it is current in the gauge.
    wait_for(
        "gwtrace_verdicts_active{cause=\"upstream-not-listening\"} >= 1",
        Duration::from_secs(15),
        || {
            query(
                prom_port,
                "gwtrace_verdicts_active{cause=\"upstream-not-listening\"}",
            )
            .first()
            .copied()
            .filter(|v| *v >= 1.0)
        },
        prom_context,
    );
    // Kernel counters are exported: the TCP handshake failures were counted by the kernel.
    let tcp_failed = query(
        prom_port,
        "gwtrace_kernel_tcp_connects_total{result=\"failed\"}",
    );
    assert!(
        tcp_failed.first().is_some_and(|v| *v >= 3.0),
        "kernel tcp failed: {tcp_failed:?}"
    );

    promtool_lint(metrics_port);
    assert_eq!(get(metrics_port, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(get(metrics_port, "/nope").map(|r| r.0), Some(404));

    prom.stop(Duration::from_secs(10));
    let st = g.stop(Duration::from_secs(10));
    let rest: Vec<String> = gw_stderr.try_iter().collect();
    assert!(
        st.is_some_and(|s| s.success()),
        "gwtrace serve ends cleanly on SIGTERM: {st:?} {rest:#?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("(SIGTERM)")),
        "summary: {rest:#?}"
    );
    // --record kept the events the metrics counted.
    let rec = std::fs::read_to_string(stack.dir.join("events.jsonl")).expect("record file");
    assert!(
        rec.lines().any(|l| l.contains("\"connect_failed\"")
            && l.contains(&stack.upstream)
            && l.contains("\"comm\":\"nginx\"")),
        "record file lacks nginx's failed connects"
    );
}

/// A port already taken: one clear line and exit code 2, before anything is loaded (no root
/// needed).
#[test]
fn taken_metrics_port_is_one_line_and_exit_2() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let out = Command::new(gwtrace_bin!())
        .args(["serve", "--metrics", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .output()
        .expect("gwtrace runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("--metrics"),
        "{err}"
    );
    drop(held);
}
