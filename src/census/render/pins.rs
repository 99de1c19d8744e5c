//! The pin families: every bpffs pin, within the budget.
use std::collections::{BTreeMap, HashMap, HashSet};

use super::RenderOpts;
use crate::census::fdinfo::ObjKind;
use crate::census::holders::HolderKind;
use crate::census::Snapshot;
use crate::metrics::{defs, Families};

/// Pin families. With `selected` (the budget), `bpfmap_pin_info` and
/// `bpfmap_pinned_map_unused` cover the pins of programs and links, of the
/// selected maps, and of maps no program uses (or whose users are unknown);
/// the others are counted in `bpfmap_pin_series_omitted`. Totals count every pin.
pub(crate) fn render_pins(
    snap: &Snapshot,
    opts: &RenderOpts,
    selected: Option<&HashSet<u32>>,
    out: &mut Families,
) {
    let Some(inv) = &snap.inventory else { return };
    out.gauge(&defs::BPFFS_MOUNTS, vec![], inv.mounts.len() as f64);
    // objects: distinct inodes per mount and type; bytes: distinct maps per mount.
    let mut objects: BTreeMap<(String, &'static str), HashSet<(u64, u64)>> = BTreeMap::new();
    let mut bytes: BTreeMap<String, HashMap<u32, u64>> = BTreeMap::new();
    for m in &inv.mounts {
        out.gauge(
            &defs::BPFFS_MOUNT_REACHABLE,
            vec![("mount", m.label.clone())],
            !inv.unreachable.contains(&m.label) as u8 as f64,
        );
    }
    let listed = |p: &crate::census::bpffs::Pin| -> bool {
        let Some(sel) = selected else { return true };
        if p.info.kind != ObjKind::Map || sel.contains(&p.info.id) {
            return true;
        }
        let users = snap
            .holders
            .get(&p.info.id)
            .and_then(|h| h.get(HolderKind::Program));
        users.is_none_or(|u| u == 0)
    };
    let listable = inv.pins.iter().filter(|p| listed(p)).count();
    for m in &inv.mounts {
        let name = m.label.clone();
        bytes.entry(name.clone()).or_default();
        for k in [ObjKind::Map, ObjKind::Prog, ObjKind::Link] {
            objects.entry((name.clone(), k.label())).or_default();
        }
    }
    let pin_limit = if opts.max_pin_series == 0 {
        usize::MAX
    } else {
        opts.max_pin_series
    };
    if opts.max_pin_series != 0 || selected.is_some() {
        out.gauge(
            &defs::PIN_SERIES_OMITTED,
            vec![],
            (inv.pins.len() - listable.min(pin_limit)) as f64,
        );
    }
    let mut n_listed = 0usize;
    for p in inv.pins.iter() {
        objects
            .entry((p.mount.clone(), p.info.kind.label()))
            .or_default()
            .insert((p.dev, p.ino));
        if p.info.kind == ObjKind::Map {
            let mem = snap
                .memory
                .get(&p.info.id)
                .copied()
                .or(p.info.memlock)
                .unwrap_or(0);
            bytes
                .entry(p.mount.clone())
                .or_default()
                .insert(p.info.id, mem);
        }
        if n_listed < pin_limit && listed(p) {
            n_listed += 1;
            out.gauge(
                &defs::PIN_INFO,
                vec![
                    ("mount", p.mount.clone()),
                    ("path", p.path.clone()),
                    ("object_type", p.info.kind.label().to_string()),
                    ("id", p.info.id.to_string()),
                ],
                1.0,
            );
            if p.info.kind == ObjKind::Map {
                if let Some(Some(users)) = snap
                    .holders
                    .get(&p.info.id)
                    .map(|h| h.get(HolderKind::Program))
                {
                    out.gauge(
                        &defs::PINNED_MAP_UNUSED,
                        vec![
                            ("mount", p.mount.clone()),
                            ("path", p.path.clone()),
                            ("id", p.info.id.to_string()),
                        ],
                        (users == 0) as u8 as f64,
                    );
                }
            }
        }
    }
    for ((mount, kind), inodes) in objects {
        out.gauge(
            &defs::PINNED_OBJECTS,
            vec![("mount", mount), ("object_type", kind.to_string())],
            inodes.len() as f64,
        );
    }
    for (mount, maps) in bytes {
        out.gauge(
            &defs::PINNED_MAP_MEMORY_BYTES,
            vec![("mount", mount)],
            maps.values().sum::<u64>() as f64,
        );
    }
    for ((mount, reason), n) in &inv.skipped {
        out.gauge(
            &defs::BPFFS_SKIPPED_ENTRIES,
            vec![("mount", mount.clone()), ("reason", reason.to_string())],
            *n as f64,
        );
    }
}
