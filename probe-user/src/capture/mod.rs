//! Kernel capture: loads the embedded eBPF object with this kernel's field offsets, attaches one
//! program per hook, and drains the ring buffer on a timer (the programs never wake us up).
pub mod btf;
pub mod fold;
pub mod tracefs;

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
};
use probe_common::{
    CNT_LOST_MAP_FULL, CNT_LOST_READ, CNT_LOST_RINGBUF, CNT_LOST_TCP_OWNER, ERRNO_SLOTS, FoldKey,
    FoldVal, GLOBAL_OFFSETS, KIND_CONNECT_FAILED, MAP_COUNTERS, MAP_ERRNO, MAP_EVENTS, MAP_FOLD,
    NUM_COUNTERS, Offsets, RawEvent,
};

use crate::event::{Body, Clock, Decoder, Event, monotonic_ns};

/// The eBPF object, built by build.rs from probe-ebpf.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gwtrace"));

/// Errors starting the capture. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "gwtrace needs root, or CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN (tracefs, tracepoints): run it with sudo"
    )]
    NotRoot,
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error("loading the eBPF programs failed: {0}")]
    Load(String),
    #[error("attaching {0} failed: {1} (is the tracepoint enabled in this kernel?)")]
    Attach(String, String),
}

/// Which hooks to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hooks {
    /// Every hook: syscall tracepoints on connect/accept (every cause; every syscall on the host
    /// pays the syscall-tracepoint slow path, ~20-50 ns).
    Full,
    /// No syscall tracepoints: TCP failures from the socket state machine, worker deaths, OOM.
    /// Misses unix-socket connect errors and errors `connect()` returns before the handshake
    /// (EADDRNOTAVAIL, ENETUNREACH from routing) and accept failures.
    Sock,
}

/// One program: (function name in the object, tracepoint category, tracepoint name, syscall hook).
const PROGRAMS: &[(&str, &str, &str, bool)] = &[
    ("sys_enter_connect", "syscalls", "sys_enter_connect", true),
    ("sys_exit_connect", "syscalls", "sys_exit_connect", true),
    ("sys_exit_accept", "syscalls", "sys_exit_accept", true),
    ("sys_exit_accept4", "syscalls", "sys_exit_accept4", true),
    ("sys_enter_execve", "syscalls", "sys_enter_execve", true),
    ("sys_exit_execve", "syscalls", "sys_exit_execve", true),
    ("sys_enter_execveat", "syscalls", "sys_enter_execveat", true),
    ("sys_exit_execveat", "syscalls", "sys_exit_execveat", true),
    ("inet_sock_set_state", "sock", "inet_sock_set_state", false),
    ("sched_process_exit", "sched", "sched_process_exit", false),
    ("sched_process_exec", "sched", "sched_process_exec", false),
    ("signal_generate", "signal", "signal_generate", false),
    ("mark_victim", "oom", "mark_victim", false),
];

/// Whether the hot syscall fields sit at the layout the programs can load directly (a direct
/// context load needs the offset in the instruction; a helper read cost ~125 ns here).
fn syscall_layout_fixed(o: &Offsets) -> bool {
    use probe_common::{SYSCALL_ARG0, SYSCALL_RET};
    let fixed = (
        o.enter_connect_fd,
        o.enter_connect_addr,
        o.enter_connect_addrlen,
    ) == (SYSCALL_ARG0, SYSCALL_ARG0 + 8, SYSCALL_ARG0 + 16)
        && [o.exit_connect_ret, o.exit_accept_ret, o.exit_accept4_ret] == [SYSCALL_RET; 3];
    if !fixed {
        log::info!(
            "syscall tracepoint layout differs from the usual one: reading it through helpers"
        );
    }
    fixed
}

/// The raw tracepoint twin of the classic `inet_sock_set_state` program.
const RAW_SOCK_STATE: &str = "inet_sock_set_state_raw";
/// The classic program it replaces.
const CLASSIC_SOCK_STATE: &str = "inet_sock_set_state";

/// Loads and attaches a raw tracepoint program.
fn attach_raw(ebpf: &mut Ebpf, prog: &str, tracepoint: &str) -> Result<(), String> {
    let p: &mut RawTracePoint = ebpf
        .program_mut(prog)
        .ok_or("program missing from the object")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    p.load().map_err(|e| e.to_string())?;
    p.attach(tracepoint).map_err(|e| e.to_string())?;
    Ok(())
}

/// Kernel counters, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Indexed by `probe_common::CNT_*`.
    pub counters: Vec<u64>,
    /// Connect results per errno (slot 0 = success).
    pub connect_errno: Vec<u64>,
    /// Accept results per errno (slot 0 = success).
    pub accept_errno: Vec<u64>,
    /// Runs the kernel skipped because a BPF program was already running on that CPU.
    pub recursion_misses: u64,
}

/// Loss reasons reported as `loss` events, with the counter each one comes from.
const LOSS_COUNTERS: &[(&str, u32)] = &[
    ("ringbuf_full", CNT_LOST_RINGBUF),
    ("map_full", CNT_LOST_MAP_FULL),
    ("tcp_owner_unknown", CNT_LOST_TCP_OWNER),
    ("user_read_failed", CNT_LOST_READ),
];

/// A running capture. Dropping it detaches every program and frees every map.
pub struct Capture {
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    errnos: PerCpuArray<MapData, u64>,
    fold_map: BpfHashMap<MapData, FoldKey, FoldVal>,
    folds: fold::Folds,
    clock: Clock,
    hooks: Hooks,
    /// Loss already reported, per reason (same order as `LOSS_COUNTERS`, then recursion misses).
    reported_loss: Vec<u64>,
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Reads every tracepoint offset the programs need from tracefs and BTF.
pub fn offsets(hooks: Hooks) -> Result<Offsets, CaptureError> {
    let tfs = tracefs::ensure_mounted()?;
    let fmt = |c: &str, n: &str| tracefs::Format::read(&tfs, c, n);
    let mut o = Offsets {
        self_tgid: std::process::id(),
        ..Offsets::default()
    };
    if hooks == Hooks::Full {
        let enter = fmt("syscalls", "sys_enter_connect")?;
        o.enter_connect_fd = enter.offset("fd")?;
        o.enter_connect_addr = enter.offset("uservaddr")?;
        o.enter_connect_addrlen = enter.offset("addrlen")?;
        o.exit_connect_ret = fmt("syscalls", "sys_exit_connect")?.offset("ret")?;
        o.exit_accept_ret = fmt("syscalls", "sys_exit_accept")?.offset("ret")?;
        o.exit_accept4_ret = fmt("syscalls", "sys_exit_accept4")?.offset("ret")?;
        o.syscall_layout_fixed = u32::from(syscall_layout_fixed(&o));
        o.enter_execve_filename = fmt("syscalls", "sys_enter_execve")?.offset("filename")?;
        o.exit_execve_ret = fmt("syscalls", "sys_exit_execve")?.offset("ret")?;
        o.enter_execveat_filename = fmt("syscalls", "sys_enter_execveat")?.offset("filename")?;
        o.exit_execveat_ret = fmt("syscalls", "sys_exit_execveat")?.offset("ret")?;
    }
    let ss = fmt("sock", "inet_sock_set_state")?;
    o.ss_skaddr = ss.offset("skaddr")?;
    o.ss_oldstate = ss.offset("oldstate")?;
    o.ss_newstate = ss.offset("newstate")?;
    o.ss_sport = ss.offset("sport")?;
    o.ss_dport = ss.offset("dport")?;
    o.ss_family = ss.offset("family")?;
    o.ss_protocol = ss.offset("protocol")?;
    o.ss_daddr = ss.offset("daddr")?;
    o.ss_daddr_v6 = ss.offset("daddr_v6")?;
    let exit = fmt("sched", "sched_process_exit")?;
    o.exit_pid = exit.offset("pid")?;
    o.exit_group_dead = exit.optional("group_dead");
    o.exec_filename = fmt("sched", "sched_process_exec")?.offset("filename")?;
    let sig = fmt("signal", "signal_generate")?;
    o.sig_sig = sig.offset("sig")?;
    o.sig_code = sig.offset("code")?;
    o.sig_comm = sig.offset("comm")?;
    o.sig_pid = sig.offset("pid")?;
    o.sig_group = sig.offset("group")?;
    o.sig_result = sig.offset("result")?;
    let oom = fmt("oom", "mark_victim")?;
    o.oom_pid = oom.offset("pid")?;
    o.oom_comm = oom.offset("comm")?;
    o.oom_total_vm = oom.offset("total_vm")?;
    o.oom_anon_rss = oom.offset("anon_rss")?;
    o.oom_file_rss = oom.offset("file_rss")?;
    o.oom_shmem_rss = oom.offset("shmem_rss")?;
    o.oom_uid = oom.optional("uid");
    let kbtf = btf::KernelBtf::load()?;
    o.task_exit_code = kbtf.member_offset("task_struct", "exit_code")?;
    let common = kbtf.member_offset("sock", "__sk_common")?;
    let sk_common = |member: &str| {
        kbtf.member_offset("sock_common", member)
            .map(|off| common + off)
    };
    o.sk_protocol = kbtf.member_offset("sock", "sk_protocol")?;
    o.sk_family = sk_common("skc_family")?;
    o.sk_sport = kbtf.member_offset("inet_sock", "inet_sport")?;
    o.sk_dport = sk_common("skc_dport")?;
    o.sk_daddr = sk_common("skc_daddr")?;
    o.sk_v6_daddr = sk_common("skc_v6_daddr")?;
    o.sock_sk_err = kbtf.member_offset("sock", "sk_err")?;
    Ok(o)
}

impl Capture {
    /// Loads and attaches the programs.
    pub fn start(hooks: Hooks) -> Result<Self, CaptureError> {
        if !is_root() {
            return Err(CaptureError::NotRoot);
        }
        let offsets = offsets(hooks)?;
        log::debug!("tracepoint offsets: {offsets:?}");
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_OFFSETS, &offsets, true)
            .load(EBPF_OBJECT)
            .map_err(|e| CaptureError::Load(e.to_string()))?;
        // The socket state machine through the raw tracepoint when the kernel allows it: no
        // classic record is built for every state change of every TCP socket on the host.
        let raw_sock_state = attach_raw(&mut ebpf, RAW_SOCK_STATE, "inet_sock_set_state");
        if let Err(e) = &raw_sock_state {
            log::info!(
                "raw tracepoint inet_sock_set_state unavailable ({e}): using the classic tracepoint"
            );
        }
        for &(prog, category, name, syscall) in PROGRAMS {
            if (syscall && hooks == Hooks::Sock)
                || (prog == CLASSIC_SOCK_STATE && raw_sock_state.is_ok())
            {
                continue;
            }
            let attach_err = |e: &dyn std::fmt::Display| {
                CaptureError::Attach(format!("{category}:{name}"), e.to_string())
            };
            let p: &mut TracePoint = ebpf
                .program_mut(prog)
                .ok_or_else(|| attach_err(&"program missing from the object"))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| attach_err(&e))?;
            p.load().map_err(|e| attach_err(&e))?;
            p.attach(category, name).map_err(|e| attach_err(&e))?;
        }
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| CaptureError::Load(format!("map {name} missing")))
        };
        let ring = RingBuf::try_from(take(&mut ebpf, MAP_EVENTS)?)
            .map_err(|e| CaptureError::Load(e.to_string()))?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, MAP_COUNTERS)?)
            .map_err(|e| CaptureError::Load(e.to_string()))?;
        let errnos = PerCpuArray::try_from(take(&mut ebpf, MAP_ERRNO)?)
            .map_err(|e| CaptureError::Load(e.to_string()))?;
        let fold_map = BpfHashMap::try_from(take(&mut ebpf, MAP_FOLD)?)
            .map_err(|e| CaptureError::Load(e.to_string()))?;
        Ok(Self {
            ebpf,
            ring,
            counters,
            errnos,
            fold_map,
            folds: fold::Folds::default(),
            clock: Clock::now(),
            hooks,
            reported_loss: vec![0; LOSS_COUNTERS.len() + 1],
        })
    }

    /// Which hooks are attached.
    #[must_use]
    pub fn hooks(&self) -> Hooks {
        self.hooks
    }

    /// The clock used to stamp events.
    #[must_use]
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Decodes every event waiting in the ring buffer, oldest first, then the failures folded
    /// into keys whose window has passed. Undecodable records are logged and skipped (they
    /// cannot happen unless the object and loader disagree). Returns the records read.
    pub fn drain(&mut self, sink: impl FnMut(Event)) -> usize {
        self.drain_until(monotonic_ns(), sink)
    }

    /// [`Capture::drain`], then every folded failure not reported yet, due or not: the last
    /// drain before detaching (nothing counted in the kernel is left behind).
    pub fn flush(&mut self, sink: impl FnMut(Event)) -> usize {
        self.drain_until(u64::MAX, sink)
    }

    fn drain_until(&mut self, due_by_ns: u64, mut sink: impl FnMut(Event)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            n += 1;
            let raw = match Decoder::raw(&item) {
                Ok(raw) => raw,
                Err(e) => {
                    log::warn!("undecodable event: {e}");
                    continue;
                }
            };
            drop(item);
            let count = if raw.kind == KIND_CONNECT_FAILED {
                self.folds.count(&raw)
            } else {
                1
            };
            if count > 0 {
                deliver(&self.clock, &raw, count, &mut sink);
            }
        }
        let fold_map = &self.fold_map;
        let residuals = self.folds.sweep(due_by_ns, |k| fold_map.get(k, 0).ok());
        for (raw, count) in residuals {
            deliver(&self.clock, &raw, count, &mut sink);
        }
        n
    }

    /// One kernel counter (`probe_common::CNT_*`), summed over CPUs.
    #[must_use]
    pub fn counter(&self, idx: u32) -> u64 {
        sum_cpus(&self.counters, idx)
    }

    /// Current kernel counters, summed over CPUs.
    #[must_use]
    pub fn counters(&self) -> Counters {
        Counters {
            counters: (0..NUM_COUNTERS).map(|i| self.counter(i)).collect(),
            connect_errno: (0..ERRNO_SLOTS)
                .map(|i| sum_cpus(&self.errnos, i))
                .collect(),
            accept_errno: (ERRNO_SLOTS..2 * ERRNO_SLOTS)
                .map(|i| sum_cpus(&self.errnos, i))
                .collect(),
            recursion_misses: self.recursion_misses(),
        }
    }

    /// Sum of the kernel's `recursion_misses` over our programs.
    #[must_use]
    pub fn recursion_misses(&self) -> u64 {
        self.ebpf
            .programs()
            .filter_map(|(_, p)| p.fd().ok())
            .map(|fd| prog_recursion_misses(fd.as_fd().as_raw_fd()))
            .sum()
    }

    /// `loss` events for every loss counter that grew since the last call (reads just those
    /// counters: a few syscalls, not one per counter and errno slot).
    pub fn loss_events(&mut self, now_mono_ns: u64) -> Vec<Event> {
        let mut out = Vec::new();
        let current: Vec<u64> = LOSS_COUNTERS
            .iter()
            .map(|&(_, idx)| self.counter(idx))
            .chain(std::iter::once(self.recursion_misses()))
            .collect();
        for (i, (&now, prev)) in current
            .iter()
            .zip(self.reported_loss.iter_mut())
            .enumerate()
        {
            if now > *prev {
                let reason = LOSS_COUNTERS
                    .get(i)
                    .map_or("tracepoint_recursion", |&(r, _)| r);
                out.push(loss_event(&self.clock, now_mono_ns, reason, now - *prev));
                *prev = now;
            }
        }
        out
    }
}

/// One slot of a per-CPU counter array, summed over CPUs (0 if unreadable).
fn sum_cpus(map: &PerCpuArray<MapData, u64>, idx: u32) -> u64 {
    map.get(&idx, 0).map_or(0, |v| v.iter().sum())
}

/// Decodes a record and hands it on, a failed connect with the number of failures it stands for.
fn deliver(clock: &Clock, raw: &RawEvent, count: u64, sink: &mut impl FnMut(Event)) {
    match Decoder::from_raw(raw, clock) {
        Ok(mut ev) => {
            if let Body::ConnectFailed { count: c, .. } = &mut ev.body {
                *c = count;
            }
            sink(ev);
        }
        Err(e) => log::warn!("undecodable event: {e}"),
    }
}

/// A `loss` event stamped now.
#[must_use]
pub fn loss_event(clock: &Clock, mono_ns: u64, reason: &str, count: u64) -> Event {
    let body = Body::Loss {
        reason: reason.to_owned(),
        count,
    };
    let mut ev = Event::of_task(
        clock.rfc3339(mono_ns),
        mono_ns,
        std::process::id(),
        "gwtrace",
        body,
    );
    ev.tid = 0;
    ev
}

/// `bpf_prog_info.recursion_misses` of a program, via `BPF_OBJ_GET_INFO_BY_FD` (aya does not
/// expose it). 0 when the kernel does not report it.
fn prog_recursion_misses(fd: i32) -> u64 {
    /// `offsetof(struct bpf_prog_info, recursion_misses)` in the kernel UAPI (stable ABI).
    const RECURSION_MISSES_OFF: usize = 208;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = [0u8; 256];
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd).unwrap_or(0),
        info_len: u32::try_from(info.len()).unwrap_or(0),
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: attr points to a valid bpf_attr prefix for this command, `info` outlives the call and
    // `info_len` bounds what the kernel writes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            size_of::<InfoAttr>(),
        )
    };
    if rc != 0 || (attr.info_len as usize) < RECURSION_MISSES_OFF + 8 {
        return 0;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&info[RECURSION_MISSES_OFF..RECURSION_MISSES_OFF + 8]);
    u64::from_ne_bytes(b)
}
