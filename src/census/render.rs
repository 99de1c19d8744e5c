//! Turning a [`Snapshot`] into metric families. [`render`] is a pure
//! function of the snapshot (the golden-file test renders a hand-built one);
//! [`Renderer`] adds the one piece of state carried between scrapes, the
//! text of per-map families, reused where its inputs did not change.
use std::collections::{BTreeMap, HashMap, HashSet};

use super::fdinfo::ObjKind;
use super::holders::HolderKind;
use super::names::{map_type_label, map_type_name};
use super::Snapshot;
use crate::metrics::{defs, Def};
use crate::metrics::{Families, SeriesCache};
use std::hash::Hasher;

pub struct RenderOpts {
    /// Per-map series for at most this many maps (largest memory first); 0 = all.
    pub max_map_series: usize,
    pub per_map: bool,
    /// bpfmap_pin_info for at most this many pins; 0 = all.
    pub max_pin_series: usize,
}

impl Default for RenderOpts {
    fn default() -> Self {
        RenderOpts {
            max_map_series: 0,
            per_map: true,
            max_pin_series: 0,
        }
    }
}

/// (container_id, pod_uid) for a process, empty when unknown.
pub type Attribution<'a> = &'a dyn Fn(u32, u64) -> (String, String);

pub fn render(
    snap: &Snapshot,
    opts: &RenderOpts,
    attribution: Attribution<'_>,
    out: &mut Families,
) {
    render_cached(snap, opts, attribution, out, None);
}

/// The census renderer of a running exporter: [`render`] plus the
/// [`SeriesCache`] it owns, which keeps the previous scrape's per-map text.
/// Its output is byte-identical to [`render`]'s for the same snapshot.
pub struct Renderer {
    opts: RenderOpts,
    cache: SeriesCache,
}

impl Renderer {
    pub fn new(opts: RenderOpts) -> Renderer {
        Renderer {
            opts,
            cache: SeriesCache::default(),
        }
    }

    pub fn render(&mut self, snap: &Snapshot, attribution: Attribution<'_>, out: &mut Families) {
        self.cache.begin();
        render_cached(snap, &self.opts, attribution, out, Some(&mut self.cache));
        self.cache.end();
        let f = &snap.features;
        for (name, v) in [
            ("task_vma", f.task_vma),
            ("elem_count", f.elem_count),
            ("map_memcg", f.map_memcg),
            ("iter_unix", f.iter_unix),
        ] {
            out.gauge(
                &defs::FEATURE_AVAILABLE,
                vec![("feature", name.to_string())],
                v as u8 as f64,
            );
        }
    }
}

/// [`render`], reusing the text of per-map families from `cache` where what
/// they are written from did not change since the previous scrape.
pub fn render_cached(
    snap: &Snapshot,
    opts: &RenderOpts,
    attribution: Attribution<'_>,
    out: &mut Families,
    cache: Option<&mut SeriesCache>,
) {
    render_maps(snap, opts, out, cache);
    render_processes(snap, attribution, out);
    render_pins(snap, opts, out);
    render_own(snap, out);
    super::creators::render(snap, opts.per_map, opts.max_map_series, out);
    render_sources(snap, out);
    render_inflight(snap, attribution, out);
}

/// In-flight holders: each map's oldest in-flight age (never capped: the
/// stuck-in-flight alert reads it), the files each receiving process has
/// waiting, and the network namespaces the walk covered.
fn render_inflight(snap: &Snapshot, attribution: Attribution<'_>, out: &mut Families) {
    if let Some((walked, unreachable)) = snap.inflight_netns {
        out.gauge(
            &defs::INFLIGHT_NETNS,
            vec![("state", "walked".to_string())],
            walked as f64,
        );
        out.gauge(
            &defs::INFLIGHT_NETNS,
            vec![("state", "unreachable".to_string())],
            unreachable as f64,
        );
    }
    let ages: BTreeMap<u32, f64> = snap
        .inflight_ages
        .iter()
        .map(|(id, d)| (*id, d.as_secs_f64().floor()))
        .collect();
    for (id, age) in ages {
        out.gauge(
            &defs::MAP_INFLIGHT_AGE_SECONDS,
            vec![("id", id.to_string())],
            age,
        );
    }
    // (pid) -> (comm, cgroup, distinct files); a file with no receiver found
    // is left out here (it still counts as a holder).
    let mut by: BTreeMap<u32, (Vec<u8>, u64, HashSet<u64>)> = BTreeMap::new();
    for f in &snap.inflight {
        for r in &f.receivers {
            by.entry(r.tgid)
                .or_insert_with(|| (r.comm.clone(), r.cgroup_id, HashSet::new()))
                .2
                .insert(f.file_ptr);
        }
    }
    for (pid, (comm, cgroup, files)) in by {
        let (container, pod) = attribution(pid, cgroup);
        out.gauge(
            &defs::PROCESS_MAP_INFLIGHT_FILES,
            vec![
                ("pid", pid.to_string()),
                ("comm", super::names::comm_label(&comm)),
                ("container_id", container),
                ("pod_uid", pod),
            ],
            files.len() as f64,
        );
    }
}

/// Completeness of each holder source and of the pid-namespace view.
fn render_sources(snap: &Snapshot, out: &mut Families) {
    if !snap.maps_ok {
        return;
    }
    for (source, complete) in &snap.sources {
        out.gauge(
            &defs::HOLDER_SOURCE_COMPLETE,
            vec![("source", source.to_string())],
            *complete as u8 as f64,
        );
    }
    out.gauge(&defs::CENSUS_SETTLED_REFS, vec![], snap.settled_refs as f64);
    if let Some(host) = snap.host_pid_namespace {
        out.gauge(&defs::PID_NAMESPACE_HOST, vec![], host as u8 as f64);
    }
}

/// One map's looked-up census facts.
struct Row<'a> {
    memory: Option<u64>,
    holders: Option<&'a super::Holders>,
    unexplained: Option<i64>,
}

fn render_maps(
    snap: &Snapshot,
    opts: &RenderOpts,
    out: &mut Families,
    mut cache: Option<&mut SeriesCache>,
) {
    if !snap.maps_ok {
        return;
    }
    // Aggregates: always exact, whatever the per-map cap.
    // Keyed by the numeric type (a name String per map would cost an
    // allocation per map at 100k maps); named when emitted.
    let mut by_type: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    let mut unexplained_total = 0i64;
    let mut with_unexplained = 0u64;
    let mut withheld = 0u64;
    // Each map's memory and holders, looked up once (parallel to snap.maps).
    let rows: Vec<Row<'_>> = snap
        .maps
        .iter()
        .map(|m| {
            let holders = snap.holders.get(&m.id);
            Row {
                memory: snap.memory.get(&m.id).copied(),
                holders,
                unexplained: holders.and_then(|h| h.unexplained(m.refcnt)),
            }
        })
        .collect();
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

    if !opts.per_map {
        out.gauge(&defs::MAP_SERIES_OMITTED, vec![], snap.maps.len() as f64);
        return;
    }
    // Per-map series, capped: maps with unexplained references first (the
    // leak signal must never be capped away), then the largest by memory,
    // ties by lower id.
    let mut order: Vec<usize> = (0..snap.maps.len()).collect();
    let limit = if opts.max_map_series == 0 {
        order.len()
    } else {
        opts.max_map_series.min(order.len())
    };
    if limit < order.len() {
        use std::cmp::Reverse;
        let key = |&i: &usize| {
            (
                Reverse(rows[i].unexplained.unwrap_or(0)),
                Reverse(rows[i].memory.unwrap_or(0)),
                snap.maps[i].id,
            )
        };
        // The top `limit` in O(n), then only those sorted (ids make keys unique).
        if limit > 0 {
            order.select_nth_unstable_by_key(limit - 1, key);
        }
        order.truncate(limit);
        order.sort_unstable_by_key(key);
    }
    out.gauge(
        &defs::MAP_SERIES_OMITTED,
        vec![],
        (snap.maps.len() - limit) as f64,
    );
    // Per-map series are written straight in the text format (RawSamples):
    // no label vector and no String per label, which dominated scrapes of
    // 10k+ maps.
    let order = &order[..limit];
    if order.is_empty() {
        return;
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
                        ("flags", super::names::flags_label(m.map_flags, &mut flags)),
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
    let fields: [(&Def, Field<'_>); 8] = [
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
                super::names::counts_elements(m.map_type).then_some(m.elem_count?)
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
        out.raw_cached(
            cache.as_deref_mut(),
            &defs::MAP_HOLDERS,
            fp,
            order.len() * 64,
            |w| {
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
            },
        );
    }
}

fn render_processes(snap: &Snapshot, attribution: Attribution<'_>, out: &mut Families) {
    for p in &snap.processes {
        let (container, pod) = attribution(p.tgid, p.cgroup_id);
        let labels = || {
            vec![
                ("pid", p.tgid.to_string()),
                ("comm", super::names::comm_label(&p.comm)),
                ("container_id", container.clone()),
                ("pod_uid", pod.clone()),
            ]
        };
        if p.files > 0 {
            out.gauge(&defs::PROCESS_MAP_FILES, labels(), p.files as f64);
            out.gauge(&defs::PROCESS_MAP_FDS, labels(), p.fds as f64);
        }
        if p.mmap_only_files > 0 {
            out.gauge(
                &defs::PROCESS_MAP_MMAP_FILES,
                labels(),
                p.mmap_only_files as f64,
            );
        }
    }
}

fn render_pins(snap: &Snapshot, opts: &RenderOpts, out: &mut Families) {
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
    if opts.max_pin_series != 0 {
        out.gauge(
            &defs::PIN_SERIES_OMITTED,
            vec![],
            inv.pins.len().saturating_sub(opts.max_pin_series) as f64,
        );
    }
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
    for (i, p) in inv.pins.iter().enumerate() {
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
        if i < pin_limit {
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

fn render_own(snap: &Snapshot, out: &mut Families) {
    if !snap.maps_ok {
        return;
    }
    out.gauge(&defs::EXPORTER_MAPS, vec![], snap.own.len() as f64);
    if !snap.memory.is_empty() {
        out.gauge(
            &defs::EXPORTER_MAP_MEMORY_BYTES,
            vec![],
            snap.own
                .iter()
                .filter_map(|m| snap.memory.get(&m.id))
                .sum::<u64>() as f64,
        );
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;
    use crate::census::{holders, MapRecord};

    fn snapshot(n: u32, bump: u32, frozen: u32, memory_of_2: u64) -> Snapshot {
        let maps: Vec<MapRecord> = (1..=n)
            .map(|id| MapRecord {
                map_ptr: id as u64 * 0x100,
                refcnt: 1 + (id == bump) as i64,
                usercnt: 1,
                elem_count: (id % 2 == 0).then_some(id as i64),
                map_extra: 0,
                id,
                map_type: 1 + id % 2,
                key_size: 4,
                value_size: 8,
                max_entries: 64,
                map_flags: 0,
                frozen: id == frozen,
                is_outer: false,
                name: format!("m\"{id}"),
                creator: Default::default(),
            })
            .collect();
        let obs = holders::Observed {
            files: Some(
                (1..=n)
                    .map(|id| crate::census::FileRecord {
                        file_ptr: id as u64,
                        cgroup_id: 1,
                        tgid: 7,
                        pid: 7,
                        fd: id,
                        map_id: id,
                        comm: b"agent".to_vec(),
                        vm_start: 0,
                        vm_end: 0,
                        sock_ino: 0,
                    })
                    .collect(),
            ),
            vmas: Some(vec![]),
            programs: Some(vec![]),
            slots: Some(vec![]),
            links: Some(vec![]),
            pins: Some(vec![]),
            inflight: Some(vec![]),
            incomplete: vec![],
        };
        Snapshot {
            holders: holders::compute(&maps, &obs),
            memory: maps
                .iter()
                .map(|m| (m.id, if m.id == 2 { memory_of_2 } else { 4096 }))
                .collect(),
            maps,
            maps_ok: true,
            ..Default::default()
        }
    }

    fn text(snap: &Snapshot, cache: Option<&mut SeriesCache>) -> String {
        let mut f = Families::new();
        let opts = RenderOpts::default();
        let none = |_: u32, _: u64| (String::new(), String::new());
        match cache {
            Some(c) => {
                c.begin();
                render_cached(snap, &opts, &none, &mut f, Some(&mut *c));
                c.end();
            }
            None => render(snap, &opts, &none, &mut f),
        }
        String::from_utf8(f.encode_text(&[]).unwrap()).unwrap()
    }

    #[test]
    fn cached_render_matches_uncached_across_scrapes() {
        let mut cache = SeriesCache::default();
        let scrapes = [
            snapshot(50, 0, 0, 4096),
            snapshot(50, 0, 0, 4096), // nothing changed: every family reused
            snapshot(50, 17, 0, 4096), // a refcount moved (and unexplained)
            snapshot(50, 17, 3, 4096), // a map was frozen
            snapshot(49, 17, 3, 4096), // a map was freed
            snapshot(49, 17, 3, 8192), // a map's memory grew
        ];
        let mut misses = Vec::new();
        for s in &scrapes {
            let before = cache.misses;
            assert_eq!(text(s, Some(&mut cache)), text(s, None));
            misses.push(cache.misses - before);
        }
        // First scrape writes everything; an unchanged scrape writes nothing;
        // a refcount change rewrites refcount and unexplained only; freezing
        // rewrites map_info only; a memory change rewrites memory only.
        assert_eq!(misses[0], 10, "{misses:?}");
        assert_eq!(misses[1], 0, "{misses:?}");
        assert_eq!(misses[2], 2, "{misses:?}");
        assert_eq!(misses[3], 1, "{misses:?}");
        assert_eq!(misses[5], 1, "{misses:?}");
        assert!(cache.hits > 0);
        assert!(text(&scrapes[2], None).contains("bpfmap_map_unexplained_refs{id=\"17\"} 1\n"));
    }
}
