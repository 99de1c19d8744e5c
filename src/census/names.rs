//! Names as bpftool prints them (libbpf's `libbpf_bpf_map_type_str` and friends).

const MAP_TYPES: &[&str] = &[
    "unspec",
    "hash",
    "array",
    "prog_array",
    "perf_event_array",
    "percpu_hash",
    "percpu_array",
    "stack_trace",
    "cgroup_array",
    "lru_hash",
    "lru_percpu_hash",
    "lpm_trie",
    "array_of_maps",
    "hash_of_maps",
    "devmap",
    "sockmap",
    "cpumap",
    "xskmap",
    "sockhash",
    "cgroup_storage",
    "reuseport_sockarray",
    "percpu_cgroup_storage",
    "queue",
    "stack",
    "sk_storage",
    "devmap_hash",
    "struct_ops",
    "ringbuf",
    "inode_storage",
    "task_storage",
    "bloom_filter",
    "user_ringbuf",
    "cgrp_storage",
    "arena",
    "insn_array",
];

/// bpftool's name for a map type; unknown (newer) types read `type_<n>`.
pub fn map_type_name(t: u32) -> String {
    map_type_label(t).into_owned()
}

/// [`map_type_name`] without an allocation for the types this build knows.
pub fn map_type_label(t: u32) -> std::borrow::Cow<'static, str> {
    match MAP_TYPES.get(t as usize) {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(format!("type_{t}")),
    }
}

/// The numeric type for a bpftool name (inverse of [`map_type_name`]).
pub fn map_type_from_name(name: &str) -> Option<u32> {
    MAP_TYPES.iter().position(|&n| n == name).map(|i| i as u32)
}

/// Hash-family maps whose memory use follows the number of live elements.
pub fn memory_follows_elements(t: u32, flags: u32) -> bool {
    const BPF_F_NO_PREALLOC: u32 = 1;
    if t as usize >= MAP_TYPES.len() {
        return true; // newer than this build: assume it may grow
    }
    match MAP_TYPES[t as usize] {
        "hash" | "percpu_hash" | "hash_of_maps" => flags & BPF_F_NO_PREALLOC != 0,
        "lpm_trie" | "arena" | "sk_storage" | "inode_storage" | "task_storage" | "cgrp_storage"
        | "sockhash" | "devmap_hash" => true,
        "unspec" => true,
        _ => false,
    }
}

/// Outer maps (map-in-map) whose slots hold references to inner maps.
pub fn is_map_in_map(t: u32) -> bool {
    t == 12 || t == 13
}

/// Map flags as a lower-case hex string, the `flags` label of `bpfmap_map_info`.
pub fn flags_label(flags: u32) -> String {
    format!("0x{flags:x}")
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
        assert_eq!(map_type_from_name("lru_hash"), Some(9));
        assert_eq!(map_type_from_name("nope"), None);
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
    fn flags_render_as_hex() {
        assert_eq!(flags_label(0), "0x0");
        assert_eq!(flags_label(0x401), "0x401");
    }
}
