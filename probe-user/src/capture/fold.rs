//! The loader's half of folding (see probe-ebpf's `fold`): the kernel reports a failing key at
//! most once per window with the key's running count; this turns running counts into per-event
//! counts, and once a key's window has passed, reads what was counted after its last event.
use std::collections::{HashMap, VecDeque};

use probe_common::{FOLD_MAX, FOLD_WINDOW_NS, FoldKey, FoldVal, RawEvent};

/// Keys tracked: more than the kernel keeps, so a key the kernel still has is always known here
/// (forgetting one would count its running total twice).
const MAX_TRACKED: usize = 8 * FOLD_MAX as usize;
/// Margin after a window before its residual count is read: a failure that began before the
/// window closed may still be adding to it.
const SWEEP_MARGIN_NS: u64 = 5_000_000;

struct Tracked {
    /// Running count already turned into events.
    reported: u64,
    last_ns: u64,
    /// When the residual of the latest window is due.
    sweep_at: Option<u64>,
    /// The key's latest event: residual events are copies of it.
    template: RawEvent,
}

/// Per-key running counts, as far as they have been reported.
#[derive(Default)]
pub struct Folds {
    keys: HashMap<FoldKey, Tracked>,
    /// Keys with a residual due, in the order they fell due.
    due: VecDeque<(u64, FoldKey)>,
}

impl Folds {
    /// How many failures a kernel failed-connect event stands for: its running count minus what
    /// was reported before; 0 when a later event of the key already counted it.
    pub fn count(&mut self, raw: &RawEvent) -> u64 {
        let total = raw.aux[1];
        if total == 0 {
            // Not folded (the kernel's fold map had no room): it stands for itself.
            return 1;
        }
        let key = FoldKey::of_event(raw);
        if !self.keys.contains_key(&key) && self.keys.len() >= MAX_TRACKED {
            self.make_room();
        }
        let t = self.keys.entry(key).or_insert(Tracked {
            reported: 0,
            last_ns: 0,
            sweep_at: None,
            template: *raw,
        });
        let n = total.saturating_sub(t.reported);
        t.reported = t.reported.max(total);
        if raw.ktime_ns >= t.last_ns {
            t.last_ns = raw.ktime_ns;
            t.template = *raw;
        }
        let at = raw.ktime_ns + FOLD_WINDOW_NS + SWEEP_MARGIN_NS;
        t.sweep_at = Some(at);
        self.due.push_back((at, key));
        n
    }

    /// Residual events for keys whose window has passed by `now_ns`: a copy of the key's last
    /// event, stamped with its last failure, and the number of failures it stands for. `read`
    /// looks the key up in the kernel's fold map.
    pub fn sweep(
        &mut self,
        now_ns: u64,
        mut read: impl FnMut(&FoldKey) -> Option<FoldVal>,
    ) -> Vec<(RawEvent, u64)> {
        let mut out = Vec::new();
        while let Some(&(at, key)) = self.due.front() {
            if at > now_ns {
                break;
            }
            self.due.pop_front();
            let Some(t) = self.keys.get_mut(&key) else {
                continue;
            };
            if t.sweep_at != Some(at) {
                // A later event moved the key's window: its own entry comes later.
                continue;
            }
            t.sweep_at = None;
            let Some(v) = read(&key) else {
                continue;
            };
            if v.total > t.reported {
                let mut ev = t.template;
                ev.ktime_ns = v.last_ns.max(t.last_ns);
                ev.aux[1] = v.total;
                out.push((ev, v.total - t.reported));
                t.reported = v.total;
                t.last_ns = ev.ktime_ns;
            }
        }
        out
    }

    /// Keys tracked now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Forgets the older half of the keys with nothing due (the kernel's LRU map, a quarter
    /// of this size at most, has evicted them long ago).
    fn make_room(&mut self) {
        let mut times: Vec<u64> = self.keys.values().map(|t| t.last_ns).collect();
        let mid = times.len() / 2;
        let (_, &mut cutoff, _) = times.select_nth_unstable(mid);
        self.keys
            .retain(|_, t| t.last_ns > cutoff || t.sweep_at.is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_common::{AF_UNIX, KIND_CONNECT_FAILED};

    fn raw(pid: u32, path: &[u8], total: u64, ns: u64) -> RawEvent {
        // SAFETY: RawEvent is plain integers; zero is valid.
        let mut r: RawEvent = unsafe { std::mem::zeroed() };
        r.kind = KIND_CONNECT_FAILED;
        r.pid = pid;
        r.errno = 2;
        r.family = AF_UNIX;
        r.data[..path.len()].copy_from_slice(path);
        r.data_len = u16::try_from(path.len()).unwrap();
        r.aux[1] = total;
        r.ktime_ns = ns;
        r
    }

    #[test]
    fn running_counts_become_per_event_counts() {
        let mut f = Folds::default();
        assert_eq!(f.count(&raw(1, b"/run/a.sock", 1, 0)), 1);
        assert_eq!(f.count(&raw(1, b"/run/a.sock", 500, 30_000_000)), 499);
        // Another key, another process: counted apart.
        assert_eq!(f.count(&raw(1, b"/run/b.sock", 1, 30_000_000)), 1);
        assert_eq!(f.count(&raw(2, b"/run/a.sock", 7, 30_000_000)), 7);
        // Out of order across CPUs: the earlier running count is already included.
        assert_eq!(f.count(&raw(1, b"/run/a.sock", 480, 29_000_000)), 0);
        // Not folded (kernel map full): itself.
        assert_eq!(f.count(&raw(1, b"/run/a.sock", 0, 31_000_000)), 1);
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn residuals_are_read_once_the_window_has_passed() {
        let mut f = Folds::default();
        let ev = raw(1, b"/run/a.sock", 10, 1_000_000_000);
        assert_eq!(f.count(&ev), 10);
        let key = FoldKey::of_event(&ev);
        let kernel = FoldVal {
            total: 250,
            emitted_ns: 1_000_000_000,
            last_ns: 1_015_000_000,
        };
        let mut reads = 0;
        // Window still open: nothing read.
        assert!(
            f.sweep(1_010_000_000, |_| {
                reads += 1;
                Some(kernel)
            })
            .is_empty()
        );
        assert_eq!(reads, 0);
        let out = f.sweep(1_030_000_000, |k| {
            reads += 1;
            (*k == key).then_some(kernel)
        });
        assert_eq!(reads, 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, 240);
        assert_eq!(out[0].0.ktime_ns, 1_015_000_000);
        assert_eq!(out[0].0.aux[1], 250);
        // Read once: a second sweep does not count it again.
        assert!(f.sweep(2_000_000_000, |_| Some(kernel)).is_empty());
        // The next event continues from 250.
        assert_eq!(f.count(&raw(1, b"/run/a.sock", 251, 2_100_000_000)), 1);
    }

    #[test]
    fn a_later_event_moves_the_residual() {
        let mut f = Folds::default();
        f.count(&raw(1, b"/x", 1, 0));
        f.count(&raw(1, b"/x", 5, 21_000_000));
        let mut reads = 0;
        // Only the second event's window counts; the first entry is stale.
        let out = f.sweep(30_000_000, |_| {
            reads += 1;
            None
        });
        assert!(out.is_empty());
        assert_eq!(reads, 0);
        f.sweep(50_000_000, |_| {
            reads += 1;
            None
        });
        assert_eq!(reads, 1);
    }

    #[test]
    fn tracking_stays_bounded() {
        let mut f = Folds::default();
        for i in 0..(8 * FOLD_MAX + 100) {
            f.count(&raw(i, b"/x", 1, u64::from(i)));
            f.sweep(u64::from(i) + 1_000_000_000, |_| None);
        }
        assert!(f.len() <= MAX_TRACKED, "{}", f.len());
    }
}
