//! `bpfmap-exporter explain`: one census, then for the selected maps every
//! fact and every holder by identity. [`report`] is a pure function of an
//! [`Input`]: the [`Snapshot`] (taken with `keep_files`), the [`Extras`]
//! (program, outer-map slot and link identities) and the creator processes
//! the lifecycle collector recorded, so the running exporter serves the same
//! JSON (`/api/v1/maps`, src/api.rs). The JSON schema is documented in
//! docs/explain.md ("JSON API").
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::census::creators;
use crate::census::holders::HolderKind;
use crate::census::names::{flags_label, is_map_in_map, map_type_name};
use crate::census::{Census, CensusOpts, FileRecord, IdMap, MapRecord, Snapshot};

/// Version of the JSON document's shape.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("select").required(true).args(["id", "name", "pin", "pid"])))]
pub struct ExplainArgs {
    /// The map with this id.
    #[arg(long)]
    pub id: Option<u32>,
    /// The map with this name (an error if several maps have it).
    #[arg(long)]
    pub name: Option<String>,
    /// The map pinned at this path on a bpffs.
    #[arg(long)]
    pub pin: Option<PathBuf>,
    /// Every map this process holds (fds and mmaps) or has in flight to it.
    #[arg(long)]
    pub pid: Option<u32>,
    /// text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
    /// Ask a running exporter (its /api/v1/maps) instead of taking a census
    /// here, e.g. http://127.0.0.1:9863: it also knows the creating process
    /// of maps created while it ran. Basic auth as http://user:password@host:port.
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
}

pub use crate::collector::{CreatorProcess, CreatorProcesses};

/// Why creator processes are unknown in a standalone census.
pub const STANDALONE_PROCESSES: &str =
    "the lifecycle collector does not run in a standalone explain \
     (explain --from http://<node>:9863 asks a running exporter, which records creations)";

/// (program id, name, type, map ids it uses).
pub type ProgramIdentity = (u32, String, String, Vec<u32>);

/// Holder identities found by bpf() queries (the snapshot keeps counts).
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub programs: Vec<ProgramIdentity>,
    /// (outer map id, key, inner map id).
    pub slots: Vec<(u32, String, u32)>,
    /// (link id, map id) of iterator links bound to a map.
    pub links: Vec<(u32, u32)>,
}

/// Query the program, outer-map slot and link identities.
pub fn gather_extras(snap: &Snapshot) -> Extras {
    use libbpf_rs::query::{
        IterType, LinkInfoIter, LinkTypeInfo, ProgInfoIter, ProgInfoQueryOptions,
    };
    use libbpf_rs::MapCore;
    let mut x = Extras::default();
    for p in ProgInfoIter::with_query_opts(ProgInfoQueryOptions::default().include_map_ids(true)) {
        x.programs.push((
            p.id,
            p.name.to_string_lossy().into_owned(),
            format!("{:?}", p.ty),
            p.map_ids,
        ));
    }
    for l in LinkInfoIter::default() {
        if let LinkTypeInfo::Iter(it) = &l.info {
            if let IterType::Map { map_id } = it.iter_type {
                x.links.push((l.id, map_id));
            }
        }
    }
    for m in snap.maps.iter().filter(|m| is_map_in_map(m.map_type)) {
        let Ok(h) = libbpf_rs::MapHandle::from_map_id(m.id) else {
            continue;
        };
        for key in h.keys() {
            if let Ok(Some(v)) = h.lookup(&key, libbpf_rs::MapFlags::ANY) {
                if v.len() >= 4 {
                    let inner = u32::from_le_bytes(v[..4].try_into().expect("4 bytes"));
                    let k = if key.len() == 4 {
                        u32::from_le_bytes(key[..4].try_into().expect("4 bytes")).to_string()
                    } else {
                        key.iter().map(|b| format!("{b:02x}")).collect()
                    };
                    x.slots.push((m.id, k, inner));
                }
            }
        }
    }
    x
}

/// What to explain.
#[derive(Debug, Clone)]
pub enum Selector {
    Id(u32),
    Name(String),
    /// A pin: (mount, path relative to the mount), already resolved.
    Pin(PathBuf),
    Pid(u32),
}

/// The map ids a selector names, or a message naming the cause.
pub fn select(snap: &Snapshot, sel: &Selector) -> Result<Vec<u32>, String> {
    match sel {
        Selector::Id(id) => {
            if snap.maps.iter().any(|m| m.id == *id) {
                Ok(vec![*id])
            } else if snap.own.iter().any(|m| m.id == *id) {
                Err(format!(
                    "map {id} is the exporter's own (a census iterator's map)"
                ))
            } else {
                Err(format!(
                    "no map with id {id} (bpftool map show lists the live maps)"
                ))
            }
        }
        Selector::Name(n) => {
            let hits: Vec<&MapRecord> = snap.maps.iter().filter(|m| &m.name == n).collect();
            match hits.len() {
                0 => Err(format!(
                    "no map named {n:?} (names are at most 15 bytes, as the kernel truncates them)"
                )),
                1 => Ok(vec![hits[0].id]),
                _ => Err(several_named(
                    n,
                    hits.iter().map(|m| (m.id, map_type_name(m.map_type))),
                )),
            }
        }
        Selector::Pin(p) => {
            let inv = snap
                .inventory
                .as_ref()
                .ok_or("the pin walk did not run or failed (collector pins)")?;
            let want = p.to_string_lossy();
            let hit = inv.pins.iter().find(|pin| {
                let full = format!("{}{}", pin.mount.trim_end_matches('/'), pin.path);
                full == want
            });
            match hit {
                Some(pin) if pin.info.kind == crate::census::fdinfo::ObjKind::Map => {
                    Ok(vec![pin.info.id])
                }
                Some(_) => Err(format!(
                    "{want} is pinned but is not a map (a program or link)"
                )),
                None => Err(format!(
                    "{want} is not a pin on a mounted bpffs (mounts: {})",
                    inv.mounts
                        .iter()
                        .map(|m| m.label.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
        Selector::Pid(pid) => {
            let mut ids: Vec<u32> = snap
                .files
                .iter()
                .chain(snap.vmas.iter())
                .flatten()
                .filter(|f| f.tgid == *pid)
                .map(|f| f.map_id)
                .chain(
                    snap.inflight
                        .iter()
                        .filter(|f| f.receivers.iter().any(|r| r.tgid == *pid))
                        .map(|f| f.map_id),
                )
                .filter(|id| snap.maps.iter().any(|m| m.id == *id))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            Ok(ids)
        }
    }
}

/// The message for a name several maps share.
pub fn several_named(n: &str, hits: impl Iterator<Item = (u32, String)>) -> String {
    let hits: Vec<String> = hits.map(|(id, ty)| format!("{id} ({ty})")).collect();
    format!(
        "{} maps are named {n:?}; choose one with --id: {}",
        hits.len(),
        hits.join(", ")
    )
}

/// Filters and paging of a listing (`/api/v1/maps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Only maps with unexplained references (a published, non-zero count).
    pub unexplained: bool,
    /// Only maps whose creating cgroup is gone.
    pub creator_gone: bool,
    /// Only maps with a greater id (paging: the previous page's `next_after`).
    pub after: Option<u32>,
    /// At most this many maps.
    pub limit: usize,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            unexplained: false,
            creator_gone: false,
            after: None,
            limit: usize::MAX,
        }
    }
}

/// A page of a selection: the ids to report, how many matched in all, and
/// the id to continue after when the page is full and more matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub ids: Vec<u32>,
    pub total: usize,
    pub next_after: Option<u32>,
}

/// Apply `f` to `ids` (any order): filters, then ascending ids from
/// `f.after`, at most `f.limit`.
pub fn page(snap: &Snapshot, ids: &[u32], f: &Filter) -> Page {
    let wanted: HashSet<u32> = ids.iter().copied().collect();
    let mut hits: Vec<u32> = snap
        .maps
        .iter()
        .filter(|m| wanted.contains(&m.id))
        .filter(|m| {
            !f.unexplained
                || snap
                    .holders
                    .get(&m.id)
                    .and_then(|h| h.unexplained(m.refcnt))
                    .is_some_and(|u| u > 0)
        })
        .filter(|m| !f.creator_gone || creators::identity(snap, m).is_some_and(|c| c.gone))
        .map(|m| m.id)
        .collect();
    hits.sort_unstable();
    hits.dedup();
    let total = hits.len();
    let from = f.after.map_or(0, |a| hits.partition_point(|&id| id <= a));
    let rest = &hits[from..];
    let n = rest.len().min(f.limit);
    Page {
        ids: rest[..n].to_vec(),
        total,
        next_after: (n < rest.len() && n > 0).then(|| rest[n - 1]),
    }
}

/// (container_id, pod_uid) of a process, empty where unknown.
pub type Attribution<'a> = &'a dyn Fn(u32, u64) -> (String, String);

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
                    json!({"pid": tgid, "comm": comm, "container_id": c, "pod_uid": p,
                           "fds": fds, "fds_omitted": omitted, "files": files.len()})
                })
                .collect()
        }
        HolderKind::Pin => x
            .pins
            .get(&id)
            .into_iter()
            .flatten()
            .map(|p| json!({"mount": p.mount, "path": p.path}))
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
            let mut v: Vec<&&FileRecord> = x.vmas.get(&id).into_iter().flatten().collect();
            v.sort_by_key(|f| (f.tgid, f.vm_start));
            v.dedup_by_key(|f| (f.tgid, f.vm_start));
            v.into_iter()
                .map(|f| {
                    json!({"pid": f.tgid, "comm": comm(&f.comm),
                           "start": format!("0x{:x}", f.vm_start),
                           "end": format!("0x{:x}", f.vm_end),
                           "in_fd_table": x.files.get(&id).is_some_and(|fs| fs.iter().any(|g| g.file_ptr == f.file_ptr))})
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
        "unexplained": unexplained,
        "unexplained_withheld": withheld,
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

/// Human-readable rendering of [`report`]'s document.
pub fn text(doc: &Value) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    for m in doc["maps"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "map {} {:?} {} key {}B value {}B max_entries {} flags {}{}",
            m["id"],
            s(&m["name"]),
            s(&m["type"]),
            m["key_size"],
            m["value_size"],
            m["max_entries"],
            s(&m["flags"]),
            if m["frozen"] == json!(true) {
                " frozen"
            } else {
                ""
            }
        );
        let _ = writeln!(
            o,
            "  memory {} bytes, refcount {}, usercount {}",
            s(&m["memory_bytes"]),
            m["refcount"],
            m["usercount"]
        );
        let c = &m["creator"];
        let what = if c["known"] == json!(true) {
            if c["cgroup_id"].is_null() {
                "root cgroup (host)".to_string()
            } else {
                format!(
                    "cgroup {} {} container {:?} pod {:?}{}",
                    c["cgroup_id"],
                    s(&c["cgroup_path"]),
                    s(&c["container_id"]),
                    s(&c["pod_uid"]),
                    if c["gone"] == json!(true) {
                        " (creating cgroup gone: charged to this ancestor)"
                    } else {
                        ""
                    }
                )
            }
        } else {
            format!("cgroup unknown ({})", s(&c["reason"]))
        };
        let p = &c["process"];
        let who = if p.is_object() {
            format!(
                "created by pid {} ({}), {} ago",
                p["pid"],
                s(&p["comm"]),
                age(p["age_seconds"].as_f64().unwrap_or(0.0))
            )
        } else {
            format!("process unknown ({})", s(&c["process_unknown"]))
        };
        let _ = writeln!(o, "  creator: {what}; {who}");
        let h = &m["holders"];
        let each = |k: &str| h[k].as_array().cloned().unwrap_or_default();
        for p in each("file") {
            let more = match p["fds_omitted"].as_u64() {
                Some(n) if n > 0 => format!(" and {n} more"),
                _ => String::new(),
            };
            let _ = writeln!(
                o,
                "  process pid {} comm {:?} container {:?} pod {:?} fds {}{more} ({} distinct files)",
                p["pid"],
                s(&p["comm"]),
                s(&p["container_id"]),
                s(&p["pod_uid"]),
                p["fds"],
                p["files"]
            );
        }
        for p in each("pin") {
            let _ = writeln!(o, "  pin {} {}", s(&p["mount"]), s(&p["path"]));
        }
        for p in each("program") {
            let _ = writeln!(
                o,
                "  program id {} {:?} {}",
                p["id"],
                s(&p["name"]),
                s(&p["type"])
            );
        }
        for p in each("map") {
            let _ = writeln!(o, "  outer map id {} key {}", p["id"], s(&p["key"]));
        }
        for p in each("mmap") {
            let _ = writeln!(
                o,
                "  mmap pid {} comm {:?} at {}-{}",
                p["pid"],
                s(&p["comm"]),
                s(&p["start"]),
                s(&p["end"])
            );
        }
        for p in each("link") {
            let _ = writeln!(o, "  iterator link id {}", p["id"]);
        }
        for p in each("inflight") {
            let via: Vec<String> = p["via_sockets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.to_string())
                .collect();
            let inside = if via.is_empty() {
                String::new()
            } else {
                format!(" inside in-flight socket inode {}", via.join(" inside "))
            };
            let age = match &p["age_seconds"] {
                Value::Null => String::new(),
                a => format!(", in flight for {a}s"),
            };
            let rs = p["receivers"].as_array().cloned().unwrap_or_default();
            if rs.is_empty() {
                let _ = writeln!(
                    o,
                    "  fd in flight on socket inode {}{inside}, no process owns the receiving socket{age}",
                    p["queue_socket_inode"]
                );
            }
            for r in rs {
                let _ = writeln!(
                    o,
                    "  fd in flight to pid {} ({}) on socket inode {}{inside} container {:?} pod {:?}{age}",
                    r["pid"],
                    s(&r["comm"]),
                    p["socket_inode"],
                    s(&r["container_id"]),
                    s(&r["pod_uid"]),
                );
            }
        }
        // Kinds this renderer does not name yet still show.
        let named = ["file", "pin", "program", "map", "mmap", "link", "inflight"];
        for (k, v) in h.as_object().into_iter().flatten() {
            if !named.contains(&k.as_str()) {
                for p in v.as_array().into_iter().flatten() {
                    let _ = writeln!(o, "  {k} {p}");
                }
            }
        }
        for (k, n) in m["holders_omitted"].as_object().into_iter().flatten() {
            let _ = writeln!(o, "  ... and {n} more {k} holders (not listed)");
        }
        match &m["unexplained"] {
            Value::Null => {
                let _ = writeln!(
                    o,
                    "  unexplained: withheld ({})",
                    s(&m["unexplained_withheld"])
                );
            }
            v => {
                let _ = writeln!(o, "  unexplained: {v}");
            }
        }
    }
    if doc["truncated"] == json!(true) {
        let _ = writeln!(
            o,
            "({} of {} maps shown; continue after id {})",
            doc["maps"].as_array().map_or(0, |a| a.len()),
            doc["total"],
            doc["next_after"]
        );
    }
    o
}

/// Run the subcommand: one census (or one request to a running exporter
/// with `--from`), print, error on a bad selector.
pub fn run(args: &ExplainArgs, btf_path: Option<PathBuf>) -> anyhow::Result<()> {
    if let Some(url) = &args.from {
        return run_from(args, url);
    }
    let sel = if let Some(id) = args.id {
        Selector::Id(id)
    } else if let Some(n) = &args.name {
        Selector::Name(n.clone())
    } else if let Some(p) = &args.pin {
        let canon = std::fs::canonicalize(p)
            .with_context(|| format!("--pin {}: no such file", p.display()))?;
        Selector::Pin(canon)
    } else if let Some(pid) = args.pid {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            bail!("--pid {pid}: no such process");
        }
        Selector::Pid(pid)
    } else {
        bail!("choose a map with --id, --name, --pin or --pid");
    };
    let mut census = Census::load(CensusOpts {
        btf_path,
        keep_files: true,
        ..Default::default()
    })?;
    let (snap, rep) = census.take(&[]);
    let failed: Vec<String> = rep
        .outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.name.to_string())
        .collect();
    if !snap.maps_ok {
        bail!("the map census failed: {}", failed.join(", "));
    }
    let ids = select(&snap, &sel).map_err(anyhow::Error::msg)?;
    let x = gather_extras(&snap);
    let attr = crate::k8s::CgroupAttributor::new("/proc", None);
    let attribution = |tgid: u32, cg: u64| {
        use crate::k8s::Attributor;
        let i = attr.identify(tgid, cg);
        (i.container_id, i.pod_uid)
    };
    let inp = Input {
        snap: &snap,
        extras: &x,
        attribution: &attribution,
        failed: &failed,
        processes: Err(STANDALONE_PROCESSES),
        now_unix: now_unix(),
        max_holders: usize::MAX,
    };
    let doc = report(&inp, &page(&snap, &ids, &Filter::default()));
    print(args, &doc, ids.is_empty())
}

fn print(args: &ExplainArgs, doc: &Value, none: bool) -> anyhow::Result<()> {
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(doc)?);
    } else {
        print!("{}", text(doc));
        if none {
            println!("process {} holds no map", args.pid.unwrap_or(0));
        }
    }
    Ok(())
}

/// Now, Unix seconds.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `explain --from URL`: the same selection, answered by a running
/// exporter's `/api/v1/maps`.
fn run_from(args: &ExplainArgs, url: &str) -> anyhow::Result<()> {
    use base64::Engine;
    let base = url.trim_end_matches('/');
    let parsed: hyper::Uri = base
        .parse()
        .with_context(|| format!("--from {url:?}: not a URL (e.g. http://127.0.0.1:9863)"))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
        bail!("--from {url:?}: expected http://HOST:PORT or https://HOST:PORT");
    }
    // user:password@ becomes a basic auth header (ureq sends none itself).
    let (auth, base) = match parsed.authority().map(|a| a.as_str()) {
        Some(a) if a.contains('@') => {
            let (user, host) = a.rsplit_once('@').expect("contains @");
            let b64 = base64::engine::general_purpose::STANDARD.encode(user);
            let scheme = parsed.scheme_str().unwrap_or("http");
            let rest = parsed.path().trim_end_matches('/');
            (
                Some(format!("Basic {b64}")),
                format!("{scheme}://{host}{rest}"),
            )
        }
        _ => (None, base.to_string()),
    };
    let (path, query): (String, Vec<(&str, String)>) = if let Some(id) = args.id {
        (format!("/api/v1/maps/{id}"), vec![])
    } else if let Some(n) = &args.name {
        ("/api/v1/maps".into(), vec![("name", n.clone())])
    } else if let Some(p) = &args.pin {
        (
            "/api/v1/maps".into(),
            vec![("pin", p.to_string_lossy().into_owned())],
        )
    } else if let Some(pid) = args.pid {
        ("/api/v1/maps".into(), vec![("pid", pid.to_string())])
    } else {
        bail!("choose a map with --id, --name, --pin or --pid");
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    let mut req = agent.get(format!("{base}{path}"));
    for (k, v) in &query {
        req = req.query(k, v);
    }
    if path == "/api/v1/maps" {
        req = req.query("limit", crate::api::MAX_LIMIT.to_string());
    }
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let mut resp = req
        .call()
        .with_context(|| format!("GET {base}{path} (--from)"))?;
    let status = resp.status();
    let body = resp
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .with_context(|| format!("reading the answer of {base}{path}"))?;
    let doc: Value = serde_json::from_str(&body).with_context(|| {
        format!(
            "{base}{path} answered {status} with no JSON document (is it a bpfmap-exporter?): {}",
            body.chars().take(200).collect::<String>()
        )
    })?;
    if !status.is_success() {
        bail!(
            "{}",
            doc["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{base}{path} answered {status}"))
        );
    }
    let maps = doc["maps"].as_array().cloned().unwrap_or_default();
    if let (Some(n), true) = (&args.name, maps.len() > 1) {
        bail!(
            "{}",
            several_named(
                n,
                maps.iter().map(|m| (
                    m["id"].as_u64().unwrap_or(0) as u32,
                    m["type"].as_str().unwrap_or("").to_string()
                ))
            )
        );
    }
    if args.name.is_some() && maps.is_empty() {
        bail!(
            "no map named {:?} (names are at most 15 bytes, as the kernel truncates them)",
            args.name.as_deref().unwrap_or("")
        );
    }
    print(args, &doc, maps.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::census::holders::{compute, Observed};
    use crate::census::Creator;

    fn map(id: u32, refcnt: i64, creator: Creator) -> MapRecord {
        MapRecord {
            map_ptr: id as u64,
            refcnt,
            usercnt: 1,
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
            creator,
        }
    }

    fn file(tgid: u32, fd: u32, ptr: u64, map_id: u32, vm: u64) -> FileRecord {
        FileRecord {
            file_ptr: ptr,
            cgroup_id: 1,
            tgid,
            pid: tgid,
            fd,
            map_id,
            comm: b"agent".to_vec(),
            vm_start: vm,
            vm_end: if vm > 0 { vm + 0x1000 } else { 0 },
            sock_ino: 0,
        }
    }

    /// Maps 1..=5: 1 held by 3 processes' fds, 2 unexplained (refcnt 2, one
    /// file), 3 creator gone, 4 mmap-only, 5 plain.
    fn snapshot() -> Snapshot {
        let maps = vec![
            map(1, 1, Creator::Root),
            map(2, 2, Creator::Live(7)),
            map(3, 1, Creator::Gone(8)),
            map(4, 1, Creator::Root),
            map(5, 1, Creator::Root),
        ];
        let files = vec![
            file(10, 3, 0xa, 1, 0),
            file(11, 3, 0xa, 1, 0),
            file(12, 4, 0xa, 1, 0),
            file(10, 5, 0xb, 2, 0),
            file(10, 6, 0xc, 3, 0),
            file(10, 7, 0xe, 5, 0),
        ];
        let vmas = vec![file(13, 0, 0xd, 4, 0x7f00_0000)];
        let obs = Observed {
            files: Some(files.clone()),
            vmas: Some(vmas.clone()),
            programs: Some(vec![]),
            slots: Some(vec![]),
            links: Some(vec![]),
            pins: Some(vec![]),
            inflight: Some(vec![]),
            incomplete: vec![],
        };
        Snapshot {
            holders: compute(&maps, &obs),
            maps,
            maps_ok: true,
            features: crate::census::Features {
                map_memcg: true,
                ..Default::default()
            },
            creator_paths: Some(
                [
                    (7, "/kubepods/besteffort/pod0a1b2c3d-1111-2222-3333-444455556666/c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1".to_string()),
                    (8, "/kubepods/besteffort/pod0a1b2c3d-1111-2222-3333-777788889999".to_string()),
                ]
                .into_iter()
                .collect(),
            ),
            files: Some(files),
            vmas: Some(vmas),
            ..Default::default()
        }
    }

    fn no_attr(_: u32, _: u64) -> (String, String) {
        (String::new(), String::new())
    }

    #[test]
    fn filters_and_paging_select_by_id_with_a_continuation() {
        let s = snapshot();
        let all: Vec<u32> = (1..=5).collect();
        let p = page(&s, &all, &Filter::default());
        assert_eq!(
            (p.ids.clone(), p.total, p.next_after),
            (all.clone(), 5, None)
        );
        let f = |unexplained, creator_gone| Filter {
            unexplained,
            creator_gone,
            ..Filter::default()
        };
        assert_eq!(page(&s, &all, &f(true, false)).ids, vec![2]);
        assert_eq!(page(&s, &all, &f(false, true)).ids, vec![3]);
        assert!(page(&s, &all, &f(true, true)).ids.is_empty());
        let two = Filter {
            limit: 2,
            ..Filter::default()
        };
        let p = page(&s, &[5, 1, 3, 2, 4, 99], &two);
        assert_eq!(
            (p.ids.clone(), p.total, p.next_after),
            (vec![1, 2], 5, Some(2))
        );
        let p = page(
            &s,
            &all,
            &Filter {
                after: Some(2),
                ..two.clone()
            },
        );
        assert_eq!((p.ids, p.next_after), (vec![3, 4], Some(4)));
        let p = page(
            &s,
            &all,
            &Filter {
                after: Some(4),
                ..two
            },
        );
        assert_eq!((p.ids, p.next_after), (vec![5], None));
    }

    #[test]
    fn report_lists_every_kind_bounds_lists_and_names_the_creator_process() {
        let s = snapshot();
        let mut by_id = IdMap::default();
        by_id.insert(
            2,
            CreatorProcess {
                pid: 4242,
                comm: "agent".into(),
                cgroup_id: 9,
                created_unix: 1000.0,
            },
        );
        let procs = CreatorProcesses {
            by_id,
            start_max: 1,
        };
        let x = Extras::default();
        let inp = Input {
            snap: &s,
            extras: &x,
            attribution: &no_attr,
            failed: &[],
            processes: Ok(&procs),
            now_unix: 1000.0 + 3.0 * 3600.0 + 5.0,
            max_holders: 2,
        };
        let doc = report(&inp, &page(&s, &[1, 2, 3, 4], &Filter::default()));
        assert_eq!(doc["schema_version"], json!(SCHEMA_VERSION));
        let maps = doc["maps"].as_array().unwrap();
        let labels: Vec<&str> = HolderKind::ALL.iter().map(|k| k.label()).collect();
        for m in maps {
            let mut keys: Vec<&str> = m["holders"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            keys.sort_unstable();
            let mut want = labels.clone();
            want.sort_unstable();
            assert_eq!(keys, want);
        }
        // Map 1: three processes share one file; two listed, one omitted.
        assert_eq!(maps[0]["holders"]["file"].as_array().unwrap().len(), 2);
        assert_eq!(maps[0]["holders_omitted"], json!({"file": 1}));
        assert_eq!(maps[0]["holder_counts"]["file"], json!(1));
        // Map 1 is id <= start_max: pre-existing.
        assert!(maps[0]["creator"]["process_unknown"]
            .as_str()
            .unwrap()
            .contains("existed before"));
        // Map 2: its creator process, pod and container; unexplained 1.
        let c = &maps[1]["creator"];
        assert_eq!(
            (
                c["container_id"].clone(),
                c["pod_uid"].clone(),
                c["gone"].clone()
            ),
            (
                json!("c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1"),
                json!("0a1b2c3d-1111-2222-3333-444455556666"),
                json!(false)
            )
        );
        assert_eq!(c["process"]["pid"], json!(4242));
        assert_eq!(c["process"]["age_seconds"], json!(10805.0));
        assert_eq!(maps[1]["unexplained"], json!(1));
        // Map 3: gone, charged to the pod; no record.
        assert_eq!(maps[2]["creator"]["gone"], json!(true));
        assert!(maps[2]["creator"]["process_unknown"]
            .as_str()
            .unwrap()
            .contains("recorded no creation"));
        // Map 4: an mmap with its range.
        assert_eq!(
            maps[3]["holders"]["mmap"],
            json!([{"pid": 13, "comm": "agent", "start": "0x7f000000", "end": "0x7f001000", "in_fd_table": false}])
        );
        let t = text(&doc);
        for want in [
            "created by pid 4242 (agent), 3h ago",
            "... and 1 more file holders",
            "mmap pid 13 comm \"agent\" at 0x7f000000-0x7f001000",
            "creating cgroup gone",
        ] {
            assert!(t.contains(want), "{want:?} missing from\n{t}");
        }
        // Standalone: the process is unknown and says how to learn it.
        let inp = Input {
            processes: Err(STANDALONE_PROCESSES),
            max_holders: usize::MAX,
            ..inp
        };
        let doc = report(&inp, &page(&s, &[2], &Filter::default()));
        assert!(text(&doc).contains("explain --from"));
        assert!(doc["maps"][0]["holders_omitted"] == json!({}));
    }

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(age(45.0), "45s");
        assert_eq!(age(600.0), "10m");
        assert_eq!(age(3.0 * 3600.0), "3h");
        assert_eq!(age(3.0 * 86400.0), "3d");
        assert_eq!(age(-5.0), "0s");
    }
}
