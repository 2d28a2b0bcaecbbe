//! The live source: the kernel capture (decode and fold happen there), enriched with `/proc`
//! facts and attributed to cgroups, units and containers before anything else sees the events.
use super::{Source, SourceError};
use crate::{
    capture::{Capture, Counters, Hooks},
    catalog::{ProcNames, ProxyRule},
    check::live::proxy_upstreams,
    enrich::{Enricher, configs::ConfigWatcher},
    event::{Body, Clock, Event, monotonic_ns},
    facts::FactSource as _,
    facts::{FactsUpdate, ProcInfo},
    host::SystemFacts,
    host::cgroup::Resolver,
};

/// What to capture and whom to enrich for.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub hooks: Hooks,
    /// Proxy process names (the enricher reads their facts).
    pub proxy_names: Vec<String>,
    /// Proxy pids named on the command line.
    pub proxy_pids: Vec<u32>,
}

/// Longest wait at start for the running proxies' configurations.
const FIRST_CONFIGS: std::time::Duration = std::time::Duration::from_secs(2);

/// A running capture with its enricher and origin resolver.
pub struct Live {
    /// None once finished: dropping the capture detaches every program, frees every map.
    capture: Option<Capture>,
    clock: Clock,
    enricher: Enricher<SystemFacts>,
    origins: Resolver,
    /// Reads the proxies' configurations (their upstreams) off the event path.
    configs: Option<ConfigWatcher>,
    /// The first snapshot of the host, handed over with the first drain.
    pending: Vec<Event>,
    raw: Vec<Event>,
    /// Proxy names and pids, for the watched processes.
    proxy_names: Vec<String>,
    proxy_pids: Vec<u32>,
}

impl Live {
    /// Attaches every program and takes the first snapshot of the host's facts.
    pub fn start(opts: &LiveOptions) -> Result<Self, crate::capture::CaptureError> {
        let mut capture = Capture::start(opts.hooks)?;
        // Names first: a proxy that starts from now on is watched at its exec.
        capture.watch_names(&opts.proxy_names);
        let clock = capture.clock();
        let mut enricher = Enricher::new(SystemFacts::new(), opts.proxy_names.clone());
        let mut origins = Resolver::system();
        let now = monotonic_ns();
        let snapshot = enricher.snapshot(&opts.proxy_pids);
        origins.learn(&snapshot.processes);
        watch_proxies(
            &mut capture,
            &opts.proxy_names,
            &opts.proxy_pids,
            &snapshot.processes,
            &enricher,
        );
        let configs = ConfigWatcher::spawn(
            opts.proxy_names.clone(),
            || SystemFacts::new().processes(),
            proxy_upstreams,
        );
        let mut pending = vec![facts_event(&clock, now, snapshot)];
        // The running proxies' upstreams before the first verdict (bounded: `nginx -T`).
        let proxy_configs = configs
            .as_ref()
            .map(|w| w.first_round(FIRST_CONFIGS))
            .unwrap_or_default();
        if !proxy_configs.is_empty() {
            let up = FactsUpdate {
                proxy_configs,
                ..FactsUpdate::default()
            };
            pending.push(facts_event(&clock, monotonic_ns(), up));
        }
        Ok(Self {
            capture: Some(capture),
            clock,
            enricher,
            origins,
            configs,
            pending,
            raw: Vec::new(),
            proxy_names: opts.proxy_names.clone(),
            proxy_pids: opts.proxy_pids.clone(),
        })
    }

    /// Enriches, attributes and hands on the drained events, in order.
    fn enrich(&mut self, out: &mut Vec<Event>) {
        for mut ev in self.raw.drain(..) {
            if let Some(w) = &self.configs {
                w.observe(&ev);
            }
            let up = self.enricher.before(&ev);
            // The processes the enricher just read carry their cgroup: attribution reuses them
            // rather than reading /proc/PID/cgroup a second time.
            if let Some(up) = &up {
                self.origins.learn(&up.processes);
                if let Some(c) = self.capture.as_mut() {
                    watch_proxies(
                        c,
                        &self.proxy_names,
                        &self.proxy_pids,
                        &up.processes,
                        &self.enricher,
                    );
                }
            }
            // An exiting process is attributed now: its pid may be reused once it is gone.
            ev.origin = self.origins.resolve(ev.pid, ev.cgroup_id, ev.mono_ns);
            if matches!(
                ev.body,
                Body::ConnectFailed { .. } | Body::AcceptFailed { .. } | Body::NetfilterDrop { .. }
            ) {
                ev.net_ns = self.enricher.net_ns_of(ev.pid);
            }
            if matches!(ev.body, Body::ProcessExit { .. }) {
                self.origins.forget(ev.pid);
            }
            if let Some(up) = up {
                if let Body::Exec { cmdline, .. } = &mut ev.body {
                    *cmdline = up
                        .processes
                        .iter()
                        .find(|p| p.pid == ev.pid)
                        .map(|p| p.cmdline.clone());
                }
                out.push(facts_event(&self.clock, ev.mono_ns, up));
            }
            out.push(ev);
        }
    }
}

impl Live {
    /// Watches the proxies among processes the enricher just read.
    fn watch(&mut self, procs: &[ProcInfo]) {
        if let Some(c) = self.capture.as_mut() {
            watch_proxies(
                c,
                &self.proxy_names,
                &self.proxy_pids,
                procs,
                &self.enricher,
            );
        }
    }

    /// The configurations read since the last call, as one `facts` line.
    fn configs_read(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        let Some(w) = &self.configs else { return };
        let proxy_configs = w.ready();
        if !proxy_configs.is_empty() {
            let up = FactsUpdate {
                proxy_configs,
                ..FactsUpdate::default()
            };
            out.push(facts_event(&self.clock, now_ns, up));
        }
    }
}

impl Source for Live {
    fn drain(&mut self, out: &mut Vec<Event>) -> Result<Option<usize>, SourceError> {
        out.append(&mut self.pending);
        let Some(capture) = self.capture.as_mut() else {
            return Ok(None);
        };
        let raw = &mut self.raw;
        let n = capture.drain(|ev| raw.push(ev));
        self.enrich(out);
        self.configs_read(monotonic_ns(), out);
        Ok(Some(n))
    }

    fn tick(&mut self, now_ns: u64, out: &mut Vec<Event>) -> Result<(), SourceError> {
        if let Some(up) = self.enricher.periodic() {
            self.origins.learn(&up.processes);
            self.watch(&up.processes);
            out.push(facts_event(&self.clock, now_ns, up));
        }
        if let Some(c) = self.capture.as_mut() {
            out.extend(c.loss_events(now_ns));
        }
        Ok(())
    }

    fn counters(&mut self) -> Option<Counters> {
        self.capture.as_ref().map(Capture::counters)
    }

    fn finish(
        &mut self,
        now_ns: u64,
        out: &mut Vec<Event>,
    ) -> Result<Option<Counters>, SourceError> {
        out.append(&mut self.pending);
        let Some(mut capture) = self.capture.take() else {
            return Ok(None);
        };
        // Final drain: nothing the kernel delivered or counted is left behind.
        let raw = &mut self.raw;
        capture.flush(|ev| raw.push(ev));
        self.enrich(out);
        out.extend(capture.loss_events(now_ns));
        let counters = capture.counters();
        drop(capture); // detaches every program, frees every map
        Ok(Some(counters))
    }

    fn now_ns(&self) -> u64 {
        monotonic_ns()
    }
}

/// Watches every process of `procs` that the engine's rule calls a proxy (named or listed, or
/// a child of one, its parent looked up in the enricher's table), so that the kernel sees its
/// connects; processes that exec or fork later are watched by the kernel itself.
fn watch_proxies(
    capture: &mut Capture,
    names: &[String],
    pids: &[u32],
    procs: &[ProcInfo],
    enricher: &Enricher<SystemFacts>,
) {
    let listed = |pid: u32| pids.contains(&pid);
    let rule = ProxyRule {
        names,
        listed: &listed,
    };
    let argv0 = |p: &ProcInfo| p.cmdline.split_whitespace().next().unwrap_or("").to_owned();
    for p in procs {
        let me = [p.comm.as_str(), &argv0(p)];
        let parent = procs
            .iter()
            .find(|q| q.pid == p.ppid)
            .or_else(|| enricher.table().get(p.ppid));
        let parent_names = parent.map(|q| [q.comm.clone(), argv0(q)]);
        let parent_refs = parent_names
            .as_ref()
            .map(|n| [n[0].as_str(), n[1].as_str()]);
        let is_proxy = rule.is_proxy(
            ProcNames {
                pid: p.pid,
                names: &me,
            },
            parent_refs
                .as_ref()
                .map(|names| ProcNames { pid: p.ppid, names }),
        );
        if is_proxy {
            capture.watch(p.pid);
        }
    }
    for &pid in pids {
        capture.watch(pid);
    }
}

fn facts_event(clock: &Clock, mono_ns: u64, up: FactsUpdate) -> Event {
    Event::facts(clock.rfc3339(mono_ns), mono_ns, up)
}
