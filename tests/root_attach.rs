//! Root integration tests of program references held by cgroups, maps and
//! other programs: a cgroup hook attached without a link, the same through
//! a cgroup link (not counted twice), a sockmap's verdict program, devmap
//! and cpumap entries' programs, and a program loaded against another.
mod common;

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use bpfmap_exporter::census::programs::{AttachedBy, ProgHolderKind as K};
use bpfmap_exporter::census::{Census, CensusOpts, Snapshot};
use common::*;
use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapCore, MapFlags, MapType};

/// Load `r1 = map; r0 = ret; exit` (or without the map) of type `ty`.
fn load(
    ty: libbpf_sys::bpf_prog_type,
    attach: libbpf_sys::bpf_attach_type,
    map_fd: Option<RawFd>,
    ret: i32,
    tweak: impl FnOnce(&mut libbpf_sys::bpf_prog_load_opts),
) -> std::io::Result<OwnedFd> {
    let mut insns = Vec::new();
    if let Some(fd) = map_fd {
        insns.push(insn(0x18, 1, 1, 0, fd));
        insns.push(insn(0, 0, 0, 0, 0));
    }
    insns.push(insn(0xb7, 0, 0, 0, ret));
    insns.push(insn(0x95, 0, 0, 0, 0));
    let lic = std::ffi::CString::new("GPL").unwrap();
    let mut opts = libbpf_sys::bpf_prog_load_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_load_opts>() as _,
        expected_attach_type: attach,
        ..Default::default()
    };
    tweak(&mut opts);
    // SAFETY: insns/lic/opts outlive the call.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            ty,
            std::ptr::null(),
            lic.as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            &mut opts,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Every holder kind with a non-zero count, and the unexplained count.
fn held(s: &Snapshot, id: u32) -> (Vec<(K, u64)>, Option<i64>) {
    let h = &s.prog_holders[&id];
    let kinds = h
        .iter()
        .filter_map(|(k, c)| c.filter(|&c| c > 0).map(|c| (k, c)))
        .collect();
    (kinds, h.unexplained(prog_refcnt(s, id)))
}

fn source(s: &Snapshot, name: &str) -> Option<bool> {
    s.prog_sources
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
}

fn sources_complete(s: &Snapshot, kinds: &[K]) {
    for k in kinds {
        assert_eq!(
            source(s, k.source()),
            Some(true),
            "source {} complete: {:?}",
            k.source(),
            s.prog_sources
        );
    }
}

/// A test cgroup in the v2 hierarchy (mounted on a temp dir when the
/// system has not mounted it), removed on drop.
struct TestCgroup {
    root: std::path::PathBuf,
    path: std::path::PathBuf,
    fd: OwnedFd,
    mounted: Option<tempfile::TempDir>,
}

impl TestCgroup {
    fn new(name: &str) -> Self {
        let mounts = || {
            let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            bpfmap_exporter::census::attach::hierarchy_root(
                &bpfmap_exporter::census::attach::cgroup2_mounts(&mi),
            )
        };
        let mut mounted = None;
        let root = mounts().unwrap_or_else(|| {
            let dir = tempfile::Builder::new()
                .prefix("bpfmap-cg2")
                .tempdir()
                .unwrap();
            let st = std::process::Command::new("mount")
                .args(["-t", "cgroup2", "none"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "mount -t cgroup2");
            mounted = Some(dir);
            mounts().expect("the cgroup2 mount is in mountinfo")
        });
        let path = root.join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir(&path).expect("mkdir test cgroup");
        let fd = OwnedFd::from(std::fs::File::open(&path).unwrap());
        TestCgroup {
            root,
            path,
            fd,
            mounted,
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
        if let Some(d) = &self.mounted {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(d.path())
                .status();
        }
    }
}

#[test]
fn a_cgroup_hook_without_a_link_holds_its_program_and_a_link_is_not_counted_twice() {
    require_root();
    let cg = TestCgroup::new("bpfmap-attach");
    let m = map(MapType::Array, "at_cg", 4, 4, 1, 0);
    let p = load(
        libbpf_sys::BPF_PROG_TYPE_CGROUP_SKB,
        libbpf_sys::BPF_CGROUP_INET_INGRESS,
        Some(m.as_fd().as_raw_fd()),
        1,
        |_| {},
    )
    .expect("load cgroup_skb");
    let id = prog_id(&p);
    // SAFETY: valid fds.
    let rc = unsafe {
        libbpf_sys::bpf_prog_attach(
            p.as_raw_fd(),
            cg.fd.as_raw_fd(),
            libbpf_sys::BPF_CGROUP_INET_INGRESS,
            0,
        )
    };
    assert_eq!(rc, 0, "BPF_PROG_ATTACH");
    drop(p);
    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, report) = census.take(&[]);
    assert!(report.succeeded("cgroups"), "{:?}", report.outcomes);
    // Complete unless dying cgroups (removed, still referenced: other
    // tests' memory cgroups linger so) may hold programs no walk can see.
    if source(&s, "cgroup") != Some(true) {
        let stat = std::fs::read_to_string(cg.root.join("cgroup.stat")).unwrap();
        let dying = bpfmap_exporter::census::attach::cgroup_stat(&stat)
            .unwrap()
            .1;
        assert!(
            dying > 0,
            "cgroup source incomplete with no dying cgroup: {stat}"
        );
        eprintln!("{dying} dying cgroups: the cgroup source is incomplete, as it must be");
    }
    // Held by the cgroup only: the count is exact, nothing unexplained.
    assert_eq!(prog_refcnt(&s, id), 1);
    assert_eq!(held(&s, id), (vec![(K::Cgroup, 1)], Some(0)));
    let want = format!("cgroup {} (cgroup_inet_ingress)", cg.path.display());
    let a = s
        .attachments
        .iter()
        .find(|a| a.prog_id == id)
        .expect("the attachment is listed");
    assert_eq!(
        (a.target.as_str(), a.held_by.as_slice()),
        (want.as_str(), &[AttachedBy::Kernel][..])
    );
    // The map the program uses is kept by that attachment: a root.
    let t = text(&s);
    assert!(
        t.contains(&format!(
            "bpfmap_map_roots{{id=\"{}\",kind=\"attachment\"}} 1\n",
            id_of(&m)
        )),
        "{}",
        t.lines()
            .filter(|l| l.contains("map_roots"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The same program type through a cgroup link: the link holds it, the
    // cgroup query lists it too, and it is counted once.
    let q = load(
        libbpf_sys::BPF_PROG_TYPE_CGROUP_SKB,
        libbpf_sys::BPF_CGROUP_INET_EGRESS,
        None,
        1,
        |_| {},
    )
    .expect("load cgroup_skb");
    let qid = prog_id(&q);
    // SAFETY: valid fds; null opts.
    let link = unsafe {
        libbpf_sys::bpf_link_create(
            q.as_raw_fd(),
            cg.fd.as_raw_fd(),
            libbpf_sys::BPF_CGROUP_INET_EGRESS,
            std::ptr::null(),
        )
    };
    assert!(
        link >= 0,
        "BPF_LINK_CREATE: {}",
        std::io::Error::from_raw_os_error(-link)
    );
    // SAFETY: a fresh fd.
    let link = unsafe { OwnedFd::from_raw_fd(link) };
    drop(q);
    let (s, _) = census.take(&[]);
    assert_eq!(prog_refcnt(&s, qid), 1);
    assert_eq!(held(&s, qid), (vec![(K::Link, 1)], Some(0)));
    assert_eq!(held(&s, id), (vec![(K::Cgroup, 1)], Some(0)));

    // Detached, the program is gone; the cgroup part off leaves the kind
    // unknown, never zero.
    // SAFETY: valid fds.
    let rc = unsafe {
        libbpf_sys::bpf_prog_detach2(-1, cg.fd.as_raw_fd(), libbpf_sys::BPF_CGROUP_INET_INGRESS)
    };
    assert_eq!(rc, 0, "BPF_PROG_DETACH");
    drop(link);
    let mut opts = CensusOpts::default();
    opts.parts = bpfmap_exporter::census::Parts::without(&["cgroups"]);
    let mut off = Census::load(opts).expect("census loads");
    let s = until(&mut off, "the detached program is freed", |s| {
        s.programs
            .as_ref()
            .is_some_and(|p| p.iter().all(|p| p.id != id))
    });
    assert_eq!(source(&s, "cgroup"), Some(false));
}

#[test]
fn a_sockmap_verdict_program_is_held_by_its_map() {
    require_root();
    let sm = map(MapType::Sockmap, "at_sockmap", 4, 4, 2, 0);
    let p = load(
        libbpf_sys::BPF_PROG_TYPE_SK_SKB,
        libbpf_sys::BPF_SK_SKB_STREAM_VERDICT,
        None,
        1,
        |_| {},
    )
    .expect("load sk_skb");
    let id = prog_id(&p);
    // SAFETY: valid fds.
    let rc = unsafe {
        libbpf_sys::bpf_prog_attach(
            p.as_raw_fd(),
            sm.as_fd().as_raw_fd(),
            libbpf_sys::BPF_SK_SKB_STREAM_VERDICT,
            0,
        )
    };
    assert_eq!(rc, 0, "BPF_PROG_ATTACH to the sockmap");
    drop(p);
    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, report) = census.take(&[]);
    assert!(report.succeeded("map_programs"), "{:?}", report.outcomes);
    sources_complete(&s, &[K::Sockmap]);
    assert_eq!(prog_refcnt(&s, id), 1);
    assert_eq!(held(&s, id), (vec![(K::Sockmap, 1)], Some(0)));
    let a = s.attachments.iter().find(|a| a.prog_id == id).unwrap();
    assert_eq!(a.held_by, [AttachedBy::Map(id_of(&sm))]);
    assert_eq!(a.target, format!("map {} stream_verdict", id_of(&sm)));
}

#[test]
fn devmap_and_cpumap_entries_hold_their_programs() {
    require_root();
    let dm = map(MapType::Devmap, "at_devmap", 4, 8, 4, 0);
    let cm = map(MapType::Cpumap, "at_cpumap", 4, 8, 1, 0);
    let xdp =
        |attach| load(libbpf_sys::BPF_PROG_TYPE_XDP, attach, None, 2, |_| {}).expect("load xdp");
    let dp = xdp(libbpf_sys::BPF_XDP_DEVMAP);
    let cp = xdp(libbpf_sys::BPF_XDP_CPUMAP);
    let (did, cid) = (prog_id(&dp), prog_id(&cp));
    // struct bpf_devmap_val { ifindex; prog fd }: lo; bpf_cpumap_val
    // { qsize; prog fd }.
    let val = |a: u32, fd: &OwnedFd| {
        let mut v = a.to_ne_bytes().to_vec();
        v.extend_from_slice(&fd.as_raw_fd().to_ne_bytes());
        v
    };
    dm.update(&1u32.to_ne_bytes(), &val(1, &dp), MapFlags::ANY)
        .expect("devmap entry with a program");
    cm.update(&0u32.to_ne_bytes(), &val(192, &cp), MapFlags::ANY)
        .expect("cpumap entry with a program");
    drop((dp, cp));
    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, report) = census.take(&[]);
    assert!(report.succeeded("map_programs"), "{:?}", report.outcomes);
    sources_complete(&s, &[K::Devmap]);
    for (id, m, kind) in [(did, &dm, "devmap"), (cid, &cm, "cpumap")] {
        assert_eq!(prog_refcnt(&s, id), 1, "{kind}");
        // XDP programs can also be held by devices (the xdp kind): that
        // source decides whether the count is exact; the entry explains
        // the one reference either way.
        assert_eq!(held(&s, id), (vec![(K::Devmap, 1)], Some(0)), "{kind}");
        let a = s.attachments.iter().find(|a| a.prog_id == id).unwrap();
        assert_eq!(a.held_by, [AttachedBy::Map(id_of(m))]);
    }
    dm.delete(&1u32.to_ne_bytes()).unwrap();
    let s = until(&mut census, "the devmap program is freed", |s| {
        s.programs
            .as_ref()
            .is_some_and(|p| p.iter().all(|p| p.id != did))
    });
    assert!(s.attachments.iter().all(|a| a.prog_id != did));
}

/// BTF with one function `prog(void *ctx)` returning int, type id 4.
fn one_func_btf() -> OwnedFd {
    let mut types = Vec::new();
    let mut w = |v: u32| types.extend_from_slice(&v.to_le_bytes());
    // [1] int: INT, size 4, signed 32 bits.
    w(1);
    w(1 << 24);
    w(4);
    w((1 << 24) | 32);
    // [2] void *.
    w(0);
    w(2 << 24);
    w(0);
    // [3] int (*)(void *ctx).
    w(0);
    w((13 << 24) | 1);
    w(1);
    w(5);
    w(2);
    // [4] func prog, global.
    w(9);
    w((12 << 24) | 1);
    w(3);
    let strs = b"\0int\0ctx\0prog\0";
    let mut blob = Vec::new();
    blob.extend_from_slice(&0xeB9Fu16.to_le_bytes());
    blob.extend_from_slice(&[1, 0]);
    for v in [
        24u32,
        0,
        types.len() as u32,
        types.len() as u32,
        strs.len() as u32,
    ] {
        blob.extend_from_slice(&v.to_le_bytes());
    }
    blob.extend_from_slice(&types);
    blob.extend_from_slice(strs);
    // SAFETY: blob outlives the call; null opts.
    let fd = unsafe {
        libbpf_sys::bpf_btf_load(blob.as_ptr().cast(), blob.len() as _, std::ptr::null_mut())
    };
    assert!(
        fd >= 0,
        "BTF_LOAD: {}",
        std::io::Error::from_raw_os_error(-fd)
    );
    // SAFETY: fresh fd.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[test]
fn a_program_loaded_against_another_holds_it_until_attached() {
    require_root();
    let btf = one_func_btf();
    let func_info = [0u32, 4u32]; // bpf_func_info { insn_off 0, type_id 4 }
    let target = load(libbpf_sys::BPF_PROG_TYPE_SOCKET_FILTER, 0, None, 0, |o| {
        o.prog_btf_fd = btf.as_raw_fd() as u32;
        o.func_info = func_info.as_ptr().cast();
        o.func_info_rec_size = 8;
        o.func_info_cnt = 1;
    });
    let target = target.expect("load a target program with BTF");
    let tid = prog_id(&target);
    // An freplace (EXT) program of the same prototype, with its own BTF.
    let log = std::cell::RefCell::new(vec![0u8; 65536]);
    let ext = load(libbpf_sys::BPF_PROG_TYPE_EXT, 0, None, 0, |o| {
        o.prog_btf_fd = btf.as_raw_fd() as u32;
        o.func_info = func_info.as_ptr().cast();
        o.func_info_rec_size = 8;
        o.func_info_cnt = 1;
        o.attach_prog_fd = target.as_raw_fd() as u32;
        o.attach_btf_id = 4;
        o.log_buf = log.borrow_mut().as_mut_ptr().cast();
        o.log_size = 65536;
        o.log_level = 1;
    });
    let ext = match ext {
        Ok(f) => f,
        // Refused before the verifier ran (its log is empty): the kernel
        // forbids programs that patch others here (lockdown on this host's
        // kernel refuses freplace and fentry loads, EPERM). Nothing can
        // then hold a program this way.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && log.borrow()[0] == 0 => {
            eprintln!("loading freplace is refused by this kernel ({e}, no verifier log): no program can be loaded against another here");
            return;
        }
        // 5.10 and 6.1 refuse this freplace against the target's main
        // function ("Cannot replace static functions", though its BTF
        // names it global): the kernel's log says so, and the test cannot
        // make a program held this way there.
        Err(e)
            if e.raw_os_error() == Some(libc::EINVAL)
                && String::from_utf8_lossy(&log.borrow())
                    .contains("Cannot replace static functions") =>
        {
            eprintln!("loading freplace against the target's main function is refused by this kernel ({e}: Cannot replace static functions): not tested here");
            return;
        }
        Err(e) => panic!(
            "load freplace against the target program: {e}: {}",
            String::from_utf8_lossy(&log.borrow())
        ),
    };
    let fid = prog_id(&ext);
    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, report) = census.take(&[]);
    assert!(report.succeeded("program_targets"), "{:?}", report.outcomes);
    assert_eq!(
        source(&s, "program_targets"),
        Some(true),
        "{:?}",
        s.prog_sources
    );
    assert_eq!(prog_refcnt(&s, tid), 2, "its file and the freplace program");
    assert_eq!(
        held(&s, tid),
        (vec![(K::File, 1), (K::Program, 1)], Some(0))
    );
    let a = s.attachments.iter().find(|a| a.prog_id == tid).unwrap();
    assert_eq!(a.held_by, [AttachedBy::Program(fid)]);

    // Attaching moves the reference to the tracing link (tgt_prog). Where
    // the kernel refuses trampolines (lockdown: EPERM), the attach is not
    // possible and the loaded program keeps holding it.
    // SAFETY: a valid fd; null opts.
    let link = unsafe { libbpf_sys::bpf_link_create(ext.as_raw_fd(), 0, 0, std::ptr::null()) };
    if link < 0 {
        let e = std::io::Error::from_raw_os_error(-link);
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EPERM),
            "attach failed otherwise: {e}"
        );
        eprintln!("attaching freplace refused here ({e}): the tracing link case is not exercised");
        return;
    }
    // SAFETY: a fresh fd.
    let _link = unsafe { OwnedFd::from_raw_fd(link) };
    let (s, _) = census.take(&[]);
    assert_eq!(prog_refcnt(&s, tid), 2, "its file and the tracing link");
    assert_eq!(
        held(&s, tid),
        (vec![(K::File, 1), (K::Program, 1)], Some(0))
    );
    let a = s.attachments.iter().find(|a| a.prog_id == tid).unwrap();
    assert!(matches!(a.held_by[..], [AttachedBy::Link(_)]), "{a:?}");
}
