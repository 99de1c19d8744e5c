//! Hostile answers and scarce resources: `explain --from` against servers
//! that send too much, the wrong document or none of ours, and against a
//! real exporter behind a private CA with client certificates and basic
//! auth; start-up under a low RLIMIT_NOFILE and with a BTF path that is a
//! directory or a FIFO; `/healthz` and the log while the census fails.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_bpfmap-exporter");

/// A child's exit code, stderr and peak RSS (KiB), killed after `limit`.
struct Ran {
    code: Option<i32>,
    stderr: String,
    stdout: String,
    max_rss_kib: i64,
    took: Duration,
}

fn run_limited(mut cmd: Command, limit: Duration) -> Ran {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let t = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        // SAFETY: pid is our child; status and ru are live out-parameters.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        if t.elapsed() > limit && !killed {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::mem::forget(child);
    Ran {
        code: (!killed && libc::WIFEXITED(status)).then(|| libc::WEXITSTATUS(status)),
        stderr: std::fs::read_to_string(err.path()).unwrap(),
        stdout: std::fs::read_to_string(out.path()).unwrap(),
        max_rss_kib: ru.ru_maxrss,
        took: t.elapsed(),
    }
}

fn explain(args: &[&str]) -> Ran {
    let mut c = Command::new(BIN);
    c.arg("explain").args(args);
    run_limited(c, Duration::from_secs(60))
}

/// A loopback server answering every request with `answer` (status line,
/// headers and body written by the closure), one thread per connection.
fn serve(answer: fn(&mut TcpStream)) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                answer(&mut s);
            });
        }
    });
    port
}

fn json_answer(s: &mut TcpStream, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[test]
fn explain_from_refuses_huge_foreign_and_other_version_answers_with_bounded_memory() {
    // 300 MB of valid-looking JSON, no Content-Length: read until the cap.
    let huge = serve(|s| {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"schema_version\":4,\"maps\":[",
        );
        let item =
            br#"{"id":1,"name":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"#;
        let chunk: Vec<u8> = item
            .iter()
            .copied()
            .cycle()
            .take(item.len() * 10_000)
            .collect();
        for _ in 0..(300 << 20) / chunk.len() {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    // The same, declared up front.
    let declared = serve(|s| {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 314572800\r\n\r\n{",
        );
    });
    let empty = serve(|s| json_answer(s, "{}"));
    let newer = serve(|s| json_answer(s, r#"{"schema_version":99,"total":0,"maps":[]}"#));
    let html = serve(|s| json_answer(s, "<html>It works!</html>"));
    let no_list = serve(|s| json_answer(s, r#"{"schema_version":4,"total":1}"#));
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    for (port, sel, want) in [
        (huge, "--pid=1", "--max-response-size=16MiB"),
        (declared, "--id=1", "--max-response-size=16MiB"),
        (empty, "--id=1", "no schema_version"),
        (empty, "--pid=1", "no schema_version"),
        (newer, "--id=1", "schema_version 99, newer than the 4"),
        (html, "--id=1", "is --from the address of a bpfmap-exporter"),
        (no_list, "--id=1", "no maps list"),
    ] {
        let (k, v) = sel.split_once('=').unwrap();
        let r = explain(&["--from", &url(port), k, v]);
        assert_eq!(r.code, Some(2), "{sel} against {want:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(want),
            "{sel}: want {want:?} in {}",
            r.stderr
        );
        assert!(!r.stdout.contains("holds no map"), "{}", r.stdout);
        // 16 MiB cap: the body buffer and its parse stay far from the
        // 4 GB a 250 MB answer used to take.
        assert!(
            r.max_rss_kib < 160 << 10,
            "{sel} {want:?}: peak RSS {} KiB",
            r.max_rss_kib
        );
    }
    // A larger cap is a flag away, and still a cap.
    let r = explain(&[
        "--from",
        &url(huge),
        "--pid",
        "1",
        "--max-response-size",
        "32MiB",
    ]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("--max-response-size=32MiB"),
        "{}",
        r.stderr
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "abuse test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_pem = p.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::from_params(&p, &ca_key);
    let leaf = |sans: &[&str], client: bool| {
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let k = rcgen::KeyPair::generate().unwrap();
        (p.signed_by(&k, &issuer).unwrap().pem(), k.serialize_pem())
    };
    Pki {
        server: leaf(&["127.0.0.1", "localhost"], false),
        client: leaf(&["explain"], true),
        ca_pem,
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn explain_from_reaches_an_exporter_behind_a_private_ca_with_client_certs_and_encoded_password() {
    require_root();
    ensure_bpffs();
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "server.crt", &pki.server.0);
    write(d, "server.key", &pki.server.1);
    write(d, "ca.crt", &pki.ca_pem);
    write(d, "client.crt", &pki.client.0);
    write(d, "client.key", &pki.client.1);
    // Reserved characters a URL must percent-encode.
    let password = "p@ss:w/rd%#?";
    let hash = bcrypt::hash(password, 4).unwrap();
    write(
        d,
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\nbasic_auth_users:\n  alice: '{hash}'\n"
        ),
    );
    let m = map(libbpf_rs::MapType::Hash, "abuse_tls", 4, 8, 16, 0);
    let id = id_of(&m);
    let mut s = Exporter::start(
        BIN,
        &[
            "--no-collector.lifecycle",
            &format!("--web.config.file={}", d.join("web.yml").display()),
        ],
    );
    let p = |n: &str| d.join(n).display().to_string();
    let encoded = "p%40ss%3Aw%2Frd%25%23%3F";
    let url = format!("https://alice:{encoded}@127.0.0.1:{}", s.port);
    let (ca, cert, key) = (p("ca.crt"), p("client.crt"), p("client.key"));
    let full: Vec<&str> = vec![
        "--from",
        &url,
        "--id",
        "",
        "--ca-file",
        &ca,
        "--cert-file",
        &cert,
        "--key-file",
        &key,
        "--output",
        "json",
    ];
    let id_s = id.to_string();
    let with = |drop_from: &[&str], url: &str| -> Ran {
        let mut a = full.clone();
        a[1] = url;
        a[3] = &id_s;
        let mut out = Vec::new();
        let mut i = 0;
        while i < a.len() {
            if drop_from.contains(&a[i]) {
                i += 2;
                continue;
            }
            out.push(a[i]);
            i += 1;
        }
        explain(&out)
    };
    // Served once the BPF objects are loaded.
    s.wait_until("answering explain", Duration::from_secs(60), |_| {
        with(&[], &url).code == Some(0)
    });
    let r = with(&[], &url);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["maps"][0]["id"], serde_json::json!(id), "{doc}");
    assert_eq!(doc["maps"][0]["name"], "abuse_tls");

    // Without the CA file, the private CA is not trusted: the error says
    // which flag fixes it.
    let r = with(&["--ca-file"], &url);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--ca-file"), "{}", r.stderr);
    // Without a client certificate the exporter refuses the handshake.
    let r = with(&["--cert-file", "--key-file"], &url);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--cert-file"), "{}", r.stderr);
    // The password sent literally (not decoded) is refused with the hint.
    let literal = format!("https://alice:{}@127.0.0.1:{}", "p%2540ss", s.port);
    let r = with(&[], &literal);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("401"), "{}", r.stderr);
    // A key file that holds no key names the file.
    let r = {
        let mut a = full.clone();
        a[3] = &id_s;
        a[9] = &ca;
        explain(&a)
    };
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--key-file"), "{}", r.stderr);
    drop(m);
}

#[test]
fn a_low_rlimit_nofile_is_a_clear_error_and_the_minimum_serves() {
    require_root();
    ensure_bpffs();
    for n in [10, 40, 100] {
        let mut c = Command::new(BIN);
        c.arg(format!("--web.listen-address=127.0.0.1:{}", free_port()));
        with_nofile(n, &mut c);
        let r = run_limited(c, Duration::from_secs(60));
        assert_eq!(r.code, Some(2), "nofile {n}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        assert!(
            r.stderr.contains(&format!("RLIMIT_NOFILE is {n}")) && r.stderr.contains("ulimit -n"),
            "nofile {n}: {}",
            r.stderr
        );
    }
    // At the minimum every collector loads, scrapes and answers /healthz.
    let mut c = Command::new(BIN);
    with_nofile(128, &mut c);
    let mut s = Exporter::spawn(c, &[]);
    s.wait_until("healthy", Duration::from_secs(60), |port| {
        http_get(port, "/healthz").is_some_and(|(c, _)| c == 200)
    });
    let (code, body) = http_get(s.port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains("bpfmap_scrape_collector_success{collector=\"maps\"} 1"),
        "{}",
        s.stderr()
    );
    assert!(!s.stderr().contains("collector failed"), "{}", s.stderr());
}

#[test]
fn btf_path_directories_and_fifos_are_refused_before_opening() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("btf.fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (path, want) in [
        (dir.path().to_path_buf(), "a directory, not a regular file"),
        (fifo, "a FIFO, not a regular file"),
    ] {
        for args in [&["--check"][..], &["explain", "--id", "1"][..]] {
            let mut c = Command::new(BIN);
            c.arg(format!("--btf.path={}", path.display())).args(args);
            // A FIFO used to block start-up for ever: 30 s is "never".
            let r = run_limited(c, Duration::from_secs(30));
            assert_eq!(r.code, Some(2), "{args:?} {}: {}", path.display(), r.stderr);
            assert!(r.stderr.contains(want), "{}", r.stderr);
            assert!(r.stderr.contains("--btf.path"), "{}", r.stderr);
            assert!(r.took < Duration::from_secs(30));
        }
    }
}

/// One request on a kept-alive connection, the response read by its
/// length: (status, body).
fn keepalive_get(r: &mut BufReader<TcpStream>, path: &str) -> (u16, String) {
    write!(r.get_mut(), "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let code = line[9..12].parse().unwrap();
    let (mut len, mut chunked) = (0, false);
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        chunked |= l.starts_with("transfer-encoding:") && l.contains("chunked");
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let n = usize::from_str_radix(line.trim(), 16).unwrap();
            let mut c = vec![0; n + 2];
            r.read_exact(&mut c).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&c[..n]);
        }
    } else {
        body.resize(len, 0);
        r.read_exact(&mut body).unwrap();
    }
    (code, String::from_utf8_lossy(&body).into_owned())
}

fn open_fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn healthz_fails_after_consecutive_census_failures_and_the_warning_is_rate_limited() {
    require_root();
    ensure_bpffs();
    const NOFILE: u64 = 256;
    let mut c = Command::new(BIN);
    with_nofile(NOFILE, &mut c);
    let mut s = Exporter::spawn(
        c,
        &[
            "--no-collector.lifecycle",
            "--web.read-header-timeout=5m",
            "--healthz.census-failures=2",
        ],
    );
    s.wait_until("healthy", Duration::from_secs(60), |port| {
        http_get(port, "/healthz").is_some_and(|(c, _)| c == 200)
    });
    let pid = s.child.id();
    let conn = || {
        let c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        BufReader::new(c)
    };
    let mut scrapes = conn();
    let mut health = conn();
    assert_eq!(keepalive_get(&mut scrapes, "/metrics").0, 200);
    assert_eq!(keepalive_get(&mut health, "/healthz").0, 200);
    // Idle clients until the exporter's fd table is full (the rest wait
    // in the listen backlog).
    let mut idle = Vec::new();
    let t = Instant::now();
    while (open_fds_of(pid) as u64) < NOFILE {
        idle.push(TcpStream::connect(("127.0.0.1", s.port)).unwrap());
        if idle.len() % 16 == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "fd table never filled"
        );
    }
    for _ in 0..32 {
        idle.push(TcpStream::connect(("127.0.0.1", s.port)).unwrap());
    }
    std::thread::sleep(Duration::from_millis(300));
    // The census cannot open its iterators: one failure is not yet
    // unhealthy, two in a row are.
    let (code, body) = keepalive_get(&mut scrapes, "/metrics");
    assert_eq!(code, 200);
    assert!(
        body.contains("bpfmap_scrape_collector_success{collector=\"maps\"} 0"),
        "the census did not fail under fd exhaustion; stderr:\n{}",
        s.stderr()
    );
    assert_eq!(keepalive_get(&mut health, "/healthz").0, 200);
    for _ in 0..3 {
        keepalive_get(&mut scrapes, "/metrics");
    }
    let (code, why) = keepalive_get(&mut health, "/healthz");
    assert_eq!(code, 503, "{why}");
    assert!(
        why.contains("the census failed the last 4 scrapes") && why.contains("RLIMIT_NOFILE"),
        "{why}"
    );
    // Four failed scrapes, one warning for the census.
    let log = s.stderr();
    let warned = log
        .lines()
        .filter(|l| {
            l.contains("WARN") && l.contains("collector failed") && l.contains("collector=\"maps\"")
        })
        .count();
    assert_eq!(warned, 1, "{log}");
    // Clients leave: the next census succeeds, healthy again, and the
    // recovery is logged with the failures held back.
    drop(idle);
    let t = Instant::now();
    loop {
        let (_, body) = keepalive_get(&mut scrapes, "/metrics");
        if body.contains("bpfmap_scrape_collector_success{collector=\"maps\"} 1") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "census never recovered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(keepalive_get(&mut health, "/healthz").0, 200);
    let log = s.stderr();
    assert!(
        log.lines().any(|l| l.contains("collector recovered")
            && l.contains("collector=\"maps\"")
            && !l.contains("more_since_last=0")),
        "{log}"
    );
}

#[test]
fn an_expected_libbpf_fallback_is_not_a_warning() {
    require_root();
    ensure_bpffs();
    let r = run_limited(
        {
            let mut c = Command::new(BIN);
            c.arg("--check");
            c
        },
        Duration::from_secs(120),
    );
    assert!(r.code.is_some(), "{}", r.stderr);
    let stats_only: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("processed 0 insns"))
        .collect();
    assert!(stats_only.is_empty(), "{stats_only:?}");
}
