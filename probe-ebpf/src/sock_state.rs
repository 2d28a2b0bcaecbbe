//! TCP connects seen on the socket state machine (`sock:inet_sock_set_state`), no syscall hook
//! needed: `CLOSE -> SYN_SENT` remembers who connects (always in that process's context; only
//! watched processes, the proxies and their children, are remembered),
//! `SYN_SENT -> ESTABLISHED` forgets it, `SYN_SENT -> CLOSE` reports the failure with the socket's
//! `sk_err` (set before the state change: ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ...), or, when
//! there is none, a connect the process itself abandoned (its own connect timeout).
//!
//! With the connection-end programs attached, `SYN_SENT -> ESTABLISHED` also enters the
//! connection into `conns` (owner and target), and the transitions out of `ESTABLISHED` and
//! `CLOSE_WAIT` tell it the peer's FIN or RST, or the owner's own close.
//!
//! Two entry points, one logic: the raw tracepoint (preferred: the kernel calls it with the
//! tracepoint's arguments, without building the classic record first, so the state changes of
//! healthy connections cost a few instructions) and the classic tracepoint (fallback). The raw
//! one reads the socket's fields at BTF offsets, the classic one from its record.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use probe_common::{
    AF_INET, CNT_LOST_MAP_FULL, CNT_TCP_ABANDONED, CNT_TCP_ESTABLISHED, CNT_TCP_FAILED, ETIMEDOUT,
    Owner, ProbeError, SOURCE_TCP_ABANDONED, SOURCE_TCP_STATE, TCP_SEEN_CLOSED_IN_CALL,
    TCP_SEEN_SYN_SENT,
};

use crate::{
    common::{
        GW_CONNECTS, GW_TCP_OWNER, count, count_errno, ctx_read, current_is_self, current_owner,
        finish, off, watched,
    },
    conns,
    fold::{emit_failure, scratch_key},
    sock_addr,
};

const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const TCP_CLOSE_WAIT: i32 = 8;

/// Where the failed connect went, read only when it failed.
struct Peer {
    family: u16,
    /// Local port (0: none was ever bound), host order.
    sport: u16,
    /// Remote port, host order.
    dport: u16,
    addr: [u8; 16],
}

/// The transitions that matter: a connect starting, anything leaving `SYN_SENT`, and (when
/// connections are tracked) anything leaving `ESTABLISHED` or `CLOSE_WAIT`.
#[inline(always)]
fn interesting(old: i32, new: i32) -> bool {
    (old == TCP_CLOSE && new == TCP_SYN_SENT)
        || old == TCP_SYN_SENT
        || ((old == TCP_ESTABLISHED || old == TCP_CLOSE_WAIT) && conns::enabled())
}

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state_raw(ctx: RawTracePointContext) -> i32 {
    // 0 or 1: the cast cannot wrap.
    finish(try_raw(&ctx)) as i32
}

/// Reads a field of the socket at `sk + offset`.
#[inline(always)]
fn sk_read<T>(sk: u64, offset: usize) -> Result<T, ProbeError> {
    // SAFETY: `sk` is the live `struct sock` the tracepoint passes; the offset comes from this
    // kernel's BTF; the read is the fallible helper.
    unsafe { bpf_probe_read_kernel::<T>((sk as usize + offset) as *const T) }
        .map_err(|_| ProbeError::KernelRead)
}

fn try_raw(ctx: &RawTracePointContext) -> Result<(), ProbeError> {
    // TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
    let sk: u64 = ctx.arg(0);
    let old = ctx.arg::<u64>(1) as i32;
    let new = ctx.arg::<u64>(2) as i32;
    if !interesting(old, new) {
        return Ok(());
    }
    if old == TCP_ESTABLISHED || old == TCP_CLOSE_WAIT {
        conns::on_state(sk, old, new, || {
            sk_read::<i32>(sk, off!(sock_sk_err)).unwrap_or(0)
        });
        return Ok(());
    }
    if sk_read::<u16>(sk, off!(sk_protocol))? != IPPROTO_TCP {
        return Ok(());
    }
    on_transition(sk, old, new, || {
        let family = sk_read::<u16>(sk, off!(sk_family))?;
        let mut addr = [0u8; 16];
        if family == AF_INET {
            addr[..4].copy_from_slice(&sk_read::<[u8; 4]>(sk, off!(sk_daddr))?);
        } else {
            addr = sk_read::<[u8; 16]>(sk, off!(sk_v6_daddr))?;
        }
        Ok(Peer {
            family,
            sport: u16::from_be(sk_read::<u16>(sk, off!(sk_sport))?),
            dport: u16::from_be(sk_read::<u16>(sk, off!(sk_dport))?),
            addr,
        })
    })
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    finish(try_classic(&ctx))
}

fn try_classic(ctx: &TracePointContext) -> Result<(), ProbeError> {
    // SAFETY: offsets and types from tracefs; fallible reads of the record.
    let (protocol, old, new) = unsafe {
        (
            ctx_read::<u16>(ctx, off!(ss_protocol))?,
            ctx_read::<i32>(ctx, off!(ss_oldstate))?,
            ctx_read::<i32>(ctx, off!(ss_newstate))?,
        )
    };
    if protocol != IPPROTO_TCP || !interesting(old, new) {
        return Ok(());
    }
    // SAFETY: as above.
    let skaddr = unsafe { ctx_read::<u64>(ctx, off!(ss_skaddr)) }?;
    on_transition(skaddr, old, new, || {
        // SAFETY: as above; fixed-size reads.
        unsafe {
            let family = ctx_read::<u16>(ctx, off!(ss_family))?;
            let mut addr = [0u8; 16];
            if family == AF_INET {
                addr[..4].copy_from_slice(&ctx_read::<[u8; 4]>(ctx, off!(ss_daddr))?);
            } else {
                addr = ctx_read::<[u8; 16]>(ctx, off!(ss_daddr_v6))?;
            }
            Ok(Peer {
                family,
                sport: ctx_read::<u16>(ctx, off!(ss_sport))?,
                dport: ctx_read::<u16>(ctx, off!(ss_dport))?,
                addr,
            })
        }
    })
}

/// One interesting transition of a TCP socket at `skaddr`; `peer` reads where it connects.
#[inline(always)]
fn on_transition(
    skaddr: u64,
    old: i32,
    new: i32,
    peer: impl FnOnce() -> Result<Peer, ProbeError>,
) -> Result<(), ProbeError> {
    if old == TCP_ESTABLISHED || old == TCP_CLOSE_WAIT {
        // The classic program's way here (the raw one calls `conns` before the protocol read).
        conns::on_state(skaddr, old, new, || {
            sk_read::<i32>(skaddr, off!(sock_sk_err)).unwrap_or(0)
        });
        return Ok(());
    }
    if old == TCP_CLOSE {
        // Always inside connect() (the syscall hook's entry, when attached, is in flight).
        let pid_tgid = bpf_get_current_pid_tgid();
        if let Some(args) = GW_CONNECTS.get_ptr_mut(&(pid_tgid as u32)) {
            // SAFETY: a live value of the map; only this thread's programs touch its entry.
            unsafe { (*args).tcp_seen = TCP_SEEN_SYN_SENT };
        }
        // Only watched processes' connects (proxies and their children) are symptoms: every
        // other connect of the host costs these lookups and no write.
        if !watched((pid_tgid >> 32) as u32) || current_is_self() {
            return Ok(());
        }
        if GW_TCP_OWNER.insert(&skaddr, &current_owner(), 0).is_err() {
            count(CNT_LOST_MAP_FULL);
        }
        return Ok(());
    }
    // A zeroed owner plus a flag, not an Option: LLVM spills an Option's undefined payload on
    // the `None` path, and the verifier rejects reading the uninitialised register.
    let mut owner = Owner::default();
    let mut have_owner = false;
    // SAFETY: value copied before removal.
    if let Some(o) = unsafe { GW_TCP_OWNER.get(&skaddr) } {
        owner = *o;
        have_owner = true;
    }
    if have_owner {
        // A delete takes the bucket's lock: only for an entry that is there.
        let _ = GW_TCP_OWNER.remove(&skaddr);
    }
    if new == TCP_ESTABLISHED {
        count(CNT_TCP_ESTABLISHED);
        if have_owner && conns::enabled() {
            let p = peer()?;
            conns::track(skaddr, &owner, p.family, p.dport, p.addr);
        }
        return Ok(());
    }
    if new != TCP_CLOSE {
        return Ok(());
    }
    let sk_err = sk_read::<i32>(skaddr, off!(sock_sk_err)).unwrap_or(0);
    if sk_err == 0 {
        // Closed without a socket error by the thread whose connect() is still in flight: that
        // connect() failed after entering SYN_SENT (no free local port, no route for the chosen
        // port); the syscall hook reports its errno.
        let tid = bpf_get_current_pid_tgid() as u32;
        if let Some(args) = GW_CONNECTS.get_ptr_mut(&tid)
            && (!have_owner || owner.tid == tid)
        {
            // SAFETY: the map value lives while we hold the pointer (no deletion in between).
            unsafe {
                if (*args).tcp_seen == TCP_SEEN_SYN_SENT {
                    (*args).tcp_seen = TCP_SEEN_CLOSED_IN_CALL;
                    return Ok(());
                }
            }
        }
    }
    if !have_owner {
        // Not a watched process's connect (a full owner map was counted at the insert).
        return Ok(());
    }
    let peer = peer()?;
    // No local port was ever bound: connect() failed before the handshake (EADDRNOTAVAIL), and
    // the syscall hook reports it; while it is detached (--hooks auto), this program does.
    let no_port = sk_err == 0 && peer.sport == 0;
    if no_port && sock_addr::syscall_hooked() {
        return Ok(());
    }
    count(CNT_TCP_FAILED);
    let (errno, source) = if sk_err > 0 {
        (sk_err, SOURCE_TCP_STATE)
    } else if no_port {
        (sock_addr::EADDRNOTAVAIL, SOURCE_TCP_STATE)
    } else {
        count(CNT_TCP_ABANDONED);
        (ETIMEDOUT as i32, SOURCE_TCP_ABANDONED)
    };
    count_errno(0, errno as u32);
    let key = scratch_key()?;
    key.tgid = owner.pid;
    key.errno = errno;
    key.family = peer.family;
    key.port = peer.dport;
    key.source = source;
    key.addr = peer.addr;
    // The failure time is now, not when the connect started.
    // SAFETY: helper without preconditions.
    owner.ktime_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    emit_failure(key, &owner, 0);
    Ok(())
}
