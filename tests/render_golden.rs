//! Rendering a hand-built census against a golden exposition file, without
//! root. Regenerate after an intended change with
//! `UPDATE_GOLDEN=1 cargo test --release --test render_golden` and review the diff.
use std::path::PathBuf;

use bpfmap_exporter::census::bpffs::{Inventory, Pin, Superblock};
use bpfmap_exporter::census::fdinfo::{FdInfo, ObjKind};
use bpfmap_exporter::census::holders::{self, Observed};
use bpfmap_exporter::census::render::{render, RenderOpts};
use bpfmap_exporter::census::{entries, FileRecord, MapRecord, Snapshot};
use bpfmap_exporter::metrics::{encode_text, Families};

fn map(id: u32, name: &str, map_type: u32, refcnt: i64, usercnt: i64) -> MapRecord {
    MapRecord {
        map_ptr: 0xffff_0000_0000_0000 + id as u64 * 0x1000,
        refcnt,
        usercnt,
        elem_count: if map_type == 1 { Some(3) } else { None },
        map_extra: 0,
        id,
        map_type,
        key_size: 4,
        value_size: 8,
        max_entries: 16,
        map_flags: if id == 11 { 1 } else { 0 },
        frozen: id == 12,
        is_outer: false,
        name: name.to_string(),
        creator: Default::default(),
    }
}

fn file(tgid: u32, fd: u32, file_ptr: u64, map_id: u32, comm: &[u8]) -> FileRecord {
    FileRecord {
        file_ptr,
        cgroup_id: 4242,
        tgid,
        pid: tgid,
        fd,
        map_id,
        comm: comm.to_vec(),
        vm_start: 0,
        vm_end: 0,
        sock_ino: 0,
    }
}

fn snapshot() -> Snapshot {
    // 10: hash held by one file (dup'ed: two fds, one file) -> 0 unexplained.
    // 11: array held by a pin and a program.
    // 12: array held by nothing visible: refcnt 2 -> 2 unexplained (leak).
    // 13: ringbuf in an outer map slot and an mmap.
    let maps = vec![
        map(10, "conn_track", 1, 1, 1),
        map(11, "cfg", 2, 2, 1),
        map(12, "leaky", 2, 2, 1),
        map(13, "events", 27, 2, 1),
    ];
    // Odd comms: quotes, backslash, newline, non-UTF-8.
    let files = vec![
        file(100, 3, 0xa, 10, b"agent \"x\""),
        file(100, 4, 0xa, 10, b"agent \"x\""),
        file(200, 5, 0xb, 99, b"back\\slash\nnl\xff"),
    ];
    let vmas = vec![FileRecord {
        vm_start: 0x7f00_0000_0000,
        vm_end: 0x7f00_0000_1000,
        ..file(300, 0, 0xc, 13, b"mmapper")
    }];
    let obs = Observed {
        files: Some(files.clone()),
        vmas: Some(vmas.clone()),
        programs: Some(vec![vec![11], vec![]]),
        slots: Some(vec![13]),
        links: Some(vec![]),
        pins: Some(vec![11]),
        inflight: Some(vec![]),
        inflight_ptrs: vec![],
        struct_ops_links: vec![],
        struct_ops: Some(vec![]),
        io_uring: Some(vec![]),
        incomplete: vec![],
        user_refs_visible: true,
    };
    let holders = holders::compute(&maps, &obs);
    let processes = holders::processes(&files, &vmas);
    let inventory = Inventory {
        unreachable: vec![],
        hidden: vec![],
        mounts: vec![Superblock {
            dev: "0:30".into(),
            label: "/sys/fs/bpf".into(),
            path: PathBuf::from("/sys/fs/bpf"),
            partial: false,
            fallbacks: vec![],
        }],
        pins: vec![
            Pin {
                mount: "/sys/fs/bpf".into(),
                path: "/tc/globals/cfg".into(),
                dev: 30,
                ino: 7,
                info: FdInfo {
                    kind: ObjKind::Map,
                    id: 11,
                    memlock: Some(4096),
                    map_type: Some(2),
                },
                fresh: true,
            },
            Pin {
                mount: "/sys/fs/bpf".into(),
                path: "/prog \"quoted\"".into(),
                dev: 30,
                ino: 8,
                info: FdInfo {
                    kind: ObjKind::Prog,
                    id: 77,
                    memlock: Some(8192),
                    map_type: None,
                },
                fresh: false,
            },
        ],
        skipped: [(("/sys/fs/bpf".to_string(), "max_depth"), 2)]
            .into_iter()
            .collect(),
    };
    let memory: bpfmap_exporter::census::ById<u64> = [
        (10, 1_114_112),
        (11, 4096),
        (12, 320),
        (13, 8192),
        (900, 512),
    ]
    .into_iter()
    .collect();
    Snapshot {
        maps,
        own: vec![map(900, "census_out", 2, 1, 1)],
        memory,
        holders,
        processes,
        inventory: Some(inventory),
        maps_ok: true,
        // Map 10's count was walked 12.5 s ago (served from the cache).
        entries: [(
            10,
            entries::CountInfo {
                method: entries::Method::Iter,
                state: entries::State::Cached,
                age_seconds: Some(12.5),
            },
        )]
        .into_iter()
        .collect(),
        entries_summary: Some(entries::Summary {
            maps: [((entries::Method::Iter, entries::State::Cached), 1)]
                .into_iter()
                .collect(),
            errors: 0,
            errors_total: 2,
            over_budget: 0,
            stopped: 1,
            stopped_total: 4,
            spent: std::time::Duration::from_millis(3),
            budget: std::time::Duration::from_millis(50),
            oldest_seconds: 12.5,
        }),
        ..Default::default()
    }
}

fn rendered(opts: &RenderOpts) -> String {
    let mut f = Families::new();
    render(
        &snapshot(),
        opts,
        &|tgid, _cg| {
            if tgid == 100 {
                (
                    "0123abcd".into(),
                    "6b0f6c43-1111-2222-3333-444455556666".into(),
                )
            } else {
                (String::new(), String::new())
            }
        },
        &mut f,
    );
    // The exporter's own encoding path must agree byte for byte with the
    // prometheus crate's encoder over the whole census.
    let served = String::from_utf8(f.clone().encode_text(&[]).unwrap()).unwrap();
    let reference = String::from_utf8(encode_text(&f.into_proto()).unwrap()).unwrap();
    assert_eq!(
        served, reference,
        "direct encoding differs from the crate's"
    );
    reference
}

fn golden(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; create it with UPDATE_GOLDEN=1", path.display()));
    assert!(
        want == got,
        "rendering differs from {} (UPDATE_GOLDEN=1 to accept):\n{}",
        path.display(),
        diff(&want, got)
    );
}

fn diff(want: &str, got: &str) -> String {
    let w: Vec<&str> = want.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    let mut out = String::new();
    for l in &w {
        if !g.contains(l) {
            out += &format!("- {l}\n");
        }
    }
    for l in &g {
        if !w.contains(l) {
            out += &format!("+ {l}\n");
        }
    }
    out
}

#[test]
fn census_renders_as_the_golden_file() {
    golden("census.prom", &rendered(&RenderOpts::default()));
}

/// The node aggregates of an exposition (map and pinned totals).
fn agg(t: &str) -> Vec<String> {
    t.lines()
        .filter(|l| l.starts_with("bpfmap_maps") || l.starts_with("bpfmap_pinned"))
        // Per-pin, not an aggregate: it follows the budget.
        .filter(|l| !l.starts_with("bpfmap_pinned_map_unused"))
        .map(String::from)
        .collect()
}

#[test]
fn capped_per_map_series_keep_exact_aggregates() {
    let full = rendered(&RenderOpts::default());
    let capped = rendered(&RenderOpts {
        max_map_series: 2,
        ..Default::default()
    });
    golden("census_capped.prom", &capped);
    // Two maps keep their series; aggregates are equal.
    assert_eq!(agg(&full), agg(&capped));
    // The leaking map (12, small) comes first, then the largest (10).
    assert!(capped.contains("bpfmap_map_refcount{id=\"12\"} 2"));
    assert!(capped.contains("bpfmap_map_refcount{id=\"10\"} 1"));
    assert!(!capped.contains("bpfmap_map_refcount{id=\"13\"}"));
    assert!(capped.contains("bpfmap_map_series_omitted{reason=\"cap\"} 2"));
    assert!(capped.contains("bpfmap_map_series_omitted{reason=\"budget\"} 0"));
}

#[test]
fn odd_comms_are_escaped_and_valid_utf8() {
    let t = rendered(&RenderOpts::default());
    // Quotes escaped, newline as \n; a backslash and bytes that are not
    // UTF-8 are escaped reversibly (\\ and \xNN) before the writer escapes
    // the value's backslashes again.
    assert!(t.contains(r#"comm="agent \"x\"""#), "{t}");
    assert!(t.contains(r#"comm="back\\\\slash\nnl\\xff""#), "{t}");
    // No raw newline inside any sample line: every line is a comment or a sample.
    for l in t.lines() {
        assert!(
            l.starts_with('#') || l.starts_with("bpfmap_"),
            "broken line {l:?}"
        );
    }
}

#[test]
fn leak_is_the_only_unexplained_reference() {
    let t = rendered(&RenderOpts::default());
    assert!(
        t.contains("bpfmap_map_unexplained_refs{id=\"12\"} 2"),
        "{t}"
    );
    for id in [10, 11, 13] {
        assert!(
            t.contains(&format!("bpfmap_map_unexplained_refs{{id=\"{id}\"}} 0")),
            "{t}"
        );
    }
    assert!(t.contains("bpfmap_maps_unexplained_refs 2"));
    // The exporter's own map is reported apart, never among the node's maps.
    assert!(!t.contains("id=\"900\""), "{t}");
}

#[test]
fn the_budget_keeps_the_leaking_map_and_the_largest() {
    let full = rendered(&RenderOpts::all());
    let budget = rendered(&RenderOpts {
        top_by_memory: 1,
        ..Default::default()
    });
    golden("census_budget.prom", &budget);
    assert_eq!(agg(&full), agg(&budget));
    let published: Vec<&str> = budget
        .lines()
        .filter(|l| l.starts_with("bpfmap_map_info{"))
        .collect();
    assert_eq!(published.len(), 2, "{published:?}");
    assert!(budget.contains("bpfmap_map_unexplained_refs{id=\"12\"} 2"));
    assert!(budget.contains("bpfmap_map_refcount{id=\"10\"} 1"));
    assert!(budget.contains("bpfmap_map_series_omitted{reason=\"budget\"} 2"));
}
