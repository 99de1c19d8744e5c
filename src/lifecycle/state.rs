//! Pure lifecycle state: destructions found by diffing map ids against the
//! census, the lifetime histogram, and folding label sets under the
//! cardinality cap. No I/O: every input is passed in, so all of it is
//! unit-tested without root.
use std::collections::{BTreeMap, HashSet};

use crate::bpf::lifecycle::records::{CreateRec, Kind, ProcKey};

/// Upper bounds (seconds) of `bpfmap_map_lifetime_seconds`.
pub const LIFETIME_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 3600.0, 21600.0, 86400.0,
];

/// A histogram with fixed bounds (non-cumulative counts, `+Inf` last).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hist {
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Hist {
    pub fn observe(&mut self, v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; LIFETIME_BUCKETS.len() + 1];
        }
        let i = LIFETIME_BUCKETS
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(LIFETIME_BUCKETS.len());
        self.counts[i] += 1;
        self.count += 1;
        self.sum += v;
    }

    /// Cumulative `(upper bound, count)` pairs without `+Inf` (the encoder
    /// adds it from `count`).
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        LIFETIME_BUCKETS
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                acc += self.counts.get(i).copied().unwrap_or(0);
                (b, acc)
            })
            .collect()
    }
}

/// What slot `id % RING` of the creation records held for an id.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// The record of exactly this id.
    Valid(CreateRec),
    /// A newer id's record: this id's record was overwritten (lost).
    Overwritten,
    /// Nothing for this id (never recorded, or an id that was never used).
    Empty,
}

/// Why the creator of a map that was created while the probes ran is not
/// known (the `reason` label of `bpfmap_lifecycle_events_lost_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unattributed {
    /// Its creation record slot held a newer map's record when a scrape
    /// first looked: more than `RING` creations between two scrapes.
    RecordOverwritten,
    /// No creation record at all: created by a path the probes do not
    /// see, or a creation whose map the probe could not read.
    NotRecorded,
}

impl Unattributed {
    pub fn as_str(self) -> &'static str {
        match self {
            Unattributed::RecordOverwritten => "record_overwritten",
            Unattributed::NotRecorded => "not_recorded",
        }
    }
}

/// A live map we track: who created it (None = before the exporter
/// started, or unattributed: see `unattributed`), its type and birth time.
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    pub creator: Option<ProcKey>,
    /// Why `creator` is None for a map created while the probes ran (None
    /// for maps that existed before): its destruction counts as lost, not
    /// as destroyed by `comm="unknown"`.
    pub unattributed: Option<Unattributed>,
    /// No record was found when the census first saw the map: looked up
    /// once more at the next scrape (the census can see a new map before
    /// the probe that records it has run).
    pub recheck: bool,
    /// The creating process's tgid (0 when unknown), kept apart from
    /// `creator` (whose tgid is 0 unless the pid label is on, so label sets
    /// stay bounded): per-map data only, never a label.
    pub pid: u32,
    pub map_type: u32,
    pub create_ns: Option<u64>,
    /// Kernel address of the map (0 when unknown): the key of the
    /// destruction time a probe on bpf_map_free_deferred records.
    pub map_ptr: u64,
}

/// One destruction found in a scrape (for `--log.map-events`).
#[derive(Debug, Clone, PartialEq)]
pub struct Destroyed {
    pub id: u32,
    /// None when the map type is unknown (its record was overwritten).
    pub map_type: Option<u32>,
    pub creator: Option<ProcKey>,
    pub lifetime_seconds: Option<f64>,
}

/// Destructions by diffing ids. Ids are allocated cyclically and never
/// reused before they wrap, so an id that leaves the census is a map that
/// was freed, and an id that was recorded but never seen by any census
/// lived and died between two scrapes.
#[derive(Debug, Clone)]
pub struct Tracker {
    live: rustc_hash::FxHashMap<u32, Known>,
    /// Every id <= resolved has been decided (live, dead or unused).
    resolved: u32,
    /// Highest id known to exist before this scrape's census started:
    /// the previous scrape's census maximum and last recorded id.
    bound: u32,
    /// Ids <= start_max existed before the exporter started.
    start_max: u32,
    /// Tracked ids above `resolved`: decided already, skipped by the scan.
    decided: rustc_hash::FxHashSet<u32>,
    /// Destructions by creator (None: the map existed before the exporter
    /// started) and type.
    pub destroyed: BTreeMap<(Option<ProcKey>, u32), u64>,
    pub lifetimes: BTreeMap<u32, Hist>,
    /// Destructions of maps created while the probes ran whose creator is
    /// not known, by why: counted here instead of in `destroyed`.
    pub lost: BTreeMap<Unattributed, u64>,
    /// Keep the creator's tgid in the label identity (`--collector.lifecycle.pid-label`).
    pub pid_label: bool,
    /// Lifetimes observed, by where their end came from: the kernel's
    /// destruction time (probe) or the scrape that found the map gone.
    pub timed_by_probe: u64,
    pub timed_by_census: u64,
}

impl Tracker {
    /// `start_max`: the highest map id that existed when the probes were
    /// attached (maps up to it are pre-existing, never "created").
    pub fn new(start_max: u32) -> Tracker {
        Tracker {
            live: Default::default(),
            resolved: start_max,
            bound: start_max,
            start_max,
            decided: Default::default(),
            destroyed: BTreeMap::new(),
            lifetimes: BTreeMap::new(),
            lost: BTreeMap::new(),
            pid_label: false,
            timed_by_probe: 0,
            timed_by_census: 0,
        }
    }

    /// The series of `bpfmap_lifecycle_events_lost_total`, (event, reason,
    /// count), given the kernel's counts of creations whose map could not
    /// be read and of `--log.map-events` ring drops.
    pub fn lost_series(
        &self,
        unreadable: u64,
        ring_full: u64,
    ) -> [(&'static str, &'static str, u64); 4] {
        let destroyed = |why: Unattributed| {
            (
                "destroyed",
                why.as_str(),
                self.lost.get(&why).copied().unwrap_or(0),
            )
        };
        [
            ("created", "unreadable", unreadable),
            destroyed(Unattributed::RecordOverwritten),
            destroyed(Unattributed::NotRecorded),
            ("logged", "ring_full", ring_full),
        ]
    }

    /// Every destruction not attributed to a creator, whatever the reason.
    #[cfg(test)]
    pub fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }

    /// A map created while the probes ran, as its creation record tells.
    fn known(pid_label: bool, r: CreateRec, map_type: u32, map_ptr: u64) -> Known {
        Known {
            pid: r.tgid,
            creator: Some(ProcKey {
                comm: r.comm,
                // The tgid is in the label identity only with the pid label.
                tgid: if pid_label { r.tgid } else { 0 },
                cgroup_id: r.cgroup_id,
                memcg_id: r.memcg_id,
            }),
            unattributed: None,
            recheck: false,
            map_type,
            create_ns: Some(r.create_ns),
            map_ptr: if map_ptr != 0 { map_ptr } else { r.map_ptr },
        }
    }

    /// A map whose creation the probes did not record.
    fn unknown(map_type: u32, map_ptr: u64, why: Option<Unattributed>) -> Known {
        Known {
            creator: None,
            unattributed: why,
            recheck: why == Some(Unattributed::NotRecorded),
            pid: 0,
            map_type,
            create_ns: None,
            map_ptr,
        }
    }

    /// Ids up to this existed before the probes were attached: their
    /// creator is never known.
    pub fn start_max(&self) -> u32 {
        self.start_max
    }

    /// Every live map tracked, with what the probes recorded of its creation.
    pub fn live(&self) -> impl Iterator<Item = (u32, &Known)> + '_ {
        self.live.iter().map(|(id, k)| (*id, k))
    }

    #[cfg(test)]
    pub fn live_len(&self) -> usize {
        self.live.len()
    }

    /// `freed_ns`: the kernel's destruction time of the map at `k.map_ptr`,
    /// if a probe recorded one. It is used when it lies between the map's
    /// birth and now (an address reused by a later map that also died
    /// overwrites it with a later time, never an earlier one); otherwise the
    /// end is this scrape.
    fn destroy(
        &mut self,
        id: u32,
        k: Known,
        now_ns: u64,
        freed_ns: &mut dyn FnMut(u64) -> Option<u64>,
        out: &mut Vec<Destroyed>,
    ) {
        let lifetime = k.create_ns.map(|c| {
            let by_probe = (k.map_ptr != 0)
                .then(|| freed_ns(k.map_ptr))
                .flatten()
                .filter(|&t| t >= c && t <= now_ns);
            match by_probe {
                Some(t) => {
                    self.timed_by_probe += 1;
                    (t - c) as f64 / 1e9
                }
                None => {
                    self.timed_by_census += 1;
                    now_ns.saturating_sub(c) as f64 / 1e9
                }
            }
        });
        if let Some(l) = lifetime {
            self.lifetimes.entry(k.map_type).or_default().observe(l);
        }
        match (&k.creator, k.unattributed) {
            (None, Some(why)) => *self.lost.entry(why).or_default() += 1,
            _ => {
                *self
                    .destroyed
                    .entry((k.creator.clone(), k.map_type))
                    .or_default() += 1
            }
        }
        out.push(Destroyed {
            id,
            map_type: Some(k.map_type),
            creator: k.creator,
            lifetime_seconds: lifetime,
        });
    }

    /// One scrape. `census`: (id, map_type) of every live node map, taken
    /// before this call. `last_recorded`: the kernel's most recent recorded
    /// id, read now (after the census). `slot(id)`: the creation record slot
    /// for an id. `now_ns`: CLOCK_BOOTTIME now. Returns the destructions.
    #[cfg(test)]
    pub fn update(
        &mut self,
        census: &[(u32, u32)],
        last_recorded: u32,
        slot: impl FnMut(u32) -> Slot,
        now_ns: u64,
    ) -> Vec<Destroyed> {
        let census: Vec<(u32, u32, u64)> = census.iter().map(|&(i, t)| (i, t, 0)).collect();
        self.update_timed(&census, last_recorded, slot, |_| None, now_ns)
    }

    /// [`Tracker::update`] with each live map's kernel address, and
    /// `freed_ns(address)`: the destruction time a probe recorded (the
    /// lifetime then ends there instead of at this scrape).
    pub fn update_timed(
        &mut self,
        census: &[(u32, u32, u64)],
        last_recorded: u32,
        mut slot: impl FnMut(u32) -> Slot,
        mut freed_ns: impl FnMut(u64) -> Option<u64>,
        now_ns: u64,
    ) -> Vec<Destroyed> {
        let mut out = Vec::new();
        let now: rustc_hash::FxHashMap<u32, u32> =
            census.iter().map(|&(id, ty, _)| (id, ty)).collect();
        let pid_label = self.pid_label;
        // 1. Every live map is tracked (pre-existing ones without creator).
        for &(id, ty, map_ptr) in census {
            if let Some(k) = self.live.get_mut(&id) {
                if k.recheck {
                    k.recheck = false;
                    if let Slot::Valid(r) = slot(id) {
                        *k = Tracker::known(pid_label, r, ty, map_ptr);
                    }
                }
                continue;
            }
            let known = if id <= self.start_max {
                Tracker::unknown(ty, map_ptr, None)
            } else {
                match slot(id) {
                    Slot::Valid(r) => Tracker::known(pid_label, r, ty, map_ptr),
                    Slot::Overwritten => {
                        Tracker::unknown(ty, map_ptr, Some(Unattributed::RecordOverwritten))
                    }
                    Slot::Empty => Tracker::unknown(ty, map_ptr, Some(Unattributed::NotRecorded)),
                }
            };
            if id > self.resolved {
                self.decided.insert(id);
            }
            self.live.insert(id, known);
        }
        // 2. Tracked maps that left the census were freed.
        let gone: Vec<u32> = self
            .live
            .keys()
            .filter(|id| !now.contains_key(id))
            .copied()
            .collect();
        let mut gone = gone;
        gone.sort_unstable();
        for id in gone {
            let k = self.live.remove(&id).expect("tracked");
            self.destroy(id, k, now_ns, &mut freed_ns, &mut out);
        }
        // 3. Ids that existed before this census started (<= bound) and were
        //    neither tracked nor in the census lived and died in between.
        //    Ids above the bound may belong to maps created during this
        //    census; they are decided at the next scrape.
        let bound = self.bound;
        let mut id = self.resolved;
        while id < bound {
            id += 1;
            if now.contains_key(&id) || self.decided.contains(&id) {
                continue;
            }
            match slot(id) {
                Slot::Valid(r) => {
                    let ty = r.map_type;
                    let k = Tracker::known(pid_label, r, ty, 0);
                    self.destroy(id, k, now_ns, &mut freed_ns, &mut out);
                }
                Slot::Overwritten => {
                    // A map we know lived and died but cannot attribute.
                    *self
                        .lost
                        .entry(Unattributed::RecordOverwritten)
                        .or_default() += 1;
                    out.push(Destroyed {
                        id,
                        map_type: None,
                        creator: None,
                        lifetime_seconds: None,
                    });
                }
                Slot::Empty => {}
            }
        }
        self.resolved = self.resolved.max(bound);
        let resolved = self.resolved;
        self.decided.retain(|&id| id > resolved);
        let census_max = census.iter().map(|&(id, _, _)| id).max().unwrap_or(0);
        self.bound = self.bound.max(census_max).max(last_recorded);
        out
    }
}

/// A lifecycle series' label identity (what the cardinality cap counts).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelSet {
    pub comm: String,
    /// Only with `--collector.lifecycle.pid-label`.
    pub pid: Option<u32>,
    pub container_id: String,
    pub pod_uid: String,
}

impl LabelSet {
    pub fn named(comm: &str) -> LabelSet {
        LabelSet {
            comm: comm.to_string(),
            pid: None,
            container_id: String::new(),
            pod_uid: String::new(),
        }
    }
}

/// Admits up to `max` distinct label sets (first come, kept for the
/// exporter's life so counters stay monotonic); the rest fold into
/// comm="other". `max` 0 means no cap.
#[derive(Debug, Clone)]
pub struct Folder {
    max: usize,
    admitted: HashSet<LabelSet>,
}

impl Folder {
    pub fn new(max: usize) -> Folder {
        Folder {
            max,
            admitted: HashSet::new(),
        }
    }

    pub fn fold(&mut self, l: LabelSet) -> LabelSet {
        if self.max == 0 || self.admitted.contains(&l) {
            return l;
        }
        if self.admitted.len() < self.max {
            self.admitted.insert(l.clone());
            return l;
        }
        LabelSet::named("other")
    }

    #[cfg(test)]
    pub fn admitted(&self) -> usize {
        self.admitted.len()
    }
}

/// Sum kernel counters into label sets. `counts`: (process or None for the
/// overflow slots, kind, value). `label`: process -> label set (attribution).
/// Totals are exact: folding only moves counts between label sets.
pub fn aggregate(
    counts: &[(Option<ProcKey>, Kind, u64)],
    folder: &mut Folder,
    mut label: impl FnMut(&ProcKey) -> LabelSet,
) -> BTreeMap<(LabelSet, Kind), u64> {
    let mut sorted: Vec<&(Option<ProcKey>, Kind, u64)> = counts.iter().collect();
    // Deterministic admission order under the cap.
    sorted.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut out = BTreeMap::new();
    for (p, kind, n) in sorted {
        let l = match p {
            Some(p) => folder.fold(label(p)),
            None => LabelSet::named("other"),
        };
        *out.entry((l, *kind)).or_insert(0) += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u32, comm: &str, ty: u32, ns: u64) -> CreateRec {
        CreateRec {
            create_ns: ns,
            cgroup_id: 1,
            map_ptr: 0,
            id,
            tgid: 0,
            pid: 0,
            map_type: ty,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            map_flags: 0,
            comm: comm.into(),
            memcg_id: 0,
        }
    }

    fn pk(comm: &str) -> Option<ProcKey> {
        Some(ProcKey {
            comm: comm.into(),
            tgid: 0,
            cgroup_id: 1,
            memcg_id: 0,
        })
    }

    #[test]
    fn the_creating_pid_is_kept_per_map_but_out_of_labels() {
        let slots = |id| {
            let mut r = rec(id, "agent", 1, 5);
            r.tgid = 4242;
            Slot::Valid(r)
        };
        for pid_label in [false, true] {
            let mut t = Tracker::new(10);
            t.pid_label = pid_label;
            t.update(&[(5, 1), (11, 1)], 11, slots, 10);
            assert_eq!(t.start_max(), 10);
            let live: BTreeMap<u32, Known> = t.live().map(|(id, k)| (id, k.clone())).collect();
            assert_eq!(live[&5].creator, None, "pre-existing");
            let k = &live[&11];
            assert_eq!((k.pid, k.create_ns), (4242, Some(5)));
            let who = k.creator.as_ref().unwrap();
            assert_eq!(
                (who.comm.as_str(), who.tgid),
                ("agent", if pid_label { 4242 } else { 0 })
            );
        }
    }

    #[test]
    fn the_probe_time_ends_a_lifetime_and_the_census_time_stands_in_when_it_misses() {
        let mut t = Tracker::new(10);
        let with_ptr = |id, ns, ptr| {
            let mut r = rec(id, "p", 1, ns);
            r.map_ptr = ptr;
            Slot::Valid(r)
        };
        let slots = |id: u32| match id {
            11 => with_ptr(11, 1_000_000_000, 0xa000),
            12 => with_ptr(12, 1_000_000_000, 0xb000),
            13 => with_ptr(13, 1_000_000_000, 0xc000),
            _ => Slot::Empty,
        };
        // 11 and 12 live at the first scrape; 13 lives and dies in between.
        t.update_timed(
            &[(11, 1, 0xa000), (12, 1, 0xb000)],
            13,
            slots,
            |_| None,
            2_000_000_000,
        );
        // 11 freed at 1.05 s (probe), 12's probe time predates its birth
        // (a stale address: ignored), 13 freed at 1.2 s (probe).
        let freed = |p: u64| match p {
            0xa000 => Some(1_050_000_000),
            0xb000 => Some(500_000_000),
            0xc000 => Some(1_200_000_000),
            _ => None,
        };
        let d = t.update_timed(&[], 13, slots, freed, 9_000_000_000);
        let life: Vec<(u32, f64)> = d
            .iter()
            .map(|d| (d.id, d.lifetime_seconds.unwrap()))
            .collect();
        assert_eq!(life.len(), 3);
        let get = |id| life.iter().find(|l| l.0 == id).unwrap().1;
        assert!((get(11) - 0.05).abs() < 1e-9, "{life:?}");
        assert!((get(12) - 8.0).abs() < 1e-9, "census time: {life:?}");
        assert!((get(13) - 0.2).abs() < 1e-9, "{life:?}");
        assert_eq!((t.timed_by_probe, t.timed_by_census), (2, 1));
        // 0.05 s and 0.2 s land in the 0.1 and 1 buckets, 8 s in 10.
        let h = &t.lifetimes[&1];
        let c = h.cumulative();
        assert_eq!(c[1], (0.01, 0));
        assert_eq!(c[2], (0.1, 1));
        assert_eq!(c[3], (1.0, 2));
        assert_eq!(c[4], (10.0, 3));
    }

    #[test]
    fn pre_existing_maps_are_never_created_and_die_unattributed() {
        let mut t = Tracker::new(10);
        let d = t.update(&[(5, 1), (10, 2)], 0, |_| Slot::Empty, 0);
        assert!(d.is_empty());
        assert_eq!(t.live_len(), 2);
        let d = t.update(&[(10, 2)], 0, |_| panic!("no scan needed"), 5);
        assert_eq!(d.len(), 1);
        assert_eq!(t.destroyed[&(None, 1)], 1);
        assert!(t.lifetimes.is_empty(), "birth time unknown: no lifetime");
    }

    #[test]
    fn live_then_gone_is_attributed_to_creator_with_lifetime() {
        let mut t = Tracker::new(10);
        let slots = |id| {
            if id == 11 {
                Slot::Valid(rec(11, "maker", 1, 1_000_000_000))
            } else {
                Slot::Empty
            }
        };
        t.update(&[(11, 1)], 11, slots, 2_000_000_000);
        let d = t.update(&[], 11, slots, 3_500_000_000);
        assert_eq!(d.len(), 1);
        assert_eq!(t.destroyed[&(pk("maker"), 1)], 1);
        let h = &t.lifetimes[&1];
        assert_eq!(h.count, 1);
        assert!((h.sum - 2.5).abs() < 1e-9);
        // Not counted twice when the scan later passes id 11.
        t.update(&[], 11, slots, 4_000_000_000);
        assert_eq!(t.destroyed[&(pk("maker"), 1)], 1);
    }

    #[test]
    fn maps_born_and_dead_between_scrapes_are_found_one_scrape_later() {
        let mut t = Tracker::new(100);
        let slots = |id: u32| Slot::Valid(rec(id, "churn", 2, 1));
        // Scrape 1: ids 101..=200 were created and closed before it; the
        // kernel's last recorded id is 200.
        let d = t.update(&[], 200, slots, 10);
        assert!(d.is_empty(), "ids above the previous bound are deferred");
        // Scrape 2: they are resolved.
        let d = t.update(&[], 200, slots, 20);
        assert_eq!(d.len(), 100);
        assert_eq!(t.destroyed[&(pk("churn"), 2)], 100);
        assert_eq!(t.lifetimes[&2].count, 100);
        let d = t.update(&[], 200, slots, 30);
        assert!(d.is_empty());
    }

    #[test]
    fn a_map_created_during_the_census_is_not_taken_for_dead() {
        let mut t = Tracker::new(100);
        // Census saw nothing; id 101 was recorded after the census started.
        t.update(&[], 101, |_| Slot::Valid(rec(101, "late", 1, 1)), 1);
        assert!(t.destroyed.is_empty());
        // Next census sees it alive: tracked, not destroyed.
        t.update(&[(101, 1)], 101, |_| Slot::Valid(rec(101, "late", 1, 1)), 2);
        assert!(t.destroyed.is_empty());
        assert_eq!(t.live_len(), 1);
    }

    #[test]
    fn live_maps_without_a_record_are_lost_not_unknown_when_they_die() {
        let mut t = Tracker::new(10);
        // 11: overwritten before the census first saw it alive; 12: no
        // record at its first census, recorded by the next (the probe ran
        // after the census saw the map); 13: never recorded.
        let first = |id: u32| match id {
            11 => Slot::Overwritten,
            _ => Slot::Empty,
        };
        t.update(&[(11, 1), (12, 2), (13, 3)], 13, first, 0);
        let second = |id: u32| match id {
            12 => Slot::Valid(rec(12, "late", 2, 0)),
            11 => Slot::Overwritten,
            _ => Slot::Empty,
        };
        t.update(&[(11, 1), (12, 2), (13, 3)], 13, second, 1);
        let d = t.update(&[], 13, |_| Slot::Empty, 2);
        assert_eq!(d.len(), 3);
        assert_eq!(t.destroyed.len(), 1, "{:?}", t.destroyed);
        assert_eq!(t.destroyed[&(pk("late"), 2)], 1);
        assert_eq!(t.lost[&Unattributed::RecordOverwritten], 1);
        assert_eq!(t.lost[&Unattributed::NotRecorded], 1);
        assert_eq!(
            t.lost_series(3, 4),
            [
                ("created", "unreadable", 3),
                ("destroyed", "record_overwritten", 1),
                ("destroyed", "not_recorded", 1),
                ("logged", "ring_full", 4),
            ]
        );
        // Looked up again only once: a later record of the same slot is
        // never taken for it.
        let mut t = Tracker::new(10);
        t.update(&[(13, 3)], 13, |_| Slot::Empty, 0);
        t.update(&[(13, 3)], 13, |_| Slot::Empty, 1);
        t.update(&[(13, 3)], 13, |id| Slot::Valid(rec(id, "x", 3, 0)), 2);
        t.update(&[], 13, |_| Slot::Empty, 3);
        assert!(t.destroyed.is_empty());
        assert_eq!(t.lost_total(), 1);
    }

    #[test]
    fn overwritten_records_are_counted_lost_not_unknown() {
        let mut t = Tracker::new(0);
        t.update(&[], 3, |_| Slot::Empty, 0);
        let d = t.update(
            &[],
            3,
            |id| {
                if id == 2 {
                    Slot::Overwritten
                } else {
                    Slot::Valid(rec(id, "x", 1, 0))
                }
            },
            1,
        );
        assert_eq!(d.len(), 3);
        assert_eq!(t.lost[&Unattributed::RecordOverwritten], 1);
        assert_eq!(t.lost_total(), 1);
        assert_eq!(
            t.destroyed.len(),
            1,
            "nothing credited to an unknown creator"
        );
        assert_eq!(t.destroyed[&(pk("x"), 1)], 2);
    }

    #[test]
    fn unused_ids_are_skipped() {
        let mut t = Tracker::new(0);
        t.update(&[], 5, |_| Slot::Empty, 0);
        assert!(t.update(&[], 5, |_| Slot::Empty, 1).is_empty());
        assert!(t.destroyed.is_empty());
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Hist::default();
        for v in [0.0005, 0.5, 0.5, 7200.0, 1e9] {
            h.observe(v);
        }
        let c = h.cumulative();
        assert_eq!(c[0], (0.001, 1));
        assert_eq!(c[3], (1.0, 3));
        assert_eq!(c.last().unwrap().1, 4);
        assert_eq!(h.count, 5);
    }

    #[test]
    fn folding_caps_label_sets_and_keeps_totals() {
        let mut f = Folder::new(2);
        let counts: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|c| (pk(c), Kind::Inc, 10u64))
            .chain([(None, Kind::Inc, 5)])
            .collect();
        let agg = aggregate(&counts, &mut f, |p| LabelSet::named(&p.comm));
        assert_eq!(agg.values().sum::<u64>(), 45);
        assert_eq!(agg[&(LabelSet::named("a"), Kind::Inc)], 10);
        assert_eq!(agg[&(LabelSet::named("other"), Kind::Inc)], 25);
        assert_eq!(f.admitted(), 2);
        // Admission is sticky: a later scrape keeps a and b.
        let agg = aggregate(&counts, &mut f, |p| LabelSet::named(&p.comm));
        assert_eq!(agg[&(LabelSet::named("b"), Kind::Inc)], 10);
        // No cap.
        let mut f = Folder::new(0);
        let agg = aggregate(&counts, &mut f, |p| LabelSet::named(&p.comm));
        assert_eq!(agg.len(), 5);
    }

    #[test]
    fn processes_with_one_label_set_merge() {
        let mut f = Folder::new(10);
        let counts = vec![
            (
                Some(ProcKey {
                    comm: "x".into(),
                    tgid: 0,
                    cgroup_id: 1,
                    memcg_id: 0,
                }),
                Kind::Create { map_type: 1 },
                2,
            ),
            (
                Some(ProcKey {
                    comm: "x".into(),
                    tgid: 0,
                    cgroup_id: 2,
                    memcg_id: 0,
                }),
                Kind::Create { map_type: 1 },
                3,
            ),
        ];
        let agg = aggregate(&counts, &mut f, |p| LabelSet::named(&p.comm));
        assert_eq!(
            agg[&(LabelSet::named("x"), Kind::Create { map_type: 1 })],
            5
        );
    }
}
