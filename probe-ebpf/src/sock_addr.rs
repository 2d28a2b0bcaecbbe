//! Connect attempts seen by cgroup v2 `sock_addr` programs on the unified root (`--hooks auto`):
//! they run once per `connect()` on a socket (never per syscall on the host, unlike a syscall
//! tracepoint) and get the process and the target, before the kernel tries it. Only TCP and unix
//! stream sockets are looked at, and only watched processes' (proxies and their children, see
//! `common::GW_WATCHED`); gwtrace's own connects are skipped.
//!
//! An attempt is not a failure: userspace checks unix targets and escalates to the syscall hooks
//! when one looks wrong. So the healthy path must stay in the kernel: a (process, target) key is
//! reported at most once per [`ATTEMPT_WINDOW_NS`], the attempts in between are only counted in
//! [`GW_ATTEMPTS`] and carried by the key's next report.
//!
//! Every program returns 1: a connect is never refused here.
//!
//! The unix program (`cgroup/connect_unix` in libbpf's terms, attach type 49, kernel 6.7+) sits in
//! a `cgroup/connect4` section because aya-obj parses no other name; the loader never loads it
//! through aya but with `BPF_PROG_LOAD` and the unix attach type itself. Its context has no field
//! for `sun_path`: at run time it is a `struct bpf_sock_addr_kern`, whose `uaddr`/`uaddrlen` are
//! read with `bpf_probe_read_kernel` at BTF offsets (root: the verifier lets the context pointer
//! reach the helper).
use aya_ebpf::{
    bindings::{BPF_NOEXIST, bpf_sock_addr},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_buf,
    },
    macros::{cgroup_sock_addr, map},
    maps::LruHashMap,
    programs::SockAddrContext,
};
use probe_common::{
    AF_INET, AF_INET6, AF_UNIX, ATTEMPT_WINDOW_NS, ATTEMPTS_MAX, AttemptVal, CNT_CONNECT_ATTEMPTS,
    FoldKey, KIND_CONNECT_ATTEMPT, ProbeError, SOURCE_ATTEMPT, UNIX_PATH_MAX,
};

use crate::common::{GW_CONNECTS, count, current_owner, emit, off, watched};

/// Attempts per (process, target), rate-limited ([`FoldKey`] with errno 0, [`SOURCE_ATTEMPT`]).
#[map]
pub static GW_ATTEMPTS: LruHashMap<FoldKey, AttemptVal> =
    LruHashMap::with_max_entries(ATTEMPTS_MAX, 0);

/// The errno of a TCP connect that found no free local port (`sock_state` reports it while the
/// syscall hooks are detached).
pub const EADDRNOTAVAIL: i32 = 99;

/// Whether the current thread's `connect()` is seen by the syscall hooks (its entry saved its
/// arguments): false while `--hooks auto` has them detached.
#[inline(always)]
pub fn syscall_hooked() -> bool {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: only the presence of the entry is read.
    unsafe { GW_CONNECTS.get(&tid) }.is_some()
}

const SOCK_STREAM: u32 = 1;
const IPPROTO_TCP: u32 = 6;
/// What a `sock_addr` program returns to let the connect go on.
const ALLOW: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn gw_connect4(ctx: SockAddrContext) -> i32 {
    let _ = try_connect_inet(&ctx, AF_INET);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn gw_connect6(ctx: SockAddrContext) -> i32 {
    let _ = try_connect_inet(&ctx, AF_INET6);
    ALLOW
}

/// Loaded by hand with the unix connect attach type (see the module doc).
#[cgroup_sock_addr(connect4)]
pub fn gw_connect_unix(ctx: SockAddrContext) -> i32 {
    let _ = try_connect_unix(&ctx);
    ALLOW
}

/// A new key for the current process, or `None` unless it is watched (a proxy or its child:
/// only a proxy's attempts can be 502 symptoms, so every other process's connect costs one
/// lookup). gwtrace itself is never watched.
#[inline(always)]
fn new_key(family: u16) -> Option<FoldKey> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !watched(tgid) || tgid == off!(self_tgid) as u32 {
        return None;
    }
    Some(FoldKey {
        tgid,
        errno: 0,
        family,
        port: 0,
        source: SOURCE_ATTEMPT,
        path_len: 0,
        pad: 0,
        addr: [0; 16],
        path: [0; UNIX_PATH_MAX],
    })
}

/// Whether the socket is a stream one (TCP for inet).
#[inline(always)]
fn stream(sa: &bpf_sock_addr, inet: bool) -> bool {
    sa.type_ == SOCK_STREAM && (!inet || sa.protocol == IPPROTO_TCP)
}

#[inline(always)]
fn try_connect_inet(ctx: &SockAddrContext, family: u16) -> Result<(), ProbeError> {
    // SAFETY: the context the kernel hands a sock_addr program; the verifier checks each field
    // access (these are readable for connect4/connect6).
    let sa = unsafe { &*ctx.sock_addr };
    if !stream(sa, true) {
        return Ok(());
    }
    let Some(mut key) = new_key(family) else {
        return Ok(());
    };
    // `user_port` holds the port in network order in its low 16 bits.
    key.port = u16::from_be(sa.user_port as u16);
    if family == AF_INET {
        key.addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    } else {
        for (i, w) in sa.user_ip6.iter().enumerate() {
            key.addr[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
        }
    }
    report(&key);
    Ok(())
}

#[inline(always)]
fn try_connect_unix(ctx: &SockAddrContext) -> Result<(), ProbeError> {
    // SAFETY: as in `try_connect_inet`; `type` is readable for every sock_addr attach type.
    let sa = unsafe { &*ctx.sock_addr };
    if !stream(sa, false) {
        return Ok(());
    }
    let Some(mut key) = new_key(AF_UNIX) else {
        return Ok(());
    };
    let kern = ctx.sock_addr.cast::<u8>();
    // SAFETY: at run time the context is a `struct bpf_sock_addr_kern`; the offsets come from
    // this kernel's BTF and the helper fails cleanly on a bad address.
    let uaddr = unsafe { bpf_probe_read_kernel::<u64>(kern.add(off!(sa_kern_uaddr)).cast()) }
        .map_err(|_| ProbeError::KernelRead)?;
    // SAFETY: as above.
    let uaddrlen = unsafe { bpf_probe_read_kernel::<u32>(kern.add(off!(sa_kern_uaddrlen)).cast()) }
        .map_err(|_| ProbeError::KernelRead)?;
    let len = (uaddrlen as usize).saturating_sub(2).min(UNIX_PATH_MAX);
    // SAFETY: `uaddr` is the kernel's copy of the caller's address (a sockaddr_storage, at least
    // `uaddrlen` bytes); the read is bounded by the key's path.
    if unsafe { bpf_probe_read_kernel_buf((uaddr as *const u8).add(2), &mut key.path[..len]) }
        .is_err()
    {
        return Err(ProbeError::KernelRead);
    }
    key.path_len = len as u8;
    report(&key);
    Ok(())
}

/// Counts one attempt of `key`; reports it when it is the key's first or its window has passed.
/// The healthy path (a key reported less than a window ago) costs the lookup and a count: the
/// owner's other fields are read only for a report.
#[inline(always)]
fn report(key: &FoldKey) {
    count(CNT_CONNECT_ATTEMPTS);
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let attempts = if let Some(v) = GW_ATTEMPTS.get_ptr_mut(key) {
        // SAFETY: a value just looked up; LRU values stay valid for the program's run (RCU). Two
        // CPUs counting the same key at once may lose one count: the figure is an estimate.
        unsafe {
            (*v).pending += 1;
            if now.wrapping_sub((*v).emitted_ns) < ATTEMPT_WINDOW_NS {
                return;
            }
            let n = (*v).pending;
            (*v).pending = 0;
            (*v).emitted_ns = now;
            n
        }
    } else {
        let first = AttemptVal {
            pending: 0,
            emitted_ns: now,
        };
        // An LRU map makes room itself; an error is another CPU's first attempt of the same
        // key, reported by both (a duplicate, not a loss).
        let _ = GW_ATTEMPTS.insert(key, &first, u64::from(BPF_NOEXIST));
        1
    };
    let owner = current_owner();
    emit(KIND_CONNECT_ATTEMPT, &owner, |ev| {
        ev.family = key.family;
        ev.port = key.port;
        ev.source = SOURCE_ATTEMPT;
        ev.addr = key.addr;
        ev.data_len = u16::from(key.path_len);
        // SAFETY: both arrays are at least UNIX_PATH_MAX bytes and do not overlap (one is in the
        // ring buffer, the other on the stack).
        unsafe {
            core::ptr::copy_nonoverlapping(key.path.as_ptr(), ev.data.as_mut_ptr(), UNIX_PATH_MAX);
        }
        ev.aux[1] = attempts;
    });
}
