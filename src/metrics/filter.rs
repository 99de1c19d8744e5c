//! `collect[]` / `exclude[]` on the telemetry path, with node_exporter's
//! semantics: `collect[]=a&collect[]=b` serves only collectors a and b,
//! `exclude[]=c` every enabled collector but c, both at once is a 400.
//!
//! A filtered request shares the one census of its single-flight batch with
//! every other request; the filter is applied to that scrape's families at
//! encoding time (see [`Filter::apply`]), so filtered and unfiltered scrapes
//! never change what the other sees and N split scrape jobs cost one census
//! when they arrive together.
//!
//! Invariant: every family in [`defs::ALL`] belongs to exactly one collector
//! of the registry ([`OWNERS`]) or to the exporter itself ([`SELF`]); the
//! exporter's own series (build, scrape counters, process_*) are in every
//! response, and `bpfmap_scrape_collector_*` only for the collectors served.
use std::collections::BTreeSet;

use super::defs::{self, *};
use super::{Def, Families};
use crate::registry::REGISTRY;

/// The collector whose series each family is.
pub const OWNERS: &[(&Def, &str)] = &[
    // The census itself: maps, their facts, holders and the leak signal
    // (computed from every holder source, published by the census).
    (&MAPS, "maps"),
    (&MAP_INFO, "maps"),
    (&MAP_MAX_ENTRIES, "maps"),
    (&MAP_KEY_SIZE_BYTES, "maps"),
    (&MAP_VALUE_SIZE_BYTES, "maps"),
    (&MAP_REFCOUNT, "maps"),
    (&MAP_USERCOUNT, "maps"),
    (&MAP_ENTRIES, "maps"),
    (&MAP_ENTRIES_AGE_SECONDS, "entries"),
    (&MAP_ENTRIES_MAPS, "entries"),
    (&MAP_ENTRIES_BUDGET_SECONDS, "entries"),
    (&MAP_ENTRIES_WALK_SECONDS, "entries"),
    (&MAP_ENTRIES_OLDEST_SECONDS, "entries"),
    (&MAP_ENTRIES_OVER_BUDGET_MAPS, "entries"),
    (&MAP_ENTRIES_WALK_ERRORS_TOTAL, "entries"),
    (&MAP_ENTRIES_WALKS_STOPPED_TOTAL, "entries"),
    (&MAP_HOLDERS, "maps"),
    (&MAP_UNEXPLAINED_REFS, "maps"),
    (&MAPS_UNEXPLAINED_REFS, "maps"),
    (&MAPS_WITH_UNEXPLAINED_REFS, "maps"),
    (&MAPS_UNEXPLAINED_WITHHELD, "maps"),
    (&PINS_INFERRED, "maps"),
    (&MAP_SERIES_OMITTED, "maps"),
    (&HOLDER_SOURCE_COMPLETE, "maps"),
    (&CENSUS_SETTLED_REFS, "maps"),
    (&EXPORTER_MAPS, "maps"),
    (&FEATURE_AVAILABLE, "maps"),
    (&MAP_ROOTS, "maps"),
    (&MAP_ORPHANED, "maps"),
    (&MAPS_ORPHANED, "maps"),
    (&MAPS_ORPHANED_MEMORY_BYTES, "maps"),
    (&MAPS_ORPHANED_WITHHELD, "maps"),
    (&CREATOR_ORPHANED_MAPS, "creators"),
    (&CREATOR_ORPHANED_MEMORY_BYTES, "creators"),
    (&PIN_RETAINED_MEMORY_BYTES, "pins"),
    (&LINKS, "links"),
    (&EXPORTER_LINKS, "links"),
    (&LINK_INFO, "links"),
    (&LINK_HOLDERS, "links"),
    (&LINK_SERIES_OMITTED, "links"),
    (&PROGRAMS, "programs"),
    (&PROGRAMS_MEMORY_BYTES, "programs"),
    (&EXPORTER_PROGRAMS, "programs"),
    (&PROGRAM_INFO, "programs"),
    (&PROGRAM_REFCOUNT, "programs"),
    (&PROGRAM_MEMORY_BYTES, "programs"),
    (&PROGRAM_MAPS, "programs"),
    (&PROGRAM_LOAD_TIME_SECONDS, "programs"),
    (&PROGRAM_HOLDERS, "programs"),
    (&PROGRAM_UNEXPLAINED_REFS, "programs"),
    (&PROGRAMS_UNEXPLAINED_WITHHELD, "programs"),
    (&PROGRAM_HOLDER_SOURCE_COMPLETE, "programs"),
    (&PROGRAM_SERIES_OMITTED, "programs"),
    (&PROGRAM_CREATOR_INFO, "programs"),
    (&PROGRAM_ORPHANED, "programs"),
    (&PROGRAMS_ORPHANED, "programs"),
    (&PROGRAMS_ORPHANED_MEMORY_BYTES, "programs"),
    (&PROGRAMS_ORPHANED_WITHHELD, "programs"),
    (&CREATOR_ORPHANED_PROGRAMS, "programs"),
    (&CREATOR_ORPHANED_PROGRAMS_MEMORY_BYTES, "programs"),
    (&MAP_MEMORY_BYTES, "memory"),
    (&MAPS_MEMORY_BYTES, "memory"),
    (&EXPORTER_MAP_MEMORY_BYTES, "memory"),
    (&PROCESS_MAP_FILES, "files"),
    (&PROCESS_MAP_FDS, "files"),
    (&PID_NAMESPACE_HOST, "files"),
    (&PROCESS_MAP_MMAP_FILES, "mmaps"),
    (&PROCESS_MAP_INFLIGHT_FILES, "inflight"),
    (&MAP_INFLIGHT_AGE_SECONDS, "inflight"),
    (&INFLIGHT_NETNS, "inflight"),
    (&BPFFS_MOUNTS, "pins"),
    (&BPFFS_MOUNT_REACHABLE, "pins"),
    (&BPFFS_SKIPPED_ENTRIES, "pins"),
    (&PIN_INFO, "pins"),
    (&PIN_SERIES_OMITTED, "pins"),
    (&PINNED_MAP_MEMORY_BYTES, "pins"),
    (&PINNED_MAP_UNUSED, "pins"),
    (&PINNED_OBJECTS, "pins"),
    (&CREATOR_MAPS, "creators"),
    (&CREATOR_MAPS_MEMORY_BYTES, "creators"),
    (&MAPS_CREATOR_GONE, "creators"),
    (&MAP_CREATOR_GONE, "creators"),
    (&MAP_CREATOR_INFO, "creators"),
    (&MAPS_CREATED_TOTAL, "lifecycle"),
    (&MAPS_DESTROYED_TOTAL, "lifecycle"),
    (&MAP_LIFETIME_SECONDS, "lifecycle"),
    (&MAP_LIFETIMES_TIMED_TOTAL, "lifecycle"),
    (&MAP_REFCOUNT_INCREMENTS_TOTAL, "lifecycle"),
    (&MAP_REFCOUNT_DECREMENTS_TOTAL, "lifecycle"),
    (&MAP_SYSCALLS_TOTAL, "lifecycle"),
    (&PROBE_ATTACHED, "lifecycle"),
    (&EVENTS_LOST_TOTAL, "lifecycle"),
    (&LIFECYCLE_EVENTS_LOST_TOTAL, "lifecycle"),
    (&ORIGIN_CAPTURES_TOTAL, "lifecycle"),
    (&ORIGIN_STACKS_TRUNCATED_TOTAL, "lifecycle"),
    (&ORIGIN_RECORDS_LOST_TOTAL, "lifecycle"),
    (&ORIGIN_PROCESS_GONE_TOTAL, "lifecycle"),
    (&ORIGIN_STORE_EVICTIONS_TOTAL, "lifecycle"),
    (&ORIGIN_STORE_RECORDS, "lifecycle"),
    (&ORIGIN_STORE_STACKS, "lifecycle"),
    (&ORIGIN_STORE_BYTES, "lifecycle"),
    (&BPF_PROGRAM_RUNS_TOTAL, "lifecycle"),
    (&BPF_PROGRAM_RUN_SECONDS_TOTAL, "lifecycle"),
    (&K8S_POD_INFO, "k8s"),
    (&K8S_PODS, "k8s"),
    (&K8S_POD_REFRESHES_TOTAL, "k8s"),
    (&K8S_POD_REFRESH_FAILURES_TOTAL, "k8s"),
    (&K8S_POD_REFRESH_SUCCESS, "k8s"),
    (&K8S_POD_LAST_SUCCESS_TIMESTAMP_SECONDS, "k8s"),
];

/// The exporter's own families, in every response (the per-collector ones
/// keep only the samples of the collectors served).
pub const SELF: &[&Def] = &[
    &BUILD_INFO,
    &SCRAPES_TOTAL,
    &SCRAPE_REQUESTS_TOTAL,
    &SCRAPE_COLLECTOR_SUCCESS,
    &SCRAPE_COLLECTOR_DURATION_SECONDS,
    &COLLECTOR_UNAVAILABLE,
    &WEB_CONFIG_LAST_RELOAD_SUCCESSFUL,
    &WEB_CONFIG_RELOADS_TOTAL,
    &WEB_AUTH_CHECKS_TOTAL,
];

/// Why a `collect[]` / `exclude[]` query cannot be served (a 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("Combined collect and exclude queries are not allowed.")]
    Combined,
    #[error("unknown collector {name:?} in {param}: valid names are {valid}")]
    Unknown {
        name: String,
        param: &'static str,
        valid: String,
    },
    #[error("disabled collector {0:?} in collect[]: it is turned off on this exporter (--no-collector.{0}, or not enabled with --collector.{0})")]
    Disabled(String),
}

/// Longest part of a client's name echoed in an error.
const ECHO_MAX: usize = 64;

/// A client-supplied name as an error message shows it: at most
/// [`ECHO_MAX`] characters, with `...` when cut.
fn shown(name: &str) -> String {
    match name.char_indices().nth(ECHO_MAX) {
        Some((i, _)) => format!("{}...", &name[..i]),
        None => name.to_string(),
    }
}

/// The collectors a filtered request is served.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    collectors: BTreeSet<&'static str>,
}

impl Filter {
    /// Parse the query string of a telemetry request. `enabled` are the
    /// collectors this exporter runs. `Ok(None)`: no filter.
    ///
    /// Like node_exporter: collect[] must name enabled collectors; exclude[]
    /// removes from the enabled ones, and excluding a disabled collector is
    /// a no-op. Unlike node_exporter, a name that is no collector at all is
    /// rejected in exclude[] too, so a typo never serves everything.
    pub fn from_query(
        query: Option<&str>,
        enabled: &[&'static str],
    ) -> Result<Option<Filter>, FilterError> {
        let (mut collect, mut exclude) = (Vec::new(), Vec::new());
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                "collect[]" => collect.push(v.into_owned()),
                "exclude[]" => exclude.push(v.into_owned()),
                _ => {}
            }
        }
        if collect.is_empty() && exclude.is_empty() {
            return Ok(None);
        }
        if !collect.is_empty() && !exclude.is_empty() {
            return Err(FilterError::Combined);
        }
        let known = |name: &str, param: &'static str| {
            REGISTRY
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.name)
                .ok_or_else(|| FilterError::Unknown {
                    name: shown(name),
                    param,
                    valid: REGISTRY
                        .iter()
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        };
        let collectors = if !collect.is_empty() {
            let mut set = BTreeSet::new();
            for c in &collect {
                let name = known(c, "collect[]")?;
                if !enabled.contains(&name) {
                    return Err(FilterError::Disabled(name.to_string()));
                }
                set.insert(name);
            }
            set
        } else {
            let mut out: BTreeSet<&'static str> = enabled.iter().copied().collect();
            for e in &exclude {
                out.remove(known(e, "exclude[]")?);
            }
            out
        };
        Ok(Some(Filter { collectors }))
    }

    /// The collectors served.
    #[cfg(any(test, feature = "testing"))]
    pub fn collectors(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.collectors.iter().copied()
    }

    /// Keep the families of the collectors served and the exporter's own;
    /// of `bpfmap_scrape_collector_*`, the samples of the collectors served.
    pub fn apply(&self, fams: &mut Families) {
        fams.fams.retain(|name, _| match owner(name) {
            Some(c) => self.collectors.contains(c),
            None => SELF.iter().any(|d| d.name == *name),
        });
        for def in [
            &defs::SCRAPE_COLLECTOR_SUCCESS,
            &defs::SCRAPE_COLLECTOR_DURATION_SECONDS,
        ] {
            if let Some(f) = fams.fams.get_mut(def.name) {
                f.samples.retain(|(labels, _)| {
                    labels
                        .iter()
                        .any(|(k, v)| *k == "collector" && self.collectors.contains(v.as_str()))
                });
            }
        }
    }
}

/// The collector that publishes family `name` (None: the exporter's own,
/// or not a family of this exporter).
pub fn owner(name: &str) -> Option<&'static str> {
    OWNERS.iter().find(|(d, _)| d.name == name).map(|(_, c)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_ON: &[&str] = &[
        "maps",
        "memory",
        "files",
        "mmaps",
        "programs",
        "outer_maps",
        "links",
        "pins",
        "inflight",
        "io_uring",
        "file_attachments",
        "program_targets",
        "cgroups",
        "map_programs",
        "netdev",
        "creators",
        "confirm",
        "entries",
        "lifecycle",
        "k8s",
    ];

    #[test]
    fn every_family_has_one_owner_or_is_the_exporters_own() {
        for d in defs::ALL {
            let owners = OWNERS.iter().filter(|(o, _)| o.name == d.name).count();
            let own = SELF.iter().any(|s| s.name == d.name);
            assert_eq!(
                owners + own as usize,
                1,
                "{}: list it once in OWNERS (src/metrics/filter.rs) with its collector, or in SELF",
                d.name
            );
        }
        for (_, c) in OWNERS {
            assert!(crate::registry::spec(c).is_some(), "{c} is not a collector");
        }
        assert_eq!(ALL_ON.len(), REGISTRY.len());
    }

    fn parse(q: &str) -> Result<Option<Vec<&'static str>>, FilterError> {
        Filter::from_query(Some(q), &ALL_ON[..ALL_ON.len() - 1])
            .map(|f| f.map(|f| f.collectors().collect()))
    }

    #[test]
    fn query_semantics_follow_node_exporter() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("foo=bar"), Ok(None));
        assert_eq!(
            parse("collect[]=pins&collect%5B%5D=maps"),
            Ok(Some(vec!["maps", "pins"]))
        );
        let ex = parse("exclude[]=lifecycle&exclude[]=files")
            .unwrap()
            .unwrap();
        assert!(!ex.contains(&"lifecycle") && !ex.contains(&"files"));
        assert!(
            ex.contains(&"maps") && ex.len() == ALL_ON.len() - 3,
            "{ex:?}"
        );
        // k8s is disabled here: excluding it is a no-op, collecting it is not.
        assert_eq!(
            parse("exclude[]=k8s").unwrap().unwrap().len(),
            ALL_ON.len() - 1
        );
        assert_eq!(
            parse("collect[]=k8s"),
            Err(FilterError::Disabled("k8s".into()))
        );
        assert_eq!(
            parse("collect[]=maps&exclude[]=pins"),
            Err(FilterError::Combined)
        );
        for q in ["collect[]=nope", "exclude[]=nope", "collect[]="] {
            let e = parse(q).unwrap_err();
            assert!(matches!(e, FilterError::Unknown { .. }), "{q}: {e:?}");
            assert!(
                e.to_string().contains("valid names are maps, memory"),
                "{e}"
            );
        }
        // A long name is cut in the message, not echoed in full.
        let e = parse(&format!("collect[]={}", "x".repeat(10_000))).unwrap_err();
        let m = e.to_string();
        assert!(m.contains(&format!("\"{}...\"", "x".repeat(64))), "{m}");
        assert!(m.len() < 400, "{} bytes", m.len());
        assert_eq!(
            FilterError::Combined.to_string(),
            "Combined collect and exclude queries are not allowed."
        );
    }

    #[test]
    fn apply_keeps_the_collectors_served_and_the_exporters_own() {
        let mut f = Families::new();
        f.gauge(&defs::MAPS, vec![("map_type", "hash".into())], 3.0);
        f.gauge(&defs::PIN_INFO, vec![], 1.0);
        f.counter(&defs::MAPS_CREATED_TOTAL, vec![], 5.0);
        f.gauge(&defs::BUILD_INFO, vec![], 1.0);
        for c in ["maps", "pins", "lifecycle"] {
            f.gauge(
                &defs::SCRAPE_COLLECTOR_SUCCESS,
                vec![("collector", c.into())],
                1.0,
            );
        }
        let filter = Filter::from_query(Some("collect[]=pins"), ALL_ON)
            .unwrap()
            .unwrap();
        filter.apply(&mut f);
        let t = String::from_utf8(f.encode_text(&[]).unwrap()).unwrap();
        assert!(t.contains("bpfmap_pin_info 1\n"), "{t}");
        assert!(t.contains("bpfmap_build_info 1\n"), "{t}");
        assert!(t.contains("bpfmap_scrape_collector_success{collector=\"pins\"} 1\n"));
        assert!(!t.contains("collector=\"maps\""), "{t}");
        assert!(!t.contains("bpfmap_maps{") && !t.contains("bpfmap_maps_created_total"));
    }
}
