//! Unit tests of the assessment on fixture facts: the Debian-layout configuration of
//! `tests/fixtures/nginx/debian-T.txt` against hand-made hosts.
use super::*;
use crate::catalog::{gunicorn_settings, uvicorn_settings};
use crate::check::nginx::{Dump, analyze, parse_dump};
use crate::facts::PathComponent;

const DEBIAN: &str = include_str!("../../../../tests/fixtures/nginx/debian-T.txt");
const APP_SOCK: &str = "unix:/run/app/app.sock";
const PHP_SOCK: &str = "unix:/run/php/php8.2-fpm.sock";

fn proc(pid: u32, parent: u32, comm: &str, cmdline: &str, uid: u32) -> ProcInfo {
    ProcInfo {
        pid,
        ppid: parent,
        comm: comm.into(),
        cmdline: cmdline.into(),
        uid,
        gid: uid,
        groups: vec![uid],
        cgroup: format!("/system.slice/{comm}.service"),
        start_ns: 1,
    }
}

fn comp(path: &str, uid: u32, gid: u32, mode: u32) -> PathComponent {
    PathComponent {
        path: path.into(),
        exists: true,
        uid,
        gid,
        mode,
    }
}

fn walk(path: &str, leaf_mode: u32) -> PathInfo {
    let mut comps = vec![comp("/", 0, 0, 0o040_755), comp("/run", 0, 0, 0o040_755)];
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    comps.push(comp(dir, 999, 995, 0o040_755));
    comps.push(if leaf_mode == 0 {
        PathComponent {
            path: path.into(),
            ..PathComponent::default()
        }
    } else {
        comp(path, 999, 995, leaf_mode)
    });
    PathInfo {
        path: path.into(),
        components: comps,
    }
}

fn listener(target: &str, pid: u32, comm: &str) -> Listener {
    Listener {
        target: target.into(),
        pid: Some(pid),
        comm: Some(comm.into()),
        backlog: None,
        net_ns: None,
    }
}

const GUNICORN: &str = "/usr/bin/python3 /usr/bin/gunicorn --bind unix:/run/app/app.sock app:app";
const UVICORN: &str = "/usr/bin/python3 -m uvicorn --port 8000 api:app";

/// A healthy host for the Debian configuration: gunicorn on the app socket (srw-rw-rw-),
/// uvicorn on 127.0.0.1:8000, php-fpm on its socket; nothing on the backup 8001.
fn host() -> World {
    let processes = vec![
        proc(50, 1, "nginx", "nginx: master process /usr/sbin/nginx", 0),
        proc(51, 50, "nginx", "nginx: worker process", 33),
        proc(100, 1, "gunicorn", GUNICORN, 999),
        proc(101, 100, "gunicorn", GUNICORN, 999),
        proc(200, 1, "python3", UVICORN, 999),
        proc(300, 1, "php-fpm8.2", "php-fpm: master process", 0),
    ];
    let mut apps = HashMap::new();
    apps.insert(100, gunicorn_settings(GUNICORN, None, None).unwrap());
    apps.insert(200, uvicorn_settings(UVICORN).unwrap());
    World {
        now_ns: 5_000_000_000,
        processes,
        listeners: vec![
            listener(APP_SOCK, 100, "gunicorn"),
            listener("127.0.0.1:8000", 200, "python3"),
            listener(PHP_SOCK, 300, "php-fpm8.2"),
        ],
        paths: vec![
            walk("/run/app/app.sock", 0o140_666),
            walk("/run/php/php8.2-fpm.sock", 0o140_666),
        ],
        probe_timeout_ms: 700,
        apps,
        units: HashMap::from([
            (
                100,
                Ok(UnitDirs {
                    unit: "gunicorn.service".into(),
                    runtime_dirs: vec!["/run/app".into()],
                    exec_start_pre: String::new(),
                }),
            ),
            (300, Err("php-fpm's unit is not known".into())),
        ]),
        tmpfiles: Some(vec!["/run/php".into()]),
        ncpu: 2,
        ..World::default()
    }
}

fn proxy(cfg: NginxConfig, master: u32) -> Proxy {
    Proxy {
        comm: "nginx".into(),
        master,
        pids: if master == 0 { vec![] } else { vec![50, 51] },
        worker: (master != 0).then_some(51),
        creds: UserCreds {
            uid: 33,
            gid: 33,
            groups: vec![33],
        },
        worker_label: "www-data".into(),
        source: "fixture".into(),
        config: cfg,
        notes: Vec::new(),
        net_ns: None,
    }
}

fn debian() -> NginxConfig {
    analyze(&parse_dump(DEBIAN).unwrap()).unwrap()
}

fn check(cfg: &NginxConfig, world: &World, master: u32) -> ProxyReport {
    let t = targets(cfg, &world.resolved);
    evaluate(&proxy(cfg.clone(), master), &t, world)
}

fn find<'a>(r: &'a ProxyReport, cause: &str, target: &str) -> &'a Finding {
    r.findings
        .iter()
        .find(|f| f.verdict.cause == cause && f.verdict.target == target)
        .unwrap_or_else(|| panic!("no {cause} on {target}: {:#?}", r.findings))
}

fn state<'a>(r: &'a ProxyReport, target: &str) -> &'a str {
    r.targets
        .iter()
        .find(|t| t.target == target)
        .map_or("absent", |t| t.state.as_str())
}

#[test]
fn targets_are_every_address_with_its_lines() {
    let cfg = debian();
    let t = targets(&cfg, &HashMap::new());
    let keys: Vec<&str> = t.by_target.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "127.0.0.1:8000",
            "127.0.0.1:8001",
            "[::1]:8001",
            APP_SOCK,
            PHP_SOCK
        ]
    );
    let app = &t.by_target[APP_SOCK][0];
    assert_eq!(
        app.line,
        "/etc/nginx/sites-enabled/app:12 proxy_pass http://unix:/run/app/app.sock:"
    );
    let backup = &t.by_target["[::1]:8001"][0];
    assert!(backup.backup);
    assert!(
        backup.line.contains(
            "-> upstream api: /etc/nginx/sites-enabled/app:3 server localhost:8001 backup"
        ),
        "{}",
        backup.line
    );
    // /api/ may use 8000, then 8001 on both loopbacks.
    assert!(t.groups.iter().any(|(_, g)| g.len() == 3));
}

#[test]
fn healthy_targets_and_a_failing_backup_is_a_warning() {
    let r = check(&debian(), &host(), 50);
    assert_eq!(state(&r, APP_SOCK), "ok");
    assert_eq!(state(&r, "127.0.0.1:8000"), "ok");
    assert_eq!(state(&r, PHP_SOCK), "ok");
    // Nothing listens on the backup: nginx retries on 8000, so only a warning.
    let b = find(&r, "upstream-not-listening", "127.0.0.1:8001");
    assert_eq!(b.severity, Severity::Warn);
    assert!(
        b.verdict
            .evidence
            .iter()
            .any(|e| e.contains("nginx retries the next server") && e.contains("127.0.0.1:8000")),
        "{:#?}",
        b.verdict.evidence
    );
    assert_eq!(b.verdict.count, 0);
    assert_eq!(b.verdict.proxy_pid, 50);
    assert_eq!(b.config[0], b.verdict.evidence[0]);
    assert!(!r.findings.iter().any(|f| f.severity == Severity::Fail));
}

#[test]
fn no_retry_makes_a_failing_server_fail() {
    let mut cfg = debian();
    for p in &mut cfg.passes {
        p.next_upstream_off = true;
    }
    let r = check(&cfg, &host(), 50);
    assert_eq!(
        find(&r, "upstream-not-listening", "[::1]:8001").severity,
        Severity::Fail
    );
}

#[test]
fn socket_mode_denies_the_worker() {
    let mut w = host();
    w.paths[0] = walk("/run/app/app.sock", 0o140_660);
    let r = check(&debian(), &w, 50);
    let f = find(&r, "socket-permission", APP_SOCK);
    assert_eq!(f.severity, Severity::Fail);
    let ev = f.verdict.evidence.join("\n");
    assert!(
        ev.starts_with("/etc/nginx/sites-enabled/app:12 proxy_pass"),
        "{ev}"
    );
    assert!(ev.contains("nginx worker pid 51 (uid 33, gid 33, groups 33) to unix:/run/app/app.sock would fail with EACCES (13)"), "{ev}");
    assert!(
        ev.contains("srw-rw---- 999:995 /run/app/app.sock denies"),
        "{ev}"
    );
    assert!(f.verdict.fix.contains("usermod -aG"), "{}", f.verdict.fix);
    // With the group, the same host is fine.
    let mut member = proxy(debian(), 50);
    member.creds.groups.push(995);
    let ts = targets(&member.config, &w.resolved);
    let ok = evaluate(&member, &ts, &w);
    assert_eq!(state(&ok, APP_SOCK), "ok");
}

#[test]
fn missing_stale_and_wrong_targets() {
    // The socket file is gone, gunicorn binds another path: wrong-target.
    let mut w = host();
    w.paths[0] = walk("/run/app/app.sock", 0);
    w.listeners[0] = listener("unix:/run/app/gunicorn.sock", 100, "gunicorn");
    let r = check(&debian(), &w, 50);
    let f = find(&r, "wrong-target", APP_SOCK);
    assert!(
        f.verdict
            .summary
            .contains("the app listens on unix:/run/app/gunicorn.sock")
    );
    // gunicorn serves another configured target instead: not "the app nginx meant".
    let mut w2 = w.clone();
    w2.listeners[0] = listener("127.0.0.1:8000", 100, "gunicorn");
    w2.listeners.remove(1);
    let r2 = check(&debian(), &w2, 50);
    find(&r2, "socket-missing", APP_SOCK);
    // The file is there, nobody listens: stale.
    let mut w3 = host();
    w3.listeners.remove(0);
    let r3 = check(&debian(), &w3, 50);
    let s = find(&r3, "stale-socket", APP_SOCK);
    assert!(
        !s.verdict
            .evidence
            .iter()
            .any(|e| e.contains("before gwtrace started")),
        "no 'death not seen' line in a check: {:#?}",
        s.verdict.evidence
    );
}

#[test]
fn gunicorn_default_timeout_under_nginx_read_timeout() {
    let r = check(&debian(), &host(), 50);
    let f = find(&r, "timeout-mismatch", APP_SOCK);
    assert_eq!(f.severity, Severity::Warn);
    assert!(
        f.verdict
            .summary
            .contains("gunicorn kills a worker busy for 30 s (gunicorn's default --timeout 30)"),
        "{}",
        f.verdict.summary
    );
    assert!(
        f.verdict
            .summary
            .contains("nginx waits 120s for the response (proxy_read_timeout)"),
        "{}",
        f.verdict.summary
    );
    let ev = f.verdict.evidence.join("\n");
    assert!(ev.contains("proxy_read_timeout 120s at /etc/nginx/sites-enabled/app:26 applies to /etc/nginx/sites-enabled/app:12"), "{ev}");
    assert!(
        f.verdict.fix.contains("proxy_read_timeout 25s;"),
        "{}",
        f.verdict.fix
    );
    // uvicorn has no request deadline: no warning on 8000.
    assert!(
        !r.findings
            .iter()
            .any(|f| f.verdict.cause == "timeout-mismatch" && f.verdict.target == "127.0.0.1:8000")
    );
    // gunicorn --timeout 300: nginx gives up first, as it should.
    let mut w = host();
    let slow = "gunicorn --timeout 300 --bind unix:/run/app/app.sock app:app";
    w.apps
        .insert(100, gunicorn_settings(slow, None, None).unwrap());
    let r = check(&debian(), &w, 50);
    assert!(
        !r.findings
            .iter()
            .any(|f| f.verdict.cause == "timeout-mismatch")
    );
}

#[test]
fn socket_directory_without_runtime_directory() {
    // The unit creates /run/app: fine. php's unit is unknown: a note, no finding.
    let r = check(&debian(), &host(), 50);
    assert!(
        !r.findings
            .iter()
            .any(|f| f.verdict.cause == "runtime-dir-volatile")
    );
    assert!(
        !r.notes.iter().any(|n| n.contains("/run/php")),
        "tmpfiles.d creates /run/php: {:?}",
        r.notes
    );
    let mut w = host();
    w.units.insert(
        100,
        Ok(UnitDirs {
            unit: "gunicorn.service".into(),
            ..UnitDirs::default()
        }),
    );
    w.tmpfiles = Some(Vec::new());
    let r = check(&debian(), &w, 50);
    let f = find(&r, "runtime-dir-volatile", APP_SOCK);
    assert!(
        f.verdict.fix.contains("RuntimeDirectory=app"),
        "{}",
        f.verdict.fix
    );
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("/run/php: could not check") && n.contains("not known")),
        "{:?}",
        r.notes
    );
}

#[test]
fn tiny_backlog_and_remote_timeouts() {
    let mut w = host();
    w.queues = vec![ListenQueue {
        target: APP_SOCK.into(),
        queued: 0,
        backlog: 1,
    }];
    let r = check(&debian(), &w, 50);
    let f = find(&r, "backlog-small", APP_SOCK);
    assert!(f.verdict.evidence.iter().any(|e| e.contains("EAGAIN")));
    assert!(
        f.verdict
            .evidence
            .iter()
            .any(|e| e.contains("2 worker process(es) x worker_connections 768")),
        "{:#?}",
        f.verdict.evidence
    );

    // A remote upstream that drops SYNs: connect-timeout, a 504.
    let dump = Dump {
        files: vec![crate::check::nginx::ConfFile {
            path: "/etc/nginx/nginx.conf".into(),
            text: "http { server { location / { proxy_pass http://10.9.8.7:8080; } } }\n".into(),
        }],
    };
    let cfg = analyze(&dump).unwrap();
    let mut w = host();
    w.remote.insert("10.9.8.7:8080".into(), 110);
    let r = check(&cfg, &w, 0);
    let f = find(&r, "connect-timeout", "10.9.8.7:8080");
    assert_eq!(f.verdict.status, 504);
    assert_eq!(f.verdict.proxy_pid, 0);
    assert!(
        f.verdict
            .evidence
            .iter()
            .any(|e| e.contains("no answer within 700 ms")),
        "{:#?}",
        f.verdict.evidence
    );
    assert!(
        f.verdict
            .evidence
            .iter()
            .any(|e| e.contains("by nginx's worker (uid 33")),
        "{:#?}",
        f.verdict.evidence
    );
    w.remote.insert("10.9.8.7:8080".into(), 0);
    assert_eq!(state(&check(&cfg, &w, 0), "10.9.8.7:8080"), "ok");
}

#[test]
fn names_resolve_or_are_noted() {
    let dump = Dump {
        files: vec![crate::check::nginx::ConfFile {
            path: "/etc/nginx/nginx.conf".into(),
            text: "http { server { location / { proxy_pass http://app.internal:8000; } location /v { proxy_pass http://$v; } } }\n"
                .into(),
        }],
    };
    let cfg = analyze(&dump).unwrap();
    assert_eq!(hosts(&cfg), ["app.internal"]);
    let mut resolved = HashMap::new();
    resolved.insert(
        "app.internal".to_owned(),
        Ok(vec!["127.0.0.1".parse().unwrap()]),
    );
    let t = targets(&cfg, &resolved);
    assert!(
        t.by_target["127.0.0.1:8000"][0]
            .line
            .ends_with("(app.internal resolves to 127.0.0.1)")
    );
    assert!(
        t.notes
            .iter()
            .any(|n| n.contains("computed at request time"))
    );
    let t = targets(
        &cfg,
        &HashMap::from([("app.internal".to_owned(), Err("NXDOMAIN".to_owned()))]),
    );
    assert!(t.by_target.is_empty());
    assert!(
        t.notes.iter().any(|n| n.contains("NXDOMAIN")),
        "{:?}",
        t.notes
    );
}

#[test]
fn invalid_config_fails_before_deploy_warns_when_running() {
    let p = proxy(NginxConfig::default(), 0);
    let f = config_invalid(
        &p,
        1,
        "/x/nginx.conf",
        "nginx: [emerg] unknown directive \"prox_pass\" in /x/nginx.conf:3\n",
        false,
    );
    assert_eq!(f.severity, Severity::Fail);
    assert_eq!(f.verdict.cause, "config-invalid");
    assert!(f.verdict.evidence[0].contains("/x/nginx.conf:3"));
    let report = crate::check::Report {
        proxies: vec![ProxyReport {
            findings: vec![config_invalid(&p, 1, "/x", "e", true)],
            ..ProxyReport::default()
        }],
        ..crate::check::Report::default()
    };
    assert!(!report.has_problems(false));
    assert!(report.has_problems(true));
}

#[test]
fn a_proxy_in_another_network_namespace_reaches_only_its_own_listeners() {
    // nginx (50, 51) in net:[7]: uvicorn's 127.0.0.1:8000 is on gwtrace's (the host's)
    // loopback, not nginx's; the app socket is a path, reachable from any namespace.
    let mut world = host();
    world.net_ns = vec![NetNs { pid: 50, net_ns: 7 }, NetNs { pid: 51, net_ns: 7 }];
    let mut p = proxy(debian(), 50);
    p.net_ns = Some(7);
    let targets_of = targets(&p.config, &world.resolved);
    let r = evaluate(&p, &targets_of, &world);
    assert_eq!(state(&r, APP_SOCK), "ok");
    let found = find(&r, "upstream-not-listening", "127.0.0.1:8000");
    assert_eq!(found.severity, Severity::Fail);
    assert!(
        found.verdict.evidence.iter().any(|e| e.contains("net:[7]")),
        "{:#?}",
        found.verdict.evidence
    );
    // Listening in nginx's namespace too: ok again.
    let mut here = listener("127.0.0.1:8000", 200, "python3");
    here.net_ns = Some(7);
    world.listeners.push(here);
    let r = evaluate(&p, &targets_of, &world);
    assert_eq!(state(&r, "127.0.0.1:8000"), "ok");
}

#[test]
fn other_proxies_get_their_own_status_and_words() {
    let mut p = proxy(debian(), 50);
    p.comm = "haproxy".into();
    let mut world = host();
    world.listeners.retain(|x| x.target != APP_SOCK);
    world.paths[0] = walk("/run/app/app.sock", 0);
    for pr in &mut world.processes {
        if pr.pid == 50 || pr.pid == 51 {
            pr.comm = "haproxy".into();
        }
    }
    let targets_of = targets(&p.config, &world.resolved);
    let r = evaluate(&p, &targets_of, &world);
    let found = find(&r, "socket-missing", APP_SOCK);
    assert_eq!(found.verdict.status, 503);
    assert!(
        !found.verdict.fix.contains("proxy_pass"),
        "{}",
        found.verdict.fix
    );
    assert!(
        found.verdict.fix.contains("the backend's server line"),
        "{}",
        found.verdict.fix
    );
}
