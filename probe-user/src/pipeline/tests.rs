//! The whole pipeline driven from a recorded file through the real sinks: the record file with
//! rotation, the JSON verdict printer, the Prometheus metrics. No root, no binary.
use std::path::{Path, PathBuf};

use super::{
    END_OF_INPUT, Pipeline, PipelineError, Sink, SourceError, Stop,
    replay::{Replay, ReplayError},
    sinks::{MetricsSink, RecordSink, TerminalSink, VerdictSink, WallClock, verdicts},
};
use crate::{
    engine::{Engine, EngineConfig, Life, Verdict, VerdictState, render_human},
    event::Event,
    metrics::{Metrics, MetricsConfig},
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// The fixture's events, parsed on their own (not through the pipeline).
fn events(path: &Path) -> Vec<Event> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn engine() -> Engine {
    Engine::new(EngineConfig::default())
}

/// The verdicts an engine fed directly gives at the last event.
fn direct_verdicts(evs: &[Event]) -> Vec<Verdict> {
    let mut e = engine();
    for ev in evs {
        e.feed(ev);
    }
    e.verdicts(evs.iter().map(|e| e.mono_ns).max().unwrap_or(0))
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// `FILE.keep` .. `FILE.1`, `FILE`: every line the record sink wrote, oldest first.
fn rotated_lines(p: &Path, keep: u32) -> Vec<String> {
    let mut out = Vec::new();
    for n in (1..=keep).rev() {
        out.extend(lines(Path::new(&format!("{}.{n}", p.display()))));
    }
    out.extend(lines(p));
    out
}

/// The sample value of a series in the Prometheus text.
fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.rsplit_once(' ').filter(|(s, _)| *s == series))
        .map(|(_, v)| v)
}

#[test]
fn a_recording_runs_through_every_sink() {
    let path = fixture("socket_permission.jsonl");
    let evs = events(&path);
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("events.jsonl");
    // Lines of 200-500 bytes and one facts line of ~1.5 kB: a 1 kB limit rotates several times,
    // and the facts line goes out whole in a file of its own.
    let limit = 1024;
    let keep = 20;
    let mut rec = RecordSink::append(&record, false, Some(limit), keep).unwrap();
    let mut json = VerdictSink::new(Vec::new(), Vec::new(), true, false);
    let mut metrics = MetricsSink::new(Metrics::new(MetricsConfig::default()));
    let stats = {
        let sinks: Vec<&mut dyn Sink> = vec![&mut metrics, &mut json, &mut rec];
        let mut p = Pipeline::new(Some(engine()), sinks);
        p.replay(&mut Replay::open(&path).unwrap()).unwrap()
    };
    assert_eq!(stats.stopped_by, END_OF_INPUT);
    assert_eq!(stats.by_kind.values().sum::<u64>(), evs.len() as u64);
    assert_eq!(stats.by_kind.get("connect_failed"), Some(&4));
    assert_eq!(stats.failures, 4);

    // Record file: every event once, in order, whole lines, rotated by size.
    let expected: Vec<String> = evs
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    assert_eq!(rotated_lines(&record, keep), expected);
    assert!(
        Path::new(&format!("{}.2", record.display())).exists(),
        "rotated at least twice"
    );
    for n in 1..=keep {
        let f = PathBuf::from(format!("{}.{n}", record.display()));
        if let Ok(m) = std::fs::metadata(&f) {
            assert!(
                m.len() <= limit || lines(&f).len() == 1,
                "{} is {} bytes",
                f.display(),
                m.len()
            );
        }
    }

    // JSON verdicts: the verdicts at the end, then the same ones with "final": true; the table
    // on the other stream.
    let (out, err) = json.into_inner();
    let out = String::from_utf8(out).unwrap();
    let printed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let direct = direct_verdicts(&evs);
    assert_eq!(direct.len(), 1, "{direct:#?}");
    // The run's one tick opened it: the first id, state open, in the stream and the summary.
    let mut tracked = direct[0].clone();
    tracked.life = Life {
        id: "v1".into(),
        state: Some(VerdictState::Open),
        superseded_by: None,
    };
    let mut v = serde_json::to_value(&tracked).unwrap();
    // Wall-clock times from the recording's own clocks: its first line was written at
    // 2026-11-25T20:33:20.000Z, mono_ns 5000 s; the failures ran from 5002.0 to 5003.1 s.
    v.as_object_mut().unwrap().extend([
        ("first_seen".to_owned(), "2026-11-25T20:33:22.000Z".into()),
        ("last_seen".to_owned(), "2026-11-25T20:33:23.100Z".into()),
    ]);
    let mut fin = v.clone();
    fin.as_object_mut()
        .unwrap()
        .insert("final".into(), serde_json::Value::Bool(true));
    assert_eq!(printed, [v, fin]);
    assert_eq!(printed[0]["cause"], "socket-permission");
    assert_eq!(printed[0]["count"], 3);
    assert_eq!(
        (&printed[1]["id"], &printed[1]["state"]),
        (&"v1".into(), &"open".into())
    );
    let err = String::from_utf8(err).unwrap();
    assert!(
        err.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("socket-permission") && l.contains("nginx[4100]")),
        "{err}"
    );

    // Metrics: the proxy's failures by target and errno (the non-proxy's bus connect is not a
    // target series), the verdict by cause.
    let text = metrics.metrics().encode().unwrap();
    assert_eq!(
        sample(
            &text,
            r#"gwtrace_connect_failures_total{proxy="nginx",target="unix:/run/gunicorn/app.sock",errno="EACCES"}"#
        ),
        Some("3"),
        "{text}"
    );
    assert!(!text.contains("unix:/run/user/1000/bus"), "{text}");
    assert_eq!(
        sample(&text, r#"gwtrace_verdicts{cause="socket-permission"}"#),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"gwtrace_events_total{kind="facts"}"#),
        Some("3"),
        "{text}"
    );
}

#[test]
fn a_paced_run_ticks_and_ends_with_its_source() {
    let path = fixture("socket_permission.jsonl");
    let evs = events(&path);
    let mut printer = VerdictSink::new(Vec::new(), Vec::new(), false, false);
    let stats = {
        let mut p = Pipeline::new(Some(engine()), vec![&mut printer]);
        let stop = Stop::new(None, false).unwrap();
        p.run(&mut Replay::open(&path).unwrap(), stop).unwrap()
    };
    assert_eq!(stats.stopped_by, END_OF_INPUT);
    assert_eq!(stats.by_kind.values().sum::<u64>(), evs.len() as u64);
    let (out, _) = printer.into_inner();
    let out = String::from_utf8(out).unwrap();
    // The first drain takes the whole (small) file and ticks: the verdict is printed once in
    // full, then the table (human form, on the same stream).
    let v = &direct_verdicts(&evs)[0];
    let table = out.find("CAUSE ").unwrap();
    // Times on the recording's wall clock (no ages: a replay), else the engine's text.
    let wall = WallClock::from_event(&evs[0]).unwrap();
    assert_eq!(
        &out[..table],
        format!("{}\n", wall.humanize(&render_human(v), 0))
    );
    assert!(!out.contains("t=500"), "{out}");
    assert!(
        out.contains(".000 to 2026-11-2"),
        "not today: with the date: {out}"
    );
    assert!(out.contains(".100 (for 1.1 s)\n"), "{out}");
    assert!(
        out[table..]
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("socket-permission")
    );
}

#[test]
fn without_an_engine_events_still_reach_the_sinks() {
    let path = fixture("socket_permission.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("r.jsonl");
    let mut rec = RecordSink::create(&record, false).unwrap();
    let mut p = Pipeline::new(None, vec![&mut rec]);
    p.replay(&mut Replay::open(&path).unwrap()).unwrap();
    drop(p);
    assert_eq!(lines(&record).len(), events(&path).len());
    // An existing file is never overwritten without force.
    let again = RecordSink::create(&record, false)
        .err()
        .unwrap()
        .to_string();
    assert!(again.contains("--force"), "{again}");
}

#[test]
fn replay_errors_name_the_line_and_stop_before_any_output() {
    let good = std::fs::read_to_string(fixture("socket_permission.jsonl")).unwrap();
    let first = good.lines().next().unwrap();
    let cases: [(&str, String, &str); 3] = [
        ("empty", String::new(), "empty: empty file"),
        (
            "cut",
            format!("{first}\n\n{}", &first[..40]),
            "cut:3: not a JSON line",
        ),
        (
            "new",
            first.replace("\"v\":1", "\"v\":99"),
            "new:1: schema version 99",
        ),
    ];
    for (name, text, want) in cases {
        let mut printer = VerdictSink::new(Vec::new(), Vec::new(), false, false);
        let result = {
            let mut p = Pipeline::new(Some(engine()), vec![&mut printer]);
            p.replay(&mut Replay::new(Path::new(name), text.as_bytes()))
        };
        let Err(PipelineError::Source(SourceError::Replay(e))) = result else {
            panic!("{name}: {result:?}");
        };
        assert!(e.is_usage());
        assert!(e.to_string().starts_with(want), "{name}: {e}");
        let (out, err) = printer.into_inner();
        assert!(
            out.is_empty() && err.is_empty(),
            "{name}: printed before the error"
        );
    }
    let missing = Replay::open(Path::new("/nonexistent/gwtrace.jsonl"))
        .err()
        .unwrap();
    assert!(matches!(missing, ReplayError::Open { .. }), "{missing}");
    assert!(
        missing
            .to_string()
            .starts_with("cannot open /nonexistent/gwtrace.jsonl: ")
    );
}

#[test]
fn the_human_sink_colours_what_the_engine_tags() {
    let v = &direct_verdicts(&events(&fixture("socket_permission.jsonl")))[0];
    let plain = render_human(v);
    assert_eq!(verdicts::render(v, false), plain);
    let colored = verdicts::render(v, true);
    let red = verdicts::style(crate::engine::Role::Failure);
    assert!(
        colored.starts_with(&format!("{red}502 socket-permission{red:#}")),
        "{colored:?}"
    );
    // Bold red, then a reset: the codes a terminal reads.
    assert!(
        colored.starts_with("\x1b[1m\x1b[31m502 socket-permission\x1b[0m"),
        "{colored:?}"
    );
    let fix = verdicts::style(crate::engine::Role::Fix);
    assert!(
        colored.contains(&format!("\n  {fix}fix:{fix:#} ")),
        "{colored:?}"
    );
    // Colour adds codes and nothing else.
    assert_eq!(anstream::adapter::strip_str(&colored).to_string(), plain);
    // A 504 is yellow.
    let mut t = v.clone();
    t.status = 504;
    let yellow = verdicts::style(crate::engine::Role::Timeout);
    assert!(
        verdicts::render(&t, true).starts_with(&format!("{yellow}504 socket-permission{yellow:#}"))
    );
}

/// A TCP app restart: gunicorn 200 (worker 201) on 127.0.0.1:8000 stopped by SIGTERM at 10 s,
/// nginx (100, worker 101) refused 5 times from 11 s, a new gunicorn 400 listening at 14 s.
#[expect(clippy::too_many_lines, reason = "one scenario's events, spelled out")]
fn restart_events() -> Vec<Event> {
    use crate::event::{Body, errno_name, signal_name};
    use crate::facts::{FactsUpdate, Listener, ProcInfo};
    const S: u64 = 1_000_000_000;
    let t0 = 1000 * S;
    let cmd = "gunicorn --bind 127.0.0.1:8000 app:app";
    let at = |t: u64, pid: u32, comm: &str, body: Body| {
        Event::of_task(String::new(), t, pid, comm, body)
    };
    let proc = |pid: u32, ppid: u32, comm: &str, cmdline: &str, uid: u32| ProcInfo {
        pid,
        ppid,
        comm: comm.into(),
        cmdline: cmdline.into(),
        uid,
        gid: uid,
        groups: vec![uid],
        cgroup: String::new(),
        start_ns: 0,
    };
    let listen = |target: &str, pid: u32, comm: &str| Listener {
        target: target.into(),
        pid: Some(pid),
        comm: Some(comm.into()),
        backlog: None,
        net_ns: None,
    };
    let exit = |t: u64, pid: u32| {
        at(
            t,
            pid,
            "gunicorn",
            Body::ProcessExit {
                exit_code: Some(0),
                signal: None,
                signal_name: None,
                core_dumped: false,
            },
        )
    };
    let mut es = vec![
        at(
            t0,
            0,
            "",
            Body::Facts(FactsUpdate {
                processes: vec![
                    proc(100, 1, "nginx", "nginx: master process", 0),
                    proc(101, 100, "nginx", "nginx: worker process", 33),
                    proc(200, 1, "gunicorn", cmd, 999),
                    proc(201, 200, "gunicorn", cmd, 999),
                ],
                listeners: Some(vec![
                    listen("0.0.0.0:80", 100, "nginx"),
                    listen("127.0.0.1:8000", 200, "gunicorn"),
                ]),
                ..FactsUpdate::default()
            }),
        ),
        at(
            t0 + 10 * S,
            1,
            "systemd",
            Body::Signal {
                signal: 15,
                signal_name: signal_name(15).into(),
                sender_pid: 1,
                target_pid: 200,
                target_comm: "gunicorn".into(),
                code: 0,
                result: 0,
            },
        ),
        exit(t0 + 10 * S + 300_000_000, 201),
        exit(t0 + 10 * S + 400_000_000, 200),
    ];
    for i in 0..5 {
        let mut e = at(
            t0 + 11 * S + i * 100_000_000,
            101,
            "nginx",
            Body::ConnectFailed {
                target: "127.0.0.1:8000".into(),
                errno: 111,
                errno_name: errno_name(111).into(),
                source: "syscall".into(),
                count: 1,
            },
        );
        e.uid = 33;
        e.gid = 33;
        es.push(e);
    }
    es.push(at(
        t0 + 13 * S,
        400,
        "gunicorn",
        Body::Exec {
            filename: "/usr/bin/gunicorn".into(),
            cmdline: Some(cmd.into()),
        },
    ));
    es.push(at(
        t0 + 14 * S,
        0,
        "",
        Body::Facts(FactsUpdate {
            processes: vec![proc(400, 1, "gunicorn", cmd, 999)],
            listeners: Some(vec![
                listen("0.0.0.0:80", 100, "nginx"),
                listen("127.0.0.1:8000", 400, "gunicorn"),
            ]),
            ..FactsUpdate::default()
        }),
    ));
    es
}

/// The JSON printer and the metrics fed tick by tick as [`Pipeline`] feeds them (the engine's
/// `advance` once a second): the stream says the first verdict was superseded and by which id,
/// ends with the standing verdict marked final with its state, and the active gauge follows.
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one stream, checked line by line against the schema and the lifecycle"
)]
fn the_stream_and_metrics_follow_the_verdict_lifecycle() {
    const S: u64 = 1_000_000_000;
    let evs = restart_events();
    let mut e = engine();
    // Booted at 2026-11-25T00:00:00Z: the lines carry first_seen/last_seen.
    let boot = i128::from(1_795_564_800_u64) * i128::from(S);
    let mut json = VerdictSink::new(Vec::new(), Vec::new(), true, false)
        .with_wall_clock(WallClock::with_zone(boot, jiff::tz::TimeZone::UTC, false));
    let mut metrics = MetricsSink::new(Metrics::new(MetricsConfig::default()));
    let active = |m: &MetricsSink, cause: &str| {
        let text = m.metrics().encode().unwrap();
        sample(
            &text,
            &format!("gwtrace_verdicts_active{{cause=\"{cause}\"}}"),
        )
        .map(str::to_owned)
    };
    let mut gauges = Vec::new();
    let mut rest = evs.as_slice();
    for now in (1001..=1020).map(|s| s * S) {
        let n = rest.iter().take_while(|x| x.mono_ns <= now).count();
        let (batch, later) = rest.split_at(n);
        rest = later;
        for ev in batch {
            e.feed(ev);
            json.event(ev).unwrap();
            metrics.event(ev).unwrap();
        }
        let a = e.advance(now);
        let tick = super::Tick {
            now_ns: now,
            verdicts: &a.verdicts,
            superseded: &a.superseded,
            engine: Some(&e),
            counters: None,
        };
        json.tick(&tick).unwrap();
        metrics.tick(&tick).unwrap();
        gauges.push((
            now / S,
            active(&metrics, "upstream-not-listening"),
            active(&metrics, "upstream-restarting"),
        ));
    }
    json.finish(&super::Stats::default()).unwrap();
    let (out, _) = json.into_inner();
    let printed: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Every line, the superseded and final ones included, is what docs/verdicts.schema.json says.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/verdicts.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    for line in &printed {
        let errors: Vec<String> = validator.iter_errors(line).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?} in {line:#}");
        let first = line["first_seen"].as_str().unwrap_or_default();
        assert!(first.starts_with("2026-11-25T00:"), "{line:#}");
        assert!(line["last_seen"].as_str().unwrap_or_default() >= first);
    }
    let mut bad = printed[0].clone();
    bad["first_seen"] = "t=1001.000s".into();
    assert!(!validator.is_valid(&bad), "first_seen is RFC 3339");
    let mut bad = printed[0].clone();
    bad["superseded_by"] = "v9".into();
    assert!(
        !validator.is_valid(&bad),
        "superseded_by only on superseded lines"
    );
    let first = &printed[0];
    assert_eq!(
        (&first["cause"], &first["state"]),
        (&"upstream-not-listening".into(), &"open".into()),
        "{printed:#?}"
    );
    let gone = printed
        .iter()
        .find(|v| v["state"] == "superseded")
        .expect("a superseded line");
    assert_eq!(gone["id"], first["id"]);
    let by = printed
        .iter()
        .find(|v| v["cause"] == "upstream-restarting")
        .expect("upstream-restarting");
    assert_eq!(gone["superseded_by"], by["id"]);
    let finals: Vec<&serde_json::Value> = printed.iter().filter(|v| v["final"] == true).collect();
    assert_eq!(finals.len(), 1, "{printed:#?}");
    assert_eq!(
        (&finals[0]["id"], &finals[0]["state"]),
        (&by["id"], &"resolved".into()),
        "quiet since 11.4 s and listened on again at 14 s: {printed:#?}"
    );
    // The refused verdict counts while it stands, never after it is superseded; the restart
    // counts until it is resolved.
    let at = |s: u64| gauges.iter().find(|g| g.0 == s).cloned().unwrap();
    assert_eq!(at(1012).1.as_deref(), Some("1"), "{gauges:?}");
    assert_eq!(at(1015).1.as_deref(), Some("0"), "{gauges:?}");
    assert_eq!(at(1015).2.as_deref(), Some("1"), "{gauges:?}");
    assert_eq!(at(1020).2.as_deref(), Some("0"), "{gauges:?}");
}

/// The terminal view over a restart (a verdict superseded mid-run) ends with what the plain log
/// told: every verdict that stood (the superseded one with its `~` line), the same table.
#[test]
fn the_terminal_view_loses_nothing_of_the_plain_log() {
    const S: u64 = 1_000_000_000;
    let evs = restart_events();
    let mut e = engine();
    let boot = i128::from(1_795_564_800_u64) * i128::from(S);
    let wall = || WallClock::with_zone(boot, jiff::tz::TimeZone::UTC, true);
    let mut plain = VerdictSink::new(Vec::new(), Vec::new(), false, false).with_wall_clock(wall());
    let printer = VerdictSink::new(Vec::new(), Vec::new(), false, false).with_wall_clock(wall());
    let mut view = TerminalSink::new(printer, crate::catalog::default_proxy_names(), false, false)
        .with_size(200, 50);
    let mut rest = evs.as_slice();
    for now in (1001..=1020).map(|s| s * S) {
        let n = rest.iter().take_while(|x| x.mono_ns <= now).count();
        let (batch, later) = rest.split_at(n);
        rest = later;
        for ev in batch {
            e.feed(ev);
            plain.event(ev).unwrap();
            view.event(ev).unwrap();
        }
        let a = e.advance(now);
        let tick = super::Tick {
            now_ns: now,
            verdicts: &a.verdicts,
            superseded: &a.superseded,
            engine: Some(&e),
            counters: None,
        };
        plain.tick(&tick).unwrap();
        view.tick(&tick).unwrap();
    }
    let stats = super::Stats::default();
    plain.finish(&stats).unwrap();
    view.finish(&stats).unwrap();
    let plain = String::from_utf8(plain.into_inner().0).unwrap();
    let out = String::from_utf8(view.out().clone()).unwrap();
    let (drawn, end) = out.rsplit_once("\x1b[J").unwrap();
    assert!(drawn.contains("gwtrace live: "), "{drawn}");
    assert!(
        !end.contains("gwtrace live: ") && !end.contains('\x1b'),
        "{end}"
    );
    // Each verdict by its head (status, cause, proxy, target), the superseded lines, the table.
    let heads = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with("50") || l.starts_with("  ~ "))
            .map(|l| l.split(": ").next().unwrap().to_owned())
            .collect()
    };
    assert!(
        plain.contains("  ~ upstream-not-listening"),
        "the fixture supersedes: {plain}"
    );
    assert_eq!(heads(end), heads(&plain), "{end}\n---\n{plain}");
    let table = |t: &str| t[t.find("CAUSE ").unwrap()..].to_owned();
    assert_eq!(table(end), table(&plain));
}
