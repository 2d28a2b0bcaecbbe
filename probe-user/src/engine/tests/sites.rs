//! Hosts with several sites and apps: `wrong-target` only with positive evidence that the
//! listener is the app meant for the failing target, never another site's app.
use super::*;
use crate::facts::ProxyConfig;

fn config(t: u64, targets: &[&str]) -> Event {
    facts(
        t,
        FactsUpdate {
            proxy_configs: vec![ProxyConfig {
                pid: 100,
                kind: "nginx".into(),
                source: "nginx -T".into(),
                targets: targets.iter().map(|t| (*t).to_owned()).collect(),
                partial: false,
            }],
            ..FactsUpdate::default()
        },
    )
}

/// App `pid` (a gunicorn master in `unit`) bound to `bind`.
fn app(pid: u32, bind: &str, unit: &str) -> ProcInfo {
    let mut p = proc_info(
        pid,
        1,
        "gunicorn",
        &format!("gunicorn --bind {bind} app:app"),
        999,
        &[999],
    );
    p.cgroup = format!("/system.slice/{unit}");
    p
}

fn apps(t: u64, apps: Vec<ProcInfo>, listeners: Vec<Listener>) -> Event {
    facts(
        t,
        FactsUpdate {
            processes: apps,
            listeners: Some(listeners),
            ..FactsUpdate::default()
        },
    )
}

fn mentions(v: &Verdict, what: &str) -> bool {
    v.summary.contains(what) || v.fix.contains(what)
}

/// Two sites on TCP, 8001 and 8002; site A's app is down: nothing listens on 8001. Site B's
/// app on 8002 (one digit off) is not "where A's app listens".
#[test]
fn two_tcp_sites_one_down_is_not_listening() {
    let mut es = vec![
        nginx_facts(T0),
        config(T0, &["127.0.0.1:8001", "127.0.0.1:8002"]),
        apps(
            T0,
            vec![app(300, "127.0.0.1:8002", "site-b.service")],
            vec![
                listener("0.0.0.0:80", 100, "nginx"),
                listener("127.0.0.1:8002", 300, "gunicorn"),
            ],
        ),
    ];
    failures(&mut es, T0 + S, 4, 101, "127.0.0.1:8001", 111);
    let vs = run(&es);
    let v = only(&vs, Cause::UpstreamNotListening);
    assert_eq!(v.target, "127.0.0.1:8001");
    assert!(!mentions(v, "8002"), "{v:#?}");
    assert!(has(v, "app servers running: gunicorn pid 300"), "{v:#?}");
    // Without the configuration, the one-digit-off port is a near miss: wrong-target.
    es.remove(1);
    let vs = run(&es);
    let v = only(&vs, Cause::WrongTarget);
    assert!(has(v, "a near miss: port 8002 instead of 8001"), "{v:#?}");
}

/// Two sites on unix sockets in one directory; site A's socket is missing. Site B's socket
/// next to it is B's, not A's.
#[test]
fn two_unix_sites_one_missing_is_socket_missing() {
    let (a, b) = ("unix:/run/sites/a.sock", "unix:/run/sites/b.sock");
    let mut es = vec![
        nginx_facts(T0),
        config(T0, &[a, b]),
        apps(
            T0,
            vec![app(300, b, "site-b.service")],
            vec![listener(b, 300, "gunicorn")],
        ),
        facts(
            T0,
            FactsUpdate {
                paths: vec![path(&[
                    ("/", true, 0, 0, 0o040_755),
                    ("/run", true, 0, 0, 0o040_755),
                    ("/run/sites", true, 0, 0, 0o040_755),
                    ("/run/sites/a.sock", false, 0, 0, 0),
                ])],
                ..FactsUpdate::default()
            },
        ),
    ];
    failures(&mut es, T0 + S, 3, 101, a, 2);
    let vs = run(&es);
    let v = only(&vs, Cause::SocketMissing);
    assert_eq!(v.target, a);
    assert!(!mentions(v, "b.sock"), "{v:#?}");
}

/// An app server that listens far from the target, with nothing tying it to the target, is
/// context, not the answer.
#[test]
fn an_unrelated_app_is_context_not_a_wrong_target() {
    let mut es = vec![
        nginx_facts(T0),
        apps(
            T0,
            vec![app(300, "127.0.0.1:9300", "reports.service")],
            vec![listener("127.0.0.1:9300", 300, "gunicorn")],
        ),
    ];
    failures(&mut es, T0 + S, 2, 101, "127.0.0.1:8000", 111);
    let vs = run(&es);
    let v = only(&vs, Cause::UpstreamNotListening);
    assert!(!mentions(v, "9300"), "{v:#?}");
    assert!(has(v, "app servers running: gunicorn pid 300"), "{v:#?}");
}

/// The target's former owner now listens elsewhere (rebound after a deploy): wrong-target,
/// however far the new address.
#[test]
fn the_former_owner_listening_elsewhere_is_a_wrong_target() {
    let mut es = vec![
        nginx_facts(T0),
        apps(
            T0,
            vec![app(300, "127.0.0.1:8000", "app.service")],
            vec![listener("127.0.0.1:8000", 300, "gunicorn")],
        ),
        apps(
            T0 + S,
            vec![],
            vec![listener("127.0.0.1:9300", 300, "gunicorn")],
        ),
    ];
    failures(&mut es, T0 + 2 * S, 2, 101, "127.0.0.1:8000", 111);
    let vs = run(&es);
    let v = only(&vs, Cause::WrongTarget);
    assert!(
        has(v, "gunicorn pid 300 served 127.0.0.1:8000 before"),
        "{v:#?}"
    );
    assert!(v.fix.contains("http://127.0.0.1:9300"), "{}", v.fix);
}

/// The target's former owner exited; a new instance of the same unit listens on another
/// socket: wrong-target, by the unit.
#[test]
fn the_same_unit_on_another_socket_is_a_wrong_target() {
    let mut es = vec![
        nginx_facts(T0),
        apps(
            T0,
            vec![app(300, "unix:/run/app/app.sock", "app.service")],
            vec![listener("unix:/run/app/app.sock", 300, "gunicorn")],
        ),
        exit_code(T0 + S, 300, "gunicorn", 0),
        apps(
            T0 + 2 * S,
            vec![app(400, "unix:/srv/new/web.sock", "app.service")],
            vec![listener("unix:/srv/new/web.sock", 400, "gunicorn")],
        ),
    ];
    failures(&mut es, T0 + 3 * S, 2, 101, "unix:/run/app/app.sock", 2);
    let vs = run(&es);
    let v = only(&vs, Cause::WrongTarget);
    assert!(
        has(
            v,
            "gunicorn pid 400 runs in app.service, the unit that served unix:/run/app/app.sock before"
        ),
        "{v:#?}"
    );
}

/// A genuine mismatch among several apps: site A's app binds another name in A's directory;
/// site B's app (configured for B) is never the candidate, A's is.
#[test]
fn a_genuine_mismatch_among_several_apps_is_a_wrong_target() {
    let (a, a_real, b) = (
        "unix:/run/a/app.sock",
        "unix:/run/a/gunicorn.sock",
        "127.0.0.1:8002",
    );
    let mut es = vec![
        nginx_facts(T0),
        config(T0, &[a, b]),
        apps(
            T0,
            vec![
                app(300, a_real, "site-a.service"),
                app(400, b, "site-b.service"),
                app(500, "127.0.0.1:8001", "site-c.service"),
            ],
            vec![
                listener(a_real, 300, "gunicorn"),
                listener(b, 400, "gunicorn"),
                listener("127.0.0.1:8001", 500, "gunicorn"),
            ],
        ),
    ];
    failures(&mut es, T0 + S, 3, 101, a, 2);
    let vs = run(&es);
    let v = only(&vs, Cause::WrongTarget);
    assert!(
        v.summary
            .contains("the app listens on unix:/run/a/gunicorn.sock")
    );
    assert!(
        has(
            v,
            "a near miss: gunicorn.sock instead of app.sock, in the same directory /run/a/"
        ),
        "{v:#?}"
    );
    assert!(!mentions(v, b), "{v:#?}");
}

/// The configurations travel as `facts` lines: the same stream written as JSON lines and read
/// back (what `gwtrace explain` does with a record file) gives the same verdicts.
#[test]
fn configurations_replay_from_the_record() {
    let mut es = vec![
        nginx_facts(T0),
        config(T0, &["127.0.0.1:8001", "127.0.0.1:8002"]),
        apps(
            T0,
            vec![app(300, "127.0.0.1:8002", "site-b.service")],
            vec![listener("127.0.0.1:8002", 300, "gunicorn")],
        ),
    ];
    failures(&mut es, T0 + S, 4, 101, "127.0.0.1:8001", 111);
    failures(&mut es, T0 + S, 2, 100, "unix:/var/run/nscd/socket", 2);
    let lines: Vec<String> = es
        .iter()
        .map(|e| serde_json::to_string(e).expect("serialises"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#""proxy_configs":[{"pid":100"#)),
        "{lines:#?}"
    );
    let back: Vec<Event> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("reads back"))
        .collect();
    let (live, replayed) = (run(&es), run(&back));
    assert_eq!(live, replayed);
    assert_eq!(causes(&live), [Cause::UpstreamNotListening]);
}
