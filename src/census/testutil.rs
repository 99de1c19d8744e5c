//! Builders of census records for unit tests.
use super::holders::Observed;
use super::{Creator, MapRecord};

/// A plain map record: a hash map (4-byte keys, 8-byte values, one
/// slot) named `m{id}`, one reference and one user reference, no count,
/// creator unknown. Tests override fields with struct-update syntax.
pub(crate) fn map_record(id: u32) -> MapRecord {
    MapRecord {
        map_ptr: 0,
        refcnt: 1,
        usercnt: 1,
        elem_count: None,
        map_extra: 0,
        id,
        map_type: 1,
        key_size: 4,
        value_size: 8,
        max_entries: 1,
        map_flags: 0,
        frozen: false,
        is_outer: false,
        name: format!("m{id}"),
        creator: Creator::Unknown,
    }
}

/// Every holder source ran and found nothing: tests set the sources they
/// fill with struct-update syntax.
pub(crate) fn observed_all_known() -> Observed {
    Observed {
        files: Some(vec![]),
        vmas: Some(vec![]),
        programs: Some(vec![]),
        slots: Some(vec![]),
        links: Some(vec![]),
        pins: Some(vec![]),
        inflight: Some(vec![]),
        inflight_ptrs: vec![],
        struct_ops_links: vec![],
        struct_ops: Some(vec![]),
        io_uring: Some(vec![]),
        incomplete: vec![],
        user_refs_visible: true,
    }
}
