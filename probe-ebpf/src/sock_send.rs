//! The writes of processes on their tracked TCP connections (`sock:sock_send_length`, raw
//! tracepoint: fires in the writer's task for every socket of every family; an untracked socket
//! costs one map lookup). See `conns`.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::conns;

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct sock *sk, int ret, int flags)
    let sk: u64 = ctx.arg(0);
    let ret = ctx.arg::<u64>(1) as i32;
    conns::on_send(sk, ret);
    0
}
