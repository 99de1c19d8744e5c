//! The planner: the order in which one scrape refreshes the maps' counts
//! (the walks then go down it while their estimated costs fit the budget).
use super::candidate::Candidate;
use super::cost::CostModel;

/// Buffers of [`plan`] kept between scrapes: a scrape then allocates no
/// per-map memory for planning (each fresh allocation is page faults, which
/// dominate under emulation).
#[derive(Default)]
pub(crate) struct Scratch {
    counted: Vec<Candidate>,
    keys: Vec<(u64, u64, u32)>,
    by_fill: Vec<u32>,
    by_age: Vec<u32>,
    taken: Vec<bool>,
}

/// The refresh order of one scrape: maps never counted first (cheapest
/// first, so one huge map does not hold back many small ones), then the
/// counted maps alternately by fill (last count / max_entries, descending)
/// and by the age of their count (oldest first), each map once. The fullest
/// map is refreshed every scrape with room for a walk after the
/// never-counted maps, and no map waits for more than about twice as many
/// scrapes as it takes the budget to walk every map, however full the
/// others are. Ties go to the older count, then the lower id. Pure; `x`
/// holds the buffers, kept by the caller between scrapes.
pub(crate) fn plan(cands: &mut Vec<Candidate>, model: &CostModel, x: &mut Scratch) {
    x.counted.clear();
    x.counted
        .extend(cands.iter().filter(|c| c.cached.is_some()));
    cands.retain(|c| c.cached.is_none());
    cands.sort_unstable_by_key(|c| (model.estimate(c).as_nanos(), c.id));
    let counted = &x.counted;
    // Sort keys as plain integers, computed once per map: the fill in
    // millionths (descending), the age of the count against the newest
    // count (oldest first), the id.
    let newest = counted.iter().filter_map(|c| c.cached.map(|k| k.at)).max();
    let key = |c: &Candidate| {
        let k = c.cached.expect("counted");
        let fill = k.count.saturating_mul(1_000_000) / c.max_entries.max(1) as u64;
        let age = newest.map_or(0, |n| n.saturating_duration_since(k.at).as_nanos() as u64);
        (u64::MAX - fill, u64::MAX - age, c.id)
    };
    x.keys.clear();
    x.keys.extend(counted.iter().map(key));
    let keys = &x.keys;
    // Both orders as positions into `counted` (ids are unique, so the
    // unstable sorts are deterministic).
    x.by_fill.clear();
    x.by_fill.extend(0..counted.len() as u32);
    x.by_age.clear();
    x.by_age.extend(0..counted.len() as u32);
    x.by_fill.sort_unstable_by_key(|&j| keys[j as usize]);
    x.by_age.sort_unstable_by_key(|&j| {
        let (_, age, id) = keys[j as usize];
        (age, id)
    });
    x.taken.clear();
    x.taken.resize(counted.len(), false);
    let taken = &mut x.taken;
    let (mut fills, mut ages) = (x.by_fill.iter(), x.by_age.iter());
    loop {
        let mut any = false;
        for list in [&mut fills, &mut ages] {
            if let Some(&j) = list.find(|&&j| !taken[j as usize]) {
                taken[j as usize] = true;
                cands.push(counted[j as usize]);
                any = true;
            }
        }
        if !any {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::census::entries::cache::Cached;
    use crate::census::entries::Method;

    #[test]
    fn never_counted_first_cheapest_first_then_fullest() {
        let now = Instant::now();
        let cached = |count, secs| {
            Some(Cached {
                count,
                at: now - Duration::from_secs(secs),
                cost: Duration::from_micros(10),
            })
        };
        let mut c = vec![
            Candidate {
                id: 1,
                max_entries: 100,
                cached: cached(10, 1), // 10%
                idx: 0,
                method: Method::Iter,
            },
            Candidate {
                id: 2,
                max_entries: 1_000_000,
                cached: None,
                idx: 0,
                method: Method::Iter,
            },
            Candidate {
                id: 3,
                max_entries: 100,
                cached: cached(95, 1), // 95%
                idx: 0,
                method: Method::Iter,
            },
            Candidate {
                id: 4,
                max_entries: 64,
                cached: None,
                idx: 0,
                method: Method::Iter,
            },
            Candidate {
                id: 5,
                max_entries: 100,
                cached: cached(10, 9), // 10%, older than 1
                idx: 0,
                method: Method::Iter,
            },
        ];
        plan(&mut c, &CostModel::default(), &mut Scratch::default());
        let ids: Vec<u32> = c.iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![4, 2, 3, 5, 1]);
    }
}
