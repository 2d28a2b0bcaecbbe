//! Successful execs (`sched:sched_process_exec`): who became which program, so that userspace can
//! tell a boot crash loop (exec, exit 3/4, exec ...) from a long-lived worker.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes, macros::tracepoint, programs::TracePointContext,
};
use probe_common::{CNT_EXECS, KIND_EXEC};

use crate::common::{count, current_owner, emit, off};

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    match try_sched_process_exec(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Result<(), ()> {
    count(CNT_EXECS);
    // SAFETY: offset from tracefs.
    let loc = unsafe { ctx.read_at::<u32>(off!(exec_filename)) }.map_err(|_| ())?;
    let ctx_ptr = aya_ebpf::EbpfContext::as_ptr(ctx) as usize;
    emit(KIND_EXEC, &current_owner(), |ev| {
        let src = (ctx_ptr + (loc & 0xffff) as usize) as *const u8;
        // SAFETY: reads a NUL-terminated string of the tracepoint record into a fixed buffer.
        if let Ok(s) = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut ev.data) } {
            ev.data_len = s.len() as u16;
        }
    });
    Ok(())
}
