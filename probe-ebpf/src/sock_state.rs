//! TCP connects seen on the socket state machine (`sock:inet_sock_set_state`), no syscall hook
//! needed: `CLOSE -> SYN_SENT` remembers who connects (always in that process's context),
//! `SYN_SENT -> ESTABLISHED` forgets it, `SYN_SENT -> CLOSE` reports the failure with the socket's
//! `sk_err` (set before the state change: ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ...), or, when
//! there is none, a connect the process itself abandoned (its own connect timeout).
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::tracepoint,
    programs::TracePointContext,
};
use probe_common::{
    AF_INET, CNT_LOST_MAP_FULL, CNT_LOST_TCP_OWNER, CNT_TCP_ABANDONED, CNT_TCP_ESTABLISHED,
    CNT_TCP_FAILED, SOURCE_TCP_ABANDONED, SOURCE_TCP_STATE,
};

use crate::{
    common::{
        GW_CONNECTS, GW_TCP_OWNER, count, count_errno, current_is_self, current_owner,
        emit_failure, off,
    },
    connect::{GW_CONNECT_TCP, SEEN_CLOSED_IN_CALL, SEEN_SYN_SENT},
    fold::scratch_key,
};

const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const ETIMEDOUT: i32 = 110;

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    match try_inet_sock_set_state(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), ()> {
    // SAFETY: offsets from tracefs; fallible kernel reads.
    let (protocol, old, new) = unsafe {
        (
            ctx.read_at::<u16>(off!(ss_protocol)).map_err(|_| ())?,
            ctx.read_at::<i32>(off!(ss_oldstate)).map_err(|_| ())?,
            ctx.read_at::<i32>(off!(ss_newstate)).map_err(|_| ())?,
        )
    };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let interesting = (old == TCP_CLOSE && new == TCP_SYN_SENT) || old == TCP_SYN_SENT;
    if !interesting {
        return Ok(());
    }
    // SAFETY: as above.
    let skaddr = unsafe { ctx.read_at::<u64>(off!(ss_skaddr)) }.map_err(|_| ())?;
    if old == TCP_CLOSE {
        if current_is_self() {
            return Ok(());
        }
        if GW_TCP_OWNER.insert(&skaddr, &current_owner(), 0).is_err() {
            count(CNT_LOST_MAP_FULL);
        }
        // Always inside connect() (the syscall hook's entry, when attached, is in flight).
        let tid = bpf_get_current_pid_tgid() as u32;
        // SAFETY: lookup only.
        if unsafe { GW_CONNECTS.get(&tid) }.is_some() {
            let _ = GW_CONNECT_TCP.insert(&tid, &SEEN_SYN_SENT, 0);
        }
        return Ok(());
    }
    // SAFETY: value copied before removal.
    let owner = unsafe { GW_TCP_OWNER.get(&skaddr) }.copied();
    let _ = GW_TCP_OWNER.remove(&skaddr);
    if new == TCP_ESTABLISHED {
        count(CNT_TCP_ESTABLISHED);
        return Ok(());
    }
    if new != TCP_CLOSE {
        return Ok(());
    }
    // SAFETY: as above.
    let sport = unsafe { ctx.read_at::<u16>(off!(ss_sport)) }.map_err(|_| ())?;
    // SAFETY: `skaddr` is the live `struct sock` the tracepoint describes; `sk_err`'s offset comes
    // from the kernel's BTF; the read is a fallible helper.
    let sk_err = unsafe {
        bpf_probe_read_kernel::<i32>((skaddr as usize + off!(sock_sk_err)) as *const i32)
    }
    .unwrap_or(0);
    if sk_err == 0 {
        // Closed without a socket error by the thread whose connect() is still in flight: that
        // connect() failed after entering SYN_SENT (no free local port, no route for the chosen
        // port); the syscall hook reports its errno.
        let tid = bpf_get_current_pid_tgid() as u32;
        if let Some(seen) = GW_CONNECT_TCP.get_ptr_mut(&tid)
            && owner.is_none_or(|o| o.tid == tid)
        {
            // SAFETY: the map value lives while we hold the pointer (no deletion in between).
            unsafe {
                if *seen == SEEN_SYN_SENT {
                    *seen = SEEN_CLOSED_IN_CALL;
                    return Ok(());
                }
            }
        }
    }
    if sk_err == 0 && sport == 0 {
        // No local port was ever bound: connect() failed before the handshake (EADDRNOTAVAIL),
        // and the syscall hook reports it.
        return Ok(());
    }
    let Some(owner) = owner else {
        count(CNT_LOST_TCP_OWNER);
        return Ok(());
    };
    count(CNT_TCP_FAILED);
    let (errno, source) = if sk_err > 0 {
        (sk_err, SOURCE_TCP_STATE)
    } else {
        count(CNT_TCP_ABANDONED);
        (ETIMEDOUT, SOURCE_TCP_ABANDONED)
    };
    count_errno(0, errno as u32);
    // SAFETY: offsets from tracefs.
    let (family, dport) = unsafe {
        (
            ctx.read_at::<u16>(off!(ss_family)).map_err(|_| ())?,
            ctx.read_at::<u16>(off!(ss_dport)).map_err(|_| ())?,
        )
    };
    let Some(key) = scratch_key() else {
        return Err(());
    };
    key.tgid = owner.pid;
    key.errno = errno;
    key.family = family;
    key.port = dport;
    key.source = source;
    // SAFETY: offsets from tracefs; fixed-size reads.
    unsafe {
        if family == AF_INET {
            if let Ok(a) = ctx.read_at::<[u8; 4]>(off!(ss_daddr)) {
                key.addr[..4].copy_from_slice(&a);
            }
        } else if let Ok(a) = ctx.read_at::<[u8; 16]>(off!(ss_daddr_v6)) {
            key.addr = a;
        }
    }
    let mut owner = owner;
    // The failure time is now, not when the connect started.
    // SAFETY: helper without preconditions.
    owner.ktime_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    emit_failure(key, &owner, 0);
    Ok(())
}
