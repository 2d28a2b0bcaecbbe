//! The causes gwtrace names: one enum, its stable ids (the JSON `cause` field, the metrics'
//! `cause` label, README's cause table), the HTTP status class the proxy answers with, and a
//! one-line meaning.
use std::{cmp::Ordering, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A root cause of a proxy's 502s (or 504s). Serialized as its id (`socket-missing`).
///
/// Ordered by id, so verdicts and findings sort as their ids read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// The proxy's unix connect finds no socket file (ENOENT).
    SocketMissing,
    /// The socket file exists, nobody listens on it (unix ECONNREFUSED).
    StaleSocket,
    /// Nothing listens on the TCP target (ECONNREFUSED).
    UpstreamNotListening,
    /// A netfilter rule refuses the connect while a process may listen there (ECONNREFUSED
    /// with a `NETFILTER_DROP` of the SYN).
    FirewallReject,
    /// Nothing at the target, but the app listens close by (another path or port).
    WrongTarget,
    /// A path component denies the proxy worker (EACCES).
    SocketPermission,
    /// The upstream's accept queue is full (unix EAGAIN, TCP listen overflows).
    BacklogFull,
    /// The app exits right after exec, repeatedly, or cannot be executed at all.
    CrashOnBoot,
    /// The app server's master kills a busy worker (gunicorn WORKER TIMEOUT).
    WorkerTimeout,
    /// The OOM killer chose an upstream worker.
    WorkerOomKilled,
    /// An upstream worker died of a fatal signal (SIGSEGV, SIGBUS, ...).
    WorkerCrashed,
    /// No local port left for the connect (EADDRNOTAVAIL).
    PortExhaustion,
    /// No route to the upstream (ENETUNREACH, EHOSTUNREACH).
    NetworkUnreachable,
    /// The handshake never completed: a 504 class.
    ConnectTimeout,
    /// The upstream reset the connection (ECONNRESET).
    UpstreamReset,
    /// The upstream closed an idle kept-alive connection just as the proxy reused it.
    KeepaliveRace,
    /// The upstream app closed the connection itself, alive, before answering.
    UpstreamClosedEarly,
    /// Failures only while the app restarted (old one gone, new one not listening yet).
    UpstreamRestarting,
    /// `gwtrace check`: the app kills requests sooner than the proxy stops waiting for them.
    TimeoutMismatch,
    /// `gwtrace check`: a socket directory under /run or /tmp that nothing recreates at boot.
    RuntimeDirVolatile,
    /// `gwtrace check`: a small or half-full listen backlog.
    BacklogSmall,
    /// `gwtrace check`: the proxy rejects its own configuration.
    ConfigInvalid,
}

impl Cause {
    /// Every cause, the engine's first (in README's order), then `gwtrace check`'s warnings.
    pub const ALL: [Self; 22] = [
        Self::SocketMissing,
        Self::StaleSocket,
        Self::UpstreamNotListening,
        Self::FirewallReject,
        Self::WrongTarget,
        Self::SocketPermission,
        Self::BacklogFull,
        Self::CrashOnBoot,
        Self::WorkerTimeout,
        Self::WorkerOomKilled,
        Self::WorkerCrashed,
        Self::PortExhaustion,
        Self::NetworkUnreachable,
        Self::ConnectTimeout,
        Self::UpstreamReset,
        Self::KeepaliveRace,
        Self::UpstreamClosedEarly,
        Self::UpstreamRestarting,
        Self::TimeoutMismatch,
        Self::RuntimeDirVolatile,
        Self::BacklogSmall,
        Self::ConfigInvalid,
    ];

    /// The causes the engine establishes from kernel events (the metrics' `cause` series,
    /// README's cause table).
    pub const OBSERVED: [Self; 18] = {
        let mut out = [Self::SocketMissing; 18];
        let mut i = 0;
        while i < out.len() {
            out[i] = Self::ALL[i];
            i += 1;
        }
        out
    };

    /// The warnings only `gwtrace check` gives, from configuration (its failures use the
    /// engine's causes).
    pub const WARNINGS: [Self; 4] = [
        Self::TimeoutMismatch,
        Self::RuntimeDirVolatile,
        Self::BacklogSmall,
        Self::ConfigInvalid,
    ];

    /// The stable id: the JSON `cause` field and the metrics' `cause` label.
    #[must_use]
    pub const fn id(self) -> &'static str {
        match self {
            Self::SocketMissing => "socket-missing",
            Self::StaleSocket => "stale-socket",
            Self::UpstreamNotListening => "upstream-not-listening",
            Self::FirewallReject => "firewall-reject",
            Self::WrongTarget => "wrong-target",
            Self::SocketPermission => "socket-permission",
            Self::BacklogFull => "backlog-full",
            Self::CrashOnBoot => "crash-on-boot",
            Self::WorkerTimeout => "worker-timeout",
            Self::WorkerOomKilled => "worker-oom-killed",
            Self::WorkerCrashed => "worker-crashed",
            Self::PortExhaustion => "port-exhaustion",
            Self::NetworkUnreachable => "network-unreachable",
            Self::ConnectTimeout => "connect-timeout",
            Self::UpstreamReset => "upstream-reset",
            Self::KeepaliveRace => "keepalive-race",
            Self::UpstreamClosedEarly => "upstream-closed-early",
            Self::UpstreamRestarting => "upstream-restarting",
            Self::TimeoutMismatch => "timeout-mismatch",
            Self::RuntimeDirVolatile => "runtime-dir-volatile",
            Self::BacklogSmall => "backlog-small",
            Self::ConfigInvalid => "config-invalid",
        }
    }

    /// The HTTP status class the proxy answers with: 504 for a connect that times out, 502
    /// otherwise. (A full accept queue that makes connects time out is a 504 too: the engine
    /// sets that verdict's status itself.)
    #[must_use]
    pub const fn status(self) -> u16 {
        match self {
            Self::ConnectTimeout => 504,
            _ => 502,
        }
    }

    /// Whether the proxy's connect to the upstream fails (or would, after a reboot or a
    /// burst): the request never reaches the app.
    #[must_use]
    pub const fn is_connect_failure(self) -> bool {
        matches!(
            self,
            Self::SocketMissing
                | Self::StaleSocket
                | Self::UpstreamNotListening
                | Self::FirewallReject
                | Self::WrongTarget
                | Self::SocketPermission
                | Self::BacklogFull
                | Self::PortExhaustion
                | Self::NetworkUnreachable
                | Self::ConnectTimeout
                | Self::RuntimeDirVolatile
                | Self::BacklogSmall
        )
    }

    /// The status the proxy named `proxy_comm` answers for this cause: haproxy and Apache's
    /// `mod_proxy` answer 503 ("no server is available") for a connect that fails, where nginx
    /// and Caddy answer 502 (504 for a timeout); a response cut short is a 502 for all.
    #[must_use]
    pub fn status_of(self, proxy_comm: &str) -> u16 {
        let answers_503 = matches!(proxy_comm, "haproxy" | "apache2" | "apache" | "httpd");
        if answers_503 && self.is_connect_failure() {
            503
        } else {
            self.status()
        }
    }

    /// Whether the engine establishes it from kernel events (else a `gwtrace check` warning).
    #[must_use]
    pub const fn observed(self) -> bool {
        !matches!(
            self,
            Self::TimeoutMismatch
                | Self::RuntimeDirVolatile
                | Self::BacklogSmall
                | Self::ConfigInvalid
        )
    }

    /// What it means, in one line.
    #[must_use]
    pub const fn meaning(self) -> &'static str {
        match self {
            Self::SocketMissing => "the upstream's unix socket file does not exist",
            Self::StaleSocket => "the unix socket file exists but nothing listens on it",
            Self::UpstreamNotListening => "nothing listens on the upstream's TCP address",
            Self::FirewallReject => "a netfilter rule refuses the proxy's connect",
            Self::WrongTarget => "the proxy connects to the wrong place: the app listens close by",
            Self::SocketPermission => "the socket's path denies the proxy's worker",
            Self::BacklogFull => "the upstream's accept queue is full",
            Self::CrashOnBoot => "the app exits right after it starts, or cannot be executed",
            Self::WorkerTimeout => "the app server killed a worker busy past its timeout",
            Self::WorkerOomKilled => "the OOM killer chose an upstream worker",
            Self::WorkerCrashed => "an upstream worker died of a fatal signal",
            Self::PortExhaustion => "no local port is left for the proxy's connect",
            Self::NetworkUnreachable => "there is no route to the upstream",
            Self::ConnectTimeout => "the upstream never completed the handshake (504)",
            Self::UpstreamReset => "the upstream reset the connection",
            Self::KeepaliveRace => {
                "the upstream closed an idle keep-alive connection as the proxy reused it"
            }
            Self::UpstreamClosedEarly => "the app closed the connection itself before answering",
            Self::UpstreamRestarting => "the upstream was restarting: nothing listened meanwhile",
            Self::TimeoutMismatch => "the app kills requests the proxy still waits for",
            Self::RuntimeDirVolatile => "the socket's directory is not recreated at boot",
            Self::BacklogSmall => "the upstream's listen backlog is small or half full",
            Self::ConfigInvalid => "the proxy rejects its configuration",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: the summary table's `{:<24}` column lines up.
        f.pad(self.id())
    }
}

/// An id that names no cause.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown cause id {0:?}")]
pub struct UnknownCause(pub String);

impl FromStr for Cause {
    type Err = UnknownCause;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.id() == s)
            .ok_or_else(|| UnknownCause(s.to_owned()))
    }
}

impl Ord for Cause {
    fn cmp(&self, other: &Self) -> Ordering {
        self.id().cmp(other.id())
    }
}

impl PartialOrd for Cause {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq<str> for Cause {
    fn eq(&self, other: &str) -> bool {
        self.id() == other
    }
}

impl PartialEq<&str> for Cause {
    fn eq(&self, other: &&str) -> bool {
        self.id() == *other
    }
}

impl PartialEq<String> for Cause {
    fn eq(&self, other: &String) -> bool {
        self.id() == other
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn ids_are_the_serde_names_and_round_trip() {
        for c in Cause::ALL {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.id())
            );
            assert_eq!(
                serde_json::from_str::<Cause>(&format!("\"{c}\"")).unwrap(),
                c
            );
            assert_eq!(c.id().parse::<Cause>(), Ok(c));
            assert_eq!(c.to_string(), c.id());
            assert!(c.meaning().len() > 10, "{c}: {:?}", c.meaning());
        }
        assert!("no-such-cause".parse::<Cause>().is_err());
        assert!(serde_json::from_str::<Cause>("\"no-such-cause\"").is_err());
    }

    #[test]
    fn lists_partition_every_cause_once() {
        let all: BTreeSet<Cause> = Cause::ALL.into_iter().collect();
        assert_eq!(all.len(), Cause::ALL.len(), "duplicates in ALL");
        let observed: BTreeSet<Cause> = Cause::OBSERVED.into_iter().collect();
        let warnings: BTreeSet<Cause> = Cause::WARNINGS.into_iter().collect();
        assert!(observed.is_disjoint(&warnings));
        assert_eq!(&observed | &warnings, all);
        assert!(Cause::OBSERVED.iter().all(|c| c.observed()));
        assert!(Cause::WARNINGS.iter().all(|c| !c.observed()));
    }

    #[test]
    fn status_classes() {
        assert_eq!(Cause::ConnectTimeout.status(), 504);
        let c502 = Cause::ALL.iter().filter(|c| c.status() == 502).count();
        assert_eq!(
            c502,
            Cause::ALL.len() - 1,
            "only connect-timeout is a 504 class"
        );
    }

    #[test]
    fn status_per_proxy() {
        assert_eq!(Cause::SocketMissing.status_of("haproxy"), 503);
        assert_eq!(Cause::UpstreamNotListening.status_of("apache2"), 503);
        assert_eq!(Cause::ConnectTimeout.status_of("httpd"), 503);
        assert_eq!(Cause::WorkerCrashed.status_of("haproxy"), 502);
        assert_eq!(Cause::SocketMissing.status_of("nginx"), 502);
        assert_eq!(Cause::SocketMissing.status_of("caddy"), 502);
        assert_eq!(Cause::ConnectTimeout.status_of("caddy"), 504);
    }

    #[test]
    fn ordered_by_id() {
        let mut by_enum = Cause::ALL.to_vec();
        by_enum.sort();
        let mut by_id: Vec<&str> = Cause::ALL.iter().map(|c| c.id()).collect();
        by_id.sort_unstable();
        assert_eq!(by_enum.iter().map(|c| c.id()).collect::<Vec<_>>(), by_id);
    }

    /// README's cause table (the rows that start with a backticked id, under "Causes gwtrace
    /// names") lists
    /// exactly the causes the engine observes; the `gwtrace check` section names each warning.
    #[test]
    fn readme_names_every_cause() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let (_, rest) = readme
            .split_once("## Causes gwtrace names")
            .expect("README has a cause section");
        let section = rest.split("\n## ").next().unwrap_or(rest);
        let table: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(id, _)| id))
            .collect();
        assert!(!table.is_empty(), "no cause table in README");
        for id in &table {
            let c: Cause = id.parse().unwrap_or_else(|e| panic!("README: {e}"));
            assert!(c.observed(), "README's table lists check's warning {id}");
        }
        for c in Cause::OBSERVED {
            assert!(table.contains(&c.id()), "README's cause table lacks {c}");
        }
        assert_eq!(
            table.len(),
            Cause::OBSERVED.len(),
            "duplicate rows: {table:?}"
        );
        let (_, check) = readme
            .split_once("## `gwtrace check`")
            .expect("README has a check section");
        let check = check.split("\n## ").next().unwrap_or(check);
        for c in Cause::WARNINGS {
            assert!(
                check.contains(&format!("`{c}`")),
                "README's check section does not name {c}"
            );
        }
    }
}
