//! Which processes are proxies.
use super::*;

#[test]
fn proxy_from_facts_list_and_config() {
    let es = vec![
        facts(
            T0,
            FactsUpdate {
                proxies: vec![900],
                ..FactsUpdate::default()
            },
        ),
        connect(T0 + S, 900, "myproxy", "127.0.0.1:9000", 111),
    ];
    let vs = run(&es);
    assert_eq!(only(&vs, Cause::UpstreamNotListening).proxy_comm, "myproxy");

    let mut e = Engine::new(EngineConfig {
        proxy_names: vec![],
        proxy_pids: vec![901],
    });
    e.feed(&connect(T0, 901, "lb", "127.0.0.1:9000", 111));
    e.feed(&connect(T0, 902, "nginx", "127.0.0.1:9000", 111));
    let vs = e.verdicts(T0);
    assert_eq!(vs.len(), 1, "nginx is not a proxy name in this config");
    assert_eq!(vs[0].proxy_pid, 901);
}

#[test]
fn child_of_listed_proxy_is_a_proxy() {
    let es = vec![
        facts(
            T0,
            FactsUpdate {
                processes: vec![
                    proc_info(910, 1, "lb", "lb", 0, &[]),
                    proc_info(911, 910, "lb-worker", "lb", 0, &[]),
                ],
                proxies: vec![910],
                ..FactsUpdate::default()
            },
        ),
        connect(T0 + S, 911, "lb-worker", "127.0.0.1:9000", 111),
    ];
    let vs = run(&es);
    assert_eq!(only(&vs, Cause::UpstreamNotListening).proxy_pid, 910);
}

#[test]
fn worker_without_facts_groups_by_name() {
    let mut es = vec![];
    failures(&mut es, T0, 2, 101, "127.0.0.1:8000", 111);
    failures(&mut es, T0, 3, 102, "127.0.0.1:8000", 111);
    let vs = run(&es);
    let v = only(&vs, Cause::UpstreamNotListening);
    assert_eq!((v.count, v.proxy_comm.as_str()), (5, "nginx"));
}

/// haproxy master 300 (not chrooted: haproxy -W) and worker 301 chrooted in /var/lib/haproxy,
/// configured for `unix:/run/app/app.sock`; gunicorn 200 listens on the host's `/run/app/app.sock`.
fn chrooted_haproxy() -> Vec<Event> {
    vec![
        facts(
            T0,
            FactsUpdate {
                processes: vec![
                    proc_info(
                        300,
                        1,
                        "haproxy",
                        "haproxy -W -f /etc/haproxy/haproxy.cfg",
                        0,
                        &[0],
                    ),
                    proc_info(
                        301,
                        300,
                        "haproxy",
                        "haproxy -W -f /etc/haproxy/haproxy.cfg",
                        99,
                        &[99],
                    ),
                    proc_info(
                        200,
                        1,
                        "gunicorn",
                        "gunicorn -b unix:/run/app/app.sock app:app",
                        999,
                        &[999],
                    ),
                ],
                listeners: Some(vec![listener("unix:/run/app/app.sock", 200, "gunicorn")]),
                proxy_configs: vec![ProxyConfig {
                    pid: 300,
                    kind: "haproxy".into(),
                    source: "/etc/haproxy/haproxy.cfg (haproxy -f)".into(),
                    targets: vec!["unix:/run/app/app.sock".into()],
                    partial: false,
                }],
                ..FactsUpdate::default()
            },
        ),
        connect(T0 + S, 301, "haproxy", "unix:/run/app/app.sock", 2),
        // The walk as the worker sees it: in its chroot, /run does not exist.
        facts(
            T0 + S + MS,
            FactsUpdate {
                paths: vec![PathInfo {
                    path: "/run/app/app.sock".into(),
                    ..path(&[("/", true, 0, 0, 0o040_755), ("/run", false, 0, 0, 0)])
                }],
                roots: vec![crate::facts::ProcRoot {
                    pid: 301,
                    root: "/var/lib/haproxy".into(),
                }],
                ..FactsUpdate::default()
            },
        ),
    ]
}

#[test]
fn a_chrooted_proxy_misses_a_socket_the_app_binds_outside_its_chroot() {
    let vs = run(&chrooted_haproxy());
    let v = only(&vs, Cause::SocketMissing);
    assert_eq!((v.proxy_pid, v.status), (300, 503), "{v:#?}");
    assert_eq!(
        v.summary,
        "unix:/run/app/app.sock does not exist in haproxy's chroot /var/lib/haproxy: gunicorn pid 200 listens on \
         the host's /run/app/app.sock, outside it"
    );
    assert!(
        has(
            v,
            "haproxy pid 301 runs chrooted in /var/lib/haproxy (its configuration's chroot): it resolves \
             /run/app/app.sock as /var/lib/haproxy/run/app/app.sock on the host"
        ),
        "{v:#?}"
    );
    assert!(has(v, "in haproxy's chroot /var/lib/haproxy: "), "{v:#?}");
    assert!(
        v.fix
            .contains("/var/lib/haproxy/run/app/app.sock on the host")
            && v.fix.contains("remove chroot"),
        "{}",
        v.fix
    );
    // Without the chroot fact, the same failure reads as a socket gone from the proxy's view.
    let mut es = chrooted_haproxy();
    if let Body::Facts(f) = &mut es[2].body {
        f.roots.clear();
    }
    let vs = run(&es);
    assert!(!only(&vs, Cause::SocketMissing).summary.contains("chroot"));
}
