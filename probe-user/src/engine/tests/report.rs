//! Deduplication, order, bounds and rendering of verdicts.
use super::*;

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
            Cause::PortExhaustion,
            Cause::NetworkUnreachable,
            Cause::UpstreamNotListening
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
    let v = only(&vs, Cause::UpstreamNotListening);
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
    let v = only(&vs, Cause::UpstreamNotListening);
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
