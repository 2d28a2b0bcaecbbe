//! Prometheus metrics for `gwtrace serve`: updated from the same events, kernel counters and
//! verdicts the CLI sees, encoded in the Prometheus text format (0.0.4) on demand.
//!
//! No I/O here: the caller feeds [`Metrics::observe`] (every event line),
//! [`Metrics::set_counters`] (the kernel's per-CPU counters, each tick),
//! [`Metrics::set_verdicts`] (the engine's verdicts, each tick) and [`Metrics::settle_deaths`]
//! (which dead processes were upstream workers, as the engine decides), and serves
//! [`Exporter::encode`] from any thread.
//!
//! Label cardinality is bounded: at most [`MetricsConfig::max_targets`] distinct targets and
//! [`MetricsConfig::max_comms`] distinct process names get their own series; later ones are
//! folded into [`OTHER`]. Errno and signal labels come from small fixed sets, cause labels from
//! the catalog ([`Cause::OBSERVED`] exist at 0 before the first verdict, so alerts on
//! `gwtrace_verdicts_active > 0` need no `absent()`).
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    sync::Arc,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::{Metric, Registry},
};

use crate::{
    capture::Counters,
    catalog::{Cause, ProcNames, ProxyRule, default_proxy_names, system_socket},
    engine::{Verdict, VerdictState},
    event::{Body, Event, errno_name},
};

/// The label value that stands for every target or name past the cap.
pub const OTHER: &str = "other";
/// `Content-Type` of [`Exporter::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// A verdict whose last symptom is at most this old counts as active.
pub const ACTIVE_NS: u64 = 60_000_000_000;
/// Loss reasons of `loss` events (docs/events.md).
pub const LOSS_REASONS: &[&str] = &[
    "ringbuf_full",
    "map_full",
    "tcp_owner_unknown",
    "user_read_failed",
    "context_read_failed",
    "kernel_read_failed",
    "scratch_missing",
    "syscall_entry_missing",
    "tracepoint_recursion",
];
/// Deaths waiting for [`Metrics::settle_deaths`] beyond this are dropped (oldest first).
const MAX_PENDING_DEATHS: usize = 4096;
/// Processes remembered from `facts` lines (parent and name), to tell a proxy's workers.
const MAX_PROCS: usize = 65_536;
/// Proxy pids remembered from `facts` lines.
const MAX_FACT_PROXIES: usize = 4096;
/// OOM victims remembered until their exit arrives.
const MAX_OOM_VICTIMS: usize = 1024;

/// Errors encoding the metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("encoding the metrics failed")]
    Encode(#[from] std::fmt::Error),
}

/// Which processes are proxies, and how many distinct label values to allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Process names (comm) of proxies: only their failed connects are counted per target.
    pub proxy_names: Vec<String>,
    /// Pids named as proxies.
    pub proxy_pids: Vec<u32>,
    /// Distinct `target` label values before folding into [`OTHER`].
    pub max_targets: usize,
    /// Distinct process-name label values (`proxy`, `app`, `comm`) before folding into [`OTHER`].
    pub max_comms: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            proxy_names: default_proxy_names(),
            proxy_pids: Vec::new(),
            max_targets: 64,
            max_comms: 32,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectLabels {
    proxy: String,
    target: String,
    errno: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommErrnoLabels {
    comm: String,
    errno: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeathLabels {
    app: String,
    /// `signal`, `exit` or `oom`.
    cause: String,
    /// The signal name (`SIGSEGV`), the exit code (`3`), or `SIGKILL` for OOM kills.
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrnoLabels {
    errno: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// A set of label values that stops growing at `max`: later values read as [`OTHER`].
#[derive(Debug)]
struct Capped {
    seen: HashSet<String>,
    max: usize,
}

impl Capped {
    fn new(max: usize) -> Self {
        Self {
            seen: HashSet::new(),
            max,
        }
    }

    fn label(&mut self, value: &str) -> String {
        if self.seen.contains(value) {
            return value.to_owned();
        }
        if value == OTHER || self.seen.len() >= self.max {
            return OTHER.to_owned();
        }
        self.seen.insert(value.to_owned());
        value.to_owned()
    }
}

/// A process that ended abnormally, not yet known to be an upstream worker or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Death {
    pub pid: u32,
    pub comm: String,
    /// `signal`, `exit` or `oom`.
    pub cause: &'static str,
    /// Signal name, exit code, or `SIGKILL` for OOM kills.
    pub code: String,
}

/// The metrics and the state that keeps their labels bounded.
#[derive(Debug)]
pub struct Metrics {
    cfg: MetricsConfig,
    registry: Arc<Registry>,
    connect_failures: Family<ConnectLabels, Counter>,
    accept_failures: Family<CommErrnoLabels, Counter>,
    upstream_deaths: Family<DeathLabels, Counter>,
    verdicts_active: Family<CauseLabels, Gauge>,
    verdicts: Family<CauseLabels, Gauge>,
    lost: Family<ReasonLabels, Counter>,
    events: Family<KindLabels, Counter>,
    kernel_connects: Family<ResultLabels, Counter>,
    kernel_connect_errors: Family<ErrnoLabels, Counter>,
    kernel_tcp_connects: Family<ResultLabels, Counter>,
    kernel_accepts: Family<ResultLabels, Counter>,
    kernel_accept_errors: Family<ErrnoLabels, Counter>,
    /// `--hooks auto`: 1 while the syscall hooks are attached, and how often they were.
    hooks_escalated: Gauge,
    hooks_escalations: Counter,
    targets: Capped,
    comms: Capped,
    /// Causes with a series: the observed ones from the start, any other once labelled.
    causes: BTreeSet<Cause>,
    /// Parent and name of processes `facts` lines described, for the proxy rule.
    procs: HashMap<u32, (u32, String)>,
    /// Pids `facts` lines named as proxies.
    fact_proxies: HashSet<u32>,
    pending: VecDeque<Death>,
    oom_victims: VecDeque<u32>,
}

/// The read side of [`Metrics`], for the HTTP thread: cheap to clone, `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Exporter {
    registry: Arc<Registry>,
}

impl Exporter {
    /// The Prometheus text exposition (format 0.0.4) of every metric, as of now.
    pub fn encode(&self) -> Result<String, MetricsError> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The label of an errno: its name (`ECONNREFUSED`), or its number when it has none here.
fn errno_label(errno: i32) -> String {
    match errno_name(errno) {
        "E?" => errno.to_string(),
        n => n.to_owned(),
    }
}

/// Sets a counter that mirrors an absolute kernel total (monotonic while the maps live).
fn mirror(c: &Counter, total: u64) {
    let cur = c.get();
    if total > cur {
        c.inc_by(total - cur);
    }
}

/// A new metric registered under `name` (the registry's prefix and, for counters, `_total`
/// are added), and the handle that updates it.
fn register<M: Metric + Default + Clone>(r: &mut Registry, name: &str, help: &str) -> M {
    let m = M::default();
    r.register(name, help, m.clone());
    m
}

impl Metrics {
    /// Registers every metric, with the label sets that always exist at 0.
    #[must_use]
    pub fn new(cfg: MetricsConfig) -> Self {
        let mut r = Registry::with_prefix("gwtrace");
        let mut m = Self {
            connect_failures: register(
                &mut r,
                "connect_failures",
                "Failed upstream connects of proxy processes, by proxy name, target and errno",
            ),
            accept_failures: register(
                &mut r,
                "accept_failures",
                "Failed accepts (EMFILE, ENFILE, ENOBUFS, ...) by process name and errno",
            ),
            upstream_deaths: register(
                &mut r,
                "upstream_deaths",
                "Upstream (app server) processes that died: killed by a signal, exited non-zero, or OOM-killed",
            ),
            verdicts_active: register(
                &mut r,
                "verdicts_active",
                "Established 502/504 causes with a symptom in the last minute, by cause id",
            ),
            verdicts: register(
                &mut r,
                "verdicts",
                "Established 502/504 causes (any age), by cause id",
            ),
            lost: register(
                &mut r,
                "lost_events",
                "Events the kernel or gwtrace could not deliver, by reason",
            ),
            events: register(
                &mut r,
                "events",
                "Event lines produced (all processes), by kind",
            ),
            kernel_connects: register(
                &mut r,
                "kernel_connects",
                "connect() syscalls on the host, by result (ok, in_progress, failed), counted while the syscall hooks are attached: always with --hooks full, while escalated with auto, never with sock",
            ),
            kernel_connect_errors: register(
                &mut r,
                "kernel_connect_errors",
                "Failed connects on the host (every process), by errno",
            ),
            kernel_tcp_connects: register(
                &mut r,
                "kernel_tcp_connects",
                "TCP handshakes on the host, by result (established, failed, abandoned)",
            ),
            kernel_accepts: register(
                &mut r,
                "kernel_accepts",
                "accept()/accept4() syscalls on the host, by result (ok, failed), counted while the syscall hooks are attached (as kernel_connects)",
            ),
            kernel_accept_errors: register(
                &mut r,
                "kernel_accept_errors",
                "Failed accepts on the host (every process), by errno",
            ),
            hooks_escalated: register(
                &mut r,
                "hooks_escalated",
                "1 while --hooks auto has the syscall hooks attached (an anomaly is suspected), else 0",
            ),
            hooks_escalations: register(
                &mut r,
                "hooks_escalations",
                "Times --hooks auto attached the syscall hooks",
            ),
            registry: Arc::new(Registry::default()),
            targets: Capped::new(cfg.max_targets),
            comms: Capped::new(cfg.max_comms),
            causes: Cause::OBSERVED.into_iter().collect(),
            procs: HashMap::new(),
            fact_proxies: HashSet::new(),
            cfg,
            pending: VecDeque::new(),
            oom_victims: VecDeque::new(),
        };
        r.register(
            "build",
            "gwtrace build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            }),
        );
        m.registry = Arc::new(r);
        m.seed();
        m
    }

    /// Creates the series that exist before anything happens (at 0), so queries and alerts
    /// find them.
    fn seed(&mut self) {
        for cause in &self.causes {
            let l = CauseLabels {
                cause: cause.id().to_owned(),
            };
            drop(self.verdicts_active.get_or_create(&l));
            drop(self.verdicts.get_or_create(&l));
        }
        for reason in LOSS_REASONS {
            drop(self.lost.get_or_create(&ReasonLabels {
                reason: (*reason).to_owned(),
            }));
        }
        let results = |f: &Family<ResultLabels, Counter>, names: &[&str]| {
            for n in names {
                drop(f.get_or_create(&ResultLabels {
                    result: (*n).to_owned(),
                }));
            }
        };
        results(&self.kernel_connects, &["ok", "in_progress", "failed"]);
        results(
            &self.kernel_tcp_connects,
            &["established", "failed", "abandoned"],
        );
        results(&self.kernel_accepts, &["ok", "failed"]);
    }

    /// The read side, for the thread that serves `/metrics`.
    #[must_use]
    pub fn exporter(&self) -> Exporter {
        Exporter {
            registry: Arc::clone(&self.registry),
        }
    }

    /// Shorthand for `self.exporter().encode()`.
    pub fn encode(&self) -> Result<String, MetricsError> {
        self.exporter().encode()
    }

    /// The catalog's [`ProxyRule`], the engine's: named or listed (configuration or facts),
    /// or the child of such a process (a proxy master's workers).
    fn is_proxy(&self, ev: &Event) -> bool {
        let listed =
            |pid: u32| self.cfg.proxy_pids.contains(&pid) || self.fact_proxies.contains(&pid);
        let rule = ProxyRule {
            names: &self.cfg.proxy_names,
            listed: &listed,
        };
        let me = self.procs.get(&ev.pid);
        let names = [ev.comm.as_str(), me.map_or("", |(_, c)| c.as_str())];
        let parent = me.map(|&(ppid, _)| {
            let comm = self.procs.get(&ppid).map_or("", |(_, c)| c.as_str());
            (ppid, [comm])
        });
        rule.is_proxy(
            ProcNames {
                pid: ev.pid,
                names: &names,
            },
            parent
                .as_ref()
                .map(|(pid, names)| ProcNames { pid: *pid, names }),
        )
    }

    /// Remembers the process tree and proxy pids a `facts` line carries (bounded).
    fn learn(&mut self, f: &crate::facts::FactsUpdate) {
        for p in &f.processes {
            if self.procs.len() < MAX_PROCS || self.procs.contains_key(&p.pid) {
                self.procs.insert(p.pid, (p.ppid, p.comm.clone()));
            }
        }
        for &pid in &f.proxies {
            if self.fact_proxies.len() < MAX_FACT_PROXIES {
                self.fact_proxies.insert(pid);
            }
        }
    }

    /// Takes one event line (in order, as `gwtrace record` writes them).
    pub fn observe(&mut self, ev: &Event) {
        self.events
            .get_or_create(&KindLabels {
                kind: ev.kind().to_owned(),
            })
            .inc();
        match &ev.body {
            Body::ConnectFailed {
                target,
                errno,
                count,
                ..
            } if self.is_proxy(ev) && system_socket(target).is_none() => {
                let labels = ConnectLabels {
                    proxy: self.comms.label(&ev.comm),
                    target: self.targets.label(target),
                    errno: errno_label(*errno),
                };
                self.connect_failures.get_or_create(&labels).inc_by(*count);
            }
            Body::AcceptFailed { errno, .. } => {
                let labels = CommErrnoLabels {
                    comm: self.comms.label(&ev.comm),
                    errno: errno_label(*errno),
                };
                self.accept_failures.get_or_create(&labels).inc();
            }
            Body::OomKill { victim_pid, .. } => {
                if self.oom_victims.len() >= MAX_OOM_VICTIMS {
                    self.oom_victims.pop_front();
                }
                self.oom_victims.push_back(*victim_pid);
            }
            Body::ProcessExit {
                exit_code,
                signal,
                signal_name,
                ..
            } => {
                self.procs.remove(&ev.pid);
                let oom = self.oom_victims.iter().position(|&p| p == ev.pid);
                let (cause, code) = if let Some(i) = oom {
                    self.oom_victims.remove(i);
                    (
                        "oom",
                        signal_name.clone().unwrap_or_else(|| "SIGKILL".into()),
                    )
                } else if let Some(sig) = signal {
                    (
                        "signal",
                        signal_name
                            .clone()
                            .filter(|n| n != "SIG?")
                            .unwrap_or_else(|| sig.to_string()),
                    )
                } else {
                    match exit_code {
                        Some(0) | None => return,
                        Some(c) => ("exit", c.to_string()),
                    }
                };
                if self.pending.len() >= MAX_PENDING_DEATHS {
                    self.pending.pop_front();
                }
                self.pending.push_back(Death {
                    pid: ev.pid,
                    comm: ev.comm.clone(),
                    cause,
                    code,
                });
            }
            Body::Facts(f) => self.learn(f),
            Body::Hooks { state, .. } => {
                let escalated = state == "escalated";
                self.hooks_escalated.set(i64::from(escalated));
                if escalated {
                    self.hooks_escalations.inc();
                }
            }
            Body::Loss { reason, count } => {
                let reason = if LOSS_REASONS.contains(&reason.as_str()) {
                    reason.clone()
                } else {
                    OTHER.to_owned()
                };
                self.lost
                    .get_or_create(&ReasonLabels { reason })
                    .inc_by(*count);
            }
            _ => {}
        }
    }

    /// Abnormal deaths seen since the last [`Metrics::settle_deaths`].
    #[must_use]
    pub fn pending_deaths(&self) -> Vec<Death> {
        self.pending.iter().cloned().collect()
    }

    /// Counts the pending deaths that `is_upstream` (given every pending pid at once, answering
    /// one bool per pid) says were upstream workers, and forgets them all.
    pub fn settle_deaths(&mut self, is_upstream: impl FnOnce(&[u32]) -> Vec<bool>) {
        if self.pending.is_empty() {
            return;
        }
        let pending: Vec<Death> = self.pending.drain(..).collect();
        let pids: Vec<u32> = pending.iter().map(|d| d.pid).collect();
        let verdict = is_upstream(&pids);
        for (d, up) in pending.iter().zip(verdict) {
            if !up {
                continue;
            }
            let labels = DeathLabels {
                app: self.comms.label(&d.comm),
                cause: d.cause.to_owned(),
                code: d.code.clone(),
            };
            self.upstream_deaths.get_or_create(&labels).inc();
        }
    }

    /// Mirrors the kernel's counters (absolute totals since the capture started).
    pub fn set_counters(&mut self, c: &Counters) {
        use probe_common::{
            CNT_ACCEPT_FAILED, CNT_ACCEPT_OK, CNT_CONNECT_FAILED, CNT_CONNECT_INPROGRESS,
            CNT_CONNECT_OK, CNT_TCP_ABANDONED, CNT_TCP_ESTABLISHED, CNT_TCP_FAILED,
        };
        let get = |i: u32| c.counters.get(i as usize).copied().unwrap_or(0);
        let set = |f: &Family<ResultLabels, Counter>, result: &str, idx: u32| {
            mirror(
                &f.get_or_create(&ResultLabels {
                    result: result.to_owned(),
                }),
                get(idx),
            );
        };
        set(&self.kernel_connects, "ok", CNT_CONNECT_OK);
        set(&self.kernel_connects, "in_progress", CNT_CONNECT_INPROGRESS);
        set(&self.kernel_connects, "failed", CNT_CONNECT_FAILED);
        set(
            &self.kernel_tcp_connects,
            "established",
            CNT_TCP_ESTABLISHED,
        );
        set(&self.kernel_tcp_connects, "failed", CNT_TCP_FAILED);
        set(&self.kernel_tcp_connects, "abandoned", CNT_TCP_ABANDONED);
        set(&self.kernel_accepts, "ok", CNT_ACCEPT_OK);
        set(&self.kernel_accepts, "failed", CNT_ACCEPT_FAILED);
        let per_errno = |f: &Family<ErrnoLabels, Counter>, slots: &[u64]| {
            // Slot 0 is success; the others are errno values.
            for (errno, &n) in slots.iter().enumerate().skip(1) {
                if n == 0 {
                    continue;
                }
                let errno = i32::try_from(errno).unwrap_or(i32::MAX);
                mirror(
                    &f.get_or_create(&ErrnoLabels {
                        errno: errno_label(errno),
                    }),
                    n,
                );
            }
        };
        per_errno(&self.kernel_connect_errors, &c.connect_errno);
        per_errno(&self.kernel_accept_errors, &c.accept_errno);
    }

    /// Sets the verdict gauges from the engine's current verdicts.
    pub fn set_verdicts(&mut self, verdicts: &[Verdict], now_mono_ns: u64) {
        // Every cause ever labelled is set on every tick, so one that went away reads 0.
        self.causes.extend(verdicts.iter().map(|v| v.cause));
        let mut all: BTreeMap<Cause, (i64, i64)> =
            self.causes.iter().map(|&c| (c, (0, 0))).collect();
        for v in verdicts {
            let e = all.entry(v.cause).or_default();
            e.0 += 1;
            // Resolved and superseded verdicts no longer stand (a verdict with no state comes
            // from outside a tracked run and stands).
            let standing = v.life.state.is_none_or(VerdictState::is_active);
            if standing && now_mono_ns.saturating_sub(v.last_seen_ns) <= ACTIVE_NS {
                e.1 += 1;
            }
        }
        for (cause, (n, active)) in all {
            let l = CauseLabels {
                cause: cause.id().to_owned(),
            };
            self.verdicts.get_or_create(&l).set(n);
            self.verdicts_active.get_or_create(&l).set(active);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(pid: u32, comm: &str, body: Body) -> Event {
        let mut e = Event::of_task(
            "2026-01-01T00:00:00Z".into(),
            1_000_000_000,
            pid,
            comm,
            body,
        );
        e.cgroup_id = 1;
        e
    }

    fn failed(target: &str, errno: i32) -> Body {
        Body::ConnectFailed {
            target: target.into(),
            errno,
            errno_name: errno_name(errno).into(),
            source: "syscall".into(),
            count: 1,
        }
    }

    fn exit(code: Option<i32>, signal: Option<i32>) -> Body {
        Body::ProcessExit {
            exit_code: code,
            signal,
            signal_name: signal.map(|s| crate::event::signal_name(s).to_owned()),
            core_dumped: false,
        }
    }

    /// The sample line of a series (`name{labels} value`), if present.
    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == series))
            .and_then(|l| l.rsplit_once(' ').map(|(_, v)| v))
    }

    #[test]
    fn proxy_connect_failures_by_target_and_errno() {
        let mut m = Metrics::new(MetricsConfig::default());
        for _ in 0..3 {
            m.observe(&ev(10, "nginx", failed("127.0.0.1:8000", 111)));
        }
        m.observe(&ev(10, "nginx", failed("unix:/run/app.sock", 2)));
        // Not a proxy: never a per-target series.
        m.observe(&ev(11, "curl", failed("127.0.0.1:9", 111)));
        let t = m.encode().unwrap();
        assert_eq!(
            sample(
                &t,
                r#"gwtrace_connect_failures_total{proxy="nginx",target="127.0.0.1:8000",errno="ECONNREFUSED"}"#
            ),
            Some("3"),
            "{t}"
        );
        assert_eq!(
            sample(
                &t,
                r#"gwtrace_connect_failures_total{proxy="nginx",target="unix:/run/app.sock",errno="ENOENT"}"#
            ),
            Some("1")
        );
        assert!(!t.contains("curl"), "{t}");
        assert_eq!(
            sample(&t, r#"gwtrace_events_total{kind="connect_failed"}"#),
            Some("5")
        );
    }

    /// nginx's user lookups on start and reload try nscd: not an upstream connect, no series.
    #[test]
    fn connects_to_system_sockets_are_not_upstream_failures() {
        let mut m = Metrics::new(MetricsConfig::default());
        m.observe(&ev(10, "nginx", failed("unix:/var/run/nscd/socket", 2)));
        m.observe(&ev(10, "nginx", failed("unix:/dev/log", 111)));
        let t = m.encode().unwrap();
        assert!(!t.contains("gwtrace_connect_failures_total{"), "{t}");
        assert_eq!(
            sample(&t, r#"gwtrace_events_total{kind="connect_failed"}"#),
            Some("2"),
            "still events"
        );
    }

    #[test]
    fn proxy_by_pid_counts_whatever_its_name() {
        let mut m = Metrics::new(MetricsConfig {
            proxy_pids: vec![42],
            ..MetricsConfig::default()
        });
        m.observe(&ev(42, "myproxy", failed("10.0.0.1:80", 110)));
        let t = m.encode().unwrap();
        assert_eq!(
            sample(
                &t,
                r#"gwtrace_connect_failures_total{proxy="myproxy",target="10.0.0.1:80",errno="ETIMEDOUT"}"#
            ),
            Some("1")
        );
    }

    /// The engine's proxy rule: a listed master's worker (its child, from a `facts` line),
    /// and a pid the facts name as a proxy, count; a child of a non-proxy does not.
    #[test]
    fn workers_of_a_listed_master_count_like_in_the_engine() {
        use crate::facts::{FactsUpdate, ProcInfo};
        let mut m = Metrics::new(MetricsConfig {
            proxy_pids: vec![42],
            ..MetricsConfig::default()
        });
        let proc = |pid, ppid, comm: &str| ProcInfo {
            pid,
            ppid,
            comm: comm.into(),
            ..ProcInfo::default()
        };
        m.observe(&Event::facts(
            String::new(),
            1,
            FactsUpdate {
                processes: vec![
                    proc(42, 1, "myproxy"),
                    proc(43, 42, "myproxy-w"),
                    proc(50, 7, "curl"),
                ],
                proxies: vec![60],
                ..FactsUpdate::default()
            },
        ));
        m.observe(&ev(43, "myproxy-w", failed("10.0.0.1:80", 111)));
        m.observe(&ev(60, "edge", failed("10.0.0.2:80", 111)));
        m.observe(&ev(50, "curl", failed("10.0.0.3:80", 111)));
        let t = m.encode().unwrap();
        assert_eq!(
            sample(
                &t,
                r#"gwtrace_connect_failures_total{proxy="myproxy-w",target="10.0.0.1:80",errno="ECONNREFUSED"}"#
            ),
            Some("1"),
            "{t}"
        );
        assert_eq!(
            sample(
                &t,
                r#"gwtrace_connect_failures_total{proxy="edge",target="10.0.0.2:80",errno="ECONNREFUSED"}"#
            ),
            Some("1"),
            "{t}"
        );
        assert!(!t.contains("10.0.0.3"), "{t}");
        // Once the worker exited, its pid is no longer taken for the master's.
        m.observe(&ev(43, "myproxy-w", exit(Some(0), None)));
        m.observe(&ev(43, "other", failed("10.0.0.4:80", 111)));
        assert!(!m.encode().unwrap().contains("10.0.0.4"));
    }

    #[test]
    fn targets_past_the_cap_fold_into_other() {
        let mut m = Metrics::new(MetricsConfig {
            max_targets: 2,
            ..MetricsConfig::default()
        });
        for port in 0..10 {
            m.observe(&ev(10, "nginx", failed(&format!("127.0.0.1:{port}"), 111)));
        }
        // A target seen before the cap keeps its series.
        m.observe(&ev(10, "nginx", failed("127.0.0.1:0", 111)));
        let t = m.encode().unwrap();
        let series: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("gwtrace_connect_failures_total{"))
            .collect();
        assert_eq!(series.len(), 3, "{series:?}");
        assert_eq!(
            sample(
                &t,
                r#"gwtrace_connect_failures_total{proxy="nginx",target="other",errno="ECONNREFUSED"}"#
            ),
            Some("8")
        );
        assert_eq!(
            sample(
                &t,
                r#"gwtrace_connect_failures_total{proxy="nginx",target="127.0.0.1:0",errno="ECONNREFUSED"}"#
            ),
            Some("2")
        );
    }

    #[test]
    fn unknown_errno_is_its_number() {
        assert_eq!(errno_label(111), "ECONNREFUSED");
        assert_eq!(errno_label(150), "150");
    }

    #[test]
    fn upstream_deaths_by_cause_only_when_upstream() {
        let mut m = Metrics::new(MetricsConfig::default());
        m.observe(&ev(100, "gunicorn", exit(None, Some(11))));
        m.observe(&ev(101, "gunicorn", exit(Some(3), None)));
        m.observe(&ev(102, "gunicorn", exit(Some(0), None))); // clean exit: not a death
        m.observe(&ev(
            1,
            "python3",
            Body::OomKill {
                victim_pid: 103,
                victim_comm: "gunicorn".into(),
                total_vm_kb: 1,
                anon_rss_kb: 1,
                file_rss_kb: 0,
                shmem_rss_kb: 0,
            },
        ));
        m.observe(&ev(103, "gunicorn", exit(None, Some(9))));
        m.observe(&ev(200, "grep", exit(Some(1), None))); // not an upstream
        assert_eq!(
            m.pending_deaths().iter().map(|d| d.pid).collect::<Vec<_>>(),
            [100, 101, 103, 200]
        );
        let mut asked = Vec::new();
        m.settle_deaths(|pids| {
            asked = pids.to_vec();
            pids.iter().map(|&p| p != 200).collect()
        });
        assert_eq!(asked, [100, 101, 103, 200]);
        assert_eq!(m.pending_deaths(), []);
        let t = m.encode().unwrap();
        for (labels, n) in [
            (r#"app="gunicorn",cause="signal",code="SIGSEGV""#, "1"),
            (r#"app="gunicorn",cause="exit",code="3""#, "1"),
            (r#"app="gunicorn",cause="oom",code="SIGKILL""#, "1"),
        ] {
            assert_eq!(
                sample(&t, &format!("gwtrace_upstream_deaths_total{{{labels}}}")),
                Some(n),
                "{labels}\n{t}"
            );
        }
        assert!(!t.contains("grep"), "{t}");
        assert!(!t.contains(r#"cause="signal",code="SIGKILL""#), "{t}");
    }

    #[test]
    fn kernel_counters_are_mirrored_not_added() {
        use probe_common::{CNT_ACCEPT_OK, CNT_CONNECT_OK, CNT_TCP_FAILED, NUM_COUNTERS};
        let mut m = Metrics::new(MetricsConfig::default());
        let mut c = Counters {
            counters: vec![0; NUM_COUNTERS as usize],
            connect_errno: vec![0; 160],
            accept_errno: vec![0; 160],
            recursion_misses: 0,
        };
        c.counters[CNT_CONNECT_OK as usize] = 7;
        c.counters[CNT_ACCEPT_OK as usize] = 5;
        c.counters[CNT_TCP_FAILED as usize] = 2;
        c.connect_errno[111] = 2;
        c.accept_errno[24] = 1;
        m.set_counters(&c);
        c.counters[CNT_CONNECT_OK as usize] = 9;
        m.set_counters(&c);
        let t = m.encode().unwrap();
        assert_eq!(
            sample(&t, r#"gwtrace_kernel_connects_total{result="ok"}"#),
            Some("9")
        );
        assert_eq!(
            sample(&t, r#"gwtrace_kernel_connects_total{result="failed"}"#),
            Some("0")
        );
        assert_eq!(
            sample(&t, r#"gwtrace_kernel_accepts_total{result="ok"}"#),
            Some("5")
        );
        assert_eq!(
            sample(&t, r#"gwtrace_kernel_tcp_connects_total{result="failed"}"#),
            Some("2")
        );
        assert_eq!(
            sample(
                &t,
                r#"gwtrace_kernel_connect_errors_total{errno="ECONNREFUSED"}"#
            ),
            Some("2")
        );
        assert_eq!(
            sample(&t, r#"gwtrace_kernel_accept_errors_total{errno="EMFILE"}"#),
            Some("1")
        );
    }

    #[test]
    fn loss_by_reason() {
        let mut m = Metrics::new(MetricsConfig::default());
        m.observe(&ev(
            1,
            "gwtrace",
            Body::Loss {
                reason: "ringbuf_full".into(),
                count: 12,
            },
        ));
        m.observe(&ev(
            1,
            "gwtrace",
            Body::Loss {
                reason: "something_new".into(),
                count: 1,
            },
        ));
        let t = m.encode().unwrap();
        assert_eq!(
            sample(&t, r#"gwtrace_lost_events_total{reason="ringbuf_full"}"#),
            Some("12")
        );
        assert_eq!(
            sample(&t, r#"gwtrace_lost_events_total{reason="map_full"}"#),
            Some("0")
        );
        assert_eq!(
            sample(&t, r#"gwtrace_lost_events_total{reason="other"}"#),
            Some("1")
        );
    }

    fn verdict(cause: Cause, last_seen_ns: u64) -> Verdict {
        Verdict {
            cause,
            status: 502,
            proxy_pid: 10,
            proxy_comm: "nginx".into(),
            target: "127.0.0.1:8000".into(),
            count: 3,
            first_seen_ns: 0,
            last_seen_ns,
            rate_per_s: 1.0,
            summary: String::new(),
            evidence: Vec::new(),
            fix: String::new(),
            proxy_origin: None,
            proxy_net_ns: None,
            upstream_pid: None,
            upstream_origin: None,
            broken_connections: Vec::new(),
            life: crate::engine::Life::default(),
            errno_from: None,
        }
    }

    #[test]
    fn verdict_gauges_follow_the_engine() {
        let mut m = Metrics::new(MetricsConfig::default());
        let now = 200_000_000_000;
        m.set_verdicts(
            &[
                verdict(Cause::UpstreamNotListening, now - 1_000_000_000),
                verdict(Cause::UpstreamNotListening, now - 120_000_000_000),
                verdict(Cause::WorkerCrashed, now - 120_000_000_000),
            ],
            now,
        );
        let t = m.encode().unwrap();
        let g = |name: &str, cause: &str| {
            sample(&t, &format!("gwtrace_{name}{{cause=\"{cause}\"}}")).map(str::to_owned)
        };
        assert_eq!(
            g("verdicts", "upstream-not-listening").as_deref(),
            Some("2")
        );
        assert_eq!(
            g("verdicts_active", "upstream-not-listening").as_deref(),
            Some("1")
        );
        assert_eq!(g("verdicts_active", "worker-crashed").as_deref(), Some("0"));
        assert_eq!(g("verdicts", "socket-missing").as_deref(), Some("0"));
        // The next tick replaces, never accumulates.
        m.set_verdicts(&[], now);
        let t = m.encode().unwrap();
        assert_eq!(
            sample(&t, r#"gwtrace_verdicts{cause="upstream-not-listening"}"#),
            Some("0")
        );
    }

    #[test]
    fn exposition_is_prometheus_text_with_build_info() {
        let m = Metrics::new(MetricsConfig::default());
        let t = m.encode().unwrap();
        assert!(
            t.contains(&format!(
                "gwtrace_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{t}"
        );
        assert!(
            t.contains("# TYPE gwtrace_lost_events_total counter"),
            "{t}"
        );
        assert!(!t.contains("# EOF"), "classic text format, not OpenMetrics");
        assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    }
}
