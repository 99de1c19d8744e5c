//! Root tests of `explain`: the census root tests' holder kinds, each named
//! by identity in the report, and the subcommand's error cases.
mod common;

use std::os::fd::{AsFd, AsRawFd};
use std::process::Command;

use bpfmap_exporter::census::{Census, CensusOpts};
use bpfmap_exporter::explain::{
    gather_extras, page, report, select, text, Filter, Input, Selector, STANDALONE_PROCESSES,
};
use common::*;
use libbpf_rs::{MapHandle, MapType};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_bpfmap-exporter");

fn no_attr(_: u32, _: u64) -> (String, String) {
    (String::new(), String::new())
}

#[test]
fn explain_names_every_holder_by_identity() {
    require_root();
    ensure_bpffs();
    let fs = PrivateBpffs::new();
    // A map held by: two fds of this process (one a dup), a pin, a program,
    // and two slots of an outer map.
    let m = map(MapType::Array, "t_explain", 4, 4, 1, 0);
    let id = id_of(&m);
    let dup = inheritable_dup(m.as_fd().as_raw_fd());
    let pin = fs.path().join("t_explain_pin");
    let mut pinned = MapHandle::from_map_id(id).unwrap();
    pinned.pin(&pin).unwrap();
    drop(pinned);
    let prog = prog_using_map(m.as_fd().as_raw_fd());
    let outer = array_of_maps("t_explain_out", &m);
    set_slot(&outer, 1, &m);
    set_slot(&outer, 3, &m);
    let outer_id = id_of(&outer);

    let mut census = Census::load(CensusOpts {
        keep_files: true,
        ..Default::default()
    })
    .unwrap();
    let (snap, _) = census.take(&[]);
    let x = gather_extras(&snap);
    assert_eq!(select(&snap, &Selector::Id(id)), Ok(vec![id]));
    assert_eq!(
        select(&snap, &Selector::Name("t_explain".into())),
        Ok(vec![id])
    );
    assert_eq!(select(&snap, &Selector::Pin(pin.clone())), Ok(vec![id]));
    let by_pid = select(&snap, &Selector::Pid(std::process::id())).unwrap();
    assert!(
        by_pid.contains(&id) && by_pid.contains(&outer_id),
        "{by_pid:?}"
    );

    let inp = Input {
        snap: &snap,
        extras: &x,
        attribution: &no_attr,
        failed: &[],
        processes: Err(STANDALONE_PROCESSES),
        now_unix: 0.0,
        max_holders: usize::MAX,
    };
    let doc = report(&inp, &page(&snap, &[id], &Filter::default()));
    assert_eq!(
        (doc["total"].clone(), doc["truncated"].clone()),
        (json!(1), json!(false))
    );
    let r = &doc["maps"][0];
    assert_eq!(r["id"], json!(id));
    assert_eq!(
        (r["name"].clone(), r["type"].clone()),
        (json!("t_explain"), json!("array"))
    );
    // refcount: 1 file (the dup shares it), 1 pin, 1 program, 2 slots.
    assert_eq!(r["refcount"], json!(5));
    assert_eq!(r["unexplained"], json!(0));
    let h = &r["holders"];
    let me = std::process::id();
    let procs = h["file"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{procs:?}");
    assert_eq!(procs[0]["pid"], json!(me));
    assert_eq!(procs[0]["files"], json!(1));
    let mut fds = vec![m.as_fd().as_raw_fd() as u32, dup.as_raw_fd() as u32];
    fds.sort_unstable();
    assert_eq!(procs[0]["fds"], json!(fds));
    let fs_mount = fs.path().to_string_lossy().to_string();
    assert_eq!(
        h["pin"],
        json!([{"mount": fs_mount, "path": "/t_explain_pin"}])
    );
    let progs = h["program"].as_array().unwrap();
    assert_eq!(progs.len(), 1, "{progs:?}");
    assert_eq!(progs[0]["type"], json!("socket_filter"));
    let prog_id: u32 = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", prog.as_raw_fd()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("prog_id:"))
        .expect("fdinfo prog_id")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(progs[0]["id"], json!(prog_id));
    assert_eq!(
        h["map"],
        json!([{"id": outer_id, "key": "1"}, {"id": outer_id, "key": "3"}])
    );
    assert_eq!(h["mmap"], json!([]));
    assert_eq!(h["link"], json!([]));
    // Every holder kind has its list and its count, under the same key.
    assert_eq!(
        h.as_object().unwrap().keys().collect::<Vec<_>>(),
        r["holder_counts"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>()
    );
    // Every chain ends at a root: the direct holders, and the program and
    // the outer map, both held by this process.
    let chains = r["roots"].as_array().unwrap();
    let root_kinds: Vec<(usize, &str)> = chains
        .iter()
        .map(|c| {
            (
                c["via"].as_array().unwrap().len(),
                c["root"]["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(root_kinds.contains(&(0, "process")), "{root_kinds:?}");
    assert!(root_kinds.contains(&(0, "pin")), "{root_kinds:?}");
    assert_eq!(
        root_kinds.iter().filter(|(hops, _)| *hops == 1).count(),
        2,
        "one chain through the program, one through the outer map: {root_kinds:?}"
    );
    assert!(
        chains.iter().any(|c| c["via"] == json!([])
            && c["root"]["path"] == json!(format!("{fs_mount}/t_explain_pin"))),
        "the pin prints as one path: {chains:?}"
    );
    // Its creator lives (the host): not orphaned.
    if snap.features.map_memcg {
        assert_eq!(r["orphaned"], json!(false));
    } else {
        assert_eq!(r["orphaned"], Value::Null);
    }
    assert_eq!(r["creator"]["process"], Value::Null);
    assert_eq!(r["creator"]["process_unknown"], json!(STANDALONE_PROCESSES));
    let t = text(&doc);
    for want in [
        format!("map {id} \"t_explain\" array"),
        format!("process pid {me}"),
        format!("pin {fs_mount}/t_explain_pin"),
        "kept alive by:".to_string(),
        format!("map {id} <- program {prog_id} \"\" socket_filter <- process pid {me}"),
        format!("map {id} <- map {outer_id} \"t_explain_out\" array_of_maps <- process pid {me}"),
        format!("map {id} <- pin {fs_mount}/t_explain_pin"),
        format!("program id {prog_id}"),
        format!("outer map id {outer_id} key 1"),
        "unexplained: 0".to_string(),
        "process unknown (the lifecycle collector does not run in a standalone explain".to_string(),
    ] {
        assert!(t.contains(&want), "missing {want:?} in\n{t}");
    }

    // The binary agrees (JSON on stdout, exit 0).
    let out = Command::new(BIN)
        .args(["explain", "--pin"])
        .arg(&pin)
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema_version"], json!(4));
    assert_eq!(v["maps"][0]["id"], json!(id));
    assert_eq!(v["maps"][0]["holders"]["map"], h["map"]);
    drop((outer, prog, dup, m));
}

fn explain_fails(args: &[&str], want: &str) {
    let out = Command::new(BIN)
        .arg("explain")
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "explain {args:?} succeeded");
    assert!(
        err.contains(want),
        "explain {args:?}: {err:?} lacks {want:?}"
    );
}

#[test]
fn explain_errors_name_the_cause() {
    require_root();
    ensure_bpffs();
    explain_fails(&["--id", "2147483647"], "no map with id 2147483647");
    let a = map(MapType::Hash, "t_dup_name", 4, 4, 1, 0);
    let b = map(MapType::Array, "t_dup_name", 4, 4, 1, 0);
    explain_fails(
        &["--name", "t_dup_name"],
        &format!(
            "2 maps are named \"t_dup_name\"; choose one with --id: {} (hash), {} (array)",
            id_of(&a),
            id_of(&b)
        ),
    );
    explain_fails(&["--name", "t_no_such_map"], "no map named");
    let tmp = tempfile::NamedTempFile::new().unwrap();
    explain_fails(
        &["--pin", &tmp.path().to_string_lossy()],
        "is not a pin on a mounted bpffs",
    );
    explain_fails(&["--pin", "/nonexistent/pin"], "no such file");
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    explain_fails(&["--pid", &pid_max.to_string()], "no such process");
    explain_fails(&[], "--id");
    drop((a, b));
}
