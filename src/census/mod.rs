//! The census: every live map, what holds it, and every bpffs pin, taken
//! afresh on each scrape with CO-RE BPF iterators plus a few bpf() queries.
pub mod bpffs;
pub mod decode;
pub mod fdinfo;
pub mod holders;
pub mod names;
pub mod render;

use std::collections::HashMap;
use std::io::Read;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapCore};

pub use decode::{FileRecord, MapRecord};
pub use holders::{Holders, ProcessHolder};

use crate::skel::{CensusSkel, CensusSkelBuilder};
use crate::sys;

/// Map id -> value with a fast hasher: per-map tables have 100k entries on
/// big nodes and SipHash dominated the holder arithmetic there.
pub type IdMap<V> = HashMap<u32, V, rustc_hash::FxBuildHasher>;

/// Which parts of the census to run (each is a `--collector.<name>`).
#[derive(Debug, Clone)]
pub struct Parts {
    pub memory: bool,
    pub files: bool,
    pub mmaps: bool,
    pub programs: bool,
    pub outer_maps: bool,
    pub links: bool,
    pub pins: bool,
}

impl Default for Parts {
    fn default() -> Self {
        Parts {
            memory: true,
            files: true,
            mmaps: true,
            programs: true,
            outer_maps: true,
            links: true,
            pins: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CensusOpts {
    pub btf_path: Option<PathBuf>,
    pub parts: Parts,
    pub pins_max_entries: usize,
    pub pins_max_depth: usize,
}

impl Default for CensusOpts {
    fn default() -> Self {
        CensusOpts {
            btf_path: None,
            parts: Parts::default(),
            pins_max_entries: 100_000,
            pins_max_depth: 32,
        }
    }
}

/// Kernel features the census probed at load time.
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// iter/task_vma (5.15+): mmap holders.
    pub task_vma: bool,
    /// bpf_map_sum_elem_count kfunc (6.6+): live entries of hash maps.
    pub elem_count: bool,
}

/// Outcome of one census part in one scrape.
#[derive(Debug, Clone)]
pub struct PartResult {
    pub name: &'static str,
    pub ok: bool,
    pub seconds: f64,
    pub error: Option<String>,
}

/// One scrape's census.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Every live map on the node except the exporter's own.
    pub maps: Vec<MapRecord>,
    /// The exporter's own maps (reported apart, never as the node's).
    pub own: Vec<MapRecord>,
    /// Map id -> bytes, as fdinfo `memlock:` reports it.
    pub memory: IdMap<u64>,
    /// Map id -> holders by kind.
    pub holders: IdMap<Holders>,
    /// Processes holding map files (fd tables and mmaps).
    pub processes: Vec<ProcessHolder>,
    /// bpffs inventory, when the pins part ran.
    pub inventory: Option<bpffs::Inventory>,
    /// Whether the map census itself succeeded.
    pub maps_ok: bool,
    pub parts: Vec<PartResult>,
    pub features: Features,
}

struct MemEntry {
    bytes: u64,
    elem_count: Option<i64>,
}

/// Loaded census programs and the state kept between scrapes (a memory
/// cache keyed by map id: ids are never reused before they wrap).
pub struct Census {
    skel: CensusSkel<'static>,
    map_link: Link,
    file_link: Option<Link>,
    vma_link: Option<Link>,
    own_ids: Vec<u32>,
    features: Features,
    opts: CensusOpts,
    mem_cache: IdMap<MemEntry>,
    /// Pinned inodes identified by earlier pin walks.
    pin_cache: bpffs::IdentCache,
    /// Iterator output buffers, kept between scrapes (maps, files, vmas).
    bufs: [Vec<u8>; 3],
}

/// Missing capabilities, named the way `setcap` and securityContext name them.
pub fn missing_capabilities() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    const SYS_ADMIN: u32 = 21;
    const PERFMON: u32 = 38;
    const BPF: u32 = 39;
    let mut missing = Vec::new();
    if !has(BPF) && !has(SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(PERFMON) && !has(SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if !has(SYS_ADMIN) {
        missing.push("CAP_SYS_ADMIN");
    }
    missing
}

fn privilege_error(missing: &[&str]) -> anyhow::Error {
    let caps = missing.join(", ");
    let lower: Vec<String> = missing.iter().map(|c| c.to_lowercase()).collect();
    anyhow::anyhow!(
        "missing capabilities: {caps}. bpfmap-exporter needs CAP_BPF and CAP_PERFMON to load its iterator programs, and \
         CAP_SYS_ADMIN for BPF_*_GET_FD_BY_ID (per-map memory, program and link holders). Grant them: run as root; or \
         in Kubernetes add them to the container securityContext (capabilities: add: [BPF, PERFMON, SYS_ADMIN]; see \
         deploy/daemonset.yaml); or on a host: sudo setcap {}+ep $(command -v bpfmap-exporter)",
        lower.join(",")
    )
}

/// The BTF file the kernel-type checks and CO-RE use.
fn btf_path(opts: &CensusOpts) -> anyhow::Result<PathBuf> {
    match &opts.btf_path {
        Some(p) if p.exists() => Ok(p.clone()),
        Some(p) => bail!(
            "--btf.path {}: no such file. Pass the BTF of the running kernel (for example one from btfhub for `uname -r`)",
            p.display()
        ),
        None => {
            let p = PathBuf::from("/sys/kernel/btf/vmlinux");
            if p.exists() {
                Ok(p)
            } else {
                bail!(
                    "the kernel exposes no BTF at /sys/kernel/btf/vmlinux (built without CONFIG_DEBUG_INFO_BTF). \
                     Supply a BTF file for this exact kernel with --btf.path=<file> (btfhub publishes them for many distribution kernels)"
                )
            }
        }
    }
}

fn probe_features(btf: &std::path::Path) -> anyhow::Result<Features> {
    use libbpf_rs::btf::types::{Func, Struct};
    let btf = libbpf_rs::btf::Btf::from_path(btf)
        .with_context(|| format!("reading BTF from {}", btf.display()))?;
    Ok(Features {
        // The iterator's context struct exists exactly where the iterator does.
        task_vma: btf.type_by_name::<Struct>("bpf_iter__task_vma").is_some(),
        elem_count: btf.type_by_name::<Func>("bpf_map_sum_elem_count").is_some(),
    })
}

fn read_iter(link: &Link) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_iter_into(link, &mut buf)?;
    Ok(buf)
}

/// Read an iterator's whole output into `buf` (cleared first). The census
/// keeps these buffers from one scrape to the next: growing a fresh buffer
/// to megabytes on every scrape (page faults, copies) was a fifth of a
/// scrape's time at 10k maps.
fn read_iter_into<'a>(link: &Link, buf: &'a mut Vec<u8>) -> anyhow::Result<&'a [u8]> {
    read_iter_file(open_iter(link)?, buf)
}

/// A new iterator instance on `link`, as a plain file (readable on any thread).
fn open_iter(link: &Link) -> anyhow::Result<std::fs::File> {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd};
    // SAFETY: bpf_iter_create takes a link fd and returns a new fd or -errno.
    let fd = unsafe { libbpf_sys::bpf_iter_create(link.as_fd().as_raw_fd()) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd)).context("creating iterator");
    }
    // SAFETY: `fd` is a fresh fd that nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

fn read_iter_file(mut f: std::fs::File, buf: &mut Vec<u8>) -> anyhow::Result<&[u8]> {
    buf.clear();
    f.read_to_end(buf).context("reading iterator")?;
    Ok(buf)
}

fn timed<T>(
    parts: &mut Vec<PartResult>,
    name: &'static str,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> Option<T> {
    let t = Instant::now();
    let r = f();
    record(parts, name, t.elapsed().as_secs_f64(), r)
}

/// Record a part's outcome (logging a failure) and pass its value on.
fn record<T>(
    parts: &mut Vec<PartResult>,
    name: &'static str,
    seconds: f64,
    r: anyhow::Result<T>,
) -> Option<T> {
    match r {
        Ok(v) => {
            parts.push(PartResult {
                name,
                ok: true,
                seconds,
                error: None,
            });
            Some(v)
        }
        Err(e) => {
            tracing::warn!(collector = name, error = %format!("{e:#}"), "collector failed");
            parts.push(PartResult {
                name,
                ok: false,
                seconds,
                error: Some(format!("{e:#}")),
            });
            None
        }
    }
}

impl Census {
    /// Load and attach the census iterators. Fails with an actionable message
    /// on missing privileges or BTF.
    pub fn load(opts: CensusOpts) -> anyhow::Result<Census> {
        let missing = missing_capabilities();
        if !missing.is_empty() {
            return Err(privilege_error(&missing));
        }
        let btf = btf_path(&opts)?;
        let features = probe_features(&btf)?;
        let mut builder = CensusSkelBuilder::default();
        if opts.btf_path.is_some() {
            builder.obj_builder.btf_custom_path(&btf)?;
        }
        // The skeleton borrows its object storage for its whole life; the
        // census lives as long as the exporter, so the few bytes are leaked
        // once per load (fds and maps are still closed on drop).
        let storage: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = builder.open(storage).context("opening census BPF object")?;
        open.progs.dump_map.set_autoload(!features.elem_count);
        open.progs.dump_map_count.set_autoload(features.elem_count);
        open.progs
            .dump_task_vma
            .set_autoload(features.task_vma && opts.parts.mmaps);
        open.progs.dump_task_file.set_autoload(opts.parts.files);
        let skel = open.load().map_err(|e| {
            let missing = missing_capabilities();
            if !missing.is_empty() {
                privilege_error(&missing)
            } else {
                anyhow::anyhow!("loading census BPF programs: {e} (see the libbpf log lines above for the verifier's reason)")
            }
        })?;
        let map_link = if features.elem_count {
            skel.progs.dump_map_count.attach()
        } else {
            skel.progs.dump_map.attach()
        }
        .context("attaching iter/bpf_map")?;
        let file_link = if opts.parts.files {
            Some(
                skel.progs
                    .dump_task_file
                    .attach()
                    .context("attaching iter/task_file")?,
            )
        } else {
            None
        };
        let vma_link = if features.task_vma && opts.parts.mmaps {
            Some(
                skel.progs
                    .dump_task_vma
                    .attach()
                    .context("attaching iter/task_vma")?,
            )
        } else {
            None
        };
        let own_ids = sys::object_map_ids(skel.object());
        let census = Census {
            skel,
            map_link,
            file_link,
            vma_link,
            own_ids,
            features,
            opts,
            mem_cache: IdMap::default(),
            bufs: Default::default(),
            pin_cache: Default::default(),
        };
        census.settle_probe_maps();
        Ok(census)
    }

    /// libbpf's feature probes create and close small maps ("libbpf_global",
    /// "libbpf_det_bind") while loading; the kernel frees them a moment later
    /// (deferred prog/map release). Wait, bounded, until our load's probe maps
    /// are gone so the first census does not count the exporter's own debris.
    fn settle_probe_maps(&self) {
        let deadline = Instant::now() + std::time::Duration::from_secs(2);
        while Instant::now() < deadline {
            let Ok(buf) = read_iter(&self.map_link) else {
                return;
            };
            let Ok(maps) = decode::decode_maps(&buf) else {
                return;
            };
            let max_own = self.own_ids.iter().copied().max().unwrap_or(0);
            let lingering = maps.iter().any(|m| {
                m.usercnt == 0 && m.id.abs_diff(max_own) <= 8 && m.name.starts_with("libbpf_")
            });
            if !lingering {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub fn features(&self) -> &Features {
        &self.features
    }

    /// Map ids of the census's own BPF objects.
    pub fn own_map_ids(&self) -> &[u32] {
        &self.own_ids
    }

    /// Take one census. `extra_own` are map ids of other exporter parts
    /// (the lifecycle collector), reported as the exporter's own.
    pub fn take(&mut self, extra_own: &[u32]) -> Snapshot {
        let _ = &self.skel;
        let mut parts = Vec::new();
        let p = self.opts.parts.clone();
        let mut snap = Snapshot {
            features: self.features.clone(),
            ..Default::default()
        };
        let own: rustc_hash::FxHashSet<u32> =
            self.own_ids.iter().chain(extra_own).copied().collect();

        let [map_buf, file_buf, vma_buf] = &mut self.bufs;
        let file_iter = self.file_link.as_ref().map(open_iter);
        let vma_iter = match (&self.vma_link, p.mmaps) {
            (Some(link), true) => Some(open_iter(link)),
            _ => None,
        };
        // The two task walks (and the per-process arithmetic, which needs
        // only them) run on a second thread while this one walks and decodes
        // the maps: the walks are mostly kernel time.
        let own_ref = &own;
        let (maps, files, vmas, processes) = std::thread::scope(|scope| {
            let tasks = scope.spawn(|| {
                let walk =
                    |name: &'static str, it: anyhow::Result<std::fs::File>, buf: &mut Vec<u8>| {
                        let t = Instant::now();
                        let r = it.and_then(|f| {
                            Ok(not_own(
                                decode::decode_files(read_iter_file(f, buf)?)?,
                                own_ref,
                            ))
                        });
                        (name, r, t.elapsed().as_secs_f64())
                    };
                let files = file_iter.map(|it| walk("files", it, file_buf));
                let vmas = vma_iter.map(|it| walk("mmaps", it, vma_buf));
                let processes = holders::processes(ok_files(&files), ok_files(&vmas));
                (files, vmas, processes)
            });
            let maps = timed(&mut parts, "maps", || {
                Ok(decode::decode_maps(read_iter_into(
                    &self.map_link,
                    map_buf,
                )?)?)
            });
            let (files, vmas, processes) = tasks.join().unwrap_or_else(|_| {
                let failed = |n| (n, Err(anyhow::anyhow!("task walk thread panicked")), 0.0);
                (Some(failed("files")), Some(failed("mmaps")), Vec::new())
            });
            (maps, files, vmas, processes)
        });
        snap.maps_ok = maps.is_some();
        let mut maps = maps.unwrap_or_default();
        snap.own = maps
            .iter()
            .filter(|m| own.contains(&m.id))
            .cloned()
            .collect();
        maps.retain(|m| !own.contains(&m.id));
        snap.maps = maps;
        snap.processes = processes;

        let mut obs = holders::Observed::default();
        if let Some((name, r, seconds)) = files {
            obs.files = record(&mut parts, name, seconds, r);
        }
        if p.mmaps {
            obs.vmas = match vmas {
                Some((name, r, seconds)) => record(&mut parts, name, seconds, r),
                // No iter/task_vma before 5.15: mmap-only holders cannot be
                // seen; they read as unexplained there (README says so), and
                // bpfmap_feature_available{feature="task_vma"} is 0.
                None => Some(Vec::new()),
            };
        }
        if p.programs {
            obs.programs = timed(&mut parts, "programs", program_map_ids);
        }
        if p.links {
            obs.links = timed(&mut parts, "links", iter_link_map_ids);
        }
        if p.outer_maps {
            let outer: Vec<u32> = snap
                .maps
                .iter()
                .filter(|m| names::is_map_in_map(m.map_type))
                .map(|m| m.id)
                .collect();
            obs.slots = timed(&mut parts, "outer_maps", || outer_map_slots(&outer));
        }
        if p.pins {
            let limits = bpffs::WalkLimits {
                max_entries: self.opts.pins_max_entries,
                max_depth: self.opts.pins_max_depth,
            };
            snap.inventory = timed(&mut parts, "pins", || {
                let mi = std::fs::read_to_string("/proc/self/mountinfo")
                    .context("reading /proc/self/mountinfo")?;
                let cache = &mut self.pin_cache;
                let inv = bpffs::walk(&bpffs::parse_mountinfo(&mi), &limits, &mut |p, md| {
                    cache.identify(p, md)
                });
                cache.finish();
                Ok(inv)
            });
            obs.pins = snap.inventory.as_ref().map(|inv| inv.map_pin_holders());
        }
        if p.memory {
            let all = snap.maps.iter().chain(snap.own.iter());
            if let Some(mem) = timed(&mut parts, "memory", || {
                Ok(self.memory(all, snap.inventory.as_ref()))
            }) {
                snap.memory = mem;
            }
        }
        let t = Instant::now();
        if snap.maps_ok {
            // Unknown kinds (disabled parts) make `unexplained` unknown.
            snap.holders = holders::compute(&snap.maps, &obs);
        }
        tracing::debug!(seconds = t.elapsed().as_secs_f64(), "holder arithmetic");
        for p in &parts {
            tracing::debug!(part = p.name, seconds = p.seconds, "census part");
        }
        snap.parts = parts;
        snap
    }

    /// Per-map memory from fdinfo `memlock:`. Values are cached by map id
    /// and re-read only where they can change: maps whose memory follows
    /// their element count are re-read when the count moves (or every scrape
    /// where the kernel cannot count elements). Pinned maps' fdinfo, already
    /// read by the pin walk, seeds the cache.
    fn memory<'a>(
        &mut self,
        maps: impl Iterator<Item = &'a MapRecord>,
        inv: Option<&bpffs::Inventory>,
    ) -> IdMap<u64> {
        let pinned: IdMap<u64> = inv
            .map(|i| {
                i.pins
                    .iter()
                    // Only identities read in this walk carry a current memlock.
                    .filter(|p| p.fresh && p.info.kind == fdinfo::ObjKind::Map)
                    .filter_map(|p| Some((p.info.id, p.info.memlock?)))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = IdMap::with_capacity_and_hasher(maps.size_hint().0, Default::default());
        for m in maps {
            let dynamic = names::memory_follows_elements(m.map_type, m.map_flags);
            let fresh = match self.mem_cache.get(&m.id) {
                Some(e) if !dynamic => Some(e.bytes),
                Some(e) if e.elem_count.is_some() && e.elem_count == m.elem_count => Some(e.bytes),
                _ => None,
            };
            let bytes = match fresh {
                Some(b) => b,
                None => {
                    let read = pinned.get(&m.id).copied().or_else(|| {
                        let fd = sys::map_fd_by_id(m.id).ok()?; // gone since the census: no series
                        fdinfo::parse_fdinfo(&sys::fdinfo(&fd).ok()?).memlock
                    });
                    let Some(b) = read else { continue };
                    self.mem_cache.insert(
                        m.id,
                        MemEntry {
                            bytes: b,
                            elem_count: m.elem_count,
                        },
                    );
                    b
                }
            };
            out.insert(m.id, bytes);
        }
        // Forget maps that left the census (every live map is in `out`).
        self.mem_cache.retain(|id, _| out.contains_key(id));
        out
    }
}

type Walked = Option<(&'static str, anyhow::Result<Vec<FileRecord>>, f64)>;

/// The records of a task walk that ran and succeeded (else none).
fn ok_files(w: &Walked) -> &[FileRecord] {
    match w {
        Some((_, Ok(v), _)) => v,
        _ => &[],
    }
}

/// The exporter's own map files are its own business: they hold only its own
/// maps, which are reported apart. Any other map file it held would be shown.
fn not_own(mut files: Vec<FileRecord>, own: &rustc_hash::FxHashSet<u32>) -> Vec<FileRecord> {
    files.retain(|f| !own.contains(&f.map_id));
    files
}

/// For every program: the ids of the maps it uses.
fn program_map_ids() -> anyhow::Result<Vec<Vec<u32>>> {
    let ids = sys::all_ids(sys::IdSpace::Prog).context("BPF_PROG_GET_NEXT_ID")?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let fd = match sys::fd_by_id(sys::IdSpace::Prog, id) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue, // unloaded meanwhile
            Err(e) => return Err(e).with_context(|| format!("BPF_PROG_GET_FD_BY_ID {id}")),
        };
        match sys::prog_map_ids(&fd) {
            Ok(m) => out.push(m),
            Err(e) => return Err(e).with_context(|| format!("program {id} info")),
        }
    }
    Ok(out)
}

/// For every iterator link bound to a map: that map's id.
fn iter_link_map_ids() -> anyhow::Result<Vec<u32>> {
    use libbpf_rs::query::{IterType, LinkInfo, LinkTypeInfo};
    use std::os::fd::AsFd;
    let ids = sys::all_ids(sys::IdSpace::Link).context("BPF_LINK_GET_NEXT_ID")?;
    let mut out = Vec::new();
    for id in ids {
        let fd = match sys::fd_by_id(sys::IdSpace::Link, id) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e).with_context(|| format!("BPF_LINK_GET_FD_BY_ID {id}")),
        };
        let Ok(info) = LinkInfo::from_fd(fd.as_fd()) else {
            continue;
        };
        if let LinkTypeInfo::Iter(it) = info.info {
            if let IterType::Map { map_id } = it.iter_type {
                if map_id != 0 {
                    out.push(map_id);
                }
            }
        }
    }
    Ok(out)
}

/// For every slot of every outer map: the inner map id it holds.
fn outer_map_slots(outer: &[u32]) -> anyhow::Result<Vec<u32>> {
    let mut out = Vec::new();
    for &id in outer {
        let h = match libbpf_rs::MapHandle::from_map_id(id) {
            Ok(h) => h,
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => continue, // freed meanwhile
            Err(e) => {
                return Err(e).with_context(|| format!("BPF_MAP_GET_FD_BY_ID {id} (outer map)"))
            }
        };
        for key in h.keys() {
            if let Ok(Some(v)) = h.lookup(&key, libbpf_rs::MapFlags::ANY) {
                if v.len() >= 4 {
                    out.push(u32::from_le_bytes(v[..4].try_into().expect("4 bytes")));
                }
            }
        }
    }
    Ok(out)
}
