//! End-to-end diagnosis tests (root; ignored without it, run by `cargo xtask test`): the scenario lab on real nginx + gunicorn/uvicorn, the
//! `gwtrace` binary run like a user runs it, scored against nginx's own error.log and statuses.
use std::{sync::Mutex, time::Duration};

use gwtrace_lab::{
    self as lab, gwtrace_bin,
    support::{free_port, require_root},
};

/// Scenarios share nginx, cgroups and the host's process table: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn scenario(name: &str) {
    scenario_then(name, |_, _| Ok(()));
}

fn scenario_then(
    name: &str,
    also: impl FnOnce(&lab::Stack, &lab::LabResult) -> anyhow::Result<()>,
) {
    require_root(&format!("the diagnosis scenario {name}"));
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let all = lab::scenarios();
    let sc = all
        .iter()
        .find(|s| s.name == name)
        .expect("scenario exists");
    let r = lab::run_one_then(&gwtrace_bin!(), sc, also).expect("scenario runs");
    let table = lab::table(std::slice::from_ref(&r));
    assert!(
        r.ok,
        "{name}: {}\n{table}\nverdicts: {:#?}",
        r.why, r.verdicts
    );
    eprintln!("{table}");
    if std::env::var_os("GWLAB_SHOW").is_some() {
        for v in &r.verdicts {
            eprintln!("{v:#}");
        }
    }
}

macro_rules! scenarios {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(#[test] #[ignore = "needs root: run by cargo xtask test"] fn $test() { scenario($name); })*
    };
}

scenarios! {
    lab_socket_missing => "socket-missing",
    lab_tcp_refused => "tcp-refused",
    lab_stale_socket => "stale-socket",
    lab_wrong_target => "wrong-target",
    lab_two_sites_tcp => "two-sites-tcp",
    lab_two_sites_unix => "two-sites-unix",
    lab_several_apps_mismatch => "several-apps-mismatch",
    lab_crash_on_boot => "crash-on-boot",
    lab_bad_release => "bad-release",
    lab_worker_timeout => "worker-timeout",
    lab_worker_timeout_tcp => "worker-timeout-tcp",
    lab_worker_oom => "worker-oom",
    lab_worker_oom_tcp => "worker-oom-tcp",
    lab_worker_crash => "worker-crash",
    lab_backlog_full => "backlog-full",
    lab_uvicorn_socket_missing => "uvicorn-socket-missing",
    lab_uvicorn_worker_timeout => "uvicorn-worker-timeout",
    lab_read_timeout_504 => "read-timeout-504",
    lab_restart_window => "restart-window",
    lab_failed_execstart => "failed-execstart",
    lab_failed_workdir => "failed-workdir",
    lab_runtime_dir_missing => "runtime-dir-missing",
    lab_app_mount_namespace => "app-mount-namespace",
    lab_proxy_private_tmp => "proxy-private-tmp",
    lab_healthy_with_noise => "healthy-with-noise",
    lab_netns_not_listening => "netns-not-listening",
    lab_netns_firewall_reject => "netns-firewall-reject",
    lab_netns_firewall_drop => "netns-firewall-drop",
    lab_restart_superseded => "restart-superseded",
    lab_uwsgi_harakiri => "uwsgi-harakiri",
    lab_uwsgi_harakiri_tcp => "uwsgi-harakiri-tcp",
    lab_crash_supervised => "crash-supervised",
    lab_oom_supervised => "oom-supervised",
    lab_unrelated_crash => "unrelated-crash",
    lab_caddy_socket_missing => "caddy-socket-missing",
    lab_haproxy_tcp_refused => "haproxy-tcp-refused",
    lab_haproxy_chroot_socket_missing => "haproxy-chroot-socket-missing",
    lab_keepalive_race => "keepalive-race",
    lab_keepalive_fin_race => "keepalive-fin-race",
    lab_keepalive_healthy => "keepalive-healthy",
    lab_worker_recycling => "worker-recycling",
}

/// `getent DB ID`'s name (the host's NSS: ground truth independent of gwtrace's reader).
fn getent(db: &str, id: u32) -> anyhow::Result<String> {
    let out = std::process::Command::new("getent")
        .args([db, &id.to_string()])
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    text.split(':')
        .next()
        .filter(|n| out.status.success() && !n.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("getent {db} {id}: no entry"))
}

/// socket-permission, and the verdict names the socket's owner, its group and the workers' user
/// as the system does (stat of the socket, the worker's /proc status, `getent`), with the
/// literal `usermod` fix.
#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn lab_socket_permission() {
    use std::os::unix::fs::MetadataExt as _;
    scenario_then("socket-permission", |stack, r| {
        let meta = std::fs::metadata(stack.path("run/app.sock"))?;
        let (owner, group) = (getent("passwd", meta.uid())?, getent("group", meta.gid())?);
        let master = stack.nginx_pid.ok_or_else(|| anyhow::anyhow!("no nginx"))?;
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))?;
        let worker: u32 = children
            .split_whitespace()
            .next()
            .ok_or_else(|| anyhow::anyhow!("nginx has no worker"))?
            .parse()?;
        let status = std::fs::read_to_string(format!("/proc/{worker}/status"))?;
        let uid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .ok_or_else(|| anyhow::anyhow!("no Uid in /proc/{worker}/status"))?
            .parse()?;
        let user = getent("passwd", uid)?;
        let v = r
            .verdicts
            .iter()
            .find(|v| v["cause"] == "socket-permission")
            .ok_or_else(|| anyhow::anyhow!("no socket-permission verdict"))?;
        let (summary, fix) = (
            v["summary"].as_str().unwrap_or(""),
            v["fix"].as_str().unwrap_or(""),
        );
        anyhow::ensure!(
            summary.contains(&format!(" {owner}:{group})"))
                && summary.contains(&format!("(user {user}, groups ")),
            "the summary should name {owner}:{group} and {user}: {summary}"
        );
        anyhow::ensure!(
            fix.contains(&format!("usermod -aG {group} {user}")) && !fix.contains("getent"),
            "the fix should be the literal usermod: {fix}"
        );
        eprintln!("names: {summary}\n  fix: {fix}");
        Ok(())
    });
}

/// `gwtrace record` while nginx proxies to a stopped gunicorn: nginx's failed connects appear
/// with the same errno and target as nginx's error.log.
#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn record_shows_nginx_failed_connects_like_error_log() {
    require_root("record_shows_nginx_failed_connects_like_error_log");
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut stack = lab::Stack::new("record").expect("stack");
    stack.upstream = format!("127.0.0.1:{}", free_port().expect("a free port"));
    stack.start_nginx().expect("nginx");
    let out = stack.path("events.jsonl");
    let mut rec = std::process::Command::new(gwtrace_bin!())
        .args(["record", "--duration", "4", "--output"])
        .arg(&out)
        .spawn()
        .expect("gwtrace record");
    std::thread::sleep(Duration::from_millis(1500));
    let statuses: Vec<_> = (0..3)
        .map(|_| stack.get("/", Duration::from_secs(5)).status)
        .collect();
    assert!(rec.wait().expect("wait").success());
    assert!(
        statuses.iter().all(|s| *s == Some(502)),
        "nginx answered {statuses:?}"
    );
    let log = stack.nginx_errors();
    let wanted = "(111: Connection refused) while connecting to upstream";
    assert!(
        log.iter()
            .any(|l| l.contains(wanted) && l.contains(&stack.upstream)),
        "error.log: {log:?}"
    );
    let text = std::fs::read_to_string(&out).expect("record file");
    // This stack's nginx: its master and workers (other tests may run an nginx meanwhile, and
    // `nginx -t` looking up its user connects to nscd's socket).
    let master = stack.nginx_pid.expect("nginx pid");
    let mut ours = vec![u64::from(master)];
    ours.extend(
        std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse::<u64>().ok()),
    );
    let nginx_failures: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "connect_failed" && e["comm"] == "nginx")
        .filter(|e| e["pid"].as_u64().is_some_and(|p| ours.contains(&p)))
        .collect();
    // Identical failures fold into one line with a count (absent = 1).
    let failures: u64 = nginx_failures
        .iter()
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum();
    assert!(
        failures >= 3,
        "expected nginx's 3 failed connects, got {nginx_failures:?}"
    );
    for e in &nginx_failures {
        assert_eq!(e["target"], stack.upstream.as_str());
        assert_eq!(e["errno"], 111);
        assert_eq!(e["errno_name"], "ECONNREFUSED");
    }
    let meta = std::fs::metadata(&out).expect("meta");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
}

/// A healthy nginx started and reloaded (`nginx -s reload`) while gwtrace runs gives no
/// verdict. nginx looks its `user` up through glibc NSS on every start and reload, and NSS asks
/// nscd first: where nscd does not run, that connect fails (ENOENT), in nginx's own master and
/// in the `nginx -s reload` process. It is no upstream connect. gwtrace reads nginx's
/// configuration when it starts and again on the reload: the record shows both reads. In
/// `--hooks full` the kernel reports those failed nscd connects (the hazard is checked to be
/// there); in the default `auto` mode a system socket is no trigger, so they are not even seen.
#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn healthy_nginx_started_and_reloaded_gives_no_verdict() {
    require_root("healthy_nginx_started_and_reloaded_gives_no_verdict");
    healthy_nginx_started_and_reloaded("full");
    healthy_nginx_started_and_reloaded("auto");
}

fn healthy_nginx_started_and_reloaded(hooks: &'static str) {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut stack = lab::Stack::new(&format!("reload-{hooks}")).expect("stack");
    stack.hooks = Some(hooks);
    let bind = format!("unix:{}", stack.path("app.sock").display());
    stack.gunicorn(&bind, &[], &[]).expect("gunicorn");
    stack.wait_listening(&bind).expect("gunicorn listens");
    stack.upstream = bind;
    let record = stack.path("events.jsonl");
    stack.record = Some(record.clone());
    // gwtrace first (no --proxy: nginx is found by name), then nginx starts under it.
    let (mut gw, lines) = lab::start_gwtrace(&gwtrace_bin!(), &stack, 8, true).expect("gwtrace");
    stack.start_nginx().expect("nginx");
    let mut statuses: Vec<Option<u16>> = (0..3)
        .map(|_| stack.get("/", Duration::from_secs(5)).status)
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    stack.reload_nginx().expect("nginx -s reload");
    statuses.extend((0..3).map(|_| stack.get("/", Duration::from_secs(5)).status));
    assert!(gw.wait().expect("wait").success());
    assert!(
        statuses.iter().all(|s| *s == Some(200)),
        "nginx answered {statuses:?}"
    );
    assert_eq!(
        stack.nginx_errors(),
        Vec::<String>::new(),
        "nginx is healthy"
    );
    let master = u64::from(stack.nginx_pid.expect("nginx pid"));
    let out = lines.lock().map(|l| l.clone()).unwrap_or_default();
    let verdicts: Vec<serde_json::Value> = out
        .iter()
        .filter_map(|(_, l)| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("cause").is_some())
        .collect();
    // Other tests on this host may run a broken nginx meanwhile: their verdicts are theirs. None
    // may be about this nginx, nor about a socket the system provides (whichever nginx).
    let false_ones: Vec<&serde_json::Value> = verdicts
        .iter()
        .filter(|v| {
            v["proxy_pid"].as_u64() == Some(master)
                || v["target"]
                    .as_str()
                    .is_some_and(|t| gwtrace::catalog::system_socket(t).is_some())
        })
        .collect();
    assert!(false_ones.is_empty(), "false verdicts: {false_ones:#?}");
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&record)
        .expect("record file")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // The configuration was read at nginx's start and again after the reload.
    let reads = events
        .iter()
        .filter_map(|e| e["proxy_configs"].as_array())
        .flatten()
        .filter(|c| c["pid"].as_u64() == Some(master))
        .inspect(|c| assert_eq!(c["targets"], serde_json::json!([stack.upstream]), "{c}"))
        .count();
    assert!(reads >= 2, "nginx's configuration read {reads} time(s)");
    // The hazard was there: where nscd does not run, nginx's lookups failed to connect to it.
    if hooks == "full" && !std::path::Path::new("/var/run/nscd/socket").exists() {
        assert!(
            events.iter().any(|e| e["kind"] == "connect_failed"
                && e["comm"] == "nginx"
                && e["target"]
                    .as_str()
                    .is_some_and(|t| gwtrace::catalog::system_socket(t).is_some())),
            "no failed connect of nginx to nscd recorded"
        );
    }
}

/// A site added by a reload is diagnosed: gwtrace runs, nginx starts with one healthy site, then
/// is reloaded with a second site whose unix socket does not exist. gwtrace reads the
/// configuration again on the reload, so the new site's 502s (nginx's own error.log: ENOENT on
/// that socket) get `socket-missing` naming the new site's upstream, and the old site, still
/// answering 200, is blamed for nothing.
#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn a_site_added_by_a_reload_is_diagnosed() {
    require_root("a_site_added_by_a_reload_is_diagnosed");
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut stack = lab::Stack::new("reload-site").expect("stack");
    let old_site = format!("unix:{}", stack.path("app.sock").display());
    stack.gunicorn(&old_site, &[], &[]).expect("gunicorn");
    stack.wait_listening(&old_site).expect("gunicorn listens");
    stack.upstream.clone_from(&old_site);
    let new_site = format!("unix:{}", stack.path("new-site.sock").display());
    let record = stack.path("events.jsonl");
    stack.record = Some(record.clone());
    let (mut gw, lines) = lab::start_gwtrace(&gwtrace_bin!(), &stack, 10, true).expect("gwtrace");
    stack.start_nginx().expect("nginx");
    let before: Vec<Option<u16>> = (0..3)
        .map(|_| stack.get("/", Duration::from_secs(5)).status)
        .collect();
    assert!(
        before.iter().all(|s| *s == Some(200)),
        "nginx answered {before:?}"
    );
    std::thread::sleep(Duration::from_millis(1000));
    stack.sites.push(("/new/".to_owned(), new_site.clone()));
    stack.innocent.push(old_site.clone());
    stack
        .reconfigure_nginx()
        .expect("nginx -s reload with the new site");
    let mut new_statuses = Vec::new();
    let mut old_statuses = Vec::new();
    for _ in 0..4 {
        new_statuses.push(stack.get("/new/", Duration::from_secs(5)).status);
        old_statuses.push(stack.get("/", Duration::from_secs(5)).status);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(gw.wait().expect("wait").success());
    assert!(
        new_statuses.iter().all(|s| *s == Some(502))
            && old_statuses.iter().all(|s| *s == Some(200)),
        "new site answered {new_statuses:?}, old site {old_statuses:?}"
    );
    // Ground truth: nginx's own log says the new site's socket is missing.
    let log = stack.nginx_errors();
    let path = new_site.trim_start_matches("unix:");
    assert!(
        log.iter()
            .any(|l| l.contains(path) && l.contains("(2: No such file or directory)")),
        "error.log: {log:?}"
    );
    let master = u64::from(stack.nginx_pid.expect("nginx pid"));
    let out = lines.lock().map(|l| l.clone()).unwrap_or_default();
    let ours: Vec<serde_json::Value> = out
        .iter()
        .filter_map(|(_, l)| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("cause").is_some() && v["proxy_pid"].as_u64() == Some(master))
        .collect();
    let finals: Vec<&serde_json::Value> =
        ours.iter().filter(|v| v.get("final").is_some()).collect();
    assert!(
        finals
            .iter()
            .any(|v| v["cause"] == "socket-missing" && v["target"] == new_site.as_str()),
        "no final socket-missing for {new_site}: {finals:#?}"
    );
    // Only the new site is blamed: every verdict about this nginx is the new site's missing
    // socket, none names the old site's app.
    let wrong: Vec<&serde_json::Value> = ours
        .iter()
        .filter(|v| {
            v["cause"] != "socket-missing"
                || v["target"] != new_site.as_str()
                || [&v["summary"], &v["fix"]]
                    .iter()
                    .any(|t| t.as_str().is_some_and(|t| t.contains(&old_site)))
        })
        .collect();
    assert!(wrong.is_empty(), "false verdicts: {wrong:#?}");
    // The configuration was read again after the reload, with the new site's upstream.
    let reread = std::fs::read_to_string(&record)
        .expect("record file")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["proxy_configs"].as_array().cloned())
        .flatten()
        .any(|c| {
            c["pid"].as_u64() == Some(master)
                && c["targets"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == new_site.as_str()))
        });
    assert!(
        reread,
        "nginx's configuration was not read again after the reload"
    );
}
