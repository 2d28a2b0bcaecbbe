//! What the engine remembers: merged procfs facts (processes, listeners and who owned them over
//! time, paths, memory cgroups, netstat samples) and bounded logs of the kernel events.
//!
//! Nothing here decides a cause: the events are stored raw and classified when verdicts are
//! asked for, because the facts that explain a failure (the socket path's walk, the process
//! table) usually arrive after it: the collector reacts to the event.
//!
//! Every table is capped; when a cap is exceeded the oldest entries (by last activity) go first.
use std::collections::{HashMap, HashSet, VecDeque};

use super::EngineConfig;
use crate::catalog::{ProcNames, ProxyRule};
use crate::event::{Body, ConnEndInfo, Event};
use crate::facts::{
    FactsUpdate, IdNames, Listener, MemcgInfo, Netstat, PathInfo, ProcInfo, ProxyConfig,
};

/// Processes remembered (alive or exited).
pub(crate) const MAX_PROCS: usize = 16_384;
/// An exited process is forgotten this long after its exit: no rule looks further back (a
/// restart's gap is the longest window; its exit record keeps a snapshot of it anyway).
pub(crate) const EXITED_KEEP_NS: u64 = super::lifecycle::MAX_RESTART_GAP_NS;
/// Exited processes are aged out at most this often (a scan of the table).
const AGE_EVERY_NS: u64 = 1_000_000_000;
/// Distinct (proxy worker, target, errno) failure groups.
pub(crate) const MAX_FAIL_GROUPS: usize = 4096;
/// Failure timestamps kept per group (to split a group across a restart window).
pub(crate) const RECENT_PER_GROUP: usize = 256;
/// Process exits, signals, OOM kills remembered.
pub(crate) const MAX_EXITS: usize = 4096;
pub(crate) const MAX_SIGNALS: usize = 4096;
pub(crate) const MAX_OOMS: usize = 1024;
pub(crate) const MAX_EXEC_FAILURES: usize = 1024;
pub(crate) const MAX_NETFILTER_DROPS: usize = 1024;
/// Broken connection ends remembered.
pub(crate) const MAX_CONN_ENDS: usize = 4096;
/// Socket paths, memory cgroups, listener targets with owner history.
pub(crate) const MAX_PATHS: usize = 4096;
pub(crate) const MAX_MEMCGS: usize = 4096;
pub(crate) const MAX_LISTENER_TARGETS: usize = 4096;
/// Owners remembered per listener target.
pub(crate) const OWNERS_PER_TARGET: usize = 8;
/// Netstat samples kept.
pub(crate) const NETSTAT_SAMPLES: usize = 64;
/// Proxy pids learnt from facts.
pub(crate) const MAX_PROXY_PIDS: usize = 1024;
/// Proxy masters whose configuration is remembered.
pub(crate) const MAX_PROXY_CONFIGS: usize = 256;

/// Signals worth remembering: the terminating ones, plus reload/upgrade signals for evidence.
const KEPT_SIGNALS: [i32; 13] = [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 15, 31];

/// Credentials of a process (from its `ProcInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// A process as the engine knows it, merged from facts and events.
#[derive(Clone, Debug, Default)]
pub(crate) struct Proc {
    pub pid: u32,
    pub ppid: Option<u32>,
    pub comm: String,
    pub cmdline: String,
    /// Executed file (from an exec event).
    pub exe: String,
    /// From `ProcInfo` (with supplementary groups).
    pub creds: Option<Creds>,
    /// From the last event it caused (uid, gid), when facts never came.
    pub event_creds: Option<(u32, u32)>,
    pub cgroup: String,
    /// Boot-relative start time (0 = unknown).
    pub start_ns: u64,
    /// When it executed its current program, if seen.
    pub exec_ns: Option<u64>,
    pub last_seen_ns: u64,
    /// When it exited, if it did.
    pub exited_ns: Option<u64>,
    /// Its mount namespace (`/proc/PID/ns/mnt` inode), when the facts carried it.
    pub mnt_ns: Option<u64>,
    /// Its network namespace (`/proc/PID/ns/net` inode) when it is not the host's.
    pub net_ns: Option<u64>,
    /// Its root directory when it runs chrooted (facts `roots`): it resolves unix paths under it.
    pub chroot: Option<String>,
    /// User and group names as its system spells them (facts `names`).
    pub names: Option<IdNames>,
}

impl Proc {
    /// When this process instance began: its exec if seen, else its start time.
    pub(crate) fn began_ns(&self) -> Option<u64> {
        self.exec_ns
            .or((self.start_ns != 0).then_some(self.start_ns))
    }
}

/// A process exit, with a snapshot of what was known about the process then.
#[derive(Clone, Debug)]
pub(crate) struct ExitRecord {
    pub ns: u64,
    pub proc: Proc,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub core_dumped: bool,
}

/// A SYN of a process's connect that a netfilter rule dropped (`netfilter_drop` event).
#[derive(Clone, Debug)]
pub(crate) struct NetfilterDropRecord {
    pub ns: u64,
    pub pid: u32,
    pub target: String,
    pub count: u64,
}

/// A connection a process opened that ended before the answer to its last request
/// (`conn_end` event).
#[derive(Clone, Debug)]
pub(crate) struct ConnEndRecord {
    /// When the process read the end.
    pub ns: u64,
    pub pid: u32,
    pub comm: String,
    pub info: ConnEndInfo,
}

/// A signal generated for a process.
#[derive(Clone, Debug)]
pub(crate) struct SignalRecord {
    pub ns: u64,
    pub sig: i32,
    pub sender_pid: u32,
    pub sender_comm: String,
    pub target_pid: u32,
    pub target_comm: String,
    pub code: i32,
    pub result: i32,
}

impl SignalRecord {
    /// Delivered (0) or merged into a pending one (2): it takes effect.
    pub(crate) fn effective(&self) -> bool {
        matches!(self.result, 0 | 2)
    }
}

/// An exec that failed (a supervisor could not start the app: wrong path or virtualenv).
#[derive(Clone, Debug)]
pub(crate) struct ExecFailRecord {
    pub ns: u64,
    pub pid: u32,
    pub comm: String,
    pub filename: String,
    pub errno: i32,
}

/// An OOM kill.
#[derive(Clone, Debug)]
pub(crate) struct OomRecord {
    pub ns: u64,
    pub trigger_pid: u32,
    pub trigger_comm: String,
    pub victim_pid: u32,
    pub victim_comm: String,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
}

/// One process seen owning a listener, and when.
#[derive(Clone, Debug)]
pub(crate) struct OwnerSeen {
    pub pid: u32,
    pub first_ns: u64,
    pub last_ns: u64,
    /// The network namespace the listener was bound in, when not the host's.
    pub net_ns: Option<u64>,
}

/// Failed connects are grouped by who, where and how.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FailKey {
    pub pid: u32,
    pub target: String,
    pub errno: i32,
    /// `tcp_abandoned`: the proxy's own connect timeout.
    pub abandoned: bool,
}

/// Counts and times of one failure group.
#[derive(Clone, Debug, Default)]
pub(crate) struct FailGroup {
    pub comm: String,
    pub uid: u32,
    pub gid: u32,
    pub source: String,
    pub count: u64,
    /// Of `count`, the failures inferred from a connect attempt plus a check (source
    /// `attempt`, `--hooks auto` before the syscall hooks were attached).
    pub inferred: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// The latest failure times (at most [`RECENT_PER_GROUP`]), oldest first.
    pub recent: VecDeque<u64>,
}

/// A netstat snapshot and its time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NetstatSample {
    pub ns: u64,
    pub stats: Netstat,
}

/// Everything remembered.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub procs: HashMap<u32, Proc>,
    /// The latest listener snapshot, and when it came.
    pub listeners: Vec<Listener>,
    pub listeners_ns: Option<u64>,
    /// Every process seen owning each listener target.
    pub owners: HashMap<String, Vec<OwnerSeen>>,
    pub paths: HashMap<String, (u64, PathInfo)>,
    pub memcgs: HashMap<u32, (u64, MemcgInfo)>,
    pub netstat: VecDeque<NetstatSample>,
    pub fact_proxies: HashSet<u32>,
    /// The upstreams each proxy master is configured for, by master pid (forgotten when that
    /// pid execs or exits: another program's, or the next instance's, configuration).
    pub proxy_configs: HashMap<u32, ProxyConfig>,
    /// Masters told to reload since their configuration was read: until it is read again, it
    /// may lack the sites the reload added, so it drops no symptom.
    pub stale_configs: HashSet<u32>,
    pub failures: HashMap<FailKey, FailGroup>,
    pub exits: VecDeque<ExitRecord>,
    pub signals: VecDeque<SignalRecord>,
    pub ooms: VecDeque<OomRecord>,
    pub exec_failures: VecDeque<ExecFailRecord>,
    pub netfilter_drops: VecDeque<NetfilterDropRecord>,
    pub conn_ends: VecDeque<ConnEndRecord>,
    /// The latest event time seen, and when exited processes were last aged out.
    pub now_ns: u64,
    aged_ns: u64,
    /// Events lost by the kernel or the collector, and why.
    pub lost: u64,
    pub loss_reasons: Vec<String>,
}

impl State {
    /// A `netfilter_drop` event: kept for the connect failures it explains.
    fn record_drop(&mut self, ev: &Event, target: &str, count: u64) {
        self.touch(ev);
        let rec = NetfilterDropRecord {
            ns: ev.mono_ns,
            pid: ev.pid,
            target: target.to_owned(),
            count,
        };
        push_capped(&mut self.netfilter_drops, rec, MAX_NETFILTER_DROPS);
    }

    /// A `conn_end` event: the proxy, the task that closed the other end, the connection.
    fn record_conn_end(&mut self, ev: &Event, info: &ConnEndInfo) {
        self.touch(ev);
        if let (Some(pid), Some(comm)) = (info.peer_pid, info.peer_comm.as_deref()) {
            self.touch_pid(pid, comm, info.close_ns.unwrap_or(ev.mono_ns));
        }
        let rec = ConnEndRecord {
            ns: ev.mono_ns,
            pid: ev.pid,
            comm: ev.comm.clone(),
            info: info.clone(),
        };
        push_capped(&mut self.conn_ends, rec, MAX_CONN_ENDS);
    }

    /// An `exec_failed` event.
    fn record_exec_failure(&mut self, ev: &Event, filename: &str, errno: i32) {
        self.touch(ev);
        let rec = ExecFailRecord {
            ns: ev.mono_ns,
            pid: ev.pid,
            comm: ev.comm.clone(),
            filename: filename.to_owned(),
            errno,
        };
        push_capped(&mut self.exec_failures, rec, MAX_EXEC_FAILURES);
    }

    /// Takes one event into the state.
    #[expect(
        clippy::too_many_lines,
        reason = "one arm per event kind; each arm delegates to a record_* method"
    )]
    pub(crate) fn feed(&mut self, ev: &Event, cfg: &EngineConfig) {
        let ns = ev.mono_ns;
        self.now_ns = self.now_ns.max(ns);
        match &ev.body {
            Body::Facts(f) => self.merge_facts(ns, f),
            Body::ConnectFailed {
                target,
                errno,
                source,
                count,
                ..
            } => {
                self.touch(ev);
                self.note_net(ev);
                self.record_failure(ev, (target, *errno, source, *count), cfg);
            }
            Body::AcceptFailed { .. } => {
                self.touch(ev);
                self.note_net(ev);
            }
            Body::ProcessExit {
                exit_code,
                signal,
                core_dumped,
                ..
            } => {
                self.touch(ev);
                self.proxy_configs.remove(&ev.pid);
                self.record_exit(ev, *exit_code, *signal, *core_dumped);
            }
            Body::Signal {
                signal,
                sender_pid,
                target_pid,
                target_comm,
                code,
                result,
                ..
            } => {
                self.touch(ev);
                self.touch_pid(*target_pid, target_comm, ns);
                self.note_reload(*target_pid, target_comm, *signal);
                if KEPT_SIGNALS.contains(signal) {
                    let sender_comm = self.comm_of(*sender_pid).unwrap_or(&ev.comm).to_owned();
                    push_capped(
                        &mut self.signals,
                        SignalRecord {
                            ns,
                            sig: *signal,
                            sender_pid: *sender_pid,
                            sender_comm,
                            target_pid: *target_pid,
                            target_comm: target_comm.clone(),
                            code: *code,
                            result: *result,
                        },
                        MAX_SIGNALS,
                    );
                }
            }
            Body::OomKill {
                victim_pid,
                victim_comm,
                total_vm_kb,
                anon_rss_kb,
                file_rss_kb,
                shmem_rss_kb,
            } => {
                self.touch(ev);
                self.touch_pid(*victim_pid, victim_comm, ns);
                push_capped(
                    &mut self.ooms,
                    OomRecord {
                        ns,
                        trigger_pid: ev.pid,
                        trigger_comm: ev.comm.clone(),
                        victim_pid: *victim_pid,
                        victim_comm: victim_comm.clone(),
                        total_vm_kb: *total_vm_kb,
                        anon_rss_kb: *anon_rss_kb,
                        file_rss_kb: *file_rss_kb,
                        shmem_rss_kb: *shmem_rss_kb,
                    },
                    MAX_OOMS,
                );
            }
            Body::Exec { filename, cmdline } => {
                self.proxy_configs.remove(&ev.pid);
                self.record_exec(ev, filename, cmdline.as_deref());
            }
            Body::ExecFailed {
                filename, errno, ..
            } => self.record_exec_failure(ev, filename, *errno),
            Body::NetfilterDrop { target, count, .. } => self.record_drop(ev, target, *count),
            Body::ConnEnd(info) => self.record_conn_end(ev, info),
            // The capture's own state (which hooks run): no fact about the host.
            Body::Hooks { .. } => {}
            Body::Loss { reason, count } => {
                self.lost = self.lost.saturating_add(*count);
                if !self.loss_reasons.contains(reason) && self.loss_reasons.len() < 8 {
                    self.loss_reasons.push(reason.clone());
                }
            }
        }
        self.evict(cfg);
    }

    fn comm_of(&self, pid: u32) -> Option<&str> {
        self.procs
            .get(&pid)
            .map(|p| p.comm.as_str())
            .filter(|c| !c.is_empty())
    }

    /// Remembers the event's process (its comm and credentials) as seen now.
    fn touch(&mut self, ev: &Event) {
        if ev.pid == 0 {
            return;
        }
        let p = self.touch_pid(ev.pid, &ev.comm, ev.mono_ns);
        p.event_creds = Some((ev.uid, ev.gid));
        if let Some(o) = ev.origin.as_deref().filter(|o| !o.is_root()) {
            o.cgroup.clone_into(&mut p.cgroup);
        }
    }

    fn touch_pid(&mut self, pid: u32, comm: &str, ns: u64) -> &mut Proc {
        let p = self.procs.entry(pid).or_insert_with(|| Proc {
            pid,
            ..Proc::default()
        });
        if p.comm.is_empty() {
            comm.clone_into(&mut p.comm);
        }
        p.last_seen_ns = p.last_seen_ns.max(ns);
        p
    }

    /// One failed-connect line: `count` identical failures, the last at the line's time.
    fn record_failure(
        &mut self,
        ev: &Event,
        (target, errno, source, count): (&str, i32, &str, u64),
        cfg: &EngineConfig,
    ) {
        let key = FailKey {
            pid: ev.pid,
            target: target.to_owned(),
            errno,
            abandoned: source == "tcp_abandoned",
        };
        if !self.failures.contains_key(&key) && self.failures.len() >= MAX_FAIL_GROUPS {
            self.evict_failures(cfg);
        }
        let g = self.failures.entry(key).or_default();
        if g.count == 0 {
            g.first_ns = ev.mono_ns;
        }
        ev.comm.clone_into(&mut g.comm);
        source.clone_into(&mut g.source);
        g.uid = ev.uid;
        g.gid = ev.gid;
        g.count += count;
        if source == "attempt" {
            g.inferred += count;
        }
        g.first_ns = g.first_ns.min(ev.mono_ns);
        g.last_ns = g.last_ns.max(ev.mono_ns);
        if g.recent.len() >= RECENT_PER_GROUP {
            g.recent.pop_front();
        }
        g.recent.push_back(ev.mono_ns);
    }

    fn record_exit(
        &mut self,
        ev: &Event,
        exit_code: Option<i32>,
        signal: Option<i32>,
        core_dumped: bool,
    ) {
        let Some(p) = self.procs.get_mut(&ev.pid) else {
            return;
        };
        p.exited_ns = Some(ev.mono_ns);
        let rec = ExitRecord {
            ns: ev.mono_ns,
            proc: p.clone(),
            exit_code,
            signal,
            core_dumped,
        };
        push_capped(&mut self.exits, rec, MAX_EXITS);
    }

    fn record_exec(&mut self, ev: &Event, filename: &str, cmdline: Option<&str>) {
        if ev.pid == 0 {
            return;
        }
        // A dead process cannot exec: an exec on an exited pid is a new process (pid reuse).
        if self
            .procs
            .get(&ev.pid)
            .is_some_and(|p| p.exited_ns.is_some())
        {
            self.procs.remove(&ev.pid);
        }
        let p = self.touch_pid(ev.pid, &ev.comm, ev.mono_ns);
        ev.comm.clone_into(&mut p.comm);
        filename.clone_into(&mut p.exe);
        if let Some(c) = cmdline.filter(|c| !c.is_empty()) {
            c.clone_into(&mut p.cmdline);
        }
        p.exec_ns = Some(ev.mono_ns);
        p.event_creds = Some((ev.uid, ev.gid));
    }

    /// The network namespace an event names (a proxy outside the host's).
    fn note_net(&mut self, ev: &Event) {
        if let Some(n) = ev.net_ns
            && let Some(p) = self.procs.get_mut(&ev.pid)
        {
            p.net_ns = Some(n);
        }
    }

    /// The network namespace of a process when it is not the host's (`None`: the host's, or
    /// never read).
    pub(crate) fn net_ns_of(&self, pid: u32) -> Option<u64> {
        self.procs.get(&pid).and_then(|p| p.net_ns)
    }

    /// Whether a socket bound in network namespace `net_ns` on `target` is the one process
    /// `pid` reaches by that name: a TCP port or an abstract name only in its own namespace, a
    /// unix path from any (through the filesystem).
    pub(crate) fn reaches(&self, pid: u32, target: &str, net_ns: Option<u64>) -> bool {
        matches!(
            super::target::parse(target),
            super::target::Target::UnixPath(_)
        ) || net_ns == self.net_ns_of(pid)
    }

    /// The current listeners process `pid` can reach ([`Self::reaches`]).
    pub(crate) fn listeners_for(&self, pid: u32) -> impl Iterator<Item = &Listener> + '_ {
        self.listeners
            .iter()
            .filter(move |l| self.reaches(pid, &l.target, l.net_ns))
    }

    /// A reload signal to a master whose configuration is known makes it stale until reread.
    fn note_reload(&mut self, target_pid: u32, target_comm: &str, signal: i32) {
        if self.proxy_configs.contains_key(&target_pid)
            && crate::catalog::is_reload_signal(target_comm, signal)
        {
            self.stale_configs.insert(target_pid);
        }
    }

    fn merge_facts(&mut self, ns: u64, f: &FactsUpdate) {
        for info in &f.processes {
            self.merge_proc(ns, info);
        }
        for m in &f.mount_ns {
            if let Some(p) = self.procs.get_mut(&m.pid) {
                p.mnt_ns = Some(m.mnt_ns);
            } else {
                self.touch_pid(m.pid, "", ns).mnt_ns = Some(m.mnt_ns);
            }
        }
        for n in &f.proc_net_ns {
            if let Some(p) = self.procs.get_mut(&n.pid) {
                p.net_ns = Some(n.net_ns);
            } else {
                self.touch_pid(n.pid, "", ns).net_ns = Some(n.net_ns);
            }
        }
        for r in &f.roots {
            let root = r.root.trim_end_matches('/');
            self.touch_pid(r.pid, "", ns).chroot = (!root.is_empty()).then(|| root.to_owned());
        }
        for n in &f.names {
            let p = match self.procs.get_mut(&n.pid) {
                Some(p) => p,
                None => self.touch_pid(n.pid, "", ns),
            };
            match &mut p.names {
                Some(mine) => mine.merge(n),
                None => p.names = Some(n.clone()),
            }
        }
        if let Some(ls) = &f.listeners {
            // Who listens is as of the read, which may lag the event the line explains: a
            // listener seen then may have appeared only after that event.
            let read = f.read_ns.map_or(ns, |r| r.max(ns));
            self.merge_listeners(read, ls);
        }
        for p in &f.paths {
            self.paths.insert(p.path.clone(), (ns, p.clone()));
        }
        for m in &f.memcgs {
            self.memcgs.insert(m.pid, (ns, m.clone()));
        }
        if let Some(stats) = f.netstat {
            push_capped(
                &mut self.netstat,
                NetstatSample { ns, stats },
                NETSTAT_SAMPLES,
            );
        }
        for &pid in &f.proxies {
            if self.fact_proxies.len() < MAX_PROXY_PIDS {
                self.fact_proxies.insert(pid);
            }
        }
        for c in &f.proxy_configs {
            if self.proxy_configs.len() < MAX_PROXY_CONFIGS
                || self.proxy_configs.contains_key(&c.pid)
            {
                self.proxy_configs.insert(c.pid, c.clone());
                self.stale_configs.remove(&c.pid);
            }
        }
    }

    fn merge_proc(&mut self, ns: u64, info: &ProcInfo) {
        // A different start time on the same pid is another process (pid reuse).
        if self
            .procs
            .get(&info.pid)
            .is_some_and(|p| p.start_ns != 0 && info.start_ns != 0 && p.start_ns != info.start_ns)
        {
            self.procs.remove(&info.pid);
        }
        let p = self.touch_pid(info.pid, &info.comm, ns);
        if info.ppid != 0 || info.pid == 1 {
            p.ppid = Some(info.ppid);
        }
        if !info.comm.is_empty() {
            info.comm.clone_into(&mut p.comm);
        }
        if !info.cmdline.is_empty() {
            info.cmdline.clone_into(&mut p.cmdline);
        }
        p.creds = Some(Creds {
            uid: info.uid,
            gid: info.gid,
            groups: info.groups.clone(),
        });
        if !info.cgroup.is_empty() {
            info.cgroup.clone_into(&mut p.cgroup);
        }
        if info.start_ns != 0 {
            p.start_ns = info.start_ns;
        }
    }

    fn merge_listeners(&mut self, ns: u64, ls: &[Listener]) {
        for l in ls {
            let Some(pid) = l.pid else { continue };
            if let Some(comm) = l.comm.as_deref().filter(|c| !c.is_empty()) {
                self.touch_pid(pid, comm, ns);
            }
            let owners = self.owners.entry(l.target.clone()).or_default();
            if let Some(o) = owners.iter_mut().find(|o| o.pid == pid) {
                o.last_ns = o.last_ns.max(ns);
                o.first_ns = o.first_ns.min(ns);
            } else {
                if owners.len() >= OWNERS_PER_TARGET {
                    // Forget the owner seen longest ago.
                    if let Some(i) = owners
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, o)| o.last_ns)
                        .map(|(i, _)| i)
                    {
                        owners.remove(i);
                    }
                }
                owners.push(OwnerSeen {
                    pid,
                    first_ns: ns,
                    last_ns: ns,
                    net_ns: l.net_ns,
                });
            }
        }
        self.listeners = ls.to_vec();
        self.listeners_ns = Some(ns);
    }

    /// Keeps every table within its cap.
    fn evict(&mut self, cfg: &EngineConfig) {
        if self.now_ns >= self.aged_ns.saturating_add(AGE_EVERY_NS) {
            self.aged_ns = self.now_ns;
            let now = self.now_ns;
            self.procs.retain(|_, p| {
                p.exited_ns
                    .is_none_or(|x| now.saturating_sub(x) <= EXITED_KEEP_NS)
            });
        }
        if self.procs.len() > MAX_PROCS {
            // Exited processes go before live ones, then the least recently seen.
            let drop = self.procs.len() - MAX_PROCS * 7 / 8;
            let mut keys: Vec<(bool, u64, u32)> = self
                .procs
                .values()
                .map(|p| (p.exited_ns.is_none(), p.last_seen_ns, p.pid))
                .collect();
            keys.sort_unstable();
            for (_, _, pid) in keys.into_iter().take(drop) {
                self.procs.remove(&pid);
            }
        }
        evict_oldest(&mut self.paths, MAX_PATHS, |(ns, _)| *ns);
        evict_oldest(&mut self.memcgs, MAX_MEMCGS, |(ns, _)| *ns);
        evict_oldest(&mut self.owners, MAX_LISTENER_TARGETS, |o| {
            o.iter().map(|o| o.last_ns).max().unwrap_or(0)
        });
        if self.failures.len() > MAX_FAIL_GROUPS {
            self.evict_failures(cfg);
        }
    }

    /// Failure groups of processes that are not proxies go first (they are never verdicts
    /// unless the process later turns out to be one), then the least recent.
    fn evict_failures(&mut self, cfg: &EngineConfig) {
        let target_len = MAX_FAIL_GROUPS * 7 / 8;
        if self.failures.len() <= target_len {
            return;
        }
        let drop = self.failures.len() - target_len;
        let mut keys: Vec<(bool, u64, FailKey)> = self
            .failures
            .iter()
            .map(|(k, g)| {
                let listed =
                    |pid: u32| cfg.proxy_pids.contains(&pid) || self.fact_proxies.contains(&pid);
                let rule = ProxyRule {
                    names: &cfg.proxy_names,
                    listed: &listed,
                };
                let proxy = rule.itself(ProcNames {
                    pid: k.pid,
                    names: &[g.comm.as_str()],
                });
                (proxy, g.last_ns, k.clone())
            })
            .collect();
        keys.sort_unstable_by_key(|k| (k.0, k.1));
        for (_, _, k) in keys.into_iter().take(drop) {
            self.failures.remove(&k);
        }
    }
}

/// Appends to a bounded log, dropping the oldest entry when full.
fn push_capped<T>(q: &mut VecDeque<T>, item: T, cap: usize) {
    if q.len() >= cap {
        q.pop_front();
    }
    q.push_back(item);
}

/// Shrinks a map over `cap` to 7/8 of it, dropping the entries with the smallest `age` key.
fn evict_oldest<K, V>(map: &mut HashMap<K, V>, cap: usize, age: impl Fn(&V) -> u64)
where
    K: Clone + Eq + std::hash::Hash,
{
    if map.len() <= cap {
        return;
    }
    let drop = map.len() - cap * 7 / 8;
    let mut keys: Vec<(u64, K)> = map.iter().map(|(k, v)| (age(v), k.clone())).collect();
    keys.sort_unstable_by_key(|(a, _)| *a);
    for (_, k) in keys.into_iter().take(drop) {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Body;

    fn ev(t: u64, pid: u32, body: Body) -> Event {
        Event::of_task(String::new(), t, pid, "sh", body)
    }

    #[test]
    fn exited_processes_age_out_with_the_longest_window() {
        // A host that runs short-lived commands all the time: the table follows the live host,
        // not the exec rate times MAX_PROCS.
        let cfg = EngineConfig::default();
        let mut st = State::default();
        let s = 1_000_000_000;
        for i in 0..2000u32 {
            let t = u64::from(i) * s;
            st.feed(
                &ev(
                    t,
                    10_000 + i,
                    Body::Exec {
                        filename: "/bin/true".into(),
                        cmdline: None,
                    },
                ),
                &cfg,
            );
            st.feed(
                &ev(
                    t + 1,
                    10_000 + i,
                    Body::ProcessExit {
                        exit_code: Some(0),
                        signal: None,
                        signal_name: None,
                        core_dumped: false,
                    },
                ),
                &cfg,
            );
        }
        let window = usize::try_from(EXITED_KEEP_NS / s).unwrap_or(usize::MAX);
        assert!(
            st.procs.len() <= window + 2,
            "{} processes kept",
            st.procs.len()
        );
        // The recent exits are still there for the rules.
        assert!(st.procs.contains_key(&(10_000 + 1999)));
        assert!(!st.procs.contains_key(&10_000));
        assert_eq!(st.exits.len(), 2000);
    }
}
