//! The live [`FactSource`]: /proc and the filesystem, as root sees them, and the socket
//! tables and per-process socket inodes that `check` shares with it.
//!
//! The `procfs` crate reads /proc/net/tcp{,6} here. Hand code remains where it is slower or
//! lacks the field: /proc/net/unix (procfs drops the flags column, and `__SO_ACCEPTCON` is
//! what tells a listener from a bound client), fd links (procfs opens, readlinks and stats
//! every fd, four syscalls where one readlink does), /proc/PID/status (procfs parses every
//! field into a map; five are needed, for every process on every scan) and /proc/PID/stat
//! (`Process::new` opens and stats /proc/PID first; one field is needed).
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
};

use super::cgroup::Mounts;
use crate::facts::{
    FactSource, IdNames, Listener, MemcgInfo, Netstat, PathComponent, PathInfo, ProcInfo,
};

/// Reads facts from the running system.
#[derive(Default)]
pub struct SystemFacts {
    /// Clock ticks per second, for /proc/PID/stat start times.
    ticks: u64,
    /// Other network namespaces' sockets (a helper thread that `setns`es).
    netns: super::netns::NetnsReader,
}

impl SystemFacts {
    #[must_use]
    pub fn new() -> Self {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self {
            ticks: u64::try_from(ticks).unwrap_or(100).max(1),
            netns: super::netns::NetnsReader::default(),
        }
    }
}

/// A process as its `/proc/PID/stat` line shows it: what finding proxies by name needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BriefProc {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
}

/// Every live process of the host from one read of its `stat` each (zombies left out): a
/// fraction of [`FactSource::processes`]'s cost, which reads four files per process.
#[must_use]
pub fn brief_processes() -> Vec<BriefProc> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.flatten()
        .filter_map(|p| p.stat().ok())
        .filter(|s| !matches!(s.state, 'Z' | 'X'))
        .filter_map(|s| {
            Some(BriefProc {
                pid: u32::try_from(s.pid).ok()?,
                ppid: u32::try_from(s.ppid).ok()?,
                comm: s.comm,
            })
        })
        .collect()
}

/// Socket inodes a process holds (its /proc/PID/fd links `socket:[N]`).
#[must_use]
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| {
            let link = std::fs::read_link(fd.path()).ok()?;
            link.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Every listening socket of gwtrace's network namespace as (target, inode): unix sockets from
/// /proc/net/unix, TCP from `sock_diag` (filtered in the kernel), /proc/net/tcp{,6} when
/// netlink is unusable.
#[must_use]
pub fn listening_sockets() -> Vec<(String, u64)> {
    let mut sockets = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/proc/net/unix") {
        sockets.extend(parse_proc_net_unix(&t));
    }
    if let (Ok(v4), Ok(v6)) = (
        super::sockdiag::tcp_listeners(2),
        super::sockdiag::tcp_listeners(10),
    ) {
        sockets.extend(v4.into_iter().chain(v6).map(|l| (l.target, l.inode)));
    } else {
        for table in [procfs::net::tcp(), procfs::net::tcp6()] {
            sockets.extend(table.map(listen_targets).unwrap_or_default());
        }
    }
    sockets
}

impl SystemFacts {
    /// The `namei` walk of a path (root first, up to the first missing component), and the
    /// component that could not be examined for another reason than not existing (permission
    /// denied to a non-root user), with the error: past it, "missing" is not known to be true.
    #[must_use]
    pub fn path_walk(path: &str) -> (PathInfo, Option<(String, std::io::Error)>) {
        Self::path_walk_in(None, path)
    }

    /// [`Self::path_walk`] under another root: `/proc/PID/root` walks the path in that process's
    /// mount namespace. Components are named as that process sees them; an absolute symlink on
    /// the way is followed under the same root (the kernel would follow it under gwtrace's).
    #[must_use]
    pub fn path_walk_in(
        root: Option<&Path>,
        path: &str,
    ) -> (PathInfo, Option<(String, std::io::Error)>) {
        let mut components = Vec::new();
        let mut blocked = None;
        // `shown`: the path as the process sees it; `real`: where gwtrace reads it.
        let mut shown = PathBuf::new();
        let mut real = root.map_or_else(PathBuf::new, Path::to_path_buf);
        let mut hops = 0;
        let parts: Vec<Component<'_>> = Path::new(path).components().collect();
        for (i, c) in parts.iter().enumerate() {
            match c {
                Component::RootDir => {
                    shown.push("/");
                    if root.is_none() {
                        real.push("/");
                    }
                }
                Component::Normal(n) => {
                    shown.push(n);
                    real.push(n);
                }
                _ => continue,
            }
            // Another root is reached through the /proc/PID/root magic link: follow that one.
            let meta = if root.is_some() && matches!(c, Component::RootDir) {
                std::fs::metadata(&real)
            } else {
                std::fs::symlink_metadata(&real)
            };
            let comp = match meta {
                Ok(m) => PathComponent {
                    path: shown.display().to_string(),
                    exists: true,
                    uid: m.uid(),
                    gid: m.gid(),
                    mode: m.mode(),
                },
                Err(e) => {
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) {
                        blocked = Some((shown.display().to_string(), e));
                    }
                    PathComponent {
                        path: shown.display().to_string(),
                        exists: false,
                        ..Default::default()
                    }
                }
            };
            let missing = !comp.exists;
            let link = comp.mode & 0o170_000 == 0o120_000;
            components.push(comp);
            if missing {
                break;
            }
            if let Some(root) = root
                && link
                && i + 1 < parts.len()
                && hops < 40
                && let Ok(target) = std::fs::read_link(&real)
            {
                hops += 1;
                real = if target.is_absolute() {
                    root.join(target.strip_prefix("/").unwrap_or(&target))
                } else {
                    real.parent().unwrap_or(root).join(target)
                };
            }
        }
        (
            PathInfo {
                path: path.to_owned(),
                components,
            },
            blocked,
        )
    }
}

/// The mount namespace of a process: the inode in `/proc/PID/ns/mnt` (`mnt:[4026531841]`).
/// The root of a process when it is not gwtrace's own (`/proc/PID/root` names its chroot
/// directory as gwtrace sees it; a process of another mount namespace shows `/`).
fn chroot_of(pid: u32) -> Option<String> {
    let root = |p: &str| std::fs::read_link(format!("/proc/{p}/root")).ok();
    let theirs = root(&pid.to_string())?;
    (Some(&theirs) != root("self").as_ref()).then(|| theirs.display().to_string())
}

fn mount_ns_of(pid: &str) -> Option<u64> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()?
        .to_str()?
        .strip_prefix("mnt:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn comm_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// Parses /proc/net/unix: listening sockets (state 01 = unconnected with `__SO_ACCEPTCON` flag
/// 0x10000) with a path.
#[must_use]
pub fn parse_proc_net_unix(text: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 8 {
            continue;
        }
        let flags = u32::from_str_radix(cols[3], 16).unwrap_or(0);
        let inode = cols[6].parse::<u64>().unwrap_or(0);
        if flags & 0x10000 == 0 {
            continue;
        }
        let path = cols[7..].join(" ");
        let target = path
            .strip_prefix('@')
            .map_or_else(|| format!("unix:{path}"), |a| format!("unix:@{a}"));
        out.push((target, inode));
    }
    out
}

/// Parses /proc/net/tcp or tcp6 text: sockets in LISTEN, as (`addr:port`, inode). The whole
/// table is refused (empty) when a line is malformed.
#[must_use]
pub fn parse_proc_net_tcp(text: &str) -> Vec<(String, u64)> {
    use procfs::FromBufReadSI as _;
    procfs::net::TcpNetEntries::from_buf_read(text.as_bytes(), procfs::current_system_info())
        .map(|t| listen_targets(t.0))
        .unwrap_or_default()
}

/// The listeners of a TCP table, as (`addr:port`, inode).
fn listen_targets(table: Vec<procfs::net::TcpNetEntry>) -> Vec<(String, u64)> {
    table
        .into_iter()
        .filter(|e| e.state == procfs::net::TcpState::Listen)
        .map(|e| (e.local_address.to_string(), e.inode))
        .collect()
}

impl SystemFacts {
    /// One process from /proc/PID; `None` when it is gone, or a zombie when `live_only`.
    fn read_process(&self, pid: u32, live_only: bool) -> Option<ProcInfo> {
        let base = PathBuf::from(format!("/proc/{pid}"));
        let status = std::fs::read_to_string(base.join("status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
        };
        if live_only && field("State:").starts_with(['Z', 'X']) {
            return None;
        }
        let second = |s: &str| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let cmdline = std::fs::read(base.join("cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let cgroup = std::fs::read_to_string(base.join("cgroup")).unwrap_or_default();
        let cgroup = crate::origin::best_path(&cgroup).to_owned();
        let start_ns = std::fs::read_to_string(base.join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.to_owned()))
            .and_then(|rest| {
                rest.split_whitespace()
                    .nth(19)
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .map_or(0, |ticks| ticks * (1_000_000_000 / self.ticks));
        Some(ProcInfo {
            pid,
            ppid: field("PPid:").parse().unwrap_or(0),
            comm: field("Name:").to_owned(),
            cmdline,
            uid: second(field("Uid:")),
            gid: second(field("Gid:")),
            groups: field("Groups:")
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect(),
            cgroup,
            start_ns,
        })
    }
}

impl FactSource for SystemFacts {
    /// Every listener with its owner: the fds of every process, lowest pid first (the master
    /// of a forked family wins). The live enricher does not use it: it looks owners up only for
    /// the sockets that matter ([`crate::enrich::owners`]).
    fn listeners(&mut self) -> Vec<Listener> {
        let sockets = listening_sockets();
        let listening = sockets.iter().map(|(_, i)| *i).collect();
        let mut pids = self.pids();
        pids.sort_unstable();
        let mut owners = HashMap::new();
        crate::enrich::owners::scan(
            self,
            &pids,
            &listening,
            &mut owners,
            &mut std::collections::BTreeSet::new(),
            false,
            &mut crate::enrich::owners::Budget::unlimited(),
        );
        sockets
            .into_iter()
            .map(|(target, inode)| {
                let pid = owners.get(&inode).copied();
                Listener {
                    target,
                    pid,
                    comm: pid.and_then(comm_of),
                    backlog: None,
                    net_ns: None,
                }
            })
            .collect()
    }

    fn sockets(&mut self) -> Vec<(String, u64)> {
        listening_sockets()
    }

    fn socket_inodes(&mut self, pid: u32) -> Vec<u64> {
        socket_inodes(pid)
    }

    fn children(&mut self, pid: u32) -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .map(|s| {
                s.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn process(&mut self, pid: u32) -> Option<ProcInfo> {
        self.read_process(pid, false)
    }

    fn pids(&mut self) -> Vec<u32> {
        std::fs::read_dir("/proc").map_or_else(
            |_| Vec::new(),
            |dir| {
                dir.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                    .collect()
            },
        )
    }

    fn processes(&mut self) -> Vec<ProcInfo> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let pids: Vec<u32> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect();
        // Zombies have exited: they are not running processes (an app killed just before
        // gwtrace started is not "running").
        pids.into_iter()
            .filter_map(|p| self.read_process(p, true))
            .collect()
    }
    fn path(&mut self, path: &str) -> PathInfo {
        Self::path_walk(path).0
    }

    fn path_of(&mut self, pid: u32, path: &str) -> PathInfo {
        let theirs = mount_ns_of(&pid.to_string());
        // A chrooted process (haproxy's `chroot`) in gwtrace's own mount namespace resolves
        // paths under its root too.
        if chroot_of(pid).is_none() && (theirs.is_none() || theirs == mount_ns_of("self")) {
            return Self::path_walk(path).0;
        }
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        Self::path_walk_in(Some(&root), path).0
    }

    fn mount_ns(&mut self, pid: u32) -> Option<u64> {
        mount_ns_of(&pid.to_string())
    }

    fn chroot(&mut self, pid: u32) -> Option<String> {
        chroot_of(pid)
    }

    fn net_ns(&mut self, pid: u32) -> Option<u64> {
        super::netns::net_ns_of(&pid.to_string())
    }

    fn host_net_ns(&mut self) -> Option<u64> {
        super::netns::host_net_ns()
    }

    fn sockets_in(&mut self, ns: u64, pid: u32) -> Option<crate::facts::NsListeners> {
        if super::netns::net_ns_of("self") == Some(ns) {
            return Some((listening_sockets(), self.netstat()));
        }
        match self.netns.read(ns, pid) {
            Ok(s) => Some((s.listeners(), s.netstat)),
            Err(e) => {
                log::debug!("listeners of net:[{ns}] (pid {pid}): {e}");
                None
            }
        }
    }

    /// Through `/proc/PID/root`: the files of the process's own mount namespace (a container's
    /// /etc, not the host's). Users only NSS knows (LDAP, sssd) stay numbers.
    fn id_names(&mut self, pid: u32, uids: &[u32], gids: &[u32]) -> Option<IdNames> {
        let root = if pid == 0 {
            PathBuf::from("/")
        } else {
            PathBuf::from(format!("/proc/{pid}/root"))
        };
        let read = |f: &str| std::fs::read_to_string(root.join(f));
        let (passwd, group) = (read("etc/passwd"), read("etc/group"));
        if passwd.is_err() && group.is_err() {
            return None;
        }
        Some(IdNames::from_files(
            pid,
            &passwd.unwrap_or_default(),
            &group.unwrap_or_default(),
            uids,
            gids,
        ))
    }

    fn now_ns(&mut self) -> Option<u64> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) } != 0 {
            return None;
        }
        let secs = u64::try_from(ts.tv_sec).ok()?;
        let nanos = u64::try_from(ts.tv_nsec).ok()?;
        Some(secs * 1_000_000_000 + nanos)
    }

    fn memcg(&mut self, pid: u32, known_cgroup: &str) -> Option<MemcgInfo> {
        let mounts = Mounts::system();
        let now = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| mounts.memcg(pid, &text))
            .filter(|m| m.cgroup != "/");
        // Gone, or shown in the root cgroup while it exits: the cgroup it lived in, as the
        // memory controller's path (v1; on hybrid systemd hosts the hierarchies mirror each
        // other) or the v2 one.
        now.or_else(|| {
            (!known_cgroup.is_empty() && known_cgroup != "/")
                .then(|| {
                    mounts.memcg(
                        pid,
                        &format!("1:memory:{known_cgroup}\n0::{known_cgroup}\n"),
                    )
                })
                .flatten()
        })
    }

    fn netstat(&mut self) -> Option<Netstat> {
        super::netns::parse_netstat(&std::fs::read_to_string("/proc/net/netstat").ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_under_another_root_follows_absolute_links_inside_it() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("real")).expect("mkdir");
        std::fs::write(root.path().join("real/app.sock"), b"").expect("file");
        std::os::unix::fs::symlink("/real", root.path().join("link")).expect("symlink");
        let (info, blocked) = SystemFacts::path_walk_in(Some(root.path()), "/link/app.sock");
        assert!(blocked.is_none());
        let seen: Vec<(&str, bool)> = info
            .components
            .iter()
            .map(|c| (c.path.as_str(), c.exists))
            .collect();
        assert_eq!(
            seen,
            [("/", true), ("/link", true), ("/link/app.sock", true)]
        );
        assert!(
            info.components[0].is_dir(),
            "the root itself, not the link to it"
        );
        let (info, _) = SystemFacts::path_walk_in(Some(root.path()), "/real/gone/app.sock");
        assert_eq!(
            info.components.last().map(|c| (c.path.as_str(), c.exists)),
            Some(("/real/gone", false))
        );
    }

    #[test]
    fn zombies_are_not_running_processes() {
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let pid = child.id();
        let f = SystemFacts::new();
        // Not reaped yet: a zombie once it has exited.
        let t0 = std::time::Instant::now();
        while f.read_process(pid, true).is_some() && t0.elapsed().as_secs() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            f.read_process(pid, true).is_none(),
            "a zombie is not listed"
        );
        assert!(
            f.read_process(pid, false).is_some(),
            "but an exiting process's facts (its parent) can still be read"
        );
        child.wait().expect("reap");
    }

    #[test]
    fn own_mount_namespace_is_readable() {
        let mut f = SystemFacts::new();
        let me = f.mount_ns(std::process::id());
        assert!(me.is_some_and(|n| n > 0));
        assert_eq!(me, mount_ns_of("self"));
        let t = f.now_ns().expect("clock");
        assert!(f.now_ns().expect("clock") >= t);
    }

    #[test]
    fn unix_listeners_from_proc_net_unix() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 12345 /run/app.sock\n\
            0000000000000000: 00000002 00000000 00000000 0001 03 12346 /run/other.sock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 12347 @abstract\n";
        let l = parse_proc_net_unix(text);
        assert_eq!(
            l,
            vec![
                ("unix:/run/app.sock".into(), 12345),
                ("unix:@abstract".into(), 12347)
            ]
        );
    }

    #[test]
    fn tcp_listeners_from_proc_net_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0 100 0 0 10 0\n\
           1: 0100007F:1F41 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 5556 1 0 100 0 0 10 0\n";
        assert_eq!(
            parse_proc_net_tcp(text),
            vec![("127.0.0.1:8000".into(), 5555)]
        );
        let t6 = "hdr\n   0: 00000000000000000000000001000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7777 1\n";
        assert_eq!(parse_proc_net_tcp(t6), vec![("[::1]:8000".into(), 7777)]);
    }
}
