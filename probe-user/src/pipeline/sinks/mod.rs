//! The pipeline's outputs, each behind [`super::Sink`]: the record file ([`record`]), the verdict
//! printer ([`verdicts`]) and the Prometheus metrics ([`metrics`]).
pub mod metrics;
pub mod record;
pub mod verdicts;

pub use metrics::MetricsSink;
pub use record::{RecordSink, RotatingFile};
pub use verdicts::VerdictSink;
