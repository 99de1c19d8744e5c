//! Root integration tests of keep-alive chains on the running kernel: maps
//! held through a pinned program, a pinned outer map, a pinned prog_array
//! in a tail-call cycle and an attached XDP link, created from a pod-like
//! memory cgroup that is then removed. The chains end at their roots; the
//! maps only pins keep alive are orphans, the one a live process or an
//! attachment keeps is not; each pin's retained memory is the bytes only it
//! keeps.
mod common;

use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bpfmap_exporter::census::roots::{Obj, PinId, Root};
use bpfmap_exporter::census::{Census, CensusOpts, Snapshot};
use common::*;
use libbpf_rs::{MapCore, MapFlags, MapType};

const CHILD_ENV: &str = "BPFMAP_ROOTS_CHILD_DIR";

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

/// Run in a child process inside the creating cgroup: make the chains and
/// pin their tops in the bpffs directory `dir`, then exit (every fd closes).
#[test]
fn child_creates_the_chains() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only as the child of the test below
    };
    let dir = PathBuf::from(dir);
    // map <- program <- pin
    let m = map(MapType::Hash, "rt_by_prog", 4, 4, 64, 0);
    let p = prog_using_map(m.as_fd().as_raw_fd());
    pin(&p, &dir.join("prog"));
    // map <- outer map <- pin
    let inner = map(MapType::Hash, "rt_inner", 4, 4, 64, 0);
    let outer = array_of_maps("rt_outer", &inner);
    set_slot(&outer, 0, &inner);
    pin(&outer.as_fd(), &dir.join("outer"));
    // A tail-call cycle: a prog_array whose slot holds a program that uses
    // the prog_array itself; the prog_array is pinned.
    let calls = map(MapType::ProgArray, "rt_calls", 4, 4, 4, 0);
    let tail = prog_using_map(calls.as_fd().as_raw_fd());
    calls
        .update(
            &0u32.to_ne_bytes(),
            &(tail.as_raw_fd() as u32).to_ne_bytes(),
            MapFlags::ANY,
        )
        .unwrap();
    pin(&calls.as_fd(), &dir.join("calls"));
    // map <- program <- pin, taken by the parent (a live process) later.
    let live = map(MapType::Hash, "rt_live", 4, 4, 64, 0);
    let lp = prog_using_map(live.as_fd().as_raw_fd());
    pin(&lp, &dir.join("live"));
    // map <- XDP program <- link attached to lo <- pin
    let xm = map(MapType::Hash, "rt_xdp", 4, 4, 64, 0);
    let xp = prog_of_type_using_map(
        libbpf_rs::libbpf_sys::BPF_PROG_TYPE_XDP,
        xm.as_fd().as_raw_fd(),
    );
    // SAFETY: valid fds; null opts means defaults (generic XDP mode on lo).
    let link = unsafe {
        libbpf_rs::libbpf_sys::bpf_link_create(
            xp.as_raw_fd(),
            1, // lo
            libbpf_rs::libbpf_sys::BPF_XDP,
            std::ptr::null(),
        )
    };
    assert!(
        link >= 0,
        "XDP link on lo: {}",
        std::io::Error::from_raw_os_error(-link)
    );
    // SAFETY: a fresh fd of ours.
    let link = unsafe { OwnedFd::from_raw_fd(link) };
    pin(&link, &dir.join("xdp_link"));
}

fn ino(p: &Path) -> PinId {
    let md = std::fs::metadata(p).unwrap();
    PinId {
        dev: md.dev(),
        ino: md.ino(),
    }
}

fn map_id(s: &Snapshot, name: &str) -> u32 {
    s.maps
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("map {name} in the census"))
        .id
}

#[test]
fn chains_end_at_their_roots_and_pins_alone_make_orphans() {
    require_root();
    unlimit_memlock();
    let cg = PodCgroup::new(
        &format!("bpfmap-roots-{}", std::process::id()),
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    let uid = cg.uid.clone();
    let fs = PrivateBpffs::new();
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_creates_the_chains",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, fs.path());
    // The child moves itself into the container's cgroup before it runs.
    cg.enter(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "child: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A live process (this one) takes the program of rt_live; its pin goes.
    let live_prog = obj_get(&fs.path().join("live"));
    std::fs::remove_file(fs.path().join("live")).unwrap();

    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let names = [
        "rt_by_prog",
        "rt_inner",
        "rt_outer",
        "rt_calls",
        "rt_live",
        "rt_xdp",
    ];
    let s = until(&mut census, "the chains' maps in the census", |s| {
        names.iter().all(|n| s.maps.iter().any(|m| m.name == *n))
    });
    let prog_pin = Root::Pin(ino(&fs.path().join("prog")));
    let outer_pin = Root::Pin(ino(&fs.path().join("outer")));
    let calls_pin = Root::Pin(ino(&fs.path().join("calls")));
    let link_pin = Root::Pin(ino(&fs.path().join("xdp_link")));
    let roots = |s: &Snapshot, n: &str| s.graph.roots(Obj::Map(map_id(s, n)));
    assert_eq!(roots(&s, "rt_by_prog"), BTreeSet::from([prog_pin]));
    assert_eq!(roots(&s, "rt_inner"), BTreeSet::from([outer_pin]));
    assert_eq!(roots(&s, "rt_outer"), BTreeSet::from([outer_pin]));
    assert_eq!(roots(&s, "rt_calls"), BTreeSet::from([calls_pin]));
    assert_eq!(
        roots(&s, "rt_live"),
        BTreeSet::from([Root::Process(std::process::id())])
    );
    let xdp = roots(&s, "rt_xdp");
    assert!(xdp.contains(&link_pin), "{xdp:?}");
    assert!(
        xdp.iter().any(|r| matches!(r, Root::Attachment(_))),
        "an attached XDP link is a live root: {xdp:?}"
    );
    // The chain through the program is printed hop by hop.
    let by_prog = map_id(&s, "rt_by_prog");
    let chains = s.graph.chains(Obj::Map(by_prog), 8);
    assert_eq!(chains.len(), 1);
    assert!(matches!(
        chains[0].0.as_slice(),
        [Obj::Map(_), Obj::Prog(_)]
    ));
    // Retained memory: the program pin alone keeps the program and its map.
    let prog_id = chains[0].0[1].id();
    let prog_mem = s
        .programs
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.id == prog_id)
        .unwrap()
        .memlock;
    assert_eq!(
        s.roots.retained[&ino(&fs.path().join("prog"))],
        prog_mem + memlock_by_id(by_prog)
    );

    // explain names the program's chain and what its pin alone keeps.
    let bin = env!("CARGO_BIN_EXE_bpfmap-exporter");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(bin)
            .arg("explain")
            .args(args)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let fs_path = fs.path().display().to_string();
    let (ok, out, err) = run(&["--prog", &prog_id.to_string()]);
    assert!(ok, "{err}");
    for want in [
        format!("program {prog_id} "),
        format!("uses map {by_prog} \"rt_by_prog\" hash"),
        format!("pin {fs_path}/prog"),
        "unexplained: 0".to_string(),
        format!(
            "program {prog_id} <- pin {fs_path}/prog (removing it frees {} bytes)",
            prog_mem + memlock_by_id(by_prog)
        ),
    ] {
        assert!(out.contains(&want), "missing {want:?} in\n{out}");
    }
    let (ok, out, err) = run(&["--pin", &format!("{fs_path}/prog")]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!(
            "pin {fs_path}/prog alone keeps alive (removing it frees {} bytes):",
            prog_mem + memlock_by_id(by_prog)
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("map {by_prog} \"rt_by_prog\"")),
        "{out}"
    );
    // The XDP link is a census object of its own: only its pin keeps it.
    let link_id = s
        .inventory
        .iter()
        .flat_map(|i| i.pins.iter())
        .find(|p| {
            Root::Pin(PinId {
                dev: p.dev,
                ino: p.ino,
            }) == link_pin
        })
        .map(|p| p.info.id)
        .expect("the link's pin in the walk");
    let link = s
        .links
        .iter()
        .flatten()
        .find(|l| l.id == link_id)
        .expect("the link in the census");
    assert_eq!(link.link_type, 6, "an xdp link");
    let lh = &s.link_holders[&link_id];
    assert_eq!((lh.files, lh.pins), (Some(0), Some(1)), "{lh:?}");
    assert!(lh.pins_only());
    let t = text(&s);
    for want in [
        format!(
            "bpfmap_link_info{{id=\"{link_id}\",link_type=\"xdp\",prog_id=\"{}\",attach_type=",
            link.prog_id
        ),
        format!("bpfmap_link_holders{{id=\"{link_id}\",kind=\"pin\"}} 1\n"),
    ] {
        assert!(t.contains(&want), "missing {want:?}");
    }
    // Its target names the device it is attached to.
    assert!(
        t.lines().any(
            |l| l.starts_with(&format!("bpfmap_link_info{{id=\"{link_id}\","))
                && l.contains(",target=\"dev ")
        ),
        "link {link_id}'s target names its device"
    );
    assert!(
        !t.contains(&format!(
            "bpfmap_link_holders{{id=\"{link_id}\",kind=\"file\"}}"
        )),
        "no file holds the link"
    );
    let (ok, out, err) = run(&["--link", &link_id.to_string()]);
    assert!(ok, "{err}");
    for want in [
        format!(
            "link {link_id} xdp (attached in the kernel), program {} ",
            link.prog_id
        ),
        format!("pin {fs_path}/xdp_link"),
        format!(
            "only pins keep this link: removing them detaches program {}",
            link.prog_id
        ),
    ] {
        assert!(out.contains(&want), "missing {want:?} in\n{out}");
    }
    let (ok, _, err) = run(&["--link", "4294967295"]);
    assert!(!ok);
    assert!(err.contains("no link with id 4294967295"), "{err}");
    let (ok, _, err) = run(&["--prog", "4294967295"]);
    assert!(!ok);
    assert!(err.contains("no program with id 4294967295"), "{err}");
    let (ok, _, err) = run(&["--id", &by_prog.to_string(), "--prog", "1"]);
    assert!(!ok, "one selector at a time: {err}");

    if !census.features().map_memcg {
        // Before 5.11 the kernel records no creator: nothing is called an
        // orphan, and the families say nothing rather than 0.
        assert!(!kernel_at_least(5, 11));
        let t = text(&s);
        assert!(!t.contains("bpfmap_maps_orphaned"), "{t}");
        assert!(!t.contains("bpfmap_map_orphaned{"));
        assert!(t.contains(&format!(
            "bpfmap_map_roots{{id=\"{by_prog}\",kind=\"pin\"}} 1\n"
        )));
        drop(live_prog);
        return;
    }
    // The pod is deleted: kubelet removes the container's and the pod's
    // cgroups, and the charge moves to an ancestor.
    cg.delete_pod();
    let s = until(&mut census, "the creators gone", |s| {
        names
            .iter()
            .all(|n| s.maps.iter().any(|m| m.name == *n && m.creator.is_gone()))
    });
    let orphans: BTreeSet<&str> = names
        .iter()
        .copied()
        .filter(|n| s.roots.orphaned_maps.contains(&map_id(&s, n)))
        .collect();
    assert_eq!(
        orphans,
        BTreeSet::from(["rt_by_prog", "rt_inner", "rt_outer", "rt_calls"]),
        "pins alone keep these; a process keeps rt_live, an attachment rt_xdp"
    );
    let t = text(&s);
    for (n, v) in [
        ("rt_by_prog", 1),
        ("rt_inner", 1),
        ("rt_live", 0),
        ("rt_xdp", 0),
    ] {
        let line = format!("bpfmap_map_orphaned{{id=\"{}\"}} {v}\n", map_id(&s, n));
        assert!(t.contains(&line), "{line}");
    }
    // The pod is still named: this census resolved it while it lived.
    let ctr_id = cg.ctr_id.clone();
    let bytes: u64 = ["rt_by_prog", "rt_inner", "rt_outer", "rt_calls"]
        .iter()
        .map(|n| memlock_by_id(map_id(&s, n)))
        .sum();
    let line =
        format!("bpfmap_creator_orphaned_maps{{container_id=\"{ctr_id}\",pod_uid=\"{uid}\"}} 4\n");
    assert!(t.contains(&line), "{line} in\n{t}");
    let line = format!(
        "bpfmap_creator_orphaned_memory_bytes{{container_id=\"{ctr_id}\",pod_uid=\"{uid}\"}} {bytes}\n"
    );
    assert!(t.contains(&line), "{line}");
    let c = bpfmap_exporter::census::creators::identity(
        &s,
        s.maps.iter().find(|m| m.name == "rt_by_prog").unwrap(),
    )
    .unwrap();
    assert_eq!((c.pod_uid.as_str(), c.gone), (uid.as_str(), true));
    assert!(c.remembered_path.unwrap().ends_with(&ctr_id));
    // A census that never saw the pod alive (an exporter restarted after the
    // deletion) does not name the ancestor as the creator.
    let mut fresh = Census::load(CensusOpts::default()).expect("census loads");
    let (s2, _) = fresh.take(&[]);
    let c = bpfmap_exporter::census::creators::identity(
        &s2,
        s2.maps.iter().find(|m| m.name == "rt_by_prog").unwrap(),
    )
    .unwrap();
    assert_eq!(
        (c.container_id.as_str(), c.pod_uid.as_str(), c.gone),
        ("", "", true)
    );
    assert_eq!(c.remembered_path, None);
    let (ok, out, err) = run(&["--id", &by_prog.to_string()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("creator: unknown: its cgroup was removed before this exporter saw it"),
        "{out}"
    );
    assert!(out.contains("orphaned: its creator is gone"), "{out}");
    drop(live_prog);
}
