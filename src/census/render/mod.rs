//! Turning a [`Snapshot`] into metric families. [`render`] is a pure
//! function of the snapshot (the golden-file test renders a hand-built one);
//! [`Renderer`] adds the one piece of state carried between scrapes, the
//! text of per-map families, reused where its inputs did not change.
//!
//! Which maps get per-map series is chosen in [`select`]; the map families
//! are written in [`maps`], the pin families in [`pins`].
mod links;
mod maps;
mod pins;
mod programs;
mod roots;
mod select;

use std::collections::{BTreeMap, HashSet};

use super::holders::HolderKind;
use super::Snapshot;
use crate::metrics::defs;
use crate::metrics::{Families, SeriesCache};
use links::render_links;
use maps::render_maps;
use pins::render_pins;
use programs::render_programs;

/// Which maps get per-map series: the budget. Aggregates never depend on it.
///
/// Invariant: a map that matters (unexplained references, creator gone,
/// a file in flight, behind a pin no program uses, near full) is selected before any map kept
/// only for its size, and the cap cuts the least important first; every map
/// left out is counted in `bpfmap_map_series_omitted{reason}`.
#[derive(Debug, Clone)]
pub struct RenderOpts {
    /// Per-map series for at most this many maps, most important first; 0 = no cap.
    pub max_map_series: usize,
    pub per_map: bool,
    /// Every map is selected, not only the ones that matter and the top by memory.
    pub all_maps: bool,
    /// The N largest maps by memory are selected whatever else holds.
    pub top_by_memory: usize,
    /// A hash-family map (not LRU, at least [`NEAR_FULL_MIN_ENTRIES`] slots)
    /// whose entries reach this share of max_entries is selected.
    pub near_full_ratio: f64,
    /// bpfmap_pin_info for at most this many pins; 0 = all.
    pub max_pin_series: usize,
}

/// Default per-map cap: at about 12 series per map, 150 maps stay below
/// 2,000 per-map series, leaving room for the node's other series under a
/// 3,000-series budget.
pub const DEFAULT_MAX_MAP_SERIES: usize = 150;
pub const DEFAULT_TOP_BY_MEMORY: usize = 50;
/// Below the BpfMapNearlyFull alert's 0.9, so a map's series exist before it
/// crosses the alert threshold.
pub const DEFAULT_NEAR_FULL_RATIO: f64 = 0.8;
/// The alert's floor: maps with fewer slots are full by design (config maps).
pub const NEAR_FULL_MIN_ENTRIES: u32 = 64;

impl Default for RenderOpts {
    /// The exporter's defaults (the budget on).
    fn default() -> Self {
        RenderOpts {
            max_map_series: DEFAULT_MAX_MAP_SERIES,
            per_map: true,
            all_maps: false,
            top_by_memory: DEFAULT_TOP_BY_MEMORY,
            near_full_ratio: DEFAULT_NEAR_FULL_RATIO,
            max_pin_series: 0,
        }
    }
}

impl RenderOpts {
    /// Per-map series for every map, uncapped (the explain view in metrics).
    #[cfg(any(test, feature = "testing"))]
    pub fn all() -> Self {
        RenderOpts {
            max_map_series: 0,
            all_maps: true,
            ..Default::default()
        }
    }
}

/// (container_id, pod_uid) for a process, empty when unknown.
pub type Attribution<'a> = &'a dyn Fn(u32, u64) -> (String, String);

#[cfg(any(test, feature = "testing"))]
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
            ("elem_iter", f.elem_iter),
            ("map_memcg", f.map_memcg),
            ("iter_unix", f.iter_unix),
            ("iter_prog", f.iter_prog),
            ("iter_link", f.iter_link),
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
    let selected = render_maps(snap, opts, out, cache);
    let ids: Option<HashSet<u32>> =
        selected.map(|sel| sel.iter().map(|&i| snap.maps[i].id).collect());
    render_processes(snap, attribution, out);
    // Under the budget, a map's pins are listed only where the map has
    // per-map series or no program uses it (the stale-pin alert's series).
    let pin_budget = (opts.per_map && !opts.all_maps)
        .then_some(ids.as_ref())
        .flatten();
    render_pins(snap, opts, pin_budget, out);
    render_own(snap, out);
    super::creators::render(snap, ids.as_ref(), out);
    render_sources(snap, out);
    render_inflight(snap, attribution, out);
    render_entries(snap, out);
    render_programs(snap, opts, out);
    render_links(snap, opts, out);
    roots::render_roots(snap, opts, ids.as_ref(), out);
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

/// How this scrape's element counts were obtained (node level).
fn render_entries(snap: &Snapshot, out: &mut Families) {
    let Some(s) = &snap.entries_summary else {
        return;
    };
    for ((method, state), n) in &s.maps {
        out.gauge(
            &defs::MAP_ENTRIES_MAPS,
            vec![
                ("method", method.as_str().to_string()),
                ("state", state.as_str().to_string()),
            ],
            *n as f64,
        );
    }
    out.gauge(
        &defs::MAP_ENTRIES_BUDGET_SECONDS,
        vec![],
        s.budget.as_secs_f64(),
    );
    out.gauge(
        &defs::MAP_ENTRIES_WALK_SECONDS,
        vec![],
        s.spent.as_secs_f64(),
    );
    out.gauge(&defs::MAP_ENTRIES_OLDEST_SECONDS, vec![], s.oldest_seconds);
    out.gauge(
        &defs::MAP_ENTRIES_OVER_BUDGET_MAPS,
        vec![],
        s.over_budget as f64,
    );
    out.counter(
        &defs::MAP_ENTRIES_WALK_ERRORS_TOTAL,
        vec![],
        s.errors_total as f64,
    );
    out.counter(
        &defs::MAP_ENTRIES_WALKS_STOPPED_TOTAL,
        vec![],
        s.stopped_total as f64,
    );
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
    if snap
        .holders
        .values()
        .any(|h| h.counts[HolderKind::Pin as usize].is_some())
    {
        let inferred: u64 = snap
            .holders
            .values()
            .map(|h| u64::from(h.inferred_pins))
            .sum();
        out.gauge(&defs::PINS_INFERRED, vec![], inferred as f64);
    }
    if let Some(host) = snap.host_pid_namespace {
        out.gauge(&defs::PID_NAMESPACE_HOST, vec![], host as u8 as f64);
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
    use crate::census::testutil::map_record;
    use crate::census::{holders, MapRecord};

    fn snapshot(n: u32, bump: u32, frozen: u32, memory_of_2: u64) -> Snapshot {
        let maps: Vec<MapRecord> = (1..=n)
            .map(|id| MapRecord {
                map_ptr: id as u64 * 0x100,
                refcnt: 1 + (id == bump) as i64,
                elem_count: (id % 2 == 0).then_some(id as i64),
                map_type: 1 + id % 2,
                max_entries: 64,
                frozen: id == frozen,
                name: format!("m\"{id}"),
                ..map_record(id)
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
            ..crate::census::testutil::observed_all_known()
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

#[cfg(test)]
mod budget_tests {
    use std::collections::HashMap;

    use super::select::{rows, select, Selection};
    use super::*;
    use crate::census::fdinfo::ObjKind;
    use crate::census::holders::HolderKind;
    use crate::census::testutil::map_record;
    use crate::census::{Creator, Holders, MapRecord};

    /// 100 hash maps (memory grows with the id), one of each kind that
    /// matters, and two that look full but are not judged (LRU, too small).
    fn snapshot() -> Snapshot {
        let mut maps: Vec<MapRecord> = (1..=100)
            .map(|id| MapRecord {
                map_ptr: id as u64,
                elem_count: Some(10),
                max_entries: 100,
                creator: Creator::Root,
                ..map_record(id)
            })
            .collect();
        maps[4].refcnt = 3; // id 5: one reference nothing explains
        maps[5].creator = Creator::Gone(9); // id 6
        maps[7].elem_count = Some(80); // id 8: at the near-full ratio
        maps[8].map_type = 9; // id 9: LRU, full by design
        maps[8].elem_count = Some(100);
        maps[9].max_entries = 32; // id 10: below the slot floor
        maps[9].elem_count = Some(32);
        let holders = maps
            .iter()
            .map(|m| {
                let mut h = Holders {
                    counts: [
                        Some(1),
                        Some(0),
                        Some(1),
                        Some(0),
                        Some(0),
                        Some(0),
                        Some(0),
                        Some(0),
                        Some(0),
                    ],
                    complete: true,
                    settled: 0,
                    inferred_pins: 0,
                };
                if m.id == 7 {
                    // Pinned, no file and no program: a stale pin.
                    h.counts = [
                        Some(0),
                        Some(1),
                        Some(0),
                        Some(0),
                        Some(0),
                        Some(0),
                        Some(0),
                        Some(0),
                        Some(0),
                    ];
                }
                (m.id, h)
            })
            .collect();
        let mut s = Snapshot {
            memory: maps.iter().map(|m| (m.id, m.id as u64 * 100)).collect(),
            holders,
            maps,
            maps_ok: true,
            creator_paths: Some(HashMap::from([(9, "/kubepods/podx".to_string())])),
            ..Default::default()
        };
        s.features.map_memcg = true;
        s
    }

    fn ids(s: &Snapshot, opts: &RenderOpts) -> (Vec<u32>, Selection) {
        let rows = rows(s);
        let sel = select(s, opts, &rows);
        (sel.maps.iter().map(|&i| s.maps[i].id).collect(), sel)
    }

    fn opts(top: usize, cap: usize) -> RenderOpts {
        RenderOpts {
            top_by_memory: top,
            max_map_series: cap,
            ..Default::default()
        }
    }

    #[test]
    fn maps_that_matter_and_the_largest_are_selected() {
        let s = snapshot();
        let (got, sel) = ids(&s, &opts(3, 0));
        assert_eq!(got, vec![5, 6, 7, 8, 98, 99, 100]);
        assert_eq!((sel.omitted_budget, sel.omitted_cap), (93, 0));
    }

    #[test]
    fn the_cap_cuts_the_least_important_first() {
        let s = snapshot();
        // Size-only maps go first, the smallest of them first.
        let (got, sel) = ids(&s, &opts(3, 5));
        assert_eq!(got, vec![5, 6, 7, 8, 100]);
        assert_eq!((sel.omitted_budget, sel.omitted_cap), (93, 2));
        // Then near full, then unused pins, then creator gone.
        let (got, sel) = ids(&s, &opts(3, 2));
        assert_eq!(got, vec![5, 6]);
        assert_eq!(sel.omitted_cap, 5);
        let (got, _) = ids(&s, &opts(3, 1));
        assert_eq!(got, vec![5]);
    }

    #[test]
    fn a_map_with_a_file_in_flight_keeps_its_series() {
        let mut s = snapshot();
        let k = HolderKind::ALL
            .iter()
            .position(|k| *k == HolderKind::Inflight)
            .unwrap();
        let h = s.holders.get_mut(&20).unwrap();
        h.counts[0] = Some(0);
        h.counts[k] = Some(1);
        let (got, _) = ids(&s, &opts(3, 0));
        assert_eq!(got, vec![5, 6, 7, 8, 20, 98, 99, 100]);
        // Under the cap it ranks after creator gone, before an unused pin.
        let (got, _) = ids(&s, &opts(0, 3));
        assert_eq!(got, vec![5, 6, 20]);
    }

    #[test]
    fn publish_all_and_per_map_off() {
        let s = snapshot();
        let (got, sel) = ids(&s, &RenderOpts::all());
        assert_eq!(got.len(), 100);
        assert_eq!(sel.omitted_budget + sel.omitted_cap, 0);
        let (got, sel) = ids(
            &s,
            &RenderOpts {
                per_map: false,
                ..Default::default()
            },
        );
        assert!(got.is_empty());
        assert_eq!(sel.omitted_disabled, 100);
        // The near-full ratio is a flag: at 0.1 every judged map is near full
        // (all but the LRU map and the 32-slot one).
        let (got, _) = ids(
            &s,
            &RenderOpts {
                near_full_ratio: 0.1,
                top_by_memory: 0,
                ..opts(0, 0)
            },
        );
        assert_eq!(got.len(), 98);
        assert!(!got.contains(&9) && !got.contains(&10));
    }

    fn text(s: &Snapshot, opts: &RenderOpts) -> String {
        let mut f = Families::new();
        render(s, opts, &|_, _| (String::new(), String::new()), &mut f);
        String::from_utf8(f.encode_text(&[]).unwrap()).unwrap()
    }

    #[test]
    fn aggregates_are_exact_and_omissions_are_counted_by_reason() {
        let s = snapshot();
        let budget = text(&s, &opts(3, 5));
        let all = text(&s, &RenderOpts::all());
        let agg = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.starts_with("bpfmap_maps") || l.starts_with("bpfmap_creator_maps"))
                .map(String::from)
                .collect()
        };
        assert!(!agg(&all).is_empty());
        assert_eq!(agg(&budget), agg(&all));
        assert!(budget.contains("bpfmap_map_series_omitted{reason=\"budget\"} 93\n"));
        assert!(budget.contains("bpfmap_map_series_omitted{reason=\"cap\"} 2\n"));
        assert!(budget.contains("bpfmap_map_series_omitted{reason=\"disabled\"} 0\n"));
        assert!(all.contains("bpfmap_map_series_omitted{reason=\"budget\"} 0\n"));
        // The selected maps keep every per-map family, the others none; the
        // creator identity follows the same selection.
        assert_eq!(budget.matches("bpfmap_map_info{").count(), 5);
        assert_eq!(budget.matches("bpfmap_map_refcount{").count(), 5);
        assert!(budget.contains("bpfmap_map_unexplained_refs{id=\"5\"} 1\n"));
        assert!(budget.contains("bpfmap_map_creator_gone{id=\"6\"} 1\n"));
        assert!(budget.contains("bpfmap_map_entries{id=\"8\"} 80\n"));
        assert!(budget.contains("bpfmap_map_holders{id=\"7\",kind=\"pin\"} 1\n"));
        assert!(!budget.contains("{id=\"99\""));
        assert!(budget.contains("bpfmap_maps_creator_gone 1\n"));
    }

    #[test]
    fn pins_are_listed_for_selected_and_unused_maps_only() {
        use crate::census::bpffs::{Inventory, Pin};
        use crate::census::fdinfo::FdInfo;
        let mut s = snapshot();
        let pin = |id: u32, kind: ObjKind| Pin {
            mount: "/sys/fs/bpf".into(),
            path: format!("/p{id}"),
            dev: 1,
            ino: id as u64,
            info: FdInfo {
                kind,
                id,
                memlock: None,
                map_type: None,
            },
            fresh: true,
        };
        // 7: unused (no program), 100: selected, 50: used and not selected,
        // 500: a program.
        s.inventory = Some(Inventory {
            pins: vec![
                pin(7, ObjKind::Map),
                pin(100, ObjKind::Map),
                pin(50, ObjKind::Map),
                pin(500, ObjKind::Prog),
            ],
            ..Default::default()
        });
        let t = text(&s, &opts(3, 0));
        for id in [7, 100, 500] {
            assert!(
                t.contains(&format!("path=\"/p{id}\"")),
                "pin {id} missing:\n{t}"
            );
        }
        assert!(!t.contains("path=\"/p50\""), "{t}");
        assert!(t.contains("bpfmap_pin_series_omitted 1\n"), "{t}");
        assert!(
            t.contains("bpfmap_pinned_map_unused{mount=\"/sys/fs/bpf\",path=\"/p7\",id=\"7\"} 1\n")
        );
        // The totals count every pin.
        assert!(
            t.contains("bpfmap_pinned_objects{mount=\"/sys/fs/bpf\",object_type=\"map\"} 3\n"),
            "{t}"
        );
        // Publishing every map lists every pin.
        let all = text(&s, &RenderOpts::all());
        assert!(all.contains("path=\"/p50\""));
    }
}
