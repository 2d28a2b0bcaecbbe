//! The verdicts' lifecycle: ids, and the open / updated / superseded / resolved states decided
//! tick by tick as the pipeline asks.
use super::deploy::unix_restart_stream;
use super::*;

/// Feeds the events as the pipeline does, calling [`Engine::advance`] once a second (from `T0`)
/// and at `end`: every tick's result, with its time.
fn ticks(e: &mut Engine, events: &[Event], end: u64) -> Vec<(u64, Advance)> {
    let mut out = Vec::new();
    let mut next = T0 + S;
    for x in events {
        while x.mono_ns > next {
            out.push((next, e.advance(next)));
            next += S;
        }
        e.feed(x);
    }
    while next < end {
        out.push((next, e.advance(next)));
        next += S;
    }
    out.push((end, e.advance(end)));
    out
}

fn state(v: &Verdict) -> Option<VerdictState> {
    v.life.state
}

fn find(a: &Advance, cause: Cause) -> Option<&Verdict> {
    a.verdicts.iter().find(|v| v.cause == cause)
}

#[test]
fn restart_supersedes_socket_missing_then_resolves() {
    let mut e = engine();
    let es = unix_restart_stream(true, false);
    let all = ticks(&mut e, &es, T0 + 20 * S);
    // socket-missing is printed while the socket is gone...
    let (_, first) = all
        .iter()
        .find(|(_, a)| find(a, Cause::SocketMissing).is_some())
        .expect("socket-missing during the outage");
    let missing = find(first, Cause::SocketMissing).expect("socket-missing");
    assert_eq!(state(missing), Some(VerdictState::Open));
    assert_ne!(missing.life.id, "");
    // ...and superseded by upstream-restarting once the new listener is seen, in the same tick.
    let (t, gone) = all
        .iter()
        .find(|(_, a)| !a.superseded.is_empty())
        .expect("a superseded verdict");
    let old = &gone.superseded[0];
    assert_eq!(
        (old.cause, old.life.id.as_str(), state(old)),
        (
            Cause::SocketMissing,
            missing.life.id.as_str(),
            Some(VerdictState::Superseded)
        )
    );
    let restart = find(gone, Cause::UpstreamRestarting).expect("upstream-restarting");
    assert_eq!(
        old.life.superseded_by.as_deref(),
        Some(restart.life.id.as_str())
    );
    assert_ne!(restart.life.id, old.life.id);
    assert!(
        find(gone, Cause::SocketMissing).is_none(),
        "at {t}: {gone:#?}"
    );
    // Superseded once: no later tick repeats it.
    let again = all.iter().filter(|(_, a)| !a.superseded.is_empty()).count();
    assert_eq!(again, 1);
    // No failure since 13.55 s and the listener seen at 14 s: resolved 5 s later, same id.
    let (_, last) = all.last().expect("ticks");
    let end = only(&last.verdicts, Cause::UpstreamRestarting);
    assert_eq!(end.life.id, restart.life.id);
    assert_eq!(state(end), Some(VerdictState::Resolved));
    assert!(
        has(end, "resolved: no failure for 5.0 s since t=1013.550s"),
        "{end:#?}"
    );
    let (_, before) = all
        .iter()
        .find(|(t, _)| *t == T0 + 18 * S)
        .expect("tick at 18 s");
    assert!(
        find(before, Cause::UpstreamRestarting)
            .and_then(state)
            .is_some_and(VerdictState::is_active),
        "not quiet for 5 s yet: {before:#?}"
    );
}

#[test]
fn restart_that_never_comes_back_is_never_superseded_nor_resolved() {
    let mut e = engine();
    let es = unix_restart_stream(false, false);
    let all = ticks(&mut e, &es, T0 + 30 * S);
    assert!(all.iter().all(|(_, a)| a.superseded.is_empty()));
    let (_, last) = all.last().expect("ticks");
    let v = last.verdicts.first().expect("a verdict");
    assert!(
        state(v).is_some_and(VerdictState::is_active),
        "nothing listens: it still stands: {v:#?}"
    );
}

/// The socket's walk as re-read at `t`, now letting everyone write it, and gunicorn listening.
fn permission_fixed(t: u64, mode: u32) -> Event {
    facts(
        t,
        FactsUpdate {
            paths: vec![path(&[
                ("/", true, 0, 0, 0o040_755),
                ("/run", true, 0, 0, 0o040_755),
                ("/run/app", true, 999, 999, 0o040_755),
                ("/run/app/app.sock", true, 999, 999, mode),
            ])],
            listeners: Some(vec![listener("unix:/run/app/app.sock", 200, "gunicorn")]),
            ..FactsUpdate::default()
        },
    )
}

#[test]
fn a_fixed_permission_is_resolved() {
    let mut e = engine();
    let mut es = permission_stream(&[33]);
    es.push(permission_fixed(T0 + 3 * S, 0o140_666));
    let all = ticks(&mut e, &es, T0 + 8 * S);
    let (_, first) = &all[0];
    let v = only(&first.verdicts, Cause::SocketPermission);
    assert_eq!(state(v), Some(VerdictState::Open));
    let (_, last) = all.last().expect("ticks");
    let end = only(&last.verdicts, Cause::SocketPermission);
    assert_eq!(end.life.id, v.life.id);
    assert_eq!(state(end), Some(VerdictState::Resolved), "{end:#?}");
    assert!(
        has(
            end,
            "the path walk at t=1003.000s lets uid 33 gid 33 reach /run/app/app.sock"
        ),
        "{end:#?}"
    );
}

#[test]
fn a_resolved_verdict_is_handed_out_unchanged_after_its_resolution() {
    // Facts read after the resolution (another walk, another listener snapshot) change what the
    // engine would say of the target; the resolution was emitted once: the sinks print a verdict
    // again whenever its form changes, so a resolved verdict keeps its form at resolution.
    let mut e = engine();
    let mut es = permission_stream(&[33]);
    es.push(permission_fixed(T0 + 3 * S, 0o140_666));
    es.push(permission_fixed(T0 + 12 * S, 0o140_777));
    es.push(facts(
        T0 + 14 * S,
        FactsUpdate {
            listeners: Some(vec![listener("0.0.0.0:80", 100, "nginx")]),
            ..FactsUpdate::default()
        },
    ));
    let all = ticks(&mut e, &es, T0 + 20 * S);
    let resolved: Vec<&Verdict> = all
        .iter()
        .filter_map(|(_, a)| find(a, Cause::SocketPermission))
        .filter(|v| state(v) == Some(VerdictState::Resolved))
        .collect();
    assert!(resolved.len() > 5, "{all:#?}");
    for v in &resolved {
        assert_eq!(*v, resolved[0], "a resolved verdict changed form");
    }
}

#[test]
fn a_permission_still_denied_stays_open() {
    let mut e = engine();
    let mut es = permission_stream(&[33]);
    // Re-read, still 0660 for 999:999: the worker (uid 33) is still denied.
    es.push(permission_fixed(T0 + 3 * S, 0o140_660));
    let all = ticks(&mut e, &es, T0 + 30 * S);
    let (_, last) = all.last().expect("ticks");
    let end = only(&last.verdicts, Cause::SocketPermission);
    assert!(state(end).is_some_and(VerdictState::is_active), "{end:#?}");
}

#[test]
fn a_growing_count_is_updated_with_the_same_id() {
    let mut e = engine();
    let mut es = permission_stream(&[33]);
    failures(
        &mut es,
        T0 + 2 * S + 500 * MS,
        3,
        101,
        "unix:/run/app/app.sock",
        13,
    );
    let all = ticks(&mut e, &es, T0 + 4 * S);
    let (_, a) = all
        .iter()
        .find(|(t, _)| *t == T0 + 2 * S)
        .expect("tick at 2 s");
    let (_, b) = all.last().expect("ticks");
    let (first, later) = (
        only(&a.verdicts, Cause::SocketPermission),
        only(&b.verdicts, Cause::SocketPermission),
    );
    assert_eq!(first.count, 5);
    assert_eq!(
        (later.count, state(later)),
        (8, Some(VerdictState::Updated))
    );
    assert_eq!(first.life.id, later.life.id);
}

#[test]
fn a_symptom_back_after_resolution_opens_a_new_verdict() {
    let mut e = engine();
    let mut es = permission_stream(&[33]);
    es.push(permission_fixed(T0 + 3 * S, 0o140_666));
    let all = ticks(&mut e, &es, T0 + 8 * S);
    let resolved = only(
        &all.last().expect("ticks").1.verdicts,
        Cause::SocketPermission,
    )
    .clone();
    assert_eq!(state(&resolved), Some(VerdictState::Resolved));
    let mut more = Vec::new();
    failures(&mut more, T0 + 9 * S, 2, 101, "unix:/run/app/app.sock", 13);
    for x in &more {
        e.feed(x);
    }
    let a = e.advance(T0 + 10 * S);
    let back = only(&a.verdicts, Cause::SocketPermission);
    assert_eq!(state(back), Some(VerdictState::Open));
    assert_ne!(back.life.id, resolved.life.id);
}

#[test]
fn plain_verdicts_carry_no_lifecycle() {
    let vs = run(&permission_stream(&[33]));
    let v = only(&vs, Cause::SocketPermission);
    assert_eq!(v.life, Life::default());
    let json = serde_json::to_value(v).expect("json");
    assert!(json.get("id").is_none() && json.get("state").is_none());
}
