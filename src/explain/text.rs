//! The human-readable rendering of a report document.

use serde_json::{json, Value};

use super::age;

/// ` container "c" pod "p"`, or ` (host)` where both are empty.
pub(super) fn whose(container: &Value, pod: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    if s(container).is_empty() && s(pod).is_empty() {
        " (host)".into()
    } else {
        format!(" container {:?} pod {:?}", s(container), s(pod))
    }
}

/// One hop of a chain: `program 448 "xdp_filter" xdp`.
fn hop(h: &Value) -> String {
    let mut o = format!("{} {}", h["kind"].as_str().unwrap_or("?"), h["id"]);
    if let Some(n) = h["name"].as_str() {
        o.push_str(&format!(" {n:?}"));
    }
    if let Some(t) = h["type"].as_str() {
        o.push_str(&format!(" {t}"));
    }
    o
}

/// A chain's root.
fn root(r: &Value) -> String {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    match r["kind"].as_str().unwrap_or_default() {
        "process" => format!(
            "process pid {} ({}){}",
            r["pid"],
            s(&r["comm"]),
            whose(&r["container_id"], &r["pod_uid"])
        ),
        "pin" if r["inferred"].as_bool() == Some(true) => {
            "a pin the bpffs walk did not reach (path unknown)".into()
        }
        "pin" => match r["retained_memory_bytes"].as_u64() {
            Some(b) => format!("pin {} (removing it frees {b} bytes)", s(&r["path"])),
            None => format!("pin {}", s(&r["path"])),
        },
        "inflight" => "a file in flight".into(),
        "io_uring" => format!(
            "io_uring ring fd {} of process pid {} ({}){}",
            r["ring_fd"],
            r["pid"],
            s(&r["comm"]),
            whose(&r["container_id"], &r["pod_uid"])
        ),
        "attachment" if r["link_id"].is_null() => format!(
            "{} attachment {} (kept by the kernel, no link)",
            s(&r["attach_kind"]),
            s(&r["target"])
        ),
        "attachment" => format!("link {} attached in the kernel", r["link_id"]),
        "unexplained" => format!("{}: unexplained references", hop(&r["object"])),
        "unknown" => format!("{}: {}", hop(&r["object"]), s(&r["reason"])),
        "cycle" => "a cycle that nothing outside keeps alive".into(),
        k => format!("{k} {r}"),
    }
}

/// The "kept alive by" lines of an object (`head`, e.g. `map 7`).
pub(super) fn chains(o: &mut String, head: &str, roots: &Value) {
    use std::fmt::Write;
    let chains = roots.as_array().cloned().unwrap_or_default();
    if !chains.is_empty() {
        let _ = writeln!(o, "  kept alive by:");
    }
    for c in chains {
        let mut line = format!("    {head}");
        for h in c["via"].as_array().into_iter().flatten() {
            line.push_str(" <- ");
            line.push_str(&hop(h));
        }
        line.push_str(" <- ");
        line.push_str(&root(&c["root"]));
        let _ = writeln!(o, "{line}");
    }
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
                let gone = c["gone"] == json!(true);
                let named = !c["container_id"].as_str().unwrap_or_default().is_empty()
                    || !c["pod_uid"].as_str().unwrap_or_default().is_empty();
                match (gone, c["creating_cgroup_path"].as_str()) {
                    (true, Some(was)) => format!(
                        "{} (deleted: its cgroup {was} is gone; the map is charged to the ancestor cgroup {} {})",
                        whose(&c["container_id"], &c["pod_uid"]).trim_start(),
                        c["cgroup_id"],
                        s(&c["cgroup_path"]),
                    ),
                    (true, None) if !named => format!(
                        "unknown: its cgroup was removed before this exporter saw it (the map is charged to the ancestor cgroup {} {})",
                        c["cgroup_id"],
                        s(&c["cgroup_path"]),
                    ),
                    _ => format!(
                        "cgroup {} {}{}{}",
                        c["cgroup_id"],
                        s(&c["cgroup_path"]),
                        whose(&c["container_id"], &c["pod_uid"]),
                        if gone {
                            " (creating cgroup gone: charged to this ancestor)"
                        } else {
                            ""
                        }
                    ),
                }
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
        origin_lines(&mut o, &m["origin"], "created at");
        let h = &m["holders"];
        let each = |k: &str| h[k].as_array().cloned().unwrap_or_default();
        for p in each("file") {
            let more = match p["fds_omitted"].as_u64() {
                Some(n) if n > 0 => format!(" and {n} more"),
                _ => String::new(),
            };
            let _ = writeln!(
                o,
                "  process pid {} comm {:?}{} fds {}{more} ({} distinct files)",
                p["pid"],
                s(&p["comm"]),
                whose(&p["container_id"], &p["pod_uid"]),
                p["fds"],
                p["files"]
            );
            taken_at_lines(&mut o, &p, &m["origin"]);
        }
        for p in each("pin") {
            let _ = writeln!(
                o,
                "  pin {}",
                super::report::pin_path(&s(&p["mount"]), &s(&p["path"]))
            );
            for r in p["pinned_at"].as_array().into_iter().flatten() {
                record_lines(&mut o, "  pinned at", r);
            }
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
                "  mmap pid {} comm {:?} {} bytes{}",
                p["pid"],
                s(&p["comm"]),
                p["size_bytes"],
                match p["fd"].as_u64() {
                    Some(fd) => format!(" of fd {fd}"),
                    None => " (file no longer in an fd table)".into(),
                }
            );
        }
        for p in each("link") {
            let _ = writeln!(o, "  link id {}", p["id"]);
        }
        for p in each("struct_ops") {
            let _ = writeln!(
                o,
                "  struct_ops: {} kernel references (its registration, and the kernel objects using its ops, such as TCP sockets using a BPF congestion control)",
                p["references"]
            );
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
        for p in each("io_uring") {
            let _ = writeln!(
                o,
                "  io_uring ring fd {} of process pid {} ({}){} holds its file (a registered file, in no fd table)",
                p["ring_fd"],
                p["pid"],
                s(&p["comm"]),
                whose(&p["container_id"], &p["pod_uid"])
            );
        }
        // Kinds this renderer does not name yet still show.
        let named = [
            "file",
            "pin",
            "program",
            "map",
            "mmap",
            "link",
            "inflight",
            "io_uring",
            "struct_ops",
        ];
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
        if let Some(n) = m["pins_inferred"].as_u64().filter(|&n| n > 0) {
            let _ = writeln!(
                o,
                "  pins the bpffs walk did not reach: {n} (inferred from usercount less the files and links; paths unknown)"
            );
        }
        match &m["unexplained"] {
            Value::Null => {
                let _ = writeln!(
                    o,
                    "  unexplained: withheld ({})",
                    s(&m["unexplained_withheld"])
                );
            }
            v if v.as_i64().unwrap_or(0) > 0 => {
                let _ = writeln!(
                    o,
                    "  unexplained: {v} (a leak suspect: see the BpfMapUnexplainedReferences runbook, docs/runbooks.md#bpfmapunexplainedreferences)"
                );
            }
            v => {
                let _ = writeln!(o, "  unexplained: {v}");
            }
        }
        chains(&mut o, &format!("map {}", m["id"]), &m["roots"]);
        match m["orphaned"].as_bool() {
            Some(true) => {
                let _ = writeln!(
                    o,
                    "  orphaned: its creator is gone and only pins keep it alive (see docs/runbooks.md#bpfmapsoutlivedtheirpod)"
                );
            }
            Some(false) => {}
            None if m["creator"]["gone"] == json!(true) => {
                let _ = writeln!(o, "  orphaned: unknown (a root above is unknown)");
            }
            None => {}
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

/// A JSON value as text: strings bare, null as `-`.
fn sv(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// The `taken_at` records of a file holder; the object's own creation
/// (its `origin`) is named, not printed twice.
pub(crate) fn taken_at_lines(o: &mut String, holder: &Value, origin: &Value) {
    use std::fmt::Write;
    for r in holder["taken_at"].as_array().into_iter().flatten() {
        let c = &origin["created"];
        if r["command"] == c["command"] && r["pid"] == c["pid"] && r["fd"] == c["fd"] {
            let _ = writeln!(
                o,
                "  file taken at: its creation (its stack is printed once)"
            );
        } else {
            record_lines(o, "  file taken at", r);
        }
    }
}

/// The creation stack of an `origin` object (`label`: "created at" or
/// "loaded at"), or why this object has none.
pub(crate) fn origin_lines(o: &mut String, origin: &Value, label: &str) {
    use std::fmt::Write;
    if origin.is_null() {
        return;
    }
    // No stacks kept at all (origins off, a standalone explain): the JSON
    // says why; the text stays as it is without origins.
    if origin.get("unknown").is_some() {
        return;
    }
    match &origin["created"] {
        Value::Null => {
            let _ = writeln!(o, "  {label}: unknown ({})", sv(&origin["created_unknown"]));
        }
        r => record_lines(o, &format!("  {label}"), r),
    }
}

/// One origin record: the call, then its top frames (function, file:line,
/// binary and offset; never an address), then truncation and notes.
pub(crate) fn record_lines(o: &mut String, label: &str, r: &Value) {
    use std::fmt::Write;
    let path = r["path"]
        .as_str()
        .map(|p| format!(" path {:?}", sv(&json!(p))))
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "{label}: bpf({}) fd {}{path} by pid {} ({}), {} ago",
        sv(&r["command"]),
        r["fd"],
        r["pid"],
        sv(&r["comm"]),
        age(r["age_seconds"].as_f64().unwrap_or(0.0))
    );
    let st = &r["stack"];
    let frames = st["frames"].as_array().cloned().unwrap_or_default();
    for (i, f) in frames.iter().take(crate::origins::TEXT_FRAMES).enumerate() {
        let func = f["function"].as_str().map(|x| sv(&json!(x)));
        let at = match (f["file"].as_str(), f["line"].as_u64()) {
            (Some(file), Some(line)) => format!(" ({}:{line})", sv(&json!(file))),
            (Some(file), None) => format!(" ({})", sv(&json!(file))),
            _ => String::new(),
        };
        let bin = match (f["binary"].as_str(), f["build_id"].as_str()) {
            (Some(b), _) => sv(&json!(b)),
            (None, Some(id)) => format!("build id {}", sv(&json!(id))),
            (None, None) => "unknown binary".into(),
        };
        let off = f["file_offset"]
            .as_u64()
            .map(|x| format!("+0x{x:x}"))
            .unwrap_or_else(|| " (no file: anonymous or JIT memory)".into());
        let _ = writeln!(
            o,
            "      #{i} {}{at} in {bin}{off}",
            func.unwrap_or_else(|| "??".into())
        );
    }
    if frames.len() > crate::origins::TEXT_FRAMES {
        let _ = writeln!(
            o,
            "      ... {} more frames (--output json has them all)",
            frames.len() - crate::origins::TEXT_FRAMES
        );
    }
    if st["truncated"] == json!(true) {
        let _ = writeln!(o, "      truncated: {}", sv(&st["truncated_reason"]));
    }
    if let Some(n) = st["note"].as_str() {
        let _ = writeln!(o, "      note: {}", sv(&json!(n)));
    }
}
