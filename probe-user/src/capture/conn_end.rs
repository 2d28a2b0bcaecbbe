//! Connection ends: the TCP connections processes open, tracked in the kernel from
//! `ESTABLISHED` (the `inet_sock_set_state` program) with their traffic (`sock_send_length`,
//! `sock_recv_length` raw tracepoints); one that ends before any byte of the answer to its last
//! request becomes a `conn_end` event ([`probe_common::KIND_CONN_END`]). Healthy connections
//! never leave the kernel.
//!
//! What is reachable, measured with bpftrace on kernel 6.18 (bench/README.md, "Connection
//! ends"): on loopback the peer's close is processed in the closing task (its pid, comm and
//! `PF_EXITING` from `task_struct.flags`), the FIN as the proxy socket's `ESTABLISHED ->
//! CLOSE_WAIT`, the RST (a close with the request unread) as `-> CLOSE` with `sk_err`
//! ECONNRESET; the proxy's read of 0 or -ECONNRESET runs in the proxy. `tcp_sock` gives the
//! bytes received and acked. Not reachable here: the peer task of a remote peer (softirq), and
//! unix sockets (no tracepoint on the unix connect or close paths sees the socket; only the
//! reader's `sock_recv_length` EOF).
use aya::{Ebpf, programs::RawTracePoint};
use probe_common::{Offsets, PROG_SOCK_RECV, PROG_SOCK_SEND};

use super::{CaptureError, btf::KernelBtf};

/// The offsets the connection-end programs read, and whether they can run here: both
/// tracepoints exist and BTF has every member. Otherwise `track_conns` stays 0 and the
/// programs are not attached (said once, at info level).
pub fn offsets(tfs: &std::path::Path, kbtf: &KernelBtf, o: &mut Offsets) {
    let tracepoints = ["sock_send_length", "sock_recv_length"]
        .iter()
        .all(|n| super::tracefs::Format::read(tfs, "sock", n).is_ok());
    let members = (
        kbtf.member_offset("task_struct", "flags"),
        kbtf.member_offset("tcp_sock", "bytes_received"),
        kbtf.member_offset("tcp_sock", "bytes_acked"),
    );
    let (true, (Ok(flags), Ok(received), Ok(acked))) = (tracepoints, members) else {
        log::info!(
            "sock:sock_send_length/sock_recv_length or their BTF members are missing: broken upstream connections are not tracked"
        );
        return;
    };
    o.task_flags = flags;
    o.tcp_bytes_received = received;
    o.tcp_bytes_acked = acked;
    o.track_conns = 1;
}

/// Attaches the send and receive programs (raw tracepoints).
pub fn attach(ebpf: &mut Ebpf) -> Result<(), CaptureError> {
    for (prog, tp) in [
        (PROG_SOCK_SEND, "sock_send_length"),
        (PROG_SOCK_RECV, "sock_recv_length"),
    ] {
        let err =
            |e: &dyn std::fmt::Display| CaptureError::Attach(format!("sock:{tp}"), e.to_string());
        let p: &mut RawTracePoint = ebpf
            .program_mut(prog)
            .ok_or_else(|| err(&"program missing from the object"))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| err(&e))?;
        p.load().map_err(|e| err(&e))?;
        p.attach(tp).map_err(|e| err(&e))?;
    }
    Ok(())
}
