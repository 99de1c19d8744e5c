//! Root integration tests of the lifecycle collector on the running kernel:
//! exact create/destroy counts per creating comm and map type, the lifetime
//! histogram, syscall counts, probe modes, churn without loss, restarts that
//! do not double count, and refcount increments/decrements where a refcount
//! probe can attach. Run with --test-threads=1 (they share the map table);
//! every assertion filters on this test's own comms.
mod common;

use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use bpfmap_exporter::bpf::lifecycle::probes::KernelCaps;
use bpfmap_exporter::census::{Census, CensusOpts, Parts};
use bpfmap_exporter::collector::{Collector, ScrapeContext};
use bpfmap_exporter::k8s::NoAttribution;
use bpfmap_exporter::lifecycle::{Lifecycle, LifecycleOpts, TestKnobs};
use bpfmap_exporter::metrics::{encode_text, Families};
use common::*;
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

/// A census with only the map iterator (what the lifecycle diff needs).
fn census() -> Census {
    Census::load(CensusOpts {
        parts: Parts::from_fn(|n| n == "maps"),
        ..Default::default()
    })
    .expect("census loads")
}

fn scrape(c: &mut Census, lc: &mut Lifecycle) -> String {
    let (snap, _) = c.take(&lc.own_map_ids());
    assert!(snap.maps_ok, "census failed");
    let mut f = Families::new();
    let ctx = ScrapeContext {
        census: Some(&snap),
        attributor: &NoAttribution,
    };
    lc.collect(&ctx, &mut f).expect("lifecycle collect");
    String::from_utf8(encode_text(&f.into_proto()).unwrap()).unwrap()
}

/// Sum of the samples of `name` whose labels include every pair of `want`.
fn value(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, v) = if let Some(r) = rest.strip_prefix('{') {
            let (l, v) = r.rsplit_once("} ").unwrap();
            (l.to_string(), v)
        } else if let Some(v) = rest.strip_prefix(' ') {
            (String::new(), v)
        } else {
            continue; // a longer metric name
        };
        if want
            .iter()
            .all(|(k, val)| labels.contains(&format!("{k}=\"{val}\"")))
        {
            sum += v.trim().parse::<f64>().unwrap();
        }
    }
    sum
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}

/// Kernels of the VM matrix where fentry or kprobes work (Debian 5.10, 6.1,
/// 6.12); this host (6.18 under lockdown, no kprobes) has neither.
fn refcount_probes_expected() -> bool {
    let r = release();
    r.starts_with("5.10.") || r.starts_with("6.1.") || r.starts_with("6.12.")
}

fn churn_n() -> usize {
    std::env::var("BPFMAP_CHURN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn mode_of(lc: &Lifecycle, probe: &str) -> (String, bool) {
    let c = lc
        .choices()
        .iter()
        .find(|c| c.probe == probe)
        .unwrap_or_else(|| panic!("probe {probe} reported"));
    (c.mode.as_str().to_string(), c.attached)
}

/// Run `f` on a thread whose comm is `comm` (bpf_get_current_comm reads it).
fn as_comm<T: Send + 'static>(comm: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .name(comm.to_string())
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// Scrape until `pred` holds (map frees are deferred; creations that die
/// between scrapes are resolved one scrape later), bounded.
fn until(c: &mut Census, lc: &mut Lifecycle, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = scrape(c, lc);
        if pred(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}\n{}",
            t.lines()
                .filter(|l| l.contains("lctest") || l.contains("lost"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn probe_modes_match_the_kernel() {
    require_root();
    let lc = Lifecycle::load(LifecycleOpts::default()).expect("lifecycle loads");
    let lines = lc.check_lines();
    println!("{}", lines.join("\n"));
    for l in &lines {
        assert!(
            l.starts_with("probe=") && l.contains(" mode=") && l.contains(" attached="),
            "{l}"
        );
    }
    // Exact creates and syscalls need the syscall-exit tracepoint or better
    // on every kernel; destructions come from the census everywhere.
    let (m, a) = mode_of(&lc, "map_syscalls");
    if refcount_probes_expected() && !release().starts_with("5.10.") {
        // fexit on __x64_sys_bpf: no syscall tracepoint for the node.
        assert_eq!((m.as_str(), a), ("fexit", true), "map_syscalls");
    } else {
        // This host (fentry refused), and 5.10: its BTF gives
        // __x64_sys_bpf's argument as a forward declaration, which the
        // verifier would refuse, so fexit is not even tried there.
        assert_eq!((m.as_str(), a), ("tracepoint", true), "map_syscalls");
    }
    let caps = KernelCaps::read(std::path::Path::new("/sys/kernel/btf/vmlinux")).unwrap();
    assert_eq!(
        caps.sys_bpf_regs,
        !release().starts_with("5.10."),
        "__x64_sys_bpf's pt_regs is a complete struct in the BTF of every kernel here but 5.10"
    );
    // Destructions are timed in the kernel where fentry works (the matrix
    // kernels) and bpf_map_free_deferred is in the BTF; on this host fentry
    // is refused (as for every refcount probe below) and there are no
    // kprobes, so the census times them.
    let btf_has_free_deferred = caps.btf_funcs.contains("bpf_map_free_deferred");
    if refcount_probes_expected() && btf_has_free_deferred {
        assert_eq!(
            mode_of(&lc, "map_destroy"),
            ("fentry".into(), true),
            "map_destroy on {}",
            release()
        );
    } else {
        assert_eq!(mode_of(&lc, "map_destroy"), ("census".into(), true));
        if !refcount_probes_expected() {
            assert!(
                btf_has_free_deferred,
                "this host's BTF has bpf_map_free_deferred: fentry was tried and refused"
            );
            assert!(!caps.kprobe_pmu, "this host has no kprobes");
        }
    }
    let btf_has_map_create = std::process::Command::new("bpftool")
        .args(["btf", "dump", "file", "/sys/kernel/btf/vmlinux"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("FUNC 'map_create'"))
        .unwrap_or(false);
    let (create, attached) = mode_of(&lc, "map_create");
    assert!(attached, "map_create must be counted on every kernel");
    let refcount = [
        "bpf_map_inc",
        "bpf_map_inc_with_uref",
        "__bpf_map_inc_not_zero",
        "bpf_map_put",
        "bpf_map_put_with_uref",
    ];
    if refcount_probes_expected() {
        // fentry works on these kernels (measured on each): it must be
        // chosen, with no silent fall back to kprobe or none.
        for p in refcount {
            let (m, a) = mode_of(&lc, p);
            assert!(
                a && m == "fentry",
                "{p}: mode {m} attached {a} on {}",
                release()
            );
        }
        if btf_has_map_create {
            assert_eq!(create, "fexit", "map_create on {}", release());
        } else {
            // 5.10 inlines map_create: creations come from the bpf() exit.
            assert_eq!(create, m, "map_create follows map_syscalls");
        }
    } else {
        // This host: fentry is refused (lockdown) and there are no kprobes.
        for p in refcount {
            assert_eq!(mode_of(&lc, p), ("none".into(), false), "{p}");
        }
        assert_eq!(create, "tracepoint");
    }
}

#[test]
fn exact_create_and_destroy_per_comm_and_type() {
    require_root();
    let mut c = census();
    let mut lc = Lifecycle::load(LifecycleOpts::default()).expect("lifecycle loads");
    let comm = "lctest_exact";
    let t0 = scrape(&mut c, &mut lc);
    let base = |t: &str, name: &str, ty: &str| value(t, name, &[("comm", comm), ("map_type", ty)]);
    let hist0 =
        |t: &str, ty: &str| value(t, "bpfmap_map_lifetime_seconds_count", &[("map_type", ty)]);
    let (nq, ns) = (40usize, 25usize);
    // Queue and stack maps: types nothing else on a test node churns.
    let (ops, errs) = as_comm(comm, move || {
        let mut maps = Vec::new();
        for i in 0..nq {
            maps.push(map(MapType::Queue, &format!("lcq{i}"), 0, 8, 4, 0));
        }
        for i in 0..ns {
            maps.push(map(MapType::Stack, &format!("lcs{i}"), 0, 8, 4, 0));
        }
        let h = map(MapType::Hash, "lch", 4, 8, 16, 0);
        let mut ops = 0;
        for k in 0..10u32 {
            h.update(&k.to_ne_bytes(), &[0u8; 8], MapFlags::ANY)
                .unwrap();
            h.lookup(&k.to_ne_bytes(), MapFlags::ANY).unwrap().unwrap();
            h.delete(&k.to_ne_bytes()).unwrap();
            ops += 1;
        }
        let mut errs = 0;
        for k in 100..105u32 {
            assert!(h.delete(&k.to_ne_bytes()).is_err());
            errs += 1;
        }
        drop(maps);
        drop(h);
        (ops, errs)
    });
    let t = until(&mut c, &mut lc, "all destroyed", |t| {
        base(t, "bpfmap_maps_destroyed_total", "queue") >= nq as f64
            && base(t, "bpfmap_maps_destroyed_total", "stack") >= ns as f64
            && base(t, "bpfmap_maps_destroyed_total", "hash") >= 1.0
    });
    // Let another scrape pass: nothing is counted twice.
    std::thread::sleep(Duration::from_millis(100));
    let t = {
        let t2 = scrape(&mut c, &mut lc);
        assert_eq!(
            base(&t2, "bpfmap_maps_destroyed_total", "queue"),
            base(&t, "bpfmap_maps_destroyed_total", "queue")
        );
        t2
    };
    for (ty, n) in [("queue", nq), ("stack", ns), ("hash", 1)] {
        assert_eq!(
            base(&t, "bpfmap_maps_created_total", ty) - base(&t0, "bpfmap_maps_created_total", ty),
            n as f64,
            "created {ty}"
        );
        assert_eq!(
            base(&t, "bpfmap_maps_destroyed_total", ty)
                - base(&t0, "bpfmap_maps_destroyed_total", ty),
            n as f64,
            "destroyed {ty}"
        );
    }
    for (ty, n) in [("queue", nq), ("stack", ns)] {
        let d = hist0(&t, ty) - hist0(&t0, ty);
        let all_destroyed = value(&t, "bpfmap_maps_destroyed_total", &[("map_type", ty)])
            - value(&t0, "bpfmap_maps_destroyed_total", &[("map_type", ty)]);
        assert!(
            d >= n as f64 && d <= all_destroyed,
            "lifetime count {ty}: {d} (ours {n}, all destroyed {all_destroyed})"
        );
    }
    let sys = |t: &str, cmd: &str, res: &str| {
        value(
            t,
            "bpfmap_map_syscalls_total",
            &[("comm", comm), ("cmd", cmd), ("result", res)],
        )
    };
    let d = |cmd: &str, res: &str| sys(&t, cmd, res) - sys(&t0, cmd, res);
    assert!(d("map_create", "ok") >= (nq + ns + 1) as f64);
    assert!(d("map_update_elem", "ok") >= ops as f64);
    assert!(d("map_lookup_elem", "ok") >= ops as f64);
    assert!(d("map_delete_elem", "ok") >= ops as f64);
    assert!(d("map_delete_elem", "error") >= errs as f64);
    assert_eq!(value(&t, "bpfmap_events_lost_total", &[]), 0.0);
}

#[test]
fn churn_is_counted_exactly_without_loss() {
    require_root();
    let mut c = census();
    let mut lc = Lifecycle::load(LifecycleOpts::default()).expect("lifecycle loads");
    let comm = "lctest_churn";
    let n = churn_n();
    let t0 = scrape(&mut c, &mut lc);
    let created = |t: &str| {
        value(
            t,
            "bpfmap_maps_created_total",
            &[("comm", comm), ("map_type", "array")],
        )
    };
    let destroyed = |t: &str| {
        value(
            t,
            "bpfmap_maps_destroyed_total",
            &[("comm", comm), ("map_type", "array")],
        )
    };
    // Scrape every 10,000 cycles, as Prometheus would every few seconds:
    // creation records live in a ring of 32,768 slots between scrapes.
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(10_000);
        as_comm(comm, move || {
            for _ in 0..batch {
                drop(map(MapType::Array, "lcchurn", 4, 4, 1, 0));
            }
        });
        done += batch;
        scrape(&mut c, &mut lc);
    }
    let elapsed = start.elapsed();
    let t = until(&mut c, &mut lc, "churn destroyed", |t| {
        destroyed(t) - destroyed(&t0) >= n as f64
    });
    println!("churn {n} cycles in {elapsed:?}");
    assert_eq!(created(&t) - created(&t0), n as f64, "created");
    assert_eq!(destroyed(&t) - destroyed(&t0), n as f64, "destroyed");
    assert_eq!(value(&t, "bpfmap_events_lost_total", &[]), 0.0, "lost");
    let fds = open_fds();
    for _ in 0..5 {
        scrape(&mut c, &mut lc);
    }
    assert_eq!(open_fds(), fds, "scrapes leak no fds");
}

#[test]
fn map_events_ring_buffer_counts_drops() {
    require_root();
    let mut c = census();
    let mut lc = Lifecycle::load(LifecycleOpts {
        log_events: true,
        ..Default::default()
    })
    .expect("lifecycle loads");
    let comm = "lctest_events";
    let t0 = scrape(&mut c, &mut lc);
    let n = churn_n().min(20_000);
    as_comm(comm, move || {
        for _ in 0..n {
            drop(map(MapType::Array, "lcev", 4, 4, 1, 0));
        }
    });
    let t = until(&mut c, &mut lc, "events destroyed", |t| {
        value(t, "bpfmap_maps_destroyed_total", &[("comm", comm)]) >= n as f64
    });
    // Counting stays exact whatever the ring buffer dropped; drops are
    // counted (the 256 KiB ring holds ~3,600 events between scrapes).
    assert_eq!(
        value(&t, "bpfmap_maps_created_total", &[("comm", comm)])
            - value(&t0, "bpfmap_maps_created_total", &[("comm", comm)]),
        n as f64
    );
    let lost = value(&t, "bpfmap_events_lost_total", &[]);
    println!("events lost with --log.map-events after {n} creates: {lost}");
    assert!(lost <= n as f64);
    if n > 4000 {
        assert!(
            lost > 0.0,
            "a {n}-event burst must overflow the 256 KiB ring"
        );
    }
}

#[test]
fn a_restart_does_not_count_existing_maps_as_created() {
    require_root();
    let comm = "lctest_pre";
    let mut c = census();
    // The first instance sees the maps being created.
    let mut first = Lifecycle::load(LifecycleOpts::default()).expect("first loads");
    let a0 = scrape(&mut c, &mut first);
    let pre: Vec<MapHandle> = as_comm(comm, || {
        (0..7)
            .map(|i| map(MapType::Hash, &format!("lcpre{i}"), 4, 4, 4, 0))
            .collect()
    });
    let a1 = scrape(&mut c, &mut first);
    let created = |t: &str| value(t, "bpfmap_maps_created_total", &[("comm", comm)]);
    assert_eq!(created(&a1) - created(&a0), 7.0);
    // A second instance started now must not count them.
    let mut second = Lifecycle::load(LifecycleOpts::default()).expect("second loads");
    let b1 = scrape(&mut c, &mut second);
    assert_eq!(
        created(&b1),
        0.0,
        "restart counted existing maps as created"
    );
    let ids: Vec<u32> = pre.iter().map(id_of).collect();
    drop(pre);
    // Destroyed: the first instance attributes them to their creator, the
    // second to comm="unknown" (created before it started).
    let a2 = until(&mut c, &mut first, "first sees destroys", |t| {
        value(t, "bpfmap_maps_destroyed_total", &[("comm", comm)]) >= 7.0
    });
    assert_eq!(
        value(&a2, "bpfmap_maps_destroyed_total", &[("comm", comm)]),
        7.0
    );
    let b2 = scrape(&mut c, &mut second);
    assert_eq!(
        value(&b2, "bpfmap_maps_destroyed_total", &[("comm", comm)]),
        0.0
    );
    assert_eq!(created(&b2), 0.0);
    assert!(
        value(
            &b2,
            "bpfmap_maps_destroyed_total",
            &[("comm", "unknown"), ("map_type", "hash")]
        ) >= ids.len() as f64
    );
}

#[test]
fn cardinality_cap_folds_into_other_with_exact_totals() {
    require_root();
    let mut c = census();
    let mut lc = Lifecycle::load(LifecycleOpts {
        max_processes: 1,
        ..Default::default()
    })
    .expect("lifecycle loads");
    let t0 = scrape(&mut c, &mut lc);
    let total0 = value(&t0, "bpfmap_maps_created_total", &[("map_type", "queue")]);
    for i in 0..4 {
        as_comm(&format!("lctest_cap{i}"), || {
            drop(map(MapType::Queue, "lccap", 0, 4, 1, 0));
        });
    }
    let t = scrape(&mut c, &mut lc);
    let series = t
        .lines()
        .filter(|l| l.starts_with("bpfmap_maps_created_total{"))
        .count();
    assert!(series <= 2 * 40, "capped label sets: {series} series");
    let named = (0..4)
        .filter(|i| t.contains(&format!("comm=\"lctest_cap{i}\"")))
        .count();
    assert!(named <= 1, "at most one admitted label set, got {named}");
    assert_eq!(
        value(&t, "bpfmap_maps_created_total", &[("map_type", "queue")]) - total0,
        4.0,
        "totals stay exact"
    );
    assert!(value(&t, "bpfmap_maps_created_total", &[("comm", "other")]) >= 3.0);
}

/// More distinct (process, counter) pairs than the kernel has counter slots:
/// the rest count into comm="other" in the kernel (the overflow path), and
/// totals stay exact.
#[test]
fn counter_slots_overflow_into_other_with_exact_totals() {
    require_root();
    let mut c = census();
    let slots = 8;
    let mut lc = Lifecycle::load(LifecycleOpts {
        knobs: TestKnobs {
            counter_slots: slots,
            ..Default::default()
        },
        max_processes: 0,
        ..Default::default()
    })
    .expect("lifecycle loads");
    let t0 = scrape(&mut c, &mut lc);
    let queues = |t: &str| value(t, "bpfmap_maps_created_total", &[("map_type", "queue")]);
    let n = 2 * slots as usize;
    for i in 0..n {
        // Each thread is a distinct comm: two counters (the create syscall
        // and the creation by type) per comm.
        as_comm(&format!("lctest_slot{i}"), || {
            drop(map(MapType::Queue, "lcslot", 0, 4, 1, 0));
        });
    }
    let t = scrape(&mut c, &mut lc);
    let named = (0..n)
        .filter(|i| {
            value(
                &t,
                "bpfmap_maps_created_total",
                &[("comm", &format!("lctest_slot{i}")), ("map_type", "queue")],
            ) == 1.0
        })
        .count();
    assert!(
        named < slots as usize,
        "{named} comms kept apart with {slots} slots"
    );
    assert_eq!(queues(&t) - queues(&t0), n as f64, "totals stay exact");
    assert!(
        value(
            &t,
            "bpfmap_maps_created_total",
            &[("comm", "other"), ("map_type", "queue")]
        ) >= (n - named) as f64,
        "the overflow counts as comm=\"other\""
    );
}

#[test]
fn pid_label_is_opt_in() {
    require_root();
    let mut c = census();
    let mut off = Lifecycle::load(LifecycleOpts::default()).expect("loads");
    let mut on = Lifecycle::load(LifecycleOpts {
        pid_label: true,
        ..Default::default()
    })
    .expect("loads");
    as_comm("lctest_pid", || {
        drop(map(MapType::Queue, "lcpid", 0, 4, 1, 0))
    });
    let t_off = scrape(&mut c, &mut off);
    let t_on = scrape(&mut c, &mut on);
    let pid = std::process::id().to_string();
    assert!(!t_off.contains("pid=\""));
    assert_eq!(
        value(
            &t_on,
            "bpfmap_maps_created_total",
            &[("comm", "lctest_pid"), ("pid", &pid)]
        ),
        1.0
    );
}

#[test]
fn refcount_increments_and_decrements_where_probed() {
    require_root();
    let mut c = census();
    let mut lc = Lifecycle::load(LifecycleOpts::default()).expect("lifecycle loads");
    let attached = [
        "bpf_map_inc_with_uref",
        "__bpf_map_inc_not_zero",
        "bpf_map_put_with_uref",
    ]
    .iter()
    .any(|p| mode_of(&lc, p).1);
    if !refcount_probes_expected() {
        // This host: no refcount probe can attach (asserted in
        // probe_modes_match_the_kernel); the series must then be absent.
        assert!(!attached);
        let t = scrape(&mut c, &mut lc);
        assert!(!t.contains("bpfmap_map_refcount_increments_total{"));
        return;
    }
    assert!(attached, "a refcount probe must attach on {}", release());
    let comm = "lctest_ref";
    let k = 50usize;
    let m = map(MapType::Array, "lcref", 4, 4, 1, 0);
    let id = id_of(&m);
    let t0 = scrape(&mut c, &mut lc);
    let inc = |t: &str| value(t, "bpfmap_map_refcount_increments_total", &[("comm", comm)]);
    let dec = |t: &str| value(t, "bpfmap_map_refcount_decrements_total", &[("comm", comm)]);
    let handles = as_comm(comm, move || {
        (0..k)
            .map(|_| MapHandle::from_map_id(id).unwrap())
            .collect::<Vec<_>>()
    });
    let t1 = scrape(&mut c, &mut lc);
    assert!(
        inc(&t1) - inc(&t0) >= k as f64,
        "{} increments after {k} get-fd-by-id",
        inc(&t1) - inc(&t0)
    );
    // Close them on a thread with the same comm (the fput runs as task work
    // of the closing task).
    as_comm(comm, move || {
        for h in handles {
            let _ = h.as_fd().as_raw_fd();
            drop(h);
        }
    });
    let t2 = until(&mut c, &mut lc, "decrements", |t| {
        dec(t) - dec(&t0) >= k as f64
    });
    assert!(dec(&t2) - dec(&t0) >= k as f64);
    drop(m);
}

#[test]
fn self_overhead_from_kernel_bpf_stats() {
    require_root();
    let mut c = census();
    let mut lc = Lifecycle::load(LifecycleOpts {
        enable_stats: true,
        ..Default::default()
    })
    .expect("lifecycle loads");
    as_comm("lctest_stats", || {
        for _ in 0..100 {
            drop(map(MapType::Array, "lcst", 4, 4, 1, 0));
        }
    });
    let t = scrape(&mut c, &mut lc);
    let runs = value(&t, "bpfmap_bpf_program_runs_total", &[]);
    let secs = value(&t, "bpfmap_bpf_program_run_seconds_total", &[]);
    assert!(runs >= 100.0, "program runs {runs}");
    assert!(secs > 0.0, "program run time {secs}");
}

/// Attribution through the k8s Attributor: labels come from it, and the
/// creator's real tgid reaches it (from the creation record) even without
/// the pid label, so it can read /proc/<pid>/cgroup while the process lives.
#[test]
fn container_labels_come_from_the_attributor() {
    use bpfmap_exporter::k8s::{Attributor, Identity};
    use std::sync::{Arc, Mutex};
    struct Fake(Mutex<Vec<(u32, u64)>>);
    impl Attributor for Fake {
        fn identify(&self, tgid: u32, cgroup_id: u64) -> Identity {
            self.0.lock().unwrap().push((tgid, cgroup_id));
            Identity {
                container_id: format!("ctr-{cgroup_id}"),
                pod_uid: "pod-1".into(),
                ..Default::default()
            }
        }
    }
    require_root();
    let fake = Arc::new(Fake(Mutex::new(Vec::new())));
    let mut c = census();
    let mut lc = Lifecycle::load(LifecycleOpts {
        attributor: fake.clone(),
        ..Default::default()
    })
    .expect("lifecycle loads");
    let keep = as_comm("lctest_ctr", || map(MapType::Queue, "lcctr", 0, 4, 1, 0));
    let t = scrape(&mut c, &mut lc);
    let line = t
        .lines()
        .find(|l| l.starts_with("bpfmap_maps_created_total{") && l.contains("lctest_ctr"))
        .expect("created series");
    assert!(
        line.contains("container_id=\"ctr-") && line.contains("pod_uid=\"pod-1\""),
        "{line}"
    );
    let me = std::process::id();
    assert!(
        fake.0.lock().unwrap().iter().any(|&(tgid, _)| tgid == me),
        "the creator's tgid reached the attributor"
    );
    drop(keep);
}

/// A map that lives 100 ms: where the kernel times destructions its lifetime
/// lands in the (0.1, 1] bucket even though the scrape that finds it gone
/// comes 1.5 s later; where the census times them, it lands at the scrape.
/// Stack maps isolate the test's histogram (no other software here makes
/// them).
#[test]
fn a_100ms_map_lands_in_its_bucket_where_the_kernel_times_destruction() {
    require_root();
    let mut c = census();
    let mut lc = Lifecycle::load(LifecycleOpts::default()).expect("lifecycle loads");
    let probed = matches!(mode_of(&lc, "map_destroy").0.as_str(), "fentry" | "kprobe");
    let bucket = |t: &str, le: &str| {
        value(
            t,
            "bpfmap_map_lifetime_seconds_bucket",
            &[("map_type", "stack"), ("le", le)],
        )
    };
    let count = |t: &str| {
        value(
            t,
            "bpfmap_map_lifetime_seconds_count",
            &[("map_type", "stack")],
        )
    };
    let timed =
        |t: &str, src: &str| value(t, "bpfmap_map_lifetimes_timed_total", &[("source", src)]);
    let before = scrape(&mut c, &mut lc);
    as_comm("lctest_life", || {
        let m = map(MapType::Stack, "lc_life", 0, 8, 4, 0);
        std::thread::sleep(Duration::from_millis(100));
        drop(m);
    });
    std::thread::sleep(Duration::from_millis(1500));
    let n0 = count(&before);
    let after = until(&mut c, &mut lc, "the stack map's lifetime", |t| {
        count(t) >= n0 + 1.0
    });
    assert_eq!(count(&after), n0 + 1.0, "one stack map died");
    let d = |le: &str| bucket(&after, le) - bucket(&before, le);
    if probed {
        assert_eq!(
            (d("0.1"), d("1")),
            (0.0, 1.0),
            "100 ms lifetime timed by the kernel: in (0.1, 1]\n{after}"
        );
        assert!(timed(&after, "probe") >= timed(&before, "probe") + 1.0);
    } else {
        // Census time: at least the 1.6 s until the scrape.
        assert_eq!(
            (d("1"), d("10")),
            (0.0, 1.0),
            "lifetime ends at the scrape without a probe\n{after}"
        );
        assert!(timed(&after, "census") >= timed(&before, "census") + 1.0);
        assert_eq!(timed(&after, "probe"), 0.0, "no probe, no probe times");
    }
}

/// More creations between two scrapes than the creation record ring holds:
/// every creation is counted by its process, and every destruction either
/// by its creator or, where the record was overwritten before a scrape read
/// it, in the lost counter with its reason. Never under `comm="unknown"`,
/// which means "existed before the exporter started". Maps held across a
/// scrape (their records are read when the census first sees them) and maps
/// created and closed between two scrapes (read when the scan finds them
/// dead) take different paths; both are covered.
#[test]
fn more_creations_than_the_record_ring_are_created_or_destroyed_plus_lost() {
    require_root();
    const N: usize = 40_000;
    for held in [true, false] {
        let mut c = census();
        let mut lc = Lifecycle::load(LifecycleOpts::default()).expect("lifecycle loads");
        let comm = if held {
            "lctest_burst_h"
        } else {
            "lctest_burst_c"
        };
        let get = |t: &str| {
            (
                value(t, "bpfmap_maps_created_total", &[("comm", comm)]),
                value(t, "bpfmap_maps_destroyed_total", &[("comm", comm)]),
                value(
                    t,
                    "bpfmap_lifecycle_events_lost_total",
                    &[("event", "created")],
                ),
                value(
                    t,
                    "bpfmap_lifecycle_events_lost_total",
                    &[("event", "destroyed"), ("reason", "record_overwritten")],
                ),
                value(t, "bpfmap_events_lost_total", &[]),
            )
        };
        // Markers around the burst (not by `comm`): the ids between them
        // are the burst's and any other process's creations meanwhile.
        let m0 = map(MapType::Array, "lcmark", 4, 4, 1, 0);
        let t0 = scrape(&mut c, &mut lc);
        let b = get(&t0);
        if held {
            // Held by pins (more maps than the fd limit allows open), all
            // released at once when the bpffs is unmounted.
            let fs = PrivateBpffs::new();
            let dir = fs.path().to_path_buf();
            as_comm(comm, move || {
                for i in 0..N {
                    let mut m = map(MapType::Array, "lcburst", 4, 4, 1, 0);
                    m.pin(dir.join(i.to_string())).unwrap();
                }
            });
            scrape(&mut c, &mut lc);
            drop(fs);
        } else {
            as_comm(comm, move || {
                for _ in 0..N {
                    drop(map(MapType::Array, "lcburst", 4, 4, 1, 0));
                }
            });
        }
        let m1 = map(MapType::Array, "lcmark", 4, 4, 1, 0);
        let foreign = id_of(&m1) as i64 - id_of(&m0) as i64 - 1 - N as i64;
        let t = until(&mut c, &mut lc, "every destruction counted", |t| {
            let a = get(t);
            a.1 - b.1 + a.3 - b.3 >= N as f64
        });
        let a = get(&t);
        let (created, destroyed, lost_created, lost_destroyed, lost_all) =
            (a.0 - b.0, a.1 - b.1, a.2 - b.2, a.3 - b.3, a.4 - b.4);
        println!("held={held}: created {created} (+{lost_created} lost), destroyed {destroyed} (+{lost_destroyed} lost), {foreign} other ids meanwhile");
        assert_eq!(created, N as f64, "every creation counted by its process");
        assert_eq!(lost_created, 0.0);
        assert!(
            lost_destroyed >= (N - 32_768) as f64,
            "the overwritten records are counted lost: {lost_destroyed}"
        );
        // Every one of ours is destroyed or lost (lost may hold other
        // processes' too, and the second marker's record overwrites one).
        assert!(destroyed <= N as f64 && destroyed + lost_destroyed >= N as f64);
        assert!(
            lost_all >= lost_destroyed,
            "events_lost_total includes them"
        );
        if foreign == 0 {
            // Nobody else created maps meanwhile: exact.
            assert_eq!(destroyed + lost_destroyed, N as f64);
        }
        // Nothing is counted twice by later scrapes.
        let t2 = scrape(&mut c, &mut lc);
        assert_eq!(get(&t2).1, a.1);
        drop((m0, m1));
    }
}

/// On a hybrid host (memory on cgroup v1, the process in the unified root)
/// the unified cgroup names no container; the memory cgroup, which the
/// census attributes maps by, does. Creations and destructions carry the
/// container and pod of the creator's memory cgroup, after the creator
/// exited and (for the labels already decided) after its cgroups are gone.
#[test]
fn created_and_destroyed_carry_the_pod_of_the_memory_cgroup() {
    require_root();
    let ctr: String = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap()
        .trim()
        .replace('-', "")
        .repeat(2);
    let cg = PodCgroup::new(&format!("bpfmap-lctest-{}", &ctr[..8]), &ctr);
    let (uid, ctr_dir) = (cg.uid.clone(), cg.ctr.clone());
    let mut c = census();
    // The exporter's attributor, as --k8s.attribution builds it: alone, it
    // finds no container for a process in the unified root.
    let attributor = bpfmap_exporter::k8s::attributor(&bpfmap_exporter::k8s::K8sOpts {
        attribution: true,
        ..Default::default()
    })
    .unwrap();
    let mut lc = Lifecycle::load(LifecycleOpts {
        memcg_attribution: true,
        attributor,
        ..Default::default()
    })
    .expect("lifecycle loads");
    scrape(&mut c, &mut lc);
    // bpftool under a name of our own (the comm is the executable's name),
    // run from a shell moved into the container's memory cgroup first.
    let bin = tempfile::tempdir().unwrap();
    let comm = "lctest_memcg";
    std::os::unix::fs::symlink(
        String::from_utf8(
            std::process::Command::new("sh")
                .args(["-c", "command -v bpftool"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim(),
        bin.path().join(comm),
    )
    .unwrap();
    let fs = PrivateBpffs::new();
    let pin = fs.path().join("lcmemcg");
    let script = format!(
        "echo $$ > '{}/cgroup.procs' && exec '{}' map create '{}' type hash key 4 value 4 entries 8 name lcmemcg",
        ctr_dir.display(),
        bin.path().join(comm).display(),
        pin.display()
    );
    let st = std::process::Command::new("sh")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(st.success(), "creating the map from {}", ctr_dir.display());
    let want = [
        ("comm", comm),
        ("container_id", ctr.as_str()),
        ("pod_uid", uid.as_str()),
        ("map_type", "hash"),
    ];
    let t = until(&mut c, &mut lc, "the creation carries the pod", |t| {
        value(t, "bpfmap_maps_created_total", &want) == 1.0
    });
    assert_eq!(
        value(t.as_str(), "bpfmap_maps_created_total", &[("comm", comm)]),
        1.0,
        "under no other labels"
    );
    // The creator exited long ago; its cgroups go too, then the map.
    drop(cg);
    std::fs::remove_file(&pin).unwrap();
    let t = until(&mut c, &mut lc, "the destruction carries the pod", |t| {
        value(t, "bpfmap_maps_destroyed_total", &want) == 1.0
    });
    assert_eq!(
        value(&t, "bpfmap_maps_created_total", &want),
        1.0,
        "the creation keeps its labels after the cgroups are gone"
    );
}
