//! The census skeleton (bpf/census.bpf.c): the `iter/bpf_map`,
//! `iter/bpf_prog`, `iter/task_file` and `iter/task_vma` programs, loaded
//! and attached, and their output read and decoded.
pub mod records;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use libbpf_rs::Link;

pub use records::{
    decode_progs, AttachFile, Creator, FileRecord, InflightRecord, LinkDevice, LinkRecord,
    LinkTarget, MapRecord, NetfilterHook, ObjectFile, ObjectKind, ProgRecord, RingFd, RingObject,
    TaskFiles, UringRecord,
};

use super::{iter, load};
use crate::sys;

#[allow(clippy::all, missing_docs, non_camel_case_types, unused)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/census.skel.rs"));
}
use skel::{CensusSkel, CensusSkelBuilder};

/// Kernel features the census found in the kernel's BTF at load time.
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// iter/task_vma (5.15+): mmap holders.
    pub task_vma: bool,
    /// bpf_map_sum_elem_count kfunc (6.6+): live entries of hash maps.
    pub elem_count: bool,
    /// iter/bpf_map_elem loaded (5.9+, where the kernel's policy allows it):
    /// hash maps are counted by an in-kernel walk where the kfunc is missing.
    pub elem_iter: bool,
    /// Memory cgroup accounting of maps (5.11+ with CONFIG_MEMCG): the
    /// creator cgroup of every map (`struct bpf_map` has objcg or memcg).
    pub map_memcg: bool,
    /// Why the kernel records no creator although its layout could (a boot
    /// parameter; `map_memcg` is then false).
    pub map_memcg_off: Option<String>,
    /// iter/unix (5.17+): files in flight in unix sockets' queues. Set by
    /// the census when it loads the in-flight object.
    pub iter_unix: bool,
    /// iter/bpf_prog (5.9+): the census of programs.
    pub iter_prog: bool,
    /// iter/bpf_link (5.19+): links listed by an iterator (before, by one
    /// bpf() query each).
    pub iter_link: bool,
    /// The bpf_loop helper (5.17+): io_uring tables can be walked. Its
    /// helper id is in the kernel's BTF (`enum bpf_func_id`) exactly where
    /// it exists.
    pub bpf_loop: bool,
}

impl Features {
    fn probe(btf: &std::path::Path) -> anyhow::Result<Features> {
        use libbpf_rs::btf::types::{Enum, Func, Struct};
        let btf = load::read_btf(btf)?;
        let field = |name: &str| {
            btf.type_by_name::<Struct>("bpf_map").is_some_and(|s| {
                s.iter()
                    .any(|m| m.name.is_some_and(|n| n == std::ffi::OsStr::new(name)))
            })
        };
        let objcg = field("objcg");
        let layout = objcg || field("memcg");
        let map_memcg_off = if layout {
            let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
            accounting_off(&cmdline, objcg, kernel_release())
        } else {
            None
        };
        if let Some(why) = &map_memcg_off {
            tracing::warn!(reason = %why, "maps are not charged to their creator's memory cgroup: creators unknown (bpfmap_feature_available{{feature=\"map_memcg\"}} 0)");
        }
        Ok(Features {
            // The iterator's context struct exists exactly where the iterator does.
            task_vma: btf.type_by_name::<Struct>("bpf_iter__task_vma").is_some(),
            elem_count: btf.type_by_name::<Func>("bpf_map_sum_elem_count").is_some(),
            elem_iter: false,
            map_memcg: layout && map_memcg_off.is_none(),
            map_memcg_off,
            iter_unix: btf.type_by_name::<Struct>("bpf_iter__unix").is_some(),
            iter_prog: btf.type_by_name::<Struct>("bpf_iter__bpf_prog").is_some(),
            iter_link: btf.type_by_name::<Struct>("bpf_iter__bpf_link").is_some(),
            bpf_loop: btf.type_by_name::<Enum>("bpf_func_id").is_some_and(|e| {
                e.iter().any(|m| {
                    m.name
                        .is_some_and(|n| n == std::ffi::OsStr::new("BPF_FUNC_loop"))
                })
            }),
        })
    }
}

/// Why a kernel whose `struct bpf_map` has the memcg field still records no
/// creator, from its boot command line (`/proc/cmdline`): `objcg` is the
/// 5.19+ layout, `release` the kernel's (major, minor). Kernel facts
/// (mm/memcontrol.c, kernel/bpf/syscall.c):
/// - `cgroup_disable=memory` turns the memory controller off: no map is
///   charged (`get_obj_cgroup_from_current` and `get_mem_cgroup_from_mm`
///   return NULL), on every layout;
/// - `cgroup.memory=nokmem` onlines no memcg's objcg, so on the objcg
///   layout every map reads as the root cgroup's; the 5.11-5.18 layout
///   still records `map->memcg`;
/// - `cgroup.memory=nobpf` (6.4+) skips `bpf_map_save_memcg`: objcg NULL.
///
/// In each case every map would read as the host's, a guess: the creator
/// is unknown instead.
pub fn accounting_off(cmdline: &str, objcg: bool, release: (u32, u32)) -> Option<String> {
    let mut why = None;
    for arg in cmdline.split_ascii_whitespace() {
        let Some((k, v)) = arg.split_once('=') else {
            continue;
        };
        let tokens = || v.split(',').map(str::trim);
        match k {
            "cgroup_disable" if tokens().any(|t| t == "memory") => {
                return Some("the kernel was booted with cgroup_disable=memory".into())
            }
            "cgroup.memory" => {
                if objcg && tokens().any(|t| t == "nokmem") {
                    why = Some("the kernel was booted with cgroup.memory=nokmem".to_string());
                } else if release >= (6, 4) && tokens().any(|t| t == "nobpf") {
                    why = Some("the kernel was booted with cgroup.memory=nobpf".to_string());
                }
            }
            _ => {}
        }
    }
    why
}

/// The running kernel's (major, minor), (0, 0) if unreadable.
fn kernel_release() -> (u32, u32) {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = r.trim().split(|c: char| !c.is_ascii_digit());
    let mut n = || it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (n(), n())
}

/// Which task walks to load.
#[derive(Debug, Clone)]
pub struct LoadOpts {
    pub btf_path: Option<PathBuf>,
    /// iter/task_file: map files in fd tables.
    pub files: bool,
    /// iter/task_vma: map files behind vmas (where the kernel has it).
    pub mmaps: bool,
    /// iter/bpf_map_elem: element counts of hash maps by iteration.
    pub count_elems: bool,
    /// iter/bpf_prog: every program (where the kernel has it).
    pub progs: bool,
    /// iter/bpf_link: every link (where the kernel has it).
    pub links: bool,
}

/// The loaded and attached census programs.
pub struct Programs {
    skel: CensusSkel<'static>,
    map_link: Link,
    file_link: Option<Link>,
    vma_link: Option<Link>,
    prog_link: Option<Link>,
    link_link: Option<Link>,
    own_ids: Vec<u32>,
    own_prog_ids: Vec<u32>,
    features: Features,
}

impl Programs {
    /// Load and attach. Fails with an actionable message on missing
    /// privileges or BTF.
    pub fn load(opts: &LoadOpts) -> anyhow::Result<Programs> {
        load::require_capabilities()?;
        let btf = load::btf_path(opts.btf_path.as_deref())?;
        let features = Features::probe(&btf)?;
        let vmas = features.task_vma && opts.mmaps;
        let progs = features.iter_prog && opts.progs;
        let links = features.iter_link && opts.links;
        let open_with = |count_elems: bool| -> anyhow::Result<CensusSkel<'static>> {
            load::load_counted("census", || {
                let mut open = load::open(
                    CensusSkelBuilder::default(),
                    opts.btf_path.as_ref().map(|_| btf.as_path()),
                    "census",
                )?;
                open.progs.dump_map.set_autoload(!features.elem_count);
                open.progs.dump_map_count.set_autoload(features.elem_count);
                open.progs.dump_task_vma.set_autoload(vmas);
                open.progs.dump_task_file.set_autoload(opts.files);
                open.progs.dump_prog.set_autoload(progs);
                open.progs.dump_link.set_autoload(links);
                open.progs.count_elems.set_autoload(count_elems);
                Ok(open)
            })
            .map_err(|e| load::load_error("census", e))
        };
        // iter/bpf_map_elem is optional: a kernel (or its security policy)
        // that refuses it loses only the in-kernel element walk.
        let (skel, elem_iter) = if opts.count_elems {
            match crate::logging::expected_failures(|| open_with(true)) {
                Ok(s) => (s, true),
                Err(e) => {
                    tracing::info!(error = %format!("{e:#}"), "iter/bpf_map_elem refused by this kernel: hash maps are counted with GET_NEXT_KEY from user space instead (slower; bpfmap_map_entries_maps{{method=\"next_key\"}})");
                    (open_with(false)?, false)
                }
            }
        } else {
            (open_with(false)?, false)
        };
        let mut features = features;
        features.elem_iter = elem_iter;
        let map_link = if features.elem_count {
            skel.progs.dump_map_count.attach()
        } else {
            skel.progs.dump_map.attach()
        }
        .context("attaching iter/bpf_map")?;
        let file_link = opts
            .files
            .then(|| skel.progs.dump_task_file.attach())
            .transpose()
            .context("attaching iter/task_file")?;
        let vma_link = vmas
            .then(|| skel.progs.dump_task_vma.attach())
            .transpose()
            .context("attaching iter/task_vma")?;
        let prog_link = progs
            .then(|| skel.progs.dump_prog.attach())
            .transpose()
            .context("attaching iter/bpf_prog")?;
        let link_link = links
            .then(|| skel.progs.dump_link.attach())
            .transpose()
            .context("attaching iter/bpf_link")?;
        let own_ids = sys::object_map_ids(libbpf_rs::skel::Skel::object(&skel));
        let own_prog_ids = sys::object_prog_ids(libbpf_rs::skel::Skel::object(&skel));
        let p = Programs {
            skel,
            map_link,
            file_link,
            vma_link,
            prog_link,
            link_link,
            own_ids,
            own_prog_ids,
            features,
        };
        p.settle_probe_maps();
        Ok(p)
    }

    /// libbpf's feature probes create and close small maps ("libbpf_global",
    /// "libbpf_det_bind") while loading; the kernel frees them a moment later
    /// (deferred prog/map release). Wait, bounded, until this load's probe
    /// maps are gone so the first census does not count the exporter's own
    /// debris.
    fn settle_probe_maps(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = Vec::new();
        while Instant::now() < deadline {
            let Ok(maps) = self.read_maps(&mut buf) else {
                return;
            };
            let max_own = self.own_ids.iter().copied().max().unwrap_or(0);
            let lingering = maps.iter().any(|m| {
                m.usercnt == 0 && m.id.abs_diff(max_own) <= 8 && m.name.starts_with("libbpf_")
            });
            if !lingering {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn features(&self) -> &Features {
        &self.features
    }

    /// The inodes of the sockets whose fds the next task_file walk reports
    /// (as records with map id 0): the receivers of files in flight.
    pub fn set_receiver_sockets(&mut self, inos: &[u64]) -> anyhow::Result<()> {
        use libbpf_rs::MapCore;
        let map = &self.skel.maps.receiver_sockets;
        let old: Vec<Vec<u8>> = map.keys().collect();
        for k in old {
            let _ = map.delete(&k);
        }
        let cap = map.info().map(|i| i.info.max_entries as usize).unwrap_or(0);
        for ino in inos.iter().take(cap) {
            map.update(&ino.to_ne_bytes(), &[1u8], libbpf_rs::MapFlags::ANY)
                .context("updating receiver_sockets")?;
        }
        if let Some(bss) = self.skel.maps.bss_data.as_deref_mut() {
            bss.want_sockets = (!inos.is_empty()) as u32;
        }
        if inos.len() > cap {
            anyhow::bail!(
                "{} receiving sockets, more than the {cap} whose owners one walk can name",
                inos.len()
            );
        }
        Ok(())
    }

    /// Map ids of the census's own BPF objects.
    pub fn own_map_ids(&self) -> &[u32] {
        &self.own_ids
    }

    /// Program ids of the census's own programs.
    pub fn own_prog_ids(&self) -> &[u32] {
        &self.own_prog_ids
    }

    /// One `iter/bpf_map` walk, decoded (`buf` is kept by the caller).
    pub fn read_maps(&self, buf: &mut Vec<u8>) -> anyhow::Result<Vec<MapRecord>> {
        self.read_maps_into(buf, Vec::new())
    }

    /// As [`Programs::read_maps`], into `spare`'s memory.
    pub fn read_maps_into(
        &self,
        buf: &mut Vec<u8>,
        spare: Vec<MapRecord>,
    ) -> anyhow::Result<Vec<MapRecord>> {
        let _ = &self.skel;
        Ok(records::decode_maps_into(
            iter::read(&self.map_link, buf)?,
            spare,
        )?)
    }

    /// One `iter/bpf_prog` walk, decoded; None when it is not loaded (off,
    /// or the kernel lacks it).
    pub fn read_progs(&self, buf: &mut Vec<u8>) -> Option<anyhow::Result<Vec<ProgRecord>>> {
        let link = self.prog_link.as_ref()?;
        // SAFETY: sysconf reads a constant of the running kernel.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        Some(iter::read(link, buf).and_then(|b| Ok(decode_progs(b, page)?)))
    }

    /// One `iter/bpf_link` walk, decoded; None when it is not loaded (off,
    /// or the kernel lacks it).
    pub fn read_links(&self, buf: &mut Vec<u8>) -> Option<anyhow::Result<Vec<LinkRecord>>> {
        let link = self.link_link.as_ref()?;
        Some(iter::read(link, buf).and_then(|b| Ok(records::decode_links(b)?)))
    }

    /// A new `iter/task_file` walk, or None when it is not loaded. It is
    /// read with [`read_files`], on any thread.
    pub fn open_files(&self) -> Option<anyhow::Result<std::fs::File>> {
        self.file_link.as_ref().map(iter::open)
    }

    /// A new `iter/task_vma` walk, or None when it is not loaded (off, or
    /// the kernel lacks it).
    pub fn open_vmas(&self) -> Option<anyhow::Result<std::fs::File>> {
        self.vma_link.as_ref().map(iter::open)
    }
}

impl Programs {
    /// The live elements of one hash-family map (hash, percpu_hash,
    /// lru_hash, lru_percpu_hash), counted by an `iter/bpf_map_elem` walk;
    /// `None` when `deadline` passed first (the walk is checked every
    /// ELEM_WALK_CHUNK elements). The link and the iterator exist only
    /// during the call: they hold the map while it runs and are closed
    /// before it returns.
    pub fn count_elements(
        &self,
        map: std::os::fd::BorrowedFd<'_>,
        deadline: std::time::Instant,
    ) -> anyhow::Result<Option<u64>> {
        let link = self
            .skel
            .progs
            .count_elems
            .attach_iter(map)
            .context("attaching iter/bpf_map_elem")?;
        iter::read_count_walk(iter::open(&link)?, deadline)
    }
}

/// Read and decode a task walk opened by [`Programs::open_files`] or
/// [`Programs::open_vmas`], with the map files in `spare`'s memory (its
/// records are dropped first).
pub fn read_files_into(
    f: std::fs::File,
    buf: &mut Vec<u8>,
    spare: Vec<FileRecord>,
) -> anyhow::Result<TaskFiles> {
    Ok(records::decode_files_into(iter::read_file(f, buf)?, spare)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_parameters_that_stop_map_charging_make_the_creator_unknown() {
        let new = (6, 18);
        assert_eq!(
            accounting_off("BOOT_IMAGE=/vmlinuz root=/dev/vda ro quiet", true, new),
            None
        );
        for (cmdline, objcg, rel, want) in [
            (
                "ro cgroup_disable=memory",
                false,
                (5, 15),
                Some("cgroup_disable=memory"),
            ),
            (
                "cgroup_disable=cpu,memory",
                true,
                new,
                Some("cgroup_disable=memory"),
            ),
            (
                "cgroup.memory=nokmem",
                true,
                new,
                Some("cgroup.memory=nokmem"),
            ),
            // The memcg layout (5.11-5.18) still records map->memcg.
            ("cgroup.memory=nokmem", false, (5, 15), None),
            (
                "cgroup.memory=nosocket,nobpf",
                true,
                new,
                Some("cgroup.memory=nobpf"),
            ),
            // nobpf is unknown before 6.4 (ignored by the kernel).
            ("cgroup.memory=nobpf", true, (6, 1), None),
            ("cgroup.memory=nosocket", true, new, None),
            ("cgroup_disable=cpu", true, new, None),
            ("xcgroup.memory=nobpf", true, new, None),
        ] {
            let got = accounting_off(cmdline, objcg, rel);
            match want {
                None => assert_eq!(got, None, "{cmdline}"),
                Some(w) => assert!(
                    got.as_deref().is_some_and(|g| g.ends_with(w)),
                    "{cmdline}: {got:?}"
                ),
            }
        }
    }
}
