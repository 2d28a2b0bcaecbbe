//! The live terminal view in a real terminal: gwtrace runs in a tmux pane (160x50) against nginx
//! in front of a unix socket nobody created, the test drives 502s and reads the screen with
//! `tmux capture-pane`: the view redraws in place (the cause's line once on screen, its count
//! growing), the status line says what is watched, a log line lands above the view rather than
//! tearing it, no escape sequence shows as text, and once gwtrace ends the full verdict and the
//! summary are printed. Needs root (eBPF) and tmux (installed by `cargo xtask setup`).
use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use gwtrace_lab::{
    Stack, gwtrace_bin,
    support::{require_root, unique},
};

/// A tmux server on a private socket (`tmux -L gwtrace-test-<pid>-<n>`), killed on drop: whatever
/// runs in its panes (gwtrace, here) ends with it.
struct Tmux {
    socket: String,
    /// The server's socket file (tmux leaves it behind; removed on drop).
    path: Option<std::path::PathBuf>,
}

impl Tmux {
    fn start(command: &str) -> Self {
        let mut me = Self {
            // `gwtrace-test-<pid>-<n>`: the tests of this binary may run at once.
            socket: unique("gwtrace-test"),
            path: None,
        };
        let out = me.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "50",
            "-s",
            "view",
            command,
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        let out = me.run(&["display-message", "-p", "#{socket_path}"]);
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        me.path = (!path.is_empty()).then(|| path.into());
        me
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux (cargo xtask setup installs it)")
    }

    /// The screen as text (`history`: the scrolled-off lines too).
    fn screen(&self, history: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", "view"];
        if history {
            args.extend(["-S", "-"]);
        }
        let out = self.run(&args);
        assert!(out.status.success(), "tmux capture-pane: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen satisfies `ok`; the last screen either way.
    fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen(true);
            if ok(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < limit,
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The lines of `screen` that contain every one of `needles`.
fn lines_with<'a>(screen: &'a str, needles: &[&str]) -> Vec<&'a str> {
    screen
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

/// The count (`N×`) on the view's cause line.
fn count_on(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_suffix('×').and_then(|n| n.parse().ok()))
        .unwrap_or_else(|| panic!("no count on {line:?}"))
}

/// Raw escape sequences or their remains printed as text (`ESC`, `[2A`, `[J`, `[0m`).
fn assert_no_escape_garbage(screen: &str) {
    assert!(!screen.contains('\x1b'), "raw ESC on screen:\n{screen}");
    for l in screen.lines() {
        let b = l.as_bytes();
        for (i, _) in l.match_indices('[') {
            let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            let end = b.get(i + 1 + digits).copied();
            let csi = matches!(end, Some(b'A' | b'J' | b'K' | b'm' | b'F'))
                && (digits > 0 || matches!(end, Some(b'J' | b'K' | b'm')));
            assert!(!csi, "escape sequence remains in {l:?}:\n{screen}");
        }
    }
}

/// nginx in front of a missing unix socket, and gwtrace (following only that nginx, with
/// `extra` flags) in a tmux pane that stays once it ends.
fn broken_stack_in_a_pane(tag: &str, extra: &str) -> (Stack, Tmux) {
    let mut stack = Stack::new(tag).expect("stack");
    stack.upstream = format!("unix:{}", stack.path("app.sock").display());
    stack.start_nginx().expect("nginx");
    let master = stack.nginx_pid.expect("nginx pid");
    let command = format!(
        "RUST_LOG=info {} {extra} --proxy {master}; echo gwtrace-exit=$?; sleep 120",
        gwtrace_bin!().display()
    );
    let tmux = Tmux::start(&command);
    tmux.wait_for("gwtrace to attach", Duration::from_secs(30), |s| {
        s.contains("gwtrace live: ")
    });
    (stack, tmux)
}

/// Ctrl-C in the terminal (SIGINT to the foreground process group) ends the view the same way:
/// cleared, then the full verdicts and the summary naming the signal.
#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn ctrl_c_ends_the_view_with_the_full_verdicts() {
    require_root("the terminal view test");
    let (stack, tmux) = broken_stack_in_a_pane("terminal-int", "--duration 60");
    let target = stack.upstream.clone();
    let statuses: Vec<Option<u16>> = (0..3)
        .map(|_| stack.get("/", Duration::from_secs(5)).status)
        .collect();
    tmux.wait_for("the cause in the view", Duration::from_secs(10), |s| {
        !lines_with(s, &["502 socket-missing", &target, "×"]).is_empty()
    });
    let out = tmux.run(&["send-keys", "-t", "view", "C-c"]);
    assert!(out.status.success(), "tmux send-keys: {out:?}");
    assert_final_print(&tmux, &target, "(SIGINT)");
    assert!(
        statuses.iter().all(|s| *s == Some(502)),
        "nginx answered {statuses:?}"
    );
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn the_live_view_redraws_in_place_and_ends_with_the_full_verdicts() {
    require_root("the terminal view test");
    // `RUST_LOG=info` makes gwtrace log while the view is up (the configuration reader, after
    // the reload below).
    let (stack, tmux) = broken_stack_in_a_pane("terminal", "--duration 14");
    let target = stack.upstream.clone();

    let get = |n: usize| -> Vec<Option<u16>> {
        (0..n)
            .map(|_| stack.get("/", Duration::from_secs(5)).status)
            .collect()
    };
    let mut statuses = get(3);
    tmux.wait_for("the cause in the view", Duration::from_secs(10), |s| {
        !lines_with(s, &["502 socket-missing", &target, "×"]).is_empty()
    });
    let first = tmux.screen(false);
    let cause = lines_with(&first, &["502 socket-missing", &target]);
    assert_eq!(cause.len(), 1, "the cause once on screen:\n{first}");
    let count1 = count_on(cause[0]);
    let status = lines_with(
        &first,
        &[
            "gwtrace live: last failure ",
            "events/s",
            "| watching ",
            "nginx ×",
        ],
    );
    assert_eq!(status.len(), 1, "one status line:\n{first}");
    assert_no_escape_garbage(&first);

    statuses.extend(get(5));
    tmux.wait_for("the count to grow", Duration::from_secs(10), |s| {
        lines_with(s, &["502 socket-missing", &target])
            .first()
            .is_some_and(|l| count_on(l) > count1)
    });
    let second = tmux.screen(false);
    let cause = lines_with(&second, &["502 socket-missing", &target]);
    assert_eq!(cause.len(), 1, "redrawn in place, not appended:\n{second}");
    assert!(count_on(cause[0]) > count1, "{first}\n---\n{second}");
    assert_eq!(
        lines_with(&second, &["gwtrace live: "]).len(),
        1,
        "{second}"
    );
    assert_no_escape_garbage(&second);

    statuses.extend(log_line_goes_above_the_view(&tmux, &stack));
    assert_final_print(&tmux, &target, "(duration reached)");

    // Ground truth: nginx answered 502 because the socket is missing.
    assert!(
        statuses.iter().all(|s| *s == Some(502)),
        "nginx answered {statuses:?}"
    );
    let log = stack.nginx_errors();
    assert!(
        log.iter()
            .any(|l| l.contains("(2: No such file or directory)") && l.contains(&target)),
        "error.log: {log:?}"
    );
}

/// Once gwtrace ends: the view cleared, the full verdict (evidence, fix), the summary table.
fn assert_final_print(tmux: &Tmux, target: &str, stopped_by: &str) {
    let end = tmux.wait_for("gwtrace to end", Duration::from_secs(30), |s| {
        s.contains("gwtrace-exit=")
    });
    assert!(end.contains("gwtrace-exit=0"), "{end}");
    assert_no_escape_garbage(&end);
    assert!(
        !end.contains("gwtrace live: "),
        "the view is cleared at the end:\n{end}"
    );
    let full = lines_with(&end, &["502 socket-missing proxy nginx[", target]);
    assert!(!full.is_empty(), "the full verdict at the end:\n{end}");
    assert!(end.contains("  evidence: "), "{end}");
    assert!(end.contains("  fix: "), "{end}");
    assert!(
        end.lines()
            .any(|l| l.starts_with("CAUSE ") && l.contains("TARGET")),
        "the summary table:\n{end}"
    );
    assert!(
        lines_with(&end, &["socket-missing", "502", target])
            .iter()
            .any(|l| !l.contains("proxy")),
        "its row in the table:\n{end}"
    );
    assert!(end.contains(stopped_by), "{end}");
}

/// A log line while the view is up (the configuration reader after a reload) goes above it;
/// the view stays whole below. The statuses of the requests sent meanwhile.
fn log_line_goes_above_the_view(tmux: &Tmux, stack: &Stack) -> Vec<Option<u16>> {
    let logged = |s: &str| {
        s.lines()
            .filter(|l| l.contains("upstream target(s) from"))
            .count()
    };
    let before = logged(&tmux.screen(true));
    stack.reload_nginx().expect("nginx -s reload");
    let statuses = (0..2)
        .map(|_| stack.get("/", Duration::from_secs(5)).status)
        .collect();
    tmux.wait_for("a log line above the view", Duration::from_secs(10), |s| {
        logged(s) > before && s.contains("gwtrace live: ")
    });
    let third = tmux.screen(false);
    let live: Vec<usize> = third
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("gwtrace live: "))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        live.len(),
        1,
        "one status line after the log line:\n{third}"
    );
    let screen: Vec<&str> = third.lines().collect();
    let last_log = screen
        .iter()
        .rposition(|l| l.contains("upstream target(s) from"))
        .expect("log line");
    assert!(last_log < live[0], "the log line above the view:\n{third}");
    assert_no_escape_garbage(&third);
    statuses
}
