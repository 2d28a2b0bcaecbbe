//! Who owns a listening socket, found by reading the file descriptors of the processes most
//! likely to hold it, and only for the sockets that matter. `sock_diag` and /proc/net/unix give
//! every listener with its inode without reading any fd; tying an inode to a process needs
//! `/proc/PID/fd`, the one read whose cost grows with the host, so it is targeted and cached.
//!
//! [`scan`] is the one search, shared by `gwtrace check` (one pass, unbounded) and the live
//! enricher's [`OwnerCache`] (resumable, within a per-tick [`Budget`]).
use std::collections::{BTreeSet, HashMap, HashSet};

use crate::{catalog::app_server_in_cmdline, facts::FactSource};

/// How many `/proc` reads (one process's status files, or one process's fd directory) the live
/// enricher may make per one-second tick, whatever the failure rate, the number of distinct
/// targets or the number of processes on the host. One read costs 10-30 µs of CPU here (a
/// readdir and a readlink per fd, or four small files): 200 keep the agent's refreshes under
/// ~5 ms of CPU per second, and still search a 5,000-process host through in half a minute
/// when an owner is nowhere likely (app servers and previous owners come first and are few).
pub const PROC_READS_PER_TICK: usize = 200;

/// A count of /proc reads still allowed (until the next tick).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget(usize);

impl Budget {
    /// A fresh per-tick budget ([`PROC_READS_PER_TICK`]).
    #[must_use]
    pub fn tick() -> Self {
        Self(PROC_READS_PER_TICK)
    }
    /// No limit (one-shot `gwtrace check`).
    #[must_use]
    pub fn unlimited() -> Self {
        Self(usize::MAX)
    }
    /// Takes one read; false when none is left.
    pub fn take(&mut self) -> bool {
        if self.0 == 0 {
            return false;
        }
        self.0 -= 1;
        true
    }
    /// Reads left.
    #[must_use]
    pub fn left(&self) -> usize {
        self.0
    }
}

/// Whether a process is an app server by its command line or name (listener owners most likely,
/// and wrong-target candidates: their sockets are always looked up).
#[must_use]
pub fn is_app_server(comm: &str, cmdline: &str) -> bool {
    app_server_in_cmdline(cmdline).is_some() || app_server_in_cmdline(comm).is_some()
}

/// How a [`scan`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// Every pid was scanned (or, with `stop_when_found`, every wanted inode has its owner).
    Done,
    /// The budget ran out after this many pids.
    OutOfBudget(usize),
}

/// Scans the fds of `pids` in order, recording the owner of each `listening` inode they hold
/// (the first holder wins: put masters before their workers) and removing it from `wanted`.
/// With `stop_when_found`, stops as soon as `wanted` is empty. Each pid costs one read of
/// `budget`.
pub fn scan<S: FactSource + ?Sized, H: std::hash::BuildHasher>(
    src: &mut S,
    pids: &[u32],
    listening: &BTreeSet<u64>,
    owners: &mut HashMap<u64, u32, H>,
    wanted: &mut BTreeSet<u64>,
    stop_when_found: bool,
    budget: &mut Budget,
) -> Scan {
    for (i, &pid) in pids.iter().enumerate() {
        if stop_when_found && wanted.is_empty() {
            return Scan::Done;
        }
        if !budget.take() {
            return Scan::OutOfBudget(i);
        }
        for inode in src.socket_inodes(pid) {
            if listening.contains(&inode) && !owners.contains_key(&inode) {
                wanted.remove(&inode);
                owners.insert(inode, pid);
            }
        }
    }
    Scan::Done
}

/// A search for wanted inodes in progress over the process table, resumed tick after tick.
#[derive(Debug, Default)]
struct Search {
    order: Vec<u32>,
    next: usize,
}

/// Listener owners by socket inode, kept across refreshes: an inode's owner is looked up once,
/// forgotten when the owner exits or the socket closes.
#[derive(Debug, Default)]
pub struct OwnerCache {
    owners: HashMap<u64, u32>,
    /// Every listening inode seen at the last refresh (a new one may be an app server's).
    seen: BTreeSet<u64>,
    /// App-server pids whose fds were read since the listening set last grew.
    apps_scanned: HashSet<u32>,
    /// Wanted inodes a whole pass did not find: only new processes are searched for them.
    orphans: BTreeSet<u64>,
    /// Pids that appeared since the last refresh (exec, first event, reconciliation).
    fresh: Vec<u32>,
    search: Option<Search>,
}

/// Bound on the pids remembered as fresh between two refreshes.
const MAX_FRESH: usize = 4096;

impl OwnerCache {
    /// The cached owner of an inode.
    #[must_use]
    pub fn owner(&self, inode: u64) -> Option<u32> {
        self.owners.get(&inode).copied()
    }

    /// A process appeared: a candidate for sockets nobody was found to hold.
    pub fn appeared(&mut self, pid: u32) {
        if self.fresh.len() < MAX_FRESH {
            self.fresh.push(pid);
        }
    }

    /// The slow reconciliation: sockets no pass found get one more whole pass (an old process
    /// may have received one over a unix socket, or its fds were unreadable for a moment).
    pub fn reconcile(&mut self) {
        self.orphans.clear();
    }

    /// A process exited (or exec'd another program): the sockets it held are looked up again.
    pub fn exited(&mut self, pid: u32) {
        self.owners.retain(|_, o| *o != pid);
        self.apps_scanned.remove(&pid);
    }

    /// Brings owners up to date for the `listening` inodes: every app server's sockets (`apps`,
    /// masters first) and the `wanted` ones (the failing targets'), searched over `order`
    /// (most likely owners first), within `budget`.
    pub fn refresh<S: FactSource + ?Sized>(
        &mut self,
        src: &mut S,
        listening: &BTreeSet<u64>,
        wanted: &BTreeSet<u64>,
        apps: &[u32],
        order: impl FnOnce() -> Vec<u32>,
        budget: &mut Budget,
    ) {
        self.owners.retain(|i, _| listening.contains(i));
        self.orphans.retain(|i| listening.contains(i));
        if listening.difference(&self.seen).next().is_some() {
            // A new socket: app servers bind theirs at any time; read their fds again.
            self.apps_scanned.clear();
        }
        self.seen.clone_from(listening);
        let todo: Vec<u32> = apps
            .iter()
            .copied()
            .filter(|p| !self.apps_scanned.contains(p))
            .collect();
        let mut none = BTreeSet::new();
        let done = match scan(
            src,
            &todo,
            listening,
            &mut self.owners,
            &mut none,
            false,
            budget,
        ) {
            Scan::Done => todo.len(),
            Scan::OutOfBudget(n) => n,
        };
        self.apps_scanned.extend(&todo[..done]);
        let mut pending: BTreeSet<u64> = wanted
            .iter()
            .copied()
            .filter(|i| !self.owners.contains_key(i))
            .collect();
        // New processes first, for the sockets a whole pass did not find.
        let fresh = std::mem::take(&mut self.fresh);
        if !self.orphans.is_empty() {
            let mut orphans = self.orphans.clone();
            if let Scan::OutOfBudget(n) = scan(
                src,
                &fresh,
                listening,
                &mut self.owners,
                &mut orphans,
                true,
                budget,
            ) {
                self.fresh = fresh[n..].to_vec();
            }
            self.orphans.retain(|i| !self.owners.contains_key(i));
        }
        pending.retain(|i| !self.orphans.contains(i) && !self.owners.contains_key(i));
        if pending.is_empty() {
            self.search = None;
            return;
        }
        let search = self.search.get_or_insert_with(|| Search {
            order: order(),
            next: 0,
        });
        let rest = &search.order[search.next.min(search.order.len())..];
        match scan(
            src,
            rest,
            listening,
            &mut self.owners,
            &mut pending,
            true,
            budget,
        ) {
            Scan::OutOfBudget(n) => search.next += n,
            Scan::Done => {
                // Found all, or searched everyone: what is left has no visible owner.
                self.orphans.extend(pending);
                self.search = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{Listener, MemcgInfo, Netstat, PathInfo, ProcInfo};

    /// Pid -> socket inodes it holds; counts fd reads.
    #[derive(Default)]
    struct Fds {
        held: HashMap<u32, Vec<u64>>,
        reads: Vec<u32>,
    }

    impl FactSource for Fds {
        fn listeners(&mut self) -> Vec<Listener> {
            Vec::new()
        }
        fn socket_inodes(&mut self, pid: u32) -> Vec<u64> {
            self.reads.push(pid);
            self.held.get(&pid).cloned().unwrap_or_default()
        }
        fn process(&mut self, _pid: u32) -> Option<ProcInfo> {
            None
        }
        fn processes(&mut self) -> Vec<ProcInfo> {
            Vec::new()
        }
        fn path(&mut self, path: &str) -> PathInfo {
            PathInfo {
                path: path.into(),
                components: Vec::new(),
            }
        }
        fn memcg(&mut self, _pid: u32, _known_cgroup: &str) -> Option<MemcgInfo> {
            None
        }
        fn netstat(&mut self) -> Option<Netstat> {
            None
        }
    }

    fn set(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    #[test]
    fn scan_stops_when_the_wanted_owner_is_found_and_the_first_holder_wins() {
        let mut src = Fds::default();
        src.held.insert(10, vec![7]);
        src.held.insert(11, vec![7]);
        src.held.insert(12, vec![8]);
        let mut owners = HashMap::new();
        let mut wanted = set(&[7]);
        let mut budget = Budget::unlimited();
        let r = scan(
            &mut src,
            &[10, 11, 12],
            &set(&[7, 8]),
            &mut owners,
            &mut wanted,
            true,
            &mut budget,
        );
        assert_eq!(r, Scan::Done);
        assert_eq!(owners.get(&7), Some(&10), "the master, scanned first");
        assert_eq!(src.reads, [10], "stopped once found");
    }

    #[test]
    fn scan_respects_its_budget() {
        let mut src = Fds::default();
        let mut budget = Budget(2);
        let r = scan(
            &mut src,
            &[1, 2, 3],
            &set(&[7]),
            &mut HashMap::new(),
            &mut set(&[7]),
            true,
            &mut budget,
        );
        assert_eq!(r, Scan::OutOfBudget(2));
        assert_eq!(src.reads, [1, 2]);
        assert_eq!(budget.left(), 0);
    }

    #[test]
    fn cache_searches_once_resumes_across_ticks_and_forgets_on_exit() {
        let mut src = Fds::default();
        // 500 idle processes; the owner of inode 9 is the last one.
        src.held.insert(500, vec![9]);
        let order: Vec<u32> = (1..=500).collect();
        let listening = set(&[9]);
        let mut c = OwnerCache::default();
        let mut ticks = 0;
        while c.owner(9).is_none() {
            let mut b = Budget::tick();
            c.refresh(
                &mut src,
                &listening,
                &listening,
                &[],
                || order.clone(),
                &mut b,
            );
            ticks += 1;
            assert!(ticks < 10, "search must progress");
        }
        assert_eq!(ticks, 500usize.div_ceil(PROC_READS_PER_TICK));
        assert_eq!(src.reads.len(), 500, "each pid read once");
        assert_eq!(c.owner(9), Some(500));
        // Cached: later refreshes read nothing.
        src.reads.clear();
        c.refresh(
            &mut src,
            &listening,
            &listening,
            &[],
            || order.clone(),
            &mut Budget::tick(),
        );
        assert!(src.reads.is_empty(), "{:?}", src.reads);
        // The owner exits; the socket is still there (a worker holds it).
        src.held.remove(&500);
        src.held.insert(3, vec![9]);
        c.exited(500);
        c.refresh(
            &mut src,
            &listening,
            &listening,
            &[],
            || order.clone(),
            &mut Budget::tick(),
        );
        assert_eq!(c.owner(9), Some(3));
    }

    #[test]
    fn orphans_are_searched_in_new_processes_only_and_app_servers_on_new_sockets() {
        let mut src = Fds::default();
        let order: Vec<u32> = (1..=50).collect();
        let listening = set(&[9]);
        let mut c = OwnerCache::default();
        c.refresh(
            &mut src,
            &listening,
            &listening,
            &[],
            || order.clone(),
            &mut Budget::tick(),
        );
        assert_eq!(src.reads.len(), 50, "one whole pass");
        assert_eq!(c.owner(9), None);
        src.reads.clear();
        c.refresh(
            &mut src,
            &listening,
            &listening,
            &[],
            || order.clone(),
            &mut Budget::tick(),
        );
        assert!(src.reads.is_empty(), "no second pass: {:?}", src.reads);
        src.held.insert(77, vec![9]);
        c.appeared(77);
        c.refresh(
            &mut src,
            &listening,
            &listening,
            &[],
            || order.clone(),
            &mut Budget::tick(),
        );
        assert_eq!(src.reads, [77]);
        assert_eq!(c.owner(9), Some(77));
        // An app server's sockets are read once, and again when a new socket appears.
        src.reads.clear();
        src.held.insert(5, vec![11]);
        let two = set(&[9, 11]);
        let none = BTreeSet::new();
        c.refresh(&mut src, &two, &none, &[5], Vec::new, &mut Budget::tick());
        assert_eq!(c.owner(11), Some(5));
        c.refresh(&mut src, &two, &none, &[5], Vec::new, &mut Budget::tick());
        assert_eq!(src.reads, [5], "not re-read while nothing changed");
    }
}
