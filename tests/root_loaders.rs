//! Root tests of program loaders on the running kernel, against the
//! exporter binary (the lifecycle probes record each BPF_PROG_LOAD, the
//! census keeps the loaders): programs loaded from a pod-like memory cgroup
//! name their loader (pid, comm, container, pod); after kubelet-style
//! removal of the pod's cgroups, the one only a pin keeps is orphaned and
//! its pod still named, the one a live process holds is not orphaned; a
//! program loaded before the exporter started says so.
mod common;

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use libbpf_rs::MapType;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_bpfmap-exporter");
const CHILD_ENV: &str = "BPFMAP_LOADERS_CHILD_DIR";
/// The loading thread's comm (set by the child before it loads).
const COMM: &str = "t_loader";

fn pin(fd: &impl AsRawFd, path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid fd and a NUL-terminated path for the call.
    let rc = unsafe { libbpf_rs::libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) };
    assert_eq!(
        rc,
        0,
        "pin {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn obj_get(path: &Path) -> OwnedFd {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path; the fd is checked and owned.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_obj_get(c.as_ptr()) };
    assert!(fd >= 0, "bpf_obj_get {}", path.display());
    // SAFETY: a fresh fd of ours.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn prog_id(fd: &impl AsRawFd) -> u32 {
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info and len are valid for the call.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len)
    };
    assert_eq!(rc, 0, "bpf_prog_get_info_by_fd");
    info.id
}

/// Run in a child process inside the pod's container cgroup: name the
/// thread, load two programs (each using a map) and pin them in the bpffs
/// directory `dir`, print their ids, exit.
#[test]
fn child_loads_the_programs() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only as the child of the tests below
    };
    let dir = PathBuf::from(dir);
    let name = std::ffi::CString::new(COMM).unwrap();
    // SAFETY: PR_SET_NAME with a NUL-terminated name of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    for n in ["orphan", "live"] {
        let m = map(MapType::Hash, &format!("tl_{n}"), 4, 4, 16, 0);
        let p = prog_using_map(m.as_fd().as_raw_fd());
        pin(&p, &dir.join(n));
        println!("loaded {n} {}", prog_id(&p));
    }
}

/// Run the child test in the container's cgroup; (its pid, its output).
fn run_child(cg: &PodCgroup, dir: &Path) -> (u32, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_loads_the_programs",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, dir)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    cg.enter(&mut cmd);
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (pid, stdout)
}

fn loaded(out: &str, n: &str) -> u32 {
    out.lines()
        .find_map(|l| {
            // The harness prints the test's name on the same line first.
            l.split(&format!("loaded {n} ")).nth(1)?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no id of {n} in {out}"))
}

fn get(port: u16, path: &str) -> (u16, String) {
    http_get(port, path).unwrap_or_else(|| panic!("GET {path}: no answer"))
}

/// Poll `/metrics` until every line of `want` is in it; the exposition.
fn metrics_until(e: &Exporter, what: &str, want: &[String]) -> String {
    let t = Instant::now();
    loop {
        let (code, body) = get(e.port, "/metrics");
        if code == 200 && want.iter().all(|w| body.contains(w.as_str())) {
            return body;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{what}: missing {:?} in\n{body}\nstderr:\n{}",
            want.iter()
                .filter(|w| !body.contains(w.as_str()))
                .collect::<Vec<_>>(),
            e.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The API's document of program `id`.
fn program(port: u16, id: u32) -> Value {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET /api/v1/programs/{id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let r = read_response(s).unwrap();
    assert_eq!(r.code, 200, "{}", r.text());
    r.json()["programs"][0].clone()
}

fn start() -> Exporter {
    let mut e = Exporter::spawn(Command::new(BIN), &[]);
    e.wait_until("healthy", Duration::from_secs(90), |port| {
        matches!(http_get(port, "/healthz"), Some((200, _)))
    });
    e
}

#[test]
fn a_pinned_program_outlives_its_pod_orphaned_and_still_named() {
    require_root();
    unlimit_memlock();
    let fs = PrivateBpffs::new();
    // Loaded before the exporter starts: its loader is unknown, and says why.
    let early_map = map(MapType::Hash, "tl_early", 4, 4, 16, 0);
    let early = prog_using_map(early_map.as_fd().as_raw_fd());
    let early_id = prog_id(&early);
    pin(&early, &fs.path().join("early"));
    drop(early);

    let e = start();
    let cg = PodCgroup::new(
        &format!("bpfmap-loaders-{}", std::process::id()),
        "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
    );
    let (child_pid, out) = run_child(&cg, fs.path());
    let (orphan, live) = (loaded(&out, "orphan"), loaded(&out, "live"));
    // A live process (this one) takes the program `live`; its pin goes.
    let live_fd = obj_get(&fs.path().join("live"));
    std::fs::remove_file(fs.path().join("live")).unwrap();
    let ctr_ino = std::fs::metadata(&cg.ctr).unwrap().ino();
    let (uid, ctr) = (cg.uid.clone(), cg.ctr_id.clone());
    let info = |id: u32| {
        format!(
            "bpfmap_program_creator_info{{id=\"{id}\",cgroup_id=\"{ctr_ino}\",container_id=\"{ctr}\",pod_uid=\"{uid}\",comm=\"{COMM}\"}} 1\n"
        )
    };
    // The pod lives: the loader is named, and nothing is orphaned.
    metrics_until(
        &e,
        "the loader named while the pod lives",
        &[
            info(orphan),
            format!("bpfmap_program_orphaned{{id=\"{orphan}\"}} 0\n"),
        ],
    );
    let p = program(e.port, live);
    assert_eq!(
        (
            &p["loader"]["known"],
            &p["loader"]["pid"],
            &p["loader"]["comm"],
            &p["loader"]["container_id"],
            &p["loader"]["pod_uid"],
            &p["loader"]["gone"],
            &p["orphaned"],
        ),
        (
            &json!(true),
            &json!(child_pid),
            &json!(COMM),
            &json!(ctr),
            &json!(uid),
            &json!(false),
            &json!(false)
        ),
        "{p:#}"
    );
    let p = program(e.port, early_id);
    assert_eq!(
        p["loader"],
        json!({"known": false, "reason": "unknown: loaded before the exporter started"}),
        "{p:#}"
    );
    assert_eq!(p["orphaned"], Value::Null);
    assert_eq!(
        p["orphaned_withheld"]["reason"],
        json!("loaded_before_start")
    );

    // kubelet deletes the pod: only the pin keeps `orphan`, this process
    // keeps `live`.
    cg.delete_pod();
    let t = metrics_until(
        &e,
        "the program orphaned and its pod still named",
        &[
            format!("bpfmap_program_orphaned{{id=\"{orphan}\"}} 1\n"),
            info(orphan),
            format!("bpfmap_creator_orphaned_programs{{container_id=\"{ctr}\",pod_uid=\"{uid}\"}} 1\n"),
            format!(
                "bpfmap_creator_orphaned_programs_memory_bytes{{container_id=\"{ctr}\",pod_uid=\"{uid}\"}} {}\n",
                program(e.port, orphan)["memory_bytes"]
            ),
        ],
    );
    let n = |name: &str| -> u64 {
        t.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert!(n("bpfmap_programs_orphaned") >= 1);
    assert!(n("bpfmap_programs_orphaned_withheld{reason=\"loaded_before_start\"}") >= 1);
    let p = program(e.port, orphan);
    assert_eq!(
        (
            &p["orphaned"],
            &p["loader"]["gone"],
            &p["loader"]["pod_uid"]
        ),
        (&json!(true), &json!(true), &json!(uid)),
        "{p:#}"
    );
    let p = program(e.port, live);
    assert_eq!(
        (
            &p["orphaned"],
            &p["loader"]["gone"],
            &p["loader"]["pod_uid"]
        ),
        (&json!(false), &json!(true), &json!(uid)),
        "a live process holds it: {p:#}"
    );
    // explain --from names the loader and the verdict.
    let o = Command::new(BIN)
        .args(["explain", "--from", &format!("http://127.0.0.1:{}", e.port)])
        .args(["--prog", &orphan.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for want in [
        format!("loaded by pid {child_pid} comm \"{COMM}\" container \"{ctr}\" pod \"{uid}\" (its cgroup is gone)"),
        "orphaned: its loader's cgroup is gone and only pins keep it alive".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    // A standalone explain records no loads: it says so, and gives no verdict.
    let o = Command::new(BIN)
        .args(["explain", "--prog", &orphan.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("loader unknown: no lifecycle collector records program loads here"),
        "{text}"
    );
    assert!(text.contains("orphaned: unknown ("), "{text}");

    // The programs go: their loaders are forgotten, no program series of
    // the pod remain (the lifecycle's counters of its maps are cumulative).
    drop(live_fd);
    drop(fs);
    let t = Instant::now();
    loop {
        let (_, body) = get(e.port, "/metrics");
        let of_pod = |l: &&str| {
            (l.starts_with("bpfmap_program") || l.starts_with("bpfmap_creator_orphaned_programs"))
                && l.contains(uid.as_str())
        };
        if !body.lines().any(|l| of_pod(&l)) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "series of the deleted pod remain:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
