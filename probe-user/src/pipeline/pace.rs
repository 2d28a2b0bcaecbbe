//! Pacing of a live run: one timer for draining and the once-a-second tick.
use std::time::Duration;

/// How often the ring buffer is drained while events flow: the programs never wake us, so this
/// bounds delivery latency.
pub const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// How often once nothing has come for [`IDLE_AFTER`] drains: a quiet host costs a quarter of
/// the wake-ups, and the first event of a burst still leaves within 40 ms (target: 50).
pub const DRAIN_IDLE: Duration = Duration::from_millis(40);
/// Empty drains before the period stretches to [`DRAIN_IDLE`].
pub const IDLE_AFTER: u32 = 50;
/// How often facts, loss counters and verdicts are refreshed.
pub const TICK_EVERY: Duration = Duration::from_secs(1);

/// One timer for draining and the once-a-second tick; its period stretches while the host is
/// quiet (the wake-ups are most of an idle agent's CPU).
pub struct Pace {
    empty_drains: u32,
    next_tick: tokio::time::Instant,
}

impl Pace {
    /// A pace whose first drain also ticks.
    #[must_use]
    pub fn new() -> Self {
        Self {
            empty_drains: 0,
            next_tick: tokio::time::Instant::now(),
        }
    }

    /// How long to sleep before the next drain.
    #[must_use]
    pub fn pause(&self) -> Duration {
        if self.empty_drains >= IDLE_AFTER {
            DRAIN_IDLE
        } else {
            DRAIN_EVERY
        }
    }

    /// Records a drain of `n` events; whether the once-a-second tick is due.
    pub fn drained(&mut self, n: usize) -> bool {
        self.empty_drains = if n == 0 {
            self.empty_drains.saturating_add(1)
        } else {
            0
        };
        let now = tokio::time::Instant::now();
        if now < self.next_tick {
            return false;
        }
        self.next_tick = (self.next_tick + TICK_EVERY).max(now);
        true
    }
}

impl Default for Pace {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_slows_down_when_quiet_and_ticks_once_a_second() {
        let mut p = Pace::new();
        assert_eq!(p.pause(), DRAIN_EVERY);
        // The first drain runs the tick; the next ones within the second do not.
        assert!(p.drained(0));
        assert!(!p.drained(0));
        for _ in 0..IDLE_AFTER {
            let _ = p.drained(0);
        }
        assert_eq!(p.pause(), DRAIN_IDLE);
        // One event: back to the short period at once.
        let _ = p.drained(3);
        assert_eq!(p.pause(), DRAIN_EVERY);
    }
}
