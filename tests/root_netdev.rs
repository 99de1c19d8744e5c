//! Root integration tests of the netdev part: programs the kernel keeps
//! attached to devices without a link (XDP, tc cls_bpf), found in a network
//! namespace that no process is in (only an `ip netns` bind mount holds it),
//! each reference explained exactly, checked against the kernel's refcount
//! and bpftool.
mod common;

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use bpfmap_exporter::census::programs::ProgHolderKind;
use bpfmap_exporter::census::{Census, CensusOpts, Snapshot};
use common::*;
use libbpf_rs::libbpf_sys;
use libbpf_rs::MapType;

fn run(cmd: &[&str]) {
    let st = Command::new(cmd[0])
        .args(&cmd[1..])
        .status()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/install-deps.sh installs iproute2)"));
    assert!(st.success(), "{cmd:?} failed");
}

/// A network namespace only its `ip netns` bind mount holds, with a veth
/// pair; removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("bpfmap-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        run(&["ip", "netns", "add", &name]);
        let n = Netns { name };
        run(&[
            "ip", "-n", &n.name, "link", "add", "nd0", "type", "veth", "peer", "name", "nd1",
        ]);
        run(&["ip", "-n", &n.name, "link", "set", "nd0", "up"]);
        n
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    fn ino(&self) -> u64 {
        std::fs::metadata(self.path()).unwrap().ino()
    }

    /// Run `f` on a thread moved into the namespace.
    fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = std::fs::File::open(self.path()).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                bpfmap_exporter::sys::setns_net(ns.as_fd()).expect("setns");
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ifindex(name: &str) -> i32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name for the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert!(i > 0, "{name} exists");
    i as i32
}

fn source_complete(s: &Snapshot, name: &str) -> bool {
    s.prog_sources
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("source {name} published"))
        .1
}

fn refcnt(s: &Snapshot, id: u32) -> i64 {
    s.programs
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.id == id)
        .unwrap_or_else(|| panic!("program {id} in the census"))
        .refcnt
}

/// An XDP program attached without a link in a namespace only a bind
/// mount holds: every reference the attachment takes is an `xdp` holder,
/// the roots name the device and the namespace, nothing is unexplained.
#[test]
fn xdp_without_a_link_in_a_mounted_namespace_is_explained_exactly() {
    require_root();
    let ns = Netns::new("xdp");
    let m = map(MapType::Array, "nd_xdp", 4, 4, 1, 0);
    let p = prog_of_type_using_map(libbpf_sys::BPF_PROG_TYPE_XDP, m.as_fd().as_raw_fd());
    let id = prog_id(&p);
    let fd = p.as_raw_fd();
    let rc = ns.within(|| {
        // SAFETY: a program fd for the call; no opts.
        unsafe {
            libbpf_sys::bpf_xdp_attach(
                ifindex("nd0"),
                fd,
                libbpf_sys::XDP_FLAGS_SKB_MODE,
                std::ptr::null(),
            )
        }
    });
    assert_eq!(rc, 0, "bpf_xdp_attach (netlink, no link)");
    // bpftool sees it on the device, without a link.
    let out = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "bpftool", "net", "show", "--json",
        ])
        .output()
        .expect("bpftool");
    let txt = String::from_utf8_lossy(&out.stdout);
    assert!(txt.contains(&format!("\"id\":{id}")), "bpftool net: {txt}");

    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, report) = census.take(&[]);
    assert!(report.succeeded("netdev"), "{:?}", report.outcomes);
    assert!(
        source_complete(&s, "xdp"),
        "xdp source complete: {:?}",
        s.prog_sources
    );
    let h = &s.prog_holders[&id];
    let refs = refcnt(&s, id);
    // Our fd is one reference; the attachment holds every other one.
    assert_eq!(h.get(ProgHolderKind::File), Some(1));
    assert_eq!(
        h.get(ProgHolderKind::Xdp),
        Some(refs as u64 - 1),
        "refcount {refs}"
    );
    assert_eq!(h.unexplained(refs), Some(0));
    let targets: Vec<&str> = s
        .attachments
        .iter()
        .filter(|a| a.prog_id == id)
        .map(|a| a.target.as_str())
        .collect();
    let want = format!(
        "xdp skb on nd0 (ifindex {}, netns {})",
        ns.within(|| ifindex("nd0")),
        ns.ino()
    );
    assert!(targets.iter().any(|t| *t == want), "{targets:?} has {want}");
    // The program's roots are attachments (the graph names them by index
    // into the snapshot's attachments), not orphans.
    let idx: Vec<usize> = s
        .attachments
        .iter()
        .enumerate()
        .filter(|(_, a)| a.prog_id == id)
        .map(|(i, _)| i)
        .collect();
    let g = format!("{:?}", s.graph);
    assert!(
        idx.iter().all(|i| g.contains(&format!("Attached({i})"))),
        "attachment roots {idx:?} in the graph"
    );

    // Detached: no holder left but the file.
    ns.within(|| {
        // SAFETY: fd -1 detaches; no opts.
        unsafe {
            libbpf_sys::bpf_xdp_detach(
                ifindex("nd0"),
                libbpf_sys::XDP_FLAGS_SKB_MODE,
                std::ptr::null(),
            )
        }
    });
    let (s, _) = census.take(&[]);
    assert_eq!(s.prog_holders[&id].get(ProgHolderKind::Xdp), Some(0));
    assert_eq!(refcnt(&s, id), 1);
}

/// A tc classifier (cls_bpf on clsact ingress, attached by netlink) is one
/// `tc` holder, with the filter as its target.
#[test]
fn tc_filter_in_a_mounted_namespace_is_one_tc_holder() {
    require_root();
    let ns = Netns::new("tc");
    let m = map(MapType::Array, "nd_tc", 4, 4, 1, 0);
    let p = prog_of_type_using_map(libbpf_sys::BPF_PROG_TYPE_SCHED_CLS, m.as_fd().as_raw_fd());
    let id = prog_id(&p);
    let fd = p.as_raw_fd();
    let rc = ns.within(|| {
        let mut hook = libbpf_sys::bpf_tc_hook {
            sz: std::mem::size_of::<libbpf_sys::bpf_tc_hook>() as _,
            ifindex: ifindex("nd0"),
            attach_point: libbpf_sys::BPF_TC_INGRESS,
            ..Default::default()
        };
        let mut opts = libbpf_sys::bpf_tc_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_tc_opts>() as _,
            prog_fd: fd,
            ..Default::default()
        };
        // SAFETY: hook and opts live across the calls.
        unsafe {
            let c = libbpf_sys::bpf_tc_hook_create(&mut hook);
            assert!(c == 0 || c == -libc::EEXIST, "clsact: {c}");
            libbpf_sys::bpf_tc_attach(&hook, &mut opts)
        }
    });
    assert_eq!(rc, 0, "bpf_tc_attach (cls_bpf by netlink)");
    let out = Command::new("tc")
        .args(["-n", &ns.name, "filter", "show", "dev", "nd0", "ingress"])
        .output()
        .expect("tc");
    let txt = String::from_utf8_lossy(&out.stdout);
    assert!(txt.contains(&format!("id {id}")), "tc filter show: {txt}");

    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, report) = census.take(&[]);
    assert!(report.succeeded("netdev"), "{:?}", report.outcomes);
    assert!(
        source_complete(&s, "tc"),
        "tc source complete: {:?}",
        s.prog_sources
    );
    let h = &s.prog_holders[&id];
    assert_eq!(refcnt(&s, id), 2, "our fd and the filter");
    assert_eq!(h.get(ProgHolderKind::Tc), Some(1));
    assert_eq!(h.unexplained(2), Some(0));
    let t: Vec<&str> = s
        .attachments
        .iter()
        .filter(|a| a.prog_id == id)
        .map(|a| a.target.as_str())
        .collect();
    assert_eq!(t.len(), 1, "{t:?}");
    assert!(
        t[0].starts_with("tc filter bpf on nd0 (ifindex ")
            && t[0].contains(&format!("netns {}", ns.ino()))
            && t[0].contains("parent ffff:fff2"),
        "{t:?}"
    );
}

fn xdp_prog_on(ns: &Netns, dev: &str) -> Option<u32> {
    let out = Command::new("nsenter")
        .args([
            &format!("--net={}", ns.path()),
            "bpftool",
            "net",
            "show",
            "--json",
        ])
        .output()
        .expect("bpftool net");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    v[0]["xdp"]
        .as_array()?
        .iter()
        .find(|e| e["devname"] == dev)
        .and_then(|e| e["id"].as_u64())
        .map(|i| i as u32)
}

/// Real software: xdp-tools' `xdp-filter` (libxdp) in a mounted namespace.
/// Where libxdp's dispatcher cannot load (freplace refused, as under
/// lockdown) it attaches its program alone, by netlink; either way every
/// program and map it made is explained exactly, per bpftool's own view.
#[test]
fn xdp_filter_programs_and_maps_are_explained_exactly() {
    require_root();
    ensure_bpffs();
    let ns = Netns::new("xf");
    let nsarg = format!("--net={}", ns.path());
    let st = Command::new("nsenter")
        .args([&nsarg, "xdp-filter", "load", "nd0", "-m", "skb"])
        .status()
        .expect("xdp-filter runs (scripts/install-deps.sh installs xdp-tools)");
    assert!(st.success(), "xdp-filter load");
    struct Unload(String);
    impl Drop for Unload {
        fn drop(&mut self) {
            let _ = Command::new("nsenter")
                .args([&self.0, "xdp-filter", "unload", "nd0"])
                .status();
        }
    }
    let unload = Unload(nsarg.clone());
    let id = xdp_prog_on(&ns, "nd0").expect("bpftool net shows an XDP program on nd0");
    let prog = {
        let out = Command::new("bpftool")
            .args(["prog", "show", "id", &id.to_string(), "--json"])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, report) = census.take(&[]);
    assert!(report.succeeded("netdev"), "{:?}", report.outcomes);
    assert!(source_complete(&s, "xdp"), "{:?}", s.prog_sources);
    // The program on the device (libxdp's dispatcher or its own program):
    // every reference explained, an xdp attachment among its roots.
    let refs = refcnt(&s, id);
    let h = &s.prog_holders[&id];
    if source_complete(&s, "program_targets") {
        assert_eq!(h.unexplained(refs), Some(0), "program {id}: {h:?}");
    } else {
        // libxdp's dispatcher is held by its component programs' freplace
        // links too; where a kernel does not tell a tracing link's target
        // (before 5.13), those references are withheld, never guessed.
        assert!(!kernel_at_least(5, 13), "{:?}", s.prog_sources);
        assert_eq!(h.unexplained(refs), None, "program {id}: {h:?}");
    }
    assert!(h.get(ProgHolderKind::Xdp).unwrap() >= 2, "{h:?}");
    // Every map bpftool says it uses is explained.
    let maps: Vec<u32> = prog["map_ids"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_u64().unwrap() as u32).collect())
        .unwrap_or_default();
    for m in &maps {
        let rec = s
            .maps
            .iter()
            .find(|r| r.id == *m)
            .expect("map in the census");
        assert_eq!(
            s.holders[m].unexplained(rec.refcnt),
            Some(0),
            "map {m} of xdp-filter"
        );
    }
    drop(unload);
    assert_eq!(xdp_prog_on(&ns, "nd0"), None, "unloaded");
    let (s, _) = census.take(&[]);
    if let Some(p) = s.programs.as_ref().unwrap().iter().find(|p| p.id == id) {
        // Still freeing: nothing of the device holds it any more.
        assert_eq!(s.prog_holders[&p.id].get(ProgHolderKind::Xdp), Some(0));
    }
}

/// An XDP link on a veth of a fresh namespace, pinned and its fd closed:
/// the census names its target (the device by name and ifindex, and the
/// namespace), as bpftool and `ip` see them, on `bpfmap_link_info` and in
/// `explain --link`; the link is a live attachment root. Once the
/// namespace (and with it the device) is gone, the link reads detached and
/// is no live root any more: only its pin keeps the program.
#[test]
fn xdp_link_target_is_the_device_and_its_namespace() {
    require_root();
    ensure_bpffs();
    let ns = Netns::new("xlink");
    let m = map(MapType::Array, "nd_xlink", 4, 4, 1, 0);
    let p = prog_of_type_using_map(libbpf_sys::BPF_PROG_TYPE_XDP, m.as_fd().as_raw_fd());
    let pid = prog_id(&p);
    let pfd = p.as_raw_fd();
    let (lfd, ifx) = ns.within(|| {
        let ifx = ifindex("nd0");
        // SAFETY: a program fd and an ifindex of this thread's namespace; no opts.
        let fd =
            unsafe { libbpf_sys::bpf_link_create(pfd, ifx, libbpf_sys::BPF_XDP, std::ptr::null()) };
        (fd, ifx)
    });
    assert!(
        lfd >= 0,
        "BPF_LINK_CREATE xdp: {}",
        std::io::Error::from_raw_os_error(-lfd)
    );
    let pin = format!("/sys/fs/bpf/bpfmap-test-xlink-{}", std::process::id());
    let _ = std::fs::remove_file(&pin);
    let cpin = std::ffi::CString::new(pin.clone()).unwrap();
    // SAFETY: a link fd and a NUL-terminated path.
    assert_eq!(
        unsafe { libbpf_sys::bpf_obj_pin(lfd, cpin.as_ptr()) },
        0,
        "pin"
    );
    let mut info = libbpf_sys::bpf_link_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info and len are valid for the call.
    let rc = unsafe {
        libbpf_sys::bpf_obj_get_info_by_fd(
            lfd,
            (&mut info as *mut libbpf_sys::bpf_link_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "link info");
    let lid = info.id;
    // SAFETY: our fd; only the pin holds the link now.
    unsafe { libc::close(lfd) };

    // bpftool's view of the link (the kernel's link info).
    let out = Command::new("bpftool")
        .args(["link", "show", "id", &lid.to_string(), "--json"])
        .output()
        .expect("bpftool");
    let bt: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bpftool link show --json: {e}: {:?}", out));
    assert_eq!(bt["id"], lid);
    assert_eq!(bt["prog_id"], pid);
    assert_eq!(bt["type"], "xdp");
    // bpftool 7.1 (Debian 12) prints no ifindex for an xdp link (newer
    // ones print ifindex and devname): the kernel's link info, which they
    // read, is the truth.
    // SAFETY: an xdp link's info fills the xdp member of the union.
    let kernel_ifx = unsafe { info.__bindgen_anon_1.xdp.ifindex };
    assert_eq!(kernel_ifx, ifx as u32, "link info");
    if let Some(b) = bt.get("ifindex") {
        assert_eq!(*b, ifx, "bpftool: {bt}");
        assert_eq!(bt["devname"], "nd0", "bpftool: {bt}");
    }

    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, report) = census.take(&[]);
    assert!(report.succeeded("links"), "{:?}", report.outcomes);
    let l = s
        .links
        .as_ref()
        .unwrap()
        .iter()
        .find(|l| l.id == lid)
        .unwrap_or_else(|| panic!("link {lid} in the census"))
        .clone();
    assert_eq!(l.prog_id, pid);
    let d = l.target.device.as_ref().expect("a device target");
    assert_eq!(d.ifindex, ifx as u32);
    if kernel_at_least(5, 19) {
        // iter/bpf_link reads the device's name and namespace.
        assert_eq!(d.name.as_deref(), Some("nd0"));
        assert_eq!(l.target.netns, Some(ns.ino() as u32));
        // 6.17 moved every link's attach type into struct bpf_link.
        if kernel_at_least(6, 17) {
            assert_eq!(l.target.attach_type, Some(libbpf_sys::BPF_XDP));
        } else {
            assert_eq!(l.target.attach_type, None);
        }
    }
    assert!(l.is_attached() && !l.target.detached);
    let want = format!("dev nd0 (ifindex {ifx}, netns {})", ns.ino());
    let t = text(&s);
    let line = t
        .lines()
        .find(|x| x.starts_with("bpfmap_link_info{") && x.contains(&format!("id=\"{lid}\"")))
        .unwrap_or_else(|| panic!("bpfmap_link_info of link {lid} (only a pin holds it)"));
    assert!(line.contains(&format!("target=\"{want}\"")), "{line}");
    assert!(line.contains("link_type=\"xdp\""), "{line}");
    // explain --link: the document's target and its text line.
    let x = bpfmap_exporter::explain::gather_extras(&s);
    let no_attr = |_: u32, _: u64| (String::new(), String::new());
    let inp = bpfmap_exporter::explain::Input {
        snap: &s,
        extras: &x,
        attribution: &no_attr,
        failed: &[],
        processes: Err(bpfmap_exporter::explain::STANDALONE_PROCESSES),
        now_unix: 0.0,
        max_holders: usize::MAX,
    };
    let doc = bpfmap_exporter::explain::link_report(
        &inp,
        &bpfmap_exporter::explain::page_links(&[lid], None, 10),
    );
    let jl = &doc["links"][0];
    assert_eq!(jl["target"]["ifindex"], ifx);
    assert_eq!(jl["target"]["device"], "nd0");
    assert_eq!(jl["target"]["netns"], ns.ino());
    assert_eq!(jl["attached"], true);
    let txt = bpfmap_exporter::explain::link_text(&doc);
    assert!(
        txt.contains(&format!(
            "  target: {}{want}",
            if kernel_at_least(6, 17) { "xdp " } else { "" }
        )),
        "{txt}"
    );
    // The link is a live root of its program.
    let g = format!("{:?}", s.graph);
    assert!(g.contains(&format!("Attachment({lid})")), "{g}");

    // The namespace goes, and the device with it: the link is detached, no
    // live root; its pin keeps it and its program.
    drop(ns);
    let s = until(&mut census, "the link reads detached", |s| {
        s.links
            .iter()
            .flatten()
            .any(|l| l.id == lid && l.target.detached)
    });
    let l = s
        .links
        .as_ref()
        .unwrap()
        .iter()
        .find(|l| l.id == lid)
        .unwrap();
    assert!(!l.is_attached());
    assert_eq!(l.target.device, None);
    let g = format!("{:?}", s.graph);
    assert!(!g.contains(&format!("Attachment({lid})")), "{g}");
    let t = text(&s);
    assert!(
        t.lines().any(|x| x.starts_with("bpfmap_link_info{")
            && x.contains(&format!("id=\"{lid}\""))
            && x.contains("target=\"detached: ")),
        "{t}"
    );
    std::fs::remove_file(&pin).unwrap();
    drop(p);
}
