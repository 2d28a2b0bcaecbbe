//! `connect()` as a syscall: its arguments at entry, its result at exit. Catches every failure the
//! syscall returns itself (unix sockets: ENOENT, EACCES, ECONNREFUSED, EAGAIN; EADDRNOTAVAIL,
//! ENETUNREACH ...). TCP failures learnt after the handshake started are left to `sock_state`.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_buf},
    macros::tracepoint,
    programs::TracePointContext,
};
use probe_common::{
    AF_INET, AF_INET6, AF_UNIX, CNT_CONNECT_FAILED, CNT_CONNECT_INPROGRESS, CNT_CONNECT_OK,
    CNT_LOST_READ, ConnectArgs, ECONNREFUSED, ETIMEDOUT, ProbeError, SOURCE_SYSCALL, SYSCALL_ARG0,
    SYSCALL_RET, TCP_SEEN_SYN_SENT, UNIX_PATH_MAX,
};

use crate::{
    common::{
        GW_CONNECTS, count, count_errno, current_is_self, current_owner, finish, off, sys_field,
    },
    fold::{emit_failure, scratch_key},
};

const EINPROGRESS: u32 = 115;
const EALREADY: u32 = 114;
const EISCONN: u32 = 106;

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    finish(try_sys_enter_connect(&ctx))
}

fn try_sys_enter_connect(ctx: &TracePointContext) -> Result<(), ProbeError> {
    const ARG0: usize = SYSCALL_ARG0 as usize;
    let fd = sys_field::<ARG0>(ctx, off!(enter_connect_fd))?;
    let uaddr = sys_field::<{ ARG0 + 8 }>(ctx, off!(enter_connect_addr))?;
    let addrlen = sys_field::<{ ARG0 + 16 }>(ctx, off!(enter_connect_addrlen))?;
    let tid = bpf_get_current_pid_tgid() as u32;
    let args = ConnectArgs {
        uaddr,
        addrlen: addrlen as u32,
        fd: fd as u32,
        tcp_seen: 0,
        pad: 0,
    };
    GW_CONNECTS
        .insert(&tid, &args, 0)
        .map_err(|_| ProbeError::MapFull)
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    finish(try_sys_exit_connect(&ctx))
}

fn try_sys_exit_connect(ctx: &TracePointContext) -> Result<(), ProbeError> {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let args = unsafe { GW_CONNECTS.get(&tid) }.copied();
    let _ = GW_CONNECTS.remove(&tid);
    let ret = sys_field::<{ SYSCALL_RET as usize }>(ctx, off!(exit_connect_ret))? as i64;
    if ret == 0 {
        count(CNT_CONNECT_OK);
        count_errno(0, 0);
        return Ok(());
    }
    let errno = (-ret) as u32;
    if errno == EINPROGRESS {
        count(CNT_CONNECT_INPROGRESS);
        return Ok(());
    }
    if errno == EALREADY || errno == EISCONN {
        return Ok(());
    }
    count(CNT_CONNECT_FAILED);
    count_errno(0, errno);
    let args = args.ok_or(ProbeError::EntryMissing)?;
    if current_is_self() {
        return Ok(());
    }
    let uaddr = args.uaddr as *const u8;
    // SAFETY: user pointer given to connect(); the helper fails cleanly on a bad address.
    let family =
        unsafe { bpf_probe_read_user::<u16>(uaddr.cast()) }.map_err(|_| ProbeError::UserRead)?;
    let tcp_like = family == AF_INET || family == AF_INET6;
    let reported_by_sock_state = match args.tcp_seen {
        // The handshake started and failed (RST, timeout, ICMP): sock_state reported it, with the
        // same errno, or the connect goes on in the background (EINTR).
        TCP_SEEN_SYN_SENT => true,
        // No handshake in this call. ECONNREFUSED/ETIMEDOUT then come from connect() called again
        // on a socket whose failure sock_state already reported; anything else (EHOSTUNREACH from
        // an `unreachable` route, ENETUNREACH, ...) failed in routing, before the handshake.
        0 => errno == ECONNREFUSED || errno == ETIMEDOUT,
        _ => false,
    };
    if tcp_like && reported_by_sock_state {
        return Ok(());
    }
    let owner = current_owner();
    let key = scratch_key()?;
    key.tgid = owner.pid;
    key.errno = errno as i32;
    key.family = family;
    key.source = SOURCE_SYSCALL;
    if family == AF_INET {
        // SAFETY: user memory read through the fallible helper; the pointer is only offset.
        if let Ok(port) = unsafe { bpf_probe_read_user::<u16>(uaddr.add(2).cast()) } {
            key.port = u16::from_be(port);
        }
        // SAFETY: as above, into a fixed-size destination inside the key.
        if unsafe { bpf_probe_read_user_buf(uaddr.add(4), &mut key.addr[..4]) }.is_err() {
            count(CNT_LOST_READ);
        }
    } else if family == AF_INET6 {
        // SAFETY: as above.
        if let Ok(port) = unsafe { bpf_probe_read_user::<u16>(uaddr.add(2).cast()) } {
            key.port = u16::from_be(port);
        }
        // SAFETY: as above, into a fixed-size destination inside the key.
        if unsafe { bpf_probe_read_user_buf(uaddr.add(8), &mut key.addr) }.is_err() {
            count(CNT_LOST_READ);
        }
    } else if family == AF_UNIX {
        let len = (args.addrlen as usize).saturating_sub(2);
        let len = len.min(UNIX_PATH_MAX);
        // Only the `addrlen` bytes the caller passed: an address sized to its path (SUN_LEN)
        // can end right before an unmapped page.
        // SAFETY: as above, at most UNIX_PATH_MAX bytes into the key's path.
        if unsafe { bpf_probe_read_user_buf(uaddr.add(2), &mut key.path[..len]) }.is_ok() {
            key.path_len = len as u8;
        } else {
            count(CNT_LOST_READ);
        }
    }
    emit_failure(key, &owner, u64::from(args.fd));
    Ok(())
}
