//! Scoring a run against the ground truth: gwtrace's verdict lines read back, compared with the
//! cause the scenario expects, nginx's own error.log and the statuses it answered.
use std::{fmt::Write as _, time::Instant};

use crate::{http::Response, scenarios::Scenario};

/// What a scenario run produced.
#[derive(Debug)]
pub struct LabResult {
    pub name: String,
    pub expect: Option<String>,
    pub nginx_line: String,
    pub statuses: Vec<Option<u16>>,
    /// Causes gwtrace named (deduplicated, in order of appearance).
    pub causes: Vec<String>,
    /// Verdict JSON objects (last version of each).
    pub verdicts: Vec<serde_json::Value>,
    pub secs_to_verdict: Option<f64>,
    /// When nginx answered well again for good (every answer after its first good one after
    /// the last 5xx) before the verdict (a restart's cause is only known once the new instance
    /// serves): seconds from that first good answer to the verdict.
    pub secs_after_recovery: Option<f64>,
    pub ok: bool,
    pub why: String,
}

/// gwtrace's JSON verdict lines about the stack's nginx (`proxy`, its master): the causes named
/// (in order of appearance), the last version of each (cause, target), and when the expected
/// cause first appeared; of a run that ended well, only its final answer. Verdicts about other
/// proxies on the host (another test's nginx) are not the scenario's.
fn read_verdicts(
    lines: &[(Instant, String)],
    expect: Option<&str>,
    ended_well: bool,
    proxy: Option<u32>,
) -> (Vec<String>, Vec<serde_json::Value>, Option<Instant>) {
    let mut causes: Vec<String> = Vec::new();
    let mut verdicts: Vec<serde_json::Value> = Vec::new();
    let mut first_verdict_at = None;
    for (at, line) in lines {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let about = v.get("proxy_pid").and_then(serde_json::Value::as_u64);
        if let (Some(ours), Some(pid)) = (proxy, about)
            && pid != 0
            && pid != u64::from(ours)
        {
            eprintln!("    [lab] not about this stack's nginx (pid {ours}), ignored: {line}");
            continue;
        }
        let Some(cause) = v.get("cause").and_then(|c| c.as_str()).map(str::to_owned) else {
            continue;
        };
        if Some(cause.as_str()) == expect && first_verdict_at.is_none() {
            first_verdict_at = Some(*at);
        }
        if !causes.contains(&cause) {
            causes.push(cause.clone());
        }
        verdicts.retain(|o| o.get("cause") != v.get("cause") || o.get("target") != v.get("target"));
        verdicts.push(v);
    }
    // gwtrace repeats the verdicts still standing at the end with "final": true: those are its
    // answer (a cause it replaced while evidence accumulated is not).
    let finals: Vec<serde_json::Value> = verdicts
        .iter()
        .filter(|v| v.get("final").is_some())
        .cloned()
        .collect();
    if !finals.is_empty() || ended_well {
        causes.retain(|c| {
            finals
                .iter()
                .any(|v| v.get("cause").and_then(|x| x.as_str()) == Some(c.as_str()))
        });
        verdicts = finals;
    }
    (causes, verdicts, first_verdict_at)
}

/// Every JSON verdict line of the run about this stack's nginx (or no proxy), in order.
fn about_this_nginx(lines: &[(Instant, String)], proxy: Option<u32>) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|(_, l)| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("cause").is_some())
        .filter(|v| {
            let about = v.get("proxy_pid").and_then(serde_json::Value::as_u64);
            !matches!((proxy, about), (Some(ours), Some(pid)) if pid != 0 && pid != u64::from(ours))
        })
        .collect()
}

/// The lab table: scenario, nginx's error, expected cause, gwtrace's causes, seconds, OK.
#[must_use]
pub fn table(results: &[LabResult]) -> String {
    let mut t = format!(
        "{:<24} {:<44} {:<20} {:<28} {:>6} {:>9}  {}\n",
        "SCENARIO", "NGINX ERROR.LOG", "EXPECTED", "GWTRACE", "SECS", "AFTER OK", "OK"
    );
    for r in results {
        let nginx = r
            .nginx_line
            .split("] ")
            .last()
            .unwrap_or("")
            .chars()
            .take(44)
            .collect::<String>();
        let _ = writeln!(
            t,
            "{:<24} {:<44} {:<20} {:<28} {:>6} {:>9}  {}",
            r.name,
            nginx,
            r.expect.as_deref().unwrap_or("(none)"),
            if r.causes.is_empty() {
                "(none)".to_owned()
            } else {
                r.causes.join(",")
            },
            r.secs_to_verdict
                .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}")),
            r.secs_after_recovery
                .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}")),
            if r.ok { "OK" } else { "FAIL" }
        );
    }
    t
}

/// What one run left to score: gwtrace's exit, the answers the client got, nginx's error.log
/// lines about upstreams, gwtrace's stdout lines, and which upstream and nginx the stack had.
pub struct Run<'a> {
    /// gwtrace's exit status when it was not success.
    pub failed_exit: Option<String>,
    pub responses: &'a [Response],
    pub nginx_errors: &'a [String],
    pub lines: &'a [(Instant, String)],
    /// nginx's `proxy_pass` target as gwtrace prints it.
    pub upstream: &'a str,
    pub nginx_pid: Option<u32>,
    /// Other apps' targets: no verdict may blame them (its target) or point at them (its
    /// summary, evidence or fix).
    pub innocent: &'a [String],
    /// What the other sites (in front of those apps) answered: (location, status).
    pub other_sites: &'a [(String, Option<u16>)],
}

/// Why a verdict blames or points at another app's target, if it does.
fn accuses(v: &serde_json::Value, innocent: &[String]) -> Option<String> {
    let text = |k: &str| v.get(k).map(ToString::to_string).unwrap_or_default();
    let said = [text("summary"), text("evidence"), text("fix")].join(" ");
    innocent.iter().find_map(|t| {
        let bare = t.strip_prefix("unix:").unwrap_or(t);
        if v.get("target").and_then(|x| x.as_str()) == Some(t.as_str()) {
            Some(format!("a verdict blames the other app's {t}"))
        } else if said.contains(bare) {
            Some(format!("a verdict points at the other app's {t}: {said}"))
        } else {
            None
        }
    })
}

/// The line of nginx's error.log the scenario expects (or none, when it expects no upstream
/// error), with what is wrong about the log added to `why`.
fn nginx_line(sc: &Scenario, run: &Run<'_>, why: &mut Vec<String>) -> String {
    if sc.nginx_log.is_empty() {
        if !run.nginx_errors.is_empty() {
            why.push(format!(
                "nginx logged upstream errors: {:?}",
                run.nginx_errors.first()
            ));
        }
        String::new()
    } else if let Some(l) = run.nginx_errors.iter().find(|l| l.contains(sc.nginx_log)) {
        l.clone()
    } else {
        why.push(format!(
            "nginx's error.log lacks {:?} (has {:?})",
            sc.nginx_log,
            run.nginx_errors.first()
        ));
        String::new()
    }
}

/// Scores a run against the scenario's ground truth: the expected cause and no other, nginx's
/// status and error.log line, and (for connect causes) the verdict's target being the upstream.
#[must_use]
pub fn score(sc: &Scenario, run: &Run<'_>) -> LabResult {
    let (causes, verdicts, first_verdict_at) = read_verdicts(
        run.lines,
        sc.expect,
        run.failed_exit.is_none(),
        run.nginx_pid,
    );
    let first_bad = run
        .responses
        .iter()
        .find(|r| r.status.is_some_and(|s| s >= 500))
        .map(|r| r.at);
    let secs_to_verdict = match (first_bad, first_verdict_at) {
        (Some(b), Some(v)) => Some(v.saturating_duration_since(b).as_secs_f64()),
        _ => None,
    };
    // Recovered for good: the first good answer after the last 5xx (none while another site's
    // answers stay interleaved with the failing one's).
    let last_bad = run
        .responses
        .iter()
        .rposition(|r| r.status.is_some_and(|s| s >= 500));
    let recovered = last_bad.and_then(|i| {
        run.responses[i + 1..]
            .iter()
            .find(|r| r.status.is_some_and(|s| s < 500))
            .map(|r| r.at)
    });
    let secs_after_recovery = match (recovered, first_verdict_at) {
        (Some(ok), Some(v)) if ok <= v => Some(v.duration_since(ok).as_secs_f64()),
        _ => None,
    };
    let statuses: Vec<Option<u16>> = run.responses.iter().map(|r| r.status).collect();
    let mut why = Vec::new();
    if let Some(exit) = &run.failed_exit {
        why.push(format!("gwtrace exited {exit}"));
    }
    if !statuses.contains(&Some(sc.status)) {
        why.push(format!(
            "nginx never answered {} (got {statuses:?})",
            sc.status
        ));
    }
    let nginx_line = nginx_line(sc, run, &mut why);
    for v in &verdicts {
        why.extend(accuses(v, run.innocent));
    }
    for (site, status) in run.other_sites {
        if *status != Some(200) {
            why.push(format!(
                "the other site {site} answered {status:?}, not 200"
            ));
        }
    }
    match sc.expect {
        Some(cause) => {
            if !causes.iter().any(|c| c == cause) {
                why.push(format!("expected verdict {cause}, got {causes:?}"));
            }
            if let Some(other) = causes.iter().find(|c| *c != cause) {
                why.push(format!("false verdict {other}"));
            }
            let connect_cause = !matches!(
                cause,
                "worker-timeout" | "worker-oom-killed" | "worker-crashed" | "crash-on-boot"
            );
            if connect_cause
                && let Some(v) = verdicts
                    .iter()
                    .find(|v| v.get("cause").and_then(|c| c.as_str()) == Some(cause))
                && v.get("target").and_then(|t| t.as_str()) != Some(run.upstream)
            {
                why.push(format!(
                    "verdict target {:?} is not nginx's upstream {}",
                    v.get("target"),
                    run.upstream
                ));
            }
        }
        None => {
            if !causes.is_empty() {
                why.push(format!("expected no verdict, got {causes:?}"));
            }
        }
    }
    if let Some(check) = sc.check
        && let Err(e) = check(&about_this_nginx(run.lines, run.nginx_pid), run.upstream)
    {
        why.push(e);
    }
    LabResult {
        name: sc.name.to_owned(),
        expect: sc.expect.map(str::to_owned),
        nginx_line,
        statuses,
        causes,
        verdicts,
        secs_to_verdict,
        secs_after_recovery,
        ok: why.is_empty(),
        why: why.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Run, score};
    use crate::{http::Response, scenarios::scenarios};

    const UPSTREAM: &str = "127.0.0.1:8000";
    const NGINX_LOG: &str = "2026/11/25 19:47:19 [error] 7#7: *1 connect() failed (111: Connection refused) while connecting to upstream";

    fn verdict(cause: &str, target: &str, proxy: u32, last: bool) -> String {
        let fin = if last { r#","final":true"# } else { "" };
        format!(r#"{{"cause":"{cause}","target":"{target}","proxy_pid":{proxy}{fin}}}"#)
    }

    /// Scores the tcp-refused scenario: one 502 answer, nginx's refused line, these stdout lines.
    fn scored(lines: &[String]) -> crate::LabResult {
        scored_with(&[(502, 0)], lines)
    }

    /// As [`scored`], with these (status, ms after the first answer) answers; the lines arrive
    /// 300 ms after the first answer.
    fn scored_with(answers: &[(u16, u64)], lines: &[String]) -> crate::LabResult {
        let all = scenarios();
        let sc = all
            .iter()
            .find(|s| s.name == "tcp-refused")
            .expect("scenario");
        let t0 = Instant::now();
        let responses: Vec<Response> = answers
            .iter()
            .map(|&(status, ms)| Response {
                status: Some(status),
                at: t0 + Duration::from_millis(ms),
            })
            .collect();
        let lines: Vec<(Instant, String)> = lines
            .iter()
            .map(|l| (t0 + Duration::from_millis(300), l.clone()))
            .collect();
        score(
            sc,
            &Run {
                failed_exit: None,
                responses: &responses,
                nginx_errors: &[NGINX_LOG.to_owned()],
                lines: &lines,
                upstream: UPSTREAM,
                nginx_pid: Some(7),
                innocent: &["127.0.0.1:8001".to_owned()],
                other_sites: &[("/b/".to_owned(), Some(200))],
            },
        )
    }

    #[test]
    fn the_expected_final_verdict_on_the_upstream_scores_ok() {
        let cause = "upstream-not-listening";
        let r = scored(&[
            "not json".to_owned(),
            verdict(cause, UPSTREAM, 7, false),
            verdict(cause, UPSTREAM, 7, true),
        ]);
        assert!(r.ok, "{}", r.why);
        assert_eq!(r.causes, [cause]);
        assert_eq!(r.verdicts.len(), 1);
        assert!(r.nginx_line.contains("111: Connection refused"));
        assert!(r.secs_to_verdict.is_some_and(|s| (0.2..0.5).contains(&s)));
        assert_eq!(
            r.secs_after_recovery, None,
            "nginx never answered well again"
        );
    }

    #[test]
    fn a_verdict_after_nginx_answers_again_is_timed_from_that_answer_too() {
        let cause = "upstream-not-listening";
        let line = verdict(cause, UPSTREAM, 7, true);
        let r = scored_with(
            &[(502, 0), (502, 50), (200, 100)],
            std::slice::from_ref(&line),
        );
        assert!(r.secs_to_verdict.is_some_and(|s| (0.29..0.31).contains(&s)));
        assert!(
            r.secs_after_recovery
                .is_some_and(|s| (0.19..0.21).contains(&s))
        );
        // Answered well only after the verdict: no recovery before it.
        let late = scored_with(&[(502, 0), (200, 400)], std::slice::from_ref(&line));
        assert_eq!(late.secs_after_recovery, None);
        // Good answers (another site's) between failures are no recovery.
        let mixed = scored_with(&[(502, 0), (200, 50), (502, 100)], &[line]);
        assert_eq!(mixed.secs_after_recovery, None);
    }

    #[test]
    fn a_false_or_missing_verdict_or_a_wrong_target_fails() {
        let wrong = scored(&[verdict("socket-missing", UPSTREAM, 7, true)]);
        assert!(!wrong.ok);
        assert!(
            wrong
                .why
                .contains("expected verdict upstream-not-listening"),
            "{}",
            wrong.why
        );
        assert!(
            wrong.why.contains("false verdict socket-missing"),
            "{}",
            wrong.why
        );
        let none = scored(&[]);
        assert!(
            !none.ok && none.why.contains("expected verdict"),
            "{}",
            none.why
        );
        let elsewhere = scored(&[verdict("upstream-not-listening", "127.0.0.1:9", 7, true)]);
        assert!(
            !elsewhere.ok && elsewhere.why.contains("not nginx's upstream"),
            "{}",
            elsewhere.why
        );
    }

    #[test]
    fn a_verdict_naming_another_sites_app_fails() {
        let blames = scored(&[verdict("upstream-not-listening", "127.0.0.1:8001", 7, true)]);
        assert!(
            !blames.ok && blames.why.contains("blames the other app's 127.0.0.1:8001"),
            "{}",
            blames.why
        );
        let points = scored(&[format!(
            r#"{{"cause":"upstream-not-listening","target":"{UPSTREAM}","proxy_pid":7,"final":true,"fix":"proxy_pass http://127.0.0.1:8001"}}"#
        )]);
        assert!(
            !points.ok
                && points
                    .why
                    .contains("points at the other app's 127.0.0.1:8001"),
            "{}",
            points.why
        );
    }

    #[test]
    fn verdicts_about_another_nginx_are_not_the_scenarios() {
        let r = scored(&[verdict("upstream-not-listening", UPSTREAM, 4242, true)]);
        assert!(r.causes.is_empty(), "{:?}", r.causes);
        assert!(!r.ok);
    }
}
