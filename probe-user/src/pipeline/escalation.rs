//! When `--hooks auto` attaches the syscall hooks: pure policy, events in, decisions out.
//!
//! While the host is healthy only the cheap hooks run (socket state machine, process deaths,
//! cgroup connect attempts). The syscall tracepoints (exact errno of every connect, exec
//! failures) are attached while an anomaly is suspected and detached after a quiet period:
//! - a proxy's connect attempt to a target that fails the caller's check (unix: missing, not a
//!   socket, nobody listening, not writable for the proxy, listener queue full; TCP: no route,
//!   an error `connect()` returns before any handshake and no socket event shows), asked at
//!   most once per target per [`CHECK_INTERVAL_NS`]; the failed check is also reported as an
//!   inferred `connect_failed` (source `attempt`), which the escalated hooks then confirm;
//! - any failure the always-on hooks see from a proxy: a failed TCP connect (`tcp_state`), a
//!   netfilter drop, a connection that ended before its answer;
//! - any abnormal end of a process that may be an upstream (a proxy's or app server's, as the
//!   enricher tells them): killed by a signal (not a termination request), a non-zero exit
//!   status; any OOM kill; and from any process the exit statuses of a start that failed
//!   (systemd's 203/EXEC, a shell's 126/127), whose exec failure only the syscall hooks see.
//!
//! [`Policy::decide`] then asks for an escalation (with the first trigger as its reason) or,
//! a quiet period ([`QUIET_NS`] by default) after the last trigger, for calm.
use std::collections::HashMap;

use crate::event::{Body, Event};

/// Quiet period (no trigger) before the syscall hooks are detached again, by default.
pub const QUIET_NS: u64 = 45_000_000_000;
/// A target is checked at most once per interval (per cgroup, uid and target: a proxy's
/// workers share it).
pub const CHECK_INTERVAL_NS: u64 = 1_000_000_000;
/// Bound of the remembered checks (the oldest half is forgotten beyond it).
const MAX_CHECKED: usize = 4096;

/// A connect attempt seen by the cgroup programs (before the kernel tried it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub mono_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    /// gwtrace's target format (`unix:/run/app.sock`, `127.0.0.1:8000`).
    pub target: String,
    /// Attempts of this process to this target since its previous report.
    pub count: u64,
}

/// What the caller's check of an attempt's target found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFailed {
    /// The errno a connect gets for it: ENOENT, ECONNREFUSED, EACCES, EAGAIN...
    pub errno: i32,
    /// What the check saw (`no such file`, `queue 129 of 128`).
    pub what: String,
}

/// A decision for the capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Attach the syscall hooks: the first trigger since the last calm.
    Escalate { reason: String },
    /// Detach them: nothing happened for [`QUIET_NS`].
    Calm,
}

/// The escalation state machine.
#[derive(Debug)]
pub struct Policy {
    /// The quiet period before calm.
    quiet_ns: u64,
    escalated: bool,
    /// The last trigger's time and the first unanswered trigger's reason.
    last_trigger_ns: Option<u64>,
    pending: Option<String>,
    /// When each (cgroup, uid, target) was last checked: a proxy's workers share one check (a
    /// unit's workers share its cgroup, credentials and mount namespace).
    checked: HashMap<(u64, u32, String), u64>,
}

/// Signals that ask a process to end: its exit is an ordinary stop, not an upstream death.
const TERMINATION: [i32; 4] = [1, 2, 13, 15];
/// Exit statuses of a start that failed before the program ran: systemd's EXEC (203), a
/// shell's "not executable" (126) and "not found" (127).
const FAILED_START: [i32; 3] = [126, 127, 203];

impl Default for Policy {
    fn default() -> Self {
        Self::with_quiet(QUIET_NS)
    }
}

impl Policy {
    /// A policy that calms after `quiet_ns` without a trigger.
    #[must_use]
    pub fn with_quiet(quiet_ns: u64) -> Self {
        Self {
            quiet_ns,
            escalated: false,
            last_trigger_ns: None,
            pending: None,
            checked: HashMap::new(),
        }
    }

    /// The quiet period before calm.
    #[must_use]
    pub fn quiet_ns(&self) -> u64 {
        self.quiet_ns
    }

    /// Whether the syscall hooks are (to be) attached.
    #[must_use]
    pub fn escalated(&self) -> bool {
        self.escalated
    }

    fn trigger(&mut self, now_ns: u64, reason: impl FnOnce() -> String) {
        self.last_trigger_ns = Some(self.last_trigger_ns.map_or(now_ns, |t| t.max(now_ns)));
        if !self.escalated && self.pending.is_none() {
            self.pending = Some(reason());
        }
    }

    /// Whether the attempt's target is due for a check now (and marks it checked).
    fn due(&mut self, a: &Attempt) -> bool {
        let key = (a.cgroup_id, a.uid, a.target.clone());
        if let Some(&t) = self.checked.get(&key)
            && a.mono_ns < t + CHECK_INTERVAL_NS
        {
            return false;
        }
        if self.checked.len() >= MAX_CHECKED {
            let mut times: Vec<u64> = self.checked.values().copied().collect();
            let mid = times.len() / 2;
            let (_, &mut cutoff, _) = times.select_nth_unstable(mid);
            self.checked.retain(|_, t| *t > cutoff);
        }
        self.checked.insert(key, a.mono_ns);
        true
    }

    /// A connect attempt by a proxy (`is_proxy`) or another process. A proxy's targets are
    /// checked with `check` (at most once per target per interval); a failed check is a trigger
    /// and is returned, for the caller to report as an inferred failure.
    pub fn attempt(
        &mut self,
        a: &Attempt,
        is_proxy: bool,
        check: impl FnOnce(&Attempt) -> Option<CheckFailed>,
    ) -> Option<CheckFailed> {
        // The host's own sockets (nscd, journald, D-Bus: libc and logging connect to them, and
        // a missing nscd is normal) are no upstream: the engine ignores them too.
        if !is_proxy || crate::catalog::system_socket(&a.target).is_some() || !self.due(a) {
            return None;
        }
        let failed = check(a)?;
        self.trigger(a.mono_ns, || {
            format!(
                "{}[{}] connects to {}: {} ({})",
                a.comm,
                a.pid,
                a.target,
                failed.what,
                crate::event::errno_name(failed.errno)
            )
        });
        Some(failed)
    }

    /// A failure of the proxies' configured upstream (the once-a-second check of the targets
    /// their configurations name), even with no attempt seen.
    pub fn configured_target_failed(&mut self, now_ns: u64, target: &str, failed: &CheckFailed) {
        self.trigger(now_ns, || {
            format!("configured upstream {target}: {}", failed.what)
        });
    }

    /// An event from the always-on hooks (or, escalated, any hook); `is_proxy`: the event's
    /// process is a proxy's; `upstream`: a proxy's or an app server's (what the engine looks at).
    pub fn event(&mut self, ev: &Event, is_proxy: bool, upstream: bool) {
        let who = || format!("{}[{}]", ev.comm, ev.pid);
        match &ev.body {
            Body::ConnectFailed {
                target,
                errno_name,
                source,
                ..
            } if is_proxy
                && source != "attempt"
                && crate::catalog::system_socket(target).is_none() =>
            {
                self.trigger(ev.mono_ns, || {
                    format!("{}: connect to {target} failed ({errno_name})", who())
                });
            }
            Body::NetfilterDrop { target, .. } if is_proxy => {
                self.trigger(ev.mono_ns, || {
                    format!("{}: a firewall rule dropped its SYN to {target}", who())
                });
            }
            Body::ConnEnd(c) if is_proxy => {
                self.trigger(ev.mono_ns, || {
                    format!(
                        "{}: connection to {} ended before its answer",
                        who(),
                        c.target
                    )
                });
            }
            Body::ProcessExit {
                exit_code, signal, ..
            } => {
                let abnormal = match (exit_code, signal) {
                    (_, Some(s)) => upstream && !TERMINATION.contains(s),
                    (Some(c), None) => (upstream && *c != 0) || FAILED_START.contains(c),
                    (None, None) => false,
                };
                if abnormal {
                    self.trigger(ev.mono_ns, || match (exit_code, signal) {
                        (_, Some(s)) => {
                            format!("{} killed by {}", who(), crate::event::signal_name(*s))
                        }
                        _ => format!("{} exited with status {}", who(), exit_code.unwrap_or(0)),
                    });
                }
            }
            Body::OomKill {
                victim_pid,
                victim_comm,
                ..
            } => {
                self.trigger(ev.mono_ns, || {
                    format!("OOM kill of {victim_comm}[{victim_pid}]")
                });
            }
            _ => {}
        }
    }

    /// What to do now: escalate for a pending trigger, calm after the quiet period.
    pub fn decide(&mut self, now_ns: u64) -> Option<Decision> {
        if let Some(reason) = self.pending.take() {
            self.escalated = true;
            return Some(Decision::Escalate { reason });
        }
        let quiet = self
            .last_trigger_ns
            .is_none_or(|t| now_ns.saturating_sub(t) >= self.quiet_ns);
        if self.escalated && quiet {
            self.escalated = false;
            return Some(Decision::Calm);
        }
        None
    }

    /// The capture could not escalate: back to calm, the next trigger tries again.
    pub fn escalation_failed(&mut self) {
        self.escalated = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ConnEndInfo;

    const S: u64 = 1_000_000_000;

    fn attempt(at: u64, target: &str) -> Attempt {
        Attempt {
            mono_ns: at,
            pid: 10,
            tid: 11,
            uid: 33,
            gid: 33,
            cgroup_id: 1,
            comm: "nginx".into(),
            target: target.into(),
            count: 1,
        }
    }

    #[expect(
        clippy::unnecessary_wraps,
        reason = "the shape of a check: Policy::attempt takes an Option"
    )]
    fn missing(_: &Attempt) -> Option<CheckFailed> {
        Some(CheckFailed {
            errno: 2,
            what: "no such file".into(),
        })
    }

    fn ev(at: u64, pid: u32, comm: &str, body: Body) -> Event {
        let mut e = Event::of_task(String::new(), at, pid, comm, body);
        e.mono_ns = at;
        e
    }

    #[test]
    fn healthy_attempts_never_escalate() {
        let mut p = Policy::default();
        let mut checks = 0;
        for i in 0..100 {
            let a = attempt(i * S / 10, "unix:/run/app.sock");
            assert_eq!(
                p.attempt(&a, true, |_| {
                    checks += 1;
                    None
                }),
                None
            );
            assert_eq!(p.decide(a.mono_ns), None);
        }
        // 10 s of attempts every 100 ms: checked once a second.
        assert_eq!(checks, 10);
        assert!(!p.escalated());
    }

    #[test]
    fn workers_of_one_proxy_share_a_check() {
        let mut p = Policy::default();
        let mut checks = 0;
        for pid in 10..18 {
            let mut a = attempt(S, "unix:/run/app.sock");
            a.pid = pid;
            p.attempt(&a, true, |_| {
                checks += 1;
                None
            });
        }
        assert_eq!(checks, 1);
        // Another unit (cgroup) with the same path is checked on its own.
        let mut other = attempt(S, "unix:/run/app.sock");
        other.cgroup_id = 2;
        p.attempt(&other, true, |_| {
            checks += 1;
            None
        });
        assert_eq!(checks, 2);
    }

    #[test]
    fn a_failed_check_escalates_once_and_calms_after_the_quiet_period() {
        let mut p = Policy::default();
        let a = attempt(S, "unix:/run/app.sock");
        let failed = p.attempt(&a, true, missing).expect("a failed check");
        assert_eq!(failed.errno, 2);
        let Some(Decision::Escalate { reason }) = p.decide(S) else {
            panic!("no escalation");
        };
        assert!(
            reason.contains("unix:/run/app.sock") && reason.contains("ENOENT"),
            "{reason}"
        );
        // More failures while escalated keep it so, without a second escalation.
        for i in 2..10 {
            p.attempt(&attempt(i * S, "unix:/run/app.sock"), true, missing);
            assert_eq!(p.decide(i * S), None);
        }
        assert_eq!(p.decide(9 * S + QUIET_NS - 1), None);
        assert_eq!(p.decide(9 * S + QUIET_NS), Some(Decision::Calm));
        assert!(!p.escalated());
        assert_eq!(p.decide(9 * S + 2 * QUIET_NS), None);
    }

    #[test]
    fn other_processes_and_system_sockets_are_not_checked() {
        let mut p = Policy::default();
        let never = |_: &Attempt| -> Option<CheckFailed> { panic!("checked") };
        assert_eq!(
            p.attempt(&attempt(S, "unix:/var/run/nscd/socket"), true, never),
            None
        );
        assert_eq!(
            p.attempt(&attempt(S, "unix:/run/x.sock"), false, never),
            None
        );
        assert_eq!(p.attempt(&attempt(S, "127.0.0.1:8000"), false, never), None);
        assert_eq!(p.decide(S), None);
        // A proxy's TCP target is checked too (no route: no socket event would show it).
        let unreachable = p.attempt(&attempt(S, "10.0.0.1:80"), true, |_| {
            Some(CheckFailed {
                errno: 101,
                what: "no route".into(),
            })
        });
        assert_eq!(unreachable.map(|f| f.errno), Some(101));
    }

    #[test]
    fn sock_level_failures_of_proxies_and_upstream_deaths_trigger() {
        let proxy = |pid: u32| pid == 10;
        let cases = [
            (
                10,
                Body::ConnectFailed {
                    target: "127.0.0.1:8000".into(),
                    errno: 111,
                    errno_name: "ECONNREFUSED".into(),
                    source: "tcp_state".into(),
                    count: 1,
                },
            ),
            (
                10,
                Body::NetfilterDrop {
                    target: "127.0.0.1:8000".into(),
                    source_addr: "127.0.0.1:4000".into(),
                    reason: "NETFILTER_DROP".into(),
                    count: 1,
                },
            ),
            (
                10,
                Body::ConnEnd(ConnEndInfo {
                    target: "127.0.0.1:8000".into(),
                    outcome: "eof".into(),
                    errno: 0,
                    peer_close: "fin".into(),
                    peer_pid: None,
                    peer_tid: None,
                    peer_comm: None,
                    peer_exiting: false,
                    requests: 1,
                    established_ns: 0,
                    last_send_ns: 0,
                    prev_recv_ns: None,
                    close_ns: None,
                    wrote_after_close: false,
                    bytes_received: 0,
                    bytes_acked: 0,
                }),
            ),
            (
                20,
                Body::ProcessExit {
                    exit_code: None,
                    signal: Some(9),
                    signal_name: Some("SIGKILL".into()),
                    core_dumped: false,
                },
            ),
            (
                20,
                Body::ProcessExit {
                    exit_code: Some(203),
                    signal: None,
                    signal_name: None,
                    core_dumped: false,
                },
            ),
            (
                0,
                Body::OomKill {
                    victim_pid: 20,
                    victim_comm: "gunicorn".into(),
                    total_vm_kb: 0,
                    anon_rss_kb: 0,
                    file_rss_kb: 0,
                    shmem_rss_kb: 0,
                },
            ),
        ];
        for (pid, body) in cases {
            let mut p = Policy::default();
            let kind = format!("{body:?}");
            p.event(&ev(S, pid, "x", body), proxy(pid), pid == 10 || pid == 20);
            assert!(
                matches!(p.decide(S), Some(Decision::Escalate { .. })),
                "{kind}"
            );
        }
    }

    #[test]
    fn ordinary_ends_and_other_processes_failures_do_not_trigger() {
        let proxy = |pid: u32| pid == 10;
        let cases = [
            (
                20,
                Body::ConnectFailed {
                    target: "unix:/run/x.sock".into(),
                    errno: 2,
                    errno_name: "ENOENT".into(),
                    source: "tcp_state".into(),
                    count: 1,
                },
            ),
            (
                20,
                Body::ProcessExit {
                    exit_code: Some(0),
                    signal: None,
                    signal_name: None,
                    core_dumped: false,
                },
            ),
            (
                20,
                Body::ProcessExit {
                    exit_code: None,
                    signal: Some(15),
                    signal_name: Some("SIGTERM".into()),
                    core_dumped: false,
                },
            ),
            // The inferred failure is the attempt's own report, not a second trigger.
            (
                10,
                Body::ConnectFailed {
                    target: "unix:/run/x.sock".into(),
                    errno: 2,
                    errno_name: "ENOENT".into(),
                    source: "attempt".into(),
                    count: 1,
                },
            ),
        ];
        for (pid, body) in cases {
            let mut p = Policy::default();
            let kind = format!("{body:?}");
            p.event(&ev(S, pid, "x", body), proxy(pid), true);
            assert_eq!(p.decide(S), None, "{kind}");
        }
    }

    #[test]
    fn deaths_of_unrelated_processes_trigger_only_for_a_failed_start() {
        let exit = |code: Option<i32>, sig: Option<i32>| Body::ProcessExit {
            exit_code: code,
            signal: sig,
            signal_name: None,
            core_dumped: false,
        };
        for (body, triggers) in [
            (exit(Some(1), None), false),
            (exit(None, Some(9)), false),
            (exit(Some(203), None), true),
            (exit(Some(127), None), true),
        ] {
            let mut p = Policy::default();
            let kind = format!("{body:?}");
            p.event(&ev(S, 30, "grep", body), false, false);
            assert_eq!(p.decide(S).is_some(), triggers, "{kind}");
        }
    }

    #[test]
    fn a_failed_escalation_is_retried_at_the_next_trigger() {
        let mut p = Policy::default();
        p.configured_target_failed(
            S,
            "unix:/run/app.sock",
            &CheckFailed {
                errno: 2,
                what: "no such file".into(),
            },
        );
        assert!(matches!(p.decide(S), Some(Decision::Escalate { .. })));
        p.escalation_failed();
        assert_eq!(p.decide(2 * S), None);
        p.attempt(&attempt(3 * S, "unix:/run/app.sock"), true, missing);
        assert!(matches!(p.decide(3 * S), Some(Decision::Escalate { .. })));
    }
}
