//! The in-flight skeleton (bpf/inflight.bpf.c): the `iter/unix` program
//! that lists the map files and unix socket files held by SCM_RIGHTS
//! messages in unix sockets' receive queues. A separate object from the
//! census: it exists only on kernels with iter/unix (5.17+), and the census
//! must load without it.
use std::path::Path;

pub use super::census::records::{decode_inflight, InflightRecord};
use super::iter::{self, IterObject};
#[cfg(any(test, feature = "testing"))]
use super::load;

#[allow(clippy::all, missing_docs, non_camel_case_types, unused)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/inflight.skel.rs"));
}
use skel::{InflightSkel, InflightSkelBuilder};

/// Whether the kernel has iter/unix: its context struct exists exactly
/// where the iterator does (5.17, with bpf_loop).
#[cfg(any(test, feature = "testing"))]
pub fn available(btf: &Path) -> anyhow::Result<bool> {
    use libbpf_rs::btf::types::Struct;
    Ok(load::read_btf(btf)?
        .type_by_name::<Struct>("bpf_iter__unix")
        .is_some())
}

/// The loaded and attached iter/unix program.
pub struct Inflight(IterObject<InflightSkel<'static>>);

impl Inflight {
    /// Load and attach; `btf_custom` is `--btf.path` when given.
    pub fn load(btf_custom: Option<&Path>) -> anyhow::Result<Inflight> {
        IterObject::load(
            "inflight",
            btf_custom,
            InflightSkelBuilder::default,
            |s| s.progs.dump_unix_inflight.attach(),
            "iter/unix",
        )
        .map(Inflight)
    }

    /// Map ids of this object's own maps.
    pub fn own_map_ids(&self) -> &[u32] {
        self.0.own_map_ids()
    }

    /// Program ids of the in-flight object's own programs.
    pub fn own_prog_ids(&self) -> &[u32] {
        self.0.own_prog_ids()
    }

    /// How many sockets' records the kernel dropped so far (their output did
    /// not fit the iterator's buffer; the rest of their hash bucket was not
    /// walked either). A walk during which this grew is incomplete.
    pub fn lost_writes(&self) -> u64 {
        iter::bss_counter(self.0.skel.maps.bss_data.as_deref(), |b| &b.lost_writes)
    }

    /// A new walk of the unix sockets of the calling thread's network
    /// namespace (the kernel binds an iter/unix instance to its creator's
    /// namespace when it is created). Read it with [`read`], on any thread.
    pub fn open(&self) -> anyhow::Result<std::fs::File> {
        self.0.open()
    }
}

/// Read and decode one walk opened by [`Inflight::open`].
pub fn read(f: std::fs::File, buf: &mut Vec<u8>) -> anyhow::Result<Vec<InflightRecord>> {
    Ok(decode_inflight(iter::read_batched(f, buf)?)?)
}
