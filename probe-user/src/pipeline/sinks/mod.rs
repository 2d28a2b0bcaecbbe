//! The pipeline's outputs, each behind [`super::Sink`]: the record file ([`record`]), the verdict
//! printer ([`verdicts`], with wall-clock times from [`wall`]), the live terminal view over it
//! ([`terminal`]) and the Prometheus metrics ([`metrics`]).
pub mod metrics;
pub mod record;
pub mod terminal;
pub mod verdicts;
pub mod wall;

pub use metrics::MetricsSink;
pub use record::{RecordSink, RotatingFile};
pub use terminal::TerminalSink;
pub use verdicts::VerdictSink;
pub use wall::WallClock;
