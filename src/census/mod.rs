//! The census: every live map, what holds it, and every bpffs pin, taken
//! afresh on each scrape with the census iterators (`bpf::census`) plus a
//! few bpf() queries, into a data-only [`Snapshot`].
pub mod attach;
pub mod attached;
pub mod bpffs;
mod confirm;
pub mod creators;
pub mod entries;
pub mod fdinfo;
pub mod holders;
pub mod inflight;
pub mod links;
pub mod loaders;
mod memory;
mod model;
pub mod names;
mod netdev;
mod peers;
pub mod programs;
pub mod render;
pub mod roots;
mod sources;
mod uring;

use std::path::Path;

use anyhow::Context;

pub use crate::bpf::census::{
    AttachFile, Creator, Features, FileRecord, MapRecord, ObjectFile, ObjectKind, ProgRecord,
    RingFd, RingObject, UringRecord,
};
pub use holders::{Holders, ProcessHolder};
pub use model::{ById, CensusOpts, IdMap, Parts, Snapshot};

use crate::bpf::census::{self as progs, Programs};
use crate::registry::{measure, Report};
use crate::sys;

/// The initial pid namespace's inode number (PROC_PID_INIT_INO, fixed in
/// the kernel ABI).
const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

/// Whether this process runs in the initial (host) pid namespace. The task
/// iterators see only the tasks of the reader's pid namespace, so anywhere
/// else fd-table and mmap holders are incomplete.
pub fn in_host_pid_namespace() -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata("/proc/self/ns/pid").ok()?;
    Some(md.ino() == PROC_PID_INIT_INO)
}

/// The message for a non-host pid namespace (used by `--check` and the server).
pub const PID_NAMESPACE_ERROR: &str = "the exporter is not in the host's pid namespace: it sees only its own \
     container's processes, so every map a host process holds would look leaked. Unexplained counts are withheld. \
     Run it with hostPID: true (Kubernetes, see deploy/daemonset.yaml) or --pid=host (podman/docker)";

/// How long after the exporter's loads their map-id window still marks
/// unreferenced maps as the exporter's debris.
pub const LOAD_DEBRIS_HORIZON: std::time::Duration = std::time::Duration::from_secs(30);

/// The in-flight walk's program and the state it keeps between scrapes.
struct InflightState {
    prog: crate::bpf::inflight::Inflight,
    netns: inflight::NetnsDiscovery,
    ages: inflight::Ages,
    buf: Vec<u8>,
}

/// The loaded census programs and the state kept between scrapes: a memory
/// cache keyed by map id (ids are never reused before they wrap), the pin
/// identities, and the iterator buffers.
pub struct Census {
    progs: Programs,
    opts: CensusOpts,
    mem_cache: IdMap<memory::MemEntry>,
    /// Pinned inodes identified by earlier pin walks.
    pin_cache: bpffs::IdentCache,
    /// bpffs superblocks of every mount namespace (cached mount tables).
    mounts: bpffs::MountDiscovery,
    /// Iterator output buffers, kept between scrapes (maps, files, vmas).
    bufs: [Vec<u8>; 3],
    /// Memory cgroup paths of the maps' creators, cached between scrapes.
    creator_paths: creators::PathResolver,
    /// The creators resolved while their cgroups lived.
    creator_memory: creators::CreatorMemory,
    /// Map ids the exporter's loads allocated (first, last], and when the
    /// window closed: every BPF load of this process (census, lifecycle,
    /// libbpf's feature probes, skeletons it dropped) happens in it.
    load_window: Option<(u32, u32, std::time::Instant)>,
    /// This process's comm and executable (device, inode): objects held only
    /// by other processes of that name running that very file are another
    /// exporter instance's own.
    comm: Vec<u8>,
    exe: Option<(u64, u64)>,
    /// The in-flight walk, where the kernel has iter/unix and the part is on;
    /// `Err` keeps the load error, reported as the part's failure each scrape.
    inflight: Option<Result<InflightState, String>>,
    /// Map ids of every census object (census and in-flight).
    own_ids: Vec<u32>,
    /// Program ids of the census's and the in-flight walk's programs, and
    /// of the exporter's other collectors ([`Census::set_other_own_programs`]).
    own_progs: Vec<u32>,
    other_own_progs: Vec<u32>,
    /// The program and link iterators' output buffers.
    prog_buf: Vec<u8>,
    link_buf: Vec<u8>,
    /// Element counts by iteration, kept between scrapes.
    entries: entries::Counter,
    /// The io_uring part.
    uring: uring::UringPart,
    /// The lifecycle probes' program load records, where they run.
    load_records: Option<Box<dyn loaders::LoadRecords>>,
    /// The loaders of live programs, and the memory cgroup paths of
    /// loaders (a hierarchy walk only for cgroups not resolved yet).
    loaders: loaders::LoaderTable,
    loader_paths: creators::PathResolver,
    /// The netdev part (attachments of devices and network namespaces).
    netdev: netdev::NetdevPart,
    /// The largest tables of the last census, emptied: see [`Spare`].
    spare: Spare,
}

/// The largest per-scrape tables (map records, map files, per-map
/// holders), emptied and kept between censuses: the next census fills
/// memory that is already resident instead of faulting in fresh pages for
/// them (the allocator returns freed memory after each batch of requests,
/// so a new table's every page is a fault). Each keeps at most 4 times the
/// room the census that returned it used (at least 1,024 entries), so a
/// node that shrinks does not keep its old peak.
#[derive(Default)]
struct Spare {
    maps: Vec<MapRecord>,
    files: Vec<FileRecord>,
    holders: Vec<(u32, holders::Holders)>,
}

/// `v` emptied, or a new vector when `v` has far more room than it used.
fn emptied<T>(mut v: Vec<T>) -> Vec<T> {
    let used = v.len().max(1024);
    if v.capacity() > 4 * used {
        return Vec::new();
    }
    v.clear();
    v
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
            count_elems: opts.parts.on("entries"),
            progs: opts.parts.on("programs"),
            links: opts.parts.on("links"),
        })?;
        let mut own_ids = progs.own_map_ids().to_vec();
        let mut own_progs = progs.own_prog_ids().to_vec();
        // iter/unix is absent before 5.17: there the object is not loaded at
        // all (the census above does not depend on it) and in-flight files
        // stay unexplained (bpfmap_feature_available{feature="iter_unix"} 0).
        let inflight = (opts.parts.on("inflight") && progs.features().iter_unix).then(|| {
            let custom = opts.btf_path.as_deref();
            match crate::bpf::inflight::Inflight::load(custom) {
                Ok(prog) => {
                    crate::registry::unavailable::clear("inflight");
                    own_ids.extend_from_slice(prog.own_map_ids());
                    own_progs.extend_from_slice(prog.own_prog_ids());
                    Ok(InflightState {
                        prog,
                        netns: Default::default(),
                        ages: Default::default(),
                        buf: Vec::new(),
                    })
                }
                Err(e) => {
                    crate::registry::unavailable::note("inflight", crate::bpf::load::failure_reason(&e));
                    tracing::warn!(error = %format!("{e:#}"), "in-flight walk (iter/unix) not loaded: unexplained counts it could explain are withheld");
                    Err(format!("{e:#}"))
                }
            }
        });
        let uring = uring::UringPart::load(
            &opts,
            progs.features().bpf_loop,
            &mut own_ids,
            &mut own_progs,
        );
        let netdev = netdev::NetdevPart::load(&opts, &mut own_ids, &mut own_progs);
        let entries = entries::Counter::new(opts.entries_method, opts.entries_budget);
        Ok(Census {
            progs,
            opts,
            mem_cache: IdMap::default(),
            bufs: Default::default(),
            pin_cache: Default::default(),
            creator_paths: creators::PathResolver::new(
                creators::WalkLimits::default(),
                cgroup_root.clone(),
            ),
            mounts: Default::default(),
            creator_memory: Default::default(),
            load_records: None,
            loaders: Default::default(),
            loader_paths: creators::PathResolver::new(creators::WalkLimits::default(), cgroup_root),
            load_window: None,
            inflight,
            own_ids,
            own_progs,
            other_own_progs: Vec::new(),
            prog_buf: Vec::new(),
            link_buf: Vec::new(),
            uring,
            netdev,
            spare: Spare::default(),
            exe: sys::exe_identity(std::process::id()),
            comm: std::fs::read("/proc/self/comm")
                .map(|mut c| {
                    c.truncate(c.len().saturating_sub(1));
                    c
                })
                .unwrap_or_default(),
            entries,
        })
    }

    /// Declare the map ids the exporter's loads allocated: ids in
    /// `(first, last]` (from BPF_MAP_GET_NEXT_ID before and after every
    /// load). Of those, maps this process holds a file of are its own, and
    /// maps no user reference holds (usercnt 0: no fd, pin, mmap or link
    /// anywhere) are debris of its loads (dropped skeletons, libbpf's probe
    /// maps) waiting for the kernel's deferred free: its own until gone. The
    /// kernel frees such debris within milliseconds; an unreferenced map of
    /// the window still there after [`LOAD_DEBRIS_HORIZON`] is another
    /// agent's (loaded concurrently, held only by its programs) and counts
    /// as the node's again.
    pub fn set_load_window(&mut self, first: u32, last: u32) {
        self.load_window = Some((first, last, std::time::Instant::now()));
    }

    pub fn features(&self) -> &Features {
        self.progs.features()
    }

    /// The program ids of the exporter's other collectors (the lifecycle
    /// probes): its own programs, never the node's.
    pub fn set_other_own_programs(&mut self, ids: Vec<u32>) {
        self.other_own_progs = ids;
    }

    /// Read program loaders from these load records (the lifecycle
    /// probes') from now on.
    pub fn set_load_records(&mut self, r: Box<dyn loaders::LoadRecords>) {
        self.load_records = Some(r);
    }

    /// Keep the file and vma records in the snapshots from now on (see
    /// `CensusOpts::keep_files`).
    pub fn set_keep_files(&mut self, on: bool) {
        self.opts.keep_files = on;
    }

    /// Map ids of the census's own BPF objects.
    #[cfg(any(test, feature = "testing"))]
    pub fn own_map_ids(&self) -> &[u32] {
        &self.own_ids
    }

    /// Take one census. `extra_own` are map ids of other exporter parts
    /// (the lifecycle collector), reported as the exporter's own. The report
    /// holds every census collector's outcome.
    pub fn take(&mut self, extra_own: &[u32]) -> (Snapshot, Report) {
        let mut report = Report::default();
        let snap = self.take_into(extra_own, &mut report);
        (snap, report)
    }

    /// Give back a snapshot this census took, once nothing reads it: its
    /// largest tables are kept, emptied, for the next census.
    pub fn recycle(&mut self, snap: Snapshot) {
        self.spare.maps = emptied(snap.maps);
        self.spare.holders = emptied(snap.holders.into_entries());
    }

    fn take_into(&mut self, extra_own: &[u32], report: &mut Report) -> Snapshot {
        let started = std::time::Instant::now();
        let p = self.opts.parts.clone();
        let mut snap = Snapshot {
            features: self.progs.features().clone(),
            ..Default::default()
        };
        let own: rustc_hash::FxHashSet<u32> =
            self.own_ids.iter().chain(extra_own).copied().collect();
        snap.boot_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|t| t.as_secs_f64() - sys::boottime_ns() as f64 / 1e9);
        let host_pid = in_host_pid_namespace();

        // Files in flight first: their receiving sockets are named by the
        // task walk below, which must know which sockets to report.
        let mut inflight_walk: Option<inflight::Walk> = None;
        if p.on("inflight") && p.on("files") {
            match &mut self.inflight {
                Some(Ok(st)) => {
                    let walk = report.run("inflight", || {
                        let ns = st
                            .netns
                            .discover(Path::new("/proc"))
                            .context("reading /proc/*/ns/net")?;
                        let uncovered = inflight::unknown_namespaces(Path::new("/proc"), &ns);
                        inflight::walk(&st.prog, &ns, uncovered, &mut st.buf)
                    });
                    let want = walk
                        .as_ref()
                        .map(|w| inflight::receiver_sockets(&w.records))
                        .unwrap_or_default();
                    if let Err(e) = self.progs.set_receiver_sockets(&want) {
                        crate::logging::warn_repeated(("naming receivers", "inflight"), |held| {
                            tracing::warn!(error = %format!("{e:#}"), more_since_last = held, "naming receivers of files in flight");
                        });
                    }
                    inflight_walk = walk;
                }
                Some(Err(e)) => {
                    let e = anyhow::anyhow!("{e}");
                    report.record::<()>("inflight", 0.0, Err(e));
                }
                None => {}
            }
        }

        let [map_buf, file_buf, vma_buf] = &mut self.bufs;
        let spare_maps = std::mem::take(&mut self.spare.maps);
        let mut spare_files = Some(std::mem::take(&mut self.spare.files));
        let file_iter = self.progs.open_files();
        let vma_iter = self.progs.open_vmas();
        // The node's reads are mostly kernel time and independent of each
        // other: the two task walks (and the per-process arithmetic, which
        // needs only them) run on one thread, the links and then the
        // network namespaces' attachments (which need only the links) on a
        // second, and the maps and then the programs on this one. The task
        // walks are the longest, so their thread starts first: with fewer
        // cores than threads, the last one started waits for a core.
        let own_ref = &own;
        let progs = &self.progs;
        let comm = &self.comm;
        let exe = &self.exe;
        let want_progs = p.on("programs");
        let want_links = p.on("links");
        // Netdev attachments are program holders: read only with programs.
        let want_netdev = want_progs && p.on("netdev");
        let (link_buf, prog_buf, netdev_part) =
            (&mut self.link_buf, &mut self.prog_buf, &mut self.netdev);
        let (
            (maps, prog_read),
            files,
            vmas,
            processes,
            (peers, peer_tgids),
            mine,
            sockets,
            objects,
            (link_read, unknown_tracing, netdev_read),
        ) = std::thread::scope(|scope| {
            let tasks = scope.spawn(|| {
                let walk = |name: &'static str,
                            it: anyhow::Result<std::fs::File>,
                            buf: &mut Vec<u8>,
                            spare: Vec<FileRecord>| {
                    let (r, seconds) = measure(|| {
                        let mut t = progs::read_files_into(it?, buf, spare)?;
                        t.maps = not_own(t.maps, own_ref);
                        Ok(t)
                    });
                    (name, r, seconds)
                };
                // Program and link files go to the programs part; the rest
                // of the walk's consumers see map files (and sockets).
                let mut objects: Option<(Vec<ObjectFile>, Vec<RingFd>, Vec<AttachFile>)> = None;
                let mut files: Walked = file_iter.map(|it| {
                    let spare = spare_files.take().unwrap_or_default();
                    let (n, r, s) = walk("files", it, file_buf, spare);
                    (
                        n,
                        r.map(|t| {
                            objects = Some((t.objects, t.rings, t.attached));
                            t.maps
                        }),
                        s,
                    )
                });
                let mut vmas: Walked = vma_iter.map(|it| {
                    let (n, r, s) = walk("mmaps", it, vma_buf, Vec::new());
                    (n, r.map(|t| t.maps), s)
                });
                // The receivers of files in flight: fds of the sockets asked for.
                let mut sockets = Vec::new();
                if let Some((_, Ok(v), _)) = &mut files {
                    // Sockets are few beside the map files: moved out in place.
                    sockets = v.iter().filter(|f| f.is_socket()).cloned().collect();
                    v.retain(|f| !f.is_socket());
                }
                // Maps whose every file holder is another exporter instance
                // (a `--check` next to the server) are that instance's own:
                // both then report the same node figures.
                let exe = *exe;
                let holders = ok_files(&files).iter().map(|f| (f.tgid, f.comm.as_slice()));
                let objects_held = objects
                    .iter()
                    .flat_map(|(o, _, _)| o.iter().map(|f| (f.tgid, f.comm.as_slice())));
                let peer_tgids = peers::proven_peers(holders.chain(objects_held), comm, exe);
                let (peers, mine) = peers::peer_exporter_maps(ok_files(&files), &peer_tgids);
                for w in [&mut files, &mut vmas].into_iter().flatten() {
                    if let (_, Ok(v), _) = w {
                        v.retain(|f| !peers.contains(&f.map_id));
                    }
                }
                let processes = holders::processes(ok_files(&files), ok_files(&vmas));
                (
                    files,
                    vmas,
                    processes,
                    (peers, peer_tgids),
                    mine,
                    sockets,
                    objects,
                )
            });
            let kernel_links = scope.spawn(move || {
                // Tracing links whose target the link info does not tell.
                let mut unknown: Vec<u32> = Vec::new();
                let links = want_links.then(|| {
                    measure(|| match progs.read_links(link_buf) {
                        Some(r) => r,
                        None => sources::links().map(|(l, u)| {
                            unknown = u;
                            l
                        }),
                    })
                });
                let netdev = want_netdev.then(|| {
                    let l = match &links {
                        Some((Ok(l), _)) => Some(l.as_slice()),
                        _ => None,
                    };
                    measure(|| netdev_part.observe(&netdev::Limits::default(), l))
                });
                (links, unknown, netdev)
            });
            let maps = report.run("maps", || progs.read_maps_into(map_buf, spare_maps));
            let prog_read = want_progs.then(|| {
                    measure(|| {
                        progs.read_progs(prog_buf).unwrap_or_else(|| {
                            Err(anyhow::anyhow!(
                                "this kernel has no iter/bpf_prog (Linux 5.9+): programs cannot be listed"
                            ))
                        })
                    })
                });
            let (files, vmas, processes, peers, mine, sockets, objects) =
                tasks.join().unwrap_or_else(|_| {
                    let failed = |n| (n, Err(anyhow::anyhow!("task walk thread panicked")), 0.0);
                    (
                        Some(failed("files")),
                        Some(failed("mmaps")),
                        Vec::new(),
                        Default::default(),
                        Default::default(),
                        Vec::new(),
                        None,
                    )
                });
            let kernel_links = kernel_links.join().unwrap_or_else(|_| {
                let panicked = || anyhow::anyhow!("link walk thread panicked");
                (
                    want_links.then(|| (Err(panicked()), 0.0)),
                    Vec::new(),
                    want_netdev.then(|| (Err(panicked()), 0.0)),
                )
            });
            (
                (maps, prog_read),
                files,
                vmas,
                processes,
                peers,
                mine,
                sockets,
                objects,
                kernel_links,
            )
        });
        snap.maps_ok = maps.is_some();
        let mut maps = maps.unwrap_or_default();
        // In the load window: maps this process holds a file of (it opens
        // no node map while the task walk runs) are its loads'; unreferenced
        // ones are its debris, for a while.
        let window = self.load_window;
        let in_window =
            |m: &MapRecord| matches!(window, Some((lo, hi, _)) if m.id > lo && m.id <= hi);
        let debris_time = window.is_some_and(|w| w.2.elapsed() < LOAD_DEBRIS_HORIZON);
        let is_own = |m: &MapRecord| {
            own.contains(&m.id)
                || peers.contains(&m.id)
                || (in_window(m) && (mine.contains(&m.id) || (debris_time && m.usercnt == 0)))
        };
        snap.own = maps.iter().filter(|m| is_own(m)).cloned().collect();
        maps.retain(|m| !is_own(m));
        snap.maps = maps;
        snap.processes = processes;

        let mut obs = holders::Observed {
            user_refs_visible: snap.features.task_vma && snap.features.iter_unix,
            ..Default::default()
        };
        if let Some((name, r, seconds)) = files {
            obs.files = report.record(name, seconds, r);
        }
        if p.on("mmaps") {
            obs.vmas = match vmas {
                Some((name, r, seconds)) => report.record(name, seconds, r),
                // No iter/task_vma before 5.15: mmap-only holders cannot be
                // seen; they read as unexplained there (docs/kernels.md says
                // so), and bpfmap_feature_available{feature="task_vma"} is 0.
                None => Some(Vec::new()),
            };
        }
        let (objects, rings, attach_files) = match objects {
            Some((o, r, a)) if obs.files.is_some() => (Some(o), Some(r), Some(a)),
            _ => (None, None, None),
        };
        let mut prog_obs = programs::Observed {
            files: objects,
            ..Default::default()
        };
        let mut link_recs: Option<Vec<crate::bpf::census::LinkRecord>> = None;
        let mut prog_slots: Option<Vec<(u32, u32)>> = None;
        let mut map_slots: Option<Vec<(u32, u32)>> = None;
        if let Some((r, seconds)) = link_read {
            link_recs = report.record("links", seconds, r);
            if let Some(links) = &link_recs {
                obs.links = Some(links.iter().filter_map(|l| l.held_map_id()).collect());
                obs.struct_ops_links = links
                    .iter()
                    .filter(|l| l.iter_map_id.is_none())
                    .filter_map(|l| l.held_map_id())
                    .collect();
                prog_obs.links = Some(
                    links
                        .iter()
                        .map(|l| l.prog_id)
                        .filter(|&id| id != 0)
                        .collect(),
                );
            }
        }
        if let Some((all, read_seconds)) = prog_read {
            let arrays: Vec<u32> = snap
                .maps
                .iter()
                .filter(|m| names::MapType::from_raw(m.map_type) == Some(names::MapType::ProgArray))
                .map(|m| m.id)
                .collect();
            let (r, seconds) = measure(|| {
                let all = all?;
                let slots = sources::fd_array_slots(&arrays).context("reading prog_array slots")?;
                Ok((all, slots))
            });
            let read = report.record("programs", read_seconds + seconds, r);
            if let Some((all, slots)) = read {
                obs.programs = Some(all.iter().map(|p| p.map_ids.clone()).collect());
                prog_obs.slots = Some(slots.iter().map(|s| s.1).collect());
                prog_slots = Some(slots);
                let me = std::process::id();
                let peer_progs = programs::peer_programs(
                    prog_obs.files.as_deref().unwrap_or_default(),
                    &peer_tgids,
                    me,
                );
                let own_progs: rustc_hash::FxHashSet<u32> = self
                    .own_progs
                    .iter()
                    .chain(&self.other_own_progs)
                    .copied()
                    .chain(peer_progs)
                    .collect();
                let (own_p, node): (Vec<ProgRecord>, Vec<ProgRecord>) =
                    all.into_iter().partition(|p| own_progs.contains(&p.id));
                snap.own_programs = own_p;
                snap.programs = Some(node);
            }
        }
        if p.on("outer_maps") {
            let outer: Vec<u32> = snap
                .maps
                .iter()
                .filter(|m| names::is_map_in_map(m.map_type))
                .map(|m| m.id)
                .collect();
            map_slots = report.run("outer_maps", || sources::fd_array_slots(&outer));
            obs.slots = map_slots.as_ref().map(|v| v.iter().map(|s| s.1).collect());
        }
        if p.on("inflight") {
            // The in-flight file deduplication needs the fd tables.
            let files_ok = obs.files.is_some();
            obs.inflight = match (&self.inflight, &inflight_walk) {
                (Some(_), Some(w)) if files_ok => {
                    let empty = Vec::new();
                    let vmas = obs.vmas.as_ref().unwrap_or(&empty);
                    let mut found = inflight::resolve(
                        &w.records,
                        &sockets,
                        obs.files.as_ref().unwrap_or(&empty),
                        vmas,
                    );
                    found.retain(|f| !own.contains(&f.map_id) && !peers.contains(&f.map_id));
                    if !w.complete() {
                        obs.incomplete.push("inflight");
                    }
                    snap.inflight_netns = Some((w.walked, w.unreachable));
                    let ids = found.iter().map(|f| f.map_id).collect();
                    if let Some(Ok(st)) = &mut self.inflight {
                        snap.inflight_ages = st.ages.update(&found, std::time::Instant::now());
                    }
                    snap.inflight = found;
                    Some(ids)
                }
                // No iter/unix (before 5.17): in-flight files cannot be
                // seen; they read as unexplained there (docs/kernels.md and
                // docs/census.md say so), as mmap-only files do before 5.15.
                (None, _) if !snap.features.iter_unix => Some(Vec::new()),
                _ => None,
            };
            obs.inflight_ptrs = snap.inflight.iter().map(|f| f.file_ptr).collect();
        }
        if p.on("inflight") {
            // Program files in flight (those no fd table holds count once,
            // deduplicated by file in `programs::holders`).
            match (&self.inflight, &inflight_walk) {
                (Some(_), Some(w)) if obs.files.is_some() => {
                    prog_obs.inflight = Some(
                        w.records
                            .iter()
                            .filter_map(|r| {
                                r.prog
                                    .filter(|p| p.attach.is_none())
                                    .map(|p| (r.file_ptr, p.prog_id))
                            })
                            .collect(),
                    );
                }
                // No iter/unix: program files in flight cannot be seen.
                (None, _) if !snap.features.iter_unix && obs.files.is_some() => {
                    prog_obs.inflight = Some(Vec::new());
                    prog_obs.incomplete.push(programs::ProgHolderKind::Inflight);
                }
                _ => {}
            }
        }
        let mut uring_attach: Option<bool> = None;
        if p.on("io_uring") {
            if let Some(o) = self.uring.observe(rings.as_deref(), report) {
                if !o.complete {
                    obs.incomplete.push("io_uring");
                }
                uring_attach = Some(o.attach_complete);
                obs.io_uring = Some(o.maps);
                prog_obs.io_uring = Some(o.progs);
                snap.io_uring = o.records;
            }
        }
        if host_pid == Some(false) {
            // Other pid namespaces' processes, and the network namespaces
            // only they are in, are out of sight.
            obs.incomplete
                .extend(["files", "mmaps", "inflight", "io_uring"]);
        }
        if p.on("pins") {
            // After the task walks: the walk opens each pinned object
            // (BPF_OBJ_GET) for a moment, and a task walk running meanwhile
            // would count that file of this process as a holder.
            let limits = bpffs::WalkLimits {
                max_entries: self.opts.pins_max_entries,
                max_depth: self.opts.pins_max_depth,
            };
            snap.inventory = report.run("pins", || {
                let sbs = self
                    .mounts
                    .discover(Path::new("/proc"))
                    .context("reading /proc/*/mountinfo")?;
                let cache = &mut self.pin_cache;
                let inv = bpffs::walk(&sbs, &limits, &mut |p, md| cache.identify(p, md));
                cache.finish();
                for m in &inv.hidden {
                    crate::logging::warn_repeated(("bpffs mount hidden", "pins"), |held| {
                        tracing::warn!(mount = %m, more_since_last = held, "bpffs mount hidden under another mount at the same mount point (bpffs mounted twice?): its pins cannot be walked; unexplained counts it could explain are withheld");
                    });
                }
                for m in inv.unreachable.iter().filter(|m| !inv.hidden.contains(m)) {
                    crate::logging::warn_repeated(("bpffs mount unreachable", "pins"), |held| {
                        tracing::warn!(mount = %m, more_since_last = held, "bpffs mount unreachable (through /proc/<pid>/root: needs CAP_SYS_PTRACE); unexplained counts it could explain are withheld");
                    });
                }
                Ok(inv)
            });
            obs.pins = snap.inventory.as_ref().map(|inv| inv.map_pin_holders());
            prog_obs.pins = snap.inventory.as_ref().map(|inv| inv.prog_pin_holders());
            if let Some(inv) = &snap.inventory {
                if !inv.complete() {
                    obs.incomplete.push("pins");
                }
            }
        }
        // The exporter's own links: of its own programs. The node's links
        // become the snapshot's once the attachments and the graph, which
        // read every link, are done.
        let own_link_progs: rustc_hash::FxHashSet<u32> = self
            .own_progs
            .iter()
            .chain(&self.other_own_progs)
            .copied()
            .chain(snap.own_programs.iter().map(|p| p.id))
            .collect();
        let is_own_link = |l: &crate::bpf::census::LinkRecord| own_link_progs.contains(&l.prog_id);
        // The netdev part opens XDP and netns links by id for a moment
        // (BPF_LINK_GET_FD_BY_ID) while the task walks run: this process's
        // files of links not its own are those reads, never holders.
        if let (Some(files), Some(links)) = (prog_obs.files.as_mut(), &link_recs) {
            let me = std::process::id();
            let node: rustc_hash::FxHashSet<u32> = links
                .iter()
                .filter(|l| !is_own_link(l))
                .map(|l| l.id)
                .collect();
            files.retain(|f| !(f.tgid == me && f.kind == ObjectKind::Link && node.contains(&f.id)));
        }
        if let Some(links) = &link_recs {
            snap.own_links = links.iter().filter(|l| is_own_link(l)).count() as u64;
            snap.link_holders = links::holders(
                links.iter().filter(|l| !is_own_link(l)),
                prog_obs.files.as_deref(),
                snap.inventory.as_ref().map(|i| i.pins.as_slice()),
                prog_obs
                    .io_uring
                    .is_some()
                    .then_some(snap.io_uring.as_slice()),
            );
        }
        if p.on("creators") && snap.maps_ok && snap.features.map_memcg {
            let ids = creators::cgroup_ids(snap.maps.iter());
            let resolver = &mut self.creator_paths;
            snap.creator_paths = report.run("creators", || resolver.resolve(&ids));
            if let Some(paths) = &snap.creator_paths {
                snap.remembered_creators = self.creator_memory.update(&snap.maps, paths);
            }
        }
        if snap.maps_ok {
            let kfunc = snap.features.elem_count;
            let kernel = entries::Kernel {
                kfunc,
                elem_iter: snap.features.elem_iter,
            };
            if p.on("entries") {
                let counter = &mut self.entries;
                let progs = &self.progs;
                let maps = &mut snap.maps;
                if let Some((info, summary)) = report.run("entries", || {
                    Ok(counter.run(maps, kernel, &mut entries::Walks(progs), started.elapsed()))
                }) {
                    snap.entries = info;
                    snap.entries_summary = Some(summary);
                }
            }
            if snap.entries_summary.is_none() {
                // Only the kfunc's own counts of the types it counts.
                for m in snap.maps.iter_mut() {
                    if !(kfunc && entries::kfunc_counts(m.map_type)) {
                        m.elem_count = None;
                    }
                }
            }
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
            snap.object_files = prog_obs.files.clone();
        }
        if p.on("file_attachments") {
            let inflight_recs = match (&inflight_walk, p.on("inflight")) {
                (Some(w), true) => Some((w.records.as_slice(), w.complete())),
                (None, true) if !snap.features.iter_unix => Some((&[][..], false)),
                _ => None,
            };
            let input = attached::Input {
                files: attach_files.as_deref(),
                all_processes: host_pid == Some(true),
                links: link_recs.as_deref(),
                inflight: inflight_recs,
                io_uring: uring_attach.map(|c| (snap.io_uring.as_slice(), c)),
                tcp_orphans: std::fs::read_to_string("/proc/net/sockstat")
                    .ok()
                    .and_then(|s| attached::tcp_orphans(&s)),
            };
            for (k, src) in attached::sources(&input) {
                if let Some(why) = &src.incomplete {
                    tracing::debug!(source = k.source(), reason = %why, "program holder source incomplete");
                }
                prog_obs.attach.insert(k, src);
            }
        }
        // A walk that saw part of the node makes its program kinds incomplete too.
        for k in ["files", "pins", "links", "programs", "io_uring", "inflight"] {
            if obs.incomplete.contains(&k) {
                prog_obs.incomplete.extend(
                    programs::ProgHolderKind::ALL
                        .into_iter()
                        .filter(|pk| pk.source() == k),
                );
            }
        }
        if snap.programs.is_some() {
            (snap.cgroup_paths, obs.struct_ops) = self.attachments(
                &snap,
                link_recs.as_deref(),
                &unknown_tracing,
                &mut prog_obs,
                report,
            );
        }
        if let (Some((r, seconds)), true) = (netdev_read, snap.programs.is_some()) {
            if let Some(o) = report.record("netdev", seconds, r) {
                for (k, src) in o.sources {
                    if let Some(why) = &src.incomplete {
                        crate::logging::warn_repeated(
                            ("attachments incomplete", k.label()),
                            |held| {
                                tracing::debug!(kind = k.label(), reason = %why, more_since_last = held, "attachment source incomplete");
                            },
                        );
                    }
                    prog_obs.attach.insert(k, src);
                }
            }
        }
        if let Some(progs) = &snap.programs {
            snap.prog_holders = programs::holders(progs, &prog_obs);
            snap.attachments = prog_obs.attachments();
        }
        let (_, seconds) = measure(|| {
            if snap.maps_ok {
                // Unknown kinds (disabled parts) make `unexplained` unknown.
                let spare = std::mem::take(&mut self.spare.holders);
                snap.holders = holders::compute_in(&snap.maps, &obs, spare);
            }
            Ok(())
        });
        if snap.maps_ok && p.on("confirm") && !self.opts.confirm_delay.is_zero() {
            let _ = report.run("confirm", || self.confirm(&mut snap));
        }
        if snap.maps_ok {
            snap.graph = roots::build(&roots::GraphInput {
                maps: &snap.maps,
                map_holders: &snap.holders,
                files: obs.files.as_deref(),
                vmas: obs.vmas.as_deref(),
                pins: snap.inventory.as_ref().map(|i| i.pins.as_slice()),
                inflight: &snap.inflight,
                io_uring: &snap.io_uring,
                programs: snap.programs.as_deref(),
                prog_holders: &snap.prog_holders,
                attachments: &snap.attachments,
                object_files: prog_obs.files.as_deref(),
                links: link_recs.as_deref(),
                map_slots: map_slots.as_deref(),
                prog_slots: prog_slots.as_deref(),
            });
            snap.roots = roots::summarize(
                &snap.graph,
                &snap.maps,
                &snap.memory,
                snap.programs.as_deref(),
            );
            if let Some(progs) = &snap.programs {
                snap.prog_loaders = self.loaders.update(
                    progs,
                    self.load_records.as_deref(),
                    &mut self.loader_paths,
                );
                snap.prog_orphans = loaders::summarize(progs, &snap.prog_loaders, &snap.graph);
            }
        }
        let known = [
            ("files", obs.files.is_some()),
            ("mmaps", obs.files.is_some() && obs.vmas.is_some()),
            ("programs", obs.programs.is_some()),
            ("outer_maps", obs.slots.is_some()),
            ("links", obs.links.is_some()),
            ("pins", obs.pins.is_some()),
            ("inflight", obs.inflight.is_some()),
            ("io_uring", obs.files.is_some() && obs.io_uring.is_some()),
        ];
        snap.sources = known
            .into_iter()
            .map(|(n, k)| (n, k && !obs.incomplete.contains(&n)))
            .collect();
        if snap.programs.is_some() {
            let attachments_complete = programs::ProgHolderKind::ALL
                .into_iter()
                .filter(|k| k.is_attachment())
                .all(|k| prog_obs.complete(k));
            snap.prog_sources = programs::ProgHolderKind::ALL
                .into_iter()
                .map(|k| (k.source(), prog_obs.complete(k)))
                .chain([(
                    "attachments",
                    attachments_complete && programs::UNREAD_SOURCES.is_empty(),
                )])
                .chain(programs::UNREAD_SOURCES.iter().map(|&s| (s, false)))
                .collect();
        }
        snap.links = link_recs.map(|mut links| {
            links.retain(|l| !is_own_link(l));
            links
        });
        snap.host_pid_namespace = host_pid;
        if let Some(files) = obs.files.take() {
            self.spare.files = emptied(files);
        }
        tracing::debug!(seconds, "holder arithmetic");
        for o in &report.outcomes {
            tracing::debug!(part = o.name, seconds = o.seconds, "census part");
        }
        snap
    }

    /// The attachment parts: program references held by other programs and
    /// tracing links (`program_targets`), by cgroups (`cgroups`), and by
    /// maps (`map_programs`: sockmap slots, devmap and cpumap entries,
    /// struct_ops members). Each fills its kinds in `obs` or, off or
    /// failed, leaves them unknown. Returns the paths of the cgroups the
    /// cgroups part saw programs attached to, by id, and the struct_ops
    /// maps whose value the map_programs part read, with whether each is
    /// registered.
    #[allow(clippy::type_complexity)]
    fn attachments(
        &self,
        snap: &Snapshot,
        links: Option<&[crate::bpf::census::LinkRecord]>,
        unknown_tracing: &[u32],
        obs: &mut programs::Observed,
        report: &mut Report,
    ) -> (
        std::collections::HashMap<u64, String>,
        Option<Vec<(u32, bool)>>,
    ) {
        let mut cgroup_paths = std::collections::HashMap::new();
        let mut struct_ops = None;
        use programs::ProgHolderKind as K;
        let p = &self.opts.parts;
        let warn = |part: &'static str, why: &str| {
            crate::logging::warn_repeated(("attachment source incomplete", part), |held| {
                tracing::warn!(
                    part,
                    reason = why,
                    more_since_last = held,
                    "attachment source incomplete: counts it could explain are withheld"
                );
            });
        };
        if p.on("program_targets") {
            let progs = snap.programs.iter().flatten().chain(&snap.own_programs);
            // The exporter's own tracing links (the lifecycle probes) target
            // kernel functions, never programs.
            let own: rustc_hash::FxHashSet<u32> = self
                .own_progs
                .iter()
                .chain(&self.other_own_progs)
                .copied()
                .collect();
            let unknown: Vec<u32> = unknown_tracing
                .iter()
                .copied()
                .filter(|id| {
                    !links
                        .unwrap_or_default()
                        .iter()
                        .any(|l| l.id == *id && own.contains(&l.prog_id))
                })
                .collect();
            if let Some((found, why)) = report.run("program_targets", || {
                let (found, mut why) =
                    attach::program_targets(progs, links.unwrap_or_default(), &unknown);
                if links.is_none() {
                    why = Some(
                        "the links part is off or failed: tracing links' targets are unknown"
                            .into(),
                    );
                }
                Ok((found, why))
            }) {
                obs.targets = Some(found);
                if let Some(why) = why {
                    warn("program_targets", &why);
                    obs.incomplete.push(K::Program);
                }
            }
        }
        if p.on("cgroups") {
            if let Some(src) = report.run("cgroups", || {
                let mi = std::fs::read_to_string("/proc/self/mountinfo")
                    .context("reading /proc/self/mountinfo")?;
                let root = attach::hierarchy_root(&attach::cgroup2_mounts(&mi)).context(
                    "no cgroup v2 hierarchy is mounted: mount it (mount -t cgroup2 none /sys/fs/cgroup/unified), or in a container mount the host's /sys/fs/cgroup (deploy/daemonset.yaml does)",
                )?;
                let types: Option<std::collections::HashSet<u32>> = snap
                    .programs
                    .as_ref()
                    .map(|ps| ps.iter().chain(&snap.own_programs).map(|p| p.prog_type).collect());
                let types = attach::cgroup_attach_types(types.as_ref());
                let walk = attach::walk_cgroups(&root, attach::MAX_CGROUPS, &types)?;
                let paths = walk
                    .found
                    .iter()
                    .map(|c| (c.cgroup_id, c.path.display().to_string()))
                    .collect();
                Ok((attach::cgroup_attachments(walk, links), paths))
            }) {
                let (src, paths) = src;
                cgroup_paths = paths;
                if let Some(why) = &src.incomplete {
                    warn("cgroups", why);
                }
                obs.attach.insert(K::Cgroup, src);
            }
        }
        if p.on("map_programs") && snap.maps_ok {
            let all = || snap.maps.iter().chain(&snap.own);
            let buf = &self.bufs[0];
            if let Some((srcs, states)) = report.run("map_programs", || {
                let slots = crate::bpf::census::records::decode_sockmap_slots(buf)?;
                let (ops, states) = attach::struct_ops_attachments(all())?;
                Ok((
                    [
                        (K::Sockmap, attach::sockmap_attachments(&slots)),
                        (
                            K::Devmap,
                            attach::devmap_attachments(all(), attach::MAX_DEVMAP_LOOKUPS)?,
                        ),
                        (K::StructOps, ops),
                    ],
                    states,
                ))
            }) {
                struct_ops = Some(states);
                for (k, src) in srcs {
                    if let Some(why) = &src.incomplete {
                        warn("map_programs", why);
                    }
                    obs.attach.insert(k, src);
                }
            }
        }
        (cgroup_paths, struct_ops)
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod spare_tests {
    use super::emptied;

    #[test]
    fn spare_tables_keep_at_most_four_times_the_room_they_used() {
        let mut v: Vec<u64> = Vec::with_capacity(8192);
        v.extend(0..2048);
        let kept = emptied(v);
        assert!(kept.is_empty() && kept.capacity() >= 8192);
        let mut v: Vec<u64> = Vec::with_capacity(8193);
        v.extend(0..2048);
        assert_eq!(emptied(v).capacity(), 0, "more than 4x the room used");
        let small: Vec<u64> = Vec::with_capacity(4096);
        assert!(
            emptied(small).capacity() >= 4096,
            "1,024 entries count as used"
        );
    }
}
