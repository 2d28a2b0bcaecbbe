//! Caddy configuration: the upstreams of every `reverse_proxy` (and `php_fastcgi`) of a
//! Caddyfile, with its file and line, or of a JSON configuration (`"handler": "reverse_proxy"`,
//! `"upstreams": [{"dial": ...}]`), or of a `caddy reverse-proxy --to ...` command line.
//! Upstream addresses: `host:port`, `http(s)://host[:port]`, `h2c://`, port ranges
//! (`:8001-8003`), `unix//path`.
//!
//! Caddy answers 502 when the connect to an upstream fails. It retries another upstream only
//! when `lb_try_duration` or `lb_retries` is set (off by default).
//!
//! Pure but for [`load`], which reads the file named by `--config` (default `./Caddyfile`) and
//! its `import`s.
use std::collections::HashMap;

use super::nginx::{Addr, Dest, Loc, NginxConfig, Server, Upstream};
use super::proxies::{self, Fs, MAX_CONF_FILES, MAX_INCLUDE_DEPTH};

/// Debian's configuration file (the packaged unit's `--config`).
pub const DEFAULT_CONFIG: &str = "/etc/caddy/Caddyfile";
/// Most upstreams one port range expands to.
const MAX_RANGE: u32 = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Tok {
    text: String,
    /// Shown line.
    line: u32,
    /// Logical line (a `\` at a line's end continues it).
    lid: u32,
    quoted: bool,
}

/// Caddyfile tokens: words, `"..."` (with `\"`), `` `...` `` (raw), `#` comments at a token start.
fn tokenize(text: &str) -> Vec<Tok> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut line, mut lid) = (1u32, 1u32);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                lid += 1;
                i += 1;
            }
            '\\' if chars.get(i + 1) == Some(&'\n') => {
                line += 1;
                i += 2;
            }
            ' ' | '\t' | '\r' => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '"' | '`' => {
                let start = line;
                let mut w = String::new();
                i += 1;
                while let Some(&ch) = chars.get(i) {
                    i += 1;
                    if ch == c {
                        break;
                    }
                    if ch == '\n' {
                        line += 1;
                    }
                    if c == '"' && ch == '\\' && chars.get(i) == Some(&'"') {
                        w.push('"');
                        i += 1;
                        continue;
                    }
                    w.push(ch);
                }
                out.push(Tok {
                    text: w,
                    line: start,
                    lid,
                    quoted: true,
                });
            }
            _ => {
                let mut w = String::new();
                while let Some(&ch) = chars.get(i) {
                    if ch.is_whitespace() {
                        break;
                    }
                    w.push(ch);
                    i += 1;
                }
                out.push(Tok {
                    text: w,
                    line,
                    lid,
                    quoted: false,
                });
            }
        }
    }
    out
}

/// A directive (or a site's address line), with its block.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    words: Vec<String>,
    loc: Loc,
    block: Option<Vec<Node>>,
}

fn is(t: &Tok, s: &str) -> bool {
    !t.quoted && t.text == s
}

/// Groups tokens into directives by logical line; a line ending in `{` opens a block, a line
/// `}` closes it.
fn parse_block(toks: &[Tok], i: &mut usize, file: &str, depth: usize) -> Vec<Node> {
    let mut nodes = Vec::new();
    while *i < toks.len() {
        let lid = toks[*i].lid;
        let line = toks[*i].line;
        let mut end = *i;
        while end < toks.len() && toks[end].lid == lid {
            end += 1;
        }
        let words = &toks[*i..end];
        *i = end;
        if words.len() == 1 && is(&words[0], "}") {
            if depth > 0 {
                return nodes;
            }
            continue;
        }
        let loc = Loc {
            file: file.to_owned(),
            line,
        };
        let opens = words.last().is_some_and(|t| is(t, "{"));
        let (body, closes_here) = if opens {
            (&words[..words.len() - 1], false)
        } else if words.len() >= 2
            && is(&words[words.len() - 1], "}")
            && words.iter().any(|t| is(t, "{"))
        {
            // `handle { respond "x" }` on one line: keep only the words before `{`.
            let open = words.iter().position(|t| is(t, "{")).unwrap_or(0);
            (&words[..open], true)
        } else {
            (words, false)
        };
        let w: Vec<String> = body.iter().map(|t| t.text.clone()).collect();
        let block = if opens {
            Some(parse_block(toks, i, file, depth + 1))
        } else if closes_here {
            Some(Vec::new())
        } else {
            None
        };
        nodes.push(Node {
            words: w,
            loc,
            block,
        });
    }
    nodes
}

/// What an upstream word stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamAddr {
    Addrs(Vec<Addr>),
    Unknown(String),
}

/// Reads an upstream (`localhost:8000`, `http://app:8080`, `https://api`, `h2c://127.0.0.1:9000`,
/// `127.0.0.1:8001-8003`, `unix//run/app.sock`; JSON dials `host:port` and `unix//path`).
#[must_use]
pub fn upstream_addr(a: &str) -> UpstreamAddr {
    if a.contains('{') {
        return UpstreamAddr::Unknown(format!("{a}: a placeholder, known at request time"));
    }
    let (scheme, rest) = a.split_once("://").unwrap_or(("", a));
    if let Some(p) = a.strip_prefix("unix/") {
        return UpstreamAddr::Addrs(vec![Addr::Unix(p.to_owned())]);
    }
    let default_port = match scheme {
        "" | "http" | "h2c" | "ws" => 80,
        "https" | "wss" => 443,
        other => {
            return UpstreamAddr::Unknown(format!("{a}: scheme {other} is not checked"));
        }
    };
    let hostport = rest.split('/').next().unwrap_or(rest);
    let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
        match r.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':').unwrap_or("")),
            None => return UpstreamAddr::Unknown(format!("{a}: unterminated [")),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (hostport, ""),
        }
    };
    let host = if host.is_empty() { "localhost" } else { host };
    let ports: Vec<u16> = if port.is_empty() {
        vec![default_port]
    } else if let Some((lo, hi)) = port.split_once('-') {
        match (lo.parse::<u16>(), hi.parse::<u16>()) {
            (Ok(lo), Ok(hi)) if lo <= hi && u32::from(hi - lo) < MAX_RANGE => (lo..=hi).collect(),
            _ => return UpstreamAddr::Unknown(format!("{a}: cannot read the port range")),
        }
    } else {
        match port.parse() {
            Ok(p) => vec![p],
            Err(_) => return UpstreamAddr::Unknown(format!("{a}: cannot read the port")),
        }
    };
    UpstreamAddr::Addrs(
        ports
            .into_iter()
            .map(|port| Addr::Host {
                host: host.to_owned(),
                port,
            })
            .collect(),
    )
}

/// Is a `reverse_proxy` argument a request matcher rather than an upstream?
fn is_matcher(w: &str) -> bool {
    w == "*" || w.starts_with('/') || w.starts_with('@')
}

/// Does a `lb_try_duration`/`lb_retries` value turn retries on?
fn retries_on(name: &str, value: Option<&String>) -> bool {
    let Some(v) = value else { return false };
    match name {
        "lb_retries" => v.parse::<u32>().is_ok_and(|n| n > 0),
        _ => !matches!(v.as_str(), "0" | "0s" | "0ms"),
    }
}

struct Walker<'a> {
    fs: &'a Fs,
    cfg: NginxConfig,
    snippets: HashMap<String, Vec<Node>>,
    files: usize,
}

impl Walker<'_> {
    /// The nodes of a file, its imports expanded.
    fn file(&mut self, path: &str, depth: usize) -> Vec<Node> {
        self.files += 1;
        let text = match self.fs.read(path) {
            Ok(t) => t,
            Err(e) => {
                self.cfg.notes.push(e);
                return Vec::new();
            }
        };
        self.text(&text, path, depth)
    }

    fn text(&mut self, text: &str, path: &str, depth: usize) -> Vec<Node> {
        let toks = tokenize(text);
        let mut i = 0;
        let nodes = parse_block(&toks, &mut i, path, 0);
        // Snippets first: `import NAME` may come before `(NAME)`.
        for n in &nodes {
            if let (Some(w), Some(b)) = (n.words.first(), &n.block)
                && n.words.len() == 1
                && let Some(name) = w.strip_prefix('(').and_then(|r| r.strip_suffix(')'))
            {
                self.snippets.insert(name.to_owned(), b.clone());
            }
        }
        self.expand(nodes, path, depth)
    }

    fn expand(&mut self, nodes: Vec<Node>, path: &str, depth: usize) -> Vec<Node> {
        let mut out = Vec::new();
        for mut n in nodes {
            if n.words.first().is_some_and(|w| w == "import") && n.block.is_none() {
                let Some(arg) = n.words.get(1).cloned() else {
                    continue;
                };
                if depth >= MAX_INCLUDE_DEPTH {
                    self.cfg
                        .notes
                        .push(format!("{}: import nested too deep (a loop?)", n.loc));
                    continue;
                }
                if let Some(s) = self.snippets.get(&arg).cloned() {
                    out.extend(self.expand(s, path, depth + 1));
                    continue;
                }
                let pattern = proxies::relative_to(proxies::dir_of(path), &arg);
                let files = self.fs.glob(&pattern);
                if files.is_empty() && !super::nginx::has_glob(&pattern) {
                    self.cfg
                        .notes
                        .push(format!("{}: import {arg}: no such snippet or file", n.loc));
                }
                for f in files {
                    if self.files >= MAX_CONF_FILES {
                        break;
                    }
                    out.extend(self.file(&f, depth + 1));
                }
                continue;
            }
            if let Some(b) = n.block.take() {
                n.block = Some(self.expand(b, path, depth));
            }
            out.push(n);
        }
        out
    }

    /// Every `reverse_proxy` and `php_fastcgi` under `nodes`, in the site `site`.
    fn directives(&mut self, nodes: &[Node], site: &str) {
        for n in nodes {
            match n.words.first().map(String::as_str) {
                Some("reverse_proxy" | "php_fastcgi") => self.proxy(n, site),
                _ => {
                    if let Some(b) = &n.block {
                        self.directives(b, site);
                    }
                }
            }
        }
    }

    fn proxy(&mut self, n: &Node, site: &str) {
        let mut ups: Vec<String> = n.words[1..].to_vec();
        if ups.first().is_some_and(|w| is_matcher(w)) {
            ups.remove(0);
        }
        let mut retries = false;
        let mut dynamic = false;
        for sub in n.block.as_deref().unwrap_or(&[]) {
            match sub.words.first().map(String::as_str) {
                Some("to") => ups.extend(sub.words[1..].iter().cloned()),
                Some(name @ ("lb_try_duration" | "lb_retries")) => {
                    retries |= retries_on(name, sub.words.get(1));
                }
                Some("dynamic") => dynamic = true,
                _ => {}
            }
        }
        let text = n.words.join(" ");
        if dynamic {
            self.cfg.notes.push(format!(
                "{} {text}: dynamic upstreams, known at request time: not checked",
                n.loc
            ));
        }
        let mut addrs = Vec::new();
        for u in &ups {
            match upstream_addr(u) {
                UpstreamAddr::Addrs(a) => addrs.extend(a.into_iter().map(|a| (u.clone(), a))),
                UpstreamAddr::Unknown(why) => {
                    self.cfg
                        .notes
                        .push(format!("{} {text}: not checked: {why}", n.loc));
                }
            }
        }
        push_pass(&mut self.cfg, text, &n.loc, site, addrs, retries);
    }
}

/// One `reverse_proxy`: a single address, or a group of them.
fn push_pass(
    cfg: &mut NginxConfig,
    text: String,
    loc: &Loc,
    site: &str,
    addrs: Vec<(String, Addr)>,
    retries: bool,
) {
    let dest = match addrs.as_slice() {
        [] => return,
        [(_, a)] => Dest::Addr(a.clone()),
        _ => {
            cfg.upstreams.push(Upstream {
                name: "of this reverse_proxy".to_owned(),
                loc: loc.clone(),
                stream: false,
                servers: addrs
                    .into_iter()
                    .map(|(word, addr)| Server {
                        text: word,
                        addr,
                        loc: loc.clone(),
                        down: false,
                        backup: false,
                    })
                    .collect(),
            });
            Dest::Upstream(cfg.upstreams.len() - 1)
        }
    };
    cfg.passes.push(proxies::pass(
        text,
        loc.clone(),
        site.to_owned(),
        dest,
        retries,
    ));
}

/// Reads a Caddyfile (and its imports, through `fs`).
#[must_use]
pub fn parse_caddyfile(path: &str, text: &str, fs: &Fs) -> NginxConfig {
    let mut w = Walker {
        fs,
        cfg: NginxConfig {
            main_file: path.to_owned(),
            ..NginxConfig::default()
        },
        snippets: HashMap::new(),
        files: 1,
    };
    let nodes = w.text(text, path, 0);
    let is_global = |n: &Node| n.words.is_empty() && n.block.is_some();
    let is_snippet = |n: &Node| n.words.first().is_some_and(|s| s.starts_with('('));
    let sites: Vec<&Node> = nodes
        .iter()
        .filter(|n| !is_global(n) && !is_snippet(n))
        .collect();
    if sites.iter().any(|n| n.block.is_some()) {
        for s in sites.iter().filter(|n| n.block.is_some()) {
            let site = s.words.join(" ");
            w.directives(s.block.as_deref().unwrap_or(&[]), &site);
        }
    } else if let Some((addr, body)) = sites.split_first() {
        // One site without braces: its address line, then its directives.
        let site = addr.words.join(" ");
        let body: Vec<Node> = body.iter().map(|n| (*n).clone()).collect();
        w.directives(&body, &site);
    }
    w.cfg
}

/// The line of a JSON text where `needle` first appears (1 when absent).
fn line_of(text: &str, needle: &str) -> u32 {
    text.find(needle).map_or(1, |at| {
        u32::try_from(text[..at].matches('\n').count() + 1).unwrap_or(1)
    })
}

/// Reads a JSON configuration: every `reverse_proxy` handler, however deep (`subroute`s).
///
/// # Errors
/// The JSON is invalid (serde's message with its line).
pub fn parse_json(path: &str, text: &str) -> Result<NginxConfig, String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
        match v {
            serde_json::Value::Object(m) => {
                if m.get("handler").and_then(|h| h.as_str()) == Some("reverse_proxy") {
                    out.push(v.clone());
                }
                m.values().for_each(|x| walk(x, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("{path}: invalid JSON: {e}"))?;
    let mut handlers = Vec::new();
    walk(&v, &mut handlers);
    let mut cfg = NginxConfig {
        main_file: path.to_owned(),
        ..NginxConfig::default()
    };
    for h in handlers {
        let dials: Vec<String> = h["upstreams"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u["dial"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let lb = &h["load_balancing"];
        let retries = lb["retries"].as_u64().is_some_and(|n| n > 0)
            || lb["try_duration"]
                .as_str()
                .is_some_and(|d| !matches!(d, "0" | "0s"))
            || lb["try_duration"].as_u64().is_some_and(|n| n > 0);
        let Some(first) = dials.first() else {
            if h.get("dynamic_upstreams").is_some() {
                cfg.notes.push(format!(
                    "{path}: a reverse_proxy with dynamic upstreams: not checked"
                ));
            }
            continue;
        };
        let loc = Loc {
            file: path.to_owned(),
            line: line_of(text, &format!("\"{first}\"")),
        };
        let mut addrs = Vec::new();
        for d in &dials {
            match upstream_addr(d) {
                UpstreamAddr::Addrs(a) => addrs.extend(a.into_iter().map(|a| (d.clone(), a))),
                UpstreamAddr::Unknown(why) => cfg.notes.push(format!("{loc}: not checked: {why}")),
            }
        }
        let text = format!("reverse_proxy dial {}", dials.join(" "));
        push_pass(&mut cfg, text, &loc, "", addrs, retries);
    }
    Ok(cfg)
}

/// How a caddy command line names its configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A file and whether it is a Caddyfile (else JSON).
    File { path: String, caddyfile: bool },
    /// `caddy reverse-proxy --from ... --to ...`: the `--to` upstreams.
    Command(Vec<String>),
}

/// The configuration a `caddy run|start|reverse-proxy` command line uses.
#[must_use]
pub fn source(cmdline: &str, cwd: &str) -> Source {
    let w: Vec<&str> = cmdline.split_whitespace().collect();
    let flag = |name: &str| -> Vec<String> {
        let mut out = Vec::new();
        let eq = format!("{name}=");
        for (i, x) in w.iter().enumerate() {
            if *x == name
                && let Some(v) = w.get(i + 1)
            {
                out.push((*v).to_owned());
            } else if let Some(v) = x.strip_prefix(&eq) {
                out.push(v.to_owned());
            }
        }
        out
    };
    if w.get(1) == Some(&"reverse-proxy") {
        let mut to = flag("--to");
        to.extend(flag("-t"));
        return Source::Command(to);
    }
    let path = flag("--config")
        .into_iter()
        .chain(flag("-c"))
        .next()
        .map_or_else(
            || proxies::relative_to(cwd, "Caddyfile"),
            |c| proxies::relative_to(cwd, &c),
        );
    let adapter = flag("--adapter").into_iter().chain(flag("-a")).next();
    let base = path.rsplit('/').next().unwrap_or(&path);
    let caddyfile = match adapter.as_deref() {
        Some(a) => a == "caddyfile",
        None => base.starts_with("Caddyfile") || base.ends_with(".caddyfile"),
    };
    Source::File { path, caddyfile }
}

/// Reads a running caddy's configuration.
///
/// # Errors
/// The configuration file cannot be read, or its JSON is invalid.
pub fn load(cmdline: &str, cwd: &str, fs: &Fs) -> Result<(String, NginxConfig), String> {
    match source(cmdline, cwd) {
        Source::Command(to) => {
            let mut cfg = NginxConfig::default();
            let loc = Loc {
                file: "caddy reverse-proxy".to_owned(),
                line: 1,
            };
            let mut addrs = Vec::new();
            for u in &to {
                match upstream_addr(u) {
                    UpstreamAddr::Addrs(a) => addrs.extend(a.into_iter().map(|a| (u.clone(), a))),
                    UpstreamAddr::Unknown(why) => cfg.notes.push(format!("--to {why}")),
                }
            }
            let text = format!("--to {}", to.join(" --to "));
            push_pass(&mut cfg, text, &loc, "", addrs, false);
            Ok(("the caddy reverse-proxy command line".to_owned(), cfg))
        }
        Source::File { path, caddyfile } => {
            let text = fs.read(&path)?;
            if caddyfile {
                Ok((
                    format!("{path} (Caddyfile)"),
                    parse_caddyfile(&path, &text, fs),
                ))
            } else {
                Ok((format!("{path} (JSON)"), parse_json(&path, &text)?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::assess;

    fn fixtures() -> Fs {
        Fs::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/caddy"
        ))
    }

    fn targets(c: &NginxConfig) -> Vec<String> {
        assess::targets(c, &HashMap::new())
            .by_target
            .into_keys()
            .collect()
    }

    #[test]
    fn upstream_addresses() {
        let host = |h: &str, port| Addr::Host {
            host: h.into(),
            port,
        };
        let one = |a| UpstreamAddr::Addrs(vec![a]);
        assert_eq!(
            upstream_addr("localhost:8000"),
            one(host("localhost", 8000))
        );
        assert_eq!(
            upstream_addr("http://app.internal"),
            one(host("app.internal", 80))
        );
        assert_eq!(upstream_addr("https://api:8443"), one(host("api", 8443)));
        assert_eq!(upstream_addr(":9000"), one(host("localhost", 9000)));
        assert_eq!(upstream_addr("[::1]:9000"), one(host("::1", 9000)));
        assert_eq!(
            upstream_addr("unix//run/app.sock"),
            one(Addr::Unix("/run/app.sock".into()))
        );
        assert_eq!(
            upstream_addr("127.0.0.1:8001-8003"),
            UpstreamAddr::Addrs(vec![
                host("127.0.0.1", 8001),
                host("127.0.0.1", 8002),
                host("127.0.0.1", 8003)
            ])
        );
        for unknown in ["{http.request.host}:80", "srv+http://x", "host:x", "h:9-1"] {
            assert!(
                matches!(upstream_addr(unknown), UpstreamAddr::Unknown(_)),
                "{unknown}"
            );
        }
    }

    #[test]
    fn caddyfile_sites_snippets_imports_and_lines() {
        let fs = fixtures();
        let (source, c) = load(
            "/usr/bin/caddy run --environ --config /etc/caddy/Caddyfile",
            "/",
            &fs,
        )
        .unwrap();
        assert_eq!(source, "/etc/caddy/Caddyfile (Caddyfile)");
        assert_eq!(
            targets(&c),
            [
                "127.0.0.1:8001",
                "127.0.0.1:8002",
                "127.0.0.1:9000",
                "127.0.0.1:9101",
                "127.0.0.1:9102",
                "[::1]:9000",
                "unix:/run/app/app.sock",
                "unix:/run/php/php-fpm.sock",
            ]
        );
        let app = c
            .passes
            .iter()
            .find(|p| p.text == "reverse_proxy unix//run/app/app.sock")
            .unwrap();
        assert_eq!(
            (app.loc.file.as_str(), app.loc.line, app.context.as_str()),
            ("/etc/caddy/Caddyfile", 14, "app.example.com")
        );
        // The block form with `to` and retries on.
        let lb = c.passes.iter().find(|p| p.loc.line == 20).unwrap();
        assert!(!lb.next_upstream_off, "{lb:?}");
        assert!(matches!(lb.dest, Dest::Upstream(_)));
        // A site from an imported file, through a snippet defined there.
        let imported = c
            .passes
            .iter()
            .find(|p| p.loc.file == "/etc/caddy/sites/api.caddy")
            .unwrap();
        assert!(imported.next_upstream_off);
        assert_eq!(imported.context, "http://api.example.com:8080");
        assert!(
            c.notes.iter().any(|n| n.contains("placeholder")),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn a_single_site_without_braces() {
        let c = parse_caddyfile(
            "/srv/Caddyfile",
            "# one site\n:8080\n\nencode gzip\nreverse_proxy /api/* 127.0.0.1:7000\n",
            &fixtures(),
        );
        assert_eq!(targets(&c), ["127.0.0.1:7000"]);
        assert_eq!(
            (c.passes[0].loc.line, c.passes[0].context.as_str()),
            (5, ":8080")
        );
        // Debian's default: a file server, no upstream.
        let fs = Fs::new("/");
        let deb = include_str!("../../../tests/fixtures/caddy/debian-Caddyfile");
        assert_eq!(
            parse_caddyfile("/etc/caddy/Caddyfile", deb, &fs)
                .passes
                .len(),
            0
        );
    }

    #[test]
    fn json_configuration() {
        let text = include_str!("../../../tests/fixtures/caddy/caddy.json");
        let c = parse_json("/etc/caddy/caddy.json", text).unwrap();
        assert_eq!(targets(&c), ["127.0.0.1:8000", "unix:/run/app/app.sock"]);
        let unix = c
            .passes
            .iter()
            .find(|p| matches!(&p.dest, Dest::Addr(Addr::Unix(_))))
            .unwrap();
        assert_eq!(unix.loc.line, line_of(text, "\"unix//run/app/app.sock\""));
        assert!(unix.loc.line > 1);
        assert!(
            parse_json("/x.json", "{")
                .unwrap_err()
                .contains("invalid JSON")
        );
        assert_eq!(
            source("caddy run --config /etc/caddy/caddy.json", "/"),
            Source::File {
                path: "/etc/caddy/caddy.json".into(),
                caddyfile: false
            }
        );
        assert_eq!(
            source("caddy run", "/srv/site"),
            Source::File {
                path: "/srv/site/Caddyfile".into(),
                caddyfile: true
            }
        );
        assert_eq!(
            source("caddy run --config=conf.txt --adapter caddyfile", "/srv"),
            Source::File {
                path: "/srv/conf.txt".into(),
                caddyfile: true
            }
        );
    }

    #[test]
    fn reverse_proxy_command() {
        let (_, c) = load(
            "caddy reverse-proxy --from :8080 --to 127.0.0.1:9000 --to unix//run/a.sock",
            "/",
            &fixtures(),
        )
        .unwrap();
        assert_eq!(targets(&c), ["127.0.0.1:9000", "unix:/run/a.sock"]);
    }
}
