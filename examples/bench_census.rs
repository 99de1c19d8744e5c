//! Census benchmark: creates N live maps, then in one run times a full
//! scrape of the real exporter (HTTP GET /metrics) against the baseline
//! `bpftool map show --json` over the same maps, and reads the exporter's
//! peak RSS. Run with `./scripts/bench-census.sh` (root).
//!
//! Usage: bench_census <exporter-binary> <n> [<n> ...]
//!        bench_census --series <exporter-binary> <baseline-binary> <n> [<n> ...]
//!
//! `--series` is the cardinality benchmark (`./scripts/bench-series.sh`):
//! series and bytes of one scrape with default flags, for the exporter and
//! a baseline build in the same run, over the same maps.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libbpf_rs::{MapHandle, MapType};

#[path = "../tests/common/mod.rs"]
mod common;
use common::Exporter;

fn get(port: u16, path: &str) -> (Duration, usize) {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 200"), "scrape failed");
    (t.elapsed(), buf.len())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

fn raise_nofile(n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit with a valid struct.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(rc, 0, "raising RLIMIT_NOFILE to {n}");
}

/// Live maps are held by child processes (`bench_census --hold K`), at most
/// HOLD_PER_CHILD each: a process may not hold 100,000 fds here (the hard
/// RLIMIT_NOFILE is 20,000 and raising it needs CAP_SYS_RESOURCE).
const HOLD_PER_CHILD: usize = 15_000;

/// Warm scrapes per configuration; the table reports their median.
const WARM_SCRAPES: usize = 11;

struct Holders {
    children: Vec<(std::process::Child, usize)>,
}

impl Holders {
    fn held(&self) -> usize {
        self.children.iter().map(|(_, k)| k).sum()
    }

    fn grow_to(&mut self, n: usize) {
        while self.held() < n {
            let k = (n - self.held()).min(HOLD_PER_CHILD);
            let mut c = Command::new(std::env::current_exe().unwrap())
                .args(["--hold", &k.to_string(), &self.held().to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawning a map holder");
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
                &mut line,
            )
            .unwrap();
            assert_eq!(line.trim(), "ready", "map holder failed to create {k} maps");
            self.children.push((c, k));
        }
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for (c, _) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Child mode: create `k` maps named from `first`, say "ready", hold them
/// until stdin closes.
fn hold(k: usize, first: usize) {
    raise_nofile(k as u64 + 1024);
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let mut maps = Vec::with_capacity(k);
    for i in first..first + k {
        let ty = if i % 2 == 0 {
            MapType::Array
        } else {
            MapType::Hash
        };
        maps.push(
            MapHandle::create(ty, Some(format!("bench{i}")), 4, 8, 1, &opts)
                .unwrap_or_else(|e| panic!("creating map {i}: {e}")),
        );
    }
    println!("ready");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

/// The body of GET /metrics (through curl, which decodes chunked and gzip
/// transfers), with or without asking for gzip.
fn body(port: u16, gzip: bool) -> Vec<u8> {
    let mut c = Command::new("curl");
    c.args(["-sf", &format!("http://127.0.0.1:{port}/metrics")]);
    if gzip {
        c.args(["-H", "Accept-Encoding: gzip"]);
    }
    let out = c.output().expect("curl");
    assert!(out.status.success(), "scrape failed");
    out.stdout
}

/// Series and bytes per scrape with default flags: `bin` against `baseline`
/// over the same live maps. The second of two scrapes is measured (the
/// first warms the per-map text cache and the lifecycle state).
fn series(bin: &str, baseline: &str, sizes: &[usize]) {
    println!("| live maps | build | series | of them per-map (bpfmap_map_*) | exposition KiB | gzip KiB |");
    println!("|---|---|---|---|---|---|");
    let mut holders = Holders {
        children: Vec::new(),
    };
    for &n in sizes {
        holders.grow_to(n);
        for (label, b) in [("baseline", baseline), ("this build", bin)] {
            let exporter = Exporter::start(b, &[]);
            let port = exporter.port;
            body(port, false);
            let text = body(port, false);
            let gz = body(port, true);
            drop(exporter);
            let text = String::from_utf8_lossy(&text);
            let samples: Vec<&str> = text
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect();
            let per_map = samples
                .iter()
                .filter(|l| l.starts_with("bpfmap_map_") && l.contains("{id=\""))
                .count();
            println!(
                "| {n} | {label} | {} | {per_map} | {:.1} | {:.1} |",
                samples.len(),
                text.len() as f64 / 1024.0,
                gz.len() as f64 / 1024.0
            );
        }
    }
}

fn bench(bin: &str, n: usize, holders: &mut Holders, extra: &[&str], label: &str) {
    holders.grow_to(n);
    let exporter = Exporter::start(bin, extra);
    let port = exporter.port;
    let (cold, _) = get(port, "/metrics");
    let mut warm = Vec::new();
    let mut bytes = 0;
    for _ in 0..WARM_SCRAPES {
        let (d, b) = get(port, "/metrics");
        warm.push(d);
        bytes = b;
    }
    let rss = status_kib(exporter.child.id(), "VmHWM:");
    drop(exporter);

    let mut base = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let out = Command::new("bpftool")
            .args(["map", "show", "--json"])
            .stdout(Stdio::piped())
            .output()
            .expect("bpftool (./scripts/install-deps.sh installs it)");
        assert!(out.status.success(), "bpftool map show failed");
        base.push(t.elapsed());
    }
    let warm = median(warm);
    let base = median(base);
    println!(
        "| {n} | {label} | {:.1} | {:.1} | {:.1} | {:.1}x | {:.1} | {} |",
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
        base.as_secs_f64() * 1e3,
        base.as_secs_f64() / warm.as_secs_f64(),
        rss as f64 / 1024.0,
        bytes / 1024,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "--hold" {
        hold(args[2].parse().unwrap(), args[3].parse().unwrap());
        return;
    }
    if args.len() >= 5 && args[1] == "--series" {
        let sizes: Vec<usize> = args[4..]
            .iter()
            .map(|s| s.parse().expect("map count"))
            .collect();
        series(&args[2], &args[3], &sizes);
        return;
    }
    if args.len() < 3 {
        eprintln!("usage: bench_census <exporter-binary> <n> [<n> ...]");
        eprintln!("       bench_census --series <exporter-binary> <baseline-binary> <n> [<n> ...]");
        std::process::exit(2);
    }
    let bin = &args[1];
    let sizes: Vec<usize> = args[2..]
        .iter()
        .map(|s| s.parse().expect("map count"))
        .collect();
    println!("| live maps | exporter flags | first scrape ms | scrape ms (median of 11) | bpftool map show --json ms (median of 3) | speed-up vs bpftool | exporter peak RSS MiB | exposition KiB |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut holders = Holders {
        children: Vec::new(),
    };
    if let Ok(secs) = std::env::var("BENCH_HOLD_SECS") {
        // Profiling aid: create the maps and hold them, no measurement.
        holders.grow_to(sizes[0]);
        println!("holding {} maps for {secs} s", holders.held());
        std::thread::sleep(Duration::from_secs(secs.parse().unwrap()));
        return;
    }
    for n in sizes {
        bench(bin, n, &mut holders, &[], "defaults (per-map budget)");
        bench(
            bin,
            n,
            &mut holders,
            &[
                "--collector.maps.publish-all",
                "--collector.maps.max-series=0",
            ],
            "all per-map series",
        );
        bench(
            bin,
            n,
            &mut holders,
            &["--collector.maps.no-per-map"],
            "aggregates only",
        );
    }
}
