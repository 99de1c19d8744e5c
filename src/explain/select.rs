//! Which maps a request names, and the paging of a listing (shared by
//! `explain` and `/api/v1/maps`).
use std::collections::HashSet;
use std::path::PathBuf;

use crate::census::creators;
use crate::census::names::map_type_name;
use crate::census::{MapRecord, Snapshot};

/// Maps per page at most (`limit`), and what `explain --from` asks for.
pub const MAX_LIMIT: usize = 1000;

/// What to explain.
#[derive(Debug, Clone)]
pub enum Selector {
    Id(u32),
    Name(String),
    /// A pin: (mount, path relative to the mount), already resolved.
    Pin(PathBuf),
    Pid(u32),
}

/// The map ids a selector names, or a message naming the cause.
pub fn select(snap: &Snapshot, sel: &Selector) -> Result<Vec<u32>, String> {
    match sel {
        Selector::Id(id) => {
            if snap.maps.iter().any(|m| m.id == *id) {
                Ok(vec![*id])
            } else if snap.own.iter().any(|m| m.id == *id) {
                Err(format!(
                    "map {id} is the exporter's own (a census iterator's map)"
                ))
            } else {
                Err(format!(
                    "no map with id {id} (bpftool map show lists the live maps)"
                ))
            }
        }
        Selector::Name(n) => {
            let hits: Vec<&MapRecord> = snap.maps.iter().filter(|m| &m.name == n).collect();
            match hits.len() {
                0 => Err(format!(
                    "no map named {n:?} (names are at most 15 bytes, as the kernel truncates them)"
                )),
                1 => Ok(vec![hits[0].id]),
                _ => Err(several_named(
                    n,
                    hits.iter().map(|m| (m.id, map_type_name(m.map_type))),
                )),
            }
        }
        Selector::Pin(p) => {
            let inv = snap
                .inventory
                .as_ref()
                .ok_or("the pin walk did not run or failed (collector pins)")?;
            let want = p.to_string_lossy();
            match pinned(snap, p) {
                Some(pin) if pin.info.kind == crate::census::fdinfo::ObjKind::Map => {
                    Ok(vec![pin.info.id])
                }
                Some(pin) if pin.info.kind == crate::census::fdinfo::ObjKind::Prog => Err(format!(
                    "{want} is a pinned program, id {} (explain --prog {0}, /api/v1/programs/{0})",
                    pin.info.id
                )),
                Some(pin) => Err(format!(
                    "{want} is pinned but is not a map or a program (a {}; bpftool link show lists links)",
                    pin.info.kind.label()
                )),
                None => Err(format!(
                    "{want} is not a pin on a mounted bpffs (mounts: {})",
                    inv.mounts
                        .iter()
                        .map(|m| m.label.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
        Selector::Pid(pid) => {
            let mut ids: Vec<u32> = snap
                .files
                .iter()
                .chain(snap.vmas.iter())
                .flatten()
                .filter(|f| f.tgid == *pid)
                .map(|f| f.map_id)
                .chain(
                    snap.inflight
                        .iter()
                        .filter(|f| f.receivers.iter().any(|r| r.tgid == *pid))
                        .map(|f| f.map_id),
                )
                .chain(snap.io_uring.iter().filter(|r| r.tgid == *pid).filter_map(
                    |r| match r.object {
                        Some((crate::census::RingObject::Map, id)) => Some(id),
                        _ => None,
                    },
                ))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            if !ids.is_empty() {
                let live: std::collections::HashSet<u32> = snap.maps.iter().map(|m| m.id).collect();
                ids.retain(|id| live.contains(id));
            }
            Ok(ids)
        }
    }
}

/// The pin at `path` (its mount and its path in it as one path), if the
/// walk saw it.
pub(crate) fn pinned<'a>(
    snap: &'a Snapshot,
    path: &std::path::Path,
) -> Option<&'a crate::census::bpffs::Pin> {
    let want = path.to_string_lossy();
    snap.inventory
        .as_ref()?
        .pins
        .iter()
        .find(|p| super::report::pin_path(&p.mount, &p.path) == want)
}

/// The message for a name several maps share.
pub fn several_named(n: &str, hits: impl Iterator<Item = (u32, String)>) -> String {
    let hits: Vec<String> = hits.map(|(id, ty)| format!("{id} ({ty})")).collect();
    format!(
        "{} maps are named {n:?}; choose one with --id: {}",
        hits.len(),
        hits.join(", ")
    )
}

/// Filters and paging of a listing (`/api/v1/maps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Only maps with unexplained references (a published, non-zero count).
    pub unexplained: bool,
    /// Only maps whose creating cgroup is gone.
    pub creator_gone: bool,
    /// Only maps with a greater id (paging: the previous page's `next_after`).
    pub after: Option<u32>,
    /// At most this many maps.
    pub limit: usize,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            unexplained: false,
            creator_gone: false,
            after: None,
            limit: usize::MAX,
        }
    }
}

/// A page of a selection: the ids to report, how many matched in all, and
/// the id to continue after when the page is full and more matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub ids: Vec<u32>,
    pub total: usize,
    pub next_after: Option<u32>,
}

/// Apply `f` to `ids` (any order): filters, then ascending ids from
/// `f.after`, at most `f.limit`.
pub fn page(snap: &Snapshot, ids: &[u32], f: &Filter) -> Page {
    let wanted: HashSet<u32> = ids.iter().copied().collect();
    let mut hits: Vec<u32> = snap
        .maps
        .iter()
        .filter(|m| wanted.contains(&m.id))
        .filter(|m| {
            !f.unexplained
                || snap
                    .holders
                    .get(&m.id)
                    .and_then(|h| h.unexplained(m.refcnt))
                    .is_some_and(|u| u > 0)
        })
        .filter(|m| !f.creator_gone || creators::identity(snap, m).is_some_and(|c| c.gone))
        .map(|m| m.id)
        .collect();
    hits.sort_unstable();
    hits.dedup();
    let total = hits.len();
    let from = f.after.map_or(0, |a| hits.partition_point(|&id| id <= a));
    let rest = &hits[from..];
    let n = rest.len().min(f.limit);
    Page {
        ids: rest[..n].to_vec(),
        total,
        next_after: (n < rest.len() && n > 0).then(|| rest[n - 1]),
    }
}
