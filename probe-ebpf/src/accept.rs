//! `accept()`/`accept4()` results: successes counted, failures other than "no connection yet"
//! (EMFILE, ENFILE, ENOBUFS, ...) reported.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use probe_common::{
    CNT_ACCEPT_FAILED, CNT_ACCEPT_OK, ERRNO_SLOTS, KIND_ACCEPT_FAILED, ProbeError, SYSCALL_RET,
};

use crate::common::{
    count, count_errno, current_is_self, current_owner, emit, finish, off, sys_field,
};

const EAGAIN: u32 = 11;
const EINTR: u32 = 4;

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    finish(try_accept_exit(&ctx, off!(exit_accept_ret)))
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    finish(try_accept_exit(&ctx, off!(exit_accept4_ret)))
}

fn try_accept_exit(ctx: &TracePointContext, ret_off: usize) -> Result<(), ProbeError> {
    let ret = sys_field::<{ SYSCALL_RET as usize }>(ctx, ret_off)? as i64;
    if ret >= 0 {
        count(CNT_ACCEPT_OK);
        count_errno(ERRNO_SLOTS, 0);
        return Ok(());
    }
    let errno = (-ret) as u32;
    if errno == EAGAIN || errno == EINTR {
        return Ok(());
    }
    count(CNT_ACCEPT_FAILED);
    count_errno(ERRNO_SLOTS, errno);
    if current_is_self() {
        return Ok(());
    }
    emit(KIND_ACCEPT_FAILED, &current_owner(), |ev| {
        ev.errno = errno as i32;
    });
    Ok(())
}
