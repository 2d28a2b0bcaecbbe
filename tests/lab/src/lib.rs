//! The scenario lab: every 502 cause from the seeds built for real (nginx in front of gunicorn or
//! uvicorn, with a real fault), driven with a bounded HTTP client, and scored against nginx's own
//! error.log and status codes. Used by `cargo xtask lab` / `cargo xtask demo` and by the test
//! suite (`tests/*.rs`), so there is one implementation of each scenario; [`support`] holds the
//! helpers every end-to-end test shares.
//!
//! Everything a scenario starts runs in its own process group and is killed by that group's id on
//! drop, including on failure; temp dirs and cgroups are removed.
//!
//! This crate needs neither gwtrace's library nor its eBPF object: xtask builds on a bare machine.
pub mod http;
pub mod runner;
pub mod scenarios;
pub mod scoring;
pub mod stack;
pub mod support;

pub use http::{Response, http_get};
pub use runner::{Lines, demo, run_all, run_one, run_one_then, start_gwtrace};
pub use scenarios::{Scenario, scenarios};
pub use scoring::{LabResult, table};
pub use stack::{ProxyKind, Stack, gunicorn_args};
