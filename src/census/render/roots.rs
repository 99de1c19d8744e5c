//! The root families: each selected map's roots through every chain, the
//! orphans (exact aggregates, per creator, per map), and the memory each
//! pin alone retains.
use std::collections::{BTreeMap, HashSet};

use super::RenderOpts;
use crate::census::roots::{orphaned, Obj};
use crate::census::Snapshot;
use crate::metrics::{defs, Families};

pub(crate) fn render_roots(
    snap: &Snapshot,
    opts: &RenderOpts,
    selected: Option<&HashSet<u32>>,
    out: &mut Families,
) {
    if !snap.maps_ok {
        return;
    }
    // Which creator is gone is known only where the kernel charges maps to
    // their creator's memory cgroup; elsewhere nothing is called orphaned.
    let creators_known = snap.features.map_memcg;
    if creators_known {
        render_orphans(snap, out);
    }
    if let Some(sel) = selected {
        // One pass over the census finds every selected map.
        let mut chosen: Vec<&crate::census::MapRecord> =
            snap.maps.iter().filter(|m| sel.contains(&m.id)).collect();
        chosen.sort_unstable_by_key(|m| m.id);
        for m in chosen {
            let id = m.id;
            let roots = snap.graph.roots(Obj::Map(id));
            let mut by: BTreeMap<&'static str, u64> = BTreeMap::new();
            for r in &roots {
                *by.entry(r.kind()).or_default() += 1;
            }
            for (kind, n) in by {
                out.gauge(
                    &defs::MAP_ROOTS,
                    vec![("id", id.to_string()), ("kind", kind.to_string())],
                    n as f64,
                );
            }
            if creators_known {
                let verdict = if m.creator.is_gone() {
                    orphaned(&roots)
                } else {
                    Some(false)
                };
                if let Some(v) = verdict {
                    out.gauge(
                        &defs::MAP_ORPHANED,
                        vec![("id", id.to_string())],
                        v as u8 as f64,
                    );
                }
            }
        }
    }
    render_retained(snap, opts, out);
}

/// Orphaned maps: node totals, and per creating container and pod.
fn render_orphans(snap: &Snapshot, out: &mut Families) {
    let r = &snap.roots;
    let mut bytes = 0u64;
    let mut by_creator: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for m in snap.maps.iter().filter(|m| r.orphaned_maps.contains(&m.id)) {
        let mem = snap.memory.get(&m.id).copied().unwrap_or(0);
        bytes += mem;
        let who = crate::census::creators::identity(snap, m).unwrap_or_default();
        let e = by_creator
            .entry((who.container_id, who.pod_uid))
            .or_default();
        e.0 += 1;
        e.1 += mem;
    }
    out.gauge(&defs::MAPS_ORPHANED, vec![], r.orphaned_maps.len() as f64);
    if !snap.memory.is_empty() {
        out.gauge(&defs::MAPS_ORPHANED_MEMORY_BYTES, vec![], bytes as f64);
    }
    out.gauge(
        &defs::MAPS_ORPHANED_WITHHELD,
        vec![],
        r.orphans_withheld as f64,
    );
    out.declare(&defs::CREATOR_ORPHANED_MAPS);
    for ((container, pod), (n, mem)) in by_creator {
        let labels = || {
            vec![
                ("container_id", container.clone()),
                ("pod_uid", pod.clone()),
            ]
        };
        out.gauge(&defs::CREATOR_ORPHANED_MAPS, labels(), n as f64);
        if !snap.memory.is_empty() {
            out.gauge(&defs::CREATOR_ORPHANED_MEMORY_BYTES, labels(), mem as f64);
        }
    }
}

/// Each pin's retained memory, largest first, at most the pin series cap.
/// A pin named by several paths (hard links) is published under the first
/// path the walk met.
fn render_retained(snap: &Snapshot, opts: &RenderOpts, out: &mut Families) {
    let Some(inv) = &snap.inventory else { return };
    let mut rows: Vec<(u64, &str, &str)> = Vec::new();
    let mut seen = HashSet::new();
    for p in &inv.pins {
        let pin = crate::census::roots::PinId {
            dev: p.dev,
            ino: p.ino,
        };
        if !seen.insert(pin) {
            continue;
        }
        if let Some(&b) = snap.roots.retained.get(&pin) {
            rows.push((b, &p.mount, &p.path));
        }
    }
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)).then(a.2.cmp(b.2)));
    if opts.max_pin_series > 0 {
        rows.truncate(opts.max_pin_series);
    }
    out.declare(&defs::PIN_RETAINED_MEMORY_BYTES);
    for (b, mount, path) in rows {
        out.gauge(
            &defs::PIN_RETAINED_MEMORY_BYTES,
            vec![("mount", mount.to_string()), ("path", path.to_string())],
            b as f64,
        );
    }
}
