//! The proxies' configurations in a live session: which upstreams each running proxy master is
//! configured for, read with `gwtrace check`'s own reader ([`crate::check::live::proxy_upstreams`])
//! when gwtrace starts, when a proxy program is executed (a new master, a binary upgrade) and
//! when a master is told to reload (SIGHUP: `nginx -s reload`, `systemctl reload nginx`).
//!
//! Reading one runs `nginx -T` and resolves names: tens of milliseconds, at worst seconds. It
//! happens on a thread of its own, never on the event path; requests are coalesced into rounds
//! at most one a second, each reading at most [`MAX_PER_ROUND`] masters, and a master is read
//! again only when it reloaded or another process took its pid.
use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use crate::event::{Body, Event};
use crate::facts::{ProcInfo, ProxyConfig};

/// A reload takes effect once the master has re-read its files: wait this long after the ask.
const SETTLE: Duration = Duration::from_millis(300);
/// At most one round of reads this often.
const MIN_ROUND: Duration = Duration::from_secs(1);
/// Masters read per round (a host with more proxies gets the rest in the next rounds).
pub const MAX_PER_ROUND: usize = 8;
/// Masters remembered.
const MAX_MASTERS: usize = 1024;
/// Configurations handed over per poll.
const MAX_READY: usize = 64;

/// What makes the watcher look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Look for masters not read yet (start, a proxy program executed).
    Rescan,
    /// This master reloads: read it again.
    Reload(u32),
}

/// Which masters a round reads: the ones never read (or whose pid another process took), and
/// the ones asked to reload. Pure: the process list comes in.
#[derive(Debug, Default)]
pub struct ConfigTracker {
    /// Masters read, with the start time of the instance read (pid reuse).
    read: HashMap<u32, u64>,
    /// Reloads asked for since the last round.
    reloads: HashSet<u32>,
}

impl ConfigTracker {
    /// Notes an ask.
    pub fn ask(&mut self, a: Ask) {
        if let Ask::Reload(pid) = a
            && self.reloads.len() < MAX_MASTERS
        {
            self.reloads.insert(pid);
        }
    }

    /// The masters to read now (at most [`MAX_PER_ROUND`]; the rest stay due), given the live
    /// masters. Masters gone are forgotten.
    pub fn due<'a>(&mut self, masters: &[&'a ProcInfo]) -> Vec<&'a ProcInfo> {
        self.read
            .retain(|pid, _| masters.iter().any(|m| m.pid == *pid));
        let mut out = Vec::new();
        for m in masters {
            if out.len() >= MAX_PER_ROUND {
                break;
            }
            let new = self.read.get(&m.pid) != Some(&m.start_ns);
            if (new || self.reloads.contains(&m.pid)) && self.read.len() < MAX_MASTERS {
                self.read.insert(m.pid, m.start_ns);
                self.reloads.remove(&m.pid);
                out.push(*m);
            }
        }
        // A reload of a process that is not a master (a worker got the SIGHUP) is not one.
        self.reloads
            .retain(|pid| masters.iter().any(|m| m.pid == *pid));
        out
    }

    /// Something is still due (more masters than a round reads).
    #[must_use]
    pub fn pending(&self, masters: &[&ProcInfo]) -> bool {
        masters
            .iter()
            .any(|m| self.read.get(&m.pid) != Some(&m.start_ns) || self.reloads.contains(&m.pid))
    }
}

/// What in the event stream makes the watcher look: a proxy program executed, a proxy told
/// to reload.
#[must_use]
pub fn ask_for(ev: &Event, proxy_names: &[String]) -> Option<Ask> {
    match &ev.body {
        Body::Exec { .. } if proxy_names.contains(&ev.comm) => Some(Ask::Rescan),
        Body::Signal {
            signal,
            target_pid,
            target_comm,
            ..
        } if proxy_names.contains(target_comm)
            && crate::catalog::is_reload_signal(target_comm, *signal) =>
        {
            Some(Ask::Reload(*target_pid))
        }
        _ => None,
    }
}

/// What the thread answers.
enum Answer {
    Config(ProxyConfig),
    /// A round of reads ended (the first one: the masters running at start are known).
    RoundDone,
}

/// The watcher: a thread reading configurations, asked through a channel, answering through
/// another. Dropping it ends the thread (after the read in progress, if any).
pub struct ConfigWatcher {
    asks: Sender<Ask>,
    ready: Receiver<Answer>,
    proxy_names: Vec<String>,
}

impl ConfigWatcher {
    /// Starts the thread with the process lister and the configuration reader, and asks for a
    /// first scan. None when the thread cannot be started (configurations then stay unknown:
    /// the engine falls back on its system-socket rule).
    pub fn spawn<L, R>(proxy_names: Vec<String>, list: L, read: R) -> Option<Self>
    where
        L: FnMut() -> Vec<ProcInfo> + Send + 'static,
        R: FnMut(&ProcInfo) -> Result<ProxyConfig, String> + Send + 'static,
    {
        let (asks, asked) = channel();
        let (done, ready) = channel();
        let spawned = std::thread::Builder::new()
            .name("gwtrace-configs".into())
            .spawn(move || serve(&asked, &done, list, read));
        if let Err(e) = spawned {
            log::warn!(
                "cannot start the configuration reader: {e}; proxies' upstreams stay unknown"
            );
            return None;
        }
        let _ = asks.send(Ask::Rescan);
        Some(Self {
            asks,
            ready,
            proxy_names,
        })
    }

    /// Looks at one event: asks for a read when it calls for one.
    pub fn observe(&self, ev: &Event) {
        if let Some(a) = ask_for(ev, &self.proxy_names) {
            let _ = self.asks.send(a);
        }
    }

    /// Configurations read since the last call (bounded).
    #[must_use]
    pub fn ready(&self) -> Vec<ProxyConfig> {
        self.ready
            .try_iter()
            .take(MAX_READY)
            .filter_map(|a| match a {
                Answer::Config(c) => Some(c),
                Answer::RoundDone => None,
            })
            .collect()
    }

    /// The configurations of the first round (the proxies running at start), waiting for it
    /// at most `timeout`: verdicts from the first failures then already know them.
    #[must_use]
    pub fn first_round(&self, timeout: Duration) -> Vec<ProxyConfig> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while let Ok(a) = self
            .ready
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            match a {
                Answer::Config(c) => out.push(c),
                Answer::RoundDone => break,
            }
        }
        out
    }
}

/// The thread: waits for asks, lets them settle and coalesce, reads what is due.
fn serve<L, R>(asked: &Receiver<Ask>, done: &Sender<Answer>, mut list: L, mut read: R)
where
    L: FnMut() -> Vec<ProcInfo>,
    R: FnMut(&ProcInfo) -> Result<ProxyConfig, String>,
{
    let mut tracker = ConfigTracker::default();
    let mut last_round: Option<Instant> = None;
    let mut more = false;
    loop {
        let wait = if more {
            MIN_ROUND
        } else {
            Duration::from_secs(3600)
        };
        match asked.recv_timeout(wait) {
            Ok(a) => tracker.ask(a),
            Err(RecvTimeoutError::Timeout) if more => {}
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if let Some(t) = last_round {
            // The first round reads at once (the masters running at start); later asks
            // follow a reload or an exec, which take a moment to take effect.
            std::thread::sleep(SETTLE);
            std::thread::sleep(MIN_ROUND.saturating_sub(t.elapsed()));
        }
        for a in asked.try_iter() {
            tracker.ask(a);
        }
        last_round = Some(Instant::now());
        let procs = list();
        let masters = crate::check::live::proxy_masters(&procs);
        for m in tracker.due(&masters) {
            match read(m) {
                Ok(c) => {
                    log::info!(
                        "{} pid {}: {} upstream target(s) from {}{}",
                        c.kind,
                        c.pid,
                        c.targets.len(),
                        c.source,
                        if c.partial { " (partial)" } else { "" }
                    );
                    if done.send(Answer::Config(c)).is_err() {
                        return;
                    }
                }
                Err(e) => log::info!("upstreams of {} pid {} not known: {e}", m.comm, m.pid),
            }
        }
        if done.send(Answer::RoundDone).is_err() {
            return;
        }
        more = tracker.pending(&masters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, parent: u32, comm: &str, start_ns: u64) -> ProcInfo {
        ProcInfo {
            pid,
            ppid: parent,
            comm: comm.into(),
            start_ns,
            ..ProcInfo::default()
        }
    }

    #[test]
    fn masters_are_read_once_then_on_reload_or_pid_reuse() {
        let procs = [
            p(100, 1, "nginx", 5),
            p(101, 100, "nginx", 6),
            p(200, 1, "haproxy", 7),
            p(300, 1, "bash", 8),
        ];
        let masters = crate::check::live::proxy_masters(&procs);
        let pids = |v: Vec<&ProcInfo>| v.iter().map(|m| m.pid).collect::<Vec<_>>();
        assert_eq!(pids(masters.clone()), [100, 200], "workers are not masters");
        let mut t = ConfigTracker::default();
        assert_eq!(pids(t.due(&masters)), [100, 200]);
        assert_eq!(pids(t.due(&masters)), [0u32; 0], "read once");
        t.ask(Ask::Reload(100));
        t.ask(Ask::Reload(101));
        assert!(t.pending(&masters));
        assert_eq!(
            pids(t.due(&masters)),
            [100],
            "a worker's SIGHUP is not a reload"
        );
        assert!(!t.pending(&masters));
        // Another process at pid 100: read again.
        let reused = [p(100, 1, "nginx", 9)];
        let masters = crate::check::live::proxy_masters(&reused);
        assert_eq!(pids(t.due(&masters)), [100]);
        assert_eq!(t.read.len(), 1, "the haproxy that is gone is forgotten");
    }

    #[test]
    fn a_round_is_bounded() {
        let procs: Vec<ProcInfo> = (0..20).map(|i| p(1000 + i, 1, "nginx", 1)).collect();
        let masters = crate::check::live::proxy_masters(&procs);
        let mut t = ConfigTracker::default();
        assert_eq!(t.due(&masters).len(), MAX_PER_ROUND);
        assert!(t.pending(&masters));
        assert_eq!(t.due(&masters).len(), MAX_PER_ROUND);
        assert_eq!(t.due(&masters).len(), 20 - 2 * MAX_PER_ROUND);
        assert!(!t.pending(&masters));
    }

    #[test]
    fn exec_and_sighup_of_proxies_ask() {
        let names = vec!["nginx".to_owned()];
        let ev = |comm: &str, body| Event::of_task(String::new(), 1, 100, comm, body);
        let exec = |comm| {
            ev(
                comm,
                Body::Exec {
                    filename: "/usr/sbin/nginx".into(),
                    cmdline: None,
                },
            )
        };
        let hup = |sig, target_comm: &str| {
            ev(
                "nginx",
                Body::Signal {
                    signal: sig,
                    signal_name: String::new(),
                    sender_pid: 100,
                    target_pid: 42,
                    target_comm: target_comm.into(),
                    code: 0,
                    result: 0,
                },
            )
        };
        assert_eq!(ask_for(&exec("nginx"), &names), Some(Ask::Rescan));
        assert_eq!(ask_for(&exec("gunicorn"), &names), None);
        assert_eq!(ask_for(&hup(1, "nginx"), &names), Some(Ask::Reload(42)));
        assert_eq!(ask_for(&hup(15, "nginx"), &names), None);
        let all = crate::catalog::default_proxy_names();
        assert_eq!(ask_for(&hup(12, "haproxy"), &all), Some(Ask::Reload(42)));
        assert_eq!(ask_for(&hup(10, "apache2"), &all), Some(Ask::Reload(42)));
        assert_eq!(ask_for(&hup(12, "nginx"), &all), None);
        assert_eq!(ask_for(&hup(1, "gunicorn"), &names), None);
    }

    /// The thread reads the masters at start and after a reload, and ends with the watcher.
    #[test]
    fn the_watcher_reads_at_start_and_on_reload() {
        let (seen_tx, seen) = channel();
        let w = ConfigWatcher::spawn(
            vec!["nginx".into()],
            || vec![p(100, 1, "nginx", 5), p(101, 100, "nginx", 6)],
            move |m| {
                let _ = seen_tx.send(m.pid);
                Ok(ProxyConfig {
                    pid: m.pid,
                    kind: "nginx".into(),
                    targets: vec!["127.0.0.1:8000".into()],
                    ..ProxyConfig::default()
                })
            },
        )
        .expect("thread");
        assert_eq!(seen.recv_timeout(Duration::from_secs(10)), Ok(100));
        let got = w.first_round(Duration::from_secs(10));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].targets, ["127.0.0.1:8000"]);
        let hup = Event::of_task(
            String::new(),
            1,
            7,
            "nginx",
            Body::Signal {
                signal: 1,
                signal_name: "SIGHUP".into(),
                sender_pid: 7,
                target_pid: 100,
                target_comm: "nginx".into(),
                code: 0,
                result: 0,
            },
        );
        w.observe(&hup);
        assert_eq!(seen.recv_timeout(Duration::from_secs(10)), Ok(100));
        let t0 = Instant::now();
        let mut again = Vec::new();
        while again.is_empty() && t0.elapsed() < Duration::from_secs(10) {
            again = w.ready();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(again.len(), 1, "read again after the reload");
        drop(w);
        // The thread ends: its reader (and the sender it holds) is dropped.
        let t0 = Instant::now();
        while seen.recv_timeout(Duration::from_millis(100)) != Err(RecvTimeoutError::Disconnected) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "thread still running"
            );
        }
    }
}
