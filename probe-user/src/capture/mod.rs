//! Kernel capture: loads the embedded eBPF object with this kernel's field offsets, attaches one
//! program per hook, and drains the ring buffer on a timer (the programs never wake us up).
pub mod btf;
pub mod conn_end;
pub mod fold;
pub mod sock_addr;
pub mod tracefs;
pub mod watch;

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint, trace_point::TracePointLinkId},
};
use probe_common::PROG_SCHED_PROCESS_FORK;
use probe_common::{
    CNT_LOST_MAP_FULL, CNT_LOST_READ, CNT_LOST_RINGBUF, CNT_LOST_TCP_OWNER, ERRNO_SLOTS, FoldKey,
    FoldVal, GLOBAL_OFFSETS, KIND_ACCEPT_FAILED, KIND_CONNECT_ATTEMPT, KIND_CONNECT_FAILED,
    MAP_COUNTERS, MAP_ERRNO, MAP_ERRORS, MAP_EVENTS, MAP_FOLD, NUM_COUNTERS, Offsets,
    PROG_KFREE_SKB, PROG_MARK_VICTIM, PROG_SCHED_PROCESS_EXEC, PROG_SCHED_PROCESS_EXIT,
    PROG_SIGNAL_GENERATE, PROG_SOCK_STATE, PROG_SOCK_STATE_RAW, PROG_SYS_ENTER_CONNECT,
    PROG_SYS_ENTER_EXECVE, PROG_SYS_ENTER_EXECVEAT, PROG_SYS_EXIT_ACCEPT, PROG_SYS_EXIT_ACCEPT4,
    PROG_SYS_EXIT_CONNECT, PROG_SYS_EXIT_EXECVE, PROG_SYS_EXIT_EXECVEAT, ProbeError, RawEvent,
};

use crate::{
    event::{Body, Clock, Decoder, Event, format_target, monotonic_ns},
    pipeline::escalation::Attempt,
};

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
    /// The default: `Sock`'s hooks plus cgroup `sock_addr` programs that see every connect
    /// attempt (no syscall slow path); the syscall tracepoints stay loaded but detached and are
    /// attached only while an anomaly is suspected ([`Capture::escalate`], [`Capture::calm`]).
    /// Without a cgroup v2 hierarchy it runs as `Full`.
    Auto,
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
    (
        PROG_SYS_ENTER_CONNECT,
        "syscalls",
        "sys_enter_connect",
        true,
    ),
    (PROG_SYS_EXIT_CONNECT, "syscalls", "sys_exit_connect", true),
    (PROG_SYS_EXIT_ACCEPT, "syscalls", "sys_exit_accept", true),
    (PROG_SYS_EXIT_ACCEPT4, "syscalls", "sys_exit_accept4", true),
    (PROG_SYS_ENTER_EXECVE, "syscalls", "sys_enter_execve", true),
    (PROG_SYS_EXIT_EXECVE, "syscalls", "sys_exit_execve", true),
    (
        PROG_SYS_ENTER_EXECVEAT,
        "syscalls",
        "sys_enter_execveat",
        true,
    ),
    (
        PROG_SYS_EXIT_EXECVEAT,
        "syscalls",
        "sys_exit_execveat",
        true,
    ),
    (PROG_SOCK_STATE, "sock", "inet_sock_set_state", false),
    (
        PROG_SCHED_PROCESS_EXIT,
        "sched",
        "sched_process_exit",
        false,
    ),
    (
        PROG_SCHED_PROCESS_EXEC,
        "sched",
        "sched_process_exec",
        false,
    ),
    (PROG_SIGNAL_GENERATE, "signal", "signal_generate", false),
    (PROG_MARK_VICTIM, "oom", "mark_victim", false),
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
const RAW_SOCK_STATE: &str = PROG_SOCK_STATE_RAW;
/// The classic program it replaces.
const CLASSIC_SOCK_STATE: &str = PROG_SOCK_STATE;

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

/// The error of a tracepoint that could not be loaded or attached.
fn attach_err(category: &str, name: &str, e: &dyn std::fmt::Display) -> CaptureError {
    CaptureError::Attach(format!("{category}:{name}"), e.to_string())
}

/// A classic tracepoint program of the object.
fn tracepoint<'a>(
    ebpf: &'a mut Ebpf,
    prog: &str,
    category: &str,
    name: &str,
) -> Result<&'a mut TracePoint, CaptureError> {
    ebpf.program_mut(prog)
        .ok_or_else(|| attach_err(category, name, &"program missing from the object"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| attach_err(category, name, &e))
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

/// Loss reasons counted on the way (a program goes on after them), with their counter. The
/// errors that end a program ([`ProbeError`], counted in `MAP_ERRORS`) are loss reasons too,
/// some under the same name ([`ProbeError::reason`]): `loss` events sum both.
const LOSS_COUNTERS: &[(&str, u32)] = &[
    ("ringbuf_full", CNT_LOST_RINGBUF),
    ("map_full", CNT_LOST_MAP_FULL),
    ("tcp_owner_unknown", CNT_LOST_TCP_OWNER),
    ("user_read_failed", CNT_LOST_READ),
];

/// Every loss reason, in report order: the counters', the errors' not named yet, then
/// tracepoint recursion misses (read from the kernel's program info).
fn loss_reasons() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = LOSS_COUNTERS.iter().map(|&(r, _)| r).collect();
    for e in ProbeError::ALL {
        if !out.contains(&e.reason()) {
            out.push(e.reason());
        }
    }
    out.push(RECURSION);
    out
}

/// The loss reason of runs the kernel skipped (a program already running on that CPU).
const RECURSION: &str = "tracepoint_recursion";

/// A running capture. Dropping it detaches every program and frees every map.
pub struct Capture {
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    errnos: PerCpuArray<MapData, u64>,
    errors: PerCpuArray<MapData, u64>,
    fold_map: BpfHashMap<MapData, FoldKey, FoldVal>,
    folds: fold::Folds,
    clock: Clock,
    hooks: Hooks,
    watch: watch::Watch,
    /// Loss already reported, per reason (in `loss_reasons()` order).
    reported_loss: Vec<(&'static str, u64)>,
    /// The syscall programs attached now (always in `Full`, while escalated in `Auto`).
    syscall_links: Vec<(&'static str, TracePointLinkId)>,
    /// The unix connect program, when this kernel has its attach type (`Auto`).
    unix_connect: Option<sock_addr::UnixConnect>,
    /// Connect attempts drained and not taken yet ([`Capture::take_attempts`]).
    attempts: Vec<Attempt>,
    /// Until when syscall exits without their entry are not loss (`Full`): a syscall that was
    /// in flight when its hooks were attached reaches the exit program alone.
    entry_grace_until: Option<Instant>,
}

/// `ConnectArgs` as the loader handles it (only to delete entries: no field is read).
type ConnectArgsBytes = [u8; size_of::<probe_common::ConnectArgs>()];

/// How long after attaching the syscall hooks an exit without its entry is a call that was
/// already in flight (a blocking connect to a full backlog can wait that long), not a loss.
const ENTRY_GRACE: Duration = Duration::from_secs(5);

/// What became of the cgroup attempt programs at start.
fn attach_attempts(ebpf: &mut Ebpf, hooks: Hooks) -> (Hooks, Option<sock_addr::UnixConnect>) {
    if hooks != Hooks::Auto {
        return (hooks, None);
    }
    let Some(root) = sock_addr::cgroup2_root() else {
        log::warn!(
            "no cgroup v2 (unified) hierarchy is mounted: connect attempts cannot be seen without syscall hooks, running as --hooks full (mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`)"
        );
        return (Hooks::Full, None);
    };
    if let Err(e) = sock_addr::attach_inet(ebpf, &root) {
        log::warn!(
            "attaching the cgroup connect programs to {} failed ({e}): running as --hooks full",
            root.display()
        );
        return (Hooks::Full, None);
    }
    match sock_addr::UnixConnect::attach(ebpf, EBPF_OBJECT, &root) {
        Ok(u) => (Hooks::Auto, Some(u)),
        Err(e) => {
            log::warn!(
                "the unix connect program could not be attached ({e}; it needs kernel 6.7+): unix upstream failures are found by checking the proxies' configured sockets instead"
            );
            (Hooks::Auto, None)
        }
    }
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
    if hooks != Hooks::Sock {
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
    o.task_tgid = kbtf.member_offset("task_struct", "tgid")?;
    netfilter_offsets(&tfs, &kbtf, &mut o);
    conn_end::offsets(&kbtf, &mut o);
    if hooks == Hooks::Auto {
        sock_addr::offsets(&kbtf, &mut o)?;
    }
    Ok(o)
}

/// The drop reason and `sk_buff` offsets of the netfilter-drop program. Optional: a kernel
/// without the `skb:kfree_skb` reason (or its BTF members) leaves `netfilter_drop` at
/// `u32::MAX`, and the program is not attached ([`Capture::start`]).
fn netfilter_offsets(tfs: &std::path::Path, kbtf: &btf::KernelBtf, o: &mut Offsets) {
    o.netfilter_drop = u32::MAX;
    let reason = tracefs::Format::read(tfs, "skb", "kfree_skb")
        .ok()
        .and_then(|f| f.symbol("NETFILTER_DROP"))
        .and_then(|v| u32::try_from(v).ok());
    let skb = |m: &str| kbtf.member_offset("sk_buff", m).ok();
    let (Some(reason), Some(head), Some(nh), Some(th), Some(sk), Some(dev), Some(ifindex)) = (
        reason,
        skb("head"),
        skb("network_header"),
        skb("transport_header"),
        skb("sk"),
        skb("dev"),
        kbtf.member_offset("net_device", "ifindex").ok(),
    ) else {
        log::info!(
            "skb:kfree_skb has no NETFILTER_DROP reason here: firewall rejects are not told apart"
        );
        return;
    };
    o.netfilter_drop = reason;
    o.skb_head = head;
    o.skb_network_header = nh;
    o.skb_transport_header = th;
    o.skb_sk = sk;
    o.skb_dev = dev;
    o.netdev_ifindex = ifindex;
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
        if offsets.netfilter_drop != u32::MAX
            && let Err(e) = attach_raw(&mut ebpf, PROG_KFREE_SKB, "kfree_skb")
        {
            log::warn!(
                "raw tracepoint kfree_skb unavailable ({e}): firewall rejects are not told apart"
            );
        }
        // Watched processes' children are watched from their fork on.
        attach_raw(&mut ebpf, PROG_SCHED_PROCESS_FORK, "sched_process_fork")
            .map_err(|e| CaptureError::Attach("sched:sched_process_fork".into(), e))?;
        let (hooks, unix_connect) = attach_attempts(&mut ebpf, hooks);
        for &(prog, category, name, syscall) in PROGRAMS {
            if (syscall && hooks == Hooks::Sock)
                || (prog == CLASSIC_SOCK_STATE && raw_sock_state.is_ok())
            {
                continue;
            }
            let p = tracepoint(&mut ebpf, prog, category, name)?;
            p.load().map_err(|e| attach_err(category, name, &e))?;
            // The syscall programs are attached by `attach_syscalls` (`Full`: now; `Auto`: on
            // escalation), which keeps their links.
            if !syscall {
                p.attach(category, name)
                    .map_err(|e| attach_err(category, name, &e))?;
            }
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
        let errors = PerCpuArray::try_from(take(&mut ebpf, MAP_ERRORS)?)
            .map_err(|e| CaptureError::Load(e.to_string()))?;
        let fold_map = BpfHashMap::try_from(take(&mut ebpf, MAP_FOLD)?)
            .map_err(|e| CaptureError::Load(e.to_string()))?;
        let watch = watch::Watch::take(&mut ebpf)?;
        let mut capture = Self {
            ebpf,
            ring,
            counters,
            errnos,
            errors,
            fold_map,
            folds: fold::Folds::default(),
            clock: Clock::now(),
            hooks,
            watch,
            reported_loss: loss_reasons().into_iter().map(|r| (r, 0)).collect(),
            syscall_links: Vec::new(),
            unix_connect,
            attempts: Vec::new(),
            entry_grace_until: None,
        };
        if hooks == Hooks::Full {
            capture.attach_syscalls()?;
        }
        Ok(capture)
    }

    /// Attaches the syscall programs (each entry before its exit: `PROGRAMS` lists them so).
    fn attach_syscalls(&mut self) -> Result<(), CaptureError> {
        for &(prog, category, name, syscall) in PROGRAMS {
            if !syscall || self.syscall_links.iter().any(|&(p, _)| p == prog) {
                continue;
            }
            let p = tracepoint(&mut self.ebpf, prog, category, name)?;
            let link = p
                .attach(category, name)
                .map_err(|e| attach_err(category, name, &e))?;
            self.syscall_links.push((prog, link));
        }
        self.entry_grace_until = Some(Instant::now() + ENTRY_GRACE);
        Ok(())
    }

    /// The kernel ids of the syscall programs (loaded in every mode but `Sock`, attached or
    /// not): tests check with bpftool which of them are linked.
    #[must_use]
    pub fn syscall_program_ids(&self) -> Vec<u32> {
        PROGRAMS
            .iter()
            .filter(|&&(.., syscall)| syscall)
            .filter_map(|&(prog, ..)| self.ebpf.program(prog)?.info().ok())
            .map(|i| i.id())
            .collect()
    }

    /// Whether the syscall hooks are attached now.
    #[must_use]
    pub fn escalated(&self) -> bool {
        !self.syscall_links.is_empty()
    }

    /// Whether the unix connect attempts are seen (`Auto` on kernel 6.7+).
    #[must_use]
    pub fn sees_unix_attempts(&self) -> bool {
        self.unix_connect.is_some()
    }

    /// `Auto`: attaches the syscall hooks, and says how long that took. `None` when they were
    /// attached already or the mode is not `Auto` (idempotent, cheap).
    pub fn escalate(&mut self) -> Result<Option<Duration>, CaptureError> {
        if self.hooks != Hooks::Auto || self.escalated() {
            return Ok(None);
        }
        let t = Instant::now();
        let attached = self.attach_syscalls();
        if attached.is_err() {
            self.detach_syscalls();
        }
        attached.map(|()| Some(t.elapsed()))
    }

    /// `Auto`: detaches the syscall hooks, and says how long that took. `None` when they were
    /// not attached or the mode is not `Auto` (idempotent, cheap).
    pub fn calm(&mut self) -> Option<Duration> {
        if self.hooks != Hooks::Auto || !self.escalated() {
            return None;
        }
        let t = Instant::now();
        self.detach_syscalls();
        Some(t.elapsed())
    }

    /// Detaches every syscall program attached, each entry before its exit (a call that
    /// entered still finds its exit), then clears the in-flight connect arguments: one left by
    /// a call whose exit was detached under it would look like a call the syscall hooks see
    /// (`sock_addr::syscall_hooked`) and mislead the state machine later.
    fn detach_syscalls(&mut self) {
        let links = std::mem::take(&mut self.syscall_links);
        for (prog, link) in links {
            let detached = self
                .ebpf
                .program_mut(prog)
                .and_then(|p| <&mut TracePoint>::try_from(p).ok())
                .map(|p| p.detach(link));
            if let Some(Err(e)) = detached {
                log::warn!("detaching {prog} failed: {e}");
            }
        }
        let Some(map) = self.ebpf.map_mut(probe_common::MAP_CONNECTS) else {
            return;
        };
        match BpfHashMap::<&mut MapData, u32, ConnectArgsBytes>::try_from(map) {
            Ok(mut m) => {
                let tids: Vec<u32> = m.keys().filter_map(Result::ok).collect();
                for tid in tids {
                    let _ = m.remove(&tid);
                }
            }
            Err(e) => log::warn!("clearing {}: {e}", probe_common::MAP_CONNECTS),
        }
    }

    /// Which hooks are attached.
    #[must_use]
    pub fn hooks(&self) -> Hooks {
        self.hooks
    }

    /// Watches processes that exec into one of `names` from their exec on (see [`watch`]).
    pub fn watch_names(&mut self, names: &[String]) {
        self.watch.names(names);
    }

    /// Watches the process `pid` and the children it forks from now on: only watched
    /// processes' TCP connects are seen by the socket state machine (see [`watch`]).
    pub fn watch(&mut self, pid: u32) {
        self.watch.watch(pid);
    }

    /// Whether `pid` is watched.
    #[must_use]
    pub fn is_watched(&self, pid: u32) -> bool {
        self.watch.is_watched(pid)
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
            if kernel_restart(&raw) {
                continue;
            }
            if raw.kind == KIND_CONNECT_ATTEMPT {
                self.attempts.push(attempt_of(&raw));
                continue;
            }
            let count = if raw.kind == KIND_CONNECT_FAILED {
                self.folds.count(&raw)
            } else {
                1
            };
            if count > 0 {
                deliver(&self.clock, &raw, count, &mut sink);
            }
        }
        self.watch.sweep(due_by_ns.min(monotonic_ns()));
        let fold_map = &self.fold_map;
        let residuals = self.folds.sweep(due_by_ns, |k| fold_map.get(k, 0).ok());
        for (raw, count) in residuals {
            deliver(&self.clock, &raw, count, &mut sink);
        }
        n
    }

    /// The connect attempts drained since the last call (`Auto`): they are the escalation
    /// policy's input, not events of the record.
    pub fn take_attempts(&mut self) -> Vec<Attempt> {
        std::mem::take(&mut self.attempts)
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
        let unix = self
            .unix_connect
            .as_ref()
            .map_or(0, |u| prog_recursion_misses(u.prog_fd()));
        self.ebpf
            .programs()
            .filter_map(|(_, p)| p.fd().ok())
            .map(|fd| prog_recursion_misses(fd.as_fd().as_raw_fd()))
            .sum::<u64>()
            + unix
    }

    /// `loss` events for every loss counter that grew since the last call (reads just those
    /// counters: a few syscalls, not one per counter and errno slot).
    pub fn loss_events(&mut self, now_mono_ns: u64) -> Vec<Event> {
        let mut current: Vec<(&str, u64)> = LOSS_COUNTERS
            .iter()
            .map(|&(r, idx)| (r, self.counter(idx)))
            .collect();
        current.extend(
            ProbeError::ALL
                .iter()
                .map(|&e| (e.reason(), sum_cpus(&self.errors, e as u32))),
        );
        current.push((RECURSION, self.recursion_misses()));
        // A syscall exit without its entry is a call that was in flight when the hooks were
        // attached, or one whose entry found the map full (counted as `map_full` then): not a
        // loss of its own. `Auto` attaches mid-call at every escalation (a blocking connect can
        // span it by minutes), so it never reports them; `Full` not in the first seconds.
        let in_grace = self.hooks == Hooks::Auto
            || self
                .entry_grace_until
                .is_some_and(|until| Instant::now() < until);
        let mut out = Vec::new();
        for (reason, prev) in &mut self.reported_loss {
            let now: u64 = current
                .iter()
                .filter(|(r, _)| r == reason)
                .map(|&(_, n)| n)
                .sum();
            if in_grace && *reason == ProbeError::EntryMissing.reason() {
                // Calls in flight when the syscall hooks were attached: not loss.
                *prev = now;
            }
            if now > *prev {
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

/// The kernel's internal restart codes (ERESTARTSYS 512, ERESTARTNOINTR 513, ERESTARTNOHAND
/// 514, ENOIOCTLCMD 515, `ERESTART_RESTARTBLOCK` 516): seen at syscall exit when a signal
/// interrupts a blocking accept or connect, they never reach the program (the call is
/// restarted, or it gets EINTR). Not failures: dropped before anything counts them.
const KERNEL_RESTART_CODES: std::ops::RangeInclusive<i32> = 512..=516;

/// Is this record a failed accept/connect that only the kernel's restart machinery saw?
fn kernel_restart(raw: &RawEvent) -> bool {
    (raw.kind == KIND_ACCEPT_FAILED || raw.kind == KIND_CONNECT_FAILED)
        && KERNEL_RESTART_CODES.contains(&raw.errno)
}

/// The attempt a `KIND_CONNECT_ATTEMPT` record reports.
fn attempt_of(raw: &RawEvent) -> Attempt {
    let len = usize::from(raw.data_len).min(raw.data.len());
    Attempt {
        mono_ns: raw.ktime_ns,
        pid: raw.pid,
        tid: raw.tid,
        uid: raw.uid,
        gid: raw.gid,
        cgroup_id: raw.cgroup_id,
        comm: crate::event::cstr(&raw.comm),
        target: format_target(raw.family, &raw.addr, raw.port, &raw.data[..len]),
        count: raw.aux[1].max(1),
    }
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

/// `bpf_prog_info.recursion_misses` of a program, via `BPF_OBJ_GET_INFO_BY_FD` (aya's
/// `ProgramInfo` does not expose it). The struct is aya-obj's binding of the kernel UAPI; the
/// kernel fills as much of it as it knows and says how much in `info_len`. 0 when the kernel
/// does not report it.
fn prog_recursion_misses(fd: i32) -> u64 {
    use aya_obj::generated::{bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, bpf_prog_info};
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // SAFETY: `bpf_prog_info` is a C struct of integers (and pointers carried as u64): all-zero
    // is a valid value, and the kernel expects unused fields zeroed.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd).unwrap_or(0),
        info_len: u32::try_from(size_of::<bpf_prog_info>()).unwrap_or(0),
        info: (&raw mut info) as u64,
    };
    // SAFETY: attr points to a valid bpf_attr prefix for this command, `info` outlives the call and
    // `info_len` bounds what the kernel writes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &raw mut attr,
            size_of::<InfoAttr>(),
        )
    };
    let wanted = std::mem::offset_of!(bpf_prog_info, recursion_misses) + size_of::<u64>();
    if rc != 0 || (attr.info_len as usize) < wanted {
        return 0;
    }
    info.recursion_misses
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object as _, ObjectSymbol as _};

    /// Every program and map the loader asks for is in the object it embeds, under the name it
    /// uses (no root needed: the object is parsed, not loaded), and the loader asks for every
    /// program the object has.
    #[test]
    fn object_has_every_name_the_loader_asks_for() {
        let obj = aya_obj::Object::parse(EBPF_OBJECT).expect("the embedded object parses");
        let mut wanted: Vec<&str> = PROGRAMS.iter().map(|&(p, ..)| p).collect();
        wanted.push(RAW_SOCK_STATE);
        wanted.push(PROG_KFREE_SKB);
        wanted.push(PROG_SCHED_PROCESS_FORK);
        wanted.push(probe_common::PROG_CONNECT4);
        wanted.push(probe_common::PROG_CONNECT6);
        wanted.push(probe_common::PROG_CONNECT_UNIX);
        for prog in &wanted {
            assert!(
                obj.programs.contains_key(*prog),
                "program {prog} missing from the object"
            );
        }
        let mut extra: Vec<&String> = obj
            .programs
            .keys()
            .filter(|p| !wanted.contains(&p.as_str()))
            .collect();
        extra.sort();
        assert!(
            extra.is_empty(),
            "programs the loader never attaches: {extra:?}"
        );
        // The maps `Capture::start` takes.
        for map in [
            MAP_EVENTS,
            MAP_COUNTERS,
            MAP_ERRNO,
            MAP_ERRORS,
            MAP_FOLD,
            probe_common::MAP_WATCHED,
            probe_common::MAP_PROXY_NAMES,
            probe_common::MAP_TCP_OWNER,
            probe_common::MAP_CONNECTS,
            probe_common::MAP_ATTEMPTS,
        ] {
            assert!(
                obj.maps.contains_key(map),
                "map {map} missing from the object"
            );
        }
        // The load-time global is a symbol of the object (EbpfLoader::override_global finds it
        // by name).
        let elf = object::File::parse(EBPF_OBJECT).expect("ELF");
        assert!(
            elf.symbols().any(|s| s.name() == Ok(GLOBAL_OFFSETS)),
            "global {GLOBAL_OFFSETS} missing from the object"
        );
    }

    /// An accept interrupted by a signal (nginx's workers get SIGIO/SIGCHLD, gunicorn's
    /// SIGWINCH) exits with ERESTARTSYS and is restarted: not an `accept_failed` event, and
    /// neither is a connect's; real errnos still are.
    #[test]
    fn kernel_restart_codes_are_not_failures() {
        // SAFETY: RawEvent is plain integers and byte arrays; all zeroes is a valid value.
        let mut r: RawEvent = unsafe { std::mem::zeroed() };
        for kind in [KIND_ACCEPT_FAILED, KIND_CONNECT_FAILED] {
            r.kind = kind;
            for errno in 512..=516 {
                r.errno = errno;
                assert!(kernel_restart(&r), "kind {kind} errno {errno}");
            }
            for errno in [2, 11, 24, 23, 111, 511, 517] {
                r.errno = errno;
                assert!(!kernel_restart(&r), "kind {kind} errno {errno}");
            }
        }
        r.kind = probe_common::KIND_PROCESS_EXIT;
        r.errno = 512;
        assert!(!kernel_restart(&r), "only accept and connect failures");
    }

    /// The error counters are as many as the errors, and each has a loss reason.
    #[test]
    fn every_probe_error_is_a_loss_reason() {
        let obj = aya_obj::Object::parse(EBPF_OBJECT).expect("the embedded object parses");
        let errors = &obj.maps[MAP_ERRORS];
        assert_eq!(errors.max_entries(), probe_common::NUM_PROBE_ERRORS);
        let reasons = loss_reasons();
        for (i, e) in ProbeError::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i, "ALL is in index order");
            assert!(reasons.contains(&e.reason()), "{e:?}");
        }
        let mut unique = reasons.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), reasons.len(), "{reasons:?}");
    }
}
