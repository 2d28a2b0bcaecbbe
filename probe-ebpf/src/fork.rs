//! Process creation (`sched:sched_process_fork`, raw tracepoint, in the parent's task): a
//! watched process's new child process is watched too, so a proxy master's new workers are
//! covered from their first instruction. Costs one lookup per fork on the host; threads share
//! their process's entry.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};

use crate::common::{off, watch, watched};

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *parent, struct task_struct *child)
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !watched(parent) {
        return 0;
    }
    let child: u64 = ctx.arg(1);
    // SAFETY: `child` is the task the tracepoint passes, alive while it runs; the offset comes
    // from this kernel's BTF; the read is the fallible helper.
    let Ok(tgid) =
        (unsafe { bpf_probe_read_kernel::<i32>((child as usize + off!(task_tgid)) as *const i32) })
    else {
        return 0;
    };
    let tgid = tgid as u32;
    if tgid != parent && tgid != 0 {
        watch(tgid);
    }
    0
}
