//! What a census is asked for (its parts and options) and what it returns:
//! the data-only [`Snapshot`].
use std::collections::HashMap;
use std::path::PathBuf;

use super::programs::ProgHolders;
use super::{
    bpffs, entries, inflight, Features, FileRecord, Holders, MapRecord, ObjectFile, ProcessHolder,
    ProgRecord,
};

/// Map id -> value with a fast hasher: per-map tables have 100k entries on
/// big nodes and SipHash dominated the holder arithmetic there.
pub type IdMap<V> = HashMap<u32, V, rustc_hash::FxBuildHasher>;

/// Which census collectors run (registry names with stage `Census`).
#[derive(Debug, Clone)]
pub struct Parts {
    on: Vec<&'static str>,
}

impl Parts {
    /// Every census collector.
    pub fn all() -> Parts {
        Parts::from_fn(|_| true)
    }

    /// The census collectors for which `on(name)` holds.
    pub fn from_fn(on: impl Fn(&str) -> bool) -> Parts {
        Parts {
            on: crate::registry::REGISTRY
                .iter()
                .filter(|s| s.stage == crate::registry::Stage::Census && on(s.name))
                .map(|s| s.name)
                .collect(),
        }
    }

    /// Every census collector but these.
    #[cfg(any(test, feature = "testing"))]
    pub fn without(names: &[&str]) -> Parts {
        Parts::from_fn(|n| !names.contains(&n))
    }

    pub fn on(&self, name: &str) -> bool {
        self.on.contains(&name)
    }
}

impl Default for Parts {
    fn default() -> Self {
        Parts::all()
    }
}

#[derive(Debug, Clone)]
pub struct CensusOpts {
    pub btf_path: Option<PathBuf>,
    pub parts: Parts,
    pub pins_max_entries: usize,
    pub pins_max_depth: usize,
    /// Keep the file and vma records (holder identities) in the snapshot.
    pub keep_files: bool,
    /// The memory cgroup hierarchy to resolve creators in (default: mountinfo's).
    pub cgroup_root: Option<PathBuf>,
    /// Delay before each confirming re-read of maps with unexplained
    /// references; zero publishes the first reading.
    pub confirm_delay: std::time::Duration,
    /// Time each scrape may spend counting elements by iteration.
    pub entries_budget: entries::Budget,
    /// `--collector.entries.method`.
    pub entries_method: entries::Choice,
}

impl Default for CensusOpts {
    fn default() -> Self {
        CensusOpts {
            btf_path: None,
            parts: Parts::default(),
            pins_max_entries: 100_000,
            pins_max_depth: 32,
            keep_files: false,
            cgroup_root: None,
            confirm_delay: std::time::Duration::from_millis(100),
            entries_budget: entries::DEFAULT_BUDGET,
            entries_method: entries::Choice::Auto,
        }
    }
}

/// One scrape's census: data only (no timings, no rendering state), read
/// by the renderer, the lifecycle collector and any other reader.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Every live map on the node except the exporter's own.
    pub maps: Vec<MapRecord>,
    /// The exporter's own maps (reported apart, never as the node's).
    pub own: Vec<MapRecord>,
    /// Map id -> bytes, as fdinfo `memlock:` reports it.
    pub memory: IdMap<u64>,
    /// Map id -> holders by kind.
    pub holders: IdMap<Holders>,
    /// Processes holding map files (fd tables and mmaps).
    pub processes: Vec<ProcessHolder>,
    /// bpffs inventory, when the pins part ran.
    pub inventory: Option<bpffs::Inventory>,
    /// Whether the map census itself succeeded.
    pub maps_ok: bool,
    pub features: Features,
    /// Memory cgroup id -> path in the memory hierarchy, for the cgroups
    /// the maps are charged to, when the creators part ran.
    pub creator_paths: Option<HashMap<u64, String>>,
    /// Map files in fd tables and behind vmas, with `CensusOpts::keep_files`.
    pub files: Option<Vec<FileRecord>>,
    pub vmas: Option<Vec<FileRecord>>,
    /// Each holder source (collector name) and whether it was complete this
    /// scrape (off or failed counts as incomplete).
    pub sources: Vec<(&'static str, bool)>,
    /// References that looked unexplained at the census and were released
    /// before the confirming re-reads ended (deferred frees).
    pub settled_refs: u64,
    /// Whether the exporter sees the host's pid namespace (None: unknown).
    pub host_pid_namespace: Option<bool>,
    /// Map files in flight that no fd table or vma holds, with receivers.
    pub inflight: Vec<inflight::InflightFile>,
    /// Map id -> how long its oldest in-flight file has been in flight (as
    /// far as this exporter has seen: since it first saw it there).
    pub inflight_ages: IdMap<std::time::Duration>,
    /// Network namespaces the in-flight walk covered and could not cover,
    /// when it ran.
    pub inflight_netns: Option<(u32, u32)>,
    /// Map id -> how its element count was obtained, for every map with one.
    pub entries: IdMap<entries::CountInfo>,
    /// The element counting of this scrape, when the entries part ran.
    pub entries_summary: Option<entries::Summary>,
    /// Every live program except the exporter's own, when the programs
    /// part ran and succeeded.
    pub programs: Option<Vec<ProgRecord>>,
    /// The exporter's own programs (reported apart, never as the node's).
    pub own_programs: Vec<ProgRecord>,
    /// Program id -> holders by kind.
    pub prog_holders: IdMap<ProgHolders>,
    /// Each program holder source and whether it was complete this scrape
    /// (sources this build cannot read are listed as incomplete).
    pub prog_sources: Vec<(&'static str, bool)>,
    /// Every live link except the exporter's own, when the links part ran.
    pub links: Option<Vec<crate::bpf::census::LinkRecord>>,
    /// Link id -> holders by kind.
    pub link_holders: IdMap<super::links::LinkHolders>,
    /// The exporter's own links (of its own programs).
    pub own_links: u64,
    /// Cgroup id -> path, for the cgroups the cgroups part saw programs
    /// attached to (cgroup links' targets), when it ran.
    pub cgroup_paths: HashMap<u64, String>,
    /// Program references held by attachments, other programs and tracing
    /// links; an attachment root names its index here.
    pub attachments: Vec<super::programs::Attachment>,
    /// Program and link files in fd tables, with `CensusOpts::keep_files`.
    pub object_files: Option<Vec<ObjectFile>>,
    /// BPF object files in io_uring registered-file tables, by the tasks
    /// holding the rings (when the io_uring part ran).
    pub io_uring: Vec<super::UringRecord>,
    /// Who holds each map and program, through every chain, to the roots.
    pub graph: super::roots::Graph,
    /// Map id -> the container and pod resolved while its creating cgroup
    /// lived, for maps whose creating cgroup is gone.
    pub remembered_creators: IdMap<super::creators::RememberedCreator>,
    /// Orphans and the memory each pin alone retains.
    pub roots: super::roots::Summary,
    /// Program id -> its loader, or why it is unknown, for every live
    /// program (when the programs part ran).
    pub prog_loaders: IdMap<super::loaders::ProgLoader>,
    /// Orphaned programs and the withheld verdicts.
    pub prog_orphans: super::loaders::ProgOrphans,
    /// When the machine booted, Unix seconds (CLOCK_REALTIME less
    /// CLOCK_BOOTTIME at the census): converts kernel boot-time stamps.
    pub boot_unix: Option<f64>,
}
