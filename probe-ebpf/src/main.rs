//! gwtrace's kernel side: tracepoint programs that report failed proxy connects and upstream worker
//! deaths. Healthy traffic never leaves the kernel: successes are per-CPU counters, only anomalies
//! become ring-buffer events, and no event wakes userspace (it drains on a short timer).
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]
// What the BPF target and aya's macros force on this crate (the workspace lints hold otherwise):
#![expect(
    clippy::inline_always,
    reason = "the verifier checks each program as one body: helpers are inlined, not BPF-to-BPF calls (which cap arguments at 5 and share the 512-byte stack)"
)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "aya's #[tracepoint]/#[raw_tracepoint] macros hand the context to the program by value"
)]
#![expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    reason = "kernel ABI: tracepoint fields, helper results and syscall values arrive as 64-bit registers and are narrowed to their C types (pid_t, errno, ports, lengths); Rust's checked conversions add branches the verifier must follow"
)]

mod accept;
mod common;
mod connect;
mod conns;
mod exec;
mod exit;
mod fold;
mod fork;
mod oom;
mod signal;
mod skb_drop;
mod sock_addr;
mod sock_state;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
