//! Keep-alive chains: what holds each map and program, followed through
//! programs, outer maps, prog_arrays and links down to the roots that
//! nothing else holds. Pure code over a [`Graph`] the census builds from
//! one scrape's walks; unit-tested without root.
//!
//! - A map is held by files, mmaps, pins, files in flight (roots), and by
//!   programs that use it, outer-map slots and iterator links (objects,
//!   followed further).
//! - A program is held by files and pins (roots), links and prog_array
//!   slots (objects).
//! - A link is held by files and pins; a link other than an iterator link
//!   is attached to something in the kernel (a device, a cgroup, a hook) and
//!   is itself a live root of kind `attachment` while it is attached (a
//!   link whose target is gone or that was detached holds its program,
//!   which runs nowhere: no live root).
//! - A reference the object's readable holders do not explain is a root of
//!   its own: `unexplained` where that count is exact (a map's leak signal),
//!   `unknown` where it is withheld (a program's attachment without a link).
//! - Cycles terminate: an object met again on the current chain adds
//!   nothing. A component that no root outside it keeps alive has the root
//!   `cycle`.
use std::collections::{BTreeSet, HashMap};

use super::bpffs::Pin;
use super::fdinfo::ObjKind;
use super::inflight::InflightFile;
use super::programs::{AttachedBy, Attachment, ProgHolders};
use super::{ById, FileRecord, Holders, MapRecord, ObjectFile, ObjectKind, ProgRecord};
use crate::bpf::census::LinkRecord;

/// A BPF object of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Obj {
    Map(u32),
    Prog(u32),
    Link(u32),
}

impl Obj {
    #[cfg(any(test, feature = "testing"))]
    pub fn id(self) -> u32 {
        match self {
            Obj::Map(id) | Obj::Prog(id) | Obj::Link(id) => id,
        }
    }
}

/// A pinned inode: one pin however many paths (hard links) name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PinId {
    pub dev: u64,
    pub ino: u64,
}

/// A root: what keeps a chain alive with nothing above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Root {
    /// A process holding a file (or an mmap) of an object on the chain.
    Process(u32),
    /// A bpffs pin.
    Pin(PinId),
    /// Pins of this object the bpffs walk did not reach, inferred from its
    /// user references (their paths are unknown).
    InferredPin(Obj),
    /// A file in flight (an unreceived SCM_RIGHTS message).
    Inflight,
    /// An io_uring registered-file table, of a ring this process holds.
    IoUring(u32),
    /// A link attached in the kernel (its id).
    Attachment(u32),
    /// An attachment the kernel keeps without a link (a device, a cgroup,
    /// a network namespace hook): its index in the snapshot's attachments.
    Attached(u32),
    /// A struct_ops map registered in the kernel (its id): its
    /// registration and the kernel objects using its ops.
    Registered(u32),
    /// References of this object that nothing explains (exact).
    Unexplained(Obj),
    /// References of this object that no readable source explains and
    /// that cannot be called unexplained (an attachment without a link, a
    /// source that is off or incomplete).
    Unknown(Obj),
    /// A component that nothing outside it keeps alive.
    Cycle,
}

impl Root {
    /// The `kind` label of `bpfmap_map_roots`.
    pub fn kind(&self) -> &'static str {
        match self {
            Root::Process(_) => "process",
            Root::Pin(_) | Root::InferredPin(_) => "pin",
            Root::Inflight => "inflight",
            Root::IoUring(_) => "io_uring",
            Root::Attachment(_) | Root::Attached(_) | Root::Registered(_) => "attachment",
            Root::Unexplained(_) => "unexplained",
            Root::Unknown(_) => "unknown",
            Root::Cycle => "cycle",
        }
    }

    /// Whether this root keeps its chain working (not only pinned): a
    /// process, an io_uring, an attachment, a file in flight.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            Root::Process(_)
                | Root::IoUring(_)
                | Root::Attachment(_)
                | Root::Attached(_)
                | Root::Registered(_)
                | Root::Inflight
        )
    }
}

/// One holder of an object: another object (followed further) or a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Holder {
    Obj(Obj),
    Root(Root),
}

/// Who holds each object, as one scrape saw it: the edges (object, holder),
/// each encoded in one `u64` so that an edge is 16 bytes, sorted by object
/// once [`Graph::finish`] ran, so that an object's holders are one run found
/// by binary search (no per-object allocation: a node has tens of thousands
/// of objects). The encoding orders as `Obj` and `Holder` do.
#[derive(Clone, Default)]
pub struct Graph {
    /// Edges added since the last [`Graph::finish`].
    pending: Vec<(u64, u64)>,
    edges: Vec<(u64, u64)>,
    /// The pins holders name, by index (sorted by [`Graph::finish`]).
    pins: Vec<PinId>,
    pin_index: HashMap<PinId, u32, rustc_hash::FxBuildHasher>,
}

/// The edges decoded: `(object, holder)`.
impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let decode = |edges: &[(u64, u64)]| -> Vec<(Obj, Holder)> {
            edges
                .iter()
                .map(|&(o, h)| (obj_of(o), self.holder_of(h)))
                .collect()
        };
        f.debug_struct("Graph")
            .field("edges", &decode(&self.edges))
            .field("pending", &decode(&self.pending))
            .finish()
    }
}

/// Bits of an encoded object or holder: `tag << 40 | kind << 32 | id`.
/// Tag 0 is an object (kind: map, program, link, as `Obj` orders); tag
/// `1 + n` is the root variant of index `n` (as `Root` orders).
const TAG_SHIFT: u32 = 40;
const KIND_SHIFT: u32 = 32;
/// The tags of `Root::Pin` (payload: the pin's index) and
/// `Root::InferredPin` (payload: the object's code).
const PIN_TAG: u64 = 2;
const INFERRED_PIN_TAG: u64 = 3;

fn obj_code(o: Obj) -> u64 {
    let (kind, id) = match o {
        Obj::Map(id) => (0u64, id),
        Obj::Prog(id) => (1, id),
        Obj::Link(id) => (2, id),
    };
    kind << KIND_SHIFT | u64::from(id)
}

fn obj_of(code: u64) -> Obj {
    let id = code as u32;
    match (code >> KIND_SHIFT) & 0xff {
        0 => Obj::Map(id),
        1 => Obj::Prog(id),
        _ => Obj::Link(id),
    }
}

impl Graph {
    /// Record that `holder` holds `obj`; seen by the queries once
    /// [`Graph::finish`] ran. Repeats are removed there.
    pub fn add(&mut self, obj: Obj, holder: Holder) {
        let h = self.holder_code(holder);
        self.pending.push((obj_code(obj), h));
    }

    fn holder_code(&mut self, h: Holder) -> u64 {
        let root = |n: u64, payload: u64| (n + 1) << TAG_SHIFT | payload;
        match h {
            Holder::Obj(o) => obj_code(o),
            Holder::Root(r) => match r {
                Root::Process(pid) => root(0, pid.into()),
                Root::Pin(p) => {
                    let next = self.pins.len() as u32;
                    let i = *self.pin_index.entry(p).or_insert_with(|| {
                        self.pins.push(p);
                        next
                    });
                    root(PIN_TAG - 1, i.into())
                }
                Root::InferredPin(o) => root(INFERRED_PIN_TAG - 1, obj_code(o)),
                Root::Inflight => root(3, 0),
                Root::IoUring(pid) => root(4, pid.into()),
                Root::Attachment(id) => root(5, id.into()),
                Root::Attached(n) => root(6, n.into()),
                Root::Registered(id) => root(7, id.into()),
                Root::Unexplained(o) => root(8, obj_code(o)),
                Root::Unknown(o) => root(9, obj_code(o)),
                Root::Cycle => root(10, 0),
            },
        }
    }

    fn holder_of(&self, code: u64) -> Holder {
        let payload = code & ((1 << TAG_SHIFT) - 1);
        let small = payload as u32;
        let root = match code >> TAG_SHIFT {
            0 => return Holder::Obj(obj_of(code)),
            1 => Root::Process(small),
            PIN_TAG => Root::Pin(self.pins[small as usize]),
            INFERRED_PIN_TAG => Root::InferredPin(obj_of(payload)),
            4 => Root::Inflight,
            5 => Root::IoUring(small),
            6 => Root::Attachment(small),
            7 => Root::Attached(small),
            8 => Root::Registered(small),
            9 => Root::Unexplained(obj_of(payload)),
            10 => Root::Unknown(obj_of(payload)),
            _ => Root::Cycle,
        };
        Holder::Root(root)
    }

    /// Merge the added edges: each object's holders sorted, each kept once.
    pub fn finish(&mut self) {
        // Pin indices in pin order, so that holders sort as `Root::Pin` does.
        let mut order: Vec<u32> = (0..self.pins.len() as u32).collect();
        order.sort_unstable_by_key(|&i| self.pins[i as usize]);
        let mut new_index = vec![0u32; order.len()];
        for (new, &old) in order.iter().enumerate() {
            new_index[old as usize] = new as u32;
        }
        let renumber = |h: &mut u64| {
            if *h >> TAG_SHIFT == PIN_TAG {
                *h = PIN_TAG << TAG_SHIFT | u64::from(new_index[*h as u32 as usize]);
            }
        };
        let mut edges = std::mem::take(&mut self.edges);
        edges.append(&mut self.pending);
        for (_, h) in edges.iter_mut() {
            renumber(h);
        }
        self.pins = order.iter().map(|&i| self.pins[i as usize]).collect();
        self.pin_index = self
            .pins
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, i as u32))
            .collect();
        edges.sort_unstable();
        edges.dedup();
        self.edges = edges;
    }

    /// Every object that has a pin among its roots can reach one through
    /// its holders: the objects a pin holds, and, transitively, the objects
    /// those hold. One pass over the edges, from the pins down.
    fn pin_reachable(&self) -> rustc_hash::FxHashSet<Obj> {
        // (holder object, object it holds), sorted by holder.
        let mut holds: Vec<(u64, u64)> = self
            .edges
            .iter()
            .filter(|(_, h)| h >> TAG_SHIFT == 0)
            .map(|&(o, h)| (h, o))
            .collect();
        holds.sort_unstable();
        let mut stack: Vec<u64> = self
            .edges
            .iter()
            .filter(|(_, h)| matches!(h >> TAG_SHIFT, PIN_TAG | INFERRED_PIN_TAG))
            .map(|&(o, _)| o)
            .collect();
        let mut seen = rustc_hash::FxHashSet::default();
        while let Some(o) = stack.pop() {
            if seen.insert(obj_of(o)) {
                let lo = holds.partition_point(|e| e.0 < o);
                let hi = lo + holds[lo..].partition_point(|e| e.0 == o);
                stack.extend(holds[lo..hi].iter().map(|e| e.1));
            }
        }
        seen
    }

    /// The encoded holders of `obj`, sorted.
    fn codes(&self, obj: Obj) -> impl Iterator<Item = u64> + '_ {
        let o = obj_code(obj);
        let lo = self.edges.partition_point(|e| e.0 < o);
        let hi = lo + self.edges[lo..].partition_point(|e| e.0 == o);
        self.edges[lo..hi].iter().map(|e| e.1)
    }

    /// The direct holders of `obj`, sorted.
    pub fn holders(&self, obj: Obj) -> Vec<Holder> {
        self.codes(obj).map(|h| self.holder_of(h)).collect()
    }

    /// The roots that keep `obj` alive, through every chain.
    pub fn roots(&self, obj: Obj) -> BTreeSet<Root> {
        let mut out = BTreeSet::new();
        let mut on_path = Vec::new();
        let mut cut = false;
        self.walk(obj, &mut on_path, &mut out, &mut cut);
        if out.is_empty() && cut {
            out.insert(Root::Cycle);
        }
        out
    }

    fn walk(&self, obj: Obj, on_path: &mut Vec<Obj>, out: &mut BTreeSet<Root>, cut: &mut bool) {
        if on_path.contains(&obj) {
            *cut = true;
            return;
        }
        on_path.push(obj);
        for h in self.codes(obj) {
            match self.holder_of(h) {
                Holder::Root(r) => {
                    out.insert(r);
                }
                Holder::Obj(o) => self.walk(o, on_path, out, cut),
            }
        }
        on_path.pop();
    }

    /// Every chain from `obj` to a root, as the objects passed (`obj`
    /// first) and the root; at most `limit` chains.
    pub fn chains(&self, obj: Obj, limit: usize) -> Vec<(Vec<Obj>, Root)> {
        let mut out = Vec::new();
        let mut path = Vec::new();
        self.chains_from(obj, &mut path, &mut out, limit);
        out
    }

    fn chains_from(
        &self,
        obj: Obj,
        path: &mut Vec<Obj>,
        out: &mut Vec<(Vec<Obj>, Root)>,
        limit: usize,
    ) {
        if out.len() >= limit {
            return;
        }
        if path.contains(&obj) {
            let mut p = path.clone();
            p.push(obj);
            out.push((p, Root::Cycle));
            return;
        }
        path.push(obj);
        for h in self.codes(obj) {
            if out.len() >= limit {
                break;
            }
            match self.holder_of(h) {
                Holder::Root(r) => {
                    out.push((path.clone(), r));
                }
                Holder::Obj(o) => self.chains_from(o, path, out, limit),
            }
        }
        path.pop();
    }
}

/// What one scrape's walks found, for [`build`]. A `None` source was off
/// or failed: what it would have explained shows as the objects' own
/// `unknown` (or, where exact, `unexplained`) references.
pub(crate) struct GraphInput<'a> {
    pub maps: &'a [MapRecord],
    pub map_holders: &'a ById<Holders>,
    /// Map files in fd tables, and behind vmas.
    pub files: Option<&'a [FileRecord]>,
    pub vmas: Option<&'a [FileRecord]>,
    pub pins: Option<&'a [Pin]>,
    pub inflight: &'a [InflightFile],
    /// BPF object files in io_uring tables, by the tasks holding the rings.
    pub io_uring: &'a [super::UringRecord],
    pub programs: Option<&'a [ProgRecord]>,
    pub prog_holders: &'a ById<ProgHolders>,
    /// Program references held by attachments, programs and tracing links.
    pub attachments: &'a [Attachment],
    /// Program and link files in fd tables.
    pub object_files: Option<&'a [ObjectFile]>,
    pub links: Option<&'a [LinkRecord]>,
    /// (outer map, inner map) and (prog_array, program) slots.
    pub map_slots: Option<&'a [(u32, u32)]>,
    pub prog_slots: Option<&'a [(u32, u32)]>,
}

/// The holder graph of the census's maps and programs (the exporter's own
/// objects are not in the census, so never in the graph).
pub(crate) fn build(i: &GraphInput<'_>) -> Graph {
    let mut g = Graph::default();
    // The edges added below, reserved at once (a map has at most two of
    // its own in the common case: an unknown root and an inferred pin).
    g.pending.reserve(
        i.maps.len() * 2
            + i.files.map_or(0, <[_]>::len)
            + i.vmas.map_or(0, <[_]>::len)
            + i.inflight.len()
            + i.io_uring.len()
            + i.programs
                .into_iter()
                .flatten()
                .map(|p| p.map_ids.len() + 1)
                .sum::<usize>()
            + i.attachments.iter().map(|a| a.held_by.len()).sum::<usize>()
            + i.map_slots.map_or(0, <[_]>::len)
            + i.prog_slots.map_or(0, <[_]>::len)
            + i.links.map_or(0, <[_]>::len) * 3
            + i.object_files.map_or(0, <[_]>::len)
            + i.pins.map_or(0, <[_]>::len),
    );
    let in_census: rustc_hash::FxHashSet<u32> = i.maps.iter().map(|m| m.id).collect();
    let progs: rustc_hash::FxHashSet<u32> = i
        .programs
        .iter()
        .flat_map(|p| p.iter().map(|p| p.id))
        .collect();
    let map = |id: u32| in_census.contains(&id).then_some(Obj::Map(id));
    let prog = |id: u32| progs.contains(&id).then_some(Obj::Prog(id));
    for m in i.maps {
        let o = Obj::Map(m.id);
        let h = i.map_holders.get(&m.id);
        if h.is_some_and(|h| h.inferred_pins > 0) {
            g.add(o, Holder::Root(Root::InferredPin(o)));
        }
        if h.and_then(|h| h.get(super::holders::HolderKind::StructOps)) > Some(0) {
            g.add(o, Holder::Root(Root::Registered(m.id)));
        }
        match h.map(|h| h.unexplained(m.refcnt)) {
            Some(Some(0)) => {}
            Some(Some(_)) => g.add(o, Holder::Root(Root::Unexplained(o))),
            _ => g.add(o, Holder::Root(Root::Unknown(o))),
        }
    }
    for f in i
        .files
        .into_iter()
        .flatten()
        .chain(i.vmas.into_iter().flatten())
    {
        if let Some(o) = map(f.map_id) {
            g.add(o, Holder::Root(Root::Process(f.tgid)));
        }
    }
    for f in i.inflight {
        if let Some(o) = map(f.map_id) {
            g.add(o, Holder::Root(Root::Inflight));
        }
    }
    for r in i.io_uring {
        let o = match r.object {
            Some((super::RingObject::Map, id)) => map(id),
            Some((super::RingObject::Program, id)) => prog(id),
            Some((super::RingObject::Link, id)) => Some(Obj::Link(id)),
            Some((super::RingObject::Attached(_), _)) | None => None,
        };
        if let Some(o) = o {
            g.add(o, Holder::Root(Root::IoUring(r.tgid)));
        }
    }
    for p in i.programs.into_iter().flatten() {
        for &m in &p.map_ids {
            if let Some(o) = map(m) {
                g.add(o, Holder::Obj(Obj::Prog(p.id)));
            }
        }
        let o = Obj::Prog(p.id);
        match i.prog_holders.get(&p.id).map(|h| h.unexplained(p.refcnt)) {
            Some(Some(0)) => {}
            Some(Some(_)) => g.add(o, Holder::Root(Root::Unexplained(o))),
            _ => g.add(o, Holder::Root(Root::Unknown(o))),
        }
    }
    for (n, a) in i.attachments.iter().enumerate() {
        let Some(o) = prog(a.prog_id) else { continue };
        for by in &a.held_by {
            let h = match *by {
                AttachedBy::Kernel => Holder::Root(Root::Attached(n as u32)),
                AttachedBy::Process(pid) => Holder::Root(Root::Process(pid)),
                AttachedBy::Inflight => Holder::Root(Root::Inflight),
                AttachedBy::Map(id) => match map(id) {
                    Some(m) => Holder::Obj(m),
                    None => continue,
                },
                AttachedBy::Link(id) => Holder::Obj(Obj::Link(id)),
                AttachedBy::Program(id) => match prog(id) {
                    Some(p) => Holder::Obj(p),
                    None => continue,
                },
            };
            g.add(o, h);
        }
    }
    for &(outer, inner) in i.map_slots.into_iter().flatten() {
        if let (Some(o), Some(h)) = (map(inner), map(outer)) {
            g.add(o, Holder::Obj(h));
        }
    }
    for &(array, p) in i.prog_slots.into_iter().flatten() {
        if let (Some(o), Some(h)) = (prog(p), map(array)) {
            g.add(o, Holder::Obj(h));
        }
    }
    for l in i.links.into_iter().flatten() {
        let link = Obj::Link(l.id);
        if l.is_attached() {
            g.add(link, Holder::Root(Root::Attachment(l.id)));
        }
        if let Some(o) = prog(l.prog_id) {
            g.add(o, Holder::Obj(link));
        }
        if let Some(o) = l.held_map_id().and_then(map) {
            g.add(o, Holder::Obj(link));
        }
    }
    for f in i.object_files.into_iter().flatten() {
        let o = match f.kind {
            ObjectKind::Program => prog(f.id),
            ObjectKind::Link => Some(Obj::Link(f.id)),
        };
        if let Some(o) = o {
            g.add(o, Holder::Root(Root::Process(f.tgid)));
        }
    }
    for p in i.pins.into_iter().flatten() {
        let o = match p.info.kind {
            ObjKind::Map => map(p.info.id),
            ObjKind::Prog => prog(p.info.id),
            ObjKind::Link => Some(Obj::Link(p.info.id)),
            ObjKind::Unknown => None,
        };
        if let Some(o) = o {
            g.add(
                o,
                Holder::Root(Root::Pin(PinId {
                    dev: p.dev,
                    ino: p.ino,
                })),
            );
        }
    }
    g.finish();
    g
}

/// Whether an object whose creator is gone is orphaned: kept alive by pins
/// alone, through any chain. `None` where that cannot be known (a root is
/// unknown or unexplained and no live root settles it).
pub fn orphaned(roots: &BTreeSet<Root>) -> Option<bool> {
    if roots.iter().any(Root::is_live) {
        return Some(false);
    }
    if roots
        .iter()
        .any(|r| matches!(r, Root::Unknown(_) | Root::Unexplained(_)))
    {
        return None;
    }
    Some(
        roots
            .iter()
            .any(|r| matches!(r, Root::Pin(_) | Root::InferredPin(_))),
    )
}

/// What the roots say about the whole node, for the aggregates.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Maps whose creating cgroup is gone and that only pins keep alive,
    /// through every chain.
    pub orphaned_maps: rustc_hash::FxHashSet<u32>,
    /// Maps whose creating cgroup is gone whose verdict is withheld (a root
    /// is unknown or unexplained and no live root settles it).
    pub orphans_withheld: u64,
    /// Pin -> bytes (maps and programs) that removing that pin alone would
    /// free: the objects whose only root it is.
    pub retained: HashMap<PinId, u64>,
}

pub(crate) fn summarize(
    g: &Graph,
    maps: &[MapRecord],
    memory: &ById<u64>,
    programs: Option<&[ProgRecord]>,
) -> Summary {
    let mut s = Summary::default();
    let mut retain = |roots: &BTreeSet<Root>, bytes: u64| {
        if let (1, Some(Root::Pin(p))) = (roots.len(), roots.first()) {
            *s.retained.entry(*p).or_default() += bytes;
        }
    };
    let mut verdicts: Vec<(u32, Option<bool>)> = Vec::new();
    let pinned = g.pin_reachable();
    for m in maps {
        let obj = Obj::Map(m.id);
        if !m.creator.is_gone() && !pinned.contains(&obj) {
            continue;
        }
        let roots = g.roots(obj);
        retain(&roots, memory.get(&m.id).copied().unwrap_or(0));
        if m.creator.is_gone() {
            verdicts.push((m.id, orphaned(&roots)));
        }
    }
    for p in programs.into_iter().flatten() {
        let obj = Obj::Prog(p.id);
        if pinned.contains(&obj) {
            retain(&g.roots(obj), p.memlock);
        }
    }
    for (id, v) in verdicts {
        match v {
            Some(true) => {
                s.orphaned_maps.insert(id);
            }
            Some(false) => {}
            None => s.orphans_withheld += 1,
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const P1: PinId = PinId { dev: 1, ino: 10 };
    const P2: PinId = PinId { dev: 1, ino: 11 };

    #[test]
    fn a_map_held_by_a_pinned_program_has_the_pin_as_its_root() {
        let mut g = Graph::default();
        g.add(Obj::Map(1), Holder::Obj(Obj::Prog(7)));
        g.add(Obj::Prog(7), Holder::Root(Root::Pin(P1)));
        g.finish();
        assert_eq!(g.roots(Obj::Map(1)), BTreeSet::from([Root::Pin(P1)]));
        assert_eq!(orphaned(&g.roots(Obj::Map(1))), Some(true));
        assert_eq!(
            g.chains(Obj::Map(1), 10),
            vec![(vec![Obj::Map(1), Obj::Prog(7)], Root::Pin(P1))]
        );
    }

    #[test]
    fn a_live_root_anywhere_on_the_chains_means_not_orphaned() {
        let mut g = Graph::default();
        // map <- outer map <- pin, and map <- program <- link (attached)
        g.add(Obj::Map(1), Holder::Obj(Obj::Map(2)));
        g.add(Obj::Map(2), Holder::Root(Root::Pin(P1)));
        g.add(Obj::Map(1), Holder::Obj(Obj::Prog(7)));
        g.add(Obj::Prog(7), Holder::Obj(Obj::Link(3)));
        g.add(Obj::Link(3), Holder::Root(Root::Attachment(3)));
        g.add(Obj::Link(3), Holder::Root(Root::Pin(P2)));
        g.finish();
        let r = g.roots(Obj::Map(1));
        assert_eq!(
            r,
            BTreeSet::from([Root::Pin(P1), Root::Pin(P2), Root::Attachment(3)])
        );
        assert_eq!(orphaned(&r), Some(false));
        assert_eq!(g.chains(Obj::Map(1), 10).len(), 3);
        assert_eq!(g.chains(Obj::Map(1), 2).len(), 2, "chains are bounded");
    }

    #[test]
    fn an_unknown_reference_without_a_live_root_withholds_the_verdict() {
        let mut g = Graph::default();
        g.add(Obj::Map(1), Holder::Obj(Obj::Prog(7)));
        g.add(Obj::Prog(7), Holder::Root(Root::Pin(P1)));
        g.add(Obj::Prog(7), Holder::Root(Root::Unknown(Obj::Prog(7))));
        g.finish();
        assert_eq!(orphaned(&g.roots(Obj::Map(1))), None);
        // A process settles it.
        g.add(Obj::Map(1), Holder::Root(Root::Process(42)));
        g.finish();
        assert_eq!(orphaned(&g.roots(Obj::Map(1))), Some(false));
        // Nothing at all holds an object: not orphaned by pins.
        assert_eq!(orphaned(&g.roots(Obj::Map(9))), Some(false));
    }

    #[test]
    fn a_pin_retains_what_only_it_keeps_and_orphans_need_a_gone_creator() {
        use crate::census::testutil::map_record;
        use crate::census::Creator;
        let mut g = Graph::default();
        // map 1 <- prog 7 <- pin P1; map 2 <- pin P1 and a process;
        // map 3 <- pin P2 (creator gone); map 4 <- process (creator gone).
        g.add(Obj::Map(1), Holder::Obj(Obj::Prog(7)));
        g.add(Obj::Prog(7), Holder::Root(Root::Pin(P1)));
        g.add(Obj::Map(2), Holder::Root(Root::Pin(P1)));
        g.add(Obj::Map(2), Holder::Root(Root::Process(5)));
        g.add(Obj::Map(3), Holder::Root(Root::Pin(P2)));
        g.add(Obj::Map(4), Holder::Root(Root::Process(5)));
        g.add(Obj::Map(4), Holder::Root(Root::Process(5)));
        g.finish();
        assert_eq!(g.holders(Obj::Map(4)).len(), 1, "repeats kept once");
        let maps: Vec<MapRecord> = (1..=4)
            .map(|id| MapRecord {
                creator: if id >= 3 {
                    Creator::Gone(9)
                } else {
                    Creator::Live(9)
                },
                ..map_record(id)
            })
            .collect();
        let memory: ById<u64> = (1..=4).map(|id| (id, 100 * id as u64)).collect();
        let prog = crate::bpf::census::ProgRecord {
            prog_ptr: 0,
            refcnt: 1,
            load_time_ns: 0,
            memlock: 4096,
            id: 7,
            prog_type: 1,
            expected_attach_type: 0,
            used_map_cnt: 1,
            tag: [0; 8],
            name: String::new(),
            map_ids: vec![1],
            dst_prog_id: None,
        };
        let s = summarize(&g, &maps, &memory, Some(&[prog]));
        assert_eq!(
            s.retained[&P1],
            100 + 4096,
            "map 1 and prog 7; map 2 has a process too"
        );
        assert_eq!(s.retained[&P2], 300);
        assert_eq!(s.orphaned_maps, [3].into_iter().collect());
        assert_eq!(s.orphans_withheld, 0);
    }

    #[test]
    fn attachments_are_roots_or_lead_to_their_holders() {
        use crate::census::programs::{AttachedBy, Attachment, ProgHolderKind};
        let maps = [crate::census::testutil::map_record(1)];
        let mut xdp = crate::census::programs::tests::prog(7, 2, &[1]);
        xdp.prog_type = 6;
        let mut filter = crate::census::programs::tests::prog(8, 1, &[1]);
        filter.prog_type = 1;
        let attachments = [
            Attachment {
                prog_id: 7,
                kind: ProgHolderKind::Xdp,
                held_by: vec![AttachedBy::Kernel],
                target: "lo".into(),
            },
            Attachment {
                prog_id: 8,
                kind: ProgHolderKind::Socket,
                held_by: vec![AttachedBy::Process(42), AttachedBy::Inflight],
                target: "socket".into(),
            },
            // A program the census does not hold adds nothing.
            Attachment {
                prog_id: 99,
                kind: ProgHolderKind::Xdp,
                held_by: vec![AttachedBy::Kernel],
                target: "eth0".into(),
            },
        ];
        let holders = ById::default();
        let progs = [xdp, filter];
        let g = build(&GraphInput {
            maps: &maps,
            map_holders: &holders,
            files: None,
            vmas: None,
            pins: None,
            inflight: &[],
            io_uring: &[],
            programs: Some(&progs),
            prog_holders: &ById::default(),
            attachments: &attachments,
            object_files: None,
            links: None,
            map_slots: None,
            prog_slots: None,
        });
        let r = g.roots(Obj::Prog(7));
        assert!(r.contains(&Root::Attached(0)), "{r:?}");
        assert_eq!(Root::Attached(0).kind(), "attachment");
        let r = g.roots(Obj::Prog(8));
        assert!(
            r.contains(&Root::Process(42)) && r.contains(&Root::Inflight),
            "{r:?}"
        );
        assert!(!r.contains(&Root::Attached(1)));
        // The map both use is kept working by the device: not orphaned.
        assert_eq!(orphaned(&g.roots(Obj::Map(1))), Some(false));
    }

    #[test]
    fn the_debug_form_names_objects_and_holders() {
        let mut g = Graph::default();
        g.add(Obj::Prog(7), Holder::Root(Root::Attached(3)));
        g.add(Obj::Map(1), Holder::Root(Root::Pin(P2)));
        g.finish();
        g.add(Obj::Link(4), Holder::Root(Root::Attachment(4)));
        let d = format!("{g:?}");
        for want in [
            "(Prog(7), Root(Attached(3)))",
            "(Map(1), Root(Pin(PinId { dev: 1, ino: 11 })))",
            "pending: [(Link(4), Root(Attachment(4)))]",
        ] {
            assert!(d.contains(want), "{want} in {d}");
        }
    }

    #[test]
    fn tail_call_and_map_in_map_cycles_terminate() {
        let mut g = Graph::default();
        // prog 1 tail-calls through prog_array 5, which holds prog 1 and 2;
        // prog 2 uses map 5 too: a cycle with a pin outside it on prog 2.
        g.add(Obj::Map(5), Holder::Obj(Obj::Prog(1)));
        g.add(Obj::Map(5), Holder::Obj(Obj::Prog(2)));
        g.add(Obj::Prog(1), Holder::Obj(Obj::Map(5)));
        g.add(Obj::Prog(2), Holder::Obj(Obj::Map(5)));
        g.finish();
        assert_eq!(g.roots(Obj::Prog(1)), BTreeSet::from([Root::Cycle]));
        assert_eq!(orphaned(&g.roots(Obj::Prog(1))), Some(false));
        g.add(Obj::Prog(2), Holder::Root(Root::Pin(P1)));
        g.finish();
        assert_eq!(g.roots(Obj::Prog(1)), BTreeSet::from([Root::Pin(P1)]));
        let chains = g.chains(Obj::Prog(1), 10);
        assert!(chains.iter().any(|(_, r)| *r == Root::Cycle));
        assert!(chains
            .iter()
            .any(|(p, r)| *r == Root::Pin(P1) && p.last() == Some(&Obj::Prog(2))));
    }
}
