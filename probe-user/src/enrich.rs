//! Enrichment: decides which facts each event needs (the connecting worker's uids, the socket
//! path's permission walk, the OOM victim's memory cgroup, the exiting worker's parent) and reads
//! them once, from a [`FactSource`]. The output is `facts` lines that precede the events they
//! explain, in the live stream and in record files alike.
//!
//! Its cost does not grow with the host: processes live in a [`ProcTable`] kept from the
//! kernel's exec and exit events (one full /proc read at start, a reconciliation once a minute),
//! listener owners are looked up for the failing targets and the app servers only, cached by
//! socket inode ([`OwnerCache`]), and every tick's /proc reads fit one [`Budget`].
pub mod configs;
pub mod owners;
pub mod proctable;
#[cfg(test)]
mod scale_tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use crate::{
    catalog::APP_SERVERS,
    engine::covers,
    event::{Body, Event},
    facts::{
        FactSource, FactsUpdate, Listener, MountNs, NetNs, Netstat, PathInfo, ProcInfo, ProcRoot,
    },
};
use owners::{Budget, OwnerCache};
use proctable::ProcTable;

/// Whether a process looks like a proxy or an app server worth remembering.
fn interesting(p: &ProcInfo, proxy_names: &[String]) -> bool {
    let first = p
        .cmdline
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    proxy_names
        .iter()
        .any(|n| p.comm == *n || p.comm.starts_with(&format!("{n}:")))
        || APP_SERVERS
            .iter()
            .any(|n| p.comm.starts_with(n) || first.contains(n))
}

/// Bound on remembered pids and paths (memory stays flat on busy hosts).
const MAX_KNOWN: usize = 65_536;
/// Bound on the failing targets whose listeners' owners are looked up.
const MAX_TARGETS: usize = 4096;
/// Bound on pids waiting to be read (new processes beyond the tick's budget).
const MAX_PENDING: usize = 65_536;
/// Re-read a socket path at most this often (ns).
const PATH_REFRESH_NS: u64 = 1_000_000_000;
/// Path walks per tick (a handful of `stat`s each): with many distinct failing targets, the
/// rest wait for their next failure in a later second.
const WALKS_PER_TICK: u32 = 64;
/// Bound on the denied socket paths walked again at each tick.
const MAX_DENIED: usize = 16;
/// Bound on the network namespaces (other than the host's) whose listeners are read: the
/// namespaces proxies live in.
const MAX_NETNS: usize = 16;

/// Stateful enricher over a fact source.
pub struct Enricher<S: FactSource> {
    src: S,
    proxy_names: Vec<String>,
    known: HashSet<u32>,
    /// Pids whose mount namespace was sent.
    ns_known: HashSet<u32>,
    /// The host's network namespace (pid 1's), once read.
    host_net: Option<u64>,
    /// Each pid's network namespace when it is not the host's (`None`: the host's), as read
    /// once per pid (and again after an exec).
    net_known: HashMap<u32, Option<u64>>,
    /// Network namespaces other than the host's that proxies live in, each with a pid seen
    /// there (its listeners are read as that process sees them).
    proxy_nets: BTreeMap<u64, u32>,
    /// Listen-queue counters of those namespaces, as of their last listener read.
    net_netstat: BTreeMap<u64, Netstat>,
    paths: HashMap<String, u64>,
    /// Socket paths a proxy was denied (EACCES), with the failed connect: walked again at each
    /// tick while listeners are re-read after an anomaly, so a repaired permission is seen
    /// (nothing fails any more to trigger a walk) and its verdict can resolve.
    denied: BTreeMap<String, Event>,
    listeners: Option<Vec<Listener>>,
    netstat: Option<Netstat>,
    /// Periodic ticks since the last anomaly (failure, death, signal, OOM): listeners are only
    /// re-read around anomalies.
    quiet_ticks: u32,
    ticks: u64,
    /// Proxies, app servers, listener owners and their children: the processes whose
    /// anomalies matter (other processes on a host fail connects and exit all the time).
    relevant: HashSet<u32>,
    /// Every live process of the host, as last read.
    table: ProcTable,
    /// Listener owners by socket inode.
    owners: OwnerCache,
    /// Targets relevant processes failed to connect to: their listeners' owners are wanted.
    targets: BTreeSet<String>,
    /// /proc reads left until the next tick.
    budget: Budget,
    /// Listeners were read since the last tick (at most once per tick).
    listeners_read: bool,
    walks: u32,
    /// New pids to read, beyond the budget of their tick.
    pending: VecDeque<u32>,
}

/// Keep re-reading listeners for this many ticks after an anomaly (a restart that comes back).
const LISTENER_TICKS_AFTER_ANOMALY: u32 = 15;
/// Look for new children of proxies and app servers every this many ticks (forks are not
/// traced: a master's new worker is found in the master's `children` file).
const CHILDREN_SCAN_EVERY: u64 = 5;
/// Reconcile the process table with the list of /proc every this many ticks.
const RECONCILE_EVERY: u64 = 60;

impl<S: FactSource> Enricher<S> {
    pub fn new(src: S, proxy_names: Vec<String>) -> Self {
        Self {
            src,
            table: ProcTable::new(&proxy_names),
            proxy_names,
            known: HashSet::new(),
            ns_known: HashSet::new(),
            host_net: None,
            net_known: HashMap::new(),
            proxy_nets: BTreeMap::new(),
            net_netstat: BTreeMap::new(),
            paths: HashMap::new(),
            denied: BTreeMap::new(),
            listeners: None,
            netstat: None,
            // The start-up snapshot has just read the listeners.
            quiet_ticks: LISTENER_TICKS_AFTER_ANOMALY,
            ticks: 0,
            relevant: HashSet::new(),
            owners: OwnerCache::default(),
            targets: BTreeSet::new(),
            budget: Budget::tick(),
            listeners_read: false,
            walks: 0,
            pending: VecDeque::new(),
        }
    }

    /// The process table (for tests and diagnostics).
    #[must_use]
    pub fn table(&self) -> &ProcTable {
        &self.table
    }

    /// The fact source (for tests and diagnostics).
    #[must_use]
    pub fn source(&self) -> &S {
        &self.src
    }

    fn remember(&mut self, p: ProcInfo, out: &mut Vec<ProcInfo>) {
        if self.known.len() >= MAX_KNOWN {
            self.known.clear();
        }
        if self.relevant.len() >= MAX_KNOWN {
            self.relevant.clear();
        }
        if interesting(&p, &self.proxy_names) || self.relevant.contains(&p.ppid) {
            self.relevant.insert(p.pid);
        }
        if self.known.insert(p.pid) {
            out.push(p);
        }
    }

    /// Reads a process from /proc into the table (a new process: a candidate listener owner).
    fn read_process(&mut self, pid: u32) -> Option<ProcInfo> {
        let _ = self.budget.take();
        let p = self.src.process(pid)?;
        if !self.table.contains(pid) {
            self.owners.appeared(pid);
        }
        self.table.insert(p.clone());
        Some(p)
    }

    /// A process from the table, or read once from /proc.
    fn process(&mut self, pid: u32) -> Option<ProcInfo> {
        match self.table.get(pid) {
            Some(p) => Some(p.clone()),
            None => self.read_process(pid),
        }
    }

    /// Sends a process's mount namespace once (a socket bound in one is invisible in another).
    /// An OOM victim's memory cgroup, with the cgroup it was seen in while alive.
    fn victim_memcg(&mut self, pid: u32) -> Option<crate::facts::MemcgInfo> {
        let known = self
            .table
            .get(pid)
            .map(|p| p.cgroup.clone())
            .unwrap_or_default();
        self.src.memcg(pid, &known)
    }

    fn note_ns(&mut self, pid: u32, out: &mut Vec<MountNs>) {
        if pid == 0 || self.ns_known.contains(&pid) {
            return;
        }
        if self.ns_known.len() >= MAX_KNOWN {
            self.ns_known.clear();
        }
        if let Some(mnt_ns) = self.src.mount_ns(pid) {
            self.ns_known.insert(pid);
            out.push(MountNs { pid, mnt_ns });
        }
    }

    /// Reads a process's network namespace once; sends it when it is not the host's, and
    /// with `proxy`, remembers it as a namespace whose listeners matter. The namespace, or
    /// `None` for the host's (or unreadable).
    fn note_net(&mut self, pid: u32, proxy: bool, out: &mut Vec<NetNs>) -> Option<u64> {
        if pid == 0 {
            return None;
        }
        let net = if let Some(&n) = self.net_known.get(&pid) {
            n
        } else {
            if self.net_known.len() >= MAX_KNOWN {
                self.net_known.clear();
            }
            if self.host_net.is_none() {
                self.host_net = self.src.host_net_ns();
            }
            let net = self.src.net_ns(pid).filter(|&n| Some(n) != self.host_net);
            self.net_known.insert(pid, net);
            if let Some(net_ns) = net {
                out.push(NetNs { pid, net_ns });
            }
            net
        };
        if let Some(ns) = net
            && proxy
            && (self.proxy_nets.contains_key(&ns) || self.proxy_nets.len() < MAX_NETNS)
        {
            self.proxy_nets.insert(ns, pid);
        }
        net
    }

    /// The network namespace of a pid as last read, when it is not the host's.
    #[must_use]
    pub fn net_ns_of(&self, pid: u32) -> Option<u64> {
        self.net_known.get(&pid).copied().flatten()
    }

    /// Every listening socket as (target, inode, network namespace): the host's (gwtrace's
    /// own), then each proxy namespace's, read there.
    fn all_sockets(&mut self) -> Vec<(String, u64, Option<u64>)> {
        let mut out: Vec<(String, u64, Option<u64>)> = self
            .src
            .sockets()
            .into_iter()
            .map(|(t, i)| (t, i, None))
            .collect();
        let nets: Vec<(u64, u32)> = self.proxy_nets.iter().map(|(&n, &p)| (n, p)).collect();
        for (ns, pid) in nets {
            let _ = self.budget.take();
            let read = self.src.sockets_in(ns, pid).or_else(|| {
                // That pid left: another one seen in the namespace.
                let other = self
                    .net_known
                    .iter()
                    .find(|&(&p, &n)| p != pid && n == Some(ns))
                    .map(|(&p, _)| p)?;
                self.proxy_nets.insert(ns, other);
                self.src.sockets_in(ns, other)
            });
            if let Some((sockets, netstat)) = read {
                out.extend(sockets.into_iter().map(|(t, i)| (t, i, Some(ns))));
                if let Some(n) = netstat {
                    self.net_netstat.insert(ns, n);
                }
            } else {
                log::debug!("net:[{ns}]: no process left to read it as, forgotten");
                self.proxy_nets.remove(&ns);
                self.net_netstat.remove(&ns);
            }
        }
        out
    }

    /// The host's listen-queue counters plus those of the proxies' namespaces (a listener
    /// overflows in the namespace it is bound in).
    fn netstat(&mut self) -> Option<Netstat> {
        let mut n = self.src.netstat();
        for o in self.net_netstat.values() {
            let s = n.get_or_insert_with(Netstat::default);
            s.listen_overflows += o.listen_overflows;
            s.listen_drops += o.listen_drops;
        }
        n
    }

    /// Walks a path as `pid` sees it, at most once per [`PATH_REFRESH_NS`] and
    /// [`WALKS_PER_TICK`] walks a tick.
    fn walk(&mut self, ev: &Event, path: &str, up: &mut FactsUpdate) -> bool {
        let ns = ev.mono_ns;
        let fresh = self
            .paths
            .get(path)
            .is_some_and(|&t| ns < t + PATH_REFRESH_NS);
        if fresh {
            return false;
        }
        self.walk_now(ev, path, up)
    }

    /// Walks a path as the event's process sees it, within [`WALKS_PER_TICK`] walks a tick.
    fn walk_now(&mut self, ev: &Event, path: &str, up: &mut FactsUpdate) -> bool {
        let (pid, ns) = (ev.pid, ev.mono_ns);
        if self.walks >= WALKS_PER_TICK {
            return false;
        }
        self.walks += 1;
        if self.paths.len() >= MAX_KNOWN {
            self.paths.clear();
        }
        self.paths.insert(path.to_owned(), ns);
        let info = self.src.path_of(pid, path);
        self.names_for(ev, &info, up);
        up.paths.push(info);
        true
    }

    /// The names of the walk's owners and of the walker's own ids, as its system spells them:
    /// verdicts print `gwapp:gwapp` and `usermod -aG gwapp www-data`, not numbers.
    fn names_for(&mut self, ev: &Event, info: &PathInfo, up: &mut FactsUpdate) {
        let pid = ev.pid;
        let comps = info.components.iter().filter(|c| c.exists);
        // The event's own ids too: a worker that dropped privileges after the table read it.
        let mut uids: Vec<u32> = comps.clone().map(|c| c.uid).chain([ev.uid]).collect();
        let mut gids: Vec<u32> = comps.map(|c| c.gid).chain([ev.gid]).collect();
        if let Some(p) = self.process(pid) {
            uids.push(p.uid);
            gids.push(p.gid);
            gids.extend(&p.groups);
        }
        uids.sort_unstable();
        uids.dedup();
        gids.sort_unstable();
        gids.dedup();
        if let Some(n) = self.src.id_names(pid, &uids, &gids)
            && !(n.users.is_empty() && n.groups.is_empty())
        {
            up.names.push(n);
        }
    }

    /// Stamps a non-empty update with the time it was read.
    fn stamp(&mut self, up: &mut FactsUpdate) {
        if !up.is_empty() {
            up.read_ns = self.src.now_ns();
        }
    }

    /// The listeners now, with the owners that matter: every proxy's and app server's, and the
    /// failing targets' (searched over the table, most likely owners first, within the budget).
    /// With `all`, every listener's owner is wanted (once, at start).
    fn read_listeners(&mut self, all: bool) -> Vec<Listener> {
        self.listeners_read = true;
        let sockets = self.all_sockets();
        let listening: BTreeSet<u64> = sockets.iter().map(|(_, i, _)| *i).collect();
        let wanted: BTreeSet<u64> = if all {
            listening.clone()
        } else {
            sockets
                .iter()
                .filter(|(t, _, _)| self.targets.iter().any(|x| covers(t, x)))
                .map(|(_, i, _)| *i)
                .collect()
        };
        let likely = self.table.likely_owners();
        let table = &self.table;
        self.owners.refresh(
            &mut self.src,
            &listening,
            &wanted,
            &likely,
            || table.search_order(&likely),
            &mut self.budget,
        );
        sockets
            .into_iter()
            .map(|(target, inode, net_ns)| {
                let pid = self.owners.owner(inode);
                let comm = pid.and_then(|p| self.process(p)).map(|p| p.comm);
                Listener {
                    target,
                    pid,
                    comm,
                    backlog: None,
                    net_ns,
                }
            })
            .collect()
    }

    /// Everything worth knowing now: proxies, app servers, listener owners and their children.
    pub fn snapshot(&mut self, proxies: &[u32]) -> FactsUpdate {
        // The one full read of /proc: from now on the kernel's events keep the table.
        let all = self.src.processes();
        self.table = ProcTable::load(&self.proxy_names, &all);
        // The proxies' network namespaces first: their listeners are read there too.
        let mut net_ns = Vec::new();
        for &pid in proxies {
            self.note_net(pid, true, &mut net_ns);
        }
        // Start-up may read every process's fds, once: each listener's owner is then cached
        // until it exits.
        self.budget = Budget::unlimited();
        let listeners = self.read_listeners(true);
        self.budget = Budget::tick();
        let mut keep: HashSet<u32> = listeners.iter().filter_map(|l| l.pid).collect();
        keep.extend(proxies);
        for p in &all {
            if interesting(p, &self.proxy_names) {
                keep.insert(p.pid);
            }
        }
        let parents = keep.clone();
        let mut procs = Vec::new();
        for p in all {
            if keep.contains(&p.pid) || parents.contains(&p.ppid) {
                self.remember(p, &mut procs);
            }
        }
        let mut mount_ns = Vec::new();
        for pid in proxies
            .iter()
            .copied()
            .chain(listeners.iter().filter_map(|l| l.pid))
        {
            self.note_ns(pid, &mut mount_ns);
        }
        for pid in listeners.iter().filter_map(|l| l.pid) {
            self.note_net(pid, false, &mut net_ns);
        }
        self.listeners = Some(listeners.clone());
        self.netstat = self.netstat();
        let mut up = FactsUpdate {
            processes: procs,
            listeners: Some(listeners),
            netstat: self.netstat,
            proxies: proxies.to_vec(),
            mount_ns,
            proc_net_ns: net_ns,
            ..FactsUpdate::default()
        };
        self.stamp(&mut up);
        up
    }

    /// Whether an event concerns a proxy or an upstream (the engine ignores the rest).
    #[must_use]
    pub fn relevant(&self, ev: &Event) -> bool {
        let by_name = self.proxy_names.contains(&ev.comm)
            || APP_SERVERS.iter().any(|n| ev.comm.starts_with(n));
        by_name
            || self.relevant.contains(&ev.pid)
            || match &ev.body {
                Body::Signal { target_pid, .. } => self.relevant.contains(target_pid),
                Body::OomKill { .. } => true,
                _ => false,
            }
    }

    /// Facts the event needs that have not been sent yet.
    pub fn before(&mut self, ev: &Event) -> Option<FactsUpdate> {
        let relevant = self.relevant(ev);
        if relevant
            && !matches!(
                ev.body,
                Body::Exec { .. } | Body::Facts(_) | Body::Loss { .. }
            )
        {
            log::debug!(
                "anomaly: {} from {}[{}]: re-reading listeners for a while",
                ev.kind(),
                ev.comm,
                ev.pid
            );
            self.quiet_ticks = 0;
        }
        let mut up = FactsUpdate::default();
        let mut want: Vec<u32> = Vec::new();
        match &ev.body {
            Body::ConnectFailed { target, .. } => {
                want.push(ev.pid);
                if relevant {
                    self.proxy_connect_failed(ev, target, &mut up);
                }
            }
            Body::ExecFailed {
                filename, errno, ..
            } => {
                want.push(ev.pid);
                // ENOENT, EACCES, ENOTDIR: which component of the program's path is wrong.
                if matches!(errno, 2 | 13 | 20) && filename.starts_with('/') {
                    self.walk(ev, filename, &mut up);
                }
            }
            Body::Signal { target_pid, .. } => {
                want.push(ev.pid);
                want.push(*target_pid);
            }
            Body::OomKill { victim_pid, .. } => {
                want.push(*victim_pid);
                if let Some(m) = self.victim_memcg(*victim_pid) {
                    up.memcgs.push(m);
                }
            }
            Body::Exec { filename, .. } => {
                // A new program under the same pid (maybe in a namespace of its own): read it
                // again, now if the budget allows or it looks like a proxy or an app server,
                // else at the next tick.
                self.known.remove(&ev.pid);
                self.ns_known.remove(&ev.pid);
                self.net_known.remove(&ev.pid);
                self.owners.exited(ev.pid);
                self.table.remove(ev.pid);
                let notable = self.proxy_names.contains(&ev.comm)
                    || owners::is_app_server(&ev.comm, filename);
                if notable || self.budget.left() > 0 {
                    want.push(ev.pid);
                } else if self.pending.len() < MAX_PENDING {
                    self.pending.push_back(ev.pid);
                }
            }
            Body::AcceptFailed { .. } => {
                want.push(ev.pid);
                if relevant {
                    self.note_net(ev.pid, false, &mut up.proc_net_ns);
                }
            }
            Body::ProcessExit { .. } => {
                want.push(ev.pid);
            }
            Body::NetfilterDrop { .. } => {
                want.push(ev.pid);
                if relevant {
                    self.note_net(ev.pid, true, &mut up.proc_net_ns);
                    // The listener the rule hides is the evidence.
                    self.refresh_listeners(&mut up);
                }
            }
            Body::ConnEnd(c) => self.conn_end(ev.pid, c.peer_pid, relevant, &mut want, &mut up),
            Body::Loss { .. } | Body::Facts(_) | Body::Hooks { .. } => {}
        }
        for pid in want {
            if pid == 0 || self.known.contains(&pid) {
                continue;
            }
            // The table's copy, unless the event shows other credentials (a worker that
            // dropped privileges after the table read it).
            let stale = pid == ev.pid
                && !matches!(ev.body, Body::Facts(_) | Body::Loss { .. })
                && self.table.get(pid).is_some_and(|p| p.uid != ev.uid);
            let p = if stale {
                self.read_process(pid)
            } else {
                self.process(pid)
            };
            if let Some(p) = p {
                self.remember(p, &mut up.processes);
            }
        }
        if matches!(ev.body, Body::ProcessExit { .. }) {
            self.table.remove(ev.pid);
            self.owners.exited(ev.pid);
            self.net_known.remove(&ev.pid);
        }
        self.stamp(&mut up);
        (!up.is_empty()).then_some(up)
    }

    /// The facts a proxy's (or an upstream's) failed connect needs: its network namespace and
    /// who listens there, the socket path's walk in its mount namespace.
    fn proxy_connect_failed(&mut self, ev: &Event, target: &str, up: &mut FactsUpdate) {
        if self.targets.len() < MAX_TARGETS {
            self.targets.insert(target.to_owned());
        }
        if self
            .note_net(ev.pid, true, &mut up.proc_net_ns)
            .is_some_and(|ns| !self.net_listed(ns))
        {
            // A namespace not read yet: who listens there is the question.
            self.refresh_listeners(up);
        }
        if let Some(path) = target.strip_prefix("unix:").filter(|p| p.starts_with('/')) {
            if matches!(ev.body, Body::ConnectFailed { errno: 13, .. })
                && (self.denied.len() < MAX_DENIED || self.denied.contains_key(path))
            {
                self.denied.insert(path.to_owned(), ev.clone());
            }
            // The path as the proxy sees it: in its own mount namespace, under its chroot.
            self.note_ns(ev.pid, &mut up.mount_ns);
            if let Some(root) = self.src.chroot(ev.pid)
                && !up.roots.iter().any(|r| r.pid == ev.pid)
            {
                up.roots.push(ProcRoot { pid: ev.pid, root });
            }
            if self.walk(ev, path, up) && !self.listeners_read {
                // Who listens may have changed too (at most once a tick: the periodic refresh
                // follows anomalies).
                self.refresh_listeners(up);
            }
        }
    }

    /// Whether the last listener facts include namespace `ns`'s.
    fn net_listed(&self, ns: u64) -> bool {
        self.listeners
            .as_ref()
            .is_some_and(|ls| ls.iter().any(|l| l.net_ns == Some(ns)))
            || self.listeners_read
    }

    /// A proxy's broken connection: the proxy, and the task that closed the other end (the
    /// app's worker) with the listeners, so the engine can check that it serves the target.
    fn conn_end(
        &mut self,
        pid: u32,
        peer: Option<u32>,
        relevant: bool,
        want: &mut Vec<u32>,
        up: &mut FactsUpdate,
    ) {
        want.push(pid);
        want.extend(peer);
        if relevant {
            self.refresh_listeners(up);
        }
    }

    fn refresh_listeners(&mut self, up: &mut FactsUpdate) {
        let now = self.read_listeners(false);
        if self.listeners.as_ref() != Some(&now) {
            // Owners of new listeners are upstream candidates: make sure their ProcInfo is known.
            for pid in now.iter().filter_map(|l| l.pid) {
                if !self.known.contains(&pid)
                    && let Some(p) = self.process(pid)
                {
                    self.remember(p, &mut up.processes);
                }
                self.note_ns(pid, &mut up.mount_ns);
                self.note_net(pid, false, &mut up.proc_net_ns);
            }
            self.listeners = Some(now.clone());
            up.listeners = Some(now);
        }
    }

    /// New children of proxies and app servers (their workers), from the masters' `children`
    /// files: forks are not traced.
    fn scan_children(&mut self) {
        let masters = self.table.likely_owners();
        for pid in masters {
            if !self.budget.take() {
                break;
            }
            for child in self.src.children(pid) {
                if !self.table.contains(child) && self.pending.len() < MAX_PENDING {
                    self.pending.push_back(child);
                }
            }
        }
    }

    /// Reads pending new processes within the budget; sends the ones that matter.
    fn read_pending(&mut self, up: &mut FactsUpdate) {
        while self.budget.left() > 0 {
            let Some(pid) = self.pending.pop_front() else {
                break;
            };
            if self.table.contains(pid) || self.known.contains(&pid) {
                continue;
            }
            if let Some(p) = self.read_process(pid)
                && (interesting(&p, &self.proxy_names) || self.known.contains(&p.ppid))
            {
                self.remember(p, &mut up.processes);
            }
        }
    }

    /// The denied socket paths walked again, as the proxy that was denied sees them.
    fn rewalk_denied(&mut self, up: &mut FactsUpdate) {
        let denied: Vec<(String, Event)> = self
            .denied
            .iter()
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect();
        for (path, mut ev) in denied {
            if let Some(now) = self.src.now_ns() {
                ev.mono_ns = now;
            }
            self.walk_now(&ev, &path, up);
        }
    }

    /// Periodic refresh: listeners, listen-queue counters, new interesting processes.
    pub fn periodic(&mut self) -> Option<FactsUpdate> {
        let mut up = FactsUpdate::default();
        self.ticks += 1;
        self.quiet_ticks = self.quiet_ticks.saturating_add(1);
        self.budget = Budget::tick();
        self.listeners_read = false;
        self.walks = 0;
        if self.ticks.is_multiple_of(RECONCILE_EVERY) {
            // Lost exits and untraced forks: the only walk of /proc (its pids), once a minute.
            let pids = self.src.pids();
            for pid in self.table.reconcile(&pids) {
                if self.pending.len() < MAX_PENDING {
                    self.pending.push_back(pid);
                }
            }
            self.owners.reconcile();
        }
        if self.ticks % CHILDREN_SCAN_EVERY == 1 {
            self.scan_children();
        }
        self.read_pending(&mut up);
        // Listeners only around anomalies.
        if self.quiet_ticks <= LISTENER_TICKS_AFTER_ANOMALY {
            self.refresh_listeners(&mut up);
            self.rewalk_denied(&mut up);
        } else {
            self.denied.clear();
        }
        let ns = self.netstat();
        if ns != self.netstat {
            self.netstat = ns;
            up.netstat = ns;
        }
        self.stamp(&mut up);
        (!up.is_empty()).then_some(up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{IdNames, MemcgInfo, PathInfo};

    /// Pid 101 (the proxy worker) lives in mount namespace 2, everything else in 1.
    #[derive(Default)]
    struct Fake {
        walked_as: Vec<(u32, String)>,
        /// Network namespaces read, as which pid.
        read_in: Vec<(u64, u32)>,
        /// What a walk returns (none by default).
        components: Vec<crate::facts::PathComponent>,
        /// The names asked for: (pid, uids, gids).
        names_asked: Vec<(u32, Vec<u32>, Vec<u32>)>,
    }

    impl FactSource for Fake {
        fn listeners(&mut self) -> Vec<Listener> {
            vec![Listener {
                target: "unix:/srv/sock/app.sock".into(),
                pid: Some(200),
                comm: Some("gunicorn".into()),
                backlog: None,
                net_ns: None,
            }]
        }
        fn process(&mut self, pid: u32) -> Option<ProcInfo> {
            Some(ProcInfo {
                pid,
                comm: if pid == 101 { "nginx" } else { "gunicorn" }.into(),
                ..ProcInfo::default()
            })
        }
        fn processes(&mut self) -> Vec<ProcInfo> {
            [100, 101, 200]
                .into_iter()
                .filter_map(|p| self.process(p))
                .collect()
        }
        fn path(&mut self, path: &str) -> PathInfo {
            self.path_of(0, path)
        }
        fn path_of(&mut self, pid: u32, path: &str) -> PathInfo {
            self.walked_as.push((pid, path.to_owned()));
            PathInfo {
                path: path.into(),
                components: self.components.clone(),
            }
        }
        fn id_names(&mut self, pid: u32, uids: &[u32], gids: &[u32]) -> Option<IdNames> {
            self.names_asked.push((pid, uids.to_vec(), gids.to_vec()));
            Some(IdNames::from_files(
                pid,
                "www-data:x:33:33::/:/bin/false\ngwapp:x:999:995::/:/bin/false\n",
                "gwapp:x:995:\n",
                uids,
                gids,
            ))
        }
        fn memcg(&mut self, _pid: u32, _known_cgroup: &str) -> Option<MemcgInfo> {
            None
        }
        fn netstat(&mut self) -> Option<Netstat> {
            None
        }
        fn mount_ns(&mut self, pid: u32) -> Option<u64> {
            Some(if pid == 101 { 2 } else { 1 })
        }
        fn now_ns(&mut self) -> Option<u64> {
            Some(77)
        }
        /// The nginx pids live in network namespace 9, everything else in the host's (1).
        fn net_ns(&mut self, pid: u32) -> Option<u64> {
            Some(if matches!(pid, 100 | 101) { 9 } else { 1 })
        }
        fn host_net_ns(&mut self) -> Option<u64> {
            Some(1)
        }
        fn sockets_in(&mut self, ns: u64, pid: u32) -> Option<crate::facts::NsListeners> {
            self.read_in.push((ns, pid));
            (ns == 9).then(|| {
                (
                    vec![("127.0.0.1:8000".to_owned(), 55)],
                    Some(Netstat {
                        listen_overflows: 3,
                        listen_drops: 4,
                    }),
                )
            })
        }
    }

    fn event(pid: u32, comm: &str, body: Body) -> Event {
        Event::of_task(String::new(), 50, pid, comm, body)
    }

    #[test]
    fn socket_paths_are_walked_in_the_proxys_namespace() {
        let mut e = Enricher::new(Fake::default(), vec!["nginx".into()]);
        let snap = e.snapshot(&[100]);
        assert_eq!(
            snap.mount_ns,
            [
                MountNs {
                    pid: 100,
                    mnt_ns: 1
                },
                MountNs {
                    pid: 200,
                    mnt_ns: 1
                }
            ],
            "proxies and listener owners"
        );
        assert_eq!(snap.read_ns, Some(77));
        let failed = event(
            101,
            "nginx",
            Body::ConnectFailed {
                target: "unix:/srv/sock/app.sock".into(),
                errno: 2,
                errno_name: "ENOENT".into(),
                source: "syscall".into(),
                count: 1,
            },
        );
        let up = e.before(&failed).expect("facts");
        assert_eq!(e.src.walked_as, [(101, "/srv/sock/app.sock".to_owned())]);
        assert_eq!(
            up.mount_ns,
            [MountNs {
                pid: 101,
                mnt_ns: 2
            }]
        );
        assert_eq!(up.read_ns, Some(77));
        // Once per pid and per refresh period.
        assert!(e.before(&failed).is_none());
    }

    #[test]
    fn a_denied_socket_path_is_walked_again_after_the_failures_stop() {
        // socket-permission resolves only on a walk read after the last failure: once the
        // directory is repaired nothing fails, so the ticks after the anomaly walk it again.
        let mut e = Enricher::new(Fake::default(), vec!["nginx".into()]);
        e.snapshot(&[100]);
        let denied = event(
            101,
            "nginx",
            Body::ConnectFailed {
                target: "unix:/srv/sock/app.sock".into(),
                errno: 13,
                errno_name: "EACCES".into(),
                source: "syscall".into(),
                count: 1,
            },
        );
        e.before(&denied);
        assert_eq!(e.src.walked_as.len(), 1);
        let up = e.periodic().expect("facts");
        assert_eq!(up.paths.len(), 1, "{up:?}");
        assert_eq!(e.src.walked_as[1], (101, "/srv/sock/app.sock".to_owned()));
        // Past the anomaly window the path is forgotten: no walk per tick for ever.
        for _ in 0..=LISTENER_TICKS_AFTER_ANOMALY {
            e.periodic();
        }
        let walks = e.src.walked_as.len();
        e.periodic();
        assert_eq!(e.src.walked_as.len(), walks);
    }

    #[test]
    fn listeners_are_read_in_the_proxys_network_namespace_too() {
        let mut e = Enricher::new(Fake::default(), vec!["nginx".into()]);
        let snap = e.snapshot(&[100]);
        assert_eq!(
            snap.proc_net_ns,
            [NetNs {
                pid: 100,
                net_ns: 9
            }],
            "only namespaces not the host's"
        );
        assert_eq!(e.src.read_in, [(9, 100)]);
        let ls = snap.listeners.expect("listeners");
        let tagged: Vec<(&str, Option<u64>)> =
            ls.iter().map(|l| (l.target.as_str(), l.net_ns)).collect();
        assert_eq!(
            tagged,
            [
                ("unix:/srv/sock/app.sock", None),
                ("127.0.0.1:8000", Some(9))
            ]
        );
        assert_eq!(
            snap.netstat,
            Some(Netstat {
                listen_overflows: 3,
                listen_drops: 4
            }),
            "the namespace's listen-queue counters count"
        );
        let failed = event(
            101,
            "nginx",
            Body::ConnectFailed {
                target: "127.0.0.1:8000".into(),
                errno: 111,
                errno_name: "ECONNREFUSED".into(),
                source: "tcp_state".into(),
                count: 1,
            },
        );
        let up = e.before(&failed).expect("facts");
        assert_eq!(
            up.proc_net_ns,
            [NetNs {
                pid: 101,
                net_ns: 9
            }]
        );
        assert_eq!(e.net_ns_of(101), Some(9));
        assert_eq!(e.net_ns_of(200), None, "the host's is not named");
    }

    #[test]
    fn a_walk_brings_the_names_of_its_owners_and_of_the_walker() {
        let comp = |path: &str, uid, gid| crate::facts::PathComponent {
            path: path.into(),
            exists: true,
            uid,
            gid,
            mode: 0o040_755,
        };
        let fake = Fake {
            components: vec![comp("/", 0, 0), comp("/run/app.sock", 999, 995)],
            ..Fake::default()
        };
        let mut e = Enricher::new(fake, vec!["nginx".into()]);
        let mut failed = event(
            101,
            "nginx",
            Body::ConnectFailed {
                target: "unix:/run/app.sock".into(),
                errno: 13,
                errno_name: "EACCES".into(),
                source: "syscall".into(),
                count: 1,
            },
        );
        (failed.uid, failed.gid) = (33, 33);
        let up = e.before(&failed).expect("facts");
        // The fake's ProcInfo says uid 0: the event's own ids are asked for too.
        assert_eq!(
            e.src.names_asked,
            [(101, vec![0, 33, 999], vec![0, 33, 995])]
        );
        let n = &up.names[0];
        assert_eq!(
            (n.pid, n.user(33), n.user(999)),
            (101, Some("www-data"), Some("gwapp"))
        );
        assert_eq!((n.group(995), n.group(33)), (Some("gwapp"), None));
    }

    #[test]
    fn failed_exec_paths_are_walked() {
        let mut e = Enricher::new(Fake::default(), vec!["nginx".into()]);
        let up = e
            .before(&event(
                400,
                "sh",
                Body::ExecFailed {
                    filename: "/srv/app/venv/bin/gunicorn".into(),
                    errno: 2,
                    errno_name: "ENOENT".into(),
                },
            ))
            .expect("facts");
        assert_eq!(up.paths.len(), 1);
        assert_eq!(
            e.src.walked_as,
            [(400, "/srv/app/venv/bin/gunicorn".to_owned())]
        );
    }
}
