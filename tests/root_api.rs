//! The JSON API of the running exporter (`/api/v1/maps`), as root: the
//! census root tests' holder kinds, each by identity (processes with pid,
//! comm and fds, pins with mount and path, programs, outer-map slots, mmaps
//! with their size, iterator links); the creating process of maps
//! created while the exporter runs; filters, paging, limits and errors;
//! HEAD, methods and basic auth as on /metrics; single flight with scrapes;
//! and `explain --from`.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use libbpf_rs::{MapHandle, MapType};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_bpfmap-exporter");

/// Start the exporter (every collector on) and wait until it is healthy.
fn start(extra: &[&str], auth: Option<&str>) -> Exporter {
    let mut s = Exporter::spawn(Command::new(BIN), extra);
    s.wait_until(
        "healthy",
        Duration::from_secs(90),
        |port| matches!(try_request(port, "GET", "/healthz", auth), Ok(r) if r.code == 200),
    );
    s
}

fn try_request(port: u16, method: &str, path: &str, auth: Option<&str>) -> std::io::Result<Resp> {
    use base64::Engine;
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let auth = auth
        .map(|a| {
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(a)
            )
        })
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"
    )?;
    read_response(s)
}

fn get(port: u16, path: &str) -> Resp {
    try_request(port, "GET", path, None).unwrap()
}

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing"))
}

/// The first map named `name` in a listing.
fn by_name<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == json!(name))
        .unwrap_or_else(|| panic!("{name} not listed"))
}

/// Poll `path` until `ok` holds for its document (the census and the
/// lifecycle records settle within a few scrapes).
fn until(port: u16, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let t = Instant::now();
    loop {
        let r = get(port, path);
        if r.code == 200 {
            let v = r.json();
            if ok(&v) {
                return v;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{what}: last answer {}",
                serde_json::to_string_pretty(&v).unwrap()
            );
        } else {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{what}: {} {}",
                r.code,
                String::from_utf8_lossy(&r.body)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn fdinfo_field(fd: RawFd, key: &str) -> u32 {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("fdinfo {key}"))
        .trim()
        .parse()
        .unwrap()
}

/// An iterator link bound to `map_fd`: a do-nothing `iter/bpf_map_elem`
/// program attached to the map. Err: the kernel refused the program
/// (errno).
fn map_iter_link(map_fd: RawFd) -> Result<(OwnedFd, OwnedFd), i32> {
    let name = std::ffi::CString::new("bpf_map_elem").unwrap();
    // SAFETY: a NUL-terminated name; libbpf reads the kernel's BTF.
    let btf_id = unsafe {
        libbpf_sys::libbpf_find_vmlinux_btf_id(name.as_ptr(), libbpf_sys::BPF_TRACE_ITER)
    };
    assert!(btf_id > 0, "iter/bpf_map_elem BTF id: {btf_id}");
    let insns = [
        libbpf_sys::bpf_insn {
            code: 0xb7, // r0 = 0
            ..Default::default()
        },
        libbpf_sys::bpf_insn {
            code: 0x95, // exit
            ..Default::default()
        },
    ];
    let lic = std::ffi::CString::new("GPL").unwrap();
    let mut opts = libbpf_sys::bpf_prog_load_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_load_opts>() as _,
        expected_attach_type: libbpf_sys::BPF_TRACE_ITER,
        attach_btf_id: btf_id as u32,
        ..Default::default()
    };
    // SAFETY: insns, lic and opts outlive the call.
    let prog = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_TRACING,
            std::ptr::null(),
            lic.as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            &mut opts,
        )
    };
    if prog < 0 {
        return Err(-prog);
    }
    // SAFETY: a fresh fd.
    let prog = unsafe { OwnedFd::from_raw_fd(prog) };
    // SAFETY: zeroed plain data, then the map fd set.
    let mut info: libbpf_sys::bpf_iter_link_info = unsafe { std::mem::zeroed() };
    info.map.map_fd = map_fd as u32;
    // SAFETY: zeroed plain data (every field's default), then set.
    let mut lopts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
    lopts.sz = std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _;
    lopts.iter_info = &mut info;
    lopts.iter_info_len = std::mem::size_of::<libbpf_sys::bpf_iter_link_info>() as u32;
    // SAFETY: info and lopts outlive the call.
    let link = unsafe {
        libbpf_sys::bpf_link_create(prog.as_raw_fd(), 0, libbpf_sys::BPF_TRACE_ITER, &lopts)
    };
    assert!(link >= 0, "link create: {link}");
    // SAFETY: a fresh fd.
    Ok((prog, unsafe { OwnedFd::from_raw_fd(link) }))
}

/// Create a map from a shell moved into `cgroup` (exec'd into bpftool):
/// returns the creating pid.
fn create_in(cgroup: &Path, pin: &Path, name: &str) -> u32 {
    let script = format!(
        "echo $$ && echo $$ > '{}/cgroup.procs' && exec bpftool map create '{}' type hash key 4 value 4 entries 8 name {name}",
        cgroup.display(),
        pin.display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "creating {name}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn api_names_every_holder_and_the_creating_process() {
    require_root();
    ensure_bpffs();
    // A map from before the exporter started: its creator process is unknown.
    let old = map(MapType::Array, "t_api_old", 4, 4, 1, 0);
    let old_id = id_of(&old);
    let s = start(&[], None);
    let port = s.port;

    // Created while the exporter runs, from this thread.
    let me = std::process::id();
    let my_comm = std::fs::read_to_string("/proc/thread-self/comm")
        .unwrap()
        .trim()
        .to_string();
    // One map held by: two fds of this process (one a dup, inherited by a
    // child: one file), a pin, a program, two outer-map slots, an
    // iterator link.
    let m = map(MapType::Array, "t_api", 4, 4, 1, 0);
    let id = id_of(&m);
    let dup = inheritable_dup(m.as_fd().as_raw_fd());
    let tmp = tempfile::tempdir().unwrap();
    // Killed on drop, so a failing assertion leaves no process holding maps.
    struct Kid(std::process::Child);
    impl Drop for Kid {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kid(child_with_comm(tmp.path(), b"bpfmap-api-kid"));
    // Only that child inherits the dup (not the commands run below).
    // SAFETY: fcntl on an fd we own.
    assert_eq!(
        unsafe { libc::fcntl(dup.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) },
        0
    );
    let fs = PrivateBpffs::new();
    let pin = fs.path().join("t_api_pin");
    let mut pinned = MapHandle::from_map_id(id).unwrap();
    pinned.pin(&pin).unwrap();
    drop(pinned);
    let prog = prog_using_map(m.as_fd().as_raw_fd());
    let prog_id = fdinfo_field(prog.as_raw_fd(), "prog_id:");
    let outer = array_of_maps("t_api_outer", &m);
    set_slot(&outer, 0, &m);
    set_slot(&outer, 2, &m);
    let outer_id = id_of(&outer);
    // Some hosts refuse tracing programs other than the census's own
    // iterators (this development host answers EPERM, as for fentry):
    // there the link cannot exist, and the API must show none.
    let link = match map_iter_link(m.as_fd().as_raw_fd()) {
        Ok(l) => Some(l),
        Err(libc::EPERM) => {
            eprintln!("iter/bpf_map_elem refused with EPERM here: no map-bound iterator link (the kernel matrix checks one)");
            None
        }
        Err(e) => panic!(
            "loading iter/bpf_map_elem: {}",
            std::io::Error::from_raw_os_error(e)
        ),
    };
    let link_id = link
        .as_ref()
        .map(|(_, l)| fdinfo_field(l.as_raw_fd(), "link_id:"));
    let links = link_id.is_some() as i64;
    // An mmap'ed array whose fd is closed.
    let mm = map(MapType::Array, "t_api_mmap", 4, 8, 512, 0x400);
    let mm_id = id_of(&mm);
    let len = 4096usize;
    // SAFETY: mapping a valid BPF_F_MMAPABLE array fd, unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            mm.as_fd().as_raw_fd(),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    drop(mm);
    // A map held only by the file table of an io_uring that only this
    // thread's registered-ring table holds (5.18+): no walk reaches it, so
    // its reference is unexplained. Before 5.18 the ring keeps its fd, and
    // the census withholds what it cannot name.
    let leak = map(MapType::Array, "t_api_leak", 4, 4, 1, 0);
    let leak_id = id_of(&leak);
    let ring = uring_fixed_file(leak.as_fd().as_raw_fd());
    drop(leak);
    let ring = bpfmap_exporter::sys::io_uring_hide_ring(ring)
        .err()
        .map(|(_, r)| r);
    assert_eq!(
        ring.is_none(),
        kernel_at_least(5, 18),
        "IORING_REGISTER_RING_FDS is 5.18+"
    );

    let one = until(port, &format!("/api/v1/maps/{id}"), "t_api settled", |v| {
        v["maps"][0]["refcount"] == json!(5 + links)
            && v["maps"][0]["creator"]["process"].is_object()
            && v["maps"][0]["holders"]["file"].as_array().map(|a| a.len()) == Some(2)
    });
    assert_eq!(one["schema_version"], json!(4));
    let r = &one["maps"][0];
    assert_eq!(
        (r["id"].clone(), r["name"].clone(), r["type"].clone()),
        (json!(id), json!("t_api"), json!("array"))
    );
    // refcount 6: 1 file (the dup and the child share it), 1 pin, 1
    // program, 2 slots, 1 link.
    assert_eq!(r["unexplained"], json!(0), "{r:#}");
    assert_eq!(r["usercount"], json!(2 + links), "file, pin, link");
    let h = &r["holders"];
    let mut fds = vec![m.as_fd().as_raw_fd() as u32, dup.as_raw_fd() as u32];
    fds.sort_unstable();
    let kid = child.0.id();
    let kid_comm = std::fs::read_to_string(format!("/proc/{kid}/comm")).unwrap();
    assert_eq!(
        h["file"],
        json!([
            {"pid": me, "comm": std::fs::read_to_string("/proc/self/comm").unwrap().trim(),
             "container_id": "", "pod_uid": "", "fds": fds, "fds_omitted": 0, "files": 1},
            {"pid": kid, "comm": kid_comm.trim(), "container_id": "", "pod_uid": "",
             "fds": [dup.as_raw_fd()], "fds_omitted": 0, "files": 1},
        ]),
        "{h:#}"
    );
    let mount = fs.path().to_string_lossy().to_string();
    assert_eq!(h["pin"], json!([{"mount": mount, "path": "/t_api_pin"}]));
    assert_eq!(
        h["program"],
        json!([{"id": prog_id, "name": "", "type": "socket_filter"}])
    );
    assert_eq!(
        h["map"],
        json!([{"id": outer_id, "key": "0"}, {"id": outer_id, "key": "2"}])
    );
    match link_id {
        Some(l) => assert_eq!(h["link"], json!([{"id": l}])),
        None => assert_eq!(h["link"], json!([])),
    }
    assert_eq!(h["mmap"], json!([]));
    assert_eq!(
        r["holder_counts"],
        json!({"file": 1, "pin": 1, "program": 1, "map": 2, "mmap": 0, "link": links, "inflight": 0, "io_uring": 0, "struct_ops": 0})
    );
    assert_eq!(r["holders_omitted"], json!({}));
    // The creating process, from the lifecycle records.
    let p = &r["creator"]["process"];
    assert_eq!(
        (p["pid"].clone(), p["comm"].clone()),
        (json!(me), json!(my_comm)),
        "{p:#}"
    );
    let age = p["age_seconds"].as_f64().unwrap();
    assert!((0.0..60.0).contains(&age), "age {age}");
    assert_eq!(r["creator"]["process_unknown"], Value::Null);

    // The mmap: its file and size, never its address (iter/task_vma, 5.15+; before, the
    // mmap is an unexplained reference and no identity is shown).
    let v = get(port, &format!("/api/v1/maps/{mm_id}")).json();
    let mr = &v["maps"][0];
    if !kernel_at_least(5, 15) {
        assert_eq!(mr["holders"]["mmap"], json!([]));
        // Where this process's ring (an fd before 5.18) cannot be walked
        // (before 5.17), its fdinfo lists a map file the census cannot name:
        // any reference it could hold is withheld, this one too.
        let blind = ring.is_some() && !kernel_at_least(5, 17);
        let want = if blind { Value::Null } else { json!(1) };
        assert_eq!(mr["unexplained"], want);
    } else {
        assert_eq!(
            mr["holders"]["mmap"],
            json!([{"pid": me, "comm": std::fs::read_to_string("/proc/self/comm").unwrap().trim(),
                "size_bytes": len, "fd": null, "in_fd_table": false}])
        );
        assert_eq!(mr["unexplained"], json!(0));
    }

    // The map from before the exporter started.
    let v = get(port, &format!("/api/v1/maps/{old_id}")).json();
    assert_eq!(v["maps"][0]["creator"]["process"], Value::Null);
    assert!(v["maps"][0]["creator"]["process_unknown"]
        .as_str()
        .unwrap()
        .contains("existed before"));

    // Selections: name, pin, pid.
    let v = get(port, "/api/v1/maps?name=t_api").json();
    assert_eq!(v["maps"][0]["id"], json!(id));
    assert_eq!(v["total"], json!(1));
    let v = get(
        port,
        &format!(
            "/api/v1/maps?pin={}",
            pin.to_string_lossy().replace('/', "%2F")
        ),
    )
    .json();
    assert_eq!(v["maps"][0]["id"], json!(id));
    let v = get(port, &format!("/api/v1/maps?pid={kid}")).json();
    let ids: Vec<u64> = v["maps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![id as u64], "the child holds only the dup's map");

    // The program: its facts, the map it uses, its file holder, its chain.
    let v = get(port, &format!("/api/v1/programs/{prog_id}")).json();
    assert_eq!(v["schema_version"], json!(4));
    let p = &v["programs"][0];
    assert_eq!(
        (p["id"].clone(), p["type"].clone()),
        (json!(prog_id), json!("socket_filter"))
    );
    assert_eq!(
        p["maps"],
        json!([{"id": id, "name": "t_api", "type": "array"}])
    );
    assert_eq!(p["holders"]["file"][0]["pid"], json!(me));
    assert_eq!(p["holder_counts"]["file"], json!(1));
    assert_eq!(p["unexplained"], json!(0));
    assert_eq!(p["roots"][0]["root"]["kind"], json!("process"));
    let v = get(port, "/api/v1/programs?limit=1").json();
    assert_eq!(v["programs"].as_array().unwrap().len(), 1);
    assert!(v["total"].as_u64().unwrap() >= 1);
    let resp = get(port, "/api/v1/programs/4294967295");
    assert_eq!(resp.code, 404);
    assert!(resp.json()["error"]
        .as_str()
        .unwrap()
        .contains("no program with id"));
    assert_eq!(get(port, "/api/v1/programs?pid=1").code, 400);
    // Links: a listing of the node's links (maybe none), and a clear 404.
    let v = get(port, "/api/v1/links?limit=1").json();
    assert_eq!(v["schema_version"], json!(4));
    assert!(v["links"].as_array().unwrap().len() <= 1);
    assert!(v["total"].is_u64());
    let resp = get(port, "/api/v1/links/4294967295");
    assert_eq!(resp.code, 404);
    assert!(resp.json()["error"]
        .as_str()
        .unwrap()
        .contains("no link with id"));
    assert_eq!(get(port, "/api/v1/links?pid=1").code, 400);

    // Filters: unexplained (the io_uring map) and creator_gone.
    if ring.is_some() {
        // Before 5.18 the ring's fd is in this process's table; before 5.17
        // its table cannot be walked, and its fdinfo lists a map file the
        // census cannot name: the count is withheld, not published.
        let v = get(port, &format!("/api/v1/maps/{leak_id}")).json();
        assert_eq!(v["maps"][0]["unexplained"], Value::Null, "{v:#}");
        assert!(
            v["maps"][0]["unexplained_withheld"]
                .as_str()
                .unwrap()
                .contains("io_uring"),
            "{v:#}"
        );
    }
    if ring.is_none() {
        let v = until(
            port,
            "/api/v1/maps?unexplained=1&limit=1000",
            "leak listed",
            |v| {
                v["maps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["id"] == json!(leak_id))
            },
        );
        for m in v["maps"].as_array().unwrap() {
            assert!(m["unexplained"].as_i64().unwrap() > 0, "{m:#}");
        }
        assert_eq!(by_name(&v, "t_api_leak")["unexplained"], json!(1));
        assert!(!v["maps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == json!(id)));
    }

    if !kernel_at_least(5, 11) {
        // No memcg accounting of maps: the cgroup is unknown and says why,
        // the process is still known from the lifecycle records.
        let c = &r["creator"];
        assert_eq!(c["known"], json!(false));
        assert!(c["reason"].as_str().unwrap().contains("5.11"), "{c:#}");
    } else {
        let cg = PodCgroup::new(
            &format!("bpfmap-api-{}", std::process::id()),
            &("c0ffee".repeat(10) + "c0ffee12"),
        );
        let ctr = cg.ctr.clone();
        let orphan_pin = fs.path().join("t_api_orphan");
        let pid = create_in(&ctr, &orphan_pin, "t_api_orphan");
        drop(cg); // the container and pod cgroups go; the pinned map stays
        let v = until(
            port,
            "/api/v1/maps?creator_gone=1&limit=1000",
            "orphan listed",
            |v| {
                v["maps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["name"] == json!("t_api_orphan"))
            },
        );
        for m in v["maps"].as_array().unwrap() {
            assert_eq!(m["creator"]["gone"], json!(true), "{m:#}");
        }
        let o = by_name(&v, "t_api_orphan");
        assert_eq!(o["creator"]["process"]["pid"], json!(pid), "{o:#}");
        assert_eq!(o["creator"]["process"]["comm"], json!("bpftool"));
        // explain --from says who created it, and how long ago.
        let out = Command::new(BIN)
            .args([
                "explain",
                "--from",
                &format!("http://127.0.0.1:{port}"),
                "--pin",
            ])
            .arg(&orphan_pin)
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            t.contains(&format!("created by pid {pid} (bpftool), ")),
            "{t}"
        );
        assert!(
            t.contains("unknown: its cgroup was removed before this exporter saw it"),
            "{t}"
        );
        let _ = std::fs::remove_file(&orphan_pin);
    }

    // Paging: limit and after.
    let all = get(port, "/api/v1/maps?limit=1000").json();
    let total = all["total"].as_u64().unwrap();
    assert!(total >= 5, "{total}");
    let p1 = get(port, "/api/v1/maps?limit=2").json();
    assert_eq!(p1["maps"].as_array().unwrap().len(), 2);
    assert_eq!(p1["truncated"], json!(true));
    let after = p1["next_after"].as_u64().unwrap();
    assert_eq!(after, p1["maps"][1]["id"].as_u64().unwrap());
    let p2 = get(port, &format!("/api/v1/maps?limit=2&after={after}")).json();
    assert!(p2["maps"][0]["id"].as_u64().unwrap() > after);
    // The default page is bounded.
    let d = get(port, "/api/v1/maps").json();
    assert!(d["maps"].as_array().unwrap().len() <= 100);

    // explain --from agrees with the API (JSON), and fails like explain.
    let out = Command::new(BIN)
        .args([
            "explain",
            "--from",
            &format!("http://127.0.0.1:{port}"),
            "--id",
            &id.to_string(),
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["maps"][0]["holders"], r["holders"]);
    let out = Command::new(BIN)
        .args([
            "explain",
            "--from",
            &format!("http://127.0.0.1:{port}"),
            "--id",
            "2147483647",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no map with id 2147483647"));

    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(addr, len) };
    drop(child);
    drop((ring, link, outer, prog, dup, m, old));
}

/// `GET path` sent on a new connection, its answer read later
/// ([`read_response`]).
fn send(port: u16, path: &str) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    c
}

/// The answer on `c`, which must be a 200.
fn ok_answer(c: TcpStream, what: &str) -> Resp {
    let r = read_response(c).unwrap();
    assert_eq!(r.code, 200, "{what}: {}", r.text());
    r
}

#[test]
fn api_requests_share_one_census_never_one_from_before_they_arrived() {
    require_root();
    ensure_bpffs();
    // Every census takes this much longer once it read the kernel, so
    // requests sent meanwhile arrive while it runs.
    const DELAY: Duration = Duration::from_secs(2);
    let mut cmd = Command::new(BIN);
    cmd.env("BPFMAP_TEST_CENSUS_DELAY_MS", DELAY.as_millis().to_string());
    let mut s = Exporter::spawn(cmd, &["--no-collector.lifecycle"]);
    s.wait_until(
        "healthy",
        Duration::from_secs(90),
        |port| matches!(try_request(port, "GET", "/healthz", None), Ok(r) if r.code == 200),
    );
    let port = s.port;
    let scrapes = || counter(&get(port, "/metrics").text(), "bpfmap_scrapes_total");
    let settle = || std::thread::sleep(Duration::from_millis(300));

    // 24 API requests, six times the API gate's slots, that arrive
    // together (while a scrape's census runs) cost one census: the 20 that
    // wait for a slot are answered from the census the first 4 asked for,
    // which began after all of them arrived.
    let before = scrapes();
    let busy = send(port, "/metrics");
    settle();
    let api: Vec<TcpStream> = (0..24)
        .map(|_| send(port, "/api/v1/maps?limit=5"))
        .collect();
    for c in api {
        ok_answer(c, "an API request waiting for a slot");
    }
    ok_answer(busy, "the scrape");
    let censuses = scrapes() - before;
    assert_eq!(
        censuses, 3.0,
        "the scrape, one census for the 24 API requests and the last scrape"
    );

    // Freshness: a request that arrives while a census runs is answered
    // from the next one, so a map created before the request is in it.
    let first = send(port, "/api/v1/maps?limit=1");
    settle();
    let m = map(MapType::Hash, "t_api_fresh", 4, 4, 1, 0);
    let id = id_of(&m);
    let r = get(port, &format!("/api/v1/maps/{id}"));
    assert_eq!(
        r.code,
        200,
        "a map created before its request: {}",
        r.text()
    );
    assert_eq!(r.json()["maps"][0]["id"], json!(id));
    ok_answer(first, "the request whose census was running");

    // Nor from the census shared with the requests it waits behind: 4
    // requests take every slot and share a census that begins after a
    // scrape; a fifth one arrives once that census began and waits for a
    // slot while the census is kept for it.
    let before = scrapes();
    let busy = send(port, "/metrics");
    settle();
    let holders: Vec<TcpStream> = (0..4).map(|_| send(port, "/api/v1/maps?limit=5")).collect();
    // The scrape's census ends DELAY after it began; theirs begins then.
    std::thread::sleep(DELAY);
    let m2 = map(MapType::Hash, "t_api_fresh2", 4, 4, 1, 0);
    let id2 = id_of(&m2);
    let r = get(port, &format!("/api/v1/maps/{id2}"));
    assert_eq!(
        r.code,
        200,
        "a map created before a request that waited for a slot: {}",
        r.text()
    );
    assert_eq!(r.json()["maps"][0]["id"], json!(id2));
    for c in holders {
        ok_answer(c, "a request holding a slot");
    }
    ok_answer(busy, "the scrape");
    assert_eq!(
        scrapes() - before,
        4.0,
        "the scrape, the 4 requests' census, the fifth one's, the last scrape"
    );
    drop((m, m2, s));
}

/// The answer on `c`, read on a thread, with when its first byte came.
fn timed(c: TcpStream) -> std::thread::JoinHandle<(Instant, Resp)> {
    std::thread::spawn(move || {
        c.peek(&mut [0u8; 1]).unwrap();
        let at = Instant::now();
        (at, read_response(c).unwrap())
    })
}

#[test]
fn api_censuses_alive_at_once_are_bounded_and_answers_stay_fresh() {
    require_root();
    ensure_bpffs();
    // Every JSON API response holds its census this long after its
    // headers, before its body is written.
    const HOLD: Duration = Duration::from_secs(3);
    // Between a response's headers being sent and its client reading them.
    const SLACK: Duration = Duration::from_millis(250);
    let mut cmd = Command::new(BIN);
    cmd.env(
        "BPFMAP_TEST_API_WRITE_DELAY_MS",
        HOLD.as_millis().to_string(),
    );
    let mut s = Exporter::spawn(cmd, &["--no-collector.lifecycle"]);
    s.wait_until(
        "healthy",
        Duration::from_secs(90),
        |port| matches!(try_request(port, "GET", "/healthz", None), Ok(r) if r.code == 200),
    );
    let port = s.port;
    let scrapes = || counter(&get(port, "/metrics").text(), "bpfmap_scrapes_total");
    let before = scrapes();
    // The first request's census, held HOLD by its response.
    let first = timed(send(port, "/api/v1/maps?limit=1"));
    std::thread::sleep(Duration::from_millis(500));
    // The second, for a map created after that census began, needs a new
    // census: it is taken only once the first one is freed (one API
    // census alive at once), and it is fresh.
    let m = map(MapType::Hash, "t_api_bound", 4, 4, 1, 0);
    let id = id_of(&m);
    let second = timed(send(port, &format!("/api/v1/maps/{id}")));
    // Scrapes do not wait for it.
    let t = Instant::now();
    let r = get(port, "/metrics");
    assert_eq!(r.code, 200);
    let scrape_took = t.elapsed();
    let (h1, r1) = first.join().unwrap();
    let (h2, r2) = second.join().unwrap();
    for (r, what) in [(&r1, "first"), (&r2, "second")] {
        assert_eq!(r.code, 200, "{what}: {}", r.text());
    }
    assert!(
        h2 + SLACK >= h1 + HOLD,
        "a second census was taken while the first was alive: answered {:?} after the first, which holds its census {HOLD:?}",
        h2 - h1
    );
    assert!(
        scrape_took + SLACK < HOLD,
        "a scrape waited for the API census: {scrape_took:?}"
    );
    assert_eq!(
        r2.json()["maps"][0]["id"],
        json!(id),
        "the census of the request that waited is fresh"
    );
    assert_eq!(
        scrapes() - before,
        4.0,
        "two API censuses, the scrape meanwhile and the last scrape"
    );
    drop((m, s));
}

#[test]
fn api_errors_methods_head_auth_and_single_flight() {
    require_root();
    ensure_bpffs();
    let s = start(&["--no-collector.lifecycle"], None);
    let port = s.port;
    let m = map(MapType::Hash, "t_api_err", 4, 4, 1, 0);
    let id = id_of(&m);
    until(port, &format!("/api/v1/maps/{id}"), "map listed", |v| {
        v["maps"][0]["id"] == json!(id)
    });
    // Unknown id: 404 with a JSON error.
    let r = get(port, "/api/v1/maps/2147483647");
    assert_eq!(r.code, 404);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("no map with id 2147483647"));
    // Bad parameters: 400 naming them.
    for (path, want) in [
        ("/api/v1/maps?limit=0", "parameter limit"),
        ("/api/v1/maps?limit=100000", "parameter limit"),
        ("/api/v1/maps?unexplained=maybe", "parameter unexplained"),
        ("/api/v1/maps?colour=red", "unknown parameter \"colour\""),
        ("/api/v1/maps/abc", "map id \"abc\""),
        ("/api/v1/maps?pid=x", "parameter pid"),
    ] {
        let r = get(port, path);
        assert_eq!(r.code, 400, "{path}");
        assert!(
            r.json()["error"].as_str().unwrap().contains(want),
            "{path}: {:?}",
            r.json()
        );
    }
    let r = get(port, "/api/v1/maps?pin=%2Fnot%2Fa%2Fpin");
    assert_eq!(r.code, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("is not a pin"));
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // A pid that does not exist is answered as one that holds nothing.
    let r = get(port, &format!("/api/v1/maps?pid={pid_max}"));
    assert_eq!(r.code, 200);
    assert_eq!(r.json()["total"], json!(0));
    // Without lifecycle, the creator process says why it is unknown.
    let v = get(port, &format!("/api/v1/maps/{id}")).json();
    assert!(v["maps"][0]["creator"]["process_unknown"]
        .as_str()
        .unwrap()
        .contains("lifecycle collector is off"));
    // HEAD: the GET's status and type, no body; methods as on /metrics.
    let h = try_request(port, "HEAD", &format!("/api/v1/maps/{id}"), None).unwrap();
    assert_eq!(h.code, 200);
    assert!(h.body.is_empty());
    assert_eq!(
        h.header("content-type").as_deref(),
        Some("application/json")
    );
    let h = try_request(port, "HEAD", "/api/v1/maps/2147483647", None).unwrap();
    assert_eq!(h.code, 404);
    for method in ["POST", "PUT", "DELETE"] {
        let r = try_request(port, method, "/api/v1/maps", None).unwrap();
        assert_eq!(r.code, 405, "{method}");
        assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
    }

    // Single flight: scrapes and API requests arriving together share
    // censuses.
    let before = counter(
        &String::from_utf8(get(port, "/metrics").body).unwrap(),
        "bpfmap_scrapes_total",
    );
    let mut conns: Vec<(bool, TcpStream)> = (0..40)
        .map(|i| (i % 2 == 0, TcpStream::connect(("127.0.0.1", port)).unwrap()))
        .collect();
    for (api, c) in conns.iter_mut() {
        let path = if *api {
            "/api/v1/maps?limit=5"
        } else {
            "/metrics"
        };
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
    }
    for (_, mut c) in conns {
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).unwrap();
        assert!(
            raw.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&raw[..raw.len().min(300)])
        );
    }
    let after = counter(
        &String::from_utf8(get(port, "/metrics").body).unwrap(),
        "bpfmap_scrapes_total",
    );
    let censuses = after - before - 1.0;
    // API requests leave no fd behind in the exporter (program, link and
    // outer-map queries close what they open).
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", s.child.id()))
            .unwrap()
            .count()
    };
    let fds_before = fds();
    for _ in 0..20 {
        assert_eq!(get(port, "/api/v1/maps?limit=1000").code, 200);
    }
    // A connection's socket can outlive its response by a moment (either
    // count may include one still closing): growth must go away.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut fds_after = fds();
    while fds_after > fds_before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        fds_after = fds();
    }
    assert!(
        fds_after <= fds_before,
        "exporter fds after 20 API requests: {fds_after}, before: {fds_before}"
    );
    eprintln!("censuses for 20 scrapes and 20 API requests together: {censuses}");
    // One on an idle host; an emulated guest accepts the connections
    // slowly, so some arrive after a census began: at most a fifth.
    assert!(
        (1.0..=8.0).contains(&censuses),
        "{censuses} censuses for 40 simultaneous requests"
    );
    drop(s);

    // Basic auth guards the API as it guards /metrics.
    let d = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("pw", 4).unwrap();
    let cfg = d.path().join("web.yml");
    std::fs::write(&cfg, format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
    let s = start(
        &[
            "--no-collector.lifecycle",
            &format!("--web.config.file={}", cfg.display()),
        ],
        Some("alice:pw"),
    );
    let r = get(s.port, "/api/v1/maps?limit=1");
    assert_eq!(r.code, 401);
    let r = try_request(
        s.port,
        "GET",
        &format!("/api/v1/maps/{id}"),
        Some("alice:pw"),
    )
    .unwrap();
    assert_eq!(r.code, 200);
    assert_eq!(r.json()["maps"][0]["id"], json!(id));
    // explain --from with user:password@.
    let out = Command::new(BIN)
        .args([
            "explain",
            "--from",
            &format!("http://alice:pw@127.0.0.1:{}", s.port),
            "--id",
            &id.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"t_api_err\""));
    drop(m);
}
