//! Questions about the remembered state that every cause asks: is this process a proxy, which
//! proxy master does it belong to, is it an upstream (app server) process, what did it listen
//! on, how did it die.
use std::collections::{HashMap, HashSet};

use super::EngineConfig;
use super::state::{ExitRecord, Proc, State};
use super::target::covers;
use super::text::{fmt_dur, fmt_ns, signal_label};
use crate::catalog::{ProcNames, ProxyRule, app_server_in_cmdline, app_server_name, system_socket};
use crate::facts::ProxyConfig;
use crate::origin::Origin;

/// How far up the parent chain to look (proxy masters, app server masters).
const MAX_DEPTH: usize = 8;
/// Start times from /proc have a clock tick's resolution (10 ms): a parent's exec this much after
/// its child's start still counts as before it.
const FORK_SLACK_NS: u64 = 50_000_000;

/// A proxy's identity for deduplication: its master's pid when the process tree is known, else
/// its name (workers of one master share one verdict).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ProxyKey {
    Pid(u32),
    Name(String),
    /// No proxy known (worker deaths on a host whose proxy was never seen).
    Unknown,
}

/// A proxy as shown in a verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProxyId {
    pub key: ProxyKey,
    pub pid: u32,
    pub comm: String,
}

impl ProxyId {
    pub(crate) fn unknown() -> Self {
        Self {
            key: ProxyKey::Unknown,
            pid: 0,
            comm: String::new(),
        }
    }
}

/// The app server a process runs, from its comm, executable or command line.
pub(crate) fn app_server_of(p: &Proc) -> Option<&'static str> {
    app_server_name(&p.comm)
        .or_else(|| {
            (!p.exe.is_empty())
                .then(|| app_server_name(&p.exe))
                .flatten()
        })
        .or_else(|| app_server_in_cmdline(&p.cmdline))
}

/// Read-only view over the state with the configuration, for classification.
pub(crate) struct View<'a> {
    pub st: &'a State,
    pub cfg: &'a EngineConfig,
    /// Targets some proxy failed to connect to: their listeners' owners are upstreams.
    pub proxy_targets: HashSet<&'a str>,
    /// Listener targets by owner pid, and by the owner's family root (an index built once per
    /// verdicts call: the causes ask "what does this family serve" for every exit and death).
    by_owner: HashMap<u32, Vec<&'a str>>,
    by_root: HashMap<u32, Vec<&'a str>>,
    /// Which app servers run (one line of evidence shared by every connect verdict): computed
    /// once per verdicts call, not once per failure group (a scan of the whole process table).
    pub app_servers: std::cell::OnceCell<Option<String>>,
}

impl<'a> View<'a> {
    pub(crate) fn new(st: &'a State, cfg: &'a EngineConfig) -> Self {
        let mut v = Self {
            st,
            cfg,
            proxy_targets: HashSet::new(),
            by_owner: HashMap::new(),
            by_root: HashMap::new(),
            app_servers: std::cell::OnceCell::new(),
        };
        let targets: HashSet<&str> = st
            .failures
            .iter()
            .filter(|(k, g)| v.symptom(k.pid, &g.comm, &k.target))
            .map(|(k, _)| k.target.as_str())
            .collect();
        v.proxy_targets = targets;
        let mut by_owner: HashMap<u32, Vec<&str>> = HashMap::new();
        let mut by_root: HashMap<u32, Vec<&str>> = HashMap::new();
        for (t, os) in &st.owners {
            for o in os {
                by_owner.entry(o.pid).or_default().push(t.as_str());
                by_root
                    .entry(v.family_root(o.pid))
                    .or_default()
                    .push(t.as_str());
            }
        }
        v.by_owner = by_owner;
        v.by_root = by_root;
        v
    }

    pub(crate) fn proc(&self, pid: u32) -> Option<&'a Proc> {
        self.st.procs.get(&pid)
    }

    /// The process and its known ancestors, nearest first (cycle-safe, bounded).
    pub(crate) fn lineage(&self, pid: u32) -> Vec<&'a Proc> {
        let mut out: Vec<&Proc> = Vec::new();
        let mut cur = self.proc(pid);
        while let Some(p) = cur {
            if out.len() >= MAX_DEPTH || out.iter().any(|q| q.pid == p.pid) {
                break;
            }
            out.push(p);
            cur = p.ppid.filter(|&pp| pp > 1).and_then(|pp| self.proc(pp));
        }
        out
    }

    pub(crate) fn comm(&self, pid: u32) -> &'a str {
        self.proc(pid).map_or("", |p| p.comm.as_str())
    }

    fn listed_proxy(&self, pid: u32) -> bool {
        self.cfg.proxy_pids.contains(&pid) || self.st.fact_proxies.contains(&pid)
    }

    fn rule<'r>(&'r self, listed: &'r dyn Fn(u32) -> bool) -> ProxyRule<'r> {
        ProxyRule {
            names: &self.cfg.proxy_names,
            listed,
        }
    }

    fn named_proxy(&self, comm: &str) -> bool {
        self.rule(&|_| false).named(comm)
    }

    /// A proxy by itself: named like one (the given comm, the table's comm or executable), or
    /// listed (config or facts).
    fn proxy_itself(&self, pid: u32, comm: &str) -> bool {
        let me = self.proc(pid);
        let names = [
            comm,
            me.map_or("", |p| p.comm.as_str()),
            me.map_or("", |p| p.exe.as_str()),
        ];
        self.rule(&|pid| self.listed_proxy(pid))
            .itself(ProcNames { pid, names: &names })
    }

    /// Is this process a proxy, or a child of one? Only proxies' failed connects are symptoms.
    /// The catalog's [`ProxyRule`] over the configuration, the facts' proxy pids and the
    /// process table (the event's comm, the table's comm and executable, the parent's).
    pub(crate) fn is_proxy(&self, pid: u32, comm: &str) -> bool {
        let listed = |pid: u32| self.listed_proxy(pid);
        let rule = self.rule(&listed);
        let me = self.proc(pid);
        let names = [
            comm,
            me.map_or("", |p| p.comm.as_str()),
            me.map_or("", |p| p.exe.as_str()),
        ];
        let parent = me.and_then(|p| p.ppid).map(|pp| (pp, self.proc(pp)));
        let parent_names = parent.map(|(_, p)| {
            [
                p.map_or("", |p| p.comm.as_str()),
                p.map_or("", |p| p.exe.as_str()),
            ]
        });
        rule.is_proxy(
            ProcNames { pid, names: &names },
            parent
                .zip(parent_names.as_ref())
                .map(|((pid, _), names)| ProcNames { pid, names }),
        )
    }

    /// Is this process's failed connect to `target` a 502 symptom? The one rule: only a proxy's
    /// connects count, and only those to an upstream. With the proxy's configuration known, an
    /// upstream is one of its targets (names it resolves included); a configuration that could
    /// not name them all (`$variables`) lets anything else count too, except a socket the
    /// system itself provides. Without a configuration, never such a socket (nscd, syslog,
    /// journald, D-Bus, DNS: [`system_socket`]), which nginx connects to on every start and
    /// reload to look up its user.
    pub(crate) fn symptom(&self, pid: u32, comm: &str, target: &str) -> bool {
        if !self.is_proxy(pid, comm) {
            return false;
        }
        if let Some(cfg) = self.proxy_config(pid, comm) {
            if cfg
                .targets
                .iter()
                .any(|t| covers(t, target) || covers(target, t))
            {
                return true;
            }
            // A configuration read before the master's last reload may lack a new site.
            if !cfg.partial && !self.st.stale_configs.contains(&cfg.pid) {
                return false;
            }
        }
        system_socket(target).is_none()
    }

    /// The configuration of the proxy this process belongs to (its master's), when known.
    pub(crate) fn proxy_config(&self, pid: u32, comm: &str) -> Option<&'a ProxyConfig> {
        if let Some(c) = self.st.proxy_configs.get(&pid) {
            return Some(c);
        }
        match self.proxy_id(pid, comm).key {
            ProxyKey::Pid(m) => self.st.proxy_configs.get(&m),
            ProxyKey::Name(_) | ProxyKey::Unknown => None,
        }
    }

    /// The proxy master a worker belongs to (walks up while the parent is a proxy).
    pub(crate) fn proxy_id(&self, pid: u32, comm: &str) -> ProxyId {
        let chain = self.lineage(pid);
        let Some(first) = chain.first() else {
            return ProxyId {
                key: ProxyKey::Name(comm.to_owned()),
                pid,
                comm: comm.to_owned(),
            };
        };
        let mut top = *first;
        for p in chain.iter().skip(1) {
            if self.proxy_itself(p.pid, "") {
                top = p;
            } else {
                break;
            }
        }
        let name = if top.comm.is_empty() {
            comm.to_owned()
        } else {
            top.comm.clone()
        };
        if top.pid == pid && top.ppid.is_none() {
            // Parent unknown: fall back on the one known master with that name, if any.
            if let Some(m) = self.unique_master(&name) {
                return ProxyId {
                    key: ProxyKey::Pid(m.pid),
                    pid: m.pid,
                    comm: name,
                };
            }
            return ProxyId {
                key: ProxyKey::Name(name.clone()),
                pid,
                comm: name,
            };
        }
        ProxyId {
            key: ProxyKey::Pid(top.pid),
            pid: top.pid,
            comm: name,
        }
    }

    /// The only live proxy master (parent is not a proxy) with this name.
    fn unique_master(&self, name: &str) -> Option<&'a Proc> {
        let mut it = self.st.procs.values().filter(|p| {
            p.exited_ns.is_none()
                && p.comm == name
                && p.ppid.is_some()
                && self.proxy_itself(p.pid, &p.comm)
                && !p.ppid.is_some_and(|pp| pp > 1 && self.proxy_itself(pp, ""))
        });
        let m = it.next()?;
        it.next().is_none().then_some(m)
    }

    /// Some proxy known on this host, for verdicts that have no failed connect to name one:
    /// listed proxies first, then processes named like one; the master, lowest pid.
    pub(crate) fn any_proxy(&self) -> ProxyId {
        let mut listed: Vec<u32> = self
            .cfg
            .proxy_pids
            .iter()
            .chain(self.st.fact_proxies.iter())
            .copied()
            .collect();
        listed.sort_unstable();
        if let Some(&pid) = listed.first() {
            return self.proxy_id(pid, self.comm(pid));
        }
        let mut named: Vec<&Proc> = self
            .st
            .procs
            .values()
            .filter(|p| p.exited_ns.is_none() && self.named_proxy(&p.comm))
            .collect();
        named.sort_unstable_by_key(|p| p.pid);
        named
            .first()
            .map_or_else(ProxyId::unknown, |p| self.proxy_id(p.pid, &p.comm))
    }

    /// The app server this process or one of its ancestors runs.
    pub(crate) fn app_lineage(&self, pid: u32) -> Option<&'static str> {
        self.lineage(pid).into_iter().find_map(app_server_of)
    }

    /// Listener targets this process was seen owning.
    pub(crate) fn owned_targets(&self, pid: u32) -> &[&'a str] {
        self.by_owner.get(&pid).map_or(&[], Vec::as_slice)
    }

    /// The top of a process's app-server family: climbs while the parent runs an app server
    /// (gunicorn master above its forked workers), but not to a parent that executed the app
    /// server only after the child began (a supervisor shell that later `exec`s a new instance
    /// is not the master of the instance it started before).
    pub(crate) fn family_root(&self, pid: u32) -> u32 {
        let chain = self.lineage(pid);
        let mut root = pid;
        let mut child = chain.first().copied();
        for p in chain.iter().skip(1) {
            let exec_after = p
                .exec_ns
                .zip(child.and_then(Proc::began_ns))
                .is_some_and(|(x, b)| x > b.saturating_add(FORK_SLACK_NS));
            if app_server_of(p).is_some() && !self.proxy_itself(p.pid, "") && !exec_after {
                root = p.pid;
                child = Some(p);
            } else {
                break;
            }
        }
        root
    }

    /// The chroot directory `pid` resolves unix paths under (facts `roots`), or for a master
    /// that does not chroot itself (haproxy -W), the one of its workers.
    pub(crate) fn chroot(&self, pid: u32) -> Option<&'a str> {
        let st: &'a State = self.st;
        st.procs
            .get(&pid)
            .and_then(|p| p.chroot.as_deref())
            .or_else(|| {
                st.procs
                    .values()
                    .filter(|p| p.ppid == Some(pid))
                    .find_map(|p| p.chroot.as_deref())
            })
    }

    /// The mount namespace of a process, when known.
    pub(crate) fn mnt_ns(&self, pid: u32) -> Option<u64> {
        self.proc(pid).and_then(|p| p.mnt_ns)
    }

    /// The mount namespace of `owner` when it differs from `proxy`'s (both known): a unix
    /// socket it bound is not at that path in the proxy's view.
    pub(crate) fn foreign_ns(&self, owner: u32, proxy: u32) -> Option<(u64, u64)> {
        let (o, p) = (self.mnt_ns(owner)?, self.mnt_ns(proxy)?);
        (o != p).then_some((o, p))
    }

    /// Stable identity of an app across restarts (its root's command line), to group a crash
    /// loop's successive instances.
    pub(crate) fn family_key(&self, pid: u32, fallback: &Proc) -> String {
        let p = self.proc(self.family_root(pid)).unwrap_or(fallback);
        [&p.cmdline, &p.exe, &p.comm]
            .into_iter()
            .find(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| format!("pid {pid}"))
    }

    /// Listener targets served by this process's family (it, its ancestors, or any process of
    /// the same family root: a forked worker serves its master's socket), sorted, proxy targets
    /// first.
    pub(crate) fn served_targets(&self, pid: u32) -> Vec<&'a str> {
        let root = self.family_root(pid);
        let mut v: Vec<&str> = self.by_root.get(&root).cloned().unwrap_or_default();
        v.extend(self.owned_targets(root));
        for p in self.lineage(pid) {
            v.extend(self.owned_targets(p.pid));
        }
        v.sort_unstable_by_key(|t| (!self.targets_proxy(t), *t));
        v.dedup();
        v
    }

    /// Is a listener on `listener` one a proxy tried to reach?
    pub(crate) fn targets_proxy(&self, listener: &str) -> bool {
        self.proxy_targets.iter().any(|t| covers(listener, t))
    }

    /// An upstream in the strict sense used for worker deaths: it (or an ancestor) runs a known
    /// app server, or its family served a target some proxy connects to. Proxies never are.
    pub(crate) fn is_upstream(&self, pid: u32) -> bool {
        if self.is_proxy(pid, self.comm(pid)) {
            return false;
        }
        self.app_lineage(pid).is_some()
            || self
                .served_targets(pid)
                .iter()
                .any(|t| self.targets_proxy(t))
    }

    /// An upstream in the broad sense: also any listener owner or descendant of one.
    pub(crate) fn is_upstream_broad(&self, pid: u32) -> bool {
        self.is_upstream(pid)
            || (!self.is_proxy(pid, self.comm(pid))
                && self
                    .lineage(pid)
                    .iter()
                    .any(|p| !self.owned_targets(p.pid).is_empty()))
    }

    /// Where a process runs (from its cgroup path), when known.
    pub(crate) fn origin(&self, pid: u32) -> Option<Origin> {
        let cg = self
            .proc(pid)
            .map(|p| p.cgroup.as_str())
            .filter(|c| !c.is_empty())
            .or_else(|| {
                self.exit_of(pid)
                    .map(|e| e.proc.cgroup.as_str())
                    .filter(|c| !c.is_empty())
            })?;
        Some(Origin::from_path(cg))
    }

    /// Where a proxy runs: its own origin, else a worker's (a master named by facts alone has
    /// none; its workers carry one on their failed connects).
    pub(crate) fn proxy_origin(&self, pid: u32) -> Option<Origin> {
        self.origin(pid).or_else(|| {
            let mut kids: Vec<u32> = self
                .st
                .procs
                .values()
                .filter(|p| p.ppid == Some(pid) && !p.cgroup.is_empty())
                .map(|p| p.pid)
                .collect();
            kids.sort_unstable();
            kids.first().and_then(|&k| self.origin(k))
        })
    }

    /// The process seen owning a listener that covers `target` most recently.
    pub(crate) fn last_owner(&self, target: &str) -> Option<u32> {
        self.st
            .owners
            .iter()
            .filter(|(t, _)| covers(t, target))
            .flat_map(|(_, os)| os.iter())
            .max_by_key(|o| o.last_ns)
            .map(|o| o.pid)
    }

    /// The latest exit of this pid, if seen.
    pub(crate) fn exit_of(&self, pid: u32) -> Option<&'a ExitRecord> {
        self.st.exits.iter().rev().find(|e| e.proc.pid == pid)
    }

    /// One line saying how a process died (exit, the signal that killed it and its sender,
    /// an OOM kill), or None when its death was not seen.
    pub(crate) fn death_line(&self, pid: u32) -> Option<String> {
        let e = self.exit_of(pid)?;
        let name = if e.proc.comm.is_empty() {
            "process".to_owned()
        } else {
            e.proc.comm.clone()
        };
        let how = if let Some(o) = self
            .st
            .ooms
            .iter()
            .rev()
            .find(|o| o.victim_pid == pid && o.ns <= e.ns)
        {
            format!("was killed by the OOM killer at {}", fmt_ns(o.ns))
        } else if let Some(sig) = e.signal {
            let sender = self.st.signals.iter().rev().find(|s| {
                s.target_pid == pid && s.sig == sig && s.ns <= e.ns && s.sender_pid != pid
            });
            match sender {
                Some(s) => format!(
                    "was killed by {} from pid {} ({}) at {}",
                    signal_label(sig),
                    s.sender_pid,
                    s.sender_comm,
                    fmt_ns(e.ns)
                ),
                None => format!("died of {} at {}", signal_label(sig), fmt_ns(e.ns)),
            }
        } else {
            // A handled stop signal (systemctl stop/restart sends SIGTERM) ends in a clean exit.
            let asked = self.st.signals.iter().rev().find(|s| {
                s.target_pid == pid
                    && s.sender_pid != pid
                    && matches!(s.sig, 1 | 2 | 3 | 15)
                    && s.ns <= e.ns
                    && e.ns - s.ns <= 60_000_000_000
            });
            let asked = asked
                .map(|s| {
                    format!(
                        " on {} from pid {} ({})",
                        signal_label(s.sig),
                        s.sender_pid,
                        s.sender_comm
                    )
                })
                .unwrap_or_default();
            format!(
                "exited with code {}{asked} at {}",
                e.exit_code.unwrap_or(0),
                fmt_ns(e.ns)
            )
        };
        let lived = e
            .proc
            .began_ns()
            .filter(|&b| b <= e.ns)
            .map(|b| format!(" after {}", fmt_dur(e.ns - b)))
            .unwrap_or_default();
        Some(format!("{name} pid {pid} {how}{lived}"))
    }
}
