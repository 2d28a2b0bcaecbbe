//! One reader of app servers' command lines (and of `GUNICORN_CMD_ARGS`, gunicorn's config
//! file, uwsgi's ini file), for `gwtrace check` and the live engine alike: which server runs,
//! the words after its own name, and the settings that decide how it fails requests.
//!
//! When an option appears more than once the last occurrence wins, as in the servers
//! themselves: gunicorn's settings are argparse `store` actions (`gunicorn/config.py`,
//! `Setting.add_option`), each occurrence overwriting the one before (only `--bind` appends);
//! uwsgi and uvicorn (click) also keep the last value of a scalar option.
use super::names::app_server_word;

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

/// An app server's command line, split once: which server runs, and the words after its own
/// name (`python3 /usr/bin/gunicorn -w 2 app` gives gunicorn and `-w 2 app`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppCommand<'a> {
    pub server: &'static str,
    pub args: Vec<&'a str>,
}

impl<'a> AppCommand<'a> {
    /// None when the command line runs no known app server.
    #[must_use]
    pub fn parse(cmdline: &'a str) -> Option<Self> {
        let (server, at) = app_server_word(cmdline)?;
        Some(Self {
            server,
            args: cmdline.split_whitespace().skip(at + 1).collect(),
        })
    }

    /// The value of an option and how it was written (`--timeout 30`), in any of its
    /// spellings (`-t 30`, `-t30`, `--timeout 30`, `--timeout=30`); the last occurrence wins.
    #[must_use]
    pub fn option(&self, short: Option<&str>, long: &str) -> Option<(&'a str, String)> {
        opt(&self.args, short, long)
    }

    /// gunicorn's `--timeout` (`-t`) as written on the command line, when it is gunicorn and
    /// the flag is there (`GUNICORN_CMD_ARGS` and the config file are not on a command line:
    /// [`gunicorn_settings`] reads those too).
    #[must_use]
    pub fn gunicorn_timeout(&self) -> Option<&'a str> {
        (self.server == "gunicorn")
            .then(|| self.option(Some("-t"), "--timeout"))
            .flatten()
            .map(|(v, _)| v)
    }

    /// The seconds after which this app server's master kills a worker busy with one request,
    /// as the command line sets it (or the server's default): gunicorn `--timeout`/`-t`
    /// (default 30; 0 disables it), uwsgi `--harakiri`/`-t` (off unless set). None when the
    /// command line does not say (php-fpm keeps `request_terminate_timeout` in its pool
    /// configuration: [`php_fpm_terminate_timeout`]) or the server has no such deadline.
    #[must_use]
    pub fn kill_timeout(&self) -> Option<Sourced<u64>> {
        self.kill_setting().value
    }

    /// The app server's own setting that kills a worker busy with one request too long, how
    /// its master kills, and the setting's value when the command line gives it.
    #[must_use]
    pub fn kill_setting(&self) -> KillSetting {
        let read = |short: Option<&str>, long: &str| {
            self.option(short, long)
                .and_then(|(v, from)| Some(sourced(v.parse::<u64>().ok()?, from)))
                .filter(|s| s.value > 0)
        };
        let (name, value, how) = match self.server {
            "gunicorn" => {
                let value = match self.option(Some("-t"), "--timeout") {
                    Some((v, from)) => v
                        .parse::<u64>()
                        .ok()
                        .filter(|&n| n > 0)
                        .map(|n| sourced(n, from)),
                    None => Some(sourced(30, "gunicorn's default --timeout 30")),
                };
                (
                    "--timeout",
                    value,
                    "SIGABRT, then SIGKILL if the worker lingers",
                )
            }
            "uwsgi" => (
                "--harakiri",
                read(Some("-t"), "--harakiri"),
                "SIGKILL (older releases send SIGUSR2, a status dump, a second before)",
            ),
            "php-fpm" => (
                "request_terminate_timeout",
                None,
                "SIGTERM, then SIGKILL if the child lingers",
            ),
            _ => ("", None, ""),
        };
        KillSetting {
            server: self.server,
            name,
            value,
            how,
        }
    }
}

/// An app server's setting that makes its master kill a worker busy with one request
/// ([`AppCommand::kill_setting`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KillSetting {
    /// `gunicorn`, `uwsgi`, `php-fpm`, `uvicorn`, ...
    pub server: &'static str,
    /// The setting's name as the server spells it (`--timeout`, `--harakiri`,
    /// `request_terminate_timeout`); empty when the server has none (uvicorn never kills a
    /// busy worker).
    pub name: &'static str,
    /// Its value in seconds and where it was read, when the command line (or the server's
    /// default) gives it.
    pub value: Option<Sourced<u64>>,
    /// How the master kills (`SIGABRT, then SIGKILL ...`).
    pub how: &'static str,
}

/// php-fpm's `request_terminate_timeout` from a pool configuration (`pool.d/www.conf`):
/// seconds, or with the unit suffix php-fpm accepts (`s`, `m`, `h`, `d`); 0 or absent means
/// off. The last assignment wins, as php-fpm reads the file top to bottom.
#[must_use]
pub fn php_fpm_terminate_timeout(path: &str, text: &str) -> Option<Sourced<u64>> {
    let mut found = None;
    for (k, v, line) in assignments(text) {
        if k != "request_terminate_timeout" {
            continue;
        }
        let v = v.trim();
        let (num, mult) = match v.char_indices().last() {
            Some((i, 's')) => (&v[..i], 1),
            Some((i, 'm')) => (&v[..i], 60),
            Some((i, 'h')) => (&v[..i], 3600),
            Some((i, 'd')) => (&v[..i], 86_400),
            _ => (v, 1),
        };
        found = num
            .trim()
            .parse::<u64>()
            .ok()
            .map(|n| n * mult)
            .filter(|&n| n > 0)
            .map(|n| {
                sourced(
                    n,
                    format!("request_terminate_timeout = {v} ({path}:{line})"),
                )
            });
    }
    found
}

/// php-fpm's settings from its pool configurations (`(path, text)` of each file read): the
/// shortest `request_terminate_timeout` of its pools is the deadline a request meets first.
#[must_use]
pub fn php_fpm_settings(cmdline: &str, files: &[(&str, &str)]) -> Option<AppSettings> {
    let (server, _) = server_args(cmdline)?;
    if server != "php-fpm" {
        return None;
    }
    let kill_timeout = files
        .iter()
        .filter_map(|(path, text)| php_fpm_terminate_timeout(path, text))
        .min_by_key(|t| t.value);
    Some(AppSettings {
        server,
        kill_timeout,
        workers: None,
        backlog: None,
        worker_class: None,
        flags_hidden: false,
    })
}

/// The files a php-fpm configuration includes (`include=/etc/php/8.2/fpm/pool.d/*.conf`), as
/// written: a `*` in the file name is for the caller to expand.
#[must_use]
pub fn php_fpm_includes(text: &str) -> Vec<String> {
    assignments(text)
        .into_iter()
        .filter(|(k, _, _)| k == "include")
        .map(|(_, v, _)| v)
        .collect()
}

/// php-fpm's main configuration file from its master's command line or process title
/// (`php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)`, `php-fpm8.2 -y FILE`,
/// `--fpm-config FILE`).
#[must_use]
pub fn php_fpm_config_arg(cmdline: &str) -> Option<String> {
    let c = AppCommand::parse(cmdline)?;
    if c.server != "php-fpm" {
        return None;
    }
    if let Some((v, _)) = c.option(Some("-y"), "--fpm-config") {
        return Some(v.to_owned());
    }
    let (_, rest) = cmdline.split_once('(')?;
    let path = rest.split(')').next()?.trim();
    path.starts_with('/').then(|| path.to_owned())
}

/// The server and its arguments, for the settings readers below.
fn server_args(cmdline: &str) -> Option<(&'static str, Vec<&str>)> {
    AppCommand::parse(cmdline).map(|c| (c.server, c.args))
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
    fn kill_settings_per_server() {
        let gun = AppCommand::parse("gunicorn -w 2 app:app")
            .unwrap()
            .kill_setting();
        assert_eq!(
            (gun.name, gun.value.map(|v| v.value)),
            ("--timeout", Some(30))
        );
        let last = AppCommand::parse("/venv/bin/gunicorn -t 5 --timeout=9 app:app").unwrap();
        assert_eq!(
            last.kill_timeout(),
            Some(Sourced {
                value: 9,
                from: "--timeout=9".into()
            })
        );
        assert_eq!(
            AppCommand::parse("gunicorn --timeout 0 app:app")
                .unwrap()
                .kill_timeout(),
            None,
            "0 turns gunicorn's timeout off"
        );
        let uw = AppCommand::parse("uwsgi --plugin python3 --socket /run/u.sock --harakiri 2")
            .unwrap()
            .kill_setting();
        assert_eq!(uw.name, "--harakiri");
        assert!(uw.how.contains("SIGUSR2"), "{uw:?}");
        assert_eq!(uw.value.unwrap().from, "--harakiri 2");
        assert_eq!(
            AppCommand::parse("uwsgi --ini app.ini")
                .unwrap()
                .kill_timeout(),
            None
        );
        let fpm = AppCommand::parse("php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)")
            .unwrap()
            .kill_setting();
        assert_eq!((fpm.name, fpm.value), ("request_terminate_timeout", None));
        let uv = AppCommand::parse("uvicorn --uds /run/a.sock asgi:app")
            .unwrap()
            .kill_setting();
        assert_eq!(
            (uv.name, uv.value),
            ("", None),
            "uvicorn never kills a busy worker"
        );
        assert_eq!(
            php_fpm_config_arg("php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)")
                .as_deref(),
            Some("/etc/php/8.2/fpm/php-fpm.conf")
        );
        assert_eq!(
            php_fpm_config_arg("php-fpm8.2 --nodaemonize -y /etc/fpm.conf").as_deref(),
            Some("/etc/fpm.conf")
        );
        let main =
            "[global]\npid = /run/php/php8.2-fpm.pid\ninclude=/etc/php/8.2/fpm/pool.d/*.conf\n";
        assert_eq!(php_fpm_includes(main), ["/etc/php/8.2/fpm/pool.d/*.conf"]);
        let s = php_fpm_settings(
            "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)",
            &[
                (
                    "/etc/php/8.2/fpm/pool.d/a.conf",
                    "request_terminate_timeout = 60\n",
                ),
                (
                    "/etc/php/8.2/fpm/pool.d/b.conf",
                    "request_terminate_timeout = 20s\n",
                ),
                ("/etc/php/8.2/fpm/php-fpm.conf", main),
            ],
        )
        .unwrap();
        assert_eq!(s.kill_timeout.map(|t| t.value), Some(20));
        let pool = "[www]\nuser = www-data\n;request_terminate_timeout = 5\nrequest_terminate_timeout = 2m\n";
        let pool_t = php_fpm_terminate_timeout("/etc/php/8.2/fpm/pool.d/www.conf", pool).unwrap();
        assert_eq!(pool_t.value, 120);
        assert_eq!(
            pool_t.from,
            "request_terminate_timeout = 2m (/etc/php/8.2/fpm/pool.d/www.conf:4)"
        );
        assert_eq!(
            php_fpm_terminate_timeout("x", "request_terminate_timeout = 0\n"),
            None
        );
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

    /// One parser, one answer: the command line's last `--timeout` wins for `gwtrace check`'s
    /// settings and for the live engine's reading alike, as it does in gunicorn.
    #[test]
    fn last_occurrence_wins_everywhere() {
        let cmd = "/venv/bin/python /venv/bin/gunicorn --timeout 5 -w 2 -t 7 --workers=3 app:app";
        let s = gunicorn_settings(cmd, None, None).unwrap();
        assert_eq!(s.kill_timeout.as_ref().map(|t| t.value), Some(7));
        assert_eq!(s.kill_timeout.unwrap().from, "-t 7");
        assert_eq!(s.workers.map(|w| w.value), Some(3));
        let c = AppCommand::parse(cmd).unwrap();
        assert_eq!(c.server, "gunicorn");
        assert_eq!(c.gunicorn_timeout(), Some("7"));
        assert_eq!(
            AppCommand::parse("gunicorn --timeout=9 --timeout=11 app:app")
                .unwrap()
                .gunicorn_timeout(),
            Some("11")
        );
        assert_eq!(
            AppCommand::parse("gunicorn app:app")
                .unwrap()
                .gunicorn_timeout(),
            None
        );
        assert_eq!(
            AppCommand::parse("uwsgi -t 20 --ini x.ini")
                .unwrap()
                .gunicorn_timeout(),
            None,
            "uwsgi's -t is --harakiri, not gunicorn's timeout"
        );
        assert_eq!(AppCommand::parse("sleep --timeout 5"), None);
        let u = uwsgi_settings("uwsgi --harakiri 20 --harakiri 40", None).unwrap();
        assert_eq!(u.kill_timeout.map(|t| t.value), Some(40));
    }
}
