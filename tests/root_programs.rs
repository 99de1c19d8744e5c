//! Root integration tests of programs as census objects on the running
//! kernel: every live program with its type, tag, memory, refcount and the
//! maps it uses, checked against bpftool; its holders (files, pins, links,
//! prog_array slots); and references no readable source explains withheld,
//! never guessed.
mod common;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use bpfmap_exporter::census::programs::ProgHolderKind;
use bpfmap_exporter::census::{Census, CensusOpts, ProgRecord, Snapshot};
use common::*;
use libbpf_rs::{MapCore, MapFlags, MapType};

fn prog_id(fd: &OwnedFd) -> u32 {
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info and len are valid for the call; no arrays are asked for.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_obj_get_info_by_fd(
            fd.as_raw_fd(),
            (&mut info as *mut libbpf_rs::libbpf_sys::bpf_prog_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "program info");
    info.id
}

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

    // A socket filter (SO_ATTACH_BPF) holds a reference no readable source
    // sees: the count is withheld, not reported as unexplained.
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
    assert_eq!(holders(&s, id), ([0, 1, 0, 0, 0], None));
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
    assert!(
        !text.contains(&format!("bpfmap_program_unexplained_refs{{id=\"{id}\"}}")),
        "an attachment's reference is withheld, never published as unexplained"
    );
    assert!(text.contains("bpfmap_program_holder_source_complete{source=\"attachments\"} 0\n"));
    drop(sock);
}
