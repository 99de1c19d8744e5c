//! Maps that outlive their pod: created from a memory cgroup named like a
//! kubelet pod's container, pinned, then the container's and the pod's
//! cgroups are removed (the simulator moves itself back first), so the
//! kernel reparents the maps' charge and the census flags their creator
//! gone. Direct orphans are pinned themselves; chained orphans are kept
//! alive only through a pinned program that uses them or a pinned outer map
//! whose slot holds them.
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use libbpf_rs::{libbpf_sys, MapCore, MapFlags, MapHandle, MapType, ObjectBuilder, ProgramHandle};

use super::map_id;
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
        bail!("--leak-orphans and --leak-orphan-chains need a mounted memory cgroup hierarchy (cgroup2, or the v1 memory controller) at /sys/fs/cgroup; pass --leak-orphans 0 --leak-orphan-chains 0 without one");
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
    if let Err(e) = made {
        // Nothing of ours is left in them: remove them now, deepest first.
        for d in [&qos, &kube, &top] {
            let _ = std::fs::remove_dir(d);
        }
        return Err(e);
    }
    Ok(vec![top, kube, qos])
}

/// One object the chained-orphan leak made. `pin` is set on the objects
/// that are pinned (the roots of the chains); `via` names what holds the
/// others (`program:<id>` or `map:<id>`).
#[derive(Debug)]
pub(super) struct Made {
    pub kind: &'static str,
    pub id: u32,
    pub name: String,
    pub pin: Option<PathBuf>,
    pub via: Option<String>,
}

/// Chain set `i` under `pin_dir`:
/// - program `<p>_oprog<i>` (a socket filter, not attached) of object
///   `<p>_op<i>`, using that object's two maps (`<p>_op<i>.data`, `.bss`),
///   only the program pinned: the maps are kept alive through it;
/// - outer map `<p>_oout<i>` (array of maps, pinned) whose slot 0 holds the
///   hash map `<p>_oin<i>` made by `create_map` with `entries` slots: the
///   inner map is kept alive through it.
///
/// Every fd is closed on return, so the pins are the only roots.
/// Whatever was made is pushed to `made` as it is made, so a failure part
/// way still leaves every pin known to the caller for cleanup.
pub(super) fn chains(
    p: &str,
    i: u32,
    pin_dir: &Path,
    entries: u32,
    create_map: &dyn Fn(&str, u32) -> anyhow::Result<MapHandle>,
    made: &mut Vec<Made>,
) -> anyhow::Result<()> {
    let pname = format!("{p}_oprog{i}");
    let oname = format!("{p}_op{i}");
    let obj = ObjectBuilder::default()
        .name(&oname)
        .and_then(|b| b.open_memory(&super::elf::object(&pname)))
        .and_then(|o| o.load())
        .map_err(|e| anyhow::anyhow!("loading BPF object {oname:?} (program {pname}): {e}"))?;
    let mut prog = obj
        .progs_mut()
        .next()
        .context("the BPF object has no program")?;
    let ppath = pin_dir.join(&pname);
    prog.pin(&ppath)
        .map_err(|e| anyhow::anyhow!("pinning program {pname} at {}: {e}", ppath.display()))?;
    let pid = ProgramHandle::try_from(&prog).map(|h| h.id()).unwrap_or(0);
    made.push(Made {
        kind: "program",
        id: pid,
        name: pname,
        pin: Some(ppath),
        via: None,
    });
    for m in obj.maps() {
        made.push(Made {
            kind: "map",
            id: m.info().map(|i| i.info.id).unwrap_or(0),
            name: m.name().to_string_lossy().into_owned(),
            pin: None,
            via: Some(format!("program:{pid}")),
        });
    }
    drop(obj);

    let iname = format!("{p}_oin{i}");
    let inner = create_map(&iname, entries)?;
    let oname = format!("{p}_oout{i}");
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        inner_map_fd: inner.as_fd().as_raw_fd() as u32,
        ..Default::default()
    };
    let mut outer = MapHandle::create(MapType::ArrayOfMaps, Some(&oname), 4, 4, 1, &opts)
        .map_err(|e| anyhow::anyhow!("creating array of maps {oname:?}: {e}"))?;
    let slot = (inner.as_fd().as_raw_fd() as u32).to_ne_bytes();
    outer
        .update(&0u32.to_ne_bytes(), &slot, MapFlags::ANY)
        .with_context(|| format!("putting {iname} into slot 0 of {oname}"))?;
    let opath = pin_dir.join(&oname);
    outer
        .pin(&opath)
        .map_err(|e| anyhow::anyhow!("pinning map {oname} at {}: {e}", opath.display()))?;
    made.push(Made {
        kind: "map",
        id: map_id(&outer),
        name: oname,
        pin: Some(opath),
        via: None,
    });
    made.push(Made {
        kind: "map",
        id: map_id(&inner),
        name: iname,
        pin: None,
        via: Some(format!("map:{}", map_id(&outer))),
    });
    Ok(())
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
