//! `gwtrace explain FILE`: replays a record file through the same pipeline, streaming (constant
//! memory), with a clear error naming the line of anything it cannot read.
use std::process::ExitCode;

use gwtrace::{
    engine::{Engine, EngineConfig},
    pipeline::{
        Pipeline, PipelineError, SourceError,
        replay::Replay,
        sinks::{VerdictSink, verdicts::ColorMode},
    },
};

use super::{ExplainArgs, UsageError, session::default_proxy_names};

pub fn explain(a: &ExplainArgs, color: ColorMode) -> anyhow::Result<ExitCode> {
    let mut source = Replay::open(&a.file).map_err(|e| UsageError::Usage(e.to_string()))?;
    let mut names = default_proxy_names();
    names.extend(a.proxy.iter().cloned());
    let engine = Engine::new(EngineConfig {
        proxy_names: names,
        proxy_pids: Vec::new(),
    });
    let stdout = std::io::stdout();
    let color = !a.json && color.for_stream(&stdout);
    // The verdicts at the recording's end, then (human form) the table.
    let mut printer =
        VerdictSink::new(stdout, std::io::stderr(), a.json, color).with_summary(!a.json);
    let mut pipeline = Pipeline::new(Some(engine), vec![&mut printer]);
    match pipeline.replay(&mut source) {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(PipelineError::Source(SourceError::Replay(e))) if e.is_usage() => {
            Err(UsageError::Usage(e.to_string()).into())
        }
        Err(e) => Err(e.into()),
    }
}
