//! Names as bpftool prints them (libbpf's `libbpf_bpf_map_type_str` and friends).

/// Map types (`enum bpf_map_type`), named as bpftool names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum MapType {
    Unspec = 0,
    Hash = 1,
    Array = 2,
    ProgArray = 3,
    PerfEventArray = 4,
    PercpuHash = 5,
    PercpuArray = 6,
    StackTrace = 7,
    CgroupArray = 8,
    LruHash = 9,
    LruPercpuHash = 10,
    LpmTrie = 11,
    ArrayOfMaps = 12,
    HashOfMaps = 13,
    Devmap = 14,
    Sockmap = 15,
    Cpumap = 16,
    Xskmap = 17,
    Sockhash = 18,
    CgroupStorage = 19,
    ReuseportSockarray = 20,
    PercpuCgroupStorage = 21,
    Queue = 22,
    Stack = 23,
    SkStorage = 24,
    DevmapHash = 25,
    StructOps = 26,
    Ringbuf = 27,
    InodeStorage = 28,
    TaskStorage = 29,
    BloomFilter = 30,
    UserRingbuf = 31,
    CgrpStorage = 32,
    Arena = 33,
    InsnArray = 34,
}

impl MapType {
    /// Every type this build knows, in kernel order (index = value).
    pub const ALL: [MapType; 35] = [
        MapType::Unspec,
        MapType::Hash,
        MapType::Array,
        MapType::ProgArray,
        MapType::PerfEventArray,
        MapType::PercpuHash,
        MapType::PercpuArray,
        MapType::StackTrace,
        MapType::CgroupArray,
        MapType::LruHash,
        MapType::LruPercpuHash,
        MapType::LpmTrie,
        MapType::ArrayOfMaps,
        MapType::HashOfMaps,
        MapType::Devmap,
        MapType::Sockmap,
        MapType::Cpumap,
        MapType::Xskmap,
        MapType::Sockhash,
        MapType::CgroupStorage,
        MapType::ReuseportSockarray,
        MapType::PercpuCgroupStorage,
        MapType::Queue,
        MapType::Stack,
        MapType::SkStorage,
        MapType::DevmapHash,
        MapType::StructOps,
        MapType::Ringbuf,
        MapType::InodeStorage,
        MapType::TaskStorage,
        MapType::BloomFilter,
        MapType::UserRingbuf,
        MapType::CgrpStorage,
        MapType::Arena,
        MapType::InsnArray,
    ];

    /// The type of a raw `map_type`, or None for a type newer than this build.
    pub fn from_raw(t: u32) -> Option<MapType> {
        Self::ALL.get(t as usize).copied()
    }

    /// bpftool's name.
    pub const fn name(self) -> &'static str {
        match self {
            MapType::Unspec => "unspec",
            MapType::Hash => "hash",
            MapType::Array => "array",
            MapType::ProgArray => "prog_array",
            MapType::PerfEventArray => "perf_event_array",
            MapType::PercpuHash => "percpu_hash",
            MapType::PercpuArray => "percpu_array",
            MapType::StackTrace => "stack_trace",
            MapType::CgroupArray => "cgroup_array",
            MapType::LruHash => "lru_hash",
            MapType::LruPercpuHash => "lru_percpu_hash",
            MapType::LpmTrie => "lpm_trie",
            MapType::ArrayOfMaps => "array_of_maps",
            MapType::HashOfMaps => "hash_of_maps",
            MapType::Devmap => "devmap",
            MapType::Sockmap => "sockmap",
            MapType::Cpumap => "cpumap",
            MapType::Xskmap => "xskmap",
            MapType::Sockhash => "sockhash",
            MapType::CgroupStorage => "cgroup_storage",
            MapType::ReuseportSockarray => "reuseport_sockarray",
            MapType::PercpuCgroupStorage => "percpu_cgroup_storage",
            MapType::Queue => "queue",
            MapType::Stack => "stack",
            MapType::SkStorage => "sk_storage",
            MapType::DevmapHash => "devmap_hash",
            MapType::StructOps => "struct_ops",
            MapType::Ringbuf => "ringbuf",
            MapType::InodeStorage => "inode_storage",
            MapType::TaskStorage => "task_storage",
            MapType::BloomFilter => "bloom_filter",
            MapType::UserRingbuf => "user_ringbuf",
            MapType::CgrpStorage => "cgrp_storage",
            MapType::Arena => "arena",
            MapType::InsnArray => "insn_array",
        }
    }
}

/// bpftool's name for a map type; unknown (newer) types read `type_<n>`.
pub fn map_type_name(t: u32) -> String {
    map_type_label(t).into_owned()
}

/// [`map_type_name`] without an allocation for the types this build knows.
pub fn map_type_label(t: u32) -> std::borrow::Cow<'static, str> {
    match MapType::from_raw(t) {
        Some(m) => std::borrow::Cow::Borrowed(m.name()),
        None => std::borrow::Cow::Owned(format!("type_{t}")),
    }
}

/// bpftool's name for a program type; unknown (newer) types read `type_<n>`.
pub fn prog_type_label(t: u32) -> std::borrow::Cow<'static, str> {
    match crate::sys::libbpf_prog_type_name(t) {
        Some(n) => std::borrow::Cow::Borrowed(n),
        None => std::borrow::Cow::Owned(format!("type_{t}")),
    }
}

/// Hash-family maps whose memory use follows the number of live elements.
pub fn memory_follows_elements(t: u32, flags: u32) -> bool {
    use MapType::*;
    let Some(m) = MapType::from_raw(t) else {
        return true; // newer than this build: assume it may grow
    };
    match m {
        Hash | PercpuHash | HashOfMaps => flags & BPF_F_NO_PREALLOC != 0,
        LpmTrie | Arena | SkStorage | InodeStorage | TaskStorage | CgrpStorage | Sockhash
        | DevmapHash | Unspec => true,
        _ => false,
    }
}

/// `BPF_F_NO_PREALLOC`: elements are allocated as they are inserted.
pub const BPF_F_NO_PREALLOC: u32 = 1;

/// Outer maps (map-in-map) whose slots hold references to inner maps.
pub fn is_map_in_map(t: u32) -> bool {
    matches!(
        MapType::from_raw(t),
        Some(MapType::ArrayOfMaps | MapType::HashOfMaps)
    )
}

/// Maps whose live elements `bpf_map_sum_elem_count` counts: the hash
/// family, preallocated or not, and every type whose memory follows its
/// elements.
pub fn counts_elements(t: u32) -> bool {
    use MapType::*;
    memory_follows_elements(t, BPF_F_NO_PREALLOC)
        || matches!(
            MapType::from_raw(t),
            Some(Hash | PercpuHash | LruHash | LruPercpuHash | HashOfMaps)
        )
}

/// Map flags as `0x<lower-case hex>` written into `buf`: the `flags` label
/// of `bpfmap_map_info`.
pub fn flags_label(v: u32, buf: &mut [u8; 10]) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 8];
    let mut n = 0;
    let mut x = v;
    loop {
        digits[n] = HEX[(x & 0xf) as usize];
        n += 1;
        x >>= 4;
        if x == 0 {
            break;
        }
    }
    buf[0] = b'0';
    buf[1] = b'x';
    for i in 0..n {
        buf[2 + i] = digits[n - 1 - i];
    }
    std::str::from_utf8(&buf[..2 + n]).expect("ascii")
}

pub use crate::metrics::label::{comm_label, label_bytes};

/// Inverse of [`label_bytes`] (for tests and tools).
#[cfg(any(test, feature = "testing"))]
pub fn unlabel_bytes(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            match b.get(i + 1)? {
                b'\\' => {
                    out.push(b'\\');
                    i += 2;
                }
                b'x' => {
                    let h = std::str::from_utf8(b.get(i + 2..i + 4)?).ok()?;
                    out.push(u8::from_str_radix(h, 16).ok()?);
                    i += 4;
                }
                _ => return None,
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_bpftool() {
        assert_eq!(map_type_name(1), "hash");
        assert_eq!(map_type_name(12), "array_of_maps");
        assert_eq!(map_type_name(27), "ringbuf");
        assert_eq!(map_type_name(33), "arena");
        assert_eq!(map_type_name(99), "type_99");
    }

    #[test]
    fn dynamic_memory_types() {
        assert!(memory_follows_elements(1, 1));
        assert!(!memory_follows_elements(1, 0));
        assert!(!memory_follows_elements(2, 0));
        assert!(memory_follows_elements(11, 1));
        assert!(memory_follows_elements(0, 0));
        assert!(memory_follows_elements(999, 0));
    }

    #[test]
    fn enum_values_are_the_kernel_values() {
        for (i, m) in MapType::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i);
            assert_eq!(MapType::from_raw(i as u32), Some(*m));
        }
        assert_eq!(MapType::Ringbuf as u32, 27);
        assert_eq!(MapType::from_raw(MapType::ALL.len() as u32), None);
        assert!(is_map_in_map(12) && is_map_in_map(13) && !is_map_in_map(1));
        assert!(counts_elements(9) && counts_elements(1) && !counts_elements(2));
    }

    #[test]
    fn flags_render_as_hex() {
        for v in [0, 1, 0x9, 0xa, 0x10, 0x401, 0x1000, 0xdead_beef, u32::MAX] {
            let mut buf = [0u8; 10];
            assert_eq!(flags_label(v, &mut buf), format!("0x{v:x}"));
        }
        assert_eq!(comm_label(&[0xff, b'x', 0, b'y']), "\\xffx");
        assert_eq!(comm_label(b"dup\xff"), "dup\\xff");
        assert_ne!(comm_label(b"dup\xfe"), comm_label(b"dup\xff"));
        assert_eq!(comm_label(b"a\\b"), "a\\\\b");
        assert_eq!(
            unlabel_bytes(&comm_label(b"a\\xff\xfe")).unwrap(),
            b"a\\xff\xfe"
        );
    }
}
