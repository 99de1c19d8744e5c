//! Maps that outlive their pod: created from a memory cgroup named like a
//! kubelet pod's container, pinned, then the container's and the pod's
//! cgroups are removed (the simulator moves itself back first), so the
//! kernel reparents the maps' charge and the census flags their creator
//! gone.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::census::creators::memcg_mount;

/// The simulator's memory cgroup path (relative to the hierarchy's root)
/// from `/proc/self/cgroup` text: the v1 `memory` line, else the `0::` line.
pub(super) fn own_memcg(proc_cgroup: &str, v1: bool) -> Option<String> {
    proc_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
        let hit = if v1 {
            ctrl.split(',').any(|c| c == "memory")
        } else {
            ctrl.is_empty()
        };
        hit.then(|| path.to_string())
    })
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    use std::io::Read;
    let mut b = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|b| format!("{b:02x}")).collect())
}

fn join(root: &Path, rel: &str) -> PathBuf {
    root.join(rel.trim_start_matches('/'))
}

/// Run `create` with this process moved into
/// `<memcg root>/bpfmap-simulate-<pid>/kubepods/besteffort/pod<uid>/<id>`, then
/// move back and remove the container's and the pod's cgroups. Returns the
/// directories left to remove on exit (deepest last).
pub(super) fn in_pod_cgroup(
    create: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<PathBuf>> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let Some(mount) = memcg_mount(&mi) else {
        bail!("--leak-orphans needs a mounted memory cgroup hierarchy (cgroup2, or the v1 memory controller) at /sys/fs/cgroup; pass --leak-orphans 0 without one");
    };
    let own = own_memcg(&std::fs::read_to_string("/proc/self/cgroup")?, mount.v1)
        .context("finding our own memory cgroup in /proc/self/cgroup")?;
    let uid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")?
        .trim()
        .to_string();
    let top = mount
        .root
        .join(format!("bpfmap-simulate-{}", std::process::id()));
    let kube = top.join("kubepods");
    let qos = kube.join("besteffort");
    let pod = qos.join(format!("pod{uid}"));
    let ctr = pod.join(random_hex(32)?);
    std::fs::create_dir_all(&ctr)
        .with_context(|| format!("creating memory cgroup {} (run as root)", ctr.display()))?;
    if !mount.v1 {
        for d in [&mount.root, &top, &kube, &qos, &pod] {
            let _ = std::fs::write(d.join("cgroup.subtree_control"), "+memory");
        }
    }
    let pid = std::process::id().to_string();
    let back = join(&mount.root, &own).join("cgroup.procs");
    std::fs::write(ctr.join("cgroup.procs"), &pid)
        .with_context(|| format!("moving into {}", ctr.display()))?;
    let made = create();
    std::fs::write(&back, &pid).with_context(|| format!("moving back to {}", back.display()))?;
    for d in [&ctr, &pod] {
        std::fs::remove_dir(d).with_context(|| format!("removing cgroup {}", d.display()))?;
    }
    made?;
    Ok(vec![top, kube, qos])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_memcg_from_v1_and_v2_lines() {
        let t = "5:devices:/\n4:memory:/process_api/abc\n0::/user.slice\n";
        assert_eq!(own_memcg(t, true).as_deref(), Some("/process_api/abc"));
        assert_eq!(own_memcg(t, false).as_deref(), Some("/user.slice"));
        assert_eq!(own_memcg("3:cpu,cpuacct:/x\n", true), None);
    }
}
