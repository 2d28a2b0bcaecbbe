//! The reads of processes on their tracked TCP connections (`sock:sock_recv_length`, raw
//! tracepoint, in the reader's task): where a connection that ended before its answer shows
//! (a read of 0 or -ECONNRESET). See `conns`.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::conns;

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_length(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct sock *sk, int ret, int flags)
    let sk: u64 = ctx.arg(0);
    let ret = ctx.arg::<u64>(1) as i32;
    let flags = ctx.arg::<u64>(2) as i32;
    conns::on_recv(sk, ret, flags);
    0
}
