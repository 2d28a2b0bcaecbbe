//! Workload 3: nginx proxying to a fast upstream (a second server block of the same nginx,
//! `return 200 "ok"`) over TCP and over a unix socket, one new upstream connection per request
//! (nginx's default), driven by wrk.
use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use std::fmt::Write as _;

use anyhow::{Context as _, bail};

use gwtrace_lab::support::free_port;

use super::tracer::signal;

/// The bench's own nginx.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    pub port: u16,
    pub upstream_port: u16,
    pub upstream_sock: PathBuf,
}

impl Nginx {
    /// Writes the config and starts nginx (one worker, so the proxy is one process strace can
    /// follow and the two cores are split between nginx and wrk). `/fail/0` .. `/fail/N-1` proxy
    /// to `failing` distinct unix sockets that do not exist (502 with ENOENT).
    pub fn start(failing: usize) -> anyhow::Result<Self> {
        let dir = PathBuf::from(format!("/tmp/gwbench-nginx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tmp"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let port = free_port().context("picking a free port")?;
        let upstream_port = free_port().context("picking a free port")?;
        let upstream_sock = dir.join("upstream.sock");
        let d = dir.display();
        let mut fail = String::new();
        for k in 0..failing {
            let _ = writeln!(
                fail,
                "    location = /fail/{k} {{ proxy_pass http://unix:{d}/missing-{k}.sock:; }}"
            );
        }
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log error;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
             \x20 fastcgi_temp_path {d}/tmp/fcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
             \x20 server {{\n    listen 127.0.0.1:{port};\n\
             \x20   location /tcp {{ proxy_pass http://127.0.0.1:{upstream_port}; }}\n\
             \x20   location /unix {{ proxy_pass http://unix:{sock}:; }}\n{fail}  }}\n\
             \x20 server {{\n    listen 127.0.0.1:{upstream_port};\n    listen unix:{sock};\n\
             \x20   location / {{ return 200 \"ok\"; }}\n  }}\n}}\n",
            sock = upstream_sock.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)
            .with_context(|| format!("writing {}", conf_path.display()))?;
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx (cargo xtask setup installs it)")?;
        let n = Self {
            child,
            dir,
            port,
            upstream_port,
            upstream_sock,
        };
        let t0 = Instant::now();
        loop {
            let up = TcpStream::connect(("127.0.0.1", n.port)).is_ok()
                && TcpStream::connect(("127.0.0.1", n.upstream_port)).is_ok()
                && std::os::unix::net::UnixStream::connect(&n.upstream_sock).is_ok()
                && !n.worker_pids().is_empty();
            if up {
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let log = std::fs::read_to_string(n.dir.join("error.log")).unwrap_or_default();
                bail!("nginx did not come up in 10 s: {}", log.trim());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(n)
    }

    /// The master's children (the workers).
    pub fn worker_pids(&self) -> Vec<u32> {
        let master = self.child.id();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, r)| {
                            r.split_whitespace().nth(1).map(|p| p == master.to_string())
                        })
                        .unwrap_or(false)
                })
            })
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = self.child.id();
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(pid, libc::SIGTERM);
            let t0 = Instant::now();
            while matches!(self.child.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                signal(pid, libc::SIGKILL);
                let _ = self.child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What wrk measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Wrk {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// `Non-2xx or 3xx responses` (a 502 would land here).
    pub non_2xx: u64,
    /// Sum of `Socket errors: connect N, read N, write N, timeout N`.
    pub socket_errors: u64,
}

/// Runs `wrk -t2 -c32 -dSECSs --latency URL`.
pub fn wrk(url: &str, secs: u64) -> anyhow::Result<Wrk> {
    let out = Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{secs}s"), "--latency", url])
        .stdin(Stdio::null())
        .output()
        .context("running wrk (cargo xtask setup installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_wrk(&text).with_context(|| format!("parsing wrk's output:\n{text}"))
}

/// A wrk duration (`850.00us`, `1.10ms`, `1.02s`, `1.50m`) in milliseconds.
fn duration_ms(s: &str) -> Option<f64> {
    let (num, factor) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (s.strip_suffix('m')?, 60_000.0)
    };
    num.parse::<f64>().ok().map(|v| v * factor)
}

fn parse_wrk(text: &str) -> anyhow::Result<Wrk> {
    let mut w = Wrk::default();
    let mut seen_rps = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => {
                w.requests_per_sec = v.parse().context("Requests/sec")?;
                seen_rps = true;
            }
            [pct @ ("50%" | "75%" | "90%" | "99%"), v] => {
                let ms = duration_ms(v).with_context(|| format!("latency {v}"))?;
                match *pct {
                    "50%" => w.p50_ms = ms,
                    "75%" => w.p75_ms = ms,
                    "90%" => w.p90_ms = ms,
                    _ => w.p99_ms = ms,
                }
            }
            [n, "requests", "in", ..] => w.requests = n.parse().context("requests")?,
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                w.non_2xx = n.parse().context("non-2xx")?;
            }
            ["Socket", "errors:", rest @ ..] => {
                w.socket_errors = rest
                    .iter()
                    .filter_map(|t| t.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    if !seen_rps || w.p99_ms == 0.0 {
        bail!("no Requests/sec or latency distribution");
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::parse_wrk;

    #[test]
    fn parses_wrk() {
        let out = "Running 5s test @ http://127.0.0.1:1/tcp
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  345.00us   9.87ms   80.00%
    Req/Sec    12.34k     1.00k   14.00k    70.00%
  Latency Distribution
     50%  850.00us
     75%    1.30ms
     90%    1.80ms
     99%    3.45ms
  123456 requests in 5.00s, 17.85MB read
  Non-2xx or 3xx responses: 12
  Socket errors: connect 0, read 3, write 0, timeout 1
Requests/sec:  24691.20
Transfer/sec:      3.57MB
";
        let w = parse_wrk(out).expect("parses");
        assert!((w.requests_per_sec - 24691.2).abs() < 1e-6);
        assert!((w.p50_ms - 0.85).abs() < 1e-9);
        assert!((w.p99_ms - 3.45).abs() < 1e-9);
        assert_eq!(w.requests, 123_456);
        assert_eq!(w.non_2xx, 12);
        assert_eq!(w.socket_errors, 4);
    }
}
