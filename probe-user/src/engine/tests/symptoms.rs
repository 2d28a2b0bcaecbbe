//! Which failed connects are 502 symptoms: only a proxy's, only to its upstreams; never a
//! socket the system itself provides.
use super::*;
use crate::facts::ProxyConfig;

fn config(t: u64, pid: u32, targets: &[&str], partial: bool) -> Event {
    facts(
        t,
        FactsUpdate {
            proxy_configs: vec![ProxyConfig {
                pid,
                kind: "nginx".into(),
                source: "nginx -T -c /etc/nginx/nginx.conf".into(),
                targets: targets.iter().map(|t| (*t).to_owned()).collect(),
                partial,
            }],
            ..FactsUpdate::default()
        },
    )
}

/// nginx looks its `user` up through glibc NSS on every start and reload: nscd first, which
/// fails with ENOENT where nscd does not run. Not a symptom, configuration known or not.
#[test]
fn nscd_and_syslog_connects_are_never_symptoms() {
    let mut es = vec![nginx_facts(T0)];
    failures(&mut es, T0 + S, 3, 100, "unix:/var/run/nscd/socket", 2);
    failures(&mut es, T0 + S, 2, 101, "unix:/dev/log", 111);
    failures(
        &mut es,
        T0 + S,
        1,
        101,
        "unix:/run/systemd/journal/socket",
        2,
    );
    failures(&mut es, T0 + S, 1, 101, "127.0.0.53:53", 111);
    assert_eq!(run(&es), Vec::new());
    // Nor with a configuration that does not name them.
    es.insert(1, config(T0, 100, &["unix:/run/app.sock"], false));
    assert_eq!(run(&es), Vec::new());
    // An app's own socket still is, without a configuration.
    let mut es = vec![nginx_facts(T0)];
    failures(&mut es, T0 + S, 2, 101, "unix:/run/app.sock", 2);
    only(&run(&es), Cause::SocketMissing);
}

/// With the configuration known, only its upstreams count: a worker's connect elsewhere (a
/// status socket, a helper) is not a 502 cause, the configured target is.
#[test]
fn with_the_configuration_only_its_upstreams_count() {
    let mut es = vec![
        nginx_facts(T0),
        config(T0, 100, &["127.0.0.1:8000", "unix:/run/b.sock"], false),
    ];
    failures(&mut es, T0 + S, 3, 101, "unix:/run/status.sock", 2);
    failures(&mut es, T0 + S, 2, 101, "127.0.0.1:9999", 111);
    assert_eq!(run(&es), Vec::new());
    failures(&mut es, T0 + 2 * S, 2, 102, "127.0.0.1:8000", 111);
    let vs = run(&es);
    let v = only(&vs, Cause::UpstreamNotListening);
    assert_eq!((v.target.as_str(), v.count), ("127.0.0.1:8000", 2));
}

/// A configuration with `$variables` cannot name every upstream: other targets still count,
/// system sockets still do not.
#[test]
fn a_partial_configuration_keeps_other_targets() {
    let mut es = vec![nginx_facts(T0), config(T0, 100, &["127.0.0.1:8000"], true)];
    failures(&mut es, T0 + S, 2, 101, "127.0.0.1:9999", 111);
    failures(&mut es, T0 + S, 2, 101, "unix:/var/run/nscd/socket", 2);
    let vs = run(&es);
    assert_eq!(
        only(&vs, Cause::UpstreamNotListening).target,
        "127.0.0.1:9999"
    );
}

/// The configuration belongs to its master's pid: when that pid execs another program (or
/// exits), it is forgotten.
#[test]
fn a_configuration_is_forgotten_when_its_master_execs() {
    let mut es = vec![nginx_facts(T0), config(T0, 100, &["127.0.0.1:8000"], false)];
    failures(&mut es, T0 + S, 2, 101, "127.0.0.1:9999", 111);
    assert_eq!(run(&es), Vec::new());
    es.push(exec(
        T0 + 2 * S,
        100,
        "nginx",
        "/usr/sbin/nginx",
        "nginx -c /etc/nginx/other.conf",
    ));
    let vs = run(&es);
    assert_eq!(
        only(&vs, Cause::UpstreamNotListening).target,
        "127.0.0.1:9999"
    );
}

/// A configured name resolves to addresses: `gwtrace check`'s resolution puts them in the
/// targets, and an IPv4-mapped connect to one counts as the same target.
#[test]
fn configured_addresses_match_their_mapped_form() {
    let mut es = vec![nginx_facts(T0), config(T0, 100, &["10.0.0.5:8000"], false)];
    failures(&mut es, T0 + S, 2, 101, "[::ffff:10.0.0.5]:8000", 111);
    let vs = run(&es);
    only(&vs, Cause::UpstreamNotListening);
}

/// A reload (SIGHUP) may add a site: until the configuration is read again, the one read before
/// drops no symptom; once reread, it rules again.
#[test]
fn a_configuration_is_stale_after_a_reload_until_reread() {
    let mut es = vec![nginx_facts(T0), config(T0, 100, &["127.0.0.1:8000"], false)];
    failures(&mut es, T0 + S, 2, 101, "127.0.0.1:9999", 111);
    assert_eq!(run(&es), Vec::new());
    // SIGTERM to a worker is no reload; SIGHUP to the master is.
    es.push(signal(T0 + 2 * S, 1, "systemd", 101, "nginx", 15, 0));
    assert_eq!(run(&es), Vec::new());
    es.push(signal(T0 + 2 * S, 1, "systemd", 100, "nginx", 1, 0));
    failures(&mut es, T0 + 3 * S, 2, 101, "127.0.0.1:9999", 111);
    let v = run(&es);
    assert_eq!(
        only(&v, Cause::UpstreamNotListening).target,
        "127.0.0.1:9999"
    );
    // Reread with the new site: it counts because it is named now.
    let mut named = es.clone();
    named.push(config(
        T0 + 4 * S,
        100,
        &["127.0.0.1:8000", "127.0.0.1:9999"],
        false,
    ));
    only(&run(&named), Cause::UpstreamNotListening);
    // Reread without it: dropped again (the connects were to no upstream after all).
    es.push(config(T0 + 4 * S, 100, &["127.0.0.1:8000"], false));
    assert_eq!(run(&es), Vec::new());
}
