//! The programs' document: every fact of a program, its holders by
//! identity and its chains to their roots (`explain --prog`, a program's
//! pin, `/api/v1/programs`), and what one pin keeps alive.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::report::{chains_json, pin_path, Input};
use super::select::Page;
use super::SCHEMA_VERSION;
use crate::census::names::{map_type_name, prog_type_label};
use crate::census::programs::ProgHolderKind;
use crate::census::roots::{Obj, PinId, Root};
use crate::census::{ObjectKind, ProgRecord, Snapshot};

/// The program ids `id` names, or a message naming the cause.
pub fn select_program(snap: &Snapshot, id: u32) -> Result<Vec<u32>, String> {
    let Some(progs) = &snap.programs else {
        return Err(
            "the programs collector did not run or failed (bpfmap_scrape_collector_success{collector=\"programs\"})".into(),
        );
    };
    if progs.iter().any(|p| p.id == id) {
        Ok(vec![id])
    } else if snap.own_programs.iter().any(|p| p.id == id) {
        Err(format!("program {id} is the exporter's own"))
    } else {
        Err(format!(
            "no program with id {id} (bpftool prog show lists the live programs)"
        ))
    }
}

/// A page of program ids (ascending, after `after`, at most `limit`).
pub fn page_programs(ids: &[u32], after: Option<u32>, limit: usize) -> Page {
    let mut hits: Vec<u32> = ids.to_vec();
    hits.sort_unstable();
    hits.dedup();
    let total = hits.len();
    let from = after.map_or(0, |a| hits.partition_point(|&id| id <= a));
    let rest = &hits[from..];
    let n = rest.len().min(limit);
    Page {
        ids: rest[..n].to_vec(),
        total,
        next_after: (n < rest.len() && n > 0).then(|| rest[n - 1]),
    }
}

fn program_json(inp: &Input<'_>, p: &ProgRecord) -> Value {
    let snap = inp.snap;
    let maps: Vec<Value> = p
        .map_ids
        .iter()
        .map(|id| {
            let m = snap.maps.iter().find(|m| m.id == *id);
            json!({"id": id, "name": m.map(|m| m.name.clone()),
                   "type": m.map(|m| map_type_name(m.map_type))})
        })
        .collect();
    let files = super::report::object_file_holders(inp, ObjectKind::Program, p.id);
    let pins: Vec<Value> =
        super::report::object_pin_holders(inp, ObjectKind::Program, p.id).collect();
    let mut links = Vec::new();
    let mut slots = Vec::new();
    /// `BPF_MAP_TYPE_PROG_ARRAY`.
    const PROG_ARRAY: u32 = 3;
    for h in &snap.graph.holders(Obj::Prog(p.id)) {
        match h {
            crate::census::roots::Holder::Obj(Obj::Link(l)) => links.push(json!({"id": l})),
            // Tail-call slots only: a sockmap, devmap or struct_ops map
            // holding the program is one of its attachments.
            crate::census::roots::Holder::Obj(Obj::Map(m)) => {
                let map = snap.maps.iter().find(|x| x.id == *m);
                if map.is_some_and(|x| x.map_type != PROG_ARRAY) {
                    continue;
                }
                slots.push(json!({"id": m, "name": map.map(|x| x.name.clone())}));
            }
            _ => {}
        }
    }
    let h = snap.prog_holders.get(&p.id);
    let counts: BTreeMap<&str, Value> = ProgHolderKind::ALL
        .iter()
        .map(|k| {
            (
                k.label(),
                h.and_then(|h| h.get(*k)).map_or(Value::Null, |c| json!(c)),
            )
        })
        .collect();
    let unexplained = h.and_then(|h| h.unexplained(p.refcnt));
    let withheld = match unexplained {
        Some(_) => Value::Null,
        None => json!(format!(
            "{} of {} references are explained by the holders found; a {} program can also be held by {}, not read completely in this scrape",
            h.map_or(0, |h| h.known_sum()),
            p.refcnt,
            prog_type_label(p.prog_type),
            unread_sources(snap, p.prog_type).join(", ")
        )),
    };
    let (loader, orphaned, orphaned_withheld) = loader_json(inp, p.id);
    let attachments: Vec<Value> = snap
        .attachments
        .iter()
        .filter(|a| a.prog_id == p.id)
        .take(inp.max_holders)
        .map(|a| json!({"kind": a.kind.label(), "target": a.target}))
        .collect();
    json!({
        "id": p.id,
        "name": p.name,
        "type": prog_type_label(p.prog_type),
        "tag": p.tag_hex(),
        "memory_bytes": p.memlock,
        "refcount": p.refcnt,
        "load_time_unix_seconds": snap.boot_unix.map(|b| (b + p.load_time_ns as f64 / 1e9).floor()),
        "maps": maps,
        "holders": {"file": files, "pin": pins, "link": links, "prog_array": slots,
                    "attachments": attachments},
        "holder_counts": counts,
        "unexplained": unexplained,
        "unexplained_withheld": withheld,
        "roots": chains_json(inp, Obj::Prog(p.id)),
        "loader": loader,
        "orphaned": orphaned,
        "orphaned_withheld": orphaned_withheld,
        "origin": super::report::origin_json(inp, crate::origins::store::ObjKind::Prog, p.id),
    })
}

/// The loader of program `id` (or why it is unknown), its orphan verdict
/// (null where withheld) and why that is withheld.
fn loader_json(inp: &Input<'_>, id: u32) -> (Value, Value, Value) {
    use crate::census::loaders::{verdict, CgroupState, ProgLoader, Unknown};
    let snap = inp.snap;
    let l = match snap.prog_loaders.get(&id) {
        Some(l) => l.clone(),
        None => ProgLoader::Unknown(Unknown::NoRecorder),
    };
    let loader = match &l {
        ProgLoader::Unknown(u) => json!({"known": false, "reason": u.text()}),
        ProgLoader::Known(k) => json!({
            "known": true,
            "pid": k.rec.tgid,
            "comm": k.rec.comm,
            "cgroup_id": k.rec.memcg_id,
            "cgroup_path": k.cgroup_path,
            "container_id": k.container_id,
            "pod_uid": k.pod_uid,
            "gone": match k.cgroup {
                CgroupState::Live => json!(false),
                CgroupState::Gone => json!(true),
                CgroupState::Unresolved => Value::Null,
            },
            "load_time_unix_seconds": snap.boot_unix.map(|b| (b + k.rec.load_ns as f64 / 1e9).floor()),
        }),
    };
    match verdict(&l, &snap.graph, id) {
        Ok(v) => (loader, json!(v), Value::Null),
        Err(why) => {
            let text = match &l {
                ProgLoader::Unknown(u) => u.text().to_string(),
                ProgLoader::Known(_) if why == crate::census::loaders::WITHHELD_CGROUP => {
                    "the loader's memory cgroup was never resolved (removed before a scrape saw it, or no memory controller): whether it is gone cannot be told".to_string()
                }
                ProgLoader::Known(_) => {
                    "the loader's cgroup is gone, and a root is unknown or unexplained with no live root to settle it".to_string()
                }
            };
            (loader, Value::Null, json!({"reason": why, "text": text}))
        }
    }
}

/// The holder sources that can hold a program of `prog_type` and were not
/// complete in this census (by their `bpfmap_program_holder_source_complete`
/// names), the unread ones included.
fn unread_sources(snap: &Snapshot, prog_type: u32) -> Vec<&'static str> {
    let (kinds, unread) = crate::census::programs::attach_kinds(prog_type);
    let complete = |src: &str| snap.prog_sources.iter().any(|(s, c)| *s == src && *c);
    let mut out: Vec<&'static str> = ProgHolderKind::BASE
        .iter()
        .chain(kinds)
        .map(|k| k.source())
        .filter(|s| !complete(s))
        .chain(unread.iter().copied())
        .collect();
    out.dedup();
    out
}

/// The document for a page of programs.
pub fn program_report(inp: &Input<'_>, page: &Page) -> Value {
    let progs: Vec<Value> = page
        .ids
        .iter()
        .filter_map(|id| inp.snap.programs.iter().flatten().find(|p| p.id == *id))
        .map(|p| program_json(inp, p))
        .collect();
    json!({
        "schema_version": SCHEMA_VERSION,
        "total": page.total,
        "truncated": page.next_after.is_some(),
        "next_after": page.next_after,
        "programs": progs,
    })
}

/// [`program_report`], written program by program (see
/// [`super::report::write_page`]).
pub fn write_program_report<W: std::io::Write>(
    inp: &Input<'_>,
    page: &Page,
    max_bytes: usize,
    out: &mut W,
) -> std::io::Result<()> {
    let want: std::collections::HashSet<u32> = page.ids.iter().copied().collect();
    let by_id: std::collections::HashMap<u32, &crate::census::ProgRecord> = inp
        .snap
        .programs
        .iter()
        .flatten()
        .filter(|p| want.contains(&p.id))
        .map(|p| (p.id, p))
        .collect();
    super::report::write_page(out, "programs", page, max_bytes, |id| {
        by_id.get(&id).map(|p| program_json(inp, p))
    })
}

/// What the pin at (dev, ino) keeps alive: the objects whose only root it
/// is (removing it frees them) and the bytes they hold.
pub fn pin_report(snap: &Snapshot, mount: &str, path: &str, pin: PinId) -> Value {
    let only = |o: Obj| {
        let r = snap.graph.roots(o);
        r.len() == 1 && r.contains(&Root::Pin(pin))
    };
    let mut frees = Vec::new();
    for m in &snap.maps {
        if only(Obj::Map(m.id)) {
            frees.push(json!({"kind": "map", "id": m.id, "name": m.name,
                              "memory_bytes": snap.memory.get(&m.id)}));
        }
    }
    for p in snap.programs.iter().flatten() {
        if only(Obj::Prog(p.id)) {
            frees.push(json!({"kind": "program", "id": p.id, "name": p.name,
                              "memory_bytes": p.memlock}));
        }
    }
    json!({
        "path": pin_path(mount, path),
        "frees": frees,
        "retained_memory_bytes": snap.roots.retained.get(&pin).copied().unwrap_or(0),
    })
}

/// Human-readable rendering of a programs document.
pub fn program_text(doc: &Value) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    for p in doc["programs"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "program {} {:?} {} tag {}",
            p["id"],
            s(&p["name"]),
            s(&p["type"]),
            s(&p["tag"])
        );
        let _ = writeln!(
            o,
            "  memory {} bytes, refcount {}, loaded at {} (Unix seconds)",
            p["memory_bytes"],
            p["refcount"],
            s(&p["load_time_unix_seconds"])
        );
        for m in p["maps"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  uses map {} {:?} {}",
                m["id"],
                s(&m["name"]),
                s(&m["type"])
            );
        }
        let h = &p["holders"];
        for f in h["file"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  process pid {} comm {:?}{} fds {}",
                f["pid"],
                s(&f["comm"]),
                super::text::whose(&f["container_id"], &f["pod_uid"]),
                f["fds"]
            );
            super::text::taken_at_lines(&mut o, f, &p["origin"]);
        }
        for x in h["pin"].as_array().into_iter().flatten() {
            let _ = writeln!(o, "  pin {}", pin_path(&s(&x["mount"]), &s(&x["path"])));
            for r in x["pinned_at"].as_array().into_iter().flatten() {
                super::text::record_lines(&mut o, "  pinned at", r);
            }
        }
        for l in h["link"].as_array().into_iter().flatten() {
            let _ = writeln!(o, "  link id {}", l["id"]);
        }
        for a in h["attachments"].as_array().into_iter().flatten() {
            let _ = writeln!(o, "  {} attachment {}", s(&a["kind"]), s(&a["target"]));
        }
        for m in h["prog_array"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  prog_array map {} {:?} (a tail-call slot)",
                m["id"],
                s(&m["name"])
            );
        }
        match &p["unexplained"] {
            Value::Null => {
                let _ = writeln!(
                    o,
                    "  unexplained: withheld ({})",
                    s(&p["unexplained_withheld"])
                );
            }
            v => {
                let _ = writeln!(o, "  unexplained: {v}");
            }
        }
        super::text::chains(&mut o, &format!("program {}", p["id"]), &p["roots"]);
        let l = &p["loader"];
        if l["known"] == json!(true) {
            let state = match &l["gone"] {
                Value::Bool(true) => " (its cgroup is gone)",
                Value::Bool(false) => "",
                _ => " (its cgroup was never resolved)",
            };
            let _ = writeln!(
                o,
                "  loaded by pid {} comm {:?}{}{}",
                l["pid"],
                s(&l["comm"]),
                super::text::whose(&l["container_id"], &l["pod_uid"]),
                state
            );
        } else {
            let _ = writeln!(o, "  loader {}", s(&l["reason"]));
        }
        super::text::origin_lines(&mut o, &p["origin"], "loaded at");
        match &p["orphaned"] {
            Value::Bool(true) => {
                let _ = writeln!(
                    o,
                    "  orphaned: its loader's cgroup is gone and only pins keep it alive (see docs/runbooks.md#bpfprogramsoutlivedtheirpod)"
                );
            }
            Value::Bool(false) => {
                let _ = writeln!(o, "  orphaned: no");
            }
            _ => {
                let _ = writeln!(
                    o,
                    "  orphaned: unknown ({})",
                    s(&p["orphaned_withheld"]["text"])
                );
            }
        }
    }
    if doc["truncated"] == json!(true) {
        let _ = writeln!(
            o,
            "({} of {} programs shown; continue after id {})",
            doc["programs"].as_array().map_or(0, |a| a.len()),
            doc["total"],
            doc["next_after"]
        );
    }
    o
}

/// The text of a pin's report.
pub fn pin_text(pin: &Value) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let frees = pin["frees"].as_array().cloned().unwrap_or_default();
    if frees.is_empty() {
        let _ = writeln!(
            o,
            "pin {} alone keeps nothing alive: every object behind it has another root",
            pin["path"].as_str().unwrap_or_default()
        );
        return o;
    }
    let _ = writeln!(
        o,
        "pin {} alone keeps alive (removing it frees {} bytes):",
        pin["path"].as_str().unwrap_or_default(),
        pin["retained_memory_bytes"]
    );
    for f in frees {
        let _ = writeln!(
            o,
            "  {} {} {:?} {} bytes",
            f["kind"].as_str().unwrap_or_default(),
            f["id"],
            f["name"].as_str().unwrap_or_default(),
            f["memory_bytes"]
        );
    }
    o
}
