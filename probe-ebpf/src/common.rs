//! Maps, load-time globals and helpers shared by every hook.
use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_ns,
    },
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use probe_common::{
    CNT_LOST_MAP_FULL, CNT_LOST_RINGBUF, CONNECTS_MAX, ConnectArgs, ERRNO_SLOTS, EXEC_FAIL_MAX,
    EXECS_MAX, ExecFail, NUM_COUNTERS, NUM_PROBE_ERRORS, Offsets, Owner, PROXY_NAMES_MAX,
    ProbeError, RING_BYTES, RawEvent, TCP_OWNER_MAX, WATCHED_MAX,
};

// Map names are the statics' names; those the loader opens are the `MAP_*` consts of
// probe-common (its unit test checks them against the built object).
#[map]
pub static GW_EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);
#[map]
pub static GW_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);
#[map]
pub static GW_ERRNO: PerCpuArray<u64> = PerCpuArray::with_max_entries(2 * ERRNO_SLOTS, 0);
#[map]
pub static GW_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_PROBE_ERRORS, 0);
#[map]
pub static GW_CONNECTS: HashMap<u32, ConnectArgs> = HashMap::with_max_entries(CONNECTS_MAX, 0);
#[map]
pub static GW_EXECS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(EXECS_MAX, 0);
#[map]
pub static GW_EXEC_FAIL: LruHashMap<u32, ExecFail> = LruHashMap::with_max_entries(EXEC_FAIL_MAX, 0);
/// A plain hash, not an LRU (an LRU insert or delete takes a shared lock): every entry is
/// deleted when its socket leaves `SYN_SENT` (to `ESTABLISHED` or `CLOSE`, both seen by the
/// state program), and only watched processes' connects insert one. An entry a missed run left
/// is swept by the loader once it is older than any connect can last.
#[map]
pub static GW_TCP_OWNER: HashMap<u64, Owner> = HashMap::with_max_entries(TCP_OWNER_MAX, 0);
/// The watched processes (see `probe_common::MAP_WATCHED`). Read on every connect of the host,
/// written only when a watched process forks, execs or exits (and by the loader).
#[map]
pub static GW_WATCHED: HashMap<u32, u32> = HashMap::with_max_entries(WATCHED_MAX, 0);
/// Proxy names (see `probe_common::MAP_PROXY_NAMES`), read once per exec.
#[map]
pub static GW_PROXY_NAMES: HashMap<[u8; 16], u32> = HashMap::with_max_entries(PROXY_NAMES_MAX, 0);

/// Whether the process `tgid` is watched: one lookup, no write.
#[inline(always)]
pub fn watched(tgid: u32) -> bool {
    // SAFETY: the value is only tested for presence.
    unsafe { GW_WATCHED.get(&tgid) }.is_some()
}

/// Starts watching the process `tgid`; a full map is counted as loss.
#[inline(always)]
pub fn watch(tgid: u32) {
    if GW_WATCHED.insert(&tgid, &1, 0).is_err() {
        count(CNT_LOST_MAP_FULL);
    }
}

/// Tracepoint field offsets, written by the loader before the programs load.
#[unsafe(no_mangle)]
// SAFETY: `Offsets` is made of `u32`s only; all-zero is a valid value.
pub static GW_OFFSETS: Offsets = unsafe { core::mem::zeroed() };

/// Reads one field of [`GW_OFFSETS`]. The volatile read keeps the compiler from folding the
/// zero initialiser: the loader rewrites the value in the object before loading.
#[inline(always)]
pub fn read_off(field: *const u32) -> usize {
    // SAFETY: `field` points into the immutable global `GW_OFFSETS` (see `off!`).
    (unsafe { core::ptr::read_volatile(field) }) as usize
}

/// Offset of a tracepoint field, as set by the loader.
macro_rules! off {
    ($field:ident) => {
        $crate::common::read_off(&raw const $crate::common::GW_OFFSETS.$field)
    };
}
pub(crate) use off;

/// Reads an 8-byte syscall tracepoint field: a direct context load at `FIXED` (a constant, as
/// the verifier requires) when the loader confirmed this kernel's layout, else through the
/// helper at the offset tracefs gave.
#[inline(always)]
pub fn sys_field<const FIXED: usize>(
    ctx: &TracePointContext,
    tracefs_off: usize,
) -> Result<u64, ProbeError> {
    if off!(syscall_layout_fixed) != 0 {
        #[expect(
            clippy::cast_ptr_alignment,
            reason = "FIXED is 8-aligned in the record (SYSCALL_ARG0/RET) and the verifier rejects a misaligned context load"
        )]
        let field = ctx.as_ptr().cast::<u8>().wrapping_add(FIXED).cast::<u64>();
        // SAFETY: the loader checked that tracefs puts this field at FIXED; the verifier checks
        // the context access itself (constant offset, in bounds, aligned).
        Ok(unsafe { *field })
    } else {
        // SAFETY: offset from tracefs; fallible helper read.
        unsafe { ctx.read_at::<u64>(tracefs_off) }.map_err(|_| ProbeError::ContextRead)
    }
}

/// Reads a field of a tracepoint record at an offset tracefs gave.
///
/// # Safety
/// `T` must be the field's type (any bit pattern valid), `off` its offset in this record.
#[inline(always)]
pub unsafe fn ctx_read<T>(ctx: &TracePointContext, off: usize) -> Result<T, ProbeError> {
    // SAFETY: per the contract; the helper read fails cleanly outside the record.
    unsafe { ctx.read_at::<T>(off) }.map_err(|_| ProbeError::ContextRead)
}

/// A program's return value from its body's result; an error is counted in [`GW_ERRORS`],
/// where the loader reads it as a loss reason (the tracepoint macros discard return values).
#[inline(always)]
pub fn finish(result: Result<(), ProbeError>) -> u32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            if let Some(p) = GW_ERRORS.get_ptr_mut(e as u32) {
                // SAFETY: as in `count`.
                unsafe { *p += 1 };
            }
            1
        }
    }
}

/// Adds one to a per-CPU counter.
#[inline(always)]
pub fn count(idx: u32) {
    if let Some(p) = GW_COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs (no preemption).
        unsafe { *p += 1 };
    }
}

/// Adds one to the per-errno counter of a family (`base` = 0 for connects, `ERRNO_SLOTS` for accepts).
#[inline(always)]
pub fn count_errno(base: u32, errno: u32) {
    let slot = if errno < ERRNO_SLOTS {
        errno
    } else {
        ERRNO_SLOTS - 1
    };
    if let Some(p) = GW_ERRNO.get_ptr_mut(base + slot) {
        // SAFETY: as in `count`.
        unsafe { *p += 1 };
    }
}

/// Thread-group id of the current task, and whether it is gwtrace itself.
#[inline(always)]
pub fn current_is_self() -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    tgid == off!(self_tgid) as u32
}

/// The current task as the owner of an operation.
#[inline(always)]
pub fn current_owner() -> Owner {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    Owner {
        // SAFETY: helpers without preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        // SAFETY: as above.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

/// Reserves a zeroed event in the ring buffer, fills its header from `owner` and lets `fill` write
/// the rest. A full ring buffer is counted as loss, never silent. `BPF_RB_NO_WAKEUP`: the
/// reader is not woken, userspace drains the ring buffer on a timer.
#[inline(always)]
pub fn emit(kind: u32, owner: &Owner, fill: impl FnOnce(&mut RawEvent)) {
    let Some(mut entry) = GW_EVENTS.reserve::<RawEvent>(0) else {
        count(CNT_LOST_RINGBUF);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to `size_of::<RawEvent>()` bytes reserved for us; zeroing them makes every
    // field initialised (RawEvent is plain integers) before we take a reference.
    let ev = unsafe {
        core::ptr::write_bytes(ev, 0, 1);
        &mut *ev
    };
    ev.kind = kind;
    ev.ktime_ns = owner.ktime_ns;
    ev.cgroup_id = owner.cgroup_id;
    ev.pid = owner.pid;
    ev.tid = owner.tid;
    ev.uid = owner.uid;
    ev.gid = owner.gid;
    ev.comm = owner.comm;
    fill(ev);
    entry.submit(u64::from(BPF_RB_NO_WAKEUP));
}
