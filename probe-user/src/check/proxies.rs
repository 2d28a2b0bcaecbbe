//! The proxies whose configuration gwtrace reads, recognised from the process (its `comm`, else
//! its executable's name), and their upstream targets read from the files the running master
//! was started with: the path on its command line (`-f`, `--config`) or the package's default,
//! read through `/proc/PID/root` (a proxy in a container sees its own files).
//!
//! nginx has its own reader ([`super::nginx`], through `nginx -T`); haproxy ([`super::haproxy`]),
//! Caddy ([`super::caddy`]) and Apache httpd ([`super::apache`]) are parsed from their files
//! into the same [`NginxConfig`] shape, so `gwtrace check` and the live session judge their
//! targets with the same code.
use std::collections::HashMap;
use std::path::PathBuf;

use super::nginx::{self, DEFAULT_TIMEOUT_MS, Dest, Loc, Module, NginxConfig, Pass, Setting};
use crate::catalog::Cause;
use crate::facts::ProcInfo;

/// Files read for one configuration, at most (includes, imports, `-f` directories).
pub const MAX_CONF_FILES: usize = 512;
/// Deepest include nesting followed (a loop must end).
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// A proxy gwtrace knows the configuration of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Nginx,
    Haproxy,
    Caddy,
    /// Apache httpd (`apache2` on Debian, `httpd` elsewhere).
    Apache,
}

impl Kind {
    /// The proxy a process runs: by its `comm`, else by its executable's file name.
    #[must_use]
    pub fn of(comm: &str, exe: Option<&str>) -> Option<Kind> {
        let from = |name: &str| match name {
            "nginx" => Some(Kind::Nginx),
            "haproxy" => Some(Kind::Haproxy),
            "caddy" => Some(Kind::Caddy),
            "apache2" | "httpd" => Some(Kind::Apache),
            _ => None,
        };
        from(comm).or_else(|| {
            let exe = exe?.trim_end_matches(" (deleted)");
            from(exe.rsplit('/').next().unwrap_or(exe))
        })
    }

    /// The proxy's name in notes and errors.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
            Kind::Caddy => "caddy",
            Kind::Apache => "apache",
        }
    }

    /// The status the proxy answers when it cannot connect to any upstream: 502 for nginx and
    /// Caddy, 503 for haproxy ("No server is available") and Apache's `mod_proxy`.
    #[must_use]
    pub fn connect_failure_status(self) -> u16 {
        match self {
            Kind::Nginx | Kind::Caddy => 502,
            Kind::Haproxy | Kind::Apache => 503,
        }
    }

    /// The status the proxy answers for a cause ([`Cause::status_of`]).
    #[must_use]
    pub fn status_for(self, cause: Cause) -> u16 {
        cause.status_of(self.name())
    }

    /// How its configuration names an upstream, for fixes ("point `proxy_pass` at ...").
    #[must_use]
    pub fn upstream_directive(self) -> &'static str {
        crate::catalog::upstream_directive(self.name())
    }

    /// What the proxy does when a connect to one upstream of a group fails, for evidence lines.
    #[must_use]
    pub fn retry_phrase(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx retries the next server on a connect error",
            Kind::Haproxy => "haproxy redispatches to another server (option redispatch)",
            Kind::Caddy => "caddy retries another upstream (lb_try_duration / lb_retries)",
            Kind::Apache => "apache's balancer fails over to another member",
        }
    }
}

/// Files as a process sees them: paths under its root (`/proc/PID/root`, or a fixture tree).
#[derive(Clone, Debug)]
pub struct Fs {
    root: PathBuf,
}

impl Fs {
    /// Paths read under `root` (`/` for gwtrace's own view).
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Fs {
        Fs { root: root.into() }
    }

    /// The files of process `pid`'s mount namespace and root (a chroot, a container).
    #[must_use]
    pub fn of_process(pid: u32) -> Fs {
        Fs::new(format!("/proc/{pid}/root"))
    }

    fn real(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// The text of a file.
    ///
    /// # Errors
    /// `cannot read PATH: why`.
    pub fn read(&self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(self.real(path)).map_err(|e| format!("cannot read {path}: {e}"))
    }

    #[must_use]
    pub fn is_dir(&self, path: &str) -> bool {
        self.real(path).is_dir()
    }

    /// The files a pattern names (globs in any component, none matching `/` or a leading
    /// dot), sorted; a plain path names itself when it is a file.
    #[must_use]
    pub fn glob(&self, pattern: &str) -> Vec<String> {
        if !nginx::has_glob(pattern) {
            return if self.real(pattern).is_file() {
                vec![pattern.to_owned()]
            } else {
                Vec::new()
            };
        }
        let mut bases = vec![String::new()];
        for comp in pattern.split('/').filter(|c| !c.is_empty()) {
            let mut next = Vec::new();
            for b in &bases {
                if !nginx::has_glob(comp) {
                    next.push(format!("{b}/{comp}"));
                    continue;
                }
                let Ok(rd) = std::fs::read_dir(self.real(if b.is_empty() { "/" } else { b }))
                else {
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
            }
            bases = next;
            if bases.len() > MAX_CONF_FILES {
                bases.truncate(MAX_CONF_FILES);
            }
        }
        let mut files: Vec<String> = bases
            .into_iter()
            .filter(|p| self.real(p).is_file())
            .collect();
        files.sort();
        files
    }
}

/// `dir/name` unless `name` is absolute.
#[must_use]
pub fn relative_to(dir: &str, name: &str) -> String {
    if name.starts_with('/') || dir.is_empty() {
        name.to_owned()
    } else {
        format!("{}/{name}", dir.trim_end_matches('/'))
    }
}

/// The directory of a file path.
#[must_use]
pub fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

/// A `*_pass`-like use of an upstream, for the parsers of the other proxies.
#[must_use]
pub fn pass(text: String, loc: Loc, context: String, dest: Dest, retries: bool) -> Pass {
    let default = Setting {
        value: DEFAULT_TIMEOUT_MS,
        loc: None,
    };
    Pass {
        module: Module::Foreign,
        text,
        loc,
        context,
        dest,
        read_timeout: default.clone(),
        connect_timeout: default,
        next_upstream_off: !retries,
    }
}

/// A parsed configuration of a running proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Configured {
    pub kind: Kind,
    /// How it was read (`/etc/haproxy/haproxy.cfg (haproxy -f)`).
    pub source: String,
    pub config: NginxConfig,
}

/// The environment of a process (`/proc/PID/environ`), empty when unreadable.
#[must_use]
pub fn environ(pid: u32) -> HashMap<String, String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| {
            env.split(|b| *b == 0)
                .filter_map(|kv| std::str::from_utf8(kv).ok())
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads the configuration of a proxy other than nginx from its command line, working
/// directory and environment, with files read through `fs`.
///
/// # Errors
/// One line naming the file that could not be read or parsed.
pub fn configured<S: std::hash::BuildHasher>(
    kind: Kind,
    cmdline: &str,
    cwd: &str,
    env: &HashMap<String, String, S>,
    fs: &Fs,
) -> Result<Configured, String> {
    let (source, config) = match kind {
        Kind::Nginx => return Err("nginx is read with nginx -T, not here".to_owned()),
        Kind::Haproxy => super::haproxy::load(cmdline, cwd, fs)?,
        Kind::Caddy => super::caddy::load(cmdline, cwd, fs)?,
        Kind::Apache => super::apache::load(cmdline, env, fs)?,
    };
    Ok(Configured {
        kind,
        source,
        config,
    })
}

/// The upstreams a running master of a proxy other than nginx is configured for, its files
/// read through its own root.
///
/// # Errors
/// Why the configuration could not be read (one line).
pub fn configured_upstreams(master: &ProcInfo) -> Result<Configured, String> {
    let exe = std::fs::read_link(format!("/proc/{}/exe", master.pid))
        .ok()
        .map(|p| p.display().to_string());
    let kind = Kind::of(&master.comm, exe.as_deref()).ok_or_else(|| {
        format!(
            "{} pid {}: not a proxy gwtrace reads the configuration of",
            master.comm, master.pid
        )
    })?;
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", master.pid))
        .map_or_else(|_| "/".to_owned(), |p| p.display().to_string());
    configured(
        kind,
        &master.cmdline,
        &cwd,
        &environ(master.pid),
        &Fs::of_process(master.pid),
    )
    .map_err(|e| format!("{} pid {}: {e}", kind.name(), master.pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_comm_or_exe() {
        assert_eq!(Kind::of("haproxy", None), Some(Kind::Haproxy));
        assert_eq!(Kind::of("apache2", None), Some(Kind::Apache));
        assert_eq!(Kind::of("httpd", None), Some(Kind::Apache));
        assert_eq!(Kind::of("caddy", Some("/usr/bin/caddy")), Some(Kind::Caddy));
        assert_eq!(
            Kind::of("worker-1", Some("/usr/sbin/haproxy (deleted)")),
            Some(Kind::Haproxy)
        );
        assert_eq!(Kind::of("gunicorn", Some("/usr/bin/python3")), None);
        assert_eq!(Kind::Haproxy.connect_failure_status(), 503);
        assert_eq!(Kind::Caddy.connect_failure_status(), 502);
        assert_eq!(Kind::Haproxy.status_for(Cause::SocketMissing), 503);
        assert_eq!(Kind::Apache.status_for(Cause::UpstreamNotListening), 503);
        assert_eq!(Kind::Haproxy.status_for(Cause::WorkerCrashed), 502);
        assert_eq!(Kind::Nginx.status_for(Cause::SocketMissing), 502);
        assert_eq!(Kind::Caddy.status_for(Cause::ConnectTimeout), 504);
    }

    #[test]
    fn globs_under_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("etc/x/conf.d")).unwrap();
        std::fs::write(d.join("etc/x/conf.d/b.conf"), "b").unwrap();
        std::fs::write(d.join("etc/x/conf.d/a.conf"), "a").unwrap();
        std::fs::write(d.join("etc/x/conf.d/.h.conf"), "h").unwrap();
        let fs = Fs::new(d);
        assert_eq!(
            fs.glob("/etc/x/conf.d/*.conf"),
            ["/etc/x/conf.d/a.conf", "/etc/x/conf.d/b.conf"]
        );
        assert_eq!(fs.glob("/etc/x/conf.d/a.conf"), ["/etc/x/conf.d/a.conf"]);
        assert_eq!(fs.glob("/etc/x/none"), Vec::<String>::new());
        assert_eq!(fs.read("/etc/x/conf.d/b.conf").unwrap(), "b");
        assert!(
            fs.read("/nope")
                .unwrap_err()
                .starts_with("cannot read /nope")
        );
    }
}
