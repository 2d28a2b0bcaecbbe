//! The published JSON Schema of the event lines (docs/events.schema.json) against what gwtrace
//! emits: one event of every kind, built the way the capture builds them (decoded from the
//! kernel's wire struct, loss lines from the capture, facts with every member), and the recorded
//! fixture. A strict variant of the schema (no undeclared properties) proves the schema documents
//! every field gwtrace writes; the published one stays open, since readers must ignore fields they
//! do not know.
use std::path::PathBuf;

use gwtrace::{
    capture::loss_event,
    event::{Body, Clock, Decoder, Event},
    facts::{
        FactsUpdate, IdNames, Listener, MemcgInfo, MountNs, NetNs, Netstat, PathComponent,
        PathInfo, ProcInfo, ProcRoot, ProxyConfig,
    },
};
use probe_common::{
    AF_INET, AF_UNIX, CONN_PEER_RST, CONN_PEER_TASK, ConnEnd, KIND_ACCEPT_FAILED, KIND_CONN_END,
    KIND_CONNECT_FAILED, KIND_EXEC, KIND_EXEC_FAILED, KIND_OOM_KILL, KIND_PROCESS_EXIT,
    KIND_SIGNAL, RawEvent, SOURCE_SYSCALL, SOURCE_TCP_ABANDONED, SOURCE_TCP_STATE,
};
use serde_json::Value;

/// Every `kind` the schema version 1 defines.
const KINDS: [&str; 10] = [
    "connect_failed",
    "accept_failed",
    "process_exit",
    "signal",
    "oom_kill",
    "exec",
    "exec_failed",
    "conn_end",
    "loss",
    "facts",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn schema() -> Value {
    let text = std::fs::read_to_string(repo().join("docs/events.schema.json")).expect("schema");
    serde_json::from_str(&text).expect("the schema is JSON")
}

/// The schema with every object closed: the root (common fields plus the matching kind's) and
/// the nested objects of facts lines.
fn strict(mut s: Value) -> Value {
    fn close(v: &mut Value) {
        if let Some(o) = v.as_object_mut() {
            if o.contains_key("properties") {
                o.insert("additionalProperties".into(), Value::Bool(false));
            }
            for child in o.values_mut() {
                close(child);
            }
        } else if let Some(a) = v.as_array_mut() {
            a.iter_mut().for_each(close);
        }
    }
    s["unevaluatedProperties"] = Value::Bool(false);
    let defs = s["$defs"].as_object_mut().expect("$defs");
    for (name, def) in defs.iter_mut() {
        // The kind branches are evaluated together with the root's common properties: the root's
        // unevaluatedProperties closes them.
        if KINDS.contains(&name.as_str()) {
            for child in def.as_object_mut().expect("object").values_mut() {
                if let Some(props) = child.as_object_mut() {
                    for p in props.values_mut() {
                        close(p);
                    }
                }
            }
        } else {
            close(def);
        }
    }
    s
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .expect("the schema compiles")
}

fn errors(v: &jsonschema::Validator, line: &Value) -> Vec<String> {
    v.iter_errors(line)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn raw(kind: u32) -> RawEvent {
    // SAFETY: RawEvent is plain integers and byte arrays; all zeroes is a valid value.
    let mut r: RawEvent = unsafe { std::mem::zeroed() };
    r.kind = kind;
    r.ktime_ns = 5_000_000_000;
    r.pid = 4101;
    r.tid = 4101;
    r.uid = 33;
    r.gid = 33;
    r.cgroup_id = 1234;
    r.comm[..5].copy_from_slice(b"nginx");
    r
}

/// One wire record of every kernel kind (and of each connect source).
fn kernel_records() -> Vec<RawEvent> {
    let mut raws = Vec::new();

    let mut r = raw(KIND_CONNECT_FAILED);
    r.errno = 111;
    r.family = AF_INET;
    r.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    r.port = 8000;
    r.source = SOURCE_TCP_STATE;
    raws.push(r);
    let mut r = raw(KIND_CONNECT_FAILED);
    r.errno = 2;
    r.family = AF_UNIX;
    let path = b"/run/app/app.sock";
    r.data[..path.len()].copy_from_slice(path);
    r.data_len = u16::try_from(path.len()).expect("short");
    r.source = SOURCE_SYSCALL;
    raws.push(r);
    let mut r = raw(KIND_CONNECT_FAILED);
    r.errno = 110;
    r.family = AF_INET;
    r.source = SOURCE_TCP_ABANDONED;
    raws.push(r);
    let mut r = raw(KIND_ACCEPT_FAILED);
    r.errno = 24;
    raws.push(r);
    let mut r = raw(KIND_PROCESS_EXIT);
    r.exit_code = 3 << 8;
    raws.push(r);
    let mut r = raw(KIND_PROCESS_EXIT);
    r.exit_code = 0x80 | 0xb;
    raws.push(r);
    let mut r = raw(KIND_SIGNAL);
    r.sig = 6;
    r.target_pid = 5201;
    r.target_comm[..8].copy_from_slice(b"gunicorn");
    raws.push(r);
    let mut r = raw(KIND_OOM_KILL);
    r.target_pid = 5201;
    r.target_comm[..8].copy_from_slice(b"gunicorn");
    r.aux = [1_000_000, 500_000, 1_000, 0];
    raws.push(r);
    let mut r = raw(KIND_EXEC);
    let file = b"/usr/bin/gunicorn";
    r.data[..file.len()].copy_from_slice(file);
    r.data_len = u16::try_from(file.len()).expect("short");
    raws.push(r);
    let mut r = raw(KIND_EXEC_FAILED);
    r.errno = 2;
    let file = b"/srv/app/venv/bin/gunicorn";
    r.data[..file.len()].copy_from_slice(file);
    r.data_len = u16::try_from(file.len()).expect("short");
    raws.push(r);
    let mut r = raw(KIND_CONN_END);
    r.errno = 104;
    r.family = AF_INET;
    r.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    r.port = 8000;
    r.target_pid = 5201;
    r.target_comm[..8].copy_from_slice(b"gunicorn");
    let end = ConnEnd {
        established_ns: 1_000_000_000,
        last_send_ns: 4_000_000_000,
        prev_recv_ns: 2_000_000_000,
        last_recv_ns: 2_000_000_000,
        close_ns: 4_100_000_000,
        bytes_received: 91,
        bytes_acked: 282,
        requests: 2,
        flags: CONN_PEER_RST | CONN_PEER_TASK,
        peer_pid: 5201,
        peer_tid: 5202,
    };
    // SAFETY: `data` is larger than ConnEnd (asserted in probe-common), plain integers.
    unsafe { std::ptr::write_unaligned(r.data.as_mut_ptr().cast::<ConnEnd>(), end) };
    raws.push(r);

    raws
}

/// A facts update with every member filled.
fn full_facts() -> FactsUpdate {
    FactsUpdate {
        processes: vec![ProcInfo {
            pid: 4101,
            ppid: 4100,
            comm: "nginx".into(),
            cmdline: "nginx: worker process".into(),
            uid: 33,
            gid: 33,
            groups: vec![33],
            cgroup: "0::/system.slice/nginx.service".into(),
            start_ns: 1_400_000_000_000,
        }],
        listeners: Some(vec![
            Listener {
                target: "unix:/run/app/app.sock".into(),
                pid: Some(5200),
                comm: Some("gunicorn".into()),
                backlog: Some(0),
                net_ns: None,
            },
            Listener {
                target: "127.0.0.1:8000".into(),
                pid: Some(5300),
                comm: Some("gunicorn".into()),
                backlog: None,
                net_ns: Some(4_026_532_301),
            },
            Listener {
                target: "0.0.0.0:80".into(),
                pid: None,
                comm: None,
                backlog: None,
                net_ns: None,
            },
        ]),
        paths: vec![PathInfo {
            path: "/run/app/app.sock".into(),
            components: vec![
                PathComponent {
                    path: "/run/app".into(),
                    exists: true,
                    uid: 998,
                    gid: 998,
                    mode: 0o040_750,
                },
                PathComponent {
                    path: "/run/app/app.sock".into(),
                    exists: false,
                    uid: 0,
                    gid: 0,
                    mode: 0,
                },
            ],
        }],
        memcgs: vec![
            MemcgInfo {
                pid: 5201,
                cgroup: "/system.slice/app.service".into(),
                limit_bytes: Some(64 << 20),
            },
            MemcgInfo {
                pid: 5202,
                cgroup: "/".into(),
                limit_bytes: None,
            },
        ],
        netstat: Some(Netstat {
            listen_overflows: 1,
            listen_drops: 2,
        }),
        proxies: vec![4100, 4101],
        mount_ns: vec![MountNs {
            pid: 4101,
            mnt_ns: 4_026_531_841,
        }],
        proxy_configs: vec![ProxyConfig {
            pid: 4100,
            kind: "nginx".into(),
            source: "/usr/sbin/nginx -T -c /etc/nginx/nginx.conf".into(),
            targets: vec!["127.0.0.1:8000".into(), "unix:/run/app/app.sock".into()],
            partial: true,
        }],
        proc_net_ns: vec![NetNs {
            pid: 4101,
            net_ns: 4_026_532_301,
        }],
        roots: vec![ProcRoot {
            pid: 4101,
            root: "/var/lib/haproxy".into(),
        }],
        names: vec![IdNames::from_files(
            4101,
            "www-data:x:33:33::/var/www:/usr/sbin/nologin\ngwapp:x:998:998::/srv:/bin/false\n",
            "www-data:x:33:\ngwapp:x:998:\n",
            &[33, 998],
            &[33, 998],
        )],
        read_ns: Some(7_100_000_000),
    }
}

/// One event of every kind, built the way gwtrace builds them.
fn every_kind() -> Vec<Event> {
    let clock = Clock::now();
    let raws = kernel_records();
    let mut events: Vec<Event> = raws
        .iter()
        .map(|r| Decoder::from_raw(r, &clock).expect("decodes"))
        .collect();
    // The enricher fills an exec's command line from /proc.
    let mut with_cmdline = events
        .iter()
        .find(|e| e.kind() == "exec")
        .expect("exec")
        .clone();
    if let Body::Exec { cmdline, .. } = &mut with_cmdline.body {
        *cmdline = Some("gunicorn --bind unix:/run/app/app.sock app:app".into());
    }
    events.push(with_cmdline);
    // A folded storm: one line standing for many identical failures.
    let mut folded = events
        .iter()
        .find(|e| e.kind() == "connect_failed")
        .expect("connect_failed")
        .clone();
    if let Body::ConnectFailed { count, .. } = &mut folded.body {
        *count = 4711;
    }
    events.push(folded);
    // A proxy in a network namespace of its own: its events name it.
    let mut in_netns = events
        .iter()
        .find(|e| e.kind() == "connect_failed")
        .expect("connect_failed")
        .clone();
    in_netns.net_ns = Some(4_026_532_301);
    events.push(in_netns);
    // The live session attributes each event to its cgroup, unit, container and pod.
    let id = "4f3c2b1a00112233445566778899aabbccddeeff00112233445566778899aabb";
    for path in [
        "/system.slice/nginx.service".to_owned(),
        format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b5e8a3c_1d2e_4f60_8a9b_0c1d2e3f4a5b.slice/cri-containerd-{id}.scope"
        ),
        "/".to_owned(),
    ] {
        let mut e = events[0].clone();
        e.origin = Some(std::sync::Arc::new(gwtrace::origin::Origin::from_path(
            &path,
        )));
        events.push(e);
    }
    for reason in [
        "ringbuf_full",
        "map_full",
        "tcp_owner_unknown",
        "user_read_failed",
        "context_read_failed",
        "kernel_read_failed",
        "scratch_missing",
        "syscall_entry_missing",
        "tracepoint_recursion",
    ] {
        events.push(loss_event(&clock, 6_000_000_000, reason, 3));
    }
    let facts = full_facts();
    for up in [facts, FactsUpdate::default()] {
        events.push(Event::facts(
            clock.rfc3339(7_000_000_000),
            7_000_000_000,
            up,
        ));
    }
    events
}

#[test]
fn every_emitted_kind_validates_against_the_published_schema() {
    let open = validator(&schema());
    let strict = validator(&strict(schema()));
    let events = every_kind();
    let mut kinds: Vec<&str> = events.iter().map(Event::kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut all = KINDS.to_vec();
    all.sort_unstable();
    assert_eq!(kinds, all, "one event of every kind");
    for ev in &events {
        let line = serde_json::to_value(ev).expect("serialises");
        let e = errors(&open, &line);
        assert!(e.is_empty(), "{line}\n{e:#?}");
        let e = errors(&strict, &line);
        assert!(e.is_empty(), "undocumented field in {line}\n{e:#?}");
    }
}

#[test]
fn recorded_fixture_lines_validate() {
    let open = validator(&schema());
    let strict = validator(&strict(schema()));
    let fixtures = repo().join("tests/fixtures");
    let mut n = 0;
    for entry in std::fs::read_dir(&fixtures).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("fixture");
        for (i, l) in text.lines().enumerate() {
            let line: Value = serde_json::from_str(l).expect("JSON line");
            for (name, v) in [("schema", &open), ("strict schema", &strict)] {
                let e = errors(v, &line);
                assert!(
                    e.is_empty(),
                    "{}:{} against the {name}: {e:#?}",
                    path.display(),
                    i + 1
                );
            }
            n += 1;
        }
    }
    assert!(n > 0, "no fixture lines in {}", fixtures.display());
}

#[test]
fn schema_rejects_what_gwtrace_never_writes() {
    let open = validator(&schema());
    let strict = validator(&strict(schema()));
    let ok = serde_json::to_value(&every_kind()[0]).expect("serialises");
    assert!(open.is_valid(&ok));
    let mutate = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut v = ok.clone();
        f(v.as_object_mut().expect("object"));
        v
    };
    let bad = [
        ("missing target", mutate(&|o| drop(o.remove("target")))),
        (
            "unknown kind",
            mutate(&|o| drop(o.insert("kind".into(), "nope".into()))),
        ),
        (
            "newer version",
            mutate(&|o| drop(o.insert("v".into(), 2.into()))),
        ),
        (
            "negative pid",
            mutate(&|o| drop(o.insert("pid".into(), (-1).into()))),
        ),
        (
            "bad timestamp",
            mutate(&|o| drop(o.insert("ts".into(), "yesterday".into()))),
        ),
        (
            "bad source",
            mutate(&|o| drop(o.insert("source".into(), "guess".into()))),
        ),
    ];
    for (what, line) in &bad {
        assert!(!open.is_valid(line), "{what}: accepted {line}");
    }
    // Readers ignore unknown fields: the published schema accepts them, the strict one does not.
    let extra = mutate(&|o| drop(o.insert("container_id".into(), "abc".into())));
    assert!(open.is_valid(&extra));
    assert!(!strict.is_valid(&extra));
}
