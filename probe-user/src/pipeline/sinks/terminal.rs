//! The live terminal view: when stdout is a terminal, the current verdicts stay in place instead
//! of scrolling. One status line says gwtrace is alive (what it watches, events and connects per
//! second, how long since the last failure), then one line per current cause with its count and
//! rate; the view is redrawn (cursor up, clear to the end of the screen, the new lines) at most
//! once a second and only when a line changed. gwtrace's own log lines are held while the view is
//! up and printed above it at the next redraw ([`log_writer`]), so they never tear it. At the end
//! the view is cleared and the run is printed as the plain log prints it: every verdict in full,
//! then the summary table.
//!
//! [`render_view`] is the pure part (state in, lines out); [`TerminalSink`] owns the terminal.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{IsTerminal as _, Write},
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use anstyle::Style;

use super::super::{Sink, SinkError, Stats, Tick};
use super::verdicts::{VerdictSink, style};
use crate::{
    catalog::{app_server_in_cmdline, app_server_name},
    engine::{Role, Verdict, VerdictState, human_duration},
    event::{Body, Event},
};

const WHAT: &str = "the terminal view";

/// The fewest time between two redraws.
const MIN_REDRAW: Duration = Duration::from_millis(500);

/// Log lines held while the view is up (`None`: no view, lines go straight to stderr).
static RELAY: Mutex<Option<Vec<u8>>> = Mutex::new(None);

fn relay() -> MutexGuard<'static, Option<Vec<u8>>> {
    RELAY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where gwtrace's log lines go (the binary hands it to its logger): stderr, or, while a
/// terminal view is up on the same terminal, a buffer the view prints above itself.
#[must_use]
pub fn log_writer() -> LogWriter {
    LogWriter
}

/// See [`log_writer`].
#[derive(Debug)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(held) = relay().as_mut() {
            held.extend_from_slice(buf);
            return Ok(buf.len());
        }
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// One current cause, as the view shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub status: u16,
    pub cause: String,
    pub proxy: String,
    pub target: String,
    pub count: u64,
    pub rate_per_s: f64,
    /// How long ago it last happened.
    pub age_ns: u64,
    pub resolved: bool,
}

impl Row {
    /// A verdict's row, as of `now_ns`.
    #[must_use]
    pub fn of(v: &Verdict, now_ns: u64) -> Self {
        Self {
            status: v.status,
            cause: v.cause.to_string(),
            proxy: format!("{}[{}]", v.proxy_comm, v.proxy_pid),
            target: v.target.clone(),
            count: v.count,
            rate_per_s: v.rate_per_s,
            age_ns: now_ns.saturating_sub(v.last_seen_ns),
            resolved: v.life.state == Some(VerdictState::Resolved),
        }
    }
}

/// Everything the view shows: what [`render_view`] turns into lines.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ViewState {
    /// Proxies seen running, by name, with how many processes.
    pub proxies: BTreeMap<String, usize>,
    /// App servers seen running, by name, with how many processes.
    pub apps: BTreeMap<String, usize>,
    /// Events gwtrace received in the last second.
    pub events_per_s: f64,
    /// Connects the kernel saw per second (all of the host's: what the hooks watch).
    pub connects_per_s: Option<f64>,
    /// How long since the last failure behind a verdict (`None`: none yet).
    pub since_failure_ns: Option<u64>,
    /// How long the run has lasted.
    pub up_ns: u64,
    /// The current causes, most relevant first.
    pub rows: Vec<Row>,
}

/// Styled pieces of one line.
type Line = Vec<(Role, String)>;

fn seen(what: &BTreeMap<String, usize>) -> Option<String> {
    (!what.is_empty()).then(|| {
        what.iter()
            .map(|(n, c)| format!("{n} ×{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

fn status_line(s: &ViewState) -> Line {
    let mut watching = match (seen(&s.proxies), seen(&s.apps)) {
        (Some(p), Some(a)) => format!("{p}; app servers {a}"),
        (Some(p), None) => p,
        (None, Some(a)) => format!("no proxy yet; app servers {a}"),
        (None, None) => "no proxy yet".to_owned(),
    };
    watching.insert_str(0, "watching ");
    let mut rates = format!("{:.0} events/s", s.events_per_s);
    if let Some(c) = s.connects_per_s {
        let _ = write!(rates, ", {c:.0} connects/s");
    }
    let failure = s.since_failure_ns.map_or_else(
        || "no failure yet".to_owned(),
        |ns| format!("last failure {} ago", human_duration(ns)),
    );
    // What changes first, what it watches last: a narrow terminal cuts the list, not the pulse.
    vec![
        (Role::Label, "gwtrace live: ".to_owned()),
        (Role::Text, failure),
        (Role::Label, " | ".to_owned()),
        (Role::Text, rates),
        (Role::Label, format!(" | up {} | ", whole(s.up_ns))),
        (Role::Text, watching),
    ]
}

/// A duration to the second (`3 s`, `2 min 5 s`): it changes once a tick, not every redraw.
fn whole(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{} h {} min", s / 3600, (s / 60) % 60)
    }
}

fn row_line(r: &Row) -> Line {
    let role = if r.resolved {
        Role::Label
    } else if r.status == 504 {
        Role::Timeout
    } else {
        Role::Failure
    };
    let state = if r.resolved {
        format!("resolved, last {} ago", human_duration(r.age_ns))
    } else {
        format!("last {} ago", human_duration(r.age_ns))
    };
    vec![
        (role, format!("{} {:<22}", r.status, r.cause)),
        (
            Role::Text,
            format!(
                " {} -> {}  {}× {:.1}/s  ",
                r.proxy, r.target, r.count, r.rate_per_s
            ),
        ),
        (Role::Label, state),
    ]
}

/// The view's lines for a terminal of `width` columns and `height` rows: the status line, then
/// one line per cause (as many as fit; the rest counted on a last line). Every line fits in the
/// width (cut, never wrapped: the redraw counts lines), styled when `color`.
#[must_use]
pub fn render_view(s: &ViewState, width: usize, height: usize, color: bool) -> Vec<String> {
    let mut lines = vec![status_line(s)];
    // Room for the causes: the screen minus the status line and the line the cursor rests on.
    let room = height.saturating_sub(2).max(1);
    if s.rows.is_empty() {
        lines.push(vec![(
            Role::Label,
            "  no 502 cause established yet".to_owned(),
        )]);
    } else if s.rows.len() <= room {
        lines.extend(s.rows.iter().map(row_line));
    } else {
        let shown = room.saturating_sub(1);
        lines.extend(s.rows.iter().take(shown).map(row_line));
        lines.push(vec![(
            Role::Label,
            format!(
                "  ... and {} more causes (all printed when gwtrace ends)",
                s.rows.len() - shown
            ),
        )]);
    }
    let width = width.max(20) - 1;
    lines.iter().map(|l| paint(l, width, color)).collect()
}

/// A line cut to `width` characters, styled when `color`.
fn paint(line: &Line, width: usize, color: bool) -> String {
    let mut out = String::new();
    let mut left = width;
    for (role, text) in line {
        if left == 0 {
            break;
        }
        let piece: String = text.chars().take(left).collect();
        left -= piece.chars().count();
        let st = style(*role);
        if color && st != Style::new() {
            let _ = write!(out, "{st}{piece}{st:#}");
        } else {
            out.push_str(&piece);
        }
    }
    out
}

/// How many terminal rows `lines` take at `width` columns (a line longer than the width wraps;
/// the terminal may have narrowed since they were drawn).
fn rows_taken(lines: &[String], width: usize) -> usize {
    let width = width.max(1);
    lines
        .iter()
        .map(|l| visible_len(l).div_ceil(width).max(1))
        .sum()
}

/// Characters of `s` a terminal shows (SGR sequences take none).
fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            n += 1;
        }
    }
    n
}

/// The terminal's size (columns, rows), 80x24 when it cannot be read.
fn terminal_size() -> (usize, usize) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we own; fd 1 may be anything, and
    // the call fails cleanly when it is not a terminal.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &raw mut ws) } == 0;
    if ok && ws.ws_col > 0 && ws.ws_row > 0 {
        (usize::from(ws.ws_col), usize::from(ws.ws_row))
    } else {
        (80, 24)
    }
}

/// Connects the kernel saw so far: succeeded, in progress, failed.
fn connects_seen(c: &crate::capture::Counters) -> u64 {
    use probe_common::{CNT_CONNECT_FAILED, CNT_CONNECT_INPROGRESS, CNT_CONNECT_OK};
    [CNT_CONNECT_OK, CNT_CONNECT_INPROGRESS, CNT_CONNECT_FAILED]
        .iter()
        .map(|&i| c.counters.get(i as usize).copied().unwrap_or(0))
        .sum()
}

/// Whether the live view should run: human output to a terminal that can move its cursor.
#[must_use]
pub fn wanted(json: bool) -> bool {
    !json && std::io::stdout().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// The live view on a terminal (see the module doc). The final print goes through a
/// [`VerdictSink`], so it reads exactly as the plain log's verdicts and summary.
pub struct TerminalSink<W: Write, E: Write> {
    printer: VerdictSink<W, E>,
    color: bool,
    /// The proxy names the run watches.
    proxy_names: Vec<String>,
    /// Proxies and app servers seen running: pid -> (is a proxy, name).
    procs: BTreeMap<u32, (bool, String)>,
    /// Events since the last tick, and that tick's time.
    events: u64,
    last_tick_ns: Option<u64>,
    first_ns: Option<u64>,
    last_connects: Option<u64>,
    state: ViewState,
    /// The verdicts of the last tick, and every one superseded during the run.
    last: Vec<Verdict>,
    superseded: Vec<Verdict>,
    now_ns: u64,
    /// The lines on screen now (none before the first draw and after the last).
    drawn: Vec<String>,
    drawn_at: Option<Instant>,
    min_redraw: Duration,
    /// The terminal's size, when not read from it (tests).
    size: Option<(usize, usize)>,
    /// Whether log lines are held for the view (stderr is a terminal too).
    relaying: bool,
}

impl<W: Write, E: Write> TerminalSink<W, E> {
    /// A view drawn on `printer`'s output (the terminal), for proxies named `proxy_names`;
    /// styled when `color`. Holds gwtrace's log lines while it is up when `relay_logs` (stderr
    /// is the same terminal).
    pub fn new(
        printer: VerdictSink<W, E>,
        proxy_names: Vec<String>,
        color: bool,
        relay_logs: bool,
    ) -> Self {
        Self {
            printer,
            color,
            proxy_names,
            procs: BTreeMap::new(),
            events: 0,
            last_tick_ns: None,
            first_ns: None,
            last_connects: None,
            state: ViewState::default(),
            last: Vec::new(),
            superseded: Vec::new(),
            now_ns: 0,
            drawn: Vec::new(),
            drawn_at: None,
            min_redraw: MIN_REDRAW,
            size: None,
            relaying: relay_logs,
        }
    }

    /// Draws for a terminal of this size (columns, rows) instead of asking the terminal.
    #[must_use]
    pub fn with_size(mut self, columns: usize, rows: usize) -> Self {
        self.size = Some((columns, rows));
        self
    }

    /// The terminal's output (tests read what was drawn).
    pub fn out(&mut self) -> &mut W {
        self.printer.out_mut()
    }

    fn learn(&mut self, ev: &Event) {
        match &ev.body {
            Body::Facts(up) => {
                for p in &up.processes {
                    if self.proxy_names.contains(&p.comm) || up.proxies.contains(&p.pid) {
                        self.procs.insert(p.pid, (true, p.comm.clone()));
                    } else if let Some(app) =
                        app_server_name(&p.comm).or_else(|| app_server_in_cmdline(&p.cmdline))
                    {
                        self.procs.insert(p.pid, (false, app.to_owned()));
                    }
                }
            }
            Body::ProcessExit { .. } => {
                self.procs.remove(&ev.pid);
                self.events += 1;
            }
            _ => self.events += 1,
        }
    }

    fn update_state(&mut self, tick: &Tick<'_>) {
        let now = tick.now_ns;
        let first = *self.first_ns.get_or_insert(now);
        let connects = tick.counters.map(connects_seen);
        if let Some(prev) = self.last_tick_ns.filter(|&p| now > p) {
            let per_s = |n: u64| {
                #[expect(
                    clippy::cast_precision_loss,
                    reason = "a rate for people: f64 is plenty"
                )]
                let r = n as f64 * 1e9 / (now - prev) as f64;
                r
            };
            self.state.events_per_s = per_s(self.events);
            if let (Some(now_c), Some(before)) = (connects, self.last_connects) {
                self.state.connects_per_s = Some(per_s(now_c.saturating_sub(before)));
            }
            self.events = 0;
        }
        if connects.is_some() {
            self.last_connects = connects;
        }
        self.last_tick_ns = Some(now);
        self.state.up_ns = now.saturating_sub(first);
        let mut proxies = BTreeMap::new();
        let mut apps = BTreeMap::new();
        for (is_proxy, name) in self.procs.values() {
            let m = if *is_proxy { &mut proxies } else { &mut apps };
            *m.entry(name.clone()).or_insert(0) += 1;
        }
        self.state.proxies = proxies;
        self.state.apps = apps;
        self.state.since_failure_ns = tick
            .verdicts
            .iter()
            .map(|v| v.last_seen_ns)
            .max()
            .map(|t| now.saturating_sub(t));
        self.state.rows = tick.verdicts.iter().map(|v| Row::of(v, now)).collect();
    }

    /// Moves the cursor back over the view and clears it.
    fn clear(&mut self, width: usize) -> Result<(), SinkError> {
        let rows = rows_taken(&self.drawn, width);
        if rows > 0 {
            write!(self.printer.out_mut(), "\r\x1b[{rows}A\x1b[J").map_err(SinkError::io(WHAT))?;
        }
        self.drawn.clear();
        Ok(())
    }

    /// Redraws when a line changed or log lines wait (at most every [`MIN_REDRAW`]).
    fn draw(&mut self) -> Result<(), SinkError> {
        let (width, height) = self.size.unwrap_or_else(terminal_size);
        let held = if self.relaying {
            relay().as_mut().map(std::mem::take).unwrap_or_default()
        } else {
            Vec::new()
        };
        let lines = render_view(&self.state, width, height, self.color);
        let recent = self.drawn_at.is_some_and(|t| t.elapsed() < self.min_redraw);
        if held.is_empty() && (lines == self.drawn || recent) {
            return Ok(());
        }
        self.clear(width)?;
        if !held.is_empty() {
            // The terminal gets what was drawn so far, then the log lines, then the view again.
            self.printer
                .out_mut()
                .flush()
                .map_err(SinkError::io(WHAT))?;
            let mut err = std::io::stderr();
            err.write_all(&held).map_err(SinkError::io(WHAT))?;
            err.flush().map_err(SinkError::io(WHAT))?;
        }
        let out = self.printer.out_mut();
        for l in &lines {
            writeln!(out, "{l}").map_err(SinkError::io(WHAT))?;
        }
        out.flush().map_err(SinkError::io(WHAT))?;
        self.drawn = lines;
        self.drawn_at = Some(Instant::now());
        Ok(())
    }

    /// Lets go of the log lines: printed (on stderr) now, and later ones go straight there.
    fn stop_relay(&mut self) {
        if !self.relaying {
            return;
        }
        self.relaying = false;
        let held = relay().take().unwrap_or_default();
        if !held.is_empty() {
            let _ = self.printer.out_mut().flush();
            let mut err = std::io::stderr();
            let _ = err.write_all(&held);
            let _ = err.flush();
        }
    }
}

impl<W: Write, E: Write> Sink for TerminalSink<W, E> {
    fn event(&mut self, ev: &Event) -> Result<(), SinkError> {
        self.learn(ev);
        self.printer.event(ev)
    }

    fn tick(&mut self, tick: &Tick<'_>) -> Result<(), SinkError> {
        if self.relaying && self.drawn_at.is_none() {
            let mut r = relay();
            if r.is_none() {
                *r = Some(Vec::new());
            }
        }
        self.now_ns = tick.now_ns;
        self.update_state(tick);
        self.superseded.extend(tick.superseded.iter().cloned());
        self.last = tick.verdicts.to_vec();
        self.draw()
    }

    fn finish(&mut self, stats: &Stats) -> Result<(), SinkError> {
        let (width, _) = self.size.unwrap_or_else(terminal_size);
        self.clear(width)?;
        self.stop_relay();
        // The run as the plain log tells it: those superseded (each with its `~` line), then
        // every verdict standing, in full; then the summary.
        self.printer.at(self.now_ns);
        let superseded = std::mem::take(&mut self.superseded);
        if !superseded.is_empty() {
            self.printer.update(&superseded, &[])?;
        }
        let last = std::mem::take(&mut self.last);
        self.printer.update(&last, &superseded)?;
        self.printer.finish(stats)
    }
}

impl<W: Write, E: Write> Drop for TerminalSink<W, E> {
    fn drop(&mut self) {
        self.stop_relay();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        catalog::default_proxy_names,
        engine::{Engine, EngineConfig},
        pipeline::{Pipeline, replay::Replay},
    };

    const FIXTURE: &str = "../tests/fixtures/socket_permission.jsonl";

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)
    }

    fn view_sink() -> TerminalSink<Vec<u8>, Vec<u8>> {
        let printer = VerdictSink::new(Vec::new(), Vec::new(), false, false);
        let mut sink = TerminalSink::new(printer, default_proxy_names(), false, false);
        sink.size = Some((200, 50));
        sink
    }

    fn replay(sink: &mut dyn Sink) {
        let engine = Engine::new(EngineConfig::default());
        Pipeline::new(Some(engine), vec![sink])
            .replay(&mut Replay::open(&fixture()).unwrap())
            .unwrap();
    }

    #[test]
    fn the_end_clears_the_view_and_prints_what_the_plain_log_prints() {
        let mut plain = VerdictSink::new(Vec::new(), Vec::new(), false, false);
        replay(&mut plain);
        let plain = String::from_utf8(plain.into_inner().0).unwrap();
        let mut view = view_sink();
        replay(&mut view);
        let out = String::from_utf8(view.out().clone()).unwrap();
        let (drawn, end) = out.split_once("\r\x1b[2A\x1b[J").unwrap();
        assert!(
            drawn.starts_with("gwtrace live: last failure 900 ms ago"),
            "{drawn}"
        );
        assert!(drawn.contains(" | watching nginx ×"), "{drawn}");
        assert!(drawn.contains("\n502 socket-permission "), "{drawn}");
        assert_eq!(drawn.lines().count(), 2, "{drawn}");
        assert_eq!(end, plain, "nothing lost, nothing added");
        assert!(end.contains("  fix: "), "{end}");
    }

    #[test]
    fn it_redraws_in_place_only_when_a_line_changed() {
        let evs: Vec<Event> = std::fs::read_to_string(fixture())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut engine = Engine::new(EngineConfig::default());
        let mut view = view_sink();
        view.min_redraw = Duration::ZERO;
        for ev in &evs {
            engine.feed(ev);
            view.event(ev).unwrap();
        }
        let end = evs.iter().map(|e| e.mono_ns).max().unwrap();
        let mut tick = |now_ns: u64| {
            let verdicts = engine.verdicts(now_ns);
            let t = Tick {
                now_ns,
                verdicts: &verdicts,
                superseded: &[],
                engine: None,
                counters: None,
            };
            view.tick(&t).unwrap();
            String::from_utf8(view.out().clone()).unwrap()
        };
        let first = tick(end);
        assert!(!first.contains('\x1b'), "nothing to clear yet: {first:?}");
        let second = tick(end + 1_000_000_000);
        let redraw = &second[first.len()..];
        assert!(redraw.starts_with("\r\x1b[2A\x1b[J"), "{redraw:?}");
        assert!(redraw.contains("last failure 1."), "{redraw:?}");
        assert!(redraw.contains("up 1 s"), "{redraw:?}");
        let third = tick(end + 1_000_000_000);
        assert_eq!(third, second, "unchanged: not redrawn");
    }

    fn row(cause: &str, count: u64) -> Row {
        Row {
            status: 502,
            cause: cause.to_owned(),
            proxy: "nginx[41]".to_owned(),
            target: "unix:/run/app.sock".to_owned(),
            count,
            rate_per_s: 2.0,
            age_ns: 1_500_000_000,
            resolved: false,
        }
    }

    fn state(rows: Vec<Row>) -> ViewState {
        ViewState {
            proxies: BTreeMap::from([("nginx".to_owned(), 2)]),
            apps: BTreeMap::from([("gunicorn".to_owned(), 3)]),
            events_per_s: 4.0,
            connects_per_s: Some(120.0),
            since_failure_ns: Some(1_500_000_000),
            up_ns: 75_000_000_000,
            rows,
        }
    }

    #[test]
    fn the_status_line_says_what_is_watched_and_that_it_is_alive() {
        let lines = render_view(&state(vec![row("socket-missing", 7)]), 200, 50, false);
        assert_eq!(
            lines,
            [
                "gwtrace live: last failure 1.5 s ago | 4 events/s, 120 connects/s | up 1 min 15 s \
                 | watching nginx ×2; app servers gunicorn ×3",
                "502 socket-missing         nginx[41] -> unix:/run/app.sock  7× 2.0/s  last 1.5 s ago",
            ]
        );
    }

    #[test]
    fn no_cause_and_no_proxy_yet_are_said() {
        let s = ViewState {
            up_ns: 2_000_000_000,
            ..ViewState::default()
        };
        let lines = render_view(&s, 200, 50, false);
        assert_eq!(
            lines,
            [
                "gwtrace live: no failure yet | 0 events/s | up 2 s | watching no proxy yet",
                "  no 502 cause established yet",
            ]
        );
    }

    #[test]
    fn lines_are_cut_to_the_width_and_causes_to_the_height() {
        let rows = (0..10).map(|i| row(&format!("cause-{i}"), i)).collect();
        let lines = render_view(&state(rows), 40, 6, false);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines.iter().all(|l| l.chars().count() <= 39), "{lines:#?}");
        assert!(
            lines[4].starts_with("  ... and 7 more causes"),
            "{lines:#?}"
        );
        assert!(lines[1].starts_with("502 cause-0 "), "{lines:#?}");
    }

    #[test]
    fn colour_only_when_asked_and_it_takes_no_width() {
        let s = state(vec![row("socket-missing", 7)]);
        let plain = render_view(&s, 60, 50, false);
        let coloured = render_view(&s, 60, 50, true);
        assert!(plain.iter().all(|l| !l.contains('\x1b')));
        assert!(coloured[1].contains("\x1b["), "{coloured:?}");
        for (p, c) in plain.iter().zip(&coloured) {
            assert_eq!(visible_len(c), p.chars().count());
        }
    }

    #[test]
    fn resolved_and_timeout_rows_read_so() {
        let mut r = row("upstream-timeout", 3);
        r.status = 504;
        let mut done = row("socket-missing", 2);
        done.resolved = true;
        let lines = render_view(&state(vec![r, done]), 200, 50, false);
        assert!(lines[1].starts_with("504 upstream-timeout"), "{lines:?}");
        assert!(lines[2].ends_with("resolved, last 1.5 s ago"), "{lines:?}");
    }

    #[test]
    fn wrapped_lines_are_counted_when_clearing() {
        let lines = vec![
            "x".repeat(100),
            String::new(),
            "\x1b[1mab\x1b[0m".to_owned(),
        ];
        assert_eq!(rows_taken(&lines, 80), 4);
        assert_eq!(rows_taken(&lines, 200), 3);
    }
}
