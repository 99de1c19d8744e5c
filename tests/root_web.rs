//! The real binary serving on loopback, as root: TLS with a test CA,
//! client certificates, basic auth, certificate reload, header and idle
//! timeouts, fd exhaustion, single-flight scrapes, HEAD and methods, gzip,
//! and every negotiated format read by a real parser.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const BIN: &str = env!("CARGO_BIN_EXE_bpfmap-exporter");
/// Collectors off that these tests do not need (faster start).
const LEAN: &[&str] = &["--no-collector.lifecycle"];

fn start(extra: &[&str], nofile: Option<u64>) -> Exporter {
    let mut cmd = Command::new(BIN);
    if let Some(n) = nofile {
        with_nofile(n, &mut cmd);
    }
    let mut s = Exporter::spawn(cmd, &[LEAN, extra].concat());
    // Listening comes before loading; healthy comes after.
    s.wait_listening(Duration::from_secs(60));
    s
}

#[derive(Debug)]
struct Resp {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

/// One HTTP/1.1 request with `Connection: close`, the response read to EOF
/// (chunked bodies decoded).
fn request(
    s: &mut dyn ReadWrite,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Resp> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.flush()?;
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        // rustls reports a close without close_notify; the body is complete.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    let mut r = BufReader::new(&raw[..]);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.len() < 12 {
        return Err(std::io::Error::other(format!("no status line: {line:?}")));
    }
    let code = line[9..12].parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut body = Vec::new();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            r.read_line(&mut line)?;
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Resp {
        code,
        headers,
        body,
    })
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn plain(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(&mut plain(port), "GET", path, headers).unwrap()
}

fn wait_healthy(port: u16, tls: Option<&Pki>) {
    let t = Instant::now();
    loop {
        let code = match tls {
            None => get(port, "/healthz", &[]).code,
            Some(p) => p
                .get(port, "/healthz", Some(&p.client), Some(("alice", "pw")))
                .map(|r| r.code)
                .unwrap_or(0),
        };
        if code == 200 {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "never healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing"))
        .trim()
        .parse()
        .unwrap()
}

fn promtool(text: &[u8]) -> (bool, String) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; ./scripts/install-deps.sh installs it)");
    p.stdin.take().unwrap().write_all(text).unwrap();
    let out = p.wait_with_output().unwrap();
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 3 is lint findings only; 1 is a parse error.
    (
        out.status.code() == Some(0) || out.status.code() == Some(3),
        msg,
    )
}

// ---------------------------------------------------------------- TLS

struct Identity {
    cert_pem: String,
    key_pem: String,
}

struct Pki {
    ca_pem: String,
    server: Identity,
    client: Identity,
    stranger: Identity,
}

fn ca(name: &str) -> (rcgen::CertificateParams, rcgen::KeyPair, String) {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let k = rcgen::KeyPair::generate().unwrap();
    let c = p.self_signed(&k).unwrap();
    (p, k, c.pem())
}

fn leaf(
    issuer: &rcgen::Issuer<'_, &rcgen::KeyPair>,
    cn: &str,
    sans: &[&str],
    client: bool,
) -> Identity {
    let mut p =
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    let k = rcgen::KeyPair::generate().unwrap();
    let c = p.signed_by(&k, issuer).unwrap();
    Identity {
        cert_pem: c.pem(),
        key_pem: k.serialize_pem(),
    }
}

impl Pki {
    fn new() -> Pki {
        let (cap, cak, ca_pem) = ca("bpfmap test CA");
        let issuer = rcgen::Issuer::from_params(&cap, &cak);
        let (op, ok, _) = ca("other CA");
        let other = rcgen::Issuer::from_params(&op, &ok);
        Pki {
            server: leaf(&issuer, "server-1", &["127.0.0.1", "localhost"], false),
            client: leaf(&issuer, "prometheus", &["prometheus"], true),
            stranger: leaf(&other, "stranger", &["stranger"], true),
            ca_pem,
        }
    }

    fn connect(
        &self,
        port: u16,
        id: Option<&Identity>,
        roots_pem: &str,
    ) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let cfg = match id {
            Some(id) => b
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                        .map(|c| c.unwrap())
                        .collect(),
                    PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => b.with_no_client_auth(),
        };
        let conn = rustls::ClientConnection::new(
            Arc::new(cfg),
            ServerName::try_from("127.0.0.1").unwrap().to_owned(),
        )
        .map_err(std::io::Error::other)?;
        let mut s = rustls::StreamOwned::new(conn, plain(port));
        // Finish the handshake now so that a refused client fails here.
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        // TLS 1.3 servers reject a client certificate after the handshake:
        // a zero-length read surfaces it.
        Ok(s)
    }

    fn get(
        &self,
        port: u16,
        path: &str,
        id: Option<&Identity>,
        auth: Option<(&str, &str)>,
    ) -> std::io::Result<Resp> {
        let mut s = self.connect(port, id, &self.ca_pem)?;
        let hdr;
        let mut headers = vec![];
        if let Some((u, p)) = auth {
            hdr = format!(
                "Basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("{u}:{p}")
                )
            );
            headers.push(("Authorization", hdr.as_str()));
        }
        request(&mut s, "GET", path, &headers)
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    // Replace atomically, as a Kubernetes Secret update does.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn peer_cn(s: &rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> Vec<u8> {
    s.conn.peer_certificates().unwrap()[0].to_vec()
}

#[test]
fn tls_client_certificates_basic_auth_headers_and_reload() {
    require_root();
    ensure_bpffs();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "server.crt", &pki.server.cert_pem);
    write(d, "server.key", &pki.server.key_pem);
    write(d, "ca.crt", &pki.ca_pem);
    let hash = bcrypt::hash("pw", 4).unwrap();
    write(
        d,
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS12\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\nbasic_auth_users:\n  alice: '{hash}'\n"
        ),
    );
    let cfg = d.join("web.yml");
    let s = start(&[&format!("--web.config.file={}", cfg.display())], None);
    wait_healthy(s.port, Some(&pki));

    // Right certificate and credentials.
    let r = pki
        .get(s.port, "/metrics", Some(&pki.client), Some(("alice", "pw")))
        .unwrap();
    assert_eq!(r.code, 200, "{r:?}");
    assert!(r.text().contains("bpfmap_build_info{"));
    assert_eq!(r.header("x-frame-options"), Some("deny"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));

    // Wrong, missing and unknown credentials.
    for auth in [Some(("alice", "wrong")), None, Some(("mallory", "pw"))] {
        let r = pki
            .get(s.port, "/metrics", Some(&pki.client), auth)
            .unwrap();
        assert_eq!(r.code, 401, "{auth:?}: {r:?}");
        assert_eq!(r.header("www-authenticate"), Some("Basic"));
        assert!(!r.text().contains("bpfmap_"), "{auth:?}");
    }

    // No client certificate, or one from another CA: no response.
    for id in [None, Some(&pki.stranger)] {
        let r = pki.get(s.port, "/metrics", id, Some(("alice", "pw")));
        assert!(
            r.is_err(),
            "client {:?} was served: {r:?}",
            id.map(|_| "stranger")
        );
    }
    // Plain HTTP on the TLS port is not served.
    let r = request(&mut plain(s.port), "GET", "/metrics", &[]);
    assert!(r.map(|r| r.code != 200).unwrap_or(true));

    // Reload: a new server certificate (and a new CA for clients) replaces
    // the files; the next connection presents it without a restart.
    let before = peer_cn(&pki.connect(s.port, Some(&pki.client), &pki.ca_pem).unwrap());
    let pki2 = Pki::new();
    write(d, "server.crt", &pki2.server.cert_pem);
    write(d, "server.key", &pki2.server.key_pem);
    write(d, "ca.crt", &pki2.ca_pem);
    // A change is read once it has settled (250 ms).
    let t = Instant::now();
    let c = loop {
        match pki2.connect(s.port, Some(&pki2.client), &pki2.ca_pem) {
            Ok(c) => break c,
            Err(e) if t.elapsed() > Duration::from_secs(5) => panic!("{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let after = peer_cn(&c);
    assert_ne!(before, after);
    assert_eq!(
        after,
        CertificateDer::pem_slice_iter(pki2.server.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    );
    let r = pki2
        .get(
            s.port,
            "/metrics",
            Some(&pki2.client),
            Some(("alice", "pw")),
        )
        .unwrap();
    assert_eq!(r.code, 200);
    // The old client CA no longer verifies.
    assert!(pki
        .get(s.port, "/healthz", Some(&pki.client), Some(("alice", "pw")))
        .is_err());
    // A broken replacement keeps the configuration in force and says why.
    write(d, "server.key", "not a key\n");
    std::thread::sleep(Duration::from_millis(500));
    let r = pki2
        .get(
            s.port,
            "/metrics",
            Some(&pki2.client),
            Some(("alice", "pw")),
        )
        .unwrap();
    assert_eq!(r.code, 200);
    assert!(
        s.stderr().contains("web config reload failed"),
        "{}",
        s.stderr()
    );
    assert!(s.stderr().contains("key_file"), "{}", s.stderr());
}

#[test]
fn bad_web_config_and_busy_port_fail_first_naming_the_cause() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    for (text, field) in [
        (
            "basic_auth_users:\n  bob: hunter2\n",
            "basic_auth_users.bob",
        ),
        (
            "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n",
            "cert_file",
        ),
        ("tls_server_config:\n  certfile: x\n", "certfile"),
    ] {
        let p = dir.path().join("web.yml");
        std::fs::write(&p, text).unwrap();
        let out = Command::new(BIN)
            .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
            .arg(format!("--web.config.file={}", p.display()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(
            err.contains(field) && err.contains("--web.config.file"),
            "{text}: {err}"
        );
        assert!(
            !err.contains("libbpf"),
            "BPF was loaded before the config was read: {err}"
        );
    }
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(BIN)
        .arg(format!(
            "--web.listen-address={}",
            busy.local_addr().unwrap()
        ))
        .arg("--log.level=debug")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot listen on"), "{err}");
    assert!(
        !err.contains("libbpf"),
        "BPF was loaded before binding: {err}"
    );
    let out = Command::new(BIN).arg("--log.level=loud").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a log level"));
}

// ------------------------------------------------------------ serving

#[test]
fn slowloris_and_idle_connections_are_closed() {
    require_root();
    ensure_bpffs();
    let s = start(
        &["--web.read-header-timeout=1s", "--web.idle-timeout=3s"],
        None,
    );
    wait_healthy(s.port, None);
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|i| {
            let mut c = plain(s.port);
            let half: &[u8] = if i % 2 == 0 {
                b"GET /metr"
            } else {
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "
            };
            c.write_all(half).unwrap();
            c
        })
        .collect();
    // A silent connection counts too.
    slow.push(plain(s.port));
    let t = Instant::now();
    for c in slow.iter_mut() {
        let mut b = [0u8; 64];
        // EOF (or reset) from the server, well before our 60 s read timeout.
        let n = c.read(&mut b).unwrap_or(0);
        assert_eq!(n, 0, "server answered a half request");
    }
    assert!(t.elapsed() < Duration::from_secs(30));
    // Keep-alive: a served connection stays usable, then closes when idle.
    let mut c = plain(s.port);
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = c.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(1500));
    // Past the header timeout but within the idle timeout: still served.
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let n = c.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    let n = c.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "closed before the idle timeout"
    );
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn fd_exhaustion_backs_off_without_a_hot_loop() {
    require_root();
    ensure_bpffs();
    let s = start(&["--web.read-header-timeout=30s"], Some(256));
    wait_healthy(s.port, None);
    let pid = s.child.id();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    // More idle clients than fds left: accept hits EMFILE.
    let held: Vec<TcpStream> = (0..(300 - fds.min(200)))
        .filter_map(|_| TcpStream::connect(("127.0.0.1", s.port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let t0 = cpu_ticks(pid);
    let wall = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let used = cpu_ticks(pid) - t0;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let log = s.stderr();
    let lines = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(lines >= 1, "fd exhaustion never reported: {log}");
    assert!(lines <= 3, "{lines} accept-failure lines in ~6 s:\n{log}");
    assert!(log.contains("Too many open files"), "{log}");
    // A hot loop would burn a core: allow a tenth of one.
    assert!(
        used * 10 < hz * wall.elapsed().as_secs().max(1),
        "{used} ticks of CPU in {:?} while out of fds",
        wall.elapsed()
    );
    drop(held);
    // Recovers once clients leave.
    let t = Instant::now();
    loop {
        if let Ok(r) = request(&mut plain(s.port), "GET", "/healthz", &[]) {
            if r.code == 200 {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(30), "never recovered");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn concurrent_scrapes_share_a_census_head_skips_it_and_methods_are_limited() {
    require_root();
    ensure_bpffs();
    // The setting: 5,000 maps (a census of some milliseconds).
    let r = libc::rlimit {
        rlim_cur: 16384,
        rlim_max: 16384,
    };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0);
    let _maps: Vec<_> = (0..5000)
        .map(|i| map(libbpf_rs::MapType::Hash, &format!("web_sf{i}"), 4, 4, 8, 0))
        .collect();
    let s = start(&[], None);
    wait_healthy(s.port, None);
    let port = s.port;
    let a = get(port, "/metrics", &[]).text();
    let (scrapes_a, reqs_a) = (
        counter(&a, "bpfmap_scrapes_total"),
        counter(&a, "bpfmap_scrape_requests_total"),
    );
    // 200 requests written back to back on open connections (the server
    // sees them within a millisecond or two), then every answer read.
    let mut conns: Vec<TcpStream> = (0..200).map(|_| plain(port)).collect();
    for c in conns.iter_mut() {
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
    }
    for mut c in conns {
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).unwrap();
        let t = String::from_utf8_lossy(&raw);
        assert!(t.starts_with("HTTP/1.1 200"), "{}", &t[..t.len().min(200)]);
        assert!(t.contains("bpfmap_build_info{"));
    }
    // HEAD: headers only, no census.
    let h = request(&mut plain(port), "HEAD", "/metrics", &[]).unwrap();
    assert_eq!(h.code, 200);
    assert!(h.body.is_empty());
    assert!(h.header("content-type").unwrap().starts_with("text/plain"));
    let b = get(port, "/metrics", &[]).text();
    let censuses = counter(&b, "bpfmap_scrapes_total") - scrapes_a - 1.0;
    let requests = counter(&b, "bpfmap_scrape_requests_total") - reqs_a;
    eprintln!("censuses for 200 concurrent scrapes: {censuses}");
    assert_eq!(requests, 201.0, "requests answered (200 + the first read)");
    assert!(
        (1.0..=2.0).contains(&censuses),
        "{censuses} censuses for 200 concurrent scrapes"
    );

    for m in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let r = request(&mut plain(port), m, "/metrics", &[("Content-Length", "0")]).unwrap();
        assert_eq!(r.code, 405, "{m}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
    // A body is never read: the connection gets its answer while the
    // declared body never arrives.
    let mut c = plain(port);
    c.write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc")
        .unwrap();
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 405"));
}

#[test]
fn gzip_and_negotiated_formats_parse_with_real_clients() {
    require_root();
    ensure_bpffs();
    let _m = map(libbpf_rs::MapType::Hash, "web_fmt", 4, 4, 8, 0);
    let second = free_port();
    let s = start(
        &[
            "--web.listen-address=localhost:0",
            &format!("--web.listen-address=:{second}"),
        ],
        None,
    );
    wait_healthy(s.port, None);
    // Every --web.listen-address is served.
    assert_eq!(get(second, "/healthz", &[]).code, 200);
    let plain_text = get(s.port, "/metrics", &[]);
    assert_eq!(
        plain_text.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    assert!(plain_text.header("content-encoding").is_none());
    let (ok, msg) = promtool(&plain_text.body);
    assert!(ok, "{msg}");

    let gz = get(s.port, "/metrics", &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut text)
        .unwrap();
    assert!(
        gz.body.len() * 3 < text.len(),
        "gzip saved little: {} -> {}",
        text.len(),
        gz.body.len()
    );
    let (ok, msg) = promtool(&text);
    assert!(ok, "{msg}");
    assert!(String::from_utf8_lossy(&text).contains("bpfmap_build_info{"));

    // OpenMetrics as Prometheus asks for it.
    let om = get(
        s.port,
        "/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")],
    );
    assert!(om
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    let t = om.text();
    assert!(
        t.ends_with("# EOF\n"),
        "{}",
        &t[t.len().saturating_sub(200)..]
    );
    assert!(t.contains("# TYPE bpfmap_scrapes counter\n"));
    assert!(t.contains("\nbpfmap_scrapes_total "));
    let (ok, msg) = promtool(&om.body);
    assert!(ok, "{msg}");

    // Delimited protobuf: parsed back into MetricFamily messages.
    let pb = get(
        s.port,
        "/metrics",
        &[("Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3")],
    );
    assert!(pb
        .header("content-type")
        .unwrap()
        .starts_with("application/vnd.google.protobuf"));
    let mut input = protobuf::CodedInputStream::from_bytes(&pb.body);
    let mut names = Vec::new();
    while !input.eof().unwrap() {
        let mf: prometheus::proto::MetricFamily = input.read_message().unwrap();
        names.push(mf.name().to_string());
    }
    assert!(names.iter().any(|n| n == "bpfmap_build_info"), "{names:?}");
    assert!(names.iter().any(|n| n == "bpfmap_maps"), "{names:?}");
    let text_names: std::collections::BTreeSet<String> = String::from_utf8_lossy(&plain_text.body)
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let pb_names: std::collections::BTreeSet<String> = names.into_iter().collect();
    assert_eq!(text_names, pb_names);
}

#[test]
fn collect_and_exclude_filter_one_shared_census() {
    require_root();
    ensure_bpffs();
    let _m = map(libbpf_rs::MapType::Hash, "web_filter", 4, 4, 8, 0);
    let s = start(&[], None);
    wait_healthy(s.port, None);
    let port = s.port;

    let pins = get(port, "/metrics?collect[]=pins", &[]);
    assert_eq!(pins.code, 200);
    let t = pins.text();
    assert!(t.contains("\nbpfmap_bpffs_mounts "), "{t}");
    assert!(t.contains("bpfmap_build_info{"));
    assert!(t.contains("bpfmap_scrape_collector_success{collector=\"pins\"} 1"));
    assert!(!t.contains("collector=\"maps\""), "{t}");
    assert!(!t.contains("bpfmap_maps{") && !t.contains("bpfmap_map_info{"));
    let (ok, msg) = promtool(&pins.body);
    assert!(ok, "{msg}");

    let ex = get(port, "/metrics?exclude[]=pins&exclude%5B%5D=files", &[]).text();
    assert!(ex.contains("bpfmap_maps{map_type=\"hash\"}"), "{ex}");
    assert!(ex.contains("bpfmap_scrape_collector_success{collector=\"maps\"} 1"));
    assert!(!ex.contains("bpfmap_bpffs_mounts") && !ex.contains("collector=\"pins\""));
    assert!(!ex.contains("bpfmap_process_map_files"));

    // OpenMetrics of a filtered scrape, as Prometheus asks for it.
    let om = get(
        port,
        "/metrics?collect[]=maps",
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
    );
    assert!(om.text().ends_with("# EOF\n") && om.text().contains("bpfmap_maps{"));
    assert!(!om.text().contains("bpfmap_bpffs_mounts"));

    for (q, want) in [
        (
            "collect[]=maps&exclude[]=pins",
            "Combined collect and exclude queries are not allowed.",
        ),
        (
            "collect[]=nope",
            "unknown collector \"nope\" in collect[]: valid names are maps, memory",
        ),
        ("exclude[]=nope", "unknown collector \"nope\" in exclude[]"),
        ("collect[]=lifecycle", "disabled collector \"lifecycle\""),
    ] {
        let r = get(port, &format!("/metrics?{q}"), &[]);
        assert_eq!(r.code, 400, "{q}");
        assert!(r.text().contains(want), "{q}: {}", r.text());
    }

    // Filtered and unfiltered requests in flight together share one census
    // and neither changes what the other gets.
    let before = counter(&get(port, "/metrics", &[]).text(), "bpfmap_scrapes_total");
    let mut conns: Vec<(bool, TcpStream)> = (0..40).map(|i| (i % 2 == 0, plain(port))).collect();
    for (filtered, c) in conns.iter_mut() {
        let path = if *filtered {
            "/metrics?collect[]=pins"
        } else {
            "/metrics"
        };
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    }
    for (filtered, mut c) in conns {
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).unwrap();
        let t = String::from_utf8_lossy(&raw);
        assert!(t.starts_with("HTTP/1.1 200"), "{}", &t[..t.len().min(200)]);
        assert!(t.contains("bpfmap_bpffs_mounts"));
        assert_eq!(
            !filtered,
            t.contains("bpfmap_maps{map_type=\"hash\"}"),
            "filtered={filtered}"
        );
        assert_eq!(
            !filtered,
            t.contains("collector=\"maps\""),
            "filtered={filtered}"
        );
    }
    let after = counter(&get(port, "/metrics", &[]).text(), "bpfmap_scrapes_total");
    let censuses = after - before - 1.0;
    eprintln!("censuses for 40 concurrent scrapes, half filtered: {censuses}");
    assert!(
        (1.0..=2.0).contains(&censuses),
        "{censuses} censuses for 40 concurrent scrapes"
    );
}
