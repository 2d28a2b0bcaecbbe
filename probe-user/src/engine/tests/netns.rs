//! A proxy in a network namespace of its own (a container, `ip netns exec`): the listeners that
//! count are the ones of its namespace; the same port on the host is another socket.
use super::*;
use crate::facts::NetNs;

const NET: u64 = 4_026_532_301;

/// nginx (master 100, workers 101 and 102) in network namespace [`NET`].
fn nginx_in_netns(t: u64) -> Event {
    facts(
        t,
        FactsUpdate {
            proc_net_ns: [100, 101, 102]
                .into_iter()
                .map(|pid| NetNs { pid, net_ns: NET })
                .collect(),
            ..FactsUpdate::default()
        },
    )
}

fn in_net(mut l: Listener, net_ns: Option<u64>) -> Listener {
    l.net_ns = net_ns;
    l
}

#[test]
fn a_host_listener_on_the_same_port_does_not_serve_a_proxy_in_its_own_netns() {
    let mut es = vec![
        nginx_facts(T0),
        nginx_in_netns(T0),
        gunicorn_facts(
            T0,
            "gunicorn -b 127.0.0.1:8000 app:app",
            // The host's gunicorn, and nginx's own listener in its namespace.
            vec![
                listener("127.0.0.1:8000", 200, "gunicorn"),
                in_net(listener("127.0.0.1:80", 100, "nginx"), Some(NET)),
            ],
        ),
    ];
    failures(&mut es, T0 + S, 3, 101, "127.0.0.1:8000", 111);
    let vs = run(&es);
    let v = only(&vs, Cause::UpstreamNotListening);
    assert!(
        has(
            v,
            &format!("no process listens on 127.0.0.1:8000 in its network namespace net:[{NET}]")
        ),
        "{v:#?}"
    );
    assert!(
        !v.evidence
            .iter()
            .any(|e| e.contains("listens on 127.0.0.1:8000 now")),
        "the host's gunicorn is not nginx's upstream: {v:#?}"
    );
    assert_eq!(v.proxy_net_ns, Some(NET));
    assert!(
        has(
            v,
            &format!("runs in network namespace net:[{NET}], not the host's")
        ),
        "{v:#?}"
    );
    let json = serde_json::to_value(v).expect("json");
    assert_eq!(json["proxy_net_ns"], NET);
}

#[test]
fn a_listener_in_the_proxys_netns_is_named_and_the_host_one_is_not() {
    let mut es = vec![
        nginx_facts(T0),
        nginx_in_netns(T0),
        gunicorn_facts(
            T0,
            "gunicorn -b 127.0.0.1:8000 app:app",
            vec![in_net(
                listener("127.0.0.1:8000", 200, "gunicorn"),
                Some(NET),
            )],
        ),
    ];
    failures(&mut es, T0 + S, 1, 101, "127.0.0.1:8000", 111);
    let vs = run(&es);
    let v = only(&vs, Cause::UpstreamNotListening);
    assert!(
        has(v, "gunicorn pid 200 listens on 127.0.0.1:8000 now"),
        "{v:#?}"
    );
    // The same facts seen by a proxy on the host: that listener is not its to reach.
    let mut host = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            "gunicorn -b 127.0.0.1:8000 app:app",
            vec![in_net(
                listener("127.0.0.1:8000", 200, "gunicorn"),
                Some(NET),
            )],
        ),
    ];
    failures(&mut host, T0 + S, 1, 101, "127.0.0.1:8000", 111);
    let vs = run(&host);
    let v = only(&vs, Cause::UpstreamNotListening);
    assert!(
        has(v, "no process listens on 127.0.0.1:8000 (listener"),
        "{v:#?}"
    );
    assert_eq!(v.proxy_net_ns, None);
}

#[test]
fn the_namespace_on_connect_events_is_enough() {
    // A recording whose facts predate the namespace lines: the events still carry it.
    let mut es = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            "gunicorn -b 127.0.0.1:8000 app:app",
            vec![listener("127.0.0.1:8000", 200, "gunicorn")],
        ),
    ];
    let mut e = connect(T0 + S, 101, "nginx", "127.0.0.1:8000", 111);
    e.net_ns = Some(NET);
    es.push(e);
    let vs = run(&es);
    let v = only(&vs, Cause::UpstreamNotListening);
    assert!(has(v, "in its network namespace net:["), "{v:#?}");
}

#[test]
fn unix_paths_are_reached_from_any_network_namespace() {
    // A unix socket bound on the host is reached through the filesystem: a stale socket file
    // that a host process listens on is not "nobody listens".
    let mut es = vec![
        nginx_facts(T0),
        nginx_in_netns(T0),
        gunicorn_facts(
            T0,
            "gunicorn -b unix:/run/app.sock app:app",
            vec![listener("unix:/run/app.sock", 200, "gunicorn")],
        ),
    ];
    failures(&mut es, T0 + S, 1, 101, "unix:/run/app.sock", 2);
    let vs = run(&es);
    let v = only(&vs, Cause::SocketMissing);
    assert!(
        has(v, "gunicorn pid 200 still listens on unix:/run/app.sock"),
        "{v:#?}"
    );
}

#[test]
fn an_app_in_another_netns_is_no_wrong_target_for_a_tcp_upstream() {
    // nginx in its namespace is refused on its loopback; a gunicorn on the host serves a unix
    // socket: not the app nginx meant (it connects to its own namespace's port).
    let mut es = vec![
        nginx_facts(T0),
        nginx_in_netns(T0),
        gunicorn_facts(
            T0,
            "gunicorn -b unix:/run/other/app.sock app:app",
            vec![listener("unix:/run/other/app.sock", 200, "gunicorn")],
        ),
    ];
    failures(&mut es, T0 + S, 3, 101, "127.0.0.1:8000", 111);
    let vs = run(&es);
    only(&vs, Cause::UpstreamNotListening);
}
