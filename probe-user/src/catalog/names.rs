//! The programs gwtrace recognises: reverse proxies, app servers, the launchers that run app
//! servers and the supervisors that start them; and the one rule for "is this process a proxy".

/// Reverse proxies recognised by process name when no pid is given.
pub const PROXY_NAMES: [&str; 7] = [
    "nginx", "caddy", "haproxy", "httpd", "apache2", "envoy", "traefik",
];

/// App servers recognised by process name or command line.
pub const APP_SERVERS: [&str; 9] = [
    "gunicorn",
    "uvicorn",
    "uwsgi",
    "php-fpm",
    "hypercorn",
    "daphne",
    "puma",
    "unicorn",
    "waitress",
];

/// Interpreters and launchers that run an app server named in a later argument
/// (`python3 -m gunicorn`, `/venv/bin/python /venv/bin/gunicorn`, `bundle exec puma`).
pub const LAUNCHERS: [&str; 8] = [
    "python", "pypy", "ruby", "bundle", "env", "uv", "poetry", "pipenv",
];

/// Supervisors that start apps (they name their child `(unit)` until it execs).
pub const SUPERVISORS: [&str; 4] = ["systemd", "supervisord", "runsv", "s6-supervise"];

/// [`PROXY_NAMES`] as owned strings: the default of every proxy-name list.
#[must_use]
pub fn default_proxy_names() -> Vec<String> {
    PROXY_NAMES.iter().map(|s| (*s).to_owned()).collect()
}

/// Which app server a name (a comm, a path, an argv word) is, if any.
#[must_use]
pub fn app_server_name(word: &str) -> Option<&'static str> {
    let base = word
        .rsplit('/')
        .next()
        .unwrap_or(word)
        .trim_end_matches(':');
    APP_SERVERS.iter().copied().find(|n| {
        base.strip_prefix(n).is_some_and(|rest| {
            rest.is_empty() || rest.starts_with(|c: char| !c.is_ascii_alphabetic())
        })
    })
}

/// Which app server a command line runs, looking past interpreters and their flags.
#[must_use]
pub fn app_server_in_cmdline(cmdline: &str) -> Option<&'static str> {
    app_server_word(cmdline).map(|(server, _)| server)
}

/// The app server a command line runs and the index of the word that names it.
pub(crate) fn app_server_word(cmdline: &str) -> Option<(&'static str, usize)> {
    let mut words = cmdline.split_whitespace().enumerate();
    let (_, first) = words.next()?;
    if let Some(a) = app_server_name(first) {
        return Some((a, 0));
    }
    let base = first.rsplit('/').next().unwrap_or(first);
    if !LAUNCHERS.iter().any(|l| base.starts_with(l)) {
        return None;
    }
    words
        .filter(|(_, w)| !w.starts_with('-') && !matches!(*w, "exec" | "run"))
        .take(2)
        .find_map(|(i, w)| app_server_name(w).map(|a| (a, i)))
}

/// A process as the proxy rule sees it: its pid and the names it goes by (the comm an event
/// carried, the comm and executable path the process table knows; empty ones never match).
#[derive(Clone, Copy, Debug)]
pub struct ProcNames<'a> {
    pub pid: u32,
    pub names: &'a [&'a str],
}

/// Which processes are proxies: the one rule the engine and the metrics share.
///
/// A process is a proxy when it is listed by pid, or when one of its names (a path counts by
/// its file name) is a proxy name; a process whose parent (other than init) is a proxy is one
/// too: a proxy master's workers, including those forked after the pids were listed.
#[derive(Clone, Copy)]
pub struct ProxyRule<'a> {
    /// Process names (comm) of proxies.
    pub names: &'a [String],
    /// Pids named as proxies (by the user, or by collected facts).
    pub listed: &'a dyn Fn(u32) -> bool,
}

impl ProxyRule<'_> {
    /// Is `name` (a comm, or an executable path by its file name) a proxy's name?
    #[must_use]
    pub fn named(&self, name: &str) -> bool {
        let base = name.rsplit('/').next().unwrap_or(name);
        !base.is_empty() && self.names.iter().any(|n| n == base)
    }

    /// A proxy by itself: listed, or named like one.
    #[must_use]
    pub fn itself(&self, p: ProcNames<'_>) -> bool {
        (self.listed)(p.pid) || p.names.iter().any(|n| self.named(n))
    }

    /// Is the process a proxy, or a child of one?
    #[must_use]
    pub fn is_proxy(&self, p: ProcNames<'_>, parent: Option<ProcNames<'_>>) -> bool {
        self.itself(p) || parent.is_some_and(|pp| pp.pid > 1 && self.itself(pp))
    }
}

/// How a proxy's configuration names an upstream, in fixes: nginx's `proxy_pass`, an
/// haproxy backend's `server` line, Caddy's `reverse_proxy`, Apache's `ProxyPass`.
#[must_use]
pub fn upstream_directive(proxy_comm: &str) -> &'static str {
    match proxy_comm {
        "haproxy" => "the backend's server line",
        "caddy" => "reverse_proxy",
        "apache2" | "apache" | "httpd" => "ProxyPass",
        _ => "proxy_pass",
    }
}

/// A fix or summary written in nginx's terms, said in the terms of the proxy named
/// `proxy_comm`.
#[must_use]
pub fn in_proxy_terms(text: &str, proxy_comm: &str) -> String {
    let d = upstream_directive(proxy_comm);
    if d == "proxy_pass" {
        return text.to_owned();
    }
    text.replace("(or the upstream block's server line)", "")
        .replace("proxy_pass", d)
}

/// Is `signal` the reload signal of the proxy named `comm`? SIGHUP for nginx (and haproxy's
/// old daemon mode; caddy reloads through its admin API, not a signal), SIGUSR2 for haproxy's
/// master-worker mode, SIGUSR1 for apache's graceful restart.
#[must_use]
pub fn is_reload_signal(comm: &str, signal: i32) -> bool {
    match comm {
        "haproxy" => matches!(signal, 1 | 12),
        "apache2" | "httpd" => matches!(signal, 1 | 10),
        _ => signal == 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_servers_behind_launchers() {
        assert_eq!(app_server_in_cmdline("gunicorn app:app"), Some("gunicorn"));
        assert_eq!(
            app_server_word("/venv/bin/python3 -u /venv/bin/gunicorn -w 2 app:app"),
            Some(("gunicorn", 2))
        );
        assert_eq!(
            app_server_in_cmdline("bundle exec puma -C config/puma.rb"),
            Some("puma")
        );
        assert_eq!(
            app_server_in_cmdline("gunicorn: master [app:app]"),
            Some("gunicorn")
        );
        assert_eq!(
            app_server_in_cmdline("php-fpm8.2: pool www"),
            Some("php-fpm")
        );
        assert_eq!(app_server_in_cmdline("python3 manage.py runserver"), None);
        assert_eq!(app_server_in_cmdline("nginx: worker process"), None);
        assert_eq!(app_server_name("unicornd"), None);
        assert_eq!(app_server_in_cmdline(""), None);
    }

    #[test]
    fn proxy_rule() {
        let names = default_proxy_names();
        let listed = |pid: u32| pid == 77;
        let rule = ProxyRule {
            names: &names,
            listed: &listed,
        };
        let p = |pid, names| ProcNames { pid, names };
        assert!(rule.is_proxy(p(10, &["nginx"]), None));
        assert!(rule.is_proxy(p(10, &["", "/usr/sbin/nginx"]), None));
        assert!(rule.is_proxy(p(77, &["myproxy"]), None), "listed by pid");
        assert!(
            rule.is_proxy(p(78, &["myproxy"]), Some(p(77, &["myproxy"]))),
            "a listed master's worker"
        );
        assert!(rule.is_proxy(p(11, &["worker"]), Some(p(10, &["nginx"]))));
        assert!(
            !rule.is_proxy(p(11, &["worker"]), Some(p(1, &["nginx"]))),
            "init's children are not workers"
        );
        assert!(!rule.is_proxy(p(12, &["curl"]), Some(p(9, &["bash"]))));
        assert!(
            !rule.is_proxy(p(13, &[""]), None),
            "an empty name is no proxy"
        );
        assert!(!rule.named("nginx-exporter"));
    }
}
