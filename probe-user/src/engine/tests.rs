//! Engine tests: one synthetic event stream per cause, the near misses that must stay silent,
//! dedup/sorting/bounds, rendering, and a golden replay of a recorded JSON-lines fixture.
use super::*;
use crate::event::{Body, Event, errno_name, signal_name};
use crate::facts::{
    FactsUpdate, Listener, MemcgInfo, MountNs, Netstat, PathComponent, PathInfo, ProcInfo,
};

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
/// Events start at 1000 s after boot.
const T0: u64 = 1000 * S;

// ---- constructors -------------------------------------------------------------------------

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

fn causes(vs: &[Verdict]) -> Vec<&str> {
    vs.iter().map(|v| v.cause.as_str()).collect()
}

fn only<'a>(vs: &'a [Verdict], cause: &str) -> &'a Verdict {
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

// ---- connect causes -----------------------------------------------------------------------

#[test]
fn socket_missing_names_the_missing_directory() {
    let mut es = vec![
        nginx_facts(T0),
        facts(
            T0 + S,
            FactsUpdate {
                paths: vec![path(&[
                    ("/", true, 0, 0, 0o040_755),
                    ("/run", true, 0, 0, 0o040_755),
                    ("/run/gunicorn", false, 0, 0, 0),
                    ("/run/gunicorn/app.sock", false, 0, 0, 0),
                ])],
                ..FactsUpdate::default()
            },
        ),
    ];
    failures(
        &mut es,
        T0 + 2 * S,
        3,
        101,
        "unix:/run/gunicorn/app.sock",
        2,
    );
    failures(
        &mut es,
        T0 + 3 * S,
        2,
        102,
        "unix:/run/gunicorn/app.sock",
        2,
    );
    let vs = run(&es);
    let v = only(&vs, "socket-missing");
    assert_eq!(
        (v.status, v.proxy_pid, v.proxy_comm.as_str()),
        (502, 100, "nginx"),
        "deduped on the master"
    );
    assert_eq!(
        (v.target.as_str(), v.count),
        ("unix:/run/gunicorn/app.sock", 5)
    );
    assert!(
        has(v, "directory /run/gunicorn itself does not exist"),
        "{v:#?}"
    );
    assert!(v.fix.contains("RuntimeDirectory=gunicorn"), "{}", v.fix);
    assert_eq!(v.first_seen_ns, T0 + 2 * S);
}

#[test]
fn socket_missing_in_existing_directory_says_start_the_app() {
    let mut es = vec![
        nginx_facts(T0),
        facts(
            T0,
            FactsUpdate {
                paths: vec![path(&[
                    ("/", true, 0, 0, 0o040_755),
                    ("/run", true, 0, 0, 0o040_755),
                    ("/run/app.sock", false, 0, 0, 0),
                ])],
                ..FactsUpdate::default()
            },
        ),
    ];
    failures(&mut es, T0 + S, 2, 101, "unix:/run/app.sock", 2);
    let vs = run(&es);
    let v = only(&vs, "socket-missing");
    assert!(has(v, "no /run/app.sock in it"), "{v:#?}");
    assert!(v.fix.contains("start the app server"));
}

#[test]
fn wrong_unix_path_is_wrong_target() {
    let mut es = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            "/srv/venv/bin/python /srv/venv/bin/gunicorn --bind unix:/run/gunicorn/app.sock app:app",
            vec![
                listener("0.0.0.0:80", 100, "nginx"),
                listener("unix:/run/gunicorn/app.sock", 200, "gunicorn"),
            ],
        ),
    ];
    failures(&mut es, T0 + S, 4, 101, "unix:/run/app.sock", 2);
    let vs = run(&es);
    let v = only(&vs, "wrong-target");
    assert!(
        has(
            v,
            "gunicorn pid 200 listens on unix:/run/gunicorn/app.sock, nginx connects to unix:/run/app.sock"
        ),
        "{v:#?}"
    );
    assert!(
        v.fix.contains("http://unix:/run/gunicorn/app.sock:"),
        "{}",
        v.fix
    );
}

#[test]
fn wrong_tcp_port_is_wrong_target() {
    let mut es = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            "gunicorn --bind 127.0.0.1:8001 app:app",
            vec![
                listener("0.0.0.0:80", 100, "nginx"),
                listener("127.0.0.1:8001", 200, "gunicorn"),
            ],
        ),
    ];
    failures(&mut es, T0 + S, 2, 101, "127.0.0.1:8000", 111);
    let v = run(&es);
    let v = only(&v, "wrong-target");
    assert!(
        has(
            v,
            "listens on 127.0.0.1:8001, nginx connects to 127.0.0.1:8000"
        ),
        "{v:#?}"
    );
}

#[test]
fn unrelated_listener_is_not_a_wrong_target() {
    // sshd on :22 is not an app server: refusals on :8000 are "nothing listens".
    let mut es = vec![
        nginx_facts(T0),
        facts(
            T0,
            FactsUpdate {
                processes: vec![proc_info(50, 1, "sshd", "sshd: /usr/sbin/sshd -D", 0, &[])],
                listeners: Some(vec![
                    listener("0.0.0.0:80", 100, "nginx"),
                    listener("0.0.0.0:22", 50, "sshd"),
                ]),
                ..FactsUpdate::default()
            },
        ),
    ];
    failures(&mut es, T0 + S, 3, 101, "127.0.0.1:8000", 111);
    let vs = run(&es);
    let v = only(&vs, "upstream-not-listening");
    assert!(has(v, "no process listens on 127.0.0.1:8000"), "{v:#?}");
}

#[test]
fn stale_socket_names_the_kill() {
    let t = "unix:/run/app.sock";
    let mut es = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            "gunicorn --bind unix:/run/app.sock app:app",
            vec![listener(t, 200, "gunicorn")],
        ),
        signal(T0 + S, 300, "bash", 200, "gunicorn", 9, 0),
        exit_signal(T0 + S + MS, 200, "gunicorn", 9, false),
        exit_code(T0 + S + 2 * MS, 201, "gunicorn", 0),
        facts(
            T0 + 2 * S,
            FactsUpdate {
                listeners: Some(vec![listener("0.0.0.0:80", 100, "nginx")]),
                paths: vec![path(&[
                    ("/", true, 0, 0, 0o040_755),
                    ("/run/app.sock", true, 999, 999, 0o140_777),
                ])],
                ..FactsUpdate::default()
            },
        ),
    ];
    failures(&mut es, T0 + 3 * S, 3, 101, t, 111);
    let vs = run(&es);
    let v = only(&vs, "stale-socket");
    assert!(
        has(v, "srwxrwxrwx 999:999 /run/app.sock is a socket file"),
        "{v:#?}"
    );
    assert!(
        has(
            v,
            "gunicorn pid 200 was killed by SIGKILL (9) from pid 300 (bash)"
        ),
        "{v:#?}"
    );
}

#[test]
fn tcp_refused_with_nothing_listening() {
    let mut es = vec![nginx_facts(T0)];
    failures(&mut es, T0 + S, 3, 101, "127.0.0.1:8000", 111);
    let v = run(&es);
    let v = only(&v, "upstream-not-listening");
    assert_eq!(v.count, 3);
    assert!(v.fix.contains("gunicorn --bind 127.0.0.1:8000"));
}

#[test]
fn wildcard_listener_covers_loopback_so_no_wrong_target() {
    // Listening on 0.0.0.0:8000 serves 127.0.0.1:8000: a refusal then is not misdirection.
    let mut es = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            "gunicorn -b 0.0.0.0:8000 app:app",
            vec![listener("0.0.0.0:8000", 200, "gunicorn")],
        ),
    ];
    failures(&mut es, T0 + S, 1, 101, "127.0.0.1:8000", 111);
    let vs = run(&es);
    let v = only(&vs, "upstream-not-listening");
    assert!(
        has(v, "gunicorn pid 200 listens on 0.0.0.0:8000 now"),
        "{v:#?}"
    );
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

#[test]
fn socket_permission_names_the_denying_component() {
    let vs = run(&permission_stream(&[33]));
    let v = only(&vs, "socket-permission");
    assert!(
        has(
            v,
            "srw-rw---- 999:999 /run/app/app.sock denies nginx worker pid 101 (uid 33, gid 33, groups 33)"
        ),
        "{v:#?}"
    );
    assert!(
        v.fix.contains("usermod -aG $(getent group 999"),
        "{}",
        v.fix
    );
}

#[test]
fn socket_permission_directory_without_search() {
    let mut es = vec![
        nginx_facts(T0),
        facts(
            T0,
            FactsUpdate {
                paths: vec![path(&[
                    ("/", true, 0, 0, 0o040_755),
                    ("/home/app", true, 1000, 1000, 0o040_750),
                    ("/home/app/app.sock", true, 1000, 1000, 0o140_777),
                ])],
                ..FactsUpdate::default()
            },
        ),
    ];
    failures(&mut es, T0 + S, 1, 101, "unix:/home/app/app.sock", 13);
    let vs = run(&es);
    let v = only(&vs, "socket-permission");
    assert!(has(v, "drwxr-x--- 1000:1000 /home/app denies"), "{v:#?}");
    assert!(has(v, "no search (x) permission for others"));
    assert!(
        v.fix.contains("usermod -aG"),
        "group has x: join the group; {}",
        v.fix
    );
}

#[test]
fn socket_permission_without_denial_points_at_lsm() {
    // The worker is in the socket's group by now: the walk passes.
    let vs = run(&permission_stream(&[33, 999]));
    let v = only(&vs, "socket-permission");
    assert!(has(v, "LSM"), "{v:#?}");
}

#[test]
fn unix_eagain_is_backlog_full() {
    let mut es = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            "gunicorn --bind unix:/run/app.sock app:app",
            vec![listener("unix:/run/app.sock", 200, "gunicorn")],
        ),
    ];
    failures(&mut es, T0 + S, 7, 101, "unix:/run/app.sock", 11);
    let vs = run(&es);
    let v = only(&vs, "backlog-full");
    assert_eq!(v.status, 502);
    assert!(
        has(
            v,
            "gunicorn pid 200 listens on unix:/run/app.sock with 1 live worker(s)"
        ),
        "{v:#?}"
    );
}

#[test]
fn tcp_timeouts_with_listen_overflows_are_backlog_full() {
    let netstat = |t: u64, n: u64| {
        facts(
            t,
            FactsUpdate {
                netstat: Some(Netstat {
                    listen_overflows: n,
                    listen_drops: n,
                }),
                ..FactsUpdate::default()
            },
        )
    };
    let mut es = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            "gunicorn -b 127.0.0.1:8000 a:b",
            vec![listener("127.0.0.1:8000", 200, "gunicorn")],
        ),
        netstat(T0, 10),
    ];
    es.push(connect_src(
        T0 + 5 * S,
        101,
        "nginx",
        "127.0.0.1:8000",
        110,
        "tcp_abandoned",
    ));
    es.push(netstat(T0 + 10 * S, 250));
    let vs = run(&es);
    let v = only(&vs, "backlog-full");
    assert_eq!(v.status, 504);
    assert!(has(v, "ListenOverflows rose by 240"), "{v:#?}");
}

#[test]
fn simple_errnos_map_to_their_causes() {
    let cases = [
        (99, "syscall", "port-exhaustion", 502),
        (101, "syscall", "network-unreachable", 502),
        (113, "tcp_state", "network-unreachable", 502),
        (110, "tcp_state", "connect-timeout", 504),
        (110, "tcp_abandoned", "connect-timeout", 504),
        (104, "tcp_state", "upstream-reset", 502),
    ];
    for (errno, source, cause, status) in cases {
        let es = vec![
            nginx_facts(T0),
            connect_src(T0 + S, 101, "nginx", "10.0.0.5:8000", errno, source),
        ];
        let vs = run(&es);
        let v = only(&vs, cause);
        assert_eq!(v.status, status, "{cause}");
        if status == 504 {
            assert!(v.summary.contains("504"), "{}", v.summary);
        }
    }
}

// ---- lifecycle ----------------------------------------------------------------------------

const CRASHING_CMD: &str = "/srv/venv/bin/gunicorn --bind unix:/run/gunicorn.sock app.wsgi";

/// gunicorn pids 300-302 exit 3 right after exec, 2 s apart; nginx fails 6 connects (ENOENT).
fn crash_loop_stream() -> Vec<Event> {
    let mut es = vec![nginx_facts(T0)];
    for i in 0..3u32 {
        let t = T0 + u64::from(i) * 2 * S;
        es.push(exec(
            t,
            300 + i,
            "gunicorn",
            "/srv/venv/bin/gunicorn",
            CRASHING_CMD,
        ));
        es.push(exit_code(t + 700 * MS, 300 + i, "gunicorn", 3));
    }
    failures(&mut es, T0 + S, 6, 101, "unix:/run/gunicorn.sock", 2);
    es
}

#[test]
fn crash_on_boot_explains_missing_socket() {
    let vs = run(&crash_loop_stream());
    let v = only(&vs, "crash-on-boot");
    assert_eq!(
        (v.target.as_str(), v.count, v.proxy_pid),
        ("unix:/run/gunicorn.sock", 6, 100)
    );
    assert!(has(v, "exit code 3 (worker failed to boot)"), "{v:#?}");
    assert!(has(v, "restarts/min"), "{v:#?}");
}

#[test]
fn crash_loop_instance_caught_listening_is_still_crash_on_boot() {
    // The last listener snapshot caught the newest instance in the fraction of a second it
    // binds the socket before it dies too: not a live upstream.
    let mut es = crash_loop_stream();
    es.push(exec(
        T0 + 6 * S,
        303,
        "gunicorn",
        "/srv/venv/bin/gunicorn",
        CRASHING_CMD,
    ));
    es.push(facts(
        T0 + 6 * S + 100 * MS,
        FactsUpdate {
            listeners: Some(vec![
                listener("0.0.0.0:80", 100, "nginx"),
                listener("unix:/run/gunicorn.sock", 303, "gunicorn"),
            ]),
            ..FactsUpdate::default()
        },
    ));
    let vs = run(&es);
    only(&vs, "crash-on-boot");
}

#[test]
fn crash_on_boot_alone_for_an_app_server() {
    let cmd = "gunicorn --bind 127.0.0.1:8000 app:app";
    let es = vec![
        nginx_facts(T0),
        exec(T0, 300, "gunicorn", "/usr/bin/gunicorn", cmd),
        exit_code(T0 + S, 300, "gunicorn", 4),
    ];
    let vs = run(&es);
    let v = only(&vs, "crash-on-boot");
    assert_eq!((v.target.as_str(), v.proxy_pid), ("127.0.0.1:8000", 100));
    assert!(has(v, "app failed to load"), "{v:#?}");
}

#[test]
fn refused_tcp_during_crash_loop_without_bind_flag() {
    // gunicorn's default bind is 127.0.0.1:8000.
    let mut es = vec![nginx_facts(T0)];
    for i in 0..2u32 {
        let t = T0 + u64::from(i) * 3 * S;
        es.push(exec(
            t,
            300 + i,
            "python3",
            "/usr/bin/python3",
            "python3 -m gunicorn app:app",
        ));
        es.push(exit_code(t + S, 300 + i, "python3", 1));
    }
    failures(&mut es, T0 + S, 4, 101, "127.0.0.1:8000", 111);
    let vs = run(&es);
    only(&vs, "crash-on-boot");
}

fn restart_stream(comes_back: bool) -> Vec<Event> {
    let cmd = "gunicorn --bind 127.0.0.1:8000 app:app";
    let mut es = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            cmd,
            vec![
                listener("0.0.0.0:80", 100, "nginx"),
                listener("127.0.0.1:8000", 200, "gunicorn"),
            ],
        ),
        signal(T0 + 10 * S, 1, "systemd", 200, "gunicorn", 15, 0),
        exit_code(T0 + 10 * S + 300 * MS, 201, "gunicorn", 0),
        exit_code(T0 + 10 * S + 400 * MS, 200, "gunicorn", 0),
    ];
    failures(&mut es, T0 + 11 * S, 5, 101, "127.0.0.1:8000", 111);
    if comes_back {
        es.push(exec(T0 + 13 * S, 400, "gunicorn", "/usr/bin/gunicorn", cmd));
        es.push(facts(
            T0 + 14 * S,
            FactsUpdate {
                processes: vec![proc_info(400, 1, "gunicorn", cmd, 999, &[999])],
                listeners: Some(vec![
                    listener("0.0.0.0:80", 100, "nginx"),
                    listener("127.0.0.1:8000", 400, "gunicorn"),
                ]),
                ..FactsUpdate::default()
            },
        ));
    } else {
        es.push(facts(
            T0 + 14 * S,
            FactsUpdate {
                listeners: Some(vec![listener("0.0.0.0:80", 100, "nginx")]),
                ..FactsUpdate::default()
            },
        ));
    }
    es
}

#[test]
fn restart_that_comes_back_is_upstream_restarting() {
    let vs = run(&restart_stream(true));
    let v = only(&vs, "upstream-restarting");
    assert_eq!(
        (v.count, v.target.as_str(), v.proxy_pid),
        (5, "127.0.0.1:8000", 100)
    );
    assert!(has(v, "gunicorn pid 200 exited with code 0"), "{v:#?}");
    assert!(
        has(
            v,
            "new gunicorn pid 400 (/usr/bin/gunicorn) started at t=1013.000s"
        ),
        "{v:#?}"
    );
    assert!(
        v.summary
            .contains("nothing listened on 127.0.0.1:8000 for about 4.0 s"),
        "{}",
        v.summary
    );
}

#[test]
fn restart_that_never_comes_back_keeps_its_cause() {
    let vs = run(&restart_stream(false));
    let v = only(&vs, "upstream-not-listening");
    assert!(has(v, "gunicorn pid 200 exited with code 0"), "{v:#?}");
}

#[test]
fn failures_outside_the_restart_window_keep_their_cause() {
    let mut es = restart_stream(true);
    // An hour later the new process is still listening and nginx is refused again.
    es.push(connect(T0 + 3600 * S, 101, "nginx", "127.0.0.1:8000", 111));
    let vs = run(&es);
    assert_eq!(
        causes(&vs),
        ["upstream-not-listening", "upstream-restarting"],
        "{vs:#?}"
    );
    assert_eq!(vs[0].count, 1);
    assert_eq!(vs[1].count, 5);
}

// ---- deploy-time and container causes -----------------------------------------------------

const RUN_SOCK: &str = "unix:/srv/app/run/app.sock";
const RUN_CMD: &str = "gunicorn --bind unix:/srv/app/run/app.sock --workers 1 app:app";

fn exec_failed(t: u64, pid: u32, comm: &str, filename: &str, errno: i32) -> Event {
    ev(
        t,
        pid,
        comm,
        Body::ExecFailed {
            filename: filename.into(),
            errno,
            errno_name: errno_name(errno).into(),
        },
    )
}

fn mount_ns(t: u64, ns: &[(u32, u64)]) -> Event {
    facts(
        t,
        FactsUpdate {
            mount_ns: ns
                .iter()
                .map(|&(pid, mnt_ns)| MountNs { pid, mnt_ns })
                .collect(),
            ..FactsUpdate::default()
        },
    )
}

fn started(mut p: ProcInfo, start_ns: u64) -> ProcInfo {
    p.start_ns = start_ns;
    p
}

/// A supervisor shell (300) runs gunicorn 301 (worker 302) on a unix socket. At 10 s it stops it
/// with SIGTERM: gunicorn removes its socket at once and exits 1.2 s later. At 12.5 s a new
/// gunicorn execs (pid 310, or the shell itself when `by_exec`) and listens at about 13.5 s;
/// nginx fails every 100 ms from 10.15 s to 13.55 s (35 connects). The collector lags: the
/// listener facts explaining the failure at 12.05 s were read at 13.6 s.
fn unix_restart_stream(comes_back: bool, by_exec: bool) -> Vec<Event> {
    let new_pid = if by_exec { 300 } else { 310 };
    let mut es = vec![
        nginx_facts(T0),
        facts(
            T0,
            FactsUpdate {
                processes: vec![
                    started(
                        proc_info(300, 1, "sh", "sh -c supervise", 0, &[0]),
                        T0 - 6 * S,
                    ),
                    started(
                        proc_info(301, 300, "gunicorn", RUN_CMD, 999, &[999]),
                        T0 - 5 * S,
                    ),
                    started(
                        proc_info(302, 301, "gunicorn", RUN_CMD, 999, &[999]),
                        T0 - 4 * S,
                    ),
                ],
                listeners: Some(vec![
                    listener("0.0.0.0:80", 100, "nginx"),
                    listener(RUN_SOCK, 301, "gunicorn"),
                ]),
                ..FactsUpdate::default()
            },
        ),
        signal(T0 + 10 * S, 300, "sh", 301, "gunicorn", 15, 0),
        signal(T0 + 10 * S + MS, 301, "gunicorn", 302, "gunicorn", 15, 0),
        exit_code(T0 + 11 * S, 302, "gunicorn", 0),
        exit_code(T0 + 11 * S + 200 * MS, 301, "gunicorn", 0),
    ];
    failures(&mut es, T0 + 10 * S + 150 * MS, 35, 101, RUN_SOCK, 2);
    let now_listening = |t: u64, read: u64| {
        let mut f = FactsUpdate {
            listeners: Some(vec![
                listener("0.0.0.0:80", 100, "nginx"),
                listener(RUN_SOCK, new_pid, "gunicorn"),
            ]),
            read_ns: Some(read),
            ..FactsUpdate::default()
        };
        if !by_exec {
            f.processes = vec![started(
                proc_info(310, 300, "gunicorn", RUN_CMD, 999, &[999]),
                T0 + 12 * S + 500 * MS,
            )];
        }
        facts(t, f)
    };
    if comes_back {
        es.push(exec(
            T0 + 12 * S + 500 * MS,
            new_pid,
            "gunicorn",
            "/usr/bin/gunicorn",
            RUN_CMD,
        ));
        es.push(now_listening(T0 + 12 * S + 50 * MS, T0 + 13 * S + 600 * MS));
        es.push(now_listening(T0 + 14 * S, T0 + 14 * S));
    } else {
        es.push(facts(
            T0 + 14 * S,
            FactsUpdate {
                listeners: Some(vec![listener("0.0.0.0:80", 100, "nginx")]),
                ..FactsUpdate::default()
            },
        ));
    }
    // Events reach the engine in time order (a facts line just before the event it explains).
    es.sort_by_key(|e| e.mono_ns);
    es
}

#[test]
fn unix_restart_window_is_upstream_restarting() {
    let vs = run(&unix_restart_stream(true, false));
    let v = only(&vs, "upstream-restarting");
    assert_eq!((v.count, v.target.as_str()), (35, RUN_SOCK), "{v:#?}");
    assert!(
        has(
            v,
            "gunicorn pid 301 exited with code 0 on SIGTERM (15) from pid 300 (sh)"
        ),
        "the old pid's exit: {v:#?}"
    );
    assert!(
        has(
            v,
            "new gunicorn pid 310 (/usr/bin/gunicorn) started at t=1012.500s"
        ),
        "the new exec: {v:#?}"
    );
    assert!(
        v.summary
            .contains("nothing listened on unix:/srv/app/run/app.sock for about 3.6 s"),
        "how long, from the stop signal to the new listener seen: {}",
        v.summary
    );
    assert!(
        has(
            v,
            "35 failed connects from nginx between t=1010.150s and t=1013.550s"
        ),
        "{v:#?}"
    );
    assert!(v.fix.contains("HUP") && v.fix.contains("socket activation"));
}

#[test]
fn restart_by_a_supervisor_that_execs_in_place() {
    // The shell that started the old gunicorn execs the new one: the old master is not a worker
    // of the new one.
    let vs = run(&unix_restart_stream(true, true));
    let v = only(&vs, "upstream-restarting");
    assert_eq!(v.count, 35);
    assert!(has(v, "gunicorn pid 301 exited with code 0"), "{v:#?}");
    assert!(has(v, "new gunicorn pid 300 (/usr/bin/gunicorn)"), "{v:#?}");
}

#[test]
fn unix_restart_that_never_comes_back_keeps_its_cause() {
    let vs = run(&unix_restart_stream(false, false));
    let v = only(&vs, "socket-missing");
    assert!(has(v, "gunicorn pid 301 exited with code 0"), "{v:#?}");
}

/// A supervisor retries an app whose program does not exist (`comm` tries it, exits `code`).
fn failed_exec_stream(comm: &str, code: i32) -> Vec<Event> {
    let mut es = vec![
        nginx_facts(T0),
        facts(
            T0,
            FactsUpdate {
                paths: vec![PathInfo {
                    path: "/srv/app/venv/bin/gunicorn".into(),
                    ..path(&[
                        ("/", true, 0, 0, 0o040_755),
                        ("/srv", true, 0, 0, 0o040_755),
                        ("/srv/app", true, 999, 999, 0o040_755),
                        ("/srv/app/venv", false, 0, 0, 0),
                    ])
                }],
                ..FactsUpdate::default()
            },
        ),
    ];
    for i in 0..4 {
        let t = T0 + u64::from(i) * S;
        es.push(exec_failed(
            t,
            400 + i,
            comm,
            "/srv/app/venv/bin/gunicorn",
            2,
        ));
        es.push(exit_code(t + MS, 400 + i, comm, code));
    }
    failures(&mut es, T0 + 500 * MS, 8, 101, "unix:/run/app/app.sock", 2);
    es.sort_by_key(|e| e.mono_ns);
    es
}

#[test]
fn failed_exec_start_is_crash_on_boot_naming_the_path() {
    let vs = run(&failed_exec_stream("sh", 127));
    let v = only(&vs, "crash-on-boot");
    assert_eq!((v.target.as_str(), v.count), ("unix:/run/app/app.sock", 8));
    assert!(
        v.summary.contains(
            "gunicorn cannot start: exec of /srv/app/venv/bin/gunicorn fails with ENOENT (2) (directory \
             /srv/app/venv does not exist)"
        ),
        "{}",
        v.summary
    );
    assert!(
        has(
            v,
            "exec of /srv/app/venv/bin/gunicorn failed with ENOENT (2) by pid 403 (sh)"
        ),
        "{v:#?}"
    );
    assert!(has(v, "exit code 127 (command not found)"), "{v:#?}");
    assert!(
        v.fix.contains("203/EXEC") && v.fix.contains("ExecStart="),
        "{}",
        v.fix
    );
}

#[test]
fn systemd_203_exec_is_crash_on_boot() {
    let vs = run(&failed_exec_stream("(myapp)", 203));
    let v = only(&vs, "crash-on-boot");
    assert!(has(v, "exit code 203 (systemd 203/EXEC"), "{v:#?}");
    assert!(has(v, "by pid 403 ((myapp))"), "{v:#?}");
}

#[test]
fn systemd_200_chdir_is_crash_on_boot() {
    // WorkingDirectory= is missing: systemd's child exits 200 before it executes anything.
    let mut es = vec![nginx_facts(T0)];
    for i in 0..3 {
        es.push(exit_code(T0 + u64::from(i) * S, 500 + i, "(myapp)", 200));
    }
    failures(&mut es, T0 + 500 * MS, 5, 101, "unix:/run/app/app.sock", 2);
    es.sort_by_key(|e| e.mono_ns);
    let vs = run(&es);
    let v = only(&vs, "crash-on-boot");
    assert!(has(v, "exit code 200 (systemd 200/CHDIR"), "{v:#?}");
    assert!(
        v.summary
            .starts_with("unit myapp's process dies before the app even runs: exit code 200"),
        "{}",
        v.summary
    );
    assert!(v.fix.contains("WorkingDirectory="), "{}", v.fix);
}

#[test]
fn failed_exec_of_something_else_is_not_crash_on_boot() {
    let mut es = vec![nginx_facts(T0)];
    for i in 0..3 {
        let t = T0 + u64::from(i) * S;
        es.push(exec_failed(
            t,
            600 + i,
            "sh",
            "/usr/local/bin/healthcheck",
            2,
        ));
        es.push(exit_code(t + MS, 600 + i, "sh", 127));
    }
    failures(&mut es, T0 + 500 * MS, 5, 101, "unix:/run/app/app.sock", 2);
    es.sort_by_key(|e| e.mono_ns);
    only(&run(&es), "socket-missing");
}

#[test]
fn runtime_directory_missing_after_reboot() {
    // The walk stops at the first missing component: the directory, not the socket.
    let es = vec![
        nginx_facts(T0),
        facts(
            T0,
            FactsUpdate {
                paths: vec![PathInfo {
                    path: "/srv/lab/run/myapp/app.sock".into(),
                    ..path(&[
                        ("/", true, 0, 0, 0o040_755),
                        ("/srv", true, 0, 0, 0o040_755),
                        ("/srv/lab", true, 0, 0, 0o040_755),
                        ("/srv/lab/run", true, 0, 0, 0o040_755),
                        ("/srv/lab/run/myapp", false, 0, 0, 0),
                    ])
                }],
                ..FactsUpdate::default()
            },
        ),
        connect(T0 + S, 101, "nginx", "unix:/srv/lab/run/myapp/app.sock", 2),
    ];
    let vs = run(&es);
    let v = only(&vs, "socket-missing");
    assert!(
        v.summary
            .contains("its directory /srv/lab/run/myapp itself is missing"),
        "{}",
        v.summary
    );
    assert!(
        has(
            v,
            "directory /srv/lab/run/myapp itself does not exist (/run is a tmpfs"
        ),
        "{v:#?}"
    );
    assert!(
        v.fix
            .contains("RuntimeDirectory=myapp in the [Service] section"),
        "{}",
        v.fix
    );
}

const HOST_NS: u64 = 4_026_531_841;
const APP_NS: u64 = 4_026_532_300;

/// gunicorn 200 listens on /srv/sock/app.sock; nginx's walk of the path finds the directory but
/// no socket; the two live in `app_ns` and `HOST_NS`.
fn mount_ns_stream(app_ns: u64) -> Vec<Event> {
    let sock = "unix:/srv/sock/app.sock";
    let mut es = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            "gunicorn --bind unix:/srv/sock/app.sock app:app",
            vec![
                listener("0.0.0.0:80", 100, "nginx"),
                listener(sock, 200, "gunicorn"),
            ],
        ),
        mount_ns(T0, &[(100, HOST_NS), (200, app_ns), (201, app_ns)]),
        // A short-lived helper of the app's namespace setup (`mount`) exits: not a restart.
        exit_code(T0 + S, 210, "mount", 0),
        facts(
            T0 + 2 * S,
            FactsUpdate {
                paths: vec![path(&[
                    ("/", true, 0, 0, 0o040_755),
                    ("/srv", true, 0, 0, 0o040_755),
                    ("/srv/sock", true, 0, 0, 0o040_755),
                    ("/srv/sock/app.sock", false, 0, 0, 0),
                ])],
                mount_ns: vec![MountNs {
                    pid: 101,
                    mnt_ns: HOST_NS,
                }],
                ..FactsUpdate::default()
            },
        ),
    ];
    failures(&mut es, T0 + 2 * S, 5, 101, sock, 2);
    es
}

#[test]
fn socket_in_another_mount_namespace() {
    let vs = run(&mount_ns_stream(APP_NS));
    let v = only(&vs, "socket-missing");
    assert_eq!(v.target, "unix:/srv/sock/app.sock");
    assert!(
        v.summary.starts_with(
            "gunicorn pid 200 listens on unix:/srv/sock/app.sock in another mount namespace \
             (mnt:[4026532300]); nginx's namespace (mnt:[4026531841]) has no such file"
        ),
        "{}",
        v.summary
    );
    assert!(
        has(
            v,
            "in nginx's mount namespace: drwxr-xr-x 0:0 /srv/sock exists, but there is no /srv/sock/app.sock in it"
        ),
        "{v:#?}"
    );
    assert!(
        has(
            v,
            "its command line: gunicorn --bind unix:/srv/sock/app.sock"
        ),
        "{v:#?}"
    );
    assert!(v.fix.contains("PrivateTmp="), "{}", v.fix);
}

#[test]
fn socket_in_another_mount_namespace_is_not_a_wrong_target() {
    // Another app server listens elsewhere on the host: the proxy still points at the right
    // socket, only in the wrong namespace.
    let mut es = mount_ns_stream(APP_NS);
    es.insert(
        3,
        facts(
            T0,
            FactsUpdate {
                processes: vec![proc_info(
                    300,
                    1,
                    "gunicorn",
                    "gunicorn --bind 127.0.0.1:8000 other:app",
                    999,
                    &[999],
                )],
                listeners: Some(vec![
                    listener("0.0.0.0:80", 100, "nginx"),
                    listener("unix:/srv/sock/app.sock", 200, "gunicorn"),
                    listener("127.0.0.1:8000", 300, "gunicorn"),
                ]),
                ..FactsUpdate::default()
            },
        ),
    );
    let vs = run(&es);
    let v = only(&vs, "socket-missing");
    assert!(
        v.summary.contains("another mount namespace"),
        "{}",
        v.summary
    );
}

#[test]
fn same_mount_namespace_is_a_deleted_socket() {
    let vs = run(&mount_ns_stream(HOST_NS));
    let v = only(&vs, "socket-missing");
    assert!(v.summary.contains("still listens on it"), "{}", v.summary);
    assert!(!v.summary.contains("mount namespace"), "{}", v.summary);
}

// ---- worker deaths ------------------------------------------------------------------------

fn timeout_stream() -> Vec<Event> {
    vec![
        nginx_facts(T0),
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

#[test]
fn master_sigabrt_is_worker_timeout() {
    let vs = run(&timeout_stream());
    let v = only(&vs, "worker-timeout");
    assert_eq!(
        (
            v.proxy_pid,
            v.proxy_comm.as_str(),
            v.target.as_str(),
            v.count
        ),
        (100, "nginx", "127.0.0.1:8000", 1)
    );
    assert!(
        has(
            v,
            "gunicorn pid 200 sent SIGABRT to worker gunicorn pid 201"
        ),
        "{v:#?}"
    );
    assert!(has(v, "then SIGKILL 1.0 s later"), "{v:#?}");
    assert!(has(v, "--timeout is 5 s"), "{v:#?}");
    assert!(v.fix.contains("--timeout"));
}

#[test]
fn worker_timeout_without_any_proxy_known() {
    let mut es: Vec<Event> = timeout_stream().into_iter().skip(2).collect();
    es.insert(
        0,
        gunicorn_facts(
            T0,
            "gunicorn app:app",
            vec![listener("127.0.0.1:8000", 200, "gunicorn")],
        ),
    );
    let vs = run(&es);
    let v = only(&vs, "worker-timeout");
    assert_eq!(v.proxy_pid, 0);
}

#[test]
fn oom_kill_of_worker_names_the_memcg() {
    let es = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            "gunicorn app:app",
            vec![listener("127.0.0.1:8000", 200, "gunicorn")],
        ),
        facts(
            T0 + S,
            FactsUpdate {
                memcgs: vec![MemcgInfo {
                    pid: 201,
                    cgroup: "/system.slice/app.service".into(),
                    limit_bytes: Some(256 << 20),
                }],
                ..FactsUpdate::default()
            },
        ),
        oom(T0 + 2 * S, 201, 201, "gunicorn"),
        signal(T0 + 2 * S, 201, "gunicorn", 201, "gunicorn", 9, 128),
        exit_signal(T0 + 2 * S + MS, 201, "gunicorn", 9, false),
    ];
    let vs = run(&es);
    let v = only(&vs, "worker-oom-killed");
    assert!(
        has(
            v,
            "memory cgroup /system.slice/app.service limited to 256 MiB"
        ),
        "{v:#?}"
    );
    assert!(has(v, "anon-rss 300 MiB"), "{v:#?}");
    assert_eq!(v.proxy_pid, 100);
}

#[test]
fn segfault_of_worker_is_worker_crashed() {
    let es = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            "gunicorn app:app",
            vec![listener("127.0.0.1:8000", 200, "gunicorn")],
        ),
        signal(T0 + S, 201, "gunicorn", 201, "gunicorn", 11, 1),
        exit_signal(T0 + S + MS, 201, "gunicorn", 11, true),
    ];
    let vs = run(&es);
    let v = only(&vs, "worker-crashed");
    assert_eq!(v.count, 1, "signal and exit are one crash");
    assert!(has(v, "died of SIGSEGV (11), core dumped"), "{v:#?}");
    assert!(has(v, "si_code 1"), "{v:#?}");
}

#[test]
fn kernel_fault_signal_alone_is_worker_crashed() {
    let es = vec![
        gunicorn_facts(T0, "gunicorn app:app", vec![]),
        signal(T0 + S, 201, "gunicorn", 201, "gunicorn", 7, 2),
    ];
    let vs = run(&es);
    let v = only(&vs, "worker-crashed");
    assert_eq!(v.target, "gunicorn pid 200");
}

#[test]
fn forked_python_worker_of_listener_owner_is_upstream() {
    // A worker named python3 whose master owns the listener nginx fails on.
    let es = vec![
        nginx_facts(T0),
        facts(
            T0,
            FactsUpdate {
                processes: vec![
                    proc_info(200, 1, "python3", "python3 app.py", 999, &[]),
                    proc_info(201, 200, "python3", "python3 app.py", 999, &[]),
                ],
                listeners: Some(vec![listener("127.0.0.1:5000", 200, "python3")]),
                ..FactsUpdate::default()
            },
        ),
        connect_src(T0 + S, 101, "nginx", "127.0.0.1:5000", 104, "tcp_state"),
        exit_signal(T0 + S, 201, "python3", 11, true),
    ];
    let vs = run(&es);
    assert!(causes(&vs).contains(&"worker-crashed"), "{vs:#?}");
}

// ---- near misses --------------------------------------------------------------------------

#[test]
fn near_miss_healthy_burst() {
    let cmd = "gunicorn --bind 127.0.0.1:8000 app:app";
    let es = vec![
        nginx_facts(T0),
        exec(T0, 200, "gunicorn", "/usr/bin/gunicorn", cmd),
        gunicorn_facts(
            T0 + S,
            cmd,
            vec![listener("127.0.0.1:8000", 200, "gunicorn")],
        ),
        facts(
            T0 + 2 * S,
            FactsUpdate {
                netstat: Some(Netstat::default()),
                ..FactsUpdate::default()
            },
        ),
    ];
    assert_eq!(run(&es), Vec::<Verdict>::new());
}

#[test]
fn near_miss_refused_connect_from_non_proxy() {
    let es = vec![
        nginx_facts(T0),
        facts(
            T0,
            FactsUpdate {
                processes: vec![proc_info(700, 1, "python3", "python3 client.py", 1000, &[])],
                ..FactsUpdate::default()
            },
        ),
        connect(T0 + S, 600, "curl", "127.0.0.1:8000", 111),
        connect(T0 + S, 700, "python3", "unix:/run/dbus.sock", 2),
        connect(T0 + S, 700, "python3", "127.0.0.1:8000", 111),
    ];
    assert_eq!(run(&es), Vec::<Verdict>::new());
}

#[test]
fn near_miss_sigterm_shutdown_by_master() {
    let es = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            "gunicorn app:app",
            vec![listener("127.0.0.1:8000", 200, "gunicorn")],
        ),
        signal(T0 + S, 200, "gunicorn", 201, "gunicorn", 15, 0),
        exit_code(T0 + S + 50 * MS, 201, "gunicorn", 0),
        exit_code(T0 + S + 80 * MS, 200, "gunicorn", 0),
    ];
    assert_eq!(run(&es), Vec::<Verdict>::new());
}

#[test]
fn near_miss_clean_exits() {
    let es = vec![
        nginx_facts(T0),
        exec(T0, 300, "gunicorn", "/usr/bin/gunicorn", "gunicorn app:app"),
        exit_code(T0 + S, 300, "gunicorn", 0),
        exec(
            T0 + 2 * S,
            301,
            "gunicorn",
            "/usr/bin/gunicorn",
            "gunicorn app:app",
        ),
        exit_code(T0 + 3 * S, 301, "gunicorn", 0),
    ];
    assert_eq!(run(&es), Vec::<Verdict>::new());
}

#[test]
fn near_miss_sigkill_of_non_upstream() {
    let es = vec![
        nginx_facts(T0),
        exec(T0, 500, "sleep", "/usr/bin/sleep", "sleep 100"),
        signal(T0 + S, 400, "bash", 500, "sleep", 9, 0),
        exit_signal(T0 + S, 500, "sleep", 9, false),
        // A crashing non-upstream too, and a short-lived tool failing twice.
        exit_signal(T0 + S, 501, "vim", 11, true),
        exec(T0, 502, "grep", "/usr/bin/grep", "grep x"),
        exit_code(T0 + MS, 502, "grep", 1),
        exec(T0, 503, "grep", "/usr/bin/grep", "grep x"),
        exit_code(T0 + MS, 503, "grep", 1),
    ];
    assert_eq!(run(&es), Vec::<Verdict>::new());
}

// ---- proxy detection ----------------------------------------------------------------------

#[test]
fn proxy_from_facts_list_and_config() {
    let es = vec![
        facts(
            T0,
            FactsUpdate {
                proxies: vec![900],
                ..FactsUpdate::default()
            },
        ),
        connect(T0 + S, 900, "myproxy", "127.0.0.1:9000", 111),
    ];
    let vs = run(&es);
    assert_eq!(only(&vs, "upstream-not-listening").proxy_comm, "myproxy");

    let mut e = Engine::new(EngineConfig {
        proxy_names: vec![],
        proxy_pids: vec![901],
    });
    e.feed(&connect(T0, 901, "lb", "127.0.0.1:9000", 111));
    e.feed(&connect(T0, 902, "nginx", "127.0.0.1:9000", 111));
    let vs = e.verdicts(T0);
    assert_eq!(vs.len(), 1, "nginx is not a proxy name in this config");
    assert_eq!(vs[0].proxy_pid, 901);
}

#[test]
fn child_of_listed_proxy_is_a_proxy() {
    let es = vec![
        facts(
            T0,
            FactsUpdate {
                processes: vec![
                    proc_info(910, 1, "lb", "lb", 0, &[]),
                    proc_info(911, 910, "lb-worker", "lb", 0, &[]),
                ],
                proxies: vec![910],
                ..FactsUpdate::default()
            },
        ),
        connect(T0 + S, 911, "lb-worker", "127.0.0.1:9000", 111),
    ];
    let vs = run(&es);
    assert_eq!(only(&vs, "upstream-not-listening").proxy_pid, 910);
}

#[test]
fn worker_without_facts_groups_by_name() {
    let mut es = vec![];
    failures(&mut es, T0, 2, 101, "127.0.0.1:8000", 111);
    failures(&mut es, T0, 3, 102, "127.0.0.1:8000", 111);
    let vs = run(&es);
    let v = only(&vs, "upstream-not-listening");
    assert_eq!((v.count, v.proxy_comm.as_str()), (5, "nginx"));
}

// ---- dedup, order, bounds, rendering ------------------------------------------------------

#[test]
fn verdicts_sort_active_then_frequent() {
    let mut es = vec![nginx_facts(T0)];
    failures(&mut es, T0, 2, 101, "127.0.0.1:8001", 111);
    failures(&mut es, T0, 5, 101, "10.0.0.9:80", 101);
    failures(&mut es, T0 + 600 * S, 1, 101, "10.0.0.9:81", 99);
    let vs = run(&es);
    assert_eq!(
        causes(&vs),
        [
            "port-exhaustion",
            "network-unreachable",
            "upstream-not-listening"
        ]
    );
    let v = &vs[1];
    assert!(
        (v.rate_per_s - 5.0).abs() < 1e-9,
        "5 over 0.4 s, counted as 1 s: {}",
        v.rate_per_s
    );
}

#[test]
fn memory_stays_bounded() {
    let mut e = engine();
    for i in 0..30_000u32 {
        let t = T0 + u64::from(i) * MS;
        e.feed(&connect(
            t,
            10_000 + i,
            "curl",
            &format!("127.0.0.1:{}", i % 60_000),
            111,
        ));
        e.feed(&exit_code(t, 10_000 + i, "curl", 7));
        e.feed(&signal(t, 1, "systemd", 10_000 + i, "curl", 15, 0));
    }
    for i in 0..(state::RECENT_PER_GROUP as u64 * 2) {
        e.feed(&connect(T0 + i, 101, "nginx", "127.0.0.1:8000", 111));
    }
    let st = &e.state;
    assert!(st.procs.len() <= state::MAX_PROCS);
    assert!(st.failures.len() <= state::MAX_FAIL_GROUPS);
    assert!(st.exits.len() <= state::MAX_EXITS);
    assert!(st.signals.len() <= state::MAX_SIGNALS);
    assert!(
        st.failures
            .values()
            .all(|g| g.recent.len() <= state::RECENT_PER_GROUP)
    );
    let vs = e.verdicts(T0 + 40 * S);
    let v = only(&vs, "upstream-not-listening");
    assert_eq!(
        v.count,
        state::RECENT_PER_GROUP as u64 * 2,
        "counts survive the bounded timestamps"
    );
}

#[test]
fn loss_is_noted_in_evidence() {
    let es = vec![
        nginx_facts(T0),
        ev(
            T0,
            0,
            "",
            Body::Loss {
                reason: "ringbuf".into(),
                count: 12,
            },
        ),
        connect(T0 + S, 101, "nginx", "127.0.0.1:8000", 111),
    ];
    let vs = run(&es);
    assert!(has(&vs[0], "12 events were lost (ringbuf)"));
}

#[test]
fn exec_failure_of_app_is_evidence() {
    let es = vec![
        nginx_facts(T0),
        ev(
            T0,
            5000,
            "(gunicorn)",
            Body::ExecFailed {
                filename: "/srv/venv/bin/gunicorn".into(),
                errno: 2,
                errno_name: "ENOENT".into(),
            },
        ),
        connect(T0 + S, 101, "nginx", "127.0.0.1:8000", 111),
    ];
    let vs = run(&es);
    let v = only(&vs, "upstream-not-listening");
    assert!(
        has(v, "exec of /srv/venv/bin/gunicorn failed with ENOENT (2)"),
        "{v:#?}"
    );
}

#[test]
fn render_human_has_headline_evidence_fix() {
    let vs = run(&permission_stream(&[33]));
    let text = render_human(&vs[0]);
    let mut lines = text.lines();
    let head = lines.next().unwrap_or_default();
    assert!(
        head.starts_with("502 socket-permission proxy nginx[100] -> unix:/run/app/app.sock: "),
        "{head}"
    );
    assert!(head.contains("(5×, "), "{head}");
    assert!(text.lines().any(|l| l.starts_with("  evidence: ")));
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("  fix: "))
    );
    // No terminal codes from the engine: the status and cause come as their own span for an
    // output to style (the human verdict sink's colour is tested there).
    assert!(!text.contains('\x1b'), "{text:?}");
    let spans = render_spans(&vs[0]);
    assert_eq!(
        spans.first(),
        Some(&Span {
            role: Role::Failure,
            text: "502 socket-permission".to_owned()
        })
    );
    assert!(
        spans
            .iter()
            .any(|s| s.role == Role::Fix && s.text == "fix:")
    );
    assert_eq!(
        spans.iter().map(|s| s.text.as_str()).collect::<String>(),
        text
    );
}

// ---- golden replay ------------------------------------------------------------------------

/// Replays a recorded JSON-lines file through the engine.
fn replay(name: &str) -> (Vec<Verdict>, usize) {
    let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut e = engine();
    let mut last = 0;
    let mut n = 0;
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let ev: Event =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{path}:{}: {err}", i + 1));
        last = last.max(ev.mono_ns);
        e.feed(&ev);
        n += 1;
    }
    (e.verdicts(last), n)
}

#[test]
fn golden_socket_permission_replay() {
    let (vs, n) = replay("socket_permission.jsonl");
    assert!(n >= 8, "fixture has {n} events");
    let v = only(&vs, "socket-permission");
    assert_eq!(
        (
            v.status,
            v.proxy_pid,
            v.proxy_comm.as_str(),
            v.target.as_str(),
            v.count
        ),
        (502, 4100, "nginx", "unix:/run/gunicorn/app.sock", 3)
    );
    assert_eq!(
        v.evidence.get(1).map(String::as_str),
        Some(
            "srw-rw---- 998:998 /run/gunicorn/app.sock denies nginx worker pid 4101 (uid 33, gid 33, groups \
             33): no write (w) permission for others"
        )
    );
    assert!(
        v.fix
            .starts_with("add the proxy's user to group 998: usermod -aG"),
        "{}",
        v.fix
    );
    let text = render_human(v);
    assert!(
        text.starts_with("502 socket-permission proxy nginx[4100] -> unix:/run/gunicorn/app.sock"),
        "{text}"
    );
}

#[test]
fn verdicts_stay_cheap_on_a_full_state() {
    // Every table at its cap, with many listeners and many failed short-lived processes.
    let mut e = engine();
    let listeners: Vec<Listener> = (0..400u32)
        .map(|i| listener(&format!("unix:/run/s{i}.sock"), 20_000 + i, "svc"))
        .collect();
    e.feed(&facts(
        T0,
        FactsUpdate {
            listeners: Some(listeners),
            ..FactsUpdate::default()
        },
    ));
    e.feed(&nginx_facts(T0));
    for i in 0..20_000u32 {
        let t = T0 + u64::from(i) * MS;
        let pid = 30_000 + i;
        e.feed(&exec(
            t,
            pid,
            "gunicorn",
            "/usr/bin/gunicorn",
            "gunicorn app:app",
        ));
        e.feed(&exit_code(t + MS, pid, "gunicorn", 1));
        e.feed(&connect(
            t,
            101,
            "nginx",
            &format!("unix:/run/x{}.sock", i % 3000),
            2,
        ));
    }
    let start = std::time::Instant::now();
    let vs = e.verdicts(T0 + 30 * S);
    assert_ne!(vs.len(), 0);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn abstract_sockets_refused_or_denied() {
    let es = vec![
        nginx_facts(T0),
        connect(T0 + S, 101, "nginx", "unix:@app", 111),
        connect(T0 + S, 101, "nginx", "unix:@locked", 13),
    ];
    let vs = run(&es);
    assert_eq!(
        causes(&vs),
        ["socket-missing", "socket-permission"],
        "{vs:#?}"
    );
    assert!(has(
        &vs[0],
        "abstract socket @app: no process has bound that name"
    ));
    assert!(has(&vs[1], "no file permissions"));
}

#[test]
fn deleted_socket_file_of_a_live_app() {
    let t = "unix:/tmp/app.sock";
    let mut es = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            "gunicorn --bind unix:/tmp/app.sock a:b",
            vec![listener(t, 200, "gunicorn")],
        ),
    ];
    failures(&mut es, T0 + S, 2, 101, t, 2);
    let vs = run(&es);
    let v = only(&vs, "socket-missing");
    assert!(
        has(v, "gunicorn pid 200 still listens on unix:/tmp/app.sock"),
        "{v:#?}"
    );
    assert!(has(v, "PrivateTmp="));
}

#[test]
fn crash_loop_matched_by_the_socket_it_used_to_serve() {
    // Configured by file (no bind on the command line): the listener history ties it to the
    // target; a second, unrelated crash loop must not be blamed.
    let cmd = "gunicorn -c /etc/gunicorn.conf.py app:app";
    let t = "unix:/run/app.sock";
    let mut es = vec![
        nginx_facts(T0),
        exec(T0, 200, "gunicorn", "/usr/bin/gunicorn", cmd),
        facts(
            T0 + S,
            FactsUpdate {
                processes: vec![proc_info(200, 1, "gunicorn", cmd, 999, &[])],
                listeners: Some(vec![listener(t, 200, "gunicorn")]),
                ..FactsUpdate::default()
            },
        ),
        exit_code(T0 + 5 * S, 200, "gunicorn", 1),
        facts(
            T0 + 6 * S,
            FactsUpdate {
                listeners: Some(vec![]),
                ..FactsUpdate::default()
            },
        ),
    ];
    for i in 0..3u32 {
        let t0 = T0 + 10 * S + u64::from(i) * 2 * S;
        es.push(exec(t0, 300 + i, "gunicorn", "/usr/bin/gunicorn", cmd));
        es.push(exit_code(t0 + S, 300 + i, "gunicorn", 4));
        es.push(exec(
            t0,
            400 + i,
            "uwsgi",
            "/usr/bin/uwsgi",
            "uwsgi --socket /run/other.sock",
        ));
        es.push(exit_code(t0 + S, 400 + i, "uwsgi", 1));
    }
    failures(&mut es, T0 + 10 * S, 5, 101, t, 111);
    let vs = run(&es);
    let v = vs
        .iter()
        .find(|v| v.target == t)
        .unwrap_or_else(|| panic!("{vs:#?}"));
    assert_eq!(v.cause, "crash-on-boot");
    assert!(has(v, "exit code 4 (app failed to load)"), "{v:#?}");
    assert!(!has(v, "uwsgi"), "{v:#?}");
    // The uwsgi loop stands alone, on its own socket.
    assert!(
        vs.iter()
            .any(|v| v.cause == "crash-on-boot" && v.target == "unix:/run/other.sock"),
        "{vs:#?}"
    );
}

#[test]
fn repeated_timeouts_are_not_a_crash_loop() {
    // Workers forked a few seconds before their master aborts them exit 1 (gunicorn's SIGABRT
    // handler): timeouts, not failed boots.
    let mut es = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            "gunicorn --timeout 2 app:app",
            vec![listener("127.0.0.1:8000", 200, "gunicorn")],
        ),
    ];
    for i in 0..3u32 {
        let pid = 210 + i;
        let t = T0 + u64::from(i) * 5 * S;
        let mut info = proc_info(
            pid,
            200,
            "gunicorn",
            "gunicorn --timeout 2 app:app",
            999,
            &[],
        );
        info.start_ns = t;
        es.push(facts(
            t,
            FactsUpdate {
                processes: vec![info],
                ..FactsUpdate::default()
            },
        ));
        es.push(signal(t + 3 * S, 200, "gunicorn", pid, "gunicorn", 6, 0));
        es.push(exit_code(t + 3 * S + MS, pid, "gunicorn", 1));
    }
    let vs = run(&es);
    let v = only(&vs, "worker-timeout");
    assert_eq!(v.count, 3);
    assert!(has(v, "--timeout is 2 s"));
}

#[test]
fn forked_worker_boot_failure_known_only_by_name_is_one_loop() {
    // The master's exec is seen; its worker died before any facts about it: comm only.
    let cmd = "/srv/venv/bin/gunicorn --bind unix:/run/g.sock app:app";
    let es = vec![
        nginx_facts(T0),
        exec(T0, 300, "gunicorn", "/srv/venv/bin/gunicorn", cmd),
        exit_code(T0 + 600 * MS, 301, "gunicorn", 3),
        exit_code(T0 + 700 * MS, 300, "gunicorn", 3),
        connect(T0 + S, 101, "nginx", "unix:/run/g.sock", 2),
    ];
    let vs = run(&es);
    let v = only(&vs, "crash-on-boot");
    assert_eq!(v.target, "unix:/run/g.sock");
    assert!(has(v, "gunicorn pid 301: exit code 3"), "{v:#?}");
}

// ---- attribution ----------------------------------------------------------------------------

const CID: &str = "4f3c2b1a00112233445566778899aabbccddeeff00112233445566778899aabb";

fn with_origin(mut e: Event, cgroup: &str) -> Event {
    e.origin = Some(std::sync::Arc::new(crate::origin::Origin::from_path(
        cgroup,
    )));
    e
}

#[test]
fn verdicts_name_the_proxys_unit_and_the_upstreams_pod() {
    let pod = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b5e8a3c_1d2e_4f60_8a9b_0c1d2e3f4a5b.slice/cri-containerd-{CID}.scope"
    );
    let mut es = timeout_stream();
    // The worker's death carries its origin (read while it was still there).
    let last = es.pop().unwrap();
    es.push(with_origin(last, &pod));
    // A failed connect from the proxy worker carries the proxy's.
    es.push(with_origin(
        connect(T0 + 32 * S, 101, "nginx", "127.0.0.1:8000", 111),
        "/system.slice/nginx.service",
    ));
    let vs = run(&es);
    let v = vs
        .iter()
        .find(|v| v.cause == "worker-timeout")
        .expect("timeout");
    assert_eq!(v.upstream_pid, Some(201));
    let up = v.upstream_origin.as_ref().expect("upstream origin");
    assert_eq!(
        up.pod_uid.as_deref(),
        Some("0b5e8a3c-1d2e-4f60-8a9b-0c1d2e3f4a5b")
    );
    assert_eq!(up.container_id.as_deref(), Some(CID));
    assert_eq!(up.container_runtime.as_deref(), Some("containerd"));
    let refused = vs
        .iter()
        .find(|v| v.cause != "worker-timeout")
        .expect("a verdict for the failed connect");
    assert_eq!(
        refused
            .proxy_origin
            .as_ref()
            .and_then(|o| o.unit.as_deref()),
        Some("nginx.service"),
        "{refused:#?}"
    );
    // The listener's last owner (gunicorn 200) is the connect verdict's upstream: no origin
    // known for it (facts without a cgroup), so none is made up.
    assert_eq!(refused.upstream_pid, Some(200));
    assert_eq!(refused.upstream_origin, None);
    let text = render_human(v);
    assert!(
        text.contains("where: proxy in unit nginx.service; upstream pid 201 in container 4f3c2b1a0011 (containerd), pod 0b5e8a3c"),
        "{text}"
    );
}

#[test]
fn facts_cgroups_attribute_without_event_origins() {
    let mut es = timeout_stream();
    if let Body::Facts(f) = &mut es[1].body {
        for p in &mut f.processes {
            p.cgroup = format!("/system.slice/docker-{CID}.scope");
        }
    }
    let vs = run(&es);
    let v = only(&vs, "worker-timeout");
    let up = v.upstream_origin.as_ref().expect("from the facts' cgroup");
    assert_eq!(up.container_runtime.as_deref(), Some("docker"));
    assert_eq!(
        up.unit.as_deref(),
        Some(format!("docker-{CID}.scope").as_str())
    );
}
