//! Holder sources found by bpf() queries rather than iterators: every link
//! (its program, and the map an iterator link is bound to), and the objects
//! in outer-map and prog_array slots.
use anyhow::Context;

use libbpf_rs::MapCore;

use crate::bpf::census::records::{
    LINK_TYPE_ITER, LINK_TYPE_NETNS, LINK_TYPE_PERF_EVENT, LINK_TYPE_XDP,
};
use crate::bpf::census::LinkRecord;
use crate::sys;

/// Every link on the node, by one bpf() query each (kernels without
/// iter/bpf_link). Only iterator links' types are told apart (the rest read
/// 0): nothing but `is_iter` reads the type. Also the tracing links whose
/// target program the link info does not tell (see [`tracing_target`]).
pub(crate) fn links() -> anyhow::Result<(Vec<LinkRecord>, Vec<u32>)> {
    use libbpf_rs::query::{IterType, LinkInfo, LinkTypeInfo};
    use std::os::fd::AsFd;
    let ids = sys::all_link_ids().context("BPF_LINK_GET_NEXT_ID")?;
    let mut out = Vec::with_capacity(ids.len());
    let mut unknown = Vec::new();
    for id in ids {
        let fd = match sys::link_fd_by_id(id) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e).with_context(|| format!("BPF_LINK_GET_FD_BY_ID {id}")),
        };
        let info = LinkInfo::from_fd(fd.as_fd())
            .with_context(|| format!("BPF_OBJ_GET_INFO_BY_FD of link {id}"))?;
        let (mut iter_map_id, mut tgt_prog_id, mut cgroup) = (None, None, None);
        let mut link_type = link_type_of(&info.info);
        let target = link_target(&info.info);
        match info.info {
            LinkTypeInfo::Iter(it) => {
                link_type = LINK_TYPE_ITER;
                if let IterType::Map { map_id } = it.iter_type {
                    iter_map_id = (map_id != 0).then_some(map_id);
                }
            }
            LinkTypeInfo::Tracing(t) => match tracing_target(info.prog_id, t.target_obj_id) {
                Some(tgt) => tgt_prog_id = tgt,
                None => unknown.push(id),
            },
            LinkTypeInfo::Cgroup(c) if c.cgroup_id != 0 => {
                cgroup = Some((c.cgroup_id, c.attach_type as u32))
            }
            LinkTypeInfo::PerfEvent(_) => link_type = LINK_TYPE_PERF_EVENT,
            _ => {}
        }
        out.push(LinkRecord {
            id,
            link_type,
            prog_id: info.prog_id,
            iter_map_id,
            tgt_prog_id,
            cgroup,
            // Its event is not readable through bpf(): a perf link read
            // here makes the perf event source incomplete.
            perf_event: None,
            target,
        });
    }
    Ok((out, unknown))
}

/// What a link's info says it is attached to. The info names no network
/// namespace of a device (its ifindex is of the device's own namespace)
/// and no device name; a target the kernel reports as 0 (ifindex, cgroup,
/// namespace, map) is gone or detached.
fn link_target(info: &libbpf_rs::query::LinkTypeInfo) -> crate::bpf::census::LinkTarget {
    use crate::bpf::census::{LinkDevice, LinkTarget, NetfilterHook};
    use libbpf_rs::query::LinkTypeInfo as I;
    let at = |a: libbpf_rs::ProgramAttachType| {
        let t = a as u32;
        (t != u32::MAX).then_some(t)
    };
    let dev = |ifindex: u32| LinkTarget {
        device: (ifindex != 0).then_some(LinkDevice {
            ifindex,
            name: None,
        }),
        detached: ifindex == 0,
        ..Default::default()
    };
    match info {
        I::Xdp(x) => dev(x.ifindex),
        I::Tcx(x) => LinkTarget {
            attach_type: at(x.attach_type.clone()),
            ..dev(x.ifindex)
        },
        I::Netkit(x) => LinkTarget {
            attach_type: at(x.attach_type.clone()),
            ..dev(x.ifindex)
        },
        I::NetNs(n) => LinkTarget {
            attach_type: at(n.attach_type.clone()),
            netns: (n.ino != 0).then_some(n.ino),
            detached: n.ino == 0,
            ..Default::default()
        },
        I::Cgroup(c) => LinkTarget {
            attach_type: at(c.attach_type.clone()),
            detached: c.cgroup_id == 0,
            ..Default::default()
        },
        I::Tracing(t) => LinkTarget {
            attach_type: at(t.attach_type.clone()),
            trampoline: (t.target_obj_id != 0).then_some((t.target_obj_id, t.target_btf_id)),
            ..Default::default()
        },
        I::StructOps(s) => LinkTarget {
            map_id: (s.map_id != 0).then_some(s.map_id),
            detached: s.map_id == 0,
            ..Default::default()
        },
        I::Netfilter(n) => LinkTarget {
            netfilter: Some(NetfilterHook {
                pf: n.protocol_family,
                hooknum: n.hooknum,
                priority: n.priority,
                defrag: n.flags & 1 != 0,
            }),
            ..Default::default()
        },
        I::RawTracepoint(r) => LinkTarget {
            tracepoint: (!r.name.is_empty()).then(|| r.name.clone()),
            ..Default::default()
        },
        _ => LinkTarget::default(),
    }
}

/// The uapi `enum bpf_link_type` of a link's info (0 for one this
/// libbpf-rs does not name).
fn link_type_of(info: &libbpf_rs::query::LinkTypeInfo) -> u32 {
    use libbpf_rs::query::LinkTypeInfo;
    match info {
        LinkTypeInfo::RawTracepoint(_) => 1,
        LinkTypeInfo::Tracing(_) => 2,
        LinkTypeInfo::Cgroup(_) => 3,
        LinkTypeInfo::Iter(_) => LINK_TYPE_ITER,
        LinkTypeInfo::NetNs(_) => LINK_TYPE_NETNS,
        LinkTypeInfo::Xdp(_) => LINK_TYPE_XDP,
        LinkTypeInfo::PerfEvent(_) => LINK_TYPE_PERF_EVENT,
        LinkTypeInfo::KprobeMulti(_) => 8,
        LinkTypeInfo::StructOps(_) => 9,
        LinkTypeInfo::Netfilter(_) => 10,
        LinkTypeInfo::Tcx(_) => 11,
        LinkTypeInfo::UprobeMulti(_) => 12,
        LinkTypeInfo::Netkit(_) => 13,
        LinkTypeInfo::SockMap(_) => 14,
        _ => 0,
    }
}

/// The program a tracing link holds, from its link info: `Some(None)` for
/// none (a kernel function), `None` when the kernel does not tell.
/// `target_obj_id` (5.13+) is the target program's id for an freplace
/// program, otherwise a program's id or a BTF object's id: told apart by
/// which of them exists (both or neither: unknown).
fn tracing_target(prog_id: u32, target_obj_id: u32) -> Option<Option<u32>> {
    use crate::bpf::query::{btf_exists, prog_type_by_id as prog_type};
    if target_obj_id == 0 {
        return None;
    }
    const EXT: u32 = 28;
    if prog_type(prog_id) == Some(EXT) {
        return Some(Some(target_obj_id));
    }
    match (
        prog_type(target_obj_id).is_some(),
        btf_exists(target_obj_id),
    ) {
        (true, false) => Some(Some(target_obj_id)),
        (false, true) => Some(None),
        _ => None,
    }
}

/// For every slot of every map in `ids` (outer maps, or prog_arrays): the
/// holding map's id and the id the slot holds (an inner map's, or a
/// program's: the syscall side of a lookup in an fd array returns the
/// object's id).
pub(crate) fn fd_array_slots(ids: &[u32]) -> anyhow::Result<Vec<(u32, u32)>> {
    let outer = ids;
    let mut out = Vec::new();
    for &id in outer {
        let h = match libbpf_rs::MapHandle::from_map_id(id) {
            Ok(h) => h,
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => continue, // freed meanwhile
            Err(e) => {
                return Err(e).with_context(|| format!("BPF_MAP_GET_FD_BY_ID {id} (fd array)"))
            }
        };
        for key in h.keys() {
            if let Ok(Some(v)) = h.lookup(&key, libbpf_rs::MapFlags::ANY) {
                if v.len() >= 4 {
                    out.push((id, u32::from_le_bytes(v[..4].try_into().expect("4 bytes"))));
                }
            }
        }
    }
    Ok(out)
}
