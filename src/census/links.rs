//! The links part: every live link as a census object, with what keeps it
//! alive. Pure code over one scrape's walks, unit-tested without root.
//!
//! Kernel facts this follows: a link is held by its files (one reference
//! per `struct file`, however many fds share it), its bpffs pins and
//! io_uring tables that hold a link file; a link other than an iterator
//! link is attached to something (a device, a cgroup, a hook) and keeps
//! its program attached while it lives. The census does not read a link's
//! refcount, so no unexplained count is published for links: the holders
//! found are real, the rest is not claimed.
use std::collections::HashSet;

use super::bpffs::Pin;
use super::fdinfo::ObjKind;
use super::{IdMap, ObjectFile, ObjectKind, UringRecord};
use crate::bpf::census::LinkRecord;

/// A link's holders by kind; `None` where the source is off or failed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LinkHolders {
    pub files: Option<u64>,
    pub pins: Option<u64>,
    pub io_uring: Option<u64>,
}

impl LinkHolders {
    /// Every kind with its count, in label order.
    pub fn iter(&self) -> [(&'static str, Option<u64>); 3] {
        [
            ("file", self.files),
            ("pin", self.pins),
            ("io_uring", self.io_uring),
        ]
    }

    /// Held by pins and by no file or io_uring table, with both sources
    /// read: kept only by bpffs (a stale pin candidate when its program's
    /// owner is gone; attached links still work).
    pub fn pins_only(&self) -> bool {
        self.pins.unwrap_or(0) > 0 && self.files == Some(0) && self.io_uring == Some(0)
    }
}

/// Per-link holders for every link in `links`.
pub fn holders<'a>(
    links: impl IntoIterator<Item = &'a LinkRecord>,
    files: Option<&[ObjectFile]>,
    pins: Option<&[Pin]>,
    rings: Option<&[UringRecord]>,
) -> IdMap<LinkHolders> {
    let zero = LinkHolders {
        files: files.map(|_| 0),
        pins: pins.map(|_| 0),
        io_uring: files.and(rings).map(|_| 0),
    };
    let mut out: IdMap<LinkHolders> = links.into_iter().map(|l| (l.id, zero.clone())).collect();
    let mut seen = HashSet::new();
    for f in files.into_iter().flatten() {
        if f.kind == ObjectKind::Link && seen.insert(f.file_ptr) {
            if let Some(Some(n)) = out.get_mut(&f.id).map(|h| h.files.as_mut()) {
                *n += 1;
            }
        }
    }
    // Files only rings hold (in no fd table), once each.
    for r in rings.into_iter().flatten() {
        if let Some((super::RingObject::Link, id)) = r.object {
            if seen.insert(r.file_ptr) {
                if let Some(Some(n)) = out.get_mut(&id).map(|h| h.io_uring.as_mut()) {
                    *n += 1;
                }
            }
        }
    }
    let mut inodes = HashSet::new();
    for p in pins.into_iter().flatten() {
        if p.info.kind == ObjKind::Link && inodes.insert((p.dev, p.ino)) {
            if let Some(Some(n)) = out.get_mut(&p.info.id).map(|h| h.pins.as_mut()) {
                *n += 1;
            }
        }
    }
    out
}

/// The link's attach type as bpftool names it (`tcx_ingress`,
/// `cgroup_inet_ingress`), or `None` where this kernel does not tell it.
pub fn attach_type_label(l: &LinkRecord) -> Option<String> {
    l.target
        .attach_type
        .map(crate::bpf::query::attach_type_name)
}

/// Where a link is attached, as one line (`dev veth0 (ifindex 5, netns
/// 4026532000)`, `cgroup /sys/fs/cgroup/x (id 1234)`, `netns 4026531840`).
/// `cgroup_path` resolves a cgroup id where the cgroups part saw it.
/// Names ids where nothing resolves them; says so where the kernel does
/// not tell the target.
pub fn target_text(l: &LinkRecord, cgroup_path: impl Fn(u64) -> Option<String>) -> String {
    let t = &l.target;
    let netns = |n: Option<u32>| n.map(|n| format!("netns {n}"));
    let mut parts: Vec<String> = Vec::new();
    if l.is_iter() {
        return match l.iter_map_id {
            Some(m) => format!("iterator over map {m} (attached to nothing)"),
            None => "iterator (attached to nothing)".into(),
        };
    }
    if let Some(d) = &t.device {
        let mut ids = vec![format!("ifindex {}", d.ifindex)];
        ids.extend(netns(t.netns));
        parts.push(match &d.name {
            Some(n) => format!("dev {n} ({})", ids.join(", ")),
            None => format!("dev {}", ids.join(", ")),
        });
    } else if let Some((cg, _)) = l.cgroup {
        parts.push(match cgroup_path(cg) {
            Some(p) => format!("cgroup {p} (id {cg})"),
            None => format!("cgroup id {cg}"),
        });
    } else if let Some(nf) = t.netfilter {
        parts.push(format!(
            "netfilter pf {} hook {} priority {}{}",
            nf.pf,
            nf.hooknum,
            nf.priority,
            if nf.defrag { " with defrag" } else { "" }
        ));
        parts.extend(netns(t.netns));
    } else if let Some(n) = netns(t.netns) {
        parts.push(n);
    }
    if let Some((obj, btf)) = t.trampoline {
        parts.push(match l.tgt_prog_id {
            Some(p) => format!("program {p} (BTF id {btf})"),
            None if obj == 1 => format!("vmlinux BTF id {btf}"),
            None => format!("BTF object {obj} id {btf}"),
        });
    }
    if let Some(m) = t.map_id {
        parts.push(format!("struct_ops map {m}"));
    }
    if let Some(tp) = &t.tracepoint {
        parts.push(format!("tracepoint {tp}"));
    }
    if t.detached {
        parts.push(
            "detached: its target is gone or it was detached, its program runs nowhere".into(),
        );
    }
    if parts.is_empty() {
        return if l.perf_event.is_some() {
            "a perf event".into()
        } else {
            "not told by this kernel".into()
        };
    }
    parts.join(", ")
}

/// bpftool's name of a link type (`enum bpf_link_type`), or `type N`.
pub fn link_type_label(t: u32) -> std::borrow::Cow<'static, str> {
    const NAMES: [&str; 15] = [
        "unspec",
        "raw_tracepoint",
        "tracing",
        "cgroup",
        "iter",
        "netns",
        "xdp",
        "perf_event",
        "kprobe_multi",
        "struct_ops",
        "netfilter",
        "tcx",
        "uprobe_multi",
        "netkit",
        "sockmap",
    ];
    match NAMES.get(t as usize) {
        Some(n) => std::borrow::Cow::Borrowed(n),
        None => std::borrow::Cow::Owned(format!("type {t}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::census::fdinfo::FdInfo;

    fn link(id: u32, prog_id: u32) -> LinkRecord {
        LinkRecord {
            id,
            link_type: 6,
            prog_id,
            iter_map_id: None,
            ..Default::default()
        }
    }

    fn file(ptr: u64, id: u32, kind: ObjectKind) -> ObjectFile {
        ObjectFile {
            kind,
            id,
            file_ptr: ptr,
            cgroup_id: 0,
            tgid: 10,
            pid: 10,
            fd: 3,
            comm: b"x".to_vec(),
        }
    }

    fn pin(ino: u64, id: u32, kind: ObjKind) -> Pin {
        Pin {
            mount: "/sys/fs/bpf".into(),
            path: format!("/p{ino}"),
            dev: 1,
            ino,
            info: FdInfo {
                kind,
                id,
                memlock: None,
                map_type: None,
            },
            fresh: true,
        }
    }

    #[test]
    fn files_pins_and_rings_count_once_each() {
        let links = [link(1, 7), link(2, 8), link(3, 9)];
        let files = [
            // One file shared by two fds, one more file; a program file of
            // the same id is not a link file.
            file(0x10, 1, ObjectKind::Link),
            file(0x10, 1, ObjectKind::Link),
            file(0x20, 1, ObjectKind::Link),
            file(0x30, 2, ObjectKind::Program),
        ];
        // Two paths of one inode are one pin.
        let pins = [
            pin(5, 2, ObjKind::Link),
            pin(5, 2, ObjKind::Link),
            pin(6, 3, ObjKind::Prog),
        ];
        let ring = UringRecord {
            ring_ptr: 1,
            file_ptr: 0x40,
            cgroup_id: 0,
            tgid: 11,
            fd: 4,
            object: Some((crate::census::RingObject::Link, 3)),
            comm: b"r".to_vec(),
            slots: 1,
        };
        let h = holders(&links, Some(&files), Some(&pins), Some(&[ring]));
        assert_eq!(h[&1].files, Some(2));
        assert_eq!(h[&2].pins, Some(1));
        assert!(h[&2].pins_only());
        assert_eq!(h[&3].io_uring, Some(1));
        assert_eq!(h[&3].pins, Some(0));
        // Sources that did not run read unknown, and nothing is pins-only.
        let h = holders(&links, None, Some(&pins), None);
        assert_eq!(h[&2].files, None);
        assert!(!h[&2].pins_only());
    }

    #[test]
    fn link_types_carry_bpftools_names() {
        assert_eq!(link_type_label(6), "xdp");
        assert_eq!(link_type_label(11), "tcx");
        assert_eq!(link_type_label(99), "type 99");
    }
}
