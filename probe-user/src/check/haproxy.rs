//! haproxy configuration: the `server` lines of `backend` and `listen` sections (with the
//! `default-server` and `defaults` settings that change them), each address in gwtrace's target
//! format: `host:port`, `unix@/path` or a bare `/path` (unix sockets), `abns@name` (an abstract
//! unix socket), `ipv4@`/`ipv6@` prefixes.
//!
//! haproxy answers 503 when no server of a backend can take a request. Without `option
//! redispatch` a failed connect is retried on the same server, so a dead server fails its share
//! of requests even when others are up: the backend's group "does not retry elsewhere".
//!
//! `chroot DIR` in `global`: haproxy's workers run chrooted there (after binding their
//! listeners), so a unix server path `/run/app.sock` is `DIR/run/app.sock` on the host
//! ([`NginxConfig::chroot`]); the target keeps the name haproxy connects to.
//!
//! Pure but for [`load`], which reads the files named on the command line (`-f FILE|DIR`,
//! repeatable; Debian's default `/etc/haproxy/haproxy.cfg`).
use super::nginx::{Addr, ConfFile, Dest, Loc, NginxConfig, Server, Upstream};
use super::proxies::{self, Fs, MAX_CONF_FILES};

/// Debian's (and most packages') configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/haproxy/haproxy.cfg";

/// Section keywords: a line starting with one of them opens a new section.
const SECTIONS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "peers",
    "resolvers",
    "userlist",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "fcgi-app",
    "log-forward",
    "crt-store",
    "traces",
];

/// Splits one line into words the way haproxy does: `#` starts a comment outside quotes,
/// `"..."` (escapes, variables kept as written) and `'...'` quote, `\` escapes one character.
#[must_use]
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '#') => break,
            (None, ' ' | '\t' | '\r' | '\n') => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (_, c) => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// What a `server` address stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerAddr {
    Addr(Addr),
    /// Cannot be checked statically (no port: the client's destination port; an environment
    /// variable; a socket pair), with why.
    Unknown(String),
}

/// Reads a `server` address (`127.0.0.1:8000`, `[::1]:80`, `unix@/run/app.sock`, `/run/app.sock`,
/// `abns@app`, `ipv6@::1:80`, `app.internal:8000`).
#[must_use]
pub fn server_addr(a: &str) -> ServerAddr {
    if a.contains('$') {
        return ServerAddr::Unknown(format!("{a}: set from the environment at start"));
    }
    if let Some(p) = a.strip_prefix("unix@") {
        return ServerAddr::Addr(Addr::Unix(p.to_owned()));
    }
    if let Some(name) = a.strip_prefix("abns@") {
        return ServerAddr::Addr(Addr::Unix(format!("@{name}")));
    }
    if a.starts_with('/') || a.starts_with("./") {
        return ServerAddr::Addr(Addr::Unix(a.to_owned()));
    }
    for other in [
        "fd@",
        "sockpair@",
        "udp@",
        "udp4@",
        "udp6@",
        "quic4@",
        "quic6@",
        "rhttp@",
    ] {
        if a.starts_with(other) {
            return ServerAddr::Unknown(format!("{a}: not a stream socket address gwtrace checks"));
        }
    }
    let rest = ["ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"]
        .iter()
        .find_map(|p| a.strip_prefix(p))
        .unwrap_or(a);
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        match r.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':').unwrap_or("")),
            None => return ServerAddr::Unknown(format!("{a}: unterminated [")),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (rest, ""),
        }
    };
    if port.is_empty() || port.starts_with(['+', '-']) {
        return ServerAddr::Unknown(format!(
            "{a}: no fixed port (haproxy uses the client's destination port)"
        ));
    }
    match port.parse::<u16>() {
        Ok(port) if !host.is_empty() => ServerAddr::Addr(Addr::Host {
            host: host.to_owned(),
            port,
        }),
        _ => ServerAddr::Unknown(format!("{a}: cannot read the address")),
    }
}

/// Settings a `defaults` section passes on to the sections after it.
#[derive(Clone, Debug, Default)]
struct Defaults {
    redispatch: bool,
    /// `default-server` words of the defaults section.
    server: Vec<String>,
}

/// One backend or listen section being read.
struct Section {
    kind: String,
    name: String,
    loc: Loc,
    redispatch: bool,
    disabled: bool,
    default_server: Vec<String>,
    servers: Vec<Server>,
}

/// `disabled`/`enabled`, `backup`/`no-backup` among a server's (or default-server's) words.
fn flags(words: &[String], mut disabled: bool, mut backup: bool) -> (bool, bool) {
    for w in words {
        match w.as_str() {
            "disabled" => disabled = true,
            "enabled" => disabled = false,
            "backup" => backup = true,
            "no-backup" => backup = false,
            _ => {}
        }
    }
    (disabled, backup)
}

/// Reads the upstream servers of a configuration (the files in the order haproxy loads them).
#[must_use]
#[expect(
    clippy::too_many_lines,
    reason = "one pass over the lines, section by section, reads best in one place"
)]
pub fn parse(files: &[ConfFile]) -> NginxConfig {
    let mut cfg = NginxConfig {
        main_file: files.first().map(|f| f.path.clone()).unwrap_or_default(),
        ..NginxConfig::default()
    };
    let mut defaults = Defaults::default();
    let mut sections: Vec<Section> = Vec::new();
    for f in files {
        let mut in_defaults = false;
        let mut in_global = false;
        let mut current: Option<Section> = None;
        for (line_no, raw) in (1_u32..).zip(f.text.lines()) {
            let w = words(raw);
            let Some(first) = w.first() else { continue };
            let loc = Loc {
                file: f.path.clone(),
                line: line_no,
            };
            if SECTIONS.contains(&first.as_str()) {
                sections.extend(current.take());
                in_defaults = first == "defaults";
                in_global = first == "global";
                if in_defaults {
                    // A new unnamed defaults section resets what the previous one set.
                    defaults = Defaults::default();
                }
                if matches!(first.as_str(), "backend" | "listen") {
                    current = Some(Section {
                        kind: first.clone(),
                        name: w.get(1).cloned().unwrap_or_default(),
                        loc,
                        redispatch: defaults.redispatch,
                        disabled: false,
                        default_server: defaults.server.clone(),
                        servers: Vec::new(),
                    });
                }
                continue;
            }
            if in_global {
                if first == "chroot"
                    && let Some(dir) = w.get(1)
                {
                    cfg.chroot = Some((dir.clone(), loc));
                }
                continue;
            }
            let rest: Vec<&str> = w.iter().map(String::as_str).collect();
            let redispatch = match rest.as_slice() {
                ["option", "redispatch", ..] => Some(true),
                ["no", "option", "redispatch", ..] => Some(false),
                _ => None,
            };
            if in_defaults {
                if let Some(r) = redispatch {
                    defaults.redispatch = r;
                }
                if first == "default-server" {
                    defaults.server.extend(w[1..].iter().cloned());
                }
                continue;
            }
            let Some(s) = current.as_mut() else { continue };
            if let Some(r) = redispatch {
                s.redispatch = r;
            }
            match first.as_str() {
                "disabled" => s.disabled = true,
                "default-server" => s.default_server.extend(w[1..].iter().cloned()),
                "server-template" => cfg.notes.push(format!(
                    "{loc}: server-template {}: servers made from DNS records are not checked",
                    w.get(1).map_or("", String::as_str)
                )),
                "server" => {
                    let (Some(_name), Some(addr)) = (w.get(1), w.get(2)) else {
                        cfg.notes.push(format!("{loc}: server without an address"));
                        continue;
                    };
                    let (down0, backup0) = flags(&s.default_server, false, false);
                    let (down, backup) = flags(&w[3..], down0, backup0);
                    match server_addr(addr) {
                        ServerAddr::Addr(a) => s.servers.push(Server {
                            addr: a,
                            text: raw.split_whitespace().collect::<Vec<_>>().join(" "),
                            loc,
                            down,
                            backup,
                        }),
                        ServerAddr::Unknown(why) => {
                            cfg.notes.push(format!("{loc}: not checked: {why}"));
                        }
                    }
                }
                _ => {}
            }
        }
        sections.extend(current.take());
    }
    for s in sections {
        if s.servers.is_empty() {
            continue;
        }
        let head = format!("{} {}", s.kind, s.name);
        if s.disabled {
            cfg.notes.push(format!(
                "{} {head}: the section is disabled: its servers are not used",
                s.loc
            ));
            continue;
        }
        cfg.upstreams.push(Upstream {
            name: s.name.clone(),
            loc: s.loc.clone(),
            stream: false,
            servers: s.servers,
        });
        let i = cfg.upstreams.len() - 1;
        cfg.passes.push(proxies::pass(
            head,
            s.loc,
            String::new(),
            Dest::Upstream(i),
            s.redispatch,
        ));
    }
    cfg
}

/// The `-f` arguments of a command line (files or directories, in order), made absolute
/// against the working directory; Debian's default when there is none.
#[must_use]
pub fn config_args(cmdline: &str, cwd: &str) -> Vec<String> {
    let w: Vec<&str> = cmdline.split_whitespace().collect();
    let mut out = Vec::new();
    let mut i = 1;
    while i < w.len() {
        if w[i] == "-f"
            && let Some(f) = w.get(i + 1)
        {
            out.push(proxies::relative_to(cwd, f));
            i += 2;
            continue;
        }
        i += 1;
    }
    if out.is_empty() {
        out.push(DEFAULT_CONFIG.to_owned());
    }
    out
}

/// Reads the files of a running haproxy (a `-f` directory: its `*.cfg` files, sorted) and
/// parses them.
///
/// # Errors
/// The first file that cannot be read.
pub fn load(cmdline: &str, cwd: &str, fs: &Fs) -> Result<(String, NginxConfig), String> {
    let args = config_args(cmdline, cwd);
    let mut files = Vec::new();
    for a in &args {
        let paths = if fs.is_dir(a) {
            fs.glob(&format!("{}/*.cfg", a.trim_end_matches('/')))
        } else {
            vec![a.clone()]
        };
        for p in paths.into_iter().take(MAX_CONF_FILES) {
            files.push(ConfFile {
                text: fs.read(&p)?,
                path: p,
            });
        }
    }
    Ok((format!("{} (haproxy -f)", args.join(", ")), parse(&files)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::assess;

    const EDGE: &str = include_str!("../../../tests/fixtures/haproxy/edge.cfg");
    const DEBIAN: &str = include_str!("../../../tests/fixtures/haproxy/debian.cfg");

    fn edge() -> NginxConfig {
        parse(&[ConfFile {
            path: "/etc/haproxy/haproxy.cfg".into(),
            text: EDGE.into(),
        }])
    }

    #[test]
    fn words_quotes_and_comments() {
        assert_eq!(
            words("  server s1 \"/run/a b.sock\" check # comment"),
            ["server", "s1", "/run/a b.sock", "check"]
        );
        assert_eq!(words("bind 'x#y' \\#z"), ["bind", "x#y", "#z"]);
        assert_eq!(words("   # only a comment"), Vec::<String>::new());
    }

    #[test]
    fn server_addresses() {
        let host = |h: &str, port| {
            ServerAddr::Addr(Addr::Host {
                host: h.into(),
                port,
            })
        };
        let unix = |p: &str| ServerAddr::Addr(Addr::Unix(p.into()));
        assert_eq!(server_addr("127.0.0.1:8000"), host("127.0.0.1", 8000));
        assert_eq!(server_addr("[::1]:8080"), host("::1", 8080));
        assert_eq!(server_addr("ipv6@::1:8080"), host("::1", 8080));
        assert_eq!(server_addr("app.internal:80"), host("app.internal", 80));
        assert_eq!(server_addr("unix@/run/app.sock"), unix("/run/app.sock"));
        assert_eq!(server_addr("/run/app.sock"), unix("/run/app.sock"));
        assert_eq!(server_addr("abns@app"), unix("@app"));
        for unknown in ["10.0.0.1", "10.0.0.1:+1000", "${APP}", "fd@3", "x:y"] {
            assert!(
                matches!(server_addr(unknown), ServerAddr::Unknown(_)),
                "{unknown}"
            );
        }
    }

    #[test]
    fn edge_backends_servers_and_flags() {
        let c = edge();
        let names: Vec<&str> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["app", "api", "stats_listen"]);
        let app = &c.upstreams[0];
        let addrs: Vec<String> = app.servers.iter().map(|s| s.addr.to_string()).collect();
        assert_eq!(
            addrs,
            ["unix:/run/app/app.sock", "127.0.0.1:8001", "127.0.0.1:8002"]
        );
        assert_eq!(app.servers[0].loc.line, 31);
        assert_eq!(
            app.servers[0].text,
            "server a1 unix@/run/app/app.sock check"
        );
        assert!(app.servers[2].backup && !app.servers[2].down);
        // `default-server disabled` in api, one server enabling itself again.
        let api = &c.upstreams[1];
        assert!(api.servers[0].down && !api.servers[1].down);
        // option redispatch from defaults, switched off in api.
        assert!(!c.passes[0].next_upstream_off);
        assert!(c.passes[1].next_upstream_off);
        assert_eq!(c.passes[0].text, "backend app");
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("disabled") && n.contains("backend old")),
            "{:?}",
            c.notes
        );
        assert!(
            c.notes.iter().any(|n| n.contains("no fixed port")),
            "{:?}",
            c.notes
        );
        assert!(c.notes.iter().any(|n| n.contains("server-template")));
        let t = assess::targets(&c, &std::collections::HashMap::new());
        assert!(t.by_target.contains_key("unix:/run/app/app.sock"));
        let uses = &t.by_target["unix:/run/app/app.sock"];
        assert_eq!(
            uses[0].line,
            "/etc/haproxy/haproxy.cfg:29 backend app -> upstream app: \
             /etc/haproxy/haproxy.cfg:31 server a1 unix@/run/app/app.sock check"
        );
    }

    #[test]
    fn debian_default_has_no_servers() {
        let c = parse(&[ConfFile {
            path: DEFAULT_CONFIG.into(),
            text: DEBIAN.into(),
        }]);
        assert_eq!((c.passes.len(), c.upstreams.len()), (0, 0));
        assert_eq!(c.notes, Vec::<String>::new());
        let (dir, loc) = c.chroot.expect("Debian's haproxy.cfg chroots");
        assert_eq!((dir.as_str(), loc.line), ("/var/lib/haproxy", 4));
    }

    #[test]
    fn command_lines_and_directories() {
        assert_eq!(
            config_args(
                "/usr/sbin/haproxy -Ws -f /etc/haproxy/haproxy.cfg -p /run/haproxy.pid",
                "/"
            ),
            ["/etc/haproxy/haproxy.cfg"]
        );
        assert_eq!(
            config_args("haproxy -f base.cfg -f /etc/haproxy/conf.d", "/srv"),
            ["/srv/base.cfg", "/etc/haproxy/conf.d"]
        );
        assert_eq!(config_args("haproxy -db", "/"), [DEFAULT_CONFIG]);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("etc/haproxy/conf.d")).unwrap();
        std::fs::write(
            d.join("etc/haproxy/conf.d/20-b.cfg"),
            "backend b\n  server b1 127.0.0.1:9002\n",
        )
        .unwrap();
        std::fs::write(
            d.join("etc/haproxy/conf.d/10-a.cfg"),
            "defaults\n  option redispatch\nbackend a\n  server a1 127.0.0.1:9001\n",
        )
        .unwrap();
        std::fs::write(
            d.join("etc/haproxy/conf.d/notes.txt"),
            "backend x\n server x 1.2.3.4:1\n",
        )
        .unwrap();
        let (source, c) = load("haproxy -W -f /etc/haproxy/conf.d", "/", &Fs::new(d)).unwrap();
        assert_eq!(source, "/etc/haproxy/conf.d (haproxy -f)");
        let names: Vec<&str> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        // A defaults section carries on into the files loaded after it.
        assert!(!c.passes[1].next_upstream_off);
        assert!(
            load("haproxy -f /missing.cfg", "/", &Fs::new(d))
                .unwrap_err()
                .contains("cannot read /missing.cfg")
        );
    }
}
