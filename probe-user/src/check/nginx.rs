//! nginx configuration as `nginx -T` prints it: every file after a `# configuration file PATH:`
//! header, the main file first. Parsed here into the upstream targets the workers connect to
//! (`proxy_pass`, `uwsgi_pass`, `fastcgi_pass`, `scgi_pass`, `grpc_pass`, stream `proxy_pass`,
//! `upstream { server ...; }`), each with its file and line, and the settings that decide what a
//! failure costs (`user`, read/connect timeouts, `*_next_upstream`).
//!
//! Pure: text in, structures out. `include` is expanded in place (nginx semantics: relative to
//! the main file's directory, globs sorted), so a snippet included inside a `location` inherits
//! that location's context.
use std::collections::HashMap;
use std::fmt;

/// Deepest `include` nesting followed (nginx has no limit, but a loop must end).
const MAX_INCLUDE_DEPTH: usize = 16;
/// nginx's default for `*_read_timeout` and `*_connect_timeout`.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;

/// Why a configuration could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("{file}:{line}: {msg}")]
    Syntax {
        file: String,
        line: u32,
        msg: String,
    },
    #[error("no \"# configuration file\" header: not the output of nginx -T")]
    NotADump,
}

/// One configuration file and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfFile {
    pub path: String,
    pub text: String,
}

/// Every file of a configuration, the main file first (the shape of `nginx -T`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    pub files: Vec<ConfFile>,
}

/// Splits `nginx -T` output into its files. Line N of a file is the N-th line after its header.
pub fn parse_dump(text: &str) -> Result<Dump, ParseError> {
    let mut files: Vec<ConfFile> = Vec::new();
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if let Some(path) = bare
            .strip_prefix("# configuration file ")
            .and_then(|r| r.strip_suffix(':'))
            .filter(|p| p.starts_with('/'))
        {
            files.push(ConfFile {
                path: path.to_owned(),
                text: String::new(),
            });
        } else if let Some(f) = files.last_mut() {
            f.text.push_str(line);
        }
    }
    if files.is_empty() {
        return Err(ParseError::NotADump);
    }
    // nginx writes a line feed after each file: not part of the file.
    for f in &mut files {
        if f.text.ends_with("\n\n") || f.text == "\n" {
            f.text.pop();
        }
    }
    Ok(Dump { files })
}

/// A place in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    pub file: String,
    pub line: u32,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A directive, with its block if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    name: String,
    args: Vec<String>,
    loc: Loc,
    block: Option<Vec<Node>>,
}

impl Node {
    /// The directive as written (arguments re-joined), for evidence lines.
    fn text(&self) -> String {
        let mut s = self.name.clone();
        for a in &self.args {
            s.push(' ');
            if a.is_empty() || a.contains([' ', '\t', ';', '{', '}']) {
                s.push('"');
                s.push_str(a);
                s.push('"');
            } else {
                s.push_str(a);
            }
        }
        s
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Semi,
    Open,
    Close,
}

fn syntax(file: &str, line: u32, msg: impl Into<String>) -> ParseError {
    ParseError::Syntax {
        file: file.to_owned(),
        line,
        msg: msg.into(),
    }
}

/// nginx's tokenizer: words (quoted or not, `${var}` kept whole), `;`, `{`, `}`, `#` comments
/// at a token start. The body of a `*_by_lua_block` is skipped (it is Lua, not nginx syntax).
fn tokenize(text: &str, file: &str) -> Result<Vec<(Tok, u32)>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out: Vec<(Tok, u32)> = Vec::new();
    let mut line: u32 = 1;
    let mut i = 0;
    // Words of the statement being read, to spot `*_by_lua_block {`.
    let mut stmt_first: Option<String> = None;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            ' ' | '\t' | '\r' => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ';' => {
                out.push((Tok::Semi, line));
                stmt_first = None;
                i += 1;
            }
            '}' => {
                out.push((Tok::Close, line));
                stmt_first = None;
                i += 1;
            }
            '{' => {
                out.push((Tok::Open, line));
                i += 1;
                if stmt_first
                    .take()
                    .is_some_and(|w| w.ends_with("_by_lua_block"))
                {
                    i = skip_raw_block(&chars, i, &mut line)
                        .ok_or_else(|| syntax(file, line, "unterminated *_by_lua_block"))?;
                    out.push((Tok::Close, line));
                }
            }
            '"' | '\'' => {
                let start = line;
                let w = quoted(&chars, &mut i, &mut line, c)
                    .ok_or_else(|| syntax(file, start, "unterminated quoted string"))?;
                if stmt_first.is_none() {
                    stmt_first = Some(w.clone());
                }
                out.push((Tok::Word(w), start));
            }
            _ => {
                let mut w = String::new();
                while let Some(&ch) = chars.get(i) {
                    if matches!(ch, ' ' | '\t' | '\r' | '\n' | ';' | '{' | '}') {
                        break;
                    }
                    if ch == '$' && chars.get(i + 1) == Some(&'{') {
                        // `${var}`: the braces belong to the word.
                        while let Some(&v) = chars.get(i) {
                            w.push(v);
                            i += 1;
                            if v == '}' {
                                break;
                            }
                        }
                        continue;
                    }
                    w.push(ch);
                    i += 1;
                }
                if stmt_first.is_none() {
                    stmt_first = Some(w.clone());
                }
                out.push((Tok::Word(w), line));
            }
        }
    }
    Ok(out)
}

/// Reads a quoted word (`chars[*i]` is the opening quote) with nginx's escapes; None if the
/// quote never closes.
fn quoted(chars: &[char], i: &mut usize, line: &mut u32, quote: char) -> Option<String> {
    let mut w = String::new();
    *i += 1;
    loop {
        let &ch = chars.get(*i)?;
        *i += 1;
        if ch == quote {
            return Some(w);
        }
        if ch == '\n' {
            *line += 1;
        }
        if ch == '\\'
            && let Some(&next) = chars.get(*i)
        {
            *i += 1;
            match next {
                '"' | '\'' | '\\' => w.push(next),
                't' => w.push('\t'),
                'r' => w.push('\r'),
                'n' => w.push('\n'),
                other => {
                    w.push('\\');
                    w.push(other);
                }
            }
            continue;
        }
        w.push(ch);
    }
}

/// Skips a raw block body (after its `{`) to just past the matching `}`; None if unterminated.
fn skip_raw_block(chars: &[char], mut i: usize, line: &mut u32) -> Option<usize> {
    let mut depth = 1u32;
    let mut quote: Option<char> = None;
    while let Some(&c) = chars.get(i) {
        i += 1;
        if c == '\n' {
            *line += 1;
        }
        match (quote, c) {
            (Some(_), '\\') => i += 1,
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '{') => depth += 1,
            (None, '}') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Parses one file into its directives.
fn parse_file(text: &str, file: &str) -> Result<Vec<Node>, ParseError> {
    let toks = tokenize(text, file)?;
    let mut i = 0;
    let nodes = parse_block(&toks, &mut i, file, true)?;
    Ok(nodes)
}

fn parse_block(
    toks: &[(Tok, u32)],
    i: &mut usize,
    file: &str,
    top: bool,
) -> Result<Vec<Node>, ParseError> {
    let mut nodes = Vec::new();
    loop {
        let Some((tok, line)) = toks.get(*i) else {
            if top {
                return Ok(nodes);
            }
            let last = toks.last().map_or(1, |t| t.1);
            return Err(syntax(
                file,
                last,
                "unexpected end of file, expecting \"}\"",
            ));
        };
        match tok {
            Tok::Close if top => return Err(syntax(file, *line, "unexpected \"}\"")),
            Tok::Close => {
                *i += 1;
                return Ok(nodes);
            }
            Tok::Semi => *i += 1,
            Tok::Open => return Err(syntax(file, *line, "unexpected \"{\"")),
            Tok::Word(_) => {
                let line = *line;
                let mut words = Vec::new();
                while let Some((Tok::Word(w), _)) = toks.get(*i) {
                    words.push(w.clone());
                    *i += 1;
                }
                let mut words = words.into_iter();
                let name = words.next().unwrap_or_default();
                let args: Vec<String> = words.collect();
                let loc = Loc {
                    file: file.to_owned(),
                    line,
                };
                match toks.get(*i) {
                    Some((Tok::Semi, _)) => {
                        *i += 1;
                        nodes.push(Node {
                            name,
                            args,
                            loc,
                            block: None,
                        });
                    }
                    Some((Tok::Open, _)) => {
                        *i += 1;
                        let block = parse_block(toks, i, file, false)?;
                        nodes.push(Node {
                            name,
                            args,
                            loc,
                            block: Some(block),
                        });
                    }
                    _ => {
                        return Err(syntax(
                            file,
                            line,
                            format!("directive \"{name}\" is not terminated by \";\""),
                        ));
                    }
                }
            }
        }
    }
}

/// Does a shell glob (`*`, `?`, `[...]`; none of them match `/`) match `path`?
#[must_use]
pub fn glob_match(pattern: &str, path: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len())
                .take_while(|&k| k == 0 || s[k - 1] != '/')
                .any(|k| go(&p[1..], &s[k..])),
            Some('?') => s.first().is_some_and(|&c| c != '/') && go(&p[1..], &s[1..]),
            Some('[') => {
                let Some(end) = p.iter().skip(2).position(|&c| c == ']').map(|e| e + 2) else {
                    return s.first() == Some(&'[') && go(&p[1..], &s[1..]);
                };
                let Some(&c) = s.first() else { return false };
                let class = &p[1..end];
                let (neg, class) = match class.first() {
                    Some('!' | '^') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut k = 0;
                while k < class.len() {
                    if k + 2 < class.len() && class[k + 1] == '-' {
                        hit |= class[k] <= c && c <= class[k + 2];
                        k += 3;
                    } else {
                        hit |= class[k] == c;
                        k += 1;
                    }
                }
                c != '/' && hit != neg && go(&p[end + 1..], &s[1..])
            }
            Some(&c) => s.first() == Some(&c) && go(&p[1..], &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = path.chars().collect();
    go(&p, &s)
}

/// True when a pattern has glob characters.
#[must_use]
pub fn has_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// An `include` argument made absolute the way nginx does: relative to the main file's directory.
#[must_use]
pub fn include_path(arg: &str, main_file: &str) -> String {
    if arg.starts_with('/') {
        return arg.to_owned();
    }
    let dir = main_file.rsplit_once('/').map_or("", |(d, _)| d);
    format!("{dir}/{arg}")
}

/// The `include` arguments anywhere in one file (for reading a configuration from disk when
/// `nginx -T` cannot run).
pub fn includes_of(text: &str, file: &str) -> Result<Vec<String>, ParseError> {
    fn collect(nodes: &[Node], out: &mut Vec<String>) {
        for n in nodes {
            if n.name == "include"
                && n.block.is_none()
                && let Some(a) = n.args.first()
            {
                out.push(a.clone());
            }
            if let Some(b) = &n.block {
                collect(b, out);
            }
        }
    }
    let mut out = Vec::new();
    collect(&parse_file(text, file)?, &mut out);
    Ok(out)
}

/// Which `*_pass` directive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Module {
    Proxy,
    Uwsgi,
    Fastcgi,
    Scgi,
    Grpc,
    /// `proxy_pass` in a `stream { server { } }` (TCP/UDP passthrough).
    Stream,
    /// Another proxy's upstream (an haproxy `server`, a Caddy `reverse_proxy`, an Apache
    /// `ProxyPass`): no nginx timeout directive applies.
    Foreign,
}

impl Module {
    /// The directive prefix (`proxy` for `proxy_pass`, `proxy_read_timeout`).
    #[must_use]
    pub fn prefix(self) -> &'static str {
        match self {
            Module::Proxy | Module::Stream | Module::Foreign => "proxy",
            Module::Uwsgi => "uwsgi",
            Module::Fastcgi => "fastcgi",
            Module::Scgi => "scgi",
            Module::Grpc => "grpc",
        }
    }

    /// The name of its read-timeout directive (None for streams: an idle timeout, not a
    /// response deadline).
    #[must_use]
    pub fn read_timeout_directive(self) -> Option<String> {
        (!matches!(self, Module::Stream | Module::Foreign))
            .then(|| format!("{}_read_timeout", self.prefix()))
    }
}

/// An upstream address as written in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Addr {
    /// `unix:/path`.
    Unix(String),
    /// A host (IP address or name) and port.
    Host { host: String, port: u16 },
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Unix(p) => write!(f, "unix:{p}"),
            Addr::Host { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Addr::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Where a `*_pass` sends requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    Addr(Addr),
    /// An `upstream` block (index into [`NginxConfig::upstreams`]).
    Upstream(usize),
    /// Computed at request time (`proxy_pass http://$backend`): cannot be checked statically.
    Variable(String),
}

/// A setting's effective value and where it was set (None: nginx's default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub loc: Option<Loc>,
}

/// One `*_pass` directive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pass {
    pub module: Module,
    /// The directive as written (`proxy_pass http://unix:/run/app.sock:`).
    pub text: String,
    pub loc: Loc,
    /// The enclosing `location` (`location /api/`), if any.
    pub context: String,
    pub dest: Dest,
    /// Effective `*_read_timeout` (ms); for streams `proxy_timeout`.
    pub read_timeout: Setting<u64>,
    /// Effective `*_connect_timeout` (ms).
    pub connect_timeout: Setting<u64>,
    /// `*_next_upstream off`: a failed server is not retried on the next one.
    pub next_upstream_off: bool,
}

/// One `server` line of an `upstream` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub addr: Addr,
    pub text: String,
    pub loc: Loc,
    /// Marked `down`: nginx never uses it.
    pub down: bool,
    pub backup: bool,
}

/// An `upstream NAME { ... }` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    pub loc: Loc,
    /// In the `stream` context (else `http`).
    pub stream: bool,
    pub servers: Vec<Server>,
}

/// What `gwtrace check` needs from an nginx configuration; the other proxies' parsers
/// ([`super::haproxy`], [`super::caddy`], [`super::apache`]) fill the same shape (their
/// backends as `upstreams`, the directives that use them as `passes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NginxConfig {
    /// The main file (the first of the dump).
    pub main_file: String,
    /// `user USER [GROUP]`, where it is set.
    pub user: Option<(String, Option<String>, Loc)>,
    /// `worker_processes` (a number or `auto`).
    pub worker_processes: Option<String>,
    pub worker_connections: Option<u32>,
    pub passes: Vec<Pass>,
    pub upstreams: Vec<Upstream>,
    /// Things the parser could not follow (an include matching no file of the dump, ...).
    pub notes: Vec<String>,
    /// The directory the proxy's workers run chrooted in (haproxy's `chroot` in `global`):
    /// they resolve unix server paths under it.
    pub chroot: Option<(String, Loc)>,
}

/// Parses an nginx time (`60`, `60s`, `1m30s`, `500ms`) into milliseconds.
#[must_use]
pub fn parse_time_ms(s: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let mult: u64 = match unit {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "M" => 30 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(mult)?)?;
    }
    Some(total)
}

/// Parses an address (`unix:/p`, `host:port`, `[v6]:port`, `host`); a missing port is `None`.
fn parse_addr(s: &str) -> Option<(String, Option<u16>, bool)> {
    if let Some(p) = s.strip_prefix("unix:") {
        return Some((p.to_owned(), None, true));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_owned(), port, false));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h.to_owned(), Some(p.parse().ok()?), false)),
        None => Some((s.to_owned(), None, false)),
    }
}

/// A `*_pass` or `server` address before `upstream` names are resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RawDest {
    Addr(Addr),
    /// A host without a port: an `upstream` block of that name, else the host on this port.
    Name {
        host: String,
        default_port: u16,
    },
    Variable(String),
    Invalid(String),
}

/// The destination of a `*_pass` argument.
fn raw_dest(module: Module, arg: &str) -> RawDest {
    if arg.contains('$') {
        return RawDest::Variable(arg.to_owned());
    }
    let (rest, default_port) = match module {
        Module::Proxy => {
            if let Some(r) = arg.strip_prefix("http://") {
                (r, 80)
            } else if let Some(r) = arg.strip_prefix("https://") {
                (r, 443)
            } else {
                return RawDest::Invalid(arg.to_owned());
            }
        }
        Module::Grpc => {
            if let Some(r) = arg.strip_prefix("grpc://") {
                (r, 80)
            } else if let Some(r) = arg.strip_prefix("grpcs://") {
                (r, 443)
            } else {
                (arg, 80)
            }
        }
        Module::Uwsgi => (
            arg.strip_prefix("uwsgi://")
                .or_else(|| arg.strip_prefix("suwsgi://"))
                .unwrap_or(arg),
            80,
        ),
        Module::Fastcgi | Module::Scgi | Module::Stream | Module::Foreign => (arg, 80),
    };
    if let Some(unix) = rest.strip_prefix("unix:") {
        // `http://unix:/path:/uri`: the path ends at the next colon.
        let path = match module {
            Module::Proxy | Module::Grpc | Module::Uwsgi => {
                unix.split_once(':').map_or(unix, |(p, _)| p)
            }
            _ => unix,
        };
        return RawDest::Addr(Addr::Unix(path.to_owned()));
    }
    // Strip a URI (`http://host:8000/prefix/`).
    let hostport = match module {
        Module::Proxy | Module::Grpc => rest.split_once('/').map_or(rest, |(h, _)| h),
        _ => rest,
    };
    match parse_addr(hostport) {
        Some((host, Some(port), _)) => RawDest::Addr(Addr::Host { host, port }),
        Some((host, None, _)) if !host.is_empty() => RawDest::Name { host, default_port },
        _ => RawDest::Invalid(arg.to_owned()),
    }
}

/// A block being walked: its kind, label and the plain directives set directly in it.
struct Frame {
    kind: String,
    label: String,
    settings: HashMap<String, (Vec<String>, Loc)>,
}

struct Walker<'a> {
    dump: &'a Dump,
    cfg: NginxConfig,
    raw_passes: Vec<(Pass, RawDest, bool)>,
}

impl Walker<'_> {
    /// Expands `include` in a list of directives (recursively, bounded).
    fn expand(&mut self, nodes: Vec<Node>, depth: usize) -> Vec<Node> {
        let mut out = Vec::with_capacity(nodes.len());
        for mut n in nodes {
            if n.name == "include" && n.block.is_none() && n.args.len() == 1 {
                if depth >= MAX_INCLUDE_DEPTH {
                    self.cfg.notes.push(format!(
                        "{}: include nested more than {MAX_INCLUDE_DEPTH} deep (a loop?): not followed",
                        n.loc
                    ));
                    continue;
                }
                let pattern = include_path(&n.args[0], &self.cfg.main_file);
                let mut files: Vec<&ConfFile> = self
                    .dump
                    .files
                    .iter()
                    .filter(|f| {
                        if has_glob(&pattern) {
                            glob_match(&pattern, &f.path)
                        } else {
                            f.path == pattern
                        }
                    })
                    .collect();
                files.sort_by(|a, b| a.path.cmp(&b.path));
                if files.is_empty() && !has_glob(&pattern) {
                    self.cfg.notes.push(format!(
                        "{}: include {pattern}: the file is not in the configuration read",
                        n.loc
                    ));
                }
                for f in files {
                    match parse_file(&f.text, &f.path) {
                        Ok(sub) => out.extend(self.expand(sub, depth + 1)),
                        Err(e) => self.cfg.notes.push(format!("{e} (included at {})", n.loc)),
                    }
                }
                continue;
            }
            if let Some(b) = n.block.take() {
                n.block = Some(self.expand(b, depth));
            }
            out.push(n);
        }
        out
    }

    fn frame(kind: &str, label: String, nodes: &[Node]) -> Frame {
        let settings = nodes
            .iter()
            .filter(|n| n.block.is_none())
            .map(|n| (n.name.clone(), (n.args.clone(), n.loc.clone())))
            .collect();
        Frame {
            kind: kind.to_owned(),
            label,
            settings,
        }
    }

    /// The innermost value of a directive.
    fn setting<'s>(stack: &'s [Frame], name: &str) -> Option<&'s (Vec<String>, Loc)> {
        stack.iter().rev().find_map(|f| f.settings.get(name))
    }

    fn walk(&mut self, nodes: &[Node], stack: &mut Vec<Frame>) {
        let in_stream = stack.iter().any(|f| f.kind == "stream");
        for n in nodes {
            match (n.name.as_str(), &n.block) {
                ("upstream", Some(b)) => self.upstream(n, b, in_stream),
                (_, Some(b)) => {
                    stack.push(Self::frame(&n.name, n.args.join(" "), b));
                    self.walk(b, stack);
                    stack.pop();
                }
                ("user", None) if stack.len() == 1 => {
                    if let Some(u) = n.args.first() {
                        self.cfg.user = Some((u.clone(), n.args.get(1).cloned(), n.loc.clone()));
                    }
                }
                ("worker_processes", None) if stack.len() == 1 => {
                    self.cfg.worker_processes = n.args.first().cloned();
                }
                ("worker_connections", None) => {
                    self.cfg.worker_connections = n.args.first().and_then(|a| a.parse().ok());
                }
                (name, None) => {
                    let module = match name {
                        "proxy_pass" if in_stream => Module::Stream,
                        "proxy_pass" => Module::Proxy,
                        "uwsgi_pass" => Module::Uwsgi,
                        "fastcgi_pass" => Module::Fastcgi,
                        "scgi_pass" => Module::Scgi,
                        "grpc_pass" => Module::Grpc,
                        _ => continue,
                    };
                    let Some(arg) = n.args.first() else { continue };
                    self.pass(n, module, arg, stack, in_stream);
                }
            }
        }
    }

    fn pass(&mut self, n: &Node, module: Module, arg: &str, stack: &[Frame], in_stream: bool) {
        let prefix = module.prefix();
        let time = |name: &str, default: u64| -> Setting<u64> {
            Self::setting(stack, name)
                .and_then(|(args, loc)| {
                    let v = parse_time_ms(args.first()?)?;
                    Some(Setting {
                        value: v,
                        loc: Some(loc.clone()),
                    })
                })
                .unwrap_or(Setting {
                    value: default,
                    loc: None,
                })
        };
        let read_timeout = if module == Module::Stream {
            time("proxy_timeout", 600_000)
        } else {
            time(&format!("{prefix}_read_timeout"), DEFAULT_TIMEOUT_MS)
        };
        let connect_timeout = time(&format!("{prefix}_connect_timeout"), DEFAULT_TIMEOUT_MS);
        let next_upstream_off = Self::setting(stack, &format!("{prefix}_next_upstream"))
            .is_some_and(|(args, _)| args.iter().any(|a| a == "off"));
        let context = stack
            .iter()
            .rev()
            .find(|f| f.kind == "location")
            .map(|f| format!("location {}", f.label))
            .unwrap_or_default();
        let pass = Pass {
            module,
            text: n.text(),
            loc: n.loc.clone(),
            context,
            dest: Dest::Variable(String::new()),
            read_timeout,
            connect_timeout,
            next_upstream_off,
        };
        self.raw_passes
            .push((pass, raw_dest(module, arg), in_stream));
    }

    fn upstream(&mut self, n: &Node, block: &[Node], stream: bool) {
        let Some(name) = n.args.first() else { return };
        let mut servers = Vec::new();
        for s in block
            .iter()
            .filter(|s| s.name == "server" && s.block.is_none())
        {
            let Some(a) = s.args.first() else { continue };
            let default_port = 80;
            let addr = match parse_addr(a) {
                Some((p, _, true)) => Addr::Unix(p),
                Some((host, port, false)) if !host.is_empty() => Addr::Host {
                    host,
                    port: port.unwrap_or(default_port),
                },
                _ => {
                    self.cfg
                        .notes
                        .push(format!("{}: cannot read the address {a:?}", s.loc));
                    continue;
                }
            };
            let flags = &s.args[1..];
            servers.push(Server {
                addr,
                text: s.text(),
                loc: s.loc.clone(),
                down: flags.iter().any(|f| f == "down"),
                backup: flags.iter().any(|f| f == "backup"),
            });
        }
        self.cfg.upstreams.push(Upstream {
            name: name.clone(),
            loc: n.loc.clone(),
            stream,
            servers,
        });
    }

    /// Turns the raw destinations into addresses or upstream references.
    fn resolve(&mut self) {
        for (mut pass, raw, stream) in std::mem::take(&mut self.raw_passes) {
            pass.dest = match raw {
                RawDest::Addr(a) => Dest::Addr(a),
                RawDest::Variable(v) => Dest::Variable(v),
                RawDest::Name { host, default_port } => {
                    match self
                        .cfg
                        .upstreams
                        .iter()
                        .position(|u| u.name == host && u.stream == stream)
                    {
                        Some(i) => Dest::Upstream(i),
                        None => Dest::Addr(Addr::Host {
                            host,
                            port: default_port,
                        }),
                    }
                }
                RawDest::Invalid(a) => {
                    self.cfg
                        .notes
                        .push(format!("{}: cannot read the address in {:?}", pass.loc, a));
                    continue;
                }
            };
            self.cfg.passes.push(pass);
        }
    }
}

/// The command line an nginx master was started with, as its process title shows it
/// (`nginx: master process /usr/sbin/nginx -c /etc/nginx/nginx.conf -g daemon on;`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasterArgs {
    /// argv\[0\] (`/usr/sbin/nginx`, or `nginx` from PATH).
    pub argv0: String,
    /// `-c FILE`.
    pub conf: Option<String>,
    /// `-p PREFIX`.
    pub prefix: Option<String>,
    /// `-g DIRECTIVES`.
    pub globals: Option<String>,
    /// `-e FILE`.
    pub error_log: Option<String>,
}

impl MasterArgs {
    /// The arguments to repeat for `nginx -T` (everything but `-T` itself).
    #[must_use]
    pub fn test_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        for (flag, v) in [
            ("-p", &self.prefix),
            ("-c", &self.conf),
            ("-g", &self.globals),
            ("-e", &self.error_log),
        ] {
            if let Some(v) = v {
                a.push(flag.to_owned());
                a.push(v.clone());
            }
        }
        a
    }
}

/// Parses an nginx master's process title (or plain command line). The title joins argv with
/// spaces, so `-g` takes every word up to the next flag.
#[must_use]
pub fn master_args(cmdline: &str) -> MasterArgs {
    let rest = cmdline
        .split_once("master process ")
        .map_or(cmdline, |(_, r)| r);
    let words: Vec<&str> = rest.split_whitespace().collect();
    let mut m = MasterArgs {
        argv0: words.first().map_or("nginx", |w| w).to_owned(),
        ..MasterArgs::default()
    };
    let is_flag = |w: &str| {
        matches!(
            w,
            "-c" | "-p" | "-g" | "-e" | "-q" | "-t" | "-T" | "-s" | "-v" | "-V" | "-h" | "-?"
        )
    };
    let mut i = 1;
    while i < words.len() {
        let w = words[i];
        let next = words.get(i + 1).map(|s| (*s).to_owned());
        match w {
            "-c" => m.conf = next,
            "-p" => m.prefix = next,
            "-e" => m.error_log = next,
            "-g" => {
                let mut g = Vec::new();
                while let Some(x) = words.get(i + 1).filter(|x| !is_flag(x)) {
                    g.push(*x);
                    i += 1;
                }
                m.globals = (!g.is_empty()).then(|| g.join(" "));
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    m
}

/// Reads the upstream targets and settings of a configuration.
pub fn analyze(dump: &Dump) -> Result<NginxConfig, ParseError> {
    let main = dump.files.first().ok_or(ParseError::NotADump)?;
    let nodes = parse_file(&main.text, &main.path)?;
    let mut w = Walker {
        dump,
        cfg: NginxConfig {
            main_file: main.path.clone(),
            ..NginxConfig::default()
        },
        raw_passes: Vec::new(),
    };
    let nodes = w.expand(nodes, 0);
    let mut stack = vec![Walker::frame("main", String::new(), &nodes)];
    w.walk(&nodes, &mut stack);
    w.resolve();
    Ok(w.cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = include_str!("../../../tests/fixtures/nginx/debian-T.txt");
    const EDGE: &str = include_str!("../../../tests/fixtures/nginx/edge-T.txt");

    fn pass_at<'a>(c: &'a NginxConfig, line: u32, file_end: &str) -> &'a Pass {
        c.passes
            .iter()
            .find(|p| p.loc.line == line && p.loc.file.ends_with(file_end))
            .unwrap_or_else(|| panic!("no pass at {file_end}:{line}: {:#?}", c.passes))
    }

    #[test]
    fn dump_splits_files_with_their_lines() {
        let d = parse_dump(DEBIAN).unwrap();
        let paths: Vec<&str> = d.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/nginx/nginx.conf",
                "/etc/nginx/mime.types",
                "/etc/nginx/sites-enabled/app",
                "/etc/nginx/proxy_params",
            ]
        );
        // Line 1 of a file is the line right after its header.
        assert!(d.files[0].text.starts_with("user www-data;\n"));
        assert!(!d.files[3].text.ends_with("\n\n"));
        assert_eq!(
            parse_dump("nginx: syntax is ok\n"),
            Err(ParseError::NotADump)
        );
    }

    #[test]
    fn debian_layout_targets_lines_and_timeouts() {
        let c = analyze(&parse_dump(DEBIAN).unwrap()).unwrap();
        assert_eq!(c.main_file, "/etc/nginx/nginx.conf");
        let (user, group, loc) = c.user.clone().unwrap();
        assert_eq!((user.as_str(), group, loc.line), ("www-data", None, 1));
        assert_eq!(c.worker_processes.as_deref(), Some("auto"));
        assert_eq!(c.worker_connections, Some(768));
        assert!(c.notes.is_empty(), "{:?}", c.notes);

        let app = pass_at(&c, 12, "sites-enabled/app");
        assert_eq!(app.dest, Dest::Addr(Addr::Unix("/run/app/app.sock".into())));
        assert_eq!(app.text, "proxy_pass http://unix:/run/app/app.sock:");
        assert_eq!(app.context, "location /");
        // Set at the server level, after the locations: inherited all the same.
        assert_eq!(app.read_timeout.value, 120_000);
        assert_eq!(app.read_timeout.loc.as_ref().map(|l| l.line), Some(26));
        // The connect timeout comes from the snippet included in the location.
        assert_eq!(app.connect_timeout.value, 5_000);
        assert_eq!(
            app.connect_timeout.loc.as_ref().map(ToString::to_string),
            Some("/etc/nginx/proxy_params:5".to_owned())
        );

        let api = pass_at(&c, 17, "sites-enabled/app");
        let Dest::Upstream(i) = api.dest else {
            panic!("{:?}", api.dest)
        };
        let up = &c.upstreams[i];
        assert_eq!(up.name, "api");
        assert_eq!(up.servers.len(), 2);
        assert_eq!(
            up.servers[0].addr,
            Addr::Host {
                host: "127.0.0.1".into(),
                port: 8000
            }
        );
        assert_eq!(up.servers[0].loc.line, 2);
        assert!(up.servers[1].backup);
        assert_eq!(
            up.servers[1].addr,
            Addr::Host {
                host: "localhost".into(),
                port: 8001
            }
        );
        assert_eq!(api.read_timeout.value, 120_000);
        // Not set anywhere around /api/: nginx's default.
        assert_eq!(api.connect_timeout.value, DEFAULT_TIMEOUT_MS);
        assert_eq!(api.connect_timeout.loc, None);

        let php = pass_at(&c, 21, "sites-enabled/app");
        assert_eq!(php.module, Module::Fastcgi);
        assert_eq!(
            php.dest,
            Dest::Addr(Addr::Unix("/run/php/php8.2-fpm.sock".into()))
        );
        assert_eq!(php.read_timeout.value, 300_000);
    }

    #[test]
    fn edge_cases_parse() {
        let c = analyze(&parse_dump(EDGE).unwrap()).unwrap();
        let find = |text: &str| {
            c.passes
                .iter()
                .find(|p| p.text == text)
                .unwrap_or_else(|| panic!("{text}: {:#?}", c.passes))
        };
        assert_eq!(
            find("proxy_pass http://[::1]:9000/x/").dest,
            Dest::Addr(Addr::Host {
                host: "::1".into(),
                port: 9000
            })
        );
        assert_eq!(
            find("proxy_pass https://backend.internal").dest,
            Dest::Addr(Addr::Host {
                host: "backend.internal".into(),
                port: 443
            })
        );
        assert!(matches!(
            find("proxy_pass http://$upstream_host").dest,
            Dest::Variable(_)
        ));
        let uw = find("uwsgi_pass uwsgi://127.0.0.1:3031");
        assert_eq!(
            uw.read_timeout.value, 90_000,
            "set in an if inside the location"
        );
        assert_eq!(uw.module, Module::Uwsgi);
        let quoted = find("proxy_pass \"http://unix:/tmp/quoted app.sock:/\"");
        assert_eq!(
            quoted.dest,
            Dest::Addr(Addr::Unix("/tmp/quoted app.sock".into()))
        );
        // The lua block's braces and semicolons are not nginx syntax.
        let after_lua = find("proxy_pass http://127.0.0.1:7000");
        assert_eq!(after_lua.read_timeout.value, 1_500);
        assert!(after_lua.next_upstream_off);
        // stream context: proxy_pass with a bare address, and a stream upstream.
        let st = find("proxy_pass db");
        assert_eq!(st.module, Module::Stream);
        let Dest::Upstream(i) = st.dest else {
            panic!("{:?}", st.dest)
        };
        assert!(c.upstreams[i].stream);
        assert!(c.upstreams[i].servers[0].down);
        let grpc = find("grpc_pass grpc://127.0.0.1:50051");
        assert_eq!(grpc.module, Module::Grpc);
        // Two files included by a glob, in sorted order, each with its own lines.
        let a = find("scgi_pass 127.0.0.1:4000");
        assert!(a.loc.file.ends_with("conf.d/a.conf"));
        assert_eq!(a.loc.line, 2);
        assert!(
            c.notes.iter().any(|n| n.contains("missing.conf")),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let d = Dump {
            files: vec![ConfFile {
                path: "/x/nginx.conf".into(),
                text: "http {\n  server {\n    listen 80\n  }\n}\n".into(),
            }],
        };
        let e = analyze(&d).unwrap_err();
        assert_eq!(
            e,
            syntax(
                "/x/nginx.conf",
                3,
                "directive \"listen\" is not terminated by \";\""
            )
        );
        let d = Dump {
            files: vec![ConfFile {
                path: "/x/nginx.conf".into(),
                text: "http {\n".into(),
            }],
        };
        assert!(matches!(analyze(&d), Err(ParseError::Syntax { .. })));
    }

    #[test]
    fn times_and_globs() {
        assert_eq!(parse_time_ms("60"), Some(60_000));
        assert_eq!(parse_time_ms("60s"), Some(60_000));
        assert_eq!(parse_time_ms("1m30s"), Some(90_000));
        assert_eq!(parse_time_ms("500ms"), Some(500));
        assert_eq!(parse_time_ms("2h"), Some(7_200_000));
        assert_eq!(parse_time_ms("x"), None);
        assert_eq!(parse_time_ms(""), None);
        assert!(glob_match(
            "/etc/nginx/sites-enabled/*",
            "/etc/nginx/sites-enabled/app"
        ));
        assert!(!glob_match(
            "/etc/nginx/sites-enabled/*",
            "/etc/nginx/sites-enabled/a/b"
        ));
        assert!(glob_match(
            "/etc/nginx/conf.d/*.conf",
            "/etc/nginx/conf.d/x.conf"
        ));
        assert!(!glob_match(
            "/etc/nginx/conf.d/*.conf",
            "/etc/nginx/conf.d/x.conf.bak"
        ));
        assert!(glob_match("/a/[a-c]?.conf", "/a/b1.conf"));
        assert!(!glob_match("/a/[!a-c]?.conf", "/a/b1.conf"));
        assert_eq!(
            include_path("snippets/x", "/etc/nginx/nginx.conf"),
            "/etc/nginx/snippets/x"
        );
        assert_eq!(include_path("/abs", "/etc/nginx/nginx.conf"), "/abs");
    }

    #[test]
    fn addresses_of_each_module() {
        let unix = |s: &str| RawDest::Addr(Addr::Unix(s.into()));
        assert_eq!(
            raw_dest(Module::Proxy, "http://unix:/run/a.sock:/api/"),
            unix("/run/a.sock")
        );
        assert_eq!(
            raw_dest(Module::Proxy, "http://unix:/run/a.sock"),
            unix("/run/a.sock")
        );
        assert_eq!(
            raw_dest(Module::Fastcgi, "unix:/run/php.sock"),
            unix("/run/php.sock")
        );
        assert_eq!(
            raw_dest(Module::Uwsgi, "uwsgi://unix:/run/u.sock"),
            unix("/run/u.sock")
        );
        assert_eq!(
            raw_dest(Module::Proxy, "http://app"),
            RawDest::Name {
                host: "app".into(),
                default_port: 80
            }
        );
        assert!(matches!(
            raw_dest(Module::Proxy, "ftp://x"),
            RawDest::Invalid(_)
        ));
        assert_eq!(
            Addr::Host {
                host: "::1".into(),
                port: 80
            }
            .to_string(),
            "[::1]:80"
        );
    }

    #[test]
    fn master_titles() {
        let m =
            master_args("nginx: master process /usr/sbin/nginx -g daemon on; master_process on;");
        assert_eq!(m.argv0, "/usr/sbin/nginx");
        assert_eq!(m.globals.as_deref(), Some("daemon on; master_process on;"));
        assert_eq!(m.conf, None);
        let m =
            master_args("nginx: master process nginx -c /tmp/lab/nginx.conf -e /tmp/lab/error.log");
        assert_eq!(
            m.test_args(),
            ["-c", "/tmp/lab/nginx.conf", "-e", "/tmp/lab/error.log"]
        );
        let m = master_args(
            "nginx: master process nginx -g pid /run/x.pid; -p /srv/ngx/ -c conf/n.conf",
        );
        assert_eq!(m.globals.as_deref(), Some("pid /run/x.pid;"));
        assert_eq!(m.prefix.as_deref(), Some("/srv/ngx/"));
        assert_eq!(m.conf.as_deref(), Some("conf/n.conf"));
    }
}
