//! Root integration tests of programs as census objects on the running
//! kernel: every live program with its type, tag, memory, refcount and the
//! maps it uses, checked against bpftool; its holders (files, pins, links,
//! prog_array slots); and references no readable source explains withheld,
//! never guessed.
mod common;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use bpfmap_exporter::census::programs::ProgHolderKind;
use bpfmap_exporter::census::roots::{Obj, Root};
use bpfmap_exporter::census::{Census, CensusOpts, ProgRecord, Snapshot};
use common::*;
use libbpf_rs::{MapCore, MapFlags, MapType};

fn program<'a>(s: &'a Snapshot, id: u32) -> &'a ProgRecord {
    s.programs
        .as_ref()
        .expect("the programs part ran")
        .iter()
        .find(|p| p.id == id)
        .unwrap_or_else(|| panic!("program {id} not in the census"))
}

/// (file, pin, link, prog_array, io_uring) holders and the unexplained count.
fn holders(s: &Snapshot, id: u32) -> ([u64; 5], Option<i64>) {
    let h = &s.prog_holders[&id];
    use ProgHolderKind::*;
    let counts =
        [File, Pin, Link, ProgArray, IoUring].map(|k| h.get(k).expect("every readable kind known"));
    (counts, h.unexplained(program(s, id).refcnt))
}

/// bpftool's view of one program (the truth the census is checked against).
fn bpftool_prog(id: u32) -> serde_json::Value {
    let out = std::process::Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string(), "--json"])
        .output()
        .expect("bpftool runs (scripts/install-deps.sh installs it)");
    assert!(out.status.success(), "bpftool prog show id {id}");
    serde_json::from_slice(&out.stdout).expect("bpftool json")
}

#[test]
fn programs_are_census_objects_that_match_bpftool() {
    require_root();
    let m = map(MapType::Hash, "pr_used", 4, 4, 8, 0);
    let p = prog_using_map(m.as_fd().as_raw_fd());
    let id = prog_id(&p);
    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    assert!(census.features().iter_prog, "iter/bpf_prog exists on 5.9+");
    let (s, report) = census.take(&[]);
    assert!(report.succeeded("programs"), "{:?}", report.outcomes);
    let got = program(&s, id);
    let want = bpftool_prog(id);
    assert_eq!(want["type"], "socket_filter");
    assert_eq!(
        bpfmap_exporter::census::names::prog_type_label(got.prog_type),
        want["type"].as_str().unwrap()
    );
    assert_eq!(got.tag_hex(), want["tag"].as_str().unwrap());
    assert_eq!(got.memlock, want["bytes_memlock"].as_u64().unwrap());
    let maps: Vec<u32> = want["map_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(got.map_ids, maps);
    assert_eq!(got.map_ids, [id_of(&m)]);
    // Held by this test's one program file.
    assert_eq!(got.refcnt, 1);
    assert_eq!(holders(&s, id), ([1, 0, 0, 0, 0], Some(0)));
    // The census's own programs are its own, by identity: none of them is
    // listed among the node's.
    assert!(!s.own_programs.is_empty());
    for own in &s.own_programs {
        assert!(s.programs.as_ref().unwrap().iter().all(|p| p.id != own.id));
    }
    // The map's holder is this program.
    assert_eq!(
        s.holders[&id_of(&m)].get(bpfmap_exporter::census::holders::HolderKind::Program),
        Some(1)
    );
}

#[test]
fn program_holders_are_counted_by_kind_and_the_rest_is_withheld() {
    require_root();
    ensure_bpffs();
    let dir = std::path::PathBuf::from(format!("/sys/fs/bpf/bpfmap-progs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let m = map(MapType::Array, "pr_arr", 4, 4, 1, 0);
    let p = prog_using_map(m.as_fd().as_raw_fd());
    let id = prog_id(&p);
    let mut census = Census::load(CensusOpts::default()).expect("census loads");

    // A pin: one more reference, one pin holder.
    let pin = dir.join("prog");
    let c = std::ffi::CString::new(pin.to_str().unwrap()).unwrap();
    // SAFETY: a valid fd and a NUL-terminated path for the call.
    let rc = unsafe { libbpf_rs::libbpf_sys::bpf_obj_pin(p.as_raw_fd(), c.as_ptr()) };
    assert_eq!(rc, 0, "bpf_obj_pin");
    let (s, _) = census.take(&[]);
    assert_eq!(program(&s, id).refcnt, 2);
    assert_eq!(holders(&s, id), ([1, 1, 0, 0, 0], Some(0)));

    // A tail-call slot: prog_array slot 0 holds the program.
    let calls = map(MapType::ProgArray, "pr_calls", 4, 4, 4, 0);
    calls
        .update(
            &0u32.to_ne_bytes(),
            &(p.as_raw_fd() as u32).to_ne_bytes(),
            MapFlags::ANY,
        )
        .expect("prog_array update");
    let (s, _) = census.take(&[]);
    assert_eq!(program(&s, id).refcnt, 3);
    assert_eq!(holders(&s, id), ([1, 1, 0, 1, 0], Some(0)));
    calls.delete(&0u32.to_ne_bytes()).unwrap();

    // Closing the file leaves the pin alone: held by pins only.
    drop(p);
    let (s, _) = census.take(&[]);
    assert_eq!(program(&s, id).refcnt, 1);
    assert_eq!(holders(&s, id), ([0, 1, 0, 0, 0], Some(0)));
    assert!(s.prog_holders[&id].pins_only());

    // A socket filter (SO_ATTACH_BPF) holds a reference the socket source
    // reads: explained (0), though socket_filter programs' sources are
    // never all readable (xt_bpf, tun), which the metrics say.
    // SAFETY: a NUL-terminated path; the returned fd is checked and owned.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_obj_get(c.as_ptr()) };
    assert!(fd >= 0, "bpf_obj_get");
    // SAFETY: a fresh fd of ours.
    let p = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: plain socket(2).
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(sock >= 0);
    // SAFETY: a fresh fd of ours.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock) };
    let raw = p.as_raw_fd();
    // SAFETY: setsockopt reads 4 bytes from &raw, which outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_BPF,
            (&raw as *const i32).cast(),
            4,
        )
    };
    assert_eq!(rc, 0, "SO_ATTACH_BPF: {}", std::io::Error::last_os_error());
    drop(p);
    let (s, _) = census.take(&[]);
    assert_eq!(program(&s, id).refcnt, 2, "pin + socket filter");
    assert_eq!(holders(&s, id), ([0, 1, 0, 0, 0], Some(0)));
    assert_eq!(s.prog_holders[&id].get(ProgHolderKind::Socket), Some(1));
    assert!(!s.prog_holders[&id].exact);
    let mut out = bpfmap_exporter::metrics::Families::new();
    bpfmap_exporter::census::render::render(
        &s,
        &bpfmap_exporter::census::render::RenderOpts::all(),
        &|_, _| (String::new(), String::new()),
        &mut out,
    );
    let text = String::from_utf8(out.encode_text(&[]).unwrap()).unwrap();
    assert!(text.contains(&format!("bpfmap_program_info{{id=\"{id}\",")));
    assert!(text.contains(&format!(
        "bpfmap_program_holders{{id=\"{id}\",kind=\"pin\"}} 1\n"
    )));
    assert!(text.contains(&format!(
        "bpfmap_program_holders{{id=\"{id}\",kind=\"socket\"}} 1\n"
    )));
    assert!(text.contains("bpfmap_program_holder_source_complete{source=\"attachments\"} 0\n"));
    assert!(text.contains("bpfmap_program_holder_source_complete{source=\"xt_bpf\"} 0\n"));
    drop(sock);
}

/// A raw_tracepoint program (its type attaches through links only, so its
/// count is exact once every source that can hold any program was read)
/// whose one file is held by an io_uring that only this thread's
/// registered-ring table holds (5.18+): no walk reaches the file, and its
/// reference is published as unexplained, exactly, as is the map behind
/// it through the program. Before 5.18 the ring keeps its fd: the reference
/// is explained as `io_uring` where the ring's table can be walked (5.17),
/// and withheld before.
#[test]
fn a_program_reference_nothing_explains_is_published_exactly() {
    require_root();
    let m = map(MapType::Hash, "pr_leak_used", 4, 4, 8, 0);
    let p = prog_of_type_using_map(
        libbpf_rs::libbpf_sys::BPF_PROG_TYPE_RAW_TRACEPOINT,
        m.as_fd().as_raw_fd(),
    );
    let id = prog_id(&p);
    let map_id = id_of(&m);
    drop(m);
    let ring = uring_fixed_file(p.as_raw_fd());
    drop(p);
    let hidden = bpfmap_exporter::sys::io_uring_hide_ring(ring);
    assert_eq!(
        hidden.is_ok(),
        kernel_at_least(5, 18),
        "IORING_REGISTER_RING_FDS is 5.18+"
    );
    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, _) = census.take(&[]);
    let got = program(&s, id);
    assert_eq!(got.refcnt, 1, "the ring's file is the one reference");
    let h = &s.prog_holders[&id];
    let t = text(&s);
    if kernel_at_least(5, 18) {
        assert!(
            h.exact,
            "every source of a raw_tracepoint program was read: {t}"
        );
        assert_eq!(h.unexplained(got.refcnt), Some(1));
        assert!(
            t.contains(&format!(
                "bpfmap_program_unexplained_refs{{id=\"{id}\"}} 1\n"
            )),
            "{t}"
        );
        let r = s.graph.roots(Obj::Prog(id));
        assert!(r.contains(&Root::Unexplained(Obj::Prog(id))), "{r:?}");
        let r = s.graph.roots(Obj::Map(map_id));
        assert!(r.contains(&Root::Unexplained(Obj::Prog(id))), "{r:?}");
    } else if kernel_at_least(5, 17) {
        assert_eq!(h.get(ProgHolderKind::IoUring), Some(1), "{h:?}");
        assert_eq!(h.unexplained(got.refcnt), Some(0));
    } else {
        // No bpf_loop: the ring's table cannot be walked, and the count is
        // withheld rather than guessed.
        assert_eq!(h.unexplained(got.refcnt), None, "{h:?}");
        assert!(
            t.contains("bpfmap_program_holder_source_complete{source=\"io_uring\"} 0"),
            "{t}"
        );
    }
    drop(hidden);
}
