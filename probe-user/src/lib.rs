//! gwtrace: why does my reverse proxy answer 502? Wire decoding, kernel capture, procfs facts and
//! the correlation engine, and the pipeline joining them to their outputs; the `gwtrace` binary is
//! a thin CLI over these.
pub mod capture;
pub mod catalog;
pub mod check;
pub mod engine;
pub mod enrich;
pub mod event;
pub mod facts;
pub mod host;
pub mod metrics;
pub mod origin;
pub mod pipeline;
mod proptests;
