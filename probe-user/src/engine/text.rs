//! Small formatting helpers shared by the causes: times, durations, modes, names.
use crate::event::{errno_name, signal_name};

/// Nanoseconds to seconds, for rates and durations shown to people.
#[expect(
    clippy::cast_precision_loss,
    reason = "display only: sub-ns precision is irrelevant"
)]
pub(crate) fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// A monotonic instant, as seconds since boot (the events' time axis).
pub(crate) fn fmt_ns(ns: u64) -> String {
    format!("t={:.3}s", secs(ns))
}

/// A duration, in the unit a person reads best.
pub(crate) fn fmt_dur(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{} µs", ns / 1000)
    } else if ns < 1_000_000_000 {
        format!("{} ms", ns / 1_000_000)
    } else if ns < 120_000_000_000 {
        format!("{:.1} s", secs(ns))
    } else {
        format!("{:.1} min", secs(ns) / 60.0)
    }
}

/// `SIGKILL (9)`.
pub(crate) fn signal_label(sig: i32) -> String {
    let name = signal_name(sig);
    if name == "SIG?" {
        format!("signal {sig}")
    } else {
        format!("{name} ({sig})")
    }
}

/// `EACCES (13)`.
pub(crate) fn errno_label(errno: i32) -> String {
    format!("{} ({errno})", errno_name(errno))
}

/// `ls -l` style mode string (`srw-rw----`) from `st_mode`.
pub(crate) fn mode_string(mode: u32) -> String {
    let kind = match mode & 0o170_000 {
        0o140_000 => 's',
        0o040_000 => 'd',
        0o120_000 => 'l',
        0o020_000 => 'c',
        0o060_000 => 'b',
        0o010_000 => 'p',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    let special = [(0o4000, 's', 'S'), (0o2000, 's', 'S'), (0o1000, 't', 'T')];
    for (i, (bit, on, off)) in special.into_iter().enumerate() {
        let shift = 6 - 3 * i;
        let triad = (mode >> shift) & 0o7;
        s.push(if triad & 4 != 0 { 'r' } else { '-' });
        s.push(if triad & 2 != 0 { 'w' } else { '-' });
        let x = triad & 1 != 0;
        s.push(match (mode & bit != 0, x) {
            (true, true) => on,
            (true, false) => off,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// Kilobytes as MiB for people.
pub(crate) fn mib_kb(kb: u64) -> String {
    format!("{} MiB", kb / 1024)
}

/// Bytes as MiB for people.
pub(crate) fn mib_bytes(b: u64) -> String {
    format!("{} MiB", b / (1024 * 1024))
}

/// Events per second over a span (at least one second, so a single event is not infinite).
pub(crate) fn rate(count: u64, first_ns: u64, last_ns: u64) -> f64 {
    let span = secs(last_ns.saturating_sub(first_ns)).max(1.0);
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let c = count as f64;
    c / span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string(0o140_660), "srw-rw----");
        assert_eq!(mode_string(0o040_755), "drwxr-xr-x");
        assert_eq!(mode_string(0o041_777), "drwxrwxrwt");
        assert_eq!(mode_string(0o100_600), "-rw-------");
    }

    #[test]
    fn durations_pick_a_unit() {
        assert_eq!(fmt_dur(500_000_000), "500 ms");
        assert_eq!(fmt_dur(3_200_000_000), "3.2 s");
        assert_eq!(fmt_dur(600_000_000_000), "10.0 min");
    }
}
