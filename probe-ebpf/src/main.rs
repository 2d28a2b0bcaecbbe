//! gwtrace's kernel side: tracepoint programs that report failed proxy connects and upstream worker
//! deaths. Healthy traffic never leaves the kernel: successes are per-CPU counters, only anomalies
//! become ring-buffer events, and no event wakes userspace (it drains on a short timer).
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod accept;
mod common;
mod connect;
mod exec;
mod exit;
mod fold;
mod oom;
mod signal;
mod sock_state;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
