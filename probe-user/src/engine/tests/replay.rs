//! A golden replay of a recorded JSON-lines fixture.
use super::*;

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
    let v = only(&vs, Cause::SocketPermission);
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
fn verdicts_on_a_full_state_stay_bounded() {
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
    // How long this takes is the bench's business (timed unit tests flake on a loaded machine);
    // here: a full state still yields verdicts, and what they carry stays bounded.
    let vs = e.verdicts(T0 + 30 * S);
    assert_ne!(vs.len(), 0);
    assert!(
        vs.len() <= super::super::state::MAX_FAIL_GROUPS,
        "{} verdicts",
        vs.len()
    );
    for v in &vs {
        assert!(
            // The cap, plus the one note on lost events.
            v.evidence.len() <= super::super::report::MAX_EVIDENCE + 1,
            "{} evidence lines: {:?}",
            v.evidence.len(),
            v.evidence
        );
    }
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
        [Cause::SocketMissing, Cause::SocketPermission],
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
    let v = only(&vs, Cause::SocketMissing);
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
    assert_eq!(v.cause, Cause::CrashOnBoot);
    assert!(has(v, "exit code 4 (app failed to load)"), "{v:#?}");
    assert!(!has(v, "uwsgi"), "{v:#?}");
    // The uwsgi loop stands alone, on its own socket.
    assert!(
        vs.iter()
            .any(|v| v.cause == Cause::CrashOnBoot && v.target == "unix:/run/other.sock"),
        "{vs:#?}"
    );
}

#[test]
fn repeated_timeouts_are_not_a_crash_loop() {
    // Workers forked a few seconds before their master aborts them exit 1 (gunicorn's SIGABRT
    // handler): timeouts, not failed boots.
    let mut es = vec![
        nginx_configured(T0, &["127.0.0.1:8000"]),
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
    let v = only(&vs, Cause::WorkerTimeout);
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
    let v = only(&vs, Cause::CrashOnBoot);
    assert_eq!(v.target, "unix:/run/g.sock");
    assert!(has(v, "gunicorn pid 301: exit code 3"), "{v:#?}");
}
