//! The collector contract: what a collector that runs after the census
//! reads ([`ScrapeContext`]) and provides ([`Collector`]). Which collectors
//! exist, and how each scrape's outcomes are recorded, is
//! [`crate::registry`].
use crate::census::{IdMap, Snapshot};
use crate::k8s::Attributor;
use crate::metrics::Families;

/// The process that created a map, as the lifecycle probes recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatorProcess {
    pub pid: u32,
    pub comm: String,
    /// cgroup v2 id of the creating task.
    pub cgroup_id: u64,
    /// Creation time, Unix seconds.
    pub created_unix: f64,
}

/// What the lifecycle collector knows of the creators of live maps.
#[derive(Debug, Clone, Default)]
pub struct CreatorProcesses {
    /// Maps whose creation the probes recorded.
    pub by_id: IdMap<CreatorProcess>,
    /// Maps with ids up to this existed before the probes attached.
    pub start_max: u32,
    /// The user stacks that created, pinned or took files of objects
    /// (`--collector.origins`).
    pub origins: Option<std::sync::Arc<crate::origins::Origins>>,
}

/// What a collector gets to read in a scrape.
pub struct ScrapeContext<'a> {
    /// This scrape's census, or None when the census failed or is off.
    pub census: Option<&'a Snapshot>,
    /// Container and pod identity of processes.
    pub attributor: &'a dyn Attributor,
}

pub trait Collector {
    /// The registry name (see [`crate::registry::REGISTRY`]).
    fn name(&self) -> &'static str;

    /// Emit this collector's families.
    fn collect(&mut self, ctx: &ScrapeContext<'_>, out: &mut Families) -> anyhow::Result<()>;

    /// Map ids that belong to this collector's own BPF objects. They are
    /// reported as the exporter's own maps, not as the node's.
    fn own_map_ids(&self) -> Vec<u32> {
        Vec::new()
    }

    /// Program ids of this collector's own BPF programs (the exporter's
    /// own, never the node's).
    fn own_prog_ids(&self) -> Vec<u32> {
        Vec::new()
    }

    /// Extra `key=value` lines for `--check` (the lifecycle collector prints
    /// `probe=<p> mode=<m> attached=<0|1>` lines here).
    fn check_lines(&self) -> Vec<String> {
        Vec::new()
    }

    /// The creating process of each live map, where this collector saw
    /// the creation (the lifecycle collector). Per-map data for the JSON
    /// API and `explain`, never labels.
    fn creator_processes(&self) -> Option<CreatorProcesses> {
        None
    }

    /// The program load records this collector keeps, for the census's
    /// loader table (asked once, when the exporter is built).
    fn prog_load_records(&self) -> Option<Box<dyn crate::census::loaders::LoadRecords>> {
        None
    }
}
