//! Events as userspace sees them: decoded once from the kernel's [`RawEvent`] bytes into typed
//! values, serialised as the `gwtrace record` JSON lines (schema in docs/events.md).
use nix::{errno::Errno, sys::signal::Signal};
use probe_common::{
    AF_INET, AF_INET6, AF_UNIX, CONN_PEER_EXITING, CONN_PEER_FIN, CONN_PEER_RST, CONN_PEER_TASK,
    CONN_WROTE_AFTER_CLOSE, ConnEnd, KIND_ACCEPT_FAILED, KIND_CONN_END, KIND_CONNECT_FAILED,
    KIND_EXEC, KIND_EXEC_FAILED, KIND_NETFILTER_DROP, KIND_OOM_KILL, KIND_PROCESS_EXIT,
    KIND_SIGNAL, RawEvent, SOURCE_SYSCALL, SOURCE_TCP_ABANDONED, SOURCE_TCP_STATE,
};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use crate::facts::FactsUpdate;
use crate::origin::Origin;

fn one() -> u64 {
    1
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if signature"
)]
fn is_one(n: &u64) -> bool {
    *n == 1
}

/// Version of the JSON lines schema. Readers reject lines with a greater version.
pub const SCHEMA_VERSION: u32 = 1;

/// One line of a record file: an event with its common header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub v: u32,
    /// Wall clock, RFC 3339.
    pub ts: String,
    /// Monotonic clock (`CLOCK_MONOTONIC`, boot-relative) in ns; the engine's time axis.
    pub mono_ns: u64,
    /// Process (thread-group) id of the task that did it: the connecting process, the exiting
    /// process, the signal's sender, the task that triggered the OOM killer.
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub tid: u32,
    #[serde(default)]
    pub comm: String,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub cgroup_id: u64,
    /// The task's cgroup path and the systemd unit, container and pod it names (live capture
    /// fills it in; absent on `facts` and `loss` lines and when the process was never seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Arc<Origin>>,
    /// The task's network namespace (the inode of `/proc/PID/ns/net`) when it is not the
    /// host's: a proxy in a container or under `ip netns exec` connects to its own loopback.
    /// Live capture fills it in on connect, accept and netfilter-drop events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_ns: Option<u64>,
    #[serde(flatten)]
    pub body: Body,
}

/// Kind-specific part of an [`Event`]; `kind` in JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// A connect that failed, synchronously or (TCP) asynchronously.
    ConnectFailed {
        /// `127.0.0.1:8000`, `[::1]:8000`, `unix:/run/app.sock`, `unix:@abstract`.
        target: String,
        errno: i32,
        errno_name: String,
        /// `syscall` (`connect()` returned it), `tcp_state` (the handshake failed later, the errno
        /// is the socket error nginx reads with `SO_ERROR`), `tcp_abandoned` (the process closed the
        /// socket before the handshake completed: its own connect timeout).
        source: String,
        /// How many identical failures (same process, target, errno, source) this line stands
        /// for: the kernel reports a key at most once per 20 ms window and counts the rest.
        /// Absent = 1.
        #[serde(default = "one", skip_serializing_if = "is_one")]
        count: u64,
    },
    /// An accept that failed with something other than "no connection yet".
    AcceptFailed { errno: i32, errno_name: String },
    /// A process ended (its last thread exited).
    ProcessExit {
        /// Exit status when it exited normally.
        exit_code: Option<i32>,
        /// Terminating signal, when killed.
        signal: Option<i32>,
        signal_name: Option<String>,
        core_dumped: bool,
    },
    /// A signal was generated for a process.
    Signal {
        signal: i32,
        signal_name: String,
        /// The sender (same as `pid`; 0-like kernel senders show the faulting task).
        sender_pid: u32,
        target_pid: u32,
        target_comm: String,
        /// `si_code`: 0 = `SI_USER` (`kill()`), 128 = `SI_KERNEL`, > 0 = fault codes.
        code: i32,
        /// 0 delivered, 1 ignored, 2 already pending, 3 overflow, 4 lose info.
        result: i32,
    },
    /// The OOM killer chose a victim.
    OomKill {
        victim_pid: u32,
        victim_comm: String,
        total_vm_kb: u64,
        anon_rss_kb: u64,
        file_rss_kb: u64,
        shmem_rss_kb: u64,
    },
    /// A process executed a new program.
    Exec {
        filename: String,
        /// From /proc at the time gwtrace saw the exec, when it was still there.
        #[serde(default)]
        cmdline: Option<String>,
    },
    /// An exec that failed (a supervisor could not start the app: wrong virtualenv, bad path).
    ExecFailed {
        filename: String,
        errno: i32,
        errno_name: String,
    },
    /// A netfilter rule dropped the SYN of a connect this task made (`skb:kfree_skb` with reason
    /// `NETFILTER_DROP` in its context): a `reject` rule (the connect is refused although a
    /// process may listen) or a `drop` rule (the connect times out).
    NetfilterDrop {
        /// Where the SYN went, same format as connect targets (`127.0.0.1:8000`).
        target: String,
        /// The SYN's source (`127.0.0.1:40312`).
        source_addr: String,
        /// The kernel's drop reason (`NETFILTER_DROP`).
        reason: String,
        /// Identical drops (same process and target) this line stands for. Absent = 1.
        #[serde(default = "one", skip_serializing_if = "is_one")]
        count: u64,
    },
    /// A TCP connection this process opened ended before any byte of the answer to its last
    /// request: it read EOF or got a reset after writing (`pid` is the process, the proxy's
    /// worker). Only connections the peer ended first are reported; healthy ones never leave
    /// the kernel.
    ConnEnd(ConnEndInfo),
    /// Events the kernel or gwtrace could not deliver, since the previous loss line.
    Loss { reason: String, count: u64 },
    /// `--hooks auto` attached the syscall hooks (`escalated`) or detached them again
    /// (`calm`): before an escalation, unix connect errors are inferred from attempts plus a
    /// check (`connect_failed` source `attempt`); while escalated the kernel reports each.
    Hooks {
        /// `escalated` or `calm`.
        state: String,
        /// What triggered the escalation (the first anomaly), or the quiet period that ended it.
        reason: String,
        /// How long attaching (or detaching) the syscall programs took, in microseconds.
        latency_us: u64,
    },
    /// Facts read from /proc (listeners, processes, paths) that the engine used: replay
    /// is deterministic because they travel with the events.
    Facts(FactsUpdate),
}

/// The body of a `conn_end` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnEndInfo {
    /// Where the connection went (`127.0.0.1:8000`).
    pub target: String,
    /// What the process's read of the end returns: `eof` (0) or `reset` (ECONNRESET, EPIPE).
    pub outcome: String,
    /// That read's errno (0 for EOF).
    pub errno: i32,
    /// How the peer ended it: `fin`, `rst` (a close with unread data, or an abort), or
    /// `fin_then_rst` (the process wrote after the FIN and the closed peer answered RST).
    pub peer_close: String,
    /// The task the peer's FIN/RST was processed in (on loopback: the one that closed the
    /// other end; for a remote peer, whatever ran the softirq).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_tid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_comm: Option<String>,
    /// That task was exiting (`PF_EXITING`): its exit closed the socket (killed or crashed),
    /// not the app itself while alive.
    #[serde(default)]
    pub peer_exiting: bool,
    /// 1: the unanswered request was the connection's first; 2: a later one (answers came
    /// before it: the proxy reused a kept-alive connection). Not a count: the kernel sees no
    /// per-request event.
    pub requests: u32,
    /// When the connection was established, the last data sent (the request), the last data
    /// received before it (absent on a first request), the peer's FIN/RST (absent when not
    /// seen), all monotonic ns like `mono_ns` (the FIN/RST's arrival); the send and receive
    /// times to one kernel tick (`tcp_sock`'s jiffies stamps).
    pub established_ns: u64,
    pub last_send_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_recv_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_ns: Option<u64>,
    /// The process wrote after the peer's FIN/RST had arrived (its request crossed the close).
    #[serde(default)]
    pub wrote_after_close: bool,
    /// `tcp_sock.bytes_received` and `bytes_acked` at the end: all the connection carried.
    pub bytes_received: u64,
    pub bytes_acked: u64,
}

impl ConnEndInfo {
    /// How long the connection sat idle before its last request (absent on a first request).
    #[must_use]
    pub fn idle_ns(&self) -> Option<u64> {
        self.prev_recv_ns
            .map(|p| self.last_send_ns.saturating_sub(p))
    }

    /// The peer's close minus the last request (negative: the close came first), in ns.
    #[must_use]
    pub fn close_after_send_ns(&self) -> Option<i64> {
        self.close_ns.map(|c| {
            i64::try_from(i128::from(c) - i128::from(self.last_send_ns)).unwrap_or(i64::MAX)
        })
    }

    /// The data bytes the connection carried to the process: `bytes_received` counts the
    /// peer's FIN as one (it takes a sequence number).
    #[must_use]
    pub fn data_received(&self) -> u64 {
        let fin = self.peer_close.starts_with("fin");
        self.bytes_received.saturating_sub(u64::from(fin))
    }

    /// The connection was reused: its last request was not its first.
    #[must_use]
    pub fn reused(&self) -> bool {
        self.requests > 1
    }
}

/// The body of a `conn_end` record (outside `ConnEndInfo`'s impl: serde derives stay away from
/// the unsafe read).
fn conn_end_of(raw: &RawEvent) -> ConnEndInfo {
    {
        // SAFETY: `data` holds DATA_LEN bytes, more than ConnEnd (asserted in probe-common);
        // ConnEnd is plain integers, any bits are valid; the read copes with any alignment.
        let e: ConnEnd = unsafe { std::ptr::read_unaligned(raw.data.as_ptr().cast()) };
        let fin = e.flags & CONN_PEER_FIN != 0;
        let rst = e.flags & CONN_PEER_RST != 0;
        let task = e.flags & CONN_PEER_TASK != 0;
        ConnEndInfo {
            target: format_target(raw.family, &raw.addr, raw.port, &[]),
            outcome: if raw.errno == 0 { "eof" } else { "reset" }.to_owned(),
            errno: raw.errno,
            peer_close: match (fin, rst) {
                (true, true) => "fin_then_rst",
                (false, true) => "rst",
                (true, false) => "fin",
                (false, false) => "unknown",
            }
            .to_owned(),
            peer_pid: task.then_some(e.peer_pid),
            peer_tid: task.then_some(e.peer_tid),
            peer_comm: task.then(|| cstr(&raw.target_comm)),
            peer_exiting: task && e.flags & CONN_PEER_EXITING != 0,
            requests: e.requests,
            established_ns: e.established_ns,
            last_send_ns: e.last_send_ns,
            prev_recv_ns: (e.prev_recv_ns != 0).then_some(e.prev_recv_ns),
            close_ns: (e.close_ns != 0).then_some(e.close_ns),
            wrote_after_close: e.flags & CONN_WROTE_AFTER_CLOSE != 0,
            bytes_received: e.bytes_received,
            bytes_acked: e.bytes_acked,
        }
    }
}

impl Event {
    /// An event of task `pid` (its only thread) named `comm`, with no ids, cgroup or origin:
    /// the one place that spells out the header, for gwtrace's own lines and hand-made events.
    #[must_use]
    pub fn of_task(ts: String, mono_ns: u64, pid: u32, comm: &str, body: Body) -> Self {
        Self {
            v: SCHEMA_VERSION,
            ts,
            mono_ns,
            pid,
            tid: pid,
            comm: comm.to_owned(),
            uid: 0,
            gid: 0,
            cgroup_id: 0,
            origin: None,
            net_ns: None,
            body,
        }
    }

    /// A `facts` line: what /proc showed at `mono_ns` (no task header: gwtrace read it).
    #[must_use]
    pub fn facts(ts: String, mono_ns: u64, up: FactsUpdate) -> Self {
        Self::of_task(ts, mono_ns, 0, "", Body::Facts(up))
    }

    /// The `kind` string of this event, as in JSON.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match &self.body {
            Body::ConnectFailed { .. } => "connect_failed",
            Body::AcceptFailed { .. } => "accept_failed",
            Body::ProcessExit { .. } => "process_exit",
            Body::Signal { .. } => "signal",
            Body::OomKill { .. } => "oom_kill",
            Body::Exec { .. } => "exec",
            Body::ExecFailed { .. } => "exec_failed",
            Body::NetfilterDrop { .. } => "netfilter_drop",
            Body::ConnEnd(_) => "conn_end",
            Body::Loss { .. } => "loss",
            Body::Hooks { .. } => "hooks",
            Body::Facts(_) => "facts",
        }
    }
}

/// Reasons a raw event could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event is {0} bytes, expected {1}")]
    Size(usize, usize),
    #[error("unknown event kind {0}")]
    Kind(u32),
}

/// Converts the kernel's monotonic ns to wall clock, given the offset measured at start.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// `realtime_ns - monotonic_ns`, measured once.
    pub wall_minus_mono_ns: i128,
}

impl Clock {
    /// Measures the offset between the wall clock and `CLOCK_MONOTONIC` now.
    #[must_use]
    pub fn now() -> Self {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            wall_minus_mono_ns: i128::try_from(wall).unwrap_or(0) - i128::from(monotonic_ns()),
        }
    }

    /// RFC 3339 wall-clock time of a monotonic instant.
    #[must_use]
    pub fn rfc3339(&self, mono_ns: u64) -> String {
        let wall = i128::from(mono_ns) + self.wall_minus_mono_ns;
        time::OffsetDateTime::from_unix_timestamp_nanos(wall)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }
}

/// `CLOCK_MONOTONIC` now, in ns (the clock of `bpf_ktime_get_ns`).
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// A NUL-terminated byte string (a comm) as text.
#[must_use]
pub fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Formats a socket target the way gwtrace prints it everywhere.
#[must_use]
pub fn format_target(family: u16, addr: &[u8; 16], port: u16, path: &[u8]) -> String {
    match family {
        AF_INET => format!(
            "{}:{port}",
            Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])
        ),
        AF_INET6 => format!("[{}]:{port}", Ipv6Addr::from(*addr)),
        AF_UNIX => {
            if path.first() == Some(&0) {
                // Abstract: the name is every byte after the leading NUL (NULs shown as @).
                let name: String = path[1..]
                    .iter()
                    .map(|&b| if b == 0 { '@' } else { char::from(b) })
                    .collect();
                format!("unix:@{name}")
            } else {
                format!("unix:{}", cstr(path))
            }
        }
        other => format!("family{other}"),
    }
}

/// Decoding of the kernel's wire records into [`Event`]s.
pub struct Decoder;

impl Decoder {
    /// Decodes one ring-buffer record.
    pub fn decode(bytes: &[u8], clock: &Clock) -> Result<Event, DecodeError> {
        Self::from_raw(&Self::raw(bytes)?, clock)
    }

    /// The wire struct of one ring-buffer record.
    pub fn raw(bytes: &[u8]) -> Result<RawEvent, DecodeError> {
        if bytes.len() < size_of::<RawEvent>() {
            return Err(DecodeError::Size(bytes.len(), size_of::<RawEvent>()));
        }
        // SAFETY: the length was checked; RawEvent is plain integers (any bit pattern is valid);
        // read_unaligned copes with any alignment of the ring buffer's bytes.
        Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
    }

    /// Builds the typed event from the wire struct.
    pub fn from_raw(raw: &RawEvent, clock: &Clock) -> Result<Event, DecodeError> {
        let data_len = usize::from(raw.data_len).min(raw.data.len());
        let body = match raw.kind {
            KIND_CONNECT_FAILED => Body::ConnectFailed {
                target: format_target(raw.family, &raw.addr, raw.port, &raw.data[..data_len]),
                errno: raw.errno,
                errno_name: errno_name(raw.errno).to_owned(),
                source: match raw.source {
                    SOURCE_SYSCALL => "syscall",
                    SOURCE_TCP_STATE => "tcp_state",
                    SOURCE_TCP_ABANDONED => "tcp_abandoned",
                    _ => "unknown",
                }
                .to_owned(),
                count: 1,
            },
            KIND_ACCEPT_FAILED => Body::AcceptFailed {
                errno: raw.errno,
                errno_name: errno_name(raw.errno).to_owned(),
            },
            KIND_PROCESS_EXIT => {
                let sig = raw.exit_code & 0x7f;
                Body::ProcessExit {
                    exit_code: (sig == 0).then_some((raw.exit_code >> 8) & 0xff),
                    signal: (sig != 0).then_some(sig),
                    signal_name: (sig != 0).then(|| signal_name(sig).to_owned()),
                    core_dumped: raw.exit_code & 0x80 != 0,
                }
            }
            KIND_SIGNAL => Body::Signal {
                signal: raw.sig,
                signal_name: signal_name(raw.sig).to_owned(),
                sender_pid: raw.pid,
                target_pid: raw.target_pid,
                target_comm: cstr(&raw.target_comm),
                code: i32::try_from(raw.aux[0].cast_signed()).unwrap_or(0),
                result: i32::try_from(raw.aux[2].cast_signed()).unwrap_or(0),
            },
            KIND_OOM_KILL => Body::OomKill {
                victim_pid: raw.target_pid,
                victim_comm: cstr(&raw.target_comm),
                total_vm_kb: raw.aux[0],
                anon_rss_kb: raw.aux[1],
                file_rss_kb: raw.aux[2],
                shmem_rss_kb: raw.aux[3],
            },
            KIND_EXEC => Body::Exec {
                filename: cstr(&raw.data[..data_len]),
                cmdline: None,
            },
            KIND_EXEC_FAILED => Body::ExecFailed {
                filename: cstr(&raw.data[..data_len]),
                errno: raw.errno,
                errno_name: errno_name(raw.errno).to_owned(),
            },
            KIND_NETFILTER_DROP => {
                let mut saddr = [0u8; 16];
                saddr.copy_from_slice(&raw.data[..16]);
                Body::NetfilterDrop {
                    target: format_target(raw.family, &raw.addr, raw.port, &[]),
                    source_addr: format_target(
                        raw.family,
                        &saddr,
                        u16::try_from(raw.aux[1]).unwrap_or(0),
                        &[],
                    ),
                    // The program reports this one reason only (its value is read at load).
                    reason: "NETFILTER_DROP".to_owned(),
                    count: raw.aux[2].saturating_add(1),
                }
            }
            KIND_CONN_END => Body::ConnEnd(conn_end_of(raw)),
            k => return Err(DecodeError::Kind(k)),
        };
        Ok(Event {
            v: SCHEMA_VERSION,
            ts: clock.rfc3339(raw.ktime_ns),
            mono_ns: raw.ktime_ns,
            pid: raw.pid,
            tid: raw.tid,
            comm: cstr(&raw.comm),
            uid: raw.uid,
            gid: raw.gid,
            cgroup_id: raw.cgroup_id,
            origin: None,
            net_ns: None,
            body,
        })
    }
}

/// Symbolic name of an errno (`ECONNREFUSED`, as the C headers spell it), or `E?` for a number
/// this platform has no name for.
#[must_use]
pub fn errno_name(errno: i32) -> &'static str {
    /// Every Linux errno is below this (EHWPOISON is 133).
    const END: i32 = 256;
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (0..END)
            .map(|n| match Errno::from_raw(n) {
                Errno::UnknownErrno => String::new(),
                e => format!("{e:?}"),
            })
            .collect()
    });
    usize::try_from(errno)
        .ok()
        .and_then(|i| names.get(i))
        .map(String::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or("E?")
}

/// Symbolic name of a signal (`SIGKILL`), or `SIG?` for a number that is not a standard signal
/// (real-time signals included).
#[must_use]
pub fn signal_name(sig: i32) -> &'static str {
    Signal::try_from(sig).map_or("SIG?", Signal::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names gwtrace printed from its own table before it took them from nix: unchanged.
    #[test]
    fn errno_and_signal_names_are_the_c_headers_names() {
        for (n, name) in [
            (1, "EPERM"),
            (2, "ENOENT"),
            (4, "EINTR"),
            (11, "EAGAIN"),
            (12, "ENOMEM"),
            (13, "EACCES"),
            (20, "ENOTDIR"),
            (22, "EINVAL"),
            (23, "ENFILE"),
            (24, "EMFILE"),
            (36, "ENAMETOOLONG"),
            (40, "ELOOP"),
            (91, "EPROTOTYPE"),
            (97, "EAFNOSUPPORT"),
            (98, "EADDRINUSE"),
            (99, "EADDRNOTAVAIL"),
            (100, "ENETDOWN"),
            (101, "ENETUNREACH"),
            (103, "ECONNABORTED"),
            (104, "ECONNRESET"),
            (105, "ENOBUFS"),
            (110, "ETIMEDOUT"),
            (111, "ECONNREFUSED"),
            (113, "EHOSTUNREACH"),
        ] {
            assert_eq!(errno_name(n), name, "errno {n}");
        }
        // Names the old table lacked now come from the headers too.
        assert_eq!(errno_name(32), "EPIPE");
        for unknown in [0, -1, 150, 256, i32::MAX, i32::MIN] {
            assert_eq!(errno_name(unknown), "E?", "errno {unknown}");
        }
        for (n, name) in [
            (1, "SIGHUP"),
            (2, "SIGINT"),
            (3, "SIGQUIT"),
            (4, "SIGILL"),
            (6, "SIGABRT"),
            (7, "SIGBUS"),
            (8, "SIGFPE"),
            (9, "SIGKILL"),
            (11, "SIGSEGV"),
            (13, "SIGPIPE"),
            (15, "SIGTERM"),
            (31, "SIGSYS"),
        ] {
            assert_eq!(signal_name(n), name, "signal {n}");
        }
        for unknown in [0, -9, 34, 64, 65, i32::MAX] {
            assert_eq!(signal_name(unknown), "SIG?", "signal {unknown}");
        }
    }

    #[test]
    fn targets_format_like_nginx() {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(format_target(AF_INET, &a, 8000, &[]), "127.0.0.1:8000");
        assert_eq!(
            format_target(AF_INET6, &Ipv6Addr::LOCALHOST.octets(), 80, &[]),
            "[::1]:80"
        );
        assert_eq!(
            format_target(AF_UNIX, &a, 0, b"/run/app.sock\0\0\0"),
            "unix:/run/app.sock"
        );
        assert_eq!(format_target(AF_UNIX, &a, 0, b"\0gw-test"), "unix:@gw-test");
    }

    #[test]
    fn short_record_is_an_error_not_a_panic() {
        let clock = Clock {
            wall_minus_mono_ns: 0,
        };
        assert_eq!(
            Decoder::decode(&[0; 8], &clock),
            Err(DecodeError::Size(8, 272))
        );
    }

    #[test]
    fn exit_code_splits_status_signal_core() {
        let clock = Clock {
            wall_minus_mono_ns: 0,
        };
        // SAFETY: RawEvent is plain integers; zero is valid.
        let mut raw: RawEvent = unsafe { std::mem::zeroed() };
        raw.kind = KIND_PROCESS_EXIT;
        raw.exit_code = 3 << 8;
        let e = Decoder::from_raw(&raw, &clock).unwrap();
        assert!(matches!(
            e.body,
            Body::ProcessExit {
                exit_code: Some(3),
                signal: None,
                ..
            }
        ));
        raw.exit_code = 0x80 | 0xb;
        let e = Decoder::from_raw(&raw, &clock).unwrap();
        assert!(matches!(
            e.body,
            Body::ProcessExit {
                exit_code: None,
                signal: Some(11),
                core_dumped: true,
                ..
            }
        ));
    }
}
