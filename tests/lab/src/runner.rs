//! Running scenarios: gwtrace started against a stack like a user starts it, its output collected
//! with timestamps, each run scored, the matrix printed and written as JSON; and the demo.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    scenarios::{Scenario, scenarios},
    scoring::{LabResult, Run, score, table},
    stack::Stack,
};

/// gwtrace's stdout lines, timestamped as they arrive.
pub type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

pub fn start_gwtrace(
    bin: &Path,
    stack: &Stack,
    secs: u64,
    json: bool,
) -> anyhow::Result<(Child, Lines)> {
    let g = start(bin, stack, secs, json, true)?;
    Ok((g.child, g.stdout))
}

/// A running gwtrace and the threads reading its outputs.
struct Started {
    child: Child,
    stdout: Lines,
    /// Its stderr lines (kept when not echoed).
    stderr: Lines,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Started {
    /// Waits for gwtrace to end and for every line it wrote: (stdout, stderr).
    fn wait(mut self) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let st = self.child.wait()?;
        for r in self.readers {
            let _ = r.join();
        }
        anyhow::ensure!(st.success(), "gwtrace ended with {st}");
        let take = |l: &Lines| {
            l.lock()
                .map(|l| l.iter().map(|(_, s)| s.clone()).collect())
                .unwrap_or_default()
        };
        Ok((take(&self.stdout), take(&self.stderr)))
    }
}

/// Starts gwtrace against `stack` and waits for its ready line. Its stderr goes to the stack's
/// `gwtrace.stderr` and is either echoed as it comes (`echo`: the lab) or kept, to be printed
/// in its place (the demo).
fn start(bin: &Path, stack: &Stack, secs: u64, json: bool, echo: bool) -> anyhow::Result<Started> {
    let mut cmd = Command::new(bin);
    cmd.args(["--duration", &secs.to_string()]);
    if json {
        cmd.arg("--json");
    }
    if let Some(pid) = stack.nginx_pid {
        cmd.args(["--proxy", &pid.to_string()]);
    }
    // GWLAB_HOOKS=full|sock runs the lab in another mode than the default (`auto`), to compare.
    if let Some(hooks) = stack.hooks {
        cmd.args(["--hooks", hooks]);
    } else if let Some(hooks) = std::env::var_os("GWLAB_HOOKS") {
        cmd.arg("--hooks").arg(hooks);
    }
    // GWLAB_RECORD=DIR keeps each run's raw events (DIR/<scenario>.jsonl) for `gwtrace explain`.
    if let Some(file) = &stack.record {
        cmd.arg("--record").arg(file).arg("--force");
    } else if let Some(dir) = std::env::var_os("GWLAB_RECORD") {
        let file = Path::new(&dir).join(format!("{}.jsonl", stack.name));
        cmd.arg("--record").arg(file).arg("--force");
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting gwtrace")?;
    let lines: Lines = Arc::default();
    let out = child.stdout.take().context("gwtrace stdout")?;
    let l2 = Arc::clone(&lines);
    let out_reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(mut l) = l2.lock() {
                l.push((Instant::now(), line));
            }
        }
    });
    let err = child.stderr.take().context("gwtrace stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let log = stack.path("gwtrace.stderr");
    let kept: Lines = Arc::default();
    let k2 = Arc::clone(&kept);
    let err_reader = std::thread::spawn(move || {
        let mut f = std::fs::File::create(log).ok();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("tracing") {
                let _ = tx.send(());
            }
            if let Some(f) = f.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            if echo {
                eprintln!("    [gwtrace] {line}");
            } else if let Ok(mut k) = k2.lock() {
                k.push((Instant::now(), line));
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .context("gwtrace did not become ready")?;
    Ok(Started {
        child,
        stdout: lines,
        stderr: kept,
        readers: vec![out_reader, err_reader],
    })
}

/// Runs one scenario end to end and scores it.
pub fn run_one(bin: &Path, sc: &Scenario) -> anyhow::Result<LabResult> {
    run_one_then(bin, sc, |_, _| Ok(()))
}

/// [`run_one`], then `also` on the result while the scenario's stack still stands (its files
/// and processes are ground truth for checks beyond the cause: who owns the socket, who the
/// workers run as).
pub fn run_one_then(
    bin: &Path,
    sc: &Scenario,
    also: impl FnOnce(&Stack, &LabResult) -> anyhow::Result<()>,
) -> anyhow::Result<LabResult> {
    let mut stack = Stack::new(sc.name)?;
    (sc.build)(&mut stack).with_context(|| format!("building scenario {}", sc.name))?;
    stack.start_proxy()?;
    let (mut gw, lines) = start_gwtrace(bin, &stack, sc.secs, true)?;
    if let Some(f) = sc.fault {
        f(&mut stack)?;
    }
    let responses = (sc.drive)(&stack);
    // The other sites, whose apps are fine: they must still answer.
    let others: Vec<(String, Option<u16>)> = stack
        .sites
        .iter()
        .filter(|(_, t)| stack.innocent.contains(t))
        .map(|(prefix, _)| {
            (
                prefix.clone(),
                stack.get(prefix, Duration::from_secs(5)).status,
            )
        })
        .collect();
    let status = gw.wait().context("waiting for gwtrace")?;
    std::thread::sleep(Duration::from_millis(100));
    let lines = lines.lock().map(|l| l.clone()).unwrap_or_default();
    let r = score(
        sc,
        &Run {
            failed_exit: (!status.success()).then(|| status.to_string()),
            responses: &responses,
            nginx_errors: &stack.nginx_errors(),
            lines: &lines,
            upstream: &stack.upstream,
            nginx_pid: stack.nginx_pid,
            innocent: &stack.innocent,
            other_sites: &others,
        },
    );
    also(&stack, &r)?;
    Ok(r)
}

/// Runs the matrix (optionally filtered), prints the table and writes `out/lab.json`.
pub fn run_all(bin: &Path, filter: Option<&str>, out: &Path) -> anyhow::Result<Vec<LabResult>> {
    let mut results = Vec::new();
    for sc in scenarios()
        .iter()
        .filter(|s| filter.is_none_or(|f| s.name.contains(f)))
    {
        eprintln!("lab: {} — {}", sc.name, sc.about);
        let r = run_one(bin, sc).unwrap_or_else(|e| LabResult {
            name: sc.name.to_owned(),
            expect: sc.expect.map(str::to_owned),
            nginx_line: String::new(),
            statuses: Vec::new(),
            causes: Vec::new(),
            verdicts: Vec::new(),
            secs_to_verdict: None,
            secs_after_recovery: None,
            ok: false,
            why: format!("{e:#}"),
        });
        eprintln!(
            "lab: {} {}",
            sc.name,
            if r.ok {
                "OK".to_owned()
            } else {
                format!("FAIL: {}", r.why)
            }
        );
        results.push(r);
    }
    println!("{}", table(&results));
    std::fs::create_dir_all(out)?;
    let json: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "scenario": r.name, "expected": r.expect, "nginx_error": r.nginx_line,
                "statuses": r.statuses, "gwtrace_causes": r.causes, "verdicts": r.verdicts,
                "secs_to_verdict": r.secs_to_verdict,
                "secs_after_recovery": r.secs_after_recovery, "ok": r.ok, "why": r.why,
            })
        })
        .collect();
    std::fs::write(out.join("lab.json"), serde_json::to_string_pretty(&json)?)?;
    Ok(results)
}

/// `cargo xtask demo`: one broken stack, nginx's 502 next to gwtrace's explanation.
pub fn demo(bin: &Path, name: &str) -> anyhow::Result<()> {
    let all = scenarios();
    let sc = all
        .iter()
        .find(|s| s.name == name)
        .with_context(|| format!("no scenario {name} (cargo xtask lab --list)"))?;
    println!("demo: {} — {}", sc.name, sc.about);
    let mut stack = Stack::new(sc.name)?;
    (sc.build)(&mut stack)?;
    stack.start_proxy()?;
    println!(
        "demo: nginx on 127.0.0.1:{} proxies to {}",
        stack.port, stack.upstream
    );
    // gwtrace's output is kept and printed after the client's, in order: one clean screen.
    let gw = start(bin, &stack, sc.secs, false, false)?;
    println!(
        "demo: gwtrace is tracing for {} s while a client sends requests ...",
        sc.secs
    );
    if let Some(f) = sc.fault {
        f(&mut stack)?;
    }
    let responses = (sc.drive)(&stack);
    let (diagnosis, log) = gw.wait()?;
    println!("\n=== what the client saw ===");
    for r in &responses {
        println!(
            "GET -> {}",
            r.status
                .map_or_else(|| "no answer".to_owned(), |s| s.to_string())
        );
    }
    println!("\n=== nginx error.log ===");
    for l in stack.nginx_errors().iter().take(3) {
        println!("{l}");
    }
    println!("\n=== gwtrace's log (stderr) ===");
    for l in &log {
        println!("{l}");
    }
    println!("\n=== gwtrace's diagnosis (stdout) ===");
    for l in &diagnosis {
        println!("{l}");
    }
    Ok(())
}
