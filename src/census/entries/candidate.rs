//! A map the counting considers in one scrape, and how it is walked.
use super::cache::Cached;

/// How a map's element count is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// `bpf_map_sum_elem_count` in the census iterator (6.6+): every scrape.
    Kfunc,
    /// An `iter/bpf_map_elem` walk per map.
    Iter,
    /// A BPF_MAP_GET_NEXT_KEY walk from user space.
    NextKey,
    /// No way to count this map's elements on this kernel.
    None,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Kfunc => "kfunc",
            Method::Iter => "iter",
            Method::NextKey => "next_key",
            Method::None => "none",
        }
    }
}

/// A map the plan may refresh.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub(crate) id: u32,
    pub(crate) max_entries: u32,
    pub(crate) cached: Option<Cached>,
    /// Where the map is in the census's list.
    pub(crate) idx: usize,
    /// How it is walked.
    pub(crate) method: Method,
}
