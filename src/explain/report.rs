//! The JSON document of a page of maps: every fact and every holder by
//! identity, a pure function of an [`Input`].
use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};

use super::{CreatorProcesses, Extras, Page, ProgramIdentity, SCHEMA_VERSION};
use crate::census::creators;
use crate::census::holders::HolderKind;
use crate::census::names::{flags_label, map_type_name, prog_type_label};
use crate::census::roots::{Obj, Root};
use crate::census::{FileRecord, IdMap, MapRecord, Snapshot};

pub use crate::census::render::Attribution;

/// Everything a report reads.
pub struct Input<'a> {
    pub snap: &'a Snapshot,
    pub extras: &'a Extras,
    pub attribution: Attribution<'a>,
    /// Census collectors that failed this scrape.
    pub failed: &'a [String],
    /// The lifecycle collector's creators, or why there are none.
    pub processes: Result<&'a CreatorProcesses, &'a str>,
    /// Now, Unix seconds (for the creators' ages).
    pub now_unix: f64,
    /// At most this many identities per holder kind of one map, and fd
    /// numbers of one process; the rest are counted in `holders_omitted`.
    pub max_holders: usize,
}

/// The origin store, when the lifecycle collector keeps one.
pub(crate) fn origins<'a>(inp: &Input<'a>) -> Option<&'a crate::origins::Origins> {
    inp.processes.ok()?.origins.as_deref()
}

/// CLOCK_BOOTTIME zero in Unix seconds.
pub(crate) fn boot_to_unix(inp: &Input<'_>) -> f64 {
    inp.now_unix - crate::sys::boottime_ns() as f64 / 1e9
}

/// The `origin` object of an object, or why there is none.
pub(crate) fn origin_json(inp: &Input<'_>, kind: crate::origins::store::ObjKind, id: u32) -> Value {
    match (origins(inp), inp.processes) {
        (Some(o), _) => o.object_json(kind, id, boot_to_unix(inp), inp.now_unix),
        (None, Err(why)) => json!({"unknown": why}),
        (None, Ok(_)) => {
            json!({"unknown": "--collector.origins is off, or its probe did not attach: no stacks are kept"})
        }
    }
}

/// The file holders of a program or link: fds per process, and where
/// origins are kept the records that took those files (`taken_at`).
pub(crate) fn object_file_holders(
    inp: &Input<'_>,
    kind: crate::census::ObjectKind,
    id: u32,
) -> Vec<Value> {
    let mut procs: BTreeMap<u32, (String, u64, Vec<u32>, Vec<u64>)> = BTreeMap::new();
    for f in inp
        .snap
        .object_files
        .iter()
        .flatten()
        .filter(|f| f.kind == kind && f.id == id)
    {
        let e = procs
            .entry(f.tgid)
            .or_insert_with(|| (comm(&f.comm), f.cgroup_id, vec![], vec![]));
        e.2.push(f.fd);
        e.3.push(f.file_ptr);
    }
    let okind = origin_kind(kind);
    procs
        .into_iter()
        .map(|(pid, (comm, cg, mut fds, mut files))| {
            let (c, pod) = (inp.attribution)(pid, cg);
            fds.sort_unstable();
            fds.truncate(inp.max_holders);
            files.sort_unstable();
            files.dedup();
            let mut v =
                json!({"pid": pid, "comm": comm, "container_id": c, "pod_uid": pod, "fds": fds});
            if let Some(o) = origins(inp) {
                v["taken_at"] =
                    Value::Array(o.files_json(okind, id, &files, boot_to_unix(inp), inp.now_unix));
            }
            v
        })
        .collect()
}

/// `pinned_at` of a pin holder `v` at `path`, where origins are kept.
/// The origin store's kind of a program or link.
fn origin_kind(kind: crate::census::ObjectKind) -> crate::origins::store::ObjKind {
    match kind {
        crate::census::ObjectKind::Program => crate::origins::store::ObjKind::Prog,
        crate::census::ObjectKind::Link => crate::origins::store::ObjKind::Link,
    }
}

/// The pins of a program or link, in walk order, and where origins are
/// kept the records that pinned each (`pinned_at`).
pub(crate) fn object_pin_holders<'a>(
    inp: &'a Input<'a>,
    kind: crate::census::ObjectKind,
    id: u32,
) -> impl Iterator<Item = Value> + 'a {
    let pin_kind = match kind {
        crate::census::ObjectKind::Program => crate::census::fdinfo::ObjKind::Prog,
        crate::census::ObjectKind::Link => crate::census::fdinfo::ObjKind::Link,
    };
    inp.snap
        .inventory
        .iter()
        .flat_map(|i| i.pins.iter())
        .filter(move |x| x.info.kind == pin_kind && x.info.id == id)
        .map(move |x| {
            let mut v = json!({"mount": x.mount, "path": x.path});
            add_pinned_at(inp, &mut v, origin_kind(kind), id, &x.path);
            v
        })
}

fn add_pinned_at(
    inp: &Input<'_>,
    v: &mut Value,
    kind: crate::origins::store::ObjKind,
    id: u32,
    path: &str,
) {
    if let Some(o) = origins(inp) {
        v["pinned_at"] = Value::Array(o.pins_json(kind, id, path, boot_to_unix(inp), inp.now_unix));
    }
}

fn comm(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Holder identities of the reported maps, by map id (built once per report).
#[derive(Default)]
struct Index<'a> {
    files: IdMap<Vec<&'a FileRecord>>,
    vmas: IdMap<Vec<&'a FileRecord>>,
    pins: IdMap<Vec<&'a crate::census::bpffs::Pin>>,
    programs: IdMap<Vec<&'a ProgramIdentity>>,
    slots: IdMap<Vec<&'a (u32, String, u32)>>,
    links: IdMap<Vec<u32>>,
}

impl<'a> Index<'a> {
    fn new(inp: &Input<'a>, ids: &[u32]) -> Index<'a> {
        let want: HashSet<u32> = ids.iter().copied().collect();
        let mut x = Index::default();
        let snap = inp.snap;
        for f in snap
            .files
            .iter()
            .flatten()
            .filter(|f| want.contains(&f.map_id))
        {
            x.files.entry(f.map_id).or_default().push(f);
        }
        for f in snap
            .vmas
            .iter()
            .flatten()
            .filter(|f| want.contains(&f.map_id))
        {
            x.vmas.entry(f.map_id).or_default().push(f);
        }
        for p in snap.inventory.iter().flat_map(|i| i.pins.iter()) {
            if p.info.kind == crate::census::fdinfo::ObjKind::Map && want.contains(&p.info.id) {
                x.pins.entry(p.info.id).or_default().push(p);
            }
        }
        for p in &inp.extras.programs {
            let mut used = p.3.clone();
            used.sort_unstable();
            used.dedup();
            for id in used.into_iter().filter(|id| want.contains(id)) {
                x.programs.entry(id).or_default().push(p);
            }
        }
        for s in inp.extras.slots.iter().filter(|s| want.contains(&s.2)) {
            x.slots.entry(s.2).or_default().push(s);
        }
        for l in inp.extras.links.iter().filter(|l| want.contains(&l.1)) {
            x.links.entry(l.1).or_default().push(l.0);
        }
        x
    }
}

/// The identities of one holder kind of map `id`. Every kind has an entry,
/// so a new kind appears in `holders` without a schema change.
fn identities(inp: &Input<'_>, x: &Index<'_>, kind: HolderKind, id: u32) -> Vec<Value> {
    let none = Vec::new();
    match kind {
        HolderKind::File => {
            // fd numbers per process, distinct files.
            let mut procs: BTreeMap<u32, (String, u64, Vec<u32>, Vec<u64>)> = BTreeMap::new();
            for f in x.files.get(&id).unwrap_or(&none) {
                let e = procs
                    .entry(f.tgid)
                    .or_insert_with(|| (comm(&f.comm), f.cgroup_id, vec![], vec![]));
                if f.pid == f.tgid {
                    e.0 = comm(&f.comm);
                }
                e.2.push(f.fd);
                e.3.push(f.file_ptr);
            }
            procs
                .into_iter()
                .map(|(tgid, (comm, cg, mut fds, mut files))| {
                    let (c, p) = (inp.attribution)(tgid, cg);
                    fds.sort_unstable();
                    fds.dedup();
                    files.sort_unstable();
                    files.dedup();
                    let omitted = fds.len().saturating_sub(inp.max_holders);
                    fds.truncate(inp.max_holders);
                    let mut v = json!({"pid": tgid, "comm": comm, "container_id": c, "pod_uid": p,
                           "fds": fds, "fds_omitted": omitted, "files": files.len()});
                    if let Some(o) = origins(inp) {
                        v["taken_at"] = Value::Array(o.files_json(
                            crate::origins::store::ObjKind::Map,
                            id,
                            &files,
                            boot_to_unix(inp),
                            inp.now_unix,
                        ));
                    }
                    v
                })
                .collect()
        }
        HolderKind::Pin => x
            .pins
            .get(&id)
            .into_iter()
            .flatten()
            .map(|p| {
                let mut v = json!({"mount": p.mount, "path": p.path});
                add_pinned_at(inp, &mut v, crate::origins::store::ObjKind::Map, id, &p.path);
                v
            })
            .collect(),
        HolderKind::Program => x
            .programs
            .get(&id)
            .into_iter()
            .flatten()
            .map(|p| json!({"id": p.0, "name": p.1, "type": p.2}))
            .collect(),
        HolderKind::Map => x
            .slots
            .get(&id)
            .into_iter()
            .flatten()
            .map(|s| json!({"id": s.0, "key": s.1}))
            .collect(),
        HolderKind::Mmap => {
            // The mapping's file and size, never its address (that would
            // undo the process's address-space randomisation).
            let mut v: Vec<&&FileRecord> = x.vmas.get(&id).into_iter().flatten().collect();
            v.sort_by_key(|f| (f.tgid, f.vm_start));
            v.dedup_by_key(|f| (f.tgid, f.vm_start));
            v.into_iter()
                .map(|f| {
                    let fd = x.files.get(&id).and_then(|fs| {
                        fs.iter()
                            .filter(|g| g.tgid == f.tgid && g.file_ptr == f.file_ptr)
                            .map(|g| g.fd)
                            .min()
                    });
                    let in_table = x
                        .files
                        .get(&id)
                        .is_some_and(|fs| fs.iter().any(|g| g.file_ptr == f.file_ptr));
                    json!({"pid": f.tgid, "comm": comm(&f.comm),
                           "size_bytes": f.vm_end.saturating_sub(f.vm_start),
                           "fd": fd,
                           "in_fd_table": in_table})
                })
                .collect()
        }
        HolderKind::Link => x
            .links
            .get(&id)
            .into_iter()
            .flatten()
            .map(|l| json!({"id": l}))
            .collect(),
        HolderKind::IoUring => {
            // Every (process, ring fd) holding the map's file in its ring.
            let mut seen = HashSet::new();
            inp.snap
                .io_uring
                .iter()
                .filter(|r| r.object == Some((crate::census::RingObject::Map, id)))
                .filter(|r| seen.insert((r.tgid, r.fd)))
                .map(|r| {
                    let (c, p) = (inp.attribution)(r.tgid, r.cgroup_id);
                    json!({"pid": r.tgid, "comm": comm(&r.comm), "ring_fd": r.fd,
                           "container_id": c, "pod_uid": p})
                })
                .collect()
        }
        HolderKind::StructOps => inp
            .snap
            .holders
            .get(&id)
            .and_then(|h| h.get(HolderKind::StructOps))
            .filter(|&n| n > 0)
            .map(|n| json!({"references": n, "registered": true}))
            .into_iter()
            .collect(),
        HolderKind::Inflight => inp
            .snap
            .inflight
            .iter()
            .filter(|f| f.map_id == id)
            .map(|f| {
                let receivers: Vec<Value> = f
                    .receivers
                    .iter()
                    .map(|r| {
                        let (c, p) = (inp.attribution)(r.tgid, r.cgroup_id);
                        json!({"pid": r.tgid, "comm": comm(&r.comm), "container_id": c, "pod_uid": p})
                    })
                    .collect();
                json!({
                    "socket_inode": (f.receiver_ino != 0).then_some(f.receiver_ino),
                    "queue_socket_inode": f.queue_ino,
                    "via_sockets": f.via,
                    "receivers": receivers,
                    "age_seconds": inp.snap.inflight_ages.get(&id).map(|d| d.as_secs()),
                })
            })
            .collect(),
    }
}

/// Human age of `secs` seconds: `45s`, `12m`, `3h`, `2d`.
pub fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// The creating process of `m`, or why it is unknown.
fn process(inp: &Input<'_>, m: &MapRecord) -> (Value, Value) {
    match inp.processes {
        Err(why) => (Value::Null, json!(why)),
        Ok(p) => match p.by_id.get(&m.id) {
            Some(c) => (
                json!({"pid": c.pid, "comm": c.comm, "cgroup_id": c.cgroup_id,
                       "created_unix_seconds": (c.created_unix * 1000.0).round() / 1000.0,
                       "age_seconds": (inp.now_unix - c.created_unix).max(0.0).round()}),
                Value::Null,
            ),
            None if m.id <= p.start_max => (
                Value::Null,
                json!("the map existed before the exporter's lifecycle probes attached"),
            ),
            None => (
                Value::Null,
                json!("the lifecycle probes recorded no creation of this map (record overwritten, or a creation path the probes do not see)"),
            ),
        },
    }
}

/// Chains listed per map at most.
const MAX_CHAINS: usize = 16;

/// One object on a chain, as the document names it.
fn hop(snap: &Snapshot, o: Obj) -> Value {
    match o {
        Obj::Map(id) => {
            let m = snap.maps.iter().find(|m| m.id == id);
            json!({"kind": "map", "id": id, "name": m.map(|m| m.name.clone()),
                   "type": m.map(|m| map_type_name(m.map_type))})
        }
        Obj::Prog(id) => {
            let p = snap.programs.iter().flatten().find(|p| p.id == id);
            json!({"kind": "program", "id": id, "name": p.map(|p| p.name.clone()),
                   "type": p.map(|p| prog_type_label(p.prog_type).into_owned())})
        }
        Obj::Link(id) => json!({"kind": "link", "id": id}),
    }
}

/// A pin's mount point and path within it as one path.
pub(crate) fn pin_path(mount: &str, path: &str) -> String {
    format!("{}{}", mount.trim_end_matches('/'), path)
}

/// One root, with the identities the snapshot has for it.
fn root_json(inp: &Input<'_>, r: &Root) -> Value {
    let snap = inp.snap;
    match *r {
        Root::Process(pid) => {
            let f = snap.process_comm_cgroup(pid).map(|(c, cg)| (comm(c), cg));
            let (c, p) = f.as_ref().map_or((String::new(), String::new()), |f| {
                (inp.attribution)(pid, f.1)
            });
            json!({"kind": "process", "pid": pid, "comm": f.map(|f| f.0),
                   "container_id": c, "pod_uid": p})
        }
        Root::Pin(id) => {
            let p = snap
                .inventory
                .iter()
                .flat_map(|i| i.pins.iter())
                .find(|p| p.dev == id.dev && p.ino == id.ino);
            json!({"kind": "pin", "path": p.map(|p| pin_path(&p.mount, &p.path)),
                   "mount": p.map(|p| p.mount.clone()),
                   "retained_memory_bytes": snap.roots.retained.get(&id)})
        }
        Root::InferredPin(_) => json!({"kind": "pin", "path": null, "mount": null,
                   "inferred": true, "retained_memory_bytes": null}),
        Root::Inflight => json!({"kind": "inflight"}),
        Root::IoUring(pid) => {
            let r = snap.process_ring(pid);
            let (c, p) = r.map_or((String::new(), String::new()), |r| {
                (inp.attribution)(pid, r.cgroup_id)
            });
            json!({"kind": "io_uring", "pid": pid, "comm": r.map(|r| comm(&r.comm)),
                   "ring_fd": r.map(|r| r.fd), "container_id": c, "pod_uid": p})
        }
        Root::Attachment(link) => json!({"kind": "attachment", "link_id": link}),
        Root::Registered(id) => json!({"kind": "attachment", "link_id": null,
                   "attach_kind": "struct_ops",
                   "target": format!("map {id} registered in the kernel")}),
        Root::Attached(n) => {
            let a = snap.attachments.get(n as usize);
            json!({"kind": "attachment", "link_id": null,
                   "attach_kind": a.map(|a| a.kind.label()), "target": a.map(|a| a.target.clone())})
        }
        Root::Unexplained(o) => json!({"kind": "unexplained", "object": hop(snap, o)}),
        Root::Unknown(o) => json!({"kind": "unknown", "object": hop(snap, o),
        "reason": match o {
            Obj::Prog(_) => "references beyond the holders found, and a source that can hold a program of this type was not read completely (see bpfmap_program_holder_source_complete)",
            _ => "a holder source is off, failed or saw only part of the node",
        }}),
        Root::Cycle => json!({"kind": "cycle"}),
    }
}

/// Every chain from map `id` to its roots, and whether it is orphaned
/// (null where that cannot be known).
fn roots_json(inp: &Input<'_>, m: &MapRecord) -> (Value, Value) {
    let snap = inp.snap;
    let obj = Obj::Map(m.id);
    let chains = chains_json(inp, obj);
    let orphaned = if !snap.features.map_memcg {
        Value::Null
    } else if m.creator.is_gone() {
        json!(crate::census::roots::orphaned(&snap.graph.roots(obj)))
    } else {
        json!(false)
    };
    (chains, orphaned)
}

/// Every chain from `obj` to its roots (at most [`MAX_CHAINS`]): the hops
/// after `obj`, and the root.
pub(crate) fn chains_json(inp: &Input<'_>, obj: Obj) -> Value {
    let snap = inp.snap;
    Value::Array(
        snap.graph
            .chains(obj, MAX_CHAINS)
            .into_iter()
            .map(|(path, root)| {
                let via: Vec<Value> = path.iter().skip(1).map(|o| hop(snap, *o)).collect();
                json!({"via": via, "root": root_json(inp, &root)})
            })
            .collect(),
    )
}

/// The report of one map.
fn map_report(inp: &Input<'_>, x: &Index<'_>, m: &MapRecord) -> Value {
    let snap = inp.snap;
    let mut flags = [0u8; 10];
    let mut holders = serde_json::Map::new();
    let mut omitted = serde_json::Map::new();
    for k in HolderKind::ALL {
        let mut v = identities(inp, x, k, m.id);
        if v.len() > inp.max_holders {
            omitted.insert(k.label().into(), json!(v.len() - inp.max_holders));
            v.truncate(inp.max_holders);
        }
        holders.insert(k.label().into(), Value::Array(v));
    }
    let h = snap.holders.get(&m.id);
    let counts: BTreeMap<&str, Value> = HolderKind::ALL
        .iter()
        .map(|k| {
            (
                k.label(),
                h.and_then(|h| h.counts[*k as usize])
                    .map_or(Value::Null, |c| json!(c)),
            )
        })
        .collect();
    let unexplained = h.and_then(|h| h.unexplained(m.refcnt));
    let withheld = match unexplained {
        Some(_) => Value::Null,
        None if inp.failed.is_empty() => {
            let incomplete: Vec<&str> = snap
                .sources
                .iter()
                .filter(|(_, complete)| !complete)
                .map(|(n, _)| *n)
                .collect();
            json!(format!(
                "a holder source is off or saw only part of the node: {}",
                incomplete.join(", ")
            ))
        }
        None => json!(format!(
            "holder census incomplete: {} failed",
            inp.failed.join(", ")
        )),
    };
    let (process, process_unknown) = process(inp, m);
    let (roots, orphaned) = roots_json(inp, m);
    let creator = match creators::identity(snap, m) {
        None => json!({"known": false, "reason": match &snap.features.map_memcg_off {
            Some(why) => format!("{why}: maps are not charged to their creator's memory cgroup"),
            None if snap.features.map_memcg => "the creators collector did not run or failed".into(),
            None => "this kernel records no creator of maps (memcg accounting of maps is 5.11+ with CONFIG_MEMCG)".to_string(),
        }, "process": process, "process_unknown": process_unknown}),
        Some(c) => json!({
            "known": true,
            "cgroup_id": c.cgroup_id,
            "cgroup_path": c.cgroup_path,
            "container_id": c.container_id,
            "pod_uid": c.pod_uid,
            "gone": c.gone,
            "creating_cgroup_path": c.remembered_path,
            "process": process,
            "process_unknown": process_unknown,
        }),
    };
    json!({
        "id": m.id,
        "name": m.name,
        "type": map_type_name(m.map_type),
        "key_size": m.key_size,
        "value_size": m.value_size,
        "max_entries": m.max_entries,
        "flags": flags_label(m.map_flags, &mut flags),
        "frozen": m.frozen,
        "memory_bytes": snap.memory.get(&m.id),
        "refcount": m.refcnt,
        "usercount": m.usercnt,
        "creator": creator,
        "holders": holders,
        "holders_omitted": omitted,
        "holder_counts": counts,
        "pins_inferred": h.map_or(0, |h| h.inferred_pins),
        "unexplained": unexplained,
        "unexplained_withheld": withheld,
        "roots": roots,
        "orphaned": orphaned,
        "origin": origin_json(inp, crate::origins::store::ObjKind::Map, m.id),
    })
}

/// Writes the document of a page item by item: `{"<key>": [items],
/// "next_after", "schema_version", "total", "truncated"}` (the keys in the
/// order [`report`] serialises them). `item` renders one id (`None`: skip
/// it). Only one item is held at a time. An item that would take the items
/// past `max_bytes` is not written, unless it is the first: the page then
/// ends before it, with `truncated` and `next_after` naming the last item
/// written, as a page cut by `limit`.
pub fn write_page<W: std::io::Write>(
    out: &mut W,
    key: &str,
    page: &Page,
    max_bytes: usize,
    mut item: impl FnMut(u32) -> Option<Value>,
) -> std::io::Result<()> {
    write!(out, "{{{}:[", json!(key))?;
    let (mut written, mut last, mut cut) = (0usize, None, false);
    let mut buf = Vec::new();
    for &id in &page.ids {
        let Some(v) = item(id) else { continue };
        buf.clear();
        serde_json::to_writer(&mut buf, &v)?;
        drop(v);
        if last.is_some() && written + buf.len() + 1 > max_bytes {
            cut = true;
            break;
        }
        if last.is_some() {
            out.write_all(b",")?;
        }
        out.write_all(&buf)?;
        written += buf.len() + 1;
        last = Some(id);
    }
    let next_after = if cut { last } else { page.next_after };
    writeln!(
        out,
        "],\"next_after\":{},\"schema_version\":{SCHEMA_VERSION},\"total\":{},\"truncated\":{}}}",
        json!(next_after),
        page.total,
        next_after.is_some()
    )
}

/// [`report`], written map by map (see [`write_page`]).
pub fn write_report<W: std::io::Write>(
    inp: &Input<'_>,
    page: &Page,
    max_bytes: usize,
    out: &mut W,
) -> std::io::Result<()> {
    let x = Index::new(inp, &page.ids);
    let want: HashSet<u32> = page.ids.iter().copied().collect();
    let by_id: IdMap<&MapRecord> = inp
        .snap
        .maps
        .iter()
        .filter(|m| want.contains(&m.id))
        .map(|m| (m.id, m))
        .collect();
    write_page(out, "maps", page, max_bytes, |id| {
        by_id.get(&id).map(|m| map_report(inp, &x, m))
    })
}

/// The whole document for a page of maps.
pub fn report(inp: &Input<'_>, page: &Page) -> Value {
    let x = Index::new(inp, &page.ids);
    let maps: Vec<Value> = page
        .ids
        .iter()
        .filter_map(|id| inp.snap.maps.iter().find(|m| m.id == *id))
        .map(|m| map_report(inp, &x, m))
        .collect();
    json!({
        "schema_version": SCHEMA_VERSION,
        "total": page.total,
        "truncated": page.next_after.is_some(),
        "next_after": page.next_after,
        "maps": maps,
    })
}
