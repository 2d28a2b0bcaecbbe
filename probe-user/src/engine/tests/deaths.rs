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
    let v = only(&vs, Cause::WorkerTimeout);
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
    let v = only(&vs, Cause::WorkerCrashed);
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
    let v = only(&vs, Cause::WorkerCrashed);
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
    assert!(causes(&vs).contains(&Cause::WorkerCrashed), "{vs:#?}");
}
