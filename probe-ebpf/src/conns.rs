//! The TCP connections watched processes (the proxies) opened, tracked from `ESTABLISHED` to
//! their end, so that one that ends before any byte of the answer to its last request (the
//! peer's FIN or RST arrives after the opener's last write and no data since) is reported with
//! who closed the other end and how. Healthy connections never leave the kernel: they are
//! forgotten when either side closes.
//!
//! Measured with bpftrace on kernel 6.18, loopback, nginx -> gunicorn / a small HTTP/1.1 app
//! (bench/README.md, "Connection ends"): the app's close runs the proxy socket's
//! `ESTABLISHED -> CLOSE_WAIT` (its FIN) or `-> CLOSE` with `sk_err` ECONNRESET (its RST, sent
//! because the request was unread) in the app's own task, even when a SIGKILL's exit closes
//! the files (`PF_EXITING` is then set). For a remote peer the FIN/RST is handled in softirq
//! and the task is whatever ran: userspace only trusts a peer task that serves the target.
//!
//! Everything is decided at those state changes (`sock_state` calls in), from what `tcp_sock`
//! keeps: no program runs per send or receive. Whether the last request went unanswered is
//! the order of `lsndtime` (jiffies of the last data sent) and `icsk_ack.lrcvtime` (jiffies of
//! the last data received), with `bytes_received` 0 meaning no answer ever came. The one
//! blind spot is a request sent within the same jiffy as the previous answer arrived (4 ms at
//! `CONFIG_HZ=250`): a FIN then counts as answered (the common healthy end, an answer followed
//! by `Connection: close`, looks the same), an RST as unanswered (an RST means the peer left
//! data unread: the request). A write after the peer's FIN shows as `write_seq` growing before
//! the peer's RST.
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_jiffies64,
        bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::map,
    maps::HashMap,
};
use probe_common::{
    CNT_CONN_BROKEN, CNT_CONN_TRACKED, CNT_LOST_MAP_FULL, CONN_OWNER_CLOSED, CONN_PEER_EXITING,
    CONN_PEER_FIN, CONN_PEER_RST, CONN_PEER_TASK, CONN_REPORTED, CONN_WROTE_AFTER_CLOSE, CONNS_MAX,
    ConnEnd, ConnTrack, KIND_CONN_END, Owner, PF_EXITING,
};

use crate::common::{count, emit, off};

const TCP_ESTABLISHED: i32 = 1;
const TCP_CLOSE: i32 = 7;
const TCP_CLOSE_WAIT: i32 = 8;
const TCP_FIN_WAIT1: i32 = 4;
const TCP_LAST_ACK: i32 = 9;
const ECONNRESET: i32 = 104;
const EPIPE: i32 = 32;

/// A plain hash, not an LRU: an LRU lookup marks the entry referenced and its inserts and
/// deletes take a shared lock; measured here (bpf_stats, nginx -> gunicorn without keep-alive)
/// the LRU made every TCP state change ~225 ns dearer. Every entry is deleted at its
/// connection's last state change out of `ESTABLISHED`/`CLOSE_WAIT` (the owner's close, the
/// peer's RST, an abort); a full map refuses new connections, counted as `map_full`.
#[map]
pub static GW_CONNS: HashMap<u64, ConnTrack> = HashMap::with_max_entries(CONNS_MAX, 0);

/// Whether the connection-end programs are attached (the loader says so).
#[inline(always)]
pub fn enabled() -> bool {
    off!(track_conns) != 0
}

/// Reads a `T` at `base + offset` in kernel memory (0 on failure: these fields are evidence,
/// not filters).
#[inline(always)]
fn kread<T: Default>(base: u64, offset: usize) -> T {
    // SAFETY: `base` is a live kernel object (the tracepoint's socket or the current task), the
    // offset comes from this kernel's BTF, and the read is the fallible helper.
    unsafe { bpf_probe_read_kernel::<T>((base as usize + offset) as *const T) }.unwrap_or_default()
}

/// A connection that just reached `ESTABLISHED`, opened by `owner`.
#[inline(always)]
pub fn track(sk: u64, owner: &Owner, family: u16, port: u16, addr: [u8; 16]) {
    let c = ConnTrack {
        owner: *owner,
        end: ConnEnd {
            // SAFETY: helper without preconditions.
            established_ns: unsafe { bpf_ktime_get_ns() },
            ..ConnEnd::default()
        },
        family,
        port,
        fin_write_seq: 0,
        addr,
        peer_comm: [0; 16],
    };
    if GW_CONNS.insert(&sk, &c, 0).is_err() {
        count(CNT_LOST_MAP_FULL);
        return;
    }
    count(CNT_CONN_TRACKED);
}

/// Names the current task as the one the peer's FIN/RST was processed in, unless it is the
/// owner itself.
#[inline(always)]
fn note_peer(c: &mut ConnTrack) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == c.owner.pid || tgid == 0 {
        return;
    }
    c.end.flags |= CONN_PEER_TASK;
    c.end.peer_pid = tgid;
    c.end.peer_tid = pid_tgid as u32;
    c.peer_comm = bpf_get_current_comm().unwrap_or([0; 16]);
    // SAFETY: helper without preconditions; the current task lives while we run.
    let task = unsafe { bpf_get_current_task() };
    if kread::<u32>(task, off!(task_flags)) & PF_EXITING != 0 {
        c.end.flags |= CONN_PEER_EXITING;
    }
}

/// A state change of a socket leaving `ESTABLISHED` or `CLOSE_WAIT`: the peer's FIN or RST
/// settles whether the last request was answered (and reports it if not); the owner's own
/// close forgets the connection.
#[inline(always)]
pub fn on_state(sk: u64, old: i32, new: i32, sk_err: impl FnOnce() -> i32) {
    // Only TCP sockets are in the map: the lookup is the protocol check.
    let Some(c) = GW_CONNS.get_ptr_mut(&sk) else {
        return;
    };
    let sk_err = if new == TCP_CLOSE { sk_err() } else { 0 };
    // SAFETY: a live value of the map; concurrent writers only race on evidence fields.
    let c = unsafe { &mut *c };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match new {
        TCP_CLOSE_WAIT => {
            c.end.flags |= CONN_PEER_FIN;
            if c.end.close_ns == 0 {
                c.end.close_ns = now;
                note_peer(c);
            }
            c.fin_write_seq = kread::<u32>(sk, off!(tcp_write_seq));
            // The owner will read EOF; a write it makes from now on meets the peer's RST.
            report_if_unanswered(sk, c, now, 0, false);
        }
        TCP_CLOSE if sk_err == ECONNRESET || sk_err == EPIPE => {
            c.end.flags |= CONN_PEER_RST;
            if c.end.close_ns == 0 {
                c.end.close_ns = now;
                note_peer(c);
            }
            if old == TCP_CLOSE_WAIT {
                // The closed peer reset a write made after its FIN: that request crossed the
                // close. The owner's read still returns EOF (the FIN came first).
                if kread::<u32>(sk, off!(tcp_write_seq)) != c.fin_write_seq {
                    c.end.flags |= CONN_WROTE_AFTER_CLOSE;
                    report(sk, c, now, 0, 2);
                }
            } else {
                report_if_unanswered(sk, c, now, sk_err, true);
            }
            let _ = GW_CONNS.remove(&sk);
        }
        TCP_FIN_WAIT1 | TCP_LAST_ACK | TCP_CLOSE => {
            // The owner closed it (or aborted it).
            if old == TCP_ESTABLISHED {
                c.end.flags |= CONN_OWNER_CLOSED;
            }
            let _ = GW_CONNS.remove(&sk);
        }
        _ => {}
    }
}

/// The peer's FIN (`rst` false) or RST just arrived: reports the connection if data was sent
/// after the last data received (or none was ever received). `errno` is what the owner's read
/// will return.
#[inline(always)]
fn report_if_unanswered(sk: u64, c: &mut ConnTrack, now: u64, errno: i32, rst: bool) {
    let requests = if data_received(sk, c) == 0 {
        if kread::<u32>(sk, off!(tcp_data_segs_out)) == 0 {
            // Nothing was ever asked.
            return;
        }
        1
    } else {
        let sent = kread::<u32>(sk, off!(tcp_lsndtime));
        let received = kread::<u32>(sk, off!(icsk_lrcvtime));
        // Jiffies wrap: the signed difference orders them.
        let d = sent.wrapping_sub(received) as i32;
        if d < 0 || (d == 0 && !rst) {
            return;
        }
        2
    };
    report(sk, c, now, errno, requests);
}

/// The data bytes the connection received: `bytes_received` counts the peer's FIN as one.
#[inline(always)]
fn data_received(sk: u64, c: &ConnTrack) -> u64 {
    let fin = u64::from(c.end.flags & CONN_PEER_FIN != 0);
    kread::<u64>(sk, off!(tcp_bytes_received)).saturating_sub(fin)
}

/// `bpf_ktime_get_ns` of the jiffy stamp `j`, given the clock `now` (ns) at jiffy `now_j`.
#[inline(always)]
fn jiffy_time(now: u64, now_j: u32, j: u32) -> u64 {
    let ago = u64::from(now_j.wrapping_sub(j)) * off!(jiffy_ns) as u64;
    now.saturating_sub(ago)
}

/// Emits the end of connection `c` (once), stamped as its owner's. Written field by field
/// from the map value into the ring buffer: the state program's stack has no room for copies.
#[inline(always)]
fn report(sk: u64, c: &mut ConnTrack, now: u64, errno: i32, requests: u32) {
    if c.end.flags & CONN_REPORTED != 0 {
        return;
    }
    c.end.flags |= CONN_REPORTED;
    count(CNT_CONN_BROKEN);
    // SAFETY: helper without preconditions.
    let now_j = unsafe { bpf_jiffies64() } as u32;
    let established = c.end.established_ns;
    let last_send = jiffy_time(now, now_j, kread::<u32>(sk, off!(tcp_lsndtime))).max(established);
    let received = kread::<u64>(sk, off!(tcp_bytes_received));
    let prev_recv = if data_received(sk, c) > 0 {
        jiffy_time(now, now_j, kread::<u32>(sk, off!(icsk_lrcvtime))).max(established)
    } else {
        0
    };
    let acked = kread::<u64>(sk, off!(tcp_bytes_acked));
    let c: &ConnTrack = c;
    emit(KIND_CONN_END, &c.owner, |ev| {
        ev.ktime_ns = now;
        ev.errno = errno;
        ev.family = c.family;
        ev.port = c.port;
        ev.addr = c.addr;
        ev.target_pid = c.end.peer_pid;
        ev.target_comm = c.peer_comm;
        let d = ev.data.as_mut_ptr().cast::<ConnEnd>();
        // SAFETY: `data` is DATA_LEN bytes, larger than ConnEnd (asserted in probe-common);
        // unaligned writes of plain integers into the reserved (zeroed) event.
        unsafe {
            (&raw mut (*d).established_ns).write_unaligned(established);
            (&raw mut (*d).last_send_ns).write_unaligned(last_send);
            (&raw mut (*d).prev_recv_ns).write_unaligned(prev_recv);
            (&raw mut (*d).last_recv_ns).write_unaligned(prev_recv);
            (&raw mut (*d).close_ns).write_unaligned(c.end.close_ns);
            (&raw mut (*d).bytes_received).write_unaligned(received);
            (&raw mut (*d).bytes_acked).write_unaligned(acked);
            (&raw mut (*d).requests).write_unaligned(requests);
            (&raw mut (*d).flags).write_unaligned(c.end.flags & !CONN_REPORTED);
            (&raw mut (*d).peer_pid).write_unaligned(c.end.peer_pid);
            (&raw mut (*d).peer_tid).write_unaligned(c.end.peer_tid);
        }
        ev.data_len = size_of::<ConnEnd>() as u16;
    });
}
