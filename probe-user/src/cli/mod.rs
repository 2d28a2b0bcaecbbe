//! Command line: `gwtrace` (watch and diagnose), `gwtrace record`, `gwtrace explain`.
mod check;
mod explain;
mod generate;
mod record;
mod serve;
mod session;
mod watch;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum};
use gwtrace::{
    capture::{CaptureError, Hooks},
    pipeline::sinks::verdicts::ColorMode,
};

/// Exit codes (documented in README.md).
pub const EXIT_FAILURE: u8 = 1;
/// Bad usage: flags, files, `--proxy` naming nothing (clap also uses 2).
pub const EXIT_USAGE: u8 = 2;
/// Not root / missing capabilities.
pub const EXIT_PRIVILEGE: u8 = 3;
/// The kernel lacks something gwtrace needs (tracefs, BTF, a tracepoint).
pub const EXIT_KERNEL: u8 = 4;

/// Errors that map to a specific exit code.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("{0}")]
    Usage(String),
}

/// Why did my reverse proxy answer 502? Traces failed upstream connects and worker deaths in the
/// kernel and names the root cause, with evidence and the fix.
#[derive(Debug, Parser)]
#[command(name = "gwtrace", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    watch: WatchArgs,
    /// Colour in human output (never in JSON): auto = on a terminal unless `NO_COLOR` is set.
    #[arg(
        long,
        value_enum,
        global = true,
        default_value = "auto",
        value_name = "WHEN"
    )]
    color: ColorArg,
}

/// `--color`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ColorArg {
    /// On a terminal, unless the `NO_COLOR` environment variable is set (<https://no-color.org>).
    Auto,
    /// Always, even into a pipe or a file.
    Always,
    /// Never.
    Never,
}

impl From<ColorArg> for ColorMode {
    fn from(c: ColorArg) -> Self {
        match c {
            ColorArg::Auto => ColorMode::Auto,
            ColorArg::Always => ColorMode::Always,
            ColorArg::Never => ColorMode::Never,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write every captured event as JSON lines (schema: docs/events.md).
    Record(RecordArgs),
    /// Replay a `gwtrace record` file through the diagnosis engine (no root needed).
    Explain(ExplainArgs),
    /// Run as a daemon: trace, keep verdicts current, serve Prometheus metrics on /metrics.
    Serve(serve::ServeArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(hide = true)]
    Completions(generate::CompletionsArgs),
    /// Print the man page (roff) to stdout, or write every page with --out-dir.
    #[command(hide = true)]
    Man(generate::ManArgs),
    /// Check the proxies' upstream targets now, from their configuration (no eBPF, no traffic).
    Check(check::CheckArgs),
}

/// Which kernel hooks to use.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum HooksArg {
    /// The default: no syscall tracepoint while the host is healthy (cgroup programs see each
    /// connect attempt); the syscall hooks are attached only while an anomaly is suspected.
    Auto,
    /// Always escalated: every cause (syscall tracepoints on connect/accept: a small cost on every syscall).
    Full,
    /// No syscall tracepoints: TCP failures and worker deaths only (misses unix-socket errors).
    Sock,
}

impl From<HooksArg> for Hooks {
    fn from(h: HooksArg) -> Self {
        match h {
            HooksArg::Auto => Hooks::Auto,
            HooksArg::Full => Hooks::Full,
            HooksArg::Sock => Hooks::Sock,
        }
    }
}

/// `--duration`: seconds, more than 0 and at most a year (`Duration` cannot hold a negative,
/// infinite or NaN value: these must be refused here, not panic later).
fn parse_duration(s: &str) -> Result<f64, String> {
    let hint = "give the seconds to trace, a number above 0 (e.g. --duration 30 or 0.5), or leave \
                --duration out to trace until Ctrl-C";
    match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 366.0 * 86_400.0 => Ok(secs),
        Ok(_) => Err(format!("{s:?} is not a usable number of seconds: {hint}")),
        Err(_) => Err(format!("{s:?} is not a number: {hint}")),
    }
}

#[derive(Debug, Args)]
struct CaptureArgs {
    /// Stop after this many seconds (default: until Ctrl-C / SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = parse_duration, allow_hyphen_values = true)]
    duration: Option<f64>,
    /// Kernel hooks to attach.
    #[arg(long, value_enum, default_value = "auto")]
    hooks: HooksArg,
}

#[derive(Debug, Args)]
struct WatchArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    /// Proxy to watch, by process name or pid (repeatable; default: auto-detect nginx, caddy,
    /// haproxy, httpd/apache2, envoy, traefik).
    #[arg(long, value_name = "NAME|PID")]
    proxy: Vec<String>,
    /// One verdict per line as JSON, for machines.
    #[arg(long)]
    json: bool,
    /// Also write the raw events (as `gwtrace record` does) to this file.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Overwrite the --record file if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct RecordArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    /// Output file (default: stdout; `-` is stdout too). Created 0600; never follows a symlink.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct ExplainArgs {
    /// A file written by `gwtrace record` (or `gwtrace --record`).
    file: PathBuf,
    /// One verdict per line as JSON.
    #[arg(long)]
    json: bool,
    /// Proxy process names to consider besides the defaults (repeatable).
    #[arg(long, value_name = "NAME")]
    proxy: Vec<String>,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let color = ColorMode::from(cli.color);
    match cli.command {
        Some(Command::Record(a)) => record::record(&a),
        Some(Command::Explain(a)) => explain::explain(&a, color),
        Some(Command::Serve(a)) => serve::serve(&a, color),
        Some(Command::Completions(a)) => generate::completions(&a),
        Some(Command::Man(a)) => generate::man(&a),
        Some(Command::Check(a)) => check::check(&a, color),
        None => watch::watch(&cli.watch, color),
    }
}

/// The exit code for an error that reached the top.
pub fn exit_code_for(e: &anyhow::Error) -> u8 {
    // The cause may sit under a pipeline error: look through the whole chain.
    if let Some(c) = e.chain().find_map(|c| c.downcast_ref::<CaptureError>()) {
        return match c {
            CaptureError::NotRoot => EXIT_PRIVILEGE,
            CaptureError::Load(msg) | CaptureError::Attach(_, msg)
                if msg.contains("Operation not permitted") =>
            {
                EXIT_PRIVILEGE
            }
            CaptureError::Tracefs(_)
            | CaptureError::Btf(_)
            | CaptureError::Attach(..)
            | CaptureError::Load(_) => EXIT_KERNEL,
        };
    }
    if e.chain().any(|c| c.downcast_ref::<UsageError>().is_some()) {
        return EXIT_USAGE;
    }
    EXIT_FAILURE
}
