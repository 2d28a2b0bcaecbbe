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
    CNT_LOST_MAP_FULL, CNT_LOST_READ, ConnectArgs, KIND_CONNECT_FAILED, SOURCE_SYSCALL,
};

use crate::common::{GW_CONNECTS, count, count_errno, current_is_self, current_owner, emit, off};

const EINPROGRESS: u32 = 115;
const EALREADY: u32 = 114;
const EISCONN: u32 = 106;
const ECONNREFUSED: u32 = 111;
const ETIMEDOUT: u32 = 110;
const EHOSTUNREACH: u32 = 113;
const UNIX_PATH_MAX: usize = 108;

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    match try_sys_enter_connect(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

fn try_sys_enter_connect(ctx: &TracePointContext) -> Result<(), ()> {
    // SAFETY: offsets come from this kernel's tracefs format file; reads are bounds-checked helpers.
    let (fd, uaddr, addrlen) = unsafe {
        (
            ctx.read_at::<u64>(off!(enter_connect_fd)).map_err(|_| ())?,
            ctx.read_at::<u64>(off!(enter_connect_addr)).map_err(|_| ())?,
            ctx.read_at::<u64>(off!(enter_connect_addrlen)).map_err(|_| ())?,
        )
    };
    let tid = bpf_get_current_pid_tgid() as u32;
    let args = ConnectArgs { uaddr, addrlen: addrlen as u32, fd: fd as u32 };
    if GW_CONNECTS.insert(&tid, &args, 0).is_err() {
        count(CNT_LOST_MAP_FULL);
        return Err(());
    }
    Ok(())
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    match try_sys_exit_connect(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

fn try_sys_exit_connect(ctx: &TracePointContext) -> Result<(), ()> {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let args = unsafe { GW_CONNECTS.get(&tid) }.copied();
    let _ = GW_CONNECTS.remove(&tid);
    // SAFETY: offset from tracefs.
    let ret = unsafe { ctx.read_at::<i64>(off!(exit_connect_ret)) }.map_err(|_| ())?;
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
    let Some(args) = args else { return Err(()) };
    if current_is_self() {
        return Ok(());
    }
    let uaddr = args.uaddr as *const u8;
    // SAFETY: user pointer given to connect(); the helper fails cleanly on a bad address.
    let Ok(family) = (unsafe { bpf_probe_read_user::<u16>(uaddr.cast()) }) else {
        count(CNT_LOST_READ);
        return Err(());
    };
    let tcp_like = family == AF_INET || family == AF_INET6;
    if tcp_like && (errno == ECONNREFUSED || errno == ETIMEDOUT || errno == EHOSTUNREACH) {
        // The TCP state machine reports these (sock_state), with the same errno: no duplicate.
        return Ok(());
    }
    let owner = current_owner();
    emit(KIND_CONNECT_FAILED, &owner, |ev| {
        ev.errno = errno as i32;
        ev.family = family;
        ev.source = SOURCE_SYSCALL;
        ev.aux[0] = u64::from(args.fd);
        // SAFETY (all reads below): user memory read through the fallible helper, into fixed-size
        // destinations inside the event.
        if family == AF_INET {
            if let Ok(port) = unsafe { bpf_probe_read_user::<u16>(uaddr.add(2).cast()) } {
                ev.port = u16::from_be(port);
            }
            if unsafe { bpf_probe_read_user_buf(uaddr.add(4), &mut ev.addr[..4]) }.is_err() {
                count(CNT_LOST_READ);
            }
        } else if family == AF_INET6 {
            if let Ok(port) = unsafe { bpf_probe_read_user::<u16>(uaddr.add(2).cast()) } {
                ev.port = u16::from_be(port);
            }
            if unsafe { bpf_probe_read_user_buf(uaddr.add(8), &mut ev.addr) }.is_err() {
                count(CNT_LOST_READ);
            }
        } else if family == AF_UNIX {
            let len = (args.addrlen as usize).saturating_sub(2);
            ev.data_len = if len > UNIX_PATH_MAX { UNIX_PATH_MAX as u16 } else { len as u16 };
            if unsafe { bpf_probe_read_user_buf(uaddr.add(2), &mut ev.data[..UNIX_PATH_MAX]) }
                .is_err()
            {
                count(CNT_LOST_READ);
            }
        }
    });
    Ok(())
}
