//! Origins benchmark (root), two parts:
//! - `cost [N [DEPTH [ROUNDS]]]`: a C program with frame pointers
//!   (tests/fixtures/origins.c) creates and closes N maps from DEPTH frames
//!   down, with the lifecycle programs attached and origins off (the named
//!   baseline), on with the kernel's build ids, and on with raw addresses
//!   only, in rotated alternating rounds: wall ns per create+close and the
//!   syscall-exit program's ns per run (the kernel's BPF stats);
//! - `memory [STACKS]`: the origin store filled to its bounds: STACKS
//!   distinct 48-frame stacks with distinct names (the worst case: nothing
//!   shared between stacks), and as many records again as the record bound
//!   allows sharing them; its own byte count and the process's RSS growth.
//!
//! Run with `./scripts/bench-origins.sh`.
use std::path::Path;
use std::process::Command;

use bpfmap_exporter::bpf::lifecycle::records::{OriginRec, STACK_DEPTH};
use bpfmap_exporter::collector::Collector;
use bpfmap_exporter::lifecycle::{Lifecycle, LifecycleOpts};
use bpfmap_exporter::metrics::{encode_text, Families};
use bpfmap_exporter::origins::resolve::{Normalized, Pending};
use bpfmap_exporter::origins::store::{Frame, Symbol};
use bpfmap_exporter::origins::{Origins, OriginsConfig};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn metrics(lc: &mut Lifecycle) -> String {
    let mut f = Families::new();
    let ctx = bpfmap_exporter::collector::ScrapeContext {
        census: None,
        attributor: &bpfmap_exporter::k8s::NoAttribution,
    };
    lc.collect(&ctx, &mut f).unwrap();
    String::from_utf8(encode_text(&f.into_proto()).unwrap()).unwrap()
}

/// Sum of a family's samples in a text exposition.
fn sum(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(family) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// (runs, seconds) of the syscall-exit program that ran.
fn exit_stats(text: &str) -> (f64, f64) {
    let mut best = (0.0, 0.0);
    for p in [
        "fexit_sys_bpf",
        "tp_sys_exit_bpf",
        "btf_sys_exit",
        "raw_sys_exit",
    ] {
        let runs = sum(
            text,
            &format!("bpfmap_bpf_program_runs_total{{program=\"{p}\"}}"),
        );
        let secs = sum(
            text,
            &format!("bpfmap_bpf_program_run_seconds_total{{program=\"{p}\"}}"),
        );
        if runs > best.0 {
            best = (runs, secs);
        }
    }
    best
}

fn build_fixture(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("origins");
    let st = Command::new("cc")
        .args(["-O0", "-g", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/origins.c"
        ))
        .status()
        .expect("cc");
    assert!(st.success(), "building tests/fixtures/origins.c");
    bin
}

fn cost(n: usize, depth: usize, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let bin = build_fixture(dir.path());
    let modes: [(&str, bool, bool); 3] = [
        ("origins off (baseline)", false, false),
        ("origins on, build ids", true, true),
        ("origins on, raw addresses only", true, false),
    ];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut per_run: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut point = String::new();
    let mut captured = vec![0.0; modes.len()];
    for r in 0..rounds {
        for k in 0..modes.len() {
            let i = (k + r) % modes.len();
            let (_, on, build_id) = modes[i];
            let mut lc = Lifecycle::load(LifecycleOpts {
                enable_stats: true,
                census: false,
                origins: OriginsConfig {
                    enabled: on,
                    build_id,
                    ..Default::default()
                },
                ..Default::default()
            })
            .expect("lifecycle loads");
            if point.is_empty() {
                point = lc
                    .choices()
                    .iter()
                    .find(|c| c.probe == "map_syscalls")
                    .map(|c| c.point.clone())
                    .unwrap_or_default();
            }
            let before = exit_stats(&metrics(&mut lc));
            let out = Command::new(&bin)
                .args(["bench", &n.to_string(), &depth.to_string()])
                .output()
                .expect("running the fixture");
            assert!(out.status.success(), "{out:?}");
            let ns: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            let text = metrics(&mut lc);
            let after = exit_stats(&text);
            wall[i].push(ns);
            if after.0 > before.0 {
                per_run[i].push((after.1 - before.1) / (after.0 - before.0) * 1e9);
            }
            captured[i] += sum(&text, "bpfmap_origin_captures_total{cmd=\"map_create\"}");
            drop(lc);
        }
    }
    println!(
        "{n} create+close per round from {depth} frames down, {rounds} rounds, syscall exit at {point}\n"
    );
    println!("| setup | wall ns per create+close (median) | vs baseline | exit program ns per run (median) | vs baseline | stacks captured |");
    println!("|---|---|---|---|---|---|");
    let (w0, p0) = (median(wall[0].clone()), median(per_run[0].clone()));
    for (i, (name, _, _)) in modes.iter().enumerate() {
        let (w, p) = (median(wall[i].clone()), median(per_run[i].clone()));
        println!(
            "| {name} | {w:.0} | {:+.0} ns ({:.3}x) | {p:.0} | {:+.0} ns | {} |",
            w - w0,
            w / w0,
            p - p0,
            captured[i]
        );
    }
}

/// Resident set size in bytes.
fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn memory(stacks: usize) {
    let o = Origins::new(
        OriginsConfig {
            max_stacks: stacks,
            ..Default::default()
        },
        Default::default(),
    );
    let records = stacks * bpfmap_exporter::origins::RECORDS_PER_STACK;
    let before = rss();
    for i in 0..records as u32 {
        let k = i % stacks as u32;
        let binary: std::sync::Arc<str> =
            format!("/var/lib/kubelet/pods/agent-{k:08}/usr/bin/agent").into();
        let build_id: std::sync::Arc<str> = format!("{:040x}", k as u128 * 7919).into();
        let frames = (0..STACK_DEPTH)
            .map(|j| Pending {
                frame: Frame {
                    build_id: Some(build_id.clone()),
                    binary: Some(binary.clone()),
                    file_offset: Some((j * 64) as u64),
                    symbol: Some(Symbol {
                        function: format!(
                            "github.com/example/agent/pkg/maps.(*Manager).create{k:08}_{j:02}"
                        )
                        .into(),
                        file: Some(
                            format!("/go/src/agent/pkg/maps/manager{k:08}_{j:02}.go").into(),
                        ),
                        line: Some(100 + j as u32),
                    }),
                },
                file: None,
            })
            .collect();
        let rec = OriginRec {
            ns: i as u64,
            file_ptr: 0,
            tgid: 1000 + i,
            pid: 1000 + i,
            cmd: 0,
            fd: 3,
            obj_id: i + 1,
            obj_kind: 0,
            comm: "agent".into(),
            path: String::new(),
            stack_hash: 0,
            ips: Ok(vec![0; STACK_DEPTH]),
            kernel_frames: Ok(Vec::new()),
        };
        o.add_normalized(
            rec,
            Normalized {
                frames,
                files: Vec::new(),
                note: None,
                walked: STACK_DEPTH,
            },
        );
    }
    let after = rss();
    let (n, stacks, bytes, evicted) = o.store_stats();
    println!(
        "records {n}, distinct stacks {stacks}, evictions {evicted}\n\
         store's own count: {bytes} bytes ({:.2} MiB)\n\
         RSS growth: {} bytes ({:.2} MiB)",
        bytes as f64 / 1048576.0,
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / 1048576.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    match args.first().map(String::as_str) {
        Some("memory") => memory(num(1, bpfmap_exporter::origins::DEFAULT_MAX_STACKS)),
        Some("cost") | None => cost(num(1, 20000), num(2, 20), num(3, 5)),
        Some(other) => panic!("unknown mode {other:?}: cost or memory"),
    }
}
