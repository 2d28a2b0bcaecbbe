//! Crash loops and restarts: crash-on-boot, upstream-restarting.
use super::*;

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
    let v = only(&vs, Cause::CrashOnBoot);
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
    only(&vs, Cause::CrashOnBoot);
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
    let v = only(&vs, Cause::CrashOnBoot);
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
    only(&vs, Cause::CrashOnBoot);
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
    let v = only(&vs, Cause::UpstreamRestarting);
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
    let v = only(&vs, Cause::UpstreamNotListening);
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
        [Cause::UpstreamNotListening, Cause::UpstreamRestarting],
        "{vs:#?}"
    );
    assert_eq!(vs[0].count, 1);
    assert_eq!(vs[1].count, 5);
}

/// A crash loop seen with no failed connect: reported alone only while some proxy may use the
/// app; with every proxy's upstreams known and none of them its socket, it is nobody's 502.
#[test]
fn a_crash_loop_no_configuration_names_is_not_blamed_on_the_proxy() {
    let config = |targets: &[&str], partial: bool| {
        facts(
            T0,
            FactsUpdate {
                proxy_configs: vec![crate::facts::ProxyConfig {
                    pid: 100,
                    kind: "nginx".into(),
                    source: "nginx -T".into(),
                    targets: targets.iter().map(|t| (*t).to_owned()).collect(),
                    partial,
                }],
                ..FactsUpdate::default()
            },
        )
    };
    let alone = || {
        let mut es = crash_loop_stream();
        es.retain(|e| !matches!(e.body, Body::ConnectFailed { .. }));
        es
    };
    only(&run(&alone()), Cause::CrashOnBoot);
    let mut es = alone();
    es.insert(1, config(&["unix:/run/other.sock"], false));
    assert_eq!(run(&es), Vec::new());
    // Named by the configuration, or the configuration incomplete: still reported.
    let mut es = alone();
    es.insert(1, config(&["unix:/run/gunicorn.sock"], false));
    only(&run(&es), Cause::CrashOnBoot);
    let mut es = alone();
    es.insert(1, config(&["unix:/run/other.sock"], true));
    only(&run(&es), Cause::CrashOnBoot);
}
