//! Live element counts of maps the kernel does not count for the census.
//!
//! From 6.6 the census iterator reads `bpf_map_sum_elem_count` for the hash
//! family (hash, percpu_hash, lru_hash, lru_percpu_hash, hash_of_maps): exact
//! and free, and the default there. Every other map that holds a variable
//! number of elements is counted here, per map, by the cheapest walk the
//! kernel accepts for its type:
//! - `iter`: an `iter/bpf_map_elem` walk in the kernel (hash, percpu_hash,
//!   lru_hash, lru_percpu_hash; the only types that iterator accepts);
//! - `next_key`: BPF_MAP_GET_NEXT_KEY from user space (hash_of_maps,
//!   lpm_trie, sockhash, devmap_hash and types newer than this build);
//! - `none`: the kernel cannot enumerate them (local storage, arena).
//!
//! Walks cost time in proportion to the map's size, so each scrape spends at
//! most a budget on them: maps never counted first, then the fullest (by
//! their last count), each only when its estimated cost fits in what is
//! left; every other map keeps its last count, published with its age.
//!
//! [`Counter::run`] takes each scrape's counts: the kept counts come from
//! [`cache`], the refresh order from [`plan`] (pure), each walk's estimated
//! cost from [`cost`], and the walks themselves from [`walks`].
mod cache;
mod candidate;
mod cost;
mod plan;
mod walks;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::names::{counts_elements, MapType};
use super::{IdMap, MapRecord};
use cache::{Cache, Cached};
use candidate::Candidate;
pub use candidate::Method;
use cost::CostModel;
use plan::{plan, Scratch};
pub(crate) use walks::{Walker, Walks};

/// Whether a count came from this scrape, an earlier one, or nowhere yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Fresh,
    Cached,
    Missing,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Fresh => "fresh",
            State::Cached => "cached",
            State::Missing => "missing",
        }
    }
}

/// `--collector.entries.method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Choice {
    /// The kfunc where the kernel has it (6.6+), iteration elsewhere.
    #[default]
    Auto,
    /// Iteration for every map, even where the kfunc exists (to compare).
    Iterate,
}

/// `--collector.entries.budget`: how long each scrape may walk maps to
/// count their elements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// A fixed time per scrape.
    Time(Duration),
    /// A share in (0, 1] of the time the census took before counting began,
    /// so that counting adds at most that share to the census.
    Share(f64),
}

/// The default budget: counting adds at most a fifth to the census.
pub const DEFAULT_BUDGET: Budget = Budget::Share(0.2);

impl Budget {
    /// `20%` (a share of the census) or a duration (`50ms`, `1s`).
    pub fn parse(s: &str) -> Result<Budget, String> {
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| {
                format!("{s:?} is not a percentage: use a number and %, for example 20%, or a duration such as 50ms")
            })?;
            if !(v > 0.0 && v <= 100.0) {
                return Err(format!(
                    "{s:?}: a share of the census must be above 0% and at most 100%"
                ));
            }
            return Ok(Budget::Share(v / 100.0));
        }
        crate::units::parse_duration(s)
            .map(Budget::Time)
            .map_err(|e| format!("{e}; or a share of the census's own time, for example 20%"))
    }

    /// The budget of a scrape whose census took `census` before counting.
    pub fn resolve(self, census: Duration) -> Duration {
        match self {
            Budget::Time(d) => d,
            Budget::Share(f) => census.mul_f64(f),
        }
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Time(d) => write!(f, "{}ms", d.as_millis()),
            Budget::Share(s) => write!(f, "{}%", s * 100.0),
        }
    }
}

/// Map types whose elements the hash-family kfunc counts (the maps whose
/// `elem_count` htab_map_alloc sets up); it reads 0 for every other type.
pub(crate) fn kfunc_counts(t: u32) -> bool {
    use MapType::*;
    matches!(
        MapType::from_raw(t),
        Some(Hash | PercpuHash | LruHash | LruPercpuHash | HashOfMaps)
    )
}

/// What the kernel offers for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kernel {
    /// bpf_map_sum_elem_count in the census iterator (6.6+).
    pub kfunc: bool,
    /// iter/bpf_map_elem loaded.
    pub elem_iter: bool,
}

/// How the elements of a map of type `t` are counted, or None for types
/// with a fixed number of slots (arrays and the like: no element count).
fn method_for(t: u32, k: Kernel, choice: Choice) -> Option<Method> {
    let m = method_for_type(t, k.kfunc, choice)?;
    Some(match m {
        Method::Iter if !k.elem_iter => Method::NextKey,
        m => m,
    })
}

fn method_for_type(t: u32, kfunc: bool, choice: Choice) -> Option<Method> {
    use MapType::*;
    if !counts_elements(t) {
        return None;
    }
    if kfunc && choice == Choice::Auto && kfunc_counts(t) {
        return Some(Method::Kfunc);
    }
    Some(match MapType::from_raw(t) {
        Some(Hash | PercpuHash | LruHash | LruPercpuHash) => Method::Iter,
        Some(SkStorage | InodeStorage | TaskStorage | CgrpStorage | Arena) => Method::None,
        _ => Method::NextKey,
    })
}

/// What one map's count is this scrape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CountInfo {
    pub method: Method,
    pub state: State,
    /// Age of the count in seconds (0 when taken this scrape); None for the
    /// kfunc (read by the census itself) and for missing counts.
    pub age_seconds: Option<f64>,
}

/// The node-level summary of one scrape's counting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Maps by (method, state).
    pub maps: BTreeMap<(Method, State), u64>,
    /// Walks that failed this scrape (the map then keeps its last count).
    pub errors: u64,
    /// Walks that failed since the exporter started.
    pub errors_total: u64,
    /// Maps whose walk costs more than the whole budget: never counted
    /// (estimated from their size, or stopped at the budget's end when
    /// theirs was the first walk of a scrape).
    pub over_budget: u64,
    /// Walks stopped at the end of the budget this scrape (the map keeps
    /// its last count), and since the exporter started.
    pub stopped: u64,
    pub stopped_total: u64,
    /// Time spent walking this scrape, and the budget.
    pub spent: Duration,
    pub budget: Duration,
    /// Age of the oldest count served this scrape.
    pub oldest_seconds: f64,
}

/// The counts kept between scrapes.
pub(crate) struct Counter {
    pub(crate) choice: Choice,
    pub(crate) budget: Budget,
    /// The last count of each map the census still sees.
    cache: Cache,
    /// The candidates, their walks and the plan's buffers, kept between
    /// scrapes (see [`Scratch`]).
    cands: Vec<Candidate>,
    fresh: Vec<bool>,
    scratch: Scratch,
    /// Maps the kernel refused to walk (by id; ids are not reused).
    refused: IdMap<()>,
    /// Maps whose walk was stopped at the end of a whole budget: the time it
    /// had (a lower bound of its cost), and when. Such a map is over budget
    /// while the budget is no larger, for [`STOPPED_RETRY`].
    stopped: IdMap<(Duration, Instant)>,
    model: CostModel,
    errors_total: u64,
    stopped_total: u64,
    /// What the last scrape's counting cost besides its walks (planning,
    /// the cache, publishing every map's count): kept out of the walks'
    /// share of the budget, so that the whole of counting fits in it.
    overhead: Duration,
}

/// How long a map whose walk outlasted a whole budget is left alone before
/// it is tried again (the walk may have been slow only that once).
pub(crate) const STOPPED_RETRY: Duration = Duration::from_secs(300);

impl Counter {
    pub(crate) fn new(choice: Choice, budget: Budget) -> Counter {
        Counter {
            choice,
            budget,
            cache: Cache::default(),
            cands: Vec::new(),
            fresh: Vec::new(),
            scratch: Scratch::default(),
            refused: IdMap::default(),
            stopped: IdMap::default(),
            model: CostModel::default(),
            errors_total: 0,
            stopped_total: 0,
            overhead: Duration::ZERO,
        }
    }

    /// Fill `elem_count` of every map that has an element count, within the
    /// budget, and say how each was obtained. With `kernel.kfunc` the
    /// census iterator read the kfunc (its counts of other types are
    /// dropped: it reads 0 for them). `census` is the time the census
    /// took before counting began (what a share budget is a share of).
    pub(crate) fn run(
        &mut self,
        maps: &mut [MapRecord],
        kernel: Kernel,
        walker: &mut dyn Walker,
        census: Duration,
    ) -> (IdMap<CountInfo>, Summary) {
        let began = walker.now();
        let budget = self.budget.resolve(census);
        let mut info: IdMap<CountInfo> =
            IdMap::with_capacity_and_hasher(maps.len(), Default::default());
        let mut summary = Summary {
            budget,
            ..Default::default()
        };
        self.cache.begin_scrape();
        let mut cands = std::mem::take(&mut self.cands);
        cands.clear();
        for (i, m) in maps.iter_mut().enumerate() {
            let Some(method) = method_for(m.map_type, kernel, self.choice) else {
                m.elem_count = None;
                continue;
            };
            match method {
                Method::Kfunc => {
                    if m.elem_count.is_some() {
                        info.insert(
                            m.id,
                            CountInfo {
                                method,
                                state: State::Fresh,
                                age_seconds: None,
                            },
                        );
                    }
                    continue;
                }
                Method::None => {
                    m.elem_count = None;
                    info.insert(
                        m.id,
                        CountInfo {
                            method,
                            state: State::Missing,
                            age_seconds: None,
                        },
                    );
                    continue;
                }
                _ => {}
            }
            m.elem_count = None;
            if self.refused.contains_key(&m.id) {
                info.insert(
                    m.id,
                    CountInfo {
                        method: Method::None,
                        state: State::Missing,
                        age_seconds: None,
                    },
                );
                continue;
            }
            let cached = self.cache.get(m.id);
            cands.push(Candidate {
                id: m.id,
                max_entries: m.max_entries,
                cached,
                idx: i,
                method,
            });
        }
        self.cache.forget_unseen();
        if !self.refused.is_empty() || !self.stopped.is_empty() {
            let live: IdMap<()> = maps.iter().map(|m| (m.id, ())).collect();
            self.refused.retain(|id, _| live.contains_key(id));
            let now = walker.now();
            self.stopped.retain(|id, (_, at)| {
                live.contains_key(id) && now.duration_since(*at) < STOPPED_RETRY
            });
        }
        plan(&mut cands, &self.model, &mut self.scratch);
        // The walks get the budget less the rest of counting: as the last
        // scrape measured it, and at least twice what came before the walks
        // in this one (what follows them visits each candidate once, as what
        // came before did besides sorting them). The first walk of a scrape
        // is always tried.
        let start = walker.now();
        let rest = self.overhead.max(2 * start.duration_since(began));
        let walk_budget = budget.saturating_sub(rest);
        let deadline = start + walk_budget;
        let mut fresh = std::mem::take(&mut self.fresh);
        fresh.clear();
        fresh.resize(cands.len(), false);
        let mut walked = false;
        // The clock is read around walks only: between walks it stands
        // still, and on some clocksources (a VM's HPET) each read is a
        // syscall.
        let mut now = start;
        // Never-counted maps come cheapest first, so every walk before one
        // of them was of a map no larger: the slowest of those walks is a
        // floor of the next one's cost, where the model has not learned
        // enough yet, and it covers the walks' jitter (the last walk alone
        // may have been a fast one).
        let mut slowest = Duration::ZERO;
        for k in 0..cands.len() {
            let c = cands[k];
            let outlasted = self
                .stopped
                .get(&c.id)
                .is_some_and(|(had, _)| budget <= *had);
            if outlasted || self.model.size_cost(c.max_entries) > budget {
                summary.over_budget += 1;
                continue;
            }
            // The first walk of a scrape is always tried (stopped at the
            // deadline if it runs long), so that one slow walk cannot make
            // every map look too costly for good.
            let est = match c.cached {
                Some(_) => self.model.estimate(&c),
                None => self.model.estimate(&c).max(slowest),
            };
            if walked && (now >= deadline || now.duration_since(start) + est > walk_budget) {
                continue; // served from cache (or missing) this scrape
            }
            let first = !walked;
            walked = true;
            let m = &maps[c.idx];
            let t0 = now;
            let walk = walker.count(m, c.method, deadline);
            now = walker.now();
            slowest = slowest.max(now.duration_since(t0));
            match walk {
                Ok(None) => {
                    summary.stopped += 1;
                    if first {
                        let had = now.duration_since(t0);
                        self.stopped.insert(c.id, (had, now));
                    }
                }
                Ok(Some(n)) => {
                    self.stopped.remove(&c.id);
                    let took = now.duration_since(t0);
                    self.model.learn(m.max_entries, took);
                    let k_new = Cached {
                        count: n,
                        at: now,
                        cost: took,
                    };
                    self.cache.insert(c.id, k_new);
                    cands[k].cached = Some(k_new);
                    fresh[k] = true;
                }
                Err(e) => {
                    let errno = e
                        .downcast_ref::<std::io::Error>()
                        .and_then(|e| e.raw_os_error());
                    if errno == Some(libc::ENOENT) {
                        continue; // freed since the census: not a failure
                    }
                    summary.errors += 1;
                    let refused = errno.is_some_and(|c| {
                        matches!(c, libc::EOPNOTSUPP | libc::EINVAL | 524 /* ENOTSUPP */)
                    });
                    if refused {
                        self.refused.insert(c.id, ());
                    }
                    tracing::debug!(id = c.id, error = %format!("{e:#}"), "element count walk failed");
                }
            }
        }
        summary.spent = walker.now().duration_since(start);
        self.errors_total += summary.errors;
        summary.errors_total = self.errors_total;
        self.stopped_total += summary.stopped;
        summary.stopped_total = self.stopped_total;
        let now = walker.now();
        for (c, &fresh) in cands.iter().zip(&fresh) {
            let m = &mut maps[c.idx];
            let method = c.method;
            let (state, age) = match c.cached {
                Some(k) if fresh => {
                    m.elem_count = Some(k.count as i64);
                    (State::Fresh, Some(0.0))
                }
                Some(k) => {
                    m.elem_count = Some(k.count as i64);
                    (State::Cached, Some(now.duration_since(k.at).as_secs_f64()))
                }
                None => (State::Missing, None),
            };
            if let Some(a) = age {
                summary.oldest_seconds = summary.oldest_seconds.max(a);
            }
            info.insert(
                c.id,
                CountInfo {
                    method,
                    state,
                    age_seconds: age,
                },
            );
        }
        for i in info.values() {
            *summary.maps.entry((i.method, i.state)).or_default() += 1;
        }
        self.cands = cands;
        self.fresh = fresh;
        self.overhead = walker
            .now()
            .duration_since(began)
            .saturating_sub(summary.spent);
        (info, summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::census::testutil::map_record;

    fn rec(id: u32, t: MapType, max: u32) -> MapRecord {
        MapRecord {
            map_type: t as u32,
            max_entries: max,
            name: String::new(),
            ..map_record(id)
        }
    }

    /// Counts each map as `id * 10`, taking `sleep(id)` of simulated time
    /// on its own clock, and records the order.
    struct Fake {
        order: Vec<u32>,
        sleep: fn(u32) -> Duration,
        fail: Option<(u32, i32)>,
        clock: Instant,
        /// Walks that cannot be stopped (one bpf() call each).
        whole: bool,
    }

    fn fake(sleep: fn(u32) -> Duration, fail: Option<(u32, i32)>) -> Fake {
        Fake {
            order: vec![],
            sleep,
            fail,
            clock: Instant::now(),
            whole: false,
        }
    }

    impl Walker for Fake {
        /// A walk that would pass the deadline stops exactly at it.
        fn count(
            &mut self,
            m: &MapRecord,
            _: Method,
            deadline: Instant,
        ) -> anyhow::Result<Option<u64>> {
            self.order.push(m.id);
            if let Some((id, errno)) = self.fail {
                if id == m.id {
                    return Err(std::io::Error::from_raw_os_error(errno).into());
                }
            }
            self.clock += (self.sleep)(m.id);
            if self.clock > deadline && !self.whole {
                self.clock = deadline;
                return Ok(None);
            }
            Ok(Some(m.id as u64 * 10))
        }

        fn now(&self) -> Instant {
            self.clock
        }
    }

    const OLD: Kernel = Kernel {
        kfunc: false,
        elem_iter: true,
    };
    const NEW: Kernel = Kernel {
        kfunc: true,
        elem_iter: true,
    };

    #[test]
    fn methods_by_type_and_kernel() {
        let t = |m: MapType| m as u32;
        let (old, new) = (OLD, NEW);
        let no_iter = Kernel {
            kfunc: false,
            elem_iter: false,
        };
        assert_eq!(
            method_for(t(MapType::LruHash), no_iter, Choice::Auto),
            Some(Method::NextKey)
        );
        assert_eq!(method_for(t(MapType::Array), old, Choice::Auto), None);
        assert_eq!(method_for(t(MapType::Array), new, Choice::Auto), None);
        for h in [
            MapType::Hash,
            MapType::PercpuHash,
            MapType::LruHash,
            MapType::LruPercpuHash,
        ] {
            assert_eq!(method_for(t(h), new, Choice::Auto), Some(Method::Kfunc));
            assert_eq!(method_for(t(h), old, Choice::Auto), Some(Method::Iter));
            assert_eq!(method_for(t(h), new, Choice::Iterate), Some(Method::Iter));
        }
        // The kfunc counts hash_of_maps; iter/bpf_map_elem refuses it.
        assert_eq!(
            method_for(t(MapType::HashOfMaps), new, Choice::Auto),
            Some(Method::Kfunc)
        );
        assert_eq!(
            method_for(t(MapType::HashOfMaps), old, Choice::Auto),
            Some(Method::NextKey)
        );
        // The kfunc reads 0 for tries: walked even where it exists.
        assert_eq!(
            method_for(t(MapType::LpmTrie), new, Choice::Auto),
            Some(Method::NextKey)
        );
        assert_eq!(
            method_for(t(MapType::TaskStorage), old, Choice::Auto),
            Some(Method::None)
        );
    }

    #[test]
    fn budget_bounds_the_walks_and_the_rest_come_from_cache_with_age() {
        let mut maps: Vec<MapRecord> = (1..=20).map(|i| rec(i, MapType::Hash, 64)).collect();
        maps.push(rec(21, MapType::Array, 64));
        let mut counter = Counter::new(Choice::Auto, Budget::Time(Duration::from_millis(30)));
        let mut w = fake(|_| Duration::from_millis(5), None);
        let (info, s) = counter.run(&mut maps, OLD, &mut w, Duration::ZERO);
        assert!(s.spent <= Duration::from_millis(30), "{:?}", s.spent);
        // The first walk teaches the model most of its 5 ms; walks stop
        // when the next would pass 30 ms: 6 walks, 30 ms.
        let first = w.order.len();
        assert_eq!(first, 6, "walked {:?}", w.order);
        assert_eq!(s.spent, Duration::from_millis(30));
        assert_eq!(s.maps[&(Method::Iter, State::Fresh)], first as u64);
        assert_eq!(s.maps[&(Method::Iter, State::Missing)], 20 - first as u64);
        assert!(!info.contains_key(&21), "arrays have no element count");
        assert_eq!(maps[20].elem_count, None);
        for m in &maps[..20] {
            let i = info[&m.id];
            match i.state {
                State::Fresh => assert_eq!(m.elem_count, Some(m.id as i64 * 10)),
                State::Missing => assert_eq!(m.elem_count, None),
                State::Cached => panic!("nothing cached yet"),
            }
        }
        // Later scrapes count the rest; the earlier counts are served from
        // the cache with their age.
        w.clock += Duration::from_millis(20);
        w.order.clear();
        let (info, s) = counter.run(&mut maps, OLD, &mut w, Duration::ZERO);
        // Never counted first (7..=11); then 12's estimate (just over 5 ms)
        // no longer fits in the 5 ms left, but 6's measured 5 ms does.
        assert_eq!(
            w.order,
            vec![7, 8, 9, 10, 11, 6],
            "never counted first: {:?}",
            w.order
        );
        assert_eq!(s.maps[&(Method::Iter, State::Fresh)], 6);
        assert_eq!(s.maps[&(Method::Iter, State::Cached)], 5);
        assert_eq!(s.maps[&(Method::Iter, State::Missing)], 9);
        let cached = maps
            .iter()
            .find(|m| info.get(&m.id).map(|i| i.state) == Some(State::Cached))
            .unwrap();
        assert_eq!(cached.elem_count, Some(cached.id as i64 * 10));
        assert!(info[&cached.id].age_seconds.unwrap() >= 0.02);
        assert!(s.oldest_seconds >= 0.02);
        assert!(s.spent <= Duration::from_millis(30), "{:?}", s.spent);
    }

    #[test]
    fn a_walk_longer_than_the_budget_stops_at_its_end_and_the_map_is_over_budget() {
        let mut maps: Vec<MapRecord> = (1..=3).map(|i| rec(i, MapType::Hash, 64)).collect();
        let mut counter = Counter::new(Choice::Auto, Budget::Time(Duration::from_millis(1)));
        let mut w = fake(|_| Duration::from_millis(4), None);
        for n in 1..=3u64 {
            w.order.clear();
            let (_, s) = counter.run(&mut maps, OLD, &mut w, Duration::ZERO);
            // One new map tried per scrape, stopped at the budget's end;
            // the ones stopped before are over budget, not retried.
            assert_eq!(w.order, vec![n as u32], "scrape {n}");
            assert_eq!(s.spent, Duration::from_millis(1), "scrape {n}");
            assert_eq!((s.stopped, s.stopped_total), (1, n), "scrape {n}");
            assert_eq!(s.over_budget, n - 1, "scrape {n}");
        }
        assert!(maps.iter().all(|m| m.elem_count.is_none()));
        // A larger budget tries them again, and so does time.
        counter.budget = Budget::Time(Duration::from_millis(20));
        w.order.clear();
        let (_, s) = counter.run(&mut maps, OLD, &mut w, Duration::ZERO);
        assert_eq!(w.order, vec![1, 2, 3]);
        assert_eq!((s.stopped, s.over_budget), (0, 0));
        assert!(maps.iter().all(|m| m.elem_count.is_some()));

        let mut maps = vec![rec(1, MapType::Hash, 64)];
        let mut counter = Counter::new(Choice::Auto, Budget::Time(Duration::from_millis(1)));
        let (_, s) = counter.run(&mut maps, OLD, &mut w, Duration::ZERO);
        assert_eq!(s.stopped, 1);
        w.clock += STOPPED_RETRY - Duration::from_secs(1);
        w.order.clear();
        let (_, s) = counter.run(&mut maps, OLD, &mut w, Duration::ZERO);
        assert_eq!((w.order.len(), s.over_budget), (0, 1));
        w.clock += Duration::from_secs(2);
        let (_, s) = counter.run(&mut maps, OLD, &mut w, Duration::ZERO);
        assert_eq!((w.order, s.stopped), (vec![1], 1), "tried again");
    }

    #[test]
    fn a_first_scrape_of_walks_costlier_than_the_model_stays_within_its_budget() {
        // Walks of 3 ms that cannot be stopped, against a model that starts
        // at about 1 ms a map: the estimate of each next never-counted map
        // is at least the last walk's cost, so no walk starts that would
        // pass the budget.
        for budget_us in (3000..=40_000u64).step_by(250) {
            let mut maps: Vec<MapRecord> = (1..=50).map(|i| rec(i, MapType::Hash, 64)).collect();
            let budget = Duration::from_micros(budget_us);
            let mut counter = Counter::new(Choice::Auto, Budget::Time(budget));
            let mut w = fake(|_| Duration::from_millis(3), None);
            w.whole = true;
            let (_, s) = counter.run(&mut maps, OLD, &mut w, Duration::ZERO);
            assert!(s.spent <= budget, "budget {budget:?}: spent {:?}", s.spent);
            // And the budget is used: at most one walk fewer than fit.
            let n = w.order.len() as u64;
            assert!(n + 1 >= budget_us / 3000, "budget {budget:?}: {n} walks");
        }
    }

    #[test]
    fn a_first_scrape_of_walks_that_vary_stays_within_its_budget() {
        // Unstoppable walks of 1.5 ms, every fifth 3 ms (one map's walk
        // preempted): after the first slow walk, no never-counted map is
        // estimated below it, so the walk after a fast one cannot pass the
        // budget. (Before any slow walk has been seen nothing can know it:
        // budgets from the end of the first one on.)
        fn jitter(id: u32) -> Duration {
            Duration::from_micros(if id % 5 == 0 { 3000 } else { 1500 })
        }
        for budget_us in (9000..=60_000u64).step_by(100) {
            let mut maps: Vec<MapRecord> = (1..=60).map(|i| rec(i, MapType::Hash, 64)).collect();
            let budget = Duration::from_micros(budget_us);
            let mut counter = Counter::new(Choice::Auto, Budget::Time(budget));
            let mut w = fake(jitter, None);
            w.whole = true;
            let (_, s) = counter.run(&mut maps, OLD, &mut w, Duration::ZERO);
            assert!(s.spent <= budget, "budget {budget:?}: spent {:?}", s.spent);
            // The budget is still used: no more than 3 ms of it left over.
            assert!(
                s.spent + Duration::from_millis(3) >= budget,
                "budget {budget:?}: spent {:?} in {} walks",
                s.spent,
                w.order.len()
            );
        }
    }

    #[test]
    fn a_share_budget_is_that_share_of_the_census() {
        let mut maps: Vec<MapRecord> = (1..=100).map(|i| rec(i, MapType::Hash, 64)).collect();
        let mut counter = Counter::new(Choice::Auto, Budget::Share(0.2));
        let mut w = fake(|_| Duration::from_millis(1), None);
        let (_, s) = counter.run(&mut maps, OLD, &mut w, Duration::from_millis(100));
        assert_eq!(s.budget, Duration::from_millis(20));
        assert!(s.spent <= s.budget, "{:?}", s.spent);
        assert!((15..=20).contains(&w.order.len()), "{:?}", w.order);
        // A slower census leaves more time.
        w.order.clear();
        let (_, s) = counter.run(&mut maps, OLD, &mut w, Duration::from_millis(200));
        assert_eq!(s.budget, Duration::from_millis(40));
        assert!(s.spent <= s.budget, "{:?}", s.spent);
        assert!(w.order.len() >= 35, "{:?}", w.order);
    }

    #[test]
    fn the_fullest_map_is_refreshed_every_scrape_and_no_map_starves() {
        // The walker counts id*10 of 100 slots: map 10 is the fullest
        // (100%), map 1 the emptiest (10%). Two walks fit a scrape.
        let mut maps: Vec<MapRecord> = (1..=10).map(|i| rec(i, MapType::Hash, 100)).collect();
        let mut counter = Counter::new(Choice::Auto, Budget::Time(Duration::from_secs(1)));
        let mut w = fake(|_| Duration::from_millis(5), None);
        counter.run(&mut maps, OLD, &mut w, Duration::ZERO); // count them all once
        counter.budget = Budget::Time(Duration::from_millis(10));
        let mut last_seen: IdMap<u32> = IdMap::default();
        for scrape in 1..=9u32 {
            w.clock += Duration::from_secs(1);
            w.order.clear();
            let (_, s) = counter.run(&mut maps, OLD, &mut w, Duration::ZERO);
            assert!(s.spent <= Duration::from_millis(10));
            assert_eq!(w.order.len(), 2, "scrape {scrape}: {:?}", w.order);
            assert_eq!(w.order[0], 10, "the fullest first, scrape {scrape}");
            for id in &w.order {
                last_seen.insert(*id, scrape);
            }
        }
        // The nine others share one walk a scrape, oldest count first: each
        // within nine scrapes, however much fuller map 10 is.
        for id in 1..=9 {
            assert_eq!(last_seen.get(&id), Some(&id), "map {id}: {last_seen:?}");
        }
    }

    #[test]
    fn a_map_costlier_than_the_whole_budget_is_never_walked_and_says_so() {
        let mut maps = vec![rec(1, MapType::Hash, 64), rec(2, MapType::Hash, 4_000_000)];
        let mut counter = Counter::new(Choice::Auto, Budget::Time(Duration::from_millis(10)));
        let mut w = fake(|_| Duration::ZERO, None);
        // Default model: 50 ns a slot, 4M slots = 200 ms > 10 ms.
        let (info, s) = counter.run(&mut maps, OLD, &mut w, Duration::ZERO);
        assert_eq!(w.order, vec![1]);
        assert_eq!(s.over_budget, 1);
        assert_eq!(info[&2].state, State::Missing);
        assert_eq!(maps[1].elem_count, None);
    }

    #[test]
    fn kfunc_counts_are_kept_and_other_types_walked() {
        let mut maps = vec![rec(1, MapType::Hash, 64), rec(2, MapType::LpmTrie, 64)];
        maps[0].elem_count = Some(7);
        maps[1].elem_count = Some(0); // what the kfunc reads for a trie
        let mut counter = Counter::new(Choice::Auto, Budget::Time(Duration::from_millis(50)));
        let mut w = fake(|_| Duration::ZERO, None);
        let (info, s) = counter.run(&mut maps, NEW, &mut w, Duration::ZERO);
        assert_eq!(w.order, vec![2]);
        assert_eq!(maps[0].elem_count, Some(7));
        assert_eq!(maps[1].elem_count, Some(20));
        assert_eq!(info[&1].method, Method::Kfunc);
        assert_eq!(info[&2].method, Method::NextKey);
        assert_eq!(s.maps[&(Method::Kfunc, State::Fresh)], 1);
    }

    #[test]
    fn a_map_freed_since_the_census_is_no_walk_error() {
        let mut maps = vec![rec(1, MapType::Hash, 64)];
        let mut counter = Counter::new(Choice::Auto, Budget::Time(Duration::from_millis(50)));
        let mut w = fake(|_| Duration::ZERO, Some((1, libc::ENOENT)));
        let (info, s) = counter.run(&mut maps, OLD, &mut w, Duration::ZERO);
        assert_eq!((s.errors, s.errors_total), (0, 0));
        assert_eq!(info[&1].state, State::Missing);
    }

    #[test]
    fn a_refused_walk_is_not_retried_and_reads_none() {
        let mut maps = vec![rec(1, MapType::Sockhash, 64)];
        let mut counter = Counter::new(Choice::Auto, Budget::Time(Duration::from_millis(50)));
        let mut w = fake(|_| Duration::ZERO, Some((1, libc::EOPNOTSUPP)));
        let (_, s) = counter.run(&mut maps, OLD, &mut w, Duration::ZERO);
        assert_eq!(s.errors, 1);
        let (info, s) = counter.run(&mut maps, OLD, &mut w, Duration::ZERO);
        assert_eq!(w.order, vec![1], "not walked again");
        assert_eq!(s.errors, 0);
        assert_eq!(info[&1].method, Method::None);
    }
}
