//! `gwtrace`: why does my reverse proxy answer 502? See README.md.
mod cli;

use std::{io::Write as _, process::ExitCode};

use clap::Parser as _;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        // Through the live terminal view when one is up (its log lines go above it).
        .target(env_logger::Target::Pipe(Box::new(
            gwtrace::pipeline::sinks::terminal::log_writer(),
        )))
        .init();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            // One line, no backtrace: what failed and what to do (and no panic when stderr
            // is a closed pipe: `gwtrace 2>&1 | head`).
            let _ = writeln!(std::io::stderr(), "gwtrace: {e:#}");
            ExitCode::from(cli::exit_code_for(&e))
        }
    }
}
