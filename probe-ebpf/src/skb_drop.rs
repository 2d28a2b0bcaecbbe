//! Packets netfilter refused (`skb:kfree_skb`, raw tracepoint): a `reject with tcp reset` or a
//! `drop` rule on a local connect's SYN. The kernel frees such a SYN with the drop reason
//! `NETFILTER_DROP` in the connecting task's context (loopback delivers it inside `connect()`;
//! an OUTPUT-chain rule runs in the sender), which tells "a rule refused it" apart from "nothing
//! listens" (`NO_SOCKET`) without kprobes.
//!
//! Cheap on the healthy path: every freed packet compares one argument with a load-time global
//! and leaves; only a netfilter drop of a TCP SYN that a local task sent is read further, and
//! identical drops (one process, one target) are folded to one event per window.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{map, raw_tracepoint},
    maps::LruHashMap,
    programs::RawTracePointContext,
};
use probe_common::{
    AF_INET, AF_INET6, CNT_NETFILTER_DROP, FOLD_WINDOW_NS, KIND_NETFILTER_DROP, NF_FOLD_MAX,
    ProbeError,
};

use crate::common::{count, current_is_self, current_owner, emit, finish, off};

/// (tgid, family, port, address) of a drop -> (last emit time, drops since).
#[map]
static GW_NF_FOLD: LruHashMap<NfKey, [u64; 2]> = LruHashMap::with_max_entries(NF_FOLD_MAX, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct NfKey {
    tgid: u32,
    family: u16,
    port: u16,
    addr: [u8; 16],
}

const IPPROTO_TCP: u8 = 6;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;
const LOOPBACK_IFINDEX: i32 = 1;

#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn kfree_skb(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct sk_buff *skb, void *location, enum skb_drop_reason reason, struct sock *rx_sk)
    let reason = ctx.arg::<u64>(2) as u32;
    if reason != off!(netfilter_drop) as u32 {
        return 0;
    }
    // 0 or 1: the cast cannot wrap.
    finish(try_kfree_skb(&ctx, reason)) as i32
}

#[inline(always)]
fn read<T>(addr: u64) -> Result<T, ProbeError> {
    // SAFETY: a kernel address derived from the tracepoint's skb at BTF offsets; the read is the
    // fallible helper.
    unsafe { bpf_probe_read_kernel::<T>(addr as *const T) }.map_err(|_| ProbeError::KernelRead)
}

fn try_kfree_skb(ctx: &RawTracePointContext, reason: u32) -> Result<(), ProbeError> {
    if current_is_self() {
        return Ok(());
    }
    let skb: u64 = ctx.arg(0);
    // Only packets a local task sent: still owned by its socket (OUTPUT chain), or looped back
    // through `lo` (INPUT chain of a loopback connect). Drops of packets from the network land in
    // whatever task the softirq interrupted and say nothing about it.
    let sk = read::<u64>(skb + off!(skb_sk) as u64)?;
    if sk == 0 {
        let dev = read::<u64>(skb + off!(skb_dev) as u64)?;
        if dev == 0 || read::<i32>(dev + off!(netdev_ifindex) as u64)? != LOOPBACK_IFINDEX {
            return Ok(());
        }
    }
    let head = read::<u64>(skb + off!(skb_head) as u64)?;
    let nh = u64::from(read::<u16>(skb + off!(skb_network_header) as u64)?);
    let th = u64::from(read::<u16>(skb + off!(skb_transport_header) as u64)?);
    let ver = read::<u8>(head + nh)? >> 4;
    let mut key = NfKey {
        tgid: 0,
        family: 0,
        port: 0,
        addr: [0; 16],
    };
    let mut saddr = [0u8; 16];
    if ver == 4 {
        if read::<u8>(head + nh + 9)? != IPPROTO_TCP {
            return Ok(());
        }
        key.family = AF_INET;
        saddr[..4].copy_from_slice(&read::<[u8; 4]>(head + nh + 12)?);
        key.addr[..4].copy_from_slice(&read::<[u8; 4]>(head + nh + 16)?);
    } else if ver == 6 {
        if read::<u8>(head + nh + 6)? != IPPROTO_TCP {
            return Ok(());
        }
        key.family = AF_INET6;
        saddr = read::<[u8; 16]>(head + nh + 8)?;
        key.addr = read::<[u8; 16]>(head + nh + 24)?;
    } else {
        return Ok(());
    }
    let flags = read::<u8>(head + th + 13)?;
    if flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) != TCP_FLAG_SYN {
        return Ok(());
    }
    let ports = read::<[u8; 4]>(head + th)?;
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    key.port = u16::from_be_bytes([ports[2], ports[3]]);
    count(CNT_NETFILTER_DROP);
    let owner = current_owner();
    key.tgid = owner.pid;
    let now = owner.ktime_ns;
    let mut folded = 0;
    if let Some(v) = GW_NF_FOLD.get_ptr_mut(&key) {
        // SAFETY: a live value of the map; a racing CPU can at worst lose one count.
        unsafe {
            if now.saturating_sub((*v)[0]) < FOLD_WINDOW_NS {
                (*v)[1] += 1;
                return Ok(());
            }
            folded = (*v)[1];
            *v = [now, 0];
        }
    } else {
        // A full map only costs folding: the drop is still reported.
        let _ = GW_NF_FOLD.insert(&key, &[now, 0], 0);
    }
    emit(KIND_NETFILTER_DROP, &owner, |ev| {
        ev.family = key.family;
        ev.port = key.port;
        ev.addr = key.addr;
        ev.aux = [u64::from(reason), u64::from(sport), folded, 0];
        ev.data[..16].copy_from_slice(&saddr);
        ev.data_len = 16;
    });
    Ok(())
}
