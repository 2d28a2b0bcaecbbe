//! Collects what `gwtrace check` needs from the running system: the nginx masters and their
//! workers (/proc), their configuration (`nginx -T`, or the files themselves when `nginx -T`
//! cannot run), the listeners and socket paths, app servers' settings, `ss` accept queues,
//! systemd units. Everything is bounded in time (subprocesses are killed after a few seconds,
//! probe connects time out) and whatever cannot be seen is said in a note.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use super::apps::{
    UserCreds, lookup_user, parse_ss, parse_unit_show, tmpfiles_dirs, unit_of_cgroup,
};
use super::assess::{self, Proxy, World};
use super::nginx::{self, ConfFile, Dump, MasterArgs};
use super::proxies::{self, Kind};
use super::{ProxyReport, Report};
use crate::catalog::{
    AppSettings, PROXY_NAMES, app_server_in_cmdline, gunicorn_config_arg, gunicorn_settings,
    php_fpm_config_arg, php_fpm_includes, php_fpm_settings, uvicorn_settings, uwsgi_ini_arg,
    uwsgi_settings,
};
use crate::engine::{Target, covers, parse_target};
use crate::enrich::owners::{self, Budget, is_app_server};
use crate::event::monotonic_ns;
use crate::facts::NetNs;
use crate::facts::{FactSource as _, Listener, ProcInfo, ProxyConfig};
use crate::host::netns::{NetnsReader, net_ns_of};
use crate::host::{SystemFacts, procfs::listening_sockets};

/// How long gwtrace's own connect to a remote TCP upstream waits.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(700);
/// Longest wait for `nginx -T`, `ss`, `systemctl`.
const SUBPROCESS_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a host name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_millis(800);
/// Files read directly when `nginx -T` cannot run: at most this many.
const MAX_CONF_FILES: usize = 512;

/// Why `gwtrace check` could not run at all (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// `--proxy` or `--config` name nothing usable.
    #[error("{0}")]
    Usage(String),
    /// No proxy to check (proxies whose configuration gwtrace does not read are named).
    #[error(
        "no running nginx, haproxy, caddy or apache2 to check{0}; pass --config FILE to check an nginx configuration file"
    )]
    NothingToCheck(String),
}

/// What to check.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--proxy`: process names or pids (default: every nginx master).
    pub proxies: Vec<String>,
    /// `--config`: an nginx configuration file to check instead of the running ones.
    pub config: Option<PathBuf>,
}

/// One proxy to check.
struct Instance {
    kind: Kind,
    master: Option<ProcInfo>,
    args: MasterArgs,
    /// The binary to run `-T` with.
    bin: String,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn euid() -> u32 {
    // SAFETY: as above.
    unsafe { libc::geteuid() }
}

/// Runs a command with a deadline; (exit success, stdout, stderr), or why it could not run.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<(bool, String, String), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) | Err(_) => {
                // Our own child, by its handle.
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    match status {
        Some(st) => Ok((st.success(), stdout, stderr)),
        None => Err(format!("timed out after {} s", timeout.as_secs())),
    }
}

/// Masters of the proxies gwtrace reads (nginx, haproxy, caddy, apache2/httpd): such a
/// process whose parent is not the same program, and not gwtrace's own child.
fn readable_masters(procs: &[ProcInfo]) -> Vec<&ProcInfo> {
    let by_pid: HashMap<u32, &ProcInfo> = procs.iter().map(|p| (p.pid, p)).collect();
    let me = std::process::id();
    procs
        .iter()
        .filter(|p| Kind::of(&p.comm, None).is_some() && p.ppid != me)
        .filter(|p| by_pid.get(&p.ppid).is_none_or(|pp| pp.comm != p.comm))
        .collect()
}

/// nginx masters among them (`--config` checks an nginx file).
fn nginx_masters(procs: &[ProcInfo]) -> Vec<&ProcInfo> {
    readable_masters(procs)
        .into_iter()
        .filter(|p| p.comm == "nginx")
        .collect()
}

/// The binary of a running master: its executable (even if replaced on disk), else argv\[0\].
fn master_bin(m: &ProcInfo, args: &MasterArgs) -> String {
    match std::fs::read_link(format!("/proc/{}/exe", m.pid)) {
        Ok(p) => {
            let s = p.display().to_string();
            if s.ends_with(" (deleted)") {
                format!("/proc/{}/exe", m.pid)
            } else {
                s
            }
        }
        Err(_) if args.argv0.starts_with('/') => args.argv0.clone(),
        Err(_) => "nginx".to_owned(),
    }
}

fn instance_of(m: &ProcInfo) -> Instance {
    let args = nginx::master_args(&m.cmdline);
    Instance {
        kind: Kind::of(&m.comm, None).unwrap_or(Kind::Nginx),
        bin: master_bin(m, &args),
        master: Some(m.clone()),
        args,
    }
}

/// `--config FILE`: that file, with the workers of a running master started on it, if any.
fn select_config(conf: &Path, masters: &[&ProcInfo]) -> Result<Instance, CheckError> {
    let abs = std::path::absolute(conf).unwrap_or_else(|_| conf.to_path_buf());
    if let Err(e) = std::fs::metadata(&abs) {
        return Err(CheckError::Usage(format!(
            "--config {}: {e}",
            conf.display()
        )));
    }
    let abs_s = abs.display().to_string();
    let running = masters
        .iter()
        .find(|m| nginx::master_args(&m.cmdline).conf.as_deref() == Some(abs_s.as_str()));
    let mut inst = running.map_or_else(
        || Instance {
            kind: Kind::Nginx,
            master: None,
            args: MasterArgs::default(),
            bin: "nginx".to_owned(),
        },
        |m| instance_of(m),
    );
    inst.args.conf = Some(abs_s);
    Ok(inst)
}

/// The proxies to check, from `--proxy` and `--config`.
fn select(
    opts: &Options,
    procs: &[ProcInfo],
    notes: &mut Vec<String>,
) -> Result<Vec<Instance>, CheckError> {
    if let Some(conf) = &opts.config {
        return select_config(conf, &nginx_masters(procs)).map(|i| vec![i]);
    }
    let masters = readable_masters(procs);
    let by_pid: HashMap<u32, &ProcInfo> = procs.iter().map(|p| (p.pid, p)).collect();
    let mut chosen: BTreeSet<u32> = BTreeSet::new();
    let mut unparsed: BTreeSet<(String, u32)> = BTreeSet::new();
    let top_of = |pid: u32| {
        let mut cur = pid;
        for _ in 0..8 {
            let Some(p) = by_pid.get(&cur) else { break };
            match by_pid.get(&p.ppid) {
                Some(pp) if pp.comm == p.comm && pp.pid > 1 => cur = pp.pid,
                _ => break,
            }
        }
        cur
    };
    if opts.proxies.is_empty() {
        chosen.extend(masters.iter().map(|m| m.pid));
        for p in procs {
            if Kind::of(&p.comm, None).is_none() && PROXY_NAMES.contains(&p.comm.as_str()) {
                unparsed.insert((p.comm.clone(), top_of(p.pid)));
            }
        }
    }
    for a in &opts.proxies {
        if let Ok(pid) = a.parse::<u32>() {
            let Some(p) = by_pid.get(&pid) else {
                return Err(CheckError::Usage(format!("--proxy {pid}: no such process")));
            };
            let top = top_of(pid);
            if Kind::of(&p.comm, None).is_some() {
                chosen.insert(top);
            } else {
                unparsed.insert((p.comm.clone(), top));
            }
        } else {
            let named: Vec<&ProcInfo> = procs.iter().filter(|p| p.comm == *a).collect();
            if named.is_empty() {
                return Err(CheckError::Usage(format!(
                    "--proxy {a}: no running process is named {a:?} (check `ps -e -o comm`)"
                )));
            }
            if Kind::of(a, None).is_some() {
                chosen.extend(masters.iter().filter(|m| m.comm == *a).map(|m| m.pid));
            } else {
                for p in named {
                    unparsed.insert((p.comm.clone(), top_of(p.pid)));
                }
            }
        }
    }
    let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
    for (n, pid) in unparsed {
        by_name.entry(n).or_default().push(pid);
    }
    let mut names: Vec<_> = by_name.into_iter().collect();
    names.sort();
    for (n, pids) in &names {
        notes.push(format!(
            "found {n} (pid {}) but did not check it: gwtrace check reads nginx, haproxy, caddy and apache configurations",
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let out: Vec<Instance> = chosen
        .iter()
        .filter_map(|pid| by_pid.get(pid))
        .map(|m| instance_of(m))
        .collect();
    if out.is_empty() {
        let found = if names.is_empty() {
            String::new()
        } else {
            format!(
                " (found {}, which gwtrace check does not read)",
                names
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(CheckError::NothingToCheck(found));
    }
    Ok(out)
}

/// Expands an `include` pattern on disk (globs in any component), sorted.
fn glob_disk(pattern: &str) -> Vec<String> {
    if !nginx::has_glob(pattern) {
        return if Path::new(pattern).is_file() {
            vec![pattern.to_owned()]
        } else {
            Vec::new()
        };
    }
    let mut bases = vec![String::new()];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for b in &bases {
            if nginx::has_glob(comp) {
                let dir = if b.is_empty() { "/" } else { b.as_str() };
                let Ok(rd) = std::fs::read_dir(dir) else {
                    continue;
                };
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if (name.starts_with('.') && !comp.starts_with('.'))
                        || !nginx::glob_match(comp, &name)
                    {
                        continue;
                    }
                    next.push(format!("{b}/{name}"));
                }
            } else {
                next.push(format!("{b}/{comp}"));
            }
        }
        bases = next;
    }
    let mut files: Vec<String> = bases
        .into_iter()
        .filter(|p| Path::new(p).is_file())
        .collect();
    files.sort();
    files
}

/// Reads a configuration from its files (what `nginx -T` prints), following `include`.
fn read_from_disk(main: &str, notes: &mut Vec<String>) -> Option<Dump> {
    let mut dump = Dump::default();
    let mut queue = vec![main.to_owned()];
    let mut seen: BTreeSet<String> = BTreeSet::new();
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) || dump.files.len() >= MAX_CONF_FILES {
            continue;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                notes.push(format!("cannot read {path}: {e}"));
                if dump.files.is_empty() {
                    return None;
                }
                continue;
            }
        };
        let includes = nginx::includes_of(&text, &path).unwrap_or_else(|e| {
            notes.push(e.to_string());
            Vec::new()
        });
        dump.files.push(ConfFile { path, text });
        // Depth-first in file order, like nginx.
        for inc in includes.iter().rev() {
            for f in glob_disk(&nginx::include_path(inc, main)).into_iter().rev() {
                queue.push(f);
            }
        }
    }
    Some(dump)
}

/// The configuration file nginx uses without `-c` (its compiled-in `--conf-path`).
fn default_conf(bin: &str, prefix: Option<&str>) -> String {
    let v = run_bounded(Command::new(bin).arg("-V"), SUBPROCESS_TIMEOUT)
        .map(|(_, o, e)| format!("{o}{e}"))
        .unwrap_or_default();
    let flag = |name: &str| {
        v.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_owned)
    };
    let conf = flag("--conf-path=").unwrap_or_else(|| "conf/nginx.conf".to_owned());
    if conf.starts_with('/') {
        return conf;
    }
    let prefix = prefix
        .map(str::to_owned)
        .or_else(|| flag("--prefix="))
        .unwrap_or_else(|| "/usr/local/nginx/".to_owned());
    format!("{}/{conf}", prefix.trim_end_matches('/'))
}

/// How a configuration was read.
struct Loaded {
    dump: Option<Dump>,
    source: String,
    /// `nginx -t`'s complaint, when it rejected the configuration.
    invalid: Option<(String, String)>,
}

/// Reads an nginx configuration: `nginx -T` with the master's own flags, else its files.
fn load(inst: &Instance, notes: &mut Vec<String>) -> Loaded {
    let mut args = vec!["-T".to_owned()];
    args.extend(inst.args.test_args());
    let shown = format!("{} {}", inst.bin, args.join(" "));
    let main_guess = || {
        inst.args.conf.as_ref().map_or_else(
            || default_conf(&inst.bin, inst.args.prefix.as_deref()),
            |c| {
                if c.starts_with('/') {
                    c.clone()
                } else {
                    let p = inst.args.prefix.as_deref().unwrap_or("/usr/local/nginx/");
                    format!("{}/{c}", p.trim_end_matches('/'))
                }
            },
        )
    };
    let failure = match run_bounded(Command::new(&inst.bin).args(&args), SUBPROCESS_TIMEOUT) {
        Ok((true, out, _)) => match nginx::parse_dump(&out) {
            Ok(d) => {
                return Loaded {
                    dump: Some(d),
                    source: shown,
                    invalid: None,
                };
            }
            Err(e) => format!("{shown}: {e}"),
        },
        Ok((false, _, err)) => {
            let msg: Vec<&str> = err
                .lines()
                .filter(|l| l.contains("[emerg]") || l.contains("[alert]") || l.contains("failed"))
                .collect();
            let msg = msg.join("\n");
            let env_problem = msg.contains("Permission denied")
                || msg.contains("(13:")
                || msg.contains("super-user");
            if !env_problem && !msg.is_empty() {
                // nginx rejects the configuration itself.
                let main = main_guess();
                let dump = read_from_disk(&main, notes);
                return Loaded {
                    dump,
                    source: format!("{main} (read directly: nginx -t rejects it)"),
                    invalid: Some((main, msg)),
                };
            }
            format!(
                "{shown} failed as uid {}: {}",
                euid(),
                msg.lines().next().unwrap_or("no message")
            )
        }
        Err(e) => format!("{shown}: {e}"),
    };
    let main = main_guess();
    notes.push(format!(
        "{failure}: read the configuration files directly instead (files this user cannot read are missing)"
    ));
    Loaded {
        dump: read_from_disk(&main, notes),
        source: format!("{main} (read directly)"),
        invalid: None,
    }
}

fn read_or_empty(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_owned())
    })
}

/// The workers' credentials: a running worker's, else the configuration's `user`.
fn worker_creds(
    inst: &Instance,
    cfg: &nginx::NginxConfig,
    procs: &[ProcInfo],
    notes: &mut Vec<String>,
) -> (Option<u32>, UserCreds, String) {
    let passwd = read_or_empty("/etc/passwd");
    let group = read_or_empty("/etc/group");
    let label = |c: &UserCreds| {
        let name = user_name(&passwd, c.uid).unwrap_or_else(|| format!("uid {}", c.uid));
        let groups: Vec<String> = c.groups.iter().map(u32::to_string).collect();
        format!(
            "{name} (uid {}, gid {}, groups {})",
            c.uid,
            c.gid,
            groups.join(",")
        )
    };
    if let Some(m) = &inst.master {
        let mut workers: Vec<&ProcInfo> = procs
            .iter()
            .filter(|p| p.ppid == m.pid && p.comm == m.comm)
            .collect();
        workers.sort_by_key(|p| (!p.cmdline.contains("worker process"), p.pid));
        let src = workers.first().copied().unwrap_or(m);
        let c = UserCreds {
            uid: src.uid,
            gid: src.gid,
            groups: src.groups.clone(),
        };
        let how = if src.pid == m.pid {
            format!("the master pid {} (no worker processes)", m.pid)
        } else {
            format!("running worker pid {}", src.pid)
        };
        // Groups added since the workers started: they get them at the next reload.
        if let Some((user, grp, _)) = &cfg.user
            && let Ok(want) = lookup_user(&passwd, &group, user, grp.as_deref())
            && want.uid == c.uid
        {
            let missing: Vec<String> = want
                .groups
                .iter()
                .filter(|g| !c.groups.contains(g) && **g != c.gid)
                .map(|g| super::apps::group_name(&group, *g).unwrap_or_else(|| g.to_string()))
                .collect();
            if !missing.is_empty() {
                notes.push(format!(
                    "/etc/group puts {user} in {} but the running workers are not: they pick groups up when they \
                     start (nginx -s reload)",
                    missing.join(", ")
                ));
            }
        }
        return (
            (src.pid != m.pid).then_some(src.pid),
            c.clone(),
            format!("{} from {how}", label(&c)),
        );
    }
    let (user, grp, from) = match &cfg.user {
        Some((u, g, loc)) => (u.clone(), g.clone(), format!("user directive at {loc}")),
        None => (
            "nobody".to_owned(),
            None,
            "no user directive: nginx's default user nobody".to_owned(),
        ),
    };
    let grp = grp.or_else(|| {
        (user == "nobody" && lookup_user(&passwd, &group, "nobody", None).is_err())
            .then(|| "nogroup".to_owned())
    });
    match lookup_user(&passwd, &group, &user, grp.as_deref()) {
        Ok(c) => {
            let l = format!("{} from the {from}", label(&c));
            (None, c, l)
        }
        Err(e) => {
            notes.push(format!(
                "cannot resolve the workers' user ({from}): {e}; checked as uid 65534 (nobody)"
            ));
            let c = UserCreds {
                uid: 65_534,
                gid: 65_534,
                groups: vec![65_534],
            };
            (
                None,
                c,
                format!("uid 65534 (unresolved {user}) from the {from}"),
            )
        }
    }
}

/// Config files changed after the workers started: the check reads the new text, the workers
/// run the old one.
fn stale_config_note(dump: &Dump, procs: &[ProcInfo], master: u32) -> Option<String> {
    let newest_worker = procs
        .iter()
        .filter(|p| p.ppid == master)
        .map(|p| p.start_ns)
        .max()?;
    let uptime: f64 = read_or_empty("/proc/uptime")
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?;
    let boot = now.checked_sub(Duration::from_secs_f64(uptime))?;
    let changed: Vec<&str> = dump
        .files
        .iter()
        .filter(|f| {
            std::fs::metadata(&f.path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .and_then(|t| t.checked_sub(boot))
                .is_some_and(|t| t > Duration::from_nanos(newest_worker) + Duration::from_secs(1))
        })
        .map(|f| f.path.as_str())
        .collect();
    (!changed.is_empty()).then(|| {
        format!(
            "{} changed after nginx's workers started: this checks the file, the workers run the configuration \
             of their last (re)load",
            changed.join(", ")
        )
    })
}

/// Resolves host names, each bounded in time.
fn resolve(hosts: &[String]) -> HashMap<String, Result<Vec<IpAddr>, String>> {
    let handles: Vec<_> = hosts
        .iter()
        .map(|h| {
            let (tx, rx) = std::sync::mpsc::channel();
            let host = h.clone();
            std::thread::spawn(move || {
                use std::net::ToSocketAddrs as _;
                let r = (host.as_str(), 0)
                    .to_socket_addrs()
                    .map(|it| {
                        let mut v: Vec<IpAddr> = it.map(|a| a.ip()).collect();
                        v.sort();
                        v.dedup();
                        v
                    })
                    .map_err(|e| e.to_string());
                let _ = tx.send(r);
            });
            (h.clone(), rx)
        })
        .collect();
    let deadline = Instant::now() + RESOLVE_TIMEOUT;
    handles
        .into_iter()
        .map(|(h, rx)| {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = rx.recv_timeout(left).unwrap_or_else(|_| {
                Err(format!(
                    "no answer within {} ms",
                    RESOLVE_TIMEOUT.as_millis()
                ))
            });
            (h, r)
        })
        .collect()
}

/// Is this address one of this host's (a connect to it stays on the machine)?
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Connects to the remote TCP targets in parallel: errno per target (0 = accepted).
fn probe_remote(targets: &[(String, SocketAddr)]) -> HashMap<String, i32> {
    let handles: Vec<_> = targets
        .iter()
        .map(|(t, addr)| {
            let addr = *addr;
            (
                t.clone(),
                std::thread::spawn(move || {
                    match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
                        Ok(_) => 0,
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => 110,
                        Err(e) => e.raw_os_error().unwrap_or(111),
                    }
                }),
            )
        })
        .collect();
    handles
        .into_iter()
        .map(|(t, h)| (t, h.join().unwrap_or(110)))
        .collect()
}

fn environ_var(pid: u32, name: &str) -> Result<Option<String>, std::io::Error> {
    let env = std::fs::read(format!("/proc/{pid}/environ"))?;
    let prefix = format!("{name}=");
    Ok(env
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&prefix).map(str::to_owned)))
}

/// A path as the process sees it (relative paths are relative to its working directory).
fn in_cwd(pid: u32, path: &str) -> String {
    if path.starts_with('/') {
        return path.to_owned();
    }
    std::fs::read_link(format!("/proc/{pid}/cwd")).map_or_else(
        |_| path.to_owned(),
        |cwd| cwd.join(path).display().to_string(),
    )
}

/// The settings of the app server rooted at `root`.
fn app_settings(p: &ProcInfo, notes: &mut Vec<String>) -> Option<AppSettings> {
    let server = app_server_in_cmdline(&p.cmdline)?;
    match server {
        "gunicorn" => {
            let env = match environ_var(p.pid, "GUNICORN_CMD_ARGS") {
                Ok(v) => v,
                Err(e) => {
                    notes.push(format!(
                        "gunicorn pid {}: cannot read its environment ({e}): GUNICORN_CMD_ARGS not considered",
                        p.pid
                    ));
                    None
                }
            };
            let conf_path = gunicorn_config_arg(&p.cmdline)
                .map(|c| in_cwd(p.pid, &c))
                .or_else(|| {
                    let d = in_cwd(p.pid, "gunicorn.conf.py");
                    Path::new(&d).is_file().then_some(d)
                });
            let conf = conf_path.and_then(|c| match std::fs::read_to_string(&c) {
                Ok(t) => Some((c, t)),
                Err(e) => {
                    notes.push(format!("gunicorn pid {}: cannot read {c}: {e}", p.pid));
                    None
                }
            });
            let s = gunicorn_settings(
                &p.cmdline,
                env.as_deref(),
                conf.as_ref().map(|(c, t)| (c.as_str(), t.as_str())),
            )?;
            if s.flags_hidden {
                notes.push(format!(
                    "gunicorn pid {}: its process title hides its flags (setproctitle): assumed its defaults",
                    p.pid
                ));
            }
            Some(s)
        }
        "uwsgi" => {
            let ini = uwsgi_ini_arg(&p.cmdline).and_then(|i| {
                let path = in_cwd(p.pid, &i);
                std::fs::read_to_string(&path).ok().map(|t| (path, t))
            });
            uwsgi_settings(
                &p.cmdline,
                ini.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
            )
        }
        "uvicorn" => uvicorn_settings(&p.cmdline),
        "php-fpm" => {
            let files = php_fpm_files(p, notes);
            let files: Vec<(&str, &str)> = files
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            php_fpm_settings(&p.cmdline, &files)
        }
        _ => None,
    }
}

/// php-fpm's configuration files as the master sees them (through `/proc/PID/root`): the main
/// one its process title names and the pool files it includes (`pool.d/*.conf`), as
/// `(path, text)`.
fn php_fpm_files(p: &ProcInfo, notes: &mut Vec<String>) -> Vec<(String, String)> {
    let root = format!("/proc/{}/root", p.pid);
    let read = |path: &str| std::fs::read_to_string(format!("{root}{path}"));
    let Some(main) = php_fpm_config_arg(&p.cmdline) else {
        notes.push(format!(
            "php-fpm pid {}: its configuration file is not on its command line: request_terminate_timeout unknown",
            p.pid
        ));
        return Vec::new();
    };
    let text = match read(&main) {
        Ok(t) => t,
        Err(e) => {
            notes.push(format!("php-fpm pid {}: cannot read {main}: {e}", p.pid));
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for inc in php_fpm_includes(&text) {
        let inc = if inc.starts_with('/') {
            inc
        } else {
            let dir = Path::new(&main).parent().unwrap_or(Path::new("/"));
            dir.join(&inc).display().to_string()
        };
        let (dir, name) = inc.rsplit_once('/').unwrap_or(("", inc.as_str()));
        let Some((prefix, suffix)) = name.split_once('*') else {
            if let Ok(t) = read(&inc) {
                files.push((inc.clone(), t));
            }
            continue;
        };
        let mut names: Vec<String> = std::fs::read_dir(format!("{root}{dir}"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(prefix) && n.ends_with(suffix))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        for n in names {
            let path = format!("{dir}/{n}");
            if let Ok(t) = read(&path) {
                files.push((path, t));
            }
        }
    }
    files.push((main, text));
    files
}

/// The systemd unit of an app and the directories it creates at start.
fn unit_dirs(p: &ProcInfo) -> Result<super::apps::UnitDirs, String> {
    let Some(unit) = unit_of_cgroup(&p.cgroup) else {
        return Err(format!(
            "pid {} runs in cgroup {:?}, not a systemd service",
            p.pid, p.cgroup
        ));
    };
    match run_bounded(
        Command::new("systemctl").args([
            "show",
            "-p",
            "RuntimeDirectory",
            "-p",
            "ExecStartPre",
            &unit,
        ]),
        SUBPROCESS_TIMEOUT,
    ) {
        Ok((true, out, _)) => Ok(parse_unit_show(&unit, &out)),
        Ok((false, _, err)) => Err(format!(
            "systemctl show {unit} failed: {}",
            err.lines().next().unwrap_or("")
        )),
        Err(e) => Err(format!("systemctl show {unit}: {e}")),
    }
}

fn tmpfiles() -> Option<Vec<String>> {
    let mut any = false;
    let mut dirs = Vec::new();
    for d in [
        "/etc/tmpfiles.d",
        "/run/tmpfiles.d",
        "/usr/local/lib/tmpfiles.d",
        "/usr/lib/tmpfiles.d",
    ] {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        any = true;
        for e in rd.flatten() {
            if let Ok(t) = std::fs::read_to_string(e.path()) {
                dirs.extend(tmpfiles_dirs(&t));
            }
        }
    }
    any.then_some(dirs)
}

/// Every listening socket, with the owners that matter: app servers' sockets (the
/// wrong-target candidates) and whoever serves the targets. Scanning every process's file
/// descriptors is the slow part of a check on a busy host, so app servers are scanned first
/// and the rest only until each target's listener has its owner (lowest pid first: the
/// master of a forked family).
fn listeners(
    sockets: Vec<(String, u64)>,
    procs: &[ProcInfo],
    targets: &BTreeSet<String>,
    net_ns: Option<u64>,
) -> Vec<Listener> {
    let listening: BTreeSet<u64> = sockets.iter().map(|(_, i)| *i).collect();
    let mut wanted: BTreeSet<u64> = sockets
        .iter()
        .filter(|(t, _)| targets.iter().any(|x| covers(t, x)))
        .map(|(_, i)| *i)
        .collect();
    let mut order: Vec<&ProcInfo> = procs.iter().collect();
    order.sort_by_key(|p| p.pid);
    let (apps, others): (Vec<&ProcInfo>, Vec<&ProcInfo>) = order
        .into_iter()
        .partition(|p| is_app_server(&p.comm, &p.cmdline));
    let pids = |ps: &[&ProcInfo]| ps.iter().map(|p| p.pid).collect::<Vec<u32>>();
    let mut src = SystemFacts::new();
    let mut by_inode: HashMap<u64, u32> = HashMap::new();
    let mut budget = Budget::unlimited();
    owners::scan(
        &mut src,
        &pids(&apps),
        &listening,
        &mut by_inode,
        &mut wanted,
        false,
        &mut budget,
    );
    owners::scan(
        &mut src,
        &pids(&others),
        &listening,
        &mut by_inode,
        &mut wanted,
        true,
        &mut budget,
    );
    let by_pid: HashMap<u32, &ProcInfo> = procs.iter().map(|p| (p.pid, p)).collect();
    let owners: HashMap<u64, &ProcInfo> = by_inode
        .into_iter()
        .filter_map(|(i, pid)| by_pid.get(&pid).map(|p| (i, *p)))
        .collect();
    sockets
        .into_iter()
        .map(|(target, inode)| {
            let owner = owners.get(&inode);
            let mut target = target;
            // A relative bind path is relative to the owner's working directory.
            if let (Some(rel), Some(o)) = (target.strip_prefix("unix:"), owner)
                && !rel.starts_with('/')
                && !rel.starts_with('@')
            {
                target = format!("unix:{}", in_cwd(o.pid, rel));
            }
            Listener {
                target,
                pid: owner.map(|o| o.pid),
                comm: owner.map(|o| o.comm.clone()),
                backlog: None,
                net_ns,
            }
        })
        .collect()
}

/// One proxy's configuration, read and resolved.
struct Checked {
    proxy: Proxy,
    targets: assess::Targets,
    /// (main file, nginx's message) when `nginx -t` rejects the configuration.
    invalid: Option<(String, String)>,
}

/// Reads one nginx's configuration and who its workers are.
fn load_proxy(inst: &Instance, procs: &[ProcInfo]) -> (Proxy, Option<(String, String)>) {
    if inst.kind != Kind::Nginx
        && let Some(m) = &inst.master
    {
        return (load_other(inst, m, procs), None);
    }
    let mut notes = Vec::new();
    let l = load(inst, &mut notes);
    let cfg = match l.dump.as_ref().map(nginx::analyze) {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            notes.push(format!("cannot parse the configuration: {e}"));
            nginx::NginxConfig::default()
        }
        None => nginx::NginxConfig::default(),
    };
    if let (Some(d), Some(m)) = (&l.dump, &inst.master) {
        notes.extend(stale_config_note(d, procs, m.pid));
    }
    let (worker, creds, worker_label) = worker_creds(inst, &cfg, procs, &mut notes);
    let master = inst.master.as_ref().map_or(0, |m| m.pid);
    let mut pids = Vec::new();
    if master != 0 {
        pids.push(master);
        pids.extend(procs.iter().filter(|p| p.ppid == master).map(|p| p.pid));
    }
    let proxy = Proxy {
        comm: "nginx".to_owned(),
        master,
        pids,
        worker,
        creds,
        worker_label,
        source: l.source,
        config: cfg,
        notes,
        net_ns: foreign_net_ns(master),
    };
    (proxy, l.invalid)
}

/// Reads the configuration of a running haproxy, caddy or apache and who its workers are.
fn load_other(inst: &Instance, m: &ProcInfo, procs: &[ProcInfo]) -> Proxy {
    let mut notes = Vec::new();
    let (source, config) = match proxies::configured_upstreams(m) {
        Ok(c) => (c.source, c.config),
        Err(e) => {
            notes.push(format!("cannot read the configuration: {e}"));
            (
                format!("{} pid {}", inst.kind.name(), m.pid),
                nginx::NginxConfig::default(),
            )
        }
    };
    let (worker, creds, worker_label) = worker_creds(inst, &config, procs, &mut notes);
    let mut pids = vec![m.pid];
    pids.extend(
        procs
            .iter()
            .filter(|p| p.ppid == m.pid && p.comm == m.comm)
            .map(|p| p.pid),
    );
    Proxy {
        comm: m.comm.clone(),
        master: m.pid,
        pids,
        worker,
        creds,
        worker_label,
        source,
        config,
        notes,
        net_ns: foreign_net_ns(m.pid),
    }
}

/// The network namespace of a running proxy when it is not gwtrace's own.
fn foreign_net_ns(master: u32) -> Option<u64> {
    if master == 0 {
        return None;
    }
    let ns = net_ns_of(&master.to_string())?;
    (Some(ns) != net_ns_of("self")).then_some(ns)
}

/// Proxies living in another network namespace than gwtrace (a container, `ip netns exec`):
/// their connects are judged from there.
struct Elsewhere {
    net_ns: u64,
    comm: String,
    master: u32,
    pids: Vec<u32>,
    targets: BTreeSet<String>,
}

fn elsewhere(loaded: &[Checked]) -> Vec<Elsewhere> {
    loaded
        .iter()
        .filter_map(|l| {
            Some(Elsewhere {
                net_ns: l.proxy.net_ns?,
                comm: l.proxy.comm.clone(),
                master: l.proxy.master,
                pids: l.proxy.pids.clone(),
                targets: l.targets.by_target.keys().cloned().collect(),
            })
        })
        .collect()
}

/// The listeners of each other namespace a proxy lives in (`sock_diag` and /proc/net/unix read
/// there by a helper thread), and gwtrace's probe connects to its remote targets made from
/// there. Only when its sockets could be read are the proxy's processes placed in it (else
/// its targets are judged from gwtrace's own namespace, and a note says so).
fn other_namespaces(
    procs: &[ProcInfo],
    elsewhere: &[Elsewhere],
    world: &mut World,
    notes: &mut Vec<String>,
) {
    let mut reader = NetnsReader::default();
    let mut done: BTreeSet<u64> = BTreeSet::new();
    for e in elsewhere {
        let ns = e.net_ns;
        if done.insert(ns) {
            match reader.read(ns, e.master) {
                Ok(s) => {
                    let targets: BTreeSet<String> = elsewhere
                        .iter()
                        .filter(|x| x.net_ns == ns)
                        .flat_map(|x| x.targets.iter().cloned())
                        .collect();
                    world
                        .listeners
                        .extend(listeners(s.listeners(), procs, &targets, Some(ns)));
                    let inet: Vec<(String, SocketAddr)> = targets
                        .iter()
                        .filter_map(|t| match parse_target(t) {
                            Target::Inet(ip, port) => Some((t.clone(), SocketAddr::new(ip, port))),
                            _ => None,
                        })
                        .collect();
                    world.remote_in.insert(
                        ns,
                        probe_remote_in(&format!("/proc/{}/ns/net", e.master), &inet),
                    );
                }
                Err(err) => {
                    notes.push(format!(
                        "{} pid {} lives in network namespace net:[{ns}], whose sockets could not be read ({err}):                          its TCP targets are judged from gwtrace's own namespace",
                        e.comm, e.master
                    ));
                    continue;
                }
            }
        } else if !world.remote_in.contains_key(&ns) {
            continue;
        }
        world
            .net_ns
            .extend(e.pids.iter().map(|&pid| NetNs { pid, net_ns: ns }));
    }
}

/// Connects to TCP targets from inside the network namespace `ns_path` (one thread each,
/// entering it first), like [`probe_remote`]: the targets local to that namespace are left
/// out (its listener table answers for them).
fn probe_remote_in(ns_path: &str, targets: &[(String, SocketAddr)]) -> HashMap<String, i32> {
    let handles: Vec<_> = targets
        .iter()
        .map(|(t, addr)| {
            let addr = *addr;
            let ns_path = ns_path.to_owned();
            (
                t.clone(),
                std::thread::spawn(move || -> Option<i32> {
                    let f = std::fs::File::open(&ns_path).ok()?;
                    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
                    if is_local(addr.ip()) {
                        return None;
                    }
                    Some(match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
                        Ok(_) => 0,
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => 110,
                        Err(e) => e.raw_os_error().unwrap_or(111),
                    })
                }),
            )
        })
        .collect();
    handles
        .into_iter()
        .filter_map(|(t, h)| Some((t, h.join().ok()??)))
        .collect()
}

/// Where a chrooted proxy (haproxy's `chroot`) reaches a unix target: the chroot directory as
/// its configuration names it, and the master whose root it is under.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Chroot {
    dir: String,
    master: u32,
}

impl Chroot {
    /// Where gwtrace reads the chroot: through the master's root (its mount namespace; the
    /// master itself does not chroot), or as named when no process runs (`--config`).
    fn seen(&self) -> PathBuf {
        let base = if self.master == 0 {
            PathBuf::from("/")
        } else {
            PathBuf::from(format!("/proc/{}/root", self.master))
        };
        base.join(self.dir.trim_start_matches('/'))
    }
}

/// The unix targets of chrooted proxies, by target (the first proxy's chroot when several
/// name one), and a note for each chroot saying where its paths are.
fn chroots(loaded: &[Checked], notes: &mut Vec<String>) -> BTreeMap<String, Chroot> {
    let mut out = BTreeMap::new();
    for l in loaded {
        let Some((dir, loc)) = &l.proxy.config.chroot else {
            continue;
        };
        let unix: Vec<&String> = l
            .targets
            .by_target
            .keys()
            .filter(|t| matches!(parse_target(t), Target::UnixPath(_)))
            .collect();
        if unix.is_empty() {
            continue;
        }
        let dir = dir.trim_end_matches('/');
        for t in &unix {
            out.entry((*t).clone()).or_insert_with(|| Chroot {
                dir: dir.to_owned(),
                master: l.proxy.master,
            });
        }
        let first = unix[0].trim_start_matches("unix:");
        notes.push(format!(
            "{loc}: {} pid {} runs chrooted in {dir} (chroot): its unix server paths are resolved under it              ({first} is {dir}{first} on the host) and checked there",
            l.proxy.comm, l.proxy.master
        ));
    }
    out
}

/// A socket bound at `DIR/P` is the one a proxy chrooted in `DIR` reaches as `P`: the socket
/// table gets that name too, so the target's listener is found.
fn chroot_aliases(sockets: &mut Vec<(String, u64)>, chroots: &BTreeMap<String, Chroot>) {
    let mut aliases = Vec::new();
    for (t, c) in chroots {
        let Some(p) = t.strip_prefix("unix:") else {
            continue;
        };
        let host = format!("unix:{}{p}", c.dir);
        aliases.extend(
            sockets
                .iter()
                .filter(|(s, _)| *s == host)
                .map(|(_, inode)| (t.clone(), *inode)),
        );
    }
    sockets.extend(aliases);
}

/// Facts about every target at once: listeners, path walks (under a chrooted proxy's chroot),
/// remote probes, accept queues, the app servers behind the targets and their units.
fn collect(
    procs: Vec<ProcInfo>,
    all_targets: &BTreeSet<String>,
    (elsewhere, chroots): (&[Elsewhere], &BTreeMap<String, Chroot>),
    world: &mut World,
    notes: &mut Vec<String>,
) {
    let mut sockets = listening_sockets();
    chroot_aliases(&mut sockets, chroots);
    world.listeners = listeners(sockets, &procs, all_targets, None);
    other_namespaces(&procs, elsewhere, world, notes);
    world.processes = procs;
    if !is_root() {
        notes.push(format!(
            "not root (uid {}): who owns other users' sockets is not visible (/proc/PID/fd), so listeners are \
             checked but their processes (and wrong-target candidates) mostly not",
            euid()
        ));
    }
    let mut remote = Vec::new();
    for t in all_targets {
        match parse_target(t) {
            Target::UnixPath(p) => {
                let root = chroots.get(t).map(Chroot::seen);
                let (info, blocked) = SystemFacts::path_walk_in(root.as_deref(), p);
                if let Some((comp, e)) = blocked {
                    notes.push(format!(
                        "{t}: cannot look into {comp} as uid {} ({e}): run as root to check it",
                        euid()
                    ));
                } else {
                    world.paths.push(info);
                }
            }
            Target::Inet(ip, port) if !is_local(ip) => {
                remote.push((t.clone(), SocketAddr::new(ip, port)));
            }
            _ => {}
        }
    }
    world.remote = probe_remote(&remote);
    match run_bounded(Command::new("ss").arg("-Hlnxt"), SUBPROCESS_TIMEOUT) {
        Ok((true, out, _)) => world.queues = parse_ss(&out),
        Ok((false, _, err)) => notes.push(format!(
            "ss -Hlnxt failed ({}): listen backlogs not checked",
            err.lines().next().unwrap_or("")
        )),
        Err(e) => notes.push(format!("ss: {e}: listen backlogs not checked")),
    }
    let roots: BTreeSet<u32> = all_targets
        .iter()
        .filter_map(|t| assess::listener_for(&world.listeners, t).and_then(|l| l.pid))
        .map(|pid| assess::app_root(&world.processes, pid))
        .collect();
    let volatile_unix = all_targets.iter().any(|t| {
        t.strip_prefix("unix:").is_some_and(|p| {
            p.starts_with("/run/") || p.starts_with("/var/run/") || p.starts_with("/tmp/")
        })
    });
    for r in roots {
        let Some(p) = world.processes.iter().find(|p| p.pid == r).cloned() else {
            continue;
        };
        if let Some(s) = app_settings(&p, notes) {
            world.apps.insert(r, s);
        }
        if volatile_unix {
            world.units.insert(r, unit_dirs(&p));
        }
    }
    if volatile_unix {
        world.tmpfiles = tmpfiles();
    }
}

/// Proxy masters among processes: a proxy (by name) whose parent is not the same program, and
/// not gwtrace's own child (the `nginx -T` it runs to read a configuration).
#[must_use]
pub fn proxy_masters(procs: &[ProcInfo]) -> Vec<&ProcInfo> {
    let by_pid: HashMap<u32, &ProcInfo> = procs.iter().map(|p| (p.pid, p)).collect();
    let me = std::process::id();
    procs
        .iter()
        .filter(|p| PROXY_NAMES.contains(&p.comm.as_str()) && p.ppid != me)
        .filter(|p| by_pid.get(&p.ppid).is_none_or(|pp| pp.comm != p.comm))
        .collect()
}

/// The upstream targets a running proxy master is configured for, read the way `gwtrace
/// check` reads them (for nginx: `nginx -T` with the master's own binary and flags, else its
/// files; names resolved, each within a bound). One arm per proxy whose configuration gwtrace
/// reads: nginx only, so far. Bounded in time: the subprocess and name lookups have deadlines.
pub fn proxy_upstreams(master: &ProcInfo) -> Result<ProxyConfig, String> {
    let exe = std::fs::read_link(format!("/proc/{}/exe", master.pid))
        .ok()
        .map(|p| p.display().to_string());
    match Kind::of(&master.comm, exe.as_deref()) {
        Some(Kind::Nginx) => nginx_upstreams(master),
        Some(_) => other_upstreams(master),
        None => Err(format!(
            "{} pid {}: gwtrace reads the configurations of nginx, haproxy, caddy and apache only",
            master.comm, master.pid
        )),
    }
}

/// [`proxy_upstreams`] of a haproxy, caddy or apache master: its files, names resolved.
fn other_upstreams(master: &ProcInfo) -> Result<ProxyConfig, String> {
    let c = proxies::configured_upstreams(master)?;
    let resolved = resolve(&assess::hosts(&c.config));
    let t = assess::targets(&c.config, &resolved);
    Ok(ProxyConfig {
        pid: master.pid,
        kind: c.kind.name().to_owned(),
        source: c.source,
        targets: t.by_target.into_keys().collect(),
        partial: !c.config.notes.is_empty() || !t.notes.is_empty(),
    })
}

fn nginx_upstreams(master: &ProcInfo) -> Result<ProxyConfig, String> {
    let inst = instance_of(master);
    let mut notes = Vec::new();
    let l = load(&inst, &mut notes);
    let dump = l
        .dump
        .ok_or_else(|| format!("{}: {}", l.source, notes.join("; ")))?;
    let cfg = nginx::analyze(&dump).map_err(|e| format!("{}: {e}", l.source))?;
    let resolved = resolve(&assess::hosts(&cfg));
    let t = assess::targets(&cfg, &resolved);
    let variable = cfg
        .passes
        .iter()
        .any(|p| matches!(p.dest, nginx::Dest::Variable(_)));
    Ok(ProxyConfig {
        pid: master.pid,
        kind: "nginx".to_owned(),
        source: l.source,
        targets: t.by_target.into_keys().collect(),
        partial: variable || !t.notes.is_empty(),
    })
}

/// Runs `gwtrace check`.
pub fn run(opts: &Options) -> Result<Report, CheckError> {
    let t0 = Instant::now();
    let step = |what: &str| log::debug!("check: {what} at {} ms", t0.elapsed().as_millis());
    let procs = SystemFacts::new().processes();
    step("processes");
    let mut report = Report::default();
    let instances = select(opts, &procs, &mut report.notes)?;
    // Configurations first: they say which targets to look at.
    let proxies: Vec<(Proxy, Option<(String, String)>)> =
        instances.iter().map(|i| load_proxy(i, &procs)).collect();
    step("configurations");
    let mut hosts: Vec<String> = proxies
        .iter()
        .flat_map(|(p, _)| assess::hosts(&p.config))
        .collect();
    hosts.sort();
    hosts.dedup();
    let mut world = World {
        now_ns: monotonic_ns(),
        resolved: resolve(&hosts),
        probe_timeout_ms: u64::try_from(PROBE_TIMEOUT.as_millis()).unwrap_or(700),
        ncpu: std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(1)),
        ..World::default()
    };
    let loaded: Vec<Checked> = proxies
        .into_iter()
        .map(|(proxy, invalid)| Checked {
            targets: assess::targets(&proxy.config, &world.resolved),
            proxy,
            invalid,
        })
        .collect();
    let all_targets: BTreeSet<String> = loaded
        .iter()
        .flat_map(|l| l.targets.by_target.keys().cloned())
        .collect();
    let elsewhere = elsewhere(&loaded);
    let chroots = chroots(&loaded, &mut report.notes);
    collect(
        procs,
        &all_targets,
        (&elsewhere, &chroots),
        &mut world,
        &mut report.notes,
    );
    step("facts");
    for l in loaded {
        let mut pr: ProxyReport = assess::evaluate(&l.proxy, &l.targets, &world);
        if let Some((file, msg)) = l.invalid {
            pr.findings.insert(
                0,
                assess::config_invalid(&l.proxy, world.now_ns, &file, &msg, l.proxy.master != 0),
            );
        }
        if l.targets.by_target.is_empty() && pr.findings.is_empty() {
            let which = match Kind::of(&l.proxy.comm, None) {
                Some(Kind::Haproxy) => "server lines in backend or listen sections",
                Some(Kind::Caddy) => "reverse_proxy, php_fastcgi",
                Some(Kind::Apache) => "ProxyPass, BalancerMember, SetHandler proxy:",
                _ => "proxy_pass, uwsgi_pass, fastcgi_pass, ...",
            };
            pr.notes
                .push(format!("no upstream target ({which}) in the configuration"));
        }
        report.proxies.push(pr);
    }
    report.elapsed_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
    step("done");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// haproxy chrooted in a directory: its unix server `/run/app.sock` is read under the
    /// chroot (through the master's root), and a socket bound at the chroot's path is the
    /// target's listener, under the name haproxy connects to.
    #[test]
    fn a_chrooted_haproxys_unix_servers_resolve_under_its_chroot() {
        let config = super::super::haproxy::parse(&[ConfFile {
            path: "/etc/haproxy/haproxy.cfg".into(),
            text: include_str!("../../../tests/fixtures/haproxy/chroot.cfg").into(),
        }]);
        let proxy = Proxy {
            comm: "haproxy".into(),
            config,
            ..Proxy::default()
        };
        let checked = Checked {
            targets: assess::targets(&proxy.config, &HashMap::new()),
            proxy,
            invalid: None,
        };
        let mut notes = Vec::new();
        let roots = chroots(std::slice::from_ref(&checked), &mut notes);
        let want = Chroot {
            dir: "/var/lib/haproxy".into(),
            master: 0,
        };
        assert_eq!(
            roots.into_iter().collect::<Vec<_>>(),
            [("unix:/run/app.sock".to_owned(), want.clone())],
            "TCP servers have no chroot"
        );
        assert_eq!(want.seen(), Path::new("/var/lib/haproxy"));
        assert_eq!(
            Chroot {
                master: 42,
                ..want.clone()
            }
            .seen(),
            Path::new("/proc/42/root/var/lib/haproxy")
        );
        assert!(
            notes[0].contains("haproxy.cfg:2: haproxy pid 0 runs chrooted in /var/lib/haproxy")
                && notes[0].contains("/run/app.sock is /var/lib/haproxy/run/app.sock on the host"),
            "{notes:?}"
        );
        let mut sockets = vec![
            ("unix:/var/lib/haproxy/run/app.sock".to_owned(), 7),
            ("unix:/run/other.sock".to_owned(), 8),
        ];
        let roots = BTreeMap::from([("unix:/run/app.sock".to_owned(), want)]);
        chroot_aliases(&mut sockets, &roots);
        assert_eq!(sockets.last(), Some(&("unix:/run/app.sock".to_owned(), 7)));
        assert_eq!(sockets.len(), 3);
    }

    /// php-fpm's pools read as its master sees them (`/proc/PID/root`, here this test's own
    /// root): the shortest `request_terminate_timeout` of the included pools.
    #[test]
    fn php_fpm_request_terminate_timeout_from_its_pools() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("pool.d")).unwrap();
        let main = d.join("php-fpm.conf");
        std::fs::write(&main, "[global]\ninclude=pool.d/*.conf\n").unwrap();
        std::fs::write(
            d.join("pool.d/www.conf"),
            "[www]\nrequest_terminate_timeout = 30s\n",
        )
        .unwrap();
        std::fs::write(
            d.join("pool.d/api.conf"),
            "[api]\nrequest_terminate_timeout = 1m\n",
        )
        .unwrap();
        std::fs::write(
            d.join("pool.d/notes.txt"),
            "request_terminate_timeout = 1\n",
        )
        .unwrap();
        let p = ProcInfo {
            pid: std::process::id(),
            cmdline: format!("php-fpm: master process ({})", main.display()),
            ..ProcInfo::default()
        };
        let mut notes = Vec::new();
        let s = app_settings(&p, &mut notes).expect("php-fpm settings");
        let t = s.kill_timeout.expect("a terminate timeout");
        assert_eq!(t.value, 30, "{t:?} {notes:?}");
        assert!(t.from.contains("pool.d/www.conf:2"), "{}", t.from);
    }

    #[test]
    fn reads_a_configuration_from_disk_in_nginx_t_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("conf.d")).unwrap();
        let main = d.join("nginx.conf");
        std::fs::write(
            &main,
            "user www-data;\nhttp {\n  include conf.d/*.conf;\n  include snippets/none*.conf;\n}\n",
        )
        .unwrap();
        std::fs::write(
            d.join("conf.d/b.conf"),
            "server {\n  location / {\n    include params;\n    proxy_pass http://unix:/run/b.sock:;\n  }\n}\n",
        )
        .unwrap();
        std::fs::write(
            d.join("conf.d/a.conf"),
            "server { location / { proxy_pass http://127.0.0.1:8000; } }\n",
        )
        .unwrap();
        std::fs::write(d.join("conf.d/.hidden.conf"), "garbage {").unwrap();
        std::fs::write(d.join("params"), "proxy_read_timeout 5s;\n").unwrap();
        let main = main.display().to_string();
        let mut notes = Vec::new();
        let dump = read_from_disk(&main, &mut notes).unwrap();
        let names: Vec<String> = dump
            .files
            .iter()
            .map(|f| {
                f.path
                    .trim_start_matches(&d.display().to_string())
                    .to_owned()
            })
            .collect();
        assert_eq!(
            names,
            ["/nginx.conf", "/conf.d/a.conf", "/conf.d/b.conf", "/params"]
        );
        assert!(notes.is_empty(), "{notes:?}");
        let cfg = nginx::analyze(&dump).unwrap();
        let b = cfg
            .passes
            .iter()
            .find(|p| p.loc.file.ends_with("b.conf"))
            .unwrap();
        assert_eq!((b.loc.line, b.read_timeout.value), (4, 5_000));
        assert!(read_from_disk("/nonexistent/nginx.conf", &mut notes).is_none());
        assert!(notes[0].contains("cannot read /nonexistent/nginx.conf"));
    }

    #[test]
    fn subprocesses_are_bounded() {
        let t0 = Instant::now();
        let r = run_bounded(Command::new("sleep").arg("5"), Duration::from_millis(100));
        assert!(r.is_err_and(|e| e.contains("timed out")));
        assert!(t0.elapsed() < Duration::from_secs(2));
        let (ok, out, _) = run_bounded(Command::new("echo").arg("hi"), SUBPROCESS_TIMEOUT).unwrap();
        assert!(ok && out == "hi\n");
        assert!(run_bounded(&mut Command::new("/nonexistent/bin"), SUBPROCESS_TIMEOUT).is_err());
    }
}
