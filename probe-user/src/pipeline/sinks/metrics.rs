//! The Prometheus metrics as a sink: every event observed, the kernel counters and the current
//! verdicts set each tick, deaths settled once the engine knows whose workers they were. The
//! registry itself lives in [`crate::metrics`]; its [`Exporter`](crate::metrics::Exporter) serves
//! it from another thread.
use super::super::{Sink, SinkError, Tick};
use crate::{event::Event, metrics::Metrics};

/// Keeps a [`Metrics`] registry current.
pub struct MetricsSink {
    metrics: Metrics,
}

impl MetricsSink {
    #[must_use]
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }

    /// The registry, e.g. to take an exporter or encode it.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

impl Sink for MetricsSink {
    fn event(&mut self, ev: &Event) -> Result<(), SinkError> {
        self.metrics.observe(ev);
        Ok(())
    }

    fn tick(&mut self, tick: &Tick<'_>) -> Result<(), SinkError> {
        if let Some(c) = tick.counters {
            self.metrics.set_counters(c);
        }
        self.metrics.set_verdicts(tick.verdicts, tick.now_ns);
        if let Some(engine) = tick.engine {
            self.metrics.settle_deaths(|pids| engine.upstreams(pids));
        }
        Ok(())
    }
}
