//! What a census is asked for (its parts and options) and what it returns:
//! the data-only [`Snapshot`].
use std::collections::HashMap;
use std::path::PathBuf;

use super::programs::ProgHolders;
use super::{
    bpffs, entries, inflight, Features, FileRecord, Holders, MapRecord, ObjectFile, ProcessHolder,
    ProgRecord,
};

/// Map id -> value with a fast hasher: per-map tables have 100k entries on
/// big nodes and SipHash dominated the holder arithmetic there.
pub type IdMap<V> = HashMap<u32, V, rustc_hash::FxBuildHasher>;

/// Object id -> value in one array sorted by id: a scrape's per-object
/// holder tables are built in id order (the kernel's iterators walk ids in
/// order) and read by id with a binary search, without a hash table's empty
/// buckets or scattered writes into fresh memory. Inserting out of order
/// shifts the array: for tables built once per scrape, not for caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ById<V> {
    entries: Vec<(u32, V)>,
}

/// Look-ups in a [`ById`] by ids that mostly ascend (the census's maps are
/// in id order): each search gallops forward from where the last one ended,
/// so reading a table in id order is one pass over it, and an id below the
/// last one read is found by a binary search from the start.
pub struct Cursor<'a, V> {
    entries: &'a [(u32, V)],
    /// Every entry before `at` has an id below the last id looked up.
    at: usize,
}

impl<'a, V> Cursor<'a, V> {
    pub fn get(&mut self, id: u32) -> Option<&'a V> {
        let e = self.entries;
        let mut lo = if self.at > 0 && e[self.at - 1].0 >= id {
            0
        } else {
            self.at
        };
        // Every entry before `lo` has an id below `id`.
        let mut step = 1;
        while lo + step <= e.len() && e[lo + step - 1].0 < id {
            lo += step;
            step *= 2;
        }
        let hi = (lo + step).min(e.len());
        let i = lo + e[lo..hi].partition_point(|x| x.0 < id);
        self.at = i;
        e.get(i).filter(|x| x.0 == id).map(|x| &x.1)
    }
}

impl<V> Default for ById<V> {
    fn default() -> Self {
        ById {
            entries: Vec::new(),
        }
    }
}

impl<V> ById<V> {
    /// The entries' memory, for [`ById::from_iter_in`].
    pub fn into_entries(self) -> Vec<(u32, V)> {
        self.entries
    }

    fn find(&self, id: u32) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&id, |e| e.0)
    }

    pub fn get(&self, id: &u32) -> Option<&V> {
        self.find(*id).ok().map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, id: &u32) -> Option<&mut V> {
        self.find(*id).ok().map(|i| &mut self.entries[i].1)
    }

    pub fn contains_key(&self, id: &u32) -> bool {
        self.find(*id).is_ok()
    }

    /// Set `id`'s value, returning the one it replaces.
    pub fn insert(&mut self, id: u32, v: V) -> Option<V> {
        if self.entries.last().is_none_or(|e| e.0 < id) {
            self.entries.push((id, v));
            return None;
        }
        match self.find(id) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, v)),
            Err(i) => {
                self.entries.insert(i, (id, v));
                None
            }
        }
    }

    pub fn remove(&mut self, id: &u32) -> Option<V> {
        self.find(*id).ok().map(|i| self.entries.remove(i).1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A reader for look-ups by ids that mostly ascend (see [`Cursor`]).
    pub fn cursor(&self) -> Cursor<'_, V> {
        Cursor {
            entries: &self.entries,
            at: 0,
        }
    }

    /// Values in id order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|e| &e.1)
    }

    /// (id, value) in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&u32, &V)> {
        self.entries.iter().map(|e| (&e.0, &e.1))
    }
}

impl<V> FromIterator<(u32, V)> for ById<V> {
    /// As a map would: a repeated id keeps its last value.
    fn from_iter<I: IntoIterator<Item = (u32, V)>>(iter: I) -> Self {
        ById::from_iter_in(Vec::new(), iter)
    }
}

impl<V> ById<V> {
    /// As `collect`, into `spare`'s memory (its entries are dropped first).
    pub fn from_iter_in<I: IntoIterator<Item = (u32, V)>>(
        mut spare: Vec<(u32, V)>,
        iter: I,
    ) -> Self {
        spare.clear();
        spare.extend(iter);
        let mut entries = spare;
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            entries.reverse();
            entries.sort_by_key(|e| e.0);
            entries.dedup_by_key(|e| e.0);
        }
        ById { entries }
    }
}

impl<V> std::ops::Index<&u32> for ById<V> {
    type Output = V;
    fn index(&self, id: &u32) -> &V {
        self.get(id).expect("no entry for this id")
    }
}

impl<'a, V> IntoIterator for &'a ById<V> {
    type Item = (&'a u32, &'a V);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, (u32, V)>, fn(&'a (u32, V)) -> (&'a u32, &'a V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|e| (&e.0, &e.1))
    }
}

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
            on: crate::registry::REGISTRY
                .iter()
                .filter(|s| s.stage == crate::registry::Stage::Census && on(s.name))
                .map(|s| s.name)
                .collect(),
        }
    }

    /// Every census collector but these.
    #[cfg(any(test, feature = "testing"))]
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
    /// Delay before each confirming re-read of maps with unexplained
    /// references; zero publishes the first reading.
    pub confirm_delay: std::time::Duration,
    /// Time each scrape may spend counting elements by iteration.
    pub entries_budget: entries::Budget,
    /// `--collector.entries.method`.
    pub entries_method: entries::Choice,
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
            confirm_delay: std::time::Duration::from_millis(100),
            entries_budget: entries::DEFAULT_BUDGET,
            entries_method: entries::Choice::Auto,
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
    pub memory: ById<u64>,
    /// Map id -> holders by kind.
    pub holders: ById<Holders>,
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
    /// Each holder source (collector name) and whether it was complete this
    /// scrape (off or failed counts as incomplete).
    pub sources: Vec<(&'static str, bool)>,
    /// References that looked unexplained at the census and were released
    /// before the confirming re-reads ended (deferred frees).
    pub settled_refs: u64,
    /// Whether the exporter sees the host's pid namespace (None: unknown).
    pub host_pid_namespace: Option<bool>,
    /// Map files in flight that no fd table or vma holds, with receivers.
    pub inflight: Vec<inflight::InflightFile>,
    /// Map id -> how long its oldest in-flight file has been in flight (as
    /// far as this exporter has seen: since it first saw it there).
    pub inflight_ages: IdMap<std::time::Duration>,
    /// Network namespaces the in-flight walk covered and could not cover,
    /// when it ran.
    pub inflight_netns: Option<(u32, u32)>,
    /// Map id -> how its element count was obtained, for every map with one.
    pub entries: IdMap<entries::CountInfo>,
    /// The element counting of this scrape, when the entries part ran.
    pub entries_summary: Option<entries::Summary>,
    /// Every live program except the exporter's own, when the programs
    /// part ran and succeeded.
    pub programs: Option<Vec<ProgRecord>>,
    /// The exporter's own programs (reported apart, never as the node's).
    pub own_programs: Vec<ProgRecord>,
    /// Program id -> holders by kind.
    pub prog_holders: ById<ProgHolders>,
    /// Each program holder source and whether it was complete this scrape
    /// (sources this build cannot read are listed as incomplete).
    pub prog_sources: Vec<(&'static str, bool)>,
    /// Every live link except the exporter's own, when the links part ran.
    pub links: Option<Vec<crate::bpf::census::LinkRecord>>,
    /// Link id -> holders by kind.
    pub link_holders: IdMap<super::links::LinkHolders>,
    /// The exporter's own links (of its own programs).
    pub own_links: u64,
    /// Cgroup id -> path, for the cgroups the cgroups part saw programs
    /// attached to (cgroup links' targets), when it ran.
    pub cgroup_paths: HashMap<u64, String>,
    /// Program references held by attachments, other programs and tracing
    /// links; an attachment root names its index here.
    pub attachments: Vec<super::programs::Attachment>,
    /// Program and link files in fd tables, with `CensusOpts::keep_files`.
    pub object_files: Option<Vec<ObjectFile>>,
    /// BPF object files in io_uring registered-file tables, by the tasks
    /// holding the rings (when the io_uring part ran).
    pub io_uring: Vec<super::UringRecord>,
    /// Who holds each map and program, through every chain, to the roots.
    pub graph: super::roots::Graph,
    /// Map id -> the container and pod resolved while its creating cgroup
    /// lived, for maps whose creating cgroup is gone.
    pub remembered_creators: IdMap<super::creators::RememberedCreator>,
    /// Orphans and the memory each pin alone retains.
    pub roots: super::roots::Summary,
    /// Program id -> its loader, or why it is unknown, for every live
    /// program (when the programs part ran).
    pub prog_loaders: IdMap<super::loaders::ProgLoader>,
    /// Orphaned programs and the withheld verdicts.
    pub prog_orphans: super::loaders::ProgOrphans,
    /// When the machine booted, Unix seconds (CLOCK_REALTIME less
    /// CLOCK_BOOTTIME at the census): converts kernel boot-time stamps.
    pub boot_unix: Option<f64>,
    /// Process lookups for the explain report, built on first use.
    pub proc_index: ProcIndexCell,
}

/// Where the first record of one process is: which record list, and the
/// record's position in it. The lookup order is fd-table files, then vmas,
/// then program and link files (the order the explain report has always
/// used), so the first match wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcRecord {
    File(u32),
    Vma(u32),
    Object(u32),
}

/// Process id -> its first record in each list, built once per snapshot on
/// first use. It holds positions only (never copies of the records): about
/// 16 bytes per distinct process plus the hash table's slack.
#[derive(Debug, Default)]
pub struct ProcIndex {
    records: IdMap<ProcRecord>,
    rings: IdMap<u32>,
}

impl ProcIndex {
    fn build(s: &Snapshot) -> Self {
        let mut records = IdMap::default();
        let lists: [(&Option<Vec<FileRecord>>, fn(u32) -> ProcRecord); 2] =
            [(&s.files, ProcRecord::File), (&s.vmas, ProcRecord::Vma)];
        for (list, tag) in lists {
            for (i, f) in list.iter().flatten().enumerate() {
                records.entry(f.tgid).or_insert(tag(i as u32));
            }
        }
        for (i, f) in s.object_files.iter().flatten().enumerate() {
            records
                .entry(f.tgid)
                .or_insert(ProcRecord::Object(i as u32));
        }
        let mut rings = IdMap::default();
        for (i, r) in s.io_uring.iter().enumerate() {
            rings.entry(r.tgid).or_insert(i as u32);
        }
        Self { records, rings }
    }

    /// Bytes the two tables hold (capacity, not length), for the docs.
    #[cfg(any(test, feature = "testing"))]
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.records.capacity() * (size_of::<(u32, ProcRecord)>() + 1)
            + self.rings.capacity() * (size_of::<(u32, u32)>() + 1)
    }
}

/// A lazily built [`ProcIndex`]. A clone starts empty, so a snapshot copied
/// and then changed never answers from the original's records.
#[derive(Debug, Default)]
pub struct ProcIndexCell(std::sync::OnceLock<ProcIndex>);

impl Clone for ProcIndexCell {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Snapshot {
    fn proc_index(&self) -> &ProcIndex {
        self.proc_index.0.get_or_init(|| ProcIndex::build(self))
    }

    /// The comm and cgroup id of process `tgid` from its first record in
    /// the fd-table files, the vmas, or the program and link files, in that
    /// order; None when no record names it. Callers must not change those
    /// record lists after the first call on this snapshot.
    pub fn process_comm_cgroup(&self, tgid: u32) -> Option<(&[u8], u64)> {
        fn at(l: &Option<Vec<FileRecord>>, i: u32) -> Option<(&[u8], u64)> {
            l.as_ref()
                .and_then(|l| l.get(i as usize))
                .map(|f| (&f.comm[..], f.cgroup_id))
        }
        match *self.proc_index().records.get(&tgid)? {
            ProcRecord::File(i) => at(&self.files, i),
            ProcRecord::Vma(i) => at(&self.vmas, i),
            ProcRecord::Object(i) => self
                .object_files
                .as_ref()
                .and_then(|l| l.get(i as usize))
                .map(|f| (&f.comm[..], f.cgroup_id)),
        }
    }

    /// The first io_uring record of process `tgid`, if any.
    pub fn process_ring(&self, tgid: u32) -> Option<&super::UringRecord> {
        let i = *self.proc_index().rings.get(&tgid)?;
        self.io_uring.get(i as usize)
    }

    #[cfg(any(test, feature = "testing"))]
    pub fn proc_index_heap_bytes(&self) -> usize {
        self.proc_index().heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cursor_finds_what_get_finds_in_any_order() {
        let t: ById<u32> = [2, 3, 5, 8, 13, 21, 34, 55, 89]
            .into_iter()
            .map(|id| (id, id * 10))
            .collect();
        let ascending: Vec<u32> = (0..100).collect();
        let mut c = t.cursor();
        for id in &ascending {
            assert_eq!(c.get(*id), t.get(id), "ascending, id {id}");
        }
        let mut c = t.cursor();
        for id in [89, 2, 55, 55, 3, 100, 0, 34, 13, 14, 8, 5, 21, 90, 1] {
            assert_eq!(c.get(id), t.get(&id), "mixed, id {id}");
        }
        let empty: ById<u32> = ById::default();
        assert_eq!(empty.cursor().get(1), None);
    }

    #[test]
    fn a_table_built_in_used_memory_holds_only_its_own_entries() {
        let old: ById<u32> = [(1, 10), (2, 20), (3, 30)].into_iter().collect();
        let t = ById::from_iter_in(old.into_entries(), [(7, 70), (5, 50), (7, 71)]);
        assert_eq!(t.get(&1), None);
        assert_eq!(t.get(&5), Some(&50));
        assert_eq!(t.get(&7), Some(&71), "a repeated id keeps its last value");
        assert_eq!(t.iter().count(), 2);
    }

    use super::*;
    use crate::bpf::census::{ObjectKind, RingObject, UringRecord};

    fn file(tgid: u32, comm: &str, cg: u64) -> FileRecord {
        FileRecord {
            file_ptr: u64::from(tgid) << 8,
            cgroup_id: cg,
            tgid,
            pid: tgid,
            fd: 3,
            map_id: tgid,
            comm: comm.as_bytes().to_vec(),
            vm_start: 0,
            vm_end: 0,
            sock_ino: 0,
        }
    }

    /// The linear scans the index replaces, kept as the reference.
    fn scan(s: &Snapshot, pid: u32) -> Option<(Vec<u8>, u64)> {
        s.files
            .iter()
            .flatten()
            .chain(s.vmas.iter().flatten())
            .find(|f| f.tgid == pid)
            .map(|f| (f.comm.clone(), f.cgroup_id))
            .or_else(|| {
                s.object_files
                    .iter()
                    .flatten()
                    .find(|f| f.tgid == pid)
                    .map(|f| (f.comm.clone(), f.cgroup_id))
            })
    }

    /// Processes spread over every list, the same pid in several lists
    /// and several times in one list with different comms and cgroups: the
    /// index answers exactly what the first-match scans answered.
    #[test]
    fn process_lookups_match_the_linear_scans() {
        let n = 3000u32;
        let mut s = Snapshot::default();
        let mut files = Vec::new();
        let mut vmas = Vec::new();
        let mut objs = Vec::new();
        let mut rings = Vec::new();
        for p in 1..=n {
            // Later duplicates carry other comms and cgroups: only the
            // first in list order may be answered.
            match p % 5 {
                0 => files.push(file(p, &format!("f{p}"), u64::from(p))),
                1 => {
                    vmas.push(file(p, &format!("v{p}"), 7));
                    files.push(file(p, &format!("fl{p}"), 9));
                }
                2 => vmas.push(file(p, &format!("v{p}"), 2)),
                3 => {}
                _ => {}
            }
            if p % 3 == 0 {
                files.push(file(p, &format!("dup{p}"), 1));
            }
            if p % 4 != 0 {
                objs.push(ObjectFile {
                    kind: ObjectKind::Program,
                    id: p,
                    file_ptr: 1,
                    cgroup_id: u64::from(p) + 100,
                    tgid: p,
                    pid: p,
                    fd: 4,
                    comm: format!("o{p}").into_bytes(),
                });
            }
            if p % 7 == 0 {
                for k in 0..2u32 {
                    rings.push(UringRecord {
                        ring_ptr: 1,
                        file_ptr: 2,
                        cgroup_id: u64::from(k),
                        tgid: p,
                        fd: 10 + k,
                        object: Some((RingObject::Map, p)),
                        comm: format!("r{p}.{k}").into_bytes(),
                        slots: 1,
                    });
                }
            }
        }
        files.reverse();
        s.files = Some(files);
        s.vmas = Some(vmas);
        s.object_files = Some(objs);
        s.io_uring = rings;
        let mut misses = 0;
        for p in 0..=n + 2 {
            let want = scan(&s, p);
            misses += usize::from(want.is_none());
            let got = s.process_comm_cgroup(p).map(|(c, g)| (c.to_vec(), g));
            assert_eq!(got, want, "pid {p}");
            assert_eq!(
                s.process_ring(p),
                s.io_uring.iter().find(|r| r.tgid == p),
                "ring of pid {p}"
            );
        }
        // Some pids are in no list at all, so the None path is exercised.
        assert!(misses > 0);
        // A clone is re-indexed from its own lists, never answered from
        // the original's.
        let mut c = s.clone();
        c.files = None;
        c.vmas = None;
        c.object_files = None;
        assert_eq!(c.process_comm_cgroup(5), None);
        assert!(s.process_comm_cgroup(5).is_some());
    }
}
