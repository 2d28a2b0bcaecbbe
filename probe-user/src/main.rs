//! `gwtrace`: why does my reverse proxy answer 502? See README.md.
mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            // One line, no backtrace: what failed and what to do.
            eprintln!("gwtrace: {e:#}");
            ExitCode::from(cli::exit_code_for(&e))
        }
    }
}
