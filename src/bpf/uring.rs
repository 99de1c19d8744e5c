//! The io_uring skeleton (bpf/uring.bpf.c): an `iter/task_file` program
//! that lists the map, program and link files held by io_uring
//! registered-file tables, through the tasks holding the rings' fds. A
//! separate object from the census: its table walk is a bpf_loop (5.17+),
//! and the census must load without it.
use std::path::Path;

pub use super::census::records::{decode_uring, UringRecord};
use super::iter::{self, IterObject};

#[allow(clippy::all, missing_docs, non_camel_case_types, unused)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/uring.skel.rs"));
}
use skel::{UringSkel, UringSkelBuilder};

/// The loaded and attached io_uring table walk.
pub struct Uring(IterObject<UringSkel<'static>>);

impl Uring {
    /// Load and attach; `btf_custom` is `--btf.path` when given.
    pub fn load(btf_custom: Option<&Path>) -> anyhow::Result<Uring> {
        IterObject::load(
            "uring",
            btf_custom,
            UringSkelBuilder::default,
            |s| s.progs.dump_uring_files.attach(),
            "iter/task_file (io_uring tables)",
        )
        .map(Uring)
    }

    pub fn own_map_ids(&self) -> &[u32] {
        self.0.own_map_ids()
    }

    pub fn own_prog_ids(&self) -> &[u32] {
        self.0.own_prog_ids()
    }

    /// Records the kernel dropped so far (the iterator's buffer was full):
    /// a walk during which this grew is incomplete.
    pub fn lost_writes(&self) -> u64 {
        iter::bss_counter(self.0.skel.maps.bss_data.as_deref(), |b| &b.lost_writes)
    }

    /// One walk of every task's io_uring fds, decoded.
    pub fn walk(&self, buf: &mut Vec<u8>) -> anyhow::Result<Vec<UringRecord>> {
        Ok(decode_uring(self.0.read_batched(buf)?)?)
    }
}
