//! Engine tests: one synthetic event stream per cause, the near misses that must stay silent,
//! dedup/sorting/bounds, rendering, and a golden replay of a recorded JSON-lines fixture; one
//! file per cause family, the shared constructors here.
use super::*;
use crate::event::{Body, Event, errno_name, signal_name};
use crate::facts::{
    FactsUpdate, Listener, MemcgInfo, MountNs, Netstat, PathComponent, PathInfo, ProcInfo,
    ProxyConfig,
};

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
/// Events start at 1000 s after boot.
const T0: u64 = 1000 * S;

mod attribution;
mod connect;
mod conns;
mod deaths;
mod deploy;
mod ledger;
mod lifecycle;
mod near_misses;
mod netns;
mod proxies;
mod replay;
mod report;
mod sites;
mod symptoms;

fn ev(t: u64, pid: u32, comm: &str, body: Body) -> Event {
    Event::of_task(String::new(), t, pid, comm, body)
}

fn facts(t: u64, f: FactsUpdate) -> Event {
    ev(t, 0, "", Body::Facts(f))
}

fn connect(t: u64, pid: u32, comm: &str, target: &str, errno: i32) -> Event {
    connect_src(t, pid, comm, target, errno, "syscall")
}

fn connect_src(t: u64, pid: u32, comm: &str, target: &str, errno: i32, source: &str) -> Event {
    let mut e = ev(
        t,
        pid,
        comm,
        Body::ConnectFailed {
            target: target.into(),
            errno,
            errno_name: errno_name(errno).into(),
            source: source.into(),
            count: 1,
        },
    );
    e.uid = 33;
    e.gid = 33;
    e
}

fn exit_code(t: u64, pid: u32, comm: &str, code: i32) -> Event {
    ev(
        t,
        pid,
        comm,
        Body::ProcessExit {
            exit_code: Some(code),
            signal: None,
            signal_name: None,
            core_dumped: false,
        },
    )
}

fn exit_signal(t: u64, pid: u32, comm: &str, sig: i32, core: bool) -> Event {
    ev(
        t,
        pid,
        comm,
        Body::ProcessExit {
            exit_code: None,
            signal: Some(sig),
            signal_name: Some(signal_name(sig).into()),
            core_dumped: core,
        },
    )
}

fn signal(
    t: u64,
    sender: u32,
    sender_comm: &str,
    target: u32,
    target_comm: &str,
    sig: i32,
    code: i32,
) -> Event {
    ev(
        t,
        sender,
        sender_comm,
        Body::Signal {
            signal: sig,
            signal_name: signal_name(sig).into(),
            sender_pid: sender,
            target_pid: target,
            target_comm: target_comm.into(),
            code,
            result: 0,
        },
    )
}

fn oom(t: u64, trigger: u32, victim: u32, victim_comm: &str) -> Event {
    ev(
        t,
        trigger,
        victim_comm,
        Body::OomKill {
            victim_pid: victim,
            victim_comm: victim_comm.into(),
            total_vm_kb: 900 * 1024,
            anon_rss_kb: 300 * 1024,
            file_rss_kb: 2048,
            shmem_rss_kb: 0,
        },
    )
}

fn exec(t: u64, pid: u32, comm: &str, filename: &str, cmdline: &str) -> Event {
    ev(
        t,
        pid,
        comm,
        Body::Exec {
            filename: filename.into(),
            cmdline: Some(cmdline.into()),
        },
    )
}

fn proc_info(
    pid: u32,
    parent: u32,
    comm: &str,
    cmdline: &str,
    uid: u32,
    groups: &[u32],
) -> ProcInfo {
    ProcInfo {
        pid,
        ppid: parent,
        comm: comm.into(),
        cmdline: cmdline.into(),
        uid,
        gid: uid,
        groups: groups.to_vec(),
        cgroup: String::new(),
        start_ns: 0,
    }
}

fn listener(target: &str, pid: u32, comm: &str) -> Listener {
    Listener {
        target: target.into(),
        pid: Some(pid),
        comm: Some(comm.into()),
        backlog: None,
        net_ns: None,
    }
}

/// A path walk: (path, exists, uid, gid, mode).
fn path(comps: &[(&str, bool, u32, u32, u32)]) -> PathInfo {
    PathInfo {
        path: comps.last().map(|c| c.0.to_owned()).unwrap_or_default(),
        components: comps
            .iter()
            .map(|&(p, exists, uid, gid, mode)| PathComponent {
                path: p.into(),
                exists,
                uid,
                gid,
                mode,
            })
            .collect(),
    }
}

/// nginx master 100 and workers 101, 102 (www-data, uid 33), listening on port 80.
fn nginx_facts(t: u64) -> Event {
    facts(
        t,
        FactsUpdate {
            processes: vec![
                proc_info(
                    100,
                    1,
                    "nginx",
                    "nginx: master process /usr/sbin/nginx",
                    0,
                    &[0],
                ),
                proc_info(101, 100, "nginx", "nginx: worker process", 33, &[33]),
                proc_info(102, 100, "nginx", "nginx: worker process", 33, &[33]),
            ],
            listeners: Some(vec![listener("0.0.0.0:80", 100, "nginx")]),
            ..FactsUpdate::default()
        },
    )
}

/// [`nginx_facts`] with master 100's configuration naming `targets` (`nginx -T`), as the live
/// collector reads it at start.
fn nginx_configured(t: u64, targets: &[&str]) -> Event {
    let mut e = nginx_facts(t);
    if let Body::Facts(f) = &mut e.body {
        f.proxy_configs = vec![ProxyConfig {
            pid: 100,
            kind: "nginx".into(),
            source: "/usr/sbin/nginx -T".into(),
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            partial: false,
        }];
    }
    e
}

/// gunicorn master 200 with worker 201 (uid 999), and the listener snapshot given.
fn gunicorn_facts(t: u64, cmdline: &str, listeners: Vec<Listener>) -> Event {
    facts(
        t,
        FactsUpdate {
            processes: vec![
                proc_info(200, 1, "gunicorn", cmdline, 999, &[999]),
                proc_info(201, 200, "gunicorn", cmdline, 999, &[999]),
            ],
            listeners: Some(listeners),
            ..FactsUpdate::default()
        },
    )
}

fn engine() -> Engine {
    Engine::new(EngineConfig::default())
}

/// Feeds the events and returns the verdicts at the last event; `GW_PRINT=1` prints them rendered
/// (to review the wording with `--nocapture`).
fn run(events: &[Event]) -> Vec<Verdict> {
    let mut e = engine();
    for x in events {
        e.feed(x);
    }
    let now = events.iter().map(|x| x.mono_ns).max().unwrap_or(0);
    let vs = e.verdicts(now);
    if std::env::var_os("GW_PRINT").is_some() {
        for v in &vs {
            println!("{}\n", render_human(v));
        }
    }
    vs
}

fn causes(vs: &[Verdict]) -> Vec<Cause> {
    vs.iter().map(|v| v.cause).collect()
}

fn only(vs: &[Verdict], cause: Cause) -> &Verdict {
    assert_eq!(causes(vs), [cause], "verdicts: {vs:#?}");
    &vs[0]
}

fn has(v: &Verdict, needle: &str) -> bool {
    v.evidence.iter().any(|e| e.contains(needle))
}

fn failures(events: &mut Vec<Event>, from: u64, n: u64, pid: u32, target: &str, errno: i32) {
    for i in 0..n {
        events.push(connect(from + i * 100 * MS, pid, "nginx", target, errno));
    }
}

fn timeout_stream() -> Vec<Event> {
    vec![
        nginx_configured(T0, &["127.0.0.1:8000"]),
        gunicorn_facts(
            T0,
            "gunicorn --timeout 5 --bind 127.0.0.1:8000 app:app",
            vec![
                listener("0.0.0.0:80", 100, "nginx"),
                listener("127.0.0.1:8000", 200, "gunicorn"),
            ],
        ),
        signal(T0 + 30 * S, 200, "gunicorn", 201, "gunicorn", 6, 0),
        signal(T0 + 31 * S, 200, "gunicorn", 201, "gunicorn", 9, 0),
        exit_signal(T0 + 31 * S + MS, 201, "gunicorn", 9, false),
    ]
}

fn permission_stream(groups: &[u32]) -> Vec<Event> {
    let mut es = vec![facts(
        T0,
        FactsUpdate {
            processes: vec![
                proc_info(100, 1, "nginx", "nginx: master process", 0, &[0]),
                proc_info(101, 100, "nginx", "nginx: worker process", 33, groups),
            ],
            paths: vec![path(&[
                ("/", true, 0, 0, 0o040_755),
                ("/run", true, 0, 0, 0o040_755),
                ("/run/app", true, 999, 999, 0o040_755),
                ("/run/app/app.sock", true, 999, 999, 0o140_660),
            ])],
            ..FactsUpdate::default()
        },
    )];
    failures(&mut es, T0 + S, 5, 101, "unix:/run/app/app.sock", 13);
    es
}
