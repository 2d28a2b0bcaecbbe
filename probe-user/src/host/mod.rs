//! What gwtrace reads from the host besides kernel events, in one place: processes, sockets
//! and paths from /proc and the filesystem ([`procfs`]), TCP listeners from `sock_diag`
//! ([`sockdiag`]), and the cgroup hierarchies ([`cgroup`]: mounts, memory limits, origins of
//! live events). The types these produce and the [`crate::facts::FactSource`] port they
//! implement stay in [`crate::facts`], which the pure engine reads.
pub mod cgroup;
pub mod netns;
pub mod procfs;
pub mod sockdiag;

pub use procfs::SystemFacts;
