//! Root integration test of struct_ops members: a BPF TCP congestion
//! control (bpf/test/tcp_ca.bpf.c) registered through its struct_ops map.
//! Each member program is held once by the map (one reference per member,
//! an internal link with no id), which the census reads from the map's
//! value (a syscall lookup gives each member's program id) and counts as a
//! `struct_ops` holder: the programs' unexplained counts are exact, checked
//! against the kernel's refcount and bpftool's `struct_ops dump`.
mod common;

use std::os::fd::{AsFd, AsRawFd};
use std::process::Command;

use bpfmap_exporter::census::holders::HolderKind;
use bpfmap_exporter::census::programs::ProgHolderKind;
use bpfmap_exporter::census::roots::{Holder, Obj, Root};
use bpfmap_exporter::census::{Census, CensusOpts};
use common::*;
use libbpf_rs::libbpf_sys;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::MapCore;

#[allow(clippy::all, missing_docs, non_camel_case_types, unused)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/test_tcp_ca.skel.rs"));
}

#[test]
fn struct_ops_members_are_held_by_their_map() {
    require_root();
    unlimit_memlock();
    let mut storage = std::mem::MaybeUninit::uninit();
    let open = skel::TcpCaSkelBuilder::default()
        .open(&mut storage)
        .expect("open the tcp_ca object");
    let mut sk = match open.load() {
        Ok(s) => s,
        Err(e) => {
            // Only a kernel that refuses BPF congestion controls (no
            // CONFIG_BPF_JIT, lockdown) may fail here: say so and fail, so
            // the absence is never silent.
            panic!("loading a struct_ops tcp_congestion_ops was refused: {e:#}");
        }
    };
    let link = sk
        .maps
        .bpfmap_ca
        .attach_struct_ops()
        .expect("registering the congestion control (BPF_MAP_UPDATE_ELEM)");
    let map_id = sk.maps.bpfmap_ca.info().expect("map info").info.id;
    let members = [
        ("ssthresh", prog_id(sk.progs.bpfmap_ssthresh.as_fd())),
        ("cong_avoid", prog_id(sk.progs.bpfmap_cong_avoid.as_fd())),
        ("undo_cwnd", prog_id(sk.progs.bpfmap_undo_cwnd.as_fd())),
    ];
    // bpftool reads the same value: each member names its program id.
    let out = Command::new("bpftool")
        .args(["struct_ops", "dump", "id", &map_id.to_string()])
        .output()
        .expect("bpftool");
    let dump = String::from_utf8_lossy(&out.stdout);
    for (m, id) in members {
        assert!(
            dump.contains(&format!("\"{m}\": ")) && dump.contains(&format!("/prog_id:{id}\"")),
            "bpftool struct_ops dump names {m} = {id}: {dump}"
        );
    }

    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, report) = census.take(&[]);
    assert!(report.succeeded("map_programs"), "{:?}", report.outcomes);
    assert!(
        s.prog_sources
            .iter()
            .any(|(n, ok)| *n == "struct_ops" && *ok),
        "struct_ops source complete: {:?}",
        s.prog_sources
    );
    for (m, id) in members {
        let h = &s.prog_holders[&id];
        let r = prog_refcnt(&s, id);
        // The skeleton's fd and the member.
        assert_eq!(r, 2, "program {id} ({m})");
        assert_eq!(h.get(ProgHolderKind::File), Some(1));
        assert_eq!(h.get(ProgHolderKind::StructOps), Some(1), "{m}");
        assert_eq!(h.unexplained(r), Some(0), "{m}");
        let t: Vec<&str> = s
            .attachments
            .iter()
            .filter(|a| a.prog_id == id)
            .map(|a| a.target.as_str())
            .collect();
        assert_eq!(
            t,
            [format!("struct_ops map {map_id} (bpfmap_ca) member {m}")]
        );
        // The map holds it: its chain goes on through the map.
        assert!(
            s.graph
                .holders(Obj::Prog(id))
                .contains(&Holder::Obj(Obj::Map(map_id))),
            "map {map_id} holds program {id}"
        );
    }

    // The map itself: the skeleton's fd and the registration (no link).
    let struct_ops_refs = |s: &bpfmap_exporter::census::Snapshot| {
        let rec = s.maps.iter().find(|m| m.id == map_id).expect("the map");
        let h = &s.holders[&map_id];
        assert_eq!(h.get(HolderKind::File), Some(1), "{h:?}");
        assert_eq!(
            h.unexplained(rec.refcnt),
            Some(0),
            "{h:?} refcnt {}",
            rec.refcnt
        );
        (rec.refcnt, h.get(HolderKind::StructOps))
    };
    assert_eq!(struct_ops_refs(&s), (2, Some(1)), "registered, unused");
    assert!(
        s.graph
            .holders(Obj::Map(map_id))
            .contains(&Holder::Root(Root::Registered(map_id))),
        "a registered map is a live root of its own"
    );
    assert!(s.graph.roots(Obj::Map(map_id)).iter().any(|r| r.is_live()));

    // A TCP socket using it as its congestion control holds it: where
    // users hold the map itself (mainline 6.4+, and stable kernels with
    // that change backported: Debian's 6.1), one more map reference;
    // before, the users count inside the map, which keeps its one
    // registration reference.
    let sock = tcp_socket_using("bpfmap_test_ca");
    let (s, _) = census.take(&[]);
    let rec = s.maps.iter().find(|m| m.id == map_id).expect("the map");
    let users = rec.refcnt - 2;
    assert!(users == 0 || users == 1, "refcnt {}", rec.refcnt);
    if kernel_at_least(6, 4) {
        assert_eq!(users, 1, "6.4+: the socket holds the map");
    }
    assert_eq!(
        struct_ops_refs(&s),
        (2 + users, Some(1 + users as u64)),
        "registered, one socket using it"
    );
    // The kernel's own count in the value (bpftool reads the same lookup:
    // the registration and its one user, either way) agrees.
    let out = Command::new("bpftool")
        .args(["struct_ops", "dump", "id", &map_id.to_string(), "--json"])
        .output()
        .expect("bpftool");
    // bpftool 7.1 prints the map's info and its value as two JSON
    // objects separated by a comma, outside any array.
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<serde_json::Value> = serde_json::from_str(&format!("[{}]", text.trim()))
        .unwrap_or_else(|e| panic!("bpftool struct_ops dump --json: {e}: {text}"));
    let v = serde_json::Value::Array(v);
    assert_eq!(value_refcnt(&v), Some(2), "bpftool struct_ops dump: {v}");

    // Unregistered (the map's value deleted), the members still hold their
    // programs until the map is freed, and the lookup still names them.
    drop(link);
    let (s, _) = census.take(&[]);
    // The socket still uses the ops: the kernel keeps one reference for
    // it (the socket's own, or the registration's, kept for its users).
    assert_eq!(struct_ops_refs(&s), (2, Some(1)), "unregistered, in use");
    drop(sock);
    let s = until(&mut census, "the socket's reference dropped", |s| {
        s.maps.iter().any(|m| m.id == map_id && m.refcnt == 1)
    });
    assert_eq!(struct_ops_refs(&s), (1, Some(0)), "unregistered, unused");
    for (m, id) in members {
        let r = prog_refcnt(&s, id);
        assert_eq!(
            s.prog_holders[&id].get(ProgHolderKind::StructOps),
            Some((r - 1) as u64),
            "{m}: refcount {r}"
        );
        assert_eq!(s.prog_holders[&id].unexplained(r), Some(0), "{m}");
    }
    // Freed with the object: no program, no attachment left.
    drop(sk);
    let ids: Vec<u32> = members.iter().map(|m| m.1).collect();
    let s = until(&mut census, "the struct_ops programs freed", |s| {
        !s.programs.iter().flatten().any(|p| ids.contains(&p.id))
    });
    assert!(!s.attachments.iter().any(|a| ids.contains(&a.prog_id)));
}

/// A struct_ops map registered through a link (BPF_F_LINK, then
/// bpf_link_create): the link holds one reference on the map, counted as a
/// `link` holder and as the map's holder in the keep-alive graph, so the
/// map's unexplained count is exact (the skeleton's fd and the link).
#[test]
fn struct_ops_link_holds_its_map() {
    require_root();
    unlimit_memlock();
    let mut storage = std::mem::MaybeUninit::uninit();
    let mut open = skel::TcpCaSkelBuilder::default()
        .open(&mut storage)
        .expect("open the tcp_ca object");
    open.maps
        .bpfmap_ca
        .set_map_flags(libbpf_sys::BPF_F_LINK)
        .expect("BPF_F_LINK on the struct_ops map");
    let loaded = open.load();
    if !kernel_at_least(6, 4) {
        // struct_ops links (BPF_F_LINK on the map) are 6.4+: before, the
        // kernel refuses a struct_ops map with any flag (EINVAL).
        let e = loaded
            .err()
            .expect("a struct_ops map with BPF_F_LINK before 6.4");
        eprintln!("struct_ops links: this kernel (before 6.4) refuses BPF_F_LINK: {e}");
        return;
    }
    let mut sk = loaded.expect("loading a struct_ops tcp_congestion_ops (link mode)");
    let link = sk
        .maps
        .bpfmap_ca
        .attach_struct_ops()
        .expect("registering the congestion control through a struct_ops link");
    let map_id = sk.maps.bpfmap_ca.info().expect("map info").info.id;
    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, report) = census.take(&[]);
    assert!(report.succeeded("links"), "{:?}", report.outcomes);
    let lrec = s
        .links
        .iter()
        .flatten()
        .find(|l| l.target.map_id == Some(map_id))
        .unwrap_or_else(|| panic!("a struct_ops link on map {map_id}: {:?}", s.links));
    // The kernel's own link info names the same link and map.
    let mut info = libbpf_sys::bpf_link_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info and len are valid for the call; no arrays are asked for.
    let rc = unsafe {
        libbpf_sys::bpf_link_get_info_by_fd(link.as_fd().as_raw_fd(), &mut info, &mut len)
    };
    assert_eq!(rc, 0, "link info");
    // SAFETY: a struct_ops link's info fills the struct_ops member.
    let info_map = unsafe { info.__bindgen_anon_1.struct_ops.map_id };
    assert_eq!((info.id, info_map), (lrec.id, map_id), "BPF_LINK_GET_INFO");
    let rec = s
        .maps
        .iter()
        .find(|m| m.id == map_id)
        .expect("the struct_ops map in the census");
    let h = &s.holders[&map_id];
    assert_eq!(rec.refcnt, 2, "the skeleton's fd and the link: {h:?}");
    assert_eq!(h.get(HolderKind::File), Some(1), "{h:?}");
    assert_eq!(h.get(HolderKind::Link), Some(1), "{h:?}");
    assert_eq!(h.unexplained(rec.refcnt), Some(0), "{h:?}");
    assert!(
        s.graph
            .holders(Obj::Map(map_id))
            .contains(&Holder::Obj(Obj::Link(lrec.id))),
        "link {} holds map {map_id}",
        lrec.id
    );
    // Detached with the link: the reference and the holder go together.
    drop(link);
    let s = until(&mut census, "the struct_ops link freed", |s| {
        s.maps.iter().any(|m| m.id == map_id && m.refcnt == 1)
    });
    assert_eq!(s.holders[&map_id].get(HolderKind::Link), Some(0));
    assert_eq!(s.holders[&map_id].unexplained(1), Some(0));
    drop(sk);
}

/// A TCP socket whose congestion control is `name` (setsockopt
/// TCP_CONGESTION): it holds the congestion control while it is open.
fn tcp_socket_using(name: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a new socket nobody else owns.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: the option value is `name`'s bytes, with their length.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "TCP_CONGESTION {name}: {}",
        std::io::Error::last_os_error()
    );
    sock
}

/// The `refcnt` of a struct_ops value in bpftool's JSON dump, wherever the
/// kernel's BTF nests it (`refcnt.refs.counter`, under `common` since 6.9).
fn value_refcnt(v: &serde_json::Value) -> Option<u64> {
    fn number(v: &serde_json::Value) -> Option<u64> {
        v.as_u64()
            .or_else(|| v.as_object()?.values().find_map(number))
    }
    match v {
        serde_json::Value::Object(o) => o
            .get("refcnt")
            .and_then(number)
            .or_else(|| o.values().find_map(value_refcnt)),
        serde_json::Value::Array(a) => a.iter().find_map(value_refcnt),
        _ => None,
    }
}
