//! The human-readable rendering of a report document.

use serde_json::{json, Value};

use super::age;

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
