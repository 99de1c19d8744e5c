//! Load and abuse benchmark of the transport (`./scripts/bench-abuse.sh`,
//! root): for each exporter binary (this build, then a baseline build) over
//! the same N live maps, in one run:
//!
//! - memory: the exporter's peak RSS (VmHWM) of its start, first scrape and
//!   first listing; then, the peak reset (`clear_refs` 5), its peak while 50
//!   clients list `/api/v1/maps?limit=1000` and 50 scrape `/metrics`, all at
//!   once, each reading its whole answer; with the answers' status counts;
//! - slow readers: 520 connections each pipeline 300 `GET /metrics` and never
//!   read; then the time until a fresh client's `GET /metrics` is answered
//!   (capped at [`FRESH_CAP`]).
//!
//! Usage: bench_abuse <exporter> <baseline|-> <n> [<n> ...]
//! Maps are held by `bench_census --hold` children (built by the script).
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/holders.rs"]
mod holders;
use common::Exporter;
use holders::{status_kib, Holders};

const LISTINGS: usize = 50;
const SCRAPES: usize = 50;
const SLOW: usize = 520;
const PIPELINED: usize = 300;
/// How long the fresh client waits at most.
const FRESH_CAP: Duration = Duration::from_secs(60);

fn raise_nofile(n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n.max(8192),
    };
    // SAFETY: setrlimit with a valid struct.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(rc, 0, "raising RLIMIT_NOFILE to {n}");
}

/// One GET read to the end: (status, bytes), status 0 when it failed.
fn get(port: u16, path: &str, timeout: Duration) -> (u16, usize) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, 0);
    };
    let _ = s.set_read_timeout(Some(timeout));
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return (0, 0);
    }
    let mut buf = Vec::new();
    if s.read_to_end(&mut buf).is_err() {
        return (0, buf.len());
    }
    let code = std::str::from_utf8(buf.get(9..12).unwrap_or(b"000"))
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, buf.len())
}

/// Started with the flags in `$BENCH_EXPORTER_ARGS` (whitespace-separated;
/// both builds get them).
fn start(bin: &str) -> Exporter {
    let extra = std::env::var("BENCH_EXPORTER_ARGS").unwrap_or_default();
    let extra: Vec<&str> = extra.split_whitespace().collect();
    let mut e = Exporter::start(bin, &extra);
    e.wait_until("healthy", Duration::from_secs(300), |port| {
        common::http_get(port, "/healthz").is_some_and(|(c, _)| c == 200)
    });
    // One scrape and one listing first: the peak measured is the load's.
    assert_eq!(get(e.port, "/metrics", Duration::from_secs(300)).0, 200);
    assert_eq!(
        get(e.port, "/api/v1/maps?limit=1000", Duration::from_secs(300)).0,
        200
    );
    e
}

struct Memory {
    /// Peak RSS of the start, the first scrapes and a listing.
    start_kib: u64,
    /// Peak RSS under the load alone (the peak is reset before it).
    peak_kib: u64,
    codes: std::collections::BTreeMap<u16, usize>,
    secs: f64,
}

fn memory(bin: &str) -> Memory {
    let e = start(bin);
    let pid = e.child.id();
    let start_kib = status_kib(pid, "VmHWM:");
    // Reset the peak: what follows is the load's.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting VmHWM");
    let barrier = Arc::new(Barrier::new(LISTINGS + SCRAPES));
    let t = Instant::now();
    let threads: Vec<_> = (0..LISTINGS + SCRAPES)
        .map(|i| {
            let (port, b) = (e.port, barrier.clone());
            std::thread::spawn(move || {
                b.wait();
                let path = if i < LISTINGS {
                    "/api/v1/maps?limit=1000"
                } else {
                    "/metrics"
                };
                get(port, path, Duration::from_secs(300)).0
            })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::new();
    for t in threads {
        *codes.entry(t.join().unwrap()).or_insert(0) += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    let peak_kib = status_kib(pid, "VmHWM:");
    Memory {
        start_kib,
        peak_kib,
        codes,
        secs,
    }
}

/// Seconds until a fresh client was answered while SLOW connections
/// pipeline and never read (None: not within FRESH_CAP).
fn slow_readers(bin: &str) -> (Option<f64>, usize) {
    let e = start(bin);
    let req = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(PIPELINED);
    let req = Arc::new(req);
    let conns: Vec<_> = (0..SLOW)
        .map(|_| {
            let (port, req) = (e.port, req.clone());
            std::thread::spawn(move || {
                let s = TcpStream::connect_timeout(
                    &([127, 0, 0, 1], port).into(),
                    Duration::from_secs(5),
                )
                .ok()?;
                let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                let _ = (&s).write_all(req.as_bytes());
                Some(s)
            })
        })
        .collect();
    let held: Vec<TcpStream> = conns
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .collect();
    let opened = held.len();
    let t = Instant::now();
    let (code, _) = get(e.port, "/metrics", FRESH_CAP);
    let d = t.elapsed();
    drop(held);
    (
        (code == 200 && d < FRESH_CAP).then_some(d.as_secs_f64()),
        opened,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(
        args.len() >= 4,
        "usage: bench_abuse <exporter> <baseline> <n> [<n> ...]"
    );
    // 520 connections and their threads; the holders raise their own limit
    // up to the hard one, which stays as it is.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a valid struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    raise_nofile(lim.rlim_max.min(1 << 20));
    let bench_census = std::env::current_exe()
        .unwrap()
        .with_file_name("bench_census");
    let bench_census = bench_census.to_str().unwrap();
    // A baseline of "-" measures this build alone.
    let bins: Vec<(&str, &String)> = [("this build", &args[1]), ("baseline", &args[2])]
        .into_iter()
        .filter(|(_, b)| b.as_str() != "-")
        .collect();
    println!("| maps | build | peak RSS of the start and first scrapes | peak RSS, {LISTINGS} listings + {SCRAPES} scrapes at once | answers | load time | fresh client with {SLOW} pipelining non-readers ({SLOW} opened) |");
    println!("|---|---|---|---|---|---|---|");
    for n in &args[3..] {
        let n: usize = n.parse().expect("a map count");
        let mut holders = Holders::new(bench_census);
        holders.grow_to(n);
        for &(name, bin) in &bins {
            let m = memory(bin);
            let (fresh, opened) = slow_readers(bin);
            let codes: Vec<String> = m.codes.iter().map(|(c, k)| format!("{k}x{c}")).collect();
            println!(
                "| {n} | {name} | {:.1} MiB | {:.1} MiB | {} | {:.1} s | {} ({opened}) |",
                m.start_kib as f64 / 1024.0,
                m.peak_kib as f64 / 1024.0,
                codes.join(" "),
                m.secs,
                match fresh {
                    Some(s) => format!("{s:.1} s"),
                    None => format!("not within {} s", FRESH_CAP.as_secs()),
                }
            );
        }
    }
}
