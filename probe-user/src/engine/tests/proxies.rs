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
