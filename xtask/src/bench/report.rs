//! Statistics, the terminal table, the JSON file with every raw figure and the markdown summary.
use std::{collections::BTreeMap, fmt::Write as _, path::Path, process::Command, time::Duration};

use serde_json::{Value, json};

use super::{Opts, Run, STORM, Workload, run_json, tracer::Config};

/// Where and with what the benchmark ran.
pub struct Env {
    pub date: String,
    pub timestamp: String,
    pub host: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub commit: String,
    pub bin: String,
    pub tools: BTreeMap<&'static str, String>,
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd).args(args).output().map_or_else(
        |e| format!("unavailable ({e})"),
        |o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        },
    )
}

/// Collects the environment.
pub fn environment(bin: &Path) -> Env {
    let (date, timestamp) = super::utc_now();
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let host = read("/proc/sys/kernel/hostname");
    let host = if host.is_empty() {
        "host".to_owned()
    } else {
        host.replace(['/', ' '], "_")
    };
    let root = crate::root();
    let root_s = root.to_string_lossy();
    let commit = first_line(
        "git",
        &[
            "-C",
            &root_s,
            "describe",
            "--always",
            "--dirty",
            "--exclude",
            "*",
        ],
    );
    let tools = BTreeMap::from([
        ("bpftrace", first_line("bpftrace", &["--version"])),
        ("strace", first_line("strace", &["-V"])),
        ("nginx", first_line("nginx", &["-v"])),
        ("wrk", first_line("wrk", &["--version"])),
    ]);
    Env {
        date,
        timestamp,
        host,
        kernel: read("/proc/sys/kernel/osrelease"),
        cpu_model,
        cpus,
        commit,
        // Relative to the repository, so results committed from any checkout read the same.
        bin: bin
            .strip_prefix(crate::root())
            .unwrap_or(bin)
            .display()
            .to_string(),
        tools,
    }
}

/// A target a figure is held to.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// ratio to baseline at least
    MinRatio(f64),
    /// ratio to baseline at most
    MaxRatio(f64),
    /// absolute value at most
    AtMost(f64),
    /// absolute value at least
    AtLeast(f64),
}

impl Target {
    fn text(self) -> String {
        match self {
            Self::MinRatio(r) => format!(">= {:.0}%", r * 100.0),
            Self::MaxRatio(r) => format!("<= {:.0}%", r * 100.0),
            Self::AtMost(v) => format!("<= {}", num(v)),
            Self::AtLeast(v) => format!(">= {}", num(v)),
        }
    }

    fn met(self, value: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Self::MinRatio(r) => ratio.map(|x| x >= r),
            Self::MaxRatio(r) => ratio.map(|x| x <= r),
            Self::AtMost(v) => Some(value <= v),
            Self::AtLeast(v) => Some(value >= v),
        }
    }
}

/// One metric of a workload.
struct Metric {
    key: &'static str,
    higher_better: bool,
    /// Held against gwtrace's configurations.
    target: Option<Target>,
    /// The workload's main figure: bpftrace and strace are compared with gwtrace on it.
    primary: bool,
}

fn metrics(w: Workload) -> Vec<Metric> {
    match w {
        Workload::TcpLoop | Workload::UnixLoop => {
            vec![Metric {
                key: "conn/s",
                higher_better: true,
                target: Some(Target::MinRatio(0.97)),
                primary: true,
            }]
        }
        Workload::NginxTcp | Workload::NginxUnix => vec![
            Metric {
                key: "req/s",
                higher_better: true,
                target: Some(Target::MinRatio(0.98)),
                primary: true,
            },
            Metric {
                key: "p50 ms",
                higher_better: false,
                target: None,
                primary: false,
            },
            Metric {
                key: "p99 ms",
                higher_better: false,
                target: Some(Target::MaxRatio(1.05)),
                primary: false,
            },
        ],
        Workload::NullSyscall => vec![Metric {
            key: "ns/op",
            higher_better: false,
            target: None,
            primary: true,
        }],
    }
}

/// Noise allowance when comparing two tracers' costs (1 percentage point).
const NOISE: f64 = 0.01;
/// "Far below strace": at most this fraction of strace's cost (plus the noise allowance).
const FAR_BELOW: f64 = 0.2;

/// One line of the summary.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    pub workload: String,
    pub metric: String,
    pub config: &'static str,
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub q1: f64,
    pub q3: f64,
    /// Median over the baseline's median.
    pub ratio: Option<f64>,
    /// Median of the per-round ratios (each run over the baseline of its own round).
    pub paired_ratio: Option<f64>,
    /// The tracer's CPU during the measured window, ms per second (median).
    pub tracer_cpu_ms_per_s: Option<f64>,
    pub target: String,
    pub met: Option<bool>,
    /// What the target was checked on, when it is not the median itself.
    pub note: String,
}

/// Quantile by linear interpolation of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[expect(clippy::cast_precision_loss, reason = "few values")]
    let pos = q * (sorted.len() - 1) as f64;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "0 <= pos < len"
    )]
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    #[expect(clippy::cast_precision_loss, reason = "few values")]
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    v
}

fn median(v: Vec<f64>) -> Option<f64> {
    let s = sorted(v);
    (!s.is_empty()).then(|| quantile(&s, 0.5))
}

fn row(workload: &str, metric: &str, config: Config, values: Vec<f64>) -> Option<Row> {
    let s = sorted(values);
    if s.is_empty() {
        return None;
    }
    Some(Row {
        workload: workload.to_owned(),
        metric: metric.to_owned(),
        config: config.name(),
        n: s.len(),
        median: quantile(&s, 0.5),
        min: s[0],
        max: s[s.len() - 1],
        q1: quantile(&s, 0.25),
        q3: quantile(&s, 0.75),
        ratio: None,
        paired_ratio: None,
        tracer_cpu_ms_per_s: None,
        target: String::new(),
        met: None,
        note: String::new(),
    })
}

fn cost(ratio: f64, higher_better: bool) -> f64 {
    if higher_better {
        1.0 - ratio
    } else {
        ratio - 1.0
    }
}

/// The summary rows: overhead workloads, the storm, the tracers themselves.
pub fn summarise(runs: &[Run], workloads: &[Workload], storm: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    let ok = |r: &&Run| r.error.is_none();
    for &w in workloads {
        for m in metrics(w) {
            let values = |c: Config| -> Vec<(usize, f64)> {
                runs.iter()
                    .filter(ok)
                    .filter(|r| r.workload == w.name() && r.config == c)
                    .filter_map(|r| r.metrics.get(m.key).map(|v| (r.round, *v)))
                    .collect()
            };
            let base = values(Config::Baseline);
            let base_median = median(base.iter().map(|(_, v)| *v).collect());
            let mut group: Vec<Row> = Vec::new();
            for c in Config::OVERHEAD {
                let vals = values(c);
                let Some(mut r) = row(w.name(), m.key, c, vals.iter().map(|(_, v)| *v).collect())
                else {
                    continue;
                };
                if c != Config::Baseline {
                    r.ratio = base_median.map(|b| r.median / b);
                    let paired: Vec<f64> = vals
                        .iter()
                        .filter_map(|(round, v)| {
                            base.iter().find(|(br, _)| br == round).map(|(_, b)| v / b)
                        })
                        .collect();
                    r.paired_ratio = median(paired);
                }
                r.tracer_cpu_ms_per_s = median(
                    runs.iter()
                        .filter(ok)
                        .filter(|x| x.workload == w.name() && x.config == c)
                        .filter_map(|x| x.tracer.as_ref())
                        .map(|t| t.window_cpu_ms() / t.window_s.max(1e-3))
                        .collect(),
                );
                if matches!(
                    c,
                    Config::Gwtrace | Config::GwtraceFull | Config::GwtraceSock
                ) && let Some(t) = m.target
                {
                    r.target = t.text();
                    r.met = t.met(r.median, r.ratio);
                } else if c == Config::Baseline {
                    r.ratio = Some(1.0);
                }
                group.push(r);
            }
            if m.primary {
                let gw = group
                    .iter()
                    .find(|r| r.config == Config::Gwtrace.name())
                    .and_then(|r| r.ratio);
                for r in &mut group {
                    let (Some(gw), Some(other)) = (gw, r.ratio) else {
                        continue;
                    };
                    let (gw_cost, other_cost) =
                        (cost(gw, m.higher_better), cost(other, m.higher_better));
                    let costs = format!(
                        "cost: gwtrace {:+.1}%, {} {:+.1}%",
                        gw_cost * 100.0,
                        r.config,
                        other_cost * 100.0
                    );
                    if r.config == Config::Bpftrace.name() {
                        "gwtrace's cost below".clone_into(&mut r.target);
                        r.met = Some(gw_cost <= other_cost + NOISE);
                        r.note = costs;
                    } else if r.config == Config::Strace.name() {
                        "gwtrace's cost <= 1/5".clone_into(&mut r.target);
                        r.met = Some(gw_cost <= FAR_BELOW * other_cost.max(0.0) + NOISE);
                        r.note = costs;
                    } else if r.config != Config::Baseline.name() && r.target.is_empty() {
                        "report".clone_into(&mut r.target);
                    }
                }
            }
            rows.extend(group);
        }
    }
    if storm {
        rows.extend(storm_rows(runs));
    }
    rows.extend(host_size_rows(runs));
    rows.extend(tracer_rows(runs));
    rows
}

/// Agent CPU per second at each host size and failure load (issue #20): at most 10 ms/s at one
/// failure a second, and at 5,000 processes at most 1.5x the figure at 100 for the same load.
fn host_size_rows(runs: &[Run]) -> Vec<Row> {
    use super::hostsize::{HOST_SIZE, LOADS, SIZES};
    const ONE_FAILURE_MS: f64 = 10.0;
    const GROWTH: f64 = 1.5;
    let cells: Vec<&Run> = runs
        .iter()
        .filter(|r| r.workload == HOST_SIZE && r.error.is_none())
        .collect();
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let cpu = |size: usize, load: super::hostsize::Load| -> Vec<f64> {
        cells
            .iter()
            .filter(|r| {
                r.metrics.get("procs") == Some(&(size as f64))
                    && r.metrics.get("rate") == Some(&f64::from(load.rate))
                    && r.metrics.get("targets") == Some(&(load.targets as f64))
            })
            .filter_map(|r| r.metrics.get("agent cpu ms/s").copied())
            .collect()
    };
    let mut rows = Vec::new();
    for load in LOADS {
        let small = median(cpu(SIZES[0], load));
        for size in SIZES {
            let metric = format!("agent CPU ms/s, +{size} procs, {}", load.label());
            let Some(mut r) = row(HOST_SIZE, &metric, Config::Gwtrace, cpu(size, load)) else {
                continue;
            };
            r.tracer_cpu_ms_per_s = Some(r.median);
            let mut targets = Vec::new();
            let mut met = Vec::new();
            if load.rate == 1 {
                targets.push(Target::AtMost(ONE_FAILURE_MS).text());
                met.push(r.median <= ONE_FAILURE_MS);
            }
            if size == SIZES[SIZES.len() - 1] {
                r.ratio = small.map(|b| r.median / b.max(1e-3));
                targets.push(format!("<= {:.0}% of +{} procs", GROWTH * 100.0, SIZES[0]));
                met.push(r.ratio.is_some_and(|x| x <= GROWTH));
                r.note = format!(
                    "{} ms/s = {} of the {} at +{} procs",
                    num(r.median),
                    r.ratio
                        .map_or_else(|| "-".to_owned(), |x| format!("{:.0}%", x * 100.0)),
                    small.map_or_else(|| "-".to_owned(), num),
                    SIZES[0]
                );
            }
            if targets.is_empty() {
                "report".clone_into(&mut r.target);
            } else {
                r.target = targets.join(", ");
                r.met = Some(met.iter().all(|m| *m));
            }
            rows.push(r);
        }
    }
    rows
}

fn storm_rows(runs: &[Run]) -> Vec<Row> {
    let mut rows = Vec::new();
    let storm: Vec<&Run> = runs
        .iter()
        .filter(|r| r.workload == STORM && r.error.is_none())
        .collect();
    let rate = |c: Config| -> Vec<f64> {
        storm
            .iter()
            .filter(|r| r.config == c)
            .filter_map(|r| r.metrics.get("failed connects/s").copied())
            .collect()
    };
    let base = median(rate(Config::Baseline));
    for c in Config::STORM {
        let Some(mut r) = row(STORM, "failed connects/s", c, rate(c)) else {
            continue;
        };
        if c == Config::Baseline {
            r.ratio = Some(1.0);
            r.target = Target::AtLeast(200_000.0).text();
            r.met = Some(r.median >= 200_000.0);
        } else {
            r.ratio = base.map(|b| r.median / b);
            "report".clone_into(&mut r.target);
        }
        let these: Vec<&&Run> = storm.iter().filter(|x| x.config == c).collect();
        r.tracer_cpu_ms_per_s = median(
            these
                .iter()
                .filter_map(|x| x.tracer.as_ref())
                .map(|t| t.window_cpu_ms() / t.window_s.max(1e-3))
                .collect(),
        );
        rows.push(r);
        if c == Config::Baseline {
            continue;
        }
        let mut add = |metric: &str, values: Vec<f64>, target: Option<Target>| {
            if let Some(mut r) = row(STORM, metric, c, values) {
                if let Some(t) = target {
                    r.target = t.text();
                    r.met = t.met(r.median, None);
                } else {
                    "report".clone_into(&mut r.target);
                }
                rows.push(r);
            }
        };
        let per = |f: &dyn Fn(&Run) -> Option<f64>| {
            these.iter().filter_map(|r| f(r)).collect::<Vec<f64>>()
        };
        add(
            "failures delivered",
            per(&|r| r.metrics.get("events delivered").copied()),
            None,
        );
        add(
            "connect_failed lines (folded)",
            per(&|r| r.metrics.get("connect_failed lines").copied()),
            None,
        );
        add(
            "delivered/attempted %",
            per(&|r| r.metrics.get("delivered %").copied()),
            None,
        );
        add(
            "lost events",
            per(&|r| r.metrics.get("lost events").copied()),
            Some(Target::AtMost(0.0)),
        );
        add(
            "agent CPU ms/100k failures",
            per(&|r| r.metrics.get("cpu ms/100k").copied()),
            Some(Target::AtMost(10.0)),
        );
        add(
            "agent peak RSS MiB",
            per(&|r| r.metrics.get("peak rss MiB").copied()),
            Some(Target::AtMost(48.0)),
        );
    }
    rows
}

/// Startup and footprint of every tracer over all runs.
fn tracer_rows(runs: &[Run]) -> Vec<Row> {
    let mut rows = Vec::new();
    let group = "tracers (all runs)";
    for c in [
        Config::Gwtrace,
        Config::GwtraceFull,
        Config::GwtraceSock,
        Config::GwtraceRecord,
        Config::Bpftrace,
        Config::Strace,
    ] {
        let ts: Vec<_> = runs
            .iter()
            .filter(|r| r.config == c)
            .filter_map(|r| r.tracer.as_ref())
            .collect();
        if ts.is_empty() {
            continue;
        }
        let gw = c.is_gwtrace();
        if let Some(mut r) = row(
            group,
            "spawn to attached ms",
            c,
            ts.iter().map(|t| t.startup.attached_ms).collect(),
        ) {
            if gw {
                r.target = Target::AtMost(1000.0).text();
                r.met = Some(r.median <= 1000.0);
            }
            rows.push(r);
        }
        if c != Config::Strace
            && let Some(mut r) = row(
                group,
                "spawn to ready line ms",
                c,
                ts.iter().map(|t| t.startup.ready_line_ms).collect(),
            )
        {
            if gw {
                r.target = Target::AtMost(1000.0).text();
                r.met = Some(r.median <= 1000.0);
            }
            rows.push(r);
        }
        #[expect(clippy::cast_precision_loss, reason = "KiB of a process")]
        let rss: Vec<f64> = ts
            .iter()
            .map(|t| t.finished.maxrss_kib as f64 / 1024.0)
            .collect();
        if let Some(mut r) = row(group, "peak RSS MiB", c, rss) {
            if gw {
                r.target = Target::AtMost(48.0).text();
                r.met = Some(r.max <= 48.0);
            }
            rows.push(r);
        }
        #[expect(clippy::cast_precision_loss, reason = "KiB of maps")]
        let memlock: Vec<f64> = ts
            .iter()
            .map(|t| t.startup.map_memlock_kib as f64 / 1024.0)
            .collect();
        if c != Config::Strace
            && let Some(mut r) = row(group, "locked BPF map memory MiB", c, memlock)
        {
            if gw {
                r.target = Target::AtMost(8.0).text();
                r.met = Some(r.max <= 8.0);
            }
            rows.push(r);
        }
        if let Some(r) = row(
            group,
            "stop ms (SIGINT to exit)",
            c,
            ts.iter().map(|t| t.finished.stop_ms).collect(),
        ) {
            rows.push(r);
        }
    }
    rows
}

/// A figure with a sensible number of digits.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "-".to_owned()
    } else if a >= 1000.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn met_text(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "",
    }
}

fn cells(r: &Row) -> [String; 9] {
    [
        r.workload.clone(),
        r.metric.clone(),
        r.config.to_owned(),
        num(r.median),
        if r.n > 1 {
            format!("{}..{}", num(r.min), num(r.max))
        } else {
            String::new()
        },
        r.ratio
            .map(|x| format!("{:.1}%", x * 100.0))
            .unwrap_or_default(),
        r.target.clone(),
        met_text(r.met).to_owned(),
        r.tracer_cpu_ms_per_s.map(num).unwrap_or_default(),
    ]
}

const HEADERS: [&str; 9] = [
    "workload",
    "metric",
    "config",
    "median",
    "min..max",
    "vs baseline",
    "target",
    "met?",
    "tracer CPU ms/s",
];

/// The terminal table.
pub fn table(rows: &[Row]) -> String {
    let all: Vec<[String; 9]> = rows.iter().map(cells).collect();
    let mut width = HEADERS.map(str::len);
    for c in &all {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, c: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in c.iter().zip(width).enumerate() {
            // Numbers right-aligned, text left-aligned.
            if (3..=5).contains(&i) || i == 8 {
                let _ = write!(s, "{cell:>w$}  ");
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut out, &HEADERS.map(str::to_owned));
    let mut last = String::new();
    for c in &all {
        if c[0] != last {
            if !last.is_empty() {
                out.push('\n');
            }
            last.clone_from(&c[0]);
        }
        line(&mut out, c);
    }
    out
}

/// The JSON document: environment, options, every run, the summary.
pub fn json(env: &Env, opts: &Opts, runs: &[Run], rows: &[Row], elapsed: Duration) -> Value {
    json!({
        "schema": 1,
        "date": env.timestamp,
        "host": env.host,
        "kernel": env.kernel,
        "cpu_model": env.cpu_model,
        "cpus": env.cpus,
        "commit": env.commit,
        "gwtrace": env.bin,
        "tools": env.tools,
        "options": {
            "rounds": opts.rounds,
            "run_secs": opts.run_secs,
            "wrk_secs": opts.wrk_secs,
            "storm_secs": opts.storm_secs,
            "storm_threads": opts.storm_threads,
            "quick": opts.quick,
            "filter": opts.filter,
        },
        "configs": Config::OVERHEAD.iter().chain(&Config::STORM[2..]).map(|c| json!({"name": c.name(), "command": c.about()})).collect::<Vec<_>>(),
        "workloads": Workload::ALL.iter().map(|w| json!({"name": w.name(), "about": w.about()})).collect::<Vec<_>>(),
        "elapsed_s": elapsed.as_secs_f64(),
        "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
        "summary": rows,
    })
}

/// bench/results/latest.md.
pub fn markdown(
    env: &Env,
    opts: &Opts,
    rows: &[Row],
    runs: &[Run],
    elapsed: Duration,
    json_path: &Path,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "<!-- written by `cargo xtask bench`; do not edit -->");
    let _ = writeln!(
        md,
        "**{}** run of {} on `{}`: kernel {}, {} x {}; gwtrace {}.\n",
        if opts.quick {
            "Quick"
        } else if opts.filter.is_some() {
            "Partial"
        } else {
            "Full"
        },
        env.timestamp,
        env.host,
        env.kernel,
        env.cpus,
        env.cpu_model,
        env.commit,
    );
    let _ = writeln!(
        md,
        "{} rounds (configurations interleaved round-robin), {} s per loop workload, wrk {} s, storm {} s with {} threads{}; took {:.1} min. \
         Raw figures: `{}`.\n",
        opts.rounds,
        opts.run_secs,
        opts.wrk_secs,
        opts.storm_secs,
        opts.storm_threads,
        opts.filter
            .as_deref()
            .map(|f| format!(", workloads matching `{f}` only"))
            .unwrap_or_default(),
        elapsed.as_secs_f64() / 60.0,
        json_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let _ = writeln!(md, "| {} |", HEADERS.join(" | "));
    let _ = writeln!(
        md,
        "|{}|",
        [
            "---", "---", "---", "--:", "--:", "--:", "---", ":-:", "--:"
        ]
        .join("|")
    );
    for r in rows {
        let c = cells(r).map(|s| s.replace('|', "\\|"));
        let _ = writeln!(md, "| {} |", c.join(" | "));
    }
    let missed: Vec<&Row> = rows.iter().filter(|r| r.met == Some(false)).collect();
    let _ = writeln!(md);
    if missed.is_empty() {
        let _ = writeln!(md, "Every target met.");
    } else {
        let _ = writeln!(md, "Targets missed:\n");
        for r in missed {
            let what = if r.note.is_empty() {
                format!(
                    "{}{}",
                    num(r.median),
                    r.ratio
                        .map(|x| format!(" = {:.1}% of baseline", x * 100.0))
                        .unwrap_or_default()
                )
            } else {
                r.note.clone()
            };
            let _ = writeln!(
                md,
                "- {} / {} / {}: {what} (target {})",
                r.workload, r.metric, r.config, r.target
            );
        }
    }
    let failed = runs.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        let _ = writeln!(md, "\n{failed} runs failed; see the JSON file.");
    }
    let _ = writeln!(
        md,
        "\nRatios are medians over the baseline's median in the same run. Cost = 1 - ratio (throughput) \
         or ratio - 1 (time); \"below bpftrace\" allows 1 point of noise, \"far below strace\" means at most \
         a fifth of strace's cost (+1 point). Tracer CPU: the tracer's utime+stime from ready to exit, per \
         second of workload."
    );
    md
}
