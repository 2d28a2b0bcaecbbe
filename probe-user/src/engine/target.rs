//! Socket target strings (`127.0.0.1:8000`, `[::1]:8000`, `unix:/run/app.sock`, `unix:@name`):
//! parsing, and whether a listener serves a connect target. Both sides use the same format
//! (see `event::format_target`), so comparisons are textual except for wildcard addresses.
use std::net::IpAddr;

/// A parsed target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    /// Filesystem unix socket: the path.
    UnixPath(&'a str),
    /// Abstract unix socket: the name after `@`.
    UnixAbstract(&'a str),
    /// TCP (IPv4 or IPv6).
    Inet(IpAddr, u16),
    /// Anything else (unknown family).
    Other,
}

impl Target<'_> {
    /// True for both kinds of unix sockets.
    pub(crate) fn is_unix(self) -> bool {
        matches!(self, Target::UnixPath(_) | Target::UnixAbstract(_))
    }
}

/// Parses a target string; never fails (unknown shapes are [`Target::Other`]).
pub(crate) fn parse(s: &str) -> Target<'_> {
    if let Some(rest) = s.strip_prefix("unix:") {
        return match rest.strip_prefix('@') {
            Some(name) => Target::UnixAbstract(name),
            None => Target::UnixPath(rest),
        };
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Target::Other;
    };
    let Ok(port) = port.parse::<u16>() else {
        return Target::Other;
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match host.parse::<IpAddr>() {
        Ok(ip) => Target::Inet(ip, port),
        Err(_) => Target::Other,
    }
}

/// IPv4-mapped IPv6 addresses compare equal to their IPv4 form (a dual-stack socket sees both).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Does a listener on `listener` accept connects to `target`? `0.0.0.0:P` covers every IPv4
/// address on port P, `[::]:P` every address (dual stack is the Linux default).
pub(crate) fn covers(listener: &str, target: &str) -> bool {
    if listener == target {
        return true;
    }
    match (parse(listener), parse(target)) {
        (Target::Inet(lip, lport), Target::Inet(tip, tport)) => {
            if lport != tport {
                return false;
            }
            let (lip, tip) = (canonical(lip), canonical(tip));
            match lip {
                IpAddr::V4(v4) if v4.is_unspecified() => tip.is_ipv4(),
                IpAddr::V6(v6) if v6.is_unspecified() => true,
                _ => lip == tip,
            }
        }
        _ => false,
    }
}

/// Could a listener on `listener` be on the same host as `target` (for "the app listens on
/// another port of the same machine")? Only loopback or wildcard listeners, or the same address.
pub(crate) fn same_host(listener: &str, target: &str) -> bool {
    match (parse(listener), parse(target)) {
        (Target::Inet(lip, _), Target::Inet(tip, _)) => {
            let (lip, tip) = (canonical(lip), canonical(tip));
            lip == tip || (tip.is_loopback() && (lip.is_loopback() || lip.is_unspecified()))
        }
        (l, Target::Inet(tip, _)) => l.is_unix() && canonical(tip).is_loopback(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_shape() {
        assert_eq!(parse("unix:/run/a.sock"), Target::UnixPath("/run/a.sock"));
        assert_eq!(parse("unix:@gw"), Target::UnixAbstract("gw"));
        assert!(matches!(
            parse("127.0.0.1:8000"),
            Target::Inet(IpAddr::V4(_), 8000)
        ));
        assert!(matches!(parse("[::1]:80"), Target::Inet(IpAddr::V6(_), 80)));
        assert_eq!(parse("family7"), Target::Other);
    }

    #[test]
    fn wildcards_cover_specific_addresses() {
        assert!(covers("0.0.0.0:8000", "127.0.0.1:8000"));
        assert!(covers("[::]:8000", "127.0.0.1:8000"));
        assert!(covers("[::]:8000", "[::1]:8000"));
        assert!(!covers("0.0.0.0:8000", "[::1]:8000"));
        assert!(!covers("0.0.0.0:8001", "127.0.0.1:8000"));
        assert!(!covers("127.0.0.2:8000", "127.0.0.1:8000"));
        assert!(covers("unix:/a", "unix:/a"));
        assert!(!covers("unix:/a", "unix:/b"));
    }

    #[test]
    fn same_host_is_loopback_or_wildcard() {
        assert!(same_host("0.0.0.0:9000", "127.0.0.1:8000"));
        assert!(same_host("unix:/run/a.sock", "127.0.0.1:8000"));
        assert!(!same_host("0.0.0.0:9000", "10.1.2.3:8000"));
        assert!(same_host("10.1.2.3:9000", "10.1.2.3:8000"));
    }
}
