//! Workers dying mid-request: timeouts, OOM kills, crashes.
use super::*;

#[test]
fn master_sigabrt_is_worker_timeout() {
    let vs = run(&timeout_stream());
    let v = only(&vs, Cause::WorkerTimeout);
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

/// No proxy names or reaches the app: its worker's death is no 502 cause (the host's other
/// processes die too).
#[test]
fn worker_timeout_of_no_proxys_upstream_gives_no_verdict() {
    let mut es: Vec<Event> = timeout_stream().into_iter().skip(2).collect();
    es.insert(
        0,
        gunicorn_facts(
            T0,
            "gunicorn app:app",
            vec![listener("127.0.0.1:8000", 200, "gunicorn")],
        ),
    );
    assert_eq!(causes(&run(&es)), Vec::<Cause>::new(), "no proxy known");
    es.insert(0, nginx_configured(T0, &["unix:/run/other.sock"]));
    assert_eq!(
        causes(&run(&es)),
        Vec::<Cause>::new(),
        "nginx serves another app"
    );
}

#[test]
fn oom_kill_of_worker_names_the_memcg() {
    let es = vec![
        nginx_configured(T0, &["127.0.0.1:8000"]),
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
    let v = only(&vs, Cause::WorkerOomKilled);
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
        nginx_configured(T0, &["127.0.0.1:8000"]),
        gunicorn_facts(
            T0,
            "gunicorn app:app",
            vec![listener("127.0.0.1:8000", 200, "gunicorn")],
        ),
        signal(T0 + S, 201, "gunicorn", 201, "gunicorn", 11, 1),
        exit_signal(T0 + S + MS, 201, "gunicorn", 11, true),
    ];
    let vs = run(&es);
    let v = only(&vs, Cause::WorkerCrashed);
    assert_eq!(v.count, 1, "signal and exit are one crash");
    assert!(has(v, "died of SIGSEGV (11), core dumped"), "{v:#?}");
    assert!(has(v, "si_code 1"), "{v:#?}");
}

#[test]
fn kernel_fault_signal_alone_is_worker_crashed() {
    // No listener seen: gunicorn's default bind (127.0.0.1:8000) is what nginx proxies to.
    let es = vec![
        nginx_configured(T0, &["127.0.0.1:8000"]),
        gunicorn_facts(T0, "gunicorn app:app", vec![]),
        signal(T0 + S, 201, "gunicorn", 201, "gunicorn", 7, 2),
    ];
    let vs = run(&es);
    let v = only(&vs, Cause::WorkerCrashed);
    assert_eq!((v.target.as_str(), v.proxy_pid), ("127.0.0.1:8000", 100));
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
    assert!(causes(&vs).contains(&Cause::WorkerCrashed), "{vs:#?}");
}

/// An app server master 200 (`cmdline`) with workers 201 and 202 behind nginx on `sock`.
fn app_stream(comm: &str, cmdline: &str, sock: &str) -> Vec<Event> {
    vec![
        nginx_configured(T0, &[sock]),
        facts(
            T0,
            FactsUpdate {
                processes: vec![
                    proc_info(200, 1, comm, cmdline, 999, &[999]),
                    proc_info(201, 200, comm, cmdline, 999, &[999]),
                    proc_info(202, 200, comm, cmdline, 999, &[999]),
                ],
                listeners: Some(vec![listener(sock, 200, comm)]),
                ..FactsUpdate::default()
            },
        ),
    ]
}

const UWSGI: &str =
    "uwsgi --plugin python3 --master --processes 2 --http-socket /run/app/u.sock --harakiri 2";

#[test]
fn uwsgi_harakiri_is_worker_timeout_naming_harakiri() {
    let mut es = app_stream("uwsgi", UWSGI, "unix:/run/app/u.sock");
    es.push(signal(T0 + 3 * S, 200, "uwsgi", 201, "uwsgi", 12, 0));
    es.push(signal(T0 + 4 * S, 200, "uwsgi", 201, "uwsgi", 9, 0));
    es.push(exit_signal(T0 + 4 * S + MS, 201, "uwsgi", 9, false));
    let vs = run(&es);
    let v = only(&vs, Cause::WorkerTimeout);
    assert_eq!(
        (v.target.as_str(), v.proxy_pid, v.count, v.upstream_pid),
        ("unix:/run/app/u.sock", 100, 1, Some(201))
    );
    assert!(
        has(
            v,
            "uwsgi pid 200 sent SIGUSR2 to worker uwsgi pid 201 at t=1003.000s, then SIGKILL 1.0 s later \
             (uwsgi's HARAKIRI)"
        ),
        "{v:#?}"
    );
    assert!(has(v, "uwsgi --harakiri 2 (harakiri 2 s)"), "{v:#?}");
    assert!(v.summary.contains("--harakiri (2 s)"), "{}", v.summary);
    assert!(v.fix.contains("--harakiri"), "{}", v.fix);
}

#[test]
fn php_fpm_terminate_timeout_is_worker_timeout() {
    let cmd = "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)";
    let mut es = app_stream("php-fpm8.2", cmd, "unix:/run/php/php8.2-fpm.sock");
    es.push(signal(
        T0 + 3 * S,
        200,
        "php-fpm8.2",
        202,
        "php-fpm8.2",
        15,
        0,
    ));
    es.push(exit_signal(T0 + 3 * S + MS, 202, "php-fpm8.2", 15, false));
    let vs = run(&es);
    let v = only(&vs, Cause::WorkerTimeout);
    assert!(
        has(v, "sent SIGTERM to worker php-fpm8.2 pid 202"),
        "{v:#?}"
    );
    assert!(
        v.summary.contains("request_terminate_timeout"),
        "{}",
        v.summary
    );
    assert!(v.fix.contains("request_terminate_timeout"), "{}", v.fix);
}

#[test]
fn master_sigkill_of_one_worker_of_any_app_server_is_worker_timeout() {
    let cmd = "puma 6.4.0 (unix:///run/app/puma.sock)";
    let mut es = app_stream("puma", cmd, "unix:/run/app/puma.sock");
    es.push(signal(T0 + 3 * S, 200, "puma", 201, "puma", 9, 0));
    es.push(exit_signal(T0 + 3 * S + MS, 201, "puma", 9, false));
    let v = only(&run(&es), Cause::WorkerTimeout).clone();
    assert!(
        has(&v, "puma pid 200 sent SIGKILL to worker puma pid 201"),
        "{v:#?}"
    );
}

/// The master's reload or shutdown, a loop over all its workers, a worker's clean exit after
/// SIGTERM and a kill from outside the app's family are no timeout kills.
#[test]
fn master_stop_reload_mass_kill_clean_exit_and_outsiders_are_not_timeouts() {
    let base = || app_stream("uwsgi", UWSGI, "unix:/run/app/u.sock");
    // Reload: SIGHUP to the master, which then ends each worker.
    let mut reload = base();
    reload.push(signal(T0 + 2 * S, 555, "uwsgi", 200, "uwsgi", 1, 0));
    reload.push(signal(T0 + 3 * S, 200, "uwsgi", 201, "uwsgi", 9, 0));
    reload.push(exit_signal(T0 + 3 * S + MS, 201, "uwsgi", 9, false));
    assert_eq!(causes(&run(&reload)), Vec::<Cause>::new(), "reload");
    // Shutdown: the master exits right after killing its worker.
    let mut shutdown = base();
    shutdown.push(signal(T0 + 3 * S, 200, "uwsgi", 201, "uwsgi", 9, 0));
    shutdown.push(exit_signal(T0 + 3 * S + MS, 201, "uwsgi", 9, false));
    shutdown.push(exit_code(T0 + 4 * S, 200, "uwsgi", 0));
    assert_eq!(causes(&run(&shutdown)), Vec::<Cause>::new(), "shutdown");
    // A master killed by a signal right after its timeout kill did not shut its workers down:
    // the timeout stands.
    let mut killed_after = base();
    killed_after.push(signal(T0 + 3 * S, 200, "uwsgi", 201, "uwsgi", 9, 0));
    killed_after.push(exit_signal(T0 + 3 * S + MS, 201, "uwsgi", 9, false));
    killed_after.push(signal(T0 + 4 * S, 777, "bash", 200, "uwsgi", 9, 0));
    killed_after.push(exit_signal(T0 + 4 * S + MS, 200, "uwsgi", 9, false));
    assert_eq!(causes(&run(&killed_after)), [Cause::WorkerTimeout]);
    // Every worker at once.
    let mut mass = base();
    for w in [201, 202] {
        mass.push(signal(
            T0 + 3 * S + u64::from(w),
            200,
            "uwsgi",
            w,
            "uwsgi",
            15,
            0,
        ));
        mass.push(exit_signal(T0 + 3 * S + MS, w, "uwsgi", 15, false));
    }
    assert_eq!(causes(&run(&mass)), Vec::<Cause>::new(), "mass kill");
    // A SIGTERM the worker obeys cleanly (a graceful stop of one worker).
    let mut clean = base();
    clean.push(signal(T0 + 3 * S, 200, "uwsgi", 201, "uwsgi", 15, 0));
    clean.push(exit_code(T0 + 3 * S + MS, 201, "uwsgi", 0));
    assert_eq!(causes(&run(&clean)), Vec::<Cause>::new(), "clean exit");
    // kill -9 from an operator's shell: not the master.
    let mut outside = base();
    outside.push(signal(T0 + 3 * S, 777, "bash", 201, "uwsgi", 9, 0));
    outside.push(exit_signal(T0 + 3 * S + MS, 201, "uwsgi", 9, false));
    assert_eq!(
        causes(&run(&outside)),
        Vec::<Cause>::new(),
        "kill from outside"
    );
}

/// A single-process app (uvicorn) under a shell loop: it dies, the loop starts a new one on
/// the same socket; nginx's connects refused in between.
fn supervised_death(death: &[Event]) -> Vec<Event> {
    let cmd = "/usr/bin/python3 -m uvicorn --uds /run/app/app.sock asgi:app";
    let sock = "unix:/run/app/app.sock";
    let mut es = vec![
        nginx_configured(T0, &[sock]),
        facts(
            T0,
            FactsUpdate {
                processes: vec![
                    proc_info(
                        300,
                        1,
                        "sh",
                        "sh -c while true; do uvicorn ...; done",
                        0,
                        &[0],
                    ),
                    proc_info(301, 300, "python3", cmd, 999, &[999]),
                ],
                listeners: Some(vec![listener(sock, 301, "python3")]),
                ..FactsUpdate::default()
            },
        ),
    ];
    es.extend(death.iter().cloned());
    failures(&mut es, T0 + 5 * S + 50 * MS, 6, 101, sock, 111);
    es.push(exec(T0 + 6 * S, 302, "python3", "/usr/bin/python3", cmd));
    es.push(facts(
        T0 + 6 * S + 500 * MS,
        FactsUpdate {
            processes: vec![proc_info(302, 300, "python3", cmd, 999, &[999])],
            listeners: Some(vec![listener(sock, 302, "python3")]),
            ..FactsUpdate::default()
        },
    ));
    es
}

#[test]
fn refused_connects_after_a_supervised_crash_count_in_the_crash() {
    let es = supervised_death(&[
        signal(T0 + 5 * S, 301, "python3", 301, "python3", 11, 1),
        exit_signal(T0 + 5 * S + MS, 301, "python3", 11, true),
    ]);
    let vs = run(&es);
    let v = only(&vs, Cause::WorkerCrashed);
    assert_eq!(
        (v.count, v.target.as_str(), v.proxy_pid, v.upstream_pid),
        (7, "unix:/run/app/app.sock", 100, Some(301)),
        "the crash and its 6 refused connects: {v:#?}"
    );
    assert!(has(v, "died of SIGSEGV (11), core dumped"), "{v:#?}");
    assert!(
        has(
            v,
            "connect() to unix:/run/app/app.sock failed with ECONNREFUSED (111) 6×"
        ),
        "{v:#?}"
    );
    assert!(
        has(v, "new python3 pid 302 listened on unix:/run/app/app.sock"),
        "{v:#?}"
    );
    assert!(
        v.summary
            .contains("6 connect(s) failed while it was restarted"),
        "{}",
        v.summary
    );
}

#[test]
fn refused_connects_after_a_supervised_oom_kill_count_in_the_oom_kill() {
    let es = supervised_death(&[
        oom(T0 + 5 * S, 301, 301, "python3"),
        signal(T0 + 5 * S, 0, "", 301, "python3", 9, 0),
        exit_signal(T0 + 5 * S + MS, 301, "python3", 9, false),
    ]);
    let v = only(&run(&es), Cause::WorkerOomKilled).clone();
    assert_eq!(v.count, 7, "{v:#?}");
    assert!(has(&v, "OOM killer chose python3 pid 301"), "{v:#?}");
}

#[test]
fn a_deliberate_stop_and_restart_stays_upstream_restarting() {
    let es = supervised_death(&[
        signal(T0 + 5 * S, 1, "systemd", 301, "python3", 15, 0),
        exit_code(T0 + 5 * S + MS, 301, "python3", 0),
    ]);
    let v = only(&run(&es), Cause::UpstreamRestarting).clone();
    assert_eq!(v.count, 6);
}

/// Shared host: another python process crashes (kill -SEGV) while a healthy nginx runs in
/// front of its own app: nobody's 502.
#[test]
fn unrelated_crash_beside_a_healthy_nginx_gives_no_verdict() {
    let es = vec![
        nginx_configured(T0, &["127.0.0.1:8000"]),
        gunicorn_facts(
            T0,
            "gunicorn --bind 127.0.0.1:8000 app:app",
            vec![listener("127.0.0.1:8000", 200, "gunicorn")],
        ),
        facts(
            T0,
            FactsUpdate {
                processes: vec![
                    proc_info(600, 1, "python3", "python3 batch.py", 0, &[0]),
                    // Another app server that no proxy fronts (its own clients, a test's).
                    proc_info(
                        700,
                        1,
                        "gunicorn",
                        "gunicorn --bind 127.0.0.1:9000 other:app",
                        0,
                        &[0],
                    ),
                    proc_info(
                        701,
                        700,
                        "gunicorn",
                        "gunicorn --bind 127.0.0.1:9000 other:app",
                        0,
                        &[0],
                    ),
                ],
                listeners: Some(vec![
                    listener("127.0.0.1:8000", 200, "gunicorn"),
                    listener("127.0.0.1:9999", 600, "python3"),
                    listener("127.0.0.1:9000", 700, "gunicorn"),
                ]),
                ..FactsUpdate::default()
            },
        ),
        signal(T0 + S, 777, "bash", 600, "python3", 11, 0),
        exit_signal(T0 + S + MS, 600, "python3", 11, true),
        signal(T0 + S, 777, "bash", 701, "gunicorn", 11, 0),
        exit_signal(T0 + S + MS, 701, "gunicorn", 11, true),
        signal(T0 + 2 * S, 701, "gunicorn", 701, "gunicorn", 7, 2),
        oom(T0 + 3 * S, 700, 700, "gunicorn"),
    ];
    assert_eq!(causes(&run(&es)), Vec::<Cause>::new(), "{:#?}", run(&es));
}
