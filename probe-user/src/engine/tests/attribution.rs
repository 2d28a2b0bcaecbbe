//! Attribution: origins of proxies and upstreams.
use super::*;

const CID: &str = "4f3c2b1a00112233445566778899aabbccddeeff00112233445566778899aabb";

fn with_origin(mut e: Event, cgroup: &str) -> Event {
    e.origin = Some(std::sync::Arc::new(crate::origin::Origin::from_path(
        cgroup,
    )));
    e
}

#[test]
fn verdicts_name_the_proxys_unit_and_the_upstreams_pod() {
    let pod = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b5e8a3c_1d2e_4f60_8a9b_0c1d2e3f4a5b.slice/cri-containerd-{CID}.scope"
    );
    let mut es = timeout_stream();
    // The worker's death carries its origin (read while it was still there).
    let last = es.pop().unwrap();
    es.push(with_origin(last, &pod));
    // A failed connect from the proxy worker carries the proxy's.
    es.push(with_origin(
        connect(T0 + 32 * S, 101, "nginx", "127.0.0.1:8000", 111),
        "/system.slice/nginx.service",
    ));
    let vs = run(&es);
    let v = vs
        .iter()
        .find(|v| v.cause == Cause::WorkerTimeout)
        .expect("timeout");
    assert_eq!(v.upstream_pid, Some(201));
    let up = v.upstream_origin.as_ref().expect("upstream origin");
    assert_eq!(
        up.pod_uid.as_deref(),
        Some("0b5e8a3c-1d2e-4f60-8a9b-0c1d2e3f4a5b")
    );
    assert_eq!(up.container_id.as_deref(), Some(CID));
    assert_eq!(up.container_runtime.as_deref(), Some("containerd"));
    let refused = vs
        .iter()
        .find(|v| v.cause != Cause::WorkerTimeout)
        .expect("a verdict for the failed connect");
    assert_eq!(
        refused
            .proxy_origin
            .as_ref()
            .and_then(|o| o.unit.as_deref()),
        Some("nginx.service"),
        "{refused:#?}"
    );
    // The listener's last owner (gunicorn 200) is the connect verdict's upstream: no origin
    // known for it (facts without a cgroup), so none is made up.
    assert_eq!(refused.upstream_pid, Some(200));
    assert_eq!(refused.upstream_origin, None);
    let text = render_human(v);
    assert!(
        text.contains("where: proxy in unit nginx.service; upstream pid 201 in container 4f3c2b1a0011 (containerd), pod 0b5e8a3c"),
        "{text}"
    );
}

#[test]
fn facts_cgroups_attribute_without_event_origins() {
    let mut es = timeout_stream();
    if let Body::Facts(f) = &mut es[1].body {
        for p in &mut f.processes {
            p.cgroup = format!("/system.slice/docker-{CID}.scope");
        }
    }
    let vs = run(&es);
    let v = only(&vs, Cause::WorkerTimeout);
    let up = v.upstream_origin.as_ref().expect("from the facts' cgroup");
    assert_eq!(up.container_runtime.as_deref(), Some("docker"));
    assert_eq!(
        up.unit.as_deref(),
        Some(format!("docker-{CID}.scope").as_str())
    );
}
