//! The loader's half of the cgroup `sock_addr` programs (probe-ebpf's `sock_addr`): connect
//! attempts seen per connect on the cgroup v2 unified root, with no syscall tracepoint.
//!
//! connect4/connect6 go through aya. The unix one needs the attach type `BPF_CGROUP_UNIX_CONNECT`
//! (49, kernel 6.7+), which aya 0.16 cannot load or attach (aya-obj parses no `connect_unix`
//! section and its attach-type enum stops before it). So this module parses the embedded object
//! once more with aya-obj, relocates the unix program's instructions against the maps aya has
//! already created (same object, so the same section and symbol indices), loads it with
//! `BPF_PROG_LOAD` (`BPF_PROG_TYPE_CGROUP_SOCK_ADDR`, expected attach type 49) and links it to
//! the cgroup root with `BPF_LINK_CREATE`. The link's fd is the attachment: closing it (dropping
//! [`UnixConnect`]) detaches the program.
use std::{
    collections::HashSet,
    ffi::CString,
    fs::File,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::Map,
    programs::{CgroupAttachMode, CgroupSockAddr},
};
use aya_obj::generated::{
    bpf_attach_type::BPF_CGROUP_UNIX_CONNECT, bpf_cmd, bpf_insn,
    bpf_prog_type::BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
};
use probe_common::{Offsets, PROG_CONNECT_UNIX, PROG_CONNECT4, PROG_CONNECT6};

use super::btf::{BtfError, KernelBtf};

/// The cgroup v2 (unified) hierarchy's mount point, from a mountinfo text.
#[must_use]
pub fn cgroup2_root_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER`
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let fields: Vec<&str> = left.split_whitespace().collect();
        (fstype == "cgroup2" && fields.get(3) == Some(&"/"))
            .then(|| fields.get(4).map(|m| PathBuf::from(unescape_mount(m))))
            .flatten()
    })
}

/// mountinfo escapes spaces, tabs, newlines and backslashes as octal (`\040`).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(oct) = s.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This host's cgroup v2 root, or `None` when no unified hierarchy is mounted.
#[must_use]
pub fn cgroup2_root() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_root_in(&text)
}

/// The context offsets the unix program reads (`bpf_sock_addr_kern`, from BTF).
pub fn offsets(kbtf: &KernelBtf, o: &mut Offsets) -> Result<(), BtfError> {
    o.sa_kern_uaddr = kbtf.member_offset("bpf_sock_addr_kern", "uaddr")?;
    o.sa_kern_uaddrlen = kbtf.member_offset("bpf_sock_addr_kern", "uaddrlen")?;
    Ok(())
}

/// Loads connect4/connect6 and attaches them to the cgroup at `root`.
pub fn attach_inet(ebpf: &mut Ebpf, root: &Path) -> Result<(), String> {
    let cgroup = File::open(root).map_err(|e| format!("{}: {e}", root.display()))?;
    for name in [PROG_CONNECT4, PROG_CONNECT6] {
        let p: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or("program missing from the object")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        p.load().map_err(|e| format!("{name}: {e}"))?;
        p.attach(cgroup.as_fd(), CgroupAttachMode::Single)
            .map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

/// The unix connect program, loaded and linked by hand. Dropping it detaches it.
pub struct UnixConnect {
    /// Kept for the link's lifetime (the link holds its own reference, this one is for
    /// `recursion_misses` and bpftool's listing by id).
    prog: OwnedFd,
    _link: OwnedFd,
}

impl UnixConnect {
    /// Relocates, loads and links the unix program (see the module doc).
    pub fn attach(ebpf: &Ebpf, object: &[u8], root: &Path) -> Result<Self, String> {
        let insns = relocated(ebpf, object)?;
        let prog = prog_load(&insns)?;
        let cgroup = File::open(root).map_err(|e| format!("{}: {e}", root.display()))?;
        let link = link_create(&prog, &cgroup)?;
        Ok(Self { prog, _link: link })
    }

    /// The program's fd.
    #[must_use]
    pub fn prog_fd(&self) -> i32 {
        self.prog.as_raw_fd()
    }
}

/// The fd of a map aya created, for the map types the programs use.
fn map_fd(map: &Map) -> Option<i32> {
    let (Map::Array(data)
    | Map::HashMap(data)
    | Map::LruHashMap(data)
    | Map::PerCpuArray(data)
    | Map::RingBuf(data)) = map
    else {
        return None;
    };
    Some(data.fd().as_fd().as_raw_fd())
}

/// The unix program's instructions, relocated against `ebpf`'s maps.
fn relocated(ebpf: &Ebpf, object: &[u8]) -> Result<Vec<bpf_insn>, String> {
    let mut obj = aya_obj::Object::parse(object).map_err(|e| e.to_string())?;
    let key = obj
        .programs
        .get(PROG_CONNECT_UNIX)
        .ok_or("program missing from the object")?
        .function_key();
    let text_sections: HashSet<usize> = obj.functions.keys().map(|&(s, _)| s).collect();
    // Only the unix program is relocated (the other programs' maps need not be offered), with
    // the functions it may call.
    let program_sections: HashSet<usize> = obj.programs.values().map(|p| p.section_index).collect();
    obj.functions
        .retain(|k, _| *k == key || !program_sections.contains(&k.0));
    obj.programs.retain(|name, _| name == PROG_CONNECT_UNIX);
    let maps: Vec<(String, i32)> = ebpf
        .maps()
        .filter_map(|(name, m)| map_fd(m).map(|fd| (name.to_owned(), fd)))
        .collect();
    let obj_maps = obj.maps.clone();
    let offered = maps
        .iter()
        .filter_map(|(name, fd)| obj_maps.get(name).map(|m| (name.as_str(), *fd, m)));
    obj.relocate_maps(offered, &text_sections)
        .map_err(|e| e.to_string())?;
    obj.relocate_calls(&text_sections)
        .map_err(|e| e.to_string())?;
    obj.functions
        .get(&key)
        .map(|f| f.instructions.clone())
        .ok_or_else(|| "relocated program missing".to_owned())
}

/// The prefix of `union bpf_attr` that `BPF_PROG_LOAD` reads (the kernel zero-fills the rest).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The prefix of `union bpf_attr` that `BPF_LINK_CREATE` reads for a cgroup target.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// `bpf(cmd, attr, size)`, the new fd on success.
///
/// # Safety
/// `attr` must be the attribute struct `cmd` expects (a prefix of `union bpf_attr`), with every
/// pointer in it valid for the call.
unsafe fn bpf_fd<T>(cmd: bpf_cmd, attr: &mut T) -> std::io::Result<OwnedFd> {
    // SAFETY: per the contract; the size is the struct's.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            size_of::<T>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(rc).map_err(|_| std::io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn prog_load(insns: &[bpf_insn]) -> Result<OwnedFd, String> {
    let license = CString::new("GPL").map_err(|e| e.to_string())?;
    let mut name = [0u8; 16];
    let n = PROG_CONNECT_UNIX.len().min(15);
    name[..n].copy_from_slice(&PROG_CONNECT_UNIX.as_bytes()[..n]);
    let load = |log: &mut Vec<u8>| {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_SOCK_ADDR as u32,
            insn_cnt: u32::try_from(insns.len()).unwrap_or(u32::MAX),
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: u32::try_from(log.len()).unwrap_or(0),
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
            prog_ifindex: 0,
            expected_attach_type: BPF_CGROUP_UNIX_CONNECT as u32,
        };
        // SAFETY: a BPF_PROG_LOAD attribute prefix; `insns`, `license` and `log` outlive the call.
        unsafe { bpf_fd(bpf_cmd::BPF_PROG_LOAD, &mut attr) }
    };
    load(&mut Vec::new()).or_else(|first| {
        // Once more with the verifier's log, for the message.
        let mut log = vec![0u8; 1 << 24];
        load(&mut log).map_err(|_| {
            let text = String::from_utf8_lossy(&log);
            let lines: Vec<&str> = text.trim_end_matches('\0').lines().collect();
            let tail = lines[lines.len().saturating_sub(4)..].join(" / ");
            format!("BPF_PROG_LOAD: {first} ({tail})")
        })
    })
}

fn link_create(prog: &OwnedFd, cgroup: &File) -> Result<OwnedFd, String> {
    let mut attr = LinkCreateAttr {
        prog_fd: u32::try_from(prog.as_raw_fd()).unwrap_or(0),
        target_fd: u32::try_from(cgroup.as_raw_fd()).unwrap_or(0),
        attach_type: BPF_CGROUP_UNIX_CONNECT as u32,
        flags: 0,
    };
    // SAFETY: a BPF_LINK_CREATE attribute prefix with two fds we own.
    unsafe { bpf_fd(bpf_cmd::BPF_LINK_CREATE, &mut attr) }
        .map_err(|e| format!("BPF_LINK_CREATE: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_root_in_a_hybrid_mountinfo() {
        let text = "\
24 30 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
28 24 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
29 28 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
31 28 0:29 / /sys/fs/cgroup/memory rw,nosuid shared:12 - cgroup cgroup rw,memory
";
        assert_eq!(
            cgroup2_root_in(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn no_unified_root_and_bind_mounts_of_a_subtree_are_not_roots() {
        let v1 = "31 28 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(cgroup2_root_in(v1), None);
        let sub = "40 28 0:27 /system.slice /mnt/x\\040y rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_root_in(sub), None);
        let spaced = "40 28 0:27 / /mnt/x\\040y rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_root_in(spaced), Some(PathBuf::from("/mnt/x y")));
    }
}
