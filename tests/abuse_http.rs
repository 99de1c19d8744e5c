//! The transport under hostile and heavy load, with the real binary on
//! loopback, as root: concurrent API listings bounded (503 with
//! Retry-After past the gate, memory not growing with the clients), clients
//! that pipeline and never read losing their connections so a fresh client
//! is served, the JSON API refused to network peers by default, no memory
//! address in the API or explain's text, and the small parsing cases (ids
//! with a sign, a trailing slash, long collect[] names, pids that do not
//! exist). Each case is bounded in time; the load figures are in
//! scripts/bench-abuse.sh.
mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use libbpf_rs::MapType;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_bpfmap-exporter");
/// Collectors these tests do not need (faster start).
const LEAN: &[&str] = &["--no-collector.lifecycle"];

fn start(extra: &[&str]) -> Exporter {
    let mut s = Exporter::spawn(Command::new(BIN), &[LEAN, extra].concat());
    s.wait_until("healthy", Duration::from_secs(90), |port| {
        http_get(port, "/healthz").is_some_and(|(c, _)| c == 200)
    });
    s
}

/// One GET with `Connection: close` from `from` (None: the kernel's
/// choice) to `to:port`, read to the end, chunked bodies decoded.
fn get_via(from: Option<IpAddr>, to: IpAddr, port: u16, path: &str) -> std::io::Result<Resp> {
    let s = match from {
        None => TcpStream::connect((to, port))?,
        Some(ip) => {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address((ip, 0).into()),
                socket2::Type::STREAM,
                None,
            )?;
            sock.bind(&std::net::SocketAddr::from((ip, 0)).into())?;
            sock.connect(&std::net::SocketAddr::from((to, port)).into())?;
            sock.into()
        }
    };
    let mut s = s;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    read_response(s)
}

fn get(port: u16, path: &str) -> Resp {
    get_via(None, [127, 0, 0, 1].into(), port, path).unwrap()
}

/// Raise this process's soft fd limit to at least `n` (the hard limit
/// stays, so children may raise theirs as far).
fn raise_nofile(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur = lim.rlim_cur.max(n.min(lim.rlim_max));
    lim.rlim_max = lim.rlim_max.max(lim.rlim_cur);
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

fn vm_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// Many clients listing at once: each is answered 200 (streamed, whole
/// JSON) or 503 with Retry-After naming the bound; the exporter's memory
/// does not grow with the number of clients (each used to build its whole
/// document in memory: about 5 MiB each here).
#[test]
fn concurrent_listings_are_bounded_by_the_gate_and_in_memory() {
    require_root();
    raise_nofile(8192);
    let maps: Vec<_> = (0..2000)
        .map(|i| common::map(MapType::Array, &format!("abuse_{i}"), 4, 8, 4, 0))
        .collect();
    let s = start(&["--web.max-api-requests=1"]);
    let port = s.port;
    // Warm: one listing and one scrape, then the baseline peak.
    assert_eq!(get(port, "/api/v1/maps?limit=1000").code, 200);
    assert_eq!(get(port, "/metrics").code, 200);
    let before = vm_kib(s.child.id(), "VmHWM:");
    let n = 60;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                get(port, "/api/v1/maps?limit=1000")
            })
        })
        .collect();
    let answers: Vec<Resp> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let after = vm_kib(s.child.id(), "VmHWM:");
    let (mut ok, mut busy) = (0, 0);
    for r in &answers {
        match r.code {
            200 => {
                let v = r.json();
                assert_eq!(v["maps"].as_array().unwrap().len(), 1000);
                assert_eq!(v["truncated"], json!(true));
                ok += 1;
            }
            503 => {
                assert_eq!(r.header("retry-after").as_deref(), Some("2"), "{r:?}");
                let e = r.json()["error"].as_str().unwrap().to_string();
                assert!(e.contains("--web.max-api-requests=1"), "{e}");
                busy += 1;
            }
            c => panic!("unexpected {c}: {}", r.text()),
        }
    }
    // One slot and 16 waiting places: most of 60 simultaneous requests are
    // turned away at once, and every waiting one is served.
    assert!(ok >= 1 && busy >= 1, "{ok} served, {busy} refused");
    assert!(ok <= 1 + 16 + 16, "{ok} served, {busy} refused");
    let grew = after.saturating_sub(before);
    assert!(
        grew < 48 * 1024,
        "peak RSS grew {grew} KiB under {n} listings ({before} -> {after} KiB)"
    );
    drop(maps);
}

/// Clients that pipeline requests and never read hold every connection
/// slot; the write timeout takes their connections, and a fresh client is
/// served.
#[test]
fn clients_that_never_read_lose_their_connections() {
    require_root();
    let s = start(&["--web.max-connections=8", "--web.write-timeout=2s"]);
    let port = s.port;
    let req =
        "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
    let mut held = Vec::new();
    for _ in 0..10 {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        // A small receive window fills quickly.
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
            .unwrap();
        let c: TcpStream = sock.into();
        c.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
        let _ = (&c).write_all(req.as_bytes());
        held.push(c);
    }
    // The held connections stop reading; a fresh client must get in.
    let t = Instant::now();
    let r = get_via(None, [127, 0, 0, 1].into(), port, "/healthz");
    let waited = t.elapsed();
    let r = r.unwrap_or_else(|e| panic!("fresh client not served after {waited:?}: {e}"));
    assert_eq!(r.code, 200);
    eprintln!("fresh client served after {waited:?}");
    assert!(
        waited < Duration::from_secs(45),
        "fresh client served only after {waited:?}"
    );
    // Every non-reader's connection was closed by the exporter once its
    // writes stalled (those accepted late too): after a few write timeouts,
    // reading one gives what was already sent, then EOF or a reset, at
    // once. A connection still open would be answered request after
    // request (4,000 are queued on each).
    std::thread::sleep(Duration::from_secs(8));
    for mut c in held {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sink = [0u8; 1 << 16];
        let t = Instant::now();
        loop {
            match c.read(&mut sink) {
                Ok(0) => break,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("a held connection is still open: {e}"),
                Ok(_) => {}
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "a held connection is still being served"
            );
        }
    }
    drop(s);
}

/// A non-loopback address of this host (the test connects from it, so the
/// exporter sees a network peer).
fn network_address() -> IpAddr {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip addr");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .expect("a global IPv4 address on this host (the test needs a network peer)")
}

/// The JSON API is loopback-only unless auth, TLS or --web.expose-api; the
/// telemetry path is served to everyone.
#[test]
fn the_api_is_refused_to_network_peers_by_default() {
    require_root();
    let ip = network_address();
    let port = free_port();
    let listen = format!("--web.listen-address={ip}:{port}");
    for expose in [false, true] {
        let mut args = vec![listen.as_str()];
        if expose {
            args.push("--web.expose-api");
        }
        let s = start(&args);
        let r = get_via(Some(ip), ip, port, "/api/v1/maps?limit=1").unwrap();
        if expose {
            assert_eq!(r.code, 200, "{}", r.text());
            assert_eq!(r.json()["schema_version"], json!(4));
        } else {
            assert_eq!(r.code, 403, "{}", r.text());
            let t = r.text();
            assert!(
                t.contains("--web.expose-api") && t.contains("--web.config.file"),
                "{t}"
            );
            for path in ["/api/v1/programs", "/api/v1/links"] {
                assert_eq!(get_via(Some(ip), ip, port, path).unwrap().code, 403);
            }
        }
        assert_eq!(get_via(Some(ip), ip, port, "/metrics").unwrap().code, 200);
        // Loopback peers keep the API (explain --from, port-forward).
        let r = get(s.port, "/api/v1/maps?limit=1");
        assert_eq!(r.code, 200, "{}", r.text());
    }
}

/// An mmap holder is reported by its size and fd, never its address, in
/// the API and in explain's text.
#[test]
fn no_memory_address_is_published() {
    require_root();
    let m = common::map(
        MapType::Array,
        "abuse_mmap",
        4,
        4096,
        4,
        libbpf_sys::BPF_F_MMAPABLE,
    );
    let id = id_of(&m);
    let len = 4 * 4096;
    // SAFETY: mapping a valid BPF map fd shared, read-write; unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            m.as_fd().as_raw_fd(),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    let hex = format!("{:x}", addr as usize);
    let s = start(&[]);
    let r = get(s.port, &format!("/api/v1/maps/{id}"));
    assert_eq!(r.code, 200, "{}", r.text());
    let mm = &r.json()["maps"][0]["holders"]["mmap"];
    let me = std::process::id();
    assert_eq!(mm[0]["pid"], json!(me), "{mm}");
    assert_eq!(mm[0]["size_bytes"], json!(len), "{mm}");
    assert_eq!(mm[0]["fd"], json!(m.as_fd().as_raw_fd()), "{mm}");
    assert!(
        mm[0].get("start").is_none() && mm[0].get("end").is_none(),
        "{mm}"
    );
    assert!(!r.text().contains(&hex), "address {hex} published");
    let out = Command::new(BIN)
        .args(["explain", "--id", &id.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("{len} bytes")), "{text}");
    assert!(
        !text.contains(&hex),
        "address {hex} in explain's text:\n{text}"
    );
    // SAFETY: unmapping what was mapped above.
    unsafe { libc::munmap(addr, len) };
}

/// The small parsing cases: signed ids, a trailing slash, long collect[]
/// names, and pids that do not exist.
#[test]
fn paths_and_parameters_are_read_strictly() {
    require_root();
    let s = start(&[]);
    let port = s.port;
    for path in ["/api/v1/maps/+1", "/api/v1/programs/+1", "/api/v1/links/+1"] {
        let r = get(port, path);
        assert_eq!(r.code, 400, "{path}: {}", r.text());
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(
            e.contains("\"+1\"") && e.contains("decimal digits only"),
            "{e}"
        );
    }
    for path in ["/api/v1/maps/", "/api/v1/programs/", "/api/v1/links/"] {
        let r = get(port, path);
        assert_eq!(r.code, 200, "{path}: {}", r.text());
        assert!(r.json()["total"].is_u64(), "{path}");
    }
    let long = "x".repeat(10_000);
    let r = get(port, &format!("/metrics?collect[]={long}"));
    assert_eq!(r.code, 400);
    assert!(r.body.len() < 1024, "{} bytes echoed", r.body.len());
    assert!(
        r.text().contains(&format!("{}...", "x".repeat(64))),
        "{}",
        r.text()
    );
    // A pid that holds nothing and one that does not exist: one answer.
    let mut idle = Command::new("sleep").arg("60").spawn().unwrap();
    let alive = get(port, &format!("/api/v1/maps?pid={}", idle.id()));
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let missing = get(port, &format!("/api/v1/maps?pid={pid_max}"));
    let _ = idle.kill();
    let _ = idle.wait();
    assert_eq!(alive.code, missing.code);
    assert_eq!(alive.code, 200, "{}", alive.text());
    assert_eq!(alive.json(), missing.json());
}
