//! The watched processes: the socket state machine remembers the connects of watched processes
//! only (proxies and their children, the only ones whose failures are 502 symptoms), so every
//! other connect on the host costs one lookup and no map write.
//!
//! Who is watched, and from when:
//! - a process whose exec gives it a proxy's name: in the kernel, at its exec (`exec`, from
//!   [`probe_common::MAP_PROXY_NAMES`]), before its first connect;
//! - a child of a watched process: in the kernel, at its fork (`fork`), before it runs: a
//!   master's new workers;
//! - the proxies already running, and those only the loader can tell (by executable, or by
//!   pid on the command line): by the loader from its process table ([`Watch::watch`]), at
//!   start and as new processes are read. What this leaves out: a process renamed to a proxy's
//!   name after its exec (`prctl(PR_SET_NAME)`), or whose executable alone names it a proxy,
//!   until the loader reads it (its periodic scan); their connects before that are not seen.
//!
//! Every entry leaves the map at its process's exit (`exit`).
use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use probe_common::{MAP_PROXY_NAMES, MAP_TCP_OWNER, MAP_WATCHED, Owner, PROXY_NAMES_MAX};

use super::CaptureError;

/// An owner entry older than this is one a missed run left (a socket leaves `SYN_SENT` within
/// `tcp_syn_retries`' backoff: about 2 minutes by default).
const OWNER_STALE_NS: u64 = 600_000_000_000;
/// Owner entries are swept at most this often.
const SWEEP_EVERY_NS: u64 = 60_000_000_000;

/// The loader's handles on the watched-process maps.
pub struct Watch {
    watched: HashMap<MapData, u32, u32>,
    names: HashMap<MapData, [u8; 16], u32>,
    owners: HashMap<MapData, u64, Owner>,
    last_sweep_ns: u64,
}

/// A process name as the kernel's `comm` holds it: at most 15 bytes, NUL-padded.
fn comm_key(name: &str) -> Option<[u8; 16]> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > 15 {
        return None;
    }
    let mut k = [0u8; 16];
    k[..b.len()].copy_from_slice(b);
    Some(k)
}

/// Whether `pid` is a live process (not gone, not a zombie whose exit already ran).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // The state follows the parenthesised comm, which may hold spaces and parentheses.
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

impl Watch {
    /// Takes the maps from the loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, CaptureError> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| CaptureError::Load(format!("map {name} missing")))
        };
        let load = |e: aya::maps::MapError| CaptureError::Load(e.to_string());
        Ok(Self {
            watched: HashMap::try_from(take(MAP_WATCHED)?).map_err(load)?,
            names: HashMap::try_from(take(MAP_PROXY_NAMES)?).map_err(load)?,
            owners: HashMap::try_from(take(MAP_TCP_OWNER)?).map_err(load)?,
            last_sweep_ns: 0,
        })
    }

    /// Processes whose exec gives them one of these names are watched from their exec on. A
    /// name longer than a `comm` (15 bytes) can never be one and is skipped, said once.
    pub fn names(&mut self, names: &[String]) {
        for n in names.iter().take(PROXY_NAMES_MAX as usize) {
            match comm_key(n) {
                Some(k) => {
                    if let Err(e) = self.names.insert(&k, &1, 0) {
                        log::warn!("cannot watch proxy name {n:?}: {e}");
                    }
                }
                None => log::info!(
                    "proxy name {n:?} is longer than a process name (15 bytes): matched from the process table only"
                ),
            }
        }
    }

    /// Watches the process `pid` (and, from now on, the children it forks). A process that is
    /// gone by now is not entered (its exit already ran).
    pub fn watch(&mut self, pid: u32) {
        if self.watched.get(&pid, 0).is_ok() {
            return;
        }
        if let Err(e) = self.watched.insert(&pid, &1, 0) {
            log::warn!("cannot watch pid {pid}: {e}");
            return;
        }
        if !alive(pid) {
            // It exited between the table's read and the insert: its exit did not remove it.
            let _ = self.watched.remove(&pid);
        }
    }

    /// Whether `pid` is watched (for tests and diagnostics).
    #[must_use]
    pub fn is_watched(&self, pid: u32) -> bool {
        self.watched.get(&pid, 0).is_ok()
    }

    /// Deletes the owner entries a missed run of the state program left, at most once a minute.
    pub fn sweep(&mut self, now_mono_ns: u64) {
        if now_mono_ns.saturating_sub(self.last_sweep_ns) < SWEEP_EVERY_NS {
            return;
        }
        self.last_sweep_ns = now_mono_ns;
        let stale: Vec<u64> = self
            .owners
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, o)| now_mono_ns.saturating_sub(o.ktime_ns) > OWNER_STALE_NS)
            .map(|(k, _)| k)
            .collect();
        for k in stale {
            let _ = self.owners.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::comm_key;

    #[test]
    fn names_as_the_kernel_holds_them() {
        let k = comm_key("nginx").expect("fits");
        assert_eq!(&k[..6], b"nginx\0");
        assert!(k[5..].iter().all(|&b| b == 0));
        assert!(comm_key("123456789012345").is_some());
        assert_eq!(comm_key("1234567890123456"), None);
        assert_eq!(comm_key(""), None);
    }

    #[test]
    fn this_process_is_alive() {
        assert!(super::alive(std::process::id()));
        assert!(!super::alive(u32::MAX));
    }
}
