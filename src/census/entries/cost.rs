//! The walk cost model: what a walk is estimated to cost before it runs,
//! learned from the walks' measured times.
use std::time::Duration;

use super::candidate::Candidate;

/// The walk cost model: a fixed part per map (fd, link, iterator) and a
/// part per slot of max_entries (buckets are visited whether full or not),
/// both learned from the walks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CostModel {
    pub(crate) per_map: Duration,
    pub(crate) per_slot_ns: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        // Starting points above the costs measured for small maps (tens of
        // microseconds natively, under a millisecond emulated), replaced by
        // measurements: estimates approach the real cost from above, so the
        // first scrape's walks stay within its budget too.
        CostModel {
            per_map: Duration::from_millis(1),
            per_slot_ns: 50.0,
        }
    }
}

impl CostModel {
    /// The estimated cost of counting a map: its last measured cost when it
    /// has one, else the model's.
    pub(crate) fn estimate(&self, c: &Candidate) -> Duration {
        match c.cached {
            Some(k) => k.cost,
            None => {
                self.per_map
                    + Duration::from_nanos((self.per_slot_ns * c.max_entries as f64) as u64)
            }
        }
    }

    /// The part of a map's estimated cost that grows with its size: what
    /// decides whether it can ever fit in a budget (the fixed part is the
    /// same for every map, and one slow walk must not make every map look
    /// too costly).
    pub(crate) fn size_cost(&self, max_entries: u32) -> Duration {
        Duration::from_nanos((self.per_slot_ns * max_entries as f64) as u64)
    }

    /// Learn from one measured walk: a costlier walk than the model
    /// expects moves it half way at once, cheaper ones lower it by a fifth
    /// (exponentially weighted), so estimates err on the side of the budget
    /// and recover within a few walks from one slow (preempted) walk.
    pub(crate) fn learn(&mut self, max_entries: u32, took: Duration) {
        let blend = |old: f64, new: f64| {
            if new > old {
                old + (new - old) * 0.5
            } else {
                old * 0.8 + new * 0.2
            }
        };
        if max_entries <= 1024 {
            let p = blend(self.per_map.as_secs_f64(), took.as_secs_f64());
            self.per_map = Duration::from_secs_f64(p);
        } else {
            let slots = took.saturating_sub(self.per_map).as_nanos() as f64 / max_entries as f64;
            self.per_slot_ns = blend(self.per_slot_ns, slots);
        }
    }
}
