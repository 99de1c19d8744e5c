//! Holder arithmetic: which user-visible objects explain each map's refcount.
//! Pure code (no I/O), unit-tested without root.
//!
//! Kernel facts this follows (shared/GUIDE.md section 1):
//! - a map *file* holds one ref + one uref, however many fds or processes
//!   share it (dup, fork, SCM_RIGHTS), so files are counted by `struct file`
//!   address, not by fd;
//! - a bpffs pin (an inode) holds one ref + one uref; hard links share the inode;
//! - an mmap keeps `vm_file`, so a file reachable only through a vma is one more
//!   holder; a file both in an fd table and mapped counts once;
//! - each program using the map holds one ref (prog used_maps lists maps once);
//! - each outer-map slot holding the map holds one ref;
//! - each iterator link attached to the map holds one ref + one uref;
//! - a map file held only by SCM_RIGHTS messages in unix sockets' receive
//!   queues (in flight) is one holder, however many messages carry it; a file
//!   also in an fd table or behind a vma is counted there;
//! - a map file held only by io_uring registered-file tables is one holder,
//!   however many rings hold it; a file also in an fd table, behind a vma or
//!   in flight is counted there;
//! - a registered struct_ops map (its value's state is not INIT) is held by
//!   the kernel: one reference for a registration without a link, and,
//!   where users hold the map itself (6.4+, and some stable kernels), one
//!   per kernel object using its ops (a TCP socket using a BPF congestion
//!   control). Nothing else takes a reference without a user
//!   reference on a struct_ops map but programs using it and struct_ops
//!   links, so its `refcnt - usercnt`, less those, is exactly that count;
//! - every user reference (`usercnt`) is held by a map file (in an fd table,
//!   behind a vma, in flight or in an io_uring table), a pin or an iterator
//!   link (and, since 6.10, a sockmap link: one ref + one uref each). Where
//!   every file source and the links are complete, a map's pins therefore
//!   number `usercnt - files - links`, whether or not the pin walk reached
//!   them: pins a cut-short or denied walk missed are inferred, never guessed.
use std::collections::BTreeMap;

use rustc_hash::FxHashSet;

use super::ById;
use crate::bpf::census::{FileRecord, MapRecord};

/// What explains a reference: the `kind` label of `bpfmap_map_holders`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HolderKind {
    /// A `struct file` of the map in some fd table.
    File,
    /// A bpffs pin (an inode).
    Pin,
    /// A program that uses the map.
    Program,
    /// An outer-map slot holding the map.
    Map,
    /// A map file reachable only through a vma.
    Mmap,
    /// A link holding the map: an iterator link on it, or a struct_ops
    /// link registering it.
    Link,
    /// A map file in flight (SCM_RIGHTS, not yet received), in no fd table.
    Inflight,
    /// A map file held by io_uring registered-file tables only.
    IoUring,
    /// The kernel's references on a registered struct_ops map: its
    /// registration and the objects using its ops.
    StructOps,
}

impl HolderKind {
    /// Every kind, in label order; `Holders::counts` is indexed by it.
    pub const ALL: [HolderKind; 9] = [
        HolderKind::File,
        HolderKind::Pin,
        HolderKind::Program,
        HolderKind::Map,
        HolderKind::Mmap,
        HolderKind::Link,
        HolderKind::Inflight,
        HolderKind::IoUring,
        HolderKind::StructOps,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            HolderKind::File => "file",
            HolderKind::Pin => "pin",
            HolderKind::Program => "program",
            HolderKind::Map => "map",
            HolderKind::Mmap => "mmap",
            HolderKind::Link => "link",
            HolderKind::Inflight => "inflight",
            HolderKind::IoUring => "io_uring",
            HolderKind::StructOps => "struct_ops",
        }
    }
}

/// Holder counts for one map, indexed by [`HolderKind`]. `None` where the
/// part that counts that kind is disabled or failed this scrape. Compact: a
/// scrape keeps one per map of the node (a count of holders of one map
/// never nears u32::MAX, which counts saturate at).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holders {
    pub counts: [Option<u32>; HolderKind::ALL.len()],
    /// Every counted kind saw every holder it could (no walk cut short, no
    /// mount unreachable, the host's pid namespace). A count from an
    /// incomplete source is a lower bound.
    pub complete: bool,
    /// References the kernel released between the census and its
    /// confirming re-read (deferred frees): never unexplained.
    pub settled: i32,
    /// Pins the walk did not reach, inferred from `usercnt` (counted in the
    /// `Pin` kind; their paths are unknown).
    pub inferred_pins: u32,
}

/// A count as stored in [`Holders`]: saturated at u32::MAX.
pub fn count32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Holders {
    /// The count of one kind (None: unknown this scrape).
    pub fn get(&self, k: HolderKind) -> Option<u64> {
        self.counts[k as usize].map(u64::from)
    }

    /// Every kind with its count.
    pub fn iter(&self) -> impl Iterator<Item = (HolderKind, Option<u64>)> + '_ {
        HolderKind::ALL.iter().map(|&k| (k, self.get(k)))
    }

    /// refcount minus every holder, when that is known.
    ///
    /// Invariant: a number is returned only when it is exact. Holders found
    /// are always real, so when they already explain the whole refcount the
    /// map has no unexplained reference whatever an incomplete or unknown
    /// source missed (`Some(0)`). Otherwise a missed holder could explain the
    /// rest, and the count is withheld (`None`) unless every kind is known
    /// and complete. A negative difference (a holder appeared between the map
    /// census and the holder walk) reads 0: transient races must not page.
    pub fn unexplained(&self, refcnt: i64) -> Option<i64> {
        let sum = self.known_sum() + i64::from(self.settled);
        if sum >= refcnt {
            return Some(0);
        }
        if !self.complete || self.counts.iter().any(|c| c.is_none()) {
            return None;
        }
        Some(refcnt - sum)
    }

    /// The known holders' total (a lower bound where a source is incomplete).
    pub fn known_sum(&self) -> i64 {
        self.counts.iter().flatten().map(|&c| c as i64).sum()
    }
}

/// What one scrape's holder walks found. Each field is `None` when that part
/// was disabled or failed.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Map files in fd tables (iter/task_file).
    pub files: Option<Vec<FileRecord>>,
    /// Map files behind vmas (iter/task_vma).
    pub vmas: Option<Vec<FileRecord>>,
    /// For each program: the map ids it uses.
    pub programs: Option<Vec<Vec<u32>>>,
    /// For each outer-map slot: the inner map id it holds.
    pub slots: Option<Vec<u32>>,
    /// For each link holding a map (an iterator link on it, an attached
    /// struct_ops link registering it): that map's id.
    pub links: Option<Vec<u32>>,
    /// The struct_ops links among `links`, by map id: they hold a map
    /// reference but no user reference (`usercnt`), unlike iterator links.
    pub struct_ops_links: Vec<u32>,
    /// The struct_ops maps whose value could be read, with whether each is
    /// registered (state not INIT); a struct_ops map missing here has an
    /// unknown `struct_ops` count. `None`: no struct_ops map was read.
    pub struct_ops: Option<Vec<(u32, bool)>>,
    /// For each pinned map inode (deduplicated by (dev, ino)): its map id.
    pub pins: Option<Vec<u32>>,
    /// For each map file in flight that no fd table or vma holds
    /// (deduplicated by file): its map id.
    pub inflight: Option<Vec<u32>>,
    /// The struct file addresses of those files in flight.
    pub inflight_ptrs: Vec<u64>,
    /// For each map file in an io_uring registered-file table: (file
    /// address, map id), with repeats (several rings, several visits).
    pub io_uring: Option<Vec<(u64, u32)>>,
    /// Sources that ran but could not see every holder this scrape (a pin
    /// walk cut short or denied, an unreachable bpffs, a task walk confined
    /// to a non-initial pid namespace), by collector name.
    pub incomplete: Vec<&'static str>,
    /// Every holder of a user reference but pins can be seen on this kernel
    /// (fd tables, vmas, files in flight, io_uring tables and links are
    /// read, not assumed empty for want of an iterator): pins missed by the
    /// walk can then be inferred from `usercnt`.
    pub user_refs_visible: bool,
}

/// Per-map holder counts for every map in `maps`.
#[cfg(any(test, feature = "testing"))]
pub fn compute(maps: &[MapRecord], obs: &Observed) -> ById<Holders> {
    compute_in(maps, obs, Vec::new())
}

/// As [`compute`], with the table in `spare`'s memory.
pub fn compute_in(maps: &[MapRecord], obs: &Observed, spare: Vec<(u32, Holders)>) -> ById<Holders> {
    // Every map starts at 0 for each kind whose part ran, unknown otherwise.
    let mmaps_known = obs.files.is_some() && obs.vmas.is_some();
    let known = |k: HolderKind| match k {
        HolderKind::File => obs.files.is_some(),
        HolderKind::Pin => obs.pins.is_some(),
        HolderKind::Program => obs.programs.is_some(),
        HolderKind::Map => obs.slots.is_some(),
        HolderKind::Mmap => mmaps_known,
        HolderKind::Link => obs.links.is_some(),
        HolderKind::Inflight => obs.inflight.is_some(),
        HolderKind::IoUring => obs.files.is_some() && obs.io_uring.is_some(),
        // Per map below: only struct_ops maps can have one.
        HolderKind::StructOps => true,
    };
    let zero = Holders {
        counts: HolderKind::ALL.map(|k| known(k).then_some(0)),
        complete: obs.incomplete.is_empty(),
        settled: 0,
        inferred_pins: 0,
    };
    let mut out = ById::from_iter_in(spare, maps.iter().map(|m| (m.id, zero.clone())));
    let mut add = |kind: HolderKind, id: u32| {
        // Holders of maps outside the census (freed meanwhile, or the
        // exporter's own) are not counted.
        if let Some(Some(c)) = out.get_mut(&id).map(|h| h.counts[kind as usize].as_mut()) {
            *c = c.saturating_add(1);
        }
    };
    // Distinct files (struct file addresses) per map, from fd tables: dup,
    // fork and SCM_RIGHTS share one file.
    let fd_files = obs.files.as_ref().map(|fs| distinct_files(fs.iter()));
    if let Some(files) = &fd_files {
        for &(_, id) in files {
            add(HolderKind::File, id);
        }
    }
    // Files only reachable through a vma (not in any fd table).
    if let (Some(vs), Some(in_fd)) = (&obs.vmas, &fd_files) {
        let only = vs
            .iter()
            .filter(|v| in_fd.binary_search_by_key(&v.file_ptr, |f| f.0).is_err());
        for (_, id) in distinct_files(only) {
            add(HolderKind::Mmap, id);
        }
    }
    for (kind, ids) in [
        (HolderKind::Pin, &obs.pins),
        (HolderKind::Map, &obs.slots),
        (HolderKind::Link, &obs.links),
        (HolderKind::Inflight, &obs.inflight),
    ] {
        for &id in ids.iter().flatten() {
            add(kind, id);
        }
    }
    // Files only io_uring tables hold (in no fd table, behind no vma, not
    // in flight), once each however many rings hold them.
    if let (Some(ring), Some(in_fd)) = (&obs.io_uring, &fd_files) {
        let elsewhere: FxHashSet<u64> = obs
            .vmas
            .iter()
            .flatten()
            .map(|v| v.file_ptr)
            .chain(obs.inflight_ptrs.iter().copied())
            .collect();
        let mut seen = FxHashSet::default();
        for &(ptr, id) in ring {
            if seen.insert(ptr)
                && in_fd.binary_search_by_key(&ptr, |f| f.0).is_err()
                && !elsewhere.contains(&ptr)
            {
                add(HolderKind::IoUring, id);
            }
        }
    }
    // A program's used_maps lists each map once; dedupe anyway.
    for prog in obs.programs.iter().flatten() {
        let mut ids = prog.clone();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            add(HolderKind::Program, id);
        }
    }
    for m in maps.iter().filter(|m| m.map_type == STRUCT_OPS) {
        if let Some(h) = out.get_mut(&m.id) {
            let registered = obs
                .struct_ops
                .iter()
                .flatten()
                .find(|s| s.0 == m.id)
                .map(|s| s.1);
            h.counts[HolderKind::StructOps as usize] =
                struct_ops_refs(h, m, registered).map(count32);
        }
    }
    if pins_inferable(obs) {
        for m in maps {
            if let Some(h) = out.get_mut(&m.id) {
                let no_uref = obs
                    .struct_ops_links
                    .iter()
                    .filter(|&&id| id == m.id)
                    .count();
                infer_pins(h, m.usercnt, no_uref as u64);
            }
        }
    }
    out
}

/// `BPF_MAP_TYPE_STRUCT_OPS`.
const STRUCT_OPS: u32 = 26;

/// The kernel's references on struct_ops map `m` (`registered`: its state,
/// `None` where its value was not read): its references without a user
/// reference, less the programs using it and its links (struct_ops links
/// hold no user reference); 0 while it is not registered. Unknown where
/// the programs, the links or its state were not read.
fn struct_ops_refs(h: &Holders, m: &MapRecord, registered: Option<bool>) -> Option<u64> {
    let progs = h.get(HolderKind::Program)?;
    let links = h.get(HolderKind::Link)?;
    match registered? {
        false => Some(0),
        true => Some(((m.refcnt - m.usercnt) - progs as i64 - links as i64).max(0) as u64),
    }
}

/// Whether the pin walk alone is incomplete (or off) while every other
/// holder of a user reference is seen completely.
fn pins_inferable(obs: &Observed) -> bool {
    obs.user_refs_visible
        && obs.files.is_some()
        && obs.vmas.is_some()
        && obs.inflight.is_some()
        && obs.io_uring.is_some()
        && obs.links.is_some()
        && obs.incomplete.iter().all(|&s| s == "pins")
        && (obs.pins.is_none() || obs.incomplete.contains(&"pins"))
}

/// Counts the pins of a map that the walk missed: `usercnt` less every other
/// user-reference holder (`no_uref_links` of its links hold none). Fewer
/// than the walk saw means a holder appeared after `usercnt` was read; the
/// pins seen are real, and stay.
fn infer_pins(h: &mut Holders, usercnt: i64, no_uref_links: u64) {
    let others: i64 = [
        HolderKind::File,
        HolderKind::Mmap,
        HolderKind::Inflight,
        HolderKind::IoUring,
        HolderKind::Link,
    ]
    .iter()
    .map(|&k| h.get(k).unwrap_or(0) as i64)
    .sum::<i64>()
        - no_uref_links as i64;
    let seen = h.get(HolderKind::Pin).unwrap_or(0);
    let inferred = (usercnt - others).max(0) as u64;
    h.inferred_pins = count32(inferred.saturating_sub(seen));
    h.counts[HolderKind::Pin as usize] = Some(count32(seen.max(inferred)));
    h.complete = true;
}

/// (file address, map id) of each distinct file, sorted by address.
fn distinct_files<'a>(files: impl Iterator<Item = &'a FileRecord>) -> Vec<(u64, u32)> {
    let mut v: Vec<(u64, u32)> = files.map(|f| (f.file_ptr, f.map_id)).collect();
    v.sort_unstable();
    v.dedup_by_key(|f| f.0);
    v
}

/// One process that holds map files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessHolder {
    pub tgid: u32,
    pub comm: Vec<u8>,
    pub cgroup_id: u64,
    /// Distinct map files in its fd table.
    pub files: u64,
    /// Distinct fds pointing at map files (>= files with dup).
    pub fds: u64,
    /// Distinct map files it has mapped but holds in no fd.
    pub mmap_only_files: u64,
}

/// Per-process aggregation, keyed by tgid (threads fold into their process).
pub fn processes(files: &[FileRecord], vmas: &[FileRecord]) -> Vec<ProcessHolder> {
    struct Acc {
        comm: Vec<u8>,
        cgroup_id: u64,
        files: FxHashSet<u64>,
        fds: FxHashSet<u32>,
        vma_files: FxHashSet<u64>,
    }
    let mut by: BTreeMap<u32, Acc> = BTreeMap::new();
    let new_acc = |f: &FileRecord| Acc {
        comm: f.comm.clone(),
        cgroup_id: f.cgroup_id,
        files: FxHashSet::default(),
        fds: FxHashSet::default(),
        vma_files: FxHashSet::default(),
    };
    for f in files {
        let a = by.entry(f.tgid).or_insert_with(|| new_acc(f));
        // Prefer the thread-group leader's comm.
        if f.pid == f.tgid {
            a.comm = f.comm.clone();
        }
        a.files.insert(f.file_ptr);
        a.fds.insert(f.fd);
    }
    for v in vmas {
        let a = by.entry(v.tgid).or_insert_with(|| new_acc(v));
        a.vma_files.insert(v.file_ptr);
    }
    by.into_iter()
        .map(|(tgid, a)| ProcessHolder {
            tgid,
            comm: a.comm,
            cgroup_id: a.cgroup_id,
            files: a.files.len() as u64,
            fds: a.fds.len() as u64,
            mmap_only_files: a.vma_files.difference(&a.files).count() as u64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::census::testutil::map_record;

    fn map(id: u32, refcnt: i64) -> MapRecord {
        MapRecord {
            map_ptr: id as u64 * 0x100,
            refcnt,
            usercnt: 0,
            map_type: 2,
            value_size: 4,
            ..map_record(id)
        }
    }

    fn file(tgid: u32, pid: u32, fd: u32, ptr: u64, map_id: u32) -> FileRecord {
        FileRecord {
            file_ptr: ptr,
            cgroup_id: 1,
            tgid,
            pid,
            fd,
            map_id,
            comm: b"loader".to_vec(),
            vm_start: 0,
            vm_end: 0,
            sock_ino: 0,
        }
    }

    use crate::census::testutil::observed_all_known as all_known;

    #[test]
    fn dup_and_fork_share_one_file() {
        let maps = vec![map(7, 2)];
        let mut obs = all_known();
        // fd 3 and its dup fd 4 in the parent, fd 3 inherited by a child: one
        // struct file; plus a second file from GET_FD_BY_ID.
        obs.files = Some(vec![
            file(100, 100, 3, 0xa, 7),
            file(100, 100, 4, 0xa, 7),
            file(200, 200, 3, 0xa, 7),
            file(100, 100, 5, 0xb, 7),
        ]);
        let h = &compute(&maps, &obs)[&7];
        assert_eq!(h.get(HolderKind::File), Some(2));
        assert_eq!(h.unexplained(2), Some(0));
    }

    #[test]
    fn every_kind_explains_its_share() {
        let maps = vec![map(1, 7), map(2, 1)];
        let obs = Observed {
            files: Some(vec![file(1, 1, 3, 0xf1, 1)]),
            vmas: Some(vec![file(1, 1, 0, 0xf1, 1), file(1, 1, 0, 0xf2, 1)]),
            programs: Some(vec![vec![1, 2], vec![1]]),
            slots: Some(vec![1]),
            links: Some(vec![]),
            pins: Some(vec![1]),
            inflight: Some(vec![1]),
            inflight_ptrs: vec![],
            struct_ops_links: vec![],
            struct_ops: None,
            io_uring: Some(vec![]),
            incomplete: vec![],
            user_refs_visible: true,
        };
        let hs = compute(&maps, &obs);
        // file 0xf1 is in an fd table and mapped: counted once, as a file.
        assert_eq!(
            hs[&1].counts,
            [
                Some(1),
                Some(1),
                Some(2),
                Some(1),
                Some(1),
                Some(0),
                Some(1),
                Some(0),
                Some(0)
            ]
        );
        assert_eq!(hs[&1].unexplained(7), Some(0));
        assert_eq!(hs[&2].get(HolderKind::Program), Some(1));
        assert_eq!(hs[&2].unexplained(1), Some(0));
    }

    #[test]
    fn a_file_only_io_uring_tables_hold_is_one_holder_and_elsewhere_none() {
        // Map 4's file 0xa is in a ring twice (two rings, or two visits)
        // and nowhere else; map 5's file 0xb is also in an fd table; map 6's
        // file 0xc is also in flight.
        let maps = vec![map(4, 1), map(5, 1), map(6, 1)];
        let obs = Observed {
            files: Some(vec![file(1, 1, 3, 0xb, 5)]),
            io_uring: Some(vec![(0xa, 4), (0xa, 4), (0xb, 5), (0xc, 6)]),
            inflight: Some(vec![6]),
            inflight_ptrs: vec![0xc],
            ..all_known()
        };
        let hs = compute(&maps, &obs);
        assert_eq!(hs[&4].get(HolderKind::IoUring), Some(1));
        assert_eq!(hs[&4].unexplained(1), Some(0));
        assert_eq!(hs[&5].get(HolderKind::IoUring), Some(0));
        assert_eq!(hs[&5].get(HolderKind::File), Some(1));
        assert_eq!(hs[&6].get(HolderKind::IoUring), Some(0));
        assert_eq!(hs[&6].get(HolderKind::Inflight), Some(1));
        // Rings not read: unknown, so a map they could explain is withheld.
        let obs = Observed {
            io_uring: None,
            ..all_known()
        };
        assert_eq!(compute(&[map(4, 1)], &obs)[&4].unexplained(1), None);
    }

    #[test]
    fn in_flight_file_explains_its_reference_and_unknown_in_flight_withholds() {
        let maps = vec![map(3, 2)];
        let mut obs = all_known();
        obs.pins = Some(vec![3]);
        obs.inflight = Some(vec![3]);
        let h = &compute(&maps, &obs)[&3];
        assert_eq!(h.get(HolderKind::Inflight), Some(1));
        assert_eq!(h.unexplained(2), Some(0));
        obs.inflight = None;
        assert_eq!(compute(&maps, &obs)[&3].unexplained(2), None);
    }

    fn with_usercnt(id: u32, refcnt: i64, usercnt: i64) -> MapRecord {
        MapRecord {
            usercnt,
            ..map(id, refcnt)
        }
    }

    #[test]
    fn pins_a_cut_short_walk_missed_are_inferred_and_the_leak_stays_exact() {
        // Map 9: one file, one program, two pins the walk never reached
        // (too deep, or in a mount it cannot enter) and one reference
        // nothing explains: refcnt 5, usercnt 3.
        let maps = vec![with_usercnt(9, 5, 3)];
        let obs = Observed {
            files: Some(vec![file(1, 1, 3, 0xa, 9)]),
            programs: Some(vec![vec![9]]),
            incomplete: vec!["pins"],
            ..all_known()
        };
        let h = &compute(&maps, &obs)[&9];
        assert_eq!(h.get(HolderKind::Pin), Some(2));
        assert_eq!(h.inferred_pins, 2);
        assert!(h.complete);
        assert_eq!(h.unexplained(5), Some(1));
        // The walk saw one of the two: one more is inferred.
        let obs = Observed {
            pins: Some(vec![9]),
            ..obs
        };
        let h = &compute(&maps, &obs)[&9];
        assert_eq!((h.get(HolderKind::Pin), h.inferred_pins), (Some(2), 1));
        assert_eq!(h.unexplained(5), Some(1));
        // The pin walk off altogether: the same inference.
        let obs = Observed { pins: None, ..obs };
        assert_eq!(compute(&maps, &obs)[&9].unexplained(5), Some(1));
    }

    #[test]
    fn pins_are_not_inferred_when_another_user_reference_source_is_blind() {
        let maps = vec![with_usercnt(9, 5, 3)];
        let base = Observed {
            files: Some(vec![file(1, 1, 3, 0xa, 9)]),
            programs: Some(vec![vec![9]]),
            incomplete: vec!["pins"],
            ..all_known()
        };
        for obs in [
            // Files in flight incomplete too.
            Observed {
                incomplete: vec!["pins", "inflight"],
                ..base.clone()
            },
            // No iter/task_vma or iter/unix on this kernel: mmap-only and
            // in-flight files read as empty, not seen.
            Observed {
                user_refs_visible: false,
                ..base.clone()
            },
            // Links not read.
            Observed {
                links: None,
                ..base.clone()
            },
        ] {
            let h = &compute(&maps, &obs)[&9];
            assert_eq!(h.inferred_pins, 0);
            assert_eq!(h.unexplained(5), None, "{obs:?}");
        }
    }

    #[test]
    fn struct_ops_link_holds_a_reference_but_no_user_reference() {
        // A pinned struct_ops map registered through a link: refcnt 2 (pin,
        // link), usercnt 1 (the pin only). The pin walk was cut short.
        let maps = vec![with_usercnt(9, 2, 1)];
        let obs = Observed {
            links: Some(vec![9]),
            struct_ops_links: vec![9],
            incomplete: vec!["pins"],
            ..all_known()
        };
        let h = &compute(&maps, &obs)[&9];
        assert_eq!(h.get(HolderKind::Link), Some(1));
        assert_eq!((h.get(HolderKind::Pin), h.inferred_pins), (Some(1), 1));
        assert_eq!(h.unexplained(2), Some(0));
        // An iterator link holds a user reference: usercnt 2 then, and the
        // same single pin is inferred.
        let maps = vec![with_usercnt(9, 2, 2)];
        let obs = Observed {
            struct_ops_links: vec![],
            ..obs
        };
        let h = &compute(&maps, &obs)[&9];
        assert_eq!((h.get(HolderKind::Pin), h.inferred_pins), (Some(1), 1));
        assert_eq!(h.unexplained(2), Some(0));
    }

    fn struct_ops(id: u32, refcnt: i64, usercnt: i64) -> MapRecord {
        MapRecord {
            map_type: STRUCT_OPS,
            ..with_usercnt(id, refcnt, usercnt)
        }
    }

    #[test]
    fn a_registered_struct_ops_map_is_held_by_the_kernel_and_a_leak_stays_exact() {
        // Registered without a link, used by two sockets (6.4+), with the
        // loader's fd: refcnt 4, usercnt 1.
        let maps = vec![struct_ops(9, 4, 1)];
        let obs = Observed {
            files: Some(vec![file(1, 1, 3, 0xa, 9)]),
            struct_ops: Some(vec![(9, true)]),
            ..all_known()
        };
        let h = &compute(&maps, &obs)[&9];
        assert_eq!(h.get(HolderKind::StructOps), Some(3));
        assert_eq!(h.unexplained(4), Some(0));
        // A user reference nothing explains (a file the walks missed) is
        // still exact: the kernel's share never covers a user reference.
        let maps = vec![struct_ops(9, 5, 2)];
        let h = &compute(&maps, &obs)[&9];
        assert_eq!(h.get(HolderKind::StructOps), Some(3));
        assert_eq!(h.unexplained(5), Some(1));
        // Through a link: the link's reference is the link's, not the
        // kernel's (refcnt 2: the fd and the link).
        let maps = vec![struct_ops(9, 2, 1)];
        let obs_link = Observed {
            links: Some(vec![9]),
            struct_ops_links: vec![9],
            ..obs.clone()
        };
        let h = &compute(&maps, &obs_link)[&9];
        assert_eq!(h.get(HolderKind::StructOps), Some(0));
        assert_eq!(h.get(HolderKind::Link), Some(1));
        assert_eq!(h.unexplained(2), Some(0));
    }

    #[test]
    fn an_unregistered_struct_ops_map_has_no_kernel_holder() {
        // Never registered (state INIT): a reference beyond its fd is
        // unexplained.
        let maps = vec![struct_ops(9, 2, 1)];
        let obs = Observed {
            files: Some(vec![file(1, 1, 3, 0xa, 9)]),
            struct_ops: Some(vec![(9, false)]),
            ..all_known()
        };
        let h = &compute(&maps, &obs)[&9];
        assert_eq!(h.get(HolderKind::StructOps), Some(0));
        assert_eq!(h.unexplained(2), Some(1));
    }

    #[test]
    fn a_struct_ops_map_whose_state_was_not_read_is_withheld() {
        let maps = vec![struct_ops(9, 2, 1), map(3, 1)];
        for obs in [
            // Its value was not read (the part off, or its lookup failed).
            Observed {
                files: Some(vec![file(1, 1, 3, 0xa, 9), file(1, 1, 4, 0xb, 3)]),
                struct_ops: None,
                ..all_known()
            },
            // The programs using it are unknown.
            Observed {
                files: Some(vec![file(1, 1, 3, 0xa, 9), file(1, 1, 4, 0xb, 3)]),
                struct_ops: Some(vec![(9, true)]),
                programs: None,
                ..all_known()
            },
        ] {
            let hs = compute(&maps, &obs);
            assert_eq!(hs[&9].get(HolderKind::StructOps), None, "{obs:?}");
            assert_eq!(hs[&9].unexplained(2), None, "{obs:?}");
            // Other maps never have one, whatever was read.
            assert_eq!(hs[&3].get(HolderKind::StructOps), Some(0));
        }
    }

    #[test]
    fn pins_seen_beyond_what_usercnt_implies_stay() {
        // A pin made after usercnt was read: the walk's pins are real.
        let maps = vec![with_usercnt(9, 2, 1)];
        let obs = Observed {
            pins: Some(vec![9, 9]),
            incomplete: vec!["pins"],
            ..all_known()
        };
        let h = &compute(&maps, &obs)[&9];
        assert_eq!((h.get(HolderKind::Pin), h.inferred_pins), (Some(2), 0));
        assert_eq!(h.unexplained(2), Some(0));
    }

    #[test]
    fn unexplained_reference_is_reported() {
        // e.g. an io_uring fixed file.
        let maps = vec![map(3, 2)];
        let mut obs = all_known();
        obs.pins = Some(vec![3]);
        assert_eq!(compute(&maps, &obs)[&3].unexplained(2), Some(1));
    }

    #[test]
    fn unknown_kind_means_unknown_unexplained() {
        let maps = vec![map(3, 2)];
        let mut obs = all_known();
        obs.programs = None;
        let h = &compute(&maps, &obs)[&3];
        assert_eq!(h.get(HolderKind::Program), None);
        assert_eq!(h.unexplained(2), None);
    }

    #[test]
    fn unknown_kind_still_knows_a_fully_explained_map() {
        // Known holders already explain the whole refcount: nothing a
        // disabled or incomplete source could add makes a leak.
        let maps = vec![map(3, 1)];
        let mut obs = all_known();
        obs.programs = None;
        obs.files = Some(vec![file(1, 1, 3, 0x1, 3)]);
        assert_eq!(compute(&maps, &obs)[&3].unexplained(1), Some(0));
    }

    #[test]
    fn incomplete_source_withholds_unexplained() {
        // A walk of files in flight cut short may have missed this map's
        // file (and then pins cannot be inferred either).
        let maps = vec![map(3, 2), map(4, 1)];
        let mut obs = all_known();
        obs.incomplete = vec!["inflight", "pins"];
        obs.files = Some(vec![file(1, 1, 3, 0x1, 3)]);
        let hs = compute(&maps, &obs);
        assert_eq!(hs[&3].unexplained(2), None);
        assert_eq!(hs[&4].unexplained(1), None);
        obs.incomplete.clear();
        assert_eq!(compute(&maps, &obs)[&3].unexplained(2), Some(1));
    }

    #[test]
    fn race_never_reports_negative() {
        let maps = vec![map(3, 0)];
        let mut obs = all_known();
        obs.files = Some(vec![file(1, 1, 3, 0x1, 3)]);
        assert_eq!(compute(&maps, &obs)[&3].unexplained(0), Some(0));
    }

    #[test]
    fn program_listing_a_map_twice_counts_once() {
        let maps = vec![map(4, 1)];
        let mut obs = all_known();
        obs.programs = Some(vec![vec![4, 4]]);
        assert_eq!(compute(&maps, &obs)[&4].get(HolderKind::Program), Some(1));
    }

    #[test]
    fn processes_fold_threads_and_count_files_not_fds() {
        let files = vec![
            file(10, 10, 3, 0xa, 1),
            file(10, 11, 3, 0xa, 1), // a thread repeating the same table (5.8)
            file(10, 10, 4, 0xa, 1), // dup
            file(10, 10, 5, 0xb, 2),
            file(20, 20, 3, 0xa, 1), // forked child
        ];
        let vmas = vec![file(10, 10, 0, 0xc, 3), file(10, 10, 0, 0xb, 2)];
        let ps = processes(&files, &vmas);
        assert_eq!(ps.len(), 2);
        assert_eq!(
            (ps[0].tgid, ps[0].files, ps[0].fds, ps[0].mmap_only_files),
            (10, 2, 3, 1)
        );
        assert_eq!((ps[1].tgid, ps[1].files, ps[1].fds), (20, 1, 1));
    }
}
