//! The in-flight skeleton (bpf/inflight.bpf.c): the `iter/unix` program
//! that lists the map files and unix socket files held by SCM_RIGHTS
//! messages in unix sockets' receive queues. A separate object from the
//! census: it exists only on kernels with iter/unix (5.17+), and the census
//! must load without it.
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::Context;
use libbpf_rs::Link;

pub use super::census::records::{decode_inflight, InflightRecord};
use super::{iter, load};
use crate::sys;

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
pub struct Inflight {
    _skel: InflightSkel<'static>,
    link: Link,
    own_ids: Vec<u32>,
    own_prog_ids: Vec<u32>,
}

impl Inflight {
    /// Load and attach; `btf_custom` is `--btf.path` when given.
    pub fn load(btf_custom: Option<&Path>) -> anyhow::Result<Inflight> {
        let skel = load::load_counted("inflight", || {
            load::open(InflightSkelBuilder::default(), btf_custom, "inflight")
        })
        .map_err(|e| load::load_error("inflight", e))?;
        let link = skel
            .progs
            .dump_unix_inflight
            .attach()
            .context("attaching iter/unix")?;
        let own_ids = sys::object_map_ids(libbpf_rs::skel::Skel::object(&skel));
        let own_prog_ids = sys::object_prog_ids(libbpf_rs::skel::Skel::object(&skel));
        Ok(Inflight {
            _skel: skel,
            link,
            own_ids,
            own_prog_ids,
        })
    }

    /// Map ids of this object's own maps.
    pub fn own_map_ids(&self) -> &[u32] {
        &self.own_ids
    }

    /// Program ids of the in-flight object's own programs.
    pub fn own_prog_ids(&self) -> &[u32] {
        &self.own_prog_ids
    }

    /// How many sockets' records the kernel dropped so far (their output did
    /// not fit the iterator's buffer; the rest of their hash bucket was not
    /// walked either). A walk during which this grew is incomplete.
    pub fn lost_writes(&self) -> u64 {
        self._skel
            .maps
            .bss_data
            .as_deref()
            // SAFETY: a plain read of an aligned u64 in the mmapped .bss that
            // the programs update; volatile, so every call reads it again.
            .map(|b| unsafe { std::ptr::read_volatile(&b.lost_writes) })
            .unwrap_or(0)
    }

    /// A new walk of the unix sockets of the calling thread's network
    /// namespace (the kernel binds an iter/unix instance to its creator's
    /// namespace when it is created). Read it with [`read`], on any thread.
    pub fn open(&self) -> anyhow::Result<std::fs::File> {
        let _ = self.link.as_fd();
        iter::open(&self.link)
    }
}

/// Read and decode one walk opened by [`Inflight::open`].
pub fn read(f: std::fs::File, buf: &mut Vec<u8>) -> anyhow::Result<Vec<InflightRecord>> {
    Ok(decode_inflight(iter::read_batched(f, buf)?)?)
}
