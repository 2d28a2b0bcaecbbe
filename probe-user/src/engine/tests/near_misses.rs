//! Near misses that must stay silent.
use super::*;

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
