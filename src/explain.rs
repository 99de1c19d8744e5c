//! `bpfmap-exporter explain`: one census, then for the selected maps every
//! fact and every holder by identity. [`report`] is a pure function of the
//! [`Snapshot`] (taken with `keep_files`) and the [`Extras`] (program,
//! outer-map slot and link identities), so the same JSON can be served by
//! the running exporter. The JSON schema is documented in README
//! ("explain").
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::census::creators;
use crate::census::holders::HolderKind;
use crate::census::names::{flags_label, is_map_in_map, map_type_name};
use crate::census::{Census, CensusOpts, MapRecord, Snapshot};

/// Version of the JSON document's shape.
pub const SCHEMA_VERSION: u32 = 1;

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
}

/// Holder identities found by bpf() queries (the snapshot keeps counts).
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// (program id, name, type, map ids it uses).
    pub programs: Vec<(u32, String, String, Vec<u32>)>,
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
                _ => Err(format!(
                    "{} maps are named {n:?}; choose one with --id: {}",
                    hits.len(),
                    hits.iter()
                        .map(|m| format!("{} ({})", m.id, map_type_name(m.map_type)))
                        .collect::<Vec<_>>()
                        .join(", ")
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

/// (container_id, pod_uid) of a process, empty where unknown.
pub type Attribution<'a> = &'a dyn Fn(u32, u64) -> (String, String);

fn comm(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The report of one map.
pub fn map_report(
    snap: &Snapshot,
    x: &Extras,
    attribution: Attribution<'_>,
    failed: &[String],
    m: &MapRecord,
) -> Value {
    let mut flags = [0u8; 10];
    // Processes: fd numbers per tgid, distinct files.
    let mut procs: BTreeMap<u32, (String, u64, Vec<u32>, Vec<u64>)> = BTreeMap::new();
    for f in snap.files.iter().flatten().filter(|f| f.map_id == m.id) {
        let e = procs
            .entry(f.tgid)
            .or_insert_with(|| (comm(&f.comm), f.cgroup_id, vec![], vec![]));
        e.2.push(f.fd);
        e.3.push(f.file_ptr);
    }
    let processes: Vec<Value> = procs
        .iter()
        .map(|(tgid, (comm, cg, fds, files))| {
            let (c, p) = attribution(*tgid, *cg);
            let mut fds = fds.clone();
            fds.sort_unstable();
            fds.dedup();
            let mut files = files.clone();
            files.sort_unstable();
            files.dedup();
            json!({"pid": tgid, "comm": comm, "container_id": c, "pod_uid": p,
                   "fds": fds, "files": files.len()})
        })
        .collect();
    let mmaps: Vec<Value> = snap
        .vmas
        .iter()
        .flatten()
        .filter(|f| f.map_id == m.id)
        .map(|f| json!({"pid": f.tgid, "comm": comm(&f.comm), "address": format!("0x{:x}", f.vm_start)}))
        .collect();
    let pins: Vec<Value> = snap
        .inventory
        .iter()
        .flat_map(|i| i.pins.iter())
        .filter(|p| p.info.kind == crate::census::fdinfo::ObjKind::Map && p.info.id == m.id)
        .map(|p| json!({"mount": p.mount, "path": p.path}))
        .collect();
    let programs: Vec<Value> = x
        .programs
        .iter()
        .filter(|p| p.3.contains(&m.id))
        .map(|p| json!({"id": p.0, "name": p.1, "type": p.2}))
        .collect();
    let outer: Vec<Value> = x
        .slots
        .iter()
        .filter(|s| s.2 == m.id)
        .map(|s| json!({"id": s.0, "key": s.1}))
        .collect();
    let links: Vec<Value> = x
        .links
        .iter()
        .filter(|l| l.1 == m.id)
        .map(|l| json!({"id": l.0}))
        .collect();
    let inflight: Vec<Value> = snap
        .inflight
        .iter()
        .filter(|f| f.map_id == m.id)
        .map(|f| {
            let receivers: Vec<Value> = f
                .receivers
                .iter()
                .map(|r| {
                    let (c, p) = attribution(r.tgid, r.cgroup_id);
                    json!({"pid": r.tgid, "comm": comm(&r.comm), "container_id": c, "pod_uid": p})
                })
                .collect();
            json!({
                "socket_inode": (f.receiver_ino != 0).then_some(f.receiver_ino),
                "queue_socket_inode": f.queue_ino,
                "via_sockets": f.via,
                "receivers": receivers,
                "age_seconds": snap.inflight_ages.get(&m.id).map(|d| d.as_secs()),
            })
        })
        .collect();
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
        None if failed.is_empty() => json!("a holder collector is turned off"),
        None => json!(format!(
            "holder census incomplete: {} failed",
            failed.join(", ")
        )),
    };
    let creator = match creators::identity(snap, m) {
        None => json!({"known": false, "reason": if snap.features.map_memcg {
            "the creators collector did not run or failed"
        } else {
            "this kernel records no creator of maps (memcg accounting of maps is 5.11+ with CONFIG_MEMCG)"
        }}),
        Some(c) => json!({
            "known": true,
            "cgroup_id": c.cgroup_id,
            "cgroup_path": c.cgroup_path,
            "container_id": c.container_id,
            "pod_uid": c.pod_uid,
            "gone": c.gone,
            "process": Value::Null,
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
        "holders": {
            "processes": processes,
            "pins": pins,
            "programs": programs,
            "outer_maps": outer,
            "mmaps": mmaps,
            "links": links,
            "inflight": inflight,
        },
        "holder_counts": counts,
        "unexplained": unexplained,
        "unexplained_withheld": withheld,
    })
}

/// The whole document for `ids`.
pub fn report(
    snap: &Snapshot,
    x: &Extras,
    attribution: Attribution<'_>,
    failed: &[String],
    ids: &[u32],
) -> Value {
    let maps: Vec<Value> = ids
        .iter()
        .filter_map(|id| snap.maps.iter().find(|m| m.id == *id))
        .map(|m| map_report(snap, x, attribution, failed, m))
        .collect();
    json!({"schema_version": SCHEMA_VERSION, "maps": maps})
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
        if c["known"] == json!(true) {
            let what = if c["cgroup_id"].is_null() {
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
            };
            let _ = writeln!(
                o,
                "  creator: {what}; process unknown (no lifecycle record in a standalone census)"
            );
        } else {
            let _ = writeln!(o, "  creator: unknown ({})", s(&c["reason"]));
        }
        let h = &m["holders"];
        for p in h["processes"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  process pid {} comm {:?} container {:?} pod {:?} fds {} ({} distinct files)",
                p["pid"],
                s(&p["comm"]),
                s(&p["container_id"]),
                s(&p["pod_uid"]),
                p["fds"],
                p["files"]
            );
        }
        for p in h["pins"].as_array().into_iter().flatten() {
            let _ = writeln!(o, "  pin {} {}", s(&p["mount"]), s(&p["path"]));
        }
        for p in h["programs"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  program id {} {:?} {}",
                p["id"],
                s(&p["name"]),
                s(&p["type"])
            );
        }
        for p in h["outer_maps"].as_array().into_iter().flatten() {
            let _ = writeln!(o, "  outer map id {} key {}", p["id"], s(&p["key"]));
        }
        for p in h["mmaps"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  mmap pid {} comm {:?} at {}",
                p["pid"],
                s(&p["comm"]),
                s(&p["address"])
            );
        }
        for p in h["links"].as_array().into_iter().flatten() {
            let _ = writeln!(o, "  iterator link id {}", p["id"]);
        }
        for p in h["inflight"].as_array().into_iter().flatten() {
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
    o
}

/// Run the subcommand: one census, print, error on a bad selector.
pub fn run(args: &ExplainArgs, btf_path: Option<PathBuf>) -> anyhow::Result<()> {
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
    let doc = report(&snap, &x, &attribution, &failed, &ids);
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", text(&doc));
        if ids.is_empty() {
            println!("process {} holds no map", args.pid.unwrap_or(0));
        }
    }
    Ok(())
}
