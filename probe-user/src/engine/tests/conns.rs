//! Proxy connections that broke before their answer: the keep-alive race, the app closing a
//! connection itself, and the closes a death explains (no connection verdict).
use super::*;
use crate::event::ConnEndInfo;

const CMD: &str =
    "/usr/bin/python3 /usr/bin/gunicorn -k gthread --keep-alive 1 -b 127.0.0.1:8000 app:app";

/// A connection of nginx worker 101 to gunicorn's 127.0.0.1:8000 that broke: `requests` written
/// on it, the last at `send`, the previous answer ending `idle` before it, the peer's close
/// `close_after` ns after the send (negative: before), `how` (fin/rst), the peer pid and whether
/// it was exiting; the worker reads the end 1 ms after the close.
struct Conn {
    requests: u32,
    send: u64,
    idle: u64,
    close_after: i64,
    how: &'static str,
    peer: Option<u32>,
    exiting: bool,
    wrote_after_close: bool,
}

impl Conn {
    fn race(send: u64) -> Self {
        Self {
            requests: 2,
            send,
            idle: 1100 * MS,
            close_after: 80 * MS.cast_signed(),
            how: "rst",
            peer: Some(201),
            exiting: false,
            wrote_after_close: false,
        }
    }

    fn event(&self) -> Event {
        let close = self.send.saturating_add_signed(self.close_after);
        let info = ConnEndInfo {
            target: "127.0.0.1:8000".into(),
            outcome: if self.how == "rst" { "reset" } else { "eof" }.into(),
            errno: if self.how == "rst" { 104 } else { 0 },
            peer_close: self.how.into(),
            peer_pid: self.peer,
            peer_tid: self.peer,
            peer_comm: self.peer.map(|_| "gunicorn".to_owned()),
            peer_exiting: self.exiting,
            requests: self.requests,
            established_ns: self.send - self.idle - 5 * MS,
            last_send_ns: self.send,
            prev_recv_ns: (self.requests > 1).then(|| self.send - self.idle),
            close_ns: Some(close),
            wrote_after_close: self.wrote_after_close,
            bytes_received: 91,
            bytes_acked: 283,
        };
        ev(close.max(self.send) + MS, 101, "nginx", Body::ConnEnd(info))
    }
}

fn world(cmdline: &str) -> Vec<Event> {
    vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            cmdline,
            vec![listener("127.0.0.1:8000", 200, "gunicorn")],
        ),
    ]
}

#[test]
fn reset_of_a_reused_idle_connection_is_keepalive_race() {
    let mut es = world(CMD);
    es.push(Conn::race(T0 + 10 * S).event());
    es.push(Conn::race(T0 + 12 * S).event());
    let vs = run(&es);
    let v = only(&vs, Cause::KeepaliveRace);
    assert_eq!(
        (v.proxy_pid, v.target.as_str(), v.count, v.status),
        (100, "127.0.0.1:8000", 2, 502)
    );
    assert_eq!(v.upstream_pid, Some(201));
    assert!(
        has(
            v,
            "reused a keep-alive connection to 127.0.0.1:8000 after 1.1 s idle"
        ),
        "{v:#?}"
    );
    assert!(
        has(
            v,
            "gunicorn pid 201 closed it with the request unread (RST) 80 ms after the request"
        ),
        "{v:#?}"
    );
    assert!(has(v, "gunicorn --keep-alive is 1 s"), "{v:#?}");
    // Idle 1.1 s, the close 80 ms after the request: the app's timer, measured.
    assert!(
        has(
            v,
            "the app closed idle connections 1.2 s after its last answer on them (its keep-alive timeout, as measured"
        ),
        "{v:#?}"
    );
    assert!(
        v.fix.contains("--keep-alive") && v.fix.contains("--timeout-keep-alive"),
        "{}",
        v.fix
    );
    // The structured list: one entry per broken connection, naming nginx's worker.
    assert_eq!(v.broken_connections.len(), 2);
    let b = &v.broken_connections[0];
    assert_eq!(
        (
            b.proxy_pid,
            b.target.as_str(),
            b.upstream_pid,
            b.outcome.as_str(),
            b.peer_close.as_str(),
            b.requests
        ),
        (101, "127.0.0.1:8000", Some(201), "reset", "rst", 2)
    );
    assert_eq!(b.idle_ns, Some(1100 * MS));
    assert_eq!(b.close_after_send_ns, Some(80_000_000));
    assert_eq!(b.at_ns, T0 + 10 * S + 81 * MS);
}

#[test]
fn fin_crossing_the_request_is_keepalive_race() {
    let mut es = world("gunicorn app:app");
    // The app's FIN came 2 ms before the request (nginx had not noticed it yet), then the
    // request met the closed socket.
    es.push(
        Conn {
            close_after: -2 * MS.cast_signed(),
            how: "fin_then_rst",
            wrote_after_close: true,
            ..Conn::race(T0 + 10 * S)
        }
        .event(),
    );
    // Or a FIN within a few ms after it.
    es.push(
        Conn {
            close_after: 3 * MS.cast_signed(),
            how: "fin",
            ..Conn::race(T0 + 20 * S)
        }
        .event(),
    );
    let vs = run(&es);
    let v = only(&vs, Cause::KeepaliveRace);
    assert_eq!(v.count, 2);
    assert!(has(v, "2 ms before the request"), "{v:#?}");
    assert!(
        has(v, "gunicorn --keep-alive is 2 s (the default)"),
        "{v:#?}"
    );
}

#[test]
fn a_close_long_after_the_request_or_on_a_first_request_is_upstream_closed_early() {
    let mut es = world("gunicorn --max-requests 50 app:app");
    // FIN 2 s into a reused connection's request: the app took it and closed without answering.
    es.push(
        Conn {
            close_after: 2 * S.cast_signed(),
            how: "fin",
            ..Conn::race(T0 + 10 * S)
        }
        .event(),
    );
    // A reset of the first request on a fresh connection.
    es.push(
        Conn {
            requests: 1,
            ..Conn::race(T0 + 20 * S)
        }
        .event(),
    );
    let vs = run(&es);
    let v = only(&vs, Cause::UpstreamClosedEarly);
    assert_eq!((v.count, v.upstream_pid), (2, Some(201)));
    assert!(
        has(
            v,
            "sent its first request on a connection to 127.0.0.1:8000"
        ),
        "{v:#?}"
    );
    assert!(has(v, "gunicorn --max-requests is 50"), "{v:#?}");
    assert!(v.fix.contains("--max-requests-jitter"), "{}", v.fix);
    assert_eq!(v.broken_connections.len(), 2);
}

#[test]
fn a_worker_that_exited_on_its_own_closed_early_but_a_killed_one_is_a_death() {
    let exiting = |send| Conn {
        requests: 1,
        how: "fin",
        exiting: true,
        close_after: S.cast_signed(),
        ..Conn::race(send)
    };
    // Recycled: worker 201 exited with status 0 (gunicorn --max-requests), closing the
    // connection in its exit.
    let mut es = world("gunicorn --max-requests 50 app:app");
    es.push(exit_code(T0 + 11 * S, 201, "gunicorn", 0));
    es.push(exiting(T0 + 10 * S).event());
    let vs = run(&es);
    assert_eq!(
        only(&vs, Cause::UpstreamClosedEarly)
            .broken_connections
            .len(),
        1
    );
    // Killed by a signal: the connection close is the death's, no connection verdict.
    let mut es = world("gunicorn app:app");
    es.push(signal(T0 + 11 * S - MS, 300, "bash", 201, "gunicorn", 9, 0));
    es.push(exit_signal(T0 + 11 * S, 201, "gunicorn", 9, false));
    es.push(exiting(T0 + 10 * S).event());
    let vs = run(&es);
    assert!(
        !causes(&vs).contains(&Cause::UpstreamClosedEarly)
            && !causes(&vs).contains(&Cause::KeepaliveRace),
        "{vs:#?}"
    );
}

#[test]
fn broken_connections_of_non_proxies_or_to_non_upstreams_are_silent() {
    let mut es = world(CMD);
    // A client that is no proxy.
    let mut e = Conn::race(T0 + 10 * S).event();
    e.pid = 555;
    e.comm = "python3".into();
    es.push(e);
    let vs = run(&es);
    assert!(vs.is_empty(), "{vs:#?}");
    // A peer task that does not serve the target (a remote peer's softirq ran in some other
    // process) is not named.
    let mut es = world(CMD);
    es.push(facts(
        T0,
        FactsUpdate {
            processes: vec![proc_info(700, 1, "postgres", "postgres", 70, &[70])],
            ..FactsUpdate::default()
        },
    ));
    es.push(
        Conn {
            peer: Some(700),
            ..Conn::race(T0 + 10 * S)
        }
        .event(),
    );
    let vs = run(&es);
    let v = only(&vs, Cause::KeepaliveRace);
    assert_eq!(v.broken_connections[0].upstream_pid, None, "{v:#?}");
    assert!(
        has(v, "the upstream closed it with the request unread"),
        "{v:#?}"
    );
}

#[test]
fn connection_verdicts_validate_against_the_verdict_schema() {
    let mut es = world(CMD);
    es.push(Conn::race(T0 + 10 * S).event());
    let vs = run(&es);
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/verdicts.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut line = serde_json::to_value(&vs[0]).unwrap();
    // What the run's ledger adds to every printed line.
    line["id"] = "v1".into();
    line["state"] = "open".into();
    let errors: Vec<String> = validator
        .iter_errors(&line)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?} in {line:#}");
    assert_eq!(line["broken_connections"][0]["proxy_pid"], 101);
}

#[test]
fn a_recycled_worker_closing_busy_kept_alive_connections_is_upstream_closed_early() {
    // gunicorn gthread --max-requests under load: the worker stops after its last request,
    // closes kept-alive connections nginx had just written on (RST, idle well under a
    // millisecond), and exits 0 about 50 ms later.
    let mut es = world("gunicorn -k gthread --keep-alive 5 --max-requests 20 app:app");
    for k in 0..3 {
        es.push(
            Conn {
                idle: MS / 10,
                close_after: 20 * MS.cast_signed(),
                ..Conn::race(T0 + 10 * S + k * MS)
            }
            .event(),
        );
    }
    es.push(exit_code(T0 + 10 * S + 80 * MS, 201, "gunicorn", 0));
    let vs = run(&es);
    let v = only(&vs, Cause::UpstreamClosedEarly);
    assert_eq!((v.count, v.broken_connections.len()), (3, 3));
    assert!(has(v, "it exited with status 0"), "{v:#?}");
    assert!(has(v, "gunicorn --max-requests is 20"), "{v:#?}");
    // The same close after a real idle period, by a worker that then exits on its own, is
    // the recycling too, not a keep-alive race.
    let mut es = world("gunicorn --max-requests 20 app:app");
    es.push(Conn::race(T0 + 10 * S).event());
    es.push(exit_code(T0 + 10 * S + 150 * MS, 201, "gunicorn", 0));
    let vs = run(&es);
    only(&vs, Cause::UpstreamClosedEarly);
}

/// gunicorn's master 200 kills busy worker 201 for its --timeout (SIGABRT, SIGKILL 1 s later,
/// the exit 1 ms after), the proxy's connection to it in flight.
fn killed_worker() -> Vec<Event> {
    let mut es = vec![
        nginx_configured(T0, &["127.0.0.1:8000"]),
        gunicorn_facts(
            T0,
            "gunicorn --timeout 5 -b 127.0.0.1:8000 app:app",
            vec![listener("127.0.0.1:8000", 200, "gunicorn")],
        ),
    ];
    es.push(signal(T0 + 10 * S, 200, "gunicorn", 201, "gunicorn", 6, 0));
    es.push(signal(T0 + 11 * S, 200, "gunicorn", 201, "gunicorn", 9, 0));
    es.push(exit_signal(T0 + 11 * S + MS, 201, "gunicorn", 9, false));
    es
}

#[test]
fn connections_a_killed_worker_held_are_listed_in_its_worker_timeout() {
    let mut es = killed_worker();
    // The request went 5 s before the kill; the exit (PF_EXITING) closed the socket.
    es.push(
        Conn {
            requests: 1,
            how: "fin",
            exiting: true,
            close_after: 6 * S.cast_signed() + MS.cast_signed(),
            ..Conn::race(T0 + 5 * S)
        }
        .event(),
    );
    // Another one gunicorn's SIGABRT handler closed while the worker was dying (not yet
    // exiting).
    es.push(
        Conn {
            requests: 1,
            how: "fin",
            close_after: 10 * MS.cast_signed(),
            ..Conn::race(T0 + 10 * S)
        }
        .event(),
    );
    es.sort_by_key(|e| e.mono_ns);
    let vs = run(&es);
    let v = only(&vs, Cause::WorkerTimeout);
    // One death, two broken connections: the same 502s, not counted twice.
    assert_eq!((v.count, v.upstream_pid), (1, Some(201)), "{v:#?}");
    assert_eq!(v.broken_connections.len(), 2, "{v:#?}");
    for b in &v.broken_connections {
        assert_eq!(
            (
                b.proxy_pid,
                b.target.as_str(),
                b.upstream_pid,
                b.upstream_comm.as_deref(),
                b.outcome.as_str()
            ),
            (101, "127.0.0.1:8000", Some(201), Some("gunicorn"), "eof")
        );
    }
    assert!(
        v.summary
            .contains("2 connection(s) of nginx to it broke (listed in broken_connections)"),
        "{}",
        v.summary
    );
    assert!(
        has(v, "gunicorn pid 201, exiting, closed it (FIN)"),
        "{v:#?}"
    );
    assert!(v.fix.contains("--timeout"), "{}", v.fix);
}

#[test]
fn connections_an_oom_killed_or_crashed_worker_held_are_listed_in_its_death() {
    let world = vec![
        nginx_configured(T0, &["127.0.0.1:8000"]),
        gunicorn_facts(
            T0,
            "gunicorn -b 127.0.0.1:8000 app:app",
            vec![listener("127.0.0.1:8000", 200, "gunicorn")],
        ),
    ];
    let exiting = Conn {
        requests: 1,
        how: "fin",
        exiting: true,
        close_after: 2 * MS.cast_signed(),
        ..Conn::race(T0 + 10 * S)
    };
    let mut es = world.clone();
    es.push(oom(T0 + 10 * S + MS, 201, 201, "gunicorn"));
    es.push(signal(
        T0 + 10 * S + MS,
        201,
        "gunicorn",
        201,
        "gunicorn",
        9,
        128,
    ));
    es.push(exit_signal(T0 + 10 * S + 2 * MS, 201, "gunicorn", 9, false));
    es.push(exiting.event());
    let vs = run(&es);
    let v = only(&vs, Cause::WorkerOomKilled);
    assert_eq!((v.count, v.broken_connections.len()), (1, 1), "{v:#?}");
    assert_eq!(v.broken_connections[0].upstream_pid, Some(201));
    let mut es = world;
    es.push(exit_signal(T0 + 10 * S + 2 * MS, 201, "gunicorn", 11, true));
    es.push(exiting.event());
    let vs = run(&es);
    let v = only(&vs, Cause::WorkerCrashed);
    assert_eq!((v.count, v.broken_connections.len()), (1, 1), "{v:#?}");
}

#[test]
fn a_close_by_the_worker_long_before_its_death_stays_its_own_verdict() {
    let mut es = killed_worker();
    // The worker, alive, closed a connection without answering 5 s before it was killed.
    es.push(
        Conn {
            requests: 1,
            how: "fin",
            close_after: 100 * MS.cast_signed(),
            ..Conn::race(T0 + 5 * S)
        }
        .event(),
    );
    es.sort_by_key(|e| e.mono_ns);
    let vs = run(&es);
    let of = |c: Cause| vs.iter().find(|v| v.cause == c).expect("{c:?} verdict");
    assert_eq!(vs.len(), 2, "{vs:#?}");
    assert_eq!(of(Cause::UpstreamClosedEarly).broken_connections.len(), 1);
    let v = of(Cause::WorkerTimeout);
    assert!(v.broken_connections.is_empty(), "{v:#?}");
}
