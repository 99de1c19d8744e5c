//! The census: every live map, what holds it, and every bpffs pin, taken
//! afresh on each scrape with the census iterators (`bpf::census`) plus a
//! few bpf() queries, into a data-only [`Snapshot`].
pub mod bpffs;
pub mod creators;
pub mod fdinfo;
pub mod holders;
pub mod names;
pub mod render;
mod sources;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;

pub use crate::bpf::census::{Creator, Features, FileRecord, MapRecord};
pub use holders::{Holders, ProcessHolder};

use crate::bpf::census::{self as progs, Programs};
use crate::collector::{measure, Report};
use crate::sys;

/// Map id -> value with a fast hasher: per-map tables have 100k entries on
/// big nodes and SipHash dominated the holder arithmetic there.
pub type IdMap<V> = HashMap<u32, V, rustc_hash::FxBuildHasher>;

/// Which census collectors run (registry names with stage `Census`).
#[derive(Debug, Clone)]
pub struct Parts {
    on: Vec<&'static str>,
}

impl Parts {
    /// Every census collector.
    pub fn all() -> Parts {
        Parts::from_fn(|_| true)
    }

    /// The census collectors for which `on(name)` holds.
    pub fn from_fn(on: impl Fn(&str) -> bool) -> Parts {
        Parts {
            on: crate::collector::REGISTRY
                .iter()
                .filter(|s| s.stage == crate::collector::Stage::Census && on(s.name))
                .map(|s| s.name)
                .collect(),
        }
    }

    /// Every census collector but these.
    pub fn without(names: &[&str]) -> Parts {
        Parts::from_fn(|n| !names.contains(&n))
    }

    pub fn on(&self, name: &str) -> bool {
        self.on.contains(&name)
    }
}

impl Default for Parts {
    fn default() -> Self {
        Parts::all()
    }
}

#[derive(Debug, Clone)]
pub struct CensusOpts {
    pub btf_path: Option<PathBuf>,
    pub parts: Parts,
    pub pins_max_entries: usize,
    pub pins_max_depth: usize,
    /// Keep the file and vma records (holder identities) in the snapshot.
    pub keep_files: bool,
    /// The memory cgroup hierarchy to resolve creators in (default: mountinfo's).
    pub cgroup_root: Option<PathBuf>,
}

impl Default for CensusOpts {
    fn default() -> Self {
        CensusOpts {
            btf_path: None,
            parts: Parts::default(),
            pins_max_entries: 100_000,
            pins_max_depth: 32,
            keep_files: false,
            cgroup_root: None,
        }
    }
}

/// One scrape's census: data only (no timings, no rendering state), read
/// by the renderer, the lifecycle collector and any other reader.
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
    pub features: Features,
    /// Memory cgroup id -> path in the memory hierarchy, for the cgroups
    /// the maps are charged to, when the creators part ran.
    pub creator_paths: Option<HashMap<u64, String>>,
    /// Map files in fd tables and behind vmas, with `CensusOpts::keep_files`.
    pub files: Option<Vec<FileRecord>>,
    pub vmas: Option<Vec<FileRecord>>,
}

struct MemEntry {
    bytes: u64,
    elem_count: Option<i64>,
}

/// The loaded census programs and the state kept between scrapes: a memory
/// cache keyed by map id (ids are never reused before they wrap), the pin
/// identities, and the iterator buffers.
pub struct Census {
    progs: Programs,
    opts: CensusOpts,
    mem_cache: IdMap<MemEntry>,
    /// Pinned inodes identified by earlier pin walks.
    pin_cache: bpffs::IdentCache,
    /// Iterator output buffers, kept between scrapes (maps, files, vmas).
    bufs: [Vec<u8>; 3],
    /// Memory cgroup paths of the maps' creators, cached between scrapes.
    creator_paths: creators::PathResolver,
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

impl Census {
    /// Load and attach the census iterators. Fails with an actionable message
    /// on missing privileges or BTF.
    pub fn load(opts: CensusOpts) -> anyhow::Result<Census> {
        if let Some(r) = &opts.cgroup_root {
            creators::check_root(r)?;
        }
        let cgroup_root = opts.cgroup_root.clone();
        let progs = Programs::load(&progs::LoadOpts {
            btf_path: opts.btf_path.clone(),
            files: opts.parts.on("files"),
            mmaps: opts.parts.on("mmaps"),
        })?;
        Ok(Census {
            progs,
            opts,
            mem_cache: IdMap::default(),
            bufs: Default::default(),
            pin_cache: Default::default(),
            creator_paths: creators::PathResolver::new(
                creators::WalkLimits::default(),
                cgroup_root,
            ),
        })
    }

    pub fn features(&self) -> &Features {
        self.progs.features()
    }

    /// Map ids of the census's own BPF objects.
    pub fn own_map_ids(&self) -> &[u32] {
        self.progs.own_map_ids()
    }

    /// Take one census. `extra_own` are map ids of other exporter parts
    /// (the lifecycle collector), reported as the exporter's own. The report
    /// holds every census collector's outcome.
    pub fn take(&mut self, extra_own: &[u32]) -> (Snapshot, Report) {
        let mut report = Report::default();
        let snap = self.take_into(extra_own, &mut report);
        (snap, report)
    }

    fn take_into(&mut self, extra_own: &[u32], report: &mut Report) -> Snapshot {
        let p = self.opts.parts.clone();
        let mut snap = Snapshot {
            features: self.progs.features().clone(),
            ..Default::default()
        };
        let own: rustc_hash::FxHashSet<u32> = self
            .progs
            .own_map_ids()
            .iter()
            .chain(extra_own)
            .copied()
            .collect();

        let [map_buf, file_buf, vma_buf] = &mut self.bufs;
        let file_iter = self.progs.open_files();
        let vma_iter = self.progs.open_vmas();
        // The two task walks (and the per-process arithmetic, which needs
        // only them) run on a second thread while this one walks and decodes
        // the maps: the walks are mostly kernel time.
        let own_ref = &own;
        let progs = &self.progs;
        let (maps, files, vmas, processes) = std::thread::scope(|scope| {
            let tasks = scope.spawn(|| {
                let walk =
                    |name: &'static str, it: anyhow::Result<std::fs::File>, buf: &mut Vec<u8>| {
                        let (r, seconds) =
                            measure(|| Ok(not_own(progs::read_files(it?, buf)?, own_ref)));
                        (name, r, seconds)
                    };
                let files = file_iter.map(|it| walk("files", it, file_buf));
                let vmas = vma_iter.map(|it| walk("mmaps", it, vma_buf));
                let processes = holders::processes(ok_files(&files), ok_files(&vmas));
                (files, vmas, processes)
            });
            let maps = report.run("maps", || progs.read_maps(map_buf));
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
            obs.files = report.record(name, seconds, r);
        }
        if p.on("mmaps") {
            obs.vmas = match vmas {
                Some((name, r, seconds)) => report.record(name, seconds, r),
                // No iter/task_vma before 5.15: mmap-only holders cannot be
                // seen; they read as unexplained there (README says so), and
                // bpfmap_feature_available{feature="task_vma"} is 0.
                None => Some(Vec::new()),
            };
        }
        if p.on("programs") {
            obs.programs = report.run("programs", sources::program_map_ids);
        }
        if p.on("links") {
            obs.links = report.run("links", sources::iter_link_map_ids);
        }
        if p.on("outer_maps") {
            let outer: Vec<u32> = snap
                .maps
                .iter()
                .filter(|m| names::is_map_in_map(m.map_type))
                .map(|m| m.id)
                .collect();
            obs.slots = report.run("outer_maps", || sources::outer_map_slots(&outer));
        }
        if p.on("pins") {
            let limits = bpffs::WalkLimits {
                max_entries: self.opts.pins_max_entries,
                max_depth: self.opts.pins_max_depth,
            };
            snap.inventory = report.run("pins", || {
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
        if p.on("creators") && snap.maps_ok && snap.features.map_memcg {
            let ids = creators::cgroup_ids(snap.maps.iter());
            let resolver = &mut self.creator_paths;
            snap.creator_paths = report.run("creators", || resolver.resolve(&ids));
        }
        if p.on("memory") {
            let all = snap.maps.iter().chain(snap.own.iter());
            if let Some(mem) =
                report.run("memory", || Ok(self.memory(all, snap.inventory.as_ref())))
            {
                snap.memory = mem;
            }
        }
        if self.opts.keep_files {
            snap.files = obs.files.clone();
            snap.vmas = obs.vmas.clone();
        }
        let (_, seconds) = measure(|| {
            if snap.maps_ok {
                // Unknown kinds (disabled parts) make `unexplained` unknown.
                snap.holders = holders::compute(&snap.maps, &obs);
            }
            Ok(())
        });
        tracing::debug!(seconds, "holder arithmetic");
        for o in &report.outcomes {
            tracing::debug!(part = o.name, seconds = o.seconds, "census part");
        }
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
