//! Network namespaces: which one a process lives in (the inode of `/proc/PID/ns/net`,
//! `net:[4026531840]`; the host's is pid 1's), and the sockets of another one, read the way a
//! process inside it sees them.
//!
//! A proxy in a container, a pod or under `ip netns exec` connects to its own loopback: the
//! listeners that matter are the ones of its namespace, not gwtrace's. `sock_diag` answers for
//! the namespace of the socket that asks, so the query runs on a dedicated helper thread that
//! `setns`es into the proxy's namespace (never the main or tokio threads: a namespace is per
//! thread); that thread also reads `/proc/thread-self/net/{unix,netstat}` there. Without the
//! thread (setns refused), the tables come from `/proc/PID/net/*` of a process in that
//! namespace, through the `procfs` crate.
use std::{
    collections::HashMap,
    fs::File,
    sync::mpsc::{self, Receiver, Sender},
};

use nix::sched::{CloneFlags, setns};

use super::sockdiag::{TcpListener, tcp_listeners};
use crate::facts::Netstat;

/// Namespace handles kept open (a host runs a few containers' proxies, not thousands).
const MAX_HANDLES: usize = 64;
/// How long to wait for the helper thread's answer.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The network namespace inode of `/proc/<pid>/ns/net` (`pid` may be `self` or `thread-self`).
#[must_use]
pub fn net_ns_of(pid: &str) -> Option<u64> {
    parse_ns_link(
        std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .ok()?
            .to_str()?,
    )
}

/// `net:[4026531840]` -> 4026531840.
#[must_use]
pub fn parse_ns_link(link: &str) -> Option<u64> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// The host's network namespace: pid 1's, else (pid 1's link unreadable, as under some
/// sandboxes and user namespaces) gwtrace's own. Without this fallback every process would seem
/// to live in a namespace of its own.
#[must_use]
pub fn host_net_ns() -> Option<u64> {
    net_ns_of("1").or_else(|| net_ns_of("self"))
}

/// Listening sockets of one network namespace, and its TCP listen-queue counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NsSockets {
    /// TCP listeners (`sock_diag`, else /proc/PID/net/tcp{,6}).
    pub tcp: Vec<TcpListener>,
    /// Listening unix sockets bound in that namespace, as (`unix:/path` or `unix:@name`, inode).
    pub unix: Vec<(String, u64)>,
    pub netstat: Option<Netstat>,
}

impl NsSockets {
    /// Every listener as (target, inode), unix first.
    #[must_use]
    pub fn listeners(&self) -> Vec<(String, u64)> {
        self.unix
            .iter()
            .cloned()
            .chain(self.tcp.iter().map(|l| (l.target.clone(), l.inode)))
            .collect()
    }
}

type Answer = Result<NsSockets, String>;

/// Reads other network namespaces' sockets, a helper thread doing the `setns`.
#[derive(Default)]
pub struct NetnsReader {
    /// The helper thread's request channel, started on first use; `None` after it failed.
    helper: Option<Sender<(File, Sender<Answer>)>>,
    helper_failed: bool,
    /// Open handles of namespaces seen, by inode (`/proc/PID/ns/net` opened while PID lived
    /// in it: the namespace stays readable however its processes come and go).
    handles: HashMap<u64, File>,
}

impl NetnsReader {
    /// The sockets of network namespace `ns`, where process `pid` was seen to live.
    ///
    /// # Errors
    /// One line saying why neither the helper thread nor `/proc/PID/net` could read them.
    pub fn read(&mut self, ns: u64, pid: u32) -> Result<NsSockets, String> {
        if !self.handles.contains_key(&ns) {
            let file = File::open(format!("/proc/{pid}/ns/net"))
                .map_err(|e| format!("opening /proc/{pid}/ns/net: {e}"))?;
            // The pid may have exited and its number been reused since it was seen there.
            if net_ns_of(&pid.to_string()) != Some(ns) {
                return Err(format!("pid {pid} no longer lives in net:[{ns}]"));
            }
            if self.handles.len() >= MAX_HANDLES {
                self.handles.clear();
            }
            self.handles.insert(ns, file);
        }
        match self.via_helper(ns) {
            Ok(s) => Ok(s),
            Err(e) => {
                log::debug!("net:[{ns}] through setns: {e}; reading /proc/{pid}/net instead");
                via_proc(ns, pid)
            }
        }
    }

    fn via_helper(&mut self, ns: u64) -> Answer {
        let handle = self
            .handles
            .get(&ns)
            .ok_or("no handle")?
            .try_clone()
            .map_err(|e| format!("duplicating the namespace handle: {e}"))?;
        if self.helper.is_none() && !self.helper_failed {
            match spawn_helper() {
                Ok(tx) => self.helper = Some(tx),
                Err(e) => {
                    log::warn!("cannot start the network namespace helper thread: {e}");
                    self.helper_failed = true;
                }
            }
        }
        let tx = self.helper.as_ref().ok_or("no helper thread")?;
        let (reply, answer) = mpsc::channel();
        if tx.send((handle, reply)).is_err() {
            self.helper = None;
            return Err("the helper thread ended".into());
        }
        answer
            .recv_timeout(ANSWER_TIMEOUT)
            .map_err(|e| format!("no answer from the helper thread: {e}"))?
    }
}

fn spawn_helper() -> std::io::Result<Sender<(File, Sender<Answer>)>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("gwtrace-netns".into())
        .spawn(move || helper(&rx))?;
    Ok(tx)
}

/// The helper thread: enters each namespace asked for and reads its sockets there. It ends
/// when the reader is dropped.
fn helper(rx: &Receiver<(File, Sender<Answer>)>) {
    while let Ok((ns, reply)) = rx.recv() {
        let answer = setns(&ns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns(CLONE_NEWNET): {e}"))
            .and_then(|()| here());
        let _ = reply.send(answer);
    }
}

/// The sockets of the calling thread's network namespace.
fn here() -> Answer {
    let mut tcp = tcp_listeners(2).map_err(|e| format!("sock_diag: {e}"))?;
    tcp.extend(tcp_listeners(10).map_err(|e| format!("sock_diag: {e}"))?);
    let unix = std::fs::read_to_string("/proc/thread-self/net/unix")
        .map(|t| super::procfs::parse_proc_net_unix(&t))
        .map_err(|e| format!("/proc/thread-self/net/unix: {e}"))?;
    let netstat = std::fs::read_to_string("/proc/thread-self/net/netstat")
        .ok()
        .and_then(|t| parse_netstat(&t));
    Ok(NsSockets { tcp, unix, netstat })
}

/// The tables of `/proc/PID/net`, which show the namespace `pid` lives in.
fn via_proc(ns: u64, pid: u32) -> Answer {
    let p = procfs::process::Process::new(i32::try_from(pid).map_err(|e| e.to_string())?)
        .map_err(|e| format!("/proc/{pid}: {e}"))?;
    let mut tcp = Vec::new();
    for table in [p.tcp(), p.tcp6()] {
        let table = table.map_err(|e| format!("/proc/{pid}/net/tcp: {e}"))?;
        tcp.extend(
            table
                .into_iter()
                .filter(|e| e.state == procfs::net::TcpState::Listen)
                .map(|e| TcpListener {
                    target: e.local_address.to_string(),
                    inode: e.inode,
                    queue: e.rx_queue,
                    backlog: 0,
                }),
        );
    }
    let unix = std::fs::read_to_string(format!("/proc/{pid}/net/unix"))
        .map(|t| super::procfs::parse_proc_net_unix(&t))
        .map_err(|e| format!("/proc/{pid}/net/unix: {e}"))?;
    let netstat = std::fs::read_to_string(format!("/proc/{pid}/net/netstat"))
        .ok()
        .and_then(|t| parse_netstat(&t));
    // Read the namespace again: the tables are that namespace's only if pid stayed in it.
    if net_ns_of(&pid.to_string()) != Some(ns) {
        return Err(format!("pid {pid} left net:[{ns}] while it was read"));
    }
    Ok(NsSockets { tcp, unix, netstat })
}

/// `TcpExt:` `ListenOverflows` and `ListenDrops` of a /proc/net/netstat text.
#[must_use]
pub fn parse_netstat(text: &str) -> Option<Netstat> {
    let mut lines = text.lines();
    while let (Some(h), Some(v)) = (lines.next(), lines.next()) {
        if !h.starts_with("TcpExt:") {
            continue;
        }
        let map: HashMap<&str, u64> = h
            .split_whitespace()
            .zip(v.split_whitespace())
            .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
            .collect();
        return Some(Netstat {
            listen_overflows: map.get("ListenOverflows").copied().unwrap_or(0),
            listen_drops: map.get("ListenDrops").copied().unwrap_or(0),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_links_parse() {
        assert_eq!(parse_ns_link("net:[4026531840]"), Some(4_026_531_840));
        assert_eq!(parse_ns_link("mnt:[4026531840]"), None);
        assert_eq!(parse_ns_link("net:[x]"), None);
        assert!(net_ns_of("self").is_some_and(|n| n > 0));
        assert_eq!(net_ns_of("self"), net_ns_of("thread-self"));
    }

    #[test]
    fn own_namespace_read_like_another_sees_its_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let me = std::process::id();
        let ns = net_ns_of("self").expect("own namespace");
        let mut r = NetnsReader::default();
        // Through the helper thread (setns into our own namespace needs CAP_SYS_ADMIN: without
        // it the reader falls back to /proc/PID/net) and through /proc/PID/net: both see it.
        let want = format!("127.0.0.1:{port}");
        for got in [r.read(ns, me), via_proc(ns, me)] {
            let got = got.expect("read");
            assert!(
                got.tcp.iter().any(|t| t.target == want && t.inode > 0),
                "{got:?}"
            );
        }
        assert!(
            r.read(ns + 1, me).is_err(),
            "a namespace the pid is not in is refused, not read as if it were"
        );
    }

    #[test]
    fn netstat_counters_parse() {
        let t = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 7 9\n\
                 IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(
            parse_netstat(t),
            Some(Netstat {
                listen_overflows: 7,
                listen_drops: 9
            })
        );
        assert_eq!(parse_netstat("garbage"), None);
    }
}
