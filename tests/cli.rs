//! Reliability and bad input, run like a user runs gwtrace: clean detach on every signal (and after
//! `kill -9`), nothing lost on SIGINT/SIGTERM/SIGHUP, two instances at once, and one clear line
//! with a documented exit code for every bad input. Kernel tests need root.
use std::{
    collections::BTreeSet,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use gwtrace_lab::{gwtrace_bin, support::require_root};

fn gwtrace() -> Command {
    Command::new(gwtrace_bin!())
}

/// A private temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("gwtrace-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Ids of the BPF programs and maps a process holds, from its fdinfo.
fn bpf_objects(pid: u32) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for e in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        for line in text.lines() {
            for key in ["prog_id:", "map_id:"] {
                if let Some(v) = line.strip_prefix(key) {
                    ids.insert(format!("{}{}", &key[..key.len() - 1], v.trim()));
                }
            }
        }
    }
    ids
}

/// Whether a program or map id (as from `bpf_objects`) still exists in the kernel.
fn bpf_object_exists(id: &str) -> bool {
    let (kind, num) = if let Some(n) = id.strip_prefix("prog_id") {
        ("prog", n)
    } else {
        ("map", &id[6..])
    };
    Command::new("bpftool")
        .args([kind, "show", "id", num])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `gwtrace record` into `out` and waits until it is attached.
fn start_recording(out: &Path) -> (Child, BTreeSet<String>) {
    let child = gwtrace()
        .args(["record", "--output"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gwtrace");
    let pid = child.id();
    let t0 = Instant::now();
    // Attached = it holds its programs (the ready line goes to stderr, read at the end).
    let mut objects = BTreeSet::new();
    while t0.elapsed() < Duration::from_secs(20) {
        objects = bpf_objects(pid);
        if objects.iter().filter(|o| o.starts_with("prog")).count() >= 9 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        objects.iter().filter(|o| o.starts_with("prog")).count() >= 9,
        "gwtrace never attached: {objects:?}"
    );
    (child, objects)
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: a child we started.
    unsafe { libc::kill(i32::try_from(child.id()).expect("pid"), sig) };
}

/// Provokes a few failed unix connects from a child process (events to record).
fn provoke_failures(dir: &TempDir) {
    let code = format!(
        "import socket\nfor i in range(5):\n  s=socket.socket(socket.AF_UNIX)\n  try: s.connect('{}')\n  except OSError: pass\n",
        dir.join("missing.sock").display()
    );
    let st = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(code)
        .status()
        .expect("python3");
    assert!(st.success());
}

fn stop_and_check(sig: i32, name: &str) {
    require_root(&format!("stopping gwtrace with {name}"));
    let dir = TempDir::new(name);
    let out = dir.join("events.jsonl");
    let (child, objects) = start_recording(&out);
    provoke_failures(&dir);
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, sig);
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name}: exit {:?}, stderr: {stderr}",
        output.status
    );
    assert!(
        stderr.contains(&format!("({name})")),
        "summary names the signal: {stderr}"
    );
    assert!(stderr.contains("lost events:"), "summary printed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Everything flushed: every line is complete JSON, and the provoked failures are there.
    let text = std::fs::read_to_string(&out).expect("record file");
    let mut failures = 0;
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}: {line}", i + 1));
        if v["kind"] == "connect_failed"
            && v["target"]
                .as_str()
                .is_some_and(|t| t.ends_with("missing.sock"))
        {
            // Identical failures fold into one line with a count (absent = 1).
            failures += v["count"].as_u64().unwrap_or(1);
        }
    }
    assert_eq!(
        failures, 5,
        "all 5 provoked failures recorded before {name}"
    );
    // Every program and map is gone.
    let left = wait_freed(&objects);
    assert!(left.is_empty(), "{name}: BPF objects left behind: {left:?}");
}

/// Waits (up to 5 s: the kernel frees maps from a workqueue) until none of `objects` exists;
/// returns those still there.
fn wait_freed(objects: &BTreeSet<String>) -> Vec<&String> {
    let t0 = Instant::now();
    loop {
        let left: Vec<&String> = objects.iter().filter(|o| bpf_object_exists(o)).collect();
        if left.is_empty() || t0.elapsed() > Duration::from_secs(5) {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn sigint_detaches_flushes_and_summarises() {
    stop_and_check(libc::SIGINT, "SIGINT");
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn sigterm_detaches_flushes_and_summarises() {
    stop_and_check(libc::SIGTERM, "SIGTERM");
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn sighup_detaches_flushes_and_summarises() {
    stop_and_check(libc::SIGHUP, "SIGHUP");
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn kill_9_leaves_nothing_attached() {
    require_root("kill_9_leaves_nothing_attached");
    let dir = TempDir::new("kill9");
    let (mut child, objects) = start_recording(&dir.join("events.jsonl"));
    signal(&child, libc::SIGKILL);
    let _ = child.wait();
    // The kernel frees programs and maps when their last fd closes.
    let left = wait_freed(&objects);
    assert!(left.is_empty(), "BPF objects left after kill -9: {left:?}");
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn two_instances_at_once_both_capture() {
    require_root("two_instances_at_once_both_capture");
    let dir = TempDir::new("two");
    let (a, _) = start_recording(&dir.join("a.jsonl"));
    let (b, _) = start_recording(&dir.join("b.jsonl"));
    provoke_failures(&dir);
    std::thread::sleep(Duration::from_millis(200));
    signal(&a, libc::SIGINT);
    signal(&b, libc::SIGINT);
    for (c, f) in [(a, "a.jsonl"), (b, "b.jsonl")] {
        assert!(c.wait_with_output().expect("wait").status.success());
        let text = std::fs::read_to_string(dir.join(f)).expect("file");
        let n: u64 = text
            .lines()
            .filter(|l| l.contains("missing.sock") && l.contains("connect_failed"))
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("JSON")["count"]
                    .as_u64()
                    .unwrap_or(1)
            })
            .sum();
        assert_eq!(n, 5, "{f} has all failures");
    }
}

fn run(args: &[&str]) -> Output {
    gwtrace().args(args).output().expect("run gwtrace")
}

/// One line on stderr, no panic or backtrace, the given exit code, and the hint in the text.
fn assert_clear_error(out: &Output, code: i32, hint: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert!(stderr.contains(hint), "stderr {stderr:?} lacks {hint:?}");
    let lines = stderr.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines <= 3, "a short error, got: {stderr}");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = run(&["--no-such-flag"]);
    assert_clear_error(&out, 2, "--no-such-flag");
}

/// Durations `std::time::Duration` cannot hold panicked once (negative, infinite, NaN): each is
/// one line saying what to give instead, before anything is attached (no root needed).
#[test]
fn bad_durations_say_what_to_give() {
    for args in [
        &["--duration", "abc"][..],
        &["--duration=-5"],
        &["--duration", "-5"],
        &["--duration", "inf"],
        &["--duration", "NaN"],
        &["--duration", "0"],
        &["record", "--duration", "1e12"],
        &["serve", "--duration", "-1"],
    ] {
        let out = run(args);
        assert_clear_error(&out, 2, "a number above 0 (e.g. --duration 30");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("leave --duration out"),
            "{args:?}"
        );
    }
}

#[test]
fn unknown_hooks_value_lists_the_choices() {
    assert_clear_error(
        &run(&["--hooks", "kprobe"]),
        2,
        "[possible values: full, sock]",
    );
}

/// A metrics address that is not IP:PORT says what to give, with an example.
#[test]
fn bad_metrics_address_says_what_to_give() {
    for addr in ["abc", "localhost:9464", "9464", "127.0.0.1"] {
        assert_clear_error(
            &run(&["serve", "--metrics", addr]),
            2,
            "give an IP address and a port, e.g. --metrics 127.0.0.1:9464",
        );
    }
}

#[test]
fn explain_of_a_directory_or_missing_file_says_what_to_give() {
    let dir = TempDir::new("explain-dir");
    let d = dir.0.to_string_lossy().into_owned();
    assert_clear_error(
        &run(&["explain", &d]),
        2,
        "is a directory; give a file written by `gwtrace record -o FILE`",
    );
    let missing = dir.join("nope.jsonl");
    assert_clear_error(
        &run(&["explain", &missing.to_string_lossy()]),
        2,
        "No such file or directory (os error 2); give a file written by `gwtrace record -o FILE`",
    );
}

/// `gwtrace explain FILE 2>&1 | head -1`: output and errors both go to a pipe that closes
/// early; gwtrace stops with its exit code, never a panic.
#[test]
fn a_closed_output_pipe_is_not_a_panic() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/socket_permission.jsonl");
    let (read, write) = std::io::pipe().expect("pipe");
    drop(read);
    let out = gwtrace()
        .arg("explain")
        .arg(&fixture)
        .stdout(write.try_clone().expect("dup"))
        .stderr(write)
        .status()
        .expect("run gwtrace");
    assert!(
        matches!(out.code(), Some(0 | 1)),
        "exit {out:?} (101 is a panic)"
    );
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn proxy_naming_nothing_is_a_usage_error() {
    require_root("proxy_naming_nothing_is_a_usage_error");
    assert_clear_error(
        &run(&["--proxy", "4000000", "--duration", "1"]),
        2,
        "no such process",
    );
    assert_clear_error(
        &run(&["--proxy", "no-such-proxy-xyz", "--duration", "1"]),
        2,
        "no running process",
    );
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn not_root_says_so() {
    require_root("not_root_says_so (setpriv drops to nobody)");
    // Drop to nobody for this one run.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(gwtrace_bin!())
        .args(["record", "--duration", "1"])
        .output()
        .expect("setpriv");
    assert_clear_error(&out, 3, "needs root");
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn output_paths_are_safe() {
    require_root("output_paths_are_safe");
    let dir = TempDir::new("out");
    // Exists: refused without --force.
    let existing = dir.join("exists.jsonl");
    std::fs::write(&existing, "keep me\n").expect("write");
    let out = run(&[
        "record",
        "--duration",
        "1",
        "--output",
        existing.to_str().expect("utf8"),
    ]);
    assert_clear_error(&out, 2, "--force");
    assert_eq!(
        std::fs::read_to_string(&existing).expect("read"),
        "keep me\n"
    );
    // A symlink is never followed, even with --force.
    let target = dir.join("target");
    std::fs::write(&target, "victim\n").expect("write");
    let link = dir.join("link.jsonl");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let out = run(&[
        "record",
        "--duration",
        "1",
        "--force",
        "--output",
        link.to_str().expect("utf8"),
    ]);
    assert_clear_error(&out, 2, "symlink");
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "victim\n");
    // Unwritable directory.
    let out = run(&[
        "record",
        "--duration",
        "1",
        "--output",
        "/proc/gwtrace-no/x.jsonl",
    ]);
    assert_clear_error(&out, 2, "cannot create");
    // A directory that does not exist: what to do about it.
    let out = run(&[
        "record",
        "--duration",
        "1",
        "--output",
        &dir.join("no-such-dir/x.jsonl").to_string_lossy(),
    ]);
    assert_clear_error(&out, 2, "its directory does not exist: create it");
    // A new file is private.
    let fresh = dir.join("fresh.jsonl");
    let out = run(&[
        "record",
        "--duration",
        "0.5",
        "--output",
        fresh.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(&fresh)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn explain_rejects_bad_files_with_line_numbers() {
    let dir = TempDir::new("explain");
    let missing = dir.join("nope.jsonl");
    assert_clear_error(
        &run(&["explain", missing.to_str().expect("utf8")]),
        2,
        "cannot open",
    );
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").expect("write");
    assert_clear_error(
        &run(&["explain", empty.to_str().expect("utf8")]),
        2,
        "empty",
    );
    let good = r#"{"v":1,"ts":"2026-11-25T19:47:19Z","mono_ns":1,"pid":1,"tid":1,"comm":"nginx","uid":33,"gid":33,"cgroup_id":1,"kind":"connect_failed","target":"unix:/run/app.sock","errno":2,"errno_name":"ENOENT","source":"syscall"}"#;
    let truncated = dir.join("truncated.jsonl");
    std::fs::write(&truncated, format!("{good}\n{}", &good[..good.len() / 2])).expect("write");
    assert_clear_error(
        &run(&["explain", truncated.to_str().expect("utf8")]),
        2,
        "truncated.jsonl:2",
    );
    let corrupted = dir.join("corrupted.jsonl");
    std::fs::write(&corrupted, format!("{good}\n{good}\n\u{0}\u{1}garbage\n")).expect("write");
    assert_clear_error(
        &run(&["explain", corrupted.to_str().expect("utf8")]),
        2,
        "corrupted.jsonl:3",
    );
    let future = dir.join("future.jsonl");
    std::fs::write(&future, good.replace("\"v\":1", "\"v\":99")).expect("write");
    assert_clear_error(
        &run(&["explain", future.to_str().expect("utf8")]),
        2,
        "upgrade gwtrace",
    );
    let wrong = dir.join("wrong.jsonl");
    std::fs::write(&wrong, "{\"v\":1,\"kind\":\"no_such_kind\"}\n").expect("write");
    assert_clear_error(
        &run(&["explain", wrong.to_str().expect("utf8")]),
        2,
        "wrong.jsonl:1",
    );
}

/// A big record file is streamed: memory stays flat however long the file is.
#[test]
fn explain_streams_big_files_in_constant_memory() {
    let dir = TempDir::new("big");
    let path = dir.join("big.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    // ~50 MB: failures from many distinct non-proxy processes and targets plus proxy failures.
    for i in 0..250_000u64 {
        let comm = if i % 3 == 0 { "nginx" } else { "python3" };
        writeln!(
            f,
            r#"{{"v":1,"ts":"2026-11-25T19:47:19Z","mono_ns":{},"pid":{},"tid":{},"comm":"{comm}","uid":33,"gid":33,"cgroup_id":1,"kind":"connect_failed","target":"unix:/run/app-{}.sock","errno":2,"errno_name":"ENOENT","source":"syscall"}}"#,
            1_000_000 + i * 1000,
            1000 + i % 50_000,
            1000 + i % 50_000,
            i % 100_000
        )
        .expect("write");
    }
    f.flush().expect("flush");
    drop(f);
    let out = Command::new("/usr/bin/time")
        .args(["-f", "maxrss_kb=%M"])
        .arg(gwtrace_bin!())
        .args(["explain", "--json"])
        .arg(&path)
        .output();
    let out = out.unwrap_or_else(|e| {
        panic!("running /usr/bin/time ({e}): install it with `cargo xtask setup` (package time)")
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rss: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kb="))
        .and_then(|v| v.trim().parse().ok())
        .expect("maxrss");
    assert!(
        rss < 128 * 1024,
        "explain used {rss} kB for a {} MB file",
        std::fs::metadata(&path).map_or(0, |m| m.len() >> 20)
    );
}

/// The recording of a real socket-permission run: `gwtrace explain` prints its verdict.
fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/socket_permission.jsonl")
        .to_string_lossy()
        .into_owned()
}

/// `gwtrace ARGS` with its stdout on a pseudo-terminal (util-linux `script`), `NO_COLOR` as
/// given; what the terminal received.
fn on_a_terminal(args: &[&str], no_color: Option<&str>) -> String {
    let mut line = gwtrace_bin!().to_string_lossy().into_owned();
    for a in args {
        line.push_str(" '");
        line.push_str(a);
        line.push('\'');
    }
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .env_remove("NO_COLOR");
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let out = cmd.output().expect("script(1) from util-linux");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("socket-permission"), "{text}");
    text
}

/// Colour only where asked for: `--color never` and `NO_COLOR` (any non-empty value) leave no
/// ESC byte in the output even on a terminal; `auto` colours a terminal, never a pipe;
/// `always` colours a pipe too; JSON never has colour.
#[test]
fn color_follows_the_flag_no_color_and_the_terminal() {
    let f = fixture();
    let esc = |s: &[u8]| s.contains(&0x1b);
    for args in [
        &["explain", &f][..],
        &["--color", "never", "explain", &f],
        &["explain", &f, "--color", "auto"],
        &["--color", "always", "explain", &f, "--json"],
    ] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(!esc(&out.stdout) && !esc(&out.stderr), "{args:?}: {out:?}");
    }
    let out = run(&["--color", "always", "explain", &f]);
    assert!(out.status.success(), "{out:?}");
    assert!(esc(&out.stdout), "--color always into a pipe: {out:?}");

    assert!(
        on_a_terminal(&["explain", &f], None).contains('\x1b'),
        "auto on a terminal colours"
    );
    assert!(
        on_a_terminal(&["explain", &f], Some("")).contains('\x1b'),
        "an empty NO_COLOR is no NO_COLOR"
    );
    for (args, no_color) in [
        (&["explain", &f][..], Some("1")),
        (&["explain", &f], Some("yes please")),
        (&["--color", "never", "explain", &f], None),
        (&["--color", "auto", "explain", &f, "--json"], None),
    ] {
        let text = on_a_terminal(args, no_color);
        assert!(
            !text.contains('\x1b'),
            "{args:?} NO_COLOR={no_color:?}: {text:?}"
        );
    }
    assert!(
        on_a_terminal(&["--color", "always", "explain", &f], Some("1")).contains('\x1b'),
        "--color always wins over NO_COLOR"
    );
    assert_clear_error(
        &run(&["--color", "sometimes", "explain", &f]),
        2,
        "[possible values: auto, always, never]",
    );
}
