//! The host's cgroup hierarchies: where they are mounted (read once from
//! `/proc/self/mountinfo`), the memory limit that applies to a process wherever the host keeps
//! it (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`), and the live [`Resolver`] of event
//! origins (the pure parsing is [`crate::origin`]).
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use crate::{
    facts::{MemcgInfo, ProcInfo},
    origin::Origin,
};

/// Where the cgroup hierarchies gwtrace reads are mounted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mounts {
    /// The cgroup2 (unified) hierarchy: `/sys/fs/cgroup` on v2-only hosts,
    /// `/sys/fs/cgroup/unified` on hybrid ones.
    pub v2: Option<PathBuf>,
    /// The v1 hierarchy the memory controller is bound to (hybrid and legacy hosts).
    pub v1_memory: Option<PathBuf>,
}

impl Mounts {
    /// This host's mounts, discovered on first use.
    #[must_use]
    pub fn system() -> &'static Self {
        static MOUNTS: OnceLock<Mounts> = OnceLock::new();
        MOUNTS.get_or_init(|| {
            std::fs::read_to_string("/proc/self/mountinfo")
                .map(|t| Self::from_mountinfo(&t))
                .unwrap_or_default()
        })
    }

    /// Parses `/proc/self/mountinfo` (`ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE
    /// SOURCE SUPEROPTS`). A mount of the hierarchy's root (`ROOT` = `/`) wins over a bind mount
    /// of a subtree, and the first such mount over later ones.
    #[must_use]
    pub fn from_mountinfo(text: &str) -> Self {
        let mut v2: Option<(bool, PathBuf)> = None;
        let mut v1_memory: Option<(bool, PathBuf)> = None;
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (Some(root), Some(point), Some(fstype)) = (left.get(3), left.get(4), right.first())
            else {
                continue;
            };
            let whole = *root == "/";
            let slot = match *fstype {
                "cgroup2" => &mut v2,
                "cgroup"
                    if right
                        .get(2)
                        .is_some_and(|o| o.split(',').any(|o| o == "memory")) =>
                {
                    &mut v1_memory
                }
                _ => continue,
            };
            if slot.as_ref().is_none_or(|(w, _)| !w && whole) {
                *slot = Some((whole, PathBuf::from(unescape(point))));
            }
        }
        Self {
            v2: v2.map(|(_, p)| p),
            v1_memory: v1_memory.map(|(_, p)| p),
        }
    }

    /// The memory cgroup of `pid` given its `/proc/PID/cgroup` text, with the limit that
    /// applies to it: the tightest of its own and its ancestors' (a pod's limit sits on the
    /// pod, not on the container's cgroup). `cgroup` names the cgroup holding that limit (the
    /// process's own when none is set). `None` when no hierarchy here accounts its memory.
    #[must_use]
    pub fn memcg(&self, pid: u32, proc_cgroup: &str) -> Option<MemcgInfo> {
        for line in proc_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if controllers.split(',').any(|c| c == "memory") {
                let Some(root) = &self.v1_memory else {
                    continue;
                };
                return Some(v1_memcg(pid, root, path));
            }
            if controllers.is_empty()
                && let Some(root) = &self.v2
                && let Some(m) = v2_memcg(pid, root, path)
            {
                return Some(m);
            }
        }
        None
    }
}

/// Undoes the octal escapes mountinfo uses for blanks and backslashes (`\040`).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(code) = b
                .get(i + 1..i + 4)
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        {
            out.push(code);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of cgroup `path` (`/a/b`) under a hierarchy's mount.
fn dir_of(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// v1 reports "no limit" as a huge page-aligned number (`PAGE_COUNTER_MAX` pages).
fn v1_limit(value: &str) -> Option<u64> {
    value.trim().parse::<u64>().ok().filter(|&l| l < (1 << 60))
}

/// v1: the cgroup's own `memory.limit_in_bytes`, else `hierarchical_memory_limit` from its
/// `memory.stat` (the tightest ancestor's, when `memory.use_hierarchy` is on, as it always is
/// since Linux 5.x). A v1 memory cgroup always answers, limited or not.
fn v1_memcg(pid: u32, root: &Path, path: &str) -> MemcgInfo {
    let dir = dir_of(root, path);
    let own = std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
        .ok()
        .and_then(|s| v1_limit(&s));
    let limit = own.or_else(|| {
        std::fs::read_to_string(dir.join("memory.stat"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("hierarchical_memory_limit "))
            .and_then(v1_limit)
    });
    MemcgInfo {
        pid,
        cgroup: path.to_owned(),
        limit_bytes: limit,
    }
}

/// v2: `memory.max` of the cgroup and each ancestor below the root (`max` = none), the
/// tightest wins. `None` when the memory controller is not enabled there (no `memory.max`:
/// the v2 tree of a hybrid host, whose memory controller is bound to v1).
fn v2_memcg(pid: u32, root: &Path, path: &str) -> Option<MemcgInfo> {
    let read = |p: &str| {
        std::fs::read_to_string(dir_of(root, p).join("memory.max"))
            .ok()
            .map(|s| s.trim().parse::<u64>().ok())
    };
    // The cgroup itself must be accounted; the root cgroup has no memory.max at all.
    let own = read(path)?;
    let mut best = own.map(|l| (l, path.to_owned()));
    let mut cur = path.trim_end_matches('/');
    while let Some((parent, _)) = cur.rsplit_once('/') {
        if parent.is_empty() {
            break;
        }
        if let Some(Some(l)) = read(parent)
            && best.as_ref().is_none_or(|(b, _)| l < *b)
        {
            best = Some((l, parent.to_owned()));
        }
        cur = parent;
    }
    Some(MemcgInfo {
        pid,
        cgroup: best
            .as_ref()
            .map_or_else(|| path.to_owned(), |(_, p)| p.clone()),
        limit_bytes: best.map(|(l, _)| l),
    })
}

/// Bound on cached pids and cgroup ids.
const MAX_CACHED: usize = 65_536;
/// Re-walk the cgroup2 tree for an unknown id at most this often.
const REWALK_NS: u64 = 1_000_000_000;

/// Finds the origin of live events, caching by pid and by cgroup v2 id.
pub struct Resolver {
    proc_root: PathBuf,
    cgroup2: Option<PathBuf>,
    by_pid: HashMap<u32, Arc<Origin>>,
    by_id: HashMap<u64, Arc<Origin>>,
    last_walk_ns: Option<u64>,
}

impl Resolver {
    /// A resolver over the host's `/proc` and its cgroup2 mount ([`Mounts::system`]).
    #[must_use]
    pub fn system() -> Self {
        Self::new(PathBuf::from("/proc"), Mounts::system().v2.clone())
    }

    /// A resolver over any proc and cgroup2 roots (tests use temporary trees).
    #[must_use]
    pub fn new(proc_root: PathBuf, cgroup2: Option<PathBuf>) -> Self {
        Self {
            proc_root,
            cgroup2,
            by_pid: HashMap::new(),
            by_id: HashMap::new(),
            last_walk_ns: None,
        }
    }

    /// The origin of an event by `pid` whose task was in cgroup v2 `cgroup_id`, at `now_ns`.
    pub fn resolve(&mut self, pid: u32, cgroup_id: u64, now_ns: u64) -> Option<Arc<Origin>> {
        if pid == 0 {
            return None;
        }
        if let Some(o) = self.by_pid.get(&pid) {
            return Some(o.clone());
        }
        let from_proc = std::fs::read_to_string(self.proc_root.join(format!("{pid}/cgroup")))
            .ok()
            .filter(|t| !t.is_empty())
            .map(|t| Arc::new(Origin::from_proc_cgroup(&t)));
        let o = match from_proc {
            Some(o) => o,
            None => self.by_cgroup_id(cgroup_id, now_ns)?,
        };
        if self.by_pid.len() >= MAX_CACHED {
            self.by_pid.clear();
        }
        self.by_pid.insert(pid, o.clone());
        Some(o)
    }

    /// Takes the cgroups of processes read from /proc anyway (`ProcInfo::cgroup` is the same
    /// [`best_path`]), so their events need no read of their own.
    pub fn learn(&mut self, procs: &[ProcInfo]) {
        for p in procs.iter().filter(|p| !p.cgroup.is_empty()) {
            if self.by_pid.len() >= MAX_CACHED {
                self.by_pid.clear();
            }
            self.by_pid
                .insert(p.pid, Arc::new(Origin::from_path(&p.cgroup)));
        }
    }

    /// Forgets a pid (it exited: the number may be reused by another process).
    pub fn forget(&mut self, pid: u32) {
        self.by_pid.remove(&pid);
    }

    /// The path of a cgroup v2 id: the inode number of its directory in the cgroup2 mount.
    fn by_cgroup_id(&mut self, id: u64, now_ns: u64) -> Option<Arc<Origin>> {
        if id == 0 {
            return None;
        }
        if let Some(o) = self.by_id.get(&id) {
            return Some(o.clone());
        }
        let root = self.cgroup2.clone()?;
        if self
            .last_walk_ns
            .is_some_and(|t| now_ns < t.saturating_add(REWALK_NS))
        {
            return None;
        }
        self.last_walk_ns = Some(now_ns);
        self.by_id.clear();
        walk(&root, &root, &mut self.by_id, 0);
        self.by_id.get(&id).cloned()
    }
}

/// Maps every directory's inode under `root` to its origin (bounded depth and count).
fn walk(root: &Path, dir: &Path, into: &mut HashMap<u64, Arc<Origin>>, depth: u32) {
    use std::os::unix::fs::MetadataExt as _;
    if depth > 16 || into.len() >= MAX_CACHED {
        return;
    }
    if let Ok(md) = std::fs::metadata(dir) {
        let rel = dir.strip_prefix(root).unwrap_or(dir);
        let path = format!("/{}", rel.display());
        into.insert(md.ino(), Arc::new(Origin::from_path(&path)));
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &e.path(), into, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f3c2b1a00112233445566778899aabbccddeeff00112233445566778899aabb";

    #[test]
    fn resolves_live_pids_then_dead_ones_by_cgroup_id() {
        use std::os::unix::fs::MetadataExt as _;
        let proc_root = tempfile::tempdir().unwrap();
        let cg = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(proc_root.path().join("42")).unwrap();
        std::fs::write(
            proc_root.path().join("42/cgroup"),
            "0::/system.slice/app.service\n",
        )
        .unwrap();
        let dead = cg.path().join(format!("system.slice/docker-{ID}.scope"));
        std::fs::create_dir_all(&dead).unwrap();
        let ino = std::fs::metadata(&dead).unwrap().ino();
        let mut r = Resolver::new(proc_root.path().to_owned(), Some(cg.path().to_owned()));
        let o = r.resolve(42, 0, 1).unwrap();
        assert_eq!(o.unit.as_deref(), Some("app.service"));
        // Gone from /proc: the kernel's cgroup id still names it.
        let o = r.resolve(43, ino, 2).unwrap();
        assert_eq!(o.container_id.as_deref(), Some(ID));
        assert_eq!(o.cgroup, format!("/system.slice/docker-{ID}.scope"));
        // Unknown id: no answer, and no second walk within a second.
        assert!(r.resolve(44, ino + 1_000_000, 3).is_none());
        assert!(r.resolve(0, ino, 4).is_none());
        r.forget(42);
        std::fs::remove_dir_all(proc_root.path().join("42")).unwrap();
        assert!(r.resolve(42, 0, 5).is_none());
        // A process the enricher read: no /proc read of its own (there is none to read).
        r.learn(&[ProcInfo {
            pid: 45,
            cgroup: "/system.slice/web.service".into(),
            ..ProcInfo::default()
        }]);
        assert_eq!(
            r.resolve(45, 0, 6).and_then(|o| o.unit.clone()).as_deref(),
            Some("web.service")
        );
    }

    /// This machine's layout: v1 controllers plus the unified tree beside them.
    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
41 33 0:36 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
42 33 0:37 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,cpu,cpuacct
";
    /// Debian 12 / Ubuntu 22.04 / RHEL 9: one unified tree, here after a bind mount of a subtree
    /// (which must not win) and with a blank in a mount point.
    const V2_ONLY: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
90 30 0:26 /system.slice /srv/bound rw,relatime shared:40 - cgroup2 cgroup2 rw
26 25 0:26 / /sys/fs/my\\040cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn mounts_of_hybrid_and_v2_only_hosts() {
        assert_eq!(
            Mounts::from_mountinfo(HYBRID),
            Mounts {
                v2: Some("/sys/fs/cgroup/unified".into()),
                v1_memory: Some("/sys/fs/cgroup/memory".into()),
            }
        );
        assert_eq!(
            Mounts::from_mountinfo(V2_ONLY),
            Mounts {
                v2: Some("/sys/fs/my cgroup".into()),
                v1_memory: None,
            }
        );
        assert_eq!(
            Mounts::from_mountinfo("garbage\n\n - \n"),
            Mounts::default()
        );
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn memcg_limit_on_a_v2_only_host() {
        let cg = tempfile::tempdir().unwrap();
        let root = cg.path();
        // The root cgroup has no memory.max; the pod holds the limit, the container has none.
        write(root, "cgroup.controllers", "cpu memory pids\n");
        write(root, "kubepods/memory.max", "max\n");
        write(root, "kubepods/pod1/memory.max", "268435456\n");
        write(root, "kubepods/pod1/ctr/memory.max", "max\n");
        write(
            root,
            "kubepods/pod1/ctr/memory.events",
            "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n",
        );
        write(root, "web.slice/app.service/memory.max", "67108864\n");
        write(root, "free.slice/memory.max", "max\n");
        let m = Mounts {
            v2: Some(root.to_owned()),
            v1_memory: None,
        };
        let got = m.memcg(7, "0::/kubepods/pod1/ctr\n").unwrap();
        assert_eq!(got.limit_bytes, Some(256 << 20));
        assert_eq!(got.cgroup, "/kubepods/pod1");
        assert_eq!(got.pid, 7);
        let got = m.memcg(8, "0::/web.slice/app.service\n").unwrap();
        assert_eq!(
            (got.cgroup.as_str(), got.limit_bytes),
            ("/web.slice/app.service", Some(64 << 20))
        );
        // Accounted but unlimited all the way up: the whole system ran out.
        let got = m.memcg(9, "0::/free.slice\n").unwrap();
        assert_eq!(
            (got.cgroup.as_str(), got.limit_bytes),
            ("/free.slice", None)
        );
        // Not accounted (no memory.max): nothing to say.
        assert_eq!(m.memcg(10, "0::/\n"), None);
        assert_eq!(m.memcg(10, "0::/gone\n"), None);
        assert_eq!(m.memcg(10, "not a cgroup file"), None);
    }

    #[test]
    fn memcg_limit_on_a_hybrid_host() {
        let v1 = tempfile::tempdir().unwrap();
        let v2 = tempfile::tempdir().unwrap();
        write(v1.path(), "gw/x/memory.limit_in_bytes", "67108864\n");
        write(
            v1.path(),
            "gw/y/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(
            v1.path(),
            "gw/y/memory.stat",
            "cache 0\nhierarchical_memory_limit 134217728\nhierarchical_memsw_limit 9223372036854771712\n",
        );
        write(
            v1.path(),
            "free/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(
            v1.path(),
            "free/memory.stat",
            "hierarchical_memory_limit 9223372036854771712\n",
        );
        // The unified tree of a hybrid host has no memory controller: no memory.max anywhere.
        write(v2.path(), "system.slice/app.service/cgroup.procs", "");
        let m = Mounts {
            v2: Some(v2.path().to_owned()),
            v1_memory: Some(v1.path().to_owned()),
        };
        let text = |mem: &str| {
            format!(
                "12:cpu,cpuacct:/\n4:memory:{mem}\n1:name=systemd:/system.slice/app.service\n0::/system.slice/app.service\n"
            )
        };
        let got = m.memcg(1, &text("/gw/x")).unwrap();
        assert_eq!(
            (got.cgroup.as_str(), got.limit_bytes),
            ("/gw/x", Some(64 << 20))
        );
        let got = m.memcg(2, &text("/gw/y")).unwrap();
        assert_eq!(
            got.limit_bytes,
            Some(128 << 20),
            "the parent's limit, from memory.stat"
        );
        let got = m.memcg(3, &text("/free")).unwrap();
        assert_eq!((got.cgroup.as_str(), got.limit_bytes), ("/free", None));
        // Without the v1 memory mount the v2 line says nothing (not accounted there).
        let v2_only_mount = Mounts {
            v2: m.v2.clone(),
            v1_memory: None,
        };
        assert_eq!(v2_only_mount.memcg(1, &text("/gw/x")), None);
    }
}
