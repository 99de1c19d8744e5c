//! Lifecycle benchmark (root), in one run:
//! - the floor (the named baseline): an empty program at each attach point
//!   (`bench_empty_*`, never loaded by the exporter), its per-run cost from
//!   the kernel's BPF stats (run_time_ns / run_cnt) in the same loops;
//! - per-event cost of each lifecycle program from the same stats, for every
//!   syscall-exit attach point this kernel offers and every refcount/create
//!   probe that attaches, with its increment over the floor of its mechanism;
//! - wall time of a tight map create/close loop and of a map lookup loop
//!   with nothing attached, with the empty twin attached at the same point,
//!   and with the lifecycle programs attached, alternating rounds (plus a
//!   non-bpf syscall loop: what other processes pay).
//!
//! Run with `./scripts/bench-lifecycle.sh`.
//!
//! Usage: bench_lifecycle [cycles] [rounds]
use std::time::{Duration, Instant};

use bpfmap_exporter::collector::Collector;
#[path = "support/floor.rs"]
mod floor;
use bpfmap_exporter::bpf::lifecycle::probes::Mode;
use bpfmap_exporter::lifecycle::{Lifecycle, LifecycleOpts, TestKnobs};
use bpfmap_exporter::metrics::{encode_text, Families};
use bpfmap_exporter::sys;
use floor::{Floor, EMPTY_PROGS};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

fn create_close(n: usize) -> Duration {
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let t = Instant::now();
    for _ in 0..n {
        drop(MapHandle::create(MapType::Array, Some("lcbench"), 4, 4, 1, &opts).unwrap());
    }
    t.elapsed()
}

fn lookups(m: &MapHandle, n: usize) -> Duration {
    let k = 0u32.to_ne_bytes();
    let t = Instant::now();
    for _ in 0..n {
        m.lookup(&k, MapFlags::ANY).unwrap();
    }
    t.elapsed()
}

/// A syscall that is not bpf(): what every other process on the node pays.
fn other_syscalls(n: usize) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: getppid has no arguments and cannot fail.
        std::hint::black_box(unsafe { libc::getppid() });
    }
    t.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Interquartile range over the median, in percent: the round-to-round
/// noise of one setup.
fn spread(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (q(0.75) - q(0.25)) / q(0.5) * 100.0
}

fn load(exclude: &[&str], stats: bool) -> Option<Lifecycle> {
    Lifecycle::load(LifecycleOpts {
        enable_stats: stats,
        census: false,
        knobs: TestKnobs {
            exclude_programs: exclude.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        ..Default::default()
    })
    .ok()
}

/// (program -> (runs, seconds)) from the exporter's own stats metrics.
fn stats(lc: &mut Lifecycle) -> Vec<(String, f64, f64)> {
    let mut f = Families::new();
    let ctx = bpfmap_exporter::collector::ScrapeContext {
        census: None,
        attributor: &bpfmap_exporter::k8s::NoAttribution,
    };
    lc.collect(&ctx, &mut f).unwrap();
    let t = String::from_utf8(encode_text(&f.into_proto()).unwrap()).unwrap();
    let mut out: Vec<(String, f64, f64)> = Vec::new();
    for l in t.lines() {
        for (name, col) in [
            ("bpfmap_bpf_program_runs_total{program=\"", 1),
            ("bpfmap_bpf_program_run_seconds_total{program=\"", 2),
        ] {
            if let Some(r) = l.strip_prefix(name) {
                let (p, v) = r.split_once("\"} ").unwrap();
                let v: f64 = v.parse().unwrap();
                match out.iter_mut().find(|e| e.0 == p) {
                    Some(e) if col == 1 => e.1 = v,
                    Some(e) => e.2 = v,
                    None if col == 1 => out.push((p.to_string(), v, 0.0)),
                    None => out.push((p.to_string(), 0.0, v)),
                }
            }
        }
    }
    out
}

/// (map_syscalls attach point, programs excluded to force it, its empty twin).
const VARIANTS: [(&str, &[&str], &str); 4] = [
    ("__x64_sys_bpf", &[], "bench_empty_fexit"),
    (
        "syscalls:sys_exit_bpf",
        &["fexit_sys_bpf"],
        "bench_empty_tp",
    ),
    (
        "tp_btf/sys_exit",
        &["fexit_sys_bpf", "tp_sys_exit_bpf"],
        "bench_empty_btf",
    ),
    (
        "raw_tp/sys_exit",
        &["fexit_sys_bpf", "tp_sys_exit_bpf", "btf_sys_exit"],
        "bench_empty_raw",
    ),
];

/// Every fentry/fexit program (excluded to measure the kprobe modes).
const TRAMPOLINES: &[&str] = &[
    "fexit_sys_bpf",
    "fexit_map_create",
    "fe_bpf_map_inc",
    "fe_bpf_map_inc_with_uref",
    "fe___bpf_map_inc_not_zero",
    "fe_bpf_map_inc_not_zero",
    "fe_bpf_map_put",
    "fe_bpf_map_put_with_uref",
    "fx_bpf_map_put_with_uref",
];

/// The attach mechanism of one of our programs (whose empty twin is its floor).
fn mechanism(prog: &str) -> &'static str {
    match prog {
        "fexit_sys_bpf" | "fexit_map_create" => "fexit",
        "tp_sys_exit_bpf" => "tracepoint",
        "btf_sys_exit" => "tp_btf",
        "raw_sys_exit" => "raw_tp",
        p if p.starts_with("fe_") => "fentry",
        p if p.starts_with("fx_") => "fexit",
        p if p.starts_with("kr") => "kretprobe", // kr_*, kret_map_create
        _ => "kprobe",                           // kp_*
    }
}

fn syscall_point(lc: &Lifecycle) -> String {
    lc.choices()
        .iter()
        .find(|c| c.probe == "map_syscalls")
        .map(|c| format!("{} {}", c.mode.as_str(), c.point))
        .unwrap_or_default()
}

fn delta(before: &[(String, f64, f64)], after: &[(String, f64, f64)]) -> Vec<(String, f64, f64)> {
    after
        .iter()
        .filter_map(|(p, runs, secs)| {
            let (r0, s0) = before
                .iter()
                .find(|e| &e.0 == p)
                .map(|e| (e.1, e.2))
                .unwrap_or((0.0, 0.0));
            (runs - r0 > 0.0).then(|| (p.clone(), runs - r0, secs - s0))
        })
        .collect()
}

/// Pause before each timed setup (deferred map frees of the previous one).
const SETTLE_MS: u64 = 100;

type Loop<'a> = (&'static str, &'a dyn Fn());

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cycles: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(7);
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let arr = MapHandle::create(MapType::Array, Some("lcbench_l"), 4, 4, 1, &opts).unwrap();
    create_close(cycles / 10); // warm up
    let cc = || {
        create_close(cycles);
    };
    let lk = || {
        lookups(&arr, cycles);
    };
    let loops: [Loop; 2] = [("create+close", &cc), ("lookup", &lk)];

    // 1. The floor: each empty twin alone, BPF stats on, same loops.
    println!("### Floor: an empty program at each attach point (kernel BPF stats, {cycles} iterations per loop)\n");
    println!("| mechanism | attach point | loop | runs per iteration | ns per run |");
    println!("|---|---|---|---|---|");
    let mut floor: Vec<(&str, &str, f64)> = Vec::new(); // (mechanism, loop, ns)
    {
        let _stats = sys::enable_run_time_stats().expect("BPF_ENABLE_STATS");
        for e in EMPTY_PROGS {
            let f = match Floor::load(e.prog, None) {
                Ok(f) => f,
                Err(err) => {
                    let err = format!("{err:#}");
                    let short = err.rsplit(": ").next().unwrap_or(&err);
                    println!(
                        "| {} | {} | | (not loadable here: {short}) | |",
                        e.mechanism, e.point
                    );
                    continue;
                }
            };
            for (name, run) in loops {
                let (r0, t0) = f.run_stats().unwrap();
                run();
                let (r1, t1) = f.run_stats().unwrap();
                let (dr, dt) = ((r1 - r0) as f64, (t1 - t0) as f64);
                if dr == 0.0 {
                    println!("| {} | {} | {name} | 0 | |", e.mechanism, e.point);
                    continue;
                }
                floor.push((e.mechanism, name, dt / dr));
                println!(
                    "| {} | {} | {name} | {:.2} | {:.1} |",
                    e.mechanism,
                    e.point,
                    dr / cycles as f64,
                    dt / dr
                );
            }
        }
    }
    let floor_of = |prog: &str, lp: &str| {
        floor
            .iter()
            .find(|(m, l, _)| *m == mechanism(prog) && *l == lp)
            .map(|f| f.2)
    };
    println!();

    // 2. Our programs, per map_syscalls attach point, next to the floor.
    println!("### Per-event cost of our programs (kernel BPF stats), against the floor\n");
    println!(
        "| map_syscalls attach point | loop | program | runs per iteration | ns per run | floor ns per run | ns over floor |"
    );
    println!("|---|---|---|---|---|---|---|");
    let per_event = |lc: &mut Lifecycle, label: &str| {
        for (name, run) in loops {
            let before = stats(lc);
            run();
            let after = stats(lc);
            for (p, dr, ds) in delta(&before, &after) {
                let ns = ds * 1e9 / dr;
                let (fl, over) = match floor_of(&p, name) {
                    Some(f) => (format!("{f:.1}"), format!("{:+.1}", ns - f)),
                    None => ("n/a".into(), "n/a".into()),
                };
                println!(
                    "| {label} | {name} | {p} | {:.2} | {ns:.1} | {fl} | {over} |",
                    dr / cycles as f64,
                );
            }
        }
    };
    for (point, exclude, _) in VARIANTS {
        let Some(mut lc) = load(exclude, true) else {
            println!("| {point} | | (does not load here) | | | | |");
            continue;
        };
        let got = syscall_point(&lc);
        if !got.ends_with(point) {
            println!("| {point} | | (not available here: got {got}) | | | | |");
            continue;
        }
        per_event(&mut lc, &got);
    }
    // The kprobe/kretprobe modes, with every fentry/fexit program excluded
    // (where the kernel has kprobes).
    match load(TRAMPOLINES, true) {
        Some(mut lc)
            if lc
                .choices()
                .iter()
                .any(|c| matches!(c.mode, Mode::Kprobe | Mode::Kretprobe)) =>
        {
            let label = format!("{} (kprobes, no fentry/fexit)", syscall_point(&lc));
            per_event(&mut lc, &label);
        }
        _ => println!("| kprobe/kretprobe (no fentry/fexit) | | (not available here) | | | | |"),
    }
    println!();
    if std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
    {
        println!("(note: sysctl kernel.bpf_stats_enabled=1 is on: wall times below include stats overhead)\n");
    }

    // 3. Wall time, alternating rounds: nothing attached / the empty twin at
    //    the same point (the named baseline) / our programs.
    println!("### Wall time, median of {rounds} alternating rounds of {cycles} iterations (BPF stats off)\n");
    println!("| map_syscalls attach point | loop | nothing attached | empty twin attached | ours attached | ours / nothing | ours / empty twin | ours − empty twin per iteration | round noise (IQR/median: nothing, empty, ours) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    // create+close last: its deferred map frees then land in the next
    // setup's settle pause, not in the lookup or getppid loop.
    let time3 = |m: &mut [[Vec<f64>; 3]; 3], i: usize| {
        m[2][i].push(other_syscalls(cycles * 10).as_secs_f64() / 10.0);
        m[1][i].push(lookups(&arr, cycles).as_secs_f64());
        m[0][i].push(create_close(cycles).as_secs_f64());
    };
    for (point, exclude, empty) in VARIANTS.iter().filter(|_| rounds > 0) {
        let (point, exclude, empty) = (*point, *exclude, *empty);
        let mut m: [[Vec<f64>; 3]; 3] = Default::default();
        let mut got = String::new();
        // Each round runs the three setups in a rotated order, and each
        // setup starts after a settle pause: map frees are deferred (RCU,
        // workqueue), so a loop would otherwise pay for the previous one's.
        'rounds: for r in 0..rounds {
            for j in 0..3 {
                let setup = (r + j) % 3;
                let floor = match setup {
                    1 => match Floor::load(empty, None) {
                        Ok(f) => Some(f),
                        Err(_) => break 'rounds,
                    },
                    _ => None,
                };
                let lc = match setup {
                    2 => match load(exclude, false) {
                        Some(lc) => Some(lc),
                        None => break 'rounds,
                    },
                    _ => None,
                };
                if let Some(lc) = &lc {
                    got = syscall_point(lc);
                    if !got.ends_with(point) {
                        break 'rounds;
                    }
                }
                std::thread::sleep(Duration::from_millis(SETTLE_MS));
                time3(&mut m, setup);
                drop((floor, lc));
            }
        }
        if m[0][2].len() < rounds {
            println!("| {point} | (not available here) | | | | | | | |");
            continue;
        }
        for (name, [none, empty, ours]) in ["create+close", "lookup", "getppid (not bpf)"]
            .iter()
            .zip(m)
        {
            let noise = format!(
                "{:.0}%, {:.0}%, {:.0}%",
                spread(none.clone()),
                spread(empty.clone()),
                spread(ours.clone())
            );
            let (n, e, o) = (median(none), median(empty), median(ours));
            let per = |x: f64| x * 1e6 / cycles as f64;
            println!(
                "| {got} | {name} | {:.2} µs/it | {:.2} µs/it | {:.2} µs/it | {:.3} | {:.3} | {:+.0} ns | {noise} |",
                per(n),
                per(e),
                per(o),
                o / n,
                o / e,
                (o - e) * 1e9 / cycles as f64
            );
        }
    }
    let lc = load(&[], false).expect("lifecycle loads");
    println!(
        "\ndefault probes here: {}",
        lc.choices()
            .iter()
            .map(|c| format!("{}={}", c.probe, c.mode.as_str()))
            .collect::<Vec<_>>()
            .join(" ")
    );
}
