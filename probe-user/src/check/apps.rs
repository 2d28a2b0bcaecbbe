//! Pure readers of what surrounds the proxy: an app server's settings from its command line
//! (and `GUNICORN_CMD_ARGS`, its config file), users and groups from /etc/passwd and /etc/group,
//! listen queues from `ss`, directories systemd creates at boot (`RuntimeDirectory=`,
//! tmpfiles.d).
use crate::engine::app_server_in_cmdline;

/// A setting of an app server and where its value comes from (`--timeout 30`, `default`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub from: String,
}

fn sourced<T>(value: T, from: impl Into<String>) -> Sourced<T> {
    Sourced {
        value,
        from: from.into(),
    }
}

/// The settings of an app server that decide how it fails requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSettings {
    /// `gunicorn`, `uwsgi`, `uvicorn`, ...
    pub server: &'static str,
    /// Seconds after which the server kills a worker busy with one request (gunicorn sync
    /// `--timeout`, uwsgi `--harakiri`); None when it has no such deadline (or 0).
    pub kill_timeout: Option<Sourced<u64>>,
    /// Number of worker processes.
    pub workers: Option<Sourced<u32>>,
    /// Requested listen backlog.
    pub backlog: Option<Sourced<u32>>,
    /// gunicorn's worker class, when not the default `sync`.
    pub worker_class: Option<String>,
    /// Its command line was rewritten (setproctitle): the flags could not be read.
    pub flags_hidden: bool,
}

/// The argument words after the app server's own name (`python3 /usr/bin/gunicorn -w 2 app`
/// gives `-w 2 app`), and the server.
fn server_args(cmdline: &str) -> Option<(&'static str, Vec<&str>)> {
    let server = app_server_in_cmdline(cmdline)?;
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let at = words.iter().position(|w| {
        let base = w.rsplit('/').next().unwrap_or(w);
        base == server || base.starts_with(&format!("{server}:"))
    })?;
    Some((server, words[at + 1..].to_vec()))
}

/// The value of an option in its spellings (`-t 30`, `-t30`, `--timeout 30`, `--timeout=30`);
/// the last occurrence wins, as with argparse.
fn opt<'a>(args: &[&'a str], short: Option<&str>, long: &str) -> Option<(&'a str, String)> {
    let mut found = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        if a == long || short.is_some_and(|s| a == s) {
            if let Some(v) = args.get(i + 1) {
                found = Some((*v, format!("{a} {v}")));
                i += 1;
            }
        } else if let Some(v) = a.strip_prefix(long).and_then(|r| r.strip_prefix('=')) {
            found = Some((v, a.to_owned()));
        } else if let Some(s) = short
            && let Some(v) = a
                .strip_prefix(s)
                .filter(|v| !v.is_empty() && !a.starts_with("--"))
        {
            found = Some((v, a.to_owned()));
        }
        i += 1;
    }
    found
}

/// `-c FILE` / `--config FILE` of a gunicorn command line, if any (to read it).
#[must_use]
pub fn gunicorn_config_arg(cmdline: &str) -> Option<String> {
    let (server, args) = server_args(cmdline)?;
    if server != "gunicorn" {
        return None;
    }
    opt(&args, Some("-c"), "--config")
        .map(|(v, _)| v.to_owned())
        .filter(|v| !v.starts_with("python:"))
}

/// `--ini FILE` of a uwsgi command line (or a bare `.ini` argument).
#[must_use]
pub fn uwsgi_ini_arg(cmdline: &str) -> Option<String> {
    let (server, args) = server_args(cmdline)?;
    if server != "uwsgi" {
        return None;
    }
    opt(&args, None, "--ini")
        .map(|(v, _)| v.to_owned())
        .or_else(|| {
            args.iter()
                .find(|a| {
                    !a.starts_with('-')
                        && std::path::Path::new(a)
                            .extension()
                            .is_some_and(|e| e.eq_ignore_ascii_case("ini"))
                })
                .map(|a| (*a).to_owned())
        })
}

/// Simple `name = value` assignments of a Python or ini file (comments and quotes stripped),
/// with their line numbers. Expressions are returned as written.
fn assignments(text: &str) -> Vec<(String, String, usize)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let l = l.split('#').next().unwrap_or("").trim();
            let (k, v) = l.split_once('=')?;
            let k = k.trim();
            if k.is_empty() || k.contains(char::is_whitespace) {
                return None;
            }
            let v = v.trim().trim_matches(['"', '\'']).to_owned();
            Some((k.to_owned(), v, i + 1))
        })
        .collect()
}

/// gunicorn's settings. Precedence as gunicorn applies it: its config file, then
/// `GUNICORN_CMD_ARGS`, then the command line.
#[must_use]
pub fn gunicorn_settings(
    cmdline: &str,
    env_args: Option<&str>,
    config: Option<(&str, &str)>,
) -> Option<AppSettings> {
    let (server, args) = server_args(cmdline)?;
    if server != "gunicorn" {
        return None;
    }
    let mut s = AppSettings {
        server,
        kill_timeout: Some(sourced(30, "gunicorn's default --timeout 30")),
        workers: Some(sourced(1, "gunicorn's default --workers 1")),
        backlog: Some(sourced(2048, "gunicorn's default --backlog 2048")),
        worker_class: None,
        flags_hidden: cmdline.starts_with("gunicorn: "),
    };
    let mut threads = 1u32;
    if let Some((path, text)) = config {
        for (k, v, line) in assignments(text) {
            let from = format!("{k} = {v} ({path}:{line})");
            match k.as_str() {
                "timeout" => {
                    if let Ok(n) = v.parse() {
                        s.kill_timeout = Some(sourced(n, from));
                    }
                }
                "workers" => {
                    if let Ok(n) = v.parse() {
                        s.workers = Some(sourced(n, from));
                    }
                }
                "backlog" => {
                    if let Ok(n) = v.parse() {
                        s.backlog = Some(sourced(n, from));
                    }
                }
                "threads" => threads = v.parse().unwrap_or(threads),
                "worker_class" => s.worker_class = Some(v),
                _ => {}
            }
        }
    }
    let env_words: Vec<&str> = env_args.unwrap_or("").split_whitespace().collect();
    for (words, origin) in [(&env_words, " (GUNICORN_CMD_ARGS)"), (&args, "")] {
        if let Some((v, from)) = opt(words, Some("-t"), "--timeout")
            && let Ok(n) = v.parse()
        {
            s.kill_timeout = Some(sourced(n, format!("{from}{origin}")));
        }
        if let Some((v, from)) = opt(words, Some("-w"), "--workers")
            && let Ok(n) = v.parse()
        {
            s.workers = Some(sourced(n, format!("{from}{origin}")));
        }
        if let Some((v, from)) = opt(words, None, "--backlog")
            && let Ok(n) = v.parse()
        {
            s.backlog = Some(sourced(n, format!("{from}{origin}")));
        }
        if let Some((v, _)) = opt(words, Some("-k"), "--worker-class") {
            s.worker_class = Some(v.to_owned());
        }
        if let Some((v, _)) = opt(words, None, "--threads") {
            threads = v.parse().unwrap_or(threads);
        }
    }
    // Only a sync worker is killed while it serves one long request: the other classes
    // heartbeat from a thread or an event loop that keeps running.
    let class = s.worker_class.as_deref().unwrap_or("sync");
    let sync = (class == "sync" || class.ends_with(".SyncWorker")) && threads <= 1;
    if !sync || s.kill_timeout.as_ref().is_some_and(|t| t.value == 0) {
        s.kill_timeout = None;
    }
    Some(s)
}

/// uwsgi's settings: `--harakiri` (`-t`) kills a worker stuck on one request; `--listen` (`-l`,
/// default 100) is the backlog; `--processes` (`-p`, `--workers`).
#[must_use]
pub fn uwsgi_settings(cmdline: &str, ini: Option<(&str, &str)>) -> Option<AppSettings> {
    let (server, args) = server_args(cmdline)?;
    if server != "uwsgi" {
        return None;
    }
    let mut s = AppSettings {
        server,
        kill_timeout: None,
        workers: Some(sourced(1, "uwsgi's default --processes 1")),
        backlog: Some(sourced(100, "uwsgi's default --listen 100")),
        worker_class: None,
        flags_hidden: false,
    };
    if let Some((path, text)) = ini {
        for (k, v, line) in assignments(text) {
            let from = format!("{k} = {v} ({path}:{line})");
            match k.as_str() {
                "harakiri" => s.kill_timeout = v.parse().ok().map(|n| sourced(n, from)),
                "processes" | "workers" => {
                    if let Ok(n) = v.parse() {
                        s.workers = Some(sourced(n, from));
                    }
                }
                "listen" => {
                    if let Ok(n) = v.parse() {
                        s.backlog = Some(sourced(n, from));
                    }
                }
                _ => {}
            }
        }
    }
    if let Some((v, from)) = opt(&args, Some("-t"), "--harakiri")
        && let Ok(n) = v.parse()
    {
        s.kill_timeout = Some(sourced(n, from));
    }
    for long in ["--processes", "--workers"] {
        if let Some((v, from)) = opt(&args, Some("-p"), long)
            && let Ok(n) = v.parse()
        {
            s.workers = Some(sourced(n, from));
        }
    }
    if let Some((v, from)) = opt(&args, Some("-l"), "--listen")
        && let Ok(n) = v.parse()
    {
        s.backlog = Some(sourced(n, from));
    }
    if s.kill_timeout.as_ref().is_some_and(|t| t.value == 0) {
        s.kill_timeout = None;
    }
    Some(s)
}

/// uvicorn (standalone): no request deadline; `--backlog` (default 2048), `--workers`.
#[must_use]
pub fn uvicorn_settings(cmdline: &str) -> Option<AppSettings> {
    let (server, args) = server_args(cmdline)?;
    if server != "uvicorn" {
        return None;
    }
    let backlog = opt(&args, None, "--backlog")
        .and_then(|(v, from)| Some(sourced(v.parse().ok()?, from)))
        .unwrap_or_else(|| sourced(2048, "uvicorn's default --backlog 2048"));
    let workers = opt(&args, None, "--workers")
        .and_then(|(v, from)| Some(sourced(v.parse().ok()?, from)))
        .unwrap_or_else(|| sourced(1, "uvicorn's default --workers 1"));
    Some(AppSettings {
        server,
        kill_timeout: None,
        workers: Some(workers),
        backlog: Some(backlog),
        worker_class: None,
        flags_hidden: false,
    })
}

/// A user's identity as nginx's workers take it (`setgid(group)`, `initgroups(user, group)`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserCreds {
    pub uid: u32,
    pub gid: u32,
    /// The group plus every group listing the user as a member.
    pub groups: Vec<u32>,
}

/// Looks a user (and its group: the user's name when omitted, as nginx does) up in the text
/// of /etc/passwd and /etc/group.
pub fn lookup_user(
    passwd: &str,
    group_file: &str,
    user: &str,
    group: Option<&str>,
) -> Result<UserCreds, String> {
    let uid = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&user))
        .and_then(|f| f.get(2)?.parse::<u32>().ok())
        .ok_or_else(|| format!("no user {user:?} in /etc/passwd"))?;
    let group = group.unwrap_or(user);
    let groups: Vec<Vec<&str>> = group_file
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let gid = groups
        .iter()
        .find(|f| f[0] == group)
        .and_then(|f| f[2].parse::<u32>().ok())
        .ok_or_else(|| format!("no group {group:?} in /etc/group"))?;
    let mut all = vec![gid];
    for f in &groups {
        let members = f.get(3).copied().unwrap_or("");
        if members.split(',').any(|m| m.trim() == user)
            && let Ok(g) = f[2].parse::<u32>()
            && !all.contains(&g)
        {
            all.push(g);
        }
    }
    Ok(UserCreds {
        uid,
        gid,
        groups: all,
    })
}

/// Name of a gid in /etc/group text.
#[must_use]
pub fn group_name(group_file: &str, gid: u32) -> Option<String> {
    group_file.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[2].parse::<u32>().ok() == Some(gid)).then(|| f[0].to_owned())
    })
}

/// A listening socket's accept queue as `ss -Hlnxt` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenQueue {
    /// gwtrace's target format (`unix:/p`, `127.0.0.1:80`, `[::]:80`).
    pub target: String,
    /// Connections waiting to be accepted now.
    pub queued: u32,
    /// The effective backlog (the requested one capped by `net.core.somaxconn`).
    pub backlog: u32,
}

/// Parses `ss -Hlnxt` (listening unix stream and TCP sockets).
#[must_use]
pub fn parse_ss(text: &str) -> Vec<ListenQueue> {
    let mut out = Vec::new();
    for line in text.lines() {
        let c: Vec<&str> = line.split_whitespace().collect();
        if c.len() < 5 || c[1] != "LISTEN" {
            continue;
        }
        let (Ok(queued), Ok(backlog)) = (c[2].parse(), c[3].parse()) else {
            continue;
        };
        let local = c[4];
        let target = match c[0] {
            "u_str" | "u_seq" if local != "*" => format!("unix:{local}"),
            "tcp" => {
                let Some((host, port)) = local.rsplit_once(':') else {
                    continue;
                };
                let host = host.split('%').next().unwrap_or(host);
                match host {
                    "*" | "[::]" => format!("[::]:{port}"),
                    h if h.starts_with('[') => format!("{h}:{port}"),
                    h => format!("{h}:{port}"),
                }
            }
            _ => continue,
        };
        out.push(ListenQueue {
            target,
            queued,
            backlog,
        });
    }
    out
}

/// Directories tmpfiles.d creates at boot (`d`, `D`, `v`, `q`, `Q` lines).
#[must_use]
pub fn tmpfiles_dirs(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let kind = f.next()?;
            let path = f.next()?;
            let k = kind.trim_end_matches(['!', '-', '=', '~', '^', '+']);
            matches!(k, "d" | "D" | "v" | "q" | "Q").then(|| canonical_run(path))
        })
        .collect()
}

/// `/var/run/x` is `/run/x`.
#[must_use]
pub fn canonical_run(path: &str) -> String {
    path.strip_prefix("/var/run/").map_or_else(
        || path.trim_end_matches('/').to_owned(),
        |r| format!("/run/{}", r.trim_end_matches('/')),
    )
}

/// A systemd unit's properties that create a directory at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitDirs {
    pub unit: String,
    /// `RuntimeDirectory=` as absolute paths under /run.
    pub runtime_dirs: Vec<String>,
    /// `ExecStartPre=` command lines (a `mkdir` there also creates it).
    pub exec_start_pre: String,
}

/// Parses `systemctl show -p RuntimeDirectory -p ExecStartPre UNIT`.
#[must_use]
pub fn parse_unit_show(unit: &str, text: &str) -> UnitDirs {
    let mut u = UnitDirs {
        unit: unit.to_owned(),
        ..UnitDirs::default()
    };
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("RuntimeDirectory=") {
            u.runtime_dirs.extend(
                v.split_whitespace()
                    .map(|d| format!("/run/{}", d.trim_matches('/'))),
            );
        } else if let Some(v) = line.strip_prefix("ExecStartPre=") {
            u.exec_start_pre.push_str(v);
            u.exec_start_pre.push('\n');
        }
    }
    u
}

/// The systemd service a cgroup path belongs to (`/system.slice/app.service` gives
/// `app.service`), if it is one.
#[must_use]
pub fn unit_of_cgroup(cgroup: &str) -> Option<String> {
    crate::origin::service_unit(cgroup).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gunicorn_flags_in_every_spelling() {
        let s = gunicorn_settings(
            "/usr/bin/python3 /usr/bin/gunicorn --bind unix:/run/a.sock -w 3 --timeout=120 app:app",
            None,
            None,
        )
        .unwrap();
        assert_eq!(s.server, "gunicorn");
        assert_eq!(s.kill_timeout.as_ref().map(|t| t.value), Some(120));
        assert_eq!(s.kill_timeout.unwrap().from, "--timeout=120");
        assert_eq!(s.workers.map(|w| w.value), Some(3));
        let d = gunicorn_settings("gunicorn app:app", None, None).unwrap();
        assert_eq!(d.kill_timeout.as_ref().map(|t| t.value), Some(30));
        assert!(d.kill_timeout.unwrap().from.contains("default"));
        let t = gunicorn_settings("python3 -m gunicorn -t5 app:app", None, None).unwrap();
        assert_eq!(t.kill_timeout.map(|t| t.value), Some(5));
    }

    #[test]
    fn gunicorn_precedence_and_worker_classes() {
        let conf = "bind = 'unix:/run/a.sock'\ntimeout = 90  # long reports\nworkers = 4\n";
        let s = gunicorn_settings(
            "gunicorn -c /etc/app/gunicorn.conf.py app:app",
            Some("--timeout 45"),
            Some(("/etc/app/gunicorn.conf.py", conf)),
        )
        .unwrap();
        let t = s.kill_timeout.unwrap();
        assert_eq!(
            (t.value, t.from.as_str()),
            (45, "--timeout 45 (GUNICORN_CMD_ARGS)")
        );
        assert_eq!(
            s.workers.unwrap().from,
            "workers = 4 (/etc/app/gunicorn.conf.py:3)"
        );
        assert_eq!(
            gunicorn_config_arg("gunicorn -c /etc/app/gunicorn.conf.py app:app").as_deref(),
            Some("/etc/app/gunicorn.conf.py")
        );
        // Threads and async workers are not killed by a long request.
        let g = gunicorn_settings("gunicorn -k gevent app:app", None, None).unwrap();
        assert_eq!(g.kill_timeout, None);
        let th = gunicorn_settings("gunicorn --threads 4 app:app", None, None).unwrap();
        assert_eq!(th.kill_timeout, None);
        let off = gunicorn_settings("gunicorn --timeout 0 app:app", None, None).unwrap();
        assert_eq!(off.kill_timeout, None);
        assert!(
            gunicorn_settings("gunicorn: master [app:app]", None, None)
                .unwrap()
                .flags_hidden
        );
        assert_eq!(gunicorn_settings("nginx: worker process", None, None), None);
    }

    #[test]
    fn uwsgi_and_uvicorn() {
        let u = uwsgi_settings(
            "uwsgi --ini /etc/uwsgi/app.ini --listen 64",
            Some((
                "/etc/uwsgi/app.ini",
                "[uwsgi]\nharakiri = 20\nprocesses = 4\n",
            )),
        )
        .unwrap();
        assert_eq!(u.kill_timeout.map(|t| t.value), Some(20));
        assert_eq!(u.workers.map(|t| t.value), Some(4));
        assert_eq!(u.backlog.map(|t| t.value), Some(64));
        assert_eq!(
            uwsgi_ini_arg("uwsgi --ini /etc/uwsgi/app.ini").as_deref(),
            Some("/etc/uwsgi/app.ini")
        );
        let v =
            uvicorn_settings("/usr/bin/python3 -m uvicorn --uds /run/a.sock --backlog 16 asgi:app")
                .unwrap();
        assert_eq!(v.backlog.map(|b| b.value), Some(16));
        assert_eq!(v.kill_timeout, None);
    }

    #[test]
    fn users_take_their_groups_like_initgroups() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n";
        let group = "root:x:0:\nwww-data:x:33:\ngwapp:x:995:www-data,other\nadm:x:4:syslog\n";
        let c = lookup_user(passwd, group, "www-data", None).unwrap();
        assert_eq!(
            c,
            UserCreds {
                uid: 33,
                gid: 33,
                groups: vec![33, 995]
            }
        );
        let g = lookup_user(passwd, group, "www-data", Some("adm")).unwrap();
        assert_eq!((g.gid, g.groups), (4, vec![4, 995]));
        assert!(lookup_user(passwd, group, "nobody", None).is_err());
        assert_eq!(group_name(group, 995).as_deref(), Some("gwapp"));
    }

    #[test]
    fn ss_listen_queues() {
        let text = "u_str LISTEN 0      511    /tmp/x/upstream.sock 1008640       * 0\n\
                    u_str UNCONN 0      0      * 4024480       * 0\n\
                    tcp   LISTEN 3      128    127.0.0.1:8000   0.0.0.0:*\n\
                    tcp   LISTEN 0      4096   *:8080   *:*\n\
                    tcp   LISTEN 0      4096   [::1]:9000   [::]:*\n\
                    tcp   LISTEN 0      4096   127.0.0.53%lo:53   0.0.0.0:*\n";
        let q = parse_ss(text);
        let targets: Vec<&str> = q.iter().map(|l| l.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "unix:/tmp/x/upstream.sock",
                "127.0.0.1:8000",
                "[::]:8080",
                "[::1]:9000",
                "127.0.0.53:53"
            ]
        );
        assert_eq!((q[1].queued, q[1].backlog), (3, 128));
    }

    #[test]
    fn boot_time_directories() {
        let t =
            "# comment\nd /run/app 0755 app app -\nD! /var/run/other/ 0700 - - -\nf /run/x.pid\n";
        assert_eq!(tmpfiles_dirs(t), ["/run/app", "/run/other"]);
        let u = parse_unit_show(
            "app.service",
            "RuntimeDirectory=app app/sub\nExecStartPre={ path=/bin/mkdir ; argv[]=/bin/mkdir -p /run/x ; }\n",
        );
        assert_eq!(u.runtime_dirs, ["/run/app", "/run/app/sub"]);
        assert!(u.exec_start_pre.contains("/run/x"));
        assert_eq!(
            unit_of_cgroup("/system.slice/app.service").as_deref(),
            Some("app.service")
        );
        assert_eq!(
            unit_of_cgroup("/user.slice/user-0.slice/session-1.scope"),
            None
        );
        assert_eq!(canonical_run("/var/run/app/"), "/run/app");
    }
}
