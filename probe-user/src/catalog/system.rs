//! Sockets the system itself provides: a proxy connects to them for its own needs (user and
//! group lookups through glibc NSS, logging, DNS, its service manager), never to serve a
//! request. A failed connect to one of them is never a 502 symptom: where nscd is not running,
//! every nginx start and reload fails its connect to `/var/run/nscd/socket` (ENOENT).

/// One system socket (or a directory of them): where, and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemSocket {
    /// A unix socket path, or a directory (ending in `/`) every socket under which counts.
    pub path: &'static str,
    /// What provides it.
    pub what: &'static str,
}

/// The table. `/var/run` is a symlink to `/run` on every current distribution; both spellings
/// are listed because programs use both (glibc's nscd client says `/var/run/nscd/socket`).
pub const SYSTEM_SOCKETS: [SystemSocket; 16] = [
    sock(
        "/run/nscd/socket",
        "nscd (glibc NSS cache: user, group and host lookups)",
    ),
    sock(
        "/var/run/nscd/socket",
        "nscd (glibc NSS cache: user, group and host lookups)",
    ),
    sock("/dev/log", "syslog (/dev/log)"),
    sock("/run/systemd/journal/", "systemd-journald"),
    sock("/var/run/systemd/journal/", "systemd-journald"),
    sock("/run/dbus/system_bus_socket", "the D-Bus system bus"),
    sock("/var/run/dbus/system_bus_socket", "the D-Bus system bus"),
    sock("/run/systemd/resolve/", "systemd-resolved"),
    sock(
        "/run/systemd/userdb/",
        "systemd-userdbd (NSS user and group records)",
    ),
    sock(
        "/run/systemd/notify",
        "the systemd service manager's notify socket",
    ),
    sock("/run/systemd/private", "the systemd service manager"),
    sock("/run/systemd/io.system.ManagedOOM", "systemd-oomd"),
    sock("/run/systemd/io.systemd.", "a systemd varlink service"),
    sock(
        "/run/avahi-daemon/socket",
        "avahi (mDNS host lookups through NSS)",
    ),
    sock("/run/sssd/", "sssd (NSS/PAM users from LDAP, AD)"),
    sock("/var/lib/sss/pipes/", "sssd (NSS/PAM users from LDAP, AD)"),
];

const fn sock(path: &'static str, what: &'static str) -> SystemSocket {
    SystemSocket { path, what }
}

/// The DNS port: a TCP connect to it is a name lookup (a resolver, `systemd-resolved` on
/// 127.0.0.53), not an upstream.
pub const DNS_PORT: u16 = 53;

/// What system service a connect target (`unix:/var/run/nscd/socket`, `127.0.0.53:53`) is,
/// when it is one. Abstract unix names are the programs' own business: never system sockets.
#[must_use]
pub fn system_socket(target: &str) -> Option<&'static str> {
    if let Some(path) = target.strip_prefix("unix:") {
        if path.starts_with('@') {
            return None;
        }
        return SYSTEM_SOCKETS
            .iter()
            .find(|s| {
                if s.path.ends_with('/') || s.path.ends_with('.') {
                    path.starts_with(s.path)
                } else {
                    path == s.path
                }
            })
            .map(|s| s.what);
    }
    let port = target
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())?;
    (port == DNS_PORT).then_some("a DNS resolver")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sockets_a_proxy_uses_for_itself() {
        for t in [
            "unix:/var/run/nscd/socket",
            "unix:/run/nscd/socket",
            "unix:/dev/log",
            "unix:/run/systemd/journal/socket",
            "unix:/run/systemd/journal/dev-log",
            "unix:/run/systemd/journal/stdout",
            "unix:/run/dbus/system_bus_socket",
            "unix:/run/systemd/resolve/io.systemd.Resolve",
            "unix:/run/systemd/userdb/io.systemd.DynamicUser",
            "unix:/run/systemd/notify",
            "unix:/run/systemd/io.systemd.Hostname",
            "127.0.0.53:53",
            "[::1]:53",
        ] {
            assert!(system_socket(t).is_some(), "{t}");
        }
        assert_eq!(
            system_socket("unix:/var/run/nscd/socket"),
            Some("nscd (glibc NSS cache: user, group and host lookups)")
        );
    }

    #[test]
    fn app_sockets_are_not_system_sockets() {
        for t in [
            "unix:/run/gunicorn/app.sock",
            "unix:/run/app.sock",
            "unix:/run/nscd/socket.app",
            "unix:/run/systemd-app/app.sock",
            "unix:/dev/log2",
            "unix:@nscd",
            "127.0.0.1:8000",
            "127.0.0.1:5300",
            "family7",
        ] {
            assert_eq!(system_socket(t), None, "{t}");
        }
    }
}
