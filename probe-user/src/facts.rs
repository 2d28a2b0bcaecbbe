//! Facts read from /proc and the filesystem that the engine needs besides kernel events: who
//! listens where, what each process is, what a socket path looks like to the proxy's worker.
//!
//! The types are plain data (serialised into record files as `facts` lines, so replay is
//! deterministic). Collection lives behind the [`FactSource`] trait so tests feed fixtures.
use serde::{Deserialize, Serialize};

/// An incremental update of the facts: processes and paths are upserted (by pid / path),
/// `listeners` and `netstat`, when present, replace the previous snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FactsUpdate {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners: Option<Vec<Listener>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memcgs: Vec<MemcgInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netstat: Option<Netstat>,
    /// Pids the user named with `--proxy` (or that auto-detection found), with their role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxies: Vec<u32>,
    /// Mount namespaces of proxy workers and listener owners: a unix socket bound in one is
    /// invisible in another (containers, systemd `PrivateTmp=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_ns: Vec<MountNs>,
    /// The upstreams each proxy master is configured for (read from its configuration when it
    /// starts or reloads): only connects to them are symptoms. Each replaces that master's
    /// previous one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_configs: Vec<ProxyConfig>,
    /// Network namespaces of proxy workers and listener owners that do not live in the host's
    /// (a container, a pod, `ip netns exec`): their listeners are other sockets than the host's.
    /// (Not `net_ns`: that is the event header's own namespace, and facts are flattened into it.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proc_net_ns: Vec<NetNs>,
    /// Root directories of proxy workers that run chrooted (haproxy's `chroot`): they resolve
    /// unix socket paths under it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roots: Vec<ProcRoot>,
    /// User and group names as a process's own system spells them (its mount namespace's
    /// /etc/passwd and /etc/group), for the ids a verdict about it prints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<IdNames>,
    /// When /proc was read (`CLOCK_MONOTONIC` ns). The line's `mono_ns` is the event the facts
    /// explain; the collector reads them later, by as much as it lags behind the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_ns: Option<u64>,
}

impl FactsUpdate {
    /// True when the update carries nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
            && self.listeners.is_none()
            && self.paths.is_empty()
            && self.memcgs.is_empty()
            && self.netstat.is_none()
            && self.proxies.is_empty()
            && self.mount_ns.is_empty()
            && self.proxy_configs.is_empty()
            && self.proc_net_ns.is_empty()
            && self.roots.is_empty()
            && self.names.is_empty()
    }
}

/// The upstream targets one proxy master's configuration names, as connect targets
/// (`127.0.0.1:8000`, `unix:/run/app.sock`; host names already resolved to their addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyConfig {
    /// The master's pid (its workers are its children).
    pub pid: u32,
    /// Which proxy (`nginx`).
    pub kind: String,
    /// How the configuration was read (`/usr/sbin/nginx -T -c /etc/nginx/nginx.conf`).
    pub source: String,
    /// Every upstream target, sorted.
    pub targets: Vec<String>,
    /// Some upstreams could not be known (a `$variable` in a `*_pass`, a name that did not
    /// resolve): a connect elsewhere may still be an upstream connect.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// User and group names of some ids, as process `pid` resolves them: the /etc/passwd and
/// /etc/group of its mount namespace (`/proc/PID/root/etc/...`). Only the ids gwtrace needs
/// (a socket path's owners, the process's own credentials); an id without a name is absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdNames {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<IdName>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<IdName>,
}

/// Names kept per process and kind (users, groups): a walk names a handful.
const MAX_NAMES: usize = 256;

/// One id and its name (`33` is `www-data`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdName {
    pub id: u32,
    pub name: String,
}

impl IdNames {
    /// The names of `uids` and `gids` in the text of a passwd and a group file (first entry
    /// wins, as in NSS `files`; malformed lines are skipped).
    #[must_use]
    pub fn from_files(pid: u32, passwd: &str, group: &str, uids: &[u32], gids: &[u32]) -> Self {
        Self {
            pid,
            users: lookup(passwd, uids),
            groups: lookup(group, gids),
        }
    }

    /// The name of a uid.
    #[must_use]
    pub fn user(&self, uid: u32) -> Option<&str> {
        self.users
            .iter()
            .find(|n| n.id == uid)
            .map(|n| n.name.as_str())
    }

    /// The name of a gid.
    #[must_use]
    pub fn group(&self, gid: u32) -> Option<&str> {
        self.groups
            .iter()
            .find(|n| n.id == gid)
            .map(|n| n.name.as_str())
    }

    /// Adds the names `other` knows (newer wins).
    pub fn merge(&mut self, other: &IdNames) {
        for (mine, theirs) in [
            (&mut self.users, &other.users),
            (&mut self.groups, &other.groups),
        ] {
            for n in theirs {
                if let Some(m) = mine.iter_mut().find(|m| m.id == n.id) {
                    m.name.clone_from(&n.name);
                } else if mine.len() < MAX_NAMES {
                    mine.push(n.clone());
                }
            }
        }
    }
}

/// `name:x:id:...` lines of a passwd or group file: the names of `ids`, in the order asked.
fn lookup(text: &str, ids: &[u32]) -> Vec<IdName> {
    let mut out: Vec<IdName> = Vec::new();
    for &id in ids {
        if out.iter().any(|n| n.id == id) {
            continue;
        }
        let name = text.lines().find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?.trim();
            let _password = f.next()?;
            let found: u32 = f.next()?.trim().parse().ok()?;
            (found == id && !name.is_empty() && !name.starts_with(['#', '+', '-'])).then_some(name)
        });
        if let Some(name) = name {
            out.push(IdName {
                id,
                name: name.to_owned(),
            });
        }
    }
    out
}

/// The mount namespace a process lives in (the inode of `/proc/PID/ns/mnt`, `mnt:[4026531841]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountNs {
    pub pid: u32,
    pub mnt_ns: u64,
}

/// A process's root directory when it is not gwtrace's own (`chroot`), as gwtrace names it
/// (`/var/lib/haproxy`): a path `P` it connects to is `ROOT/P` on the host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRoot {
    pub pid: u32,
    pub root: String,
}

/// The network namespace a process lives in, when it is not the host's (the inode of
/// `/proc/PID/ns/net`, `net:[4026532301]`; the host's is pid 1's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetNs {
    pub pid: u32,
    pub net_ns: u64,
}

/// A process as /proc showed it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    /// argv joined with spaces.
    pub cmdline: String,
    /// Effective uid and gid.
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    #[serde(default)]
    pub groups: Vec<u32>,
    /// The most telling cgroup path ([`crate::origin::best_path`]: v2 unless it is the root, then
    /// systemd's v1 hierarchy, then the memory controller's).
    #[serde(default)]
    pub cgroup: String,
    /// Boot-relative start time in ns (from /proc/PID/stat starttime), to tell pid reuse apart.
    #[serde(default)]
    pub start_ns: u64,
}

/// A listening socket and who owns it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// Same format as connect targets: `127.0.0.1:8000`, `[::]:8000`, `0.0.0.0:80`,
    /// `unix:/run/app.sock`, `unix:@name`.
    pub target: String,
    /// Owning process, when gwtrace could see its file descriptors.
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub comm: Option<String>,
    /// Accept-queue length and limit (TCP) when known.
    #[serde(default)]
    pub backlog: Option<u32>,
    /// The network namespace it is bound in, when not the host's: a TCP port or abstract name
    /// there is another socket than the same one on the host (unix paths are reached through
    /// the filesystem, from any network namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_ns: Option<u64>,
}

/// What a unix socket path looks like, component by component (a `namei -l` walk), as the
/// process that connected sees it (in its mount namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathInfo {
    pub path: String,
    pub components: Vec<PathComponent>,
}

/// One component of a path walk (`/`, `/run`, `/run/app`, `/run/app/app.sock`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathComponent {
    pub path: String,
    pub exists: bool,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    /// Permission bits and file type (`st_mode`).
    #[serde(default)]
    pub mode: u32,
}

impl PathComponent {
    /// `S_IFSOCK`.
    #[must_use]
    pub fn is_socket(&self) -> bool {
        self.mode & 0o170_000 == 0o140_000
    }
    /// `S_IFDIR`.
    #[must_use]
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170_000 == 0o040_000
    }
}

/// Memory cgroup of an OOM victim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemcgInfo {
    pub pid: u32,
    pub cgroup: String,
    /// `memory.limit_in_bytes` (v1) or `memory.max` (v2); None = unlimited or unknown.
    #[serde(default)]
    pub limit_bytes: Option<u64>,
}

/// TCP listen-queue counters from /proc/net/netstat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Netstat {
    pub listen_overflows: u64,
    pub listen_drops: u64,
}

/// The listening sockets of one network namespace as (target, inode), and its listen-queue
/// counters.
pub type NsListeners = (Vec<(String, u64)>, Option<Netstat>);

/// Where facts come from: the live system, or fixtures in tests.
pub trait FactSource {
    /// Every listening socket (TCP, TCP6, unix) with owners where visible.
    fn listeners(&mut self) -> Vec<Listener>;
    /// Every listening socket as (target, socket inode), without owners: what `sock_diag` and
    /// /proc/net/unix tell without reading any process's fds. By default, [`FactSource::listeners`]
    /// numbered in order (fixtures have no inodes).
    fn sockets(&mut self) -> Vec<(String, u64)> {
        self.listeners()
            .into_iter()
            .zip(1..)
            .map(|(l, i)| (l.target, i))
            .collect()
    }
    /// The socket inodes process `pid` holds (its fds). By default, the numbers
    /// [`FactSource::sockets`] gives the listeners it owns.
    fn socket_inodes(&mut self, pid: u32) -> Vec<u64> {
        self.listeners()
            .into_iter()
            .zip(1..)
            .filter(|(l, _)| l.pid == Some(pid))
            .map(|(_, i)| i)
            .collect()
    }
    /// The children of a process (forks are not traced: this finds a master's new workers
    /// without listing every process on the host).
    fn children(&mut self, _pid: u32) -> Vec<u32> {
        Vec::new()
    }
    /// One process, if it still exists.
    fn process(&mut self, pid: u32) -> Option<ProcInfo>;
    /// All processes.
    fn processes(&mut self) -> Vec<ProcInfo>;
    /// The pids of all processes (cheaper than [`FactSource::processes`] where the source can).
    fn pids(&mut self) -> Vec<u32> {
        self.processes().into_iter().map(|p| p.pid).collect()
    }
    /// The walk of a path, as root sees it (the engine checks permissions itself).
    fn path(&mut self, path: &str) -> PathInfo;
    /// The walk of a path as process `pid` sees it: in its mount namespace (through
    /// `/proc/PID/root` when that is not gwtrace's own).
    fn path_of(&mut self, _pid: u32, path: &str) -> PathInfo {
        self.path(path)
    }
    /// The mount namespace of a process, if readable.
    fn mount_ns(&mut self, _pid: u32) -> Option<u64> {
        None
    }
    /// A process's root directory when it runs chrooted in gwtrace's view (not gwtrace's own
    /// root).
    fn chroot(&mut self, _pid: u32) -> Option<String> {
        None
    }
    /// The network namespace of a process (the inode of `/proc/PID/ns/net`), if readable.
    fn net_ns(&mut self, _pid: u32) -> Option<u64> {
        None
    }
    /// The host's network namespace (pid 1's); facts name only the others.
    fn host_net_ns(&mut self) -> Option<u64> {
        None
    }
    /// The listening sockets of network namespace `ns` as (target, inode), read as process
    /// `pid` (which lives there) sees them, with that namespace's listen-queue counters.
    fn sockets_in(&mut self, _ns: u64, _pid: u32) -> Option<NsListeners> {
        None
    }
    /// The names of `uids` and `gids` as process `pid`'s system resolves them (its mount
    /// namespace's /etc/passwd and /etc/group), when readable.
    fn id_names(&mut self, _pid: u32, _uids: &[u32], _gids: &[u32]) -> Option<IdNames> {
        None
    }
    /// `CLOCK_MONOTONIC` now (the kernel events' clock), when the source reads a live system.
    fn now_ns(&mut self) -> Option<u64> {
        None
    }
    /// Memory cgroup of a process; `known_cgroup` is its cgroup as read while it was alive
    /// (an OOM victim may be gone, or already shown in the root cgroup, by the time it is read).
    fn memcg(&mut self, pid: u32, known_cgroup: &str) -> Option<MemcgInfo>;
    /// TCP listen-queue counters.
    fn netstat(&mut self) -> Option<Netstat>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/accounts/");
        std::fs::read_to_string(format!("{p}{name}")).unwrap()
    }

    #[test]
    fn names_come_from_the_files_first_entry_wins() {
        let n = IdNames::from_files(
            7,
            &fixture("passwd"),
            &fixture("group"),
            &[33, 999, 4242, 0],
            &[33, 995, 4242, 4],
        );
        assert_eq!(n.pid, 7);
        assert_eq!(n.user(33), Some("www-data"));
        assert_eq!(
            n.user(999),
            Some("gwapp"),
            "the first of two entries for 999"
        );
        assert_eq!(n.user(0), Some("root"));
        assert_eq!(n.user(4242), None, "no such user: no name");
        assert_eq!(n.group(995), Some("gwapp"));
        assert_eq!(n.group(4), Some("adm"));
        assert_eq!(n.group(4242), None, "no such group: no name");
    }

    #[test]
    fn merge_keeps_old_names_and_takes_new_ones() {
        let mut a = IdNames::from_files(1, "a:x:1:1::/:/bin/sh\n", "g:x:1:\n", &[1], &[1]);
        let b = IdNames::from_files(1, "b:x:2:2::/:/bin/sh\n", "h:x:1:\n", &[2], &[1]);
        a.merge(&b);
        assert_eq!((a.user(1), a.user(2)), (Some("a"), Some("b")));
        assert_eq!(a.group(1), Some("h"));
    }

    #[test]
    fn empty_or_binary_files_name_nothing() {
        let n = IdNames::from_files(1, "", "\u{0}\u{ff}::::\n:x:5:\n", &[0], &[5]);
        assert_eq!((n.user(0), n.group(5)), (None, None));
    }
}
