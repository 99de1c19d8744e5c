//! The census families of maps: aggregates by type and the per-map series
//! of the selected maps.
use std::collections::BTreeMap;
use std::hash::Hasher;

use super::select::{rows, select};
use super::RenderOpts;
use crate::census::names::{map_type_label, map_type_name};
use crate::census::Snapshot;
use crate::metrics::{defs, Def, Families, SeriesCache};

/// The census families of maps; returns the maps given per-map series
/// (None when the census failed).
pub(crate) fn render_maps(
    snap: &Snapshot,
    opts: &RenderOpts,
    out: &mut Families,
    mut cache: Option<&mut SeriesCache>,
) -> Option<Vec<usize>> {
    if !snap.maps_ok {
        return None;
    }
    // Aggregates: always exact, whatever the per-map cap.
    // Keyed by the numeric type (a name String per map would cost an
    // allocation per map at 100k maps); named when emitted.
    let mut by_type: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    let mut unexplained_total = 0i64;
    let mut with_unexplained = 0u64;
    let mut withheld = 0u64;
    // Each map's memory and holders, looked up once (parallel to snap.maps).
    let rows = rows(snap);
    for (m, row) in snap.maps.iter().zip(&rows) {
        let e = by_type.entry(m.map_type).or_default();
        e.0 += 1;
        e.1 += row.memory.unwrap_or(0);
        match row.unexplained {
            Some(u) => {
                unexplained_total += u;
                with_unexplained += (u > 0) as u64;
            }
            None => withheld += 1,
        }
    }
    out.declare(&defs::MAPS);
    let by_type: BTreeMap<String, (u64, u64)> = by_type
        .into_iter()
        .map(|(t, v)| (map_type_name(t), v))
        .collect();
    for (t, (n, bytes)) in &by_type {
        out.gauge(&defs::MAPS, vec![("map_type", t.clone())], *n as f64);
        if !snap.memory.is_empty() {
            out.gauge(
                &defs::MAPS_MEMORY_BYTES,
                vec![("map_type", t.clone())],
                *bytes as f64,
            );
        }
    }
    let holders_ran = !snap.holders.is_empty() || snap.maps.is_empty();
    if holders_ran {
        out.gauge(&defs::MAPS_UNEXPLAINED_WITHHELD, vec![], withheld as f64);
    }
    if holders_ran && withheld == 0 {
        out.gauge(
            &defs::MAPS_UNEXPLAINED_REFS,
            vec![],
            unexplained_total as f64,
        );
        out.gauge(
            &defs::MAPS_WITH_UNEXPLAINED_REFS,
            vec![],
            with_unexplained as f64,
        );
    }

    let sel = select(snap, opts, &rows);
    for (reason, n) in [
        ("budget", sel.omitted_budget),
        ("cap", sel.omitted_cap),
        ("disabled", sel.omitted_disabled),
    ] {
        out.gauge(
            &defs::MAP_SERIES_OMITTED,
            vec![("reason", reason.to_string())],
            n as f64,
        );
    }
    // Per-map series are written straight in the text format (RawSamples):
    // no label vector and no String per label, which dominated scrapes of
    // 10k+ maps.
    let order = &sel.maps[..];
    if order.is_empty() {
        return Some(sel.maps);
    }
    // With a cache, each family's text is reused when what it is written
    // from is unchanged; the fingerprint covers exactly those values.
    let fingerprint = |cache: &Option<&mut SeriesCache>, f: &dyn Fn(&mut dyn Hasher)| match cache {
        Some(c) => {
            let mut h = c.hasher();
            f(&mut h);
            h.finish()
        }
        None => 0,
    };
    // Name, type and flags of a map id never change; `frozen` can.
    let fp = fingerprint(&cache, &|h| {
        for &i in order {
            h.write_u32(snap.maps[i].id);
            h.write_u8(snap.maps[i].frozen as u8);
        }
    });
    out.raw_cached(
        cache.as_deref_mut(),
        &defs::MAP_INFO,
        fp,
        order.len() * 128,
        |info| {
            let mut id_buf = itoa::Buffer::new();
            for &i in order {
                let m = &snap.maps[i];
                let ty = map_type_label(m.map_type);
                let mut flags = [0u8; 10];
                info.labels(
                    &[
                        ("id", id_buf.format(m.id)),
                        ("name", &m.name),
                        ("map_type", &ty),
                        (
                            "flags",
                            crate::census::names::flags_label(m.map_flags, &mut flags),
                        ),
                        ("frozen", if m.frozen { "1" } else { "0" }),
                    ],
                    1.0,
                );
            }
        },
    );
    // Integer per-map families: (id, value) for the maps that have one.
    type Field<'a> = Box<dyn Fn(usize) -> Option<i64> + 'a>;
    let m = |i: usize| &snap.maps[i];
    let fields: [(&Def, Field<'_>); 9] = [
        (
            &defs::MAP_MAX_ENTRIES,
            Box::new(|i| Some(m(i).max_entries as i64)),
        ),
        (
            &defs::MAP_KEY_SIZE_BYTES,
            Box::new(|i| Some(m(i).key_size as i64)),
        ),
        (
            &defs::MAP_VALUE_SIZE_BYTES,
            Box::new(|i| Some(m(i).value_size as i64)),
        ),
        (&defs::MAP_REFCOUNT, Box::new(|i| Some(m(i).refcnt))),
        (&defs::MAP_USERCOUNT, Box::new(|i| Some(m(i).usercnt))),
        (
            &defs::MAP_ENTRIES,
            Box::new(|i| {
                let m = m(i);
                crate::census::names::counts_elements(m.map_type).then_some(m.elem_count?)
            }),
        ),
        (
            &defs::MAP_ENTRIES_AGE_SECONDS,
            Box::new(|i| {
                let m = m(i);
                m.elem_count?;
                Some(snap.entries.get(&m.id)?.age_seconds? as i64)
            }),
        ),
        (
            &defs::MAP_MEMORY_BYTES,
            Box::new(|i| Some(rows[i].memory? as i64)),
        ),
        (
            &defs::MAP_UNEXPLAINED_REFS,
            Box::new(|i| rows[i].unexplained),
        ),
    ];
    for (def, field) in fields {
        // A family with no sample at all is left out (no HELP/TYPE either).
        if !order.iter().any(|&i| field(i).is_some()) {
            continue;
        }
        let fp = fingerprint(&cache, &|h| {
            for &i in order {
                if let Some(v) = field(i) {
                    h.write_u32(snap.maps[i].id);
                    h.write_i64(v);
                }
            }
        });
        out.raw_cached(
            cache.as_deref_mut(),
            def,
            fp,
            order.len() * (def.name.len() + 40),
            |w| {
                for &i in order {
                    if let Some(v) = field(i) {
                        w.id_int(snap.maps[i].id, v);
                    }
                }
            },
        );
    }
    if !snap.holders.is_empty() {
        let fp = fingerprint(&cache, &|h| {
            for &i in order {
                if let Some(hs) = rows[i].holders {
                    h.write_u32(snap.maps[i].id);
                    for c in hs.counts {
                        h.write_i64(c.map_or(-1, |c| c as i64));
                    }
                }
            }
        });
        out.raw_cached(cache, &defs::MAP_HOLDERS, fp, order.len() * 64, |w| {
            for &i in order {
                let Some(h) = rows[i].holders else {
                    continue;
                };
                for (k, c) in h.iter() {
                    // Zero-valued kinds are left out: most maps have one or
                    // two holder kinds, and six series per map would
                    // dominate the exposition. A kind that is unknown (its
                    // part disabled or failed) is left out too, and then so
                    // is unexplained.
                    if let Some(c) = c.filter(|c| *c > 0) {
                        w.id_and(snap.maps[i].id, "kind", k.label(), c as f64);
                    }
                }
            }
        });
    }
    Some(sel.maps)
}
