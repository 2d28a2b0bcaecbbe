//! Wall-clock times for people. The engine stays on the events' monotonic axis and writes an
//! instant as `t=246.481s` (seconds since boot); the human printer turns each into the local
//! time of day (`21:35:41.583`, with the date when it is not today) and an age (`3.2 s ago`), a
//! range into its length (`for 1.0 s`). The offset between the two clocks is measured once at
//! start (live) or read off a recording's first event, which carries both (`ts`, `mono_ns`).
use std::fmt::Write as _;

use jiff::{Timestamp, tz::TimeZone};

use crate::event::{Clock, Event};

/// Converts the events' monotonic ns to local wall-clock time.
#[derive(Clone, Debug)]
pub struct WallClock {
    /// `realtime_ns - monotonic_ns`.
    wall_minus_mono_ns: i128,
    tz: TimeZone,
    /// Whether times get an age (`3.2 s ago`): live runs, not replays of another day's file.
    ages: bool,
    /// Today's date in `tz`, for "with the date when it is not today".
    today: jiff::civil::Date,
}

impl WallClock {
    /// The live run's clock: the offset measured at start, the system's time zone (`TZ`, else
    /// /etc/localtime), ages on.
    #[must_use]
    pub fn live(clock: Clock) -> Self {
        Self::with_zone(clock.wall_minus_mono_ns, TimeZone::system(), true)
    }

    /// A replay's clock, from an event that carries both times (every event gwtrace writes
    /// does; a hand-made one without `ts` gives none, and times stay `t=`). No ages: the
    /// recording may be days old.
    #[must_use]
    pub fn from_event(ev: &Event) -> Option<Self> {
        let ts: Timestamp = ev.ts.parse().ok()?;
        let offset = ts.as_nanosecond() - i128::from(ev.mono_ns);
        Some(Self::with_zone(offset, TimeZone::system(), false))
    }

    /// A clock with an explicit offset and zone (tests).
    #[must_use]
    pub fn with_zone(wall_minus_mono_ns: i128, tz: TimeZone, ages: bool) -> Self {
        let today = tz.to_datetime(Timestamp::now()).date();
        Self {
            wall_minus_mono_ns,
            tz,
            ages,
            today,
        }
    }

    /// Pretends today is `date` (tests).
    #[must_use]
    pub fn today_is(mut self, date: jiff::civil::Date) -> Self {
        self.today = date;
        self
    }

    /// `21:35:41.583`, or `2026-11-24 21:35:41.583` on another day than today.
    #[must_use]
    pub fn at(&self, mono_ns: u64) -> Option<String> {
        let ts = Timestamp::from_nanosecond(i128::from(mono_ns) + self.wall_minus_mono_ns).ok()?;
        let z = self.tz.to_datetime(ts);
        Some(if z.date() == self.today {
            z.strftime("%H:%M:%S%.3f").to_string()
        } else {
            z.strftime("%Y-%m-%d %H:%M:%S%.3f").to_string()
        })
    }

    /// RFC 3339 (UTC, milliseconds: fixed width, so the strings sort like the times) of a
    /// monotonic instant, for JSON.
    #[must_use]
    pub fn rfc3339(&self, mono_ns: u64) -> Option<String> {
        let ts = Timestamp::from_nanosecond(i128::from(mono_ns) + self.wall_minus_mono_ns).ok()?;
        Some(
            TimeZone::UTC
                .to_datetime(ts)
                .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string(),
        )
    }

    /// `text` with every `t=<s>s` instant in wall-clock time: `from t=A to t=B` becomes
    /// `from X to Y (for D)`, `first t=A, last t=B` becomes `first X, last Y (N s ago)`, a lone
    /// instant `X (N s ago)` (ages only on a live run, and only for the past of `now_ns`).
    #[must_use]
    pub fn humanize(&self, text: &str, now_ns: u64) -> String {
        let toks = tokens(text);
        let mut out = String::with_capacity(text.len() + 16 * toks.len());
        let mut pos = 0;
        let mut next = 0;
        while let Some(&(start, end, ns)) = toks.get(next) {
            next += 1;
            out.push_str(&text[pos..start]);
            pos = end;
            let Some(first) = self.at(ns) else {
                out.push_str(&text[start..end]);
                continue;
            };
            out.push_str(&first);
            // A range (`from A to B`) or a first/last pair: the second instant carries the tail.
            let pair = toks.get(next).and_then(|&(start2, end2, ns2)| {
                let sep = &text[end..start2];
                let span = (ns2 >= ns && matches!(sep, " to " | ", last ")).then_some(sep)?;
                Some((span, end2, ns2, self.at(ns2)?))
            });
            let Some((sep, end2, ns2, second)) = pair else {
                out.push_str(&self.age(ns, now_ns));
                continue;
            };
            let tail = if sep == " to " {
                format!(" (for {})", crate::engine::human_duration(ns2 - ns))
            } else {
                self.age(ns2, now_ns)
            };
            let _ = write!(out, "{sep}{second}{tail}");
            pos = end2;
            next += 1;
        }
        out.push_str(&text[pos..]);
        out
    }

    /// ` (3.2 s ago)`, or nothing (replay, or an instant not before now).
    fn age(&self, ns: u64, now_ns: u64) -> String {
        if !self.ages || now_ns < ns {
            return String::new();
        }
        format!(" ({} ago)", crate::engine::human_duration(now_ns - ns))
    }
}

/// The `t=<digits>.<3 digits>s` instants in `text` (start, end, ns), as the engine writes them
/// (never inside a word: `at=1.000s` is not one).
fn tokens(text: &str) -> Vec<(usize, usize, u64)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = text[i..].find("t=") {
        let s = i + off;
        i = s + 2;
        if s > 0 && (b[s - 1].is_ascii_alphanumeric() || b[s - 1] == b'_') {
            continue;
        }
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        let (int_end, frac_end) = (i + digits, i + digits + 4);
        let frac_ok = b
            .get(int_end + 1..frac_end)
            .is_some_and(|f| f.iter().all(u8::is_ascii_digit));
        if digits == 0
            || b.get(int_end) != Some(&b'.')
            || !frac_ok
            || b.get(frac_end) != Some(&b's')
            || b.get(frac_end + 1).is_some_and(u8::is_ascii_alphanumeric)
        {
            continue;
        }
        let (Ok(sec), Ok(ms)) = (
            text[i..int_end].parse::<u64>(),
            text[int_end + 1..frac_end].parse::<u64>(),
        ) else {
            continue;
        };
        let Some(ns) = sec
            .checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(ms * 1_000_000))
        else {
            continue;
        };
        out.push((s, frac_end + 1, ns));
        i = frac_end + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// Boot at 2026-11-25 21:00:00 UTC, shown in UTC, today that day.
    fn clock(ages: bool) -> WallClock {
        let boot: Timestamp = "2026-11-25T21:00:00Z".parse().unwrap();
        WallClock::with_zone(boot.as_nanosecond(), TimeZone::UTC, ages)
            .today_is(jiff::civil::date(2026, 11, 25))
    }

    #[test]
    fn instants_become_the_time_of_day_and_an_age() {
        let c = clock(true);
        assert_eq!(
            c.humanize(
                "died of SIGKILL (9) at t=2141.583s, then",
                2144 * S + 783_000_000
            ),
            "died of SIGKILL (9) at 21:35:41.583 (3.2 s ago), then"
        );
    }

    #[test]
    fn ranges_get_their_length_and_first_last_an_age() {
        let c = clock(true);
        assert_eq!(
            c.humanize("failed 5× [syscall] from t=733.271s to t=734.272s", 740 * S),
            "failed 5× [syscall] from 21:12:13.271 to 21:12:14.272 (for 1.0 s)"
        );
        assert_eq!(
            c.humanize(
                "(5×, 5.0/s over 0.8 s, first t=100.000s, last t=100.800s)",
                102 * S
            ),
            "(5×, 5.0/s over 0.8 s, first 21:01:40.000, last 21:01:40.800 (1.2 s ago))"
        );
    }

    #[test]
    fn another_day_shows_the_date_and_replays_no_age() {
        let c = clock(false).today_is(jiff::civil::date(2026, 11, 27));
        assert_eq!(
            c.humanize("at t=60.000s", 100 * S),
            "at 2026-11-25 21:01:00.000"
        );
    }

    #[test]
    fn the_local_zone_is_used() {
        let boot: Timestamp = "2026-11-25T21:00:00Z".parse().unwrap();
        let tz = TimeZone::fixed(jiff::tz::offset(2));
        let c = WallClock::with_zone(boot.as_nanosecond(), tz, false)
            .today_is(jiff::civil::date(2026, 11, 25));
        assert_eq!(c.at(S).as_deref(), Some("23:00:01.000"));
        assert_eq!(
            c.rfc3339(S).as_deref(),
            Some("2026-11-25T21:00:01.000Z"),
            "JSON stays UTC"
        );
    }

    #[test]
    fn only_the_engines_tokens_are_rewritten() {
        let c = clock(true);
        for text in [
            "no times here",
            "at=1.000s",
            "t=1.00s",
            "t=1.0000s",
            "t=.500s",
            "t=1.500sec",
            "t=",
            "t=99999999999999999999.000s",
            "ends with t=1.5",
        ] {
            assert_eq!(c.humanize(text, 0), text, "{text}");
        }
        assert_eq!(c.humanize("(t=1.000s)", 0), "(21:00:01.000)");
    }

    #[test]
    fn a_replay_clock_comes_from_an_event() {
        let ev = Event::of_task(
            "2026-11-25T21:00:10Z".into(),
            10 * S,
            1,
            "nginx",
            crate::event::Body::Loss {
                reason: "x".into(),
                count: 1,
            },
        );
        let c = WallClock::from_event(&ev).unwrap();
        assert_eq!(c.rfc3339(0).as_deref(), Some("2026-11-25T21:00:00.000Z"));
        let mut bad = ev.clone();
        bad.ts = String::new();
        assert!(WallClock::from_event(&bad).is_none());
    }
}
