//! Signals that end or stop workers (`signal:signal_generate`): the sender is the current task (the
//! kernel itself for faults and OOM kills), the target is in the tracepoint record.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use probe_common::{CNT_SIGNALS, KIND_SIGNAL, ProbeError};

use crate::common::{count, ctx_read, current_owner, emit, finish, off};

/// SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGABRT, SIGBUS, SIGFPE, SIGKILL, SIGSEGV, SIGTERM, SIGSYS.
const WATCHED: u64 = (1 << 1)
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 6)
    | (1 << 7)
    | (1 << 8)
    | (1 << 9)
    | (1 << 11)
    | (1 << 15)
    | (1 << 31);

#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    finish(try_signal_generate(&ctx))
}

fn try_signal_generate(ctx: &TracePointContext) -> Result<(), ProbeError> {
    // SAFETY: offset from tracefs; the field is an int.
    let sig = unsafe { ctx_read::<i32>(ctx, off!(sig_sig)) }?;
    if !(1..64).contains(&sig) || WATCHED & (1u64 << sig) == 0 {
        return Ok(());
    }
    count(CNT_SIGNALS);
    // SAFETY: offsets from tracefs; fallible kernel reads.
    let (code, target, group, result, target_comm) = unsafe {
        (
            ctx.read_at::<i32>(off!(sig_code)).unwrap_or(0),
            ctx.read_at::<i32>(off!(sig_pid)).unwrap_or(0),
            ctx.read_at::<i32>(off!(sig_group)).unwrap_or(0),
            ctx.read_at::<i32>(off!(sig_result)).unwrap_or(0),
            ctx.read_at::<[u8; 16]>(off!(sig_comm)).unwrap_or([0; 16]),
        )
    };
    emit(KIND_SIGNAL, &current_owner(), |ev| {
        ev.sig = sig;
        ev.target_pid = target as u32;
        ev.target_comm = target_comm;
        ev.aux = [code as u64, group as u64, result as u64, 0];
    });
    Ok(())
}
