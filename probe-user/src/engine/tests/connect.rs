//! Failed connects: one stream per errno cause (missing, stale, refused, wrong target, permission, backlog, simple errnos).
use super::*;

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
    let v = only(&vs, Cause::SocketMissing);
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
    let v = only(&vs, Cause::SocketMissing);
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
    let v = only(&vs, Cause::WrongTarget);
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
    let v = only(&v, Cause::WrongTarget);
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
    let v = only(&vs, Cause::UpstreamNotListening);
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
    let v = only(&vs, Cause::StaleSocket);
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
    let v = only(&v, Cause::UpstreamNotListening);
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
    let v = only(&vs, Cause::UpstreamNotListening);
    assert!(
        has(v, "gunicorn pid 200 listens on 0.0.0.0:8000 now"),
        "{v:#?}"
    );
}

#[test]
fn socket_permission_names_the_denying_component() {
    let vs = run(&permission_stream(&[33]));
    let v = only(&vs, Cause::SocketPermission);
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

/// The permission stream with the names the worker's system gives (fixture passwd/group, in
/// which 999 is the user gwapp and 995 the group gwapp; the socket is 999:995 here).
fn named_permission_stream() -> Vec<Event> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/accounts/");
    let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).unwrap();
    let mut es = permission_stream(&[33]);
    if let Body::Facts(f) = &mut es[0].body {
        for c in &mut f.paths[0].components[2..] {
            c.gid = 995;
        }
    }
    // The names arrive after the failures, as the enricher sends them with the path walk.
    es.push(facts(
        T0 + 2 * S,
        FactsUpdate {
            names: vec![crate::facts::IdNames::from_files(
                101,
                &read("passwd"),
                &read("group"),
                &[0, 33, 999],
                &[0, 33, 995],
            )],
            ..FactsUpdate::default()
        },
    ));
    es
}

#[test]
fn socket_permission_prints_names_and_the_literal_fix() {
    let vs = run(&named_permission_stream());
    let v = only(&vs, Cause::SocketPermission);
    assert_eq!(
        v.summary,
        "/run/app/app.sock (srw-rw---- gwapp:gwapp) denies nginx worker pid 101 (user www-data, groups www-data)"
    );
    assert!(
        has(
            v,
            "srw-rw---- gwapp:gwapp /run/app/app.sock denies nginx worker pid 101 (user www-data, groups www-data): \
             no write (w) permission for others"
        ),
        "{v:#?}"
    );
    assert!(
        has(
            v,
            "nginx pid 101 (www-data): connect() to unix:/run/app/app.sock"
        ),
        "{v:#?}"
    );
    assert!(
        v.fix.starts_with(
            "add the proxy's user to group gwapp: usermod -aG gwapp www-data, then reload nginx"
        ),
        "{}",
        v.fix
    );
    assert!(!v.fix.contains("getent"), "{}", v.fix);
}

#[test]
fn unnamed_ids_stay_numbers() {
    // The worker's system names its user but not the socket's owner (a container's uid).
    let mut es = named_permission_stream();
    if let Some(Body::Facts(f)) = es.last_mut().map(|e| &mut e.body) {
        f.names[0].users.retain(|n| n.id == 33);
        f.names[0].groups.retain(|n| n.id == 33);
    }
    let vs = run(&es);
    let v = only(&vs, Cause::SocketPermission);
    assert!(
        v.summary
            .starts_with("/run/app/app.sock (srw-rw---- 999:995) denies"),
        "{}",
        v.summary
    );
    assert!(
        v.fix
            .contains("usermod -aG $(getent group 995 | cut -d: -f1)"),
        "{}",
        v.fix
    );
}

#[test]
fn names_survive_a_record_file() {
    let es = named_permission_stream();
    let lines: Vec<String> = es
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    assert!(
        lines.last().unwrap().contains(r#""names":[{"pid":101"#),
        "{lines:?}"
    );
    let back: Vec<Event> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(run(&back), run(&es));
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
    let v = only(&vs, Cause::SocketPermission);
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
    let v = only(&vs, Cause::SocketPermission);
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
    let v = only(&vs, Cause::BacklogFull);
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
    let v = only(&vs, Cause::BacklogFull);
    assert_eq!(v.status, 504);
    assert!(has(v, "ListenOverflows rose by 240"), "{v:#?}");
}

#[test]
fn simple_errnos_map_to_their_causes() {
    let cases = [
        (99, "syscall", Cause::PortExhaustion, 502),
        (101, "syscall", Cause::NetworkUnreachable, 502),
        (113, "tcp_state", Cause::NetworkUnreachable, 502),
        (110, "tcp_state", Cause::ConnectTimeout, 504),
        (110, "tcp_abandoned", Cause::ConnectTimeout, 504),
        (104, "tcp_state", Cause::UpstreamReset, 502),
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

fn nf_drop(t: u64, pid: u32, target: &str) -> Event {
    ev(
        t,
        pid,
        "nginx",
        Body::NetfilterDrop {
            target: target.to_owned(),
            source_addr: "127.0.0.1:40000".to_owned(),
            reason: "NETFILTER_DROP".to_owned(),
            count: 1,
        },
    )
}

/// Refused while gunicorn listens, and the kernel saw netfilter drop the SYNs: a rule rejects,
/// nothing is missing.
#[test]
fn refused_with_netfilter_drops_is_firewall_reject_naming_the_listener() {
    let t = "127.0.0.1:8000";
    let mut es = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            "gunicorn --bind 127.0.0.1:8000 app:app",
            vec![
                listener("0.0.0.0:80", 100, "nginx"),
                listener(t, 200, "gunicorn"),
            ],
        ),
    ];
    for i in 0..3 {
        es.push(nf_drop(T0 + S + i * 100 * MS, 101, t));
    }
    failures(&mut es, T0 + S, 3, 101, t, 111);
    let vs = run(&es);
    assert_eq!(causes(&vs), [Cause::FirewallReject], "{vs:#?}");
    let v = only(&vs, Cause::FirewallReject);
    assert_eq!((v.status, v.count), (502, 3));
    assert!(has(v, "NETFILTER_DROP"), "{v:#?}");
    assert!(
        has(v, "gunicorn pid 200 listens on 127.0.0.1:8000"),
        "{v:#?}"
    );
    assert!(v.fix.contains("nft list ruleset"), "{}", v.fix);
    assert!(v.fix.contains("nsenter -t 101 -n"), "{}", v.fix);
}

/// A drop by another process, or to another target, explains nothing: still nothing listens.
#[test]
fn netfilter_drops_of_others_leave_upstream_not_listening() {
    let t = "127.0.0.1:8000";
    let mut es = vec![nginx_facts(T0)];
    es.push(nf_drop(T0 + S, 555, t));
    es.push(nf_drop(T0 + S, 101, "127.0.0.1:9000"));
    failures(&mut es, T0 + S, 2, 101, t, 111);
    let vs = run(&es);
    assert_eq!(causes(&vs), [Cause::UpstreamNotListening], "{vs:#?}");
}

/// A `drop` rule: the SYNs vanish, the connect times out, and the evidence says who dropped them.
#[test]
fn timeout_with_netfilter_drops_says_dropped_by_a_rule() {
    let t = "127.0.0.1:8000";
    let mut es = vec![nginx_facts(T0), nf_drop(T0 + S, 101, t)];
    es.push(connect_src(
        T0 + 4 * S,
        101,
        "nginx",
        t,
        110,
        "tcp_abandoned",
    ));
    let vs = run(&es);
    let v = only(&vs, Cause::ConnectTimeout);
    assert_eq!(v.status, 504);
    assert!(has(v, "dropped by a netfilter rule"), "{v:#?}");
    assert!(v.fix.contains("nft list ruleset"), "{}", v.fix);
}

/// `--hooks auto`: a failure inferred from an attempt and a check (source `attempt`), then the
/// kernel's own reports once escalated, make one verdict counting each failure once, and the
/// verdict says where its errno came from.
#[test]
fn inferred_then_kernel_failures_count_once_and_say_so() {
    use crate::engine::ErrnoFrom;
    let stream = |inferred: u64, kernel: u64| {
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
        for i in 0..inferred {
            let mut e = connect(T0 + S + i * MS, 101, "nginx", "unix:/run/app.sock", 2);
            if let Body::ConnectFailed { source, count, .. } = &mut e.body {
                "attempt".clone_into(source);
                *count = 3;
            }
            es.push(e);
        }
        failures(&mut es, T0 + 2 * S, kernel, 101, "unix:/run/app.sock", 2);
        es
    };
    for (inferred, kernel, from, count) in [
        (1, 4, ErrnoFrom::CheckThenKernel, 7),
        (1, 0, ErrnoFrom::Check, 3),
        (0, 4, ErrnoFrom::Kernel, 4),
    ] {
        let vs = run(&stream(inferred, kernel));
        let v = only(&vs, Cause::SocketMissing);
        assert_eq!(
            (v.count, v.errno_from),
            (count, Some(from)),
            "{inferred} inferred line(s), {kernel} kernel failures"
        );
    }
}
