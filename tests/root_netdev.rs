//! Root integration tests of the netdev part: programs the kernel keeps
//! attached to devices without a link (XDP, tc cls_bpf), found in a network
//! namespace that no process is in (only an `ip netns` bind mount holds it),
//! each reference explained exactly, checked against the kernel's refcount
//! and bpftool.
mod common;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use bpfmap_exporter::census::programs::ProgHolderKind;
use bpfmap_exporter::census::roots::{orphaned, Obj, Root};
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

/// A `sleep` holding `fd` as its stdin; killed on drop.
struct Holder(std::process::Child);

impl Holder {
    fn new(fd: std::os::fd::OwnedFd) -> Holder {
        Holder(
            Command::new("sleep")
                .arg("300")
                .stdin(std::process::Stdio::from(fd))
                .spawn()
                .expect("sleep"),
        )
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Remove the namespace's name (its bind mount): only what the test holds
/// keeps it alive from now on.
fn unname(ns: &Netns) {
    run(&["ip", "netns", "del", &ns.name]);
}

/// Proof of the setting: no process or thread is in namespace `ino`, no
/// mount of any mount namespace names it. Returns how many fds hold its
/// file.
fn assert_unnamed(ino: u64) -> usize {
    let nsfs = std::fs::metadata("/proc/self/ns/net").unwrap().dev();
    let mut files = 0;
    for ent in std::fs::read_dir("/proc").unwrap().flatten() {
        if ent
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_none()
        {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(ent.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(m) = std::fs::metadata(t.path().join("ns/net")) {
                assert_ne!(m.ino(), ino, "{} is in the namespace", t.path().display());
            }
        }
        if let Ok(mi) = std::fs::read_to_string(ent.path().join("mountinfo")) {
            assert!(
                !mi.contains(&format!("net:[{ino}]")),
                "a mount of {} names the namespace",
                ent.path().display()
            );
        }
        for f in std::fs::read_dir(ent.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::metadata(f.path()).is_ok_and(|m| m.dev() == nsfs && m.ino() == ino) {
                files += 1;
            }
        }
    }
    files
}

/// Whether the kernel's namespace list still has `ino` (its nsfs file
/// opens through a holder's fd).
fn exists(path: &str, ino: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.ino() == ino)
}

fn attach_xdp(ns: &Netns, fd: i32) {
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
}

/// A namespace that no process is in and no mount names, held only by a
/// process's fd to its nsfs file (`/proc/<pid>/ns/net` opened and kept):
/// the netdev part finds it in that fd table, reads its XDP attachment and
/// stays complete.
#[test]
fn xdp_in_a_namespace_only_an_fd_holds_is_explained_exactly() {
    require_root();
    let ns = Netns::new("fdns");
    let ino = ns.ino();
    let m = map(MapType::Array, "nd_fdns", 4, 4, 1, 0);
    let p = prog_of_type_using_map(libbpf_sys::BPF_PROG_TYPE_XDP, m.as_fd().as_raw_fd());
    let id = prog_id(&p);
    attach_xdp(&ns, p.as_raw_fd());
    let ifi = ns.within(|| ifindex("nd0"));
    // Opened as /proc/<pid>/ns/net: its fd link reads `net:[ino]`.
    let holder = Holder::new(
        ns.within(|| std::fs::File::open("/proc/thread-self/ns/net"))
            .unwrap()
            .into(),
    );
    // Opened through the bind mount: once that is gone, its fd link reads
    // `/` (the root of a detached mount).
    let holder2 = Holder::new(std::fs::File::open(ns.path()).unwrap().into());
    unname(&ns);
    let holder_fd = format!("/proc/{}/fd/0", holder.0.id());
    assert!(exists(&holder_fd, ino), "the holder keeps the namespace");
    assert_eq!(
        std::fs::read_link(&holder_fd).unwrap().to_str(),
        Some(format!("net:[{ino}]").as_str())
    );
    let fd2 = format!("/proc/{}/fd/0", holder2.0.id());
    assert_eq!(std::fs::read_link(&fd2).unwrap().to_str(), Some("/"));
    assert_eq!(assert_unnamed(ino), 2, "two fds hold its file");

    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, report) = census.take(&[]);
    assert!(report.succeeded("netdev"), "{:?}", report.outcomes);
    assert!(
        source_complete(&s, "xdp"),
        "the namespace is reached through the fd: {:?}",
        s.prog_sources
    );
    let refs = refcnt(&s, id);
    let h = &s.prog_holders[&id];
    assert_eq!(h.get(ProgHolderKind::File), Some(1));
    assert_eq!(h.get(ProgHolderKind::Xdp), Some(refs as u64 - 1), "{h:?}");
    assert_eq!(h.unexplained(refs), Some(0));
    let want = format!("xdp skb on nd0 (ifindex {ifi}, netns {ino})");
    assert!(
        s.attachments
            .iter()
            .any(|a| a.prog_id == id && a.target == want),
        "{:?} has {want}",
        s.attachments
    );
    // A second scrape finds it again (through the remembered fd).
    let (s, _) = census.take(&[]);
    assert!(source_complete(&s, "xdp"), "{:?}", s.prog_sources);
    assert_eq!(s.prog_holders[&id].unexplained(refcnt(&s, id)), Some(0));
    // Held only through the file opened by the detached bind mount.
    drop(holder);
    assert!(exists(&fd2, ino));
    assert_eq!(assert_unnamed(ino), 1, "one fd holds its file");
    let (s, _) = census.take(&[]);
    assert!(source_complete(&s, "xdp"), "{:?}", s.prog_sources);
    assert_eq!(s.prog_holders[&id].unexplained(refcnt(&s, id)), Some(0));
    assert_eq!(
        s.prog_holders[&id].get(ProgHolderKind::Xdp),
        Some(refcnt(&s, id) as u64 - 1)
    );
    // The holder goes: the namespace, its device and the attachment go.
    drop(holder2);
    // The namespace is torn down in the background (cleanup_net).
    let s = until(&mut census, "the namespace freed", |s| {
        refcnt(s, id) == 1
            && s.prog_holders
                .get(&id)
                .is_some_and(|h| h.get(ProgHolderKind::Xdp) == Some(0))
    });
    assert_eq!(refcnt(&s, id), 1, "only our fd");
    assert!(source_complete(&s, "xdp"), "{:?}", s.prog_sources);
}

/// A namespace held only by a socket in a process's fd table (every
/// socket holds its namespace): the netdev part opens the socket's
/// namespace (`SIOCGSKNS`) and reads its tc filter.
#[test]
fn tc_in_a_namespace_only_a_socket_holds_is_explained_exactly() {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    require_root();
    let ns = Netns::new("sockns");
    let ino = ns.ino();
    let m = map(MapType::Array, "nd_sockns", 4, 4, 1, 0);
    let p = prog_of_type_using_map(libbpf_sys::BPF_PROG_TYPE_SCHED_CLS, m.as_fd().as_raw_fd());
    let id = prog_id(&p);
    let fd = p.as_raw_fd();
    let (rc, sock) = ns.within(|| {
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
        let rc = unsafe {
            let c = libbpf_sys::bpf_tc_hook_create(&mut hook);
            assert!(c == 0 || c == -libc::EEXIST, "clsact: {c}");
            libbpf_sys::bpf_tc_attach(&hook, &mut opts)
        };
        let sock = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::empty(),
            None,
        )
        .expect("a UDP socket in the namespace");
        (rc, sock)
    });
    assert_eq!(rc, 0, "bpf_tc_attach (cls_bpf by netlink)");
    let holder = Holder::new(sock);
    unname(&ns);
    assert_eq!(assert_unnamed(ino), 0, "no fd holds its file");
    let sock_link = std::fs::read_link(format!("/proc/{}/fd/0", holder.0.id())).unwrap();
    assert!(
        sock_link.to_str().unwrap().starts_with("socket:["),
        "{sock_link:?}"
    );

    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, report) = census.take(&[]);
    assert!(report.succeeded("netdev"), "{:?}", report.outcomes);
    assert!(
        source_complete(&s, "tc"),
        "the namespace is reached through the socket: {:?}",
        s.prog_sources
    );
    assert_eq!(refcnt(&s, id), 2, "our fd and the filter");
    let h = &s.prog_holders[&id];
    assert_eq!(h.get(ProgHolderKind::Tc), Some(1), "{h:?}");
    assert_eq!(h.unexplained(2), Some(0));
    let t: Vec<&str> = s
        .attachments
        .iter()
        .filter(|a| a.prog_id == id)
        .map(|a| a.target.as_str())
        .collect();
    assert!(
        t.len() == 1 && t[0].contains(&format!("netns {ino}")),
        "{t:?}"
    );
    // Again, through the remembered socket.
    let (s, _) = census.take(&[]);
    assert!(source_complete(&s, "tc"), "{:?}", s.prog_sources);
    assert_eq!(s.prog_holders[&id].get(ProgHolderKind::Tc), Some(1));
    drop(holder);
    // The namespace is torn down in the background (cleanup_net).
    let s = until(&mut census, "the namespace freed", |s| {
        refcnt(s, id) == 1
            && s.prog_holders
                .get(&id)
                .is_some_and(|h| h.get(ProgHolderKind::Tc) == Some(0))
    });
    assert_eq!(refcnt(&s, id), 1, "only our fd");
}

/// A namespace held only by its file in flight (sent over a unix socket,
/// not received): no process, mount, fd table or socket names it, so the
/// netdev part cannot enter it. Its sources are incomplete and the
/// attached program's unexplained count is withheld, never a guess; once
/// the message is gone the sources are complete again.
#[test]
fn a_namespace_only_a_file_in_flight_holds_withholds_the_counts() {
    require_root();
    let ns = Netns::new("flightns");
    let ino = ns.ino();
    let m = map(MapType::Array, "nd_flightns", 4, 4, 1, 0);
    let p = prog_of_type_using_map(libbpf_sys::BPF_PROG_TYPE_XDP, m.as_fd().as_raw_fd());
    let id = prog_id(&p);
    attach_xdp(&ns, p.as_raw_fd());
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    {
        let f = std::fs::File::open(ns.path()).unwrap();
        send_fd(&a, f.as_raw_fd());
    }
    unname(&ns);
    assert_eq!(assert_unnamed(ino), 0, "no fd holds its file");

    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, report) = census.take(&[]);
    assert!(report.succeeded("netdev"), "{:?}", report.outcomes);
    for k in ["xdp", "tc", "flow_dissector"] {
        assert!(!source_complete(&s, k), "{k}: {:?}", s.prog_sources);
    }
    let refs = refcnt(&s, id);
    assert!(refs >= 2, "the attachment holds it: {refs}");
    let h = &s.prog_holders[&id];
    assert_eq!(h.unexplained(refs), None, "withheld, not {h:?}");
    let t = text(&s);
    assert!(
        !t.contains(&format!("bpfmap_program_unexplained_refs{{id=\"{id}\"}}")),
        "no unexplained series for program {id}"
    );
    assert!(
        t.contains("bpfmap_program_holder_source_complete{source=\"xdp\"} 0\n"),
        "{}",
        t.lines()
            .filter(|l| l.contains("source_complete"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The message goes with the sockets: the namespace is freed, the
    // sources are complete and the program is explained again.
    drop((a, b));
    let s = until(&mut census, "the namespace freed", |s| {
        source_complete(s, "xdp")
            && refcnt(s, id) == 1
            && s.prog_holders
                .get(&id)
                .is_some_and(|h| h.get(ProgHolderKind::Xdp) == Some(0))
    });
    assert_eq!(s.prog_holders[&id].unexplained(refcnt(&s, id)), Some(0));
}

/// A tc classifier object built with clang (`-target bpf`): one array map
/// it counts packets in, section `tc`.
fn classifier_object(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("cls.bpf.c");
    std::fs::write(
        &src,
        r#"
#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) __typeof__(val) *name
struct {
	__uint(type, 2); /* BPF_MAP_TYPE_ARRAY */
	__uint(max_entries, 1);
	__type(key, int);
	__type(value, long);
} tc_pinned_cnt SEC(".maps");
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
SEC("tc") int tc_pinned(void *skb)
{
	int k = 0;
	long *v = bpf_map_lookup_elem(&tc_pinned_cnt, &k);
	if (v)
		__sync_fetch_and_add(v, 1);
	return -1; /* TC_ACT_UNSPEC */
}
char LICENSE[] SEC("license") = "GPL";
"#,
    )
    .unwrap();
    let obj = dir.join("cls.bpf.o");
    let out = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-c"])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .output()
        .expect("clang runs (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "clang: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    obj
}

fn bpftool_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .args(args)
        .arg("--json")
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bpftool json")
}

/// The ids of the tc filters bpftool sees on `dev` in `ns`.
fn tc_progs_on(ns: &Netns, dev: &str) -> Vec<u32> {
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
    v[0]["tc"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["devname"] == dev)
        .filter_map(|e| e["id"].as_u64())
        .map(|i| i as u32)
        .collect()
}

/// Real software: a program loaded and pinned by `bpftool prog load`,
/// attached by iproute2's `tc filter add ... bpf da object-pinned`. Its
/// holders are exactly the pin and the filter; with the pin removed the
/// filter alone keeps it, a live root (not orphaned); with the filter
/// deleted it is gone, for bpftool and the census alike.
#[test]
fn tc_tool_with_a_pinned_program_is_explained_exactly() {
    require_root();
    ensure_bpffs();
    let ns = Netns::new("tcpin");
    let tmp = tempfile::tempdir().unwrap();
    let obj = classifier_object(tmp.path());
    let dir = format!("/sys/fs/bpf/bpfmap-tcpin-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    struct Rm(String);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(dir.clone());
    let pin = format!("{dir}/prog");
    run(&[
        "bpftool",
        "prog",
        "load",
        obj.to_str().unwrap(),
        &pin,
        "type",
        "classifier",
    ]);
    let prog = bpftool_json(&["prog", "show", "pinned", &pin]);
    let id = prog["id"]
        .as_u64()
        .expect("bpftool: the pinned program's id") as u32;
    let map_id = prog["map_ids"][0].as_u64().expect("the program's map") as u32;
    run(&["tc", "-n", &ns.name, "qdisc", "add", "dev", "nd0", "clsact"]);
    // nsenter, not `tc -n` (which remounts /sys without the bpffs).
    run(&[
        "nsenter",
        &format!("--net={}", ns.path()),
        "tc",
        "filter",
        "add",
        "dev",
        "nd0",
        "ingress",
        "bpf",
        "da",
        "object-pinned",
        &pin,
    ]);
    assert_eq!(tc_progs_on(&ns, "nd0"), [id], "bpftool net: the filter");

    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, report) = census.take(&[]);
    assert!(report.succeeded("netdev"), "{:?}", report.outcomes);
    assert!(source_complete(&s, "tc"), "{:?}", s.prog_sources);
    let h = &s.prog_holders[&id];
    assert_eq!(refcnt(&s, id), 2, "the pin and the filter");
    let nonzero: Vec<(ProgHolderKind, u64)> = ProgHolderKind::ALL
        .into_iter()
        .filter_map(|k| Some((k, h.get(k)?)))
        .filter(|(_, c)| *c > 0)
        .collect();
    assert_eq!(
        nonzero,
        [(ProgHolderKind::Pin, 1), (ProgHolderKind::Tc, 1)],
        "exactly a pin and a tc filter: {h:?}"
    );
    assert_eq!(h.unexplained(2), Some(0));
    let roots = s.graph.roots(Obj::Prog(id));
    assert!(
        roots.iter().any(|r| matches!(r, Root::Pin(_)))
            && roots.iter().any(|r| matches!(r, Root::Attached(_))),
        "{roots:?}"
    );
    // The map's only holder is the program: its roots are the program's.
    let m = s.maps.iter().find(|m| m.id == map_id).expect("the map");
    assert_eq!(s.holders[&map_id].unexplained(m.refcnt), Some(0));
    assert_eq!(s.graph.roots(Obj::Map(map_id)), roots);

    // The pin goes: the filter alone keeps the program, a live root.
    std::fs::remove_file(&pin).unwrap();
    assert_eq!(tc_progs_on(&ns, "nd0"), [id]);
    let s = until(&mut census, "the pin gone", |s| {
        s.prog_holders
            .get(&id)
            .is_some_and(|h| h.get(ProgHolderKind::Pin) == Some(0))
    });
    assert_eq!(refcnt(&s, id), 1);
    let h = &s.prog_holders[&id];
    assert_eq!(h.get(ProgHolderKind::Tc), Some(1));
    assert_eq!(h.unexplained(1), Some(0));
    let roots = s.graph.roots(Obj::Prog(id));
    assert_eq!(roots.len(), 1, "{roots:?}");
    let Some(Root::Attached(i)) = roots.first().copied() else {
        panic!("an attachment root: {roots:?}")
    };
    let a = &s.attachments[i as usize];
    assert_eq!((a.prog_id, a.kind), (id, ProgHolderKind::Tc));
    assert!(
        a.target.contains("on nd0 (ifindex ") && a.target.contains(&format!("netns {}", ns.ino())),
        "{}",
        a.target
    );
    assert_eq!(orphaned(&roots), Some(false), "a live root, not orphaned");
    assert_eq!(s.graph.roots(Obj::Map(map_id)), roots);

    // The filter goes: so does the program, for bpftool and the census.
    run(&[
        "tc", "-n", &ns.name, "filter", "del", "dev", "nd0", "ingress",
    ]);
    assert_eq!(tc_progs_on(&ns, "nd0"), Vec::<u32>::new());
    until(&mut census, "the program freed", |s| {
        !s.programs.as_ref().unwrap().iter().any(|p| p.id == id)
            && !s.maps.iter().any(|m| m.id == map_id)
    });
    let out = Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "bpftool: program {id} is gone");
}

/// The ids of what a bpffs pin holds, per bpftool: ("prog" | "map", id).
fn pinned_object(path: &str) -> Option<(&'static str, u32)> {
    for kind in ["prog", "map"] {
        let out = Command::new("bpftool")
            .args([kind, "show", "pinned", path, "--json"])
            .output()
            .ok()?;
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            return Some((kind, v["id"].as_u64()? as u32));
        }
    }
    None
}

fn files_under(dir: &std::path::Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            files_under(&p, out);
        } else {
            out.push(p.to_str().unwrap().to_string());
        }
    }
}

/// Real software killed mid-load: `xdp-filter load` gets SIGKILL at points
/// of its load (as soon as its first pin appears, then after growing
/// delays). Whatever it left (pins under /sys/fs/bpf/xdp-filter, an
/// attachment, or nothing), per the tool's own pins and bpftool, is
/// explained exactly: every program and map unexplained 0, a program on
/// the device and the maps it uses have a live attachment root (not
/// orphaned), the rest only pins.
#[test]
fn xdp_filter_killed_mid_load_leaves_only_explained_objects() {
    require_root();
    ensure_bpffs();
    let ns = Netns::new("xfkill");
    let nsarg = format!("--net={}", ns.path());
    let pins = std::path::Path::new("/sys/fs/bpf/xdp-filter");
    let clean = |nsarg: &str| {
        let _ = Command::new("nsenter")
            .args([nsarg, "xdp-filter", "unload", "nd0"])
            .stderr(std::process::Stdio::null())
            .status();
        // A killed load leaves its lock behind (libxdp).
        let _ = std::fs::remove_file("/run/xdp-filter.lck");
        let _ = std::fs::remove_dir_all(pins);
        let _ = Command::new("nsenter")
            .args([
                nsarg,
                "ip",
                "link",
                "set",
                "dev",
                "nd0",
                "xdpgeneric",
                "off",
            ])
            .status();
    };
    assert!(
        !pins.exists(),
        "{} exists before the test: another xdp-filter is loaded here",
        pins.display()
    );
    struct Clean<F: Fn(&str)>(F, String);
    impl<F: Fn(&str)> Drop for Clean<F> {
        fn drop(&mut self) {
            (self.0)(&self.1)
        }
    }
    let _clean = Clean(clean, nsarg.clone());
    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    // Kill points: None = at the first pin; Some(ms) = after a delay.
    let points: Vec<Option<u64>> = std::iter::once(None)
        .chain([0u64, 5, 20, 60, 150, 300, 600, 1200].map(Some))
        .collect();
    let mut states = std::collections::BTreeSet::new();
    for at in points {
        clean(&nsarg);
        let mut child = Command::new("nsenter")
            .args([&nsarg, "xdp-filter", "load", "nd0", "-m", "skb"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("xdp-filter runs (scripts/install-deps.sh installs xdp-tools)");
        let t = std::time::Instant::now();
        match at {
            None => {
                while !pins.exists() && t.elapsed() < std::time::Duration::from_secs(10) {
                    std::hint::spin_loop();
                }
            }
            Some(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
        }
        // nsenter execs xdp-filter: the child is xdp-filter itself.
        let _ = child.kill();
        let st = child.wait().unwrap();
        // What it left, per its own pins and bpftool.
        let mut files = Vec::new();
        files_under(pins, &mut files);
        let mut progs: BTreeMap<u32, bool> = BTreeMap::new(); // id -> attached
        let mut maps: BTreeMap<u32, bool> = BTreeMap::new(); // id -> used by the attached program
        for f in &files {
            match pinned_object(f) {
                Some(("prog", id)) => {
                    progs.entry(id).or_default();
                }
                Some((_, id)) => {
                    maps.entry(id).or_default();
                }
                None => panic!("bpftool cannot tell what pin {f} holds"),
            }
        }
        let attached = xdp_prog_on(&ns, "nd0");
        if let Some(a) = attached {
            progs.insert(a, true);
        }
        for (&p, &on) in &progs {
            let v = bpftool_json(&["prog", "show", "id", &p.to_string()]);
            for m in v["map_ids"].as_array().into_iter().flatten() {
                *maps.entry(m.as_u64().unwrap() as u32).or_default() |= on;
            }
        }
        states.insert((
            files.len(),
            attached.is_some(),
            st.code().is_none(), // killed, not exited
        ));
        let s = until(&mut census, "what it left in the census", |s| {
            progs
                .keys()
                .all(|id| s.programs.as_ref().unwrap().iter().any(|p| p.id == *id))
                && maps.keys().all(|id| s.maps.iter().any(|m| m.id == *id))
        });
        assert!(report_ok(&s), "{:?}", s.prog_sources);
        let ctx = format!("killed at {at:?} (exit {st}): pins {files:?}, attached {attached:?}");
        for (&id, &on) in &progs {
            let refs = refcnt(&s, id);
            let h = &s.prog_holders[&id];
            assert_eq!(h.unexplained(refs), Some(0), "program {id}: {h:?}; {ctx}");
            let roots = s.graph.roots(Obj::Prog(id));
            assert_eq!(
                roots.iter().any(|r| matches!(r, Root::Attached(_))),
                on,
                "program {id} roots {roots:?}; {ctx}"
            );
            assert_eq!(orphaned(&roots), Some(!on), "program {id} {roots:?}; {ctx}");
        }
        for (&id, &live) in &maps {
            let m = s.maps.iter().find(|m| m.id == id).unwrap();
            assert_eq!(
                s.holders[&id].unexplained(m.refcnt),
                Some(0),
                "map {id} {}: {:?}; {ctx}",
                m.name,
                s.holders[&id]
            );
            let roots = s.graph.roots(Obj::Map(id));
            assert!(!roots.is_empty(), "map {id}; {ctx}");
            assert_eq!(
                roots.iter().any(|r| r.is_live()),
                live,
                "map {id} {} roots {roots:?}; {ctx}",
                m.name
            );
            if !live {
                assert!(
                    roots.iter().all(|r| matches!(r, Root::Pin(_))),
                    "map {id} only pins: {roots:?}; {ctx}"
                );
            }
            // Its creator (this test's cgroup) lives: never an orphan.
            assert!(!s.roots.orphaned_maps.contains(&id), "map {id}; {ctx}");
        }
    }
    eprintln!("(pins left, attached, killed) per kill point: {states:?}");
    // The kill points must have caught it mid-load at least once: pins
    // left without an attachment (the maps pinned, the program not yet on
    // the device), or the run is no proof.
    assert!(
        states
            .iter()
            .any(|(pins, on, killed)| *pins > 0 && !on && *killed),
        "no kill left a partial load: {states:?}"
    );
}

fn report_ok(s: &Snapshot) -> bool {
    s.prog_sources
        .iter()
        .filter(|(n, _)| ["xdp", "files", "pins", "links"].contains(n))
        .all(|(_, c)| *c)
}
