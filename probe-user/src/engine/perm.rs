//! The `namei -l` walk the kernel does for a unix socket connect, replayed on the facts: every
//! directory on the way needs search (x) permission, the socket itself write (w) permission,
//! checked against the connecting worker's uid, gid and supplementary groups (root passes).
//! Finding the exact component that denies is the whole point: "permission denied" alone does
//! not say whether it is the socket's mode or a parent directory.
use super::state::Creds;
use super::text::mode_string;
use crate::facts::{IdNames, PathComponent, PathInfo};

/// A uid's name as the proxy's system spells it, else the number.
fn user(names: Option<&IdNames>, uid: u32) -> String {
    names
        .and_then(|n| n.user(uid))
        .map_or_else(|| uid.to_string(), str::to_owned)
}

/// A gid's name as the proxy's system spells it, else the number.
fn group(names: Option<&IdNames>, gid: u32) -> String {
    names
        .and_then(|n| n.group(gid))
        .map_or_else(|| gid.to_string(), str::to_owned)
}

/// `gwapp:gwapp` (or `999:995` where the proxy's system has no name).
pub(crate) fn file_owner(comp: &PathComponent, names: Option<&IdNames>) -> String {
    format!("{}:{}", user(names, comp.uid), group(names, comp.gid))
}

/// Which permission a component needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Search (x) on a directory.
    Search,
    /// Write (w) on the socket.
    Write,
}

impl Need {
    fn bit(self) -> u32 {
        match self {
            Need::Search => 1,
            Need::Write => 2,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Need::Search => "search (x)",
            Need::Write => "write (w)",
        }
    }
}

/// Which permission class of a file applies to the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Owner,
    Group,
    Other,
}

/// The outcome of the walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Walk<'a> {
    /// This component refuses the worker.
    Denied {
        comp: &'a PathComponent,
        need: Need,
        class: Class,
        last: bool,
    },
    /// This component does not exist (then the connect fails with ENOENT, not EACCES).
    Missing(&'a PathComponent),
    /// Every component lets the worker through.
    Allowed,
}

/// Which class of `comp` applies to `creds`.
fn class_of(comp: &PathComponent, creds: &Creds) -> Class {
    if creds.uid == comp.uid {
        Class::Owner
    } else if creds.gid == comp.gid || creds.groups.contains(&comp.gid) {
        Class::Group
    } else {
        Class::Other
    }
}

fn triad(mode: u32, class: Class) -> u32 {
    match class {
        Class::Owner => (mode >> 6) & 7,
        Class::Group => (mode >> 3) & 7,
        Class::Other => mode & 7,
    }
}

/// Walks the components (root first) as the kernel would for `creds`.
pub(crate) fn walk<'a>(info: &'a PathInfo, creds: &Creds) -> Walk<'a> {
    let n = info.components.len();
    for (i, comp) in info.components.iter().enumerate() {
        if !comp.exists {
            return Walk::Missing(comp);
        }
        let last = i + 1 == n;
        let need = if last { Need::Write } else { Need::Search };
        if creds.uid == 0 {
            continue;
        }
        let class = class_of(comp, creds);
        if triad(comp.mode, class) & need.bit() == 0 {
            return Walk::Denied {
                comp,
                need,
                class,
                last,
            };
        }
    }
    Walk::Allowed
}

/// "user www-data, groups www-data,adm", or "uid 33, gid 33, groups 33,4" where the proxy's
/// system has no name for the user.
pub(crate) fn creds_label(creds: &Creds, names: Option<&IdNames>) -> String {
    let mut groups: Vec<u32> = creds.groups.clone();
    if !groups.contains(&creds.gid) {
        groups.insert(0, creds.gid);
    }
    let groups: Vec<String> = groups.iter().map(|&g| group(names, g)).collect();
    match names.and_then(|n| n.user(creds.uid)) {
        Some(name) => format!("user {name}, groups {}", groups.join(",")),
        None => format!(
            "uid {}, gid {}, groups {}",
            creds.uid,
            group(names, creds.gid),
            groups.join(",")
        ),
    }
}

/// "srw-rw---- gwapp:gwapp /run/app/app.sock".
pub(crate) fn comp_label(comp: &PathComponent, names: Option<&IdNames>) -> String {
    format!(
        "{} {} {}",
        mode_string(comp.mode),
        file_owner(comp, names),
        comp.path
    )
}

/// The evidence line for a denial.
pub(crate) fn denial_line(
    comp: &PathComponent,
    need: Need,
    class: Class,
    who: &str,
    creds: &Creds,
    names: Option<&IdNames>,
) -> String {
    let class = match class {
        Class::Owner => "its owner",
        Class::Group => "its group",
        Class::Other => "others",
    };
    format!(
        "{} denies {who} ({}): no {} permission for {class}",
        comp_label(comp, names),
        creds_label(creds, names),
        need.label()
    )
}

/// The narrowest fix for a denial (never "make it world-writable").
pub(crate) fn denial_fix(
    comp: &PathComponent,
    need: Need,
    class: Class,
    last: bool,
    creds: &Creds,
    proxy: &str,
    names: Option<&IdNames>,
) -> String {
    let bit = need.bit();
    let group_has = (comp.mode >> 3) & bit != 0;
    let path = &comp.path;
    let reload = format!(
        "then reload {proxy} (its new workers take the group; running ones keep their old groups)"
    );
    let add_to_group = match (
        names.and_then(|n| n.group(comp.gid)),
        names.and_then(|n| n.user(creds.uid)),
    ) {
        (Some(g), Some(u)) => {
            format!("add the proxy's user to group {g}: usermod -aG {g} {u}, {reload}")
        }
        _ => format!(
            "add the proxy's user to group {gid}: usermod -aG $(getent group {gid} | cut -d: -f1) \
             $(getent passwd {uid} | cut -d: -f1), {reload}",
            gid = comp.gid,
            uid = creds.uid,
        ),
    };
    let own_group = group(names, creds.gid);
    match (class, group_has, last) {
        (Class::Other, true, _) => add_to_group,
        (Class::Group, false, true) => format!(
            "let the group write the socket: start the app with a group-friendly umask (gunicorn --umask 007, \
             or UMask=0007 in its systemd unit) or chmod g+w {path}"
        ),
        (_, _, true) => format!(
            "create the socket owned by a group {proxy} is in: gunicorn --umask 007 --group {own_group} (or Group= \
             and UMask=0007 in the systemd unit), or chgrp {own_group} {path} && chmod g+w {path}"
        ),
        (Class::Group, _, false) => format!("chmod g+x {path}"),
        (Class::Owner, _, false) => format!("chmod u+x {path}"),
        (Class::Other, false, false) => format!(
            "let {proxy} traverse {path}: chgrp {own_group} {path} && chmod g+x {path} (or chmod o+x {path})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(path: &str, uid: u32, gid: u32, mode: u32) -> PathComponent {
        PathComponent {
            path: path.into(),
            exists: true,
            uid,
            gid,
            mode,
        }
    }

    fn info(comps: Vec<PathComponent>) -> PathInfo {
        PathInfo {
            path: comps.last().map(|c| c.path.clone()).unwrap_or_default(),
            components: comps,
        }
    }

    #[test]
    fn socket_mode_denies_other_users() {
        let i = info(vec![
            comp("/", 0, 0, 0o040_755),
            comp("/run", 0, 0, 0o040_755),
            comp("/run/app", 999, 999, 0o040_755),
            comp("/run/app/app.sock", 999, 999, 0o140_660),
        ]);
        let www = Creds {
            uid: 33,
            gid: 33,
            groups: vec![33],
        };
        let Walk::Denied {
            comp,
            need,
            class,
            last,
        } = walk(&i, &www)
        else {
            panic!("should deny")
        };
        assert_eq!(comp.path, "/run/app/app.sock");
        assert_eq!((need, class, last), (Need::Write, Class::Other, true));
        assert!(denial_fix(comp, need, class, last, &www, "nginx", None).contains("usermod -aG"));
        let member = Creds {
            uid: 33,
            gid: 33,
            groups: vec![33, 999],
        };
        assert_eq!(walk(&i, &member), Walk::Allowed);
        assert_eq!(walk(&i, &Creds::default()), Walk::Allowed, "root passes");
    }

    #[test]
    fn directory_without_search_denies_first() {
        let i = info(vec![
            comp("/", 0, 0, 0o040_755),
            comp("/srv/app", 1000, 1000, 0o040_700),
            comp("/srv/app/app.sock", 1000, 1000, 0o140_777),
        ]);
        let www = Creds {
            uid: 33,
            gid: 33,
            groups: vec![],
        };
        let Walk::Denied { comp, need, .. } = walk(&i, &www) else {
            panic!("should deny")
        };
        assert_eq!((comp.path.as_str(), need), ("/srv/app", Need::Search));
    }

    #[test]
    fn owner_class_wins_even_if_group_would_allow() {
        let i = info(vec![comp("/s.sock", 33, 33, 0o140_070)]);
        let c = Creds {
            uid: 33,
            gid: 33,
            groups: vec![],
        };
        assert!(matches!(
            walk(&i, &c),
            Walk::Denied {
                class: Class::Owner,
                ..
            }
        ));
    }
}
