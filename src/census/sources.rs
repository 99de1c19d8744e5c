//! Holder sources found by bpf() queries rather than iterators: every link
//! (its program, and the map an iterator link is bound to), and the objects
//! in outer-map and prog_array slots.
use anyhow::Context;

use libbpf_rs::MapCore;

use crate::sys;

/// One link, as BPF_OBJ_GET_INFO_BY_FD reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkRecord {
    pub id: u32,
    /// The program the link holds (0 for none).
    pub prog_id: u32,
    /// An iterator link bound to a map: that map's id.
    pub iter_map_id: Option<u32>,
    /// An iterator link (a template for iterator instances, attached to
    /// nothing); every other link type attaches its program somewhere.
    pub is_iter: bool,
}

/// Every link on the node.
pub(crate) fn links() -> anyhow::Result<Vec<LinkRecord>> {
    use libbpf_rs::query::{IterType, LinkInfo, LinkTypeInfo};
    use std::os::fd::AsFd;
    let ids = sys::all_ids(sys::IdSpace::Link).context("BPF_LINK_GET_NEXT_ID")?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let fd = match sys::fd_by_id(sys::IdSpace::Link, id) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e).with_context(|| format!("BPF_LINK_GET_FD_BY_ID {id}")),
        };
        let info = LinkInfo::from_fd(fd.as_fd())
            .with_context(|| format!("BPF_OBJ_GET_INFO_BY_FD of link {id}"))?;
        let (iter_map_id, is_iter) = match info.info {
            LinkTypeInfo::Iter(it) => match it.iter_type {
                IterType::Map { map_id } if map_id != 0 => (Some(map_id), true),
                _ => (None, true),
            },
            _ => (None, false),
        };
        out.push(LinkRecord {
            id,
            prog_id: info.prog_id,
            iter_map_id,
            is_iter,
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
