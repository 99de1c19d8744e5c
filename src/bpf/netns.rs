//! The network namespace list (bpf/netns.bpf.c): every network namespace
//! of the node, from the kernel's `net_namespace_list`, walked on a map
//! iterator's final call. Its own object, so the census loads without it.
use std::path::Path;

use anyhow::Context;

use super::iter::IterObject;

#[allow(clippy::all, missing_docs, non_camel_case_types, unused)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/netns.skel.rs"));
}
use skel::{NetnsSkel, NetnsSkelBuilder};

/// The loaded and attached list walk.
pub struct NetnsList(IterObject<NetnsSkel<'static>>);

impl NetnsList {
    /// Load and attach; `btf_custom` is `--btf.path` when given.
    pub fn load(btf_custom: Option<&Path>) -> anyhow::Result<NetnsList> {
        IterObject::load(
            "netns",
            btf_custom,
            NetnsSkelBuilder::default,
            |s| s.progs.list_netns.attach(),
            "iter/bpf_map (network namespace list)",
        )
        .map(NetnsList)
    }

    pub fn own_map_ids(&self) -> &[u32] {
        self.0.own_map_ids()
    }

    pub fn own_prog_ids(&self) -> &[u32] {
        self.0.own_prog_ids()
    }

    /// The inode numbers of every network namespace, or `None` when the
    /// list could not be read whole (longer than the walk's bound, or more
    /// than one read's buffer holds).
    pub fn list(&self, buf: &mut Vec<u8>) -> anyhow::Result<Option<Vec<u64>>> {
        let out = self.0.read(buf)?;
        // (inum, other): `other` nonzero for the list head.
        let entries = out.len() / 8;
        let inos: Vec<u64> = out
            .chunks_exact(8)
            .filter(|c| c[4..8] == [0; 4])
            .map(|c| u32::from_ne_bytes(c[..4].try_into().expect("4 bytes")) as u64)
            .collect();
        let bss = self
            .0
            .skel
            .maps
            .bss_data
            .as_deref()
            .context("the netns object has no .bss")?;
        // SAFETY: plain reads of aligned u32s in the mmapped .bss, written by
        // the walk that finished when the read above returned.
        let (walked, ended, unwritten) = unsafe {
            (
                std::ptr::read_volatile(&bss.walked),
                std::ptr::read_volatile(&bss.ended),
                std::ptr::read_volatile(&bss.unwritten),
            )
        };
        Ok((ended == 1
            && unwritten == 0
            && walked as usize == entries
            && entries == inos.len() + 1)
            .then_some(inos))
    }
}
