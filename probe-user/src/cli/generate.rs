//! `gwtrace completions SHELL` and `gwtrace man` (hidden): shell completions and the man page,
//! generated from the same clap definition as the parser, for packagers.
use std::io::Write as _;

use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write gwtrace.1 and one page per subcommand (gwtrace-serve.1, ...) into this directory
    /// instead of printing gwtrace.1 to stdout.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<std::path::PathBuf>,
}

/// Writes the completion script to stdout.
pub fn completions(a: &CompletionsArgs) -> anyhow::Result<std::process::ExitCode> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(a.shell, &mut cmd, "gwtrace", &mut out);
    out.flush()?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Closing text of the man page: exit codes (as in README.md), environment, files.
const MAN_EXTRA: &str = "EXIT STATUS: 0 ran to the end (verdicts or not); 1 runtime failure (I/O, \
unexpected kernel error); 2 bad usage (unknown flag, unreadable or invalid file, --proxy naming \
nothing, output exists, --metrics address taken); 3 not root or missing capabilities; 4 the kernel \
lacks something (tracefs, BTF, a tracepoint).

ENVIRONMENT: RUST_LOG sets the level of gwtrace's own diagnostics on stderr (error, warn, info, \
debug, trace; default warn).

FILES: docs/events.md and docs/events.schema.json describe the event lines; docs/collectors.md \
how log collectors ingest them; packaging/gwtrace.service runs gwtrace serve under systemd.";

/// Writes the man page(s).
pub fn man(a: &ManArgs) -> anyhow::Result<std::process::ExitCode> {
    let cmd = Cli::command().after_long_help(MAN_EXTRA);
    if let Some(dir) = &a.out_dir {
        std::fs::create_dir_all(dir)?;
        clap_mangen::generate_to(cmd, dir)?;
    } else {
        let mut out = std::io::stdout().lock();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        out.flush()?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}
