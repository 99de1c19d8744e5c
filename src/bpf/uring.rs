//! The io_uring skeleton (bpf/uring.bpf.c): an `iter/task_file` program
//! that lists the map, program and link files held by io_uring
//! registered-file tables, through the tasks holding the rings' fds. A
//! separate object from the census: its table walk is a bpf_loop (5.17+),
//! and the census must load without it.
use std::path::Path;

use anyhow::Context;
use libbpf_rs::Link;

pub use super::census::records::{decode_uring, UringRecord};
use super::{iter, load};
use crate::sys;

#[allow(clippy::all, missing_docs, non_camel_case_types, unused)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/uring.skel.rs"));
}
use skel::{UringSkel, UringSkelBuilder};

/// The loaded and attached io_uring table walk.
pub struct Uring {
    skel: UringSkel<'static>,
    link: Link,
    own_ids: Vec<u32>,
    own_prog_ids: Vec<u32>,
}

impl Uring {
    /// Load and attach; `btf_custom` is `--btf.path` when given.
    pub fn load(btf_custom: Option<&Path>) -> anyhow::Result<Uring> {
        let skel = load::load_counted("uring", || {
            load::open(UringSkelBuilder::default(), btf_custom, "uring")
        })
        .map_err(|e| load::load_error("uring", e))?;
        let link = skel
            .progs
            .dump_uring_files
            .attach()
            .context("attaching iter/task_file (io_uring tables)")?;
        let own_ids = sys::object_map_ids(libbpf_rs::skel::Skel::object(&skel));
        let own_prog_ids = sys::object_prog_ids(libbpf_rs::skel::Skel::object(&skel));
        Ok(Uring {
            skel,
            link,
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

    /// Records the kernel dropped so far (the iterator's buffer was full):
    /// a walk during which this grew is incomplete.
    pub fn lost_writes(&self) -> u64 {
        self.skel
            .maps
            .bss_data
            .as_deref()
            // SAFETY: a plain read of an aligned u64 in the mmapped .bss that
            // the program updates; volatile, so every call reads it again.
            .map(|b| unsafe { std::ptr::read_volatile(&b.lost_writes) })
            .unwrap_or(0)
    }

    /// One walk of every task's io_uring fds, decoded.
    pub fn walk(&self, buf: &mut Vec<u8>) -> anyhow::Result<Vec<UringRecord>> {
        Ok(decode_uring(iter::read_batched(
            iter::open(&self.link)?,
            buf,
        )?)?)
    }
}
