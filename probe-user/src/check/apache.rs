//! Apache httpd configuration: the upstreams of `ProxyPass`, `ProxyPassMatch`, `BalancerMember`
//! (in `<Proxy balancer://NAME>` or naming its balancer) and `SetHandler "proxy:..."`, with
//! their file and line: `http://host:port/`, `unix:/path|http://localhost/`, `fcgi://host:port/`
//! (and the other `mod_proxy` schemes with their default ports), `balancer://NAME/`.
//! `ProxyPassReverse` only rewrites response headers: it makes no connect and is no upstream.
//! `Include`/`IncludeOptional` are followed (globs, relative to `ServerRoot`), `${VAR}` is
//! replaced from `Define`, the master's environment and Debian's `envvars`.
//!
//! `mod_proxy` answers 503 when it cannot connect to the backend; a balancer fails over to
//! another member.
//!
//! Pure but for [`load`], which reads the files through [`Fs`].
use std::collections::HashMap;
use std::hash::BuildHasher;

use super::nginx::{Addr, Dest, Loc, NginxConfig, Server, Upstream};
use super::proxies::{self, Fs, MAX_CONF_FILES, MAX_INCLUDE_DEPTH};

/// Splits a directive line into words: `"..."` and `'...'` quote (with `\` escapes).
#[must_use]
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '"' | '\'') if !in_word => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') => {
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

/// The default port of each `mod_proxy` scheme (`ap_proxy_port_of_scheme`).
fn scheme_port(scheme: &str) -> Option<u16> {
    Some(match scheme {
        "http" | "ws" | "h2c" => 80,
        "https" | "wss" | "h2" => 443,
        "fcgi" => 8000,
        "scgi" => 4000,
        "uwsgi" => 3031,
        "ajp" => 8009,
        _ => return None,
    })
}

/// What a `mod_proxy` URL stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Url {
    Addr(Addr),
    /// `balancer://NAME/...` (NAME lowercased: httpd compares it so).
    Balancer(String),
    Unknown(String),
}

/// Reads a `mod_proxy` URL.
#[must_use]
pub fn url(u: &str) -> Url {
    if u.contains("${") || u.contains('$') && u.contains("://$") {
        return Url::Unknown(format!("{u}: a variable gwtrace could not replace"));
    }
    if let Some(rest) = u.strip_prefix("unix:") {
        // `unix:/path|http://localhost/`: the socket, then the protocol spoken over it.
        let path = rest.split('|').next().unwrap_or(rest);
        return Url::Addr(Addr::Unix(path.to_owned()));
    }
    let Some((scheme, rest)) = u.split_once("://") else {
        return Url::Unknown(format!("{u}: not a URL"));
    };
    let scheme = scheme.to_ascii_lowercase();
    let hostport = rest.split('/').next().unwrap_or(rest);
    if scheme == "balancer" {
        return Url::Balancer(hostport.to_ascii_lowercase());
    }
    let Some(default_port) = scheme_port(&scheme) else {
        return Url::Unknown(format!("{u}: scheme {scheme} is not checked"));
    };
    let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
        match r.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':').unwrap_or("")),
            None => return Url::Unknown(format!("{u}: unterminated [")),
        }
    } else {
        hostport.rsplit_once(':').unwrap_or((hostport, ""))
    };
    let port = if port.is_empty() {
        default_port
    } else {
        match port.parse() {
            Ok(p) => p,
            Err(_) => return Url::Unknown(format!("{u}: cannot read the port")),
        }
    };
    if host.is_empty() {
        return Url::Unknown(format!("{u}: no host"));
    }
    Url::Addr(Addr::Host {
        host: host.to_owned(),
        port,
    })
}

/// A `ProxyPass`-like line before balancer names are resolved.
struct RawPass {
    text: String,
    loc: Loc,
    context: String,
    url: Url,
}

struct Walker<'a> {
    fs: &'a Fs,
    env: HashMap<String, String>,
    server_root: String,
    cfg: NginxConfig,
    passes: Vec<RawPass>,
    /// Balancer members by balancer name, in order.
    balancers: Vec<(String, Loc, Vec<Server>)>,
    /// Open sections: (name lowercased, argument).
    sections: Vec<(String, String)>,
    files: usize,
}

impl Walker<'_> {
    /// `${VAR}` replaced where the variable is known.
    fn subst(&self, w: &str) -> String {
        let mut out = String::new();
        let mut rest = w;
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[at..]);
                return out;
            };
            match self.env.get(&after[..end]) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[at..at + 3 + end]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn file(&mut self, path: &str, depth: usize) {
        self.files += 1;
        match self.fs.read(path) {
            Ok(t) => self.text(&t, path, depth),
            Err(e) => self.cfg.notes.push(e),
        }
    }

    fn text(&mut self, text: &str, path: &str, depth: usize) {
        let mut logical = String::new();
        let mut start = 0u32;
        for (i, raw) in text.lines().enumerate() {
            let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
            if logical.is_empty() {
                start = n;
            }
            if let Some(cont) = raw.strip_suffix('\\') {
                logical.push_str(cont);
                logical.push(' ');
                continue;
            }
            logical.push_str(raw);
            let line = std::mem::take(&mut logical);
            let loc = Loc {
                file: path.to_owned(),
                line: start,
            };
            self.line(line.trim(), loc, depth);
        }
    }

    fn context(&self) -> String {
        self.sections
            .iter()
            .filter(|(n, _)| matches!(n.as_str(), "virtualhost" | "location" | "locationmatch"))
            .map(|(n, a)| {
                let n = match n.as_str() {
                    "virtualhost" => "VirtualHost",
                    "location" => "Location",
                    _ => "LocationMatch",
                };
                format!("<{n} {a}>")
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn in_location(&self) -> bool {
        self.sections
            .last()
            .is_some_and(|(n, _)| matches!(n.as_str(), "location" | "locationmatch"))
    }

    fn line(&mut self, line: &str, loc: Loc, depth: usize) {
        if line.is_empty() || line.starts_with('#') {
            return;
        }
        if let Some(close) = line.strip_prefix("</") {
            let name = close.trim_end_matches('>').trim().to_ascii_lowercase();
            if let Some(at) = self.sections.iter().rposition(|(n, _)| *n == name) {
                self.sections.truncate(at);
            }
            return;
        }
        if let Some(open) = line.strip_prefix('<') {
            let open = open.trim_end().trim_end_matches('>');
            let w = words(open);
            let name = w
                .first()
                .map(|s| s.to_ascii_lowercase())
                .unwrap_or_default();
            let arg = w[1.min(w.len())..].join(" ");
            self.sections.push((name, self.subst(&arg)));
            return;
        }
        let w: Vec<String> = words(line).iter().map(|x| self.subst(x)).collect();
        let Some(name) = w.first().map(|s| s.to_ascii_lowercase()) else {
            return;
        };
        let text = w.join(" ");
        match name.as_str() {
            "serverroot" => {
                if let Some(r) = w.get(1) {
                    self.server_root.clone_from(r);
                }
            }
            "define" => {
                if let Some(k) = w.get(1) {
                    self.env
                        .insert(k.clone(), w.get(2).cloned().unwrap_or_default());
                }
            }
            "include" | "includeoptional" => {
                let Some(arg) = w.get(1) else { return };
                if depth >= MAX_INCLUDE_DEPTH {
                    self.cfg
                        .notes
                        .push(format!("{loc}: Include nested too deep (a loop?)"));
                    return;
                }
                let pattern = proxies::relative_to(&self.server_root, arg);
                let files = if self.fs.is_dir(&pattern) {
                    self.fs
                        .glob(&format!("{}/*", pattern.trim_end_matches('/')))
                } else {
                    self.fs.glob(&pattern)
                };
                if files.is_empty() && name == "include" && !super::nginx::has_glob(&pattern) {
                    self.cfg
                        .notes
                        .push(format!("{loc}: Include {arg}: no such file"));
                }
                for f in files {
                    if self.files >= MAX_CONF_FILES {
                        break;
                    }
                    self.file(&f, depth + 1);
                }
            }
            "proxypass" | "proxypassmatch" => {
                let u = if self.in_location() {
                    w.get(1)
                } else {
                    w.get(2)
                };
                let Some(u) = u else { return };
                if u == "!" {
                    return;
                }
                self.push_pass(text, loc, u);
            }
            "sethandler" => {
                if let Some(u) = w.get(1).and_then(|h| h.strip_prefix("proxy:")) {
                    let u = u.to_owned();
                    self.push_pass(text, loc, &u);
                }
            }
            "balancermember" => {
                let in_proxy = self.sections.iter().rev().find_map(|(n, a)| {
                    (n == "proxy")
                        .then(|| a.strip_prefix("balancer://").map(str::to_owned))
                        .flatten()
                });
                let (balancer, member, params) = match in_proxy {
                    Some(b) => (b, w.get(1), w.get(2..).unwrap_or(&[])),
                    None => match w.get(1).and_then(|b| b.strip_prefix("balancer://")) {
                        Some(b) => (b.to_owned(), w.get(2), w.get(3..).unwrap_or(&[])),
                        None => return,
                    },
                };
                let Some(member) = member else { return };
                let balancer = balancer.trim_end_matches('/').to_ascii_lowercase();
                let status: String = params
                    .iter()
                    .filter_map(|p| p.strip_prefix("status="))
                    .collect();
                let addr = match url(member) {
                    Url::Addr(a) => a,
                    Url::Balancer(_) | Url::Unknown(_) => {
                        self.cfg
                            .notes
                            .push(format!("{loc}: {text}: member address not checked"));
                        return;
                    }
                };
                let server = Server {
                    addr,
                    text: text.clone(),
                    loc: loc.clone(),
                    down: status.contains("+D") || status.contains("+S"),
                    backup: status.contains("+H"),
                };
                match self.balancers.iter_mut().find(|(n, _, _)| *n == balancer) {
                    Some((_, _, members)) => members.push(server),
                    None => self.balancers.push((balancer, loc, vec![server])),
                }
            }
            _ => {}
        }
    }

    fn push_pass(&mut self, text: String, loc: Loc, u: &str) {
        let context = self.context();
        self.passes.push(RawPass {
            text,
            loc,
            context,
            url: url(u),
        });
    }

    /// Balancer names resolved: the passes and their members in the common shape.
    fn finish(mut self) -> NginxConfig {
        let mut index: HashMap<String, usize> = HashMap::new();
        for (name, loc, members) in std::mem::take(&mut self.balancers) {
            index.insert(name.clone(), self.cfg.upstreams.len());
            self.cfg.upstreams.push(Upstream {
                name: format!("balancer://{name}"),
                loc,
                stream: false,
                servers: members,
            });
        }
        for p in std::mem::take(&mut self.passes) {
            let (dest, retries) = match p.url {
                Url::Addr(a) => (Dest::Addr(a), false),
                Url::Balancer(b) => {
                    let Some(i) = index.get(&b) else {
                        self.cfg.notes.push(format!(
                            "{} {}: no BalancerMember for balancer://{b}",
                            p.loc, p.text
                        ));
                        continue;
                    };
                    (Dest::Upstream(*i), true)
                }
                Url::Unknown(why) => {
                    self.cfg
                        .notes
                        .push(format!("{} {}: not checked: {why}", p.loc, p.text));
                    continue;
                }
            };
            self.cfg
                .passes
                .push(proxies::pass(p.text, p.loc, p.context, dest, retries));
        }
        self.cfg
    }
}

/// Reads a configuration from its main file, following includes through `fs`.
#[must_use]
pub fn parse<S: BuildHasher>(
    main: &str,
    server_root: &str,
    env: &HashMap<String, String, S>,
    fs: &Fs,
) -> NginxConfig {
    let mut w = Walker {
        fs,
        env: env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        server_root: server_root.to_owned(),
        cfg: NginxConfig {
            main_file: main.to_owned(),
            ..NginxConfig::default()
        },
        passes: Vec::new(),
        balancers: Vec::new(),
        sections: Vec::new(),
        files: 0,
    };
    w.file(main, 0);
    w.finish()
}

/// `export NAME=value` lines of Debian's `envvars` (values unquoted; `$SUFFIX` forms skipped).
#[must_use]
pub fn envvars(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .filter(|(_, v)| !v.contains('$'))
        .map(|(k, v)| {
            (
                k.trim().to_owned(),
                v.trim().trim_matches(['"', '\'']).to_owned(),
            )
        })
        .collect()
}

/// (server root, main file) of a command line: `-d ROOT`, `-f FILE` (relative to the root), else
/// the build's defaults (Debian's `apache2`: /etc/apache2/apache2.conf; `httpd`:
/// /etc/httpd/conf/httpd.conf).
#[must_use]
pub fn main_file(cmdline: &str) -> (String, String) {
    let w: Vec<&str> = cmdline.split_whitespace().collect();
    let argv0 = w.first().copied().unwrap_or("apache2");
    let httpd = argv0.rsplit('/').next().is_some_and(|b| b == "httpd");
    let (mut root, mut file) = if httpd {
        ("/etc/httpd".to_owned(), "conf/httpd.conf".to_owned())
    } else {
        ("/etc/apache2".to_owned(), "apache2.conf".to_owned())
    };
    let mut i = 1;
    while i < w.len() {
        match (w[i], w.get(i + 1)) {
            ("-d", Some(d)) => (*d).clone_into(&mut root),
            ("-f", Some(f)) => (*f).clone_into(&mut file),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    let main = proxies::relative_to(&root, &file);
    (root, main)
}

/// Reads a running httpd's configuration.
///
/// # Errors
/// The main file cannot be read.
pub fn load<S: BuildHasher>(
    cmdline: &str,
    env: &HashMap<String, String, S>,
    fs: &Fs,
) -> Result<(String, NginxConfig), String> {
    let (root, main) = main_file(cmdline);
    // Fails early with the file's name when the main file is unreadable.
    fs.read(&main)?;
    let mut vars = fs
        .read(&format!("{root}/envvars"))
        .map(|t| envvars(&t))
        .unwrap_or_default();
    vars.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let cfg = parse(&main, &root, &vars, fs);
    Ok((format!("{main} (ServerRoot {root})"), cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::assess;

    fn fixtures() -> Fs {
        Fs::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/apache"
        ))
    }

    #[test]
    fn urls() {
        let host = |h: &str, port| {
            Url::Addr(Addr::Host {
                host: h.into(),
                port,
            })
        };
        assert_eq!(url("http://127.0.0.1:8000/"), host("127.0.0.1", 8000));
        assert_eq!(url("http://app.internal/"), host("app.internal", 80));
        assert_eq!(url("fcgi://127.0.0.1/"), host("127.0.0.1", 8000));
        assert_eq!(url("ajp://[::1]/"), host("::1", 8009));
        assert_eq!(
            url("unix:/run/php/php8.2-fpm.sock|fcgi://localhost/"),
            Url::Addr(Addr::Unix("/run/php/php8.2-fpm.sock".into()))
        );
        assert_eq!(
            url("balancer://MyCluster/"),
            Url::Balancer("mycluster".into())
        );
        for u in ["ftp://x/", "${BACKEND}/", "nothing", "http://h:x/"] {
            assert!(matches!(url(u), Url::Unknown(_)), "{u}");
        }
        assert_eq!(
            words(r#"SetHandler "proxy:unix:/run/a b.sock|fcgi://localhost""#),
            ["SetHandler", "proxy:unix:/run/a b.sock|fcgi://localhost"]
        );
    }

    #[test]
    fn debian_layout_includes_balancers_and_variables() {
        let fs = fixtures();
        let (source, c) = load("/usr/sbin/apache2 -k start", &HashMap::new(), &fs).unwrap();
        assert_eq!(
            source,
            "/etc/apache2/apache2.conf (ServerRoot /etc/apache2)"
        );
        let t = assess::targets(&c, &HashMap::new());
        let keys: Vec<&str> = t.by_target.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "127.0.0.1:8000",
                "127.0.0.1:8001",
                "127.0.0.1:8002",
                "127.0.0.1:8003",
                "127.0.0.1:9000",
                "unix:/run/app/app.sock",
                "unix:/run/php/php-fpm.sock",
            ]
        );
        let site = "/etc/apache2/sites-enabled/app.conf";
        let app = &t.by_target["unix:/run/app/app.sock"][0];
        assert_eq!(
            app.line,
            format!("{site}:6 ProxyPass /app/ unix:/run/app/app.sock|http://localhost/app/")
        );
        let pass = &c.passes[app.pass];
        assert_eq!(pass.context, "<VirtualHost *:80>");
        assert!(pass.next_upstream_off);
        // The balancer: members with their own lines, a hot standby as backup, one disabled.
        let member = &t.by_target["127.0.0.1:8002"][0];
        assert!(member.backup);
        assert!(
            member.line.contains("-> upstream balancer://shop:"),
            "{}",
            member.line
        );
        assert!(!c.passes[member.pass].next_upstream_off);
        assert!(
            !t.by_target.contains_key("127.0.0.1:8009"),
            "a disabled member"
        );
        // ${APP_PORT} from envvars, the ProxyPass inside a <Location>, ProxyPassReverse ignored.
        let loc = &t.by_target["127.0.0.1:9000"][0];
        assert!(
            loc.line.contains("ProxyPass http://127.0.0.1:9000/"),
            "{}",
            loc.line
        );
        assert_eq!(
            c.passes[loc.pass].context,
            "<VirtualHost *:80> <Location /api/>"
        );
        assert!(
            c.notes.iter().any(|n| n.contains("${UNSET_BACKEND}")),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            main_file("/usr/sbin/apache2 -k start"),
            ("/etc/apache2".into(), "/etc/apache2/apache2.conf".into())
        );
        assert_eq!(
            main_file("/usr/sbin/httpd -DFOREGROUND"),
            ("/etc/httpd".into(), "/etc/httpd/conf/httpd.conf".into())
        );
        assert_eq!(
            main_file("apache2 -d /srv/web -f conf/site.conf -k start"),
            ("/srv/web".into(), "/srv/web/conf/site.conf".into())
        );
        assert!(
            load("apache2 -f /none.conf", &HashMap::new(), &fixtures())
                .unwrap_err()
                .contains("cannot read /none.conf")
        );
        let env = envvars(
            "unset HOME\nexport APACHE_RUN_USER=www-data\nexport X=\"a b\"\nexport Y=$SUFFIX\n",
        );
        assert_eq!(
            env.get("APACHE_RUN_USER").map(String::as_str),
            Some("www-data")
        );
        assert_eq!(env.get("X").map(String::as_str), Some("a b"));
        assert!(!env.contains_key("Y"));
    }
}
