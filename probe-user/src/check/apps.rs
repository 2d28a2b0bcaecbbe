//! Pure readers of what surrounds the proxy: users and groups from /etc/passwd and /etc/group,
//! listen queues from `ss`, directories systemd creates at boot (`RuntimeDirectory=`,
//! tmpfiles.d). App servers' settings are read by [`crate::catalog`].

/// A user's identity as nginx's workers take it (`setgid(group)`, `initgroups(user, group)`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserCreds {
    pub uid: u32,
    pub gid: u32,
    /// The group plus every group listing the user as a member.
    pub groups: Vec<u32>,
}

/// Looks a user (and its group: the user's name when omitted, as nginx does) up in the text
/// of /etc/passwd and /etc/group.
pub fn lookup_user(
    passwd: &str,
    group_file: &str,
    user: &str,
    group: Option<&str>,
) -> Result<UserCreds, String> {
    let uid = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&user))
        .and_then(|f| f.get(2)?.parse::<u32>().ok())
        .ok_or_else(|| format!("no user {user:?} in /etc/passwd"))?;
    let group = group.unwrap_or(user);
    let groups: Vec<Vec<&str>> = group_file
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let gid = groups
        .iter()
        .find(|f| f[0] == group)
        .and_then(|f| f[2].parse::<u32>().ok())
        .ok_or_else(|| format!("no group {group:?} in /etc/group"))?;
    let mut all = vec![gid];
    for f in &groups {
        let members = f.get(3).copied().unwrap_or("");
        if members.split(',').any(|m| m.trim() == user)
            && let Ok(g) = f[2].parse::<u32>()
            && !all.contains(&g)
        {
            all.push(g);
        }
    }
    Ok(UserCreds {
        uid,
        gid,
        groups: all,
    })
}

/// Name of a gid in /etc/group text.
#[must_use]
pub fn group_name(group_file: &str, gid: u32) -> Option<String> {
    group_file.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[2].parse::<u32>().ok() == Some(gid)).then(|| f[0].to_owned())
    })
}

/// A listening socket's accept queue as `ss -Hlnxt` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenQueue {
    /// gwtrace's target format (`unix:/p`, `127.0.0.1:80`, `[::]:80`).
    pub target: String,
    /// Connections waiting to be accepted now.
    pub queued: u32,
    /// The effective backlog (the requested one capped by `net.core.somaxconn`).
    pub backlog: u32,
}

/// Parses `ss -Hlnxt` (listening unix stream and TCP sockets).
#[must_use]
pub fn parse_ss(text: &str) -> Vec<ListenQueue> {
    let mut out = Vec::new();
    for line in text.lines() {
        let c: Vec<&str> = line.split_whitespace().collect();
        if c.len() < 5 || c[1] != "LISTEN" {
            continue;
        }
        let (Ok(queued), Ok(backlog)) = (c[2].parse(), c[3].parse()) else {
            continue;
        };
        let local = c[4];
        let target = match c[0] {
            "u_str" | "u_seq" if local != "*" => format!("unix:{local}"),
            "tcp" => {
                let Some((host, port)) = local.rsplit_once(':') else {
                    continue;
                };
                let host = host.split('%').next().unwrap_or(host);
                match host {
                    "*" | "[::]" => format!("[::]:{port}"),
                    h if h.starts_with('[') => format!("{h}:{port}"),
                    h => format!("{h}:{port}"),
                }
            }
            _ => continue,
        };
        out.push(ListenQueue {
            target,
            queued,
            backlog,
        });
    }
    out
}

/// Directories tmpfiles.d creates at boot (`d`, `D`, `v`, `q`, `Q` lines).
#[must_use]
pub fn tmpfiles_dirs(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let kind = f.next()?;
            let path = f.next()?;
            let k = kind.trim_end_matches(['!', '-', '=', '~', '^', '+']);
            matches!(k, "d" | "D" | "v" | "q" | "Q").then(|| canonical_run(path))
        })
        .collect()
}

/// `/var/run/x` is `/run/x`.
#[must_use]
pub fn canonical_run(path: &str) -> String {
    path.strip_prefix("/var/run/").map_or_else(
        || path.trim_end_matches('/').to_owned(),
        |r| format!("/run/{}", r.trim_end_matches('/')),
    )
}

/// A systemd unit's properties that create a directory at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitDirs {
    pub unit: String,
    /// `RuntimeDirectory=` as absolute paths under /run.
    pub runtime_dirs: Vec<String>,
    /// `ExecStartPre=` command lines (a `mkdir` there also creates it).
    pub exec_start_pre: String,
}

/// Parses `systemctl show -p RuntimeDirectory -p ExecStartPre UNIT`.
#[must_use]
pub fn parse_unit_show(unit: &str, text: &str) -> UnitDirs {
    let mut u = UnitDirs {
        unit: unit.to_owned(),
        ..UnitDirs::default()
    };
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("RuntimeDirectory=") {
            u.runtime_dirs.extend(
                v.split_whitespace()
                    .map(|d| format!("/run/{}", d.trim_matches('/'))),
            );
        } else if let Some(v) = line.strip_prefix("ExecStartPre=") {
            u.exec_start_pre.push_str(v);
            u.exec_start_pre.push('\n');
        }
    }
    u
}

/// The systemd service a cgroup path belongs to (`/system.slice/app.service` gives
/// `app.service`), if it is one.
#[must_use]
pub fn unit_of_cgroup(cgroup: &str) -> Option<String> {
    crate::origin::service_unit(cgroup).map(str::to_owned)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_take_their_groups_like_initgroups() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n";
        let group = "root:x:0:\nwww-data:x:33:\ngwapp:x:995:www-data,other\nadm:x:4:syslog\n";
        let c = lookup_user(passwd, group, "www-data", None).unwrap();
        assert_eq!(
            c,
            UserCreds {
                uid: 33,
                gid: 33,
                groups: vec![33, 995]
            }
        );
        let g = lookup_user(passwd, group, "www-data", Some("adm")).unwrap();
        assert_eq!((g.gid, g.groups), (4, vec![4, 995]));
        assert!(lookup_user(passwd, group, "nobody", None).is_err());
        assert_eq!(group_name(group, 995).as_deref(), Some("gwapp"));
    }

    #[test]
    fn ss_listen_queues() {
        let text = "u_str LISTEN 0      511    /tmp/x/upstream.sock 1008640       * 0\n\
                    u_str UNCONN 0      0      * 4024480       * 0\n\
                    tcp   LISTEN 3      128    127.0.0.1:8000   0.0.0.0:*\n\
                    tcp   LISTEN 0      4096   *:8080   *:*\n\
                    tcp   LISTEN 0      4096   [::1]:9000   [::]:*\n\
                    tcp   LISTEN 0      4096   127.0.0.53%lo:53   0.0.0.0:*\n";
        let q = parse_ss(text);
        let targets: Vec<&str> = q.iter().map(|l| l.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "unix:/tmp/x/upstream.sock",
                "127.0.0.1:8000",
                "[::]:8080",
                "[::1]:9000",
                "127.0.0.53:53"
            ]
        );
        assert_eq!((q[1].queued, q[1].backlog), (3, 128));
    }

    #[test]
    fn boot_time_directories() {
        let t =
            "# comment\nd /run/app 0755 app app -\nD! /var/run/other/ 0700 - - -\nf /run/x.pid\n";
        assert_eq!(tmpfiles_dirs(t), ["/run/app", "/run/other"]);
        let u = parse_unit_show(
            "app.service",
            "RuntimeDirectory=app app/sub\nExecStartPre={ path=/bin/mkdir ; argv[]=/bin/mkdir -p /run/x ; }\n",
        );
        assert_eq!(u.runtime_dirs, ["/run/app", "/run/app/sub"]);
        assert!(u.exec_start_pre.contains("/run/x"));
        assert_eq!(
            unit_of_cgroup("/system.slice/app.service").as_deref(),
            Some("app.service")
        );
        assert_eq!(
            unit_of_cgroup("/user.slice/user-0.slice/session-1.scope"),
            None
        );
        assert_eq!(canonical_run("/var/run/app/"), "/run/app");
    }
}
