//! The collector contract. Every collector is timed and reported with
//! `bpfmap_scrape_collector_success{collector}` and
//! `bpfmap_scrape_collector_duration_seconds{collector}`; a failing collector
//! loses only its own series, never the whole scrape.
use crate::census::Snapshot;
use crate::metrics::Families;

pub trait Collector {
    /// Stable name, used in `--collector.<name>` and in the `collector` label.
    fn name(&self) -> &'static str;

    /// Emit this collector's families. `census` is this scrape's census, or
    /// `None` when the census itself failed or is disabled.
    fn collect(&mut self, census: Option<&Snapshot>, out: &mut Families) -> anyhow::Result<()>;

    /// Map ids that belong to this collector's own BPF objects. They are
    /// reported as the exporter's own maps, not as the node's.
    fn own_map_ids(&self) -> Vec<u32> {
        Vec::new()
    }

    /// Extra `key=value` lines for `--check` (the lifecycle collector prints
    /// `probe=<p> mode=<m> attached=<0|1>` lines here).
    fn check_lines(&self) -> Vec<String> {
        Vec::new()
    }
}
