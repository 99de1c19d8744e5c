//! Per-map memory from fdinfo `memlock:`, cached by map id.
use super::{bpffs, fdinfo, names, ById, Census, IdMap, MapRecord};
use crate::sys;

/// A map's memory as last read, and the element count it was read at.
pub(super) struct MemEntry {
    pub(super) bytes: u64,
    pub(super) elem_count: Option<i64>,
}

impl Census {
    /// Per-map memory from fdinfo `memlock:`. Values are cached by map id
    /// and re-read only where they can change: maps whose memory follows
    /// their element count are re-read when the count moves (or every scrape
    /// where the kernel cannot count elements). Pinned maps' fdinfo, already
    /// read by the pin walk, seeds the cache.
    pub(super) fn memory<'a>(
        &mut self,
        maps: impl Iterator<Item = &'a MapRecord>,
        inv: Option<&bpffs::Inventory>,
    ) -> ById<u64> {
        let pinned: IdMap<u64> = inv
            .map(|i| {
                i.pins
                    .iter()
                    // Only identities read in this walk carry a current memlock.
                    .filter(|p| p.fresh && p.info.kind == fdinfo::ObjKind::Map)
                    .filter_map(|p| Some((p.info.id, p.info.memlock?)))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(maps.size_hint().0);
        for m in maps {
            let dynamic = names::memory_follows_elements(m.map_type, m.map_flags);
            let fresh = match self.mem_cache.get(&m.id) {
                Some(e) if !dynamic => Some(e.bytes),
                Some(e) if e.elem_count.is_some() && e.elem_count == m.elem_count => Some(e.bytes),
                _ => None,
            };
            let bytes = match fresh {
                Some(b) => b,
                None => {
                    let read = pinned.get(&m.id).copied().or_else(|| {
                        let fd = sys::map_fd_by_id(m.id).ok()?; // gone since the census: no series
                        fdinfo::parse_fdinfo(&sys::fdinfo(&fd).ok()?).memlock
                    });
                    let Some(b) = read else { continue };
                    self.mem_cache.insert(
                        m.id,
                        MemEntry {
                            bytes: b,
                            elem_count: m.elem_count,
                        },
                    );
                    b
                }
            };
            out.push((m.id, bytes));
        }
        let out: ById<u64> = out.into_iter().collect();
        // Forget maps that left the census (every live map is in `out`).
        self.mem_cache.retain(|id, _| out.contains_key(id));
        out
    }
}
