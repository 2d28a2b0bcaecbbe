//! Successful execs (`sched:sched_process_exec`): who became which program, so that userspace can
//! tell a boot crash loop (exec, exit 3/4, exec ...) from a long-lived worker. A process that
//! becomes a proxy (its new comm is one of the proxy names) is watched from here on.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes, macros::tracepoint, programs::TracePointContext,
};
use probe_common::{CNT_EXECS, KIND_EXEC, ProbeError};

use crate::common::{GW_PROXY_NAMES, count, ctx_read, current_owner, emit, finish, off, watch};

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    finish(try_sched_process_exec(&ctx))
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Result<(), ProbeError> {
    count(CNT_EXECS);
    // SAFETY: offset from tracefs; a `__data_loc` field is a u32.
    let loc = unsafe { ctx_read::<u32>(ctx, off!(exec_filename)) }?;
    let ctx_ptr = aya_ebpf::EbpfContext::as_ptr(ctx) as usize;
    let owner = current_owner();
    // SAFETY: the value is only tested for presence.
    if unsafe { GW_PROXY_NAMES.get(&owner.comm) }.is_some() {
        watch(owner.pid);
    }
    emit(KIND_EXEC, &owner, |ev| {
        let src = (ctx_ptr + (loc & 0xffff) as usize) as *const u8;
        // SAFETY: reads a NUL-terminated string of the tracepoint record into a fixed buffer.
        if let Ok(s) = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut ev.data) } {
            ev.data_len = s.len() as u16;
        }
    });
    Ok(())
}

/// `execve`/`execveat` that fail: the filename pointer is saved at entry (per thread), the failure
/// is remembered at exit, and reported by `exit` only if the process ends without a successful
/// exec (a supervisor that could not start the app), not for every step of a PATH search.
mod failed {
    use aya_ebpf::{
        helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user_str_bytes},
        macros::tracepoint,
        programs::TracePointContext,
    };
    use probe_common::{CNT_EXEC_FAILED, CNT_LOST_MAP_FULL, DATA_LEN, ExecFail, ProbeError};

    use crate::common::{GW_EXEC_FAIL, GW_EXECS, count, ctx_read, finish, off};

    #[tracepoint]
    pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
        finish(save(&ctx, off!(enter_execve_filename)))
    }

    #[tracepoint]
    pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
        finish(save(&ctx, off!(enter_execveat_filename)))
    }

    #[tracepoint]
    pub fn sys_exit_execve(ctx: TracePointContext) -> u32 {
        finish(remember(&ctx, off!(exit_execve_ret)))
    }

    #[tracepoint]
    pub fn sys_exit_execveat(ctx: TracePointContext) -> u32 {
        finish(remember(&ctx, off!(exit_execveat_ret)))
    }

    fn save(ctx: &TracePointContext, filename_off: usize) -> Result<(), ProbeError> {
        // SAFETY: offset from tracefs; the field is a pointer.
        let ptr = unsafe { ctx_read::<u64>(ctx, filename_off) }?;
        let tid = bpf_get_current_pid_tgid() as u32;
        GW_EXECS
            .insert(&tid, &ptr, 0)
            .map_err(|_| ProbeError::MapFull)
    }

    fn remember(ctx: &TracePointContext, ret_off: usize) -> Result<(), ProbeError> {
        let tid = bpf_get_current_pid_tgid() as u32;
        // SAFETY: value copied before removal.
        let ptr = unsafe { GW_EXECS.get(&tid) }.copied();
        let _ = GW_EXECS.remove(&tid);
        // SAFETY: offset from tracefs; the field is a long.
        let ret = unsafe { ctx_read::<i64>(ctx, ret_off) }?;
        if ret >= 0 {
            let _ = GW_EXEC_FAIL.remove(&tid);
            return Ok(());
        }
        count(CNT_EXEC_FAILED);
        let ptr = ptr.ok_or(ProbeError::EntryMissing)?;
        let mut fail = ExecFail {
            errno: (-ret) as i32,
            len: 0,
            path: [0; DATA_LEN],
        };
        // SAFETY: user pointer the caller passed to execve; the old image is still mapped
        // because the exec failed; fallible helper into a fixed buffer.
        if let Ok(s) = unsafe { bpf_probe_read_user_str_bytes(ptr as *const u8, &mut fail.path) } {
            fail.len = s.len() as u32;
        }
        if GW_EXEC_FAIL.insert(&tid, &fail, 0).is_err() {
            count(CNT_LOST_MAP_FULL);
        }
        Ok(())
    }
}
