//! Root tests of in-flight holders: map files held only by SCM_RIGHTS
//! messages nobody received, found by iter/unix (5.17+) with the process
//! that owns the receiving socket; on older kernels, proof that iter/unix is
//! absent and that such a reference stays unexplained.
mod common;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;

use bpfmap_exporter::census::holders::HolderKind;
use bpfmap_exporter::census::{Census, CensusOpts, Snapshot};
use common::*;
use libbpf_rs::MapType;

fn ino(fd: &impl AsFd) -> u64 {
    let f = std::fs::File::from(fd.as_fd().try_clone_to_owned().unwrap());
    f.metadata().unwrap().ino()
}

fn has_iter_unix() -> bool {
    kernel_at_least(5, 17)
}

/// The census, with the iter/unix feature matching the kernel; where the
/// kernel lacks it, proof: its BTF has no iter/unix context and the
/// in-flight object does not load.
fn census() -> Census {
    require_root();
    let c = Census::load(CensusOpts::default()).expect("census loads");
    let (major, minor) = kernel_version();
    assert_eq!(
        c.features().iter_unix,
        has_iter_unix(),
        "iter/unix on kernel {major}.{minor}"
    );
    if !has_iter_unix() {
        let btf = std::path::Path::new("/sys/kernel/btf/vmlinux");
        assert!(
            !bpfmap_exporter::bpf::inflight::available(btf).unwrap(),
            "no bpf_iter__unix in the BTF of {major}.{minor}"
        );
        assert!(
            bpfmap_exporter::bpf::inflight::Inflight::load(None).is_err(),
            "the iter/unix program must not load on {major}.{minor}"
        );
    }
    c
}

fn take_ok(c: &mut Census) -> Snapshot {
    let (s, report) = c.take(&[]);
    for p in &report.outcomes {
        assert!(p.ok, "census part {} failed: {:?}", p.name, p.error);
    }
    s
}

/// The map's refcount and holders, and its unexplained count.
fn holders_of(s: &Snapshot, id: u32) -> (i64, Option<u64>, Option<u64>, Option<i64>) {
    let m = s.maps.iter().find(|m| m.id == id).expect("map in census");
    let h = &s.holders[&id];
    (
        m.refcnt,
        h.get(HolderKind::File),
        h.get(HolderKind::Inflight),
        h.unexplained(m.refcnt),
    )
}

#[test]
fn an_unreceived_fd_is_an_inflight_holder_naming_the_receiver() {
    let mut c = census();
    let m = map(MapType::Array, "t_inflight", 4, 4, 1, 0);
    let id = id_of(&m);
    let (a, b) = UnixDatagram::pair().unwrap();
    send_fd(&a, m.as_fd().as_raw_fd());
    // Still in our fd table too: one file, counted as a file only.
    let s = take_ok(&mut c);
    assert_eq!(holders_of(&s, id), (1, Some(1), Some(0), Some(0)));
    drop(m);
    let s = until(&mut c, "the fd table lets go of the map file", |s| {
        s.holders.get(&id).and_then(|h| h.get(HolderKind::File)) == Some(0)
    });
    let text = text(&s);
    if !has_iter_unix() {
        // Nothing can see the message: the reference stays unexplained.
        assert_eq!(holders_of(&s, id), (1, Some(0), Some(0), Some(1)));
        assert!(text.contains(&format!("bpfmap_map_unexplained_refs{{id=\"{id}\"}} 1\n")));
        return;
    }
    assert_eq!(holders_of(&s, id), (1, Some(0), Some(1), Some(0)));
    assert!(
        text.contains(&format!(
            "bpfmap_map_holders{{id=\"{id}\",kind=\"inflight\"}} 1\n"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("bpfmap_map_unexplained_refs{{id=\"{id}\"}} 0\n")));
    let f: Vec<_> = s.inflight.iter().filter(|f| f.map_id == id).collect();
    assert_eq!(f.len(), 1, "{:?}", s.inflight);
    assert_eq!((f[0].queue_ino, f[0].receiver_ino), (ino(&b), ino(&b)));
    assert!(f[0].via.is_empty());
    let me = std::process::id();
    assert_eq!(
        f[0].receivers.iter().map(|r| r.tgid).collect::<Vec<_>>(),
        vec![me],
        "the receiving socket's owner"
    );
    let pid_label = format!("pid=\"{me}\"");
    assert!(
        text.lines()
            .any(|l| l.starts_with("bpfmap_process_map_inflight_files{")
                && l.contains(&pid_label)
                && l.ends_with(" 1")),
        "{text}"
    );
    assert!(text.contains(&format!("bpfmap_map_inflight_age_seconds{{id=\"{id}\"}} ")));
    // explain names the receiver, in JSON and in text.
    let no_attr = |_: u32, _: u64| (String::new(), String::new());
    let extras = bpfmap_exporter::explain::Extras::default();
    let inp = bpfmap_exporter::explain::Input {
        snap: &s,
        extras: &extras,
        attribution: &no_attr,
        failed: &[],
        processes: Err(bpfmap_exporter::explain::STANDALONE_PROCESSES),
        now_unix: 0.0,
        max_holders: usize::MAX,
    };
    let doc = bpfmap_exporter::explain::report(
        &inp,
        &bpfmap_exporter::explain::page(&s, &[id], &Default::default()),
    );
    let r = &doc["maps"][0];
    assert_eq!(r["holder_counts"]["inflight"], serde_json::json!(1));
    assert_eq!(r["unexplained"], serde_json::json!(0));
    let fl = &r["holders"]["inflight"][0];
    assert_eq!(fl["socket_inode"], serde_json::json!(ino(&b)));
    assert_eq!(fl["receivers"][0]["pid"], serde_json::json!(me));
    let want = format!("fd in flight to pid {me} (");
    let t = bpfmap_exporter::explain::text(&doc);
    assert!(
        t.lines()
            .any(|l| l.contains(&want) && l.contains(&format!(") on socket inode {}", ino(&b)))),
        "{t}"
    );
    // It ages across scrapes.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let s = take_ok(&mut c);
    assert!(s.inflight_ages[&id] >= std::time::Duration::from_secs(1));
    drop((a, b));
    until(&mut c, "in-flight map freed", |s| {
        !s.maps.iter().any(|m| m.id == id)
    });
}

#[test]
fn a_map_file_inside_an_in_flight_socket_is_received_by_the_outer_socket_owner() {
    let mut c = census();
    let m = map(MapType::Array, "t_inflight_nest", 4, 4, 1, 0);
    let id = id_of(&m);
    // The map fd in flight on b1; b1 itself in flight on a1; we hold a1.
    let (b0, b1) = UnixDatagram::pair().unwrap();
    let (a0, a1) = UnixDatagram::pair().unwrap();
    send_fd(&b0, m.as_fd().as_raw_fd());
    send_fd(&a0, b1.as_raw_fd());
    let inner = ino(&b1);
    drop((m, b1));
    if !has_iter_unix() {
        let s = until(&mut c, "only the messages hold the map", |s| {
            s.holders.get(&id).and_then(|h| h.get(HolderKind::File)) == Some(0)
        });
        assert_eq!(holders_of(&s, id), (1, Some(0), Some(0), Some(1)));
        return;
    }
    // The first census after the closes explains it and names the receiver.
    let s = take_ok(&mut c);
    assert_eq!(holders_of(&s, id), (1, Some(0), Some(1), Some(0)));
    let f = s
        .inflight
        .iter()
        .find(|f| f.map_id == id)
        .expect("in flight");
    assert_eq!(f.queue_ino, inner);
    assert_eq!(f.receiver_ino, ino(&a1));
    assert_eq!(f.via, vec![inner]);
    assert_eq!(f.receivers[0].tgid, std::process::id());
    // Closing the outer pair frees the inner socket, then the map.
    drop((a0, a1, b0));
    until(&mut c, "nested in-flight map freed", |s| {
        !s.maps.iter().any(|m| m.id == id)
    });
}

/// A network namespace with a process in it (`sleep`), and an unreceived
/// map fd on a socket of that namespace (the socket held by this process).
#[test]
fn in_flight_files_in_another_network_namespace_are_found() {
    use std::os::unix::process::CommandExt;
    let mut c = census();
    if !has_iter_unix() {
        return; // covered above: nothing in flight is seen before 5.17
    }
    let m = map(MapType::Array, "t_inflight_ns", 4, 4, 1, 0);
    let id = id_of(&m);
    let raw = m.as_fd().as_raw_fd();
    // A thread moves into a new network namespace and makes the sockets
    // there; the namespace outlives it through `ns` and the sockets.
    let (ns, a, b): (OwnedFd, UnixDatagram, UnixDatagram) = std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_NEWNET) moves only this thread; no memory is passed.
        assert_eq!(
            unsafe { libc::unshare(libc::CLONE_NEWNET) },
            0,
            "unshare -n"
        );
        let ns: OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")
            .unwrap()
            .into();
        let (a, b) = UnixDatagram::pair().unwrap();
        send_fd(&a, raw);
        (ns, a, b)
    })
    .join()
    .unwrap();
    let ns_raw = ns.as_raw_fd();
    let mut child = unsafe {
        // SAFETY: setns between fork and exec touches no memory of the parent.
        std::process::Command::new("sleep")
            .arg("60")
            .pre_exec(move || {
                if libc::setns(ns_raw, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
            .spawn()
            .unwrap()
    };
    drop(m);
    let s = until(&mut c, "the namespace's queue explains the map", |s| {
        s.holders.get(&id).and_then(|h| h.get(HolderKind::Inflight)) == Some(1)
    });
    assert_eq!(holders_of(&s, id), (1, Some(0), Some(1), Some(0)));
    let (walked, unreachable) = s.inflight_netns.unwrap();
    assert!(
        walked >= 2 && unreachable == 0,
        "walked {walked}, unreachable {unreachable}"
    );
    let f = s.inflight.iter().find(|f| f.map_id == id).unwrap();
    assert_eq!(f.receiver_ino, ino(&b));
    child.kill().unwrap();
    child.wait().unwrap();
    drop((a, b, ns));
    until(&mut c, "map freed", |s| !s.maps.iter().any(|m| m.id == id));
}

fn inflight_complete(s: &Snapshot) -> bool {
    s.sources
        .iter()
        .any(|&(n, complete)| n == "inflight" && complete)
}

/// Sockets enough that iter/unix's hash buckets hold several each, every
/// receiving one holding a map file: each census, a fresh one first (its
/// buffers start empty), finds every file. A walk whose `read`s end at the
/// caller's buffer loses the next socket and the rest of its bucket.
#[test]
fn every_in_flight_file_of_a_crowded_socket_table_is_found() {
    const PAIRS: usize = 300;
    if !has_iter_unix() {
        census(); // proves iter/unix absent: nothing in flight can be walked
        eprintln!("no iter/unix before 5.17: no in-flight walk to cut short");
        return;
    }
    let mut pairs = Vec::new();
    let mut ids = Vec::new();
    for i in 0..PAIRS {
        let m = map(MapType::Array, &format!("t_crowd{i}"), 4, 4, 1, 0);
        ids.push(id_of(&m));
        let (a, b) = UnixDatagram::pair().unwrap();
        send_fd(&a, m.as_fd().as_raw_fd());
        pairs.push((a, b));
    }
    for round in 0..3 {
        let mut c = census();
        for take in 0..2 {
            let s = take_ok(&mut c);
            assert!(
                inflight_complete(&s),
                "round {round} take {take}: {:?}",
                s.sources
            );
            let missing: Vec<u32> = ids
                .iter()
                .copied()
                .filter(|id| holders_of(&s, *id) != (1, Some(0), Some(1), Some(0)))
                .collect();
            assert!(
                missing.is_empty(),
                "round {round} take {take}: {} of {PAIRS} in-flight maps not explained: {missing:?}",
                missing.len()
            );
        }
    }
    drop(pairs);
}

/// More records than the kernel's iterator buffer holds (1,200 files of 32
/// bytes in flight against 8 pages): the sockets whose records did not fit
/// are dropped by the kernel, the walk says it is incomplete, and no count
/// it could have explained is published.
#[test]
fn an_in_flight_walk_larger_than_the_kernel_buffer_is_incomplete() {
    const PAIRS: usize = 300;
    const COPIES: usize = 4;
    if !has_iter_unix() {
        census(); // proves iter/unix absent: nothing in flight can be walked
        eprintln!("no iter/unix before 5.17: no in-flight walk to overflow");
        return;
    }
    assert_eq!(
        // SAFETY: sysconf has no memory effects.
        unsafe { libc::sysconf(libc::_SC_PAGESIZE) },
        4096,
        "the record count below assumes 4 KiB pages"
    );
    let m = map(MapType::Array, "t_inflight_big", 4, 4, 1, 0);
    let id = id_of(&m);
    let mut pairs = Vec::new();
    for _ in 0..PAIRS {
        let (a, b) = UnixDatagram::pair().unwrap();
        for _ in 0..COPIES {
            send_fd(&a, m.as_fd().as_raw_fd());
        }
        pairs.push((a, b));
    }
    // A second map, in flight on one more socket only.
    let lone = map(MapType::Array, "t_inflight_lone", 4, 4, 1, 0);
    let lone_id = id_of(&lone);
    let (la, lb) = UnixDatagram::pair().unwrap();
    send_fd(&la, lone.as_fd().as_raw_fd());
    drop((m, lone));
    let mut c = census();
    let s = until(&mut c, "the fd table lets go of both map files", |s| {
        [id, lone_id]
            .iter()
            .all(|i| s.holders.get(i).and_then(|h| h.get(HolderKind::File)) == Some(0))
    });
    assert!(
        !inflight_complete(&s),
        "{} records in flight, more than 8 pages: {:?}",
        PAIRS * COPIES,
        s.sources
    );
    // Whatever the walk saw is a lower bound: a map it explains reads 0, and
    // one it may have missed is withheld, never published as a leak.
    for i in [id, lone_id] {
        let (refcnt, file, _, unexplained) = holders_of(&s, i);
        assert_eq!((refcnt, file), (1, Some(0)));
        assert_ne!(
            unexplained,
            Some(1),
            "map {i} published as a leak from a cut walk"
        );
    }
    drop((pairs, la, lb));
}
