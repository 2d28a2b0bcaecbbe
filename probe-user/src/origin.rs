//! Attribution: which workload an event belongs to, from its cgroup path: the systemd unit,
//! the container (docker, containerd, cri-o, podman) and the Kubernetes pod.
//!
//! Pure: [`Origin::from_path`] and [`best_path`] read strings only (the engine and replay use
//! them). Finding the path of a live event is [`crate::host::cgroup::Resolver`]'s job.
use serde::{Deserialize, Serialize};

/// Where a process runs: its cgroup and what that cgroup says about the workload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// The most telling cgroup path (v2, else systemd's v1 hierarchy, else the first non-root).
    pub cgroup: String,
    /// systemd unit: the innermost `.service` (else `.scope`) in the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Container id (64 hex digits) when the path names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// `docker`, `containerd`, `cri-o`, `podman`, or `unknown` (cgroupfs driver paths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_runtime: Option<String>,
    /// Kubernetes pod uid (dashed form) when the path is under `kubepods`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Container runtime and id named by one cgroup path component.
fn container_of(component: &str) -> Option<(&'static str, &str)> {
    let scope = component.strip_suffix(".scope").unwrap_or(component);
    for (prefix, runtime) in [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ] {
        if let Some(id) = scope.strip_prefix(prefix).filter(|id| is_container_id(id)) {
            return Some((runtime, id));
        }
    }
    // `kubepods-burstable-pod<uid>.slice:cri-containerd:<id>` (containerd with the systemd
    // driver, as the path under containerd.service shows it).
    if let Some((_, id)) = component.rsplit_once(":cri-containerd:")
        && is_container_id(id)
    {
        return Some(("containerd", id));
    }
    is_container_id(component).then_some(("unknown", component))
}

/// Pod uid named by one cgroup path component (`pod<uid>`, `kubepods-besteffort-pod<uid>.slice`).
fn pod_of(component: &str) -> Option<String> {
    let c = component.split(':').next().unwrap_or(component);
    let c = c.strip_suffix(".slice").unwrap_or(c);
    let uid = c.rsplit_once("-pod").map_or_else(
        || c.strip_prefix("pod"),
        |(prefix, uid)| prefix.starts_with("kubepods").then_some(uid),
    )?;
    let uid = uid.replace('_', "-");
    (uid.len() == 36 && uid.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())).then_some(uid)
}

impl Origin {
    /// What one cgroup path says.
    #[must_use]
    #[expect(
        clippy::case_sensitive_file_extension_comparisons,
        reason = "systemd unit suffixes are lower case by definition"
    )]
    pub fn from_path(cgroup: &str) -> Self {
        let comps: Vec<&str> = cgroup.split('/').filter(|c| !c.is_empty()).collect();
        let unit = service_unit(cgroup)
            .or_else(|| comps.iter().rev().find(|c| c.ends_with(".scope")).copied())
            .map(str::to_owned);
        let container = comps.iter().rev().find_map(|c| container_of(c));
        let in_kubepods = comps.iter().any(|c| c.starts_with("kubepods"));
        let pod_uid = if in_kubepods {
            comps.iter().find_map(|c| pod_of(c))
        } else {
            None
        };
        Self {
            cgroup: cgroup.to_owned(),
            unit,
            container_id: container.map(|(_, id)| id.to_owned()),
            container_runtime: container.map(|(r, _)| r.to_owned()),
            pod_uid,
        }
    }

    /// What `/proc/PID/cgroup` says: the most telling line's path.
    #[must_use]
    pub fn from_proc_cgroup(text: &str) -> Self {
        Self::from_path(best_path(text))
    }

    /// True when the path names nothing beyond the root cgroup.
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.cgroup.is_empty() || self.cgroup == "/"
    }

    /// Short human label: `unit nginx.service`, `container 0123456789ab (containerd) pod …`.
    #[must_use]
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if let Some(id) = &self.container_id {
            parts.push(format!(
                "container {} ({})",
                &id[..12.min(id.len())],
                self.container_runtime.as_deref().unwrap_or("unknown")
            ));
        }
        if let Some(p) = &self.pod_uid {
            parts.push(format!("pod {p}"));
        }
        if parts.is_empty()
            && let Some(u) = &self.unit
        {
            parts.push(format!("unit {u}"));
        }
        if parts.is_empty() {
            parts.push(format!("cgroup {}", self.cgroup));
        }
        parts.join(", ")
    }
}

/// The innermost systemd service (`….service` component) a cgroup path names.
#[must_use]
pub fn service_unit(cgroup: &str) -> Option<&str> {
    cgroup.split('/').rev().find(|c| c.ends_with(".service"))
}

/// The most telling path of a `/proc/PID/cgroup` file: the v2 (`0::`) path unless it is the
/// root (hybrid hosts), then systemd's v1 hierarchy, then the memory controller's, then any
/// other non-root line; `/` when all are the root.
#[must_use]
pub fn best_path(text: &str) -> &str {
    let lines: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            Some((it.next()?, it.next()?))
        })
        .collect();
    let non_root = |(_, p): &&(&str, &str)| !p.is_empty() && *p != "/";
    let pick = |want: &dyn Fn(&str) -> bool| {
        lines
            .iter()
            .filter(non_root)
            .find(|(c, _)| want(c))
            .map(|(_, p)| *p)
    };
    pick(&|c| c.is_empty())
        .or_else(|| pick(&|c| c == "name=systemd"))
        .or_else(|| pick(&|c| c.split(',').any(|c| c == "memory")))
        .or_else(|| pick(&|_| true))
        .unwrap_or("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f3c2b1a00112233445566778899aabbccddeeff00112233445566778899aabb";

    #[test]
    fn systemd_service() {
        let o = Origin::from_path("/system.slice/nginx.service");
        assert_eq!(o.unit.as_deref(), Some("nginx.service"));
        assert_eq!(o.container_id, None);
        assert_eq!(o.pod_uid, None);
        assert_eq!(o.label(), "unit nginx.service");
    }

    #[test]
    fn docker_systemd_and_cgroupfs_drivers() {
        let o = Origin::from_path(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(o.container_id.as_deref(), Some(ID));
        assert_eq!(o.container_runtime.as_deref(), Some("docker"));
        let o = Origin::from_path(&format!("/docker/{ID}"));
        assert_eq!(o.container_id.as_deref(), Some(ID));
        assert_eq!(o.container_runtime.as_deref(), Some("unknown"));
        assert_eq!(o.pod_uid, None);
    }

    #[test]
    fn kubernetes_pods_in_every_driver() {
        let uid = "0b5e8a3c-1d2e-4f60-8a9b-0c1d2e3f4a5b";
        let us = uid.replace('-', "_");
        let o = Origin::from_path(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{us}.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(o.pod_uid.as_deref(), Some(uid));
        assert_eq!(o.container_id.as_deref(), Some(ID));
        assert_eq!(o.container_runtime.as_deref(), Some("containerd"));
        assert_eq!(
            o.unit.as_deref(),
            Some(format!("cri-containerd-{ID}.scope").as_str())
        );
        let o = Origin::from_path(&format!("/kubepods/burstable/pod{uid}/{ID}"));
        assert_eq!(o.pod_uid.as_deref(), Some(uid));
        assert_eq!(o.container_id.as_deref(), Some(ID));
        let o = Origin::from_path(&format!("/kubepods/pod{uid}/crio-{ID}.scope"));
        assert_eq!(o.pod_uid.as_deref(), Some(uid));
        assert_eq!(o.container_runtime.as_deref(), Some("cri-o"));
        let o = Origin::from_path(&format!(
            "/system.slice/containerd.service/kubepods-besteffort-pod{us}.slice:cri-containerd:{ID}"
        ));
        assert_eq!(o.pod_uid.as_deref(), Some(uid));
        assert_eq!(o.container_id.as_deref(), Some(ID));
        assert!(o.label().contains("pod 0b5e8a3c"), "{}", o.label());
    }

    #[test]
    fn not_a_container_or_pod() {
        // A 64-hex-looking name outside the id position still counts; short hex does not.
        let o = Origin::from_path("/user.slice/user-0.slice/session-3.scope");
        assert_eq!(o.unit.as_deref(), Some("session-3.scope"));
        assert_eq!(o.container_id, None);
        let o = Origin::from_path("/pods/pod123");
        assert_eq!(o.pod_uid, None);
        assert!(Origin::from_path("/").is_root());
        assert_eq!(Origin::from_path("/").label(), "cgroup /");
    }

    #[test]
    fn best_line_of_proc_cgroup() {
        let hybrid = "9:name=systemd:/system.slice/app.service\n4:memory:/gw/x\n1:cpu:/\n0::/\n";
        assert_eq!(best_path(hybrid), "/system.slice/app.service");
        assert_eq!(
            best_path("0::/system.slice/a.service\n"),
            "/system.slice/a.service"
        );
        assert_eq!(best_path("4:memory:/m\n1:cpu,cpuacct:/\n0::/\n"), "/m");
        assert_eq!(best_path("2:cpu:/\n0::/\n"), "/");
        assert_eq!(best_path(""), "/");
    }
}
