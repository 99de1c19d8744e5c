//! Lifecycle benchmark (root), in one run:
//! - per-event overhead of each lifecycle program from the kernel's BPF stats
//!   (run_time_ns / run_cnt), for every syscall-exit attach point this kernel
//!   offers and every refcount/create probe that attaches;
//! - wall time of a tight map create/close loop and of a map lookup loop,
//!   without and with the lifecycle programs attached, alternating rounds.
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cycles: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(7);
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let arr = MapHandle::create(MapType::Array, Some("lcbench_l"), 4, 4, 1, &opts).unwrap();

    // 1. Per-event cost from BPF stats, per syscall-exit attach point.
    println!("### Per-event cost (kernel BPF stats, {cycles} create/close + {cycles} lookups)\n");
    println!("| attach point (map_syscalls) | program | runs | ns/run | runs per bpf() call |");
    println!("|---|---|---|---|---|");
    let variants: [(&str, &[&str]); 3] = [
        ("syscalls:sys_exit_bpf", &[]),
        ("tp_btf/sys_exit", &["tp_sys_exit_bpf"]),
        ("raw_tp/sys_exit", &["tp_sys_exit_bpf", "btf_sys_exit"]),
    ];
    for (point, exclude) in variants {
        let Some(mut lc) = load(exclude, true) else {
            println!("| {point} | (does not load here) | | | |");
            continue;
        };
        let got = lc
            .choices()
            .iter()
            .find(|c| c.probe == "map_syscalls")
            .map(|c| c.point.clone())
            .unwrap_or_default();
        if got != point {
            println!("| {point} | (not available here: got {got}) | | | |");
            continue;
        }
        let before = stats(&mut lc);
        create_close(cycles);
        lookups(&arr, cycles);
        let after = stats(&mut lc);
        for (p, runs, secs) in &after {
            let (r0, s0) = before
                .iter()
                .find(|e| &e.0 == p)
                .map(|e| (e.1, e.2))
                .unwrap_or((0.0, 0.0));
            let (dr, ds) = (runs - r0, secs - s0);
            if dr > 0.0 {
                println!(
                    "| {point} | {p} | {dr:.0} | {:.1} | {:.2} |",
                    ds * 1e9 / dr,
                    dr / (2 * cycles) as f64
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

    // 2. Wall time, alternating without / with the default attach points.
    let mut base_c = Vec::new();
    let mut with_c = Vec::new();
    let mut base_l = Vec::new();
    let mut with_l = Vec::new();
    create_close(cycles / 10); // warm up
    let mut chosen = String::new();
    for _ in 0..rounds {
        base_c.push(create_close(cycles).as_secs_f64());
        base_l.push(lookups(&arr, cycles).as_secs_f64());
        let lc = load(&[], false).expect("lifecycle loads");
        chosen = lc
            .choices()
            .iter()
            .filter(|c| c.attached)
            .map(|c| format!("{}={}", c.probe, c.mode.as_str()))
            .collect::<Vec<_>>()
            .join(" ");
        with_c.push(create_close(cycles).as_secs_f64());
        with_l.push(lookups(&arr, cycles).as_secs_f64());
        drop(lc);
    }
    let (bc, wc, bl, wl) = (
        median(base_c),
        median(with_c),
        median(base_l),
        median(with_l),
    );
    println!("### Wall time, median of {rounds} alternating rounds of {cycles} iterations\n");
    println!("probes: {chosen}\n");
    println!("| loop | without exporter | with exporter | ratio | per iteration added |");
    println!("|---|---|---|---|---|");
    println!(
        "| map create + close | {:.1} ms ({:.2} µs/it) | {:.1} ms ({:.2} µs/it) | {:.3} | {:+.0} ns |",
        bc * 1e3,
        bc * 1e6 / cycles as f64,
        wc * 1e3,
        wc * 1e6 / cycles as f64,
        wc / bc,
        (wc - bc) * 1e9 / cycles as f64
    );
    println!(
        "| map lookup (bpf syscall) | {:.1} ms ({:.2} µs/it) | {:.1} ms ({:.2} µs/it) | {:.3} | {:+.0} ns |",
        bl * 1e3,
        bl * 1e6 / cycles as f64,
        wl * 1e3,
        wl * 1e6 / cycles as f64,
        wl / bl,
        (wl - bl) * 1e9 / cycles as f64
    );
}
