//! The links' document: a link's type, the program it keeps attached, its
//! holders by identity and its chains to their roots (`explain --link`,
//! `/api/v1/links`).
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::programs::page_programs;
use super::report::{chains_json, pin_path, Input};
use super::select::Page;
use super::SCHEMA_VERSION;
use crate::bpf::census::LinkRecord;
use crate::census::links::{attach_type_label, link_type_label, target_text};
use crate::census::names::prog_type_label;
use crate::census::roots::Obj;
use crate::census::{ObjectKind, RingObject, Snapshot};

/// The link ids `id` names, or a message naming the cause.
pub fn select_link(snap: &Snapshot, id: u32) -> Result<Vec<u32>, String> {
    let Some(links) = &snap.links else {
        return Err(
            "the links collector did not run or failed (bpfmap_scrape_collector_success{collector=\"links\"})".into(),
        );
    };
    if links.iter().any(|l| l.id == id) {
        Ok(vec![id])
    } else {
        Err(format!(
            "no link with id {id} among the node's links (bpftool link show lists the live links; the exporter's own are not explained)"
        ))
    }
}

/// A page of link ids (ascending, after `after`, at most `limit`).
pub fn page_links(ids: &[u32], after: Option<u32>, limit: usize) -> Page {
    page_programs(ids, after, limit)
}

fn link_json(inp: &Input<'_>, l: &LinkRecord) -> Value {
    let snap = inp.snap;
    let prog = snap
        .programs
        .iter()
        .flatten()
        .chain(&snap.own_programs)
        .find(|p| p.id == l.prog_id);
    let files = super::report::object_file_holders(inp, ObjectKind::Link, l.id);
    let pins: Vec<Value> = super::report::object_pin_holders(inp, ObjectKind::Link, l.id)
        .take(inp.max_holders)
        .collect();
    let rings: Vec<Value> = snap
        .io_uring
        .iter()
        .filter(|r| r.object == Some((RingObject::Link, l.id)))
        .take(inp.max_holders)
        .map(|r| json!({"pid": r.tgid, "comm": String::from_utf8_lossy(&r.comm), "ring_fd": r.fd}))
        .collect();
    let h = snap.link_holders.get(&l.id);
    let counts: BTreeMap<&str, Value> = h
        .map(|h| h.iter())
        .into_iter()
        .flatten()
        .map(|(k, c)| (k, c.map_or(Value::Null, |c| json!(c))))
        .collect();
    let t = &l.target;
    let cgroup_path = |id: u64| snap.cgroup_paths.get(&id).cloned();
    let target = json!({
        "text": target_text(l, cgroup_path),
        "ifindex": t.device.as_ref().map(|d| d.ifindex),
        "device": t.device.as_ref().and_then(|d| d.name.clone()),
        "netns": t.netns,
        "cgroup_id": l.cgroup.map(|c| c.0),
        "cgroup_path": l.cgroup.and_then(|c| cgroup_path(c.0)),
        "btf_obj_id": t.trampoline.map(|x| x.0),
        "btf_id": t.trampoline.map(|x| x.1),
        "map_id": t.map_id,
        "netfilter": t.netfilter.map(|n| json!({
            "pf": n.pf, "hooknum": n.hooknum, "priority": n.priority, "defrag": n.defrag,
        })),
        "tracepoint": t.tracepoint,
        "detached": t.detached,
    });
    json!({
        "id": l.id,
        "type": link_type_label(l.link_type),
        "attached": l.is_attached(),
        "attach_type": attach_type_label(l),
        "target": target,
        "program": {
            "id": l.prog_id,
            "name": prog.map(|p| p.name.clone()),
            "type": prog.map(|p| prog_type_label(p.prog_type)),
        },
        "iter_map_id": l.iter_map_id,
        "holders": {"file": files, "pin": pins, "io_uring": rings},
        "holder_counts": counts,
        "pins_only": h.is_some_and(|h| h.pins_only()),
        "roots": chains_json(inp, Obj::Link(l.id)),
        "origin": super::report::origin_json(inp, crate::origins::store::ObjKind::Link, l.id),
    })
}

/// The document for a page of links.
pub fn link_report(inp: &Input<'_>, page: &Page) -> Value {
    let links: Vec<Value> = page
        .ids
        .iter()
        .filter_map(|id| inp.snap.links.iter().flatten().find(|l| l.id == *id))
        .map(|l| link_json(inp, l))
        .collect();
    json!({
        "schema_version": SCHEMA_VERSION,
        "total": page.total,
        "truncated": page.next_after.is_some(),
        "next_after": page.next_after,
        "links": links,
    })
}

/// [`link_report`], written link by link (see
/// [`super::report::write_page`]).
pub fn write_link_report<W: std::io::Write>(
    inp: &Input<'_>,
    page: &Page,
    max_bytes: usize,
    out: &mut W,
) -> std::io::Result<()> {
    let by_id: std::collections::HashMap<u32, &LinkRecord> =
        inp.snap.links.iter().flatten().map(|l| (l.id, l)).collect();
    super::report::write_page(out, "links", page, max_bytes, |id| {
        by_id.get(&id).map(|l| link_json(inp, l))
    })
}

/// Human-readable rendering of a links document.
pub fn link_text(doc: &Value) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    for l in doc["links"].as_array().into_iter().flatten() {
        let p = &l["program"];
        let _ = writeln!(
            o,
            "link {} {}{}, program {} {:?} {}",
            l["id"],
            s(&l["type"]),
            if l["attached"] == json!(true) {
                " (attached in the kernel)"
            } else if l["type"] == json!("iter") {
                " (an iterator, attached to nothing)"
            } else {
                " (detached: its program runs nowhere)"
            },
            p["id"],
            s(&p["name"]),
            s(&p["type"])
        );
        let at = match &l["attach_type"] {
            Value::String(a) => format!("{a} "),
            _ => String::new(),
        };
        let _ = writeln!(o, "  target: {at}{}", s(&l["target"]["text"]));
        super::text::origin_lines(&mut o, &l["origin"], "created at");
        let h = &l["holders"];
        for f in h["file"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  process pid {} comm {:?}{} fds {}",
                f["pid"],
                s(&f["comm"]),
                super::text::whose(&f["container_id"], &f["pod_uid"]),
                f["fds"]
            );
            super::text::taken_at_lines(&mut o, f, &l["origin"]);
        }
        for x in h["pin"].as_array().into_iter().flatten() {
            let _ = writeln!(o, "  pin {}", pin_path(&s(&x["mount"]), &s(&x["path"])));
            for r in x["pinned_at"].as_array().into_iter().flatten() {
                super::text::record_lines(&mut o, "  pinned at", r);
            }
        }
        for r in h["io_uring"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  io_uring ring fd {} of process pid {} ({})",
                r["ring_fd"],
                r["pid"],
                s(&r["comm"])
            );
        }
        if l["pins_only"] == json!(true) {
            let _ = writeln!(
                o,
                "  only pins keep this link: removing them detaches program {}",
                p["id"]
            );
        }
        super::text::chains(&mut o, &format!("link {}", l["id"]), &l["roots"]);
    }
    if doc["truncated"] == json!(true) {
        let _ = writeln!(
            o,
            "({} of {} links shown; continue after id {})",
            doc["links"].as_array().map_or(0, |a| a.len()),
            doc["total"],
            doc["next_after"]
        );
    }
    o
}
