//! Connection ends: the TCP connections watched processes (the proxies) open, tracked in the
//! kernel from `ESTABLISHED` by the `inet_sock_set_state` program; one that ends before any
//! byte of the answer to its last request becomes a `conn_end` event
//! ([`probe_common::KIND_CONN_END`]) when the peer's FIN or RST arrives. Healthy connections
//! never leave the kernel, and no program runs per send or receive: the program reads what it
//! needs from `tcp_sock` (`lsndtime`, `icsk_ack.lrcvtime`, `bytes_received`, `bytes_acked`,
//! `data_segs_out`, `write_seq`) at the state changes.
//!
//! What is reachable, measured with bpftrace on kernel 6.18 (bench/README.md, "Connection
//! ends"): on loopback the peer's close is processed in the closing task (its pid, comm and
//! `PF_EXITING` from `task_struct.flags`), the FIN as the proxy socket's `ESTABLISHED ->
//! CLOSE_WAIT`, the RST (a close with the request unread) as `-> CLOSE` with `sk_err`
//! ECONNRESET. Not reachable here: the peer task of a remote peer (softirq), and unix sockets
//! (no tracepoint on the unix connect or close paths sees the socket).
//!
//! The jiffies stamps are converted with the kernel's `CONFIG_HZ` ([`hz`]).
use probe_common::Offsets;

use super::btf::KernelBtf;

/// The `CONFIG_HZ` values a kernel can be built with.
const HZ_CHOICES: [u32; 4] = [100, 250, 300, 1000];

/// The offsets the connection-end logic reads, and whether it can run here: BTF has every
/// member and the kernel's tick rate is known. Otherwise `track_conns` stays 0 (said once, at
/// info level).
pub fn offsets(kbtf: &KernelBtf, o: &mut Offsets) {
    let members = (
        kbtf.member_offset("task_struct", "flags"),
        kbtf.member_offset("tcp_sock", "bytes_received"),
        kbtf.member_offset("tcp_sock", "bytes_acked"),
        kbtf.member_offset("tcp_sock", "lsndtime"),
        kbtf.nested_offset("inet_connection_sock", "icsk_ack", "lrcvtime"),
        kbtf.member_offset("tcp_sock", "data_segs_out"),
        kbtf.member_offset("tcp_sock", "write_seq"),
    );
    let (Ok(flags), Ok(received), Ok(acked), Ok(lsnd), Ok(lrcv), Ok(segs_out), Ok(write_seq)) =
        members
    else {
        log::info!(
            "tcp_sock/task_struct members missing from BTF: broken upstream connections are not tracked"
        );
        return;
    };
    let Some(hz) = hz() else {
        log::info!(
            "the kernel's CONFIG_HZ is unknown (no /proc/config.gz, /boot/config-*, or /proc/timer_list): broken upstream connections are not tracked"
        );
        return;
    };
    o.task_flags = flags;
    o.tcp_bytes_received = received;
    o.tcp_bytes_acked = acked;
    o.tcp_lsndtime = lsnd;
    o.icsk_lrcvtime = lrcv;
    o.tcp_data_segs_out = segs_out;
    o.tcp_write_seq = write_seq;
    o.jiffy_ns = 1_000_000_000 / hz;
    o.track_conns = 1;
}

/// The kernel's tick rate: `CONFIG_HZ` from the kernel's configuration when it is readable,
/// else measured from `/proc/timer_list` (its `jiffies` against its `now at` clock, 100 ms
/// apart) and rounded to the nearest value a kernel can have.
#[must_use]
pub fn hz() -> Option<u32> {
    config_hz().or_else(measured_hz)
}

fn config_hz() -> Option<u32> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let boot = std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok();
    let text = boot.or_else(|| {
        let out = std::process::Command::new("zcat")
            .arg("/proc/config.gz")
            .output()
            .ok()?;
        String::from_utf8(out.stdout).ok()
    })?;
    hz_of_config(&text)
}

/// `CONFIG_HZ=N` of a kernel configuration.
fn hz_of_config(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
        .filter(|hz| HZ_CHOICES.contains(hz))
}

fn measured_hz() -> Option<u32> {
    let a = timer_list_sample()?;
    std::thread::sleep(std::time::Duration::from_millis(100));
    let b = timer_list_sample()?;
    hz_of_samples(a, b)
}

/// (`now at` ns, `jiffies`) of `/proc/timer_list`.
fn timer_list_sample() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/timer_list").ok()?;
    timer_list_parse(&text)
}

fn timer_list_parse(text: &str) -> Option<(u64, u64)> {
    let now = text.lines().find_map(|l| {
        l.strip_prefix("now at ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    })?;
    let jiffies = text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("jiffies: ")
            .and_then(|n| n.trim().parse().ok())
    })?;
    Some((now, jiffies))
}

/// The `CONFIG_HZ` value nearest to the rate two samples show.
fn hz_of_samples(a: (u64, u64), b: (u64, u64)) -> Option<u32> {
    let dt = b.0.checked_sub(a.0).filter(|&d| d > 0)?;
    let dj = b.1.checked_sub(a.1)?;
    #[expect(
        clippy::cast_precision_loss,
        reason = "a rate estimate: tens of jiffies over ~1e8 ns"
    )]
    let rate = dj as f64 * 1e9 / dt as f64;
    HZ_CHOICES.iter().copied().min_by(|x, y| {
        (f64::from(*x) - rate)
            .abs()
            .total_cmp(&(f64::from(*y) - rate).abs())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hz_from_a_kernel_configuration() {
        let cfg =
            "# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\nCONFIG_HZ_PERIODIC=n\n";
        assert_eq!(hz_of_config(cfg), Some(250));
        assert_eq!(hz_of_config("CONFIG_HZ=123\n"), None);
        assert_eq!(hz_of_config(""), None);
    }

    #[test]
    fn hz_from_timer_list_samples() {
        let text = "Timer List Version: v0.10\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 1370098135730 nsecs\n\ncpu: 0\n jiffies: 4295234761\n";
        assert_eq!(
            timer_list_parse(text),
            Some((1_370_098_135_730, 4_295_234_761))
        );
        // 25 or 26 jiffies in ~100 ms: 250 Hz, not 300.
        let a = (1_000_000_000, 1000);
        assert_eq!(hz_of_samples(a, (1_101_000_000, 1026)), Some(250));
        assert_eq!(hz_of_samples(a, (1_100_000_000, 1100)), Some(1000));
        assert_eq!(hz_of_samples(a, (1_100_000_000, 1010)), Some(100));
        assert_eq!(hz_of_samples(a, (1_100_000_000, 1030)), Some(300));
        assert_eq!(hz_of_samples(a, a), None);
    }
}
