//! The selection: which maps get per-map series under the budget
//! ([`RenderOpts`]), and why. Aggregates never depend on it.
use super::{RenderOpts, NEAR_FULL_MIN_ENTRIES};
use crate::census::holders::HolderKind;
use crate::census::Snapshot;

/// Why a map keeps its per-map series, most important first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Keep {
    /// Some of its references nothing explains (the leak signal).
    Unexplained,
    /// Orphaned: its creator is gone and only pins keep it alive. Never
    /// cut by the cap.
    Orphaned,
    /// Its creating memory cgroup was removed.
    CreatorGone,
    /// A file of it is in flight (an unreceived SCM_RIGHTS message); the
    /// stuck-in-flight alert joins its age with its info series.
    InFlight,
    /// Pinned, and no program uses it (a stale pin candidate).
    UnusedPin,
    /// A hash-family map at or above the near-full ratio.
    NearFull,
    /// Among the N largest by memory.
    TopMemory,
    /// Selected only because every map is (`all_maps`).
    Any,
}

/// The maps that get per-map series, as indices into `snap.maps` in map
/// order, and how many were left out by each reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Selection {
    pub(crate) maps: Vec<usize>,
    /// Not a map that matters and not among the top by memory.
    pub(crate) omitted_budget: usize,
    /// Selected, but beyond the cap (the least important go first).
    pub(crate) omitted_cap: usize,
    /// Per-map series are off.
    pub(crate) omitted_disabled: usize,
}

/// Whether the map's entry count reaches `ratio` of its slots, for the maps
/// the near-full alert judges (known count, not LRU, enough slots).
fn near_full(m: &crate::census::MapRecord, ratio: f64) -> bool {
    use crate::census::names::MapType;
    if m.max_entries < NEAR_FULL_MIN_ENTRIES
        || !crate::census::names::counts_elements(m.map_type)
        || matches!(
            MapType::from_raw(m.map_type),
            Some(MapType::LruHash | MapType::LruPercpuHash)
        )
    {
        return false;
    }
    m.elem_count
        .is_some_and(|e| e as f64 >= ratio * m.max_entries as f64)
}

/// Each map's memory, holders and unexplained count, parallel to `snap.maps`.
pub(crate) fn rows(snap: &Snapshot) -> Vec<Row<'_>> {
    let (mut holders, mut memory) = (snap.holders.cursor(), snap.memory.cursor());
    snap.maps
        .iter()
        .map(|m| {
            let holders = holders.get(m.id);
            Row {
                memory: memory.get(m.id).copied(),
                holders,
                unexplained: holders.and_then(|h| h.unexplained(m.refcnt)),
            }
        })
        .collect()
}

/// Choose the maps with per-map series. Pure: O(n) over the maps plus a
/// sort of the candidates.
pub(crate) fn select(snap: &Snapshot, opts: &RenderOpts, rows: &[Row<'_>]) -> Selection {
    let n = snap.maps.len();
    if !opts.per_map {
        return Selection {
            omitted_disabled: n,
            ..Default::default()
        };
    }
    use std::cmp::Reverse;
    let mem = |i: usize| rows[i].memory.unwrap_or(0);
    // The top N by memory, ties to the lower id.
    let mut top = vec![false; n];
    if opts.top_by_memory >= n {
        top.iter_mut().for_each(|t| *t = true);
    } else if opts.top_by_memory > 0 {
        let mut idx: Vec<usize> = (0..n).collect();
        idx.select_nth_unstable_by_key(opts.top_by_memory - 1, |&i| {
            (Reverse(mem(i)), snap.maps[i].id)
        });
        for &i in &idx[..opts.top_by_memory] {
            top[i] = true;
        }
    }
    let mut cands: Vec<(Keep, usize)> = Vec::new();
    for (i, m) in snap.maps.iter().enumerate() {
        let holders = rows[i].holders;
        let unused_pin = holders.is_some_and(|h| {
            h.get(HolderKind::Pin).unwrap_or(0) > 0 && h.get(HolderKind::Program) == Some(0)
        });
        let keep = if rows[i].unexplained.unwrap_or(0) > 0 {
            Keep::Unexplained
        } else if snap.roots.orphaned_maps.contains(&m.id) {
            Keep::Orphaned
        } else if m.creator.is_gone() {
            Keep::CreatorGone
        } else if holders.is_some_and(|h| h.get(HolderKind::Inflight).unwrap_or(0) > 0) {
            Keep::InFlight
        } else if unused_pin {
            Keep::UnusedPin
        } else if near_full(m, opts.near_full_ratio) {
            Keep::NearFull
        } else if top[i] {
            Keep::TopMemory
        } else if opts.all_maps {
            Keep::Any
        } else {
            continue;
        };
        cands.push((keep, i));
    }
    let omitted_budget = n - cands.len();
    let mut omitted_cap = 0;
    // Orphans keep their series whatever the cap (the orphan alert joins
    // them); the cap applies to the rest with what they leave.
    let (orphans, mut cands): (Vec<(Keep, usize)>, Vec<(Keep, usize)>) =
        cands.into_iter().partition(|(k, _)| *k == Keep::Orphaned);
    let cap = opts.max_map_series.saturating_sub(orphans.len());
    if opts.max_map_series > 0 && cap == 0 {
        omitted_cap = cands.len();
        cands.clear();
    } else if opts.max_map_series > 0 && cands.len() > cap {
        let key = |&(k, i): &(Keep, usize)| {
            (
                k,
                Reverse(rows[i].unexplained.unwrap_or(0)),
                Reverse(mem(i)),
                snap.maps[i].id,
            )
        };
        cands.select_nth_unstable_by_key(cap - 1, key);
        omitted_cap = cands.len() - cap;
        cands.truncate(cap);
    }
    let mut maps: Vec<usize> = cands.into_iter().chain(orphans).map(|(_, i)| i).collect();
    maps.sort_unstable();
    Selection {
        maps,
        omitted_budget,
        omitted_cap,
        omitted_disabled: 0,
    }
}

/// One map's looked-up census facts.
pub(crate) struct Row<'a> {
    pub(crate) memory: Option<u64>,
    pub(crate) holders: Option<&'a crate::census::Holders>,
    pub(crate) unexplained: Option<i64>,
}
