//! Holder sources found by bpf() queries rather than iterators: every link
//! (its program, and the map an iterator link is bound to), and the objects
//! in outer-map and prog_array slots.
use anyhow::Context;

use libbpf_rs::MapCore;

use crate::bpf::census::records::{LINK_TYPE_ITER, LINK_TYPE_PERF_EVENT};
use crate::bpf::census::LinkRecord;
use crate::sys;

/// Every link on the node, by one bpf() query each (kernels without
/// iter/bpf_link). Only iterator links' types are told apart (the rest read
/// 0): nothing but `is_iter` reads the type.
pub(crate) fn links() -> anyhow::Result<Vec<LinkRecord>> {
    use libbpf_rs::query::{IterType, LinkInfo, LinkTypeInfo};
    use std::os::fd::AsFd;
    let ids = sys::all_link_ids().context("BPF_LINK_GET_NEXT_ID")?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let fd = match sys::link_fd_by_id(id) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e).with_context(|| format!("BPF_LINK_GET_FD_BY_ID {id}")),
        };
        let info = LinkInfo::from_fd(fd.as_fd())
            .with_context(|| format!("BPF_OBJ_GET_INFO_BY_FD of link {id}"))?;
        let (iter_map_id, link_type) = match info.info {
            LinkTypeInfo::Iter(it) => match it.iter_type {
                IterType::Map { map_id } if map_id != 0 => (Some(map_id), LINK_TYPE_ITER),
                _ => (None, LINK_TYPE_ITER),
            },
            LinkTypeInfo::PerfEvent(_) => (None, LINK_TYPE_PERF_EVENT),
            _ => (None, 0),
        };
        out.push(LinkRecord {
            id,
            link_type,
            prog_id: info.prog_id,
            iter_map_id,
            // Its event is not readable through bpf(): a perf link read
            // here makes the perf event source incomplete.
            perf_event: None,
        });
    }
    Ok(out)
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
