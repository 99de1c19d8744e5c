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
//! - each iterator link attached to the map holds one ref + one uref.
use std::collections::{BTreeMap, HashSet};

use rustc_hash::{FxHashMap, FxHashSet};

use super::decode::{FileRecord, MapRecord};
use super::IdMap;

/// Holder kinds, as the `kind` label of `bpfmap_map_holders`.
pub const KINDS: [&str; 6] = ["file", "pin", "program", "map", "mmap", "link"];

/// Holder counts for one map. `None` where the part that counts that kind is
/// disabled or failed this scrape.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holders {
    pub counts: [Option<u64>; 6],
}

impl Holders {
    /// refcount minus every holder, or `None` when a holder kind is unknown.
    /// A negative difference (a holder appeared between the map census and
    /// the holder walk) reads 0: the series is a leak signal, and transient
    /// races must not page anyone.
    pub fn unexplained(&self, refcnt: i64) -> Option<i64> {
        let mut sum = 0i64;
        for c in self.counts {
            sum += c? as i64;
        }
        Some((refcnt - sum).max(0))
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
    /// For each iterator link attached to a map: that map's id.
    pub links: Option<Vec<u32>>,
    /// For each pinned map inode (deduplicated by (dev, ino)): its map id.
    pub pins: Option<Vec<u32>>,
}

fn count_by<I: IntoIterator<Item = u32>>(ids: I) -> IdMap<u64> {
    let ids = ids.into_iter();
    let mut m = IdMap::with_capacity_and_hasher(ids.size_hint().0, Default::default());
    for id in ids {
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

/// Per-map holder counts for every map in `maps`.
pub fn compute(maps: &[MapRecord], obs: &Observed) -> IdMap<Holders> {
    // Distinct files per map, from fd tables.
    let fd_files: Option<FxHashMap<u64, u32>> = obs.files.as_ref().map(|fs| {
        let mut m = FxHashMap::with_capacity_and_hasher(fs.len(), Default::default());
        m.extend(fs.iter().map(|f| (f.file_ptr, f.map_id)));
        m
    });
    let file_counts = fd_files.as_ref().map(|m| count_by(m.values().copied()));
    // Files only reachable through a vma (not in any fd table).
    let mmap_counts = obs.vmas.as_ref().and_then(|vs| {
        let in_fd = fd_files.as_ref()?;
        let only: FxHashMap<u64, u32> = vs
            .iter()
            .filter(|v| !in_fd.contains_key(&v.file_ptr))
            .map(|v| (v.file_ptr, v.map_id))
            .collect();
        Some(count_by(only.into_values()))
    });
    let prog_counts = obs.programs.as_ref().map(|ps| {
        count_by(
            ps.iter()
                .flat_map(|ids| ids.iter().copied().collect::<HashSet<_>>()),
        )
    });
    let slot_counts = obs.slots.as_ref().map(|s| count_by(s.iter().copied()));
    let link_counts = obs.links.as_ref().map(|l| count_by(l.iter().copied()));
    let pin_counts = obs.pins.as_ref().map(|p| count_by(p.iter().copied()));

    let per_kind = [
        file_counts,
        pin_counts,
        prog_counts,
        slot_counts,
        mmap_counts,
        link_counts,
    ];
    let mut out = IdMap::with_capacity_and_hasher(maps.len(), Default::default());
    out.extend(maps.iter().map(|m| {
        let mut h = Holders::default();
        for (i, kc) in per_kind.iter().enumerate() {
            h.counts[i] = kc.as_ref().map(|c| c.get(&m.id).copied().unwrap_or(0));
        }
        (m.id, h)
    }));
    out
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

    fn map(id: u32, refcnt: i64) -> MapRecord {
        MapRecord {
            map_ptr: id as u64 * 0x100,
            refcnt,
            usercnt: 0,
            elem_count: None,
            map_extra: 0,
            id,
            map_type: 2,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            map_flags: 0,
            frozen: false,
            is_outer: false,
            name: format!("m{id}"),
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
        }
    }

    fn all_known() -> Observed {
        Observed {
            files: Some(vec![]),
            vmas: Some(vec![]),
            programs: Some(vec![]),
            slots: Some(vec![]),
            links: Some(vec![]),
            pins: Some(vec![]),
        }
    }

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
        assert_eq!(h.counts[0], Some(2));
        assert_eq!(h.unexplained(2), Some(0));
    }

    #[test]
    fn every_kind_explains_its_share() {
        let maps = vec![map(1, 6), map(2, 1)];
        let obs = Observed {
            files: Some(vec![file(1, 1, 3, 0xf1, 1)]),
            vmas: Some(vec![file(1, 1, 0, 0xf1, 1), file(1, 1, 0, 0xf2, 1)]),
            programs: Some(vec![vec![1, 2], vec![1]]),
            slots: Some(vec![1]),
            links: Some(vec![]),
            pins: Some(vec![1]),
        };
        let hs = compute(&maps, &obs);
        // file 0xf1 is in an fd table and mapped: counted once, as a file.
        assert_eq!(
            hs[&1].counts,
            [Some(1), Some(1), Some(2), Some(1), Some(1), Some(0)]
        );
        assert_eq!(hs[&1].unexplained(6), Some(0));
        assert_eq!(hs[&2].counts[2], Some(1));
        assert_eq!(hs[&2].unexplained(1), Some(0));
    }

    #[test]
    fn unexplained_reference_is_reported() {
        // e.g. a map file in flight in an SCM_RIGHTS message.
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
        assert_eq!(h.counts[2], None);
        assert_eq!(h.unexplained(2), None);
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
        assert_eq!(compute(&maps, &obs)[&4].counts[2], Some(1));
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
