//! The host's processes as the enricher knows them: read from /proc once at start, then kept
//! from the kernel's own events (a process is read once when it execs or first shows up in an
//! event, dropped when it exits), with a slow reconciliation against the list of /proc for what
//! events cannot say (forks are not traced; lost events). Nothing here reads /proc itself: the
//! enricher feeds it, so the cost of a refresh does not grow with the host.
use std::collections::{HashMap, HashSet};

use super::owners::is_app_server;
use crate::facts::ProcInfo;

/// Bound on the processes kept (the default `pid_max` on small hosts is 32,768; a node with more
/// live processes than this loses the newest from the table, not memory).
pub const MAX_PROCS: usize = 65_536;

/// Every known live process, by pid, with the proxies and app servers among them kept apart
/// (classified once, when a process is inserted: the refreshes that ask for them run while
/// failures flow, and must not walk the whole host).
#[derive(Debug, Default)]
pub struct ProcTable {
    procs: HashMap<u32, ProcInfo>,
    /// Pids of proxies and app servers (by name or command line).
    notable: HashSet<u32>,
    proxy_names: Vec<String>,
}

/// A proxy (by name, or `nginx: worker process`) or an app server (by name or command line).
fn is_notable(p: &ProcInfo, proxy_names: &[String]) -> bool {
    proxy_names.iter().any(|n| {
        p.comm
            .strip_prefix(n.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
    }) || is_app_server(&p.comm, &p.cmdline)
}

impl ProcTable {
    /// An empty table; `proxy_names` are the proxies' process names.
    #[must_use]
    pub fn new(proxy_names: &[String]) -> Self {
        Self {
            proxy_names: proxy_names.to_vec(),
            ..Self::default()
        }
    }

    /// The table of a full /proc read.
    #[must_use]
    pub fn load(proxy_names: &[String], all: &[ProcInfo]) -> Self {
        let mut t = Self::new(proxy_names);
        for p in all {
            t.insert(p.clone());
        }
        t
    }

    /// Number of processes known.
    #[must_use]
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// True when no process is known.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    #[must_use]
    pub fn get(&self, pid: u32) -> Option<&ProcInfo> {
        self.procs.get(&pid)
    }

    #[must_use]
    pub fn contains(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// Upserts a process read from /proc (an exec replaces the old program); false when the
    /// table is full and the pid is new.
    pub fn insert(&mut self, p: ProcInfo) -> bool {
        if self.procs.len() >= MAX_PROCS && !self.procs.contains_key(&p.pid) {
            return false;
        }
        if is_notable(&p, &self.proxy_names) {
            self.notable.insert(p.pid);
        } else {
            self.notable.remove(&p.pid);
        }
        self.procs.insert(p.pid, p);
        true
    }

    /// A process exited.
    pub fn remove(&mut self, pid: u32) -> Option<ProcInfo> {
        self.notable.remove(&pid);
        self.procs.remove(&pid)
    }

    /// Reconciles with the pids /proc lists now: forgets the processes that are gone (their exit
    /// was lost) and returns the live pids the table does not know (forked, or exec events
    /// lost), lowest first, to be read.
    pub fn reconcile(&mut self, live: &[u32]) -> Vec<u32> {
        let live_set: HashSet<u32> = live.iter().copied().collect();
        self.procs.retain(|pid, _| live_set.contains(pid));
        self.notable.retain(|pid| live_set.contains(pid));
        let mut new: Vec<u32> = live
            .iter()
            .copied()
            .filter(|p| !self.procs.contains_key(p))
            .collect();
        new.sort_unstable();
        new.dedup();
        new
    }

    /// Proxies and app servers (by name or command line), masters before their workers, then by
    /// pid: the processes most likely to own the listeners that matter.
    #[must_use]
    pub fn likely_owners(&self) -> Vec<u32> {
        let mut found: Vec<(bool, u32)> = self
            .notable
            .iter()
            .filter_map(|pid| self.procs.get(pid))
            .map(|p| (self.notable.contains(&p.ppid), p.pid))
            .collect();
        found.sort_unstable();
        found.into_iter().map(|(_, pid)| pid).collect()
    }

    /// The proxies and app servers, as read (a handful on most hosts; no walk of the table).
    #[must_use]
    pub fn notable(&self) -> Vec<ProcInfo> {
        self.notable
            .iter()
            .filter_map(|pid| self.procs.get(pid))
            .cloned()
            .collect()
    }

    /// The order in which to search for a socket's owner: `first`, then every other process by
    /// pid (the master of a forked family before its workers).
    #[must_use]
    pub fn search_order(&self, first: &[u32]) -> Vec<u32> {
        let head: HashSet<u32> = first.iter().copied().collect();
        let mut rest: Vec<u32> = self
            .procs
            .keys()
            .copied()
            .filter(|p| !head.contains(p))
            .collect();
        rest.sort_unstable();
        first.iter().copied().chain(rest).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, parent: u32, comm: &str, cmdline: &str) -> ProcInfo {
        ProcInfo {
            pid,
            ppid: parent,
            comm: comm.into(),
            cmdline: cmdline.into(),
            ..ProcInfo::default()
        }
    }

    #[test]
    fn likely_owners_are_app_servers_and_proxies_masters_first() {
        let t = ProcTable::load(
            &["nginx".into()],
            &[
                proc(1, 0, "systemd", "/sbin/init"),
                proc(
                    30,
                    1,
                    "python3",
                    "/venv/bin/python3 /venv/bin/gunicorn app:app",
                ),
                proc(
                    31,
                    30,
                    "python3",
                    "/venv/bin/python3 /venv/bin/gunicorn app:app",
                ),
                proc(40, 1, "nginx", "nginx: master process nginx"),
                proc(41, 40, "nginx", "nginx: worker process"),
                proc(50, 1, "sleep", "sleep 600"),
            ],
        );
        assert_eq!(t.likely_owners(), [30, 40, 31, 41]);
        assert_eq!(t.search_order(&[40, 30]), [40, 30, 1, 31, 41, 50]);
    }

    #[test]
    fn reconcile_drops_the_dead_and_names_the_unknown() {
        let mut t = ProcTable::load(&[], &[proc(1, 0, "init", ""), proc(7, 1, "a", "")]);
        assert_eq!(t.reconcile(&[1, 9, 8, 9]), [8, 9]);
        assert!(!t.contains(7), "its exit was lost");
        assert!(t.contains(1));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn notable_processes_follow_exec_exit_and_reconciliation() {
        let names = ["nginx".to_owned()];
        let mut t = ProcTable::load(&names, &[proc(1, 0, "init", ""), proc(9, 1, "nginxd", "")]);
        assert_eq!(t.likely_owners(), Vec::<u32>::new(), "nginxd is not nginx");
        t.insert(proc(5, 1, "python3", "python3 -m gunicorn app:app"));
        t.insert(proc(6, 5, "python3", "python3 -m gunicorn app:app"));
        assert_eq!(t.likely_owners(), [5, 6]);
        // 6 execs something else, 5 exits, and a reconciliation finds 7 gone.
        t.insert(proc(6, 5, "sh", "sh -c true"));
        t.remove(5);
        t.insert(proc(7, 1, "nginx", "nginx: master process"));
        assert_eq!(t.likely_owners(), [7]);
        t.reconcile(&[1, 6, 9]);
        assert_eq!(t.likely_owners(), Vec::<u32>::new());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = ProcTable::default();
        for pid in 0..u32::try_from(MAX_PROCS).expect("fits") {
            assert!(t.insert(proc(pid, 0, "x", "")));
        }
        assert!(!t.insert(proc(u32::MAX, 0, "x", "")), "full");
        assert!(t.insert(proc(5, 0, "exec'd", "")), "an upsert still works");
        assert_eq!(t.get(5).map(|p| p.comm.as_str()), Some("exec'd"));
        assert_eq!(t.len(), MAX_PROCS);
    }
}
