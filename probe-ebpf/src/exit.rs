//! Process exits (`sched:sched_process_exit`), once per process: when its last thread exits. The
//! exit status, terminating signal and core-dump flag come from `task_struct.exit_code` (offset from
//! BTF), since the classic tracepoint does not carry them. A watched process stops being
//! watched here (every entry of the watched map leaves it at its process's exit).
use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    macros::tracepoint,
    programs::TracePointContext,
};
use probe_common::{CNT_EXITS, KIND_EXEC_FAILED, KIND_PROCESS_EXIT, ProbeError};

use crate::common::{
    GW_EXEC_FAIL, GW_WATCHED, count, ctx_read, current_owner, emit, finish, off, watched,
};

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    finish(try_sched_process_exit(&ctx))
}

fn try_sched_process_exit(ctx: &TracePointContext) -> Result<(), ProbeError> {
    let group_dead_off = off!(exit_group_dead);
    if group_dead_off != u32::MAX as usize {
        // SAFETY: offset from tracefs; the field is a bool.
        let group_dead = unsafe { ctx_read::<u8>(ctx, group_dead_off) }?;
        if group_dead == 0 {
            return Ok(());
        }
    }
    count(CNT_EXITS);
    let owner = current_owner();
    // Without `group_dead` every thread's exit gets here: the leader's then stands for the
    // process's end.
    if (group_dead_off != u32::MAX as usize || owner.pid == owner.tid) && watched(owner.pid) {
        let _ = GW_WATCHED.remove(&owner.pid);
    }
    // A process that failed to exec and gave up: report its last failed exec first.
    // SAFETY: value copied before removal.
    if let Some(fail) = unsafe { GW_EXEC_FAIL.get(&owner.tid) }.copied() {
        let _ = GW_EXEC_FAIL.remove(&owner.tid);
        emit(KIND_EXEC_FAILED, &owner, |ev| {
            ev.errno = fail.errno;
            ev.data = fail.path;
            ev.data_len = fail.len as u16;
        });
    }
    // SAFETY: the current task is alive while its exit tracepoint runs; `exit_code`'s offset comes
    // from BTF and the read is a fallible helper.
    let exit_code = unsafe {
        let task = bpf_get_current_task() as usize;
        bpf_probe_read_kernel::<i32>((task + off!(task_exit_code)) as *const i32)
    }
    .unwrap_or(0);
    emit(KIND_PROCESS_EXIT, &owner, |ev| ev.exit_code = exit_code);
    Ok(())
}
