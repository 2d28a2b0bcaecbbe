//! OOM kills (`oom:mark_victim`): the victim's pid, comm and memory at the time of the kill. The
//! current task is the one whose allocation triggered the OOM killer.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes, macros::tracepoint, programs::TracePointContext,
};
use probe_common::{CNT_OOM, KIND_OOM_KILL, ProbeError};

use crate::common::{count, ctx_read, current_owner, emit, finish, off};

#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    finish(try_mark_victim(&ctx))
}

fn try_mark_victim(ctx: &TracePointContext) -> Result<(), ProbeError> {
    count(CNT_OOM);
    // SAFETY: offsets from tracefs; fallible kernel reads.
    let (pid, total_vm, anon, file, shmem, comm_loc) = unsafe {
        (
            ctx_read::<i32>(ctx, off!(oom_pid))?,
            ctx.read_at::<u64>(off!(oom_total_vm)).unwrap_or(0),
            ctx.read_at::<u64>(off!(oom_anon_rss)).unwrap_or(0),
            ctx.read_at::<u64>(off!(oom_file_rss)).unwrap_or(0),
            ctx.read_at::<u64>(off!(oom_shmem_rss)).unwrap_or(0),
            ctx.read_at::<u32>(off!(oom_comm)).unwrap_or(0),
        )
    };
    let ctx_ptr = aya_ebpf::EbpfContext::as_ptr(ctx) as usize;
    emit(KIND_OOM_KILL, &current_owner(), |ev| {
        ev.target_pid = pid as u32;
        ev.aux = [total_vm, anon, file, shmem];
        // `__data_loc char[]`: low 16 bits offset from the record start, high 16 bits length.
        let src = (ctx_ptr + (comm_loc & 0xffff) as usize) as *const u8;
        // SAFETY: reads a NUL-terminated string of the tracepoint record into a fixed buffer.
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut ev.target_comm) };
    });
    Ok(())
}
