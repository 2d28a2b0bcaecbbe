//! Folding of identical failed connects: a storm of the same failure (one process, one target,
//! one errno) leaves the kernel as one event per [`FOLD_WINDOW_NS`] carrying the running count,
//! not one event per failure. The first failure of a key is reported at once.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use probe_common::{
    CNT_LOST_MAP_FULL, FOLD_MAX, FOLD_WINDOW_NS, FoldKey, FoldVal, KIND_CONNECT_FAILED, Owner,
    ProbeError, UNIX_PATH_MAX,
};

use crate::common::{count, emit};

#[map]
pub static GW_FOLD: LruHashMap<FoldKey, FoldVal> = LruHashMap::with_max_entries(FOLD_MAX, 0);
/// Per-CPU room for the key being built (140 bytes would crowd the 512-byte stack).
#[map]
static GW_FOLD_SCRATCH: PerCpuArray<FoldKey> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's scratch key, zeroed.
#[inline(always)]
pub fn scratch_key() -> Result<&'static mut FoldKey, ProbeError> {
    let p = GW_FOLD_SCRATCH
        .get_ptr_mut(0)
        .ok_or(ProbeError::ScratchMissing)?;
    // SAFETY: a per-CPU slot that only the program running on this CPU uses (tracepoint programs
    // are not preempted); zeroing it makes every byte of the plain-integer struct initialised.
    unsafe {
        core::ptr::write_bytes(p, 0, 1);
        Ok(&mut *p)
    }
}

/// Adds one to `v`'s count; whether its window has passed (the failure is reported now).
///
/// # Safety
/// `v` must point to a live value of [`GW_FOLD`].
#[inline(always)]
unsafe fn bump(v: *mut FoldVal, now: u64) -> Option<u64> {
    // SAFETY: per the contract; `total` is 8-byte aligned (repr(C) u64 fields); several CPUs may
    // count the same key, hence the atomic add (its result unused: a plain BPF atomic add).
    unsafe {
        // `core`'s atomics need compare-and-swap, which this target lacks: the instruction itself.
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {one}",
            p = in(reg) &raw mut (*v).total,
            one = in(reg) 1u64,
        );
        (*v).last_ns = now;
        if now.wrapping_sub((*v).emitted_ns) < FOLD_WINDOW_NS {
            return None;
        }
        (*v).emitted_ns = now;
        Some(core::ptr::read_volatile(&raw const (*v).total))
    }
}

/// Counts one failure of `key` at `now`: `Some(total)` when it is to be reported now (the first
/// of its window; `total` = failures of the key so far), `None` when it was only counted.
#[inline(always)]
pub fn fold(key: &FoldKey, now: u64) -> Option<u64> {
    if let Some(v) = GW_FOLD.get_ptr_mut(key) {
        // SAFETY: a value just looked up; LRU values stay valid for the program's run (RCU).
        return unsafe { bump(v, now) };
    }
    let first = FoldVal {
        total: 1,
        emitted_ns: now,
        last_ns: now,
    };
    if GW_FOLD.insert(key, &first, u64::from(BPF_NOEXIST)).is_ok() {
        return Some(1);
    }
    // Another CPU created it meanwhile: count through its entry.
    if let Some(v) = GW_FOLD.get_ptr_mut(key) {
        // SAFETY: as above.
        return unsafe { bump(v, now) };
    }
    // Not stored at all: report it unfolded (count 0 tells the loader it carries just itself).
    count(CNT_LOST_MAP_FULL);
    Some(0)
}

/// Reports a failed connect unless it folds into its key's current window: the event is the
/// key's copy, with the key's running count in `aux[1]` and `aux0` in `aux[0]`.
#[inline(always)]
pub fn emit_failure(key: &FoldKey, owner: &Owner, aux0: u64) {
    let Some(total) = fold(key, owner.ktime_ns) else {
        return;
    };
    emit(KIND_CONNECT_FAILED, owner, |ev| {
        ev.errno = key.errno;
        ev.family = key.family;
        ev.port = key.port;
        ev.source = key.source;
        ev.addr = key.addr;
        ev.data_len = u16::from(key.path_len);
        // SAFETY: both arrays are at least UNIX_PATH_MAX bytes and do not overlap (one is in the
        // ring buffer, the other in the per-CPU scratch map).
        unsafe {
            core::ptr::copy_nonoverlapping(key.path.as_ptr(), ev.data.as_mut_ptr(), UNIX_PATH_MAX);
        }
        ev.aux[0] = aux0;
        ev.aux[1] = total;
    });
}
