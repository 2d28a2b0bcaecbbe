//! The collector example that can run here: rsyslog (Debian's, installed by `cargo xtask setup`)
//! with packaging/collectors/rsyslog-gwtrace.conf tails an event file the way
//! `gwtrace serve --record FILE --rotate-mb N` writes it (lines appended, the file renamed to
//! FILE.1 and started again), parses every line as JSON, drops lines of a newer schema version,
//! and writes the fields the config names. Lines are produced by gwtrace's own serialiser.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use gwtrace::{
    event::{Body, Event},
    facts::{FactsUpdate, ProcInfo},
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// rsyslogd, ended by its pid when the test ends.
struct Rsyslogd(Child);

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn event(mono_ns: u64, pid: u32, comm: &str, body: Body) -> Event {
    let ts = format!("2026-11-25T20:00:{:02}Z", mono_ns % 60);
    let mut e = Event::of_task(ts, mono_ns, pid, comm, body);
    (e.uid, e.gid, e.cgroup_id) = (33, 33, 1);
    e
}

fn refused(mono_ns: u64, target: &str) -> Event {
    event(
        mono_ns,
        4101,
        "nginx",
        Body::ConnectFailed {
            target: target.into(),
            errno: 111,
            errno_name: "ECONNREFUSED".into(),
            source: "tcp_state".into(),
            count: 1,
        },
    )
}

fn append(path: &Path, events: &[Event]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("event file");
    for e in events {
        serde_json::to_writer(&mut f, e).expect("serialises");
        f.write_all(b"\n").expect("writes");
    }
}

fn wait_for_lines(out: &Path, n: usize, log: &Path) -> Vec<String> {
    let t0 = Instant::now();
    loop {
        let lines: Vec<String> = std::fs::read_to_string(out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "rsyslog wrote {} of {n} lines: {lines:#?}\nrsyslogd output: {}",
            lines.len(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn rsyslog_ingests_the_event_file_across_rotation() {
    assert!(
        Path::new("/usr/sbin/rsyslogd").exists(),
        "rsyslogd is not installed: run `cargo xtask setup`"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir_all(d.join("work")).expect("work dir");
    let shipped = std::fs::read_to_string(repo().join("packaging/collectors/rsyslog-gwtrace.conf"))
        .expect("the shipped config");
    let conf = format!(
        "global(maxMessageSize=\"4m\" workDirectory=\"{work}\")\n{body}",
        work = d.join("work").display(),
        body = shipped.replace("/var/log/gwtrace/", &format!("{}/", d.display()))
    );
    std::fs::write(d.join("rsyslog.conf"), conf).expect("config");
    let events = d.join("events.jsonl");
    let out = d.join("events.txt");
    let log = d.join("rsyslogd.log");

    // Before rsyslog starts: read from the top (freshStartTail off). A facts line far longer
    // than rsyslog's default message size, a line of a newer schema (dropped).
    let big = FactsUpdate {
        processes: (0..400)
            .map(|pid| ProcInfo {
                pid,
                ppid: 1,
                comm: "gunicorn".into(),
                cmdline: "/srv/app/venv/bin/python3 /srv/app/venv/bin/gunicorn --bind unix:/run/app.sock app:app".into(),
                ..ProcInfo::default()
            })
            .collect(),
        ..FactsUpdate::default()
    };
    let mut newer = refused(2, "127.0.0.1:1");
    newer.v = 2;
    append(
        &events,
        &[
            refused(1, "127.0.0.1:8000"),
            event(2, 0, "", Body::Facts(big)),
            newer,
        ],
    );
    let line_len = std::fs::metadata(&events).expect("meta").len();
    assert!(line_len > 8192 * 2, "the facts line is long: {line_len}");

    let rsyslogd = Rsyslogd(
        Command::new("/usr/sbin/rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(d.join("rsyslogd.err")).expect("log"))
            .spawn()
            .expect("starting rsyslogd"),
    );
    let lines = wait_for_lines(&out, 2, &log);
    assert!(
        lines[0].contains("connect_failed nginx[4101] target=127.0.0.1:8000 errno=ECONNREFUSED"),
        "{lines:#?}"
    );
    assert!(lines[1].contains(" facts [0]"), "{lines:#?}");

    // More lines, then a rotation as gwtrace does it (rename, start a new file).
    append(&events, &[refused(3, "127.0.0.1:8001")]);
    wait_for_lines(&out, 3, &log);
    std::fs::rename(&events, d.join("events.jsonl.1")).expect("rotate");
    append(
        &events,
        &[
            refused(4, "unix:/run/app.sock"),
            event(
                5,
                5201,
                "gunicorn",
                Body::ProcessExit {
                    exit_code: None,
                    signal: Some(9),
                    signal_name: Some("SIGKILL".into()),
                    core_dumped: false,
                },
            ),
        ],
    );
    let lines = wait_for_lines(&out, 5, &log);
    drop(rsyslogd);
    assert!(lines[2].contains("target=127.0.0.1:8001"), "{lines:#?}");
    assert!(lines[3].contains("target=unix:/run/app.sock"), "{lines:#?}");
    assert!(
        lines[4].contains("process_exit gunicorn[5201]") && lines[4].contains("signal=SIGKILL"),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("127.0.0.1:1 ")),
        "the v2 line was dropped: {lines:#?}"
    );
}
