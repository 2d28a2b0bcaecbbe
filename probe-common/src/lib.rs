//! Wire format shared by the eBPF programs (`probe-ebpf`) and the loader (`probe-user`).
//!
//! Everything here is `#[repr(C)]` plain integers: the kernel writes the bytes, userspace reads them
//! back with the same layout. Enumerations travel as integers and are converted in userspace, so an
//! unknown value is never undefined behaviour.
#![no_std]

// Names the loader asks the object for. The eBPF side names each map and program after its
// static or function, so these are the same names spelled once more; the loader's unit test
// `object_has_every_name_the_loader_asks_for` fails when the two drift apart (kernel object
// names are limited to 15 characters).

/// Ring buffer carrying [`RawEvent`]s to userspace.
pub const MAP_EVENTS: &str = "GW_EVENTS";
/// Per-CPU counters, indexed by the `CNT_*` constants.
pub const MAP_COUNTERS: &str = "GW_COUNTERS";
/// Per-CPU counters per errno: `[0, ERRNO_SLOTS)` for connects, `[ERRNO_SLOTS, 2*ERRNO_SLOTS)` for
/// accepts. Slot 0 counts successes.
pub const MAP_ERRNO: &str = "GW_ERRNO";
/// Per-CPU counters of the [`ProbeError`]s program bodies returned, indexed by the error.
pub const MAP_ERRORS: &str = "GW_ERRORS";
/// Identical failed connects folded in the kernel: [`FoldKey`] -> [`FoldVal`].
pub const MAP_FOLD: &str = "GW_FOLD";
/// Load-time global holding the tracepoint field offsets ([`Offsets`]).
pub const GLOBAL_OFFSETS: &str = "GW_OFFSETS";

/// Programs the loader attaches (function names in the object).
pub const PROG_SYS_ENTER_CONNECT: &str = "sys_enter_connect";
pub const PROG_SYS_EXIT_CONNECT: &str = "sys_exit_connect";
pub const PROG_SYS_EXIT_ACCEPT: &str = "sys_exit_accept";
pub const PROG_SYS_EXIT_ACCEPT4: &str = "sys_exit_accept4";
pub const PROG_SYS_ENTER_EXECVE: &str = "sys_enter_execve";
pub const PROG_SYS_EXIT_EXECVE: &str = "sys_exit_execve";
pub const PROG_SYS_ENTER_EXECVEAT: &str = "sys_enter_execveat";
pub const PROG_SYS_EXIT_EXECVEAT: &str = "sys_exit_execveat";
/// `sock:inet_sock_set_state`, classic tracepoint (fallback of [`PROG_SOCK_STATE_RAW`]).
pub const PROG_SOCK_STATE: &str = "inet_sock_set_state";
/// `inet_sock_set_state`, raw tracepoint (preferred: no record built per state change).
pub const PROG_SOCK_STATE_RAW: &str = "inet_sock_set_state_raw";
pub const PROG_SCHED_PROCESS_EXIT: &str = "sched_process_exit";
pub const PROG_SCHED_PROCESS_EXEC: &str = "sched_process_exec";
pub const PROG_SIGNAL_GENERATE: &str = "signal_generate";
pub const PROG_MARK_VICTIM: &str = "mark_victim";
/// `skb:kfree_skb`, raw tracepoint: packets a netfilter rule dropped or rejected.
pub const PROG_KFREE_SKB: &str = "kfree_skb";
/// cgroup v2 `sock_addr` programs on the unified root: connect attempts, per connect, with no
/// syscall tracepoint (`--hooks auto`).
pub const PROG_CONNECT4: &str = "gw_connect4";
pub const PROG_CONNECT6: &str = "gw_connect6";
/// The unix connect one (attach type `BPF_CGROUP_UNIX_CONNECT`, which aya does not name: the
/// loader loads and links it itself).
pub const PROG_CONNECT_UNIX: &str = "gw_connect_unix";
/// Connect attempts rate-limited in the kernel: [`FoldKey`] (errno 0, [`SOURCE_ATTEMPT`]) ->
/// [`AttemptVal`].
pub const MAP_ATTEMPTS: &str = "GW_ATTEMPTS";
/// `sched:sched_process_fork`, raw tracepoint: a watched process's children are watched.
pub const PROG_SCHED_PROCESS_FORK: &str = "sched_process_fork";
/// The watched processes (tgid -> 1): proxies, by name at exec in the kernel
/// ([`MAP_PROXY_NAMES`]), by the loader from its process table, and their children (inherited at
/// fork). The socket state machine ignores the connects of every other process at once.
pub const MAP_WATCHED: &str = "GW_WATCHED";
/// Proxy process names (comm, NUL-padded to 16 bytes -> 1): a process whose exec gives it one
/// of these names is watched from its exec on.
pub const MAP_PROXY_NAMES: &str = "GW_PROXY_NAMES";
/// Who started each TCP connect still in `SYN_SENT` (socket address -> [`Owner`]); the loader
/// sweeps entries a missed run left behind.
pub const MAP_TCP_OWNER: &str = "GW_TCP_OWNER";
/// In-flight `connect()` arguments ([`ConnectArgs`] by thread id), saved by the syscall entry
/// program: cleared when `--hooks auto` detaches the syscall hooks (no stale entry is left).
pub const MAP_CONNECTS: &str = "GW_CONNECTS";

/// Why a program body gave up before its end (the `Err` of its fallible body). aya's
/// tracepoint macros discard a program's return value, so the entry point counts each error
/// in [`MAP_ERRORS`] at index `error as u32`, and the loader reports every one as a `loss`
/// reason ([`ProbeError::reason`]): no failure path vanishes.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// A tracepoint record field could not be read.
    ContextRead = 0,
    /// A kernel-memory read (a `struct sock` field) failed.
    KernelRead = 1,
    /// A user-memory read of a connect address failed.
    UserRead = 2,
    /// An in-flight state map had no room.
    MapFull = 3,
    /// The per-CPU scratch slot could not be looked up.
    ScratchMissing = 4,
    /// A syscall exit found no arguments saved by its entry (evicted, or attached mid-call).
    EntryMissing = 5,
}

impl ProbeError {
    /// Every error, in index order.
    pub const ALL: [Self; 6] = [
        Self::ContextRead,
        Self::KernelRead,
        Self::UserRead,
        Self::MapFull,
        Self::ScratchMissing,
        Self::EntryMissing,
    ];

    /// Its `loss` reason. A user read or a full map that ends a program is the same loss as
    /// one counted on the way (`CNT_LOST_READ`, `CNT_LOST_MAP_FULL`), under the same name.
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self {
            Self::ContextRead => "context_read_failed",
            Self::KernelRead => "kernel_read_failed",
            Self::UserRead => "user_read_failed",
            Self::MapFull => "map_full",
            Self::ScratchMissing => "scratch_missing",
            Self::EntryMissing => "syscall_entry_missing",
        }
    }
}

/// Number of [`ProbeError`]s (slots of [`MAP_ERRORS`]).
#[expect(clippy::cast_possible_truncation, reason = "a handful of variants")]
pub const NUM_PROBE_ERRORS: u32 = ProbeError::ALL.len() as u32;

/// `ConnectArgs::tcp_seen`, written by the sock-state program and read by the connect one:
/// the socket of this `connect()` call entered `SYN_SENT` (a failure from there on is the state
/// machine's to report).
pub const TCP_SEEN_SYN_SENT: u32 = 1;
/// `ConnectArgs::tcp_seen`: the socket closed again inside the call without a socket error
/// (no free local port, no route for the chosen port): only the syscall knows the errno.
pub const TCP_SEEN_CLOSED_IN_CALL: u32 = 2;

/// Errno values both the connect and the sock-state programs test.
pub const ECONNREFUSED: u32 = 111;
pub const ETIMEDOUT: u32 = 110;

/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const RING_BYTES: u32 = 4 << 20;
/// Bound of the in-flight connect map (threads inside `connect()` at once while the syscall
/// hooks are attached). The bounds keep locked map memory under 8 MiB with the 4 MiB ring
/// (fdinfo `memlock` of every map, kernel 6.18: 7.8 MiB in all); a connect that finds the map
/// full is counted as loss.
pub const CONNECTS_MAX: u32 = 4096;
/// Bound of the in-flight exec map (threads between `execve()`'s entry and its exit).
pub const EXECS_MAX: u32 = 1024;
/// Bound of the failed-exec map (a thread whose `execve()` failed, until it exits).
pub const EXEC_FAIL_MAX: u32 = 1024;
/// Bound of the TCP owner map.
pub const TCP_OWNER_MAX: u32 = 8192;
/// Bound of the tracked-connection map (TCP connections processes opened, from ESTABLISHED to
/// their end; a connection that finds it full is not tracked, counted as `map_full`).
pub const CONNS_MAX: u32 = 4096;
/// Bound of the netfilter-drop fold map (distinct (process, target) keys kept).
pub const NF_FOLD_MAX: u32 = 1024;
/// Bound of the fold map (distinct failing (process, target, errno, source) keys kept).
pub const FOLD_MAX: u32 = 2048;
/// Bound of the watched-process map (proxies and their children; a full map leaves a new one
/// unwatched, counted as `map_full`).
pub const WATCHED_MAX: u32 = 4096;
/// Bound of the proxy-name map.
pub const PROXY_NAMES_MAX: u32 = 64;
/// A failing key is reported at most once per window; the failures in between are only counted,
/// and the count travels with the key's next event (or the loader reads it from [`MAP_FOLD`]
/// once the window has passed). Bounds how late a folded failure is delivered.
pub const FOLD_WINDOW_NS: u64 = 20_000_000;
/// Bound of the connect-attempt map (distinct (process, target) keys kept).
pub const ATTEMPTS_MAX: u32 = 2048;
/// A (process, target) key's connect attempts are reported at most once per window: the first
/// at once, the rest counted and carried by the key's next report.
pub const ATTEMPT_WINDOW_NS: u64 = 1_000_000_000;
/// Longest unix socket path (`sun_path`).
pub const UNIX_PATH_MAX: usize = 108;
/// Number of errno slots per counter family.
pub const ERRNO_SLOTS: u32 = 160;

/// Event kinds (`RawEvent::kind`).
pub const KIND_CONNECT_FAILED: u32 = 1;
pub const KIND_ACCEPT_FAILED: u32 = 2;
pub const KIND_PROCESS_EXIT: u32 = 3;
pub const KIND_SIGNAL: u32 = 4;
pub const KIND_OOM_KILL: u32 = 5;
pub const KIND_EXEC: u32 = 6;
/// An `execve`/`execveat` that failed (a supervisor could not start the app).
pub const KIND_EXEC_FAILED: u32 = 7;
/// A TCP SYN of a local connect freed by netfilter (`skb:kfree_skb` reason `NETFILTER_DROP`):
/// a `reject` or `drop` rule, seen in the connecting task's context.
pub const KIND_NETFILTER_DROP: u32 = 8;
/// A TCP connection a watched process opened ended before any byte of the answer to its last
/// request: the peer's FIN or RST arrived after the process's last write and no data since.
/// Sent when the peer's FIN/RST arrives (the header is the connection's owner, the process
/// that will read the end); [`ConnEnd`] in `data`; the target in `family`/`port`/`addr`; the
/// task that closed the other end (when the close ran in its context) in
/// `target_pid`/`target_comm`; `errno` what the owner's read returns: 0 for EOF (a FIN came),
/// else the socket's error (ECONNRESET).
pub const KIND_CONN_END: u32 = 9;
/// A connect attempt seen by a cgroup `sock_addr` program (before the kernel tried it): the
/// target in `family`/`port`/`addr`/`data`, the attempts it stands for in `aux[1]` (reported at
/// most once per (process, target) per [`ATTEMPT_WINDOW_NS`]).
pub const KIND_CONNECT_ATTEMPT: u32 = 10;

/// Where a connect failure was seen (`RawEvent::source`).
pub const SOURCE_SYSCALL: u8 = 0;
/// Seen on the TCP state machine (`SYN_SENT -> CLOSE` plus the socket error): asynchronous connects.
pub const SOURCE_TCP_STATE: u8 = 1;
/// A TCP connect the process closed itself while still in `SYN_SENT` (its own connect timeout).
pub const SOURCE_TCP_ABANDONED: u8 = 2;
/// Not a failure seen by the kernel: the key of a connect attempt ([`KIND_CONNECT_ATTEMPT`]).
pub const SOURCE_ATTEMPT: u8 = 3;

/// Counter indexes in [`MAP_COUNTERS`].
pub const CNT_CONNECT_OK: u32 = 0;
pub const CNT_CONNECT_INPROGRESS: u32 = 1;
pub const CNT_CONNECT_FAILED: u32 = 2;
pub const CNT_ACCEPT_OK: u32 = 3;
pub const CNT_ACCEPT_FAILED: u32 = 4;
pub const CNT_TCP_ESTABLISHED: u32 = 5;
pub const CNT_TCP_FAILED: u32 = 6;
pub const CNT_EXITS: u32 = 7;
pub const CNT_SIGNALS: u32 = 8;
pub const CNT_OOM: u32 = 9;
pub const CNT_EXECS: u32 = 10;
/// Loss: the ring buffer had no room for an event.
pub const CNT_LOST_RINGBUF: u32 = 11;
/// Loss: an in-flight state map was full (connect arguments or TCP owner not stored).
pub const CNT_LOST_MAP_FULL: u32 = 12;
/// Loss: a TCP connect closed with no owner known (state evicted or attached mid-connect).
pub const CNT_LOST_TCP_OWNER: u32 = 13;
/// Loss: a user-memory read of a connect address failed.
pub const CNT_LOST_READ: u32 = 14;
/// A `SYN_SENT -> CLOSE` without a socket error: the connecting process gave up (its own timeout).
pub const CNT_TCP_ABANDONED: u32 = 15;
pub const CNT_EXEC_FAILED: u32 = 16;
/// SYNs of local connects that netfilter dropped (before folding).
pub const CNT_NETFILTER_DROP: u32 = 17;
/// TCP connections entered into the tracked-connection map (at ESTABLISHED).
pub const CNT_CONN_TRACKED: u32 = 18;
/// Tracked connections that ended without an answer (before emitting).
pub const CNT_CONN_BROKEN: u32 = 19;
/// Connect attempts the cgroup `sock_addr` programs saw (TCP and unix stream, before folding).
pub const CNT_CONNECT_ATTEMPTS: u32 = 20;
/// Number of counters.
pub const NUM_COUNTERS: u32 = 21;

/// Tracepoint field offsets, read from tracefs `format` files at load time (no CO-RE in Rust eBPF).
///
/// `u32::MAX` marks a field this kernel does not have.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// Thread-group id of gwtrace itself: its own events are not reported.
    pub self_tgid: u32,
    pub enter_connect_fd: u32,
    pub enter_connect_addr: u32,
    pub enter_connect_addrlen: u32,
    pub exit_connect_ret: u32,
    pub exit_accept_ret: u32,
    pub exit_accept4_ret: u32,
    pub enter_execve_filename: u32,
    pub exit_execve_ret: u32,
    pub enter_execveat_filename: u32,
    pub exit_execveat_ret: u32,
    pub ss_skaddr: u32,
    pub ss_oldstate: u32,
    pub ss_newstate: u32,
    pub ss_sport: u32,
    pub ss_dport: u32,
    pub ss_family: u32,
    pub ss_protocol: u32,
    pub ss_daddr: u32,
    pub ss_daddr_v6: u32,
    /// Offset of `sk_err` in `struct sock` (from the kernel's BTF).
    pub sock_sk_err: u32,
    pub exit_pid: u32,
    pub exit_group_dead: u32,
    pub exec_filename: u32,
    pub sig_sig: u32,
    pub sig_code: u32,
    pub sig_comm: u32,
    pub sig_pid: u32,
    pub sig_group: u32,
    pub sig_result: u32,
    pub oom_pid: u32,
    pub oom_comm: u32,
    pub oom_total_vm: u32,
    pub oom_anon_rss: u32,
    pub oom_file_rss: u32,
    pub oom_shmem_rss: u32,
    pub oom_uid: u32,
    /// Offset of `exit_code` in `struct task_struct` (from the kernel's BTF).
    pub task_exit_code: u32,
    /// Offsets in `struct sock` (through `__sk_common`) read by the raw tracepoint program,
    /// which gets the socket pointer instead of the classic tracepoint's record.
    pub sk_protocol: u32,
    pub sk_family: u32,
    /// `inet_sock.inet_sport` (the classic record's `sport`; `inet_sock` begins with the sock).
    pub sk_sport: u32,
    pub sk_dport: u32,
    pub sk_daddr: u32,
    pub sk_v6_daddr: u32,
    /// 1 when tracefs puts the connect/accept syscall fields where [`SYSCALL_ARG0`] and
    /// [`SYSCALL_RET`] say: the programs then load them directly instead of through a helper.
    pub syscall_layout_fixed: u32,
    /// Value of `SKB_DROP_REASON_NETFILTER_DROP` on this kernel (from the `skb:kfree_skb`
    /// format's symbol table); `u32::MAX`: unknown, the `kfree_skb` program reports nothing.
    pub netfilter_drop: u32,
    /// Offsets in `struct sk_buff` (BTF) read for a netfilter drop only.
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    pub skb_sk: u32,
    pub skb_dev: u32,
    /// `net_device.ifindex` (BTF): the loopback device is always ifindex 1.
    pub netdev_ifindex: u32,
    /// `task_struct.flags` (BTF): `PF_EXITING` tells a close done by a dying task's exit.
    pub task_flags: u32,
    /// `tcp_sock.bytes_received` and `tcp_sock.bytes_acked` (BTF): what the connection carried.
    pub tcp_bytes_received: u32,
    pub tcp_bytes_acked: u32,
    /// 1 when the connection-end programs are attached: the sock-state program then tracks
    /// established connections (no use filling the map otherwise).
    pub track_conns: u32,
    /// `bpf_sock_addr_kern.uaddr` and `.uaddrlen` (BTF): the unix connect program's context is
    /// that struct at run time, the only way to the `sun_path` it is given.
    pub sa_kern_uaddr: u32,
    pub sa_kern_uaddrlen: u32,
    /// `task_struct.tgid` (BTF): the fork program tells a new process from a new thread.
    pub task_tgid: u32,
    /// `tcp_sock.lsndtime` (jiffies of the last data sent), `inet_connection_sock.icsk_ack.
    /// lrcvtime` (jiffies of the last data received), `tcp_sock.data_segs_out` and
    /// `tcp_sock.write_seq` (BTF): what the connection-end logic reads at the state changes,
    /// instead of hooking every send and receive of the host.
    pub tcp_lsndtime: u32,
    pub icsk_lrcvtime: u32,
    pub tcp_data_segs_out: u32,
    pub tcp_write_seq: u32,
    /// Nanoseconds per jiffy (`1e9 / CONFIG_HZ`), found by the loader.
    pub jiffy_ns: u32,
}

/// Where every kernel since 4.x puts a syscall tracepoint's first argument (`sys_enter_*`; the
/// next ones follow every 8 bytes): after the 8-byte common header and the syscall number.
pub const SYSCALL_ARG0: u32 = 16;
/// Where it puts the return value (`sys_exit_*`).
pub const SYSCALL_RET: u32 = 16;

#[cfg(feature = "user")]
// SAFETY: `Offsets` is `repr(C)`, made only of `u32`s, so it has no padding and every bit pattern is valid.
unsafe impl aya::Pod for Offsets {}

/// Arguments of an in-flight `connect()`, saved at syscall entry (value of the `GW_CONNECTS`
/// hash, keyed by thread id). A plain hash, not an LRU: an LRU update or delete takes a shared
/// lock and cost ~3x as much per connect; an entry left by a thread killed inside `connect()`
/// is overwritten when its tid is reused.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectArgs {
    pub uaddr: u64,
    pub addrlen: u32,
    pub fd: u32,
    /// What the TCP state machine saw of this call's socket: 0 nothing (`connect()` failed before
    /// the handshake started), [`TCP_SEEN_SYN_SENT`] or [`TCP_SEEN_CLOSED_IN_CALL`]. Written in
    /// place by the sock-state program (no second map).
    pub tcp_seen: u32,
    pub pad: u32,
}

/// A failed exec remembered until the thread execs successfully (forgotten) or exits (reported):
/// a shell's PATH search fails several execs before one succeeds, and only a process that gives
/// up (a supervisor's 203/EXEC) matters.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecFail {
    pub errno: i32,
    pub len: u32,
    pub path: [u8; DATA_LEN],
}

const _: () = assert!(core::mem::size_of::<ExecFail>() == 136);

/// Who started a TCP connect (value of the `GW_TCP_OWNER` hash, keyed by the kernel socket
/// address), captured in process context.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Owner {
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: [u8; 16],
}

/// `ConnTrack::flags` / `ConnEnd::flags`: the peer's FIN arrived (`ESTABLISHED -> CLOSE_WAIT`).
pub const CONN_PEER_FIN: u32 = 1;
/// The peer's RST arrived (the socket closed with `sk_err` ECONNRESET or EPIPE).
pub const CONN_PEER_RST: u32 = 2;
/// The FIN or RST was processed in a task other than the connection's owner (on loopback: the
/// task that closed the other end); `peer_*` name it.
pub const CONN_PEER_TASK: u32 = 4;
/// That task had `PF_EXITING` set: the close was its exit closing its files.
pub const CONN_PEER_EXITING: u32 = 8;
/// The owner wrote on the connection after the peer's FIN had arrived (`tcp_sock.write_seq`
/// grew between the FIN and the peer's RST).
pub const CONN_WROTE_AFTER_CLOSE: u32 = 16;
/// Internal to the kernel's map: the end was reported already (never on the wire).
pub const CONN_REPORTED: u32 = 32;
/// The owner closed the connection first (its FIN or RST went out before any from the peer).
pub const CONN_OWNER_CLOSED: u32 = 64;
/// `PF_EXITING` in `task_struct.flags`.
pub const PF_EXITING: u32 = 4;

/// A TCP connection a watched process opened, tracked from `ESTABLISHED` (value of
/// `GW_CONNS`, keyed by the kernel socket address): who opened it and where; its traffic is
/// read from `tcp_sock` at the peer's FIN/RST. Healthy connections are forgotten at their end
/// without leaving the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnTrack {
    pub owner: Owner,
    pub end: ConnEnd,
    pub family: u16,
    pub port: u16,
    /// `tcp_sock.write_seq` when the peer's FIN arrived (a later write grows it).
    pub fin_write_seq: u32,
    pub addr: [u8; 16],
    /// The comm of the task the peer's FIN/RST was processed in.
    pub peer_comm: [u8; 16],
}

/// What a connection's end event carries (in [`RawEvent::data`]); times are `bpf_ktime_get_ns`.
/// The send and receive times come from `tcp_sock`'s jiffies stamps (`lsndtime`, `lrcvtime`):
/// exact to one jiffy (`1e9 / CONFIG_HZ` ns), the start of that jiffy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnEnd {
    /// When the connection was established.
    pub established_ns: u64,
    /// The owner's last data sent (its last request), and the last data received before it
    /// (the previous answer; 0: none): the difference is how long the connection sat idle.
    pub last_send_ns: u64,
    pub prev_recv_ns: u64,
    /// The last data received (equal to `prev_recv_ns` in an end event; 0: none).
    pub last_recv_ns: u64,
    /// When the peer's FIN or RST arrived (0: not seen).
    pub close_ns: u64,
    /// `tcp_sock.bytes_received` / `bytes_acked` at the end (`u64::MAX`: unread).
    pub bytes_received: u64,
    pub bytes_acked: u64,
    /// 1: the unanswered request was the connection's first (no byte ever came back); 2: a
    /// later one (answers came before it: a reused kept-alive connection). The kernel sees no
    /// per-request event, so the count itself is not known.
    pub requests: u32,
    /// `CONN_*` flags.
    pub flags: u32,
    /// The task the peer's FIN/RST was processed in (`CONN_PEER_TASK`).
    pub peer_pid: u32,
    pub peer_tid: u32,
}

/// What makes two failed connects the same (key of [`MAP_FOLD`]): the process, the errno, where it
/// was seen and the full target. The kernel fills it, then copies it into the event; the loader
/// rebuilds it from the event with [`FoldKey::of_event`] to read the count folded since.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FoldKey {
    pub tgid: u32,
    pub errno: i32,
    pub family: u16,
    pub port: u16,
    pub source: u8,
    /// Bytes of `path` in use (unix targets).
    pub path_len: u8,
    pub pad: u16,
    pub addr: [u8; 16],
    pub path: [u8; UNIX_PATH_MAX],
}

impl FoldKey {
    /// The key of a failed-connect event (the kernel built the event from the key).
    #[must_use]
    pub fn of_event(ev: &RawEvent) -> Self {
        let mut path = [0u8; UNIX_PATH_MAX];
        let len = (ev.data_len as usize).min(UNIX_PATH_MAX);
        path[..len].copy_from_slice(&ev.data[..len]);
        Self {
            tgid: ev.pid,
            errno: ev.errno,
            family: ev.family,
            port: ev.port,
            source: ev.source,
            #[expect(
                clippy::cast_possible_truncation,
                reason = "len <= UNIX_PATH_MAX (108)"
            )]
            path_len: len as u8,
            pad: 0,
            addr: ev.addr,
            path,
        }
    }
}

/// Failures of one [`FoldKey`] (value of [`MAP_FOLD`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FoldVal {
    /// Failures since the key was created (atomically incremented: several CPUs).
    pub total: u64,
    /// When the key's last event was emitted.
    pub emitted_ns: u64,
    /// When its last failure happened.
    pub last_ns: u64,
}

/// Connect attempts of one (process, target) key (value of [`MAP_ATTEMPTS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttemptVal {
    /// Attempts since the key was last reported (the reported one included at report time).
    pub pending: u64,
    /// When the key was last reported.
    pub emitted_ns: u64,
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)` integers and byte arrays, no padding (size asserted below); any bits are valid.
unsafe impl aya::Pod for FoldKey {}
#[cfg(feature = "user")]
// SAFETY: `repr(C)` u64s only.
unsafe impl aya::Pod for FoldVal {}
#[cfg(feature = "user")]
// SAFETY: `repr(C)` integers and a byte array, no padding (size asserted below); any bits are valid.
unsafe impl aya::Pod for Owner {}

/// Address family values carried in [`RawEvent::family`].
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Size of [`RawEvent::data`] (a unix socket path is at most 108 bytes).
pub const DATA_LEN: usize = 128;

/// One event from the kernel. `kind` says which fields are meaningful.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawEvent {
    pub kind: u32,
    /// Positive errno of a failed connect/accept.
    pub errno: i32,
    /// `bpf_ktime_get_ns()` (monotonic, boot-relative).
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    /// Thread-group id (what userspace calls the pid).
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: [u8; 16],
    /// Target socket address family (`AF_*`).
    pub family: u16,
    /// Target port, host byte order.
    pub port: u16,
    /// Length of the unix path (or exec filename) in `data`; an abstract unix name starts with a 0 byte.
    pub data_len: u16,
    /// `SOURCE_*`.
    pub source: u8,
    pub pad0: u8,
    /// Target IPv4 (first 4 bytes) or IPv6 address.
    pub addr: [u8; 16],
    /// Raw `task_struct.exit_code`: `status << 8 | core_dumped << 7 | signal`.
    pub exit_code: i32,
    /// Signal number (signal events).
    pub sig: i32,
    /// Signal target or OOM victim.
    pub target_pid: u32,
    pub pad1: u32,
    /// Kind-specific extras. Signal: `code`, `group`, `result`. OOM: `total_vm`, `anon_rss`,
    /// `file_rss`, `shmem_rss` (kB). Connect: the socket fd in `aux[0]` (syscall source), the
    /// key's cumulative failure count ([`FoldVal::total`]) in `aux[1]`. Netfilter drop: the drop
    /// reason in `aux[0]`, the SYN's source port in `aux[1]`, drops folded into this one in
    /// `aux[2]`.
    pub aux: [u64; 4],
    /// Signal target's or OOM victim's comm.
    pub target_comm: [u8; 16],
    /// Unix socket path or exec filename (for a failed exec: the path as the caller gave it).
    pub data: [u8; DATA_LEN],
}

const _: () = assert!(core::mem::size_of::<RawEvent>() == 272);
const _: () = assert!(core::mem::size_of::<FoldKey>() == 140);
const _: () = assert!(core::mem::size_of::<FoldVal>() == 24);
const _: () = assert!(core::mem::size_of::<Owner>() == 48);
const _: () = assert!(core::mem::size_of::<ConnectArgs>() == 24);
const _: () = assert!(core::mem::size_of::<ConnEnd>() == 72);
const _: () = assert!(core::mem::size_of::<ConnEnd>() <= DATA_LEN);
const _: () = assert!(core::mem::size_of::<ConnTrack>() == 160);
const _: () = assert!(core::mem::size_of::<AttemptVal>() == 16);
