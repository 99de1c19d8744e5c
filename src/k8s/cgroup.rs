//! Pure parsing of `/proc/<pid>/cgroup` into a container id and a pod UID.
//!
//! Formats covered (cgroup v1 and v2, both kubelet cgroup drivers, the
//! containerd / CRI-O / Docker / Podman runtimes), for example:
//!
//! | driver / runtime | path |
//! |---|---|
//! | systemd, containerd | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope` |
//! | systemd, CRI-O | `.../kubepods-besteffort-pod<uid>.slice/crio-<id>.scope` (and `crio-conmon-<id>.scope`) |
//! | systemd, Docker (dockershim / cri-dockerd) | `.../kubepods-pod<uid>.slice/docker-<id>.scope` |
//! | cgroupfs, any runtime | `/kubepods/burstable/pod<uid>/<id>`, `/kubepods/pod<uid>/<id>` |
//! | containerd cgroupsPath in v1 | `/kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>` |
//! | kind / nested kubelet | `/kubelet.slice/kubelet-kubepods.slice/.../kubelet-kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope` |
//! | cgroup namespace of the exporter | `/../../kubepods-...slice/cri-containerd-<id>.scope` (paths relative to our own cgroup) |
//! | plain Docker / Podman (no pod) | `/docker/<id>`, `/system.slice/docker-<id>.scope`, `/machine.slice/libpod-<id>.scope` |
//!
//! Container ids are 64 lowercase hex digits; pod UIDs are RFC 4122 UUIDs
//! (systemd writes their dashes as underscores; they are normalised back).

/// What one cgroup path says about a process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupIdentity {
    pub container_id: String,
    pub pod_uid: String,
}

impl CgroupIdentity {
    pub fn is_empty(&self) -> bool {
        self.container_id.is_empty() && self.pod_uid.is_empty()
    }
}

/// Which line of `/proc/<pid>/cgroup` an identity came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The cgroup v2 (`0::`) line: the census' cgroup id names this cgroup.
    Unified,
    /// A cgroup v1 hierarchy line.
    Legacy,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A pod UID in either form (dashes or systemd's underscores), normalised
/// to the dashed form.
fn as_uuid(s: &str) -> Option<String> {
    if s.len() != 36 {
        return None;
    }
    let norm: String = s
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let ok = norm.char_indices().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => c == '-',
        _ => c.is_ascii_hexdigit(),
    });
    ok.then_some(norm)
}

/// Container id in one path component, if any.
fn container_in(component: &str) -> Option<String> {
    let c = component.strip_suffix(".scope").unwrap_or(component);
    // containerd's "slice:prefix:id" cgroupsPath form, seen literally in v1.
    let c = c.rsplit(':').next().unwrap_or(c);
    let c = [
        "cri-containerd-",
        "crio-conmon-",
        "crio-",
        "docker-",
        "libpod-conmon-",
        "libpod-",
        "containerd-",
    ]
    .iter()
    .find_map(|p| c.strip_prefix(p))
    .unwrap_or(c);
    is_hex64(c).then(|| c.to_string())
}

/// Pod UID in one path component: `pod<uid>` (cgroupfs) or
/// `...-pod<uid_with_underscores>.slice` (systemd), or the containerd
/// `...pod<uid>.slice:cri-containerd:<id>` form.
fn pod_in(component: &str) -> Option<String> {
    let c = component.split(':').next().unwrap_or(component);
    let c = c.strip_suffix(".slice").unwrap_or(c);
    let at = c.rfind("pod")?;
    if at > 0 && !c[..at].ends_with('-') {
        return None;
    }
    as_uuid(&c[at + 3..])
}

/// Parse one cgroup path (the part after the second ':').
pub fn parse_path(path: &str) -> CgroupIdentity {
    let mut id = CgroupIdentity::default();
    let kube = path.contains("kubepods");
    for comp in path.split('/') {
        if comp.is_empty() || comp == ".." {
            continue;
        }
        if kube {
            if let Some(uid) = pod_in(comp) {
                id.pod_uid = uid;
            }
        }
        if let Some(c) = container_in(comp) {
            id.container_id = c;
        }
    }
    id
}

/// Parse the whole of `/proc/<pid>/cgroup`. The v2 line wins when it names a
/// container or pod; otherwise the first v1 line that does (hybrid hosts keep
/// the container in the v1 hierarchies and `/` in v2).
pub fn parse_proc_cgroup(content: &str) -> Option<(CgroupIdentity, Source)> {
    let mut legacy: Option<CgroupIdentity> = None;
    for line in content.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hid), Some(_ctrl), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let id = parse_path(path);
        if id.is_empty() {
            continue;
        }
        if hid == "0" {
            return Some((id, Source::Unified));
        }
        // Prefer the line that has both pieces.
        let better = match &legacy {
            None => true,
            Some(l) => l.pod_uid.is_empty() && !id.pod_uid.is_empty(),
        };
        if better {
            legacy = Some(id);
        }
    }
    legacy.map(|l| (l, Source::Legacy))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "4e3c2a1b0f9e8d7c6b5a49382716051f4e3c2a1b0f9e8d7c6b5a49382716051f";
    const UID: &str = "2b1b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d";
    const UID_SYSTEMD: &str = "2b1b3c4d_5e6f_4a8b_9c0d_1e2f3a4b5c6d";

    fn both(path: &str) {
        let id = parse_path(path);
        assert_eq!(id.container_id, CID, "container in {path}");
        assert_eq!(id.pod_uid, UID, "pod in {path}");
    }

    #[test]
    fn systemd_driver_v2() {
        both(&format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope"));
        both(&format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{CID}.scope"));
        both(&format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-conmon-{CID}.scope"));
        // Guaranteed QoS: no QoS slice.
        both(&format!(
            "/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope"
        ));
        both(&format!(
            "/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/docker-{CID}.scope"
        ));
    }

    #[test]
    fn cgroupfs_driver() {
        both(&format!("/kubepods/burstable/pod{UID}/{CID}"));
        both(&format!("/kubepods/besteffort/pod{UID}/{CID}"));
        both(&format!("/kubepods/pod{UID}/{CID}"));
        // k3s / rke2 nest under their own root
        both(&format!("/kubepods/burstable/pod{UID}/{CID}/"));
    }

    #[test]
    fn nested_and_namespaced_paths() {
        // kind: the node container's kubelet runs under kubelet.slice
        both(&format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope"));
        // seen from inside our own cgroup namespace
        both(&format!(
            "/../../kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope"
        ));
        // containerd's slice:prefix:name cgroupsPath, literally in v1
        both(&format!(
            "/kubepods-besteffort-pod{UID_SYSTEMD}.slice:cri-containerd:{CID}"
        ));
    }

    #[test]
    fn pod_level_cgroup_has_no_container() {
        let id = parse_path(&format!("/kubepods/burstable/pod{UID}"));
        assert_eq!(id.pod_uid, UID);
        assert_eq!(id.container_id, "");
        let id = parse_path(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice"
        ));
        assert_eq!(id.pod_uid, UID);
    }

    #[test]
    fn containers_without_pods() {
        for p in [
            format!("/docker/{CID}"),
            format!("/system.slice/docker-{CID}.scope"),
            format!("/machine.slice/libpod-{CID}.scope"),
            format!("/system.slice/containerd.service/default/{CID}"),
        ] {
            let id = parse_path(&p);
            assert_eq!(id.container_id, CID, "{p}");
            assert_eq!(id.pod_uid, "", "no pod outside kubepods: {p}");
        }
    }

    #[test]
    fn host_processes_and_noise() {
        for p in [
            "/",
            "/system.slice/kubelet.service",
            "/system.slice/containerd.service",
            "/user.slice/user-1000.slice/session-3.scope",
            "/init.scope",
            // a pod-looking name outside kubepods is not a pod
            "/system.slice/podman-pod2b1b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d.slice",
            // too short / not hex
            "/docker/4e3c2a1b0f9e",
            "/kubepods/burstable/podnot-a-uid/zzzz",
        ] {
            assert_eq!(parse_path(p), CgroupIdentity::default(), "{p}");
        }
        // Uppercase hex is not a container id (runtimes write lowercase).
        assert_eq!(
            parse_path(&format!("/docker/{}", CID.to_uppercase())).container_id,
            ""
        );
    }

    #[test]
    fn proc_cgroup_v2_only() {
        let c = format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope\n");
        let (id, src) = parse_proc_cgroup(&c).unwrap();
        assert_eq!(
            (id.container_id.as_str(), id.pod_uid.as_str(), src),
            (CID, UID, Source::Unified)
        );
    }

    #[test]
    fn proc_cgroup_v1_and_hybrid() {
        // cgroup v1 with the cgroupfs driver, v2 mounted but unused (hybrid).
        let c = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{CID}\n\
             11:memory:/kubepods/burstable/pod{UID}/{CID}\n\
             10:cpu,cpuacct:/kubepods/burstable/pod{UID}/{CID}\n\
             1:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n\
             0::/\n"
        );
        let (id, src) = parse_proc_cgroup(&c).unwrap();
        assert_eq!(
            (id.container_id.as_str(), id.pod_uid.as_str(), src),
            (CID, UID, Source::Legacy)
        );
        // Docker on a v1 host with the systemd driver.
        let c = format!("4:memory:/system.slice/docker-{CID}.scope\n1:name=systemd:/system.slice/docker-{CID}.scope\n");
        let (id, _) = parse_proc_cgroup(&c).unwrap();
        assert_eq!(id.container_id, CID);
    }

    #[test]
    fn proc_cgroup_host_process() {
        assert!(parse_proc_cgroup("0::/system.slice/sshd.service\n").is_none());
        assert!(parse_proc_cgroup("").is_none());
        assert!(parse_proc_cgroup("garbage").is_none());
        // this machine's own format (v1 + hybrid, no container)
        assert!(parse_proc_cgroup(
            "9:name=systemd:/\n4:memory:/process_api/cdbdd7e03cb01927a2f9405b9198a124\n0::/\n"
        )
        .is_none());
    }

    #[test]
    fn uuid_normalisation() {
        assert_eq!(as_uuid(UID_SYSTEMD).as_deref(), Some(UID));
        assert_eq!(as_uuid(&UID.to_uppercase()).as_deref(), Some(UID));
        assert_eq!(as_uuid("2b1b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6"), None);
        assert_eq!(as_uuid("2b1b3c4dx5e6f-4a8b-9c0d-1e2f3a4b5c6d"), None);
    }
}
