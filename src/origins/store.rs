//! The origin store: which user stack created, pinned or took a file of
//! each object. Pure (no I/O): stacks are deduplicated by their normalized
//! frames, records are bounded per object and in total, and every eviction
//! is counted.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The kind of object a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjKind {
    Map,
    Prog,
    Link,
}

impl ObjKind {
    /// From `BPFMAP_OBJ_*`.
    pub fn from_raw(k: i32) -> Option<ObjKind> {
        match k {
            0 => Some(ObjKind::Map),
            1 => Some(ObjKind::Prog),
            2 => Some(ObjKind::Link),
            _ => None,
        }
    }
}

/// What the bpf() call did to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// BPF_MAP_CREATE, BPF_PROG_LOAD, BPF_LINK_CREATE.
    Created,
    /// BPF_OBJ_PIN.
    Pinned,
    /// BPF_OBJ_GET, BPF_MAP_GET_FD_BY_ID, BPF_PROG_GET_FD_BY_ID.
    FileTaken,
}

impl Role {
    pub fn of_cmd(cmd: u32) -> Option<Role> {
        match cmd {
            0 | 5 | 28 => Some(Role::Created),
            6 => Some(Role::Pinned),
            7 | 13 | 14 => Some(Role::FileTaken),
            _ => None,
        }
    }
}

/// A function name and, where debug info has it, the source line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub function: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
}

/// One frame, normalized: never a runtime address (that would undo the
/// process's address-space randomisation). The default is a frame nothing
/// could resolve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// Build id of the mapped file, hex; None when it has none.
    pub build_id: Option<Arc<str>>,
    /// The mapped file's path as the process saw it; None when only the
    /// kernel's build id is known.
    pub binary: Option<Arc<str>>,
    /// Offset in that file of the return address; None: the address was
    /// in no file (anonymous or JIT memory) or could not be resolved.
    pub file_offset: Option<u64>,
    pub symbol: Option<Symbol>,
}

impl Frame {
    /// The part of a frame that identifies it (for deduplication).
    fn key(&self) -> (Option<&str>, Option<&str>, Option<u64>) {
        (
            self.build_id.as_deref(),
            if self.build_id.is_some() {
                None
            } else {
                self.binary.as_deref()
            },
            self.file_offset,
        )
    }
}

/// How the frame-pointer walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Walk {
    /// The outermost frames reach a thread entry point (`_start`,
    /// `__libc_start_main`, `start_thread`, `runtime.goexit`, ...).
    Complete,
    /// The walk stopped before one, for the reason given.
    Truncated(String),
    /// Not known, for the reason given (no names to recognise an entry).
    Unknown(String),
}

/// A deduplicated stack, innermost frame first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub frames: Vec<Frame>,
    pub walk: Walk,
    /// Whether names were looked up (`--collector.origins.symbolize`).
    pub symbolized: bool,
    /// What could not be done for this stack (e.g. the binary was gone
    /// before it could be read), for the reader.
    pub note: Option<String>,
}

impl Stack {
    /// Same frames (the deduplication key).
    pub fn same_frames(&self, other: &Stack) -> bool {
        self.frames.len() == other.frames.len()
            && self
                .frames
                .iter()
                .zip(&other.frames)
                .all(|(a, b)| a.key() == b.key())
    }

    /// Hash of the frames' keys.
    pub fn frames_hash(frames: &[Frame]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for f in frames {
            f.key().hash(&mut h);
        }
        h.finish()
    }

    /// Heap and inline bytes this stack holds (strings counted per frame,
    /// even where frames share them: an upper bound).
    pub fn bytes(&self) -> usize {
        let s = |x: &Option<Arc<str>>| x.as_ref().map_or(0, |a| a.len() + 16);
        std::mem::size_of::<Stack>()
            + self.note.as_ref().map_or(0, |n| n.capacity())
            + self
                .frames
                .iter()
                .map(|f| {
                    std::mem::size_of::<Frame>()
                        + s(&f.build_id)
                        + s(&f.binary)
                        + f.symbol
                            .as_ref()
                            .map_or(0, |y| y.function.len() + 16 + s(&y.file))
                })
                .sum::<usize>()
    }
}

/// One bpf() call whose stack was kept.
#[derive(Debug, Clone)]
pub struct Record {
    pub cmd: u32,
    pub role: Role,
    pub tgid: u32,
    pub pid: u32,
    pub comm: String,
    /// CLOCK_BOOTTIME ns of the call.
    pub ns: u64,
    /// The fd returned (BPF_OBJ_PIN: the fd pinned).
    pub fd: i32,
    /// The object's `struct file`: matched against the census's file
    /// records, never published.
    pub file_ptr: u64,
    /// BPF_OBJ_PIN and BPF_OBJ_GET: the pathname the caller gave.
    pub path: String,
    pub stack: Arc<Stack>,
}

impl Record {
    fn bytes(&self) -> usize {
        std::mem::size_of::<Record>() + self.comm.capacity() + self.path.capacity()
    }
}

/// Counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Records evicted by a bound (per object or total) or because a
    /// newer one took their place.
    pub evicted: u64,
    /// Records dropped because their object is gone.
    pub pruned: u64,
}

/// The store. Bounds: at most `max_stacks` distinct stacks and
/// `max_records` records in all, and at most `max_per_object` records per
/// object, whose creation record is kept over its pin and file records.
/// The oldest record goes first (for the stack bound: the oldest whose
/// stack no other record shares).
pub struct Store {
    max_stacks: usize,
    max_records: usize,
    max_per_object: usize,
    next_seq: u64,
    /// seq -> (object, record): oldest first.
    records: BTreeMap<u64, ((ObjKind, u32), Record)>,
    /// object -> its records' seqs, oldest first.
    objects: HashMap<(ObjKind, u32), Vec<u64>>,
    /// frames hash -> stacks with that hash and how many records use each.
    stacks: HashMap<u64, Vec<(Arc<Stack>, usize)>>,
    stack_bytes: usize,
    record_bytes: usize,
    pub counts: StoreCounts,
}

impl Store {
    pub fn new(max_stacks: usize, max_records: usize, max_per_object: usize) -> Store {
        Store {
            max_stacks: max_stacks.max(1),
            max_records: max_records.max(1),
            max_per_object: max_per_object.max(1),
            next_seq: 0,
            records: BTreeMap::new(),
            objects: HashMap::new(),
            stacks: HashMap::new(),
            stack_bytes: 0,
            record_bytes: 0,
            counts: StoreCounts::default(),
        }
    }

    /// A stored stack with the same frames as `s`, shared instead of a copy.
    pub fn find_stack(&self, frames: &[Frame]) -> Option<Arc<Stack>> {
        let h = Stack::frames_hash(frames);
        let probe = Stack {
            frames: frames.to_vec(),
            walk: Walk::Complete,
            symbolized: false,
            note: None,
        };
        self.stacks
            .get(&h)?
            .iter()
            .find(|(s, _)| s.same_frames(&probe))
            .map(|(s, _)| s.clone())
    }

    /// Stored records.
    pub fn records(&self) -> usize {
        self.records.len()
    }

    /// Distinct stacks.
    pub fn stacks(&self) -> usize {
        self.stacks.values().map(Vec::len).sum()
    }

    /// Bytes the records and stacks hold (an upper bound: see
    /// [`Stack::bytes`]), without the maps' own tables.
    pub fn bytes(&self) -> usize {
        self.stack_bytes + self.record_bytes
    }

    fn intern(&mut self, stack: Arc<Stack>) -> Arc<Stack> {
        let h = Stack::frames_hash(&stack.frames);
        let v = self.stacks.entry(h).or_default();
        if let Some(e) = v.iter_mut().find(|(s, _)| s.same_frames(&stack)) {
            e.1 += 1;
            return e.0.clone();
        }
        self.stack_bytes += stack.bytes();
        v.push((stack.clone(), 1));
        stack
    }

    fn release(&mut self, stack: &Arc<Stack>) {
        let h = Stack::frames_hash(&stack.frames);
        let Some(v) = self.stacks.get_mut(&h) else {
            return;
        };
        if let Some(i) = v.iter().position(|(s, _)| Arc::ptr_eq(s, stack)) {
            v[i].1 -= 1;
            if v[i].1 == 0 {
                self.stack_bytes -= v[i].0.bytes();
                v.swap_remove(i);
            }
        }
        if v.is_empty() {
            self.stacks.remove(&h);
        }
    }

    fn remove(&mut self, seq: u64) -> Option<((ObjKind, u32), Record)> {
        let (obj, rec) = self.records.remove(&seq)?;
        if let Some(v) = self.objects.get_mut(&obj) {
            v.retain(|s| *s != seq);
            if v.is_empty() {
                self.objects.remove(&obj);
            }
        }
        self.record_bytes -= rec.bytes();
        self.release(&rec.stack);
        Some((obj, rec))
    }

    /// The oldest record whose stack no other record uses (removing it
    /// frees a stack).
    fn lone_oldest(&self) -> Option<u64> {
        self.records
            .iter()
            .find(|(_, (_, r))| {
                let h = Stack::frames_hash(&r.stack.frames);
                self.stacks
                    .get(&h)
                    .is_some_and(|v| v.iter().any(|(s, n)| Arc::ptr_eq(s, &r.stack) && *n == 1))
            })
            .map(|(s, _)| *s)
    }

    /// Keep `rec` for `obj`, evicting what the bounds require.
    pub fn insert(&mut self, obj: (ObjKind, u32), mut rec: Record) {
        // A newer creation of the same id (ids wrap) replaces everything.
        if rec.role == Role::Created {
            let old: Vec<u64> = self.objects.get(&obj).cloned().unwrap_or_default();
            for s in old {
                if self
                    .records
                    .get(&s)
                    .is_some_and(|r| r.1.role == Role::Created)
                {
                    self.remove(s);
                    self.counts.evicted += 1;
                }
            }
        }
        // The same process taking a file (or pinning) again from the same
        // call site: the newer record replaces the older one.
        if rec.role != Role::Created {
            let same: Vec<u64> = self
                .objects
                .get(&obj)
                .into_iter()
                .flatten()
                .copied()
                .filter(|s| {
                    self.records.get(s).is_some_and(|(_, r)| {
                        r.role == rec.role && r.tgid == rec.tgid && r.stack.same_frames(&rec.stack)
                    })
                })
                .collect();
            for s in same {
                self.remove(s);
            }
        }
        let mine = self.objects.get(&obj).map_or(0, Vec::len);
        if mine >= self.max_per_object {
            // The oldest record of the object that is not its creation
            // (or, for a per-object bound of one, whatever it has).
            let seqs = self.objects.get(&obj).cloned().unwrap_or_default();
            let victim = seqs
                .iter()
                .copied()
                .find(|s| {
                    self.records
                        .get(s)
                        .is_some_and(|r| r.1.role != Role::Created)
                })
                .or_else(|| seqs.first().copied());
            if let Some(s) = victim {
                self.remove(s);
                self.counts.evicted += 1;
            }
        }
        while self.records.len() >= self.max_records {
            let Some(&oldest) = self.records.keys().next() else {
                break;
            };
            self.remove(oldest);
            self.counts.evicted += 1;
        }
        if self.find_stack(&rec.stack.frames).is_none() {
            while self.stacks() >= self.max_stacks {
                let Some(victim) = self.lone_oldest() else {
                    break;
                };
                self.remove(victim);
                self.counts.evicted += 1;
            }
        }
        rec.stack = self.intern(rec.stack.clone());
        self.record_bytes += rec.bytes();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.objects.entry(obj).or_default().push(seq);
        self.records.insert(seq, (obj, rec));
    }

    /// The records of `obj`, oldest first.
    pub fn of(&self, obj: (ObjKind, u32)) -> Vec<&Record> {
        self.objects
            .get(&obj)
            .into_iter()
            .flatten()
            .filter_map(|s| self.records.get(s).map(|r| &r.1))
            .collect()
    }

    /// Drop the records of objects of `kind` that `live` says are gone,
    /// among those recorded before `before_ns` (a record newer than the
    /// census that found its object missing may be of an object created
    /// after it).
    pub fn prune(&mut self, kind: ObjKind, live: &dyn Fn(u32) -> bool, before_ns: u64) {
        let gone: Vec<u64> = self
            .records
            .iter()
            .filter(|(_, ((k, id), r))| *k == kind && r.ns < before_ns && !live(*id))
            .map(|(s, _)| *s)
            .collect();
        for s in gone {
            self.remove(s);
            self.counts.pruned += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bid: &str, off: u64, name: &str) -> Frame {
        Frame {
            build_id: Some(bid.into()),
            binary: Some("/bin/x".into()),
            file_offset: Some(off),
            symbol: Some(Symbol {
                function: name.into(),
                file: Some("x.c".into()),
                line: Some(3),
            }),
        }
    }

    fn rec(role: Role, ns: u64, frames: Vec<Frame>) -> Record {
        Record {
            cmd: match role {
                Role::Created => 0,
                Role::Pinned => 6,
                Role::FileTaken => 14,
            },
            role,
            tgid: 7,
            pid: 7,
            comm: "x".into(),
            ns,
            fd: 3,
            file_ptr: 0,
            path: String::new(),
            stack: Arc::new(Stack {
                frames,
                walk: Walk::Complete,
                symbolized: true,
                note: None,
            }),
        }
    }

    #[test]
    fn identical_stacks_are_stored_once_and_freed_with_their_last_record() {
        let mut s = Store::new(10, 10, 4);
        let f = vec![frame("ab", 1, "a"), frame("ab", 2, "main")];
        s.insert((ObjKind::Map, 1), rec(Role::Created, 1, f.clone()));
        s.insert((ObjKind::Map, 2), rec(Role::Created, 2, f.clone()));
        assert_eq!((s.records(), s.stacks()), (2, 1));
        let a = &s.of((ObjKind::Map, 1))[0].stack;
        let b = &s.of((ObjKind::Map, 2))[0].stack;
        assert!(Arc::ptr_eq(a, b));
        assert!(s.find_stack(&f).is_some());
        let one = s.bytes();
        s.insert(
            (ObjKind::Map, 3),
            rec(Role::Created, 3, vec![frame("ab", 9, "b")]),
        );
        assert_eq!(s.stacks(), 2);
        assert!(s.bytes() > one);
        s.prune(ObjKind::Map, &|id| id == 2, 100);
        assert_eq!((s.records(), s.stacks(), s.counts.pruned), (1, 1, 2));
        s.prune(ObjKind::Map, &|_| false, 100);
        assert_eq!((s.records(), s.stacks(), s.bytes()), (0, 0, 0));
    }

    #[test]
    fn prune_spares_records_newer_than_the_census() {
        let mut s = Store::new(10, 10, 4);
        s.insert((ObjKind::Prog, 5), rec(Role::Created, 50, vec![]));
        s.prune(ObjKind::Prog, &|_| false, 40);
        assert_eq!(s.records(), 1);
        s.prune(ObjKind::Map, &|_| false, 60);
        assert_eq!(s.records(), 1, "another kind is untouched");
        s.prune(ObjKind::Prog, &|_| false, 60);
        assert_eq!(s.records(), 0);
    }

    #[test]
    fn full_store_evicts_oldest_and_counts_it_leaving_the_rest_alone() {
        let mut s = Store::new(3, 3, 4);
        for id in 1..=5u32 {
            s.insert(
                (ObjKind::Map, id),
                rec(Role::Created, id as u64, vec![frame("cd", id as u64, "f")]),
            );
        }
        assert_eq!(s.records(), 3);
        assert_eq!(s.counts.evicted, 2);
        assert!(s.of((ObjKind::Map, 1)).is_empty() && s.of((ObjKind::Map, 2)).is_empty());
        for id in 3..=5u32 {
            let r = s.of((ObjKind::Map, id));
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].stack.frames[0].file_offset, Some(id as u64));
        }
        assert_eq!(s.stacks(), 3);
    }

    #[test]
    fn the_stack_bound_evicts_the_oldest_record_with_a_stack_of_its_own() {
        let mut s = Store::new(2, 100, 4);
        let shared = vec![frame("s", 1, "shared")];
        s.insert((ObjKind::Map, 1), rec(Role::Created, 1, shared.clone()));
        s.insert(
            (ObjKind::Map, 2),
            rec(Role::Created, 2, vec![frame("s", 2, "own")]),
        );
        s.insert((ObjKind::Map, 3), rec(Role::Created, 3, shared.clone()));
        // A third distinct stack: map 2's record goes (map 1's is older but
        // its stack is shared).
        s.insert(
            (ObjKind::Map, 4),
            rec(Role::Created, 4, vec![frame("s", 3, "new")]),
        );
        assert_eq!((s.stacks(), s.records(), s.counts.evicted), (2, 3, 1));
        assert!(s.of((ObjKind::Map, 2)).is_empty());
        assert_eq!(s.of((ObjKind::Map, 1)).len(), 1);
        // A stack already stored costs no eviction.
        s.insert((ObjKind::Map, 5), rec(Role::Created, 5, shared));
        assert_eq!((s.stacks(), s.records(), s.counts.evicted), (2, 4, 1));
    }

    #[test]
    fn per_object_bound_keeps_the_creation() {
        let mut s = Store::new(100, 100, 3);
        let obj = (ObjKind::Map, 9);
        s.insert(obj, rec(Role::Created, 1, vec![frame("e", 1, "create")]));
        for i in 0..5u64 {
            s.insert(
                obj,
                rec(Role::FileTaken, 10 + i, vec![frame("e", 100 + i, "take")]),
            );
        }
        // Taken again from the same call site by the same process: replaces.
        s.insert(obj, rec(Role::FileTaken, 20, vec![frame("e", 104, "take")]));
        assert_eq!(s.counts.evicted, 3);
        assert_eq!(s.of(obj).last().unwrap().ns, 20);
        let r = s.of(obj);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].role, Role::Created);
        assert_eq!(r[1].ns, 13);
        assert_eq!(r[2].ns, 20);
        // A later creation of the same id replaces the old creation.
        s.insert(obj, rec(Role::Created, 99, vec![frame("e", 7, "again")]));
        let created: Vec<u64> = s
            .of(obj)
            .iter()
            .filter(|r| r.role == Role::Created)
            .map(|r| r.ns)
            .collect();
        assert_eq!(created, vec![99]);
    }

    #[test]
    fn roles_of_commands() {
        assert_eq!(Role::of_cmd(0), Some(Role::Created));
        assert_eq!(Role::of_cmd(5), Some(Role::Created));
        assert_eq!(Role::of_cmd(28), Some(Role::Created));
        assert_eq!(Role::of_cmd(6), Some(Role::Pinned));
        for c in [7, 13, 14] {
            assert_eq!(Role::of_cmd(c), Some(Role::FileTaken));
        }
        assert_eq!(Role::of_cmd(1), None);
        assert_eq!(ObjKind::from_raw(2), Some(ObjKind::Link));
        assert_eq!(ObjKind::from_raw(-1), None);
    }
}
