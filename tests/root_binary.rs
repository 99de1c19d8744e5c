//! The real binary, as root: `--check`, error messages for bad input and
//! missing privileges, and the HTTP server (/, /healthz, /metrics) scraped
//! several times with promtool, fresh series and no fd growth.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use libbpf_rs::MapType;

const BIN: &str = env!("CARGO_BIN_EXE_bpfmap-exporter");

fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("")
        .to_string();
    (code, body)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The exporter closes a scrape's connection a moment after the client has
/// read the response (much later under qemu software emulation): wait,
/// bounded, until its fd count is at most `want`, and return the last count.
fn settled_fd_count(pid: u32, want: usize) -> usize {
    let t = Instant::now();
    loop {
        let n = fd_count(pid);
        if n <= want || t.elapsed() > Duration::from_secs(10) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn promtool_ok(text: &str) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; ./scripts/install-deps.sh installs it)");
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_mode_summarises_and_exits_zero() {
    require_root();
    ensure_bpffs();
    let keep = map(MapType::Hash, "chk_hash", 4, 4, 8, 0);
    let out = Command::new(BIN).arg("--check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "--check failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("result=ok"), "{stdout}");
    assert!(stdout.contains("kernel="), "{stdout}");
    assert!(stdout.contains("collector=maps success=1"), "{stdout}");
    let maps: usize = stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("maps="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(maps >= 1, "the test's own map is counted: {stdout}");
    drop(keep);
}

#[test]
fn bad_btf_path_names_the_flag_and_the_fix() {
    require_root();
    let out = Command::new(BIN)
        .args(["--check", "--btf.path=/nonexistent/vmlinux"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--btf.path") && err.contains("/nonexistent/vmlinux"),
        "{err}"
    );
}

#[test]
fn unknown_collector_and_bad_path_are_rejected_clearly() {
    let out = Command::new(BIN)
        .args(["--check", "--collector.nope"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("nope") && err.contains("valid names"), "{err}");
    let out = Command::new(BIN)
        .args(["--check", "--web.telemetry-path=metrics"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("--web.telemetry-path"), "{err}");
}

#[test]
fn without_capabilities_the_error_names_them_and_how_to_grant() {
    require_root();
    // Drop to an unprivileged user with no capabilities.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            BIN,
            "--check",
        ])
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in [
        "CAP_BPF",
        "CAP_PERFMON",
        "CAP_SYS_ADMIN",
        "setcap",
        "securityContext",
    ] {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }
}

#[test]
fn server_scrapes_are_valid_fresh_and_leak_no_fds() {
    require_root();
    ensure_bpffs();
    // Every map's series: the test follows one small map in and out, which
    // the default budget may leave out on a busy node.
    let srv = Exporter::start(
        BIN,
        &[
            "--collector.maps.publish-all",
            "--collector.maps.max-series=0",
        ],
    );
    let (pid, port) = (srv.child.id(), srv.port);

    let (code, body) = get(port, "/");
    assert_eq!(code, 200);
    assert!(
        body.contains("href=\"/metrics\""),
        "landing page links /metrics: {body}"
    );
    assert_eq!(get(port, "/healthz").0, 200);
    assert_eq!(get(port, "/nope").0, 404);

    // Warm up, then count fds across repeated scrapes.
    let (code, first) = get(port, "/metrics");
    assert_eq!(code, 200, "{first}");
    promtool_ok(&first);
    for want in [
        "bpfmap_build_info{",
        "bpfmap_scrape_collector_success{collector=\"maps\"} 1",
        "bpfmap_scrape_collector_duration_seconds{collector=\"pins\"}",
        "bpfmap_exporter_maps ",
    ] {
        assert!(first.contains(want), "missing {want}");
    }
    // Baseline once the warm-up scrapes' connections are closed.
    let mut fds = fd_count(pid);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(200));
        fds = fds.min(fd_count(pid));
    }

    let m = map(MapType::LruHash, "srv_lru", 4, 4, 32, 0);
    let id = id_of(&m);
    let (_, with) = get(port, "/metrics");
    promtool_ok(&with);
    let info = format!("bpfmap_map_info{{id=\"{id}\",name=\"srv_lru\",map_type=\"lru_hash\"");
    assert!(with.contains(&info), "new map appears: {info}");
    assert!(with.contains(&format!("bpfmap_map_unexplained_refs{{id=\"{id}\"}} 0")));
    drop(m);
    // Freeing is deferred (RCU + work queue): the series must be gone within a
    // few scrapes and never come back.
    let t = Instant::now();
    loop {
        let (_, after) = get(port, "/metrics");
        if !after.contains(&format!("id=\"{id}\"")) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "freed map {id} still exported"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..5 {
        get(port, "/metrics");
    }
    assert_eq!(
        settled_fd_count(pid, fds),
        fds,
        "exporter fd count grew across scrapes"
    );

    // SIGTERM: clean exit.
    let mut srv = srv;
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let st = srv.child.wait().unwrap();
    assert!(st.success(), "exit after SIGTERM: {st:?}");
}

#[test]
fn disabled_collectors_publish_nothing_and_report_nothing() {
    require_root();
    let srv = Exporter::start(BIN, &["--no-collector.pins", "--no-collector.files"]);
    let port = srv.port;
    let (code, body) = get(port, "/metrics");
    assert_eq!(code, 200);
    promtool_ok(&body);
    assert!(
        !body.contains("collector=\"pins\""),
        "pins collector disabled"
    );
    assert!(!body.contains("bpfmap_pin_info"));
    assert!(!body.contains("bpfmap_process_map_files"));
    // Holder kinds unknown -> unexplained unknown, never a false leak.
    assert!(!body.contains("bpfmap_map_unexplained_refs"));
    assert!(body.contains("bpfmap_scrape_collector_success{collector=\"maps\"} 1"));
}

#[test]
fn check_outside_the_host_pid_namespace_fails_naming_host_pid() {
    require_root();
    let out = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc", BIN, "--check"])
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "--check passed in a private pid namespace: {stdout}"
    );
    assert!(stdout.contains("result=failed"), "{stdout}");
    assert!(
        stdout.contains("hostPID") && stdout.contains("--pid=host"),
        "{stdout}"
    );
    assert!(stdout.contains("source=files complete=0"), "{stdout}");
    // In the host pid namespace the same check passes.
    let out = Command::new(BIN).arg("--check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("hostPID"), "{stdout}");
}

#[test]
fn server_outside_the_host_pid_namespace_says_so_in_a_metric() {
    require_root();
    // --kill-child: the exporter (pid 1 of the new namespace) dies with unshare.
    let mut unshare = Command::new("unshare");
    unshare.args(["-p", "-f", "--kill-child", "--mount-proc", BIN]);
    let mut srv = Exporter::spawn(unshare, &[]);
    srv.wait_listening(Duration::from_secs(60));
    let port = srv.port;
    let (code, body) = get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("\nbpfmap_pid_namespace_host 0\n"), "{body}");
    assert!(body.contains("bpfmap_holder_source_complete{source=\"files\"} 0"));
    // The exporter's own maps have no holder it can see here, yet nothing
    // is published as a leak: either known-explained or withheld.
    assert!(!body.contains("\nbpfmap_maps_unexplained_refs 1"), "{body}");
    let logged = srv.stderr();
    assert!(logged.contains("hostPID"), "server log: {logged}");
}

/// `name value` of an unlabelled sample, or the sum of a labelled family.
fn family_sum(body: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for l in body.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = l.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let v: f64 = rest.rsplit(' ').next().unwrap().parse().unwrap();
        *sum.get_or_insert(0.0) += v;
    }
    sum
}

#[test]
fn check_and_a_concurrent_server_report_the_same_node_figures() {
    require_root();
    ensure_bpffs();
    let _keep = map(MapType::Hash, "same_fig", 4, 4, 8, 0);
    let srv = Exporter::start(BIN, &[]);
    let port = srv.port;
    // Other processes on a shared machine create maps too: compare several
    // times and require agreement in most rounds, and never a leak. Scrapes
    // taken while the check loads and runs must never page.
    let mut agree = 0;
    for _ in 0..5 {
        // A check's programs are released by the kernel a few hundred ms
        // after it exits (RCU tasks-trace), with the maps they use.
        std::thread::sleep(Duration::from_millis(1500));
        let (_, before) = get(port, "/metrics");
        let check = Command::new(BIN)
            .arg("--check")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut during = Vec::new();
        for _ in 0..4 {
            during.push(get(port, "/metrics").1);
        }
        let out = check.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}");
        let field = |k: &str| -> String {
            stdout
                .split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap()
                .to_string()
        };
        // Nothing the check loads, drops or holds shows up as a leak in the
        // server, and both see the same node.
        let unexpl: f64 = field("unexplained_refs=").parse().unwrap();
        let maps: f64 = field("maps=").parse().unwrap();
        let server = |b: &str| {
            (
                family_sum(b, "bpfmap_maps"),
                family_sum(b, "bpfmap_maps_unexplained_refs"),
            )
        };
        let same_during = during.iter().all(|b| server(b).1 == server(&before).1);
        if server(&before) == (Some(maps), Some(unexpl)) && same_during {
            agree += 1;
        } else {
            eprintln!(
                "disagree: check maps={maps} unexplained={unexpl}, server before {:?}, during {:?}",
                server(&before),
                during.iter().map(|b| server(b)).collect::<Vec<_>>()
            );
        }
    }
    assert!(
        agree >= 3,
        "--check and the server disagreed on the node's maps in {} of 5 rounds",
        5 - agree
    );
}

#[test]
fn without_sys_ptrace_a_foreign_namespace_bpffs_is_unreachable_and_withheld() {
    require_root();
    let dir = tempfile::Builder::new()
        .prefix("bpfmap-ns-bin")
        .tempdir()
        .unwrap();
    let d = dir.path().display().to_string();
    let ready = format!("{d}.ready");
    let script = format!(
        "mount -t bpf bpf {d} && bpftool map create {d}/nsmap type array key 4 value 4 entries 1 name t_ns_bin \
         && echo ok > {ready} && exec sleep 60"
    );
    let mut child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .spawn()
        .expect("unshare");
    let t = Instant::now();
    while std::fs::metadata(&ready).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the namespace's pin never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = |pre: &[&str]| {
        let mut c = Command::new(pre.first().copied().unwrap_or(BIN));
        if !pre.is_empty() {
            c.args(&pre[1..]).arg(BIN);
        }
        let out = c
            .args(["--check", "--no-collector.lifecycle"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Root without CAP_SYS_PTRACE: /proc/<pid>/root of the namespace's
    // process is refused, so the mount is unreachable and pins incomplete.
    let without = run(&[
        "setpriv",
        "--bounding-set=-sys_ptrace",
        "--inh-caps=-sys_ptrace",
    ]);
    assert!(
        without.contains(&format!("bpffs mount={d}@")) && without.contains("reachable=0"),
        "{without}"
    );
    assert!(without.contains("source=pins complete=0"), "{without}");
    // With it (root), the same mount is walked and pins are complete.
    let with = run(&[]);
    assert!(!with.contains("reachable=0"), "{with}");
    assert!(!with.contains("source=pins complete=0"), "{with}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&ready);
}

#[test]
fn the_default_budget_keeps_the_maps_that_matter() {
    use libbpf_rs::{MapCore, MapFlags};
    require_root();
    ensure_bpffs();
    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = Dir(format!("/sys/fs/bpf/bpfmap-budget-{}", std::process::id()).into());
    std::fs::create_dir_all(&dir.0).unwrap();
    // Held by an fd only: unremarkable, left out with no top-by-memory.
    let plain = map(MapType::Hash, "bud_plain", 4, 4, 64, 0);
    // 60 of 64 slots: near full at the default 0.8.
    let full = map(MapType::Hash, "bud_full", 4, 4, 64, 0);
    for k in 0u32..60 {
        full.update(&k.to_ne_bytes(), &k.to_ne_bytes(), MapFlags::ANY)
            .unwrap();
    }
    // Pinned, no fd, no program: a stale pin candidate.
    let mut pinned = map(MapType::Array, "bud_pin", 4, 4, 1, 0);
    let pin_id = id_of(&pinned);
    pinned.pin(dir.0.join("m")).unwrap();
    drop(pinned);
    let (plain_id, full_id) = (id_of(&plain), id_of(&full));

    let srv = Exporter::start(BIN, &["--collector.maps.top-by-memory=0"]);
    let port = srv.port;
    let info = |id: u32| format!("bpfmap_map_info{{id=\"{id}\",");
    // Where fill comes from walks, the budget (a fifth of the census) may
    // leave the near-full map's walk to a later scrape; each scrape walks
    // the maps never counted first, so a few scrapes reach it.
    let mut body = String::new();
    for _ in 0..20 {
        let (code, b) = get(port, "/metrics");
        assert_eq!(code, 200);
        body = b;
        if body.contains(&info(full_id)) {
            break;
        }
    }
    promtool_ok(&body);
    assert!(
        !body.contains(&info(plain_id)),
        "unremarkable map {plain_id} published"
    );
    assert!(
        body.contains(&info(pin_id)),
        "unused pin's map {pin_id} missing"
    );
    assert!(body.contains(&format!(
        "bpfmap_map_holders{{id=\"{pin_id}\",kind=\"pin\"}} 1"
    )));
    // Fill is known on every kernel (the kfunc on 6.6+, a walk before): the
    // near-full map is selected either way.
    assert!(
        body.contains(&info(full_id)),
        "near-full map {full_id} missing"
    );
    assert!(body.contains(&format!("bpfmap_map_entries{{id=\"{full_id}\"}} 60")));
    let omitted = family_sum(
        &body
            .lines()
            .filter(|l| l.contains("reason=\"budget\""))
            .collect::<Vec<_>>()
            .join("\n"),
        "bpfmap_map_series_omitted",
    )
    .expect("bpfmap_map_series_omitted{reason=\"budget\"}");
    assert!(omitted >= 1.0, "omitted {omitted}");
    // Aggregates count every map, selected or not.
    assert!(family_sum(&body, "bpfmap_maps").unwrap() >= 3.0);
    assert!(body.contains("bpfmap_map_series_omitted{reason=\"cap\"} 0"));
}
