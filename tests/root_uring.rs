//! Root integration tests of io_uring registered files as holders: a map
//! and a program whose files only an io_uring's table holds are explained
//! by it (the ring's owner is their root) where the kernel lets the table be
//! walked (bpf_loop, 5.17+); before, the census withholds what it cannot
//! name rather than calling it unexplained.
mod common;

use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd};

use bpfmap_exporter::census::holders::HolderKind;
use bpfmap_exporter::census::programs::ProgHolderKind;
use bpfmap_exporter::census::roots::{Obj, Root};
use bpfmap_exporter::census::{Census, CensusOpts};
use common::*;
use libbpf_rs::MapType;

fn prog_id(fd: &impl AsRawFd) -> u32 {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("prog_id:"))
        .expect("fdinfo prog_id")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn io_uring_registered_files_hold_maps_and_programs() {
    require_root();
    unlimit_memlock();
    let held = map(MapType::Hash, "ur_held", 4, 4, 8, 0);
    let used = map(MapType::Hash, "ur_used", 4, 4, 8, 0);
    let prog = prog_using_map(used.as_fd().as_raw_fd());
    let (held_id, used_id, pid) = (id_of(&held), id_of(&used), prog_id(&prog));
    let ring = bpfmap_exporter::sys::io_uring_with_files(&[held.as_fd(), prog.as_fd()])
        .expect("io_uring_setup + IORING_REGISTER_FILES");
    drop((held, used, prog));
    let mut census = Census::load(CensusOpts {
        keep_files: true,
        ..Default::default()
    })
    .expect("census loads");
    let walks = kernel_at_least(5, 17);
    let s = until(&mut census, "the ring's objects in the census", |s| {
        s.maps.iter().any(|m| m.id == held_id)
    });
    let me = std::process::id();
    let m = s.maps.iter().find(|m| m.id == held_id).unwrap();
    assert_eq!((m.refcnt, m.usercnt), (1, 1), "one registered file");
    let h = &s.holders[&held_id];
    let complete = s
        .sources
        .iter()
        .find(|(n, _)| *n == "io_uring")
        .map(|(_, c)| *c);
    if walks {
        assert_eq!(complete, Some(true));
        assert_eq!(h.get(HolderKind::IoUring), Some(1));
        assert_eq!(h.unexplained(1), Some(0));
        let p = &s.prog_holders[&pid];
        assert_eq!(p.get(ProgHolderKind::IoUring), Some(1));
        assert_eq!(p.get(ProgHolderKind::File), Some(0));
        assert_eq!(p.unexplained(1), Some(0));
        // The ring's owner is the root of the map, and of the map its
        // program uses.
        assert_eq!(
            s.graph.roots(Obj::Map(held_id)),
            BTreeSet::from([Root::IoUring(me)])
        );
        assert_eq!(
            s.graph.roots(Obj::Map(used_id)),
            BTreeSet::from([Root::IoUring(me)])
        );
        assert!(text(&s).contains(&format!(
            "bpfmap_map_holders{{id=\"{held_id}\",kind=\"io_uring\"}} 1\n"
        )));
        // explain --pid names the ring's maps.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bpfmap-exporter"))
            .args(["explain", "--pid", &me.to_string()])
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(t.contains(&format!("map {held_id} \"ur_held\"")), "{t}");
        assert!(
            t.contains(&format!(
                "io_uring ring fd {} of process pid {me}",
                ring.as_raw_fd()
            )),
            "{t}"
        );
        assert!(t.contains("unexplained: 0"), "{t}");
    } else {
        // No bpf_loop: the ring's fdinfo lists a map file the census cannot
        // name, so the source is incomplete and the count withheld.
        assert_eq!(complete, Some(false));
        assert_eq!(h.get(HolderKind::IoUring), Some(0));
        assert_eq!(h.unexplained(1), None);
        assert!(!text(&s).contains(&format!("bpfmap_map_unexplained_refs{{id=\"{held_id}\"}}")));
    }
    drop(ring);
    until(&mut census, "the ring's map freed with it", |s| {
        !s.maps.iter().any(|m| m.id == held_id)
    });
}
