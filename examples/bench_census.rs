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
//!
//! `--programs` is the programs-and-links benchmark
//! (`./scripts/bench-programs.sh`): the exporter's default scrape with N
//! maps, P programs and L links against a maps-only baseline build's scrape
//! of the same N maps, against `bpftool map show` + `bpftool prog show`, and
//! the exporter's series count, all in one run:
//!        bench_census --programs <exporter-binary> <baseline-binary> <maps> <programs> <links> [<scrapes> [<rounds>]]
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use libbpf_rs::{MapHandle, MapType};

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/holders.rs"]
mod holders;
use common::Exporter;
use holders::{status_kib, Holders};

fn get(port: u16, path: &str) -> (Duration, usize) {
    let (d, buf) = get_raw(port, path);
    (d, buf.len())
}

/// Time of one GET and the raw response (headers and body as sent).
fn get_raw(port: u16, path: &str) -> (Duration, Vec<u8>) {
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
    (t.elapsed(), buf)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
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

/// Warm scrapes per configuration; the table reports their median.
const WARM_SCRAPES: usize = 11;

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
    let mut holders = Holders::new(std::env::current_exe().unwrap());
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
    // The port accepts before the BPF objects are loaded (requests wait in
    // the backlog): the first scrape is timed from a finished start-up.
    let started = Instant::now();
    while !common::http_get(port, "/healthz").is_some_and(|(c, _)| c == 200) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no /healthz 200"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
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
    if args.len() == 3 && args[1] == "--hold-objects" {
        hold_objects(args[2].parse().unwrap());
        return;
    }
    if (7..=9).contains(&args.len()) && args[1] == "--programs" {
        let n = |i: usize, d: usize| -> usize {
            args.get(i).map_or(d, |a| a.parse().expect("a count"))
        };
        programs(
            &args[2],
            &args[3],
            n(4, 0),
            n(5, 0),
            n(6, 0),
            n(7, 21),
            n(8, 3),
        );
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
        eprintln!("       bench_census --programs <exporter-binary> <baseline-binary> <maps> <programs> <links> [<scrapes> [<rounds>]]");
        std::process::exit(2);
    }
    let bin = &args[1];
    let sizes: Vec<usize> = args[2..]
        .iter()
        .map(|s| s.parse().expect("map count"))
        .collect();
    println!("| live maps | exporter flags | first scrape ms | scrape ms (median of 11) | bpftool map show --json ms (median of 3) | speed-up vs bpftool | exporter peak RSS MiB | exposition KiB |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut holders = Holders::new(std::env::current_exe().unwrap());
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

/// Maps each benchmark program references (so each holds that many maps).
const MAPS_PER_PROG: usize = 3;

/// Raw tracepoints the benchmark's links attach to: events that do not fire
/// on a node without XDP programs, so the attached programs never run.
const QUIET_TRACEPOINTS: &[&str] = &["xdp_exception", "xdp_bulk_tx"];

/// One process holding every object of the programs benchmark: all its maps
/// are in one process, so `maps + 2 * programs` must fit the hard
/// RLIMIT_NOFILE (20,000 here).
struct ObjectHolder {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl ObjectHolder {
    fn start(maps: usize) -> ObjectHolder {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--hold-objects", &maps.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning the object holder");
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut h = ObjectHolder { child, out };
        h.expect_ready("creating maps");
        h
    }

    fn expect_ready(&mut self, what: &str) {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.out, &mut line).unwrap();
        assert_eq!(line.trim(), "ready", "object holder failed {what}");
    }

    fn command(&mut self, cmd: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        self.expect_ready(cmd);
    }
}

impl Drop for ObjectHolder {
    fn drop(&mut self) {
        // Killing the holder closes every fd it has: its maps, programs and
        // links are freed with it (nothing is pinned).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn load_prog(i: usize, map_fds: &[i32]) -> OwnedFd {
    let mut insns = Vec::new();
    for (r, &fd) in map_fds.iter().enumerate() {
        insns.push(common_insn(0x18, r as u8 + 1, 1, 0, fd)); // BPF_LD_IMM64 rN, pseudo map fd
        insns.push(common_insn(0, 0, 0, 0, 0));
    }
    insns.push(common_insn(0xb7, 0, 0, 0, 0)); // r0 = 0
    insns.push(common_insn(0x95, 0, 0, 0, 0)); // exit
    let lic = std::ffi::CString::new("GPL").unwrap();
    let name = std::ffi::CString::new(format!("benchp{i}")).unwrap();
    // SAFETY: insns, lic and name outlive the call; null opts means defaults.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_RAW_TRACEPOINT,
            name.as_ptr(),
            lic.as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            std::ptr::null_mut(),
        )
    };
    assert!(
        fd >= 0,
        "bpf_prog_load {i}: {}",
        std::io::Error::from_raw_os_error(-fd)
    );
    // SAFETY: fresh fd.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn common_insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> libbpf_sys::bpf_insn {
    let mut i = libbpf_sys::bpf_insn {
        code,
        off,
        imm,
        ..Default::default()
    };
    i.set_dst_reg(dst);
    i.set_src_reg(src);
    i
}

/// Child mode: create `n` maps, say "ready", then obey stdin line by line:
/// `objects P L` loads P raw-tracepoint programs (r0 = 0; exit), each
/// referencing MAPS_PER_PROG of the maps, and attaches the first L of them
/// with BPF_RAW_TRACEPOINT_OPEN to a quiet tracepoint; `drop` closes those
/// programs and links. Each command answers "ready". Exits (closing
/// everything) when stdin closes or the parent dies.
fn hold_objects(n: usize) {
    // SAFETY: prctl with a signal number; the holder dies with its parent.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    raise_nofile(20_000);
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let maps: Vec<MapHandle> = (0..n)
        .map(|i| {
            let ty = if i % 2 == 0 {
                MapType::Array
            } else {
                MapType::Hash
            };
            MapHandle::create(ty, Some(format!("bench{i}")), 4, 8, 1, &opts)
                .unwrap_or_else(|e| panic!("creating map {i}: {e}"))
        })
        .collect();
    println!("ready");
    let mut progs: Vec<OwnedFd> = Vec::new();
    let mut links: Vec<OwnedFd> = Vec::new();
    let stdin = std::io::stdin();
    for line in std::io::BufRead::lines(stdin.lock()) {
        let line = line.unwrap();
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["objects", p, l] => {
                let (p, l): (usize, usize) = (p.parse().unwrap(), l.parse().unwrap());
                assert!(l <= p, "every link attaches one of the programs");
                for i in 0..p {
                    let fds: Vec<i32> = (0..MAPS_PER_PROG.min(n))
                        .map(|j| maps[(i * MAPS_PER_PROG + j) % n].as_fd().as_raw_fd())
                        .collect();
                    progs.push(load_prog(i, &fds));
                }
                for (i, prog) in progs.iter().take(l).enumerate() {
                    let tp = std::ffi::CString::new(QUIET_TRACEPOINTS[i % QUIET_TRACEPOINTS.len()])
                        .unwrap();
                    // SAFETY: tp outlives the call; prog is a loaded program.
                    let fd = unsafe {
                        libbpf_sys::bpf_raw_tracepoint_open(tp.as_ptr(), prog.as_raw_fd())
                    };
                    assert!(
                        fd >= 0,
                        "bpf_raw_tracepoint_open {tp:?}: {}",
                        std::io::Error::from_raw_os_error(-fd)
                    );
                    // SAFETY: fresh fd.
                    links.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            ["drop"] => {
                links.clear();
                progs.clear();
            }
            _ => panic!("object holder: unknown command {line:?}"),
        }
        println!("ready");
    }
}

/// Nearest-rank percentile `p` (0..=100) of `v`.
fn percentile(v: &[Duration], p: usize) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let rank = (v.len() * p).div_ceil(100).max(1);
    v[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[derive(Default)]
struct Scrapes {
    cold: Vec<Duration>,
    warm: Vec<Duration>,
    /// The exporter's CPU time (user + system, all threads) over the warm
    /// scrapes of each start, divided by their number.
    cpu_per_scrape: Vec<Duration>,
    /// Per collector, its `bpfmap_scrape_collector_duration_seconds` of
    /// every warm scrape, ms.
    collectors: std::collections::BTreeMap<String, Vec<f64>>,
    /// The body of the last scrape (through curl: dechunked).
    body: String,
}

/// Start `bin` with `args`, scrape once cold and `n` times warm,
/// keep the body of one more scrape; adds to `into`.
fn scrape_exporter(bin: &str, args: &[&str], n: usize, into: &mut Scrapes) {
    let mut cmd = Command::new(bin);
    // SAFETY: prctl is async-signal-safe; the exporter dies with this
    // process, however it ends.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut exporter = Exporter::spawn(cmd, args);
    exporter.wait_listening(Duration::from_secs(60));
    let port = exporter.port;
    into.cold.push(get(port, "/metrics").0);
    let pid = exporter.child.id();
    let cpu0 = cpu_time(pid);
    for _ in 0..n {
        let (d, raw) = get_raw(port, "/metrics");
        into.warm.push(d);
        for (c, v) in collector_ms(&String::from_utf8_lossy(&raw)) {
            into.collectors.entry(c).or_default().push(v);
        }
    }
    into.cpu_per_scrape
        .push((cpu_time(pid) - cpu0) / n.max(1) as u32);
    into.body = String::from_utf8_lossy(&body(port, false)).into_owned();
    drop(exporter);
}

/// utime + stime of process `pid` (all its threads, exited ones included).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

fn samples(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// `bpfmap_scrape_collector_duration_seconds{collector="X"} V` lines as
/// (X, ms). Lines split by a chunk boundary of the raw response are skipped.
fn collector_ms(text: &str) -> Vec<(String, f64)> {
    samples(text)
        .into_iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("bpfmap_scrape_collector_duration_seconds{")?;
            let c = rest.split("collector=\"").nth(1)?.split('"').next()?;
            let val: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((c.to_string(), val * 1e3))
        })
        .collect()
}

/// Median of each collector's duration over the warm scrapes, slowest first.
fn collector_medians(s: &Scrapes) -> String {
    let mut v: Vec<(&String, f64)> = s
        .collectors
        .iter()
        .map(|(c, d)| {
            let mut d = d.clone();
            d.sort_by(f64::total_cmp);
            (c, d[d.len() / 2])
        })
        .filter(|(_, m)| *m >= 0.05)
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.iter()
        .map(|(c, m)| format!("{c} {m:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Wall time of one `bpftool <args>`, and the number of objects it listed.
fn bpftool(args: &[&str]) -> (Duration, usize) {
    let t = Instant::now();
    let out = Command::new("bpftool")
        .args(args)
        .stdout(Stdio::piped())
        .output()
        .expect("bpftool (./scripts/install-deps.sh installs it)");
    let d = t.elapsed();
    assert!(out.status.success(), "bpftool {args:?} failed");
    let objects = String::from_utf8_lossy(&out.stdout)
        .matches("{\"id\":")
        .count();
    (d, objects)
}

/// Node-wide object counts as the kernel sees them (BPF_*_GET_NEXT_ID).
fn node_counts() -> String {
    let [m, p, l] = counts();
    format!("maps {m}, programs {p}, links {l}")
}

/// Wait (up to 10 s) until the node has at most `progs` programs and
/// `links` links, then 200 ms more: the kernel frees programs, links and
/// the map references they held after the fds close (deferred work), and
/// a scrape meanwhile would see references falling.
fn settle(progs: usize, links: usize) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        let [_, p, l] = counts();
        if p <= progs && l <= links {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
}

/// [maps, programs, links] on the node.
fn counts() -> [usize; 3] {
    let count = |cmd| -> usize {
        let mut next = 0u32;
        let mut n = 0;
        loop {
            let mut id = 0u32;
            // SAFETY: id is a valid out pointer.
            let rc = unsafe {
                match cmd {
                    0 => libbpf_sys::bpf_map_get_next_id(next, &mut id),
                    1 => libbpf_sys::bpf_prog_get_next_id(next, &mut id),
                    _ => libbpf_sys::bpf_link_get_next_id(next, &mut id),
                }
            };
            if rc != 0 {
                return n;
            }
            n += 1;
            next = id;
        }
    };
    [count(0), count(1), count(2)]
}

fn scrape_row(label: &str, node: &str, s: &Scrapes) {
    println!(
        "| {label} | {node} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.0} |",
        ms(percentile(&s.cold, 50)),
        ms(percentile(&s.warm, 50)),
        ms(percentile(&s.warm, 90)),
        ms(percentile(&s.cpu_per_scrape, 50)),
        samples(&s.body).len(),
        s.body.len() as f64 / 1024.0,
    );
}

/// The programs-and-links benchmark (see the module comment), in `rounds`
/// rounds on the same maps. Each round: with the maps alone, the baseline
/// build, then this build; with the programs and links added, this build,
/// the baseline (for reference: it publishes no programs), this build
/// without the links part (for reference: what reading the links costs),
/// and bpftool;
/// then the programs and links are dropped. Scrape times are pooled over
/// the rounds. The holder process owns every object and is killed on the
/// way out, panics included.
fn programs(
    bin: &str,
    baseline: &str,
    n: usize,
    p: usize,
    l: usize,
    scrapes: usize,
    rounds: usize,
) {
    let mut holder = ObjectHolder::start(n);
    let [_, progs_before, links_before] = counts();
    println!("node with the maps alone: {}", node_counts());
    let (mut base_maps, mut cur_maps) = (Scrapes::default(), Scrapes::default());
    let (mut cur_full, mut base_full) = (Scrapes::default(), Scrapes::default());
    let mut cur_no_links = Scrapes::default();
    let (mut maps_t, mut progs_t, mut both_t) = (Vec::new(), Vec::new(), Vec::new());
    let (mut n_maps, mut n_progs) = (0, 0);
    for round in 1..=rounds {
        scrape_exporter(baseline, &[], scrapes, &mut base_maps);
        scrape_exporter(bin, &[], scrapes, &mut cur_maps);
        let t = Instant::now();
        holder.command(&format!("objects {p} {l}"));
        let created = t.elapsed();
        println!(
            "round {round}: created {p} programs ({MAPS_PER_PROG} maps each) and {l} links in {:.0} ms; node: {}",
            ms(created),
            node_counts()
        );
        scrape_exporter(bin, &[], scrapes, &mut cur_full);
        scrape_exporter(baseline, &[], scrapes, &mut base_full);
        scrape_exporter(bin, &["--no-collector.links"], scrapes, &mut cur_no_links);
        for _ in 0..3 {
            let (dm, km) = bpftool(&["map", "show", "--json"]);
            let (dp, kp) = bpftool(&["prog", "show", "--json"]);
            maps_t.push(dm);
            progs_t.push(dp);
            both_t.push(dm + dp);
            (n_maps, n_progs) = (km, kp);
        }
        holder.command("drop");
        settle(progs_before, links_before);
    }
    drop(holder);
    let runs = both_t.len();
    let scrapes = scrapes * rounds;
    println!();
    println!("Scrapes of `/metrics` with default flags unless stated: {rounds} rounds of one cold and {} warm scrapes, each exporter started afresh; cold: median of {rounds}, warm: over all {scrapes}:", scrapes / rounds);
    println!();
    println!("| build | node | cold scrape ms | warm median ms | warm p90 ms | CPU ms per warm scrape (median of the starts) | series | exposition KiB |");
    println!("|---|---|---|---|---|---|---|---|");
    let maps_only = format!("{n} maps");
    let full = format!("{n} maps, {p} programs, {l} links");
    scrape_row("baseline", &maps_only, &base_maps);
    scrape_row("this build", &maps_only, &cur_maps);
    scrape_row("this build", &full, &cur_full);
    scrape_row("baseline (reference)", &full, &base_full);
    scrape_row(
        "this build, --no-collector.links (reference)",
        &full,
        &cur_no_links,
    );

    let cur50 = percentile(&cur_full.warm, 50);
    let cur90 = percentile(&cur_full.warm, 90);
    let b50 = percentile(&base_maps.warm, 50);
    let b90 = percentile(&base_maps.warm, 90);
    let tool = percentile(&both_t, 50);
    let series = samples(&cur_full.body).len();
    println!();
    println!(
        "bpftool (median of {runs}, same objects): map show --json {:.1} ms ({n_maps} maps), prog show --json {:.1} ms ({n_progs} programs), sum {:.1} ms (median of the sums)",
        ms(percentile(&maps_t, 50)),
        ms(percentile(&progs_t, 50)),
        ms(tool)
    );
    println!();
    println!("| target | measured | ratio | verdict |");
    println!("|---|---|---|---|");
    println!(
        "| full scrape ≤ 1.3x the baseline's maps-only scrape | this build {:.1} ms median ({:.1} p90) against {:.1} ms ({:.1} p90) | {:.2}x median, {:.2}x p90 | {} |",
        ms(cur50),
        ms(cur90),
        ms(b50),
        ms(b90),
        ms(cur50) / ms(b50),
        ms(cur90) / ms(b90),
        if ms(cur50) / ms(b50) <= 1.3 { "met" } else { "missed" }
    );
    let per_round = scrapes / rounds;
    let round_ratios: Vec<String> = (0..rounds)
        .map(|r| {
            let part = |v: &[Duration]| percentile(&v[r * per_round..(r + 1) * per_round], 50);
            format!(
                "{:.2}",
                ms(part(&cur_full.warm)) / ms(part(&base_maps.warm))
            )
        })
        .collect();
    let cpu_ratios: Vec<String> = cur_full
        .cpu_per_scrape
        .iter()
        .zip(&base_maps.cpu_per_scrape)
        .map(|(c, b)| {
            if b.is_zero() {
                "-".to_string()
            } else {
                format!("{:.2}", ms(*c) / ms(*b))
            }
        })
        .collect();
    println!(
        "| (the same, per round: median of the round's warm scrapes) | | {} | |",
        round_ratios.join(", ")
    );
    println!(
        "| (the same in CPU time per warm scrape, per round) | this build {:.1} ms against {:.1} ms (medians of the rounds) | {} | |",
        ms(percentile(&cur_full.cpu_per_scrape, 50)),
        ms(percentile(&base_maps.cpu_per_scrape, 50)),
        cpu_ratios.join(", ")
    );
    println!(
        "| ≥ 6x faster than bpftool map show + prog show | {:.1} ms against {:.1} ms | {:.1}x | {} |",
        ms(cur50),
        ms(tool),
        ms(tool) / ms(cur50),
        if ms(tool) / ms(cur50) >= 6.0 { "met" } else { "missed" }
    );
    println!(
        "| ≤ 3,000 series with defaults | {series} series | - | {} |",
        if series <= 3000 { "met" } else { "missed" }
    );
    println!();
    let prefixes = [
        "bpfmap_program",
        "bpfmap_map_roots",
        "bpfmap_map_",
        "bpfmap_",
    ];
    let mut by = vec![0usize; prefixes.len()];
    for s in samples(&cur_full.body) {
        if let Some(i) = prefixes.iter().position(|p| s.starts_with(p)) {
            by[i] += 1;
        }
    }
    println!(
        "Series of this build with programs and links, by prefix: {}",
        prefixes
            .iter()
            .zip(&by)
            .map(|(p, k)| format!("{p}* {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!("Median per collector over the warm scrapes, ms (`bpfmap_scrape_collector_duration_seconds`, those ≥ 0.05 ms):");
    println!();
    for (label, s) in [
        ("baseline, maps alone", &base_maps),
        ("this build, maps alone", &cur_maps),
        ("this build, maps, programs, links", &cur_full),
        ("baseline, maps, programs, links", &base_full),
        (
            "this build, --no-collector.links, maps, programs, links",
            &cur_no_links,
        ),
    ] {
        println!("- {label}: {}", collector_medians(s));
    }
}
