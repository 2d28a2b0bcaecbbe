//! Deploy-time and container causes: unix restarts, failed execs, runtime directories, mount namespaces.
use super::*;

const RUN_SOCK: &str = "unix:/srv/app/run/app.sock";
const RUN_CMD: &str = "gunicorn --bind unix:/srv/app/run/app.sock --workers 1 app:app";

fn exec_failed(t: u64, pid: u32, comm: &str, filename: &str, errno: i32) -> Event {
    ev(
        t,
        pid,
        comm,
        Body::ExecFailed {
            filename: filename.into(),
            errno,
            errno_name: errno_name(errno).into(),
        },
    )
}

fn mount_ns(t: u64, ns: &[(u32, u64)]) -> Event {
    facts(
        t,
        FactsUpdate {
            mount_ns: ns
                .iter()
                .map(|&(pid, mnt_ns)| MountNs { pid, mnt_ns })
                .collect(),
            ..FactsUpdate::default()
        },
    )
}

fn started(mut p: ProcInfo, start_ns: u64) -> ProcInfo {
    p.start_ns = start_ns;
    p
}

/// A supervisor shell (300) runs gunicorn 301 (worker 302) on a unix socket. At 10 s it stops it
/// with SIGTERM: gunicorn removes its socket at once and exits 1.2 s later. At 12.5 s a new
/// gunicorn execs (pid 310, or the shell itself when `by_exec`) and listens at about 13.5 s;
/// nginx fails every 100 ms from 10.15 s to 13.55 s (35 connects). The collector lags: the
/// listener facts explaining the failure at 12.05 s were read at 13.6 s.
pub(super) fn unix_restart_stream(comes_back: bool, by_exec: bool) -> Vec<Event> {
    let new_pid = if by_exec { 300 } else { 310 };
    let mut es = vec![
        nginx_facts(T0),
        facts(
            T0,
            FactsUpdate {
                processes: vec![
                    started(
                        proc_info(300, 1, "sh", "sh -c supervise", 0, &[0]),
                        T0 - 6 * S,
                    ),
                    started(
                        proc_info(301, 300, "gunicorn", RUN_CMD, 999, &[999]),
                        T0 - 5 * S,
                    ),
                    started(
                        proc_info(302, 301, "gunicorn", RUN_CMD, 999, &[999]),
                        T0 - 4 * S,
                    ),
                ],
                listeners: Some(vec![
                    listener("0.0.0.0:80", 100, "nginx"),
                    listener(RUN_SOCK, 301, "gunicorn"),
                ]),
                ..FactsUpdate::default()
            },
        ),
        signal(T0 + 10 * S, 300, "sh", 301, "gunicorn", 15, 0),
        signal(T0 + 10 * S + MS, 301, "gunicorn", 302, "gunicorn", 15, 0),
        exit_code(T0 + 11 * S, 302, "gunicorn", 0),
        exit_code(T0 + 11 * S + 200 * MS, 301, "gunicorn", 0),
    ];
    failures(&mut es, T0 + 10 * S + 150 * MS, 35, 101, RUN_SOCK, 2);
    let now_listening = |t: u64, read: u64| {
        let mut f = FactsUpdate {
            listeners: Some(vec![
                listener("0.0.0.0:80", 100, "nginx"),
                listener(RUN_SOCK, new_pid, "gunicorn"),
            ]),
            read_ns: Some(read),
            ..FactsUpdate::default()
        };
        if !by_exec {
            f.processes = vec![started(
                proc_info(310, 300, "gunicorn", RUN_CMD, 999, &[999]),
                T0 + 12 * S + 500 * MS,
            )];
        }
        facts(t, f)
    };
    if comes_back {
        es.push(exec(
            T0 + 12 * S + 500 * MS,
            new_pid,
            "gunicorn",
            "/usr/bin/gunicorn",
            RUN_CMD,
        ));
        es.push(now_listening(T0 + 12 * S + 50 * MS, T0 + 13 * S + 600 * MS));
        es.push(now_listening(T0 + 14 * S, T0 + 14 * S));
    } else {
        es.push(facts(
            T0 + 14 * S,
            FactsUpdate {
                listeners: Some(vec![listener("0.0.0.0:80", 100, "nginx")]),
                ..FactsUpdate::default()
            },
        ));
    }
    // Events reach the engine in time order (a facts line just before the event it explains).
    es.sort_by_key(|e| e.mono_ns);
    es
}

#[test]
fn unix_restart_window_is_upstream_restarting() {
    let vs = run(&unix_restart_stream(true, false));
    let v = only(&vs, Cause::UpstreamRestarting);
    assert_eq!((v.count, v.target.as_str()), (35, RUN_SOCK), "{v:#?}");
    assert!(
        has(
            v,
            "gunicorn pid 301 exited with code 0 on SIGTERM (15) from pid 300 (sh)"
        ),
        "the old pid's exit: {v:#?}"
    );
    assert!(
        has(
            v,
            "new gunicorn pid 310 (/usr/bin/gunicorn) started at t=1012.500s"
        ),
        "the new exec: {v:#?}"
    );
    assert!(
        v.summary
            .contains("nothing listened on unix:/srv/app/run/app.sock for about 3.6 s"),
        "how long, from the stop signal to the new listener seen: {}",
        v.summary
    );
    assert!(
        has(
            v,
            "35 failed connects from nginx between t=1010.150s and t=1013.550s"
        ),
        "{v:#?}"
    );
    assert!(v.fix.contains("HUP") && v.fix.contains("socket activation"));
}

#[test]
fn restart_by_a_supervisor_that_execs_in_place() {
    // The shell that started the old gunicorn execs the new one: the old master is not a worker
    // of the new one.
    let vs = run(&unix_restart_stream(true, true));
    let v = only(&vs, Cause::UpstreamRestarting);
    assert_eq!(v.count, 35);
    assert!(has(v, "gunicorn pid 301 exited with code 0"), "{v:#?}");
    assert!(has(v, "new gunicorn pid 300 (/usr/bin/gunicorn)"), "{v:#?}");
}

#[test]
fn unix_restart_that_never_comes_back_keeps_its_cause() {
    let vs = run(&unix_restart_stream(false, false));
    let v = only(&vs, Cause::SocketMissing);
    assert!(has(v, "gunicorn pid 301 exited with code 0"), "{v:#?}");
}

/// A supervisor retries an app whose program does not exist (`comm` tries it, exits `code`).
fn failed_exec_stream(comm: &str, code: i32) -> Vec<Event> {
    let mut es = vec![
        nginx_facts(T0),
        facts(
            T0,
            FactsUpdate {
                paths: vec![PathInfo {
                    path: "/srv/app/venv/bin/gunicorn".into(),
                    ..path(&[
                        ("/", true, 0, 0, 0o040_755),
                        ("/srv", true, 0, 0, 0o040_755),
                        ("/srv/app", true, 999, 999, 0o040_755),
                        ("/srv/app/venv", false, 0, 0, 0),
                    ])
                }],
                ..FactsUpdate::default()
            },
        ),
    ];
    for i in 0..4 {
        let t = T0 + u64::from(i) * S;
        es.push(exec_failed(
            t,
            400 + i,
            comm,
            "/srv/app/venv/bin/gunicorn",
            2,
        ));
        es.push(exit_code(t + MS, 400 + i, comm, code));
    }
    failures(&mut es, T0 + 500 * MS, 8, 101, "unix:/run/app/app.sock", 2);
    es.sort_by_key(|e| e.mono_ns);
    es
}

#[test]
fn failed_exec_start_is_crash_on_boot_naming_the_path() {
    let vs = run(&failed_exec_stream("sh", 127));
    let v = only(&vs, Cause::CrashOnBoot);
    assert_eq!((v.target.as_str(), v.count), ("unix:/run/app/app.sock", 8));
    assert!(
        v.summary.contains(
            "gunicorn cannot start: exec of /srv/app/venv/bin/gunicorn fails with ENOENT (2) (directory \
             /srv/app/venv does not exist)"
        ),
        "{}",
        v.summary
    );
    assert!(
        has(
            v,
            "exec of /srv/app/venv/bin/gunicorn failed with ENOENT (2) by pid 403 (sh)"
        ),
        "{v:#?}"
    );
    assert!(has(v, "exit code 127 (command not found)"), "{v:#?}");
    assert!(
        v.fix.contains("203/EXEC") && v.fix.contains("ExecStart="),
        "{}",
        v.fix
    );
}

#[test]
fn systemd_203_exec_is_crash_on_boot() {
    let vs = run(&failed_exec_stream("(myapp)", 203));
    let v = only(&vs, Cause::CrashOnBoot);
    assert!(has(v, "exit code 203 (systemd 203/EXEC"), "{v:#?}");
    assert!(has(v, "by pid 403 ((myapp))"), "{v:#?}");
}

#[test]
fn systemd_200_chdir_is_crash_on_boot() {
    // WorkingDirectory= is missing: systemd's child exits 200 before it executes anything.
    let mut es = vec![nginx_facts(T0)];
    for i in 0..3 {
        es.push(exit_code(T0 + u64::from(i) * S, 500 + i, "(myapp)", 200));
    }
    failures(&mut es, T0 + 500 * MS, 5, 101, "unix:/run/app/app.sock", 2);
    es.sort_by_key(|e| e.mono_ns);
    let vs = run(&es);
    let v = only(&vs, Cause::CrashOnBoot);
    assert!(has(v, "exit code 200 (systemd 200/CHDIR"), "{v:#?}");
    assert!(
        v.summary
            .starts_with("unit myapp's process dies before the app even runs: exit code 200"),
        "{}",
        v.summary
    );
    assert!(v.fix.contains("WorkingDirectory="), "{}", v.fix);
}

#[test]
fn failed_exec_of_something_else_is_not_crash_on_boot() {
    let mut es = vec![nginx_facts(T0)];
    for i in 0..3 {
        let t = T0 + u64::from(i) * S;
        es.push(exec_failed(
            t,
            600 + i,
            "sh",
            "/usr/local/bin/healthcheck",
            2,
        ));
        es.push(exit_code(t + MS, 600 + i, "sh", 127));
    }
    failures(&mut es, T0 + 500 * MS, 5, 101, "unix:/run/app/app.sock", 2);
    es.sort_by_key(|e| e.mono_ns);
    only(&run(&es), Cause::SocketMissing);
}

#[test]
fn runtime_directory_missing_after_reboot() {
    // The walk stops at the first missing component: the directory, not the socket.
    let es = vec![
        nginx_facts(T0),
        facts(
            T0,
            FactsUpdate {
                paths: vec![PathInfo {
                    path: "/srv/lab/run/myapp/app.sock".into(),
                    ..path(&[
                        ("/", true, 0, 0, 0o040_755),
                        ("/srv", true, 0, 0, 0o040_755),
                        ("/srv/lab", true, 0, 0, 0o040_755),
                        ("/srv/lab/run", true, 0, 0, 0o040_755),
                        ("/srv/lab/run/myapp", false, 0, 0, 0),
                    ])
                }],
                ..FactsUpdate::default()
            },
        ),
        connect(T0 + S, 101, "nginx", "unix:/srv/lab/run/myapp/app.sock", 2),
    ];
    let vs = run(&es);
    let v = only(&vs, Cause::SocketMissing);
    assert!(
        v.summary
            .contains("its directory /srv/lab/run/myapp itself is missing"),
        "{}",
        v.summary
    );
    assert!(
        has(
            v,
            "directory /srv/lab/run/myapp itself does not exist (/run is a tmpfs"
        ),
        "{v:#?}"
    );
    assert!(
        v.fix
            .contains("RuntimeDirectory=myapp in the [Service] section"),
        "{}",
        v.fix
    );
}

const HOST_NS: u64 = 4_026_531_841;
const APP_NS: u64 = 4_026_532_300;

/// gunicorn 200 listens on /srv/sock/app.sock; nginx's walk of the path finds the directory but
/// no socket; the two live in `app_ns` and `HOST_NS`.
fn mount_ns_stream(app_ns: u64) -> Vec<Event> {
    let sock = "unix:/srv/sock/app.sock";
    let mut es = vec![
        nginx_facts(T0),
        gunicorn_facts(
            T0,
            "gunicorn --bind unix:/srv/sock/app.sock app:app",
            vec![
                listener("0.0.0.0:80", 100, "nginx"),
                listener(sock, 200, "gunicorn"),
            ],
        ),
        mount_ns(T0, &[(100, HOST_NS), (200, app_ns), (201, app_ns)]),
        // A short-lived helper of the app's namespace setup (`mount`) exits: not a restart.
        exit_code(T0 + S, 210, "mount", 0),
        facts(
            T0 + 2 * S,
            FactsUpdate {
                paths: vec![path(&[
                    ("/", true, 0, 0, 0o040_755),
                    ("/srv", true, 0, 0, 0o040_755),
                    ("/srv/sock", true, 0, 0, 0o040_755),
                    ("/srv/sock/app.sock", false, 0, 0, 0),
                ])],
                mount_ns: vec![MountNs {
                    pid: 101,
                    mnt_ns: HOST_NS,
                }],
                ..FactsUpdate::default()
            },
        ),
    ];
    failures(&mut es, T0 + 2 * S, 5, 101, sock, 2);
    es
}

#[test]
fn socket_in_another_mount_namespace() {
    let vs = run(&mount_ns_stream(APP_NS));
    let v = only(&vs, Cause::SocketMissing);
    assert_eq!(v.target, "unix:/srv/sock/app.sock");
    assert!(
        v.summary.starts_with(
            "gunicorn pid 200 listens on unix:/srv/sock/app.sock in another mount namespace \
             (mnt:[4026532300]); nginx's namespace (mnt:[4026531841]) has no such file"
        ),
        "{}",
        v.summary
    );
    assert!(
        has(
            v,
            "in nginx's mount namespace: drwxr-xr-x 0:0 /srv/sock exists, but there is no /srv/sock/app.sock in it"
        ),
        "{v:#?}"
    );
    assert!(
        has(
            v,
            "its command line: gunicorn --bind unix:/srv/sock/app.sock"
        ),
        "{v:#?}"
    );
    assert!(v.fix.contains("PrivateTmp="), "{}", v.fix);
}

#[test]
fn socket_in_another_mount_namespace_is_not_a_wrong_target() {
    // Another app server listens elsewhere on the host: the proxy still points at the right
    // socket, only in the wrong namespace.
    let mut es = mount_ns_stream(APP_NS);
    es.insert(
        3,
        facts(
            T0,
            FactsUpdate {
                processes: vec![proc_info(
                    300,
                    1,
                    "gunicorn",
                    "gunicorn --bind 127.0.0.1:8000 other:app",
                    999,
                    &[999],
                )],
                listeners: Some(vec![
                    listener("0.0.0.0:80", 100, "nginx"),
                    listener("unix:/srv/sock/app.sock", 200, "gunicorn"),
                    listener("127.0.0.1:8000", 300, "gunicorn"),
                ]),
                ..FactsUpdate::default()
            },
        ),
    );
    let vs = run(&es);
    let v = only(&vs, Cause::SocketMissing);
    assert!(
        v.summary.contains("another mount namespace"),
        "{}",
        v.summary
    );
}

#[test]
fn same_mount_namespace_is_a_deleted_socket() {
    let vs = run(&mount_ns_stream(HOST_NS));
    let v = only(&vs, Cause::SocketMissing);
    assert!(v.summary.contains("still listens on it"), "{}", v.summary);
    assert!(!v.summary.contains("mount namespace"), "{}", v.summary);
}
