//! Attribution end to end (root): nginx runs in a systemd-like service cgroup, gunicorn in a
//! Kubernetes-like pod/container cgroup, both created by the test. A worker timeout and then a
//! dead upstream make nginx answer 502 (its error.log is the ground truth); every event gwtrace
//! records and every verdict must name where the processes run.
use std::time::Duration;

use gwtrace_lab::{self as lab, gwtrace_bin, support::require_root};
use serde_json::Value;

fn field<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn events_and_verdicts_name_unit_container_and_pod() {
    require_root("the attribution test");
    let me = std::process::id();
    // Unique per run, shaped like the real thing (containerd with the systemd cgroup driver).
    let container_id = format!("{:0>64x}", u128::from(me) * 0x9e37_79b9_7f4a_7c15 + 0xabc);
    let pod_uid = format!("0b5e8a3c-1d2e-4f60-8a9b-{me:012x}");
    let service = format!("gwtest-proxy-{me}.service");
    let top = format!("gwtest-{me}.slice");

    let mut s = lab::Stack::new("attribution").expect("lab dir");
    let proxy_cg = s
        .make_cgroup(&format!("{top}/{service}"))
        .expect("service cgroup");
    let app_cg = s
        .make_cgroup(&format!(
            "{top}/kubepods-burstable-pod{}.slice/cri-containerd-{container_id}.scope",
            pod_uid.replace('-', "_")
        ))
        .expect("pod cgroup");
    s.place("nginx", proxy_cg);
    s.place("gunicorn", app_cg);
    s.upstream = format!("unix:{}", s.path("app.sock").display());
    let bind = s.upstream.clone();
    let app = s
        .gunicorn(&bind, &["--timeout", "2"], &[("GWLAB_SLOW", "15")])
        .expect("gunicorn");
    s.wait_listening(&bind).expect("gunicorn listens");
    s.start_nginx().expect("nginx");
    let record = s.path("events.jsonl");
    s.record = Some(record.clone());

    let bin = gwtrace_bin!();
    let (mut gw, lines) = lab::start_gwtrace(&bin, &s, 9, true).expect("gwtrace starts");
    // 1: a view sleeps past --timeout: gunicorn's master kills the worker mid-request.
    let slow = s.get("/slow", Duration::from_secs(20));
    // 2: the whole app server dies: nginx's connects are refused (the socket file stays).
    s.kill_group(app, libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(300));
    let refused = s.get("/", Duration::from_secs(5));
    let status = gw.wait().expect("gwtrace ends");
    assert!(status.success(), "gwtrace exited {status}");

    // Ground truth: nginx answered 502 twice, and says why.
    assert_eq!((slow.status, refused.status), (Some(502), Some(502)));
    let errors = s.nginx_errors().join("\n");
    assert!(
        errors.contains("upstream prematurely closed connection"),
        "{errors}"
    );
    assert!(errors.contains("(111: Connection refused)"), "{errors}");

    let w = Want {
        upstream: &s.upstream,
        service: &service,
        container_id: &container_id,
        pod_uid: &pod_uid,
    };
    check_events(&record, &w);
    let nginx_pid = s.nginx_pid.expect("nginx pid");
    let lines = lines.lock().map(|l| l.clone()).unwrap_or_default();
    check_verdicts(&lines, nginx_pid, &w);
}

/// What the run must attribute.
struct Want<'a> {
    upstream: &'a str,
    service: &'a str,
    container_id: &'a str,
    pod_uid: &'a str,
}

/// Every failed connect of this nginx carries its unit; the gunicorn deaths the container and pod.
fn check_events(record: &std::path::Path, w: &Want<'_>) {
    let events: Vec<Value> = std::fs::read_to_string(record)
        .expect("record file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    // Every failed connect of this nginx carries its unit.
    let ours: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "connect_failed" && field(e, &["target"]) == Some(w.upstream))
        .collect();
    assert!(
        !ours.is_empty(),
        "no connect_failed to {} recorded",
        w.upstream
    );
    for e in &ours {
        assert_eq!(field(e, &["origin", "unit"]), Some(w.service), "{e}");
        assert_eq!(field(e, &["origin", "container_id"]), None, "{e}");
    }
    // The killed worker's death (and the master's) carry the container and the pod.
    let deaths: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "process_exit" && field(e, &["comm"]) == Some("gunicorn"))
        .collect();
    assert!(deaths.len() >= 2, "worker and master exits: {deaths:?}");
    for e in &deaths {
        assert_eq!(field(e, &["origin", "pod_uid"]), Some(w.pod_uid), "{e}");
        assert_eq!(
            field(e, &["origin", "container_id"]),
            Some(w.container_id),
            "{e}"
        );
        assert_eq!(
            field(e, &["origin", "container_runtime"]),
            Some("containerd"),
            "{e}"
        );
    }
}

/// The worker timeout names the upstream's pod; every verdict about this nginx its unit.
fn check_verdicts(lines: &[(std::time::Instant, String)], nginx_pid: u32, w: &Want<'_>) {
    // The verdicts: the worker timeout names the upstream's pod, both name the proxy's unit.
    let verdicts: Vec<Value> = lines
        .iter()
        .filter_map(|(_, l)| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("final").is_some() && v.get("cause").is_some())
        .collect();
    let timeout = verdicts
        .iter()
        .find(|v| v["cause"] == "worker-timeout")
        .unwrap_or_else(|| panic!("no worker-timeout verdict: {verdicts:#?}"));
    assert_eq!(
        field(timeout, &["upstream_origin", "pod_uid"]),
        Some(w.pod_uid),
        "{timeout:#}"
    );
    assert_eq!(
        field(timeout, &["upstream_origin", "container_id"]),
        Some(w.container_id),
        "{timeout:#}"
    );
    for v in &verdicts {
        if v["proxy_pid"]
            .as_u64()
            .is_some_and(|p| p == u64::from(nginx_pid))
        {
            assert_eq!(
                field(v, &["proxy_origin", "unit"]),
                Some(w.service),
                "{v:#}"
            );
        }
    }
    assert!(
        verdicts.iter().any(|v| v["cause"] != "worker-timeout"
            && field(v, &["proxy_origin", "unit"]) == Some(w.service)),
        "the refused connects' verdict names the proxy's unit: {verdicts:#?}"
    );
}
