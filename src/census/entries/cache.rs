//! The counts kept between scrapes: each map's last count, kept while the
//! census still sees the map.
use std::time::{Duration, Instant};

use crate::census::IdMap;

/// The last count of a map and what it cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cached {
    pub(crate) count: u64,
    pub(crate) at: Instant,
    pub(crate) cost: Duration,
}

/// The last count of each map, with the number of the last scrape that
/// looked it up. A scrape looks up every map it may count; the maps it did
/// not look up (gone, or no longer walked) are forgotten when it says so.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    counts: IdMap<(Cached, u64)>,
    /// The current scrape's number.
    scrape: u64,
}

impl Cache {
    /// Start a scrape: lookups and inserts from now on are this scrape's.
    pub(crate) fn begin_scrape(&mut self) {
        self.scrape += 1;
    }

    /// The last count of map `id`, which this scrape has now seen.
    pub(crate) fn get(&mut self, id: u32) -> Option<Cached> {
        let scrape = self.scrape;
        self.counts.get_mut(&id).map(|e| {
            e.1 = scrape;
            e.0
        })
    }

    /// Forget every map this scrape has not looked up or inserted.
    pub(crate) fn forget_unseen(&mut self) {
        let scrape = self.scrape;
        self.counts.retain(|_, e| e.1 == scrape);
    }

    /// Keep a new count of map `id`, seen by this scrape.
    pub(crate) fn insert(&mut self, id: u32, k: Cached) {
        self.counts.insert(id, (k, self.scrape));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_a_scrape_does_not_look_up_are_forgotten() {
        let k = Cached {
            count: 1,
            at: Instant::now(),
            cost: Duration::ZERO,
        };
        let mut c = Cache::default();
        c.begin_scrape();
        c.insert(1, k);
        c.insert(2, k);
        c.forget_unseen();
        c.begin_scrape();
        assert_eq!(c.get(1), Some(k));
        c.forget_unseen();
        c.begin_scrape();
        assert_eq!(c.get(2), None);
        assert_eq!(c.get(1), Some(k));
    }
}
