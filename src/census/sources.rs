//! Holder sources found by bpf() queries rather than iterators: the maps
//! every program uses, the maps iterator links are bound to, and the inner
//! maps in outer-map slots.
use anyhow::Context;

use libbpf_rs::MapCore;

use crate::sys;

/// For every program: the ids of the maps it uses.
pub(crate) fn program_map_ids() -> anyhow::Result<Vec<Vec<u32>>> {
    let ids = sys::all_ids(sys::IdSpace::Prog).context("BPF_PROG_GET_NEXT_ID")?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let fd = match sys::fd_by_id(sys::IdSpace::Prog, id) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue, // unloaded meanwhile
            Err(e) => return Err(e).with_context(|| format!("BPF_PROG_GET_FD_BY_ID {id}")),
        };
        match sys::prog_map_ids(&fd) {
            Ok(m) => out.push(m),
            Err(e) => return Err(e).with_context(|| format!("program {id} info")),
        }
    }
    Ok(out)
}

/// For every iterator link bound to a map: that map's id.
pub(crate) fn iter_link_map_ids() -> anyhow::Result<Vec<u32>> {
    use libbpf_rs::query::{IterType, LinkInfo, LinkTypeInfo};
    use std::os::fd::AsFd;
    let ids = sys::all_ids(sys::IdSpace::Link).context("BPF_LINK_GET_NEXT_ID")?;
    let mut out = Vec::new();
    for id in ids {
        let fd = match sys::fd_by_id(sys::IdSpace::Link, id) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e).with_context(|| format!("BPF_LINK_GET_FD_BY_ID {id}")),
        };
        let Ok(info) = LinkInfo::from_fd(fd.as_fd()) else {
            continue;
        };
        if let LinkTypeInfo::Iter(it) = info.info {
            if let IterType::Map { map_id } = it.iter_type {
                if map_id != 0 {
                    out.push(map_id);
                }
            }
        }
    }
    Ok(out)
}

/// For every slot of every outer map: the inner map id it holds.
pub(crate) fn outer_map_slots(outer: &[u32]) -> anyhow::Result<Vec<u32>> {
    let mut out = Vec::new();
    for &id in outer {
        let h = match libbpf_rs::MapHandle::from_map_id(id) {
            Ok(h) => h,
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => continue, // freed meanwhile
            Err(e) => {
                return Err(e).with_context(|| format!("BPF_MAP_GET_FD_BY_ID {id} (outer map)"))
            }
        };
        for key in h.keys() {
            if let Ok(Some(v)) = h.lookup(&key, libbpf_rs::MapFlags::ANY) {
                if v.len() >= 4 {
                    out.push(u32::from_le_bytes(v[..4].try_into().expect("4 bytes")));
                }
            }
        }
    }
    Ok(out)
}
