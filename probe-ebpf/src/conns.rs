//! The TCP connections processes opened, tracked from `ESTABLISHED` to their end, so that one
//! that ends before any byte of the answer to its last request (the opener reads EOF or gets
//! ECONNRESET after writing) is reported with who closed the other end and how. Healthy
//! connections never leave the kernel: they are forgotten when either side closes.
//!
//! Measured with bpftrace on kernel 6.18, loopback, nginx -> gunicorn / a small HTTP/1.1 app
//! (bench/README.md, "Connection ends"): the app's close runs the proxy socket's
//! `ESTABLISHED -> CLOSE_WAIT` (its FIN) or `-> CLOSE` with `sk_err` ECONNRESET (its RST, sent
//! because the request was unread) in the app's own task, even when a SIGKILL's exit closes
//! the files (`PF_EXITING` is then set); the proxy then reads 0 or -ECONNRESET in its own
//! task (`sock:sock_recv_length`). For a remote peer the FIN/RST is handled in softirq and the
//! task is whatever ran: userspace only trusts a peer task that serves the target.
//!
//! The state machine (`sock_state`) enters and updates connections; `sock_send`/`sock_recv`
//! account the opener's traffic and report the broken ends.
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::map,
    maps::HashMap,
};
use probe_common::{
    CNT_CONN_BROKEN, CNT_CONN_TRACKED, CNT_LOST_MAP_FULL, CONN_ANSWERED, CONN_OWNER_CLOSED,
    CONN_PEER_EXITING, CONN_PEER_FIN, CONN_PEER_RST, CONN_PEER_TASK, CONN_WROTE_AFTER_CLOSE,
    CONNS_MAX, ConnEnd, ConnTrack, KIND_CONN_END, Owner, PF_EXITING,
};

use crate::common::{count, current_owner, emit, off};

const TCP_CLOSE: i32 = 7;
const TCP_CLOSE_WAIT: i32 = 8;
const TCP_FIN_WAIT1: i32 = 4;
const TCP_LAST_ACK: i32 = 9;
const ECONNRESET: i32 = 104;
const EPIPE: i32 = 32;
const MSG_PEEK: i32 = 2;

/// A plain hash, not an LRU: an LRU lookup marks the entry referenced and its inserts and
/// deletes take a shared lock; measured here (bpf_stats, nginx -> gunicorn without keep-alive)
/// the LRU made every TCP state change ~225 ns dearer. Every entry is deleted at its
/// connection's end (the owner's close or its read of the end, a peek included); a full map
/// refuses new connections, counted as `map_full`.
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
        pad: 0,
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

/// A state change of a socket leaving `ESTABLISHED` or `CLOSE_WAIT`: the peer's FIN or RST is
/// noted; the owner's own close forgets the connection.
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
        }
        TCP_CLOSE if sk_err == ECONNRESET || sk_err == EPIPE => {
            c.end.flags |= CONN_PEER_RST;
            if c.end.close_ns == 0 {
                c.end.close_ns = now;
                note_peer(c);
            }
        }
        TCP_FIN_WAIT1 | TCP_LAST_ACK | TCP_CLOSE => {
            // The owner closed it (or aborted it): if it read the end first, `sock_recv` saw it.
            if old == 1 {
                c.end.flags |= CONN_OWNER_CLOSED;
            }
            let _ = GW_CONNS.remove(&sk);
        }
        _ => {}
    }
}

/// The owner wrote `ret` bytes on `sk`.
#[inline(always)]
pub fn on_send(sk: u64, ret: i32) {
    if ret <= 0 {
        return;
    }
    let Some(c) = GW_CONNS.get_ptr_mut(&sk) else {
        return;
    };
    // SAFETY: as in `on_state`.
    let c = unsafe { &mut *c };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if c.end.requests == 0 || c.end.flags & CONN_ANSWERED != 0 {
        c.end.requests += 1;
        c.end.prev_recv_ns = c.end.last_recv_ns;
        c.end.flags &= !CONN_ANSWERED;
    }
    c.end.last_send_ns = now;
    if c.end.close_ns != 0 {
        c.end.flags |= CONN_WROTE_AFTER_CLOSE;
    }
}

/// The owner read on `sk`: data marks the last request answered; EOF or a reset before any
/// byte of the answer is the broken end this module reports.
#[inline(always)]
pub fn on_recv(sk: u64, ret: i32, flags: i32) {
    if ret < 0 && ret != -ECONNRESET && ret != -EPIPE {
        // No data yet (EAGAIN), or an error that is not the peer's.
        return;
    }
    let Some(c) = GW_CONNS.get_ptr_mut(&sk) else {
        return;
    };
    if flags & MSG_PEEK != 0 {
        // nginx's check of an idle cached connection: the end it sees is a healthy one (the
        // socket may already be closed, so no later state change would forget it).
        if ret <= 0 {
            let _ = GW_CONNS.remove(&sk);
        }
        return;
    }
    // SAFETY: as in `on_state`.
    let cp = unsafe { &mut *c };
    if ret > 0 {
        cp.end.flags |= CONN_ANSWERED;
        // SAFETY: helper without preconditions.
        cp.end.last_recv_ns = unsafe { bpf_ktime_get_ns() };
        return;
    }
    let broken = cp.end.requests > 0 && cp.end.flags & CONN_ANSWERED == 0;
    if broken {
        count(CNT_CONN_BROKEN);
        let mut end = cp.end;
        end.bytes_received = kread::<u64>(sk, off!(tcp_bytes_received));
        end.bytes_acked = kread::<u64>(sk, off!(tcp_bytes_acked));
        let (family, port, addr, peer_comm) = (cp.family, cp.port, cp.addr, cp.peer_comm);
        emit(KIND_CONN_END, &current_owner(), |ev| {
            ev.errno = -ret;
            ev.family = family;
            ev.port = port;
            ev.addr = addr;
            ev.target_pid = end.peer_pid;
            ev.target_comm = peer_comm;
            // SAFETY: `data` is DATA_LEN bytes, larger than ConnEnd (asserted in probe-common);
            // an unaligned write of a plain-integer struct.
            unsafe { core::ptr::write_unaligned(ev.data.as_mut_ptr().cast::<ConnEnd>(), end) };
            ev.data_len = size_of::<ConnEnd>() as u16;
        });
    }
    let _ = GW_CONNS.remove(&sk);
}
