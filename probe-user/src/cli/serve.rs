//! `gwtrace serve`: the daemon. Traces like `gwtrace`, prints verdicts as they are established
//! (to the journal under systemd), keeps them current and serves Prometheus metrics on
//! `/metrics` (library: [`gwtrace::metrics`]).
use std::{
    net::{SocketAddr, TcpListener},
    process::ExitCode,
    sync::Arc,
};

use anyhow::Context as _;
use clap::Args;
use gwtrace::{
    engine::{Engine, EngineConfig},
    event::Clock,
    metrics::{CONTENT_TYPE, Exporter, Metrics, MetricsConfig},
    pipeline::{
        Pipeline, Sink,
        sinks::{MetricsSink, RecordSink, VerdictSink, WallClock, verdicts::ColorMode},
    },
};

use super::{UsageError, WatchArgs, session};

/// Where metrics are served unless `--metrics` says otherwise (loopback: put a proxy or a
/// firewall in front before exposing it).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    watch: WatchArgs,
    /// Serve Prometheus metrics (text format) on `http://ADDR/metrics`.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_METRICS_ADDR, value_parser = metrics_addr)]
    metrics: SocketAddr,
    /// Distinct upstream targets with series of their own; later ones are counted as
    /// `target="other"`.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_targets: usize,
    /// Rotate the --record file when it would grow past this many MiB (FILE -> FILE.1 -> ...).
    /// The daemon appends to an existing --record file (--force starts it empty).
    #[arg(long, value_name = "MIB")]
    rotate_mb: Option<u64>,
    /// Rotated --record files to keep (FILE.1 .. FILE.N).
    #[arg(long, value_name = "N", default_value_t = 5)]
    rotate_keep: u32,
}

/// Parses `--metrics`: an IP address and a port, said with an example when it is not one.
fn metrics_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "give an IP address and a port, e.g. --metrics {DEFAULT_METRICS_ADDR} or --metrics [::1]:9464 (host names are not resolved)"
        )
    })
}

/// Binds the metrics address: a port already taken is a usage error (exit code 2), said in
/// one line.
fn bind(addr: SocketAddr) -> Result<TcpListener, UsageError> {
    TcpListener::bind(addr).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (another process listens there: pick another port with --metrics ADDR)"
            }
            std::io::ErrorKind::AddrNotAvailable => " (no interface has this address)",
            std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
            _ => "",
        };
        UsageError::Usage(format!("cannot serve metrics on {addr}: {e}{hint}"))
    })
}

/// Answers one request: `/metrics`, `/` and `/healthz`.
fn respond(req: tiny_http::Request, exporter: &Exporter) {
    use tiny_http::{Method, Response};
    let path = req.url().split('?').next().unwrap_or("");
    let get = matches!(req.method(), Method::Get | Method::Head);
    let result = match (get, path) {
        (true, "/metrics") => match exporter.encode() {
            Ok(body) => {
                let mut r = Response::from_string(body);
                if let Ok(h) = format!("Content-Type: {CONTENT_TYPE}").parse::<tiny_http::Header>()
                {
                    r.add_header(h);
                }
                req.respond(r)
            }
            Err(e) => req.respond(Response::from_string(format!("{e}\n")).with_status_code(500)),
        },
        (true, "/") => req.respond(Response::from_string(
            "gwtrace: Prometheus metrics at /metrics\n",
        )),
        (true, "/healthz") => req.respond(Response::from_string("ok\n")),
        (false, "/metrics" | "/" | "/healthz") => {
            req.respond(Response::from_string("method not allowed\n").with_status_code(405))
        }
        _ => req.respond(Response::from_string("not found\n").with_status_code(404)),
    };
    if let Err(e) = result {
        log::debug!("metrics client went away: {e}");
    }
}

/// The HTTP side: a thread answering until `unblock`.
struct HttpServer {
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    fn start(listener: TcpListener, exporter: Exporter) -> anyhow::Result<Self> {
        let server = Arc::new(
            tiny_http::Server::from_listener(listener, None)
                .map_err(|e| anyhow::anyhow!("starting the metrics server: {e}"))?,
        );
        let s = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("gwtrace-metrics".into())
            .spawn(move || {
                for req in s.incoming_requests() {
                    respond(req, &exporter);
                }
            })
            .context("starting the metrics thread")?;
        Ok(Self {
            server,
            thread: Some(thread),
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the daemon.
pub fn serve(a: &ServeArgs, color: ColorMode) -> anyhow::Result<ExitCode> {
    // Bind first: a taken port fails in a line, before any program is loaded.
    let listener = bind(a.metrics)?;
    let w = &a.watch;
    let (proxy_names, proxy_pids) = session::resolve_proxies(&w.proxy)?;
    let mut recorder = match &w.record {
        Some(path) => Some(
            RecordSink::append(
                path,
                w.force,
                a.rotate_mb.map(|mb| mb.saturating_mul(1 << 20)),
                a.rotate_keep,
            )
            .map_err(|e| UsageError::Usage(e.to_string()))?,
        ),
        None => None,
    };
    let engine = Engine::new(EngineConfig {
        proxy_names: proxy_names.clone(),
        proxy_pids: proxy_pids.clone(),
    });
    let mut metrics = MetricsSink::new(Metrics::new(MetricsConfig {
        proxy_names: proxy_names.clone(),
        proxy_pids: proxy_pids.clone(),
        max_targets: a.max_targets,
        ..MetricsConfig::default()
    }));
    let http = HttpServer::start(listener, metrics.metrics().exporter())?;
    let stdout = std::io::stdout();
    let color = !w.json && color.for_stream(&stdout);
    // Wall-clock times: the offset to the events' monotonic clock, measured once now.
    let mut printer = VerdictSink::new(stdout, std::io::stderr(), w.json, color)
        .with_wall_clock(WallClock::live(Clock::now()));
    let mut sinks: Vec<&mut dyn Sink> = vec![&mut metrics, &mut printer];
    if let Some(r) = recorder.as_mut() {
        sinks.push(r);
    }
    let ready = format!(
        "tracing; metrics on http://{}/metrics; verdicts appear as causes are established",
        a.metrics
    );
    session::run_live(
        &w.capture,
        proxy_names,
        proxy_pids,
        &ready,
        &mut Pipeline::new(Some(engine), sinks),
    )?;
    drop(http);
    Ok(ExitCode::SUCCESS)
}
