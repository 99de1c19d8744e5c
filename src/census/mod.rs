pub mod decode;
pub mod names;

pub use decode::{FileRecord, MapRecord};

/// One scrape's census.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Every live map on the node except the exporter's own.
    pub maps: Vec<MapRecord>,
}
