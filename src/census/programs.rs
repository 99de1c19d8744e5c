//! The programs part: every live program (`iter/bpf_prog`), what it uses
//! and what keeps it alive. Pure code (the walks feed it), unit-tested
//! without root.
//!
//! Kernel facts this follows (each holds one reference on the program, as
//! `bpf_prog_inc` / `bpf_prog_get` in kernel/bpf/syscall.c take them):
//! - a program *file* ("bpf-prog" anon inode), however many fds share it;
//! - a bpffs pin (an inode);
//! - a link (`bpf_link_init` keeps the program the link was created with);
//! - a `prog_array` slot (tail calls: `prog_fd_array_get_ptr`);
//! - a program file held only by io_uring registered-file tables;
//! - the attachments the kernel keeps without a link (XDP and tc on a
//!   netdev, cgroup attachments, perf events, socket filters, sockmap,
//!   struct_ops, flow dissector, an `freplace` target) and program files in
//!   flight. This build does not read those sources yet
//!   ([`UNREAD_SOURCES`]), so a program's unexplained count is known only
//!   where the holders it can read already explain every reference.
use std::collections::HashSet;

use super::IdMap;
use crate::bpf::census::{ObjectFile, ObjectKind, ProgRecord};

/// What explains a program reference: the `kind` label of
/// `bpfmap_program_holders`. Kinds that maps also have keep the maps' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProgHolderKind {
    /// A `struct file` of the program in some fd table.
    File,
    /// A bpffs pin (an inode).
    Pin,
    /// A link created with the program.
    Link,
    /// A `prog_array` slot holding the program (a tail-call target).
    ProgArray,
    /// A program file held only by io_uring registered-file tables.
    IoUring,
}

impl ProgHolderKind {
    /// Every kind, in label order; [`ProgHolders::counts`] is indexed by it.
    pub const ALL: [ProgHolderKind; 5] = [
        ProgHolderKind::File,
        ProgHolderKind::Pin,
        ProgHolderKind::Link,
        ProgHolderKind::ProgArray,
        ProgHolderKind::IoUring,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            ProgHolderKind::File => "file",
            ProgHolderKind::Pin => "pin",
            ProgHolderKind::Link => "link",
            ProgHolderKind::ProgArray => "prog_array",
            ProgHolderKind::IoUring => "io_uring",
        }
    }

    /// The census collector whose walk counts this kind.
    pub const fn source(self) -> &'static str {
        match self {
            ProgHolderKind::File => "files",
            ProgHolderKind::Pin => "pins",
            ProgHolderKind::Link => "links",
            ProgHolderKind::ProgArray => "programs",
            ProgHolderKind::IoUring => "io_uring",
        }
    }
}

/// Program reference holders that no walk of this build reads: published
/// as `bpfmap_program_holder_source_complete{source} 0`, and the reason a
/// program's refcount beyond its readable holders is withheld, never called
/// unexplained.
pub const UNREAD_SOURCES: &[&str] = &["attachments", "inflight"];

/// Holder counts for one program, indexed by [`ProgHolderKind`]; `None`
/// where the source is off or failed this scrape.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProgHolders {
    pub counts: [Option<u64>; ProgHolderKind::ALL.len()],
}

impl ProgHolders {
    pub fn get(&self, k: ProgHolderKind) -> Option<u64> {
        self.counts[k as usize]
    }

    /// Every kind with its count.
    pub fn iter(&self) -> impl Iterator<Item = (ProgHolderKind, Option<u64>)> + '_ {
        ProgHolderKind::ALL.iter().map(|&k| (k, self.get(k)))
    }

    /// The holders found (a lower bound of the refcount's explanation).
    pub fn known_sum(&self) -> i64 {
        self.counts.iter().flatten().map(|&c| c as i64).sum()
    }

    /// refcount minus every holder, when that is known.
    ///
    /// Invariant: a number is returned only when it is exact. Holders found
    /// are real, so when they explain the whole refcount nothing is
    /// unexplained (`Some(0)`). Otherwise an attachment, an in-flight file
    /// ([`UNREAD_SOURCES`]) could hold the rest, and the
    /// count is withheld.
    pub fn unexplained(&self, refcnt: i64) -> Option<i64> {
        (self.known_sum() >= refcnt).then_some(0)
    }

    /// Held by pins and nothing else this build can read: no file, link,
    /// tail-call slot or io_uring table. (A kernel attachment may still
    /// hold it.)
    pub fn pins_only(&self) -> bool {
        self.get(ProgHolderKind::Pin).unwrap_or(0) > 0
            && [
                ProgHolderKind::File,
                ProgHolderKind::Link,
                ProgHolderKind::ProgArray,
                ProgHolderKind::IoUring,
            ]
            .iter()
            .all(|&k| self.get(k) == Some(0))
    }
}

/// What one scrape's walks found about program holders; each field is
/// `None` when its source was off or failed.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Program files in fd tables (iter/task_file).
    pub files: Option<Vec<ObjectFile>>,
    /// For each pinned program inode (deduplicated by (dev, ino)): its id.
    pub pins: Option<Vec<u32>>,
    /// For each link: the id of its program.
    pub links: Option<Vec<u32>>,
    /// For each `prog_array` slot: the id of the program it holds.
    pub slots: Option<Vec<u32>>,
    /// For each program file in an io_uring table: (file address, program
    /// id), with repeats.
    pub io_uring: Option<Vec<(u64, u32)>>,
}

/// Per-program holder counts for every program in `progs`.
pub fn holders(progs: &[ProgRecord], obs: &Observed) -> IdMap<ProgHolders> {
    let known = |k: ProgHolderKind| match k {
        ProgHolderKind::File => obs.files.is_some(),
        ProgHolderKind::Pin => obs.pins.is_some(),
        ProgHolderKind::Link => obs.links.is_some(),
        ProgHolderKind::ProgArray => obs.slots.is_some(),
        ProgHolderKind::IoUring => obs.files.is_some() && obs.io_uring.is_some(),
    };
    let zero = ProgHolders {
        counts: ProgHolderKind::ALL.map(|k| known(k).then_some(0)),
    };
    let mut out: IdMap<ProgHolders> = progs.iter().map(|p| (p.id, zero.clone())).collect();
    let mut add = |kind: ProgHolderKind, id: u32| {
        if let Some(Some(c)) = out.get_mut(&id).map(|h| h.counts[kind as usize].as_mut()) {
            *c += 1;
        }
    };
    // Distinct files: dup, fork and SCM_RIGHTS share one struct file.
    let mut seen = HashSet::new();
    for f in obs.files.iter().flatten() {
        if f.kind == ObjectKind::Program && seen.insert(f.file_ptr) {
            add(ProgHolderKind::File, f.id);
        }
    }
    // Files only rings hold (in no fd table), once each.
    let mut ring_seen = HashSet::new();
    for &(ptr, id) in obs.io_uring.iter().flatten() {
        if !seen.contains(&ptr) && ring_seen.insert(ptr) {
            add(ProgHolderKind::IoUring, id);
        }
    }
    for (kind, ids) in [
        (ProgHolderKind::Pin, &obs.pins),
        (ProgHolderKind::Link, &obs.links),
        (ProgHolderKind::ProgArray, &obs.slots),
    ] {
        for &id in ids.iter().flatten() {
            add(kind, id);
        }
    }
    out
}

/// Programs whose every file holder is a proven peer (another instance of
/// this exporter, by executable: see the census): that instance's own, as
/// for maps.
pub fn peer_programs(
    files: &[ObjectFile],
    peers: &rustc_hash::FxHashSet<u32>,
    me: u32,
) -> HashSet<u32> {
    let mut peer: IdMap<bool> = IdMap::default();
    for f in files.iter().filter(|f| f.kind == ObjectKind::Program) {
        let is_peer = f.tgid != me && peers.contains(&f.tgid);
        *peer.entry(f.id).or_insert(true) &= is_peer;
    }
    peer.into_iter()
        .filter(|(_, p)| *p)
        .map(|(id, _)| id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn prog(id: u32, refcnt: i64, maps: &[u32]) -> ProgRecord {
        ProgRecord {
            prog_ptr: 0xffff_0000 + id as u64,
            refcnt,
            load_time_ns: 0,
            memlock: 4096,
            id,
            prog_type: 1,
            expected_attach_type: 0,
            used_map_cnt: maps.len() as u32,
            tag: [0; 8],
            name: format!("p{id}"),
            map_ids: maps.to_vec(),
        }
    }

    fn file(ptr: u64, id: u32, tgid: u32, comm: &[u8]) -> ObjectFile {
        ObjectFile {
            kind: ObjectKind::Program,
            id,
            file_ptr: ptr,
            cgroup_id: 0,
            tgid,
            pid: tgid,
            fd: 3,
            comm: comm.to_vec(),
        }
    }

    #[test]
    fn holders_count_distinct_files_pins_links_and_slots() {
        let progs = [prog(1, 5, &[]), prog(2, 1, &[])];
        let mut link_file = file(0x30, 1, 10, b"x");
        link_file.kind = ObjectKind::Link;
        let obs = Observed {
            // One file shared by two fds (dup), one more file; link files
            // are not program files.
            files: Some(vec![
                file(0x10, 1, 10, b"x"),
                file(0x10, 1, 11, b"x"),
                file(0x20, 1, 10, b"x"),
                link_file,
            ]),
            pins: Some(vec![1, 2]),
            links: Some(vec![1]),
            slots: Some(vec![1, 99]),
            io_uring: Some(vec![(0x20, 1), (0x40, 2), (0x40, 2)]),
        };
        let h = holders(&progs, &obs);
        let one = &h[&1];
        // A ring holding a file also in an fd table adds nothing; program 2's
        // file is in a ring only (twice): one holder.
        assert_eq!(one.get(ProgHolderKind::IoUring), Some(0));
        assert_eq!(h[&2].get(ProgHolderKind::IoUring), Some(1));
        assert_eq!(one.get(ProgHolderKind::File), Some(2));
        assert_eq!(one.get(ProgHolderKind::Pin), Some(1));
        assert_eq!(one.get(ProgHolderKind::Link), Some(1));
        assert_eq!(one.get(ProgHolderKind::ProgArray), Some(1));
        assert_eq!(one.unexplained(5), Some(0));
        assert!(!one.pins_only());
        assert!(!h[&2].pins_only());
        assert_eq!(h[&2].unexplained(1), Some(0));
    }

    #[test]
    fn an_unexplained_program_reference_is_withheld_never_guessed() {
        let progs = [prog(1, 3, &[])];
        let obs = Observed {
            files: Some(vec![file(0x10, 1, 10, b"x")]),
            pins: Some(vec![]),
            links: Some(vec![]),
            slots: Some(vec![]),
            io_uring: Some(vec![]),
        };
        // Two references beyond one file: an attachment this build cannot
        // read may hold them.
        assert_eq!(holders(&progs, &obs)[&1].unexplained(3), None);
        // A source that failed reads unknown, not zero.
        let obs = Observed { pins: None, ..obs };
        let h = &holders(&progs, &obs)[&1];
        assert_eq!(h.get(ProgHolderKind::Pin), None);
        assert!(!h.pins_only());
    }

    #[test]
    fn peer_programs_are_the_ones_only_peers_hold() {
        let files = [
            file(1, 7, 100, b"bpfmap-exporter"),
            file(2, 8, 100, b"bpfmap-exporter"),
            file(3, 8, 200, b"agent"),
            file(4, 9, 1, b"bpfmap-exporter"),
        ];
        // Program 9 is held by this process (pid 1): its own, not a peer's.
        let peers = rustc_hash::FxHashSet::from_iter([100]);
        assert_eq!(peer_programs(&files, &peers, 1), HashSet::from([7]));
        // A process named like the exporter but not proven one is no peer.
        assert!(peer_programs(&files, &Default::default(), 1).is_empty());
    }
}
