//! The proxy's upstream connections that broke before their answer (`conn_end` events): the
//! keep-alive race (`keepalive-race`: the app closed an idle kept-alive connection just as the
//! proxy reused it) and the app closing a connection itself, alive, before answering
//! (`upstream-closed-early`). A close done by a dying worker (killed by its master, OOM-killed,
//! crashed: [`Deaths::broke`]) is a consequence of that death, listed in its verdict; one by a
//! worker that exited on its own (recycled after `--max-requests`) is `upstream-closed-early`.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::BrokenConn;
use super::deaths::Deaths;
use super::report::Part;
use super::state::{ConnEndRecord, ExitRecord};
use super::target::covers;
use super::text::{fmt_dur, fmt_ns};
use super::view::{ProxyKey, View, app_server_of};
use crate::catalog::Cause;

/// A close this close to the proxy's request (either side) crossed it.
pub(crate) const RACE_NS: u64 = 10_000_000;
/// A connection idle this long before its reuse can have met a keep-alive timer (the shortest
/// an app server takes is about a second; under load, reuse follows within milliseconds).
pub(crate) const MIN_IDLE_NS: u64 = 100_000_000;
/// An upstream that exits on its own this soon after closing was recycled.
const RECYCLE_NS: u64 = 30_000_000_000;
/// Evidence lines listing individual connections, per verdict.
const MAX_LISTED: usize = 4;

/// One connection part: (cause, proxy, target, the dead worker whose consequence it is).
type PartKey = (Cause, ProxyKey, String, Option<u32>);

/// How one broken connection is explained.
struct Finding<'a> {
    cause: Cause,
    rec: &'a ConnEndRecord,
    /// The upstream process that closed it, when the close ran in it and it serves the target.
    peer: Option<u32>,
    /// The dead worker whose death broke it (the part is that death's consequence).
    death: Option<u32>,
}

/// Every connection part; those a worker's death broke are left as that death's consequences
/// (`Part::consequence_of`), which [`super::deaths::parts`] folds into its verdict.
pub(crate) fn parts(v: &View<'_>, out: &mut Vec<Part>) {
    let deaths = Deaths::of(v);
    let mut by: BTreeMap<PartKey, (Part, usize)> = BTreeMap::new();
    for rec in &v.st.conn_ends {
        let Some(f) = classify(v, &deaths, rec) else {
            continue;
        };
        let proxy = v.proxy_id(rec.pid, &rec.comm);
        let key = (f.cause, proxy.key.clone(), rec.info.target.clone(), f.death);
        let (p, listed) = by.entry(key).or_insert_with(|| {
            let mut p = Part::new(f.cause, proxy, &rec.info.target);
            p.first_ns = rec.ns;
            p.consequence_of = f.death;
            (p, 0)
        });
        p.count += 1;
        p.first_ns = p.first_ns.min(rec.ns);
        p.last_ns = p.last_ns.max(rec.ns);
        p.upstream_pid = p.upstream_pid.or(f.peer);
        if *listed < MAX_LISTED {
            p.evidence.push(line(v, &f));
        }
        *listed += 1;
        if p.broken.len() < super::MAX_BROKEN {
            p.broken.push(broken(v, &f));
        }
    }
    for (_, (mut p, listed)) in by {
        if listed > MAX_LISTED {
            p.evidence.push(format!("... {} more", listed - MAX_LISTED));
        }
        match (p.cause, p.consequence_of) {
            (_, Some(dead)) => {
                p.summary = format!("the death of pid {dead} broke {} connection(s)", p.count);
                p.fix = "see the death's verdict".into();
            }
            (Cause::KeepaliveRace, None) => keepalive_words(v, &mut p),
            _ => closed_early_words(v, &mut p),
        }
        out.push(p);
    }
}

/// The cause of one broken connection (a death's when a worker's death broke it), or None when
/// it is not a proxy's upstream connection, or its peer exited of a death no verdict explains
/// (killed by another process).
fn classify<'a>(v: &View<'_>, deaths: &Deaths<'_>, rec: &'a ConnEndRecord) -> Option<Finding<'a>> {
    let i = &rec.info;
    if !v.symptom(rec.pid, &rec.comm, &i.target) {
        return None;
    }
    if let Some((cause, dead)) = deaths.broke(v, rec) {
        return Some(Finding {
            cause,
            rec,
            peer: Some(dead),
            death: Some(dead),
        });
    }
    let peer = i
        .peer_pid
        .filter(|&p| p != rec.pid && serves(v, p, &i.target));
    let exit = peer.and_then(|p| own_exit(v, p));
    if i.peer_exiting {
        // Its exit closed the socket: a worker that exited with a status (recycled after
        // --max-requests) closed it on its own; any other exit is no connection verdict's.
        exit?;
        return Some(Finding {
            cause: Cause::UpstreamClosedEarly,
            rec,
            peer,
            death: None,
        });
    }
    let close = i.close_ns.unwrap_or(rec.ns);
    // A worker that exits on its own soon after closing (gunicorn's gthread worker recycled
    // after --max-requests closes its kept-alive connections, requests unread, then exits 0).
    let recycled = exit.is_some_and(|e| e.ns >= close && e.ns - close <= RECYCLE_NS);
    let after = i.close_after_send_ns();
    let crossed = i.wrote_after_close || after.is_some_and(|d| d.unsigned_abs() <= RACE_NS);
    // The close found the request unread in its receive queue, so the kernel reset: the app
    // took the connection for idle.
    let unread = i.peer_close == "rst" && after.is_some_and(|d| d >= 0);
    let idle = i.idle_ns().is_some_and(|n| n >= MIN_IDLE_NS);
    let cause = if i.reused() && idle && (crossed || unread) && !recycled {
        Cause::KeepaliveRace
    } else {
        Cause::UpstreamClosedEarly
    };
    Some(Finding {
        cause,
        rec,
        peer,
        death: None,
    })
}

/// The exit of `pid` when it ended on its own (a status, no signal from another process).
fn own_exit<'a>(v: &View<'a>, pid: u32) -> Option<&'a ExitRecord> {
    let e = v.exit_of(pid)?;
    let killed =
        v.st.signals
            .iter()
            .any(|s| s.target_pid == pid && s.sender_pid != pid && s.effective() && s.ns <= e.ns);
    (e.signal.is_none() && !killed).then_some(e)
}

/// Whether `pid` is (of the family of) the process that serves `target`: only then is the task
/// the FIN/RST ran in the upstream (a remote peer's is handled in whatever task ran the softirq).
fn serves(v: &View<'_>, pid: u32, target: &str) -> bool {
    !v.is_proxy(pid, v.comm(pid))
        && (v.served_targets(pid).iter().any(|t| covers(t, target)) || v.is_upstream(pid))
}

fn peer_name(v: &View<'_>, f: &Finding<'_>) -> String {
    match f.peer {
        Some(p) => {
            let comm = f.rec.info.peer_comm.as_deref().unwrap_or_else(|| v.comm(p));
            format!("{comm} pid {p}")
        }
        None => "the upstream".to_owned(),
    }
}

/// One evidence line: the request, the close, what the proxy read.
fn line(v: &View<'_>, f: &Finding<'_>) -> String {
    let i = &f.rec.info;
    let mut out = format!("{} pid {} ", f.rec.comm, f.rec.pid);
    match i.idle_ns() {
        Some(idle) => {
            let _ = write!(
                out,
                "reused a keep-alive connection to {} after {} idle",
                i.target,
                fmt_dur(idle)
            );
        }
        None => {
            let _ = write!(
                out,
                "sent its first request on a connection to {} ({} after connecting)",
                i.target,
                fmt_dur(i.last_send_ns.saturating_sub(i.established_ns))
            );
        }
    }
    let _ = write!(out, " at {}; {}", fmt_ns(i.last_send_ns), peer_name(v, f));
    if i.peer_exiting {
        out.push_str(", exiting,");
    }
    let how = match i.peer_close.as_str() {
        "rst" => " closed it with the request unread (RST)",
        "fin_then_rst" => " closed it (FIN, then RST to the request written after it)",
        "fin" => " closed it (FIN)",
        _ => " ended it",
    };
    out.push_str(how);
    match i.close_after_send_ns() {
        Some(delta) if delta >= 0 => {
            let _ = write!(out, " {} after the request", fmt_dur(delta.unsigned_abs()));
        }
        Some(delta) => {
            let _ = write!(out, " {} before the request", fmt_dur(delta.unsigned_abs()));
        }
        None => {}
    }
    if let Some(e) = f.peer.and_then(|p| own_exit(v, p))
        && e.ns >= i.close_ns.unwrap_or(0)
    {
        let _ = write!(
            out,
            "; it exited with status {} {} later",
            e.exit_code.unwrap_or(0),
            fmt_dur(e.ns - i.close_ns.unwrap_or(e.ns))
        );
    }
    let read = if i.outcome == "eof" {
        "read EOF (\"upstream prematurely closed connection\")".to_owned()
    } else {
        format!(
            "got {} (\"recv() failed ({}: ...)\")",
            super::text::errno_label(i.errno),
            i.errno
        )
    };
    let _ = write!(
        out,
        "; {} {read} with no byte of the answer ({} bytes received on the connection)",
        f.rec.comm,
        i.data_received()
    );
    out
}

fn broken(v: &View<'_>, f: &Finding<'_>) -> BrokenConn {
    let i = &f.rec.info;
    BrokenConn {
        proxy_pid: f.rec.pid,
        target: i.target.clone(),
        upstream_pid: f.peer,
        upstream_comm: f
            .peer
            .map(|p| i.peer_comm.clone().unwrap_or_else(|| v.comm(p).to_owned())),
        at_ns: f.rec.ns,
        outcome: i.outcome.clone(),
        peer_close: i.peer_close.clone(),
        idle_ns: i.idle_ns(),
        close_after_send_ns: i.close_after_send_ns(),
        requests: i.requests,
    }
}

/// The app server behind the upstream process and its command line, when known.
fn app_of<'a>(v: &View<'a>, pid: Option<u32>) -> Option<(&'static str, &'a str)> {
    let pid = pid?;
    v.lineage(pid)
        .into_iter()
        .find_map(|p| app_server_of(p).map(|a| (a, p.cmdline.as_str())))
}

/// The value of `--flag V` / `--flag=V` in a command line (the last one wins).
fn flag<'a>(cmdline: &'a str, name: &str) -> Option<&'a str> {
    let mut found = None;
    let mut words = cmdline.split_whitespace();
    while let Some(w) = words.next() {
        if w == name {
            found = words.next().or(found);
        } else if let Some(v) = w.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            found = Some(v);
        }
    }
    found
}

fn keepalive_words(v: &View<'_>, p: &mut Part) {
    let app = app_of(v, p.upstream_pid);
    let setting = match app {
        Some(("gunicorn", cmd)) => Some(format!(
            "gunicorn --keep-alive is {}",
            flag(cmd, "--keep-alive")
                .map_or_else(|| "2 s (the default)".to_owned(), |k| format!("{k} s"))
        )),
        Some(("uvicorn", cmd)) => Some(format!(
            "uvicorn --timeout-keep-alive is {}",
            flag(cmd, "--timeout-keep-alive")
                .map_or_else(|| "5 s (the default)".to_owned(), |k| format!("{k} s"))
        )),
        _ => None,
    };
    // The app's idle close as the kernel saw it: its FIN/RST after the previous answer.
    let measured = p
        .broken
        .iter()
        .filter_map(|b| b.idle_ns?.checked_add_signed(b.close_after_send_ns?))
        .min()
        // The kernel's send and receive stamps are jiffies (one tick: 1 to 10 ms): the nearest
        // 10 ms is all the figure holds.
        .map(|d| (d + 5_000_000) / 10_000_000 * 10_000_000);
    if let Some(d) = measured {
        p.evidence.push(format!(
            "the app closed idle connections {} after its last answer on them (its keep-alive timeout, as \
             measured in the kernel), shorter than nginx's upstream keepalive_timeout (60 s by default): nginx \
             still reuses connections the app has given up on",
            fmt_dur(d)
        ));
    }
    if let Some(s) = &setting {
        p.evidence.push(format!(
            "{s}, shorter than nginx's upstream keepalive_timeout (60 s by default): the app closes idle connections nginx still reuses"
        ));
    }
    p.evidence.push(
        "nginx retries a failed reused connection on a fresh one for idempotent requests only: POST, PATCH and LOCK get the 502"
            .to_owned(),
    );
    p.summary = format!(
        "the upstream closed {} idle keep-alive connection(s) just as {} reused them: its keep-alive timeout is shorter than the proxy's",
        p.count, p.proxy.comm
    );
    p.fix = "make the app's keep-alive timeout longer than nginx's upstream keepalive_timeout (60 s by default, in the \
             upstream block): gunicorn --keep-alive (2 s by default), uvicorn --timeout-keep-alive (5 s by default); or \
             lower keepalive_timeout in the upstream block below the app's, or disable upstream keep-alive (remove \
             `keepalive` from the upstream block)"
        .into();
}

fn closed_early_words(v: &View<'_>, p: &mut Part) {
    let app = app_of(v, p.upstream_pid);
    let recycling = app.and_then(|(_, cmd)| flag(cmd, "--max-requests"));
    if let Some(n) = recycling {
        p.evidence.push(format!(
            "gunicorn --max-requests is {n}: each worker exits after {n} requests, closing the connections it holds"
        ));
    }
    p.summary = format!(
        "the upstream app closed {} connection(s) itself, alive, before answering {}'s request",
        p.count, p.proxy.comm
    );
    p.fix = if recycling.is_some() {
        "recycle workers gracefully: add --max-requests-jitter so they do not restart together, and let a worker \
         finish its kept-alive connections (or disable upstream keep-alive); check the app's log around these times"
            .into()
    } else {
        "find why the app closes connections it has not answered: its log around these times (a request it rejects, \
         a worker recycled after --max-requests, an exception in the server); the connection it closed is listed here"
            .into()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_from_command_lines() {
        let cmd = "/usr/bin/python3 /usr/bin/gunicorn -k gthread --keep-alive 1 --max-requests=50 app:app";
        assert_eq!(flag(cmd, "--keep-alive"), Some("1"));
        assert_eq!(flag(cmd, "--max-requests"), Some("50"));
        assert_eq!(flag(cmd, "--timeout-keep-alive"), None);
        assert_eq!(
            flag(
                "uvicorn --timeout-keep-alive 3 --timeout-keep-alive=7 a:b",
                "--timeout-keep-alive"
            ),
            Some("7")
        );
    }
}
