//! Basic auth and web-config reloads under abuse, against the real binary
//! on loopback (root): truncated, empty, partial and invalid rewrites keep
//! authentication; a reload that removes it is refused; a flood of wrong
//! passwords does not stop a good credential; unknown users cost a bcrypt
//! verification at the configured cost; SIGTERM does not wait behind the
//! hashing queue. Every loop is bounded in count and time.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bpfmap_exporter::web::auth::{Auth, Verdict};
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_bpfmap-exporter");
const LEAN: &[&str] = &["--no-collector.lifecycle"];

fn start(cfg: &Path) -> Exporter {
    let arg = format!("--web.config.file={}", cfg.display());
    Exporter::start(BIN, &[LEAN, &[arg.as_str()]].concat())
}

fn basic(user: &str, pass: &str) -> String {
    let s = format!("{user}:{pass}");
    format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s.as_bytes())
    )
}

/// One GET with `Connection: close`: (status, body), None when nothing
/// answered within `timeout`.
fn get(port: u16, path: &str, auth: Option<&str>, timeout: Duration) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Some((code, body.to_string()))
}

fn code(port: u16, auth: Option<&str>) -> u16 {
    get(port, "/healthz", auth, Duration::from_secs(30))
        .map(|r| r.0)
        .unwrap_or(0)
}

/// The value of the first sample line that starts with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Threads of process `pid` (/proc/PID/status), 0 when unreadable.
fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Rewrite in place, as an editor or a config sync does: truncate, then
/// write `text` in `pieces`, pausing `gap` after the truncation and each piece.
fn rewrite_in_pieces(path: &Path, text: &str, pieces: usize, gap: Duration) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    std::thread::sleep(gap);
    let b = text.as_bytes();
    let step = b.len().div_ceil(pieces.max(1)).max(1);
    for chunk in b.chunks(step) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        std::thread::sleep(gap);
    }
}

fn auth_config(hash: &str) -> String {
    format!(
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\nbasic_auth_users:\n  alice: '{hash}'\n"
    )
}

#[test]
fn truncated_empty_partial_or_invalid_rewrites_keep_auth() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("web.yml");
    let good = auth_config(&bcrypt::hash("pw", 4).unwrap());
    std::fs::write(&cfg, &good).unwrap();
    let s = start(&cfg);
    let ok = basic("alice", "pw");
    assert_eq!(code(s.port, None), 401);
    assert_eq!(code(s.port, Some(&ok)), 200);

    // Each bad state stays on disk long past the settle time; requests keep
    // checking it.
    let bad = [
        String::new(),
        "basic_auth_users:\n".to_string(),
        good[..good.len() - 20].to_string(),
        good[..good.find("alice").unwrap()].to_string(),
        "basic_auth_users: [\n".to_string(),
        "\n\n   \n".to_string(),
    ];
    for text in &bad {
        std::fs::write(&cfg, text).unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(700) {
            assert_eq!(code(s.port, None), 401, "unauthenticated after {text:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(code(s.port, Some(&ok)), 200, "after {text:?}");
    }
    // One WARN per bad state, however many requests saw it.
    let warns = s
        .stderr()
        .matches("keeping the configuration in force")
        .count();
    assert_eq!(warns, bad.len(), "{}", s.stderr());

    // Non-atomic rewrites of the good file, each through an empty and a
    // partial state, while a client without credentials keeps asking.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let asked = Arc::new(AtomicU64::new(0));
    let hammer = {
        let (stop, served, asked, port) = (stop.clone(), served.clone(), asked.clone(), s.port);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let c = code(port, None);
                asked.fetch_add(1, Ordering::Relaxed);
                if c == 200 {
                    served.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    for _ in 0..40 {
        rewrite_in_pieces(&cfg, &good, 3, Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    hammer.join().unwrap();
    assert!(asked.load(Ordering::Relaxed) > 100, "the client barely ran");
    assert_eq!(
        served.load(Ordering::Relaxed),
        0,
        "of {} unauthenticated requests during rewrites",
        asked.load(Ordering::Relaxed)
    );
    // The good file settles and applies; the metrics say what happened.
    std::thread::sleep(Duration::from_millis(400));
    let (c, body) = get(s.port, "/metrics", Some(&ok), Duration::from_secs(60)).unwrap();
    assert_eq!(c, 200);
    // Two of each in the first part; a rewrite whose writer stalled past
    // the settle time may add a refused state, never an applied weaker one.
    for result in ["empty", "invalid", "restart_required"] {
        let series = format!("bpfmap_web_config_reloads_total{{result=\"{result}\"}}");
        assert!(sample(&body, &series) >= Some(2.0), "{result}: {body}");
    }
    assert!(sample(&body, "bpfmap_web_config_reloads_total{result=\"applied\"}") >= Some(1.0));
    assert_eq!(
        sample(&body, "bpfmap_web_config_last_reload_successful"),
        Some(1.0)
    );
}

#[test]
fn a_reload_that_removes_auth_or_tls_is_refused() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("web.yml");
    std::fs::write(&cfg, auth_config(&bcrypt::hash("pw", 4).unwrap())).unwrap();
    let s = start(&cfg);
    let ok = basic("alice", "pw");
    assert_eq!(code(s.port, None), 401);
    // A valid file without users: authentication would be gone.
    let tmp = dir.path().join(".web.yml.tmp");
    std::fs::write(
        &tmp,
        "http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n",
    )
    .unwrap();
    std::fs::rename(&tmp, &cfg).unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(800) {
        assert_eq!(code(s.port, None), 401);
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = s.stderr();
    assert_eq!(
        log.matches("needs a restart").count(),
        1,
        "one WARN naming the restart: {log}"
    );
    assert!(log.contains("basic_auth_users"), "{log}");
    let (c, body) = get(s.port, "/metrics", Some(&ok), Duration::from_secs(60)).unwrap();
    assert_eq!(c, 200);
    assert_eq!(
        sample(
            &body,
            "bpfmap_web_config_reloads_total{result=\"restart_required\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "bpfmap_web_config_last_reload_successful"),
        Some(0.0)
    );
}

#[test]
fn a_flood_of_wrong_passwords_does_not_stop_a_good_credential() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("web.yml");
    std::fs::write(&cfg, auth_config(&bcrypt::hash("pw", 10).unwrap())).unwrap();
    let s = start(&cfg);
    let ok = basic("alice", "pw");
    assert_eq!(code(s.port, Some(&ok)), 200);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood: Vec<_> = (0..200)
        .map(|i| {
            let (stop, sent, port) = (stop.clone(), sent.clone(), s.port);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let a = basic("alice", &format!("wrong-{i}-{n}"));
                    let _ = get(port, "/metrics", Some(&a), Duration::from_secs(30));
                    n += 1;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let mut codes = Vec::new();
    let mut max_threads = 0;
    for _ in 0..12 {
        let r = get(s.port, "/metrics", Some(&ok), Duration::from_secs(10));
        codes.push(r.map(|r| r.0).unwrap_or(0));
        max_threads = max_threads.max(threads(s.child.id()));
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    for t in flood {
        t.join().unwrap();
    }
    assert!(sent.load(Ordering::Relaxed) > 200, "the flood barely ran");
    assert!(codes.iter().all(|c| *c == 200), "good scrapes: {codes:?}");
    // Hashing has a fixed pool: no thread per waiting check.
    assert!(
        (1..=32).contains(&max_threads),
        "{max_threads} exporter threads under the flood"
    );
    let (_, body) = get(s.port, "/metrics", Some(&ok), Duration::from_secs(60)).unwrap();
    assert!(
        sample(&body, "bpfmap_web_auth_checks_total{result=\"busy\"}") > Some(0.0),
        "the flood was not bounded: {body}"
    );
}

#[tokio::test]
async fn an_unknown_user_costs_a_verification_at_the_configured_cost() {
    for cost in [5u32, 7] {
        let hash = bcrypt::hash("pw", cost).unwrap();
        let a = Auth::new([("alice".to_string(), hash)].into());
        assert_eq!(&a.dummy_hash()[4..6], format!("{cost:02}"), "cost {cost}");
        let before = a.verifications();
        assert_eq!(
            a.check(Some(basic("mallory", "pw").as_bytes())).await,
            Verdict::Denied
        );
        assert_eq!(a.verifications(), before + 1, "cost {cost}");
        // A known user with a wrong password costs the same one verification.
        assert_eq!(
            a.check(Some(basic("alice", "nope").as_bytes())).await,
            Verdict::Denied
        );
        assert_eq!(a.verifications(), before + 2, "cost {cost}");
    }
}

#[test]
fn sigterm_does_not_wait_behind_the_hashing_queue() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("web.yml");
    // The highest cost accepted, about 1 s per verification here: 40
    // queued would take over half a minute.
    std::fs::write(&cfg, auth_config(&bcrypt::hash("pw", 14).unwrap())).unwrap();
    let mut s = start(&cfg);
    // Serving (the signal handler is in place once requests are answered).
    s.wait_until("serving", Duration::from_secs(60), |port| {
        code(port, None) == 401
    });
    let port = s.port;
    let clients: Vec<_> = (0..40)
        .map(|i| {
            std::thread::spawn(move || {
                let a = basic("alice", &format!("wrong-{i}"));
                let _ = get(port, "/healthz", Some(&a), Duration::from_secs(20));
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    assert_eq!(unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) }, 0);
    let st = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no exit 10 s after SIGTERM; stderr:\n{}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(st.success(), "{st}: {}", s.stderr());
    for c in clients {
        c.join().unwrap();
    }
}
