//! Program references kept inside socket and perf event files: a perf
//! event's program (`PERF_EVENT_IOC_SET_BPF` or a perf link), a socket's
//! filter (`SO_ATTACH_BPF`) and a reuseport group's selector
//! (`SO_ATTACH_REUSEPORT_EBPF`). Pure code: the task walk, the link walk,
//! the in-flight walk and the io_uring walk feed it.
//!
//! Kernel facts this follows:
//! - a perf event holds one reference in `event->prog`, whether set by
//!   ioctl or by a perf link (the link takes its own reference besides:
//!   `bpf_perf_link_attach` adds one for the event), and an inherited child
//!   event takes one more (`perf_event_alloc` copies the parent's);
//! - a `struct sk_filter` holds one reference; a listener's accepted
//!   children share it (`sk_clone_lock`), and keep it if the listener's
//!   changes before they are accepted;
//! - a reuseport group (`struct sock_reuseport`) holds one reference,
//!   shared by its sockets;
//! - a closed TCP socket lingers as an orphan, with its filter, reachable
//!   from no file; the node's orphan count (`/proc/net/sockstat`) is global.
//!
//! Every reference is reported once, keyed by the kernel object that holds
//! it, with every process whose fd table reaches it.
use std::collections::{BTreeMap, BTreeSet};

use super::programs::{AttachSource, AttachedBy, Attachment, ProgHolderKind};
use crate::bpf::census::records::{AttachFile, AttachKind, InflightRecord, LINK_TYPE_PERF_EVENT};
use crate::bpf::census::{LinkRecord, RingObject, UringRecord};

/// The holder kind of an attachment kind.
pub fn holder_kind(k: AttachKind) -> ProgHolderKind {
    match k {
        AttachKind::PerfEvent => ProgHolderKind::PerfEvent,
        AttachKind::SockFilter => ProgHolderKind::Socket,
        AttachKind::Reuseport => ProgHolderKind::Reuseport,
    }
}

/// What the walks saw; `None` where a walk did not run or failed.
#[derive(Debug, Default)]
pub struct Input<'a> {
    /// The task walk's attachment records.
    pub files: Option<&'a [AttachFile]>,
    /// The task walk saw every process (the host's pid namespace).
    pub all_processes: bool,
    /// Every live link (perf links keep their event without any fd).
    pub links: Option<&'a [LinkRecord]>,
    /// The in-flight walk's records, and whether it read every queue of
    /// every network namespace. `Some((&[], false))` where the kernel
    /// cannot walk files in flight.
    pub inflight: Option<(&'a [InflightRecord], bool)>,
    /// The io_uring walk's records and whether it was complete; the
    /// boolean alone where tables cannot be walked (whether some ring may
    /// hold a socket or perf event file).
    pub io_uring: Option<(&'a [UringRecord], bool)>,
    /// The node's TCP orphan count.
    pub tcp_orphans: Option<u64>,
}

#[derive(Default)]
struct Entry {
    prog_id: u32,
    held_by: BTreeSet<AttachedBy>,
    /// The first file seen: (tgid, fd, attr, config).
    file: Option<(u32, u32, u32, u64)>,
}

const KINDS: [AttachKind; 3] = [
    AttachKind::PerfEvent,
    AttachKind::SockFilter,
    AttachKind::Reuseport,
];

/// One [`AttachSource`] per kind (perf_event, socket, reuseport); empty
/// when the task walk did not run.
pub fn sources(i: &Input) -> BTreeMap<ProgHolderKind, AttachSource> {
    let Some(files) = i.files else {
        return BTreeMap::new();
    };
    let mut why: BTreeMap<AttachKind, Vec<String>> = BTreeMap::new();
    let mut note = |k: AttachKind, s: &str| {
        let v = why.entry(k).or_default();
        if !v.iter().any(|x| x == s) {
            v.push(s.to_string());
        }
    };
    let mut objs: BTreeMap<(AttachKind, u64), Entry> = BTreeMap::new();
    let mut sorted: Vec<&AttachFile> = files.iter().collect();
    sorted.sort_by_key(|f| (f.tgid, f.fd));
    for f in sorted {
        let e = objs.entry((f.kind, f.obj)).or_default();
        e.prog_id = f.prog_id;
        e.held_by.insert(AttachedBy::Process(f.tgid));
        e.file.get_or_insert((f.tgid, f.fd, f.attr, f.config));
        if f.children {
            note(f.kind, unseen_reason(f.kind));
        }
    }
    if !i.all_processes {
        for k in KINDS {
            note(k, "the task walk sees only this pid namespace's processes");
        }
    }
    let mut links_of: BTreeMap<u64, u32> = BTreeMap::new();
    match i.links {
        Some(links) => {
            for l in links {
                match l.perf_event {
                    Some(ev) => {
                        let e = objs.entry((AttachKind::PerfEvent, ev)).or_default();
                        e.prog_id = l.prog_id;
                        e.held_by.insert(AttachedBy::Link(l.id));
                        links_of.entry(ev).or_insert(l.id);
                    }
                    None if l.link_type == LINK_TYPE_PERF_EVENT => note(
                        AttachKind::PerfEvent,
                        "a perf link's event could not be read (no link iterator on this kernel)",
                    ),
                    None => {}
                }
            }
        }
        None => note(
            AttachKind::PerfEvent,
            "links were not listed: a perf link keeps its event without any fd",
        ),
    }
    match i.inflight {
        Some((recs, complete)) => {
            for r in recs {
                let Some(p) = r.prog else { continue };
                let Some(k) = p.attach else { continue };
                let e = objs.entry((k, p.obj)).or_default();
                e.prog_id = p.prog_id;
                e.held_by.insert(AttachedBy::Inflight);
                if p.children {
                    note(k, unseen_reason(k));
                }
            }
            if !complete {
                for k in KINDS {
                    note(k, "files in flight were not all read");
                }
            }
        }
        None => {
            for k in KINDS {
                note(k, "files in flight were not read");
            }
        }
    }
    match i.io_uring {
        Some((recs, complete)) => {
            for r in recs {
                if let Some((RingObject::Attached(k), _)) = r.object {
                    note(
                        k,
                        "an io_uring table holds a socket or perf event file with a program",
                    );
                }
            }
            if !complete {
                for k in KINDS {
                    note(k, "an io_uring table may hold a socket or perf event file");
                }
            }
        }
        None => {
            for k in KINDS {
                note(k, "io_uring tables were not read");
            }
        }
    }
    match i.tcp_orphans {
        Some(0) => {}
        Some(n) => {
            let s = format!("{n} orphaned TCP sockets (closed, no file) may keep filters");
            note(AttachKind::SockFilter, &s);
            note(AttachKind::Reuseport, &s);
        }
        None => {
            let s = "the TCP orphan count could not be read";
            note(AttachKind::SockFilter, s);
            note(AttachKind::Reuseport, s);
        }
    }
    let mut out: BTreeMap<ProgHolderKind, AttachSource> = KINDS
        .iter()
        .map(|&k| {
            let reasons = why.get(&k);
            (
                holder_kind(k),
                AttachSource {
                    found: Vec::new(),
                    complete: reasons.is_none(),
                    incomplete: reasons.map(|r| r.join("; ")),
                },
            )
        })
        .collect();
    for ((k, obj), e) in objs {
        if e.prog_id == 0 {
            continue;
        }
        let target = target(k, obj, &e, links_of.get(&obj).copied());
        if let Some(src) = out.get_mut(&holder_kind(k)) {
            src.found.push(Attachment {
                prog_id: e.prog_id,
                kind: holder_kind(k),
                held_by: e.held_by.into_iter().collect(),
                target,
            });
        }
    }
    out
}

fn unseen_reason(k: AttachKind) -> &'static str {
    match k {
        AttachKind::PerfEvent => "a perf event with a program has inherited child events (each holds the program)",
        _ => "a listening socket with a filter has unaccepted children (they keep the filter they were created with)",
    }
}

/// A socket's family and type, by name where common.
pub fn socket_kind(attr: u32) -> String {
    let family = match attr & 0xffff {
        1 => "unix".to_string(),
        2 => "inet".to_string(),
        10 => "inet6".to_string(),
        16 => "netlink".to_string(),
        17 => "packet".to_string(),
        40 => "vsock".to_string(),
        f => format!("family {f}"),
    };
    let ty = match attr >> 16 {
        1 => "stream".to_string(),
        2 => "dgram".to_string(),
        3 => "raw".to_string(),
        5 => "seqpacket".to_string(),
        t => format!("type {t}"),
    };
    format!("{family}/{ty}")
}

/// A perf event by `attr.type` and `attr.config`.
pub fn perf_kind(ty: u32, config: u64) -> String {
    match ty {
        0 => format!("hardware config {config}"),
        1 => format!("software config {config}"),
        2 => format!("tracepoint id {config}"),
        3 => format!("hw_cache config {config}"),
        4 => format!("raw config {config:#x}"),
        5 => "breakpoint".to_string(),
        t => format!("pmu type {t} config {config:#x}"),
    }
}

fn target(k: AttachKind, _obj: u64, e: &Entry, link: Option<u32>) -> String {
    let whose = match (e.file, link) {
        (Some((tgid, fd, _, _)), _) => format!("of pid {tgid} fd {fd}"),
        (None, Some(l)) => format!("of link {l}"),
        (None, None) => "in flight".to_string(),
    };
    let (attr, config) = e.file.map(|f| (f.2, f.3)).unwrap_or_default();
    match k {
        AttachKind::PerfEvent if e.file.is_some() => {
            format!("perf event ({}) {whose}", perf_kind(attr, config))
        }
        AttachKind::PerfEvent => format!("perf event {whose}"),
        AttachKind::SockFilter if e.file.is_some() => {
            format!("socket filter on {} socket {whose}", socket_kind(attr))
        }
        AttachKind::SockFilter => format!("socket filter on a socket {whose}"),
        AttachKind::Reuseport if e.file.is_some() => {
            format!("reuseport group of {} socket {whose}", socket_kind(attr))
        }
        AttachKind::Reuseport => format!("reuseport group of a socket {whose}"),
    }
}

/// The node's TCP orphan count: `orphan N` on the `TCP:` line of
/// `/proc/net/sockstat` (a global counter, whatever the namespace).
pub fn tcp_orphans(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == "orphan" {
            return it.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::census::records::InflightProg;

    fn file(kind: AttachKind, prog_id: u32, obj: u64, tgid: u32, fd: u32) -> AttachFile {
        AttachFile {
            kind,
            prog_id,
            obj,
            file_ptr: obj + u64::from(tgid),
            tgid,
            fd,
            attr: 2 | 1 << 16,
            config: 0,
            children: false,
        }
    }

    fn complete_input(files: &[AttachFile]) -> Input<'_> {
        Input {
            files: Some(files),
            all_processes: true,
            links: Some(&[]),
            inflight: Some((&[], true)),
            io_uring: Some((&[], true)),
            tcp_orphans: Some(0),
        }
    }

    #[test]
    fn one_reference_per_kernel_object_with_every_holder() {
        // A listener and its accepted child share one sk_filter; two
        // processes hold the listener (fork); a reuseport group of two
        // sockets is one reference.
        let files = [
            file(AttachKind::SockFilter, 7, 0x100, 10, 3),
            file(AttachKind::SockFilter, 7, 0x100, 11, 3),
            file(AttachKind::SockFilter, 7, 0x100, 10, 4),
            file(AttachKind::Reuseport, 8, 0x200, 10, 5),
            file(AttachKind::Reuseport, 8, 0x200, 10, 6),
        ];
        let out = sources(&complete_input(&files));
        let s = &out[&ProgHolderKind::Socket];
        assert!(s.complete, "{:?}", s.incomplete);
        assert_eq!(s.found.len(), 1);
        assert_eq!(
            s.found[0].held_by,
            vec![AttachedBy::Process(10), AttachedBy::Process(11)]
        );
        assert_eq!(
            s.found[0].target,
            "socket filter on inet/stream socket of pid 10 fd 3"
        );
        let r = &out[&ProgHolderKind::Reuseport];
        assert_eq!(r.found.len(), 1);
        assert_eq!(r.found[0].prog_id, 8);
        assert!(out[&ProgHolderKind::PerfEvent].found.is_empty());
    }

    #[test]
    fn perf_link_and_its_fd_are_one_event_reference() {
        let mut f = file(AttachKind::PerfEvent, 9, 0x300, 20, 7);
        f.attr = 2;
        f.config = 123;
        let links = [
            LinkRecord {
                id: 4,
                link_type: 7,
                prog_id: 9,
                iter_map_id: None,
                perf_event: Some(0x300),
                ..Default::default()
            },
            // A perf link whose fd was closed: its event is seen only here.
            LinkRecord {
                id: 5,
                link_type: 7,
                prog_id: 9,
                iter_map_id: None,
                perf_event: Some(0x400),
                ..Default::default()
            },
        ];
        let files = [f];
        let mut i = complete_input(&files);
        i.links = Some(&links);
        let out = sources(&i);
        let p = &out[&ProgHolderKind::PerfEvent];
        assert!(p.complete);
        assert_eq!(p.found.len(), 2);
        assert_eq!(
            p.found[0].held_by,
            vec![AttachedBy::Process(20), AttachedBy::Link(4)]
        );
        assert_eq!(
            p.found[0].target,
            "perf event (tracepoint id 123) of pid 20 fd 7"
        );
        assert_eq!(p.found[1].held_by, vec![AttachedBy::Link(5)]);
        assert_eq!(p.found[1].target, "perf event of link 5");
    }

    #[test]
    fn in_flight_files_hold_and_unseen_copies_make_the_kind_incomplete() {
        let rec = |attach, obj, children| InflightRecord {
            file_ptr: 0x9000,
            sock_ino: 1,
            inner_ino: 0,
            map_id: 0,
            prog: Some(InflightProg {
                attach,
                prog_id: 3,
                obj,
                children,
            }),
            truncated: false,
        };
        let recs = [
            rec(Some(AttachKind::SockFilter), 0x500, false),
            rec(None, 0, false),
            rec(Some(AttachKind::PerfEvent), 0x600, true),
        ];
        let mut i = complete_input(&[]);
        i.inflight = Some((&recs, true));
        let out = sources(&i);
        let s = &out[&ProgHolderKind::Socket];
        assert!(s.complete);
        assert_eq!(s.found[0].held_by, vec![AttachedBy::Inflight]);
        assert_eq!(s.found[0].target, "socket filter on a socket in flight");
        let p = &out[&ProgHolderKind::PerfEvent];
        assert!(!p.complete);
        assert!(p.incomplete.as_deref().unwrap().contains("child events"));
        assert_eq!(p.found.len(), 1);
    }

    #[test]
    fn orphans_unread_walks_and_rings_make_sources_incomplete() {
        let mut i = complete_input(&[]);
        i.tcp_orphans = Some(2);
        let out = sources(&i);
        assert!(out[&ProgHolderKind::PerfEvent].complete);
        assert!(!out[&ProgHolderKind::Socket].complete);
        assert!(!out[&ProgHolderKind::Reuseport].complete);
        assert!(out[&ProgHolderKind::Socket]
            .incomplete
            .as_deref()
            .unwrap()
            .contains("2 orphaned TCP sockets"));
        let mut i = complete_input(&[]);
        i.links = None;
        i.inflight = None;
        let out = sources(&i);
        assert!(out.values().all(|s| !s.complete));
        let ring = [UringRecord {
            ring_ptr: 1,
            file_ptr: 2,
            cgroup_id: 0,
            tgid: 1,
            fd: 3,
            object: Some((RingObject::Attached(AttachKind::Reuseport), 4)),
            comm: Vec::new(),
            slots: 0,
        }];
        let mut i = complete_input(&[]);
        i.io_uring = Some((&ring, true));
        let out = sources(&i);
        assert!(!out[&ProgHolderKind::Reuseport].complete);
        assert!(out[&ProgHolderKind::Socket].complete);
        // No task walk: nothing is read.
        let i = Input::default();
        assert!(sources(&i).is_empty());
    }

    #[test]
    fn sockstat_orphans_parse() {
        let s = "sockets: used 120\nTCP: inuse 5 orphan 3 tw 0 alloc 7 mem 1\nUDP: inuse 2 mem 0\n";
        assert_eq!(tcp_orphans(s), Some(3));
        assert_eq!(tcp_orphans("UDP: inuse 2\n"), None);
    }
}
