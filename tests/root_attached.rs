//! Root integration tests of program references kept inside socket and
//! perf event files: a socket filter (`SO_ATTACH_BPF`), the same socket in
//! flight with its fd closed, a reuseport group's program, a perf event's
//! program (`PERF_EVENT_IOC_SET_BPF`) and its inherited child events.
mod common;

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use bpfmap_exporter::census::programs::{AttachedBy, Attachment, ProgHolderKind};
use bpfmap_exporter::census::roots::{Obj, Root};
use bpfmap_exporter::census::{Census, CensusOpts, Snapshot};
use common::*;
use libbpf_rs::MapType;

/// A program of type `ty` (using a throwaway map).
fn prog(ty: libbpf_rs::libbpf_sys::bpf_prog_type) -> OwnedFd {
    let m = map(MapType::Array, "att_m", 4, 4, 1, 0);
    prog_of_type_using_map(ty, m.as_fd().as_raw_fd())
}

fn attachments(s: &Snapshot, id: u32, kind: ProgHolderKind) -> Vec<&Attachment> {
    s.attachments
        .iter()
        .filter(|a| a.prog_id == id && a.kind == kind)
        .collect()
}

fn source_complete(s: &Snapshot, source: &str) -> bool {
    s.prog_sources
        .iter()
        .find(|(n, _)| *n == source)
        .unwrap_or_else(|| panic!("source {source} published"))
        .1
}

fn socket(ty: i32) -> OwnedFd {
    // SAFETY: plain socket(2).
    let s = unsafe { libc::socket(libc::AF_INET, ty, 0) };
    assert!(s >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd of ours.
    unsafe { OwnedFd::from_raw_fd(s) }
}

fn setsockopt_i32(sock: &OwnedFd, opt: i32, v: i32) {
    // SAFETY: setsockopt reads 4 bytes from &v, which outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const i32).cast(),
            4,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt {opt}: {}",
        std::io::Error::last_os_error()
    );
}

#[test]
fn a_socket_filter_is_held_by_its_socket_then_by_the_message_carrying_it() {
    require_root();
    let p = prog(libbpf_rs::libbpf_sys::BPF_PROG_TYPE_SOCKET_FILTER);
    let id = prog_id(&p);
    let sock = socket(libc::SOCK_DGRAM);
    setsockopt_i32(&sock, libc::SO_ATTACH_BPF, p.as_raw_fd());
    // A dup and a fork-like second fd reach the same sk_filter: one
    // reference.
    let dup = inheritable_dup(sock.as_raw_fd());
    drop(p);
    let me = std::process::id();
    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, _) = census.take(&[]);
    assert_eq!(prog_refcnt(&s, id), 1, "the socket filter only");
    let h = &s.prog_holders[&id];
    assert_eq!(h.get(ProgHolderKind::Socket), Some(1));
    assert_eq!(h.get(ProgHolderKind::File), Some(0));
    assert_eq!(
        h.unexplained(1),
        Some(0),
        "the filter explains the reference"
    );
    let a = attachments(&s, id, ProgHolderKind::Socket);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].held_by, vec![AttachedBy::Process(me)]);
    let fd = sock.as_raw_fd().min(dup.as_raw_fd());
    assert_eq!(
        a[0].target,
        format!("socket filter on inet/dgram socket of pid {me} fd {fd}")
    );
    assert_eq!(
        s.graph.roots(Obj::Prog(id)),
        std::collections::BTreeSet::from([Root::Process(me)]),
        "the process holding the socket keeps the program"
    );
    // xt_bpf and tun are not read: socket_filter counts are never exact,
    // and the metric says so.
    assert!(!h.exact);
    assert!(!source_complete(&s, "xt_bpf"));
    assert!(!source_complete(&s, "tun"));
    let text = text(&s);
    assert!(text.contains(&format!(
        "bpfmap_program_holders{{id=\"{id}\",kind=\"socket\"}} 1\n"
    )));

    // In flight: the socket sent over a unix socket pair, every fd of it
    // closed. Only an unreceived message keeps it (and its filter).
    let mut pair = [0i32; 2];
    // SAFETY: pair has room for two fds.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: fresh fds of ours.
    let (a_end, b_end) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    send_fd(&a_end, sock.as_raw_fd());
    drop(sock);
    drop(dup);
    let (s, _) = census.take(&[]);
    assert_eq!(prog_refcnt(&s, id), 1);
    if !s.features.iter_unix {
        // Before 5.17 files in flight cannot be read: the filter is not
        // found and the socket source says it is incomplete.
        assert!(!kernel_at_least(5, 17));
        assert_eq!(s.prog_holders[&id].get(ProgHolderKind::Socket), Some(0));
        assert!(!source_complete(&s, "socket"));
        assert_eq!(s.prog_holders[&id].unexplained(1), None, "withheld");
        return;
    }
    let a = attachments(&s, id, ProgHolderKind::Socket);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].held_by, vec![AttachedBy::Inflight]);
    assert_eq!(a[0].target, "socket filter on a socket in flight");
    assert_eq!(
        s.graph.roots(Obj::Prog(id)),
        std::collections::BTreeSet::from([Root::Inflight])
    );
    assert_eq!(s.prog_holders[&id].unexplained(1), Some(0));
    drop((a_end, b_end));
}

#[test]
fn a_reuseport_group_of_two_sockets_holds_its_program_once() {
    require_root();
    let p = prog(libbpf_rs::libbpf_sys::BPF_PROG_TYPE_SOCKET_FILTER);
    let id = prog_id(&p);
    let bind = |s: &OwnedFd, port: u16| {
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: addr outlives the call; its size is passed.
        let rc = unsafe {
            libc::bind(
                s.as_raw_fd(),
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of_val(&addr) as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    };
    let a = socket(libc::SOCK_DGRAM);
    setsockopt_i32(&a, libc::SO_REUSEPORT, 1);
    bind(&a, 0);
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&addr) as u32;
    // SAFETY: addr and len are valid for the call.
    let rc = unsafe {
        libc::getsockname(
            a.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    let b = socket(libc::SOCK_DGRAM);
    setsockopt_i32(&b, libc::SO_REUSEPORT, 1);
    bind(&b, u16::from_be(addr.sin_port));
    setsockopt_i32(&b, libc::SO_ATTACH_REUSEPORT_EBPF, p.as_raw_fd());
    drop(p);
    let me = std::process::id();
    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, _) = census.take(&[]);
    assert_eq!(prog_refcnt(&s, id), 1, "the group's selector only");
    let found = attachments(&s, id, ProgHolderKind::Reuseport);
    assert_eq!(found.len(), 1, "one group, two sockets: {found:?}");
    assert_eq!(found[0].held_by, vec![AttachedBy::Process(me)]);
    assert!(
        found[0]
            .target
            .starts_with("reuseport group of inet/dgram socket of pid "),
        "{}",
        found[0].target
    );
    let h = &s.prog_holders[&id];
    assert_eq!(h.get(ProgHolderKind::Reuseport), Some(1));
    assert_eq!(h.get(ProgHolderKind::Socket), Some(0));
    assert_eq!(h.unexplained(1), Some(0));
    drop((a, b));
}

/// perf_event_open(2) of a disabled software cpu-clock event on this
/// thread (it never fires), with `inherit` as asked.
fn perf_event(inherit: bool) -> OwnedFd {
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes()); // size
    attr[8..16].copy_from_slice(&0u64.to_ne_bytes()); // PERF_COUNT_SW_CPU_CLOCK
    attr[16..24].copy_from_slice(&1_000_000_000u64.to_ne_bytes()); // sample_period
    let flags: u64 = 1 | if inherit { 2 } else { 0 }; // disabled, inherit
    attr[40..48].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: attr is a zero-extended perf_event_attr of the size it names.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            0,
            -1,
            -1,
            8u64, // PERF_FLAG_FD_CLOEXEC
        )
    };
    assert!(
        fd >= 0,
        "perf_event_open: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd of ours.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

fn set_bpf(ev: &OwnedFd, p: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: the ioctl takes the program fd as its argument.
    let rc = unsafe { libc::ioctl(ev.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, p.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn a_perf_event_holds_its_program_and_inherited_events_make_the_source_incomplete() {
    require_root();
    let p = prog(libbpf_rs::libbpf_sys::BPF_PROG_TYPE_PERF_EVENT);
    let id = prog_id(&p);
    let ev = perf_event(false);
    set_bpf(&ev, &p).expect("PERF_EVENT_IOC_SET_BPF");
    let me = std::process::id();
    let mut census = Census::load(CensusOpts::default()).expect("census loads");
    let (s, _) = census.take(&[]);
    assert_eq!(prog_refcnt(&s, id), 2, "the program's file and the event");
    let h = &s.prog_holders[&id];
    assert_eq!(h.get(ProgHolderKind::File), Some(1));
    assert_eq!(h.get(ProgHolderKind::PerfEvent), Some(1));
    assert_eq!(h.unexplained(2), Some(0));
    let a = attachments(&s, id, ProgHolderKind::PerfEvent);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].held_by, vec![AttachedBy::Process(me)]);
    // Its type as the kernel keeps it (6.x gives cpu-clock a PMU of its
    // own), its fd as this process holds it.
    assert!(
        a[0].target.starts_with("perf event (")
            && a[0]
                .target
                .ends_with(&format!(") of pid {me} fd {}", ev.as_raw_fd())),
        "{}",
        a[0].target
    );
    if s.features.iter_unix && kernel_at_least(5, 19) {
        // Links, files in flight and io_uring tables are all readable
        // here: nothing else can hold a perf event.
        assert!(source_complete(&s, "perf_event"));
    }
    drop(ev);

    // An inherited event: a thread started after it gets a child event
    // holding the program too, which no file reaches.
    let ev = perf_event(true);
    if let Err(e) = set_bpf(&ev, &p) {
        // A kernel that refuses programs on inherited events has no child
        // event holding one: nothing to count.
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        eprintln!("this kernel refuses programs on inherited perf events");
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let _ = rx.recv();
    });
    let (s, _) = census.take(&[]);
    let r = prog_refcnt(&s, id);
    assert!(
        r >= 3,
        "file, event and at least the thread's child event: {r}"
    );
    let h = &s.prog_holders[&id];
    assert_eq!(
        h.get(ProgHolderKind::PerfEvent),
        Some(1),
        "the parent, once"
    );
    assert!(
        !source_complete(&s, "perf_event"),
        "child events make it incomplete"
    );
    assert_eq!(h.unexplained(r), None, "withheld, never guessed");
    tx.send(()).unwrap();
    t.join().unwrap();
    drop((ev, p));
}
