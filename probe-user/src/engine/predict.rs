//! Predicted connects, for `gwtrace check`: what a proxy worker's connect to a target would
//! return now (from the same facts the live engine uses: the namei walk of a socket path, the
//! listener table), and the verdict the live engine would give if traffic hit that failure.
//!
//! Pure like the rest of the engine: the caller collects the facts (and, for remote TCP
//! addresses, the outcome of its own probe connect) and passes the time.
use std::collections::BTreeSet;

use super::connect::{Agg, CheckCtx, classify};
use super::perm::{Walk, walk};
use super::report::merge;
use super::state::Creds;
use super::target::{Target, covers, parse};
use super::view::{ProxyId, ProxyKey, View};
use super::{Engine, Verdict};
use crate::facts::{Listener, PathComponent, PathInfo};

const ENOENT: i32 = 2;
const EACCES: i32 = 13;
const ENOTDIR: i32 = 20;
const ECONNREFUSED: i32 = 111;

/// What a connect to a target would do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// It would succeed: this listener serves it (None: a remote address that accepted).
    Ok(Option<Listener>),
    /// It would fail with this errno.
    Fails(i32),
    /// The facts cannot tell (no path walk for a unix path, an unknown target shape).
    Unknown(String),
}

/// What the path walk of a unix socket says of a connect to it by `creds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathReach {
    /// The walk fails: ENOENT (a component is missing), ENOTDIR (a file on the way), EACCES
    /// (a component refuses the credentials).
    Fails(i32),
    /// Every component lets the caller through to a socket file (whether anyone listens is
    /// the listener table's question).
    Socket,
    /// The path ends at something that is not a socket: ECONNREFUSED.
    NotSocket,
}

/// The path walk's answer for a unix connect by `creds` (the kernel's namei rules).
pub(crate) fn path_reach(info: &PathInfo, creds: &Creds) -> PathReach {
    match walk(info, creds) {
        Walk::Missing(c) => {
            let below_file = info
                .components
                .iter()
                .take_while(|x| x.path != c.path)
                .any(|x| !x.is_dir() && x.mode & 0o170_000 != 0o120_000);
            PathReach::Fails(if below_file { ENOTDIR } else { ENOENT })
        }
        Walk::Denied { .. } => PathReach::Fails(EACCES),
        Walk::Allowed => {
            if info.components.last().is_some_and(PathComponent::is_socket) {
                PathReach::Socket
            } else {
                PathReach::NotSocket
            }
        }
    }
}

/// [`path_reach`] for a process's credentials (effective uid and gid, supplementary groups).
#[must_use]
pub fn unix_path_reach(info: &PathInfo, uid: u32, gid: u32, groups: &[u32]) -> PathReach {
    let creds = Creds {
        uid,
        gid,
        groups: groups.to_vec(),
    };
    path_reach(info, &creds)
}

/// A connect `gwtrace check` predicts for one proxy worker.
#[derive(Clone, Debug)]
pub(crate) struct Probe<'a> {
    /// The proxy master (0 when no proxy runs: a config checked before deploy) and its name.
    pub proxy_pid: u32,
    pub proxy_comm: &'a str,
    /// A running worker (0 when none).
    pub worker_pid: u32,
    /// The worker's credentials.
    pub creds: Creds,
    pub target: &'a str,
    /// For remote TCP addresses: the errno of the caller's own probe connect (0 = accepted).
    /// None: decide from the listener table (local addresses, unix sockets).
    pub remote_errno: Option<i32>,
    /// The caller's probe timeout, when `remote_errno` is a timeout.
    pub timeout_ms: Option<u64>,
    /// Other targets of the same proxy (their listeners are not "the app it meant").
    pub served_elsewhere: Vec<String>,
}

impl Engine {
    /// What a connect by process `pid` (a worker, else its master; 0: none runs) with `creds`
    /// to `target` would return now, from that process's network namespace: a TCP port or an
    /// abstract name is served only by a listener of its own namespace.
    pub(crate) fn reach(
        &self,
        pid: u32,
        target: &str,
        creds: &Creds,
        remote_errno: Option<i32>,
    ) -> Reach {
        let st = &self.state;
        let listener = || {
            st.listeners_for(pid)
                .find(|l| covers(&l.target, target))
                .cloned()
        };
        match parse(target) {
            Target::UnixPath(path) => {
                let Some((_, info)) = st.paths.get(path) else {
                    return Reach::Unknown(format!("no path walk of {path}"));
                };
                match path_reach(info, creds) {
                    PathReach::Fails(errno) => Reach::Fails(errno),
                    PathReach::NotSocket => Reach::Fails(ECONNREFUSED),
                    PathReach::Socket => match listener() {
                        Some(l) => Reach::Ok(Some(l)),
                        None => Reach::Fails(ECONNREFUSED),
                    },
                }
            }
            Target::UnixAbstract(_) => {
                listener().map_or(Reach::Fails(ECONNREFUSED), |l| Reach::Ok(Some(l)))
            }
            Target::Inet(..) => match remote_errno {
                Some(0) => Reach::Ok(listener()),
                Some(e) => Reach::Fails(e),
                None => listener().map_or(Reach::Fails(ECONNREFUSED), |l| Reach::Ok(Some(l))),
            },
            Target::Other => Reach::Unknown(format!("{target} is not an address")),
        }
    }

    /// The verdict for a failing connect `gwtrace check` predicts (None when it would
    /// succeed or the facts cannot tell). Its count is 0: no traffic has failed yet.
    pub(crate) fn predict(&self, p: &Probe<'_>, now_ns: u64) -> Option<Verdict> {
        let pid = if p.worker_pid == 0 {
            p.proxy_pid
        } else {
            p.worker_pid
        };
        let Reach::Fails(errno) = self.reach(pid, p.target, &p.creds, p.remote_errno) else {
            return None;
        };
        let proxy = ProxyId {
            key: if p.proxy_pid == 0 {
                ProxyKey::Name(p.proxy_comm.to_owned())
            } else {
                ProxyKey::Pid(p.proxy_pid)
            },
            pid: p.proxy_pid,
            comm: p.proxy_comm.to_owned(),
        };
        let agg = Agg {
            proxy,
            target: p.target.to_owned(),
            errno,
            abandoned: p.timeout_ms.is_some() && errno == 110,
            source: "check".to_owned(),
            count: 1,
            // Predicted, not observed: the check is all there is.
            inferred: 1,
            first_ns: now_ns,
            last_ns: now_ns,
            recent: vec![now_ns],
            worker: p.worker_pid,
            worker_comm: p.proxy_comm.to_owned(),
            uid: p.creds.uid,
            gid: p.creds.gid,
            user: None,
            workers: BTreeSet::from([p.worker_pid]),
            check: Some(CheckCtx {
                creds: p.creds.clone(),
                probe_timeout_ms: p.timeout_ms,
                served_elsewhere: p.served_elsewhere.clone(),
            }),
        };
        let v = View::new(&self.state, &self.cfg);
        let parts = classify(&v, &[], &agg);
        merge(parts, now_ns, 0, &[])
            .into_iter()
            .next()
            .map(|mut verdict| {
                verdict.count = 0;
                verdict.rate_per_s = 0.0;
                verdict
            })
    }
}
