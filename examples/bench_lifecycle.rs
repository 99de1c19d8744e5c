//! Lifecycle benchmark (root), in one run:
//! - per-event overhead of each lifecycle program from the kernel's BPF stats
//!   (run_time_ns / run_cnt), for every syscall-exit attach point this kernel
//!   offers and every refcount/create probe that attaches;
//! - wall time of a tight map create/close loop and of a map lookup loop,
//!   without and with the lifecycle programs attached, alternating rounds
//!   (plus a non-bpf syscall loop: what other processes pay).
//!
//! Run with `./scripts/bench-lifecycle.sh`.
//!
//! Usage: bench_lifecycle [cycles] [rounds]
use std::time::{Duration, Instant};

use bpfmap_exporter::collector::Collector;
use bpfmap_exporter::lifecycle::{Lifecycle, LifecycleOpts};
use bpfmap_exporter::metrics::{encode_text, Families};
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

fn load(exclude: &[&str], stats: bool) -> Option<Lifecycle> {
    Lifecycle::load(LifecycleOpts {
        enable_stats: stats,
        census: false,
        exclude_programs: exclude.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .ok()
}

/// (program -> (runs, seconds)) from the exporter's own stats metrics.
fn stats(lc: &mut Lifecycle) -> Vec<(String, f64, f64)> {
    let mut f = Families::new();
    lc.collect(None, &mut f).unwrap();
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

const VARIANTS: [(&str, &[&str]); 4] = [
    ("__x64_sys_bpf", &[]),
    ("syscalls:sys_exit_bpf", &["fexit_sys_bpf"]),
    ("tp_btf/sys_exit", &["fexit_sys_bpf", "tp_sys_exit_bpf"]),
    (
        "raw_tp/sys_exit",
        &["fexit_sys_bpf", "tp_sys_exit_bpf", "btf_sys_exit"],
    ),
];

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

    // 1. Per-event cost from BPF stats, per map_syscalls attach point.
    println!("### Per-event cost from kernel BPF stats ({cycles} iterations per loop)\n");
    println!(
        "| map_syscalls attach point | loop | program | runs | runs per iteration | ns per run |"
    );
    println!("|---|---|---|---|---|---|");
    for (point, exclude) in VARIANTS {
        let Some(mut lc) = load(exclude, true) else {
            println!("| {point} | | (does not load here) | | | |");
            continue;
        };
        let got = syscall_point(&lc);
        if !got.ends_with(point) {
            println!("| {point} | | (not available here: got {got}) | | | |");
            continue;
        }
        for (name, f) in [
            (
                "create+close",
                &(|| {
                    create_close(cycles);
                }) as &dyn Fn(),
            ),
            ("lookup", &|| {
                lookups(&arr, cycles);
            }),
        ] {
            let before = stats(&mut lc);
            f();
            let after = stats(&mut lc);
            for (p, dr, ds) in delta(&before, &after) {
                println!(
                    "| {got} | {name} | {p} | {dr:.0} | {:.2} | {:.1} |",
                    dr / cycles as f64,
                    ds * 1e9 / dr
                );
            }
        }
    }
    println!();
    if std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
    {
        println!("(note: sysctl kernel.bpf_stats_enabled=1 is on: wall times below include stats overhead)\n");
    }

    // 2. Wall time, alternating rounds without / with the programs.
    println!("### Wall time, median of {rounds} alternating rounds of {cycles} iterations\n");
    println!("| map_syscalls attach point | loop | without exporter | with exporter | ratio | added per iteration |");
    println!("|---|---|---|---|---|---|");
    for (point, exclude) in VARIANTS.iter().filter(|_| rounds > 0) {
        let (point, exclude) = (*point, *exclude);
        let mut m: [(Vec<f64>, Vec<f64>); 3] = Default::default();
        let mut got = String::new();
        for _ in 0..rounds {
            m[0].0.push(create_close(cycles).as_secs_f64());
            m[1].0.push(lookups(&arr, cycles).as_secs_f64());
            m[2].0
                .push(other_syscalls(cycles * 10).as_secs_f64() / 10.0);
            let Some(lc) = load(exclude, false) else {
                break;
            };
            got = syscall_point(&lc);
            if !got.ends_with(point) {
                break;
            }
            m[0].1.push(create_close(cycles).as_secs_f64());
            m[1].1.push(lookups(&arr, cycles).as_secs_f64());
            m[2].1
                .push(other_syscalls(cycles * 10).as_secs_f64() / 10.0);
            drop(lc);
        }
        if m[0].1.is_empty() || m[0].0.len() < rounds {
            continue;
        }
        for (name, (base, with)) in ["create+close", "lookup", "getppid (not bpf)"]
            .iter()
            .zip(m)
        {
            let (b, w) = (median(base), median(with));
            println!(
                "| {got} | {name} | {:.1} ms ({:.2} µs/it) | {:.1} ms ({:.2} µs/it) | {:.3} | {:+.0} ns |",
                b * 1e3,
                b * 1e6 / cycles as f64,
                w * 1e3,
                w * 1e6 / cycles as f64,
                w / b,
                (w - b) * 1e9 / cycles as f64
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
