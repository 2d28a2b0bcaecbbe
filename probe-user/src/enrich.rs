//! Enrichment: decides which facts each event needs (the connecting worker's uids, the socket
//! path's permission walk, the OOM victim's memory cgroup, the exiting worker's parent) and reads
//! them once, from a [`FactSource`]. The output is `facts` lines that precede the events they
//! explain, in the live stream and in record files alike.
use std::collections::{HashMap, HashSet};

use crate::{
    event::{Body, Event},
    facts::{FactSource, FactsUpdate, Listener, Netstat, ProcInfo},
};

/// Process names of the reverse proxies gwtrace knows.
pub const PROXY_NAMES: &[&str] = &[
    "nginx", "caddy", "haproxy", "httpd", "apache2", "envoy", "traefik",
];
/// Process names of common upstream app servers (and interpreters they run under).
pub const APP_NAMES: &[&str] = &[
    "gunicorn",
    "uvicorn",
    "uwsgi",
    "php-fpm",
    "hypercorn",
    "daphne",
    "puma",
    "unicorn",
    "waitress",
];

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
        || APP_NAMES
            .iter()
            .any(|n| p.comm.starts_with(n) || first.contains(n))
}

/// Bound on remembered pids and paths (memory stays flat on busy hosts).
const MAX_KNOWN: usize = 65_536;
/// Re-read a socket path at most this often (ns).
const PATH_REFRESH_NS: u64 = 1_000_000_000;

/// Stateful enricher over a fact source.
pub struct Enricher<S: FactSource> {
    src: S,
    proxy_names: Vec<String>,
    known: HashSet<u32>,
    paths: HashMap<String, u64>,
    listeners: Option<Vec<Listener>>,
    netstat: Option<Netstat>,
}

impl<S: FactSource> Enricher<S> {
    pub fn new(src: S, proxy_names: Vec<String>) -> Self {
        Self {
            src,
            proxy_names,
            known: HashSet::new(),
            paths: HashMap::new(),
            listeners: None,
            netstat: None,
        }
    }

    fn remember(&mut self, p: ProcInfo, out: &mut Vec<ProcInfo>) {
        if self.known.len() >= MAX_KNOWN {
            self.known.clear();
        }
        if self.known.insert(p.pid) {
            out.push(p);
        }
    }

    /// Everything worth knowing now: proxies, app servers, listener owners and their children.
    pub fn snapshot(&mut self, proxies: &[u32]) -> FactsUpdate {
        let all = self.src.processes();
        let listeners = self.src.listeners();
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
        self.listeners = Some(listeners.clone());
        self.netstat = self.src.netstat();
        FactsUpdate {
            processes: procs,
            listeners: Some(listeners),
            netstat: self.netstat,
            proxies: proxies.to_vec(),
            ..FactsUpdate::default()
        }
    }

    /// Facts the event needs that have not been sent yet.
    pub fn before(&mut self, ev: &Event) -> Option<FactsUpdate> {
        let mut up = FactsUpdate::default();
        let mut want: Vec<u32> = Vec::new();
        match &ev.body {
            Body::ConnectFailed { target, .. } => {
                want.push(ev.pid);
                if let Some(path) = target.strip_prefix("unix:").filter(|p| p.starts_with('/')) {
                    let fresh = self
                        .paths
                        .get(path)
                        .is_some_and(|&t| ev.mono_ns < t + PATH_REFRESH_NS);
                    if !fresh {
                        if self.paths.len() >= MAX_KNOWN {
                            self.paths.clear();
                        }
                        self.paths.insert(path.to_owned(), ev.mono_ns);
                        up.paths.push(self.src.path(path));
                        // Who listens may have changed too.
                        self.refresh_listeners(&mut up);
                    }
                }
            }
            Body::Signal { target_pid, .. } => {
                want.push(ev.pid);
                want.push(*target_pid);
            }
            Body::OomKill { victim_pid, .. } => {
                want.push(*victim_pid);
                if let Some(m) = self.src.memcg(*victim_pid) {
                    up.memcgs.push(m);
                }
            }
            Body::Exec { .. } => {
                // A new program under the same pid: read it again.
                self.known.remove(&ev.pid);
                want.push(ev.pid);
            }
            Body::ProcessExit { .. } | Body::AcceptFailed { .. } | Body::ExecFailed { .. } => {
                want.push(ev.pid);
            }
            Body::Loss { .. } | Body::Facts(_) => {}
        }
        for pid in want {
            if pid != 0
                && !self.known.contains(&pid)
                && let Some(p) = self.src.process(pid)
            {
                self.remember(p, &mut up.processes);
            }
        }
        (!up.is_empty()).then_some(up)
    }

    fn refresh_listeners(&mut self, up: &mut FactsUpdate) {
        let now = self.src.listeners();
        if self.listeners.as_ref() != Some(&now) {
            // Owners of new listeners are upstream candidates: make sure their ProcInfo is known.
            for pid in now.iter().filter_map(|l| l.pid) {
                if !self.known.contains(&pid)
                    && let Some(p) = self.src.process(pid)
                {
                    self.remember(p, &mut up.processes);
                }
            }
            self.listeners = Some(now.clone());
            up.listeners = Some(now);
        }
    }

    /// Periodic refresh: listeners, listen-queue counters, new interesting processes.
    pub fn periodic(&mut self) -> Option<FactsUpdate> {
        let mut up = FactsUpdate::default();
        self.refresh_listeners(&mut up);
        let ns = self.src.netstat();
        if ns != self.netstat {
            self.netstat = ns;
            up.netstat = ns;
        }
        let all = self.src.processes();
        let parents: HashSet<u32> = self.known.clone();
        for p in all {
            if !self.known.contains(&p.pid)
                && (interesting(&p, &self.proxy_names) || parents.contains(&p.ppid))
            {
                self.remember(p, &mut up.processes);
            }
        }
        (!up.is_empty()).then_some(up)
    }
}
