//! The network namespace list (bpf/netns.bpf.c): every network namespace
//! of the node, from the kernel's `net_namespace_list`, walked by one run
//! of a never-attached program (BPF_PROG_TEST_RUN), so its cost does not
//! grow with the node's maps or tasks. Its own object, so the census loads
//! without it.
use std::path::Path;

use anyhow::Context;
use libbpf_rs::ProgramInput;

use super::load;
use crate::sys;

#[allow(clippy::all, missing_docs, non_camel_case_types, unused)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/netns.skel.rs"));
}
use skel::{NetnsSkel, NetnsSkelBuilder};

/// The loaded and attached list walk.
pub struct NetnsList {
    skel: NetnsSkel<'static>,
    own_ids: Vec<u32>,
    own_prog_ids: Vec<u32>,
}

impl NetnsList {
    /// Load; `btf_custom` is `--btf.path` when given.
    pub fn load(btf_custom: Option<&Path>) -> anyhow::Result<NetnsList> {
        let skel = load::load_counted("netns", || {
            load::open(NetnsSkelBuilder::default(), btf_custom, "netns")
        })
        .map_err(|e| load::load_error("netns", e))?;
        let own_ids = sys::object_map_ids(libbpf_rs::skel::Skel::object(&skel));
        let own_prog_ids = sys::object_prog_ids(libbpf_rs::skel::Skel::object(&skel));
        Ok(NetnsList {
            skel,
            own_ids,
            own_prog_ids,
        })
    }

    pub fn own_map_ids(&self) -> &[u32] {
        &self.own_ids
    }

    pub fn own_prog_ids(&self) -> &[u32] {
        &self.own_prog_ids
    }

    /// The inode numbers of every network namespace, or `None` when the
    /// list is longer than the walk's bound.
    pub fn list(&self) -> anyhow::Result<Option<Vec<u64>>> {
        self.skel
            .progs
            .list_netns
            .test_run(ProgramInput::default())
            .context("running the network namespace list walk (BPF_PROG_TEST_RUN)")?;
        let bss = self
            .skel
            .maps
            .bss_data
            .as_deref()
            .context("the netns object has no .bss")?;
        // SAFETY: plain reads of aligned values in the mmapped .bss, written
        // by the run that returned above; nothing else runs the program (the
        // census is single-flight).
        let (walked, ended, recs) = unsafe {
            (
                std::ptr::read_volatile(&bss.walked),
                std::ptr::read_volatile(&bss.ended),
                std::ptr::read_volatile(&bss.recs),
            )
        };
        let entries = &recs[..(walked as usize).min(recs.len())];
        let inos: Vec<u64> = entries
            .iter()
            .filter(|r| r.other == 0)
            .map(|r| r.inum as u64)
            .collect();
        Ok((ended == 1 && entries.len() == inos.len() + 1).then_some(inos))
    }
}
