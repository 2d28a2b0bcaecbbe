//! The userspace pipeline: capture -> decode -> fold -> enrich -> engine -> sinks.
//!
//! A [`Source`] hands over decoded, enriched events in order: the live capture ([`live`]: the ring
//! buffer drained on a timer, failures folded in the kernel, `/proc` facts and origins added here)
//! or a recorded JSON-lines file ([`replay`]). The [`Pipeline`] owns the loop: pacing, the
//! once-a-second tick, shutdown on a deadline or a signal, the final drain. It feeds the pure
//! [`Engine`] and hands every event, tick and the end of the run to its [`Sink`]s (the record
//! file, the verdict printer, the Prometheus metrics: [`sinks`]). Sources know nothing of sinks;
//! the binary only parses flags and picks them.
pub mod escalation;
pub mod live;
mod pace;
pub mod replay;
pub mod sinks;
mod stats;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::{
    capture::{CaptureError, Counters},
    engine::{Advance, Engine, Verdict},
    event::Event,
};
pub use pace::Pace;
pub use stats::Stats;

/// What stopped a run that reached its end (not an error).
pub const END_OF_INPUT: &str = "end of input";

/// Errors a source raises.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Replay(#[from] replay::ReplayError),
}

/// Errors a sink raises: the output it could not write.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("writing {what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding {what} as JSON")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl SinkError {
    /// An I/O error writing `what`.
    pub fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { what, source }
    }

    /// A JSON error encoding `what`.
    pub fn json(what: &'static str) -> impl FnOnce(serde_json::Error) -> Self {
        move |source| Self::Json { what, source }
    }
}

/// Errors ending a run early.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("starting the event loop")]
    Runtime(#[source] std::io::Error),
    #[error("installing the {0} handler")]
    Signal(&'static str, #[source] std::io::Error),
}

/// Where events come from, decoded and enriched, in order (facts lines before the events they
/// explain).
pub trait Source {
    /// Appends the events available now to `out`. Returns how many records were read (0: nothing
    /// came, the pipeline slows down) or `None` once the source is exhausted.
    fn drain(&mut self, out: &mut Vec<Event>) -> Result<Option<usize>, SourceError>;
    /// Once a second: events the source makes up on its own (periodic facts, loss lines).
    fn tick(&mut self, now_ns: u64, out: &mut Vec<Event>) -> Result<(), SourceError>;
    /// The kernel counters, for a source that has them.
    fn counters(&mut self) -> Option<Counters>;
    /// The end of the run: the last events (nothing delivered or counted is left behind); the
    /// source lets go of what it holds (every program detached, every map freed). Returns the
    /// final counters.
    fn finish(
        &mut self,
        now_ns: u64,
        out: &mut Vec<Event>,
    ) -> Result<Option<Counters>, SourceError>;
    /// Now, on the events' time axis (the live clock; for a replay, its last event).
    fn now_ns(&self) -> u64;
}

/// What sinks see every tick and once at the end of a run.
pub struct Tick<'a> {
    /// Now, on the events' time axis (monotonic ns).
    pub now_ns: u64,
    /// The engine's verdicts now (empty without an engine), each with its id and state: `open`,
    /// `updated` or `resolved` ([`Engine::advance`]).
    pub verdicts: &'a [Verdict],
    /// The verdicts superseded since the previous tick (state `superseded`).
    pub superseded: &'a [Verdict],
    /// The engine, for sinks that ask it more (which pids are upstream workers).
    pub engine: Option<&'a Engine>,
    /// The kernel counters now, when the source has them.
    pub counters: Option<&'a Counters>,
}

/// An output of the pipeline. Sinks run in the order given; an error ends the run.
pub trait Sink {
    /// Every event, in order, after the engine saw it.
    fn event(&mut self, ev: &Event) -> Result<(), SinkError>;
    /// Every tick (once a second on a live run) and once more at the end.
    fn tick(&mut self, tick: &Tick<'_>) -> Result<(), SinkError> {
        let _ = tick;
        Ok(())
    }
    /// The end of the run, after the last tick.
    fn finish(&mut self, stats: &Stats) -> Result<(), SinkError> {
        let _ = stats;
        Ok(())
    }
}

/// When a live run stops: a deadline and the signals SIGINT, SIGTERM, SIGHUP. Installed before
/// the capture attaches, so a signal that lands between attach and the loop still ends the run
/// cleanly (detach, flush, summary) and never kills the process.
pub struct Stop {
    rt: tokio::runtime::Runtime,
    duration: Option<Duration>,
    signals: Option<[(Signal, &'static str); 3]>,
    started: Instant,
}

impl Stop {
    /// The event loop, a deadline `duration` from its start, and (if `signals`) the handlers.
    pub fn new(duration: Option<Duration>, signals: bool) -> Result<Self, PipelineError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .enable_io()
            .build()
            .map_err(PipelineError::Runtime)?;
        let signals = if signals {
            let _guard = rt.enter();
            let install = |kind: SignalKind, name: &'static str| {
                signal(kind)
                    .map(|s| (s, name))
                    .map_err(|e| PipelineError::Signal(name, e))
            };
            Some([
                install(SignalKind::interrupt(), "SIGINT")?,
                install(SignalKind::terminate(), "SIGTERM")?,
                install(SignalKind::hangup(), "SIGHUP")?,
            ])
        } else {
            None
        };
        Ok(Self {
            rt,
            duration,
            signals,
            started: Instant::now(),
        })
    }
}

/// The one loop: feeds the engine and the sinks from a source.
pub struct Pipeline<'a> {
    engine: Option<Engine>,
    sinks: Vec<&'a mut dyn Sink>,
    stats: Stats,
    batch: Vec<Event>,
}

impl<'a> Pipeline<'a> {
    /// A pipeline feeding `engine` (none: events only, as `gwtrace record`) and `sinks`.
    #[must_use]
    pub fn new(engine: Option<Engine>, sinks: Vec<&'a mut dyn Sink>) -> Self {
        Self {
            engine,
            sinks,
            stats: Stats::default(),
            batch: Vec::new(),
        }
    }

    /// The engine, after a run.
    #[must_use]
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }

    /// Runs a source paced like the live capture: drained every 10 ms (40 ms once quiet), a tick
    /// every second, until the source ends, the deadline passes or a signal comes; then the
    /// final drain, one last tick and the sinks' finish.
    pub fn run(&mut self, source: &mut impl Source, stop: Stop) -> Result<Stats, PipelineError> {
        let Stop {
            rt,
            duration,
            signals,
            started,
        } = stop;
        let stopped_by = rt.block_on(self.paced(source, duration, signals))?;
        self.end(source, stopped_by, started)
    }

    /// Runs a finite source flat out (a recording, `gwtrace explain`): every event, then one
    /// tick at the last event's time and the sinks' finish. Memory stays flat: the source hands
    /// over a chunk at a time.
    pub fn replay(&mut self, source: &mut impl Source) -> Result<Stats, PipelineError> {
        let started = Instant::now();
        while source.drain(&mut self.batch)?.is_some() {
            self.emit_batch()?;
        }
        self.emit_batch()?;
        self.end(source, END_OF_INPUT, started)
    }

    async fn paced(
        &mut self,
        source: &mut impl Source,
        duration: Option<Duration>,
        signals: Option<[(Signal, &'static str); 3]>,
    ) -> Result<&'static str, PipelineError> {
        let deadline = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        let signalled = async {
            match signals {
                Some([(mut a, an), (mut b, bn), (mut c, cn)]) => tokio::select! {
                    _ = a.recv() => an,
                    _ = b.recv() => bn,
                    _ = c.recv() => cn,
                },
                None => std::future::pending().await,
            }
        };
        tokio::pin!(signalled);
        let mut pace = Pace::new();
        loop {
            tokio::select! {
                () = tokio::time::sleep(pace.pause()) => {
                    let Some(n) = source.drain(&mut self.batch)? else {
                        self.emit_batch()?;
                        return Ok(END_OF_INPUT);
                    };
                    self.emit_batch()?;
                    if !pace.drained(n) {
                        continue;
                    }
                    let now = source.now_ns();
                    source.tick(now, &mut self.batch)?;
                    self.emit_batch()?;
                    let counters = source.counters();
                    self.tick(now, counters.as_ref())?;
                }
                () = &mut deadline => return Ok("duration reached"),
                name = &mut signalled => return Ok(name),
            }
        }
    }

    /// The final drain, the last tick, the sinks' finish.
    fn end(
        &mut self,
        source: &mut impl Source,
        stopped_by: &'static str,
        started: Instant,
    ) -> Result<Stats, PipelineError> {
        let now = source.now_ns();
        let counters = source.finish(now, &mut self.batch)?;
        self.emit_batch()?;
        self.stats.stopped_by = stopped_by;
        self.stats.seconds = started.elapsed().as_secs_f64();
        if let Some(c) = &counters {
            self.stats.counters = c.clone();
        }
        self.tick(now, counters.as_ref())?;
        for s in &mut self.sinks {
            s.finish(&self.stats)?;
        }
        Ok(std::mem::take(&mut self.stats))
    }

    /// Hands the batch, in order, to the engine and the sinks.
    fn emit_batch(&mut self) -> Result<(), SinkError> {
        let mut batch = std::mem::take(&mut self.batch);
        let result = batch.iter().try_for_each(|ev| self.emit(ev));
        batch.clear();
        self.batch = batch;
        result
    }

    fn emit(&mut self, ev: &Event) -> Result<(), SinkError> {
        self.stats.count(ev);
        if let Some(e) = self.engine.as_mut() {
            e.feed(ev);
        }
        for s in &mut self.sinks {
            s.event(ev)?;
        }
        Ok(())
    }

    fn tick(&mut self, now_ns: u64, counters: Option<&Counters>) -> Result<(), SinkError> {
        let Advance {
            verdicts,
            superseded,
        } = self
            .engine
            .as_mut()
            .map(|e| e.advance(now_ns))
            .unwrap_or_default();
        let tick = Tick {
            now_ns,
            verdicts: &verdicts,
            superseded: &superseded,
            engine: self.engine.as_ref(),
            counters,
        };
        for s in &mut self.sinks {
            s.tick(&tick)?;
        }
        Ok(())
    }
}
