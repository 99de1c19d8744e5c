//! Root integration tests of the census on the running kernel: maps with
//! known holders, exact counts, then teardown and the series are gone.
mod common;

use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use bpfmap_exporter::census::{Census, CensusOpts, Snapshot};
use common::*;
use libbpf_rs::{MapHandle, MapType};

struct Expect {
    id: u32,
    refcnt: i64,
    usercnt: i64,
    holders: [u64; 9],
    unexplained: i64,
}

fn check(s: &Snapshot, e: &Expect) {
    let m = s
        .maps
        .iter()
        .find(|m| m.id == e.id)
        .unwrap_or_else(|| panic!("map {} not in census", e.id));
    let h = &s.holders[&e.id];
    let got: Vec<u64> = h
        .iter()
        .map(|(_, c)| c.expect("every holder kind known"))
        .collect();
    assert_eq!(
        (m.refcnt, m.usercnt, got.as_slice(), h.unexplained(m.refcnt)),
        (e.refcnt, e.usercnt, &e.holders[..], Some(e.unexplained)),
        "map {} ({}) refcnt/usercnt/holders[file,pin,program,map,mmap,link,inflight,io_uring,struct_ops]/unexplained",
        e.id,
        m.name
    );
    assert_eq!(
        s.memory.get(&e.id).copied(),
        Some(memlock_by_id(e.id)),
        "map {} memory equals fdinfo memlock",
        e.id
    );
}

#[test]
fn census_explains_every_holder_kind_then_forgets_freed_maps() {
    require_root();
    ensure_bpffs();
    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    // iter/task_vma exists from 5.15, the bpf_map_sum_elem_count kfunc from
    // 6.6: the probed features must match the kernel (the matrix runs this on
    // 5.10, 6.1, 6.12 and the host).
    let (major, minor) = kernel_version();
    let has_vma = kernel_at_least(5, 15);
    assert_eq!(
        census.features().task_vma,
        has_vma,
        "iter/task_vma on kernel {major}.{minor}"
    );
    assert_eq!(
        census.features().elem_count,
        kernel_at_least(6, 6),
        "bpf_map_sum_elem_count on kernel {major}.{minor}"
    );

    // 1. Several map types, one file each.
    let kinds = [
        (MapType::Hash, "t_hash", 0u32),
        (MapType::Array, "t_array", 0),
        (MapType::PercpuHash, "t_pcpu_hash", 0),
        (MapType::LruHash, "t_lru", 0),
        (MapType::Hash, "t_hash_noprea", 1), // BPF_F_NO_PREALLOC
    ];
    let typed: Vec<MapHandle> = kinds
        .iter()
        .map(|(t, n, f)| map(*t, n, 4, 8, 64, *f))
        .collect();
    let rb = map(MapType::RingBuf, "t_ringbuf", 0, 0, 4096, 0);

    // 2. Files: a dup of the first file (same struct file), a second file from
    //    GET_FD_BY_ID, and a child process that inherits the second file.
    let shared = map(MapType::Array, "t_files", 4, 4, 4, 0);
    let shared_id = id_of(&shared);
    let dup = inheritable_dup(shared.as_fd().as_raw_fd());
    let second = MapHandle::from_map_id(shared_id).unwrap();
    let second_dup = inheritable_dup(second.as_fd().as_raw_fd());
    let tmp = tempfile::tempdir().unwrap();
    let mut child = child_with_comm(tmp.path(), b"bpfmap-child");
    drop(second_dup); // the child keeps the second file alive through its inherited fd
    drop(second);

    // 3. A pin in a freshly mounted private bpffs, fd closed.
    let fs = PrivateBpffs::new();
    let pinned = map(MapType::Hash, "t_pinned", 4, 4, 16, 0);
    let pinned_id = id_of(&pinned);
    let mut pinned = pinned;
    pinned.pin(fs.path().join("dir/m")).unwrap_or_else(|_| {
        std::fs::create_dir_all(fs.path().join("dir")).unwrap();
        pinned.pin(fs.path().join("dir/m")).unwrap()
    });
    drop(pinned);

    // 4. A map inside a map-in-map whose own fd is then closed.
    let inner = map(MapType::Array, "t_inner", 4, 4, 1, 0);
    let inner_id = id_of(&inner);
    let outer_opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        inner_map_fd: inner.as_fd().as_raw_fd() as u32,
        ..Default::default()
    };
    let outer =
        MapHandle::create(MapType::ArrayOfMaps, Some("t_outer"), 4, 4, 2, &outer_opts).unwrap();
    set_slot(&outer, 0, &inner);
    set_slot(&outer, 1, &inner); // two slots, two references
    drop(inner);

    // 5. A map used by a loaded program, fd closed.
    let used = map(MapType::Array, "t_used", 4, 4, 1, 0);
    let used_id = id_of(&used);
    let prog = prog_using_map(used.as_fd().as_raw_fd());
    drop(used);

    // 6. An mmap'ed array whose fd is closed.
    let mm = map(
        MapType::Array,
        "t_mmap",
        4,
        8,
        512,
        0x400, /* BPF_F_MMAPABLE */
    );
    let mm_id = id_of(&mm);
    let len = 4096usize;
    // SAFETY: mapping a valid BPF_F_MMAPABLE array fd, unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            mm.as_fd().as_raw_fd(),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED, "mmap of the array");
    drop(mm);

    let (s, report) = census.take(&[]);
    for p in &report.outcomes {
        assert!(p.ok, "census part {} failed: {:?}", p.name, p.error);
    }
    for m in &typed {
        check(
            &s,
            &Expect {
                id: id_of(m),
                refcnt: 1,
                usercnt: 1,
                holders: [1, 0, 0, 0, 0, 0, 0, 0, 0],
                unexplained: 0,
            },
        );
    }
    check(
        &s,
        &Expect {
            id: id_of(&rb),
            refcnt: 1,
            usercnt: 1,
            holders: [1, 0, 0, 0, 0, 0, 0, 0, 0],
            unexplained: 0,
        },
    );
    check(
        &s,
        &Expect {
            id: shared_id,
            refcnt: 2,
            usercnt: 2,
            holders: [2, 0, 0, 0, 0, 0, 0, 0, 0],
            unexplained: 0,
        },
    );
    check(
        &s,
        &Expect {
            id: pinned_id,
            refcnt: 1,
            usercnt: 1,
            holders: [0, 1, 0, 0, 0, 0, 0, 0, 0],
            unexplained: 0,
        },
    );
    check(
        &s,
        &Expect {
            id: inner_id,
            refcnt: 2,
            usercnt: 0,
            holders: [0, 0, 0, 2, 0, 0, 0, 0, 0],
            unexplained: 0,
        },
    );
    check(
        &s,
        &Expect {
            id: used_id,
            refcnt: 1,
            usercnt: 0,
            holders: [0, 0, 1, 0, 0, 0, 0, 0, 0],
            unexplained: 0,
        },
    );
    // The mmap keeps the map's file (vm_file): one refcnt and one usercnt.
    // Without iter/task_vma (before 5.15) that holder cannot be seen, so the
    // reference reads as unexplained, as docs/kernels.md documents.
    let (mm_holders, mm_unexplained) = if has_vma {
        ([0, 0, 0, 0, 1, 0, 0, 0, 0], 0)
    } else {
        ([0, 0, 0, 0, 0, 0, 0, 0, 0], 1)
    };
    check(
        &s,
        &Expect {
            id: mm_id,
            refcnt: 1,
            usercnt: 1,
            holders: mm_holders,
            unexplained: mm_unexplained,
        },
    );
    let by_id = |id: u32| s.maps.iter().find(|m| m.id == id).unwrap();
    assert_eq!(
        bpfmap_exporter::census::names::map_type_name(by_id(id_of(&rb)).map_type),
        "ringbuf"
    );
    assert_eq!(by_id(id_of(&typed[0])).name, "t_hash");

    // The child inherited both inheritable fds: the dup of the first file
    // (shared with this process: fork shares the struct file) and the second
    // file. Two distinct files in its table; the map still counts 2 files.
    let child_p = s
        .processes
        .iter()
        .find(|p| p.tgid == child.id())
        .expect("child in process holders");
    assert_eq!(
        (child_p.comm.as_slice(), child_p.files),
        (&b"bpfmap-child"[..], 2)
    );
    // The pin inventory names the private mount and path.
    let inv = s.inventory.as_ref().unwrap();
    let mount = fs.path().to_string_lossy().to_string();
    let pin = inv
        .pins
        .iter()
        .find(|p| p.mount == mount)
        .expect("pin in private bpffs");
    assert_eq!((pin.path.as_str(), pin.info.id), ("/dir/m", pinned_id));

    let out = text(&s);
    for (id, want) in [
        (shared_id, 0),
        (pinned_id, 0),
        (inner_id, 0),
        (used_id, 0),
        (mm_id, mm_unexplained),
    ] {
        assert!(
            out.contains(&format!(
                "bpfmap_map_unexplained_refs{{id=\"{id}\"}} {want}\n"
            )),
            "unexplained series of {id}"
        );
    }
    assert!(out.contains(&format!(
        "bpfmap_map_holders{{id=\"{inner_id}\",kind=\"map\"}} 2\n"
    )));
    assert!(out.contains(&format!(
        "bpfmap_pinned_objects{{mount=\"{mount}\",object_type=\"map\"}} 1\n"
    )));
    assert!(out.contains(&format!(
        "bpfmap_pin_info{{mount=\"{mount}\",path=\"/dir/m\",object_type=\"map\",id=\"{pinned_id}\"}} 1\n"
    )));

    // Teardown: every map goes, and so do its series.
    let ids: Vec<u32> = typed
        .iter()
        .map(id_of)
        .chain([id_of(&rb), shared_id, pinned_id, inner_id, used_id, mm_id])
        .collect();
    drop(typed);
    drop(rb);
    drop(dup);
    drop(shared);
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_file(fs.path().join("dir/m")).unwrap();
    drop(outer);
    drop(prog);
    // SAFETY: unmapping what we mapped above.
    assert_eq!(unsafe { libc::munmap(addr, len) }, 0);
    let s = until(&mut census, "all test maps freed", |s| {
        !s.maps.iter().any(|m| ids.contains(&m.id))
    });
    let out = text(&s);
    for id in ids {
        assert!(
            !out.contains(&format!("id=\"{id}\"")),
            "series of freed map {id} remain"
        );
    }
}

#[test]
fn exporter_keeps_no_fds_and_its_maps_go_with_it() {
    require_root();
    let before = open_fds();
    let mut census = Census::load(CensusOpts::default()).unwrap();
    let own = census.own_map_ids().to_vec();
    let during = open_fds();
    for _ in 0..20 {
        let (s, _) = census.take(&[]);
        assert!(
            s.maps.iter().all(|m| !own.contains(&m.id)),
            "own maps are not reported as the node's"
        );
        assert_eq!(s.own.len(), own.len());
    }
    assert_eq!(open_fds(), during, "scrapes leak no fds");
    drop(census);
    assert_eq!(open_fds(), before, "dropping the census closes every fd");
    let mut other = Census::load(CensusOpts::default()).unwrap();
    until(&mut other, "first census's maps freed", |s| {
        !s.maps.iter().any(|m| own.contains(&m.id))
    });
}

#[test]
fn exposition_passes_promtool_with_odd_comms() {
    require_root();
    let mut census = Census::load(CensusOpts::default()).unwrap();
    let m = map(MapType::Array, "t_odd_comm", 4, 4, 1, 0);
    let fd = inheritable_dup(m.as_fd().as_raw_fd());
    let tmp = tempfile::tempdir().unwrap();
    let odd: &[u8] = b"a\"b\\c\nd\xff\xfe";
    let mut child = child_with_comm(tmp.path(), odd);
    drop(fd);
    let (s, _) = census.take(&[]);
    let p = s
        .processes
        .iter()
        .find(|p| p.tgid == child.id())
        .expect("odd child holds the map");
    assert_eq!(p.comm, odd.to_vec());
    let out = text(&s);
    assert!(
        out.contains("comm=\"a\\\"b\\\\\\\\c\\nd\\\\xff\\\\xfe\""),
        "comm escaped, its backslash and non-UTF-8 bytes reversibly: {out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("m.prom");
    std::fs::write(&f, &out).unwrap();
    let o = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&f).unwrap())
        .output()
        .expect("promtool (Debian package prometheus) is installed by scripts/install-deps.sh");
    let errs = String::from_utf8_lossy(&o.stderr);
    // promtool exits 3 for lint-only findings; errors are what we reject.
    assert!(
        o.status.code() == Some(0) || (o.status.code() == Some(3) && !errs.contains("error")),
        "promtool: {errs}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn maps_vanishing_mid_census_cause_no_error_and_no_stale_series() {
    require_root();
    ensure_bpffs();
    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    // Cycles done so far: under qemu software emulation the churn thread can
    // need seconds just to mount its bpffs, so the censuses go on until it has
    // really churned (bounded below).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let d2 = done.clone();
    // Churn: maps (including map-in-map, pinned and hash maps whose memory is
    // re-read) appear and vanish while censuses run.
    let churn = std::thread::spawn(move || {
        let fs = PrivateBpffs::new();
        let mut n = 0u64;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let a = map(MapType::Hash, "vanish_h", 4, 4, 8, 0);
            let inner = map(MapType::Array, "vanish_in", 4, 4, 1, 0);
            let opts = libbpf_sys::bpf_map_create_opts {
                sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
                inner_map_fd: inner.as_fd().as_raw_fd() as u32,
                ..Default::default()
            };
            let outer = MapHandle::create(MapType::ArrayOfMaps, Some("vanish_out"), 4, 4, 1, &opts)
                .unwrap();
            set_slot(&outer, 0, &inner);
            let mut p = map(MapType::Array, "vanish_pin", 4, 4, 1, 0);
            let path = fs.path().join(format!("p{n}"));
            p.pin(&path).unwrap();
            drop((a, inner, outer, p));
            std::fs::remove_file(&path).unwrap();
            n += 1;
            d2.store(n, std::sync::atomic::Ordering::Relaxed);
        }
        n
    });
    let mut scrapes = 0;
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(3)
        || (done.load(std::sync::atomic::Ordering::Relaxed) <= 10
            && t.elapsed() < std::time::Duration::from_secs(60))
    {
        let (s, report) = census.take(&[]);
        for p in &report.outcomes {
            assert!(
                p.ok,
                "part {} failed while maps vanish: {:?}",
                p.name, p.error
            );
        }
        // Every per-map series belongs to a map of this census.
        let out = text(&s);
        let ids: std::collections::HashSet<String> =
            s.maps.iter().map(|m| format!("id=\"{}\"", m.id)).collect();
        for l in out.lines().filter(|l| l.starts_with("bpfmap_map_")) {
            if let Some(i) = l.find("id=\"") {
                let end = l[i + 4..].find('"').unwrap() + i + 5;
                assert!(ids.contains(&l[i..end]), "stale series {l}");
            }
        }
        scrapes += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let cycles = churn.join().unwrap();
    assert!(
        cycles > 10 && scrapes > 5,
        "churn {cycles} cycles, {scrapes} censuses"
    );
}

#[test]
fn agent_restart_pages_nobody() {
    // An agent restarts: it loads a program that uses a map, closes
    // everything, and the scrape comes at once. The program's deferred free
    // still holds the map for a moment; that reference must settle, not page.
    require_root();
    let mut census = Census::load(CensusOpts::default()).unwrap();
    let mut seen_settling = 0;
    for _ in 0..20 {
        let m = map(MapType::Array, "t_restart", 4, 4, 1, 0);
        let id = id_of(&m);
        let prog = prog_using_map(m.as_fd().as_raw_fd());
        drop(m);
        drop(prog);
        let (s, report) = census.take(&[]);
        for p in &report.outcomes {
            assert!(p.ok, "census part {} failed: {:?}", p.name, p.error);
        }
        if let Some(rec) = s.maps.iter().find(|r| r.id == id) {
            assert_eq!(
                s.holders[&id].unexplained(rec.refcnt),
                Some(0),
                "restarted agent's map {id} published as a leak"
            );
        }
        assert!(
            !text(&s).contains(&format!("bpfmap_map_unexplained_refs{{id=\"{id}\"}} 1")),
            "map {id} paged"
        );
        seen_settling += (s.settled_refs > 0) as u32;
    }
    // The window was really hit (the census saw references still settling),
    // so the scrapes above tested the confirm step, not an already-freed map.
    assert!(seen_settling > 0, "no scrape caught a deferred free");
}

#[test]
fn agent_restart_without_confirmation_would_page() {
    // The same restart with the confirm step off: the deferred reference is
    // read as unexplained, which is what the confirm step exists for.
    require_root();
    let mut census = Census::load(CensusOpts {
        confirm_delay: Duration::ZERO,
        ..Default::default()
    })
    .unwrap();
    let mut paged = 0;
    for _ in 0..20 {
        let m = map(MapType::Array, "t_restart0", 4, 4, 1, 0);
        let id = id_of(&m);
        let prog = prog_using_map(m.as_fd().as_raw_fd());
        drop(m);
        drop(prog);
        let (s, _) = census.take(&[]);
        if let Some(rec) = s.maps.iter().find(|r| r.id == id) {
            paged += (s.holders[&id].unexplained(rec.refcnt) == Some(1)) as u32;
        }
    }
    assert!(paged > 0, "the deferred free was never observed");
}

/// The node-wide unexplained total, when published.
fn total_unexplained(t: &str) -> Option<f64> {
    t.lines()
        .find_map(|l| l.strip_prefix("bpfmap_maps_unexplained_refs "))
        .map(|v| v.parse().unwrap())
}

#[test]
fn an_incomplete_pin_walk_infers_the_pins_it_missed_where_usercount_allows() {
    require_root();
    let fs = PrivateBpffs::new();
    std::fs::create_dir_all(fs.path().join("a/b")).unwrap();
    let pinned = map(MapType::Array, "t_deep_pin", 4, 4, 1, 0);
    let pinned_id = id_of(&pinned);
    let mut pinned = pinned;
    pinned.pin(fs.path().join("a/b/deep")).unwrap();
    drop(pinned); // only the pin holds it now
    let held = map(MapType::Array, "t_held", 4, 4, 1, 0);
    let held_id = id_of(&held);
    for (depth, entries) in [(0usize, 100_000usize), (32, 1)] {
        let mut census = Census::load(CensusOpts {
            pins_max_depth: depth,
            pins_max_entries: entries,
            ..Default::default()
        })
        .unwrap();
        let (s, _) = census.take(&[]);
        let rec = |id| s.maps.iter().find(|r| r.id == id).unwrap();
        let what = format!("max_depth={depth} max_entries={entries}");
        let t = text(&s);
        // The walk is incomplete either way, and says so.
        assert!(
            t.contains("bpfmap_holder_source_complete{source=\"pins\"} 0"),
            "{what}: {t}"
        );
        // A map whose fd already explains its refcount stays exactly 0.
        assert_eq!(
            s.holders[&held_id].unexplained(rec(held_id).refcnt),
            Some(0)
        );
        let deep = &s.holders[&pinned_id];
        if s.features.task_vma && s.features.iter_unix {
            // Every other holder of a user reference is seen: the deep pin
            // is inferred from usercount, and the count stays exact.
            assert_eq!(deep.inferred_pins, 1, "{what}");
            assert_eq!(deep.unexplained(rec(pinned_id).refcnt), Some(0), "{what}");
            assert!(t.contains("\nbpfmap_pins_inferred "), "{what}: {t}");
        } else {
            // Before 5.17 (no iter/unix) or 5.15 (no iter/task_vma) a map
            // file in flight or behind a vma is not seen, so usercount
            // cannot tell pins from those: withheld, never guessed.
            assert!(
                kernel_version() < (5, 17),
                "{what}: features {:?}",
                s.features
            );
            assert_eq!(deep.inferred_pins, 0);
            assert_eq!(deep.unexplained(rec(pinned_id).refcnt), None, "{what}");
            assert!(!t.contains(&format!(
                "bpfmap_map_unexplained_refs{{id=\"{pinned_id}\"}}"
            )));
            assert_eq!(
                total_unexplained(&t),
                None,
                "aggregate published as a guess"
            );
        }
    }
    // The complete walk sees the pin itself.
    let mut census = Census::load(CensusOpts::default()).unwrap();
    let (s, _) = census.take(&[]);
    let rec = s.maps.iter().find(|r| r.id == pinned_id).unwrap();
    assert_eq!(s.holders[&pinned_id].unexplained(rec.refcnt), Some(0));
    assert_eq!(s.holders[&pinned_id].inferred_pins, 0);
    assert!(text(&s).contains("bpfmap_holder_source_complete{source=\"pins\"} 1"));
    std::fs::remove_file(fs.path().join("a/b/deep")).unwrap();
    drop(held);
}

#[test]
fn an_unprivileged_users_directories_cannot_blind_the_leak_signal() {
    require_root();
    // A bpffs open to everyone, as /sys/fs/bpf is (mode 1777), where
    // `nobody` makes a 45-deep chain and 100,000 empty directories.
    let fs = PrivateBpffs::new();
    let root = fs.path();
    std::fs::set_permissions(
        root,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o1777),
    )
    .unwrap();
    let script =
        "set -e; mkdir -p $(seq -s / -f d%g 45); mkdir w; cd w; seq -f e%g 100000 | xargs mkdir";
    let st = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .current_dir(root)
        .status()
        .unwrap();
    assert!(st.success(), "nobody's directories");
    // A pin beside them, and a map the walk cannot explain from its pins:
    // held by the fixed file of an io_uring only this thread's
    // registered-ring table holds (5.18+), a file no walk sees.
    let mut pinned = map(MapType::Array, "t_blind_pin", 4, 4, 1, 0);
    let pinned_id = id_of(&pinned);
    pinned.pin(root.join("pin")).unwrap();
    drop(pinned);
    let hidden_map = map(MapType::Array, "t_blind_ring", 4, 4, 1, 0);
    let hidden_id = id_of(&hidden_map);
    let ring = uring_fixed_file(hidden_map.as_fd().as_raw_fd());
    drop(hidden_map);
    let hidden = bpfmap_exporter::sys::io_uring_hide_ring(ring);
    let mut census = Census::load(CensusOpts::default()).unwrap();
    let (s, _) = census.take(&[]);
    let t = text(&s);
    let skipped = |reason: &str| {
        t.lines().any(|l| {
            l.starts_with("bpfmap_bpffs_skipped_entries{")
                && l.contains(&format!("reason=\"{reason}\""))
                && !l.ends_with(" 0")
        })
    };
    // The walk is cut (by the directories' budget, which the wide tree
    // spends before the chain's depth is reached).
    assert!(skipped("max_depth") || skipped("max_dirs"), "{t}");
    assert!(
        t.contains("bpfmap_holder_source_complete{source=\"pins\"} 0"),
        "{t}"
    );
    let rec = |id| s.maps.iter().find(|r| r.id == id).unwrap();
    if !(s.features.task_vma && s.features.iter_unix) {
        // Usercount cannot be split (see above): the cut walk withholds.
        assert!(kernel_version() < (5, 17), "features {:?}", s.features);
        assert_eq!(
            total_unexplained(&t),
            None,
            "aggregate published as a guess"
        );
        return;
    }
    // The pin beside nobody's tree was found, not inferred.
    assert_eq!(s.holders[&pinned_id].inferred_pins, 0);
    assert_eq!(
        s.holders[&pinned_id].unexplained(rec(pinned_id).refcnt),
        Some(0)
    );
    // Every map's count stays published, and the node total is their sum.
    let mut per_map = 0;
    for m in &s.maps {
        let u = s.holders[&m.id].unexplained(m.refcnt);
        assert!(u.is_some(), "map {} withheld: {t}", m.id);
        per_map += u.unwrap();
    }
    assert_eq!(
        t.contains("\nbpfmap_maps_unexplained_withheld 0"),
        true,
        "{t}"
    );
    assert_eq!(total_unexplained(&t), Some(per_map as f64), "{t}");
    // A user reference no walk can see (the hidden ring's file) is, by
    // usercount, indistinguishable from a pin the walk missed: it reads as
    // an inferred pin while the walk is cut (with a complete walk it is
    // unexplained: root_api, root_uring).
    if hidden.is_ok() {
        let h = &s.holders[&hidden_id];
        assert_eq!(
            (h.inferred_pins, h.unexplained(rec(hidden_id).refcnt)),
            (1, Some(0))
        );
    } else {
        assert!(kernel_version() < (5, 18));
    }
}

#[test]
fn preloaded_iterator_links_are_identified_as_links() {
    require_root();
    ensure_bpffs();
    let mut census = Census::load(CensusOpts::default()).unwrap();
    let (s, _) = census.take(&[]);
    let inv = s.inventory.as_ref().unwrap();
    // Kernels with CONFIG_BPF_PRELOAD pin maps.debug and progs.debug (iterator
    // links) on every bpffs mount. Where a fresh mount has none, the kernel
    // lacks them: say so, and prove the inventory reports none either.
    if !std::path::Path::new("/sys/fs/bpf/maps.debug").exists() {
        let fresh = tempfile::tempdir().unwrap();
        mount_bpffs(fresh.path());
        let has = fresh.path().join("maps.debug").exists();
        let _ = std::process::Command::new("umount")
            .arg(fresh.path())
            .status();
        assert!(
            !has,
            "a fresh bpffs has maps.debug but /sys/fs/bpf does not: mounted before bpf_preload loaded?"
        );
        assert!(
            !inv.pins.iter().any(|p| p.path.ends_with(".debug")),
            "no preloaded iterators on this kernel, yet the inventory lists some"
        );
        eprintln!("this kernel has no preloaded iterators (CONFIG_BPF_PRELOAD off): absence proven on a fresh bpffs mount");
        return;
    }
    for name in ["/maps.debug", "/progs.debug"] {
        let p = inv
            .pins
            .iter()
            .find(|p| p.mount == "/sys/fs/bpf" && p.path == name)
            .unwrap_or_else(|| panic!("{name} not in inventory: {:?}", inv.skipped));
        assert_eq!(p.info.kind.label(), "link", "{name}");
        // BPF_OBJ_GET refuses them (ENOENT), so their link id is not readable.
    }
    for ((mount, reason), n) in &inv.skipped {
        assert!(
            mount != "/sys/fs/bpf" || !["vanished", "not_bpf_object"].contains(reason),
            "{mount}: {n} {reason}"
        );
    }
    assert!(text(&s).contains("bpfmap_pinned_objects{mount=\"/sys/fs/bpf\",object_type=\"link\"}"));
}

#[test]
fn pins_in_another_mount_namespace_are_found_and_labelled_apart() {
    // A process with its own mount namespace mounts a private bpffs at a
    // path that exists, empty, in ours, and pins a map there; the exporter's
    // namespace has no such mount. The pin must explain the map, under a
    // `mount` label distinct from the plain path.
    require_root();
    let dir = tempfile::Builder::new()
        .prefix("bpfmap-ns-fs")
        .tempdir()
        .unwrap();
    let d = dir.path().display().to_string();
    let ready = dir.path().join("..").join(format!(
        "{}.ready",
        dir.path().file_name().unwrap().to_string_lossy()
    ));
    let script = format!(
        "mount -t bpf bpf {d} && bpftool map create {d}/nsmap type array key 4 value 4 entries 1 name t_ns_pin \
         && bpftool map show pinned {d}/nsmap > {r} && exec sleep 60",
        r = ready.display()
    );
    let mut child = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .spawn()
        .expect("unshare");
    let t = Instant::now();
    while std::fs::metadata(&ready).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the namespace's pin never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let shown = std::fs::read_to_string(&ready).unwrap();
    let id: u32 = shown.split(':').next().unwrap().trim().parse().unwrap();
    let mut census = Census::load(CensusOpts::default()).unwrap();
    let (s, _) = census.take(&[]);
    let inv = s.inventory.as_ref().unwrap();
    let pin = inv
        .pins
        .iter()
        .find(|p| p.info.id == id && p.info.kind.label() == "map")
        .unwrap_or_else(|| {
            panic!(
                "pin of map {id} not found: {:?} {:?}",
                inv.mounts, inv.unreachable
            )
        });
    assert_eq!(pin.path, "/nsmap");
    assert!(
        pin.mount.starts_with(&format!("{d}@")),
        "label {}",
        pin.mount
    );
    let rec = s.maps.iter().find(|m| m.id == id).unwrap();
    assert_eq!(
        s.holders[&id].get(bpfmap_exporter::census::holders::HolderKind::Pin),
        Some(1)
    );
    assert_eq!(s.holders[&id].unexplained(rec.refcnt), Some(0));
    assert!(inv.unreachable.is_empty(), "{:?}", inv.unreachable);
    let t = text(&s);
    assert!(
        t.contains(&format!(
            "bpfmap_bpffs_mount_reachable{{mount=\"{}\"}} 1",
            pin.mount
        )),
        "{t}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&ready);
    until(&mut census, "namespace's map freed", |s| {
        !s.maps.iter().any(|m| m.id == id)
    });
}

#[test]
fn a_process_named_like_the_exporter_hides_no_map() {
    require_root();
    // Another process with this process's name but another executable
    // (a `sleep` exec'd through a symlink of that name) holds a map: the
    // map is the node's, never counted as another exporter instance's own.
    let mut comm = std::fs::read("/proc/self/comm").unwrap();
    comm.truncate(comm.len() - 1);
    let m = map(MapType::Hash, "t_impostor", 4, 4, 16, 0);
    let id = id_of(&m);
    let dup = inheritable_dup(m.as_fd().as_raw_fd());
    let tmp = tempfile::tempdir().unwrap();
    let mut child = child_with_comm(tmp.path(), &comm);
    drop(dup);
    drop(m);
    let mut census = Census::load(CensusOpts::default()).unwrap();
    let (s, _) = census.take(&[]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        s.maps.iter().any(|r| r.id == id),
        "the map of a process named {:?} was hidden",
        String::from_utf8_lossy(&comm)
    );
    assert!(!s.own.iter().any(|r| r.id == id));
}

#[test]
fn a_bpffs_mounted_over_another_is_walked_once_and_the_hidden_one_is_unreachable() {
    use bpfmap_exporter::census::holders::HolderKind;
    require_root();
    // Two bpffs on one mount point, as when a node's bpffs is mounted a
    // second time: the path reaches the upper one only.
    let fs = PrivateBpffs::new();
    let lower_map = map(MapType::Array, "t_lower_pin", 4, 4, 1, 0);
    let lower_id = id_of(&lower_map);
    let mut lower_map = lower_map;
    lower_map.pin(fs.path().join("lower")).unwrap();
    drop(lower_map); // only the hidden pin holds it now
    mount_bpffs(fs.path());
    struct Upper<'a>(&'a std::path::Path);
    impl Drop for Upper<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _upper = Upper(fs.path());
    let upper_map = map(MapType::Array, "t_upper_pin", 4, 4, 1, 0);
    let upper_id = id_of(&upper_map);
    let mut upper_map = upper_map;
    upper_map.pin(fs.path().join("upper")).unwrap();
    drop(upper_map);

    let mut census = Census::load(CensusOpts::default()).unwrap();
    let (s, _) = census.take(&[]);
    let t = text(&s);
    let point = fs.path().display().to_string();
    let inv = s.inventory.as_ref().unwrap();
    // The upper bpffs's pin is one pin, under the mount point's label.
    let upper_pins: Vec<&str> = inv
        .pins
        .iter()
        .filter(|p| p.info.id == upper_id)
        .map(|p| p.mount.as_str())
        .collect();
    assert_eq!(upper_pins, vec![point.as_str()], "{:?}", inv.pins);
    assert_eq!(s.holders[&upper_id].get(HolderKind::Pin), Some(1));
    // The hidden one is unreachable, labelled by its device, never walked
    // as the upper one again.
    assert!(inv.pins.iter().all(|p| p.info.id != lower_id));
    let hidden: Vec<&String> = inv
        .hidden
        .iter()
        .filter(|h| h.starts_with(&format!("{point}@")))
        .collect();
    assert_eq!(hidden.len(), 1, "{:?}", inv.mounts);
    let hidden = hidden[0];
    assert!(
        t.contains(&format!(
            "bpfmap_bpffs_mount_reachable{{mount=\"{hidden}\"}} 0"
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "bpfmap_bpffs_mount_reachable{{mount=\"{point}\"}} 1"
        )),
        "{t}"
    );
    assert!(t.contains("bpfmap_holder_source_complete{source=\"pins\"} 0"));
    let rec = |id| s.maps.iter().find(|r| r.id == id).unwrap();
    if s.features.task_vma && s.features.iter_unix {
        // Every other user-reference holder is seen: the hidden pin is
        // inferred from usercount, and both counts stay exact.
        assert_eq!(s.holders[&lower_id].inferred_pins, 1);
        assert_eq!(
            s.holders[&lower_id].unexplained(rec(lower_id).refcnt),
            Some(0)
        );
        assert_eq!(
            s.holders[&upper_id].unexplained(rec(upper_id).refcnt),
            Some(0)
        );
    } else {
        // No iter/unix or iter/task_vma: a pin cannot be told from a file
        // in flight or a mapping, so the counts are withheld.
        assert!(kernel_version() < (5, 17), "features {:?}", s.features);
        assert_eq!(s.holders[&lower_id].unexplained(rec(lower_id).refcnt), None);
    }
}
